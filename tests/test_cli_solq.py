"""The ``solq`` command: train / eval / predict / data / convert, and exit code 2 on bad input."""

import json
from pathlib import Path

import pycocotools.mask as mask_utils
import pytest
import torch
import yaml
from PIL import Image

from solq.cli import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A config file and a 2-step trained checkpoint of a tiny SOLQ on 64 px synthetic shapes."""
    tmp = tmp_path_factory.mktemp("cli")
    cfg = {
        "model": {"backbone": "resnet18", "d_model": 32, "nheads": 4, "num_feature_levels": 1, "n_points": 2,
                  "num_queries": 10, "enc_layers": 1, "dec_layers": 1, "dim_feedforward": 64,
                  "vector_hidden_dim": 64},
        "codec": {"name": "dct", "mask_size": 16, "n_components": 16},
        "data": {"shapes": {"root": str(tmp / "data"), "n_train": 4, "n_val": 3, "image_size": 64, "n_classes": 2,
                            "max_objects": 2},
                 "scales": [64], "max_size": 96, "crop": False, "num_workers": 0, "batch_size": 2},
        "train": {"epochs": 1, "eval_every": 0, "log_every": 1, "num_threads": 1},
        "output_dir": str(tmp / "run"),
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path)]) == 0
    return {"config": str(path), "weights": str(tmp / "run" / "checkpoint.pth"), "tmp": tmp}


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("solq: error: ")
    return err[-1]


def test_train_writes_run_outputs(run):
    out = Path(run["tmp"]) / "run"
    assert {"checkpoint.pth", "config.yaml", "metrics.jsonl", "curves.png"} <= {p.name for p in out.iterdir()}


def test_eval_prints_and_writes_metrics(run, tmp_path, capsys):
    assert main(["eval", "--config", run["config"], "--weights", run["weights"], "--out", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "| segm |" in printed and "| boundary |" in printed
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics) == {"bbox", "segm", "boundary"} and 0 <= metrics["segm"]["AP"] <= 100


def test_predict_writes_rle_and_pictures(run, tmp_path, capsys):
    images = Path(run["tmp"]) / "data" / "images" / "val"
    out = tmp_path / "pred"
    assert main(["predict", "--config", run["config"], "--weights", run["weights"], str(images), "--out", str(out),
                 "--score-threshold", "0.0"]) == 0
    results = json.loads((out / "results.json").read_text())
    files = sorted(images.iterdir())
    assert {r["file_name"] for r in results} == {f.name for f in files}
    for r in results[:20]:
        h, w = r["segmentation"]["size"]
        m = mask_utils.decode({"size": [h, w], "counts": r["segmentation"]["counts"].encode()})
        assert m.shape == (64, 64) and 0 <= r["score"] <= 1 and len(r["bbox"]) == 4
    for f in files:
        png = Image.open(out / f"{f.stem}.png")
        assert png.size == (64, 64)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--config", "{config}", "train.epoch=3"], "did you mean 'train.epochs'"),
        (["train", "--config", "{tmp}/missing.yaml"], "not found"),
        (["eval", "--config", "{config}", "--weights", "{tmp}/missing.pth"], "not found"),
        (["eval", "--config", "{config}", "--weights", "{weights}", "model.d_model=64"], "wrong-shape"),
        (["eval", "--config", "{config}", "--weights", "{corrupt}"], "corrupt or truncated"),
        (["predict", "--config", "{config}", "--weights", "{weights}", "{tmp}/nothing_here", "--out", "{tmp}/p"],
         "not found"),
        (["train", "--config", "{config}", "--resume", "--output-dir", "{tmp}/fresh"], "no checkpoint"),
    ],
)
def test_bad_input_exits_2_with_one_line(run, tmp_path, capsys, argv, message):
    corrupt = tmp_path / "corrupt.pth"
    data = Path(run["weights"]).read_bytes()
    corrupt.write_bytes(data[: len(data) // 3])
    argv = [a.format(config=run["config"], weights=run["weights"], tmp=tmp_path, corrupt=corrupt) for a in argv]
    assert main(argv) == 2
    assert message in _one_line_error(capsys)


def test_data_shapes_and_via2coco(tmp_path, capsys):
    assert main(["data", "shapes", "--out", str(tmp_path / "s"), "--n-train", "2", "--n-val", "1",
                 "--image-size", "48"]) == 0
    coco = json.loads((tmp_path / "s" / "annotations" / "instances_train.json").read_text())
    assert len(coco["images"]) == 2
    via = SHARED / "balloon" / "val" / "via_region_data.json"
    if not via.is_file():
        pytest.skip("shared/data/balloon is not available")
    assert main(["data", "via2coco", str(via), str(via.parent), "--out", str(tmp_path / "b.json")]) == 0
    coco = json.loads((tmp_path / "b.json").read_text())
    assert len(coco["images"]) == 13 and len(coco["annotations"]) == 50


def test_convert_official_layout(run, tmp_path):
    """An official-layout state dict (backbone.0.*, per-layer vector_embed copies) converts and loads."""
    from solq.checkpoint import load_checkpoint, load_model_weights
    from solq.config import load_config
    from solq.engine import build_model

    ours = load_checkpoint(run["weights"])["model"]
    official = {}
    for k, v in ours.items():
        if k.startswith("backbone."):
            official["backbone.0." + k[len("backbone."):]] = v
        elif k.startswith("vector_embed."):
            official["vector_embed.0." + k[len("vector_embed."):]] = v
        else:
            official[k] = v
    torch.save({"model": official, "args": None}, tmp_path / "official.pth")
    assert main(["convert", str(tmp_path / "official.pth"), "--out", str(tmp_path / "ours.pth")]) == 0
    model = build_model(load_config(run["config"]), num_classes=2, n_vector=16)
    load_model_weights(model, load_checkpoint(tmp_path / "ours.pth"))
    assert torch.equal(model.state_dict()["vector_embed.layers.0.weight"], ours["vector_embed.layers.0.weight"])
    assert main(["convert", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "x.pth")]) == 2


def test_every_config_subcommand_takes_overrides_anywhere(tmp_path):
    from solq.cli import _parse_args

    for argv in (["train", "train.epochs=2", "--config", "c.yaml", "--resume", "model.d_model=64"],
                 ["eval", "--config", "c.yaml", "train.epochs=2", "--weights", "w.pth", "model.d_model=64"],
                 ["ablate", "3e", "train.epochs=2", "--config", "c.yaml", "--scale", "tiny", "model.d_model=64"]):
        assert _parse_args(argv).overrides == ["train.epochs=2", "model.d_model=64"], argv
    with pytest.raises(SystemExit) as info:
        _parse_args(["data", "shapes", "--out", str(tmp_path), "train.epochs=2"])
    assert info.value.code == 2
