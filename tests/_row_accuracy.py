"""Accuracy bounds of the float32 row kernels (stated in kernels/common.cuh, ``xpnn_exp_shifted``), checked on the
CPU shim (tests/test_kernels_shim.py) and on a GPU (tests/test_cuda_kernels.py) by the same functions.

- the exponent term exp(x - m): within EXP_ULP ulp of exp;
- a softmax or cross-entropy-gradient entry: within ROW_ULP ulp (relative, normal results) of the exact value
  computed from the same float32 differences x - m; target entries (softmax - 1) within ROW_ULP * 2**-24 absolute;
- a log-softmax entry: within 2 ulp of itself plus ROW_ULP * 2**-24 (the relative error of s, through log s).
Measured on the shim (glibc expf, under 1 ulp; the terms of s from exp2f(d * log2 e), see common.cuh): 0.5 ulp for
the term, up to 4.2 ulp for entries of rows up to 40,000 wide; a GPU's expf and exp2f (up to 2 ulp each) add up to
1.5 ulp to the term and to s: ROW_ULP leaves room for both.
``run(fn, *args, **kwargs)`` calls an xpnn.functional function through the kernels and returns NumPy arrays.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

import xpnn.functional as F

EXP_ULP, ROW_ULP = 2, 8


def ulps(got: Any, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units in the last place of float32(exact)."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(np.asarray(got, np.float64) - exact) / spacing


def check_exponent_term(run: Callable[..., Any]) -> None:
    """Rows [0, d], d in [-87, -17]: s = 1 + exp(d) rounds to 1 in float32, so the second softmax entry and the
    second gradient entry (label 0, summed loss: scale 1) are the exponent term itself."""
    d = -np.linspace(17, 87, 20001).astype(np.float32)
    x = np.stack([np.zeros_like(d), d], axis=1)
    exact = np.exp(d.astype(np.float64))
    sm = run(F.softmax, x)
    _, grad = run(F.cross_entropy_with_grad, x, np.zeros(len(d), np.int64), reduction="sum")
    assert ulps(sm[:, 1], exact).max() <= EXP_ULP
    assert ulps(grad[:, 1], exact).max() <= EXP_ULP


def check_row_entries(run: Callable[..., Any], width: int) -> None:
    """Random float32 rows with |x - m| up to ~150 (results down to 1e-30) against the bounds above."""
    rng = np.random.default_rng(width)
    x = (rng.standard_normal((8, width)) * 20).astype(np.float32)
    x[:, 0] = 60
    t = rng.integers(1, width, 8)
    d = (x - x.max(axis=1, keepdims=True)).astype(np.float64)  # the float32 differences the kernels compute too
    s = np.exp(d).sum(axis=1, keepdims=True)
    softmax, log_softmax = np.exp(d) / s, d - np.log(s)
    assert ulps(run(F.softmax, x), softmax)[softmax > 1e-30].max() <= ROW_ULP
    got = run(F.log_softmax, x)
    bound = 2 * np.spacing(np.abs(log_softmax).astype(np.float32)) + ROW_ULP * 2.0**-24
    assert (np.abs(got - log_softmax) <= bound).all()
    _, grad = run(F.cross_entropy_with_grad, x, t, reduction="sum")
    onehot = np.zeros_like(softmax)
    onehot[np.arange(8), t] = 1
    exact = softmax - onehot
    assert ulps(grad, exact)[(np.abs(exact) > 1e-30) & (onehot == 0)].max() <= ROW_ULP
    assert np.abs(grad - exact)[onehot == 1].max() <= ROW_ULP * 2.0**-24
