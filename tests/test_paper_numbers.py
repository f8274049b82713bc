"""The paper's numbers in ``solq.ablation`` match the paper's text (../shared/paper), table by table."""

import re
from pathlib import Path

import pytest

from solq.ablation import PAPER, PAPER_TABLE1_R50, paper_columns, sweep_definition

PAPER_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "paper"
# first cell of each paper row -> our entry name
ROW_NAMES = {
    "3a": {"det": "det_only", "Flatten": "flatten", "Sparse Coding": "sparse", "PCA": "pca", "DCT": "dct"},
    "3b": {v: f"lambda_{v}" for v in ("0.3", "0.7", "1", "2", "3", "4")},
    "3c": {str(k): f"layers_{k}" for k in range(1, 7)},
    "3d": {str(n): f"N_{n}" for n in (64, 96, 128, 256)},
    "3e": {str(k): f"nk_{k}" for k in (144, 256, 300, 400)},
}


def _paper_text() -> str:
    files = sorted(PAPER_DIR.glob("*.txt")) if PAPER_DIR.is_dir() else []
    if not files:
        pytest.skip(f"the paper's text is not at {PAPER_DIR}")
    return files[0].read_text()


def _table_rows(text: str, sub: str) -> dict[str, list[float | None]]:
    """Tab-separated rows of sub-table ``sub`` ("a".."e") of Table 3, keyed by their first cell."""
    block = text.split("Table 3:", 1)[1].split(f"({sub}) ", 1)[1]
    rows = {}
    for line in block.splitlines()[1:]:
        if line.startswith("(") or line.startswith("5 Conclusion"):
            break
        cells = line.split("\t")
        if len(cells) > 2 and re.fullmatch(r"[\d.]+|-", cells[1].strip()):
            rows[cells[0].strip()] = [None if c.strip() == "-" else float(c) for c in cells[1:]]
    return rows


@pytest.mark.parametrize("table", ["3a", "3b", "3c", "3d", "3e"])
def test_table3_numbers_match_the_paper(table):
    rows = _table_rows(_paper_text(), table[1])
    assert set(rows) == set(ROW_NAMES[table])
    for first_cell, entry in ROW_NAMES[table].items():
        expected = {c: v for c, v in zip(paper_columns(table), rows[first_cell]) if v is not None}
        assert PAPER[table][entry] == expected, (table, entry)
    assert set(PAPER[table]) == {e.name for e in sweep_definition(table).entries}


def test_table1_r50_line_matches_the_paper():
    line = next(l for l in _paper_text().splitlines() if l.startswith("SOLQ, ours\tR50\t"))
    values = [float(c) for c in line.split("\t")[3:]]
    assert list(PAPER_TABLE1_R50.values()) == values
