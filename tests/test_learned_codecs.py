"""PCACodec and SparseCodec on real COCO masks (box-relative, resized to N x N)."""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA, IncrementalPCA, sparse_encode

import maskcodec
import maskcodec.pca  # noqa: F401  (registers "pca")
import maskcodec.sparse  # noqa: F401  (registers "sparse")
from maskcodec.pca import PCACodec
from maskcodec.sparse import SparseCodec, fista_lasso

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ANNOTATIONS = DATA / "coco_mini" / "annotations" / "instances_val.json"
N = 32


@functools.lru_cache(maxsize=4)
def _box_masks(size: int, limit: int = 400) -> np.ndarray:
    """Non-crowd instance masks cropped to their boxes, resized to size x size, binarised at 0.5."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ANNOTATIONS))
    out = []
    for ann in coco.loadAnns(sorted(coco.getAnnIds(iscrowd=False))):
        x, y, w, h = ann["bbox"]
        if w < 4 or h < 4:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools vs numpy 2 copy keyword
            full = coco.annToMask(ann)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        x1, y1 = int(np.ceil(x + w)), int(np.ceil(y + h))
        crop = torch.from_numpy(full[y0:y1, x0:x1]).float()[None, None]
        small = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append((small[0, 0] >= 0.5).numpy())
        if len(out) == limit:
            break
    return np.stack(out)


@pytest.fixture(scope="module")
def masks() -> np.ndarray:
    """(400, 32, 32) bool real masks: the first 300 for fitting, the last 100 held out."""
    if not ANNOTATIONS.is_file():
        pytest.skip(f"shared COCO data not found at {ANNOTATIONS}")
    m = _box_masks(N)
    assert m.shape == (400, N, N) and m.any(axis=(1, 2)).all()
    return m


@pytest.fixture(scope="module")
def sparse_codec(masks) -> SparseCodec:
    # alpha 1.5 rather than the default N/32 = 1: the default is tuned for 256 atoms at N = 128;
    # with only 64 atoms at N = 32 it leaves ~30% of the codes non-zero, 1.5 leaves ~22%.
    return SparseCodec(mask_size=N, n_components=64, alpha=1.5, random_state=0).fit(masks[:300])


def flat(m: np.ndarray) -> np.ndarray:
    return m.reshape(len(m), -1).astype(np.float32)


def ious(soft: np.ndarray, target: np.ndarray) -> np.ndarray:
    pred = soft > 0.5
    inter = (pred & target).sum(axis=(1, 2))
    union = (pred | target).sum(axis=(1, 2))
    return inter / np.maximum(union, 1)


# ---------------------------------------------------------------------------------- PCA
@pytest.mark.parametrize("whiten", [False, True])
def test_pca_matches_sklearn_pca(masks, whiten):
    train, held_out = masks[:300], masks[300:]
    codec = maskcodec.get_codec("pca", mask_size=N, n_components=40, whiten=whiten, random_state=0).fit(train)
    ref = PCA(n_components=40, whiten=whiten, svd_solver="randomized", random_state=0).fit(flat(train))
    assert codec._svd_solver(300, N * N) == "randomized"
    np.testing.assert_allclose(codec.components_, ref.components_, atol=1e-5)
    np.testing.assert_allclose(codec.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-5)
    vectors = codec.encode(held_out)
    assert vectors.shape == (100, 40) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, ref.transform(flat(held_out)), atol=2e-4, rtol=1e-4)
    soft = codec.decode(vectors)
    expected = ref.inverse_transform(ref.transform(flat(held_out)))
    np.testing.assert_allclose(soft.reshape(100, -1), expected, atol=2e-4)


def test_pca_fitted_state(masks):
    codec = PCACodec(mask_size=N, n_components=64, random_state=0).fit(masks[:300])
    assert codec.components_.shape == (64, N * N) and codec.components_.dtype == np.float32
    assert codec.mean_.shape == (N * N,) and codec.mean_.dtype == np.float32
    assert codec.explained_variance_.shape == codec.explained_variance_ratio_.shape == (64,)
    assert codec.n_samples_seen_ == 300
    np.testing.assert_allclose(codec.components_ @ codec.components_.T, np.eye(64), atol=1e-4)
    assert (np.diff(codec.explained_variance_) <= 1e-6).all()  # decreasing
    np.testing.assert_allclose(codec.mean_, flat(masks[:300]).mean(axis=0), atol=1e-6)


def test_pca_reconstructs_held_out_masks(masks):
    codec = PCACodec(mask_size=N, n_components=64, random_state=0).fit(masks[:300])
    scores = ious(codec.decode(codec.encode(masks[300:])), masks[300:])
    # 64 of 1024 components keep the coarse shape of unseen masks: measured mean ~0.85 here.
    assert scores.mean() > 0.75 and np.median(scores) > 0.8


def test_pca_solver_choice():
    codec = PCACodec(mask_size=128, n_components=256)
    assert codec._svd_solver(1000, 128 * 128) == "randomized"
    assert codec._svd_solver(400, 128 * 128) == "auto"  # 256 is not << 400
    assert PCACodec(mask_size=28, n_components=60)._svd_solver(100_000, 784) == "auto"  # covariance solver


def test_pca_needs_as_many_masks_as_components(masks):
    with pytest.raises(ValueError, match="at least n_components=64 masks, got 10"):
        PCACodec(mask_size=N, n_components=64).fit(masks[:10])


def test_pca_partial_fit_matches_incremental_pca(masks):
    chunks = [masks[i : i + 100] for i in range(0, 300, 100)]
    codec = PCACodec(mask_size=N, n_components=48, whiten=True)
    ref = IncrementalPCA(n_components=48, whiten=True)
    for chunk in chunks:
        codec.partial_fit(chunk)
        ref.partial_fit(flat(chunk))
    assert codec.n_samples_seen_ == 300
    np.testing.assert_allclose(codec.components_, ref.components_, atol=1e-4)
    expected = ref.transform(flat(masks[300:]))
    np.testing.assert_allclose(codec.encode(masks[300:]), expected, atol=1e-3, rtol=1e-3)


def test_pca_partial_fit_resumes_after_load(masks, tmp_path):
    in_memory = PCACodec(mask_size=N, n_components=32)
    resumed = PCACodec(mask_size=N, n_components=32)
    in_memory.partial_fit(masks[:100])
    resumed.partial_fit(masks[:100])
    resumed.save(tmp_path / "pca.npz")
    resumed = maskcodec.load(tmp_path / "pca.npz")
    in_memory.partial_fit(masks[100:200])
    resumed.partial_fit(masks[100:200])
    assert resumed.n_samples_seen_ == 200
    np.testing.assert_allclose(resumed.components_, in_memory.components_, atol=1e-4)


def test_pca_partial_fit_chunk_smaller_than_n_components(masks):
    with pytest.raises(ValueError, match="at least n_components=32 masks, got 20"):
        PCACodec(mask_size=N, n_components=32).partial_fit(masks[:20])


def test_pca_batch_size_uses_incremental_pca(masks):
    codec = PCACodec(mask_size=N, n_components=32, batch_size=100).fit(masks[:300])
    ref = IncrementalPCA(n_components=32, batch_size=100).fit(flat(masks[:300]))
    np.testing.assert_allclose(codec.components_, ref.components_, atol=1e-4)
    with pytest.raises(ValueError, match="batch_size"):
        PCACodec(mask_size=N, n_components=32, batch_size=8).fit(masks[:300])


def test_pca_refit_refreshes_cached_constants(masks):
    codec = PCACodec(mask_size=N, n_components=16, random_state=0).fit(masks[:100])
    first = codec.encode(masks[300:])
    codec.fit(masks[100:300])
    ref = PCA(n_components=16, svd_solver="randomized", random_state=0).fit(flat(masks[100:300]))
    second = codec.encode(masks[300:])
    assert not np.allclose(first, second)
    np.testing.assert_allclose(second, ref.transform(flat(masks[300:])), atol=2e-4)


def test_pca_torch_decode_is_differentiable(masks):
    codec = PCACodec(mask_size=N, n_components=16, random_state=0).fit(masks[:100])
    v = torch.from_numpy(codec.encode(masks[:4])).requires_grad_(True)
    target = torch.from_numpy(masks[:4]).float()
    loss = F.binary_cross_entropy(codec.decode(v).clamp(1e-4, 1 - 1e-4), target)
    loss.backward()
    assert v.grad.shape == (4, 16) and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------- sparse
def test_sparse_dictionary_has_unit_norm_atoms(sparse_codec):
    d = sparse_codec.components_
    assert d.shape == (64, N * N) and d.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    assert sparse_codec.effective_alpha() == 1.5
    assert SparseCodec(mask_size=128).effective_alpha() == 4.0  # default: mask_size / 32
    assert sparse_codec.n_samples_seen_ == 300


def test_sparse_codes_are_sparse_and_reconstruct(sparse_codec, masks):
    held_out = masks[300:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float64 coordinate descent converges: no ConvergenceWarning
        codes = sparse_codec.encode(held_out)
    nonzero = (codes != 0).mean(axis=1)
    assert np.median(nonzero) < 0.3
    scores = ious(sparse_codec.decode(codes), held_out)
    # Measured on these masks (alpha 1.5, 64 atoms, seeds 0-2): mean IoU ~0.85, median nonzero ~22%.
    # The floors leave room for other seeds and sklearn versions but fail for a broken codec
    # (all-zero codes give IoU 0; a random unit-norm dictionary gives ~0).
    assert scores.mean() > 0.75
    assert (scores > 0.5).mean() > 0.9


def test_sparse_numpy_encode_is_sklearn_sparse_encode(sparse_codec, masks):
    x = flat(masks[300:]).astype(np.float64)
    d = sparse_codec.components_.astype(np.float64)
    ref = sparse_encode(x, d, algorithm="lasso_cd", alpha=1.5, max_iter=1000)
    np.testing.assert_allclose(sparse_codec.encode(masks[300:]), ref, atol=1e-5)


def _objective(codec: SparseCodec, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    d = codec.components_.astype(np.float64)
    residual = x - codes.astype(np.float64) @ d
    return 0.5 * (residual**2).sum(axis=1) + codec.effective_alpha() * np.abs(codes).sum(axis=1)


def _with_params(codec: SparseCodec, **params) -> SparseCodec:
    """A copy of a fitted sparse codec with other encoding parameters (same dictionary)."""
    other = SparseCodec(**{**codec.get_params(), **params})
    for attr in ("components_", "n_iter_", "n_samples_seen_"):
        setattr(other, attr, getattr(codec, attr))
    return other


def test_cpu_torch_encode_is_the_numpy_encode(sparse_codec, masks):
    out = sparse_codec.encode(torch.from_numpy(masks[300:]))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), sparse_codec.encode(masks[300:]))


@pytest.mark.parametrize("as_torch", [False, True])
def test_fista_agrees_with_sklearn(sparse_codec, masks, as_torch):
    held_out = masks[300:]
    x = flat(held_out).astype(np.float64)
    cd = sparse_codec.encode(held_out)
    fista_codec = _with_params(sparse_codec, transform_algorithm="fista")
    fista = fista_codec.encode(torch.from_numpy(held_out) if as_torch else held_out)
    if as_torch:
        assert isinstance(fista, torch.Tensor) and fista.dtype == torch.float32
        fista = fista.numpy()
    assert fista.dtype == np.float32
    obj_cd, obj_fista = _objective(sparse_codec, x, cd), _objective(sparse_codec, x, fista)
    # Same convex problem, two solvers: objectives agree to 1e-4 relative, codes and masks closely.
    np.testing.assert_allclose(obj_fista, obj_cd, rtol=1e-4)
    assert np.abs(fista - cd).max() < 0.05
    np.testing.assert_allclose(sparse_codec.decode(fista), sparse_codec.decode(cd), atol=0.02)
    # Supports agree except for coefficients too small to matter.
    assert ((fista != 0) != (cd != 0)).mean() < 0.02


def test_lasso_lars_agrees_with_lasso_cd(sparse_codec, masks):
    held_out = masks[300:320]
    x = flat(held_out).astype(np.float64)
    ref = _objective(sparse_codec, x, sparse_codec.encode(held_out))
    codes = _with_params(sparse_codec, transform_algorithm="lasso_lars").encode(held_out)
    assert isinstance(codes, np.ndarray) and codes.dtype == np.float32
    np.testing.assert_allclose(_objective(sparse_codec, x, codes), ref, rtol=1e-4)


def test_fista_solves_a_known_problem():
    # Orthonormal dictionary: the Lasso solution is the soft-thresholded correlation.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    x = rng.standard_normal((5, 20))
    c = x @ q.T
    codes = fista_lasso(c.astype(np.float32), np.eye(20, dtype=np.float32), 0.5, 1.0, max_iter=50)
    np.testing.assert_allclose(codes, np.sign(c) * np.maximum(np.abs(c) - 0.5, 0), atol=1e-5)


def test_sparse_larger_alpha_gives_sparser_codes(sparse_codec, masks):
    weak = (sparse_codec.encode(masks[300:]) != 0).mean()
    strong = (_with_params(sparse_codec, alpha=4.0).encode(masks[300:]) != 0).mean()
    assert strong < weak


def test_sparse_partial_fit(masks, tmp_path):
    codec = SparseCodec(mask_size=N, n_components=32, batch_size=100, random_state=0)
    codec.partial_fit(masks[:100])
    first = codec.components_.copy()
    codec.partial_fit(masks[100:200])
    assert codec.n_samples_seen_ == 200
    assert not np.allclose(first, codec.components_)
    np.testing.assert_allclose(np.linalg.norm(codec.components_, axis=1), 1.0, atol=1e-5)
    codec.save(tmp_path / "sparse.npz")
    loaded = maskcodec.load(tmp_path / "sparse.npz")
    loaded.partial_fit(masks[200:300])  # resumes from the saved dictionary
    assert loaded.n_samples_seen_ == 300
    np.testing.assert_allclose(np.linalg.norm(loaded.components_, axis=1), 1.0, atol=1e-5)


def test_sparse_bad_parameters():
    for params, pattern in [
        ({"alpha": -1.0}, "alpha"),
        ({"max_iter": 0}, "max_iter"),
        ({"transform_algorithm": "omp"}, "transform_algorithm"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            SparseCodec(mask_size=8, n_components=4, **params).fit(np.zeros((5, 8, 8)))
