"""maskcodec.bench: settings, metrics against direct computations, oracle AP, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from maskcodec import bench, coco, geometry, metrics
from maskcodec.bench import windows

pycoco_mask = pytest.importorskip("pycocotools.mask")


# ----------------------------------------------------------------------------- helpers
def _square(x, y, s):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


def write_coco(path: Path, images, annotations, categories=None) -> Path:
    data = {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "thing", "supercategory": "thing"}],
    }
    path.write_text(json.dumps(data))
    return path


def _ann(ann_id, image_id, poly, bbox=None, iscrowd=0, cat=1):
    xs, ys = poly[0][0::2], poly[0][1::2]
    if bbox is None:
        bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return {
        "id": ann_id, "image_id": image_id, "category_id": cat, "segmentation": poly,
        "bbox": bbox, "area": float(bbox[2] * bbox[3]), "iscrowd": iscrowd,
    }


@pytest.fixture
def small_coco(tmp_path) -> Path:
    """Three images with clean square/triangle-ish objects of several sizes."""
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 120, "width": 160} for i in (1, 2, 3)]
    anns = [
        _ann(1, 1, _square(10, 10, 40)),
        _ann(2, 1, [[80, 20, 140, 30, 100, 90]]),
        _ann(3, 2, _square(5, 60, 12)),
        _ann(4, 2, [[50, 10, 150, 15, 120, 110, 60, 100]]),
        _ann(5, 3, _square(30, 30, 70)),
    ]
    return write_coco(tmp_path / "small.json", images, anns)


# ----------------------------------------------------------------------------- settings
def test_expand_settings_grid_specs_and_skips():
    settings, notes = bench.expand_settings("dct,flatten:16:256,dct:8:100", (8, 16), (64, 100))
    labels = {s.label for s in settings}
    assert "dct N=8 n_k=64" in labels and "dct N=16 n_k=100" in labels and "flatten N=16 n_k=256" in labels
    assert not any(s.mask_size == 8 and s.n_components == 100 for s in settings)  # 100 > 8**2
    assert any("dct N=8 n_k=100" in n and "N**2" in n for n in notes)
    _, notes = bench.expand_settings("flatten", (16,), (100, 120))
    assert any("r**2" in n for n in notes)


def test_expand_settings_errors():
    with pytest.raises(ValueError, match="unknown codec 'nope'"):
        bench.expand_settings("dct,nope", (8,), (16,))
    with pytest.raises(ValueError, match="no valid codec setting"):
        bench.expand_settings("dct", (8,), (65,))
    with pytest.raises(ValueError, match="bad codec spec"):
        bench.expand_settings("dct:8:16:3", (8,), (16,))
    with pytest.raises(ValueError, match="positive integers"):
        bench.expand_settings("dct", (8,), ("x",))


# ----------------------------------------------------------------------------- metrics
def test_window_metrics_match_full_image_and_pycocotools():
    """Windowed image-space IoU / boundary IoU equal direct full-image computations."""
    sample = coco.sample_annotation_files()["val"]
    c = coco.read_instances(sample)
    batch = coco.load_masks(c, 24, max_masks=12)
    from maskcodec.dct import DCTCodec

    codec = DCTCodec(24, 40)  # lossy on purpose
    soft = codec.decode(codec.encode(batch.masks))
    checked = 0
    for i in range(len(batch.ann_ids)):
        ann = c.anns[int(batch.ann_ids[i])]
        full_gt = np.asarray(coco.annotation_mask(c, ann), dtype=bool)
        win = windows.gt_window(full_gt, batch.boxes[i])
        pred_win = windows.paste_window(soft[i], batch.boxes[i], win)
        h, w = full_gt.shape
        full_pred = geometry.paste(soft[i : i + 1], batch.boxes[i : i + 1], (h, w))[0]
        # the window holds every predicted pixel
        assert full_pred.sum() == pred_win.sum()
        ys, xs = win.y0, win.x0
        assert np.array_equal(full_pred[ys : ys + pred_win.shape[0], xs : xs + pred_win.shape[1]], pred_win)
        inter = int((pred_win & win.crop).sum())
        union = int(pred_win.sum()) + win.area - inter
        ours = inter / union
        rle_p = pycoco_mask.encode(np.asfortranarray(full_pred.astype(np.uint8)))
        rle_g = pycoco_mask.encode(np.asfortranarray(full_gt.astype(np.uint8)))
        ref = float(pycoco_mask.iou([rle_p], [rle_g], [0])[0, 0])
        assert ours == pytest.approx(ref, abs=1e-9)
        b_ours = windows.window_boundary_iou(pred_win, win)
        b_ref = float(metrics.boundary_iou(full_pred[None], full_gt[None], dilation_ratio=0.02)[0])
        assert b_ours == pytest.approx(b_ref, abs=1e-9)
        checked += 1
        if checked == 6:
            break
    assert checked == 6


def test_oracle_ap_exact_codec_near_100_and_drops_with_nk(small_coco):
    result = bench.run([small_coco], codecs="dct:64:4096,dct:64:16,dct:64:4", progress=False)
    by_k = {r["n_components"]: r for r in result.rows}
    exact = by_k[4096]  # n_k = N**2: the DCT is lossless in N x N space
    assert exact["iou_nn_mean"] == pytest.approx(1.0)
    assert exact["ap"] >= 95.0
    assert exact["iou_img_mean"] > 0.95
    assert exact["ap"] > by_k[4]["ap"]
    assert by_k[16]["iou_img_mean"] > by_k[4]["iou_img_mean"]
    assert result.meta["eval_masks"] == 5


def test_run_on_sample_small(tmp_path):
    result = bench.run(None, codecs="dct,pca:16:32,flatten:16:64", sizes=(16,), dims=(32, 64),
                       max_masks=40, progress=False)
    m = result.meta
    assert 0 < m["eval_masks"] <= 40
    assert "fitted on" in m["fit_description"] and "train" in m["fit_description"]
    assert {r["codec"] for r in result.rows} == {"dct", "pca", "flatten"}
    for r in result.rows:
        assert r["n_masks"] == m["eval_masks"]
        assert 0.0 <= r["iou_img_mean"] <= 1.0 and 0.0 <= r["ap"] <= 100.0
        assert r["encode_masks_per_s"] > 0 and r["decode_masks_per_s"] > 0
        assert sum(r[f"n_{a}"] for a, _, _ in bench.AREA_RANGES) == r["n_masks"]
    md = result.to_markdown()
    assert "| codec" in md and "Skipped evaluation instances" in md
    files = bench.write_outputs(result, tmp_path / "out", plots=False)  # plots: see test_cli
    names = {p.name for p in files}
    assert names == {"results.json", "results.csv", "RESULTS.md"}
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(data["rows"]) == len(result.rows)
    assert not list((tmp_path / "out").glob("*.tmp*"))


def test_learned_codec_split_by_image_without_fit_files(small_coco):
    result = bench.run([small_coco], codecs="pca:8:2", progress=False, seed=1)
    m = result.meta
    assert "seeded split" in m["fit_description"]
    assert m["fit_images"] + m["eval_images"] <= 3 and m["fit_images"] >= 1 and m["eval_images"] >= 1


# ----------------------------------------------------------------------------- bad input
def test_bad_instances_are_counted_not_dropped_silently(tmp_path):
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 100} for i in (1, 2, 3)]
    anns = [
        _ann(1, 1, _square(10, 10, 30)),
        _ann(2, 1, [[5, 5, 20, 20]], bbox=[5, 5, 15, 15]),  # polygon with 2 points
        _ann(3, 2, _square(50, 50, 20), bbox=[50, 50, 0, 20]),  # zero-area box
        {"id": 4, "image_id": 2, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 10, 10], "area": 100.0,
         "segmentation": {"size": [100, 100], "counts": [0, 10, 90] * 10 + [100 * 90]}},
        _ann(5, 2, _square(60, 10, 25)),
        _ann(6, 99, _square(10, 10, 20)),  # image 99 is not in the file
    ]  # image 3 has no annotations
    path = write_coco(tmp_path / "bad.json", images, anns)
    result = bench.run([path], codecs="dct:16:64", progress=False)
    m = result.meta
    assert m["eval_masks"] == 2
    skipped = m["eval_skipped"]
    assert skipped["polygon with fewer than 3 points"] == 1 and skipped["zero-area box"] == 1
    assert skipped["crowd"] == 1 and skipped["unknown image"] == 1
    assert m["ap_gt_unreadable"] == 1  # the 2-point polygon cannot be a COCOeval ground truth
    assert m["ap_gt_without_prediction"] == 1  # the zero-area-box instance stays as an (unmatchable) GT
    assert result.rows[0]["n_masks"] == 2
    md = result.to_markdown()
    assert "Skipped evaluation instances" in md and "none" not in md.split("Skipped evaluation instances")[1][:10]


def test_missing_and_non_coco_files(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError), match="nope.json"):
        bench.run([tmp_path / "nope.json"], codecs="dct:8:16", progress=False)
    bad = tmp_path / "list.json"
    bad.write_text("[1, 2, 3]")
    with pytest.raises(ValueError):
        bench.run([bad], codecs="dct:8:16", progress=False)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(ValueError):
        bench.run([garbage], codecs="dct:8:16", progress=False)


def test_empty_selection_errors(tmp_path):
    images = [{"id": 1, "file_name": "1.jpg", "height": 50, "width": 50}]
    crowd = {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 10, 10], "area": 100.0,
             "segmentation": {"size": [50, 50], "counts": [0, 10, 40] * 10 + [50 * 40]}}
    only_crowd = write_coco(tmp_path / "crowd.json", images, [crowd])
    with pytest.raises(ValueError, match="no (usable )?(non-crowd )?instance masks"):
        bench.run([only_crowd], codecs="dct:8:16", progress=False)
    no_images = write_coco(tmp_path / "empty.json", [], [])
    with pytest.raises(ValueError, match="no images"):
        bench.run([no_images], codecs="dct:8:16", progress=False)


def test_bad_device_and_max_masks(small_coco):
    from maskcodec.backend import cuda_status

    with pytest.raises(ValueError, match="device"):
        bench.run([small_coco], codecs="dct:8:16", device="tpu", progress=False)
    if not cuda_status()[0]:
        with pytest.raises(ValueError, match="CUDA"):
            bench.run([small_coco], codecs="dct:8:16", device="cuda", progress=False)
    with pytest.raises(ValueError, match="max_masks"):
        bench.run([small_coco], codecs="dct:8:16", max_masks=0, progress=False)


def test_duplicate_images_across_files_counted_once(small_coco, tmp_path):
    copy = tmp_path / "copy.json"
    copy.write_text(small_coco.read_text())
    result = bench.run([small_coco, copy], codecs="dct:16:64", progress=False)
    assert result.meta["eval_masks"] == 5
    assert result.meta["duplicate_images"] == 3
    assert result.meta["eval_skipped"] == {"image already read from an earlier file": 5}


def test_report_states_the_gt_sampling(small_coco):
    default = bench.run([small_coco], codecs="dct:16:16", progress=False)
    one = bench.run([small_coco], codecs="dct:16:16", progress=False, sampling_ratio=1)
    assert default.meta["sampling_ratio"] == 0 and one.meta["sampling_ratio"] == 1
    assert "adaptive ROIAlign (`sampling_ratio=0`" in default.to_markdown()
    assert "one bilinear sample per cell (`sampling_ratio=1`" in one.to_markdown()
    with pytest.raises(ValueError, match="sampling_ratio"):
        bench.run([small_coco], codecs="dct:16:16", progress=False, sampling_ratio=2)
