"""Argument checks shared by ``crop_resize``, ``paste`` and ``paste_rle``: boxes, sizes, image sizes, thresholds."""

from __future__ import annotations

import math
import operator

import numpy as np

from . import backend


def _check_boxes(boxes: np.ndarray, batch: int, name: str = "boxes") -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        hint = "; for a single box use boxes[None]" if boxes.ndim == 1 else ""
        raise ValueError(f"{name} must have shape (B, 4) in xyxy pixels, got {tuple(boxes.shape)}{hint}")
    if boxes.shape[0] != batch:
        raise ValueError(
            f"masks and {name} disagree on the batch size: {batch} masks but {boxes.shape[0]} boxes; "
            "pass one box per mask"
        )
    if batch and not backend.is_finite(boxes):
        raise ValueError(f"{name} contain NaN or infinite coordinates")


def _check_masks(masks) -> None:
    """``masks`` must be a (B, N, N) bool, integer or float array (any backend)."""
    if masks.ndim != 3:
        hint = "; for a single mask use masks[None]" if masks.ndim == 2 else ""
        raise ValueError(f"masks must have shape (B, N, N), got {tuple(masks.shape)}{hint}")
    if not backend.is_numeric(masks):
        raise ValueError(f"masks must be bool, integer or float, got dtype {masks.dtype}")


def _check_size(size, name: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{name} must be a positive integer, got {size!r}")
    return int(size)


def _check_threshold(threshold) -> float | None:
    if threshold is None:
        return None
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number or None, got {threshold}")
    return threshold


def _check_image_size(image_size) -> tuple[int, int]:
    try:
        height, width = image_size
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (H, W), got {image_size!r}") from None
    try:
        if isinstance(height, bool) or isinstance(width, bool):
            raise TypeError
        height, width = operator.index(height), operator.index(width)  # ints, numpy/torch integer scalars
    except TypeError:
        raise ValueError(f"image_size must be two integers (H, W), got {image_size!r}") from None
    if height < 0 or width < 0:
        raise ValueError(f"image_size must be two non-negative integers (H, W), got {image_size!r}")
    return height, width
