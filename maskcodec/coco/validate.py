"""One check for every COCO annotation before pycocotools sees it.

pycocotools trusts its input: a polygon coordinate of 1e8 or NaN crashes the process (exit
139, no message), an empty segmentation list raises ``IndexError`` inside ``COCOeval``, and a
compressed RLE whose runs do not add up to H x W makes ``COCOeval.computeIoU`` run for hours.
``annotation_problem`` names what is wrong with one annotation (or returns None), and
``valid_ground_truth`` builds the ground truth for ``COCOeval`` from the annotations that pass.
The maskcodec reader (``maskcodec.coco``), ``maskcodec bench``'s oracle AP, the solq dataset and
``solq eval`` all use these functions, so every path rejects the same annotations for the
same, counted reasons.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from numba import njit

if TYPE_CHECKING:  # pragma: no cover
    from pycocotools.coco import COCO

    from .skips import SkipReport

__all__ = [
    "AnnotationProblem",
    "annotation_problem",
    "segmentation_problem",
    "rle_counts",
    "coordinate_limit",
    "box_polygon",
    "valid_ground_truth",
]

#: Reasons (the strings ``SkipReport`` counts by).
BAD_BOX = "missing or non-finite box"
NO_SEGMENTATION = "polygon with fewer than 3 points"
BAD_COORDINATES = "non-numeric, non-finite or out-of-range polygon coordinates"
BAD_RLE_SIZE = "RLE size differs from image size"
BAD_RLE_COUNTS = "RLE counts do not sum to height x width"
BAD_SEGMENTATION = "unreadable segmentation"


class AnnotationProblem(ValueError):
    """An annotation pycocotools must not see; ``str(err)`` is one of the reasons above."""


def coordinate_limit(height: int, width: int) -> float:
    """Largest |polygon coordinate| accepted for an image of ``height`` x ``width`` pixels.

    Four image sizes beyond the border is far outside any real outline, and keeps the 5x
    upsampled outline trace that pycocotools (and ``maskcodec.coco``) walk bounded.
    """
    return 4.0 * max(int(height), int(width)) + 1e4


@njit(cache=True)
def counts_from_string(s):
    """Decode pycocotools' compressed RLE string (as uint8 bytes) to run lengths (rleFrString)."""
    counts = np.empty(len(s) + 1, dtype=np.int64)
    m = 0
    p = 0
    while p < len(s):
        x = 0
        k = 0
        more = True
        while more:
            if p >= len(s) or k > 12:  # a truncated run or one wider than 64 bits
                return counts[:0] - 1
            c = np.int64(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = (c & 0x20) != 0
            p += 1
            k += 1
            if not more and (c & 0x10) != 0:
                x |= np.int64(-1) << (5 * k)
        if m > 2:
            x += counts[m - 2]
        counts[m] = x
        m += 1
    return counts[:m]


def rle_counts(segm: dict, height: int, width: int) -> np.ndarray:
    """Run lengths ``(m,)`` int64 of an RLE segmentation (compressed or not) of an H x W image.

    Raises ``AnnotationProblem`` when its ``size`` is not ``[height, width]``, its counts are not
    non-negative integers summing to ``height * width``, or the counts string is not ASCII.
    """
    size = segm.get("size")
    try:
        same_size = size is not None and [int(v) for v in size] == [int(height), int(width)]
    except (TypeError, ValueError, OverflowError):
        same_size = False
    if not same_size:
        raise AnnotationProblem(BAD_RLE_SIZE)
    raw = segm.get("counts")
    try:
        if isinstance(raw, (str, bytes)):
            data = raw.encode("ascii") if isinstance(raw, str) else raw
            if data and not all(48 <= b < 48 + 64 for b in data):
                raise AnnotationProblem(BAD_SEGMENTATION)
            counts = counts_from_string(np.frombuffer(data, dtype=np.uint8))
        elif isinstance(raw, (list, tuple)) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                                    for v in raw):
            counts = np.asarray(raw, dtype=np.int64).reshape(len(raw))
        else:
            raise AnnotationProblem(BAD_SEGMENTATION)
    except (UnicodeEncodeError, OverflowError, TypeError, ValueError) as err:
        if isinstance(err, AnnotationProblem):
            raise
        raise AnnotationProblem(BAD_SEGMENTATION) from None
    if (counts < 0).any() or int(counts.sum()) != int(height) * int(width):
        raise AnnotationProblem(BAD_RLE_COUNTS)
    return counts


def _polygon_problem(polygons: list, height: int, width: int) -> str | None:
    limit = coordinate_limit(height, width)
    usable = 0
    for poly in polygons:
        if not isinstance(poly, (list, tuple)):
            return BAD_SEGMENTATION
        for v in poly:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return BAD_COORDINATES
            if not abs(v) <= limit:  # also catches NaN
                return BAD_COORDINATES
        usable += len(poly) >= 6
    return None if usable else NO_SEGMENTATION


def segmentation_problem(segm: Any, height: int, width: int) -> str | None:
    """What keeps ``segm`` (polygons, or RLE) of an H x W image from pycocotools, or None.

    A list without a polygon of at least 3 points (``[]`` included) gives ``NO_SEGMENTATION``;
    callers that can (the solq dataset, ``valid_ground_truth``) use the box as the mask then.
    """
    if isinstance(segm, list):
        return _polygon_problem(segm, height, width)
    if isinstance(segm, dict) and "counts" in segm:
        try:
            rle_counts(segm, height, width)
        except AnnotationProblem as err:
            return str(err)
        return None
    return BAD_SEGMENTATION


def box_problem(bbox: Any) -> str | None:
    """``BAD_BOX`` unless ``bbox`` is 4 finite numbers (COCO xywh), else None."""
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
        return BAD_BOX
    return None


def annotation_problem(ann: Any, height: int, width: int) -> str | None:
    """The reason an annotation of an H x W image must not reach pycocotools, or None."""
    if not isinstance(ann, dict):
        return BAD_SEGMENTATION
    return box_problem(ann.get("bbox")) or segmentation_problem(ann.get("segmentation"), height, width)


def box_polygon(bbox: Iterable[float]) -> list[list[float]]:
    """The COCO polygon of an xywh box: ``[[x0, y0, x1, y0, x1, y1, x0, y1]]``."""
    x, y, w, h = (float(v) for v in bbox)
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _with_eval_fields(ann: dict, height: int, width: int) -> dict:
    """``ann`` with the "area" (mask pixels) and "iscrowd" (0) that COCOeval needs, when absent."""
    from pycocotools import mask as mask_utils

    segm = ann["segmentation"]
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects([p for p in segm if len(p) >= 6], height, width))
    else:
        rle = mask_utils.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
    area = float(mask_utils.area(rle)) if "area" not in ann else ann["area"]
    return {**ann, "area": float(area), "iscrowd": int(ann.get("iscrowd", 0))}


def valid_ground_truth(coco: "COCO", img_ids: Iterable[int] | None = None, *, box_if_empty: bool = True,
                       report: "SkipReport | None" = None) -> "COCO":
    """A ``COCO`` safe to hand to ``COCOeval``: the images ``img_ids`` (default: all) with their valid annotations.

    An annotation without any polygon (``segmentation: []``) becomes its box when
    ``box_if_empty`` (as the solq dataset trains on it), or is left out; every other problem
    (see ``annotation_problem``) leaves it out. Each left-out annotation is added to ``report``
    (``report.add(ann_id, reason)``). Returns ``coco`` itself when nothing changes.
    """
    from pycocotools.coco import COCO

    wanted = None if img_ids is None else {int(i) for i in img_ids}
    anns, changed = [], wanted is not None
    for ann in coco.dataset.get("annotations", []):
        img = coco.imgs.get(ann.get("image_id")) if isinstance(ann, dict) else None
        if wanted is not None and (img is None or img["id"] not in wanted):
            continue
        problem = "unknown image" if img is None else annotation_problem(ann, img["height"], img["width"])
        if problem == NO_SEGMENTATION and box_if_empty:
            ann, problem = {**ann, "segmentation": box_polygon(ann["bbox"])}, None
            changed = True
        if problem is not None:
            changed = True
            if report is not None:
                report.add(ann.get("id", -1) if isinstance(ann, dict) else -1, problem)
            continue
        if "area" not in ann or "iscrowd" not in ann:  # COCOeval reads both
            ann = _with_eval_fields(ann, img["height"], img["width"])
            changed = True
        anns.append(ann)
    if not changed:
        return coco
    gt = COCO()
    images = coco.dataset.get("images", [])
    gt.dataset = {**coco.dataset, "annotations": anns,
                  "images": images if wanted is None else [i for i in images if i.get("id") in wanted]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt
