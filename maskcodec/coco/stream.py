"""Streaming COCO annotations as box-relative N x N masks: ``MaskBatch``, ``iter_mask_batches``, ``load_masks``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from pycocotools.coco import COCO

from ..box_checks import _check_size
from ..crop import _check_sampling_ratio, _sample_regions, crop_resize
from ..parallel import parallel_allowed
from .instances import annotation_mask, read_instances
from .merge import merge_files
from .rasterize import as_coordinates, fill_rle, rasterize_polygons, rasterize_polygons_serial
from .skips import (
    SKIP_BAD_BOX,
    SKIP_BAD_SEGMENTATION,
    SKIP_CROWD,
    SKIP_EMPTY,
    SKIP_SHORT_POLYGON,
    SKIP_UNKNOWN_IMAGE,
    SKIP_ZERO_BOX,
    SkipReport,
)
from .validate import AnnotationProblem, rle_counts


@dataclass
class MaskBatch:
    """A chunk of annotations as box-relative masks.

    masks (b, N, N) bool; boxes (b, 4) float64 xyxy pixels; image_ids, ann_ids, category_ids
    (b,) int64; areas (b,) float64 (COCO "area"); image_sizes (b, 2) int64 (H, W); iscrowd (b,) bool.
    """

    masks: np.ndarray
    boxes: np.ndarray
    image_ids: np.ndarray
    ann_ids: np.ndarray
    category_ids: np.ndarray
    areas: np.ndarray
    image_sizes: np.ndarray
    iscrowd: np.ndarray

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @classmethod
    def empty(cls, mask_size: int) -> "MaskBatch":
        """A batch with no masks (every field has length 0 and the right trailing shape)."""
        return cls(
            masks=np.zeros((0, mask_size, mask_size), dtype=np.bool_),
            boxes=np.zeros((0, 4), dtype=np.float64),
            image_ids=np.zeros(0, dtype=np.int64),
            ann_ids=np.zeros(0, dtype=np.int64),
            category_ids=np.zeros(0, dtype=np.int64),
            areas=np.zeros(0, dtype=np.float64),
            image_sizes=np.zeros((0, 2), dtype=np.int64),
            iscrowd=np.zeros(0, dtype=np.bool_),
        )

    @classmethod
    def concatenate(cls, batches: Iterable["MaskBatch"], mask_size: int | None = None) -> "MaskBatch":
        """Join batches in order; an empty list needs ``mask_size`` to shape the empty result."""
        batches = list(batches)
        if not batches:
            if mask_size is None:
                raise ValueError("cannot concatenate an empty list of MaskBatch without mask_size")
            return cls.empty(mask_size)
        sizes = {b.masks.shape[1:] for b in batches}
        if len(sizes) != 1:
            raise ValueError(f"cannot concatenate MaskBatch objects with different mask sizes {sorted(sizes)}")
        names = ["masks", "boxes", "image_ids", "ann_ids", "category_ids", "areas", "image_sizes", "iscrowd"]
        return cls(**{n: np.concatenate([getattr(b, n) for b in batches]) for n in names})



def iter_mask_batches(
    source: str | os.PathLike | dict | COCO | Sequence[str | os.PathLike],
    mask_size: int,
    *,
    batch_size: int = 1024,
    include_crowd: bool = False,
    max_masks: int | None = None,
    image_ids: Iterable[int] | None = None,
    skipped: SkipReport | None = None,
    sampling_ratio: int = 0,
) -> Iterator[MaskBatch]:
    """Stream the annotations of a COCO instances file as box-relative masks.

    Parameters
    ----------
    source : path, dict or pycocotools ``COCO``; or a list of paths, read as one (``merge_files``:
        an image met twice is read once; ids are renumbered where two files share them)
    mask_size : int
        Side N of the output masks (each annotation's mask is cropped to its "bbox" and
        resampled like ``maskcodec.crop.crop_resize``, binarised at 0.5).
    sampling_ratio : 0 or 1
        ``crop_resize``'s sampling: 0 (default) averages ceil(box side / N) bilinear samples per
        cell and axis, as roi_align(sampling_ratio=0) and the official SOLQ targets; 1 takes one.
    batch_size : int
        Masks per yielded chunk; only one chunk of masks is alive at a time.
    include_crowd : bool
        Keep ``iscrowd`` annotations (compressed or uncompressed RLE); by default they are
        skipped with reason "crowd".
    max_masks : int or None
        Stop after this many masks.
    image_ids : iterable of int or None
        Only annotations of these images.
    skipped : SkipReport or None
        Filled with the annotations left out and why ("crowd", "polygon with fewer than 3
        points", "zero-area box", "empty mask" (nothing left after resampling), "unknown image",
        "missing or non-finite box", "RLE size differs from image size", "RLE counts do not
        sum to height x width", "unreadable segmentation"; see ``maskcodec.coco.validate``).

    Yields
    ------
    MaskBatch chunks of at most ``batch_size`` masks, in annotation-file order.
    """
    _check_stream_args(mask_size, batch_size, max_masks)
    sampling_ratio = _check_sampling_ratio(sampling_ratio)
    report = skipped if skipped is not None else SkipReport()
    coco = _read_source(source, report)
    remaining = math.inf if max_masks is None else int(max_masks)
    if remaining == 0:
        return
    for anns in _annotation_chunks(coco, image_ids, int(batch_size)):
        for batch in _process_chunk(coco, anns, int(mask_size), include_crowd, report, sampling_ratio):
            take = min(len(batch), remaining)
            yield batch if take == len(batch) else _head(batch, int(take))
            remaining -= take
            if remaining <= 0:
                return


def _check_stream_args(mask_size: Any, batch_size: Any, max_masks: Any) -> None:
    _check_size(mask_size, "mask_size")
    _check_size(batch_size, "batch_size")
    if max_masks is not None and (isinstance(max_masks, bool) or not isinstance(max_masks, (int, np.integer))
                                  or max_masks < 0):
        raise ValueError(f"max_masks must be a non-negative integer or None, got {max_masks!r}")


def _annotation_chunks(coco: COCO, image_ids: Iterable[int] | None, batch_size: int) -> Iterator[list[dict]]:
    """The annotations (of ``image_ids`` only, when given) in file order, ``batch_size`` at a time."""
    wanted = None if image_ids is None else {int(i) for i in image_ids}
    pending: list[dict] = []
    for ann in coco.dataset["annotations"]:
        if wanted is not None and ann.get("image_id") not in wanted:
            continue
        pending.append(ann)
        if len(pending) >= batch_size:
            yield pending
            pending = []
    if pending:
        yield pending


def _read_source(source: Any, report: SkipReport) -> COCO:
    """One indexed COCO for a file, dict or COCO, or for a list of files (merged; what merging drops is reported)."""
    if not isinstance(source, (list, tuple)):
        return read_instances(source)
    if len(source) == 1:
        return read_instances(source[0])
    merged, _ = merge_files(source)
    for ann_id, reason in merged.dropped:
        report.add(ann_id, reason)
    return merged.coco


def _head(batch: MaskBatch, n: int) -> MaskBatch:
    return MaskBatch(**{k: v[:n] for k, v in vars(batch).items()})


def _process_chunk(coco: COCO, anns: list[dict], n: int, include_crowd: bool,
                   report: SkipReport, sampling_ratio: int = 0) -> Iterator[MaskBatch]:
    """Decode the box regions of a chunk of annotations and resample them in one kernel call."""
    decoded = _decode_chunk(coco, anns, include_crowd, report)
    if decoded is None:
        return
    buf, meta, kept, boxes, sizes, invalid = decoded
    masks = _sample_regions(buf, meta, boxes, n, 0.5, sampling_ratio)
    del buf
    ok = masks.reshape(len(kept), n * n).any(axis=1) & ~invalid
    if not ok.all():
        for k in np.flatnonzero(~ok):
            report.add(kept[k].get("id", -1), SKIP_BAD_SEGMENTATION if invalid[k] else SKIP_EMPTY)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return
        kept = [kept[k] for k in idx]
        masks, boxes, sizes = masks[idx], boxes[idx], sizes[idx]
    yield MaskBatch(
        masks=masks,
        boxes=boxes,
        image_ids=np.array([a["image_id"] for a in kept], dtype=np.int64),
        ann_ids=np.array([a.get("id", -1) for a in kept], dtype=np.int64),
        category_ids=np.array([a.get("category_id", -1) for a in kept], dtype=np.int64),
        areas=np.array([a.get("area", np.nan) for a in kept], dtype=np.float64),
        image_sizes=sizes,
        iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in kept], dtype=np.bool_),
    )


def _parse_boxes(raw: list) -> np.ndarray:
    """(n, 4) float64 COCO xywh boxes; malformed entries become NaN rows."""
    try:
        out = np.array(raw, dtype=np.float64)
        if out.shape == (len(raw), 4):
            return out
    except (TypeError, ValueError):
        pass
    out = np.full((len(raw), 4), np.nan)
    for k, bbox in enumerate(raw):
        try:
            out[k] = np.asarray(bbox, dtype=np.float64).reshape(4)
        except (TypeError, ValueError):
            pass
    return out


@dataclass
class _Regions:
    """The box region of each candidate annotation: rows [r0, r1) x columns [c0, c1), at ``offsets[k]`` of the buffer."""

    boxes: np.ndarray  # (k, 4) float64 xyxy (NaN where the box is unreadable)
    finite: np.ndarray  # (k,) bool: the box holds four finite numbers
    positive: np.ndarray  # (k,) bool: ... and has a positive width and height
    r0: np.ndarray
    r1: np.ndarray
    c0: np.ndarray
    c1: np.ndarray
    offsets: np.ndarray  # (k + 1,) int64: canvas k is buf[offsets[k]:offsets[k + 1]]


@dataclass
class _Segmentations:
    """The usable segmentations of a chunk: polygons packed for one kernel call, RLE counts one by one."""

    keep: np.ndarray  # (k,) bool
    flat_coords: list = field(default_factory=list)  # every polygon coordinate of the chunk
    poly_spans: list = field(default_factory=list)  # (start, stop) in flat_coords per annotation
    poly_lengths: list = field(default_factory=list)
    poly_owner: list = field(default_factory=list)  # (candidate index, number of polygons)
    rle_anns: list = field(default_factory=list)  # (candidate index, counts)


def _decode_chunk(coco: COCO, anns: list[dict], include_crowd: bool, report: SkipReport):
    """Box-region canvases of the usable annotations of a chunk, or None when none is usable.

    Returns (buf, meta, kept annotations, boxes (k, 4) xyxy, image sizes (k, 2), invalid (k,)).
    Canvas ``a`` covers rows [r0, r1) x columns [c0, c1) of its image, column-major (the RLE
    order), at ``buf[meta[a, 0]:]``. Polygons of the whole chunk are rasterised by one compiled
    call; RLEs (crowd) are decoded one by one, region only.
    """
    cand, sizes, raw_boxes = _candidates(coco, anns, include_crowd, report)
    if not cand:
        return None
    reg = _box_regions(raw_boxes, sizes)
    segs = _segmentations(cand, sizes, reg, report)
    if not segs.keep.any():
        return None
    buf, invalid = _fill_canvases(segs, sizes, reg)
    sel = np.flatnonzero(segs.keep)
    rh = (reg.r1 - reg.r0)[sel]
    # column-major canvas: pixel (y, x) at offset + (x - c0) * rh + (y - r0)
    meta = np.stack([reg.offsets[sel], np.ones_like(rh), rh, reg.r0[sel], reg.c0[sel], rh, (reg.c1 - reg.c0)[sel],
                     sizes[sel, 0], sizes[sel, 1]], axis=1)
    kept = [cand[k] for k in sel]
    return buf, meta, kept, reg.boxes[sel], sizes[sel], invalid[sel]


def _candidates(coco: COCO, anns: list[dict], include_crowd: bool,
                report: SkipReport) -> tuple[list[dict], np.ndarray, list]:
    """The annotations of known images (and not crowd, unless asked), their image sizes (k, 2) and raw boxes."""
    cand: list[dict] = []
    hw: list[tuple[int, int]] = []
    raw_boxes: list = []
    for ann in anns:
        if not include_crowd and ann.get("iscrowd", 0):
            report.add(ann.get("id", -1), SKIP_CROWD)
            continue
        img = coco.imgs.get(ann.get("image_id"))
        if img is None:
            report.add(ann.get("id", -1), SKIP_UNKNOWN_IMAGE)
            continue
        cand.append(ann)
        hw.append((img["height"], img["width"]))
        raw_boxes.append(ann.get("bbox"))
    return cand, np.array(hw, dtype=np.int64).reshape(-1, 2), raw_boxes


def _box_regions(raw_boxes: list, sizes: np.ndarray) -> _Regions:
    """Rows and columns that roi_align-style sampling over each box can read, and the canvas offsets."""
    xywh = _parse_boxes(raw_boxes)
    finite = np.isfinite(xywh).all(axis=1)
    positive = finite & (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    boxes = xywh.copy()
    boxes[:, 2:] += boxes[:, :2]
    with np.errstate(invalid="ignore"):
        lo = np.floor(np.where(positive[:, None], boxes[:, :2], 0)) - 1
        hi = np.ceil(np.where(positive[:, None], boxes[:, 2:], 0)) + 1
    c0 = np.clip(lo[:, 0], 0, sizes[:, 1]).astype(np.int64)
    r0 = np.clip(lo[:, 1], 0, sizes[:, 0]).astype(np.int64)
    c1 = np.maximum(np.minimum(hi[:, 0], sizes[:, 1]).astype(np.int64), c0)
    r1 = np.maximum(np.minimum(hi[:, 1], sizes[:, 0]).astype(np.int64), r0)
    area = (r1 - r0) * (c1 - c0)
    area[~positive] = 0
    offsets = np.zeros(len(boxes) + 1, dtype=np.int64)
    np.cumsum(area, out=offsets[1:])
    return _Regions(boxes, finite, positive, r0, r1, c0, c1, offsets)


def _segmentations(cand: list[dict], sizes: np.ndarray, reg: _Regions, report: SkipReport) -> _Segmentations:
    """Sort each candidate's segmentation into polygons or RLE counts; report the unusable ones."""
    segs = _Segmentations(keep=np.zeros(len(cand), dtype=np.bool_))
    for k, ann in enumerate(cand):
        if not reg.positive[k]:
            report.add(ann.get("id", -1), SKIP_ZERO_BOX if reg.finite[k] else SKIP_BAD_BOX)
            continue
        if reg.offsets[k + 1] == reg.offsets[k]:  # box entirely outside the image
            report.add(ann.get("id", -1), SKIP_EMPTY)
            continue
        segm = ann.get("segmentation")
        if isinstance(segm, list):
            start = len(segs.flat_coords)
            count = 0
            for poly in segm:
                if isinstance(poly, (list, tuple)) and len(poly) >= 6:
                    segs.flat_coords.extend(poly)
                    segs.poly_lengths.append(len(poly))
                    count += 1
            if not count:
                report.add(ann.get("id", -1), SKIP_SHORT_POLYGON)
                continue
            segs.poly_owner.append((k, count))
            segs.poly_spans.append((start, len(segs.flat_coords)))
        elif isinstance(segm, dict) and "counts" in segm:
            try:
                counts = rle_counts(segm, int(sizes[k, 0]), int(sizes[k, 1]))
            except AnnotationProblem as err:
                report.add(ann.get("id", -1), str(err))
                continue
            segs.rle_anns.append((k, counts))
        else:
            report.add(ann.get("id", -1), SKIP_BAD_SEGMENTATION)
            continue
        segs.keep[k] = True
    return segs


def _fill_canvases(segs: _Segmentations, sizes: np.ndarray, reg: _Regions) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 buffer of all canvases (polygons by one kernel call, RLEs one by one) and the invalid flags."""
    buf = np.zeros(int(reg.offsets[-1]), dtype=np.uint8)
    invalid = np.zeros(len(segs.keep), dtype=np.bool_)
    if segs.poly_owner:
        owner = np.array(segs.poly_owner, dtype=np.int64)
        idx = owner[:, 0]
        ann_polys = np.zeros(len(owner) + 1, dtype=np.int64)
        np.cumsum(owner[:, 1], out=ann_polys[1:])
        poly_start = np.zeros(len(segs.poly_lengths) + 1, dtype=np.int64)
        np.cumsum(segs.poly_lengths, out=poly_start[1:])
        kernel_meta = np.stack([reg.offsets[idx], sizes[idx, 0], sizes[idx, 1]], axis=1)
        regions = np.stack([reg.r0[idx], reg.r1[idx], reg.c0[idx], reg.c1[idx]], axis=1)
        bad = np.zeros(len(owner), dtype=np.bool_)
        kernel = rasterize_polygons if len(owner) > 1 and parallel_allowed() else rasterize_polygons_serial
        kernel(as_coordinates(segs.flat_coords, segs.poly_spans), poly_start, ann_polys, kernel_meta, regions, buf, bad)
        invalid[idx[bad]] = True
    for k, counts in segs.rle_anns:
        fill_rle(counts, int(sizes[k, 0]), int(reg.r0[k]), int(reg.r1[k]), int(reg.c0[k]), int(reg.c1[k]), buf,
                 int(reg.offsets[k]))
    return buf, invalid


def load_masks(source: str | os.PathLike | dict | COCO | Sequence[str | os.PathLike], mask_size: int, **kw: Any) -> MaskBatch:
    """All masks of ``iter_mask_batches(source, mask_size, **kw)`` in one ``MaskBatch``."""
    return MaskBatch.concatenate(list(iter_mask_batches(source, mask_size, **kw)), mask_size=mask_size)


def reference_masks(coco: COCO, anns: Iterable[dict], mask_size: int, sampling_ratio: int = 0) -> np.ndarray:
    """Slow reference: ``crop_resize(annToMask(ann), bbox, N)`` per annotation, (b, N, N) bool."""
    out = []
    for ann in anns:
        x, y, w, h = ann["bbox"]
        box = np.array([[x, y, x + w, y + h]])
        out.append(crop_resize(annotation_mask(coco, ann)[None], box, mask_size, sampling_ratio=sampling_ratio)[0])
    return np.stack(out) if out else np.zeros((0, mask_size, mask_size), dtype=bool)
