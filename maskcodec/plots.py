"""Figures for ``maskcodec bench`` (matplotlib, Agg backend; no display needed).

Each ``plot_*`` function takes benchmark rows (dicts as in ``BenchResult.rows``) and returns
a ``matplotlib.figure.Figure``, or ``None`` when the rows hold nothing to show (e.g. a single
n_k for an "IoU vs n_k" plot). ``write_all`` saves every figure atomically as PNG.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from .atomic import atomic_open

Rows = Sequence[dict[str, Any]]


def _subplots(*grid, figsize, dpi, **kw):
    """``pyplot.subplots`` without pyplot: a bare Figure never touches the user's backend or global state."""
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(*grid, **kw)


def _series(rows: Rows, group: tuple[str, ...], x: str, y: str) -> dict[tuple, list[tuple[float, float]]]:
    out: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r.get(y) is None:
            continue
        out[tuple(r[g] for g in group)].append((r[x], r[y]))
    return {k: sorted(v) for k, v in out.items()}


def _line_plot(series, title: str, xlabel: str, ylabel: str, label_fmt, xlog: bool = False) -> Figure | None:
    if not series:
        return None
    fig, ax = _subplots(figsize=(6.4, 4.4), dpi=110)
    for key, pts in series.items():
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", label=label_fmt(key))
    if xlog:
        ax.set_xscale("log", base=2)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_iou_vs_dims(rows: Rows, metric: str = "iou_img_mean") -> Figure | None:
    """Mean image-space mask IoU against n_k, one line per (codec, N)."""
    series = _series(rows, ("codec", "mask_size"), "n_components", metric)
    return _line_plot(series, "Reconstruction IoU vs vector length", "n_k", "mean mask IoU (image space)",
                      lambda k: f"{k[0]} N={k[1]}")


def plot_iou_vs_size(rows: Rows, metric: str = "iou_img_mean") -> Figure | None:
    """Mean image-space mask IoU against N, one line per (codec, n_k)."""
    series = _series(rows, ("codec", "n_components"), "mask_size", metric)
    return _line_plot(series, "Reconstruction IoU vs mask size N", "N (mask is N×N)", "mean mask IoU (image space)",
                      lambda k: f"{k[0]} n_k={k[1]}", xlog=True)


def plot_ap_vs_dims(rows: Rows) -> Figure | None:
    """Oracle mask AP against n_k, one line per (codec, N)."""
    series = _series(rows, ("codec", "mask_size"), "n_components", "ap")
    return _line_plot(series, "Oracle mask AP vs vector length", "n_k", "oracle AP^seg (%)",
                      lambda k: f"{k[0]} N={k[1]}")


def plot_throughput(rows: Rows) -> Figure | None:
    """Encode and decode masks/s per setting (log scale)."""
    rows = [r for r in rows if r.get("encode_masks_per_s") or r.get("decode_masks_per_s")]
    if not rows:
        return None
    labels = [f"{r['codec']}\nN={r['mask_size']} k={r['n_components']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = _subplots(figsize=(max(6.4, 0.75 * len(rows) + 2), 4.4), dpi=110)
    ax.bar(x - 0.2, [r.get("encode_masks_per_s") or 0 for r in rows], 0.4, label="encode")
    ax.bar(x + 0.2, [r.get("decode_masks_per_s") or 0 for r in rows], 0.4, label="decode")
    ax.set_yscale("log")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("masks / s")
    ax.set_title("Codec throughput")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_examples(examples: Sequence[dict], max_settings: int = 12) -> Figure | None:
    """Example masks: the N×N target, then each setting's thresholded reconstruction."""
    examples = [e for e in examples if e.get("recon")]
    if not examples:
        return None
    labels = list(dict.fromkeys(lbl for e in examples for lbl in e["recon"]))
    if len(labels) > max_settings:  # keep every codec's first setting, then fill in run order
        first = list(dict.fromkeys({lbl.split()[0]: lbl for lbl in reversed(labels)}.values()))
        keep = set(first[:max_settings])
        keep |= set([lbl for lbl in labels if lbl not in keep][: max_settings - len(keep)])
        labels = [lbl for lbl in labels if lbl in keep]
    cols = 1 + len(labels)
    fig, axes = _subplots(len(examples), cols, figsize=(1.5 * cols, 1.6 * len(examples)), dpi=110, squeeze=False)
    for r, e in enumerate(examples):
        size = max(e["targets"])
        axes[r, 0].imshow(e["targets"][size], cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(f"ann {e['ann_id']}\narea {e['area']:.0f}", fontsize=6)
        if r == 0:
            axes[r, 0].set_title(f"target N={size}", fontsize=6)
        for c, lbl in enumerate(labels, start=1):
            m = e["recon"].get(lbl)
            if m is not None:
                axes[r, c].imshow(m, cmap="gray", vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(lbl.replace(" ", "\n", 1), fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` as PNG atomically."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return Path(path)


def write_all(result: Any, out_dir: str | os.PathLike) -> list[Path]:
    """Save every figure that has something to show for ``result`` (a ``BenchResult``) into ``out_dir``."""
    out = Path(out_dir)
    figures = {
        "iou_vs_nk.png": plot_iou_vs_dims(result.rows),
        "iou_vs_N.png": plot_iou_vs_size(result.rows),
        "ap_vs_nk.png": plot_ap_vs_dims(result.rows),
        "throughput.png": plot_throughput(result.rows),
        "examples.png": plot_examples(result.examples),
    }
    return [save_figure(fig, out / name) for name, fig in figures.items() if fig is not None]
