"""Move masks between image space and box space.

``crop_resize`` cuts full-image masks ``(B, H, W)`` to their boxes and resamples them to
``size x size`` (the ground-truth side of a mask codec); ``paste`` puts box-relative masks
``(B, N, N)`` back into an ``H x W`` image (the prediction side).

Boxes are float ``xyxy`` in pixel coordinates: pixel ``i`` covers ``[i, i + 1)`` and its
centre is ``i + 0.5``. Both functions sample bilinearly; ``crop_resize`` averages several samples
per cell by default (adaptive ROIAlign, ``maskcodec.roi_adaptive``), as the official SOLQ targets.
"""

from __future__ import annotations

import math
import operator
import sys

import numpy as np
from numba import njit, prange

from . import backend
from .backend import Array
from .parallel import parallel_allowed
from .roi_adaptive import adaptive_ragged, adaptive_ragged_serial, word_view

__all__ = ["crop_resize", "paste"]


# ----------------------------------------------------------------------------- validation
def _check_boxes(boxes: np.ndarray, batch: int, name: str = "boxes") -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        hint = "; for a single box use boxes[None]" if boxes.ndim == 1 else ""
        raise ValueError(f"{name} must have shape (B, 4) in xyxy pixels, got {tuple(boxes.shape)}{hint}")
    if boxes.shape[0] != batch:
        raise ValueError(
            f"masks and {name} disagree on the batch size: {batch} masks but {boxes.shape[0]} boxes; "
            "pass one box per mask"
        )
    if batch and not backend.is_finite(boxes):
        raise ValueError(f"{name} contain NaN or infinite coordinates")


def _check_size(size, name: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{name} must be a positive integer, got {size!r}")
    return int(size)


def _check_threshold(threshold) -> float | None:
    if threshold is None:
        return None
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number or None, got {threshold}")
    return threshold


# ----------------------------------------------------------------------------- crop_resize
@njit(inline="always")
def _roi_axis(start, extent, size, n_pix, origin, n_region, stride, lo_idx, lo_w, hi_idx, hi_w):
    """Per-axis part of torchvision roi_align's bilinear_interpolate for one box.

    Sample k sits at ``start - 0.5 + (k + 0.5) * extent / size``; samples beyond [-1, n_pix] get
    zero weights, those in [-1, 0) and beyond the last pixel take the edge pixel. Writes the
    buffer offsets (relative to the region, times ``stride``) and weights of the two taps;
    taps outside the decoded region get weight 0 (they read as 0).
    """
    for k in range(size):
        c = start - 0.5 + (k + 0.5) * extent / size
        if c < -1.0 or c > n_pix:
            lo_idx[k] = 0
            hi_idx[k] = 0
            lo_w[k] = 0.0
            hi_w[k] = 0.0
            continue
        if c < 0.0:
            c = 0.0
        low = int(c)
        if low >= n_pix - 1:
            low = n_pix - 1
            high = n_pix - 1
            c = float(low)
        else:
            high = low + 1
        frac = c - low
        wl = 1.0 - frac
        wh = frac
        rl = low - origin
        rh = high - origin
        if rl < 0 or rl >= n_region:
            rl = 0
            wl = 0.0
        if rh < 0 or rh >= n_region:
            rh = 0
            wh = 0.0
        lo_idx[k] = rl * stride
        hi_idx[k] = rh * stride
        lo_w[k] = wl
        hi_w[k] = wh


@njit(inline="always")
def _crop_one(b, buf, meta, boxes, size, binary, threshold, out_f, out_b):
    """Sample item ``b`` of a ragged batch on a size x size grid over its box (see ``_crop_resize_ragged``)."""
    off = meta[b, 0]
    x0 = boxes[b, 0]
    y0 = boxes[b, 1]
    bw = boxes[b, 2] - x0
    bh = boxes[b, 3] - y0
    if not (bw > 0.0 and bh > 0.0):
        return  # zero-area box: all-zero output (outputs are zero-initialised)
    yl = np.empty(size, dtype=np.int64)
    yh = np.empty(size, dtype=np.int64)
    wyl = np.empty(size, dtype=np.float64)
    wyh = np.empty(size, dtype=np.float64)
    xl = np.empty(size, dtype=np.int64)
    xh = np.empty(size, dtype=np.int64)
    wxl = np.empty(size, dtype=np.float64)
    wxh = np.empty(size, dtype=np.float64)
    _roi_axis(y0, bh, size, meta[b, 7], meta[b, 3], meta[b, 5], meta[b, 1], yl, wyl, yh, wyh)
    _roi_axis(x0, bw, size, meta[b, 8], meta[b, 4], meta[b, 6], meta[b, 2], xl, wxl, xh, wxh)
    # separable: interpolate the (at most two) source rows along x once, then blend them;
    # consecutive output rows mostly share source rows, which stay cached in row0/row1
    row0 = np.empty(size, dtype=np.float64)
    row1 = np.empty(size, dtype=np.float64)
    key0 = -1
    key1 = -1
    for i in range(size):
        ya = wyl[i]
        yb = wyh[i]
        if ya == 0.0 and yb == 0.0:
            continue  # sample outside the image: stays 0
        ra = off + yl[i]
        rb = off + yh[i]
        if ra != key0:
            if ra == key1:
                row0, row1 = row1, row0
                key0, key1 = key1, key0
            else:
                for j in range(size):
                    row0[j] = wxl[j] * buf[ra + xl[j]] + wxh[j] * buf[ra + xh[j]]
                key0 = ra
        if rb != key1:
            if rb == key0:
                row1[:] = row0
            else:
                for j in range(size):
                    row1[j] = wxl[j] * buf[rb + xl[j]] + wxh[j] * buf[rb + xh[j]]
            key1 = rb
        if binary:
            for j in range(size):
                out_b[b, i, j] = ya * row0[j] + yb * row1[j] >= threshold
        else:
            for j in range(size):
                out_f[b, i, j] = ya * row0[j] + yb * row1[j]


@njit(parallel=True, cache=True)
def _crop_resize_ragged(buf, meta, boxes, size, binary, threshold, out_f, out_b):
    """Sample every item of a ragged batch of mask regions on a size x size grid over its box.

    ``meta[b] = (offset, stride_y, stride_x, origin_y, origin_x, region_h, region_w, image_h,
    image_w)``: item ``b``'s pixel ``(iy, ix)`` of its ``image_h x image_w`` image is
    ``buf[offset + (iy - origin_y) * stride_y + (ix - origin_x) * stride_x]`` inside the region
    and 0 outside it. Writes bool ``out_b`` (value >= threshold) when ``binary`` else
    float32 ``out_f``.
    """
    for b in prange(boxes.shape[0]):
        _crop_one(b, buf, meta, boxes, size, binary, threshold, out_f, out_b)


@njit(cache=True)
def _crop_resize_ragged_serial(buf, meta, boxes, size, binary, threshold, out_f, out_b):
    """``_crop_resize_ragged`` on one thread (small batches: no thread start-up or barrier)."""
    for b in range(boxes.shape[0]):
        _crop_one(b, buf, meta, boxes, size, binary, threshold, out_f, out_b)


#: Below this many output samples a batch runs on one thread.
_PARALLEL_MIN_WORK = 1 << 16

def _check_sampling_ratio(sampling_ratio) -> int:
    if isinstance(sampling_ratio, bool) or sampling_ratio not in (0, 1):
        raise ValueError(
            f"sampling_ratio must be 0 (adaptive, as roi_align(sampling_ratio=0) and the official SOLQ targets) "
            f"or 1 (one bilinear sample per cell), got {sampling_ratio!r}"
        )
    return int(sampling_ratio)


def _sample_regions(buf: np.ndarray, meta: np.ndarray, boxes: np.ndarray, size: int,
                    threshold: float | None, sampling_ratio: int = 0) -> np.ndarray:
    """Run the ragged kernel (see ``_crop_resize_ragged`` for ``meta``) with 0 (adaptive) or 1 sample per cell."""
    n = boxes.shape[0]
    if threshold is None:
        out_f = np.zeros((n, size, size), dtype=np.float32)
        out_b = np.zeros((0, 0, 0), dtype=np.bool_)
    else:
        out_f = np.zeros((0, 0, 0), dtype=np.float32)
        out_b = np.zeros((n, size, size), dtype=np.bool_)
    if n:
        t = 0.0 if threshold is None else float(threshold)
        boxes = np.ascontiguousarray(boxes, dtype=np.float64)
        parallel = n > 1 and n * size * size >= _PARALLEL_MIN_WORK and parallel_allowed()
        if sampling_ratio == 1:
            kernel = _crop_resize_ragged if parallel else _crop_resize_ragged_serial
            kernel(buf, meta, boxes, size, threshold is not None, t, out_f, out_b)
        else:
            kernel = adaptive_ragged if parallel else adaptive_ragged_serial
            kernel(buf, word_view(buf), meta, boxes, size, 0, threshold is not None, t, out_f, out_b)
    return out_b if threshold is not None else out_f


def _kernel_view(masks: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A flat buffer over ``masks`` (B, H, W) and its element strides (b, y, x), copying only if needed.

    The kernel is compiled for uint8 (bool is viewed as uint8), float32 and float64; other
    dtypes are converted. C- and Fortran-ordered masks (pycocotools decodes Fortran order) and
    any other axis permutation of a contiguous block are read in place.
    """
    if masks.dtype == np.bool_:
        masks = masks.view(np.uint8)
    elif masks.dtype not in (np.uint8, np.float32, np.float64):
        masks = masks.astype(np.float32)
    item = masks.itemsize
    if all(s >= 0 and s % item == 0 for s in masks.strides):
        order = sorted(range(3), key=lambda a: -masks.strides[a])
        block = masks.transpose(order)
        if block.flags.c_contiguous:
            return block.reshape(-1), tuple(s // item for s in masks.strides)
    masks = np.ascontiguousarray(masks)
    return masks.reshape(-1), tuple(s // item for s in masks.strides)


def crop_resize(masks: Array, boxes: Array, size: int, *, threshold: float | None = 0.5,
                sampling_ratio: int = 0) -> Array:
    """Crop full-image masks to their boxes and resample them to ``size x size``.

    Parameters
    ----------
    masks : (B, H, W) bool, integer {0, 1} or float in [0, 1]
        Full-image masks (numpy; torch tensors are accepted and the result is returned on
        their device).
    boxes : (B, 4) float
        ``xyxy`` boxes in pixels, one per mask. Boxes may extend outside the image.
    size : int
        Side of the output grid.
    threshold : float or None
        Binarise at ``value >= threshold`` (default 0.5) or return the soft values.
    sampling_ratio : 0 or 1
        0 (default): adaptive, as ``torchvision.ops.roi_align(masks[:, None].float(), boxes.float(),
        size, spatial_scale=1, sampling_ratio=0, aligned=True)``: cell ``(i, j)`` averages
        ``ceil(box_h / size) x ceil(box_w / size)`` bilinear samples spread evenly over the cell.
        This is what the official SOLQ uses for its ground-truth targets (detectron2's
        ``BitMasks.crop_and_resize``). Computed in float32 like roi_align on float32 masks and
        boxes: thresholded output equals ``roi_align(...) >= threshold`` in every pixel, soft output
        equals roi_align's float32 values (``maskcodec.roi_adaptive`` says how).
        1: one bilinear sample at the centre of each cell (``sampling_ratio=1``), computed in
        float64; it agrees with roi_align up to float rounding.

    Returns
    -------
    (B, size, size) bool (threshold given) or float32.

    Samples more than one pixel outside the image are 0, those within one pixel take the edge
    value. Boxes of zero or negative width or height give an all-zero output (with
    ``sampling_ratio=1`` roi_align would instead repeat one column or row; with 0 it also gives 0).
    """
    size = _check_size(size)
    threshold = _check_threshold(threshold)
    sampling_ratio = _check_sampling_ratio(sampling_ratio)
    kind = backend.backend_of(backend.as_array(masks))
    like = masks
    masks = backend.to_numpy(backend.as_array(masks))
    boxes = backend.to_numpy(backend.as_array(boxes))
    if masks.ndim != 3:
        hint = "; for a single mask use masks[None]" if masks.ndim == 2 else ""
        raise ValueError(f"masks must have shape (B, H, W), got {tuple(masks.shape)}{hint}")
    if not (masks.dtype == np.bool_ or np.issubdtype(masks.dtype, np.integer)
            or np.issubdtype(masks.dtype, np.floating)):
        raise ValueError(f"masks must be bool, integer or float, got dtype {masks.dtype}")
    _check_boxes(boxes, masks.shape[0])
    b, h, w = masks.shape
    if b == 0 or h == 0 or w == 0:
        out = np.zeros((b, size, size), dtype=np.bool_ if threshold is not None else np.float32)
    else:
        buf, (sb, sy, sx) = _kernel_view(masks)
        meta = np.empty((b, 9), dtype=np.int64)
        meta[:, 0] = np.arange(b, dtype=np.int64) * sb
        meta[:, 1:] = (sy, sx, 0, 0, h, w, h, w)
        out = _sample_regions(buf, meta, boxes.astype(np.float64), size, threshold, sampling_ratio)
    if kind == "numpy":
        return out
    return backend.constant_like(out, like)


# ----------------------------------------------------------------------------- paste
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
        parallel = n > 1 and masks[0].size * n >= _PARALLEL_MIN_WORK // 4 and parallel_allowed()
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
    if masks.ndim != 3:
        hint = "; for a single mask use masks[None]" if masks.ndim == 2 else ""
        raise ValueError(f"masks must have shape (B, N, N), got {tuple(masks.shape)}{hint}")
    if not backend.is_numeric(masks):
        raise ValueError(f"masks must be bool, integer or float, got dtype {masks.dtype}")
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


def _check_image_size(image_size) -> tuple[int, int]:
    try:
        height, width = image_size
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (H, W), got {image_size!r}") from None
    try:
        if isinstance(height, bool) or isinstance(width, bool):
            raise TypeError
        height, width = operator.index(height), operator.index(width)  # ints, numpy/torch integer scalars
    except TypeError:
        raise ValueError(f"image_size must be two integers (H, W), got {image_size!r}") from None
    if height < 0 or width < 0:
        raise ValueError(f"image_size must be two non-negative integers (H, W), got {image_size!r}")
    return height, width
