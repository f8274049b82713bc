"""Official SOLQ checkpoint layout -> our model: a round trip through the official key names."""

import re

import pytest
import torch

from solq.models import SOLQ, convert_official_state_dict, load_official_checkpoint

TINY = dict(num_classes=3, n_vector=16, d_model=64, backbone="resnet18", num_queries=10, enc_layers=1,
            dec_layers=2, dim_feedforward=64, n_points=2, vector_hidden_dim=32)
CATEGORY_IDS = [3, 7, 11]


class _Custom:
    """A pickled object that weights_only loading must refuse."""


def to_official(model: SOLQ, n_official_classes=91, seed=0):
    """Write our weights with the official SOLQ key layout (independent of convert.py)."""
    g = torch.Generator().manual_seed(seed)
    n_dec = len(model.transformer.decoder.layers)
    num_pred = n_dec + 1 if model.two_stage else n_dec
    official = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone.body."):
            official["backbone.0.body." + key[len("backbone.body."):]] = value.clone()
        elif key.startswith("vector_embed."):
            for i in range(num_pred):
                official[f"vector_embed.{i}." + key[len("vector_embed."):]] = value.clone()
        elif m := re.match(r"class_embed\.(\d+)\.(weight|bias)$", key):
            full = torch.randn((n_official_classes,) + tuple(value.shape[1:]), generator=g)
            rows = [0] + CATEGORY_IDS[1:] if int(m.group(1)) == n_dec else CATEGORY_IDS
            full[rows] = value
            official[key] = full
        else:
            official[key] = value.clone()
        if model.with_box_refine and key.startswith("bbox_embed."):
            official["transformer.decoder." + key] = value.clone()
        if model.two_stage and key.startswith("class_embed."):
            official["transformer.decoder." + key] = official[key].clone()
    return {"model": {"module." + k: v for k, v in official.items()}, "epoch": 49}


@pytest.mark.parametrize("opts,via_file", [({}, True), ({"two_stage": True}, False), ({"with_box_refine": False}, False)])
def test_round_trip_gives_identical_outputs(opts, via_file, tmp_path):
    torch.manual_seed(0)
    src = SOLQ(**{**TINY, **opts}).eval()
    with torch.no_grad():  # make every parameter non-trivial (zero-initialised heads included)
        for p in src.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = to_official(src)
    official_keys = {k[len("module."):] for k in ckpt["model"]}
    for key in ["transformer.encoder.layers.0.self_attn.sampling_offsets.weight", "input_proj.0.0.weight",
                "backbone.0.body.layer1.0.conv1.weight", "transformer.decoder.layers.1.self_attn.in_proj_weight",
                "class_embed.0.weight", "bbox_embed.0.layers.0.weight", "transformer.level_embed",
                "vector_embed.1.layers.2.bias"]:
        assert key in official_keys, key
    assert ("query_embed.weight" in official_keys) != bool(opts.get("two_stage"))
    assert ("transformer.reference_points.weight" in official_keys) != bool(opts.get("two_stage"))
    if via_file:
        torch.save(ckpt, tmp_path / "solq_official.pth")
        ckpt = tmp_path / "solq_official.pth"
    torch.manual_seed(1)
    dst = load_official_checkpoint(SOLQ(**{**TINY, **opts}).eval(), ckpt, category_ids=CATEGORY_IDS)
    images = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        a, b = src(images), dst(images)
    for k in ("pred_logits", "pred_boxes", "pred_vectors"):
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    if opts.get("two_stage"):
        torch.testing.assert_close(a["enc_outputs"]["pred_logits"], b["enc_outputs"]["pred_logits"], rtol=0, atol=0)


def test_all_rows_kept_without_category_ids_and_clear_mismatch_errors():
    src = SOLQ(**TINY)
    ckpt = to_official(src)
    converted = convert_official_state_dict(ckpt)
    assert converted["class_embed.0.weight"].shape == (91, 64)
    assert not any(k.startswith(("transformer.decoder.bbox_embed", "backbone.0.", "module.")) for k in converted)
    with pytest.raises(ValueError, match="shape mismatches.*class_embed"):
        load_official_checkpoint(SOLQ(**TINY), ckpt)  # 91 rows into a 3-class model
    with pytest.raises(ValueError, match="shape mismatches.*vector_embed"):
        load_official_checkpoint(SOLQ(**{**TINY, "n_vector": 8}), ckpt, category_ids=CATEGORY_IDS)
    with pytest.raises(ValueError, match="missing keys.*decoder.layers.2"):
        load_official_checkpoint(SOLQ(**{**TINY, "dec_layers": 3}), ckpt, category_ids=CATEGORY_IDS)
    with pytest.raises(ValueError, match="out of range"):
        convert_official_state_dict(ckpt, category_ids=[1, 2, 95])
    with pytest.raises(ValueError, match="not found"):
        load_official_checkpoint(SOLQ(**TINY), "/nonexistent/ckpt.pth")


def test_checkpoint_file_with_args_namespace_loads_safely(tmp_path):
    import argparse

    src = SOLQ(**TINY).eval()
    ckpt = to_official(src)
    ckpt["args"] = argparse.Namespace(lr=2e-4, backbone="resnet50")
    torch.save(ckpt, tmp_path / "with_args.pth")
    converted = convert_official_state_dict(tmp_path / "with_args.pth", CATEGORY_IDS)
    torch.testing.assert_close(converted["query_embed.weight"], src.query_embed.weight.detach())
    ckpt["extra"] = _Custom()  # arbitrary pickled objects are refused
    torch.save(ckpt, tmp_path / "custom.pth")
    with pytest.raises(ValueError, match="weights_only"):
        convert_official_state_dict(tmp_path / "custom.pth")
