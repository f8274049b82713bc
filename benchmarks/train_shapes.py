"""Train SOLQ from scratch on CPU and record the curve and final AP in benchmarks/results_training.md.

    python benchmarks/train_shapes.py                       # shapes_tiny: synthetic shapes, <= 20 min on 2 cores
    python benchmarks/train_shapes.py --experiment coco128  # overfit 8 coco128 training images (real-data path)
    python benchmarks/train_shapes.py train.epochs=5        # extra config overrides

Each experiment trains with ``solq.engine.train``, evaluates on its held-out split (for the
coco128 overfit: on the same 8 training images), copies the curve PNG next to this script and
rewrites its own section of ``results_training.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from solq.config import load_config  # noqa: E402
from solq.engine import plot_curves, read_metrics, train  # noqa: E402
from solq.evaluation import format_table  # noqa: E402

EXPERIMENTS = {
    "shapes_tiny": {
        "config": "configs/shapes_tiny.yaml",
        "overrides": [],
        "title": "Synthetic shapes (configs/shapes_tiny.yaml), trained from scratch on CPU",
        "eval_on": "its held-out val split (50 images)",
    },
    "coco128": {
        "config": "configs/coco128.yaml",
        # 8 training images, evaluated on the same 8 images: proof that the real-data path learns end to end
        "overrides": [
            "data.train.limit=8", "data.val.image_dir=../shared/data/coco128/images/train",
            "data.val.ann_file=../shared/data/coco128/annotations/instances_train.json", "data.val.limit=8",
            "model.backbone=resnet18", "model.d_model=128", "model.enc_layers=2", "model.dec_layers=2",
            "model.dim_feedforward=512", "model.num_queries=50", "model.vector_hidden_dim=256",
            "model.dropout=0.0", "codec.mask_size=32", "codec.n_components=64",
            "data.scales=[160]", "data.max_size=224", "data.crop=false", "data.hflip=false",
            "data.batch_size=4", "train.epochs=100", "train.lr=5e-4", "train.lr_backbone=5e-5",
            "train.lr_drop=80", "train.eval_every=25", "train.log_every=2", "train.checkpoint_every_iters=0",
            "train.num_threads=1", "data.num_workers=0",
        ],
        "title": "coco128 overfit: 8 real COCO training images, random init",
        "eval_on": "the same 8 training images (an overfit check of the real-data path, not generalisation)",
    },
}


def write_section(md: Path, key: str, text: str) -> None:
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    old = md.read_text() if md.is_file() else "# Training benchmarks\n\nWritten by `benchmarks/train_shapes.py`.\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    md.write_text(new)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", choices=sorted(EXPERIMENTS), default="shapes_tiny")
    ap.add_argument("--output-dir", help="default runs/bench_<experiment>")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results_training.md"))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--tag", help="name of this run's section / picture (default: the experiment name)")
    ap.add_argument("--summarize-only", action="store_true",
                    help="do not train: write the section from the run's metrics.jsonl (e.g. of a stopped run)")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    exp = EXPERIMENTS[a.experiment]
    tag = a.tag or a.experiment
    out = a.output_dir or str(ROOT / "runs" / f"bench_{tag}")
    os.chdir(ROOT)
    overrides = exp["overrides"] + list(a.overrides) + [f"output_dir={out}"]
    cfg = load_config(exp["config"], overrides)
    records = read_metrics(Path(out) / "metrics.jsonl")
    if not a.summarize_only:
        train(cfg, resume=a.resume)
        records = read_metrics(Path(out) / "metrics.jsonl")
    ips = [r["images_per_s"] for r in records if r.get("type") == "train"]
    epochs = [r for r in records if r.get("type") == "epoch"]
    evals = [r for r in records if r.get("type") == "eval"]
    metrics = {k: evals[-1][k] for k in ("bbox", "segm", "boundary")} if evals else None
    minutes = sum(r["seconds"] for r in epochs) / 60
    steps = max((r["step"] for r in records if "step" in r), default=0)
    if records:
        plot_curves(records, Path(out) / "curves.png")
    png = ROOT / "benchmarks" / f"training_{tag}.png"
    if (Path(out) / "curves.png").is_file():
        shutil.copyfile(Path(out) / "curves.png", png)
    command = "python benchmarks/train_shapes.py --experiment " + a.experiment + (f" --tag {tag}" if a.tag else "") + (
        " " + " ".join(shlex.quote(o) for o in a.overrides) if a.overrides else "")
    lines = [
        f"## {exp['title']}" + (f" ({tag})" if a.tag else ""),
        "",
        f"Command: `{command}` (equivalent: `solq train --config {exp['config']} "
        + " ".join(shlex.quote(o) for o in exp["overrides"] + list(a.overrides)) + "`)",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {cfg.train.num_threads or torch.get_num_threads()} torch thread(s), "
        f"{os.cpu_count()} cores; load average (1/5/15 min) when this report was written: "
        + "/".join(f"{x:.1f}" for x in os.getloadavg()) + " (above ~2.5 the machine was shared and times are pessimistic).",
        f"Training time {minutes:.1f} min (sum of epoch times, evaluation excluded) for {steps} steps = "
        f"{len(epochs)} of {cfg.train.epochs} configured epochs, batch {cfg.data.batch_size}; median training speed "
        f"{sorted(ips)[len(ips) // 2] if ips else float('nan'):.2f} images/s."
        + ("" if len(epochs) >= cfg.train.epochs else
           f" The run was stopped after {len(epochs)} epochs (time limit); continue it with `--resume`."),
        "",
        f"Last evaluation (epoch {evals[-1]['epoch'] if evals else '-'}) on {exp['eval_on']}:",
        "",
        format_table(metrics) if metrics else "(no evaluation)",
        "",
        "AP per evaluated epoch: " + ", ".join(
            f"epoch {r['epoch']}: box {r['bbox']['AP']:.1f} / mask {r['segm']['AP']:.1f}" for r in evals),
        "",
        f"![training curves]({png.name})",
    ]
    write_section(Path(a.results), tag, "\n".join(lines))
    (Path(out) / "final_metrics.json").write_text(json.dumps(metrics, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
