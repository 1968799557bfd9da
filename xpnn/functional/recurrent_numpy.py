"""NumPy fast path of ``recurrence`` (one layer and direction of an RNN/LSTM over a sequence), registered as an
override of the op's forward and backward (``xpnn.autograd.register_override``; kind ``"numpy"``) for the modes
"LSTM", "GRU", "RNN_TANH" and "RNN_RELU" on float32/float64 arrays. It computes the reference's formulas
(``recurrent.step_forward`` / ``step_backward``, the same operations in the same order: the same values, except
where a blocked product below sums in another order than the single one) without its per-step temporaries:

- forward: the pre-activations of all steps in one (T, N, G*H) buffer, ``gx + b_hh`` written once (GRU: ``gx``;
  its ``b_hh`` is added to each step's ``gh``, whose n columns the reset gate multiplies) and each step's
  ``h @ weight_hh.T`` (with a C-ordered copy of the transposed weight, or in 64-row blocks of the weight where that
  is faster: ``_rows``) added in place, then activated in place
  (LSTM: one sigmoid over the whole contiguous row, faster than over the strided i, f, o columns, then the tanh of
  g's pre-activations, taken before, written over g's columns); the states of all steps in (T+1, N, H) buffers
  (slot ``t`` is step ``t``'s previous state going forward, step ``t``'s new state going in reverse), so the
  previous hidden states of all steps are one contiguous slice;
- backward: each step's gate gradients written into one (T, N, G*H) array (that is the gradient of ``gx``; GRU
  also has that of ``gh``, different in the n columns), the hidden state's gradient by a product with the
  C-ordered weight into a reused (N, H) array; the weight gradient one (G*H, T*N) x (T*N, H) product of that array
  with the slice of previous states, after the loop.

The buffers come from ``_workspace`` and are saved on the op's context (after the reference's five saved values),
so they are reused by the next training step once the graph is freed. Returns ``NotImplemented`` (the reference
runs) for other dtypes (float16), other array types, and when a kernel provider answers for NumPy arrays (the
tests' CPU shim runs the fused cell kernels). A recorded backward (``create_graph``) always runs the reference, which
recomputes the steps from the inputs.
"""
from __future__ import annotations

from typing import Any

import time

import numpy as np

from .. import _dispatch
from .._cuda import registry
from ..autograd.op import Context, register_override
from . import _workspace
from .activations import _sigmoid_numpy, relu_backward, tanh_backward
from .recurrent import Recurrence

__all__: list[str] = []

_KERNELS = {"LSTM": registry.LSTM_CELL, "GRU": registry.GRU_CELL, "RNN_TANH": None, "RNN_RELU": None}
_SAVED = 5  # the reference's saved values (gx, w_hh, b_hh, h0, c0); this path's buffers follow them


def _applies(mode: str, gx: Any, w_hh: Any, b_hh: Any, h0: Any, c0: Any, masks: Any) -> bool:
    if mode not in _KERNELS or type(gx) is not np.ndarray or gx.dtype.char not in "fd":
        return False
    for a in (w_hh, b_hh, h0, c0):
        if a is not None and (type(a) is not np.ndarray or a.dtype != gx.dtype):
            return False
    if masks is not None and any(m is not None and (type(m[0]) is not np.ndarray or type(m[1]) is not np.ndarray)
                                 for m in masks):
        return False
    return _KERNELS[mode] is None or _dispatch.lookup(_KERNELS[mode], np, gx.dtype) is None


# The per-step products, a (N, K) @ b.T for b (M, K) (forward: h @ weight_hh.T, K = H, M = G*H; backward:
# dgates @ weight_hh, K = G*H, M = H), can run as M/R products of R rows of b with a.T, written into the transposed view
# of the (N, M) result, R such that R*N*K <= _SMALL: OpenBLAS's small-matrix kernels make these 1.3-1.8x faster at
# N 16-32, H 128-256 on one thread, but one product is faster with two threads, for larger N*H, and on BLAS builds
# without such kernels. So the form is chosen by timing both once per shape and dtype (``_rows``).
_SMALL = 1 << 19
_ROWS: dict[tuple[int, int, int, str], int] = {}


def _rows(n: int, k: int, m: int, dtype: Any) -> int:
    """The rows R of b per block of the product a (N, K) @ b.T (b (M, K)), or 0 for one product: the faster form by
    the minimum of 5 interleaved timings of each, blocks only when at least 10% faster (``_ROWS``, filled once)."""
    key = (n, k, m, np.dtype(dtype).char)
    rows = _ROWS.get(key)
    if rows is None:
        rows = 64
        while rows > 8 and rows * n * k > _SMALL:
            rows //= 2
        if m % rows or m <= rows or rows * n * k > _SMALL:
            rows = 0
        else:
            rng = np.random.default_rng(0)
            a, b = rng.standard_normal((n, k)).astype(dtype), rng.standard_normal((m, k)).astype(dtype)
            b_t, a_t, out = np.ascontiguousarray(b.T), np.empty((k, n), dtype), np.empty((n, m), dtype)
            blocks, out_blocks = b.reshape(-1, rows, k), out.T.reshape(-1, rows, n)
            best = [np.inf, np.inf]
            for _ in range(5):
                for blocked in (0, 1):
                    t0 = time.perf_counter()
                    _product(a, b_t, out, blocks, a_t, out_blocks) if blocked else _product(a, b_t, out)
                    best[blocked] = min(best[blocked], time.perf_counter() - t0)
            rows = rows if best[1] < 0.9 * best[0] else 0
        _ROWS[key] = rows
    return rows


def _product(a: np.ndarray, b_t: Any, out: np.ndarray, blocks: Any = None, a_t: Any = None,
             out_blocks: Any = None) -> None:
    """``out = a @ b_t``: one product, or with ``blocks`` (R-row blocks of b_t.T), ``a_t`` (scratch for a.T) and
    ``out_blocks`` (the same blocks of out.T) the blocked form."""
    if blocks is None:
        np.matmul(a, b_t, out=out)
    else:
        np.copyto(a_t, a.T)
        np.matmul(blocks, a_t, out=out_blocks)


def _product_operands(tag: str, n: int, b_t: np.ndarray, out: np.ndarray) -> tuple[Any, Any, Any, Any]:
    """``(b_t, blocks, a_t, out_blocks)`` for ``_product`` of a (N, K) with ``b_t`` (K, M) into ``out`` (N, M), in the
    form ``_rows`` chose: a C-ordered ``b_t`` for one product, else None and the blocked operands."""
    k, m = b_t.shape
    rows = _rows(n, k, m, b_t.dtype)
    if not rows:  # (OpenBLAS multiplies by a transposed view ~1.5x slower than by a C-ordered copy)
        return np.ascontiguousarray(b_t), None, None, None
    a_t = _workspace.buffer(tag, (k, n), b_t.dtype)
    return None, np.ascontiguousarray(b_t.T).reshape(-1, rows, k), a_t, out.T.reshape(-1, rows, n)


def _slots(t: int, reverse: bool) -> tuple[int, int]:
    """The state slots (previous, new) of step ``t``."""
    return (t + 1, t) if reverse else (t, t + 1)


def _forward(ctx: Context, gx: Any, w_hh: Any, b_hh: Any, h0: Any, c0: Any, *, mode: str, reverse: bool = False,
             masks: Any = None) -> Any:
    if not _applies(mode, gx, w_hh, b_hh, h0, c0, masks):
        return NotImplemented
    steps, batch, width = gx.shape
    hidden, dtype, lstm, gru = h0.shape[1], gx.dtype, mode == "LSTM", mode == "GRU"
    pre = _workspace.buffer("recurrence.gates", (steps, batch, width), dtype)
    fold = b_hh is not None and not gru  # (as the reference: only the sum gx + gh matters, except to GRU's reset
    if fold:                              # gate, which multiplies gh_n, bias included)
        np.add(gx, b_hh, out=pre)
    else:
        np.copyto(pre, gx)
    hs = _workspace.buffer("recurrence.h", (steps + 1, batch, hidden), dtype)
    cs = _workspace.buffer("recurrence.c", (steps + 1, batch, hidden), dtype) if lstm else None
    # LSTM: tanh(c') of each step; GRU: gh_n (the n columns of h @ weight_hh.T + b_hh) of each step
    aux = _workspace.buffer("recurrence.aux", (steps, batch, hidden), dtype) if lstm or gru else None
    gh = _workspace.buffer("recurrence.gh", (batch, width), dtype)
    w_t, w_blocks, h_t, gh_blocks = _product_operands("recurrence.h_t", batch, w_hh.T, gh)  # (gh = h @ w_hh.T)
    tmp = _workspace.buffer("recurrence.tmp", (batch, hidden), dtype)
    tanh_g = _workspace.buffer("recurrence.tanh_g", (batch, hidden), dtype) if lstm else None
    ys = _workspace.buffer("recurrence.ys", (steps, batch, hidden), dtype)  # (outputs: reused once dropped)
    first = steps if reverse else 0
    hs[first] = h0
    if lstm:
        cs[first] = c0
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        p, n = _slots(t, reverse)
        a = pre[t]
        _product(hs[p], w_t, gh, w_blocks, h_t, gh_blocks)
        if not gru:
            np.add(a, gh, out=a)
        m = None if masks is None else masks[t]
        h_new = hs[n] if masks is None else ys[t]  # (masked: the state keeps its old rows, the output is zeroed)
        if lstm:  # recurrent._lstm_gates: c' = f * c + i * g, h' = o * tanh(c')
            a4 = a.reshape(batch, 4, hidden)  # (sigmoid over the whole contiguous row is faster than over the
            np.tanh(a4[:, 2], out=tanh_g)     # strided i, f and o columns; g's columns are then overwritten)
            _sigmoid_numpy(a, out=a)
            np.copyto(a4[:, 2], tanh_g)
            c_new = cs[n] if m is None else gh[:, :hidden]  # (gh is free until the next step's product)
            np.multiply(a4[:, 1], cs[p], out=c_new)
            np.multiply(a4[:, 0], tanh_g, out=tmp)
            np.add(c_new, tmp, out=c_new)
            np.tanh(c_new, out=aux[t])
            np.multiply(a4[:, 3], aux[t], out=h_new)
            if m is not None:
                np.copyto(cs[n], cs[p])
                np.copyto(cs[n], c_new, where=m[0])
        elif gru:  # recurrent._gru_gates: r, z = sigmoid(gx + gh), n = tanh(gx_n + r * gh_n), h' = (h - n) * z + n
            if b_hh is not None:
                np.add(gh, b_hh, out=gh)
            rz, a3 = a[:, :2 * hidden], a.reshape(batch, 3, hidden)
            np.add(rz, gh[:, :2 * hidden], out=rz)
            _sigmoid_numpy(rz, out=rz)
            np.copyto(aux[t], gh[:, 2 * hidden:])
            np.multiply(a3[:, 0], aux[t], out=tmp)
            np.add(a3[:, 2], tmp, out=a3[:, 2])
            np.tanh(a3[:, 2], out=a3[:, 2])
            np.subtract(hs[p], a3[:, 2], out=tmp)
            np.multiply(tmp, a3[:, 1], out=tmp)
            np.add(tmp, a3[:, 2], out=h_new)
        elif mode == "RNN_TANH":
            np.tanh(a, out=a)  # (kept: tanh_backward reads the output)
            np.copyto(h_new, a)
        else:
            np.maximum(a, 0.0, out=h_new)  # (a keeps the pre-activation: relu_backward reads it)
        if m is not None:
            np.copyto(hs[n], hs[p])
            np.copyto(hs[n], h_new, where=m[0])
            np.multiply(h_new, m[1], out=h_new)
        elif masks is not None:
            np.copyto(hs[n], h_new)
    if masks is None:  # (a copy: the output may be changed in place; the saved states must not)
        np.copyto(ys, hs[:steps] if reverse else hs[1:])
    last = 0 if reverse else steps
    ctx.save_for_backward(gx, w_hh, b_hh, h0, c0, pre, hs, cs, aux)
    ctx.mode, ctx.reverse, ctx.masks = mode, reverse, masks
    if lstm:
        return ys, hs[last].copy(), cs[last].copy()
    return ys, hs[last].copy()


def _backward(ctx: Context, dys: Any, dh: Any, dc: Any = None) -> Any:
    saved = ctx.saved_tensors
    if len(saved) == _SAVED:  # (the reference's forward ran)
        return NotImplemented
    gx, w_hh, b_hh, h0, c0, pre, hs, cs, aux = saved
    mode, reverse, masks = ctx.mode, ctx.reverse, ctx.masks
    steps, batch, width = gx.shape
    hidden, dtype, lstm, gru = h0.shape[1], gx.dtype, mode == "LSTM", mode == "GRU"
    # the gradient of gx (and of gh: gx + gh is all that is used); an output, reused once the caller drops it
    dgates = _workspace.buffer("recurrence.dgates", (steps, batch, width), dtype)
    dh = np.array(dh, dtype=dtype)  # (the running gradients, returned at the end: fresh arrays)
    dc = np.array(dc, dtype=dtype) if lstm else None
    dh_new = _workspace.buffer("recurrence.dh_new", (batch, hidden), dtype)
    dct = _workspace.buffer("recurrence.dct", (batch, hidden), dtype)
    tmp = _workspace.buffer("recurrence.tmp", (batch, hidden), dtype)
    factor = _workspace.buffer("recurrence.factor", (batch, width), dtype) if lstm or gru else None
    # GRU: the gradient of gh, which differs from that of gx in the n columns (dn * r)
    dgh = _workspace.buffer("recurrence.dgh", (steps, batch, width), dtype) if gru else dgates
    w_b, w_blocks, d_t, dh_blocks = _product_operands("recurrence.d_t", batch, w_hh, dh)  # (dh = dgates[t] @ w_hh)
    dh_pass = dc_pass = None
    if masks is not None:
        dh_pass = _workspace.buffer("recurrence.dh_pass", (batch, hidden), dtype)
        dc_pass = _workspace.buffer("recurrence.dc_pass", (batch, hidden), dtype) if lstm else None
    for t in (range(steps) if reverse else range(steps - 1, -1, -1)):
        p, _ = _slots(t, reverse)
        np.add(dh, dys[t], out=dh_new)
        m = None if masks is None else masks[t]
        if m is not None:  # recurrent.Recurrence.backward: a finished sequence's gradient passes the step by
            drop = 1 - m[1]
            np.multiply(dh_new, m[1], out=dh_new)
            np.multiply(dh, drop, out=dh_pass)
            if lstm:
                np.multiply(dc, drop, out=dc_pass)
                np.multiply(dc, m[1], out=dc)
        d = dgates[t]
        if lstm:  # recurrent.step_backward, with sigmoid_backward's (1 - y) * y * dy and tanh_backward's
            a4, d4 = pre[t].reshape(batch, 4, hidden), d.reshape(batch, 4, hidden)  # (1 - y * y) * dy
            i, f, g, o = a4[:, 0], a4[:, 1], a4[:, 2], a4[:, 3]
            np.multiply(dh_new, o, out=tmp)
            np.multiply(aux[t], aux[t], out=dct)
            np.subtract(1.0, dct, out=dct)
            np.multiply(dct, tmp, out=dct)
            np.add(dct, dc, out=dct)  # dct = tanh_backward(tanh(c'), dh' * o) + dc'
            np.multiply(dct, g, out=d4[:, 0])
            np.multiply(dct, cs[p], out=d4[:, 1])
            np.multiply(dct, i, out=d4[:, 2])
            np.multiply(dh_new, aux[t], out=d4[:, 3])
            np.subtract(1.0, pre[t], out=factor)  # the sigmoid factor (1 - y) * y of all four columns, then
            np.multiply(factor, pre[t], out=factor)  # tanh's (1 - g * g) over g's
            f4 = factor.reshape(batch, 4, hidden)
            np.multiply(g, g, out=f4[:, 2])
            np.subtract(1.0, f4[:, 2], out=f4[:, 2])
            np.multiply(factor, d, out=d)
            np.multiply(dct, f, out=dc)
        elif gru:
            # recurrent.step_backward: dn = tanh_backward(n, dh - dh * z), dr = sigmoid_backward(r, dn * gh_n),
            # dz = sigmoid_backward(z, dh * (h - n)); gh's n columns get dn * r; dh_prev gets dh * z (tmp) too
            a3, d3, e = pre[t].reshape(batch, 3, hidden), d.reshape(batch, 3, hidden), dgh[t]
            rz, drz = pre[t][:, :2 * hidden], d[:, :2 * hidden]
            np.multiply(dh_new, a3[:, 1], out=tmp)
            np.subtract(dh_new, tmp, out=dct)
            np.multiply(a3[:, 2], a3[:, 2], out=d3[:, 2])
            np.subtract(1.0, d3[:, 2], out=d3[:, 2])
            np.multiply(d3[:, 2], dct, out=d3[:, 2])
            np.multiply(d3[:, 2], aux[t], out=d3[:, 0])
            np.subtract(hs[p], a3[:, 2], out=dct)
            np.multiply(dh_new, dct, out=d3[:, 1])
            f2 = factor[:, :2 * hidden]
            np.subtract(1.0, rz, out=f2)
            np.multiply(f2, rz, out=f2)
            np.multiply(f2, drz, out=drz)
            np.copyto(e[:, :2 * hidden], drz)
            np.multiply(d3[:, 2], a3[:, 0], out=e[:, 2 * hidden:])
        elif mode == "RNN_TANH":
            np.copyto(d, tanh_backward(pre[t], dh_new))
        else:
            np.copyto(d, relu_backward(pre[t], dh_new))
        _product(dgh[t], w_b, dh, w_blocks, d_t, dh_blocks)
        if m is not None:
            np.add(dh, dh_pass, out=dh)
            if lstm:
                np.add(dc, dc_pass, out=dc)
        if gru:
            np.add(dh, tmp, out=dh)
    flat = dgh.reshape(steps * batch, width)
    h_prev = hs[1:] if reverse else hs[:steps]  # every step's previous hidden state: one slice of the state buffer
    dw = np.matmul(flat.T, h_prev.reshape(steps * batch, hidden))
    db = None if b_hh is None else np.add.reduce(flat, axis=0)
    return dgates, dw, db, dh, dc


register_override(Recurrence.name, "forward", "numpy", _forward)
register_override(Recurrence.name, "backward", "numpy", _backward)
