"""Shared by the DCT tests: synthetic blobby masks and scipy's DCT in zigzag order (the reference)."""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch

from maskcodec.dct import zigzag_indices


def random_masks(b: int, n: int, seed: int = 0, dtype=bool) -> np.ndarray:
    """Blobby binary masks: thresholded smooth noise, so rows repeat and runs vary like real masks."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((b, max(2, n // 8), max(2, n // 8)))
    t = torch.nn.functional.interpolate(torch.from_numpy(coarse)[:, None], size=(n, n), mode="bilinear")
    return (t[:, 0].numpy() > 0.5).astype(dtype)


def zigzag_dctn(masks: np.ndarray, k: int) -> np.ndarray:
    """scipy's orthonormal 2-D DCT of ``masks`` (B, N, N) in float64, its first ``k`` zigzag coefficients (B, k)."""
    n = masks.shape[-1]
    zz = zigzag_indices(n, k)
    return scipy.fft.dctn(masks.astype(np.float64), axes=(1, 2), norm="ortho")[:, zz[:, 0], zz[:, 1]]
