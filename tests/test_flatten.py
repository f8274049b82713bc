"""FlattenCodec: area downsampling to r x r, flattening, bilinear upsampling back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import maskcodec
import maskcodec.flatten  # noqa: F401  (registers "flatten")
from maskcodec.flatten import FlattenCodec, area_downsample_matrix, bilinear_upsample_matrix


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_registered_with_default_28x28():
    codec = maskcodec.get_codec("flatten", mask_size=128)
    assert isinstance(codec, FlattenCodec)
    assert codec.n_components == 784 and codec.side == 28
    assert not codec.requires_fit


@pytest.mark.parametrize("n", [1, 7, 16, 33])
def test_full_resolution_is_lossless(n):
    rng = np.random.default_rng(n)
    masks = rng.random((3, n, n)) > 0.5
    codec = FlattenCodec(mask_size=n, n_components=n * n)
    vectors = codec.encode(masks)
    assert vectors.shape == (3, n * n) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, masks.reshape(3, -1).astype(np.float32))
    np.testing.assert_array_equal(codec.decode(vectors), masks.astype(np.float32))


def test_vector_is_the_row_major_flattened_area_average():
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, 0:4, 0:2] = True  # covers half of the top-left 4x4 cell of a 2x2 grid
    v = FlattenCodec(mask_size=8, n_components=4).encode(masks)
    np.testing.assert_allclose(v, [[0.5, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("n,r", [(128, 28), (12, 4), (10, 3), (5, 5), (9, 1)])
def test_area_matrix_rows_sum_to_one_and_match_integer_pooling(n, r):
    down = np.array(area_downsample_matrix(n, r))  # writable copy for torch.from_numpy
    assert down.shape == (r, n) and (down >= 0).all()
    np.testing.assert_allclose(down.sum(axis=1), 1.0, atol=1e-12)
    # every input pixel contributes in total n/r cells' worth... i.e. its weights sum to r/n
    np.testing.assert_allclose(down.sum(axis=0), r / n, atol=1e-12)
    if n % r == 0:
        x = torch.rand(2, 1, n, n, dtype=torch.float64)
        ref = F.avg_pool2d(x, n // r)
        ours = torch.from_numpy(down) @ x @ torch.from_numpy(down).T
        torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("n,r", [(128, 28), (32, 8), (17, 5), (6, 6), (40, 1)])
def test_upsampling_matches_torch_bilinear(n, r):
    vectors = torch.rand(3, r * r)
    codec = FlattenCodec(mask_size=n, n_components=r * r)
    ours = codec.decode(vectors)
    ref = F.interpolate(vectors.reshape(3, 1, r, r), size=(n, n), mode="bilinear", align_corners=False)[:, 0]
    assert isinstance(ours, torch.Tensor) and ours.shape == (3, n, n)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(bilinear_upsample_matrix(n, r).sum(axis=1), 1.0, atol=1e-12)


def test_rectangle_survives_128_to_28_and_back():
    masks = np.zeros((1, 128, 128), dtype=bool)
    masks[0, 20:100, 35:90] = True
    codec = FlattenCodec(mask_size=128, n_components=784)
    soft = codec.decode(codec.encode(masks))
    assert soft.shape == (1, 128, 128) and soft.dtype == np.float32
    assert iou(soft[0] > 0.5, masks[0]) > 0.9
    assert soft.min() >= -1e-6 and soft.max() <= 1 + 1e-6  # convex combinations stay in [0, 1]


def test_real_masks_round_trip_iou():
    # An ellipse and a thin diagonal bar: a smooth shape and one close to the 28x28 resolution.
    yy, xx = np.mgrid[:128, :128]
    ellipse = ((yy - 60) / 50.0) ** 2 + ((xx - 70) / 35.0) ** 2 <= 1
    bar = np.abs(yy - xx) <= 6
    codec = FlattenCodec(mask_size=128, n_components=784)
    soft = codec.decode(codec.encode(np.stack([ellipse, bar])))
    assert iou(soft[0] > 0.5, ellipse) > 0.95
    assert iou(soft[1] > 0.5, bar) > 0.8


@pytest.mark.parametrize("k", [2, 783, 785, 1000])
def test_non_square_n_components_is_a_clear_error(k):
    codec = FlattenCodec(mask_size=128, n_components=k)
    with pytest.raises(ValueError, match="perfect square"):
        codec.encode(np.zeros((1, 128, 128), dtype=bool))


def test_grid_larger_than_mask_is_rejected():
    with pytest.raises(ValueError, match="exceeds mask_size"):
        FlattenCodec(mask_size=8, n_components=81).encode(np.zeros((1, 8, 8)))


# backend.min_max calls float() on a tensor that requires grad; harmless, fixed upstream by a detach().
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_torch_encode_and_decode_are_differentiable():
    codec = FlattenCodec(mask_size=16, n_components=16)
    masks = torch.rand(2, 16, 16, requires_grad=True)
    vectors = codec.encode(masks)
    vectors.sum().backward()
    # each pixel of a 4x4 cell carries weight 1/16
    torch.testing.assert_close(masks.grad, torch.full_like(masks, 1 / 16))
    v = torch.rand(2, 16, requires_grad=True)
    codec.decode(v).pow(2).sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()


@pytest.mark.gpu
def test_cuda_matches_cpu():
    ok, why = maskcodec.backend.cuda_status()
    if not ok or not torch.cuda.is_available():
        pytest.skip(why)
    codec = FlattenCodec(mask_size=64, n_components=256)
    masks = torch.rand(4, 64, 64) > 0.5
    out = codec.encode(masks.cuda())
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), codec.encode(masks), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(codec.decode(out).cpu(), codec.decode(codec.encode(masks)), atol=1e-5, rtol=1e-5)
