"""benchmarks/msda_speed.py: the training-step memory section runs both cores on the same step, and its
options are checked (the figures themselves come from the benchmark, not from here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import msda_speed  # noqa: E402


@pytest.fixture(scope="module")
def steps() -> dict[str, list[dict]]:
    """One small training step per core, in this process (the benchmark runs each in a fresh one)."""
    config = ROOT / "configs" / "shapes_tiny.yaml"
    return {b: [msda_speed._child_r50_train(b, (64, 96), config, objects=3)] for b in ("reference", "numba")}


def test_both_cores_take_the_same_step(steps):
    ref, fused = steps["reference"][0], steps["numba"][0]
    assert ref["ran"] == ["reference"] and fused["ran"] == ["numba"]
    assert ref["config"] == fused["config"] == "configs/shapes_tiny.yaml"
    assert fused["loss"] == pytest.approx(ref["loss"], rel=1e-5)  # same model, inputs, targets and dropout
    for r in (ref, fused):
        assert r["times_s"][0] >= r["forward_s"] > 0
        assert r["peak_MiB"] >= r["forward_peak_MiB"] >= r["before_MiB"] - 1 > 0
        assert r["process_peak_MiB"] >= r["peak_MiB"]
        assert r["saved_MiB"] > 0


def test_report_has_the_table_and_the_target_line(steps):
    a = argparse.Namespace(device="cpu", threads=1, repeats=1, r50_train_size=(64, 96))
    text = msda_speed.report(a, {"r50_train": steps}) + msda_speed.targets({"r50_train": steps}, (64, 96))
    assert "## shapes_tiny training step at 64x96 (configs/shapes_tiny.yaml" in text
    assert "| reference (reference) |" in text and "| numba (numba) |" in text
    fused = steps["numba"][0]["peak_MiB"] - steps["numba"][0]["before_MiB"]
    ref = steps["reference"][0]["peak_MiB"] - steps["reference"][0]["before_MiB"]
    verdict = "met." if fused < msda_speed.PEAK_NOISE * ref else "NOT met."
    assert f"* shapes_tiny training step at 64x96 peak memory on numba lower than on the reference: {fused:.0f} vs " \
           f"{ref:.0f} MiB of peak RSS above the built model ({fused / ref:.2f}x), {verdict}" in text


def test_options_are_checked(capsys):
    assert msda_speed.parse_size("800x1216") == (800, 1216)
    for bad in ("800", "axb", "16x16"):
        with pytest.raises(argparse.ArgumentTypeError, match="800x1216|at least 32"):
            msda_speed.parse_size(bad)
    with pytest.raises(SystemExit) as exc:
        msda_speed.main(["--sections", "core,bogus"])
    assert exc.value.code == 2 and "unknown ['bogus']" in capsys.readouterr().err
