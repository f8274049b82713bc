"""Peak memory of the COCO -> vector path on many masks: is it flat in the number of masks?

An instances file's annotations are tiled (with new ids) to each requested count in a temporary
file; each count is streamed in a fresh process (this script run as a child) through
``maskcodec.coco.iter_mask_batches`` -> ``DCTCodec.encode``, and that process reports its resident
memory from ``/proc/self/status``. ``coco_path_speed.py`` runs it and writes the table into
``results_coco_path.md``.

    .venv/bin/python benchmarks/coco_path_memory.py FILE [--mask-size 128 --n-components 256 --batch-size 1024]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

# this script's folder is on sys.path: run as a script or imported by coco_path_speed
from peak_memory import restart_peak, status_mib

import maskcodec
from maskcodec.coco import iter_mask_batches, read_instances


def memory_child(path, mask_size, n_components, batch_size):
    """Stream every annotation of ``path`` to vectors; print JSON with the resident-memory figures (MiB)."""
    codec = maskcodec.get_codec("dct", mask_size=mask_size, n_components=n_components)
    coco = read_instances(path)
    after_index = status_mib("VmRSS")
    reset = restart_peak() is None  # so the peak measures the streaming alone (Linux >= 4.0)
    n = 0
    for batch in iter_mask_batches(coco, mask_size, batch_size=batch_size, include_crowd=True):
        codec.encode(batch.masks)
        n += len(batch)
    print(json.dumps({"masks": n, "after_index": after_index, "peak": status_mib("VmHWM"), "reset": reset}))


def memory_section(path, counts, mask_size, n_components, batch_size):
    """Peak resident memory of the COCO path on ``path``'s annotations tiled to each of ``counts``,
    each in a fresh process. Returns a list of (annotations, masks, file MiB, RSS after index, peak)."""
    data = json.loads(Path(path).read_text())
    anns = data["annotations"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            reps = -(-count // len(anns))
            tiled = [dict(a, id=k + 1) for k, a in enumerate((anns * reps)[:count])]
            file = Path(tmp) / f"tiled_{count}.json"
            file.write_text(json.dumps(dict(data, annotations=tiled)))
            cmd = [sys.executable, __file__, str(file), "--mask-size", str(mask_size),
                   "--n-components", str(n_components), "--batch-size", str(batch_size)]
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            rows.append((count, out["masks"], file.stat().st_size / 2**20, out["after_index"], out["peak"],
                         out["reset"]))
            file.unlink()
    return rows


def memory_lines(args, rows):
    lines = [
        "",
        "## Memory of the COCO path on 100k masks",
        "",
        f"`{args.memory_file or 'coco128 instances_train.json'}`'s annotations tiled (new ids) to "
        f"{', '.join(f'{r[0]:,}' for r in rows)} annotations in a temporary file; each count streams in a fresh "
        f"process through `iter_mask_batches(batch_size={args.batch_size}, include_crowd=True)` -> "
        "`DCTCodec.encode` (vectors discarded). Resident memory from `/proc/self/status`: after "
        "`read_instances` (pycocotools' index of the whole file, which grows with it), and the peak while "
        "streaming (VmHWM, reset after the index is built).",
        "",
        "| annotations | masks | JSON MiB | RSS after index, MiB | peak while streaming, MiB | streaming above the index, MiB |",
        "|---|---|---|---|---|---|",
    ]
    for count, masks, mib, after, peak, reset in rows:
        lines.append(f"| {count:,} | {masks:,} | {mib:.0f} | {after:.0f} | {peak:.0f}{'' if reset else ' (whole run)'} "
                     f"| {peak - after:.0f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="COCO instances file to stream (the child side of memory_section)")
    parser.add_argument("--mask-size", type=int, default=128)
    parser.add_argument("--n-components", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", DeprecationWarning)
    memory_child(args.file, args.mask_size, args.n_components, args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
