"""Gaps in the tests of the optimizers and their update functions found by mutation testing (issue 14).

Everything is checked through public behaviour: parameter values after ``step()``, ``state_dict()`` and
``load_state_dict()``, ``defaults`` and the errors raised."""
from __future__ import annotations

import tracemalloc

import array_api_strict as xs
import numpy as np
import pytest

import xpnn
from xpnn.errors import CheckpointError, DTypeError, NamespaceMismatchError, ShapeError
from xpnn.functional.updates import adagrad_update, adam_update, copy_into, rmsprop_update, sgd_update
from xpnn.nn.parameter import FlatBuffer, Parameter
from xpnn.optim import SGD, Adam, AdamW, RMSprop


def npy(a):
    return np.asarray(xpnn.backend.to_numpy(a))


def params_of(*values, flat=False, dtype=np.float64):
    ps = [Parameter(np.array(v, dtype=dtype)) for v in values]
    if flat:
        assert FlatBuffer.pack(ps) is not None
    return ps


# --- functional updates ------------------------------------------------------------------------------------------

def test_sgd_dampening_1_keeps_the_first_buffer():
    # buf_1 = g_1; buf_t = m * buf_{t-1} + (1 - 1) * g_t: later gradients never enter the buffer
    p, buf = np.zeros(3), np.zeros(3)
    g1, g2, g3 = np.array([1.0, 2.0, 4.0]), np.array([8.0, -8.0, 8.0]), np.array([5.0, 5.0, 5.0])
    sgd_update(p, g1, buf, lr=0.5, momentum=0.5, dampening=1.0, first_step=True)
    assert np.array_equal(buf, g1) and np.array_equal(p, -0.5 * g1)
    sgd_update(p, g2, buf, lr=0.5, momentum=0.5, dampening=1.0)
    assert np.array_equal(buf, 0.5 * g1) and np.array_equal(p, -0.75 * g1)
    sgd_update(p, g3, buf, lr=0.5, momentum=0.5, dampening=1.0, scratch=[])
    assert np.array_equal(buf, 0.25 * g1) and np.array_equal(p, -0.875 * g1)
    assert g1.tolist() == [1.0, 2.0, 4.0] and g2.tolist() == [8.0, -8.0, 8.0] and g3.tolist() == [5.0] * 3


@pytest.mark.parametrize("dampening", [0.25, 1.0])
def test_sgd_dampening_with_weight_decay_and_maximize(dampening):
    p, buf = np.array([1.0, -2.0]), np.zeros(2)
    g = np.array([0.5, 0.25])
    sgd_update(p, g, buf, lr=0.1, momentum=0.9, dampening=dampening, weight_decay=0.5, maximize=True,
               first_step=True)
    d1 = -g + 0.5 * np.array([1.0, -2.0])
    np.testing.assert_allclose(buf, d1, rtol=1e-15)
    p1 = np.array([1.0, -2.0]) - 0.1 * d1
    np.testing.assert_allclose(p, p1, rtol=1e-15)
    sgd_update(p, g, buf, lr=0.1, momentum=0.9, dampening=dampening, weight_decay=0.5, maximize=True)
    d2 = -g + 0.5 * p1
    b2 = 0.9 * d1 + (1 - dampening) * d2
    np.testing.assert_allclose(buf, b2, rtol=1e-15)
    np.testing.assert_allclose(p, p1 - 0.1 * b2, rtol=1e-15)
    assert np.array_equal(g, [0.5, 0.25])  # the gradient is never written


def _calls():
    """(name, call(param, grad, state_kwargs)) for every update function with all its state arrays."""
    kw = dict(lr=0.1)
    return {
        "sgd": (("momentum_buffer",), lambda p, g, s: sgd_update(p, g, s["momentum_buffer"], momentum=0.9, **kw)),
        "adagrad": (("state_sum",), lambda p, g, s: adagrad_update(p, g, s["state_sum"], step=1, **kw)),
        "rmsprop": (("square_avg", "grad_avg", "momentum_buffer"),
                    lambda p, g, s: rmsprop_update(p, g, s["square_avg"], s["grad_avg"], s["momentum_buffer"],
                                                   alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.9,
                                                   centered=True, **kw)),
        "adam": (("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                 lambda p, g, s: adam_update(p, g, s["exp_avg"], s["exp_avg_sq"], s["max_exp_avg_sq"], step=1,
                                             beta1=0.9, beta2=0.99, eps=1e-8, amsgrad=True, **kw)),
    }


@pytest.mark.parametrize("alg", ["sgd", "adagrad", "rmsprop", "adam"])
def test_every_state_array_is_checked_for_shape_and_dtype(alg):
    names, call = _calls()[alg]
    where = f"{alg}_update"
    for bad in names:
        state = {n: np.zeros(4) for n in names}
        state[bad] = np.zeros(5)
        p = np.ones(4)
        with pytest.raises(ShapeError, match=rf"{where}: {bad} must have the shape of param \(4,\), got \(5,\)"):
            call(p, np.ones(4), state)
        assert np.array_equal(p, np.ones(4))
        state[bad] = np.zeros(4, np.float32)
        with pytest.raises(DTypeError, match=rf"{where}: {bad} dtype float32 differs from param dtype float64"):
            call(p, np.ones(4), state)
        state[bad] = xs.zeros(4, dtype=xs.float64)
        with pytest.raises(NamespaceMismatchError, match=where):
            call(p, np.ones(4), state)
    state = {n: np.zeros(4) for n in names}
    call(p, np.ones(4), state)  # all good: it runs
    assert not np.array_equal(p, np.ones(4))
    with pytest.raises(ShapeError, match=rf"{where}: grad must have the shape of param"):
        call(np.ones(4), np.ones(3), state)
    with pytest.raises(DTypeError, match=rf"{where}: param must be a floating array"):
        call(np.ones(4, np.int32), np.ones(4, np.int32), {n: np.zeros(4, np.int32) for n in names})


def test_rmsprop_momentum_needs_a_buffer():
    p = np.ones(3)
    with pytest.raises(ValueError, match=r"rmsprop_update: momentum=0.5 needs a momentum_buffer array"):
        rmsprop_update(p, np.ones(3), np.zeros(3), lr=0.1, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.5,
                       centered=False)
    assert np.array_equal(p, np.ones(3))
    # momentum 0 needs none
    rmsprop_update(p, np.ones(3), np.zeros(3), lr=0.1, alpha=0.9, eps=0.0, weight_decay=0.0, momentum=0.0,
                   centered=False)
    np.testing.assert_allclose(p, 1 - 0.1 / np.sqrt(0.1), rtol=1e-14)


def test_rmsprop_momentum_and_centered_by_hand():
    p, sq, ga, buf = np.array([1.0]), np.zeros(1), np.zeros(1), np.zeros(1)
    for _ in range(2):
        rmsprop_update(p, np.array([2.0]), sq, ga, buf, lr=0.1, alpha=0.5, eps=0.0, weight_decay=0.0, momentum=0.5,
                       centered=True)
    # step 1: sq = 2, ga = 1, avg = 1, buf = 2;  step 2: sq = 3, ga = 1.5, avg = sqrt(0.75), buf = 1 + 2/avg
    np.testing.assert_allclose([sq[0], ga[0]], [3.0, 1.5], rtol=1e-15)
    np.testing.assert_allclose(buf, 1 + 2 / np.sqrt(0.75), rtol=1e-14)
    np.testing.assert_allclose(p, 1 - 0.1 * 2 - 0.1 * (1 + 2 / np.sqrt(0.75)), rtol=1e-14)


def test_copy_into_checks_the_namespaces():
    dst = np.zeros(2)
    with pytest.raises(NamespaceMismatchError, match="copy_into"):
        copy_into(dst, xs.asarray([1.0, 2.0]))
    copy_into(dst, np.array([1.0, 2.0]))
    assert dst.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("step", [0, -1, 1.0, True, None, [1]])
def test_step_must_be_a_positive_int(step):
    for call in (lambda: adagrad_update(np.ones(2), np.ones(2), np.zeros(2), step=step, lr=0.1),
                 lambda: adam_update(np.ones(2), np.ones(2), np.zeros(2), np.zeros(2), step=step, lr=0.1, beta1=0.9,
                                     beta2=0.9, eps=1e-8)):
        with pytest.raises(ValueError, match="step must be an int >= 1"):
            call()  # (a 0-d array holding the step is accepted: capturable optimizers keep it on the device)


def test_scratch_of_another_dtype_is_refused():
    with pytest.raises(ShapeError, match=r"scratch\[0\] has shape \(3,\) and dtype float32, expected \(3,\) and "
                                         r"float64"):
        sgd_update(np.ones(3), np.ones(3), lr=0.1, weight_decay=0.1, scratch=[np.zeros(3, np.float32)])


def test_scratch_list_is_filled_once_and_reused():
    scratch: list = []
    p, m, v = np.ones(3), np.zeros(3), np.zeros(3)
    adam_update(p, np.ones(3), m, v, step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1,
                scratch=scratch)
    kept = list(scratch)
    assert len(kept) == 2 and all(a.shape == (3,) and a.dtype == np.float64 for a in kept)
    adam_update(p, np.ones(3), m, v, step=2, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1,
                scratch=scratch)
    assert len(scratch) == 2 and all(a is b for a, b in zip(scratch, kept))


# --- Adam / AdamW ------------------------------------------------------------------------------------------------

def test_adamw_defaults_are_pytorch_s():
    (p,) = params_of(np.ones(2))
    assert AdamW([p]).defaults == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                                       maximize=False, decoupled_weight_decay=True)


def test_adamw_default_lr_is_used_by_step():
    (a,) = params_of([1.0, -1.0])
    (b,) = params_of([1.0, -1.0])
    oa, ob = AdamW([a]), Adam([b], lr=1e-3, weight_decay=1e-2, decoupled_weight_decay=True)
    for _ in range(2):
        a.grad, b.grad = np.array([0.5, 0.25]), np.array([0.5, 0.25])
        oa.step(), ob.step()
    assert np.array_equal(a.data, b.data)
    # first step by hand: p * (1 - lr * wd) - lr * sign(g) (m / sqrt(v) = sign(g) after bias correction)
    (c,) = params_of([1.0, -1.0])
    c.grad = np.array([0.5, 0.25])
    AdamW([c]).step()
    np.testing.assert_allclose(c.data, np.array([1.0, -1.0]) * (1 - 1e-5) - 1e-3, rtol=1e-7)


@pytest.mark.parametrize("flat", [False, True])
def test_adamw_amsgrad_and_maximize_are_passed_on(flat):
    a = params_of([1.0, 2.0], [3.0], flat=flat)
    b = params_of([1.0, 2.0], [3.0], flat=flat)
    oa = AdamW(a, lr=0.1, weight_decay=0.2, amsgrad=True, maximize=True, betas=(0.5, 0.6), eps=1e-3)
    ob = Adam(b, lr=0.1, weight_decay=0.2, amsgrad=True, maximize=True, betas=(0.5, 0.6), eps=1e-3,
              decoupled_weight_decay=True)
    assert oa.defaults == ob.defaults and oa.defaults["amsgrad"] is True and oa.defaults["maximize"] is True
    for g in ([4.0, -1.0], [0.1, 0.1], [-3.0, 2.0]):
        for ps in (a, b):
            ps[0].grad, ps[1].grad = np.array(g), np.array([1.0])
        oa.step(), ob.step()
    for x, y in zip(a, b):
        assert np.array_equal(x.data, y.data)
    state = oa.state_dict()["state"]
    assert set(state[0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    # amsgrad: the max of v kept is larger than the last v for the first entry (g shrank from 4 to 0.1 to 3)
    assert state[0]["max_exp_avg_sq"][0] > state[0]["exp_avg_sq"][0]


def test_adam_betas_are_checked_and_stored_as_a_tuple():
    (p,) = params_of(np.ones(2))
    assert Adam([p], betas=[0.8, 0.9]).defaults["betas"] == (0.8, 0.9)
    for bad in ((0.9,), (0.9, 0.9, 0.9), 0.9, "ab"):
        with pytest.raises(ValueError, match="betas must be a pair"):
            Adam([p], betas=bad)
    for bad, idx in (((1.0, 0.9), 0), ((0.9, 1.0), 1), ((-0.1, 0.9), 0), ((0.9, -0.1), 1)):
        with pytest.raises(ValueError, match=f"beta parameter at index {idx}"):
            Adam([p], betas=bad)
    for name, what in (("lr", "learning rate"), ("eps", "epsilon value"), ("weight_decay", "weight_decay value")):
        with pytest.raises(ValueError, match=f"Adam: invalid {what}: {name}=-1"):
            Adam([p], **{name: -1})
        with pytest.raises(ValueError, match=f"AdamW: invalid {what}: {name}=-1"):
            AdamW([p], **{name: -1})
    Adam([p], betas=(0.0, 0.0), lr=0, eps=0, weight_decay=0)  # the bounds themselves are fine


def test_adam_loading_amsgrad_state_needs_max_exp_avg_sq():
    (p,) = params_of([1.0, 2.0])
    opt = Adam([p], lr=0.1, amsgrad=True)
    p.grad = np.ones(2)
    opt.step()
    sd = opt.state_dict()
    del sd["state"][0]["max_exp_avg_sq"]
    with pytest.raises(CheckpointError, match=r"missing arrays \['max_exp_avg_sq'\]"):
        Adam([Parameter(np.ones(2))], lr=0.1, amsgrad=True).load_state_dict(sd)
    # without amsgrad the same entry is complete
    sd["param_groups"][0]["amsgrad"] = False
    Adam([Parameter(np.ones(2))], lr=0.1).load_state_dict(sd)


# --- SGD ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flat", [False, True])
def test_sgd_momentum_state_without_momentum_buffer_is_refused(flat):
    ps = params_of([1.0, 2.0], [3.0], flat=flat)
    opt = SGD(ps, lr=0.1, momentum=0.9)
    for p in ps:
        p.grad = np.ones(p.shape)
    opt.step()
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"step", "momentum_buffer"}
    del sd["state"][1]["momentum_buffer"]
    target = params_of([0.0, 0.0], [0.0], flat=flat)
    dst = SGD(target, lr=0.1, momentum=0.9)
    with pytest.raises(CheckpointError, match=r"missing arrays \['momentum_buffer'\]"):
        dst.load_state_dict(sd)
    assert dst.state_dict()["state"] == {}
    # plain SGD keeps no state, so the same entry loads there
    sd["param_groups"][0]["momentum"] = 0.0
    del sd["state"][0]["momentum_buffer"]
    SGD(params_of([0.0, 0.0], [0.0], flat=flat), lr=0.1).load_state_dict(sd)


def test_sgd_nesterov_needs_momentum_and_no_dampening():
    (p,) = params_of(np.ones(2))
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        SGD([p], nesterov=True)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        SGD([p], momentum=0.9, dampening=0.1, nesterov=True)
    SGD([p], momentum=0.9, nesterov=True)
    for name, what in (("lr", "learning rate"), ("momentum", "momentum value"), ("dampening", "dampening value"),
                       ("weight_decay", "weight_decay value")):
        with pytest.raises(ValueError, match=f"SGD: invalid {what}: {name}=-1"):
            SGD([p], **{name: -1})


def test_sgd_dampening_1_through_the_optimizer():
    (p,) = params_of([0.0, 0.0])
    opt = SGD([p], lr=1.0, momentum=0.5, dampening=1.0)
    for g in ([1.0, 2.0], [100.0, 100.0]):
        p.grad = np.array(g)
        opt.step()
    assert p.data.tolist() == [-1.5, -3.0]
    assert opt.state_dict()["state"][0]["momentum_buffer"].tolist() == [0.5, 1.0]


# --- Optimizer base: groups, zero_grad, state dicts --------------------------------------------------------------

def test_a_single_parameter_or_a_single_group_dict():
    p = Parameter(np.ones(2))
    opt = SGD(p, lr=0.5)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["params"] == [p]
    q = Parameter(np.ones(2))
    opt = SGD({"params": [q], "lr": 0.25})
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == 0.25
    q.grad = np.ones(2)
    opt.step()
    assert q.data.tolist() == [0.75, 0.75]


def test_bad_params_and_groups():
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize xpnn.nn.Parameter"):
        SGD([np.ones(2)], lr=0.1)
    p = Parameter(np.ones(2))
    with pytest.raises(ValueError, match="appears more than once"):
        SGD([p, p], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['betas'\]"):
        SGD([{"params": [p], "betas": (0.9, 0.9)}], lr=0.1)
    opt = SGD([p], lr=0.1)
    with pytest.raises(TypeError, match="must be a dict with a 'params' entry"):
        opt.add_param_group({"lr": 0.1})
    q = Parameter(np.ones(1))
    opt.add_param_group({"params": q, "initial_lr": 0.5})  # a lone Parameter; the scheduler key is allowed
    assert opt.param_groups[1]["params"] == [q] and opt.param_groups[1]["initial_lr"] == 0.5


@pytest.mark.parametrize("flat", [False, True])
def test_zero_grad_defaults_to_zeros_not_none(flat):
    ps = params_of([1.0, 2.0], [3.0], flat=flat)
    for p in ps:
        p.grad = np.full(p.shape, 5.0)
    SGD(ps, lr=0.1).zero_grad()
    for p in ps:
        assert p.has_grad and np.array_equal(p.grad, np.zeros(p.shape))


def test_zero_grad_reaches_every_flat_group():
    a = params_of([1.0, 2.0], [3.0], flat=True)
    b = params_of([4.0], [5.0, 6.0], flat=True)
    c = params_of([7.0], flat=False)
    opt = SGD([{"params": a}, {"params": b}, {"params": c}], lr=0.1)
    for p in a + b + c:
        p.grad = np.full(p.shape, 5.0)
    opt.zero_grad()
    assert all(np.array_equal(p.grad, np.zeros(p.shape)) for p in a + b + c)
    for p in a + b + c:
        p.grad = np.full(p.shape, 5.0)
    opt.zero_grad(set_to_none=True)
    assert all(np.array_equal(p.grad, np.zeros(p.shape)) for p in a + b)  # flat members: zeroed views
    assert not c[0].has_grad


def test_several_flat_groups_step_independently():
    a = params_of([1.0, 2.0], [3.0], flat=True)
    b = params_of([4.0], [5.0, 6.0], flat=True)
    opt = SGD([{"params": a}, {"params": b, "lr": 1.0}], lr=0.5, momentum=0.5)
    for _ in range(2):
        for p in a + b:
            p.grad = np.ones(p.shape)
        opt.step()
    assert a[0].data.tolist() == [-0.25, 0.75] and a[1].data.tolist() == [1.75]
    assert b[0].data.tolist() == [1.5] and b[1].data.tolist() == [2.5, 3.5]
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 1, 2, 3] and all(e["step"] == 2 for e in sd["state"].values())
    assert sd["param_groups"][1]["params"] == [2, 3]


def test_mixed_per_parameter_states_in_a_flat_group_step_per_parameter():
    # a flat buffer is updated as a whole only when its members' states agree; otherwise (e.g. some were frozen)
    # each parameter keeps its own state and count
    ps = params_of([1.0, 2.0], [3.0])
    opt = SGD(ps, lr=0.1, momentum=0.9)
    ps[0].grad = np.ones(2)  # only the first parameter steps: the second has no state
    opt.step()
    assert FlatBuffer.pack(ps) is not None
    for p in ps:
        p.grad = np.ones(p.shape)
    opt.step()
    state = opt.state_dict()["state"]
    assert state[0]["step"] == 2 and state[1]["step"] == 1
    np.testing.assert_allclose(state[0]["momentum_buffer"], [1.9, 1.9], rtol=1e-15)
    np.testing.assert_allclose(state[1]["momentum_buffer"], [1.0], rtol=1e-15)
    np.testing.assert_allclose(ps[0].data, [0.71, 1.71], rtol=1e-14)
    np.testing.assert_allclose(ps[1].data, [2.9], rtol=1e-14)


def test_mixed_state_arrays_in_a_flat_group_are_a_checkpoint_error():
    src = params_of([1.0, 2.0], [3.0])
    opt = Adam(src, lr=0.1, amsgrad=True)
    for p in src:
        p.grad = np.ones(p.shape)
    opt.step()
    sd = opt.state_dict()
    del sd["state"][1]["max_exp_avg_sq"]  # same step, different arrays
    sd["param_groups"][0]["amsgrad"] = False
    dst_params = params_of([0.0, 0.0], [0.0], flat=True)
    dst = Adam(dst_params, lr=0.5)
    with pytest.raises(CheckpointError, match="states differ"):
        dst.load_state_dict(sd)
    assert dst.state_dict()["state"] == {} and dst.param_groups[0]["lr"] == 0.5  # nothing changed


def test_same_steps_join_a_flat_buffer_after_per_parameter_steps():
    ps = params_of([1.0, 2.0], [3.0])
    ref = params_of([1.0, 2.0], [3.0], flat=True)
    opt, oref = SGD(ps, lr=0.1, momentum=0.9), SGD(ref, lr=0.1, momentum=0.9)
    for p in ps + ref:
        p.grad = np.ones(p.shape)
    opt.step(), oref.step()
    assert FlatBuffer.pack(ps) is not None
    for p in ps + ref:
        p.grad = np.full(p.shape, 2.0)
    opt.step(), oref.step()
    for x, y in zip(ps, ref):
        assert np.array_equal(x.data, y.data)


@pytest.mark.parametrize("flat", [False, True])
def test_state_dict_is_a_snapshot(flat):
    ps = params_of([1.0, 2.0], [3.0], flat=flat)
    opt = Adam(ps, lr=0.1)
    for p in ps:
        p.grad = np.ones(p.shape)
    opt.step()
    sd = opt.state_dict()
    before = {i: {k: (v if k == "step" else np.array(v, copy=True)) for k, v in e.items()} for i, e in sd["state"].items()}
    opt.step()
    for i, e in sd["state"].items():
        assert e["step"] == 1
        for k, v in e.items():
            if k != "step":
                assert np.array_equal(v, before[i][k]), (i, k)
    # and writing into the snapshot does not reach the optimizer
    sd["state"][0]["exp_avg"][...] = 1e9
    assert opt.state_dict()["state"][0]["exp_avg"][0] < 1


def test_a_group_without_params_is_a_checkpoint_error():
    (p,) = params_of([1.0, 2.0])
    opt = SGD([p], lr=0.1)
    sd = opt.state_dict()
    del sd["param_groups"][0]["params"]
    with pytest.raises(CheckpointError, match="parameter group 0 has 0 parameters in the state, 1 in the optimizer"):
        opt.load_state_dict(sd)


def test_load_state_dict_structure_errors():
    (p,) = params_of([1.0, 2.0])
    opt = SGD([p], lr=0.1, momentum=0.9)
    for bad, got in (([], "list"), ({"state": {}}, r"\['state'\]"),
                     ({"state": {}, "param_groups": [], "x": 1}, r"\['param_groups', 'state', 'x'\]")):
        with pytest.raises(CheckpointError, match=rf"^SGD\.load_state_dict: expected a dict with keys 'state' and "
                                                  rf"'param_groups', got {got}$"):
            opt.load_state_dict(bad)
    with pytest.raises(CheckpointError, match="the state has 2 parameter groups, the optimizer has 1"):
        opt.load_state_dict({"state": {}, "param_groups": [{"params": [0]}, {"params": [1]}]})
    good = opt.state_dict()
    bad = {"state": {5: {"step": 1, "momentum_buffer": np.zeros(2)}}, "param_groups": good["param_groups"]}
    with pytest.raises(CheckpointError, match="state entry 5 names no parameter"):
        opt.load_state_dict(bad)
    bad = {"state": {"x": {"step": 1}}, "param_groups": good["param_groups"]}
    with pytest.raises(CheckpointError, match="state entry 'x' names no parameter"):
        opt.load_state_dict(bad)
    for entry, match in (({"momentum_buffer": np.zeros(2)}, "must be a dict with a 'step' count"),
                         ([1], "must be a dict with a 'step' count"),
                         ({"step": -1}, "negative step -1"),
                         ({"step": 1, "momentum_buffer": np.zeros(3)}, r"has shape \(3,\), the parameter has \(2,\)"),
                         ({"step": 1, "momentum_buffer": np.zeros(2), "exp_avg": np.zeros(2)},
                          r"unexpected arrays \['exp_avg'\]; SGD keeps \['momentum_buffer'\]$")):
        with pytest.raises(CheckpointError, match=r"^SGD\.load_state_dict: .*" + match):
            opt.load_state_dict({"state": {0: entry}, "param_groups": good["param_groups"]})
    groups = [dict(good["param_groups"][0], lr=-1.0)]
    with pytest.raises(CheckpointError, match="parameter group 0: SGD: invalid learning rate"):
        opt.load_state_dict({"state": {}, "param_groups": groups})
    groups = [dict(good["param_groups"][0], betas=(0.9, 0.9))]
    with pytest.raises(CheckpointError, match=r"unknown hyperparameter\(s\) \['betas'\] in parameter group 0"):
        opt.load_state_dict({"state": {}, "param_groups": groups})
    assert opt.param_groups[0]["lr"] == 0.1 and opt.state_dict()["state"] == {}


@pytest.mark.parametrize("step", [np.int64(3), np.array(3), np.int32(3)])
def test_a_step_count_saved_as_a_numpy_scalar(step):
    (p,) = params_of([1.0, 2.0])
    opt = Adam([p], lr=0.1)
    for _ in range(3):
        p.grad = np.array([1.0, -1.0])
        opt.step()
    sd = opt.state_dict()
    (q,) = params_of(p.data)
    sd["state"][0]["step"] = step
    dst = Adam([q], lr=0.1)
    dst.load_state_dict(sd)
    out = dst.state_dict()["state"][0]["step"]
    assert out == 3 and type(out) is int
    p.grad, q.grad = np.array([0.5, 0.5]), np.array([0.5, 0.5])
    opt.step(), dst.step()
    assert np.array_equal(p.data, q.data)  # bias correction continues from step 4


def test_hyperparameters_read_back_as_numpy_values_become_python_values():
    (p,) = params_of([1.0, 2.0])
    opt = Adam([p], lr=0.1)
    sd = opt.state_dict()
    g = sd["param_groups"][0]
    g["lr"], g["betas"], g["eps"], g["amsgrad"] = np.float64(0.5), np.array([0.8, 0.9]), np.array(1e-6), False
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == 0.5 and type(opt.param_groups[0]["lr"]) is float
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    assert opt.param_groups[0]["eps"] == 1e-6 and type(opt.param_groups[0]["eps"]) is float
    g["betas"] = [0.7, 0.8]
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["betas"] == (0.7, 0.8)


def test_master_copies_are_for_float16_parameters_only():
    (p,) = params_of([1.0, 2.0], dtype=np.float32)
    opt = SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones(2, np.float32)
    opt.step()
    sd = opt.state_dict()
    assert "master_param" not in sd["state"][0]
    sd["state"][0]["master_param"] = np.ones(2, np.float32)
    with pytest.raises(CheckpointError, match=r"unexpected arrays \['master_param'\]"):
        SGD([Parameter(np.ones(2, np.float32))], lr=0.1, momentum=0.9).load_state_dict(sd)


def test_loaded_state_takes_the_parameter_dtype():
    src = params_of([1.0, 2.0], dtype=np.float64)
    opt = Adam(src, lr=0.1)
    src[0].grad = np.array([0.3, -0.7])
    opt.step()
    sd = opt.state_dict()
    for dt, state_dt in ((np.float32, np.float32), (np.float16, np.float32), (np.float64, np.float64)):
        (q,) = params_of([1.0, 2.0], dtype=dt)
        dst = Adam([q], lr=0.1)
        dst.load_state_dict(sd)
        e = dst.state_dict()["state"][0]
        assert e["exp_avg"].dtype == state_dt and e["exp_avg_sq"].dtype == state_dt
        np.testing.assert_allclose(e["exp_avg"], sd["state"][0]["exp_avg"].astype(state_dt), rtol=0)


def test_float16_state_dict_holds_a_float32_master_that_loads_back():
    (p,) = params_of([1.0, 2.0], dtype=np.float16)
    opt = SGD([p], lr=1e-4)
    for _ in range(3):
        p.grad = np.ones(2, np.float16)
        opt.step()
    sd = opt.state_dict()
    master = sd["state"][0]["master_param"]
    assert master.dtype == np.float32
    np.testing.assert_allclose(master, np.float32([1, 2]) - 3 * np.float32(1e-4), rtol=1e-6)
    (q,) = params_of(p.data, dtype=np.float16)
    dst = SGD([q], lr=1e-4)
    dst.load_state_dict(sd)
    for o, x in ((opt, p), (dst, q)):
        x.grad = np.ones(2, np.float16)
        o.step()
    assert np.array_equal(p.data, q.data)
    np.testing.assert_array_equal(dst.state_dict()["state"][0]["master_param"], opt.state_dict()["state"][0]["master_param"])


def test_a_step_zero_entry_needs_no_arrays():
    (p,) = params_of([1.0, 2.0])
    opt = SGD([p], lr=0.1, momentum=0.9)
    sd = opt.state_dict()
    sd["state"] = {0: {"step": 0}}
    opt.load_state_dict(sd)
    assert opt.state_dict()["state"] == {0: {"step": 0}}
    p.grad = np.ones(2)
    opt.step()  # the buffer starts from this step's gradient, as on a first step
    assert p.data.tolist() == [0.9, 1.9]
    assert opt.state_dict()["state"][0]["step"] == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), True, "0.1", None, -1e-9])
def test_hyperparameters_must_be_finite_non_negative_numbers(bad):
    p = Parameter(np.ones(2))
    with pytest.raises(ValueError, match=r"expected a finite number >= 0"):
        SGD([p], lr=bad)
    with pytest.raises(ValueError, match=r"expected a finite number >= 0"):
        Adam([p], eps=bad)


def test_unit_interval_checks_open_and_closed():
    p = Parameter(np.ones(2))
    RMSprop([p], alpha=1.0)  # closed: 1 allowed
    RMSprop([p], alpha=0.0)
    for bad in (1.0001, -0.1, True, float("nan"), "0.5"):
        with pytest.raises(ValueError, match=r"alpha value: alpha=.*\(expected 0 <= alpha <= 1\)"):
            RMSprop([p], alpha=bad)
    with pytest.raises(ValueError, match=r"\(expected 0 <= beta1 < 1\)"):
        Adam([p], betas=(1.0, 0.5))
    with pytest.raises(ValueError, match=r"\(expected 0 <= beta2 < 1\)"):
        Adam([p], betas=(0.5, True))


def test_repr_lists_every_hyperparameter_of_every_group():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    text = repr(SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1))
    assert text == ("SGD (\nParameter Group 0\n    dampening: 0.0\n    lr: 0.1\n    maximize: False\n"
                    "    momentum: 0.0\n    nesterov: False\n    weight_decay: 0.0\nParameter Group 1\n"
                    "    dampening: 0.0\n    lr: 0.5\n    maximize: False\n    momentum: 0.0\n    nesterov: False\n"
                    "    weight_decay: 0.0\n)")


@pytest.mark.parametrize("flat", [False, True])
def test_parameters_without_grad_keep_their_values_and_get_no_state(flat):
    ps = params_of([1.0, 2.0], [3.0], flat=flat)
    opt = Adam(ps, lr=0.1)
    ps[0].grad = np.ones(2)
    opt.step()
    assert ps[0].data.tolist() != [1.0, 2.0]
    if flat:  # a flat buffer is updated as a whole: the other member's gradient is a zero view
        assert sorted(opt.state_dict()["state"]) == [0, 1]
    else:
        assert ps[1].data.tolist() == [3.0] and sorted(opt.state_dict()["state"]) == [0]


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True),
    lambda ps: Adam(ps, lr=0.1, weight_decay=0.01, amsgrad=True),
    lambda ps: AdamW(ps, lr=0.1, maximize=True),
], ids=["sgd-dampening", "sgd-nesterov", "adam", "adamw"])
@pytest.mark.parametrize("flat", [False, True])
def test_optimizer_steps_reuse_their_work_arrays(make, flat):
    n = 50_000  # 400 kB per float64 array: a per-step temporary would show in the traced peak
    rng = np.random.default_rng(0)
    ps = params_of(rng.normal(size=n), rng.normal(size=(10, 10)), flat=flat)
    opt = make(ps)
    for p in ps:
        p.grad = rng.normal(size=p.shape)
    opt.step()
    opt.step()  # the first steps make the state and the work arrays
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        opt.step()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 8 * n // 4, f"a step allocated {peak} bytes over {8 * n} bytes of parameters"


@pytest.mark.parametrize("alg", ["adagrad", "rmsprop", "adam"])
def test_work_arrays_are_only_those_needed(alg):
    # the update reads grad in place: one work array; a decayed or negated gradient needs a second one for g
    def run(scratch, **kw):
        p, z1, z2 = np.ones(4), np.zeros(4), np.zeros(4)
        if alg == "adagrad":
            adagrad_update(p, np.ones(4), z1, step=1, lr=0.1, scratch=scratch, **kw)
        elif alg == "rmsprop":
            rmsprop_update(p, np.ones(4), z1, lr=0.1, alpha=0.9, eps=1e-8, momentum=0.0, centered=False,
                           scratch=scratch, **{"weight_decay": 0.0, **kw})
        else:
            adam_update(p, np.ones(4), z1, z2, step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, scratch=scratch, **kw)
        return scratch

    assert len(run([])) == 1
    assert len(run([], weight_decay=0.1)) == 2
    assert len(run([], maximize=True)) == 2
