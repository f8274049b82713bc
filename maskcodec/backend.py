"""Array backends: numpy, torch and cupy arrays behind a handful of functions.

maskcodec imports neither torch nor cupy itself; an array of one of those kinds can only
reach us if the user already imported its library, so we look the library up in
``sys.modules`` instead of importing it.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray

BACKENDS = ("numpy", "torch", "cupy")


def backend_of(x: Array) -> str:
    """Name of the array library that owns ``x``: ``"numpy"``, ``"torch"`` or ``"cupy"``."""
    if isinstance(x, np.ndarray):
        return "numpy"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return "torch"
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return "cupy"
    raise TypeError(
        f"expected a numpy array, torch tensor or cupy array, got {type(x).__name__}; "
        "convert lists and other sequences with numpy.asarray first"
    )


def as_array(x: Any) -> Array:
    """Return ``x`` unchanged if it is an array of a supported kind, else ``numpy.asarray(x)``."""
    try:
        backend_of(x)
        return x
    except TypeError:
        return np.asarray(x)


def to_float32(x: Array) -> Array:
    """``x`` as float32 on its own backend and device (no copy when it already is)."""
    kind = backend_of(x)
    if kind == "torch":
        return x if x.dtype == sys.modules["torch"].float32 else x.float()
    return x if x.dtype == np.float32 else x.astype(np.float32)


#: Elements per chunk in ``map_row_chunks``: a float32 copy of one chunk is 64 MiB.
CHUNK_ELEMENTS = 2**24


def map_row_chunks(fn: Any, x: Array, max_elements: int = CHUNK_ELEMENTS) -> Array:
    """``fn`` applied to consecutive row chunks of ``x`` (split along dim 0), joined along dim 0.

    A chunk holds at most ``max_elements`` elements (and at least one row), so the float32 copy
    and the intermediates that ``fn`` makes stay bounded whatever the batch size. ``fn`` returns
    an array of the same backend with one row per input row; numpy results go into one
    preallocated array (no second copy of the output).
    """
    b = int(x.shape[0])
    per_row = max(1, int(np.prod(x.shape[1:], dtype=np.int64)))
    rows = max(1, int(max_elements) // per_row)
    if b <= rows:
        return fn(x)
    first = fn(x[:rows])
    kind = backend_of(first)
    if kind == "numpy":
        out = np.empty((b,) + first.shape[1:], dtype=first.dtype)
        out[:rows] = first
        for i in range(rows, b, rows):
            out[i : i + rows] = fn(x[i : i + rows])
        return out
    parts = [first] + [fn(x[i : i + rows]) for i in range(rows, b, rows)]
    return sys.modules["torch"].cat(parts) if kind == "torch" else sys.modules["cupy"].concatenate(parts)


def to_numpy(x: Array) -> np.ndarray:
    """A numpy copy (or view) of any supported array, detached from autograd."""
    kind = backend_of(x)
    if kind == "numpy":
        return x
    if kind == "torch":
        return x.detach().cpu().numpy()
    return x.get()


def device_key(x: Array) -> tuple[str, str]:
    """A hashable (backend, device) key used to cache constants next to ``x``."""
    kind = backend_of(x)
    if kind == "torch":
        return kind, str(x.device)
    if kind == "cupy":
        return kind, str(x.device.id)
    return kind, "cpu"


def constant_like(value: np.ndarray, like: Array) -> Array:
    """Move a numpy constant to the backend and device of ``like`` (dtype preserved)."""
    kind = backend_of(like)
    if kind == "numpy":
        return value
    if kind == "torch":
        torch = sys.modules["torch"]
        return torch.as_tensor(value, device=like.device)
    return sys.modules["cupy"].asarray(value)


def is_finite(x: Array) -> bool:
    """True when no element of ``x`` is NaN or infinite."""
    kind = backend_of(x)
    if kind == "torch":
        return bool(sys.modules["torch"].isfinite(x).all())
    if kind == "cupy":
        return bool(sys.modules["cupy"].isfinite(x).all())
    return bool(np.isfinite(x).all())


def min_max(x: Array) -> tuple[float, float]:
    """Smallest and largest element of a non-empty array, as Python floats."""
    if backend_of(x) == "torch":
        x = x.detach()
    return float(x.min()), float(x.max())


def is_floating(x: Array) -> bool:
    kind = backend_of(x)
    if kind == "torch":
        return bool(x.is_floating_point())
    return np.issubdtype(x.dtype, np.floating)


def is_bool(x: Array) -> bool:
    kind = backend_of(x)
    if kind == "torch":
        return x.dtype == sys.modules["torch"].bool
    return x.dtype == np.bool_


def is_numeric(x: Array) -> bool:
    """True for bool, integer and real floating dtypes (not complex, object or strings)."""
    kind = backend_of(x)
    if kind == "torch":
        return not x.is_complex()
    return x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """Whether a CUDA GPU is usable from torch or cupy, and a sentence saying why not.

    ``import cupy`` succeeds on machines without a GPU and the first allocation raises,
    so we try one tiny allocation, once per process.
    """
    reasons = []
    try:
        import torch

        if torch.cuda.is_available():
            return True, "torch sees a CUDA device"
        reasons.append("torch.cuda.is_available() is False")
    except ImportError:
        reasons.append("torch is not installed")
    try:
        import cupy

        cupy.zeros(1)
        return True, "cupy allocated on a CUDA device"
    except ImportError:
        reasons.append("cupy is not installed (pip install 'maskcodec-solq[gpu]')")
    except Exception as err:  # cupy raises CUDARuntimeError (a RuntimeError) without a GPU
        reasons.append(f"cupy cannot allocate: {type(err).__name__}: {err}")
    return False, "no usable CUDA GPU: " + "; ".join(reasons)
