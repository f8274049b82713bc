"""DCT codec: the n_k lowest-frequency coefficients of the orthonormal 2-D DCT-II (SOLQ, DCT-Mask).

For an N x N mask m the 2-D transform is f = A m A^T with the DCT-II basis

    A[h, l] = sqrt((1 + sign h) / N) * cos((l + 0.5) * pi * h / N),

identical to ``scipy.fft.dctn(m, norm="ortho")``. The vector is f read in JPEG zigzag order
((0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), ...), truncated to n_k entries. Decoding
zero-fills the missing coefficients and applies m = A^T f A.

Only the rows and columns of f that the zigzag prefix touches are ever computed (about 23
of 128 for n_k = 256), so encode and decode cost O(B N^2 K) instead of O(B N^3).
"""

from __future__ import annotations

import functools

import numpy as np

from . import backend
from .backend import Array
from .base import MaskCodec
from .registry import register_codec


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


@register_codec("dct")
class DCTCodec(MaskCodec):
    """Keep the ``n_components`` lowest-frequency 2-D DCT coefficients in zigzag order.

    Parameters
    ----------
    mask_size : int
        Side N of the square masks.
    n_components : int
        Vector length n_k, at most N**2 (N**2 reconstructs exactly).

    Needs no fitting. Accepts numpy, torch (CPU/CUDA; ``decode`` is differentiable) and cupy
    arrays and returns the same kind. The DC coefficient is N * mean(mask); coefficients are
    not standardised.
    """

    requires_fit = False

    def __init__(self, mask_size: int = 128, n_components: int = 256):
        super().__init__(mask_size=mask_size, n_components=n_components)

    # -- constants -----------------------------------------------------------------
    def _plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Row basis (Kr, N), column basis (Kc, N), flat indices (n_k,) into Kr x Kc, selector (n_k, Kr*Kc)."""
        key = (self.mask_size, self.n_components)
        plan = getattr(self, "_plan_cache", None)
        if plan is None or plan[0] != key:
            n, k = key
            zz = zigzag_indices(n, k)
            kr, kc = int(zz[:, 0].max()) + 1, int(zz[:, 1].max()) + 1
            basis = dct_matrix(n).astype(np.float32)
            flat = zz[:, 0] * kc + zz[:, 1]
            selector = np.zeros((k, kr * kc), dtype=np.float32)
            selector[np.arange(k), flat] = 1.0
            plan = (key, (basis[:kr].copy(), basis[:kc].copy(), flat, selector))
            self._plan_cache = plan
            self._device_cache = {}
        return plan[1]

    def _constants(self, like: Array) -> tuple[Array, Array, Array, Array]:
        plan = self._plan()
        key = backend.device_key(like)
        cache = self._device_cache
        if key not in cache:
            cache[key] = tuple(backend.constant_like(c, like) for c in plan)
        return cache[key]

    # -- transforms ----------------------------------------------------------------
    def _encode(self, masks: Array) -> Array:
        masks = backend.to_float32(masks)
        rows, cols, flat, _ = self._constants(masks)
        b, n = masks.shape[0], self.mask_size
        kr, kc = rows.shape[0], cols.shape[0]
        # (B*N, N) @ (N, Kc): transform every mask row at once.
        g = masks.reshape(b * n, n) @ cols.T  # (B*N, Kc)
        # (Kr, N) @ (N, B*Kc): then the columns, all masks in one product.
        g = g.reshape(b, n, kc).swapaxes(0, 1).reshape(n, b * kc)
        f = (rows @ g).reshape(kr, b, kc).swapaxes(0, 1).reshape(b, kr * kc)
        return f[:, flat]

    def _decode(self, vectors: Array) -> Array:
        rows, cols, _, selector = self._constants(vectors)
        b, n = vectors.shape[0], self.mask_size
        kr, kc = rows.shape[0], cols.shape[0]
        f = (vectors @ selector).reshape(b * kr, kc)  # zero-filled truncated spectrum
        t = (f @ cols).reshape(b, kr, n).swapaxes(0, 1).reshape(kr, b * n)  # (Kr, B*N)
        m = (rows.T @ t).reshape(n, b, n).swapaxes(0, 1)  # (B, N, N)
        return _contiguous(m)


def _contiguous(x: Array) -> Array:
    if backend.backend_of(x) == "torch":
        return x.contiguous()
    return x.copy() if not x.flags.c_contiguous else x
