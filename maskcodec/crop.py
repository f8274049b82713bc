"""Full-image masks -> box-relative ``size x size`` masks: ``crop_resize`` (ROIAlign semantics, aligned=True).

``crop_resize`` cuts full-image masks ``(B, H, W)`` to their boxes and resamples them to
``size x size`` (the ground-truth side of a mask codec). Boxes are float ``xyxy`` in pixel
coordinates: pixel ``i`` covers ``[i, i + 1)`` and its centre is ``i + 0.5``. By default each cell
averages several bilinear samples (``sampling_ratio=0``: adaptive ROIAlign,
``maskcodec.roi_adaptive``), as the official SOLQ targets; ``sampling_ratio=1`` takes one
bilinear sample per cell (``_crop_resize_ragged`` here). ``_sample_regions`` runs either kernel on
a ragged batch of mask regions (also used by ``maskcodec.coco.stream``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import backend
from .backend import Array
from .bilinear import _source_rows
from .box_checks import _check_boxes, _check_size, _check_threshold
from .parallel import PARALLEL_MIN_WORK, parallel_allowed
from .roi_adaptive import adaptive_ragged, adaptive_ragged_serial, word_view

__all__ = ["crop_resize"]


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
    # separable: interpolate the (at most two) source rows along x once, then blend them
    row0 = np.empty(size, dtype=np.float64)
    row1 = np.empty(size, dtype=np.float64)
    key0 = -1
    key1 = -1
    for i in range(size):
        ya = wyl[i]
        yb = wyh[i]
        if ya == 0.0 and yb == 0.0:
            continue  # sample outside the image: stays 0
        row0, row1, key0, key1 = _source_rows(buf, off + yl[i], off + yh[i], xl, xh, wxl, wxh,
                                              row0, row1, key0, key1)
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
        parallel = n > 1 and n * size * size >= PARALLEL_MIN_WORK and parallel_allowed()
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
