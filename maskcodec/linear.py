"""Constants of linear codecs, built once in numpy and copied once per device.

PCA, sparse coding and flatten codecs all encode and decode with matrix products against a
few constant matrices derived from their hyper-parameters and fitted state. ``device_constants``
builds those matrices in numpy (float32) the first time they are needed, keeps them until the
state they were derived from changes, and caches one copy per (backend, device) so a torch
CUDA tensor is multiplied by a CUDA matrix without a host round trip on every call.

The cache lives in the codec attribute ``_linear_constants`` (a leading underscore: never
persisted by ``save``, never copied by ``sklearn.base.clone``).
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Sequence

import numpy as np

from . import backend
from .backend import Array

_CACHE_ATTR = "_linear_constants"


def check_components(codec: Any) -> None:
    """Raise if a fitted ``components_`` (n_components, mask_size**2) no longer matches the parameters."""
    expected = (codec.n_components, codec.mask_size**2)
    if codec.components_.shape != expected:
        raise ValueError(
            f"fitted components_ have shape {codec.components_.shape} but mask_size={codec.mask_size} and "
            f"n_components={codec.n_components} need {expected}; refit after changing parameters"
        )


def device_constants(
    owner: object,
    state: Sequence[Any],
    build: Callable[[], Sequence[np.ndarray]],
    like: Array,
    slot: str = "main",
) -> tuple[Array, ...]:
    """Constants from ``build()`` on the backend and device of ``like``, cached on ``owner``.

    ``state`` lists everything the constants depend on (hyper-parameters and fitted arrays);
    arrays are compared by identity, other values by equality, so refitting, loading or
    ``set_params`` invalidates the cache. ``build`` returns numpy arrays; they are computed
    once per state and moved once per device. Independent sets of constants of one owner use
    different ``slot`` names.
    """
    slots = owner.__dict__.get(_CACHE_ATTR)
    if slots is None:
        slots = {}
        setattr(owner, _CACHE_ATTR, slots)
    cache = slots.get(slot)
    if cache is None or not _same_state(cache["state"], state):
        host = tuple(np.ascontiguousarray(value) for value in build())
        cache = {"state": tuple(state), "host": host, "device": {}}
        slots[slot] = cache
    key: Hashable = backend.device_key(like)
    copies = cache["device"].get(key)
    if copies is None:
        copies = tuple(backend.constant_like(value, like) for value in cache["host"])
        cache["device"][key] = copies
    return copies


def _same_state(old: Sequence[Any], new: Sequence[Any]) -> bool:
    if len(old) != len(new):
        return False
    for a, b in zip(old, new):
        if a is b:
            continue
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return False
        if type(a) is not type(b) or a != b:
            return False
    return True


def contiguous(x: Array) -> Array:
    """``x`` in C order on its own backend (torch ``contiguous``, numpy/cupy ``ascontiguousarray``)."""
    if backend.backend_of(x) == "torch":
        return x.contiguous()
    return x if x.flags.c_contiguous else x.copy()
