"""Edge cases across the library, each with the right value as the expectation: float16 intermediates (sigmoid, its backward, BCE,
MSE, softmax backward), a learning-rate scheduler rebuilt on resume, writes into float16 parameters between optimizer
steps, PCA whitening at any scale, EarlyStopping's epoch count."""
import math

import numpy as np
import pytest

import xpnn
from xpnn import functional as F
from xpnn import nn, optim
from xpnn.data import PCA
from xpnn.functional.layers import softmax_backward
from xpnn.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, StepLR
from xpnn.train import EarlyStopping, fit


def exact_sigmoid(x):
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


# --- fault 1: float16 (and float32) intermediates --------------------------------------------------------------
def test_float16_sigmoid_is_the_exact_sigmoid_rounded():
    x = np.array([-10.0, -12.0, -14.0, -16.0], np.float16)
    np.testing.assert_array_equal(F.sigmoid(x), np.array([4.54e-05, 6.14e-06, 8.34e-07, 1.19e-07], np.float16))
    every = np.concatenate([np.arange(-30, 30, 0.125), [-1e4, 1e4, -65504]]).astype(np.float16)  # both tails
    np.testing.assert_array_equal(F.sigmoid(every), exact_sigmoid(every).astype(np.float16))
    assert F.sigmoid(every).dtype == np.float16
    layer = nn.Sigmoid()
    np.testing.assert_array_equal(layer(every), exact_sigmoid(every).astype(np.float16))


@pytest.mark.parametrize("dtype, lowest", [(np.float32, -87.0), (np.float64, -708.0)])
def test_float32_and_64_sigmoid_exact_wherever_the_result_is_normal(dtype, lowest):
    x = np.linspace(lowest, 40, 4001).astype(dtype)
    with np.errstate(over="raise"):  # the overflow of exp(-x) below is intended and must not warn
        y = F.sigmoid(x)
        tail = F.sigmoid(np.array([lowest - 30, np.nan, np.inf, -np.inf], dtype))
    np.testing.assert_allclose(y, exact_sigmoid(x), rtol=4 * np.finfo(dtype).eps)
    assert tail[0] == 0  # the exact value is subnormal there: 0, like PyTorch
    assert np.isnan(tail[1]) and tail[2] == 1 and tail[3] == 0


def test_float16_sigmoid_backward_computed_in_float32():
    y = F.sigmoid(np.array([-16.0, -12.0, -9.0, 0.5], np.float16))
    dy = np.full(4, 1000.0, np.float16)
    y32 = y.astype(np.float32)
    want = (dy.astype(np.float32) * y32 * (1 - y32)).astype(np.float16)
    np.testing.assert_array_equal(F.sigmoid_backward(y, dy), want)
    layer = nn.Sigmoid()
    layer(np.array([-16.0, -12.0, -9.0, 0.5], np.float16))
    np.testing.assert_array_equal(layer.backward(dy), want)


def test_float16_bce_with_logits_gradient_and_sum():
    logits = np.array([-16.0, -12.0, -10.0, 3.0], np.float16)
    target = np.zeros(4, np.float16)
    _, grad = F.binary_cross_entropy_with_logits_with_grad(logits, target, reduction="sum")
    np.testing.assert_array_equal(grad, exact_sigmoid(logits).astype(np.float16))  # was 0 for the first three
    big = np.full(5000, 10.0, np.float16)  # loss 10 per element: the sum is 5e4, a float16 sum loses digits
    loss = F.binary_cross_entropy_with_logits(big, np.zeros_like(big), reduction="sum")
    exact = 5000 * (10 + math.log1p(math.exp(-10)))
    assert loss.dtype == np.float16 and float(loss) == pytest.approx(exact, rel=5e-4)


def test_float16_sigmoid_and_bce_through_the_tape():
    x = np.array([-16.0, -12.0, -10.0, 3.0], np.float16)
    t = xpnn.tensor(x, requires_grad=True)
    np.testing.assert_array_equal(F.sigmoid(t).data, exact_sigmoid(x).astype(np.float16))
    F.binary_cross_entropy_with_logits(t, xpnn.tensor(np.zeros(4, np.float16)), reduction="sum").backward()
    np.testing.assert_array_equal(t.grad, exact_sigmoid(x).astype(np.float16))


def test_float16_mse_squares_do_not_overflow():
    pred = np.concatenate([np.full(50, 300.0), np.zeros(50)]).astype(np.float16)  # 300**2 > float16 max
    target = np.zeros(100, np.float16)
    loss, grad = F.mse_loss_with_grad(pred, target)
    assert loss == np.float16(45000.0) and loss.dtype == np.float16
    np.testing.assert_array_equal(grad, (2 * pred.astype(np.float32) / 100).astype(np.float16))
    assert F.mse_loss(pred, target, reduction="mean") == np.float16(45000.0)


def test_float16_softmax_backward_row_sum_in_float32():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 200)).astype(np.float16)
    y = F.softmax(x)
    dy = rng.uniform(300, 600, size=(3, 200)).astype(np.float16)  # sum(dy * y) is exact only with float32 sums
    y32, dy32 = y.astype(np.float32), dy.astype(np.float32)
    want = (y32 * (dy32 - np.sum(dy32 * y32, axis=-1, keepdims=True))).astype(np.float16)
    np.testing.assert_array_equal(softmax_backward(y, dy), want)


def test_float16_log_softmax_backward_row_sum_does_not_overflow():
    x = np.random.default_rng(0).normal(size=(2, 1000)).astype(np.float16)
    g = np.full((2, 1000), 100.0, np.float16)  # the row sum of g, 1e5, overflows float16
    t = xpnn.tensor(x, requires_grad=True)
    F.log_softmax(t).backward(xpnn.tensor(g))
    p = F.softmax(x.astype(np.float32))
    want = (g.astype(np.float32) - p * np.float32(1e5)).astype(np.float16)
    assert np.all(np.isfinite(t.grad))
    # the saved float16 log-softmax (spacing up to 4e-3) times 1e5 leaves ~0.4% of p * 1e5: inherent to float16
    err = np.abs(t.grad.astype(np.float32) - want.astype(np.float32))
    assert np.all(err <= 0.5 + 5e-3 * p * 1e5)


def test_from_xpnn_import_F():
    from xpnn import F as F2

    assert F2 is xpnn.functional


# --- fault 2: a scheduler rebuilt on resume ---------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda o: StepLR(o, step_size=3, gamma=0.5), lambda o: ExponentialLR(o, 0.8),
                                  lambda o: CosineAnnealingLR(o, T_max=7)], ids=["step", "exp", "cosine"])
def test_rebuilt_scheduler_keeps_the_saved_lr(make):
    lin = nn.Linear(3, 2, seed=0)
    opt = optim.SGD(lin.parameters(), lr=0.1)
    sched = make(opt)
    for _ in range(10):
        opt.step()
        sched.step()
    saved_lr = opt.param_groups[0]["lr"]
    o_state, s_state = opt.state_dict(), sched.state_dict()
    uninterrupted = []
    for _ in range(5):
        sched.step()
        uninterrupted.append(opt.param_groups[0]["lr"])
    opt2 = optim.SGD(lin.parameters(), lr=0.1)
    opt2.load_state_dict(o_state)
    sched2 = make(opt2)  # the constructor applies the epoch-0 rate ...
    sched2.load_state_dict(s_state)  # ... loading puts back the rate at save time
    assert opt2.param_groups[0]["lr"] == saved_lr and sched2.get_last_lr() == [saved_lr]
    resumed = []
    for _ in range(5):
        sched2.step()
        resumed.append(opt2.param_groups[0]["lr"])
    assert resumed == uninterrupted


def test_step_lr_resume_value_from_the_issue():
    lin = nn.Linear(3, 2, seed=0)
    opt = optim.SGD(lin.parameters(), lr=0.1)
    sched = StepLR(opt, step_size=3, gamma=0.5)
    for _ in range(10):
        opt.step()
        sched.step()
    opt2 = optim.SGD(lin.parameters(), lr=0.1)
    opt2.load_state_dict(opt.state_dict())
    sched2 = StepLR(opt2, step_size=3, gamma=0.5)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.0125, abs=0)
    with pytest.raises(ValueError, match="2 parameter groups"):
        sched2.load_state_dict({**sched.state_dict(), "_last_lr": [0.1, 0.2]})


# --- fault 3: writes into float16 parameters between steps -----------------------------------------------------
def _write_zero_index(p):
    p.data[...] = 0.0


def _write_assign(p):
    p.data = np.zeros(p.shape, np.float16)


def _write_inplace_mul(p):
    p.data *= 0


def _write_ufunc_out(p):
    np.multiply(p.data, 0, out=p.data)


def _write_init(p):
    xpnn.init.constant(p, 0.0)


def _write_partial(p):
    p.data[0] = 0.0  # only one row: the other rows keep their float32 digits


WRITES = {"index": _write_zero_index, "assign": _write_assign, "imul": _write_inplace_mul,
          "ufunc_out": _write_ufunc_out, "init": _write_init, "partial": _write_partial}


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per_param"])
@pytest.mark.parametrize("how", sorted(WRITES))
@pytest.mark.parametrize("alg", ["sgd", "adam"])
def test_float16_writes_between_steps_are_honoured(how, flat, alg):
    """Each step of the float16 model equals the float32 model's step rounded, whatever way the weight was written."""
    def make(dtype):
        lin = nn.Linear(3, 2, dtype=dtype, seed=0)
        params = lin.parameters() if flat else [lin.weight, lin.bias]  # a list: per-parameter state
        opt = optim.SGD(params, lr=0.1) if alg == "sgd" else optim.Adam(params, lr=0.01)
        return lin, opt

    h, oh = make("float16")
    s, os_ = make("float32")
    s.weight.data = h.weight.data.astype(np.float32)
    s.bias.data = h.bias.data.astype(np.float32)
    for lin, opt in ((h, oh), (s, os_)):
        lin.weight.grad = np.ones((2, 3), lin.weight.dtype)
        opt.step()
        WRITES[how](lin.weight)
        lin.weight.grad = np.ones((2, 3), lin.weight.dtype)
        opt.step()
    np.testing.assert_array_equal(h.weight.data, s.weight.data.astype(np.float16))
    if alg == "sgd" and how != "partial":
        np.testing.assert_array_equal(h.weight.data, np.full((2, 3), -0.1, np.float16))  # the issue's value


def test_float16_write_repro_from_the_issue_and_load_state_dict():
    lin = nn.Linear(3, 2, dtype="float16", seed=0)
    opt = optim.SGD(lin.parameters(), lr=0.1)
    lin.weight.grad = np.ones((2, 3), np.float16)
    opt.step()
    lin.weight.data[...] = 0.0
    lin.weight.grad = np.ones((2, 3), np.float16)
    opt.step()
    np.testing.assert_array_equal(lin.weight.data, np.full((2, 3), -0.1, np.float16))
    # a whole model loaded from elsewhere: the optimizer continues from the loaded values
    other = nn.Linear(3, 2, dtype="float16", seed=1)
    lin.load_state_dict(other.state_dict())
    lin.zero_grad()
    opt.step()
    np.testing.assert_array_equal(lin.weight.data, other.weight.data)
    # a write through the flat buffer itself
    lin.weight._flat.data[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(lin.weight.data, np.ones((2, 3), np.float16))


def test_float16_write_after_loading_optimizer_state():
    """Right after load_state_dict the optimizer does not know what it last wrote: the saved master stands in."""
    lin = nn.Linear(3, 2, dtype="float16", seed=0)
    opt = optim.Adam(lin.parameters(), lr=1e-3)
    lin.weight.grad = np.ones((2, 3), np.float16)
    opt.step()
    saved = opt.state_dict()
    kept = lin.weight.data[1].copy()
    fresh = optim.Adam(lin.parameters(), lr=1e-3)
    fresh.load_state_dict(saved)
    lin.weight.data[0] = 0.0  # a write between the load and the next step
    lin.weight.grad = np.ones((2, 3), np.float16)
    fresh.step()
    assert np.all(np.abs(lin.weight.data[0]) < 0.01)  # continued from 0, not from the stale master
    assert np.all(np.abs(lin.weight.data[1] - kept) < 0.01)
    master = fresh.state_dict()["state"][0]["master_param"]
    np.testing.assert_array_equal(master[1].astype(np.float16), lin.weight.data[1])


def test_float16_lone_parameter_replaced_by_another_shape():
    p = nn.Parameter(np.ones(3, np.float16))
    opt = optim.SGD([p], lr=0.5)
    p.grad = np.ones(3, np.float16)
    opt.step()
    p.data = np.zeros((2, 2), np.float16)
    p.grad = np.ones((2, 2), np.float16)
    opt.step()
    np.testing.assert_array_equal(p.data, np.full((2, 2), -0.5, np.float16))


def test_float16_master_keeps_its_digits_when_nothing_is_written():
    lin = nn.Linear(3, 2, dtype="float16", seed=0)
    start = lin.weight.data.astype(np.float32)
    opt = optim.SGD(lin.parameters(), lr=1e-4)  # far below float16's spacing near the weights
    for _ in range(50):
        lin.weight.grad = np.ones((2, 3), np.float16)
        opt.step()
    master = opt.state_dict()["state"][0]["master_param"]
    np.testing.assert_allclose(master, start - 50 * np.float32(1e-4), rtol=0, atol=1e-6)


# --- fault 4: PCA whitening ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1e-8, 1e-4, 1.0, 1e4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pca_whitening_is_unit_variance_at_any_scale(scale, dtype):
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(500, 4)) @ rng.normal(size=(4, 4)) * scale).astype(dtype)
    pca = PCA(4, whiten=True)
    Z = pca.fit_transform(X)
    np.testing.assert_allclose(Z.var(axis=0, ddof=1), 1.0, rtol=1e-4 if dtype == np.float32 else 1e-10)
    np.testing.assert_allclose(pca.inverse_transform(Z), X, rtol=0, atol=1e-4 * scale * 10)


def test_pca_whitening_issue_value_and_zero_variance_component():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4)) @ rng.normal(size=(4, 4)) * 1e-4
    np.testing.assert_allclose(PCA(4, whiten=True).fit_transform(X).var(axis=0, ddof=1), 1.0, rtol=1e-10)
    flat_col = np.c_[rng.normal(size=(50, 2)), np.full((50, 1), 3.0)] * 1e-5  # third direction has no variance
    Z = PCA(3, whiten=True).fit_transform(flat_col)
    assert np.all(np.isfinite(Z)) and np.abs(Z[:, 2]).max() < 1e-12
    np.testing.assert_allclose(Z[:, :2].var(axis=0, ddof=1), 1.0, rtol=1e-10)
    with pytest.raises(ValueError, match="rtol"):
        PCA(2, rtol=2.0)


# --- fault 5: EarlyStopping ----------------------------------------------------------------------------------
@pytest.mark.parametrize("patience, epochs", [(0, 2), (1, 2), (3, 4)])
def test_early_stopping_stops_after_patience_epochs_without_improvement(patience, epochs):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 4)).astype(np.float32), np.arange(20) % 2
    model = nn.Sequential(nn.Linear(4, 2, seed=0))
    es = EarlyStopping(monitor="val_loss", patience=patience)
    hist = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.0), X, y, epochs=20,
               batch_size=10, validation_data=(X, y), callbacks=[es], progress=False, seed=0)
    # lr 0: val_loss is the same every epoch; epoch 1 sets the best, then `patience` epochs without improvement
    assert hist.epochs == epochs == max(patience, 1) + 1 and es.stopped_epoch == epochs and es.best_epoch == 1


def test_pca_still_accepts_the_first_versions_eps_with_a_warning():
    from xpnn.data import PCA

    with pytest.warns(DeprecationWarning, match="eps is no longer used"):
        PCA(2, whiten=True, eps=1e-8)
