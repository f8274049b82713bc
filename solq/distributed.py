"""Process setup: the device, torchrun data parallelism (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``), CPU threads.

NCCL on GPU, gloo on CPU; a single process (``WORLD_SIZE`` unset or 1) needs no process group.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from .config import ConfigError


@dataclass
class DistInfo:
    """This process's place in the job and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; a CUDA request without CUDA is a ``ConfigError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available; use train.device=cpu or auto")
    return device


def setup_distributed(device_name: str = "auto") -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # denormal optimizer states / activations are very slow on x86
    if world <= 1:
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def set_threads(n: Optional[int]) -> None:
    """Limit torch (and numba, used by maskcodec's geometry kernels) to ``n`` CPU threads; ``None``/0: leave."""
    if not n:
        return
    torch.set_num_threads(n)
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover - numba is a dependency of maskcodec
        pass


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Mean of each value over all processes (unchanged in a single process)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist()))


def all_gather(obj, info: DistInfo) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in a single process)."""
    if not info.enabled:
        return [obj]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast(obj, info: DistInfo):
    """Rank 0's ``obj`` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
