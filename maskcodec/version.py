"""The maskcodec version (kept equal to pyproject.toml's), written into codec files and bench reports."""

__version__ = "0.1.0"
