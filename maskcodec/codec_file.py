"""The codec file format: a versioned ``.npz`` with a JSON header and no pickles, written atomically.

Layout: one ``__header__`` entry (UTF-8 JSON as uint8) with the file format name and version,
the codec's registry name, its hyper-parameters and its fitted scalars, plus one numpy array
per fitted array attribute. Nothing is pickled, so reading a file cannot run code. This module
knows the file, not the codecs: it writes and reads the state dict of ``MaskCodec.get_state``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_open
from .version import __version__

FORMAT_NAME = "maskcodec-codec"
FORMAT_VERSION = 1
_HEADER_KEY = "__header__"


def write_state(state: dict, path: str | os.PathLike) -> None:
    """Write a codec state (``{"name", "params", "fitted"}``) to ``path`` through a temp file and rename."""
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, object] = {}
    for name, value in state["fitted"].items():
        if isinstance(value, np.ndarray):
            arrays[name] = value
        elif isinstance(value, (bool, int, float, str, np.integer, np.floating)) or value is None:
            scalars[name] = value.item() if isinstance(value, np.generic) else value
        else:
            raise TypeError(f"cannot save fitted attribute {name} of type {type(value).__name__}")
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "maskcodec_version": __version__,
        "codec": state["name"],
        "params": state["params"],
        "fitted_scalars": scalars,
        "fitted_arrays": sorted(arrays),
    }
    blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    with atomic_open(path, "wb") as f:
        np.savez(f, **{_HEADER_KEY: blob}, **arrays)


def read_state(path: str | os.PathLike) -> dict:
    """Read the codec state stored in ``path``: ``{"name", "params", "fitted"}`` (not yet validated).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not a
    maskcodec codec, is corrupt, or was written by an incompatible version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no codec file at {path}")
    header, arrays = _read_npz(path)
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a maskcodec codec file: its header is a {type(header).__name__}, not an object")
    if header.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a maskcodec codec file (format {header.get('format')!r})")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has codec file format version {version}, this maskcodec reads version {FORMAT_VERSION}; "
            "re-save the codec with a matching maskcodec version"
        )
    missing = set(header.get("fitted_arrays", [])) - set(arrays)
    if missing:
        raise ValueError(f"{path} is incomplete: fitted arrays {sorted(missing)} are missing")
    params, scalars = header.get("params"), header.get("fitted_scalars", {})
    if not isinstance(params, dict) or not isinstance(scalars, dict):
        raise ValueError(f"{path}: the header's 'params' and 'fitted_scalars' must be objects")
    return {"name": str(header.get("codec")), "params": params, "fitted": {**scalars, **arrays}}


def _read_npz(path: Path) -> tuple[object, dict[str, np.ndarray]]:
    """The JSON header and the arrays of a codec ``.npz``; ``ValueError`` for anything else."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"PK\x03\x04":
                raise ValueError(f"{path} is not a readable maskcodec codec file: not an .npz archive (a .npy "
                                 "array or another file?); save codecs with codec.save or maskcodec fit")
        with np.load(path, allow_pickle=False) as data:
            if _HEADER_KEY not in data.files:
                raise ValueError(f"{path} is a .npz file but not a saved maskcodec codec (no header)")
            header = json.loads(data[_HEADER_KEY].tobytes().decode("utf-8"))
            arrays = {name: data[name] for name in data.files if name != _HEADER_KEY}
    except (zipfile.BadZipFile, OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable maskcodec codec file (corrupt or truncated): {err}") from None
    except ValueError as err:
        if "not a saved maskcodec codec" in str(err) or "not an .npz archive" in str(err):
            raise
        raise ValueError(f"{path} is not a readable maskcodec codec file: {err}") from None
    return header, arrays
