"""The fused numba core against the grid_sample reference: values, gradients, edge cases, forked workers."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import torch

from solq.models.deform_attn import ms_deform_attn_core, ms_deform_attn_core_reference
from solq.models.msda_numba import MSDeformAttnNumba

RAGGED = [(5, 7), (3, 4), (1, 1), (2, 9)]


def _inputs(shapes, n=2, lq=6, m=3, d=5, p=3, dtype=torch.float64, lo=-0.2, hi=1.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g, dtype=dtype)
    loc = lo + (hi - lo) * torch.rand(n, lq, m, len(shapes), p, 2, generator=g, dtype=dtype)
    attn = torch.rand(n, lq, m, len(shapes), p, generator=g, dtype=dtype)
    return value, loc, attn


def _fused(shapes):
    return lambda v, loc, a: MSDeformAttnNumba.apply(v, shapes, loc, a).flatten(2)


def _compare(shapes, value, loc, attn, atol, loc_grad=True):
    """Forward and the gradients of the numba core equal the reference's (the location gradient
    only if ``loc_grad``: it jumps at integer pixel coordinates, where rounding picks a side)."""
    args = [t.clone().requires_grad_() for t in (value, loc, attn)]
    ref = ms_deform_attn_core_reference(value.requires_grad_(), shapes, loc.requires_grad_(), attn.requires_grad_())
    out = ms_deform_attn_core(*args[:1], shapes, *args[1:], backend="numba")
    torch.testing.assert_close(out, ref, rtol=0, atol=atol)
    g = torch.randn_like(ref)
    mine = torch.autograd.grad(out, args, g)
    theirs = torch.autograd.grad(ref, (value, loc, attn), g)
    for i in (0, 1, 2) if loc_grad else (0, 2):
        # location gradients are scaled by the map size and summed over channels: compare relative to their size
        scale = float(theirs[i].abs().max()) if i == 1 else 1.0
        torch.testing.assert_close(mine[i], theirs[i], rtol=1e-4, atol=atol * 10 * max(scale, 1.0))
    assert torch.isfinite(mine[1]).all()


def test_gradcheck_float64_ragged_levels():
    value, loc, attn = _inputs(RAGGED, lq=4, m=2, d=3, p=2)
    args = tuple(t.requires_grad_() for t in (value, loc, attn))
    assert torch.autograd.gradcheck(_fused(RAGGED), args)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_matches_reference_ragged_and_outside(dtype, atol):
    # locations from -0.2 to 1.2: many samples partly or fully in the zero padding
    _compare(RAGGED, *_inputs(RAGGED, dtype=dtype), atol=atol)


def test_matches_reference_realistic_float32():
    """Encoder-like: 8 heads of 32 channels, 4 levels, every query sampling near its own pixel."""
    shapes = [(24, 36), (12, 18), (6, 9), (3, 5)]
    s = sum(h * w for h, w in shapes)
    value, _, attn = _inputs(shapes, n=2, lq=s, m=8, d=32, p=4, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    centre = torch.rand(2, s, 1, 1, 1, 2, generator=g)
    loc = centre + 0.05 * torch.randn(2, s, 8, 4, 4, 2, generator=g)
    _compare(shapes, value, loc, attn.softmax(-1), atol=2e-5)


def test_points_on_borders_and_pixel_edges():
    """Exactly on the map border (0, 1), on pixel centres and on pixel edges (integer pixel coords)."""
    shapes = [(4, 5), (3, 3)]
    h, w = 4, 5
    xs = torch.tensor([0.0, 1.0, 0.5 / w, 1 - 0.5 / w, 2 / w, -0.5 / w, 1 + 0.5 / w, 3 / w], dtype=torch.float64)
    ys = torch.tensor([0.0, 1.0, 0.5 / h, 1 - 0.5 / h, 1 / h, -0.5 / h, 1 + 0.5 / h, 2 / h], dtype=torch.float64)
    value, loc, attn = _inputs(shapes, n=1, lq=len(xs), m=2, d=4, p=2)
    loc[..., 0] = xs.view(-1, 1, 1, 1)
    loc[..., 1] = ys.view(-1, 1, 1, 1)
    _compare(shapes, value, loc, attn, atol=1e-12, loc_grad=False)


def test_fully_outside_gives_zero_and_nan_locations_are_ignored():
    shapes = [(3, 4)]
    value, loc, attn = _inputs(shapes, n=1, lq=3, m=1, d=2, p=1)
    loc[0, 0] = 5.0
    loc[0, 1] = -3.0
    loc[0, 2] = float("nan")
    out = ms_deform_attn_core(value, shapes, loc, attn, backend="numba")
    assert torch.equal(out, torch.zeros_like(out))


def test_zero_queries_and_zero_batch():
    shapes = [(3, 4), (2, 2)]
    for n, lq in [(2, 0), (0, 5)]:
        value, loc, attn = _inputs(shapes, n=n, lq=lq)
        value.requires_grad_()
        out = ms_deform_attn_core(value, shapes, loc, attn, backend="numba")
        assert out.shape == (n, lq, 3 * 5)
        out.sum().backward()
        assert value.grad is not None and not value.grad.any()


def test_non_contiguous_and_half_inputs_follow_documented_fallback():
    shapes = [(3, 4), (2, 2)]
    value, loc, attn = _inputs(shapes, dtype=torch.float32)
    value_t = value.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    assert not value_t.is_contiguous()
    ref = ms_deform_attn_core_reference(value, shapes, loc, attn)
    torch.testing.assert_close(ms_deform_attn_core(value_t, shapes, loc, attn, backend="numba"), ref)
    half = ms_deform_attn_core(value.bfloat16(), shapes, loc, attn, backend="numba")
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), ref, rtol=0.02, atol=0.05)


def _child_runs_kernel(queue):
    torch.set_num_threads(1)  # as a DataLoader worker does (torch's own OpenMP pool is not fork-safe either)
    value, loc, attn = _inputs(RAGGED, n=4, lq=400, m=8, d=8, p=4, dtype=torch.float32)
    value.requires_grad_()
    out = ms_deform_attn_core(value, RAGGED, loc, attn, backend="numba")
    out.sum().backward()
    queue.put(float(out.double().sum()))


def test_forked_child_after_parallel_launch_does_not_hang():
    """A DataLoader-style worker forked after the parent ran the parallel kernel uses the serial twin."""
    value, loc, attn = _inputs(RAGGED, n=4, lq=400, m=8, d=8, p=4, dtype=torch.float32)
    value.requires_grad_()
    out = ms_deform_attn_core(value, RAGGED, loc, attn, backend="numba")  # big enough to run in parallel
    out.sum().backward()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_runs_kernel, args=(queue,))
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
        pytest.fail("forked child hung in the numba kernel")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == pytest.approx(float(out.detach().double().sum()), rel=1e-5)
