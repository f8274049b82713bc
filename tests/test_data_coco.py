"""CocoInstances on the real COCO subsets in shared/data (broken inputs: test_data_coco_bad_input.py)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from sample_contract import check_contract
from torchvision.ops import box_convert

import maskcodec
from maskcodec.geometry import paste
from solq.data import Batch, CocoInstances, collate, make_transforms
from solq.data.transforms import IMAGENET_MEAN, IMAGENET_STD

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# (image_dir, ann_file) relative to shared/data
REAL_SETS = {
    "coco128": ("coco128/images/train", "coco128/annotations/instances_train.json"),
    "tiny_coco": ("tiny_coco/images/val", "tiny_coco/annotations/instances_val.json"),
    "coco_mini": ("coco_mini/images/val", "coco_mini/annotations/instances_val.json"),
    "balloon": ("balloon/val", "balloon/annotations/instances_val.json"),
}


def real_set(name: str, **kwargs) -> CocoInstances:
    image_dir, ann_file = REAL_SETS[name]
    if not (DATA / ann_file).is_file():
        pytest.skip(f"shared data {name} not found under {DATA}")
    return CocoInstances(DATA / image_dir, DATA / ann_file, **kwargs)


@pytest.fixture(scope="module")
def codec():
    return maskcodec.get_codec("dct", mask_size=32, n_components=64)


def small_val():
    return make_transforms("val", scales=[128], max_size=160)


# ------------------------------------------------------------------------------- real data sets
@pytest.mark.parametrize("name", sorted(REAL_SETS))
def test_real_sets_give_contract_targets(name, codec):
    ds = real_set(name, transforms=small_val(), codec=codec)
    assert len(ds) == ds.stats["images"] > 0
    assert ds.skipped == {}
    assert ds.category_ids == sorted(ds.category_ids)
    assert all(ds.category_ids[ds.label_of[c]] == c for c in ds.category_ids)
    n_samples = 1 if name == "balloon" else 3  # balloon images are ~2048 px JPEGs
    samples = [ds[i] for i in range(n_samples)]
    for image, target in samples:
        check_contract(image, target, ds.num_classes, codec.n_components)
        assert max(target["size"].tolist()) <= 160
        info = ds.image_info(ds.image_ids.index(target["image_id"]))
        assert target["orig_size"].tolist() == [info["height"], info["width"]]
    batch = collate(samples)
    assert isinstance(batch, Batch) and batch.images.shape[0] == n_samples


def test_train_transforms_on_real_images(codec):
    torch.manual_seed(0)
    ds = real_set("coco128", transforms=make_transforms("train", [96, 112, 128], 160), codec=codec, keep_masks=True)
    for index in range(6):
        image, target = ds[index]
        check_contract(image, target, ds.num_classes, codec.n_components)
        h, w = target["size"].tolist()
        xyxy = box_convert(target["boxes"], "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
        for box, mask in zip(xyxy, target["masks"]):
            if mask.any():  # each mask lies inside its (clipped) box, up to resampling
                ys, xs = torch.nonzero(mask, as_tuple=True)
                assert xs.min() >= box[0] - 1.5 and xs.max() + 1 <= box[2] + 1.5
                assert ys.min() >= box[1] - 1.5 and ys.max() + 1 <= box[3] + 1.5


def test_labels_map_back_to_category_ids():
    ds = real_set("coco128")
    raw = json.loads((DATA / REAL_SETS["coco128"][1]).read_text())
    index = 0
    image_id = ds.image_ids[index]
    expected = sorted(a["category_id"] for a in raw["annotations"] if a["image_id"] == image_id and not a["iscrowd"])
    _, target = ds[index]
    assert sorted(ds.category_ids[int(label)] for label in target["labels"]) == expected
    assert ds.num_classes == len(raw["categories"]) == 80
    assert ds.class_names[ds.label_of[1]] == "person"


def test_grayscale_coco128_image_becomes_rgb():
    ds = real_set("coco128")
    path = ds.image_dir / "000000000086.jpg"
    with Image.open(path) as im:
        assert im.mode == "L"
        size = (im.height, im.width)
    image, target = ds[ds.image_ids.index(86)]
    assert image.shape == (3, *size)
    assert target["orig_size"].tolist() == list(size)
    # grey stays grey: after undoing the normalisation the three channels agree
    rgb = image * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    assert torch.allclose(rgb[0], rgb[1], atol=1e-5) and torch.allclose(rgb[1], rgb[2], atol=1e-5)


def test_crowd_regions_are_not_targets():
    raw = json.loads((DATA / REAL_SETS["coco128"][1]).read_text()) if (DATA / REAL_SETS["coco128"][1]).is_file() else None
    ds = real_set("coco128")
    crowd_image = next(a["image_id"] for a in raw["annotations"] if a["iscrowd"])
    anns = [a for a in raw["annotations"] if a["image_id"] == crowd_image]
    n_crowd = sum(a["iscrowd"] for a in anns)
    index = ds.image_ids.index(crowd_image)
    _, target = ds[index]
    assert target["labels"].shape[0] == len(anns) - n_crowd
    with_crowd = real_set("coco128", include_crowd=True)
    assert with_crowd[index][1]["labels"].shape[0] == len(anns)
    assert ds.stats["crowd"] == 10


def test_images_without_annotations_are_kept_as_negatives(codec):
    ds = real_set("coco128", transforms=small_val(), codec=codec, keep_masks=True)
    assert ds.stats["negatives"] == 2
    raw = json.loads((DATA / REAL_SETS["coco128"][1]).read_text())
    annotated = {a["image_id"] for a in raw["annotations"]}
    empty = [i for i, image_id in enumerate(ds.image_ids) if image_id not in annotated]
    assert len(empty) == 2
    image, target = ds[empty[0]]
    check_contract(image, target, ds.num_classes, codec.n_components)
    assert target["labels"].shape == (0,) and target["boxes"].shape == (0, 4)
    assert target["mask_vectors"].shape == (0, 64) and target["masks"].shape == (0, *image.shape[1:])
    batch = collate([ds[0], (image, target)])
    assert batch.targets[1]["boxes"].shape == (0, 4)


def test_mask_vectors_decode_back_onto_the_objects(codec):
    ds = real_set("coco128", transforms=make_transforms("val", [256], 400), codec=codec, keep_masks=True)
    ious = []
    for index in range(6):
        _, target = ds[index]
        h, w = target["size"].tolist()
        boxes = box_convert(target["boxes"] * torch.tensor([w, h, w, h]), "cxcywh", "xyxy")
        pasted = paste(codec.decode(target["mask_vectors"]), boxes, (h, w))
        gt = target["masks"]
        inter = (pasted & gt).sum((1, 2)).float()
        union = (pasted | gt).sum((1, 2)).float().clamp(min=1)
        ious += (inter / union).tolist()
    ious = np.array(ious)
    assert len(ious) >= 10
    assert ious.mean() > 0.8 and np.median(ious) > 0.85


def test_masks_match_pycocotools(codec):
    ds = real_set("tiny_coco", keep_masks=True)
    raw = json.loads((DATA / REAL_SETS["tiny_coco"][1]).read_text())
    index = next(i for i, a in enumerate(ds._annotations) if len(a) >= 2)
    _, target = ds[index]
    info = ds.image_info(index)
    anns = [a for a in raw["annotations"] if a["image_id"] == info["id"] and not a["iscrowd"]]
    for mask, ann in zip(target["masks"], anns):
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], info["height"], info["width"]))
        assert np.array_equal(mask.numpy(), mask_utils.decode(rle).astype(bool))
    # transforms=None: no resize, boxes are the json boxes
    x, y, bw, bh = anns[0]["bbox"]
    expected = torch.tensor([(x + bw / 2) / info["width"], (y + bh / 2) / info["height"],
                             bw / info["width"], bh / info["height"]])
    assert torch.allclose(target["boxes"][0], expected, atol=1e-5)


def test_dataset_pickles(codec):
    ds = real_set("coco128", transforms=small_val(), codec=codec)
    ds.coco  # the lazily built COCO index travels too
    clone = pickle.loads(pickle.dumps(ds))
    a, b = ds[1], clone[1]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["mask_vectors"], b[1]["mask_vectors"])
    assert clone.category_ids == ds.category_ids and clone.label_of == ds.label_of


@pytest.mark.slow  # a spawned worker imports torch afresh (5-20 s)
def test_dataset_works_in_spawned_worker_processes(codec):
    ds = real_set("coco128", transforms=small_val(), codec=codec)
    a = ds[1]
    subset = torch.utils.data.Subset(ds, range(4))
    loader = torch.utils.data.DataLoader(subset, batch_size=2, num_workers=1, collate_fn=collate,
                                         multiprocessing_context="spawn", timeout=60)
    batches = list(loader)
    assert len(batches) == 2
    assert [t["image_id"] for b in batches for t in b.targets] == ds.image_ids[:4]
    assert torch.equal(batches[0].targets[1]["mask_vectors"], a[1]["mask_vectors"])


def test_forked_workers_after_main_process_encoding(codec):
    """The engine's situation: targets were encoded in the main process, then workers are forked."""
    from maskcodec.geometry import crop_resize

    ds = real_set("coco128", transforms=small_val(), codec=codec)
    ds[0]
    # a batch big enough for maskcodec's parallel numba kernel (as training-size targets or
    # evaluation's paste would run in this process)
    crop_resize(np.ones((8, 64, 64), dtype=bool), np.tile([[4.0, 4.0, 60.0, 60.0]], (8, 1)), 128)
    from maskcodec.dct_runs import encode_binary

    encode_binary(np.ones((300, 32, 32), dtype=bool), 64)  # the parallel DCT kernel too
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(2)), batch_size=2, num_workers=1,
                                         collate_fn=collate, multiprocessing_context="fork", timeout=60)
    (batch,) = list(loader)
    assert batch.targets[0]["mask_vectors"].shape[1] == 64


def test_coco_property_for_evaluation():
    ds = real_set("tiny_coco")
    coco = ds.coco
    assert sorted(coco.getImgIds()) == ds.image_ids
    assert len(coco.getAnnIds()) == ds.stats["annotations"]
