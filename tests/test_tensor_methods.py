"""Tensor methods with PyTorch's names and semantics (size, dim, view, unsqueeze, squeeze, flatten, casts, tolist,
device, ``dim=``), against torch where it is installed, and float64 gradient checks of the differentiable ones."""
import warnings

import array_api_strict
import numpy as np
import pytest

import xpnn
from _numgrad import numeric_grad

NAMESPACES = ["numpy", "array_api_strict"]


def make(ns, a, requires_grad=False):
    a = np.asarray(a)
    return xpnn.tensor(a if ns == "numpy" else array_api_strict.asarray(a), requires_grad=requires_grad)


def test_size_is_the_element_count_and_pytorchs_method():
    t = xpnn.tensor(np.zeros((2, 3, 4), np.float32))
    # the existing use: an int (arithmetic, comparisons, array sizes, formatting)
    assert t.size == 24 and isinstance(t.size, int) and t.size + 1 == 25 and f"{t.size}" == "24"
    assert np.zeros(t.size).shape == (24,) and int(t.size) == 24
    # PyTorch's method
    assert t.size() == (2, 3, 4)
    assert t.size(0) == 2 and t.size(-1) == 4 and t.size(-3) == 2
    assert type(t.size(1)) is int
    with pytest.raises(IndexError, match="size: dimension out of range"):
        t.size(3)
    with pytest.raises(IndexError, match="size: dimension out of range"):
        t.size(-4)
    assert xpnn.tensor(np.float32(1.0)).size() == () and xpnn.tensor(np.float32(1.0)).size == 1
    p = xpnn.nn.Parameter(np.zeros((5, 2), np.float32))
    assert p.size == 10 and p.size() == (5, 2) and p.numel() == 10 and type(p.numel()) is int


def test_size_matches_torch():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for Tensor.size")
    a = np.zeros((2, 1, 3), np.float32)
    ours, theirs = xpnn.tensor(a), torch.from_numpy(a)
    assert ours.size() == tuple(theirs.size())
    for d in range(-3, 3):
        assert ours.size(d) == theirs.size(d)
    assert ours.numel() == theirs.numel() and ours.dim() == theirs.dim() == ours.ndimension()


@pytest.mark.parametrize("ns", NAMESPACES)
def test_shape_methods_match_torch(ns):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for view/unsqueeze/squeeze/flatten")
    a = np.arange(24, dtype=np.float64).reshape(2, 1, 3, 4)
    t, r = make(ns, a), torch.from_numpy(a)

    def same(ours, theirs):
        assert ours.shape == tuple(theirs.shape)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())

    same(t.view(6, 4), r.view(6, 4))
    same(t.view((4, -1)), r.view((4, -1)))
    same(t.view(-1), r.view(-1))
    for d in (0, 2, 4, -1, -5):
        same(t.unsqueeze(d), r.unsqueeze(d))
    same(t.squeeze(), r.squeeze())
    for d in (1, 0, -3, 2):  # a length-1 axis is dropped, others are kept
        same(t.squeeze(d), r.squeeze(d))
    same(t.squeeze((0, 1)), r.squeeze((0, 1)))
    for args in ((), (1,), (1, 2), (0, -2), (2, 3), (-1, -1)):
        same(t.flatten(*args), r.flatten(*args))
    same(make(ns, np.float64(3.0)).flatten(), torch.tensor(3.0, dtype=torch.float64).flatten())
    with pytest.raises(IndexError, match="unsqueeze: dimension out of range"):
        t.unsqueeze(5)
    with pytest.raises(IndexError, match="flatten: dimension out of range"):
        t.flatten(0, 4)
    with pytest.raises(ValueError, match="flatten: start_dim 2 comes after end_dim 1"):
        t.flatten(2, 1)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_casts_tolist_and_device(ns):
    a = np.array([[1.5, -2.25], [3.0, 0.5]])
    t = make(ns, a, requires_grad=True)
    f, d = t.float(), t.double()
    assert xpnn.backend.dtype_name(f.dtype) == "float32" and xpnn.backend.dtype_name(d.dtype) == "float64"
    assert f.requires_grad and d.requires_grad  # floating casts are recorded
    for name, m in (("int64", t.long()), ("int32", t.int())):
        assert xpnn.backend.dtype_name(m.dtype) == name and not m.requires_grad  # integer casts carry no grad
        assert m.tolist() == [[1, -2], [3, 0]]  # truncation towards zero, as torch's .long()
    if ns == "numpy":
        assert xpnn.backend.dtype_name(t.half().dtype) == "float16"
    assert t.tolist() == [[1.5, -2.25], [3.0, 0.5]] and isinstance(t.tolist()[0][0], float)
    assert make(ns, np.float64(2.5)).tolist() == 2.5
    assert t.device == ("cpu" if ns == "numpy" else "array_api_strict")
    (f.sum() + d.sum()).backward()
    np.testing.assert_array_equal(np.asarray(t.grad), np.full((2, 2), 2.0))
    assert xpnn.backend.dtype_name(t.grad.dtype) == "float64"


def test_casts_match_torch():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for the dtype casts")
    a = np.array([-2.7, -0.5, 0.5, 2.7, 1e3])
    t, r = xpnn.tensor(a), torch.from_numpy(a)
    for m in ("float", "double", "half", "long", "int"):
        np.testing.assert_array_equal(getattr(t, m)().numpy(), getattr(r, m)().numpy())
        assert getattr(t, m)().numpy().dtype == getattr(r, m)().numpy().dtype
    assert t.tolist() == r.tolist()


@pytest.mark.parametrize("method, args", [("view", (3, 2)), ("view", (-1,)), ("unsqueeze", (1,)),
                                          ("squeeze", ()), ("squeeze", (1,)), ("flatten", ()), ("flatten", (1, 2)),
                                          ("double", ())])
def test_gradcheck_float64(method, args):
    rng = np.random.default_rng(0)
    shape = (3, 2) if method in ("view", "unsqueeze") else (3, 1, 2)
    a = rng.normal(size=shape)
    w = rng.normal(size=getattr(xpnn.tensor(a), method)(*args).shape)

    def f():
        return float((getattr(xpnn.tensor(a), method)(*args).double() * w).sum().item())

    t = xpnn.tensor(a, requires_grad=True)
    (getattr(t, method)(*args).double() * w).sum().backward()
    np.testing.assert_allclose(t.grad, numeric_grad(f, a), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_dim_keyword_on_tensor_methods_matches_torch(ns):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for dim= on Tensor methods")
    a = np.random.default_rng(1).normal(size=(3, 4, 5))
    a[0, 1, 2] = a[0, 1, 3] = 9.0  # a tie: torch returns the first maximum's index
    t, r = make(ns, a), torch.from_numpy(a)
    for d in (0, 1, -1):
        for m in ("sum", "mean", "softmax", "log_softmax", "logsumexp", "argmax", "argmin"):
            np.testing.assert_allclose(getattr(t, m)(dim=d).numpy(), getattr(r, m)(dim=d).numpy(), rtol=1e-12,
                                       err_msg=f"{m}(dim={d})")
        for m in ("max", "min"):
            values, indices = getattr(t, m)(dim=d)
            ref = getattr(r, m)(dim=d)
            np.testing.assert_allclose(values.numpy(), ref.values.numpy())
            np.testing.assert_array_equal(indices.numpy(), ref.indices.numpy())
    np.testing.assert_allclose(t.sum(dim=(0, 2)).numpy(), r.sum(dim=(0, 2)).numpy(), rtol=1e-12)


@pytest.mark.parametrize("m", ["sum", "mean", "max", "min", "argmax", "argmin", "softmax", "log_softmax",
                               "logsumexp"])
def test_axis_and_dim_together_raise_type_error_naming_the_function(m):
    t = xpnn.tensor(np.ones((2, 3)))
    with pytest.raises(TypeError, match=rf"^{m}: got both axis=1 and dim=0"):
        getattr(t, m)(axis=1, dim=0)
    with pytest.raises(TypeError, match=rf"^{m}: got both axis=-1 and dim=0"):  # an explicit default counts too
        getattr(t, m)(axis=-1, dim=0)


def test_max_with_dim_gradient_and_indices():
    t = xpnn.tensor(np.array([[1.0, 3.0, 2.0], [4.0, 0.0, 5.0]]), requires_grad=True)
    values, indices = t.max(dim=1)
    assert not indices.requires_grad and indices.tolist() == [1, 2]
    values.sum().backward()
    np.testing.assert_array_equal(t.grad, [[0, 1, 0], [0, 0, 1]])
    with pytest.raises(TypeError, match="max: dim must be an int"):
        t.max(dim=(0, 1))


@pytest.mark.cuda
def test_cuda_device_string_and_methods():
    import cupy

    t = xpnn.tensor(np.arange(6.0).reshape(2, 3), backend="cuda", requires_grad=True)
    assert t.device == f"cuda:{cupy.cuda.Device().id}"
    values, indices = t.max(dim=1)
    assert indices.tolist() == [2, 2] and t.size(1) == 3 and t.view(3, 2).shape == (3, 2)
    (values.sum() + t.unsqueeze(0).flatten().float().sum()).backward()
    np.testing.assert_array_equal(cupy.asnumpy(t.grad), [[1, 1, 2], [1, 1, 2]])
    total = xpnn.nn.utils.clip_grad_norm_([t], 1.0)
    assert total.device == t.device and float(total) == pytest.approx(np.sqrt(4 * 1 + 2 * 4))


def test_transpose_of_two_dims_swaps_them_like_torch(torch):
    a = np.arange(60.0).reshape(3, 4, 5)
    x = xpnn.tensor(a, requires_grad=True)
    ta = torch.tensor(a, requires_grad=True)
    for dims in [(0, 1), (1, 2), (2, 0), (-1, -2), (1, 1)]:
        np.testing.assert_array_equal(x.transpose(*dims).numpy(), ta.transpose(*dims).detach().numpy())
    m = xpnn.tensor(a[0])
    np.testing.assert_array_equal(m.transpose(0, 1).numpy(), a[0].T)  # 2-D: the transpose (NumPy: identity)
    np.testing.assert_array_equal(m.t().numpy(), a[0].T)
    np.testing.assert_array_equal(x.permute(2, 0, 1).numpy(), ta.permute(2, 0, 1).detach().numpy())
    np.testing.assert_array_equal(x.transpose(1, 0, 2).numpy(), a.transpose(1, 0, 2))  # all axes: NumPy's reading
    w = np.random.default_rng(0).normal(size=(5, 4, 3))
    (x.transpose(0, 2) * xpnn.tensor(w)).sum().backward()
    (ta.transpose(0, 2) * torch.tensor(w)).sum().backward()
    np.testing.assert_array_equal(x.grad, ta.grad.numpy())
    with pytest.raises(IndexError, match="Tensor.transpose: dims"):
        x.transpose(0, 3)
    with pytest.raises(xpnn.ShapeError, match="Tensor.t: expected at most 2"):
        x.t()


@pytest.mark.parametrize("expr", ["t.sum(dim=-1, keepdim=True)", "t.mean(-1, keepdim=True)",
                                  "t.mean(dim=(1, 2), keepdim=True)", "t.max(dim=-1, keepdim=True)[0]",
                                  "t.max(dim=-1, keepdim=True)[1]", "t.min(dim=1, keepdim=True).values",
                                  "t.argmax(dim=-1, keepdim=True)", "t.argmin(dim=0, keepdim=True)",
                                  "t.logsumexp(dim=-1, keepdim=True)", "t.sum(dim=1, keepdim=False)"])
def test_reductions_take_torch_keepdim(expr):
    """``keepdim=`` (PyTorch's name, next to ``dim=``) on the reductions, e.g. a hand-written LayerNorm's
    ``x.mean(-1, keepdim=True)``; the gradient broadcasts back."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for keepdim")
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    t, tt = xpnn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    got, want = eval(expr, {"t": t}), eval(expr, {"t": tt})
    np.testing.assert_allclose(np.asarray(got.numpy()), want.detach().numpy(), rtol=1e-12)
    if want.is_floating_point():
        (got * xpnn.tensor(x[..., :1].copy() if got.shape[-1] == 1 else np.ones(got.shape))).sum().backward()
        (want * torch.tensor(x[..., :1].copy() if want.shape[-1] == 1 else np.ones(tuple(want.shape)))).sum().backward()
        np.testing.assert_allclose(t.grad, tt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(xpnn.F.mean(x, dim=-1, keepdim=True), x.mean(-1, keepdims=True), rtol=1e-12)


# --- top-level torch names, and the Tensor methods ported transformer/RNN code uses ---------------------------------
@pytest.mark.parametrize("ns", NAMESPACES)
def test_top_level_tensor_functions_match_torch(ns, torch):
    a = np.random.default_rng(2).normal(size=(3, 4))
    b = np.random.default_rng(3).normal(size=(3, 4))
    t, u, r, s = make(ns, a), make(ns, b), torch.from_numpy(a), torch.from_numpy(b)

    def same(ours, theirs):
        assert ours.shape == tuple(theirs.shape)
        np.testing.assert_array_equal(np.asarray(ours.numpy()), theirs.numpy())

    same(xpnn.cat([t, u], 1), torch.cat([r, s], 1))
    same(xpnn.cat((t, u)), torch.cat((r, s)))
    same(xpnn.stack([t, u]), torch.stack([r, s]))
    same(xpnn.stack([t, u], dim=-1), torch.stack([r, s], dim=-1))
    for ours, theirs in zip(xpnn.split(t, [1, 3], dim=1), torch.split(r, [1, 3], dim=1)):
        same(ours, theirs)
    for ours, theirs in zip(xpnn.chunk(t, 2, 1), torch.chunk(r, 2, 1)):
        same(ours, theirs)
    same(xpnn.where(t > u, t, u), torch.where(r > s, r, s))
    same(xpnn.where(t > 0, t, 0.0), torch.where(r > 0, r, 0.0))
    same(xpnn.tril(t, -1), torch.tril(r, -1))
    same(xpnn.triu(t, 1), torch.triu(r, 1))
    for name in ("zeros_like", "ones_like"):
        same(getattr(xpnn, name)(t), getattr(torch, name)(r))
        z = getattr(xpnn, name)(t, dtype="int64")
        assert z.numpy().dtype == getattr(torch, name)(r, dtype=torch.int64).numpy().dtype
        assert not z.requires_grad and type(z.data) is type(t.data)
    assert xpnn.zeros_like(t, requires_grad=True).requires_grad
    # one implementation: the functional ops themselves
    assert xpnn.cat is xpnn.F.cat and xpnn.stack is xpnn.F.stack and xpnn.where is xpnn.F.where
    assert xpnn.split is xpnn.F.split and xpnn.chunk is xpnn.F.chunk
    assert xpnn.tril is xpnn.F.tril and xpnn.triu is xpnn.F.triu
    x = make(ns, a, requires_grad=True)
    xpnn.stack([x, x * 2], dim=1).sum().backward()
    np.testing.assert_array_equal(np.asarray(x.grad), np.full(a.shape, 3.0))


# expressions evaluated on an xpnn Tensor and on a torch tensor alike (positive input: rsqrt, fractional pow)
METHOD_EXPRS = [
    "t.repeat(2, 1, 3)", "t.repeat(2, 1, 1, 2)", "t.repeat((1, 2, 1))", "t.flip(0, 2)", "t.flip((1,))", "t.flip(-1)",
    "t.var()", "t.var(1)", "t.var((0, 2), keepdim=True)", "t.var(1, unbiased=False)", "t.var(1, True, True)",
    "t.var(None, keepdim=True)", "t.var([0, 2])", "t.var(dim=-1, correction=0)",
    "t.var(dim=-1, correction=2)", "t.var(dim=(0, 1), correction=1.5)",
    "t.rsqrt()", "t.pow(3)", "t.pow(2.5)", "t.narrow(1, 1, 2)", "t.narrow(-1, -3, 2)", "t.narrow(0, 0, 0)",
    "t.unflatten(2, (2, -1))", "t.unflatten(-1, (2, 2))", "t.unflatten(0, (1, 2))", "t.mT", "t.unbind(0)",
    "t.unbind(-1)", "t.unbind(1)",
]


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)


@pytest.mark.parametrize("expr", METHOD_EXPRS)
@pytest.mark.parametrize("ns", NAMESPACES)
def test_new_tensor_methods_match_torch_values_and_gradients(ns, expr, torch):
    a = np.random.default_rng(4).uniform(0.5, 2.0, size=(2, 3, 4))
    t, tt = make(ns, a, requires_grad=True), torch.tensor(a, requires_grad=True)
    got, want = _as_tuple(eval(expr, {"t": t})), _as_tuple(eval(expr, {"t": tt}))
    assert len(got) == len(want)
    rng = np.random.default_rng(5)
    ws = [rng.normal(size=tuple(w.shape)) for w in want]
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape)
        np.testing.assert_allclose(np.asarray(g.numpy()), w.detach().numpy(), rtol=1e-12, atol=1e-14)
    sum(((g * make(ns, w)).sum() for g, w in zip(got, ws)), xpnn.tensor(make(ns, 0.0).data)).backward()
    sum((w_t * torch.from_numpy(w)).sum() for w_t, w in zip(want, ws)).backward()
    np.testing.assert_allclose(np.asarray(t.grad), tt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("expr", [e for e in METHOD_EXPRS if "(0, 0, 0)" not in e])
def test_new_tensor_methods_gradcheck_float64(expr):
    a = np.random.default_rng(6).uniform(0.5, 2.0, size=(2, 3, 4))
    outs = _as_tuple(eval(expr, {"t": xpnn.tensor(a)}))
    ws = [np.random.default_rng(7 + i).normal(size=o.shape) for i, o in enumerate(outs)]

    def loss(t):
        return sum((o * w).sum() for o, w in zip(_as_tuple(eval(expr, {"t": t})), ws))

    t = xpnn.tensor(a, requires_grad=True)
    loss(t).backward()
    np.testing.assert_allclose(t.grad, numeric_grad(lambda: float(loss(xpnn.tensor(a)).item()), a),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_flip_and_repeat_return_writable_copies_as_torch(ns):
    a = np.arange(6.0).reshape(3, 2)
    t = make(ns, a.copy())
    for out in (t.flip(0), t.flip(0, 1), t.repeat(1, 1), t.repeat(2, 1), t[:, :1].repeat(1, 4),
                make(ns, np.ones((3, 1))).repeat(1, 4)):
        out[...] = -1.0  # no read-only view, and no write through to t
        assert float(out.numpy().max()) == -1.0
    np.testing.assert_array_equal(np.asarray(t.numpy()), a)
    assert t.flip(0)._version == t._version == 0


def test_var_with_too_few_entries_is_inf_or_nan_as_torch(torch):
    a = np.array([[1.0, 2.0, 4.0]])
    t, r = xpnn.tensor(a), torch.from_numpy(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (torch's "degrees of freedom is <= 0")
        for kw in ({"dim": 0}, {"dim": 1, "correction": 3}, {"dim": 1, "correction": 5}):
            np.testing.assert_array_equal(t.var(**kw).numpy(), r.var(**kw).numpy())
        np.testing.assert_array_equal(xpnn.tensor(np.ones((1, 2))).var(0).numpy(), torch.ones(1, 2).var(0).numpy())


@pytest.mark.parametrize("ns", NAMESPACES)
def test_masked_fill_inplace_without_grad_writes_and_bumps_version(ns, torch):
    a = np.arange(12.0).reshape(3, 4)
    mask = np.array([True, False, False, True])
    t, r = make(ns, a.copy()), torch.from_numpy(a.copy())
    v0 = t._version
    data = t.data
    assert t.masked_fill_(make(ns, mask), -1.5) is t
    r.masked_fill_(torch.from_numpy(mask), -1.5)
    np.testing.assert_array_equal(np.asarray(t.numpy()), r.numpy())
    assert t.data is data and t._version == v0 + 1  # the same array, written in place
    if ns == "numpy":  # xpnn.tensor(a) wraps a (torch.from_numpy): the fill is seen through a and views
        base = a.copy()
        view = xpnn.tensor(base).reshape(12)
        xpnn.tensor(base).masked_fill_(xpnn.tensor(a > 5), 0.0)
        assert base.max() == 5.0 and view.numpy().max() == 5.0
    i = make(ns, np.array([[1, 2], [3, 4]]))
    i.masked_fill_(make(ns, np.array([[True], [False]])), 2.7)  # an integer Tensor truncates the value
    assert i.tolist() == [[2, 2], [3, 4]]
    p = xpnn.nn.Parameter(np.ones((2, 2)))
    with xpnn.no_grad():
        p.masked_fill_(xpnn.tensor(np.eye(2, dtype=bool)), 0.0)
    np.testing.assert_array_equal(p.numpy(), 1 - np.eye(2))


@pytest.mark.parametrize("ns", NAMESPACES)
def test_masked_fill_inplace_in_a_graph_matches_torch_gradient(ns, torch):
    a = np.random.default_rng(8).normal(size=(2, 3, 3))
    causal = ~np.tril(np.ones((3, 3), bool))
    w = np.random.default_rng(9).normal(size=(2, 3, 3))
    t, tt = make(ns, a, requires_grad=True), torch.tensor(a, requires_grad=True)
    v, vv = make(ns, np.float64(-3.0), requires_grad=True), torch.tensor(-3.0, dtype=torch.float64,
                                                                         requires_grad=True)
    scores, ss = t * 2.0, tt * 2.0
    out = scores.masked_fill_(make(ns, causal), v)  # the usual attention line: the return value is often dropped
    ss.masked_fill_(torch.from_numpy(causal), vv)
    assert out is scores and scores.grad_fn is not None and scores.grad_fn.op.name == "where"
    attn, aa = xpnn.F.softmax(scores, dim=-1), torch.softmax(ss, dim=-1)
    np.testing.assert_allclose(np.asarray(attn.numpy()), aa.detach().numpy(), rtol=1e-12)
    (attn * make(ns, w)).sum().backward()
    (aa * torch.from_numpy(w)).sum().backward()
    np.testing.assert_allclose(np.asarray(t.grad), tt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(np.asarray(v.grad)), vv.grad.item(), rtol=1e-10)


def test_masked_fill_inplace_of_a_value_that_requires_grad_into_a_constant_matches_torch(torch):
    a = np.arange(4.0)
    mask = np.array([True, False, True, False])
    t, tt = xpnn.tensor(a.copy()), torch.tensor(a.copy())
    v, vv = xpnn.tensor(np.float64(2.0), requires_grad=True), torch.tensor(2.0, dtype=torch.float64,
                                                                            requires_grad=True)
    t.masked_fill_(xpnn.tensor(mask), v)
    tt.masked_fill_(torch.from_numpy(mask), vv)
    assert t.requires_grad and not t.is_leaf and tt.requires_grad
    np.testing.assert_array_equal(t.numpy(), tt.detach().numpy())
    (t * t).sum().backward()
    (tt * tt).sum().backward()
    assert float(v.grad) == vv.grad.item() == 8.0


def test_masked_fill_inplace_gradcheck_float64():
    a = np.random.default_rng(10).normal(size=(3, 4))
    mask = xpnn.tensor(np.array([False, True, False, True]))
    w = np.random.default_rng(11).normal(size=(3, 4))

    def f(t):
        y = t * t  # (mul saves its inputs, not y: the fill leaves them intact)
        y.masked_fill_(mask, 0.5)
        return ((y * y) * w).sum()

    t = xpnn.tensor(a, requires_grad=True)
    f(t).backward()
    np.testing.assert_allclose(t.grad, numeric_grad(lambda: float(f(xpnn.tensor(a)).item()), a), rtol=1e-6,
                               atol=1e-8)


def test_masked_fill_inplace_errors_follow_torch():
    mask = xpnn.tensor(np.array([True, False]))
    leaf = xpnn.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(RuntimeError, match="Tensor.masked_fill_: a leaf Tensor that requires grad"):
        leaf.masked_fill_(mask, 0.0)
    y = leaf.exp()  # exp saves its output: filling it in place makes the backward raise, as in PyTorch
    y.masked_fill_(mask, 0.0)
    with pytest.raises(xpnn.InplaceModifiedError, match="exp: one of the variables needed"):
        y.sum().backward()
    z = leaf * 2
    zv = z.reshape(1, 2)  # a view shares z's values: its history could not follow
    with pytest.raises(RuntimeError, match="Tensor.masked_fill_: this Tensor's values are shared"):
        z.masked_fill_(mask, 0.0)
    del zv
    with pytest.raises(xpnn.ShapeError, match="masked_fill: mask of shape"):
        xpnn.tensor(np.ones(2)).masked_fill_(xpnn.tensor(np.ones(3, bool)), 0.0)
    with pytest.raises(xpnn.DTypeError, match="masked_fill: mask must be a bool"):
        xpnn.tensor(np.ones(2)).masked_fill_(xpnn.tensor(np.ones(2)), 0.0)
    y = leaf * 3  # a failed fill leaves a recorded Tensor as it was
    with pytest.raises(xpnn.ShapeError, match="masked_fill: mask of shape"):
        y.masked_fill_(xpnn.tensor(np.ones(3, bool)), 0.0)
    leaf.grad = None
    y.sum().backward()
    np.testing.assert_array_equal(leaf.grad, [3.0, 3.0])


@pytest.mark.parametrize("ns", NAMESPACES)
def test_type_as_new_tensors_is_contiguous_and_bool_match_torch(ns, torch):
    a = np.array([[0.0, 1.5], [-2.0, 0.0]])
    t, r = make(ns, a, requires_grad=True), torch.tensor(a, requires_grad=True)
    f32, i64 = make(ns, np.zeros(1, np.float32)), make(ns, np.zeros(1, np.int64))
    assert t.type_as(t) is t
    c, cr = t.type_as(f32), r.type_as(torch.zeros(1, dtype=torch.float32))
    assert np.asarray(c.numpy()).dtype == cr.detach().numpy().dtype and c.requires_grad
    k = t.type_as(i64)
    assert k.tolist() == r.type_as(torch.zeros(1, dtype=torch.int64)).tolist() and not k.requires_grad
    c.sum().backward()
    assert xpnn.backend.dtype_name(t.grad.dtype) == "float64"
    assert t.bool().tolist() == r.bool().tolist() and not t.bool().requires_grad
    for name, args in (("new_zeros", (2, 3)), ("new_ones", ((3,),)), ("new_full", ((2, 2), 7.0))):
        n, nr = getattr(t, name)(*args), getattr(r, name)(*args)
        assert n.shape == tuple(nr.shape) and n.tolist() == nr.tolist() and not n.requires_grad
        assert np.asarray(n.numpy()).dtype == nr.numpy().dtype and type(n.data) is type(t.data)
    assert xpnn.backend.dtype_name(t.new_zeros(2, dtype="int32").dtype) == "int32"
    assert t.new_ones(2, requires_grad=True).requires_grad
    assert t.is_contiguous() and t.mT.is_contiguous() == (ns != "numpy") and t.mT.contiguous().is_contiguous()
    if ns == "numpy":
        assert t.mT.is_contiguous() == r.mT.is_contiguous() and t[:, :1].is_contiguous() == r[:, :1].is_contiguous()


def test_new_tensor_methods_raise_errors_naming_the_method():
    t = xpnn.tensor(np.ones((2, 3)))
    with pytest.raises(xpnn.ShapeError, match="Tensor.repeat: the number of repeat sizes"):
        t.repeat(2)
    with pytest.raises(ValueError, match="Tensor.repeat: repeat sizes must be non-negative"):
        t.repeat(1, -1)
    with pytest.raises(ValueError, match="flip: dims"):
        t.flip(0, -2)
    with pytest.raises(IndexError, match="flip: dimension out of range"):
        t.flip(2)
    with pytest.raises(TypeError, match="Tensor.var: pass unbiased= or correction="):
        t.var(0, unbiased=True, correction=1)
    with pytest.raises(IndexError, match="var: dimension out of range"):
        t.var(2)
    with pytest.raises(xpnn.DTypeError, match="Tensor.var: expected a floating Tensor, got dtype int64"):
        xpnn.tensor(np.ones(3, np.int64)).var()
    with pytest.raises(IndexError, match=r"narrow: start \(2\) \+ length \(2\) exceeds dimension 1 of size 3"):
        t.narrow(1, 2, 2)
    with pytest.raises(IndexError, match="narrow: start -4 out of range"):
        t.narrow(1, -4, 1)
    with pytest.raises(xpnn.ShapeError, match="unflatten: sizes"):
        t.unflatten(1, (2, 2))
    with pytest.raises(xpnn.ShapeError, match="unflatten: sizes"):
        t.unflatten(1, (-1, -1))
    with pytest.raises(xpnn.ShapeError, match="Tensor.mT: expected at least 2 dimensions"):
        xpnn.tensor(np.ones(3)).mT
    with pytest.raises(IndexError, match="unbind: dimension out of range"):
        t.unbind(2)
    with pytest.raises(TypeError, match="Tensor.new_zeros: size must be non-negative ints"):
        t.new_zeros(2.5)
    assert xpnn.tensor(np.ones((0, 3))).unbind(0) == ()


@pytest.mark.cuda
def test_new_tensor_methods_on_cuda_match_numpy():
    import cupy

    a = np.random.default_rng(12).uniform(0.5, 2.0, size=(2, 3, 4))
    mask = np.array([True, False, False, True])
    for expr in METHOD_EXPRS + ["t.masked_fill(m, 0.0)"]:
        grads = []
        for backend in ("numpy", "cuda"):
            t = xpnn.tensor(a, backend=backend, requires_grad=True)
            y = t * 1.0
            y.masked_fill_(xpnn.tensor(mask, backend=backend), 0.25)
            outs = _as_tuple(eval(expr, {"t": y, "m": xpnn.tensor(mask, backend=backend)}))
            sum((o * o).sum() for o in outs).backward()
            grads.append(cupy.asnumpy(t.grad) if backend == "cuda" else t.grad)
        np.testing.assert_allclose(grads[1], grads[0], rtol=1e-10, atol=1e-12, err_msg=expr)
    t = xpnn.tensor(a, backend="cuda")
    z = t.new_zeros(2, 2)
    assert isinstance(z.data, cupy.ndarray) and z.device == t.device and xpnn.zeros_like(t).device == t.device
    assert t.bool().device == t.device and t.is_contiguous() and not t.mT.is_contiguous()
