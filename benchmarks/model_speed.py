"""Forward time and peak memory of SOLQ on CPU, and post-processing time per image.

Sections (all in one run, same machine, same thread count):

1. Forward (eval, ``torch.no_grad``, pure-PyTorch ``grid_sample`` deformable-attention core)
   of SOLQ-R50 with the official width (d_model 384, 6+6 layers, 300 queries, 4 levels,
   n_vector 256) at 800 x 1216, batch 1, and of a small config (ResNet-18, d_model 128, 2+2
   layers, 100 queries) at 320 x 320. Each config runs in its own subprocess so the peak
   resident memory (``ru_maxrss``) increase during the forward is its own. Random weights:
   speed does not depend on them.
2. Outputs -> COCO RLE for 100 detections of held-out COCO masks (coco_mini val, real boxes
   rescaled to a 480 x 640 image and jittered) with the DCT codec (N = 128, n_k = 256), four
   ways in interleaved rounds, one torch/numba/BLAS thread: the official-style loop (Python
   zigzag walk, ``idctn``, ``grid_sample`` paste, ``encode``), a plain per-mask loop (zigzag
   scatter, ``idctn``, bilinear resize into the integer box, paste, ``encode``), the current path
   (``PostProcess`` + ``results_to_coco``: full-image masks) and the new path
   (``PostProcess(output="rle")``: box-local paste straight into RLE, ``maskcodec.box_rle``),
   checked to give a byte-identical results json.

    .venv/bin/python benchmarks/model_speed.py --threads 1 --output benchmarks/results_model_speed.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

from rle_baselines import decode_rles, heldout_detections, mean_iou, official_loop, plain_loop

CONFIGS = {
    "SOLQ-R50 (official width)": dict(
        model=dict(num_classes=80, n_vector=256, d_model=384, backbone="resnet50", num_feature_levels=4,
                   num_queries=300, enc_layers=6, dec_layers=6, dim_feedforward=1024),
        size=(800, 1216), repeats=2),
    "small (R18, d128, 2+2 layers)": dict(
        model=dict(num_classes=80, n_vector=256, d_model=128, backbone="resnet18", num_feature_levels=4,
                   num_queries=100, enc_layers=2, dec_layers=2, dim_feedforward=512),
        size=(320, 320), repeats=5),
}


NOTES = [
    "## Notes", "",
    "* The machine is shared with other jobs: compare rows of one run, not absolute numbers across runs; the",
    "  load average above tells how contended the run was. One torch thread is the default because under",
    "  contention OpenMP spin-waiting with 2 threads made a tiny forward ~40x slower (4.6 s vs 0.11 s).",
    "* Peak RSS is the process's ``ru_maxrss`` after the forwards (the model is built first, so it includes",
    "  weights and imported libraries); the increase over \"RSS before forward\" is the activations' peak.",
    "* The forward uses the model's default core (``attn_backend=\"auto\"``: the fused numba kernel on CPU);",
    "  ``benchmarks/msda_speed.py`` compares the cores.",
    "* Outputs -> RLE goal (issue 14): <= 10 ms per image for 100 detections and >= 10x the plain per-mask loop,",
    "  one thread, in one run. The new path is the batched DCT decode of 100 x 128 x 128 soft masks (on CPU",
    "  `PostProcess` decodes the numpy view: `maskcodec.dct_decode`'s numba kernel) plus `box_rle._paste_runs`, which evaluates only the pixels inside the boxes",
    "  with `paste`'s float64 expressions (bit-identical, so the json is byte-identical: 0 differing pixels) and",
    "  writes their column-major runs; the current path also writes and RLE-encodes 100 full 480 x 640 masks.",
    "* Not taken: folding decode and resize into `B_h C B_w^T` per box (measured above). At 480 x 640 these",
    "  COCO boxes hold 1.3 M pixels, about the 1.6 M cells of the 100 decoded 128 x 128 grids, so the fold's ~22",
    "  multiply-adds per box pixel cost as much as the decode's ~22 per grid cell, in float64 more; and its",
    "  rounding differs from the float32 reference decode, so pixels at the threshold can differ.",
    "",
]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(name: str, threads: int) -> dict:
    import torch

    from solq.models import SOLQ
    from solq.models.deform_attn import attn_backends_used

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = CONFIGS[name]
    model = SOLQ(**cfg["model"]).eval()
    h, w = cfg["size"]
    images = torch.randn(1, 3, h, w)
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    rss_before = _rss_mib()
    times = []
    with torch.no_grad():
        for i in range(cfg["repeats"] + 1):  # first call = warm-up
            t = time.perf_counter()
            model(images, mask)
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"name": name, "size": f"{h}x{w}", "warmup_s": times[0], "times_s": times[1:],
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "core": ", ".join(attn_backends_used(model)),
            "rss_before_MiB": rss_before, "peak_rss_MiB": peak}


HEIGHT, WIDTH, NUM_DET = 480, 640, 100  # the post-processing sections' image and detections


def postprocess_bench(codec, outputs: dict, repeats: int = 7, official_repeats: int = 2) -> dict:
    """Outputs -> COCO RLE for 100 held-out detections at 480 x 640, four ways, interleaved rounds."""
    import numpy as np
    import torch

    from solq.models import PostProcess, results_to_coco

    h, w, num_det = HEIGHT, WIDTH, NUM_DET
    sizes = torch.tensor([[h, w]])
    current_post = PostProcess(codec, num_select=num_det)
    new_post = PostProcess(codec, num_select=num_det, output="rle")
    methods = {
        "plain": lambda: plain_loop(outputs, codec, num_det, h, w),
        "current": lambda: results_to_coco(current_post(outputs, sizes), [1]),
        "new": lambda: results_to_coco(new_post(outputs, sizes), [1]),
        "new_post_only": lambda: new_post(outputs, sizes),
        "official": lambda: official_loop(outputs, codec, num_det, h, w),
    }
    results = {name: fn() for name, fn in methods.items()}  # warm-up (numba caches, DCT constants)
    times = {name: [] for name in methods}
    cpu = {name: [] for name in methods}
    for r in range(repeats):
        for name, fn in methods.items():
            if name == "official" and r >= official_repeats:
                continue
            if name != "official":  # steady state, as image after image in an evaluation: without this call the
                fn()  # method after "current" pays ~1,900 page faults for memory that "current" handed back
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    ref = [d["segmentation"] for d in results["current"]]
    new = [d["segmentation"] for d in results["new"]]
    ratios = {name: [a / b for a, b in zip(times[name], times["new"])] for name in ("plain", "current", "official")}
    cpu_ratios = {name: [a / b for a, b in zip(cpu[name], cpu["new"])] for name in ratios}
    return {"times_s": times, "cpu_s": cpu, "ratios": ratios, "cpu_ratios": cpu_ratios,
            "json_identical": json.dumps(results["new"]) == json.dumps(results["current"]),
            "differing_pixels": int(sum(
                (np.asarray(a != b)).sum() for a, b in zip(*(decode_rles(x) for x in (ref, new))))),
            "iou_plain": mean_iou(results["plain"], ref), "iou_official": mean_iou(results["official"], ref),
            "n_det": num_det, "image": f"{h}x{w}", "codec": f"dct N={codec.mask_size} n_k={codec.n_components}"}


def postprocess_breakdown(codec, outputs: dict, repeats: int = 15) -> dict:
    """Where the new path's time goes: its stages run alone on the same 100 detections, interleaved
    rounds, median process CPU time per stage (ms)."""
    import numpy as np
    import torch

    from maskcodec.box_rle import _paste_runs, counts_to_rle
    from solq.models import PostProcess, results_to_coco

    h, w, num_det = HEIGHT, WIDTH, NUM_DET
    sizes = torch.tensor([[h, w]])
    post = PostProcess(codec, num_select=num_det, output="rle")
    results = post(outputs, sizes)
    vectors = outputs["pred_vectors"][0, :num_det].contiguous()  # the benchmark's top queries are 0..99
    soft = codec.decode(vectors.numpy())
    boxes = results[0]["boxes"].float().numpy().astype(np.float64)
    counts, offsets = _paste_runs(soft, boxes, h, w, 0.5)
    stages = {
        "top-k, boxes (`PostProcess` without a codec)": lambda: PostProcess(None, num_select=num_det)(outputs, sizes),
        "batched decode (`codec.decode` of the numpy view, numba kernel; what `PostProcess` runs on CPU)":
            lambda: codec.decode(vectors.numpy()),
        "  (for comparison: `codec.decode` of the torch tensor, two GEMMs; not in the sum)": lambda: codec.decode(vectors),
        "box-local paste -> runs (`box_rle._paste_runs`)": lambda: _paste_runs(soft, boxes, h, w, 0.5),
        "runs -> RLE strings and dicts (`counts_to_rle`)": lambda: counts_to_rle(counts, offsets, (h, w)),
        "`results_to_coco` (result dicts)": lambda: results_to_coco(results, [1]),
    }
    for fn in stages.values():
        fn()
    cpu = {name: [] for name in stages}
    for _ in range(repeats):
        for name, fn in stages.items():
            c = time.process_time()
            fn()
            cpu[name].append(time.process_time() - c)
    return {name: sorted(ts)[len(ts) // 2] for name, ts in cpu.items()}


def heldout_outputs() -> tuple:
    """The DCT codec (N = 128, n_k = 256) and the SOLQ-like outputs of ``NUM_DET`` held-out COCO detections
    in a ``HEIGHT x WIDTH`` image that every post-processing section times (seeded: the same every run)."""
    import maskcodec

    codec = maskcodec.get_codec("dct", mask_size=128, n_components=256)
    return codec, heldout_detections(codec, NUM_DET, HEIGHT, WIDTH)


def fold_section(codec, outputs: dict) -> dict:
    """``fold_check`` (the B_h C B_w^T fold in float64) on the benchmark's 100 held-out detections."""
    from fold_check import fold_check

    return fold_check(outputs, codec, NUM_DET, HEIGHT, WIDTH)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--output", default=None, help="write a markdown report here")
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # internal: one config in a subprocess
    parser.add_argument("--skip-r50", action="store_true", help="skip the 800x1216 R50 forward")
    parser.add_argument("--skip-forward", action="store_true", help="only the post-processing section")
    args = parser.parse_args(argv)
    if args.only:
        print(json.dumps(run_one(args.only, args.threads)))
        return

    t0 = time.perf_counter()
    rows = []
    for name in CONFIGS:
        if args.skip_forward or (args.skip_r50 and "R50" in name):
            continue
        proc = subprocess.run([sys.executable, __file__, "--only", name, "--threads", str(args.threads)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    with threadpool_limits(args.threads):
        codec, outputs = heldout_outputs()
        post = postprocess_bench(codec, outputs)
        breakdown = postprocess_breakdown(codec, outputs)
        fold = fold_section(codec, outputs)
    print({k: v for k, v in post.items() if k not in ("times_s", "cpu_s")}, flush=True)
    total = time.perf_counter() - t0

    lines = ["# SOLQ model speed (CPU)", "",
             f"Command: `.venv/bin/python benchmarks/model_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs "
             f"(load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}); torch {torch.__version__}, "
             f"{args.threads} torch/numba/BLAS thread(s). Script wall time {total:.0f} s.", ""]
    lines += forward_table(rows) + postprocess_section(post, breakdown, fold) + NOTES
    text = "\n".join(lines)
    print(text)
    if args.output:
        from maskcodec.atomic import atomic_write

        atomic_write(args.output, text + "\n")


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def forward_table(rows: list[dict]) -> list[str]:
    """Markdown lines of the forward section (none when the forward passes were skipped)."""
    if not rows:
        return []
    lines = ["## Forward (eval, no grad, batch 1, random weights, default deformable-attention core)", "",
             "| config | input | attention core | params (M) | warm-up (s) | forward (s), median of runs | runs | peak RSS (MiB) | RSS before forward (MiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['size']} | {r['core']} | {r['params_M']:.1f} | {r['warmup_s']:.2f} | "
                     f"{_median(r['times_s']):.2f} | {', '.join(f'{t:.2f}' for t in r['times_s'])} | "
                     f"{r['peak_rss_MiB']:.0f} | {r['rss_before_MiB']:.0f} |")
    return lines


def postprocess_section(post: dict, breakdown: dict[str, float], fold: dict) -> list[str]:
    """Markdown lines of the outputs -> COCO RLE section: the methods' table, the stage table, the fold."""

    def row(label, name):
        ts = post["times_s"][name]
        ratio = f"{_median(post['ratios'][name]):.1f}" if name in post["ratios"] else ("1" if name == "new" else "–")
        cpu_ratio = (f"{_median(post['cpu_ratios'][name]):.1f}" if name in post["cpu_ratios"]
                     else ("1" if name == "new" else "–"))
        return (f"| {label} | {_median(ts) * 1e3:.1f} | {min(ts) * 1e3:.1f} | {_median(post['cpu_s'][name]) * 1e3:.1f} | "
                f"{ratio} | {cpu_ratio} | {', '.join(f'{t * 1e3:.1f}' for t in ts)} |")

    return ["", f"## Outputs -> COCO RLE: {post['n_det']} held-out COCO detections, {post['image']} image, "
            f"{post['codec']}", "",
            "Top-k over 300 queries x 80 classes, boxes, masks, RLE with str counts (the `segmentation` of "
            "the results json). Rounds interleave the methods, each timed call right after an untimed call of the same method "
            "(the steady state of an evaluation loop; the official-style loop is timed cold); "
            "\"x new\" is the median of per-round ratios (wall time, and process CPU time); "
            "CPU ms is the process CPU time (less sensitive than wall time to other jobs on the machine).", "",
            "| method | ms per image, median | min (ms) | CPU ms, median | x new path (wall) | x new path (CPU) | runs (ms) |",
            "|---|---|---|---|---|---|---|",
            row("official-style loop: Python zigzag walk, `idctn`, `grid_sample` paste, `encode`", "official"),
            row("plain per-mask loop: zigzag scatter, `idctn`, bilinear resize into the integer box, paste, `encode`",
                "plain"),
            row("current path: `PostProcess` (batched decode + `geometry.paste`) + `results_to_coco`", "current"),
            row("**new path**: `PostProcess(output=\"rle\")` (batched decode + `box_rle.paste_rle`) + "
                "`results_to_coco`", "new"),
            row("  of which `PostProcess(output=\"rle\")` alone", "new_post_only"),
            "",
            f"New path vs current path: results json byte-identical: {post['json_identical']}; differing pixels: "
            f"{post['differing_pixels']}. Mean mask IoU against the current path: plain loop "
            f"{post['iou_plain']:.4f} (its integer boxes sample differently), official-style loop "
            f"{post['iou_official']:.4f}.", "",
            "Where the new path's time goes (each stage alone, same detections, median CPU ms of interleaved rounds):", "",
            "| stage | CPU ms |", "|---|---|",
            *(f"| {name} | {t * 1e3:.2f} |" for name, t in breakdown.items()),
            f"| sum | {sum(t for name, t in breakdown.items() if 'not in the sum' not in name) * 1e3:.2f} |", "",
            "The fold of the issue's hint, measured (`benchmarks/fold_check.py`: per box `B_h C B_w^T` in float64, "
            "two numpy GEMMs, thresholded, no RLE): "
            f"{fold['fold_ms']:.1f} CPU ms per image against {fold['exact_ms']:.1f} for the exact path's decode + "
            f"`_paste_runs` (RLE included). Pixels where it differs from `paste`: {fold['held_out'][0]} of "
            f"{fold['held_out'][1]:,} box pixels on these held-out detections, {fold['random'][0]} of "
            f"{fold['random'][1]:,} on {fold['random_images']} images of random queries (an untrained model's soft "
            "blobs), so the results json would not stay byte-identical everywhere.", ""]


if __name__ == "__main__":
    main()
