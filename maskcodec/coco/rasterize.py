"""Box-region rasterisation (numba): pycocotools' polygon arithmetic and RLE decoding, region only.

Each annotation owns a column-major canvas covering rows [r0, r1) x columns [c0, c1) of its
image; only that region is ever written.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(inline="always")
def _fill_interval(start, end, height, r0, r1, c0, c1, buf, off):
    """Set the pixels of the column-major image interval [start, end) that fall in the region to 1.

    The region (rows [r0, r1), columns [c0, c1)) is stored column-major at ``buf[off:]``.
    """
    lo = c0 * height
    hi = c1 * height
    s = max(start, lo)
    e = min(end, hi)
    if s >= e:
        return
    rh = r1 - r0
    col = s // height
    while col * height < e:
        a = max(max(s, col * height) - col * height, r0)
        b = min(min(e, (col + 1) * height) - col * height, r1)
        base = off + (col - c0) * rh - r0
        for r in range(a, b):
            buf[base + r] = 1
        col += 1


@njit(cache=True)
def fill_rle(counts, height, r0, r1, c0, c1, buf, off):
    """Write the region of a column-major RLE (run lengths, zeros first) into ``buf[off:]``."""
    pos = 0
    for i in range(len(counts)):
        n = counts[i]
        start = pos
        pos += n
        if i % 2 == 1 and n > 0:
            if start >= c1 * height:
                break
            _fill_interval(start, pos, height, r0, r1, c0, c1, buf, off)


@njit(inline="always")
def _upsampled_vertices(xy, k, scale):
    """The polygon's ``k`` vertices on the upsampled grid, closed (``k + 1`` int64 x and y), and the
    number of points maskApi.c's trace of its outline has."""
    x = np.empty(k + 1, dtype=np.int64)
    y = np.empty(k + 1, dtype=np.int64)
    for j in range(k):
        x[j] = int(scale * xy[2 * j] + 0.5)
        y[j] = int(scale * xy[2 * j + 1] + 0.5)
    x[k] = x[0]
    y[k] = y[0]
    m = 0
    for j in range(k):
        m += max(abs(x[j] - x[j + 1]), abs(y[j] - y[j + 1])) + 1
    return x, y, m


@njit(inline="always")
def _column_switch(cu, pu, cv, pv, h, w, scale):
    """Where the outline stepping from upsampled point (pu, pv) to (cu, cv) (a new column) switches
    the mask: its column-major pixel position, or -1 when the step crosses no pixel-column centre line
    inside the image."""
    xd = float(cu if cu < pu else cu - 1)
    xd = (xd + 0.5) / scale - 0.5
    if not (math.floor(xd) == xd and xd >= 0 and xd <= w - 1):
        return -1
    yd = float(cv if cv < pv else pv)
    yd = (yd + 0.5) / scale - 0.5
    if yd < 0:
        yd = 0.0
    elif yd > h:
        yd = float(h)
    yd = math.ceil(yd)
    return int(xd) * h + int(yd)


@njit(cache=True)
def _polygon_toggles(xy, k, h, w):
    """Sorted column-major positions where the mask of a polygon switches, plus the sentinel h*w.

    The same integer arithmetic as pycocotools' ``rleFrPoly`` (maskApi.c): the outline is traced
    on a 5x upsampled grid, and each crossing of a pixel-column centre line becomes one switch
    point; the pixels in [p0, p1), [p2, p3), ... are inside. Working in full-image coordinates
    keeps the result bit-identical to ``annToMask``.
    """
    scale = 5.0
    x, y, m = _upsampled_vertices(xy, k, scale)
    pos = np.empty(m + 1, dtype=np.int64)
    n = 0
    # walk the traced outline point by point (the order of maskApi.c's u/v arrays) and keep the
    # points where it enters a new upsampled column, without storing the trace
    pu = 0
    pv = 0
    first = True
    for j in range(k):
        xs = x[j]
        xe = x[j + 1]
        ys = y[j]
        ye = y[j + 1]
        dx = abs(xe - xs)
        dy = abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe = xe, xs
            ys, ye = ye, ys
        steps = dx if dx >= dy else dy
        if dx >= dy:
            s = (ye - ys) / dx if dx > 0 else 0.0  # C gets 0/0 = NaN here; that point is never used
        else:
            s = (xe - xs) / dy
        for d in range(steps + 1):
            t = steps - d if flip else d
            if dx >= dy:
                cu = t + xs
                cv = int(ys + s * t + 0.5)
            else:
                cv = t + ys
                cu = int(xs + s * t + 0.5)
            if first:
                first = False
            elif cu != pu:
                p = _column_switch(cu, pu, cv, pv, h, w, scale)
                if p >= 0:
                    pos[n] = p
                    n += 1
            pu = cu
            pv = cv
    pos[n] = h * w
    return np.sort(pos[: n + 1])


@njit(inline="always")
def _rasterize_one(a, coords, poly_start, ann_polys, meta, regions, buf, invalid):
    off = meta[a, 0]
    h = meta[a, 1]
    w = meta[a, 2]
    limit = 4.0 * max(h, w) + 1e4  # keeps the 5x upsampled outline trace bounded
    bad = False
    for i in range(poly_start[ann_polys[a]], poly_start[ann_polys[a + 1]]):
        if not abs(coords[i]) <= limit:
            bad = True
    if bad:
        invalid[a] = True
        return
    r0 = regions[a, 0]
    r1 = regions[a, 1]
    c0 = regions[a, 2]
    c1 = regions[a, 3]
    for p in range(ann_polys[a], ann_polys[a + 1]):
        xy = coords[poly_start[p] : poly_start[p + 1]]
        pos = _polygon_toggles(xy, len(xy) // 2, h, w)
        for i in range(0, len(pos) - 1, 2):
            _fill_interval(pos[i], pos[i + 1], h, r0, r1, c0, c1, buf, off)


@njit(parallel=True, cache=True)
def rasterize_polygons(coords, poly_start, ann_polys, meta, regions, buf, invalid):
    """Rasterise the polygons of many annotations into their box-region canvases (union per annotation).

    Annotation ``a`` owns polygons ``ann_polys[a]:ann_polys[a + 1]``; polygon ``p`` is
    ``coords[poly_start[p]:poly_start[p + 1]]`` (x, y, x, y, ... in image pixels). ``meta[a] =
    (buffer offset, image_h, image_w)`` and ``regions[a] = (r0, r1, c0, c1)``. Annotations with
    a NaN, infinite or absurdly large coordinate are left empty and flagged in ``invalid``.
    """
    for a in prange(ann_polys.shape[0] - 1):
        _rasterize_one(a, coords, poly_start, ann_polys, meta, regions, buf, invalid)


@njit(cache=True)
def rasterize_polygons_serial(coords, poly_start, ann_polys, meta, regions, buf, invalid):
    """``rasterize_polygons`` on one thread (see ``maskcodec.parallel``)."""
    for a in range(ann_polys.shape[0] - 1):
        _rasterize_one(a, coords, poly_start, ann_polys, meta, regions, buf, invalid)



def as_coordinates(flat: list, spans: list[tuple[int, int]]) -> np.ndarray:
    """float64 array of all polygon coordinates; an annotation with non-numbers becomes NaN (skipped)."""
    try:
        return np.asarray(flat, dtype=np.float64).reshape(len(flat))
    except (TypeError, ValueError):
        out = np.full(len(flat), np.nan)
        for start, end in spans:
            try:
                out[start:end] = np.asarray(flat[start:end], dtype=np.float64).reshape(end - start)
            except (TypeError, ValueError):
                pass
        return out

