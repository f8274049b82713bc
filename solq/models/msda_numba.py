"""Fused multi-scale deformable attention on the CPU (numba), forward and backward.

Same semantics as the reference core in :mod:`solq.models.deform_attn` (``grid_sample``:
bilinear, zero padding, ``align_corners=False``, so location ``x`` in [0, 1] is pixel
coordinate ``x * W - 0.5``), but values are read channel-last ``(N, S, M, D)``: each bilinear
sample's four corner weights are computed once and applied to all D channels of a contiguous
row, and nothing bigger than the output is written.

* forward: parallel over queries ``(n, q)``; each writes its own output row.
* backward: parallel over ``(n, m)``; the value gradients of different (batch, head) pairs do not
  overlap, so no atomics are needed; location and weight gradients are per (n, q, m, l, p).

The parallel kernels run only in the process that first launched one (see
:mod:`maskcodec.parallel`): a DataLoader worker forked after numba's threading layer started
uses the single-threaded twins, which would otherwise deadlock in GNU OpenMP.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

from maskcodec.parallel import parallel_allowed

from .msda_autograd import fused_core_function

#: Below this many (query, head, level, point) samples the kernels run on one thread.
_PARALLEL_MIN_SAMPLES = 1 << 14
#: Reassociation lets the channel loops vectorise; no "nnan"/"ninf", so the NaN / out-of-map test stays.
_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}


def _corners(x, y, w, h):  # pragma: no cover - numba
    """Bilinear corners of pixel coordinate (x, y) on a (h, w) map.

    Returns (x0, y0, lx, ly, v00, v01, v10, v11): the top-left corner, the fractional offsets,
    and 1.0/0.0 validity of corners (y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1).
    """
    x0 = int(np.floor(x))
    y0 = int(np.floor(y))
    lx = x - x0
    ly = y - y0
    in_x0 = 1.0 if x0 >= 0 else 0.0
    in_x1 = 1.0 if x0 + 1 <= w - 1 else 0.0
    in_y0 = 1.0 if y0 >= 0 else 0.0
    in_y1 = 1.0 if y0 + 1 <= h - 1 else 0.0
    return x0, y0, lx, ly, in_y0 * in_x0, in_y0 * in_x1, in_y1 * in_x0, in_y1 * in_x1


_corners_jit = njit(inline="always", cache=True)(_corners)


def _forward(value, shapes, starts, loc, attn, out):  # pragma: no cover - numba
    """value (N, S, M, D), loc (N, Lq, M, L, P, 2), attn (N, Lq, M, L, P) -> out (N, Lq, M, D) (zeroed)."""
    n_batch, s, m_heads, d = value.shape
    lq, n_levels, n_points = loc.shape[1], loc.shape[3], loc.shape[4]
    cast = value.dtype.type
    for nq in prange(n_batch * lq):
        n = nq // lq
        q = nq - n * lq
        for m in range(m_heads):
            for lvl in range(n_levels):
                h = shapes[lvl, 0]
                w = shapes[lvl, 1]
                start = starts[lvl]
                for p in range(n_points):
                    x = loc[n, q, m, lvl, p, 0] * w - 0.5
                    y = loc[n, q, m, lvl, p, 1] * h - 0.5
                    if not (x >= -1.0 and x < w and y >= -1.0 and y < h):
                        continue  # all four corners in the zero padding (or NaN)
                    x0, y0, lx, ly, v00, v01, v10, v11 = _corners_jit(x, y, w, h)
                    a = attn[n, q, m, lvl, p]
                    # weights in the values' dtype, so the channel loop does not widen float32
                    w00 = cast(a * (1.0 - ly) * (1.0 - lx) * v00)
                    w01 = cast(a * (1.0 - ly) * lx * v01)
                    w10 = cast(a * ly * (1.0 - lx) * v10)
                    w11 = cast(a * ly * lx * v11)
                    # invalid corners have weight 0: clamp their index to a valid pixel
                    i00 = start + max(y0, 0) * w + max(x0, 0)
                    i01 = start + max(y0, 0) * w + min(x0 + 1, w - 1)
                    i10 = start + min(y0 + 1, h - 1) * w + max(x0, 0)
                    i11 = start + min(y0 + 1, h - 1) * w + min(x0 + 1, w - 1)
                    for c in range(d):
                        out[n, q, m, c] += (w00 * value[n, i00, m, c] + w01 * value[n, i01, m, c]
                                            + w10 * value[n, i10, m, c] + w11 * value[n, i11, m, c])


def _backward(value, shapes, starts, loc, attn, grad_out, grad_value, grad_loc, grad_attn):  # pragma: no cover
    """Gradients of :func:`_forward` for grad_out (N, Lq, M, D); grad_value must be zeroed."""
    n_batch, s, m_heads, d = value.shape
    lq, n_levels, n_points = loc.shape[1], loc.shape[3], loc.shape[4]
    cast = value.dtype.type
    for nm in prange(n_batch * m_heads):
        n = nm // m_heads
        m = nm - n * m_heads
        for q in range(lq):
            for lvl in range(n_levels):
                h = shapes[lvl, 0]
                w = shapes[lvl, 1]
                start = starts[lvl]
                for p in range(n_points):
                    x = loc[n, q, m, lvl, p, 0] * w - 0.5
                    y = loc[n, q, m, lvl, p, 1] * h - 0.5
                    if not (x >= -1.0 and x < w and y >= -1.0 and y < h):
                        continue
                    x0, y0, lx, ly, v00, v01, v10, v11 = _corners_jit(x, y, w, h)
                    a = attn[n, q, m, lvl, p]
                    hx = cast(1.0 - lx)
                    hy = cast(1.0 - ly)
                    fx = cast(lx)
                    fy = cast(ly)
                    i00 = start + max(y0, 0) * w + max(x0, 0)
                    i01 = start + max(y0, 0) * w + min(x0 + 1, w - 1)
                    i10 = start + min(y0 + 1, h - 1) * w + max(x0, 0)
                    i11 = start + min(y0 + 1, h - 1) * w + min(x0 + 1, w - 1)
                    # value gradients; an invalid corner's clamped index gets += 0 in this (n, m) slice
                    g00 = cast(a * hy * hx * v00)
                    g01 = cast(a * hy * fx * v01)
                    g10 = cast(a * fy * hx * v10)
                    g11 = cast(a * fy * fx * v11)
                    c00, c01, c10, c11 = cast(v00), cast(v01), cast(v10), cast(v11)
                    dot = cast(0.0)
                    dx = cast(0.0)
                    dy = cast(0.0)
                    for c in range(d):
                        go = grad_out[n, q, m, c]
                        u00 = value[n, i00, m, c] * c00
                        u01 = value[n, i01, m, c] * c01
                        u10 = value[n, i10, m, c] * c10
                        u11 = value[n, i11, m, c] * c11
                        dot += go * (hy * (hx * u00 + fx * u01) + fy * (hx * u10 + fx * u11))
                        dx += go * (hy * (u01 - u00) + fy * (u11 - u10))
                        dy += go * (hx * (u10 - u00) + fx * (u11 - u01))
                        grad_value[n, i00, m, c] += g00 * go
                        grad_value[n, i01, m, c] += g01 * go
                        grad_value[n, i10, m, c] += g10 * go
                        grad_value[n, i11, m, c] += g11 * go
                    grad_attn[n, q, m, lvl, p] = dot
                    grad_loc[n, q, m, lvl, p, 0] = a * dx * w
                    grad_loc[n, q, m, lvl, p, 1] = a * dy * h


_forward_parallel = njit(parallel=True, cache=True, fastmath=_FASTMATH)(_forward)
_forward_serial = njit(cache=True, fastmath=_FASTMATH)(_forward)
_backward_parallel = njit(parallel=True, cache=True, fastmath=_FASTMATH)(_backward)
_backward_serial = njit(cache=True, fastmath=_FASTMATH)(_backward)


def _level_arrays(spatial_shapes) -> tuple[np.ndarray, np.ndarray]:
    shapes = np.asarray([[int(h), int(w)] for h, w in spatial_shapes], dtype=np.int64).reshape(-1, 2)
    starts = np.zeros(len(shapes), dtype=np.int64)
    if len(shapes) > 1:
        starts[1:] = np.cumsum(shapes[:, 0] * shapes[:, 1])[:-1]
    return shapes, starts


def _parallel(n_samples: int) -> bool:
    """Use the threaded kernel: enough work, not a forked child (checked first: it touches no numba
    state), more than one numba thread."""
    return n_samples >= _PARALLEL_MIN_SAMPLES and parallel_allowed() and numba.get_num_threads() > 1


def msda_forward(value: torch.Tensor, spatial_shapes, loc: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Forward on contiguous CPU tensors of one float dtype -> (N, Lq, M, D)."""
    n, _, m, d = value.shape
    lq = loc.shape[1]
    out = torch.zeros((n, lq, m, d), dtype=value.dtype)
    if out.numel() == 0:
        return out
    shapes, starts = _level_arrays(spatial_shapes)
    kernel = _forward_parallel if _parallel(attn.numel()) else _forward_serial
    kernel(value.numpy(), shapes, starts, loc.numpy(), attn.numpy(), out.numpy())
    return out


def msda_backward(value: torch.Tensor, spatial_shapes, loc: torch.Tensor, attn: torch.Tensor,
                  grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (value, loc, attn) for grad_out (N, Lq, M, D); contiguous CPU tensors."""
    grad_value = torch.zeros_like(value)
    grad_loc = torch.zeros_like(loc)
    grad_attn = torch.zeros_like(attn)
    if attn.numel() and value.shape[-1]:
        shapes, starts = _level_arrays(spatial_shapes)
        kernel = _backward_parallel if _parallel(attn.numel()) else _backward_serial
        kernel(value.numpy(), shapes, starts, loc.numpy(), attn.numpy(), grad_out.numpy(),
               grad_value.numpy(), grad_loc.numpy(), grad_attn.numpy())
    return grad_value, grad_loc, grad_attn


MSDeformAttnNumba = fused_core_function("numba", msda_forward, msda_backward)
