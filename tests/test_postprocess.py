"""Post-processing: a GT-derived prediction round-trips to AP ~ 100 through COCOeval; formats and errors."""

import contextlib
import io

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import maskcodec
from maskcodec.geometry import crop_resize
from solq.models.postprocess import PostProcess, results_to_coco

CATEGORY_IDS = [3, 7, 11]  # contiguous label -> dataset category id


def _scene(h, w, shapes):
    """shapes: list of (kind, label, cx, cy, rx, ry) -> masks (n, h, w) bool, labels."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    masks = []
    for kind, _, cx, cy, rx, ry in shapes:
        if kind == "ellipse":
            masks.append(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1)
        else:
            masks.append((abs(xx - cx) <= rx) & (abs(yy - cy) <= ry))
    return np.stack(masks), [s[1] for s in shapes]


SCENES = [
    ((96, 128), [("rect", 0, 30, 30, 20, 15), ("ellipse", 1, 85, 50, 30, 25), ("ellipse", 2, 40, 75, 18, 12)]),
    ((120, 100), [("ellipse", 0, 50, 40, 35, 22), ("rect", 2, 25, 95, 15, 18), ("rect", 1, 75, 90, 16, 20)]),
]


def _gt_and_prediction(codec, num_queries=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    dataset = {"images": [], "annotations": [], "categories": [{"id": c, "name": str(c)} for c in CATEGORY_IDS]}
    logits, boxes, vectors, sizes = [], [], [], []
    for img_id, ((h, w), shapes) in enumerate(SCENES, start=1):
        masks, labels = _scene(h, w, shapes)
        dataset["images"].append({"id": img_id, "height": h, "width": w})
        xyxy = []
        for m, lab in zip(masks, labels):
            ys, xs = np.nonzero(m)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            xyxy.append([x0, y0, x1, y1])
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            dataset["annotations"].append({
                "id": len(dataset["annotations"]) + 1, "image_id": img_id, "category_id": CATEGORY_IDS[lab],
                "segmentation": rle, "area": float(m.sum()), "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "iscrowd": 0})
        xyxy = np.asarray(xyxy, dtype=np.float32)
        vec = torch.as_tensor(codec.encode(crop_resize(masks, xyxy, codec.mask_size)))
        n = len(labels)
        lg = torch.full((num_queries, len(CATEGORY_IDS)), -8.0)
        lg[torch.arange(n), torch.tensor(labels)] = 8.0
        bx = torch.rand(num_queries, 4, generator=g) * 0.3 + 0.2
        bx[:n] = torch.as_tensor(np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2 / w, (xyxy[:, 1] + xyxy[:, 3]) / 2 / h,
                                           (xyxy[:, 2] - xyxy[:, 0]) / w, (xyxy[:, 3] - xyxy[:, 1]) / h], 1))
        vc = torch.randn(num_queries, codec.n_components, generator=g)
        vc[:n] = vec
        logits.append(lg), boxes.append(bx), vectors.append(vc), sizes.append((h, w))
    # pad both images' queries into one batch
    outputs = {"pred_logits": torch.stack(logits), "pred_boxes": torch.stack(boxes), "pred_vectors": torch.stack(vectors)}
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return outputs, torch.tensor(sizes), gt


def _evaluate(gt, dets, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev.stats


def test_gt_derived_prediction_roundtrips_to_full_ap():
    codec = maskcodec.get_codec("dct", mask_size=64, n_components=256)
    outputs, sizes, gt = _gt_and_prediction(codec)
    results = PostProcess(codec, num_select=100)(outputs, sizes)
    assert len(results) == 2
    for res, (h, w) in zip(results, sizes.tolist()):
        k = 8 * 3  # num_select is capped at Q * C
        assert res["scores"].shape == (k,) and res["labels"].shape == (k,) and res["boxes"].shape == (k, 4)
        assert res["masks"].shape == (k, h, w) and res["masks"].dtype == torch.bool
        assert (res["scores"][:-1] >= res["scores"][1:]).all()
        torch.testing.assert_close(res["scores"][:3], torch.sigmoid(torch.tensor(8.0)).expand(3))
    dets = results_to_coco(results, [1, 2], CATEGORY_IDS)
    assert len(dets) == 2 * 24 and isinstance(dets[0]["segmentation"]["counts"], str)
    assert {d["category_id"] for d in dets} == set(CATEGORY_IDS)
    segm = _evaluate(gt, dets, "segm")
    bbox = _evaluate(gt, dets, "bbox")
    assert bbox[0] > 0.99, bbox
    assert segm[1] > 0.99, segm  # AP50
    assert segm[0] > 0.99, segm  # AP over IoU 0.5:0.95


def test_selection_semantics_and_box_scaling():
    logits = torch.full((1, 4, 3), -5.0)
    logits[0, 2, 1] = 3.0
    logits[0, 0, 2] = 1.0
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1], [0.25, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]]])
    res = PostProcess(None, num_select=2)({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[100, 200]]))[0]
    assert res["labels"].tolist() == [1, 2]
    torch.testing.assert_close(res["scores"], torch.sigmoid(torch.tensor([3.0, 1.0])))
    torch.testing.assert_close(res["boxes"], torch.tensor([[0.0, 0.0, 100.0, 100.0], [80.0, 30.0, 120.0, 70.0]]))
    assert "masks" not in res
    det = results_to_coco([res], [5])[0]
    assert det == {"image_id": 5, "category_id": 1, "bbox": [0.0, 0.0, 100.0, 100.0], "score": pytest.approx(float(res["scores"][0]))}


def test_errors():
    codec = maskcodec.get_codec("dct", mask_size=16, n_components=10)
    out = {"pred_logits": torch.zeros(1, 4, 2), "pred_boxes": torch.rand(1, 4, 4), "pred_vectors": torch.zeros(1, 4, 12)}
    with pytest.raises(ValueError, match="n_components"):
        PostProcess(codec)(out, torch.tensor([[10, 10]]))
    with pytest.raises(ValueError, match="orig_sizes"):
        PostProcess(None)(out, torch.tensor([10, 10]))
    with pytest.raises(ValueError, match="num_select"):
        PostProcess(codec, num_select=0)
    res = PostProcess(None)(out, torch.tensor([[10, 10]]))
    with pytest.raises(ValueError, match="image_ids"):
        results_to_coco(res, [1, 2])
    with pytest.raises(ValueError, match="category_ids"):
        results_to_coco(res, [1], category_ids=[1])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode vs numpy 2
def test_encode_rle_round_trips():
    from solq.models.postprocess import encode_rle

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 13, 17, generator=g) > 0.5
    rles = encode_rle(masks)
    assert all(isinstance(r["counts"], str) and r["size"] == [13, 17] for r in rles)
    back = mask_util.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rles])  # (H, W, K)
    np.testing.assert_array_equal(back.transpose(2, 0, 1), masks.numpy())
    assert encode_rle(torch.zeros(0, 5, 5, dtype=torch.bool)) == []


def test_rle_output_bad_and_degenerate_input():
    codec = maskcodec.get_codec("dct", mask_size=16, n_components=10)
    g = torch.Generator().manual_seed(0)
    out = {"pred_logits": torch.randn(1, 6, 2, generator=g), "pred_boxes": torch.rand(1, 6, 4, generator=g),
           "pred_vectors": torch.randn(1, 6, 10, generator=g)}
    out["pred_boxes"][0, 0, 2:] = 0.0  # zero-area box: an empty mask, kept
    post = PostProcess(codec, num_select=12, output="rle")
    for size in ([[1, 1]], [[10000, 3]], [[2, 10000]]):
        res = post(out, torch.tensor(size))[0]
        ref = PostProcess(codec, num_select=12)(out, torch.tensor(size))[0]
        dets = results_to_coco([res], [1])
        assert len(dets) == 12 and dets == results_to_coco([ref], [1])
        assert all(d["segmentation"]["size"] == size[0] for d in dets)
    empty = {k: v[:, :0] for k, v in out.items()}  # no queries: no detections
    res = post(empty, torch.tensor([[5, 5]]))[0]
    assert res["rles"] == [] and results_to_coco([res], [1]) == []
    for key, value in (("pred_logits", float("nan")), ("pred_boxes", float("inf"))):
        broken = dict(out)
        broken[key] = out[key].clone()
        broken[key][0, 1, 0] = value
        with pytest.raises(ValueError, match="NaN or infinite"):
            post(broken, torch.tensor([[5, 5]]))
    res = post(out, torch.tensor([[5, 5]]))[0]
    res["rles"] = res["rles"][:-1]
    with pytest.raises(ValueError, match="RLEs for 12 detections"):
        results_to_coco([res], [1])
