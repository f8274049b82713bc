"""solq.checkpoint: atomic save, clear load errors, RNG round trip, resumable sampler."""

import random

import numpy as np
import pytest
import torch

from solq.checkpoint import (
    CheckpointError,
    codec_from_state,
    codec_state,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
)
from solq.data.sampler import ResumableBatchSampler, SeededDataset
from solq.rng import rng_state, set_rng_state


def _net(width=4):
    return torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.ReLU(), torch.nn.Linear(width, 2))


def test_save_load_roundtrip_is_atomic(tmp_path):
    net = _net()
    path = tmp_path / "sub" / "ckpt.pth"
    save_checkpoint({"model": net.state_dict(), "epoch": 3, "rng": rng_state(), "config": {"a": [1, 2]}}, path)
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pth"]  # no temp file left behind
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and state["config"] == {"a": [1, 2]} and state["format"] == "solq-checkpoint"
    other = _net()
    load_model_weights(other, state)
    for a, b in zip(net.parameters(), other.parameters()):
        assert torch.equal(a, b)


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "ckpt.pth"
    save_checkpoint({"epoch": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"epoch": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_corrupt_truncated_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    path = tmp_path / "ckpt.pth"
    save_checkpoint({"model": _net().state_dict()}, path)
    data = path.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "trunc.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "garbage.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pth")


def test_wrong_shape_weights_list_the_keys():
    state = {"model": _net(width=8).state_dict()}
    with pytest.raises(CheckpointError) as info:
        load_model_weights(_net(width=4), state, source="w.pth")
    msg = str(info.value)
    assert "wrong-shape" in msg and "0.weight: file (8, 3) vs model (4, 3)" in msg and "w.pth" in msg
    partial = {k: v for k, v in _net().state_dict().items() if k != "2.bias"}
    partial["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="missing keys: 2.bias.*unexpected keys: extra.weight"):
        load_model_weights(_net(), partial)
    with pytest.raises(CheckpointError, match="no model state dict"):
        load_model_weights(_net(), {"epoch": 1})


def test_rng_state_roundtrip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint({"rng": rng_state()}, tmp_path / "r.pth")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "r.pth")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_codec_state_roundtrip(tmp_path):
    import maskcodec

    codec = maskcodec.get_codec("dct", mask_size=16, n_components=10)
    save_checkpoint({"codec": codec_state(codec)}, tmp_path / "c.pth")
    again = codec_from_state(load_checkpoint(tmp_path / "c.pth")["codec"])
    masks = np.zeros((2, 16, 16), bool)
    masks[:, 4:12, 3:9] = True
    np.testing.assert_allclose(again.encode(masks), codec.encode(masks))


def test_codec_from_state_checks_like_load():
    import maskcodec

    state = codec_state(maskcodec.get_codec("dct", mask_size=16, n_components=10))
    with pytest.raises(ValueError, match="checkpoint's codec: unknown DCTCodec parameter"):
        codec_from_state({**state, "params": {**state["params"], "bogus": 1}})
    with pytest.raises(ValueError, match="n_components=300 exceeds"):
        codec_from_state({**state, "params": {**state["params"], "n_components": 300}})


def _flat(sampler):
    return [i for batch in sampler for i, _ in batch]


def test_sampler_is_deterministic_resumable_and_sharded():
    s = ResumableBatchSampler(10, batch_size=3, seed=5)
    s.set_epoch(0)
    e0 = list(s)
    assert len(e0) == len(s) == 4 and sorted(_flat(e0)) == list(range(10))
    assert list(s) == e0  # same epoch, same order and seeds
    s.set_epoch(1)
    assert _flat(s) != _flat(e0)
    s.set_epoch(0, skip=2)
    assert list(s) == e0[2:]  # resume inside an epoch
    seeds = [seed for b in e0 for _, seed in b]
    assert len(set(seeds)) == len(seeds)
    # two ranks split the single-process permutation like DistributedSampler (padded by wrap-around)
    r0 = ResumableBatchSampler(10, 3, seed=5, rank=0, world_size=2)
    r1 = ResumableBatchSampler(10, 3, seed=5, rank=1, world_size=2)
    whole = _flat(ResumableBatchSampler(10, 10, seed=5))
    assert _flat(r0) == whole[0::2] and _flat(r1) == whole[1::2]
    with pytest.raises(CheckpointError, match="batch_size"):
        r0.check_compatible(ResumableBatchSampler(10, 4, seed=5, world_size=2).state_dict())


def test_seeded_dataset_isolates_the_global_rng():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(1).item() + random.random() + np.random.rand()

    ds = SeededDataset(Noisy())
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a, b = ds[(1, 123)], ds[(1, 123)]
    assert a == b and ds[(1, 124)] != a
    assert torch.equal(torch.get_rng_state(), before)
