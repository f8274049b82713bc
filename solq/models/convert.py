"""Load official SOLQ / Deformable DETR checkpoints into :class:`~solq.models.solq.SOLQ`.

Our modules carry the official names, so the mapping is near-identity. Differences:

* backbone: official ``backbone.0.body.*`` (a Joiner ``nn.Sequential``) -> ours ``backbone.body.*``;
* the official decoder keeps extra references to the heads used for box refinement / two-stage
  (``transformer.decoder.bbox_embed.*``, ``transformer.decoder.class_embed.*``): dropped (ours
  are passed to the decoder at call time);
* the official mask-vector head is one MLP repeated per decoder layer (``vector_embed.<i>.*``,
  identical copies): ours is a single shared ``vector_embed.*`` (copy 0 is taken);
* the official COCO heads have 91 logits indexed by COCO category id; ``category_ids`` (our
  contiguous label -> COCO id, as datasets expose it) selects those rows of every
  ``class_embed.<i>``; in two-stage mode the proposal head's row 0 (the official binary
  "object" logit) stays row 0;
* a ``"model"`` entry of a checkpoint dict and a DDP ``module.`` prefix are unwrapped.

``converted_checkpoint`` is what ``solq convert`` saves: the weights plus ``num_classes``,
``category_ids`` and the model settings the tensors imply (``model_config``), so that ``solq eval`` /
``predict`` build the right model from the file alone.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .state_dict import state_dict_problems


def _load_file(checkpoint):
    if isinstance(checkpoint, (str, os.PathLike)):
        if not os.path.isfile(checkpoint):
            raise ValueError(f"checkpoint file not found: {checkpoint!s}")
        try:
            # official checkpoints also pickle their argparse.Namespace ("args"): allow just that
            with torch.serialization.safe_globals([argparse.Namespace]):
                checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{checkpoint!s} holds objects other than tensors and an argparse.Namespace, so it is not "
                "loaded with weights_only=True; if you trust the file, load it yourself with "
                "torch.load(path, weights_only=False) and pass the resulting dict"
            ) from err
    return checkpoint


def _unwrap(checkpoint) -> dict[str, torch.Tensor]:
    checkpoint = _load_file(checkpoint)
    if isinstance(checkpoint, Mapping) and "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a state dict or a checkpoint with a 'model' entry, got {type(checkpoint).__name__}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in checkpoint.items()}


def convert_official_state_dict(state_dict, category_ids: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Map an official SOLQ / Deformable DETR state dict (or checkpoint path / dict with "model")
    to our key layout; see the module docstring for the differences handled.

    Args:
        state_dict: the official weights.
        category_ids: contiguous label -> row of the official class heads (COCO category id);
            None keeps all rows (then ``num_classes`` of our model must equal the official count, 91 for COCO).
    """
    sd = _unwrap(state_dict)
    dec_idx = [int(m.group(1)) for k in sd if (m := re.match(r"transformer\.decoder\.layers\.(\d+)\.", k))]
    n_dec = max(dec_idx) + 1 if dec_idx else 0
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith(("transformer.decoder.bbox_embed.", "transformer.decoder.class_embed.")):
            continue
        if key.startswith("backbone.0."):
            out["backbone." + key[len("backbone.0."):]] = value
            continue
        if key.startswith("backbone.1."):  # position encoding: no parameters in ours
            continue
        m = re.match(r"vector_embed\.(\d+)\.(.*)", key)
        if m:
            if m.group(1) == "0":
                out["vector_embed." + m.group(2)] = value
            continue
        m = re.match(r"class_embed\.(\d+)\.(weight|bias)$", key)
        if m and category_ids is not None:
            rows = [int(c) for c in category_ids]
            if int(m.group(1)) == n_dec:  # two-stage proposal head: binary logit in row 0
                rows = [0] + rows[1:]
            if max(rows) >= value.shape[0] or min(rows) < 0:
                raise ValueError(f"category id {max(rows)} out of range for {key} with {value.shape[0]} rows")
            value = value[rows]
        out[key] = value
    return out


def load_official_checkpoint(model: nn.Module, checkpoint, category_ids: Sequence[int] | None = None) -> nn.Module:
    """Convert ``checkpoint`` (path, state dict or dict with "model") and load it into ``model``
    strictly. Raises ``ValueError`` listing missing / unexpected keys and shape mismatches
    (e.g. a different ``d_model``, ``n_vector``, number of layers or backbone)."""
    converted = convert_official_state_dict(checkpoint, category_ids)
    own = model.state_dict()
    parts = state_dict_problems(own, converted)
    if parts:
        raise ValueError("official checkpoint does not fit this model: " + "; ".join(parts)
                         + ". Build SOLQ with the checkpoint's settings (official SOLQ: d_model=384, "
                           "resnet50, 300 queries, n_vector=256) and pass category_ids for COCO.")
    model.load_state_dict(converted, strict=True)
    return model


# official argparse names of settings the tensor shapes do not fix
_OFFICIAL_ARGS = {"nheads": "nheads", "dec_n_points": "n_points", "num_queries": "num_queries"}
_RESNETS = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50", (True, 23): "resnet101"}


def implied_model_settings(official: Mapping[str, torch.Tensor], args: Any = None) -> dict[str, Any]:
    """``model.*`` config settings fixed by an (unwrapped) official state dict's keys and shapes,
    plus ``nheads`` / ``n_points`` / ``num_queries`` from the checkpoint's ``args`` when it has them."""
    sd = official
    out: dict[str, Any] = {
        "two_stage": "query_embed.weight" not in sd,
        "with_box_refine": any(k.startswith("transformer.decoder.bbox_embed.") for k in sd),
        "with_vector": any(k.startswith("vector_embed.") for k in sd),
    }
    if "class_embed.0.weight" in sd:
        out["d_model"] = int(sd["class_embed.0.weight"].shape[1])
    if "query_embed.weight" in sd:
        out["num_queries"] = int(sd["query_embed.weight"].shape[0])
    if "transformer.level_embed" in sd:
        out["num_feature_levels"] = int(sd["transformer.level_embed"].shape[0])
    for part in ("encoder", "decoder"):
        idx = {int(m.group(1)) for k in sd if (m := re.match(rf"transformer\.{part}\.layers\.(\d+)\.", k))}
        if idx:
            out[f"{part[:3]}_layers"] = max(idx) + 1
    if "transformer.encoder.layers.0.linear1.weight" in sd:
        out["dim_feedforward"] = int(sd["transformer.encoder.layers.0.linear1.weight"].shape[0])
    hidden = [k for k in sd if re.match(r"vector_embed\.(0\.)?layers\.0\.weight$", k)]
    if hidden:
        out["vector_hidden_dim"] = int(sd[hidden[0]].shape[0])
    body = "backbone.0.body." if any(k.startswith("backbone.0.body.") for k in sd) else "backbone.body."
    blocks = {int(m.group(1)) for k in sd if (m := re.match(re.escape(body) + r"layer3\.(\d+)\.", k))}
    name = _RESNETS.get((body + "layer1.0.conv3.weight" in sd, len(blocks)))
    if name:
        out["backbone"] = name
        out["backbone_norm"] = "frozen_bn" if body + "bn1.running_mean" in sd else "group_norm"
    for arg, key in _OFFICIAL_ARGS.items():
        value = getattr(args, arg, None) if args is not None else None
        if isinstance(value, int) and not isinstance(value, bool):
            out[key] = value
    return out


def converted_checkpoint(checkpoint, category_ids: Sequence[int] | None = None) -> dict[str, Any]:
    """What ``solq convert`` saves: ``{"model", "num_classes", "category_ids", "model_config"}``.

    Without ``category_ids`` every row of the official class heads is kept, and row ``i`` is
    category id ``i`` (the official COCO heads are indexed by category id: 91 rows, ids 1..90
    used), so ``category_ids = [0, 1, ..., num_classes - 1]`` is stored.
    """
    raw = _load_file(checkpoint)
    args = raw.get("args") if isinstance(raw, Mapping) else None
    official = _unwrap(raw)
    state = convert_official_state_dict(official, category_ids)
    if "class_embed.0.weight" not in state:
        raise ValueError("the checkpoint has no class_embed.0.weight: not an official SOLQ / Deformable DETR model")
    num_classes = int(state["class_embed.0.weight"].shape[0])
    ids = [int(c) for c in category_ids] if category_ids is not None else list(range(num_classes))
    settings = implied_model_settings(official, args)
    return {"model": state, "num_classes": num_classes, "category_ids": ids, "model_config": settings}
