"""SOLQ model: output shapes, gradients, options, backbone weights, input validation."""

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from solq.models import SOLQ, HungarianMatcher, SetCriterion, build_model, default_weight_dict
from solq.models.backbone import Backbone

TINY = dict(num_classes=3, n_vector=16, d_model=64, backbone="resnet18", num_queries=10, enc_layers=1,
            dec_layers=2, dim_feedforward=64, nheads=8, n_points=2, vector_hidden_dim=32)


def _inputs(b=2, h=128, w=96):
    torch.manual_seed(0)
    images = torch.randn(b, 3, h, w)
    mask = torch.zeros(b, h, w, dtype=torch.bool)
    if b > 1:
        mask[1, :, w * 2 // 3:] = True
        mask[1, h * 3 // 4:, :] = True
    return images, mask


def _targets(b=2, n_k=16):
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(b):
        n = 2 + i
        cxcy = 0.3 + 0.4 * torch.rand(n, 2, generator=g)
        wh = 0.1 + 0.3 * torch.rand(n, 2, generator=g)
        out.append({"labels": torch.randint(0, 3, (n,), generator=g), "boxes": torch.cat([cxcy, wh], 1),
                    "mask_vectors": torch.randn(n, n_k, generator=g)})
    return out


def _check_layer(out, b, q, c, n_k, vectors=True):
    assert out["pred_logits"].shape == (b, q, c)
    assert out["pred_boxes"].shape == (b, q, 4)
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    if vectors:
        assert out["pred_vectors"].shape == (b, q, n_k)
    else:
        assert "pred_vectors" not in out


@pytest.mark.parametrize("opts", [{}, {"num_feature_levels": 1}, {"with_box_refine": False},
                                  {"two_stage": True}, {"with_vector": False}])
def test_output_shapes(opts):
    model = SOLQ(**{**TINY, **opts}).eval()
    images, mask = _inputs()
    with torch.no_grad():
        out = model(images, mask)
    vectors = opts.get("with_vector", True)
    _check_layer(out, 2, 10, 3, 16, vectors)
    assert len(out["aux_outputs"]) == TINY["dec_layers"] - 1
    for aux in out["aux_outputs"]:
        _check_layer(aux, 2, 10, 3, 16, vectors)
        assert "aux_outputs" not in aux
    if opts.get("two_stage"):
        enc = out["enc_outputs"]
        # one proposal per encoder position: 4 levels of a 128 x 96 image (strides 8, 16, 32, 64)
        assert enc["pred_logits"].shape == (2, 16 * 12 + 8 * 6 + 4 * 3 + 2 * 2, 3)
        assert enc["pred_boxes"].shape == (2, 16 * 12 + 8 * 6 + 4 * 3 + 2 * 2, 4)
    else:
        assert "enc_outputs" not in out


def test_forward_without_mask_equals_all_valid_mask_and_is_deterministic_in_eval():
    model = SOLQ(**TINY).eval()
    images, _ = _inputs(b=1)
    with torch.no_grad():
        a = model(images)
        b = model(images, torch.zeros(1, 128, 96, dtype=torch.bool))
    torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"])
    torch.testing.assert_close(a["pred_vectors"], b["pred_vectors"])


def test_init_facts():
    model = SOLQ(**TINY)
    prior = -torch.log(torch.tensor((1 - 0.01) / 0.01))
    for head in model.class_embed:
        torch.testing.assert_close(head.bias, prior.expand(3))
    last = model.bbox_embed[0].layers[-1]
    assert last.weight.abs().sum() == 0
    torch.testing.assert_close(last.bias.detach(), torch.tensor([0.0, 0.0, -2.0, -2.0]))
    # per-layer class/box heads with box refinement, one shared vector head
    assert model.class_embed[0] is not model.class_embed[1]
    assert len(model.vector_embed.layers) == 3 and model.vector_embed.layers[0].out_features == 32
    shared = SOLQ(**{**TINY, "with_box_refine": False})
    assert shared.class_embed[0] is shared.class_embed[1] and shared.bbox_embed[0] is shared.bbox_embed[1]
    # stem and layer1 frozen, layer2-4 trainable
    for name, p in model.backbone.named_parameters():
        assert p.requires_grad == name.startswith(("body.layer2", "body.layer3", "body.layer4")), name


@pytest.mark.parametrize("opts", [{}, {"two_stage": True}])
def test_gradients_reach_every_trainable_parameter(opts):
    torch.manual_seed(0)
    model = SOLQ(**{**TINY, **opts}).train()
    images, mask = _inputs()
    out = model(images, mask)
    crit = SetCriterion(3, HungarianMatcher(), default_weight_dict(2, two_stage=opts.get("two_stage", False)))
    losses = crit(out, _targets())
    crit.total_loss(losses).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, bad
    # Documented exceptions with an exactly-zero (but present) first gradient: the hidden layers of
    # the box / vector MLPs (their last layer is zero-initialised), and the level embedding (it only
    # enters the encoder queries, which act through the zero-initialised sampling-offset and
    # attention-weight projections). Everything else moves.
    zero = [n for n, p in model.named_parameters() if p.requires_grad and p.grad.abs().sum() == 0]
    allowed = ("vector_embed.layers.0", "vector_embed.layers.1", "bbox_embed.", "transformer.level_embed")
    assert all(n.startswith(allowed) and ".layers.2." not in n for n in zero), zero
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_build_model_and_config_errors():
    model = build_model(TINY)
    assert isinstance(model, SOLQ) and model.num_queries == 10
    with pytest.raises(ValueError, match="unknown model config keys"):
        build_model({**TINY, "hidden_dim": 3})
    with pytest.raises(ValueError, match="num_classes"):
        build_model({k: v for k, v in TINY.items() if k != "num_classes"})
    with pytest.raises(ValueError, match="multiple of 32"):
        SOLQ(**{**TINY, "d_model": 48})
    with pytest.raises(ValueError, match="two_stage"):
        SOLQ(**{**TINY, "two_stage": True, "with_box_refine": False})
    with pytest.raises(ValueError, match="unknown backbone"):
        SOLQ(**{**TINY, "backbone": "vgg16"})
    with pytest.raises(ValueError, match="unknown backbone norm 'bn'.*group_norm"):
        SOLQ(**{**TINY, "backbone_norm": "bn"})


def test_group_norm_backbone_trains_every_layer():
    """The from-scratch recipe: GroupNorm after every conv, stem and layer1 trained too."""
    torch.manual_seed(0)
    model = SOLQ(**{**TINY, "backbone_norm": "group_norm"}).train()
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 20  # resnet18: stem + 2 per basic block x 8 + 3 downsample
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.modules())
    assert all(p.requires_grad for p in model.backbone.parameters())
    images, mask = _inputs()
    out = model(images, mask)
    (out["pred_logits"].square().sum() + out["pred_boxes"].square().sum()).backward()
    assert model.backbone.body.conv1.weight.grad.abs().sum() > 0
    # GroupNorm keeps activations normalised whatever the batch: C5 has ~unit scale at init
    c5 = model.backbone(images, mask)[-1][0]
    assert 0.1 < c5.std().item() < 10


def test_bad_inputs_raise_clear_errors():
    model = SOLQ(**TINY).eval()
    images, mask = _inputs()
    with pytest.raises(ValueError, match="float"):
        model((images * 255).to(torch.uint8), mask)
    with pytest.raises(ValueError, match=r"images\[None\]"):
        model(images[0], mask)
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.randn(2, 4, 128, 96), mask)
    with pytest.raises(ValueError, match="pixel_mask"):
        model(images, mask[:, :64])


def test_backbone_weights_from_file(tmp_path):
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    bb = Backbone("resnet18", weights=path)
    torch.testing.assert_close(bb.body.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    torch.testing.assert_close(bb.body.bn1.running_var, ref.bn1.running_var)
    # wrong depth: missing / unexpected keys listed
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ValueError, match="unexpected keys.*layer1.2"):
        Backbone("resnet18", weights=tmp_path / "r34.pth")
    sd = ref.state_dict()
    sd["fc.weight"] = torch.zeros(10, 512)
    with pytest.raises(ValueError, match="shape mismatches.*fc.weight"):
        Backbone("resnet18", weights=sd)
    with pytest.raises(ValueError, match="not found"):
        Backbone("resnet18", weights=tmp_path / "nope.pth")


def test_two_stage_with_more_queries_than_valid_proposals_stays_finite():
    model = SOLQ(**{**TINY, "two_stage": True, "num_queries": 80}).eval()
    # 8x8 + 4x4 + 2x2 + 1x1 = 85 positions, ~48 valid in image 1: invalid (+inf) proposals get selected
    images, mask = _inputs(b=2, h=64, w=64)
    with torch.no_grad():
        out = model(images, mask)
    assert torch.isfinite(out["pred_boxes"]).all() and torch.isfinite(out["pred_logits"]).all()
