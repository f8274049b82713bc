"""Adaptive ROIAlign sampling: ``torchvision.ops.roi_align(..., sampling_ratio=0, aligned=True)``.

Output cell ``(i, j)`` of a ``size x size`` grid over a box averages ``gy x gx`` bilinear samples,
``gy = ceil(box_h / size)`` and ``gx = ceil(box_w / size)`` (detectron2's
``BitMasks.crop_and_resize``, which the official SOLQ uses for its ground-truth masks). The
kernel reproduces torchvision's CPU kernel (``roi_align_kernel.cpp``) on float32 masks and
float32 boxes:

* sample positions, tap indices and per-axis weights are computed in float32 in the same order
  (``start + i * bin + (t + 0.5) * bin / g``; ``hy = 1 - ly`` in double, then rounded);
* a cell is ``sum over (ty, tx) of (((w1 v1 + w2 v2) + w3 v3) + w4 v4)`` accumulated in float32,
  row of samples by row, then divided by ``count = gy * gx``.

Boxes no larger than ``size`` on both axes (``count == 1``, most COCO objects at N = 128) take
the one-sample kernel's separable shape (``_single_sample``). For larger boxes the fast path
does not visit the samples one by one: bilinear weights are separable, so each line of pixels
along the contiguous axis is summed from its runs of equal values (``maskcodec.roi_runs``) and
those line sums are combined with the other axis's weights (``_several_samples``). Either way
the cell is computed in float64 from the same float32 per-axis weights, which differs from
torchvision's float32 accumulation by at most about ``(count + 5) * 2**-24``; a cell within
``(count + 8) * 2**-22`` of the threshold is recomputed exactly in torchvision's order. Thresholded
output is therefore identical to ``roi_align(...) >= threshold``; soft output takes the exact order for
every cell (bitwise equal to roi_align's float32 values).
"""

from __future__ import annotations

import math
import sys

import numpy as np
from numba import njit, prange

from .bilinear import _source_rows
from .roi_runs import _boundary_tables, _cell_sums, _cell_windows, _new_ring

_F32_HALF = np.float32(0.5)
#: Margin of the fast path: a cell within ``(count + 8) * _TOL_UNIT`` of the threshold is recomputed.
_TOL_UNIT = 2.0 ** -22


@njit(cache=True)
def _sample_axis(lo, hi, size, ratio, n_pix, origin, n_region):
    """Per-axis samples of one box, in torchvision's float32 arithmetic.

    Returns (g, idx_lo, idx_hi, w_lo, w_hi, q_min, q_max): ``g`` samples per cell (<= 0 for an
    empty box), region-relative tap indices and float32 weights of the ``size * g`` samples
    (sample ``k * g + t`` belongs to cell ``k``; samples outside the image have weight 0), and
    the range of tap indices that carry weight.
    """
    start = np.float32(np.float32(lo) - _F32_HALF)
    end = np.float32(np.float32(hi) - _F32_HALF)
    extent = np.float32(end - start)
    fsize = np.float32(size)
    bin_ = np.float32(extent / fsize)
    g = ratio if ratio > 0 else int(math.ceil(np.float32(extent / fsize)))
    m = size * g if g > 0 else 0
    idx_lo = np.zeros(m, dtype=np.int64)
    idx_hi = np.zeros(m, dtype=np.int64)
    w_lo = np.zeros(m, dtype=np.float32)
    w_hi = np.zeros(m, dtype=np.float32)
    q_min = n_region
    q_max = -1
    if g <= 0:
        return g, idx_lo, idx_hi, w_lo, w_hi, q_min, q_max
    fg = np.float32(g)
    top = np.float32(n_pix)
    for k in range(size):
        base = np.float32(start + np.float32(np.float32(k) * bin_))
        for t in range(g):
            step = np.float32(np.float32(np.float32(t + 0.5) * bin_) / fg)
            c = np.float32(base + step)
            s = k * g + t
            if not (c >= -1.0 and c <= top):
                continue  # outside the image: weight 0
            if c <= 0.0:
                c = np.float32(0.0)
            low = int(c)
            if low >= n_pix - 1:
                low = n_pix - 1
                high = n_pix - 1
                c = np.float32(low)
            else:
                high = low + 1
            frac = np.float32(c - np.float32(low))
            rest = np.float32(1.0 - np.float64(frac))
            rl = low - origin
            rh = high - origin
            if rl < 0 or rl >= n_region or rh < 0 or rh >= n_region:
                continue  # a tap outside the decoded region (the callers' regions cover all taps)
            idx_lo[s] = rl
            idx_hi[s] = rh
            w_lo[s] = rest
            w_hi[s] = frac
            q_min = min(q_min, rl)
            q_max = max(q_max, rh)
    return g, idx_lo, idx_hi, w_lo, w_hi, q_min, q_max


@njit(inline="always")
def _exact_cell(buf, off, sy, sx, i, j, gy, gx, ylo, yhi, ywl, ywh, xlo, xhi, xwl, xwh, fcount):
    """Cell ``(i, j)`` in torchvision's float32 order (see the module docstring)."""
    acc = np.float32(0.0)
    for ty in range(gy):
        ky = i * gy + ty
        hy = ywl[ky]
        ly = ywh[ky]
        r_lo = off + ylo[ky] * sy
        r_hi = off + yhi[ky] * sy
        for tx in range(gx):
            kx = j * gx + tx
            hx = xwl[kx]
            lx = xwh[kx]
            v1 = np.float32(buf[r_lo + xlo[kx] * sx])
            v2 = np.float32(buf[r_lo + xhi[kx] * sx])
            v3 = np.float32(buf[r_hi + xlo[kx] * sx])
            v4 = np.float32(buf[r_hi + xhi[kx] * sx])
            t12 = np.float32(np.float32(np.float32(hy * hx) * v1) + np.float32(np.float32(hy * lx) * v2))
            t123 = np.float32(t12 + np.float32(np.float32(ly * hx) * v3))
            acc = np.float32(acc + np.float32(t123 + np.float32(np.float32(ly * lx) * v4)))
    return np.float32(acc / fcount)


@njit(inline="always")
def _single_sample(b, buf, off, sy, sx, ylo, yhi, ywl, ywh, xlo, xhi, xwl, xwh, size, threshold, out_b):
    """Thresholded cells of a box with one sample per cell (``count == 1``: no side longer than ``size``).

    Separable, with the one-sample kernel's bilinear step (``bilinear._source_rows``): the two source rows
    of output row ``i`` are interpolated along x and blended along y, in float64 from
    the float32 per-axis weights. torchvision's float32 value differs by at most ``7 * 2**-24``; a cell
    within ``9 * _TOL_UNIT`` of the threshold is recomputed in its exact order.
    """
    band = 9 * _TOL_UNIT
    t32 = np.float32(threshold)
    one = np.float32(1.0)
    x_lo = xlo * sx
    x_hi = xhi * sx
    wx_lo = xwl.astype(np.float64)
    wx_hi = xwh.astype(np.float64)
    row0 = np.empty(size, dtype=np.float64)
    row1 = np.empty(size, dtype=np.float64)
    key0 = -1
    key1 = -1
    for i in range(size):
        row0, row1, key0, key1 = _source_rows(buf, off + ylo[i] * sy, off + yhi[i] * sy, x_lo, x_hi, wx_lo, wx_hi,
                                              row0, row1, key0, key1)
        ya = np.float64(ywl[i])
        yb = np.float64(ywh[i])
        n_near = 0  # branch-free first pass (vectorised), exact order only where needed
        for j in range(size):
            v = ya * row0[j] + yb * row1[j]
            out_b[b, i, j] = v > threshold
            n_near += abs(v - threshold) <= band
        if n_near:
            for j in range(size):
                if abs(ya * row0[j] + yb * row1[j] - threshold) <= band:
                    out_b[b, i, j] = _exact_cell(buf, off, sy, sx, i, j, 1, 1, ylo, yhi, ywl, ywh,
                                                 xlo, xhi, xwl, xwh, one) >= t32


@njit(inline="always")
def _several_samples(b, buf, words, off, sy, sx, gy, ylo, yhi, ywl, ywh, y_min, y_max,
                     gx, xlo, xhi, xwl, xwh, x_min, x_max, size, threshold, out_b):
    """Thresholded cells of a box with ``count = gy * gx > 1`` samples per cell, from run-length area sums.

    Pixel lines run along the axis with the smaller stride (contiguous pixels) and are combined along
    the other (``roi_runs``); output lines follow the combined axis, so when that is x they fill a
    transposed tile first (contiguous stores), copied into ``out_b[b]`` at the end.
    """
    count = gy * gx
    x_first = sx >= sy
    if x_first:  # pixel lines along y, combined along x
        blo, bhi, bstart, bcum = _cell_windows(ylo, yhi, ywl, ywh, gy, size)
        tables = _boundary_tables(blo, bhi, bstart, bcum, size, y_min, y_max)
        alo, ahi, astart, acum = _cell_windows(xlo, xhi, xwl, xwh, gx, size)
        sa, sb, q_min, q_max = sx, sy, y_min, y_max
    else:
        blo, bhi, bstart, bcum = _cell_windows(xlo, xhi, xwl, xwh, gx, size)
        tables = _boundary_tables(blo, bhi, bstart, bcum, size, x_min, x_max)
        alo, ahi, astart, acum = _cell_windows(ylo, yhi, ywl, ywh, gy, size)
        sa, sb, q_min, q_max = sy, sx, x_min, x_max
    ring, ring_at = _new_ring(alo, ahi, size)
    acc = np.empty(size, dtype=np.float64)
    tile = np.empty((size if x_first else 0, size), dtype=np.bool_)
    band = (count + 8) * _TOL_UNIT * count  # compare sums, not means: no division per cell
    level = threshold * count
    t32 = np.float32(threshold)
    fcount = np.float32(count)
    for p in range(size):
        _cell_sums(p, buf, words, off, sa, sb, q_min, q_max, tables, alo, ahi, astart, acum, ring, ring_at, acc)
        dest = tile[p] if x_first else out_b[b, p]
        n_near = 0  # branch-free first pass (vectorised), exact order only where needed
        for c in range(size):
            dest[c] = acc[c] > level
            n_near += abs(acc[c] - level) <= band
        if n_near:
            for c in range(size):
                if abs(acc[c] - level) <= band:
                    i, j = (c, p) if x_first else (p, c)
                    dest[c] = _exact_cell(buf, off, sy, sx, i, j, gy, gx, ylo, yhi, ywl, ywh,
                                          xlo, xhi, xwl, xwh, fcount) >= t32
    if x_first:
        for i in range(size):
            for j in range(size):
                out_b[b, i, j] = tile[j, i]


@njit(inline="always")
def _adaptive_one(b, buf, words, meta, boxes, size, ratio, binary, threshold, out_f, out_b):
    """Resample item ``b`` of a ragged batch (``meta`` as in ``crop._crop_resize_ragged``)."""
    off = meta[b, 0]
    sy = meta[b, 1]
    sx = meta[b, 2]
    gy, ylo, yhi, ywl, ywh, y_min, y_max = _sample_axis(
        boxes[b, 1], boxes[b, 3], size, ratio, meta[b, 7], meta[b, 3], meta[b, 5])
    gx, xlo, xhi, xwl, xwh, x_min, x_max = _sample_axis(
        boxes[b, 0], boxes[b, 2], size, ratio, meta[b, 8], meta[b, 4], meta[b, 6])
    if gy <= 0 or gx <= 0 or y_max < 0 or x_max < 0:
        return  # no sample, or every sample outside the image: all zero
    if not binary:
        fcount = np.float32(gy * gx)
        for i in range(size):
            for j in range(size):
                out_f[b, i, j] = _exact_cell(buf, off, sy, sx, i, j, gy, gx, ylo, yhi, ywl, ywh,
                                             xlo, xhi, xwl, xwh, fcount)
    elif gy * gx == 1:
        _single_sample(b, buf, off, sy, sx, ylo, yhi, ywl, ywh, xlo, xhi, xwl, xwh, size, threshold, out_b)
    else:
        _several_samples(b, buf, words, off, sy, sx, gy, ylo, yhi, ywl, ywh, y_min, y_max,
                         gx, xlo, xhi, xwl, xwh, x_min, x_max, size, threshold, out_b)


@njit(parallel=True, cache=True)
def adaptive_ragged(buf, words, meta, boxes, size, ratio, binary, threshold, out_f, out_b):
    """Adaptive ROIAlign of every item of a ragged batch (``meta`` as in ``crop._crop_resize_ragged``).

    ``words``: ``buf`` viewed as uint64 when it is 8-byte aligned uint8, else an empty uint64 array.
    """
    for b in prange(boxes.shape[0]):
        _adaptive_one(b, buf, words, meta, boxes, size, ratio, binary, threshold, out_f, out_b)


@njit(cache=True)
def adaptive_ragged_serial(buf, words, meta, boxes, size, ratio, binary, threshold, out_f, out_b):
    """``adaptive_ragged`` on one thread."""
    for b in range(boxes.shape[0]):
        _adaptive_one(b, buf, words, meta, boxes, size, ratio, binary, threshold, out_f, out_b)


def word_view(buf: np.ndarray) -> np.ndarray:
    """``buf`` (uint8) as uint64 words for the run scan, or an empty array when that is not possible."""
    if buf.dtype == np.uint8 and buf.ctypes.data % 8 == 0 and buf.size >= 8 and sys.byteorder == "little":
        return buf[: buf.size // 8 * 8].view(np.uint64)
    return np.zeros(0, dtype=np.uint64)
