"""Batching: pad images to a common size and keep per-image targets in a list.

``Batch.images`` float32 ``(B, 3, Hmax, Wmax)`` (normalised, zero-padded at the bottom/right),
``Batch.pixel_mask`` bool ``(B, Hmax, Wmax)`` True on PADDING, ``Batch.targets`` a list of B target
dicts (see ``solq.data.targets.build_target``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Batch:
    """A padded batch of images with their targets."""

    images: torch.Tensor
    pixel_mask: torch.Tensor
    targets: list[dict[str, Any]]

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor (targets included) on ``device``."""
        return Batch(
            images=self.images.to(device, non_blocking=non_blocking),
            pixel_mask=self.pixel_mask.to(device, non_blocking=non_blocking),
            targets=[
                {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
                for t in self.targets
            ],
        )

    def pin_memory(self) -> "Batch":
        """Page-locked copy (called by ``DataLoader(pin_memory=True)``)."""
        return Batch(
            images=self.images.pin_memory(),
            pixel_mask=self.pixel_mask.pin_memory(),
            targets=[{k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in self.targets],
        )


def collate(samples: Sequence[tuple[torch.Tensor, dict[str, Any]]], size_divisibility: int = 1) -> Batch:
    """Stack ``(image (3, h, w), target)`` samples into a ``Batch``.

    Images are padded with zeros to the largest ``(h, w)`` of the batch, rounded up to a multiple of
    ``size_divisibility``; ``pixel_mask`` is True on the padding.
    """
    if len(samples) == 0:
        raise ValueError("cannot collate an empty list of samples")
    images = [s[0] for s in samples]
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor) or img.dim() != 3:
            raise ValueError(f"sample {i}: image must be a (C, h, w) tensor, got {type(img).__name__} "
                             f"{tuple(getattr(img, 'shape', ()))}")
    channels = {img.shape[0] for img in images}
    if len(channels) != 1:
        raise ValueError(f"images in a batch must have the same number of channels, got {sorted(channels)}")
    h_max = max(img.shape[1] for img in images)
    w_max = max(img.shape[2] for img in images)
    if size_divisibility > 1:
        h_max = -(-h_max // size_divisibility) * size_divisibility
        w_max = -(-w_max // size_divisibility) * size_divisibility
    batch = images[0].new_zeros((len(images), channels.pop(), h_max, w_max), dtype=torch.float32)
    pixel_mask = torch.ones((len(images), h_max, w_max), dtype=torch.bool)
    for i, img in enumerate(images):
        _, h, w = img.shape
        batch[i, :, :h, :w] = img
        pixel_mask[i, :h, :w] = False
    return Batch(images=batch, pixel_mask=pixel_mask, targets=[s[1] for s in samples])
