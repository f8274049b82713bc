"""mask_iou against pycocotools; boundary IoU against a hand computation and a brute force."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from maskcodec.coco import annotation_mask, read_instances, sample_annotation_files
from maskcodec.metrics import boundary_iou, mask_boundary, mask_iou, mask_iou_matrix


@pytest.fixture(scope="module")
def real_masks():
    """Full-image masks of the first 12 annotations of the first sample image with at least 6."""
    with open(sample_annotation_files()["val"]) as fh:
        dataset = json.load(fh)
    coco = read_instances(dataset)
    for img_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=False))
        if len(anns) >= 6:
            return np.stack([annotation_mask(coco, a) for a in anns[:12]])
    pytest.skip("no image with 6 annotations in the sample")


def test_mask_iou_matches_pycocotools(real_masks):
    a = real_masks
    b = np.roll(real_masks, 1, axis=0)  # pair each mask with another object of the same image
    b[0] = np.roll(a[0], 3, axis=1)  # and one shifted copy
    ours = mask_iou(a, b)
    rle_a = mask_utils.encode(np.asfortranarray(a.transpose(1, 2, 0).astype(np.uint8)))
    rle_b = mask_utils.encode(np.asfortranarray(b.transpose(1, 2, 0).astype(np.uint8)))
    ref = np.diag(mask_utils.iou(rle_a, rle_b, [0] * len(rle_b)))
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    assert 0 < ours[0] < 1
    np.testing.assert_array_equal(mask_iou(a, a), np.ones(len(a)))
    # pairwise matrix, from arrays and from RLEs
    full = np.asarray(mask_utils.iou(rle_a, rle_b, [0] * len(rle_b)))
    np.testing.assert_allclose(mask_iou_matrix(a, b), full, rtol=1e-6)
    np.testing.assert_allclose(mask_iou_matrix(list(rle_a), list(rle_b)), full)


def test_mask_iou_inputs_and_edge_cases():
    torch = pytest.importorskip("torch")
    a = np.zeros((3, 4, 5), dtype=bool)
    b = np.zeros((3, 4, 5), dtype=bool)
    a[1, :2] = True
    b[1, 1:3] = True
    a[2] = True
    iou = mask_iou(a, b)
    assert iou.dtype == np.float64
    np.testing.assert_allclose(iou, [1.0, 5 / 15, 0.0])  # empty vs empty counts as a match
    np.testing.assert_allclose(mask_iou(a.astype(np.float32) * 0.6, b.astype(np.uint8)), iou)
    np.testing.assert_allclose(mask_iou(a.astype(np.float32) * 0.4, b), [1.0, 0.0, 1.0])  # soft < 0.5 is off
    np.testing.assert_allclose(mask_iou(torch.from_numpy(a), torch.from_numpy(b)), iou)
    assert mask_iou(np.zeros((0, 4, 5)), np.zeros((0, 4, 5))).shape == (0,)
    with pytest.raises(ValueError, match="same shape"):
        mask_iou(a, b[:2])
    with pytest.raises(ValueError, match="mask\\[None\\]"):
        mask_iou(a[0], b[0])
    with pytest.raises(ValueError, match="NaN"):
        mask_iou(np.full((1, 2, 2), np.nan), np.zeros((1, 2, 2)))


def _brute_boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """Pixels of ``mask`` with a background or off-image pixel within chessboard distance d."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            for yy in range(y - d, y + d + 1):
                for xx in range(x - d, x + d + 1):
                    if not (0 <= yy < h and 0 <= xx < w) or not mask[yy, xx]:
                        out[y, x] = True
    return out


def test_boundary_hand_case():
    # 10 x 10 image: diagonal 14.1, so d = max(1, round(0.02 * 14.1)) = 1
    gt = np.zeros((1, 10, 10), dtype=bool)
    gt[0, 2:8, 2:8] = True  # 6 x 6 square: boundary = 36 - 16 interior = 20 pixels
    pred = np.zeros((1, 10, 10), dtype=bool)
    pred[0, 2:8, 3:9] = True  # shifted right by one
    bg = mask_boundary(gt)
    bp = mask_boundary(pred)
    assert bg.sum() == 20 and bp.sum() == 20
    # shared boundary pixels: rows 2 and 7, columns 3..7 (5 each). The vertical edges do not
    # meet: pred's left edge (column 3) is inside gt's interior and gt's right edge (column 7)
    # inside pred's interior. IoU = 10 / (20 + 20 - 10); the plain mask IoU is 30 / 42.
    assert (bg & bp).sum() == 10
    np.testing.assert_allclose(boundary_iou(pred, gt), [10 / 30])
    np.testing.assert_allclose(mask_iou(pred, gt), [30 / 42])
    # a mask touching the image border has a boundary along the border too
    full = np.ones((1, 10, 10), dtype=bool)
    assert mask_boundary(full).sum() == 100 - 64
    # a larger dilation ratio widens the band: d = round(0.2 * 14.14) = 3 turns the square solid
    assert mask_boundary(gt, dilation_ratio=0.2).sum() == 36
    np.testing.assert_allclose(boundary_iou(gt, gt), [1.0])
    np.testing.assert_allclose(boundary_iou(np.zeros_like(gt), np.zeros_like(gt)), [1.0])
    np.testing.assert_allclose(boundary_iou(gt, np.zeros_like(gt)), [0.0])


@pytest.mark.parametrize("ratio", [0.02, 0.08])
def test_boundary_matches_brute_force(ratio):
    rng = np.random.default_rng(int(ratio * 100))
    h, w = 23, 31
    masks = np.zeros((6, h, w), dtype=bool)
    for i in range(6):
        for _ in range(3):
            y, x = rng.integers(0, h), rng.integers(0, w)
            masks[i, y : y + rng.integers(2, 12), x : x + rng.integers(2, 15)] = True
    masks[5] |= rng.random((h, w)) > 0.7
    d = max(1, round(ratio * math.hypot(h, w)))
    expected = np.stack([_brute_boundary(m, d) for m in masks])
    np.testing.assert_array_equal(mask_boundary(masks, dilation_ratio=ratio), expected)
    other = np.roll(masks, 2, axis=2)
    eb = np.stack([_brute_boundary(m, d) for m in other])
    inter = (expected & eb).sum((1, 2))
    union = (expected | eb).sum((1, 2))
    want = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    np.testing.assert_allclose(boundary_iou(masks, other, dilation_ratio=ratio), want)


def test_boundary_iou_real_masks_is_stricter(real_masks):
    shifted = np.roll(real_masks, 2, axis=2)
    miou = mask_iou(real_masks, shifted)
    biou = boundary_iou(real_masks, shifted)
    assert biou.shape == miou.shape
    assert np.all(biou <= miou + 1e-12)  # a 2-pixel shift hurts the boundary more than the area
    np.testing.assert_allclose(boundary_iou(real_masks, real_masks), 1.0)
