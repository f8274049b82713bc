"""COCO evaluation: box AP, mask AP and Boundary AP with pycocotools.

``evaluate_coco(coco_gt, results)`` runs ``COCOeval`` for ``bbox`` and ``segm`` and
``BoundaryCOCOeval`` for ``boundary``, and returns ``{iou_type: {"AP", "AP50", "AP75", "APs",
"APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}}`` in percent.

Boundary AP (Cheng et al., "Boundary IoU", CVPR 2021; reference: bowenc0221/boundary-iou-api):
the IoU between a detection and a non-crowd ground truth is ``min(mask IoU, boundary IoU)``,
where the boundary of a mask is the set of its pixels within ``d = round(0.02 · image
diagonal)`` pixels of its contour (pixels outside the image count as background). Crowd
ground truths keep the mask IoU. Everything else (matching, area ranges, precision
accumulation) is the stock COCOeval for ``segm``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskcodec.atomic import atomic_write
from maskcodec.coco.validate import valid_ground_truth
from maskcodec.metrics import mask_boundary

IOU_TYPES = ("bbox", "segm", "boundary")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def boundary_rle(rle: dict, dilation_ratio: float = 0.02) -> dict:
    """Boundary band (``maskcodec.metrics.mask_boundary``) of an RLE mask, as a Fortran-ordered RLE."""
    mask = mask_utils.decode(rle)
    band = mask_boundary(mask[None], dilation_ratio=dilation_ratio)[0]
    return mask_utils.encode(np.asfortranarray(band.view(np.uint8)))


class BoundaryCOCOeval(COCOeval):
    """``COCOeval`` for Boundary AP: segm evaluation whose IoU is ``min(mask IoU, boundary IoU)``.

    Boundaries are computed lazily (only for image/category pairs that have both detections and
    ground truths) and cached per annotation.
    """

    def __init__(self, coco_gt: COCO, coco_dt: COCO, dilation_ratio: float = 0.02):
        super().__init__(coco_gt, coco_dt, iouType="segm")
        self.dilation_ratio = dilation_ratio
        self._boundaries: dict[tuple[str, int], dict] = {}

    def _boundary(self, kind: str, ann: dict) -> dict:
        key = (kind, ann["id"])
        if key not in self._boundaries:
            self._boundaries[key] = boundary_rle(ann["segmentation"], self.dilation_ratio)
        return self._boundaries[key]

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools naming)
        p = self.params
        if p.useCats:
            gt = self._gts[imgId, catId]
            dt = self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        iscrowd = [int(g["iscrowd"]) for g in gt]
        mask_ious = mask_utils.iou([d["segmentation"] for d in dt], [g["segmentation"] for g in gt], iscrowd)
        if len(gt) == 0 or len(dt) == 0:
            return mask_ious
        g_b = [self._boundary("gt", g) for g in gt]
        d_b = [self._boundary("dt", d) for d in dt]
        boundary_ious = np.asarray(mask_utils.iou(d_b, g_b, iscrowd))
        ious = np.array(mask_ious, dtype=np.float64)
        normal = np.asarray(iscrowd) == 0
        ious[:, normal] = np.minimum(ious[:, normal], boundary_ious[:, normal])
        return ious


def _as_coco(gt: COCO | str | os.PathLike) -> COCO:
    if isinstance(gt, COCO):
        return gt
    path = Path(gt)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth annotation file not found: {path}")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _strip(results: Iterable[dict], iou_type: str) -> list[dict]:
    """Copy results keeping only what ``loadRes`` needs for ``iou_type`` (bbox xor segmentation)."""
    out = []
    for r in results:
        r = {k: v for k, v in r.items() if k in ("image_id", "category_id", "score", "bbox", "segmentation")}
        if iou_type == "bbox":
            r.pop("segmentation", None)
            if "bbox" not in r:
                continue
        else:
            r.pop("bbox", None)
            if "segmentation" not in r:
                continue
            r["segmentation"] = dict(r["segmentation"])  # loadRes modifies annotations in place
        out.append(r)
    return out


def evaluate_coco(
    coco_gt: COCO | str | os.PathLike,
    results: Sequence[dict],
    iou_types: Sequence[str] = IOU_TYPES,
    img_ids: Optional[Sequence[int]] = None,
    dilation_ratio: float = 0.02,
    verbose: bool = False,
) -> dict[str, dict[str, float]]:
    """COCO metrics (percent) of ``results`` (COCO result dicts) against ``coco_gt``.

    ``img_ids`` restricts the evaluation (default: every image of ``coco_gt``). An empty result
    list scores 0 everywhere (-1 where the ground truth has no object in that area range).
    """
    for t in iou_types:
        if t not in IOU_TYPES:
            raise ValueError(f"unknown iou type {t!r}; choose from {IOU_TYPES}")
    gt = valid_ground_truth(_as_coco(coco_gt))  # nothing pycocotools would crash or hang on
    gt_img_ids = set(gt.getImgIds())
    ids = sorted(gt_img_ids if img_ids is None else set(int(i) for i in img_ids))
    unknown = {int(r["image_id"]) for r in results} - gt_img_ids
    if unknown:
        raise ValueError(f"results refer to {len(unknown)} image ids absent from the ground truth, e.g. {sorted(unknown)[:5]}")
    metrics: dict[str, dict[str, float]] = {}
    for t in iou_types:
        res = _strip(results, "bbox" if t == "bbox" else "segm")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            if res:
                dt = gt.loadRes(copy.deepcopy(res))
            else:
                dt = COCO()
                dt.dataset = {"images": gt.dataset.get("images", []), "categories": gt.dataset.get("categories", []), "annotations": []}
                dt.createIndex()
            if t == "boundary":
                ev: COCOeval = BoundaryCOCOeval(gt, dt, dilation_ratio=dilation_ratio)
            else:
                ev = COCOeval(gt, dt, iouType=t)
            ev.params.imgIds = ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        if verbose:
            print(f"--- {t} ---\n{out.getvalue()}")
        metrics[t] = {name: float(v) * 100 if v >= 0 else -1.0 for name, v in zip(STAT_NAMES, ev.stats)}
    return metrics


def format_table(metrics: dict[str, dict[str, float]], columns: Sequence[str] = STAT_NAMES[:6]) -> str:
    """A markdown table with one row per IoU type."""
    lines = ["| type | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for t, m in metrics.items():
        lines.append(f"| {t} | " + " | ".join(f"{m[c]:.1f}" for c in columns) + " |")
    return "\n".join(lines)


def save_metrics(metrics: dict, path: str | os.PathLike) -> None:
    """Write metrics as JSON (atomic)."""
    atomic_write(path, json.dumps(metrics, indent=2))


def gt_results(coco_gt: COCO, img_ids: Optional[Sequence[int]] = None, score: float = 1.0) -> list[dict]:
    """COCO results that reproduce the non-crowd ground truth exactly (RLE masks); for tests and sanity checks."""
    out = []
    for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=img_ids if img_ids is not None else [])):
        if ann.get("iscrowd", 0):
            continue
        rle = coco_gt.annToRLE(ann)
        counts = rle["counts"]
        out.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": list(map(float, ann["bbox"])),
                "segmentation": {"size": list(rle["size"]), "counts": counts.decode() if isinstance(counts, bytes) else counts},
                "score": score,
            }
        )
    return out
