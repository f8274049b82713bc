"""Joint image / box / mask augmentation with torchvision transforms v2.

A sample travels through the transforms as ``(image, target)`` where ``image`` is a
``tv_tensors.Image`` uint8 ``(3, H, W)`` and ``target`` holds ``"boxes"``
(``tv_tensors.BoundingBoxes``, XYXY, absolute pixels), ``"labels"`` int64 ``(n,)`` and optionally
``"masks"`` (``tv_tensors.Mask`` uint8 ``(n, H, W)``). v2 moves boxes and masks with the image;
``SanitizeBoundingBoxes`` drops degenerate boxes together with their labels and masks.

The training recipe is DETR's: horizontal flip, then either a multi-scale resize (shorter side drawn
from ``scales``, longer side capped at ``max_size``) or resize -> random-size crop -> multi-scale
resize; then conversion to float and ImageNet normalisation (fused, ``ToNormalizedFloat``). Masks are resized with
pixel-centre-aligned nearest sampling (see ``RandomShortestSize``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: DETR's intermediate resize sizes and crop range, defined for training scales up to 800.
_DETR_CROP_SCALES: tuple[int, ...] = (400, 500, 600)
_DETR_CROP_SIZE: tuple[int, int] = (384, 600)
_DETR_MAX_SCALE = 800


class RandomSizeCrop(v2.Transform):
    """Crop a random ``h x w`` window, ``h`` and ``w`` uniform in ``[min_size, max_size]``.

    Each side is capped by the image's own side (a small image is cropped less, never padded).
    Boxes are clipped to the window; boxes that become empty are left for
    ``SanitizeBoundingBoxes`` to drop.
    """

    def __init__(self, min_size: int, max_size: int):
        super().__init__()
        if not 1 <= int(min_size) <= int(max_size):
            raise ValueError(f"RandomSizeCrop needs 1 <= min_size <= max_size, got ({min_size!r}, {max_size!r})")
        self.min_size = int(min_size)
        self.max_size = int(max_size)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        crop_h = _randint(min(self.min_size, height), min(self.max_size, height))
        crop_w = _randint(min(self.min_size, width), min(self.max_size, width))
        top = _randint(0, height - crop_h)
        left = _randint(0, width - crop_w)
        return dict(top=top, left=left, height=crop_h, width=crop_w)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


class RandomShortestSize(v2.RandomShortestSize):
    """``v2.RandomShortestSize`` whose masks are resized with pixel-centre-aligned nearest sampling.

    v2 resizes ``Mask`` with the legacy ``"nearest"`` mode, which samples source pixel
    ``floor(j / scale)`` instead of ``floor((j + 0.5) / scale)`` and so shifts every mask by about
    half an output pixel right/down relative to the image and the boxes at each resize;
    ``"nearest-exact"`` does not.
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            out = F.resize_image(
                inpt.as_subclass(torch.Tensor), list(params["size"]), interpolation=InterpolationMode.NEAREST_EXACT
            )
            return tv_tensors.wrap(out, like=inpt)
        return super().transform(inpt, params)


def _randint(low: int, high: int) -> int:
    """Uniform integer in ``[low, high]`` from torch's generator (seeded per DataLoader worker)."""
    return int(torch.randint(low, high + 1, ()))


class ToNormalizedFloat(v2.Transform):
    """Image -> float32 ``(x / 255 - mean) / std`` in one pass; boxes, masks and labels pass through.

    The same as ``v2.ToDtype(torch.float32, scale=True)`` followed by ``v2.Normalize(mean, std)``
    (to float32 rounding) at a fraction of the cost (one allocation instead of four). uint8 images
    are scaled by 1/255; float images are taken to be in [0, 1] already.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"mean and std need one entry per channel and std > 0, got {mean!r}, {std!r}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not (isinstance(inpt, tv_tensors.Image) or F.is_pure_tensor(inpt)):
            return inpt  # boxes, masks: nothing to do
        x = inpt.as_subclass(torch.Tensor)
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise ValueError(f"ToNormalizedFloat expects a uint8 or float image, got {x.dtype}")
        scale = 255.0 if x.dtype == torch.uint8 else 1.0
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(-1, 1, 1) * scale
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(-1, 1, 1) * scale
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)  # contiguous, whatever x's layout
        out.copy_(x).sub_(mean).div_(std)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out


def finalize() -> v2.Transform:
    """uint8 image -> float32 ImageNet-normalised; masks and boxes untouched."""
    return ToNormalizedFloat(IMAGENET_MEAN, IMAGENET_STD)


def make_transforms(
    split: str,
    scales: Sequence[int] = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800),
    max_size: int = 1333,
    crop: bool = True,
    crop_scales: Sequence[int] | None = None,
    crop_size: tuple[int, int] | None = None,
    flip: bool = True,
) -> v2.Compose:
    """The DETR / SOLQ augmentation pipeline for ``split`` ("train" or "val").

    ``scales``: candidate shorter sides (train draws one; val uses ``max(scales)``);
    ``max_size``: cap on the longer side. ``crop`` (train only) adds DETR's branch chosen with
    probability 1/2: resize to a shorter side in ``crop_scales`` -> crop a random window with sides
    in ``crop_size`` -> multi-scale resize. By default ``crop_scales`` and ``crop_size`` are DETR's
    (400/500/600 and 384..600) scaled by ``max(scales) / 800``, so tiny configs
    (``scales=[96, 112, 128], max_size=160``) get a proportionally tiny crop.
    The output image is float32 ``(3, h, w)`` normalised with the ImageNet mean/std.
    """
    scales = [int(s) for s in scales]
    if not scales or min(scales) < 1:
        raise ValueError(f"scales must be a non-empty list of positive sizes, got {scales!r}")
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be positive (or None), got {max_size!r}")
    if split == "val" or split == "test":
        return v2.Compose([RandomShortestSize([max(scales)], max_size), finalize(), v2.SanitizeBoundingBoxes()])
    if split != "train":
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")

    resize = RandomShortestSize(scales, max_size)
    steps: list[v2.Transform] = [v2.RandomHorizontalFlip()] if flip else []
    if crop:
        ratio = max(scales) / _DETR_MAX_SCALE
        if crop_scales is None:
            crop_scales = [max(1, round(s * ratio)) for s in _DETR_CROP_SCALES]
        if crop_size is None:
            crop_size = (max(1, round(_DETR_CROP_SIZE[0] * ratio)), max(1, round(_DETR_CROP_SIZE[1] * ratio)))
        cropped = v2.Compose(
            [RandomShortestSize(list(crop_scales)), RandomSizeCrop(*crop_size), RandomShortestSize(scales, max_size)]
        )
        steps.append(v2.RandomChoice([resize, cropped]))
    else:
        steps.append(resize)
    steps += [finalize(), v2.SanitizeBoundingBoxes()]
    return v2.Compose(steps)
