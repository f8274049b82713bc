"""Gather the per-benchmark result files into benchmarks/RESULTS.md.

Each benchmark script writes its own ``results_<topic>.md`` (with the command that produced it);
this script only concatenates them, under a short index, so RESULTS.md never drifts from them.

    python benchmarks/collect_results.py
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent

SECTIONS = [
    ("results_coco_bench.md", "Codec quality and oracle AP on real COCO masks (`maskcodec bench`)"),
    ("results_codec_speed.md", "Codec speed (DCT fast path, PCA, sparse; bounded memory)"),
    ("results_coco_path.md", "COCO annotation → vector path, and paste speed"),
    ("results_model_speed.md", "SOLQ forward and post-processing speed"),
    ("results_msda_speed.md", "Deformable-attention cores: fused numba / Triton vs grid_sample"),
    ("results_training.md", "Training from scratch (synthetic shapes, coco128 overfit)"),
    ("results_ablations.md", "The paper's Table 3 codec ablations"),
    ("results_fault_matrix.md", "Fault matrix: hostile input, damaged files, kill -9 (issue 13)"),
]

HEADER = """# Results

Every figure here was measured on this project's development machine (2 CPU cores, no GPU;
shared with other jobs during the session, so speeds are given as ratios against baselines
measured in the same run wherever a comparison matters). Each section names the command that
regenerates it; `python benchmarks/collect_results.py` rebuilds this file from the sections.

"""


def _demote_headings(markdown: str) -> str:
    """One more ``#`` on every heading outside fenced code blocks, so sections nest under the title."""
    lines, in_code = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        lines.append("#" + line if line.startswith("#") and not in_code else line)
    return "\n".join(lines)


def main() -> None:
    parts = [HEADER]
    index = []
    bodies = []
    for name, title in SECTIONS:
        path = HERE / name
        if not path.exists():
            continue
        anchor = name.removesuffix(".md")
        index.append(f"- [{title}](#{anchor}) — `benchmarks/{name}`")
        body = _demote_headings(path.read_text().strip())
        bodies.append(f'<a id="{anchor}"></a>\n\n{body}\n')
    parts.append("\n".join(index) + "\n\n")
    parts.append("\n".join(bodies))
    out = HERE / "RESULTS.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("".join(parts))
    os.replace(tmp, out)
    print(f"wrote {out} ({len(bodies)} sections)")


if __name__ == "__main__":
    main()
