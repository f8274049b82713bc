"""SOLQ: Deformable DETR whose queries predict, in parallel, a class, a box and a mask vector
(the unified query representation of Dong et al., NeurIPS 2021).

Parameter names follow the official SOLQ code (``class_embed``, ``bbox_embed``, ``vector_embed``,
``query_embed``, ``input_proj``, ``transformer.*``) so official checkpoints load by name (``convert.py``).
"""

from __future__ import annotations

import copy
import inspect
import math
import os
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Backbone, downsample_mask
from .deform_attn import attn_backends_used, set_attn_backend
from .position_encoding import PositionEmbeddingSine
from .transformer import DeformableTransformer, inverse_sigmoid

#: Initialisations of the mask-vector head's last bias (see ``SOLQ``).
VECTOR_BIAS_INITS = ("official", "zero")


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU in between (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def _check_settings(*, vector_bias_init: str, two_stage: bool, with_box_refine: bool, **positive: int) -> None:
    """Reject settings the model cannot be built with, with a message naming the setting."""
    for name, value in positive.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    d_model, nheads = positive["d_model"], positive["nheads"]
    if d_model % 32 != 0:
        raise ValueError(f"d_model ({d_model}) must be a multiple of 32 (GroupNorm(32) input projections)")
    if d_model % nheads != 0:
        raise ValueError(f"d_model ({d_model}) must be divisible by nheads ({nheads})")
    if positive["num_feature_levels"] == 2:
        raise ValueError("num_feature_levels must be 1 (C5 only) or >= 3 (C3-C5 plus extra stride-2 levels)")
    if vector_bias_init not in VECTOR_BIAS_INITS:
        raise ValueError(f"vector_bias_init must be one of {VECTOR_BIAS_INITS}, got {vector_bias_init!r}")
    if two_stage and not with_box_refine:
        raise ValueError("two_stage=True requires with_box_refine=True (as in Deformable DETR)")


def _input_projections(channels: list[int], num_feature_levels: int, d_model: int) -> nn.ModuleList:
    """1x1 conv + GroupNorm per backbone level, then stride-2 3x3 convs for the extra levels (xavier init)."""
    proj = []
    in_channels = channels[-1]
    for c in channels:
        proj.append(nn.Sequential(nn.Conv2d(c, d_model, kernel_size=1), nn.GroupNorm(32, d_model)))
    for _ in range(num_feature_levels - len(channels)):
        proj.append(nn.Sequential(nn.Conv2d(in_channels, d_model, kernel_size=3, stride=2, padding=1),
                                  nn.GroupNorm(32, d_model)))
        in_channels = d_model
    proj = nn.ModuleList(proj)
    for p in proj:
        nn.init.xavier_uniform_(p[0].weight, gain=1)
        nn.init.zeros_(p[0].bias)
    return proj


class SOLQ(nn.Module):
    """SOLQ instance segmentation model.

    Args:
        num_classes: C, number of (contiguous) object classes; sigmoid logits, no "no-object" class.
        n_vector: n_k, length of the mask vector (the codec's ``n_components``).
        d_model: transformer width (official SOLQ configs: 384); multiple of 32 and of ``nheads``.
        backbone: ``resnet18|resnet34|resnet50|resnet101``.
        num_feature_levels: 1 = C5 only; 3 = C3-C5; 4 = C3-C5 + C6 (stride-2 3x3 conv on C5);
            more levels add further stride-2 convs; 2 is rejected.
        num_queries: Q (also the number of proposals in two-stage mode).
        enc_layers, dec_layers, dim_feedforward, nheads, n_points, dropout: transformer settings.
        with_box_refine: iterative box refinement (per-layer class/box heads).
        two_stage: queries from encoder proposals (requires ``with_box_refine``).
        with_vector: predict mask vectors; False gives a detector (no "pred_vectors").
        backbone_weights: None (random init; never downloaded), a path to a torchvision ResNet
            state dict, or such a state dict.
        vector_hidden_dim: hidden width of the shared mask-vector MLP (1024 in SOLQ).
        train_backbone: False freezes the whole backbone.
        backbone_norm: ``"frozen_bn"`` (pretrained weights; the paper) or ``"group_norm"``
            (training from random init); see :mod:`solq.models.backbone`.
        attn_backend: deformable-attention core, ``"auto"``, ``"reference"``, ``"numba"`` or
            ``"triton"`` (:mod:`solq.models.msda_backend`); ``attn_backends_used`` says which ran.
        vector_bias_init: the mask-vector head's last layer starts with weight 0 and bias 0, then
            ``"official"`` sets ``bias[2:] = -2.0`` (the official SOLQ code, which copies the box
            head's line); ``"zero"`` leaves the bias at 0 (this project's behaviour before).

    ``forward(images, pixel_mask)`` returns ``{"pred_logits" (B, Q, C), "pred_boxes" (B, Q, 4)
    cxcywh in [0, 1] of the unpadded image, "pred_vectors" (B, Q, n_k), "aux_outputs": [same
    dicts for decoder layers 0..L-2]}`` plus ``"enc_outputs"`` (logits, boxes) in two-stage mode.
    """

    def __init__(
        self,
        num_classes: int,
        n_vector: int = 256,
        d_model: int = 256,
        backbone: str = "resnet50",
        num_feature_levels: int = 4,
        num_queries: int = 300,
        enc_layers: int = 6,
        dec_layers: int = 6,
        dim_feedforward: int = 1024,
        nheads: int = 8,
        n_points: int = 4,
        with_box_refine: bool = True,
        two_stage: bool = False,
        with_vector: bool = True,
        backbone_weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
        dropout: float = 0.1,
        vector_hidden_dim: int = 1024,
        train_backbone: bool = True,
        backbone_norm: str = "frozen_bn",
        attn_backend: str = "auto",
        vector_bias_init: str = "official",
    ):
        super().__init__()
        _check_settings(num_classes=num_classes, n_vector=n_vector, d_model=d_model,
                        num_feature_levels=num_feature_levels, num_queries=num_queries, dec_layers=dec_layers,
                        nheads=nheads, n_points=n_points, vector_bias_init=vector_bias_init,
                        two_stage=two_stage, with_box_refine=with_box_refine)
        self.num_classes = num_classes
        self.n_vector = n_vector
        self.num_queries = num_queries
        self.num_feature_levels = num_feature_levels
        self.with_box_refine = with_box_refine
        self.two_stage = two_stage
        self.with_vector = with_vector

        self.backbone = Backbone(backbone, return_interm_layers=num_feature_levels > 1, weights=backbone_weights,
                                 train_backbone=train_backbone, norm=backbone_norm)
        self.position_embedding = PositionEmbeddingSine(d_model // 2)
        self.transformer = DeformableTransformer(
            d_model=d_model, nhead=nheads, num_encoder_layers=enc_layers, num_decoder_layers=dec_layers,
            dim_feedforward=dim_feedforward, dropout=dropout, num_feature_levels=num_feature_levels,
            dec_n_points=n_points, enc_n_points=n_points, two_stage=two_stage, two_stage_num_proposals=num_queries,
        )
        set_attn_backend(self.transformer, attn_backend)

        self.input_proj = _input_projections(self.backbone.num_channels, num_feature_levels, d_model)

        if not two_stage:
            self.query_embed = nn.Embedding(num_queries, d_model * 2)

        self._init_heads(d_model, num_classes, n_vector, vector_hidden_dim, dec_layers, vector_bias_init)

    def _init_heads(self, d_model: int, num_classes: int, n_vector: int, vector_hidden_dim: int, dec_layers: int,
                    vector_bias_init: str) -> None:
        """Class, box and mask-vector heads with the official initialisation (per-layer copies with box
        refinement, one shared module otherwise; one mask-vector MLP shared by all layers)."""
        two_stage, with_box_refine, with_vector = self.two_stage, self.with_box_refine, self.with_vector
        class_embed = nn.Linear(d_model, num_classes)
        nn.init.constant_(class_embed.bias, -math.log((1 - 0.01) / 0.01))
        bbox_embed = MLP(d_model, d_model, 4, 3)
        nn.init.zeros_(bbox_embed.layers[-1].weight)
        nn.init.zeros_(bbox_embed.layers[-1].bias)
        num_pred = dec_layers + 1 if two_stage else dec_layers
        if with_box_refine:
            self.class_embed = nn.ModuleList(copy.deepcopy(class_embed) for _ in range(num_pred))
            self.bbox_embed = nn.ModuleList(copy.deepcopy(bbox_embed) for _ in range(num_pred))
            nn.init.constant_(self.bbox_embed[0].layers[-1].bias[2:], -2.0)
        else:  # one head shared by all layers (the same module repeated)
            nn.init.constant_(bbox_embed.layers[-1].bias[2:], -2.0)
            self.class_embed = nn.ModuleList([class_embed] * num_pred)
            self.bbox_embed = nn.ModuleList([bbox_embed] * num_pred)
        if two_stage:
            for head in self.bbox_embed:
                nn.init.zeros_(head.layers[-1].bias[2:])
        if with_vector:
            # one mask-vector MLP shared by all decoder layers (official SOLQ)
            self.vector_embed = MLP(d_model, vector_hidden_dim, n_vector, 3)
            nn.init.zeros_(self.vector_embed.layers[-1].weight)
            nn.init.zeros_(self.vector_embed.layers[-1].bias)
            if vector_bias_init == "official":
                nn.init.constant_(self.vector_embed.layers[-1].bias[2:], -2.0)

    @property
    def attn_backends_used(self) -> list[str]:
        """Deformable-attention core backends the last forward ran (e.g. ``["numba"]``)."""
        return attn_backends_used(self.transformer)

    # ------------------------------------------------------------------ forward
    @staticmethod
    def _check_inputs(images: torch.Tensor, pixel_mask: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}"
                             + ("; add a batch dimension with images[None]" if images.ndim == 3 else ""))
        if not images.is_floating_point():
            raise ValueError(f"images must be float (normalised with ImageNet mean/std), got dtype {images.dtype}; "
                             "convert with images.float() / 255 and normalise")
        if images.shape[1] != 3:
            raise ValueError(f"images must have 3 channels (RGB), got shape {tuple(images.shape)}")
        b, _, h, w = images.shape
        if pixel_mask is None:
            return torch.zeros((b, h, w), dtype=torch.bool, device=images.device)
        if not isinstance(pixel_mask, torch.Tensor) or tuple(pixel_mask.shape) != (b, h, w):
            shape = tuple(pixel_mask.shape) if isinstance(pixel_mask, torch.Tensor) else type(pixel_mask).__name__
            raise ValueError(f"pixel_mask must be a bool tensor of shape (B, H, W) = {(b, h, w)} matching images, "
                             f"got {shape}")
        return pixel_mask.to(device=images.device, dtype=torch.bool)

    def forward(self, images: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> dict[str, Any]:
        """images float (B, 3, H, W); pixel_mask bool (B, H, W), True on padding (None: no padding)."""
        pixel_mask = self._check_inputs(images, pixel_mask)
        features = self.backbone(images, pixel_mask)
        srcs, masks = [], []
        for lvl, (feat, mask) in enumerate(features):
            srcs.append(self.input_proj[lvl](feat))
            masks.append(mask)
        last = features[-1][0]
        for lvl in range(len(features), self.num_feature_levels):
            x = last if lvl == len(features) else srcs[-1]
            try:
                src = self.input_proj[lvl](x)
            except ValueError as err:  # GroupNorm over a single value per group
                raise ValueError(
                    f"images of size {tuple(images.shape[-2:])} are too small for {self.num_feature_levels} "
                    f"feature levels at d_model={self.input_proj[lvl][1].num_channels} (level {lvl} would be "
                    f"{(x.shape[-2] + 1) // 2}x{(x.shape[-1] + 1) // 2}); use larger images, fewer levels or a "
                    "larger d_model"
                ) from err
            srcs.append(src)
            masks.append(downsample_mask(pixel_mask, src.shape[-2:]))
        pos = [self.position_embedding(m).to(s.dtype) for s, m in zip(srcs, masks)]

        query_embed = None if self.two_stage else self.query_embed.weight
        hs, init_ref, inter_refs, enc_class, enc_coord_unact = self.transformer(
            srcs, masks, pos, query_embed,
            bbox_embed=self.bbox_embed if self.with_box_refine else None,
            class_embed=self.class_embed if self.two_stage else None,
        )

        layers = []
        for lvl in range(hs.shape[0]):
            reference = inverse_sigmoid(init_ref if lvl == 0 else inter_refs[lvl - 1])
            delta = self.bbox_embed[lvl](hs[lvl])
            if reference.shape[-1] == 4:
                coord = delta + reference
            else:
                coord = torch.cat([delta[..., :2] + reference, delta[..., 2:]], -1)
            out = {"pred_logits": self.class_embed[lvl](hs[lvl]), "pred_boxes": coord.sigmoid()}
            if self.with_vector:
                out["pred_vectors"] = self.vector_embed(hs[lvl])
            layers.append(out)
        result = dict(layers[-1])
        result["aux_outputs"] = layers[:-1]
        if self.two_stage:
            result["enc_outputs"] = {"pred_logits": enc_class, "pred_boxes": enc_coord_unact.sigmoid()}
        return result


def build_model(cfg: Mapping[str, Any]) -> SOLQ:
    """Build a :class:`SOLQ` from a dict of its keyword arguments (``num_classes`` required).

    Raises ``ValueError`` naming unknown keys.
    """
    params = inspect.signature(SOLQ.__init__).parameters
    allowed = [p for p in params if p != "self"]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; allowed: {allowed}")
    if "num_classes" not in cfg:
        raise ValueError("model config needs 'num_classes'")
    return SOLQ(**dict(cfg))
