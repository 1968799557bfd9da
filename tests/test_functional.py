"""The array-API reference functions against independent NumPy formulas, on NumPy and array_api_strict."""
import warnings

import array_api_strict
import numpy as np
import pytest

import xpnn
import xpnn.functional as F

NAMESPACES = ["numpy", "array_api_strict"]


def to_ns(name, a):
    return np.asarray(a) if name == "numpy" else array_api_strict.asarray(a)


def np_(a):
    return xpnn.backend.to_numpy(a)


def ref_log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def ref_cross_entropy(x, t, reduction="mean", ignore_index=-100, eps=0.0):
    logp = ref_log_softmax(x)
    n, c = x.shape
    valid = t != ignore_index
    ts = np.where(valid, t, 0)
    nll = -logp[np.arange(n), ts]
    per = (1 - eps) * nll + eps * (-logp.mean(axis=-1))
    per = np.where(valid, per, 0.0)
    p = np.exp(logp)
    target = np.full_like(p, eps / c)
    target[np.arange(n), ts] += 1 - eps
    grad = (p - target) * valid[:, None]
    if reduction == "mean":
        return per.sum() / valid.sum(), grad / max(valid.sum(), 1)
    if reduction == "sum":
        return per.sum(), grad
    return per, grad


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activations_match_formulas(ns, dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(13, 7)).astype(dtype) * 3
    dy = rng.normal(size=x.shape).astype(dtype)
    X, DY = to_ns(ns, x), to_ns(ns, dy)
    tol = dict(rtol=1e-6 if dtype == "float32" else 1e-12, atol=1e-6 if dtype == "float32" else 1e-12)
    s = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(np_(F.sigmoid(X)), s, **tol)
    np.testing.assert_allclose(np_(F.sigmoid_backward(to_ns(ns, s.astype(dtype)), DY)), dy * s * (1 - s), **tol)
    t = np.tanh(x)
    np.testing.assert_allclose(np_(F.tanh(X)), t, **tol)
    np.testing.assert_allclose(np_(F.tanh_backward(to_ns(ns, t), DY)), dy * (1 - t * t), **tol)
    np.testing.assert_allclose(np_(F.relu(X)), np.maximum(x, 0), **tol)
    np.testing.assert_allclose(np_(F.relu_backward(X, DY)), dy * (x > 0), **tol)
    np.testing.assert_allclose(np_(F.leaky_relu(X, 0.2)), np.where(x > 0, x, 0.2 * x), **tol)
    np.testing.assert_allclose(np_(F.leaky_relu_backward(X, DY, 0.2)), np.where(x > 0, dy, 0.2 * dy), **tol)
    np.testing.assert_allclose(np_(F.elu(X, 1.5)), np.where(x > 0, x, 1.5 * (np.exp(x) - 1)), **tol)
    np.testing.assert_allclose(np_(F.elu_backward(X, DY, 1.5)), np.where(x > 0, dy, dy * 1.5 * np.exp(x)), **tol)
    a, sc = 1.6732632423543772, 1.0507009873554805
    np.testing.assert_allclose(np_(F.selu(X)), sc * np.where(x > 0, x, a * (np.exp(x) - 1)), **tol)
    np.testing.assert_allclose(np_(F.selu_backward(X, DY)), sc * np.where(x > 0, dy, dy * a * np.exp(x)), **tol)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_softmax_family(ns):
    x = np.random.default_rng(1).normal(size=(6, 9)) * 5
    X = to_ns(ns, x)
    lsm = ref_log_softmax(x)
    np.testing.assert_allclose(np_(F.log_softmax(X)), lsm, rtol=1e-12)
    np.testing.assert_allclose(np_(F.softmax(X)), np.exp(lsm), rtol=1e-12)
    np.testing.assert_allclose(np_(F.logsumexp(X)), np.log(np.exp(x).sum(-1)), rtol=1e-12)
    np.testing.assert_allclose(np_(F.softmax(X, axis=0)), np.exp(ref_log_softmax(x.T)).T, rtol=1e-12)
    assert F.logsumexp(X, keepdims=True).shape == (6, 1)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # log(0) = -inf for an all -inf row
def test_softmax_extreme_values_stay_finite():
    x = np.array([[1e4, -1e4, 0.0], [-np.inf, 0.0, -np.inf], [-1e4, -1e4, -1e4]], dtype=np.float32)
    assert np.isfinite(F.logsumexp(x)).all()
    np.testing.assert_allclose(F.softmax(x)[1], [0, 1, 0])
    assert np.isneginf(F.logsumexp(np.full((1, 3), -np.inf)))[0]
    assert np.isfinite(F.sigmoid(np.array([-1e4, 1e4], dtype=np.float32))).all()
    assert np.isfinite(F.elu(np.array([1e4], dtype=np.float32))).all()


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_matches_reference(ns, reduction, eps):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(11, 5)) * 4
    t = rng.integers(0, 5, size=11)
    t[[2, 7]] = -100
    want_loss, want_grad = ref_cross_entropy(x, t, reduction, -100, eps)
    X, T = to_ns(ns, x), to_ns(ns, t)
    loss, grad = F.cross_entropy_with_grad(X, T, reduction=reduction, label_smoothing=eps)
    np.testing.assert_allclose(np_(loss), want_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np_(grad), want_grad, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np_(F.cross_entropy(X, T, reduction=reduction, label_smoothing=eps)), want_loss, rtol=1e-12)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # 0/0 = NaN when every target is ignored
def test_cross_entropy_custom_ignore_index_and_all_ignored():
    x = np.random.default_rng(3).normal(size=(4, 3))
    t = np.array([1, 5, 0, 5])
    loss, grad = F.cross_entropy_with_grad(x, t, ignore_index=5)
    want_loss, want_grad = ref_cross_entropy(x, t, "mean", 5)
    np.testing.assert_allclose(loss, want_loss)
    np.testing.assert_allclose(grad, want_grad)
    loss, grad = F.cross_entropy_with_grad(x, np.full(4, -100))
    assert np.isnan(loss) and not grad.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cross_entropy_large_logits_are_finite_and_accurate(dtype):
    rng = np.random.default_rng(4)
    x = (rng.choice([-1e4, 1e4], size=(64, 10)) + rng.normal(size=(64, 10))).astype(np.float32)
    if dtype == np.float16:
        x = (x / 1e4 * 2e4).astype(np.float16)
    t = rng.integers(0, 10, size=64)
    loss, grad = F.cross_entropy_with_grad(x, t, reduction="none")
    assert loss.dtype == dtype and grad.dtype == dtype
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    want, _ = ref_cross_entropy(x.astype(np.float64), t, "none")
    np.testing.assert_allclose(loss.astype(np.float64), want, rtol=1e-3 if dtype == np.float16 else 1e-6, atol=1e-3)


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_and_bce(ns, reduction):
    rng = np.random.default_rng(5)
    p, y = rng.normal(size=(6, 3)), rng.uniform(size=(6, 3))
    P, Y = to_ns(ns, p), to_ns(ns, y)
    red = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction]
    scale = 1 / p.size if reduction == "mean" else 1
    loss, grad = F.mse_loss_with_grad(P, Y, reduction)
    np.testing.assert_allclose(np_(loss), red((p - y) ** 2))
    np.testing.assert_allclose(np_(grad), 2 * (p - y) * scale)
    np.testing.assert_allclose(np_(F.mse_loss(P, Y, reduction)), red((p - y) ** 2))
    s = 1 / (1 + np.exp(-p))
    bce = -(y * np.log(s) + (1 - y) * np.log(1 - s))
    loss, grad = F.binary_cross_entropy_with_logits_with_grad(P, Y, reduction)
    np.testing.assert_allclose(np_(loss), red(bce), rtol=1e-12)
    np.testing.assert_allclose(np_(grad), (s - y) * scale, rtol=1e-12)
    np.testing.assert_allclose(np_(F.binary_cross_entropy_with_logits(P, Y, reduction)), red(bce), rtol=1e-12)


def test_bce_large_logits_finite():
    x = np.array([-1e4, 1e4, 0.0], dtype=np.float32)
    loss, grad = F.binary_cross_entropy_with_logits_with_grad(x, np.array([1.0, 0.0, 1.0], dtype=np.float32), "none")
    np.testing.assert_allclose(loss, [1e4, 1e4, np.log(2)], rtol=1e-6)
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("ns", NAMESPACES)
def test_linear_one_hot_accuracy(ns):
    rng = np.random.default_rng(6)
    x, w, b = rng.normal(size=(4, 3)), rng.normal(size=(2, 3)), rng.normal(size=2)
    np.testing.assert_allclose(np_(F.linear(to_ns(ns, x), to_ns(ns, w), to_ns(ns, b))), x @ w.T + b)
    np.testing.assert_allclose(np_(F.linear(to_ns(ns, x), to_ns(ns, w))), x @ w.T)
    np.testing.assert_array_equal(np_(F.one_hot(to_ns(ns, np.array([2, 0])), 3)), [[0, 0, 1], [1, 0, 0]])
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert F.accuracy(to_ns(ns, scores), to_ns(ns, np.array([1, 1, 1]))) == pytest.approx(2 / 3)


def test_bad_input_errors_name_the_function_and_shapes():
    x = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"cross_entropy: target values must be in \[0, 3\)"):
        F.cross_entropy(x, np.array([0, 1, 3, 0]))
    with pytest.raises(xpnn.DTypeError, match="integer class indices"):
        F.cross_entropy(x, np.zeros(4, dtype=np.float32))
    with pytest.raises(xpnn.ShapeError, match=r"target must have shape \(4,\)"):
        F.cross_entropy(x, np.zeros(5, dtype=np.int64))
    with pytest.raises(xpnn.ShapeError, match="empty"):  # (no class; an empty batch gives PyTorch's NaN mean)
        F.cross_entropy(np.zeros((4, 0), dtype=np.float32), np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, np.zeros(4, dtype=np.int64), reduction="avg")
    with pytest.raises(xpnn.ShapeError, match=r"linear: expected input of shape \(N, 5\)"):
        F.linear(x, np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(xpnn.ShapeError, match="sigmoid_backward"):
        F.sigmoid_backward(x, np.zeros((4, 2), dtype=np.float32))
    with pytest.raises(xpnn.DTypeError, match="relu"):
        F.relu(np.zeros(3, dtype=np.int64))
    with pytest.raises(xpnn.NamespaceMismatchError, match="cross_entropy"):
        F.cross_entropy(x, array_api_strict.zeros(4, dtype=array_api_strict.int64))


def test_debug_mode_catches_nan_logits():
    x = np.zeros((2, 3), dtype=np.float32)
    x[1, 2] = np.nan
    F.cross_entropy(x, np.array([0, 1]))  # off by default: no check, no sync
    with xpnn.debug.debug_mode(True):
        with pytest.raises(xpnn.NonFiniteError, match="cross_entropy: logits contains 1 NaN"):
            F.cross_entropy(x, np.array([0, 1]))


def test_accuracy_rejects_float_labels():
    with pytest.raises(xpnn.DTypeError, match="accuracy: labels must be integer"):
        F.accuracy(np.zeros((2, 3)), np.zeros(2))


@pytest.mark.parametrize("ns", NAMESPACES)
def test_dim_keyword_matches_torch(ns):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for dim= (its name for axis=)")
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    A, B = to_ns(ns, a), to_ns(ns, b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for d in (0, 1, -1):
        for name in ("sum", "mean", "softmax", "log_softmax", "logsumexp"):
            np.testing.assert_allclose(np_(getattr(F, name)(A, dim=d)), getattr(torch, name)(ta, dim=d).numpy(),
                                       rtol=1e-12, err_msg=f"{name}(dim={d})")
        for name in ("max", "min"):  # dim= gives (values, indices), as torch.max(x, dim)
            values, indices = getattr(F, name)(A, dim=d)
            ref = getattr(torch, name)(ta, dim=d)
            np.testing.assert_allclose(np_(values), ref.values.numpy())
            np.testing.assert_array_equal(np_(indices), ref.indices.numpy())
        np.testing.assert_allclose(np_(F.concat([A, B], dim=d)), torch.cat([ta, tb], dim=d).numpy())
        np.testing.assert_allclose(np_(F.stack([A, B], dim=d)), torch.stack([ta, tb], dim=d).numpy())
    keep = F.max(A, dim=1, keepdims=True)
    assert tuple(keep.values.shape) == tuple(keep.indices.shape) == (3, 1)
    # the axis= spelling and the defaults are unchanged
    np.testing.assert_allclose(np_(F.max(A, axis=1)), a.max(axis=1))
    np.testing.assert_allclose(np_(F.softmax(A)), torch.softmax(ta, dim=-1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(np_(F.concat([A, B])), np.concatenate([a, b]))


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "softmax", "log_softmax", "logsumexp"])
def test_axis_and_dim_together_raise(name):
    with pytest.raises(TypeError, match=rf"^{name}: got both axis=0 and dim=1; dim is PyTorch's name for axis"):
        getattr(F, name)(np.ones((2, 3)), axis=0, dim=1)


@pytest.mark.parametrize("name", ["concat", "stack"])
def test_axis_and_dim_together_raise_for_joins(name):
    with pytest.raises(TypeError, match=rf"^{name}: got both axis=0 and dim=0"):
        getattr(F, name)([np.ones((2, 3))] * 2, axis=0, dim=0)


def test_dim_keyword_on_tensors_is_recorded():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(3, 4))
    x = xpnn.tensor(a, requires_grad=True)
    F.log_softmax(x, dim=0).sum(dim=1).mean(dim=0).backward()
    ref = xpnn.tensor(a, requires_grad=True)
    F.log_softmax(ref, axis=0).sum(axis=1).mean(axis=0).backward()
    np.testing.assert_allclose(x.grad, ref.grad)
    assert np.abs(x.grad).max() > 0


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_matches_torch(ns, reduction, weighted):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for nll_loss")
    rng = np.random.default_rng(5)
    logp = ref_log_softmax(rng.normal(size=(7, 4)))
    t = np.array([0, 3, 1, -100, 2, 3, 0])
    w = rng.uniform(0.5, 2.0, size=4) if weighted else None
    kw = dict(weight=None if w is None else torch.from_numpy(w), reduction=reduction)
    x = xpnn.tensor(to_ns(ns, logp), requires_grad=True)
    loss = F.nll_loss(x, to_ns(ns, t), weight=None if w is None else to_ns(ns, w), reduction=reduction)
    r = torch.from_numpy(logp).requires_grad_(True)
    ref = torch.nn.functional.nll_loss(r, torch.from_numpy(t), **kw)
    np.testing.assert_allclose(np_(loss.data), ref.detach().numpy(), rtol=1e-12)
    loss.sum().backward()
    ref.sum().backward()
    np.testing.assert_allclose(np_(x.grad), r.grad.numpy(), rtol=1e-12)
    # arrays in, array out (the explicit API)
    np.testing.assert_allclose(np_(F.nll_loss(to_ns(ns, logp), to_ns(ns, t), weight=None if w is None else
                                              to_ns(ns, w), reduction=reduction)), ref.detach().numpy(), rtol=1e-12)


def test_nll_loss_ignore_index_and_log_softmax_equals_cross_entropy():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for nll_loss")
    rng = np.random.default_rng(6)
    z = rng.normal(size=(5, 3)).astype(np.float32)
    t = np.array([2, 1, 1, 0, 2])
    ours = F.nll_loss(F.log_softmax(z, dim=1), t, ignore_index=1)
    ref = torch.nn.functional.nll_loss(torch.log_softmax(torch.from_numpy(z), 1), torch.from_numpy(t), ignore_index=1)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours, F.cross_entropy(z, t, ignore_index=1), rtol=1e-6)
    with np.errstate(invalid="ignore"):
        assert np.isnan(F.nll_loss(F.log_softmax(z), np.full(5, -100)))  # every target ignored: NaN, as torch


def test_nll_loss_gradcheck_and_double_backward_float64():
    from _numgrad import numeric_grad

    rng = np.random.default_rng(7)
    z = rng.normal(size=(4, 3))
    t = np.array([0, 2, 2, 1])
    w = np.array([0.5, 1.0, 2.0])

    def f():
        return float(F.nll_loss(F.log_softmax(z, dim=1), t, weight=w))

    x = xpnn.tensor(z, requires_grad=True)
    (g,) = xpnn.grad(F.nll_loss(F.log_softmax(x, dim=1), t, weight=w), [x], create_graph=True)
    np.testing.assert_allclose(np_(g.data), numeric_grad(f, z), rtol=1e-7, atol=1e-9)
    v = rng.normal(size=z.shape)

    def gv():  # d/dz of <grad, v>: the Hessian-vector product, by finite differences of the gradient
        xx = xpnn.tensor(z, requires_grad=True)
        (gg,) = xpnn.grad(F.nll_loss(F.log_softmax(xx, dim=1), t, weight=w), [xx])
        return float((np_(gg.data) * v).sum())

    (h,) = xpnn.grad((g * v).sum(), [x])
    np.testing.assert_allclose(np_(h.data), numeric_grad(gv, z), rtol=1e-6, atol=1e-8)


def test_nll_loss_errors_name_the_function():
    logp = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"nll_loss: target values must be in \[0, 4\)"):
        F.nll_loss(logp, np.array([0, 4, 1]))
    with pytest.raises(xpnn.ShapeError, match=r"nll_loss: weight must have shape \(4,\)"):
        F.nll_loss(logp, np.array([0, 1, 1]), weight=np.ones(3))
    with pytest.raises(xpnn.DTypeError, match="nll_loss: target must hold integer class indices"):
        F.nll_loss(logp, np.zeros(3))
    with pytest.raises(ValueError, match="nll_loss: reduction must be one of"):
        F.nll_loss(logp, np.array([0, 1, 1]), reduction="avg")
# --- reductions over empty axes, as PyTorch -------------------------------------------------------------------------

# (name, xpnn function, torch function, input shape); torch raising means xpnn must raise a ValueError naming the op
EMPTY_CASES = [
    ("logsumexp", lambda x: F.logsumexp(x, axis=1), lambda t: t.logsumexp(1), (2, 0)),
    ("logsumexp", lambda x: F.logsumexp(x, axis=0), lambda t: t.logsumexp(0), (0, 3)),
    ("logsumexp", lambda x: F.logsumexp(x, axis=1, keepdims=True), lambda t: t.logsumexp(1, keepdim=True), (2, 0)),
    ("logsumexp", lambda x: F.logsumexp(x, axis=1), lambda t: t.logsumexp(1), (0, 3)),
    ("softmax", lambda x: F.softmax(x, axis=1), lambda t: t.softmax(1), (2, 0)),
    ("softmax", lambda x: F.softmax(x, axis=0), lambda t: t.softmax(0), (0, 3)),
    ("log_softmax", lambda x: F.log_softmax(x, axis=-1), lambda t: t.log_softmax(-1), (2, 0)),
    ("log_softmax", lambda x: F.log_softmax(x, axis=1), lambda t: t.log_softmax(1), (0, 3)),
    ("sum", lambda x: F.sum(x, axis=1), lambda t: t.sum(1), (2, 0)),
    ("sum", lambda x: F.sum(x), lambda t: t.sum(), (0, 3)),
    ("mean", lambda x: F.mean(x, axis=1), lambda t: t.mean(1), (2, 0)),
    ("mean", lambda x: F.mean(x, axis=(0, 1), keepdims=True), lambda t: t.mean((0, 1), keepdim=True), (0, 3)),
    ("mean", lambda x: F.mean(x, axis=0), lambda t: t.mean(0), (2, 0)),
    ("max", lambda x: F.max(x, axis=1), lambda t: t.amax(1), (0, 3)),
    ("max", lambda x: F.max(x, axis=1), lambda t: t.amax(1), (2, 0)),
    ("max", lambda x: F.max(x), lambda t: t.amax(), (0, 3)),
    ("min", lambda x: F.min(x, axis=0, keepdims=True), lambda t: t.amin(0, keepdim=True), (2, 0)),
    ("min", lambda x: F.min(x, axis=(0, 1)), lambda t: t.amin((0, 1)), (2, 0)),
]


@pytest.mark.parametrize("ns", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("case", range(len(EMPTY_CASES)))
def test_reductions_over_empty_axes_match_torch(ns, case):
    """logsumexp over an empty axis is -inf and softmax/log_softmax are empty (they crashed in NumPy's max); sum is
    0, mean NaN (without NumPy's warnings); max/min over an empty axis raise ValueError naming the op where PyTorch
    raises, and reduce fine over a non-empty axis of an empty array. Forward and backward."""
    import warnings

    torch = pytest.importorskip("torch", reason="PyTorch is the reference for empty reductions")
    name, fn, tfn, shape = EMPTY_CASES[case]
    xp = np if ns == "numpy" else array_api_strict
    t = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    x = xpnn.tensor(xp.zeros(shape, dtype=xp.float64), requires_grad=True)
    try:
        ty = tfn(t)
    except (IndexError, RuntimeError):
        with pytest.raises(ValueError, match=rf"^{name}: cannot reduce over axis \d of size 0"):
            fn(x)
        return
    ty.sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy warning either
        y = fn(x)
        y.sum().backward()
    assert tuple(y.shape) == tuple(ty.shape)
    np.testing.assert_array_equal(np.asarray(y.data), ty.detach().numpy())
    np.testing.assert_array_equal(np.asarray(x.grad), t.grad.numpy())


def test_accuracy_and_one_hot_over_empty_classes_or_labels():
    with pytest.raises(ValueError, match=r"accuracy: scores of shape \(3, 0\) have no class"):
        F.accuracy(np.zeros((3, 0), np.float32), np.zeros(3, np.int64))
    assert F.one_hot(np.zeros(0, np.int64), 4).shape == (0, 4)
# --- NumPy code's habits: Python scalars and lists, column-vector layouts ------------------------------------------
def test_python_scalars_and_lists_become_arrays():
    y = F.sigmoid(np.linspace(-2, 2, 5))
    np.testing.assert_array_equal(F.sigmoid_backward(y, 1.0), F.sigmoid_backward(y, np.ones_like(y)))
    y32 = y.astype(np.float32)
    assert F.sigmoid_backward(y32, 1.0).dtype == np.float32  # a Python float with a float32 array stays float32
    assert F.tanh_backward(y32, 2).dtype == np.float32
    listed = F.sigmoid([0.0, 1.0])  # a list becomes an array of the default backend (float64 on NumPy)
    assert isinstance(listed, np.ndarray) and listed.dtype == np.float64
    np.testing.assert_allclose(listed, [0.5, 1 / (1 + np.exp(-1.0))])
    lone = F.sigmoid(0.0)
    assert isinstance(lone, np.ndarray) and lone.shape == () and float(lone) == 0.5
    for fn in (F.relu, F.tanh, F.leaky_relu, F.elu, F.selu):
        np.testing.assert_array_equal(fn([-1.0, 2.0]), fn(np.array([-1.0, 2.0])))
    for fn in (F.relu_backward, F.leaky_relu_backward, F.elu_backward, F.selu_backward):
        np.testing.assert_array_equal(fn([-1.0, 2.0], 1.0), fn(np.array([-1.0, 2.0]), np.ones(2)))
    s = array_api_strict.asarray(np.array([0.25, 0.5], np.float32))
    out = F.sigmoid_backward(s, 1.0)  # next to an array a scalar takes its namespace and dtype
    assert out.dtype == array_api_strict.float32 and np_(out).tolist() == [0.1875, 0.25]
    t = xpnn.tensor(np.array([0.0, 1.0]), requires_grad=True)
    F.sigmoid_backward(F.sigmoid(t), 1.0).sum().backward()  # a Tensor next to a scalar records as usual
    assert t.grad.shape == (2,)
    with pytest.raises(xpnn.errors.DTypeError, match="sigmoid: input must be a floating array"):
        F.sigmoid([0, 1])  # integers stay integers, and the error says what is wrong


def test_column_vector_layouts_say_what_to_do():
    w, x = np.ones((30, 64)), np.ones((10, 64))
    with pytest.raises(xpnn.errors.ShapeError, match=r"bias must have shape \(30,\), got \(30, 1\); pass b.ravel\(\)"):
        F.linear(x, w, np.ones((30, 1)))
    with pytest.raises(xpnn.errors.ShapeError, match=r"got \(64, 1\); samples are rows .* pass x.T"):
        F.linear(np.ones((64, 1)), w)
    with pytest.raises(xpnn.errors.ShapeError, match=r"got \(30, 2\)$"):
        F.linear(x, w, np.ones((30, 2)))  # no hint where ravel does not fit


@pytest.mark.parametrize("call, name", [
    (lambda x: F.softmax(x), "softmax"),
    (lambda x: F.log_softmax(x), "log_softmax"),
    (lambda x: F.cross_entropy(x, np.zeros(5, np.int64)), "cross_entropy"),
    (lambda x: F.cross_entropy_with_grad(x, np.zeros(5, np.int64)), "cross_entropy_with_grad"),
    (lambda x: F.cross_entropy(x, np.ones((5, 1))), "cross_entropy"),
    (lambda x: F.softmax(xpnn.tensor(x)), "softmax"),
])
def test_normalising_over_an_axis_of_length_one_warns(call, name):
    x = np.linspace(-1, 1, 5).reshape(5, 1)  # a column of 5 class scores, with the default axis=-1
    with pytest.warns(UserWarning, match=rf"^{name}: axis -?1 of the input of shape \(5, 1\) has length 1") as rec:
        call(x)
    assert rec[0].filename == __file__  # it points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.softmax(x, axis=0)
        F.logsumexp(x)  # (one term: no surprise)
