"""maskcodec.box_rle: box-local paste -> COCO RLE equals paste + pycocotools encode, pixel for pixel."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

import maskcodec
from maskcodec.box_rle import counts_to_rle, decode_rle, paste_rle, rle_from_masks
from maskcodec.geometry import crop_resize, paste

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _reference(soft, boxes, size, threshold=0.5):
    """paste, then pycocotools encode (the reference path)."""
    masks = paste(soft, boxes, size, threshold=threshold)
    masks = masks.numpy() if isinstance(masks, torch.Tensor) else masks
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": list(r["size"]), "counts": r["counts"].decode("ascii")} for r in rles], masks


def _differing_pixels(rles, masks):
    if not rles:
        return 0
    back = mask_util.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rles]).transpose(2, 0, 1)
    return int((back != masks).sum())


def _real_case():
    """Soft masks decoded from real COCO masks and jittered real boxes (some outside the image)."""
    from pycocotools.coco import COCO

    path = DATA / "tiny_coco" / "annotations" / "instances_val.json"
    if not path.exists():
        pytest.skip("needs the shared COCO data")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    codec = maskcodec.get_codec("dct", mask_size=64, n_components=256)
    g = np.random.default_rng(0)
    for img_id in sorted(coco.getImgIds())[:6]:
        info = coco.imgs[img_id]
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False)) if a["area"] > 0]
        if not anns:
            continue
        masks = np.stack([coco.annToMask(a) for a in anns]).astype(bool)
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        soft = codec.decode(codec.encode(crop_resize(masks, xyxy, 64)))
        # "predicted" boxes: the GT boxes moved and scaled by up to 15 %, some pushed over the border
        jitter = g.normal(0, 0.15, xyxy.shape) * np.repeat(xywh[:, 2:], 2, 1)
        pred = (xyxy + jitter).astype(np.float32)
        pred[::3, :2] -= 40.0
        pred[1::4, 2:] += 60.0
        yield soft, pred, (info["height"], info["width"])


def test_paste_rle_equals_paste_then_encode_on_real_masks():
    cases = list(_real_case())
    assert cases
    for soft, boxes, size in cases:
        expected, masks = _reference(soft, boxes, size)
        got = paste_rle(soft, boxes, size)
        assert _differing_pixels(got, masks) == 0
        assert got == expected  # the same counts strings, byte for byte


@pytest.mark.parametrize("size", [(1, 1), (7, 13), (31, 2), (2, 10000), (10000, 3)])
def test_edge_boxes_and_odd_images(size):
    h, w = size
    g = np.random.default_rng(h * 7 + w)
    soft = g.uniform(0, 1, (9, 16, 16)).astype(np.float32)
    boxes = np.array([
        [0, 0, w, h],  # the whole image
        [0.5, 0.5, 1.5, 1.5],  # one pixel
        [1, 1, 1, 5],  # zero width
        [3, 3, 2, 2],  # reversed
        [-50, -50, w + 50, h + 50],  # larger than the image
        [-10, -10, 0.4, 0.4],  # outside, touching no pixel centre
        [w + 1, h + 1, w + 9, h + 9],  # beyond the image
        [0.49, 0.49, 0.51, 0.51],  # tiny box around a pixel centre
        [w / 3, h / 3, w / 2 + 0.7, h / 2 + 0.3],
    ], dtype=np.float32)
    expected, masks = _reference(soft, boxes, size)
    got = paste_rle(soft, boxes, size)
    assert _differing_pixels(got, masks) == 0
    assert got == expected


def test_values_exactly_at_the_threshold_and_long_columns():
    """Soft values on a coarse grid (many pixels land exactly on 0.5, so ``>=`` decides them), boxes
    taller and wider than the mask (upsampling), narrower (downsampling), columns of every length
    modulo 8 (the run scan reads 8 pixels at a time) and stripes that change value inside each word."""
    g = np.random.default_rng(5)
    soft = (g.integers(0, 5, (12, 16, 16)) / 4).astype(np.float32)  # 0, 0.25, 0.5, 0.75, 1
    soft[0] = 0.5
    soft[1, ::2] = 1.0  # horizontal stripes: a change every row
    soft[1, 1::2] = 0.0
    boxes = np.array([[0.0, 0.0, 70.0, 300.0], [1.0, 2.0, 9.0, 299.0]] +
                     [[m * 3.0, 1.0 + m, m * 3.0 + 4.0 + m, 10.0 + 8 * m + m % 8] for m in range(10)], dtype=np.float32)
    for size in ((300, 70), (97, 41)):
        for t in (0.5, 0.25):
            expected, masks = _reference(soft, boxes, size, threshold=t)
            got = paste_rle(soft, boxes, size, threshold=t)
            assert _differing_pixels(got, masks) == 0
            assert got == expected


def test_threshold_and_torch_inputs():
    g = np.random.default_rng(1)
    soft = g.uniform(0, 1, (5, 8, 8)).astype(np.float32)
    boxes = np.array([[2, 3, 40, 30]] * 5, dtype=np.float32)
    for t in (0.2, 0.5, 0.9):
        expected, _ = _reference(soft, boxes, (33, 45), threshold=t)
        assert paste_rle(torch.from_numpy(soft), torch.from_numpy(boxes), (33, 45), threshold=t) == expected


def test_decode_rle_and_empty_batches():
    codec = maskcodec.get_codec("dct", mask_size=32, n_components=64)
    g = np.random.default_rng(2)
    vectors = codec.encode(g.uniform(0, 1, (4, 32, 32)) > 0.5)
    boxes = np.array([[0, 0, 20, 20], [5, 5, 9, 30], [10, 2, 11, 3], [0, 0, 0, 0]], dtype=np.float32)
    expected, _ = _reference(codec.decode(vectors), boxes, (25, 21))
    assert decode_rle(codec, vectors, boxes, (25, 21)) == expected
    assert paste_rle(np.zeros((0, 8, 8), np.float32), np.zeros((0, 4)), (5, 5)) == []
    assert paste_rle(np.ones((2, 8, 8), np.float32), np.array([[0, 0, 4, 4]] * 2), (0, 7)) == \
        [{"size": [0, 7], "counts": "0"}] * 2 == _reference(np.ones((2, 8, 8), np.float32),
                                                              np.array([[0, 0, 4, 4]] * 2), (0, 7))[0]


def test_bad_input_is_a_clear_error():
    soft = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="NaN or infinite"):
        paste_rle(soft, np.array([[0, 0, np.nan, 4], [0, 0, 4, 4]]), (10, 10))
    with pytest.raises(ValueError, match="one box per mask"):
        paste_rle(soft, np.zeros((3, 4)), (10, 10))
    with pytest.raises(ValueError, match="image_size"):
        paste_rle(soft, np.zeros((2, 4)), (10, -1))
    with pytest.raises(ValueError, match="threshold"):
        paste_rle(soft, np.zeros((2, 4)), (10, 10), threshold=None)
    with pytest.raises(ValueError, match=r"\(B, N, N\)"):
        paste_rle(soft[0], np.zeros((1, 4)), (10, 10))


def test_rle_from_masks_and_counts_to_rle_match_pycocotools():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 13, 17, generator=g) > 0.6
    masks[0] = True
    masks[1] = False
    masks[2, 0, 0] = True
    expected = mask_util.encode(np.asfortranarray(masks.numpy().transpose(1, 2, 0).astype(np.uint8)))
    expected = [{"size": list(r["size"]), "counts": r["counts"].decode()} for r in expected]
    assert rle_from_masks(masks) == expected
    assert rle_from_masks(masks.numpy()) == expected
    assert rle_from_masks(torch.zeros(0, 4, 4, dtype=torch.bool)) == []
    # large counts and negative deltas go through the same 5-bit code as pycocotools' rleToString
    runs = np.array([0, 3, 70000, 1, 2**31, 5], dtype=np.int64)
    rle = counts_to_rle(runs, np.array([0, len(runs)]), (1, int(runs.sum())))[0]
    ref = mask_util.frPyObjects({"size": [1, int(runs.sum())], "counts": runs.tolist()}, 1, int(runs.sum()))
    assert rle["counts"] == ref["counts"].decode()


@pytest.mark.gpu
def test_cuda_masks_only_copy_runs():
    soft = torch.rand(4, 16, 16, device="cuda")
    boxes = torch.tensor([[0, 0, 30, 20], [5, 5, 9, 30], [10, 2, 11, 3], [0, 0, 0, 0]], device="cuda")
    masks = paste(soft, boxes, (25, 31)).cpu().numpy()
    expected = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    assert paste_rle(soft, boxes, (25, 31)) == [{"size": [25, 31], "counts": r["counts"].decode()} for r in expected]


def test_postprocess_rle_output_gives_byte_identical_coco_json():
    from solq.models.postprocess import PostProcess, results_to_coco

    codec = maskcodec.get_codec("dct", mask_size=32, n_components=128)
    g = torch.Generator().manual_seed(3)
    q, c = 40, 5
    masks = torch.rand(q, 32, 32, generator=g) > 0.5
    outputs = {"pred_logits": torch.randn(2, q, c, generator=g),
               "pred_boxes": torch.rand(2, q, 4, generator=g).clamp(0.02, 0.98),
               "pred_vectors": torch.as_tensor(codec.encode(masks.numpy()))[None].repeat(2, 1, 1)}
    outputs["pred_boxes"][0, :5, 2:] = 0.0  # zero-area boxes
    outputs["pred_boxes"][1, :5, 2:] = 1.5  # boxes over the border
    sizes = torch.tensor([[37, 51], [480, 641]])
    ref = PostProcess(codec, num_select=60)(outputs, sizes)
    new = PostProcess(codec, num_select=60, output="rle")(outputs, sizes)
    assert "masks" not in new[0] and len(new[0]["rles"]) == 60
    assert json.dumps(results_to_coco(new, [1, 2])) == json.dumps(results_to_coco(ref, [1, 2]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        outputs["pred_boxes"][0, 0, 0] = float("nan")
        PostProcess(codec, output="rle")(outputs, sizes)
    with pytest.raises(ValueError, match="output"):
        PostProcess(codec, output="png")


@pytest.mark.slow
@pytest.mark.parametrize("ann_file", ["tiny_coco/annotations/instances_val.json", "coco_mini/annotations/instances_val.json",
                                      "coco128/annotations/instances_train.json"])
def test_results_json_byte_identical_on_shared_coco_sets(ann_file):
    """Every image of a shared COCO set: GT-derived and random queries (like an untrained model's)
    through PostProcess(output="masks") + results_to_coco and PostProcess(output="rle") + results_to_coco."""
    from pycocotools.coco import COCO

    from solq.models.postprocess import PostProcess, results_to_coco

    path = DATA / ann_file
    if not path.exists():
        pytest.skip("needs the shared COCO data")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    codec = maskcodec.get_codec("dct", mask_size=128, n_components=256)
    ref_post, new_post = PostProcess(codec, num_select=100), PostProcess(codec, num_select=100, output="rle")
    g = torch.Generator().manual_seed(0)
    q, c = 100, 80
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        h, w = info["height"], info["width"]
        vectors = torch.randn(q, 256, generator=g) * 2
        vectors[:, 0] += 40  # random queries: blobs of soft values
        boxes = torch.rand(q, 4, generator=g) * torch.tensor([1.0, 1.0, 0.6, 0.6])
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False)) if a["area"] > 0][:q]
        if anns:
            xywh = np.array([a["bbox"] for a in anns], dtype=np.float64)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
            masks = np.stack([coco.annToMask(a) for a in anns]).astype(bool)
            vectors[:len(anns)] = torch.as_tensor(codec.encode(crop_resize(masks, xyxy, 128)))
            cxcywh = np.concatenate([xywh[:, :2] + xywh[:, 2:] / 2, xywh[:, 2:]], 1) / [w, h, w, h]
            boxes[:len(anns)] = torch.as_tensor(cxcywh, dtype=torch.float32) * (1 + 0.1 * torch.randn(len(anns), 4, generator=g))
        outputs = {"pred_logits": torch.randn(1, q, c, generator=g), "pred_boxes": boxes[None], "pred_vectors": vectors[None]}
        size = torch.tensor([[h, w]])
        ref = json.dumps(results_to_coco(ref_post(outputs, size), [img_id]))
        assert json.dumps(results_to_coco(new_post(outputs, size), [img_id])) == ref, img_id
