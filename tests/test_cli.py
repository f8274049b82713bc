"""The ``maskcodec`` command line: bench end to end, fit/info, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from maskcodec import cli

SMALL = ["--max-masks", "60", "--sizes", "32", "--dims", "64", "--codecs", "dct,pca,flatten"]


def _run(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_bench_end_to_end_on_builtin_sample(tmp_path, capsys):
    out_dir = tmp_path / "bench"
    rc, out, err = _run(["bench", *SMALL, "--out", str(out_dir)], capsys)
    assert rc == 0, err
    assert "| codec" in out and "IoU img" in out
    for name in ("results.json", "results.csv", "RESULTS.md", "iou_vs_nk.png", "iou_vs_N.png",
                 "ap_vs_nk.png", "throughput.png", "examples.png"):
        assert (out_dir / name).is_file(), name
    data = json.loads((out_dir / "results.json").read_text())
    assert {r["codec"] for r in data["rows"]} == {"dct", "pca", "flatten"}
    assert 0 < data["meta"]["eval_masks"] <= 60
    assert data["meta"]["command"].startswith("maskcodec bench --max-masks 60")
    with open(out_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(data["rows"]) and 0 <= float(rows[0]["iou_img_mean"]) <= 1
    md = (out_dir / "RESULTS.md").read_text()
    assert "maskcodec bench --max-masks 60" in md and "![examples](examples.png)" in md
    assert (out_dir / "examples.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_quiet_prints_nothing(tmp_path, capsys):
    rc, out, err = _run(["bench", "--max-masks", "10", "--sizes", "16", "--dims", "16", "--codecs", "dct",
                         "--no-plots", "--quiet", "--out", str(tmp_path / "q")], capsys)
    assert rc == 0 and out == "" and err == ""
    assert (tmp_path / "q" / "RESULTS.md").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ann", "/nonexistent/instances.json"], "instances.json"),
        (["--codecs", "dct,jpeg"], "unknown codec 'jpeg'"),
        (["--sizes", "8", "--dims", "65"], "n_k > N**2"),
    ],
)
def test_bench_bad_input_exit_2_one_line(tmp_path, capsys, extra, message):
    rc, out, err = _run(["bench", "--quiet", "--out", str(tmp_path / "o"), "--codecs", "dct", *extra], capsys)
    assert rc == 2
    assert err.startswith("maskcodec: error:") and err.count("\n") == 1 and message in err
    assert "Traceback" not in err


def test_bench_not_coco_file(tmp_path, capsys):
    bad = tmp_path / "notcoco.json"
    bad.write_text(json.dumps({"hello": "world"}))
    rc, _, err = _run(["bench", "--quiet", "--ann", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and err.startswith("maskcodec: error:") and err.count("\n") == 1


def test_bench_cuda_without_gpu(tmp_path, capsys):
    from maskcodec.backend import cuda_status

    if cuda_status()[0]:
        pytest.skip("a CUDA GPU is present")
    rc, _, err = _run(["bench", "--quiet", "--device", "cuda", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "CUDA" in err and err.count("\n") == 1


def test_bench_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    rc, _, err = _run(["bench", "--quiet", "--codecs", "dct", "--sizes", "8", "--dims", "8", "--out", str(f)], capsys)
    assert rc == 2 and "not a directory" in err


def test_fit_and_info_round_trip(tmp_path, capsys):
    path = tmp_path / "pca.npz"
    rc, out, err = _run(["fit", "pca", "--size", "16", "--dims", "8", "--max-masks", "50", "--out", str(path)], capsys)
    assert rc == 0, err
    assert path.is_file() and "fitted pca on 50 masks" in out
    rc, out, err = _run(["info", str(path)], capsys)
    assert rc == 0, err
    assert "n_components = 8" in out and "mask_size = 16" in out
    rc, _, err = _run(["info", str(tmp_path / "missing.npz")], capsys)
    assert rc == 2 and err.startswith("maskcodec: error:")


def test_console_script_runs_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "maskcodec.cli", "bench", "--quiet", "--ann", str(tmp_path / "missing.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("maskcodec: error:") and "Traceback" not in proc.stderr
