"""The codec benchmark behind ``maskcodec bench``: reconstruction quality, oracle AP and speed.

For every setting (codec, N, n_k) the ground-truth instance masks of one or more COCO
instances files are cropped to their boxes and resized to N x N (``geometry.crop_resize``),
encoded to n_k numbers, decoded, and compared with the target:

* ``iou_nn_mean`` / ``iou_nn_median``: mask IoU in N x N space (decode, threshold 0.5).
* ``iou_img_*``: mask IoU in image space: the decoded soft mask is pasted into the original
  box at the original image size (``geometry.paste``, threshold 0.5) and compared with the
  full-resolution mask of the annotation (``coco.annotation_mask``); mean, median and the
  mean per COCO area range (small < 32², medium < 96², large).
* ``boundary_iou_mean``: boundary IoU (Cheng et al. 2021, dilation 0.02 of the image
  diagonal) in image space.
* ``ap`` / ``ap50`` / ``ap75``: oracle mask AP. Every evaluated (non-crowd) GT mask is
  encoded, decoded, pasted and submitted with score 1 to pycocotools ``COCOeval`` (segm)
  against all GT of the evaluated images, crowd regions included: the AP a perfect
  model would reach through this codec.
* ``encode_masks_per_s`` / ``decode_masks_per_s``: median of a few timed repeats, in this run.

Learned codecs (``requires_fit``) are fitted on ``fit_ann_files`` or, without them, on a
seeded half of the evaluation images (split by image); they are always evaluated on masks
they did not see. Images of the fit files that also occur in the evaluation files are
dropped from fitting.

Instances that cannot be benchmarked (crowd regions, polygons with fewer than 3 points,
zero-area boxes, masks empty after resampling at some N, annotations of unknown images, and
images listed again in a later file with the same id, file name and size) are left out of
every setting and counted by reason in ``meta["eval_skipped"]``; all settings share one
denominator. COCOeval keeps every annotation of the evaluated images that pycocotools can
rasterise as ground truth, so a skipped but readable instance counts as a miss.

Settings are named by codec specs: ``"dct"`` runs every ``sizes x dims`` combination,
``"pca:128"`` runs N = 128 with every n_k in ``dims``, ``"pca:128:256"`` one setting.
Combinations a codec cannot represent (n_k > N², or a flatten n_k that is not a square r²
with r <= N) are skipped with a note in the report; when nothing is left, ``run`` raises.

Image-space metrics are computed inside a window around each object (its box, its GT
pixels and a margin wider than the boundary dilation), which gives exactly the
full-image values at a fraction of the cost; GT masks are computed once and reused for all
settings.

Modules: ``settings`` (codec specs -> settings, defaults), ``selection`` (which masks),
``windows`` (windowed image-space metrics), ``timing``, ``measure`` (one setting), ``runner``
(``run``), ``report`` (``BenchResult``, ``write_outputs``). Merging several COCO files lives in
``maskcodec.coco.merge``.
"""

from __future__ import annotations

import contextlib

from .report import BenchResult, write_outputs
from .runner import run
from .settings import (
    AREA_RANGES,
    DEFAULT_CODECS,
    DEFAULT_DIMS,
    DEFAULT_SIZES,
    FULL_GRID_ARGS,
    Setting,
    expand_settings,
    parse_int_list,
)
from .windows import BOUNDARY_DILATION_RATIO

# Codecs written alongside the DCT register themselves on import.
for _mod in ("pca", "sparse", "flatten"):
    with contextlib.suppress(ImportError):
        __import__(f"maskcodec.{_mod}")

__all__ = [
    "AREA_RANGES",
    "BOUNDARY_DILATION_RATIO",
    "BenchResult",
    "DEFAULT_CODECS",
    "DEFAULT_DIMS",
    "DEFAULT_SIZES",
    "FULL_GRID_ARGS",
    "Setting",
    "expand_settings",
    "parse_int_list",
    "run",
    "write_outputs",
]
