"""Fault-injection harness shared by ``tests/test_faults.py`` (fast) and ``benchmarks/fault_matrix.py``.

A *case* runs one command of the ``solq`` or ``maskcodec`` CLI as a subprocess
(``sys.executable -m solq.cli ...``) with a timeout, and checks the contract every CLI keeps
on hostile input:

* it ends in finite time (the harness kills the whole process group at the timeout),
* with exit code 0 or 2 (never a segfault, an uncaught exception or a hang),
* with no traceback on stderr, and on exit 2 a last stderr line ``<prog>: error: ...``,
* and each result file it names is complete (parses / verifies) or absent.

The crafting helpers write tiny bad inputs: a COCO file with every bad annotation kind,
image folders with every bad image kind, corrupted checkpoints and codec files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = {"solq": "solq.cli", "maskcodec": "maskcodec.cli"}


# ------------------------------------------------------------------------------------ running
@dataclass
class Case:
    """One CLI invocation and what it must produce.

    argv: ``["solq", "train", ...]`` or ``["maskcodec", ...]``. rc: accepted exit codes (a subset
    of {0, 2}). expect: substrings that must appear in stdout + stderr. results: files that must be
    complete or absent afterwards, each with a checker that raises on an incomplete file.
    """

    name: str
    argv: list[str]
    rc: tuple[int, ...] = (0, 2)
    expect: tuple[str, ...] = ()
    results: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    timeout: float = 300.0
    defect: str = ""  # which issue-13 defect the case covers ("" for a case that passed before)
    #: Call the CLI's ``main`` in this process (for cases that cannot crash the interpreter; saves
    #: the start-up of a new one). No timeout applies.
    in_process: bool = False


@dataclass
class Outcome:
    case: Case
    rc: Optional[int]
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool

    def problems(self) -> list[str]:
        """Every broken promise (empty when the case is handled)."""
        out = []
        if self.timed_out:
            out.append(f"no exit within {self.case.timeout:.0f} s")
        elif self.rc not in (0, 2):
            out.append(f"exit code {self.rc}" + (" (killed by a signal: segfault?)" if self.rc < 0 else ""))
        elif self.rc not in self.case.rc:
            out.append(f"exit code {self.rc}, expected {self.case.rc}")
        if "Traceback (most recent call last)" in self.stderr:
            out.append("traceback on stderr")
        if self.rc == 2:
            lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
            prog = self.case.argv[0]
            if not lines or not lines[-1].startswith((f"{prog}: error:", f"usage: {prog}", f"{prog} ")):
                out.append(f"exit 2 without a one-line '{prog}: error:' message (last line: {lines[-1:]!r})")
        text = self.stdout + self.stderr
        for s in self.case.expect:
            if s not in text:
                out.append(f"output lacks {s!r}")
        for path, check in self.case.results.items():
            p = Path(path)
            if p.exists():
                try:
                    check(p)
                except Exception as err:  # noqa: BLE001 - any failure means an incomplete file
                    out.append(f"incomplete result file {p.name}: {type(err).__name__}: {err}")
        return out

    def last_line(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        return lines[-1] if lines else ""


def cli_env() -> dict[str, str]:
    """Environment for the subprocesses: this checkout first on the path, one thread each."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[k] = "1"
    env["PYTHONFAULTHANDLER"] = "0"
    return env


def start(argv: Sequence[str], cwd: Path | None = None) -> subprocess.Popen:
    """Start ``argv`` (``["solq", ...]``) in its own process group."""
    cmd = [sys.executable, "-m", PROGRAMS[argv[0]], *argv[1:]]
    return subprocess.Popen(cmd, cwd=cwd or ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (data workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_in_process(case: Case) -> Outcome:
    """``main(argv)`` of the CLI in this process with stdout / stderr captured (one at a time)."""
    import contextlib
    import importlib
    import io
    import traceback

    main = importlib.import_module(PROGRAMS[case.argv[0]]).main
    out, err = io.StringIO(), io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(case.argv[1:]))
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # noqa: BLE001 - what a subprocess would print before exit 1
            traceback.print_exc()
            rc = 1
    return Outcome(case, rc, out.getvalue(), err.getvalue(), time.perf_counter() - t, False)


def run_case(case: Case, cwd: Path | None = None) -> Outcome:
    if case.in_process:
        return run_in_process(case)
    t = time.perf_counter()
    proc = start(case.argv, cwd)
    try:
        out, err = proc.communicate(timeout=case.timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        timed_out = True
    return Outcome(case, None if timed_out else proc.returncode, out, err, time.perf_counter() - t, timed_out)


def run_cases(cases: Sequence[Case], workers: int = 2) -> dict[str, Outcome]:
    """Run the subprocess cases ``workers`` at a time and, meanwhile, the in-process ones one by one;
    returns {case name: outcome}."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {c.name: pool.submit(run_case, c) for c in cases if not c.in_process}
        done = {c.name: run_in_process(c) for c in cases if c.in_process}
        done.update({name: f.result() for name, f in futures.items()})
    return {c.name: done[c.name] for c in cases}


# ------------------------------------------------------------------------------------ result checks
def json_complete(path: Path) -> None:
    json.loads(path.read_text())


def checkpoint_complete(path: Path) -> None:
    from solq.checkpoint import load_checkpoint

    load_checkpoint(path)


# ------------------------------------------------------------------------------------ crafting
SQUARE = [8.0, 8.0, 40.0, 8.0, 40.0, 40.0, 8.0, 40.0]

#: every kind of bad annotation, as (name, annotation fields); image 1 is 64 x 64.
BAD_ANNOTATIONS: list[tuple[str, dict]] = [
    ("huge coordinates", {"segmentation": [[8, 8, 1e9, 8, 1e9, 1e9]]}),
    ("NaN coordinate", {"segmentation": [[8, 8, float("nan"), 8, 40, 40]]}),
    ("string coordinate", {"segmentation": [[8, 8, "x", 8, 40, 40]]}),
    ("empty segmentation", {"segmentation": []}),
    ("short polygon", {"segmentation": [[8, 8, 40, 40]]}),
    ("invalid RLE string", {"iscrowd": 1, "segmentation": {"size": [64, 64], "counts": "zzzzzzzzzzzzzzzzzzzz"}}),
    ("RLE counts off", {"iscrowd": 1, "segmentation": {"size": [64, 64], "counts": [0, 10, 20]}}),
    ("negative RLE run", {"iscrowd": 1, "segmentation": {"size": [64, 64], "counts": [-5, 4101]}}),
    ("RLE size mismatch", {"iscrowd": 1, "segmentation": {"size": [32, 64], "counts": [0, 2048]}}),
    ("segmentation not a list", {"segmentation": "polygon"}),
    ("non-finite box", {"bbox": [8, 8, float("inf"), 32]}),
]


def add_bad_annotations(ann_file: Path, out: Path, kinds: Sequence[str] | None = None,
                        image_id: int | None = None) -> Path:
    """Copy a COCO json to ``out`` with one extra annotation of each bad kind on its first (64 x 64) image."""
    data = json.loads(ann_file.read_text())
    img = data["images"][0] if image_id is None else next(i for i in data["images"] if i["id"] == image_id)
    if (img["height"], img["width"]) != (64, 64):
        raise ValueError("the RLE cases of BAD_ANNOTATIONS are written for a 64 x 64 image")
    next_id = max([a["id"] for a in data["annotations"]] + [0]) + 1
    cat = data["categories"][0]["id"]
    for name, fields in BAD_ANNOTATIONS:
        if kinds is not None and name not in kinds:
            continue
        ann = {"id": next_id, "image_id": img["id"], "category_id": cat, "iscrowd": 0, "area": 1024.0,
               "bbox": [8, 8, 32, 32], "segmentation": [SQUARE]}
        ann.update(fields)
        data["annotations"].append(ann)
        next_id += 1
    out.write_text(json.dumps(data))
    return out


BAD_IMAGE_KINDS = ("missing", "truncated", "grayscale", "rgba", "cmyk", "one_pixel", "not_an_image")


def write_bad_image(kind: str, folder: Path, rng: np.random.Generator, size: int = 48) -> Path | None:
    """Write one image of ``kind`` into ``folder`` (``missing`` writes nothing); returns its path."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    path = folder / f"{kind}.png"
    if kind == "missing":
        return None
    if kind == "truncated":
        path = folder / "truncated.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "grayscale":
        Image.fromarray(pixels[..., 0]).save(path)
    elif kind == "rgba":
        Image.fromarray(np.dstack([pixels, pixels[..., :1]])).save(path)
    elif kind == "cmyk":
        path = folder / "cmyk.jpg"
        Image.fromarray(pixels).convert("CMYK").save(path)
    elif kind == "one_pixel":
        Image.fromarray(pixels[:1, :1]).save(path)
    elif kind == "not_an_image":
        path.write_bytes(b"this is not a png\n" * 10)
    else:
        raise ValueError(f"unknown bad image kind {kind!r}")
    return path


def overwrite_middle(path: Path, out: Path, nbytes: int = 4096, seed: int = 0, where: float = 0.5) -> Path:
    """Copy ``path`` to ``out`` with ``nbytes`` random bytes written at fraction ``where`` of the file."""
    data = bytearray(path.read_bytes())
    start = max(0, min(len(data) - nbytes, int(len(data) * where)))
    data[start:start + nbytes] = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out


def truncate(path: Path, out: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


# ------------------------------------------------------------------------------------ tiny runs
def tiny_config(root: Path, *, train_ann: Path | None = None, val_ann: Path | None = None,
                image_dir: Path | None = None, **sections) -> dict:
    """A seconds-scale solq config on the 64 px shapes set under ``root`` (or given COCO files)."""
    cfg = {
        "model": {"backbone": "resnet18", "d_model": 32, "nheads": 4, "num_feature_levels": 1, "n_points": 2,
                  "num_queries": 8, "enc_layers": 1, "dec_layers": 1, "dim_feedforward": 64,
                  "vector_hidden_dim": 64},
        "codec": {"name": "dct", "mask_size": 16, "n_components": 16},
        "data": {"scales": [64], "max_size": 96, "crop": False, "num_workers": 0, "batch_size": 2},
        "train": {"epochs": 1, "eval_every": 0, "log_every": 1, "num_threads": 1, "seed": 0},
        "output_dir": str(root / "run"),
    }
    if train_ann is None:
        cfg["data"]["shapes"] = {"root": str(root / "data"), "n_train": 4, "n_val": 3, "image_size": 64,
                                 "n_classes": 2, "max_objects": 2}
    else:
        cfg["data"]["train"] = {"image_dir": str(image_dir), "ann_file": str(train_ann)}
        cfg["data"]["val"] = {"image_dir": str(image_dir), "ann_file": str(val_ann or train_ann)}
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


def write_config(cfg: dict, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


def shapes_set(root: Path, n_train: int = 4, n_val: int = 3) -> tuple[Path, Path, Path, Path]:
    """The 64 px shapes set: (train image_dir, train json, val image_dir, val json)."""
    from solq.data import write_shapes_dataset

    paths = write_shapes_dataset(root, n_images=n_train, n_val=n_val, image_size=64, n_classes=2, max_objects=2,
                                 seed=0, overwrite=True)
    return paths["train"].image_dir, paths["train"].ann_file, paths["val"].image_dir, paths["val"].ann_file


def same_state(a: Path, b: Path) -> bool:
    """True when two checkpoints hold bit-identical model and optimizer tensors and the same position."""
    import torch

    from solq.checkpoint import load_checkpoint

    sa, sb = load_checkpoint(a), load_checkpoint(b)
    if (sa["epoch"], sa["iter_in_epoch"], sa["global_step"]) != (sb["epoch"], sb["iter_in_epoch"], sb["global_step"]):
        return False
    if sa["model"].keys() != sb["model"].keys():
        return False
    if not all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"]):
        return False
    oa, ob = sa["optimizer"]["state"], sb["optimizer"]["state"]
    return oa.keys() == ob.keys() and all(
        torch.equal(oa[k][n], ob[k][n]) for k in oa for n in oa[k] if isinstance(oa[k][n], torch.Tensor))
