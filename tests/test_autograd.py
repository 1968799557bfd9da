"""Autograd: every op through the tape against float64 finite differences (broadcasting, indexing with repeats,
fan-out, second order), the Tensor API, modules on Tensors and arrays, and the errors."""
from __future__ import annotations

import re

import array_api_strict
import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import nn, optim
from xpnn.errors import DTypeError, NamespaceMismatchError, ShapeError

RNG = np.random.default_rng(0)


def rand(*shape, lo=-1.0, hi=1.0, seed=None):
    rng = np.random.default_rng(seed) if seed is not None else RNG
    return rng.uniform(lo, hi, size=shape)


def numgrad(f, arrays, i, eps=1e-6):
    """Central differences of the scalar ``f(*arrays)`` with respect to ``arrays[i]`` (float64)."""
    base = [a.copy() for a in arrays]
    g = np.zeros_like(base[i])
    it = np.nditer(base[i], flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = base[i][idx]
        base[i][idx] = old + eps
        up = f(*base)
        base[i][idx] = old - eps
        down = f(*base)
        base[i][idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


def gradcheck(fn, *arrays, atol=1e-6, rtol=1e-5, which=None):
    """``fn`` maps Tensors to a Tensor; compare d sum(w * fn) / d input by the tape and by finite differences."""
    out0 = fn(*[xpnn.tensor(a) for a in arrays])
    w = np.random.default_rng(1).normal(size=out0.shape)

    def scalar(*arrs):
        return float(np.sum(np.asarray(fn(*[xpnn.tensor(a) for a in arrs]).data) * w))

    ts = [xpnn.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.backward(w)
    for i in range(len(arrays)) if which is None else which:
        np.testing.assert_allclose(ts[i].grad, numgrad(scalar, list(arrays), i), atol=atol, rtol=rtol,
                                   err_msg=f"input {i}")


# --- every op ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((3, 4), ())])
def test_arithmetic_broadcasts_gradients_back(op, shapes):
    a, b = rand(*shapes[0]), rand(*shapes[1], lo=0.5, hi=2.0)
    gradcheck(getattr(F, op), a, b)


_NOT_BROADCASTING = {
    "+": ("add", lambda a, b: a + b), "-": ("sub", lambda a, b: a - b), "*": ("mul", lambda a, b: a * b),
    "/": ("div", lambda a, b: a / b), "**": ("pow", lambda a, b: a ** b),
    "reflected +": ("add", lambda a, b: a.__radd__(b.data)), "reflected *": ("mul", lambda a, b: a.__rmul__(b.data)),
    "F.add": ("add", F.add), "F.sub": ("sub", F.sub), "F.mul": ("mul", F.mul), "F.div": ("div", F.div),
    "F.pow": ("pow", F.pow), "F.mul arrays": ("mul", lambda a, b: F.mul(a.data, b.data)),
    "F.clip": ("clip", lambda a, b: F.clip(a, b, None)), "F.clip max": ("clip", lambda a, b: F.clip(a, None, b)),
    "<": ("Tensor comparison <", lambda a, b: a < b), ">=": ("Tensor comparison >=", lambda a, b: a >= b),
    "==": ("Tensor comparison ==", lambda a, b: a == b), "!=": ("Tensor comparison !=", lambda a, b: a != b),
}


@pytest.mark.parametrize("ns", [np, array_api_strict], ids=["numpy", "array_api_strict"])
@pytest.mark.parametrize("case", list(_NOT_BROADCASTING))
@pytest.mark.parametrize("grad", [False, True])
def test_operands_that_do_not_broadcast_raise_shape_error_naming_the_op(case, ns, grad):
    """The backend's own error ("operands could not be broadcast together with shapes (2,3) (4,)") named no op.
    PyTorch raises for the same shapes."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for broadcasting errors")
    name, fn = _NOT_BROADCASTING[case]
    with pytest.raises(RuntimeError, match="must match the size"):
        torch.ones(2, 3) + torch.ones(4)
    a = xpnn.tensor(ns.ones((5, 2, 3), dtype=ns.float64), requires_grad=grad)
    b = xpnn.tensor(ns.ones((4, 1, 3), dtype=ns.float64))
    shapes = r"\(5, 2, 3\) and \(4, 1, 3\)" + (r"|\(4, 1, 3\) and \(5, 2, 3\)" if "reflected" in case else "")
    with pytest.raises(ShapeError, match=rf"^{re.escape(name)}: operands of shapes ({shapes}) do not broadcast "
                                         r"together \(sizes (5 and 4|4 and 5) at dimension -3"):
        fn(a, b)


@pytest.mark.parametrize("ns", [np, array_api_strict], ids=["numpy", "array_api_strict"])
def test_in_place_operator_whose_result_does_not_fit_raises_shape_error(ns):
    t = xpnn.tensor(ns.ones((3,), dtype=ns.float64))
    with xpnn.no_grad():
        with pytest.raises(ShapeError, match=r"^Tensor \+=: operands of shapes \(3,\) and \(4,\) do not broadcast"):
            t += ns.ones((4,), dtype=ns.float64)
        with pytest.raises(ShapeError, match=r"^Tensor \*=: the result of shape \(2, 3\) .* does not fit in place "
                                             r"into shape \(3,\)"):
            t *= ns.ones((2, 3), dtype=ns.float64)
    assert t._version == 0  # nothing was written


def test_operators_and_reflected_forms_with_scalars_and_arrays():
    a = rand(3, 4)
    c = rand(4, lo=0.5, hi=1.5)
    gradcheck(lambda x: 2.0 - x * 3.0 + 1.0 / (x + 4.0) - (-x) ** 2 + x / 2.0 + c * x + x @ np.ones((4, 4)) + (x @ x.T) @ x * 0.1, a)
    gradcheck(lambda x: (2.0 ** x) + x ** 3, a)
    gradcheck(lambda x, y: x ** y, rand(3, lo=0.5, hi=2), rand(3))


@pytest.mark.parametrize("fn,lo", [(F.exp, -1), (F.log, 0.2), (F.sqrt, 0.2), (F.abs, -1), (F.tanh, -2),
                                   (F.sigmoid, -3), (F.relu, -1), (F.leaky_relu, -1), (F.elu, -2), (F.selu, -2),
                                   (lambda x: F.clip(x, -0.5, 0.3), -1), (lambda x: F.clip(x, min=0.1), -1)])
def test_unary(fn, lo):
    x = rand(4, 5, lo=lo, hi=2.0)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from kinks
    gradcheck(fn, x)


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                    ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((1, 3, 4), (2, 4, 2))])
def test_matmul(shapes):
    gradcheck(F.matmul, rand(*shapes[0]), rand(*shapes[1]))


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
def test_reductions(name, axis, keepdims):
    x = rand(3, 4, 5)
    gradcheck(lambda t: getattr(F, name)(t, axis=axis, keepdims=keepdims), x)


def test_max_shares_the_gradient_between_ties():
    x = xpnn.tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [1, 0, 0]])


@pytest.mark.parametrize("ns", [np, array_api_strict], ids=["numpy", "array_api_strict"])
@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("call", ["function", "method"])
@pytest.mark.parametrize("axis", [None, 1, 0])
def test_max_min_gradient_goes_to_the_nan_like_pytorch(ns, name, call, axis):
    """A slice holding a NaN reduces to NaN, which equals nothing: the gradient was NaN everywhere (0/0).
    PyTorch selects the NaN (torch.max(x, dim) routes the gradient to it; torch.max(x) splits it among the NaNs)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for max/min gradients")
    nan = float("nan")
    values = [[1.0, nan, 3.0], [4.0, 5.0, 0.5], [nan, 2.0, 7.0]]  # one NaN per row and column at most
    if axis is None:
        values[2][2] = nan  # two NaNs: torch.max() shares between them, as xpnn shares between ties
    x = xpnn.tensor(ns.asarray(values), requires_grad=True)
    y = getattr(F, name)(x, axis=axis) if call == "function" else getattr(x, name)(axis=axis)
    y.sum().backward()
    tx = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    ty = getattr(tx, name)() if axis is None else getattr(tx, name)(dim=axis).values
    ty.sum().backward()
    np.testing.assert_allclose(np.asarray(y.data), ty.detach().numpy())
    np.testing.assert_allclose(np.asarray(x.grad), tx.grad.numpy(), rtol=1e-15)


def test_abs_gradient_at_nan_is_zero_like_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for abs's gradient")
    values = [float("nan"), -2.0, 0.0, 3.0]
    for ns in (np, array_api_strict):
        x = xpnn.tensor(ns.asarray(values), requires_grad=True)
        x.abs().sum().backward()
        tx = torch.tensor(values, dtype=torch.float64, requires_grad=True)
        tx.abs().sum().backward()
        np.testing.assert_array_equal(np.asarray(x.grad), tx.grad.numpy())


def test_shape_ops():
    x = rand(2, 3, 4)
    gradcheck(lambda t: t.reshape(4, 6) * np.arange(24.0).reshape(4, 6), x)
    gradcheck(lambda t: t.permute_dims(2, 0, 1) * np.arange(24.0).reshape(4, 2, 3), x)
    gradcheck(lambda t: t.transpose() * 1.5, x)
    gradcheck(lambda t: F.broadcast_to(t, (5, 2, 3, 4)) * rand(5, 2, 3, 4, seed=3), x)
    gradcheck(lambda t: t.reshape(6, 4).T @ np.ones((6, 2)), x)


def test_indexing_basic_and_integer_arrays_with_repeats():
    x = rand(5, 4)
    gradcheck(lambda t: t[1:4, ::2], x)
    gradcheck(lambda t: t[np.array([0, 2, 2, 4, 0])], x)
    gradcheck(lambda t: t[:, np.array([1, 1, 3])], x)
    gradcheck(lambda t: t[2], x)
    t = xpnn.tensor(x, requires_grad=True)
    t[np.array([3, 3, 3])].sum().backward()
    assert t.grad[3].tolist() == [3.0] * 4 and t.grad.sum() == 12.0


def test_softmax_family_and_losses():
    x = rand(4, 6, lo=-3, hi=3)
    for axis in (-1, 0):
        gradcheck(lambda t: F.softmax(t, axis=axis), x)
        gradcheck(lambda t: F.log_softmax(t, axis=axis), x)
        gradcheck(lambda t: F.logsumexp(t, axis=axis), x)
    gradcheck(lambda t: F.logsumexp(t, axis=1, keepdims=True), x)
    y = np.array([0, 5, 2, 3])
    for red in ("mean", "sum", "none"):
        gradcheck(lambda t: F.cross_entropy(t, y, reduction=red, label_smoothing=0.1), x)
        gradcheck(lambda t: F.cross_entropy(t, np.array([0, -100, 2, 3]), reduction=red), x)
        gradcheck(lambda a, b: F.mse_loss(a, b, reduction=red), x, rand(4, 6))
        gradcheck(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction=red), x, rand(4, 6, lo=0, hi=1))


def test_layers_math():
    x, w, b = rand(5, 3), rand(4, 3), rand(4)
    gradcheck(F.linear, x, w, b)
    gradcheck(lambda a, c: F.linear(a, c), rand(2, 5, 3), w)
    gradcheck(F.prelu, rand(5, 3), np.array([0.2, -0.3, 0.5]))
    gradcheck(F.prelu, rand(5, 3, 2), np.array([0.25]))
    gradcheck(lambda z: F.maxout(z, 3)[0], rand(4, 6))
    gamma, beta = rand(3, lo=0.5, hi=1.5), rand(3)
    gradcheck(lambda a, g_, b_: F.batch_norm(a, None, None, g_, b_, training=True), rand(6, 3), gamma, beta)
    gradcheck(lambda a, g_, b_: F.batch_norm(a, None, None, g_, b_, training=True), rand(4, 3, 2, 2), gamma, beta)
    rm, rv = rand(3), rand(3, lo=0.5, hi=2)
    gradcheck(lambda a, g_, b_: F.batch_norm(a, rm, rv, g_, b_, training=False), rand(6, 3), gamma, beta)
    mask = (rand(5, 3, seed=5) > 0) * 2.0
    gradcheck(lambda a: F.dropout.__wrapped_op__.apply(a, mask=mask), rand(5, 3))
    t = xpnn.tensor(rand(3), requires_grad=True)
    (F.astype(t, "float32") * 2.0).sum().backward()
    assert t.grad.dtype == np.float64 and t.grad.tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("name,saved_is_output", [("sigmoid", True), ("tanh", True), ("relu", False),
                                                  ("leaky_relu", False), ("elu", False), ("selu", False)])
def test_backward_ops_are_differentiable(name, saved_is_output):
    """The ``*_backward`` ops (what the kernels override) have backwards of their own."""
    x = rand(3, 4, lo=-2, hi=2)
    x[np.abs(x) < 1e-2] = 0.5
    s = getattr(np, name)(x) if name == "tanh" else x
    if name == "sigmoid":
        s = 1 / (1 + np.exp(-x))
    dy = rand(3, 4)
    bwd = getattr(F, name + "_backward")
    flat = name in ("relu", "leaky_relu")  # piecewise linear: d/dx is 0 (no gradient) away from the kink
    gradcheck(lambda a, b: bwd(a, b), s if saved_is_output else x, dy, which=[1] if flat else None)


def test_fan_out_sums_every_use():
    x = rand(3, 3)
    gradcheck(lambda t: t * t + F.exp(t) * t - t @ t + F.sum(t, axis=0) * t, x)


# --- second order ---------------------------------------------------------------------------------------------
def _mlp_loss(params, X, y):
    w1, b1, w2, b2 = params
    h = F.tanh(F.linear(X, w1, b1))
    return F.cross_entropy(F.linear(h, w2, b2), y, label_smoothing=0.1) + 0.1 * F.sum(F.sigmoid(h) ** 2) / 20


def test_hessian_vector_product_of_an_mlp_loss_matches_finite_differences():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(5, 4)), rng.integers(0, 3, 5)
    arrays = [rng.normal(size=s) * 0.5 for s in [(6, 4), (6,), (3, 6), (3,)]]
    v = [rng.normal(size=a.shape) for a in arrays]

    def grads_at(arrs):
        ps = [xpnn.tensor(a, requires_grad=True) for a in arrs]
        return [g.numpy() for g in xpnn.grad(_mlp_loss(ps, X, y), ps)]

    ps = [xpnn.tensor(a, requires_grad=True) for a in arrays]
    gs = xpnn.grad(_mlp_loss(ps, X, y), ps, create_graph=True)
    gv = sum(F.sum(g * vi) for g, vi in zip(gs, v))
    hv = xpnn.grad(gv, ps)
    eps = 1e-5
    up = grads_at([a + eps * vi for a, vi in zip(arrays, v)])
    down = grads_at([a - eps * vi for a, vi in zip(arrays, v)])
    for h, u, d in zip(hv, up, down):
        np.testing.assert_allclose(h.numpy(), (u - d) / (2 * eps), rtol=1e-5, atol=1e-7)


def test_second_derivative_of_scalar_functions():
    x = xpnn.tensor(np.array([0.3, -1.2, 2.0]), requires_grad=True)
    for f, d2 in [(lambda t: F.sigmoid(t), lambda a: (s := 1 / (1 + np.exp(-a))) * (1 - s) * (1 - 2 * s)),
                  (lambda t: F.tanh(t), lambda a: -2 * np.tanh(a) * (1 - np.tanh(a) ** 2)),
                  (lambda t: F.elu(t), lambda a: np.where(a > 0, 0.0, np.exp(a))),
                  (lambda t: t ** 3, lambda a: 6 * a), (lambda t: F.log(t * t), lambda a: -2 / a ** 2)]:
        (g,) = xpnn.grad(F.sum(f(x)), x, create_graph=True)
        (h,) = xpnn.grad(F.sum(g), x)
        np.testing.assert_allclose(h.numpy(), d2(x.numpy()), rtol=1e-10)


def test_batch_norm_second_order_matches_finite_differences():
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    v = rng.normal(size=(5, 3))

    def grad_at(a):
        t = xpnn.tensor(a, requires_grad=True)
        return xpnn.grad(F.sum(F.batch_norm(t, None, None, training=True) ** 3 * w), t)[0].numpy()

    t = xpnn.tensor(x, requires_grad=True)
    (g,) = xpnn.grad(F.sum(F.batch_norm(t, None, None, training=True) ** 3 * w), t, create_graph=True)
    (hv,) = xpnn.grad(F.sum(g * v), t)
    eps = 1e-5
    np.testing.assert_allclose(hv.numpy(), (grad_at(x + eps * v) - grad_at(x - eps * v)) / (2 * eps), rtol=1e-4,
                               atol=1e-6)


# --- the Tensor ---------------------------------------------------------------------------------------------------
def test_tensor_attributes_and_conversions():
    a = np.arange(6.0).reshape(2, 3)
    t = xpnn.tensor(a, requires_grad=True)
    assert t.dtype == np.float64 and t.shape == (2, 3) and t.ndim == 2 and t.T.shape == (3, 2)
    assert t.grad is None and t.is_leaf and t.backend.name == "numpy"
    assert xpnn.tensor(a, dtype="float32").dtype == np.float32
    assert xpnn.tensor([1.0, 2.0]).dtype == np.float64
    n = t.numpy()
    n[0, 0] = 99.0
    assert a[0, 0] == 0.0  # a copy
    s = (t * 2).sum()
    assert s.item() == 30.0 and float(s) == 30.0 and s.grad_fn is not None and not s.is_leaf
    d = s.detach()
    assert d.grad_fn is None and not d.requires_grad
    u = t.to("numpy", dtype="float32")
    assert u.dtype == np.float32 and u.requires_grad
    u.sum().backward()
    assert t.grad.dtype == np.float64 and np.all(t.grad == 1.0)
    assert isinstance(t < 3.0, xpnn.Tensor) and (t < 3.0).data.tolist() == [[True, True, True], [False] * 3]
    assert "grad_fn" in repr(s) and "requires_grad=True" in repr(t)


def test_leaf_gradients_accumulate_and_no_grad_records_nothing():
    x = xpnn.tensor(np.ones(3), requires_grad=True)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [5.0, 5.0, 5.0])
    with xpnn.no_grad():
        y = x * 2
    assert y.grad_fn is None and not y.requires_grad
    with xpnn.no_grad():
        with xpnn.enable_grad():
            assert (x * 2).requires_grad

    @xpnn.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad and xpnn.is_grad_enabled()


def test_retain_graph_and_freed_graph_error():
    x = xpnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (F.exp(x) * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * (np.exp([1.0, 2.0]) * (1 + np.array([1.0, 2.0]))))
    with pytest.raises(RuntimeError, match=r"(sum|mul): trying to backward through the graph a second time"):
        y.backward()


def test_backward_errors_are_clear():
    x = xpnn.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"only for one-element outputs.*made by mul.*\(2, 3\)"):
        (x * 2).backward()
    with pytest.raises(ShapeError, match=r"grad must have the output's shape \(2, 3\)"):
        (x * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        xpnn.tensor(np.ones(2)).sum().backward()
    with pytest.raises(DTypeError, match="only floating tensors can require gradients, got dtype int64"):
        xpnn.tensor(np.arange(3), requires_grad=True)
    strict = xpnn.tensor(array_api_strict.ones((2, 3), dtype=array_api_strict.float64))
    with pytest.raises(NamespaceMismatchError, match="add: arrays from different libraries"):
        x + strict
    with pytest.raises(NamespaceMismatchError, match="matmul"):
        x @ strict.T
    with pytest.raises(RuntimeError, match="not used to compute"):
        xpnn.grad((x * 2).sum(), [x, xpnn.tensor(np.ones(1), requires_grad=True)])
    g = xpnn.grad((x * 2).sum(), [x, xpnn.tensor(np.ones(1), requires_grad=True)], allow_unused=True)
    assert g[1] is None and np.all(g[0].numpy() == 2)


def test_functional_on_arrays_returns_arrays_without_graph():
    x = np.ones((2, 3), np.float32)
    assert type(F.relu(x)) is np.ndarray
    for out in (F.sum(x), F.cross_entropy(x, np.array([0, 1]))):  # NumPy reductions give NumPy scalars
        assert isinstance(out, (np.ndarray, np.generic)) and not isinstance(out, xpnn.Tensor)
    s = array_api_strict.ones((2, 3), dtype=array_api_strict.float32)
    assert type(F.softmax(s)) is type(s)


def test_post_accumulate_grad_hook_fires_once_when_complete():
    w = nn.Parameter(np.ones(3))
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.copy()))
    (w * 2 + w * w).sum().backward()  # two uses: the hook sees the sum
    assert len(seen) == 1 and seen[0].tolist() == [4.0, 4.0, 4.0]
    handle.remove()
    (w * 2).sum().backward()
    assert len(seen) == 1


# --- modules --------------------------------------------------------------------------------------------------
def _model(seed=0, dtype="float64"):
    return nn.Sequential(nn.Linear(4, 8, seed=seed, dtype=dtype), nn.Tanh(), nn.Linear(8, 3, seed=seed + 1,
                                                                                     dtype=dtype))


def test_tape_and_explicit_give_the_same_gradients():
    X, y = rand(6, 4), np.array([0, 1, 2, 0, 1, 2])
    m1, m2 = _model(), _model()
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(m1(xpnn.tensor(X)), y)
    assert isinstance(loss, xpnn.Tensor) and loss.shape == ()
    loss.backward()
    loss2 = loss_fn(m2(X), y)
    m2.backward(loss_fn.backward(), need_input_grad=False)
    assert float(loss) == pytest.approx(float(loss2), rel=1e-12)
    for p, q in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12)
    assert m1.flat_buffer() is not None and m1.flat_buffer().grad.any()  # gradients went into the flat buffer


def test_shared_layer_gets_both_contributions():
    lin = nn.Linear(3, 3, seed=0, dtype="float64")
    x = rand(4, 3)

    def f(w, b, a):
        return F.sum(F.tanh(F.linear(F.tanh(F.linear(a, w, b)), w, b)))

    out = F.sum(F.tanh(lin(F.tanh(lin(xpnn.tensor(x))))))
    out.backward()
    w, b = lin.weight.data.copy(), lin.bias.data.copy()
    num_w = numgrad(lambda ww: float(f(ww, b, x)), [w], 0)
    np.testing.assert_allclose(lin.weight.grad, num_w, rtol=1e-6, atol=1e-8)
    # the explicit API: the same layer twice in a Sequential
    lin.zero_grad()
    seq = nn.Sequential(lin, nn.Tanh(), lin)
    y = seq(x)
    seq.backward(np.ones_like(y))
    ref_w = numgrad(lambda ww: float(F.sum(F.linear(F.tanh(F.linear(x, ww, b)), ww, b))), [w], 0)
    np.testing.assert_allclose(lin.weight.grad, ref_w, rtol=1e-6, atol=1e-8)


def test_forward_under_no_grad_does_not_change_the_pending_backward():
    m = _model()
    X, V = rand(5, 4, seed=1), rand(5, 4, seed=2)
    m(X)
    with xpnn.no_grad():
        m(V)  # validation
    m.backward(np.ones((5, 3)))
    g1 = [p.grad.copy() for p in m.parameters()]
    m.zero_grad()
    m(X)
    m.backward(np.ones((5, 3)))
    for a, p in zip(g1, m.parameters()):
        np.testing.assert_array_equal(a, p.grad)
    with pytest.raises(RuntimeError, match="backward\\(\\) called before forward"):
        m.backward(np.ones((5, 3)))


def test_evaluate_between_forward_and_backward_is_safe():
    from xpnn.train import evaluate, predict

    m = _model()
    X, y = rand(5, 4), np.array([0, 1, 2, 0, 1])
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(m(X), y)
    dlogits = loss_fn.backward()
    evaluate(m, loss_fn, rand(7, 4), np.array([0] * 7))
    predict(m, rand(3, 4))
    m.backward(dlogits)
    g = [p.grad.copy() for p in m.parameters()]
    m.zero_grad()
    loss_fn(m(X), y)
    m.backward(loss_fn.backward())
    for a, p in zip(g, m.parameters()):
        np.testing.assert_array_equal(a, p.grad)


def test_custom_expression_model_trains():
    """A residual block written as an expression, with a custom loss: no module provides it."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.float64)
    lin1, lin2 = nn.Linear(4, 4, seed=0, dtype="float64"), nn.Linear(4, 1, seed=1, dtype="float64")
    params = list(lin1.parameters()) + list(lin2.parameters())
    opt = optim.Adam(params, lr=0.05)
    x = xpnn.tensor(X)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        h = x + F.tanh(lin1(x))  # residual
        logit = lin2(h).reshape(-1)
        p = F.sigmoid(logit)
        loss = -(y * F.log(p + 1e-9) + (1 - y) * F.log(1 - p + 1e-9)).mean() + 1e-3 * (lin1.weight ** 2).sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8


def test_module_with_its_own_backward_joins_the_tape():
    class Scale(nn.Module):  # the first version's protocol
        def forward(self, x):
            return x * 3.0

        def backward(self, dy):
            return dy * 3.0

    m = nn.Sequential(nn.Linear(2, 2, seed=0, dtype="float64"), Scale())
    x = xpnn.tensor(rand(3, 2), requires_grad=True)
    m(x).sum().backward()
    np.testing.assert_allclose(x.grad, 3.0 * np.ones((3, 2)) @ m[0].weight.data)


def test_tape_runs_on_array_api_strict():
    xp = array_api_strict
    X = xp.asarray(rand(8, 4, seed=7))
    y = xp.asarray(np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    model = _model().to(xp)
    opt = optim.SGD(model.parameters(), lr=0.5)
    loss_fn = nn.CrossEntropyLoss()
    first = None
    for _ in range(10):
        opt.zero_grad()
        loss = loss_fn(model(xpnn.tensor(X)), y)
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss)
    assert float(loss) < first
    t = xpnn.tensor(X[:, 0], requires_grad=True)  # the standard allows integer arrays with integer keys only
    (t[xp.asarray(np.array([0, 0, 3]))] * 2.0).sum().backward()
    assert float(t.grad[0]) == 4.0 and float(t.grad[3]) == 2.0 and float(t.grad[1]) == 0.0


def test_selu_errors_name_selu_and_float16_tanh_backward_rounds_once():
    with pytest.raises(DTypeError, match="^selu: input must be a floating array"):
        F.selu(np.arange(3))
    y = np.array([0.999, 0.5, -0.99, 0.9995], np.float16)
    dy = np.array([1e-3, 2.0, 3e-4, 6e-5], np.float16)
    want = (dy.astype(np.float32) * (1 - y.astype(np.float32) ** 2)).astype(np.float16)
    np.testing.assert_array_equal(F.tanh_backward(y, dy), want)


def test_autograd_hands_on_the_old_tensor_names_with_a_deprecation_warning():
    import xpnn
    import xpnn.autograd as autograd

    for name in ("Tensor", "tensor", "grad"):
        with pytest.warns(DeprecationWarning, match=f"use xpnn.{name}"):
            assert getattr(autograd, name) is getattr(xpnn, name)
    with pytest.raises(AttributeError):
        autograd.no_such_name
