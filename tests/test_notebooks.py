"""The notebooks run top to bottom (fast settings: SOLQ_NOTEBOOK_FAST=1) and match their .py sources.

The committed ``.ipynb`` files carry outputs; they are executed here from a copy, so the test never
rewrites them. To refresh them after editing a ``.py`` source::

    .venv/bin/jupytext --to ipynb notebooks/codec_tour.py
    .venv/bin/python -c "from tests.test_notebooks import execute; execute('notebooks/codec_tour.ipynb', fast=False, inplace=True)"
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "python3"


def _kernel_available() -> bool:
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        return KERNEL in KernelSpecManager().find_kernel_specs()
    except Exception:  # noqa: BLE001
        return False


def execute(path: str | os.PathLike, fast: bool = True, inplace: bool = False, timeout: int = 1800,
            workdir: str | os.PathLike | None = None):
    """Execute a notebook with the ``python3`` kernel of this interpreter; returns the executed notebook.

    jupyter_client replaces a kernelspec's ``python`` by ``sys.executable``, so the kernel runs in the
    same environment as the caller (checked by the first cell of the test below).
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    env_fast = os.environ.get("SOLQ_NOTEBOOK_FAST")
    os.environ["SOLQ_NOTEBOOK_FAST"] = "1" if fast else "0"
    try:
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=KERNEL,
                                         resources={"metadata": {"path": str(workdir or path.parent)}})
        client.execute()
    finally:
        if env_fast is None:
            os.environ.pop("SOLQ_NOTEBOOK_FAST", None)
        else:
            os.environ["SOLQ_NOTEBOOK_FAST"] = env_fast
    if inplace:
        nbformat.write(nb, path)
    return nb


def _outputs(nb, output_type: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == output_type]


def _text(nb) -> str:
    return "".join(o.get("text", "") for o in _outputs(nb, "stream"))


def _check_executed(nb, name: str) -> None:
    errors = _outputs(nb, "error")
    assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
    images = [o for o in _outputs(nb, "display_data") if "image/png" in o.get("data", {})]
    assert images, f"{name} shows no figure"


@pytest.mark.parametrize("name", ["codec_tour", "solq_demo"])
def test_notebook_matches_its_source(name):
    """The committed .ipynb has the code of its jupytext .py source, and carries outputs."""
    jupytext = pytest.importorskip("jupytext")
    src = jupytext.read(NOTEBOOKS / f"{name}.py")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cells = lambda n: [(c.cell_type, c.source.strip()) for c in n.cells]  # noqa: E731
    assert cells(nb) == cells(src), f"notebooks/{name}.ipynb is out of date: rebuild it from {name}.py"
    assert _outputs(nb, "display_data"), f"notebooks/{name}.ipynb was committed without outputs"
    assert not _outputs(nb, "error")


def _run(name: str, tmp_path) -> object:
    if not _kernel_available():
        pytest.skip(f"no '{KERNEL}' Jupyter kernel (install ipykernel in this environment)")
    copy = tmp_path / f"{name}.ipynb"
    copy.write_bytes((NOTEBOOKS / f"{name}.ipynb").read_bytes())
    # prepend a check that the kernel is this interpreter's environment
    nb = nbformat.read(copy, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        f"import sys; assert sys.prefix == {sys.prefix!r}, (sys.executable, {sys.executable!r})"))
    nbformat.write(nb, copy)
    os.environ["SOLQ_NOTEBOOK_DIR"] = str(tmp_path / "work")
    try:
        return execute(copy, fast=True, timeout=600, workdir=ROOT)
    finally:
        os.environ.pop("SOLQ_NOTEBOOK_DIR", None)


@pytest.mark.slow  # about 30-60 s (kernel start, PCA fit, a small bench); > the 10 s budget of default tests
def test_codec_tour_runs(tmp_path):
    nb = _run("codec_tour", tmp_path)
    _check_executed(nb, "codec_tour")
    text = _text(nb)
    assert "FAST=True" in text and "image-space IoU of the DCT reconstruction" in text


@pytest.mark.slow  # trains 2 iterations and evaluates: about a minute on 2 idle cores
def test_solq_demo_runs(tmp_path):
    nb = _run("solq_demo", tmp_path)
    _check_executed(nb, "solq_demo")
    text = _text(nb)
    assert "trained 2 iterations" in text
    assert "| segm |" in text
