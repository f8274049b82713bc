"""Hungarian matcher: optimal against brute force, cost terms by hand, empty targets."""

import itertools
import math

import pytest
import torch

from solq.models.matcher import HungarianMatcher


def _random_case(seed, b=2, q=5, c=3, sizes=(3, 2)):
    g = torch.Generator().manual_seed(seed)
    outputs = {"pred_logits": torch.randn(b, q, c, generator=g) * 2,
               "pred_boxes": torch.cat([0.2 + 0.6 * torch.rand(b, q, 2, generator=g),
                                        0.05 + 0.3 * torch.rand(b, q, 2, generator=g)], -1)}
    targets = []
    for n in sizes:
        targets.append({"labels": torch.randint(0, c, (n,), generator=g),
                        "boxes": torch.cat([0.2 + 0.6 * torch.rand(n, 2, generator=g),
                                            0.05 + 0.3 * torch.rand(n, 2, generator=g)], -1)})
    return outputs, targets


def _xyxy(b):
    cx, cy, w, h = b
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def _giou(a, b):
    ax0, ay0, ax1, ay1 = _xyxy(a)
    bx0, by0, bx1, by1 = _xyxy(b)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def _hand_cost(logit_row, box, label, tbox, wc=2.0, wb=5.0, wg=2.0):
    p = 1 / (1 + math.exp(-float(logit_row[label])))
    pos = 0.25 * (1 - p) ** 2 * -math.log(p + 1e-8)
    neg = 0.75 * p ** 2 * -math.log(1 - p + 1e-8)
    l1 = sum(abs(float(x) - float(y)) for x, y in zip(box, tbox))
    return wc * (pos - neg) + wb * l1 - wg * _giou([float(v) for v in box], [float(v) for v in tbox])


def test_cost_matrix_matches_hand_computation():
    outputs, targets = _random_case(0, b=1, sizes=(3,))
    m = HungarianMatcher()
    cost = m.cost_matrix(outputs["pred_logits"][0], outputs["pred_boxes"][0], targets[0]["labels"],
                         targets[0]["boxes"])
    for i in range(5):
        for j in range(3):
            expected = _hand_cost(outputs["pred_logits"][0, i], outputs["pred_boxes"][0, i],
                                  int(targets[0]["labels"][j]), targets[0]["boxes"][j])
            assert cost[i, j].item() == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_permutation_search(seed):
    outputs, targets = _random_case(seed, sizes=(3, 4))
    m = HungarianMatcher()
    indices = m(outputs, targets)
    for b, (src, tgt) in enumerate(indices):
        cost = m.cost_matrix(outputs["pred_logits"][b], outputs["pred_boxes"][b], targets[b]["labels"],
                             targets[b]["boxes"])
        q, t = cost.shape
        best = min(sum(cost[perm[j], j].item() for j in range(t)) for perm in itertools.permutations(range(q), t))
        assert len(src) == len(tgt) == t
        assert len(set(src.tolist())) == t and sorted(tgt.tolist()) == list(range(t))
        assert cost[src, tgt].sum().item() == pytest.approx(best, rel=1e-5, abs=1e-5)
        assert src.dtype == tgt.dtype == torch.int64


def test_more_targets_than_queries_and_empty_images():
    outputs, targets = _random_case(1, b=3, q=2, sizes=(3, 0, 1))
    indices = HungarianMatcher()(outputs, targets)
    assert [len(s) for s, _ in indices] == [2, 0, 1]
    assert indices[1][0].dtype == torch.int64
    outputs, targets = _random_case(2, b=2, sizes=(0, 0))
    assert all(len(s) == 0 and len(t) == 0 for s, t in HungarianMatcher()(outputs, targets))


def test_errors():
    outputs, targets = _random_case(3)
    with pytest.raises(ValueError, match="targets"):
        HungarianMatcher()(outputs, targets[:1])
    with pytest.raises(ValueError, match="costs are 0"):
        HungarianMatcher(0, 0, 0)
    outputs["pred_boxes"][0, 1, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        HungarianMatcher()(outputs, targets)
