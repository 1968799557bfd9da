"""``TransformerEncoderLayer``: PyTorch's ``torch.nn.TransformerEncoderLayer`` (self-attention and a feed-forward
block, each with a residual connection and LayerNorm, post-norm or ``norm_first``), with its parameter names, so its
``state_dict`` loads as is; ``TransformerEncoder``: a stack of copies of one such layer (``torch.nn.TransformerEncoder``,
``layers.{i}.*`` and ``norm.*``)."""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Union

from .. import functional as F
from ..backend import BackendLike
from ..random import generator
from .attention import MultiheadAttention
from .dropout import Dropout
from .linear import Linear
from .container import ModuleList
from .explicit import Module
from .layernorm import LayerNorm
from .parameter import FlatBuffer

__all__ = ["TransformerEncoderLayer", "TransformerEncoder"]

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class TransformerEncoderLayer(Module):
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
        if isinstance(activation, str) and activation not in _ACTIVATIONS:
            raise ValueError(f"TransformerEncoderLayer: activation must be 'relu', 'gelu' or a callable, got "
                             f"{activation!r}")
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
        self.activation_name = activation if isinstance(activation, str) else getattr(activation, "__name__", "fn")
        self._activation = _ACTIVATIONS[activation] if isinstance(activation, str) else activation
        self.d_model, self.nhead, self.dim_feedforward = d_model, nhead, dim_feedforward
        FlatBuffer.pack(self.parameters())

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, nhead={self.nhead}, dim_feedforward={self.dim_feedforward}, "
                f"activation={self.activation_name}, norm_first={self.norm_first}")

    def _sa_block(self, x: Any, attn_mask: Any, key_padding_mask: Any, is_causal: bool) -> Any:
        y = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                           is_causal=is_causal)[0]
        return self.dropout1(y)

    def _ff_block(self, x: Any) -> Any:
        h = self.dropout(self._activation(F.linear(x, self.linear1.weight, self.linear1.bias)))
        return self.dropout2(F.linear(h, self.linear2.weight, self.linear2.bias))

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
        if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
            raise ValueError(f"TransformerEncoder: num_layers must be a positive integer, got {num_layers!r}")
        rng = generator(seed)
        layers = []
        for _ in range(num_layers):
            layer = copy.deepcopy(encoder_layer)
            for m in layer.modules():  # fresh dropout generators per copy (a deep copy would repeat the masks)
                if isinstance(getattr(m, "_rngs", None), dict):
                    m._rngs = {}
                    m._seed = int(rng.integers(2**31))
            layers.append(layer)
        self.layers = ModuleList(layers)
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
