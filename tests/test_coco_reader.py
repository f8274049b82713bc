"""maskcodec.coco's one reader: shape checks, the training-set index (check_instances), segmentation_mask."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from maskcodec.coco import (
    INVALID_KINDS,
    check_instances,
    read_instances,
    read_instances_json,
    segmentation_mask,
)
from solq.image_index import ImageIndex

SQUARE = [[5, 5, 30, 5, 30, 30, 5, 30]]


def _dataset(anns, n_images=2):
    images = [{"id": i, "file_name": f"{i}.png", "height": 40, "width": 50} for i in range(1, n_images + 1)]
    return {"images": images, "annotations": anns, "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]}


def _ann(ann_id, image_id=1, **kw):
    return {"id": ann_id, "image_id": image_id, "category_id": 7, "bbox": [5, 5, 25, 25], "iscrowd": 0,
            "segmentation": SQUARE, **kw}


def test_check_instances_counts_each_kind_and_indexes_the_rest():
    anns = [_ann(1), _ann(2, image_id=99), _ann(3, category_id=42), _ann(4, bbox=[1, 2, 3]),
            _ann(5, segmentation={"size": [41, 50], "counts": [0, 2050]}),
            _ann(6, segmentation=[]),  # no polygon: kept (its box is the mask)
            {k: v for k, v in _ann(7).items() if k != "segmentation"}]  # no segmentation: kept too
    checked = check_instances(_dataset(anns), "x.json")
    assert checked.invalid_counts() == dict.fromkeys(INVALID_KINDS, 1)
    assert [a["id"] for a in checked.coco.imgToAnns[1]] == [1, 6, 7]
    assert sorted(checked.coco.imgs) == [1, 2] and checked.skipped_annotations == 0
    line = checked.describe_invalid("x.json")
    assert line.startswith("x.json: 4 invalid annotations: 1 with unknown image id (e.g. annotation 2 -> 99)")
    assert "1 with bad segmentation (e.g. annotation 5 -> 'RLE size differs" in line


def test_check_instances_skips_images_with_all_their_annotations():
    anns = [_ann(1), _ann(2, image_id=2), _ann(3, image_id=2, bbox=None)]
    checked = check_instances(_dataset(anns), "x.json", skip_images={2})
    assert sorted(checked.coco.imgs) == [1] and checked.skipped_annotations == 2
    assert checked.invalid_counts() == {}  # a bad annotation of a skipped image is not reported twice


def test_check_instances_ids_and_malformed_annotations():
    no_id = {k: v for k, v in _ann(0).items() if k != "id"}
    checked = check_instances(_dataset([_ann(4), no_id]), "x.json")
    assert sorted(checked.coco.anns) == [4, 5]  # a fresh id for pycocotools' index
    with pytest.raises(ValueError, match="x.json: duplicate annotation id 4"):
        check_instances(_dataset([_ann(4), _ann(4)]), "x.json")
    with pytest.raises(ValueError, match="annotations must be objects"):
        check_instances(_dataset([_ann(4), [1, 2]]), "x.json")


def test_shape_messages_are_shared(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"image_id": 1, "score": 0.5}]))
    for read in (read_instances, read_instances_json):
        with pytest.raises(ValueError, match="not a COCO instances file.*'images' list"):
            read(path)
    data = _dataset([_ann(1)])
    path.write_text(json.dumps(dict(data, images=data["images"] + data["images"][:1])))
    for read in (read_instances, read_instances_json):
        with pytest.raises(ValueError, match="duplicate image id 1"):
            read(path)
    path.write_text(json.dumps(dict(data, images=[{"id": 1, "height": 40, "width": 50}])))
    read_instances(path)  # streaming masks needs no file names
    with pytest.raises(ValueError, match="lacks a valid file_name"):
        read_instances_json(path, file_names=True)
    path.write_text(json.dumps(dict(data, categories=[{"id": "a"}])))
    with pytest.raises(ValueError, match="every category needs an integer 'id'"):
        read_instances_json(path, categories=True)
    path.write_text(json.dumps({"images": data["images"]}))  # an image listing (image_info_test*.json)
    assert len(read_instances_json(path)["images"]) == 2
    with pytest.raises(ValueError, match="missing key.*'annotations'"):
        read_instances(path)
    assert ImageIndex(path).ids([tmp_path / "2.png"]) == [2]


def test_segmentation_mask_matches_pycocotools():
    mask = np.zeros((40, 50), dtype=np.uint8)
    mask[5:25, 8:20] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    compressed = {"size": [40, 50], "counts": rle["counts"].decode("ascii")}
    assert np.array_equal(segmentation_mask(compressed, 40, 50), mask.astype(bool))
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(SQUARE, 40, 50))).astype(bool)
    assert np.array_equal(segmentation_mask(SQUARE + [[1, 2, 3, 4]], 40, 50), expected)
    assert segmentation_mask([], 40, 50) is None and segmentation_mask(None, 40, 50) is None
    with pytest.raises(ValueError, match="RLE size"):
        segmentation_mask(compressed, 41, 50)
