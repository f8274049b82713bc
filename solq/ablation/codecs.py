"""The codec side of a sweep: learned codecs fitted on the training masks, and each codec's oracle AP."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Optional, Sequence

from .sweeps import AblationError, CodecSpec


def fit_codec(spec: CodecSpec, train_ann: str | os.PathLike, out_path: str | os.PathLike,
              image_ids: Optional[Sequence[int]] = None, max_masks: Optional[int] = None):
    """Fit a learned codec on the masks of the *training* annotations and save it (atomic); returns it.

    Masks: every non-crowd instance of ``train_ann`` (restricted to ``image_ids``), cropped to its
    box and resized to ``N × N`` (``maskcodec.coco.load_masks``).
    """
    from maskcodec import coco, get_codec

    with contextlib.redirect_stdout(io.StringIO()):
        batch = coco.load_masks(str(train_ann), spec.mask_size, image_ids=image_ids, max_masks=max_masks)
    if len(batch.masks) == 0:
        raise AblationError(f"no usable training masks in {train_ann} to fit the {spec.name} codec")
    codec = get_codec(spec.name, mask_size=spec.mask_size, n_components=spec.n_components)
    if len(batch.masks) < spec.n_components and spec.name == "pca":
        raise AblationError(f"PCA with n_k={spec.n_components} needs at least that many training masks; "
                            f"{train_ann} has {len(batch.masks)}: use more training images or a smaller scale")
    codec.fit(batch.masks)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    codec.save(out_path)
    return codec


def oracle_ap(spec: CodecSpec, val_ann: str | os.PathLike, train_ann: Optional[str | os.PathLike] = None,
              seed: int = 0) -> dict:
    """Oracle mask AP of a codec setting on ``val_ann`` via ``maskcodec.bench.run`` (learned codecs are
    fitted by the benchmark on ``train_ann``). Returns the bench row (``ap``, ``ap50``, ``ap75``, IoUs, ...)."""
    from maskcodec import bench

    result = bench.run(
        ann_files=[str(val_ann)],
        fit_ann_files=[str(train_ann)] if (train_ann is not None and spec.requires_fit) else None,
        codecs=[f"{spec.name}:{spec.mask_size}:{spec.n_components}"],
        sizes=[spec.mask_size], dims=[spec.n_components], progress=False, seed=seed,
    )
    if not result.rows:
        raise AblationError(f"maskcodec bench returned no row for {spec.key}: {result.meta.get('notes')}")
    row = {k: v for k, v in result.rows[0].items() if isinstance(v, (int, float, str, type(None)))}
    row["eval_masks"] = result.meta.get("eval_masks")
    row["fit_description"] = result.meta.get("fit_description")
    return row
