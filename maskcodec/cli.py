"""The ``maskcodec`` command: ``bench``, ``fit`` and ``info``.

    maskcodec bench                                   # built-in sample, about a minute on 2 cores
    maskcodec bench --ann instances_val2017.json --fit-ann instances_train2017.json --out bench_out
    maskcodec fit pca --ann instances_train.json --size 128 --dims 256 --out pca.npz
    maskcodec info pca.npz

Bad input ends with exit code 2 and a one-line ``maskcodec: error: ...`` message.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

from . import bench
from .bench import report, runner


class _CLIError(Exception):
    """A user error: printed on one line, exit code 2."""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return bench.parse_int_list(text, "value")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskcodec", description="Compress instance masks; benchmark codecs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    b = sub.add_parser(
        "bench",
        help="benchmark codecs on COCO instance masks",
        description=(
            "Reconstruction IoU (N×N and image space, by area), boundary IoU, oracle mask AP and throughput "
            "for each codec setting. Without --ann: the built-in sample (val evaluated, train for fitting). "
            f"The grid of benchmarks/coco_bench: maskcodec bench --ann FILE ... --fit-ann FILE ... {bench.FULL_GRID_ARGS}"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    b.add_argument("--ann", nargs="+", metavar="FILE", help="COCO instances json(s) to evaluate on (no images needed)")
    b.add_argument("--fit-ann", nargs="+", metavar="FILE",
                   help="COCO instances json(s) to fit learned codecs on; default: a seeded half of --ann by image")
    b.add_argument("--codecs", default=",".join(bench.DEFAULT_CODECS),
                   help="comma-separated codec specs: NAME (every --sizes x --dims), NAME:N or NAME:N:K")
    b.add_argument("--sizes", type=_int_list, default=",".join(map(str, bench.DEFAULT_SIZES)), metavar="N,...",
                   help="mask sizes N")
    b.add_argument("--dims", type=_int_list, default=",".join(map(str, bench.DEFAULT_DIMS)), metavar="K,...",
                   help="vector lengths n_k (combinations with n_k > N² are skipped with a note)")
    b.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where encode/decode run")
    b.add_argument("--out", default="bench_out", metavar="DIR", help="output folder")
    b.add_argument("--sampling-ratio", type=int, choices=[0, 1], default=0,
                   help="GT crop sampling: 0 adaptive ROIAlign (official SOLQ targets, default), 1 one sample per cell")
    b.add_argument("--max-masks", type=_positive_int, default=None, metavar="K",
                   help="evaluate at most K masks (whole images, seeded choice)")
    b.add_argument("--seed", type=int, default=0, help="seed for splits, selections and learned codecs")
    b.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    b.add_argument("--quiet", action="store_true", help="no progress bars and no table on stdout")
    b.set_defaults(func=_cmd_bench)

    f = sub.add_parser("fit", help="fit (or build) a codec on COCO masks and save it as .npz",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    f.add_argument("codec", help="codec name (dct, pca, sparse, flatten, ...)")
    f.add_argument("--ann", nargs="+", metavar="FILE", help="COCO instances json(s); default: the built-in train sample")
    f.add_argument("--size", type=_positive_int, default=128, metavar="N", help="mask size N")
    f.add_argument("--dims", type=_positive_int, default=256, metavar="K", help="vector length n_k")
    f.add_argument("--max-masks", type=_positive_int, default=None, metavar="K", help="fit on at most K masks")
    f.add_argument("--out", required=True, metavar="FILE", help="where to save the codec (.npz)")
    f.set_defaults(func=_cmd_fit)

    i = sub.add_parser("info", help="describe a saved codec file")
    i.add_argument("path", metavar="FILE", help="a codec saved with codec.save / maskcodec fit")
    i.set_defaults(func=_cmd_info)
    return parser


def _command_line(argv: Sequence[str]) -> str:
    return "maskcodec " + " ".join(shlex.quote(a) for a in argv)


def _cmd_bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _CLIError(f"--out {out} exists and is not a directory")
    t = time.perf_counter()
    result = runner.run(
        args.ann,
        fit_ann_files=args.fit_ann,
        codecs=args.codecs,
        sizes=args.sizes,
        dims=args.dims,
        device=args.device,
        max_masks=args.max_masks,
        seed=args.seed,
        progress=not args.quiet,
        sampling_ratio=args.sampling_ratio,
    )
    result.meta["command"] = _command_line(argv)
    written = report.write_outputs(result, out, plots=not args.no_plots)
    if not args.quiet:
        m = result.meta
        print(f"{m['eval_masks']} masks from {m['eval_images']} images; {m['fit_description']}")
        print(result.table())
        for note in m["notes"]:
            print(f"note: {note}")
        print(f"wrote {len(written)} files to {out} in {time.perf_counter() - t:.1f} s")
    return 0


def _cmd_fit(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from . import coco
    from .registry import get_codec

    codec = get_codec(args.codec, mask_size=args.size, n_components=args.dims)
    codec._check_params()
    if codec.requires_fit:
        files = args.ann or [coco.sample_annotation_files()["train"]]
        skipped = coco.SkipReport()
        masks = coco.load_masks(list(files), args.size, max_masks=args.max_masks, skipped=skipped).masks
        if len(masks) == 0:
            raise _CLIError(f"no usable instance masks in {', '.join(map(str, files))}")
        codec.fit(masks)
        print(f"fitted {args.codec} on {len(masks)} masks (skipped: {skipped.summary() if skipped.total else 'none'})")
    codec.save(args.out)
    print(f"saved {args.codec} N={args.size} n_k={args.dims} to {args.out}")
    return 0


def _cmd_info(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import numpy as np

    from .persistence import load

    codec = load(args.path)
    print(f"{args.path}: {type(codec).__name__} (registered as {codec.codec_name!r})")
    for k, v in sorted(codec.get_params().items()):
        print(f"  {k} = {v!r}")
    for k, v in sorted(codec.get_state()["fitted"].items()):
        desc = f"array {v.shape} {v.dtype}" if isinstance(v, np.ndarray) else repr(v)
        print(f"  {k}: {desc}")
    print(f"  {codec.mask_size}x{codec.mask_size} mask -> {codec.n_components} numbers "
          f"({codec.mask_size ** 2 / codec.n_components:.1f}x fewer)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``maskcodec`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits with code 2 on its own errors
    try:
        return args.func(args, argv)
    except (_CLIError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError, OSError) as err:
        msg = " ".join(str(err).split()) or type(err).__name__
        print(f"maskcodec: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maskcodec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
