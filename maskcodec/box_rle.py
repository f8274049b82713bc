"""Box-relative soft masks -> COCO RLE of the pasted, thresholded image masks, box by box.

``paste_rle(masks, boxes, (H, W))`` gives the same RLEs as
``pycocotools.mask.encode(paste(masks, boxes, (H, W)))`` without ever building the
``(B, H, W)`` image masks: every mask is resampled only at the pixels whose centre lies in its
box (the same float64 arithmetic as ``maskcodec.paste.paste``, so each pixel's value is
bit-identical) and the column-major runs of the image are written straight from that tile
(zeros outside the box are counted, not stored). The cost follows the boxes' pixels.

``decode_rle(codec, vectors, boxes, (H, W))`` decodes with the codec first (one batch), and
``rle_from_masks`` encodes a batch of full masks on the masks' device (torch, e.g. CUDA) so that
only the run lengths cross to the CPU.

RLEs are dicts ``{"size": [H, W], "counts": str}`` (pycocotools' compressed string, decoded
as ASCII, ready for ``json.dumps`` and ``COCO.loadRes``).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numba import njit

from . import backend
from .backend import Array
from .bit_words import first_nonzero_byte
from .box_checks import _check_boxes, _check_image_size, _check_masks, _check_threshold
from .paste import _paste_axis

__all__ = ["paste_rle", "decode_rle", "rle_from_masks", "counts_to_rle"]


# ----------------------------------------------------------------------------- one box's tile
@njit(inline="always")
def _grown(buf, size):
    """``buf`` when it holds ``size`` items, else a larger empty buffer of its dtype (grows rarely)."""
    if size <= buf.shape[0]:
        return buf
    return np.empty(max(2 * buf.shape[0], size), dtype=buf.dtype)


@njit(inline="always")
def _padded_stride(n):
    """A row stride >= ``n`` float64 that is an odd number of 64-byte cache lines: walking down a
    column of such rows spreads over every L1 set instead of thrashing a few (power-of-two strides)."""
    stride = (n + 7) // 8 * 8
    return stride + 8 if (stride // 8) % 2 == 0 else stride


@njit(inline="always")
def _column_range(u0, u1, lu):
    """First and last mask column that the box's pixel columns read (``hi < lo``: none)."""
    lo = 0
    hi = -1
    for m in range(lu.shape[0]):
        if lu[m] >= 0.0:
            if hi < 0:
                lo = u0[m]
            hi = u1[m]  # u0 and u1 never decrease along the box
    return lo, hi


@njit(inline="always")
def _resample_lines(mask, v0, v1, lv, c_lo, n_cols, lines):
    """The vertical bilinear step: ``lines[j, k] = (1 - lv[k]) * mask[v0[k], c_lo + j] + lv[k] * mask[v1[k], c_lo + j]``
    in float64 (``paste._paste_one``'s ``row``, same expression), -inf for rows whose centre fell
    outside the box by rounding (they stay 0). Read along mask rows (vectorised); each mask column
    becomes a contiguous line over the box's image rows."""
    for k in range(lv.shape[0]):
        if lv[k] < 0.0:
            for j in range(n_cols):
                lines[j, k] = -np.inf
            continue
        wa = 1.0 - lv[k]
        wb = lv[k]
        a = mask[v0[k], c_lo:c_lo + n_cols]
        b = mask[v1[k], c_lo:c_lo + n_cols]
        for j in range(n_cols):
            lines[j, k] = wa * a[j] + wb * b[j]


@njit(inline="always")
def _threshold_columns(lines, u0, u1, lu, c_lo, ny, threshold, tile):
    """The horizontal step and the threshold: ``tile[m, k] = (1 - lu[m]) * lines[u0[m], k] + lu[m] * lines[u1[m], k] >= threshold``
    (``paste._paste_one``'s pixel value, same expression) as 0/1 bytes, zero-padded to whole words."""
    for m in range(tile.shape[0]):
        column = tile[m]
        column[ny:] = 0
        if lu[m] < 0.0:  # centre outside the box by rounding: the column stays 0
            column[:ny] = 0
            continue
        wl = 1.0 - lu[m]
        wh = lu[m]
        lo = lines[u0[m] - c_lo]
        hi = lines[u1[m] - c_lo]
        for k in range(ny):  # vectorised
            column[k] = wl * lo[k] + wh * hi[k] >= threshold


# ----------------------------------------------------------------------------- run lengths
_ONES = np.uint64(0x0101010101010101)  # eight 1 bytes
_ZERO = np.uint64(0)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)

@njit(inline="always")
def _reserve(cnts, pos, need):
    """``cnts`` with room for ``need`` more runs after ``pos`` (doubling when full)."""
    if pos + need <= cnts.shape[0]:
        return cnts
    grown = np.empty(max(2 * cnts.shape[0], pos + need), dtype=cnts.dtype)
    grown[:pos] = cnts[:pos]
    return grown


@njit(inline="always")
def _append_column(words, ny, cnts, pos, value, run):
    """Continue the runs over one column of ``ny`` 0/1 bytes (read 8 at a time as ``words``).

    ``value`` is the current run's value and ``run`` its length so far; every change of value
    closes a run into ``cnts[pos]``. Returns the updated ``(cnts, pos, value, run)``.
    """
    cnts = _reserve(cnts, pos, ny + 1)
    for q in range((ny + 7) >> 3):
        valid = min(8, ny - 8 * q)
        keep = _ALL >> np.uint64(64 - 8 * valid)  # the word's bytes inside the column
        differ = (words[q] ^ (_ONES if value else _ZERO)) & keep  # 1 in bytes that change the run
        start = 0  # bytes of this word already counted
        while differ:
            i = first_nonzero_byte(differ)
            cnts[pos] = run + (i - start)
            pos += 1
            run = 0
            start = i
            value = not value
            if i == 7:
                break
            differ = (words[q] ^ (_ONES if value else _ZERO)) & keep & (_ALL << np.uint64(8 * (i + 1)))
        run += valid - start
    return cnts, pos, value, run


@njit(inline="always")
def _tile_runs(tile, ny, gap, cnts, pos, run):
    """Column-major runs of a box's (nx, >= ny) 0/1 tile whose columns are ``gap`` image rows apart,
    starting with a run of zeros of length ``run``. Returns ``(cnts, pos, value, run)``."""
    words = tile.view(np.uint64)
    value = False
    for m in range(tile.shape[0]):
        if m and gap:  # the image rows between this column of the box and the previous one
            if value:
                cnts = _reserve(cnts, pos, 1)
                cnts[pos] = run
                pos += 1
                value = False
                run = gap
            else:
                run += gap
        cnts, pos, value, run = _append_column(words[m], ny, cnts, pos, value, run)
    return cnts, pos, value, run


@njit(cache=True)
def _paste_runs(masks, boxes, height, width, threshold):
    """Column-major run lengths of every pasted, thresholded mask.

    Returns ``(counts, offsets)``: mask ``b``'s runs are ``counts[offsets[b]:offsets[b + 1]]``,
    starting with a (possibly empty) run of zeros, exactly as pycocotools' ``rleEncode``.

    Every pixel takes ``paste._paste_one``'s float64 expressions in the same order (vertical step
    ``_resample_lines``, then horizontal step ``_threshold_columns``), so every value is
    bit-identical; only the mask columns between the first and last one the box reads are resampled.
    """
    n, nh, nw = masks.shape
    cnts = np.empty(max(1024, 8 * n), dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    line_buf = np.empty(1 << 16, dtype=np.float64)
    tile_buf = np.empty(1 << 16, dtype=np.uint8)
    pos = 0
    for b in range(n):
        x0 = boxes[b, 0]
        y0 = boxes[b, 1]
        x1 = boxes[b, 2]
        y1 = boxes[b, 3]
        nx = 0
        ny = 0
        c_lo = 0
        c_hi = -1
        if x1 > x0 and y1 > y0 and nh > 0 and nw > 0:
            xa, nx, u0, u1, lu = _paste_axis(x0, x1, width, nw)
            ya, ny, v0, v1, lv = _paste_axis(y0, y1, height, nh)
            c_lo, c_hi = _column_range(u0, u1, lu)
        value = False  # pycocotools starts with a run of zeros
        if nx == 0 or ny == 0 or c_hi < c_lo:
            run = height * width
        else:
            n_cols = c_hi - c_lo + 1
            stride = _padded_stride(ny)
            line_buf = _grown(line_buf, n_cols * stride)
            lines = line_buf[:n_cols * stride].reshape((n_cols, stride))
            _resample_lines(masks[b], v0, v1, lv, c_lo, n_cols, lines)
            ny8 = (ny + 7) // 8 * 8  # whole uint64 words per column
            tile_buf = _grown(tile_buf, nx * ny8)
            tile = tile_buf[:nx * ny8].reshape((nx, ny8))
            _threshold_columns(lines, u0, u1, lu, c_lo, ny, threshold, tile)
            cnts, pos, value, run = _tile_runs(tile, ny, height - ny, cnts, pos, xa * height + ya)
            tail = (height - ya - ny) + (width - xa - nx) * height  # zeros after the box's last pixel
            if tail:
                if value:
                    cnts = _reserve(cnts, pos, 1)
                    cnts[pos] = run
                    pos += 1
                    run = tail
                else:
                    run += tail
        cnts = _reserve(cnts, pos, 1)
        cnts[pos] = run
        pos += 1
        offsets[b + 1] = pos
    return cnts[:pos], offsets


@njit(cache=True)
def _rle_strings(cnts, offsets):
    """pycocotools' ``rleToString`` for every mask: one byte buffer and per-mask offsets."""
    n = offsets.shape[0] - 1
    out = np.empty(13 * cnts.shape[0] + 1, dtype=np.uint8)  # 13 chars hold any 64-bit delta
    starts = np.zeros(n + 1, dtype=np.int64)
    p = 0
    for b in range(n):
        a = offsets[b]
        for i in range(offsets[b + 1] - a):
            x = cnts[a + i]
            if i > 2:
                x -= cnts[a + i - 2]
            more = True
            while more:
                c = x & 0x1F
                x >>= 5
                if c & 0x10:
                    more = x != -1
                else:
                    more = x != 0
                if more:
                    c |= 0x20
                out[p] = c + 48
                p += 1
        starts[b + 1] = p
    return out[:p], starts


def counts_to_rle(counts: np.ndarray, offsets: np.ndarray, image_size: tuple[int, int]) -> list[dict]:
    """Uncompressed column-major runs (mask ``b``: ``counts[offsets[b]:offsets[b+1]]``) -> COCO RLE dicts."""
    height, width = image_size
    data, starts = _rle_strings(np.ascontiguousarray(counts, dtype=np.int64),
                                np.ascontiguousarray(offsets, dtype=np.int64))
    text = data.tobytes().decode("ascii")
    height, width = int(height), int(width)
    bounds = starts.tolist()
    return [{"size": [height, width], "counts": text[a:b]} for a, b in zip(bounds[:-1], bounds[1:])]


# ----------------------------------------------------------------------------- public API
def paste_rle(masks: Array, boxes: Array, image_size: tuple[int, int], *, threshold: float = 0.5) -> list[dict]:
    """COCO RLEs of box-relative soft masks pasted into an ``H x W`` image and thresholded.

    Parameters
    ----------
    masks : (B, Nh, Nw) float (numpy or CPU torch), e.g. a codec's ``decode`` output.
    boxes : (B, 4) float, ``xyxy`` image pixels (they may extend outside the image).
    image_size : (H, W)
    threshold : a pixel is foreground when its bilinear value is ``>= threshold``.

    Returns
    -------
    B dicts ``{"size": [H, W], "counts": str}``, equal to
    ``pycocotools.mask.encode(np.asfortranarray(paste(masks, boxes, (H, W), threshold=threshold)))``
    (same sampling, same float64 arithmetic; boxes of zero or negative extent give empty masks).
    Boxes are read as float64 (pass the boxes you would pass to ``paste``). Tensors on a GPU are
    pasted there (``paste(..., impl="torch")``) and only their run lengths are copied to the host.
    """
    height, width = _check_image_size(image_size)
    threshold = _check_threshold(threshold)
    if threshold is None:
        raise ValueError("paste_rle needs a threshold (a float): RLEs are binary")
    masks = backend.as_array(masks)
    if backend.backend_of(masks) == "torch":
        if masks.device.type != "cpu":  # paste on the device (as paste's "auto" does), copy only the runs
            from .paste import paste

            return rle_from_masks(paste(masks, boxes, (height, width), threshold=threshold))
        masks = masks.detach().float().numpy()
    boxes = backend.to_numpy(backend.as_array(boxes))
    masks = np.asarray(masks)
    _check_masks(masks)
    _check_boxes(boxes, masks.shape[0])
    if masks.shape[0] == 0:
        return []
    counts, offsets = _paste_runs(np.ascontiguousarray(masks, dtype=np.float32),
                                  np.ascontiguousarray(boxes, dtype=np.float64), height, width, threshold)
    return counts_to_rle(counts, offsets, (height, width))


def decode_rle(codec: Any, vectors: Array, boxes: Array, image_size: tuple[int, int], *,
               threshold: float = 0.5) -> list[dict]:
    """Decode ``vectors`` (B, n_k) with ``codec`` in one batch, then ``paste_rle`` into ``image_size``.

    On a GPU tensor the soft masks are pasted and run-length encoded on the device: only the
    run lengths cross to the CPU.
    """
    return paste_rle(codec.decode(vectors), boxes, image_size, threshold=threshold)


def rle_from_masks(masks: Array) -> list[dict]:
    """(B, H, W) bool masks (numpy or torch on any device) -> B COCO RLEs.

    The runs are found on the masks' device (transitions along the column-major order); only the
    run lengths are copied to the host. Equal to ``pycocotools.mask.encode`` of the masks.
    """
    masks = backend.as_array(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (B, H, W), got {tuple(masks.shape)}")
    b, height, width = (int(s) for s in masks.shape)
    if backend.backend_of(masks) != "torch":  # numpy (or cupy, copied): pycocotools on the host
        import pycocotools.mask as mask_util

        host = np.asarray(backend.to_numpy(masks)) != 0
        if b == 0:
            return []
        rles = mask_util.encode(np.asfortranarray(host.transpose(1, 2, 0).astype(np.uint8)))
        return [{"size": [height, width], "counts": r["counts"].decode("ascii")} for r in rles]
    torch = sys.modules["torch"]
    if b == 0:
        return []
    flat = (masks != 0).transpose(1, 2).reshape(b, height * width)  # column-major per mask
    pad = torch.zeros(b, 1, dtype=torch.bool, device=flat.device)
    change = torch.cat([pad, flat], 1) != torch.cat([flat, pad], 1)  # (B, HW + 1): run boundaries
    change[:, 0] = True
    change[:, -1] = True
    where = change.nonzero()  # (M, 2) sorted by mask, then position
    per_mask = torch.bincount(where[:, 0], minlength=b)
    where, per_mask = where[:, 1].cpu().numpy(), per_mask.cpu().numpy()
    # boundaries at positions p_0 = 0 < p_1 < ... < p_m = HW; runs are their differences, and a
    # mask that starts with a 1 gets a leading empty run of zeros
    first = flat[:, 0].cpu().numpy() if height * width else np.zeros(b, dtype=bool)
    counts, offsets = [], [0]
    start = 0
    for i in range(b):
        pts = where[start:start + per_mask[i]]
        start += per_mask[i]
        runs = np.diff(pts)
        if height * width == 0:
            runs = np.zeros(1, dtype=np.int64)
        elif first[i]:
            runs = np.concatenate([[0], runs])
        counts.append(runs)
        offsets.append(offsets[-1] + len(runs))
    return counts_to_rle(np.concatenate(counts), np.asarray(offsets), (height, width))
