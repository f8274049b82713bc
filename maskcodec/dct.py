"""DCT codec: the n_k lowest-frequency coefficients of the orthonormal 2-D DCT-II (SOLQ, DCT-Mask).

For an N x N mask m the 2-D transform is f = A m A^T with the DCT-II basis

    A[h, l] = sqrt((1 + sign h) / N) * cos((l + 0.5) * pi * h / N),

identical to ``scipy.fft.dctn(m, norm="ortho")``. The vector is f read in JPEG zigzag order
((0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), ...), truncated to n_k entries. Decoding
zero-fills the missing coefficients and applies m = A^T f A.

Only the rows and columns of f that the zigzag prefix touches are ever computed (Kr x Kc =
23 x 22 of 128 x 128 for n_k = 256), so the dense paths cost O(B N^2 K) instead of O(B N^3):

* encode, numpy bool or uint8 masks: ``maskcodec.dct_runs``, a numba kernel over the runs of
  each row whose cost follows the mask boundary (compiled on first use, cached on disk);
* encode, anything else (soft float masks -- also float masks that happen to be 0/1 --, torch,
  cupy): two GEMMs, rows then columns;
* decode: scatter into the Kr x Kc spectrum, one GEMM (B*Kr, Kc) @ (Kc, N), then a batched
  (N, Kr) @ (B, Kr, N) product that writes the (B, N, N) output in place. Differentiable in torch.

For streams larger than memory, encode chunk by chunk (nothing is kept between calls), e.g.
``np.concatenate([codec.encode(chunk) for chunk in chunks])`` or write into a preallocated array.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from . import backend
from .backend import Array
from .base import MaskCodec
from .registry import register_codec

_LITTLE_ENDIAN = sys.byteorder == "little"


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
    not standardised. numpy bool/uint8 masks take the run-length fast path
    (``maskcodec.dct_runs``); pass binary masks with those dtypes for the fastest encode.
    """

    requires_fit = False

    def __init__(self, mask_size: int = 128, n_components: int = 256):
        super().__init__(mask_size=mask_size, n_components=n_components)

    # -- constants -----------------------------------------------------------------
    def _plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Row basis (Kr, N), column basis (Kc, N), its transpose (N, Kc), zigzag rows and cols (n_k,)."""
        key = (self.mask_size, self.n_components)
        plan = getattr(self, "_plan_cache", None)
        if plan is None or plan[0] != key:
            n, k = key
            zz = zigzag_indices(n, k)
            kr, kc = int(zz[:, 0].max()) + 1, int(zz[:, 1].max()) + 1
            basis = dct_matrix(n).astype(np.float32)
            consts = (
                basis[:kr].copy(),
                basis[:kc].copy(),
                np.ascontiguousarray(basis[:kr].T),
                zz[:, 0].copy(),
                zz[:, 1].copy(),
            )
            plan = (key, consts)
            self._plan_cache = plan
            self._device_cache = {}
        return plan[1]

    def _constants(self, like: Array) -> tuple[Array, Array, Array, Array, Array]:
        plan = self._plan()
        key = backend.device_key(like)
        cache = self._device_cache
        if key not in cache:
            cache[key] = tuple(backend.constant_like(c, like) for c in plan)
        return cache[key]

    # -- transforms ----------------------------------------------------------------
    def _encode(self, masks: Array) -> Array:
        binary = backend.backend_of(masks) == "numpy" and masks.dtype in (np.bool_, np.uint8)
        if binary and _LITTLE_ENDIAN:
            # Binary masks: a run-length kernel whose cost follows the boundary (dct_runs).
            # uint8 masks were checked to hold only 0 and 1 by MaskCodec._validate_masks;
            # the kernel reads 8 pixels as one little-endian uint64.
            from .dct_runs import encode_binary

            return encode_binary(masks, self.n_components)
        masks = backend.to_float32(masks)
        rows, cols, _, zr, zc = self._constants(masks)
        b, n = masks.shape[0], self.mask_size
        kr, kc = rows.shape[0], cols.shape[0]
        # (B*N, N) @ (N, Kc): transform every mask row at once.
        g = masks.reshape(b * n, n) @ cols.T  # (B*N, Kc)
        # (Kr, N) @ (N, B*Kc): then the columns, all masks in one product.
        g = g.reshape(b, n, kc).swapaxes(0, 1).reshape(n, b * kc)
        f = (rows @ g).reshape(kr, b, kc)  # (Kr, B, Kc)
        return _contiguous(f[zr, :, zc].T)  # (n_k, B) gathered, returned as (B, n_k)

    def _decode(self, vectors: Array) -> Array:
        _, cols, rows_t, zr, zc = self._constants(vectors)
        b, n = vectors.shape[0], self.mask_size
        kr, kc = rows_t.shape[1], cols.shape[0]
        f = _zeros_like(vectors, (b, kr, kc))
        f[:, zr, zc] = vectors  # zero-filled truncated spectrum (differentiable for torch)
        t = (f.reshape(b * kr, kc) @ cols).reshape(b, kr, n)  # (B, Kr, N): the cheap product
        return rows_t @ t  # (N, Kr) @ (B, Kr, N) -> (B, N, N), written in place


def _zeros_like(like: Array, shape: tuple[int, ...]) -> Array:
    """float32 zeros of ``shape`` on the backend and device of ``like``."""
    kind = backend.backend_of(like)
    if kind == "torch":
        return like.new_zeros(shape)
    if kind == "cupy":
        return sys.modules["cupy"].zeros(shape, dtype=np.float32)
    return np.zeros(shape, dtype=np.float32)


def _contiguous(x: Array) -> Array:
    if backend.backend_of(x) == "torch":
        return x.contiguous()
    if backend.backend_of(x) == "cupy":
        return sys.modules["cupy"].ascontiguousarray(x)
    return np.ascontiguousarray(x)
