"""The synthetic shapes dataset: deterministic, real COCO, loadable by CocoInstances."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import maskcodec
from solq.data import CocoInstances, collate, make_transforms, write_shapes_dataset
from solq.data.synthetic import SHAPE_CLASSES, SplitPaths


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_writes_are_identical_and_seed_matters(tmp_path):
    kwargs = dict(n_images=10, n_val=3, image_size=64, seed=5)
    write_shapes_dataset(tmp_path / "a", **kwargs)
    write_shapes_dataset(tmp_path / "b", **kwargs)
    write_shapes_dataset(tmp_path / "c", **dict(kwargs, seed=6))
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    assert len(a) == 10 + 3 + 2 + 1  # images, two jsons, the manifest
    assert a["images/train/000001.png"] != c["images/train/000001.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temp folders left


def test_layout_and_coco_content(tmp_path):
    paths = write_shapes_dataset(tmp_path / "shapes", n_images=24, n_val=4, image_size=(48, 64), seed=0, n_classes=3)
    assert set(paths) == {"train", "val"} and isinstance(paths["train"], SplitPaths)
    assert paths["train"].image_dir == tmp_path / "shapes" / "images" / "train"
    data = json.loads(paths["train"].ann_file.read_text())
    assert [c["name"] for c in data["categories"]] == list(SHAPE_CLASSES[:3])
    assert len(data["images"]) == 24 and len(list(paths["train"].image_dir.glob("*.png"))) == 24
    assert all((im["height"], im["width"]) == (48, 64) for im in data["images"])
    kinds = {"polygon": 0, "rle": 0}
    for ann in data["annotations"]:
        seg = ann["segmentation"]
        if isinstance(seg, list):
            kinds["polygon"] += 1
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, 48, 64))
        else:
            kinds["rle"] += 1
            rle = {"size": seg["size"], "counts": seg["counts"].encode()}
        assert mask_utils.area(rle) == ann["area"] > 0
        assert np.allclose(mask_utils.toBbox(rle), ann["bbox"])
        if ann["category_id"] == SHAPE_CLASSES.index("ring") + 1:
            assert not isinstance(seg, list)  # rings have holes: RLE
    assert kinds["polygon"] > 0 and kinds["rle"] > 0
    # several objects per image and some overlap (occluded objects are stored as RLE)
    per_image = np.bincount([a["image_id"] for a in data["annotations"]])
    assert per_image.max() >= 2


def test_loads_through_coco_instances(tmp_path):
    paths = write_shapes_dataset(tmp_path / "shapes", n_images=12, n_val=2, image_size=64, seed=1)
    codec = maskcodec.get_codec("dct", mask_size=32, n_components=64)
    ds = CocoInstances(paths["train"].image_dir, paths["train"].ann_file, codec=codec, keep_masks=True,
                       transforms=make_transforms("train", [48, 56, 64], 80))
    assert ds.num_classes == 3 and ds.class_names == ["ellipse", "triangle", "ring"]
    batch = collate([ds[i] for i in range(4)])
    assert batch.images.shape[:2] == (4, 3)
    for t in batch.targets:
        assert t["mask_vectors"].shape == (len(t["labels"]), 64)
    # visible masks never overlap, and each object is visibly painted
    plain = CocoInstances(paths["train"].image_dir, paths["train"].ann_file, keep_masks=True)
    for i in range(len(plain)):
        masks = plain[i][1]["masks"]
        assert masks.sum(0).max() <= 1
        assert (masks.flatten(1).sum(1) >= 16).all()


def test_ring_has_a_hole(tmp_path):
    paths = write_shapes_dataset(tmp_path / "shapes", n_images=30, n_val=0, image_size=96, seed=2, max_objects=1,
                                 empty_fraction=0.0)
    assert set(paths) == {"train"}
    data = json.loads(paths["train"].ann_file.read_text())
    ring = next(a for a in data["annotations"] if a["category_id"] == 3)
    mask = mask_utils.decode({"size": ring["segmentation"]["size"], "counts": ring["segmentation"]["counts"].encode()})
    x, y, w, h = ring["bbox"]
    assert mask[int(y + h / 2), int(x + w / 2)] == 0  # centre of the annulus is background
    assert ring["area"] < 0.8 * np.pi * w * h / 4


def test_image_size_range_and_classes(tmp_path):
    paths = write_shapes_dataset(tmp_path / "s", n_images=16, n_val=0, image_size=((40, 60), (50, 90)), seed=3,
                                 n_classes=6)
    data = json.loads(paths["train"].ann_file.read_text())
    heights = {im["height"] for im in data["images"]}
    widths = {im["width"] for im in data["images"]}
    assert min(heights) >= 40 and max(heights) <= 60 and min(widths) >= 50 and max(widths) <= 90
    assert len(heights) > 1 and len(widths) > 1
    assert len(data["categories"]) == 6


def test_reuse_refuse_and_overwrite(tmp_path):
    out = tmp_path / "shapes"
    write_shapes_dataset(out, n_images=4, n_val=1, image_size=32)
    stamp = (out / "images" / "train" / "000001.png").stat().st_mtime_ns
    write_shapes_dataset(out, n_images=4, n_val=1, image_size=32)  # same request: reused as is
    assert (out / "images" / "train" / "000001.png").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_shapes_dataset(out, n_images=5, n_val=1, image_size=32)
    paths = write_shapes_dataset(out, n_images=5, n_val=1, image_size=32, overwrite=True)
    assert len(json.loads(paths["train"].ann_file.read_text())["images"]) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        write_shapes_dataset(other, n_images=2, image_size=32)
    assert (other / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    write_shapes_dataset(empty, n_images=2, image_size=32)  # an empty folder is fine
    assert (empty / "shapes.json").is_file()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_images=0), "n_images"),
        (dict(n_val=-1), "n_val"),
        (dict(n_classes=7), "n_classes"),
        (dict(image_size=(8, 8)), "image_size"),
        (dict(image_size="big"), "image_size"),
        (dict(max_objects=0), "max_objects"),
    ],
)
def test_bad_parameters(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_shapes_dataset(tmp_path / "x", **{"n_images": 2, **kwargs})
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_two_hundred_images_take_seconds(tmp_path):
    import time

    start = time.perf_counter()
    write_shapes_dataset(tmp_path / "s", n_images=200, n_val=0, image_size=128)
    assert time.perf_counter() - start < 20
