"""Set criterion: every loss term against a hand computation, options and failure modes."""

import math

import pytest
import torch

from solq.models.criterion import SetCriterion, default_weight_dict


class FixedMatcher:
    """Returns given indices (so the hand computations do not depend on the Hungarian step)."""

    def __init__(self, indices):
        self.indices = indices
        self.calls = 0

    def __call__(self, outputs, targets):
        self.calls += 1
        return [(torch.tensor(s, dtype=torch.int64), torch.tensor(t, dtype=torch.int64)) for s, t in self.indices]


def _sig(x):
    return 1 / (1 + math.exp(-x))


def _focal(x, t, alpha=0.25, gamma=2.0):
    p = _sig(x)
    ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t)
    return a_t * ce * (1 - p_t) ** gamma


def _giou(a, b):
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def _case():
    logits = torch.tensor([[[1.0, -2.0], [0.5, 0.3], [-1.0, 2.0]],
                           [[0.0, -0.5], [2.0, 1.0], [-3.0, 0.1]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.4, 0.2, 0.1], [0.6, 0.6, 0.3, 0.3]],
                          [[0.4, 0.5, 0.2, 0.3], [0.5, 0.5, 0.4, 0.4], [0.2, 0.2, 0.1, 0.1]]])
    vectors = torch.tensor([[[0.1, 0.2, 0.3], [1.0, 0.0, -1.0], [0.5, 0.5, 0.5]],
                            [[0.0, 0.9, 0.2], [0.3, 0.3, 0.3], [0.2, 1.5, -0.4]]])
    targets = [{"labels": torch.tensor([1, 0]), "boxes": torch.tensor([[0.55, 0.6, 0.3, 0.2], [0.3, 0.3, 0.2, 0.2]]),
                "mask_vectors": torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])},
               {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.45, 0.3, 0.4]]),
                "mask_vectors": torch.tensor([[0.5, 0.0, 1.0]])}]
    indices = [([2, 0], [0, 1]), ([1], [0])]
    return {"pred_logits": logits, "pred_boxes": boxes, "pred_vectors": vectors}, targets, indices


def test_each_term_equals_hand_computation():
    out, targets, indices = _case()
    losses = SetCriterion(2, FixedMatcher(indices))(out, targets)
    num_boxes = 3.0
    onehot = torch.zeros(2, 3, 2)
    onehot[0, 2, 1] = onehot[0, 0, 0] = onehot[1, 1, 0] = 1
    ce = sum(_focal(out["pred_logits"][b, q, c].item(), onehot[b, q, c].item())
             for b in range(2) for q in range(3) for c in range(2)) / num_boxes
    assert losses["loss_ce"].item() == pytest.approx(ce, rel=1e-5)
    pairs = [((0, 2), (0, 0)), ((0, 0), (0, 1)), ((1, 1), (1, 0))]
    l1 = giou = vec = 0.0
    for (b, q), (tb, t) in pairs:
        p = out["pred_boxes"][b, q].tolist()
        g = targets[tb]["boxes"][t].tolist()
        l1 += sum(abs(x - y) for x, y in zip(p, g))
        giou += 1 - _giou(p, g)
        vec += sum(abs(x - y) for x, y in zip(out["pred_vectors"][b, q].tolist(), targets[tb]["mask_vectors"][t].tolist()))
    assert losses["loss_bbox"].item() == pytest.approx(l1 / num_boxes, rel=1e-5)
    assert losses["loss_giou"].item() == pytest.approx(giou / num_boxes, rel=1e-5)
    assert losses["loss_vector"].item() == pytest.approx(vec / (3 * 3), rel=1e-5)  # mean over matched x n_k


def test_l2_dice_terms():
    out, targets, indices = _case()
    losses = SetCriterion(2, FixedMatcher(indices), vector_loss="l2_dice")(out, targets)
    pairs = [((0, 2), (0, 0)), ((0, 0), (0, 1)), ((1, 1), (1, 0))]
    mse = dice = 0.0
    for (b, q), (tb, t) in pairs:
        p = out["pred_vectors"][b, q].tolist()
        g = targets[tb]["mask_vectors"][t].tolist()
        mse += sum((x - y) ** 2 for x, y in zip(p, g))
        pc = [min(max(x, 0.0), 1.0) for x in p]
        dice += 1 - (2 * sum(x * y for x, y in zip(pc, g)) + 1) / (sum(pc) + sum(g) + 1)
    assert losses["loss_vector"].item() == pytest.approx(mse / 9, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(dice / 3, rel=1e-5)


def test_aux_layers_suffixes_vector_layers_and_total():
    out, targets, indices = _case()
    aux = [{k: v + 0.01 * (i + 1) for k, v in out.items()} for i in range(3)]
    full = dict(out, aux_outputs=aux)
    matcher = FixedMatcher(indices)
    crit = SetCriterion(2, matcher, default_weight_dict(dec_layers=4))
    losses = crit(full, targets)
    assert matcher.calls == 4
    for i in range(3):
        for k in ("loss_ce", "loss_bbox", "loss_giou", "loss_vector"):
            assert f"{k}_{i}" in losses
    assert losses["loss_vector_0"].item() != losses["loss_vector"].item()
    total = sum(crit.weight_dict[k] * v for k, v in losses.items())
    assert crit.total_loss(losses).item() == pytest.approx(total.item(), rel=1e-6)
    assert crit.weight_dict["loss_vector_2"] == 3.0 and crit.weight_dict["loss_ce"] == 2.0
    # vector loss on the last 2 layers only
    losses = SetCriterion(2, FixedMatcher(indices), vector_layers=2)(full, targets)
    assert "loss_vector" in losses and "loss_vector_2" in losses
    assert "loss_vector_1" not in losses and "loss_vector_0" not in losses and "loss_bbox_0" in losses


def test_two_stage_encoder_terms_use_binary_labels_and_no_vectors():
    out, targets, indices = _case()
    seen = []

    class Spy(FixedMatcher):
        def __call__(self, outputs, tg):
            seen.append([t["labels"].tolist() for t in tg])
            return super().__call__(outputs, tg)

    full = dict(out, enc_outputs={"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]})
    losses = SetCriterion(2, Spy(indices))(full, targets)
    assert {"loss_ce_enc", "loss_bbox_enc", "loss_giou_enc"} <= set(losses) and "loss_vector_enc" not in losses
    assert seen[-1] == [[0, 0], [0]] and targets[0]["labels"].tolist() == [1, 0]


def test_no_targets_and_num_boxes_clamped():
    out, _, _ = _case()
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4),
              "mask_vectors": torch.zeros(0, 3)} for _ in range(2)]
    losses = SetCriterion(2, FixedMatcher([([], []), ([], [])]))(out, empty)
    ce = sum(_focal(x, 0.0) for x in out["pred_logits"].flatten().tolist())  # / clamp(0, min=1)
    assert losses["loss_ce"].item() == pytest.approx(ce, rel=1e-5)
    assert losses["loss_bbox"].item() == 0 and losses["loss_vector"].item() == 0


def test_non_finite_loss_names_term_and_layer():
    out, targets, indices = _case()
    aux = [dict(out), dict(out)]
    aux[1] = dict(out, pred_vectors=out["pred_vectors"].clone())
    aux[1]["pred_vectors"][0, 2, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="loss_vector.*decoder layer 1"):
        SetCriterion(2, FixedMatcher(indices))(dict(out, aux_outputs=aux), targets)


def test_bad_configuration_and_targets():
    with pytest.raises(ValueError, match="vector_loss"):
        SetCriterion(2, vector_loss="l3")
    with pytest.raises(ValueError, match="unknown losses"):
        SetCriterion(2, losses=("labels", "masks"))
    out, targets, indices = _case()
    targets[0]["mask_vectors"] = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="n_vector"):
        SetCriterion(2, FixedMatcher(indices))(out, targets)
    out, targets, indices = _case()
    del out["pred_vectors"]
    with pytest.raises(ValueError, match="with_vector=False"):
        SetCriterion(2, FixedMatcher(indices))(out, targets)
    assert "loss_vector" not in SetCriterion(2, FixedMatcher(indices), losses=("labels", "boxes"))(out, targets)
