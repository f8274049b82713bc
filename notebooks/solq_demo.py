# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # SOLQ in a few minutes: synthetic shapes, train, predict
#
# This notebook writes a small synthetic instance-segmentation dataset (ellipses, triangles and
# rings on textured backgrounds, stored as a real COCO dataset), trains a tiny SOLQ on it on the
# CPU, and shows its predictions: a box, a class and a mask *vector* per query, the vector decoded by
# the DCT codec and pasted into the predicted box.
#
# It is a demo of the pipeline, not of accuracy: a DETR-style model needs far more training than a
# notebook affords, so expect rough masks. `SOLQ_NOTEBOOK_FAST=1` (used by the test suite) trains
# for a couple of iterations only; the default trains for a few minutes.

# %%
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from solq.config import load_config
from solq.data import write_shapes_dataset

FAST = os.environ.get("SOLQ_NOTEBOOK_FAST", "0") == "1"
WORK = Path(os.environ.get("SOLQ_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="solq_demo_"))
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
print(f"FAST={FAST}, working folder {WORK}")

# %% [markdown]
# ## 1. A synthetic shapes dataset
#
# `write_shapes_dataset` writes PNG images and COCO `instances_{train,val}.json` files; the class is
# the shape. Everything is a function of the seed.

# %%
n_train, n_val, size = (16, 4, 64) if FAST else (120, 16, 64)
paths = write_shapes_dataset(WORK / "shapes", n_images=n_train, n_val=n_val, image_size=size, max_objects=3, seed=0)
print(paths["train"].ann_file, paths["val"].ann_file)

from pycocotools.coco import COCO  # noqa: E402

with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(str(paths["val"].ann_file))
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for ax, img_id in zip(axes, sorted(gt.getImgIds())[:4]):
    info = gt.loadImgs(img_id)[0]
    ax.imshow(plt.imread(paths["val"].image_dir / info["file_name"]))
    for a in gt.loadAnns(gt.getAnnIds(imgIds=img_id)):
        m = gt.annToMask(a)
        ax.contour(m, levels=[0.5], colors="white", linewidths=1)
        ax.text(a["bbox"][0], a["bbox"][1], gt.cats[a["category_id"]]["name"], color="white", fontsize=8,
                va="bottom")
    ax.set_title(f"val image {img_id}")
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. A tiny SOLQ
#
# One feature level (C5 of a randomly initialised ResNet-18), a narrow transformer, 20 queries,
# and the DCT codec with $N = 64$, $n_k = 64$ (the paper: 128 and 256). The config system is the
# same as `solq train --config ... key=value`.

# %%
overrides = [
    "model.backbone=resnet18", "model.num_feature_levels=1", "model.d_model=64", "model.nheads=4",
    "model.num_queries=20", "model.enc_layers=1", "model.dec_layers=3", "model.dim_feedforward=128",
    "model.vector_hidden_dim=256", "model.dropout=0.0",
    "codec.name=dct", "codec.mask_size=64", "codec.n_components=64",
    f"data.train.image_dir={paths['train'].image_dir}", f"data.train.ann_file={paths['train'].ann_file}",
    f"data.val.image_dir={paths['val'].image_dir}", f"data.val.ann_file={paths['val'].ann_file}",
    f"data.scales=[{size}]", f"data.max_size={size}", "data.crop=false", "data.batch_size=4", "data.num_workers=0",
    "train.lr=4e-4", "train.lr_backbone=4e-4", "train.device=cpu", "train.log_every=10",
    f"train.epochs={1 if FAST else 10}", f"train.max_iters={2 if FAST else 'null'}", "train.eval_every=0",
    f"output_dir={WORK / 'run'}",
]
cfg = load_config(None, overrides)
print(cfg.model)

# %% [markdown]
# ## 3. Train
#
# `solq.engine.train` runs the DETR-style loop (Hungarian matching; focal, L1, GIoU and the
# mask-vector L1 loss on every decoder layer) and writes `checkpoint.pth`, `metrics.jsonl` and
# `curves.png` into `output_dir`.

# %%
from solq.engine import read_metrics, train  # noqa: E402

t = time.perf_counter()
with contextlib.redirect_stderr(io.StringIO()):  # keep the notebook free of progress bars
    out = train(cfg)
plt.switch_backend("module://matplotlib_inline.backend_inline")  # the engine saved curves.png with Agg
print(f"trained {out['global_step']} iterations in {time.perf_counter() - t:.0f} s")
records = [r for r in read_metrics(Path(cfg.output_dir) / "metrics.jsonl") if r.get("type") == "train"]
if len(records) > 1:
    plt.figure(figsize=(5, 3))
    plt.plot([r["step"] for r in records], [r["loss"] for r in records])
    plt.yscale("log")
    plt.xlabel("step")
    plt.ylabel("weighted loss")
    plt.grid(alpha=0.3)
    plt.show()

# %% [markdown]
# ## 4. Predict
#
# `solq.Predictor` loads the checkpoint (the model settings, the codec and the category ids travel
# inside it, so no config is needed) and runs images: a path, a PIL image, an (H, W, 3) uint8 array or a
# (3, H, W) tensor, or a list of them. Per image it returns the top-scoring (query, class) pairs: boxes in
# pixels, scores, dataset category ids, and the vectors decoded in one batch and pasted into the predicted
# boxes at the original image size (`masks="array"`; the default is COCO RLE).

# %%
from solq import Predictor  # noqa: E402

predictor = Predictor.from_checkpoint(Path(cfg.output_dir) / "checkpoint.pth", device="cpu")
val_images = sorted(gt.getImgIds())[:4]
files = [paths["val"].image_dir / gt.loadImgs(i)[0]["file_name"] for i in val_images]
results = predictor(files, masks="array")
print({k: (v.shape if hasattr(v, "shape") else len(v)) for k, v in results[0].items()})

# %%
names = dict(zip(predictor.category_ids, predictor.class_names))
fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.4), squeeze=False)
for ax, img_id, path, res in zip(axes[0], val_images, files, results):
    ax.imshow(plt.imread(path))
    keep = res["scores"] >= min(0.3, float(res["scores"].max()))  # at least the best detection
    colours = plt.cm.tab10(np.arange(int(keep.sum())) % 10)
    for c, score, label, box, mask in zip(colours, res["scores"][keep], res["labels"][keep], res["boxes"][keep],
                                          res["masks"][keep]):
        ax.imshow(np.ma.masked_where(~mask, mask), alpha=0.45, cmap="autumn")
        x0, y0, x1, y1 = box.tolist()
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=c, lw=1.2))
        ax.text(x0, y0, f"{names[int(label)]} {float(score):.2f}", color=c, fontsize=7, va="bottom")
    ax.set_title(f"image {img_id}: {int(keep.sum())} shown")
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. COCO metrics
#
# The same evaluation `solq eval` runs: box AP, mask AP and Boundary AP with pycocotools.

# %%
from solq.engine import run_evaluation  # noqa: E402
from solq.evaluation import format_table  # noqa: E402

with contextlib.redirect_stderr(io.StringIO()):
    metrics = run_evaluation(cfg, Path(cfg.output_dir) / "checkpoint.pth")
print(format_table(metrics))
