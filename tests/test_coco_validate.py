"""maskcodec.coco_validate: the one annotation check in front of pycocotools."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from maskcodec.coco import SkipReport, read_instances
from maskcodec.coco.validate import (
    BAD_COORDINATES,
    BAD_RLE_COUNTS,
    BAD_RLE_SIZE,
    BAD_SEGMENTATION,
    NO_SEGMENTATION,
    annotation_problem,
    rle_counts,
    valid_ground_truth,
)

SQUARE = [5, 5, 30, 5, 30, 30, 5, 30]


def _ann(segm, bbox=(5, 5, 25, 25), **kw):
    return {"id": 1, "image_id": 1, "category_id": 1, "bbox": list(bbox), "segmentation": segm, **kw}


def test_good_annotations_pass():
    assert annotation_problem(_ann([SQUARE]), 40, 50) is None
    rle = mask_utils.encode(np.asfortranarray(np.ones((40, 50), np.uint8)))
    assert annotation_problem(_ann({"size": [40, 50], "counts": rle["counts"].decode()}), 40, 50) is None
    assert annotation_problem(_ann({"size": [40, 50], "counts": [0, 2000]}), 40, 50) is None


@pytest.mark.parametrize("segm, reason", [
    ([[5, 5, 1e9, 5, 1e9, 1e9]], BAD_COORDINATES),       # segfaults pycocotools
    ([[5, 5, float("nan"), 5, 20, 20]], BAD_COORDINATES),  # segfaults pycocotools
    ([[5, 5, "x", 5, 20, 20]], BAD_COORDINATES),
    ([], NO_SEGMENTATION),                                # IndexError inside COCOeval
    ([[1, 2, 3, 4]], NO_SEGMENTATION),
    ({"size": [40, 50], "counts": "zzzzzzzzzzzzzzzzzzzz"}, BAD_SEGMENTATION),  # COCOeval ran for hours
    ({"size": [40, 50], "counts": "1234"}, BAD_RLE_COUNTS),
    ({"size": [40, 50], "counts": [-5, 2005]}, BAD_RLE_COUNTS),
    ({"size": [40, 50], "counts": [0, 10]}, BAD_RLE_COUNTS),
    ({"size": [41, 50], "counts": [0, 2050]}, BAD_RLE_SIZE),
    ({"size": [40, 50], "counts": "é"}, BAD_SEGMENTATION),
    ({"size": [40, 50], "counts": "0"}, BAD_RLE_COUNTS),  # a run cut short
    ("polygon", BAD_SEGMENTATION),
])
def test_bad_segmentations_are_named(segm, reason):
    assert annotation_problem(_ann(segm), 40, 50) == reason


def test_truncated_counts_string_is_not_read_past_its_end():
    with pytest.raises(ValueError, match="do not sum"):
        rle_counts({"size": [40, 50], "counts": "P"}, 40, 50)  # continuation bit set on the last byte


def test_valid_ground_truth_drops_bad_and_boxes_empty():
    dataset = {
        "images": [{"id": 1, "height": 40, "width": 50}],
        "categories": [{"id": 1}],
        "annotations": [
            {**_ann([SQUARE]), "id": 1},
            {**_ann([[5, 5, 1e9, 5, 1e9, 1e9]]), "id": 2},
            {**_ann([]), "id": 3},
            {**_ann({"size": [40, 50], "counts": "zzzz"}, iscrowd=1), "id": 4},
        ],
    }
    coco = read_instances(dataset)
    report = SkipReport()
    gt = valid_ground_truth(coco, report=report)
    assert sorted(gt.anns) == [1, 3]
    assert gt.anns[3]["segmentation"] == [[5.0, 5.0, 30.0, 5.0, 30.0, 30.0, 5.0, 30.0]]
    assert gt.anns[1]["iscrowd"] == 0 and gt.anns[1]["area"] > 0  # COCOeval's fields filled in
    assert report.counts == {BAD_COORDINATES: 1, BAD_SEGMENTATION: 1}
    strict = valid_ground_truth(coco, box_if_empty=False)
    assert sorted(strict.anns) == [1]
    clean = read_instances({**dataset, "annotations": [{**_ann([SQUARE]), "area": 1.0, "iscrowd": 0}]})
    assert valid_ground_truth(clean) is clean
