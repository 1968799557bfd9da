"""The capturable kernels (kernels/capturable.cu) on the CPU shim against the reference code:
Adam reading step count and lr from device memory (xpnn.functional.updates.adam_update with 0-d arrays), and the
loss-scaling unscale + inf/NaN check (xpnn.amp.unscale_and_check_)."""
from __future__ import annotations

import numpy as np
import pytest

from xpnn import _dispatch, nn, optim
from xpnn._cuda import make_provider, registry
from xpnn.amp import unscale_and_check_
from xpnn.functional import updates
from xpnn.optim.lr_scheduler import StepLR

from shim import ShimLoader

N_FLAT = 1000 + 37  # more than one block, not a multiple of the block size


@pytest.fixture(scope="module")
def loader():
    return ShimLoader()


def _run(loader, use_kernel, fn, *args, **kwargs):
    before = loader.launches
    if use_kernel:
        with _dispatch.use_provider(make_provider(loader)):
            fn(*args, **kwargs)
        assert loader.launches > before, f"{fn.__name__} did not run its capturable kernel"
    else:
        with _dispatch.use_kernels(False):
            fn(*args, **kwargs)


def test_registry_rows_exist():
    assert registry.supports("adam_update_capturable", "float32")
    assert registry.supports("amp_unscale_check", "float16")
    assert "capturable.cu" in registry.sources()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opts", [
    dict(), dict(weight_decay=0.1), dict(weight_decay=0.1, decoupled_weight_decay=True), dict(amsgrad=True),
    dict(maximize=True, weight_decay=0.01, amsgrad=True),
], ids=str)
def test_adam_capturable_matches_the_reference(loader, opts, dtype):
    results = []
    lrs = [1e-2, 1e-2, 5e-3, 2e-3]  # a schedule: the kernel reads the new value from the same array
    for use_kernel in (False, True):
        rng = np.random.default_rng(0)
        param = rng.standard_normal(N_FLAT).astype(dtype)
        m, v, vmax = (np.zeros(N_FLAT, dtype) for _ in range(3))
        step, lr = np.zeros((), dtype), np.zeros((), dtype)
        grads = np.random.default_rng(9).standard_normal((4, N_FLAT)).astype(dtype)
        for i in range(4):
            step += 1
            lr[...] = lrs[i]
            _run(loader, use_kernel, updates.adam_update, param, grads[i], m, v, vmax if opts.get("amsgrad") else None,
                 step=step, lr=lr, beta1=0.9, beta2=0.999, eps=1e-8, **opts)
        results.append((param, m, v, vmax))
    for want, got in zip(*results):  # bit for bit: the float64 scalars round to the same T values
        np.testing.assert_allclose(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("where", ["grad", "max_exp_avg_sq"])
def test_adam_capturable_amsgrad_propagates_nan(loader, dtype, where):
    """A NaN gradient, or a NaN already in max_exp_avg_sq, makes the AMSGrad maximum NaN (and the parameter),
    as in the reference and the other Adam kernels (fmax would return the other, finite operand)."""
    results = []
    for use_kernel in (False, True):
        rng = np.random.default_rng(3)
        param = rng.standard_normal(N_FLAT).astype(dtype)
        m, v, vmax = (np.zeros(N_FLAT, dtype) for _ in range(3))
        step, lr = np.zeros((), dtype), np.asarray(1e-2, dtype)
        grads = np.random.default_rng(4).standard_normal((3, N_FLAT)).astype(dtype)
        for i in range(3):
            step += 1
            if i == 1:  # NaN at step 2, in the packed body and in the scalar tail
                for k in (5, N_FLAT - 1):
                    if where == "grad":
                        grads[i, k] = np.nan
                    else:
                        vmax[k] = np.nan
            _run(loader, use_kernel, updates.adam_update, param, grads[i], m, v, vmax, step=step, lr=lr,
                 beta1=0.9, beta2=0.999, eps=1e-8, amsgrad=True)
        results.append((param, m, v, vmax))
    want_vmax = results[0][3]
    assert np.isnan(want_vmax[[5, N_FLAT - 1]]).all() and not np.isnan(np.delete(want_vmax, [5, N_FLAT - 1])).any()
    for want, got in zip(*results):
        np.testing.assert_array_equal(got, want)  # NaN where the reference has NaN, the same values elsewhere


CASES = {  # function, state buffers present (by options), keyword arguments per step (step/lr 0-d arrays)
    "sgd": (updates.sgd_update, lambda o: (o.get("momentum", 0) != 0,),
            lambda o, step, lr: dict(lr=lr, first_step=int(step) == 1, **o),
            [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=0.01),
             dict(momentum=0.8, dampening=0.3, maximize=True)]),
    "adagrad": (updates.adagrad_update, lambda o: (True,), lambda o, step, lr: dict(step=step, lr=lr, **o),
                [dict(), dict(lr_decay=0.1, weight_decay=0.05, maximize=True)]),
    "rmsprop": (updates.rmsprop_update,
                lambda o: (True, o["centered"], o["momentum"] > 0),
                lambda o, step, lr: dict(lr=lr, alpha=0.99, eps=1e-8, weight_decay=o.get("weight_decay", 0.0),
                                         momentum=o["momentum"], centered=o["centered"],
                                         maximize=o.get("maximize", False)),
                [dict(momentum=0.0, centered=False), dict(momentum=0.9, centered=False),
                 dict(momentum=0.0, centered=True, weight_decay=0.1), dict(momentum=0.5, centered=True,
                                                                           maximize=True)]),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,opts", [(k, o) for k, c in CASES.items() for o in c[3]], ids=str)
def test_other_capturable_optimizers_match_the_reference(loader, name, opts, dtype):
    fn, present, kwargs = CASES[name][:3]
    results = []
    lrs = [5e-2, 5e-2, 2e-2, 1e-2]
    for use_kernel in (False, True):
        rng = np.random.default_rng(0)
        param = rng.standard_normal(N_FLAT).astype(dtype)
        states = [np.zeros(N_FLAT, dtype) if keep else None for keep in present(opts)]
        step, lr = np.zeros((), dtype), np.zeros((), dtype)
        grads = np.random.default_rng(9).standard_normal((4, N_FLAT)).astype(dtype)
        for i in range(4):
            step += 1
            lr[...] = lrs[i]
            _run(loader, use_kernel, fn, param, grads[i], *states, **kwargs(opts, step, lr))
        results.append([param] + [x for x in states if x is not None])
    for want, got in zip(*results):
        np.testing.assert_allclose(got, want, rtol=0, atol=0)


def test_adam_capturable_equals_the_plain_kernel_path_within_rounding(loader):
    """Device step/lr vs Python step/lr: the same update, but for lr held in float32 on the device."""
    rng = np.random.default_rng(1)
    p0, g = rng.standard_normal(N_FLAT).astype(np.float32), rng.standard_normal(N_FLAT).astype(np.float32)
    out = []
    for device in (False, True):
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        for t in range(1, 4):
            step = np.asarray(t, np.float32) if device else t
            lr = np.asarray(1e-2, np.float32) if device else 1e-2
            _run(loader, True, updates.adam_update, p, g, m, v, step=step, lr=lr, beta1=0.9, beta2=0.999, eps=1e-8)
        out.append(p)
    np.testing.assert_allclose(out[1], out[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("bad", [None, np.inf, -np.inf, np.nan])
def test_unscale_and_check_matches_the_reference(loader, dtype, bad):
    rng = np.random.default_rng(2)
    g0 = (rng.standard_normal(N_FLAT) * 1000).astype(dtype)
    if bad is not None:
        g0[N_FLAT - 5] = bad  # in the last, partial block
    results = []
    for use_kernel in (False, True):
        g, inv, found = g0.copy(), np.asarray(2.0**-10, np.float32), np.zeros((), np.float32)
        _run(loader, use_kernel, unscale_and_check_, g, inv, found)
        results.append((g, found))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    assert float(results[1][1]) == float(results[0][1]) == (0.0 if bad is None else 1.0)


def test_unscale_and_check_keeps_a_raised_flag(loader):
    g, inv, found = np.ones(N_FLAT, np.float32), np.asarray(0.5, np.float32), np.ones((), np.float32)
    _run(loader, True, unscale_and_check_, g, inv, found)
    assert float(found) == 1.0 and np.all(g == 0.5)  # only update() clears the flag


@pytest.mark.parametrize("make_opt,op", [
    (lambda p: optim.Adam(p, lr=0.05), "adam_update_capturable"),
    (lambda p: optim.AdamW(p, lr=0.05, weight_decay=0.01, amsgrad=True), "adam_update_capturable"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True), "sgd_update_capturable"),
    (lambda p: optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True), "rmsprop_update_capturable"),
    (lambda p: optim.Adagrad(p, lr=0.1, lr_decay=0.01), "adagrad_update_capturable"),
], ids=["adam", "adamw-amsgrad", "sgd-nesterov", "rmsprop-centered", "adagrad"])
def test_capturable_optimizer_trains_through_the_kernels_with_an_lr_schedule(make_opt, op):
    """``optimizer.capturable = True`` (the default on GPU namespaces) on NumPy arrays: the step count and lr
    live in 0-d arrays, a schedule writes the lr in place, and the run matches the plain (host-scalar) optimizer."""
    from test_kernels_train import Recording, _data

    def train(capturable, use_shim):
        X, y = _data()
        rng = np.random.default_rng(1)
        model = nn.Sequential(nn.Linear(12, 16, seed=rng), nn.Tanh(), nn.Linear(16, 5, seed=rng))
        loss_fn = nn.CrossEntropyLoss()
        opt = make_opt(model.parameters())
        opt.capturable = capturable
        sched = StepLR(opt, step_size=5, gamma=0.5)
        recording = Recording(make_provider(ShimLoader()))
        losses = []
        with _dispatch.use_provider(recording if use_shim else None), _dispatch.use_kernels(use_shim):
            for _ in range(15):
                opt.zero_grad()
                losses.append(float(loss_fn(model(X), y)))
                model.backward(loss_fn.backward(), need_input_grad=False)
                opt.step()
                sched.step()
        return np.array(losses), recording.served, opt

    plain, _, plain_opt = train(False, use_shim=False)
    generic, _, opt = train(True, use_shim=False)
    kernel, served, kopt = train(True, use_shim=True)
    assert op in served
    plain_slot, slot, kslot = (o._layout.flat[0] for o in (plain_opt, opt, kopt))
    assert plain_slot.device is None  # neither a device lr nor a device step count
    lr_last_step = opt.defaults["lr"] * 0.5**2  # steps 11-15 ran at lr0 / 4 (the schedule's last write is pending)
    for sl in (slot, kslot):
        assert float(sl.device.step) == 15 and sl.step == 15
        assert float(sl.device.lr) == np.float32(lr_last_step)
    np.testing.assert_allclose(generic, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kernel, plain, rtol=1e-4, atol=1e-5)
