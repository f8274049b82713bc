"""Several COCO instances files as one: ``merge_files`` with ids kept unique across files."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pycocotools.coco import COCO

from .instances import read_instances


@dataclass
class MergedSet:
    """Several COCO instances files merged into one COCO object with unique ids."""

    coco: COCO
    files: list[Path]
    #: (source file index, original image id) of every merged image id
    image_origin: dict[int, tuple[int, int]]
    #: image keys (original id, file_name, height, width), to detect the same image in two sets
    image_keys: dict[int, tuple]
    duplicates: int = 0  # images dropped because an earlier file already had them
    #: (annotation id, reason) of annotations dropped while merging
    dropped: list = field(default_factory=list)


class UniqueIds:
    """Hands out ids unique across merged files: the wanted id if free, else the next free id counting up from 1."""

    def __init__(self) -> None:
        self._used: set[int] = set()
        self._next = 1

    def take(self, wanted: int) -> int:
        if wanted in self._used:
            while self._next in self._used:
                self._next += 1
            wanted = self._next
        self._used.add(wanted)
        return wanted


def merge_files(paths: Sequence[str | os.PathLike], exclude_keys: set | None = None) -> tuple[MergedSet, int]:
    """Read and merge COCO instances files. Returns the merged set and the number of images excluded.

    An image met again in a later file (same id, file name and size) is read once; one whose key
    is in ``exclude_keys`` is left out (counted in the second return value). Image and annotation
    ids stay as in their file where free, else take the next free id (``UniqueIds``).
    """
    if not paths:
        raise ValueError("no annotation files given")
    files = [Path(p) for p in paths]
    images, annotations, categories = [], [], {}
    image_origin, image_keys = {}, {}
    seen_keys: dict[tuple, int] = {}
    image_ids, ann_ids = UniqueIds(), UniqueIds()
    duplicates = excluded = 0
    dropped: list[tuple[int, str]] = []
    for fi, path in enumerate(files):
        with contextlib.redirect_stdout(io.StringIO()):
            c = read_instances(path)
        data = c.dataset
        for cat in data.get("categories", []):
            categories.setdefault(cat["id"], cat)
        id_map, why_not = {}, {}
        for img in data.get("images", []):
            key = (img["id"], img.get("file_name"), img.get("height"), img.get("width"))
            if key in seen_keys:
                duplicates += 1
                why_not[img["id"]] = "image already read from an earlier file"
                continue
            if exclude_keys is not None and key in exclude_keys:
                excluded += 1
                why_not[img["id"]] = "image also in the evaluation files"
                continue
            new_id = image_ids.take(img["id"])
            seen_keys[key] = new_id
            id_map[img["id"]] = new_id
            image_origin[new_id] = (fi, img["id"])
            image_keys[new_id] = key
            images.append({**img, "id": new_id})
        for ann in data.get("annotations", []):
            if ann.get("image_id") not in id_map:
                dropped.append((ann.get("id", -1), why_not.get(ann.get("image_id"), "unknown image")))
                continue
            new_id = ann_ids.take(ann["id"])
            annotations.append({**ann, "id": new_id, "image_id": id_map[ann["image_id"]]})
    merged = COCO()
    merged.dataset = {"images": images, "annotations": annotations, "categories": list(categories.values())}
    with contextlib.redirect_stdout(io.StringIO()):
        merged.createIndex()
    ms = MergedSet(merged, files, image_origin, image_keys, duplicates, dropped)
    return ms, excluded
