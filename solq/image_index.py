"""Image ids for ``solq predict``: the dataset's own ids, matched by file name.

Results whose ``image_id`` is the position in the input list do not load against the
dataset (``COCO.loadRes`` refuses ids it does not know), so with an annotation file every
image gets the id of the json entry with the same ``file_name``: first the path relative to
the folder given, then the bare name (when that name is unique in the json).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from maskcodec.coco import read_instances_json

__all__ = ["ImageIndex"]


class ImageIndex:
    """``file_name`` → image id of a COCO instances json; ``None`` means "number the inputs 1, 2, ...".

    """

    def __init__(self, ann_file: Optional[str | os.PathLike] = None):
        self.ann_file = None if ann_file is None else Path(ann_file)
        self._by_name: dict[str, int] = {}
        self._by_base: dict[str, Optional[int]] = {}
        if self.ann_file is None:
            return
        for img in read_instances_json(self.ann_file, file_names=True)["images"]:
            name = Path(img["file_name"]).as_posix()
            self._by_name[name] = img["id"]
            base = Path(name).name
            self._by_base[base] = None if base in self._by_base else img["id"]  # None: ambiguous

    @property
    def numbered(self) -> bool:
        """True without an annotation file: ids are positions in the input list."""
        return self.ann_file is None

    def lookup(self, path: Path, roots: Sequence[Path] = ()) -> Optional[int]:
        """The id of ``path`` (found under one of the input folders ``roots``, or given directly), or None."""
        for root in roots:
            try:
                rel = path.relative_to(root).as_posix()
            except ValueError:
                continue
            if rel in self._by_name:
                return self._by_name[rel]
        return self._by_base.get(path.name)

    def ids(self, files: Sequence[Path], roots: Sequence[Path] = ()) -> list[Optional[int]]:
        """The id of every file, in order (positions from 1 when ``numbered``; None: not in the json)."""
        if self.numbered:
            return list(range(1, len(files) + 1))
        return [self.lookup(f, roots) for f in files]
