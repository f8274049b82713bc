"""COCO-format instance segmentation dataset (pycocotools masks, torchvision v2 transforms).

``CocoInstances(image_dir, ann_file)`` reads an instances json (polygons, RLE, crowd), validates it
once at construction, and yields ``(image, target)`` pairs in the solq contract: ``image`` float32
``(3, h, w)`` ImageNet-normalised, ``target`` as built by ``solq.data.targets.build_target``.

Conventions (as in COCO practice and DETR):

* category ids are mapped to contiguous labels ``0..C-1`` in increasing id order over *all*
  categories the json defines (``category_ids[label] -> id``, ``label_of[id] -> label``), so every
  split of a dataset shares one mapping;
* crowd annotations (``iscrowd=1``) are not targets unless ``include_crowd=True``;
* images without annotations are kept (negatives);
* boxes come from the annotation ``bbox`` (clipped to the image); objects whose clipped box is empty
  are dropped; an annotation without a usable segmentation gets its box as mask (counted in
  ``stats["box_masks"]``);
* images are converted to RGB (L, P, RGBA, LA, CMYK, 16-bit ...); EXIF orientation is ignored,
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

import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from maskcodec.coco import index_instances
from maskcodec.coco.validate import NO_SEGMENTATION, box_problem, segmentation_problem, valid_ground_truth

from .targets import build_target
from .transforms import finalize

__all__ = ["CocoInstances", "load_rgb", "read_instances_json", "decode_segmentation"]


# ---------------------------------------------------------------------------------------------- io
def read_instances_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a COCO instances json; ``FileNotFoundError`` / ``ValueError`` with the path on failure."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"annotation file {path} is not valid JSON ({err}); re-export or re-download it") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"annotation file {path} is not a COCO instances json: it needs an 'images' list")
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise ValueError(f"annotation file {path} defines no 'categories'; a COCO instances json needs them")
    if not isinstance(data.get("annotations", []), list):
        raise ValueError(f"annotation file {path}: 'annotations' must be a list")
    return data


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 ``(H, W, 3)``.

    Handles the PIL modes 1, L, P (with transparency), RGBA, LA, CMYK, YCbCr and 16-bit / float
    greyscale. ``FileNotFoundError`` if absent, ``ValueError`` naming the file if unreadable.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy()
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        raw = np.asarray(im)
        arr = raw.astype(np.float64)
        top = arr.max(initial=0.0)
        if raw.dtype == np.uint16 or im.mode.startswith("I;16") or 255 < top <= 65535:
            arr = arr * (255.0 / 65535.0)  # 16-bit greyscale
        elif top > 65535:
            arr = arr * (255.0 / top)
        elif im.mode == "F" and top <= 1.0:
            arr = arr * 255.0  # float image in [0, 1]
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray | None:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) -> bool mask ``(H, W)``.

    Returns None when there is nothing usable (missing, empty or all polygons degenerate).
    ``ValueError`` naming the problem for anything ``maskcodec.coco.validate`` rejects (an RLE
    whose ``size`` is not ``[height, width]`` or whose counts do not sum to H·W, non-finite or
    absurdly large polygon coordinates), which would crash or hang pycocotools.
    """
    problem = segmentation_problem(segmentation, height, width)
    if problem == NO_SEGMENTATION or segmentation is None:
        return None
    if problem is not None:
        raise ValueError(f"{problem} (segmentation of a {height}x{width} image)")
    rle = _to_rle(segmentation, height, width)
    if rle is None:
        return None
    return mask_utils.decode(rle).astype(bool)


def _to_rle(segmentation: Any, height: int, width: int) -> dict | None:
    if isinstance(segmentation, list):
        polygons = [
            [float(v) for v in p]
            for p in segmentation
            if isinstance(p, (list, tuple)) and len(p) >= 6 and len(p) % 2 == 0
        ]
        if not polygons:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(s) for s in segmentation["size"]] != [height, width]:
            raise ValueError(f"RLE size {segmentation['size']} does not match the image size {[height, width]}")
        if isinstance(segmentation["counts"], list):
            return mask_utils.frPyObjects(segmentation, height, width)
        counts = segmentation["counts"]
        return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return None


def _has_segmentation(segmentation: Any) -> bool:
    if isinstance(segmentation, dict):
        return "counts" in segmentation and "size" in segmentation
    return isinstance(segmentation, list) and any(
        isinstance(p, (list, tuple)) and len(p) >= 6 for p in segmentation
    )


def _segmentation_problem(ann: dict, image: dict) -> str | None:
    """What ``maskcodec.coco.validate`` rejects in ``ann``'s segmentation (None for none, or no polygons)."""
    h, w = image.get("height"), image.get("width")
    if not isinstance(h, int) or not isinstance(w, int):
        return None  # checked against the decoded image's size on access
    problem = segmentation_problem(ann.get("segmentation"), h, w) if "segmentation" in ann else None
    return None if problem == NO_SEGMENTATION else problem


def _unreadable_images(image_dir: Path, images: dict[int, dict]) -> list[tuple[Path, str]]:
    """(path, reason) of the images PIL cannot read (header, PNG checksums, a draft decode of JPEGs: a
    truncated file is caught) or whose size differs from the json."""
    bad = []
    for img in images.values():
        path = image_dir / img["file_name"]
        try:
            with Image.open(path) as im:
                w, h = im.size
                if im.format == "JPEG":  # a 1/8-scale decode still reads the whole stream: catches truncation
                    im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                    im.load()
                else:
                    im.verify()  # chunk checksums (PNG) without decoding
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            bad.append((path, str(err).splitlines()[0] if str(err) else type(err).__name__))
            continue
        if (img.get("height", h), img.get("width", w)) != (h, w):
            bad.append((path, f"{w}x{h} (WxH), the json says {img.get('width')}x{img.get('height')}"))
    return bad


# ------------------------------------------------------------------------------------------ dataset
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

        data = read_instances_json(self.ann_file)
        self.skipped: dict[str, int] = {}
        self._index(data)
        self._coco = None

    # ---------------------------------------------------------------- construction-time validation
    def _index(self, data: dict[str, Any]) -> None:
        src = self.ann_file
        categories = sorted(data["categories"], key=lambda c: c.get("id", -1) if isinstance(c, dict) else -1)
        cat_ids = []
        for c in categories:
            if not isinstance(c, dict) or not isinstance(c.get("id"), int):
                raise ValueError(f"{src}: every category needs an integer 'id', got {c!r}")
            cat_ids.append(c["id"])
        if len(set(cat_ids)) != len(cat_ids):
            raise ValueError(f"{src}: duplicate category ids {sorted({i for i in cat_ids if cat_ids.count(i) > 1})}")
        #: contiguous label -> original COCO category id
        self.category_ids: list[int] = cat_ids
        #: original COCO category id -> contiguous label
        self.label_of: dict[int, int] = {cid: label for label, cid in enumerate(cat_ids)}
        self.class_names: list[str] = [str(c.get("name", c["id"])) for c in categories]
        self._categories = categories

        images: dict[int, dict] = {}
        for img in data["images"]:
            if not isinstance(img, dict) or not isinstance(img.get("id"), int) or not isinstance(img.get("file_name"), str):
                raise ValueError(f"{src}: every image needs an integer 'id' and a 'file_name', got {img!r:.200}")
            if img["id"] in images:
                raise ValueError(f"{src}: duplicate image id {img['id']}")
            images[img["id"]] = img

        # missing files (checked now so a long training run does not die at epoch 3)
        missing = [i for i, img in images.items() if not (self.image_dir / img["file_name"]).is_file()]
        if missing:
            first = self.image_dir / images[missing[0]]["file_name"]
            msg = (f"{len(missing)} of {len(images)} image files listed in {src} are missing from "
                   f"image_dir {self.image_dir}, e.g. {first}")
            if self.strict:
                raise FileNotFoundError(msg + "; fix image_dir, or set data.skip_bad_images=true "
                                        "(CocoInstances(strict=False)) to skip them")
            warnings.warn(msg + "; skipping them", stacklevel=3)
            self.skipped["missing_images"] = len(missing)
            for i in missing:
                del images[i]
        if not self.strict:
            unreadable = _unreadable_images(self.image_dir, images)
            if unreadable:
                first, why = unreadable[0]
                warnings.warn(f"{len(unreadable)} of {len(images)} images listed in {src} are unreadable or not "
                              f"the size the json says, e.g. {first}: {why}; skipping them", stacklevel=3)
                self.skipped["unreadable_images"] = len(unreadable)
                bad_paths = {path for path, _ in unreadable}
                dropped = [i for i, img in images.items() if self.image_dir / img["file_name"] in bad_paths]
                for i in dropped:
                    del images[i]
                missing = missing + dropped

        missing_ids = set(missing)
        bad: dict[str, list] = {"unknown_image_id": [], "unknown_category_id": [], "bad_bbox": [],
                                "bad_segmentation": []}
        per_image: dict[int, list[dict]] = {i: [] for i in images}
        seen_ann_ids: set = set()
        n_missing_img_ann = 0
        n_crowd = 0
        for ann in data.get("annotations", []):
            if not isinstance(ann, dict):
                raise ValueError(f"{src}: annotations must be objects, got {ann!r:.200}")
            aid = ann.get("id")
            if aid is not None:
                if aid in seen_ann_ids:
                    raise ValueError(f"{src}: duplicate annotation id {aid}")
                seen_ann_ids.add(aid)
            image_id = ann.get("image_id")
            if image_id not in per_image:
                if image_id in missing_ids:
                    n_missing_img_ann += 1
                else:
                    bad["unknown_image_id"].append((aid, image_id))
                continue
            if ann.get("category_id") not in self.label_of:
                bad["unknown_category_id"].append((aid, ann.get("category_id")))
                continue
            bbox = ann.get("bbox")
            if box_problem(bbox):
                bad["bad_bbox"].append((aid, bbox))
                continue
            problem = _segmentation_problem(ann, images[image_id])
            if problem:
                bad["bad_segmentation"].append((aid, problem))
                continue
            n_crowd += bool(ann.get("iscrowd", 0))
            per_image[image_id].append(ann)
        n_bad = sum(len(v) for v in bad.values())
        if n_bad:
            detail = "; ".join(
                f"{len(v)} with {k.replace('_', ' ')} (e.g. annotation {v[0][0]} -> {v[0][1]!r:.60})"
                for k, v in bad.items() if v
            )
            msg = f"{src}: {n_bad} invalid annotations: {detail}"
            if self.strict:
                raise ValueError(msg + "; fix the json, or set data.skip_bad_images=true (CocoInstances(strict=False)) "
                                 "to skip them")
            warnings.warn(msg + "; skipping them", stacklevel=3)
            self.skipped.update({k: len(v) for k, v in bad.items() if v})
        if n_missing_img_ann:
            self.skipped["annotations_of_missing_images"] = n_missing_img_ann

        self.image_ids: list[int] = sorted(images)
        self._images = [images[i] for i in self.image_ids]
        self._annotations = [per_image[i] for i in self.image_ids]
        n_ann = sum(len(a) for a in self._annotations)
        self.stats: dict[str, int] = {
            "images": len(self.image_ids),
            "annotations": n_ann,
            "crowd": n_crowd,
            "negatives": sum(1 for a in self._annotations if not any(self._is_target(x) for x in a)),
            "box_masks": sum(1 for al in self._annotations for a in al
                             if self._is_target(a) and not _has_segmentation(a.get("segmentation"))),
        }

    def _is_target(self, ann: dict) -> bool:
        return self.include_crowd or not ann.get("iscrowd", 0)

    # ---------------------------------------------------------------------------------- accessors
    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def coco(self):
        """A pycocotools ``COCO`` of the validated images/annotations (for ``COCOeval``), built lazily."""
        if self._coco is None:
            flat = [a for al in self._annotations for a in al]
            next_id = max((a["id"] for a in flat if isinstance(a.get("id"), int)), default=0) + 1
            anns = []
            for a in flat:  # COCOeval needs ids and areas
                a = dict(a, area=a.get("area", float(a["bbox"][2] * a["bbox"][3])))
                if "id" not in a:
                    a["id"], next_id = next_id, next_id + 1
                anns.append(a)
            coco = index_instances({"images": list(self._images), "annotations": anns,
                                    "categories": list(self._categories)})
            # an annotation without polygons is trained on as its box: evaluate it as its box too
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
        if ("height" in info and info["height"] != h) or ("width" in info and info["width"] != w):
            raise ValueError(f"image {path} is {w}x{h} (WxH) but {self.ann_file} says "
                             f"{info.get('width')}x{info.get('height')}; the annotations would not line up")

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
                    m = decode_segmentation(ann.get("segmentation"), h, w)
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
