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
# # A tour of the mask codecs
#
# SOLQ predicts every instance mask as a short vector of $n_k$ numbers. The ground-truth mask is
# cropped to its box, resized to $N \times N$ and *compressed* by a codec; at inference the
# predicted vector is decoded back into an $N \times N$ soft mask and pasted into the predicted box.
# This notebook takes real COCO masks (the sample shipped with `maskcodec`: the COCO-MINI
# annotations, no images needed) through the four codecs of the paper's Table 3a:
#
# | codec | vector | fitted? |
# |---|---|---|
# | DCT | the $n_k$ lowest-frequency 2-D DCT coefficients in zigzag order | no |
# | PCA | projections on the first $n_k$ principal components of training masks | yes |
# | Sparse coding | Lasso codes over a learned dictionary of $n_k$ atoms | yes |
# | Flatten | the mask resized to $\sqrt{n_k} \times \sqrt{n_k}$ | no |
#
# Set `SOLQ_NOTEBOOK_FAST=1` for a quick run (smaller $N$, fewer masks, fewer $n_k$ values): the
# test suite does.

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import maskcodec
from maskcodec import bench, coco, geometry, metrics

FAST = os.environ.get("SOLQ_NOTEBOOK_FAST", "0") == "1"
N = 64 if FAST else 128            # mask size (the paper: 128)
K = 256                            # vector length (the paper: 256)
FIT_MASKS = 300 if FAST else None  # training masks used to fit PCA / sparse coding (None: all)
print(f"FAST={FAST}: N={N}, n_k={K}, maskcodec {maskcodec.__version__}, codecs {maskcodec.available_codecs()}")

# %% [markdown]
# ## One real COCO mask
#
# `maskcodec.coco` reads COCO instance files (polygons, RLE) and gives box-relative masks; we take a
# large object from the validation split and also rasterise it at full resolution.

# %%
files = coco.sample_annotation_files()
val = coco.read_instances(files["val"])
batch = coco.load_masks(val, N)
print(f"{len(batch)} validation masks at N={N}")
# a large object with an intricate outline: among the largest quarter, the lowest fill of its box
large = np.flatnonzero(batch.areas >= np.quantile(batch.areas, 0.75))
i = int(large[np.argmin(batch.masks[large].mean(axis=(1, 2)))])
ann = val.anns[int(batch.ann_ids[i])]
full = coco.annotation_mask(val, ann)
target = batch.masks[i]
cat = val.cats[ann["category_id"]]["name"]

fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
axes[0].imshow(full, cmap="gray")
x0, y0, x1, y1 = batch.boxes[i]
axes[0].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="tab:red", lw=1.5))
axes[0].set_title(f"annotation {ann['id']} ({cat}), {full.shape[1]}x{full.shape[0]} image")
axes[1].imshow(target, cmap="gray")
axes[1].set_title(f"cropped to its box, {N}x{N}")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Fit the learned codecs on the training split
#
# PCA and sparse coding learn their basis from training masks (never the validation masks we
# evaluate on); DCT and flatten need no fitting.

# %%
train_masks = coco.load_masks(files["train"], N, max_masks=FIT_MASKS).masks
codecs = {
    "DCT": maskcodec.get_codec("dct", mask_size=N, n_components=K),
    "PCA": maskcodec.get_codec("pca", mask_size=N, n_components=K),
    "Sparse coding": maskcodec.get_codec("sparse", mask_size=N, n_components=K),
    "Flatten 28x28": maskcodec.get_codec("flatten", mask_size=N, n_components=28 * 28),
}
for name, codec in codecs.items():
    if codec.requires_fit:
        t = time.perf_counter()
        codec.fit(train_masks)
        print(f"fitted {name} on {len(train_masks)} training masks in {time.perf_counter() - t:.1f} s")

# %% [markdown]
# ## Encode, decode, compare
#
# `encode` gives `(B, n_k)` float32 vectors, `decode` gives `(B, N, N)` *soft* masks that we
# threshold at 0.5. The IoU is measured against the $N \times N$ target.

# %%
fig, axes = plt.subplots(2, len(codecs) + 1, figsize=(3 * (len(codecs) + 1), 6.8))
axes[0, 0].imshow(target, cmap="gray")
axes[0, 0].set_title("target")
axes[1, 0].axis("off")
for col, (name, codec) in enumerate(codecs.items(), start=1):
    v = codec.encode(target[None])
    soft = codec.decode(v)[0]
    iou = float(metrics.mask_iou((soft > 0.5)[None], target[None])[0])
    axes[0, col].imshow(soft, cmap="magma", vmin=-0.2, vmax=1.2)
    axes[0, col].set_title(f"{name}\nsoft decode, n_k={v.shape[1]}")
    axes[1, col].imshow(soft > 0.5, cmap="gray")
    axes[1, col].set_title(f"thresholded: IoU {iou:.3f}", fontsize=10)
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# Pasted back into the image (`maskcodec.geometry.paste`, bilinear, threshold 0.5), the DCT
# reconstruction is compared with the full-resolution annotation:

# %%
v = codecs["DCT"].encode(target[None])
pasted = geometry.paste(codecs["DCT"].decode(v), batch.boxes[i : i + 1], full.shape)[0]
print(f"image-space IoU of the DCT reconstruction: {float(metrics.mask_iou(pasted[None], full[None])[0]):.3f}")
print(f"boundary IoU: {float(metrics.boundary_iou(pasted[None], full[None])[0]):.3f}")

# %% [markdown]
# ## Reconstruction IoU against $n_k$
#
# `maskcodec.bench.run` does this for every validation mask: encode, decode, paste into the
# original box at full resolution, and compare with the annotation (the same numbers
# `maskcodec bench` prints). Learned codecs are fitted on the training split. All $n_k$ below are
# squares so that the flatten codec ($\sqrt{n_k} \times \sqrt{n_k}$) takes part too. Sparse coding
# is left out of this sweep: fitting a dictionary per $n_k$ takes minutes on a CPU (`maskcodec bench
# --codecs sparse` runs it).

# %%
dims = (16, 64, 256) if FAST else (16, 36, 64, 144, 256, 400)
names = ("dct", "pca", "flatten")
t = time.perf_counter()
result = bench.run(codecs=names, sizes=[N], dims=dims, max_masks=150 if FAST else None, progress=False)
print(f"bench: {result.meta['eval_masks']} validation masks, {len(result.rows)} settings, "
      f"{time.perf_counter() - t:.0f} s")
print(result.table())

# %%
fig, ax = plt.subplots(figsize=(6.4, 4.2))
for name in names:
    rows = sorted((r for r in result.rows if r["codec"] == name), key=lambda r: r["n_components"])
    ax.plot([r["n_components"] for r in rows], [r["iou_img_mean"] for r in rows], marker="o", label=name)
ax.set_xscale("log", base=2)
ax.set_xlabel("n_k (vector length)")
ax.set_ylabel("mean mask IoU, image space")
ax.set_title(f"COCO-MINI val masks, N={N}")
ax.grid(alpha=0.3)
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# What to take away:
#
# * DCT needs no training and its IoU rises smoothly with $n_k$; at $n_k = 256$ most of the mask
#   energy is kept, which is why SOLQ uses it.
# * PCA is the best *reconstruction* at small $n_k$ (it is the optimal linear code for its training
#   masks), but its basis depends on the training set.
# * Flatten at $n_k = 784$ (28 × 28) is Mask R-CNN's resolution; upsampling the 28 × 28 grid blurs
#   the boundary.
# * Sparse coding's codes are a non-linear (Lasso) function of the mask: the L1 penalty shrinks
#   them, so thin parts can vanish (the bird's wings above), and a network finds them hard to
#   regress — the paper's Tab. 3a shows it far behind (11.3 AP^seg against 32.6 for DCT).
