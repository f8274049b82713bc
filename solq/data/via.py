"""Convert VGG Image Annotator (VIA) region files to COCO instances json.

VIA 1.x exports (``via_region_data.json``: ``{key: {"filename", "regions", ...}}``, regions a dict or
a list) and VIA 2.x project files (the same entries under ``"_via_img_metadata"``) are read.
Region shapes: polygon / polyline (``all_points_x``, ``all_points_y``), rect, circle and ellipse
(the last two as 64-gons). Image sizes come from the image files; ``bbox`` and ``area`` from the
pycocotools rasterisation of the polygon. Image ids are 1..N in file-name order.

``pixel_offset`` (default 0.5) is added to every VIA vertex: VIA stores integer pixel indices and
COCO polygons are continuous coordinates, so the vertex at pixel ``i`` is the pixel centre ``i + 0.5``
(the detectron2 balloon tutorial's convention, used for shared/data/balloon/annotations).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from maskcodec.atomic import atomic_write

__all__ = ["via_to_coco", "write_coco"]


def _region_list(regions: Any) -> list[dict]:
    if isinstance(regions, dict):
        return [regions[k] for k in sorted(regions, key=lambda k: (not str(k).isdigit(), int(k) if str(k).isdigit() else k))]
    if isinstance(regions, list):
        return regions
    return []


def _region_polygon(shape: dict, where: str) -> list[float]:
    """A VIA shape -> flat polygon [x0, y0, x1, y1, ...] in VIA pixel indices."""
    name = shape.get("name")
    try:
        if name in ("polygon", "polyline"):
            xs, ys = shape["all_points_x"], shape["all_points_y"]
            if len(xs) != len(ys):
                raise ValueError(f"{len(xs)} x but {len(ys)} y coordinates")
            return [float(v) for xy in zip(xs, ys) for v in xy]
        if name == "rect":
            x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
            return [x, y, x + w, y, x + w, y + h, x, y + h]
        if name in ("circle", "ellipse"):
            cx, cy = float(shape["cx"]), float(shape["cy"])
            rx = float(shape["r"] if name == "circle" else shape["rx"])
            ry = float(shape["r"] if name == "circle" else shape["ry"])
            theta = float(shape.get("theta", 0.0))
            c, s = math.cos(theta), math.sin(theta)
            pts = []
            for k in range(64):
                t = 2 * math.pi * k / 64
                x, y = rx * math.cos(t), ry * math.sin(t)
                pts += [cx + c * x - s * y, cy + s * x + c * y]
            return pts
    except (KeyError, TypeError) as err:
        raise ValueError(f"{where}: malformed {name!r} region ({err!r})") from err
    raise ValueError(f"{where}: unsupported VIA region shape {name!r} (polygon, polyline, rect, circle, ellipse)")


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def via_to_coco(
    via_json_path: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    category_name: str = "balloon",
    category_attribute: str | None = None,
    pixel_offset: float = 0.5,
) -> dict[str, Any]:
    """A COCO instances dict from a VIA region file.

    ``image_dir`` defaults to the json's folder. All regions get the single category
    ``category_name`` (id 1), unless ``category_attribute`` names a region attribute whose values
    are the class names (categories then get ids 1..K in name order).
    """
    via_json_path = Path(via_json_path)
    image_dir = via_json_path.parent if image_dir is None else Path(image_dir)
    data = _read_via(via_json_path)
    entries = sorted(data.values(), key=lambda e: e["filename"])
    images, annotations, raw = [], [], []
    for image_id, entry in enumerate(entries, start=1):
        height, width = _image_size(image_dir / entry["filename"])
        images.append({"id": image_id, "file_name": entry["filename"], "height": height, "width": width})
        for k, region in enumerate(_region_list(entry.get("regions"))):
            where = f"{via_json_path}: {entry['filename']} region {k}"
            polygon = [v + pixel_offset for v in _region_polygon(region.get("shape_attributes", {}), where)]
            if len(polygon) < 6:
                raise ValueError(f"{where}: a polygon needs at least 3 points, got {len(polygon) // 2}")
            name = _region_category(region, category_name, category_attribute, where)
            raw.append((image_id, height, width, polygon, name))

    names = sorted({r[4] for r in raw}) if category_attribute is not None else [category_name]
    cat_id = {n: i + 1 for i, n in enumerate(names)}
    for ann_id, (image_id, height, width, polygon, name) in enumerate(raw, start=1):
        rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
        annotations.append({
            "id": ann_id,
            "image_id": image_id,
            "category_id": cat_id[name],
            "segmentation": [polygon],
            "area": float(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "iscrowd": 0,
        })
    return {
        "info": {"description": f"converted from VIA file {via_json_path.name} by solq.data.via"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cat_id[n], "name": n, "supercategory": n} for n in names],
    }


def _read_via(via_json_path: Path) -> dict[str, dict]:
    """``{key: {"filename", "regions", ...}}`` of a VIA 1 or VIA 2 (project file) json."""
    try:
        with open(via_json_path, "rb") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"VIA file not found: {via_json_path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"VIA file {via_json_path} is not valid JSON ({err})") from err
    if isinstance(data, dict) and "_via_img_metadata" in data:
        data = data["_via_img_metadata"]
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "filename" in v for v in data.values()):
        raise ValueError(f"{via_json_path} is not a VIA region file: expected {{key: {{'filename', 'regions'}}}}")
    return data


def _region_category(region: dict, category_name: str, category_attribute: str | None, where: str) -> str:
    """The class name of a region: ``category_name``, or the value of its ``category_attribute``."""
    if category_attribute is None:
        return category_name
    value = region.get("region_attributes", {}).get(category_attribute)
    if isinstance(value, dict):  # VIA 2 checkbox attributes: {option: true}
        value = next((o for o, on in value.items() if on), None)
    if not value:
        raise ValueError(f"{where}: no region attribute {category_attribute!r} to take the class from")
    return str(value)


def write_coco(coco: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a COCO dict as json to ``path`` atomically (temporary file + rename); returns the path."""
    return atomic_write(path, json.dumps(coco))
