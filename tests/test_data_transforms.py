"""Transforms keep image, boxes and masks together; target encoding; batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms import v2

import maskcodec
from maskcodec.geometry import crop_resize
from solq.data import Batch, CocoInstances, RandomSizeCrop, build_target, collate, make_transforms, normalize_boxes
from solq.data.transforms import IMAGENET_MEAN, IMAGENET_STD, finalize

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COLOUR = torch.tensor([250, 20, 120], dtype=torch.uint8)


def scene(h: int = 120, w: int = 200):
    """A dark image with one coloured rectangle: (image, target) ready for the v2 transforms."""
    image = torch.full((3, h, w), 30, dtype=torch.uint8)
    x0, y0, x1, y1 = 20, 30, 70, 90
    image[:, y0:y1, x0:x1] = COLOUR[:, None, None]
    mask = torch.zeros((1, h, w), dtype=torch.uint8)
    mask[:, y0:y1, x0:x1] = 1
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32),
                                          format="XYXY", canvas_size=(h, w)),
        "labels": torch.tensor([2]),
        "masks": tv_tensors.Mask(mask),
    }
    return tv_tensors.Image(image), target


def denormalize(image: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (image * std + mean) * 255


def test_flip_moves_box_mask_and_pixels():
    image, target = scene()
    out, t = v2.Compose([v2.RandomHorizontalFlip(p=1.0), finalize()])(image, target)
    assert t["boxes"].tolist() == [[200 - 70, 30, 200 - 20, 90]]
    ys, xs = torch.nonzero(t["masks"][0], as_tuple=True)
    assert (xs.min().item(), xs.max().item() + 1) == (130, 180)
    pixels = denormalize(out)
    assert torch.allclose(pixels[:, 60, 150], COLOUR.float(), atol=1.0)
    assert torch.allclose(pixels[:, 60, 40], torch.full((3,), 30.0), atol=1.0)


@pytest.mark.parametrize("seed", range(12))
def test_train_pipeline_keeps_image_boxes_and_masks_consistent(seed):
    torch.manual_seed(seed)
    transforms = make_transforms("train", scales=[96, 112, 128], max_size=160)
    image, target = scene()
    out, t = transforms(image, target)
    assert out.dtype == torch.float32
    h, w = out.shape[1:]
    assert max(h, w) <= 160
    assert len(t["boxes"]) == len(t["labels"]) == len(t["masks"])
    if len(t["boxes"]) == 0:  # cropped away: everything dropped together
        return
    assert t["labels"].tolist() == [2]
    ys, xs = torch.nonzero(t["masks"][0], as_tuple=True)
    mask_box = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    assert torch.allclose(t["boxes"][0].as_subclass(torch.Tensor), mask_box, atol=1.0)
    pixels = denormalize(out)
    inside = pixels[:, t["masks"][0].bool()]
    assert (inside - COLOUR.float()[:, None]).abs().mean() < 12  # bilinear edges blur a few pixels


def test_train_sizes_follow_scales_and_cap():
    image, target = scene(300, 500)
    transforms = make_transforms("train", scales=[96, 112, 128], max_size=200, crop=False)
    seen = set()
    for seed in range(10):
        torch.manual_seed(seed)
        out, _ = transforms(image, target)
        h, w = out.shape[1:]
        assert w <= 200 and (h in (96, 112, 128) or w == 200)
        seen.add(h)
    assert len(seen) >= 2  # multi-scale


def test_val_resize_is_deterministic():
    image, target = scene(300, 500)
    transforms = make_transforms("val", scales=[96, 112, 128], max_size=400)
    out1, t1 = transforms(image, target)
    out2, t2 = transforms(image, target)
    assert out1.shape == (3, 128, 213) and torch.equal(out1, out2)
    assert torch.allclose(t1["boxes"], t2["boxes"])
    capped, _ = make_transforms("val", scales=[128], max_size=160)(image, target)
    assert capped.shape == (3, 96, 160)


def test_random_size_crop_bounds_and_defaults():
    crop = RandomSizeCrop(30, 60)
    image, target = scene(100, 50)
    for seed in range(10):
        torch.manual_seed(seed)
        out, t = crop(image, target)
        h, w = out.shape[1:]
        assert 30 <= h <= 60 and 30 <= w <= 50
    tiny, _ = crop(*scene(20, 25))
    assert tiny.shape[1:] == (20, 25)  # never larger than the image
    with pytest.raises(ValueError, match="min_size <= max_size"):
        RandomSizeCrop(50, 10)
    # tiny configs get DETR's crop scaled by max(scales) / 800
    transforms = make_transforms("train", scales=[96, 112, 128], max_size=160)
    crops = [m for m in _modules(transforms) if isinstance(m, RandomSizeCrop)]
    assert [(c.min_size, c.max_size) for c in crops] == [(61, 96)]


def _modules(t):
    yield t
    for child in getattr(t, "transforms", []):
        yield from _modules(child)


def test_make_transforms_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        make_transforms("training", scales=[128], max_size=160)
    with pytest.raises(ValueError, match="scales"):
        make_transforms("train", scales=[], max_size=160)


def test_sanitize_drops_degenerate_boxes_with_masks_and_labels():
    image, target = scene()
    target["boxes"] = tv_tensors.BoundingBoxes(torch.tensor([[20, 30, 70, 90], [5, 5, 5, 40.0]]),
                                               format="XYXY", canvas_size=(120, 200))
    target["labels"] = torch.tensor([2, 4])
    target["masks"] = tv_tensors.Mask(torch.cat([target["masks"], torch.zeros_like(target["masks"])]))
    _, t = make_transforms("val", scales=[120], max_size=400)(image, target)
    assert t["labels"].tolist() == [2] and t["masks"].shape[0] == 1 and t["boxes"].shape == (1, 4)


def test_fused_normalisation_equals_todtype_plus_normalize():
    image, target = scene(30, 40)
    image = tv_tensors.Image(torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8))
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    out, t = finalize()(image, target)
    assert isinstance(out, tv_tensors.Image) and out.dtype == torch.float32
    assert torch.allclose(out, reference(image), atol=1e-5)
    assert t["masks"].dtype == torch.uint8 and t["labels"].tolist() == [2]  # untouched
    as_float = image.float() / 255
    kept = as_float.clone()
    assert torch.allclose(finalize()(tv_tensors.Image(as_float)), reference(image), atol=1e-5)
    assert torch.equal(as_float, kept)  # not modified in place
    with pytest.raises(ValueError, match="uint8 or float"):
        finalize()(tv_tensors.Image(torch.zeros(3, 2, 2, dtype=torch.int32)))


# ------------------------------------------------------------------------------------ targets
def test_normalize_boxes():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert torch.allclose(normalize_boxes(boxes, (100, 50)), torch.tensor([[0.4, 0.4, 0.4, 0.4]]))
    assert normalize_boxes(torch.zeros((0, 4)), (10, 10)).shape == (0, 4)


def test_build_target_encodes_masks_with_the_codec():
    codec = maskcodec.get_codec("dct", mask_size=32, n_components=64)
    masks = np.zeros((2, 60, 80), dtype=bool)
    masks[0, 10:30, 5:45] = True
    masks[1, 20:50, 40:70] = True
    boxes = torch.tensor([[5, 10, 45, 30], [40, 20, 70, 50]], dtype=torch.float32)
    t = build_target(boxes=boxes, labels=torch.tensor([0, 1]), masks=torch.from_numpy(masks), image_id=7,
                     orig_size=(120, 160), size=(60, 80), codec=codec, keep_masks=True)
    expected = codec.encode(crop_resize(masks, boxes.numpy(), 32, threshold=0.5))
    assert t["mask_vectors"].dtype == torch.float32 and t["mask_vectors"].shape == (2, 64)
    assert np.allclose(t["mask_vectors"].numpy(), expected)
    # a box-filling mask encodes to a full square: DC = N * mean = 32
    assert t["mask_vectors"][0, 0].item() == pytest.approx(32.0, abs=1e-3)
    assert t["masks"].dtype == torch.bool and t["image_id"] == 7
    assert t["orig_size"].tolist() == [120, 160] and t["size"].tolist() == [60, 80]


def test_build_target_with_no_objects():
    codec = maskcodec.get_codec("dct", mask_size=32, n_components=64)
    t = build_target(boxes=torch.zeros((0, 4)), labels=torch.zeros((0,), dtype=torch.int64),
                     masks=torch.zeros((0, 20, 30), dtype=torch.uint8), image_id=1, orig_size=(20, 30),
                     size=(20, 30), codec=codec, keep_masks=True)
    assert t["labels"].shape == (0,) and t["labels"].dtype == torch.int64
    assert t["boxes"].shape == (0, 4) and t["boxes"].dtype == torch.float32
    assert t["mask_vectors"].shape == (0, 64) and t["mask_vectors"].dtype == torch.float32
    assert t["masks"].shape == (0, 20, 30)
    no_codec = build_target(boxes=torch.zeros((0, 4)), labels=[], image_id=1, orig_size=(20, 30), size=(20, 30))
    assert "mask_vectors" not in no_codec and "masks" not in no_codec


def test_build_target_checks_shapes():
    codec = maskcodec.get_codec("dct", mask_size=32, n_components=64)
    with pytest.raises(ValueError, match="masks are needed"):
        build_target(boxes=torch.zeros((1, 4)), labels=[0], image_id=1, orig_size=(5, 5), size=(5, 5), codec=codec)
    with pytest.raises(ValueError, match="masks must be"):
        build_target(boxes=torch.zeros((1, 4)), labels=[0], masks=torch.zeros((1, 4, 5)), image_id=1,
                     orig_size=(5, 5), size=(5, 5), codec=codec)
    with pytest.raises(ValueError, match="labels"):
        build_target(boxes=torch.zeros((2, 4)), labels=[0], image_id=1, orig_size=(5, 5), size=(5, 5))


# ------------------------------------------------------------------------------------ collate
def test_collate_pads_and_marks_padding():
    a = (torch.ones(3, 10, 20), {"labels": torch.tensor([1]), "boxes": torch.rand(1, 4)})
    b = (torch.full((3, 16, 12), 2.0), {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)})
    batch = collate([a, b])
    assert batch.images.shape == (2, 3, 16, 20) and batch.images.dtype == torch.float32
    assert batch.pixel_mask.shape == (2, 16, 20) and batch.pixel_mask.dtype == torch.bool
    assert not batch.pixel_mask[0, :10, :20].any() and batch.pixel_mask[0, 10:].all()
    assert batch.pixel_mask[1, :, 12:].all() and not batch.pixel_mask[1, :, :12].any()
    assert (batch.images[0, :, 10:] == 0).all() and (batch.images[1, :, :, :12] == 2).all()
    assert batch.targets[0] is a[1] and len(batch) == 2
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.images, batch.images)
    assert collate([a, b], size_divisibility=32).images.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="empty"):
        collate([])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_batch_to_cuda():
    batch = collate([(torch.ones(3, 4, 5), {"labels": torch.tensor([1]), "image_id": 3})])
    moved = batch.to("cuda")
    assert moved.images.is_cuda and moved.pixel_mask.is_cuda and moved.targets[0]["labels"].is_cuda
    assert moved.targets[0]["image_id"] == 3


def test_real_image_flip_moves_the_box():
    ann = DATA / "coco128" / "annotations" / "instances_train.json"
    if not ann.is_file():
        pytest.skip("shared data coco128 not found")
    flip = v2.Compose([v2.RandomHorizontalFlip(p=1.0), finalize()])
    plain = CocoInstances(ann.parents[1] / "images" / "train", ann, keep_masks=True)
    flipped = CocoInstances(ann.parents[1] / "images" / "train", ann, keep_masks=True, transforms=flip)
    (img, t), (fimg, ft) = plain[0], flipped[0]
    assert torch.equal(fimg, img.flip(-1))
    assert torch.equal(ft["masks"], t["masks"].flip(-1))
    mirrored = t["boxes"].clone()
    mirrored[:, 0] = 1 - mirrored[:, 0]
    assert torch.allclose(ft["boxes"], mirrored, atol=1e-5)
    assert not torch.allclose(ft["boxes"], t["boxes"])
    # the box still encloses its mask
    h, w = ft["size"].tolist()
    xyxy = box_convert(ft["boxes"], "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
    for box, mask in zip(xyxy, ft["masks"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert xs.min() >= box[0] - 1 and xs.max() + 1 <= box[2] + 1
