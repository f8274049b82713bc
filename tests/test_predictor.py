"""solq.Predictor: every input kind gives the same detections, and they equal the engine's evaluation path."""

import json

import numpy as np
import pytest
import torch

from solq import Predictor
from solq.config import load_config
from solq.engine import train

TINY = {
    "model.backbone": "resnet18", "model.d_model": 32, "model.nheads": 4, "model.num_feature_levels": 1,
    "model.n_points": 2, "model.num_queries": 10, "model.enc_layers": 1, "model.dec_layers": 2,
    "model.dim_feedforward": 64, "model.vector_hidden_dim": 64, "codec.mask_size": 16, "codec.n_components": 16,
    "data.shapes.n_train": 4, "data.shapes.n_val": 3, "data.shapes.image_size": [[48, 64], [56, 72]],
    "data.shapes.n_classes": 2, "data.shapes.max_objects": 2, "data.scales": [56, 64], "data.max_size": 96,
    "data.num_workers": 0, "data.batch_size": 2, "train.epochs": 1, "train.eval_every": 0, "train.lr": 1e-3,
    "train.num_threads": 1, "train.device": "cpu",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("predictor")
    overrides = [f"{k}={json.dumps(v)}" for k, v in {**TINY, "data.shapes.root": str(out / "data"),
                                                        "output_dir": str(out / "run")}.items()]
    cfg = load_config(None, overrides)
    train(cfg)
    return cfg, out / "run" / "checkpoint.pth", sorted((out / "data" / "images" / "val").iterdir())


@pytest.fixture(scope="module")
def predictor(run):
    return Predictor.from_checkpoint(run[1], device="cpu")


def _same(a: dict, b: dict) -> None:
    assert set(a) == {"boxes", "scores", "labels", "masks"}
    np.testing.assert_array_equal(a["boxes"], b["boxes"])
    np.testing.assert_array_equal(a["scores"], b["scores"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    assert a["masks"] == b["masks"]


def test_every_input_kind_gives_the_same_result(run, predictor):
    from PIL import Image

    path = run[2][0]
    by_path = predictor(path)
    k = len(by_path["scores"])
    assert k == 20 and by_path["boxes"].shape == (k, 4) and by_path["boxes"].dtype == np.float32
    assert set(by_path["labels"].tolist()) <= set(predictor.category_ids)
    assert np.all(np.diff(by_path["scores"]) <= 0) and len(by_path["masks"]) == k
    rgb = np.array(Image.open(path).convert("RGB"))
    _same(predictor(str(path)), by_path)
    _same(predictor(Image.open(path)), by_path)
    _same(predictor(rgb), by_path)
    _same(predictor(torch.from_numpy(rgb).permute(2, 0, 1)), by_path)
    as_float = predictor(torch.from_numpy(rgb).permute(2, 0, 1) / 255.0)  # resized in float: close, not equal
    assert as_float["boxes"].shape == (k, 4)
    listed = predictor([path, rgb])
    assert isinstance(listed, list) and len(listed) == 2
    _same(listed[0], by_path)
    _same(listed[1], by_path)


def test_array_masks_are_the_decoded_rles(run, predictor):
    import pycocotools.mask as mask_util
    from PIL import Image

    path = run[2][1]
    rle = predictor(path, score_threshold=0.0)
    arr = predictor(path, masks="array")
    h, w = np.asarray(Image.open(path)).shape[:2]
    assert arr["masks"].dtype == bool and arr["masks"].shape == (len(rle["scores"]), h, w)
    decoded = mask_util.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rle["masks"]])
    np.testing.assert_array_equal(decoded.transpose(2, 0, 1).astype(bool), arr["masks"])
    some = predictor(path, score_threshold=float(rle["scores"][3]))
    assert len(some["scores"]) >= 4 and np.all(some["scores"] >= rle["scores"][3])


def test_predictor_equals_the_engine_evaluation_path(run, predictor):
    """Predictor on the val image files == predict_coco over the val dataset (what solq eval scores)."""
    from solq.builders import build_dataset, make_loader
    from solq.data import ResumableBatchSampler
    from solq.distributed import DistInfo
    from solq.engine import predict_coco
    from solq.models import PostProcess

    cfg, ckpt, files = run
    ds = build_dataset(cfg, "val", codec=None, train=False)
    loader = make_loader(ds, ResumableBatchSampler(len(ds), 1, shuffle=False), cfg, DistInfo())
    coco = predict_coco(predictor.model, PostProcess(predictor.codec, num_select=100, output="rle"), loader,
                        ds.category_ids, torch.device("cpu"))
    names = {im["id"]: im["file_name"] for im in ds.coco.dataset["images"]}
    for path in files:
        expected = [r for r in coco if names[r["image_id"]] == path.name]
        got = predictor(path)
        assert len(expected) == len(got["scores"]) > 0
        for r, box, score, label, rle in zip(expected, got["boxes"], got["scores"], got["labels"], got["masks"]):
            x0, y0, x1, y1 = box.tolist()
            assert r["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=1e-4)
            assert (r["score"], r["category_id"], r["segmentation"]) == (pytest.approx(float(score)), label, rle)


def test_config_overrides_and_bad_inputs(run, predictor):
    small = Predictor.from_checkpoint(run[1], device="cpu", overrides=["data.val_scale=32"])
    assert small.transform.transforms[0].min_size == [32]
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        predictor(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        predictor(torch.zeros(8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predictor(torch.full((3, 8, 8), 7.0))
    with pytest.raises(TypeError, match="cannot read an image"):
        predictor(42)
    with pytest.raises(ValueError, match="masks must be one of"):
        predictor(run[2][0], masks="polygons")
    with pytest.raises(FileNotFoundError):
        predictor(run[2][0].parent / "missing.png")
