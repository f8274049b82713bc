"""SOLQ instance segmentation (NeurIPS 2021) on top of maskcodec.

>>> from solq import Predictor
>>> predictor = Predictor.from_checkpoint("runs/shapes_tiny/checkpoint.pth")
>>> result = predictor("image.png")   # boxes (xyxy pixels), scores, labels (category ids), masks (RLE)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .predictor import Predictor

__all__ = ["Predictor"]


def __getattr__(name: str) -> Any:
    # Resolved on first use, so ``import solq.config`` or ``solq --help`` does not load torch.
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'solq' has no attribute {name!r}")
