"""The DCT-II basis and the JPEG zigzag order shared by the DCT codec and its binary fast path.

    A[h, l] = sqrt((1 + sign h) / N) * cos((l + 0.5) * pi * h / N)

is the orthonormal basis of ``scipy.fft.dct(norm="ortho")``; the zigzag order reads a spectrum
(0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), ...
"""

from __future__ import annotations

import functools

import numpy as np

#: numba fastmath flags of the DCT kernels: everything but "nnan"/"ninf", so that a NaN or an
#: infinity among the values they read still compares as it should (they validate their input).
KERNEL_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}  # numba takes a set (not a frozenset)


def read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """``arrays``, each made read-only (the cached constant tables of the kernels)."""
    for a in arrays:
        a.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=32)
def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II basis ``A`` of shape ``(n, n)``, float64; rows are frequencies."""
    h = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    scale = np.where(h == 0, np.sqrt(1.0 / n), np.sqrt(2.0 / n))
    basis = scale * np.cos((x + 0.5) * np.pi * h / n)
    basis.setflags(write=False)
    return basis


@functools.lru_cache(maxsize=32)
def zigzag_indices(n: int, k: int) -> np.ndarray:
    """The first ``k`` (row, col) positions of an ``n x n`` grid in JPEG zigzag order, ``(k, 2)`` int64.

    Anti-diagonal d = row + col is walked with the row decreasing for even d and
    increasing for odd d, which starts (0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2).
    """
    if not 0 <= k <= n * n:
        raise ValueError(f"k must lie in [0, {n * n}] for an {n}x{n} grid, got {k}")
    order = []
    for d in range(2 * n - 1):
        rows = range(max(0, d - n + 1), min(d, n - 1) + 1)
        rows = rows if d % 2 else reversed(rows)
        order.extend((r, d - r) for r in rows)
        if len(order) >= k:
            break
    out = np.array(order[:k], dtype=np.int64).reshape(k, 2)
    out.setflags(write=False)
    return out
