"""Learning-rate schedules: values by hand, several parameter groups, state dicts, errors, and torch if present."""
import math

import numpy as np
import pytest

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
