"""Per-sample training targets in the solq contract (see ``solq.data.collate.Batch``).

After the transforms, a sample's objects are boxes in absolute XYXY pixels of the transformed
image, labels and (optionally) full-image masks. ``build_target`` turns them into

* ``"labels"`` int64 ``(n,)``,
* ``"boxes"`` float32 ``(n, 4)`` cxcywh normalised by the transformed image's ``(h, w)``,
* ``"mask_vectors"`` float32 ``(n, n_k)``: each mask cropped to its box, resized to ``N x N``
  (``maskcodec.geometry.crop_resize``, threshold 0.5) and encoded by the codec (only with a codec).
  By default (``sampling_ratio=0``, config ``codec.sampling_ratio``) the crop is the official
  SOLQ one, ``roi_align(mask, box, N, sampling_ratio=0, aligned=True) >= 0.5`` on float32 masks and
  boxes (detectron2 ``BitMasks.crop_and_resize``), equal in every pixel; 1 takes one sample per cell.
* ``"masks"`` bool ``(n, h, w)`` (only with ``keep_masks``),
* ``"image_id"`` int, ``"orig_size"`` int64 ``(2,)`` = (H, W) before transforms, ``"size"`` int64
  ``(2,)`` = (h, w) after.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert


def normalize_boxes(boxes_xyxy: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Absolute XYXY ``(n, 4)`` -> cxcywh ``(n, 4)`` float32 normalised by ``size = (h, w)``."""
    h, w = size
    boxes = box_convert(boxes_xyxy.to(torch.float32).reshape(-1, 4), "xyxy", "cxcywh")
    return boxes / torch.tensor([w, h, w, h], dtype=torch.float32)


def encode_masks(masks: torch.Tensor | np.ndarray, boxes_xyxy: torch.Tensor | np.ndarray, codec: Any,
                 sampling_ratio: int = 0) -> torch.Tensor:
    """Mask vectors float32 ``(n, n_k)`` of full-image masks ``(n, h, w)`` cropped to boxes ``(n, 4)`` XYXY.

    ``sampling_ratio``: 0 (official SOLQ, adaptive ROIAlign) or 1 (one sample per cell).
    """
    from maskcodec.geometry import crop_resize

    masks_np = np.asarray(masks.numpy() if isinstance(masks, torch.Tensor) else masks)
    if masks_np.dtype != np.uint8:  # uint8 {0, 1} goes to the kernel as is
        masks_np = masks_np.astype(bool, copy=False)
    boxes_np = np.asarray(boxes_xyxy.numpy() if isinstance(boxes_xyxy, torch.Tensor) else boxes_xyxy, dtype=np.float32)
    n_k = int(codec.n_components)
    if masks_np.shape[0] != boxes_np.reshape(-1, 4).shape[0]:
        raise ValueError(f"{masks_np.shape[0]} masks but {boxes_np.reshape(-1, 4).shape[0]} boxes")
    if masks_np.shape[0] == 0:
        return torch.zeros((0, n_k), dtype=torch.float32)
    crops = crop_resize(masks_np, boxes_np.reshape(-1, 4), int(codec.mask_size), threshold=0.5,
                        sampling_ratio=sampling_ratio)
    vectors = np.asarray(codec.encode(crops), dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(vectors))


def build_target(
    *,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    image_id: int,
    orig_size: tuple[int, int],
    size: tuple[int, int],
    masks: torch.Tensor | None = None,
    codec: Any = None,
    keep_masks: bool = False,
    sampling_ratio: int = 0,
) -> dict[str, Any]:
    """The contract target of one sample.

    ``boxes``: ``(n, 4)`` absolute XYXY of the transformed image (``size = (h, w)``);
    ``labels``: ``(n,)``; ``masks``: ``(n, h, w)`` (any dtype, non-zero = inside), needed when a
    ``codec`` is given or ``keep_masks`` is set.
    """
    boxes = torch.as_tensor(boxes).reshape(-1, 4)
    n = boxes.shape[0]
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"{n} boxes but {labels.shape[0]} labels")
    target: dict[str, Any] = {
        "labels": labels,
        "boxes": normalize_boxes(boxes, size),
    }
    if codec is not None or keep_masks:
        if masks is None:
            raise ValueError("masks are needed to compute mask_vectors or to keep masks; load them (with_masks)")
        masks = torch.as_tensor(masks)
        if masks.dim() != 3 or masks.shape[0] != n or tuple(masks.shape[1:]) != tuple(size):
            raise ValueError(f"masks must be (n={n}, h={size[0]}, w={size[1]}), got {tuple(masks.shape)}")
        if codec is not None:
            target["mask_vectors"] = encode_masks(masks, boxes, codec, sampling_ratio)
        if keep_masks:
            target["masks"] = masks.to(torch.bool)
    target["image_id"] = int(image_id)
    target["orig_size"] = torch.tensor(orig_size, dtype=torch.int64)
    target["size"] = torch.tensor(size, dtype=torch.int64)
    return target
