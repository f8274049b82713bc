"""solq.engine: training loop, exact resume, data parallel equivalence, non-finite loss handling."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from solq.config import load_config
from solq.engine import TrainingError, param_groups, read_metrics, train

ROOT = Path(__file__).resolve().parents[1]


def tiny_overrides(data_root, out, **extra):
    """A SOLQ small enough for CPU tests: resnet18, d_model 32, 1+1 layers, 10 queries, 64 px shapes."""
    ov = {
        "model.backbone": "resnet18", "model.d_model": 32, "model.nheads": 4, "model.num_feature_levels": 1,
        "model.n_points": 2, "model.num_queries": 10, "model.enc_layers": 1, "model.dec_layers": 2,
        "model.dim_feedforward": 64, "model.vector_hidden_dim": 64, "model.dropout": 0.1,
        "codec.mask_size": 16, "codec.n_components": 16,
        "data.shapes.root": str(data_root), "data.shapes.n_train": 4, "data.shapes.n_val": 2,
        "data.shapes.image_size": 64, "data.shapes.n_classes": 2, "data.shapes.max_objects": 2,
        "data.scales": [56, 64], "data.max_size": 96, "data.crop": True, "data.num_workers": 0,
        "data.batch_size": 2, "train.epochs": 2, "train.log_every": 1, "train.eval_every": 0,
        "train.lr": 1e-3, "train.lr_backbone": 1e-4, "train.num_threads": 1, "output_dir": str(out),
    }
    ov.update(extra)
    return [f"{k}={json.dumps(v)}" for k, v in ov.items()]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    from solq.data import write_shapes_dataset

    root = tmp_path_factory.mktemp("shapes") / "data"
    write_shapes_dataset(root, n_images=4, n_val=2, image_size=64, n_classes=2, max_objects=2, seed=0)
    return root


def losses(out):
    return [(r["step"], r["loss"]) for r in read_metrics(Path(out) / "metrics.jsonl") if r["type"] == "train"]


def test_training_lowers_the_loss_on_a_repeated_batch(shapes_root, tmp_path):
    # the 4 training images in one batch, no augmentation: every step sees the same batch
    cfg = load_config(None, tiny_overrides(shapes_root, tmp_path / "run", **{
        "data.batch_size": 4, "data.crop": False,
        "data.hflip": False, "data.scales": [64], "train.epochs": 5, "model.dropout": 0.0, "train.lr": 2e-3,
        "data.shapes.root": str(shapes_root)}))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"type": "train", "step": 1, "loss": -1.0}\n')  # stale run
    summary = train(cfg)
    values = [v for _, v in losses(tmp_path / "run")]
    assert summary["global_step"] == 5 and len(values) == 5
    assert values[-1] < 0.9 * values[0] and min(values[3:]) < min(values[:2]), values
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "checkpoint.pth").is_file()
    epochs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == list(range(5))


def test_a_detector_without_mask_head_is_evaluated_on_boxes_only(shapes_root, tmp_path):
    # a det-only model's mask AP would be a meaningless 0, which reads like a broken mask head
    cfg = load_config(None, tiny_overrides(shapes_root, tmp_path / "det", **{
        "model.with_vector": False, "train.epochs": 1, "train.eval_every": 1}))
    train(cfg)
    ev = [r for r in read_metrics(tmp_path / "det" / "metrics.jsonl") if r["type"] == "eval"]
    assert len(ev) == 1 and "bbox" in ev[0] and "segm" not in ev[0] and "boundary" not in ev[0]


def test_resume_mid_epoch_gives_identical_losses(shapes_root, tmp_path):
    """Stop after 3 steps (mid-epoch 1), resume, and compare with an uninterrupted run, bit for bit."""
    full = load_config(None, tiny_overrides(shapes_root, tmp_path / "full"))
    train(full)
    part = tiny_overrides(shapes_root, tmp_path / "part", **{"train.checkpoint_every_iters": 1})
    train(load_config(None, part + ["train.max_iters=3"]))
    assert len(losses(tmp_path / "part")) == 3
    torch.manual_seed(1234)  # whatever happens in between must not matter
    summary = train(load_config(None, part), resume=True)
    assert summary["global_step"] == 4
    assert losses(tmp_path / "part") == losses(tmp_path / "full")


def test_non_finite_loss_stops_with_a_clear_message(shapes_root, tmp_path, monkeypatch):
    from solq.models import SetCriterion

    real = SetCriterion.loss_boxes

    def broken(self, outputs, targets, indices, num_boxes):
        out = real(self, outputs, targets, indices, num_boxes)
        out["loss_bbox"] = out["loss_bbox"] * float("nan")
        return out

    monkeypatch.setattr(SetCriterion, "loss_boxes", broken)
    cfg = load_config(None, tiny_overrides(shapes_root, tmp_path / "nan", **{"train.checkpoint_every_iters": 1}))
    with pytest.raises(TrainingError, match=r"loss_bbox.*|image ids") as info:
        train(cfg)
    msg = str(info.value)
    assert "loss_bbox" in msg and "image ids [" in msg and "epoch 0, iteration 0" in msg
    assert not (tmp_path / "nan" / "checkpoint.pth").exists()


def test_param_groups_follow_deformable_detr(shapes_root, tmp_path):
    from solq.engine import build_model

    cfg = load_config(None, tiny_overrides(shapes_root, tmp_path))
    model = build_model(cfg, num_classes=2, n_vector=16)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert groups["main"]["lr"] == 1e-3 and groups["backbone"]["lr"] == 1e-4
    assert groups["linear_proj"]["lr"] == pytest.approx(1e-4)
    n = sum(len(g["params"]) for g in groups.values())
    assert n == sum(1 for p in model.parameters() if p.requires_grad)


KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from solq.config import load_config
    from solq.engine import train
    overrides = sys.argv[2:]
    def hook(epoch, it, step):
        if step == int(sys.argv[1]):
            os._exit(9)   # like kill -9: no cleanup, no final checkpoint
    train(load_config(None, overrides), on_step=hook)
    """
)


@pytest.mark.slow
def test_resume_after_hard_kill_in_subprocess(shapes_root, tmp_path):
    """A run killed with os._exit mid-epoch resumes (through the CLI) to the uninterrupted run's losses."""
    from solq.cli import main

    train(load_config(None, tiny_overrides(shapes_root, tmp_path / "full", **{"data.num_workers": 1})))
    ov = tiny_overrides(shapes_root, tmp_path / "killed", **{"train.checkpoint_every_iters": 2, "data.num_workers": 1})
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, "3"] + ov, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert len(losses(tmp_path / "killed")) == 3  # step 3 ran, its work is lost (last checkpoint: step 2)
    assert main(["train", "--config", str(tmp_path / "killed" / "config.yaml"), "--resume"]) == 0
    assert losses(tmp_path / "killed") == losses(tmp_path / "full")


DDP_SCRIPT = textwrap.dedent(
    """
    import sys
    from solq.config import load_config
    from solq.engine import train
    train(load_config(None, sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_two_process_gloo_matches_one_process(shapes_root, tmp_path):
    """torchrun with 2 CPU processes x batch 1 == 1 process x batch 2 (same images per step)."""
    # exactly one object per image: the vector loss is a mean over each process's own matched boxes (as in
    # official SOLQ) and DETR clamps num_boxes / world at 1, so unequal per-process box counts would
    # weight terms differently from a single process
    same = {"data.crop": False, "data.scales": [64], "data.hflip": False, "model.dropout": 0.0, "train.epochs": 1,
            "train.eval_every": 1, "data.shapes.empty_fraction": 0.0, "data.shapes.max_objects": 1,
            "data.shapes.root": str(tmp_path / "data")}
    train(load_config(None, tiny_overrides(shapes_root, tmp_path / "one", **same, **{"data.batch_size": 2})))
    ov = tiny_overrides(shapes_root, tmp_path / "two", **same, **{"data.batch_size": 1})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         str(script)] + ov,
        cwd=ROOT, capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _ in one] == [s for s, _ in two] == [1, 2]
    for (_, a), (_, b) in zip(one, two):
        assert b == pytest.approx(a, rel=1e-4)
    ev1 = [r for r in read_metrics(tmp_path / "one" / "metrics.jsonl") if r["type"] == "eval"][0]
    ev2 = [r for r in read_metrics(tmp_path / "two" / "metrics.jsonl") if r["type"] == "eval"][0]
    assert ev2["segm"]["AP"] == pytest.approx(ev1["segm"]["AP"], abs=1.0)
