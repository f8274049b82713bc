"""The sweeps of SOLQ's Table 3 as data: the paper's settings, the paper's numbers, the scale presets.

A sweep (``"3a"`` … ``"3e"``) is a tuple of entries; each entry is a set of ``key=value`` config
overrides for one base config, and the codec it trains with. ``sweep_definition(table, scale)``
builds one; ``PAPER`` holds the paper's numbers under the same entry names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from maskcodec.bench import Setting

TABLES: tuple[str, ...] = ("3a", "3b", "3c", "3d", "3e")
SCALES: tuple[str, ...] = ("tiny", "cpu", "full")


class AblationError(RuntimeError):
    """A sweep cannot run (bad table/scale, missing data, a failed entry); the message says why."""


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


# ---------------------------------------------------------------------------- definitions
@dataclass(frozen=True)
class CodecSpec(Setting):
    """``maskcodec.bench.Setting`` (codec name, mask size N, vector length n_k) as a sweep entry uses it."""

    @property
    def name(self) -> str:
        return self.codec

    @property
    def key(self) -> str:
        """File-name key of the setting, e.g. ``"pca_N128_k256"``."""
        return f"{self.codec}_N{self.mask_size}_k{self.n_components}"

    @property
    def requires_fit(self) -> bool:
        from maskcodec import codec_class

        return bool(codec_class(self.codec).requires_fit)

    def overrides(self) -> tuple[str, ...]:
        """The ``codec.*`` config overrides that select this setting."""
        return (f"codec.name={self.codec}", f"codec.mask_size={self.mask_size}",
                f"codec.n_components={self.n_components}")


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


def _table_3a(preset: ScalePreset) -> Sweep:
    N, K = preset.mask_size(128), preset.dims(256)
    flat = CodecSpec("flatten", N, preset.flatten_dims(28))
    dct = CodecSpec("dct", N, K)
    entries = [
        Entry("det_only", "Det. only", ("model.with_vector=false", *dct.overrides()), None),
        Entry("flatten", f"Flatten {math.isqrt(flat.n_components)}²", (*flat.overrides(), "loss.vector_loss=l2_dice"),
              flat),
    ]
    for name, label in (("sparse", "Sparse coding"), ("pca", "PCA"), ("dct", "DCT")):
        spec = CodecSpec(name, N, K)
        entries.append(Entry(name, label, (*spec.overrides(), "loss.vector_loss=l1"), spec))
    return Sweep("3a", "Mask compression coding (n_k = %d, N = %d)" % (K, N), "codec", preset.name,
                 tuple(entries), numeric=False)


def _table_3b(preset: ScalePreset) -> Sweep:
    dct = CodecSpec("dct", preset.mask_size(128), preset.dims(256))
    entries = tuple(Entry(f"lambda_{_fmt_value(lam)}", _fmt_value(lam),
                          (*dct.overrides(), f"loss.vector={lam}", "loss.vector_layers=1"), dct, lam)
                    for lam in (0.3, 0.7, 1.0, 2.0, 3.0, 4.0))
    return Sweep("3b", "Vector loss weight λ_vec (vector loss on the last decoder layer only)", "λ_vec",
                 preset.name, entries)


def _table_3c(preset: ScalePreset) -> Sweep:
    dct = CodecSpec("dct", preset.mask_size(128), preset.dims(256))
    entries = tuple(Entry(f"layers_{k}", str(k),
                          (*dct.overrides(), f"loss.vector_layers={k}", "model.dec_layers=6"), dct, k)
                    for k in range(1, 7))
    return Sweep("3c", "Number of (last) decoder layers with the vector loss", "decoder layers", preset.name,
                 entries)


def _table_3d(preset: ScalePreset) -> Sweep:
    K = preset.dims(256)
    entries = []
    for n in (64, 96, 128, 256):
        spec = CodecSpec("dct", preset.mask_size(n), K)
        entries.append(Entry(f"N_{n}", str(spec.mask_size), spec.overrides(), spec, spec.mask_size))
    return Sweep("3d", f"Mask size N (n_k = {K})", "N", preset.name, tuple(entries))


def _table_3e(preset: ScalePreset) -> Sweep:
    N = preset.mask_size(128)
    entries = []
    for k in (144, 256, 300, 400):
        spec = CodecSpec("dct", N, preset.dims(k))
        entries.append(Entry(f"nk_{k}", str(spec.n_components), spec.overrides(), spec, spec.n_components))
    return Sweep("3e", f"Vector length n_k (N = {N})", "n_k", preset.name, tuple(entries))


_TABLE_BUILDERS: dict[str, Callable[[ScalePreset], Sweep]] = {
    "3a": _table_3a, "3b": _table_3b, "3c": _table_3c, "3d": _table_3d, "3e": _table_3e,
}


def sweep_definition(table: str, scale: str = "cpu") -> Sweep:
    """The entries of ``table`` (``"3a"`` … ``"3e"``) at ``scale``; raises ``AblationError`` for bad names."""
    return _TABLE_BUILDERS[normalize_table(table)](scale_preset(scale))


def normalize_table(table: str) -> str:
    t = str(table).lower().removeprefix("table").removeprefix("tab").strip(" .")
    if t not in TABLES:
        raise AblationError(f"unknown table {table!r}; choose from {', '.join(TABLES)}")
    return t


def scale_preset(scale: str) -> ScalePreset:
    if scale not in SCALE_PRESETS:
        raise AblationError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    return SCALE_PRESETS[scale]
