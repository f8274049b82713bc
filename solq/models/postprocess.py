"""From SOLQ outputs to scored boxes and masks (full-image or COCO RLE), and to COCO result dicts.

Per image: the top ``num_select`` (query, class) pairs by sigmoid score over the flattened Q × C
scores (score = class probability, no NMS); boxes cxcywh → xyxy pixels of the original image;
the selected queries' vectors are decoded by the codec *in one batch on the model's device*,
then either pasted into the predicted boxes at the original resolution and thresholded
(``output="masks"``: ``maskcodec.geometry.paste``, (K, H, W) bool) or written box by box
straight into COCO RLE (``output="rle"``: ``maskcodec.box_rle.paste_rle``, the same RLEs as
encoding the pasted masks, without building them).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from torchvision.ops import box_convert

from maskcodec.base import MaskCodec
from maskcodec.box_rle import paste_rle
from maskcodec.geometry import paste

OUTPUTS = ("masks", "rle")


class PostProcess:
    """Callable: ``(outputs, orig_sizes (B, 2) = (H, W)) -> list of B dicts`` with
    "scores" (K,) float, "labels" (K,) int64 (contiguous), "boxes" (K, 4) xyxy pixels and, when the
    outputs have "pred_vectors" and a codec is given, "masks" (K, H, W) bool (``output="masks"``)
    or "rles", a list of K COCO RLE dicts with str counts (``output="rle"``); K = min(num_select, Q·C).

    Args:
        codec: a codec whose ``decode`` accepts torch tensors (any maskcodec codec); None for boxes only.
        num_select: detections kept per image (100 for COCO).
        mask_threshold: binarisation threshold of the pasted soft masks.
        output: "masks" (full-image bool masks) or "rle" (COCO RLEs, box by box; for evaluation).

    Non-finite logits or boxes raise ``ValueError``; boxes of zero area give empty masks.
    """

    def __init__(self, codec: Any = None, num_select: int = 100, mask_threshold: float = 0.5,
                 output: str = "masks"):
        if not isinstance(num_select, int) or num_select < 1:
            raise ValueError(f"num_select must be a positive integer, got {num_select!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.codec = codec
        self.num_select = num_select
        self.mask_threshold = mask_threshold
        self.output = output

    @torch.no_grad()
    def __call__(self, outputs: Mapping[str, torch.Tensor], orig_sizes) -> list[dict[str, torch.Tensor]]:
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        b, q, c = logits.shape
        orig_sizes = torch.as_tensor(orig_sizes, device=logits.device)
        if orig_sizes.shape != (b, 2):
            raise ValueError(f"orig_sizes must have shape (B, 2) = ({b}, 2) of (H, W), got {tuple(orig_sizes.shape)}")
        if not (_all_finite(logits) and _all_finite(boxes)):
            raise ValueError("pred_logits or pred_boxes contain NaN or infinite values (a diverged model or "
                             "corrupt weights?); no detections can be ranked or placed")
        k = min(self.num_select, q * c)
        scores, flat = logits.sigmoid().flatten(1).topk(k, dim=1)  # (B, K)
        query = torch.div(flat, c, rounding_mode="floor")
        labels = flat % c
        xyxy = box_convert(boxes, "cxcywh", "xyxy").gather(1, query[..., None].expand(-1, -1, 4))
        h, w = orig_sizes.to(xyxy.dtype).unbind(1)
        xyxy = xyxy * torch.stack([w, h, w, h], 1)[:, None, :]
        results = [{"scores": scores[i], "labels": labels[i], "boxes": xyxy[i]} for i in range(b)]

        vectors = outputs.get("pred_vectors")
        if self.codec is None or vectors is None:
            return results
        n_k = vectors.shape[-1]
        if n_k != self.codec.n_components:
            raise ValueError(f"pred_vectors have {n_k} numbers but the codec has n_components="
                             f"{self.codec.n_components}; use the codec the model was trained with")
        rows = (query + q * torch.arange(b, device=query.device)[:, None]).flatten()  # (B*K,) rows of (B*Q, n_k)
        selected = vectors.reshape(b * q, n_k).index_select(0, rows)
        soft = _decode(self.codec, selected.float().contiguous())  # (B*K, N, N), one batch
        soft = soft.view(b, k, *soft.shape[-2:])
        for i, res in enumerate(results):
            size = (int(orig_sizes[i, 0]), int(orig_sizes[i, 1]))
            if self.output == "rle":
                res["rles"] = paste_rle(soft[i], res["boxes"].float().contiguous(), size,
                                        threshold=self.mask_threshold)
            else:
                res["masks"] = paste(soft[i], res["boxes"].float().contiguous(), size, threshold=self.mask_threshold)
        return results


def _decode(codec: Any, vectors: torch.Tensor) -> torch.Tensor:
    """(M, n_k) float32 -> (M, N, N) soft masks, in one batch on ``vectors``' device. On the CPU a
    maskcodec codec decodes the numpy view with its numba kernels (for 100 DCT vectors, one thread: as fast
    as its torch GEMMs or faster, see the stage table of ``benchmarks/results_model_speed.md``); other codecs
    and devices get the tensor."""
    if vectors.device.type == "cpu" and isinstance(codec, MaskCodec):
        return torch.from_numpy(codec.decode(vectors.numpy()))
    return codec.decode(vectors)


def _all_finite(x: torch.Tensor) -> bool:
    """No NaN or inf in ``x``: a finite sum proves it (NaN and inf propagate); otherwise check each value
    (a sum can overflow)."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def encode_rle(masks) -> list[dict]:
    """(K, H, W) bool masks (numpy or torch) -> K COCO RLEs with ``counts`` as str."""
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (K, H, W), got {masks.shape}")
    if masks.shape[0] == 0:
        return []
    masks = masks.view(np.uint8) if masks.dtype == np.bool_ else (masks != 0).view(np.uint8)
    # (K, W, H) C-ordered == (H, W, K) Fortran-ordered: one transposing copy, no second copy
    fortran = np.ascontiguousarray(masks.transpose(0, 2, 1)).transpose(2, 1, 0)
    rles = mask_util.encode(fortran)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def results_to_coco(results: Sequence[Mapping[str, torch.Tensor]], image_ids: Sequence[int],
                    category_ids: Sequence[int] | None = None) -> list[dict]:
    """PostProcess results -> COCO result dicts (``image_id``, ``category_id``, ``bbox`` xywh,
    ``score`` and, when masks or RLEs are present, ``segmentation`` RLE with str counts: "rles" are
    used as they are, "masks" (K, H, W) are encoded with pycocotools).

    ``category_ids[label]`` maps contiguous labels to dataset category ids (None: identity).
    """
    if len(results) != len(image_ids):
        raise ValueError(f"got {len(results)} results but {len(image_ids)} image_ids")
    out = []
    for res, image_id in zip(results, image_ids):
        scores = res["scores"].tolist()
        labels = res["labels"].tolist()
        if category_ids is not None:
            if labels and max(labels) >= len(category_ids):
                raise ValueError(f"label {max(labels)} has no entry in category_ids (length {len(category_ids)})")
            cats = [int(category_ids[l]) for l in labels]
        else:
            cats = [int(l) for l in labels]
        xywh = box_convert(res["boxes"].float(), "xyxy", "xywh").tolist()
        rles = res.get("rles")
        if rles is None and "masks" in res:
            rles = encode_rle(res["masks"])
        if rles is not None and len(rles) != len(scores):
            raise ValueError(f"got {len(rles)} RLEs for {len(scores)} detections")
        for j in range(len(scores)):
            det = {"image_id": int(image_id), "category_id": cats[j], "bbox": xywh[j], "score": float(scores[j])}
            if rles is not None:
                det["segmentation"] = rles[j]
            out.append(det)
    return out
