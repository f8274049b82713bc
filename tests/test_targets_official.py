"""SOLQ training targets equal the official ones: roi_align(sampling_ratio=0, aligned=True) >= 0.5 -> DCT."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.fft

import maskcodec
from maskcodec.dct import zigzag_indices
from solq.config import ConfigError, load_config
from solq.data.targets import build_target

torch = pytest.importorskip("torch")
roi_align = pytest.importorskip("torchvision.ops").roi_align

ANN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco128" / "annotations" / "instances_train.json"


def _official_vectors(masks: torch.Tensor, boxes: torch.Tensor, n: int, n_k: int) -> np.ndarray:
    """detectron2 BitMasks.crop_and_resize (ROIAlign sampling_ratio=0, aligned) -> >= 0.5 -> ortho DCT, zigzag."""
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes.float()], 1)
    crops = roi_align(masks[:, None].float(), rois, n, 1.0, 0, True)[:, 0] >= 0.5
    zz = np.asarray(zigzag_indices(n, n_k))
    coeffs = scipy.fft.dctn(crops.numpy().astype(np.float64), axes=(1, 2), norm="ortho")
    return coeffs[:, zz[:, 0], zz[:, 1]].astype(np.float32)


def test_targets_equal_official_on_coco128_at_training_scale():
    if not ANN.exists():
        pytest.skip(f"shared data not available: {ANN}")
    from maskcodec.coco import annotation_mask, read_instances

    coco = read_instances(ANN)
    codec = maskcodec.get_codec("dct", mask_size=128, n_components=256)
    checked = larger = 0
    for img_id in sorted(coco.imgs)[:4]:
        anns = [a for a in coco.imgToAnns[img_id] if not a["iscrowd"]]
        if not anns:
            continue
        h, w = coco.imgs[img_id]["height"], coco.imgs[img_id]["width"]
        scale = 800 / min(h, w)  # the training scale: short side 800
        nh, nw = round(h * scale), round(w * scale)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            full = torch.from_numpy(np.stack([annotation_mask(coco, a) for a in anns]))
        masks = torch.nn.functional.interpolate(full[:, None].float(), size=(nh, nw), mode="nearest")[:, 0] > 0
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1) * torch.tensor([nw / w, nh / h] * 2)
        target = build_target(boxes=boxes, labels=torch.zeros(len(anns)), image_id=img_id, orig_size=(h, w),
                              size=(nh, nw), masks=masks, codec=codec)
        official = _official_vectors(masks, boxes, 128, 256)
        np.testing.assert_allclose(target["mask_vectors"].numpy(), official, rtol=0, atol=2e-5)
        one = build_target(boxes=boxes, labels=torch.zeros(len(anns)), image_id=img_id, orig_size=(h, w),
                           size=(nh, nw), masks=masks, codec=codec, sampling_ratio=1)["mask_vectors"]
        big = ((boxes[:, 2:] - boxes[:, :2]) > 128).any(1).numpy()
        larger += int(big.sum())
        if big.any():  # one sample per cell gives other vectors on boxes larger than N
            assert np.abs(one.numpy() - official)[big].max() > 1e-3
        checked += len(anns)
    assert checked >= 10 and larger >= 3


def test_config_sampling_ratio_key(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("codec:\n  sampling_ratio: 1\n")
    assert load_config(cfg_file).codec.sampling_ratio == 1
    cfg_file.write_text("codec:\n  sampling_ratio: 2\n")
    with pytest.raises(ConfigError, match="sampling_ratio"):
        load_config(cfg_file)
