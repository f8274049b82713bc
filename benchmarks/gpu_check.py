"""The GPU device check run by ``benchmarks/gpu_check.sh DIR``: one markdown report in DIR.

Sections (each timed, each failure recorded and the next section run):

1. the ``gpu``-marked tests (``pytest -m gpu``; needs pytest, from the carried wheels if absent);
2. the Triton core against the reference at the 800x1216 encoder and the decoder shapes (values,
   speed, peak memory; gradients are compared by the ``gpu`` tests);
3. DCT codec encode/decode throughput (N = 128, n_k = 256) with cupy and torch;
4. one ``coco_r50`` training step with AMP at batch 2, 800x1216 (images/s, peak memory);
5. a short ``shapes_tiny`` run end to end (needs pycocotools: skipped without it).

    python3 benchmarks/gpu_check.py DIR     (normally through benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402


def section_tests(out: Path) -> list[str]:
    # only the files with gpu-marked tests: the others may import what this machine lacks (nbclient, ...)
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if "mark.gpu" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", *files]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    (out / "pytest_gpu.log").write_text(proc.stdout + proc.stderr)
    tail = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    return [f"`python3 -m pytest -q -m gpu` on {len(files)} files: exit {proc.returncode}: {tail} (log: pytest_gpu.log)"]


def section_triton(out: Path) -> list[str]:
    import msda_core
    import msda_speed

    rows = msda_core.bench_core(["triton"], "cuda", repeats=10)
    mem = {b: msda_speed.run_child(["--child", "core_mem", b, "--device", "cuda"]) for b in ("reference", "triton")}
    lines = ["| shapes | Lq | pass | triton ms | reference ms | speed-up | max abs diff |", "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['shapes']} | {r['lq']} | {r['pass']} | {1e3 * r['backend_s']:.2f} | "
                     f"{1e3 * r['reference_s']:.2f} | {r['speedup']:.1f}x | {r['max_abs_diff']:.1e} |")
    lines += ["", "Peak CUDA memory of one encoder forward+backward (MiB above the inputs): "
              + ", ".join(f"{b} {m['peak_MiB'] - m['before_MiB']:.0f}" for b, m in mem.items())]
    return lines


def _throughput(fn, n_items: int, sync, repeats: int = 10) -> float:
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return n_items * repeats / (time.perf_counter() - t0)


def section_dct(out: Path) -> list[str]:
    import maskcodec

    codec = maskcodec.get_codec("dct", mask_size=128, n_components=256)
    lines = ["| array | masks/s encode | masks/s decode |", "|---|---:|---:|"]
    n = 4096
    masks = torch.rand(n, 128, 128, device="cuda") > 0.5
    kinds = {"torch": (masks.float(), torch.cuda.synchronize)}
    try:
        import cupy

        kinds["cupy"] = (cupy.asarray(masks.float().cpu().numpy()), cupy.cuda.Device().synchronize)
    except ImportError:
        lines.append("| cupy | not installed | |")
    for name, (x, sync) in kinds.items():
        vec = codec.encode(x)
        enc = _throughput(lambda: codec.encode(x), n, sync)
        dec = _throughput(lambda: codec.decode(vec), n, sync)
        lines.append(f"| {name} (CUDA, {n} masks of 128x128) | {enc:,.0f} | {dec:,.0f} |")
    return lines


def section_r50_amp(out: Path) -> list[str]:
    from solq.config import load_config
    from solq.engine import build_criterion, build_model

    cfg = load_config(ROOT / "configs" / "coco_r50.yaml")
    torch.manual_seed(0)
    model = build_model(cfg, 80, cfg.codec.n_components).cuda().train()
    criterion = build_criterion(cfg, 80).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda")
    images = torch.randn(2, 3, 800, 1216, device="cuda")
    mask = torch.zeros(2, 800, 1216, dtype=torch.bool, device="cuda")
    targets = [{"labels": torch.randint(0, 80, (5,), device="cuda"),
                "boxes": torch.cat([0.3 + 0.4 * torch.rand(5, 2), 0.1 + 0.3 * torch.rand(5, 2)], 1).cuda(),
                "mask_vectors": torch.randn(5, cfg.codec.n_components, device="cuda")} for _ in range(2)]

    def step():
        with torch.autocast("cuda", dtype=torch.float16):
            outputs = model(images, mask)
        loss = criterion.total_loss(criterion(_to_float(outputs), targets))
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    step()
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    steps = 5
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    sec = (time.perf_counter() - t0) / steps
    return [f"coco_r50 (R50, d_model 384, 300 queries, 6+6 layers), AMP float16, batch 2 at 800x1216, random weights "
            f"and targets; attention core ran: {', '.join(model.attn_backends_used)}: {sec:.3f} s/step = "
            f"{2 / sec:.1f} images/s; peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"]


def _to_float(outputs):
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    if isinstance(outputs, dict):
        return {k: _to_float(v) for k, v in outputs.items()}
    if isinstance(outputs, list):
        return [_to_float(v) for v in outputs]
    return outputs


def section_shapes_tiny(out: Path) -> list[str]:
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        return ["skipped: pycocotools is not installed (carry its wheel in benchmarks/gpu_carry/, see README)"]
    run = out / "shapes_tiny"
    cmd = [sys.executable, "-m", "solq.cli", "train", "--config", "configs/shapes_tiny.yaml", "train.device=cuda",
           "train.epochs=2", "train.eval_every=2", "train.lr_drop=2", "data.shapes.n_train=400",
           f"data.shapes.root={run / 'data'}", f"output_dir={run}", "data.num_workers=2"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    (out / "shapes_tiny.log").write_text(proc.stdout + proc.stderr)
    tail = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "|" in ln][-6:]
    return [f"`{' '.join(cmd[1:])}`: exit {proc.returncode} in {time.perf_counter() - t0:.0f} s (log: shapes_tiny.log)",
            "", *tail]


SECTIONS = [("gpu-marked tests", section_tests), ("Triton core vs reference", section_triton),
            ("DCT codec throughput (N 128, n_k 256)", section_dct), ("coco_r50 training step with AMP", section_r50_amp),
            ("shapes_tiny end to end", section_shapes_tiny)]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: gpu_check.py DIR")
        return 2
    if not torch.cuda.is_available():
        print("gpu_check: no GPU (torch.cuda.is_available() is False); nothing to check")
        return 0
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# GPU device check", "", f"Command: `benchmarks/gpu_check.sh {argv[0]}`", "",
             f"Machine: {torch.cuda.get_device_name()}, torch {torch.__version__}, python {platform.python_version()}, "
             f"triton {_version('triton')}, cupy {_version('cupy')}, pycocotools {_version('pycocotools')}", ""]
    failed = 0
    for title, fn in SECTIONS:
        t0 = time.perf_counter()
        try:
            body = fn(out)
        except Exception:  # record and go on: one report with every section
            failed += 1
            body = ["FAILED:", "", "```", traceback.format_exc()[-4000:], "```"]
        lines += [f"## {title} ({time.perf_counter() - t0:.0f} s)", "", *body, ""]
        (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
        print(f"gpu_check: {title} done", flush=True)
    print(f"gpu_check: report in {out / 'gpu_check.md'}; {failed} section(s) failed")
    return 0


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:
        return "absent"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
