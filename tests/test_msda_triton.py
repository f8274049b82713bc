"""The Triton core on CPU under the Triton interpreter (TRITON_INTERPRET=1), and on a GPU when there is one.

The interpreter must be switched on before triton is imported, so the CPU check runs in a fresh
subprocess; it is slow, so the shapes are small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import json, torch
from solq.models.deform_attn import ms_deform_attn_core_reference as reference
from solq.models.msda_triton import MSDeformAttnTriton

shapes = [(5, 7), (3, 4), (1, 1)]
s = sum(h * w for h, w in shapes)
report = {}
for dtype in (torch.float64, torch.float32):
    g = torch.Generator().manual_seed(0)
    value = torch.randn(2, s, 3, 5, generator=g, dtype=dtype)
    loc = -0.2 + 1.4 * torch.rand(2, 37, 3, 3, 2, 2, generator=g, dtype=dtype)  # inside, on the padding, outside
    loc[0, 0, :, :, 0] = torch.tensor([0.0, 1.0], dtype=dtype)  # exactly on the borders
    loc[0, 1] = float("nan")
    attn = torch.rand(2, 37, 3, 3, 2, generator=g, dtype=dtype)
    ref_in = [t.clone().requires_grad_() for t in (value, loc, attn)]
    tri_in = [t.clone().requires_grad_() for t in (value, loc, attn)]
    ref = reference(ref_in[0], shapes, ref_in[1], ref_in[2])
    ref = torch.where(torch.isnan(ref), torch.zeros_like(ref), ref)  # NaN locations sample nothing
    out = MSDeformAttnTriton.apply(tri_in[0], shapes, tri_in[1], tri_in[2]).flatten(2)
    grad = torch.randn(ref.shape, generator=g, dtype=dtype)
    (ref * grad).sum().backward()
    (out * grad).sum().backward()
    errs = {"out": (out - ref).abs().max().item()}
    for name, a, b in zip(("value", "loc", "attn"), tri_in, ref_in):
        ga, gb = a.grad, torch.nan_to_num(b.grad)
        if name == "loc":  # the location gradient jumps at integer pixel coordinates (the borders)
            ga, gb = ga[:, 2:], gb[:, 2:]
        errs[name] = ((ga - gb).abs().max() / gb.abs().max().clamp(min=1)).item()
    report[str(dtype)] = errs
empty = MSDeformAttnTriton.apply(torch.randn(1, s, 3, 5), shapes, torch.rand(1, 0, 3, 3, 2, 2), torch.rand(1, 0, 3, 3, 2))
report["empty_shape"] = list(empty.shape)
print(json.dumps(report))
"""


def test_triton_kernel_matches_reference_under_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=900,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["empty_shape"] == [1, 0, 3, 5]
    for dtype, tol in [("torch.float64", 1e-10), ("torch.float32", 2e-5)]:
        for name, err in report[dtype].items():
            assert err < tol, (dtype, name, err)


def test_triton_never_chosen_without_cuda(monkeypatch):
    from solq.models import msda_backend

    monkeypatch.delenv(msda_backend.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    msda_backend.available.cache_clear()
    try:
        assert not msda_backend.available("triton")
        assert msda_backend.resolve("auto", torch.device("cpu")) != "triton"
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            msda_backend.resolve("triton", torch.device("cpu"))
    finally:
        msda_backend.available.cache_clear()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_on_gpu_matches_reference(dtype):
    from solq.models.deform_attn import ms_deform_attn_core, ms_deform_attn_core_reference

    shapes = [(25, 38), (13, 19), (7, 10), (4, 5)]
    s = sum(h * w for h, w in shapes)
    g = torch.Generator(device="cuda").manual_seed(0)
    value = torch.randn(2, s, 8, 32, device="cuda", dtype=dtype, generator=g)
    loc = -0.1 + 1.2 * torch.rand(2, 300, 8, 4, 4, 2, device="cuda", dtype=dtype, generator=g)
    attn = torch.rand(2, 300, 8, 4, 4, device="cuda", dtype=dtype, generator=g).softmax(-1)
    ins_t = [t.clone().requires_grad_() for t in (value, loc, attn)]
    ins_r = [t.clone().requires_grad_() for t in (value, loc, attn)]
    out = ms_deform_attn_core(ins_t[0], shapes, ins_t[1], ins_t[2], backend="triton")
    ref = ms_deform_attn_core_reference(ins_r[0], shapes, ins_r[1], ins_r[2])
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    grad = torch.randn_like(ref)
    (out * grad).sum().backward()
    (ref * grad).sum().backward()
    for a, b in zip(ins_t, ins_r):
        scale = float(b.grad.abs().max().clamp(min=1))
        torch.testing.assert_close(a.grad, b.grad, rtol=tol * 10, atol=tol * 10 * scale)
