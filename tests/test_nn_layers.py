"""Layer behaviour: initialisation, forward values, gradient accumulation, modes, errors."""
import math

import array_api_strict
import numpy as np
import pytest

import xpnn
import xpnn.functional as F
import xpnn.nn as nn
from xpnn.errors import DTypeError, NamespaceMismatchError, NonFiniteError, ShapeError

RNG = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return RNG.normal(size=shape).astype(dtype)


def test_linear_init_like_torch_and_seeded():
    lin = nn.Linear(400, 300, seed=1)
    bound = 1 / math.sqrt(400)
    w, b = lin.weight.data, lin.bias.data
    assert w.shape == (300, 400) and b.shape == (300,) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # uniform on [-bound, bound]: std = bound / sqrt(3)
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound
    np.testing.assert_array_equal(nn.Linear(400, 300, seed=1).weight.data, w)
    assert not np.array_equal(nn.Linear(400, 300, seed=2).weight.data, w)
    # the same seed gives the same weights on another backend
    ws = nn.Linear(400, 300, seed=1, backend=array_api_strict).weight.data
    np.testing.assert_array_equal(xpnn.backend.to_numpy(ws), w)
    assert nn.Linear(3, 2, bias=False).bias is None
    assert [n for n, _ in nn.Linear(3, 2, bias=False).named_parameters()] == ["weight"]


def test_linear_forward_backward_accumulates():
    lin = nn.Linear(5, 4, seed=0, dtype="float64")
    x, dy = randn(3, 5, dtype=np.float64), randn(3, 4, dtype=np.float64)
    y = lin(x)
    np.testing.assert_allclose(y, x @ lin.weight.data.T + lin.bias.data)
    dx = lin.backward(dy)
    np.testing.assert_allclose(dx, dy @ lin.weight.data)
    np.testing.assert_allclose(lin.weight.grad, dy.T @ x)
    with pytest.raises(RuntimeError, match="a backward already used it"):
        lin.backward(dy)  # one backward per forward
    lin(x)
    lin.backward(dy)  # accumulates
    np.testing.assert_allclose(lin.weight.grad, 2 * dy.T @ x)
    np.testing.assert_allclose(lin.bias.grad, 2 * dy.sum(0))
    lin(x)
    assert lin.backward(dy, need_input_grad=False) is None
    np.testing.assert_allclose(lin.bias.grad, 3 * dy.sum(0))


def test_linear_errors_name_the_layer():
    lin = nn.Linear(784, 512)
    with pytest.raises(RuntimeError, match=r"Linear\(in_features=784, out_features=512\): backward\(\) called before"):
        lin.backward(np.zeros((2, 512), np.float32))
    msg = r"Linear\(in_features=784, out_features=512\): expected input of shape \(N, 784\), got \(32, 100\)"
    with pytest.raises(ShapeError, match=msg):
        lin(np.zeros((32, 100), np.float32))
    with pytest.raises(DTypeError, match="float32.*got float64"):
        lin(np.zeros((2, 784), np.float64))
    with pytest.raises(DTypeError):
        lin(np.zeros((2, 784), np.int32))
    with pytest.raises(NamespaceMismatchError, match="Linear"):
        lin(array_api_strict.zeros((2, 784), dtype=array_api_strict.float32))
    lin(np.zeros((2, 784), np.float32))
    with pytest.raises(ShapeError, match=r"dy of shape \(2, 512\)"):
        lin.backward(np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 3)


def test_debug_mode_catches_non_finite_inputs():
    lin = nn.Linear(3, 2)
    x = np.array([[1.0, np.nan, 0.0]], np.float32)
    lin(x)  # off by default
    with xpnn.debug.debug_mode(True):
        with pytest.raises(NonFiniteError, match=r"Linear\(in_features=3, out_features=2\): input contains 1 NaN"):
            lin(x)
        lin(np.ones((1, 3), np.float32))
        with pytest.raises(NonFiniteError, match="dy"):
            lin.backward(np.array([[np.inf, 0.0]], np.float32))


@pytest.mark.parametrize("cls,fn", [
    (nn.Sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    (nn.Tanh, np.tanh),
    (nn.ReLU, lambda x: np.maximum(x, 0)),
    (lambda: nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (lambda: nn.ELU(0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    (nn.SELU, lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x))),
    (nn.Softmax, lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)),
])
def test_activation_forward_values_and_backward_protocol(cls, fn):
    m = cls()
    with pytest.raises(RuntimeError, match="before forward"):
        m.backward(np.ones((2, 3)))
    x = randn(4, 3, dtype=np.float64)
    np.testing.assert_allclose(m(x), fn(x), rtol=1e-12, atol=1e-12)
    assert m.backward(np.ones((4, 3)), need_input_grad=False) is None
    m(x)  # one backward per forward
    assert m.backward(np.ones((4, 3))).shape == (4, 3)
    assert list(m.parameters()) == []


def test_prelu():
    m = nn.PReLU()
    assert m.weight.data.tolist() == [0.25]
    x = np.array([[-2.0, 3.0], [1.0, -4.0]], np.float32)
    np.testing.assert_allclose(m(x), [[-0.5, 3.0], [1.0, -1.0]])
    dx = m.backward(np.ones_like(x))
    np.testing.assert_allclose(dx, [[0.25, 1], [1, 0.25]])
    np.testing.assert_allclose(m.weight.grad, [-6.0])
    y0 = m(np.array(-2.0, np.float32))  # a shared weight keeps the input's shape, 0-d included
    assert y0.shape == () and float(y0) == -0.5 and m.backward(np.array(1.0, np.float32)).shape == ()
    pc = nn.PReLU(2, init=0.5, dtype="float64")
    pc(x.astype(np.float64))
    pc.backward(np.ones((2, 2)))
    np.testing.assert_allclose(pc.weight.grad, [-2.0, -4.0])
    with pytest.raises(ShapeError):
        pc(np.ones((2, 3)))


def test_dropout_train_eval_and_seed():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        nn.Dropout(1.0)
    with pytest.raises(ValueError):
        nn.Dropout(-0.1)
    d = nn.Dropout(0.25, seed=0)
    x = np.ones((400, 500), np.float32)
    y = d(x)
    assert y.dtype == np.float32
    vals = set(np.unique(y).tolist())
    assert vals == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.01
    dx = d.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx, y)  # same mask
    np.testing.assert_array_equal(nn.Dropout(0.25, seed=0)(x), y)
    assert not np.array_equal(d(x), y)  # a new mask each call
    d.eval()
    assert d(x) is x and d.backward(x) is x
    ys = nn.Dropout(0.5, seed=0)(array_api_strict.ones((3, 4), dtype=array_api_strict.float64))
    assert ys.dtype == array_api_strict.float64


def test_batchnorm_train_matches_formula_and_running_stats():
    bn = nn.BatchNorm1d(3, momentum=0.1, dtype="float64")
    x = randn(16, 3, dtype=np.float64) * 2 + 5
    y = bn(x)
    ref = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-10)
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(0))
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * x.var(0, ddof=1))
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    y_eval = bn(x)
    np.testing.assert_allclose(y_eval, (x - bn.running_mean) / np.sqrt(bn.running_var + 1e-5))
    assert int(bn.num_batches_tracked) == 1
    cum = nn.BatchNorm1d(3, momentum=None, dtype="float64")
    x2 = randn(8, 3, dtype=np.float64)
    cum(x)
    cum(x2)
    np.testing.assert_allclose(cum.running_mean, (x.mean(0) + x2.mean(0)) / 2)


def test_batchnorm_float16_statistics_do_not_overflow():
    x = (randn(64, 3, dtype=np.float64) * 300).astype(np.float16)  # (x - mean)**2 overflows float16
    bn = nn.BatchNorm1d(3, dtype="float16")
    y = bn(x)
    assert y.dtype == np.float16 and bn.running_var.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64).std(0), 1.0, rtol=1e-2)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * xd.var(0, ddof=1), rtol=2e-3)
    assert bn.backward(np.ones_like(y)).dtype == np.float16


def test_batchnorm_errors():
    bn = nn.BatchNorm1d(4)
    with pytest.raises(ShapeError, match=r"BatchNorm1d\(4\): expected more than 1 value per channel"):
        bn(np.ones((1, 4), np.float32))
    with pytest.raises(ShapeError, match=r"expected input of shape \(N, 4\), got \(5, 3\)"):
        bn(np.ones((5, 3), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        bn.backward(np.ones((2, 4), np.float32))
    bn.eval()
    assert bn(np.ones((1, 4), np.float32)).shape == (1, 4)  # one sample is fine in eval
    plain = nn.BatchNorm1d(4, affine=False, track_running_stats=False)
    assert list(plain.parameters()) == [] and list(plain.state_dict()) == []
    plain.eval()
    y = plain(randn(6, 4))
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-5)  # batch statistics even in eval


def test_maxout_forward():
    m = nn.Maxout(4, 3, pieces=2, dtype="float64", seed=0)
    assert m.weight.shape == (6, 4)
    x = randn(5, 4, dtype=np.float64)
    z = x @ m.weight.data.T + m.bias.data
    np.testing.assert_allclose(m(x), z.reshape(5, 3, 2).max(-1))
    with pytest.raises(ShapeError, match=r"Maxout.*\(N, 4\)"):
        m(randn(5, 3, dtype=np.float64))


def test_residual():
    inner = nn.Linear(3, 3, dtype="float64", seed=0)
    r = nn.Residual(inner)
    x = randn(2, 3, dtype=np.float64)
    np.testing.assert_allclose(r(x), x + inner(x))
    assert [n for n, _ in r.named_parameters()] == ["module.weight", "module.bias"]
    with pytest.raises(ShapeError, match="Residual"):
        nn.Residual(nn.Linear(3, 2))(randn(2, 3))
    with pytest.raises(TypeError):
        nn.Residual(lambda x: x)


def test_sequential_indexing_and_need_input_grad():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert len(m) == 3 and isinstance(m[-1], nn.Linear) and len(list(m)) == 3
    with pytest.raises(IndexError):
        m[3]
    x = randn(5, 3)
    m(x)
    assert m.backward(np.ones((5, 2), np.float32), need_input_grad=False) is None
    m(x)  # one backward per forward
    assert m.backward(np.ones((5, 2), np.float32)).shape == (5, 3)
    m.append(nn.Sigmoid())
    assert len(m) == 4
    with pytest.raises(TypeError, match="Module"):
        nn.Sequential(nn.ReLU(), "relu")
    from collections import OrderedDict

    named = nn.Sequential(OrderedDict([("fc1", nn.Linear(3, 4)), ("act", nn.ReLU())]))
    assert [n for n, _ in named.named_parameters()] == ["fc1.weight", "fc1.bias"]
    assert "(fc1): Linear(in_features=3, out_features=4, bias=True)" in repr(named)


def test_need_input_grad_false_runs_no_backward_toward_the_input(monkeypatch):
    """Without the input's gradient, an op whose only live input is the input is not run and the first layer's
    op is told not to compute its dx; the parameters get the same gradients."""
    from xpnn.functional import activations
    from xpnn.functional.linear import Linear as LinearOp

    seen = []
    relu_backward, linear_backward = activations.relu_backward, LinearOp.backward

    def linear_spy(ctx, dy):
        seen.append(("linear", ctx.needs_input_grad))
        return linear_backward(ctx, dy)

    monkeypatch.setattr(activations, "relu_backward", lambda *a: seen.append("relu") or relu_backward(*a))
    monkeypatch.setattr(LinearOp, "backward", staticmethod(linear_spy))
    x, dy = randn(5, 3), np.ones((5, 2), np.float32)
    first_relu = nn.Sequential(nn.ReLU(), nn.Linear(3, 2, seed=0))
    first_relu(x)
    assert first_relu.backward(dy, need_input_grad=False) is None
    assert seen == [("linear", (False, True, True))]
    want = [p.grad.copy() for p in first_relu.parameters()]
    first_relu.zero_grad()
    first_relu(x)
    assert first_relu.backward(dy).shape == (5, 3) and seen[1:] == [("linear", (True, True, True)), "relu"]
    for p, g in zip(first_relu.parameters(), want):
        np.testing.assert_array_equal(p.grad, g)
    seen.clear()
    first_linear = nn.Sequential(nn.Linear(3, 4, seed=0), nn.Tanh(), nn.Linear(4, 2, seed=1))
    first_linear(x)
    assert first_linear.backward(dy, need_input_grad=False) is None
    assert seen == [("linear", (True, True, True)), ("linear", (False, True, True))]


def test_user_module_without_flag_in_sequential():
    class Double(nn.Module):
        def forward(self, x):
            return 2 * x

        def backward(self, dy):
            return 2 * dy

    m = nn.Sequential(Double(), nn.Linear(2, 2))
    m(np.ones((1, 2), np.float32))
    assert m.backward(np.ones((1, 2), np.float32), need_input_grad=False) is None


def test_losses():
    logits = randn(6, 4, dtype=np.float64)
    t = np.array([0, 1, 2, 3, 0, 1])
    ce = nn.CrossEntropyLoss()
    with pytest.raises(RuntimeError, match="before forward"):
        ce.backward()
    loss = ce(logits, t)
    assert loss.shape == ()
    loss_ref, grad_ref = xpnn.functional.cross_entropy_with_grad(logits, t)
    np.testing.assert_allclose(loss, loss_ref)
    np.testing.assert_allclose(ce.backward(), grad_ref)
    none = nn.CrossEntropyLoss(reduction="none", label_smoothing=0.1, ignore_index=3)
    assert none(logits, t).shape == (6,)
    assert not none.backward()[3].any()
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError):
        nn.CrossEntropyLoss(label_smoothing=2.0)
    with pytest.raises(DTypeError):
        ce(logits, t.astype(np.float64))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        ce(logits, np.array([0, 1, 2, 3, 4, 0]))
    mse = nn.MSELoss()
    pred, target = randn(3, 2, dtype=np.float64), randn(3, 2, dtype=np.float64)
    np.testing.assert_allclose(mse(pred, target), ((pred - target) ** 2).mean())
    np.testing.assert_allclose(mse.backward(), 2 * (pred - target) / 6)
    bce = nn.BCEWithLogitsLoss(reduction="sum")
    p01 = RNG.uniform(size=(3, 2))
    ref = -(p01 * np.log(1 / (1 + np.exp(-pred))) + (1 - p01) * np.log(1 - 1 / (1 + np.exp(-pred)))).sum()
    np.testing.assert_allclose(bce(pred, p01), ref)
    np.testing.assert_allclose(bce.backward(), 1 / (1 + np.exp(-pred)) - p01)
    assert "reduction='sum'" in repr(bce)


def test_float64_model_end_to_end():
    m = nn.Sequential(nn.Linear(4, 8, dtype="float64", seed=0), nn.BatchNorm1d(8, dtype="float64"), nn.ELU(),
                      nn.Dropout(0.1, seed=0), nn.Maxout(8, 4, dtype="float64", seed=1), nn.PReLU(dtype="float64"),
                      nn.Residual(nn.Linear(4, 4, dtype="float64", seed=2)), nn.Linear(4, 3, dtype="float64", seed=3))
    assert xpnn.nn.flat_buffer_of(m.parameters()).data.dtype == np.float64
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(m(randn(10, 4, dtype=np.float64)), np.arange(10) % 3)
    assert loss.dtype == np.float64
    m.zero_grad()
    dx = m.backward(loss_fn.backward())
    assert dx.shape == (10, 4) and dx.dtype == np.float64


@pytest.mark.skipif(xpnn.backend.cuda_available(), reason="checks the error raised when no CUDA device exists")
def test_backend_cuda_without_gpu_raises():
    with pytest.raises(xpnn.BackendUnavailableError, match="cuda"):
        nn.Linear(3, 2, backend="cuda")
    with pytest.raises(xpnn.BackendUnavailableError):
        nn.Sequential(nn.Linear(3, 2)).to("cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not xpnn.backend.cuda_available(), reason="needs CuPy and a CUDA device")
def test_model_on_cuda_matches_numpy():
    import cupy

    def build():
        return nn.Sequential(nn.Linear(6, 8, seed=0), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3, seed=1),
                             nn.Maxout(8, 4, seed=2), nn.Linear(4, 3, seed=3))

    x, t = randn(16, 6), np.arange(16) % 3
    cpu, gpu = build().eval(), build().to("cuda").eval()
    assert isinstance(nn.flat_buffer_of(gpu.parameters()).data, cupy.ndarray)
    loss_c, loss_g = nn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    lc = loss_c(cpu(x), t)
    lg = loss_g(gpu(cupy.asarray(x)), cupy.asarray(t))
    np.testing.assert_allclose(float(lg), float(lc), rtol=1e-5)
    cpu.backward(loss_c.backward())
    gpu.backward(loss_g.backward())
    np.testing.assert_allclose(nn.flat_buffer_of(gpu.parameters()).grad.get(),
                               nn.flat_buffer_of(cpu.parameters()).grad, rtol=1e-4, atol=1e-6)
    gpu.train()
    y = gpu(cupy.asarray(x))
    assert isinstance(y, cupy.ndarray)
    gpu.backward(cupy.ones_like(y))
    with pytest.raises(xpnn.NamespaceMismatchError, match="Linear"):
        gpu(x)


# --- the explicit API from NumPy code ----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: nn.Linear(4, 3, dtype="float64", seed=0),  # (the fast path without the tape)
    lambda: nn.Sequential(nn.Linear(4, 3, dtype="float64", seed=0), nn.ReLU()),
    lambda: nn.Sigmoid(),
])
def test_a_second_backward_for_one_forward_says_so(make):
    m = make()
    x = np.ones((2, 4)) if not isinstance(m, nn.Sigmoid) else np.ones((2, 3))
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
        m.backward(np.ones((2, 3)))
    m(x)
    m.backward(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"backward\(\) called twice for one forward"):
        m.backward(np.ones((2, 3)))
    m(x)  # a new forward allows a new backward
    assert m.backward(np.ones((2, 3))).shape == x.shape


def test_loss_module_second_backward_says_twice():
    ce = nn.CrossEntropyLoss()
    ce(np.zeros((2, 3)), np.array([0, 1]))
    ce.backward()
    with pytest.raises(RuntimeError, match="called twice for one forward"):
        ce.backward()


def test_linear_on_a_column_vector_says_transpose():
    m = nn.Linear(64, 30, dtype="float64")
    with pytest.raises(ShapeError, match=r"expected input of shape \(N, 64\), got \(64, 1\); .*pass x.T"):
        m(np.ones((64, 1)))
    assert m(np.ones(64)).shape == (30,)  # one unbatched sample, as in PyTorch
    with pytest.raises(ShapeError, match=r"expected input of shape \(N, 64\), got \(64, 1\); .*pass x.T"):
        m(xpnn.tensor(np.ones((64, 1))))


def test_the_core_does_not_import_the_explicit_api():
    """``Module`` on Tensors, autograd and functional never import ``xpnn.nn.explicit`` (the explicit API is a layer
    on top: ``Module`` reaches it through one lazily set reference, inside a function)."""
    import ast
    import pathlib

    root = pathlib.Path(xpnn.__file__).parent
    core = [root / "nn" / "module.py", *sorted((root / "autograd").glob("*.py")),
            *sorted((root / "functional").glob("*.py"))]
    for path in core:
        tree = ast.parse(path.read_text())
        for node in tree.body:  # top-level statements only
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" if node.module else a.name for a in node.names] + [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            assert not any(n.split(".")[-1] == "explicit" for n in names), f"{path.name} imports the explicit API"


def test_explicit_api_runs_and_tape_call_does_not_use_it():
    """A call on Tensors runs ``forward`` and leaves nothing for the explicit ``backward``; a call on arrays keeps it."""
    m = nn.Linear(3, 2, dtype="float64", seed=0)
    y = m(xpnn.tensor(np.ones((4, 3))))
    assert isinstance(y, xpnn.Tensor) and "_last_call" not in m.__dict__
    with pytest.raises(RuntimeError, match="before forward"):
        m.backward(np.ones((4, 2)))
    out = m(np.ones((4, 3)))
    assert type(out) is np.ndarray
    np.testing.assert_allclose(m.backward(np.ones((4, 2))), np.ones((4, 2)) @ m.weight.data)


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 2, 3, 4)])
def test_linear_takes_any_leading_dims_as_torch(shape):
    """nn.Linear maps (*, in_features) -> (*, out_features) like torch.nn.Linear (a transformer's (N, L, in)), on
    Tensors (gradients of input, weight and bias) and through the explicit API (arrays in, ``backward(dy)``)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for nn.Linear")
    rng = np.random.default_rng(0)
    lin = nn.Linear(4, 5, dtype="float64", seed=0)
    ref = torch.nn.Linear(4, 5, dtype=torch.float64)
    ref.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in lin.state_dict().items()})
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape[:-1] + (5,))
    tx = torch.tensor(x, requires_grad=True)
    ty = ref(tx)
    ty.backward(torch.tensor(dy))
    xt = xpnn.tensor(x, requires_grad=True)
    y = lin(xt)
    y.backward(dy)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(xt.grad, tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(lin.weight.grad, ref.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(lin.bias.grad, ref.bias.grad.numpy(), rtol=1e-12)
    lin.zero_grad()
    np.testing.assert_allclose(lin(x), ty.detach().numpy(), rtol=1e-12)  # explicit API
    np.testing.assert_allclose(lin.backward(dy), tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(lin.weight.grad, ref.weight.grad.numpy(), rtol=1e-12)


def test_linear_leading_dims_on_array_api_strict_and_errors():
    lin = nn.Linear(4, 3, dtype="float64", seed=0)
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    want = x @ np.asarray(lin.weight).T + np.asarray(lin.bias)
    lin.to(array_api_strict)
    y = lin(xpnn.tensor(x, backend=array_api_strict))
    np.testing.assert_allclose(np.asarray(y.to("numpy").numpy()), want, rtol=1e-12)
    with pytest.raises(ShapeError, match=r"Linear\(in_features=4, out_features=3\): expected input of shape "
                                         r"\(N, \*, 4\), got \(2, 3, 5\)"):
        nn.Linear(4, 3)(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ShapeError, match=r"Linear\(in_features=4, out_features=3\): expected input of shape "
                                         r"\(N, \*, 4\), got \(2, 3, 5\)"):
        nn.Linear(4, 3)(xpnn.tensor(np.zeros((2, 3, 5), np.float32)))


@pytest.mark.parametrize("shape", [(4,), (0, 4), (2, 0, 4)])
@pytest.mark.parametrize("path", ["tape", "explicit", "strict tape", "strict explicit", "functional"])
def test_linear_takes_unbatched_and_empty_input_like_torch(shape, path):
    """``torch.nn.Linear`` takes (*, in_features): one unbatched sample (in,) -> (out,), an empty batch (0, in) ->
    (0, out) whose weight and bias gradients are zeros; on the tape, the explicit API (NumPy's one-op fast path and
    the generic path on array_api_strict) and ``F.linear``. (The layer refused both before.)"""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for Linear's input shapes")
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape[:-1] + (3,))
    ref = torch.nn.Linear(4, 3, dtype=torch.float64)
    tx = torch.tensor(x, requires_grad=True)
    ty = ref(tx)
    ty.backward(torch.tensor(dy))
    lin = nn.Linear(4, 3, dtype="float64")
    lin.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    strict = path.startswith("strict")
    if strict:
        lin.to(array_api_strict)
    conv = (lambda a: array_api_strict.asarray(a)) if strict else (lambda a: a)
    back = (lambda a: np.asarray(a.to("numpy").numpy() if isinstance(a, xpnn.Tensor) else np.asarray(a)))
    if path.endswith("explicit"):
        y = lin(conv(x))
        dx = lin.backward(conv(dy))
    else:
        xt = xpnn.tensor(conv(x), requires_grad=True)
        y = lin(xt) if path != "functional" else F.linear(xt, lin.weight, lin.bias)
        y.backward(xpnn.tensor(conv(dy)))
        dx = xt.grad
    assert tuple(y.shape) == tuple(ty.shape)
    np.testing.assert_allclose(back(y), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(back(dx), tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(back(lin.weight.grad), ref.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(back(lin.bias.grad), ref.bias.grad.numpy(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ShapeError, match=r"Linear\(in_features=4, out_features=3\): expected input of shape "
                                         r"\(N, \*, 4\), got \(5,\)"):
        lin(conv(np.zeros(5)))


@pytest.mark.parametrize("shape", [(3, 5, 4), (0, 2, 4), (2, 0, 4)])
def test_linear_leading_dims_fold_into_one_matmul_per_slice_values(shape):
    """On NumPy, F.linear folds (..., in) into (rows, in) for one GEMM (forward and dx): the values are those of the
    per-slice 2-D product, for a non-contiguous input view and empty leading axes too."""
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal((6, 4)), rng.standard_normal(6)
    for x in (rng.standard_normal(shape), np.swapaxes(rng.standard_normal((shape[1], shape[0], 4)), 0, 1)):
        want = np.stack([s @ w.T + b for s in x]) if shape[0] else np.zeros(shape[:-1] + (6,))
        xt = xpnn.tensor(x, requires_grad=True)
        y = F.linear(xt, xpnn.tensor(w), xpnn.tensor(b))
        assert y.shape == shape[:-1] + (6,)
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-13, atol=1e-13)
        dy = rng.standard_normal(y.shape)
        y.backward(dy)
        want_dx = np.stack([d @ w for d in dy]) if shape[0] else np.zeros(shape)
        np.testing.assert_allclose(xt.grad, want_dx, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("bad", [[[1.0, 2.0, 3.0, 4.0]], 3.0, None])
def test_layers_called_with_a_list_or_number_raise_a_type_error_naming_the_layer(bad):
    """A layer called with something that is no array or Tensor raises TypeError naming the layer (PyTorch:
    ``TypeError: linear(): argument 'input' must be Tensor, not list``), not an AttributeError from inside it."""
    layers = [nn.Linear(4, 3), nn.Conv2d(1, 2, 3), nn.BatchNorm1d(4), nn.BatchNorm2d(4), nn.Flatten(),
              nn.LayerNorm(4), nn.PReLU(), nn.Sequential(nn.Linear(4, 3), nn.ReLU()), nn.MaxPool2d(2)]
    for m in layers:
        with pytest.raises(TypeError, match=r"\(|layer_norm|prelu") as info:
            m(bad)
        assert type(info.value) is TypeError, (m, info.value)
