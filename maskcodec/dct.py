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
* encode, numpy float32/float64 masks: the same run-length kernel, which checks that each mask
  holds only 0 and 1 in the pass that reads it and stops at the first row holding another
  value; those masks take ``maskcodec.dct_dense``, a numba kernel that validates the values
  and transforms each mask in cache, with half the multiply-adds of the GEMMs (the basis's
  even/odd symmetry);
* decode, numpy: ``maskcodec.dct_decode`` reads the vectors and writes the (B, N, N) output once
  (no scatter into a spectrum, no temporaries);
* torch and cupy (CPU or GPU): encode is one GEMM (B*N, N) @ (N, Kc) over all rows, then a
  batched (Kr, N) @ (B, N, Kc) product and the zigzag gather; decode scatters into the Kr x Kc
  spectrum, then a batched (N, Kr) @ (B, Kr, Kc) product and one GEMM (B*N, Kc) @ (Kc, N).
  Differentiable in torch. ``_encode_dense`` is this path for every backend (the reference
  the kernels are tested against).

For streams larger than memory, encode chunk by chunk (nothing is kept between calls), e.g.
``np.concatenate([codec.encode(chunk) for chunk in chunks])`` or write into a preallocated array.
"""

from __future__ import annotations

import sys

import numpy as np

from . import backend
from .backend import Array
from .base import MaskCodec
from .dct_basis import dct_matrix, zigzag_indices
from .registry import register_codec


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

    # -- validation ------------------------------------------------------------------
    def _validate_masks(self, masks: Array) -> Array:
        """numpy uint8 and float masks: shape only here; their values are checked by the kernels
        that read them (``_encode_numeric``). Everything else: ``MaskCodec``."""
        n = self.mask_size
        if (isinstance(masks, np.ndarray) and masks.dtype in (np.uint8, np.float32, np.float64)
                and masks.ndim == 3 and masks.shape[1:] == (n, n)):
            return masks
        return super()._validate_masks(masks)

    # -- transforms ----------------------------------------------------------------
    def _encode(self, masks: Array) -> Array:
        kind = backend.backend_of(masks)
        if kind == "numpy" and masks.dtype == np.bool_:
            # Binary masks: a run-length kernel whose cost follows the boundary (dct_runs).
            from .dct_runs import encode_binary

            return encode_binary(masks, self.n_components)
        if kind == "numpy" and masks.dtype in (np.uint8, np.float32, np.float64):
            return self._encode_numeric(masks)
        return self._encode_dense(masks)

    def _encode_numeric(self, masks: np.ndarray) -> np.ndarray:
        """numpy uint8 and float masks: the run-length kernel reads each mask once, checking that
        it holds only 0 and 1 as it goes. A uint8 mask holding another value is an error
        (``MaskCodec._validate_masks`` names it); float masks that do (their scan stops there)
        take the dense kernel, which validates their values as it reads them."""
        from .dct_dense import encode_dense
        from .dct_runs import encode_runs

        masks = np.ascontiguousarray(masks)  # one copy here at most: the kernels below then copy nothing
        out, binary = encode_runs(masks, self.n_components)
        if masks.dtype == np.uint8 and not binary.all():
            super()._validate_masks(masks)  # raises: a uint8 value above 1
        soft = np.flatnonzero(~binary)
        if len(soft):  # one call for them all (in parallel when there are many), no gather copy
            vectors, valid = encode_dense(masks, self.n_components, which=soft)
            if not valid:
                super()._validate_masks(masks[soft])  # raises, naming the offending values
            out[soft] = vectors
        return out

    def _encode_dense(self, masks: Array) -> Array:
        masks = backend.to_float32(masks)
        rows, cols, _, zr, zc = self._constants(masks)
        b, n = masks.shape[0], self.mask_size
        kc = cols.shape[0]
        # (B*N, N) @ (N, Kc): transform every mask row at once (the big GEMM), then
        # (Kr, N) @ (B, N, Kc) -> (B, Kr, Kc): the columns, mask by mask (Kr/N of the work).
        g = (masks.reshape(b * n, n) @ cols.T).reshape(b, n, kc)
        return _contiguous((rows @ g)[:, zr, zc])  # (B, n_k)

    def _decode(self, vectors: Array) -> Array:
        if backend.backend_of(vectors) == "numpy":
            from .dct_decode import decode_dense

            return decode_dense(vectors, self.mask_size)
        _, cols, rows_t, zr, zc = self._constants(vectors)
        b, n = vectors.shape[0], self.mask_size
        kr, kc = rows_t.shape[1], cols.shape[0]
        f = _zeros_like(vectors, (b, kr, kc))
        f[:, zr, zc] = vectors  # zero-filled truncated spectrum (differentiable for torch)
        x = rows_t @ f  # (N, Kr) @ (B, Kr, Kc) -> (B, N, Kc): the cheap product, mask by mask
        return (x.reshape(b * n, kc) @ cols).reshape(b, n, n)  # one GEMM writes the (B, N, N) output


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
