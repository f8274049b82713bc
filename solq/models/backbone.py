"""ResNet backbone returning C3-C5 (or C5 only) and downsampled padding masks.

Two normalisation recipes (``norm``):

* ``"frozen_bn"`` (default, for pretrained weights, as DETR / Deformable DETR / SOLQ): BatchNorm
  frozen to its loaded statistics; stem and layer1 frozen, layer2-4 trained.
* ``"group_norm"`` (for training from random init): GroupNorm(32) after every conv and every
  layer trained. A random-init network with frozen (identity) BatchNorm has no normalisation at
  all and frozen random stem features, which learns far slower.

Weights are never downloaded: pass ``weights=PATH`` (a torchvision ResNet state dict saved with
``torch.save``) or a state dict, or get random initialisation.
"""

from __future__ import annotations

import os
from typing import Mapping

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from .state_dict import state_dict_problems

#: channels of (layer2, layer3, layer4) = (C3, C4, C5) for each supported ResNet.
RESNET_CHANNELS: dict[str, tuple[int, int, int]] = {
    "resnet18": (128, 256, 512),
    "resnet34": (128, 256, 512),
    "resnet50": (512, 1024, 2048),
    "resnet101": (512, 1024, 2048),
}


def _group_norm(num_channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, num_channels)


#: ``norm`` choices of :class:`Backbone` -> torchvision ``norm_layer``.
NORM_LAYERS = {"frozen_bn": FrozenBatchNorm2d, "group_norm": _group_norm}


def load_resnet_weights(resnet: nn.Module, weights: str | os.PathLike | Mapping[str, torch.Tensor]) -> None:
    """Load a torchvision ResNet state dict (path or mapping) into ``resnet``.

    ``num_batches_tracked`` entries are ignored (BatchNorm is frozen). Raises ``ValueError``
    listing missing / unexpected keys and shape mismatches.
    """
    if isinstance(weights, (str, os.PathLike)):
        if not os.path.isfile(weights):
            raise ValueError(f"backbone_weights file not found: {weights!s}")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as err:  # not a torch file, truncated, or holds more than tensors (pickle errors)
            first = (str(err).splitlines() or [""])[0][:200]
            raise ValueError(f"backbone_weights {weights!s} is not a readable torch state dict "
                             f"({type(err).__name__}: {first})") from None
        if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
    else:
        state = weights
    if not isinstance(state, Mapping):
        raise ValueError(f"backbone_weights must be a path or a state dict, got {type(state).__name__}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError("backbone_weights must map parameter names to tensors (a torchvision ResNet state dict)")
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    own = resnet.state_dict()
    has_gn = any(isinstance(m, nn.GroupNorm) for m in resnet.modules())
    if has_gn and any(k.endswith("running_mean") for k in state) and not any(k.endswith("running_mean") for k in own):
        raise ValueError("backbone_weights hold BatchNorm statistics (pretrained torchvision weights), but "
                         "model.backbone_norm=group_norm has no BatchNorm to load them into: pretrained weights "
                         "need model.backbone_norm=frozen_bn")
    parts = state_dict_problems(own, state)
    if parts:
        raise ValueError(
            "backbone_weights do not match a torchvision "
            f"{type(resnet).__name__} of this depth: " + "; ".join(parts)
            + ". Pass the state dict of the same torchvision ResNet variant (e.g. resnet50().state_dict())."
        )
    resnet.load_state_dict(state, strict=True)


class Backbone(nn.Module):
    """torchvision ResNet, normalised by ``norm`` (see the module docstring).

    Args:
        name: ``resnet18|resnet34|resnet50|resnet101``.
        return_interm_layers: True -> C3, C4, C5 (strides 8, 16, 32); False -> C5 only.
        weights: None (random init), a path to a torchvision state dict, or a state dict.
        train_backbone: False freezes every backbone parameter.
        norm: ``"frozen_bn"`` (stem and layer1 frozen) or ``"group_norm"`` (all layers trained).

    Attributes:
        strides, num_channels: per returned level.
    """

    def __init__(
        self,
        name: str = "resnet50",
        return_interm_layers: bool = True,
        weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
        train_backbone: bool = True,
        norm: str = "frozen_bn",
    ):
        super().__init__()
        if name not in RESNET_CHANNELS:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(RESNET_CHANNELS)}")
        if norm not in NORM_LAYERS:
            raise ValueError(f"unknown backbone norm {norm!r}; choose one of {sorted(NORM_LAYERS)}")
        resnet = getattr(torchvision.models, name)(weights=None, norm_layer=NORM_LAYERS[norm])
        if weights is not None:
            load_resnet_weights(resnet, weights)
        for pname, p in resnet.named_parameters():
            trains = norm != "frozen_bn" or pname.startswith(("layer2", "layer3", "layer4"))
            if not (train_backbone and trains):
                p.requires_grad_(False)
        channels = RESNET_CHANNELS[name]
        if return_interm_layers:
            return_layers = {"layer2": "0", "layer3": "1", "layer4": "2"}
            self.strides = [8, 16, 32]
            self.num_channels = list(channels)
        else:
            return_layers = {"layer4": "0"}
            self.strides = [32]
            self.num_channels = [channels[2]]
        self.body = IntermediateLayerGetter(resnet, return_layers=return_layers)

    def forward(self, images: torch.Tensor, pixel_mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """images float (B, 3, H, W), pixel_mask bool (B, H, W) True on padding ->
        list of (features (B, C_l, H_l, W_l), mask bool (B, H_l, W_l))."""
        out = []
        for feat in self.body(images).values():
            out.append((feat, downsample_mask(pixel_mask, feat.shape[-2:])))
        return out


def downsample_mask(pixel_mask: torch.Tensor, size) -> torch.Tensor:
    """Nearest-neighbour resize of a bool padding mask (B, H, W) to ``size`` (h, w)."""
    return F.interpolate(pixel_mask[None].float(), size=tuple(size)).to(torch.bool)[0]
