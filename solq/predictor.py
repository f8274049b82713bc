"""``Predictor``: a trained SOLQ model as a function from images to boxes, scores, labels and masks.

>>> from solq import Predictor
>>> predictor = Predictor.from_checkpoint("runs/shapes_tiny/checkpoint.pth", device="cpu")
>>> result = predictor("image.jpg")                  # or a PIL image, an (H, W, 3) uint8 array, a (3, H, W) tensor
>>> result["boxes"], result["scores"], result["labels"], result["masks"]

The settings (model shape, codec, category ids, evaluation image size) come from the checkpoint,
so no config file is needed; ``config`` / ``overrides`` change them (e.g. ``data.val_scale=640``).
An image goes through the evaluation transform (``data.val_scale`` shorter side, ``data.max_size``
cap, ImageNet normalisation) and ``PostProcess``, as in ``solq eval``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .config import Config, apply_overrides, config_from_dict, load_config
from .distributed import resolve_device
from .trained import load_trained_state

ImageInput = Union[str, os.PathLike, np.ndarray, torch.Tensor, Any]  # Any: a PIL image
MASK_FORMATS = ("rle", "array")


class Predictor:
    """Callable: image (path, PIL image, (H, W, 3) uint8 array or (3, H, W) tensor) or a list of them ->
    one dict per image (a list for a list input) with

    * ``boxes``: (K, 4) float32, ``xyxy`` pixels of the original image,
    * ``scores``: (K,) float32, descending, all >= ``score_threshold``,
    * ``labels``: (K,) int64 dataset category ids (``category_ids`` of the training set),
    * ``masks``: K COCO RLE dicts (str counts) for ``masks="rle"``, or (K, H, W) bool for ``masks="array"``
      (None for a detector without a mask head).
    """

    def __init__(self, model: torch.nn.Module, codec, category_ids: Sequence[int],
                 class_names: Optional[Sequence[str]] = None, *, val_scale: int, max_size: int,
                 device: Union[str, torch.device] = "cpu", num_select: int = 100):
        from torchvision.transforms import v2

        from .data.transforms import finalize
        from .models import PostProcess

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.codec = codec
        self.category_ids = [int(c) for c in category_ids]
        self.class_names = list(class_names) if class_names else [str(c) for c in self.category_ids]
        self.transform = v2.Compose([v2.RandomShortestSize([val_scale], max_size), finalize()])
        self.postprocess = {fmt: PostProcess(codec, num_select=num_select, output="rle" if fmt == "rle" else "masks")
                            for fmt in MASK_FORMATS}

    @classmethod
    def from_config(cls, cfg: Config, weights: Union[str, os.PathLike], device: Union[str, torch.device] = "auto",
                    state: Optional[dict] = None) -> "Predictor":
        """A predictor of ``weights`` with the image size and (for weights without them) model settings of ``cfg``."""
        dev = resolve_device(str(device))
        state = load_checkpoint(weights) if state is None else state
        model, codec, category_ids, class_names = load_trained_state(cfg, state, str(weights), dev)
        d = cfg.data
        return cls(model, codec, category_ids, class_names, val_scale=d.val_scale or max(d.scales),
                   max_size=d.max_size, device=dev)

    @classmethod
    def from_checkpoint(cls, path: Union[str, os.PathLike], device: Union[str, torch.device] = "auto",
                        config: Union[str, os.PathLike, Config, None] = None,
                        overrides: Sequence[str] = ()) -> "Predictor":
        """Load ``path`` (a ``checkpoint.pth`` of ``solq train``, or converted official weights).

        The config stored in the checkpoint is used unless ``config`` (a YAML path or a ``Config``) is
        given; ``overrides`` (``key=value``) apply on top. ``device``: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        """
        state = load_checkpoint(path)
        if isinstance(config, Config):
            cfg = config_from_dict(apply_overrides(config.to_dict(), list(overrides), base_dir=os.getcwd()))
        elif config is not None or not isinstance(state.get("config"), dict):
            cfg = load_config(config, list(overrides))
        else:
            data = apply_overrides(dict(state["config"]), list(overrides), base_dir=os.getcwd())
            data["model"] = {**data.get("model", {}), "backbone_weights": None}  # the checkpoint holds all weights
            cfg = config_from_dict(data)
        return cls.from_config(cfg, path, device=device, state=state)

    @torch.no_grad()
    def __call__(self, images: Union[ImageInput, Sequence[ImageInput]], masks: str = "rle",
                 score_threshold: float = 0.0) -> Union[dict, list[dict]]:
        if masks not in MASK_FORMATS:
            raise ValueError(f"masks must be one of {MASK_FORMATS}, got {masks!r}")
        if isinstance(images, (list, tuple)):
            return [self(image, masks=masks, score_threshold=score_threshold) for image in images]
        raw = self.detect(to_rgb_array(images), masks=masks, score_threshold=score_threshold)
        labels = torch.as_tensor(self.category_ids, dtype=torch.int64)[raw["labels"].cpu()]
        out = {"boxes": raw["boxes"].float().cpu().numpy(), "scores": raw["scores"].float().cpu().numpy(),
               "labels": labels.numpy()}
        if masks == "rle":
            out["masks"] = raw.get("rles")
        else:
            out["masks"] = raw["masks"].cpu().numpy().astype(bool) if "masks" in raw else None
        return out

    @torch.no_grad()
    def detect(self, image: np.ndarray, masks: str = "rle", score_threshold: float = 0.0) -> dict:
        """One (H, W, 3) uint8 image -> ``PostProcess`` output with contiguous ``labels`` (tensors; ``rles``
        a list, ``masks`` a (K, H, W) bool tensor), detections with score >= ``score_threshold`` only."""
        x = self.transform(torch.from_numpy(image).permute(2, 0, 1).contiguous())
        outputs = self.model(x[None].to(self.device), None)
        res = self.postprocess[masks](outputs, torch.tensor([image.shape[:2]], device=self.device))[0]
        keep = res["scores"] >= score_threshold
        rles = res.pop("rles", None)
        res = {key: v[keep] for key, v in res.items()}
        if rles is not None:
            res["rles"] = [r for r, kept in zip(rles, keep.tolist()) if kept]
        return res


def to_rgb_array(image: ImageInput) -> np.ndarray:
    """An image path, PIL image, (H, W, 3) uint8 array or (3, H, W) uint8 / [0, 1] float tensor -> (H, W, 3) uint8."""
    if isinstance(image, (str, os.PathLike)):
        from .data import load_rgb

        return load_rgb(Path(image))
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"a tensor image must be (3, H, W), got shape {tuple(image.shape)}")
        if image.is_floating_point():
            if image.numel() and not (0.0 <= float(image.min()) and float(image.max()) <= 1.0):
                raise ValueError("a float tensor image must hold values in [0, 1]; give uint8 for 0..255")
            image = (image * 255).round().to(torch.uint8)
        elif image.dtype != torch.uint8:
            raise ValueError(f"a tensor image must be uint8 or float in [0, 1], got {image.dtype}")
        return image.permute(1, 2, 0).cpu().contiguous().numpy()
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image.Image
        return np.array(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"an array image must be (H, W, 3) uint8 RGB, got shape {image.shape} {image.dtype}")
        return image if image.flags.c_contiguous and image.flags.writeable else np.array(image, order="C")
    raise TypeError(f"cannot read an image from a {type(image).__name__}: give a path, a PIL image, an (H, W, 3) "
                    "uint8 array or a (3, H, W) tensor")
