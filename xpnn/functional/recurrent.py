"""Recurrent steps with PyTorch's gate order and formulas (``torch.nn.LSTMCell`` / ``torch.nn.GRUCell``; ATen
``RNN.cpp``): the pointwise part of one step, one op per cell type, and ``recurrence``, one layer and direction
over a whole sequence, which the layers of ``xpnn.nn.rnn`` call.

A layer computes the input projection ``gx`` of all time steps as one matrix product; each step then adds the
hidden projection ``gh = h @ weight_hh.T + bias_hh`` and runs the cell's pointwise math on ``(gx, gh, state)``:

- ``lstm_cell(gx, gh, c) -> (h', c')``: gates ``gx + gh`` (N, 4H) in the order i, f, g, o;
  ``c' = f * c + i * g``, ``h' = o * tanh(c')`` (``i, f, o`` sigmoid, ``g`` tanh).
- ``gru_cell(gx, gh, h) -> h'``: r, z, n with the reset gate applied to the hidden projection (bias included):
  ``r = sigmoid(gx_r + gh_r)``, ``z = sigmoid(gx_z + gh_z)``, ``n = tanh(gx_n + r * gh_n)``,
  ``h' = (h - n) * z + n`` (= ``(1 - z) * n + z * h``).
- RNN: ``h' = tanh(gx + gh)`` or ``relu(gx + gh)``.

The step math is written once (``step_forward`` / ``step_backward``, with ``xpnn.functional`` ops, so it runs on
arrays and, recorded, on Tensors); the cell ops and ``recurrence`` call it. On arrays the backward reuses the gates
of the forward; under ``create_graph`` it recomputes them from the op's inputs, so it is differentiated again. A
fused CUDA kernel per cell type (``kernels/rnn_cells.cu``: ``registry.LSTM_CELL``, ``GRU_CELL`` and their
backwards) replaces a step's forward and backward on CuPy arrays.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import _dispatch
from .._cuda import registry
from ..autograd.op import Context, Op
from ..backend import dtype_name, namespace_of
from ..errors import DTypeError, ShapeError
from . import _checks
from .activations import relu, relu_backward, sigmoid, sigmoid_backward, tanh, tanh_backward
from .concat import concat, stack
from .elementwise import matmul
from .reductions import sum as _sum
from .shape import permute_dims, reshape

__all__ = ["lstm_cell", "gru_cell", "recurrence", "masked_update"]


def _check_cell(where: str, gates: int, gx: Any, gh: Any, state: Any) -> None:
    """``gx``, ``gh`` (N, gates*H) and ``state`` (N, H) of one floating dtype."""
    xp = namespace_of(gx, gh, state, where=where)
    _checks.floating(xp, gx, where, "gx")
    if state.ndim != 2 or gx.ndim != 2:
        raise ShapeError(f"{where}: expected gx of shape (N, {gates}*H) and a state of shape (N, H), got "
                         f"{tuple(gx.shape)} and {tuple(state.shape)}")
    want = (state.shape[0], gates * state.shape[1])
    for name, a in (("gx", gx), ("gh", gh)):
        if tuple(a.shape) != want:
            raise ShapeError(f"{where}: expected {name} of shape {want} for a state of shape "
                             f"{tuple(state.shape)}, got {tuple(a.shape)}")
    for name, a in (("gh", gh), ("state", state)):
        if a.dtype != gx.dtype:
            raise DTypeError(f"{where}: {name} dtype {dtype_name(a.dtype)} differs from gx dtype "
                             f"{dtype_name(gx.dtype)}")


def _arrays(*values: Any) -> bool:
    return not any(hasattr(v, "_node") for v in values)


# --- one step, shared by the cell ops and the recurrence ---------------------------------------------------
def _lstm_gates(gx: Any, gh: Any, c: Any) -> tuple[Any, ...]:
    """``(i, f, g, o, c', tanh(c'))`` of one LSTM step (arrays or Tensors): one sigmoid over all four gates (the g
    columns of it unused), one tanh over g."""
    hidden = c.shape[-1]
    gates = gx + gh
    s = sigmoid(gates)
    i, f, o = s[..., :hidden], s[..., hidden:2 * hidden], s[..., 3 * hidden:]
    g = tanh(gates[..., 2 * hidden:3 * hidden])
    c_new = f * c + i * g
    return i, f, g, o, c_new, tanh(c_new)


def _gru_gates(gx: Any, gh: Any, h: Any) -> tuple[Any, ...]:
    """``(r, z, n, gh_n, h')`` of one GRU step (arrays or Tensors)."""
    hidden = h.shape[-1]
    r = sigmoid(gx[..., :hidden] + gh[..., :hidden])
    z = sigmoid(gx[..., hidden:2 * hidden] + gh[..., hidden:2 * hidden])
    ghn = gh[..., 2 * hidden:]
    n = tanh(gx[..., 2 * hidden:] + r * ghn)
    return r, z, n, ghn, (h - n) * z + n


def _kernel(row: Any, like: Any, *others: Any) -> Any:
    """The fused kernel of ``row`` for plain arrays like ``like`` (CuPy, or NumPy under the tests' CPU shim), or
    ``None`` (Tensors under ``create_graph``: the reference, written with ``xpnn.functional`` ops, is recorded)."""
    if hasattr(like, "_node") or any(hasattr(o, "_node") for o in others):
        return None
    return _dispatch.lookup(row, namespace_of(like), like.dtype)


def step_forward(mode: str, gx: Any, gh: Any, h: Any, c: Any) -> tuple[Any, Any, Any]:
    """One step's pointwise part: ``(h', c', gates)`` (``c'`` only for ``"LSTM"``; ``gates``: what
    ``step_backward`` reuses, ``None`` when a fused kernel computed the step). ``mode``: "LSTM", "GRU",
    "RNN_TANH", "RNN_RELU"."""
    if mode == "LSTM":
        kernel = _kernel(registry.LSTM_CELL, gx, gh, c)
        if kernel is not None:
            h_new, c_new = kernel(gx, gh, c)
            return h_new, c_new, None
        gates = _lstm_gates(gx, gh, c)
        return gates[3] * gates[5], gates[4], gates
    if mode == "GRU":
        kernel = _kernel(registry.GRU_CELL, gx, gh, h)
        if kernel is not None:
            return kernel(gx, gh, h), None, None
        gates = _gru_gates(gx, gh, h)
        return gates[-1], None, gates
    pre = gx + gh
    if mode == "RNN_TANH":
        y = tanh(pre)
        return y, None, (y,)
    return relu(pre), None, (pre,)


def step_backward(mode: str, gx: Any, gh: Any, h: Any, c: Any, gates: Any, dh: Any, dc: Any
                  ) -> tuple[Any, Any, Any, Any]:
    """Gradients of ``step_forward`` given ``dh'`` (and ``dc'`` for LSTM): ``(dgx, dgh, dh, dc)``, where ``dh`` is
    the part through the step's pointwise math only (GRU's ``z * h``; ``None`` otherwise) and ``dc`` LSTM's
    ``dc_total * f`` (``None`` otherwise). ``gates`` from ``step_forward``, or ``None`` to recompute them (or to
    run the fused kernel, on arrays)."""
    if mode == "LSTM":
        kernel = _kernel(registry.LSTM_CELL_BACKWARD, gx, gh, c, dh, dc) if gates is None else None
        if kernel is not None:
            dgates, dc_prev = kernel(gx, gh, c, dh, dc)
            return dgates, dgates, None, dc_prev
        i, f, g, o, _, tc = gates if gates is not None else _lstm_gates(gx, gh, c)
        dct = tanh_backward(tc, dh * o) + dc
        dgates = concat([sigmoid_backward(i, dct * g), sigmoid_backward(f, dct * c), tanh_backward(g, dct * i),
                         sigmoid_backward(o, dh * tc)], axis=-1)
        return dgates, dgates, None, dct * f
    if mode == "GRU":
        kernel = _kernel(registry.GRU_CELL_BACKWARD, gx, gh, h, dh) if gates is None else None
        if kernel is not None:
            dgx, dgh, dh_prev = kernel(gx, gh, h, dh)
            return dgx, dgh, dh_prev, None
        r, z, n, ghn, _ = gates if gates is not None else _gru_gates(gx, gh, h)
        dn = tanh_backward(n, dh - dh * z)
        dr = sigmoid_backward(r, dn * ghn)
        dz = sigmoid_backward(z, dh * (h - n))
        return concat([dr, dz, dn], axis=-1), concat([dr, dz, dn * r], axis=-1), dh * z, None
    if gates is None:
        gates = step_forward(mode, gx, gh, h, c)[2]
    dpre = tanh_backward(gates[0], dh) if mode == "RNN_TANH" else relu_backward(gates[0], dh)
    return dpre, dpre, None, None


# --- the cell ops -----------------------------------------------------------------------------------------------
class _Cell(Op):
    """A recurrent cell's pointwise step as an op of inputs ``(gx, gh, state)`` (``state``: ``c`` for LSTM, ``h``
    for GRU). It keeps the three inputs, and on arrays the forward's gates (``ctx.gates``), for ``_step_backward``."""

    mode = ""  # step_forward's mode

    @staticmethod
    def save(ctx: Context, out: Any, gx: Any, gh: Any, state: Any) -> None:
        ctx.save_for_backward(gx, gh, state)

    @classmethod
    def _step_backward(cls, ctx: Context, dh: Any, dc: Any) -> tuple[Any, Any, Any, Any]:
        """``step_backward`` of the saved step: with the forward's gates on arrays, recomputing them from the
        inputs under create_graph (so they are differentiable)."""
        gx, gh, state = ctx.saved_tensors
        h, c = (None, state) if cls.mode == "LSTM" else (state, None)
        gates = None if ctx.create_graph else ctx.__dict__.get("gates")
        return step_backward(cls.mode, gx, gh, h, c, gates, dh, dc)


class LSTMCell(_Cell):
    name = "lstm_cell"
    mode = "LSTM"
    kernel = registry.LSTM_CELL
    check = staticmethod(lambda gx, gh, c: _check_cell("lstm_cell", 4, gx, gh, c))

    @staticmethod
    def forward(ctx: Context, gx: Any, gh: Any, c: Any) -> tuple[Any, Any]:
        """gx, gh (N, 4H), c (N, H) -> (h' (N, H), c' (N, H))."""
        LSTMCell.save(ctx, None, gx, gh, c)
        h_new, c_new, ctx.gates = step_forward("LSTM", gx, gh, None, c)
        return h_new, c_new

    @staticmethod
    def backward(ctx: Context, dh: Any, dc: Any) -> tuple[Any, Any, Any]:
        """``dgates`` (N, 4H; the gradient of both gx and gh) and ``dc = dc_total * f``, where
        ``dc_total = dc' + dh' * o * (1 - tanh(c')**2)``."""
        dgx, dgh, _, dc_prev = LSTMCell._step_backward(ctx, dh, dc)
        return dgx, dgh, dc_prev

    @staticmethod
    def onnx(g: Any, gx: str, gh: str, c: str, hidden: Optional[int] = None) -> tuple[str, str]:
        hidden = hidden or g.shape(c)[-1]  # (given by the recurrence, whose intermediate values have no shape)
        gates = g.op("Add", gx, gh)
        s = g.op("Sigmoid", gates)
        i, f, o = (_onnx_cols(g, s, k, hidden) for k in (0, 1, 3))
        c_new = g.op("Add", g.op("Mul", f, c), g.op("Mul", i, g.op("Tanh", _onnx_cols(g, gates, 2, hidden))))
        return g.op("Mul", o, g.op("Tanh", c_new)), c_new


def _onnx_cols(g: Any, x: str, k: int, hidden: int) -> str:
    """Columns ``k*hidden:(k+1)*hidden`` of the last axis of ``x`` (ONNX ``Slice``)."""
    return g.op("Slice", x, g.ints([k * hidden]), g.ints([(k + 1) * hidden]), g.ints([-1]))


def lstm_cell(gx: Any, gh: Any, c: Any) -> tuple[Any, Any]:
    """One LSTM step's pointwise part (``torch.nn.LSTMCell``'s formulas): ``gx = x @ W_ih.T + b_ih`` and
    ``gh = h @ W_hh.T + b_hh`` (N, 4H, gates i, f, g, o), the cell state ``c`` (N, H) -> ``(h', c')``.
    Arrays or Tensors; ``ShapeError``/``DTypeError`` name the op, the expected and the given shape/dtype."""
    return LSTMCell.apply(gx, gh, c)


class GRUCell(_Cell):
    name = "gru_cell"
    mode = "GRU"
    kernel = registry.GRU_CELL
    check = staticmethod(lambda gx, gh, h: _check_cell("gru_cell", 3, gx, gh, h))

    @staticmethod
    def forward(ctx: Context, gx: Any, gh: Any, h: Any) -> Any:
        """gx, gh (N, 3H), h (N, H) -> h' (N, H)."""
        GRUCell.save(ctx, None, gx, gh, h)
        h_new, _, ctx.gates = step_forward("GRU", gx, gh, h, None)
        return h_new

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        """``dgx = [dr, dz, dn]``, ``dgh = [dr, dz, dn * r]`` (pre-activation gradients) and ``dh = dh' * z``."""
        return GRUCell._step_backward(ctx, dy, None)[:3]

    @staticmethod
    def onnx(g: Any, gx: str, gh: str, h: str, hidden: Optional[int] = None) -> str:
        hidden = hidden or g.shape(h)[-1]
        r, z = (g.op("Sigmoid", g.op("Add", _onnx_cols(g, gx, k, hidden), _onnx_cols(g, gh, k, hidden)))
                for k in (0, 1))
        n = g.op("Tanh", g.op("Add", _onnx_cols(g, gx, 2, hidden), g.op("Mul", r, _onnx_cols(g, gh, 2, hidden))))
        return g.op("Add", g.op("Mul", g.op("Sub", h, n), z), n)


def gru_cell(gx: Any, gh: Any, h: Any) -> Any:
    """One GRU step's pointwise part (``torch.nn.GRUCell``'s formulas): ``gx = x @ W_ih.T + b_ih`` and
    ``gh = h @ W_hh.T + b_hh`` (N, 3H, gates r, z, n), the hidden state ``h`` (N, H) -> ``h'`` (N, H).
    Arrays or Tensors; ``ShapeError``/``DTypeError`` name the op, the expected and the given shape/dtype."""
    return GRUCell.apply(gx, gh, h)


# --- a whole sequence -------------------------------------------------------------------------------------------
_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _steps(mode: str, gx: Any, w_hh: Any, b_hh: Any, h: Any, c: Any, reverse: bool, masks: Any
           ) -> tuple[Any, Any, Any, list[Any]]:
    """The recurrence over ``gx`` (T, N, G) from ``(h, c)``: ``(ys (T, N, H), h_n, c_n, saved)`` with ``saved[t] =
    (gh, h, c, gates)`` of step ``t`` (arrays, or Tensors recorded under ``create_graph``)."""
    steps = gx.shape[0]
    w_t = permute_dims(w_hh, (1, 0))
    if type(w_t) is np.ndarray:  # OpenBLAS multiplies by a transposed view 2-3x slower than by a C-ordered copy
        w_t = np.ascontiguousarray(w_t)  # (a (32, 256) x (256, 1024) product: 0.18 ms instead of 0.57 ms)
    ys: list[Any] = [None] * steps
    saved: list[Any] = [None] * steps
    fold = b_hh is not None and mode != "GRU"  # only the sum gx + gh matters: add b_hh to gx once, not per step
    if fold:                                   # (GRU's reset gate multiplies gh_n, bias included)
        gx = gx + b_hh
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        gh = matmul(h, w_t)
        if b_hh is not None and not fold:
            gh = gh + b_hh
        h_new, c_new, gates = step_forward(mode, gx[t, ...], gh, h, c)
        saved[t] = (gh, h, c, gates)
        if masks is None or masks[t] is None:
            h, c, ys[t] = h_new, c_new, h_new
        else:  # finished sequences keep their state; their outputs are zeros
            keep, keep_f = masks[t]
            h = masked_update(h_new, h, keep)
            c = None if c is None else masked_update(c_new, c, keep)
            ys[t] = h_new * keep_f
    return stack(ys, axis=0), h, c, saved


def _check_recurrence(gx: Any, w_hh: Any, b_hh: Any, h0: Any, c0: Any, *, mode: str, reverse: bool = False,
                      masks: Any = None) -> None:
    """The arguments of ``recurrence`` (one namespace and dtype; the shapes of ``Recurrence.forward``'s docstring)."""
    namespace_of(gx, w_hh, b_hh, h0, c0, where="recurrence")
    if gx.ndim != 3 or gx.shape[0] == 0:
        raise ShapeError(f"recurrence: expected gx of shape (T, N, G*H) with T >= 1, got {tuple(gx.shape)}")
    for state in (h0, c0) if mode == "LSTM" else (h0,):
        _check_cell("recurrence", _GATES[mode], gx[0, ...], gx[0, ...], state)
    hidden = h0.shape[1]
    if tuple(w_hh.shape) != (_GATES[mode] * hidden, hidden):
        raise ShapeError(f"recurrence: expected w_hh of shape {(_GATES[mode] * hidden, hidden)}, got "
                         f"{tuple(w_hh.shape)}")
    if b_hh is not None and tuple(b_hh.shape) != (_GATES[mode] * hidden,):
        raise ShapeError(f"recurrence: expected b_hh of shape {(_GATES[mode] * hidden,)}, got {tuple(b_hh.shape)}")


class Recurrence(Op):
    name = "recurrence"
    check = staticmethod(_check_recurrence)  # (run before the forward or its NumPy override, recurrent_numpy.py)

    @staticmethod
    def forward(ctx: Context, gx: Any, w_hh: Any, b_hh: Any, h0: Any, c0: Any, *, mode: str, reverse: bool = False,
                masks: Any = None) -> tuple[Any, ...]:
        """gx (T, N, G*H), w_hh (G*H, H), b_hh (G*H,) or None, h0 (N, H), c0 (N, H) for LSTM else None ->
        ``(ys (T, N, H), h_n, c_n)`` (LSTM) or ``(ys, h_n)``."""
        ctx.save_for_backward(gx, w_hh, b_hh, h0, c0)
        ctx.mode, ctx.reverse, ctx.masks = mode, reverse, masks
        ys, h_n, c_n, ctx.steps = _steps(mode, gx, w_hh, b_hh, h0, c0, reverse, masks)
        return (ys, h_n, c_n) if mode == "LSTM" else (ys, h_n)

    @staticmethod
    def backward(ctx: Context, dys: Any, dh: Any, dc: Any = None) -> tuple[Any, ...]:
        """Back through the steps in reverse order; the weight gradient is one product of all steps' gate
        gradients (T*N, G*H) with the previous hidden states (T*N, H), after the loop."""
        gx, w_hh, b_hh, h0, c0 = ctx.saved_tensors[:5]  # (the NumPy fast path saves its buffers after them)
        mode, reverse, masks = ctx.mode, ctx.reverse, ctx.masks
        # the forward's steps on arrays; recomputed from the inputs under create_graph (so they are differentiable)
        saved = _steps(mode, gx, w_hh, b_hh, h0, c0, reverse, masks)[3] if ctx.create_graph else ctx.steps
        fold = b_hh is not None and mode != "GRU"  # _steps folded b_hh into gx
        steps, batch, width = gx.shape[0], gx.shape[1], gx.shape[2]
        dgx: list[Any] = [None] * steps
        dgh: list[Any] = [None] * steps
        for t in (range(steps) if reverse else range(steps - 1, -1, -1)):
            gh, h, c, gates = saved[t]
            dh_new, dc_new = dh + dys[t, ...], dc
            if masks is not None and masks[t] is not None:  # a finished sequence's gradient passes the step by
                keep, keep_f = masks[t]
                dh_new, dh_pass = dh_new * keep_f, dh * (1 - keep_f)
                dc_pass = None
                if dc is not None:
                    dc_new, dc_pass = dc * keep_f, dc * (1 - keep_f)
            else:
                dh_pass = dc_pass = None
            x_t = gx[t, ...] + b_hh if fold and gates is None else gx[t, ...]  # (gx is read only without gates)
            dgx[t], dgh[t], dh_cell, dc_cell = step_backward(mode, x_t, gh, h, c, gates, dh_new, dc_new)
            dh = matmul(dgh[t], w_hh)
            for extra in (dh_pass, dh_cell):
                if extra is not None:
                    dh = dh + extra
            if mode == "LSTM":
                dc = dc_cell if dc_pass is None else dc_cell + dc_pass
        dgh_all = stack(dgh, axis=0)
        dgx_all = stack(dgx, axis=0) if mode == "GRU" else dgh_all
        h_prev = stack([saved[t][1] for t in range(steps)], axis=0)
        flat = reshape(dgh_all, (steps * batch, width))
        dw = matmul(permute_dims(flat, (1, 0)), reshape(h_prev, (steps * batch, h_prev.shape[2])))
        db = None if b_hh is None else _sum(flat, axis=0)
        return dgx_all, dw, db, dh, (dc if mode == "LSTM" else None)

    @staticmethod
    def onnx(g: Any, gx: str, w_hh: str, b_hh: Optional[str], h0: str, c0: Optional[str], *, mode: str,
             reverse: bool = False, masks: Any = None) -> tuple[str, ...]:
        """The loop unrolled: per step ``Gather`` of gx, ``MatMul`` with the transposed weight, the cell's
        lowering, ``Where`` for masked steps; the outputs joined by ``Unsqueeze`` + ``Concat``."""
        steps, hidden = g.shape(gx)[0], g.shape(h0)[-1]
        w_t = g.op("Transpose", w_hh, perm=[1, 0])
        h, c = h0, c0
        ys: list[Any] = [None] * steps
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            x_t = g.op("Gather", gx, g.const(np.asarray(t, dtype=np.int64)), axis=0)
            gh = g.op("MatMul", h, w_t)
            if b_hh is not None:
                gh = g.op("Add", gh, b_hh)
            c_new = None
            if mode == "LSTM":
                h_new, c_new = LSTMCell.onnx(g, x_t, gh, c, hidden)
            elif mode == "GRU":
                h_new = GRUCell.onnx(g, x_t, gh, h, hidden)
            else:
                h_new = g.op("Tanh" if mode == "RNN_TANH" else "Relu", g.op("Add", x_t, gh))
            if masks is None or masks[t] is None:
                h, c, ys[t] = h_new, c_new, h_new
            else:
                keep, keep_f = (g.const(m) for m in masks[t])
                h = g.op("Where", keep, h_new, h)
                c = g.op("Where", keep, c_new, c) if mode == "LSTM" else None
                ys[t] = g.op("Mul", h_new, keep_f)
        out = g.op("Concat", *[g.op("Unsqueeze", y, g.ints([0])) for y in ys], axis=0)
        return (out, h, c) if mode == "LSTM" else (out, h)


def recurrence(gx: Any, w_hh: Any, b_hh: Any, h0: Any, c0: Any = None, *, mode: str, reverse: bool = False,
               masks: Any = None) -> tuple[Any, ...]:
    """One layer and direction of ``torch.nn.RNN``/``LSTM``/``GRU`` over all steps, from the input projection
    ``gx`` (T, N, G*H) (``x @ W_ih.T + b_ih`` of every step, one product) and the initial states ``h0`` (N, H)
    (and ``c0`` for ``mode="LSTM"``): ``(ys (T, N, H), h_n, c_n)`` for LSTM, ``(ys, h_n)`` otherwise. ``mode``:
    "LSTM", "GRU", "RNN_TANH", "RNN_RELU"; ``reverse`` runs from the last step to the first; ``masks`` (T entries:
    ``None`` or ``(keep (N, 1) bool, keep in gx's dtype)``) freezes finished sequences (their outputs are zeros).

    One node on the tape: the per-step values stay inside it (the cells' pointwise math and kernels, per step),
    and its backward makes one weight-gradient product for all steps. Under ``create_graph`` the backward
    recomputes the steps from its inputs with ``xpnn.functional`` ops, so it is differentiated again."""
    if mode not in _GATES:
        raise ValueError(f"recurrence: mode must be 'LSTM', 'GRU', 'RNN_TANH' or 'RNN_RELU', got {mode!r}")
    return Recurrence.apply(gx, w_hh, b_hh, h0, c0, mode=mode, reverse=reverse, masks=masks)


# --- variable lengths -------------------------------------------------------------------------------------------
class MaskedUpdate(Op):
    name = "masked_update"

    @staticmethod
    def forward(ctx: Context, new: Any, old: Any, *, mask: Any) -> Any:
        xp = namespace_of(new, old, mask, where="masked_update")
        _checks.broadcast("masked_update", new, old, mask)
        ctx.mask = mask
        return xp.where(mask, new, old)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, Any]:
        keep = ctx.xp.astype(ctx.mask, g.dtype)
        return g * keep, g * (1 - keep)

    @staticmethod
    def onnx(g: Any, new: str, old: str, *, mask: Any) -> str:
        return g.op("Where", g.const(mask), new, old)


def masked_update(new: Any, old: Any, mask: Any) -> Any:
    """``where(mask, new, old)`` (a boolean ``mask`` that broadcasts, e.g. (N, 1) for states (N, H)) with the
    gradient of each branch masked: a finished sequence's state passes through a padded step unchanged, and the step
    changes neither its values nor its gradients."""
    return MaskedUpdate.apply(new, old, mask=mask)
