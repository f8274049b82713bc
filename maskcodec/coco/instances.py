"""Reading a COCO instances file into pycocotools' index, with the file's shape checked first."""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from .validate import segmentation_problem


def read_instances(source: str | os.PathLike | dict | COCO) -> COCO:
    """Load a COCO instances file (or dict) into a ``pycocotools.coco.COCO`` without its prints.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not JSON or
    not a COCO *instances* file (no "images"/"annotations", annotations without "segmentation").
    """
    if isinstance(source, COCO):
        return source
    if isinstance(source, dict):
        dataset, where = source, "the annotation dict"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = str(path)
        if not path.exists():
            raise FileNotFoundError(f"COCO annotation file not found: {path}")
        if path.is_dir():
            raise ValueError(f"{path} is a directory; pass the instances_*.json file inside it")
        try:
            with open(path, "rb") as fh:
                dataset = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); expected a COCO instances_*.json file") from None
    else:
        raise TypeError(f"expected a path, a dict or a pycocotools COCO object, got {type(source).__name__}")
    _validate_instances(dataset, where)
    return index_instances(dataset)


def index_instances(dataset: dict) -> COCO:
    """pycocotools' index (``imgs``, ``anns``, ``imgToAnns``, ...) of an instances dict already checked
    by the caller, without pycocotools' prints. ``read_instances`` checks, then calls this."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _validate_instances(dataset: Any, where: str) -> None:
    if not isinstance(dataset, dict):
        raise ValueError(f"{where} is not a COCO instances file: the top level is a {type(dataset).__name__}, "
                         "expected an object with 'images' and 'annotations'")
    missing = [k for k in ("images", "annotations") if k not in dataset]
    if missing:
        raise ValueError(
            f"{where} is not a COCO instances file: missing key(s) {', '.join(repr(m) for m in missing)} "
            f"(found {sorted(dataset)[:8]}); a results file (a list of detections) is read with COCO.loadRes"
        )
    for key in ("images", "annotations"):
        if not isinstance(dataset[key], list):
            raise ValueError(f"{where}: '{key}' must be a list, got {type(dataset[key]).__name__}")
    for img in dataset["images"]:
        lacking = [k for k in ("id", "height", "width") if not isinstance(img, dict) or k not in img]
        if lacking:
            raise ValueError(
                f"{where}: image entry {str(img)[:80]} lacks {lacking}; COCO images need id, height, width"
            )
    for ann in dataset["annotations"]:
        lacking = [k for k in ("id", "image_id", "bbox", "segmentation") if not isinstance(ann, dict) or k not in ann]
        if lacking:
            if lacking == ["segmentation"]:
                what = "this looks like a detection-only or keypoint file; instance masks need 'segmentation'"
            else:
                what = "COCO instance annotations need id, image_id, bbox, segmentation"
            ident = ann.get("id", "?") if isinstance(ann, dict) else "?"
            raise ValueError(f"{where}: annotation id {ident} lacks {lacking}: {what}")


def annotation_mask(coco: COCO, ann: dict) -> np.ndarray:
    """The full-resolution mask ``(H, W)`` bool of one annotation (pycocotools ``annToMask``).

    ``ValueError`` naming the problem for a segmentation pycocotools would crash or hang on.
    """
    img = coco.imgs.get(ann.get("image_id"), {})
    problem = segmentation_problem(ann.get("segmentation"), img.get("height", 0), img.get("width", 0))
    if problem is not None:
        raise ValueError(f"annotation {ann.get('id')}: {problem}")
    with warnings.catch_warnings():
        # pycocotools' decode trips numpy 2's __array__(copy=...) deprecation once per call
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco.annToMask(ann).astype(bool)


def sample_annotation_files() -> dict[str, Path]:
    """The built-in sample (COCO 2017 annotations of the COCO-MINI subset): {"train": path, "val": path}."""
    root = Path(str(resources.files("maskcodec") / "data"))
    return {"train": root / "coco_mini_train.json", "val": root / "coco_mini_val.json"}

