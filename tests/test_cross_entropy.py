"""Cross-entropy with class-probability targets and per-class weights (F.cross_entropy, F.cross_entropy_with_grad,
nn.CrossEntropyLoss), against torch.nn.functional.cross_entropy (PyTorch >= 1.10 semantics): loss, gradient and
second derivatives in float64, on NumPy, Tensors and array_api_strict."""
import array_api_strict
import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import nn
from xpnn.errors import DTypeError, ShapeError

REDUCTIONS = ["mean", "sum", "none"]
OPTIONS = [{}, dict(label_smoothing=0.2), dict(weight=True), dict(weight=True, label_smoothing=0.3)]


def _inputs(n=5, c=4, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, c)) * 2
    probs = rng.random((n, c))
    probs /= probs.sum(axis=1, keepdims=True)
    labels = rng.integers(0, c, n)
    weight = rng.random(c) + 0.5
    return logits, probs, labels, weight


def _torch_kwargs(torch, opts, weight):
    out = {k: v for k, v in opts.items() if k != "weight"}
    if opts.get("weight"):
        out["weight"] = torch.tensor(weight)
    return out


def _xpnn_kwargs(opts, weight):
    out = {k: v for k, v in opts.items() if k != "weight"}
    if opts.get("weight"):
        out["weight"] = weight
    return out


# (class indices without weight take the fused op: tests/test_functional.py, tests/test_gradcheck.py)
CASES = [(kind, opts) for kind in ("probabilities", "labels", "labels ignore_index") for opts in OPTIONS
         if kind == "probabilities" or opts.get("weight")]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind, opts", CASES, ids=str)
def test_matches_pytorch_loss_gradient_and_second_derivatives(kind, opts, reduction):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for cross_entropy's semantics")
    logits, probs, labels, weight = _inputs()
    target = probs if kind == "probabilities" else labels
    extra = dict(ignore_index=int(labels[1])) if kind == "labels ignore_index" else {}
    kw, tkw = {**_xpnn_kwargs(opts, weight), **extra}, {**_torch_kwargs(torch, opts, weight), **extra}

    xt = torch.tensor(logits, requires_grad=True)
    want = torch.nn.functional.cross_entropy(xt, torch.tensor(target), reduction=reduction, **tkw)
    (gt,) = torch.autograd.grad(want.sum(), xt, create_graph=True)
    direction = np.linspace(-1, 1, logits.size).reshape(logits.shape)
    (hvp_t,) = torch.autograd.grad((gt * torch.tensor(direction)).sum(), xt)

    got = F.cross_entropy(logits, target, reduction=reduction, **kw)  # arrays in, arrays out
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-12, atol=1e-14)
    loss, grad = F.cross_entropy_with_grad(logits, target, reduction=reduction, **kw)
    np.testing.assert_allclose(loss, want.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, gt.detach().numpy(), rtol=1e-10, atol=1e-14)

    x = xpnn.tensor(logits, requires_grad=True)  # Tensors: backward and double backward
    (g,) = xpnn.grad(F.cross_entropy(x, target, reduction=reduction, **kw).sum(), [x], create_graph=True)
    np.testing.assert_allclose(g.data, gt.detach().numpy(), rtol=1e-10, atol=1e-14)
    (hvp,) = xpnn.grad((g * direction).sum(), [x])
    np.testing.assert_allclose(hvp.data, hvp_t.numpy(), rtol=1e-9, atol=1e-13)


def test_target_and_weight_on_array_api_strict():
    logits, probs, labels, weight = _inputs()
    xs = array_api_strict.asarray
    for target in (probs, labels):
        got = F.cross_entropy(xs(logits), xs(target), weight=xs(weight), label_smoothing=0.1)
        want = F.cross_entropy(logits, target, weight=weight, label_smoothing=0.1)
        np.testing.assert_allclose(float(got), float(want), rtol=1e-13)
        _, g = F.cross_entropy_with_grad(xs(logits), xs(target), weight=xs(weight))
        np.testing.assert_allclose(np.asarray(g), F.cross_entropy_with_grad(logits, target, weight=weight)[1],
                                   rtol=1e-12, atol=1e-15)


def test_loss_module_takes_probabilities_and_weight_in_both_apis():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for CrossEntropyLoss")
    logits, probs, labels, weight = _inputs()
    for target in (probs, labels):
        ref = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight), label_smoothing=0.1)
        xt = torch.tensor(logits, requires_grad=True)
        want = ref(xt, torch.tensor(target))
        want.backward()
        loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1)
        np.testing.assert_allclose(loss_fn(logits, target), want.item(), rtol=1e-12)  # the explicit API
        np.testing.assert_allclose(loss_fn.backward(), xt.grad.numpy(), rtol=1e-10, atol=1e-15)
        x = xpnn.tensor(logits, requires_grad=True)
        loss_fn(x, target).backward()  # the tape
        np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-15)
    assert list(nn.CrossEntropyLoss(weight=weight).state_dict()) == ["weight"]  # a buffer, as in PyTorch
    m = nn.CrossEntropyLoss(weight=weight).to(dtype="float32")
    assert m.weight.dtype == np.float32


def test_errors_say_what_is_wrong():
    logits, probs, labels, weight = _inputs()
    with pytest.raises(ValueError, match="ignore_index is not supported with class-probability targets"):
        F.cross_entropy(logits, probs, ignore_index=0)
    with pytest.raises(ShapeError, match=r"class-probability target must have the shape of logits \(5, 4\), got "
                                         r"\(5, 3\)"):
        F.cross_entropy(logits, probs[:, :3])
    with pytest.raises(DTypeError, match="target dtype float32 differs from logits dtype float64"):
        F.cross_entropy(logits, probs.astype(np.float32))
    with pytest.raises(ShapeError, match=r"weight must be a \(4,\) array"):
        F.cross_entropy(logits, labels, weight=weight[:3])
    with pytest.raises(ValueError, match=r"target values must be in \[0, 4\)"):
        F.cross_entropy(logits, labels + 4, weight=weight)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind, opts", [("labels", {})] + CASES + [("labels", dict(label_smoothing=0.2))], ids=str)
def test_an_empty_batch_gives_pytorchs_nan_mean_zero_sum_and_empty_none(kind, opts, reduction):
    """A batch of 0 (refused before): ``torch.nn.functional.cross_entropy`` gives NaN for "mean" (0 / 0), 0 for "sum"
    and an empty (0,) for "none", with an empty gradient; the same from F.cross_entropy (arrays, Tensors,
    array_api_strict), F.cross_entropy_with_grad, nn.CrossEntropyLoss (both APIs) and F.nll_loss, with no warning."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for cross_entropy's empty batch")
    import warnings

    logits, probs, labels, weight = _inputs(n=0)
    target = probs if kind == "probabilities" else labels.astype(np.int64)
    extra = dict(ignore_index=1) if kind == "labels ignore_index" else {}
    kw, tkw = {**_xpnn_kwargs(opts, weight), **extra}, {**_torch_kwargs(torch, opts, weight), **extra}
    xt = torch.tensor(logits, requires_grad=True)
    want = torch.nn.functional.cross_entropy(xt, torch.tensor(target), reduction=reduction, **tkw)
    want.sum().backward()
    want = want.detach().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no 0/0 RuntimeWarning)
        np.testing.assert_array_equal(F.cross_entropy(logits, target, reduction=reduction, **kw), want)
        loss, grad = F.cross_entropy_with_grad(logits, target, reduction=reduction, **kw)
        np.testing.assert_array_equal(loss, want)
        assert grad.shape == (0, 4)
        x = xpnn.tensor(logits, requires_grad=True)
        y = F.cross_entropy(x, target, reduction=reduction, **kw)
        np.testing.assert_array_equal(y.numpy(), want)
        y.sum().backward()
        assert x.grad.shape == xt.grad.shape
        xs = array_api_strict.asarray
        skw = {k: (xs(v) if k == "weight" else v) for k, v in kw.items()}
        np.testing.assert_array_equal(
            np.asarray(F.cross_entropy(xs(logits), xs(target), reduction=reduction, **skw)), want)
        m = nn.CrossEntropyLoss(reduction=reduction, **kw)
        np.testing.assert_array_equal(m(logits, target), want)  # the explicit API
        assert m.backward(np.ones(want.shape)).shape == (0, 4)
        if kind != "probabilities" and not opts.get("label_smoothing"):
            w = {"weight": weight} if opts.get("weight") else {}
            np.testing.assert_array_equal(
                F.nll_loss(logits, target, reduction=reduction, **w, **extra),
                torch.nn.functional.nll_loss(torch.tensor(logits), torch.tensor(target), reduction=reduction,
                                             **_torch_kwargs(torch, opts, weight), **extra).numpy())
    with pytest.raises(ShapeError, match="empty logits"):  # no class at all is still refused
        F.cross_entropy(np.zeros((2, 0)), np.zeros(2, np.int64))
