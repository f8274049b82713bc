"""``solq predict``: a trained model on image files and folders -> ``results.json`` and pictures."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from maskcodec.atomic import atomic_write

from .config import Config
from .distributed import set_threads
from .predictor import Predictor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files from a mix of files and folders (a folder contributes its images, sorted)."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"image file or folder not found: {p}")
    if not files:
        raise FileNotFoundError("no input images given")
    return files


def _rle_masks(rles: Sequence[dict]):
    """COCO RLEs (str counts) -> (K, H, W) bool numpy masks (None if there are none), for drawing."""
    import pycocotools.mask as mask_util

    if not rles:
        return None
    coded = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles]
    return mask_util.decode(coded).transpose(2, 0, 1).astype(bool)


def predict(
    cfg: Config,
    weights: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    score_threshold: float = 0.3,
    draw: bool = True,
    ann_file: Optional[str | os.PathLike] = None,
    skipped: Optional[list] = None,
) -> list[dict]:
    """Run a trained model (a ``Predictor``) on image files; write ``results.json`` (COCO results with RLE
    masks, plus ``file_name``) and one ``<stem>.png`` picture per image into ``out_dir``. Returns the results.

    ``image_id`` is the id of the image's ``file_name`` in ``ann_file`` (a COCO instances json), so
    the results load against that dataset; without ``ann_file`` it is the 1-based position in the
    input list. An image that cannot be read (or is not listed in ``ann_file``) is reported on
    stderr, left out and appended to ``skipped`` as ``(path, reason)``; results.json is written
    for the others.
    """
    from .data import load_rgb
    from .image_index import ImageIndex
    from .models import results_to_coco
    from .visualize import draw_predictions

    set_threads(cfg.train.num_threads)
    files = list_images(inputs)
    ids = ImageIndex(ann_file).ids(files, [Path(i) for i in inputs if Path(i).is_dir()])
    predictor = Predictor.from_config(cfg, weights, device=cfg.train.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    skipped = [] if skipped is None else skipped
    for image_id, path in zip(ids, files):
        try:
            if image_id is None:
                raise ValueError(f"{path.name} is not listed in {ann_file}")
            image = load_rgb(path)
        except (ValueError, FileNotFoundError) as err:
            skipped.append((str(path), str(err)))
            print(f"solq predict: skipping {path}: {err}", file=sys.stderr)
            continue
        res = predictor.detect(image, masks="rle", score_threshold=score_threshold)
        dets = results_to_coco([res], [image_id], predictor.category_ids)
        for det in dets:
            det["file_name"] = path.name
        results += dets
        if draw:
            draw_predictions(image, res["boxes"].cpu().numpy(), res["labels"].tolist(), res["scores"].tolist(),
                             _rle_masks(res["rles"]) if "rles" in res else None,
                             class_names=predictor.class_names, path=out / f"{path.stem}.png")
    atomic_write(out / "results.json", json.dumps(results))
    return results
