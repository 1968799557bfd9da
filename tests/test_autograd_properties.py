"""Property tests: random small graphs of ops (fan-out, broadcasting, reductions) agree with finite differences."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import xpnn
import xpnn.functional as F

UNARY = {
    "tanh": F.tanh, "sigmoid": F.sigmoid, "exp_small": lambda t: F.exp(t * 0.3), "square": lambda t: t * t,
    "softplus": lambda t: F.log(1.0 + F.exp(t)), "neg": lambda t: -t, "scale": lambda t: t * 1.7 - 0.2,
    "softmax": lambda t: F.softmax(t, axis=-1), "log_softmax": lambda t: F.log_softmax(t, axis=-1),
    "mean_keep": lambda t: t - F.mean(t, axis=0, keepdims=True), "T2": lambda t: (t.T @ t)[:3, :4] * 0.1,
}
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (1.5 + b * b), "row": lambda a, b: a * F.sum(b, axis=1, keepdims=True),
    "col": lambda a, b: a + F.mean(b, axis=0),
}


@st.composite
def programs(draw):
    steps = []
    n_values = 2
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            steps.append(("u", draw(st.sampled_from(sorted(UNARY))), draw(st.integers(0, n_values - 1))))
        else:
            steps.append(("b", draw(st.sampled_from(sorted(BINARY))), draw(st.integers(0, n_values - 1)),
                          draw(st.integers(0, n_values - 1))))
        n_values += 1
    return steps


def run(steps, a, b):
    vals = [a, b]
    for s in steps:
        vals.append(UNARY[s[1]](vals[s[2]]) if s[0] == "u" else BINARY[s[1]](vals[s[2]], vals[s[3]]))
    return F.sum(vals[-1] * np.linspace(-1, 1, 12).reshape(3, 4))


@settings(max_examples=60, deadline=None)
@given(programs(), st.integers(0, 2**31 - 1))
def test_random_graphs_match_finite_differences(steps, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=(3, 4)), rng.normal(size=(3, 4))]
    ts = [xpnn.tensor(x, requires_grad=True) for x in arrays]
    out = run(steps, *ts)
    if not out.requires_grad:
        return
    out.backward()
    eps = 1e-6
    for i, t in enumerate(ts):
        num = np.zeros((3, 4))
        for idx in np.ndindex(3, 4):
            up = [x.copy() for x in arrays]
            down = [x.copy() for x in arrays]
            up[i][idx] += eps
            down[i][idx] -= eps
            num[idx] = (float(run(steps, *up)) - float(run(steps, *down))) / (2 * eps)
        got = t.grad if t.grad is not None else np.zeros((3, 4))
        np.testing.assert_allclose(got, num, rtol=1e-4, atol=1e-6)  # central differences in float64
