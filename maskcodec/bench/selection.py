"""The masks ``maskcodec bench`` measures: images chosen, masks at every N, the oracle-AP ground truth, examples."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import coco
from ..coco import SkipReport
from ..coco.validate import valid_ground_truth
from .settings import AREA_RANGES

N_EXAMPLES = 6  #: example masks kept for the figures


def _n_instances(c: Any, img_id: int) -> int:
    return sum(1 for a in c.imgToAnns.get(img_id, []) if not a.get("iscrowd", 0))


def select_images(c: Any, img_ids: Sequence[int], max_masks: int | None, rng: np.random.Generator) -> list[int]:
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


def load_all_sizes(c: Any, sizes: Sequence[int], img_ids: Sequence[int],
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


def ap_ground_truth(c: Any, img_ids: Sequence[int]) -> tuple[Any, int]:
    """A COCO object for COCOeval: the evaluated images and all their annotations (crowd included)
    that pass ``coco_validate.annotation_problem``; returns it and the number of annotations left out."""
    left_out = SkipReport()
    gt = valid_ground_truth(c, img_ids, box_if_empty=False, report=left_out)
    return gt, left_out.total


def pick_examples(areas: np.ndarray, rng: np.random.Generator) -> list[int]:
    """Indices of a few masks spread over the area ranges (two per range where possible)."""
    picked: list[int] = []
    for _, lo, hi in AREA_RANGES:
        idx = np.nonzero((areas >= lo) & (areas < hi))[0]
        picked += [int(i) for i in rng.permutation(idx)[: N_EXAMPLES // 3]]
    if len(picked) < N_EXAMPLES:
        rest = [int(i) for i in rng.permutation(len(areas)) if int(i) not in picked]
        picked += rest[: N_EXAMPLES - len(picked)]
    return sorted(picked)
