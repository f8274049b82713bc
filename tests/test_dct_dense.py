"""The dense numpy DCT kernels (``maskcodec.dct_dense`` encode, ``maskcodec.dct_decode``) against the
GEMM path and scipy: sizes at the register layout's edges, parallel vs serial, value validation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
from dct_reference import zigzag_dctn

from maskcodec.dct import DCTCodec, zigzag_indices
from maskcodec.parallel import PARALLEL_MIN_MASKS

DENSE_SIZES = [(128, 256), (128, 300), (1, 1), (2, 3), (3, 9), (5, 25), (7, 10), (16, 1), (37, 100), (28, 60),
               (200, 64)]


def torch_decode(codec: DCTCodec, v: np.ndarray) -> np.ndarray:
    """The GEMM decode (scatter, batched product, GEMM) that torch tensors take."""
    return codec.decode(torch.from_numpy(v)).numpy()


@pytest.mark.parametrize("n,k", DENSE_SIZES)
def test_dense_kernels_equal_the_gemm_path(n, k):
    rng = np.random.default_rng(n * 1000 + k)
    codec = DCTCodec(mask_size=n, n_components=k)
    soft = rng.random((5, n, n)).astype(np.float32)
    tol = 3e-6 * n
    np.testing.assert_allclose(codec.encode(soft), codec._encode_dense(soft), atol=tol)
    np.testing.assert_allclose(codec.encode(soft.astype(np.float64)), codec._encode_dense(soft), atol=tol)
    flipped = soft[:, ::-1, ::-1]  # not contiguous
    np.testing.assert_allclose(codec.encode(flipped), codec._encode_dense(np.ascontiguousarray(flipped)), atol=tol)
    v = rng.standard_normal((5, k)).astype(np.float32)
    out = codec.decode(v)
    assert out.shape == (5, n, n) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, torch_decode(codec, v), atol=1e-5)
    np.testing.assert_allclose(codec.decode(v.astype(np.float64)[:, :]), out, atol=0)
    np.testing.assert_allclose(codec.decode(np.asfortranarray(v)), out, atol=0)


# Sizes at the edges of the 8-lane layout: N = 8 (one column block), N = 40 (an odd count of
# blocks, a left half that ends inside a block), N < 8 and odd N (staged through a padded copy),
# n_k whose column count pads to 8, 16 or 24 lanes (N = 64: Kc = 15, 16, 17, 32, 33) or the whole
# spectrum.
LANE_EDGE_SIZES = [(8, 1), (8, 64), (40, 300), (64, 120), (64, 136), (64, 153), (64, 528), (64, 561),
                   (64, 4096), (6, 36), (9, 81), (23, 100)]


@pytest.mark.parametrize("n,k", LANE_EDGE_SIZES)
def test_dense_kernels_at_lane_edges_equal_scipy(n, k):
    from maskcodec.dct_decode import decode_dense
    from maskcodec.dct_dense import encode_dense

    rng = np.random.default_rng(n * 7 + k)
    soft = rng.random((6, n, n)).astype(np.float32)
    which = np.array([5, 0, 3, 3])  # unordered, repeated: each mask prefetches the next one
    tol = 3e-6 * n
    for masks in (soft, soft.astype(np.float64)):  # float32 straight from the array, float64 staged
        v, valid = encode_dense(masks, k, which)
        assert valid
        np.testing.assert_allclose(v, zigzag_dctn(soft[which], k), atol=tol)
    spectrum = np.zeros((2, n, n))
    zz = zigzag_indices(n, k)
    vectors = rng.standard_normal((2, k)).astype(np.float32)
    spectrum[:, zz[:, 0], zz[:, 1]] = vectors
    np.testing.assert_allclose(decode_dense(vectors, n), scipy.fft.idctn(spectrum, axes=(1, 2), norm="ortho"),
                               atol=1e-5 * max(1.0, k ** 0.5 / 4))


def test_dense_kernels_parallel_and_serial_batches_agree():
    from maskcodec import dct_decode, dct_dense

    n, k = 24, 40
    b = PARALLEL_MIN_MASKS + 9
    soft = np.random.default_rng(7).random((b, n, n)).astype(np.float32)
    whole, valid = dct_dense.encode_dense(soft, k)
    assert valid
    parts = np.concatenate([dct_dense.encode_dense(soft[i:i + 7], k)[0] for i in range(0, b, 7)])
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_allclose(whole, zigzag_dctn(soft, k), atol=1e-4)
    decoded = dct_decode.decode_dense(whole, n)
    np.testing.assert_array_equal(decoded, np.concatenate([dct_decode.decode_dense(whole[i:i + 7], n)
                                                           for i in range(0, b, 7)]))
    soft[-1, 3, 4] = np.nan  # a bad value in the last parallel chunk
    assert dct_dense.encode_dense(soft, k)[1] is False


@pytest.mark.parametrize("n", [7, 8])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1.0001, -1e-6])
@pytest.mark.parametrize("where", [(0, 0), (3, 3), (6, 0), (2, 5)])  # corner, middle (odd n), last row, right half
def test_dense_encode_finds_every_bad_value(n, bad, where):
    from maskcodec.dct_dense import encode_dense

    m = np.full((2, n, n), 0.5, np.float32)
    assert encode_dense(m, 10)[1] is True
    m[1][where] = bad
    assert encode_dense(m, 10)[1] is False
    with pytest.raises(ValueError, match="NaN|\\[0, 1\\]"):
        DCTCodec(mask_size=n, n_components=10).encode(m)


def test_dense_encode_judges_only_the_masks_it_encodes():
    """A bad value in a mask left out of ``which`` does not make the encoded ones invalid, even when
    ``which`` has as many entries as there are masks (repeats) and a negative zero forces the full
    check of the values."""
    from maskcodec.dct_dense import encode_dense

    m = np.full((2, 8, 8), 0.5, np.float32)
    m[0, 1, 1] = -0.0  # valid, but its bit pattern sends the kernel to the full check
    m[1, 2, 2] = np.nan
    assert encode_dense(m, 10, which=np.array([0, 0]))[1] is True
    assert encode_dense(m, 10, which=np.array([0, 1]))[1] is False
    assert encode_dense(m, 10)[1] is False


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_encode_accepts_negative_zero(dtype):
    from maskcodec.dct_dense import encode_dense

    m = np.full((300, 9, 9), 0.5, dtype)  # the parallel kernel too
    m[[0, 299], 4, 4] = -0.0  # its bit pattern lies above that of 1.0: the full check clears it
    out, valid = encode_dense(m, 10)
    assert valid
    np.testing.assert_allclose(out, zigzag_dctn(m, 10), atol=1e-5)


def test_dense_encode_checks_float64_values_before_rounding():
    m = np.full((1, 7, 7), 0.5)
    m[0, 2, 3] = 1 + 1e-12  # rounds to 1.0 in float32, still out of range
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        DCTCodec(mask_size=7, n_components=10).encode(m)
    m[0, 2, 3] = 0.5
    m[0, 3, 3] = -1e-300  # the middle column of odd N
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        DCTCodec(mask_size=7, n_components=10).encode(m)


def test_dense_kernels_reject_wrong_arrays():
    from maskcodec.dct_decode import decode_dense
    from maskcodec.dct_dense import encode_dense

    with pytest.raises(ValueError, match="float32 or float64"):
        encode_dense(np.zeros((1, 8, 8), bool), 4)
    with pytest.raises(ValueError, match="float32 vectors"):
        decode_dense(np.zeros((1, 4), np.float64), 8)
    assert encode_dense(np.zeros((0, 8, 8), np.float32), 4)[0].shape == (0, 4)
    assert decode_dense(np.zeros((0, 4), np.float32), 8).shape == (0, 8, 8)
