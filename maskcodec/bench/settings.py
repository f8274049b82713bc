"""What ``maskcodec bench`` runs: codec specs -> settings (codec, N, n_k), the defaults, the area ranges.

Settings are named by codec specs: ``"dct"`` runs every ``sizes x dims`` combination,
``"pca:128"`` runs N = 128 with every n_k in ``dims``, ``"pca:128:256"`` one setting.
Combinations a codec cannot represent (n_k > N², or a flatten n_k that is not a square r²
with r <= N) are skipped with a note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..registry import available_codecs, codec_class

#: The no-argument run: small enough for about a minute on 2 CPU cores.
DEFAULT_CODECS: tuple[str, ...] = ("dct", "pca:64:256", "sparse:64:256", "flatten:64:784")
DEFAULT_SIZES: tuple[int, ...] = (64, 128)
DEFAULT_DIMS: tuple[int, ...] = (144, 256)
#: The grid of benchmarks/coco_bench (DCT over N at n_k = 256 and over n_k at N = 128; learned codecs
#: at n_k = 256; flatten 28x28). Sparse coding runs at N = 64: fitting it at N = 128 takes too long on 2 cores.
FULL_GRID_ARGS = (
    "--codecs dct:64:256,dct:96:256,dct:256:256,dct:128,pca:64:256,pca:128:256,sparse:64:256,flatten:128:784 "
    "--dims 144,256,300,400"
)

AREA_RANGES = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, math.inf))


@dataclass(frozen=True)
class Setting:
    """One benchmark cell: codec name, mask size N and vector length n_k."""

    codec: str
    mask_size: int
    n_components: int

    @property
    def label(self) -> str:
        return f"{self.codec} N={self.mask_size} n_k={self.n_components}"


def parse_int_list(text: str | Sequence[int], what: str) -> tuple[int, ...]:
    """``"64,128"`` (or a sequence of ints) -> ``(64, 128)``; positive, duplicates removed."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
    else:
        parts = list(text)
    values = []
    for p in parts:
        try:
            v = int(p)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be comma-separated positive integers, got {p!r}") from None
        if v < 1:
            raise ValueError(f"{what} must be positive integers, got {v}")
        if v not in values:
            values.append(v)
    if not values:
        raise ValueError(f"{what} is empty; give at least one value, e.g. 128")
    return tuple(values)


def expand_settings(
    codecs: str | Sequence[str], sizes: Sequence[int], dims: Sequence[int]
) -> tuple[list[Setting], list[str]]:
    """Turn codec specs into settings; returns ``(settings, notes about skipped combinations)``.

    Raises ``ValueError`` for an unknown codec name, a malformed spec, or when every
    combination is invalid.
    """
    specs = [s.strip() for s in codecs.split(",")] if isinstance(codecs, str) else [str(s).strip() for s in codecs]
    specs = [s for s in specs if s]
    if not specs:
        raise ValueError("no codecs given; choose from " + ", ".join(available_codecs()))
    sizes = parse_int_list(sizes, "sizes")
    dims = parse_int_list(dims, "dims")
    settings: list[Setting] = []
    notes: list[str] = []
    for spec in specs:
        name, *rest = spec.split(":")
        codec_class(name)  # raises ValueError naming the available codecs
        if len(rest) > 2:
            raise ValueError(f"bad codec spec {spec!r}: use NAME, NAME:N or NAME:N:K (e.g. pca:128:256)")
        spec_sizes = parse_int_list([rest[0]], f"mask size in {spec!r}") if len(rest) >= 1 else sizes
        spec_dims = parse_int_list([rest[1]], f"n_k in {spec!r}") if len(rest) == 2 else dims
        for n in spec_sizes:
            for k in spec_dims:
                problem = _setting_problem(name, n, k)
                if problem:
                    notes.append(f"skipped {name} N={n} n_k={k}: {problem}")
                    continue
                s = Setting(name, n, k)
                if s not in settings:
                    settings.append(s)
    if not settings:
        detail = "; ".join(notes)
        raise ValueError(f"no valid codec setting to run ({detail}); choose n_k <= N**2")
    return settings, notes


def _setting_problem(name: str, n: int, k: int) -> str:
    if k > n * n:
        return f"n_k > N**2 = {n * n}"
    if name == "flatten":
        r = math.isqrt(k)
        if r * r != k:
            return "flatten needs n_k = r**2 (e.g. 784 = 28**2)"
    return ""
