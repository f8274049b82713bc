"""The one rule for relative paths in a config, applied once when it is loaded.

A path written in a config file is relative to that file's folder; a path given on the command line
(a ``key=value`` override) or taken from a default is relative to the working directory. After
loading, every ``PATH_KEYS`` entry is absolute, so a config means the same from any directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

#: Config keys that hold file-system paths; ``resolve_paths`` makes them absolute.
PATH_KEYS = (
    "output_dir",
    "codec.path",
    "model.backbone_weights",
    "data.train.image_dir",
    "data.train.ann_file",
    "data.val.image_dir",
    "data.val.ann_file",
    "data.shapes.root",
)


def resolve_path(path: str | os.PathLike, base_dir: Optional[str | os.PathLike] = None) -> str:
    """The one rule for relative paths: ``path`` (``~`` expanded) as an absolute, normalised path,
    taken relative to ``base_dir`` (the folder of the config file that wrote it) or, when
    ``base_dir`` is None, to the working directory."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_absolute():
        p = Path(base_dir if base_dir is not None else os.getcwd()) / p
    return os.path.abspath(p)


def resolve_paths(data: dict, base_dir: Optional[str | os.PathLike] = None, keys: Sequence[str] = PATH_KEYS) -> dict:
    """Apply ``resolve_path`` to the ``keys`` (dotted) present in a nested config dict, in place; returns it."""
    for key in keys:
        *parents, last = key.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(last), (str, os.PathLike)) and os.fspath(node[last]):
            node[last] = resolve_path(node[last], base_dir)
    return data
