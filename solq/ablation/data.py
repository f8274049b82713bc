"""The data of a sweep as explicit files: the shapes dataset written once, COCO paths resolved, subsets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from maskcodec.atomic import atomic_write

from ..config import ShapesConfig
from ..paths import resolve_path
from .sweeps import AblationError


@dataclass
class SplitFiles:
    """(image_dir, ann_file) of the train and val splits, and the image ids each split uses (None: all)."""

    train_images: Path
    train_ann: Path
    val_images: Path
    val_ann: Path
    train_ids: Optional[list[int]] = None
    val_ids: Optional[list[int]] = None


def materialize_data(data: dict, data_root: Path) -> SplitFiles:
    """Make the data of a config dict explicit files, in place.

    A synthetic shapes config is written once under ``data_root`` (reused when it already holds
    the same parameters) and replaced by ``data.train``/``data.val`` paths; COCO paths are resolved
    (relative to the config's folder). ``limit`` keeps the first images sorted by id, as the engine does.
    """
    d = data.setdefault("data", {})
    if d.get("shapes"):
        _write_shapes(d, data.get("base_dir"), data_root)
    out = {split: _split_files(d, split, data.get("base_dir")) for split in ("train", "val")}
    return SplitFiles(out["train"][0], out["train"][1], out["val"][0], out["val"][1], out["train"][2], out["val"][2])


def _shapes_folder(s: dict, base_dir: Optional[str], data_root: Path) -> Path:
    """``data.shapes.root`` (relative: to the config's folder), or a folder under ``data_root`` named for
    the dataset's parameters."""
    import numpy as np

    if s.get("root"):
        return Path(resolve_path(s["root"], base_dir))
    size = "x".join(str(v) for v in np.ravel(s["image_size"]))
    tag = f"shapes_{s['n_train']}_{s['n_val']}_{size}_{s['max_objects']}_{s['seed']}"
    if (s["n_classes"], s["empty_fraction"]) != (ShapesConfig.n_classes, ShapesConfig.empty_fraction):
        tag += f"_c{s['n_classes']}_e{s['empty_fraction']:g}"
    return data_root / tag


def _write_shapes(d: dict, base_dir: Optional[str], data_root: Path) -> None:
    """Write ``d["shapes"]`` (defaults: ``ShapesConfig``) and replace it by ``d["train"]``/``d["val"]`` paths."""
    from ..data import write_shapes_dataset

    given = {k: v for k, v in d["shapes"].items() if v is not None or k == "root"}
    s = {**dataclasses.asdict(ShapesConfig()), **given}
    paths = write_shapes_dataset(_shapes_folder(s, base_dir, data_root), n_images=s["n_train"], n_val=s["n_val"],
                                 image_size=s["image_size"], max_objects=s["max_objects"], seed=s["seed"],
                                 n_classes=s["n_classes"], empty_fraction=s["empty_fraction"])
    d["shapes"] = None
    for split in ("train", "val"):
        d[split] = {"image_dir": str(paths[split].image_dir), "ann_file": str(paths[split].ann_file), "limit": None}


def _split_files(d: dict, split: str, base_dir: Optional[str]) -> tuple[Path, Path, Optional[list[int]]]:
    """(image_dir, ann_file, image ids or None) of ``d[split]``; resolves its paths in place."""
    sc = d.get(split) or {}
    if not sc.get("image_dir") or not sc.get("ann_file"):
        raise AblationError(f"the base config needs data.{split}.image_dir and data.{split}.ann_file "
                            "(or data.shapes for the synthetic dataset)")
    image_dir, ann_file = (_existing_path(sc, split, key, base_dir) for key in ("image_dir", "ann_file"))
    ids = None
    if sc.get("limit") is not None:
        with open(ann_file) as f:
            ids = sorted(int(im["id"]) for im in json.load(f)["images"])[: int(sc["limit"])]
    return image_dir, ann_file, ids


def _existing_path(sc: dict, split: str, key: str, base_dir: Optional[str]) -> Path:
    """``sc[key]`` as an existing path (``solq.paths.resolve_path``'s rule); written back resolved."""
    p = Path(resolve_path(sc[key], base_dir))
    if not p.exists():
        raise FileNotFoundError(f"data.{split}.{key}: {p} not found")
    sc[key] = str(p)
    return p


def subset_annotations(ann_file: Path, image_ids: Optional[Sequence[int]], out_path: Path) -> Path:
    """``ann_file`` itself, or (with ``image_ids``) a copy restricted to those images written to ``out_path``."""
    if image_ids is None:
        return Path(ann_file)
    if out_path.is_file():
        return out_path
    with open(ann_file) as f:
        ds = json.load(f)
    keep = set(int(i) for i in image_ids)
    ds["images"] = [im for im in ds["images"] if int(im["id"]) in keep]
    ds["annotations"] = [a for a in ds["annotations"] if int(a["image_id"]) in keep]
    atomic_write(out_path, json.dumps(ds))
    return out_path
