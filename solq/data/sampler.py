"""Resumable, rank-aware data order and per-sample augmentation seeds.

``ResumableBatchSampler`` makes data order a pure function of ``(seed, epoch)``: a seeded
permutation per epoch, split across ``world_size`` ranks like ``DistributedSampler``, from
which the first ``i`` batches can be skipped on resume. Each yielded index is paired with a
per-sample seed that ``SeededDataset`` uses for the augmentation RNGs, so augmentations do not
depend on worker count or on where a run was resumed.
"""

from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..checkpoint import CheckpointError


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
