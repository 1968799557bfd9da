"""The pointwise part of one recurrent step, one op per cell type, with PyTorch's gate order and formulas
(``torch.nn.LSTMCell`` / ``torch.nn.GRUCell``; ATen ``RNN.cpp``), plus the two helpers the layers of
``xpnn.nn.rnn`` loop with: ``unbind`` (the time steps of the input projection, one node) and ``masked_update``
(variable-length batches).

A layer computes the input projection of all time steps as one matrix product before its loop; each step then adds
the hidden projection ``gh = h @ weight_hh.T + bias_hh`` and calls the cell op on ``(gx, gh, state)``:

- ``lstm_cell(gx, gh, c) -> (h', c')``: gates ``gx + gh`` (N, 4H) in the order i, f, g, o;
  ``c' = f * c + i * g``, ``h' = o * tanh(c')`` (``i, f, o`` sigmoid, ``g`` tanh).
- ``gru_cell(gx, gh, h) -> h'``: r, z, n with the reset gate applied to the hidden projection (bias included):
  ``r = sigmoid(gx_r + gh_r)``, ``z = sigmoid(gx_z + gh_z)``, ``n = tanh(gx_n + r * gh_n)``,
  ``h' = (h - n) * z + n`` (= ``(1 - z) * n + z * h``).

Both save their inputs, plus the gate activations for a backward on arrays; under ``create_graph`` the backward
recomputes the gates from the inputs with ``xpnn.functional`` ops, so it is differentiated again. A fused CUDA kernel (``kernels/rnn_cells.cu``) overrides the forward
(``kernel = registry.<ROW>``) and, on arrays, the backward (asked for with ``_dispatch.lookup``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _dispatch
from .._cuda import registry
from ..autograd.op import Context, Op
from ..backend import dtype_name, namespace_of
from ..errors import DTypeError, ShapeError
from . import _checks
from .activations import sigmoid, sigmoid_backward, tanh, tanh_backward
from .concat import concat, stack

__all__ = ["lstm_cell", "gru_cell", "unbind", "masked_update"]


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


# --- LSTM -------------------------------------------------------------------------------------------------------
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


class LSTMCell(Op):
    name = "lstm_cell"
    kernel = registry.LSTM_CELL
    check = staticmethod(lambda gx, gh, c: _check_cell("lstm_cell", 4, gx, gh, c))

    @staticmethod
    def save(ctx: Context, out: Any, gx: Any, gh: Any, c: Any) -> None:
        ctx.save_for_backward(gx, gh, c)

    @staticmethod
    def forward(ctx: Context, gx: Any, gh: Any, c: Any) -> tuple[Any, Any]:
        """gx, gh (N, 4H), c (N, H) -> (h' (N, H), c' (N, H))."""
        LSTMCell.save(ctx, None, gx, gh, c)
        i, f, g, o, c_new, tc = ctx.gates = _lstm_gates(gx, gh, c)
        return o * tc, c_new

    @staticmethod
    def backward(ctx: Context, dh: Any, dc: Any) -> tuple[Any, Any, Any]:
        """``dgates`` (N, 4H; the gradient of both gx and gh) and ``dc = dc_total * f``, where
        ``dc_total = dc' + dh' * o * (1 - tanh(c')**2)``."""
        gx, gh, c = ctx.saved_tensors
        if _arrays(gx, dh, dc):  # a fused kernel on arrays (CuPy, or NumPy under the tests' CPU shim)
            kernel = _dispatch.lookup(registry.LSTM_CELL_BACKWARD, namespace_of(gx), gx.dtype)
            if kernel is not None:
                dgates, dc_prev = kernel(gx, gh, c, dh, dc)
                return dgates, dgates, dc_prev
        # the forward's gates on arrays; recomputed from the inputs under create_graph (so they are differentiable)
        gates = ctx.__dict__.get("gates") if not ctx.create_graph else None
        i, f, g, o, _, tc = gates if gates is not None else _lstm_gates(gx, gh, c)
        dct = tanh_backward(tc, dh * o) + dc
        dgates = concat([sigmoid_backward(i, dct * g), sigmoid_backward(f, dct * c), tanh_backward(g, dct * i),
                         sigmoid_backward(o, dh * tc)], axis=-1)
        return dgates, dgates, dct * f

    @staticmethod
    def onnx(g: Any, gx: str, gh: str, c: str) -> tuple[str, str]:
        hidden = g.shape(c)[-1]
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


# --- GRU --------------------------------------------------------------------------------------------------------
def _gru_gates(gx: Any, gh: Any, h: Any) -> tuple[Any, ...]:
    """``(r, z, n, gh_n, h')`` of one GRU step (arrays or Tensors)."""
    hidden = h.shape[-1]
    r = sigmoid(gx[..., :hidden] + gh[..., :hidden])
    z = sigmoid(gx[..., hidden:2 * hidden] + gh[..., hidden:2 * hidden])
    ghn = gh[..., 2 * hidden:]
    n = tanh(gx[..., 2 * hidden:] + r * ghn)
    return r, z, n, ghn, (h - n) * z + n


class GRUCell(Op):
    name = "gru_cell"
    kernel = registry.GRU_CELL
    check = staticmethod(lambda gx, gh, h: _check_cell("gru_cell", 3, gx, gh, h))

    @staticmethod
    def save(ctx: Context, out: Any, gx: Any, gh: Any, h: Any) -> None:
        ctx.save_for_backward(gx, gh, h)

    @staticmethod
    def forward(ctx: Context, gx: Any, gh: Any, h: Any) -> Any:
        """gx, gh (N, 3H), h (N, H) -> h' (N, H)."""
        GRUCell.save(ctx, None, gx, gh, h)
        ctx.gates = _gru_gates(gx, gh, h)
        return ctx.gates[-1]

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        """``dgx = [dr, dz, dn]``, ``dgh = [dr, dz, dn * r]`` (pre-activation gradients) and ``dh = dh' * z``."""
        gx, gh, h = ctx.saved_tensors
        if _arrays(gx, dy):
            kernel = _dispatch.lookup(registry.GRU_CELL_BACKWARD, namespace_of(gx), gx.dtype)
            if kernel is not None:
                return kernel(gx, gh, h, dy)
        gates = ctx.__dict__.get("gates") if not ctx.create_graph else None
        r, z, n, ghn, _ = gates if gates is not None else _gru_gates(gx, gh, h)
        dn = tanh_backward(n, dy - dy * z)
        dr = sigmoid_backward(r, dn * ghn)
        dz = sigmoid_backward(z, dy * (h - n))
        return concat([dr, dz, dn], axis=-1), concat([dr, dz, dn * r], axis=-1), dy * z

    @staticmethod
    def onnx(g: Any, gx: str, gh: str, h: str) -> str:
        hidden = g.shape(h)[-1]
        r, z = (g.op("Sigmoid", g.op("Add", _onnx_cols(g, gx, k, hidden), _onnx_cols(g, gh, k, hidden)))
                for k in (0, 1))
        n = g.op("Tanh", g.op("Add", _onnx_cols(g, gx, 2, hidden), g.op("Mul", r, _onnx_cols(g, gh, 2, hidden))))
        return g.op("Add", g.op("Mul", g.op("Sub", h, n), z), n)


def gru_cell(gx: Any, gh: Any, h: Any) -> Any:
    """One GRU step's pointwise part (``torch.nn.GRUCell``'s formulas): ``gx = x @ W_ih.T + b_ih`` and
    ``gh = h @ W_hh.T + b_hh`` (N, 3H, gates r, z, n), the hidden state ``h`` (N, H) -> ``h'`` (N, H).
    Arrays or Tensors; ``ShapeError``/``DTypeError`` name the op, the expected and the given shape/dtype."""
    return GRUCell.apply(gx, gh, h)


# --- the layers' helpers ----------------------------------------------------------------------------------------
class Unbind(Op):
    name = "unbind"

    @staticmethod
    def forward(ctx: Context, x: Any) -> tuple[Any, ...]:
        namespace_of(x, where="unbind")
        if x.ndim == 0:
            raise ShapeError("unbind: expected an array of at least one dimension, got a scalar")
        return tuple(x[t, ...] for t in range(x.shape[0]))

    @staticmethod
    def backward(ctx: Context, *grads: Any) -> Any:
        return stack(grads, axis=0)

    @staticmethod
    def onnx(g: Any, x: str) -> tuple[str, ...]:
        return tuple(g.op("Gather", x, g.const(np.asarray(t, dtype=np.int64)), axis=0)
                     for t in range(g.shape(x)[0]))


def unbind(x: Any) -> tuple[Any, ...]:
    """The slices ``x[0], x[1], ...`` along the first axis (``torch.unbind``), recorded as one node: its backward
    stacks the slices' gradients once (per-slice ``index`` would scatter each into zeros of ``x``'s shape)."""
    out = Unbind.apply(x)
    return out if isinstance(out, tuple) else (out,)


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
