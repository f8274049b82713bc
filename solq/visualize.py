"""Prediction pictures: masks, boxes and labels drawn over an image with matplotlib."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from maskcodec.atomic import atomic_open


def _colours(n: int) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return np.array([cmap(i % 10)[:3] for i in range(n)], dtype=np.float32)


def overlay_masks(image: np.ndarray, masks: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend bool masks ``(K, H, W)`` into an RGB uint8 image ``(H, W, 3)``; returns uint8 ``(H, W, 3)``."""
    out = image.astype(np.float32) / 255.0
    colours = _colours(len(masks))
    for k, m in enumerate(masks):
        m = np.asarray(m, dtype=bool)
        out[m] = (1 - alpha) * out[m] + alpha * colours[k]
    return (out.clip(0, 1) * 255).round().astype(np.uint8)


def draw_predictions(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[int],
    scores: Sequence[float],
    masks: Optional[np.ndarray] = None,
    class_names: Optional[Sequence[str]] = None,
    path: Optional[str | os.PathLike] = None,
    dpi: int = 100,
):
    """Draw detections on ``image`` (RGB uint8 ``(H, W, 3)``).

    ``boxes`` ``(K, 4)`` xyxy pixels, ``labels`` ``(K,)`` contiguous labels, ``scores`` ``(K,)``,
    ``masks`` ``(K, H, W)`` bool or None. Saves a PNG at the image's resolution to ``path`` when
    given and returns the matplotlib figure.
    """
    from matplotlib.figure import Figure  # no pyplot: never switch the caller's backend
    from matplotlib.patches import Rectangle

    h, w = image.shape[:2]
    shown = overlay_masks(image, masks) if masks is not None and len(masks) else image
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(shown)
    ax.set_axis_off()
    colours = _colours(len(boxes))
    fontsize = max(5, min(10, w / 60))
    for k, (box, label, score) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), labels, scores)):
        x0, y0, x1, y1 = (float(v) for v in box)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colours[k], linewidth=1.2))
        name = class_names[int(label)] if class_names is not None and int(label) < len(class_names) else str(int(label))
        ax.text(x0, max(y0 - 2, 0), f"{name} {float(score):.2f}", fontsize=fontsize, color="white",
                va="bottom", bbox=dict(facecolor=colours[k], alpha=0.7, pad=1, edgecolor="none"))
    if path is not None:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
    return fig
