"""The fault matrix: every hostile input and fault of issue 13 against the CLIs, as subprocesses.

    python benchmarks/fault_matrix.py [--kills 6] [--workers 2] [--out runs/fault_matrix]

Groups (each case runs ``python -m solq.cli ...`` / ``-m maskcodec.cli ...`` with a timeout and
must end with exit 0 or 2, one error line, no traceback, result files complete or absent; see
``fault_cases.py``):

* annotations: each bad annotation kind alone, through ``maskcodec bench``, ``solq train``
  (strict, and with ``data.skip_bad_images``) and ``solq eval``;
* images: each bad image kind alone, through ``solq predict --ann`` and ``solq train``
  (strict and skipping);
* checkpoints: 4 KB overwritten at five offsets, truncated at four lengths, empty, foreign
  files (a PNG, a codec file, random bytes, another model's state dict), through ``solq eval``
  and ``solq train --resume``;
* codec files: the same damage through ``maskcodec info``;
* NaN: an overflowing loss weight, and an lr that drives the loss to NaN after saves;
* kill -9: a training run killed at random times (and right while a checkpoint is being written),
  resumed until done, and compared bit for bit (model, optimizer, position) with an uninterrupted
  run. "Data lost" counts a torn checkpoint, a resume that fails, or a final state that differs.

Writes ``benchmarks/results_fault_matrix.md`` (counts per group, the failures, the command).
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fault_cases import (  # noqa: E402
    BAD_ANNOTATIONS,
    BAD_IMAGE_KINDS,
    ROOT,
    Case,
    Outcome,
    add_bad_annotations,
    checkpoint_complete,
    json_complete,
    kill_group,
    overwrite_middle,
    run_case,
    run_cases,
    same_state,
    shapes_set,
    start,
    tiny_config,
    truncate,
    write_bad_image,
    write_config,
)

ERROR_EXPECTED = {"non-finite box", "huge coordinates", "NaN coordinate", "string coordinate", "invalid RLE string",
                  "RLE counts off", "negative RLE run", "RLE size mismatch", "segmentation not a list"}


def annotation_cases(tmp: Path, sets, config: Path, weights: Path) -> list[Case]:
    train_dir, train_ann, val_dir, val_ann = sets
    cases = []
    for kind, _ in BAD_ANNOTATIONS:
        slug = kind.replace(" ", "_")
        bad_val = add_bad_annotations(val_ann, tmp / f"val_{slug}.json", kinds=[kind])
        bad_train = add_bad_annotations(train_ann, tmp / f"train_{slug}.json", kinds=[kind])
        out = tmp / f"bench_{slug}"
        cases.append(Case(f"annotations/bench/{slug}", ["maskcodec", "bench", "--ann", str(bad_val), "--codecs", "dct",
                                                        "--sizes", "16", "--dims", "16", "--out", str(out),
                                                        "--no-plots", "--quiet"],
                          rc=(0,), results={str(out / "results.json"): json_complete}, timeout=300))
        strict_rc = (2,) if kind in ERROR_EXPECTED else (0,)
        for skip in (False, True):
            cfg = tiny_config(tmp / f"train_{slug}_{skip}", train_ann=bad_train, val_ann=val_ann, image_dir=train_dir)
            cfg["data"]["val"]["image_dir"] = str(val_dir)
            cfg["data"]["skip_bad_images"] = skip
            path = write_config(cfg, tmp / f"train_{slug}_{skip}.yaml")
            ckpt = Path(cfg["output_dir"]) / "checkpoint.pth"
            cases.append(Case(f"annotations/train{'_skip' if skip else ''}/{slug}", ["solq", "train", "--config", str(path)],
                              rc=(0,) if skip else strict_rc, results={str(ckpt): checkpoint_complete}))
        metrics = tmp / f"eval_{slug}.json"
        cases.append(Case(f"annotations/eval/{slug}", ["solq", "eval", "--config", str(config), "--weights",
                                                       str(weights), f"data.val.ann_file={bad_val}", "--out",
                                                       str(metrics)],
                          rc=strict_rc, results={str(metrics): json_complete}))
    return cases


def image_cases(tmp: Path, sets, config: Path, weights: Path) -> list[Case]:
    train_dir, train_ann, val_dir, val_ann = sets
    rng = np.random.default_rng(0)
    cases = []
    for kind in BAD_IMAGE_KINDS:
        folder = tmp / f"images_{kind}"
        shutil.copytree(train_dir, folder)
        path = write_bad_image(kind, folder, rng)
        data = json.loads(train_ann.read_text())
        name = path.name if path is not None else "missing.png"
        side = 1 if kind == "one_pixel" else 48
        data["images"].append({"id": 9000, "file_name": name, "height": side, "width": side})
        ann = tmp / f"images_{kind}.json"
        ann.write_text(json.dumps(data))
        out = tmp / f"predict_{kind}"
        cases.append(Case(f"images/predict/{kind}", ["solq", "predict", "--config", str(config), "--weights",
                                                     str(weights), str(folder), "--ann", str(ann), "--out", str(out),
                                                     "--no-draw"],
                          rc=(0,), results={str(out / "results.json"): json_complete}))
        unreadable = kind in ("missing", "truncated", "not_an_image")
        for skip in (False, True):
            cfg = tiny_config(tmp / f"img_train_{kind}_{skip}", train_ann=ann, val_ann=val_ann, image_dir=folder)
            cfg["data"]["val"]["image_dir"] = str(val_dir)
            cfg["data"]["skip_bad_images"] = skip
            cfg["data"]["num_workers"] = 1
            path_cfg = write_config(cfg, tmp / f"img_train_{kind}_{skip}.yaml")
            ckpt = Path(cfg["output_dir"]) / "checkpoint.pth"
            rc = (2,) if unreadable and not skip else (0,)
            cases.append(Case(f"images/train{'_skip' if skip else ''}/{kind}", ["solq", "train", "--config",
                                                                                 str(path_cfg)],
                              rc=rc, results={str(ckpt): checkpoint_complete}))
    return cases


def damaged_files(tmp: Path, source: Path, stem: str) -> dict[str, Path]:
    """Damaged copies of ``source``: overwritten, truncated, empty and foreign files."""
    import torch
    from PIL import Image

    out = {}
    for where in (0.1, 0.3, 0.5, 0.7, 0.9):
        out[f"overwrite_4k_at_{where}"] = overwrite_middle(source, tmp / f"{stem}_ow{where}{source.suffix}",
                                                           where=where, seed=int(where * 10))
    for frac in (0.25, 0.5, 0.75, 0.99):
        out[f"truncated_{frac}"] = truncate(source, tmp / f"{stem}_tr{frac}{source.suffix}", frac)
    (tmp / f"{stem}_empty{source.suffix}").write_bytes(b"")
    out["empty"] = tmp / f"{stem}_empty{source.suffix}"
    png = tmp / f"{stem}_png{source.suffix}"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, format="PNG")
    out["foreign_png"] = png
    (tmp / f"{stem}_random{source.suffix}").write_bytes(np.random.default_rng(1).bytes(5000))
    out["foreign_random"] = tmp / f"{stem}_random{source.suffix}"
    other = tmp / f"{stem}_other_model{source.suffix}"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    out["foreign_state_dict"] = other
    return out


def checkpoint_cases(tmp: Path, config: Path, weights: Path, codec_file: Path) -> list[Case]:
    cases = []
    damaged = damaged_files(tmp, weights, "ckpt")
    damaged["foreign_codec_file"] = codec_file
    for name, path in damaged.items():
        metrics = tmp / f"eval_ckpt_{name}.json"
        cases.append(Case(f"checkpoints/eval/{name}", ["solq", "eval", "--config", str(config), "--weights", str(path),
                                                       "--out", str(metrics)],
                          rc=(2,), results={str(metrics): json_complete}))
        run = tmp / f"resume_{name}"
        run.mkdir()
        shutil.copy(path, run / "checkpoint.pth")
        cases.append(Case(f"checkpoints/resume/{name}", ["solq", "train", "--config", str(config), "--resume",
                                                         f"output_dir={run}"], rc=(2,)))
    for name, path in damaged_files(tmp, codec_file, "codec").items():
        cases.append(Case(f"codec_files/info/{name}", ["maskcodec", "info", str(path)], rc=(2,)))
    np.save(tmp / "array.npy", np.zeros(3))
    cases.append(Case("codec_files/info/npy", ["maskcodec", "info", str(tmp / "array.npy")], rc=(2,)))
    np.savez(tmp / "list_header.npz", __header__=np.frombuffer(b"[1, 2]", dtype=np.uint8))
    cases.append(Case("codec_files/info/header_not_dict", ["maskcodec", "info", str(tmp / "list_header.npz")], rc=(2,)))
    header = {"format": "maskcodec-codec", "format_version": 1, "codec": "dct",
              "params": {"mask_size": 8, "n_components": 4, "bogus": 1}, "fitted_scalars": {}, "fitted_arrays": []}
    np.savez(tmp / "bogus.npz", __header__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    cases.append(Case("codec_files/info/unknown_params", ["maskcodec", "info", str(tmp / "bogus.npz")], rc=(2,)))
    return cases


def nan_cases(tmp: Path, config: Path) -> list[Case]:
    out1, out2 = tmp / "nan_weight", tmp / "nan_lr"
    return [
        Case("nan/overflowing_loss_weight", ["solq", "train", "--config", str(config), "loss.bbox=1e39",
                                             f"output_dir={out1}"], rc=(2,), expect=("weighted loss term",),
             results={str(out1 / "checkpoint.pth"): checkpoint_complete}),
        Case("nan/diverging_lr", ["solq", "train", "--config", str(config), "train.lr=1e30", "train.epochs=3",
                                  "train.checkpoint_every_iters=1", f"output_dir={out2}"],
             rc=(0, 2), results={str(out2 / "checkpoint.pth"): checkpoint_complete}),
        Case("nan/lr_nan", ["solq", "train", "--config", str(config), "train.lr=nan"], rc=(2,)),
    ]


# ------------------------------------------------------------------------------------ kill -9
def kill_trials(tmp: Path, config: Path, n_trials: int, seed: int) -> list[dict]:
    """Train, killed with SIGKILL at random times or mid-save, resume until done; compare with a clean run."""
    overrides = ["train.epochs=3", "train.checkpoint_every_iters=1"]
    ref_dir = tmp / "kill_reference"
    ref = run_case(Case("kill/reference", ["solq", "train", "--config", str(config), *overrides,
                                           f"output_dir={ref_dir}"], rc=(0,), timeout=900))
    if ref.problems():
        raise SystemExit(f"the reference run failed: {ref.problems()} {ref.stderr[-500:]}")
    duration = ref.seconds
    rng = random.Random(seed)
    trials = []
    for t in range(n_trials):
        out = tmp / f"kill_{t}"
        mid_save = t % 2 == 1
        record = {"trial": t, "mode": "during a checkpoint write" if mid_save else "random time", "kills": 0,
                  "kills_mid_write": 0, "problems": []}
        resume = False
        for attempt in range(8):
            argv = ["solq", "train", "--config", str(config), *overrides, f"output_dir={out}"] + (["--resume"] if resume
                                                                                                 else [])
            if attempt >= 2:  # two kills per trial, then let it finish
                final = run_case(Case("kill/finish", argv, rc=(0,), timeout=900))
                if final.problems():
                    record["problems"].append(f"final resume: {final.problems()} {final.last_line()}")
                break
            proc = start(argv)
            if mid_save:
                deadline = time.time() + duration * 2
                while time.time() < deadline and proc.poll() is None:
                    if list(out.glob(".checkpoint.pth.*.tmp")) and rng.random() < 0.5:
                        break
                    time.sleep(0.002)
            else:
                time.sleep(rng.uniform(0.3, 1.0) * duration)
            finished = proc.poll() is not None
            writing = bool(list(out.glob(".checkpoint.pth.*.tmp")))
            kill_group(proc)
            record["kills_mid_write"] += writing and not finished
            proc.communicate()
            if finished and proc.returncode == 0:
                break
            record["kills"] += 1
            ckpt = out / "checkpoint.pth"
            if ckpt.exists():
                try:
                    checkpoint_complete(ckpt)
                except Exception as err:  # noqa: BLE001
                    record["problems"].append(f"torn checkpoint after kill {record['kills']}: {err}")
                    break
                resume = True
            elif resume:
                record["problems"].append("the checkpoint vanished after a kill")
                break
        ckpt = out / "checkpoint.pth"
        if not record["problems"]:
            if not ckpt.exists():
                record["problems"].append("no checkpoint at the end")
            elif not same_state(ckpt, ref_dir / "checkpoint.pth"):
                record["problems"].append("final state differs from the uninterrupted run")
        leftovers = list(out.glob(".checkpoint.pth.*.tmp"))
        if leftovers:
            record["problems"].append(f"{len(leftovers)} stale temporary file(s) left")
        trials.append(record)
        print(f"kill trial {t} ({record['mode']}): {record['kills']} kill(s), "
              f"{'OK' if not record['problems'] else record['problems']}", flush=True)
    return trials


# ------------------------------------------------------------------------------------ report
def write_report(path: Path, outcomes: dict[str, Outcome], trials: list[dict], command: str, seconds: float) -> None:
    groups: dict[str, list] = {}
    for name, o in outcomes.items():
        groups.setdefault(name.rsplit("/", 1)[0], []).append(o)
    lines = ["# Fault matrix (issue 13)", "",
             "Every case runs a CLI as a subprocess with a timeout; it is *handled* when it ends with exit 0 or 2 "
             "(the one expected for the case), a one-line error and no traceback, in finite time, with its result "
             "files complete or absent. Kill trials: SIGKILL at a random time or while a checkpoint is being "
             "written (twice per trial), resume until done, compare model, optimizer and position bit for bit "
             "with an uninterrupted run; *data lost* counts incomplete result files (a case's checkpoint, metrics or "
             "results file), and for kill trials torn checkpoints, failed resumes and differing states.",
             "", f"Command: `{command}` ({seconds / 60:.1f} min on the shared 2-core machine).", "",
             "| group | cases tried | handled | data lost |", "|---|---:|---:|---:|"]
    failures = []
    tried = handled = 0
    for group, items in groups.items():
        ok = sum(1 for o in items if not o.problems())
        torn = sum(1 for o in items if any(p.startswith("incomplete result file") for p in o.problems()))
        tried += len(items)
        handled += ok
        lines.append(f"| {group} | {len(items)} | {ok} | {torn} |")
        failures += [f"- `{o.case.name}`: {'; '.join(o.problems())} (last line: {o.last_line()[:160]!r})"
                     for o in items if o.problems()]
    torn_total = sum(1 for o in outcomes.values() if any(p.startswith("incomplete result file") for p in o.problems()))
    lost = sum(1 for t in trials if t["problems"])
    kills = sum(t["kills"] for t in trials)
    mid = sum(t.get("kills_mid_write", 0) for t in trials)
    lines.append(f"| kill -9 + resume ({kills} kills in {len(trials)} trials, {mid} while a checkpoint temp file "
                 f"existed) | {len(trials)} | {len(trials) - lost} | {lost} |")
    tried += len(trials)
    handled += len(trials) - lost
    lines.append(f"| **total** | **{tried}** | **{handled}** | **{lost + torn_total}** |")
    failures += [f"- kill trial {t['trial']} ({t['mode']}): {'; '.join(t['problems'])}" for t in trials if t["problems"]]
    lines += ["", "Not handled:" if failures else "Every case was handled; no data was lost.", *failures, ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "runs" / "fault_matrix"), help="scratch folder (deleted first)")
    ap.add_argument("--kills", type=int, default=6, help="kill -9 trials")
    ap.add_argument("--workers", type=int, default=2, help="cases run at once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated groups: annotations,images,checkpoints,nan,kill")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results_fault_matrix.md"))
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    tmp = Path(a.out).resolve()
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    only = set(filter(None, a.only.split(","))) or {"annotations", "images", "checkpoints", "nan", "kill"}

    sets = shapes_set(tmp / "shapes", n_train=8, n_val=3)
    train_dir, train_ann, val_dir, val_ann = sets
    cfg = tiny_config(tmp, train_ann=train_ann, val_ann=val_ann, image_dir=train_dir)
    cfg["data"]["val"]["image_dir"] = str(val_dir)
    config = write_config(cfg, tmp / "base.yaml")
    base = run_case(Case("setup/train", ["solq", "train", "--config", str(config)], rc=(0,), timeout=900))
    if base.problems():
        raise SystemExit(f"setup training failed: {base.problems()}\n{base.stderr[-1000:]}")
    weights = tmp / "run" / "checkpoint.pth"
    from maskcodec import get_codec

    codec_file = tmp / "pca.npz"
    get_codec("pca", mask_size=8, n_components=4).fit(np.random.default_rng(0).random((16, 8, 8)) > 0.5).save(codec_file)

    cases: list[Case] = []
    for sub in ("ann", "img", "ckpt"):
        (tmp / sub).mkdir()
    if "annotations" in only:
        cases += annotation_cases(tmp / "ann", sets, config, weights)
    if "images" in only:
        cases += image_cases(tmp / "img", sets, config, weights)
    if "checkpoints" in only:
        cases += checkpoint_cases(tmp / "ckpt", config, weights, codec_file)
    if "nan" in only:
        cases += nan_cases(tmp, config)
    print(f"{len(cases)} cases, {a.workers} at a time ...", flush=True)
    outcomes = run_cases(cases, workers=a.workers)
    for name, o in outcomes.items():
        print(f"{'ok ' if not o.problems() else 'BAD'} {name} (exit {o.rc}, {o.seconds:.1f} s) {o.problems() or ''}")
    trials = kill_trials(tmp / "kill", config, a.kills, a.seed) if "kill" in only and a.kills > 0 else []
    command = "python benchmarks/fault_matrix.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    write_report(Path(a.results), outcomes, trials, command.strip(), time.perf_counter() - t0)
    print(f"wrote {a.results}")
    bad = sum(1 for o in outcomes.values() if o.problems()) + sum(1 for t in trials if t["problems"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
