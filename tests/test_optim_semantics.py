"""The optimizers and their update functions, in detail.

Everything is checked through public behaviour: parameter values after ``step()``, ``state_dict()`` and
``load_state_dict()``, ``defaults``, the errors raised, and what the fused-kernel hook (``xpnn._dispatch``) is asked
for (one update call per flat buffer, device step counts on capturable slots)."""
from __future__ import annotations

import tracemalloc

import array_api_strict as xs
import numpy as np
import pytest

import xpnn
from xpnn import _dispatch
from xpnn.errors import CheckpointError, DTypeError, NamespaceMismatchError, ShapeError
from xpnn.functional.updates import adagrad_update, adam_update, copy_into, rmsprop_update, sgd_update
from xpnn.nn.parameter import FlatBuffer, Parameter
from xpnn.optim import SGD, Adagrad, Adam, AdamW, RMSprop


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


def _step_peak_bytes(opt):
    """The most memory (bytes, traced by tracemalloc) one ``opt.step()`` holds beyond what existed before it."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        opt.step()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


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
    peak = _step_peak_bytes(opt)
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


@pytest.mark.parametrize("target", ["numpy", "torch"])
def test_model_to_keeps_the_float16_master(target):
    # the float32 master holds digits float16 cannot: moving the model (new arrays, a new flat buffer, another
    # namespace) must carry it over, else the small steps below would round away
    backend = pytest.importorskip("torch") if target == "torch" else "numpy"

    def model():
        return xpnn.nn.Sequential(xpnn.nn.Linear(3, 2, seed=0)).to(dtype="float16")

    moved, ref = model(), model()
    om, orf = SGD(moved.parameters(), lr=1e-4, momentum=0.5), SGD(ref.parameters(), lr=1e-4, momentum=0.5)
    for i in range(4):
        if i == 2:
            moved.to(backend)
        for m, o in ((moved, om), (ref, orf)):
            for p in m.parameters():
                p.grad = xpnn.backend.namespace_of(p.data).ones(p.shape, dtype=p.data.dtype)
            o.step()
    sm, sr = om.state_dict()["state"], orf.state_dict()["state"]
    assert sorted(sm) == sorted(sr) == [0, 1]
    for i in sm:
        assert sm[i]["step"] == 4 and npy(sm[i]["master_param"]).dtype == np.float32
        np.testing.assert_array_equal(npy(sm[i]["master_param"]), sr[i]["master_param"])
        np.testing.assert_array_equal(npy(sm[i]["momentum_buffer"]), sr[i]["momentum_buffer"])
    # buffers 1, 1.5, 1.75, 1.875: the master moved by 6.125 * lr (float16 steps of 1e-4 would round away)
    w0 = npy(list(model().parameters())[0].data).astype(np.float32)
    np.testing.assert_allclose(npy(sm[0]["master_param"]), w0 - 1e-4 * 6.125, rtol=0, atol=1e-7)
    for a, b in zip(moved.parameters(), ref.parameters()):
        assert npy(a.data).dtype == np.float16
        np.testing.assert_array_equal(npy(a.data), npy(b.data))


@pytest.mark.parametrize("kw", [dict(weight_decay=0.1, maximize=True), dict(weight_decay=0.1, amsgrad=True),
                                dict(weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True, maximize=True)],
                         ids=["l2-maximize", "l2-amsgrad", "decoupled-amsgrad-maximize"])
@pytest.mark.parametrize("flat", [False, True])
def test_float16_adam_options_equal_float32_adam_cast_down(kw, flat):
    rng = np.random.default_rng(4)
    half = params_of(rng.normal(size=5), rng.normal(size=(2, 3)), flat=flat, dtype=np.float16)
    single = params_of(*(p.data.astype(np.float32) for p in half), flat=flat, dtype=np.float32)
    oh, os_ = Adam(half, lr=0.01, betas=(0.8, 0.9), **kw), Adam(single, lr=0.01, betas=(0.8, 0.9), **kw)
    for i in range(3):
        for h, s in zip(half, single):
            g = (rng.normal(size=h.shape) * (0.1 if i == 1 else 1.0)).astype(np.float16)
            h.grad, s.grad = g, g.astype(np.float32)
        oh.step(), os_.step()
        for h, s in zip(half, single):
            assert np.array_equal(h.data, s.data.astype(np.float16))
    names = {"step", "exp_avg", "exp_avg_sq", "master_param"} | ({"max_exp_avg_sq"} if kw.get("amsgrad") else set())
    sh, ss = oh.state_dict()["state"], os_.state_dict()["state"]
    for i in (0, 1):
        assert set(sh[i]) == names
        for k in names - {"step", "master_param"}:
            assert sh[i][k].dtype == np.float32 and np.array_equal(sh[i][k], ss[i][k]), k
        assert np.array_equal(sh[i]["master_param"], single[i].data)


@pytest.mark.parametrize("make", [lambda ps: Adam(ps, lr=0.1, weight_decay=0.01, amsgrad=True),
                                  lambda ps: SGD(ps, lr=0.1, momentum=0.9)], ids=["adam", "sgd"])
@pytest.mark.parametrize("flat", [False, True])
def test_float16_steps_reuse_their_work_arrays(make, flat):
    n = 50_000  # 200 kB per float32 array: a per-step float32 temporary would show in the traced peak
    rng = np.random.default_rng(0)
    ps = params_of(rng.normal(size=n), rng.normal(size=(10, 10)), flat=flat, dtype=np.float16)
    opt = make(ps)
    for p in ps:
        p.grad = rng.normal(size=p.shape).astype(np.float16)
    opt.step()
    opt.step()
    peak = _step_peak_bytes(opt)
    # the step's own bookkeeping: the float16 change mask of the master copy (1 byte per element) at most
    assert peak < 2 * n, f"a float16 step allocated {peak} bytes over {2 * n} bytes of parameters"


@pytest.mark.parametrize("flat", [False, True])
def test_float16_master_follows_a_sign_flip_of_zero(flat):
    # writes are found by comparing bit patterns: -0.0 written over the +0.0 a step wrote is a write, so the master
    # copy takes it (a float16 compare would call them equal and keep the master's tiny positive value)
    (p, q) = params_of([0.0, 1.0, -2.0], [3.0], flat=flat, dtype=np.float16)
    opt = SGD([p, q], lr=1e-6)
    p.grad, q.grad = np.array([-1e-3, 0.0, 0.0], np.float16), np.zeros(1, np.float16)
    opt.step()
    master = opt.state_dict()["state"][0]["master_param"]
    assert 0 < master[0] < 1e-8 and p.data[0] == 0 and not np.signbit(p.data[0])  # below float16's smallest
    np.negative(p.data, out=p.data)  # -0.0, -1.0, 2.0
    p.grad = np.zeros(3, np.float16)
    opt.step()
    master = opt.state_dict()["state"][0]["master_param"]
    assert master.tolist() == [0.0, -1.0, 2.0] and np.signbit(master[0])
    assert np.signbit(p.data[0]) and p.data.tolist() == [0.0, -1.0, 2.0]


# --- capturable slots (device step count and lr) on the CPU -----------------------------------------------------

def _adam_run(params, grads, opt, on_step=None):
    for i, gs in enumerate(grads):
        if on_step is not None:
            on_step(i)
        for p, g in zip(params, gs):
            p.grad = xpnn.backend.namespace_of(p.data).asarray(g) if not isinstance(p.data, np.ndarray) else g
        opt.step()
    return [_host(p.data) for p in params]


def _host(a):
    """A NumPy copy of ``a`` (array_api_strict arrays from any of its devices)."""
    if type(a).__module__.startswith("array_api_strict"):
        a = a.to_device(xs.Device("CPU_DEVICE"))
    return npy(a)


def _problem(dtype=np.float32, steps=4):
    rng = np.random.default_rng(11)
    values = [rng.normal(size=3).astype(dtype), rng.normal(size=(2, 2)).astype(dtype)]
    grads = [[rng.normal(size=v.shape).astype(dtype) for v in values] for _ in range(steps)]
    return values, grads


@pytest.mark.parametrize("flat", [False, True])
def test_capturable_can_be_switched_on_and_off_between_steps(flat):
    # capturable=True on NumPy keeps a device copy of the step count; switching it off must drop that copy (a stale
    # count would give the wrong bias correction) and switching it on again must start from the host count
    values, grads = _problem(np.float64, steps=6)
    ps, ref = params_of(*values, flat=flat), params_of(*values, flat=flat)
    opt, oref = Adam(ps, lr=0.1, amsgrad=True), Adam(ref, lr=0.1, amsgrad=True)

    def toggle(i):
        opt.capturable = (True, True, False, False, True, None)[i]

    got = _adam_run(ps, grads, opt, toggle)
    want = _adam_run(ref, grads, oref)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)
    assert opt.state_dict()["state"][0]["step"] == 6


@pytest.mark.parametrize("make", [lambda ps: Adam(ps, lr=0.1, amsgrad=True, weight_decay=0.1),
                                  lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: RMSprop(ps, lr=0.01)],
                         ids=["adam", "sgd", "rmsprop"])
def test_optimizer_state_lives_on_the_parameters_device(make):
    # array_api_strict refuses to mix devices: the device step count and lr must be made on the parameters' device
    values, grads = _problem()
    d1 = xs.Device("device1")
    ps = [Parameter(xs.asarray(v, device=d1)) for v in values]
    ref = params_of(*values, dtype=np.float32)
    got = _adam_run(ps, [[xs.asarray(g, device=d1) for g in gs] for gs in grads], make(ps))
    want = _adam_run(ref, grads, make(ref))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("target", ["torch", "numpy"])
def test_state_follows_parameters_from_one_array_library_to_another(target):
    # array_api_strict -> torch, or -> NumPy with capturable=True: every library keeps a device step count, each
    # in its own arrays, after two steps
    if target == "torch":
        to = pytest.importorskip("torch").asarray
    else:
        to = np.asarray
    values, grads = _problem()
    ps = [Parameter(xs.asarray(v)) for v in values]
    ref = params_of(*values, dtype=np.float32)
    opt, oref = Adam(ps, lr=0.1, amsgrad=True), Adam(ref, lr=0.1, amsgrad=True)
    opt.capturable = True
    for i, gs in enumerate(grads):
        if i == 2:
            for p in ps:
                p.data = to(npy(p.data))
        for p, g in zip(ps, gs):
            p.grad = to(g) if i >= 2 else xs.asarray(g)
        opt.step()
    want = _adam_run(ref, grads, oref)
    for p, b in zip(ps, want):
        assert type(p.data) is type(to(b))
        np.testing.assert_allclose(npy(p.data), b, rtol=1e-6, atol=1e-7)
    assert opt.state_dict()["state"][1]["step"] == 4


def test_the_tensor_hint_is_only_for_tensors():
    with pytest.raises(TypeError, match=r"can only optimize xpnn.nn.Parameter objects, got ndarray$"):
        SGD([np.ones(2)], lr=0.1)
    with pytest.raises(TypeError, match=r"got Tensor; make the leaf with xpnn.nn.Parameter\(array\)"):
        SGD([xpnn.tensor(np.ones(2), requires_grad=True)], lr=0.1)


def test_a_flat_group_is_one_update_call_whatever_the_other_groups_hold():
    calls = []

    def provider(op, xp, dtype):
        def kernel(param, *args, **kwargs):
            calls.append(param.shape)
            return NotImplemented  # decline: the reference code runs
        return kernel

    flat = params_of([1.0, 2.0], [3.0], flat=True)
    loose = params_of([4.0, 5.0], [6.0])
    opt = SGD([{"params": loose}, {"params": flat}], lr=0.1, momentum=0.9)
    with _dispatch.use_provider(provider):
        for _ in range(2):
            for p in flat + loose:
                p.grad = np.ones(p.shape)
            opt.step()
    # per step: the two loose parameters one by one, the flat buffer in one call
    n = flat[0]._flat.size
    assert calls == [(2,), (1,), (n,)] * 2
    assert flat[0].data.tolist() == [1 - 0.1 - 0.19, 2 - 0.1 - 0.19]


@pytest.mark.parametrize("flat", [False, True])
def test_float16_capturable_steps_equal_host_steps(flat):
    # capturable slots (device step and lr) take the three passes (cast the gradient, update the float32 master,
    # cast back) instead of the fused call: the same values (lr exact in float32, so both read the same lr)
    rng = np.random.default_rng(8)
    values = [rng.normal(size=5), rng.normal(size=(2, 3))]
    a = params_of(*values, flat=flat, dtype=np.float16)
    b = params_of(*values, flat=flat, dtype=np.float16)
    lr = float(np.float32(0.01))
    oa, ob = Adam(a, lr=lr, amsgrad=True, weight_decay=0.1), Adam(b, lr=lr, amsgrad=True, weight_decay=0.1)
    ob.capturable = True
    for _ in range(3):
        for x, y in zip(a, b):
            x.grad = rng.normal(size=x.shape).astype(np.float16)
            y.grad = x.grad.copy()
        oa.step(), ob.step()
    for x, y in zip(a, b):
        assert np.array_equal(x.data, y.data)
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    for i in (0, 1):
        assert set(sa[i]) == set(sb[i]) and sb[i]["step"] == 3
        for k in set(sa[i]) - {"step"}:
            assert np.array_equal(sa[i][k], sb[i][k]), k


@pytest.mark.parametrize("capturable", [None, True])
def test_float16_adam_asks_for_one_fused_update_per_step(capturable):
    # host step and lr: one adam_update_mixed call over the float16 buffer (one kernel on CUDA); capturable slots:
    # the float32 master is updated by the capturable kernel (device step and lr), the casts around it
    calls = []

    def provider(op, xp, dtype):
        def kernel(*args, **kwargs):
            calls.append((op, str(dtype)))
            return NotImplemented  # decline: the reference code runs
        return kernel

    ps = params_of([1.0, 2.0], [3.0], flat=True, dtype=np.float16)
    opt = Adam(ps, lr=0.1)
    opt.capturable = capturable
    with _dispatch.use_provider(provider):
        for p in ps:
            p.grad = np.ones(p.shape, np.float16)
        opt.step()
    if capturable is None:  # (the declined mixed call's reference code then asks for the float32 update)
        assert calls == [("adam_update_mixed", "float16"), ("adam_update", "float32")]
    else:
        assert calls == [("adam_update_capturable", "float32")]
    assert ps[0].data.tolist() == [0.89990234375, 1.900390625] and ps[1].data.tolist() == [2.900390625]


# --- per-parameter state joining a flat buffer -------------------------------------------------------------------

def _ns_params(ns, values, dtype, flat=False):
    if ns == "numpy":
        return params_of(*values, flat=flat, dtype=dtype)
    ps = [Parameter(xs.asarray(np.asarray(v, dtype))) for v in values]
    if flat:
        assert FlatBuffer.pack(ps) is not None
    return ps


def _counting_provider(calls):
    def provider(op, xp, dtype):
        def kernel(*args, **kwargs):
            calls.append(op)
            return NotImplemented  # decline: the reference code runs
        return kernel
    return provider


@pytest.mark.parametrize("ns,dtype", [("numpy", np.float32), ("numpy", np.float16), ("array_api_strict", np.float32)])
def test_per_parameter_state_joins_a_flat_buffer_exactly(ns, dtype):
    rng = np.random.default_rng(6)
    values = [rng.normal(size=3), rng.normal(size=(2, 2))]
    grads = [[rng.normal(size=np.shape(v)).astype(dtype) for v in values] for _ in range(4)]
    ps, ref = _ns_params(ns, values, dtype), _ns_params(ns, values, dtype, flat=True)
    opt, oref = Adam(ps, lr=0.01, amsgrad=True), Adam(ref, lr=0.01, amsgrad=True)
    to = (lambda g: g) if ns == "numpy" else xs.asarray
    for i, gs in enumerate(grads):
        if i == 2:  # the per-parameter optimizer's parameters become one buffer: its states join
            assert FlatBuffer.pack(ps) is not None
        calls = []
        with _dispatch.use_provider(_counting_provider(calls)):
            for p, r, g in zip(ps, ref, gs):
                p.grad, r.grad = to(g), to(g)
            opt.step()
        assert len(calls) == (2 if i < 2 else 1) * (2 if dtype == np.float16 else 1), calls  # one call when flat
        oref.step()
    for p, r in zip(ps, ref):
        assert np.array_equal(_host(p.data), _host(r.data))
    sa, sr = opt.state_dict()["state"], oref.state_dict()["state"]
    for i in (0, 1):
        assert set(sa[i]) == set(sr[i]) and sa[i]["step"] == 4
        for k in set(sa[i]) - {"step"}:
            assert _host(sa[i][k]).dtype == _host(sr[i][k]).dtype and np.array_equal(_host(sa[i][k]), _host(sr[i][k]))


def test_a_flat_group_whose_members_stepped_apart_steps_per_parameter():
    # every member has state, but the counts differ (one was frozen for a step): no joining, no error
    ps = params_of([1.0, 2.0], [3.0])
    opt = Adam(ps, lr=0.1)
    for freeze in (None, ps[1]):
        for p in ps:
            p.requires_grad = p is not freeze
            p.grad = np.ones(p.shape) if p.requires_grad else None
        opt.step()
    ps[1].requires_grad = True
    assert FlatBuffer.pack(ps) is not None
    for p in ps:
        p.grad = np.ones(p.shape)
    opt.step()
    state = opt.state_dict()["state"]
    assert state[0]["step"] == 3 and state[1]["step"] == 2


def test_stateless_members_with_and_without_a_count_step_per_parameter():
    # plain SGD keeps no arrays: a member that stepped (count 1) and one that never did (no state) still differ
    ps = params_of([1.0, 2.0], [3.0])
    opt = SGD(ps, lr=0.5)
    ps[0].grad = np.ones(2)
    opt.step()
    assert FlatBuffer.pack(ps) is not None
    for p in ps:
        p.grad = np.ones(p.shape)
    opt.step()
    state = opt.state_dict()["state"]
    assert state[0]["step"] == 2 and state[1]["step"] == 1
    assert ps[0].data.tolist() == [0.0, 1.0] and ps[1].data.tolist() == [2.5]
    # loading such a state into a flat group is refused (a flat buffer is updated as a whole)
    dst = SGD(params_of([0.0, 0.0], [0.0], flat=True), lr=0.5)
    sd = opt.state_dict()
    del sd["state"][1]
    with pytest.raises(CheckpointError, match=r"states differ \(steps \[0, 2\]"):
        dst.load_state_dict(sd)


def test_members_with_the_same_count_but_different_arrays_step_per_parameter():
    ps = params_of([1.0, 2.0], [3.0])
    opt = Adam(ps, lr=0.1)
    z = np.zeros
    opt.load_state_dict({"state": {0: {"step": 1, "exp_avg": z(2), "exp_avg_sq": z(2)},
                                   1: {"step": 1, "exp_avg": z(1), "exp_avg_sq": z(1), "max_exp_avg_sq": z(1)}},
                         "param_groups": opt.state_dict()["param_groups"]})
    assert FlatBuffer.pack(ps) is not None
    for p in ps:
        p.grad = np.ones(p.shape)
    opt.step()
    state = opt.state_dict()["state"]
    assert state[0]["step"] == state[1]["step"] == 2
    assert "max_exp_avg_sq" not in state[0] and "max_exp_avg_sq" in state[1]


def test_a_one_parameter_flat_group_loads_state():
    (p,) = params_of([1.0, 2.0], flat=True)
    (q,) = params_of([1.0, 2.0])
    opt, oq = SGD([p], lr=0.1, momentum=0.9), SGD([q], lr=0.1, momentum=0.9)
    q.grad = np.ones(2)
    oq.step()
    p.data[...] = q.data
    opt.load_state_dict(oq.state_dict())
    for x, o in ((p, opt), (q, oq)):
        x.grad = np.ones(2)
        o.step()
    assert np.array_equal(p.data, q.data) and opt.state_dict()["state"][0]["step"] == 2


def test_adagrad_initial_accumulator_takes_the_parameter_dtype():
    (p,) = params_of([1.0, 2.0], dtype=np.float32)
    opt = Adagrad([p], lr=0.1, initial_accumulator_value=0.5)
    p.grad = np.ones(2, np.float32)
    opt.step()
    s = opt.state_dict()["state"][0]["sum"]
    assert s.dtype == np.float32 and s.tolist() == [1.5, 1.5]
    np.testing.assert_allclose(p.data, np.float32([1, 2]) - 0.1 / (np.sqrt(1.5) + 1e-10), rtol=1e-6)


@pytest.mark.parametrize("capturable", [None, True])
def test_kernels_get_the_step_count_the_slot_keeps(capturable):
    # host slots pass the int count; capturable slots the 0-d device copy of it (and of lr)
    seen = []

    def provider(op, xp, dtype):
        def kernel(*args, step, lr, **kwargs):
            seen.append((op, step if isinstance(step, int) else ("0-d", float(step), step.ndim),
                         lr if isinstance(lr, float) else ("0-d", float(lr))))
            return NotImplemented
        return kernel

    (p,) = params_of([1.0, 2.0], dtype=np.float32)
    opt = Adam([p], lr=0.25)
    opt.capturable = capturable
    with _dispatch.use_provider(provider):
        for _ in range(2):
            p.grad = np.ones(2, np.float32)
            opt.step()
    if capturable:
        assert seen == [("adam_update_capturable", ("0-d", 1.0, 0), ("0-d", 0.25)),
                        ("adam_update_capturable", ("0-d", 2.0, 0), ("0-d", 0.25))]
    else:
        assert seen == [("adam_update", 1, 0.25), ("adam_update", 2, 0.25)]
