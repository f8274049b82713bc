"""The codec ablations of SOLQ's Table 3, end to end: sweep definitions, resumable runs, tables, plots.

A *sweep* (``"3a"`` … ``"3e"``) is a list of entries; each entry is a set of ``key=value`` config
overrides applied to one base config (the single-level, C5-only model), trained with
``solq.engine.train`` and evaluated on the validation split:

* **3a** codec type: det-only (``model.with_vector=false``), flatten 28×28 (L2 + dice vector
  loss), sparse coding, PCA, DCT; ``n_k = 256``, ``N = 128``.
* **3b** ``λ_vec ∈ {0.3, 0.7, 1, 2, 3, 4}`` with the vector loss on the last decoder layer only.
* **3c** number of (last) decoder layers with the vector loss, 1 … 6.
* **3d** mask size ``N ∈ {64, 96, 128, 256}`` at ``n_k = 256``.
* **3e** vector length ``n_k ∈ {144, 256, 300, 400}`` at ``N = 128``.

Override order: base config ← scale preset ← entry ← user overrides (the user wins).

Scales: ``tiny`` (a few iterations of a very small model, codec sizes ``N/4`` and ``n_k/16``;
for tests), ``cpu`` (ResNet-18 with GroupNorm from random init, C3-C5 because a C5-only map of a
160-pixel image is 5x5 cells, 160-pixel synthetic shapes, 750 iterations per entry: about 6
minutes on 2 idle cores, so a table fits in well under an hour with
``configs/ablations/shapes_cpu.yaml``; the paper's ``N`` and ``n_k``), ``full`` (the base config as
is, the paper's ``N`` and ``n_k``).

Learned codecs (PCA, sparse coding) are fitted once per ``(codec, N, n_k)`` on the masks of the
*training* split only, saved with ``codec.save`` under ``<sweep>/codecs/`` and loaded by the
training run through ``codec.path``. Every codec also gets its *oracle* AP from
``maskcodec.bench.run`` on the same validation annotations (the mask AP a perfect model would
reach through that codec), cached under ``<sweep>/oracle/``.

Layout of a sweep folder ``<out>/table3x/``::

    sweep.json                     definition, scale, base config, command
    entries/<name>/                the engine's output_dir (checkpoint.pth, metrics.jsonl, config.yaml)
    entries/<name>/result.json     written atomically when the entry is finished (its metrics)
    codecs/<codec>_N<N>_k<K>.npz   fitted learned codecs
    oracle/<codec>_N<N>_k<K>.json  oracle AP of each codec setting
    table3x.md, table3x.png, results.json

Resuming: running the same command again skips entries that have ``result.json``; an entry with
a ``checkpoint.pth`` but no result continues from it (``train(cfg, resume=True)``), or is only
evaluated when its checkpoint already holds the whole schedule.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from maskcodec.atomic import atomic_open, atomic_write

from .checkpoint import CHECKPOINT_NAME
from .config import Config, ConfigError, apply_overrides, config_from_dict, load_config

TABLES: tuple[str, ...] = ("3a", "3b", "3c", "3d", "3e")
SCALES: tuple[str, ...] = ("tiny", "cpu", "full")

#: Table columns: (label, iou type, COCOeval stat).
METRIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("AP^seg", "segm", "AP"),
    ("AP50", "segm", "AP50"),
    ("AP75", "segm", "AP75"),
    ("APs", "segm", "APs"),
    ("APm", "segm", "APm"),
    ("APl", "segm", "APl"),
    ("AP^box", "bbox", "AP"),
)

RESULT_NAME = "result.json"

# The paper's numbers: Dong et al., SOLQ, NeurIPS 2021 (arXiv 2106.02351), text in ../shared/paper/.
# Tab. 3 (C5-only R50, COCO val): 3a in the paper's column layout (AP, S/M/L for masks and boxes),
# 3b-3e with AP, AP50, AP75 for masks and boxes. ``None``: "-" in the paper. Keys are our entry names.
PAPER_COLUMNS_3A = ("AP^seg", "APs^seg", "APm^seg", "APl^seg", "AP^box", "APs^box", "APm^box", "APl^box")
PAPER_COLUMNS_3BE = ("AP^seg", "AP50^seg", "AP75^seg", "AP^box", "AP50^box", "AP75^box")


def _paper_rows(columns: tuple[str, ...], rows: dict[str, tuple]) -> dict[str, dict[str, float]]:
    return {name: {c: v for c, v in zip(columns, values) if v is not None} for name, values in rows.items()}


PAPER: dict[str, dict[str, dict[str, float]]] = {
    "3a": _paper_rows(PAPER_COLUMNS_3A, {
        "det_only": (None, None, None, None, 39.4, 20.6, 43.0, 55.5),
        "flatten": (29.7, 11.6, 33.4, 49.3, 40.4, 20.2, 44.7, 58.8),
        "sparse": (11.3, 6.2, 12.0, 17.5, 40.6, 20.6, 44.6, 59.3),
        "pca": (31.6, 12.5, 35.4, 52.7, 41.0, 20.5, 45.2, 60.0),
        "dct": (32.6, 12.8, 37.1, 54.5, 41.3, 20.7, 45.4, 60.1),
    }),
    "3b": _paper_rows(PAPER_COLUMNS_3BE, {
        "lambda_0.3": (25.2, 51.0, 22.2, 39.3, 59.9, 41.8),
        "lambda_0.7": (26.7, 52.1, 24.4, 39.6, 60.1, 42.5),
        "lambda_1": (27.2, 53.4, 24.6, 39.7, 61.3, 43.3),
        "lambda_2": (28.9, 53.5, 27.7, 40.0, 60.4, 42.8),
        "lambda_3": (29.7, 53.5, 28.4, 40.2, 60.4, 42.8),
        "lambda_4": (29.6, 52.3, 25.6, 40.2, 60.1, 42.4),
    }),
    "3c": _paper_rows(PAPER_COLUMNS_3BE, {
        "layers_1": (29.7, 53.5, 27.7, 40.2, 60.4, 42.8),
        "layers_2": (31.8, 55.4, 32.1, 40.8, 61.2, 43.3),
        "layers_3": (32.0, 55.2, 32.4, 40.7, 61.0, 42.9),
        "layers_4": (32.4, 55.7, 33.1, 41.0, 61.2, 43.5),
        "layers_5": (32.3, 55.3, 33.1, 40.9, 60.9, 43.4),
        "layers_6": (32.6, 55.9, 33.4, 41.3, 61.7, 43.4),
    }),
    "3d": _paper_rows(PAPER_COLUMNS_3BE, {
        "N_64": (30.8, 54.8, 30.8, 40.5, 61.2, 42.7),
        "N_96": (31.5, 55.4, 31.8, 40.7, 61.4, 43.1),
        "N_128": (32.6, 55.9, 33.4, 41.3, 61.7, 43.4),
        "N_256": (32.3, 55.4, 32.8, 40.6, 60.7, 43.3),
    }),
    "3e": _paper_rows(PAPER_COLUMNS_3BE, {
        "nk_144": (31.5, 55.6, 31.6, 40.9, 61.3, 43.4),
        "nk_256": (32.6, 55.9, 33.4, 41.3, 61.7, 43.4),
        "nk_300": (31.0, 54.7, 30.9, 40.4, 60.8, 42.8),
        "nk_400": (30.9, 55.1, 30.2, 40.6, 61.3, 43.0),
    }),
}
# Tab. 1 (COCO test-dev), the SOLQ R50 line: multi-scale training, 50 epochs, single-scale test.
PAPER_TABLE1_R50: dict[str, float] = {
    "AP^seg": 39.7, "APs^seg": 21.5, "APm^seg": 42.5, "APl^seg": 53.1,
    "AP^box": 47.8, "APs^box": 27.6, "APm^box": 50.9, "APl^box": 61.6,
}
# The authors' val figure for the same R50 model: Tab. 2's "D-DETR*+UQR R50" line (39.5 / 47.8) was
# test-dev by mistake; COCO val is 40.1 AP^seg (megvii-research/SOLQ issue #1, maintainer's reply).
PAPER_VAL_R50: dict[str, float] = {"AP^seg": 40.1, "AP50^seg": 63.1, "AP75^seg": 43.1, "APs^seg": 20.8,
                                   "APm^seg": 43.7, "APl^seg": 59.4}
PAPER_VAL_R50_SOURCE = "https://github.com/megvii-research/SOLQ/issues/1"
PAPER_CHOICE: dict[str, str] = {"3a": "dct", "3b": "lambda_3", "3c": "layers_6", "3d": "N_128", "3e": "nk_256"}
PAPER_SOURCE = "Dong et al., SOLQ: Segmenting Objects by Learning Queries, NeurIPS 2021 (arXiv 2106.02351), Tab. 3"


def paper_columns(table: str) -> tuple[str, ...]:
    """The paper's columns of a sub-table (``"3a"``: AP and S/M/L; others: AP, AP50, AP75; masks then boxes)."""
    return PAPER_COLUMNS_3A if table == "3a" else PAPER_COLUMNS_3BE


class AblationError(RuntimeError):
    """A sweep cannot run (bad table/scale, missing data, a failed entry); the message says why."""


# ---------------------------------------------------------------------------- definitions
@dataclass(frozen=True)
class CodecSpec:
    """The codec an entry trains with: maskcodec name, mask size N and vector length n_k."""

    name: str
    mask_size: int
    n_components: int

    @property
    def key(self) -> str:
        return f"{self.name}_N{self.mask_size}_k{self.n_components}"

    @property
    def requires_fit(self) -> bool:
        import maskcodec.bench  # noqa: F401  (registers pca/sparse/flatten)
        from maskcodec import codec_class

        return bool(codec_class(self.name).requires_fit)


@dataclass(frozen=True)
class Entry:
    """One row of a sweep.

    ``overrides`` are ``key=value`` strings for ``solq.config``; ``codec`` is the codec the model
    is trained with (None: det-only, no mask vectors); ``value`` is the swept quantity (for plots).
    """

    name: str
    label: str
    overrides: tuple[str, ...]
    codec: Optional[CodecSpec]
    value: Any = None


@dataclass(frozen=True)
class Sweep:
    table: str
    title: str
    parameter: str
    scale: str
    entries: tuple[Entry, ...]
    #: Whether the swept parameter is numeric (line plot) or categorical (bars).
    numeric: bool = True

    def entry(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise AblationError(f"table {self.table} has no entry {name!r}; entries: {[e.name for e in self.entries]}")


@dataclass(frozen=True)
class ScalePreset:
    """A scale: config overrides plus how the paper's codec sizes are scaled."""

    name: str
    description: str
    overrides: tuple[str, ...]
    shapes_overrides: tuple[str, ...] = ()  # applied when the base config uses the shapes dataset
    coco_overrides: tuple[str, ...] = ()  # applied when it uses COCO-format files
    size_divisor: int = 1  # N -> N // size_divisor
    dim_divisor: int = 1  # n_k -> n_k // dim_divisor (flatten: side 28 -> 28 // sqrt(dim_divisor))

    def mask_size(self, n: int) -> int:
        return max(4, n // self.size_divisor)

    def dims(self, k: int) -> int:
        return max(1, k // self.dim_divisor)

    def flatten_dims(self, side: int = 28) -> int:
        s = max(2, int(round(side / math.sqrt(self.dim_divisor))))
        return s * s


SCALE_PRESETS: dict[str, ScalePreset] = {
    "tiny": ScalePreset(
        name="tiny",
        description="smoke test: a ~0.3M-parameter model, 2 iterations per entry, N/4 and n_k/16",
        overrides=(
            "model.backbone=resnet18", "model.num_feature_levels=1", "model.d_model=32", "model.nheads=4",
            "model.num_queries=10", "model.enc_layers=1", "model.dec_layers=6", "model.dim_feedforward=64",
            "model.vector_hidden_dim=64", "model.n_points=2", "data.scales=[64]", "data.max_size=64",
            "data.val_scale=64", "data.crop=false", "data.batch_size=2", "data.num_workers=0", "train.epochs=1",
            "train.max_iters=2", "train.eval_every=1", "train.log_every=1", "train.checkpoint_every_iters=0",
            "train.device=cpu",
        ),
        shapes_overrides=("data.shapes.n_train=16", "data.shapes.n_val=4", "data.shapes.image_size=64",
                          "data.shapes.max_objects=3"),
        coco_overrides=("data.train.limit=8", "data.val.limit=4"),
        size_divisor=4,
        dim_divisor=16,
    ),
    "cpu": ScalePreset(
        name="cpu",
        description=("ResNet-18 (random init, GroupNorm), C3-C5 (a C5-only map of a 160-pixel image is 5x5 "
                     "cells, too coarse to learn masks from), d_model 128, 20 queries, 2 encoder / 6 decoder "
                     "layers, 1024-wide mask MLP, 160-pixel synthetic shapes, batch 4, 3 epochs of 1000 images "
                     "(750 iterations, lr drop after epoch 2) per entry, 100 val images, 2 threads; the paper's "
                     "N and n_k"),
        overrides=(
            "model.backbone=resnet18", "model.backbone_norm=group_norm", "model.num_feature_levels=3",
            "model.d_model=128", "model.nheads=8", "model.enc_layers=2",
            "model.dec_layers=6", "model.dim_feedforward=512", "model.vector_hidden_dim=1024",
            "model.dropout=0.0", "data.crop=false", "data.batch_size=4", "data.num_workers=1", "train.lr=6.0e-4",
            "train.lr_backbone=1.0e-4", "train.epochs=3", "train.lr_drop=2", "train.eval_every=3",
            "train.log_every=10", "train.checkpoint_every_iters=100", "train.max_iters=null",
            "train.num_threads=2", "train.device=cpu",
        ),
        shapes_overrides=("data.shapes.n_train=1000", "data.shapes.n_val=100", "data.shapes.image_size=160",
                          "data.shapes.max_objects=4", "model.num_queries=20", "data.scales=[160]",
                          "data.max_size=200", "data.val_scale=160"),
        coco_overrides=("data.train.limit=1000", "data.val.limit=100", "model.num_queries=50",
                        "data.scales=[256]", "data.max_size=320", "data.val_scale=256"),
    ),
    "full": ScalePreset(name="full", description="the base config as is; the paper's N and n_k", overrides=()),
}


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def sweep_definition(table: str, scale: str = "cpu") -> Sweep:
    """The entries of ``table`` (``"3a"`` … ``"3e"``) at ``scale``; raises ``AblationError`` for bad names."""
    table = normalize_table(table)
    preset = scale_preset(scale)
    N, K = preset.mask_size(128), preset.dims(256)

    def codec_overrides(spec: CodecSpec) -> tuple[str, ...]:
        return (f"codec.name={spec.name}", f"codec.mask_size={spec.mask_size}",
                f"codec.n_components={spec.n_components}")

    entries: list[Entry] = []
    if table == "3a":
        flat = CodecSpec("flatten", N, preset.flatten_dims(28))
        dct = CodecSpec("dct", N, K)
        entries.append(Entry("det_only", "Det. only", ("model.with_vector=false", *codec_overrides(dct)), None))
        entries.append(Entry("flatten", f"Flatten {math.isqrt(flat.n_components)}²", (
            *codec_overrides(flat), "loss.vector_loss=l2_dice"), flat))
        for name, label in (("sparse", "Sparse coding"), ("pca", "PCA"), ("dct", "DCT")):
            spec = CodecSpec(name, N, K)
            entries.append(Entry(name, label, (*codec_overrides(spec), "loss.vector_loss=l1"), spec))
        return Sweep(table, "Mask compression coding (n_k = %d, N = %d)" % (K, N), "codec", preset.name,
                     tuple(entries), numeric=False)
    dct = CodecSpec("dct", N, K)
    if table == "3b":
        for lam in (0.3, 0.7, 1.0, 2.0, 3.0, 4.0):
            entries.append(Entry(f"lambda_{_fmt_value(lam)}", _fmt_value(lam), (
                *codec_overrides(dct), f"loss.vector={lam}", "loss.vector_layers=1"), dct, lam))
        return Sweep(table, "Vector loss weight λ_vec (vector loss on the last decoder layer only)", "λ_vec",
                     preset.name, tuple(entries))
    if table == "3c":
        for k in range(1, 7):
            entries.append(Entry(f"layers_{k}", str(k), (
                *codec_overrides(dct), f"loss.vector_layers={k}", "model.dec_layers=6"), dct, k))
        return Sweep(table, "Number of (last) decoder layers with the vector loss", "decoder layers", preset.name,
                     tuple(entries))
    if table == "3d":
        for n in (64, 96, 128, 256):
            spec = CodecSpec("dct", preset.mask_size(n), K)
            entries.append(Entry(f"N_{n}", str(spec.mask_size), codec_overrides(spec), spec, spec.mask_size))
        return Sweep(table, f"Mask size N (n_k = {K})", "N", preset.name, tuple(entries))
    for k in (144, 256, 300, 400):
        spec = CodecSpec("dct", N, preset.dims(k))
        entries.append(Entry(f"nk_{k}", str(spec.n_components), codec_overrides(spec), spec, spec.n_components))
    return Sweep(table, f"Vector length n_k (N = {N})", "n_k", preset.name, tuple(entries))


def normalize_table(table: str) -> str:
    t = str(table).lower().removeprefix("table").removeprefix("tab").strip(" .")
    if t not in TABLES:
        raise AblationError(f"unknown table {table!r}; choose from {', '.join(TABLES)}")
    return t


def scale_preset(scale: str) -> ScalePreset:
    if scale not in SCALE_PRESETS:
        raise AblationError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    return SCALE_PRESETS[scale]


# ---------------------------------------------------------------------------- configs
def _config_dict(cfg: Config) -> dict:
    return copy.deepcopy(cfg.to_dict())


def scaled_base(base: Config, scale: str) -> dict:
    """The base config as a dict with the scale preset applied (shapes/COCO-specific parts included)."""
    preset = scale_preset(scale)
    data = _config_dict(base)
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
        data = scaled_base(base, scale) if scale else _config_dict(base)
    else:
        data = copy.deepcopy(base)
    apply_overrides(data, list(entry.overrides))
    apply_overrides(data, [o for o in user_overrides if not (keep_data and o.strip().startswith("data."))])
    data["output_dir"] = str(output_dir)
    if codec_path is not None:
        data.setdefault("codec", {})["path"] = str(codec_path)
    return config_from_dict(data)


# ---------------------------------------------------------------------------- data
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
    import numpy as np

    from .data import write_shapes_dataset

    d = data.setdefault("data", {})
    shapes = d.get("shapes")
    if shapes:
        s = {"n_train": 200, "n_val": 50, "image_size": 128, "max_objects": 4, "seed": 0, "n_classes": 3,
             "empty_fraction": 0.05, **{k: v for k, v in shapes.items() if v is not None or k == "root"}}
        if s.get("root"):
            base = Path(data.get("base_dir") or ".")
            root = Path(s["root"]) if Path(s["root"]).is_absolute() else base / s["root"]
        else:
            size = "x".join(str(v) for v in np.ravel(s["image_size"]))
            tag = f"shapes_{s['n_train']}_{s['n_val']}_{size}_{s['max_objects']}_{s['seed']}"
            if (s["n_classes"], s["empty_fraction"]) != (3, 0.05):
                tag += f"_c{s['n_classes']}_e{s['empty_fraction']:g}"
            root = data_root / tag
        paths = write_shapes_dataset(root, n_images=s["n_train"], n_val=s["n_val"], image_size=s["image_size"],
                                     max_objects=s["max_objects"], seed=s["seed"], n_classes=s["n_classes"],
                                     empty_fraction=s["empty_fraction"])
        d["shapes"] = None
        d["train"] = {"image_dir": str(paths["train"].image_dir), "ann_file": str(paths["train"].ann_file), "limit": None}
        d["val"] = {"image_dir": str(paths["val"].image_dir), "ann_file": str(paths["val"].ann_file), "limit": None}
    out = {}
    for split in ("train", "val"):
        sc = d.get(split) or {}
        if not sc.get("image_dir") or not sc.get("ann_file"):
            raise AblationError(f"the base config needs data.{split}.image_dir and data.{split}.ann_file "
                                "(or data.shapes for the synthetic dataset)")
        paths = []
        for key in ("image_dir", "ann_file"):
            p = Path(os.path.expanduser(sc[key]))
            if not p.is_absolute():
                cands = [p] + ([Path(data["base_dir"]) / p] if data.get("base_dir") else [])
                found = next((c for c in cands if c.exists()), None)
                if found is None:
                    raise FileNotFoundError(f"data.{split}.{key}: {sc[key]} not found (looked in "
                                            f"{', '.join(map(str, cands))})")
                p = found.resolve()
            elif not p.exists():
                raise FileNotFoundError(f"data.{split}.{key}: {p} not found")
            sc[key] = str(p)
            paths.append(p)
        ids = None
        if sc.get("limit") is not None:
            with open(paths[1]) as f:
                ids = sorted(int(im["id"]) for im in json.load(f)["images"])[: int(sc["limit"])]
        out[split] = (paths[0], paths[1], ids)
    return SplitFiles(out["train"][0], out["train"][1], out["val"][0], out["val"][1], out["train"][2], out["val"][2])


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


# ---------------------------------------------------------------------------- codecs and oracle
def fit_codec(spec: CodecSpec, train_ann: str | os.PathLike, out_path: str | os.PathLike,
              image_ids: Optional[Sequence[int]] = None, max_masks: Optional[int] = None):
    """Fit a learned codec on the masks of the *training* annotations and save it (atomic); returns it.

    Masks: every non-crowd instance of ``train_ann`` (restricted to ``image_ids``), cropped to its
    box and resized to ``N × N`` (``maskcodec.coco.load_masks``).
    """
    import maskcodec.bench  # noqa: F401  (registers the codecs)
    from maskcodec import coco, get_codec

    with contextlib.redirect_stdout(io.StringIO()):
        batch = coco.load_masks(str(train_ann), spec.mask_size, image_ids=image_ids, max_masks=max_masks)
    if len(batch.masks) == 0:
        raise AblationError(f"no usable training masks in {train_ann} to fit the {spec.name} codec")
    codec = get_codec(spec.name, mask_size=spec.mask_size, n_components=spec.n_components)
    if len(batch.masks) < spec.n_components and spec.name == "pca":
        raise AblationError(f"PCA with n_k={spec.n_components} needs at least that many training masks; "
                            f"{train_ann} has {len(batch.masks)}: use more training images or a smaller scale")
    codec.fit(batch.masks)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    codec.save(out_path)
    return codec


def oracle_ap(spec: CodecSpec, val_ann: str | os.PathLike, train_ann: Optional[str | os.PathLike] = None,
              seed: int = 0) -> dict:
    """Oracle mask AP of a codec setting on ``val_ann`` via ``maskcodec.bench.run`` (learned codecs are
    fitted by the benchmark on ``train_ann``). Returns the bench row (``ap``, ``ap50``, ``ap75``, IoUs, ...)."""
    from maskcodec import bench

    result = bench.run(
        ann_files=[str(val_ann)],
        fit_ann_files=[str(train_ann)] if (train_ann is not None and spec.requires_fit) else None,
        codecs=[f"{spec.name}:{spec.mask_size}:{spec.n_components}"],
        sizes=[spec.mask_size], dims=[spec.n_components], progress=False, seed=seed,
    )
    if not result.rows:
        raise AblationError(f"maskcodec bench returned no row for {spec.key}: {result.meta.get('notes')}")
    row = {k: v for k, v in result.rows[0].items() if isinstance(v, (int, float, str, type(None)))}
    row["eval_masks"] = result.meta.get("eval_masks")
    row["fit_description"] = result.meta.get("fit_description")
    return row


# ---------------------------------------------------------------------------- files
def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n")


def read_json(path: str | os.PathLike) -> Optional[Any]:
    """The JSON in ``path``, or None when it is missing or unreadable (a torn write)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------------- running
TrainFn = Callable[[Config, bool], dict]
EvalFn = Callable[[Config, Path], dict]


def default_train(cfg: Config, resume: bool) -> dict:
    """``solq.engine.train(cfg, resume=resume)``."""
    from .engine import train

    return train(cfg, resume=resume)


def default_evaluate(cfg: Config, checkpoint: Path) -> dict:
    """``solq.engine.run_evaluation(cfg, checkpoint)`` on the validation split."""
    from .engine import run_evaluation

    return run_evaluation(cfg, checkpoint, split="val")


def checkpoint_progress(path: Path) -> Optional[dict]:
    """``{"epoch", "iter_in_epoch", "global_step"}`` of a training checkpoint, or None if unreadable."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (a torn or foreign file: treat as absent)
        return None
    if not isinstance(state, dict) or "epoch" not in state:
        return None
    return {k: int(state.get(k, 0)) for k in ("epoch", "iter_in_epoch", "global_step")}


def schedule_done(cfg: Config, progress: dict) -> bool:
    """Whether a checkpoint at ``progress`` already holds the whole training schedule of ``cfg``."""
    t = cfg.train
    if t.max_iters is not None and progress["global_step"] >= t.max_iters:
        return True
    return progress["epoch"] >= t.epochs


@dataclass
class SweepRun:
    """What ``run_sweep`` did: the sweep, its folder, per-entry results (None: not finished) and files."""

    sweep: Sweep
    out_dir: Path
    results: dict[str, Optional[dict]]
    oracle: dict[str, Optional[dict]]
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def table(self) -> str:
        return format_table(self.sweep, self.results, self.oracle)


def sweep_dir(out: str | os.PathLike, table: str) -> Path:
    return Path(out) / f"table{normalize_table(table)}"


def run_sweep(
    table: str,
    base: Config | str | os.PathLike,
    out: str | os.PathLike,
    scale: str = "cpu",
    overrides: Sequence[str] = (),
    *,
    only: Optional[Sequence[str]] = None,
    train_fn: Optional[TrainFn] = None,
    eval_fn: Optional[EvalFn] = None,
    with_oracle: bool = True,
    command: str = "",
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> SweepRun:
    """Run (or continue) sweep ``table`` on ``base`` into ``<out>/table<table>``; returns what was done.

    ``train_fn(cfg, resume) -> {"metrics": ...}`` and ``eval_fn(cfg, checkpoint) -> metrics`` default to
    the engine; tests pass fakes. ``only`` restricts the run to some entry names (the table still lists
    all, unfinished ones empty). Each finished entry's ``result.json`` is written atomically before the
    next entry starts, so an interrupted sweep continues where it stopped.
    """
    sweep = sweep_definition(table, scale)
    base_cfg = load_config(base) if not isinstance(base, Config) else base
    train_fn = train_fn or default_train
    eval_fn = eval_fn or default_evaluate
    root = sweep_dir(out, sweep.table).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if only:
        unknown = set(only) - {e.name for e in sweep.entries}
        if unknown:
            raise AblationError(f"unknown entries {sorted(unknown)} for table {sweep.table}; "
                                f"choose from {[e.name for e in sweep.entries]}")

    data = scaled_base(base_cfg, scale)
    apply_overrides(data, list(overrides))  # user overrides may change the data too
    files = materialize_data(data, Path(out).resolve() / "data")
    train_ann = subset_annotations(files.train_ann, files.train_ids, root / "data" / "train_subset.json")
    val_ann = subset_annotations(files.val_ann, files.val_ids, root / "data" / "val_subset.json")

    write_json(root / "sweep.json", {
        "table": sweep.table, "title": sweep.title, "scale": sweep.scale,
        "scale_description": scale_preset(scale).description,
        "base_config": str(base) if not isinstance(base, Config) else None,
        "overrides": list(overrides), "command": command,
        "entries": [dataclasses.asdict(e) for e in sweep.entries],
        "train_ann": str(train_ann), "val_ann": str(val_ann),
    })

    results: dict[str, Optional[dict]] = {}
    oracle: dict[str, Optional[dict]] = {}
    run = SweepRun(sweep, root, results, oracle)
    for entry in sweep.entries:
        edir = root / "entries" / entry.name
        result_path = edir / RESULT_NAME
        done = read_json(result_path)
        if done is not None:
            results[entry.name] = done
            run.skipped.append(entry.name)
            continue
        results[entry.name] = None
        if only and entry.name not in only:
            continue
        codec_path = None
        if entry.codec is not None and entry.codec.requires_fit:
            codec_path = root / "codecs" / f"{entry.codec.key}.npz"
            if not codec_path.is_file():
                log(f"[{sweep.table}] fitting {entry.codec.key} on the training masks of {train_ann}")
                t0 = time.perf_counter()
                fit_codec(entry.codec, train_ann, codec_path)
                log(f"[{sweep.table}] fitted {entry.codec.key} in {time.perf_counter() - t0:.1f} s -> {codec_path}")
        cfg = entry_config(data, entry, edir, user_overrides=overrides, codec_path=codec_path, keep_data=True)
        if entry.codec is not None and (cfg.codec.name, cfg.codec.mask_size, cfg.codec.n_components) != (
                entry.codec.name, entry.codec.mask_size, entry.codec.n_components):
            log(f"[{sweep.table}] note: overrides changed the codec of {entry.name} to "
                f"{cfg.codec.name} N={cfg.codec.mask_size} n_k={cfg.codec.n_components}")
        ckpt = edir / CHECKPOINT_NAME
        progress = checkpoint_progress(ckpt) if ckpt.is_file() else None
        t0 = time.perf_counter()
        metrics = None
        train_info: dict = {}
        if progress is not None and schedule_done(cfg, progress):
            log(f"[{sweep.table}] {entry.name}: training already complete (step {progress['global_step']}); evaluating")
        else:
            resume = progress is not None
            log(f"[{sweep.table}] {entry.name}: {'resuming' if resume else 'training'} "
                f"({', '.join(entry.overrides)})")
            out_train = train_fn(cfg, resume) or {}
            metrics = out_train.get("metrics")
            train_info = {k: v for k, v in out_train.items() if k in ("global_step", "epoch")}
        if not metrics:
            if not ckpt.is_file():
                raise AblationError(f"{entry.name}: training left no checkpoint at {ckpt} and no metrics")
            metrics = eval_fn(cfg, ckpt)
        result = {
            "table": sweep.table, "entry": entry.name, "label": entry.label, "value": entry.value,
            "overrides": list(entry.overrides) + list(overrides),
            "codec": dataclasses.asdict(entry.codec) if entry.codec else None,
            "codec_path": str(codec_path) if codec_path else None,
            "scale": sweep.scale, "metrics": metrics, **train_info,
            "resumed": progress is not None, "seconds_this_session": time.perf_counter() - t0,
            "train_seconds": _train_seconds(edir / "metrics.jsonl"),
        }
        write_json(result_path, result)
        results[entry.name] = result
        run.trained.append(entry.name)
        log(f"[{sweep.table}] {entry.name}: AP^seg {_stat(metrics, 'segm', 'AP')}, AP^box {_stat(metrics, 'bbox', 'AP')}")

    if with_oracle:
        for entry in sweep.entries:
            if entry.codec is None:
                continue
            path = root / "oracle" / f"{entry.codec.key}.json"
            row = read_json(path)
            if row is None and only and entry.name not in only and results.get(entry.name) is None:
                continue  # not asked for now: show a cached oracle only
            if row is None:
                log(f"[{sweep.table}] oracle AP of {entry.codec.key} on {val_ann}")
                row = oracle_ap(entry.codec, val_ann, train_ann)
                write_json(path, row)
            oracle[entry.name] = row
    run.files = write_report(run, command=command)
    return run


def _train_seconds(path: Path) -> Optional[float]:
    """Sum of the engine's per-epoch ``seconds`` in ``metrics.jsonl`` (over resumes), or None."""
    if not path.is_file():
        return None
    total, seen = 0.0, False
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("type") == "epoch" and isinstance(rec.get("seconds"), (int, float)):
            total += rec["seconds"]
            seen = True
    return total if seen else None


def _stat(metrics: Optional[dict], iou: str, stat: str) -> str:
    v = (metrics or {}).get(iou, {}).get(stat)
    return "–" if v is None else f"{v:.1f}"


# ---------------------------------------------------------------------------- tables and plots
def _cell(v: Optional[float]) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or v < 0)):
        return "–"
    return f"{v:.1f}"


def entry_values(sweep: Sweep, entry: Entry, result: Optional[dict], oracle_row: Optional[dict]) -> dict:
    """The numbers of one table row: our metrics (None when missing), paper numbers and oracle AP."""
    metrics = (result or {}).get("metrics") or {}
    vals: dict[str, Optional[float]] = {}
    for label, iou, stat in METRIC_COLUMNS:
        v = (metrics.get(iou) or {}).get(stat)
        if iou == "segm" and entry.codec is None:
            v = None  # det-only: no masks
        vals[label] = v
    paper = PAPER.get(sweep.table, {}).get(entry.name, {})
    for column in paper_columns(sweep.table):
        vals["paper " + column] = paper.get(column)
    vals["oracle AP"] = (oracle_row or {}).get("ap")
    return vals


def format_table(sweep: Sweep, results: dict[str, Optional[dict]], oracle: Optional[dict[str, Optional[dict]]] = None) -> str:
    """A Markdown table in the paper's layout (AP^seg, AP50, AP75, APs/m/l, AP^box) with all of the
    paper's columns for that sub-table and the codec's oracle AP next to ours. ``*`` marks the paper's chosen setting; ``–`` is
    missing (not run, det-only masks, no object of that size, or not known from the paper)."""
    oracle = oracle or {}
    head = ([sweep.parameter] + [c[0] for c in METRIC_COLUMNS] + ["paper " + c for c in paper_columns(sweep.table)]
            + ["oracle AP"])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for e in sweep.entries:
        vals = entry_values(sweep, e, results.get(e.name), oracle.get(e.name))
        label = e.label + (" *" if PAPER_CHOICE.get(sweep.table) == e.name else "")
        if results.get(e.name) is None:
            label += " (not run)"
        lines.append("| " + " | ".join([label] + [_cell(vals[h]) for h in head[1:]]) + " |")
    return "\n".join(lines)


def plot_sweep(sweep: Sweep, results: dict[str, Optional[dict]], oracle: dict[str, Optional[dict]],
               path: str | os.PathLike) -> Path:
    """AP^seg, AP^box (ours; solid), oracle AP (dashed) and the paper's numbers (crosses) per entry → PNG."""
    # a bare Figure (no pyplot): saving does not switch the caller's matplotlib backend
    from matplotlib.figure import Figure

    rows = [entry_values(sweep, e, results.get(e.name), oracle.get(e.name)) for e in sweep.entries]
    xs = list(range(len(sweep.entries)))
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()

    def series(key: str) -> list[float]:
        return [math.nan if r[key] is None or r[key] < 0 else float(r[key]) for r in rows]

    styles = [("AP^seg", "o-", "C0"), ("AP^box", "s-", "C1"), ("oracle AP", "^--", "C2"),
              ("paper AP^seg", "x", "C0"), ("paper AP^box", "x", "C1")]
    for key, style, colour in styles:
        ys = series(key)
        if all(math.isnan(y) for y in ys):
            continue
        label = key.replace("AP^seg", "AP$^{seg}$").replace("AP^box", "AP$^{box}$")
        if key.startswith("paper"):
            ax.plot(xs, ys, style, color=colour, markersize=9, mew=2, linestyle="none", label=label)
        elif sweep.numeric:
            ax.plot(xs, ys, style, color=colour, label=label)
        else:  # categories (codec types): markers only
            ax.plot(xs, ys, style[0], color=colour, markersize=7, linestyle="none", label=label)
    ax.set_xticks(xs)
    ax.set_xticklabels([e.label for e in sweep.entries], rotation=20 if not sweep.numeric else 0)
    ax.set_xlabel(sweep.parameter)
    ax.set_ylabel("AP (%)")
    ax.set_title(f"Tab. {sweep.table}: {sweep.title} [{sweep.scale} scale]", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    return Path(path)


def write_report(run: SweepRun, command: str = "") -> list[Path]:
    """``table3x.md`` (table + notes), ``table3x.png`` and ``results.json`` in the sweep folder."""
    s = run.sweep
    png = plot_sweep(s, run.results, run.oracle, run.out_dir / f"table{s.table}.png")
    n_done = sum(r is not None for r in run.results.values())
    secs = [r.get("seconds_this_session") for r in run.results.values() if r]
    lines = [f"# Table {s.table}: {s.title}", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    lines += [
        f"- Scale: `{s.scale}` ({scale_preset(s.scale).description}).",
        f"- Entries finished: {n_done}/{len(s.entries)}.",
        "- Ours: COCO mask AP (AP^seg, AP50, AP75, APs/m/l) and box AP on the validation split, one run per "
        "entry, same seed. Oracle AP: every GT mask of the same validation annotations through the codec "
        "(`maskcodec.bench`), the ceiling a perfect model reaches with it.",
        f"- Paper: {PAPER_SOURCE} (C5-only R50 on COCO val)." + (
            "" if PAPER.get(s.table) else " Its numbers for this sub-table could not be retrieved here and are "
            "left empty; `*` marks the setting the paper chose."),
    ]
    if sum(1 for x in secs if x):
        lines.append(f"- Training wall time, summed over the finished entries: {sum(x for x in secs if x) / 60:.1f} min "
                     "(an entry resumed after an interruption counts its last session only).")
    lines += ["", run.table(), "", f"![table {s.table}]({png.name})", ""]
    md = atomic_write(run.out_dir / f"table{s.table}.md", "\n".join(lines))
    js = write_json(run.out_dir / "results.json", {
        "table": s.table, "scale": s.scale, "results": run.results, "oracle": run.oracle,
        "paper": PAPER.get(s.table, {}), "paper_choice": PAPER_CHOICE.get(s.table),
    })
    return [md, png, js]


# ---------------------------------------------------------------------------- command line
class _IntermixedMixin:
    """``parse_known_args`` that accepts ``key=value`` positionals after options
    (``ablate 3a --config C train.epochs=2``), which plain argparse rejects when another positional
    (the table) comes first."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def add_ablate_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Add ``ablate`` to a ``solq`` sub-command parser; the parsed namespace's ``func(args)`` runs it
    and returns the exit status."""
    base_cls = subparsers._parser_class  # the sub-parser class argparse would use (private, stable since 3.2)
    subparsers._parser_class = type("AblateParser", (_IntermixedMixin, base_cls), {})
    try:
        p = subparsers.add_parser(
            "ablate", help="run a codec ablation of the paper's Table 3 (3a-3e)",
            description=__doc__.split("\n\n")[0] + " Re-running the same command continues an interrupted sweep.",
        )
    finally:
        subparsers._parser_class = base_cls
    configure_parser(p)
    return p


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("table", help="which sub-table: " + ", ".join(TABLES) + " (or 'all')")
    p.add_argument("--config", required=True, help="base config YAML (e.g. configs/ablations/shapes_cpu.yaml)")
    p.add_argument("--out", default=None, help="output folder (default: runs/ablations/<scale>)")
    p.add_argument("--scale", default="cpu", choices=SCALES, help="tiny (tests), cpu (default) or full")
    p.add_argument("--only", default=None, help="comma-separated entry names to run now (others stay as they are)")
    p.add_argument("--dry-run", action="store_true", help="print each entry's overrides and codec, run nothing")
    p.add_argument("--no-oracle", action="store_true", help="skip the oracle AP (maskcodec bench)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, applied last")
    p.set_defaults(func=ablate_from_args)
    return p


def ablate_from_args(args: argparse.Namespace) -> int:
    """Run ``solq ablate`` from parsed arguments; returns the exit status (2 with a message on bad input)."""
    try:
        return _ablate(args)
    except (AblationError, ConfigError, FileNotFoundError) as err:
        print(f"solq ablate: error: {err}", file=sys.stderr)
        return 2


def _ablate(args: argparse.Namespace) -> int:
    tables = TABLES if str(args.table).lower() == "all" else (normalize_table(args.table),)
    out = args.out or os.path.join("runs", "ablations", args.scale)
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    argv = getattr(args, "argv", None)
    words = ["solq", "ablate", *argv] if argv is not None else ["solq", *sys.argv[1:]]
    command = " ".join(shlex.quote(str(a)) for a in words)
    for table in tables:
        sweep = sweep_definition(table, args.scale)
        if args.dry_run:
            print(f"# table {sweep.table}: {sweep.title} [{sweep.scale}]")
            for e in sweep.entries:
                print(f"{e.name:12s} {' '.join(e.overrides)}")
            continue
        run = run_sweep(table, args.config, out, args.scale, args.overrides, only=only,
                        with_oracle=not args.no_oracle, command=command.strip())
        print(f"\nTable {sweep.table}: {sweep.title} [{args.scale} scale]\n{run.table()}\n")
        print(f"wrote {', '.join(str(p) for p in run.files)}")
    return 0


def main_ablate(argv: Optional[Sequence[str]] = None) -> int:
    """``solq ablate ...`` as a function (``argv`` without the ``ablate`` word)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = configure_parser(argparse.ArgumentParser(prog="solq ablate", description=__doc__.split("\n\n")[0]))
    args = parser.parse_intermixed_args(argv)
    args.argv = argv
    return ablate_from_args(args)
