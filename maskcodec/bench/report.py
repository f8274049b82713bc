"""``BenchResult``: the rows and what was measured, as a table, Markdown, JSON, CSV and files."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import atomic_write
from .timing import TIMING_BATCH, TIMING_REPEATS


@dataclass
class BenchResult:
    """Rows (one dict per setting) plus what was measured on which data."""

    rows: list[dict]
    meta: dict
    #: example masks for plots: list of {"ann_id", "area", "targets": {N: (N,N) bool},
    #: "recon": {setting label: (N,N) bool}}; not written to JSON
    examples: list[dict] = field(default_factory=list, repr=False)

    COLUMNS: tuple[tuple[str, str, str], ...] = (
        ("codec", "codec", "s"),
        ("mask_size", "N", "d"),
        ("n_components", "n_k", "d"),
        ("iou_nn_mean", "IoU N×N", ".4f"),
        ("iou_nn_median", "med IoU N×N", ".4f"),
        ("iou_img_mean", "IoU img", ".4f"),
        ("iou_img_small", "IoU S", ".4f"),
        ("iou_img_medium", "IoU M", ".4f"),
        ("iou_img_large", "IoU L", ".4f"),
        ("boundary_iou_mean", "bIoU img", ".4f"),
        ("ap", "AP", ".1f"),
        ("ap50", "AP50", ".1f"),
        ("ap75", "AP75", ".1f"),
        ("encode_masks_per_s", "enc/s", ",.0f"),
        ("decode_masks_per_s", "dec/s", ",.0f"),
    )

    def table(self) -> str:
        """The results as a Markdown pipe table (also readable in a terminal)."""
        head = [c[1] for c in self.COLUMNS]
        body = [[_fmt(row.get(key), spec) for key, _, spec in self.COLUMNS] for row in self.rows]
        widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
        lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |"]
        lines.append("|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|")
        for r in body:
            lines.append("| " + " | ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))) + " |")
        return "\n".join(lines)

    def to_markdown(self, plots: Sequence[str] = ()) -> str:
        """A self-contained report: data, fitting, skips, the table, notes and the command."""
        m = self.meta
        out = ["# maskcodec bench results", ""]
        if m.get("command"):
            out += ["Command:", "", "```", m["command"], "```", ""]
        out += [
            f"- Evaluation data: {m.get('eval_label') or ', '.join(m['eval_files'])} ({m['eval_images']} images, "
            f"{m['eval_masks']} non-crowd instance masks: "
            + ", ".join(f"{k} {v}" for k, v in m["eval_masks_by_area"].items())
            + ").",
            f"- Learned codecs: {m['fit_description']}",
            f"- Skipped evaluation instances: {skips_text(m['eval_skipped'])}.",
        ]
        if m.get("fit_skipped") is not None:
            out.append(f"- Skipped fitting instances: {skips_text(m['fit_skipped'])}.")
        if m.get("duplicate_images"):
            out.append(f"- Duplicate images (same id, file name and size in two files, kept once): {m['duplicate_images']}.")
        if m.get("images_without_instances"):
            out.append(
                f"- Selected images with no usable non-crowd instance (no annotations, or only crowd/skipped ones; "
                f"not counted in the images above): {m['images_without_instances']}."
            )
        out.append(
            f"- Oracle AP ground truth: {m['ap_gt_instances']} non-crowd instances and {m['ap_gt_crowd']} crowd "
            f"regions of the {m['eval_images']} evaluated images; {m['ap_gt_without_prediction']} non-crowd "
            "instance(s) skipped above stay as GT without a prediction (misses); "
            f"{m['ap_gt_unreadable']} annotation(s) pycocotools cannot rasterise left out."
        )
        sr = m.get("sampling_ratio", 0)
        out.append(
            "- GT crops to N×N: " + ("adaptive ROIAlign (`sampling_ratio=0`, ceil(box side / N) bilinear samples per "
                                     "cell and axis; the official SOLQ targets)" if sr == 0 else
                                     "one bilinear sample per cell (`sampling_ratio=1`; the official SOLQ uses 0)")
            + "; rerun with the other `--sampling-ratio` to compare oracle AP."
        )
        out.append(
            f"- Device: {m['device']}; seed {m['seed']}; max_masks {m['max_masks']}; "
            f"maskcodec {m['maskcodec_version']}; {m['platform']}; wall time {m['elapsed_s']:.1f} s."
        )
        out += ["", self.table(), ""]
        out += [
            "Columns: IoU N×N = mean (med = median) mask IoU of the thresholded reconstruction vs the N×N target; "
            "IoU img = mean mask IoU after pasting into the original box at full image resolution vs the "
            "annotation's own mask (S/M/L: COCO area < 32², < 96², larger); bIoU = boundary IoU "
            "(dilation 0.02 × image diagonal); AP = oracle COCO mask AP (every GT mask through the codec, "
            "score 1; pycocotools COCOeval, crowd kept as GT); enc/s, dec/s = masks per second "
            f"(batches of up to {TIMING_BATCH} masks, median of up to {TIMING_REPEATS} timed calls within about 2 s, "
            f"{m['device']}; wall-clock time on a machine that may be shared).",
            "",
        ]
        if m.get("notes"):
            out += ["Notes:", ""] + [f"- {n}" for n in m["notes"]] + [""]
        for p in plots:
            out += [f"![{Path(p).stem}]({Path(p).name})", ""]
        return "\n".join(out)

    def to_json(self) -> str:
        return json.dumps({"meta": self.meta, "rows": self.rows}, indent=2, default=json_default)

    def to_csv(self) -> str:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})
        return buf.getvalue()


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def skips_text(counts: dict) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))


def json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def jsonable(x: Any) -> Any:
    try:
        return json.loads(json.dumps(x, default=json_default))
    except TypeError:
        return str(x)


def write_outputs(result: BenchResult, out_dir: str | os.PathLike, plots: bool = True) -> list[Path]:
    """Write results.json, results.csv, the PNG plots and RESULTS.md into ``out_dir``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write(out / "results.json", result.to_json()), atomic_write(out / "results.csv", result.to_csv())]
    pngs: list[Path] = []
    if plots:
        from .. import plots as plots_mod

        pngs = plots_mod.write_all(result, out)
    written += pngs
    written.append(atomic_write(out / "RESULTS.md", result.to_markdown(plots=[p.name for p in pngs])))
    return written
