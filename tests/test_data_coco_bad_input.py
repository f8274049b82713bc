"""CocoInstances on broken inputs made in a tmp dir: image modes, missing or corrupt files, invalid
annotations, degenerate segmentations and boxes, a wrong codec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from sample_contract import check_contract
from torchvision.ops import box_convert

from solq.data import CocoInstances, load_rgb


def _square_polygon(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def make_set(tmp_path: Path, modes=("RGB",), anns=None, categories=None, size=(40, 50)) -> tuple[Path, Path, dict]:
    """A tiny COCO set: one image per mode, one square object per image unless ``anns`` given."""
    h, w = size
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    images = []
    for k, mode in enumerate(modes, start=1):
        name = f"{k:03d}." + {"CMYK": "jpg", "I": "tif", "F": "tif"}.get(mode, "png")
        rgb = np.zeros((h, w, 3), dtype=np.uint8)
        rgb[10:20, 10:30] = (200, 100, 50)
        im = Image.fromarray(rgb)
        if mode == "I;16":
            im = Image.fromarray((np.asarray(im.convert("L")).astype(np.uint16) * 257))
        elif mode != "RGB":
            im = im.convert(mode)
        im.save(image_dir / name)
        images.append({"id": k, "file_name": name, "height": h, "width": w})
    if anns is None:
        anns = [{"id": k, "image_id": k, "category_id": 7, "bbox": [10, 10, 20, 10], "area": 200.0, "iscrowd": 0,
                 "segmentation": _square_polygon(10, 10, 30, 20)} for k in range(1, len(modes) + 1)]
    data = {"images": images, "annotations": anns,
            "categories": categories or [{"id": 7, "name": "thing"}, {"id": 3, "name": "other"}]}
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(data))
    return image_dir, ann_file, data


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "1", "I;16", "I", "F"])
def test_image_modes_are_converted_to_rgb(tmp_path, mode):
    image_dir, ann_file, _ = make_set(tmp_path, modes=[mode])
    ds = CocoInstances(image_dir, ann_file, keep_masks=True)
    image, target = ds[0]
    check_contract(image, target, 2, None)
    assert image.shape == (3, 40, 50)
    rgb = load_rgb(image_dir / ds.image_info(0)["file_name"])
    assert rgb.dtype == np.uint8 and rgb.shape == (40, 50, 3)
    inside, outside = rgb[12:18, 12:28].astype(int), rgb[30:, 35:].astype(int)
    assert inside.mean() > outside.mean() + 20 or mode == "1"  # the object is visible
    if mode in ("L", "LA", "I;16", "I", "F"):
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    if mode == "RGBA":
        assert (inside == np.array([200, 100, 50])).all()
    if mode == "P":  # palette quantisation (with dithering) keeps the colour roughly
        assert np.abs(inside.mean((0, 1)) - np.array([200, 100, 50])).max() <= 25
    assert target["labels"].tolist() == [ds.label_of[7]] == [1]  # ids 3, 7 -> labels 0, 1


def test_missing_image_file(tmp_path):
    image_dir, ann_file, _ = make_set(tmp_path, modes=["RGB", "RGB"])
    (image_dir / "002.png").unlink()
    with pytest.raises(FileNotFoundError) as err:
        CocoInstances(image_dir, ann_file)
    assert "002.png" in str(err.value) and str(image_dir) in str(err.value)
    with pytest.warns(UserWarning, match="missing"):
        ds = CocoInstances(image_dir, ann_file, strict=False)
    assert len(ds) == 1 and ds.skipped == {"missing_images": 1, "annotations_of_missing_images": 1}
    # a file that disappears after construction
    with pytest.warns(UserWarning, match="missing"):
        ds = CocoInstances(image_dir, ann_file, strict=False)
    (image_dir / "001.png").unlink()
    with pytest.raises(FileNotFoundError, match="001.png"):
        ds[0]


def test_missing_dir_or_annotation_file(tmp_path):
    image_dir, ann_file, _ = make_set(tmp_path)
    with pytest.raises(FileNotFoundError, match="image_dir"):
        CocoInstances(tmp_path / "nope", ann_file)
    with pytest.raises(FileNotFoundError, match="annotation file"):
        CocoInstances(image_dir, tmp_path / "nope.json")


def test_corrupt_or_wrong_json(tmp_path):
    image_dir, ann_file, data = make_set(tmp_path)
    text = ann_file.read_text()
    ann_file.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoInstances(image_dir, ann_file)
    ann_file.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoInstances(image_dir, ann_file)
    ann_file.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="'images' list"):
        CocoInstances(image_dir, ann_file)
    ann_file.write_text(json.dumps(dict(data, categories=[])))
    with pytest.raises(ValueError, match="categories"):
        CocoInstances(image_dir, ann_file)
    ann_file.write_text(json.dumps(dict(data, images=data["images"] * 2)))
    with pytest.raises(ValueError, match="duplicate image id 1"):
        CocoInstances(image_dir, ann_file)


@pytest.mark.parametrize(
    "change, message, key",
    [
        ({"image_id": 99}, "1 with unknown image id", "unknown_image_id"),
        ({"category_id": 42}, "1 with unknown category id", "unknown_category_id"),
        ({"bbox": [1, 2, 3]}, "1 with bad bbox", "bad_bbox"),
    ],
)
def test_invalid_annotations_are_reported_with_counts(tmp_path, change, message, key):
    good = {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 10], "iscrowd": 0,
            "segmentation": _square_polygon(10, 10, 30, 20)}
    anns = [good, dict(good, id=2, **change)]
    image_dir, ann_file, _ = make_set(tmp_path, anns=anns)
    with pytest.raises(ValueError, match=message) as err:
        CocoInstances(image_dir, ann_file)
    assert "annotation 2" in str(err.value) and "strict=False" in str(err.value)
    with pytest.warns(UserWarning, match=message):
        ds = CocoInstances(image_dir, ann_file, strict=False)
    assert ds.skipped == {key: 1}
    assert ds[0][1]["labels"].shape == (1,)


def test_unreadable_and_mismatched_images(tmp_path):
    image_dir, ann_file, data = make_set(tmp_path, modes=["RGB", "RGB", "RGB"])
    (image_dir / "001.png").write_bytes(b"this is not an image")
    payload = (image_dir / "002.png").read_bytes()
    (image_dir / "002.png").write_bytes(payload[: len(payload) // 2])  # truncated
    Image.new("RGB", (51, 40)).save(image_dir / "003.png")  # json says 50 wide
    ds = CocoInstances(image_dir, ann_file)
    with pytest.raises(ValueError, match="cannot read image .*001.png"):
        ds[0]
    with pytest.raises(ValueError, match="cannot read image .*002.png"):
        ds[1]
    with pytest.raises(ValueError, match="003.png is 51x40"):
        ds[2]
    with pytest.raises(IndexError):
        ds[3]


def test_rle_and_degenerate_segmentations(tmp_path):
    h, w = 40, 50
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[5:25, 8:20] = 1
    mask[12:18, 12:16] = 0  # a hole only an RLE can hold
    rle = mask_utils.encode(np.asfortranarray(mask))
    compressed = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
    flat = mask.flatten(order="F")
    runs, value, count = [], 0, 0
    for v in flat:
        if v != value:
            runs.append(count)
            value, count = v, 0
        count += 1
    runs.append(count)
    uncompressed = {"size": [h, w], "counts": runs}
    base = {"image_id": 1, "category_id": 3, "bbox": [8, 5, 12, 20], "iscrowd": 0}
    anns = [dict(base, id=1, segmentation=compressed), dict(base, id=2, segmentation=uncompressed),
            dict(base, id=3, segmentation=[[1, 2, 3, 4]]), dict(base, id=4)]
    image_dir, ann_file, _ = make_set(tmp_path, anns=anns)
    ds = CocoInstances(image_dir, ann_file, keep_masks=True)
    assert ds.stats["box_masks"] == 2
    _, target = ds[0]
    masks = target["masks"].numpy()
    assert np.array_equal(masks[0], mask.astype(bool)) and np.array_equal(masks[1], mask.astype(bool))
    box_mask = np.zeros((h, w), dtype=bool)
    box_mask[5:25, 8:20] = True
    assert np.array_equal(masks[2], box_mask) and np.array_equal(masks[3], box_mask)
    # an RLE of the wrong size is caught on access, naming the annotation
    anns[0]["segmentation"] = {"size": [h + 1, w], "counts": compressed["counts"]}
    ann_file.write_text(json.dumps(dict(json.loads(ann_file.read_text()), annotations=anns)))
    with pytest.raises(ValueError, match="annotation 1 .*RLE size"):
        CocoInstances(image_dir, ann_file, keep_masks=True)[0]


def test_boxes_outside_the_image_are_clipped_or_dropped(tmp_path):
    base = {"image_id": 1, "category_id": 7, "iscrowd": 0, "segmentation": _square_polygon(10, 10, 30, 20)}
    anns = [dict(base, id=1, bbox=[-5, 30, 20, 20]), dict(base, id=2, bbox=[60, 10, 5, 5]),
            dict(base, id=3, bbox=[10, 10, 0, 5])]
    image_dir, ann_file, _ = make_set(tmp_path, anns=anns)
    _, target = CocoInstances(image_dir, ann_file)[0]
    assert target["labels"].shape == (1,)
    xyxy = box_convert(target["boxes"], "cxcywh", "xyxy") * torch.tensor([50, 40, 50, 40])
    assert torch.allclose(xyxy[0], torch.tensor([0.0, 30.0, 15.0, 40.0]))


def test_bad_codec_is_rejected(tmp_path):
    image_dir, ann_file, _ = make_set(tmp_path)
    with pytest.raises(ValueError, match="codec"):
        CocoInstances(image_dir, ann_file, codec="dct")
