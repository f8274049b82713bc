"""A synthetic "shapes" instance-segmentation dataset written as real COCO (PNG + instances json).

Objects are ellipses, triangles, rings (annuli), rotated rectangles, stars and crosses -- the class
*is* the shape (class colours differ too, with jitter) -- on textured backgrounds (gradient +
low-frequency noise + pixel noise). Objects may overlap; the later one occludes the earlier one, and
placements that would hide more than half of an earlier object are redrawn, so every painted object
is annotated with its *visible* mask. Unoccluded polygonal objects are stored as COCO polygons (the
exact polygon pycocotools rasterised to paint them), rings and occluded objects as compressed RLE.

Layout (as the real COCO sets in shared/data)::

    out_dir/images/{train,val}/000001.png
    out_dir/annotations/instances_{train,val}.json
    out_dir/shapes.json          (the generation parameters; an identical request reuses the folder)

Everything is a function of the parameters: image ``i`` of a split is drawn from
``np.random.default_rng([seed, split_index, i])``, so two writes are byte-identical.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..config import ShapesConfig

__all__ = ["SHAPE_CLASSES", "SplitPaths", "write_shapes_dataset", "render_shapes_image"]

#: Class names in label order; ``n_classes`` takes the first ones.
SHAPE_CLASSES: tuple[str, ...] = ("ellipse", "triangle", "ring", "rectangle", "star", "cross")
_CLASS_COLOURS = np.array(
    [(220, 60, 50), (50, 170, 70), (60, 90, 220), (230, 190, 40), (170, 60, 200), (40, 200, 210)], dtype=np.float64
)
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SplitPaths:
    """Where one split lives: pass both to ``CocoInstances(image_dir, ann_file)``."""

    image_dir: Path
    ann_file: Path


# ------------------------------------------------------------------------------------ geometry
def _ellipse(cx: float, cy: float, rx: float, ry: float, theta: float, n: int) -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(theta), math.sin(theta)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _rotate(points: np.ndarray, cx: float, cy: float, theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    x, y = points[:, 0], points[:, 1]
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _shape_polygons(name: str, cx: float, cy: float, r: float, rng: np.random.Generator) -> tuple[list, list]:
    """(outer polygons, holes) as (k, 2) float arrays within radius ``r`` of the centre."""
    theta = float(rng.uniform(0, 2 * math.pi))
    n_round = int(np.clip(2 * math.pi * r / 3, 16, 64))
    if name == "ellipse":
        return [_ellipse(cx, cy, r, r * rng.uniform(0.55, 1.0), theta, n_round)], []
    if name == "ring":
        ry = r * rng.uniform(0.75, 1.0)
        k = rng.uniform(0.45, 0.65)
        return [_ellipse(cx, cy, r, ry, theta, n_round)], [_ellipse(cx, cy, r * k, ry * k, theta, n_round)]
    if name == "triangle":
        angles = np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.25, 0.25, 3)
        pts = np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1)
        return [_rotate(pts, cx, cy, theta)], []
    if name == "rectangle":
        a = r / math.sqrt(1 + (aspect := rng.uniform(0.35, 1.0)) ** 2)
        b = a * aspect
        pts = np.array([[-a, -b], [a, -b], [a, b], [-a, b]])
        return [_rotate(pts, cx, cy, theta)], []
    if name == "star":
        inner = rng.uniform(0.4, 0.55)
        angles = np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * inner)
        return [_rotate(np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1), cx, cy, theta)], []
    if name == "cross":
        a, b = r * 0.7, r * rng.uniform(0.22, 0.32)
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b],
                        [-a, -b], [-b, -b]])
        return [_rotate(pts, cx, cy, theta)], []
    raise ValueError(f"unknown shape {name!r}")


def _rasterise(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return mask_utils.decode(rle).astype(bool)


# ---------------------------------------------------------------------------------- rendering
def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    c0, c1 = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
    angle = rng.uniform(0, 2 * math.pi)
    xx = np.linspace(0.0, 1.0, width)[None, :]
    yy = np.linspace(0.0, 1.0, height)[:, None]
    t = math.cos(angle) * xx + math.sin(angle) * yy
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    image = c0 + (c1 - c0) * t[..., None]
    grid = rng.normal(0, 1, (4, 4, 3)).astype(np.float32)
    lowfreq = np.stack(
        [np.asarray(Image.fromarray(np.ascontiguousarray(grid[..., c])).resize((width, height), Image.BILINEAR)) for c in range(3)],
        axis=2,
    )
    image += 18.0 * lowfreq
    image += rng.normal(0, 6.0, (height, width, 3)).astype(np.float32)
    return image


def render_shapes_image(
    rng: np.random.Generator,
    height: int,
    width: int,
    n_classes: int,
    max_objects: int,
    empty_fraction: float = ShapesConfig.empty_fraction,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One image: RGB uint8 ``(H, W, 3)`` and its objects ``{"label", "mask" (H, W) bool, "polygons" or None}``."""
    image = _background(rng, height, width)
    objects: list[dict[str, Any]] = []
    n_objects = 0 if rng.uniform() < empty_fraction else int(rng.integers(1, max_objects + 1))
    side = min(height, width)
    for _ in range(n_objects):
        label = int(rng.integers(n_classes))
        for _attempt in range(10):
            r = float(rng.uniform(0.09, 0.24) * side)
            if objects and rng.uniform() < 0.4:  # deliberately overlap a previous object
                prev = objects[int(rng.integers(len(objects)))]
                cx = prev["centre"][0] + rng.uniform(-1, 1) * r
                cy = prev["centre"][1] + rng.uniform(-1, 1) * r
            else:
                cx, cy = rng.uniform(r + 1, width - r - 1), rng.uniform(r + 1, height - r - 1)
            cx, cy = float(np.clip(cx, r + 1, width - r - 1)), float(np.clip(cy, r + 1, height - r - 1))
            outer, holes = _shape_polygons(SHAPE_CLASSES[label], cx, cy, r, rng)
            outer_flat = [np.round(p, 2).reshape(-1).tolist() for p in outer]
            mask = _rasterise(outer_flat, height, width)
            if holes:
                mask &= ~_rasterise([np.round(p, 2).reshape(-1).tolist() for p in holes], height, width)
            if mask.sum() < 16:
                continue
            # an earlier object must keep at least half of its full area visible
            if all((o["mask"] & ~mask).sum() >= 0.5 * o["full_area"] for o in objects):
                break
        else:
            continue
        for o in objects:
            if (o["mask"] & mask).any():
                o["mask"] = o["mask"] & ~mask
                o["polygons"] = None  # occluded: only an RLE describes the visible part
        colour = _CLASS_COLOURS[label] + rng.uniform(-25, 25, 3)
        ys, xs = np.nonzero(mask)
        shade = rng.uniform(-20, 20) * (2.0 * xs / max(width - 1, 1) - 1.0)
        image[ys, xs] = colour + shade[:, None] + rng.normal(0, 5.0, (ys.size, 3))
        objects.append({
            "label": label,
            "mask": mask,
            "full_area": int(mask.sum()),
            "centre": (cx, cy),
            "polygons": None if holes else outer_flat,
        })
    out = [{"label": o["label"], "mask": o["mask"], "polygons": o["polygons"]} for o in objects]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), out


# ------------------------------------------------------------------------------------- writing
def _parse_size(image_size: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """int | (H, W) | ((h_lo, h_hi), (w_lo, w_hi)) -> ((h_lo, h_hi), (w_lo, w_hi))."""
    try:
        if isinstance(image_size, (int, np.integer)):
            rng = ((int(image_size),) * 2,) * 2
        else:
            h, w = image_size
            h = (int(h), int(h)) if isinstance(h, (int, np.integer)) else (int(h[0]), int(h[1]))
            w = (int(w), int(w)) if isinstance(w, (int, np.integer)) else (int(w[0]), int(w[1]))
            rng = (h, w)
    except (TypeError, ValueError):
        rng = None
    if rng is None or min(rng[0][0], rng[1][0]) < 16 or rng[0][0] > rng[0][1] or rng[1][0] > rng[1][1]:
        raise ValueError(
            f"image_size must be an int, (H, W) or ((h_min, h_max), (w_min, w_max)) with sides >= 16, got {image_size!r}"
        )
    return rng  # type: ignore[return-value]


def _write_split(root: Path, split: str, split_index: int, n_images: int, params: dict[str, Any]) -> None:
    (h_lo, h_hi), (w_lo, w_hi) = params["image_size"]
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    for i in range(n_images):
        rng = np.random.default_rng([params["seed"], split_index, i])
        height, width = int(rng.integers(h_lo, h_hi + 1)), int(rng.integers(w_lo, w_hi + 1))
        pixels, objects = render_shapes_image(
            rng, height, width, params["n_classes"], params["max_objects"], params["empty_fraction"]
        )
        image_id = i + 1
        file_name = f"{image_id:06d}.png"
        Image.fromarray(pixels).save(image_dir / file_name, compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for obj in objects:
            rle = mask_utils.encode(np.asfortranarray(obj["mask"].astype(np.uint8)))
            if obj["polygons"] is not None:
                segmentation: Any = obj["polygons"]
            else:
                segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj["label"] + 1,
                "segmentation": segmentation,
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0,
            })
    coco = {
        "info": {"description": f"solq synthetic shapes ({split})", "version": str(_FORMAT_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": c + 1, "name": SHAPE_CLASSES[c], "supercategory": "shape"} for c in range(params["n_classes"])
        ],
    }
    (root / "annotations").mkdir(exist_ok=True)
    with open(root / "annotations" / f"instances_{split}.json", "w") as fh:
        json.dump(coco, fh, separators=(",", ":"))


def _split_paths(root: Path, splits: Sequence[str]) -> dict[str, SplitPaths]:
    return {s: SplitPaths(root / "images" / s, root / "annotations" / f"instances_{s}.json") for s in splits}


def write_shapes_dataset(
    out_dir: str | os.PathLike,
    n_images: int = ShapesConfig.n_train,
    n_val: int | None = None,
    image_size: Any = ShapesConfig.image_size,
    seed: int = ShapesConfig.seed,
    n_classes: int = ShapesConfig.n_classes,
    max_objects: int = ShapesConfig.max_objects,
    empty_fraction: float = ShapesConfig.empty_fraction,
    overwrite: bool = False,
) -> dict[str, SplitPaths]:
    """Write the shapes dataset to ``out_dir`` and return ``{"train": SplitPaths, "val": SplitPaths}``.

    ``n_images`` train images and ``n_val`` val images (default ``max(1, n_images // 4)``; 0 = no val
    split). ``image_size``: int, ``(H, W)`` or ``((h_min, h_max), (w_min, w_max))`` drawn per image.
    ``n_classes`` (1..6) takes the first classes of ``SHAPE_CLASSES``; each image holds
    1..``max_objects`` objects (a fraction ``empty_fraction`` of images has none).

    The folder is written to a temporary sibling and renamed into place. If ``out_dir`` already holds
    a dataset written with the same parameters, it is reused as is; any other non-empty ``out_dir``
    raises ``FileExistsError`` unless ``overwrite=True``.
    """
    params = _shapes_params(n_images, n_val, image_size, seed, n_classes, max_objects, empty_fraction)
    splits = {"train": params["n_images"]}
    if params["n_val"]:
        splits["val"] = params["n_val"]
    out_dir = Path(out_dir)
    existing = _reusable(out_dir, params, list(splits), overwrite)
    if existing is not None:
        return existing
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for index, (split, n) in enumerate(splits.items()):
            _write_split(tmp, split, index, n, params)
        (tmp / "shapes.json").write_text(json.dumps(params, indent=1) + "\n")
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "data")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _split_paths(out_dir, list(splits))


def _shapes_params(n_images, n_val, image_size, seed, n_classes, max_objects, empty_fraction) -> dict[str, Any]:
    """Check ``write_shapes_dataset``'s arguments; the manifest dict (``shapes.json``) they define."""
    if not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
    n_val = max(1, int(n_images) // 4) if n_val is None else n_val
    if not isinstance(n_val, (int, np.integer)) or n_val < 0:
        raise ValueError(f"n_val must be a non-negative integer, got {n_val!r}")
    if not 1 <= int(n_classes) <= len(SHAPE_CLASSES):
        raise ValueError(f"n_classes must be in 1..{len(SHAPE_CLASSES)}, got {n_classes!r}")
    if int(max_objects) < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects!r}")
    if not 0.0 <= float(empty_fraction) <= 1.0:
        raise ValueError(f"empty_fraction must be in [0, 1], got {empty_fraction!r}")
    return {
        "format": "solq-shapes",
        "version": _FORMAT_VERSION,
        "n_images": int(n_images),
        "n_val": int(n_val),
        "image_size": [list(r) for r in _parse_size(image_size)],
        "seed": int(seed),
        "n_classes": int(n_classes),
        "max_objects": int(max_objects),
        "empty_fraction": float(empty_fraction),
    }


def _reusable(out_dir: Path, params: dict, splits: list[str], overwrite: bool) -> dict[str, SplitPaths] | None:
    """The split paths of a complete dataset already in ``out_dir`` with the same ``params`` (None: write it).
    Raises ``FileExistsError`` for any other non-empty ``out_dir`` unless ``overwrite``."""
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if not any(out_dir.iterdir()):
        return None
    manifest = out_dir / "shapes.json"
    same = False
    if manifest.is_file():
        try:
            same = json.loads(manifest.read_text()) == params
        except (OSError, json.JSONDecodeError):
            same = False
    paths = _split_paths(out_dir, splits)
    if same and not overwrite and all(p.ann_file.is_file() and p.image_dir.is_dir() for p in paths.values()):
        return paths
    if not overwrite:
        raise FileExistsError(
            f"{out_dir} is not empty and does not hold a shapes dataset with these parameters; "
            "choose another folder or pass overwrite=True to replace it"
        )
    return None
