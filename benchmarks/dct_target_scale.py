"""How large are DCT mask targets as the mask size N grows? (the loss-scale argument of Table 3d)

    .venv/bin/python benchmarks/dct_target_scale.py [ANNOTATIONS.json ...] [--sizes 64 96 128 256] [--n-components 256]

For every annotation file (default: the COCO sample embedded in maskcodec), each non-crowd mask is
cropped to its box and resized to N x N (``maskcodec.coco.load_masks``, the SOLQ target recipe) and encoded
with ``DCTCodec(N, n_components)``. The table gives the mean absolute coefficient, the mean absolute DC
term and the mean absolute coefficient relative to N = 128 (or to the first size when 128 is not asked for). With the orthonormal DCT the coefficients of
a binary mask grow in proportion to N, so at a fixed λ_vec the L1 vector loss (and, through the head's
output weights, the gradient it sends into the decoder) grows with N too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import maskcodec
from maskcodec.coco import load_masks, read_instances, sample_annotation_files


def target_scale(annotations: str | Path, sizes: list[int], n_components: int) -> list[dict]:
    """One row per N: mean |v|, mean |v_0| (the DC term) over the masks of ``annotations``."""
    coco = read_instances(annotations)  # parsed once, cropped at every N
    rows = []
    for n in sizes:
        masks = load_masks(coco, n).masks
        if len(masks) == 0:
            raise SystemExit(f"{annotations}: no non-crowd masks to encode")
        v = maskcodec.DCTCodec(n, n_components).encode(masks)
        rows.append({"N": n, "masks": len(masks), "mean_abs": float(np.abs(v).mean()),
                     "mean_abs_dc": float(np.abs(v[:, 0]).mean())})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("annotations", nargs="*", help="COCO instances json files (default: the embedded sample)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 256], help="mask sizes N")
    ap.add_argument("--n-components", type=int, default=256, help="n_k (default 256)")
    args = ap.parse_args(argv)
    files = args.annotations or [str(sample_annotation_files()["val"])]
    for f in files:
        rows = target_scale(f, args.sizes, args.n_components)
        ref = next((r for r in rows if r["N"] == 128), rows[0])
        print(f"\n{f} ({rows[0]['masks']} masks, n_k = {args.n_components})\n")
        print(f"| N | mean abs coefficient | mean abs DC term | relative to N = {ref['N']} |")
        print("|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['N']} | {r['mean_abs']:.2f} | {r['mean_abs_dc']:.1f} | {r['mean_abs'] / ref['mean_abs']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
