"""Flatten codec: resize the mask to r x r and read it row by row (SOLQ Tab. 3a baseline).

With r = sqrt(n_components) (784 -> 28 x 28 by default),

    encode:  v = vec(R m R^T)       R (r, N): area-average (box filter) downsampling
    decode:  m_hat = U V U^T        U (N, r): bilinear upsampling, align_corners=False

Area averaging is the exact box filter: coefficient (i, j) is the fraction of output cell
(i, j) -- a square of side N / r input pixels -- covered by the mask, with fractional pixel
overlaps when r does not divide N. It is anti-aliased (every input pixel counts, unlike
bilinear sampling at a large factor), keeps values in [0, 1], equals
``torch.nn.functional.interpolate(mode="area")`` when r divides N, and is the identity when
r == N. Bilinear upsampling matches ``interpolate(mode="bilinear", align_corners=False)``.
No fitting is needed.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import backend
from .backend import Array
from .base import MaskCodec
from .linear import contiguous, device_constants
from .registry import register_codec


@functools.lru_cache(maxsize=32)
def area_downsample_matrix(n: int, r: int) -> np.ndarray:
    """Box-filter resampling matrix ``R`` (r, n) float64 from n to r samples, rows summing to 1.

    ``R[i, j]`` is the length of input pixel j's overlap with output cell i (which spans
    ``[i n / r, (i + 1) n / r]``), divided by the cell length. Requires ``1 <= r <= n``.
    """
    if not 1 <= r <= n:
        raise ValueError(f"area downsampling needs 1 <= r <= n, got r={r}, n={n}")
    # In units of 1/r input pixels, cell i spans [i n, (i + 1) n] and pixel j spans [j r, (j + 1) r].
    i = np.arange(r)[:, None]
    j = np.arange(n)[None, :]
    overlap = np.minimum((i + 1) * n, (j + 1) * r) - np.maximum(i * n, j * r)
    out = np.clip(overlap, 0, None) / n
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=32)
def bilinear_upsample_matrix(n: int, r: int) -> np.ndarray:
    """Bilinear resampling matrix ``U`` (n, r) float64 from r to n samples, ``align_corners=False``.

    Output sample i reads input coordinate ``(i + 0.5) r / n - 0.5`` clamped at 0, with the
    right neighbour clamped at r - 1 -- the convention of
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``.
    """
    if r < 1 or n < 1:
        raise ValueError(f"bilinear resampling needs positive sizes, got r={r}, n={n}")
    src = np.maximum((np.arange(n) + 0.5) * (r / n) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), r - 1)
    hi = np.minimum(lo + 1, r - 1)
    frac = src - lo
    out = np.zeros((n, r))
    rows = np.arange(n)
    np.add.at(out, (rows, lo), 1.0 - frac)
    np.add.at(out, (rows, hi), frac)
    out.setflags(write=False)
    return out


@register_codec("flatten")
class FlattenCodec(MaskCodec):
    """Area-downsample the mask to ``r x r`` (r = sqrt(n_components)) and flatten it row-major.

    Parameters
    ----------
    mask_size : int
        Side N of the square masks.
    n_components : int
        Vector length n_k; must be a perfect square r**2 with r <= N (784 = 28**2 by default).

    Needs no fitting. Accepts numpy, torch (CPU/CUDA; ``encode`` and ``decode`` are
    differentiable) and cupy arrays and returns the same kind. Lossless when r == N.
    """

    requires_fit = False

    def __init__(self, mask_size: int = 128, n_components: int = 784):
        super().__init__(mask_size=mask_size, n_components=n_components)

    @property
    def side(self) -> int:
        """Side r of the flattened grid (``sqrt(n_components)``)."""
        return math.isqrt(int(self.n_components))

    def _extra_param_checks(self) -> None:
        k, n = int(self.n_components), int(self.mask_size)
        r = math.isqrt(k)
        if r * r != k:
            lower, upper = r * r, (r + 1) ** 2
            raise ValueError(
                f"FlattenCodec needs n_components to be a perfect square r**2 (the mask is resized to r x r), "
                f"got {k}; the nearest valid values are {lower} ({r}x{r}) and {upper} ({r + 1}x{r + 1})"
            )
        if r > n:  # unreachable through the base check (k <= n**2), kept for clarity
            raise ValueError(f"FlattenCodec resizes to r={r} > mask_size={n}; lower n_components")

    def _constants(self, like: Array) -> tuple[Array, Array, Array, Array]:
        """R (r, N), R^T (N, r), U (N, r), U^T (r, N), float32 on the device of ``like``."""
        n, r = int(self.mask_size), self.side

        def build():
            down = area_downsample_matrix(n, r).astype(np.float32)
            up = bilinear_upsample_matrix(n, r).astype(np.float32)
            return down, down.T.copy(), up, up.T.copy()

        return device_constants(self, (n, r), build, like)

    def _encode(self, masks: Array) -> Array:
        return backend.map_row_chunks(self._encode_chunk, masks)  # bounded float32 copies

    def _encode_chunk(self, masks: Array) -> Array:
        masks = backend.to_float32(masks)
        down, down_t, _, _ = self._constants(masks)
        small = down @ (masks @ down_t)  # (r, N) @ (B, N, N) @ (N, r) -> (B, r, r)
        return contiguous(small).reshape(masks.shape[0], -1)

    def _decode(self, vectors: Array) -> Array:
        _, _, up, up_t = self._constants(vectors)
        r = self.side
        grid = vectors.reshape(vectors.shape[0], r, r)
        return contiguous(up @ (grid @ up_t))  # (N, r) @ (B, r, r) @ (r, N) -> (B, N, N)
