"""The autograd core: the op declaration (``Op``, its
per-call ``Context``, kernels and the overrides registry), the backward engine, ``xpnn.grad`` and the grad-mode
switches, with ``torch.autograd`` as the reference for the semantics.

Ops used here are declared inside the tests (``_ops()``), as a user declares them: their class bodies run at test
time, outside the ``xpnn`` package (so the engine checks the shapes their backwards return).
"""
from __future__ import annotations

import threading
import types

import array_api_strict as xs
import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import _dispatch
from xpnn.autograd import Context, Op, register_override
from xpnn.autograd.op import override_for
from xpnn.backend import namespace_of
from xpnn.errors import ShapeError


def _ops():
    """Fresh op declarations (a namespace): ``scale`` (x * factor, a keyword parameter), ``lin`` (a * x + b with
    two differentiable inputs, saving both), ``two`` (two outputs 2x and 3x), ``argmax2`` (values and indices, the
    indices not differentiable). Each records what its forward and backward saw in ``seen``."""
    seen: dict = {"fwd": [], "bwd": []}

    class Scale(Op):
        name = "t_scale"

        @staticmethod
        def forward(ctx, x, *, factor=2.0):
            seen["fwd"].append(ctx)
            ctx.factor = factor
            return x * factor

        @staticmethod
        def backward(ctx, g):
            seen["bwd"].append((ctx.needs_input_grad, ctx.create_graph, type(g), ctx.saved_tensors))
            return g * ctx.factor

    class Lin(Op):
        name = "t_lin"

        @staticmethod
        def forward(ctx, a, x):
            ctx.save_for_backward(a, x)
            return a * x

        @staticmethod
        def backward(ctx, g):
            a, x = ctx.saved_tensors
            seen["bwd"].append((ctx.needs_input_grad, ctx.create_graph, type(a), type(g)))
            return g * x, g * a

    class Two(Op):
        name = "t_two"

        @staticmethod
        def forward(ctx, x):
            return x * 2.0, x * 3.0

        @staticmethod
        def backward(ctx, g1, g2):
            seen["bwd"].append((g1, g2))
            return g1 * 2.0 + g2 * 3.0

    class ArgMax2(Op):
        name = "t_argmax2"
        differentiable_outputs = (0,)

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x, np.argmax(np.asarray(x)).reshape(1)

        @staticmethod
        def backward(ctx, g, gi):
            (x,) = ctx.saved_tensors
            seen["bwd"].append((g, gi))
            return g * 2.0 * x

    return types.SimpleNamespace(Scale=Scale, Lin=Lin, Two=Two, ArgMax2=ArgMax2, seen=seen)


def leaf(values, dtype=np.float64):
    return xpnn.tensor(np.array(values, dtype=dtype), requires_grad=True)


# --- Op.apply and Context -----------------------------------------------------------------------------------------

def test_apply_on_arrays_returns_arrays_and_a_context_without_grads():
    ops = _ops()
    x = np.array([1.0, 2.0])
    out = ops.Scale.apply(x, factor=3.0)
    assert type(out) is np.ndarray and out.tolist() == [3.0, 6.0]
    ctx = ops.seen["fwd"][-1]
    assert isinstance(ctx, Context)
    assert ctx.needs_input_grad == (False,) and ctx.create_graph is False
    assert ctx.xp is namespace_of(x) and ctx.saved_tensors == ()
    assert ops.Lin.apply(np.full(2, 3.0), x).tolist() == [3.0, 6.0]
    assert ops.Scale.apply(x).tolist() == [2.0, 4.0]  # the default parameter


def test_context_xp_ignores_scalars_and_none():
    seen = []

    class Affine(Op):
        name = "t_affine"

        @staticmethod
        def forward(ctx, s, x, b):
            seen.append(ctx.xp)
            return x * s if b is None else x * s + b

        @staticmethod
        def backward(ctx, g):
            seen.append(ctx.needs_input_grad)
            return None, g * 2.0, None

    strict = xs.asarray([1.0, 2.0])
    assert xs.all(Affine.apply(2.0, strict, None) == xs.asarray([2.0, 4.0]))
    assert seen == [xs]
    x = leaf([1.0, 2.0])
    Affine.apply(2.0, x, None).sum().backward()  # non-Tensor positional inputs: no gradient
    assert seen[-1] == (False, True, False) and x.grad.tolist() == [2.0, 2.0]


def test_apply_on_tensors_records_needs_input_grad_per_positional_input():
    ops = _ops()
    a = xpnn.tensor(np.array([2.0, 3.0]))  # a constant Tensor: no gradient
    x = leaf([1.0, 5.0])
    y = ops.Lin.apply(a, x)
    assert isinstance(y, xpnn.Tensor) and y.grad_fn is not None and y.grad_fn.name() == "t_lin"
    assert repr(y.grad_fn) == "<t_lin backward>"
    y.sum().backward()
    needs, create_graph, saved_type, g_type = ops.seen["bwd"][-1]
    assert needs == (False, True) and create_graph is False
    assert saved_type is np.ndarray and g_type is np.ndarray  # the rule runs on arrays
    assert x.grad.tolist() == [2.0, 3.0] and a.grad is None


def test_needs_input_grad_is_false_for_inputs_nobody_asked_for():
    ops = _ops()
    a, x = leaf([2.0, 3.0]), leaf([1.0, 5.0])
    (gx,) = xpnn.grad(ops.Lin.apply(a, x).sum(), x)
    assert ops.seen["bwd"][-1][0] == (False, True) and gx.numpy().tolist() == [2.0, 3.0]
    assert a.grad is None and x.grad is None  # xpnn.grad leaves .grad alone


def test_saved_values_are_freed_by_backward_and_a_second_backward_names_the_op():
    ops = _ops()
    x = leaf([1.0, 2.0])
    z = ops.Lin.apply(x, x)
    ctx = z.grad_fn.ctx
    y = z.sum()
    y.backward(retain_graph=True)
    assert not ctx.freed and len(ctx.saved_tensors) == 2
    y.backward()
    assert ctx.freed
    with pytest.raises(RuntimeError, match="freed by an earlier backward"):
        ctx.saved_tensors
    assert x.grad.tolist() == [4.0, 8.0]  # two backwards of d(x*x)/dx = 2x
    with pytest.raises(RuntimeError, match=r"^sum: trying to backward through the graph a second time"):
        y.backward()
    del z
    z = ops.Lin.apply(x, x)
    z.sum().backward()
    with pytest.raises(RuntimeError, match=r"^t_lin: trying to backward through the graph a second time"):
        (z * 1.0).sum().backward()


def test_user_op_wrong_gradient_shape_for_an_intermediate_input_names_the_op():
    class Bad(Op):  # declared at test time, outside xpnn: the engine checks its gradients' shapes
        name = "t_bad_shape"

        @staticmethod
        def forward(ctx, x):
            return x.sum(axis=0)

        @staticmethod
        def backward(ctx, g):
            return g  # should be broadcast back to (2, 3)

    assert Bad._user_op is True
    x = xpnn.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ShapeError, match=r"^t_bad_shape: backward returned a gradient of shape \(3,\) for an input "
                                         r"of shape \(2, 3\)"):
        Bad.apply(x * 2.0).sum().backward()


def test_ops_of_the_package_are_not_user_ops():
    assert F.dropout.__wrapped_op__._user_op is False


def test_backward_must_return_one_gradient_per_input():
    class Wrong(Op):
        name = "t_count"

        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, g):
            return g

    a, b = leaf([1.0]), leaf([2.0])
    with pytest.raises(RuntimeError, match=r"^t_count: backward returned 1 gradients for 2 inputs$"):
        Wrong.apply(a, b).sum().backward()


def test_backward_returning_none_leaves_that_input_without_gradient():
    class FirstOnly(Op):
        name = "t_first_only"

        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, g):
            return g, None

    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    fired = []
    b.register_post_accumulate_grad_hook(lambda t: fired.append(t.grad))
    FirstOnly.apply(a, b * 2.0).sum().backward()
    assert a.grad.tolist() == [1.0, 1.0] and b.grad is None
    assert fired == [None]  # the backward is over for b: its hook runs, with no gradient
    ga, gb = xpnn.grad(FirstOnly.apply(a, b).sum(), [a, b], allow_unused=True)
    assert ga.numpy().tolist() == [1.0, 1.0] and gb is None


def test_check_runs_before_forward_and_overrides_with_the_call_arguments():
    calls = []

    def check(x, *, factor):
        calls.append((x.shape, factor))
        if factor < 0:
            raise ValueError(f"t_checked: factor must be >= 0, got {factor}")

    class Checked(Op):
        name = "t_checked"

        @staticmethod
        def forward(ctx, x, *, factor):
            return x * factor

    Checked.check = staticmethod(check)
    assert Checked.apply(np.ones(3), factor=2.0).tolist() == [2.0] * 3
    assert calls == [((3,), 2.0)]
    register_override("t_checked", "forward", "numpy", lambda ctx, x, *, factor: x * 0.0 + 7.0)
    try:
        with pytest.raises(ValueError, match="^t_checked: factor must be >= 0, got -1"):
            Checked.apply(np.ones(3), factor=-1)
        assert Checked.apply(np.ones(2), factor=1.0).tolist() == [7.0, 7.0]
    finally:
        register_override("t_checked", "forward", "numpy", None)
    assert Checked.apply(np.ones(2), factor=1.0).tolist() == [1.0, 1.0]


# --- overrides ----------------------------------------------------------------------------------------------------

def test_register_override_checks_phase_and_kind():
    with pytest.raises(ValueError, match=r"^register_override: phase must be 'forward' or 'backward', got 'fwd'"):
        register_override("t_x", "fwd", "numpy", lambda ctx, x: x)
    with pytest.raises(ValueError, match=r"^register_override: kind must be 'numpy', 'cupy' or 'other', got 'cuda'"):
        register_override("t_x", "forward", "cuda", lambda ctx, x: x)
    assert override_for("t_x", "forward", np.ones(1)) is None


def test_forward_override_replaces_the_declaration_for_its_kind_only():
    ops = _ops()
    seen = []

    def fast(ctx, x, *, factor=2.0):
        seen.append((type(ctx), x.shape, factor))
        ctx.factor = factor
        return x * factor + 100.0

    register_override("t_scale", "forward", "numpy", fast)
    try:
        assert override_for("t_scale", "forward", np.ones(1)) is fast
        assert override_for("t_scale", "backward", np.ones(1)) is None
        assert override_for("t_scale", "forward", xs.ones(1)) is None
        assert ops.Scale.apply(np.ones(2), factor=3.0).tolist() == [103.0, 103.0]
        assert seen == [(Context, (2,), 3.0)]
        assert ops.seen["fwd"] == []  # the declaration did not run
        strict = ops.Scale.apply(xs.ones(2), factor=3.0)  # other kind: the declaration
        assert xs.all(strict == xs.asarray([3.0, 3.0])) and len(ops.seen["fwd"]) == 1
        x = leaf([1.0, 2.0])
        y = ops.Scale.apply(x, factor=3.0)  # the override's ctx is the node's: backward reads ctx.factor
        y.sum().backward()
        assert y.numpy().tolist() == [103.0, 106.0] and x.grad.tolist() == [3.0, 3.0]
    finally:
        register_override("t_scale", "forward", "numpy", None)
    register_override("t_scale", "forward", "numpy", None)  # removing twice is fine
    assert override_for("t_scale", "forward", np.ones(1)) is None
    assert ops.Scale.apply(np.ones(2), factor=3.0).tolist() == [3.0, 3.0]


def test_override_returning_notimplemented_falls_back_to_the_declaration():
    ops = _ops()
    asked = []

    def picky(ctx, x, *, factor=2.0):
        asked.append(x.dtype)
        return NotImplemented if x.dtype != np.float32 else x * 0.0

    register_override("t_scale", "forward", "numpy", picky)
    try:
        assert ops.Scale.apply(np.ones(2), factor=5.0).tolist() == [5.0, 5.0]
        assert ops.Scale.apply(np.ones(2, np.float32), factor=5.0).tolist() == [0.0, 0.0]
        assert asked == [np.float64, np.float32]
    finally:
        register_override("t_scale", "forward", "numpy", None)


def test_override_for_other_arrays_and_numpy_arrays_are_separate():
    ops = _ops()
    register_override("t_scale", "forward", "other", lambda ctx, x, *, factor=2.0: x * 0.0 - 1.0)
    try:
        assert override_for("t_scale", "forward", np.ones(1)) is None
        assert xs.all(ops.Scale.apply(xs.ones(2)) == xs.asarray([-1.0, -1.0]))
        assert ops.Scale.apply(np.ones(2)).tolist() == [2.0, 2.0]
        masked = np.ma.masked_array(np.ones(2))  # an ndarray subclass is not "numpy": it is another library's type
        assert np.asarray(ops.Scale.apply(masked)).tolist() == [-1.0, -1.0]
    finally:
        register_override("t_scale", "forward", "other", None)


def test_override_for_cupy_arrays_is_chosen_by_the_array_type():
    ops = _ops()
    # an object whose type lives in a ``cupy`` module stands for a CuPy array (no GPU needed to route it)
    FakeCupy = type("ndarray", (), {"__module__": "cupy._core.core", "shape": (2,), "dtype": np.dtype("float64")})
    fake = FakeCupy()
    fn = lambda ctx, x, *, factor=2.0: "cupy-path"  # noqa: E731
    register_override("t_scale", "forward", "cupy", fn)
    try:
        assert override_for("t_scale", "forward", fake) is fn
        assert override_for("t_scale", "forward", xs.ones(1)) is None
        assert override_for("t_scale", "forward", np.ones(1)) is None
        with _dispatch.use_kernels(True):
            assert ops.Scale.apply(fake) == "cupy-path"
    finally:
        register_override("t_scale", "forward", "cupy", None)


def test_override_of_an_op_called_without_positional_inputs_is_not_consulted():
    class Zeros(Op):
        name = "t_zeros"

        @staticmethod
        def forward(ctx, *, n):
            return np.zeros(n)

    register_override("t_zeros", "forward", "numpy", lambda ctx, *a, **k: np.ones(1))
    try:
        assert Zeros.apply(n=3).tolist() == [0.0, 0.0, 0.0]
    finally:
        register_override("t_zeros", "forward", "numpy", None)


def test_backward_override_is_used_for_plain_backwards_only():
    ops = _ops()
    got = []

    def bwd(ctx, g):
        got.append((ctx.factor, g.tolist()))
        return g * 10.0

    register_override("t_scale", "backward", "numpy", bwd)
    try:
        assert override_for("t_scale", "backward", np.ones(1)) is bwd
        x = leaf([1.0, 2.0])
        ops.Scale.apply(x, factor=3.0).backward(np.array([1.0, 2.0]))
        assert got == [(3.0, [1.0, 2.0])] and x.grad.tolist() == [10.0, 20.0]
        assert ops.seen["bwd"] == []
        (g,) = xpnn.grad(ops.Scale.apply(x, factor=3.0).sum(), x, create_graph=True)  # recorded: the declaration
        assert g.numpy().tolist() == [3.0, 3.0] and len(got) == 1
    finally:
        register_override("t_scale", "backward", "numpy", None)


def test_backward_override_of_a_package_op_with_a_wrong_shape_names_the_op():
    register_override("exp", "backward", "numpy", lambda ctx, g: g.sum())
    try:
        assert override_for("exp", "backward", np.ones(1)) is not None
        x = leaf([1.0, 2.0])
        with pytest.raises(ShapeError, match=r"^exp: backward returned a gradient of shape \(\) for an input of "
                                             r"shape \(2,\)"):
            F.exp(x).sum().backward()
    finally:
        register_override("exp", "backward", "numpy", None)


def test_backward_override_returning_notimplemented_falls_back():
    ops = _ops()
    register_override("t_scale", "backward", "numpy", lambda ctx, g: NotImplemented)
    try:
        x = leaf([1.0, 2.0])
        ops.Scale.apply(x, factor=4.0).sum().backward()
        assert x.grad.tolist() == [4.0, 4.0] and len(ops.seen["bwd"]) == 1
    finally:
        register_override("t_scale", "backward", "numpy", None)


# --- kernels (Op.kernel, found through xpnn._dispatch) --------------------------------------------------------------

def _kernel_op(log):
    class Triple(Op):
        name = "t_triple"
        kernel = "t_triple_kernel"

        @staticmethod
        def save(ctx, out, x, *, bias=0.0):
            log.append(("save", type(ctx).__name__, out.tolist(), x.tolist(), bias))
            ctx.save_for_backward(x)

        @staticmethod
        def forward(ctx, x, *, bias=0.0):
            log.append(("forward",))
            out = x * 3.0 + bias
            Triple.save(ctx, out, x, bias=bias)
            return out

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3.0

    return Triple


def test_kernel_replaces_forward_and_saves_what_backward_needs():
    log, asked = [], []

    def kernel(x, *, bias=0.0):
        log.append(("kernel", x.tolist(), bias))
        return x * 3.0 + bias

    def provider(op, xp, dtype):
        asked.append((op, xp, dtype))
        return kernel if op == "t_triple_kernel" else None

    Triple = _kernel_op(log)
    x = leaf([1.0, 2.0])
    with _dispatch.use_kernels(True), _dispatch.use_provider(provider):
        y = Triple.apply(x, bias=0.5)
        z = x * 2.0  # an op without a kernel: no lookup
    assert asked == [("t_triple_kernel", namespace_of(x.data), np.float64)]
    assert log == [("kernel", [1.0, 2.0], 0.5), ("save", "Context", [3.5, 6.5], [1.0, 2.0], 0.5)]
    assert y.numpy().tolist() == [3.5, 6.5] and z.numpy().tolist() == [2.0, 4.0]
    y.sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_kernel_returning_notimplemented_or_none_falls_back_to_forward():
    log = []
    Triple = _kernel_op(log)
    for provider in (lambda op, xp, dtype: (lambda x, **k: NotImplemented), lambda op, xp, dtype: None):
        log.clear()
        with _dispatch.use_kernels(True), _dispatch.use_provider(provider):
            assert Triple.apply(np.array([1.0]), bias=1.0).tolist() == [4.0]
        assert log[0] == ("forward",)


def test_kernels_are_not_looked_up_when_disabled_or_for_a_none_first_input():
    asked = []

    def provider(op, xp, dtype):
        asked.append(op)
        return None

    class MaybeFirst(Op):
        name = "t_maybe_first"
        kernel = "t_maybe_first_kernel"

        @staticmethod
        def forward(ctx, a, x):
            return x * 2.0 if a is None else a * x

    with _dispatch.use_provider(provider):
        with _dispatch.use_kernels(False):
            assert MaybeFirst.apply(np.ones(1), np.ones(1)).tolist() == [1.0]
        with _dispatch.use_kernels(True):
            assert MaybeFirst.apply(None, np.ones(1)).tolist() == [2.0]
            assert asked == []
            MaybeFirst.apply(np.ones(1, np.float32), np.ones(1))
    assert asked == ["t_maybe_first_kernel"]


def test_without_a_provider_numpy_arrays_never_reach_a_kernel():
    log = []
    Triple = _kernel_op(log)
    with _dispatch.use_kernels(True), _dispatch.use_provider(None):
        assert Triple.apply(np.array([1.0])).tolist() == [3.0]
    assert log[0] == ("forward",)


# --- the engine ---------------------------------------------------------------------------------------------------

def test_backward_of_a_leaf_accumulates_its_grad_and_fires_its_hook():
    x = leaf([1.0, 2.0])
    fired = []
    x.register_post_accumulate_grad_hook(lambda t: fired.append(t.grad.copy()))
    x.backward(np.array([3.0, 4.0]))
    x.backward(np.array([1.0, 1.0]))
    assert x.grad.tolist() == [4.0, 5.0]
    assert [f.tolist() for f in fired] == [[3.0, 4.0], [4.0, 5.0]]


def test_grad_of_a_tensor_with_respect_to_itself_is_its_grad_output():
    x = leaf([1.0, 2.0])
    (g,) = xpnn.grad(x, x, grad_outputs=np.array([3.0, 4.0]))
    assert g.numpy().tolist() == [3.0, 4.0] and x.grad is None
    (g,) = xpnn.grad([x, x * 2.0], x, [np.array([1.0, 1.0]), np.array([1.0, 10.0])])
    assert g.numpy().tolist() == [3.0, 21.0]
    y = x * 3.0
    gy, gx = xpnn.grad(y, [y, x], np.array([1.0, 2.0]))
    assert gy.numpy().tolist() == [1.0, 2.0] and gx.numpy().tolist() == [3.0, 6.0]


def test_grad_of_an_intermediate_and_a_leaf_together():
    x = leaf([1.0, 2.0])
    h = x * x
    loss = (h * 3.0).sum() + x.sum()
    gh, gx = xpnn.grad(loss, [h, x])
    assert gh.numpy().tolist() == [3.0, 3.0] and gx.numpy().tolist() == [7.0, 13.0]  # 6x + 1
    assert x.grad is None and h.grad is None


def test_constants_never_get_a_grad():
    c = xpnn.tensor(np.array([2.0, 3.0]))
    x = leaf([1.0, 1.0])
    (x * c + c * 2.0 + (5.0 - x)).sum().backward()
    assert c.grad is None and x.grad.tolist() == [1.0, 2.0]


def test_only_nodes_leading_to_wanted_inputs_run_their_backward():
    ops = _ops()
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    loss = ops.Scale.apply(w, factor=5.0).sum() + (x * 2.0).sum() + ops.Scale.apply(w * 1.0, factor=7.0).sum()
    (gx,) = xpnn.grad(loss, x, retain_graph=True)
    assert gx.numpy().tolist() == [2.0, 2.0] and ops.seen["bwd"] == []
    (gw,) = xpnn.grad(loss, w)
    assert gw.numpy().tolist() == [12.0, 12.0] and len(ops.seen["bwd"]) == 2


def test_hook_fires_once_after_every_contribution():
    x = leaf([1.0, 2.0])
    seen = []
    x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.tolist()))
    a, b, c = x * 2.0, x * 3.0, F.exp(x)
    loss = (a * b).sum() + c.sum() + x.sum()
    loss.backward()
    want = (12 * np.array([1.0, 2.0]) + np.exp([1.0, 2.0]) + 1).tolist()
    assert seen == [want] and x.grad.tolist() == want


def test_hook_added_during_backward_fires_once_complete():
    """A hook that one leaf's hook adds to another leaf in the same backward sees that leaf's whole gradient (each
    live edge into a leaf is counted, hooked or not when the backward starts)."""
    x, y = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    seen = []
    y.register_post_accumulate_grad_hook(
        lambda t: x.register_post_accumulate_grad_hook(lambda u: seen.append(u.grad.tolist())))
    loss = (y * (x * 2.0 + x * 3.0)).sum()  # y's edge is through first; x has two edges, both after it
    loss.backward()
    assert seen == [[15.0, 20.0]] and x.grad.tolist() == [15.0, 20.0]


def test_hook_that_removes_itself_while_firing():
    x = leaf([1.0])
    calls = []
    handles = []

    def once(t):
        calls.append("once")
        handles[0].remove()

    handles.append(x.register_post_accumulate_grad_hook(once))
    x.register_post_accumulate_grad_hook(lambda t: calls.append("always"))
    (x * 2.0).sum().backward()
    (x * 2.0).sum().backward()
    assert calls == ["once", "always", "always"]


def test_diamond_graph_matches_the_closed_form():
    v = np.array([0.5, -1.0, 2.0])
    x = xpnn.tensor(v, requires_grad=True)
    a = x * 2.0
    b = F.exp(a) - a
    c = a * b + F.tanh(b) * x
    c.sum().backward()
    a_, b_ = 2 * v, np.exp(2 * v) - 2 * v
    db = 2 * (np.exp(a_) - 1)  # d b / d x
    want = 2 * b_ + a_ * db + (1 - np.tanh(b_) ** 2) * db * v + np.tanh(b_)
    np.testing.assert_allclose(x.grad, want, rtol=1e-12)


def test_requires_grad_turned_off_after_the_forward_stops_its_gradient():
    """The backward's live edges follow each leaf's requires_grad when the backward runs (the recorded flags are
    only a shortcut while no leaf changed): a leaf turned off after the forward gets no gradient, and a node that
    leads to no leaf that still requires grad is not run."""
    ops = _ops()
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    loss = ops.Scale.apply(x, factor=5.0).sum() + (x * w).sum()
    x.requires_grad_(False)
    loss.backward()
    assert x.grad is None and w.grad.tolist() == [1.0, 2.0]
    assert ops.seen["bwd"] == []  # (Scale led to x only)


def test_requires_grad_turned_on_after_the_forward_gets_its_gradient():
    x, w = leaf([1.0, 2.0]), xpnn.tensor(np.array([3.0, 4.0]))
    loss = (x * w).sum()
    w.requires_grad_(True)
    loss.backward()
    assert x.grad.tolist() == [3.0, 4.0] and w.grad.tolist() == [1.0, 2.0]


def test_recorded_backward_matches_the_walked_graph_on_a_branching_graph():
    """The same gradients, summed in recording order, whether the backward takes the recorded edges or walks the
    graph (a hook on a leaf makes it count every edge: the walk)."""
    v = np.array([0.5, -1.0, 2.0])

    def run(hook):
        x, w = xpnn.tensor(v, requires_grad=True), xpnn.tensor(v[::-1].copy(), requires_grad=True)
        if hook:
            w.register_post_accumulate_grad_hook(lambda t: None)
        a = x * w
        b = F.exp(a) - x
        c = a * b + F.tanh(b) * w + (a * 3.0).sum()
        (c * c).sum().backward()
        return x.grad, w.grad

    for g, h in zip(run(False), run(True)):
        np.testing.assert_array_equal(g, h)


def test_op_fed_a_non_differentiable_output_backpropagates_alike_either_way():
    """An op that takes an output without gradient (indices) next to one that requires grad: the recorded edges
    are those a walk of the graph finds (a leaf hook forces the walk)."""
    def run(hook):
        ops = _ops()
        x = leaf([1.0, 3.0, 2.0])
        if hook:
            x.register_post_accumulate_grad_hook(lambda t: None)
        v, i = ops.ArgMax2.apply(x)
        (v * i).sum().backward()
        return x.grad, ops.seen["bwd"][-1][1]

    (g1, gi1), (g2, gi2) = run(False), run(True)
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(gi1, gi2)


def test_masked_fill_in_place_after_an_op_used_the_tensor():
    """An in-place fill rewires the Tensor to the fill's node after an op used it: the backward then walks the
    graph (the edges recorded before the fill are not trusted), with or without leaf hooks alike."""
    def run(hook):
        x = leaf([1.0, 2.0, 3.0])
        if hook:
            x.register_post_accumulate_grad_hook(lambda t: None)
        t = xpnn.tensor(np.array([4.0, 5.0, 6.0]))
        before = (t + x * 2.0).sum()  # t is a constant here (and not saved: add keeps no inputs)
        t.masked_fill_(np.array([True, False, False]), (x * 10.0)[0])  # t now depends on x
        (before + (t * 1.0).sum()).backward()
        return x.grad

    np.testing.assert_array_equal(run(False), run(True))


def test_grad_sums_the_grad_outputs_of_an_output_listed_twice():
    x = leaf([1.0, 2.0])
    y = x * 3.0
    (gy,) = xpnn.grad([y, y], y, [np.array([1.0, 2.0]), np.array([10.0, 20.0])], retain_graph=True)
    assert gy.numpy().tolist() == [11.0, 22.0]
    (gx,) = xpnn.grad([y, y], x, [np.array([1.0, 2.0]), np.array([10.0, 20.0])])
    assert gx.numpy().tolist() == [33.0, 66.0]


def test_create_graph_hands_the_rule_saved_intermediates_unchanged():
    class Sin(Op):
        name = "t_sin"

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(np.cos(x), x)  # an intermediate (cos x) and the input
            return np.sin(x)

        @staticmethod
        def backward(ctx, g):
            cos, x = ctx.saved_tensors
            return g * cos + x * 0.0  # differentiable through x only

    v = np.array([0.5, 1.5])
    x = xpnn.tensor(v, requires_grad=True)
    y = Sin.apply(x).sum()
    (g,) = xpnn.grad(y, x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), np.cos(v), rtol=1e-15)
    assert g.grad_fn is not None
    y.backward()  # kept by create_graph; a plain backward hands the rule arrays again
    np.testing.assert_allclose(x.grad, np.cos(v), rtol=1e-15)


def test_multi_output_op_sums_gradients_of_both_outputs():
    ops = _ops()
    x = leaf([1.0, 2.0])
    a, b = ops.Two.apply(x)
    assert (a._index, b._index) == (0, 1) and a.grad_fn is b.grad_fn
    (g,) = xpnn.grad([a, b], x, [np.array([1.0, 2.0]), np.array([10.0, 20.0])])
    assert g.numpy().tolist() == [32.0, 64.0]
    a, b = ops.Two.apply(x)
    ((a * b).sum() + a.sum()).backward()  # d/dx (6x^2 + 2x) = 12x + 2
    assert x.grad.tolist() == [14.0, 26.0]


@pytest.mark.parametrize("create_graph", [False, True])
def test_unused_output_gets_zeros_of_its_shape_and_dtype(create_graph):
    ops = _ops()
    x = leaf([1.0, 2.0], dtype=np.float32)
    a, b = ops.Two.apply(x)
    (g,) = xpnn.grad(b.sum(), x, create_graph=create_graph)
    g1, g2 = ops.seen["bwd"][-1]
    g1 = g1.data if create_graph else g1
    assert type(g1) is np.ndarray and g1.dtype == np.float32 and g1.tolist() == [0.0, 0.0]
    assert g.numpy().tolist() == [3.0, 3.0] and g.dtype == np.float32
    assert isinstance(ops.seen["bwd"][-1][0], xpnn.Tensor) is create_graph
    del a, b
    b = ops.Two.apply(x)[1]  # the first output dropped by the caller
    (g,) = xpnn.grad(b.sum(), x, create_graph=create_graph)
    g1 = ops.seen["bwd"][-1][0]
    g1 = g1.data if create_graph else g1
    assert g1.dtype == np.float32 and g1.shape == (2,) and g1.tolist() == [0.0, 0.0]
    assert g.numpy().tolist() == [3.0, 3.0]


def test_unused_output_holding_inf_gets_zeros_not_nan():
    """Zeros for an unused output were made as ``output * 0``: inf * 0 = nan poisoned the gradient (PyTorch: 3)."""
    class LogAndTriple(Op):
        name = "t_log_and_triple"

        @staticmethod
        def forward(ctx, x):
            with np.errstate(divide="ignore"):
                return np.log(x), x * 3.0

        @staticmethod
        def backward(ctx, g1, g2):
            return g1 * 0.5 + g2 * 3.0

    x = leaf([0.0, 1.0])
    a, b = LogAndTriple.apply(x)
    assert a.numpy()[0] == -np.inf
    b.sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


@pytest.mark.parametrize("create_graph", [False, True])
def test_non_differentiable_output_gets_no_gradient(create_graph):
    ops = _ops()
    x = leaf([1.0, 3.0, 2.0])
    v, i = ops.ArgMax2.apply(x)
    assert v.requires_grad and not i.requires_grad and i.numpy().tolist() == [1]
    (g,) = xpnn.grad(v.sum(), x, create_graph=create_graph)
    assert ops.seen["bwd"][-1][1] is None
    assert g.numpy().tolist() == [2.0, 6.0, 4.0]
    if create_graph:
        (h,) = xpnn.grad(g.sum(), x)
        assert h.numpy().tolist() == [2.0, 2.0, 2.0]


def test_create_graph_hands_the_rule_tensors_and_a_later_plain_backward_arrays():
    ops = _ops()
    a, x = leaf([2.0, 3.0]), leaf([1.0, 5.0])
    y = ops.Lin.apply(a, x).sum()
    ga, gx = xpnn.grad(y, [a, x], create_graph=True)
    needs, cg, saved_t, g_t = ops.seen["bwd"][-1]
    assert needs == (True, True) and cg is True and saved_t is xpnn.Tensor and g_t is xpnn.Tensor
    assert ga.grad_fn is not None and gx.grad_fn is not None
    y.backward()  # the graph was kept (retain_graph defaults to create_graph)
    needs, cg, saved_t, g_t = ops.seen["bwd"][-1]
    assert cg is False and saved_t is np.ndarray and g_t is np.ndarray
    assert a.grad.tolist() == [1.0, 5.0] and x.grad.tolist() == [2.0, 3.0]
    assert type(a.grad) is np.ndarray


def test_create_graph_on_array_api_strict_then_plain_backward():
    ops = _ops()
    a = xpnn.tensor(xs.asarray([2.0, 3.0]), requires_grad=True)
    x = xpnn.tensor(xs.asarray([1.0, 5.0]), requires_grad=True)
    y = ops.Lin.apply(a, x).sum()
    (ga,) = xpnn.grad(y, a, create_graph=True)
    (gxa,) = xpnn.grad(ga.sum(), x)  # d/dx sum(d y / d a) = 1
    assert xs.all(gxa.data == xs.asarray([1.0, 1.0]))
    y.backward()
    assert xs.all(a.grad == xs.asarray([1.0, 5.0])) and xs.all(x.grad == xs.asarray([2.0, 3.0]))


def test_backward_with_create_graph_stores_values_in_grad():
    x = leaf([1.0, 2.0])
    (x * x).sum().backward(create_graph=True)
    assert type(x.grad) is np.ndarray and x.grad.tolist() == [2.0, 4.0]


def test_backward_type_error_without_tensor_in_message_is_not_rewritten():
    class Broken(Op):
        name = "t_broken"

        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            raise TypeError("plain failure")

    x = leaf([1.0])
    with pytest.raises(TypeError, match="^plain failure$"):
        xpnn.grad(Broken.apply(x).sum(), x, create_graph=True)


def test_backward_returning_tensors_without_create_graph_gives_arrays():
    ops = _ops()

    class TensorRule(Op):
        name = "t_tensor_rule"

        @staticmethod
        def forward(ctx, x, c):
            return x * 2.0

        @staticmethod
        def backward(ctx, g):
            return xpnn.Tensor(g) * 2.0, None

    x = leaf([1.0, 2.0])
    TensorRule.apply(ops.Scale.apply(x, factor=3.0), np.ones(2)).sum().backward()
    assert ops.seen["bwd"][-1][2] is np.ndarray  # the next rule got an array
    assert type(x.grad) is np.ndarray and x.grad.tolist() == [6.0, 6.0]


def test_float64_gradient_is_cast_into_a_float32_leaf():
    x = leaf([1.0, 2.0], dtype=np.float32)
    y = x * np.array([0.1, 0.2])  # float32 * float64 array -> float64, as in NumPy
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, np.array([0.1, 0.2], np.float32))


def test_float64_gradient_is_cast_into_a_float32_leaf_on_array_api_strict():
    x = xpnn.tensor(xs.asarray([1.0, 2.0], dtype=xs.float32), requires_grad=True)
    c = xs.asarray([0.5, 0.25], dtype=xs.float64)
    for _ in range(2):  # the second adds in place: float32 += float64 is refused by the standard
        (x * c).sum().backward()
    assert x.grad.dtype == xs.float32 and xs.all(x.grad == xs.asarray([1.0, 0.5], dtype=xs.float32))


def test_grad_mode_is_restored_after_a_backward_that_raises():
    ops = _ops()
    x = leaf([1.0])
    y = ops.Lin.apply(x, x).sum()
    y.backward()
    assert xpnn.is_grad_enabled()
    with pytest.raises(RuntimeError):
        y.backward()
    assert xpnn.is_grad_enabled()
    with xpnn.no_grad():
        z = ops.Lin.apply(x, x).sum()
    assert z.grad_fn is None
    w = ops.Lin.apply(x, x).sum()
    with xpnn.no_grad():
        (g,) = xpnn.grad(w, x, create_graph=True)  # create_graph records even inside no_grad, as in PyTorch
        assert not xpnn.is_grad_enabled()
    assert g.grad_fn is not None


# --- xpnn.grad ----------------------------------------------------------------------------------------------------

def test_grad_takes_tensors_or_sequences():
    x, y = leaf([1.0, 2.0]), leaf([3.0])
    out = (x * x).sum() + (y * 2.0).sum()
    (gx,) = xpnn.grad(out, x, retain_graph=True)
    assert isinstance(gx, xpnn.Tensor) and gx.numpy().tolist() == [2.0, 4.0]
    gx, gy = xpnn.grad([out], (x, y), retain_graph=True)
    assert gx.numpy().tolist() == [2.0, 4.0] and gy.numpy().tolist() == [2.0]
    gs = xpnn.grad((out, (x * 3.0).sum()), [x])
    assert isinstance(gs, tuple) and gs[0].numpy().tolist() == [5.0, 7.0]


def test_grad_outputs_as_tensor_array_or_list():
    x = leaf([1.0, 2.0])
    y = x * 3.0
    for go in (xpnn.tensor(np.array([1.0, 2.0])), np.array([1.0, 2.0]), [np.array([1.0, 2.0])]):
        (g,) = xpnn.grad(y, x, go, retain_graph=True)
        assert g.numpy().tolist() == [3.0, 6.0]
    with pytest.raises(ValueError, match=r"^xpnn.grad: got 2 grad_outputs for 1 outputs$"):
        xpnn.grad(y, x, [np.ones(2), np.ones(2)])
    with pytest.raises(ShapeError, match=r"^xpnn.grad: grad must have the output's shape \(2,\)"):
        xpnn.grad(y, x, np.ones(3))
    with pytest.raises(RuntimeError, match=r"^xpnn.grad: grad can be implicitly created only for one-element"):
        xpnn.grad(y, x)


def test_grad_inputs_must_be_tensors_that_require_grad():
    x = leaf([1.0])
    y = (x * 2.0).sum()
    with pytest.raises(RuntimeError, match=r"^xpnn.grad: every input must be a Tensor that requires grad, "
                                           r"got ndarray$"):
        xpnn.grad(y, [x, np.ones(1)])
    with pytest.raises(RuntimeError, match=r"got a Tensor with requires_grad=False$"):
        xpnn.grad(y, xpnn.tensor(np.ones(1)))


def test_grad_unused_input_errors_unless_allow_unused():
    x, u = leaf([1.0, 2.0]), leaf([[1.0, 2.0, 3.0]])
    y = (x * 2.0).sum()
    with pytest.raises(RuntimeError, match=r"^xpnn.grad: one of the inputs was not used to compute the outputs "
                                           r"\(shape \(1, 3\)\); pass allow_unused=True to get None for it$"):
        xpnn.grad(y, [x, u], retain_graph=True)
    gx, gu = xpnn.grad(y, [x, u], allow_unused=True)
    assert gu is None and gx.numpy().tolist() == [2.0, 2.0]


def test_grad_unused_parameter_says_that_loss_backward_fills_it():
    p = xpnn.nn.Parameter(np.ones(2))
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"allow_unused=True to get None for it; the parameters of a module "
                                           r"with a hand-written backward are not inputs of the graph"):
        xpnn.grad((x * 2.0).sum(), p)


def test_grad_outputs_that_require_grad_join_the_recorded_graph():
    """The double-vjp trick: with create_graph, the result is differentiable with respect to grad_outputs."""
    x = leaf([1.0, 2.0])
    v = leaf([1.0, 1.0])
    y = x * x  # Jacobian diag(2x)
    (g,) = xpnn.grad(y, x, v, create_graph=True)
    assert g.numpy().tolist() == [2.0, 4.0]
    (gv,) = xpnn.grad((g * np.array([1.0, 10.0])).sum(), v)
    assert gv.numpy().tolist() == [2.0, 40.0]
    (gx,) = xpnn.grad(x, x, v, create_graph=True)  # an input that is an output: its grad_output itself
    assert gx.numpy().tolist() == [1.0, 1.0] and gx.requires_grad  # (PyTorch returns v itself)


def test_grad_frees_the_graph_unless_retained_or_recorded():
    x = leaf([1.0, 2.0])
    y = F.exp(x).sum()
    xpnn.grad(y, x, retain_graph=True)
    (g,) = xpnn.grad(y, x)
    np.testing.assert_allclose(g.numpy(), np.exp([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="a second time"):
        xpnn.grad(y, x)
    z = F.exp(x).sum()
    (g,) = xpnn.grad(z, x, create_graph=True)  # retained by default with create_graph
    assert g.grad_fn is not None
    (g2,) = xpnn.grad(z, x)
    assert g2.grad_fn is None and not g2.requires_grad
    w = F.exp(x).sum()
    (g,) = xpnn.grad(w, x, create_graph=True, retain_graph=False)
    with pytest.raises(RuntimeError, match="^sum: trying to backward"):
        xpnn.grad(w, x)
    with pytest.raises(RuntimeError, match="^exp: trying to backward"):  # as in PyTorch: the recorded backward
        xpnn.grad(g.sum(), x)  # uses exp's output, whose node was freed


def test_second_order_grad_matches_the_closed_form():
    v = np.array([0.3, -0.7, 1.1])
    x = xpnn.tensor(v, requires_grad=True)
    (g,) = xpnn.grad((F.tanh(x) * x * x).sum(), x, create_graph=True)
    (h,) = xpnn.grad((g * g).sum(), x)
    t, s2 = np.tanh(v), 1 - np.tanh(v) ** 2
    g_ = s2 * v ** 2 + 2 * v * t
    dg = -2 * s2 * t * v ** 2 + 4 * v * s2 + 2 * t
    np.testing.assert_allclose(g.numpy(), g_, rtol=1e-12)
    np.testing.assert_allclose(h.numpy(), 2 * g_ * dg, rtol=1e-12)


# --- grad mode ----------------------------------------------------------------------------------------------------

def test_grad_mode_is_on_by_default_in_every_thread():
    seen = []
    with xpnn.no_grad():
        t = threading.Thread(target=lambda: seen.append(xpnn.is_grad_enabled()))
        t.start()
        t.join()
        assert xpnn.is_grad_enabled() is False
    assert seen == [True] and xpnn.is_grad_enabled() is True


def test_set_grad_enabled_as_a_call_and_as_a_context_manager():
    x = leaf([1.0])
    try:
        xpnn.set_grad_enabled(False)
        assert xpnn.is_grad_enabled() is False and (x * 2.0).grad_fn is None
        xpnn.set_grad_enabled(1)
        assert xpnn.is_grad_enabled() is True and (x * 2.0).grad_fn is not None
    finally:
        xpnn.set_grad_enabled(True)
    with xpnn.set_grad_enabled(False):
        assert xpnn.is_grad_enabled() is False
        with xpnn.set_grad_enabled(True):
            assert xpnn.is_grad_enabled() is True
        assert xpnn.is_grad_enabled() is False
    assert xpnn.is_grad_enabled() is True
    with xpnn.no_grad():
        with xpnn.set_grad_enabled(0):
            assert xpnn.is_grad_enabled() is False
        assert xpnn.is_grad_enabled() is False
        with xpnn.set_grad_enabled(True):
            assert (x * 2.0).requires_grad
        assert xpnn.is_grad_enabled() is False
    with pytest.raises(KeyError):
        with xpnn.set_grad_enabled(False):
            raise KeyError("boom")
    assert xpnn.is_grad_enabled() is True


def test_set_grad_enabled_as_a_decorator():
    @xpnn.set_grad_enabled(False)
    def frozen(t):
        assert xpnn.is_grad_enabled() is False
        return t * 2.0

    assert xpnn.is_grad_enabled() is True  # decorating does not change the mode
    x = leaf([1.0])
    assert frozen(x).grad_fn is None and frozen.__name__ == "frozen"
    assert xpnn.is_grad_enabled() is True
    with xpnn.no_grad():
        @xpnn.set_grad_enabled(True)
        def live(t):
            return t * 2.0

        assert xpnn.is_grad_enabled() is False
        assert live(x).grad_fn is not None and xpnn.is_grad_enabled() is False


def test_no_grad_and_enable_grad_nest_and_restore():
    x = leaf([1.0])
    with xpnn.no_grad():
        assert xpnn.is_grad_enabled() is False
        with xpnn.no_grad():
            assert xpnn.is_grad_enabled() is False
        assert xpnn.is_grad_enabled() is False
        with xpnn.enable_grad():
            assert xpnn.is_grad_enabled() is True and (x * 2.0).requires_grad
            with xpnn.no_grad():
                assert xpnn.is_grad_enabled() is False
            assert xpnn.is_grad_enabled() is True
        assert xpnn.is_grad_enabled() is False
    assert xpnn.is_grad_enabled() is True
    with xpnn.enable_grad():
        assert xpnn.is_grad_enabled() is True
    assert xpnn.is_grad_enabled() is True
    with pytest.raises(ValueError):
        with xpnn.no_grad():
            raise ValueError("boom")
    assert xpnn.is_grad_enabled() is True


def test_grad_mode_decorators_keep_the_function_and_restore_after_errors():
    @xpnn.no_grad()
    def f(t, fail=False):
        """Doc."""
        assert xpnn.is_grad_enabled() is False
        if fail:
            raise ValueError("inside")
        return g(t)

    @xpnn.enable_grad()
    def g(t):
        assert xpnn.is_grad_enabled() is True
        return t * 2.0

    x = leaf([1.0])
    assert f.__name__ == "f" and f.__doc__ == "Doc."
    assert f(x).requires_grad  # enable_grad inside no_grad records
    assert xpnn.is_grad_enabled() is True
    with pytest.raises(ValueError, match="inside"):
        f(x, fail=True)
    assert xpnn.is_grad_enabled() is True
    with xpnn.no_grad():
        assert g(x).requires_grad and xpnn.is_grad_enabled() is False


def test_no_grad_and_enable_grad_as_bare_decorators(torch):
    """``@xpnn.no_grad`` without parentheses decorates as ``@torch.no_grad`` does; anything else is a TypeError."""
    @xpnn.no_grad
    def off(x):
        return xpnn.is_grad_enabled(), (x * 2).requires_grad

    @torch.no_grad
    def off_torch(x):
        return torch.is_grad_enabled(), (x * 2).requires_grad

    assert off(xpnn.tensor([1.0], requires_grad=True)) == off_torch(torch.ones(1, requires_grad=True)) == (False,
                                                                                                           False)
    assert off.__name__ == "off" and xpnn.is_grad_enabled()
    with xpnn.no_grad():

        @xpnn.enable_grad
        def on():
            return xpnn.is_grad_enabled()

        assert on() and not xpnn.is_grad_enabled()
    with pytest.raises(TypeError, match=r"no_grad\(\) takes no arguments"):
        xpnn.no_grad(3)
