"""Image-space metrics inside a window around each object, equal to the full-image values.

A window holds an object's box, its GT pixels and a margin wider than the boundary dilation,
so mask IoU and boundary IoU computed in it are exactly the full-image values at a fraction
of the cost; GT windows are computed once and reused for every setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import backend, geometry, metrics

BOUNDARY_DILATION_RATIO = 0.02


@dataclass
class GTWindow:
    """The full-resolution GT mask of one annotation, kept as a window plus counts."""

    x0: int
    y0: int
    crop: np.ndarray  # (h, w) bool, GT pixels inside the window
    area: int  # all GT pixels in the image
    image_size: tuple[int, int]  # (H, W)
    dilation: int  # boundary-IoU dilation in pixels for this image
    band: np.ndarray  # (h, w) bool, the GT boundary band (metrics.mask_boundary) inside the window


def gt_window(full: np.ndarray, box: np.ndarray) -> GTWindow:
    h, w = full.shape
    d = metrics.boundary_width((h, w), BOUNDARY_DILATION_RATIO)
    margin = d + 3
    x0, y0 = math.floor(box[0]), math.floor(box[1])
    x1, y1 = math.ceil(box[2]), math.ceil(box[3])
    ys, xs = np.nonzero(full.any(axis=1))[0], np.nonzero(full.any(axis=0))[0]
    if ys.size:
        x0, x1 = min(x0, int(xs[0])), max(x1, int(xs[-1]) + 1)
        y0, y1 = min(y0, int(ys[0])), max(y1, int(ys[-1]) + 1)
    x0, y0 = max(0, x0 - margin), max(0, y0 - margin)
    x1, y1 = min(w, x1 + margin), min(h, y1 + margin)
    crop = np.ascontiguousarray(full[y0:y1, x0:x1])
    band = metrics.mask_boundary(crop[None], dilation_ratio=d / math.hypot(*crop.shape))[0]
    return GTWindow(x0, y0, crop, int(full.sum()), (h, w), d, band)


def paste_window(soft: np.ndarray, box: np.ndarray, win: GTWindow) -> np.ndarray:
    """Paste one decoded soft mask (N, N) into the window of ``win``; (h, w) bool."""
    return paste_windows(soft[None], np.asarray(box, dtype=np.float64)[None], [win])[0]


def paste_windows(soft: np.ndarray, boxes: np.ndarray, wins: Sequence[GTWindow]) -> list[np.ndarray]:
    """Paste soft masks (g, N, N) into their windows with one ``geometry.paste`` call.

    Every mask is pasted into a canvas as large as the largest window of the group, with its
    box shifted to its window's origin; pixel values do not depend on the canvas size, so
    ``canvas[:h, :w]`` equals a paste into the (h, w) window (and into the full image).
    """
    offsets = np.array([[w.x0, w.y0, w.x0, w.y0] for w in wins], dtype=np.float64)
    hc = max(w.crop.shape[0] for w in wins)
    wc = max(w.crop.shape[1] for w in wins)
    canvas = geometry.paste(soft, np.asarray(boxes, dtype=np.float64) - offsets, (hc, wc), threshold=0.5)
    canvas = np.asarray(backend.to_numpy(canvas), dtype=bool)
    return [canvas[j, : w.crop.shape[0], : w.crop.shape[1]] for j, w in enumerate(wins)]


def boundary_ious(preds: Sequence[np.ndarray], wins: Sequence[GTWindow]) -> np.ndarray:
    """Boundary IoU of window pairs with the dilation of each full image (one batched call).

    Windows hold every pixel of both masks with a margin wider than the dilation wherever
    they do not meet the image border, and the metric treats the image border as
    background, so zero-padding windows to a common canvas changes nothing; the group
    must share one dilation ``d`` (see ``window_groups``).
    """
    ds = {w.dilation for w in wins}
    if len(ds) != 1:
        raise ValueError("windows of one boundary-IoU call must share the dilation")  # pragma: no cover
    hc = max(w.crop.shape[0] for w in wins)
    wc = max(w.crop.shape[1] for w in wins)
    p = np.zeros((len(wins), hc, wc), dtype=bool)
    for j, (pred, w) in enumerate(zip(preds, wins)):
        p[j, : pred.shape[0], : pred.shape[1]] = pred
    bands = metrics.mask_boundary(p, dilation_ratio=ds.pop() / math.hypot(hc, wc))
    out = np.empty(len(wins))
    for j, w in enumerate(wins):
        bp = bands[j, : w.crop.shape[0], : w.crop.shape[1]]
        inter = np.count_nonzero(bp & w.band)
        union = np.count_nonzero(bp | w.band)
        out[j] = inter / union if union else 1.0
    return out


def window_boundary_iou(pred: np.ndarray, win: GTWindow) -> float:
    """Boundary IoU of one window pair with the dilation of the full image."""
    return float(boundary_ious([pred], [win])[0])


def window_groups(windows: Sequence[GTWindow], max_masks: int = 64, max_pixels: int = 2**24) -> list[np.ndarray]:
    """Indices of masks grouped for batched paste / boundary IoU: same dilation, similar window size."""
    order = sorted(range(len(windows)), key=lambda i: (windows[i].dilation, windows[i].crop.size))
    groups, cur, hc, wc = [], [], 0, 0
    for i in order:
        h, w = windows[i].crop.shape
        nh, nw = max(hc, h), max(wc, w)
        if cur and (
            len(cur) >= max_masks
            or windows[cur[0]].dilation != windows[i].dilation
            or (len(cur) + 1) * nh * nw > max_pixels
        ):
            groups.append(np.array(cur))
            cur, nh, nw = [], h, w
        cur.append(i)
        hc, wc = nh, nw
    if cur:
        groups.append(np.array(cur))
    return groups
