"""``run``: the benchmark, step by step: read the files, pick the masks, fit, measure every setting, describe it."""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .. import coco
from ..coco import MergedSet, SkipReport
from ..registry import codec_class
from ..version import __version__
from .measure import EvalData, measure_setting
from .report import BenchResult, jsonable, skips_text
from .selection import ap_ground_truth, load_all_sizes, pick_examples, select_images
from .settings import AREA_RANGES, DEFAULT_CODECS, DEFAULT_DIMS, DEFAULT_SIZES, Setting, expand_settings
from .timing import check_device
from .windows import gt_window, window_groups

_FIT_FRACTION = 0.5  # share of images used for fitting when no fit files are given


@dataclass
class _Sources:
    """The evaluation set and, for learned codecs, the fitting set and how it was chosen."""

    ev: MergedSet
    eval_ids: list[int]  #: candidate evaluation images (before ``max_masks``)
    eval_label: str
    learned: list[str]
    fit_set: MergedSet | None
    fit_ids: list[int]
    fit_excluded: int
    fit_desc: str
    notes: list[str]


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
    """Benchmark codecs on COCO instance masks; see ``maskcodec.bench`` for the metrics.

    ``ann_files`` None (or empty) uses the built-in sample: evaluate on its val split and fit
    learned codecs on its train split. Raises ``ValueError`` / ``FileNotFoundError`` with a
    message for bad input (unknown codec, unreadable or non-COCO file, empty selection, no
    GPU for ``device="cuda"``).
    ``sampling_ratio``: how GT masks are cropped to N x N (``geometry.crop_resize``): 0 (default)
    adaptive ROIAlign, the official SOLQ targets; 1 one bilinear sample per cell. The report says which.
    """
    t_start = time.perf_counter()
    settings, notes = expand_settings(codecs, sizes, dims)
    device = check_device(device)
    if max_masks is not None and (not isinstance(max_masks, (int, np.integer)) or max_masks < 1):
        raise ValueError(f"max_masks must be a positive integer, got {max_masks!r}")
    call = (
        f"maskcodec.bench.run({[str(p) for p in ann_files] if ann_files else None!r}, "
        f"fit_ann_files={[str(p) for p in fit_ann_files] if fit_ann_files else None!r}, codecs={codecs!r}, "
        f"sizes={tuple(sizes) if not isinstance(sizes, str) else sizes!r}, "
        f"dims={tuple(dims) if not isinstance(dims, str) else dims!r}, device={device!r}, "
        f"max_masks={max_masks!r}, seed={seed!r}, sampling_ratio={sampling_ratio!r})"
    )
    rng = np.random.default_rng(seed)
    src = _read_sources(ann_files, fit_ann_files, settings, seed, rng)
    notes += src.notes
    eval_ids = select_images(src.ev.coco, src.eval_ids, max_masks, rng)
    if not eval_ids:
        raise ValueError(
            "the selection holds no non-crowd instance masks to evaluate (empty files, only crowd regions, "
            "or --max-masks too small)"
        )
    pbar = _progress_factory(progress)
    data, eval_skipped = _eval_data(src.ev, settings, eval_ids, sampling_ratio, rng, pbar)
    fit_masks, fit_skipped = _fit_masks(src, settings, sampling_ratio)
    fit_desc = src.fit_desc
    if src.learned:
        sizes_fit = ", ".join(f"{len(m)} masks at N={n}" for n, m in fit_masks.items())
        fit_desc += f" Fitting set: {len(src.fit_ids)} images, {sizes_fit}."
    areas = np.asarray(data.batches[min(data.batches)].areas, dtype=np.float64)
    rows, example_rec = _measure_all(settings, data, fit_masks, device, seed, notes, pbar)
    counts = {name: int(((areas >= lo) & (areas < hi)).sum()) for name, lo, hi in AREA_RANGES}
    skipped = {"eval": eval_skipped, "fit": fit_skipped}
    meta = _meta(src, data, eval_ids, counts, skipped, fit_masks, fit_desc, settings, notes)
    meta.update(device=device, sampling_ratio=sampling_ratio, seed=seed, max_masks=max_masks,
                maskcodec_version=__version__,
                platform=f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPU(s)",
                elapsed_s=time.perf_counter() - t_start, command=call)
    return BenchResult(rows=rows, meta=meta, examples=example_rec)


def _read_sources(ann_files: Sequence | None, fit_ann_files: Sequence | None, settings: list[Setting],
                  seed: int, rng: np.random.Generator) -> _Sources:
    """Merge the evaluation files, and the fitting files or a seeded half of the evaluation images."""
    eval_label, notes = "", []
    user_fit_files = list(fit_ann_files or [])
    if not ann_files:
        eval_label = "the built-in sample, COCO-MINI val (maskcodec/data/coco_mini_val.json)"
        sample = coco.sample_annotation_files()
        ann_files = [sample["val"]]
        if fit_ann_files is None:
            fit_ann_files = [sample["train"]]
    learned = sorted({s.codec for s in settings if codec_class(s.codec).requires_fit})
    ev, _ = coco.merge_files(ann_files)
    all_ids = sorted(ev.coco.getImgIds())
    if not all_ids:
        raise ValueError(f"no images in {', '.join(map(str, ann_files))}: nothing to evaluate")
    fit_ids: list[int] = []
    fit_set, excluded = None, 0
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
    return _Sources(ev, all_ids, eval_label, learned, fit_set, fit_ids, excluded, fit_desc, notes)


def _eval_data(ev: MergedSet, settings: list[Setting], eval_ids: list[int], sampling_ratio: int,
               rng: np.random.Generator, pbar: Callable) -> tuple[EvalData, SkipReport]:
    """The evaluation masks at every N (the same instances), their GT windows, the oracle-AP GT, the examples."""
    batches, eval_skipped = load_all_sizes(ev.coco, sorted({s.mask_size for s in settings}), eval_ids,
                                           sampling_ratio)
    for ann_id, reason in ev.dropped:
        eval_skipped.add(ann_id, reason)
    ref = batches[min(batches)]
    ann_ids = np.asarray(ref.ann_ids)
    if len(ann_ids) == 0:
        raise ValueError(
            f"no usable instance masks in the selection ({skips_text(eval_skipped.counts)}); "
            "check the annotation files"
        )
    boxes = np.asarray(ref.boxes, dtype=np.float64)
    windows = []
    for i in pbar(range(len(ann_ids)), desc="GT masks", total=len(ann_ids)):
        ann = ev.coco.anns[int(ann_ids[i])]
        windows.append(gt_window(np.asarray(coco.annotation_mask(ev.coco, ann), dtype=bool), boxes[i]))
    evaluated_imgs = sorted(set(int(i) for i in np.asarray(ref.image_ids)))
    ap_gt, ap_unreadable = ap_ground_truth(ev.coco, evaluated_imgs)
    examples = pick_examples(np.asarray(ref.areas, dtype=np.float64), rng)
    data = EvalData(batches, windows, window_groups(windows), ap_gt, ap_unreadable, evaluated_imgs, examples)
    return data, eval_skipped


def _fit_masks(src: _Sources, settings: list[Setting], sampling_ratio: int
               ) -> tuple[dict[int, np.ndarray], SkipReport | None]:
    """The fitting masks, once per N that a learned codec needs."""
    fit_sizes = sorted({s.mask_size for s in settings if s.codec in src.learned})
    if not fit_sizes:
        return {}, None
    fit_batches, fit_skipped = load_all_sizes(src.fit_set.coco, fit_sizes, src.fit_ids, sampling_ratio)
    if src.fit_set is not src.ev:
        for ann_id, reason in src.fit_set.dropped:
            fit_skipped.add(ann_id, reason)
    return {n: np.asarray(b.masks) for n, b in fit_batches.items()}, fit_skipped


def _measure_all(settings: list[Setting], data: EvalData, fit_masks: dict[int, np.ndarray], device: str,
                 seed: int, notes: list[str], pbar: Callable) -> tuple[list[dict], list[dict]]:
    """A row per setting that ran (its notes appended to ``notes``) and the example records for the figures."""
    ref = data.batches[min(data.batches)]
    example_rec = [{"ann_id": int(ref.ann_ids[i]), "area": float(ref.areas[i]), "targets": {}, "recon": {}}
                   for i in data.examples]
    rows = []
    for s in pbar(settings, desc="settings", total=len(settings)):
        outcome = measure_setting(s, data, fit_masks.get(s.mask_size), device, seed, pbar)
        notes += outcome.notes
        for rec, i in zip(example_rec, data.examples):
            if i in outcome.recon:
                rec["targets"][s.mask_size] = data.batches[s.mask_size].masks[i].copy()
                rec["recon"][s.label] = outcome.recon[i]
        if outcome.row is not None:
            rows.append(outcome.row)
    if not rows:
        raise ValueError("every codec setting failed: " + "; ".join(notes))
    return rows, example_rec


def _meta(src: _Sources, data: EvalData, eval_ids: list[int], counts: dict[str, int],
          skipped: dict[str, SkipReport | None], fit_masks: dict[int, np.ndarray], fit_desc: str,
          settings: list[Setting], notes: list[str]) -> dict[str, Any]:
    """What was measured on which data (``BenchResult.meta``), without the run's device and timing."""
    ev, fit_set = src.ev, src.fit_set
    n_masks = len(data.batches[min(data.batches)])
    ap_gt_noncrowd = sum(1 for a in data.ap_gt.dataset["annotations"] if not a["iscrowd"])
    eval_skipped, fit_skipped = skipped["eval"], skipped["fit"]
    return {
        "eval_files": [str(p) for p in ev.files],
        "eval_label": src.eval_label,
        "fit_files": [str(p) for p in fit_set.files] if fit_set is not None and fit_set is not ev else [],
        "fit_description": fit_desc,
        "fit_images": len(src.fit_ids),
        "fit_masks": {str(n): int(len(m)) for n, m in fit_masks.items()},
        "fit_excluded_images": src.fit_excluded,
        "eval_images": len(data.evaluated_imgs),
        "eval_images_selected": len(eval_ids),
        "images_without_instances": len(eval_ids) - len(data.evaluated_imgs),
        "eval_masks": int(n_masks),
        "eval_masks_by_area": counts,
        "eval_skipped": dict(eval_skipped.counts),
        "eval_skipped_examples": jsonable(getattr(eval_skipped, "examples", {})),
        "fit_skipped": dict(fit_skipped.counts) if fit_skipped is not None else None,
        "duplicate_images": ev.duplicates,
        "ap_gt_instances": ap_gt_noncrowd,
        "ap_gt_crowd": len(data.ap_gt.dataset["annotations"]) - ap_gt_noncrowd,
        "ap_gt_unreadable": data.ap_unreadable,
        "ap_gt_without_prediction": ap_gt_noncrowd - int(n_masks),
        "settings": [s.label for s in settings],
        "notes": notes,
    }


def _progress_factory(enabled: bool):
    if not enabled:
        return lambda it, **kw: it
    from tqdm.auto import tqdm

    return lambda it, **kw: tqdm(it, leave=False, file=sys.stderr, **kw)
