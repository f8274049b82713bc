"""crop_resize and paste: agreement with torchvision roi_align, numpy == torch, round trips, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from maskcodec.geometry import crop_resize, paste

torch = pytest.importorskip("torch")
roi_align = pytest.importorskip("torchvision.ops").roi_align


def _random_masks(rng, b, h, w):
    masks = np.zeros((b, h, w), dtype=bool)
    for i in range(b):
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        masks[i, y : y + rng.integers(3, h // 2), x : x + rng.integers(3, w // 2)] = True
    return masks | (rng.random((b, h, w)) > 0.92)


def _random_boxes(rng, b, h, w, outside=10.0):
    x0 = rng.uniform(-outside, w, b)
    y0 = rng.uniform(-outside, h, b)
    return np.stack([x0, y0, x0 + rng.uniform(0.5, w, b), y0 + rng.uniform(0.5, h, b)], axis=1)


def _roi_align(masks, boxes, size, sampling_ratio=1):
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float64)[:, None], torch.from_numpy(boxes)], 1)
    out = roi_align(torch.from_numpy(masks)[:, None].float(), rois.float(), size,
                    spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True)
    return out[:, 0].numpy()


@pytest.mark.parametrize("size", [7, 28])
def test_crop_resize_matches_roi_align(size):
    rng = np.random.default_rng(size)
    masks = _random_masks(rng, 40, 37, 53)
    boxes = _random_boxes(rng, 40, 37, 53)
    ref = _roi_align(masks, boxes, size)
    soft = crop_resize(masks, boxes, size, threshold=None, sampling_ratio=1)
    assert soft.dtype == np.float32 and soft.shape == (40, size, size)
    np.testing.assert_allclose(soft, ref, atol=1e-5)
    hard = crop_resize(masks, boxes, size, sampling_ratio=1)
    assert hard.dtype == np.bool_
    # identical up to float32 rounding exactly at the threshold
    assert np.mean(hard != (ref >= 0.5)) < 1e-3


def _adaptive_boxes(rng, b, h, w, size):
    """Boxes smaller and larger than ``size``, partly outside the image, thin, with float32-exact ties."""
    x0 = rng.uniform(-15, w, b)
    y0 = rng.uniform(-15, h, b)
    bw = rng.choice([0.3, 1.0, 2.5, size / 3, size - 0.5, size, 2 * size, 3.7 * size], b) * rng.uniform(0.8, 1.2, b)
    bh = rng.choice([0.3, 1.0, 2.5, size / 3, size - 0.5, size, 2 * size, 3.7 * size], b) * rng.uniform(0.8, 1.2, b)
    boxes = np.stack([x0, y0, x0 + bw, y0 + bh], axis=1)
    boxes[: b // 4] = np.round(boxes[: b // 4])  # integer boxes: many samples exactly on pixel centres
    return boxes.astype(np.float32)


@pytest.mark.parametrize("size", [5, 16, 28])
def test_adaptive_crop_resize_equals_roi_align_sampling_ratio_0(size):
    rng = np.random.default_rng(100 + size)
    h, w = 61, 83
    masks = _random_masks(rng, 64, h, w)
    boxes = _adaptive_boxes(rng, 64, h, w, size)
    ref = _roi_align(masks, boxes, size, sampling_ratio=0)
    soft = crop_resize(masks, boxes, size, threshold=None, sampling_ratio=0)
    np.testing.assert_array_equal(soft, ref)  # bitwise: torchvision's float32 order is reproduced
    hard = crop_resize(masks, boxes, size)  # the default is adaptive
    np.testing.assert_array_equal(hard, ref >= 0.5)
    # soft float masks too, and the one-sample mode really differs on boxes larger than size
    soft_in = rng.random((8, h, w)).astype(np.float32)
    np.testing.assert_array_equal(crop_resize(soft_in, boxes[:8], size, threshold=None), _roi_align(soft_in, boxes[:8], size, 0))
    big = (boxes[:, 2] - boxes[:, 0] > size) | (boxes[:, 3] - boxes[:, 1] > size)
    assert (crop_resize(masks, boxes, size, sampling_ratio=1) != hard)[big].any()


def test_adaptive_crop_resize_fortran_order_and_bad_ratio():
    rng = np.random.default_rng(7)
    masks = _random_masks(rng, 6, 40, 50)
    boxes = _adaptive_boxes(rng, 6, 40, 50, 8)
    ref = crop_resize(masks, boxes, 8)
    np.testing.assert_array_equal(crop_resize(np.asfortranarray(masks.transpose(0, 2, 1)).transpose(0, 2, 1), boxes, 8), ref)
    half = np.zeros((1, 8, 8), dtype=bool)
    half[:, :, :4] = True  # cells straddling the edge average to exactly 0.5: the exact-order path decides
    tie = np.array([[3.0, 0.0, 5.0, 8.0]], dtype=np.float32)
    np.testing.assert_array_equal(crop_resize(half, tie, 1), _roi_align(half, tie, 1, 0) >= 0.5)
    assert (_roi_align(half, tie, 1, 0) == 0.5).all()
    for bad in (2, -1, True, 0.5):
        with pytest.raises(ValueError, match="sampling_ratio must be 0"):
            crop_resize(masks, boxes, 8, sampling_ratio=bad)


def test_adaptive_one_sample_cells_decide_ties_in_torchvision_order():
    """Boxes no larger than the grid (one sample per cell, the separable path): samples halfway between
    a 1 and a 0 pixel average to exactly 0.5, and those cells are decided in roi_align's float32 order."""
    half = np.zeros((3, 8, 8), dtype=bool)
    half[:, :, :4] = True
    half[1] = half[1].T
    half[2, 2:5, 1:6] = True
    boxes = np.array([[0.5, 0.5, 8.5, 8.5], [0.5, 0.5, 8.5, 8.5], [-0.5, 1.5, 7.5, 7.5]], dtype=np.float32)
    ref = _roi_align(half, boxes, 8, 0)
    assert (ref == 0.5).sum() >= 16
    np.testing.assert_array_equal(crop_resize(half, boxes, 8), ref >= 0.5)
    np.testing.assert_array_equal(crop_resize(half, boxes, 8, threshold=0.75), ref >= 0.75)


def test_adaptive_parallel_kernel_on_many_runs_per_line():
    """A batch big enough for the parallel kernel, noisy masks (many runs a line), C-order (row lines)."""
    rng = np.random.default_rng(3)
    masks = rng.random((6, 150, 330)) > 0.6
    masks[:, 20:120, 40:300] |= True
    boxes = np.array([[0, 0, 330, 150], [-5, 10, 300, 140], [20, -3, 310, 149], [3.3, 2.2, 290.7, 130.1],
                      [0, 0, 129, 150], [100, 5, 331, 151]], dtype=np.float32)
    ref = _roi_align(masks, boxes, 128, 0)
    np.testing.assert_array_equal(crop_resize(masks, boxes, 128), ref >= 0.5)


def test_crop_resize_dtypes_and_torch_input():
    rng = np.random.default_rng(1)
    masks = _random_masks(rng, 5, 20, 30)
    boxes = _random_boxes(rng, 5, 20, 30, outside=0)
    ref = crop_resize(masks, boxes, 16, threshold=None)
    for variant in (masks.astype(np.uint8), masks.astype(np.float64), masks.astype(np.int32)):
        np.testing.assert_allclose(crop_resize(variant, boxes, 16, threshold=None), ref, atol=1e-6)
    out = crop_resize(torch.from_numpy(masks), torch.from_numpy(boxes), 16)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), ref >= 0.5)


def test_crop_resize_degenerate_and_empty():
    masks = np.ones((3, 10, 10), dtype=bool)
    boxes = np.array([[2.0, 2.0, 2.0, 8.0], [5.0, 1.0, 9.0, 1.0], [6.0, 6.0, 3.0, 9.0]])
    assert not crop_resize(masks, boxes, 8).any()
    assert not crop_resize(masks, boxes, 8, threshold=None).any()
    # a box far outside the image samples zeros
    assert not crop_resize(masks[:1], np.array([[20.0, 20.0, 30.0, 30.0]]), 8).any()
    empty = crop_resize(np.zeros((0, 10, 10), bool), np.zeros((0, 4)), 5)
    assert empty.shape == (0, 5, 5) and empty.dtype == np.bool_
    assert crop_resize(np.zeros((0, 10, 10), bool), np.zeros((0, 4)), 5, threshold=None).dtype == np.float32


@pytest.mark.parametrize(
    "masks, boxes, size, match",
    [
        (np.zeros((10, 10)), np.zeros((1, 4)), 4, "masks\\[None\\]"),
        (np.zeros((2, 10, 10)), np.zeros((3, 4)), 4, "batch size"),
        (np.zeros((2, 10, 10)), np.zeros((2, 5)), 4, "shape \\(B, 4\\)"),
        (np.zeros((1, 10, 10)), np.array([[0, 0, np.nan, 3]]), 4, "NaN or infinite"),
        (np.zeros((1, 10, 10)), np.zeros((1, 4)), 0, "size must be a positive integer"),
        (np.zeros((1, 10, 10)), np.zeros((1, 4)), 2.5, "size must be a positive integer"),
    ],
)
def test_crop_resize_errors(masks, boxes, size, match):
    with pytest.raises(ValueError, match=match):
        crop_resize(masks, boxes, size)


def _random_paste_inputs(rng, b, n, h, w):
    soft = rng.random((b, n, n)).astype(np.float32)
    x0 = rng.uniform(-5, w - 2, b)
    y0 = rng.uniform(-5, h - 2, b)
    boxes = np.stack([x0, y0, x0 + rng.uniform(0.3, w / 2, b), y0 + rng.uniform(0.3, h / 2, b)], 1)
    return soft, boxes.astype(np.float32)


def test_paste_numpy_matches_torch_and_grid_sample():
    rng = np.random.default_rng(2)
    h, w = 41, 57
    soft, boxes = _random_paste_inputs(rng, 30, 12, h, w)
    boxes[0] = [3.0, 4.0, 3.0, 20.0]  # degenerate
    boxes[1] = [10.5, 7.5, 20.5, 9.5]  # centres exactly on the box edges
    ref_np = paste(soft, boxes, (h, w), threshold=None)
    ref_t = paste(torch.from_numpy(soft), torch.from_numpy(boxes), (h, w), threshold=None, impl="torch")
    assert ref_np.dtype == np.float32 and ref_np.shape == (30, h, w)
    assert isinstance(ref_t, torch.Tensor) and ref_t.dtype == torch.float32
    np.testing.assert_allclose(ref_np, ref_t.numpy(), atol=1e-5)
    assert not ref_np[0].any()
    assert ref_np[1, 7:10, 10:21].all() and not ref_np[1, :7].any() and not ref_np[1, :, 21:].any()
    # CPU tensors default to the numba kernel and come back as tensors
    auto = paste(torch.from_numpy(soft), torch.from_numpy(boxes), (h, w))
    assert isinstance(auto, torch.Tensor) and auto.dtype == torch.bool
    np.testing.assert_array_equal(auto.numpy(), paste(soft, boxes, (h, w)))
    hard_t = paste(torch.from_numpy(soft), torch.from_numpy(boxes), (h, w), impl="torch").numpy()
    assert np.mean(hard_t != (ref_np >= 0.5)) < 1e-4

    # independent reference: grid_sample(align_corners=False, border) inside each box
    f = torch.nn.functional
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    for i in range(2, 30):
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        gx = 2 * (xs - x0) / (x1 - x0) - 1
        gy = 2 * (ys - y0) / (y1 - y0) - 1
        grid = torch.stack([gx, gy], -1)[None].float()
        val = f.grid_sample(torch.from_numpy(soft[i])[None, None], grid, mode="bilinear",
                            padding_mode="border", align_corners=False)[0, 0]
        inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        np.testing.assert_allclose(ref_np[i], (val * inside).numpy(), atol=1e-4)


def test_paste_torch_is_differentiable():
    soft = torch.rand(3, 8, 8, requires_grad=True)
    boxes = torch.tensor([[1.0, 1.0, 9.0, 7.0], [0.0, 0.0, 4.0, 4.0], [2.0, 3.0, 2.0, 5.0]])
    out = paste(soft, boxes, (10, 12), threshold=None)
    out.sum().backward()
    assert soft.grad is not None and soft.grad[0].abs().sum() > 0 and soft.grad[2].abs().sum() == 0


def test_crop_resize_then_paste_round_trip():
    h, w = 120, 160
    masks = np.zeros((3, h, w), dtype=bool)
    boxes = np.array([[20.0, 30.0, 90.0, 70.0], [5.3, 7.7, 150.2, 110.9], [60.0, 10.0, 75.0, 100.0]])
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, int(np.ceil(y0 - 0.5)) : int(np.floor(y1 - 0.5)) + 1,
              int(np.ceil(x0 - 0.5)) : int(np.floor(x1 - 0.5)) + 1] = True
    for n in (28, 128):
        small = crop_resize(masks, boxes, n, threshold=None)
        back = paste(small, boxes, (h, w))
        inter = (back & masks).sum((1, 2))
        union = (back | masks).sum((1, 2))
        assert np.all(inter / union > 0.98), inter / union


def test_paste_empty_and_errors():
    out = paste(np.zeros((0, 8, 8), np.float32), np.zeros((0, 4)), (5, 6))
    assert out.shape == (0, 5, 6) and out.dtype == np.bool_
    out_t = paste(torch.zeros(0, 8, 8), torch.zeros(0, 4), (5, 6), impl="torch")
    assert tuple(out_t.shape) == (0, 5, 6)
    with pytest.raises(ValueError, match="batch size"):
        paste(np.zeros((2, 8, 8)), np.zeros((1, 4)), (5, 6))
    with pytest.raises(ValueError, match="image_size"):
        paste(np.zeros((1, 8, 8)), np.zeros((1, 4)), (5,))
    with pytest.raises(ValueError, match="NaN or infinite"):
        paste(np.zeros((1, 8, 8)), np.array([[0, 0, np.inf, 1]]), (5, 6))
    with pytest.raises(ValueError, match="masks\\[None\\]"):
        paste(np.zeros((8, 8)), np.zeros((1, 4)), (5, 6))
    with pytest.raises(ValueError, match="impl"):
        paste(np.zeros((1, 8, 8)), np.zeros((1, 4)), (5, 6), impl="torch")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_kernels_work_in_a_forked_child():
    """GNU OpenMP kills a forked child's first parallel region; forked children must go serial."""
    import os

    masks = np.ones((8, 64, 64), dtype=bool)
    boxes = np.tile([[4.0, 4.0, 60.0, 60.0]], (8, 1))
    soft = np.full((50, 28, 28), 0.9, dtype=np.float32)
    pboxes = np.tile([[1.0, 1.0, 300.0, 200.0]], (50, 1))
    expected = (crop_resize(masks, boxes, 128).sum(), paste(soft, pboxes, (240, 320)).sum())  # parallel here
    pid = os.fork()
    if pid == 0:  # child: exit 0 only if both kernels run and agree with the parent
        code = 1
        try:
            got = (crop_resize(masks, boxes, 128).sum(), paste(soft, pboxes, (240, 320)).sum())
            code = 0 if got == expected else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
