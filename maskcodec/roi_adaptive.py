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

The fast path does not visit the samples one by one: bilinear weights are separable, so one
pass sums the taps along the axis with the larger stride for every pixel of the other axis,
and a second pass sums along the other axis (cost about twice the box's pixel count, not
``count`` taps per cell). It computes the cell in float64 from the same float32 per-axis weights,
which differs from torchvision's float32 accumulation by at most ``(count + 5) * 2**-24``; a cell
that close to the threshold is recomputed exactly in torchvision's order. Thresholded output is
therefore identical to ``roi_align(...) >= threshold``; soft output takes the exact order for
every cell (bitwise equal to roi_align's float32 values).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

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
def _separable(buf, off, a_lo, a_hi, a_wl, a_wh, ga, sa, b_lo, b_hi, b_wl, b_wh, gb, sb, q_min, q_max, size):
    """Cell sums ``(size_a, size_b)`` float64: taps along axis a first (stride ``sa``), then axis b."""
    nq = q_max - q_min + 1
    tmp = np.zeros((size, nq), dtype=np.float64)
    for p in range(size):
        for t in range(ga):
            s = p * ga + t
            for w, idx in ((a_wl[s], a_lo[s]), (a_wh[s], a_hi[s])):
                if w != 0.0:
                    wf = np.float64(w)
                    base = off + idx * sa + q_min * sb
                    for q in range(nq):
                        tmp[p, q] += wf * buf[base + q * sb]
    out = np.zeros((size, size), dtype=np.float64)
    for p in range(size):
        for j in range(size):
            acc = 0.0
            for t in range(gb):
                s = j * gb + t
                if b_wl[s] != 0.0:
                    acc += np.float64(b_wl[s]) * tmp[p, b_lo[s] - q_min]
                if b_wh[s] != 0.0:
                    acc += np.float64(b_wh[s]) * tmp[p, b_hi[s] - q_min]
            out[p, j] = acc
    return out


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
def _adaptive_one(b, buf, meta, boxes, size, ratio, binary, threshold, out_f, out_b):
    """Resample item ``b`` of a ragged batch (``meta`` as in ``geometry._crop_resize_ragged``)."""
    off = meta[b, 0]
    sy = meta[b, 1]
    sx = meta[b, 2]
    gy, ylo, yhi, ywl, ywh, y_min, y_max = _sample_axis(
        boxes[b, 1], boxes[b, 3], size, ratio, meta[b, 7], meta[b, 3], meta[b, 5])
    gx, xlo, xhi, xwl, xwh, x_min, x_max = _sample_axis(
        boxes[b, 0], boxes[b, 2], size, ratio, meta[b, 8], meta[b, 4], meta[b, 6])
    if gy <= 0 or gx <= 0 or y_max < 0 or x_max < 0:
        return  # no sample, or every sample outside the image: all zero
    count = gy * gx
    fcount = np.float32(count)
    if not binary:
        for i in range(size):
            for j in range(size):
                out_f[b, i, j] = _exact_cell(buf, off, sy, sx, i, j, gy, gx, ylo, yhi, ywl, ywh,
                                             xlo, xhi, xwl, xwh, fcount)
        return
    # reduce the axis with the larger stride first, so the inner loop runs along the smaller one
    x_first = sx >= sy
    if x_first:
        sums = _separable(buf, off, xlo, xhi, xwl, xwh, gx, sx, ylo, yhi, ywl, ywh, gy, sy, y_min, y_max, size)
    else:
        sums = _separable(buf, off, ylo, yhi, ywl, ywh, gy, sy, xlo, xhi, xwl, xwh, gx, sx, x_min, x_max, size)
    tol = (count + 8) * _TOL_UNIT
    level = threshold * count  # compare sums, not means: no division per cell
    band = tol * count
    t32 = np.float32(threshold)
    for i in range(size):
        for j in range(size):
            v = sums[j, i] if x_first else sums[i, j]
            if abs(v - level) <= band:
                out_b[b, i, j] = _exact_cell(buf, off, sy, sx, i, j, gy, gx, ylo, yhi, ywl, ywh,
                                             xlo, xhi, xwl, xwh, fcount) >= t32
            else:
                out_b[b, i, j] = v > level


@njit(parallel=True, cache=True)
def adaptive_ragged(buf, meta, boxes, size, ratio, binary, threshold, out_f, out_b):
    """Adaptive ROIAlign of every item of a ragged batch (``meta`` as in ``geometry._crop_resize_ragged``)."""
    for b in prange(boxes.shape[0]):
        _adaptive_one(b, buf, meta, boxes, size, ratio, binary, threshold, out_f, out_b)


@njit(cache=True)
def adaptive_ragged_serial(buf, meta, boxes, size, ratio, binary, threshold, out_f, out_b):
    """``adaptive_ragged`` on one thread."""
    for b in range(boxes.shape[0]):
        _adaptive_one(b, buf, meta, boxes, size, ratio, binary, threshold, out_f, out_b)
