"""Autograd used as a PyTorch user would: in-place operators, item assignment, frozen parameters
in an optimizer, custom ops that break the backward contract, ``pow`` at zero, ``clip`` with Tensor bounds,
array_api_strict indexing and second order, modules with a hand-written backward on the tape, and the PyTorch
spellings that were missing (``concat``/``stack``, ``argmax``, ``backward(inputs=)``, ``to(dtype)``, format).
Most tests are programs that went wrong before their fix (wrong value, confusing error or silent NaN); the others
guard the side of a fix that already worked (recorded ops on non-leaves, single use of a module, masks' values)."""
from __future__ import annotations

import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import nn, optim
from xpnn.autograd import Op
from xpnn.errors import ShapeError

RNG = np.random.default_rng(8)


def _data(n=16, d=4, c=3):
    return RNG.standard_normal((n, d)).astype(np.float32), RNG.integers(0, c, n)


# --- in-place operators ---------------------------------------------------------------------------------------
def test_manual_sgd_update_under_no_grad_stays_a_leaf_in_place():
    """``with no_grad(): w -= lr * w.grad`` (the PyTorch manual-SGD loop) updates ``w`` in place and keeps it a
    leaf that requires grad, so the next iteration's backward reaches it again."""
    X, y = _data()
    w = xpnn.tensor(RNG.standard_normal((4, 3)), requires_grad=True)
    arr = w.data
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(xpnn.tensor(X.astype(np.float64)) @ w, y)
        loss.backward()
        with xpnn.no_grad():
            w -= 0.5 * w.grad
        w.grad = None
        losses.append(loss.item())
    assert w.is_leaf and w.requires_grad and w.data is arr
    assert losses[-1] < losses[0]


def test_inplace_ops_on_parameter_under_no_grad_keep_the_flat_buffer_view():
    model = nn.Linear(4, 3, seed=0)
    model.flat_buffer()  # pack the parameters into one buffer
    w = model.weight
    view, before = w.data, w.numpy()
    with xpnn.no_grad():
        w *= 2.0
        w += 1.0
        w /= 4.0
        w -= xpnn.tensor(np.full((3, 4), 0.25, np.float32))
    assert w.data is view
    np.testing.assert_allclose(w.numpy(), (before * 2 + 1) / 4 - 0.25, rtol=1e-6)


def test_inplace_op_on_leaf_that_requires_grad_raises_like_pytorch():
    w = xpnn.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"leaf Tensor that requires grad.*no_grad"):
        w += 1.0
    np.testing.assert_array_equal(w.data, np.ones(3))


def test_inplace_op_on_non_leaf_is_recorded():
    x = xpnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x * 3
    y += x * x
    y *= 2.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * (3 + 2 * np.array([1.0, 2.0])))


def test_inplace_op_under_grad_mode_never_changes_values_a_graph_saved():
    """``x += 1`` on data that an op saved for backward (no version counter here) must not change the saved
    values: under grad mode the operator rebinds ``x`` to a new Tensor."""
    arr = np.array([[1.0, 2.0]])
    x = xpnn.tensor(arr)
    w = xpnn.tensor(np.array([[3.0], [4.0]]), requires_grad=True)
    loss = (x @ w).sum()
    x += 1.0
    loss.backward()
    np.testing.assert_array_equal(arr, [[1.0, 2.0]])
    np.testing.assert_allclose(w.grad, [[1.0], [2.0]])


# --- item assignment ------------------------------------------------------------------------------------------
def test_item_assignment_on_tensor_without_grad():
    t = xpnn.tensor(np.zeros(4))
    t[0] = 1.0
    t[np.array([False, True, False, True])] = xpnn.tensor(np.array([2.0, 3.0]))
    t[-1:] = 5
    np.testing.assert_array_equal(t.data, [1.0, 2.0, 0.0, 5.0])
    m = xpnn.tensor(np.zeros((2, 3)))
    m[xpnn.tensor(np.array([True, False]))] = 1.0
    m[:, xpnn.tensor(np.array([2]))] = 7.0
    np.testing.assert_array_equal(m.data, [[1.0, 1.0, 7.0], [0.0, 0.0, 7.0]])


def test_item_assignment_that_would_need_a_gradient_raises_clearly():
    w = xpnn.tensor(np.zeros(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Tensor item assignment.*not recorded"):
        w[0] = 1.0
    t = xpnn.tensor(np.zeros(3))
    with pytest.raises(RuntimeError, match=r"Tensor item assignment.*not recorded"):
        t[0] = w[1]


# --- frozen parameters ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.1),
], ids=["sgd-momentum-wd", "adam-wd"])
def test_optimizer_leaves_frozen_parameters_alone(make):
    """PyTorch: a parameter with ``requires_grad=False`` gets no ``.grad``, so an optimizer given
    ``model.parameters()`` skips it (no weight decay, no momentum)."""
    X, y = _data()
    model = nn.Sequential(nn.Linear(4, 5, seed=0), nn.ReLU(), nn.Linear(5, 3, seed=1))
    for p in model[0].parameters():
        p.requires_grad_(False)
    frozen = [p.numpy() for p in model[0].parameters()]
    trained = model[2].weight.numpy()
    opt = make(model.parameters())
    for _ in range(3):
        opt.zero_grad()
        nn.CrossEntropyLoss()(model(xpnn.tensor(X)), y).backward()
        opt.step()
    for p, before in zip(model[0].parameters(), frozen):
        np.testing.assert_array_equal(p.numpy(), before)
    assert np.abs(model[2].weight.numpy() - trained).max() > 0
    for p in model[0].parameters():  # unfrozen again: trained again
        p.requires_grad_(True)
    opt.zero_grad()
    nn.CrossEntropyLoss()(model(xpnn.tensor(X)), y).backward()
    opt.step()
    assert np.abs(model[0].weight.numpy() - frozen[0]).max() > 0


# --- custom ops that break the backward contract ----------------------------------------------------------------
class _UnreducedMul(Op):
    """Broken on purpose: backward returns ``g`` for ``w`` without summing the broadcast axis back."""

    name = "unreduced_mul"

    @staticmethod
    def forward(ctx, x, w):
        return x * w

    @staticmethod
    def backward(ctx, g):
        return g, g


class _NumpyBackward(Op):
    """A backward written with NumPy calls instead of ``xpnn.functional`` ops (works, but not differentiable)."""

    name = "np_sin"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * np.cos(x)


def test_custom_op_gradient_of_wrong_shape_names_the_op():
    x = xpnn.tensor(np.ones((2, 3)), requires_grad=True)
    w = xpnn.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ShapeError, match=r"unreduced_mul.*\(2, 3\).*\(3,\)"):
        _UnreducedMul.apply(x, w).sum().backward()
    with pytest.raises(ShapeError, match=r"unreduced_mul"):
        _UnreducedMul.apply(x * 1.0, w * 1.0).sum().backward()


def test_custom_op_with_numpy_backward_under_create_graph_names_the_op():
    x = xpnn.tensor(np.array([0.5, 1.0]), requires_grad=True)
    (g,) = xpnn.grad(_NumpyBackward.apply(x).sum(), x)  # first order works
    np.testing.assert_allclose(g.data, np.cos([0.5, 1.0]))
    with pytest.raises(TypeError, match=r"np_sin: backward.*create_graph.*xpnn.functional"):
        xpnn.grad(_NumpyBackward.apply(x).sum(), x, create_graph=True)


# --- pow at zero (PyTorch's masks) ----------------------------------------------------------------------------
def test_pow_gradients_at_zero_are_finite_like_pytorch():
    """d(a**b)/da is 0 where b == 0 (0 * inf before), d(a**b)/db is 0 where a == 0 and b >= 0 (0 * log 0)."""
    a = xpnn.tensor(np.array([0.0, 3.0, 0.0]), requires_grad=True)
    b = xpnn.tensor(np.array([2.0, 2.0, 0.0]), requires_grad=True)
    with np.errstate(all="ignore"):
        (a ** b).sum().backward()
    np.testing.assert_allclose(a.grad, [0.0, 6.0, 0.0])
    np.testing.assert_allclose(b.grad, [0.0, 9.0 * np.log(3.0), 0.0])
    z = xpnn.tensor(np.array([0.0, 2.0]), requires_grad=True)
    with np.errstate(all="ignore"):
        (z ** 0.0).sum().backward()
    np.testing.assert_array_equal(z.grad, [0.0, 0.0])


def test_pow_masked_gradients_match_finite_differences_and_second_order():
    a0, b0 = np.array([0.7, 1.3, 2.0]), np.array([2.0, 0.0, 1.5])
    a = xpnn.tensor(a0, requires_grad=True)
    b = xpnn.tensor(b0, requires_grad=True)
    ga, gb = xpnn.grad((a ** b).sum(), [a, b], create_graph=True)
    eps = 1e-6
    np.testing.assert_allclose(ga.data, (((a0 + eps) ** b0) - ((a0 - eps) ** b0)) / (2 * eps), atol=1e-6)
    np.testing.assert_allclose(gb.data, ((a0 ** (b0 + eps)) - (a0 ** (b0 - eps))) / (2 * eps), atol=1e-6)
    (haa,) = xpnn.grad(ga.sum(), a)
    np.testing.assert_allclose(haa.data, b0 * (b0 - 1) * a0 ** (b0 - 2), atol=1e-9)


# --- clip with Tensor bounds ----------------------------------------------------------------------------------
def test_clip_with_tensor_bounds():
    x = xpnn.tensor(np.array([-2.0, 0.5, 3.0]), requires_grad=True)
    lo, hi = xpnn.tensor(np.array([-1.0, -1.0, -1.0])), xpnn.tensor(np.array([1.0, 1.0, 2.0]))
    y = x.clip(lo, hi)
    np.testing.assert_array_equal(y.data, [-1.0, 0.5, 2.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 0.0])
    bound = xpnn.tensor(np.zeros(3), requires_grad=True)
    with pytest.raises(NotImplementedError, match=r"clip: .*requires grad"):
        x.clip(min=bound)


# --- requires_grad assigned as an attribute -------------------------------------------------------------------
def test_requires_grad_attribute_is_checked_like_requires_grad_():
    """``t.requires_grad = True`` on an integer Tensor was accepted, and backward then truncated the gradient into
    an int64 ``.grad`` (2.5 -> 2) silently; PyTorch refuses both assignments below."""
    from xpnn.errors import DTypeError

    a = xpnn.tensor(np.array([1, 2]))
    with pytest.raises(DTypeError, match="only floating tensors can require gradients"):
        a.requires_grad = True
    assert a.requires_grad is False
    x = xpnn.tensor(np.ones(2), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="non-leaf.*detach"):
        y.requires_grad = False
    w = nn.Linear(2, 2, seed=0).weight
    w.requires_grad = False
    assert not w.requires_grad and w.is_leaf


# --- indexing on array_api_strict -----------------------------------------------------------------------------
def test_index_on_array_api_strict_basic_keys_and_boolean_masks():
    """``x[0]``/``x[-1, ::2]`` of a matrix (the standard wants the trailing ``...`` NumPy implies) and boolean masks
    (the backward's integer-array scatter failed inside ``arange`` on a bool mask) on array_api_strict."""
    xs = pytest.importorskip("array_api_strict")
    base = np.arange(12.0).reshape(4, 3)
    for key, np_key in [(1, 1), (-1, -1), ((-1, slice(None, None, 2)), (-1, slice(None, None, 2))),
                        (xs.asarray([True, False, True, True]), np.array([True, False, True, True])),
                        (xs.asarray(base > 5), base > 5)]:
        x = xpnn.tensor(xs.asarray(base), requires_grad=True)
        out = x[key]
        np.testing.assert_array_equal(np.asarray(out.data), base[np_key])
        (out * out).sum().backward()
        expect = np.zeros_like(base)
        expect[np_key] = 2 * base[np_key]
        np.testing.assert_array_equal(np.asarray(x.grad), expect)


class _ScaleByKeyword(Op):
    name = "scale_by_keyword"

    @staticmethod
    def forward(ctx, x, factor=2.0):
        ctx.factor = factor
        return x * factor

    @staticmethod
    def backward(ctx, g):
        return g * ctx.factor


class _ReturnsFloat(Op):
    name = "returns_float"

    @staticmethod
    def forward(ctx, x):
        return float(x.sum())

    @staticmethod
    def backward(ctx, g):
        return g


def test_custom_op_forward_output_is_checked():
    """A Tensor passed as a keyword parameter made forward return a Tensor, which was wrapped inside another Tensor
    (its gradient silently lost; a later op failed with 'expected arrays, got Tensor'); a forward returning a
    Python float gave a Tensor without shape."""
    x = xpnn.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(TypeError, match=r"scale_by_keyword: forward returned a Tensor.*keyword.*factor"):
        _ScaleByKeyword.apply(x, factor=xpnn.tensor(np.array(3.0), requires_grad=True))
    out = _ScaleByKeyword.apply(x, factor=3.0)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])
    with pytest.raises(TypeError, match=r"returns_float: forward must return an array.*float"):
        _ReturnsFloat.apply(x)


# --- formatting -------------------------------------------------------------------------------------------------
def test_format_of_a_0d_tensor_like_pytorch():
    """``f"{loss:.4f}"`` in a training loop (PyTorch formats a 0-d tensor as its number)."""
    loss = (xpnn.tensor(np.array([1.0, 2.5]), requires_grad=True) ** 2).mean()
    assert f"{loss:.3f}" == "3.625"
    assert f"{xpnn.tensor(np.float32(0.5))}" == "0.5"  # (torch.Tensor.__format__ too)
    assert f"{xpnn.tensor(np.ones(2))}" == str(xpnn.tensor(np.ones(2)))
    with pytest.raises(TypeError):
        f"{xpnn.tensor(np.ones(2)):.2f}"


def test_optimizer_given_a_plain_tensor_says_how_to_make_a_parameter():
    w = xpnn.tensor(np.zeros(3), requires_grad=True)
    with pytest.raises(TypeError, match=r"SGD: can only optimize xpnn.nn.Parameter.*nn.Parameter\(array\)"):
        optim.SGD([w], lr=0.1)
    p = nn.Parameter(np.zeros(3))
    opt = optim.SGD([p], lr=0.5)
    ((xpnn.tensor(np.ones(3)) - p) ** 2).sum().backward()
    opt.step()
    np.testing.assert_allclose(p.data, [1.0, 1.0, 1.0])


def test_tensor_to_takes_a_dtype_in_place_of_the_backend_like_module_to():
    """``t.to(np.float32)`` (PyTorch's ``t.to(torch.float32)``) failed: 'backend must be a name ... not type'."""
    x = xpnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    for d in (np.float32, "float32", np.dtype("float32")):
        y = x.to(d)
        assert y.dtype == np.float32
    (x.to(np.float32) * 3).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


# --- modules with a hand-written backward on the tape -----------------------------------------------------------
class _OldScale(nn.Module):
    """The first version's protocol: forward keeps its input on the module, backward reads it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(np.array([2.0]))

    def forward(self, x):
        self.x = x
        return x * self.w.data

    def backward(self, dy):
        self.w.grad += np.reshape((dy * self.x).sum(), (1,))
        return dy * self.w.data


def test_hand_written_backward_module_once_per_graph_is_right():
    m = _OldScale()
    x = xpnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    (m(x) * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])
    np.testing.assert_array_equal(m.w.grad, [9.0])


def test_xpnn_grad_for_the_parameter_of_a_hand_written_backward_module_says_why_unused():
    m = _OldScale()
    x = xpnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"not used.*hand-written backward.*loss.backward\(\)"):
        xpnn.grad(m(x).sum(), m.w)
    with pytest.raises(RuntimeError, match=r"not used to compute the outputs \(shape \(2,\)\); pass allow_unused=True to get None for it$"):
        xpnn.grad(m(x).sum(), xpnn.tensor(np.ones(2), requires_grad=True))


def test_hand_written_backward_module_called_again_before_backward_raises():
    """Used twice in one graph (w.grad was 18 instead of 24), or called again under no_grad between a forward and
    its backward (w.grad was 20 instead of 3): the hand-written backward read the last call's input silently."""
    m = _OldScale()
    x = xpnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"OldScale.*hand-written backward.*1 more time"):
        m(m(x)).sum().backward()
    out = m(x).sum()
    with xpnn.no_grad():
        m(xpnn.tensor(np.array([10.0, 10.0])))
    with pytest.raises(RuntimeError, match=r"hand-written backward"):
        out.backward()


def test_iteration_over_a_tensor():
    """Iterating a 0-d Tensor gave an empty loop silently (IndexError ended the __getitem__ protocol)."""
    with pytest.raises(TypeError, match="0-d"):
        list(xpnn.tensor(np.array(1.0)))
    x = xpnn.tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    rows = list(x)
    assert [r.shape for r in rows] == [(2,)] * 3
    a, b, c = x
    (a * 1 + c * 2).sum().backward()
    np.testing.assert_array_equal(x.grad, [[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]])


# --- concat / stack (torch.cat / torch.stack had no counterpart: xpnn.tensor([a, b]) drops the graph) ----------
def _numgrad(f, arrays, i, eps=1e-6):
    g = np.zeros_like(arrays[i])
    for idx in np.ndindex(arrays[i].shape):
        plus = [a.copy() for a in arrays]
        minus = [a.copy() for a in arrays]
        plus[i][idx] += eps
        minus[i][idx] -= eps
        g[idx] = (f(*plus) - f(*minus)) / (2 * eps)
    return g


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat_and_stack_gradients_match_finite_differences(axis):
    arrays = [RNG.standard_normal((2, 3)), RNG.standard_normal((2, 3))]
    w_cat = RNG.standard_normal(np.concatenate(arrays, axis=axis).shape)
    w_stack = RNG.standard_normal(np.stack(arrays, axis=axis).shape)

    def value(*arrs):
        return float((np.concatenate(arrs, axis=axis) * w_cat).sum() + (np.stack(arrs, axis=axis) ** 2 * w_stack).sum())

    ts = [xpnn.tensor(a, requires_grad=True) for a in arrays]
    out = (F.concat(ts, axis=axis) * xpnn.tensor(w_cat)).sum() + (F.stack(ts, axis=axis) ** 2 * xpnn.tensor(w_stack)).sum()
    np.testing.assert_allclose(out.item(), value(*arrays))
    out.backward()
    for i, t in enumerate(ts):
        np.testing.assert_allclose(t.grad, _numgrad(value, arrays, i), atol=1e-6)


def test_concat_mixed_inputs_second_order_and_arrays():
    a = xpnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    c = np.array([5.0])
    y = F.concat([a * a, c, a], axis=0)
    assert y.shape == (5,)
    (g,) = xpnn.grad((y ** 2).sum(), a, create_graph=True)  # d/da (a^4 + a^2) = 4a^3 + 2a
    np.testing.assert_allclose(g.data, 4 * a.data ** 3 + 2 * a.data)
    (h,) = xpnn.grad(g.sum(), a)
    np.testing.assert_allclose(h.data, 12 * a.data ** 2 + 2)
    out = F.stack([np.ones(2), np.zeros(2)], axis=1)
    assert type(out) is np.ndarray and out.shape == (2, 2)
    with pytest.raises(ShapeError, match="stack: inputs must have one shape"):
        F.stack([np.ones(2), np.ones(3)])
    with pytest.raises(ShapeError, match="concat: inputs must have the same number of dimensions"):
        F.concat([np.ones(2), np.ones((1, 2))])


def test_concat_on_array_api_strict():
    xs = pytest.importorskip("array_api_strict")
    a = xpnn.tensor(xs.asarray([[1.0, 2.0]]), requires_grad=True)
    b = xpnn.tensor(xs.asarray([[3.0, 4.0], [5.0, 6.0]]), requires_grad=True)
    (F.concat([a, b]) * xpnn.tensor(xs.asarray([[1.0], [2.0], [3.0]]))).sum().backward()
    np.testing.assert_array_equal(np.asarray(a.grad), [[1.0, 1.0]])
    np.testing.assert_array_equal(np.asarray(b.grad), [[2.0, 2.0], [3.0, 3.0]])


def test_argmax_for_accuracy_like_pytorch():
    """``(logits.argmax(axis=1) == y).astype("float32").mean()`` (PyTorch's ``argmax(dim=1)``) had no method."""
    logits = xpnn.tensor(np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]]), requires_grad=True)
    pred = logits.argmax(axis=1)
    assert not pred.requires_grad and pred.shape == (2,)
    np.testing.assert_array_equal(pred.data, [1, 0])
    np.testing.assert_array_equal(logits.argmin(axis=1, keepdims=True).data, [[2], [1]])
    assert (pred == xpnn.tensor(np.array([1, 2]))).astype("float32").mean().item() == 0.5
    assert int(logits.argmax()) == 3


def test_backward_with_inputs_accumulates_only_there():
    """PyTorch's ``loss.backward(inputs=[...])`` (was a TypeError: unexpected keyword)."""
    a = xpnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = xpnn.tensor(np.array([3.0, 4.0]), requires_grad=True)
    h = a * b
    loss = (h * h).sum()
    loss.backward(inputs=[a], retain_graph=True)
    np.testing.assert_allclose(a.grad, 2 * (a.data * b.data) * b.data)
    assert b.grad is None
    loss.backward(inputs=a, retain_graph=True)  # accumulates
    np.testing.assert_allclose(a.grad, 4 * (a.data * b.data) * b.data)
    loss.backward(inputs=[h])  # a non-leaf input gets its .grad too
    np.testing.assert_allclose(h.grad, 2 * h.data)
    with pytest.raises(ValueError, match="inputs="):
        (a * 2).sum().backward(inputs=[])


def test_missing_pytorch_hooks_say_what_to_use():
    t = xpnn.tensor(np.ones(2), requires_grad=True) * 2
    with pytest.raises(NotImplementedError, match=r"register_hook.*register_post_accumulate_grad_hook.*inputs="):
        t.register_hook(lambda g: g)
    with pytest.raises(NotImplementedError, match=r"retain_grad.*xpnn.grad"):
        t.retain_grad()


def test_gradient_of_another_dtype_is_cast_into_a_leaf_on_array_api_strict():
    """A float64 constant in a float32 model sends float64 gradients to float32 leaves; NumPy cast them in the
    in-place add, array_api_strict refused it (TypeError: Cannot perform __iadd__ with float32 and float64)."""
    xs = pytest.importorskip("array_api_strict")
    m = nn.Linear(2, 2, seed=0).to(xs)
    x = xpnn.tensor(xs.asarray([[1.0, 2.0]], dtype=xs.float32))
    c = xpnn.tensor(xs.asarray([[1.0, 3.0]], dtype=xs.float64))
    for _ in range(2):
        (m(x) * c).sum().backward()
    assert m.weight.grad.dtype == xs.float32
    np.testing.assert_allclose(np.asarray(m.weight.grad), 2 * np.array([[1.0, 2.0], [3.0, 6.0]]))
    w = xpnn.tensor(xs.asarray([1.0], dtype=xs.float32), requires_grad=True)
    for _ in range(2):
        (w * c[0, :1]).sum().backward()
    assert w.grad.dtype == xs.float32
    np.testing.assert_allclose(np.asarray(w.grad), [2.0])


def test_batch_norm_with_tensor_running_statistics():
    """``F.batch_norm(x, rm, rv, training=True)`` with Tensors (as ``torch.nn.functional.batch_norm`` takes them):
    the running statistics were rebound inside the op and never updated, and ``training=False`` failed with
    NumPy's 'operand Tensor does not support ufuncs'."""
    data = np.arange(12.0).reshape(4, 3)
    x = xpnn.tensor(data, requires_grad=True)
    rm, rv = xpnn.tensor(np.zeros(3)), xpnn.tensor(np.ones(3))
    F.batch_norm(x, rm, rv, training=True)
    np.testing.assert_allclose(rm.data, 0.1 * data.mean(0))
    np.testing.assert_allclose(rv.data, 0.9 + 0.1 * data.var(0, ddof=1))
    y = F.batch_norm(x, rm, rv, training=False)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.broadcast_to(1 / np.sqrt(rv.data + 1e-5), (4, 3)))


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("name", ["exp", "div", "softmax", "rpow", "tanh"])
def test_second_order_through_the_first_order_graph(backend, name):
    """``xpnn.grad(g.sum(), a)`` where ``g`` came from ``xpnn.grad(..., create_graph=True)``: the second pass runs
    the first graph's rules again, whose saved values the recorded pass had swapped for Tensors, so a rule computed
    ``array * Tensor``; array_api_strict's operators raise instead of deferring (TypeError: Expected Array or Python
    scalar). Checked against central differences of the first derivative (float64)."""
    fns = {"exp": lambda a: a.exp(), "div": lambda a: a / (a * a + 1), "softmax": lambda a: a.softmax(axis=0) * a,
           "rpow": lambda a: 2.0 ** a, "tanh": lambda a: a.tanh()}
    f = fns[name]
    a0 = np.array([0.5, -0.3, 0.8])
    wrap = (lambda v: v) if backend == "numpy" else pytest.importorskip("array_api_strict").asarray

    def first(v):
        a = xpnn.tensor(wrap(v), requires_grad=True)
        (g,) = xpnn.grad(f(a).sum(), a)
        return np.asarray(g.data)

    a = xpnn.tensor(wrap(a0), requires_grad=True)
    (g,) = xpnn.grad(f(a).sum(), a, create_graph=True)
    (h,) = xpnn.grad((g * g).sum(), a)
    eps = 1e-6
    num = np.array([((first(a0 + eps * e) ** 2).sum() - (first(a0 - eps * e) ** 2).sum()) / (2 * eps)
                    for e in np.eye(3)])
    np.testing.assert_allclose(np.asarray(h.data), num, atol=1e-6)


class _TwoOutputs(Op):
    name = "two_outputs"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * 2, x * x

    @staticmethod
    def backward(ctx, g1, g2):
        (x,) = ctx.saved_tensors
        return g1 * 2 + g2 * 2 * x


@pytest.mark.parametrize("create_graph", [False, True])
def test_multi_output_op_with_an_output_dropped_by_the_caller(create_graph):
    """``u = op(x)[0]`` (the other output garbage-collected) raised 'an output needed for backward was freed';
    PyTorch passes zeros for it."""
    x = xpnn.tensor(np.array([1.0, 3.0]), requires_grad=True)
    u = _TwoOutputs.apply(x)[0]
    (g,) = xpnn.grad((u * u).sum(), x, create_graph=create_graph)  # d/dx (2x)^2 = 8x
    np.testing.assert_allclose(g.data, [8.0, 24.0])
    if create_graph:
        (h,) = xpnn.grad(g.sum(), x)
        np.testing.assert_allclose(h.data, [8.0, 8.0])
    v = _TwoOutputs.apply(x)[1]
    v.sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, 6.0])


# --- copies of a model --------------------------------------------------------------------------------------------
def test_deepcopy_of_a_packed_model_trains_the_copy_and_only_the_copy():
    """``m2 = copy.deepcopy(model)`` (PyTorch's usual way to fork a model): the copied parameters were arrays of
    their own, no longer views of the copied flat buffer, so an optimizer of the copy stepped the buffer and the
    copy never changed (silently)."""
    import copy
    import pickle

    X, y = _data()
    model = nn.Sequential(nn.Linear(4, 5, seed=0), nn.ReLU(), nn.Linear(5, 3, seed=1))
    nn.CrossEntropyLoss()(model(xpnn.tensor(X)), y).backward()
    before = [p.numpy() for p in model.parameters()]
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        start = [p.numpy() for p in twin.parameters()]
        for a, b in zip(start, before):
            np.testing.assert_array_equal(a, b)
        opt = optim.SGD(twin.parameters(), lr=0.5)
        assert twin.flat_buffer() is not None  # packed again
        opt.zero_grad()
        nn.CrossEntropyLoss()(twin(xpnn.tensor(X)), y).backward()
        opt.step()
        assert all(np.abs(p.numpy() - s).max() > 0 for p, s in zip(twin.parameters(), start))
        for p, b in zip(model.parameters(), before):
            np.testing.assert_array_equal(p.numpy(), b)
