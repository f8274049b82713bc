"""Data for solq: COCO-format datasets, synthetic shapes, v2 transforms, target encoding, batching, data order."""

from .coco import CocoInstances
from .collate import Batch, collate
from .images import load_rgb
from .sampler import ResumableBatchSampler, SeededDataset
from .synthetic import write_shapes_dataset
from .targets import build_target, encode_masks, normalize_boxes
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomShortestSize,
    RandomSizeCrop,
    ToNormalizedFloat,
    make_transforms,
)
from .via import via_to_coco, write_coco

__all__ = [
    "Batch",
    "CocoInstances",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RandomShortestSize",
    "ResumableBatchSampler",
    "RandomSizeCrop",
    "SeededDataset",
    "ToNormalizedFloat",
    "build_target",
    "collate",
    "encode_masks",
    "load_rgb",
    "make_transforms",
    "normalize_boxes",
    "via_to_coco",
    "write_coco",
    "write_shapes_dataset",
]
