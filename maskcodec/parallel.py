"""When numba's multi-threaded kernels may run in this process.

numba's default threading layer on Linux is GNU OpenMP, which is not fork-safe: a process
forked after its parent ran a parallel kernel (a PyTorch DataLoader worker, say) hangs or dies
in its first parallel region. The first parallel launch therefore records the process id, and a
forked child (a different pid) runs the single-threaded twin of each kernel instead.
"""

from __future__ import annotations

import os

#: Below this many output samples (crop_resize; a quarter of it for paste) a batch runs on one thread.
PARALLEL_MIN_WORK = 1 << 16
#: The per-mask DCT kernels: batches of fewer masks run on the calling thread (one image's targets,
#: e.g. in a DataLoader worker: no thread start-up); larger ones are split into work items of
#: ``MASKS_PER_ITEM`` masks, each allocating its scratch buffers once.
PARALLEL_MIN_MASKS = 256
MASKS_PER_ITEM = 16

_parallel_pid: int | None = None


def parallel_allowed() -> bool:
    """True in the process that first launched a parallel kernel (or before any launch)."""
    global _parallel_pid
    pid = os.getpid()
    if _parallel_pid is None:
        _parallel_pid = pid
    return _parallel_pid == pid


def parallel_over_masks(count: int) -> bool:
    """Whether a per-mask kernel over ``count`` masks runs on numba's threads (its parallel twin)."""
    return count >= PARALLEL_MIN_MASKS and parallel_allowed()
