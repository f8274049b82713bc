"""Training checkpoints: atomic save, safe load, exact resume.

A checkpoint is a ``torch.save`` dict (loadable with ``weights_only=True``: tensors and plain
Python values only) holding

* ``model``, ``optimizer``, ``lr_scheduler``, ``scaler`` state dicts,
* the position of the *next* iteration: ``epoch`` and ``iter_in_epoch``, plus ``global_step``,
* ``rng``: Python, numpy, torch CPU (and CUDA) generator states,
* ``sampler``: the ``ResumableBatchSampler`` state (seed, world size, batch size),
* ``config`` (the resolved config dict), ``codec`` (name, params and fitted arrays) and
  ``category_ids`` (contiguous label → dataset category id).

Files are written to a temporary file in the same folder, flushed and ``os.replace``-d, so a
crash never leaves a half-written checkpoint under the final name; the temporaries a killed save
left behind for the same file are removed by the next save.

Integrity: ``torch.save`` writes a zip archive that stores a CRC-32 of every record (tensor data
and the pickled structure), which ``torch.load`` does not check. ``load_checkpoint`` verifies
every record against its checksum first and refuses a file that does not verify, naming the
damaged record, so a corrupt file never gives silently wrong weights. The contents are not
changed: every top-level field a checkpoint carries is kept.

``ResumableBatchSampler`` makes data order a pure function of ``(seed, epoch)``: a seeded
permutation per epoch, split across ``world_size`` ranks like ``DistributedSampler``, from
which the first ``i`` batches can be skipped on resume. Each yielded index is paired with a
per-sample seed that ``SeededDataset`` uses for the augmentation RNGs, so augmentations do not
depend on worker count or on where a run was resumed.
"""

from __future__ import annotations

import contextlib
import os
import random
import zipfile
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from maskcodec.atomic import atomic_open

from .models.state_dict import state_dict_problems

FORMAT_NAME = "solq-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint or weights file is unreadable or does not fit the model."""


# ---------------------------------------------------------------------------- save / load
def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    state = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **state}
    remove_stale_temporaries(path)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files of ``path`` left by an atomic save that was killed; returns them.

    Only one process writes a given checkpoint, so any such file is a leftover.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check every record of a ``torch.save`` zip file against its stored CRC-32; ``CheckpointError`` if one
    does not match or the archive is damaged. Files in torch's legacy (non-zip) format are not checked."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            if fh.read(4) == b"PK\x03\x04":  # a zip whose directory is gone: truncated
                raise CheckpointError(f"{path} is corrupt or truncated (its zip directory is missing); delete it or pick "
                                      "another file")
        return
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise CheckpointError(f"{path} is corrupt: its archive cannot be read ({err})") from None
    if bad is not None:
        raise CheckpointError(f"{path} is corrupt: record {bad!r} does not match its checksum; the file was damaged "
                              "after it was written; delete it or pick another file")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a checkpoint or weights file; ``FileNotFoundError`` / ``CheckpointError`` with a clear message.

    Accepts our checkpoints, plain model state dicts, and dicts with a ``"model"`` entry (official
    SOLQ/Deformable DETR files load too when they hold only tensors and plain values).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint/weights file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (a truncated or failed save); delete it or pick another file")
    verify_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated?): {str(err).splitlines()[0]}"
        ) from None
    except Exception as err:  # pickle.UnpicklingError and friends (e.g. a non-torch file)
        raise CheckpointError(f"{path} is not a readable checkpoint: {type(err).__name__}: {err}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, expected a dict (state dict or checkpoint)")
    version = state.get("format_version")
    if state.get("format") == FORMAT_NAME and version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version}; this solq reads {FORMAT_VERSION}")
    return state


def model_state_from(state: dict) -> dict[str, torch.Tensor]:
    """The model state dict inside a checkpoint (``state["model"]``) or ``state`` itself."""
    inner = state.get("model", state)
    if not isinstance(inner, dict) or not all(isinstance(v, torch.Tensor) for v in inner.values()):
        raise CheckpointError("the file holds no model state dict (a mapping of parameter names to tensors)")
    return inner


def load_model_weights(model: torch.nn.Module, state: dict, source: str = "weights", strict: bool = True) -> None:
    """Copy a state dict into ``model``, listing every missing, unexpected and wrong-shape key on failure."""
    weights = model_state_from(state)
    own = model.state_dict()
    problems = state_dict_problems(own, weights, strict=strict)
    if problems:
        raise CheckpointError(
            f"{source} does not fit this model ({' | '.join(problems)}); check that the config "
            "(model.*, codec.n_components, number of classes) matches the one used for training"
        )
    model.load_state_dict(weights, strict=strict)


# ---------------------------------------------------------------------------- codec
def codec_state(codec) -> dict:
    """Name, hyper-parameters and fitted arrays (as tensors) of a maskcodec codec (``codec.get_state()``)."""
    state = codec.get_state()
    fitted = {
        name: torch.from_numpy(np.asarray(value)) if isinstance(value, np.ndarray) else value
        for name, value in state["fitted"].items()
    }
    return {**state, "fitted": fitted}


def codec_from_state(state: dict):
    """Rebuild a codec saved by ``codec_state``, checked as ``maskcodec.load`` checks a file."""
    from maskcodec import from_state

    fitted = {
        name: value.numpy() if isinstance(value, torch.Tensor) else value
        for name, value in state.get("fitted", {}).items()
    }
    return from_state({**state, "fitted": fitted}, source="the checkpoint's codec")


# ---------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    """Python, numpy, torch CPU and CUDA RNG states as tensors / plain values."""
    np_state = np.random.get_state()
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore states saved by ``rng_state``."""
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _to_plain(x: Any) -> Any:
    return [_to_plain(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------- data order
class ResumableBatchSampler(Sampler):
    """Deterministic, resumable, rank-aware batch sampler.

    Epoch ``e`` uses the permutation of ``range(n)`` drawn from ``torch.Generator().manual_seed(seed + e)``
    (or the identity when ``shuffle=False``), padded by wrap-around to a multiple of ``world_size``
    and split ``rank::world_size`` (as ``DistributedSampler``). Batches of ``batch_size`` indices
    per rank; a trailing short batch is kept unless ``drop_last``. Every index is yielded as a pair
    ``(index, sample_seed)`` for ``SeededDataset``.

    ``set_epoch(e, skip=i)`` makes the next iteration start at batch ``i`` of epoch ``e``.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = -(-self.n // self.world_size)
        total = per_rank * self.world_size
        order = (order * (total // self.n + 1))[:total]
        return order[self.rank : total : self.world_size]

    def __len__(self) -> int:
        per_rank = -(-self.n // self.world_size)
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        idx = self._indices()
        n_batches = len(self)
        for b in range(self.skip, n_batches):
            chunk = idx[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(i, self._sample_seed(i)) for i in chunk]

    def _sample_seed(self, index: int) -> int:
        # a fixed mix of (seed, epoch, index); distinct for every sample of every epoch
        return (self.seed * 1_000_003 + self.epoch * 7_919 * 65_537 + index * 2_654_435_761) % (2**31 - 1)

    def state_dict(self) -> dict:
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "world_size": self.world_size,
            "drop_last": self.drop_last,
            "epoch": self.epoch,
        }

    def check_compatible(self, state: dict) -> None:
        """Raise ``CheckpointError`` when resuming with a data order that differs from the saved one."""
        for key in ("n", "batch_size", "shuffle", "seed", "world_size", "drop_last"):
            if key in state and state[key] != getattr(self, key):
                raise CheckpointError(
                    f"cannot resume exactly: sampler {key} was {state[key]!r} in the checkpoint, now "
                    f"{getattr(self, key)!r}; use the same dataset, data.batch_size, seed and number of processes"
                )


class SeededDataset(Dataset):
    """Wrap a dataset so ``ds[(index, seed)]`` draws its augmentation from RNGs seeded with ``seed``.

    Python, numpy and torch global RNG states are saved and restored around the call, so
    loading data does not disturb the training RNG stream (dropout). Plain integer indices
    pass through unchanged.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, item):
        if not isinstance(item, tuple):
            return self.dataset[item]
        index, seed = item
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
