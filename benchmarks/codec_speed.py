"""Codec throughput on CPU: DCT encode/decode against GEMM and per-mask baselines, PCA, sparse, memory.

    .venv/bin/python benchmarks/codec_speed.py [--n-masks 8192] [--repeats 7] [--quick] [--out PATH]

Masks are real: every non-crowd instance of the shared COCO subsets (coco_mini train+val,
coco128, tiny_coco), cropped to its box with pycocotools, resized to N x N with bilinear
``torch.nn.functional.interpolate`` and thresholded at 0.5 -- the SOLQ target recipe -- then
tiled (``np.resize``) to the batch size. Timings are wall-clock medians over ``--repeats``
rounds; in every round the baselines and our code run back to back, and the ratios are
medians of the per-round ratios, so load from other processes cancels out as far as possible.

Rows:
* dense floor: one float32 GEMM ``(B*N, N) @ (N, K)`` (encode) or ``(B*N, K) @ (K, N)``
  (decode) with K chosen so its FLOPs equal those of the truncated separable transform,
  2*(N*N*Kc + Kr*N*Kc) per mask (Kr x Kc = rows x cols of the spectrum that the n_k zigzag
  coefficients touch). Input already float32 and in memory.
* two-GEMM floor (the issue's definition): the two dense float32 GEMMs of the truncated
  separable transform at their own shapes, inputs preallocated in the layout each wants --
  encode ``(B*N, N) @ (N, Kc)`` then ``(Kr, N) @ (N, B*Kc)``; decode ``(N, Kr) @ (Kr, B*Kc)``
  then ``(B*N, Kc) @ (Kc, N)``. Same FLOPs as the dense floor; reported as a second ratio.
* per-mask baseline: ``scipy.fft.dctn(m, norm="ortho")`` then the zigzag gather, one mask at a
  time (decode: zero-fill + ``idctn``), on a subset of the masks.
* ours: ``DCTCodec.encode`` on bool masks (run-length kernel, maskcodec.dct_runs), on float32
  masks holding only 0 and 1 (the same kernel, which checks the values in the pass that reads
  them; for scale, one plain read pass over those masks, ``masks.sum()``, is timed too), on soft
  float32 masks (the same real masks before the 0.5 threshold: the run-length kernel stops at
  the first soft row of each, then the dense kernel of maskcodec.dct_dense, which validates the
  values as it transforms them), and ``DCTCodec.decode`` (maskcodec.dct_decode).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.fft
from real_masks import coco_box_masks

ROOT = Path(__file__).resolve().parents[1]
def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, nproc={os.cpu_count()}, {platform.system()} {platform.machine()}, numpy {np.__version__}"


CLOCK = time.perf_counter  #: ``--clock cpu`` switches to ``time.process_time``


def timed(fn) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def interleaved(fns: dict[str, callable], sizes: dict[str, int], repeats: int) -> dict[str, list[float]]:
    """masks/s of each function per round; the functions run back to back in every round."""
    for fn in fns.values():  # warm-up (numba compile, BLAS threads, caches)
        fn()
    rates = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            rates[name].append(sizes[name] / timed(fn))
    return rates


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def per_mask_encode(masks: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    out = np.empty((len(masks), len(rows)), np.float32)
    for i, m in enumerate(masks):
        out[i] = scipy.fft.dctn(m.astype(np.float32), norm="ortho")[rows, cols]
    return out


def per_mask_decode(vectors: np.ndarray, n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    out = np.empty((len(vectors), n, n), np.float32)
    full = np.zeros((n, n), np.float32)
    for i, v in enumerate(vectors):
        full[rows, cols] = v
        out[i] = scipy.fft.idctn(full, norm="ortho")
    return out


def dense_floor_shape(n: int, k: int) -> tuple[int, int, int, int]:
    """``(Kr, Kc, flops, K)`` for N x N masks and k zigzag coefficients: the spectrum block the zigzag prefix
    touches, the truncated separable transform's FLOPs per mask, and the width K of the dense-floor GEMM
    ``(B*N, N) @ (N, K)`` of the same FLOPs."""
    from maskcodec.dct import zigzag_indices

    zz = zigzag_indices(n, k)
    kr, kc = int(zz[:, 0].max()) + 1, int(zz[:, 1].max()) + 1
    flops = 2 * (n * n * kc + kr * n * kc)
    return kr, kc, flops, max(1, round(flops / (2 * n * n)))


def floor_products(masks: np.ndarray, codec, n: int, k: int) -> tuple[dict, dict, dict]:
    """The floors' GEMMs on preallocated float32 operands of the transform's shapes (``masks``:
    (B, N, N) float32, read by the encode floor as it is): ``(encode, decode, shape)``, where
    encode and decode map "floor" (one GEMM of the dense floor's width) and "floor2" (the
    truncated separable transform's two products, each in the layout it wants) to callables, and
    shape holds ``kr``, ``kc``, ``k_eq`` and ``flops`` (``dense_floor_shape``)."""
    b = len(masks)
    kr, kc, flops, k_eq = dense_floor_shape(n, k)
    rng = np.random.default_rng(0)
    x = masks.reshape(b * n, n)  # float32 masks: the encode floor reads the same array as the kernels
    w_enc = rng.standard_normal((n, k_eq)).astype(np.float32)
    y = rng.standard_normal((b * n, k_eq)).astype(np.float32)
    w_dec = rng.standard_normal((k_eq, n)).astype(np.float32)
    rows_b, cols_b, rows_t = codec._plan()[:3]
    cols_t = np.ascontiguousarray(cols_b.T)
    g_enc = rng.standard_normal((n, b * kc)).astype(np.float32)
    f_dec = rng.standard_normal((kr, b * kc)).astype(np.float32)
    x_dec = rng.standard_normal((b * n, kc)).astype(np.float32)
    encode = {"floor": lambda: x @ w_enc, "floor2": lambda: (x @ cols_t, rows_b @ g_enc)}
    decode = {"floor": lambda: y @ w_dec, "floor2": lambda: (rows_t @ f_dec, x_dec @ cols_b)}
    return encode, decode, {"kr": kr, "kc": kc, "k_eq": k_eq, "flops": flops}


def dct_section(masks: np.ndarray, soft_masks: np.ndarray, n: int, k: int, repeats: int,
                per_mask_count: int) -> tuple[list, dict]:
    """The DCT codec's encode and decode rows, each interleaved with the floors and the per-mask
    scipy loops: ``(table rows, floor shape)``."""
    from maskcodec.dct import DCTCodec, zigzag_indices

    b = len(masks)
    codec = DCTCodec(mask_size=n, n_components=k)
    binary_float = masks.astype(np.float32)
    floor_enc, floor_dec, info = floor_products(binary_float, codec, n, k)
    kr, kc, k_eq = info["kr"], info["kc"], info["k_eq"]
    vectors = codec.encode(masks)
    small = masks[:per_mask_count]
    small_v = vectors[:per_mask_count]
    zz = zigzag_indices(n, k)
    rows, cols = zz[:, 0], zz[:, 1]

    enc = interleaved(
        {
            **floor_enc,
            "ours_bool": lambda: codec.encode(masks),
            "ours_float01": lambda: codec.encode(binary_float),
            "read_pass": lambda: binary_float.sum(),
            "ours_soft": lambda: codec.encode(soft_masks),
            "per_mask": lambda: per_mask_encode(small, rows, cols),
        },
        {"floor": b, "floor2": b, "ours_bool": b, "ours_float01": b, "read_pass": b, "ours_soft": b, "per_mask": len(small)},
        repeats,
    )
    dec = interleaved(
        {
            **floor_dec,
            "ours": lambda: codec.decode(vectors),
            "per_mask": lambda: per_mask_decode(small_v, n, rows, cols),
        },
        {"floor": b, "floor2": b, "ours": b, "per_mask": len(small_v)},
        repeats,
    )
    med = statistics.median

    def line(label, rates, ref):
        return (label, med(rates[ref]), median_ratio(rates[ref], rates["floor"]),
                median_ratio(rates[ref], rates["floor2"]), median_ratio(rates[ref], rates["per_mask"]))

    table = [
        line("DCT encode, bool masks (run-length kernel)", enc, "ours_bool"),
        line("DCT encode, float32 0/1 masks (run-length kernel, values checked in its one pass)", enc, "ours_float01"),
        line("  for scale: one read pass over the float32 masks (numpy sum)", enc, "read_pass"),
        line("DCT encode, soft float32 masks (validating dense kernel)", enc, "ours_soft"),
        line(f"dense floor, encode: ({b}*{n}, {n}) @ ({n}, {k_eq}) float32", enc, "floor"),
        line(f"two-GEMM floor, encode: ({b}*{n}, {n}) @ ({n}, {kc}), ({kr}, {n}) @ ({n}, {b}*{kc})", enc, "floor2"),
        line(f"per-mask scipy dctn + zigzag ({len(small)} masks)", enc, "per_mask"),
        line("DCT decode, float32 vectors -> soft masks (dense kernel)", dec, "ours"),
        line(f"dense floor, decode: ({b}*{n}, {k_eq}) @ ({k_eq}, {n}) float32", dec, "floor"),
        line(f"two-GEMM floor, decode: ({n}, {kr}) @ ({kr}, {b}*{kc}), ({b}*{n}, {kc}) @ ({kc}, {n})", dec, "floor2"),
        line(f"per-mask zero-fill + scipy idctn ({len(small_v)} masks)", dec, "per_mask"),
    ]
    return table, info


def learned_section(masks: np.ndarray, n: int, k: int, repeats: int, fit_count: int) -> list:
    """PCA and sparse-coding throughput (fit on a subset, then encode/decode the batch)."""
    rows = []
    for name, params in (("pca", {}), ("sparse", {"max_iter": 1})):
        try:
            from maskcodec import registry

            __import__(f"maskcodec.{name}")
            codec = registry.get_codec(name, mask_size=n, n_components=k, **params)
        except (ImportError, KeyError, TypeError, ValueError) as err:
            rows.append((f"{name}: not available ({type(err).__name__}: {err})", *[float("nan")] * 4))
            continue
        t_fit = timed(lambda: codec.fit(masks[:fit_count]))
        batch = masks if name == "pca" else masks[: max(64, len(masks) // 16)]
        vectors = codec.encode(batch)
        rates = interleaved(
            {"encode": lambda: codec.encode(batch), "decode": lambda: codec.decode(vectors)},
            {"encode": len(batch), "decode": len(batch)},
            max(1, repeats // 2) if name == "sparse" else repeats,
        )
        rows.append((f"{name} encode ({len(batch)} masks; fit on {fit_count}: {t_fit:.1f} s)",
                     statistics.median(rates["encode"]), *[float("nan")] * 3))
        rows.append((f"{name} decode", statistics.median(rates["decode"]), *[float("nan")] * 3))
    return rows


def stream_memory(n: int, k: int, total: int, chunk: int) -> dict:
    """Encode ``total`` masks chunk by chunk in a fresh process; the masks never exist all at once.

    Each chunk is a new (chunk, N, N) bool batch drawn from the real masks; the (total, n_k)
    float32 result is preallocated and filled as it goes.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_stream_child, (n, k, total, chunk))


def _stream_child(n: int, k: int, total: int, chunk: int) -> dict:
    from maskcodec.dct import DCTCodec

    real = coco_box_masks(n)
    codec = DCTCodec(mask_size=n, n_components=k)
    out = np.empty((total, k), np.float32)
    out.fill(0)  # touch the output so its pages count before the stream starts
    codec.encode(real[:8])  # compile / load the kernel outside the measurement
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        batch = real[np.arange(start, stop) % len(real)]
        out[start:stop] = codec.encode(batch)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "total": total,
        "chunk": chunk,
        "seconds": elapsed,
        "tracemalloc_peak_mb": peak / 2**20,
        "chunk_mb": chunk * n * n / 2**20,
        "all_masks_mb": total * n * n / 2**20,
        "output_mb": out.nbytes / 2**20,
        "rss_before_mb": rss0 / 1024,
        "maxrss_growth_mb": (rss1 - rss0) / 1024,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-masks", type=int, default=8192, help="batch size for the throughput rows")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (median reported)")
    p.add_argument("--mask-size", type=int, default=128)
    p.add_argument("--n-components", type=int, default=256)
    p.add_argument("--stream-total", type=int, default=100_000, help="masks encoded in the chunked-memory test")
    p.add_argument("--stream-chunk", type=int, default=4096)
    p.add_argument("--skip-learned", action="store_true", help="leave out the PCA and sparse rows")
    p.add_argument("--append", action="store_true", help="append to --out instead of overwriting it")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for numba and BLAS alike (default: all cores)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall-clock time, or the process's CPU time (with --threads 1: robust to time slicing "
                        "on a loaded machine, not to memory-bandwidth contention)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_codec_speed.md",
                   help="markdown results file ('-' to skip writing)")
    args = p.parse_args(argv)
    if args.quick:
        args.n_masks, args.repeats, args.stream_total, args.stream_chunk = 512, 3, 4096, 1024
    n, k = args.mask_size, args.n_components
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    threads = args.threads or os.cpu_count() or 1
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    with threadpool_limits(threads):
        run(args, n, k, argv)


def run(args, n: int, k: int, argv) -> None:
    real = coco_box_masks(n)
    masks = np.resize(real, (args.n_masks, n, n))
    soft = np.resize(coco_box_masks(n, soft=True), (args.n_masks, n, n))
    table, info = dct_section(masks, soft, n, k, args.repeats, per_mask_count=min(len(masks), 1000))
    if not args.skip_learned:
        table += learned_section(masks, n, k, args.repeats, fit_count=min(len(real), 512 if not args.quick else 300))
    mem = stream_memory(n, k, args.stream_total, args.stream_chunk)

    def fmt(v: float, digits: str) -> str:
        return "–" if v != v else format(v, digits)

    lines = [
        "| what | masks/s | × dense floor | × two-GEMM floor | × per-mask scipy |",
        "|---|---:|---:|---:|---:|",
        *(f"| {name} | {fmt(rate, ',.0f')} | {fmt(r1, '.2f')} | {fmt(r2, '.2f')} | {fmt(r3, '.1f')} |"
          for name, rate, r1, r2, r3 in table),
    ]
    try:
        import numba
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)" for i in threadpool_info())
        threads = f"numba {numba.__version__}, {numba.get_num_threads()} threads ({numba.threading_layer()}); BLAS: {blas}"
    except Exception:  # pragma: no cover - numba missing or layer not yet chosen
        threads = "numba unavailable"
    load = os.getloadavg()
    body = "\n".join(
        [
            "# Codec speed (CPU)",
            "",
            f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/codec_speed.py', *(argv if argv is not None else sys.argv[1:])])}`",
            "",
            f"Machine: {machine()}; {threads}; load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
            "(the machine is shared: compare ratios, which are taken within each round, not absolute rates).",
            "",
            f"Masks: {len(real)} real COCO box-relative masks (coco_mini, coco128, tiny_coco; non-crowd; "
            f"annToMask -> crop to box -> bilinear resize to {n} -> > 0.5; the soft rows skip the threshold), "
            f"tiled to {args.n_masks}. "
            f"N = {n}, n_k = {k}: the zigzag prefix touches Kr x Kc = {info['kr']} x {info['kc']} of the spectrum; "
            f"the truncated separable transform costs {info['flops'] / 1e3:.0f} kFLOP per mask, "
            f"so the dense-floor GEMM has K = {info['k_eq']}. Medians over {args.repeats} interleaved rounds; "
            f"clock: {'process CPU time' if args.clock == 'cpu' else 'wall time'}.",
            "",
            *lines,
            "",
            "Chunked stream (peak memory): "
            f"{mem['total']:,} masks encoded in chunks of {mem['chunk']} in {mem['seconds']:.1f} s; "
            f"tracemalloc peak {mem['tracemalloc_peak_mb']:.0f} MiB (one bool chunk is {mem['chunk_mb']:.0f} MiB; "
            f"all masks at once would be {mem['all_masks_mb']:.0f} MiB as bool, 4x that as float32); "
            f"in a fresh process, max RSS grew by {mem['maxrss_growth_mb']:.0f} MiB during the stream, from "
            f"{mem['rss_before_mb']:.0f} MiB (interpreter, torch/pycocotools for the mask recipe, the real masks, "
            f"and the preallocated {mem['output_mb']:.0f} MiB output).",
            "",
        ]
    )
    print(body)
    if str(args.out) != "-":
        from maskcodec.atomic import atomic_write

        old = args.out.read_text() if args.out.exists() else ""
        if args.append:
            text = old + body + "\n"
        else:  # a hand-written "## Notes" section of the old file stays, after the new tables
            notes = old[old.find("\n## Notes"):] if "\n## Notes" in old else ""
            text = body.rstrip("\n") + "\n" + ("\n" + notes.strip("\n") + "\n" if notes else "")
        atomic_write(args.out, text)


if __name__ == "__main__":
    main()
