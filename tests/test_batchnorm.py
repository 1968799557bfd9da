"""``nn.BatchNorm1d``: ``eps`` in both modes, no running
statistics while training, a batch of two, the dtype and ``dy`` checks, ``need_input_grad=False``, the defaults
(float32, one feature), ``backend=``/``seed=``, and ``torch.nn.BatchNorm1d`` in every mode. Only forward and backward
results, gradients, buffers and errors are checked."""
from __future__ import annotations

import re

import numpy as np
import pytest

from xpnn import nn
from xpnn.errors import DTypeError, ShapeError
from _numgrad import numeric_grad


def _x(n=8, c=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, c)) * 2 + 1


def _bn(*args, **kw):
    return nn.BatchNorm1d(*args, dtype="float64", **kw)


def test_initial_parameters_and_buffers():
    bn = _bn(3)
    assert bn.weight.data.tolist() == [1.0, 1.0, 1.0] and bn.bias.data.tolist() == [0.0, 0.0, 0.0]
    assert bn.running_mean.tolist() == [0.0] * 3 and bn.running_var.tolist() == [1.0] * 3
    assert bn.num_batches_tracked.shape == () and bn.num_batches_tracked.dtype == np.int64
    assert int(bn.num_batches_tracked) == 0
    assert bn.eps == 1e-5 and bn.momentum == 0.1 and bn.affine and bn.track_running_stats
    assert repr(bn) == "BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


@pytest.mark.parametrize("bad", [0, -2, True, 2.0, "3"])
def test_num_features_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="num_features must be a positive integer"):
        nn.BatchNorm1d(bad)


def test_eps_reaches_training_and_eval():
    x = _x()
    bn = _bn(3, eps=0.5, momentum=1.0)  # momentum 1: the running statistics become the batch's
    y = bn(x)
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 0.5), rtol=1e-12)
    bn.eval()
    x2 = _x(seed=1)
    np.testing.assert_allclose(bn(x2), (x2 - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + 0.5), rtol=1e-12)


def test_no_running_statistics_while_training():
    x = _x()
    bn = _bn(3, track_running_stats=False)
    assert bn.running_mean is None and bn.running_var is None and bn.num_batches_tracked is None
    assert set(bn.state_dict()) == {"weight", "bias"}
    y = bn(x)
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-12)
    assert bn.running_mean is None
    bn.eval()  # still batch statistics, and the training-mode gradient
    np.testing.assert_allclose(bn(x), y, rtol=1e-15)
    dy = _x(seed=2)
    dx = bn.backward(dy)
    ref = _bn(3)
    ref(x)
    np.testing.assert_allclose(dx, ref.backward(dy), rtol=1e-12)


def test_a_batch_of_two():
    x = np.array([[1.0, 5.0], [3.0, -1.0]])
    bn = _bn(2, eps=0.0)
    y = bn(x)
    np.testing.assert_allclose(y, [[-1.0, 1.0], [1.0, -1.0]], rtol=1e-15)
    # running: 0.9 * init + 0.1 * batch statistic (variance unbiased: n / (n - 1) = 2 times the biased one)
    np.testing.assert_allclose(bn.running_mean, [0.2, 0.2], rtol=1e-15)
    np.testing.assert_allclose(bn.running_var, [0.9 + 0.1 * 2.0, 0.9 + 0.1 * 18.0], rtol=1e-15)
    assert int(bn.num_batches_tracked) == 1
    dx = bn.backward(np.array([[1.0, 0.0], [0.0, 0.0]]))
    # with two samples xhat = +-1 and the training gradient is zero for every dy (the output is +-1 whatever x is)
    np.testing.assert_allclose(dx, np.zeros((2, 2)), atol=1e-15)
    assert bn.weight.grad.tolist() == [-1.0, 0.0] and bn.bias.grad.tolist() == [1.0, 0.0]


def test_one_sample_is_refused_in_training_without_touching_the_statistics():
    bn = _bn(3)
    with pytest.raises(ShapeError, match=r"BatchNorm1d\(3\): expected more than 1 value per channel when training, "
                                         r"got input of shape \(1, 3\)"):
        bn(np.ones((1, 3)))
    assert int(bn.num_batches_tracked) == 0 and bn.running_mean.tolist() == [0.0] * 3
    plain = _bn(3, track_running_stats=False)
    plain.eval()
    with pytest.raises(ShapeError, match="expected more than 1 value per channel"):
        plain(np.ones((1, 3)))  # batch statistics need two samples in eval too


def test_eval_uses_the_running_statistics_and_updates_nothing():
    bn = _bn(2, eps=0.0)
    bn.running_mean[...] = [1.0, -1.0]
    bn.running_var[...] = [4.0, 0.25]
    bn.weight.data[...] = [2.0, 3.0]
    bn.bias.data[...] = [0.5, -0.5]
    bn.eval()
    x = np.array([[3.0, 0.0], [1.0, -1.5]])
    np.testing.assert_allclose(bn(x), [[2.5, 5.5], [0.5, -3.5]], rtol=1e-15)
    assert bn.running_mean.tolist() == [1.0, -1.0] and int(bn.num_batches_tracked) == 0
    dx = bn.backward(np.ones((2, 2)))
    np.testing.assert_allclose(dx, [[1.0, 6.0], [1.0, 6.0]], rtol=1e-15)  # weight / sqrt(var) * dy
    np.testing.assert_allclose(bn.weight.grad, [1.0, 1.0], rtol=1e-15)  # sum(dy * xhat), xhat = [[1, 2], [0, -1]]
    np.testing.assert_allclose(bn.bias.grad, [2.0, 2.0], rtol=1e-15)


def test_training_backward_matches_the_formula_and_accumulates():
    x, dy = _x(seed=3), _x(seed=4)
    bn = _bn(3)
    bn.weight.data[...] = [0.5, 2.0, -1.0]
    bn(x)
    dx = bn.backward(dy)
    n = x.shape[0]
    invstd = 1 / np.sqrt(x.var(0) + 1e-5)
    xhat = (x - x.mean(0)) * invstd
    db, dw = dy.sum(0), (dy * xhat).sum(0)
    np.testing.assert_allclose(dx, np.array([0.5, 2.0, -1.0]) * invstd * (dy - db / n - xhat * dw / n), rtol=1e-10)
    np.testing.assert_allclose(bn.weight.grad, dw, rtol=1e-12)
    np.testing.assert_allclose(bn.bias.grad, db, rtol=1e-12)
    bn(x)
    bn.backward(dy)
    np.testing.assert_allclose(bn.weight.grad, 2 * dw, rtol=1e-12)
    np.testing.assert_allclose(bn.bias.grad, 2 * db, rtol=1e-12)


def test_need_input_grad_false_still_accumulates_parameter_gradients():
    x, dy = _x(seed=5), _x(seed=6)
    a, b = _bn(3), _bn(3)
    a(x), b(x)
    assert a.backward(dy, need_input_grad=False) is None
    assert b.backward(dy) is not None
    assert np.array_equal(a.weight.grad, b.weight.grad) and np.array_equal(a.bias.grad, b.bias.grad)
    assert np.any(a.weight.grad != 0)


def test_without_affine_there_are_no_parameters_and_y_is_xhat():
    x, dy = _x(seed=7), _x(seed=8)
    bn = _bn(3, affine=False)
    assert bn.weight is None and bn.bias is None and list(bn.parameters()) == []
    y = bn(x)
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-12)
    y[...] = 0  # the output is not a view of anything the layer keeps for backward
    ref = _bn(3)
    ref(x)
    np.testing.assert_allclose(bn.backward(dy), ref.backward(dy), rtol=1e-12)


def test_input_dtype_must_match_the_parameters_or_the_running_statistics():
    x = _x()
    with pytest.raises(DTypeError, match=r"BatchNorm1d\(3\): expected input of dtype float64"):
        _bn(3)(x.astype(np.float32))
    stats_only = _bn(3, affine=False)  # the running statistics fix the dtype
    with pytest.raises(DTypeError, match="expected input of dtype float64"):
        stats_only(x.astype(np.float32))
    free = nn.BatchNorm1d(3, affine=False, track_running_stats=False)  # nothing fixes it
    assert free(x).dtype == np.float64 and free(x.astype(np.float32)).dtype == np.float32
    with pytest.raises(DTypeError):
        free(np.ones((4, 3), np.int64))


def test_input_shape_checks():
    bn = _bn(3)
    for bad in (np.ones((4, 2)), np.ones(3), np.ones((4, 3, 1, 1)), np.ones((4, 2, 5))):  # ((N, 3, L) is taken)
        with pytest.raises(ShapeError, match=r"BatchNorm1d\(3\): expected input of shape \(N, 3\)"):
            bn(bad)
    for bad in (np.ones(3), np.ones((4, 3, 1, 1)), np.ones((4, 2, 5))):
        with pytest.raises(ShapeError, match=rf"BatchNorm1d\(3\): expected input of shape \(N, 3\) or \(N, 3, L\), "
                                             rf"got {re.escape(str(bad.shape))}"):
            bn(bad)
    with pytest.raises(DTypeError, match=r"BatchNorm1d\(3\): expected input of dtype float64.*got float32"):
        bn(np.ones((4, 3, 5), np.float32))
    with pytest.raises(ShapeError, match=r"BatchNorm1d\(3\): expected more than 1 value per channel when training, "
                                         r"got input of shape \(1, 3, 1\)"):
        bn(np.ones((1, 3, 1)))
    assert int(bn.num_batches_tracked) == 0
    assert bn(np.ones((0, 3))).shape == (0, 3)  # an empty batch, as in PyTorch (test_nn_conv.py checks it)


def test_backward_checks_dy():
    bn = _bn(3)
    with pytest.raises(RuntimeError, match=r"BatchNorm1d\(3\).*before forward"):
        bn.backward(np.ones((4, 3)))
    for bad, err, match in ((np.ones((4, 2)), ShapeError, r"backward expected dy of shape \(4, 3\), got \(4, 2\)"),
                            (np.ones((3, 3)), ShapeError, r"backward expected dy of shape \(4, 3\), got \(3, 3\)"),
                            (np.ones((4, 3), np.float32), DTypeError,
                             "backward expected dy of dtype float64, got float32")):
        bn(_x(n=4))
        with pytest.raises(err, match=match):
            bn.backward(bad)
        assert np.all(bn.weight.grad == 0) and np.all(bn.bias.grad == 0)  # refused calls add nothing
    bn(_x(n=4))
    bn.backward(np.ones((4, 3)))
    assert np.all(bn.bias.grad == 4.0)


def test_cumulative_average_when_momentum_is_none():
    xs = [_x(seed=s) for s in range(3)]
    bn = _bn(3, momentum=None)
    for x in xs:
        bn(x)
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(0) for x in xs], axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, np.mean([x.var(0, ddof=1) for x in xs], axis=0), rtol=1e-12)
    assert int(bn.num_batches_tracked) == 3


def test_no_running_statistics_with_affine_parameters_and_eps():
    x, dy = _x(seed=9), _x(seed=10)
    bn = _bn(3, eps=0.5, track_running_stats=False)
    bn.weight.data[...] = [2.0, -1.0, 0.5]
    bn.bias.data[...] = [0.1, 0.2, 0.3]
    want = (x - x.mean(0)) / np.sqrt(x.var(0) + 0.5) * [2.0, -1.0, 0.5] + [0.1, 0.2, 0.3]
    for mode in ("train", "eval"):
        getattr(bn, mode)()
        np.testing.assert_allclose(bn(x), want, rtol=1e-12)
    bn.backward(dy)
    xhat = (x - x.mean(0)) / np.sqrt(x.var(0) + 0.5)
    np.testing.assert_allclose(bn.weight.grad, (dy * xhat).sum(0), rtol=1e-12)
    np.testing.assert_allclose(bn.bias.grad, dy.sum(0), rtol=1e-12)


def test_affine_without_running_statistics_still_checks_the_dtype():
    bn = _bn(3, track_running_stats=False)
    with pytest.raises(DTypeError, match=r"BatchNorm1d\(3\): expected input of dtype float64"):
        bn(_x().astype(np.float32))


def test_one_feature_is_allowed():
    bn = nn.BatchNorm1d(1, dtype="float64")
    x = np.array([[1.0], [3.0], [5.0]])
    np.testing.assert_allclose(bn(x), (x - 3.0) / np.sqrt(8 / 3 + 1e-5), rtol=1e-12)
    assert bn.weight.shape == (1,) and bn.running_mean.shape == (1,)


def test_default_dtype_is_float32_for_parameters_and_statistics():
    bn = nn.BatchNorm1d(3)
    for a in (bn.weight.data, bn.bias.data, bn.running_mean, bn.running_var):
        assert a.dtype == np.float32
    assert bn.num_batches_tracked.dtype == np.int64
    y = bn(_x().astype(np.float32))
    assert y.dtype == np.float32 and bn.running_var.dtype == np.float32


def test_backend_and_seed_are_taken_like_every_layer():
    xs = pytest.importorskip("array_api_strict")
    bn = nn.BatchNorm1d(3, backend=xs)
    for a in (bn.weight.data, bn.bias.data, bn.running_mean, bn.running_var, bn.num_batches_tracked):
        assert type(a) is type(xs.asarray(0.0))
    y = bn(xs.asarray(_x().astype(np.float32)))
    assert type(y) is type(xs.asarray(0.0)) and y.dtype == xs.float32
    assert nn.BatchNorm1d(3, seed=np.random.default_rng(0)).weight.shape == (3,)
    with pytest.raises(TypeError):  # a seed that no layer accepts is refused here too
        nn.BatchNorm1d(3, seed="not a seed")


@pytest.mark.parametrize("affine,track", [(True, True), (False, True), (True, False), (False, False)])
def test_matches_torch_batchnorm1d_in_training_and_eval(affine, track):
    torch = pytest.importorskip("torch")
    x, dy = _x(n=6, seed=11), _x(n=6, seed=12)
    ours = _bn(3, eps=1e-3, momentum=0.3, affine=affine, track_running_stats=track)
    ref = torch.nn.BatchNorm1d(3, eps=1e-3, momentum=0.3, affine=affine, track_running_stats=track).double()
    if affine:
        w, b = np.array([0.5, -2.0, 1.5]), np.array([0.25, 0.0, -1.0])
        ours.weight.data[...], ours.bias.data[...] = w, b
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(w))
            ref.bias.copy_(torch.from_numpy(b))
    for step in range(2):  # two steps: the running statistics are updated from a non-initial value
        xt = torch.tensor(x + step, requires_grad=True)
        yt = ref(xt)
        yt.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(ours(x + step), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.backward(dy), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    if affine:
        np.testing.assert_allclose(ours.weight.grad, ref.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(ours.bias.grad, ref.bias.grad.numpy(), rtol=1e-10)
    if track:
        np.testing.assert_allclose(ours.running_mean, ref.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(ours.running_var, ref.running_var.numpy(), rtol=1e-12)
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 2
    ours.eval()
    ref.eval()
    x2 = _x(n=4, seed=13)
    xt = torch.tensor(x2, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.from_numpy(dy[:4]))
    np.testing.assert_allclose(ours(x2), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.backward(dy[:4]), xt.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("training", [True, False])
def test_an_empty_batch_gives_an_empty_output_and_leaves_the_running_statistics(training, momentum):
    """``torch.nn.BatchNorm1d`` on a batch of 0 (refused before): an empty output and input gradient, zero weight and
    bias gradients, the running statistics unchanged (no NaN from the empty mean), ``num_batches_tracked`` counting
    the training call; on the tape and the explicit API, NumPy and array_api_strict; a batch of one is still refused
    in training (PyTorch's rule: more than 1 value per channel)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for BatchNorm1d's empty batch")
    import array_api_strict

    import xpnn

    ref = torch.nn.BatchNorm1d(3, momentum=momentum).double().train(training)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([0.5, -2.0, 1.5]))
        ref.running_mean.copy_(torch.tensor([0.3, -1.0, 2.0]))
    xt = torch.zeros((0, 3), dtype=torch.float64, requires_grad=True)
    ref(xt).sum().backward()
    for xp in (np, array_api_strict):
        ours = _bn(3, momentum=momentum).train(training)
        ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
        ours.num_batches_tracked[...] = 0
        ours.to(xp)
        y = ours(xpnn.tensor(xp.zeros((0, 3), dtype=xp.float64), requires_grad=True))
        assert tuple(y.shape) == (0, 3)
        y.sum().backward()
        for name in ("weight", "bias"):
            np.testing.assert_array_equal(np.asarray(getattr(ours, name).grad), getattr(ref, name).grad.numpy())
        ours.zero_grad()
        assert ours(xp.zeros((0, 3), dtype=xp.float64)).shape == (0, 3)  # the explicit API
        assert ours.backward(xp.zeros((0, 3), dtype=xp.float64)).shape == (0, 3)
        np.testing.assert_array_equal(np.asarray(ours.running_mean), ref.running_mean.numpy())
        np.testing.assert_array_equal(np.asarray(ours.running_var), ref.running_var.numpy())
        assert int(ours.num_batches_tracked) == 2 * int(ref.num_batches_tracked)  # (two calls here, one in torch)
    with pytest.raises(ValueError):
        ref.train()(torch.zeros((1, 3), dtype=torch.float64))
    with pytest.raises(ShapeError, match="more than 1 value per channel"):
        _bn(3)(np.zeros((1, 3)))


@pytest.mark.parametrize("affine,track,momentum", [(True, True, 0.3), (False, True, None), (True, False, 0.1)])
def test_matches_torch_batchnorm1d_on_n_c_l_input(affine, track, momentum):
    """(N, C, L) input (refused before): statistics per channel over N and L as ``torch.nn.BatchNorm1d``; outputs,
    input and parameter gradients, running statistics over two training steps, then eval; the explicit API and
    the tape (float64)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for BatchNorm1d on (N, C, L) input")
    import xpnn

    rng = np.random.default_rng(21)
    x, dy = rng.normal(size=(4, 3, 5)) * 2 + 1, rng.normal(size=(4, 3, 5))
    ours = _bn(3, eps=1e-3, momentum=momentum, affine=affine, track_running_stats=track)
    tape = _bn(3, eps=1e-3, momentum=momentum, affine=affine, track_running_stats=track)
    ref = torch.nn.BatchNorm1d(3, eps=1e-3, momentum=momentum, affine=affine, track_running_stats=track).double()
    if affine:
        w, b = np.array([0.5, -2.0, 1.5]), np.array([0.25, 0.0, -1.0])
        for m in (ours, tape):
            m.weight.data[...], m.bias.data[...] = w, b
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(w))
            ref.bias.copy_(torch.from_numpy(b))
    for step in range(2):  # two steps: the running statistics are updated from a non-initial value
        xt = torch.tensor(x + step, requires_grad=True)
        yt = ref(xt)
        yt.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(ours(x + step), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.backward(dy), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
        tx = xpnn.tensor(x + step, requires_grad=True)
        (tape(tx) * xpnn.tensor(dy)).sum().backward()
        np.testing.assert_allclose(tx.grad, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    for m in (ours, tape) if affine else ():
        np.testing.assert_allclose(m.weight.grad, ref.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(m.bias.grad, ref.bias.grad.numpy(), rtol=1e-10)
    for m in (ours, tape) if track else ():
        np.testing.assert_allclose(m.running_mean, ref.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(m.running_var, ref.running_var.numpy(), rtol=1e-12)
        assert int(m.num_batches_tracked) == int(ref.num_batches_tracked) == 2
    ours.eval()
    ref.eval()
    x2 = rng.normal(size=(2, 3, 4))
    xt = torch.tensor(x2, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.from_numpy(dy[:2, :, :4]))
    np.testing.assert_allclose(ours(x2), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.backward(dy[:2, :, :4]), xt.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_n_c_l_input_gradcheck(training):
    """Finite differences of sum(bn(x) * g) for (N, C, L) input through the explicit API (float64)."""
    rng = np.random.default_rng(3)
    bn = _bn(3, track_running_stats=not training)  # (training: no running statistics to move between calls)
    bn.weight.data[...], bn.bias.data[...] = [0.5, -2.0, 1.5], [0.25, 0.0, -1.0]
    bn.train(training)
    x, g = rng.normal(size=(3, 3, 4)), rng.normal(size=(3, 3, 4))
    bn.zero_grad()
    bn(x)
    dx = bn.backward(g)
    analytic = {n: np.array(p.grad) for n, p in bn.named_parameters()}
    f = lambda: float(np.sum(bn(x) * g))  # noqa: E731
    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-6, atol=1e-8)
    for n, p in bn.named_parameters():
        np.testing.assert_allclose(analytic[n], numeric_grad(f, p.data), rtol=1e-6, atol=1e-8, err_msg=n)


def test_n_c_l_input_on_array_api_strict():
    xs = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(4)
    x, dy = rng.normal(size=(4, 3, 5)), rng.normal(size=(4, 3, 5))
    ref, bn = _bn(3), _bn(3, backend=xs)
    y = bn(xs.asarray(x))
    assert type(y) is type(xs.asarray(0.0)) and tuple(y.shape) == (4, 3, 5)
    np.testing.assert_allclose(np.asarray(y), ref(x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(bn.backward(xs.asarray(dy))), ref.backward(dy), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(bn.weight.grad), ref.weight.grad, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(bn.running_var), ref.running_var, rtol=1e-12)
