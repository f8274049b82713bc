"""Hungarian matching between queries and ground-truth objects (Deformable DETR costs).

Cost = cost_class * focal class cost + cost_bbox * L1(cxcywh) + cost_giou * (-GIoU). Mask
vectors are not part of the cost (SOLQ).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou


def focal_class_cost(logits: torch.Tensor, tgt_ids: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0):
    """logits (Q, C), tgt_ids (T,) -> (Q, T): focal loss of predicting the class as positive minus
    focal loss of predicting it as negative."""
    prob = logits.sigmoid()
    neg = (1 - alpha) * prob.pow(gamma) * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob).pow(gamma) * -(prob + 1e-8).log()
    return pos[:, tgt_ids] - neg[:, tgt_ids]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets, per image (``scipy.optimize.linear_sum_assignment``).

    Args:
        cost_class, cost_bbox, cost_giou: weights of the focal class cost, the L1 box cost and
            the negative generalised IoU.
        focal_alpha, focal_gamma: focal cost parameters.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matcher costs are 0; at least one of cost_class, cost_bbox, cost_giou must be > 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def cost_matrix(self, logits: torch.Tensor, boxes: torch.Tensor, tgt_ids: torch.Tensor,
                    tgt_boxes: torch.Tensor) -> torch.Tensor:
        """logits (Q, C), boxes (Q, 4) cxcywh, tgt_ids (T,), tgt_boxes (T, 4) cxcywh -> cost (Q, T)."""
        c_class = focal_class_cost(logits.float(), tgt_ids, self.focal_alpha, self.focal_gamma)
        c_bbox = torch.cdist(boxes.float(), tgt_boxes.float(), p=1)
        c_giou = -generalized_box_iou(box_convert(boxes.float(), "cxcywh", "xyxy"),
                                      box_convert(tgt_boxes.float(), "cxcywh", "xyxy"))
        return self.cost_bbox * c_bbox + self.cost_class * c_class + self.cost_giou * c_giou

    @torch.no_grad()
    def forward(self, outputs: Mapping[str, torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]]):
        """outputs: "pred_logits" (B, Q, C), "pred_boxes" (B, Q, 4); targets: B dicts with "labels" (T_b,)
        and "boxes" (T_b, 4) cxcywh.

        Returns B pairs (query indices, target indices), int64 tensors of length min(Q, T_b) on CPU.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if len(targets) != logits.shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {logits.shape[0]} predictions")
        sizes = [len(t["boxes"]) for t in targets]
        empty = torch.empty(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [(empty, empty) for _ in targets]
        b, q = logits.shape[:2]
        tgt_ids = torch.cat([t["labels"] for t in targets]).to(logits.device)
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes.device)
        cost = self.cost_matrix(logits.flatten(0, 1), boxes.flatten(0, 1), tgt_ids, tgt_boxes)
        cost = cost.view(b, q, -1).cpu()
        if not torch.isfinite(cost).all():
            raise FloatingPointError("matching cost has NaN/inf entries: the predicted logits or boxes are not finite")
        indices = []
        for i, c in enumerate(cost.split(sizes, -1)):
            if sizes[i] == 0:
                indices.append((empty, empty))
                continue
            row, col = linear_sum_assignment(c[i].numpy())
            indices.append((torch.as_tensor(row, dtype=torch.int64), torch.as_tensor(col, dtype=torch.int64)))
        return indices
