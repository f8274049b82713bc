"""solq.evaluation: COCOeval box/mask AP and Boundary AP."""

import contextlib
import io
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO

from maskcodec.metrics import mask_boundary
from solq.evaluation import (
    BoundaryCOCOeval,
    evaluate_coco,
    format_table,
    gt_results,
    save_metrics,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def _gt_coco(n_images=3, size=(60, 80), seed=0):
    """A small COCO ground truth: blobs (discs and rectangles) of 2 categories, plus one crowd region."""
    rng = np.random.default_rng(seed)
    h, w = size
    images, anns = [], []
    yy, xx = np.mgrid[:h, :w]
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": w, "height": h, "file_name": f"{i}.png"})
        for k in range(3):
            cy, cx, r = rng.integers(12, h - 12), rng.integers(12, w - 12), rng.integers(5, 11)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r if k % 2 == 0 else (abs(yy - cy) <= r) & (abs(xx - cx) <= r // 2 + 2)
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1 + k % 2, "iscrowd": 0,
                         "segmentation": _rle(m), "area": float(m.sum()),
                         "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
        crowd = np.zeros((h, w), bool)
        crowd[:6, :10] = True
        anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "iscrowd": 1, "segmentation": _rle(crowd),
                     "area": float(crowd.sum()), "bbox": [0.0, 0.0, 10.0, 6.0]})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": 1, "name": "disc"}, {"id": 2, "name": "rect"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def mask_to_boundary(mask, dilation_ratio=0.02):  # the band Boundary AP uses, of one (H, W) mask
    return mask_boundary(np.asarray(mask)[None], dilation_ratio=dilation_ratio)[0]


def test_mask_to_boundary():
    m = np.zeros((100, 100), np.uint8)
    m[20:80, 30:70] = 1
    b = mask_to_boundary(m, 0.02)  # d = round(0.02 * 141.4) = 3
    assert b.dtype == np.bool_ and b.max() == 1
    assert b[20:23, 30:70].all() and not b[23:77, 33:67].any()
    assert b.sum() == 60 * 40 - 54 * 34
    full = np.ones((10, 10), np.uint8)  # the image border counts as contour
    assert mask_to_boundary(full)[0].all() and not mask_to_boundary(full)[1:-1, 1:-1].any()


def test_gt_derived_predictions_score_100():
    gt = _gt_coco()
    metrics = evaluate_coco(gt, gt_results(gt))
    for t in ("bbox", "segm", "boundary"):
        assert metrics[t]["AP"] == pytest.approx(100.0), (t, metrics[t])
        assert metrics[t]["AP50"] == pytest.approx(100.0)
    table = format_table(metrics)
    assert "| boundary | 100.0 |" in table


def test_boundary_ap_is_stricter_than_mask_ap():
    gt = _gt_coco(n_images=4, seed=1)
    shifted = []
    for r in gt_results(gt):
        m = np.roll(mask_utils.decode(r["segmentation"]), 1, axis=1)
        shifted.append(dict(r, segmentation=_rle(m)))
    metrics = evaluate_coco(gt, shifted)
    assert 0 < metrics["boundary"]["AP"] < metrics["segm"]["AP"] < 100
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)  # boxes untouched


def test_wrong_class_and_empty_results_score_zero(tmp_path):
    gt = _gt_coco()
    swapped = [dict(r, category_id=3 - r["category_id"]) for r in gt_results(gt)]
    assert evaluate_coco(gt, swapped, iou_types=("segm",))["segm"]["AP"] == 0.0
    empty = evaluate_coco(gt, [])
    assert all(m["AP"] == 0.0 for m in empty.values())
    save_metrics(empty, tmp_path / "m.json")
    assert (tmp_path / "m.json").read_text().startswith("{")


def test_bad_inputs(tmp_path):
    gt = _gt_coco()
    with pytest.raises(ValueError, match="absent from the ground truth"):
        evaluate_coco(gt, [dict(gt_results(gt)[0], image_id=999)])
    with pytest.raises(ValueError, match="unknown iou type"):
        evaluate_coco(gt, [], iou_types=("keypoints",))
    with pytest.raises(FileNotFoundError):
        evaluate_coco(tmp_path / "missing.json", [])


def test_boundary_eval_matches_definition_on_one_pair():
    """IoU used by BoundaryCOCOeval = min(mask IoU, boundary IoU), computed here by hand."""
    gt = _gt_coco(n_images=1, seed=3)
    res = gt_results(gt)[:1]
    m = mask_utils.decode(res[0]["segmentation"])
    pred = np.roll(m, 1, axis=0)
    dt = gt.loadRes([dict(res[0], segmentation=_rle(pred))])
    ev = BoundaryCOCOeval(gt, dt)
    ev.params.imgIds = [1]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    iou = ev.ious[(1, res[0]["category_id"])]
    gmask = mask_utils.decode(gt.annToRLE(gt.loadAnns(gt.getAnnIds(imgIds=[1], catIds=[res[0]["category_id"]]))[0]))
    inter, union = (pred & gmask).sum(), (pred | gmask).sum()
    bp, bg = mask_to_boundary(pred), mask_to_boundary(gmask)
    b_iou = (bp & bg).sum() / (bp | bg).sum()
    assert iou.max() == pytest.approx(min(inter / union, b_iou))


def test_real_coco_ground_truth_scores_100():
    ann = SHARED / "tiny_coco" / "annotations" / "instances_val.json"
    if not ann.is_file():
        pytest.skip("shared/data/tiny_coco is not available")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
    ids = sorted(gt.getImgIds())[:4]
    metrics = evaluate_coco(gt, gt_results(gt, ids), img_ids=ids)
    for t in ("bbox", "segm", "boundary"):
        assert metrics[t]["AP"] == pytest.approx(100.0), t
