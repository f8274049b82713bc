"""Image files: reading any PIL mode as RGB uint8, and finding the files PIL cannot read.

EXIF orientation is ignored on purpose: COCO coordinates refer to the stored pixels.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["load_rgb", "unreadable_images"]

#: What PIL raises for a file that is not a readable image.
_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


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
    except _PIL_ERRORS as err:
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


def unreadable_images(image_dir: Path, images: Iterable[dict]) -> list[tuple[int, Path, str]]:
    """``(image id, path, reason)`` of the json ``images`` entries whose file PIL cannot read (header,
    PNG checksums, a draft decode of JPEGs: a truncated file is caught) or whose size differs from the json."""
    bad = []
    for img in images:
        path = image_dir / img["file_name"]
        try:
            with Image.open(path) as im:
                w, h = im.size
                if im.format == "JPEG":  # a 1/8-scale decode still reads the whole stream: catches truncation
                    im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                    im.load()
                else:
                    im.verify()  # chunk checksums (PNG) without decoding
        except _PIL_ERRORS as err:
            bad.append((img["id"], path, str(err).splitlines()[0] if str(err) else type(err).__name__))
            continue
        if (img.get("height", h), img.get("width", w)) != (h, w):
            bad.append((img["id"], path, f"{w}x{h} (WxH), the json says {img.get('width')}x{img.get('height')}"))
    return bad
