"""``TransformerEncoderLayer``: PyTorch's ``torch.nn.TransformerEncoderLayer`` (self-attention and a feed-forward
block, each with a residual connection and LayerNorm, post-norm or ``norm_first``), with its parameter names, so its
``state_dict`` loads as is; ``TransformerEncoder``: a stack of copies of one such layer (``torch.nn.TransformerEncoder``,
``layers.{i}.*`` and ``norm.*``). ``TransformerDecoderLayer`` / ``TransformerDecoder`` (self-attention, cross-attention
over the encoder's output, feed-forward) and ``Transformer`` (encoder and decoder) likewise follow
``torch.nn.TransformerDecoderLayer``, ``torch.nn.TransformerDecoder`` and ``torch.nn.Transformer``."""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Optional, Union

from .. import functional as F
from .. import init
from .._tensor import Tensor
from ..backend import BackendLike, get_backend, resolve_dtype
from ..errors import DTypeError, ShapeError
from ..random import generator
from .attention import MultiheadAttention
from .dropout import Dropout
from .linear import Linear
from .container import ModuleList
from .explicit import Module
from .layernorm import LayerNorm
from .parameter import FlatBuffer

__all__ = ["TransformerEncoderLayer", "TransformerEncoder", "TransformerDecoderLayer", "TransformerDecoder",
           "Transformer"]

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _check_activation(where: str, activation: Any) -> None:
    if not (callable(activation) or (isinstance(activation, str) and activation in _ACTIVATIONS)):
        raise ValueError(f"{where}: activation must be 'relu', 'gelu' or a callable, got {activation!r}")


def _check_num_layers(where: str, num_layers: Any) -> None:
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(f"{where}: num_layers must be a positive integer, got {num_layers!r}")


def _clones(layer: Module, num_layers: int, rng: Any) -> ModuleList:
    """``num_layers`` deep copies of ``layer`` (PyTorch's ``_get_clones``), each with fresh dropout generators
    drawn from ``rng`` (a deep copy alone would repeat the masks)."""
    layers = []
    for _ in range(num_layers):
        clone = copy.deepcopy(layer)
        for m in clone.modules():
            if isinstance(getattr(m, "_rngs", None), dict):
                m._rngs = {}
                m._seed = int(rng.integers(2**31))
        layers.append(clone)
    return ModuleList(layers)


class _FeedForwardLayer(Module):
    """What the encoder and decoder layers share: the activation, the feed-forward block
    ``linear2(dropout(activation(linear1(x))))`` (their ``linear1``, ``dropout``, ``linear2``) and the repr."""

    def _set_activation(self, activation: Union[str, Callable[[Any], Any]]) -> None:
        self.activation_name = activation if isinstance(activation, str) else getattr(activation, "__name__", "fn")
        self._activation = _ACTIVATIONS[activation] if isinstance(activation, str) else activation

    def _feed_forward(self, x: Any) -> Any:
        h = self.dropout(self._activation(F.linear(x, self.linear1.weight, self.linear1.bias)))
        return F.linear(h, self.linear2.weight, self.linear2.bias)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, nhead={self.nhead}, dim_feedforward={self.dim_feedforward}, "
                f"activation={self.activation_name}, norm_first={self.norm_first}")


class TransformerEncoderLayer(_FeedForwardLayer):
    """One encoder layer of "Attention Is All You Need" (Vaswani et al., 2017), PyTorch's defaults and layout:

    post-norm (``norm_first=False``): ``x = norm1(x + sa(x)); x = norm2(x + ff(x))``;
    pre-norm (``norm_first=True``): ``x = x + sa(norm1(x)); x = x + ff(norm2(x))``, with
    ``sa(x) = dropout1(self_attn(x, x, x, need_weights=False)[0])`` and
    ``ff(x) = dropout2(linear2(dropout(activation(linear1(x)))))``.

    ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``: src (S, N, E) (``batch_first``:
    (N, S, E); unbatched (S, E)) -> the same shape; the masks as in ``MultiheadAttention`` (bool True = ignore, or
    float added). ``activation``: ``"relu"``, ``"gelu"`` (exact) or a callable on Tensors. Parameters:
    ``self_attn.*`` (see ``MultiheadAttention``), ``linear1.*``, ``linear2.*``, ``norm1.*``, ``norm2.*``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: Union[str, Callable[[Any], Any]] = "relu", layer_norm_eps: float = 1e-5,
                 batch_first: bool = False, norm_first: bool = False, bias: bool = True, *,
                 backend: BackendLike = None, dtype: Any = None, seed: Any = None) -> None:
        super().__init__()
        _check_activation("TransformerEncoderLayer", activation)
        rng = generator(seed)
        kw = dict(backend=backend, dtype=dtype)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            seed=rng, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, seed=rng, **kw)
        self.dropout = Dropout(dropout, seed=int(rng.integers(2**31)))
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, seed=rng, **kw)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1 = Dropout(dropout, seed=int(rng.integers(2**31)))
        self.dropout2 = Dropout(dropout, seed=int(rng.integers(2**31)))
        self._set_activation(activation)
        self.d_model, self.nhead, self.dim_feedforward = d_model, nhead, dim_feedforward
        FlatBuffer.pack(self.parameters())

    def _sa_block(self, x: Any, attn_mask: Any, key_padding_mask: Any, is_causal: bool) -> Any:
        y = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                           is_causal=is_causal)[0]
        return self.dropout1(y)

    def _ff_block(self, x: Any) -> Any:
        return self.dropout2(self._feed_forward(x))

    def forward(self, src: Any, src_mask: Any = None, src_key_padding_mask: Any = None,
                is_causal: bool = False) -> Any:
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))


class TransformerEncoder(Module):
    """A stack of ``num_layers`` copies of ``encoder_layer`` (``torch.nn.TransformerEncoder``; the copies start from
    the layer's weights, as PyTorch's deep copies do), then ``norm`` if given: ``forward(src, mask=None,
    src_key_padding_mask=None, is_causal=None)`` passes ``mask`` / ``src_key_padding_mask`` / ``is_causal`` (a hint
    that ``mask`` is the causal mask; ``None`` = False) to every layer; shapes as ``TransformerEncoderLayer``.
    Parameters ``layers.{i}.*`` and ``norm.*``, so a PyTorch encoder's ``state_dict`` loads as is.
    ``enable_nested_tensor`` and ``mask_check`` are accepted for PyTorch's signature (PyTorch's nested-tensor fast
    path is an inference optimisation; here padded positions are computed like the others).
    Each copy's dropout draws its own masks (their generators are reseeded from ``seed``)."""

    def __init__(self, encoder_layer: Module, num_layers: int, norm: Optional[Module] = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True, *, seed: Any = None) -> None:
        super().__init__()
        if not isinstance(encoder_layer, Module):
            raise TypeError(f"TransformerEncoder: expected encoder_layer to be a Module (a TransformerEncoderLayer), "
                            f"got {type(encoder_layer).__name__}")
        _check_num_layers("TransformerEncoder", num_layers)
        self.layers = _clones(encoder_layer, num_layers, generator(seed))
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor, self.mask_check = bool(enable_nested_tensor), bool(mask_check)
        FlatBuffer.pack(self.parameters())

    def forward(self, src: Any, mask: Any = None, src_key_padding_mask: Any = None,
                is_causal: Optional[bool] = None) -> Any:
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        return x if self.norm is None else self.norm(x)


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple((x.data if isinstance(x, Tensor) else x).shape)


class TransformerDecoderLayer(_FeedForwardLayer):
    """One decoder layer of "Attention Is All You Need" (Vaswani et al., 2017), ``torch.nn.TransformerDecoderLayer``'s
    defaults, layout and parameter names:

    post-norm (``norm_first=False``): ``x = norm1(x + sa(x)); x = norm2(x + ca(x, memory)); x = norm3(x + ff(x))``;
    pre-norm (``norm_first=True``): ``x = x + sa(norm1(x)); x = x + ca(norm2(x), memory); x = x + ff(norm3(x))``,
    with ``sa(x) = dropout1(self_attn(x, x, x)[0])``, ``ca(x, m) = dropout2(multihead_attn(x, m, m)[0])`` and
    ``ff(x) = dropout3(linear2(dropout(activation(linear1(x)))))``.

    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)``: tgt (T, N, E), memory (S, N, E)
    (``batch_first``: (N, T, E), (N, S, E); unbatched (T, E), (S, E)) -> tgt's shape. Masks as in
    ``MultiheadAttention`` (bool True = ignore, or float added): ``tgt_mask`` (T, T) or (N*nhead, T, T),
    ``memory_mask`` (T, S) or (N*nhead, T, S), ``tgt_key_padding_mask`` (N, T), ``memory_key_padding_mask`` (N, S);
    ``*_is_causal`` are PyTorch's hints that the mask is the causal one (they need the mask). ``activation``:
    ``"relu"``, ``"gelu"`` (exact) or a callable on Tensors. Parameters ``self_attn.*``, ``multihead_attn.*``,
    ``linear1.*``, ``linear2.*``, ``norm1.*``, ``norm2.*``, ``norm3.*``. Raises ``ShapeError`` / ``DTypeError``
    naming the layer (and the attention block and mask) for inputs or masks of the wrong shape or dtype.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: Union[str, Callable[[Any], Any]] = "relu", layer_norm_eps: float = 1e-5,
                 batch_first: bool = False, norm_first: bool = False, bias: bool = True, *,
                 backend: BackendLike = None, dtype: Any = None, seed: Any = None) -> None:
        super().__init__()
        _check_activation("TransformerDecoderLayer", activation)
        rng = generator(seed)
        kw = dict(backend=backend, dtype=dtype)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            seed=rng, **kw)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first, seed=rng, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, seed=rng, **kw)
        self.dropout = Dropout(dropout, seed=int(rng.integers(2**31)))
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, seed=rng, **kw)
        self.norm_first, self.batch_first = bool(norm_first), bool(batch_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1 = Dropout(dropout, seed=int(rng.integers(2**31)))
        self.dropout2 = Dropout(dropout, seed=int(rng.integers(2**31)))
        self.dropout3 = Dropout(dropout, seed=int(rng.integers(2**31)))
        self._set_activation(activation)
        self.d_model, self.nhead, self.dim_feedforward = d_model, nhead, dim_feedforward
        FlatBuffer.pack(self.parameters())

    def _check_inputs(self, tgt: Any, memory: Any) -> None:
        """tgt and memory: both batched (3-D) or both unbatched (2-D), one batch size, E = d_model."""
        ts, ms = _shape_of(tgt), _shape_of(memory)
        want = ("(N, {}, E)" if self.batch_first else "({}, N, E)") if len(ts) == 3 else "({}, E)"
        for name, shape, length in (("tgt", ts, "T"), ("memory", ms, "S")):
            if len(shape) != len(ts) or len(shape) not in (2, 3) or shape[-1] != self.d_model:
                raise ShapeError(f"{self._where()}: expected {name} of shape {want.format(length)} with E = d_model = "
                                 f"{self.d_model} (tgt and memory both batched 3-D or both unbatched 2-D), got tgt "
                                 f"{ts} and memory {ms}")
        axis = 0 if self.batch_first else 1
        if len(ts) == 3 and ts[axis] != ms[axis]:
            raise ShapeError(f"{self._where()}: expected tgt and memory of one batch size N (axis {axis}), got tgt "
                             f"{ts} and memory {ms}")

    def _attend(self, attn: MultiheadAttention, block: str, x: Any, mem: Any, mask: Any, kpm: Any, is_causal: bool,
                names: tuple[str, str]) -> Any:
        """``attn(x, mem, mem)``'s output; a mask error is re-raised naming this layer, the block and the mask."""
        try:
            return attn(x, mem, mem, attn_mask=mask, key_padding_mask=kpm, need_weights=False,
                        is_causal=is_causal)[0]
        except (ShapeError, DTypeError, ValueError) as exc:
            raise type(exc)(f"{self._where()}, {block} ({names[0]} is its attn_mask, {names[1]} its "
                            f"key_padding_mask): {exc}") from exc

    def _sa_block(self, x: Any, attn_mask: Any, key_padding_mask: Any, is_causal: bool) -> Any:
        return self.dropout1(self._attend(self.self_attn, "self-attention", x, x, attn_mask, key_padding_mask,
                                          is_causal, ("tgt_mask", "tgt_key_padding_mask")))

    def _mha_block(self, x: Any, mem: Any, attn_mask: Any, key_padding_mask: Any, is_causal: bool) -> Any:
        return self.dropout2(self._attend(self.multihead_attn, "cross-attention", x, mem, attn_mask,
                                          key_padding_mask, is_causal, ("memory_mask", "memory_key_padding_mask")))

    def _ff_block(self, x: Any) -> Any:
        return self.dropout3(self._feed_forward(x))

    def forward(self, tgt: Any, memory: Any, tgt_mask: Any = None, memory_mask: Any = None,
                tgt_key_padding_mask: Any = None, memory_key_padding_mask: Any = None, tgt_is_causal: bool = False,
                memory_is_causal: bool = False) -> Any:
        self._check_inputs(tgt, memory)
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            return x + self._ff_block(self.norm3(x))
        x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
        x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
        return self.norm3(x + self._ff_block(x))


class TransformerDecoder(Module):
    """A stack of ``num_layers`` copies of ``decoder_layer`` (``torch.nn.TransformerDecoder``; copies start from the
    layer's weights, each draws its own dropout masks), then ``norm`` if given. ``forward(tgt, memory, tgt_mask=None,
    memory_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None, tgt_is_causal=None,
    memory_is_causal=False)`` passes the masks and hints to every layer (``tgt_is_causal=None`` = False); shapes as
    ``TransformerDecoderLayer``. Parameters ``layers.{i}.*`` and ``norm.*``, so a PyTorch decoder's ``state_dict``
    loads as is."""

    def __init__(self, decoder_layer: Module, num_layers: int, norm: Optional[Module] = None, *,
                 seed: Any = None) -> None:
        super().__init__()
        if not isinstance(decoder_layer, Module):
            raise TypeError(f"TransformerDecoder: expected decoder_layer to be a Module (a TransformerDecoderLayer), "
                            f"got {type(decoder_layer).__name__}")
        _check_num_layers("TransformerDecoder", num_layers)
        self.layers = _clones(decoder_layer, num_layers, generator(seed))
        self.num_layers = num_layers
        self.norm = norm
        FlatBuffer.pack(self.parameters())

    def forward(self, tgt: Any, memory: Any, tgt_mask: Any = None, memory_mask: Any = None,
                tgt_key_padding_mask: Any = None, memory_key_padding_mask: Any = None,
                tgt_is_causal: Optional[bool] = None, memory_is_causal: bool = False) -> Any:
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask, tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=bool(tgt_is_causal),
                      memory_is_causal=bool(memory_is_causal))
        return x if self.norm is None else self.norm(x)


class Transformer(Module):
    """The encoder-decoder transformer of "Attention Is All You Need" (Vaswani et al., 2017), ``torch.nn.Transformer``'s
    signature, defaults and parameter names (``encoder.layers.{i}.*``, ``encoder.norm.*``, ``decoder.layers.{i}.*``,
    ``decoder.norm.*``: a PyTorch model's ``state_dict`` loads as is): a ``TransformerEncoder`` of
    ``num_encoder_layers`` ``TransformerEncoderLayer``s and a final LayerNorm, and a ``TransformerDecoder`` likewise
    (or ``custom_encoder`` / ``custom_decoder``). Every weight matrix (parameters with 2 or more axes) is re-drawn
    Xavier-uniform, as PyTorch's ``_reset_parameters``.

    ``forward(src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
    memory_is_causal=False)``: src (S, N, E), tgt (T, N, E) (``batch_first``: (N, S, E), (N, T, E); unbatched
    (S, E), (T, E)) -> (T, N, E) (tgt's shape); ``memory = encoder(src, ...)``, ``decoder(tgt, memory, ...)``.
    Raises ``ShapeError`` naming the model when src and tgt differ in batch size or their last axis is not d_model.
    """

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: Union[str, Callable[[Any], Any]] = "relu", custom_encoder: Optional[Module] = None,
                 custom_decoder: Optional[Module] = None, layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, *, backend: BackendLike = None, dtype: Any = None,
                 seed: Any = None) -> None:
        super().__init__()
        rng = generator(seed)
        kw = dict(backend=backend, dtype=dtype)
        layer_kw = dict(dim_feedforward=dim_feedforward, dropout=dropout, activation=activation,
                        layer_norm_eps=layer_norm_eps, batch_first=batch_first, norm_first=norm_first, bias=bias,
                        **kw)
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            layer = TransformerEncoderLayer(d_model, nhead, seed=rng, **layer_kw)
            self.encoder = TransformerEncoder(layer, num_encoder_layers, LayerNorm(d_model, eps=layer_norm_eps,
                                                                                   bias=bias, **kw), seed=rng)
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            layer = TransformerDecoderLayer(d_model, nhead, seed=rng, **layer_kw)
            self.decoder = TransformerDecoder(layer, num_decoder_layers, LayerNorm(d_model, eps=layer_norm_eps,
                                                                                   bias=bias, **kw), seed=rng)
        for p in self.parameters():
            if p.ndim > 1:
                init.xavier_uniform(p, seed=rng)
        self.d_model, self.nhead, self.batch_first = d_model, nhead, bool(batch_first)
        FlatBuffer.pack(self.parameters())

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, nhead={self.nhead}, batch_first={self.batch_first}"

    def forward(self, src: Any, tgt: Any, src_mask: Any = None, tgt_mask: Any = None, memory_mask: Any = None,
                src_key_padding_mask: Any = None, tgt_key_padding_mask: Any = None,
                memory_key_padding_mask: Any = None, src_is_causal: Optional[bool] = None,
                tgt_is_causal: Optional[bool] = None, memory_is_causal: bool = False) -> Any:
        ss, ts = _shape_of(src), _shape_of(tgt)
        axis = 0 if self.batch_first else 1
        if len(ss) == 3 and (len(ts) != 3 or ss[axis] != ts[axis]):
            raise ShapeError(f"{self._where()}: expected src and tgt of one batch size N (axis {axis}), got src {ss} "
                             f"and tgt {ts}")
        if ss[-1] != self.d_model or ts[-1] != self.d_model:
            raise ShapeError(f"{self._where()}: expected src and tgt with E = d_model = {self.d_model} features (last "
                             f"axis), got src {ss} and tgt {ts}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                            memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz: int, backend: BackendLike = None, dtype: Any = None) -> Any:
        """The float causal mask (sz, sz) of ``torch.nn.Transformer.generate_square_subsequent_mask``: -inf above
        the diagonal (position i may not attend j > i), 0 on and below it. ``backend`` (PyTorch's ``device``):
        as in ``xpnn.get_backend``; ``dtype``: default float32 (give the model's dtype: a float mask is added to
        its scores)."""
        xp = get_backend(backend).xp
        dt = resolve_dtype(xp, dtype)
        return xp.where(F.triu_mask(sz, sz, 1, backend=backend), xp.asarray(-math.inf, dtype=dt),
                        xp.asarray(0.0, dtype=dt))
