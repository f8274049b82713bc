"""Saving and loading codecs: ``save(codec, path)`` and ``load(path)``.

Both go through the codec's public state (``MaskCodec.get_state`` / ``maskcodec.from_state``)
and the versioned ``.npz`` format of ``maskcodec.codec_file``, written atomically.
"""

from __future__ import annotations

import os

from .base import MaskCodec
from .codec_file import FORMAT_NAME, FORMAT_VERSION, read_state, write_state
from .state import from_state

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load", "save"]


def save(codec: MaskCodec, path: str | os.PathLike) -> None:
    """Write ``codec`` (parameters and fitted state) to ``path`` (conventionally ``*.npz``) atomically."""
    write_state(codec.get_state(), path)


def load(path: str | os.PathLike) -> MaskCodec:
    """Load a codec written by ``maskcodec.save`` (or ``codec.save``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not a
    maskcodec codec, is corrupt, was written by an incompatible version, or holds parameters or
    fitted state the codec rejects.
    """
    return from_state(read_state(path), source=str(path))
