"""Speed of the COCO -> codec-vector path, and of pasting decoded masks back into images.

Two pipelines turn the same COCO annotations into 128 x 128 box-relative masks and 256 DCT
coefficients:

* baseline (per mask): pycocotools ``annToMask`` on the full image -> crop of that one mask ->
  ``scipy.fft.dctn(norm="ortho")`` -> zigzag selection. The crop is
  ``torchvision.ops.roi_align(sampling_ratio=0, aligned=True) >= 0.5`` for the adaptive sampling
  (the official SOLQ targets, maskcodec's default) and ``crop_resize(sampling_ratio=1)`` for one
  sample per cell;
* ours: ``maskcodec.coco.iter_mask_batches`` (decodes only each box region, resamples a whole
  chunk in one compiled call) -> ``get_codec("dct", mask_size=128, n_components=256).encode``.

Both run in the same process on the same annotations, both samplings in turn; the script checks
that they produce the same masks (mean IoU) and the same vectors, and prints masks/s and the
ratios. Further sections: solq's target pipeline (``solq.data.targets.encode_masks``) at the
training scale with both samplings and the official ``roi_align`` recipe; peak memory streaming
up to 100k annotations (``coco_path_memory.py``); ``maskcodec.geometry.paste`` for 100 detections
into a 480 x 640 image.

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/coco_path_speed.py --output benchmarks/results_coco_path.md
    .venv/bin/python benchmarks/coco_path_speed.py --annotations a.json b.json --output out.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.fft

import maskcodec
from maskcodec.coco import annotation_mask, iter_mask_batches, read_instances, sample_annotation_files
from maskcodec.dct import zigzag_indices
from maskcodec.geometry import crop_resize, paste
from maskcodec.metrics import mask_iou

sys.path.insert(0, str(Path(__file__).resolve().parent))
from coco_path_memory import memory_lines, memory_section  # noqa: E402

#: How the results file is made (the run's own arguments follow): one thread, so ratios are per core.
COMMAND = "NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/coco_path_speed.py"
COCO128 = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128" / "annotations" / "instances_train.json"
#: The results file keeps what follows this line (notes measured by the tests and by ``maskcodec bench``).
NOTES_MARKER = "<!-- notes: kept by coco_path_speed.py --output -->"


def baseline(coco, anns, mask_size, zz, sampling_ratio):
    """Per-mask reference pipeline; returns (masks (b, N, N) bool, vectors (b, K) float32)."""
    import torch
    from torchvision.ops import roi_align

    masks = np.zeros((len(anns), mask_size, mask_size), dtype=bool)
    vectors = np.zeros((len(anns), len(zz)), dtype=np.float32)
    for i, ann in enumerate(anns):
        full = annotation_mask(coco, ann)
        x, y, w, h = ann["bbox"]
        box = np.array([[x, y, x + w, y + h]])
        if sampling_ratio == 0:
            rois = torch.cat([torch.zeros(1, 1), torch.from_numpy(box).float()], 1)
            soft = roi_align(torch.from_numpy(full)[None, None].float(), rois, mask_size, 1.0, 0, True)
            crop = soft[0, 0].numpy() >= 0.5
        else:
            crop = crop_resize(full[None], box, mask_size, sampling_ratio=1)[0]
        coeffs = scipy.fft.dctn(crop.astype(np.float32), norm="ortho")
        masks[i] = crop
        vectors[i] = coeffs[zz[:, 0], zz[:, 1]]
    return masks, vectors


def ours(coco, mask_size, codec, batch_size, sampling_ratio):
    masks, vectors, ids = [], [], []
    for batch in iter_mask_batches(coco, mask_size, batch_size=batch_size, include_crowd=True,
                                   sampling_ratio=sampling_ratio):
        vectors.append(codec.encode(batch.masks))
        masks.append(batch.masks)
        ids.append(batch.ann_ids)
    return np.concatenate(masks), np.concatenate(vectors), np.concatenate(ids)


def timed(fn):
    """(wall seconds, CPU seconds of the process, result) of one call: both clocks on the same call."""
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - w, time.process_time() - c, result


def alternate(fns, repeats):
    """Best wall and best CPU time of each of ``fns`` (a dict), run in turn ``repeats`` times.

    The order rotates every repeat, so a change of load on a shared machine hits every entry alike.
    Returns {key: (best wall, best CPU, last result)}.
    """
    keys = list(fns)
    best = {k: [np.inf, np.inf, None] for k in keys}
    for rep in range(repeats):
        for k in keys[rep % len(keys):] + keys[: rep % len(keys)]:
            w, c, result = timed(fns[k])
            best[k] = [min(best[k][0], w), min(best[k][1], c), result]
    return {k: tuple(v) for k, v in best.items()}


def coco_section(paths, mask_size, n_components, batch_size, repeats, ratios):
    """Ours and the per-mask baseline for every sampling in ``ratios``, alternated on each file.

    Returns {sampling: (rows, total row, mean IoU)}.
    """
    codec = maskcodec.get_codec("dct", mask_size=mask_size, n_components=n_components)
    zz = np.asarray(zigzag_indices(mask_size, n_components))
    # warm-up: numba kernels (cached on disk after the first run) and the codec plan
    warm = read_instances(paths[0])
    for sr in ratios:
        ours(warm, mask_size, codec, batch_size, sr)
        baseline(warm, warm.dataset["annotations"][:2], mask_size, zz, sr)
    acc = {sr: {"rows": [], "n": 0, "base": 0.0, "ours": 0.0, "cbase": 0.0, "cours": 0.0, "ious": [], "err": 0.0}
           for sr in ratios}
    for path in paths:
        coco = read_instances(path)
        ids = ours(coco, mask_size, codec, batch_size, ratios[0])[2]
        anns = coco.loadAnns(ids.tolist())
        fns = {}
        for sr in ratios:
            fns["ours", sr] = lambda sr=sr: ours(coco, mask_size, codec, batch_size, sr)
            fns["base", sr] = lambda sr=sr: baseline(coco, anns, mask_size, zz, sr)
        res = alternate(fns, repeats)
        for sr in ratios:
            t_ours, c_ours, (m_ours, v_ours, ids_sr) = res["ours", sr]
            t_base, c_base, (m_base, v_base) = res["base", sr]
            assert np.array_equal(ids_sr, ids)
            iou = mask_iou(m_ours, m_base)
            same = float((m_ours == m_base).all(axis=(1, 2)).mean())
            err = float(np.abs(v_ours - v_base).max()) if len(ids) else 0.0
            a = acc[sr]
            a["ious"].append(iou)
            a["err"] = max(a["err"], err)
            n = len(ids)
            a["n"] += n
            a["base"] += t_base
            a["ours"] += t_ours
            a["cbase"] += c_base
            a["cours"] += c_ours
            a["rows"].append((Path(path).name, n, n / t_base, n / t_ours, t_base / t_ours, 1e6 * c_base / n,
                              1e6 * c_ours / n, c_base / c_ours, float(iou.mean()), same, err))
    out = {}
    for sr, a in acc.items():
        iou_all = np.concatenate(a["ious"])
        n = a["n"]
        total = ("all", n, n / a["base"], n / a["ours"], a["base"] / a["ours"], 1e6 * a["cbase"] / n,
                 1e6 * a["cours"] / n, a["cbase"] / a["cours"], float(iou_all.mean()), float(np.nan), a["err"])
        out[sr] = (a["rows"], total, float(iou_all.mean()))
    return out


def training_scale_objects(coco, img_id, short_side):
    """Full-image bool masks (n, h, w) torch and xyxy boxes (n, 4) float32 of an image's non-crowd
    objects, resized to ``short_side`` (nearest for masks, as the training transforms)."""
    import torch

    anns = [a for a in coco.imgToAnns[img_id] if not a["iscrowd"]]
    h, w = coco.imgs[img_id]["height"], coco.imgs[img_id]["width"]
    scale = short_side / min(h, w)
    nh, nw = round(h * scale), round(w * scale)
    full = torch.from_numpy(np.stack([annotation_mask(coco, a) for a in anns]))
    masks = torch.nn.functional.interpolate(full[:, None].float(), size=(nh, nw), mode="nearest")[:, 0] > 0
    xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
    boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1) * torch.tensor([nw / w, nh / h] * 2)
    return masks, boxes


def official_targets(masks, boxes, mask_size, zz):
    """The official recipe as a user would write it: roi_align(sampling_ratio=0) >= 0.5 -> dctn -> zigzag."""
    import torch
    from torchvision.ops import roi_align

    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes], 1)
    crops = roi_align(masks[:, None].float(), rois, mask_size, 1.0, 0, True)[:, 0].numpy() >= 0.5
    coeffs = scipy.fft.dctn(crops.astype(np.float32), axes=(1, 2), norm="ortho")
    return coeffs[:, zz[:, 0], zz[:, 1]]


def target_section(path, n_images, short_side, mask_size, n_components, repeats):
    """solq's target pipeline (``encode_masks``: GT masks of an image -> crop -> DCT vectors) with both
    samplings and the official recipe, alternated image by image. Returns {name: (objects, wall, CPU)}
    and the largest vector difference of the adaptive sampling against the official recipe."""
    from solq.data.targets import encode_masks

    coco = read_instances(path)
    codec = maskcodec.get_codec("dct", mask_size=mask_size, n_components=n_components)
    zz = np.asarray(zigzag_indices(mask_size, n_components))
    images = [i for i in sorted(coco.imgs) if any(not a["iscrowd"] for a in coco.imgToAnns[i])][:n_images]
    names = ["one sample (1)", "adaptive (0)", "official recipe (roi_align, sampling_ratio=0)"]
    totals = {k: [0, 0.0, 0.0] for k in names}
    err = 0.0
    for img_id in images:
        masks, boxes = training_scale_objects(coco, img_id, short_side)
        fns = {names[0]: lambda: encode_masks(masks, boxes, codec, 1).numpy(),
               names[1]: lambda: encode_masks(masks, boxes, codec, 0).numpy(),
               names[2]: lambda: official_targets(masks, boxes, mask_size, zz)}
        for name in names:
            fns[name]()  # warm-up (first image: compilation and plans)
        res = alternate(fns, repeats)
        for name in names:
            totals[name][0] += len(boxes)
            totals[name][1] += res[name][0]
            totals[name][2] += res[name][1]
        err = max(err, float(np.abs(res[names[1]][2] - res[names[2]][2]).max()))
    return {k: tuple(v) for k, v in totals.items()}, err, len(images)


def paste_section(repeats):
    import torch

    rng = np.random.default_rng(0)
    h, w = 480, 640
    coco = read_instances(sample_annotation_files()["val"])
    anns = [a for a in coco.dataset["annotations"] if not a["iscrowd"]][:100]
    real = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                     for a in anns])
    full = np.tile(np.array([0.0, 0.0, w, h]), (100, 1))
    rows = []
    for n in (28, 128):
        soft = rng.random((100, n, n)).astype(np.float32)
        for label, boxes in (("COCO val boxes", real), ("full-image boxes", full)):
            ts, tb = torch.from_numpy(soft), torch.from_numpy(boxes).float()
            paste(soft, boxes, (h, w))  # warm-up
            res = alternate({"np": lambda: paste(soft, boxes, (h, w)), "auto": lambda: paste(ts, tb, (h, w))}, repeats)
            (t_np, c_np, _), t_auto = res["np"], res["auto"][0]
            t_bmm = alternate({"bmm": lambda: paste(ts, tb, (h, w), impl="torch")}, max(1, repeats // 2))["bmm"][0]
            rows.append((n, label, t_np * 1e3, c_np * 1e3, t_auto * 1e3, t_bmm * 1e3))
    return rows


def coco_lines(args, sections):
    label = {0: "adaptive (0)", 1: "one sample (1)"}
    lines = [
        "## COCO annotation path speed",
        "",
        f"Command: `{' '.join([COMMAND, *args.argv])}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} "
        f"at the start; numpy {np.__version__}; best of {args.repeats} runs; "
        f"N = {args.mask_size}, n_k = {args.n_components}, crowd RLE included. Both samplings and their "
        "baselines run in one process, in turn (the order rotates every repeat); wall and CPU time are "
        "taken on the same calls.",
        "Baseline: per mask `annToMask` (full image) -> crop -> `scipy.fft.dctn`; the crop is "
        "`roi_align(sampling_ratio=0, aligned=True) >= 0.5` for the adaptive sampling (official SOLQ, "
        "maskcodec's default) and `crop_resize(sampling_ratio=1)` for one sample per cell. "
        "Ours: `iter_mask_batches(sampling_ratio=...)` (box-region decode, one resampling call per chunk of "
        f"{args.batch_size}) -> `DCTCodec.encode`.",
        "",
        "| sampling | file | masks | baseline masks/s | ours masks/s | speed-up (wall) | baseline CPU µs/mask "
        "| ours CPU µs/mask | speed-up (CPU) | mean IoU ours vs baseline | identical masks | max abs vector diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ok = True
    for sr, (rows, total, mean_iou) in sections.items():
        for name, n, base, fast, ratio, cb, co, cratio, iou, same, err in rows + [total]:
            same_s = "" if np.isnan(same) else f"{same:.1%}"
            lines.append(f"| {label[sr]} | {name} | {n} | {base:,.0f} | {fast:,.0f} | {ratio:.1f}x | {cb:,.0f} | "
                         f"{co:,.0f} | {cratio:.1f}x | {iou:.5f} | {same_s} | {err:.2e} |")
        ok = ok and mean_iou >= 0.99
    lines += ["", f"Agreement check (mean IoU >= 0.99): {'passed' if ok else 'FAILED'}."]
    if set(sections) == {0, 1}:
        t0, t1 = sections[0][1], sections[1][1]
        lines.append(f"Adaptive sampling costs {t1[3] / t0[3]:.2f}x (wall) and {t0[6] / t1[6]:.2f}x (CPU) "
                     "the one-sample mode on our path (all files).")
    return lines, ok


def target_lines(args, totals, err, n_images):
    names = list(totals)
    n = totals[names[0]][0]
    lines = [
        "",
        "## SOLQ target pipeline at the training scale",
        "",
        f"`solq.data.targets.encode_masks` (an image's GT masks -> `crop_resize` -> `DCTCodec.encode`) on the first "
        f"{n_images} coco128 images with objects ({n} objects), masks resized to short side {args.short_side} "
        "(nearest), N = 128, n_k = 256; every image runs the three pipelines in turn, best of "
        f"{args.repeats} per image, summed. The official recipe is what a user of torchvision writes: "
        "`roi_align(masks.float(), boxes, N, 1.0, sampling_ratio=0, aligned=True) >= 0.5` -> `scipy.fft.dctn` -> zigzag.",
        "",
        "| pipeline | objects | wall ms | CPU ms | CPU µs/object | CPU vs one sample |",
        "|---|---|---|---|---|---|",
    ]
    ref = totals[names[0]][2]
    for name, (count, wall, cpu) in totals.items():
        lines.append(f"| {name} | {count} | {wall * 1e3:,.1f} | {cpu * 1e3:,.1f} | {1e6 * cpu / count:,.0f} | "
                     f"{cpu / ref:.2f}x |")
    lines += ["", f"Max abs difference of the adaptive vectors against the official recipe: {err:.2e} "
              "(float32 DCT against scipy's; the crops are identical)."]
    return lines


def paste_lines(args, prow):
    lines = [
        "",
        "## paste speed",
        "",
        "100 random soft masks pasted into a 480 x 640 image and thresholded (bool output); "
        "boxes are the first 100 non-crowd boxes of the built-in val sample, or all full-image "
        "(the worst case: every output pixel is computed). Times in ms, best of "
        f"{args.repeats}.",
        "",
        "| N | boxes | numpy (numba), wall | numpy (numba), CPU time | torch CPU, impl='auto' (numba), wall "
        "| torch CPU, impl='torch' (bmm), wall |",
        "|---|---|---|---|---|---|",
    ]
    for n, label, t_np, c_np, t_auto, t_bmm in prow:
        lines.append(f"| {n} | {label} | {t_np:.1f} | {c_np:.1f} | {t_auto:.1f} | {t_bmm:.1f} |")
    return lines


def write_keeping_notes(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, keeping whatever follows ``NOTES_MARKER`` in the old file (hand-written notes)."""
    notes = ""
    if path.exists() and NOTES_MARKER in path.read_text():
        notes = "\n" + path.read_text().split(NOTES_MARKER, 1)[1].lstrip("\n")
        text = text + "\n" + NOTES_MARKER + "\n" + notes
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", nargs="+", help="COCO instances files (default: the built-in sample)")
    parser.add_argument("--mask-size", type=int, default=128)
    parser.add_argument("--n-components", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, help="write the markdown here (text after its notes marker is kept)")
    parser.add_argument("--no-paste", action="store_true", help="skip the paste timing section")
    parser.add_argument("--sampling-ratios", type=int, nargs="+", default=[0, 1], choices=[0, 1],
                        help="crop samplings to measure (0 adaptive, the default; 1 one sample per cell)")
    parser.add_argument("--target-images", type=int, default=60,
                        help="coco128 images for the target-pipeline section (0 skips it)")
    parser.add_argument("--short-side", type=int, default=800)
    parser.add_argument("--memory-masks", type=int, nargs="*", default=[10_000, 30_000, 100_000],
                        help="annotation counts for the memory section (none skips it)")
    parser.add_argument("--memory-file", help="instances file tiled for the memory section (default: coco128)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    warnings.simplefilter("ignore", DeprecationWarning)
    paths = args.annotations or [str(p) for p in sample_annotation_files().values()]

    sections = coco_section(paths, args.mask_size, args.n_components, args.batch_size, args.repeats,
                            args.sampling_ratios)
    lines, ok = coco_lines(args, sections)
    if args.target_images and COCO128.exists():
        totals, err, n_images = target_section(COCO128, args.target_images, args.short_side, args.mask_size,
                                               args.n_components, args.repeats)
        lines += target_lines(args, totals, err, n_images)
        ok = ok and err < 1e-4
    if args.memory_masks:
        rows = memory_section(args.memory_file or COCO128, args.memory_masks, args.mask_size, args.n_components,
                              args.batch_size)
        lines += memory_lines(args, rows)
    if not args.no_paste:
        lines += paste_lines(args, paste_section(args.repeats))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        write_keeping_notes(args.output, text)
        print(f"wrote {args.output}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
