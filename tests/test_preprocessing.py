"""``xpnn.data`` preprocessing: exact statistics,
edge sizes (0, 1 and 2 rows), every check of transform/inverse_transform, ``fit_transform`` and ``to``."""
from __future__ import annotations

import os

import array_api_strict as xs
import numpy as np
import pytest

import xpnn.data as D
from xpnn.errors import DTypeError, ShapeError


def _data(n=50, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(2.0, 3.0, (n, d)) @ rng.normal(size=(d, d))


# --- Standardizer --------------------------------------------------------------------------------------------------

def test_standardizer_statistics_are_the_population_mean_and_std():
    X = _data()
    s = D.Standardizer()
    assert s.fit(X) is s
    np.testing.assert_allclose(s.mean_, X.mean(0), rtol=1e-13)
    np.testing.assert_allclose(s.scale_, X.std(0), rtol=1e-12)  # ddof=0, like sklearn's StandardScaler
    np.testing.assert_allclose(s.transform(X), (X - X.mean(0)) / X.std(0), rtol=1e-10, atol=1e-12)


def test_standardizer_fit_transform_is_fit_then_transform():
    X = _data(seed=3)
    s = D.Standardizer()
    Z = s.fit_transform(X)
    assert s.mean_ is not None
    assert np.array_equal(Z, D.Standardizer().fit(X).transform(X))


def test_standardizer_one_row_centres_to_zero_with_unit_scale():
    X = np.array([[1.5, -2.0, 7.0]])
    s = D.Standardizer().fit(X)
    assert s.mean_.tolist() == [1.5, -2.0, 7.0] and s.scale_.tolist() == [1.0, 1.0, 1.0]
    assert s.transform(X).tolist() == [[0.0, 0.0, 0.0]]
    assert np.array_equal(s.inverse_transform(np.ones((2, 3))), [[2.5, -1.0, 8.0]] * 2)


def test_standardizer_zero_rows_is_a_shape_error():
    with pytest.raises(ShapeError, match="no rows"):
        D.Standardizer().fit(np.zeros((0, 3)))


def test_standardizer_inverse_transform_is_z_times_scale_plus_mean():
    X = _data(seed=4)
    s = D.Standardizer().fit(X)
    Z = np.arange(8.0).reshape(2, 4)
    np.testing.assert_allclose(s.inverse_transform(Z), Z * X.std(0) + X.mean(0), rtol=1e-12)


def test_standardizer_keeps_the_input_dtype():
    s = D.Standardizer().fit(_data())  # float64 statistics
    X32 = _data(seed=5).astype(np.float32)
    assert s.transform(X32).dtype == np.float32 and s.inverse_transform(X32).dtype == np.float32


@pytest.mark.parametrize("method", ["transform", "inverse_transform", "to", "state_dict"])
def test_standardizer_unfitted_methods_raise(method):
    s = D.Standardizer()
    args = {"to": ("numpy",), "state_dict": ()}.get(method, (np.zeros((2, 3)),))
    with pytest.raises(RuntimeError, match=rf"Standardizer\.{method}: call fit"):
        getattr(s, method)(*args)
    assert s.mean_ is None and s.scale_ is None  # no statistics until fit


@pytest.mark.parametrize("method", ["transform", "inverse_transform"])
def test_standardizer_transform_checks(method):
    s = D.Standardizer().fit(_data())
    f = getattr(s, method)
    with pytest.raises(ShapeError, match="fitted on 4 features"):
        f(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match=r"\(n_samples, n_features\)"):
        f(np.zeros((4,)))
    with pytest.raises(ShapeError, match=r"\(n_samples, n_features\)"):
        f(np.zeros((1, 2, 4)))
    with pytest.raises(DTypeError, match="floating"):
        f(np.zeros((2, 4), np.int32))


def test_standardizer_fit_checks():
    with pytest.raises(ShapeError, match=r"\(n_samples, n_features\)"):
        D.Standardizer().fit(np.zeros((5,)))
    with pytest.raises(DTypeError, match="floating"):
        D.Standardizer().fit(np.zeros((5, 2), np.bool_))


def test_standardizer_state_dict_round_trip_and_checks():
    s = D.Standardizer().fit(_data())
    sd = s.state_dict()
    assert set(sd) == {"mean", "scale"}
    assert sd["mean"] is s.mean_ and sd["scale"] is s.scale_
    t = D.Standardizer()
    assert t.load_state_dict(sd) is t
    assert np.array_equal(t.transform(_data(seed=9)), s.transform(_data(seed=9)))
    with pytest.raises(KeyError, match="mean, scale"):
        D.Standardizer().load_state_dict({"mean": sd["mean"]})
    with pytest.raises(KeyError, match="mean, scale"):
        D.Standardizer().load_state_dict({**sd, "extra": sd["mean"]})
    with pytest.raises(ShapeError, match=r"must both be \(n_features,\)"):
        D.Standardizer().load_state_dict({"mean": np.zeros(4), "scale": np.ones(3)})
    with pytest.raises(ShapeError, match=r"must both be \(n_features,\)"):
        D.Standardizer().load_state_dict({"mean": np.zeros((1, 4)), "scale": np.ones((1, 4))})


def test_standardizer_to_moves_both_statistics():
    X = _data()
    s = D.Standardizer().fit(X)
    assert s.to(xs) is s
    for a in (s.mean_, s.scale_):
        assert isinstance(a, type(xs.asarray(0.0)))
    Z = s.transform(xs.asarray(X))
    np.testing.assert_allclose(np.asarray(Z), (X - X.mean(0)) / X.std(0), rtol=1e-10, atol=1e-12)


# --- PCA -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [True, "2", None, [2]])
def test_pca_n_components_type_errors(bad):
    with pytest.raises(TypeError, match="n_components must be an int or a float"):
        D.PCA(bad)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.5, 2.5])
def test_pca_fraction_must_be_inside_0_1(bad):
    with pytest.raises(ValueError, match=r"variance fraction in \(0, 1\)"):
        D.PCA(bad)


@pytest.mark.parametrize("bad", [0, -1])
def test_pca_count_must_be_positive(bad):
    with pytest.raises(ValueError, match=">= 1"):
        D.PCA(bad)


def test_pca_defaults():
    p = D.PCA(2)
    assert p.n_components == 2 and p.whiten is False and p.rtol is None
    assert p.mean_ is None and p.components_ is None and p.whiten_scale_ is None
    assert p.explained_variance_ is None and p.explained_variance_ratio_ is None


def test_pca_one_component():
    X = _data(n=40, d=3, seed=2)
    p = D.PCA(1)
    assert p.fit(X) is p
    assert p.components_.shape == (1, 3) and p.explained_variance_.shape == (1,)
    cov = np.cov(X, rowvar=False)
    evals, evecs = np.linalg.eigh(cov)
    np.testing.assert_allclose(p.explained_variance_, [evals[-1]], rtol=1e-10)
    np.testing.assert_allclose(np.abs(p.components_[0]), np.abs(evecs[:, -1]), rtol=1e-8)
    np.testing.assert_allclose(p.explained_variance_ratio_, [evals[-1] / evals.sum()], rtol=1e-10)
    np.testing.assert_allclose(p.mean_, X.mean(0), rtol=1e-13)
    Z = p.transform(X)
    assert Z.shape == (40, 1)
    np.testing.assert_allclose(Z, (X - X.mean(0)) @ p.components_.T, rtol=1e-12)


def test_pca_explained_variance_ratio_is_var_over_total():
    X = _data(n=60, d=5, seed=6)
    evals = np.sort(np.linalg.eigvalsh(np.cov(X, rowvar=False)))[::-1]
    for k in (1, 3, 5):
        ratio = np.asarray(D.PCA(k).fit(X).explained_variance_ratio_)
        np.testing.assert_allclose(ratio, evals[:k] / evals.sum(), rtol=1e-9)
        assert ratio.sum() <= 1.0 + 1e-12
        assert (ratio.sum() < 1.0 - 1e-3) == (k < 5)


def test_pca_fraction_keeps_the_fewest_components():
    # independent columns with variances in the ratio 5 : 3 : 2 (exact, by construction)
    base = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float64)  # orthogonal columns
    X = base * np.sqrt([5.0, 3.0, 2.0])
    for frac, k in ((0.3, 1), (0.49, 1), (0.51, 2), (0.79, 2), (0.81, 3), (0.999, 3)):
        p = D.PCA(frac).fit(X)
        assert p.components_.shape == (k, 3), (frac, k)
        np.testing.assert_allclose(p.explained_variance_ratio_, [0.5, 0.3, 0.2][:k], rtol=1e-12)


def test_pca_on_constant_data_has_zero_ratios_and_the_fraction_caps_at_min_n_d():
    X = np.full((4, 3), 2.5)
    with np.errstate(all="raise"):
        p = D.PCA(0.5).fit(X)  # total variance 0: ratios are 0 (not NaN), so no fraction is ever reached
    assert p.components_.shape == (3, 3)
    assert np.array_equal(p.explained_variance_ratio_, np.zeros(3))
    assert np.array_equal(p.explained_variance_, np.zeros(3))


def test_pca_on_two_rows():
    X = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    p = D.PCA(2).fit(X)  # min(n, d) = 2 components
    assert p.components_.shape == (2, 3)
    np.testing.assert_allclose(p.explained_variance_[0], 4.0, rtol=1e-12)  # |x1 - x0|^2 / 2 / (n - 1)
    np.testing.assert_allclose(p.explained_variance_[1], 0.0, atol=1e-12)
    np.testing.assert_allclose(p.explained_variance_ratio_, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(p.components_[0]), np.array([1.0, 0.0, 1.0]) / np.sqrt(2), rtol=1e-12)
    np.testing.assert_allclose(p.inverse_transform(p.transform(X)), X, atol=1e-12)
    with pytest.raises(ValueError, match=r"n_components=3 exceeds min\(n_samples, n_features\)=2"):
        D.PCA(3).fit(X)
    with pytest.raises(ShapeError, match="at least 2 samples"):
        D.PCA(1).fit(X[:1])


def test_pca_components_are_unit_rows_with_a_positive_peak():
    for X in (np.array([[1.0, -1.0], [-1.0, 1.0], [2.0, -2.0]]), _data(n=30, d=4, seed=8)):
        p = D.PCA(2).fit(X)
        C = np.asarray(p.components_)
        np.testing.assert_allclose(np.linalg.norm(C, axis=1), 1.0, rtol=1e-12)
        peak = C[np.arange(2), np.abs(C).argmax(1)]
        assert np.all(peak > 0)


def test_pca_signs_do_not_depend_on_the_input_sign_of_the_svd():
    X = _data(n=30, d=4, seed=11)
    a = D.PCA(3).fit(X).components_
    b = D.PCA(3).fit(-X).components_  # same covariance: the same components
    np.testing.assert_allclose(a, b, atol=1e-10)


def test_pca_whitened_transform_and_its_inverse():
    X = _data(n=80, d=4, seed=12)
    p = D.PCA(4, whiten=True).fit(X)
    var = np.asarray(p.explained_variance_)
    np.testing.assert_allclose(p.whiten_scale_, np.sqrt(var), rtol=1e-15)
    Z = p.transform(X)
    np.testing.assert_allclose(Z, (X - X.mean(0)) @ p.components_.T / np.sqrt(var), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.cov(Z, rowvar=False), np.eye(4), atol=1e-10)
    np.testing.assert_allclose(p.inverse_transform(Z), X, rtol=1e-9, atol=1e-9)
    # the same at any scale of X (no absolute floor added to the variance)
    q = D.PCA(4, whiten=True).fit(X * 1e-6)
    np.testing.assert_allclose(q.transform(X * 1e-6), Z, rtol=1e-7, atol=1e-9)


def test_pca_whitening_leaves_components_below_rtol_unscaled():
    X = _data(n=80, d=3, seed=19)
    X[:, 2] = X[:, 0] + X[:, 1]  # rank 2: the third singular value is rounding noise
    p = D.PCA(3, whiten=True).fit(X)
    var = np.asarray(p.explained_variance_)
    assert p.whiten_scale_[2] == 1.0
    np.testing.assert_allclose(p.whiten_scale_[:2], np.sqrt(var[:2]), rtol=1e-15)
    Z = p.transform(X)
    np.testing.assert_allclose(Z[:, 2], (X - X.mean(0)) @ p.components_[2], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p.inverse_transform(Z), X, rtol=1e-9, atol=1e-9)
    # a larger rtol also leaves a small but real component unscaled: s_2 / s_1 < 0.9 here
    r = D.PCA(2, whiten=True, rtol=0.9).fit(X)
    s = np.sqrt(np.asarray(r.explained_variance_))
    assert s[1] < 0.9 * s[0]
    np.testing.assert_allclose(r.whiten_scale_, [s[0], 1.0], rtol=1e-15)
    with pytest.raises(ValueError, match=r"rtol is a relative tolerance in \[0, 1\)"):
        D.PCA(2, rtol=1.0)
    with pytest.warns(DeprecationWarning, match="eps is no longer used"):
        D.PCA(2, eps=1e-8)


def test_pca_fit_transform_is_fit_then_transform():
    X = _data(n=30, d=4, seed=13)
    for whiten in (False, True):
        p = D.PCA(2, whiten=whiten)
        Z = p.fit_transform(X)
        assert p.components_ is not None
        np.testing.assert_allclose(Z, D.PCA(2, whiten=whiten).fit(X).transform(X), rtol=1e-12)


def test_pca_unwhitened_inverse_projects_onto_the_kept_components():
    X = _data(n=30, d=4, seed=14)
    p = D.PCA(2).fit(X)
    Z = np.array([[1.0, 2.0]])
    np.testing.assert_allclose(p.inverse_transform(Z), Z @ p.components_ + X.mean(0), rtol=1e-12)


def test_pca_keeps_the_input_dtype():
    p = D.PCA(2, whiten=True).fit(_data())
    X32 = _data(seed=15).astype(np.float32)
    Z = p.transform(X32)
    assert Z.dtype == np.float32 and p.inverse_transform(Z).dtype == np.float32


@pytest.mark.parametrize("method", ["transform", "inverse_transform", "to"])
def test_pca_unfitted_methods_raise(method):
    arg = "numpy" if method == "to" else np.zeros((2, 3))
    with pytest.raises(RuntimeError, match=rf"PCA\.{method}: call fit"):
        getattr(D.PCA(2), method)(arg)


def test_pca_transform_checks():
    p = D.PCA(2).fit(_data())
    with pytest.raises(ShapeError, match="fitted on 4 features"):
        p.transform(np.zeros((3, 2)))
    with pytest.raises(ShapeError, match="fitted on 2 features"):
        p.inverse_transform(np.zeros((3, 4)))
    with pytest.raises(ShapeError, match=r"\(n_samples, n_features\)"):
        p.transform(np.zeros(4))
    with pytest.raises(ShapeError, match=r"\(n_samples, n_features\)"):
        p.inverse_transform(np.zeros(2))
    with pytest.raises(DTypeError, match="floating"):
        p.transform(np.zeros((3, 4), np.int64))
    with pytest.raises(DTypeError, match="floating"):
        p.inverse_transform(np.zeros((3, 2), np.int64))
    with pytest.raises(DTypeError, match="floating"):
        D.PCA(1).fit(np.ones((3, 2), np.int64))
    with pytest.raises(ShapeError, match=r"\(n_samples, n_features\)"):
        D.PCA(1).fit(np.ones(3))


def test_pca_to_moves_every_fitted_array():
    X = _data(n=30, d=4, seed=16)
    p = D.PCA(2, whiten=True).fit(X)
    expected = p.transform(X)
    expected_back = p.inverse_transform(expected)
    assert p.to(xs) is p
    for name in ("mean_", "components_", "explained_variance_", "explained_variance_ratio_"):
        assert isinstance(getattr(p, name), type(xs.asarray(0.0))), name
    Z = p.transform(xs.asarray(X))
    np.testing.assert_allclose(np.asarray(Z), expected, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(p.inverse_transform(Z)), expected_back, rtol=1e-12)
    p.to("numpy")
    assert all(isinstance(getattr(p, n), np.ndarray) for n in ("mean_", "components_"))


@pytest.mark.parametrize("make", [lambda: D.Standardizer(), lambda: D.PCA(4)], ids=["Standardizer", "PCA"])
@pytest.mark.parametrize("method", ["transform", "inverse_transform"])
def test_checks_name_the_method_and_refuse_other_namespaces(make, method):
    from xpnn.errors import NamespaceMismatchError

    obj = make().fit(_data())
    name = f"{type(obj).__name__}.{method}"
    f = getattr(obj, method)
    with pytest.raises(NamespaceMismatchError, match=name):
        f(xs.asarray(np.zeros((2, 4))))
    with pytest.raises(ShapeError, match=rf"{name}: fitted on 4 features"):
        f(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match=rf"{name}: expected X of shape \(n_samples, n_features\)"):
        f(np.zeros(4))
    with pytest.raises(DTypeError, match=rf"{name}: expected a floating X"):
        f(np.zeros((2, 4), np.int16))
    assert f(np.zeros((2, 4))).shape == (2, 4)


@pytest.mark.parametrize("cls", [D.Standardizer, lambda: D.PCA(1)], ids=["Standardizer", "PCA"])
def test_fit_checks_name_the_class(cls):
    obj = cls()
    name = f"{type(obj).__name__}.fit"
    with pytest.raises(ShapeError, match=rf"{name}: expected X of shape"):
        obj.fit(np.zeros(4))
    with pytest.raises(DTypeError, match=rf"{name}: expected a floating X"):
        obj.fit(np.zeros((3, 4), np.int8))
    with pytest.raises(TypeError, match=rf"{name}: expected arrays, got list"):
        obj.fit([[1.0, 2.0], [3.0, 4.0]])


def test_pca_ratios_do_not_depend_on_the_scale_of_the_data():
    X = _data(n=40, d=3, seed=17)
    big = np.asarray(D.PCA(3).fit(X).explained_variance_ratio_)
    for scale in (1e-2, 1e-4):  # total variance far below 1
        small = D.PCA(3).fit(X * scale)
        np.testing.assert_allclose(small.explained_variance_ratio_, big, rtol=1e-9)
        assert float(np.sum(small.explained_variance_)) < 1


def test_pca_fraction_reached_exactly_keeps_the_fewest_components():
    X = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # two components of equal variance
    p = D.PCA(0.5).fit(X)
    first = float(np.asarray(D.PCA(2).fit(X).explained_variance_ratio_)[0])
    # "at least that share": a first ratio of exactly 0.5 is enough (this holds for any rounding of the SVD)
    assert p.components_.shape[0] == (1 if first >= 0.5 else 2)


def test_pca_fraction_on_array_api_strict():
    X = _data(n=40, d=4, seed=18)
    want = D.PCA(0.8).fit(X)
    got = D.PCA(0.8).fit(xs.asarray(X))
    assert got.components_.shape == want.components_.shape
    np.testing.assert_allclose(np.asarray(got.explained_variance_ratio_), want.explained_variance_ratio_, rtol=1e-10)


def test_pca_component_with_a_tie_between_opposite_peaks_is_kept():
    # centred rows +-(3, -3): the component is (1, -1)/sqrt(2), whose two peaks may cancel in the sign rule
    p = D.PCA(1).fit(np.array([[3.0, -3.0], [-3.0, 3.0]]))
    C = np.asarray(p.components_)
    np.testing.assert_allclose(np.abs(C), [[2 ** -0.5, 2 ** -0.5]], rtol=1e-12)
    np.testing.assert_allclose(p.transform(np.array([[1.0, -1.0]])) ** 2, [[2.0]], rtol=1e-12)


def test_pca_rtol_zero_still_leaves_an_exactly_zero_component_unscaled():
    X = np.array([[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0], [0.5, 0.0]])  # no variance at all along the second axis
    p = D.PCA(2, whiten=True, rtol=0.0).fit(X)
    assert p.whiten_scale_[1] == 1.0
    with np.errstate(divide="raise", invalid="raise"):
        Z = p.transform(X)
    assert np.array_equal(Z[:, 1], np.zeros(4))
    np.testing.assert_allclose(np.abs(Z[:, 0]), np.abs(X[:, 0] - 0.625) / 1.25, rtol=1e-12)



def test_pca_eps_deprecation_warning_is_not_attributed_to_xpnn():
    with pytest.warns(DeprecationWarning, match="eps is no longer used") as caught:
        D.PCA(2, eps=1e-8)
    # stacklevel=2: the warning names the caller's line (the exact frame is not checked: mutmut adds one)
    assert len(caught) == 1 and os.path.basename(caught[0].filename) != "preprocessing.py"


def test_pca_fit_on_tall_data_never_builds_the_n_by_n_factor():
    # the SVD is the thin one: memory linear in n_samples (a full U would be 2000 x 2000 float64, 32 MB)
    import tracemalloc

    X = _data(n=2000, d=3, seed=21)
    tracemalloc.start()
    try:
        p = D.PCA(2).fit(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * X.nbytes  # about 2 here; a full U is 670 times X
    assert p.components_.shape == (2, 3)
