"""Table 3 ablation sweeps: definitions, codec fitting on the training split, resumability, tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from solq import ablation
from solq.ablation import (
    AblationError,
    CodecSpec,
    entry_config,
    format_table,
    run_sweep,
    sweep_definition,
)
from solq.config import load_config

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "ablations" / "shapes_cpu.yaml"


@pytest.fixture(scope="module")
def base_cfg():
    return load_config(BASE)


def _cfgs(table: str, base_cfg, scale: str = "cpu", user=()):
    sweep = sweep_definition(table, scale)
    return sweep, [entry_config(base_cfg, e, "/tmp/unused", scale=scale, user_overrides=user) for e in sweep.entries]


# ---------------------------------------------------------------------------- definitions
def test_3a_codec_types(base_cfg):
    sweep, cfgs = _cfgs("3a", base_cfg)
    by = {e.name: c for e, c in zip(sweep.entries, cfgs)}
    assert list(by) == ["det_only", "flatten", "sparse", "pca", "dct"]
    assert by["det_only"].model.with_vector is False
    assert all(c.model.with_vector for n, c in by.items() if n != "det_only")
    assert (by["flatten"].codec.name, by["flatten"].codec.mask_size, by["flatten"].codec.n_components) == ("flatten", 128, 784)
    assert by["flatten"].loss.vector_loss == "l2_dice"
    for name in ("sparse", "pca", "dct"):
        c = by[name]
        assert (c.codec.name, c.codec.mask_size, c.codec.n_components) == (name, 128, 256)
        assert c.loss.vector_loss == "l1"
    # the cpu scale: a from-scratch ResNet-18 with GroupNorm on C3-C5 (C5 alone is 5x5 cells at 160 px)
    assert all(c.model.num_feature_levels == 3 and c.model.backbone == "resnet18" for c in cfgs)
    assert all(c.model.backbone_norm == "group_norm" for c in cfgs)
    full = entry_config(base_cfg, sweep.entries[-1], "/tmp/unused", scale="full")
    assert full.model.num_feature_levels == 1 and full.model.backbone_norm == "frozen_bn"
    assert all(c.train.device == "cpu" for c in cfgs)
    assert [e.codec.requires_fit if e.codec else None for e in sweep.entries] == [None, False, True, True, False]


def test_3b_lambda_on_last_layer_only(base_cfg):
    sweep, cfgs = _cfgs("3b", base_cfg)
    assert [c.loss.vector for c in cfgs] == [0.3, 0.7, 1.0, 2.0, 3.0, 4.0]
    assert all(c.loss.vector_layers == 1 for c in cfgs)
    assert all(c.codec.name == "dct" and c.codec.n_components == 256 and c.codec.mask_size == 128 for c in cfgs)


def test_3c_decoder_layers_with_vector_loss(base_cfg):
    sweep, cfgs = _cfgs("3c", base_cfg)
    assert [c.loss.vector_layers for c in cfgs] == [1, 2, 3, 4, 5, 6]
    assert all(c.model.dec_layers == 6 for c in cfgs)
    assert all(c.loss.vector == base_cfg.loss.vector for c in cfgs)


def test_3d_changes_mask_size_keeps_nk(base_cfg):
    _, cfgs = _cfgs("3d", base_cfg)
    assert [c.codec.mask_size for c in cfgs] == [64, 96, 128, 256]
    assert {c.codec.n_components for c in cfgs} == {256}


def test_3e_changes_nk_keeps_mask_size(base_cfg):
    _, cfgs = _cfgs("3e", base_cfg)
    assert [c.codec.n_components for c in cfgs] == [144, 256, 300, 400]
    assert {c.codec.mask_size for c in cfgs} == {128}


def test_tiny_scale_shrinks_codecs_consistently(base_cfg):
    for table in ablation.TABLES:
        sweep, cfgs = _cfgs(table, base_cfg, scale="tiny")
        for e, c in zip(sweep.entries, cfgs):
            assert c.train.max_iters is not None and c.train.max_iters <= 5
            if e.codec is not None:
                assert (c.codec.name, c.codec.mask_size, c.codec.n_components) == (
                    e.codec.name, e.codec.mask_size, e.codec.n_components)
                assert c.codec.n_components <= c.codec.mask_size ** 2
    flat = sweep_definition("3a", "tiny").entry("flatten").codec
    assert int(np.sqrt(flat.n_components)) ** 2 == flat.n_components


def test_user_overrides_win_over_entries(base_cfg):
    _, cfgs = _cfgs("3b", base_cfg, user=["loss.vector_layers=2", "train.epochs=1"])
    assert all(c.loss.vector_layers == 2 and c.train.epochs == 1 for c in cfgs)


def test_bad_names():
    with pytest.raises(AblationError, match="unknown table"):
        sweep_definition("3z")
    with pytest.raises(AblationError, match="unknown scale"):
        sweep_definition("3a", "huge")
    assert sweep_definition("Table3B").table == "3b"


# ---------------------------------------------------------------------------- fake data + fake training
def _polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w * 0.6, y + h, x, y + h * 0.8]]


def _write_coco(path: Path, n_images: int, per_image: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n_images):
        images.append({"id": seed * 1000 + i + 1, "file_name": f"{i:04d}.png", "height": 64, "width": 64})
        for _ in range(per_image):
            x, y = rng.uniform(2, 30, size=2)
            w, h = rng.uniform(10, 30, size=2)
            anns.append({"id": len(anns) + 1 + seed * 100000, "image_id": images[-1]["id"], "category_id": 1,
                         "bbox": [x, y, w, h], "area": float(w * h * 0.7), "iscrowd": 0,
                         "segmentation": _polygon(x, y, w, h)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "thing"}]}))
    return len(anns)


@pytest.fixture
def coco_base(tmp_path):
    """A COCO-format base config whose images are never read (training is faked)."""
    # 8 train / 4 val images: exactly what the tiny scale keeps (data.*.limit)
    n_train = _write_coco(tmp_path / "d" / "train.json", n_images=8, per_image=3, seed=1)
    n_val = _write_coco(tmp_path / "d" / "val.json", n_images=4, per_image=2, seed=2)
    (tmp_path / "d" / "img").mkdir()
    cfg_path = tmp_path / "base.yaml"
    cfg_path.write_text(
        "data:\n"
        "  train: {image_dir: d/img, ann_file: d/train.json}\n"
        "  val: {image_dir: d/img, ann_file: d/val.json}\n"
    )
    return cfg_path, n_train, n_val


class FakeEngine:
    """Stands in for solq.engine: records calls, writes a checkpoint, returns made-up-but-derived metrics."""

    def __init__(self, fail_on: int | None = None):
        self.calls: list[tuple[str, bool]] = []
        self.evals: list[str] = []
        self.fail_on = fail_on

    @staticmethod
    def metrics(cfg) -> dict:
        # a deterministic function of the config so tables can be checked
        ap = 10.0 * cfg.loss.vector + cfg.codec.n_components / 100.0
        stats = {k: ap for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
        return {"bbox": dict(stats, AP=ap + 1), "segm": stats, "boundary": stats}

    def train(self, cfg, resume: bool) -> dict:
        import torch

        name = Path(cfg.output_dir).name
        self.calls.append((name, resume))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise KeyboardInterrupt("simulated interruption")
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        torch.save({"epoch": cfg.train.epochs, "iter_in_epoch": 0, "global_step": 7},
                   Path(cfg.output_dir) / "checkpoint.pth")
        return {"metrics": self.metrics(cfg), "global_step": 7}

    def evaluate(self, cfg, checkpoint) -> dict:
        self.evals.append(Path(cfg.output_dir).name)
        return self.metrics(cfg)


# ---------------------------------------------------------------------------- learned codecs
def test_learned_codecs_are_fitted_on_the_training_split_only(coco_base, tmp_path):
    import maskcodec

    cfg_path, n_train, n_val = coco_base
    fake = FakeEngine()
    seen = {}

    def train(cfg, resume):
        seen[Path(cfg.output_dir).name] = cfg.codec.path
        return fake.train(cfg, resume)

    run = run_sweep("3a", cfg_path, tmp_path / "out", scale="tiny", only=["pca", "sparse"], train_fn=train,
                    eval_fn=fake.evaluate, with_oracle=False, log=lambda s: None)
    assert set(seen) == {"pca", "sparse"}
    for name in ("pca", "sparse"):
        path = Path(seen[name])
        assert path.is_file() and path.parent == run.out_dir / "codecs"
        codec = maskcodec.load(path)
        assert codec.n_samples_seen_ == n_train != n_val  # every training mask, no validation mask
        spec = sweep_definition("3a", "tiny").entry(name).codec
        assert (codec.mask_size, codec.n_components) == (spec.mask_size, spec.n_components)
    # fitted once: a second sweep needing the same codec reuses the file
    mtime = Path(seen["pca"]).stat().st_mtime_ns
    (run.out_dir / "entries" / "pca" / "result.json").unlink()
    run_sweep("3a", cfg_path, tmp_path / "out", scale="tiny", only=["pca"], train_fn=train,
              eval_fn=fake.evaluate, with_oracle=False, log=lambda s: None)
    assert Path(seen["pca"]).stat().st_mtime_ns == mtime
    assert run.results["det_only"] is None and run.results["dct"] is None  # not in `only`


def test_fit_codec_refuses_too_few_masks_for_pca(coco_base, tmp_path):
    cfg_path, n_train, _ = coco_base
    with pytest.raises(AblationError, match="at least"):
        ablation.fit_codec(CodecSpec("pca", 16, n_train + 5), tmp_path / "d" / "train.json", tmp_path / "x.npz")


# ---------------------------------------------------------------------------- resumability
def test_interrupted_sweep_continues_without_retraining(coco_base, tmp_path):
    cfg_path, *_ = coco_base
    out = tmp_path / "out"
    first = FakeEngine(fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep("3e", cfg_path, out, scale="tiny", train_fn=first.train, eval_fn=first.evaluate,
                  with_oracle=False, log=lambda s: None)
    names = [e.name for e in sweep_definition("3e", "tiny").entries]
    assert [c[0] for c in first.calls] == names[:2]
    entries = out / "table3e" / "entries"
    assert (entries / names[0] / "result.json").is_file()
    assert not (entries / names[1] / "result.json").exists()

    second = FakeEngine()
    run = run_sweep("3e", cfg_path, out, scale="tiny", train_fn=second.train, eval_fn=second.evaluate,
                    with_oracle=False, log=lambda s: None)
    assert [c[0] for c in second.calls] == names[1:]  # the finished entry is not retrained
    assert run.skipped == names[:1] and run.trained == names[1:]
    assert all(r is not None for r in run.results.values())
    assert {r["entry"] for r in run.results.values()} == set(names)

    third = FakeEngine()
    run = run_sweep("3e", cfg_path, out, scale="tiny", train_fn=third.train, eval_fn=third.evaluate,
                    with_oracle=False, log=lambda s: None)
    assert third.calls == [] and run.skipped == names


def test_half_finished_entry_resumes_from_its_checkpoint(coco_base, tmp_path):
    import torch

    cfg_path, *_ = coco_base
    out = tmp_path / "out"
    names = [e.name for e in sweep_definition("3d", "tiny").entries]
    entries = out / "table3d" / "entries"
    (entries / names[0]).mkdir(parents=True)
    torch.save({"epoch": 0, "iter_in_epoch": 1, "global_step": 1}, entries / names[0] / "checkpoint.pth")
    (entries / names[1]).mkdir(parents=True)  # whole schedule done, killed before the result was written
    torch.save({"epoch": 1, "iter_in_epoch": 0, "global_step": 2}, entries / names[1] / "checkpoint.pth")
    fake = FakeEngine()
    run = run_sweep("3d", cfg_path, out, scale="tiny", train_fn=fake.train, eval_fn=fake.evaluate,
                    with_oracle=False, log=lambda s: None)
    assert fake.calls == [(names[0], True)] + [(n, False) for n in names[2:]]
    assert fake.evals == [names[1]]
    assert run.results[names[0]]["resumed"] and run.results[names[1]]["resumed"]


def test_checkpoint_progress_reads_through_load_checkpoints_checks(tmp_path):
    import torch

    from solq.checkpoint import save_checkpoint

    ours = tmp_path / "ours.pth"
    save_checkpoint({"epoch": 2, "iter_in_epoch": 3, "global_step": 7}, ours)
    assert ablation.checkpoint_progress(ours) == {"epoch": 2, "iter_in_epoch": 3, "global_step": 7}
    torn = tmp_path / "torn.pth"
    torn.write_bytes(ours.read_bytes()[: ours.stat().st_size // 2])
    assert ablation.checkpoint_progress(torn) is None
    future = tmp_path / "future.pth"  # a newer checkpoint format: refused by load_checkpoint, so not resumed
    torch.save({"format": "solq-checkpoint", "format_version": 99, "epoch": 1}, future)
    assert ablation.checkpoint_progress(future) is None
    assert ablation.checkpoint_progress(tmp_path / "missing.pth") is None


def test_train_seconds_sums_the_epochs_of_the_metrics_log(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"type": "epoch", "seconds": 1.5}\n{"type": "train", "seconds": 9}\n'
                   '{"type": "epoch", "seconds": 2.0}\n{"type": "ep')  # a torn last line is ignored
    assert ablation.train_seconds(log) == 3.5
    assert ablation.train_seconds(tmp_path / "none.jsonl") is None


def test_codec_spec_is_a_bench_setting():
    from maskcodec.bench import Setting

    spec = CodecSpec("pca", 32, 16)
    assert isinstance(spec, Setting) and spec.name == spec.codec == "pca"
    assert spec.key == "pca_N32_k16" and spec.requires_fit


def test_cli_options_may_follow_the_overrides(capsys):
    assert ablation.main_ablate(["3e", "loss.vector=2", "--dry-run", "--config", str(BASE), "--scale", "tiny"]) == 0
    assert "nk_144" in capsys.readouterr().out
    assert ablation.main_ablate(["3e", "--dry-run"]) == 2
    assert "--config is required" in capsys.readouterr().err


# ---------------------------------------------------------------------------- tables and plots
def test_table_has_paper_layout_paper_numbers_and_oracle(coco_base, tmp_path):
    sweep = sweep_definition("3a", "cpu")
    metrics = {"segm": {"AP": 12.345, "AP50": 30.0, "AP75": 9.0, "APs": -1.0, "APm": 5.0, "APl": 20.0},
               "bbox": {"AP": 25.0}}
    results = {e.name: {"metrics": metrics} for e in sweep.entries}
    results["sparse"] = None
    oracle = {"dct": {"ap": 88.8}, "pca": {"ap": 77.7}}
    table = format_table(sweep, results, oracle)
    lines = table.splitlines()
    paper = [" paper AP^seg ", " paper APs^seg ", " paper APm^seg ", " paper APl^seg ", " paper AP^box ",
             " paper APs^box ", " paper APm^box ", " paper APl^box "]
    assert lines[0].split("|")[1:-1] == [" codec ", " AP^seg ", " AP50 ", " AP75 ", " APs ", " APm ", " APl ",
                                          " AP^box ", *paper, " oracle AP "]
    row = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]] for l in lines[2:]}
    # ours, then Tab. 3a's DCT line of the paper (../shared/paper), then the oracle
    assert row["DCT *"] == ["12.3", "30.0", "9.0", "–", "5.0", "20.0", "25.0",
                            "32.6", "12.8", "37.1", "54.5", "41.3", "20.7", "45.4", "60.1", "88.8"]
    assert row["PCA"][7] == "31.6" and row["PCA"][11] == "41.0" and row["PCA"][-1] == "77.7"
    assert row["Det. only"][0] == "–" and row["Det. only"][6] == "25.0"  # no masks, boxes only
    assert row["Det. only"][7:] == ["–"] * 4 + ["39.4", "20.6", "43.0", "55.5", "–"]
    assert row["Sparse coding (not run)"][:7] == ["–"] * 7 and row["Sparse coding (not run)"][7] == "11.3"
    # 3b-3e: the paper's AP, AP50, AP75 for masks and boxes (Tab. 3e, n_k = 400)
    t3e = format_table(sweep_definition("3e"), {})
    assert t3e.splitlines()[0].count("paper") == 6
    assert [c.strip() for c in t3e.splitlines()[-1].split("|")[9:-2]] == ["30.9", "55.1", "30.2", "40.6", "61.3", "43.0"]
    assert "256 *" in t3e


def test_report_files(coco_base, tmp_path):
    cfg_path, *_ = coco_base
    fake = FakeEngine()
    run = run_sweep("3b", cfg_path, tmp_path / "out", scale="tiny", train_fn=fake.train, eval_fn=fake.evaluate,
                    with_oracle=False, log=lambda s: None, command="solq ablate 3b ...")
    md, png, js = run.files
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert "solq ablate 3b ..." in text and "| λ_vec |" in text and "tiny" in text
    data = json.loads(js.read_text())
    assert data["paper_choice"] == "lambda_3"
    # the fake's AP grows with λ: the table shows it in order
    aps = [data["results"][e.name]["metrics"]["segm"]["AP"] for e in run.sweep.entries]
    assert aps == sorted(aps)


def test_oracle_ap_uses_the_validation_annotations(coco_base, tmp_path):
    _, n_train, n_val = coco_base
    row = ablation.oracle_ap(CodecSpec("dct", 16, 16), tmp_path / "d" / "val.json")
    assert row["eval_masks"] == n_val
    assert 0.0 < row["ap"] <= 100.0


def test_cli_dry_run(capsys):
    assert ablation.main_ablate(["3c", "--config", str(BASE), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "layers_6" in out and "loss.vector_layers=6" in out
    assert ablation.main_ablate(["3q", "--config", str(BASE), "--dry-run"]) == 2


def test_add_ablate_parser_wires_a_subcommand():
    import argparse

    parser = argparse.ArgumentParser(prog="solq")
    sub = parser.add_subparsers(dest="command")
    ablation.add_ablate_parser(sub)
    args = parser.parse_args(["ablate", "3e", "--config", "c.yaml", "--scale", "tiny", "train.epochs=2"])
    assert args.func is ablation.ablate_from_args
    assert (args.table, args.config, args.scale, args.overrides) == ("3e", "c.yaml", "tiny", ["train.epochs=2"])


# ---------------------------------------------------------------------------- end to end (real engine)
@pytest.mark.slow
def test_tiny_real_entry_end_to_end(tmp_path):
    """One real entry of Tab. 3e at the tiny scale: shapes data, engine training, COCO evaluation, oracle."""
    run = run_sweep("3e", BASE, tmp_path / "out", scale="tiny", only=["nk_256"], log=lambda s: None)
    res = run.results["nk_256"]
    assert res is not None and res["scale"] == "tiny"
    for iou in ("segm", "bbox"):
        assert 0.0 <= res["metrics"][iou]["AP"] <= 100.0
    assert 0.0 < run.oracle["nk_256"]["ap"] <= 100.0
    assert (run.out_dir / "entries" / "nk_256" / "checkpoint.pth").is_file()
    assert "nk_256" not in run.trained or res["global_step"] == 2
