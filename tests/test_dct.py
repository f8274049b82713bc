"""DCT codec: basis, zigzag order, agreement with scipy, backends, binary fast path, real-mask IoU."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import torch

from maskcodec import backend
from maskcodec.dct import DCTCodec, dct_matrix, zigzag_indices

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COCO_VAL = DATA / "coco_mini" / "annotations" / "instances_val.json"

gpu = pytest.mark.skipif(not backend.cuda_status()[0], reason=backend.cuda_status()[1])


def random_masks(b: int, n: int, seed: int = 0, dtype=bool) -> np.ndarray:
    """Blobby binary masks: thresholded smooth noise, so rows repeat and runs vary like real masks."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((b, max(2, n // 8), max(2, n // 8)))
    t = torch.nn.functional.interpolate(torch.from_numpy(coarse)[:, None], size=(n, n), mode="bilinear")
    return (t[:, 0].numpy() > 0.5).astype(dtype)


def zigzag_dctn(masks: np.ndarray, k: int) -> np.ndarray:
    n = masks.shape[-1]
    zz = zigzag_indices(n, k)
    return scipy.fft.dctn(masks.astype(np.float64), axes=(1, 2), norm="ortho")[:, zz[:, 0], zz[:, 1]]


# ---------------------------------------------------------------------------- basis and order
@pytest.mark.parametrize("n", [1, 2, 7, 8, 128])
def test_basis_is_orthonormal_and_matches_scipy(n):
    a = dct_matrix(n)
    assert a.shape == (n, n)
    np.testing.assert_allclose(a @ a.T, np.eye(n), atol=1e-12)
    # scipy transforms the columns of eye(n): column l of the result is the DCT of e_l,
    # i.e. entry (h, l) is A[h, l], frequencies on rows.
    np.testing.assert_allclose(a, scipy.fft.dct(np.eye(n), norm="ortho", axis=0), atol=1e-12)


def test_zigzag_starts_like_jpeg_and_is_a_permutation():
    expected = [(0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2), (2, 1), (3, 0), (4, 0)]
    assert [tuple(p) for p in zigzag_indices(8, len(expected))] == expected
    for n in (1, 3, 8, 16):
        full = zigzag_indices(n, n * n)
        flat = full[:, 0] * n + full[:, 1]
        assert sorted(flat.tolist()) == list(range(n * n))
        diag = full.sum(1)
        assert np.all(np.diff(diag) >= 0), "anti-diagonals are visited in order"
    with pytest.raises(ValueError, match="k must lie"):
        zigzag_indices(4, 17)


def test_256_coefficients_at_128_touch_23_rows_and_22_columns():
    zz = zigzag_indices(128, 256)
    # 22 full anti-diagonals (d = 0..21, 253 entries) + 3 entries of d = 22, walked from the
    # bottom-left because d is even: (22, 0), (21, 1), (20, 2).
    assert int((zz.sum(1) <= 21).sum()) == 253
    assert [tuple(p) for p in zz[253:]] == [(22, 0), (21, 1), (20, 2)]
    kr, kc = int(zz[:, 0].max()) + 1, int(zz[:, 1].max()) + 1
    assert (kr, kc) == (23, 22)
    assert max(kr, kc) == 23


# ---------------------------------------------------------------------------- encode / decode
@pytest.mark.parametrize("n,k", [(8, 10), (16, 256), (128, 256), (28, 60)])
def test_encode_equals_scipy_dctn_in_zigzag_order(n, k):
    m = random_masks(6, n, seed=n).astype(np.float32) * np.float32(0.8) + np.float32(0.1)  # soft masks
    codec = DCTCodec(mask_size=n, n_components=k)
    v = codec.encode(m)
    assert v.shape == (6, k) and v.dtype == np.float32 and v.flags.c_contiguous
    assert codec.encode(m > 0.5).flags.c_contiguous
    np.testing.assert_allclose(v, zigzag_dctn(m, k), atol=2e-4 * max(1, n / 16))


@pytest.mark.parametrize("n", [4, 16])
def test_full_spectrum_reconstructs_exactly(n):
    m = random_masks(5, n, seed=1).astype(np.float32)
    codec = DCTCodec(mask_size=n, n_components=n * n)
    np.testing.assert_allclose(codec.decode(codec.encode(m)), m, atol=1e-5)


def test_decode_equals_zero_filled_idctn():
    n, k = 64, 100
    codec = DCTCodec(mask_size=n, n_components=k)
    v = np.random.default_rng(3).standard_normal((4, k)).astype(np.float32)
    zz = zigzag_indices(n, k)
    full = np.zeros((4, n, n))
    full[:, zz[:, 0], zz[:, 1]] = v
    expected = scipy.fft.idctn(full, axes=(1, 2), norm="ortho")
    out = codec.decode(v)
    assert out.shape == (4, n, n) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_dc_term_is_n_times_mean():
    m = random_masks(8, 32, seed=2)
    v = DCTCodec(mask_size=32, n_components=16).encode(m)
    np.testing.assert_allclose(v[:, 0], 32 * m.mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- dense kernels (numpy)
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
    from maskcodec.dct_dense import decode_dense, encode_dense

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
    from maskcodec import dct_dense

    n, k = 24, 40
    b = dct_dense._PARALLEL_MIN + 9
    soft = np.random.default_rng(7).random((b, n, n)).astype(np.float32)
    whole, valid = dct_dense.encode_dense(soft, k)
    assert valid
    parts = np.concatenate([dct_dense.encode_dense(soft[i:i + 7], k)[0] for i in range(0, b, 7)])
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_allclose(whole, zigzag_dctn(soft, k), atol=1e-4)
    decoded = dct_dense.decode_dense(whole, n)
    np.testing.assert_array_equal(decoded, np.concatenate([dct_dense.decode_dense(whole[i:i + 7], n)
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
    from maskcodec.dct_dense import decode_dense, encode_dense

    with pytest.raises(ValueError, match="float32 or float64"):
        encode_dense(np.zeros((1, 8, 8), bool), 4)
    with pytest.raises(ValueError, match="float32 vectors"):
        decode_dense(np.zeros((1, 4), np.float64), 8)
    assert encode_dense(np.zeros((0, 8, 8), np.float32), 4)[0].shape == (0, 4)
    assert decode_dense(np.zeros((0, 4), np.float32), 8).shape == (0, 8, 8)


# ---------------------------------------------------------------------------- binary fast path
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

    m = random_masks(dct_runs._PARALLEL_MIN + 9, 24, seed=11)  # parallel kernel
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

    m = random_masks(dct_runs._PARALLEL_MIN + 9, 24, seed=5).astype(np.float32)
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
    m = random_masks(2 * dct_dense._PARALLEL_MIN + 40, n, seed=9).astype(np.float32)
    soft = np.sort(rng.choice(len(m), dct_dense._PARALLEL_MIN + 20, replace=False))
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


def test_importing_maskcodec_does_not_compile_or_import_numba_kernels():
    import subprocess
    import sys

    code = ("import sys, maskcodec; maskcodec.get_codec('dct'); "
            "print('maskcodec.dct_runs' in sys.modules, 'maskcodec.dct_dense' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


# ---------------------------------------------------------------------------- torch
def test_torch_matches_numpy_and_returns_torch():
    n, k = 32, 64
    codec = DCTCodec(mask_size=n, n_components=k)
    m = random_masks(4, n, seed=5)
    v_np = codec.encode(m)
    for t in (torch.from_numpy(m), torch.from_numpy(m).float(), torch.from_numpy(m).double()):
        v = codec.encode(t)
        assert isinstance(v, torch.Tensor) and v.dtype == torch.float32
        np.testing.assert_allclose(v.numpy(), v_np, atol=1e-4)
    d = codec.decode(torch.from_numpy(v_np))
    assert isinstance(d, torch.Tensor) and d.dtype == torch.float32 and d.shape == (4, n, n)
    np.testing.assert_allclose(d.numpy(), codec.decode(v_np), atol=1e-5)


def test_torch_decode_is_differentiable_and_its_gradient_is_the_transpose():
    n, k = 16, 40
    codec = DCTCodec(mask_size=n, n_components=k)
    v = torch.randn(3, k, dtype=torch.float32, requires_grad=True)
    out = codec.decode(v)
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    # decode is linear: v -> zero-fill -> A^T f A, so d/dv <w, decode(v)> = encode(w) (the adjoint
    # of an orthonormal transform is its inverse, restricted to the kept coefficients).
    np.testing.assert_allclose(v.grad.numpy(), zigzag_dctn(weight.numpy(), k), atol=1e-4)
    small = DCTCodec(mask_size=4, n_components=5)
    assert torch.autograd.gradcheck(
        lambda x: small.decode(x.float()).double(), (torch.randn(1, 5, dtype=torch.float64, requires_grad=True),),
        eps=1e-2, atol=1e-3, rtol=1e-3,
    )


# ---------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@gpu
def test_torch_cuda_matches_cpu():
    n, k = 128, 256
    codec = DCTCodec(mask_size=n, n_components=k)
    m = random_masks(4, n, seed=6)
    t = torch.from_numpy(m).cuda()
    v = codec.encode(t)
    assert v.is_cuda and v.dtype == torch.float32
    np.testing.assert_allclose(v.cpu().numpy(), codec.encode(m), atol=1e-3)
    d = codec.decode(v.requires_grad_())
    assert d.is_cuda
    d.sum().backward()
    np.testing.assert_allclose(d.detach().cpu().numpy(), codec.decode(codec.encode(m)), atol=1e-4)


@pytest.mark.gpu
@gpu
def test_cupy_matches_numpy():
    cupy = pytest.importorskip("cupy")
    n, k = 64, 128
    codec = DCTCodec(mask_size=n, n_components=k)
    m = random_masks(4, n, seed=7)
    v = codec.encode(cupy.asarray(m))
    assert isinstance(v, cupy.ndarray) and v.dtype == np.float32
    np.testing.assert_allclose(cupy.asnumpy(v), codec.encode(m), atol=1e-3)
    d = codec.decode(v)
    assert isinstance(d, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(d), codec.decode(codec.encode(m)), atol=1e-4)


# ---------------------------------------------------------------------------- real masks
def coco_box_masks(path: Path, n: int, limit: int) -> np.ndarray:
    """annToMask -> crop to the (rounded-out) box -> bilinear resize to n x n -> > 0.5."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    out = []
    for ann in coco.loadAnns(coco.getAnnIds(iscrowd=False)):
        x, y, w, h = ann["bbox"]
        x0, y0, x1, y1 = int(np.floor(x)), int(np.floor(y)), int(np.ceil(x + w)), int(np.ceil(y + h))
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        crop = torch.from_numpy(coco.annToMask(ann)[y0:y1, x0:x1]).float()[None, None]
        resized = torch.nn.functional.interpolate(crop, size=(n, n), mode="bilinear", align_corners=False)
        out.append(resized[0, 0].numpy() > 0.5)
        if len(out) == limit:
            break
    return np.stack(out)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_reconstruction_iou_on_real_coco_masks():
    if not COCO_VAL.exists():
        pytest.skip(f"shared COCO data not found at {COCO_VAL}")
    masks = coco_box_masks(COCO_VAL, 128, limit=300)
    codec = DCTCodec(mask_size=128, n_components=256)
    rec = codec.decode(codec.encode(masks)) > 0.5
    inter = (rec & masks).sum((1, 2))
    union = (rec | masks).sum((1, 2))
    iou = inter / np.maximum(union, 1)
    # DCT-Mask reports ~0.97-0.98 mean IoU for 300 coefficients at 128x128 on COCO. Measured here
    # (all 619 non-crowd coco_mini val masks): 256 coefficients -> mean 0.977, median 0.982, min 0.81
    # (thin, ragged shapes); 300 -> mean 0.980. The first 300 masks give the same 0.977 / 0.982.
    # Floors a little below, so float noise passes and a wrong basis or order (< 0.9) fails.
    assert iou.mean() > 0.97, iou.mean()
    assert np.median(iou) > 0.975, np.median(iou)
    assert iou.min() > 0.7, iou.min()
