"""Hostile input and faults (issue 13), fast: the CLIs as subprocesses on tiny crafted files.

Every case must end in finite time with exit 0 or 2, a one-line message and no traceback, and
leave its result files complete or absent (``benchmarks/fault_cases.py`` checks that). The
subprocess cases run two at a time from one module fixture; the in-process tests below them
cover the messages. Cases that cannot crash the interpreter call the CLI's ``main`` in-process
(same checks, no interpreter start-up). ``benchmarks/fault_matrix.py`` is the thorough version (every bad image and
annotation kind on its own, kill -9 at random points, resume compared bit for bit).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from fault_cases import (  # noqa: E402
    BAD_IMAGE_KINDS,
    Case,
    add_bad_annotations,
    checkpoint_complete,
    json_complete,
    overwrite_middle,
    run_cases,
    shapes_set,
    tiny_config,
    write_bad_image,
    write_config,
)


def _loads_against(ann_file: Path):
    def check(path: Path) -> None:
        import contextlib
        import io

        from pycocotools.coco import COCO

        results = json.loads(path.read_text())
        gt = COCO()
        gt.dataset = json.loads(ann_file.read_text())
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            if results:
                gt.loadRes(results)  # refuses unknown image ids

    return check


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    train_dir, train_ann, val_dir, val_ann = shapes_set(tmp / "shapes")

    # a trained checkpoint, in-process (the cases below need weights)
    from solq.config import config_from_dict
    from solq.engine import train

    base = tiny_config(tmp, train_ann=train_ann, val_ann=val_ann, image_dir=train_dir)
    base["data"]["val"]["image_dir"] = str(val_dir)
    train(config_from_dict(base))
    weights = tmp / "run" / "checkpoint.pth"
    config = write_config(base, tmp / "base.yaml")

    cases = []
    # ---- maskcodec: bad annotations reach the oracle AP (segfault / endless hang before)
    bad_val = add_bad_annotations(val_ann, tmp / "bad_val.json")
    cases.append(Case("bench_bad_annotations", ["maskcodec", "bench", "--ann", str(bad_val), "--codecs", "dct",
                                                "--sizes", "16", "--dims", "16", "--out", str(tmp / "bench"),
                                                "--no-plots", "--quiet"],
                      rc=(0,), results={str(tmp / "bench" / "results.json"): json_complete}, timeout=180))
    np.save(tmp / "x.npy", np.zeros(3))
    cases.append(Case("info_npy", ["maskcodec", "info", str(tmp / "x.npy")], rc=(2,), expect=("not an .npz",)))
    np.savez(tmp / "list_header.npz", __header__=np.frombuffer(b"[1, 2]", dtype=np.uint8))
    cases.append(Case("info_header_not_dict", ["maskcodec", "info", str(tmp / "list_header.npz")], rc=(2,),
                      in_process=True))
    header = {"format": "maskcodec-codec", "format_version": 1, "codec": "dct",
              "params": {"mask_size": 8, "n_components": 4, "bogus": 1}, "fitted_scalars": {}, "fitted_arrays": []}
    np.savez(tmp / "bogus.npz", __header__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    cases.append(Case("info_unknown_params", ["maskcodec", "info", str(tmp / "bogus.npz")], rc=(2,),
                      expect=("unknown DCTCodec parameter",), in_process=True))

    # ---- solq train: bad annotations, strict (one line, exit 2) and skipped; eval on an empty segmentation
    bad_train = add_bad_annotations(train_ann, tmp / "bad_train.json")
    empty_val = add_bad_annotations(val_ann, tmp / "empty_val.json", kinds=["empty segmentation", "short polygon"])
    strict = dict(base, output_dir=str(tmp / "strict"))
    strict["data"] = {**base["data"], "train": {"image_dir": str(train_dir), "ann_file": str(bad_train)}}
    cases.append(Case("train_bad_annotations_strict", ["solq", "train", "--config",
                                                       str(write_config(strict, tmp / "strict.yaml"))],
                      rc=(2,), expect=("bad segmentation", "data.skip_bad_images")))
    skip = dict(strict, output_dir=str(tmp / "skip"))
    skip["data"] = {**strict["data"], "skip_bad_images": True,
                    "val": {"image_dir": str(val_dir), "ann_file": str(empty_val)}}
    skip["train"] = {**base["train"], "eval_every": 1}
    cases.append(Case("train_skip_bad_eval_empty_segmentation",
                      ["solq", "train", "--config", str(write_config(skip, tmp / "skip.yaml"))], rc=(0,),
                      results={str(tmp / "skip" / "checkpoint.pth"): checkpoint_complete}))

    # ---- corrupt checkpoint: refused, not silently evaluated
    corrupt = overwrite_middle(weights, tmp / "corrupt.pth")
    cases.append(Case("eval_corrupt_checkpoint", ["solq", "eval", "--config", str(config), "--weights", str(corrupt),
                                                  "--out", str(tmp / "m.json")],
                      rc=(2,), expect=("corrupt",), results={str(tmp / "m.json"): json_complete}, in_process=True))

    # ---- predict a folder with every bad image kind, ids from the annotation file
    folder = tmp / "predict_in"
    shutil.copytree(val_dir, folder)
    listing = json.loads(val_ann.read_text())
    rng = np.random.default_rng(0)
    for k, kind in enumerate(BAD_IMAGE_KINDS):
        path = write_bad_image(kind, folder, rng)
        name = path.name if path is not None else "missing.png"
        listing["images"].append({"id": 1000 + k, "file_name": name, "height": 48, "width": 48})
    (folder / "unlisted.png").write_bytes((folder / "grayscale.png").read_bytes())
    ann = tmp / "predict.json"
    ann.write_text(json.dumps(listing))
    cases.append(Case("predict_bad_images", ["solq", "predict", "--config", str(config), "--weights", str(weights),
                                             str(folder), "--ann", str(ann), "--out", str(tmp / "pred"),
                                             "--no-draw", "--score-threshold", "0"],
                      rc=(0,), expect=("3 images skipped",), in_process=True,
                      results={str(tmp / "pred" / "results.json"): _loads_against(ann)}))

    # ---- a corrupt image read by a DataLoader worker: one line, exit 2
    work = tmp / "worker_imgs"
    shutil.copytree(train_dir, work)
    first = sorted(work.iterdir())[0]
    first.write_bytes(first.read_bytes()[:200])
    workers = dict(base, output_dir=str(tmp / "workers"))
    workers["data"] = {**base["data"], "num_workers": 1, "train": {"image_dir": str(work), "ann_file": str(train_ann)}}
    cases.append(Case("train_worker_corrupt_image", ["solq", "train", "--config",
                                                     str(write_config(workers, tmp / "workers.yaml"))],
                      rc=(2,), expect=("cannot read image",), in_process=True))

    # ---- overrides after --resume; one syntax for predict too
    shutil.copytree(tmp / "run", tmp / "resume")
    cases.append(Case("resume_overrides_after_flag",
                      ["solq", "train", "--config", str(config), "train.epochs=2", "--resume",
                       f"output_dir={tmp / 'resume'}"], rc=(0,), in_process=True,
                      results={str(tmp / "resume" / "checkpoint.pth"): checkpoint_complete}))
    cases.append(Case("lr_nan", ["solq", "train", "--config", str(config), "train.lr=nan"], rc=(2,),
                      expect=("train.lr must be a finite number",), in_process=True))
    (tmp / "notes.pth").write_text("not a state dict\n")
    cases.append(Case("backbone_weights_not_state_dict",
                      ["solq", "train", "--config", str(config), f"model.backbone_weights={tmp / 'notes.pth'}"],
                      rc=(2,), expect=("not a readable torch state dict",), in_process=True))
    return run_cases(cases, workers=2)


CASES = ["bench_bad_annotations", "info_npy", "info_header_not_dict", "info_unknown_params",
         "train_bad_annotations_strict", "train_skip_bad_eval_empty_segmentation", "eval_corrupt_checkpoint",
         "predict_bad_images", "train_worker_corrupt_image", "resume_overrides_after_flag", "lr_nan",
         "backbone_weights_not_state_dict"]


@pytest.mark.parametrize("name", CASES)
def test_cli_case_is_handled(outcomes, name):
    outcome = outcomes[name]
    problems = outcome.problems()
    assert not problems, f"{name}: {problems}; stderr tail: {outcome.stderr[-800:]}"


def test_every_case_ran(outcomes):
    assert sorted(outcomes) == sorted(CASES)
    print("\n".join(f"{name}: {o.seconds:.1f} s, exit {o.rc}" for name, o in outcomes.items()))


def test_predict_uses_dataset_ids(outcomes):
    out = outcomes["predict_bad_images"]
    results = json.loads(Path(next(iter(out.case.results))).read_text())
    ann = json.loads(Path(out.case.argv[out.case.argv.index("--ann") + 1]).read_text())
    ids = {img["file_name"]: img["id"] for img in ann["images"]}
    assert results and all(r["image_id"] == ids[r["file_name"]] for r in results)
    predicted = {r["file_name"] for r in results}
    assert {"grayscale.png", "rgba.png", "cmyk.jpg", "one_pixel.png"} <= predicted
    assert not predicted & {"truncated.jpg", "not_an_image.png", "unlisted.png"}


# ------------------------------------------------------------------------------------ in-process
def test_non_finite_stop_names_the_weighted_term():
    from solq.engine import _non_finite_term

    terms = {"loss_ce": torch.tensor(0.5), "loss_bbox": torch.tensor(2.0)}
    total = torch.tensor(float("inf"))
    msg = _non_finite_term(terms, {"loss_ce": 2.0, "loss_bbox": 1e39}, total)
    assert "weighted loss term loss_bbox" in msg and "total" not in msg
    msg = _non_finite_term({"loss_ce": torch.tensor(float("nan"))}, {"loss_ce": 2.0}, total)
    assert msg.startswith("loss term loss_ce is nan")


def test_pretrained_weights_with_group_norm_say_frozen_bn():
    import torchvision

    from solq.models.backbone import Backbone

    state = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(ValueError, match="need model.backbone_norm=frozen_bn"):
        Backbone("resnet18", weights=state, norm="group_norm")


def test_stale_save_temporaries_are_removed(tmp_path):
    from solq.checkpoint import save_checkpoint

    target = tmp_path / "checkpoint.pth"
    stale = tmp_path / ".checkpoint.pth.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    other = tmp_path / ".other.pth.abc123.tmp"
    other.write_bytes(b"y")
    save_checkpoint({"epoch": 1}, target)
    assert not stale.exists() and other.exists() and target.exists()


def test_unfitted_codec_is_refused_at_save(tmp_path):
    from maskcodec import get_codec

    with pytest.raises(ValueError, match="unfitted PCACodec"):
        get_codec("pca", mask_size=8, n_components=4).save(tmp_path / "pca.npz")
    assert not (tmp_path / "pca.npz").exists()


def test_worker_error_becomes_its_own_line():
    from solq.cli import _one_line

    msg = ("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
           '  File "x.py", line 1, in f\nValueError: cannot read image a.jpg: image file is truncated\n')
    assert _one_line(msg) == "cannot read image a.jpg: image file is truncated"


@pytest.mark.parametrize("argv, overrides", [
    (["train", "--config", "c.yaml", "--resume", "train.epochs=3"], ["train.epochs=3"]),
    (["train", "a.b=1", "--config", "c.yaml", "c.d=2", "--resume"], ["a.b=1", "c.d=2"]),
    (["eval", "--config", "c", "--weights", "w", "x.y=1", "--split", "val"], ["x.y=1"]),
    (["predict", "--config", "c", "--weights", "w", "imgs", "m.k=1", "--out", "o", "more"], ["m.k=1"]),
])
def test_overrides_anywhere(argv, overrides):
    from solq.cli import _parse_args

    args = _parse_args(argv)
    assert args.overrides == overrides
    if argv[0] == "predict":
        assert args.inputs == ["imgs", "more"]


def test_stray_words_are_still_rejected():
    from solq.cli import _parse_args

    with pytest.raises(SystemExit) as info:
        _parse_args(["train", "--config", "c.yaml", "oops"])
    assert info.value.code == 2


def test_an_evaluation_error_keeps_the_epoch(tmp_path, monkeypatch):
    import solq.engine as engine
    from solq.checkpoint import load_checkpoint
    from solq.config import config_from_dict

    cfg = tiny_config(tmp_path)
    cfg["train"]["eval_every"] = 1

    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(engine, "evaluate", broken)
    with pytest.raises(engine.TrainingError, match="evaluation after epoch 0 failed .*the epoch is saved"):
        engine.train(config_from_dict(cfg))
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pth")
    assert (state["epoch"], state["iter_in_epoch"]) == (1, 0)
