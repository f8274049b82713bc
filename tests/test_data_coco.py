"""CocoInstances on the real COCO subsets in shared/data and on broken inputs made in a tmp dir."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision.ops import box_convert

import maskcodec
from maskcodec.geometry import paste
from solq.data import Batch, CocoInstances, collate, load_rgb, make_transforms
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


def check_contract(image: torch.Tensor, target: dict, n_classes: int, n_k: int | None) -> None:
    """Assert the solq per-sample contract (HELPERS.md)."""
    assert image.dtype == torch.float32 and image.dim() == 3 and image.shape[0] == 3
    assert type(image) is torch.Tensor and image.is_contiguous()  # plain tensor, not a tv_tensor
    h, w = image.shape[1:]
    n = target["labels"].shape[0]
    assert target["labels"].dtype == torch.int64 and target["labels"].shape == (n,)
    if n:
        assert 0 <= int(target["labels"].min()) and int(target["labels"].max()) < n_classes
    boxes = target["boxes"]
    assert boxes.dtype == torch.float32 and boxes.shape == (n, 4)
    if n:
        xyxy = box_convert(boxes, "cxcywh", "xyxy")
        assert (boxes[:, 2:] > 0).all()
        assert xyxy.min() >= -1e-4 and xyxy.max() <= 1 + 1e-4
    if n_k is None:
        assert "mask_vectors" not in target
    else:
        assert target["mask_vectors"].dtype == torch.float32 and target["mask_vectors"].shape == (n, n_k)
        assert torch.isfinite(target["mask_vectors"]).all()
    assert isinstance(target["image_id"], int)
    assert target["orig_size"].dtype == torch.int64 and target["orig_size"].shape == (2,)
    assert target["size"].dtype == torch.int64 and target["size"].tolist() == [h, w]
    if "masks" in target:
        assert target["masks"].dtype == torch.bool and target["masks"].shape == (n, h, w)


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


# ----------------------------------------------------------------------------------- bad inputs
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
