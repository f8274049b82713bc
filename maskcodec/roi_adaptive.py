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
does not visit the samples one by one: bilinear weights are separable, so each
line of pixels along the contiguous axis is read as runs of equal values (8 bytes at a time for
uint8 masks) and a run adds prefix-summed weights to the few cells its ends fall in and a whole
cell weight to the cells it covers; a second pass sums those lines with the other axis's weights.
Either way the cell is computed in float64 from the same float32 per-axis weights, which differs from
torchvision's float32 accumulation by at most about ``(count + 5) * 2**-24``; a cell within
``(count + 8) * 2**-22`` of the threshold is recomputed exactly in torchvision's order. Thresholded output is
therefore identical to ``roi_align(...) >= threshold``; soft output takes the exact order for
every cell (bitwise equal to roi_align's float32 values).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .crop import _source_rows

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
def _cell_windows(idx_lo, idx_hi, w_lo, w_hi, g, size):
    """Per cell: the window [lo, hi] of taps it reads and the cumulative weights over it.

    Returns (lo (size,), hi (size,), start (size + 1,), cum): cell ``i`` with ``hi[i] >= lo[i]``
    reads taps ``lo[i]..hi[i]``; ``cum[start[i] + k]`` is the summed weight of its taps before
    ``lo[i] + k`` (k = 0..hi - lo + 1), in float64. A cell without samples in the image has
    ``hi < lo``.
    """
    lo = np.full(size, 1 << 62, dtype=np.int64)
    hi = np.full(size, -1, dtype=np.int64)
    for i in range(size):
        for t in range(g):
            s = i * g + t
            if w_lo[s] != 0.0 or w_hi[s] != 0.0:
                lo[i] = min(lo[i], idx_lo[s])
                hi[i] = max(hi[i], idx_hi[s])
    start = np.zeros(size + 1, dtype=np.int64)
    for i in range(size):
        start[i + 1] = start[i] + (hi[i] - lo[i] + 2 if hi[i] >= lo[i] else 0)
    cum = np.zeros(start[size], dtype=np.float64)
    for i in range(size):
        if hi[i] < lo[i]:
            continue
        base = start[i] + 1  # cum[start[i]] = 0; per-tap weights first, then the running sum
        for t in range(g):
            s = i * g + t
            if w_lo[s] != 0.0 or w_hi[s] != 0.0:
                cum[base + idx_lo[s] - lo[i]] += np.float64(w_lo[s])
                cum[base + idx_hi[s] - lo[i]] += np.float64(w_hi[s])
        for k in range(start[i] + 1, start[i + 1]):
            cum[k] += cum[k - 1]
    return lo, hi, start, cum


@njit(inline="always")
def _run_end(buf, words, pos, stop, v):
    """First position in [pos, stop) of a contiguous uint8 ``buf`` whose byte is not ``v`` (``stop`` if none).

    ``words`` is ``buf`` viewed as uint64 (8-byte aligned), so long runs are skipped 8 bytes at a time.
    """
    while pos < stop and (pos & 7) != 0:
        if buf[pos] != v:
            return pos
        pos += 1
    pattern = np.uint64(v) * np.uint64(0x0101010101010101)
    while pos + 8 <= stop and words[pos >> 3] == pattern:
        pos += 8
    while pos < stop:
        if buf[pos] != v:
            return pos
        pos += 1
    return stop


@njit(inline="always")
def _grown(a, need):
    """``a`` copied into a new array of at least ``need`` (and at least twice as many) elements."""
    out = np.empty(max(need, 2 * a.size), dtype=a.dtype)
    for k in range(a.size):  # a loop, not a slice assignment: parallel=True checks slice sizes at run time
        out[k] = a[k]
    return out


@njit(inline="always")
def _line_sums(buf, words, off, sa, p_min, p_max, b_lo, b_hi, b_wl, b_wh, gb, sb, q_min, q_max, size):
    """Weighted sums along axis b of every pixel line of axis a, kept sparse.

    Along axis b (the one with the smaller stride) every line of pixels is read as runs of equal
    values, not pixel by pixel. A run ``[s, e)`` of value ``v`` gives ``v * (cum_i(e) - cum_i(s))``
    to the few cells ``i`` whose window holds one of its ends (a "partial" entry), and ``v`` times
    the cell's total weight to the cells whose window lies inside it (one "full" interval).
    Line ``L``'s sum for cell ``c`` = its partial entries for ``c`` + ``total[c]`` times the sum of
    ``v`` over its full intervals holding ``c``.

    Returns (pe_start, pe_cell, pe_val, fi_start, fi_c0, fi_c1, fi_v, total): line ``L`` owns partial
    entries ``pe_start[L]:pe_start[L + 1]`` and full intervals ``[fi_c0, fi_c1)`` with value ``fi_v``
    at ``fi_start[L]:fi_start[L + 1]``.
    """
    lo, hi, start, cum = _cell_windows(b_lo, b_hi, b_wl, b_wh, gb, size)
    # first[r - q_min]: the first cell whose window ends at or after r (windows move monotonically)
    first = np.empty(q_max - q_min + 2, dtype=np.int64)
    i = 0
    for r in range(q_min, q_max + 2):
        while i < size and (hi[i] < lo[i] or hi[i] < r):
            i += 1
        first[r - q_min] = i
    total = np.zeros(size, dtype=np.float64)
    for c in range(size):
        if hi[c] >= lo[c]:
            total[c] = cum[start[c + 1] - 1]
    n_lines = p_max - p_min + 1
    pe_start = np.zeros(n_lines + 1, dtype=np.int64)
    fi_start = np.zeros(n_lines + 1, dtype=np.int64)
    # capacity: every nonzero run (at most half the positions, rounded up) has at most `deep`
    # partial entries at each end and one full interval
    deep = 0
    for r in range(q_min, q_max + 1):
        c = first[r - q_min]
        d = 0
        while c < size and lo[c] <= r:
            d += 1
            c += 1
        deep = max(deep, d)
    # the cells straddling each boundary position r (lo < r <= hi): first[r - q_min] + d for
    # d < n_str[r - q_min], with their summed weight before r in f_str[(r - q_min) * deep + d]
    n_pos = q_max - q_min + 2
    n_str = np.zeros(n_pos, dtype=np.int64)
    f_str = np.zeros(n_pos * deep, dtype=np.float64)
    for u in range(n_pos):
        r = q_min + u
        c = first[u]
        d = 0
        while c < size and lo[c] < r:
            f_str[u * deep + d] = cum[start[c] + r - lo[c]]
            d += 1
            c += 1
        n_str[u] = d
    # a line has at most `line_runs` nonzero runs; the arrays start at 4 a line and grow before a line could overflow them
    line_runs = (q_max - q_min + 2) // 2 + 1
    runs = 4 * n_lines + line_runs
    pe_cell = np.empty(2 * deep * runs + 1, dtype=np.int64)
    pe_val = np.empty(2 * deep * runs + 1, dtype=np.float64)
    fi_c0 = np.empty(runs + 1, dtype=np.int64)
    fi_c1 = np.empty(runs + 1, dtype=np.int64)
    fi_v = np.empty(runs + 1, dtype=np.float64)
    ne = 0
    nf = 0
    use_words = sb == 1 and words.size > 0
    for a in range(n_lines):
        if nf + line_runs + 1 > fi_c0.size:
            fi_c0 = _grown(fi_c0, nf + line_runs + 1)
            fi_c1 = _grown(fi_c1, nf + line_runs + 1)
            fi_v = _grown(fi_v, nf + line_runs + 1)
        if ne + 2 * deep * line_runs + 1 > pe_cell.size:
            pe_cell = _grown(pe_cell, ne + 2 * deep * line_runs + 1)
            pe_val = _grown(pe_val, ne + 2 * deep * line_runs + 1)
        base = off + (p_min + a) * sa
        r = q_min
        while r <= q_max:
            v = buf[base + r * sb]
            s = r
            if use_words:
                r = _run_end(buf, words, base + r + 1, base + q_max + 1, v) - base
            else:
                r += 1
                while r <= q_max and buf[base + r * sb] == v:
                    r += 1
            if v == 0:
                continue
            fv = np.float64(v)
            us = s - q_min
            ue = r - q_min
            fs = first[us]
            fe = first[ue]
            for d in range(n_str[us]):  # windows holding the run's start (and maybe its end)
                c = fs + d
                f_end = f_str[ue * deep + c - fe] if c >= fe else total[c]
                pe_cell[ne] = c
                pe_val[ne] = fv * (f_end - f_str[us * deep + d])
                ne += 1
            c = fs + n_str[us]
            if fe > c:  # windows inside the run: [c, fe)
                fi_c0[nf] = c
                fi_c1[nf] = fe
                fi_v[nf] = fv
                nf += 1
            for d in range(max(c, fe) - fe, n_str[ue]):  # windows holding only the run's end
                pe_cell[ne] = fe + d
                pe_val[ne] = fv * f_str[ue * deep + d]
                ne += 1
        pe_start[a + 1] = ne
        fi_start[a + 1] = nf
    return pe_start, pe_cell, pe_val, fi_start, fi_c0, fi_c1, fi_v, total


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

    Separable, with the one-sample kernel's bilinear step (``crop._source_rows``): the two source rows
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
        near = False  # branch-free first pass (vectorised), exact order only where needed
        for j in range(size):
            v = ya * row0[j] + yb * row1[j]
            out_b[b, i, j] = v > threshold
            near |= abs(v - threshold) <= band
        if near:
            for j in range(size):
                if abs(ya * row0[j] + yb * row1[j] - threshold) <= band:
                    out_b[b, i, j] = _exact_cell(buf, off, sy, sx, i, j, 1, 1, ylo, yhi, ywl, ywh,
                                                 xlo, xhi, xwl, xwh, one) >= t32


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
    count = gy * gx
    fcount = np.float32(count)
    if binary and count == 1:
        _single_sample(b, buf, off, sy, sx, ylo, yhi, ywl, ywh, xlo, xhi, xwl, xwh, size, threshold, out_b)
        return
    if not binary:
        for i in range(size):
            for j in range(size):
                out_f[b, i, j] = _exact_cell(buf, off, sy, sx, i, j, gy, gx, ylo, yhi, ywl, ywh,
                                             xlo, xhi, xwl, xwh, fcount)
        return
    # runs along the axis with the smaller stride (contiguous pixels), then taps along the other
    x_first = sx >= sy
    if x_first:
        sparse = _line_sums(buf, words, off, sx, x_min, x_max, ylo, yhi, ywl, ywh, gy, sy, y_min, y_max, size)
        alo, ahi, astart, acum = _cell_windows(xlo, xhi, xwl, xwh, gx, size)
        p_min = x_min
    else:
        sparse = _line_sums(buf, words, off, sy, y_min, y_max, xlo, xhi, xwl, xwh, gx, sx, x_min, x_max, size)
        alo, ahi, astart, acum = _cell_windows(ylo, yhi, ywl, ywh, gy, size)
        p_min = y_min
    acc = np.empty(size, dtype=np.float64)
    band = (count + 8) * _TOL_UNIT * count  # compare sums, not means: no division per cell
    level = threshold * count
    t32 = np.float32(threshold)
    for p in range(size):
        _cell_sums(p, p_min, alo, ahi, astart, acum, sparse, acc)
        near = False  # branch-free first pass (vectorised), exact order only where needed
        if x_first:
            for c in range(size):
                out_b[b, c, p] = acc[c] > level
                near |= abs(acc[c] - level) <= band
        else:
            for c in range(size):
                out_b[b, p, c] = acc[c] > level
                near |= abs(acc[c] - level) <= band
        if near:
            for c in range(size):
                if abs(acc[c] - level) <= band:
                    i, j = (c, p) if x_first else (p, c)
                    out_b[b, i, j] = _exact_cell(buf, off, sy, sx, i, j, gy, gx, ylo, yhi, ywl, ywh,
                                                 xlo, xhi, xwl, xwh, fcount) >= t32


@njit(inline="always")
def _cell_sums(p, p_min, alo, ahi, astart, acum, sparse, acc):
    """``acc[c]`` = the sum (not the mean) of the samples of cell ``c`` of output line ``p``, in float64.

    Output line ``p`` reads the pixel lines ``alo[p]..ahi[p]`` of ``_line_sums`` with their cumulative
    weights ``acum``; a full interval adds its value times each cell's total weight directly (a
    vectorised loop, no running sum whose add latency would serialise the cells).
    """
    pe_start, pe_cell, pe_val, fi_start, fi_c0, fi_c1, fi_v, total = sparse
    acc[:] = 0.0
    for k in range(alo[p], ahi[p] + 1):
        w = acum[astart[p] + k - alo[p] + 1] - acum[astart[p] + k - alo[p]]
        if w == 0.0:
            continue
        line = k - p_min
        for e in range(pe_start[line], pe_start[line + 1]):
            acc[pe_cell[e]] += w * pe_val[e]
        for f in range(fi_start[line], fi_start[line + 1]):
            wf = w * fi_v[f]
            for c in range(fi_c0[f], fi_c1[f]):
                acc[c] += wf * total[c]


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
    if buf.dtype == np.uint8 and buf.ctypes.data % 8 == 0 and buf.size >= 8:
        return buf[: buf.size // 8 * 8].view(np.uint64)
    return np.zeros(0, dtype=np.uint64)
