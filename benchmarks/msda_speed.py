"""Speed and memory of the deformable-attention core backends against the grid_sample reference.

All in one run, alternating the sides of each comparison:

1. The core alone (``ms_deform_attn_core``) at the encoder shapes of an 800 x 1216 image (levels
   (100, 152), (50, 76), (25, 38), (13, 19): Lq = S = 20197, M 8, D 48 = d_model 384 / 8, P 4;
   every query samples near its own pixel, as in the encoder) and at the decoder shapes (300
   queries), forward and forward+backward; peak memory of one encoder forward+backward.
2. The full SOLQ-R50 forward (official width: d_model 384, 6+6 layers, 300 queries, random
   weights) at 800 x 1216, batch 1.
3. One ``shapes_tiny`` training step (configs/shapes_tiny.yaml: forward, loss, backward, AdamW).
4. One ``coco_r50`` training step (configs/coco_r50.yaml, random init: R50, 4 levels, d_model 384,
   6+6 layers, 300 queries) on one synthetic image (default 800 x 1216) with synthetic targets:
   forward, loss, backward, gradient clipping and the fused AdamW step of ``solq train``. Its peak
   memory is the figure that shows the fused core's saving: there the encoder's attention works
   on ~20k queries, while at ``shapes_tiny``'s scale it is a sliver of the step's memory.

Memory on CPU is the peak resident set (``VmHWM``, restarted with ``/proc/self/clear_refs`` just
before the measured work) of a fresh subprocess per side, minus its size then (after the model,
optimizer and inputs are built and the kernels are compiled or loaded; see ``peak_memory.py``); on
CUDA it is ``torch.cuda.max_memory_allocated``. The training step also reports the tensors autograd
saved for backward, a figure independent of the allocator.

    python benchmarks/msda_speed.py --threads 1                   # CPU: numba vs reference, all sections
    python benchmarks/msda_speed.py --threads 1 --sections r50_train --r50-train-size 800x1216
    python benchmarks/msda_speed.py --device cuda --output DIR/msda_cuda.md   # GPU: triton vs reference

A run of some ``--sections`` only prints its report unless ``--output`` is given (so it never
replaces the full results file by a partial one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from msda_core import (  # noqa: E402
    CHANNELS,
    ENCODER_SHAPES,
    HEADS,
    POINTS,
    bench_core,
    child_core_memory,
    core_inputs,
    run_core,
    set_threads,
)
from peak_memory import SavedForBackward, peak_rss_mib, peak_since_start_mib, rss_mib  # noqa: E402

R50 = dict(num_classes=80, n_vector=256, d_model=384, backbone="resnet50", num_feature_levels=4, num_queries=300,
           enc_layers=6, dec_layers=6, dim_feedforward=1024, attn_backend="reference")
SECTIONS = ("core", "core_mem", "r50", "train", "r50_train")
# "lower peak memory" means below this fraction of the reference's: the resident peak of the same step
# varies by up to ~8% from run to run (results_msda_speed.md)
PEAK_NOISE = 0.9


def _child_r50(backend: str, repeats: int) -> dict:
    from solq.models import SOLQ

    torch.manual_seed(0)
    model = SOLQ(**{**R50, "attn_backend": backend}).eval()
    run_core(backend, core_inputs("decoder", "cpu"), False, "cpu")  # load the compiled kernel
    images, mask = torch.randn(1, 3, 800, 1216), torch.zeros(1, 800, 1216, dtype=torch.bool)
    before, times = rss_mib(), []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(images, mask)
            times.append(time.perf_counter() - t0)
    return {"times_s": times, "before_MiB": before, "peak_MiB": peak_rss_mib(),
            "process_peak_MiB": peak_since_start_mib(), "ran": model.attn_backends_used}


def _child_train(backend: str, steps: int) -> dict:
    from solq.config import load_config
    from solq.engine import build_criterion, build_model

    cfg = load_config(ROOT / "configs" / "shapes_tiny.yaml", [f"model.attn_backend={backend}"])
    torch.manual_seed(0)
    model = build_model(cfg, 3, cfg.codec.n_components).train()
    criterion = build_criterion(cfg, 3).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    size = cfg.data.scales[0]
    images, mask = torch.randn(cfg.data.batch_size, 3, size, size, generator=g), None
    targets = synthetic_targets(cfg.data.batch_size, 3, 3, cfg.codec.n_components, g)
    before, times = rss_mib(), []
    for i in range(steps + 1):  # first step = warm-up (not timed)
        t0 = time.perf_counter()
        loss = criterion.total_loss(criterion(model(images, mask), targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - t0)
    return {"times_s": times, "before_MiB": before, "peak_MiB": peak_rss_mib(),
            "process_peak_MiB": peak_since_start_mib(), "ran": model.attn_backends_used}


def synthetic_targets(batch: int, objects: int, num_classes: int, n_vector: int, g: torch.Generator) -> list[dict]:
    """``batch`` target dicts of ``objects`` boxes each: labels (k,) int64, boxes (k, 4) float32 cxcywh
    in [0, 1] near the centre, mask_vectors (k, n_vector) float32 N(0, 1)."""
    targets = []
    for _ in range(batch):
        k = objects
        boxes = torch.cat([0.3 + 0.4 * torch.rand(k, 2, generator=g), 0.1 + 0.3 * torch.rand(k, 2, generator=g)], 1)
        targets.append({"labels": torch.randint(0, num_classes, (k,), generator=g), "boxes": boxes,
                        "mask_vectors": torch.randn(k, n_vector, generator=g)})
    return targets


def parse_size(text: str) -> tuple[int, int]:
    """``"800x1216"`` -> (800, 1216): image height and width in pixels."""
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not HEIGHTxWIDTH, e.g. 800x1216") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"size {text!r}: height and width must be at least 32 pixels")
    return h, w


def _child_r50_train(backend: str, size: tuple[int, int], config: Path, objects: int = 7) -> dict:
    """One training step of ``config`` (random init) on one synthetic (1, 3, h, w) image, as
    ``solq train`` takes it: forward, loss, backward, gradient clipping, fused AdamW.

    Memory: peak RSS above the process after model, optimizer, inputs and kernels are ready
    (the AdamW state, created by the step, counts in the peak on both sides), and the tensors
    autograd saved for backward (parameters excluded)."""
    from solq.builders import build_criterion, build_model, build_optimizer
    from solq.config import load_config

    cfg = load_config(config, [f"model.attn_backend={backend}"])
    num_classes = cfg.model.num_classes or 80  # COCO's 80 categories, as solq train sets it
    torch.manual_seed(0)
    model = build_model(cfg, num_classes, cfg.codec.n_components).train()
    criterion = build_criterion(cfg, num_classes).train()
    optimizer = build_optimizer(model, cfg)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(1, 3, *size, generator=g)
    targets = synthetic_targets(1, objects, num_classes, cfg.codec.n_components, g)
    run_core(backend, core_inputs("decoder", "cpu"), True, "cpu")  # compile / load the forward and backward kernels
    torch.manual_seed(1)  # the same dropout masks on both sides
    saved = SavedForBackward(model.parameters())
    before = rss_mib()
    t0 = time.perf_counter()
    with saved.hooks():
        loss = criterion.total_loss(criterion(model(images, None), targets))
    forward_s, forward_peak = time.perf_counter() - t0, peak_rss_mib()
    optimizer.zero_grad()
    loss.backward()
    if cfg.train.clip_max_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_max_norm)
    optimizer.step()
    return {"times_s": [time.perf_counter() - t0], "forward_s": forward_s, "loss": float(loss.detach()),
            "before_MiB": before, "forward_peak_MiB": forward_peak, "peak_MiB": peak_rss_mib(), "saved_MiB": saved.mib(),
            "process_peak_MiB": peak_since_start_mib(), "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "ran": model.attn_backends_used, "config": os.path.relpath(Path(config).resolve(), ROOT), "objects": objects}


def run_child(args: list[str]) -> dict:
    """Run ``args`` of this script in a fresh subprocess; its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def alternate(job: list[str], backends: list[str], rounds: int, threads: int, device: str) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {b: [] for b in ["reference", *backends]}
    for _ in range(rounds):
        for b in results:
            # job = [JOB, *options of that job]
            results[b].append(run_child(["--child", job[0], b, *job[1:], "--threads", str(threads), "--device", device]))
    return results


def _mem(r: dict) -> str:
    return f"{r['peak_MiB'] - r['before_MiB']:.0f}"


def _core_lines(a: argparse.Namespace, core: list[dict], core_mem: dict) -> list[str]:
    lines = []
    if core:
        lines += [f"## Core alone (median of {a.repeats}; M {HEADS}, D {CHANNELS}, P {POINTS}, levels {ENCODER_SHAPES})",
                  "", "| shapes | Lq | pass | backend | backend s | reference s | speed-up | max abs diff |",
                  "|---|---:|---|---|---:|---:|---:|---:|"]
        for r in core:
            lines.append(f"| {r['shapes']} | {r['lq']} | {r['pass']} | {r['backend']} | {r['backend_s']:.4f} | "
                         f"{r['reference_s']:.4f} | **{r['speedup']:.1f}x** | {r['max_abs_diff']:.1e} |")
        lines.append("")
    if core_mem:
        lines += ["Peak memory of one encoder-shape forward+backward (MiB above the inputs; fresh process per side): "
                  + ", ".join(f"{b} {_mem(m)}" for b, m in core_mem.items()), ""]
    return lines


def _step_lines(title: str, res: dict[str, list[dict]]) -> list[str]:
    lines = [f"## {title}", "", "| backend (ran) | median s | time vs reference | process peak RSS MiB | "
             "peak RSS above the model's MiB |", "|---|---:|---:|---:|---:|"]
    med = {b: statistics.median([t for r in rs for t in r["times_s"]]) for b, rs in res.items()}
    for b, rs in res.items():
        lines.append(f"| {b} ({', '.join(rs[0]['ran'])}) | {med[b]:.3f} | {med[b] / med['reference']:.2f}x | "
                     + " / ".join(f"{r['process_peak_MiB']:.0f}" for r in rs) + " | " + " / ".join(_mem(r) for r in rs) + " |")
    return lines + [""]


def _r50_train_lines(res: dict[str, list[dict]], size: tuple[int, int]) -> list[str]:
    r0 = res["reference"][0]
    lines = [f"## {Path(r0['config']).stem} training step at {size[0]}x{size[1]} ({r0['config']}, random init, "
             f"{r0['params_M']:.1f} M parameters; batch 1, {r0['objects']} synthetic objects: forward, loss, backward, clip, "
             "fused AdamW)", "",
             "| backend (ran) | step s | time vs reference | loss | saved for backward MiB | process peak RSS MiB | "
             "peak above the built model, through forward MiB | peak above the built model, whole step MiB | "
             "peak vs reference |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ref_peak = min(r["peak_MiB"] - r["before_MiB"] for r in res["reference"])
    ref_s = statistics.median(r["times_s"][0] for r in res["reference"])
    for b, rs in res.items():
        for r in rs:
            peak = r["peak_MiB"] - r["before_MiB"]
            lines.append(f"| {b} ({', '.join(r['ran'])}) | {r['times_s'][0]:.1f} | {r['times_s'][0] / ref_s:.2f}x | "
                         f"{r['loss']:.6f} | {r['saved_MiB']:.0f} | {r['process_peak_MiB']:.0f} | {r['forward_peak_MiB'] - r['before_MiB']:.0f} | "
                         f"**{peak:.0f}** | {peak / ref_peak:.2f}x |")
    return lines + [""]


def report(a: argparse.Namespace, results: dict) -> str:
    """Markdown of the sections in ``results`` (section name -> its rows, see ``SECTIONS``)."""
    cmd = "python benchmarks/msda_speed.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    lines = ["# Deformable-attention core: fused backends vs the grid_sample reference", "",
             f"Command: `{cmd.strip()}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, device {a.device}, "
             f"{a.threads} thread(s) (torch and numba); load average when written: "
             + "/".join(f"{x:.1f}" for x in os.getloadavg()) + ". Ratios are reference time / backend time, "
             "both sides alternated in this one run.", ""]
    lines += _core_lines(a, results.get("core", []), results.get("core_mem", {}))
    if results.get("r50"):
        lines += _step_lines("SOLQ-R50 forward at 800x1216 (random weights, batch 1, no_grad)", results["r50"])
    if results.get("train"):
        lines += _step_lines("shapes_tiny training step (batch 4, 160x160: forward, loss, backward, AdamW)",
                             results["train"])
    if results.get("r50_train"):
        lines += _r50_train_lines(results["r50_train"], a.r50_train_size)
    return "\n".join(lines)


def targets(results: dict, r50_train_size: tuple[int, int]) -> str:
    """The issue's targets, each with its measured figure from this run."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = ["## Targets (issue 12)", ""]
    for r in results.get("core", []):
        if r["shapes"] == "encoder":
            need = 8.0 if r["pass"] == "fwd" else 4.0
            lines.append(f"* {r['backend']} core, encoder shapes, {r['pass']}: >= {need:.0f}x faster than the reference: "
                         f"{r['speedup']:.1f}x, {verdict(r['speedup'] >= need)}.")
    r50 = results.get("r50", {})
    med = {b: statistics.median([t for x in rs for t in x["times_s"]]) for b, rs in r50.items()}
    for b in (b for b in med if b != "reference"):
        ratio = med[b] / med["reference"]
        lines.append(f"* SOLQ-R50 forward at 800x1216 on {b}: <= 0.5x the reference time: {ratio:.2f}x, "
                     f"{verdict(ratio <= 0.5)}.")
    h, w = r50_train_size
    step_config = Path(results["r50_train"]["reference"][0]["config"]).stem if results.get("r50_train") else ""
    for key, what in (("train", "shapes_tiny training step"), ("r50_train", f"{step_config} training step at {h}x{w}")):
        # the worst (highest) round of the backend against the best (lowest) of the reference
        peak = {b: max(x["peak_MiB"] - x["before_MiB"] for x in rs) for b, rs in results.get(key, {}).items()}
        ref = min((x["peak_MiB"] - x["before_MiB"] for x in results.get(key, {}).get("reference", [])), default=0)
        for b in (b for b in peak if b != "reference"):
            lines.append(f"* {what} peak memory on {b} lower than on the reference: {peak[b]:.0f} vs {ref:.0f} MiB "
                         f"of peak RSS above the built model ({peak[b] / ref:.2f}x), "
                         f"{verdict(peak[b] < PEAK_NOISE * ref)}.")
    return "\n".join(lines) + "\n"


def run_section(name: str, a: argparse.Namespace, backends: list[str]):
    """The rows of section ``name`` (core timings in this process, the others in fresh subprocesses)."""
    if name == "core":
        return bench_core(backends, a.device, a.repeats)
    if name == "core_mem":
        return {b: rs[0] for b, rs in alternate(["core_mem"], backends, 1, a.threads, a.device).items()}
    if a.device != "cpu":
        return {}
    if name == "r50":
        return alternate(["r50"], backends, 1, a.threads, a.device) if a.r50_rounds else {}
    if name == "train":
        return alternate(["train"], backends, 1, a.threads, a.device) if a.train_steps else {}
    size = f"{a.r50_train_size[0]}x{a.r50_train_size[1]}"
    job = ["r50_train", "--r50-train-size", size, "--r50-train-config", a.r50_train_config]
    return alternate(job, backends, a.r50_train_rounds, a.threads, a.device) if a.r50_train_rounds else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: all)")
    ap.add_argument("--repeats", type=int, default=3, help="core timings per side (median)")
    ap.add_argument("--r50-rounds", type=int, default=1, help="SOLQ-R50 forwards per side (0: skip)")
    ap.add_argument("--train-steps", type=int, default=10, help="shapes_tiny steps per side (0: skip)")
    ap.add_argument("--r50-train-size", type=parse_size, default=(800, 1216), metavar="HxW",
                    help="image size of the coco_r50 training step (default 800x1216)")
    ap.add_argument("--r50-train-rounds", type=int, default=1,
                    help="coco_r50 training steps per side, each in a fresh process (0: skip)")
    ap.add_argument("--r50-train-config", default=str(ROOT / "configs" / "coco_r50.yaml"), help=argparse.SUPPRESS)
    ap.add_argument("--output", default=None,
                    help="report file (default: benchmarks/results_msda_speed.md for a run of all sections, "
                    "none for a partial run)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # internal: JOB BACKEND in a subprocess
    a = ap.parse_args(argv)
    sections = [x.strip() for x in a.sections.split(",") if x.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        ap.error(f"--sections {a.sections!r}: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    set_threads(a.threads)
    if a.child:
        job, backend = a.child
        if job == "core_mem":
            res = child_core_memory(backend, a.device)
        elif job == "r50":
            res = _child_r50(backend, a.r50_rounds)
        elif job == "r50_train":
            res = _child_r50_train(backend, a.r50_train_size, Path(a.r50_train_config))
        else:
            res = _child_train(backend, a.train_steps)
        print(json.dumps(res))
        return 0
    if a.device == "cuda" and not torch.cuda.is_available():
        print("msda_speed: --device cuda but torch.cuda.is_available() is False")
        return 2
    backends = ["triton"] if a.device == "cuda" else ["numba"]
    results = {}
    for name in sections:
        results[name] = run_section(name, a, backends)
        print(name, results[name], flush=True)
    text = report(a, results) + "\n" + targets(results, a.r50_train_size)
    output = a.output or (str(ROOT / "benchmarks" / "results_msda_speed.md") if len(sections) == len(SECTIONS) else None)
    if output:
        from maskcodec.atomic import atomic_write

        atomic_write(output, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
