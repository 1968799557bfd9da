"""Tensor methods with PyTorch's names and semantics (size, dim, view, unsqueeze, squeeze, flatten, casts, tolist,
device, ``dim=``), against torch where it is installed, and float64 gradient checks of the differentiable ones."""
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
