"""The deformable-attention core alone (``ms_deform_attn_core``) at the encoder and decoder shapes of
an 800 x 1216 image: its inputs, one timed call, the alternated timing of every backend against the
grid_sample reference, and its peak memory. Used by ``msda_speed.py`` (section 1) and ``gpu_check.py``."""

from __future__ import annotations

import statistics
import time

import torch
from peak_memory import peak_rss_mib, rss_mib

ENCODER_SHAPES = [(100, 152), (50, 76), (25, 38), (13, 19)]
HEADS, CHANNELS, POINTS = 8, 48, 4


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def core_inputs(kind: str, device: str, seed: int = 0) -> tuple:
    """value (1, S, 8, 48), locations, softmaxed weights for ``kind`` ``encoder`` or ``decoder``."""
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in ENCODER_SHAPES)
    n_levels = len(ENCODER_SHAPES)
    if kind == "encoder":  # one query per pixel of every level, at its pixel centre
        ref = torch.cat([torch.stack(torch.meshgrid((torch.arange(w) + 0.5) / w, (torch.arange(h) + 0.5) / h,
                                                    indexing="xy"), -1).reshape(-1, 2) for h, w in ENCODER_SHAPES])
    else:
        ref = 0.05 + 0.9 * torch.rand(300, 2, generator=g)
    lq = ref.shape[0]
    wh = torch.tensor([[w, h] for h, w in ENCODER_SHAPES], dtype=torch.float32)
    offsets = 2.0 * torch.randn(1, lq, HEADS, n_levels, POINTS, 2, generator=g)  # a few pixels of each level
    loc = ref.view(1, lq, 1, 1, 1, 2) + offsets / wh.view(1, 1, 1, n_levels, 1, 2)
    attn = torch.randn(1, lq, HEADS, n_levels * POINTS, generator=g).softmax(-1).view(1, lq, HEADS, n_levels, POINTS)
    value = torch.randn(1, s, HEADS, CHANNELS, generator=g)
    return tuple(t.to(device) for t in (value, loc, attn))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_core(backend: str, inputs: tuple, backward: bool, device: str) -> tuple[float, torch.Tensor]:
    """Seconds for one forward (+ backward of a fixed random projection) and the output."""
    from solq.models.deform_attn import ms_deform_attn_core

    value, loc, attn = (t.detach().requires_grad_(backward) for t in inputs)
    _sync(device)
    t0 = time.perf_counter()
    with torch.set_grad_enabled(backward):
        out = ms_deform_attn_core(value, ENCODER_SHAPES, loc, attn, backend=backend)
        if backward:
            out.backward(torch.ones_like(out))
    _sync(device)
    return time.perf_counter() - t0, out.detach()


def bench_core(backends: list[str], device: str, repeats: int) -> list[dict]:
    """Median times of every backend and the reference, alternated, per (shapes, pass)."""
    rows = []
    for kind in ("encoder", "decoder"):
        inputs = core_inputs(kind, device)
        for backward in (False, True):
            times: dict[str, list[float]] = {b: [] for b in ["reference", *backends]}
            outs = {}
            for b in times:  # warm-up (compilation)
                outs[b] = run_core(b, inputs, backward, device)[1]
            for _ in range(repeats):
                for b in times:
                    times[b].append(run_core(b, inputs, backward, device)[0])
            ref = statistics.median(times["reference"])
            for b in backends:
                t = statistics.median(times[b])
                rows.append({"shapes": kind, "lq": inputs[1].shape[1], "pass": "fwd+bwd" if backward else "fwd",
                             "backend": b, "backend_s": t, "reference_s": ref, "speedup": ref / t,
                             "max_abs_diff": float((outs[b] - outs["reference"]).abs().max())})
    return rows


def child_core_memory(backend: str, device: str) -> dict:
    inputs = core_inputs("encoder", device)
    run_core(backend, core_inputs("decoder", device), True, device)  # compile / load kernels
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
        run_core(backend, inputs, True, device)
        return {"before_MiB": before, "peak_MiB": torch.cuda.max_memory_allocated() / 2**20}
    before = rss_mib()
    run_core(backend, inputs, True, device)
    return {"before_MiB": before, "peak_MiB": peak_rss_mib()}
