"""Learning-rate schedules: values by hand, several parameter groups, state dicts, errors, and torch if present."""
import math

import numpy as np
import pytest

import xpnn

from xpnn.nn.parameter import Parameter
from xpnn.optim import SGD, Adam
from xpnn.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, StepLR


def optimizer(lr=1.0):
    return SGD([{"params": [Parameter(np.ones(2))]}, {"params": [Parameter(np.ones(2))], "lr": lr * 10}], lr=lr)


def lrs(sched, epochs):
    out = [sched.get_last_lr()]
    for _ in range(epochs):
        sched.optimizer.step()
        sched.step()
        out.append(sched.get_last_lr())
    return out


def test_step_lr():
    got = lrs(StepLR(optimizer(), step_size=2, gamma=0.5), 5)
    assert [g[0] for g in got] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert [g[1] for g in got] == [10.0, 10.0, 5.0, 5.0, 2.5, 2.5]


def test_exponential_lr_changes_the_optimizer_step():
    p = Parameter(np.zeros(1))
    opt = SGD([p], lr=1.0)
    sched = ExponentialLR(opt, gamma=0.5)
    for _ in range(3):
        p.grad = np.ones(1)
        opt.step()
        sched.step()
    np.testing.assert_allclose(p.data, -(1 + 0.5 + 0.25))
    assert opt.param_groups[0]["lr"] == 0.125 and opt.param_groups[0]["initial_lr"] == 1.0


def test_cosine_annealing():
    got = [g[0] for g in lrs(CosineAnnealingLR(optimizer(), T_max=4, eta_min=0.1), 8)]
    expected = [0.1 + 0.9 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(9)]
    np.testing.assert_allclose(got, expected, rtol=1e-15)
    assert got[4] == pytest.approx(0.1) and got[8] == pytest.approx(1.0)


def test_state_dict_resume():
    a = StepLR(optimizer(), step_size=3, gamma=0.1)
    lrs(a, 4)
    opt_b = optimizer()
    opt_b.load_state_dict(a.optimizer.state_dict())
    b = StepLR(opt_b, step_size=1, gamma=0.9, last_epoch=-1)
    b.load_state_dict(a.state_dict())
    assert lrs(a, 4) == lrs(b, 4)
    with pytest.raises(ValueError, match="unknown entries"):
        b.load_state_dict({"nonsense": 1})


def test_errors():
    with pytest.raises(ValueError, match="StepLR: step_size must be a positive int, got 0"):
        StepLR(optimizer(), step_size=0)
    with pytest.raises(ValueError, match="CosineAnnealingLR: T_max must be a positive int"):
        CosineAnnealingLR(optimizer(), T_max=0)
    with pytest.raises(ValueError, match="ExponentialLR: invalid gamma=-1"):
        ExponentialLR(optimizer(), gamma=-1)
    with pytest.raises(KeyError, match="initial_lr"):
        StepLR(optimizer(), step_size=1, last_epoch=3)
    with pytest.raises(TypeError, match="expected an xpnn.optim optimizer"):
        StepLR(object(), step_size=1)


@pytest.mark.parametrize("make", [lambda o: StepLR(o, 2, 0.5), lambda o: ExponentialLR(o, 0.9),
                                  lambda o: CosineAnnealingLR(o, 5, 0.01)], ids=["step", "exp", "cosine"])
def test_against_torch(make):
    torch = pytest.importorskip("torch", reason="torch is not installed; the comparison is optional")
    ours = make(Adam([Parameter(np.ones(1))], lr=0.1))
    topt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.1)
    cls = {StepLR: torch.optim.lr_scheduler.StepLR, ExponentialLR: torch.optim.lr_scheduler.ExponentialLR,
           CosineAnnealingLR: torch.optim.lr_scheduler.CosineAnnealingLR}[type(ours)]
    args = {StepLR: ("step_size", "gamma"), ExponentialLR: ("gamma",), CosineAnnealingLR: ("T_max", "eta_min")}
    theirs = cls(topt, *[getattr(ours, a) for a in args[type(ours)]])
    for _ in range(12):
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12)
        ours.step()
        topt.step()
        theirs.step()


METRICS = [1.0, 0.9, 0.95, 0.95, 0.95, 0.89, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]


@pytest.mark.parametrize("kw", [
    {}, {"patience": 2}, {"patience": 1, "cooldown": 2}, {"patience": 0, "factor": 0.5, "min_lr": 0.02},
    {"mode": "max", "patience": 1}, {"threshold_mode": "abs", "threshold": 0.05, "patience": 1},
    {"mode": "max", "threshold_mode": "abs", "threshold": 0.01, "patience": 0, "min_lr": [0.001, 0.5]},
    {"patience": 0, "factor": 0.9999, "eps": 1e-3},
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
def test_reduce_lr_on_plateau_matches_torch(kw):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for ReduceLROnPlateau")
    from xpnn.optim.lr_scheduler import ReduceLROnPlateau

    ours = ReduceLROnPlateau(optimizer(lr=0.1), **kw)
    tp = [torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)]
    topt = torch.optim.SGD([{"params": [tp[0]]}, {"params": [tp[1]], "lr": 1.0}], lr=0.1)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    for m in METRICS + METRICS[::-1]:
        ours.step(m)
        theirs.step(m)
        assert [g["lr"] for g in ours.optimizer.param_groups] == pytest.approx([g["lr"] for g in topt.param_groups],
                                                                              rel=1e-12)
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12)
        assert (ours.best, ours.num_bad_epochs, ours.cooldown_counter) == \
            (theirs.best, theirs.num_bad_epochs, theirs.cooldown_counter)


def test_reduce_lr_on_plateau_by_hand_and_state_dict():
    from xpnn.optim.lr_scheduler import ReduceLROnPlateau

    sched = ReduceLROnPlateau(optimizer(lr=1.0), patience=1, factor=0.5)
    seen = []
    for m in [3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0]:
        sched.step(np.float32(m))  # a NumPy scalar (or 0-d array / Tensor) works as the metric
        seen.append(sched.get_last_lr()[0])
    assert seen == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    state = sched.state_dict()
    assert "optimizer" not in state and state["best"] == 1.0 and state["last_epoch"] == 7
    resumed = ReduceLROnPlateau(optimizer(lr=1.0), patience=1, factor=0.5)
    resumed.load_state_dict(state)
    assert resumed.get_last_lr() == [0.25, 2.5] and resumed.optimizer.param_groups[0]["lr"] == 0.25
    for s in (sched, resumed):
        s.step(1.5)
        s.step(1.5)
    assert resumed.get_last_lr() == sched.get_last_lr() == [0.125, 1.25]
    sched.step(xpnn.tensor(0.1))  # a 0-d Tensor
    assert sched.best == pytest.approx(0.1)


def test_reduce_lr_on_plateau_errors():
    from xpnn.optim.lr_scheduler import ReduceLROnPlateau

    with pytest.raises(ValueError, match="factor should be < 1.0"):
        ReduceLROnPlateau(optimizer(), factor=1.0)
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'minimum'"):
        ReduceLROnPlateau(optimizer(), mode="minimum")
    with pytest.raises(ValueError, match="threshold_mode must be 'rel' or 'abs'"):
        ReduceLROnPlateau(optimizer(), threshold_mode="relative")
    with pytest.raises(ValueError, match="expected 2 min_lrs"):
        ReduceLROnPlateau(optimizer(), min_lr=[0.1])
    with pytest.raises(TypeError, match="expected an xpnn.optim optimizer"):
        ReduceLROnPlateau(object())
    with pytest.raises(TypeError, match=r"pass the monitored metric, e.g. scheduler.step\(val_loss\)"):
        ReduceLROnPlateau(optimizer()).step()
