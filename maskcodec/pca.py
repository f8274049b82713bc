"""PCA codec: project flattened masks on their first n_k principal components (SOLQ Tab. 3a).

With P the (n_k, N^2) matrix of orthonormal principal axes and mu the mean mask,

    encode:  v = (m - mu) P^T            (divided by sqrt(explained variance) if ``whiten``)
    decode:  m_hat = v P + mu            (multiplied back if ``whiten``)

Fitting uses scikit-learn: ``PCA`` for mask sets that fit in memory, ``IncrementalPCA`` for
``partial_fit`` over chunks (or ``fit`` with ``batch_size``). Encode and decode are single
matrix products and run on numpy, torch (CPU/CUDA, differentiable) and cupy arrays.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA, IncrementalPCA

from . import backend
from .backend import Array
from .base import MaskCodec
from .linear import check_components, device_constants
from .registry import register_codec


@register_codec("pca")
class PCACodec(MaskCodec):
    """Principal components of flattened ``N x N`` masks.

    Parameters
    ----------
    mask_size : int
        Side N of the square masks.
    n_components : int
        Vector length n_k (at most N**2 and at most the number of masks fitted on).
    whiten : bool
        Scale every coefficient to unit variance over the training masks (the MEInst /
        official SOLQ PCA variant). Decoding undoes the scaling exactly.
    batch_size : int or None
        ``None``: ``fit`` runs ``sklearn.decomposition.PCA`` on all masks at once. An integer:
        ``fit`` runs ``IncrementalPCA`` over chunks of that many masks (bounded SVD memory).
    random_state : int, numpy Generator/RandomState or None
        Seed of the randomized SVD solver.

    Attributes
    ----------
    components_ : ndarray (n_k, N**2) float32
        Orthonormal principal axes, by decreasing explained variance.
    mean_ : ndarray (N**2,) float32
        Mean training mask, flattened.
    explained_variance_, explained_variance_ratio_, singular_values_ : ndarray (n_k,) float32
    var_ : ndarray (N**2,) float32
        Per-pixel variance of the training masks (lets ``partial_fit`` resume after ``load``).
    noise_variance_ : float
    n_samples_seen_ : int

    Notes
    -----
    ``fit`` chooses ``svd_solver="randomized"`` when ``n_components`` is at most half of
    ``min(n_masks, N**2)`` (exact enough there and much faster), and scikit-learn's ``"auto"``
    otherwise, or when few pixels and many masks make the exact covariance solver cheaper.

    For mask sets larger than memory, call ``partial_fit`` repeatedly over chunks of at least
    ``n_components`` masks each; the result matches ``IncrementalPCA`` fed the same chunks.
    ``partial_fit`` continues from the current fitted state (also after ``fit`` or ``load``);
    call ``fit`` to start over.
    """

    def __init__(
        self,
        mask_size: int = 128,
        n_components: int = 256,
        whiten: bool = False,
        batch_size: int | None = None,
        random_state=None,
    ):
        super().__init__(mask_size=mask_size, n_components=n_components)
        self.whiten = whiten
        self.batch_size = batch_size
        self.random_state = random_state

    # -- fitting -------------------------------------------------------------------
    def _extra_param_checks(self) -> None:
        if not isinstance(self.whiten, (bool, np.bool_)):
            raise ValueError(f"whiten must be True or False, got {self.whiten!r}")
        b = self.batch_size
        valid = isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b >= self.n_components
        if b is not None and not valid:
            raise ValueError(
                f"batch_size must be None or an integer >= n_components={self.n_components}, got {b!r}"
            )

    def _check_enough_masks(self, n_masks: int, what: str) -> None:
        if n_masks < self.n_components:
            raise ValueError(
                f"{what} needs at least n_components={self.n_components} masks, got {n_masks}; "
                f"pass at least {self.n_components} masks or lower n_components"
            )

    def _fit(self, masks: np.ndarray) -> None:
        self._check_enough_masks(masks.shape[0], f"{type(self).__name__}.fit")
        x = masks.reshape(masks.shape[0], -1)
        self.__dict__.pop("_incremental", None)
        if self.batch_size is not None:
            model = self._new_incremental()
            model.fit(x)
            self._store(model, var=model.var_, n_seen=model.n_samples_seen_)
            self._incremental = model
            return
        model = PCA(
            n_components=self.n_components,
            whiten=self.whiten,
            svd_solver=self._svd_solver(*x.shape),
            random_state=self.random_state,
        )
        model.fit(x)
        self._store(model, var=x.var(axis=0), n_seen=x.shape[0])

    def _svd_solver(self, n_samples: int, n_features: int) -> str:
        if n_features <= 1000 and n_samples >= 10 * n_features:
            return "auto"  # sklearn picks the exact covariance eigensolver here, which is cheaper
        return "randomized" if 2 * self.n_components <= min(n_samples, n_features) else "auto"

    def partial_fit(self, masks: Array, y=None) -> "PCACodec":
        """Update the fit with one chunk of masks ``(B, N, N)``, ``B >= n_components``; returns ``self``.

        Uses ``sklearn.decomposition.IncrementalPCA``: feed a mask set larger than memory
        chunk by chunk. Continues from the current fitted state if there is one.
        """
        self._check_params()
        masks = self._validate_masks(masks)
        self._check_enough_masks(masks.shape[0], f"{type(self).__name__}.partial_fit")
        x = np.ascontiguousarray(backend.to_numpy(masks), dtype=np.float32).reshape(masks.shape[0], -1)
        model = self._incremental_model()
        model.partial_fit(x)
        self._store(model, var=model.var_, n_seen=model.n_samples_seen_)
        self._incremental = model
        return self

    def _new_incremental(self) -> IncrementalPCA:
        return IncrementalPCA(n_components=self.n_components, whiten=self.whiten, batch_size=self.batch_size)

    def _incremental_model(self) -> IncrementalPCA:
        """The IncrementalPCA holding this codec's current state (rebuilt after fit/load)."""
        model = getattr(self, "_incremental", None)
        if model is not None and getattr(self, "components_", None) is model.components_:
            return model
        model = self._new_incremental()
        if not self._fitted_attributes():
            return model
        if self.components_.shape != (self.n_components, self.mask_size**2):
            raise ValueError(
                f"the fitted components have shape {self.components_.shape}, which does not match "
                f"n_components={self.n_components} and mask_size={self.mask_size}; call fit to start over"
            )
        model.components_ = self.components_
        model.n_components_ = self.n_components
        model.n_features_in_ = self.mask_size**2
        model.mean_ = self.mean_
        model.var_ = self.var_
        model.singular_values_ = self.singular_values_
        model.explained_variance_ = self.explained_variance_
        model.explained_variance_ratio_ = self.explained_variance_ratio_
        model.noise_variance_ = self.noise_variance_
        model.n_samples_seen_ = self.n_samples_seen_
        return model

    def _store(self, model, var: np.ndarray, n_seen: int) -> None:
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        self.components_ = f32(model.components_)
        self.mean_ = f32(model.mean_)
        self.var_ = f32(var)
        self.explained_variance_ = f32(model.explained_variance_)
        self.explained_variance_ratio_ = f32(model.explained_variance_ratio_)
        self.singular_values_ = f32(model.singular_values_)
        self.noise_variance_ = float(model.noise_variance_)
        self.n_samples_seen_ = int(n_seen)
        if isinstance(model, IncrementalPCA):
            model.components_ = self.components_  # identity marks the model as current

    # -- transforms ----------------------------------------------------------------
    def _constants(self, like: Array) -> tuple[Array, Array, Array, Array]:
        """Encode matrix (N^2, k), encode offset (k,), decode matrix (k, N^2), mean (N^2,)."""

        def build():
            comps = self.components_.astype(np.float64)
            scale = np.ones(comps.shape[0])
            if self.whiten:
                scale = np.sqrt(self.explained_variance_.astype(np.float64))
                scale = np.maximum(scale, np.finfo(np.float32).eps)
            enc = comps.T / scale
            offset = self.mean_.astype(np.float64) @ enc
            dec = comps * scale[:, None]
            f32 = np.float32
            return enc.astype(f32), offset.astype(f32), dec.astype(f32), self.mean_.astype(f32)

        state = (self.whiten, self.components_, self.mean_, self.explained_variance_)
        return device_constants(self, state, build, like)

    def _check_shapes(self) -> None:
        check_components(self)

    def _encode(self, masks: Array) -> Array:
        self._check_shapes()
        return backend.map_row_chunks(self._encode_chunk, masks)  # bounded float32 copies

    def _encode_chunk(self, masks: Array) -> Array:
        masks = backend.to_float32(masks)
        enc, offset, _, _ = self._constants(masks)
        return masks.reshape(masks.shape[0], -1) @ enc - offset

    def _decode(self, vectors: Array) -> Array:
        self._check_shapes()
        _, _, dec, mean = self._constants(vectors)
        n = self.mask_size
        return (vectors @ dec + mean).reshape(vectors.shape[0], n, n)
