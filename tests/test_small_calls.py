"""The NumPy fast paths of small calls (F.sigmoid, F.sigmoid_backward, F.cross_entropy_with_grad, nn.Linear's explicit
API): on plain NumPy arrays they skip Op.apply and the tape, and must return exactly what the general path returns
(same type, dtype, shape and values), step aside for kernel providers and overrides, and never touch other
namespaces."""
import array_api_strict
import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import _dispatch, nn
from xpnn.autograd import register_override
from xpnn.errors import DTypeError, NamespaceMismatchError, NonFiniteError, ShapeError
from xpnn.functional import losses
from xpnn.functional.activations import ReluBackward, Sigmoid, SigmoidBackward

SHAPES = [(30, 1), (5,), (), (3, 4, 5), (0, 3), (1, 65)]
DTYPES = [np.float32, np.float64]


def general_path():
    """A kernel provider that finds no kernel: the fast paths step aside and the general path runs (reference)."""
    return _dispatch.use_provider(lambda op, xp, dtype: None)


def assert_same(fast, general):
    assert type(fast) is type(general)
    assert fast.dtype == general.dtype and fast.shape == general.shape
    np.testing.assert_array_equal(fast, general)  # (NaN equals NaN here)


def values(shape, dtype, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape) * 30
    flat = x.reshape(-1)
    extremes = [-800.0, 800.0, -90.0, np.nan, np.inf, -np.inf, 0.0, -0.0]
    flat[: min(len(extremes), flat.size)] = extremes[: flat.size]
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_sigmoid_fast_path_equals_general_path(shape, dtype):
    x = values(shape, dtype)
    with np.errstate(over="raise"):  # the fast path keeps the general path's silence on exp overflow
        fast = F.sigmoid(x)
    with general_path():
        general = F.sigmoid(x)
    assert_same(fast, general)
    assert_same(fast, Sigmoid.apply(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_sigmoid_backward_fast_path_equals_general_path(shape, dtype):
    y = F.sigmoid(values(shape, dtype))
    dy = values(shape, dtype, seed=1)
    fast = F.sigmoid_backward(y, dy)
    with general_path():
        general = F.sigmoid_backward(y, dy)
    assert_same(fast, general)
    assert_same(fast, SigmoidBackward.apply(y, dy))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # (the NaN rows)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, c", [(1, 65), (7, 3), (64, 10), (5, 2)])
def test_cross_entropy_with_grad_fast_path_equals_general_path(n, c, dtype, reduction):
    rng = np.random.default_rng(n * c)
    logits = (rng.standard_normal((n, c)) * 20).astype(dtype)
    logits[0, 0] = 1e4  # large logits keep their digits on both paths
    if n > 2:
        logits[1] = -np.inf  # an all -inf row: NaN like the general path (PyTorch's semantics)
        logits[2, 1] = np.nan
    for target in (rng.integers(0, c, n), rng.integers(0, c, n).astype(np.int32)):
        before = logits.copy()
        fast = F.cross_entropy_with_grad(logits, target, reduction=reduction)
        with general_path():
            general = F.cross_entropy_with_grad(logits, target, reduction=reduction)
        np.testing.assert_array_equal(logits, before)  # the logits are not written
        for a, b in zip(fast, general):
            assert_same(a, b)


def _must_not_run(*args, **kwargs):
    raise AssertionError("the general path ran where the NumPy fast path applies")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # (the NaN rows)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, c", [(1, 65), (8, 4), (7, 3), (5, 2)])
def test_cross_entropy_on_tensors_takes_the_fast_path_and_equals_the_general_path(n, c, dtype, reduction,
                                                                                   monkeypatch):
    """The cross_entropy op on a Tensor that needs a gradient (the tape's training step) runs the NumPy fast path
    in its forward: the same loss, the same gradient after backward, as the general (reference) path."""
    rng = np.random.default_rng(n + c)
    logits = (rng.standard_normal((n, c)) * 20).astype(dtype)
    logits[0, 0] = 1e4
    if n > 2:
        logits[1] = -np.inf
        logits[2, 1] = np.nan
    target = rng.integers(0, c, n)

    def run():
        x = xpnn.tensor(logits, requires_grad=True)
        loss = F.cross_entropy(x, target, reduction=reduction)
        loss.backward(np.ones(loss.shape, dtype) if reduction == "none" else None)
        return loss.data, x.grad

    with general_path():
        general = run()
    monkeypatch.setattr(losses, "_cross_entropy", _must_not_run)
    fast = run()
    for a, b in zip(fast, general):
        assert_same(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_relu_backward_fast_path_equals_general_path(shape, dtype, monkeypatch):
    x = np.asarray(values(shape, dtype))  # (0-d too: an array, not a NumPy scalar)
    dy = np.asarray(values(shape, dtype, seed=1))
    with general_path():
        general = F.relu_backward(x, dy)
    assert_same(general, ReluBackward.apply(x, dy))
    monkeypatch.setattr(ReluBackward, "apply", _must_not_run)
    assert_same(F.relu_backward(x, dy), general)


def test_cross_entropy_fast_path_leaves_ignored_labels_and_errors_to_the_general_path():
    logits = np.random.default_rng(0).standard_normal((4, 3))
    loss, grad = F.cross_entropy_with_grad(logits, np.array([0, 1, 2, 1]), ignore_index=1)
    assert np.all(grad[[1, 3]] == 0)  # rows with the ignored label
    with pytest.raises(ValueError, match=r"target values must be in \[0, 3\)"):
        F.cross_entropy_with_grad(logits, np.array([0, 1, 3, 1]))
    with pytest.raises(ValueError, match=r"target values must be in \[0, 3\)"):
        F.cross_entropy_with_grad(logits, np.array([0, -1, 2, 1]))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_linear_explicit_fast_path_equals_the_tape(dtype, bias):
    rng = np.random.default_rng(0)
    fast, tape = nn.Linear(64, 30, bias=bias, dtype=dtype, seed=0), nn.Linear(64, 30, bias=bias, dtype=dtype, seed=0)
    x = rng.standard_normal((10, 64)).astype(dtype)
    dy = rng.standard_normal((10, 30)).astype(dtype)
    for _ in range(2):  # gradients accumulate the same way
        y1, dx1 = fast(x), None
        dx1 = fast.backward(dy)
        with general_path():
            y2 = tape(x)
            assert type(tape.__dict__["_last_call"]) is tuple  # (the recorded call)
            dx2 = tape.backward(dy)
        assert_same(y1, y2)
        assert_same(dx1, dx2)
        for p, q in zip(fast.parameters(), tape.parameters()):
            assert_same(p.grad, q.grad)
    assert fast.backward is not None and fast(x) is not None
    assert fast.backward(dy, need_input_grad=False) is None


def test_linear_explicit_gradients_accumulate_as_the_tape_and_torch():
    """The fast path adds into ``.grad`` as the tape does and as PyTorch accumulates: the first backward, a second
    one without zero_grad (added in place: a reference to ``.grad`` taken before sees the sum, as in PyTorch),
    after zero_grad() (zeroed in place) and after zero_grad(set_to_none=True)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for gradient accumulation")
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((10, 64)) for _ in range(4)]
    dys = [rng.standard_normal((10, 30)) for _ in range(4)]
    fast, tape = nn.Linear(64, 30, dtype="float64", seed=0), nn.Linear(64, 30, dtype="float64", seed=0)
    ref = torch.nn.Linear(64, 30, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(fast.weight.data))
        ref.bias.copy_(torch.from_numpy(fast.bias.data))

    def step(i):
        fast(xs[i])
        dx = fast.backward(dys[i])
        with general_path():
            tape(xs[i])
            assert type(tape.__dict__["_last_call"]) is tuple  # (the recorded call)
            assert_same(dx, tape.backward(dys[i]))
        x = torch.from_numpy(xs[i]).requires_grad_(True)
        ref(x).backward(torch.from_numpy(dys[i]))
        np.testing.assert_allclose(dx, x.grad.numpy(), rtol=1e-12, atol=1e-12)
        for p, q, r in zip(fast.parameters(), tape.parameters(), (ref.weight, ref.bias)):
            assert_same(p.grad, q.grad)
            np.testing.assert_allclose(p.grad, r.grad.numpy(), rtol=1e-12, atol=1e-12)

    step(0)  # first backward
    held = fast.weight.grad
    first = held.copy()
    step(1)  # accumulates, in place
    assert fast.weight.grad is held
    np.testing.assert_allclose(held, first + dys[1].T @ xs[1], rtol=1e-12)
    fast.zero_grad(), tape.zero_grad(), ref.zero_grad(set_to_none=False)
    assert not held.any()  # zeroed in place (as torch's zero_grad(set_to_none=False))
    step(2)
    fast.zero_grad(set_to_none=True), tape.zero_grad(set_to_none=True), ref.zero_grad(set_to_none=True)
    step(3)


def test_a_subclass_fast_path_is_its_own_and_follows_its_forward():
    """The fast path belongs to a class whose forward is the one it computes: a subclass that defines its own
    ``_one_op_call`` (inheriting ``forward``) uses it without touching ``nn.Linear``'s (keyed by the shared forward
    before, it replaced the fast path of every plain Linear); a subclass of that one inherits it; a subclass with its
    own forward runs that forward."""
    from xpnn.nn import explicit

    x = np.ones((4, 3))

    calls = []

    class Counting(nn.Linear):
        def _one_op_call(self, x):
            calls.append(type(self))
            return super()._one_op_call(x)

    class Inherits(Counting):
        pass

    class OwnForward(Counting):
        def forward(self, x):
            return super().forward(x) + 1.0

    plain = nn.Linear(3, 2, dtype="float64", seed=0)
    expected = x @ plain.weight.data.T + plain.bias.data
    np.testing.assert_array_equal(plain(x), expected)
    assert calls == [] and type(plain.__dict__["_last_call"]) is not tuple  # (Linear's own fast path)
    for cls in (Counting, Inherits):
        m = cls(3, 2, dtype="float64", seed=0)
        np.testing.assert_array_equal(m(x), expected)
        assert calls[-1] is cls
    m = OwnForward(3, 2, dtype="float64", seed=0)
    np.testing.assert_array_equal(m(x), expected + 1.0)
    assert len(calls) == 2 and type(m.__dict__["_last_call"]) is tuple  # (the tape ran OwnForward.forward)
    np.testing.assert_array_equal(plain(x), expected)
    assert len(calls) == 2
    assert explicit._ONE_OP[nn.Linear][0] is nn.Linear.__dict__["_one_op_call"]


def test_linear_call_one_op_only_takes_one_numpy_array_of_the_layer_itself():
    """``nn.Linear.__call__`` sends one NumPy array to the fast path; a subclass with a forward or a hand-written
    backward of its own, a Tensor and another namespace's array take ``Module.__call__`` as before."""
    from xpnn.nn import explicit

    assert nn.Linear.__call__ is explicit.call_one_op
    x, dy = np.ones((4, 3)), np.full((4, 2), 0.5)

    class Doubled(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2.0

    m = Doubled(3, 2, dtype="float64", seed=0)
    np.testing.assert_allclose(m(x), 2 * (x @ m.weight.data.T + m.bias.data))
    assert type(m.__dict__["_last_call"]) is tuple  # (the tape's call: Doubled's forward ran)
    np.testing.assert_allclose(m.backward(dy), 2 * dy @ m.weight.data)

    class Manual(nn.Linear):  # the first version's protocol: forward on arrays, its own backward
        def backward(self, dy):
            self.seen = dy
            return dy @ self.weight.data

    m = Manual(3, 2, dtype="float64", seed=0)
    m(x)
    assert m.__dict__["_xpnn_forwards"] == 1 and "_last_call" not in m.__dict__  # (the protocol's call ran)
    m.backward(dy)
    assert m.seen is dy and not m.weight.grad.any()

    m = nn.Linear(3, 2, dtype="float64", seed=0)
    t = xpnn.tensor(x, requires_grad=True)
    m(t).backward(xpnn.tensor(dy))
    assert "_last_call" not in m.__dict__
    np.testing.assert_allclose(t.grad, dy @ m.weight.data)
    s = nn.Linear(3, 2, dtype="float64", seed=0).to(array_api_strict)
    ys = s(array_api_strict.asarray(x))
    np.testing.assert_allclose(np.asarray(ys), m(x), rtol=1e-15)
    np.testing.assert_allclose(np.asarray(s.backward(array_api_strict.asarray(dy))), m.backward(dy), rtol=1e-15)


def test_linear_explicit_fast_path_backward_checks_dy():
    """The fast path's backward accepts a NumPy ``dy`` of the kept output's shape and dtype; anything else gets
    the same errors as before, naming the layer; debug mode turned on after the forward still checks ``dy``."""
    m = nn.Linear(3, 2, dtype="float64", seed=0)
    x = np.ones((4, 3))
    m(x)
    with pytest.raises(ShapeError, match=r"Linear\(in_features=3, out_features=2\): backward expected dy of shape "
                                         r"\(4, 2\), got \(4, 3\)"):
        m.backward(np.ones((4, 3)))
    m(x)
    with pytest.raises(DTypeError, match="expected dy of dtype float64, got float32"):
        m.backward(np.ones((4, 2), np.float32))
    m(x)
    with pytest.raises(NamespaceMismatchError, match=r"Linear\(in_features=3"):  # (not: "float64, got float64")
        m.backward(array_api_strict.ones((4, 2), dtype=array_api_strict.float64))
    m(x)
    with pytest.raises(ShapeError, match="got list"):
        m.backward([[0.0, 0.0]] * 4)
    m(x)
    with xpnn.debug.debug_mode(True):
        with pytest.raises(NonFiniteError, match="dy"):
            m.backward(np.full((4, 2), np.inf))
    m(x)
    np.testing.assert_allclose(m.backward(xpnn.tensor(np.ones((4, 2)))), np.ones((4, 2)) @ m.weight.data)


def test_linear_explicit_fast_path_keeps_no_call_under_no_grad_and_respects_hooks():
    m = nn.Linear(4, 2, dtype="float64", seed=0)
    x = np.ones((3, 4))
    with xpnn.no_grad():
        m(x)
    with pytest.raises(RuntimeError, match="before forward"):
        m.backward(np.ones((3, 2)))
    seen = []
    m.weight.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.copy()))
    m(x)
    m.backward(np.ones((3, 2)))
    assert len(seen) == 1  # a parameter with a hook takes the tape, which fires it



def test_linear_explicit_fast_path_with_a_computed_weight_or_bias_takes_the_tape():
    """A weight or bias that is a Tensor computed from parameters (a tied weight's ``.T``, a scaled bias) is no
    leaf: its gradient must reach the parameters it came from, as through the tape (the fast path accumulated it
    on the computed Tensor and left the parameters without a gradient)."""
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    m = nn.Linear(4, 3, dtype="float64", seed=0)
    base, b = nn.Parameter(rng.standard_normal((4, 3))), nn.Parameter(rng.standard_normal(3))
    m.weight, m.bias = base.T, b * 2.0
    y = m(x)
    np.testing.assert_allclose(y, x @ base.data + 2.0 * b.data, rtol=1e-14)
    np.testing.assert_allclose(m.backward(dy), dy @ base.data.T, rtol=1e-14)
    np.testing.assert_allclose(base.grad, x.T @ dy, rtol=1e-14)
    np.testing.assert_allclose(b.grad, 2.0 * dy.sum(axis=0), rtol=1e-14)
    assert m.weight.grad is None and m.bias.grad is None

def test_fast_paths_step_aside_for_overrides():
    calls = []

    def override(ctx, x):
        calls.append(x.shape)
        return NotImplemented

    register_override("sigmoid", "forward", "numpy", override)
    try:
        F.sigmoid(np.zeros(3))
    finally:
        register_override("sigmoid", "forward", "numpy", None)
    assert calls == [(3,)]


def test_other_namespaces_take_the_general_path():
    x = np.linspace(-5, 5, 12).reshape(4, 3)
    xs = array_api_strict.asarray(x)
    np.testing.assert_array_equal(np.asarray(F.sigmoid(xs)), F.sigmoid(x))
    y = F.sigmoid(x)
    np.testing.assert_array_equal(np.asarray(F.sigmoid_backward(array_api_strict.asarray(y), xs)),
                                  F.sigmoid_backward(y, x))
    t = np.array([0, 2, 1, 1])
    loss, grad = F.cross_entropy_with_grad(xs, array_api_strict.asarray(t))
    want_loss, want_grad = F.cross_entropy_with_grad(x, t)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-13, atol=1e-16)
    # float16 and NumPy scalars/subclasses are not fast-path input either
    h = x.astype(np.float16)
    assert F.sigmoid(h).dtype == np.float16


def test_sigmoid_fast_path_keeps_the_users_numpy_error_state():
    x = np.array([-800.0, 0.0, 800.0])
    with np.errstate(under="raise"):  # exp(-800) underflows: the general path raises too
        with pytest.raises(FloatingPointError, match="underflow"):
            F.sigmoid(x)
    with np.errstate(over="raise"):  # the overflow of exp(800) stays silent, as on the general path
        np.testing.assert_array_equal(F.sigmoid(x), [0.0, 0.5, 1.0])
    with np.errstate(all="warn"):
        np.testing.assert_array_equal(F.sigmoid(x), [0.0, 0.5, 1.0])
    before = np.geterr()
    F.sigmoid(x)  # the state the fast path sets for its exp is reset after it
    assert np.geterr() == before
    with np.errstate(divide="raise"):
        F.sigmoid(x)
        assert np.geterr()["divide"] == "raise" and np.geterr()["over"] == before["over"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # (the NaN row)
@pytest.mark.parametrize("label_dtype", [np.int8, np.uint8, np.int32, np.int64, np.uint64])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_cross_entropy_fast_path_reads_and_writes_the_targets_of_any_layout(layout, label_dtype):
    """The fast path reads and writes the target entries at their flat positions: logits of any memory layout and
    labels of any integer dtype give the general path's loss and gradient."""
    rng = np.random.default_rng(5)
    base = (rng.standard_normal((6, 10)) * 20).astype(np.float32)
    base[2, 3] = np.nan
    logits = {"C": base[:, :5].copy(), "F": np.asfortranarray(base[:, :5]), "strided": base[:, ::2]}[layout]
    target = rng.integers(0, 5, 6).astype(label_dtype)
    for reduction in ("mean", "sum", "none"):
        fast = F.cross_entropy_with_grad(logits, target, reduction=reduction)
        with general_path():
            general = F.cross_entropy_with_grad(logits, target, reduction=reduction)
        for a, b in zip(fast, general):
            assert_same(a, b)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # (the NaN row)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_loss_explicit_fast_path_equals_the_tape(dtype, reduction):
    """``CrossEntropyLoss`` on NumPy arrays runs its op and backward without the tape: the tape's loss and
    gradient, one backward per forward, nothing kept under no_grad."""
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((8, 4)) * 5).astype(dtype)
    logits[3, 1] = np.nan
    target = rng.integers(0, 4, 8)
    fast, tape = nn.CrossEntropyLoss(reduction=reduction), nn.CrossEntropyLoss(reduction=reduction)
    dy = None if reduction != "none" else rng.standard_normal(8).astype(dtype)
    loss1 = fast(logits, target)
    assert type(fast.__dict__["_last_call"]).__name__ == "_OneOpCall"
    dx1 = fast.backward(dy)
    with general_path():
        loss2 = tape(logits, target)
        assert type(tape.__dict__["_last_call"]) is tuple  # (the recorded call)
        dx2 = tape.backward(dy)
    assert_same(np.asarray(loss1), np.asarray(loss2))
    assert type(loss1) is type(loss2)
    assert_same(dx1, dx2)
    with pytest.raises(RuntimeError, match="twice"):
        fast.backward(dy)
    fast(logits, target)
    assert fast.backward(dy, need_input_grad=False) is None
    with xpnn.no_grad():
        assert_same(np.asarray(fast(logits, target)), np.asarray(loss2))
    with pytest.raises(RuntimeError, match="before forward"):
        fast.backward(dy)


def test_cross_entropy_loss_explicit_fast_path_steps_aside():
    """Class weights, class-probability targets and Tensors take the tape."""
    logits = np.random.default_rng(2).standard_normal((5, 3))
    weighted = nn.CrossEntropyLoss(weight=np.array([1.0, 2.0, 0.5]))
    weighted(logits, np.array([0, 1, 2, 1, 0]))
    assert type(weighted.__dict__["_last_call"]) is tuple
    soft = nn.CrossEntropyLoss()
    soft(logits, np.full((5, 3), 1 / 3))
    assert type(soft.__dict__["_last_call"]) is tuple
    plain = nn.CrossEntropyLoss()
    loss = plain(xpnn.tensor(logits, requires_grad=True), np.array([0, 1, 2, 1, 0]))
    assert isinstance(loss, xpnn.Tensor) and "_last_call" not in plain.__dict__


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(8, 16), (16,), (2, 3, 16)])
def test_linear_numpy_gemms_equal_the_matmul_expressions(shape, dtype):
    """Linear on NumPy arrays (np.dot for 2-D) gives exactly ``x @ w.T + b``, ``dy @ w``, ``dy.T @ x``."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(dtype)
    w, b = rng.standard_normal((32, 16)).astype(dtype), rng.standard_normal(32).astype(dtype)
    y = F.linear(x, w, b)
    assert_same(y, x @ w.T + b)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = F.linear_backward(x.reshape(-1, 16), w, dy.reshape(-1, 32))
    assert_same(dx, dy.reshape(-1, 32) @ w)
    assert_same(dw, dy.reshape(-1, 32).T @ x.reshape(-1, 16))
    xt = xpnn.tensor(x, requires_grad=True)
    F.linear(xt, w, b).backward(dy)
    assert_same(xt.grad, (dy.reshape(-1, 32) @ w).reshape(shape))
@pytest.mark.parametrize("xdt,bdt", [(np.float64, np.float32), (np.float32, np.float64), (np.float64, np.int64)])
def test_linear_bias_of_another_dtype_is_refused_on_every_path(xdt, bdt):
    """A bias whose dtype differs from the weight's is a DTypeError naming both dtypes, as in
    ``torch.nn.functional.linear``, on the plain-NumPy path (np.dot), through Tensors and on array_api_strict
    (``y += bias`` silently promoted or rounded the output before)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for linear's dtype rule")
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((5, 4)).astype(xdt), rng.standard_normal((3, 4)).astype(xdt), np.ones(3, bdt)
    with pytest.raises(RuntimeError):
        torch.nn.functional.linear(torch.tensor(x), torch.tensor(w), torch.tensor(b))
    msg = "linear: bias dtype .* differs from weight dtype"
    with pytest.raises(DTypeError, match=msg):
        F.linear(x, w, b)
    with pytest.raises(DTypeError, match=msg):
        F.linear(xpnn.tensor(x, requires_grad=True), xpnn.tensor(w), xpnn.tensor(b))
    with pytest.raises(DTypeError, match=msg):
        F.linear(x[None], w, b)  # (N, *, in)
    xs = array_api_strict
    with pytest.raises(DTypeError, match=msg):
        F.linear(xs.asarray(x), xs.asarray(w), xs.asarray(b))
    assert F.linear(x, w, b.astype(xdt)).dtype == xdt
