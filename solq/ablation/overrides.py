"""The config of one sweep entry, in override order: base ← scale preset ← entry ← user overrides."""

from __future__ import annotations

import copy
import os
from typing import Optional, Sequence

from ..config import Config, apply_overrides, config_from_dict
from .sweeps import Entry, scale_preset


def scaled_base(base: Config, scale: str) -> dict:
    """The base config as a dict with the scale preset applied (shapes/COCO-specific parts included)."""
    preset = scale_preset(scale)
    data = copy.deepcopy(base.to_dict())
    overrides = list(preset.overrides)
    overrides += list(preset.shapes_overrides if base.data.shapes is not None else preset.coco_overrides)
    apply_overrides(data, overrides)
    return data


def entry_config(base: Config | dict, entry: Entry, output_dir: str | os.PathLike, scale: Optional[str] = None,
                 user_overrides: Sequence[str] = (), codec_path: Optional[str | os.PathLike] = None,
                 keep_data: bool = False) -> Config:
    """The full config of one entry: base ← scale (when given) ← entry ← user overrides.

    ``codec_path`` (a fitted learned codec) sets ``codec.path``; ``output_dir`` the engine's folder.
    ``keep_data``: skip ``data.*`` user overrides (already applied before the data were materialised).
    """
    if isinstance(base, Config):
        data = scaled_base(base, scale) if scale else copy.deepcopy(base.to_dict())
    else:
        data = copy.deepcopy(base)
    apply_overrides(data, list(entry.overrides))
    apply_overrides(data, [o for o in user_overrides if not (keep_data and o.strip().startswith("data."))])
    data["output_dir"] = str(output_dir)
    if codec_path is not None:
        data.setdefault("codec", {})["path"] = str(codec_path)
    return config_from_dict(data)
