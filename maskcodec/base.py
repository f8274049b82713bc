"""The codec contract shared by every maskcodec codec.

A codec maps a batch of box-relative square masks ``(B, N, N)`` with values in [0, 1] to
vectors ``(B, n_k)`` (``encode``) and vectors back to soft masks ``(B, N, N)`` (``decode``).
Codecs follow scikit-learn's estimator conventions: hyper-parameters are stored verbatim
by ``__init__`` and checked in ``fit``/``encode``; fitted state lives in attributes whose
names end with ``_``; ``get_params``/``set_params``/``sklearn.base.clone`` work.

Arrays may be numpy, torch or cupy; outputs are of the same kind and on the same device
as the input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from . import backend
from .backend import Array
from .codec_file import write_state


class MaskCodec(BaseEstimator):
    """Base class: validation, ``fit_encode``, sklearn aliases and persistence.

    Subclasses implement ``_fit(masks)`` (numpy float32, already validated),
    ``_encode(masks)`` and ``_decode(vectors)`` (float32 arrays of any backend), and set
    ``requires_fit``.
    """

    #: Name under which the codec is registered (set by ``registry.register_codec``).
    codec_name: str = ""
    #: Whether ``encode``/``decode`` need a prior ``fit``.
    requires_fit: bool = True

    def __init__(self, mask_size: int = 128, n_components: int = 256):
        self.mask_size = mask_size
        self.n_components = n_components

    # ------------------------------------------------------------------ public API
    def fit(self, masks: Array, y: Any = None) -> "MaskCodec":
        """Fit the codec on masks ``(B, N, N)`` in [0, 1]; returns ``self``."""
        self._check_params()
        masks = self._validate_masks(masks)
        if self.requires_fit and masks.shape[0] == 0:
            raise ValueError(f"cannot fit {type(self).__name__} on an empty batch of masks")
        self._fit(np.ascontiguousarray(backend.to_numpy(masks), dtype=np.float32))
        return self

    def encode(self, masks: Array) -> Array:
        """Compress masks ``(B, N, N)`` (bool, int or float in [0, 1]) to vectors ``(B, n_k)`` float32."""
        self._check_params()
        self._check_fitted()
        masks = self._validate_masks(masks)
        if masks.shape[0] == 0:
            return _empty_like(masks, (0, self.n_components))
        return self._encode(masks)

    def decode(self, vectors: Array) -> Array:
        """Expand vectors ``(B, n_k)`` to soft masks ``(B, N, N)`` float32 (not clipped; threshold at 0.5)."""
        self._check_params()
        self._check_fitted()
        vectors = self._validate_vectors(vectors)
        if vectors.shape[0] == 0:
            return _empty_like(vectors, (0, self.mask_size, self.mask_size))
        return self._decode(vectors)

    def fit_encode(self, masks: Array) -> Array:
        """``fit(masks)`` then ``encode(masks)``."""
        return self.fit(masks).encode(masks)

    # scikit-learn transformer aliases, so codecs drop into pipelines and model selection.
    def transform(self, masks: Array) -> Array:
        return self.encode(masks)

    def inverse_transform(self, vectors: Array) -> Array:
        return self.decode(vectors)

    def fit_transform(self, masks: Array, y: Any = None) -> Array:
        return self.fit_encode(masks)

    def get_state(self) -> dict[str, Any]:
        """The codec as plain data: ``{"name", "params", "fitted"}`` (fitted arrays are numpy).

        ``maskcodec.from_state(state)`` rebuilds it, with the checks of ``maskcodec.load``.
        """
        if not self.codec_name:
            raise ValueError(f"{type(self).__name__} is not registered, so it cannot be saved; use register_codec")
        self._check_params()
        fitted = self._fitted_attributes()
        if self.requires_fit and not fitted:
            raise ValueError(f"cannot save an unfitted {type(self).__name__}: maskcodec.load would refuse the file; "
                             "call fit(masks) first")
        return {"name": self.codec_name, "params": self.get_params(), "fitted": fitted}

    def save(self, path) -> None:
        """Write the codec to ``path`` atomically; the same as ``maskcodec.save(codec, path)``."""
        write_state(self.get_state(), path)

    def __sklearn_is_fitted__(self) -> bool:
        return not self.requires_fit or bool(self._fitted_attributes())

    # ------------------------------------------------------------------ subclass hooks
    def _fit(self, masks: np.ndarray) -> None:
        """Learn fitted state from validated float32 numpy masks ``(B, N, N)``."""

    def _encode(self, masks: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, vectors: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def _extra_param_checks(self) -> None:
        """Subclasses add their own hyper-parameter checks here."""

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        n, k = self.mask_size, self.n_components
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ValueError(f"mask_size must be a positive integer, got {n!r}")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"n_components must be a positive integer, got {k!r}")
        if k > n * n:
            raise ValueError(
                f"n_components={k} exceeds mask_size**2={n * n}: an {n}x{n} mask has only {n * n} "
                "numbers; lower n_components or raise mask_size"
            )
        self._extra_param_checks()

    def _check_fitted(self) -> None:
        if self.requires_fit and not self._fitted_attributes():
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(masks) (or load a saved codec "
                "with maskcodec.load) before encode/decode"
            )

    def _fitted_attributes(self) -> dict[str, Any]:
        return {
            name: value
            for name, value in vars(self).items()
            if name.endswith("_") and not name.startswith("_")
        }

    def _validate_masks(self, masks: Array) -> Array:
        masks = backend.as_array(masks)
        if not backend.is_numeric(masks):
            raise ValueError(f"masks must be bool, integer or float, got dtype {masks.dtype}")
        n = self.mask_size
        if masks.ndim != 3:
            hint = "; for a single mask use masks[None]" if masks.ndim == 2 else ""
            raise ValueError(f"masks must have shape (B, {n}, {n}), got {tuple(masks.shape)}{hint}")
        if tuple(masks.shape[1:]) != (n, n):
            raise ValueError(
                f"masks must have shape (B, {n}, {n}) for mask_size={n}, got {tuple(masks.shape)}; "
                "crop and resize full-image masks with maskcodec.geometry.crop_resize first"
            )
        if masks.shape[0] and not backend.is_bool(masks):
            if backend.is_floating(masks) and not backend.is_finite(masks):
                raise ValueError("masks contain NaN or infinite values")
            lo, hi = backend.min_max(masks)
            if lo < 0 or hi > 1:
                raise ValueError(
                    f"mask values must lie in [0, 1], got min {lo:g} and max {hi:g}; "
                    "pass binary masks (bool or 0/1) or soft masks scaled to [0, 1]"
                )
        return masks

    def _validate_vectors(self, vectors: Array) -> Array:
        vectors = backend.as_array(vectors)
        k = self.n_components
        if vectors.ndim != 2 or vectors.shape[1] != k:
            hint = "; for a single vector use vectors[None]" if vectors.ndim == 1 else ""
            raise ValueError(
                f"vectors must have shape (B, {k}) for n_components={k}, got {tuple(vectors.shape)}{hint}"
            )
        if not backend.is_numeric(vectors) or backend.is_bool(vectors):
            raise ValueError(f"vectors must be real numbers, got dtype {vectors.dtype}")
        vectors = backend.to_float32(vectors)
        if vectors.shape[0] and not backend.is_finite(vectors):
            raise ValueError("vectors contain NaN or infinite values")
        return vectors


def _empty_like(like: Array, shape: tuple[int, ...]) -> Array:
    zeros = np.zeros(shape, dtype=np.float32)
    return backend.constant_like(zeros, like)
