"""The real masks of the codec speed benchmarks: box-relative COCO masks from the shared data sets.

Each non-crowd annotation of the shared COCO files is rasterised (pycocotools ``annToMask``),
cropped to its integer box and resized bilinearly to N x N (``soft``: kept as float32 in [0, 1];
else thresholded at 0.5), as a mask-head target would be. Used by ``codec_speed.py`` and
``run_length_stages.py``.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ANNOTATIONS = [
    "coco_mini/annotations/instances_val.json",
    "coco_mini/annotations/instances_train.json",
    "coco128/annotations/instances_train.json",
    "tiny_coco/annotations/instances_val.json",
    "tiny_coco/annotations/instances_train.json",
]


def coco_box_masks(n: int, limit: int | None = None, soft: bool = False) -> np.ndarray:
    """Box-relative binary masks ``(M, n, n)`` bool from the shared COCO annotation files
    (``soft``: the float32 bilinear resize before the 0.5 threshold, values in [0, 1])."""
    import torch
    import torch.nn.functional as F
    from pycocotools.coco import COCO

    out: list[np.ndarray] = []
    for rel in ANNOTATIONS:
        path = DATA / rel
        if not path.exists():
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
        for ann in coco.loadAnns(coco.getAnnIds(iscrowd=False)):
            x, y, w, h = ann["bbox"]
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            x1, y1 = int(np.ceil(x + w)), int(np.ceil(y + h))
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            crop = torch.from_numpy(coco.annToMask(ann)[y0:y1, x0:x1]).float()[None, None]
            resized = F.interpolate(crop, size=(n, n), mode="bilinear", align_corners=False)[0, 0]
            out.append(resized.clamp(0, 1).numpy() if soft else (resized > 0.5).numpy())
            if limit is not None and len(out) >= limit:
                return np.stack(out)
    if not out:
        raise SystemExit(f"no COCO annotations under {DATA}; this benchmark needs the shared data")
    return np.stack(out)
