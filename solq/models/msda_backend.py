"""Which multi-scale deformable attention core runs, and the checks every core's inputs pass.

Backends of :func:`solq.models.deform_attn.ms_deform_attn_core`:

* ``"reference"``: the pure-PyTorch ``grid_sample`` core (any device; the fallback).
* ``"numba"``: the fused CPU kernel (:mod:`solq.models.msda_numba`), CPU tensors only.
* ``"triton"``: the fused GPU kernel (:mod:`solq.models.msda_triton`), CUDA tensors only.
* ``"auto"`` (default): ``triton`` for CUDA tensors when triton imports, ``numba`` for CPU
  tensors, ``reference`` otherwise.

The environment variable ``SOLQ_MSDA_BACKEND`` (one of the names above) overrides the backend
asked for in code or config (``model.attn_backend``). Asking for a backend that cannot run on the
tensors' device raises ``ValueError``; only ``auto`` falls back.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import torch

BACKENDS = ("auto", "reference", "numba", "triton")
ENV_VAR = "SOLQ_MSDA_BACKEND"


@functools.lru_cache(maxsize=None)
def available(name: str) -> bool:
    """True if backend ``name``'s module imports (triton: also needs a CUDA device)."""
    if name == "reference":
        return True
    if name == "numba":
        try:
            from . import msda_numba  # noqa: F401
        except ImportError:
            return False
        return True
    if name == "triton":
        if not torch.cuda.is_available():
            return False
        try:
            from . import msda_triton  # noqa: F401
        except ImportError:
            return False
        return True
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")


def check_name(name: str, where: str = "backend") -> str:
    """``name`` if it is one of :data:`BACKENDS`, else a ``ValueError`` naming the choices."""
    if name not in BACKENDS:
        raise ValueError(f"{where} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


def resolve(requested: str | None, device: torch.device) -> str:
    """The backend that runs for tensors on ``device``: ``SOLQ_MSDA_BACKEND``, else ``requested``, else auto."""
    env = os.environ.get(ENV_VAR, "").strip()
    name = check_name(env, ENV_VAR) if env else check_name(requested or "auto")
    on_cuda = device.type == "cuda"
    if name == "auto":
        if on_cuda and available("triton"):
            return "triton"
        if device.type == "cpu" and available("numba"):
            return "numba"
        return "reference"
    if name == "numba":
        if device.type != "cpu":
            raise ValueError(f"attention backend 'numba' runs on the CPU but the tensors are on {device}; "
                             "use 'auto', 'triton' or 'reference'")
        if not available("numba"):
            raise ValueError("attention backend 'numba' needs numba (pip install numba); use 'reference'")
    if name == "triton":
        if not on_cuda:
            raise ValueError(f"attention backend 'triton' needs CUDA tensors but they are on {device}; "
                             "use 'auto', 'numba' or 'reference'")
        if not available("triton"):
            raise ValueError("attention backend 'triton' needs triton (it ships with torch on Linux); "
                             "use 'reference'")
    return name


def check_inputs(value: torch.Tensor, spatial_shapes: Sequence[tuple[int, int]], sampling_locations: torch.Tensor,
                 attention_weights: torch.Tensor) -> None:
    """Raise ``ValueError`` unless the shapes, dtypes and devices fit together (see ``ms_deform_attn_core``)."""
    for name, t, dims in [("value", value, 4), ("sampling_locations", sampling_locations, 6),
                          ("attention_weights", attention_weights, 5)]:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != dims:
            raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.device != value.device:
            raise ValueError(f"{name} is on {t.device} but value is on {value.device}; move them to one device")
    n, s, m, _ = value.shape
    nl, lq, ml, n_levels, n_points, two = sampling_locations.shape
    if two != 2 or (nl, ml) != (n, m):
        raise ValueError(f"sampling_locations must be (N={n}, Lq, M={m}, L, P, 2), got {tuple(sampling_locations.shape)}")
    if tuple(attention_weights.shape) != (n, lq, m, n_levels, n_points):
        raise ValueError(f"attention_weights must be {(n, lq, m, n_levels, n_points)} (N, Lq, M, L, P), "
                         f"got {tuple(attention_weights.shape)}")
    shapes = [tuple(hw) for hw in spatial_shapes]
    if len(shapes) != n_levels or any(len(hw) != 2 or int(hw[0]) < 1 or int(hw[1]) < 1 for hw in shapes):
        raise ValueError(f"spatial_shapes must be {n_levels} positive (h, w) pairs (one per level), got {shapes}")
    total = sum(int(h) * int(w) for h, w in shapes)
    if total != s:
        raise ValueError(f"value has {s} positions but spatial_shapes {shapes} sum to {total}")
