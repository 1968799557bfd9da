"""xpnn.functional.updates: the in-place optimizer updates against hand-computed values and an independent NumPy
re-derivation of each formula (every option branch), on NumPy and array_api_strict; the kernel hook; errors."""
import tracemalloc

import array_api_strict
import numpy as np
import pytest

import xpnn
from xpnn import _dispatch
from xpnn.errors import DTypeError, NamespaceMismatchError, ShapeError
from xpnn.functional.updates import adagrad_update, adam_update, copy_into, rmsprop_update, sgd_update

from _optim_reference import CASES, REFERENCES, case_id

NAMESPACES = ["numpy", "array_api_strict"]


def asns(name, a):
    return np.array(a, dtype=np.float64) if name == "numpy" else array_api_strict.asarray(np.array(a, np.float64))


def npy(a):
    return np.asarray(xpnn.backend.to_numpy(a))


class Runner:
    """Drives one update function over several steps, keeping its state arrays like an optimizer does."""

    def __init__(self, alg, case, p, ns, scratch):
        self.alg, self.case, self.ns = alg, dict(case), ns
        self.p = asns(ns, p)
        self.t = 0
        self.scratch = [] if scratch else None
        z = lambda: asns(ns, np.zeros_like(p))  # noqa: E731
        c = self.case
        if alg == "sgd":
            self.state = [z() if c.get("momentum") else None]
        elif alg == "adagrad":
            self.state = [asns(ns, np.full_like(p, c.pop("initial", 0.0)))]
        elif alg == "rmsprop":
            self.state = [z(), z() if c.get("centered") else None, z() if c.get("momentum") else None]
        else:
            self.state = [z(), z(), z() if c.get("amsgrad") else None]

    def step(self, g):
        self.t += 1
        c, ns = dict(self.case), self.ns
        grad = asns(ns, g)
        if self.alg == "sgd":
            sgd_update(self.p, grad, *self.state, first_step=self.t == 1, scratch=self.scratch, **c)
        elif self.alg == "adagrad":
            adagrad_update(self.p, grad, *self.state, step=self.t, scratch=self.scratch, **c)
        elif self.alg == "rmsprop":
            c.setdefault("alpha", 0.99), c.setdefault("eps", 1e-8), c.setdefault("weight_decay", 0.0)
            c.setdefault("momentum", 0.0), c.setdefault("centered", False)
            rmsprop_update(self.p, grad, *self.state, scratch=self.scratch, **c)
        else:
            b1, b2 = c.pop("betas", (0.9, 0.999))
            c.setdefault("eps", 1e-8)
            c["decoupled_weight_decay"] = c.pop("decoupled", False)
            adam_update(self.p, grad, *self.state, step=self.t, beta1=b1, beta2=b2, scratch=self.scratch, **c)
        assert np.array_equal(npy(grad), np.asarray(g)), "the update must not modify grad"
        return npy(self.p)


ALL_CASES = [(alg, c) for alg, cs in CASES.items() for c in cs]


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("scratch", [True, False], ids=["scratch", "temporaries"])
@pytest.mark.parametrize("alg,case", ALL_CASES, ids=[f"{a}[{case_id(c)}]" for a, c in ALL_CASES])
def test_matches_independent_reference(alg, case, ns, scratch):
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) * s for s in (1.0, 0.01, 0.5)]  # shrinking grads exercise amsgrad's max
    runner = Runner(alg, case, p0, ns, scratch)
    ref_p, ref_state = p0.copy(), {}
    for g in grads:
        got = runner.step(g)
        ref_p = REFERENCES[alg](ref_p, g, ref_state, **case)
        np.testing.assert_allclose(got, ref_p, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("alg,case", ALL_CASES, ids=[f"{a}[{case_id(c)}]" for a, c in ALL_CASES])
def test_state_updated_in_place_and_scratch_reused(alg, case):
    rng = np.random.default_rng(1)
    runner = Runner(alg, case, rng.normal(size=7), "numpy", scratch=True)
    state_ids = [id(s) for s in runner.state]
    runner.step(rng.normal(size=7))
    work = list(runner.scratch)
    assert 1 <= len(work) <= 2
    for _ in range(2):
        runner.step(rng.normal(size=7))
    assert [id(s) for s in runner.state] == state_ids
    assert len(runner.scratch) == len(work) and all(a is b for a, b in zip(runner.scratch, work))


@pytest.mark.parametrize("alg,case", ALL_CASES, ids=[f"{a}[{case_id(c)}]" for a, c in ALL_CASES])
def test_no_per_step_temporaries_on_numpy(alg, case):
    n = 50_000  # 400 kB per float64 array; a temporary would show up in the traced peak
    rng = np.random.default_rng(2)
    runner = Runner(alg, case, rng.normal(size=n), "numpy", scratch=True)
    g = rng.normal(size=n)
    runner.step(g)  # first step allocates the work arrays
    grad = np.array(g)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        c = dict(runner.case)
        runner.t += 1
        if alg == "sgd":
            sgd_update(runner.p, grad, *runner.state, scratch=runner.scratch, **c)
        elif alg == "adagrad":
            adagrad_update(runner.p, grad, *runner.state, step=runner.t, scratch=runner.scratch, **c)
        elif alg == "rmsprop":
            c = {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": False, **c}
            rmsprop_update(runner.p, grad, *runner.state, scratch=runner.scratch, **c)
        else:
            b1, b2 = c.pop("betas", (0.9, 0.999))
            c["decoupled_weight_decay"] = c.pop("decoupled", False)
            adam_update(runner.p, grad, *runner.state, step=runner.t, beta1=b1, beta2=b2, eps=c.pop("eps", 1e-8),
                        scratch=runner.scratch, **c)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 8 * n // 4, f"{alg} allocated {peak} bytes in a step over {8 * n} bytes of parameters"


# --- hand-computed first steps (p = 1, g = 0.5 unless stated) ---------------------------------------------------
def one(ns):
    return asns(ns, [1.0])


@pytest.mark.parametrize("ns", NAMESPACES)
def test_sgd_by_hand(ns):
    p = one(ns)
    sgd_update(p, asns(ns, [0.5]), lr=0.1)
    assert npy(p)[0] == pytest.approx(0.95, abs=1e-15)
    p = one(ns)
    sgd_update(p, asns(ns, [0.5]), lr=0.1, weight_decay=0.1)  # g = 0.5 + 0.1
    assert npy(p)[0] == pytest.approx(0.94, abs=1e-15)
    p = one(ns)
    sgd_update(p, asns(ns, [0.5]), lr=0.1, maximize=True)
    assert npy(p)[0] == pytest.approx(1.05, abs=1e-15)
    # momentum 0.9, constant g: buf = 0.5, then 0.95; p = 0.95, then 0.855
    p, buf = one(ns), asns(ns, [0.0])
    sgd_update(p, asns(ns, [0.5]), buf, lr=0.1, momentum=0.9, first_step=True)
    assert (npy(p)[0], npy(buf)[0]) == pytest.approx((0.95, 0.5), abs=1e-15)
    sgd_update(p, asns(ns, [0.5]), buf, lr=0.1, momentum=0.9)
    assert (npy(p)[0], npy(buf)[0]) == pytest.approx((0.855, 0.95), abs=1e-15)
    # nesterov: d = g + 0.9 buf: 0.95 then 0.5 + 0.855; p = 0.905, then 0.7695
    p, buf = one(ns), asns(ns, [0.0])
    sgd_update(p, asns(ns, [0.5]), buf, lr=0.1, momentum=0.9, nesterov=True, first_step=True)
    assert npy(p)[0] == pytest.approx(0.905, abs=1e-15)
    sgd_update(p, asns(ns, [0.5]), buf, lr=0.1, momentum=0.9, nesterov=True)
    assert npy(p)[0] == pytest.approx(0.7695, abs=1e-15)
    # dampening 0.5 (not applied on the first step): buf = 0.5, then 0.45 + 0.25 = 0.7; p = 0.95, then 0.88
    p, buf = one(ns), asns(ns, [0.0])
    sgd_update(p, asns(ns, [0.5]), buf, lr=0.1, momentum=0.9, dampening=0.5, first_step=True)
    sgd_update(p, asns(ns, [0.5]), buf, lr=0.1, momentum=0.9, dampening=0.5)
    assert (npy(p)[0], npy(buf)[0]) == pytest.approx((0.88, 0.7), abs=1e-15)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_adam_by_hand(ns):
    # constant g: m_hat = g and v_hat = g^2 every step, so each step moves by lr * g / (|g| + eps)
    p, m, v = one(ns), asns(ns, [0.0]), asns(ns, [0.0])
    kw = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    adam_update(p, asns(ns, [0.5]), m, v, step=1, **kw)
    assert (npy(m)[0], npy(v)[0]) == pytest.approx((0.05, 0.00025), rel=1e-14)
    assert npy(p)[0] == pytest.approx(1 - 0.1 * 0.5 / (0.5 + 1e-8), rel=1e-14)
    adam_update(p, asns(ns, [0.5]), m, v, step=2, **kw)
    assert (npy(m)[0], npy(v)[0]) == pytest.approx((0.095, 0.00049975), rel=1e-14)
    assert npy(p)[0] == pytest.approx(1 - 2 * 0.1 * 0.5 / (0.5 + 1e-8), rel=1e-14)
    # L2 (Adam) vs decoupled (AdamW) weight decay 0.5 with g = 0: Adam sees g = 0.5 and steps by lr;
    # AdamW first shrinks p to 1 - 0.1 * 0.5 = 0.95 and then m = v = 0 gives no further step
    p, m, v = one(ns), asns(ns, [0.0]), asns(ns, [0.0])
    adam_update(p, asns(ns, [0.0]), m, v, step=1, weight_decay=0.5, **kw)
    assert npy(p)[0] == pytest.approx(1 - 0.1 * 0.5 / (0.5 + 1e-8), rel=1e-14)
    p, m, v = one(ns), asns(ns, [0.0]), asns(ns, [0.0])
    adam_update(p, asns(ns, [0.0]), m, v, step=1, weight_decay=0.5, decoupled_weight_decay=True, **kw)
    assert npy(p)[0] == pytest.approx(0.95, rel=1e-15)
    # amsgrad with g = 1 then 0: v = 1e-3 then 0.999e-3 < vmax = 1e-3; denominator uses vmax
    p, m, v, vm = one(ns), asns(ns, [0.0]), asns(ns, [0.0]), asns(ns, [0.0])
    adam_update(p, asns(ns, [1.0]), m, v, vm, step=1, amsgrad=True, **kw)
    adam_update(p, asns(ns, [0.0]), m, v, vm, step=2, amsgrad=True, **kw)
    assert npy(vm)[0] == pytest.approx(1e-3, rel=1e-14)
    m_hat = 0.09 / (1 - 0.81)
    p2 = (1 - 0.1 / (1 + 1e-8)) - 0.1 * m_hat / (np.sqrt(1e-3) / np.sqrt(1 - 0.999**2) + 1e-8)
    assert npy(p)[0] == pytest.approx(p2, rel=1e-14)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_adagrad_by_hand(ns):
    p, s = one(ns), asns(ns, [0.0])
    adagrad_update(p, asns(ns, [0.5]), s, step=1, lr=0.1)
    assert (npy(p)[0], npy(s)[0]) == pytest.approx((1 - 0.05 / (0.5 + 1e-10), 0.25), rel=1e-15)
    adagrad_update(p, asns(ns, [0.5]), s, step=2, lr=0.1)
    assert npy(p)[0] == pytest.approx(1 - 0.05 / (0.5 + 1e-10) - 0.05 / (np.sqrt(0.5) + 1e-10), rel=1e-14)
    # lr_decay 0.5: the second step's rate is 0.1 / 1.5
    p, s = one(ns), asns(ns, [0.0])
    adagrad_update(p, asns(ns, [0.5]), s, step=1, lr=0.1, lr_decay=0.5)
    adagrad_update(p, asns(ns, [0.5]), s, step=2, lr=0.1, lr_decay=0.5)
    assert npy(p)[0] == pytest.approx(1 - 0.05 / (0.5 + 1e-10) - (0.1 / 1.5) * 0.5 / (np.sqrt(0.5) + 1e-10),
                                      rel=1e-14)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_rmsprop_by_hand(ns):
    kw = dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0)
    p, sq = one(ns), asns(ns, [0.0])
    rmsprop_update(p, asns(ns, [0.5]), sq, centered=False, **kw)  # sq = 0.0025, sqrt = 0.05
    assert (npy(p)[0], npy(sq)[0]) == pytest.approx((1 - 0.005 / (0.05 + 1e-8), 0.0025), rel=1e-14)
    rmsprop_update(p, asns(ns, [0.5]), sq, centered=False, **kw)  # sq = 0.99 * 0.0025 + 0.0025
    assert npy(p)[0] == pytest.approx(1 - 0.005 / (0.05 + 1e-8) - 0.005 / (np.sqrt(0.004975) + 1e-8), rel=1e-14)
    # centered: ga = 0.005, avg = sqrt(0.0025 - 0.000025) + eps
    p, sq, ga = one(ns), asns(ns, [0.0]), asns(ns, [0.0])
    rmsprop_update(p, asns(ns, [0.5]), sq, ga, centered=True, **kw)
    assert npy(p)[0] == pytest.approx(1 - 0.005 / (np.sqrt(0.002475) + 1e-8), rel=1e-14)
    # momentum 0.9: buf = g / avg = 10 (minus eps), then 0.9 * buf + 0.5 / sqrt(0.004975)
    p, sq, buf = one(ns), asns(ns, [0.0]), asns(ns, [0.0])
    kw["momentum"] = 0.9
    rmsprop_update(p, asns(ns, [0.5]), sq, None, buf, centered=False, **kw)
    rmsprop_update(p, asns(ns, [0.5]), sq, None, buf, centered=False, **kw)
    b1 = 0.5 / (0.05 + 1e-8)
    b2 = 0.9 * b1 + 0.5 / (np.sqrt(0.004975) + 1e-8)
    assert npy(p)[0] == pytest.approx(1 - 0.01 * b1 - 0.01 * b2, rel=1e-14)


# --- kernel hook ---------------------------------------------------------------------------------------------
def test_kernel_hook_receives_contract_arguments_and_can_decline():
    calls = []

    def provider(op, xp, dtype):
        def kernel(*args, **kwargs):
            calls.append((op, len(args), sorted(kwargs)))
            return NotImplemented
        return kernel

    p, m, v = np.ones(3), np.zeros(3), np.zeros(3)
    with _dispatch.use_provider(provider):
        adam_update(p, np.full(3, 0.5), m, v, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, scratch=[])
    assert calls == [("adam_update", 5, ["amsgrad", "beta1", "beta2", "decoupled_weight_decay", "eps", "lr",
                                         "maximize", "step", "weight_decay"])]
    np.testing.assert_allclose(p, 1 - 0.1 * 0.5 / (0.5 + 1e-8))  # declined: the reference ran


def test_kernel_hook_takes_the_call():
    seen = []

    def provider(op, xp, dtype):
        def kernel(param, grad, *args, **kwargs):
            seen.append(op)
            param[...] = 42.0
        return kernel

    p = np.ones(2)
    with _dispatch.use_provider(provider):
        sgd_update(p, np.ones(2), lr=0.1)
        adagrad_update(p, np.ones(2), np.zeros(2), step=1, lr=0.1)
        rmsprop_update(p, np.ones(2), np.zeros(2), lr=0.1, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.0,
                       centered=False)
    assert seen == ["sgd_update", "adagrad_update", "rmsprop_update"]
    assert np.all(p == 42.0)
    with _dispatch.use_provider(provider), _dispatch.use_kernels(False):
        sgd_update(p, np.ones(2), lr=1.0)
    assert np.all(p == 41.0) and len(seen) == 3


# --- errors --------------------------------------------------------------------------------------------------
def test_errors_name_the_function_and_the_mismatch():
    p = np.ones(4)
    with pytest.raises(ShapeError, match=r"adam_update: exp_avg_sq must have the shape of param \(4,\), got \(3,\)"):
        adam_update(p, np.ones(4), np.zeros(4), np.zeros(3), step=1, lr=0.1, beta1=0.9, beta2=0.9, eps=1e-8)
    with pytest.raises(DTypeError, match="sgd_update: grad dtype float32 differs from param dtype float64"):
        sgd_update(p, np.ones(4, np.float32), lr=0.1)
    with pytest.raises(DTypeError, match="param must be a floating array"):
        sgd_update(np.ones(4, np.int64), np.ones(4, np.int64), lr=0.1)
    with pytest.raises(NamespaceMismatchError, match="adagrad_update"):
        adagrad_update(p, array_api_strict.ones(4, dtype=array_api_strict.float64), np.zeros(4), step=1, lr=0.1)
    with pytest.raises(ValueError, match="amsgrad=True needs a max_exp_avg_sq"):
        adam_update(p, p, np.zeros(4), np.zeros(4), step=1, lr=0.1, beta1=0.9, beta2=0.9, eps=1e-8, amsgrad=True)
    with pytest.raises(ValueError, match="step must be an int >= 1"):
        adam_update(p, p, np.zeros(4), np.zeros(4), step=0, lr=0.1, beta1=0.9, beta2=0.9, eps=1e-8)
    with pytest.raises(ValueError, match="momentum=0.9 needs a momentum_buffer"):
        sgd_update(p, p, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="centered=True needs a grad_avg"):
        rmsprop_update(p, p, np.zeros(4), lr=0.1, alpha=0.9, eps=1e-8, weight_decay=0, momentum=0, centered=True)
    with pytest.raises(ShapeError, match=r"scratch\[0\] has shape \(2,\)"):
        sgd_update(p, p, lr=0.1, scratch=[np.zeros(2)])


@pytest.mark.parametrize("ns", NAMESPACES)
def test_copy_into_casts(ns):
    src = asns(ns, [1.0, 2.5])
    # array_api_strict has no float16: cast float64 -> float32 there
    dst = np.zeros(2, np.float16) if ns == "numpy" else array_api_strict.zeros(2, dtype=array_api_strict.float32)
    copy_into(dst, src)
    assert npy(dst).dtype == (np.float16 if ns == "numpy" else np.float32) and npy(dst).tolist() == [1.0, 2.5]


@pytest.mark.cuda
@pytest.mark.skipif(not xpnn.backend.cuda_available(), reason="needs CuPy and a CUDA device")
def test_cupy_generic_path_matches_numpy():
    import cupy

    rng = np.random.default_rng(3)
    p, g = rng.normal(size=100), rng.normal(size=100)
    kw = dict(step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, amsgrad=True, maximize=True)
    ref = [p.copy(), np.zeros(100), np.zeros(100), np.zeros(100)]
    adam_update(ref[0], g, *ref[1:], **kw)
    got = [cupy.asarray(p), cupy.zeros(100), cupy.zeros(100), cupy.zeros(100)]
    with _dispatch.use_kernels(False):
        adam_update(got[0], cupy.asarray(g), *got[1:], scratch=[], **kw)
    np.testing.assert_allclose(got[0].get(), ref[0], rtol=1e-12)


# --- NumPy code's habits: rebinding, broadcasting gradients, Python scalars ---------------------------------------
def _all_updates(param, grad):
    """Every update function once on ``param``/``grad`` with fresh state shaped like ``param``; their returns."""
    z = lambda: xpnn.backend.namespace_of(param).zeros(param.shape, dtype=param.dtype)  # noqa: E731
    adam = dict(step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    return [
        sgd_update(param, grad, lr=0.1),
        sgd_update(param, grad, z(), lr=0.1, momentum=0.9, first_step=True),
        adagrad_update(param, grad, z(), step=1, lr=0.1),
        rmsprop_update(param, grad, z(), lr=0.1, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                       centered=False),
        adam_update(param, grad, z(), z(), **adam),
        adam_update(param, grad, z(), z(), **adam, weight_decay=0.01, decoupled_weight_decay=True),
    ]


@pytest.mark.parametrize("ns", NAMESPACES)
def test_every_update_returns_the_param_it_updated_in_place(ns):
    w = asns(ns, [[1.0, 2.0], [3.0, -4.0]])
    alias = w  # NumPy code that kept the old weights under another name sees the new ones (the in-place trap)
    before = npy(w).copy()
    for out in _all_updates(w, asns(ns, [[0.5, 0.5], [0.5, 0.5]])):
        assert out is w
    assert alias is w and not np.array_equal(npy(alias), before)
    w2 = sgd_update(w, asns(ns, [[1.0, 1.0], [1.0, 1.0]]), lr=0.5)  # rebinding works as NumPy code expects
    assert w2 is w


@pytest.mark.parametrize("ns", NAMESPACES)
def test_a_gradient_that_broadcasts_to_the_param_is_accepted(ns):
    b, db = asns(ns, [[1.0, 2.0, 3.0]]), asns(ns, [1.0, 2.0, 3.0])  # b (1, 3), db (3,): NumPy's b -= lr * db works
    assert sgd_update(b, db, lr=0.1) is b
    np.testing.assert_allclose(npy(b), [[0.9, 1.8, 2.7]])
    for p, g in ((asns(ns, [[1.0, 2.0]] * 3), asns(ns, [[0.5], [1.0], [2.0]])), (asns(ns, [[1.0, 2.0]] * 3), asns(ns, 2.0))):
        want = npy(p) - 0.1 * npy(g)
        sgd_update(p, g, lr=0.1)
        np.testing.assert_allclose(npy(p), want)
        assert npy(p).shape == (3, 2)  # the param's shape never changes
    # the same through every update, against the explicitly broadcast gradient
    rng = np.random.default_rng(0)
    for i in range(6):
        p1 = asns(ns, rng.normal(size=(4, 3)))
        p2 = asns(ns, npy(p1).copy())
        g = rng.normal(size=(3,))
        _all_updates(p1, asns(ns, g))
        _all_updates(p2, asns(ns, np.broadcast_to(g, (4, 3)).copy()))
        np.testing.assert_array_equal(npy(p1), npy(p2))


def test_a_gradient_that_would_enlarge_the_param_is_an_error_naming_both_shapes():
    with pytest.raises(ShapeError, match=r"sgd_update: grad must have the shape of param \(3,\), got \(2, 3\) \(nor "
                                         r"does it broadcast to it\)"):
        sgd_update(np.zeros(3), np.ones((2, 3)), lr=0.1)
    with pytest.raises(ShapeError, match=r"adam_update: grad .* param \(1, 3\).* got \(2,\)"):
        adam_update(np.zeros((1, 3)), np.ones(2), np.zeros((1, 3)), np.zeros((1, 3)), step=1, lr=0.1, beta1=0.9,
                    beta2=0.999, eps=1e-8)
    with pytest.raises(ShapeError, match=r"exp_avg must have the shape of param \(1, 3\), got \(3,\)"):
        adam_update(np.zeros((1, 3)), np.ones(3), np.zeros(3), np.zeros((1, 3)), step=1, lr=0.1, beta1=0.9,
                    beta2=0.999, eps=1e-8)


def test_python_scalars_and_lists():
    out = sgd_update(1.0, 0.5, lr=0.1)  # a Python scalar cannot be updated in place: the new value is returned
    assert isinstance(out, np.ndarray) and out.shape == () and out.dtype == np.float64 and float(out) == 0.95
    w = np.ones(3, np.float32)
    assert sgd_update(w, 0.5, lr=0.1) is w  # a scalar grad takes the param's dtype and broadcasts
    assert w.dtype == np.float32 and np.allclose(w, 0.95)
    listed = adam_update([1.0, 2.0], [0.1, 0.1], np.zeros(2), np.zeros(2), step=1, lr=0.1, beta1=0.9, beta2=0.999,
                         eps=1e-8)
    np.testing.assert_allclose(listed, [0.9, 1.9])
    with pytest.raises(TypeError, match="sgd_update: param and grad must be arrays, got grad=None"):
        sgd_update(w, None, lr=0.1)
    s = array_api_strict.ones((2,), dtype=array_api_strict.float32)
    assert sgd_update(s, 1.0, lr=0.5) is s  # next to an array a scalar takes its namespace and dtype
    assert s.dtype == array_api_strict.float32 and npy(s).tolist() == [0.5, 0.5]


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_adam_numpy_matches_its_operations_with_python_float_operands_bit_for_bit(dtype, amsgrad):
    """On NumPy the constant operands (beta1, 1 - beta1, beta2, 1 - beta2, eps) are 0-d arrays of the parameter's
    dtype made once: the same values and results as the Python floats NumPy converts in each call."""
    import math

    rng = np.random.default_rng(3)
    shape = (7, 5)
    p, m, v, vm = (rng.standard_normal(shape).astype(dtype), np.zeros(shape, dtype), np.zeros(shape, dtype),
                   np.zeros(shape, dtype))
    rp, rm, rv, rvm = p.copy(), m.copy(), v.copy(), vm.copy()
    lr, b1, b2, eps = 1e-3, 0.8, 0.99, 1e-4
    for step in range(1, 4):
        g = (rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 3, shape)).astype(dtype)
        adam_update(p, g, m, v, vm if amsgrad else None, step=step, lr=lr, beta1=b1, beta2=b2, eps=eps,
                    amsgrad=amsgrad)
        t = np.empty_like(rp)  # the update's operations, with Python floats
        np.multiply(rm, b1, out=rm)
        np.add(rm, np.multiply(g, 1 - b1, out=t), out=rm)
        np.multiply(rv, b2, out=rv)
        np.add(rv, np.multiply(np.multiply(g, g, out=t), 1 - b2, out=t), out=rv)
        d = np.maximum(rvm, rv, out=rvm) if amsgrad else rv
        np.divide(np.sqrt(d, out=t), math.sqrt(1 - b2**step), out=t)
        np.divide(rm, np.add(t, eps, out=t), out=t)
        np.subtract(rp, np.multiply(t, lr / (1 - b1**step), out=t), out=rp)
        for a, b in ((p, rp), (m, rm), (v, rv), (vm, rvm)):
            assert a.dtype == dtype
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("options", [{}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "decoupled_weight_decay": True},
                                     {"amsgrad": True}, {"maximize": True, "weight_decay": 0.05}])
@pytest.mark.parametrize("scratch", [False, True])
def test_adam_split_over_threads_is_the_whole_update(monkeypatch, options, scratch):
    """A flat NumPy buffer's Adam update in blocks (``BLOCK_BYTES``) split over two threads (``cpu_threads``; at
    least ``SPLIT_MIN_ELEMENTS`` per thread; both forced small here) gives the whole update's values bit for bit (the
    same passes element by element), with or without a scratch list, several steps running."""
    from xpnn.functional import cpu_threads, updates

    monkeypatch.setattr(updates, "SPLIT_MIN_ELEMENTS", 64)
    monkeypatch.setattr(updates, "BLOCK_BYTES", 100)  # blocks of 25 float32: the last one partial
    monkeypatch.setattr(cpu_threads, "splitting", lambda: True)  # as in a process whose convolutions run split
    counts = []
    real = cpu_threads.parallel_for
    monkeypatch.setattr(cpu_threads, "parallel_for", lambda n, body, m=1: counts.append(real(n, body, m)) or counts[-1])
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(1001).astype(np.float32)
    grads = [rng.standard_normal(1001).astype(np.float32) for _ in range(3)]
    runs = {}
    for threads in (1, 2):
        cpu_threads.set_num_threads(threads)
        counts.clear()
        try:
            p, m, v, vmax = p0.copy(), *(np.zeros(1001, np.float32) for _ in range(3))
            work = [] if scratch else None
            for step, g in enumerate(grads, 1):
                adam_update(p, g, m, v, vmax, step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                            scratch=work, **options)
            runs[threads] = (p, m, v, vmax)
        finally:
            cpu_threads.set_num_threads(None)
    assert counts and all(c == 2 for c in counts)
    for got, want in zip(runs[2], runs[1]):
        np.testing.assert_array_equal(got, want)
