"""The options of xpnn.functional.updates: argument checks that a
signature cache must not skip, the capturable form (0-d ``step``/``lr`` arrays) against the host form and
torch.optim, and the option branches of each update against hand-computed or float64 NumPy values."""
from __future__ import annotations

import array_api_strict as xs
import numpy as np
import pytest

from xpnn import _dispatch
from xpnn.errors import DTypeError, NamespaceMismatchError, ShapeError
from xpnn.functional.updates import adagrad_update, adam_update, rmsprop_update, sgd_update


class _ListDevice(np.ndarray):
    """A NumPy array whose ``device`` is unhashable (a list): such arrays cannot be cached by signature."""

    @property
    def device(self):
        return ["cpu"]


# --- argument checks ---------------------------------------------------------------------------------------------

def test_param_from_another_library_than_its_grad_and_state_is_refused():
    for call in (lambda p: sgd_update(p, np.ones(2), np.zeros(2), lr=0.1, momentum=0.9),
                 lambda p: adam_update(p, np.ones(2), np.zeros(2), np.zeros(2), step=1, lr=0.1, beta1=0.9,
                                       beta2=0.99, eps=1e-8)):
        p = xs.asarray([1.0, 2.0], dtype=xs.float64)
        with pytest.raises(NamespaceMismatchError, match=r"(sgd|adam)_update: arrays from different libraries"):
            call(p)
        assert np.asarray(p).tolist() == [1.0, 2.0]


def test_arrays_with_an_unhashable_device_are_checked_every_call():
    p = np.array([1.0, 2.0]).view(_ListDevice)
    for _ in range(2):
        sgd_update(p, np.array([1.0, 1.0]).view(_ListDevice), lr=0.5)
    assert np.asarray(p).tolist() == [0.0, 1.0]
    with pytest.raises(ShapeError, match=r"sgd_update: grad must have the shape of param \(2,\), got \(3,\)"):
        sgd_update(p, np.ones(3).view(_ListDevice), lr=0.5)
    with pytest.raises(DTypeError, match="sgd_update: grad dtype float32 differs from param dtype float64"):
        sgd_update(p, np.ones(2, np.float32).view(_ListDevice), lr=0.5)


@pytest.mark.parametrize("alg", ["sgd", "adagrad", "rmsprop", "adam"])
def test_a_bad_call_after_a_good_one_is_still_refused(alg):
    # the checks are cached per signature: a call that differs from a cached one only in one state array's shape
    # or dtype, or in the param's dtype, must still be checked
    def call(p, g, s):
        if alg == "sgd":
            sgd_update(p, g, s, lr=0.1, momentum=0.9)
        elif alg == "adagrad":
            adagrad_update(p, g, s, step=1, lr=0.1)
        elif alg == "rmsprop":
            rmsprop_update(p, g, s, lr=0.1, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False)
        else:
            adam_update(p, g, s, np.zeros_like(p), step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8)

    where = f"{alg}_update"
    call(np.ones(3), np.ones(3), np.zeros(3))
    with pytest.raises(ShapeError, match=rf"{where}: \w+ must have the shape of param \(3,\), got \(2,\)"):
        call(np.ones(3), np.ones(3), np.zeros(2))
    with pytest.raises(DTypeError, match=rf"{where}: \w+ dtype float32 differs from param dtype float64"):
        call(np.ones(3), np.ones(3), np.zeros(3, np.float32))
    call(np.ones(3, np.int64).astype(np.float32), np.ones(3, np.float32), np.zeros(3, np.float32))
    with pytest.raises(DTypeError, match=rf"{where}: param must be a floating array .*got dtype int64"):
        call(np.ones(3, np.int64), np.ones(3, np.int64), np.zeros(3, np.int64))


@pytest.mark.parametrize("step", [0, -1, 1.0, True, None, np.ones(1)])
def test_a_bad_step_is_refused_naming_the_function(step):
    with pytest.raises(ValueError, match=r"^adagrad_update: step must be an int >= 1"):
        adagrad_update(np.ones(2), np.ones(2), np.zeros(2), step=step, lr=0.1)
    with pytest.raises(ValueError, match=r"^adam_update: step must be an int >= 1"):
        adam_update(np.ones(2), np.ones(2), np.zeros(2), np.zeros(2), step=step, lr=0.1, beta1=0.9, beta2=0.9,
                    eps=1e-8)


# --- the fused-kernel hook: what a kernel is asked for and given -------------------------------------------------

def _recording_provider(calls):
    def provider(op, xp, dtype):
        def kernel(*args, **kwargs):
            calls.append((op, str(dtype), args, kwargs))
            return NotImplemented  # decline: the reference code runs
        return kernel
    return provider


def _cap(x):
    return np.asarray(x, dtype=np.float32)  # a 0-d array: the capturable form of step / lr


@pytest.mark.parametrize("step,lr,op", [(3, 0.1, "{}"), (_cap(3), 0.1, "{}_capturable"),
                                        (3, _cap(0.1), "{}_capturable"), (_cap(3), _cap(0.1), "{}_capturable")],
                         ids=["host", "step", "lr", "both"])
def test_kernels_get_the_op_dtype_arrays_and_hyperparameters(step, lr, op):
    def arrays(n):
        return tuple(np.array(v, np.float32) for v in ([1, 2], [0.5, -0.5], [0, 0], [0, 0], [0, 0])[:n])

    host = isinstance(step, int)  # sgd and rmsprop take no step: their capturable form is a 0-d lr
    expected = []
    if host or not isinstance(lr, float):
        expected += [("sgd_update", sgd_update, arrays(3), dict(lr=lr, momentum=0.5, dampening=0.25, nesterov=False,
                                                                weight_decay=0.125, first_step=True, maximize=True)),
                     ("rmsprop_update", rmsprop_update, arrays(5),
                      dict(lr=lr, alpha=0.75, eps=1e-3, weight_decay=0.25, momentum=0.5, centered=True,
                           maximize=True))]
    expected += [("adagrad_update", adagrad_update, arrays(3),
                  dict(step=step, lr=lr, lr_decay=0.5, weight_decay=0.25, eps=1e-3, maximize=True)),
                 ("adam_update", adam_update, arrays(5),
                  dict(step=step, lr=lr, beta1=0.5, beta2=0.75, eps=1e-3, weight_decay=0.25,
                       decoupled_weight_decay=True, amsgrad=True, maximize=True))]
    calls = []
    with _dispatch.use_provider(_recording_provider(calls)):
        for _, fn, args, kwargs in expected:
            fn(*args, **kwargs)
    assert [c[0] for c in calls] == [op.format(name) for name, *_ in expected]
    for (_, dtype, args, kwargs), (_, _, want_args, want_kwargs) in zip(calls, expected):
        assert dtype == "float32"
        assert len(args) == len(want_args) and all(x is y for x, y in zip(args, want_args))
        assert kwargs.keys() == want_kwargs.keys()
        assert all(kwargs[k] is v or kwargs[k] == v for k, v in want_kwargs.items()), kwargs


# --- against torch.optim ------------------------------------------------------------------------------------------

def _run_functional(alg, kw, p0, grads, capturable):
    """Steps of one update function over a float64 param, state kept as an optimizer keeps it."""
    p = np.array(p0)
    z = lambda: np.zeros_like(p)  # noqa: E731
    kw = dict(kw)
    wrap = (lambda x: np.asarray(x, dtype=np.float64)) if capturable else (lambda x: x)
    if alg == "sgd":
        buf = z() if kw.get("momentum") else None
        for t, g in enumerate(grads, 1):
            sgd_update(p, g, buf, first_step=t == 1, scratch=[], **{**kw, "lr": wrap(kw["lr"])})
    elif alg == "adagrad":
        s = np.full_like(p, kw.pop("initial_accumulator_value", 0.0))
        for t, g in enumerate(grads, 1):
            adagrad_update(p, g, s, step=wrap(t), scratch=[], **{**kw, "lr": wrap(kw["lr"])})
    elif alg == "rmsprop":
        sq, ga, buf = z(), z() if kw["centered"] else None, z() if kw["momentum"] else None
        for g in grads:
            rmsprop_update(p, g, sq, ga, buf, scratch=[], **{**kw, "lr": wrap(kw["lr"])})
    else:
        b1, b2 = kw.pop("betas")
        m, v, vmax = z(), z(), z() if kw.get("amsgrad") else None
        for t, g in enumerate(grads, 1):
            adam_update(p, g, m, v, vmax, step=wrap(t), beta1=b1, beta2=b2, scratch=[],
                        **{**kw, "lr": wrap(kw["lr"])})
    return p


TORCH_CASES = [
    ("sgd", dict(lr=0.1, weight_decay=1.0, maximize=True)),
    ("sgd", dict(lr=0.1, momentum=0.9, dampening=0.5, weight_decay=1.0, maximize=True)),
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1.0)),
    ("adagrad", dict(lr=0.1, lr_decay=0.5, weight_decay=1.0, maximize=True, initial_accumulator_value=0.1)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=1.0, momentum=0.5, centered=True, maximize=True)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=True)),
    ("adam", dict(lr=0.1, betas=(0.8, 0.9), eps=1e-8, weight_decay=1.0, maximize=True)),
    ("adam", dict(lr=0.1, betas=(0.8, 0.9), eps=1e-8, weight_decay=1.0, decoupled_weight_decay=True)),
    ("adam", dict(lr=0.1, betas=(0.8, 0.9), eps=1e-8, weight_decay=1.0, decoupled_weight_decay=True, amsgrad=True,
                  maximize=True)),
    ("adam", dict(lr=0.1, betas=(0.8, 0.9), eps=1e-8, maximize=True)),
]


@pytest.mark.parametrize("capturable", [False, True], ids=["host", "capturable"])
@pytest.mark.parametrize("alg,kw", TORCH_CASES, ids=[f"{a}-{i}" for i, (a, _) in enumerate(TORCH_CASES)])
def test_updates_match_torch_optim(alg, kw, capturable):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    p0 = rng.normal(size=5)
    grads = [rng.normal(size=5) for _ in range(4)]
    grads[2] = grads[2] * 0.1  # a shrinking gradient: amsgrad's max differs from the last v
    t = torch.tensor(p0, requires_grad=True)
    tkw = dict(kw)
    cls = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
           "adam": torch.optim.AdamW if tkw.pop("decoupled_weight_decay", False) else torch.optim.Adam}[alg]
    topt = cls([t], **tkw)
    for g in grads:
        t.grad = torch.tensor(g)
        topt.step()
    got = _run_functional(alg, kw, p0, grads, capturable)
    np.testing.assert_allclose(got, t.detach().numpy(), rtol=1e-12, atol=1e-14)


# --- the capturable form: 0-d step and lr arrays -----------------------------------------------------------------

class _DeviceOnly(np.ndarray):
    """A 0-d NumPy array standing for a device scalar: reading it on the host fails the test."""

    def _host_read(self, *args, **kwargs):
        raise AssertionError("the capturable form read a device scalar on the host")

    __float__ = __int__ = __index__ = __bool__ = item = tolist = _host_read


LR = float(np.float32(0.3))  # exact in float32: both forms start from the same learning rate


def _steps(alg, ns, step_of, lr_of, n=6, dtype=np.float32):
    """``n`` steps of ``alg`` on namespace ``ns``; ``step_of(t)``/``lr_of(lr)`` give the step and lr passed."""
    rng = np.random.default_rng(7)
    arr = lambda v: ns(np.asarray(v, dtype))  # noqa: E731
    p = arr(rng.normal(size=64) * 0.01)  # small: a last-digit change of a step shows in the parameter
    state = [arr(np.zeros(64)) for _ in range(3)]
    for t in range(1, n + 1):
        g = arr(rng.normal(size=64))
        if alg == "adam":
            adam_update(p, g, *state, step=step_of(t), lr=lr_of(LR), beta1=0.9, beta2=0.999, eps=1e-6,
                        weight_decay=0.5, decoupled_weight_decay=True, amsgrad=True)
        elif alg == "adam-l2":
            adam_update(p, g, state[0], state[1], step=step_of(t), lr=lr_of(LR), beta1=0.9, beta2=0.999,
                        eps=1e-6, weight_decay=0.5, maximize=True)
        elif alg == "adagrad":
            adagrad_update(p, g, state[0], step=step_of(t), lr=lr_of(LR), lr_decay=0.1, weight_decay=0.5)
        elif alg == "sgd":
            sgd_update(p, g, state[0], lr=lr_of(LR), momentum=0.5, first_step=t == 1)
        else:
            rmsprop_update(p, g, state[0], state[1], state[2], lr=lr_of(LR), alpha=0.9, eps=1e-6,
                           weight_decay=0.5, momentum=0.5, centered=True)
    if hasattr(p, "to_device") and type(p).__module__.startswith("array_api_strict"):
        p = p.to_device(xs.Device("CPU_DEVICE"))
    return np.asarray(p)


def _f32(x):
    return np.asarray(x, dtype=np.float32)


ALGS = ["adam", "adam-l2", "adagrad", "sgd", "rmsprop"]
HOST_STEP = {"sgd", "rmsprop"}  # no step count


@pytest.mark.parametrize("alg,form", [(a, f) for a in ALGS for f in ("step", "lr", "both")
                                      if not (a in HOST_STEP and f == "step")])
def test_capturable_form_equals_the_host_form_bit_for_bit(alg, form):
    # the bias corrections / decayed lr are computed in float64 and rounded once to the compute dtype, as the host
    # form's Python floats are
    host = _steps(alg, np.asarray, lambda t: t, lambda lr: lr)
    cap = _steps(alg, np.asarray, _f32 if form != "lr" else (lambda t: t), _f32 if form != "step" else (lambda lr: lr))
    assert cap.dtype == np.float32
    np.testing.assert_array_equal(cap, host)


@pytest.mark.parametrize("alg", ALGS)
def test_capturable_form_never_reads_step_or_lr_on_the_host(alg):
    dev = lambda x: np.asarray(x, dtype=np.float32).view(_DeviceOnly)  # noqa: E731
    host = _steps(alg, np.asarray, lambda t: t, lambda lr: lr)
    got = _steps(alg, np.asarray, dev if alg not in HOST_STEP else (lambda t: t), dev)
    np.testing.assert_array_equal(got, host)
    if alg not in HOST_STEP:  # and with only one of the two on the device
        np.testing.assert_array_equal(_steps(alg, np.asarray, dev, lambda lr: lr), host)
        np.testing.assert_array_equal(_steps(alg, np.asarray, lambda t: t, dev), host)


@pytest.mark.parametrize("alg", ["adam", "adagrad"])
def test_capturable_scalars_are_made_on_the_param_s_device(alg):
    # array_api_strict refuses to mix devices: every 0-d array the update makes must be on the param's device
    d1 = xs.Device("device1")
    ns = lambda a: xs.asarray(a, device=d1)  # noqa: E731
    dev = lambda x: xs.asarray(np.float32(x), device=d1)  # noqa: E731
    host = _steps(alg, np.asarray, lambda t: t, lambda lr: lr)
    for step_of, lr_of in ((dev, dev), (dev, lambda lr: lr), (lambda t: t, dev)):
        np.testing.assert_array_equal(_steps(alg, ns, step_of, lr_of), host)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("alg", ["adam", "adam-l2", "adagrad"])
def test_capturable_scalars_are_float64_whatever_the_library_default(alg, dtype):
    # torch's default floating dtype is float32: the bias corrections (1 - 0.999**t cancels) and Adagrad's decayed
    # lr must still be computed in float64
    torch = pytest.importorskip("torch")
    ns = lambda a: torch.asarray(a)  # noqa: E731
    dev = lambda x: torch.tensor(x, dtype=torch.float32 if dtype == np.float32 else torch.float64)  # noqa: E731
    host = _steps(alg, ns, lambda t: t, lambda lr: lr, dtype=dtype)
    for step_of, lr_of in ((dev, dev), (dev, lambda lr: lr), (lambda t: t, dev)):
        got = _steps(alg, ns, step_of, lr_of, dtype=dtype)
        if dtype == np.float32:
            np.testing.assert_array_equal(got, host)
        else:  # torch's float64 pow may differ from Python's in the last digit; float32 math would show at 1e-8
            np.testing.assert_allclose(got, host, rtol=1e-13, atol=0)
