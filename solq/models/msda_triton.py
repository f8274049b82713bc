"""Fused multi-scale deformable attention on CUDA (Triton), forward and backward.

Same semantics as the reference core in :mod:`solq.models.deform_attn` (bilinear, zero padding,
``align_corners=False``). One program handles a block of queries of one (batch, head) pair and
all D channels of it: values are read channel-last ``(N, S, M, D)``, so each of a sample's four
corners is one contiguous load of D channels, and the bilinear weights are computed once per
sample. The backward writes location and weight gradients directly (one program owns each) and
adds value gradients with ``tl.atomic_add``.

Only long-stable ``tl.*`` calls are used (Triton 3.x). The dispatcher selects this backend only
for CUDA tensors; the tests run it on CPU tensors under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .msda_autograd import fused_core_function

#: Queries per program.
BLOCK_Q = 32


@triton.jit
def _setup(loc_ptr, attn_ptr, idx, q_mask, h, w):
    """One (level, point) for every query of the block: weight, validity, top-left corner, fractions."""
    lx = tl.load(loc_ptr + idx * 2, mask=q_mask, other=-2.0)
    ly = tl.load(loc_ptr + idx * 2 + 1, mask=q_mask, other=-2.0)
    a = tl.load(attn_ptr + idx, mask=q_mask, other=0.0)
    x = lx * w - 0.5
    y = ly * h - 0.5
    valid = q_mask & (x >= -1.0) & (x < w) & (y >= -1.0) & (y < h)  # False for NaN too
    x = tl.where(valid, x, 0.0)
    y = tl.where(valid, y, 0.0)
    x0 = (x + 1.0).to(tl.int32) - 1  # floor, as x >= -1
    y0 = (y + 1.0).to(tl.int32) - 1
    return a, valid, x0, y0, x - x0, y - y0


@triton.jit
def _corner(row_base, start, cy, cx, h, w, valid, offs_d, d_mask, MD):
    """Element offsets (BLOCK_Q, BLOCK_D) of pixel (cy, cx) of a level and their mask (zero padding)."""
    ok = valid & (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
    pix = tl.where(ok, start + cy * w + cx, 0).to(tl.int64)
    return row_base + pix[:, None] * MD + offs_d[None, :], ok[:, None] & d_mask[None, :]


@triton.jit
def _forward_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
                    S, Lq, M, L, P, D, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_q = tl.program_id(0)
    pid_nm = tl.program_id(1)
    n = pid_nm // M
    m = pid_nm % M
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    q_mask = offs_q < Lq
    d_mask = offs_d < D
    MD = M * D
    row_base = n.to(tl.int64) * S * MD + m * D  # value[n, 0, m, 0]
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=out_ptr.dtype.element_ty)
    for lvl in range(L):
        h = tl.load(shapes_ptr + 2 * lvl)
        w = tl.load(shapes_ptr + 2 * lvl + 1)
        start = tl.load(starts_ptr + lvl)
        for p in range(P):
            idx = ((((n * Lq + offs_q) * M + m) * L + lvl) * P + p).to(tl.int64)
            a, valid, x0, y0, fx, fy = _setup(loc_ptr, attn_ptr, idx, q_mask, h, w)
            ptrs, ok = _corner(row_base, start, y0, x0, h, w, valid, offs_d, d_mask, MD)
            acc += (a * (1.0 - fy) * (1.0 - fx))[:, None] * tl.load(value_ptr + ptrs, mask=ok, other=0.0)
            ptrs, ok = _corner(row_base, start, y0, x0 + 1, h, w, valid, offs_d, d_mask, MD)
            acc += (a * (1.0 - fy) * fx)[:, None] * tl.load(value_ptr + ptrs, mask=ok, other=0.0)
            ptrs, ok = _corner(row_base, start, y0 + 1, x0, h, w, valid, offs_d, d_mask, MD)
            acc += (a * fy * (1.0 - fx))[:, None] * tl.load(value_ptr + ptrs, mask=ok, other=0.0)
            ptrs, ok = _corner(row_base, start, y0 + 1, x0 + 1, h, w, valid, offs_d, d_mask, MD)
            acc += (a * fy * fx)[:, None] * tl.load(value_ptr + ptrs, mask=ok, other=0.0)
    out_offs = ((n * Lq + offs_q) * M + m).to(tl.int64) * D
    tl.store(out_ptr + out_offs[:, None] + offs_d[None, :], acc, mask=q_mask[:, None] & d_mask[None, :])


@triton.jit
def _backward_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, grad_out_ptr,
                     grad_value_ptr, grad_loc_ptr, grad_attn_ptr,
                     S, Lq, M, L, P, D, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_q = tl.program_id(0)
    pid_nm = tl.program_id(1)
    n = pid_nm // M
    m = pid_nm % M
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    q_mask = offs_q < Lq
    d_mask = offs_d < D
    MD = M * D
    row_base = n.to(tl.int64) * S * MD + m * D
    out_offs = ((n * Lq + offs_q) * M + m).to(tl.int64) * D
    go = tl.load(grad_out_ptr + out_offs[:, None] + offs_d[None, :], mask=q_mask[:, None] & d_mask[None, :],
                 other=0.0)
    for lvl in range(L):
        h = tl.load(shapes_ptr + 2 * lvl)
        w = tl.load(shapes_ptr + 2 * lvl + 1)
        start = tl.load(starts_ptr + lvl)
        for p in range(P):
            idx = ((((n * Lq + offs_q) * M + m) * L + lvl) * P + p).to(tl.int64)
            a, valid, x0, y0, fx, fy = _setup(loc_ptr, attn_ptr, idx, q_mask, h, w)
            hx = 1.0 - fx
            hy = 1.0 - fy
            p00, k00 = _corner(row_base, start, y0, x0, h, w, valid, offs_d, d_mask, MD)
            p01, k01 = _corner(row_base, start, y0, x0 + 1, h, w, valid, offs_d, d_mask, MD)
            p10, k10 = _corner(row_base, start, y0 + 1, x0, h, w, valid, offs_d, d_mask, MD)
            p11, k11 = _corner(row_base, start, y0 + 1, x0 + 1, h, w, valid, offs_d, d_mask, MD)
            v00 = tl.load(value_ptr + p00, mask=k00, other=0.0)
            v01 = tl.load(value_ptr + p01, mask=k01, other=0.0)
            v10 = tl.load(value_ptr + p10, mask=k10, other=0.0)
            v11 = tl.load(value_ptr + p11, mask=k11, other=0.0)
            sample = hy[:, None] * (hx[:, None] * v00 + fx[:, None] * v01) \
                + fy[:, None] * (hx[:, None] * v10 + fx[:, None] * v11)
            dx = hy[:, None] * (v01 - v00) + fy[:, None] * (v11 - v10)
            dy = hx[:, None] * (v10 - v00) + fx[:, None] * (v11 - v01)
            tl.store(grad_attn_ptr + idx, tl.sum(go * sample, axis=1), mask=q_mask)
            tl.store(grad_loc_ptr + idx * 2, a * w * tl.sum(go * dx, axis=1), mask=q_mask)
            tl.store(grad_loc_ptr + idx * 2 + 1, a * h * tl.sum(go * dy, axis=1), mask=q_mask)
            ag = a[:, None] * go
            tl.atomic_add(grad_value_ptr + p00, (hy * hx)[:, None] * ag, mask=k00)
            tl.atomic_add(grad_value_ptr + p01, (hy * fx)[:, None] * ag, mask=k01)
            tl.atomic_add(grad_value_ptr + p10, (fy * hx)[:, None] * ag, mask=k10)
            tl.atomic_add(grad_value_ptr + p11, (fy * fx)[:, None] * ag, mask=k11)


def _levels(spatial_shapes, device) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = torch.tensor([[int(h), int(w)] for h, w in spatial_shapes], dtype=torch.int32, device=device)
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = (torch.cumsum(sizes, 0) - sizes).to(torch.int32)
    return shapes.contiguous(), starts.contiguous()


def _launch_args(value: torch.Tensor, loc: torch.Tensor) -> tuple[tuple[int, int], dict]:
    n, s, m, d = value.shape
    lq, n_levels, n_points = loc.shape[1], loc.shape[3], loc.shape[4]
    grid = (triton.cdiv(lq, BLOCK_Q), n * m)
    sizes = dict(S=s, Lq=lq, M=m, L=n_levels, P=n_points, D=d, BLOCK_Q=BLOCK_Q,
                 BLOCK_D=max(16, triton.next_power_of_2(d)))
    return grid, sizes


def msda_forward(value: torch.Tensor, spatial_shapes, loc: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Forward on contiguous tensors of one float dtype -> (N, Lq, M, D)."""
    n, _, m, d = value.shape
    out = torch.empty((n, loc.shape[1], m, d), dtype=value.dtype, device=value.device)
    if out.numel() == 0:
        return out
    shapes, starts = _levels(spatial_shapes, value.device)
    grid, sizes = _launch_args(value, loc)
    _forward_kernel[grid](value, shapes, starts, loc, attn, out, **sizes)
    return out


def msda_backward(value: torch.Tensor, spatial_shapes, loc: torch.Tensor, attn: torch.Tensor,
                  grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (value, loc, attn) for grad_out (N, Lq, M, D); contiguous tensors."""
    grad_value = torch.zeros_like(value)
    grad_loc = torch.zeros_like(loc)
    grad_attn = torch.zeros_like(attn)
    if attn.numel() and value.shape[-1]:
        shapes, starts = _levels(spatial_shapes, value.device)
        grid, sizes = _launch_args(value, loc)
        _backward_kernel[grid](value, shapes, starts, loc, attn, grad_out, grad_value, grad_loc, grad_attn, **sizes)
    return grad_value, grad_loc, grad_attn


MSDeformAttnTriton = fused_core_function("triton", msda_forward, msda_backward)
