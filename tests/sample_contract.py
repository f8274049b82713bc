"""The solq per-sample contract (image and target dict), asserted by the dataset tests."""

from __future__ import annotations

import torch
from torchvision.ops import box_convert


def check_contract(image: torch.Tensor, target: dict, n_classes: int, n_k: int | None) -> None:
    """Assert the solq per-sample contract (HELPERS.md)."""
    assert image.dtype == torch.float32 and image.dim() == 3 and image.shape[0] == 3
    assert type(image) is torch.Tensor and image.is_contiguous()  # plain tensor, not a tv_tensor
    h, w = image.shape[1:]
    n = target["labels"].shape[0]
    assert target["labels"].dtype == torch.int64 and target["labels"].shape == (n,)
    if n:
        assert 0 <= int(target["labels"].min()) and int(target["labels"].max()) < n_classes
    boxes = target["boxes"]
    assert boxes.dtype == torch.float32 and boxes.shape == (n, 4)
    if n:
        xyxy = box_convert(boxes, "cxcywh", "xyxy")
        assert (boxes[:, 2:] > 0).all()
        assert xyxy.min() >= -1e-4 and xyxy.max() <= 1 + 1e-4
    if n_k is None:
        assert "mask_vectors" not in target
    else:
        assert target["mask_vectors"].dtype == torch.float32 and target["mask_vectors"].shape == (n, n_k)
        assert torch.isfinite(target["mask_vectors"]).all()
    assert isinstance(target["image_id"], int)
    assert target["orig_size"].dtype == torch.int64 and target["orig_size"].shape == (2,)
    assert target["size"].dtype == torch.int64 and target["size"].tolist() == [h, w]
    if "masks" in target:
        assert target["masks"].dtype == torch.bool and target["masks"].shape == (n, h, w)
