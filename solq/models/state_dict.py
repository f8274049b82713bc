"""Say why a state dict does not fit a model: missing keys, unexpected keys, wrong shapes."""

from __future__ import annotations

from typing import Any, Mapping


def state_dict_problems(own: Mapping[str, Any], given: Mapping[str, Any], *, strict: bool = True,
                        limit: int = 10) -> list[str]:
    """One readable line per kind of mismatch between ``given`` and the model's ``own`` state dict.

    Wrong shapes are always reported; missing and unexpected keys only when ``strict``. An empty
    list means ``given`` loads. At most ``limit`` keys are named per kind.
    """
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    mismatched = [
        f"{k}: file {tuple(given[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(given))
        if tuple(given[k].shape) != tuple(own[k].shape)
    ]

    def head(items: list[str], sep: str) -> str:
        more = f"{sep}... (+{len(items) - limit} more)" if len(items) > limit else ""
        return sep.join(items[:limit]) + more

    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} wrong-shape keys (shape mismatches): " + head(mismatched, "; "))
    if strict and missing:
        problems.append(f"{len(missing)} missing keys: " + head(missing, ", "))
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: " + head(unexpected, ", "))
    return problems
