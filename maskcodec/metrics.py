"""Mask quality metrics: mask IoU and Boundary IoU (Cheng et al., CVPR 2021).

All functions take batches of full-image masks ``(B, H, W)`` as numpy arrays or torch tensors
(bool, {0, 1} integers, or soft floats which are binarised at ``>= 0.5``) and return numpy
float64 arrays.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from . import backend
from .backend import Array

__all__ = ["mask_iou", "boundary_iou", "mask_iou_matrix", "mask_boundary"]


def _as_binary(masks: Array, name: str) -> np.ndarray:
    masks = backend.to_numpy(backend.as_array(masks))
    if masks.ndim != 3:
        hint = "; for a single mask use mask[None]" if masks.ndim == 2 else ""
        raise ValueError(f"{name} must have shape (B, H, W), got {tuple(masks.shape)}{hint}")
    if masks.dtype == np.bool_:
        return masks
    if np.issubdtype(masks.dtype, np.floating):
        if masks.size and not np.isfinite(masks).all():
            raise ValueError(f"{name} contain NaN or infinite values")
        return masks >= 0.5
    if np.issubdtype(masks.dtype, np.integer):
        return masks != 0
    raise ValueError(f"{name} must be bool, integer or float, got dtype {masks.dtype}")


def _pair(pred: Array, gt: Array) -> tuple[np.ndarray, np.ndarray]:
    p = _as_binary(pred, "pred")
    g = _as_binary(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape (B, H, W), got {p.shape} and {g.shape}")
    return p, g


def _ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    inter = inter.astype(np.float64)
    union = union.astype(np.float64)
    out = np.ones_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def mask_iou(pred: Array, gt: Array) -> np.ndarray:
    """IoU of each pair ``(pred[i], gt[i])`` of ``(B, H, W)`` masks, ``(B,)`` float64.

    Soft (float) inputs are binarised at ``>= 0.5``; integer inputs at ``!= 0``. Two empty
    masks agree perfectly: their IoU is 1.0.
    """
    p, g = _pair(pred, gt)
    b = p.shape[0]
    p = p.reshape(b, p[0].size if b else 0)
    g = g.reshape(b, g[0].size if b else 0)
    inter = np.count_nonzero(p & g, axis=1)
    union = np.count_nonzero(p | g, axis=1)
    return _ratio(inter, union)


def boundary_width(image_size: tuple[int, int], dilation_ratio: float = 0.02) -> int:
    """Boundary width d = max(1, round(dilation_ratio * image diagonal)) in pixels."""
    h, w = image_size
    return max(1, int(round(dilation_ratio * math.sqrt(h * h + w * w))))


def mask_boundary(masks: Array, *, dilation_ratio: float = 0.02) -> np.ndarray:
    """Inner boundary band of ``(B, H, W)`` masks: the mask minus its erosion by d pixels, bool.

    The erosion uses a (2d + 1) x (2d + 1) square (d iterations of a 3 x 3 erosion) with
    everything outside the image counted as background, so masks cut by the image border
    have a boundary there too (the reference code pads the image with one zero pixel).
    """
    m = _as_binary(masks, "masks")
    if not (isinstance(dilation_ratio, (int, float)) and math.isfinite(dilation_ratio) and dilation_ratio >= 0):
        raise ValueError(f"dilation_ratio must be a non-negative number, got {dilation_ratio!r}")
    b, h, w = m.shape
    if m.size == 0:
        return m.copy()
    d = boundary_width((h, w), dilation_ratio)
    u8 = m.view(np.uint8)
    # a square erosion is separable: a running minimum along rows, then along columns
    eroded = ndimage.minimum_filter1d(u8, size=2 * d + 1, axis=2, mode="constant", cval=0)
    eroded = ndimage.minimum_filter1d(eroded, size=2 * d + 1, axis=1, mode="constant", cval=0)
    return m & ~eroded.view(np.bool_)


def boundary_iou(pred: Array, gt: Array, *, dilation_ratio: float = 0.02) -> np.ndarray:
    """Boundary IoU of each pair of ``(B, H, W)`` masks, ``(B,)`` float64.

    Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation Evaluation"
    (CVPR 2021), as in bowenc0221/boundary-iou-api: each mask's boundary is the set of mask
    pixels within d = max(1, round(dilation_ratio * sqrt(H^2 + W^2))) pixels (chessboard
    distance) of the background or of the image border (``mask_boundary``); the score is
    |Bp & Bg| / |Bp | Bg|. Soft inputs are binarised at ``>= 0.5``. Two empty masks score 1.0
    (the reference code divides 0 by 0).
    """
    p, g = _pair(pred, gt)
    b = p.shape[0]
    if b == 0:
        return np.zeros(0, dtype=np.float64)
    n = p[0].size
    bp = mask_boundary(p, dilation_ratio=dilation_ratio).reshape(b, n)
    bg = mask_boundary(g, dilation_ratio=dilation_ratio).reshape(b, n)
    inter = np.count_nonzero(bp & bg, axis=1)
    union = np.count_nonzero(bp | bg, axis=1)
    return _ratio(inter, union)


def mask_iou_matrix(a, b) -> np.ndarray:
    """Pairwise IoU ``(A, B)`` float64 between two sets of masks.

    ``a`` and ``b`` are ``(A, H, W)`` / ``(B, H, W)`` masks (numpy or torch; soft inputs binarised
    at 0.5) or lists of COCO RLE dicts (pycocotools ``maskUtils.iou``, no crowd handling).
    Pairs of empty masks score 1.0.
    """
    if isinstance(a, list) or isinstance(b, list):
        from pycocotools import mask as mask_utils

        a, b = list(a), list(b)
        if not a or not b:
            return np.zeros((len(a), len(b)), dtype=np.float64)
        return np.asarray(mask_utils.iou(a, b, [0] * len(b)), dtype=np.float64).reshape(len(a), len(b))
    pa = _as_binary(a, "a")
    pb = _as_binary(b, "b")
    if pa.shape[0] == 0 or pb.shape[0] == 0:
        return np.zeros((pa.shape[0], pb.shape[0]), dtype=np.float64)
    if pa.shape[1:] != pb.shape[1:]:
        raise ValueError(f"a and b must share the image size, got {pa.shape} and {pb.shape}")
    dtype = np.float32 if pa[0].size < 2**24 else np.float64  # float32 counts are exact below 2**24
    fa = pa.reshape(pa.shape[0], pa[0].size).astype(dtype)
    fb = pb.reshape(pb.shape[0], pb[0].size).astype(dtype)
    inter = fa @ fb.T
    area_a = fa.sum(1)[:, None]
    area_b = fb.sum(1)[None, :]
    return _ratio(np.rint(inter), area_a + area_b - np.rint(inter))
