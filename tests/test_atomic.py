import os
import stat

import pytest

from maskcodec.atomic import atomic_open, atomic_write


def test_atomic_write_creates_parents_and_replaces(tmp_path):
    path = tmp_path / "a" / "b.txt"
    atomic_write(path, "one")
    atomic_write(path, b"two")
    assert path.read_text() == "two"
    assert sorted(os.listdir(path.parent)) == ["b.txt"]  # no temp file left behind


def test_failed_write_leaves_the_old_file_untouched(tmp_path):
    path = tmp_path / "keep.json"
    atomic_write(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["keep.json"]


def test_new_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "x", "x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_only_whole_file_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(tmp_path / "x", "a"):
            pass


def test_atomic_write_json_takes_numpy_scalars_and_paths(tmp_path):
    import json
    from pathlib import Path

    import numpy as np

    from maskcodec.atomic import atomic_write_json

    path = atomic_write_json(tmp_path / "x.json", {"a": np.float32(0.5), "b": np.int64(3), "p": Path("d/e")})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": 3, "p": "d/e"}
    with pytest.raises(TypeError, match="not JSON serialisable: ndarray"):
        atomic_write_json(tmp_path / "y.json", {"a": np.zeros(3)})
