"""Atomic file writes: a temp file in the destination folder, fsync, then ``os.replace``.

A reader (or a run killed half-way) sees either the old file or the complete new one, never a
torn file. New files get the mode ``open()`` would give them (0o666 minus the umask), not
``mkstemp``'s 0o600.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temp file next to ``path`` for writing; on a clean exit it replaces ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise). On an
    exception the temp file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)
    return Path(path)


def json_default(o: object) -> object:
    """``json.dumps(..., default=json_default)``: numpy / torch scalars as numbers, paths as strings."""
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if callable(getattr(o, "item", None)) and getattr(o, "ndim", None) == 0:
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: object) -> Path:
    """``obj`` as indented JSON (numpy scalars and paths included, see ``json_default``), written atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, default=json_default, allow_nan=True) + "\n")
