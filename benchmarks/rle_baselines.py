"""Baselines and inputs of the outputs -> COCO RLE benchmark (``model_speed.py``, section 2).

* ``heldout_detections``: SOLQ-like outputs for one image from real held-out COCO masks;
* ``plain_loop``: what a competent user writes per mask (zigzag scatter, ``idctn``, bilinear
  resize into the integer box, paste, pycocotools ``encode``);
* ``official_loop``: the official code's style (Python zigzag walk, ``idctn``, ``grid_sample``
  paste, ``encode``);
* ``mean_iou`` and ``decode_rles`` to compare the methods' RLEs.
"""

from __future__ import annotations

import os


def _inverse_zigzag_python(vec, n):
    """Per-mask Python walk over the N x N grid (the official code's style): zero-filled matrix
    with the first len(vec) zigzag entries set."""
    import numpy as np

    out = np.zeros((n, n))
    i = 0
    for s in range(2 * n - 1):
        rng = range(min(s, n - 1), max(0, s - n + 1) - 1, -1)
        coords = [(r, s - r) for r in rng] if s % 2 == 0 else [(s - r, r) for r in rng]
        for r, c in coords:  # visits every position, as the official walk does
            out[r, c] = vec[i] if i < len(vec) else 0.0
            i += 1
    return out


COCO_VAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                        "coco_mini", "annotations", "instances_val.json")


def heldout_detections(codec, num_det: int, h: int, w: int):
    """SOLQ-like outputs for one ``h x w`` image: ``num_det`` real held-out COCO masks (coco_mini
    val; crop_resize to N, DCT-encoded) as the vectors of the top queries, their real boxes
    rescaled from their image to ``h x w`` and moved by up to ~10 % as "predicted" boxes (some
    pushed over the image border), then 200 low-scoring queries."""
    import contextlib
    import io

    import numpy as np
    import torch
    from pycocotools.coco import COCO

    from maskcodec.geometry import crop_resize

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(COCO_VAL)
    anns = [a for a in coco.loadAnns(coco.getAnnIds(iscrowd=False)) if a["area"] >= 16][:num_det]
    if len(anns) < num_det:
        raise SystemExit(f"{COCO_VAL} has only {len(anns)} usable masks, {num_det} needed")
    vectors, boxes = [], []
    g = np.random.default_rng(0)
    for a in anns:
        img = coco.imgs[a["image_id"]]
        x, y, bw, bh = a["bbox"]
        xyxy = np.array([[x, y, x + bw, y + bh]])
        vectors.append(codec.encode(crop_resize(coco.annToMask(a)[None].astype(bool), xyxy, codec.mask_size)))
        scale = np.array([w / img["width"], h / img["height"]] * 2)
        box = xyxy[0] * scale + g.normal(0, 0.05, 4) * np.repeat([bw * scale[0], bh * scale[1]], 2)
        boxes.append(box)
    vectors = torch.as_tensor(np.concatenate(vectors))
    xyxy = torch.as_tensor(np.stack(boxes), dtype=torch.float32)
    cxcywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, (xyxy[:, 2:] - xyxy[:, :2]).clamp(min=0)], 1)
    cxcywh = cxcywh / torch.tensor([w, h, w, h])
    q, c, k = 300, 80, codec.n_components
    logits = torch.full((1, q, c), -10.0)
    logits[0, torch.arange(num_det), torch.arange(num_det) % c] = torch.linspace(5, 1, num_det)
    return {"pred_logits": logits,
            "pred_boxes": torch.cat([cxcywh, torch.full((q - num_det, 4), 0.5)])[None],
            "pred_vectors": torch.cat([vectors, torch.zeros(q - num_det, k)])[None]}


def _top_k(outputs, num_det: int, h: int, w: int):
    import torch

    c = outputs["pred_logits"].shape[-1]
    scores, idx = outputs["pred_logits"].sigmoid().view(1, -1).topk(num_det, dim=1)
    query = idx[0] // c
    boxes = outputs["pred_boxes"][0, query]
    xyxy = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1) * torch.tensor([w, h, w, h])
    return scores[0], idx[0] % c, xyxy, outputs["pred_vectors"][0, query]


def _rle_str(mask):
    import numpy as np
    import pycocotools.mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def plain_loop(outputs, codec, num_det: int, h: int, w: int) -> list[dict]:
    """What a competent user writes: per mask, zigzag scatter (one fancy index), scipy ``idctn``,
    bilinear resize into the integer box (``F.interpolate``), paste, pycocotools ``encode``."""
    import numpy as np
    import scipy.fft
    import torch
    import torch.nn.functional as F

    from maskcodec.dct import zigzag_indices

    n = codec.mask_size
    zz = zigzag_indices(n, codec.n_components)
    scores, labels, xyxy, vectors = _top_k(outputs, num_det, h, w)
    out = []
    for i in range(num_det):
        coeff = np.zeros((n, n), np.float32)
        coeff[zz[:, 0], zz[:, 1]] = vectors[i].numpy()
        soft = scipy.fft.idctn(coeff, norm="ortho")
        x0, y0, x1, y1 = (int(round(v)) for v in xyxy[i].tolist())
        mask = np.zeros((h, w), np.uint8)
        if x1 > x0 and y1 > y0:
            patch = F.interpolate(torch.from_numpy(soft)[None, None], size=(y1 - y0, x1 - x0), mode="bilinear",
                                  align_corners=False)[0, 0].numpy() >= 0.5
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if cx1 > cx0 and cy1 > cy0:
                mask[cy0:cy1, cx0:cx1] = patch[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        out.append(_rle_str(mask))
    return out


def official_loop(outputs, codec, num_det: int, h: int, w: int) -> list[dict]:
    """The official code's style: Python zigzag walk over all N*N positions, ``scipy.fft.idctn``,
    per-mask bilinear ``grid_sample`` at the pixel centres of the box, paste, ``encode``."""
    import numpy as np
    import scipy.fft
    import torch
    import torch.nn.functional as F

    n = codec.mask_size
    scores, labels, xyxy, vectors = _top_k(outputs, num_det, h, w)
    out = []
    for i in range(num_det):
        m = torch.from_numpy(scipy.fft.idctn(_inverse_zigzag_python(vectors[i].numpy(), n), norm="ortho")).float()
        mask = np.zeros((h, w), np.uint8)
        bx0, by0, bx1, by1 = xyxy[i].tolist()
        ix0, iy0 = max(int(np.floor(bx0)), 0), max(int(np.floor(by0)), 0)
        ix1, iy1 = min(int(np.ceil(bx1)), w), min(int(np.ceil(by1)), h)
        if ix1 > ix0 and iy1 > iy0 and bx1 > bx0 and by1 > by0:
            ys = (torch.arange(iy0, iy1) + 0.5 - by0) / (by1 - by0) * 2 - 1
            xs = (torch.arange(ix0, ix1) + 0.5 - bx0) / (bx1 - bx0) * 2 - 1
            grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None]
            patch = F.grid_sample(m[None, None], grid, align_corners=False, padding_mode="border")[0, 0]
            inside = (grid[0].abs() <= 1).all(-1)
            mask[iy0:iy1, ix0:ix1] = ((patch >= 0.5) & inside).numpy()
        out.append(_rle_str(mask))
    return out


def mean_iou(a: list[dict], b: list[dict]) -> float:
    import numpy as np
    import pycocotools.mask as mask_util

    enc = [[{"size": r["size"], "counts": r["counts"].encode()} for r in x] for x in (a, b)]
    ious = np.diag(mask_util.iou(enc[0], enc[1], [0] * len(a)))
    areas = np.array([mask_util.area(r) for r in enc[0]]) + np.array([mask_util.area(r) for r in enc[1]])
    return float(np.where(areas == 0, 1.0, ious).mean())  # both empty: they agree


def decode_rles(rles: list[dict]):
    import pycocotools.mask as mask_util

    return mask_util.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rles]).transpose(2, 0, 1)
