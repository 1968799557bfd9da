"""Verification layer 2 for kernels/rnn_cells.cu: the LSTM and GRU step kernels (forward and backward) run on the
CPU shim through the same launch code as on a GPU (xpnn._cuda.launch) and match the reference of
xpnn/functional/recurrent.py (kernels off): random and saturated gates, float16/32/64, more elements than the
grid, and whole layers (F.recurrence over all steps, bidirectional, with lengths) with the kernels inside."""
from __future__ import annotations

import numpy as np
import pytest

import xpnn
import xpnn.functional as F
import xpnn.nn as nn
from xpnn import _dispatch
from xpnn._cuda import make_provider
from xpnn.functional.recurrent import step_backward

from shim import ShimLoader

TOL = {"float16": dict(rtol=1e-2, atol=1e-2), "float32": dict(rtol=1e-5, atol=1e-6),
       "float64": dict(rtol=1e-12, atol=1e-13)}
DTYPES = ("float16", "float32", "float64")
SIZES = [(1, 1), (4, 3), (5, 40), (2, 300)]  # (rows, hidden)


@pytest.fixture(scope="module")
def loader():
    return ShimLoader()


def both(loader, fn, *args):
    """(through the shim kernels, the reference with kernels off); fails if no kernel ran."""
    with _dispatch.use_kernels(False):
        want = fn(*args)
    before = loader.launches
    with _dispatch.use_provider(make_provider(loader)):
        got = fn(*args)
    assert loader.launches > before, f"{fn.__name__} did not run a shim kernel"
    return got, want


def close(got, want, dtype):
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64), **TOL[dtype])


def lstm_backward(gx, gh, c, dh, dc):
    dgates, _, _, dc_prev = step_backward("LSTM", gx, gh, None, c, None, dh, dc)
    return dgates, dc_prev


def gru_backward(gx, gh, h, dh):
    return step_backward("GRU", gx, gh, h, None, None, dh, None)[:3]


def _inputs(rows, hidden, gates, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    gx, gh = ((rng.standard_normal((rows, gates * hidden)) * scale).astype(dtype) for _ in range(2))
    state, dh, dc = (rng.standard_normal((rows, hidden)).astype(dtype) for _ in range(3))
    return gx, gh, state, dh, dc


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,hidden", SIZES)
@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: saturated sigmoids and tanhs
def test_lstm_step_kernels_match_reference(loader, dtype, rows, hidden, scale):
    gx, gh, c, dh, dc = _inputs(rows, hidden, 4, dtype, scale, rows * hidden)
    close(*both(loader, F.lstm_cell, gx, gh, c), dtype)
    close(*both(loader, lstm_backward, gx, gh, c, dh, dc), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,hidden", SIZES)
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_gru_step_kernels_match_reference(loader, dtype, rows, hidden, scale):
    gx, gh, h, dh, _ = _inputs(rows, hidden, 3, dtype, scale, rows + hidden)
    close(*both(loader, F.gru_cell, gx, gh, h), dtype)
    close(*both(loader, gru_backward, gx, gh, h, dh), dtype)


def test_more_elements_than_the_grid(loader, monkeypatch):
    from xpnn._cuda import launch

    monkeypatch.setattr(launch, "MAX_GRID", 1)  # one block of 256 threads for 7 * 90 = 630 elements
    gx, gh, c, dh, dc = _inputs(7, 90, 4, "float64", 1.0, 1)
    close(*both(loader, lstm_backward, gx, gh, c, dh, dc), "float64")
    gx, gh, h, dh, _ = _inputs(7, 90, 3, "float64", 1.0, 2)
    close(*both(loader, gru_backward, gx, gh, h, dh), "float64")


def test_cell_op_backward_runs_the_kernel(loader):
    """``F.lstm_cell`` on Tensors: the forward kernel computes the step (no gates saved), and the backward then runs
    the backward kernel; the gradients equal the reference's."""
    gx, gh, c, dh, dc = _inputs(3, 4, 4, "float64", 1.0, 3)

    def grads():
        ts = [xpnn.tensor(a, requires_grad=True) for a in (gx, gh, c)]
        h, c_new = F.lstm_cell(*ts)
        ((h * xpnn.tensor(dh)).sum() + (c_new * xpnn.tensor(dc)).sum()).backward()
        return tuple(t.grad for t in ts)

    close(*both(loader, grads), "float64")


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_layer_with_the_kernels_matches_reference(loader, mode):
    """A 2-layer bidirectional layer with lengths: outputs, states and every gradient, kernels vs reference."""
    x = np.random.default_rng(4).standard_normal((5, 3, 4))

    def run():
        m = getattr(nn, mode)(4, 6, num_layers=2, bidirectional=True, dtype="float64", seed=0)
        X = xpnn.tensor(x, requires_grad=True)
        out, state = m(X, lengths=[5, 2, 4])
        h = state[0] if mode == "LSTM" else state
        ((out * out).sum() + (h * h).sum()).backward()
        return (out.numpy(), h.numpy(), X.grad) + tuple(p.grad.copy() for p in m.parameters())

    close(*both(loader, run), "float64")
