"""PCA and flatten ``encode`` work in chunks: peak memory does not grow with the batch."""

import tracemalloc

import numpy as np
import pytest

from maskcodec import get_codec
from maskcodec.backend import CHUNK_ELEMENTS, map_row_chunks


@pytest.mark.parametrize("name", ["pca", "flatten"])
def test_encode_peak_memory_is_bounded(name):
    rng = np.random.default_rng(0)
    codec = get_codec(name, mask_size=64, n_components=16)
    if codec.requires_fit:
        codec.fit(rng.random((64, 64, 64)) > 0.5)
    n = 3 * CHUNK_ELEMENTS // (64 * 64)  # three chunks: a float32 copy of all of them would be 192 MiB
    masks = np.zeros((n, 64, 64), dtype=bool)
    masks[:, 10:40, 5:50] = True
    masks[::7, 30:60, 20:30] = True
    tracemalloc.start()
    try:
        vectors = codec.encode(masks)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    full_copy = masks.size * 4
    assert peak < 0.6 * full_copy, f"peak {peak / 2**20:.0f} MiB for a {full_copy / 2**20:.0f} MiB float32 batch"
    step = 997
    expected = np.concatenate([codec.encode(masks[i:i + step]) for i in range(0, n, step)])
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-4)


def test_map_row_chunks_keeps_order_and_backend():
    torch = pytest.importorskip("torch")
    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    np.testing.assert_array_equal(map_row_chunks(lambda a: a * 2, x, max_elements=7), x * 2)
    t = torch.from_numpy(x)
    assert torch.equal(map_row_chunks(lambda a: a + 1, t, max_elements=4), t + 1)
