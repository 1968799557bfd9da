"""``xpnn.Tensor`` and ``xpnn.tensor()``: construction,
the leaf/graph flags, hooks, conversions (item, numpy, ``__array__``, format, repr), backward's arguments, the
operators (reflected and in-place), comparisons, the method aliases of ``xpnn.functional`` ops, and the wrapping
of op outputs. PyTorch's ``torch.Tensor`` is the reference where it has the same feature."""
from __future__ import annotations

import weakref

import array_api_strict as xs
import numpy as np
import pytest

import xpnn
from xpnn import functional as F
from xpnn.autograd.op import Op
from xpnn.errors import DTypeError, NamespaceMismatchError, ShapeError


def _t(a, requires_grad=False):
    return xpnn.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def _close(t, ref):
    ref = ref.detach().numpy() if hasattr(ref, "detach") else np.asarray(ref)  # a torch.Tensor
    got = t.numpy() if isinstance(t, xpnn.Tensor) else np.asarray(t)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


A = np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.5]])
B = np.array([[2.0, 0.25, -1.0], [3.0, -2.0, 0.5]])


# --- construction -------------------------------------------------------------------------------------------------

class _ShapeOnly:
    shape = (2,)


class _DTypeOnly:
    dtype = np.dtype("float64")


@pytest.mark.parametrize("bad", [[1.0, 2.0], 3.0, _ShapeOnly(), _DTypeOnly()])
def test_Tensor_needs_an_array_with_shape_and_dtype(bad):
    with pytest.raises(TypeError, match="Tensor: expected an array"):
        xpnn.Tensor(bad)


def test_a_new_Tensor_is_a_leaf_without_grad_or_hooks():
    t = xpnn.Tensor(np.ones(3))
    assert t.grad is None and t.grad_fn is None and t.is_leaf and t.requires_grad is False
    u = xpnn.Tensor(t, requires_grad=True)  # a Tensor is unwrapped: the same array
    assert u.data is t.data and u.requires_grad is True and u.is_leaf
    # a hook can be registered on a fresh leaf and runs after backward
    seen = []
    u.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.copy()))
    (u * 2.0).sum().backward()
    assert len(seen) == 1 and np.array_equal(seen[0], np.full(3, 2.0))


def test_a_detached_tensor_can_become_a_new_leaf():
    x = _t([1.0, 2.0, 3.0], requires_grad=True)
    d = (x * 2.0).detach()
    assert d.is_leaf and d.grad_fn is None and not d.requires_grad
    d.requires_grad_()
    (d * x).sum().backward()  # a detached Tensor made a leaf again is a graph input like any other
    _close(d.grad, [1.0, 2.0, 3.0])
    _close(x.grad, [2.0, 4.0, 6.0])


def test_tensor_defaults_to_no_grad_and_keeps_an_arrays_dtype():
    t = xpnn.tensor([1, 2, 3])  # integers: fine without requires_grad
    assert t.dtype == np.int64 and not t.requires_grad
    f32 = xpnn.tensor(np.arange(3, dtype=np.float32))
    assert f32.dtype == np.float32 and type(f32.data) is np.ndarray
    assert xpnn.tensor([1.5, 2.0]).dtype == np.float64  # Python floats -> float64, as NumPy does
    assert xpnn.tensor(2.5).shape == () and xpnn.tensor(2.5).item() == 2.5
    r = xpnn.tensor([0.5, 1.0], requires_grad=True)
    assert r.requires_grad and r.is_leaf


def test_tensor_of_a_tensor_shares_its_array():
    src = xpnn.tensor(np.arange(4.0))
    t = xpnn.tensor(src)
    assert t is not src and t.data is src.data
    t2 = xpnn.tensor(src, dtype="float32")
    assert t2.dtype == np.float32 and np.array_equal(t2.numpy(), np.arange(4.0, dtype=np.float32))


def test_tensor_dtype_casts_arrays_lists_and_scalars():
    a = np.arange(3, dtype=np.float64)
    t = xpnn.tensor(a, dtype="float32")
    assert t.dtype == np.float32 and a.dtype == np.float64
    assert np.array_equal(t.numpy(), [0, 1, 2])
    assert xpnn.tensor([1, 2], dtype="float32").dtype == np.float32
    assert xpnn.tensor(np.float64(3.0), dtype="float32").dtype == np.float32
    assert xpnn.tensor(np.float32(3.0)).dtype == np.float32  # a NumPy scalar keeps its dtype
    assert xpnn.tensor(np.arange(2, dtype=np.float32), backend="numpy", dtype="float64").dtype == np.float64
    s = xpnn.tensor(xs.asarray([1.0, 2.0], dtype=xs.float64), dtype="float32")
    assert s.dtype == xs.float32 and s.backend == xpnn.get_backend(xs)


def test_tensor_keeps_an_arrays_backend_unless_told():
    s = xs.asarray([1.0, 2.0], dtype=xs.float32)
    t = xpnn.tensor(s)
    assert t.backend == xpnn.get_backend(xs) and t.data is s
    with xpnn.use_backend(xs):  # lists go to the active backend; NumPy arrays stay NumPy
        assert xpnn.tensor([1.0, 2.0]).backend == xpnn.get_backend(xs)
        n = xpnn.tensor(np.ones(2))
        assert type(n.data) is np.ndarray
    moved = xpnn.tensor(s, backend="numpy")
    assert type(moved.data) is np.ndarray and moved.dtype == np.float32
    assert np.array_equal(moved.numpy(), [1.0, 2.0])
    to_strict = xpnn.tensor(np.array([1.0, 2.0]), backend=xs)
    assert to_strict.backend == xpnn.get_backend(xs) and to_strict.dtype == xs.float64
    same = np.array([3.0])
    assert xpnn.tensor(same, backend="numpy").data is same  # already there: not copied


# --- requires_grad ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.complex128])
def test_only_real_floating_tensors_can_require_grad(dtype):
    t = xpnn.Tensor(np.zeros(2, dtype=dtype))
    with pytest.raises(DTypeError, match="requires_grad: only floating"):
        t.requires_grad_()
    with pytest.raises(DTypeError, match="requires_grad"):
        xpnn.tensor(np.zeros(2, dtype=dtype), requires_grad=True)
    assert t.requires_grad_(False) is t and not t.requires_grad


class _Duck:
    """An array-like with shape and dtype but no array namespace."""

    shape = (2,)
    dtype = np.dtype("float32")
    ndim = 1


def test_a_foreign_array_cannot_require_grad():
    t = xpnn.Tensor(_Duck())
    with pytest.raises(DTypeError, match="only floating"):
        t.requires_grad_()


def test_requires_grad_flag_is_a_bool_and_toggles_on_leaves():
    t = _t([1.0, 2.0])
    assert t.requires_grad_() is t and t.requires_grad is True
    t.requires_grad_(0)
    assert t.requires_grad is False
    t.requires_grad = 1
    assert t.requires_grad is True
    y = t * 2.0
    with pytest.raises(RuntimeError, match="non-leaf"):
        y.requires_grad_(False)
    y.requires_grad_(True)  # turning it on for a non-leaf (it is on) is fine
    assert y.requires_grad and y.grad_fn is not None


# --- hooks --------------------------------------------------------------------------------------------------------

def test_post_accumulate_hooks_run_in_order_and_remove_independently():
    x = _t([1.0, 2.0], requires_grad=True)
    calls = []
    h1 = x.register_post_accumulate_grad_hook(lambda p: calls.append(("a", p is x)))
    x.register_post_accumulate_grad_hook(lambda p: calls.append(("b", p is x)))
    (x * 3.0).sum().backward()
    assert calls == [("a", True), ("b", True)]
    h1.remove()
    h1.remove()  # removing twice is harmless
    calls.clear()
    (x * 3.0).sum().backward()
    assert calls == [("b", True)]


def test_hook_handle_outliving_its_tensor_removes_nothing():
    x = _t([1.0], requires_grad=True)
    h = x.register_post_accumulate_grad_hook(lambda p: None)
    ref = weakref.ref(x)
    del x
    assert ref() is None
    h.remove()  # no error


def test_hooks_only_on_leaves_and_register_hook_retain_grad_say_what_to_use():
    x = _t([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="register_post_accumulate_grad_hook: only leaf"):
        (x * 2.0).register_post_accumulate_grad_hook(lambda p: None)
    with pytest.raises(NotImplementedError, match="register_hook"):
        x.register_hook(lambda g: g)
    with pytest.raises(NotImplementedError, match="retain_grad"):
        (x * 2.0).retain_grad()


# --- metadata, len, iteration ---------------------------------------------------------------------------------------

def test_len_and_iteration_follow_the_first_axis():
    t = _t(A)  # (2, 3)
    assert len(t) == 2 and len(_t([1.0, 2.0, 3.0])) == 3
    rows = list(t)
    assert len(rows) == 2 and all(r.shape == (3,) for r in rows)
    _close(rows[1], A[1])
    assert [r.item() for r in _t([4.0, 5.0, 6.0])] == [4.0, 5.0, 6.0]
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d"):
        len(_t(1.0))
    with pytest.raises(TypeError, match="iteration over a 0-d"):
        iter(_t(1.0))
    assert t.size == 6 and t.numel() == 6 and t.ndim == 2


# --- conversions ----------------------------------------------------------------------------------------------------

def test_numpy_returns_a_copy():
    t = _t([1.0, 2.0])
    n = t.numpy()
    n[0] = 9.0
    assert t.data[0] == 1.0 and not np.shares_memory(n, t.data)
    s = xpnn.tensor(xs.asarray([1.0, 2.0]))
    assert type(s.numpy()) is np.ndarray and np.array_equal(s.numpy(), [1.0, 2.0])


def test_item_float_int_on_one_element_tensors(torch):
    assert _t([[2.5]]).item() == 2.5 and isinstance(_t([[2.5]]).item(), float)
    assert xpnn.tensor(np.float32(1.5)).item() == torch.tensor(1.5).item()
    assert float(_t([3.25])) == 3.25 and int(_t(3.75)) == int(torch.tensor(3.75)) == 3
    s = xpnn.tensor(xs.asarray([7.0]))
    assert s.item() == 7.0
    with pytest.raises(ValueError, match="Tensor.item: only one-element"):
        _t([1.0, 2.0]).item()
    with pytest.raises(ValueError, match="item"):
        _t(np.zeros((0,))).item()


def test_format_uses_the_number_for_0d_and_the_repr_otherwise(torch):
    v = _t(0.123456)
    assert f"{v:.2f}" == f"{torch.tensor(0.123456, dtype=torch.float64):.2f}" == "0.12"
    assert format(v, "") == format(0.123456, "")
    one = _t([1.5])
    assert f"{one}" == repr(one) == format(one, "")
    with pytest.raises(TypeError):
        format(one, ".2f")  # as torch: only 0-d tensors take a number format


def test_bool_of_one_element_tensors_and_ambiguity():
    assert bool(_t(2.0)) is True and bool(_t([0.0])) is False and bool(_t([[3.0]])) is True
    with pytest.raises(ValueError, match="ambiguous"):
        bool(_t([1.0, 2.0]))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(_t(np.zeros((0,))))


def test_array_protocol_shares_like_torch_and_copies_when_asked(torch):
    t = _t([1.0, 2.0])
    assert np.shares_memory(np.asarray(t), t.data)  # as np.asarray(torch_tensor): a view of the CPU data
    tt = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert np.shares_memory(np.asarray(tt), tt.numpy())
    c = np.array(t, copy=True)
    assert not np.shares_memory(c, t.data) and np.array_equal(c, [1.0, 2.0])
    f32 = np.asarray(t, dtype=np.float32)
    assert f32.dtype == np.float32 and np.array_equal(f32, [1.0, 2.0])
    assert np.asarray(xpnn.tensor(xs.asarray([1.0, 2.0]))).tolist() == [1.0, 2.0]
    # the protocol itself honours dtype (NumPy would cast a wrong result again, other callers may not)
    assert t.__array__(np.float32).dtype == np.float32
    assert t.__array__(dtype=np.int64).tolist() == [1, 2]


def test_to_casts_and_moves_and_records():
    x = _t([1.0, 2.0], requires_grad=True)
    y = x.to("float32")
    assert y.dtype == np.float32 and y.grad_fn is not None and type(y.data) is np.ndarray
    z = x.to(np.float32)
    assert z.dtype == np.float32
    w = x.to(dtype="float32")
    assert w.dtype == np.float32
    (y.sum() + 2.0 * w.sum()).backward()
    assert x.grad.dtype == np.float64 and np.array_equal(x.grad, [3.0, 3.0])
    s = x.to(xs)
    assert s.backend == xpnn.get_backend(xs) and s.dtype == xs.float64
    s2 = x.to(xs, dtype="float32")
    assert s2.backend == xpnn.get_backend(xs) and s2.dtype == xs.float32
    # without a backend the Tensor stays where it is, whatever the active backend
    st = xpnn.tensor(xs.asarray([1.0, 2.0], dtype=xs.float64))
    assert st.to(dtype="float32").backend == xpnn.get_backend(xs)
    assert st.to("float32").backend == xpnn.get_backend(xs)
    assert type(st.to("numpy").data) is np.ndarray
    with xpnn.use_backend(xs):
        n = _t([1.0]).to(dtype="float32")
        assert type(n.data) is np.ndarray


def test_repr_shows_requires_grad_or_the_op_and_indents_rows():
    assert repr(_t([1.0, 2.0])) == "tensor(array([1., 2.]))"
    assert repr(_t([1.0, 2.0], requires_grad=True)) == "tensor(array([1., 2.]), requires_grad=True)"
    x = _t([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    assert repr(x * 2.0) == "tensor(array([[2., 4.],\n              [6., 8.]]), grad_fn=<mul>)"
    with xpnn.no_grad():
        assert repr(x * 2.0) == "tensor(array([[2., 4.],\n              [6., 8.]]))"


# --- backward -----------------------------------------------------------------------------------------------------

def test_backward_needs_a_tensor_that_requires_grad():
    with pytest.raises(RuntimeError, match="backward: this Tensor does not require grad"):
        _t(1.0).backward()


def test_backward_seed_rules_and_errors():
    x = _t([1.0, 2.0], requires_grad=True)
    y = x * 3.0
    with pytest.raises(RuntimeError, match=r"backward: grad can be implicitly created.*\(made by mul\).*\(2,\)"):
        y.backward()
    with pytest.raises(RuntimeError, match="implicitly created") as e:
        x.backward()  # a leaf: nothing made it
    assert "made by" not in str(e.value)
    with pytest.raises(TypeError, match="backward: grad must be an array or Tensor, got list"):
        y.backward([1.0, 1.0])
    with pytest.raises(ShapeError, match=r"backward: grad must have the output's shape \(2,\), got \(3,\)"):
        y.backward(np.ones(3))
    with pytest.raises(NamespaceMismatchError, match="backward"):
        y.backward(xs.asarray([1.0, 1.0], dtype=xs.float64))
    y.backward(np.array([1.0, 10.0]))
    _close(x.grad, [3.0, 30.0])
    (x * 2.0).backward(xpnn.tensor(np.array([1.0, 1.0])))
    _close(x.grad, [5.0, 32.0])
    z = _t([[4.0]], requires_grad=True)
    (z * 2.0).backward()  # one element, not 0-d: implicit seed
    _close(z.grad, [[2.0]])


def test_backward_accumulates_and_frees_the_graph_unless_retained():
    x = _t([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    _close(x.grad, [4.0, 8.0])
    assert type(x.grad) is np.ndarray
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    y2 = (x * x).sum()
    y2.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y2.backward()


def test_backward_create_graph_keeps_the_graph_and_grad_holds_values(torch):
    x = _t([1.0, 2.0], requires_grad=True)
    y = (x ** 3).sum()
    y.backward(create_graph=True)
    assert type(x.grad) is np.ndarray
    _close(x.grad, [3.0, 12.0])
    y.backward()  # retain_graph defaults to create_graph
    _close(x.grad, [6.0, 24.0])
    xt = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    (gt,) = torch.autograd.grad((xt ** 3).sum(), xt, create_graph=True)
    _close(x.grad, 2 * gt)
    # with an explicit seed too
    x2 = _t([1.0, 2.0], requires_grad=True)
    (x2 ** 3).backward(np.array([1.0, 0.5]), create_graph=True)
    _close(x2.grad, [3.0, 6.0])
    x3 = _t([1.0, 2.0], requires_grad=True)
    (x3 ** 3).backward(xpnn.tensor(np.array([1.0, 0.5])), create_graph=True)
    _close(x3.grad, [3.0, 6.0])


def test_backward_create_graph_with_a_non_retained_graph_frees_it():
    x = _t([1.0, 2.0], requires_grad=True)
    y = (x ** 3).sum()
    y.backward(create_graph=True, retain_graph=False)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_backward_inputs_fills_only_those_grads():
    x = _t([1.0, 2.0], requires_grad=True)
    w = _t([3.0, 4.0], requires_grad=True)
    h = x * w
    loss = (h * h).sum()
    loss.backward(inputs=[x], retain_graph=True)
    assert w.grad is None
    _close(x.grad, [18.0, 64.0])  # 2 x w^2
    loss.backward(inputs=w, retain_graph=True)  # one Tensor
    _close(w.grad, [6.0, 32.0])  # 2 w x^2
    x.grad = None
    loss.backward(inputs=(x, x), retain_graph=True)  # a repeated input counts once
    _close(x.grad, [18.0, 64.0])
    loss.backward(inputs=[h])  # a non-leaf gets its .grad filled
    _close(h.grad, 2 * h.data)


def test_backward_inputs_runs_post_accumulate_hooks():
    x = _t([1.0, 2.0], requires_grad=True)
    got = []
    x.register_post_accumulate_grad_hook(lambda p: got.append(p.grad.copy()))
    (x * 5.0).sum().backward(inputs=[x])
    assert len(got) == 1 and np.array_equal(got[0], [5.0, 5.0])


@pytest.mark.parametrize("bad", [[], [np.ones(2)], "plain", "mixed"])
def test_backward_inputs_must_be_tensors_that_require_grad(bad):
    x = _t([1.0, 2.0], requires_grad=True)
    if bad == "plain":
        bad = [_t([1.0, 2.0])]
    elif bad == "mixed":
        bad = [x, np.ones(2)]
    with pytest.raises(ValueError, match="backward: inputs= must be"):
        (x * 2.0).sum().backward(inputs=bad)


def test_backward_inputs_with_create_graph():
    x = _t([1.0, 2.0], requires_grad=True)
    (x ** 3).sum().backward(inputs=[x], create_graph=True)
    assert type(x.grad) is np.ndarray
    _close(x.grad, [3.0, 12.0])


def test_grad_seed_with_create_graph_gives_differentiable_gradients():
    x = _t([1.0, 2.0], requires_grad=True)
    y = x ** 3
    (g,) = xpnn.grad(y, x, grad_outputs=np.array([1.0, 1.0]), create_graph=True)
    assert g.requires_grad and g.grad_fn is not None
    (gg,) = xpnn.grad(g.sum(), x)
    _close(gg, 6.0 * x.data)
    (g2,) = xpnn.grad((x ** 3).sum(), x, create_graph=True)
    assert g2.grad_fn is not None
    (g3,) = xpnn.grad(x ** 3, x, grad_outputs=xpnn.tensor(np.array([1.0, 2.0])), create_graph=True)
    _close(g3, [3.0, 24.0])
    (g4,) = xpnn.grad((x ** 3).sum(), x)  # without create_graph: values only
    assert g4.grad_fn is None and not g4.requires_grad


# --- operators ----------------------------------------------------------------------------------------------------

def _pair(torch):
    return _t(A), _t(B), torch.tensor(A), torch.tensor(B)


def test_binary_operators_match_torch_including_reflected(torch):
    a, b, ta, tb = _pair(torch)
    _close(a + b, ta + tb)
    _close(a - b, ta - tb)
    _close(a * b, ta * tb)
    _close(a / b, ta / tb)
    _close(abs(a) ** b, ta.abs() ** tb)
    _close(2.0 + a, 2.0 + ta)
    _close(2.0 - a, 2.0 - ta)
    _close(3.0 * a, 3.0 * ta)
    _close(2.0 / a, 2.0 / ta)
    _close(2.0 ** a, 2.0 ** ta)
    _close(a - 2.0, ta - 2.0)
    _close(a / 4.0, ta / 4.0)
    _close(a ** 2.0, ta ** 2.0)
    _close(-a, -ta)
    _close(abs(a), ta.abs())
    assert +a is a


def test_operators_with_a_numpy_array_on_the_left_use_the_reflected_methods(torch):
    a, b, ta, tb = _pair(torch)
    for res, ref in [(B + a, tb + ta), (B - a, tb - ta), (B * a, tb * ta), (B / a, tb / ta),
                     (np.abs(B) ** a, tb.abs() ** ta)]:
        assert isinstance(res, xpnn.Tensor)
        _close(res, ref)
    m = np.arange(6.0).reshape(3, 2)
    r = m @ a  # (3, 2) @ (2, 3)
    assert isinstance(r, xpnn.Tensor)
    _close(r, torch.tensor(m) @ ta)


def test_matmul_operator_and_method_record_both_sides(torch):
    x = _t(A, requires_grad=True)
    w = _t(B.T, requires_grad=True)  # (3, 2)
    y = x @ w
    _close(y, torch.tensor(A) @ torch.tensor(B.T))
    _close(x.matmul(w), torch.tensor(A) @ torch.tensor(B.T))
    (y.sum() + x.matmul(w).sum()).backward()
    xt = torch.tensor(A, requires_grad=True)
    wt = torch.tensor(B.T, requires_grad=True)
    ((xt @ wt).sum() * 2).backward()
    _close(x.grad, xt.grad)
    _close(w.grad, wt.grad)
    m = np.arange(6.0).reshape(2, 3)
    _close(m @ w, torch.tensor(m) @ torch.tensor(B.T))


def test_reflected_operators_differentiate_the_tensor_side(torch):
    x = _t([0.5, 2.0], requires_grad=True)
    xt = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    (2.0 - x + 3.0 / x + 2.0 ** x + 4.0 * x + 1.0 + x).sum().backward()
    (2.0 - xt + 3.0 / xt + 2.0 ** xt + 4.0 * xt + 1.0 + xt).sum().backward()
    _close(x.grad, xt.grad)


def test_getitem_indexes_and_records():
    x = _t(A, requires_grad=True)
    _close(x[1], A[1])
    _close(x[:, 1:], A[:, 1:])
    x[0, 2].backward()
    g = np.zeros_like(A)
    g[0, 2] = 1.0
    _close(x.grad, g)


# --- item assignment ------------------------------------------------------------------------------------------------

def test_setitem_writes_in_place_without_grad():
    t = _t([1.0, 2.0, 3.0])
    buf = t.data
    t[1] = 9.0
    t[xpnn.tensor(np.array([0]))] = xpnn.tensor(np.array([5.0]))
    t[2:] = np.array([7.0])
    assert t.data is buf and buf.tolist() == [5.0, 9.0, 7.0]


def test_setitem_refuses_to_drop_gradients():
    x = _t([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="item assignment.*this Tensor requires grad"):
        x[0] = 5.0
    t = _t([1.0, 2.0])
    with pytest.raises(RuntimeError, match="item assignment.*the value requires grad") as e:
        t[0] = x[1]
    assert "this Tensor requires grad" not in str(e.value)
    with xpnn.no_grad():
        x[0] = 5.0
        t[0] = x[1]
    assert x.data.tolist() == [5.0, 2.0] and t.data.tolist() == [2.0, 2.0]


def test_setitem_names_itself_when_backends_mix():
    t = _t([1.0, 2.0])
    with pytest.raises(NamespaceMismatchError, match="Tensor item assignment"):
        t[0] = xs.asarray(5.0, dtype=xs.float64)
    with pytest.raises(NamespaceMismatchError, match="Tensor item assignment"):
        t[0] = xpnn.tensor(xs.asarray(5.0, dtype=xs.float64))


# --- in-place operators ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sym", ["+", "-", "*", "/"])
def test_inplace_on_a_leaf_that_requires_grad_raises_naming_the_operator(sym):
    x = _t([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=f"Tensor \\{sym}=: a leaf Tensor that requires grad"):
        exec(f"x {sym}= 2.0", {"x": x})


_OPS = {"+": (lambda a, b: a + b), "-": (lambda a, b: a - b), "*": (lambda a, b: a * b), "/": (lambda a, b: a / b)}


def _iop(t, sym, other):
    if sym == "+":
        t += other
    elif sym == "-":
        t -= other
    elif sym == "*":
        t *= other
    else:
        t /= other
    return t


@pytest.mark.parametrize("sym", ["+", "-", "*", "/"])
def test_inplace_under_no_grad_updates_the_array_in_place(sym):
    for other in (4.0, np.array([4.0, 0.5]), xpnn.tensor(np.array([4.0, 0.5]))):
        x = _t([1.0, 2.0], requires_grad=True)
        buf = x.data
        with xpnn.no_grad():
            r = _iop(x, sym, other)
        o = other.data if isinstance(other, xpnn.Tensor) else other
        assert r is x and x.data is buf and x.requires_grad
        _close(buf, _OPS[sym](np.array([1.0, 2.0]), o))


@pytest.mark.parametrize("sym", ["+", "-", "*", "/"])
def test_inplace_with_grad_mode_rebinds_to_a_recorded_result(torch, sym):
    x = _t([1.0, 2.0], requires_grad=True)
    xt = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    y = x * 1.0
    y0 = y
    y = _iop(y, sym, 3.0)
    assert y is not y0 and y.grad_fn is not None and np.array_equal(y0.data, [1.0, 2.0])
    yt = xt * 1.0
    yt = _iop(yt, sym, 3.0)
    _close(y, yt)
    y.sum().backward()
    yt.sum().backward()
    _close(x.grad, xt.grad)
    t = _t([1.0, 2.0])  # no gradient involved: a new plain Tensor with the result
    t0 = t
    t = _iop(t, sym, 2.0)
    assert not t.requires_grad and t.grad_fn is None
    _close(t, _OPS[sym](np.array([1.0, 2.0]), 2.0))
    assert np.array_equal(t0.data, [1.0, 2.0])


@pytest.mark.parametrize("sym", ["+", "-", "*", "/"])
def test_inplace_under_no_grad_never_changes_a_recorded_value(sym):
    x = _t([1.0, 2.0], requires_grad=True)
    h = x * 2.0
    y = h * h  # saves h
    h0 = h
    with xpnn.no_grad():
        h = _iop(h, sym, xpnn.tensor(np.array([3.0, 3.0])))
    assert h is not h0 and np.array_equal(h0.data, [2.0, 4.0]) and h.grad_fn is None
    _close(h, _OPS[sym](np.array([2.0, 4.0]), 3.0))
    y.sum().backward()
    _close(x.grad, 8.0 * np.array([1.0, 2.0]))


@pytest.mark.parametrize("sym", ["+", "-", "*", "/"])
def test_inplace_names_the_operator_when_backends_mix(sym):
    t = _t([1.0, 2.0])
    with xpnn.no_grad():
        with pytest.raises(NamespaceMismatchError, match=f"Tensor \\{sym}="):
            _iop(t, sym, xs.asarray([1.0, 1.0], dtype=xs.float64))
        with pytest.raises(NamespaceMismatchError, match=f"Tensor \\{sym}="):
            _iop(t, sym, xpnn.tensor(xs.asarray([1.0, 1.0], dtype=xs.float64)))


class _Immutable:
    """An array without in-place operators (as JAX's): ``+=`` falls back to ``+``."""

    def __init__(self, v):
        self.v = np.asarray(v, dtype=np.float64)
        self.shape, self.dtype, self.ndim = self.v.shape, self.v.dtype, self.v.ndim

    def __add__(self, o):
        return _Immutable(self.v + o)


def test_inplace_on_an_array_without_inplace_operators_rebinds_data():
    t = xpnn.Tensor(_Immutable([1.0, 2.0]))
    with xpnn.no_grad():
        r = _iop(t, "+", 1.0)
    assert r is t and isinstance(t.data, _Immutable) and t.data.v.tolist() == [2.0, 3.0]


# --- comparisons ----------------------------------------------------------------------------------------------------

def test_comparisons_match_torch_and_never_record(torch):
    a = _t([1.0, 2.0, 3.0], requires_grad=True)
    b = np.array([2.0, 2.0, 2.0])
    ta, tb = torch.tensor([1.0, 2.0, 3.0]), torch.tensor(b)
    for other, tother in [(b, tb), (xpnn.tensor(b), tb), (2.0, 2.0)]:
        for res, ref in [(a < other, ta < tother), (a <= other, ta <= tother), (a > other, ta > tother),
                         (a >= other, ta >= tother), (a == other, ta == tother), (a != other, ta != tother)]:
            assert isinstance(res, xpnn.Tensor) and res.dtype == np.bool_
            assert not res.requires_grad and res.is_leaf and res.grad_fn is None
            assert res.numpy().tolist() == ref.tolist()


def test_comparisons_name_themselves_when_backends_mix():
    a = _t([1.0, 2.0])
    s = xs.asarray([1.0, 2.0], dtype=xs.float64)
    for other in (s, xpnn.tensor(s)):
        with pytest.raises(NamespaceMismatchError, match="Tensor comparison"):
            a < other
        with pytest.raises(NamespaceMismatchError, match="Tensor comparison"):
            a == other


def test_a_tensor_hashes_by_identity():
    a, b = _t([1.0]), _t([1.0])
    assert len({a, b}) == 2 and hash(a) == hash(a)


# --- method aliases -------------------------------------------------------------------------------------------------

def test_reductions_default_to_all_axes_without_keepdims(torch):
    x = _t(A)
    tx = torch.tensor(A)
    for name in ("sum", "mean"):
        _close(getattr(x, name)(), getattr(tx, name)())
        _close(getattr(x, name)(axis=0), getattr(tx, name)(dim=0))
        _close(getattr(x, name)(1, True), getattr(tx, name)(dim=1, keepdim=True))
        _close(getattr(x, name)(axis=1, keepdims=True), getattr(tx, name)(dim=1, keepdim=True))
    _close(x.max(), tx.max())
    _close(x.min(), tx.min())
    _close(x.max(axis=0), tx.amax(dim=0))
    _close(x.min(axis=1), tx.amin(dim=1))
    _close(x.max(1, True), tx.amax(dim=1, keepdim=True))
    _close(x.min(0, True), tx.amin(dim=0, keepdim=True))
    _close(x.min(axis=0, keepdims=True), tx.amin(dim=0, keepdim=True))
    _close(x.max(axis=1, keepdims=True), tx.amax(dim=1, keepdim=True))


def test_argmax_argmin_are_integer_tensors_without_grad(torch):
    x = _t(A, requires_grad=True)
    tx = torch.tensor(A)
    for name in ("argmax", "argmin"):
        r = getattr(x, name)()
        assert r.shape == () and r.item() == getattr(tx, name)().item()
        assert np.issubdtype(r.dtype, np.integer) and not r.requires_grad
        _close(getattr(x, name)(axis=1), getattr(tx, name)(dim=1))
        _close(getattr(x, name)(0), getattr(tx, name)(dim=0))
        _close(getattr(x, name)(axis=0, keepdims=True), getattr(tx, name)(dim=0, keepdim=True))
        _close(getattr(x, name)(1, True), getattr(tx, name)(dim=1, keepdim=True))


def test_reshape_and_permute_take_varargs_or_one_sequence(torch):
    x = _t(np.arange(24.0).reshape(2, 3, 4))
    tx = torch.arange(24.0, dtype=torch.float64).reshape(2, 3, 4)
    _close(x.reshape(4, 6), tx.reshape(4, 6))
    _close(x.reshape((6, 4)), tx.reshape((6, 4)))
    _close(x.reshape([3, 8]), tx.reshape([3, 8]))
    _close(x.reshape(24), tx.reshape(24))
    _close(x.permute_dims(2, 0, 1), tx.permute(2, 0, 1))
    _close(x.permute_dims((1, 2, 0)), tx.permute((1, 2, 0)))
    _close(x.permute_dims([2, 1, 0]), tx.permute([2, 1, 0]))
    v = _t([1.0, 2.0])
    _close(v.permute_dims(0), torch.tensor([1.0, 2.0]).permute(0))


def test_transpose_reverses_axes_or_permutes_them():
    x = _t(np.arange(24.0).reshape(2, 3, 4))
    a = np.arange(24.0).reshape(2, 3, 4)
    _close(x.transpose(), a.transpose())
    _close(x.transpose(1, 0, 2), a.transpose(1, 0, 2))
    _close(x.transpose((2, 0, 1)), a.transpose((2, 0, 1)))
    _close(_t(A).transpose(), A.T)
    _close(_t([1.0, 2.0]).transpose(), [1.0, 2.0])
    _close(_t(A).T, A.T)
    with pytest.raises(ShapeError, match="Tensor.T"):
        x.T


def test_elementwise_methods_match_torch(torch):
    x = _t(np.abs(A) + 0.5, requires_grad=True)
    tx = torch.tensor(np.abs(A) + 0.5)
    a = _t(A)
    ta = torch.tensor(A)
    _close(x.exp(), tx.exp())
    _close(x.log(), tx.log())
    _close(x.sqrt(), tx.sqrt())
    _close(a.abs(), ta.abs())
    _close(a.tanh(), ta.tanh())
    _close(a.sigmoid(), ta.sigmoid())
    _close(a.relu(), ta.relu())
    _close(a.clip(-1.0, 2.0), ta.clip(-1.0, 2.0))
    _close(a.clip(min=0.0), ta.clip(min=0.0))
    _close(a.clip(max=0.0), ta.clip(max=0.0))
    _close(a.clip(None, 1.0), ta.clip(None, 1.0))
    y = x.log()
    assert y.grad_fn is not None
    for m in ("exp", "sqrt", "tanh", "sigmoid", "relu", "abs"):
        assert getattr(x, m)().grad_fn is not None


def test_softmax_family_methods_default_to_the_last_axis(torch):
    a = _t(A)
    ta = torch.tensor(A)
    _close(a.softmax(), ta.softmax(dim=-1))
    _close(a.softmax(0), ta.softmax(dim=0))
    _close(a.softmax(axis=0), ta.softmax(dim=0))
    _close(a.log_softmax(), ta.log_softmax(dim=-1))
    _close(a.log_softmax(0), ta.log_softmax(dim=0))
    _close(a.log_softmax(axis=0), ta.log_softmax(dim=0))
    _close(a.logsumexp(), ta.logsumexp(dim=-1))
    _close(a.logsumexp(0), ta.logsumexp(dim=0))
    _close(a.logsumexp(axis=0, keepdims=True), ta.logsumexp(dim=0, keepdim=True))
    _close(a.logsumexp(1, True), ta.logsumexp(dim=1, keepdim=True))


def test_astype_casts_and_the_gradient_comes_back_in_the_input_dtype():
    x = _t([1.0, 2.0], requires_grad=True)
    y = x.astype("float32")
    assert y.dtype == np.float32 and y.grad_fn is not None
    y.sum().backward()
    assert x.grad.dtype == np.float64 and np.array_equal(x.grad, [1.0, 1.0])
    assert _t([1.5]).astype(np.int64).dtype == np.int64


# --- op outputs -----------------------------------------------------------------------------------------------------

def test_op_outputs_record_only_when_needed():
    x = _t([1.0, 2.0], requires_grad=True)
    p = _t([1.0, 2.0])
    y = x * p
    assert y.requires_grad and y.grad_fn is not None and not y.is_leaf and y.grad is None
    z = p * 2.0
    assert z.requires_grad is False and z.grad_fn is None and z.is_leaf and z.grad is None
    with xpnn.no_grad():
        w = x * 2.0
    assert w.requires_grad is False and w.grad_fn is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        z.sum().backward()
    u = x * np.array([3.0, 4.0])  # an array constant
    u.sum().backward()
    _close(x.grad, [3.0, 4.0])


class _Split(Op):
    """Two outputs: x * 2 (differentiable) and x > 0 (not)."""

    name = "split_test"
    differentiable_outputs = (0,)
    seen: list = []

    @staticmethod
    def forward(ctx, x, c):
        _Split.seen.append(ctx.needs_input_grad)
        return x * 2.0, x > 0

    @staticmethod
    def backward(ctx, g, gm):
        _Split.seen.append(("backward", type(g), gm))
        return g * 2.0, None


class _Pair(Op):
    """Two differentiable outputs: x * 2 and x * 3."""

    name = "pair_test"

    @staticmethod
    def forward(ctx, x):
        return x * 2.0, x * 3.0

    @staticmethod
    def backward(ctx, g1, g2):
        return g1 * 2.0 + g2 * 3.0


def test_multi_output_ops_mark_only_differentiable_outputs():
    x = _t([1.0, -2.0], requires_grad=True)
    _Split.seen.clear()
    a, m = _Split.apply(x, np.array([1.0, 1.0]))
    assert _Split.seen == [(True, False)]  # needs_input_grad: the Tensor yes, the array constant no
    assert a.requires_grad and a.grad_fn is not None
    assert not m.requires_grad and m.dtype == np.bool_ and m.numpy().tolist() == [True, False]
    a.sum().backward()
    _close(x.grad, [2.0, 2.0])
    # the backward gets an array for the differentiable output and None (not zeros) for the other
    assert _Split.seen[-1] == ("backward", np.ndarray, None)
    with xpnn.no_grad():
        b, n = _Split.apply(x, 1.0)
    assert not b.requires_grad and b.grad_fn is None and n.grad_fn is None and b.is_leaf
    _close(b, [2.0, -4.0])
    p, q = _Split.apply(_t([1.0]), 1.0)
    assert p.is_leaf and q.is_leaf and p.requires_grad is False and q.requires_grad is False


def test_multi_output_op_with_a_dropped_output_gets_zeros_for_it():
    x = _t([1.0, 2.0], requires_grad=True)
    y = _Pair.apply(x)[1]  # the first output is dropped (freed at once: nothing else refers to it)
    y.sum().backward()
    _close(x.grad, [3.0, 3.0])
    x.grad = None
    a, b = _Pair.apply(x)
    (a.sum() + b.sum()).backward()
    _close(x.grad, [5.0, 5.0])
    x.grad = None
    a, b = _Pair.apply(x)
    a.sum().backward()
    _close(x.grad, [2.0, 2.0])


class _ReturnsTensor(Op):
    name = "returns_tensor_test"

    @staticmethod
    def forward(ctx, x, scale=None):
        return xpnn.tensor(x)

    @staticmethod
    def backward(ctx, g):
        return g


class _ReturnsJunk(Op):
    name = "returns_junk_test"
    junk: object = None

    @staticmethod
    def forward(ctx, x):
        return _ReturnsJunk.junk

    @staticmethod
    def backward(ctx, g):
        return g


class _Returns0d(Op):
    """A sum written on arrays; records the type of the gradient its backward gets."""

    name = "returns_0d_test"
    got: list = []

    @staticmethod
    def forward(ctx, x):
        ctx.n = x.shape[0]
        return ctx.xp.sum(x)  # ctx.xp: the namespace of the call's arrays

    @staticmethod
    def backward(ctx, g):
        _Returns0d.got.append(type(g))
        return F.broadcast_to(g, (ctx.n,)) if isinstance(g, xpnn.Tensor) else g * np.ones(ctx.n)


def test_user_op_forward_must_return_arrays():
    x = _t([1.0, 2.0])
    with pytest.raises(TypeError, match="returns_tensor_test: forward returned a Tensor; forward runs on arrays: call"):
        _ReturnsTensor.apply(x)
    with pytest.raises(TypeError, match="keyword argument\\(s\\) scale were Tensors"):
        _ReturnsTensor.apply(x, scale=xpnn.tensor(np.ones(1)))
    for junk in ([1.0, 2.0], _ShapeOnly(), _DTypeOnly()):
        _ReturnsJunk.junk = junk
        with pytest.raises(TypeError, match="returns_junk_test: forward must return an array"):
            _ReturnsJunk.apply(x)
    r = _Returns0d.apply(_t([1.0, 2.0, 3.0]))
    assert r.shape == () and r.item() == 6.0


def test_a_user_ops_backward_gets_arrays_unless_the_backward_is_recorded():
    x = _t([1.0, 2.0, 3.0], requires_grad=True)
    _Returns0d.got.clear()
    _Returns0d.apply(x).backward()  # the implicit seed reaches the op's backward directly
    (g,) = xpnn.grad(_Returns0d.apply(x), x)
    _Returns0d.apply(x).backward(np.array(2.0))
    _Returns0d.apply(x).backward(xpnn.tensor(np.array(0.5)))
    assert _Returns0d.got == [np.ndarray] * 4
    _close(x.grad, [3.5, 3.5, 3.5])
    _close(g, [1.0, 1.0, 1.0])
    _Returns0d.got.clear()  # create_graph records the backward: every op's backward runs on Tensors
    (_Returns0d.apply(x) * 2.0).backward(create_graph=True)
    (_Returns0d.apply(x) * 2.0).backward(inputs=[x], create_graph=True)
    assert _Returns0d.got == [xpnn.Tensor, xpnn.Tensor]
    assert type(x.grad) is np.ndarray
    _close(x.grad, [7.5, 7.5, 7.5])


def test_gradients_are_differentiable_with_respect_to_grad_outputs(torch):
    x = _t([1.0, 2.0], requires_grad=True)
    v = _t([0.5, -1.0], requires_grad=True)
    (g,) = xpnn.grad(x ** 3, x, grad_outputs=v, create_graph=True)  # a vector-Jacobian product
    (gv,) = xpnn.grad(g.sum(), v)
    xt = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    vt = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    (gt,) = torch.autograd.grad(xt ** 3, xt, grad_outputs=vt, create_graph=True)
    (gvt,) = torch.autograd.grad(gt.sum(), vt)
    _close(g, gt)
    _close(gv, gvt)


def test_tensor_with_a_backend_converts_lists_and_foreign_arrays():
    t = xpnn.tensor([1.0, 2.0], backend=xs)
    assert t.backend == xpnn.get_backend(xs) and t.dtype == xs.float64
    assert xpnn.tensor([1.0, 2.0], backend=xs, dtype="float32").dtype == xs.float32
    # an array on another device (as a GPU array) comes to the host through the backend, never np.asarray
    far = xs.asarray([1.0, 2.0], device=xs.Device("device1"))
    with pytest.raises(RuntimeError):
        np.asarray(far)
    n = xpnn.tensor(far, backend="numpy")
    assert type(n.data) is np.ndarray and n.numpy().tolist() == [1.0, 2.0]
    n32 = xpnn.tensor(xs.asarray([1.0, 2.0], dtype=xs.float64), backend="numpy", dtype="float32")
    assert type(n32.data) is np.ndarray and n32.dtype == np.float32


def test_naming_the_backend_an_array_is_on_changes_nothing(torch):
    a = np.array([1.0, 2.0])
    for kw in ({}, {"backend": "numpy"}, {"backend": xpnn.get_backend("numpy")}):
        assert xpnn.tensor(a, **kw).data is a
        c = xpnn.tensor(a, dtype="float64", **kw)  # a cast makes a new array, as torch.tensor(a, dtype=...)
        assert c.dtype == np.float64 and not np.shares_memory(c.data, a)


def test_first_gradient_is_a_private_copy():
    x = _t([1.0, 2.0], requires_grad=True)
    seed = np.array([1.0, 1.0])
    x.backward(seed)  # a leaf's gradient is the seed itself
    seed[0] = 5.0
    assert x.grad.tolist() == [1.0, 1.0]
    a, b = _t([1.0], requires_grad=True), _t([2.0], requires_grad=True)
    (a + b).backward(np.array([1.0]))  # add hands the same gradient to both inputs
    (a + b).backward(np.array([1.0]))
    assert a.grad.tolist() == [2.0] and b.grad.tolist() == [2.0]


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_tensor_computed_by_ops_pickles_as_a_leaf(how):
    """Pickling (or deep-copying) a Tensor with history gives a leaf with its values and ``requires_grad``, as
    ``torch.Tensor`` pickles (it failed on the history's weak references); the original graph still backpropagates."""
    import copy
    import pickle

    x = xpnn.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = x * 2.0
    z = pickle.loads(pickle.dumps(y)) if how == "pickle" else copy.deepcopy(y)
    assert type(z) is xpnn.Tensor and z.requires_grad and z.is_leaf
    np.testing.assert_array_equal(z.data, y.data)
    assert not np.shares_memory(z.data, y.data)
    z.sum().backward()
    np.testing.assert_array_equal(z.grad, np.ones(3))
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.full(3, 2.0))
    leaf = pickle.loads(pickle.dumps(x.detach()))
    assert leaf.is_leaf and not leaf.requires_grad
