"""Experiment configuration: YAML files into nested dataclasses, plus ``key=value`` overrides.

>>> cfg = load_config("configs/shapes_tiny.yaml", ["train.epochs=3", "model.d_model=64"])
>>> cfg.train.epochs, cfg.model.d_model
(3, 64)

Every key has a default, so a YAML file only lists what differs. Unknown keys raise
``ConfigError`` naming close matches; values are parsed with ``yaml.safe_load`` (so
``train.amp=true`` is a bool and ``data.scales=[96,128]`` a list). The resolved config is
saved next to the run outputs (``save_config``) and inside every checkpoint.

Relative paths (``PATH_KEYS``: data folders and annotation files, weights, the codec file, the
shapes root, ``output_dir``) follow one rule, applied once when the config is loaded
(``resolve_path``): a path written in a config file is relative to that file's folder, a path
given as a ``key=value`` override (or a default) is relative to the working directory. The
resolved config holds absolute paths only, so it means the same from any directory.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from maskcodec.atomic import atomic_write

from .paths import PATH_KEYS, resolve_path, resolve_paths  # noqa: F401  (resolve_path: public here too)


class ConfigError(ValueError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


# ---------------------------------------------------------------------------- sections
@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    #: ``null`` (random init) or a path to a torchvision ResNet state dict (e.g. ImageNet weights).
    backbone_weights: Optional[str] = None
    #: ``frozen_bn`` (pretrained weights, as the paper) or ``group_norm`` (training from scratch).
    backbone_norm: str = "frozen_bn"
    #: ``null``: taken from the training dataset's categories.
    num_classes: Optional[int] = None
    d_model: int = 256
    nheads: int = 8
    num_feature_levels: int = 4
    n_points: int = 4
    num_queries: int = 300
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 1024
    dropout: float = 0.1
    with_box_refine: bool = True
    two_stage: bool = False
    with_vector: bool = True
    vector_hidden_dim: int = 1024
    #: Deformable-attention core: ``auto`` (triton on CUDA, numba on CPU), ``reference``, ``numba``, ``triton``;
    #: the environment variable ``SOLQ_MSDA_BACKEND`` overrides it.
    attn_backend: str = "auto"
    #: ``official`` (mask-vector head bias[2:] = -2, as the official code) or ``zero`` (bias 0).
    vector_bias_init: str = "official"


@dataclass
class CodecConfig:
    name: str = "dct"
    mask_size: int = 128
    n_components: int = 256
    #: Ground-truth crop sampling (``maskcodec.geometry.crop_resize``): 0 = adaptive ROIAlign, the
    #: official SOLQ targets (detectron2 ``crop_and_resize``); 1 = one bilinear sample per cell.
    sampling_ratio: int = 0
    #: Saved fitted codec (``maskcodec.load``) for learned codecs (pca, sparse); overrides the above.
    path: Optional[str] = None


@dataclass
class LossConfig:
    cls: float = 2.0
    bbox: float = 5.0
    giou: float = 2.0
    vector: float = 3.0
    #: Vector loss on the last K decoder layers; ``null`` = all layers (the paper's best).
    vector_layers: Optional[int] = None
    #: ``l1`` (the paper; DCT/PCA/sparse codecs) or ``l2_dice`` (flatten codec).
    vector_loss: str = "l1"
    dice: float = 1.0
    focal_alpha: float = 0.25
    set_cost_class: float = 2.0
    set_cost_bbox: float = 5.0
    set_cost_giou: float = 2.0


@dataclass
class SplitConfig:
    image_dir: Optional[str] = None
    ann_file: Optional[str] = None
    #: Use only the first ``limit`` images (sorted by id); ``null`` for all.
    limit: Optional[int] = None


@dataclass
class ShapesConfig:
    """Synthetic shapes dataset, generated once into ``root`` (``null``: ``<output_dir>/shapes_data``)."""

    root: Optional[str] = None
    n_train: int = 200
    n_val: int = 50
    #: int, [H, W] or [[h_min, h_max], [w_min, w_max]] (drawn per image).
    image_size: Any = 128
    n_classes: int = 3
    max_objects: int = 4
    empty_fraction: float = 0.05
    seed: int = 0


@dataclass
class DataConfig:
    train: SplitConfig = field(default_factory=SplitConfig)
    val: SplitConfig = field(default_factory=SplitConfig)
    #: When set, the synthetic shapes dataset replaces train/val.
    shapes: Optional[ShapesConfig] = None
    #: Training shorter-side scales (one picked at random per image); evaluation uses the last.
    scales: list = field(default_factory=lambda: [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800])
    max_size: int = 1333
    #: Random-resize-then-crop augmentation of Deformable DETR.
    crop: bool = True
    hflip: bool = True
    #: Evaluation shorter side (``null`` → ``max(scales)``).
    val_scale: Optional[int] = None
    num_workers: int = 2
    batch_size: int = 2
    #: Skip (with a counted warning) missing or unreadable images and invalid annotations, after checking
    #: every image header at start-up, instead of stopping with an error listing them.
    skip_bad_images: bool = False


@dataclass
class TrainConfig:
    epochs: int = 50
    lr: float = 2e-4
    lr_backbone: float = 2e-5
    #: lr multiplier for the deformable-attention ``sampling_offsets`` / ``reference_points`` params.
    lr_linear_proj_mult: float = 0.1
    weight_decay: float = 1e-4
    clip_max_norm: float = 0.1
    #: Epoch at which the lr drops ×0.1; ``null`` → ``round(0.8 · epochs)``.
    lr_drop: Optional[int] = None
    amp: bool = False
    seed: int = 42
    #: Save a mid-epoch checkpoint every K iterations (0: only at epoch ends).
    checkpoint_every_iters: int = 0
    #: Evaluate every E epochs (and always after the last); 0 disables evaluation during training.
    eval_every: int = 1
    #: Stop after this many iterations in total (``null``: no limit); for tests and smoke runs.
    max_iters: Optional[int] = None
    #: Print/log every N iterations.
    log_every: int = 10
    device: str = "auto"
    #: torch intra-op threads on CPU (``null``: torch's default). On a shared/oversubscribed machine
    #: 1 is much faster than 2+ (OpenMP threads spin-wait for descheduled peers).
    num_threads: Optional[int] = None


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/default"
    #: Directory of the YAML file the config came from (its relative paths were resolved against it).
    base_dir: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def lr_drop_epoch(self) -> int:
        t = self.train
        return t.lr_drop if t.lr_drop is not None else max(1, round(0.8 * t.epochs))


# ---------------------------------------------------------------------------- building
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key.split(".")[-1], valid, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(where + c) for c in close)}?" if close else ""
    full = f"{where}{key}"
    return ConfigError(f"unknown config key {full!r}{hint} (valid keys: {', '.join(sorted(valid))})")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key {key!r} may not be null")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        return _from_dict(tp, value, prefix=key + ".")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be a string, got {value!r}")
        return str(value)
    if tp is list or typing.get_origin(tp) is list:
        if not isinstance(value, list):
            value = [value]
        return list(value)
    return value


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    types_ = _field_types(cls)
    for key in data:
        if key not in types_:
            raise _unknown_key_error(key, list(types_), prefix)
    kwargs = {k: _coerce(v, types_[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict, base_dir: Optional[str | os.PathLike] = None) -> Config:
    """Build and validate a ``Config`` from a (possibly partial) nested dict (``data`` is not modified).

    Relative paths in ``data`` (and the default ``output_dir``) are resolved against ``base_dir``,
    or the working directory when it is None (``resolve_path``).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {type(data).__name__}")
    data = copy.deepcopy(data)
    data.setdefault("output_dir", Config.output_dir)
    cfg = _from_dict(Config, resolve_paths(data, base_dir))
    validate(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` → (["train", "epochs"], 3); the value is parsed with ``yaml.safe_load``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. train.epochs=3)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse the value of override {text!r}: {err}") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str], base_dir: Optional[str | os.PathLike] = None) -> dict:
    """Apply dotted ``key=value`` overrides to a nested dict (in place), checking keys against ``Config``.

    With ``base_dir``, relative paths the overrides set are resolved against it at once (``resolve_path``).
    """
    for text in overrides:
        path, value = parse_override(text)
        cls: Any = Config
        node = data
        for depth, part in enumerate(path):
            types_ = _field_types(cls) if cls is not None else None
            if types_ is not None and part not in types_:
                raise _unknown_key_error(part, list(types_), ".".join(path[:depth]) + "." if depth else "")
            if depth == len(path) - 1:
                node[part] = value
                break
            tp, _ = _unwrap_optional(types_[part]) if types_ is not None else (None, False)
            if types_ is not None and not dataclasses.is_dataclass(tp):
                raise ConfigError(f"config key {'.'.join(path[:depth + 1])!r} is not a section; cannot set {text!r}")
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else dataclasses.asdict(child) if dataclasses.is_dataclass(child) else {}
                node[part] = child
            node = child
            cls = tp
        if base_dir is not None:
            key = ".".join(path)
            resolve_paths(data, base_dir, [k for k in PATH_KEYS if k == key or k.startswith(key + ".")])
    return data


def load_config(path: Optional[str | os.PathLike] = None, overrides: Optional[list[str]] = None) -> Config:
    """Read a YAML config (or defaults when ``path`` is None) and apply ``key=value`` overrides.

    Relative paths of the file are taken relative to its folder, those of the overrides relative to
    the working directory; the result holds absolute paths (see ``resolve_path``).
    """
    data: dict = {}
    base_dir = None
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping at the top level")
        base_dir = str(path.resolve().parent)
        resolve_paths(data, base_dir)
    apply_overrides(data, list(overrides or []), base_dir=os.getcwd())
    data.setdefault("base_dir", base_dir)
    return config_from_dict(data)


def validate(cfg: Config) -> None:
    """Check value ranges and combinations; raises ``ConfigError``."""

    def positive(name: str, value: Any) -> None:
        if value is None or not value > 0:  # NaN fails too
            raise ConfigError(f"{name} must be positive, got {value!r}")

    m, t, d, c, loss = cfg.model, cfg.train, cfg.data, cfg.codec, cfg.loss
    for section in ("train", "loss"):
        for name, value in vars(getattr(cfg, section)).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{section}.{name} must be a finite number, got {value!r}")
    for name in ("d_model", "nheads", "num_queries", "dim_feedforward", "num_feature_levels"):
        positive(f"model.{name}", getattr(m, name))
    if m.d_model % 32:
        raise ConfigError(f"model.d_model={m.d_model} must be a multiple of 32 (GroupNorm(32) projections)")
    if m.d_model % m.nheads:
        raise ConfigError(f"model.d_model={m.d_model} must be divisible by model.nheads={m.nheads}")
    if m.enc_layers < 0 or m.dec_layers < 1:
        raise ConfigError("model.enc_layers must be >= 0 and model.dec_layers >= 1")
    positive("codec.mask_size", c.mask_size)
    positive("codec.n_components", c.n_components)
    if c.sampling_ratio not in (0, 1) or isinstance(c.sampling_ratio, bool):
        raise ConfigError(f"codec.sampling_ratio must be 0 (adaptive, official SOLQ targets) or 1, got {c.sampling_ratio!r}")
    positive("train.epochs", t.epochs)
    positive("train.lr", t.lr)
    positive("data.batch_size", d.batch_size)
    if d.num_workers < 0:
        raise ConfigError("data.num_workers must be >= 0")
    if not d.scales or any((not isinstance(s, int)) or s <= 0 for s in d.scales):
        raise ConfigError(f"data.scales must be a non-empty list of positive integers, got {d.scales!r}")
    if loss.vector_layers is not None and loss.vector_layers < 0:
        raise ConfigError(f"loss.vector_layers must be null (all layers) or >= 0, got {loss.vector_layers!r}")
    if m.attn_backend not in ("auto", "reference", "numba", "triton"):
        raise ConfigError(f"model.attn_backend must be auto, reference, numba or triton, got {m.attn_backend!r}")
    if loss.vector_loss not in ("l1", "l2_dice"):
        raise ConfigError(f"loss.vector_loss must be 'l1' or 'l2_dice', got {loss.vector_loss!r}")
    if t.checkpoint_every_iters < 0 or t.eval_every < 0:
        raise ConfigError("train.checkpoint_every_iters and train.eval_every must be >= 0")
    if t.max_iters is not None and t.max_iters < 1:
        raise ConfigError("train.max_iters must be >= 1 or null")


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (temp file + rename)."""
    atomic_write(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
