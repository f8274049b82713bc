"""Initialisation of SOLQ's heads: the official recipe (megvii-research/SOLQ) and the ``zero`` option."""

import math

import pytest
import torch

from solq.config import load_config
from solq.engine import build_model as build_from_config
from solq.models import SOLQ

TINY = dict(num_classes=3, n_vector=16, d_model=64, backbone="resnet18", num_queries=10, enc_layers=1,
            dec_layers=2, dim_feedforward=64, nheads=8, n_points=2, vector_hidden_dim=32)


def _expected_vector_bias(n: int, init: str) -> torch.Tensor:
    bias = torch.zeros(n)
    if init == "official":
        bias[2:] = -2.0
    return bias


@pytest.mark.parametrize("init", ["official", "zero"])
def test_vector_head_last_layer(init):
    model = SOLQ(**TINY, vector_bias_init=init)
    last = model.vector_embed.layers[-1]
    assert last.weight.abs().sum() == 0
    torch.testing.assert_close(last.bias.detach(), _expected_vector_bias(16, init))
    # the hidden layers keep PyTorch's default (non-zero) init, so gradients reach them
    assert model.vector_embed.layers[0].weight.abs().sum() > 0
    # at init every query predicts the bias: (0, 0, -2, ..., -2) officially
    out = model(torch.randn(1, 3, 64, 64))
    torch.testing.assert_close(out["pred_vectors"][0, 0].detach(), _expected_vector_bias(16, init))


def test_official_is_the_default_and_bad_values_are_named():
    bias = SOLQ(**TINY).vector_embed.layers[-1].bias.detach()
    torch.testing.assert_close(bias, _expected_vector_bias(16, "official"))
    with pytest.raises(ValueError, match="vector_bias_init must be one of"):
        SOLQ(**TINY, vector_bias_init="ones")


@pytest.mark.parametrize("opts", [{}, {"with_box_refine": False}, {"two_stage": True}])
def test_box_and_class_heads_are_official(opts):
    model = SOLQ(**TINY, **opts)
    prior = -math.log((1 - 0.01) / 0.01)
    for head in model.class_embed:
        torch.testing.assert_close(head.bias.detach(), torch.full((3,), prior))
    for i, head in enumerate(model.bbox_embed):
        last = head.layers[-1]
        assert last.weight.abs().sum() == 0
        # the first (or the shared) box head starts at w, h = sigmoid(-2); the refining heads add 0 to
        # their reference; two-stage takes w, h from the proposals
        first = i == 0 or not opts.get("with_box_refine", True)
        wh = -2.0 if first and not opts.get("two_stage") else 0.0
        torch.testing.assert_close(last.bias.detach(), torch.tensor([0.0, 0.0, wh, wh]))


def test_config_key_reaches_the_model():
    cfg = load_config("configs/shapes_tiny.yaml", ["model.vector_bias_init=zero", "model.d_model=64",
                                                    "model.enc_layers=1", "model.dec_layers=2"])
    model = build_from_config(cfg, num_classes=3, n_vector=8)
    torch.testing.assert_close(model.vector_embed.layers[-1].bias.detach(), torch.zeros(8))
    cfg = load_config("configs/shapes_tiny.yaml", ["model.d_model=64", "model.enc_layers=1", "model.dec_layers=2"])
    assert cfg.model.vector_bias_init == "official"
    model = build_from_config(cfg, num_classes=3, n_vector=8)
    torch.testing.assert_close(model.vector_embed.layers[-1].bias.detach(), _expected_vector_bias(8, "official"))
