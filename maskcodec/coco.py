"""COCO instance annotations -> box-relative N x N masks, streamed in bounded memory.

``iter_mask_batches`` reads polygons, uncompressed RLE and compressed RLE (crowd) and yields
``MaskBatch`` chunks. Only the box region of each annotation is ever rasterised or decoded
(polygons are rasterised with pycocotools' own integer arithmetic, re-implemented in a
compiled kernel that writes only the box region; RLEs are decoded column range by column
range), and the whole chunk is resampled to N x N by one compiled call, so a COCO-scale file
never materialises a full-image mask per annotation. The result is bit-identical to
``crop_resize(annToMask(ann), bbox, N)`` (checked in ``tests/test_coco.py``), in both sampling
modes (``sampling_ratio`` 0, the default and the official SOLQ targets, or 1).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from numba import njit, prange
from pycocotools.coco import COCO

from .coco_validate import AnnotationProblem, rle_counts, segmentation_problem
from .geometry import _check_sampling_ratio, _sample_regions, crop_resize
from .parallel import parallel_allowed

__all__ = [
    "MaskBatch",
    "SkipReport",
    "read_instances",
    "iter_mask_batches",
    "load_masks",
    "annotation_mask",
    "sample_annotation_files",
]

#: Skip reasons reported by ``iter_mask_batches``.
SKIP_CROWD = "crowd"
SKIP_SHORT_POLYGON = "polygon with fewer than 3 points"
SKIP_ZERO_BOX = "zero-area box"
SKIP_EMPTY = "empty mask"
SKIP_UNKNOWN_IMAGE = "unknown image"
SKIP_BAD_BOX = "missing or non-finite box"
SKIP_BAD_RLE = "RLE size differs from image size"
SKIP_BAD_RLE_COUNTS = "RLE counts do not sum to height x width"
SKIP_BAD_SEGMENTATION = "unreadable segmentation"


# ----------------------------------------------------------------------------- containers
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


@dataclass
class SkipReport:
    """Annotations left out by ``iter_mask_batches``: counts per reason and the first examples."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[tuple[int, str]] = field(default_factory=list)
    max_examples: int = 20

    def add(self, ann_id: int, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append((int(ann_id), reason))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line, e.g. ``skipped 3 annotations: crowd 2, empty mask 1``."""
        if not self.counts:
            return "skipped 0 annotations"
        parts = ", ".join(f"{reason} {n}" for reason, n in sorted(self.counts.items(), key=lambda kv: -kv[1]))
        return f"skipped {self.total} annotation{'s' if self.total != 1 else ''}: {parts}"


# ----------------------------------------------------------------------------- reading
def read_instances(source: str | os.PathLike | dict | COCO) -> COCO:
    """Load a COCO instances file (or dict) into a ``pycocotools.coco.COCO`` without its prints.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not JSON or
    not a COCO *instances* file (no "images"/"annotations", annotations without "segmentation").
    """
    if isinstance(source, COCO):
        return source
    if isinstance(source, dict):
        dataset, where = source, "the annotation dict"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = str(path)
        if not path.exists():
            raise FileNotFoundError(f"COCO annotation file not found: {path}")
        if path.is_dir():
            raise ValueError(f"{path} is a directory; pass the instances_*.json file inside it")
        try:
            with open(path, "rb") as fh:
                dataset = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); expected a COCO instances_*.json file") from None
    else:
        raise TypeError(f"expected a path, a dict or a pycocotools COCO object, got {type(source).__name__}")
    _validate_instances(dataset, where)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _validate_instances(dataset: Any, where: str) -> None:
    if not isinstance(dataset, dict):
        raise ValueError(f"{where} is not a COCO instances file: the top level is a {type(dataset).__name__}, "
                         "expected an object with 'images' and 'annotations'")
    missing = [k for k in ("images", "annotations") if k not in dataset]
    if missing:
        raise ValueError(
            f"{where} is not a COCO instances file: missing key(s) {', '.join(repr(m) for m in missing)} "
            f"(found {sorted(dataset)[:8]}); a results file (a list of detections) is read with COCO.loadRes"
        )
    for key in ("images", "annotations"):
        if not isinstance(dataset[key], list):
            raise ValueError(f"{where}: '{key}' must be a list, got {type(dataset[key]).__name__}")
    for img in dataset["images"]:
        lacking = [k for k in ("id", "height", "width") if not isinstance(img, dict) or k not in img]
        if lacking:
            raise ValueError(
                f"{where}: image entry {str(img)[:80]} lacks {lacking}; COCO images need id, height, width"
            )
    for ann in dataset["annotations"]:
        lacking = [k for k in ("id", "image_id", "bbox", "segmentation") if not isinstance(ann, dict) or k not in ann]
        if lacking:
            if lacking == ["segmentation"]:
                what = "this looks like a detection-only or keypoint file; instance masks need 'segmentation'"
            else:
                what = "COCO instance annotations need id, image_id, bbox, segmentation"
            ident = ann.get("id", "?") if isinstance(ann, dict) else "?"
            raise ValueError(f"{where}: annotation id {ident} lacks {lacking}: {what}")


def annotation_mask(coco: COCO, ann: dict) -> np.ndarray:
    """The full-resolution mask ``(H, W)`` bool of one annotation (pycocotools ``annToMask``).

    ``ValueError`` naming the problem for a segmentation pycocotools would crash or hang on.
    """
    img = coco.imgs.get(ann.get("image_id"), {})
    problem = segmentation_problem(ann.get("segmentation"), img.get("height", 0), img.get("width", 0))
    if problem is not None:
        raise ValueError(f"annotation {ann.get('id')}: {problem}")
    with warnings.catch_warnings():
        # pycocotools' decode trips numpy 2's __array__(copy=...) deprecation once per call
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco.annToMask(ann).astype(bool)


def sample_annotation_files() -> dict[str, Path]:
    """The built-in sample (COCO 2017 annotations of the COCO-MINI subset): {"train": path, "val": path}."""
    root = Path(str(resources.files("maskcodec") / "data"))
    return {"train": root / "coco_mini_train.json", "val": root / "coco_mini_val.json"}


# ----------------------------------------------------------------------------- RLE decoding
@njit(inline="always")
def _fill_interval(start, end, height, r0, r1, c0, c1, buf, off):
    """Set the pixels of the column-major image interval [start, end) that fall in the region to 1.

    The region (rows [r0, r1), columns [c0, c1)) is stored column-major at ``buf[off:]``.
    """
    lo = c0 * height
    hi = c1 * height
    s = max(start, lo)
    e = min(end, hi)
    if s >= e:
        return
    rh = r1 - r0
    col = s // height
    while col * height < e:
        a = max(max(s, col * height) - col * height, r0)
        b = min(min(e, (col + 1) * height) - col * height, r1)
        base = off + (col - c0) * rh - r0
        for r in range(a, b):
            buf[base + r] = 1
        col += 1


@njit(cache=True)
def _fill_rle(counts, height, r0, r1, c0, c1, buf, off):
    """Write the region of a column-major RLE (run lengths, zeros first) into ``buf[off:]``."""
    pos = 0
    for i in range(len(counts)):
        n = counts[i]
        start = pos
        pos += n
        if i % 2 == 1 and n > 0:
            if start >= c1 * height:
                break
            _fill_interval(start, pos, height, r0, r1, c0, c1, buf, off)


@njit(cache=True)
def _polygon_toggles(xy, k, h, w):
    """Sorted column-major positions where the mask of a polygon switches, plus the sentinel h*w.

    The same integer arithmetic as pycocotools' ``rleFrPoly`` (maskApi.c): the outline is traced
    on a 5x upsampled grid, and each crossing of a pixel-column centre line becomes one switch
    point; the pixels in [p0, p1), [p2, p3), ... are inside. Working in full-image coordinates
    keeps the result bit-identical to ``annToMask``.
    """
    scale = 5.0
    x = np.empty(k + 1, dtype=np.int64)
    y = np.empty(k + 1, dtype=np.int64)
    for j in range(k):
        x[j] = int(scale * xy[2 * j] + 0.5)
        y[j] = int(scale * xy[2 * j + 1] + 0.5)
    x[k] = x[0]
    y[k] = y[0]
    m = 0
    for j in range(k):
        m += max(abs(x[j] - x[j + 1]), abs(y[j] - y[j + 1])) + 1
    pos = np.empty(m + 1, dtype=np.int64)
    n = 0
    # walk the traced outline point by point (the order of maskApi.c's u/v arrays) and keep the
    # points where it enters a new upsampled column, without storing the trace
    pu = 0
    pv = 0
    first = True
    for j in range(k):
        xs = x[j]
        xe = x[j + 1]
        ys = y[j]
        ye = y[j + 1]
        dx = abs(xe - xs)
        dy = abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe = xe, xs
            ys, ye = ye, ys
        steps = dx if dx >= dy else dy
        if dx >= dy:
            s = (ye - ys) / dx if dx > 0 else 0.0  # C gets 0/0 = NaN here; that point is never used
        else:
            s = (xe - xs) / dy
        for d in range(steps + 1):
            t = steps - d if flip else d
            if dx >= dy:
                cu = t + xs
                cv = int(ys + s * t + 0.5)
            else:
                cv = t + ys
                cu = int(xs + s * t + 0.5)
            if first:
                first = False
            elif cu != pu:
                xd = float(cu if cu < pu else cu - 1)
                xd = (xd + 0.5) / scale - 0.5
                if math.floor(xd) == xd and xd >= 0 and xd <= w - 1:
                    yd = float(cv if cv < pv else pv)
                    yd = (yd + 0.5) / scale - 0.5
                    if yd < 0:
                        yd = 0.0
                    elif yd > h:
                        yd = float(h)
                    yd = math.ceil(yd)
                    pos[n] = int(xd) * h + int(yd)
                    n += 1
            pu = cu
            pv = cv
    pos[n] = h * w
    return np.sort(pos[: n + 1])


@njit(inline="always")
def _rasterize_one(a, coords, poly_start, ann_polys, meta, regions, buf, invalid):
    off = meta[a, 0]
    h = meta[a, 1]
    w = meta[a, 2]
    limit = 4.0 * max(h, w) + 1e4  # keeps the 5x upsampled outline trace bounded
    bad = False
    for i in range(poly_start[ann_polys[a]], poly_start[ann_polys[a + 1]]):
        if not abs(coords[i]) <= limit:
            bad = True
    if bad:
        invalid[a] = True
        return
    r0 = regions[a, 0]
    r1 = regions[a, 1]
    c0 = regions[a, 2]
    c1 = regions[a, 3]
    for p in range(ann_polys[a], ann_polys[a + 1]):
        xy = coords[poly_start[p] : poly_start[p + 1]]
        pos = _polygon_toggles(xy, len(xy) // 2, h, w)
        for i in range(0, len(pos) - 1, 2):
            _fill_interval(pos[i], pos[i + 1], h, r0, r1, c0, c1, buf, off)


@njit(parallel=True, cache=True)
def _rasterize_polygons(coords, poly_start, ann_polys, meta, regions, buf, invalid):
    """Rasterise the polygons of many annotations into their box-region canvases (union per annotation).

    Annotation ``a`` owns polygons ``ann_polys[a]:ann_polys[a + 1]``; polygon ``p`` is
    ``coords[poly_start[p]:poly_start[p + 1]]`` (x, y, x, y, ... in image pixels). ``meta[a] =
    (buffer offset, image_h, image_w)`` and ``regions[a] = (r0, r1, c0, c1)``. Annotations with
    a NaN, infinite or absurdly large coordinate are left empty and flagged in ``invalid``.
    """
    for a in prange(ann_polys.shape[0] - 1):
        _rasterize_one(a, coords, poly_start, ann_polys, meta, regions, buf, invalid)


@njit(cache=True)
def _rasterize_polygons_serial(coords, poly_start, ann_polys, meta, regions, buf, invalid):
    """``_rasterize_polygons`` on one thread (see ``maskcodec.parallel``)."""
    for a in range(ann_polys.shape[0] - 1):
        _rasterize_one(a, coords, poly_start, ann_polys, meta, regions, buf, invalid)


# ----------------------------------------------------------------------------- streaming
def _as_coordinates(flat: list, spans: list[tuple[int, int]]) -> np.ndarray:
    """float64 array of all polygon coordinates; an annotation with non-numbers becomes NaN (skipped)."""
    try:
        return np.asarray(flat, dtype=np.float64).reshape(len(flat))
    except (TypeError, ValueError):
        out = np.full(len(flat), np.nan)
        for start, end in spans:
            try:
                out[start:end] = np.asarray(flat[start:end], dtype=np.float64).reshape(end - start)
            except (TypeError, ValueError):
                pass
        return out


def iter_mask_batches(
    source: str | os.PathLike | dict | COCO,
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
    source : path, dict or pycocotools ``COCO``
    mask_size : int
        Side N of the output masks (each annotation's mask is cropped to its "bbox" and
        resampled like ``geometry.crop_resize``, binarised at 0.5).
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
        sum to height x width", "unreadable segmentation"; see ``maskcodec.coco_validate``).

    Yields
    ------
    MaskBatch chunks of at most ``batch_size`` masks, in annotation-file order.
    """
    if isinstance(mask_size, bool) or not isinstance(mask_size, (int, np.integer)) or mask_size < 1:
        raise ValueError(f"mask_size must be a positive integer, got {mask_size!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_masks is not None and (isinstance(max_masks, bool) or not isinstance(max_masks, (int, np.integer))
                                  or max_masks < 0):
        raise ValueError(f"max_masks must be a non-negative integer or None, got {max_masks!r}")
    sampling_ratio = _check_sampling_ratio(sampling_ratio)
    coco = read_instances(source)
    report = skipped if skipped is not None else SkipReport()
    wanted = None if image_ids is None else {int(i) for i in image_ids}
    remaining = math.inf if max_masks is None else int(max_masks)
    if remaining == 0:
        return
    pending: list[dict] = []
    for ann in coco.dataset["annotations"]:
        if wanted is not None and ann.get("image_id") not in wanted:
            continue
        pending.append(ann)
        if len(pending) >= batch_size:
            for batch in _process_chunk(coco, pending, int(mask_size), include_crowd, report, sampling_ratio):
                take = min(len(batch), remaining)
                yield batch if take == len(batch) else _head(batch, int(take))
                remaining -= take
                if remaining <= 0:
                    return
            pending = []
    if pending:
        for batch in _process_chunk(coco, pending, int(mask_size), include_crowd, report, sampling_ratio):
            take = min(len(batch), remaining)
            yield batch if take == len(batch) else _head(batch, int(take))


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


def _decode_chunk(coco: COCO, anns: list[dict], include_crowd: bool, report: SkipReport):
    """Box-region canvases of the usable annotations of a chunk, or None when none is usable.

    Returns (buf, meta, kept annotations, boxes (k, 4) xyxy, image sizes (k, 2), invalid (k,)).
    Canvas ``a`` covers rows [r0, r1) x columns [c0, c1) of its image, column-major (the RLE
    order), at ``buf[meta[a, 0]:]``. Polygons of the whole chunk are rasterised by one compiled
    call; RLEs (crowd) are decoded one by one, region only.
    """
    imgs = coco.imgs
    cand: list[dict] = []
    hw: list[tuple[int, int]] = []
    raw_boxes: list = []
    for ann in anns:
        if not include_crowd and ann.get("iscrowd", 0):
            report.add(ann.get("id", -1), SKIP_CROWD)
            continue
        img = imgs.get(ann.get("image_id"))
        if img is None:
            report.add(ann.get("id", -1), SKIP_UNKNOWN_IMAGE)
            continue
        cand.append(ann)
        hw.append((img["height"], img["width"]))
        raw_boxes.append(ann.get("bbox"))
    if not cand:
        return None
    sizes = np.array(hw, dtype=np.int64).reshape(-1, 2)
    xywh = _parse_boxes(raw_boxes)
    finite = np.isfinite(xywh).all(axis=1)
    positive = finite & (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    boxes = xywh.copy()
    boxes[:, 2:] += boxes[:, :2]
    # rows [r0, r1) and columns [c0, c1) that roi_align-style sampling over the box can read
    with np.errstate(invalid="ignore"):
        lo = np.floor(np.where(positive[:, None], boxes[:, :2], 0)) - 1
        hi = np.ceil(np.where(positive[:, None], boxes[:, 2:], 0)) + 1
    c0 = np.clip(lo[:, 0], 0, sizes[:, 1]).astype(np.int64)
    r0 = np.clip(lo[:, 1], 0, sizes[:, 0]).astype(np.int64)
    c1 = np.maximum(np.minimum(hi[:, 0], sizes[:, 1]).astype(np.int64), c0)
    r1 = np.maximum(np.minimum(hi[:, 1], sizes[:, 0]).astype(np.int64), r0)
    area = (r1 - r0) * (c1 - c0)
    area[~positive] = 0
    offsets = np.zeros(len(cand) + 1, dtype=np.int64)
    np.cumsum(area, out=offsets[1:])

    keep = np.zeros(len(cand), dtype=np.bool_)
    flat_coords: list = []  # every polygon coordinate of the chunk, converted once
    poly_spans: list[tuple[int, int]] = []
    poly_lengths: list[int] = []
    poly_owner: list[tuple[int, int]] = []  # (candidate index, number of polygons)
    rle_anns: list[tuple[int, np.ndarray]] = []
    for k, ann in enumerate(cand):
        if not positive[k]:
            report.add(ann.get("id", -1), SKIP_ZERO_BOX if finite[k] else SKIP_BAD_BOX)
            continue
        if area[k] == 0:  # box entirely outside the image
            report.add(ann.get("id", -1), SKIP_EMPTY)
            continue
        segm = ann.get("segmentation")
        if isinstance(segm, list):
            start = len(flat_coords)
            count = 0
            for poly in segm:
                if isinstance(poly, (list, tuple)) and len(poly) >= 6:
                    flat_coords.extend(poly)
                    poly_lengths.append(len(poly))
                    count += 1
            if not count:
                report.add(ann.get("id", -1), SKIP_SHORT_POLYGON)
                continue
            poly_owner.append((k, count))
            poly_spans.append((start, len(flat_coords)))
        elif isinstance(segm, dict) and "counts" in segm:
            try:
                counts = rle_counts(segm, int(sizes[k, 0]), int(sizes[k, 1]))
            except AnnotationProblem as err:
                report.add(ann.get("id", -1), str(err))
                continue
            rle_anns.append((k, counts))
        else:
            report.add(ann.get("id", -1), SKIP_BAD_SEGMENTATION)
            continue
        keep[k] = True
    if not keep.any():
        return None
    buf = np.zeros(int(offsets[-1]), dtype=np.uint8)
    invalid = np.zeros(len(cand), dtype=np.bool_)
    if poly_owner:
        owner = np.array(poly_owner, dtype=np.int64)
        idx = owner[:, 0]
        ann_polys = np.zeros(len(owner) + 1, dtype=np.int64)
        np.cumsum(owner[:, 1], out=ann_polys[1:])
        poly_start = np.zeros(len(poly_lengths) + 1, dtype=np.int64)
        np.cumsum(poly_lengths, out=poly_start[1:])
        kernel_meta = np.stack([offsets[idx], sizes[idx, 0], sizes[idx, 1]], axis=1)
        regions = np.stack([r0[idx], r1[idx], c0[idx], c1[idx]], axis=1)
        bad = np.zeros(len(owner), dtype=np.bool_)
        kernel = _rasterize_polygons if len(owner) > 1 and parallel_allowed() else _rasterize_polygons_serial
        kernel(_as_coordinates(flat_coords, poly_spans), poly_start, ann_polys, kernel_meta, regions, buf, bad)
        invalid[idx[bad]] = True
    for k, counts in rle_anns:
        _fill_rle(counts, int(sizes[k, 0]), int(r0[k]), int(r1[k]), int(c0[k]), int(c1[k]), buf, int(offsets[k]))
    sel = np.flatnonzero(keep)
    rh = (r1 - r0)[sel]
    # column-major canvas: pixel (y, x) at offset + (x - c0) * rh + (y - r0)
    meta = np.stack([offsets[sel], np.ones_like(rh), rh, r0[sel], c0[sel], rh, (c1 - c0)[sel],
                     sizes[sel, 0], sizes[sel, 1]], axis=1)
    kept = [cand[k] for k in sel]
    return buf, meta, kept, boxes[sel], sizes[sel], invalid[sel]


def load_masks(source: str | os.PathLike | dict | COCO, mask_size: int, **kw: Any) -> MaskBatch:
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
