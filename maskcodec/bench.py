"""The codec benchmark behind ``maskcodec bench``: reconstruction quality, oracle AP and speed.

For every setting (codec, N, n_k) the ground-truth instance masks of one or more COCO
instances files are cropped to their boxes and resized to N x N (``geometry.crop_resize``),
encoded to n_k numbers, decoded, and compared with the target:

* ``iou_nn_mean`` / ``iou_nn_median``: mask IoU in N x N space (decode, threshold 0.5).
* ``iou_img_*``: mask IoU in image space: the decoded soft mask is pasted into the original
  box at the original image size (``geometry.paste``, threshold 0.5) and compared with the
  full-resolution mask of the annotation (``coco.annotation_mask``); mean, median and the
  mean per COCO area range (small < 32², medium < 96², large).
* ``boundary_iou_mean``: boundary IoU (Cheng et al. 2021, dilation 0.02 of the image
  diagonal) in image space.
* ``ap`` / ``ap50`` / ``ap75``: oracle mask AP. Every evaluated (non-crowd) GT mask is
  encoded, decoded, pasted and submitted with score 1 to pycocotools ``COCOeval`` (segm)
  against all GT of the evaluated images, crowd regions included: the AP a perfect
  model would reach through this codec.
* ``encode_masks_per_s`` / ``decode_masks_per_s``: median of a few timed repeats, in this run.

Learned codecs (``requires_fit``) are fitted on ``fit_ann_files`` or, without them, on a
seeded half of the evaluation images (split by image); they are always evaluated on masks
they did not see. Images of the fit files that also occur in the evaluation files are
dropped from fitting.

Instances that cannot be benchmarked (crowd regions, polygons with fewer than 3 points,
zero-area boxes, masks empty after resampling at some N, annotations of unknown images, and
images listed again in a later file with the same id, file name and size) are left out of
every setting and counted by reason in ``meta["eval_skipped"]``; all settings share one
denominator. COCOeval keeps every annotation of the evaluated images that pycocotools can
rasterise as ground truth, so a skipped but readable instance counts as a miss.

Settings are named by codec specs: ``"dct"`` runs every ``sizes x dims`` combination,
``"pca:128"`` runs N = 128 with every n_k in ``dims``, ``"pca:128:256"`` one setting.
Combinations a codec cannot represent (n_k > N², or a flatten n_k that is not a square r²
with r <= N) are skipped with a note in the report; when nothing is left, ``run`` raises.

Image-space metrics are computed inside a window around each object (its box, its GT
pixels and a margin wider than the boundary dilation), which gives exactly the
full-image values at a fraction of the cost; GT masks are computed once and reused for all
settings.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import backend, coco, geometry, metrics
from .atomic import atomic_write
from .registry import available_codecs, codec_class, get_codec

# Codecs written alongside this module register themselves on import.
for _mod in ("pca", "sparse", "flatten"):
    with contextlib.suppress(ImportError):
        __import__(f"{__package__}.{_mod}")

#: The no-argument run: small enough for about a minute on 2 CPU cores.
DEFAULT_CODECS: tuple[str, ...] = ("dct", "pca:64:256", "sparse:64:256", "flatten:64:784")
DEFAULT_SIZES: tuple[int, ...] = (64, 128)
DEFAULT_DIMS: tuple[int, ...] = (144, 256)
#: The grid of benchmarks/coco_bench (DCT over N at n_k = 256 and over n_k at N = 128; learned codecs
#: at n_k = 256; flatten 28x28). Sparse coding runs at N = 64: fitting it at N = 128 takes too long on 2 cores.
FULL_GRID_ARGS = (
    "--codecs dct:64:256,dct:96:256,dct:256:256,dct:128,pca:64:256,pca:128:256,sparse:64:256,flatten:128:784 "
    "--dims 144,256,300,400"
)

AREA_RANGES = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, math.inf))
BOUNDARY_DILATION_RATIO = 0.02
_TIMING_BATCH = 512  # masks per timed encode/decode call
_TIMING_REPEATS = 5
_FIT_FRACTION = 0.5  # share of images used for fitting when no fit files are given
_N_EXAMPLES = 6


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """One benchmark cell: codec name, mask size N and vector length n_k."""

    codec: str
    mask_size: int
    n_components: int

    @property
    def label(self) -> str:
        return f"{self.codec} N={self.mask_size} n_k={self.n_components}"


def parse_int_list(text: str | Sequence[int], what: str) -> tuple[int, ...]:
    """``"64,128"`` (or a sequence of ints) -> ``(64, 128)``; positive, duplicates removed."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
    else:
        parts = list(text)
    values = []
    for p in parts:
        try:
            v = int(p)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be comma-separated positive integers, got {p!r}") from None
        if v < 1:
            raise ValueError(f"{what} must be positive integers, got {v}")
        if v not in values:
            values.append(v)
    if not values:
        raise ValueError(f"{what} is empty; give at least one value, e.g. 128")
    return tuple(values)


def expand_settings(
    codecs: str | Sequence[str], sizes: Sequence[int], dims: Sequence[int]
) -> tuple[list[Setting], list[str]]:
    """Turn codec specs into settings; returns ``(settings, notes about skipped combinations)``.

    Raises ``ValueError`` for an unknown codec name, a malformed spec, or when every
    combination is invalid.
    """
    specs = [s.strip() for s in codecs.split(",")] if isinstance(codecs, str) else [str(s).strip() for s in codecs]
    specs = [s for s in specs if s]
    if not specs:
        raise ValueError("no codecs given; choose from " + ", ".join(available_codecs()))
    sizes = parse_int_list(sizes, "sizes")
    dims = parse_int_list(dims, "dims")
    settings: list[Setting] = []
    notes: list[str] = []
    for spec in specs:
        name, *rest = spec.split(":")
        codec_class(name)  # raises ValueError naming the available codecs
        if len(rest) > 2:
            raise ValueError(f"bad codec spec {spec!r}: use NAME, NAME:N or NAME:N:K (e.g. pca:128:256)")
        spec_sizes = parse_int_list([rest[0]], f"mask size in {spec!r}") if len(rest) >= 1 else sizes
        spec_dims = parse_int_list([rest[1]], f"n_k in {spec!r}") if len(rest) == 2 else dims
        for n in spec_sizes:
            for k in spec_dims:
                problem = _setting_problem(name, n, k)
                if problem:
                    notes.append(f"skipped {name} N={n} n_k={k}: {problem}")
                    continue
                s = Setting(name, n, k)
                if s not in settings:
                    settings.append(s)
    if not settings:
        detail = "; ".join(notes)
        raise ValueError(f"no valid codec setting to run ({detail}); choose n_k <= N**2")
    return settings, notes


def _setting_problem(name: str, n: int, k: int) -> str:
    if k > n * n:
        return f"n_k > N**2 = {n * n}"
    if name == "flatten":
        r = math.isqrt(k)
        if r * r != k:
            return "flatten needs n_k = r**2 (e.g. 784 = 28**2)"
    return ""


# ----------------------------------------------------------------------------- data
def _n_instances(c: Any, img_id: int) -> int:
    return sum(1 for a in c.imgToAnns.get(img_id, []) if not a.get("iscrowd", 0))


def _select_images(c: Any, img_ids: Sequence[int], max_masks: int | None, rng: np.random.Generator) -> list[int]:
    """Whole images, in seeded random order, until ``max_masks`` non-crowd instances would be exceeded."""
    ids = list(img_ids)
    if max_masks is None:
        return ids
    order = [ids[i] for i in rng.permutation(len(ids))]
    chosen, total = [], 0
    for img_id in order:
        n = _n_instances(c, img_id)
        if n and total + n <= max_masks:
            chosen.append(img_id)
            total += n
    if not chosen:  # every image alone holds more than max_masks instances: take the smallest
        with_masks = [i for i in order if _n_instances(c, i)]
        if with_masks:
            chosen = [min(with_masks, key=lambda i: _n_instances(c, i))]
    return sorted(chosen)


def _load_all_sizes(c: Any, sizes: Sequence[int], img_ids: Sequence[int],
                    sampling_ratio: int = 0) -> tuple[dict[int, Any], Any]:
    """Masks of the same instances at every N in ``sizes``, and one skip report.

    An instance can vanish ("empty mask") after resampling to a small N only; such instances
    are dropped at every N and counted as ``"empty mask at N=<n>"`` so all settings share one
    denominator.
    """
    reports, batches, kept = {}, {}, {}
    for n in sizes:
        reports[n] = coco.SkipReport()
        batches[n] = coco.load_masks(c, n, image_ids=list(img_ids), include_crowd=False, skipped=reports[n],
                                     sampling_ratio=sampling_ratio)
        kept[n] = set(int(a) for a in batches[n].ann_ids)
    base = max(sizes)
    common = set.intersection(*kept.values())
    report = reports[base]
    for a in batches[base].ann_ids:
        if int(a) not in common:
            report.add(int(a), f"empty mask at N={min(n for n in sizes if int(a) not in kept[n])}")
    common_arr = np.array(sorted(common), dtype=np.int64)
    out = {}
    for n, b in batches.items():
        keep = np.isin(np.asarray(b.ann_ids), common_arr)
        out[n] = b if keep.all() else type(b)(**{k: v[keep] for k, v in vars(b).items()})
    for n in sizes:
        if not np.array_equal(np.asarray(out[n].ann_ids), np.asarray(out[base].ann_ids)):
            raise RuntimeError("coco.load_masks returned instances in a different order at different N")
    return out, report


@dataclass
class _GTWindow:
    """The full-resolution GT mask of one annotation, kept as a window plus counts."""

    x0: int
    y0: int
    crop: np.ndarray  # (h, w) bool, GT pixels inside the window
    area: int  # all GT pixels in the image
    image_size: tuple[int, int]  # (H, W)
    dilation: int  # boundary-IoU dilation in pixels for this image
    band: np.ndarray  # (h, w) bool, the GT boundary band (metrics.mask_boundary) inside the window


def _gt_window(full: np.ndarray, box: np.ndarray) -> _GTWindow:
    h, w = full.shape
    d = metrics.boundary_width((h, w), BOUNDARY_DILATION_RATIO)
    margin = d + 3
    x0, y0 = math.floor(box[0]), math.floor(box[1])
    x1, y1 = math.ceil(box[2]), math.ceil(box[3])
    ys, xs = np.nonzero(full.any(axis=1))[0], np.nonzero(full.any(axis=0))[0]
    if ys.size:
        x0, x1 = min(x0, int(xs[0])), max(x1, int(xs[-1]) + 1)
        y0, y1 = min(y0, int(ys[0])), max(y1, int(ys[-1]) + 1)
    x0, y0 = max(0, x0 - margin), max(0, y0 - margin)
    x1, y1 = min(w, x1 + margin), min(h, y1 + margin)
    crop = np.ascontiguousarray(full[y0:y1, x0:x1])
    band = metrics.mask_boundary(crop[None], dilation_ratio=d / math.hypot(*crop.shape))[0]
    return _GTWindow(x0, y0, crop, int(full.sum()), (h, w), d, band)


def _paste_window(soft: np.ndarray, box: np.ndarray, win: _GTWindow) -> np.ndarray:
    """Paste one decoded soft mask (N, N) into the window of ``win``; (h, w) bool."""
    return _paste_windows(soft[None], np.asarray(box, dtype=np.float64)[None], [win])[0]


def _paste_windows(soft: np.ndarray, boxes: np.ndarray, wins: Sequence[_GTWindow]) -> list[np.ndarray]:
    """Paste soft masks (g, N, N) into their windows with one ``geometry.paste`` call.

    Every mask is pasted into a canvas as large as the largest window of the group, with its
    box shifted to its window's origin; pixel values do not depend on the canvas size, so
    ``canvas[:h, :w]`` equals a paste into the (h, w) window (and into the full image).
    """
    offsets = np.array([[w.x0, w.y0, w.x0, w.y0] for w in wins], dtype=np.float64)
    hc = max(w.crop.shape[0] for w in wins)
    wc = max(w.crop.shape[1] for w in wins)
    canvas = geometry.paste(soft, np.asarray(boxes, dtype=np.float64) - offsets, (hc, wc), threshold=0.5)
    canvas = np.asarray(backend.to_numpy(canvas), dtype=bool)
    return [canvas[j, : w.crop.shape[0], : w.crop.shape[1]] for j, w in enumerate(wins)]


def _boundary_ious(preds: Sequence[np.ndarray], wins: Sequence[_GTWindow]) -> np.ndarray:
    """Boundary IoU of window pairs with the dilation of each full image (one batched call).

    Windows hold every pixel of both masks with a margin wider than the dilation wherever
    they do not meet the image border, and the metric treats the image border as
    background, so zero-padding windows to a common canvas changes nothing; the group
    must share one dilation ``d`` (see ``_window_groups``).
    """
    ds = {w.dilation for w in wins}
    if len(ds) != 1:
        raise ValueError("windows of one boundary-IoU call must share the dilation")  # pragma: no cover
    hc = max(w.crop.shape[0] for w in wins)
    wc = max(w.crop.shape[1] for w in wins)
    p = np.zeros((len(wins), hc, wc), dtype=bool)
    for j, (pred, w) in enumerate(zip(preds, wins)):
        p[j, : pred.shape[0], : pred.shape[1]] = pred
    bands = metrics.mask_boundary(p, dilation_ratio=ds.pop() / math.hypot(hc, wc))
    out = np.empty(len(wins))
    for j, w in enumerate(wins):
        bp = bands[j, : w.crop.shape[0], : w.crop.shape[1]]
        inter = np.count_nonzero(bp & w.band)
        union = np.count_nonzero(bp | w.band)
        out[j] = inter / union if union else 1.0
    return out


def _window_boundary_iou(pred: np.ndarray, win: _GTWindow) -> float:
    """Boundary IoU of one window pair with the dilation of the full image."""
    return float(_boundary_ious([pred], [win])[0])


def _window_groups(windows: Sequence[_GTWindow], max_masks: int = 64, max_pixels: int = 2**24) -> list[np.ndarray]:
    """Indices of masks grouped for batched paste / boundary IoU: same dilation, similar window size."""
    order = sorted(range(len(windows)), key=lambda i: (windows[i].dilation, windows[i].crop.size))
    groups, cur, hc, wc = [], [], 0, 0
    for i in order:
        h, w = windows[i].crop.shape
        nh, nw = max(hc, h), max(wc, w)
        if cur and (
            len(cur) >= max_masks
            or windows[cur[0]].dilation != windows[i].dilation
            or (len(cur) + 1) * nh * nw > max_pixels
        ):
            groups.append(np.array(cur))
            cur, nh, nw = [], h, w
        cur.append(i)
        hc, wc = nh, nw
    if cur:
        groups.append(np.array(cur))
    return groups


def _ap_ground_truth(c: Any, img_ids: Sequence[int]) -> tuple[Any, int]:
    """A COCO object for COCOeval: the evaluated images and all their annotations (crowd included)
    that pass ``coco_validate.annotation_problem``; returns it and the number of annotations left out."""
    from .coco import SkipReport
    from .coco.validate import valid_ground_truth

    left_out = SkipReport()
    gt = valid_ground_truth(c, img_ids, box_if_empty=False, report=left_out)
    return gt, left_out.total


# ----------------------------------------------------------------------------- result
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
            f"- Skipped evaluation instances: {_skips_text(m['eval_skipped'])}.",
        ]
        if m.get("fit_skipped") is not None:
            out.append(f"- Skipped fitting instances: {_skips_text(m['fit_skipped'])}.")
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
            f"(batches of up to {_TIMING_BATCH} masks, median of up to {_TIMING_REPEATS} timed calls within about 2 s, "
            f"{m['device']}; wall-clock time on a machine that may be shared).",
            "",
        ]
        if m.get("notes"):
            out += ["Notes:", ""] + [f"- {n}" for n in m["notes"]] + [""]
        for p in plots:
            out += [f"![{Path(p).stem}]({Path(p).name})", ""]
        return "\n".join(out)

    def to_json(self) -> str:
        return json.dumps({"meta": self.meta, "rows": self.rows}, indent=2, default=_json_default)

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


def _skips_text(counts: dict) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------- run
def run(
    ann_files: Sequence[str | os.PathLike] | None = None,
    fit_ann_files: Sequence[str | os.PathLike] | None = None,
    codecs: str | Sequence[str] = DEFAULT_CODECS,
    sizes: Sequence[int] | str = DEFAULT_SIZES,
    dims: Sequence[int] | str = DEFAULT_DIMS,
    device: str = "cpu",
    max_masks: int | None = None,
    seed: int = 0,
    progress: bool = True,
    sampling_ratio: int = 0,
) -> BenchResult:
    """Benchmark codecs on COCO instance masks; see the module docstring for the metrics.

    ``ann_files`` None (or empty) uses the built-in sample: evaluate on its val split and fit
    learned codecs on its train split. Raises ``ValueError`` / ``FileNotFoundError`` with a
    message for bad input (unknown codec, unreadable or non-COCO file, empty selection, no
    GPU for ``device="cuda"``).
    ``sampling_ratio``: how GT masks are cropped to N x N (``geometry.crop_resize``): 0 (default)
    adaptive ROIAlign, the official SOLQ targets; 1 one bilinear sample per cell. The report says which.
    """
    t_start = time.perf_counter()
    settings, notes = expand_settings(codecs, sizes, dims)
    device = _check_device(device)
    if max_masks is not None and (not isinstance(max_masks, (int, np.integer)) or max_masks < 1):
        raise ValueError(f"max_masks must be a positive integer, got {max_masks!r}")
    call = (
        f"maskcodec.bench.run({[str(p) for p in ann_files] if ann_files else None!r}, "
        f"fit_ann_files={[str(p) for p in fit_ann_files] if fit_ann_files else None!r}, codecs={codecs!r}, "
        f"sizes={tuple(sizes) if not isinstance(sizes, str) else sizes!r}, "
        f"dims={tuple(dims) if not isinstance(dims, str) else dims!r}, device={device!r}, "
        f"max_masks={max_masks!r}, seed={seed!r}, sampling_ratio={sampling_ratio!r})"
    )
    eval_label = ""
    user_fit_files = list(fit_ann_files or [])
    if not ann_files:
        eval_label = "the built-in sample, COCO-MINI val (maskcodec/data/coco_mini_val.json)"
        sample = coco.sample_annotation_files()
        ann_files = [sample["val"]]
        if fit_ann_files is None:
            fit_ann_files = [sample["train"]]
    rng = np.random.default_rng(seed)
    learned = sorted({s.codec for s in settings if codec_class(s.codec).requires_fit})

    ev, _ = coco.merge_files(ann_files)
    all_ids = sorted(ev.coco.getImgIds())
    if not all_ids:
        raise ValueError(f"no images in {', '.join(map(str, ann_files))}: nothing to evaluate")
    fit_ids: list[int] = []
    fit_set = None
    excluded = 0
    if learned and fit_ann_files:
        fit_set, excluded = coco.merge_files(fit_ann_files, exclude_keys=set(ev.image_keys.values()))
        fit_ids = sorted(fit_set.coco.getImgIds())
        fit_desc = (
            f"{', '.join(learned)} fitted on {', '.join(map(str, fit_ann_files))}"
            + (f" ({excluded} image(s) also in the evaluation files dropped from fitting)" if excluded else "")
            + "; evaluated on the evaluation files (disjoint images)."
        )
    elif learned:
        perm = [all_ids[i] for i in rng.permutation(len(all_ids))]
        n_fit = max(1, int(round(_FIT_FRACTION * len(perm))))
        if n_fit >= len(perm):
            raise ValueError(
                "learned codecs need images to fit on and others to evaluate on, but the evaluation files hold "
                f"{len(perm)} image(s); pass --fit-ann FILE or more images"
            )
        fit_ids, all_ids = sorted(perm[:n_fit]), sorted(perm[n_fit:])
        fit_set = ev
        fit_desc = (
            f"{', '.join(learned)} fitted on a seeded split (seed {seed}) of the evaluation files by image: "
            f"{len(fit_ids)} images for fitting, the other {len(all_ids)} for evaluation (no --fit-ann given)."
        )
    else:
        fit_desc = "none in this run (no fitting needed)."
        if user_fit_files:
            notes.append("--fit-ann files were not read: no codec in this run needs fitting")

    eval_ids = _select_images(ev.coco, all_ids, max_masks, rng)
    if not eval_ids:
        raise ValueError(
            "the selection holds no non-crowd instance masks to evaluate (empty files, only crowd regions, "
            "or --max-masks too small)"
        )
    pbar = _progress_factory(progress)

    # ---- evaluation masks, once per N (the same instances at every N)
    batches, eval_skipped = _load_all_sizes(ev.coco, sorted({s.mask_size for s in settings}), eval_ids,
                                            sampling_ratio)
    for ann_id, reason in ev.dropped:
        eval_skipped.add(ann_id, reason)
    ref = batches[min(batches)]
    ann_ids = np.asarray(ref.ann_ids)
    if len(ann_ids) == 0:
        raise ValueError(
            f"no usable instance masks in the selection ({_skips_text(eval_skipped.counts)}); "
            "check the annotation files"
        )
    boxes = np.asarray(ref.boxes, dtype=np.float64)
    areas = np.asarray(ref.areas, dtype=np.float64)

    # ---- full-resolution GT masks, once
    windows: list[_GTWindow] = []
    for i in pbar(range(len(ann_ids)), desc="GT masks", total=len(ann_ids)):
        ann = ev.coco.anns[int(ann_ids[i])]
        windows.append(_gt_window(np.asarray(coco.annotation_mask(ev.coco, ann), dtype=bool), boxes[i]))
    groups = _window_groups(windows)
    evaluated_imgs = sorted(set(int(i) for i in np.asarray(ref.image_ids)))
    ap_gt, ap_unreadable = _ap_ground_truth(ev.coco, evaluated_imgs)
    ap_gt_noncrowd = sum(1 for a in ap_gt.dataset["annotations"] if not a["iscrowd"])
    ap_gt_crowd = len(ap_gt.dataset["annotations"]) - ap_gt_noncrowd

    # ---- fitting masks, once per N needed by a learned codec
    fit_masks: dict[int, np.ndarray] = {}
    fit_skipped = None
    fit_sizes = sorted({s.mask_size for s in settings if s.codec in learned})
    if fit_sizes:
        fit_batches, fit_skipped = _load_all_sizes(fit_set.coco, fit_sizes, fit_ids, sampling_ratio)
        if fit_set is not ev:
            for ann_id, reason in fit_set.dropped:
                fit_skipped.add(ann_id, reason)
        fit_masks = {n: np.asarray(b.masks) for n, b in fit_batches.items()}
    if learned:
        sizes_fit = ", ".join(f"{len(m)} masks at N={n}" for n, m in fit_masks.items())
        fit_desc += f" Fitting set: {len(fit_ids)} images, {sizes_fit}."

    examples = _pick_examples(areas, rng)
    example_rec = [
        {"ann_id": int(ann_ids[i]), "area": float(areas[i]), "targets": {}, "recon": {}} for i in examples
    ]
    rows = []
    for s in pbar(settings, desc="settings", total=len(settings)):
        with warnings.catch_warnings(record=True) as caught:  # summarised in the notes, not printed per batch
            warnings.simplefilter("always")
            row = _bench_setting(
                s, batches[s.mask_size], fit_masks.get(s.mask_size), windows, groups, ap_gt, evaluated_imgs,
                device, seed, notes, examples, example_rec, pbar,
            )
        if caught:
            first = " ".join(str(caught[0].message).split())
            notes.append(f"{s.label}: {len(caught)} warning(s) while fitting/encoding, first: "
                         f"{caught[0].category.__name__}: {first}")
        if row is not None:
            rows.append(row)
    if not rows:
        raise ValueError("every codec setting failed: " + "; ".join(notes))

    counts = {name: int(((areas >= lo) & (areas < hi)).sum()) for name, lo, hi in AREA_RANGES}
    import maskcodec

    meta = {
        "eval_files": [str(p) for p in ev.files],
        "eval_label": eval_label,
        "fit_files": [str(p) for p in fit_set.files] if fit_set is not None and fit_set is not ev else [],
        "fit_description": fit_desc,
        "fit_images": len(fit_ids),
        "fit_masks": {str(n): int(len(m)) for n, m in fit_masks.items()},
        "fit_excluded_images": excluded,
        "eval_images": len(evaluated_imgs),
        "eval_images_selected": len(eval_ids),
        "images_without_instances": len(eval_ids) - len(evaluated_imgs),
        "eval_masks": int(len(ann_ids)),
        "eval_masks_by_area": counts,
        "eval_skipped": dict(eval_skipped.counts),
        "eval_skipped_examples": _jsonable(getattr(eval_skipped, "examples", {})),
        "fit_skipped": dict(fit_skipped.counts) if fit_skipped is not None else None,
        "duplicate_images": ev.duplicates,
        "ap_gt_instances": ap_gt_noncrowd,
        "ap_gt_crowd": ap_gt_crowd,
        "ap_gt_unreadable": ap_unreadable,
        "ap_gt_without_prediction": ap_gt_noncrowd - int(len(ann_ids)),
        "settings": [s.label for s in settings],
        "notes": notes,
        "device": device,
        "sampling_ratio": sampling_ratio,
        "seed": seed,
        "max_masks": max_masks,
        "maskcodec_version": maskcodec.__version__,
        "platform": f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPU(s)",
        "elapsed_s": time.perf_counter() - t_start,
        "command": call,
    }
    return BenchResult(rows=rows, meta=meta, examples=example_rec)


def _jsonable(x: Any) -> Any:
    try:
        return json.loads(json.dumps(x, default=_json_default))
    except TypeError:
        return str(x)


def _check_device(device: str) -> str:
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        ok, why = backend.cuda_status()
        import torch

        if not ok or not torch.cuda.is_available():
            raise ValueError(f"--device cuda needs a CUDA GPU usable from torch, but {why}; use --device cpu")
    return device


def _progress_factory(enabled: bool):
    if not enabled:
        return lambda it, **kw: it
    from tqdm.auto import tqdm

    return lambda it, **kw: tqdm(it, leave=False, file=sys.stderr, **kw)


def _pick_examples(areas: np.ndarray, rng: np.random.Generator) -> list[int]:
    """Indices of a few masks spread over the area ranges (two per range where possible)."""
    picked: list[int] = []
    for _, lo, hi in AREA_RANGES:
        idx = np.nonzero((areas >= lo) & (areas < hi))[0]
        picked += [int(i) for i in rng.permutation(idx)[: _N_EXAMPLES // 3]]
    if len(picked) < _N_EXAMPLES:
        rest = [int(i) for i in rng.permutation(len(areas)) if int(i) not in picked]
        picked += rest[: _N_EXAMPLES - len(picked)]
    return sorted(picked)


def _to_device(x: np.ndarray, device: str):
    if device == "cpu":
        return x
    import torch

    return torch.as_tensor(x, device=device)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _time(fn, device: str, budget_s: float = 2.0) -> float:
    """Median wall time of ``fn()`` over up to ``_TIMING_REPEATS`` calls (fewer for slow codecs)."""
    times: list[float] = []
    spent = 0.0
    while len(times) < _TIMING_REPEATS and (not times or spent + times[-1] <= budget_s):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
        spent += times[-1]
    return float(np.median(times))


def _bench_setting(
    s: Setting,
    batch: Any,
    fit_masks: np.ndarray | None,
    windows: list[_GTWindow],
    groups: list[np.ndarray],
    gt_coco: Any,
    evaluated_imgs: list[int],
    device: str,
    seed: int,
    notes: list[str],
    examples: list[int],
    example_rec: list[dict],
    pbar,
) -> dict | None:
    params = {"mask_size": s.mask_size, "n_components": s.n_components}
    codec = get_codec(s.codec, **params)
    if "random_state" in codec.get_params():
        codec.set_params(random_state=seed)
    fit_s = None
    if codec.requires_fit:
        t = time.perf_counter()
        try:
            codec.fit(fit_masks)
        except ValueError as err:
            notes.append(f"skipped {s.label}: fitting failed: {err}")
            return None
        fit_s = time.perf_counter() - t

    masks = np.asarray(batch.masks, dtype=bool)
    boxes = np.asarray(batch.boxes, dtype=np.float64)
    areas = np.asarray(batch.areas, dtype=np.float64)
    b = len(masks)

    # throughput on a fixed batch, in this process, on the chosen device
    tm = _to_device(masks[:_TIMING_BATCH], device)
    codec.encode(tm[:8])  # warm-up (device constants, caches, compilation)
    enc_t = _time(lambda: codec.encode(tm), device)
    tv = codec.encode(tm)
    codec.decode(tv[:8])
    dec_t = _time(lambda: codec.decode(tv), device)
    n_timed = len(masks[:_TIMING_BATCH])

    iou_nn = np.empty(b)
    iou_img = np.empty(b)
    biou = np.empty(b)
    results = []
    cats = np.asarray(batch.category_ids)
    imgs = np.asarray(batch.image_ids)
    example_pos = {i: k for k, i in enumerate(examples)}
    from pycocotools import mask as mask_utils

    for idx in pbar(groups, desc=s.label, total=len(groups)):
        soft = codec.decode(codec.encode(_to_device(masks[idx], device)))
        soft = np.asarray(backend.to_numpy(soft), dtype=np.float32)
        iou_nn[idx] = metrics.mask_iou(soft >= 0.5, masks[idx])
        wins = [windows[i] for i in idx]
        preds = _paste_windows(soft, boxes[idx], wins)
        biou[idx] = _boundary_ious(preds, wins)
        for j, i in enumerate(idx):
            win, pred = wins[j], preds[j]
            inter = int(np.count_nonzero(pred & win.crop))
            union = int(np.count_nonzero(pred)) + win.area - inter
            iou_img[i] = inter / union if union else 1.0
            full = np.zeros(win.image_size, dtype=np.uint8, order="F")
            h, w = pred.shape
            full[win.y0 : win.y0 + h, win.x0 : win.x0 + w] = pred
            rle = mask_utils.encode(full)
            rle["counts"] = rle["counts"].decode("ascii")
            results.append({"image_id": int(imgs[i]), "category_id": int(cats[i]), "segmentation": rle, "score": 1.0})
            if i in example_pos:
                rec = example_rec[example_pos[i]]
                rec["targets"][s.mask_size] = masks[i].copy()
                rec["recon"][s.label] = soft[j] >= 0.5
    ap = _oracle_ap(gt_coco, results, evaluated_imgs)

    row: dict[str, Any] = {
        "codec": s.codec,
        "mask_size": s.mask_size,
        "n_components": s.n_components,
        "n_masks": b,
        "iou_nn_mean": float(iou_nn.mean()),
        "iou_nn_median": float(np.median(iou_nn)),
        "iou_img_mean": float(iou_img.mean()),
        "iou_img_median": float(np.median(iou_img)),
    }
    for name, lo, hi in AREA_RANGES:
        sel = (areas >= lo) & (areas < hi)
        row[f"iou_img_{name}"] = float(iou_img[sel].mean()) if sel.any() else None
        row[f"n_{name}"] = int(sel.sum())
    row["boundary_iou_mean"] = float(biou.mean())
    row.update(ap)
    row["encode_masks_per_s"] = n_timed / enc_t if enc_t > 0 else None
    row["decode_masks_per_s"] = n_timed / dec_t if dec_t > 0 else None
    row["fit_seconds"] = fit_s
    row["bytes_per_mask_float32"] = 4 * s.n_components
    return row


def _oracle_ap(gt_coco: Any, results: list[dict], img_ids: list[int]) -> dict[str, float | None]:
    """COCO mask AP (in %) of the codec-reconstructed GT masks submitted with score 1."""
    if not results:
        return {"ap": None, "ap50": None, "ap75": None}
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt_coco.loadRes(results)
        ev = COCOeval(gt_coco, dt, iouType="segm")
        ev.params.imgIds = list(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ap, ap50, ap75 = (float(v) * 100.0 for v in ev.stats[:3])
    return {"ap": ap, "ap50": ap50, "ap75": ap75}


# ----------------------------------------------------------------------------- output
def write_outputs(result: BenchResult, out_dir: str | os.PathLike, plots: bool = True) -> list[Path]:
    """Write results.json, results.csv, the PNG plots and RESULTS.md into ``out_dir``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write(out / "results.json", result.to_json()), atomic_write(out / "results.csv", result.to_csv())]
    pngs: list[Path] = []
    if plots:
        from . import plots as plots_mod

        pngs = plots_mod.write_all(result, out)
    written += pngs
    written.append(atomic_write(out / "RESULTS.md", result.to_markdown(plots=[p.name for p in pngs])))
    return written
