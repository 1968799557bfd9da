"""xpnn.amp.GradScaler: PyTorch's names and defaults, skip-and-back-off on inf/NaN, growth, unscale in one pass,
float16 training that stalls without the scaler and matches float32 with it."""
import array_api_strict
import numpy as np
import pytest

import xpnn
import xpnn.nn as nn
import xpnn.optim as optim
from xpnn.amp import GradScaler, unscale_and_check_
from xpnn.backend import dtype_name
from xpnn.data import load_digits


def _linear(dtype="float32", backend=None, n_in=4, n_out=3, seed=0):
    model = nn.Sequential(nn.Linear(n_in, n_out, seed=seed, backend=backend))
    return model.to(dtype=dtype) if dtype != "float32" else model


def test_defaults_and_names_match_pytorch():
    s = GradScaler()
    assert s.get_scale() == 2.0**16 and s.get_growth_factor() == 2.0 and s.get_backoff_factor() == 0.5
    assert s.get_growth_interval() == 2000 and s.is_enabled()
    assert s.state_dict() == {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                              "_growth_tracker": 0}
    torch = pytest.importorskip("torch")
    t = torch.amp.GradScaler("cpu")
    assert set(t.state_dict()) == set(s.state_dict())
    for name in ("scale", "step", "update", "unscale_", "get_scale", "state_dict", "load_state_dict", "is_enabled",
                 "get_growth_factor", "get_backoff_factor", "get_growth_interval"):
        assert callable(getattr(t, name)) and callable(getattr(s, name)), name


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_inf_or_nan_skips_the_step_and_halves_the_scale(bad):
    model = _linear()
    opt = optim.Adam(model.parameters(), lr=0.1)
    s = GradScaler(init_scale=8.0)
    before = model[0].weight.data.copy()
    x = np.ones((2, 4), np.float32)
    model(x)
    dy = s.scale(np.ones((2, 3), np.float32))
    model.backward(dy, need_input_grad=False)
    model[0].weight.grad[0, 0] = bad
    assert s.step(opt) is False
    s.update()
    np.testing.assert_array_equal(model[0].weight.data, before)
    assert all(e == {"step": 0} for e in opt.state_dict()["state"].values())  # no step counted, no moments
    assert s.get_scale() == 4.0 and s.state_dict()["_growth_tracker"] == 0


def test_clean_steps_unscale_exactly_and_grow_after_the_interval():
    model, ref = _linear(), _linear()
    opt, ref_opt = optim.SGD(model.parameters(), lr=0.5), optim.SGD(ref.parameters(), lr=0.5)
    s = GradScaler(init_scale=4.0, growth_interval=3)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    scales = []
    for _ in range(7):
        for m, o, scaler in ((model, opt, s), (ref, ref_opt, None)):
            o.zero_grad()
            m(x)
            dy = np.full((5, 3), 0.25, np.float32)
            m.backward(scaler.scale(dy) if scaler else dy, need_input_grad=False)
            if scaler:
                assert scaler.step(o) is True
                scaler.update()
            else:
                o.step()
        scales.append(s.get_scale())
    assert scales == [4.0, 4.0, 8.0, 8.0, 8.0, 16.0, 16.0]
    for p, q in zip(model.parameters(), ref.parameters()):  # power-of-two scales: unscaling is exact
        np.testing.assert_array_equal(p.data, q.data)


def test_unscale_then_step_and_errors():
    model = _linear()
    opt = optim.SGD(model.parameters(), lr=0.1)
    s = GradScaler(init_scale=16.0)
    with pytest.raises(RuntimeError, match="nothing was scaled"):
        s.step(opt)
    model(np.ones((1, 4), np.float32))
    model.backward(s.scale(np.ones((1, 3), np.float32)), need_input_grad=False)
    s.unscale_(opt)
    np.testing.assert_array_equal(model[0].bias.grad, np.ones(3, np.float32))  # unscaled in place
    with pytest.raises(RuntimeError, match="already called"):
        s.unscale_(opt)
    assert s.step(opt) is True
    s.update()
    half = _linear("float16")
    opt16 = optim.SGD(half.parameters(), lr=0.1)
    half(np.ones((1, 4), np.float16))
    half.backward(s.scale(np.ones((1, 3), np.float16)), need_input_grad=False)
    with pytest.raises(ValueError, match="float16 gradients cannot be unscaled in place"):
        s.unscale_(opt16)
    with pytest.raises(ValueError, match="growth_factor"):
        GradScaler(growth_factor=1.0)


def test_scale_of_float16_does_not_overflow_on_the_factor():
    s = GradScaler()  # 2**16 is above float16's max (65504)
    out = s.scale(np.full(3, 2.0**-10, np.float16))
    assert out.dtype == np.float16 and np.all(out == np.float16(64.0))


def test_state_dict_round_trip_and_disabled_scaler():
    s = GradScaler(init_scale=2.0**10, growth_interval=5)
    s.scale(np.ones(2, np.float32))
    sd = s.state_dict()
    t = GradScaler()
    t.load_state_dict(sd)
    assert t.state_dict() == sd
    off = GradScaler(enabled=False)
    x = np.ones(2, np.float32)
    assert off.scale(x) is x and off.get_scale() == 1.0 and off.state_dict() == {}
    model = _linear()
    opt = optim.SGD(model.parameters(), lr=0.1)
    model(np.ones((1, 4), np.float32))
    model.backward(np.ones((1, 3), np.float32), need_input_grad=False)
    before = model[0].bias.data.copy()
    assert off.step(opt) is True
    assert not np.array_equal(model[0].bias.data, before)


def test_unscale_and_check_is_one_function_over_namespaces():
    for be in (xpnn.get_backend("numpy"), xpnn.get_backend(array_api_strict)):
        xp = be.xp
        g = be.asarray(np.array([2.0, -4.0, 8.0], np.float32))
        inv, found = be.asarray(np.float32(0.5)), be.asarray(np.float32(0.0))
        unscale_and_check_(g, inv, found)
        np.testing.assert_array_equal(np.asarray(xpnn.backend.to_numpy(g)), [1.0, -2.0, 4.0])
        assert float(found) == 0.0
        g2 = be.asarray(np.array([1.0, np.nan], np.float32))
        unscale_and_check_(g2, inv, found)
        assert float(found) == 1.0
        unscale_and_check_(g, inv, found)
        assert float(found) == 1.0 and xp is not None  # stays set until update()


def test_scaler_step_reads_one_flag_per_step_on_a_device_namespace(monkeypatch):
    """The only host read of a scaled step is the skip decision (PyTorch's choice too)."""
    Array = type(array_api_strict.asarray(1.0))
    reads = []
    orig = Array.__bool__
    monkeypatch.setattr(Array, "__bool__", lambda self: reads.append(1) or orig(self))
    be = xpnn.get_backend(array_api_strict)
    model = _linear(backend=be)
    opt = optim.Adam(model.parameters())
    s = GradScaler()
    x = be.asarray(np.ones((2, 4), np.float32))
    loss_fn = nn.MSELoss()
    t = be.asarray(np.zeros((2, 3), np.float32))
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model(x), t)
        model.backward(s.scale(loss_fn.backward()), need_input_grad=False)
        s.step(opt)
        s.update()
    assert len(reads) == 3


def _underflow_problem():
    """float16 regression, the loss computed in float32 (as torch.autocast runs losses). The target is the model's
    output shifted by 8e-4 in every entry (reachable through the bias), so the loss gradient 2 * err / numel is
    2.4e-8 everywhere (numel 2**16): below half of float16's smallest subnormal (6e-8), so cast to the model's
    float16 for backward it rounds to zero, every entry."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1024, 64)).astype(np.float16)
    model = nn.Sequential(nn.Linear(64, 64, seed=1)).to(dtype="float16")
    target = model(x).astype(np.float32) + np.float32(8e-4)
    return model, x, target


@pytest.mark.parametrize("use_scaler", [False, True])
def test_float16_underflow_stalls_without_the_scaler(use_scaler):
    model, x, target = _underflow_problem()
    opt = optim.Adam(model.parameters(), lr=5e-5)
    loss_fn = nn.MSELoss()
    scaler = GradScaler() if use_scaler else None
    w0 = model[0].weight.data.copy()
    losses = []
    for _ in range(12):
        opt.zero_grad()
        losses.append(float(loss_fn(model(x).astype(np.float32), target)))  # the loss in float32
        dy = loss_fn.backward()
        if scaler is None:
            dy16 = dy.astype(np.float16)
            model.backward(dy16, need_input_grad=False)
            opt.step()
        else:
            model.backward(scaler.scale(dy).astype(np.float16), need_input_grad=False)
            scaler.step(opt)
            scaler.update()
    if scaler is None:
        assert np.any(dy) and not np.any(dy16), "the float32 loss gradient should underflow to zero in float16"
        np.testing.assert_array_equal(model[0].weight.data, w0)  # stalled: not one weight moved
        assert losses[-1] == losses[0]
    else:
        assert not np.array_equal(model[0].weight.data, w0)
        assert losses[-1] < 0.5 * losses[0], losses


def _digits_accuracy(dtype, scaler):
    X, y = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    X, y = X[order], y[order]
    Xtr, ytr, Xte, yte = X[:1400], y[:1400], X[1400:], y[1400:]
    model = nn.Sequential(nn.Linear(64, 64, seed=0), nn.ReLU(), nn.Linear(64, 10, seed=1))
    if dtype == "float16":
        model.to(dtype="float16")
        Xtr, Xte = Xtr.astype(np.float16), Xte.astype(np.float16)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(15):
        perm = np.random.default_rng(epoch).permutation(len(ytr))
        for i in range(0, len(ytr), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss_fn(model(Xtr[idx]).astype(np.float32), ytr[idx])  # the loss in float32, as autocast runs it
            dy = loss_fn.backward()
            dy = (scaler.scale(dy) if scaler else dy).astype(Xtr.dtype)
            model.backward(dy, need_input_grad=False)
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
    model.eval()
    return 100.0 * float(np.mean(np.argmax(np.asarray(model(Xte), np.float32), axis=1) == yte))


def test_float16_digits_with_the_scaler_match_float32():
    acc32 = _digits_accuracy("float32", None)
    acc16 = _digits_accuracy("float16", GradScaler())
    assert acc32 > 94.0
    assert abs(acc16 - acc32) <= 0.5, (acc16, acc32)


def test_tape_api_float16_step_with_the_scaler():
    """``scaler.scale(loss).backward()`` on the tape, float16 model, loss in float32: gradients reach the float16
    flat buffer scaled, the step unscales them into the optimizer's float32 copy."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype(np.float16), rng.integers(0, 3, 16)
    model = nn.Sequential(nn.Linear(4, 8, seed=0), nn.ReLU(), nn.Linear(8, 3, seed=1)).to(dtype="float16")
    ref = nn.Sequential(nn.Linear(4, 8, seed=0), nn.ReLU(), nn.Linear(8, 3, seed=1)).to(dtype="float16")
    opt, ref_opt = optim.Adam(model.parameters(), lr=1e-2), optim.Adam(ref.parameters(), lr=1e-2)
    scaler, loss_fn = GradScaler(init_scale=2.0**8), nn.CrossEntropyLoss()
    for _ in range(3):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            loss = loss_fn(m(xpnn.tensor(x)).to(dtype="float32"), y)
            if m is model:
                scaled = scaler.scale(loss)
                assert isinstance(scaled, xpnn.Tensor) and float(scaled) == pytest.approx(256 * float(loss))
                scaled.backward()
                assert scaler.step(o) is True
                scaler.update()
            else:
                loss.backward()
                o.step()
    for p, q in zip(model.parameters(), ref.parameters()):  # scaling by 2**8 is exact: the same steps
        np.testing.assert_allclose(p.data.astype(np.float32), q.data.astype(np.float32), rtol=2e-3, atol=2e-3)


# --- several optimizers: each skips on its own gradients (torch.amp.GradScaler's per-optimizer state) ---------------

def _two_models(backend=None, dtype="float32"):
    a = nn.Sequential(nn.Linear(3, 2, seed=0, backend=backend))
    b = nn.Sequential(nn.Linear(3, 2, seed=1, backend=backend))
    if dtype != "float32":
        a.to(dtype=dtype), b.to(dtype=dtype)
    return a, b


def _torch_copy(torch, model):
    lin = model[0]
    t = torch.nn.Linear(lin.in_features, lin.out_features)
    with torch.no_grad():
        t.weight.copy_(torch.tensor(np.asarray(lin.weight.data, np.float32)))
        t.bias.copy_(torch.tensor(np.asarray(lin.bias.data, np.float32)))
    return t


def _host(p):
    return np.array(xpnn.backend.to_numpy(p.data), np.float32)  # a copy


_X = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
# which model's loss term is multiplied by inf in each iteration; "clip" calls unscale_ on both before step
PLAN = [None, "a", None, "b", "clip", "both", None, None]


def _xpnn_run(a, b, be, capturable=False):
    oa, ob = optim.Adam(a.parameters(), lr=0.1), optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    if capturable:
        oa.capturable = ob.capturable = True  # device step and lr (the CUDA-graph path), here on the CPU
    s = GradScaler(init_scale=2.0**4, growth_interval=2)
    x = xpnn.tensor(be.asarray(_X.astype(dtype_name(a[0].weight.dtype))))
    seen = []
    for bad in PLAN:
        oa.zero_grad(), ob.zero_grad()
        la = a(x).to(dtype="float32").sum() * (float("inf") if bad in ("a", "both") else 1.0)
        lb = b(x).to(dtype="float32").sum() * (float("inf") if bad in ("b", "both") else 1.0)
        s.scale(la + lb).backward()
        if bad == "clip" and dtype_name(a[0].weight.dtype) != "float16":  # (float16: unscaled in step only)
            s.unscale_(oa), s.unscale_(ob)
        ran = (s.step(oa), s.step(ob))
        s.update()
        seen.append((ran, [_host(p) for p in (*a.parameters(), *b.parameters())], s.get_scale(),
                     s.state_dict()["_growth_tracker"]))
    return seen, s


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the planted inf
def test_each_optimizer_skips_on_its_own_gradients_like_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for GradScaler with several optimizers")
    a, b = _two_models()
    ta, tb = _torch_copy(torch, a), _torch_copy(torch, b)
    toa, tob = torch.optim.Adam(ta.parameters(), lr=0.1), torch.optim.SGD(tb.parameters(), lr=0.1, momentum=0.9)
    ts = torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=2)
    tx = torch.tensor(_X)
    seen, s = _xpnn_run(a, b, xpnn.get_backend("numpy"))
    for i, bad in enumerate(PLAN):
        toa.zero_grad(), tob.zero_grad()
        la = ta(tx).sum() * (float("inf") if bad in ("a", "both") else 1.0)
        lb = tb(tx).sum() * (float("inf") if bad in ("b", "both") else 1.0)
        ts.scale(la + lb).backward()
        if bad == "clip":
            ts.unscale_(toa), ts.unscale_(tob)
        ts.step(toa), ts.step(tob)
        ts.update()
        ran, params, scale, tracker = seen[i]
        assert ran == (bad not in ("a", "both"), bad not in ("b", "both")), (i, bad)
        want = [p.detach().numpy() for p in (*ta.parameters(), *tb.parameters())]
        for got, w in zip(params, want):
            np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6, err_msg=f"iteration {i} ({bad})")
        assert (scale, tracker) == (ts.get_scale(), ts._get_growth_tracker()), (i, bad)
    assert s.state_dict() == ts.state_dict()


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the planted inf
@pytest.mark.parametrize("path", ["array_api_strict", "capturable", "float16"])
def test_each_optimizer_skips_on_its_own_gradients_on_every_path(path):
    """The same plan on the generic array-API path, with capturable optimizers (device step and lr: the CUDA-graph
    path) and on float16 models (the float32 gradient copy the scaler checks): each optimizer skips only on its
    own overflow, and the scales and steps agree with the plain NumPy float32 run."""
    ref, _ = _xpnn_run(*_two_models(), xpnn.get_backend("numpy"))
    if path == "array_api_strict":
        be = xpnn.get_backend(array_api_strict)
        seen, _ = _xpnn_run(*_two_models(backend=be), be)
    else:
        seen, _ = _xpnn_run(*_two_models(dtype="float16" if path == "float16" else "float32"),
                            xpnn.get_backend("numpy"), capturable=path == "capturable")
    tol = 2e-3 if path == "float16" else 1e-6
    for bad, (ran, params, scale, tracker), (ran0, params0, scale0, tracker0) in zip(PLAN, seen, ref):
        assert ran == (bad not in ("a", "both"), bad not in ("b", "both")), bad
        assert (ran, scale, tracker) == (ran0, scale0, tracker0)
        for p, q in zip(params, params0):
            np.testing.assert_allclose(p, q, rtol=tol, atol=tol)


def test_stage_errors_and_update_resets_every_optimizer():
    """PyTorch's order rules, per optimizer: unscale_ twice, unscale_ after step, step twice raise until update();
    update() with nothing checked raises; update() lets every optimizer start again."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for GradScaler's order rules")
    a, b = _two_models()
    oa, ob = optim.SGD(a.parameters(), lr=0.1), optim.SGD(b.parameters(), lr=0.1)
    s = GradScaler(init_scale=8.0)
    ta, tb = _torch_copy(torch, a), _torch_copy(torch, b)
    toa, tob = torch.optim.SGD(ta.parameters(), lr=0.1), torch.optim.SGD(tb.parameters(), lr=0.1)
    ts = torch.amp.GradScaler("cpu", init_scale=8.0)
    x, tx = xpnn.tensor(np.ones((2, 3), np.float32)), torch.ones(2, 3)
    for scaler, (ma, mb), (o1, o2), xx in ((s, (a, b), (oa, ob), x), (ts, (ta, tb), (toa, tob), tx)):
        scaler.scale(ma(xx).sum() + mb(xx).sum()).backward()
        with pytest.raises((RuntimeError, AssertionError)):
            scaler.update()  # nothing checked yet
        scaler.unscale_(o1)
        with pytest.raises(RuntimeError, match="already"):
            scaler.unscale_(o1)
        scaler.step(o1)
        with pytest.raises(RuntimeError, match="after step"):
            scaler.unscale_(o1)
        with pytest.raises(RuntimeError, match="already"):
            scaler.step(o1)
        scaler.step(o2)  # the other optimizer is independent
        scaler.update()
        scaler.scale(ma(xx).sum() + mb(xx).sum()).backward()
        scaler.unscale_(o1)  # allowed again after update()
        scaler.step(o1), scaler.step(o2)
        scaler.update()
    for p, q in zip((*a.parameters(), *b.parameters()), (*ta.parameters(), *tb.parameters())):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-6)  # step after unscale_: unscaled once


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the planted inf
def test_state_dict_mid_training_matches_pytorch_and_resumes():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for GradScaler.state_dict")
    seen, s = _xpnn_run(*_two_models(), xpnn.get_backend("numpy"))
    ts = torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=2)
    ts.load_state_dict(s.state_dict())
    assert ts.state_dict() == s.state_dict() and s.get_scale() != 2.0**4
    resumed = GradScaler()
    resumed.load_state_dict(s.state_dict())
    for scaler in (s, resumed, ts):  # two clean steps each: the tracker reaches growth_interval, the scale grows
        model = _linear() if scaler is not ts else torch.nn.Linear(4, 3)
        opt = (optim.SGD if scaler is not ts else torch.optim.SGD)(model.parameters(), lr=0.1)
        x = xpnn.tensor(np.ones((1, 4), np.float32)) if scaler is not ts else torch.ones(1, 4)
        for _ in range(2):
            scaler.scale(model(x).sum()).backward()
            scaler.step(opt)
            scaler.update()
    assert s.state_dict() == resumed.state_dict() == ts.state_dict()
    assert s.get_scale() == 2 * seen[-1][2]
