"""Reading a COCO instances file into pycocotools' index, with the file's shape checked first.

One reader for every caller: ``read_instances_json`` reads and shape-checks a file (the
``FileNotFoundError`` / ``ValueError`` messages live here only), ``read_instances`` indexes it for
mask streaming (every annotation must carry a mask), and ``check_instances`` indexes a training
set: each annotation's content is checked (``validate``), the bad ones are counted by kind and
left out, images a caller rejects are dropped with their annotations.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Collection, Hashable
from dataclasses import dataclass
from importlib import resources
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from .validate import NO_SEGMENTATION, box_problem, segmentation_problem

#: What ``check_instances`` counts and leaves out, by kind (the keys of ``CheckedInstances.invalid``).
INVALID_KINDS = ("unknown_image_id", "unknown_category_id", "bad_bbox", "bad_segmentation")


def read_instances_json(path: str | os.PathLike, *, annotations: bool = False, file_names: bool = False,
                        categories: bool = False) -> dict:
    """Read a COCO instances file into its dict, with its shape checked (see ``check_shape``).

    ``FileNotFoundError`` for a missing file, ``ValueError`` naming the file for a folder, a file
    that is not JSON, or one that is not an instances file. The flags are ``check_shape``'s: by
    default ``annotations`` may be absent (an image listing).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass the instances_*.json file inside it")
    try:
        with open(path, "rb") as fh:
            dataset = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); expected a COCO instances_*.json file") from None
    check_shape(dataset, str(path), annotations=annotations, file_names=file_names, categories=categories)
    return dataset


def read_instances(source: str | os.PathLike | dict | COCO) -> COCO:
    """Load a COCO instances file (or dict) into a ``pycocotools.coco.COCO`` without its prints.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not JSON or
    not a COCO *instances* file (no "images"/"annotations", annotations without "segmentation").
    """
    if isinstance(source, COCO):
        return source
    if isinstance(source, dict):
        dataset, where = source, "the annotation dict"
        check_shape(dataset, where, annotations=True)
    elif isinstance(source, (str, os.PathLike)):
        dataset, where = read_instances_json(source, annotations=True), str(source)
    else:
        raise TypeError(f"expected a path, a dict or a pycocotools COCO object, got {type(source).__name__}")
    _check_mask_annotations(dataset["annotations"], where)
    return index_instances(dataset)


def index_instances(dataset: dict) -> COCO:
    """pycocotools' index (``imgs``, ``anns``, ``imgToAnns``, ...) of an instances dict already checked
    by the caller, without pycocotools' prints. ``read_instances`` checks, then calls this."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def check_shape(dataset: Any, where: str, *, annotations: bool = False, file_names: bool = False,
                categories: bool = False) -> None:
    """``ValueError`` naming ``where`` unless ``dataset`` has the shape of a COCO instances file.

    Always: an object with an ``images`` list of entries with an integer ``id``, ``height`` and
    ``width`` and unique ids, and ``annotations``, when present, a list. ``annotations`` /
    ``file_names`` / ``categories``: also require the ``annotations`` key, a ``file_name`` string on
    every image, a non-empty ``categories`` list of entries with unique integer ids.
    """
    if not isinstance(dataset, dict):
        raise ValueError(f"{where} is not a COCO instances file: the top level is a {type(dataset).__name__}, "
                         "expected an object with an 'images' list and an 'annotations' list (a results file, "
                         "a list of detections, is read with COCO.loadRes)")
    missing = [k for k in ("images", "annotations") if k not in dataset and (k == "images" or annotations)]
    if missing:
        raise ValueError(
            f"{where} is not a COCO instances file: missing key(s) {', '.join(repr(m) for m in missing)} "
            f"(found {sorted(dataset)[:8]}); a results file (a list of detections) is read with COCO.loadRes"
        )
    for key in ("images", "annotations"):
        if key in dataset and not isinstance(dataset[key], list):
            raise ValueError(f"{where}: '{key}' must be a list, got {type(dataset[key]).__name__}")
    _check_images(dataset["images"], where, file_names)
    if categories:
        _check_categories(dataset.get("categories"), where)


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_images(images: list, where: str, file_names: bool) -> None:
    needed = ("id", "height", "width")
    seen: set = set()
    for img in images:
        lacking = [k for k in needed if not isinstance(img, dict) or not _is_int(img.get(k))]
        if file_names and not (isinstance(img, dict) and isinstance(img.get("file_name"), str)):
            lacking.append("file_name")
        if lacking:
            raise ValueError(f"{where}: image entry {str(img)[:80]} lacks a valid {', '.join(lacking)}; every "
                             f"image needs an integer id, height and width{' and a file_name' if file_names else ''}")
        if img["id"] in seen:
            raise ValueError(f"{where}: duplicate image id {img['id']}")
        seen.add(img["id"])


def _check_categories(categories: Any, where: str) -> None:
    if not isinstance(categories, list) or not categories:
        raise ValueError(f"{where} defines no 'categories'; a COCO instances json needs them")
    ids = []
    for c in categories:
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            raise ValueError(f"{where}: every category needs an integer 'id', got {c!r:.200}")
        ids.append(c["id"])
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: duplicate category ids {sorted({i for i in ids if ids.count(i) > 1})}")


def _check_mask_annotations(annotations: list, where: str) -> None:
    """Every annotation carries the keys a mask needs (else the file is of another kind)."""
    for ann in annotations:
        lacking = [k for k in ("id", "image_id", "bbox", "segmentation") if not isinstance(ann, dict) or k not in ann]
        if lacking:
            if lacking == ["segmentation"]:
                what = "this looks like a detection-only or keypoint file; instance masks need 'segmentation'"
            else:
                what = "COCO instance annotations need id, image_id, bbox, segmentation"
            ident = ann.get("id", "?") if isinstance(ann, dict) else "?"
            raise ValueError(f"{where}: annotation id {ident} lacks {lacking}: {what}")


@dataclass
class CheckedInstances:
    """A training set's index: ``coco`` holds the images kept and their valid annotations.

    ``invalid``: kind (``INVALID_KINDS``) -> ``[(annotation id, what was wrong), ...]`` of the
    annotations left out; ``skipped_annotations``: how many belonged to the images dropped by the caller.
    """

    coco: COCO
    invalid: dict[str, list[tuple[Any, Any]]]
    skipped_annotations: int = 0

    def invalid_counts(self) -> dict[str, int]:
        """``{kind: count}`` of the kinds that occurred."""
        return {kind: len(v) for kind, v in self.invalid.items() if v}

    def describe_invalid(self, where: str) -> str:
        """One line: ``"<where>: 2 invalid annotations: 1 with bad bbox (e.g. annotation 7 -> [1, 2, 3]); ..."``."""
        detail = "; ".join(f"{len(v)} with {kind.replace('_', ' ')} (e.g. annotation {v[0][0]} -> {v[0][1]!r:.60})"
                           for kind, v in self.invalid.items() if v)
        return f"{where}: {sum(self.invalid_counts().values())} invalid annotations: {detail}"


def check_instances(dataset: dict, where: str, *, skip_images: Collection[int] = ()) -> CheckedInstances:
    """Index a shape-checked instances dict (``read_instances_json(..., categories=True)``) for training.

    Images in ``skip_images`` are left out with their annotations. Every other annotation must
    point to a known image and category and have a valid box (``validate.box_problem``) and, when
    it has one, a segmentation pycocotools can read (``validate.segmentation_problem``; no polygon
    at all is fine: the caller uses the box); the others are left out and listed by kind. A
    non-object annotation or a duplicate annotation id raises ``ValueError``. Annotations without
    an id get fresh ones (pycocotools indexes by id).
    """
    skip = set(skip_images)
    images = {img["id"]: img for img in dataset["images"] if img["id"] not in skip}
    category_ids = {c["id"] for c in dataset.get("categories") or []}
    invalid: dict[str, list[tuple[Any, Any]]] = {kind: [] for kind in INVALID_KINDS}
    kept, seen_ids, n_skipped = [], set(), 0
    for ann in dataset.get("annotations", []):
        if not isinstance(ann, dict):
            raise ValueError(f"{where}: annotations must be objects, got {ann!r:.200}")
        ann_id = ann.get("id")
        if ann_id is not None:
            if not isinstance(ann_id, Hashable):
                raise ValueError(f"{where}: annotation ids must be numbers, got {ann_id!r:.60}")
            if ann_id in seen_ids:
                raise ValueError(f"{where}: duplicate annotation id {ann_id}")
            seen_ids.add(ann_id)
        image_id = ann.get("image_id")
        if isinstance(image_id, Hashable) and image_id in skip:
            n_skipped += 1
            continue
        fault = _annotation_fault(ann, images, category_ids)
        if fault is not None:
            invalid[fault[0]].append((ann_id, fault[1]))
        else:
            kept.append(ann)
    next_id = max((a["id"] for a in kept if _is_int(a.get("id"))), default=0) + 1
    for k, ann in enumerate(kept):
        if ann.get("id") is None:
            kept[k], next_id = {**ann, "id": next_id}, next_id + 1
    coco = index_instances({**dataset, "images": list(images.values()), "annotations": kept})
    return CheckedInstances(coco, invalid, n_skipped)


def _annotation_fault(ann: dict, images: dict[int, dict], category_ids: set) -> tuple[str, Any] | None:
    """``(kind, offending value)`` of the first thing wrong with ``ann``, or None."""
    image_id, category_id = ann.get("image_id"), ann.get("category_id")
    image = images.get(image_id) if isinstance(image_id, Hashable) else None
    if image is None:
        return "unknown_image_id", image_id
    if not isinstance(category_id, Hashable) or category_id not in category_ids:
        return "unknown_category_id", category_id
    if box_problem(ann.get("bbox")):
        return "bad_bbox", ann.get("bbox")
    if "segmentation" in ann:
        problem = segmentation_problem(ann["segmentation"], image["height"], image["width"])
        if problem is not None and problem != NO_SEGMENTATION:
            return "bad_segmentation", problem
    return None


def segmentation_mask(segmentation: Any, height: int, width: int) -> np.ndarray | None:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) -> bool mask ``(H, W)``.

    None when there is nothing usable (missing, or no polygon of 3 points or more: a caller
    then uses the box). ``ValueError`` naming the problem for anything ``validate`` rejects
    (an RLE whose ``size`` is not ``[height, width]`` or whose counts do not sum to H·W,
    non-finite or absurdly large polygon coordinates), which would crash or hang pycocotools.
    """
    problem = None if segmentation is None else segmentation_problem(segmentation, height, width)
    if segmentation is None or problem == NO_SEGMENTATION:
        return None
    if problem is not None:
        raise ValueError(f"{problem} (segmentation of a {height}x{width} image)")
    if isinstance(segmentation, list):
        polygons = [[float(v) for v in p] for p in segmentation if len(p) >= 6 and len(p) % 2 == 0]
        if not polygons:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    with _pycocotools_quiet():
        return mask_utils.decode(rle).astype(bool)


def annotation_mask(coco: COCO, ann: dict) -> np.ndarray:
    """The full-resolution mask ``(H, W)`` bool of one annotation (pycocotools ``annToMask``).

    ``ValueError`` naming the problem for a segmentation pycocotools would crash or hang on.
    """
    img = coco.imgs.get(ann.get("image_id"), {})
    problem = segmentation_problem(ann.get("segmentation"), img.get("height", 0), img.get("width", 0))
    if problem is not None:
        raise ValueError(f"annotation {ann.get('id')}: {problem}")
    with _pycocotools_quiet():
        return coco.annToMask(ann).astype(bool)


@contextlib.contextmanager
def _pycocotools_quiet():
    """Silence the DeprecationWarning pycocotools' decode trips once per call under numpy 2
    (its ``__array__`` without ``copy=``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def sample_annotation_files() -> dict[str, Path]:
    """The built-in sample (COCO 2017 annotations of the COCO-MINI subset): {"train": path, "val": path}."""
    root = Path(str(resources.files("maskcodec") / "data"))
    return {"train": root / "coco_mini_train.json", "val": root / "coco_mini_val.json"}

