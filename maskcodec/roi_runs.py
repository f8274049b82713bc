"""Run-length area sums: adaptive ROIAlign cells of boxes with several samples per cell (``count > 1``).

Used by ``maskcodec.roi_adaptive`` (which holds the sampling semantics). Bilinear weights are
separable, so a cell's sum of samples is ``sum over pixel lines k of w_a(k) * line_k(cell)``, where
``line_k`` sums the taps of the other axis over pixel line ``k``. Pixel lines run along the contiguous
axis and are read as runs of equal values, not pixel by pixel (8 bytes at a time for uint8 masks): a
run adds prefix-summed weights to the few cells whose window holds one of its ends and a cell's whole
weight to the cells inside it. Each pixel line is summed once into a dense (size,) float64 vector;
the output lines that read it take it from a small ring of recent lines.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .bit_words import first_nonzero_byte


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
def _boundary_tables(lo, hi, start, cum, size, q_min, q_max):
    """Where a run boundary at tap position ``r`` (q_min <= r <= q_max + 1) falls among the cell windows.

    Returns (first, n_str, f_str, deep, total): ``first[r - q_min]`` is the first cell whose window
    ends at or after ``r``; the ``n_str[r - q_min]`` cells from there straddle ``r`` (lo < r <= hi), the
    ``d``-th with summed weight ``f_str[(r - q_min) * deep + d]`` before ``r``; ``total[c]`` is cell
    ``c``'s whole weight.
    """
    n_pos = q_max - q_min + 2
    first = np.empty(n_pos, dtype=np.int64)
    i = 0
    for u in range(n_pos):
        while i < size and (hi[i] < lo[i] or hi[i] < q_min + u):
            i += 1
        first[u] = i
    total = np.zeros(size, dtype=np.float64)
    for c in range(size):
        if hi[c] >= lo[c]:
            total[c] = cum[start[c + 1] - 1]
    deep = 1
    for u in range(n_pos):
        c = first[u]
        while c < size and lo[c] < q_min + u:
            c += 1
        deep = max(deep, c - first[u])
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
    return first, n_str, f_str, deep, total


@njit(inline="always")
def _run_end(buf, words, pos, stop, v):
    """First position in [pos, stop) of a contiguous uint8 ``buf`` whose byte is not ``v`` (``stop`` if none).

    ``words`` is ``buf`` viewed as little-endian uint64 (``word_view``): 8 bytes are compared at a time
    and the first differing byte of a word is found from its lowest set bit, without a byte loop.
    """
    pattern = np.uint64(v) * np.uint64(0x0101010101010101)
    w = pos >> 3
    if pos < stop and w < words.size:
        x = (words[w] ^ pattern) >> np.uint64(8 * (pos & 7))  # bytes before pos dropped
        if x != 0:
            return min(pos + first_nonzero_byte(x), stop)
        w += 1
        while w * 8 < stop and w < words.size:
            x = words[w] ^ pattern
            if x != 0:
                return min(w * 8 + first_nonzero_byte(x), stop)
            w += 1
        pos = max(pos, w * 8)
    while pos < stop:  # the bytes after the last whole word of buf
        if buf[pos] != v:
            return pos
        pos += 1
    return stop


@njit(inline="always")
def _line_sums(buf, words, base, sb, q_min, q_max, tables, line):
    """``line[c]``: the weighted sum of cell ``c``'s taps over one line of pixels (float64, (size,)).

    The line (``buf[base + r * sb]``, r = q_min..q_max) is read as runs of equal values, not pixel by
    pixel: a run ``[s, e)`` of value ``v`` adds ``v`` times its share of the weight to the few cells
    whose window holds one of its ends and ``v`` times the whole weight to the cells inside it.
    """
    first, n_str, f_str, deep, total = tables
    line[:] = 0.0
    use_words = sb == 1 and words.size > 0
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
            line[c] += fv * (f_end - f_str[us * deep + d])
        c = fs + n_str[us]
        for k in range(c, fe):  # windows inside the run
            line[k] += fv * total[k]
        for d in range(max(c, fe) - fe, n_str[ue]):  # windows holding only the run's end
            line[fe + d] += fv * f_str[ue * deep + d]


@njit(inline="always")
def _new_ring(alo, ahi, size):
    """Room for the pixel lines one output line reads: (lines (cap, size) float64, line index per slot)."""
    cap = 1
    for p in range(size):
        cap = max(cap, ahi[p] - alo[p] + 1)
    return np.empty((cap, size), dtype=np.float64), np.full(cap, -1, dtype=np.int64)


@njit(inline="always")
def _cell_sums(p, buf, words, off, sa, sb, q_min, q_max, tables, alo, ahi, astart, acum, ring, ring_at, acc):
    """``acc[c]`` = the sum (not the mean) of the samples of cell ``c`` of output line ``p``, in float64.

    Output line ``p`` reads the pixel lines ``alo[p]..ahi[p]`` (``_line_sums``, each computed once:
    consecutive output lines share them through ``ring``) with their weights from ``acum``.
    """
    acc[:] = 0.0
    cap = ring_at.size
    for k in range(alo[p], ahi[p] + 1):
        w = acum[astart[p] + k - alo[p] + 1] - acum[astart[p] + k - alo[p]]
        if w == 0.0:
            continue
        slot = k % cap
        line = ring[slot]
        if ring_at[slot] != k:
            _line_sums(buf, words, off + k * sa, sb, q_min, q_max, tables, line)
            ring_at[slot] = k
        for c in range(acc.size):
            acc[c] += w * line[c]
