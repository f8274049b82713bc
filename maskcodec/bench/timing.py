"""Devices and throughput timing for ``maskcodec bench``."""

from __future__ import annotations

import time

import numpy as np

from .. import backend

TIMING_BATCH = 512  #: masks per timed encode/decode call
TIMING_REPEATS = 5


def check_device(device: str) -> str:
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        ok, why = backend.cuda_status()
        import torch

        if not ok or not torch.cuda.is_available():
            raise ValueError(f"--device cuda needs a CUDA GPU usable from torch, but {why}; use --device cpu")
    return device


def to_device(x: np.ndarray, device: str):
    if device == "cpu":
        return x
    import torch

    return torch.as_tensor(x, device=device)


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_call(fn, device: str, budget_s: float = 2.0) -> float:
    """Median wall time of ``fn()`` over up to ``TIMING_REPEATS`` calls (fewer for slow codecs)."""
    times: list[float] = []
    spent = 0.0
    while len(times) < TIMING_REPEATS and (not times or spent + times[-1] <= budget_s):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
        spent += times[-1]
    return float(np.median(times))
