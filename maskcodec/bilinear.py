"""The separable bilinear step of ROIAlign sampling, shared by the one-sample kernel (``crop``) and the
adaptive kernel's boxes with one sample per cell (``roi_adaptive``).

numba's on-disk cache of a kernel is keyed on the kernel's own source file: after editing this module,
delete ``maskcodec/__pycache__/{crop,roi_adaptive}.*.nb[ic]`` so the kernels are compiled again.
"""

from __future__ import annotations

from numba import njit


@njit(inline="always")
def _source_rows(buf, ra, rb, x_lo, x_hi, wx_lo, wx_hi, row0, row1, key0, key1):
    """The two source rows of an output row, interpolated along x: the separable bilinear step.

    ``ra`` / ``rb``: buffer offsets of the rows holding the low / high y taps; ``x_lo`` / ``x_hi``
    (size,) int64 buffer offsets of the x taps (times the x stride) and ``wx_lo`` / ``wx_hi``
    (size,) float64 their weights. ``row0`` / ``row1`` (size,) float64 hold the rows interpolated
    from offsets ``key0`` / ``key1`` (-1: none yet); consecutive output rows mostly read the same
    source rows, which are then reused (or swapped) instead of recomputed.
    Returns (row0, row1, key0, key1) with row0 = row ``ra`` and row1 = row ``rb`` interpolated.
    """
    if ra != key0:
        if ra == key1:
            row0, row1 = row1, row0
            key0, key1 = key1, key0
        else:
            for j in range(row0.size):
                row0[j] = wx_lo[j] * buf[ra + x_lo[j]] + wx_hi[j] * buf[ra + x_hi[j]]
            key0 = ra
    if rb != key1:
        if rb == key0:
            row1[:] = row0
        else:
            for j in range(row1.size):
                row1[j] = wx_lo[j] * buf[rb + x_lo[j]] + wx_hi[j] * buf[rb + x_hi[j]]
        key1 = rb
    return row0, row1, key0, key1
