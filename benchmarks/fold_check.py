"""The fold that issue 14 hints at, measured: DCT decode and bilinear resize into each box as ``B_h C B_w^T``.

For every box, ``B_h = R_h A_k^T`` (h x Kr) and ``B_w = R_w A_k^T`` (w x Kc) hold the bilinear rows of
``maskcodec.paste`` (same source indices and weights, ``paste._paste_axis``) times the DCT basis, and the
box's soft pixels are ``B_h C B_w^T`` in float64 with numpy (two small GEMMs per box), thresholded.
Compared with the exact path (``codec.decode`` in float32, then ``box_rle._paste_runs``): process CPU time,
and the pixels where the two disagree, on the benchmark's held-out detections and on random queries
(an untrained model's: many soft values near the threshold). Run through ``model_speed.py``.
"""

from __future__ import annotations

import time


def _fold_tiles(vectors, boxes, codec, height: int, width: int) -> list:
    """Per box ``(ya, xa, tile)`` (the thresholded pixels whose centre lies in the box) or None."""
    import numpy as np

    from maskcodec.dct_basis import dct_matrix, zigzag_indices
    from maskcodec.paste import _paste_axis

    n = codec.mask_size
    zz = zigzag_indices(n, codec.n_components)
    kr, kc = int(zz[:, 0].max()) + 1, int(zz[:, 1].max()) + 1
    basis = dct_matrix(n)
    tiles = []
    for vec, (x0, y0, x1, y1) in zip(vectors, boxes):
        if not (x1 > x0 and y1 > y0):
            tiles.append(None)
            continue
        xa, _, u0, u1, lu = _paste_axis(x0, x1, width, n)
        ya, _, v0, v1, lv = _paste_axis(y0, y1, height, n)
        spectrum = np.zeros((kr, kc))
        spectrum[zz[:, 0], zz[:, 1]] = vec
        wv = np.maximum(lv, 0.0)[:, None]
        wu = np.maximum(lu, 0.0)[:, None]
        b_h = (1 - wv) * basis[:kr, v0].T + wv * basis[:kr, v1].T
        b_w = (1 - wu) * basis[:kc, u0].T + wu * basis[:kc, u1].T
        tile = (b_h @ spectrum) @ b_w.T >= 0.5
        tile[lv < 0] = False  # centres outside the box by rounding, as paste
        tile[:, lu < 0] = False
        tiles.append((ya, xa, tile))
    return tiles


def _differing_pixels(tiles, masks) -> tuple[int, int]:
    """Pixels where the fold's tiles and the reference masks (B, H, W) disagree, and the tiles' pixels."""
    import numpy as np

    differ = pixels = 0
    for tile, mask in zip(tiles, masks):
        full = np.zeros(mask.shape, dtype=bool)
        if tile is not None:
            ya, xa, t = tile
            full[ya:ya + t.shape[0], xa:xa + t.shape[1]] = t
            pixels += t.size
        differ += int((full != mask).sum())
    return differ, pixels


def fold_check(outputs, codec, num_det: int, height: int, width: int, repeats: int = 7, random_images: int = 5) -> dict:
    """CPU ms of the float64 fold and of the exact path on ``outputs``' top queries (``num_det`` of them, boxes
    as ``PostProcess`` gives them), and the pixels where the fold differs from ``paste`` (held-out
    detections; ``random_images`` images of random queries)."""
    import numpy as np
    import torch

    from maskcodec.box_rle import _paste_runs
    from maskcodec.paste import paste
    from solq.models import PostProcess

    boxes32 = PostProcess(None, num_select=num_det)(outputs, torch.tensor([[height, width]]))[0]["boxes"].float().numpy()
    boxes = boxes32.astype(np.float64)
    vectors = outputs["pred_vectors"][0, :num_det].float()  # the benchmark's top queries are 0..num_det-1

    def exact():
        return _paste_runs(codec.decode(vectors).numpy(), boxes, height, width, 0.5)

    def fold():
        return _fold_tiles(vectors.double().numpy(), boxes, codec, height, width)

    exact(), fold()
    cpu = {"fold": [], "exact": []}
    for _ in range(repeats):
        for name, fn in (("fold", fold), ("exact", exact)):
            c = time.process_time()
            fn()
            cpu[name].append(time.process_time() - c)
    held_out = _differing_pixels(fold(), paste(codec.decode(vectors).numpy(), boxes32, (height, width), threshold=0.5))
    g = torch.Generator().manual_seed(0)
    random = [0, 0]
    for _ in range(random_images):
        vec = torch.randn(num_det, codec.n_components, generator=g) * 2
        vec[:, 0] += 40  # blobs of soft values, like the byte-identity test's random queries
        cxcywh = torch.rand(num_det, 4, generator=g) * torch.tensor([1.0, 1.0, 0.6, 0.6])
        xyxy = (torch.cat([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1)
                * torch.tensor([width, height, width, height])).numpy()
        masks = paste(codec.decode(vec).numpy(), xyxy, (height, width), threshold=0.5)
        d, p = _differing_pixels(_fold_tiles(vec.double().numpy(), xyxy.astype(np.float64), codec, height, width), masks)
        random[0] += d
        random[1] += p
    return {"fold_ms": float(np.median(cpu["fold"]) * 1e3), "exact_ms": float(np.median(cpu["exact"]) * 1e3),
            "held_out": held_out, "random": tuple(random), "random_images": random_images}
