"""COCO reading: polygons, RLE, crowd, the box-region fast path, skip reasons and bad files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from maskcodec.coco import (
    MaskBatch,
    SkipReport,
    annotation_mask,
    iter_mask_batches,
    load_masks,
    read_instances,
    reference_masks,
    sample_annotation_files,
)
from maskcodec.geometry import crop_resize

# pycocotools' decode trips numpy 2's __array__(copy=...) deprecation; not our code
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _shared(rel: str) -> Path:
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def _subset(dataset: dict, anns: list[dict]) -> dict:
    """A small COCO dict holding only ``anns`` and their images."""
    ids = {a["image_id"] for a in anns}
    return {
        "images": [im for im in dataset["images"] if im["id"] in ids],
        "annotations": anns,
        "categories": dataset.get("categories", []),
    }


@pytest.fixture(scope="module")
def val_dataset() -> dict:
    with open(sample_annotation_files()["val"]) as fh:
        return json.load(fh)


def test_sample_files_are_shipped():
    files = sample_annotation_files()
    assert set(files) == {"train", "val"}
    for path in files.values():
        assert path.is_file()
    coco = read_instances(files["val"])
    assert len(coco.getImgIds()) == 79 and len(coco.getAnnIds()) == 624


def test_read_instances_is_quiet(capsys, val_dataset):
    read_instances(sample_annotation_files()["val"])
    read_instances(_subset(val_dataset, val_dataset["annotations"][:3]))
    assert capsys.readouterr().out == ""


def test_fast_path_equals_full_image_reference(val_dataset):
    anns = [a for a in val_dataset["annotations"] if not a["iscrowd"]][:20]
    crowd = [a for a in val_dataset["annotations"] if a["iscrowd"]][:2]
    coco = read_instances(_subset(val_dataset, anns + crowd))
    batch = load_masks(coco, 32, include_crowd=True, batch_size=7)
    assert len(batch) == 22 and batch.masks.dtype == np.bool_ and batch.masks.shape == (22, 32, 32)
    ref = reference_masks(coco, coco.loadAnns(batch.ann_ids.tolist()), 32)
    inter = (ref & batch.masks).sum((1, 2))
    union = (ref | batch.masks).sum((1, 2))
    assert (inter / union).mean() >= 0.99
    same = (ref == batch.masks).all(axis=(1, 2))
    # the polygon rasteriser re-implements pycocotools' integer arithmetic: identical in practice
    assert same.mean() >= 0.95, f"{same.sum()} of {len(same)} masks identical"
    assert batch.iscrowd.sum() == 2 and same[batch.iscrowd].all()


def _random_polygon_dataset(seed: int, n: int = 40) -> dict:
    """Star-shaped polygons (1-2 parts, some crossing the image border) on a 37 x 53 image."""
    rng = np.random.default_rng(seed)
    h, w = 37, 53
    anns = []
    for i in range(n):
        parts = []
        for _ in range(rng.integers(1, 3)):
            cx, cy = rng.uniform(-5, w + 5), rng.uniform(-5, h + 5)
            k = rng.integers(3, 12)
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            radii = rng.uniform(0.3, 20, k)
            xs = cx + radii * np.cos(angles)
            ys = cy + radii * np.sin(angles)
            if i % 3 == 0:  # COCO-style coordinates with two decimals (many x.x5 / x.x0 ties)
                xs, ys = np.round(xs, 2), np.round(ys, 2)
            parts.append(np.stack([xs, ys], 1).ravel().tolist())
        allxy = np.concatenate([np.asarray(p).reshape(-1, 2) for p in parts])
        x0, y0 = allxy.min(0)
        x1, y1 = allxy.max(0)
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1.0,
                     "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "segmentation": parts})
    return {"images": [{"id": 1, "height": h, "width": w}], "annotations": anns, "categories": []}


@pytest.mark.parametrize("seed", [0, 1])
def test_polygon_rasteriser_is_bit_identical_to_pycocotools(seed):
    dataset = _random_polygon_dataset(seed)
    coco = read_instances(dataset)
    report = SkipReport()
    batch = load_masks(coco, 24, skipped=report)
    assert set(report.counts) <= {"empty mask"}  # boxes entirely outside the image
    assert len(batch) + report.total == len(dataset["annotations"])
    ref = reference_masks(coco, coco.loadAnns(batch.ann_ids.tolist()), 24)
    np.testing.assert_array_equal(batch.masks, ref)


@pytest.mark.slow
def test_fast_path_on_whole_shared_sets():
    for rel in ("tiny_coco/annotations/instances_val.json", "coco128/annotations/instances_train.json"):
        coco = read_instances(_shared(rel))
        batch = load_masks(coco, 64, include_crowd=True)
        ref = reference_masks(coco, coco.loadAnns(batch.ann_ids.tolist()), 64)
        assert (ref == batch.masks).all(axis=(1, 2)).mean() >= 0.99


def test_mask_batch_fields(val_dataset):
    anns = val_dataset["annotations"][:10]
    coco = read_instances(_subset(val_dataset, anns))
    batch = load_masks(coco, 16)
    by_id = {a["id"]: a for a in anns}
    assert batch.boxes.dtype == np.float64 and batch.boxes.shape == (len(batch), 4)
    for i, ann_id in enumerate(batch.ann_ids):
        ann = by_id[int(ann_id)]
        img = coco.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        np.testing.assert_allclose(batch.boxes[i], [x, y, x + w, y + h])
        assert batch.image_ids[i] == ann["image_id"] and batch.category_ids[i] == ann["category_id"]
        assert batch.areas[i] == pytest.approx(ann["area"])
        assert tuple(batch.image_sizes[i]) == (img["height"], img["width"])
    for name in ("image_ids", "ann_ids", "category_ids", "image_sizes"):
        assert getattr(batch, name).dtype == np.int64
    joined = MaskBatch.concatenate([batch, batch])
    assert len(joined) == 2 * len(batch)
    assert len(MaskBatch.concatenate([], mask_size=16)) == 0


def test_streaming_batches_and_limits(val_dataset):
    coco = read_instances(val_dataset)
    batches = list(iter_mask_batches(coco, 8, batch_size=50, max_masks=120))
    assert sum(len(b) for b in batches) == 120
    assert all(len(b) <= 50 for b in batches)
    one_image = val_dataset["images"][0]["id"]
    batch = load_masks(coco, 8, image_ids=[one_image])
    assert len(batch) > 0 and set(batch.image_ids.tolist()) == {one_image}
    assert len(load_masks(coco, 8, max_masks=0)) == 0


def test_crowd_rle_in_and_out():
    path = _shared("coco128/annotations/instances_train.json")
    coco = read_instances(path)
    crowd_ids = [a["id"] for a in coco.dataset["annotations"] if a["iscrowd"]]
    images = sorted({coco.anns[i]["image_id"] for i in crowd_ids})[:2]
    report = SkipReport()
    without = load_masks(coco, 24, image_ids=images, skipped=report)
    with_crowd = load_masks(coco, 24, image_ids=images, include_crowd=True)
    n_crowd = sum(coco.anns[i]["image_id"] in images for i in crowd_ids)
    assert n_crowd > 0
    assert report.counts == {"crowd": n_crowd}
    assert not without.iscrowd.any() and with_crowd.iscrowd.sum() == n_crowd
    assert len(with_crowd) == len(without) + n_crowd
    # crowd RLE (uncompressed counts) decoded on the box region equals the full-image decode
    crowd_anns = coco.loadAnns(with_crowd.ann_ids[with_crowd.iscrowd].tolist())
    np.testing.assert_array_equal(with_crowd.masks[with_crowd.iscrowd], reference_masks(coco, crowd_anns, 24))


def test_compressed_rle_and_polygon_rle_conversion(val_dataset):
    anns = copy.deepcopy([a for a in val_dataset["annotations"] if not a["iscrowd"]][:6])
    crowd = copy.deepcopy([a for a in val_dataset["annotations"] if a["iscrowd"]][:1])
    dataset = _subset(val_dataset, anns + crowd)
    imgs = {im["id"]: im for im in dataset["images"]}
    polygon_batch = load_masks(read_instances(copy.deepcopy(dataset)), 20, include_crowd=True)
    for ann in dataset["annotations"]:  # rewrite every mask as compressed RLE (string counts)
        im = imgs[ann["image_id"]]
        segm = ann["segmentation"]
        if isinstance(segm, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, im["height"], im["width"]))
        else:
            rle = mask_utils.frPyObjects(segm, im["height"], im["width"])
        ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    rle_batch = load_masks(read_instances(dataset), 20, include_crowd=True)
    np.testing.assert_array_equal(rle_batch.ann_ids, polygon_batch.ann_ids)
    np.testing.assert_array_equal(rle_batch.masks, polygon_batch.masks)


def _tiny_dataset() -> dict:
    return {
        "images": [{"id": 1, "height": 20, "width": 30, "file_name": "a.jpg"}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 50.0,
             "bbox": [2, 3, 10, 5], "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]},
            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 0.0,
             "bbox": [2, 3, 10, 5], "segmentation": [[2, 3, 12, 3]]},
            {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 0.0,
             "bbox": [2, 3, 0, 5], "segmentation": [[2, 3, 2, 3, 2, 8, 2, 8]]},
            {"id": 13, "image_id": 99, "category_id": 1, "iscrowd": 0, "area": 50.0,
             "bbox": [2, 3, 10, 5], "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]},
            {"id": 14, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1.0,
             "bbox": [40, 30, 5, 5], "segmentation": [[40, 30, 45, 30, 45, 35, 40, 35]]},
            {"id": 15, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1.0,
             "bbox": [1, 1, 8, 8], "segmentation": []},
            {"id": 16, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 6.0,
             "bbox": [0, 0, 1, 6], "segmentation": {"size": [20, 30], "counts": [0, 6, 594]}},
            {"id": 17, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 6.0,
             "bbox": [0, 0, 1, 6], "segmentation": {"size": [10, 30], "counts": [0, 6, 294]}},
            {"id": 18, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 50.0,
             "bbox": [2, 3, 10, 5], "segmentation": [[2, 3, float("nan"), 3, 12, 8, 2, 8]]},
            {"id": 19, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 50.0,
             "bbox": [2, 3, 10, 5], "segmentation": [[2, 3, "x", 3, 12, 8, 2, 8]]},
            {"id": 20, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 50.0,
             "bbox": [2, 3, float("inf"), 5], "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]},
        ],
    }


def test_skip_reasons():
    report = SkipReport()
    batch = load_masks(_tiny_dataset(), 8, include_crowd=True, skipped=report)
    assert batch.ann_ids.tolist() == [10, 16]
    assert report.counts == {
        "polygon with fewer than 3 points": 2,
        "zero-area box": 1,
        "unknown image": 1,
        "empty mask": 1,
        "RLE size differs from image size": 1,
        "unreadable segmentation": 2,
        "missing or non-finite box": 1,
    }
    assert report.total == 9
    assert (13, "unknown image") in report.examples
    assert report.summary().startswith("skipped 9 annotations: polygon with fewer than 3 points 2")
    assert batch.masks[0].all()  # the rectangle fills its own box
    coco = read_instances(_tiny_dataset())
    np.testing.assert_array_equal(batch.masks[1], reference_masks(coco, [coco.anns[16]], 8)[0])
    assert batch.masks[1].sum() > 40  # bilinear sampling thins only the far corner
    assert SkipReport().summary() == "skipped 0 annotations"


def test_annotation_mask_matches_pycocotools(val_dataset):
    coco = read_instances(_subset(val_dataset, val_dataset["annotations"][:3]))
    for ann in coco.dataset["annotations"]:
        mask = annotation_mask(coco, ann)
        assert mask.dtype == np.bool_
        np.testing.assert_array_equal(mask, coco.annToMask(ann) > 0)
        x, y, w, h = ann["bbox"]
        small = crop_resize(mask[None], np.array([[x, y, x + w, y + h]]), 8)
        assert small.any()


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_instances(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_instances(bad)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_instances(binary)
    no_anns = tmp_path / "no_anns.json"
    no_anns.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(ValueError, match="'annotations'"):
        read_instances(no_anns)
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    with pytest.raises(ValueError, match="not a COCO instances file"):
        read_instances(results)
    no_segm = _tiny_dataset()
    del no_segm["annotations"][0]["segmentation"]
    with pytest.raises(ValueError, match="segmentation"):
        read_instances(no_segm)
    with pytest.raises(ValueError, match="directory"):
        read_instances(tmp_path)
    with pytest.raises(ValueError, match="mask_size"):
        next(iter_mask_batches(_tiny_dataset(), 0))


def _roi_align_reference(coco, anns, boxes, size, sampling_ratio):
    """annToMask (full image) -> torchvision roi_align(aligned=True) on float32 -> >= 0.5."""
    torch = pytest.importorskip("torch")
    roi_align = pytest.importorskip("torchvision.ops").roi_align
    out = []
    for ann, box in zip(anns, boxes):
        full = torch.from_numpy(annotation_mask(coco, ann))[None, None].float()
        rois = torch.cat([torch.zeros(1, 1), torch.from_numpy(box[None]).float()], 1)
        out.append(roi_align(full, rois, size, 1.0, sampling_ratio, True)[0, 0].numpy() >= 0.5)
    return np.stack(out)


@pytest.mark.parametrize("size", [16, 128])
def test_adaptive_fast_path_equals_roi_align_on_real_masks(val_dataset, size):
    """Polygons and crowd RLEs of the built-in sample: boxes smaller and larger than N, every pixel equal."""
    anns = [a for a in val_dataset["annotations"] if not a["iscrowd"]][:40]
    crowd = [a for a in val_dataset["annotations"] if a["iscrowd"]][:2]
    coco = read_instances(_subset(val_dataset, anns + crowd))
    batch = load_masks(coco, size, include_crowd=True, batch_size=16)
    assert len(batch) == 42
    ref = _roi_align_reference(coco, coco.loadAnns(batch.ann_ids.tolist()), batch.boxes, size, 0)
    np.testing.assert_array_equal(batch.masks, ref)
    sides = np.maximum(batch.boxes[:, 2] - batch.boxes[:, 0], batch.boxes[:, 3] - batch.boxes[:, 1])
    assert (sides > size).any() and (sides < size).any()
    one = load_masks(coco, size, include_crowd=True, sampling_ratio=1)
    np.testing.assert_array_equal(one.masks, reference_masks(coco, coco.loadAnns(one.ann_ids.tolist()), size, 1))
    with pytest.raises(ValueError, match="sampling_ratio"):
        load_masks(coco, size, sampling_ratio=3)


def test_load_masks_from_several_files_reads_each_image_once():
    files = sample_annotation_files()
    train, val = load_masks(files["train"], 32), load_masks(files["val"], 32)
    both = load_masks([files["train"], files["val"]], 32)
    assert len(both) == len(train) + len(val)
    np.testing.assert_array_equal(both.masks, np.concatenate([train.masks, val.masks]))
    assert len(set(both.ann_ids.tolist())) == len(both)  # ids unique across the files
    skipped = SkipReport()
    twice = load_masks([files["train"], files["train"]], 32, skipped=skipped)
    np.testing.assert_array_equal(twice.masks, train.masks)
    assert skipped.counts["image already read from an earlier file"] == len(read_instances(files["train"]).dataset["annotations"])
