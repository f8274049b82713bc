"""Forward time and peak memory of SOLQ on CPU, and post-processing time per image.

Sections (all in one run, same machine, same thread count):

1. Forward (eval, ``torch.no_grad``, pure-PyTorch ``grid_sample`` deformable-attention core)
   of SOLQ-R50 with the official width (d_model 384, 6+6 layers, 300 queries, 4 levels,
   n_vector 256) at 800 x 1216, batch 1, and of a small config (ResNet-18, d_model 128, 2+2
   layers, 100 queries) at 320 x 320. Each config runs in its own subprocess so the peak
   resident memory (``ru_maxrss``) increase during the forward is its own. Random weights:
   speed does not depend on them.
2. Post-processing of 100 detections into a 480 x 640 image with the DCT codec (N = 128,
   n_k = 256): ``solq.models.PostProcess`` (one batched decode + ``maskcodec.geometry.paste``)
   against a per-mask Python loop in the style of the official code (Python inverse zigzag
   walk over all N*N positions, ``scipy.fft.idctn``, per-mask resize and paste), checked to give
   the same masks (mean IoU).

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
    "* Only the pure-PyTorch ``grid_sample`` deformable-attention core exists (no compiled kernel), so it",
    "  is the baseline and the measured configuration.",
    "* ``PostProcess`` goal is <= 10 ms per image for 100 detections; its cost is the batched DCT decode of",
    "  100 x 128 x 128 soft masks plus the paste of 100 full-resolution 480 x 640 masks (30 MB of output).",
    "",
]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(name: str, threads: int) -> dict:
    import torch

    from solq.models import SOLQ

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
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "rss_before_MiB": rss_before, "peak_rss_MiB": peak}


def _inverse_zigzag_python(vec, n):
    """Per-mask Python walk over the N x N grid (the official code's style): zero-filled matrix
    with the first len(vec) zigzag entries set."""
    import numpy as np

    out = np.zeros((n, n))
    i = 0
    for s in range(2 * n - 1):
        rng = range(min(s, n - 1), max(0, s - n + 1) - 1, -1)
        coords = [(r, s - r) for r in rng] if s % 2 == 0 else [(s - r, r) for r in rng]
        for r, c in coords:  # visits every position, as the official walk does
            out[r, c] = vec[i] if i < len(vec) else 0.0
            i += 1
    return out


def postprocess_bench(repeats: int = 5) -> dict:
    import numpy as np
    import scipy.fft
    import torch
    import torch.nn.functional as F

    import maskcodec
    from solq.models import PostProcess

    n, k, h, w, num_det = 128, 256, 480, 640, 100
    codec = maskcodec.get_codec("dct", mask_size=n, n_components=k)
    g = np.random.default_rng(0)
    # realistic vectors: encode random ellipses; boxes random inside the image
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    cx, cy = g.uniform(40, 88, (2, num_det, 1, 1))
    rx, ry = g.uniform(20, 60, (2, num_det, 1, 1))
    local = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    vectors = torch.as_tensor(codec.encode(local))
    x0 = g.uniform(0, w - 60, num_det); y0 = g.uniform(0, h - 60, num_det)
    bw = g.uniform(20, 300, num_det); bh = g.uniform(20, 250, num_det)
    cxcywh = torch.tensor(np.stack([(x0 + bw / 2) / w, (y0 + bh / 2) / h, bw / w, bh / h], 1), dtype=torch.float32)
    cxcywh[:, 2:] = torch.minimum(cxcywh[:, 2:], 2 * (1 - cxcywh[:, :2]))
    q, c = 300, 80
    logits = torch.full((1, q, c), -10.0)
    logits[0, torch.arange(num_det), torch.arange(num_det) % c] = torch.linspace(5, 1, num_det)
    outputs = {"pred_logits": logits,
               "pred_boxes": torch.cat([cxcywh, torch.full((q - num_det, 4), 0.5)])[None],
               "pred_vectors": torch.cat([vectors, torch.zeros(q - num_det, k)])[None]}
    sizes = torch.tensor([[h, w]])
    post = PostProcess(codec, num_select=100)

    post(outputs, sizes)  # warm-up (numba compile cache, DCT constants)
    ours = []
    for _ in range(repeats):
        t = time.perf_counter()
        res = post(outputs, sizes)[0]
        ours.append(time.perf_counter() - t)

    def baseline():
        prob = outputs["pred_logits"].sigmoid()
        scores, idx = prob.view(1, -1).topk(100, dim=1)
        query = idx[0] // c
        boxes = outputs["pred_boxes"][0, query]
        xyxy = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1) * torch.tensor([w, h, w, h])
        masks = torch.zeros(100, h, w, dtype=torch.bool)
        for i in range(100):
            vec = outputs["pred_vectors"][0, query[i]].numpy()
            coeff = _inverse_zigzag_python(vec, n)
            m = scipy.fft.idctn(coeff, norm="ortho")
            m = torch.from_numpy(m).float()
            bx0, by0, bx1, by1 = xyxy[i].tolist()
            ix0, iy0 = max(int(np.floor(bx0)), 0), max(int(np.floor(by0)), 0)
            ix1, iy1 = min(int(np.ceil(bx1)), w), min(int(np.ceil(by1)), h)
            if ix1 <= ix0 or iy1 <= iy0:
                continue
            # sample the mask at the pixel centres inside the box (bilinear, edge clamped)
            ys = (torch.arange(iy0, iy1) + 0.5 - by0) / (by1 - by0) * 2 - 1
            xs = (torch.arange(ix0, ix1) + 0.5 - bx0) / (bx1 - bx0) * 2 - 1
            grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None]
            patch = F.grid_sample(m[None, None], grid, align_corners=False, padding_mode="border")[0, 0]
            inside = (grid[0].abs() <= 1).all(-1)
            masks[i, iy0:iy1, ix0:ix1] = (patch >= 0.5) & inside
        return masks

    from solq.models.postprocess import results_to_coco

    rle = []
    for _ in range(repeats):
        t = time.perf_counter()
        results_to_coco([res], [1])
        rle.append(time.perf_counter() - t)

    baseline()
    base = []
    for _ in range(repeats):
        t = time.perf_counter()
        bmasks = baseline()
        base.append(time.perf_counter() - t)
    inter = (bmasks & res["masks"]).flatten(1).sum(1).float()
    union = (bmasks | res["masks"]).flatten(1).sum(1).float()
    iou = torch.where(union == 0, torch.ones_like(inter), inter / union.clamp(min=1))  # both empty: agree
    return {"ours_s": ours, "baseline_s": base, "rle_s": rle, "mean_iou_vs_baseline": float(iou.mean()),
            "n_det": num_det, "image": f"{h}x{w}", "codec": f"dct N={n} n_k={k}"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--output", default=None, help="write a markdown report here")
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # internal: one config in a subprocess
    parser.add_argument("--skip-r50", action="store_true", help="skip the 800x1216 R50 forward")
    args = parser.parse_args(argv)
    if args.only:
        print(json.dumps(run_one(args.only, args.threads)))
        return

    t0 = time.perf_counter()
    rows = []
    for name in CONFIGS:
        if args.skip_r50 and "R50" in name:
            continue
        proc = subprocess.run([sys.executable, __file__, "--only", name, "--threads", str(args.threads)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    import torch

    torch.set_num_threads(args.threads)
    post = postprocess_bench()
    print(post, flush=True)
    total = time.perf_counter() - t0

    lines = ["# SOLQ model speed (CPU)", "",
             f"Command: `.venv/bin/python benchmarks/model_speed.py --threads {args.threads}"
             + (f" --output {args.output}`" if args.output else "`"), "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs "
             f"(load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}); torch {torch.__version__}, "
             f"{args.threads} torch thread(s). Script wall time {total:.0f} s.", "",
             "## Forward (eval, no grad, batch 1, random weights, pure-PyTorch grid_sample attention core)", "",
             "| config | input | params (M) | warm-up (s) | forward (s), median of runs | runs | peak RSS (MiB) | RSS before forward (MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ts = sorted(r["times_s"])
        lines.append(f"| {r['name']} | {r['size']} | {r['params_M']:.1f} | {r['warmup_s']:.2f} | "
                     f"{ts[len(ts) // 2]:.2f} | {', '.join(f'{t:.2f}' for t in r['times_s'])} | "
                     f"{r['peak_rss_MiB']:.0f} | {r['rss_before_MiB']:.0f} |")
    def med(ts):
        return sorted(ts)[len(ts) // 2]

    def row(label, ts):
        return (f"| {label} | {med(ts) * 1e3:.1f} | {min(ts) * 1e3:.1f} | "
                f"{', '.join(f'{t * 1e3:.1f}' for t in ts)} |")

    ours, base = med(post["ours_s"]), med(post["baseline_s"])
    lines += ["", f"## Post-processing: {post['n_det']} detections, {post['image']} image, {post['codec']}", "",
              "| method | time per image (ms), median | min (ms) | runs (ms) |", "|---|---|---|---|",
              row("per-mask Python loop (official style): decode + paste", post["baseline_s"]),
              row("solq `PostProcess`: top-k, one batched decode, `maskcodec.geometry.paste`", post["ours_s"]),
              row("solq `results_to_coco` (RLE of the 100 pasted masks)", post["rle_s"]),
              "", f"Speed-up {base / ours:.1f}x; mean mask IoU between the two: {post['mean_iou_vs_baseline']:.4f}.", ""]
    lines += NOTES
    text = "\n".join(lines)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
