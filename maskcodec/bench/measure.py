"""One benchmark setting: fit the codec, time it, send every mask through it and score the result.

``measure_setting`` returns a ``SettingOutcome`` (the row, the notes, the example reconstructions);
it changes none of its arguments.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from .. import backend, metrics
from ..coco import MaskBatch
from ..registry import get_codec
from .settings import AREA_RANGES, Setting
from .timing import TIMING_BATCH, time_call, to_device
from .windows import GTWindow, boundary_ious, paste_windows


@dataclass
class EvalData:
    """What every setting is measured on: the masks at each N and their full-image ground truth."""

    batches: dict[int, MaskBatch]  #: the same instances at every N, in the same order
    windows: list[GTWindow]  #: full-resolution GT of each instance (``windows.gt_window``)
    groups: list[np.ndarray]  #: instance indices batched together (``windows.window_groups``)
    ap_gt: COCO  #: oracle-AP ground truth (``selection.ap_ground_truth``)
    ap_unreadable: int  #: annotations of the evaluated images pycocotools cannot rasterise (left out)
    evaluated_imgs: list[int]
    examples: list[int]  #: indices of the instances kept for the figures


@dataclass
class SettingOutcome:
    """A setting's row (None when it could not run), its notes and its example reconstructions."""

    row: dict | None
    notes: list[str] = field(default_factory=list)
    #: instance index (one of ``EvalData.examples``) -> thresholded reconstruction (N, N) bool
    recon: dict[int, np.ndarray] = field(default_factory=dict)


def measure_setting(s: Setting, data: EvalData, fit_masks: np.ndarray | None, device: str, seed: int,
                    pbar: Callable = lambda it, **kw: it) -> SettingOutcome:
    """Fit (learned codecs), time and score ``s``; warnings are summarised in the notes, not printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = _measure(s, data, fit_masks, device, seed, pbar)
    if caught:
        first = " ".join(str(caught[0].message).split())
        outcome.notes.append(f"{s.label}: {len(caught)} warning(s) while fitting/encoding, first: "
                             f"{caught[0].category.__name__}: {first}")
    return outcome


def _measure(s: Setting, data: EvalData, fit_masks: np.ndarray | None, device: str, seed: int,
             pbar: Callable) -> SettingOutcome:
    codec = get_codec(s.codec, mask_size=s.mask_size, n_components=s.n_components)
    if "random_state" in codec.get_params():
        codec.set_params(random_state=seed)
    fit_s = None
    if codec.requires_fit:
        t = time.perf_counter()
        try:
            codec.fit(fit_masks)
        except ValueError as err:
            return SettingOutcome(None, [f"skipped {s.label}: fitting failed: {err}"])
        fit_s = time.perf_counter() - t
    batch = data.batches[s.mask_size]
    masks = np.asarray(batch.masks, dtype=bool)
    speed = _throughput(codec, masks, device)
    scores, results, recon = _reconstruct(codec, s, batch, data, device, pbar)
    row = _row(s, batch, scores, _oracle_ap(data.ap_gt, results, data.evaluated_imgs), speed)
    row["fit_seconds"] = fit_s
    row["bytes_per_mask_float32"] = 4 * s.n_components
    return SettingOutcome(row, [], recon)


def _throughput(codec: Any, masks: np.ndarray, device: str) -> dict[str, float | None]:
    """Encoded and decoded masks per second on a fixed batch, in this process, on ``device``."""
    tm = to_device(masks[:TIMING_BATCH], device)
    codec.encode(tm[:8])  # warm-up (device constants, caches, compilation)
    enc_t = time_call(lambda: codec.encode(tm), device)
    tv = codec.encode(tm)
    codec.decode(tv[:8])
    dec_t = time_call(lambda: codec.decode(tv), device)
    n_timed = len(masks[:TIMING_BATCH])
    return {"encode_masks_per_s": n_timed / enc_t if enc_t > 0 else None,
            "decode_masks_per_s": n_timed / dec_t if dec_t > 0 else None}


def _reconstruct(codec: Any, s: Setting, batch: MaskBatch, data: EvalData, device: str,
                 pbar: Callable) -> tuple[dict[str, np.ndarray], list[dict], dict[int, np.ndarray]]:
    """Per-instance IoU N×N, IoU and boundary IoU in the image, the oracle-AP detections, the examples."""
    masks = np.asarray(batch.masks, dtype=bool)
    boxes = np.asarray(batch.boxes, dtype=np.float64)
    cats, imgs = np.asarray(batch.category_ids), np.asarray(batch.image_ids)
    b = len(masks)
    scores = {"iou_nn": np.empty(b), "iou_img": np.empty(b), "biou": np.empty(b)}
    results: list[dict] = []
    recon: dict[int, np.ndarray] = {}
    examples = set(data.examples)
    for idx in pbar(data.groups, desc=s.label, total=len(data.groups)):
        soft = codec.decode(codec.encode(to_device(masks[idx], device)))
        soft = np.asarray(backend.to_numpy(soft), dtype=np.float32)
        scores["iou_nn"][idx] = metrics.mask_iou(soft >= 0.5, masks[idx])
        wins = [data.windows[i] for i in idx]
        preds = paste_windows(soft, boxes[idx], wins)
        scores["biou"][idx] = boundary_ious(preds, wins)
        for j, i in enumerate(idx):
            win, pred = wins[j], preds[j]
            inter = int(np.count_nonzero(pred & win.crop))
            union = int(np.count_nonzero(pred)) + win.area - inter
            scores["iou_img"][i] = inter / union if union else 1.0
            results.append({"image_id": int(imgs[i]), "category_id": int(cats[i]),
                            "segmentation": _image_rle(pred, win), "score": 1.0})
            if i in examples:
                recon[int(i)] = soft[j] >= 0.5
    return scores, results, recon


def _image_rle(pred: np.ndarray, win: GTWindow) -> dict:
    """The window mask ``pred`` placed in its full image, as a COCO RLE with str counts."""
    full = np.zeros(win.image_size, dtype=np.uint8, order="F")
    h, w = pred.shape
    full[win.y0 : win.y0 + h, win.x0 : win.x0 + w] = pred
    rle = mask_utils.encode(full)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _row(s: Setting, batch: MaskBatch, scores: dict[str, np.ndarray], ap: dict, speed: dict) -> dict[str, Any]:
    iou_nn, iou_img = scores["iou_nn"], scores["iou_img"]
    areas = np.asarray(batch.areas, dtype=np.float64)
    row: dict[str, Any] = {
        "codec": s.codec,
        "mask_size": s.mask_size,
        "n_components": s.n_components,
        "n_masks": len(iou_nn),
        "iou_nn_mean": float(iou_nn.mean()),
        "iou_nn_median": float(np.median(iou_nn)),
        "iou_img_mean": float(iou_img.mean()),
        "iou_img_median": float(np.median(iou_img)),
    }
    for name, lo, hi in AREA_RANGES:
        sel = (areas >= lo) & (areas < hi)
        row[f"iou_img_{name}"] = float(iou_img[sel].mean()) if sel.any() else None
        row[f"n_{name}"] = int(sel.sum())
    row["boundary_iou_mean"] = float(scores["biou"].mean())
    row.update(ap)
    row.update(speed)
    return row


def _oracle_ap(gt_coco: COCO, results: list[dict], img_ids: list[int]) -> dict[str, float | None]:
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
