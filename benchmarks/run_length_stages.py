"""Where the run-length DCT encode spends its time: its stages timed one by one on real COCO masks.

Each stage is timed cumulatively (the kernel up to and including that stage, over the whole
batch), next to a plain read of the same bytes (numpy sum) and the dense-floor GEMM of
``codec_speed.py``, interleaved over the rounds; the figures are medians in µs per mask and
the stage costs are differences of the cumulative times. Uses the private stage kernels of
``maskcodec.dct_runs``, so it follows them when they change.

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/run_length_stages.py --n-masks 4096 --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec_speed import dense_floor_shape  # noqa: E402
from real_masks import coco_box_masks  # noqa: E402

from maskcodec import dct_runs  # noqa: E402
from maskcodec.dct import DCTCodec  # noqa: E402


@njit(cache=False)
def _stages(flat, b, n, prefix, suffix, blocks, upto):  # pragma: no cover - numba
    """Run the kernel's stages 0 (pack rows into bit words), 1 (+ row comparison and run
    boundaries), 2 (+ row deltas), 3 (+ column pass) up to ``upto`` over ``b`` masks."""
    kcp = prefix.shape[1]
    spectrum = np.zeros(suffix.size // n * kcp, np.float32)
    starts = np.empty(n * (n + 2), np.int32)
    offsets = np.empty(n + 1, np.int64)
    changed = np.empty(n, np.int64)
    bits = np.zeros((2, (n + 63) // 64), np.uint64)
    delta = np.empty((n, kcp), np.float32)
    check = np.uint64(0)
    for m in range(b):
        if upto == 0:
            for i in range(n):
                check |= dct_runs._row_bits(flat, (m * n + i) * n, n, bits, 0)
            continue
        nchg = dct_runs._scan_rows(flat, m, n, bits, starts, offsets, changed)
        if upto >= 2:
            dct_runs._row_deltas(prefix, starts, offsets, nchg, delta)
        if upto >= 3:
            dct_runs._column_pass(delta, suffix, changed, nchg, blocks, spectrum)
    return check


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-masks", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--components", type=int, default=256)
    args = p.parse_args(argv)
    n = args.size
    real = coco_box_masks(n)
    masks = real[np.arange(args.n_masks) % len(real)]
    b = len(masks)
    prefix, suffix, _, _, blocks = dct_runs.run_tables(n, args.components)
    suffix = suffix.reshape(-1)
    x = masks.astype(np.float32).reshape(b * n, n)
    k_eq = dense_floor_shape(n, args.components)[3]  # 26 at N = 128, n_k = 256
    w = np.random.default_rng(0).standard_normal((n, k_eq)).astype(np.float32)
    inputs = {"bool": masks.reshape(-1).view(np.uint8), "float32 0/1": x.reshape(-1)}
    for flat in inputs.values():
        for upto in range(4):
            _stages(flat[: 8 * n * n], 8, n, prefix, suffix, blocks, upto)  # compile outside the timing
    codec = DCTCodec(mask_size=n, n_components=args.components)
    codec.encode(masks[:300])
    codec.encode(x.reshape(b, n, n)[:300])
    fns = {"dense floor": lambda: x @ w}
    for name, flat in inputs.items():
        read = flat.view(np.uint64) if flat.dtype == np.uint8 else flat  # bool bytes summed 8 at a time
        fns[f"{name}: read (numpy sum)"] = (lambda r: lambda: r.sum())(read)
        for upto, stage in enumerate(["pack", "+ rows and boundaries", "+ row deltas", "+ column pass"]):
            fns[f"{name}: {stage}"] = (lambda f, u: lambda: _stages(f, b, n, prefix, suffix, blocks, u))(flat, upto)
        whole = masks if name == "bool" else x.reshape(b, n, n)
        fns[f"{name}: DCTCodec.encode"] = (lambda w: lambda: codec.encode(w))(whole)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, fn in fns.items():
            t0 = time.process_time()
            fn()
            times[k].append((time.process_time() - t0) / b * 1e6)
    floor = statistics.median(times["dense floor"])
    print(f"{b} real masks, N = {n}, n_k = {args.components}, one thread, process CPU time, "
          f"medians of {args.repeats} rounds (µs per mask; fraction of the dense floor)")
    prev = 0.0
    for k, v in times.items():
        t = statistics.median(v)
        step = f"  (this stage {t - prev:.2f})" if ": +" in k else ""
        step = f"  (beyond the stages {t - prev:.2f})" if "DCTCodec" in k else step
        print(f"  {k:36s} {t:6.2f}  {t / floor:5.3f}{step}")
        prev = t

if __name__ == "__main__":
    main()
