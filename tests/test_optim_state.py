"""Optimizer state dicts: PyTorch layout, exact round trips (also through NumPy, across the flat and per-parameter
layouts and into array_api_strict), and clear errors for state that does not fit."""
import array_api_strict
import numpy as np
import pytest

import xpnn
from xpnn.errors import CheckpointError
from xpnn.nn.parameter import FlatBuffer, Parameter
from xpnn.optim import SGD, Adagrad, Adam, AdamW, RMSprop

FULL_OPTIONS = [
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), {"momentum_buffer"}),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.2), {"momentum_buffer"}),
    (SGD, dict(lr=0.1), set()),
    (Adagrad, dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1), {"sum"}),
    (RMSprop, dict(lr=0.01, centered=True, momentum=0.9), {"square_avg", "grad_avg", "momentum_buffer"}),
    (Adam, dict(lr=0.1, amsgrad=True, weight_decay=0.01), {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    (AdamW, dict(lr=0.1), {"exp_avg", "exp_avg_sq"}),
]
IDS = [f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(FULL_OPTIONS)]


def npy(a):
    return np.asarray(xpnn.backend.to_numpy(a))


def make_params(values, flat, ns="numpy", dtype=np.float64):
    wrap = np.asarray if ns == "numpy" else array_api_strict.asarray
    params = [Parameter(wrap(np.array(v, dtype=dtype))) for v in values]
    if flat:
        assert FlatBuffer.pack(params) is not None
    return params


def grads_for(step):
    rng = np.random.default_rng(100 + step)
    return [rng.normal(size=(3, 2)), rng.normal(size=(4,))]


def run(opt, params, steps):
    for s in steps:
        for p, g in zip(params, grads_for(s)):
            p.grad = xpnn.backend.namespace_of(p.data).asarray(g.astype(npy(p.data).dtype))
        opt.step()


def to_numpy_checkpoint(sd):
    """What a checkpoint file gives back: NumPy arrays, string keys, lists for tuples."""
    state = {str(i): {k: (v if k == "step" else npy(v).copy()) for k, v in e.items()} for i, e in sd["state"].items()}
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}


VALUES = [np.arange(6.0).reshape(3, 2) / 7, np.linspace(-1, 1, 4)]


@pytest.mark.parametrize("cls,kw,names", FULL_OPTIONS, ids=IDS)
def test_state_dict_layout(cls, kw, names):
    params = make_params(VALUES, flat=True)
    opt = cls(params, **kw)
    assert opt.state_dict() == {"state": {}, "param_groups": [{**opt.defaults, "params": [0, 1]}]}
    run(opt, params, range(2))
    sd = opt.state_dict()
    assert set(sd["state"]) == {0, 1}
    for i, p in enumerate(params):
        entry = sd["state"][i]
        assert entry["step"] == 2 and set(entry) == names | {"step"}
        for k in names:
            assert entry[k].shape == p.shape and isinstance(entry[k], np.ndarray)
    assert sd["param_groups"][0]["lr"] == kw["lr"] and sd["param_groups"][0]["params"] == [0, 1]
    # a copy: later steps do not change it
    before = {k: npy(v).copy() for k, v in sd["state"][0].items() if k != "step"}
    run(opt, params, [2])
    for k, v in before.items():
        assert np.array_equal(npy(sd["state"][0][k]), v)


@pytest.mark.parametrize("cls,kw,names", FULL_OPTIONS, ids=IDS)
@pytest.mark.parametrize("src_flat,dst_flat", [(True, True), (True, False), (False, True), (False, False)],
                         ids=["flat-flat", "flat-loose", "loose-flat", "loose-loose"])
def test_round_trip_continues_identically(cls, kw, names, src_flat, dst_flat):
    a = make_params(VALUES, flat=src_flat)
    oa = cls(a, **kw)
    run(oa, a, range(2))
    b = make_params([npy(p.data) for p in a], flat=dst_flat)
    ob = cls(b, lr=123.0)  # hyperparameters come from the state dict
    ob.load_state_dict(to_numpy_checkpoint(oa.state_dict()))
    assert ob.param_groups[0]["lr"] == kw["lr"]
    run(oa, a, range(2, 5))
    run(ob, b, range(2, 5))
    for x, y in zip(a, b):
        assert np.array_equal(npy(x.data), npy(y.data))


def test_round_trip_into_array_api_strict_and_float16():
    a = make_params(VALUES, flat=True)
    oa = Adam(a, lr=0.1, amsgrad=True)
    run(oa, a, range(2))
    b = make_params([npy(p.data) for p in a], flat=True, ns="array_api_strict")
    ob = Adam(b)
    ob.load_state_dict(oa.state_dict())
    assert xpnn.backend.namespace_of(ob.state_dict()["state"][0]["exp_avg"]) is array_api_strict
    run(oa, a, range(2, 4)), run(ob, b, range(2, 4))
    for x, y in zip(a, b):
        assert np.array_equal(npy(x.data), npy(y.data))
    # float16: the master copy travels with the state, so the continuation is exact
    h = make_params(VALUES, flat=True, dtype=np.float16)
    oh = RMSprop(h, lr=0.01, momentum=0.5)
    run(oh, h, range(2))
    sd = to_numpy_checkpoint(oh.state_dict())
    assert sd["state"]["1"]["master_param"].dtype == np.float32 and sd["state"]["1"]["square_avg"].dtype == np.float32
    h2 = make_params([npy(p.data) for p in h], flat=False, dtype=np.float16)
    oh2 = RMSprop(h2)
    oh2.load_state_dict(sd)
    run(oh, h, range(2, 4)), run(oh2, h2, range(2, 4))
    for x, y in zip(h, h2):
        assert np.array_equal(npy(x.data), npy(y.data))


def test_load_errors_are_clear_and_leave_the_optimizer_unchanged():
    params = make_params(VALUES, flat=True)
    opt = Adam(params, lr=0.1)
    run(opt, params, range(1))
    good = opt.state_dict()
    fresh = Adam(make_params(VALUES, flat=True), lr=0.5)

    def bad(mutate, match):
        sd = to_numpy_checkpoint(good)
        mutate(sd)
        with pytest.raises(CheckpointError, match=match):
            fresh.load_state_dict(sd)
        assert fresh.param_groups[0]["lr"] == 0.5 and fresh.state_dict()["state"] == {}

    bad(lambda sd: sd.pop("state"), "expected a dict with keys 'state' and 'param_groups'")
    bad(lambda sd: sd["param_groups"].append({"params": []}), "the state has 2 parameter groups, the optimizer has 1")
    bad(lambda sd: sd["param_groups"][0].update(params=[0]), "group 0 has 1 parameters in the state, 2 in the optim")
    bad(lambda sd: sd["param_groups"][0].update(momentum=0.9), r"unknown hyperparameter\(s\) \['momentum'\]")
    bad(lambda sd: sd["param_groups"][0].update(lr=-1.0), "invalid learning rate")
    bad(lambda sd: sd["state"]["0"].update(exp_avg=np.zeros((2, 3))),
        r"state entry '0', array 'exp_avg' has shape \(2, 3\), the parameter has \(3, 2\)")
    bad(lambda sd: sd["state"]["1"].update(momentum_buffer=np.zeros(4)), r"unexpected arrays \['momentum_buffer'\]")
    bad(lambda sd: sd["state"]["1"].pop("exp_avg_sq"), r"missing arrays \['exp_avg_sq'\]")
    bad(lambda sd: sd["param_groups"][0].update(amsgrad=True), r"missing arrays \['max_exp_avg_sq'\]")
    bad(lambda sd: sd["state"].update({"7": sd["state"]["0"]}), "state entry '7' names no parameter")
    bad(lambda sd: sd["state"]["0"].pop("step"), "must be a dict with a 'step' count")
    # a flat buffer is updated as a whole: its parameters' states must agree
    bad(lambda sd: sd["state"]["0"].update(step=5), r"parameter group 0 is one flat buffer.*steps \[1, 5\]")
    bad(lambda sd: sd["state"].pop("1"), r"parameter group 0 is one flat buffer")


# --- the saved layout: what checkpoints written by earlier versions hold --------------------------------------------

# per optimizer: the arrays of a state entry after "step", in order, and the keys of a saved group, in order (float16
# parameters' entries end with "master_param"). Checkpoints written before the optimizer base class was split into
# helpers (layouts, master copies, capturable state) have exactly this layout, so it must not change.
SAVED_LAYOUT = {
    "SGD": (["momentum_buffer"], ["lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"]),
    "Adagrad": (["sum"], ["lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize"]),
    "RMSprop": (["square_avg", "grad_avg", "momentum_buffer"],
                ["lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"]),
    "Adam": (["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
             ["lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay"]),
    "AdamW": (["exp_avg", "exp_avg_sq"],
              ["lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay"]),
}
LAYOUT_CONFIGS = {
    "SGD": lambda ps: SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "Adagrad": lambda ps: Adagrad(ps, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.5),
    "RMSprop": lambda ps: RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
    "Adam": lambda ps: Adam(ps, lr=0.01, amsgrad=True),
    "AdamW": lambda ps: AdamW(ps, lr=0.01),
}


def _three_steps(name, dtype, flat):
    rng = np.random.default_rng(3)
    ps = [Parameter(rng.normal(size=s).astype(dtype)) for s in ((3,), (2, 2))]
    if flat:
        assert FlatBuffer.pack(ps) is not None
    opt = LAYOUT_CONFIGS[name](ps)
    for _ in range(3):
        for p in ps:
            p.grad = rng.normal(size=p.shape).astype(dtype)
        opt.step()
    return ps, opt, rng


@pytest.mark.parametrize("flat", [False, True], ids=["per-parameter", "flat"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("name", list(SAVED_LAYOUT))
def test_saved_layout_is_the_one_earlier_checkpoints_have(name, dtype, flat):
    arrays, group_keys = SAVED_LAYOUT[name]
    ps, opt, _ = _three_steps(name, dtype, flat)
    sd = opt.state_dict()
    assert list(sd) == ["state", "param_groups"] and list(sd["state"]) == [0, 1]
    for i, p in enumerate(ps):
        entry = sd["state"][i]
        assert list(entry) == ["step", *arrays, *(["master_param"] if dtype == np.float16 else [])]
        assert type(entry["step"]) is int and entry["step"] == 3
        for k in list(entry)[1:]:
            assert entry[k].dtype == np.float32 and entry[k].shape == p.shape, k
    assert [list(g) for g in sd["param_groups"]] == [group_keys + ["params"]]
    assert sd["param_groups"][0]["params"] == [0, 1]


# Adam(lr=0.01, amsgrad=True) on two float16 parameters in one flat buffer after three steps, as the optimizer code
# before the split saved it (float32 values, written out exactly)
OLD_ADAM_FLOAT16_STATE = {
    0: {"step": 3, "exp_avg": [0.04088135063648224, -0.05077001824975014, 0.2619404196739197],
        "exp_avg_sq": [0.0035547411534935236, 0.0011966999154537916, 0.011502813547849655],
        "max_exp_avg_sq": [0.0035547411534935236, 0.0011966999154537916, 0.011502813547849655],
        "master_param": [2.0583367347717285, -2.5345051288604736, 0.3955792784690857]},
    1: {"step": 3, "exp_avg": [-0.021461183205246925, 0.11167383193969727, 0.15278881788253784, -0.07887506484985352],
        "exp_avg_sq": [0.00014117301907390356, 0.0013321321457624435, 0.003865177044644952, 0.0005185254849493504],
        "max_exp_avg_sq": [0.00014117301907390356, 0.0013321321457624435, 0.003865177044644952,
                           0.0005185254849493504],
        "master_param": [-0.5734228491783142, -0.4534870982170105, -0.20076796412467957, -1.9961081743240356]},
}


def test_an_earlier_checkpoint_loads_and_continues_identically():
    ps, opt, rng = _three_steps("Adam", np.float16, flat=True)
    sd = opt.state_dict()
    for i, p in enumerate(ps):  # the same values as the earlier code saved, bit for bit
        for k, v in OLD_ADAM_FLOAT16_STATE[i].items():
            assert sd["state"][i][k] == v if k == "step" else sd["state"][i][k].ravel().tolist() == v, k
    old = {"state": {i: {k: (v if k == "step" else np.asarray(v, np.float32).reshape(p.shape)) for k, v in e.items()}
                     for (i, e), p in zip(OLD_ADAM_FLOAT16_STATE.items(), ps)},
           "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.0, "amsgrad": True,
                             "maximize": False, "decoupled_weight_decay": False, "params": [0, 1]}]}
    twin = [Parameter(p.data.copy()) for p in ps]
    assert FlatBuffer.pack(twin) is not None
    opt_twin = Adam(twin, lr=0.5)
    opt_twin.load_state_dict(old)
    for _ in range(2):
        for p, q in zip(ps, twin):
            p.grad = rng.normal(size=p.shape).astype(np.float16)
            q.grad = p.grad.copy()
        opt.step()
        opt_twin.step()
    for p, q in zip(ps, twin):
        assert np.array_equal(p.data, q.data)
    a, b = opt.state_dict(), opt_twin.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in (0, 1):
        assert list(a["state"][i]) == list(b["state"][i]) and a["state"][i]["step"] == 5
        for k in list(a["state"][i])[1:]:
            assert np.array_equal(a["state"][i][k], b["state"][i][k]), k
