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
from .box_checks import _check_boxes, _check_image_size, _check_masks, _check_threshold
from .paste import _paste_axis

__all__ = ["paste_rle", "decode_rle", "rle_from_masks", "counts_to_rle"]


# ----------------------------------------------------------------------------- run lengths
_ONES = np.uint64(0x0101010101010101)  # eight 1 bytes
_ZERO = np.uint64(0)

@njit(inline="always")
def _reserve(cnts, pos, need):
    """``cnts`` with room for ``need`` more runs after ``pos`` (doubling when full)."""
    if pos + need <= cnts.shape[0]:
        return cnts
    grown = np.empty(max(2 * cnts.shape[0], pos + need), dtype=cnts.dtype)
    grown[:pos] = cnts[:pos]
    return grown


@njit(cache=True)
def _paste_runs(masks, boxes, height, width, threshold):
    """Column-major run lengths of every pasted, thresholded mask.

    Returns ``(counts, offsets)``: mask ``b``'s runs are ``counts[offsets[b]:offsets[b + 1]]``,
    starting with a (possibly empty) run of zeros, exactly as pycocotools' ``rleEncode``.

    Pixel ``(ya + k, xa + m)`` takes ``(1 - lu[m]) * rows[u0[m], k] + lu[m] * rows[u1[m], k]`` with
    ``rows[c, k] = (1 - lv[k]) * mask[v0[k], c] + lv[k] * mask[v1[k], c]`` in float64: the
    expressions of ``paste._paste_one``, evaluated in the same order, so every value is
    bit-identical. ``rows`` holds only the mask columns the box reads (two per image column at
    most), each as a contiguous line over the box's image rows.
    """
    n, nh, nw = masks.shape
    cnts = np.empty(max(1024, 8 * n), dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    line_of = np.full(nw, -1, dtype=np.int64)  # mask column -> its line in ``rows`` (or -1)
    line_col = np.empty(nw, dtype=np.int64)
    scratch = np.empty(1 << 16, dtype=np.float64)  # the current mask's resampled lines
    pos = 0
    for b in range(n):
        x0 = boxes[b, 0]
        y0 = boxes[b, 1]
        x1 = boxes[b, 2]
        y1 = boxes[b, 3]
        nx = 0
        ny = 0
        if x1 > x0 and y1 > y0 and nh > 0 and nw > 0:
            xa, nx, u0, u1, lu = _paste_axis(x0, x1, width, nw)
            ya, ny, v0, v1, lv = _paste_axis(y0, y1, height, nh)
        value = False  # value of the current run; pycocotools starts with a run of zeros
        run = 0  # its length so far
        if nx == 0 or ny == 0:
            run = height * width
        else:
            # the mask columns this box reads (at most 2 per image column), each resampled once
            n_lines = 0
            for m in range(nx):
                if lu[m] >= 0.0:
                    for c in (u0[m], u1[m]):
                        if line_of[c] < 0:
                            line_of[c] = n_lines
                            line_col[n_lines] = c
                            n_lines += 1
            if n_lines * ny > scratch.shape[0]:  # grows rarely: no page faults per mask
                scratch = np.empty(max(2 * scratch.shape[0], n_lines * ny), dtype=np.float64)
            rows = scratch[:n_lines * ny].reshape((n_lines, ny))
            wa = 1.0 - lv
            for i in range(n_lines):
                c = line_col[i]
                line = rows[i]
                for k in range(ny):
                    line[k] = wa[k] * masks[b, v0[k], c] + lv[k] * masks[b, v1[k], c]
            for k in range(ny):
                if lv[k] < 0.0:  # centre outside the box by rounding: the pixel stays 0
                    rows[:, k] = -np.inf
            column = np.zeros(-(-ny // 8) * 8, dtype=np.uint8)  # whole uint64 words
            words = column.view(np.uint64)
            run = xa * height + ya  # zeros before the box's first pixel
            gap = height - ny  # zeros between the box's columns
            for m in range(nx):
                cnts = _reserve(cnts, pos, ny + 2)
                if m and gap:
                    if value:
                        cnts[pos] = run
                        pos += 1
                        value = False
                        run = gap
                    else:
                        run += gap
                if lu[m] < 0.0:
                    column[:] = 0
                else:
                    wl = 1.0 - lu[m]
                    wh = lu[m]
                    lo = rows[line_of[u0[m]]]
                    hi = rows[line_of[u1[m]]]
                    for k in range(ny):  # vectorisable
                        column[k] = wl * lo[k] + wh * hi[k] >= threshold
                k = 0
                while k < ny:
                    if (k & 7) == 0 and k + 8 <= ny and words[k >> 3] == (_ONES if value else _ZERO):
                        run += 8  # eight pixels that continue the run
                        k += 8
                        continue
                    if column[k] != value:
                        cnts[pos] = run
                        pos += 1
                        value = not value
                        run = 0
                    run += 1
                    k += 1
            for i in range(n_lines):
                line_of[line_col[i]] = -1
            tail = (height - ya - ny) + (width - xa - nx) * height
            if tail:
                if value:
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
    size = [int(height), int(width)]
    return [{"size": list(size), "counts": text[starts[b]:starts[b + 1]]} for b in range(len(starts) - 1)]


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
