"""Rebuilding a codec from its state: ``from_state(codec.get_state())``, with full validation.

A state is a plain dict ``{"name": str, "params": dict, "fitted": {attribute: ndarray or scalar}}``
(``MaskCodec.get_state``); it is what ``maskcodec.save`` writes and what solq stores in its
checkpoints.
"""

from __future__ import annotations

from typing import Any

from .base import MaskCodec
from .registry import codec_class


def from_state(state: dict[str, Any], source: str = "codec state") -> MaskCodec:
    """The codec described by ``state``, its parameters and fitted state checked.

    Raises ``ValueError`` (prefixed with ``source``) for an unknown codec or parameter, bad
    parameter values, a name that is not a fitted attribute, or no fitted state where the codec
    needs one.
    """
    if not isinstance(state, dict) or not {"name", "params"} <= set(state):
        raise ValueError(f"{source}: a codec state is a dict with 'name', 'params' and 'fitted', "
                         f"got {type(state).__name__}")
    cls = codec_class(str(state["name"]))
    params, fitted = state["params"], state.get("fitted", {})
    if not isinstance(params, dict) or not isinstance(fitted, dict):
        raise ValueError(f"{source}: the state's 'params' and 'fitted' must be dicts")
    known = set(cls().get_params())
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} parameter(s) {unknown}; this maskcodec knows "
                         f"{sorted(known)} (written by a different maskcodec version?)")
    codec = cls(**params)
    codec._check_params()
    for name in fitted:
        if not (isinstance(name, str) and name.isidentifier() and name.endswith("_") and not name.startswith("_")):
            raise ValueError(f"{source}: {name!r} is not a fitted attribute name (they end with '_')")
    for name, value in fitted.items():
        setattr(codec, name, value)
    try:
        codec._check_fitted()
    except ValueError as err:  # sklearn's NotFittedError
        raise ValueError(f"{source} holds no fitted state for {cls.__name__}: {err}") from None
    return codec
