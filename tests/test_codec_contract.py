"""The MaskCodec contract, checked for every registered codec.

Codecs are built with ``get_codec(name, mask_size=N, n_components=K)`` with K a perfect square
(every codec accepts it), fitted on synthetic rectangles and ellipses, so these tests need no
data files.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import maskcodec
import maskcodec.flatten  # noqa: F401  (these imports register the codecs)
import maskcodec.pca  # noqa: F401
import maskcodec.sparse  # noqa: F401
from maskcodec import backend, persistence

N, K = 16, 16
CODECS = maskcodec.available_codecs()
# On the GPU the sparse codec solves its Lasso with FISTA instead of scikit-learn's coordinate
# descent: the two agree to solver tolerance, not to float32 rounding.
GPU_ATOL = {"sparse": 2e-2}


def synthetic_masks(count: int, size: int = N, seed: int = 0) -> np.ndarray:
    """(count, size, size) bool: random axis-aligned rectangles and ellipses."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] + 0.5
    out = np.zeros((count, size, size), dtype=bool)
    for i in range(count):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        hy, hx = rng.uniform(0.15, 0.5, 2) * size
        if i % 2:
            out[i] = (np.abs(yy - cy) <= hy) & (np.abs(xx - cx) <= hx)
        else:
            out[i] = ((yy - cy) / hy) ** 2 + ((xx - cx) / hx) ** 2 <= 1
    return out


TRAIN = synthetic_masks(80, seed=0)
TEST = synthetic_masks(12, seed=1)


def make(name: str, **params) -> maskcodec.MaskCodec:
    cls = maskcodec.codec_class(name)
    if "random_state" in cls().get_params():
        params.setdefault("random_state", 0)
    return maskcodec.get_codec(name, **{"mask_size": N, "n_components": K, **params})


_FITTED: dict[str, maskcodec.MaskCodec] = {}


def fitted(name: str) -> maskcodec.MaskCodec:
    if name not in _FITTED:
        _FITTED[name] = make(name).fit(TRAIN)
    return _FITTED[name]


@pytest.fixture(params=CODECS)
def name(request) -> str:
    return request.param


def test_the_learned_and_baseline_codecs_are_registered():
    assert {"dct", "pca", "sparse", "flatten"} <= set(CODECS)


# ------------------------------------------------------------------ estimator protocol
def test_get_params_set_params_clone(name):
    codec = make(name)
    params = codec.get_params()
    assert params["mask_size"] == N and params["n_components"] == K
    assert type(maskcodec.get_codec(name, **params)) is type(codec)
    assert codec.set_params(mask_size=32) is codec and codec.mask_size == 32
    codec.set_params(mask_size=N)
    model = fitted(name)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    if model.requires_fit:
        assert not copy._fitted_attributes()  # clone drops fitted state
        with pytest.raises(NotFittedError):
            copy.encode(TEST)
    assert fitted(name).fit(TRAIN) is fitted(name)


def test_codec_name_and_sklearn_aliases(name):
    model = fitted(name)
    assert model.codec_name == name
    np.testing.assert_array_equal(model.transform(TEST), model.encode(TEST))
    np.testing.assert_array_equal(model.inverse_transform(model.encode(TEST)), model.decode(model.encode(TEST)))


def test_unknown_codec_and_unknown_parameter():
    with pytest.raises(ValueError, match="unknown codec 'nope'.*pca"):
        maskcodec.get_codec("nope")
    with pytest.raises(ValueError, match="valid parameters"):
        maskcodec.get_codec("pca", mask_size=N, n_components=K, bogus=1)


def test_unfitted_codec_raises_not_fitted_with_a_hint(name):
    codec = make(name)
    if not codec.requires_fit:
        assert codec.encode(TEST).shape == (len(TEST), K)
        assert codec.decode(np.zeros((2, K), np.float32)).shape == (2, N, N)
        return
    with pytest.raises(NotFittedError, match=r"not fitted yet.*fit\(masks\)"):
        codec.encode(TEST)
    with pytest.raises(NotFittedError, match="maskcodec.load"):
        codec.decode(np.zeros((2, K), np.float32))


# ------------------------------------------------------------------ persistence
def test_state_round_trip_and_validation(name):
    model = fitted(name)
    state = model.get_state()
    again = maskcodec.from_state(state)
    assert type(again) is type(model) and again.get_params() == model.get_params()
    np.testing.assert_array_equal(again.encode(TEST), model.encode(TEST))
    with pytest.raises(ValueError, match=r"unknown .* parameter\(s\) \['bogus'\]"):
        maskcodec.from_state({**state, "params": {**state["params"], "bogus": 1}})
    with pytest.raises(ValueError, match="not a fitted attribute name"):
        maskcodec.from_state({**state, "fitted": {**state["fitted"], "_private": 1}})
    if model.requires_fit:
        with pytest.raises(ValueError, match="holds no fitted state"):
            maskcodec.from_state({**state, "fitted": {}})


def test_module_save_is_method_save(tmp_path):
    model = fitted("pca")
    maskcodec.save(model, tmp_path / "a.npz")
    model.save(tmp_path / "b.npz")
    a, b = maskcodec.load(tmp_path / "a.npz"), maskcodec.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(a.encode(TEST), b.encode(TEST))


def test_save_load_round_trip(name, tmp_path):
    model = fitted(name)
    path = tmp_path / "codec.npz"
    model.save(path)
    loaded = maskcodec.load(path)
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    assert loaded._fitted_attributes().keys() == model._fitted_attributes().keys()
    np.testing.assert_array_equal(loaded.encode(TEST), model.encode(TEST))
    vectors = model.encode(TEST)
    np.testing.assert_array_equal(loaded.decode(vectors), model.decode(vectors))
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temp file


def _corrupt(kind: str, good: bytes, path) -> None:
    rng = np.random.default_rng(0)
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "random":
        path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no_header":
        np.savez(path, components_=np.zeros((2, 2)))
    elif kind in ("wrong_version", "wrong_format", "bad_json"):
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        header = json.loads(arrays["__header__"].tobytes().decode())
        if kind == "wrong_version":
            header["format_version"] = persistence.FORMAT_VERSION + 1
            blob = json.dumps(header).encode()
        elif kind == "wrong_format":
            header["format"] = "something-else"
            blob = json.dumps(header).encode()
        else:
            blob = b"{not json"
        arrays["__header__"] = np.frombuffer(blob, dtype=np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    else:  # pragma: no cover
        raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind,message",
    [
        ("truncated", "corrupt or truncated|not a readable"),
        ("random", "not a readable"),
        ("empty", "not a readable"),
        ("no_header", "no header"),
        ("wrong_version", "format version"),
        ("wrong_format", "not a maskcodec codec file"),
        ("bad_json", "corrupt or truncated|not a readable"),
    ],
)
def test_corrupt_files_raise_a_clear_value_error(name, tmp_path, kind, message):
    path = tmp_path / "codec.npz"
    fitted(name).save(path)
    _corrupt(kind, path.read_bytes(), path)
    with pytest.raises(ValueError, match=message):
        maskcodec.load(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        maskcodec.load(tmp_path / "absent.npz")


# ------------------------------------------------------------------ shapes and values
def test_shapes_and_dtypes(name):
    model = fitted(name)
    vectors = model.encode(TEST)
    assert vectors.shape == (len(TEST), K) and vectors.dtype == np.float32
    soft = model.decode(vectors)
    assert soft.shape == (len(TEST), N, N) and soft.dtype == np.float32
    assert np.isfinite(soft).all()


def test_input_dtypes_agree(name):
    model = fitted(name)
    ref = model.encode(TEST)
    for dtype in (np.float32, np.float64, np.uint8, np.int64):
        masks = TEST.astype(dtype)
        out = model.encode(masks)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ref, atol=1e-5)
    np.testing.assert_allclose(model.decode(ref.astype(np.float64)), model.decode(ref), atol=1e-6)


def test_soft_masks_are_accepted(name):
    soft = TEST.astype(np.float32) * 0.7 + 0.1
    out = fitted(name).encode(soft)
    assert out.shape == (len(TEST), K) and np.isfinite(out).all()


def test_empty_batches(name):
    model = fitted(name)
    v = model.encode(np.zeros((0, N, N), dtype=bool))
    assert v.shape == (0, K) and v.dtype == np.float32
    m = model.decode(np.zeros((0, K), dtype=np.float32))
    assert m.shape == (0, N, N) and m.dtype == np.float32
    vt = model.encode(torch.zeros(0, N, N))
    assert isinstance(vt, torch.Tensor) and tuple(vt.shape) == (0, K) and vt.dtype == torch.float32
    mt = model.decode(torch.zeros(0, K))
    assert isinstance(mt, torch.Tensor) and tuple(mt.shape) == (0, N, N)


@pytest.mark.parametrize("fill", [0, 1])
def test_all_zero_and_all_one_masks(name, fill):
    model = fitted(name)
    masks = np.full((3, N, N), bool(fill))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a solver may warn on these degenerate inputs; results still must hold
        vectors = model.encode(masks)
    assert vectors.shape == (3, K) and np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors, vectors[:1].repeat(3, axis=0), atol=1e-5)  # deterministic
    soft = model.decode(vectors)
    assert np.isfinite(soft).all()
    # Every codec keeps at least the mask's mean: the binarised reconstruction agrees on most pixels.
    assert ((soft > 0.5) == bool(fill)).mean() >= 0.9


@pytest.mark.parametrize(
    "shape,pattern",
    [
        ((N, N), r"for a single mask use masks\[None\]"),
        ((2, N, N + 1), "mask_size"),
        ((2, N + 1, N + 1), "mask_size"),
        ((1, 2, N, N), "shape"),
        ((N,), "shape"),
    ],
)
def test_wrong_mask_shape(name, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        fitted(name).encode(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize(
    "bad,pattern", [(-0.5, r"\[0, 1\]"), (1.5, r"\[0, 1\]"), (np.nan, "NaN"), (np.inf, "NaN or infinite")]
)
def test_values_outside_unit_interval_or_not_finite(name, bad, pattern):
    masks = TEST[:2].astype(np.float32)
    masks[1, 3, 4] = bad
    with pytest.raises(ValueError, match=pattern):
        fitted(name).encode(masks)
    with pytest.raises(ValueError, match=pattern):
        fitted(name).encode(torch.from_numpy(masks))


def test_non_numeric_masks(name):
    with pytest.raises(ValueError, match="dtype"):
        fitted(name).encode(np.zeros((1, N, N), dtype=np.complex64))


@pytest.mark.parametrize("shape", [(2, K + 1), (2, K - 1), (K,), (2, K, 1)])
def test_wrong_vector_shape(name, shape):
    with pytest.raises(ValueError, match=f"vectors must have shape \\(B, {K}\\)"):
        fitted(name).decode(np.zeros(shape, dtype=np.float32))


def test_non_finite_or_bool_vectors(name):
    v = np.zeros((2, K), dtype=np.float32)
    v[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fitted(name).decode(v)
    with pytest.raises(ValueError, match="real numbers"):
        fitted(name).decode(np.zeros((2, K), dtype=bool))


def test_n_components_larger_than_pixels(name):
    codec = make(name, mask_size=4, n_components=25)
    masks = np.zeros((30, 4, 4), dtype=bool)
    with pytest.raises(ValueError, match="exceeds mask_size"):
        codec.fit(masks) if codec.requires_fit else codec.encode(masks)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_invalid_sizes(name, bad):
    for params in ({"mask_size": bad}, {"n_components": bad}):
        with pytest.raises(ValueError, match="positive integer"):
            make(name, **params).fit(TRAIN)


def test_parameters_changed_after_fit(name):
    model = clone(fitted(name)).fit(TRAIN)
    model.set_params(mask_size=N // 2)
    small = np.zeros((1, N // 2, N // 2), dtype=bool)
    if not model.requires_fit:  # stateless codecs simply follow the new parameters
        assert model.encode(small).shape == (1, K)
        return
    with pytest.raises(ValueError, match="refit"):  # fitted state no longer matches: say so
        model.encode(small)
    with pytest.raises(ValueError, match="refit"):
        model.decode(np.zeros((1, K), dtype=np.float32))


# ------------------------------------------------------------------ backends
def test_numpy_and_torch_agree_and_torch_in_torch_out(name):
    model = fitted(name)
    atol = 1e-5
    ref = model.encode(TEST)
    for dtype in (bool, np.float32, np.float64):
        masks = torch.from_numpy(TEST.astype(dtype))
        out = model.encode(masks)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == "cpu"
        np.testing.assert_allclose(out.numpy(), ref, atol=atol, rtol=1e-4)
    v = torch.from_numpy(ref)
    soft = model.decode(v)
    assert isinstance(soft, torch.Tensor) and soft.dtype == torch.float32
    np.testing.assert_allclose(soft.numpy(), model.decode(ref), atol=1e-5)
    np.testing.assert_allclose(model.decode(v.double()).numpy(), soft.numpy(), atol=1e-6)


def test_torch_decode_is_differentiable(name):
    model = fitted(name)
    v = torch.from_numpy(model.encode(TEST)).requires_grad_(True)
    target = torch.from_numpy(TEST).float()
    loss = (model.decode(v) - target).abs().mean()
    loss.backward()
    assert v.grad is not None and v.grad.shape == v.shape and torch.isfinite(v.grad).all()
    assert v.grad.abs().sum() > 0


def test_backend_helpers_see_the_same_kind(name):
    out = fitted(name).decode(torch.zeros(1, K))
    assert backend.backend_of(out) == "torch"


@pytest.mark.gpu
def test_cuda_in_cuda_out(name):
    ok, why = backend.cuda_status()
    if not ok or not torch.cuda.is_available():
        pytest.skip(why)
    model = fitted(name)
    atol = GPU_ATOL.get(name, 1e-4)
    masks = torch.from_numpy(TEST).cuda()
    v = model.encode(masks)
    assert v.is_cuda and v.dtype == torch.float32
    np.testing.assert_allclose(v.cpu().numpy(), model.encode(TEST), atol=atol, rtol=1e-3)
    soft = model.decode(v.requires_grad_(True))
    assert soft.is_cuda
    soft.sum().backward()


@pytest.mark.gpu
def test_cupy_in_cupy_out(name):
    ok, why = backend.cuda_status()
    cupy = pytest.importorskip("cupy")
    if not ok:
        pytest.skip(why)
    model = fitted(name)
    atol = GPU_ATOL.get(name, 1e-4)
    v = model.encode(cupy.asarray(TEST))
    assert isinstance(v, cupy.ndarray) and v.dtype == np.float32
    np.testing.assert_allclose(cupy.asnumpy(v), model.encode(TEST), atol=atol, rtol=1e-3)
    soft = model.decode(v)
    assert isinstance(soft, cupy.ndarray) and soft.shape == (len(TEST), N, N)
