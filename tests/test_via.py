"""VIA -> COCO conversion, checked against the derived balloon json in shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from solq.data import CocoInstances, via_to_coco, write_coco

BALLOON = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "balloon"


@pytest.mark.parametrize("split", ["train", "val"])
def test_balloon_matches_the_derived_coco_json(split):
    via = BALLOON / split / "via_region_data.json"
    if not via.is_file():
        pytest.skip("shared data balloon not found")
    coco = via_to_coco(via, BALLOON / split, category_name="balloon")
    ref = json.loads((BALLOON / "annotations" / f"instances_{split}.json").read_text())
    assert len(coco["images"]) == len(ref["images"]) and len(coco["annotations"]) == len(ref["annotations"])
    assert [c["name"] for c in coco["categories"]] == ["balloon"]
    ours = {im["file_name"]: im for im in coco["images"]}
    for im in ref["images"]:
        assert (ours[im["file_name"]]["height"], ours[im["file_name"]]["width"]) == (im["height"], im["width"])
    name_of = {im["id"]: im["file_name"] for im in coco["images"]}
    ref_name_of = {im["id"]: im["file_name"] for im in ref["images"]}

    def boxes_by_file(anns, names):
        out: dict[str, list] = {}
        for a in anns:
            out.setdefault(names[a["image_id"]], []).append(a["bbox"])
        return {k: np.array(sorted(v)) for k, v in out.items()}

    a, b = boxes_by_file(coco["annotations"], name_of), boxes_by_file(ref["annotations"], ref_name_of)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape
        assert np.abs(a[name] - b[name]).max() <= 1.0
    areas = np.array([x["area"] for x in coco["annotations"]])
    ref_areas = np.array([x["area"] for x in ref["annotations"]])
    assert np.allclose(np.sort(areas), np.sort(ref_areas), rtol=0.01)


def test_write_coco_is_atomic_and_loadable(tmp_path):
    via = BALLOON / "val" / "via_region_data.json"
    if not via.is_file():
        pytest.skip("shared data balloon not found")
    out = write_coco(via_to_coco(via), tmp_path / "ann" / "instances_val.json")
    assert out.is_file() and [p.name for p in out.parent.iterdir()] == ["instances_val.json"]
    ds = CocoInstances(BALLOON / "val", out)
    assert len(ds) == 13 and ds.stats["annotations"] == 50 and ds.num_classes == 1


def _tiny_via(tmp_path: Path, regions, version2: bool = False, name: str = "a.png") -> Path:
    Image.new("RGB", (40, 30)).save(tmp_path / name)
    entry = {"filename": name, "size": 123, "regions": regions, "file_attributes": {}}
    data = {f"{name}123": entry}
    if version2:
        data = {"_via_settings": {}, "_via_img_metadata": data}
    path = tmp_path / "via.json"
    path.write_text(json.dumps(data))
    return path


def test_other_shapes_list_regions_and_via2(tmp_path):
    regions = [
        {"shape_attributes": {"name": "rect", "x": 2, "y": 3, "width": 10, "height": 5}, "region_attributes": {"kind": "box"}},
        {"shape_attributes": {"name": "circle", "cx": 20, "cy": 15, "r": 6}, "region_attributes": {"kind": {"disc": True}}},
        {"shape_attributes": {"name": "ellipse", "cx": 30, "cy": 10, "rx": 5, "ry": 3}, "region_attributes": {"kind": "disc"}},
    ]
    coco = via_to_coco(_tiny_via(tmp_path, regions, version2=True), category_attribute="kind", pixel_offset=0.0)
    assert coco["images"] == [{"id": 1, "file_name": "a.png", "height": 30, "width": 40}]
    assert [c["name"] for c in coco["categories"]] == ["box", "disc"]
    rect, circle, ellipse = coco["annotations"]
    assert rect["bbox"] == [2.0, 3.0, 10.0, 5.0] and rect["area"] == 50.0 and rect["category_id"] == 1
    assert circle["category_id"] == ellipse["category_id"] == 2
    assert abs(circle["area"] - np.pi * 36) < 8
    assert np.allclose(circle["bbox"], [14, 9, 12, 12], atol=1)


def test_bad_via_inputs(tmp_path):
    with pytest.raises(ValueError, match="unsupported VIA region shape 'point'"):
        via_to_coco(_tiny_via(tmp_path, {"0": {"shape_attributes": {"name": "point", "cx": 1, "cy": 1}}}))
    with pytest.raises(ValueError, match="malformed 'polygon'"):
        via_to_coco(_tiny_via(tmp_path, {"0": {"shape_attributes": {"name": "polygon", "all_points_x": [1, 2, 3]}}}))
    with pytest.raises(ValueError, match="at least 3 points"):
        via_to_coco(_tiny_via(tmp_path, [{"shape_attributes": {"name": "polygon", "all_points_x": [1, 2],
                                                               "all_points_y": [1, 2]}}]))
    path = _tiny_via(tmp_path, [])
    (tmp_path / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match="a.png"):
        via_to_coco(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        via_to_coco(path)
    path.write_text(json.dumps({"x": 1}))
    with pytest.raises(ValueError, match="not a VIA region file"):
        via_to_coco(path)
    with pytest.raises(FileNotFoundError):
        via_to_coco(tmp_path / "missing.json")
