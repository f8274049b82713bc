"""One rule for relative paths: a config file's paths are relative to its folder, command-line paths to the cwd."""

import json
import os

import yaml

from solq.config import config_from_dict, load_config, resolve_path

TINY = {
    "model": {"backbone": "resnet18", "d_model": 32, "nheads": 4, "num_feature_levels": 1, "n_points": 2,
              "num_queries": 10, "enc_layers": 1, "dec_layers": 1, "dim_feedforward": 64, "vector_hidden_dim": 64},
    "codec": {"mask_size": 16, "n_components": 16},
    "data": {"shapes": {"root": "data/shapes", "n_train": 2, "n_val": 2, "image_size": 48, "n_classes": 2,
                        "max_objects": 2},
             "scales": [48], "max_size": 64, "num_workers": 0, "batch_size": 2},
    "train": {"epochs": 1, "eval_every": 0, "num_threads": 1, "device": "cpu", "max_iters": 1},
    "output_dir": "runs/tiny",
}


def test_file_paths_follow_the_file_and_overrides_the_cwd(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "c.yaml").write_text(yaml.safe_dump({**TINY, "codec": {"path": "../codecs/pca.npz"},
                                                   "data": {"val": {"image_dir": "~/images"}}}))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = load_config("../configs/c.yaml", ["data.train.ann_file=ann/train.json"])
    assert cfg.output_dir == str(folder / "runs" / "tiny")
    assert cfg.codec.path == str(tmp_path / "codecs" / "pca.npz")
    assert cfg.data.val.image_dir == os.path.expanduser("~/images")
    assert cfg.data.train.ann_file == str(work / "ann" / "train.json")
    assert cfg.base_dir == str(folder)
    # defaults and dicts without a file: the working directory
    assert load_config(None).output_dir == str(work / "runs" / "default")
    assert config_from_dict({"output_dir": "x"}, base_dir=folder).output_dir == str(folder / "x")
    assert resolve_path("/abs/p", folder) == "/abs/p"


def test_train_from_another_directory(tmp_path, monkeypatch):
    """``solq train`` of a config in one folder, run from another: data and outputs land next to the config,
    an output_dir given on the command line lands in the working directory."""
    from solq.cli import main

    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--config", str(folder / "tiny.yaml")]) == 0
    run = folder / "runs" / "tiny"
    assert (run / "checkpoint.pth").is_file() and (folder / "data" / "shapes" / "annotations").is_dir()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["shapes"]["root"] == str(folder / "data" / "shapes") and saved["output_dir"] == str(run)
    assert main(["train", "output_dir=out", "--config", "../project/configs/tiny.yaml"]) == 0
    assert (elsewhere / "out" / "checkpoint.pth").is_file()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["out"]
    records = [json.loads(line) for line in (elsewhere / "out" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["type"] == "train"
