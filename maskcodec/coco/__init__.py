"""COCO instance annotations -> box-relative N x N masks, streamed in bounded memory.

``iter_mask_batches`` reads polygons, uncompressed RLE and compressed RLE (crowd) and yields
``MaskBatch`` chunks. Only the box region of each annotation is ever rasterised or decoded
(polygons are rasterised with pycocotools' own integer arithmetic, re-implemented in a
compiled kernel that writes only the box region; RLEs are decoded column range by column
range), and the whole chunk is resampled to N x N by one compiled call, so a COCO-scale file
never materialises a full-image mask per annotation. The result is bit-identical to
``crop_resize(annToMask(ann), bbox, N)`` (checked in ``tests/test_coco.py``), in both sampling
modes (``sampling_ratio`` 0, the default and the official SOLQ targets, or 1).

Modules: ``instances`` (reading, shape-checking and indexing a file, for streaming or, with each
annotation checked, for a training set), ``validate`` (the one annotation check in
front of pycocotools), ``skips`` (skip reasons, ``SkipReport``), ``rasterize`` (numba kernels),
``stream`` (``MaskBatch``, ``iter_mask_batches``, ``load_masks``), ``merge`` (several files as one).
"""

from .instances import (
    INVALID_KINDS,
    CheckedInstances,
    annotation_mask,
    check_instances,
    index_instances,
    read_instances,
    read_instances_json,
    sample_annotation_files,
    segmentation_mask,
)
from .merge import MergedSet, UniqueIds, merge_files
from .skips import (
    SKIP_BAD_BOX,
    SKIP_BAD_RLE,
    SKIP_BAD_RLE_COUNTS,
    SKIP_BAD_SEGMENTATION,
    SKIP_CROWD,
    SKIP_EMPTY,
    SKIP_SHORT_POLYGON,
    SKIP_UNKNOWN_IMAGE,
    SKIP_ZERO_BOX,
    SkipReport,
)
from .stream import MaskBatch, iter_mask_batches, load_masks, reference_masks

__all__ = [
    "MaskBatch",
    "SkipReport",
    "read_instances",
    "read_instances_json",
    "check_instances",
    "CheckedInstances",
    "INVALID_KINDS",
    "index_instances",
    "segmentation_mask",
    "iter_mask_batches",
    "load_masks",
    "merge_files",
    "MergedSet",
    "UniqueIds",
    "annotation_mask",
    "reference_masks",
    "sample_annotation_files",
    "SKIP_BAD_BOX",
    "SKIP_BAD_RLE",
    "SKIP_BAD_RLE_COUNTS",
    "SKIP_BAD_SEGMENTATION",
    "SKIP_CROWD",
    "SKIP_EMPTY",
    "SKIP_SHORT_POLYGON",
    "SKIP_UNKNOWN_IMAGE",
    "SKIP_ZERO_BOX",
]
