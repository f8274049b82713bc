"""Set criterion of SOLQ: focal class loss, box L1 + GIoU, and the mask-vector loss, on every
decoder layer (and on the encoder proposals in two-stage mode, without vectors).

Loss terms (unweighted; combine with ``weight_dict`` / :meth:`SetCriterion.total_loss`):

* ``loss_ce``: ``sigmoid_focal_loss(logits, onehot).mean(1).sum() / num_boxes * Q``
  (= sum over queries and classes / num_boxes, as Deformable DETR).
* ``loss_bbox``: sum of |Δ| over matched cxcywh boxes / num_boxes.
* ``loss_giou``: sum of (1 - GIoU) over matched boxes / num_boxes.
* ``loss_vector`` (``vector_loss="l1"``): mean |Δ| over matched queries × n_k (official SOLQ).
* ``vector_loss="l2_dice"`` (flatten codec, vectors are mask values in [0, 1]):
  ``loss_vector`` = mean squared error over matched × n_k, and ``loss_dice`` = sum over matched
  masks of ``1 - (2 Σ p t + 1) / (Σ p + Σ t + 1)`` / num_boxes, with ``p`` the raw prediction
  clamped to [0, 1] (the flatten codec decodes by identity, so the clamped prediction *is* the
  soft mask; the MSE term keeps a gradient where the clamp saturates).

Terms of decoder layer i < L-1 carry the suffix ``_i``; encoder proposals ``_enc``.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from .matcher import HungarianMatcher

VECTOR_LOSSES = ("l1", "l2_dice")


def default_weight_dict(dec_layers: int = 6, two_stage: bool = False, vector_loss: str = "l1",
                        cls: float = 2.0, bbox: float = 5.0, giou: float = 2.0, vector: float = 3.0,
                        dice: float = 1.0) -> dict[str, float]:
    """Weights of every loss term (paper: λ_cls 2, λ_L1 5, λ_giou 2, λ_vec 3), for all decoder layers."""
    base = {"loss_ce": cls, "loss_bbox": bbox, "loss_giou": giou, "loss_vector": vector}
    if vector_loss == "l2_dice":
        base["loss_dice"] = dice
    weights = dict(base)
    for i in range(dec_layers - 1):
        weights.update({f"{k}_{i}": v for k, v in base.items()})
    if two_stage:
        weights.update({f"{k}_enc": v for k, v in base.items() if k in ("loss_ce", "loss_bbox", "loss_giou")})
    return weights


def dice_loss(pred: torch.Tensor, target: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """pred, target (M, D) in [0, 1] -> sum over rows of 1 - dice, divided by num_boxes."""
    num = 2 * (pred * target).sum(1)
    den = pred.sum(1) + target.sum(1)
    return (1 - (num + 1) / (den + 1)).sum() / num_boxes


class SetCriterion(nn.Module):
    """Hungarian-matched set losses.

    Args:
        num_classes: C.
        matcher: a :class:`HungarianMatcher` (or compatible callable).
        weight_dict: term name -> weight (see :func:`default_weight_dict`).
        losses: subset of ``("labels", "boxes", "vectors")``.
        focal_alpha: α of the focal loss (γ = 2).
        vector_loss: ``"l1"`` (DCT/PCA/sparse codecs) or ``"l2_dice"`` (flatten codec).
        vector_layers: vector loss on the last K decoder layers (None: all).
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher | None = None,
                 weight_dict: Mapping[str, float] | None = None,
                 losses: Iterable[str] = ("labels", "boxes", "vectors"), focal_alpha: float = 0.25,
                 vector_loss: str = "l1", vector_layers: int | None = None):
        super().__init__()
        losses = tuple(losses)
        unknown = set(losses) - {"labels", "boxes", "vectors"}
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}; choose from 'labels', 'boxes', 'vectors'")
        if vector_loss not in VECTOR_LOSSES:
            raise ValueError(f"vector_loss must be one of {VECTOR_LOSSES}, got {vector_loss!r}")
        if vector_layers is not None and (not isinstance(vector_layers, int) or vector_layers < 0):
            raise ValueError(f"vector_layers must be None or a non-negative int, got {vector_layers!r}")
        self.num_classes = num_classes
        self.matcher = matcher if matcher is not None else HungarianMatcher()
        self.weight_dict = dict(weight_dict) if weight_dict is not None else default_weight_dict(
            vector_loss=vector_loss)
        self.losses = losses
        self.focal_alpha = focal_alpha
        self.vector_loss = vector_loss
        self.vector_layers = vector_layers

    # ------------------------------------------------------------------ individual terms
    @staticmethod
    def _src_idx(indices):
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        return batch, torch.cat([src for src, _ in indices])

    def loss_labels(self, outputs, targets, indices, num_boxes):
        logits = outputs["pred_logits"]
        idx = self._src_idx(indices)
        onehot = torch.zeros_like(logits)
        tgt = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
        onehot[idx[0].to(logits.device), idx[1].to(logits.device), tgt] = 1.0
        loss = sigmoid_focal_loss(logits, onehot, alpha=self.focal_alpha, gamma=2.0, reduction="none")
        return {"loss_ce": loss.mean(1).sum() / num_boxes * logits.shape[1]}

    def loss_boxes(self, outputs, targets, indices, num_boxes):
        idx = self._src_idx(indices)
        src = outputs["pred_boxes"][idx]
        tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(src)
        l1 = F.l1_loss(src, tgt, reduction="none").sum() / num_boxes
        giou = torch.diag(generalized_box_iou(box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")))
        return {"loss_bbox": l1, "loss_giou": (1 - giou).sum() / num_boxes}

    def loss_vectors(self, outputs, targets, indices, num_boxes):
        if "pred_vectors" not in outputs:
            raise ValueError("the 'vectors' loss needs 'pred_vectors' in the outputs (model built with with_vector=False?)")
        idx = self._src_idx(indices)
        src = outputs["pred_vectors"][idx]
        if src.shape[0] == 0:
            zero = outputs["pred_vectors"].sum() * 0
            return {"loss_vector": zero, **({"loss_dice": zero} if self.vector_loss == "l2_dice" else {})}
        if any("mask_vectors" not in t for t in targets):
            raise ValueError("targets need 'mask_vectors' (n, n_k) for the vector loss")
        for t in targets:
            if t["mask_vectors"].ndim != 2 or t["mask_vectors"].shape[-1] != src.shape[-1]:
                raise ValueError(f"target mask_vectors have shape {tuple(t['mask_vectors'].shape)} but the model "
                                 f"predicts {src.shape[-1]} numbers: build the model with n_vector = codec.n_components")
        tgt = torch.cat([t["mask_vectors"][j] for t, (_, j) in zip(targets, indices)]).to(src)
        # Sum over matched queries / (num_boxes * n_k): the per-element mean in one process, and the
        # same total as one process under data parallelism (num_boxes is averaged across processes).
        scale = num_boxes * src.shape[-1]
        if self.vector_loss == "l1":
            return {"loss_vector": F.l1_loss(src, tgt, reduction="sum") / scale}
        return {"loss_vector": F.mse_loss(src, tgt, reduction="sum") / scale,
                "loss_dice": dice_loss(src.clamp(0, 1), tgt, num_boxes)}

    # ------------------------------------------------------------------ driver
    @staticmethod
    def _num_boxes(targets, device) -> float:
        n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n)
            world = dist.get_world_size()
        return max(n.item() / world, 1.0)

    def _layer_losses(self, outputs, targets, num_boxes, suffix: str, with_vectors: bool, where: str):
        indices = self.matcher(outputs, targets)
        out = {}
        for name in self.losses:
            if name == "vectors" and not with_vectors:
                continue
            terms = getattr(self, f"loss_{name}")(outputs, targets, indices, num_boxes)
            for k, v in terms.items():
                if not torch.isfinite(v).all():
                    raise FloatingPointError(f"loss term {k} is {v.item()} at {where}")
                out[k + suffix] = v
        return out

    def forward(self, outputs: Mapping, targets: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """outputs: the model's dict; targets: B dicts with "labels", "boxes" (cxcywh) and
        "mask_vectors". Returns the unweighted loss terms."""
        device = outputs["pred_logits"].device
        num_boxes = self._num_boxes(targets, device)
        aux = list(outputs.get("aux_outputs", []))
        n_layers = len(aux) + 1
        k = n_layers if self.vector_layers is None else self.vector_layers
        losses = {}
        for i, layer_out in enumerate(aux):
            losses.update(self._layer_losses(layer_out, targets, num_boxes, f"_{i}", i >= n_layers - k,
                                             f"decoder layer {i}"))
        last = {key: v for key, v in outputs.items() if key not in ("aux_outputs", "enc_outputs")}
        losses.update(self._layer_losses(last, targets, num_boxes, "", k >= 1, f"decoder layer {n_layers - 1} (last)"))
        if "enc_outputs" in outputs:
            bin_targets = [dict(t, labels=torch.zeros_like(t["labels"])) for t in targets]
            losses.update(self._layer_losses(outputs["enc_outputs"], bin_targets, num_boxes, "_enc", False,
                                             "encoder proposals"))
        return losses

    def total_loss(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Σ weight_dict[k] · losses[k] over the terms that have a weight."""
        terms = [losses[k] * w for k, w in self.weight_dict.items() if k in losses]
        if not terms:
            raise ValueError("no loss term has a weight in weight_dict")
        return torch.stack(terms).sum()
