"""The run-length DCT kernel (``maskcodec.dct_runs``): bool, uint8 and float 0/1 masks against the dense
path and scipy, routing of soft masks, value flags, parallel vs serial, the bit-word packing."""

from __future__ import annotations

import numpy as np
import pytest
from dct_reference import random_masks, zigzag_dctn

from maskcodec.dct import DCTCodec
from maskcodec.parallel import PARALLEL_MIN_MASKS


@pytest.mark.parametrize("n,k", [(128, 256), (128, 300), (64, 1), (28, 60), (13, 50), (1, 1), (200, 64), (40, 1600)])
def test_binary_fast_path_matches_dense_path(n, k):
    from maskcodec.dct_runs import encode_binary

    m = random_masks(9, n, seed=k)
    m[0] = False  # empty
    m[1] = True  # full
    m[2] = np.indices((n, n)).sum(0) % 2 == 0  # checkerboard: the most runs possible
    codec = DCTCodec(mask_size=n, n_components=k)
    dense = codec._encode_dense(m.astype(np.float32))  # float 0/1 masks would take the fast path too
    tol = 3e-5 * max(n, 8)
    np.testing.assert_allclose(encode_binary(m, k), dense, atol=tol)
    np.testing.assert_allclose(codec.encode(m), dense, atol=tol)  # bool goes through the fast path
    np.testing.assert_allclose(codec.encode(m.astype(np.uint8)), dense, atol=tol)
    flipped = m[:, ::-1]  # non-contiguous input
    np.testing.assert_allclose(codec.encode(flipped), codec.encode(flipped.astype(np.float32)), atol=tol)
    np.testing.assert_allclose(codec.encode(m), zigzag_dctn(m, k), atol=tol)


def test_binary_fast_path_parallel_and_serial_batches_agree():
    from maskcodec import dct_runs

    m = random_masks(PARALLEL_MIN_MASKS + 9, 24, seed=11)  # parallel kernel
    whole = dct_runs.encode_binary(m, 40)
    parts = np.concatenate([dct_runs.encode_binary(m[i : i + 7], 40) for i in range(0, len(m), 7)])  # serial
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_allclose(whole, zigzag_dctn(m, 40), atol=1e-4)


def test_run_length_kernel_with_every_count_of_changed_rows():
    """The row deltas and the column pass sum over exactly the changed rows: every count from 0 to
    N (N = 21, not a multiple of 8), in rising and falling order so stale scratch rows would show."""
    from maskcodec.dct_runs import encode_binary

    n, k = 21, 60
    m = np.zeros((n + 1, n, n), dtype=bool)
    for j in range(n + 1):  # mask j: its first j rows differ from the row above, the rest repeat
        m[j, :j:2, 3:11] = True
        m[j, 1:j:2, 5:17] = True
        m[j, j:] = m[j, j - 1] if j else False
    for batch in (m, m[::-1]):
        np.testing.assert_allclose(encode_binary(batch, k), zigzag_dctn(batch, k), atol=1e-4)


def test_float_masks_of_only_0_and_1_take_the_run_length_path(monkeypatch):
    from maskcodec import dct_dense

    n, k = 24, 40
    codec = DCTCodec(mask_size=n, n_components=k)
    binary = random_masks(12, n, seed=3)
    soft = np.random.default_rng(4).uniform(0, 1, (12, n, n)).astype(np.float32)
    calls = []
    real = dct_dense.encode_dense
    monkeypatch.setattr(dct_dense, "encode_dense", lambda m, k, which: calls.append(which.tolist()) or real(m, k, which))
    expected = codec.encode(binary)
    for dtype in (np.float32, np.float64):
        np.testing.assert_array_equal(codec.encode(binary.astype(dtype)), expected)
    assert calls == []  # every mask took the run-length kernel
    # masks are routed one by one: 0/1 masks to the runs, the others to the dense kernel
    mixed = np.concatenate([binary[:5], soft[:5], binary[5:7], soft[5:6]]).astype(np.float32)
    out = codec.encode(mixed)
    assert calls == [[5, 6, 7, 8, 9, 12]]  # the soft masks, by index, in one call
    np.testing.assert_allclose(out, zigzag_dctn(mixed, k), atol=1e-4)
    np.testing.assert_array_equal(out[:5], expected[:5])
    # a soft value after a long 0/1 prefix, and a 0/1 mask with one soft pixel
    almost = binary[:1].astype(np.float32)
    almost[0, -1, -1] = 0.5
    np.testing.assert_allclose(codec.encode(almost), zigzag_dctn(almost, k), atol=1e-4)


@pytest.mark.parametrize("n,k", [(1, 1), (7, 49), (13, 50), (64, 100), (65, 1), (128, 256), (200, 300)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_0_1_masks_equal_bool_masks_on_the_run_length_path(n, k, dtype):
    """Rows of whole 64-value words, a partial last word, and both; every k up to N**2."""
    from maskcodec.dct_runs import encode_runs

    m = random_masks(6, n, seed=n + k)
    m[0] = False
    m[1] = True
    m[2] = np.indices((n, n)).sum(0) % 2 == 0  # checkerboard
    m[3, :, -1] = True  # runs that reach the last column
    out, binary = encode_runs(m.astype(dtype), k)
    assert binary.all()
    np.testing.assert_array_equal(out, encode_runs(m, k)[0])
    np.testing.assert_allclose(out, zigzag_dctn(m, k), atol=3e-5 * max(n, 8))
    flipped = m.astype(dtype)[:, ::-1, ::-1]  # non-contiguous
    np.testing.assert_allclose(DCTCodec(mask_size=n, n_components=k).encode(flipped), zigzag_dctn(flipped, k),
                               atol=3e-5 * max(n, 8))


@pytest.mark.parametrize("value", [0.5, np.nan, np.inf, -1.0, 2.0, 1e-30])
@pytest.mark.parametrize("where", [(0, 0), (64, 63), (64, 64), (69, 69), (69, 68)])
def test_run_length_kernel_flags_every_value_other_than_0_and_1(value, where):
    """In a whole 64-value word, at a word edge, and in the partial last word of a row."""
    from maskcodec.dct_runs import encode_runs

    m = random_masks(3, 70, seed=2).astype(np.float32)
    m[1][where] = value
    m[2, 5, 5] = -0.0  # negative zero is background
    binary = encode_runs(m, 20)[1]
    assert binary.tolist() == [True, False, True]


def test_run_length_kernel_parallel_batches_with_soft_masks():
    from maskcodec import dct_runs

    m = random_masks(PARALLEL_MIN_MASKS + 9, 24, seed=5).astype(np.float32)
    m[[3, 100, -1], 7, 7] = 0.25
    out, binary = dct_runs.encode_runs(m, 40)
    assert np.flatnonzero(~binary).tolist() == [3, 100, len(m) - 1]
    serial = np.concatenate([dct_runs.encode_runs(m[i:i + 7], 40)[0] for i in range(0, len(m), 7)])
    np.testing.assert_array_equal(out[binary], serial[binary])
    np.testing.assert_allclose(DCTCodec(mask_size=24, n_components=40).encode(m), zigzag_dctn(m, 40), atol=1e-4)


def test_soft_masks_scattered_among_0_1_masks_take_one_dense_call(monkeypatch):
    """Soft masks at scattered positions (more than the parallel threshold of them, with 0/1 masks
    between) go to the dense kernel in one call by index: same vectors as encoding each alone."""
    from maskcodec import dct_dense

    n, k = 16, 30
    rng = np.random.default_rng(8)
    m = random_masks(2 * PARALLEL_MIN_MASKS + 40, n, seed=9).astype(np.float32)
    soft = np.sort(rng.choice(len(m), PARALLEL_MIN_MASKS + 20, replace=False))
    m[soft] = rng.uniform(0, 1, (len(soft), n, n))
    calls = []
    real = dct_dense.encode_dense
    monkeypatch.setattr(dct_dense, "encode_dense", lambda x, kk, **kw: calls.append(kw) or real(x, kk, **kw))
    out = DCTCodec(mask_size=n, n_components=k).encode(m)
    assert len(calls) == 1 and calls[0]["which"].tolist() == soft.tolist()
    np.testing.assert_array_equal(out[soft], real(m[soft], k)[0])
    np.testing.assert_allclose(out, zigzag_dctn(m, k), atol=1e-4)
    with pytest.raises(ValueError, match="which must be indices"):
        real(m, k, which=np.array([len(m)]))


def test_nonzero_bits64_matches_numpy():
    from numba import njit

    from maskcodec.bit_words import nonzero_bits64

    @njit
    def words(flat):
        out = np.empty((2, flat.size // 64), np.uint64)
        for k in range(flat.size // 64):
            out[0, k], out[1, k] = nonzero_bits64(flat, 64 * k)
        return out

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64, np.uint8, np.int16):
        x = rng.integers(0, 2, 256).astype(dtype)
        x[[5, 70, 200]] = 3
        if np.dtype(dtype).kind == "f":
            x[[6, 71]] = np.nan, -0.0
        bits = np.unpackbits(words(x).view(np.uint8), bitorder="little").reshape(2, -1)
        np.testing.assert_array_equal(bits[0], x != 0)
        np.testing.assert_array_equal(bits[1], (x != 0) & (x != 1))


@pytest.mark.parametrize("bad,match", [(np.nan, "NaN"), (np.inf, "NaN or infinite"), (1.5, r"\[0, 1\]"),
                                       (-0.25, r"\[0, 1\]")])
def test_bad_float_values_are_rejected_after_a_0_1_or_a_soft_start(bad, match):
    codec = DCTCodec(mask_size=16, n_components=8)
    for first in (0.0, 0.3):  # a 0/1 prefix, or a soft one
        m = np.full((3, 16, 16), first, np.float32)
        m[2, 15, 15] = bad
        with pytest.raises(ValueError, match=match):
            codec.encode(m)


def test_binary_fast_path_rejects_other_dtypes():
    from maskcodec.dct_runs import encode_binary

    with pytest.raises(ValueError, match="bool or uint8"):
        encode_binary(np.zeros((1, 8, 8), np.float32), 4)
    assert encode_binary(np.zeros((0, 8, 8), bool), 4).shape == (0, 4)
    twos = np.zeros((2, 8, 8), np.uint8)
    twos[1, 3, 3] = 2
    with pytest.raises(ValueError, match="mask 1 holds another value"):
        encode_binary(twos, 4)
    from maskcodec.dct_runs import encode_runs

    with pytest.raises(ValueError, match="bool, uint8, float32 or float64"):
        encode_runs(np.zeros((1, 8, 8), np.int32), 4)
