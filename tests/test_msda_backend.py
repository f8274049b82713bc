"""Choosing the deformable-attention backend; bad input; the whole SOLQ model on each backend."""

from __future__ import annotations

import pytest
import torch

from solq.config import ConfigError, load_config
from solq.models import msda_backend
from solq.models.deform_attn import ms_deform_attn_core, ms_deform_attn_core_with_backend, set_attn_backend
from solq.models.solq import SOLQ

SHAPES = [(3, 4), (2, 2)]


def _inputs(n=1, lq=2, m=2, d=3, p=2):
    s = sum(h * w for h, w in SHAPES)
    return torch.randn(n, s, m, d), torch.rand(n, lq, m, len(SHAPES), p, 2), torch.rand(n, lq, m, len(SHAPES), p)


def test_auto_on_cpu_is_numba_and_env_var_overrides(monkeypatch):
    monkeypatch.delenv(msda_backend.ENV_VAR, raising=False)
    value, loc, attn = _inputs()
    assert ms_deform_attn_core_with_backend(value, SHAPES, loc, attn)[1] == "numba"
    assert ms_deform_attn_core_with_backend(value, SHAPES, loc, attn, "reference")[1] == "reference"
    monkeypatch.setenv(msda_backend.ENV_VAR, "reference")
    assert ms_deform_attn_core_with_backend(value, SHAPES, loc, attn, "numba")[1] == "reference"
    monkeypatch.setenv(msda_backend.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="SOLQ_MSDA_BACKEND must be one of"):
        ms_deform_attn_core(value, SHAPES, loc, attn)


def test_unavailable_or_unknown_backend_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(msda_backend.ENV_VAR, raising=False)
    value, loc, attn = _inputs()
    with pytest.raises(ValueError, match="'triton' needs CUDA tensors"):
        ms_deform_attn_core(value, SHAPES, loc, attn, backend="triton")
    with pytest.raises(ValueError, match="backend must be one of"):
        ms_deform_attn_core(value, SHAPES, loc, attn, backend="cuda")
    with pytest.raises(ValueError, match="numba' runs on the CPU"):
        msda_backend.resolve("numba", torch.device("meta"))


@pytest.mark.parametrize("case,match", [
    ("value_dims", "value must have 4 dimensions"),
    ("int_value", "floating-point"),
    ("sum", "sum to"),
    ("n_levels", "spatial_shapes must be 2 positive"),
    ("heads", "sampling_locations must be"),
    ("weights", "attention_weights must be"),
])
def test_bad_input(case, match):
    value, loc, attn = _inputs()
    shapes = SHAPES
    if case == "value_dims":
        value = value[0]
    elif case == "int_value":
        value = value.long()
    elif case == "sum":
        shapes = [(3, 4), (2, 3)]
    elif case == "n_levels":
        shapes = SHAPES[:1]
    elif case == "heads":
        loc = loc[:, :, :1]
    elif case == "weights":
        attn = attn[..., :1]
    for backend in ("reference", "numba"):
        with pytest.raises(ValueError, match=match):
            ms_deform_attn_core(value, shapes, loc, attn, backend=backend)


def test_config_key_reaches_the_model_and_is_checked():
    cfg = load_config("configs/shapes_tiny.yaml", ["model.attn_backend=reference"])
    assert cfg.model.attn_backend == "reference"
    with pytest.raises(ConfigError, match="attn_backend"):
        load_config("configs/shapes_tiny.yaml", ["model.attn_backend=cuda"])


def _tiny_model() -> SOLQ:
    torch.manual_seed(0)
    model = SOLQ(num_classes=3, n_vector=16, d_model=64, backbone="resnet18", num_feature_levels=3, num_queries=10,
                 enc_layers=1, dec_layers=2, dim_feedforward=128, vector_hidden_dim=64, backbone_norm="group_norm",
                 dropout=0.0)
    with torch.no_grad():  # zero-initialised heads and offsets would hide differences: randomise them
        for p in model.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.05)
    return model


def _forward_backward(model, images, mask):
    model.zero_grad()
    out = model(images, mask)
    loss = sum(out[k].square().sum() for k in ("pred_logits", "pred_boxes", "pred_vectors"))
    loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backend", ["numba", pytest.param("triton", marks=pytest.mark.gpu)])
def test_whole_model_matches_reference(backend, monkeypatch):
    monkeypatch.delenv(msda_backend.ENV_VAR, raising=False)
    device = "cuda" if backend == "triton" else "cpu"
    model = _tiny_model().to(device)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 96, 128, generator=g).to(device)
    mask = torch.zeros(2, 96, 128, dtype=torch.bool)
    mask[1, :, 100:] = True  # the second image is padded
    mask = mask.to(device)
    results = {}
    for name in ("reference", backend):
        set_attn_backend(model, name)
        results[name] = _forward_backward(model, images, mask)
        assert model.attn_backends_used == [name]
    (ref_out, ref_grads), (out, grads) = results["reference"], results[backend]
    for key in ("pred_logits", "pred_boxes", "pred_vectors"):
        torch.testing.assert_close(out[key], ref_out[key], rtol=0, atol=1e-4)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-3, atol=1e-4 * max(1.0, float(grad.abs().max())))
