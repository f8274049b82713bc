"""Box-relative ``N x N`` soft masks -> ``H x W`` image masks: ``paste`` (numba on CPU, batched ``bmm`` on GPU).

Boxes are float ``xyxy`` in pixel coordinates: pixel ``i`` covers ``[i, i + 1)`` and its centre is
``i + 0.5``; every image pixel whose centre lies in a box takes the bilinear sample of the mask
there (the prediction side of a mask codec). ``maskcodec.box_rle`` reuses ``_paste_axis`` to give
bit-identical values without building the image masks.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from numba import njit, prange

from . import backend
from .backend import Array
from .box_checks import _check_boxes, _check_image_size, _check_masks, _check_threshold
from .parallel import PARALLEL_MIN_WORK, parallel_allowed

__all__ = ["paste"]


@njit(inline="always")
def _paste_axis(lo, hi, n_pix, n_mask):
    """Pixels whose centre lies in [lo, hi] and their bilinear source indices/weights."""
    a = max(0, int(math.ceil(lo - 0.5)))
    b = min(n_pix - 1, int(math.floor(hi - 0.5)))
    count = max(0, b - a + 1)
    i0 = np.empty(count, dtype=np.int64)
    i1 = np.empty(count, dtype=np.int64)
    wt = np.empty(count, dtype=np.float64)
    scale = n_mask / (hi - lo)
    for k in range(count):
        c = a + k + 0.5
        if c < lo or c > hi:  # guard against rounding in the ceil/floor above
            i0[k] = 0
            i1[k] = 0
            wt[k] = -1.0
            continue
        u = (c - lo) * scale - 0.5
        if u < 0.0:
            u = 0.0
        elif u > n_mask - 1:
            u = n_mask - 1.0
        u0 = int(u)
        i0[k] = u0
        i1[k] = min(u0 + 1, n_mask - 1)
        wt[k] = u - u0
    return a, count, i0, i1, wt


@njit(inline="always")
def _paste_one(b, masks, boxes, height, width, binary, threshold, out_f, out_b):
    """Paste mask ``b`` into its box, touching only the pixels whose centre lies in the box."""
    nh = masks.shape[1]
    nw = masks.shape[2]
    x0 = boxes[b, 0]
    y0 = boxes[b, 1]
    x1 = boxes[b, 2]
    y1 = boxes[b, 3]
    if not (x1 > x0 and y1 > y0):
        return
    xa, nx, u0, u1, lu = _paste_axis(x0, x1, width, nw)
    ya, ny, v0, v1, lv = _paste_axis(y0, y1, height, nh)
    if nx == 0 or ny == 0:
        return
    row = np.empty(nw, dtype=np.float64)
    for k in range(ny):
        if lv[k] < 0.0:
            continue
        wa = 1.0 - lv[k]
        wb = lv[k]
        ra = v0[k]
        rb = v1[k]
        for c in range(nw):
            row[c] = wa * masks[b, ra, c] + wb * masks[b, rb, c]
        y = ya + k
        for m in range(nx):
            if lu[m] < 0.0:
                continue
            v = (1.0 - lu[m]) * row[u0[m]] + lu[m] * row[u1[m]]
            if binary:
                out_b[b, y, xa + m] = v >= threshold
            else:
                out_f[b, y, xa + m] = v


@njit(parallel=True, cache=True)
def _paste_kernel(masks, boxes, height, width, binary, threshold, out_f, out_b):
    for b in prange(masks.shape[0]):
        _paste_one(b, masks, boxes, height, width, binary, threshold, out_f, out_b)


@njit(cache=True)
def _paste_kernel_serial(masks, boxes, height, width, binary, threshold, out_f, out_b):
    for b in range(masks.shape[0]):
        _paste_one(b, masks, boxes, height, width, binary, threshold, out_f, out_b)


def _paste_numpy(masks: np.ndarray, boxes: np.ndarray, height: int, width: int,
                 threshold: float | None) -> np.ndarray:
    n = masks.shape[0]
    if threshold is None:
        out_f = np.zeros((n, height, width), dtype=np.float32)
        out_b = np.zeros((0, 0, 0), dtype=np.bool_)
    else:
        out_f = np.zeros((0, 0, 0), dtype=np.float32)
        out_b = np.zeros((n, height, width), dtype=np.bool_)
    if n and masks.shape[1] and masks.shape[2]:
        masks = np.ascontiguousarray(masks, dtype=np.float32)
        boxes = np.ascontiguousarray(boxes, dtype=np.float64)
        t = 0.0 if threshold is None else float(threshold)
        parallel = n > 1 and masks[0].size * n >= PARALLEL_MIN_WORK // 4 and parallel_allowed()
        kernel = _paste_kernel if parallel else _paste_kernel_serial
        kernel(masks, boxes, height, width, threshold is not None, t, out_f, out_b)
    return out_b if threshold is not None else out_f


def _axis_weights(torch, lo, hi, valid, n_pix: int, n_mask: int, dtype):
    """(B, n_pix, n_mask) bilinear weight matrices for one axis (rows outside the box are 0)."""
    centres = torch.arange(n_pix, device=lo.device, dtype=dtype) + 0.5  # (P,)
    span = torch.where(valid, hi - lo, torch.ones_like(lo))
    inside = (centres >= lo[:, None]) & (centres <= hi[:, None]) & valid[:, None]  # (B, P)
    u = ((centres - lo[:, None]) / span[:, None] * n_mask - 0.5).clamp(0, n_mask - 1)
    i0 = u.floor()
    frac = u - i0
    i0 = i0.long()
    i1 = (i0 + 1).clamp(max=n_mask - 1)
    keep = inside.to(dtype)
    weights = torch.zeros(lo.shape[0], n_pix, n_mask, device=lo.device, dtype=dtype)
    weights.scatter_add_(2, i0[..., None], ((1 - frac) * keep)[..., None])
    weights.scatter_add_(2, i1[..., None], (frac * keep)[..., None])
    return weights


def _paste_torch(masks, boxes, height: int, width: int, threshold: float | None):
    """Batched, differentiable paste: out = Wy @ masks @ Wx^T with sparse-in-effect weights."""
    torch = sys.modules["torch"]
    masks = masks.float() if not masks.is_floating_point() else masks
    dtype = masks.dtype
    boxes = boxes.to(device=masks.device, dtype=dtype if dtype == torch.float64 else torch.float32)
    n, nh, nw = masks.shape
    x0, y0, x1, y1 = boxes.unbind(1)
    valid = (x1 > x0) & (y1 > y0)
    wx = _axis_weights(torch, x0, x1, valid, width, nw, boxes.dtype).to(dtype)  # (B, W, Nw)
    wy = _axis_weights(torch, y0, y1, valid, height, nh, boxes.dtype).to(dtype)  # (B, H, Nh)
    # choose the cheaper association of Wy @ M @ Wx^T
    if height * nh * nw + height * nw * width <= nh * nw * width + height * nh * width:
        out = torch.bmm(torch.bmm(wy, masks), wx.transpose(1, 2))
    else:
        out = torch.bmm(wy, torch.bmm(masks, wx.transpose(1, 2)))
    if threshold is not None:
        return out >= threshold
    return out.float()


def paste(masks: Array, boxes: Array, image_size: tuple[int, int], *,
          threshold: float | None = 0.5, impl: str = "auto") -> Array:
    """Paste box-relative masks into an image: ``(B, N, N)`` + boxes ``(B, 4)`` -> ``(B, H, W)``.

    Parameters
    ----------
    masks : (B, Nh, Nw) float (soft masks, e.g. a codec's ``decode`` output), numpy or torch
        (any device). Usually square (``N x N``).
    boxes : (B, 4) float, ``xyxy`` image pixels, same array kind as ``masks``.
    image_size : (H, W)
    threshold : float or None
        Binarise at ``value >= threshold`` (default 0.5) or return float32 soft masks.
    impl : "auto", "numba" or "torch"
        ``"numba"`` runs a compiled CPU kernel that touches only the pixels inside each box
        (numpy arrays and CPU tensors). ``"torch"`` is fully batched (two ``bmm`` per batch on the
        tensors' device) and differentiable with respect to ``masks``. ``"auto"`` picks numba for
        numpy arrays and CPU tensors (unless soft output of a tensor that requires grad is
        asked for), torch otherwise.

    Returns
    -------
    (B, H, W) bool (threshold given) or float32, of the same array kind and device as ``masks``.

    Image pixel ``(y, x)`` takes the bilinear sample of the mask at
    ``u = (x + 0.5 - x0) / (x1 - x0) * Nw - 0.5`` (and likewise ``v``), clamped to the mask's
    edges (``grid_sample(..., align_corners=False, padding_mode="border")``); pixels whose centre
    lies outside the closed box ``[x0, x1] x [y0, y1]`` are 0, and boxes of zero or negative
    width or height give all-zero masks.
    """
    height, width = _check_image_size(image_size)
    threshold = _check_threshold(threshold)
    if impl not in ("auto", "numba", "torch"):
        raise ValueError(f"impl must be 'auto', 'numba' or 'torch', got {impl!r}")
    masks = backend.as_array(masks)
    boxes = backend.as_array(boxes)
    kind = backend.backend_of(masks)
    _check_masks(masks)
    if kind == "cupy":
        raise ValueError("paste supports numpy arrays and torch tensors; convert cupy arrays with torch.as_tensor")
    if backend.backend_of(boxes) != kind and kind == "torch":
        boxes = backend.constant_like(np.asarray(backend.to_numpy(boxes)), masks)
    _check_boxes(boxes, masks.shape[0])
    if kind == "numpy":
        if impl == "torch":
            raise ValueError("impl='torch' needs torch tensors; pass torch.as_tensor(masks) or use impl='numba'")
        return _paste_numpy(masks, np.asarray(boxes, dtype=np.float64), height, width, threshold)
    use_torch = impl == "torch" or (
        impl == "auto"
        and (masks.device.type != "cpu" or (threshold is None and masks.requires_grad))
    )
    if use_torch:
        return _paste_torch(masks, boxes, height, width, threshold)
    if masks.device.type != "cpu":
        raise ValueError("impl='numba' runs on the CPU; move the tensors with .cpu() or use impl='torch'")
    torch = sys.modules["torch"]
    out = _paste_numpy(
        masks.detach().float().numpy(), boxes.detach().double().cpu().numpy(), height, width, threshold
    )
    return torch.from_numpy(out)
