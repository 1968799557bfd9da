"""Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, BatchNorm2d: finite-difference gradchecks through the
explicit API (float64), a PyTorch CNN's state_dict giving the same logits and gradients, PyTorch's init, dtypes,
layer-named errors, `xpnn train --model cnn` and the CNN example."""
import re

import numpy as np
import pytest

import xpnn
import xpnn.functional as F_
from xpnn import nn, optim
from xpnn.cli import main
from xpnn.errors import DTypeError, ShapeError
from _numgrad import numeric_grad

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed; the comparison with it is optional")

EPS = 1e-6


def randn(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape)


def check_module(m, x, train=True):
    m.train(train)
    g = randn(*m(x).shape, seed=5)
    m.zero_grad()
    m(x)
    dx = m.backward(g)
    analytic = {n: np.array(p.grad) for n, p in m.named_parameters()}

    def f():
        return float(np.sum(m(x) * g))

    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-6, atol=1e-8, err_msg="input gradient")
    for name, p in m.named_parameters():
        np.testing.assert_allclose(analytic[name], numeric_grad(f, p.data), rtol=1e-6, atol=1e-8, err_msg=name)


D = dict(dtype="float64", seed=0)
MODULES = [
    (lambda: nn.Conv2d(3, 4, (3, 2), **D), (2, 3, 6, 5)),
    (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2, **D), (2, 4, 7, 8)),
    (lambda: nn.Conv2d(2, 4, 2, padding="same", dilation=(1, 2), bias=False, **D), (2, 2, 5, 6)),
    (lambda: nn.Conv2d(3, 3, 1, stride=3, groups=3, **D), (1, 3, 7, 7)),
    (lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 2, 7, 6)),
    (lambda: nn.MaxPool2d((2, 3), (1, 2), dilation=(2, 1)), (1, 2, 6, 7)),
    (lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), (2, 2, 7, 6)),
    (lambda: nn.AvgPool2d(2, padding=1), (1, 2, 5, 5)),
    (lambda: nn.AdaptiveAvgPool2d((3, None)), (2, 2, 7, 5)),
    (lambda: nn.Flatten(), (2, 3, 2, 2)),
    (lambda: nn.BatchNorm2d(3, dtype="float64"), (3, 3, 2, 3)),
    (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, **D), nn.BatchNorm2d(3, dtype="float64"), nn.ReLU(),
                           nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 2, **D)), (3, 2, 4, 4)),
    # one unbatched (C, H, W) sample, as PyTorch takes it
    (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2, **D), (4, 7, 8)),
    (lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 7, 6)),
    (lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), (2, 7, 6)),
    (lambda: nn.AdaptiveAvgPool2d((3, None)), (2, 7, 5)),
    (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, **D), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Flatten(0), nn.Linear(12, 2, **D)), (2, 4, 4)),
]


@pytest.mark.parametrize("make,shape", MODULES)
def test_gradcheck_explicit_api(make, shape):
    check_module(make(), randn(*shape))


def test_batchnorm2d_eval_gradcheck():
    m = nn.BatchNorm2d(3, dtype="float64")
    m(randn(4, 3, 3, 3) * 2 + 1)  # running statistics
    check_module(m, randn(2, 3, 2, 2), train=False)


@needs_torch
def test_pytorch_cnn_state_dict_gives_the_same_logits_and_gradients():
    torch.manual_seed(0)
    tm = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.BatchNorm2d(6), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5, groups=2), torch.nn.ReLU(), torch.nn.AvgPool2d(2, ceil_mode=True),
        torch.nn.AdaptiveAvgPool2d((3, 3)), torch.nn.Flatten(), torch.nn.Linear(144, 10))
    xm = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, groups=2), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True),
        nn.AdaptiveAvgPool2d((3, 3)), nn.Flatten(), nn.Linear(144, 10))
    tm(torch.randn(8, 1, 28, 28))  # non-trivial running statistics
    state = {k: v.numpy() for k, v in tm.state_dict().items()}
    assert list(state) == list(xm.state_dict())  # PyTorch's names, in PyTorch's order
    assert xm.load_state_dict(state) == ([], [])
    x = randn(4, 1, 28, 28).astype(np.float32)
    for mode in ("eval", "train"):
        getattr(tm, mode)()
        getattr(xm, mode)()
        tx = torch.tensor(x, requires_grad=True)
        ty = tm(tx)
        y = xm(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
        dy = randn(*y.shape, seed=3).astype(np.float32)
        tm.zero_grad()
        ty.backward(torch.tensor(dy))
        xm.zero_grad()
        np.testing.assert_allclose(xm.backward(dy), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
        for (name, p), tp in zip(xm.named_parameters(), tm.parameters()):
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
    for k in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        np.testing.assert_allclose(np.asarray(xm.state_dict()[k], np.float64), tm.state_dict()[k].numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_conv2d_init_like_pytorch():
    m = nn.Conv2d(6, 8, (3, 5), groups=2, seed=0)
    bound = 1 / np.sqrt(3 * 3 * 5)  # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert m.weight.shape == (8, 3, 3, 5) and m.bias.shape == (8,)
    assert np.abs(m.weight.data).max() <= bound and np.abs(m.bias.data).max() <= bound
    assert np.abs(m.weight.data).max() > 0.9 * bound
    np.testing.assert_array_equal(nn.Conv2d(6, 8, 3, seed=7).weight.data, nn.Conv2d(6, 8, 3, seed=7).weight.data)
    assert nn.Conv2d(6, 8, 3, bias=False).bias is None
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_cnn_dtypes(dtype):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, dtype=dtype, seed=0), nn.BatchNorm2d(4, dtype=dtype),
                          nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3, dtype=dtype, seed=0))
    x = randn(5, 1, 8, 8).astype(dtype)
    y = model(x)
    assert y.dtype == np.dtype(dtype) and y.shape == (5, 3)
    dx = model.backward(np.ones_like(y))
    assert dx.dtype == np.dtype(dtype) and dx.shape == x.shape
    assert all(p.grad.dtype == np.dtype(dtype) for p in model.parameters())


def test_layer_errors_name_the_layer_and_shapes():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ShapeError, match=r"Conv2d\(3, 4, kernel_size=\(3, 3\).*expected input \(N, 3, H, W\) "
                                         r"with 3 channels, got shape \(2, 2, 5, 5\)"):
        conv(np.zeros((2, 2, 5, 5), np.float32))
    with pytest.raises(ShapeError, match=r"Conv2d.*expected 3-D \(3, H, W\) or 4-D \(N, 3, H, W\) input, "
                                         r"got shape \(5, 5\)"):
        conv(np.zeros((5, 5), np.float32))
    with pytest.raises(ShapeError, match=r"Conv2d.*expected 3-D \(3, H, W\) or 4-D \(N, 3, H, W\) input, "
                                         r"got shape \(1, 1, 3, 5, 5\)"):
        conv(np.zeros((1, 1, 3, 5, 5), np.float32))
    with pytest.raises(ShapeError, match=r"Conv2d.*expected input \(3, H, W\) with 3 channels, got shape \(2, 5, 5\)"):
        conv(np.zeros((2, 5, 5), np.float32))
    with pytest.raises(ShapeError, match=r"BatchNorm2d\(3\).*expected 4-D input \(N, 3, H, W\), got shape "
                                         r"\(3, 2, 2\)"):
        nn.BatchNorm2d(3)(np.zeros((3, 2, 2), np.float32))  # 4-D only, as torch.nn.BatchNorm2d
    with pytest.raises(ShapeError, match=r"Conv2d.*smaller than the kernel"):
        conv(np.zeros((1, 3, 2, 2), np.float32))
    with pytest.raises(DTypeError, match=r"Conv2d.*expected input of dtype float32.*got float64"):
        conv(np.zeros((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode 'reflect' is not supported"):
        nn.Conv2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="'same' is not supported for strided"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    for pool in (nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(2)):
        for shape in ((2, 4), (1, 1, 2, 4, 4)):
            with pytest.raises(ShapeError, match=rf"{type(pool).__name__}\(.*expected 3-D \(C, H, W\) or 4-D "
                                                 rf"\(N, C, H, W\) input, got shape {re.escape(str(shape))}"):
                pool(np.zeros(shape, np.float32))
    with pytest.raises(ShapeError, match=r"BatchNorm2d\(3\).*3 channels, got shape \(2, 4, 2, 2\)"):
        nn.BatchNorm2d(3)(np.zeros((2, 4, 2, 2), np.float32))
    with pytest.raises(RuntimeError, match=r"MaxPool2d.*backward\(\) called before forward\(\)"):
        nn.MaxPool2d(2).backward(np.zeros((1, 1, 1, 1)))
    y = conv(np.zeros((2, 3, 5, 5), np.float32))
    with pytest.raises(ShapeError, match=r"Conv2d.*backward expected dy of shape \(2, 4, 3, 3\)"):
        conv.backward(np.zeros((2, 4, 4, 4), np.float32))
    assert y.shape == (2, 4, 3, 3)


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Conv2d(3, 4, 3, padding=1, dtype="float64"), (0, 3, 5, 5)),
    (lambda: nn.MaxPool2d(2), (0, 3, 4, 4)),
    (lambda: nn.AvgPool2d(2), (0, 3, 4, 4)),
    (lambda: nn.AdaptiveAvgPool2d(2), (0, 3, 4, 4)),
    (lambda: nn.BatchNorm2d(3, dtype="float64"), (0, 3, 2, 2)),
    (lambda: nn.BatchNorm2d(3, dtype="float64").eval(), (0, 3, 2, 2)),
    (lambda: nn.Flatten(), (0, 3, 2, 2)),
])
def test_image_layers_take_an_empty_batch_like_torch(make, shape):
    """A batch of 0 (PyTorch's layers take it; these refused it before): the output shape of the torch layer, an
    empty input gradient and all-zero parameter gradients, on the tape and the explicit API."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for the layers' empty batch")
    m = make()
    name = type(m).__name__
    ref = {"Conv2d": lambda: torch.nn.Conv2d(3, 4, 3, padding=1), "MaxPool2d": lambda: torch.nn.MaxPool2d(2),
           "AvgPool2d": lambda: torch.nn.AvgPool2d(2), "AdaptiveAvgPool2d": lambda: torch.nn.AdaptiveAvgPool2d(2),
           "BatchNorm2d": lambda: torch.nn.BatchNorm2d(3), "Flatten": lambda: torch.nn.Flatten()}[name]().double()
    ref.train(m.training)
    if m.state_dict():
        m.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    xt = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    yt = ref(xt)
    yt.sum().backward()
    x = xpnn.tensor(np.zeros(shape), requires_grad=True)
    y = m(x)
    assert tuple(y.shape) == tuple(yt.shape)
    y.sum().backward()
    assert x.grad.shape == shape
    for n, p in m.named_parameters():
        np.testing.assert_array_equal(p.grad, ref.get_parameter(n).grad.numpy(), err_msg=n)
    m.zero_grad()
    assert m(np.zeros(shape)).shape == tuple(yt.shape)  # the explicit API
    assert m.backward(np.zeros(tuple(yt.shape))).shape == shape
    for n, buf in m.named_buffers():
        np.testing.assert_array_equal(buf, ref.get_buffer(n).numpy() * (2 if n == "num_batches_tracked" else 1),
                                      err_msg=n)  # (two training calls here, one in torch)


@pytest.mark.parametrize("name,args,shape", [
    ("Conv2d", (4, 6, 3), (4, 7, 8)),
    ("Conv2d", dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, padding=1, dilation=2, groups=2),
     (4, 9, 8)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 7, 6)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (2, 7, 6)),
    ("AdaptiveAvgPool2d", ((3, None),), (2, 7, 5)),
])
def test_image_layers_take_an_unbatched_sample_like_torch(name, args, shape):
    """One (C, H, W) sample (torch's unbatched input; refused before): torch's output and gradients (float64), on
    the tape and through the explicit API (a 3-D dy)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for the layers' unbatched input")
    pos, kw = (args, {}) if isinstance(args, tuple) else ((), args)
    ref = getattr(torch.nn, name)(*pos, **kw).double()
    m = getattr(nn, name)(*pos, **kw, **(D if name == "Conv2d" else {}))
    if m.state_dict():
        m.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    x, xt = randn(*shape), torch.tensor(randn(*shape), requires_grad=True)
    yt = ref(xt)
    dy = randn(*yt.shape, seed=7)
    yt.backward(torch.tensor(dy))
    tx = xpnn.tensor(x, requires_grad=True)
    y = m(tx)
    assert tuple(y.shape) == tuple(yt.shape) == (m(x[None]).shape[1:])
    F_.sum(y * xpnn.tensor(dy)).backward()
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tx.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, ref.get_parameter(n).grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=n)
    m.zero_grad()
    y_arr = m(x)  # the explicit API
    assert isinstance(y_arr, np.ndarray)
    np.testing.assert_allclose(y_arr, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.backward(dy), xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, ref.get_parameter(n).grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=n)


def test_batchnorm2d_running_statistics_follow_batchnorm1d():
    x = randn(4, 3, 2, 5) * 3 + 2
    bn2, bn1 = nn.BatchNorm2d(3, momentum=None, dtype="float64"), nn.BatchNorm1d(3, momentum=None, dtype="float64")
    for _ in range(2):
        y2 = bn2(x)
        y1 = bn1(x.transpose(0, 2, 3, 1).reshape(-1, 3))
    np.testing.assert_allclose(y2, y1.reshape(4, 2, 5, 3).transpose(0, 3, 1, 2))
    np.testing.assert_allclose(bn2.running_var, bn1.running_var)
    n = 4 * 2 * 5
    np.testing.assert_allclose(bn2.running_var, x.var(axis=(0, 2, 3)) * n / (n - 1))  # unbiased, cumulative


def test_flatten_dims():
    x = np.zeros((2, 3, 4, 5))
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 1)(x).shape == (6, 4, 5)
    assert nn.Flatten(-2)(x).shape == (2, 3, 20)
    with pytest.raises(ShapeError, match="Flatten"):
        nn.Flatten(3, 1)(x)


def test_cnn_trains_and_moves_backends():
    from xpnn.models import digits_cnn

    model = digits_cnn(seed=0)
    model.to(dtype="float64")
    opt = optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    x, y = randn(16, 1, 8, 8), np.arange(16) % 10
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()
        first = float(loss) if first is None else first
    assert float(loss) < first / 10
    assert xpnn.nn.flat_buffer_of(model.parameters()) is not None  # one flat buffer for the whole CNN


def _accuracy(out: str) -> float:
    return float(out.split("test accuracy: ")[1].split()[0])


@pytest.mark.parametrize("seed", [3])  # the seed (split) with the lowest accuracy of 0-9: 98.9%
def test_train_model_cnn_reaches_98_5_percent_on_digits(capsys, seed):
    assert main(["train", "--model", "cnn", "--no-progress", "--seed", str(seed)]) == 0
    out = capsys.readouterr().out
    assert "model cnn conv3x3(16)-conv3x3(32)-maxpool2-64 on 1x8x8 images" in out
    assert out.count("\nepoch ") == 15
    assert _accuracy(out) >= 0.985


def test_train_model_cnn_rejects_non_square_rows(capsys):
    from xpnn.cli import _image_shape

    with pytest.raises(ValueError, match="square single-channel images"):
        _image_shape(60)
    assert _image_shape(784) == (1, 28, 28)


# ---- the tape (Tensors in) -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make,shape", MODULES)
def test_tape_gives_the_explicit_api_gradients(make, shape):
    """The same module through Tensors (recorded) and through arrays (explicit backward): equal gradients."""
    import xpnn.functional as F

    m = make()
    x = randn(*shape)
    g = randn(*m(x).shape, seed=5)
    m.zero_grad()
    m(x)
    dx = m.backward(g)
    want = {n: np.array(p.grad) for n, p in m.named_parameters()}
    m.zero_grad()
    xt = xpnn.tensor(x, requires_grad=True)
    out = m(xt)
    assert isinstance(out, xpnn.Tensor)
    F.sum(out * xpnn.tensor(g)).backward()
    np.testing.assert_allclose(xt.grad, dx, rtol=1e-12, atol=1e-14)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, want[n], rtol=1e-12, atol=1e-14, err_msg=n)


@pytest.mark.parametrize("fn", [
    lambda x, w: F_.conv2d(x, w, None, 2, 1, 1, 1),
    lambda x, w: F_.max_pool2d(F_.conv2d(x, w, padding=1), 3, 2, 1, ceil_mode=True),
    lambda x, w: F_.avg_pool2d(F_.conv2d(x, w), 2, 1, 1, count_include_pad=False),
    lambda x, w: F_.adaptive_avg_pool2d(F_.conv2d(x, w, dilation=2, padding=2), (2, 3)),
])
def test_tape_gradcheck_of_the_ops(fn):
    """Finite differences of sum(f(x, w) * g) against the tape's gradients for x and w (float64)."""
    x, w = randn(2, 2, 6, 6, seed=1), randn(3, 2, 3, 3, seed=2)
    g = randn(*fn(x, w).shape, seed=3)
    xt, wt = xpnn.tensor(x, requires_grad=True), xpnn.tensor(w, requires_grad=True)
    F_.sum(fn(xt, wt) * xpnn.tensor(g)).backward()
    f = lambda: float(np.sum(fn(x, w) * g))  # noqa: E731
    np.testing.assert_allclose(xt.grad, numeric_grad(f, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(wt.grad, numeric_grad(f, w), rtol=1e-6, atol=1e-8)


def test_higher_order_gradients_are_refused_with_a_clear_error():
    x, w = xpnn.tensor(randn(1, 1, 4, 4), requires_grad=True), xpnn.tensor(randn(1, 1, 3, 3), requires_grad=True)
    with pytest.raises(NotImplementedError, match="conv2d: higher-order gradients"):
        xpnn.grad(F_.sum(F_.conv2d(x, w) * F_.conv2d(x, w)), [x], create_graph=True)


def test_predict_from_a_cnn_checkpoint(capsys, tmp_path):
    from xpnn.data import load_digits

    ckpt = tmp_path / "cnn.npz"
    assert main(["train", "--model", "cnn", "--epochs", "2", "--no-progress", "--save", str(ckpt)]) == 0
    X, y = load_digits()
    np.save(tmp_path / "rows.npy", X[:20])
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "rows.npy")]) == 0
    labels = [int(v) for v in capsys.readouterr().out.split()]
    assert len(labels) == 20 and np.mean(np.array(labels) == y[:20]) > 0.8


@pytest.mark.parametrize("pool", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                  dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                  dict(kernel_size=2, stride=1, dilation=2), dict(kernel_size=(2, 3), stride=(1, 2)),
                                  dict(kernel_size=2, stride=1, padding=1, dilation=2)])
def test_sequential_relu_then_max_pool_matches_the_composition(pool, monkeypatch):
    """``Sequential`` runs a ReLU followed by a MaxPool2d as the pooling first, then the ReLU on the pooled array
    (when every window holds an input element: no dilation, or no padding): output, input gradient and the conv's
    parameter gradients equal those of ReLU then pooling exactly, on the tape and through the explicit API, with
    ties at zero, windows of only negatives, -0.0, -inf and NaN in the input."""
    rng = np.random.default_rng(0)
    x = rng.choice(np.array([-2.0, -1.0, -0.0, 0.0, 1.0, 2.0]), size=(2, 3, 7, 8))
    x[0, 0, 0, :3] = [np.nan, -np.inf, np.inf]
    x[1, 2] = -1.0  # a channel with only negative windows
    x[1, 1] = -np.inf
    conv_args = dict(seed=0, dtype="float64")
    model = nn.Sequential(nn.Identity(), nn.ReLU(), nn.MaxPool2d(**pool))
    relu_shapes = []
    relu = F_.relu
    monkeypatch.setattr(F_, "relu", lambda a: relu_shapes.append(tuple(a.shape)) or relu(a))
    xt = xpnn.tensor(x, requires_grad=True)
    y = model(xt)
    k = pool.get("kernel_size")
    swapped = pool.get("dilation", 1) == 1 or pool.get("padding", 0) == 0
    assert relu_shapes == [tuple(y.shape) if swapped else x.shape]
    xr = xpnn.tensor(x, requires_grad=True)
    want = F_.max_pool2d(F_.relu(xr), k, pool.get("stride"), pool.get("padding", 0), pool.get("dilation", 1),
                         pool.get("ceil_mode", False))
    np.testing.assert_array_equal(y.data, want.data)
    dy = rng.standard_normal(y.shape)
    F_.sum(y * xpnn.tensor(dy)).backward()
    F_.sum(want * xpnn.tensor(dy)).backward()
    np.testing.assert_array_equal(xt.grad, xr.grad)
    # with a conv in front, through the explicit API: the same parameter gradients as the unswapped chain
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, **conv_args), nn.ReLU(), nn.MaxPool2d(**pool))
    ref = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, **conv_args), nn.ReLU(), nn.Identity(), nn.MaxPool2d(**pool))
    x2 = np.nan_to_num(x, nan=0.5, posinf=3.0, neginf=-3.0)
    out, out_ref = net(x2), ref(x2)
    np.testing.assert_array_equal(out, out_ref)
    g = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(net.backward(g), ref.backward(g))
    for (name, p), (_, q) in zip(net.named_parameters(), ref.named_parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
