"""A trained model from a weights or checkpoint file: the model, its codec and its category ids."""

from __future__ import annotations

import os
from typing import Sequence

import torch

from .builders import build_codec, build_dataset, build_model
from .checkpoint import codec_from_state, load_checkpoint, load_model_weights
from .config import Config, ConfigError, config_from_dict


def load_trained(cfg: Config, weights: str | os.PathLike, device: torch.device):
    """(model in eval mode on ``device``, codec, category_ids, class_names) from a weights/checkpoint file
    and ``cfg``. The codec, category ids and class names stored in the checkpoint win over the config.
    """
    return load_trained_state(cfg, load_checkpoint(weights), str(weights), device)


def load_trained_state(cfg: Config, state: dict, weights: str, device: torch.device):
    """``load_trained`` of a checkpoint already read by ``load_checkpoint`` (``weights`` names it in errors)."""
    if isinstance(state.get("model_config"), dict):  # a converted official file: its shapes decide
        data = cfg.to_dict()
        data["model"].update(state["model_config"])
        cfg = config_from_dict(data)
    codec = codec_from_state(state["codec"]) if "codec" in state else build_codec(cfg)
    category_ids = state.get("category_ids")
    class_names = state.get("class_names")
    if category_ids is None:
        ds_cats = None
        try:
            ds_cats = build_dataset(cfg, "val", codec=None).category_ids
        except (ConfigError, FileNotFoundError):
            pass
        category_ids = ds_cats
    num_classes = state.get("num_classes") or cfg.model.num_classes or (len(category_ids) if category_ids else None)
    if num_classes is None:
        raise ConfigError("cannot tell the number of classes: set model.num_classes or give data.val")
    if state.get("num_classes") and category_ids and len(category_ids) != num_classes:
        raise ConfigError(f"{weights} has {num_classes} classes but the val dataset of the config has "
                          f"{describe_ids(category_ids)}; use the dataset the weights were made for "
                          "(for official COCO weights: solq convert --coco-ids)")
    model = build_model(cfg, num_classes, codec.n_components)
    load_model_weights(model, state, source=str(weights))
    return model.to(device).eval(), codec, list(category_ids or range(num_classes)), class_names


def describe_ids(ids: Sequence[int]) -> str:
    """``"80 category ids [1, 2, 3, ..., 90]"``: a short, readable name of a category set."""
    ids = [int(i) for i in ids]
    shown = ", ".join(map(str, ids)) if len(ids) <= 8 else ", ".join(map(str, ids[:5])) + f", ..., {ids[-1]}"
    return f"{len(ids)} category ids [{shown}]"
