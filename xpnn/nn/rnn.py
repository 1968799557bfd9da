"""Recurrent layers with PyTorch's arguments, parameter names, gate order, initialisation and return shapes:
``RNN`` (tanh or relu), ``LSTM``, ``GRU`` and the single-step cells ``RNNCell``, ``LSTMCell``, ``GRUCell``.

Per layer and direction the input projection of all time steps is one matrix product (``F.linear`` on (T*N, in))
before the loop; ``F.recurrence`` then runs the steps (the hidden projection ``h @ weight_hh.T + bias_hh`` and the
cell's pointwise math per step, which a fused CUDA kernel replaces on CuPy arrays) as one node of the tape. The
cells call ``F.lstm_cell`` / ``F.gru_cell``. A ``torch.nn.LSTM``'s ``state_dict`` converted to arrays loads as is and gives its outputs.

Variable-length batches: a ``PackedSequence`` (``xpnn.nn.utils.rnn.pack_padded_sequence``) in gives one out, or a
padded input with ``lengths=``; either way a sequence's state stops at its last step (``F.masked_update``), padded
steps give zero outputs and change neither outputs nor gradients of the valid steps.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from .. import functional as F
from ..autograd.grad_mode import no_grad
from .._tensor import Tensor
from ..backend import BackendLike, dtype_name, namespace_of
from ..errors import DTypeError, ShapeError
from ..functional import _checks
from ..functional.dropout import dropout_mask, make_rng
from .explicit import Module
from .parameter import FlatBuffer, Parameter, factory
from .utils.rnn import PackedSequence, lengths_array, lengths_of, pack_time_major, pad_time_major

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _to_arrays(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.data
    if isinstance(out, PackedSequence):
        return PackedSequence(_to_arrays(out.data), *out[1:])
    if isinstance(out, tuple):
        return tuple(_to_arrays(o) for o in out)
    return out


def _has_tensor(values: Any) -> bool:
    for v in values:
        if isinstance(v, Tensor) or (isinstance(v, PackedSequence) and isinstance(v.data, Tensor)):
            return True
        if isinstance(v, tuple) and _has_tensor(v):
            return True
    return False


def _uniform_parameters(module: Module, shapes: list[tuple[str, tuple[int, ...]]], hidden_size: int,
                        backend: BackendLike, dtype: Any, seed: Any) -> None:
    """Register ``shapes`` (name, shape) in order, each drawn from U(-1/sqrt(H), 1/sqrt(H)) like
    ``torch.nn.RNNBase.reset_parameters`` / ``RNNCellBase.reset_parameters``; all in one FlatBuffer."""
    be, dt, rng = factory(backend, dtype, seed)
    bound = 1.0 / math.sqrt(hidden_size)
    for name, shape in shapes:
        setattr(module, name, Parameter(be.asarray(rng.uniform(-bound, bound, size=shape), dtype=dt)))
    FlatBuffer.pack(module.parameters())


def _positive(where: str, **values: Any) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{where}: {name} must be a positive integer, got {v!r}")


def _check_dtype(where: str, x: Any, dtype: Any, what: str = "input") -> None:
    if x.dtype != dtype:
        raise DTypeError(f"{where}: expected {what} of dtype {dtype_name(dtype)} (the parameters' dtype), got "
                         f"{dtype_name(x.dtype)}")


def _step(mode: str, gx: Any, h: Any, c: Any, w_hh: Any, b_hh: Any) -> tuple[Any, Any]:
    """One cell step from the step's input projection ``gx``: ``(h', c')`` (``c'`` is ``None`` but for LSTM)."""
    gh = F.linear(h, w_hh, b_hh)
    if mode == "LSTM":
        return F.lstm_cell(gx, gh, c)
    if mode == "GRU":
        return F.gru_cell(gx, gh, h), None
    pre = gx + gh
    return (F.tanh(pre) if mode == "RNN_TANH" else F.relu(pre)), None


class RNNBase(Module):
    """The multi-layer recurrent layers (``torch.nn.RNNBase``). Parameters per layer ``k`` and direction
    (``_reverse`` for the backward one): ``weight_ih_l{k}`` (G*H, in), ``weight_hh_l{k}`` (G*H, H), ``bias_ih_l{k}``,
    ``bias_hh_l{k}`` (G*H,), with G = 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n), in PyTorch's order."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 backend: BackendLike = None, dtype: Any = None, seed: Any = None) -> None:
        super().__init__()
        name = type(self).__name__
        _positive(name, input_size=input_size, hidden_size=hidden_size, num_layers=num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{name}: dropout must be a probability in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            _checks.warn_user(f"{name}: dropout={dropout} acts between layers only, and num_layers=1 "
                              "(as torch.nn.RNNBase warns)")
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.dropout = float(dropout)
        self._seed = seed
        self._rngs: dict[int, Any] = {}
        gates = _GATES[mode] * hidden_size
        shapes = []
        for layer in range(num_layers):
            fan_in = input_size if layer == 0 else hidden_size * self._directions
            for suffix in ("", "_reverse")[:self._directions]:
                shapes += [(f"weight_ih_l{layer}{suffix}", (gates, fan_in)),
                           (f"weight_hh_l{layer}{suffix}", (gates, hidden_size))]
                if bias:
                    shapes += [(f"bias_ih_l{layer}{suffix}", (gates,)), (f"bias_hh_l{layer}{suffix}", (gates,))]
        _uniform_parameters(self, shapes, hidden_size, backend, dtype, seed)

    @property
    def _directions(self) -> int:
        return 2 if self.bidirectional else 1

    def flatten_parameters(self) -> None:
        """PyTorch's call that compacts the weights into one cuDNN buffer: here they already live in one
        ``FlatBuffer``, so this does nothing (it lets PyTorch code that calls it run unchanged)."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Tensors (or a PackedSequence of a Tensor) in: recorded. Arrays in: arrays out (the explicit API's
        ``m.backward(dy)`` has no rule for several outputs: use Tensors to train)."""
        if _has_tensor(args) or _has_tensor(tuple(kwargs.values())):
            return self.forward(*args, **kwargs)
        with no_grad():
            return _to_arrays(self.forward(*args, **kwargs))

    # --- checks ---------------------------------------------------------------------------------------------
    def _check_state(self, state: Any, batch: int, unbatched: bool, what: str) -> Any:
        rows = self.num_layers * self._directions
        want = (rows, self.hidden_size) if unbatched else (rows, batch, self.hidden_size)
        if tuple(state.shape) != want:
            raise ShapeError(f"{self._where()}: expected {what} of shape {want} (num_layers * num_directions, "
                             f"{'' if unbatched else 'N, '}hidden_size), got {tuple(state.shape)}")
        _check_dtype(self._where(), _data(state), self.weight_ih_l0.data.dtype, what)
        return F.reshape(state, (rows, 1, self.hidden_size)) if unbatched else state

    def _split_hx(self, hx: Any) -> tuple[Any, Any]:
        if self.mode == "LSTM":
            if hx is None:
                return None, None
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{self._where()}: expected hx = (h_0, c_0), got {type(hx).__name__}")
            return hx[0], hx[1]
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"{self._where()}: expected hx to be one array or Tensor h_0, got a "
                            f"{type(hx).__name__}")
        return hx, None

    # --- forward --------------------------------------------------------------------------------------------
    def forward(self, input: Any, hx: Any = None, *, lengths: Any = None) -> Any:  # noqa: A002 (torch's name)
        """``input`` (T, N, input_size) (``batch_first``: (N, T, input_size); unbatched (T, input_size)), or a
        ``PackedSequence``; ``hx``: ``h_0`` (num_layers * num_directions, N, hidden_size) (LSTM: ``(h_0, c_0)``),
        zeros by default; ``lengths`` (N,) integers in 1..T for a padded input.

        Returns ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``): ``output`` (T, N, num_directions *
        hidden_size) (batch-first like the input; a PackedSequence for one), the last valid step's states.
        Raises ``ShapeError``/``DTypeError``/``ValueError`` naming the layer, the expected and the given."""
        where = self._where()
        h0, c0 = self._split_hx(hx)
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError(f"{where}: pass lengths with a padded input, not with a PackedSequence")
            batch_sizes = np.asarray(input.batch_sizes, dtype=np.int64)
            data = input.data
            if data.ndim != 2 or data.shape[1] != self.input_size:
                raise ShapeError(f"{where}: expected packed data of shape (sum(lengths), {self.input_size}), got "
                                 f"{tuple(data.shape)}")
            x = pad_time_major(data, batch_sizes, len(batch_sizes))
            lens = lengths_of(batch_sizes)
            unbatched = False
            order = input.sorted_indices
            if order is not None:  # h_0 / c_0 are in the caller's batch order: put them in the packed order
                xp_idx = namespace_of(_data(data)).asarray(order)
                h0 = None if h0 is None else F.index(h0, (slice(None), xp_idx))
                c0 = None if c0 is None else F.index(c0, (slice(None), xp_idx))
        else:
            x = input
            if not hasattr(x, "ndim"):
                raise TypeError(f"{where}: expected input to be an array, a Tensor or a PackedSequence, got "
                                f"{type(x).__name__}")
            if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
                layout = "(N, T, {0})" if self.batch_first else "(T, N, {0})"
                raise ShapeError(f"{where}: expected input of shape {layout.format(self.input_size)} or unbatched "
                                 f"(T, {self.input_size}), got {tuple(x.shape)}")
            if x.shape[1 if self.batch_first and x.ndim == 3 else 0] == 0:
                raise ShapeError(f"{where}: expected a sequence length T larger than 0 (as torch.nn.RNNBase), got "
                                 f"input of shape {tuple(x.shape)}")
            unbatched = x.ndim == 2
            if unbatched:
                x = F.reshape(x, (x.shape[0], 1, x.shape[1]))
            elif self.batch_first:
                x = F.permute_dims(x, (1, 0, 2))
            lens = None if lengths is None else lengths_array(lengths, x.shape[1], x.shape[0], where)
        _check_dtype(where, _data(x), self.weight_ih_l0.data.dtype)
        batch = x.shape[1]
        if h0 is not None:
            h0 = self._check_state(h0, batch, unbatched, "h_0")
        if c0 is not None:
            c0 = self._check_state(c0, batch, unbatched, "c_0")
        out, h_n, c_n = self._layers(x, h0, c0, lens)
        if packed:
            out = PackedSequence(pack_time_major(out, batch_sizes), batch_sizes, input.sorted_indices,
                                 input.unsorted_indices)
            if input.unsorted_indices is not None:
                back = namespace_of(_data(data)).asarray(input.unsorted_indices)
                h_n = F.index(h_n, (slice(None), back))
                c_n = None if c_n is None else F.index(c_n, (slice(None), back))
        elif unbatched:
            out = F.reshape(out, (out.shape[0], out.shape[2]))
            h_n = F.reshape(h_n, (h_n.shape[0], h_n.shape[2]))
            c_n = None if c_n is None else F.reshape(c_n, (c_n.shape[0], c_n.shape[2]))
        elif self.batch_first:
            out = F.permute_dims(out, (1, 0, 2))
        return (out, (h_n, c_n)) if self.mode == "LSTM" else (out, h_n)

    def _layers(self, x: Any, h0: Any, c0: Any, lens: Optional[np.ndarray]) -> tuple[Any, Any, Any]:
        """Time-major ``x`` (T, N, in), states (L*D, N, H) or ``None`` -> ``(output, h_n, c_n)``."""
        xv = _data(x)
        xp = namespace_of(xv)
        steps, batch = x.shape[0], x.shape[1]
        zeros = xp.zeros((batch, self.hidden_size), dtype=xv.dtype)
        h0s = [h0[k] for k in range(h0.shape[0])] if h0 is not None else None
        c0s = [c0[k] for k in range(c0.shape[0])] if c0 is not None else None
        masks: Optional[list[Any]] = None  # per step: None (every sequence goes on) or bool (N, 1) and its float
        if lens is not None and int(lens.min()) < steps:
            masks = [None] * steps
            for t in range(int(lens.min()), steps):
                keep = xp.asarray((lens > t)[:, None])
                masks[t] = (keep, xp.astype(keep, xv.dtype))
        h_n, c_n = [], []
        lstm = self.mode == "LSTM"
        for layer in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(("", "_reverse")[:self._directions]):
                k = layer * self._directions + d
                b_ih = getattr(self, f"bias_ih_l{layer}{suffix}") if self.bias else None
                b_hh = getattr(self, f"bias_hh_l{layer}{suffix}") if self.bias else None
                w_ih = getattr(self, f"weight_ih_l{layer}{suffix}")
                # every step's input projection in one (T*N, in) x (in, G*H) product (NumPy's matmul of a 3-D
                # array would loop over the steps; -1: an exported graph keeps a dynamic batch axis)
                gx = F.reshape(F.linear(F.reshape(x, (-1, x.shape[2])), w_ih, b_ih), (steps, -1, w_ih.shape[0]))
                h = h0s[k] if h0s is not None else zeros
                c = (c0s[k] if c0s is not None else zeros) if lstm else None
                res = F.recurrence(gx, getattr(self, f"weight_hh_l{layer}{suffix}"), b_hh, h, c, mode=self.mode,
                                   reverse=bool(d), masks=masks)
                outs.append(res[0])
                h_n.append(res[1])
                c_n.append(res[2] if lstm else None)
            x = outs[0] if len(outs) == 1 else F.concat(outs, axis=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                mask = dropout_mask(xp, tuple(x.shape), self.dropout, xv.dtype, self._rng(xp))
                x = F.dropout.__wrapped_op__.apply(x, mask=mask)  # type: ignore[attr-defined]
        return x, F.stack(h_n, axis=0), (F.stack(c_n, axis=0) if lstm else None)

    def _rng(self, xp: Any) -> Any:
        rng = self._rngs.get(id(xp))
        if rng is None:
            rng = self._rngs[id(xp)] = make_rng(xp, self._seed)
        return rng


class RNN(RNNBase):
    """Elman RNN, ``torch.nn.RNN``: ``h_t = act(x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh)`` with
    ``nonlinearity="tanh"`` (default) or ``"relu"``. See ``RNNBase.forward`` for shapes."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 *, backend: BackendLike = None, dtype: Any = None, seed: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, backend=backend, dtype=dtype,
                         seed=seed)
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + ", nonlinearity='relu'" if self.nonlinearity == "relu" else s


class LSTM(RNNBase):
    """Long short-term memory (Hochreiter & Schmidhuber, 1997), ``torch.nn.LSTM``: gates i, f, g, o;
    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``. ``proj_size`` (LSTM with projections) is not
    implemented: a non-zero value raises ``NotImplementedError``. See ``RNNBase.forward`` for shapes."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 *, backend: BackendLike = None, dtype: Any = None, seed: Any = None) -> None:
        if proj_size != 0:
            raise NotImplementedError(f"LSTM: proj_size={proj_size!r} (LSTM with projections) is not implemented "
                                      "in xpnn; use proj_size=0, or an nn.Linear on the output")
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         backend=backend, dtype=dtype, seed=seed)


class GRU(RNNBase):
    """Gated recurrent unit (Cho et al., 2014), ``torch.nn.GRU``: gates r, z, n with the reset gate applied to the
    hidden projection, ``n = tanh(x W_in.T + b_in + r * (h W_hn.T + b_hn))``, ``h_t = (1 - z) * n + z * h_{t-1}``.
    See ``RNNBase.forward`` for shapes."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 backend: BackendLike = None, dtype: Any = None, seed: Any = None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         backend=backend, dtype=dtype, seed=seed)


# --- cells ----------------------------------------------------------------------------------------------------
class _CellBase(Module):
    """One step (``torch.nn.RNNCellBase``): ``weight_ih`` (G*H, in), ``weight_hh`` (G*H, H), ``bias_ih``,
    ``bias_hh`` (G*H,). Input (N, input_size) or unbatched (input_size,); states (N, H) or (H,)."""

    mode = ""

    def __init__(self, input_size: int, hidden_size: int, bias: bool, *, backend: BackendLike, dtype: Any,
                 seed: Any) -> None:
        super().__init__()
        _positive(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bool(bias)
        gates = _GATES[self.mode] * hidden_size
        shapes = [("weight_ih", (gates, input_size)), ("weight_hh", (gates, hidden_size))]
        if bias:
            shapes += [("bias_ih", (gates,)), ("bias_hh", (gates,))]
        _uniform_parameters(self, shapes, hidden_size, backend, dtype, seed)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _has_tensor(args) or _has_tensor(tuple(kwargs.values())):
            return self.forward(*args, **kwargs)
        with no_grad():
            return _to_arrays(self.forward(*args, **kwargs))

    def _input(self, x: Any) -> tuple[Any, bool]:
        if not hasattr(x, "ndim"):
            raise TypeError(f"{self._where()}: expected input to be an array or Tensor, got {type(x).__name__}")
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ShapeError(f"{self._where()}: expected input of shape (N, {self.input_size}) or unbatched "
                             f"({self.input_size},), got {tuple(x.shape)}")
        _check_dtype(self._where(), _data(x), self.weight_ih.data.dtype)
        return (F.reshape(x, (1, x.shape[0])), True) if x.ndim == 1 else (x, False)

    def _state(self, s: Any, x: Any, unbatched: bool, what: str) -> Any:
        if s is None:
            xv = _data(x)
            return namespace_of(xv).zeros((x.shape[0], self.hidden_size), dtype=xv.dtype)
        want = (self.hidden_size,) if unbatched else (x.shape[0], self.hidden_size)
        if tuple(s.shape) != want:
            raise ShapeError(f"{self._where()}: expected {what} of shape {want}, got {tuple(s.shape)}")
        _check_dtype(self._where(), _data(s), self.weight_ih.data.dtype, what)
        return F.reshape(s, (1, self.hidden_size)) if unbatched else s

    def _run(self, x: Any, h: Any, c: Any) -> tuple[Any, Any]:
        gx = F.linear(x, self.weight_ih, self.bias_ih if self.bias else None)
        return _step(self.mode, gx, h, c, self.weight_hh, self.bias_hh if self.bias else None)


def _squeeze(s: Any, unbatched: bool) -> Any:
    return F.reshape(s, (s.shape[1],)) if unbatched else s


class RNNCell(_CellBase):
    """``torch.nn.RNNCell``: ``h' = act(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)``, ``nonlinearity`` "tanh" or
    "relu". ``forward(input, hx=None) -> h'`` (zeros for a missing ``hx``)."""

    mode = "RNN_TANH"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", *,
                 backend: BackendLike = None, dtype: Any = None, seed: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, backend=backend, dtype=dtype, seed=seed)  # (one gate)
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + ", nonlinearity='relu'" if self.nonlinearity == "relu" else s

    def forward(self, input: Any, hx: Any = None) -> Any:  # noqa: A002
        x, unbatched = self._input(input)
        h, _ = self._run(x, self._state(hx, x, unbatched, "hx"), None)
        return _squeeze(h, unbatched)


class LSTMCell(_CellBase):
    """``torch.nn.LSTMCell``: ``forward(input, hx=None) -> (h', c')`` with ``hx = (h, c)`` (zeros if missing);
    gates i, f, g, o (``F.lstm_cell``)."""

    mode = "LSTM"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, backend: BackendLike = None,
                 dtype: Any = None, seed: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, backend=backend, dtype=dtype, seed=seed)

    def forward(self, input: Any, hx: Any = None) -> tuple[Any, Any]:  # noqa: A002
        x, unbatched = self._input(input)
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"{self._where()}: expected hx = (h, c), got {type(hx).__name__}")
        h0, c0 = (None, None) if hx is None else hx
        h, c = self._run(x, self._state(h0, x, unbatched, "h"), self._state(c0, x, unbatched, "c"))
        return _squeeze(h, unbatched), _squeeze(c, unbatched)


class GRUCell(_CellBase):
    """``torch.nn.GRUCell``: ``forward(input, hx=None) -> h'``; gates r, z, n, the reset gate applied to the
    hidden projection (``F.gru_cell``)."""

    mode = "GRU"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, backend: BackendLike = None,
                 dtype: Any = None, seed: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, backend=backend, dtype=dtype, seed=seed)

    def forward(self, input: Any, hx: Any = None) -> Any:  # noqa: A002
        x, unbatched = self._input(input)
        h, _ = self._run(x, self._state(hx, x, unbatched, "hx"), None)
        return _squeeze(h, unbatched)
