"""The 8-lane float32 vector type for numba kernels (``maskcodec.float8``) against numpy."""

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from maskcodec.float8 import add8, fma8, load8, max_bits, max_bits8, prefetch, reverse8, store8, sub8, zero8  # noqa: E402


@numba.njit
def _combine(weights, rows, out):
    """out[0:8] = weights @ rows; out[8:16] = rows[0] - rows[1] + out[8:16] (a 2-D source, odd offsets)."""
    acc = zero8()
    for r in range(weights.size):
        acc = fma8(acc, weights[r], load8(rows, r * rows.shape[1] + 1))
    store8(out, 0, acc)
    store8(out, 8, add8(sub8(load8(rows, 1), load8(rows, rows.shape[1] + 1)), load8(out, 8)))


def test_vector_ops_match_numpy_at_any_offset():
    rng = np.random.default_rng(0)
    weights = rng.standard_normal(13).astype(np.float32)
    rows = rng.standard_normal((13, 9)).astype(np.float32)  # 9 columns: loads at unaligned offsets
    out = np.ones(17, np.float32)
    _combine(weights, rows, out)
    np.testing.assert_allclose(out[:8], weights @ rows[:, 1:], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[8:16], rows[0, 1:] - rows[1, 1:] + 1, rtol=1e-6)
    assert out[16] == 1  # nothing written past the 16 values


def test_vector_ops_reject_other_arrays():
    @numba.njit
    def load_float64(x):
        return load8(x, 0)

    with pytest.raises(numba.core.errors.TypingError, match="C-contiguous float32"):
        load_float64(np.zeros(8))


@numba.njit
def _reverse_and_max_bits(x, out):
    """out[0:8] = x[7::-1]; returns the largest bit pattern of x (16 values) as a uint32."""
    store8(out, 0, reverse8(load8(x, 0)))
    return max_bits(max_bits8(load8(x, 0), load8(x, 8)))


def test_reverse_and_max_bits():
    x = np.array([0.5, 0.0, 1.0, 0.25, 0.75, 0.125, 0.0, 1.0, 0.5, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32)
    out = np.zeros(8, np.float32)
    assert _reverse_and_max_bits(x, out) == np.float32(1.0).view(np.uint32)
    np.testing.assert_array_equal(out, x[7::-1])
    for bad in (np.nan, np.inf, -np.inf, -1e-30, -0.0, 1.0000001):  # every pattern above that of 1.0
        y = x.copy()
        y[13] = bad
        assert _reverse_and_max_bits(y, out) == np.array(bad, np.float32).view(np.uint32)


@numba.njit
def _sum_with_prefetch(x):
    """sum(x), prefetching 64 values ahead (a hint only: the result must not change)."""
    acc = zero8()
    for i in range(0, x.size, 8):
        prefetch(x, min(i + 64, x.size - 1))
        acc = add8(acc, load8(x, i))
    out = np.zeros(8, np.float32)
    store8(out, 0, acc)
    return out.sum()


def test_prefetch_changes_nothing():
    x = np.arange(256, dtype=np.float32)
    assert _sum_with_prefetch(x) == x.sum()
