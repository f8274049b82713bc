"""COCO-format instance segmentation dataset (torchvision v2 transforms, codec targets).

``CocoInstances(image_dir, ann_file)`` reads and validates an instances json once at
construction, through maskcodec's reader (``maskcodec.coco.read_instances_json`` /
``check_instances``: one reader, one set of messages), and yields ``(image, target)`` pairs in
the solq contract: ``image`` float32 ``(3, h, w)`` ImageNet-normalised, ``target`` as built by
``solq.data.targets.build_target``.

Conventions (as in COCO practice and DETR):

* category ids are mapped to contiguous labels ``0..C-1`` in increasing id order over *all*
  categories the json defines (``category_ids[label] -> id``, ``label_of[id] -> label``), so every
  split of a dataset shares one mapping;
* crowd annotations (``iscrowd=1``) are not targets unless ``include_crowd=True``;
* images without annotations are kept (negatives);
* boxes come from the annotation ``bbox`` (clipped to the image); objects whose clipped box is empty
  are dropped; an annotation without a usable segmentation gets its box as mask (counted in
  ``stats["box_masks"]``);
* images are converted to RGB (``solq.data.images.load_rgb``); EXIF orientation is ignored,
  because COCO coordinates refer to the stored pixels.

Bad input: a missing image file raises ``FileNotFoundError`` (at construction, naming the path and
``image_dir``); an unreadable image or one whose size differs from the json raises ``ValueError`` on
access; a corrupt json, duplicate ids, and annotations pointing to an unknown image / category,
with a malformed bbox, or with a segmentation that ``maskcodec.coco.validate`` rejects (it would
crash or hang pycocotools) raise ``ValueError`` with counts at construction. With ``strict=False``
(config ``data.skip_bad_images``) every image is checked first (header, PNG checksums, a draft
decode of JPEGs, size), and the missing or unreadable images and the bad annotations are skipped
instead, with a warning, and counted in ``skipped``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from maskcodec.coco import check_instances, index_instances, read_instances_json, segmentation_mask
from maskcodec.coco.validate import valid_ground_truth

from .images import load_rgb, unreadable_images
from .targets import build_target
from .transforms import finalize

__all__ = ["CocoInstances"]

#: The hint appended to every construction-time error that ``strict=False`` would turn into a skip.
_SKIP_HINT = "set data.skip_bad_images=true (CocoInstances(strict=False)) to skip them"


class CocoInstances(torch.utils.data.Dataset):
    """COCO instances dataset yielding ``(image (3, h, w) float32, target dict)``.

    Args:
        image_dir: folder the json's ``file_name`` entries are relative to.
        ann_file: COCO instances json.
        transforms: a v2 transform called on ``(tv_tensors.Image uint8, {"boxes", "labels", "masks"})``
            (see ``solq.data.transforms.make_transforms``); None = no resize, only float conversion
            and normalisation. A uint8 image coming out of ``transforms`` is normalised afterwards.
        codec: a maskcodec codec; when given, targets carry ``"mask_vectors"`` ``(n, n_k)``.
        keep_masks: also return the full-image ``"masks"`` bool ``(n, h, w)``.
        sampling_ratio: ground-truth crop sampling for ``"mask_vectors"`` (0 adaptive, official; 1).
        include_crowd: treat crowd regions as ordinary objects (default: excluded, COCO practice).
        strict: raise on missing image files and bad annotations (default); False skips and counts them,
            after checking the header of every image (config key ``data.skip_bad_images``).
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        ann_file: str | os.PathLike,
        transforms: Callable | None = None,
        codec: Any = None,
        keep_masks: bool = False,
        include_crowd: bool = False,
        strict: bool = True,
        sampling_ratio: int = 0,
    ):
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.transforms = transforms
        self.codec = codec
        self.keep_masks = bool(keep_masks)
        self.include_crowd = bool(include_crowd)
        self.strict = bool(strict)
        self.sampling_ratio = sampling_ratio
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image_dir does not exist or is not a folder: {self.image_dir}")
        if codec is not None and not (hasattr(codec, "encode") and hasattr(codec, "mask_size")):
            raise ValueError(f"codec must be a maskcodec codec (with encode and mask_size), got {type(codec).__name__}")

        src = str(self.ann_file)
        data = read_instances_json(self.ann_file, file_names=True, categories=True)
        categories = sorted(data["categories"], key=lambda c: c["id"])
        #: contiguous label -> original COCO category id
        self.category_ids: list[int] = [c["id"] for c in categories]
        #: original COCO category id -> contiguous label
        self.label_of: dict[int, int] = {cid: label for label, cid in enumerate(self.category_ids)}
        self.class_names: list[str] = [str(c.get("name", c["id"])) for c in categories]
        self.skipped: dict[str, int] = {}
        checked = check_instances(data, src, skip_images=self._bad_images(data["images"]))
        if checked.invalid_counts():
            msg = checked.describe_invalid(src)
            if self.strict:
                raise ValueError(f"{msg}; fix the json, or {_SKIP_HINT}")
            warnings.warn(msg + "; skipping them", stacklevel=2)
            self.skipped.update(checked.invalid_counts())
        if checked.skipped_annotations:
            self.skipped["annotations_of_missing_images"] = checked.skipped_annotations
        self._index = checked.coco  # pycocotools' index of the images kept and their valid annotations
        self._coco = None
        self.image_ids: list[int] = sorted(self._index.imgs)
        self._images = [self._index.imgs[i] for i in self.image_ids]
        self._annotations = [self._index.imgToAnns[i] for i in self.image_ids]
        self.stats: dict[str, int] = self._count()

    # ---------------------------------------------------------------- construction-time validation
    def _bad_images(self, images: list[dict]) -> set[int]:
        """Ids of the images whose file is missing (``FileNotFoundError`` when strict: checked now so a long
        run does not die at epoch 3) or, when not strict, unreadable; warns and counts them in ``skipped``."""
        src = self.ann_file
        missing = {img["id"]: self.image_dir / img["file_name"] for img in images
                   if not (self.image_dir / img["file_name"]).is_file()}
        if missing:
            msg = (f"{len(missing)} of {len(images)} image files listed in {src} are missing from "
                   f"image_dir {self.image_dir}, e.g. {next(iter(missing.values()))}")
            if self.strict:
                raise FileNotFoundError(f"{msg}; fix image_dir, or {_SKIP_HINT}")
            warnings.warn(msg + "; skipping them", stacklevel=3)
            self.skipped["missing_images"] = len(missing)
        if self.strict:
            return set(missing)
        present = [img for img in images if img["id"] not in missing]
        unreadable = unreadable_images(self.image_dir, present)
        if unreadable:
            _, first, why = unreadable[0]
            warnings.warn(f"{len(unreadable)} of {len(present)} images listed in {src} are unreadable or not "
                          f"the size the json says, e.g. {first}: {why}; skipping them", stacklevel=3)
            self.skipped["unreadable_images"] = len(unreadable)
        return set(missing) | {image_id for image_id, _, _ in unreadable}

    def _count(self) -> dict[str, int]:
        targets = [[a for a in anns if self._is_target(a)] for anns in self._annotations]
        return {
            "images": len(self.image_ids),
            "annotations": sum(len(a) for a in self._annotations),
            "crowd": sum(bool(a.get("iscrowd", 0)) for anns in self._annotations for a in anns),
            "negatives": sum(1 for t in targets if not t),
            "box_masks": sum(1 for t in targets for a in t if not _has_polygon_or_rle(a.get("segmentation"))),
        }

    def _is_target(self, ann: dict) -> bool:
        return self.include_crowd or not ann.get("iscrowd", 0)

    # ---------------------------------------------------------------------------------- accessors
    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def coco(self):
        """A pycocotools ``COCO`` of the validated images/annotations (for ``COCOeval``), built lazily.

        An annotation without polygons is trained on as its box, so it is evaluated as its box too;
        a missing ``area`` is its box's.
        """
        if self._coco is None:
            anns = [a if "area" in a else dict(a, area=float(a["bbox"][2] * a["bbox"][3]))
                    for image_anns in self._annotations for a in image_anns]
            coco = index_instances({"images": list(self._images), "annotations": anns,
                                    "categories": sorted(self._index.cats.values(), key=lambda c: c["id"])})
            self._coco = valid_ground_truth(coco, box_if_empty=True)
        return self._coco

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_info(self, index: int) -> dict[str, Any]:
        """The json ``images`` entry of sample ``index``."""
        return self._images[index]

    def image_path(self, index: int) -> Path:
        return self.image_dir / self._images[index]["file_name"]

    def load_raw(self, index: int, with_masks: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
        """Untransformed sample: RGB uint8 ``(H, W, 3)`` and ``{"boxes" (n, 4) float32 XYXY pixels,
        "labels" (n,) int64, "masks" (n, H, W) bool or None, "image_id" int}``."""
        info = self._images[index]
        path = self.image_dir / info["file_name"]
        try:
            image = load_rgb(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"image file not found: {path} (image_dir {self.image_dir}, listed in "
                                    f"{self.ann_file})") from None
        h, w = image.shape[:2]
        if (info["height"], info["width"]) != (h, w):  # read_instances requires both
            raise ValueError(f"image {path} is {w}x{h} (WxH) but {self.ann_file} says "
                             f"{info['width']}x{info['height']}; the annotations would not line up")

        anns = [a for a in self._annotations[index] if self._is_target(a)]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        anns = [a for a, k in zip(anns, keep) if k]
        boxes = boxes[keep]
        labels = np.array([self.label_of[a["category_id"]] for a in anns], dtype=np.int64)
        masks = None
        if with_masks:
            masks = np.zeros((len(anns), h, w), dtype=bool)
            for k, ann in enumerate(anns):
                try:
                    m = segmentation_mask(ann.get("segmentation"), h, w)
                except ValueError as err:
                    raise ValueError(f"{self.ann_file}: annotation {ann.get('id')} of image {path}: {err}") from err
                if m is None:  # no usable segmentation: the box is the best mask we have
                    x0, y0, x1, y1 = boxes[k]
                    m = np.zeros((h, w), dtype=bool)
                    m[int(y0):int(math.ceil(y1)), int(x0):int(math.ceil(x1))] = True
                masks[k] = m
        return image, {"boxes": boxes, "labels": labels, "masks": masks, "image_id": info["id"]}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        index %= len(self)
        need_masks = self.codec is not None or self.keep_masks
        image_np, raw = self.load_raw(index, with_masks=need_masks)
        orig_size = image_np.shape[:2]
        # a (3, H, W) view of the HWC pixels: channels-last memory, which v2's uint8 resize is fastest on
        image = tv_tensors.Image(torch.from_numpy(image_np).permute(2, 0, 1))
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(raw["boxes"]), format="XYXY", canvas_size=orig_size),
            "labels": torch.from_numpy(raw["labels"]),
        }
        if need_masks:
            target["masks"] = tv_tensors.Mask(torch.from_numpy(raw["masks"].view(np.uint8)))
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        if image.dtype == torch.uint8:
            image = finalize()(image)
        size = tuple(int(s) for s in image.shape[-2:])
        boxes = target["boxes"]
        if isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.format != tv_tensors.BoundingBoxFormat.XYXY:
            boxes = F.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY)
        out = build_target(
            boxes=boxes.as_subclass(torch.Tensor),
            labels=target["labels"],
            masks=target["masks"].as_subclass(torch.Tensor) if need_masks else None,
            image_id=raw["image_id"],
            orig_size=orig_size,
            size=size,
            codec=self.codec,
            keep_masks=self.keep_masks,
            sampling_ratio=self.sampling_ratio,
        )
        return image.as_subclass(torch.Tensor), out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(images={len(self)}, classes={self.num_classes}, "
                f"image_dir={str(self.image_dir)!r}, ann_file={str(self.ann_file)!r})")


def _has_polygon_or_rle(segmentation: Any) -> bool:
    """False for a missing segmentation or one without a polygon of 3 points: its box is the mask."""
    if isinstance(segmentation, dict):
        return "counts" in segmentation and "size" in segmentation
    return isinstance(segmentation, list) and any(isinstance(p, (list, tuple)) and len(p) >= 6 for p in segmentation)
