"""``solq convert`` -> ``solq predict`` / ``eval`` with no override: the converted file carries its
class count, category ids and the model settings its tensors imply."""

import argparse
import json
import re

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from solq.checkpoint import load_checkpoint
from solq.cli import main
from solq.models import SOLQ
from solq.models.convert import converted_checkpoint, implied_model_settings

# the "official" model: settings that differ from the config used to load it
OFFICIAL = dict(num_classes=91, n_vector=16, d_model=32, backbone="resnet18", num_feature_levels=1, num_queries=7,
                enc_layers=1, dec_layers=2, dim_feedforward=48, nheads=4, n_points=2, vector_hidden_dim=24)


def _official_file(path, two_stage=False):
    """Our tiny model saved with the official key layout and argparse ``args`` (as megvii-research/SOLQ)."""
    torch.manual_seed(0)
    model = SOLQ(**{**OFFICIAL, "two_stage": two_stage})
    sd = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone."):
            sd["backbone.0." + key[len("backbone."):]] = value
        elif key.startswith("vector_embed."):
            for i in range(OFFICIAL["dec_layers"]):
                sd[f"vector_embed.{i}." + key[len("vector_embed."):]] = value
        else:
            sd[key] = value
        if key.startswith("bbox_embed."):
            sd["transformer.decoder." + key] = value
    args = argparse.Namespace(nheads=4, dec_n_points=2, num_queries=7, lr=2e-4)
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "args": args, "epoch": 49}, path)
    return model


@pytest.fixture()
def setup(tmp_path):
    _official_file(tmp_path / "official.pth")
    cfg = {  # a config whose model section does NOT match the file
        "model": {"backbone": "resnet34", "d_model": 64, "nheads": 8, "num_feature_levels": 3, "n_points": 4,
                  "num_queries": 20, "enc_layers": 2, "dec_layers": 6, "dim_feedforward": 64, "vector_hidden_dim": 64},
        "codec": {"name": "dct", "mask_size": 16, "n_components": 16},
        "data": {"shapes": {"root": str(tmp_path / "data"), "n_train": 2, "n_val": 2, "image_size": 64,
                            "n_classes": 2, "max_objects": 2},
                 "scales": [64], "max_size": 96, "crop": False, "num_workers": 0, "batch_size": 2},
        "train": {"num_threads": 1},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    no_val = {**cfg, "data": {k: v for k, v in cfg["data"].items() if k != "shapes"}}
    (tmp_path / "no_val.yaml").write_text(yaml.safe_dump(no_val))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    return tmp_path


def test_implied_settings_from_the_official_layout(tmp_path):
    model = _official_file(tmp_path / "o.pth")
    state = converted_checkpoint(tmp_path / "o.pth")
    assert state["num_classes"] == 91 and state["category_ids"] == list(range(91))
    assert state["model_config"] == {
        "two_stage": False, "with_box_refine": True, "with_vector": True, "d_model": 32, "num_queries": 7,
        "num_feature_levels": 1, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 48, "vector_hidden_dim": 24,
        "backbone": "resnet18", "backbone_norm": "frozen_bn", "nheads": 4, "n_points": 2,
    }
    # our own layout gives the same answer; two-stage and the absence of args are seen too
    assert {k: v for k, v in implied_model_settings(model.state_dict()).items()} == {
        k: v for k, v in state["model_config"].items() if k not in ("nheads", "n_points", "with_box_refine")
    } | {"with_box_refine": False}
    _official_file(tmp_path / "two.pth", two_stage=True)
    two = converted_checkpoint(tmp_path / "two.pth", category_ids=[5, 9])
    assert two["model_config"]["two_stage"] and two["num_classes"] == 2 and two["category_ids"] == [5, 9]


def test_convert_then_predict_and_eval_without_override(setup, capsys):
    tmp = setup
    assert main(["convert", str(tmp / "official.pth"), "--out", str(tmp / "ours.pth")]) == 0
    assert "91 classes" in capsys.readouterr().out
    # predict with a config of another model shape and no data: the file decides, labels are COCO ids
    assert main(["predict", "--config", str(tmp / "no_val.yaml"), "--weights", str(tmp / "ours.pth"),
                 str(tmp / "img.png"), "--out", str(tmp / "pred"), "--score-threshold", "0", "--no-draw"]) == 0
    results = json.loads((tmp / "pred" / "results.json").read_text())
    assert len(results) == 100 and {r["category_id"] for r in results} <= set(range(91))
    # predict does not need the config's dataset: the ids stored in the file are used
    assert main(["predict", "--config", str(tmp / "cfg.yaml"), "--weights", str(tmp / "ours.pth"),
                 str(tmp / "img.png"), "--out", str(tmp / "pred2")]) == 0
    # evaluating the 91-row file on a 2-category dataset: a one-line error naming both sets
    assert main(["eval", "--config", str(tmp / "cfg.yaml"), "--weights", str(tmp / "ours.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"categories \(2 category ids \[1, 2\]\).*\(91 category ids \[0, 1, 2, 3, 4, \.\.\., 90\]\)", err), err


def test_converted_with_category_ids_evaluates_on_its_dataset(setup, capsys):
    tmp = setup
    assert main(["convert", str(tmp / "official.pth"), "--out", str(tmp / "two.pth"), "--category-ids", "1,2"]) == 0
    state = load_checkpoint(tmp / "two.pth")
    assert state["num_classes"] == 2 and state["category_ids"] == [1, 2] and state["model"]["class_embed.0.bias"].shape == (2,)
    assert main(["eval", "--config", str(tmp / "cfg.yaml"), "--weights", str(tmp / "two.pth")]) == 0
    assert main(["convert", str(tmp / "official.pth"), "--out", str(tmp / "three.pth"), "--category-ids", "3,7,11"]) == 0
    capsys.readouterr()
    assert main(["eval", "--config", str(tmp / "cfg.yaml"), "--weights", str(tmp / "three.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "2 category ids [1, 2]" in err and "3 category ids [3, 7, 11]" in err
