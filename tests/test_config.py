"""solq.config: YAML + dotted overrides into nested dataclasses, with clear errors."""

from pathlib import Path

import pytest
import yaml

from solq.config import Config, ConfigError, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_follow_the_paper():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert (cfg.loss.cls, cfg.loss.bbox, cfg.loss.giou, cfg.loss.vector) == (2.0, 5.0, 2.0, 3.0)
    assert cfg.train.lr == 2e-4 and cfg.train.lr_backbone == 2e-5 and cfg.train.lr_linear_proj_mult == 0.1
    assert cfg.train.weight_decay == 1e-4 and cfg.train.clip_max_norm == 0.1
    assert cfg.lr_drop_epoch == 40  # 0.8 * 50 epochs when lr_drop is not set


def test_yaml_and_typed_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"d_model": 128}, "train": {"epochs": 10}}))
    cfg = load_config(path, ["train.epochs=3", "model.d_model=64", "train.amp=true", "data.scales=[96, 128]",
                             "codec.path=null", "data.shapes.n_train=5", "train.lr=1e-3"])
    assert cfg.train.epochs == 3 and cfg.model.d_model == 64 and cfg.train.amp is True
    assert cfg.data.scales == [96, 128] and cfg.data.shapes.n_train == 5 and cfg.data.shapes.n_val == 50
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.lr_drop_epoch == 2
    assert cfg.model.num_queries == 300  # untouched default
    assert cfg.base_dir == str(tmp_path.resolve())


@pytest.mark.parametrize(
    "override, expected",
    [("train.epoch=3", "'train.epochs'"), ("model.dmodel=64", "'model.d_model'"), ("modle.d_model=3", "'model'")],
)
def test_unknown_key_names_close_matches(override, expected):
    with pytest.raises(ConfigError, match="unknown config key") as info:
        load_config(None, [override])
    assert expected in str(info.value)


def test_unknown_key_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epohcs: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'train.epochs'"):
        load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [("train.epochs=abc", "integer"), ("train.amp=3", "true/false"), ("train.epochs", "key=value"),
     ("model.d_model=48", "multiple of 32"), ("train.epochs.x=1", "not a section"), ("train.epochs=0", "positive"),
     ("loss.vector_loss=l3", "l1")],
)
def test_bad_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_save_roundtrip(tmp_path):
    cfg = load_config(None, ["train.epochs=7", "data.shapes.image_size=[64, 96]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again.train.epochs == 7 and again.data.shapes.image_size == [64, 96]
    assert again.to_dict() | {"base_dir": None} == cfg.to_dict() | {"base_dir": None}


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.model.d_model % cfg.model.nheads == 0
    assert cfg.data.shapes is not None or cfg.data.train.ann_file


def test_paper_recipe_config():
    cfg = load_config(ROOT / "configs" / "coco_r50.yaml")
    assert (cfg.model.d_model, cfg.model.num_queries, cfg.model.enc_layers, cfg.model.dec_layers) == (384, 300, 6, 6)
    assert (cfg.codec.name, cfg.codec.mask_size, cfg.codec.n_components) == ("dct", 128, 256)
    assert cfg.train.epochs == 50 and cfg.lr_drop_epoch == 40 and cfg.loss.vector == 3
    assert load_config(ROOT / "configs" / "coco_r50_c5.yaml").model.num_feature_levels == 1
