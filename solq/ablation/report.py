"""Reports of a sweep: the Markdown table in the paper's layout, the plot, and the JSON files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from maskcodec.atomic import atomic_open, atomic_write, atomic_write_json

from .sweeps import PAPER, PAPER_CHOICE, PAPER_SOURCE, Entry, Sweep, paper_columns, scale_preset

#: Table columns: (label, iou type, COCOeval stat).
METRIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("AP^seg", "segm", "AP"),
    ("AP50", "segm", "AP50"),
    ("AP75", "segm", "AP75"),
    ("APs", "segm", "APs"),
    ("APm", "segm", "APm"),
    ("APl", "segm", "APl"),
    ("AP^box", "bbox", "AP"),
)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON, written atomically (numpy scalars and paths included)."""
    return atomic_write_json(path, obj)


def read_json(path: str | os.PathLike) -> Optional[Any]:
    """The JSON in ``path``, or None when it is missing or unreadable (a torn write)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def stat_text(metrics: Optional[dict], iou: str, stat: str) -> str:
    v = (metrics or {}).get(iou, {}).get(stat)
    return "–" if v is None else f"{v:.1f}"


# ---------------------------------------------------------------------------- tables and plots
def _cell(v: Optional[float]) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or v < 0)):
        return "–"
    return f"{v:.1f}"


def entry_values(sweep: Sweep, entry: Entry, result: Optional[dict], oracle_row: Optional[dict]) -> dict:
    """The numbers of one table row: our metrics (None when missing), paper numbers and oracle AP."""
    metrics = (result or {}).get("metrics") or {}
    vals: dict[str, Optional[float]] = {}
    for label, iou, stat in METRIC_COLUMNS:
        v = (metrics.get(iou) or {}).get(stat)
        if iou == "segm" and entry.codec is None:
            v = None  # det-only: no masks
        vals[label] = v
    paper = PAPER.get(sweep.table, {}).get(entry.name, {})
    for column in paper_columns(sweep.table):
        vals["paper " + column] = paper.get(column)
    vals["oracle AP"] = (oracle_row or {}).get("ap")
    return vals


def format_table(sweep: Sweep, results: dict[str, Optional[dict]],
                 oracle: Optional[dict[str, Optional[dict]]] = None) -> str:
    """A Markdown table in the paper's layout (AP^seg, AP50, AP75, APs/m/l, AP^box) with all of the
    paper's columns for that sub-table and the codec's oracle AP next to ours. ``*`` marks the paper's
    chosen setting; ``–`` is missing (not run, det-only masks, no object of that size, or not known
    from the paper)."""
    oracle = oracle or {}
    head = ([sweep.parameter] + [c[0] for c in METRIC_COLUMNS] + ["paper " + c for c in paper_columns(sweep.table)]
            + ["oracle AP"])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for e in sweep.entries:
        vals = entry_values(sweep, e, results.get(e.name), oracle.get(e.name))
        label = e.label + (" *" if PAPER_CHOICE.get(sweep.table) == e.name else "")
        if results.get(e.name) is None:
            label += " (not run)"
        lines.append("| " + " | ".join([label] + [_cell(vals[h]) for h in head[1:]]) + " |")
    return "\n".join(lines)


def plot_sweep(sweep: Sweep, results: dict[str, Optional[dict]], oracle: dict[str, Optional[dict]],
               path: str | os.PathLike) -> Path:
    """AP^seg, AP^box (ours; solid), oracle AP (dashed) and the paper's numbers (crosses) per entry → PNG."""
    # a bare Figure (no pyplot): saving does not switch the caller's matplotlib backend
    from matplotlib.figure import Figure

    rows = [entry_values(sweep, e, results.get(e.name), oracle.get(e.name)) for e in sweep.entries]
    xs = list(range(len(sweep.entries)))
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()

    def series(key: str) -> list[float]:
        return [math.nan if r[key] is None or r[key] < 0 else float(r[key]) for r in rows]

    styles = [("AP^seg", "o-", "C0"), ("AP^box", "s-", "C1"), ("oracle AP", "^--", "C2"),
              ("paper AP^seg", "x", "C0"), ("paper AP^box", "x", "C1")]
    for key, style, colour in styles:
        ys = series(key)
        if all(math.isnan(y) for y in ys):
            continue
        label = key.replace("AP^seg", "AP$^{seg}$").replace("AP^box", "AP$^{box}$")
        if key.startswith("paper"):
            ax.plot(xs, ys, style, color=colour, markersize=9, mew=2, linestyle="none", label=label)
        elif sweep.numeric:
            ax.plot(xs, ys, style, color=colour, label=label)
        else:  # categories (codec types): markers only
            ax.plot(xs, ys, style[0], color=colour, markersize=7, linestyle="none", label=label)
    ax.set_xticks(xs)
    ax.set_xticklabels([e.label for e in sweep.entries], rotation=20 if not sweep.numeric else 0)
    ax.set_xlabel(sweep.parameter)
    ax.set_ylabel("AP (%)")
    ax.set_title(f"Tab. {sweep.table}: {sweep.title} [{sweep.scale} scale]", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    return Path(path)


def write_report(sweep: Sweep, results: dict[str, Optional[dict]], oracle: dict[str, Optional[dict]],
                 out_dir: Path, command: str = "") -> list[Path]:
    """``table3x.md`` (table + notes), ``table3x.png`` and ``results.json`` in the sweep folder ``out_dir``."""
    s = sweep
    png = plot_sweep(s, results, oracle, out_dir / f"table{s.table}.png")
    n_done = sum(r is not None for r in results.values())
    secs = [r.get("seconds_this_session") for r in results.values() if r]
    lines = [f"# Table {s.table}: {s.title}", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    lines += [
        f"- Scale: `{s.scale}` ({scale_preset(s.scale).description}).",
        f"- Entries finished: {n_done}/{len(s.entries)}.",
        "- Ours: COCO mask AP (AP^seg, AP50, AP75, APs/m/l) and box AP on the validation split, one run per "
        "entry, same seed. Oracle AP: every GT mask of the same validation annotations through the codec "
        "(`maskcodec.bench`), the ceiling a perfect model reaches with it.",
        f"- Paper: {PAPER_SOURCE} (C5-only R50 on COCO val)." + (
            "" if PAPER.get(s.table) else " Its numbers for this sub-table could not be retrieved here and are "
            "left empty; `*` marks the setting the paper chose."),
    ]
    if sum(1 for x in secs if x):
        minutes = sum(x for x in secs if x) / 60
        lines.append(f"- Training wall time, summed over the finished entries: {minutes:.1f} min "
                     "(an entry resumed after an interruption counts its last session only).")
    lines += ["", format_table(s, results, oracle), "", f"![table {s.table}]({png.name})", ""]
    md = atomic_write(out_dir / f"table{s.table}.md", "\n".join(lines))
    js = write_json(out_dir / "results.json", {
        "table": s.table, "scale": s.scale, "results": results, "oracle": oracle,
        "paper": PAPER.get(s.table, {}), "paper_choice": PAPER_CHOICE.get(s.table),
    })
    return [md, png, js]
