"""Sine position encoding of a padded feature map (DETR / Deformable DETR convention)."""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """2-D sine/cosine position encoding computed from the padding mask.

    Positions are the cumulative count of valid (unpadded) pixels along each axis, shifted by
    -0.5 and normalised by the valid extent, times ``scale`` (2π), so the encoding describes the
    position inside the *unpadded* image. Output channels are ``[y features, x features]``.

    Args:
        num_pos_feats: features per axis; the output has ``2 * num_pos_feats`` channels
            (use ``d_model // 2``).
        temperature: frequency base.
        scale: multiplier of the normalised positions.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` bool (B, H, W), True on padding -> float32 (B, 2 * num_pos_feats, H, W)."""
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        eps = 1e-6
        y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * self.scale

        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[..., None] / dim_t
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
