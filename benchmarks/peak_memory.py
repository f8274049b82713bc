"""Peak memory of the work done in this process, for the benchmarks that compare it across backends.

Linux's ``/proc/self/status`` gives the resident set (``VmRSS``) and its peak (``VmHWM``); writing
``5`` to ``/proc/self/clear_refs`` restarts the peak from the current size, so the peak of one step
can be read after the model is built (unlike ``ru_maxrss``, which keeps the peak of the whole process,
forking parent included). ``SavedForBackward`` counts what autograd keeps for backward, a figure
that does not depend on the allocator.
"""

from __future__ import annotations

_PEAK_AT_RESET = [0.0]  # the largest peak seen before a reset, for peak_since_start_mib


def status_mib(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_mib() -> float:
    """Current resident set in MiB; also restarts the peak (VmHWM) from here, so later peaks are this step's.

    Raises:
        RuntimeError: the peak cannot be restarted (``/proc/self/clear_refs`` not writable), so a
            later ``peak_rss_mib`` would still include the peak of everything before.
    """
    error = restart_peak()
    if error:
        raise RuntimeError(f"cannot restart the peak resident set (write 5 to /proc/self/clear_refs: {error}); "
                           "peak memory per step needs Linux >= 4.0 with /proc writable")
    return status_mib("VmRSS")


def restart_peak() -> str | None:
    """Restart the peak resident set (VmHWM) from the current size; the error text if Linux refused
    (then the peak keeps counting from the process start)."""
    _PEAK_AT_RESET[0] = max(_PEAK_AT_RESET[0], status_mib("VmHWM"))
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as e:
        return str(e)
    return None


def peak_rss_mib() -> float:
    """Peak resident set in MiB since the last ``rss_mib`` call (or the process start)."""
    return status_mib("VmHWM")


def peak_since_start_mib() -> float:
    """Peak resident set in MiB over the whole process, resets included."""
    return max(status_mib("VmHWM"), _PEAK_AT_RESET[0])


class SavedForBackward:
    """Bytes of the distinct storages autograd saves for backward inside ``hooks()`` (those of
    ``exclude``, e.g. the parameters, left out); the tensors themselves are kept as they are."""

    def __init__(self, exclude) -> None:
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.sizes: dict[int, int] = {}  # storage address -> bytes (a saved storage stays alive until backward)

    def _pack(self, t: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.exclude:
            self.sizes[storage.data_ptr()] = storage.nbytes()
        return t

    def hooks(self):
        """The ``torch.autograd.graph.saved_tensors_hooks`` context that counts."""
        import torch  # here, so that maskcodec-only benchmarks read memory without importing torch

        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def mib(self) -> float:
        return sum(self.sizes.values()) / 2**20
