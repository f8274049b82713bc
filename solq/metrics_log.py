"""The run's metrics log (``metrics.jsonl``, one JSON object per line) and its plot (``curves.png``).

Records: ``{"type": "train", "step", "epoch", "iter", "loss", <terms>, "lr", "images_per_s"}`` every
``train.log_every`` steps, ``{"type": "epoch", ...}`` after each epoch and ``{"type": "eval", "epoch",
"bbox": {...}, "segm": {...}, "boundary": {...}}`` after each evaluation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from maskcodec.atomic import atomic_open, atomic_write

METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"


class MetricsLog:
    """Append-only JSON-lines file; each record is written with one ``write`` + flush + fsync."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, allow_nan=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> list[dict]:
        return read_metrics(self.path)

    def truncate_after(self, step: int) -> None:
        """Drop records logged after global step ``step`` (work lost by a killed run), atomically."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in keep))


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Records of a ``metrics.jsonl`` (a torn last line, from a kill mid-write, is ignored)."""
    out = []
    path = Path(path)
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_curves(records: list[dict], path: str | os.PathLike) -> None:
    """Training loss per step and AP per epoch → PNG (atomic)."""
    from matplotlib.figure import Figure  # no pyplot: never switch the caller's backend

    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval"]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    if train:
        steps = [r["step"] for r in train]
        axes[0].plot(steps, [r["loss"] for r in train], lw=0.8, alpha=0.5, label="loss")
        k = max(1, len(train) // 20)
        if len(train) > k:
            sm = [sum(r["loss"] for r in train[max(0, i - k + 1): i + 1]) / len(train[max(0, i - k + 1): i + 1])
                  for i in range(len(train))]
            axes[0].plot(steps, sm, lw=1.5, label=f"loss (mean of {k})")
        axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("weighted total loss")
    axes[0].legend(loc="upper right")
    axes[0].grid(alpha=0.3)
    for t in ("bbox", "segm", "boundary"):
        pts = [(r["epoch"], r[t]["AP"]) for r in evals if t in r]
        if pts:
            axes[1].plot(*zip(*pts), marker="o", label=f"{t} AP")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("AP (%)")
    axes[1].grid(alpha=0.3)
    if evals:
        axes[1].legend(loc="lower right")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
