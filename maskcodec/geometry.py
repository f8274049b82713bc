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

from .crop import crop_resize
from .paste import paste

__all__ = ["crop_resize", "paste"]
