"""Move masks between image space and box space (the public facade of ``crop`` and ``paste``).

``crop_resize`` (``maskcodec.crop``) cuts full-image masks ``(B, H, W)`` to their boxes and
resamples them to ``size x size`` (the ground-truth side of a mask codec); ``paste``
(``maskcodec.paste``) puts box-relative masks ``(B, N, N)`` back into an ``H x W`` image (the
prediction side). The argument checks they share live in ``maskcodec.box_checks``.

Boxes are float ``xyxy`` in pixel coordinates: pixel ``i`` covers ``[i, i + 1)`` and its
centre is ``i + 0.5``. Both functions sample bilinearly; ``crop_resize`` averages several samples
per cell by default (adaptive ROIAlign, ``maskcodec.roi_adaptive``), as the official SOLQ targets.
"""

from __future__ import annotations

# the private helpers are re-exported for modules (``coco.stream``) and docstrings that still
# reach them through here; new code imports them from ``crop``, ``paste`` and ``box_checks``
from .box_checks import _check_boxes as _check_boxes
from .box_checks import _check_image_size as _check_image_size
from .box_checks import _check_size as _check_size
from .box_checks import _check_threshold as _check_threshold
from .crop import _check_sampling_ratio as _check_sampling_ratio
from .crop import _crop_resize_ragged as _crop_resize_ragged
from .crop import _sample_regions as _sample_regions
from .crop import crop_resize
from .paste import _paste_axis as _paste_axis
from .paste import _paste_one as _paste_one
from .paste import paste

__all__ = ["crop_resize", "paste"]
