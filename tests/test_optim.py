"""xpnn.optim: each optimizer against the independent NumPy formulas (every option branch), flat-buffer vs
per-parameter paths, float16 master copies, parameter groups, zero_grad, argument errors, array_api_strict."""
import array_api_strict
import numpy as np
import pytest

import xpnn
from xpnn import _dispatch
from xpnn.nn.parameter import FlatBuffer, Parameter, flat_buffer_of
from xpnn.optim import SGD, Adagrad, Adam, AdamW, RMSprop

from _optim_reference import CASES, REFERENCES, case_id

SHAPES = [(3, 4), (4,), (2, 2, 2)]


def make_optimizer(alg, case, params):
    c = dict(case)
    if alg == "sgd":
        return SGD(params, **c)
    if alg == "adagrad":
        c["initial_accumulator_value"] = c.pop("initial", 0.0)
        return Adagrad(params, **c)
    if alg == "rmsprop":
        return RMSprop(params, **c)
    return AdamW(params, **c) if c.pop("decoupled", False) else Adam(params, **c)


def npy(a):
    return np.asarray(xpnn.backend.to_numpy(a))


def make_params(values, ns="numpy", flat=True, dtype=np.float64):
    if ns == "numpy":
        params = [Parameter(np.array(v, dtype=dtype)) for v in values]
    else:
        params = [Parameter(array_api_strict.asarray(np.array(v, dtype=dtype))) for v in values]
    if flat:
        assert FlatBuffer.pack(params) is not None
        assert flat_buffer_of(params) is not None
    return params


def set_grads(params, grads):
    for p, g in zip(params, grads):
        xp = xpnn.backend.namespace_of(p.data)
        p.grad = xp.asarray(np.asarray(g, dtype=npy(p.data).dtype))


def random_problem(seed=0, steps=3):
    rng = np.random.default_rng(seed)
    values = [rng.normal(size=s) for s in SHAPES]
    grads = [[rng.normal(size=s) * scale for s in SHAPES] for scale in (1.0, 0.01, 0.5)[:steps]]
    return values, grads


ALL_CASES = [(alg, c) for alg, cs in CASES.items() for c in cs]
IDS = [f"{a}[{case_id(c)}]" for a, c in ALL_CASES]


@pytest.mark.parametrize("ns", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per_param"])
@pytest.mark.parametrize("alg,case", ALL_CASES, ids=IDS)
def test_optimizer_matches_independent_reference(alg, case, flat, ns):
    values, grads = random_problem()
    params = make_params(values, ns, flat)
    opt = make_optimizer(alg, case, params)
    ref = [v.copy() for v in values]
    ref_states = [{} for _ in values]
    for step_grads in grads:
        set_grads(params, step_grads)
        opt.step()
        ref = [REFERENCES[alg](r, g, s, **case) for r, g, s in zip(ref, step_grads, ref_states)]
        for p, r in zip(params, ref):
            np.testing.assert_allclose(npy(p.data), r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("alg,case", ALL_CASES, ids=IDS)
def test_flat_and_per_parameter_paths_are_identical(alg, case):
    values, grads = random_problem(1)
    flat, loose = make_params(values, flat=True), make_params(values, flat=False)
    opts = make_optimizer(alg, case, flat), make_optimizer(alg, case, loose)
    calls = []
    with _dispatch.use_provider(lambda op, xp, dtype: calls.append(op)):  # counts update calls, no kernel
        for step_grads in grads:
            for params, opt in zip((flat, loose), opts):
                set_grads(params, step_grads)
                opt.step()
    assert len(calls) == len(grads) * (1 + len(values))  # flat: one update call per step over the whole buffer
    for a, b in zip(flat, loose):
        assert np.array_equal(npy(a.data), npy(b.data))
    sa, sb = opts[0].state_dict(), opts[1].state_dict()
    assert sa["state"].keys() == sb["state"].keys() == {0, 1, 2}
    for i in sa["state"]:
        assert sa["state"][i].keys() == sb["state"][i].keys()
        for k, v in sa["state"][i].items():
            assert np.array_equal(npy(v), npy(sb["state"][i][k]))


def test_adamw_is_adam_with_decoupled_weight_decay():
    values, grads = random_problem(2)
    a, b = make_params(values), make_params(values)
    oa = AdamW(a, lr=0.1, weight_decay=0.3)
    ob = Adam(b, lr=0.1, weight_decay=0.3, decoupled_weight_decay=True)
    assert AdamW(make_params(values)).defaults["weight_decay"] == 1e-2
    for g in grads:
        set_grads(a, g), set_grads(b, g)
        oa.step(), ob.step()
    for x, y in zip(a, b):
        assert np.array_equal(npy(x.data), npy(y.data))


def test_defaults_match_pytorch():
    p = make_params([np.ones(2)])
    assert SGD(p).defaults == dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                                   maximize=False)
    assert Adagrad(p).defaults == dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                                       eps=1e-10, maximize=False)
    assert RMSprop(p).defaults == dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                                       centered=False, maximize=False)
    assert Adam(p).defaults == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                                    maximize=False, decoupled_weight_decay=False)


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per_param"])
def test_float16_parameters_step_a_float32_master_copy(flat):
    # lr * g = 1e-4 is far below float16's spacing at 1.0 (~1e-3): updating float16 directly would never move
    params = make_params([np.ones(4), np.full(3, 2.0)], flat=flat, dtype=np.float16)
    opt = SGD(params, lr=1e-4)
    for _ in range(20):
        set_grads(params, [np.ones(4), np.ones(3)])
        opt.step()
    assert npy(params[0].data).dtype == np.float16
    np.testing.assert_allclose(npy(params[0].data), np.float16(1 - 20e-4), rtol=0)
    np.testing.assert_allclose(npy(params[1].data), np.float16(2 - 20e-4), rtol=0)
    state = opt.state_dict()["state"]
    assert npy(state[0]["master_param"]).dtype == np.float32
    np.testing.assert_allclose(npy(state[0]["master_param"]), np.float32(1) - 20 * np.float32(1e-4), rtol=1e-6)


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per_param"])
def test_float16_master_copy_follows_values_replaced_between_steps(flat):
    # the float32 master copy must not overwrite values loaded/assigned/re-initialised after a step
    params = make_params([np.ones(4), np.full(3, 2.0)], flat=flat, dtype=np.float16)
    opt = SGD(params, lr=0.5)
    set_grads(params, [np.ones(4), np.ones(3)])
    opt.step()
    params[0].data = np.full(4, 7.0, dtype=np.float16)  # assignment
    xpnn.init.constant(params[1], -3.0)  # in-place re-initialisation
    opt.step()
    np.testing.assert_array_equal(npy(params[0].data), np.full(4, 6.5, np.float16))
    np.testing.assert_array_equal(npy(params[1].data), np.full(3, -3.5, np.float16))
    model = xpnn.nn.Linear(2, 2, dtype="float16", seed=0)
    opt = SGD(model.parameters(), lr=0.5)
    model.weight.grad = np.ones((2, 2), np.float16)
    opt.step()
    model.load_state_dict({k: np.zeros_like(npy(v)) for k, v in model.state_dict().items()})
    model.zero_grad()
    opt.step()
    np.testing.assert_array_equal(npy(model.weight.data), np.zeros((2, 2), np.float16))


def test_float16_adam_equals_float32_adam_cast_down():
    values, grads = random_problem(3)
    half = make_params(values, dtype=np.float16)
    single = make_params([npy(p.data).astype(np.float32) for p in half], dtype=np.float32)
    oh, os_ = Adam(half, lr=0.01, amsgrad=True), Adam(single, lr=0.01, amsgrad=True)
    for g in grads:
        g16 = [np.asarray(x, np.float16) for x in g]
        set_grads(half, g16), set_grads(single, [x.astype(np.float32) for x in g16])
        oh.step(), os_.step()
        for h, s in zip(half, single):
            assert np.array_equal(npy(h.data), npy(s.data).astype(np.float16))
    master = oh.state_dict()["state"][1]["master_param"]
    assert np.array_equal(npy(master), npy(single[1].data))


def test_lone_parameter_generator_and_groups():
    p = Parameter(np.ones(3))
    opt = SGD(p, lr=0.5)  # a lone Parameter
    p.grad = np.ones(3)
    opt.step()
    np.testing.assert_allclose(p.data, 0.5)
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = SGD(iter([a, b]), lr=0.1)  # any iterable
    assert len(opt.param_groups[0]["params"]) == 2
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = SGD([{"params": [a]}, {"params": b, "lr": 1.0}], lr=0.1, momentum=0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 1.0]
    assert opt.param_groups[1]["momentum"] == 0.5
    a.grad, b.grad = np.ones(2), np.ones(2)
    opt.step()
    np.testing.assert_allclose(a.data, 0.9), np.testing.assert_allclose(b.data, 0.0)


def test_lr_change_in_param_groups_takes_effect():
    params = make_params([np.zeros(2)])
    opt = SGD(params, lr=0.1)
    set_grads(params, [np.ones(2)])
    opt.step()
    opt.param_groups[0]["lr"] = 1.0
    opt.step()
    np.testing.assert_allclose(npy(params[0].data), -1.1)


def test_parameters_without_grad_are_skipped():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = Adam([a, b], lr=0.1, weight_decay=0.1)
    a.grad = np.ones(2)
    opt.step()
    assert not b.has_grad and np.array_equal(b.data, np.ones(2))
    assert list(opt.state_dict()["state"]) == [0]


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per_param"])
def test_zero_grad(flat):
    params = make_params([np.ones(3), np.ones((2, 2))], flat=flat)
    set_grads(params, [np.ones(3), np.ones((2, 2))])
    opt = SGD(params)
    opt.zero_grad()
    assert all(np.all(npy(p.grad) == 0) for p in params)
    if flat:
        assert np.all(npy(flat_buffer_of(params).grad) == 0)
    set_grads(params, [np.ones(3), np.ones((2, 2))])
    opt.zero_grad(set_to_none=True)
    assert all(np.all(npy(p.grad) == 0) for p in params)
    if not flat:
        loose = Parameter(np.ones(2))
        loose.grad = np.ones(2)
        SGD(loose).zero_grad(set_to_none=True)
        assert not loose.has_grad


def test_state_follows_parameters_to_another_namespace():
    values, grads = random_problem(4)
    moved, ref = make_params(values, flat=False), make_params(values, flat=False)
    om, orf = Adam(moved, lr=0.1, amsgrad=True), Adam(ref, lr=0.1, amsgrad=True)
    for i, g in enumerate(grads):
        if i == 1:  # like model.to(array_api_strict) after the optimizer was made
            for p in moved:
                p.data = array_api_strict.asarray(npy(p.data))
        set_grads(moved, g), set_grads(ref, g)
        om.step(), orf.step()
    for a, b in zip(moved, ref):
        assert xpnn.backend.namespace_of(a.data) is array_api_strict
        np.testing.assert_array_equal(npy(a.data), npy(b.data))


def test_optimizer_made_before_to_dtype_and_repack_matches_one_made_after():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(8, 4)), rng.integers(0, 3, 8)

    def model():
        return xpnn.nn.Sequential(xpnn.nn.Linear(4, 5, seed=1), xpnn.nn.Tanh(), xpnn.nn.Linear(5, 3, seed=2))

    def step(m, opt, dtype):
        loss_fn = xpnn.nn.CrossEntropyLoss()
        opt.zero_grad()
        loss_fn(m(x.astype(dtype)), y)
        m.backward(loss_fn.backward())
        opt.step()

    early, late = model(), model()
    oe, ol = Adam(early.parameters(), lr=0.1), Adam(late.parameters(), lr=0.1)
    step(early, oe, np.float32), step(late, ol, np.float32)
    early.to(dtype="float64")  # early's optimizer stays
    early.append(xpnn.nn.Linear(3, 3, seed=3, dtype="float64"))  # repack: the group is now part of a buffer
    late.to(dtype="float64")
    late.append(xpnn.nn.Linear(3, 3, seed=3, dtype="float64"))
    state = ol.state_dict()
    ol = Adam(list(late.parameters())[:4], lr=0.1)
    ol.load_state_dict(state)
    for _ in range(2):
        step(early, oe, np.float64), step(late, ol, np.float64)
    for a, b in zip(early.parameters(), late.parameters()):
        assert npy(a.data).dtype == np.float64
        np.testing.assert_array_equal(npy(a.data), npy(b.data))


# --- argument errors ---------------------------------------------------------------------------------------
BAD_ARGS = [
    (SGD, dict(lr=-0.1), r"SGD: invalid learning rate: lr=-0\.1"),
    (SGD, dict(lr=float("nan")), r"SGD: invalid learning rate: lr=nan"),
    (SGD, dict(momentum=-0.5), r"SGD: invalid momentum value: momentum=-0\.5"),
    (SGD, dict(weight_decay=-1e-4), r"SGD: invalid weight_decay value"),
    (SGD, dict(nesterov=True), r"SGD: Nesterov momentum requires a momentum and zero dampening"),
    (SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), r"SGD: Nesterov momentum requires"),
    (Adagrad, dict(lr=-1.0), r"Adagrad: invalid learning rate: lr=-1\.0"),
    (Adagrad, dict(lr_decay=-1.0), r"Adagrad: invalid lr_decay value"),
    (Adagrad, dict(initial_accumulator_value=-1.0), r"Adagrad: invalid initial_accumulator_value"),
    (Adagrad, dict(eps=-1e-10), r"Adagrad: invalid epsilon value: eps=-1e-10"),
    (RMSprop, dict(alpha=1.5), r"RMSprop: invalid alpha value: alpha=1\.5"),
    (RMSprop, dict(momentum=-0.1), r"RMSprop: invalid momentum value"),
    (RMSprop, dict(eps=-1.0), r"RMSprop: invalid epsilon value"),
    (Adam, dict(lr=-1e-3), r"Adam: invalid learning rate: lr=-0\.001"),
    (Adam, dict(betas=(1.0, 0.999)), r"Adam: invalid beta parameter at index 0: beta1=1\.0 \(expected 0 <= beta1 < 1\)"),
    (Adam, dict(betas=(0.9, -0.1)), r"Adam: invalid beta parameter at index 1: beta2=-0\.1"),
    (Adam, dict(betas=(0.9,)), r"Adam: betas must be a pair"),
    (Adam, dict(eps=-1.0), r"Adam: invalid epsilon value"),
    (AdamW, dict(weight_decay=-0.01), r"AdamW: invalid weight_decay value: weight_decay=-0\.01"),
]


@pytest.mark.parametrize("cls,kwargs,match", BAD_ARGS, ids=[f"{c.__name__}-{k}" for c, k, _ in BAD_ARGS])
def test_bad_arguments_raise_value_error_naming_optimizer_and_value(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(make_params([np.ones(2)]), **kwargs)


def test_bad_params():
    with pytest.raises(ValueError, match="SGD: got an empty parameter list"):
        SGD([])
    with pytest.raises(TypeError, match="can only optimize xpnn.nn.Parameter objects, got ndarray"):
        Adam([np.ones(3)])
    p = Parameter(np.ones(2))
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['learning_rate'\]"):
        SGD([{"params": [p], "learning_rate": 0.1}])
    with pytest.raises(ValueError, match=r"SGD: invalid learning rate: lr=-1"):
        SGD([{"params": [p], "lr": -1}])


def test_repr_lists_groups():
    text = repr(Adam(make_params([np.ones(2)]), lr=0.01))
    assert text.startswith("Adam (") and "Parameter Group 0" in text and "lr: 0.01" in text


@pytest.mark.parametrize("alg,case", ALL_CASES, ids=IDS)
def test_against_torch_optim(alg, case):
    torch = pytest.importorskip("torch", reason="torch is not installed; the comparison with torch.optim is optional")
    values, grads = random_problem(5)
    params = make_params(values)
    opt = make_optimizer(alg, case, params)
    tparams = [torch.tensor(v, requires_grad=True) for v in values]
    kw = dict(case)
    if alg == "adagrad":
        kw["initial_accumulator_value"] = kw.pop("initial", 0.0)
    cls = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
           "adam": torch.optim.AdamW if kw.pop("decoupled", False) else torch.optim.Adam}[alg]
    topt = cls(tparams, **kw)
    for g in grads:
        set_grads(params, g)
        for t, x in zip(tparams, g):
            t.grad = torch.tensor(x)
        opt.step(), topt.step()
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(npy(p.data), t.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True), lambda p: Adagrad(p, lr=0.1),
                                  lambda p: RMSprop(p, lr=0.01, centered=True), lambda p: Adam(p, lr=0.01),
                                  lambda p: AdamW(p, lr=0.01, amsgrad=True)],
                         ids=["sgd", "adagrad", "rmsprop", "adam", "adamw"])
def test_trains_a_model_in_one_update_call_per_step(make):
    from xpnn import nn

    rng = np.random.default_rng(6)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = np.sin(x @ rng.normal(size=(5, 1))).astype(np.float32)
    model = nn.Sequential(nn.Linear(5, 16, seed=0), nn.Tanh(), nn.Linear(16, 1, seed=1))
    loss_fn = nn.MSELoss()
    opt = make(model.parameters())
    assert flat_buffer_of(model.parameters()) is not None
    calls, losses = [], []
    with _dispatch.use_provider(lambda op, xp, dtype: calls.append(op)):
        for _ in range(60):
            opt.zero_grad()
            losses.append(float(loss_fn(model(x), y)))
            model.backward(loss_fn.backward())
            opt.step()
    assert len([c for c in calls if c.endswith("_update")]) == 60
    assert losses[-1] < 0.5 * losses[0]
    # move the model to another namespace mid-training: the optimizer state follows on the next step
    model.to(array_api_strict)
    xs, ys = array_api_strict.asarray(x), array_api_strict.asarray(y)
    for _ in range(5):
        opt.zero_grad()
        loss = float(loss_fn(model(xs), ys))
        model.backward(loss_fn.backward())
        opt.step()
    assert loss < 0.5 * losses[0]


class _Heavyball(xpnn.optim.Optimizer):
    """An optimizer written by the recipe of ``Optimizer``'s docstring: its state and one update call, nothing else
    (SGD's momentum update under another name, so SGD is the reference)."""

    state_names = ("momentum_buffer",)

    def __init__(self, params, lr=0.1, momentum=0.9):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    def _state(self, group):
        return {"momentum_buffer": 0.0}

    def _update(self, param, grad, state, group, step, lr, scratch, new):
        xpnn.functional.updates.sgd_update(param, grad, state["momentum_buffer"], lr=lr, momentum=group["momentum"],
                                           first_step="momentum_buffer" in new, scratch=scratch)


@pytest.mark.parametrize("capturable", [None, True], ids=["host", "capturable"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per_param"])
def test_an_optimizer_is_its_state_and_update_rule(flat, dtype, capturable):
    # the base class gives it the layouts, float16 master copies, device step/lr and state dicts
    values = [np.linspace(-1, 1, 6).reshape(2, 3), np.array([0.5, -0.25])]
    mine, ref = make_params(values, flat=flat, dtype=dtype), make_params(values, flat=flat, dtype=dtype)
    opt, oref = _Heavyball(mine, lr=0.05), SGD(ref, lr=0.05, momentum=0.9)
    opt.capturable = oref.capturable = capturable
    rng = np.random.default_rng(4)
    for i in range(4):
        if i == 2:  # a state-dict round trip in the middle
            opt.load_state_dict(opt.state_dict())
        for p, q in zip(mine, ref):
            p.grad = rng.normal(size=p.shape).astype(dtype)
            q.grad = p.grad.copy()
        opt.step()
        oref.step()
    for p, q in zip(mine, ref):
        assert np.array_equal(p.data, q.data)
    a, b = opt.state_dict()["state"], oref.state_dict()["state"]
    assert a.keys() == b.keys() and all(list(a[i]) == list(b[i]) and a[i]["step"] == 4 for i in a)
    for i in a:
        for k in list(a[i])[1:]:
            assert np.array_equal(a[i][k], b[i][k]), k


def test_state_with_a_nonzero_initial_value_is_made_on_the_parameters_device():
    # Adagrad's accumulator starts at initial_accumulator_value: it was once made on the default device, which
    # array_api_strict refuses to combine with parameters on another one
    d1 = array_api_strict.Device("device1")
    p = Parameter(array_api_strict.asarray(np.ones(3, np.float32), device=d1))
    opt = Adagrad([p], lr=0.1, initial_accumulator_value=1)
    p.grad = array_api_strict.asarray(np.ones(3, np.float32), device=d1)
    opt.step()
    s = opt.state_dict()["state"][0]["sum"]
    assert s.device == d1 and npy(s).tolist() == [2.0, 2.0, 2.0]
    np.testing.assert_allclose(npy(p.data), 1 - 0.1 / np.sqrt(2), rtol=1e-6)


def test_numpy_scalar_hyperparameters_are_accepted_like_python_numbers(torch):
    """``lr=np.float32(0.1)``, ``betas`` and ``weight_decay`` of NumPy scalars (what NumPy code computes; torch.optim
    takes ``lr`` so) give the same steps as Python floats and as torch.optim; bools and arrays are still refused."""
    w0 = np.array([1.0, -2.0, 3.0])
    g = np.array([0.5, 0.25, -1.0])
    results = []
    for kw in (dict(lr=0.1, betas=(0.9, 0.99), weight_decay=0.01),
               dict(lr=np.float32(0.1), betas=(np.float64(0.9), np.float32(0.99)), weight_decay=np.float64(0.01))):
        p = Parameter(w0.copy())
        opt = Adam([p], **kw)
        for _ in range(3):
            p.grad = g
            opt.step()
        results.append(p.data.copy())
        tp = torch.tensor(w0.copy(), requires_grad=True)
        topt = torch.optim.Adam([tp], lr=0.1, betas=(0.9, 0.99), weight_decay=0.01)  # (torch wants float betas)
        for _ in range(3):
            tp.grad = torch.tensor(g)
            topt.step()
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6)
    SGD([Parameter(w0.copy())], lr=np.int64(1))
    for bad in (True, np.bool_(True), np.array([0.1])):
        with pytest.raises(ValueError, match="invalid learning rate"):
            SGD([Parameter(w0.copy())], lr=bad)
