"""Sparse-coding codec: a learned dictionary of unit-norm atoms and a Lasso code (SOLQ Tab. 3a).

With D the (n_k, N^2) dictionary (rows are unit-norm atoms) and m a flattened mask,

    encode:  v* = argmin_v  1/2 ||m - v D||^2 + alpha ||v||_1      (alpha is the paper's beta)
    decode:  m_hat = v D

The objective is the paper's, unscaled: scikit-learn's ``MiniBatchDictionaryLearning`` and
``sparse_encode`` minimise exactly this per mask (``Lasso`` itself divides the squared error by
the number of pixels, and ``sparse_encode`` rescales alpha to compensate). Recipes that average
the squared error over pixels, 1/(2 N^2) ||m - v D||^2 + lambda ||v||_1, use alpha = lambda N^2.

The dictionary is fitted with ``MiniBatchDictionaryLearning`` on numpy, then its atoms are
scaled to unit norm (scikit-learn only bounds them by 1). Encoding numpy arrays uses
``sklearn.decomposition.sparse_encode`` (CPU torch tensors too, through a zero-copy view, so
their codes are identical); CUDA tensors and cupy arrays (and every input with
``transform_algorithm="fista"``) use FISTA with adaptive restart, written with matrix products
against the precomputed Gram matrix D D^T so it runs batched on the GPU. Decoding is one matrix
product on any backend (differentiable for torch); encoding is not differentiable.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.decomposition import MiniBatchDictionaryLearning, sparse_encode
from sklearn.exceptions import ConvergenceWarning

from . import backend
from .backend import Array
from .base import MaskCodec
from .linear import check_components, device_constants
from .registry import register_codec

TRANSFORM_ALGORITHMS = ("lasso_cd", "lasso_lars", "fista")
_ENCODE_CHUNK = 2048  # masks per sparse_encode call (bounds the float64 copy)


@register_codec("sparse")
class SparseCodec(MaskCodec):
    """Lasso codes over a dictionary of ``n_components`` unit-norm atoms learned from masks.

    Parameters
    ----------
    mask_size : int
        Side N of the square masks.
    n_components : int
        Number of atoms n_k = vector length.
    alpha : float or None
        L1 penalty on the code (beta in the paper), on the unscaled objective above, used both
        to learn the dictionary and to encode. ``None`` (default) means ``mask_size / 32``
        (4.0 at N = 128): mask norms, and so the correlations alpha is compared with, grow
        like N, so this keeps sparsity comparable across mask sizes. Larger alpha: sparser
        codes, blurrier reconstructions. Measured on 300 held-out COCO masks at N = 128 with
        256 atoms (dictionary from 1000 masks): alpha 2 -> median 17% non-zero, mean IoU 0.90;
        4 -> 12%, 0.88; 6 -> 9%, 0.86 (IoU of the decoded mask thresholded at 0.5).
    max_iter : int
        Passes (epochs) of ``MiniBatchDictionaryLearning`` over the training masks; it may stop
        earlier on its own convergence criterion. Two passes learn almost all there is at
        N = 128 (a third changed held-out IoU by < 0.01); the initial randomized SVD of the
        masks and the per-mask Lasso solves of each mini-batch dominate the fit time.
    batch_size : int
        Masks per mini-batch when learning the dictionary.
    transform_algorithm : {"lasso_cd", "lasso_lars", "fista"}
        Solver for CPU inputs (numpy, CPU torch; ``sparse_encode`` for the first two). GPU
        inputs (CUDA torch, cupy) always use FISTA, which solves the same problem.
    transform_max_iter : int
        Iteration cap of the encoder (coordinate descent or FISTA).
    random_state : int, numpy Generator/RandomState or None
        Seed of dictionary initialisation and mini-batch shuffling.

    Attributes
    ----------
    components_ : ndarray (n_k, N**2) float32
        The dictionary; every row has unit Euclidean norm.
    n_iter_ : int
        Epochs run by the dictionary learner.
    n_samples_seen_ : int
        Masks the dictionary was learned from.
    """

    def __init__(
        self,
        mask_size: int = 128,
        n_components: int = 256,
        alpha: float | None = None,
        max_iter: int = 2,
        batch_size: int = 256,
        transform_algorithm: str = "lasso_cd",
        transform_max_iter: int = 1000,
        random_state=None,
    ):
        super().__init__(mask_size=mask_size, n_components=n_components)
        self.alpha = alpha
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.transform_algorithm = transform_algorithm
        self.transform_max_iter = transform_max_iter
        self.random_state = random_state

    # -- parameters ----------------------------------------------------------------
    def effective_alpha(self) -> float:
        """The L1 penalty in use: ``alpha``, or ``mask_size / 32`` when ``alpha`` is None."""
        return float(self.mask_size) / 32.0 if self.alpha is None else float(self.alpha)

    def _extra_param_checks(self) -> None:
        a = self.alpha
        number = isinstance(a, (int, float, np.number)) and not isinstance(a, bool)
        if a is not None and not (number and np.isfinite(a) and a >= 0):
            raise ValueError(f"alpha must be None or a non-negative number, got {a!r}")
        for name in ("max_iter", "batch_size", "transform_max_iter"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.transform_algorithm not in TRANSFORM_ALGORITHMS:
            raise ValueError(
                f"transform_algorithm must be one of {TRANSFORM_ALGORITHMS}, got {self.transform_algorithm!r}"
            )

    # -- fitting -------------------------------------------------------------------
    def _learner(self, dict_init: np.ndarray | None = None) -> MiniBatchDictionaryLearning:
        return MiniBatchDictionaryLearning(
            n_components=self.n_components,
            alpha=self.effective_alpha(),
            max_iter=self.max_iter,
            batch_size=self.batch_size,
            fit_algorithm="cd",
            dict_init=dict_init,
            random_state=self.random_state,
        )

    def _fit(self, masks: np.ndarray) -> None:
        # float64: the inner coordinate-descent Lasso of every mini-batch step converges in far
        # fewer sweeps than in float32 (about 2x less CPU for the whole fit), at 2x the memory.
        x = masks.reshape(masks.shape[0], -1).astype(np.float64)
        learner = self._learner()
        with warnings.catch_warnings():
            # Mini-batch steps only need approximate codes; a capped inner solve is expected.
            warnings.simplefilter("ignore", ConvergenceWarning)
            learner.fit(x)
        self._store(learner, n_seen=x.shape[0], n_iter=int(np.ceil(learner.n_iter_)))

    def partial_fit(self, masks: Array, y=None) -> "SparseCodec":
        """Update the dictionary with one mini-batch of masks ``(B, N, N)``; returns ``self``.

        Uses ``MiniBatchDictionaryLearning.partial_fit``. Continues the learner of earlier
        ``fit``/``partial_fit`` calls on this object. The learner's running statistics are not
        saved, so after ``maskcodec.load`` it starts a new learner initialised with the saved
        dictionary: the first chunk after loading then weighs as much as all earlier ones.
        """
        self._check_params()
        masks = self._validate_masks(masks)
        if masks.shape[0] == 0:
            raise ValueError("partial_fit needs at least one mask, got an empty batch")
        x = np.ascontiguousarray(backend.to_numpy(masks), dtype=np.float64).reshape(masks.shape[0], -1)
        learner = getattr(self, "_dict_learner", None)
        if learner is None or getattr(self, "components_", None) is not getattr(self, "_learner_output", None):
            learner = self._learner(dict_init=getattr(self, "components_", None))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            learner.partial_fit(x)
        n_seen = getattr(self, "n_samples_seen_", 0) + x.shape[0]
        self._store(learner, n_seen=n_seen, n_iter=getattr(self, "n_iter_", 0))
        return self

    def _store(self, learner: MiniBatchDictionaryLearning, n_seen: int, n_iter: int) -> None:
        self.components_ = _unit_rows(learner.components_, self.random_state)
        self.n_samples_seen_ = int(n_seen)
        self.n_iter_ = int(n_iter)
        self._dict_learner = learner
        self._learner_output = self.components_

    # -- constants -----------------------------------------------------------------
    def _constants(self, like: Array) -> tuple[Array, Array, Array]:
        """Dictionary D (k, N^2), D^T (N^2, k), Gram D D^T (k, k) float32, and (1,) its largest eigenvalue."""

        def build():
            d = np.ascontiguousarray(self.components_, dtype=np.float32)
            d64 = d.astype(np.float64)
            gram = d64 @ d64.T
            lipschitz = float(np.linalg.eigvalsh(gram)[-1]) * 1.0001 + 1e-12
            return d, d.T.copy(), gram.astype(np.float32), np.array([lipschitz])

        state = (self.components_,)
        return device_constants(self, state, build, like)

    def _float64_constants(self) -> tuple[np.ndarray, np.ndarray]:
        """Dictionary (k, N^2) and Gram matrix (k, k) in float64, for sparse_encode."""
        d = self.components_.astype(np.float64)
        return d, d @ d.T

    def _check_shapes(self) -> None:
        check_components(self)

    # -- transforms ----------------------------------------------------------------
    def _encode(self, masks: Array) -> Array:
        self._check_shapes()
        x = backend.to_float32(masks).reshape(masks.shape[0], -1)
        if self.transform_algorithm != "fista" and backend.device_key(x)[1] == "cpu":
            # numpy and CPU torch: scikit-learn's solver (zero-copy view for torch), same codes.
            codes = self._encode_sklearn(np.ascontiguousarray(backend.to_numpy(x)))
            return backend.constant_like(codes, x)
        if backend.backend_of(x) == "torch":
            x = x.detach()
        _, d_t, gram, _ = self._constants(x)
        lipschitz = float(self._constants(np.empty(0))[3][0])  # host copy: a Python float
        return fista_lasso(x @ d_t, gram, self.effective_alpha(), lipschitz, self.transform_max_iter)

    def _encode_sklearn(self, x: np.ndarray) -> np.ndarray:
        # float64: in float32 coordinate descent cannot reach sklearn's duality-gap tolerance and
        # runs to transform_max_iter on most masks; float64 converges and is faster overall.
        d, gram = device_constants(self, (self.components_,), self._float64_constants, x, slot="float64")
        codes = np.empty((x.shape[0], d.shape[0]), dtype=np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            for start in range(0, x.shape[0], _ENCODE_CHUNK):
                chunk = x[start : start + _ENCODE_CHUNK].astype(np.float64)
                codes[start : start + _ENCODE_CHUNK] = sparse_encode(
                    chunk,
                    d,
                    gram=gram,
                    algorithm=self.transform_algorithm,
                    alpha=self.effective_alpha(),
                    max_iter=self.transform_max_iter,
                    positive=False,
                )
        unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        for w in caught:
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if unconverged:
            warnings.warn(
                f"sparse_encode ({self.transform_algorithm}) did not fully converge for {unconverged} of "
                f"{x.shape[0]} masks within transform_max_iter={self.transform_max_iter}; raise "
                "transform_max_iter for exact codes (reconstructions are usually unaffected)",
                ConvergenceWarning,
                stacklevel=4,
            )
        return codes

    def _decode(self, vectors: Array) -> Array:
        self._check_shapes()
        d, _, _, _ = self._constants(vectors)
        n = self.mask_size
        return (vectors @ d).reshape(vectors.shape[0], n, n)


def fista_lasso(
    correlations: Array,
    gram: Array,
    alpha: float,
    lipschitz: float,
    max_iter: int = 1000,
    tol: float = 1e-5,
    check_every: int = 10,
) -> Array:
    """Solve ``argmin_v 1/2 ||x - v D||^2 + alpha ||v||_1`` for a batch, by FISTA with adaptive restart.

    Parameters
    ----------
    correlations : (B, k) float32 array ``x D^T`` (numpy, torch or cupy).
    gram : (k, k) float32 array ``D D^T`` on the same backend and device.
    alpha : L1 penalty.
    lipschitz : an upper bound of the largest eigenvalue of ``gram`` (the gradient's Lipschitz constant).
    max_iter : iteration cap.
    tol : stop when no code entry moved by more than ``tol * max(1, max |v|)`` in an iteration
        (checked every ``check_every`` iterations, to limit device synchronisation).

    Returns the (B, k) codes on the input's backend. Momentum restarts per row whenever it
    points against the proximal step (O'Donoghue & Candes 2015), which keeps FISTA fast on the
    ill-conditioned Gram matrices of learned dictionaries.
    """
    step = 1.0 / lipschitz
    threshold = alpha * step
    v = correlations * 0.0
    y = v
    t = correlations[:, :1] * 0.0 + 1.0  # (B, 1) momentum counters
    ones = correlations[:1, :].T * 0.0 + 1.0  # (k, 1), for row sums on any backend
    for it in range(max_iter):
        z = y - (y @ gram - correlations) * step
        v_new = z - z.clip(-threshold, threshold)  # soft threshold
        delta = v_new - v
        keep = backend.to_float32(((y - v_new) * delta) @ ones <= 0.0)  # 0 where momentum overshoots
        t_new = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) * 0.5
        y = v_new + ((t - 1.0) / t_new * keep) * delta
        t = t_new * keep + (1.0 - keep)
        v = v_new
        if (it + 1) % check_every == 0:
            change = float(abs(delta).max())
            if change <= tol * max(1.0, float(abs(v).max())):
                break
    return v


def _unit_rows(dictionary: np.ndarray, random_state) -> np.ndarray:
    """Rows scaled to unit norm; an all-zero row (an unused atom) becomes a random unit vector."""
    d = np.array(dictionary, dtype=np.float64)
    norms = np.linalg.norm(d, axis=1)
    dead = norms < 1e-8
    if dead.any():
        rng = np.random.default_rng(random_state if isinstance(random_state, (int, np.integer)) else None)
        d[dead] = rng.standard_normal((int(dead.sum()), d.shape[1]))
        norms[dead] = np.linalg.norm(d[dead], axis=1)
    return np.ascontiguousarray(d / norms[:, None], dtype=np.float32)

