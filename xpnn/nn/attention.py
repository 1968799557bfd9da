"""``MultiheadAttention``: PyTorch's ``torch.nn.MultiheadAttention`` (parameters ``in_proj_weight`` (3E, E),
``in_proj_bias`` (3E,), ``out_proj.weight`` (E, E), ``out_proj.bias`` (E,), so its ``state_dict`` loads as is) over
``xpnn.functional.scaled_dot_product_attention``."""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from .. import functional as F
from .. import init
from .._tensor import Tensor
from ..backend import BackendLike, dtype_name, namespace_of
from ..errors import DTypeError, ShapeError
from ..functional.dropout import make_rng
from .linear import Linear
from .explicit import Module
from .parameter import FlatBuffer, Parameter, factory

__all__ = ["MultiheadAttention"]


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


class MultiheadAttention(Module):
    """Multi-head attention (Vaswani et al., 2017) with PyTorch's layout, defaults and forward signature.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) -> (attn_output, attn_weights or None)``:
    query (L, N, E) (``batch_first``: (N, L, E); unbatched: (L, E)), key/value (S, N, E) likewise ->
    attn_output of query's shape. ``key_padding_mask`` (N, S) and ``attn_mask`` (L, S) or (N*num_heads, L, S):
    bool with **True = ignore** (PyTorch's convention here, the opposite of ``scaled_dot_product_attention``'s), or
    float added to the scores. ``attn_weights``: (N, L, S) averaged over heads, (N, num_heads, L, S) with
    ``average_attn_weights=False`` (after dropout, as PyTorch returns them). ``need_weights=False`` takes the
    ``scaled_dot_product_attention`` op (no weights materialised beyond it). ``is_causal`` is PyTorch's hint that
    ``attn_mask`` is the causal mask (it needs ``attn_mask``).

    ``kdim``/``vdim`` (key (S, N, kdim), value (S, N, vdim)): when either differs from ``embed_dim``
    (``_qkv_same_embed_dim`` False) the projections are separate, ``q_proj_weight`` (E, E), ``k_proj_weight``
    (E, kdim), ``v_proj_weight`` (E, vdim), as PyTorch's (``in_proj_weight`` is then ``None``; ``in_proj_bias`` stays
    (3E,)). ``add_bias_kv``: learned ``bias_k``, ``bias_v`` (1, 1, E) appended to the projected keys and values as one
    more key position; ``add_zero_attn``: a zero key and value appended after the head split (both as in
    ``torch.nn.functional.multi_head_attention_forward``; the masks get an attended column for each, and the
    weights have S + 1 or S + 2 columns).

    Parameters initialised as PyTorch: the input projections Xavier-uniform, biases 0, ``bias_k``/``bias_v``
    Xavier-normal, ``out_proj.weight`` like a ``Linear``. PyTorch's constructor signature. Raises ``ValueError`` when
    ``embed_dim`` is not divisible by ``num_heads``; ``ShapeError`` / ``DTypeError`` naming the layer for inputs or
    masks of the wrong shape or dtype.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: Optional[int] = None,
                 vdim: Optional[int] = None, batch_first: bool = False, *, backend: BackendLike = None,
                 dtype: Any = None, seed: Any = None) -> None:
        super().__init__()
        kdim = embed_dim if kdim is None else kdim
        vdim = embed_dim if vdim is None else vdim
        for name, val in (("embed_dim", embed_dim), ("num_heads", num_heads), ("kdim", kdim), ("vdim", vdim)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"MultiheadAttention: {name} must be a positive integer, got {val!r}")
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention(embed_dim={embed_dim}, num_heads={num_heads}): embed_dim must be "
                             f"divisible by num_heads (head_dim = embed_dim / num_heads), got {embed_dim} / "
                             f"{num_heads}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be a probability in [0, 1), got {dropout!r}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = float(dropout), bool(batch_first)
        self.kdim, self.vdim = kdim, vdim
        self._qkv_same_embed_dim = kdim == embed_dim and vdim == embed_dim
        self.add_zero_attn = bool(add_zero_attn)
        be, dt, rng = factory(backend, dtype, seed)

        def param(shape: tuple[int, ...], fill: Any) -> Parameter:
            w = np.zeros(shape)
            if fill is not None:
                fill(w, seed=rng)
            return Parameter(be.asarray(w, dtype=dt))
        if self._qkv_same_embed_dim:
            self.in_proj_weight = param((3 * embed_dim, embed_dim), init.xavier_uniform)
            self.q_proj_weight = self.k_proj_weight = self.v_proj_weight = None
        else:
            self.q_proj_weight = param((embed_dim, embed_dim), init.xavier_uniform)
            self.k_proj_weight = param((embed_dim, kdim), init.xavier_uniform)
            self.v_proj_weight = param((embed_dim, vdim), init.xavier_uniform)
            self.in_proj_weight = None
        self.in_proj_bias = param((3 * embed_dim,), None) if bias else None
        if add_bias_kv:
            self.bias_k = param((1, 1, embed_dim), init.xavier_normal)
            self.bias_v = param((1, 1, embed_dim), init.xavier_normal)
        else:
            self.bias_k = self.bias_v = None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, backend=be, dtype=dt, seed=rng)
        if bias:
            self.out_proj.bias.data[...] = 0
        self._seed = int(rng.integers(2**31))
        self._rngs: dict[int, Any] = {}
        FlatBuffer.pack(self.parameters())

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"

    def _rng(self, xp: Any) -> Any:
        rng = self._rngs.get(id(xp))
        if rng is None:
            rng = self._rngs[id(xp)] = make_rng(xp, self._seed)
        return rng

    def _check_input(self, name: str, x: Any, batched: bool) -> None:
        e, dim = {"query": ("E", self.embed_dim), "key": ("kdim", self.kdim), "value": ("vdim", self.vdim)}[name]
        want = ("(N, L, E)" if self.batch_first else "(L, N, E)") if batched else "(L, E)"
        if name != "query":
            want = want.replace("L", "S").replace("E", e)
        if x.ndim != (3 if batched else 2) or x.shape[-1] != dim:
            raise ShapeError(f"{self._where()}: expected {name} of shape {want} with {e} = {dim} (batched "
                             f"3-D or unbatched 2-D, like the query), got {tuple(x.shape)}")
        dt = self.out_proj.weight.data.dtype
        if x.dtype != dt:
            raise DTypeError(f"{self._where()}: expected {name} of dtype {dtype_name(dt)} (the parameters' dtype), "
                             f"got {dtype_name(x.dtype)}")

    def _mask(self, name: str, mask: Any, shapes: tuple[tuple[int, ...], ...], dtype: Any) -> Any:
        """``mask`` (array or Tensor) checked against the allowed ``shapes`` and dtypes (bool or ``dtype``)."""
        m = _data(mask)
        xp = namespace_of(m, where=self._where())
        if not (xp.isdtype(m.dtype, "bool") or m.dtype == dtype):
            raise DTypeError(f"{self._where()}: expected {name} of dtype bool (True = ignore) or {dtype_name(dtype)} "
                             f"(added to the scores), got {dtype_name(m.dtype)}")
        if tuple(m.shape) not in shapes:
            raise ShapeError(f"{self._where()}: expected {name} of shape "
                             f"{' or '.join(str(s) for s in shapes)}, got {tuple(m.shape)}")
        return mask

    def forward(self, query: Any, key: Any, value: Any, key_padding_mask: Any = None, need_weights: bool = True,
                attn_mask: Any = None, average_attn_weights: bool = True, is_causal: bool = False
                ) -> tuple[Any, Optional[Any]]:
        batched = _data(query).ndim == 3
        for name, x in (("query", query), ("key", key), ("value", value)):
            self._check_input(name, _data(x), batched)
        h, d, e = self.num_heads, self.head_dim, self.embed_dim
        given = tuple(tuple(_data(x).shape) for x in (query, key, value))
        if batched and not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = (F.permute_dims(x, (1, 0, 2)) for x in (query, key, value))
        elif not batched:
            query, key, value = (F.reshape(x, (1,) + tuple(x.shape)) for x in (query, key, value))
        n, n_q, n_k = int(query.shape[0]), int(query.shape[1]), int(key.shape[1])
        if tuple(key.shape[:2]) != tuple(value.shape[:2]) or int(key.shape[0]) != n:
            raise ShapeError(f"{self._where()}: expected key and value of one length S with the query's batch size "
                             f"{n}, got query {given[0]}, key {given[1]} and value {given[2]}")
        if is_causal and attn_mask is None:
            raise ValueError(f"{self._where()}: is_causal=True is a hint that attn_mask is the causal mask; pass "
                             "attn_mask too (PyTorch's rule)")
        dt = self.out_proj.weight.data.dtype
        mask = None  # for scaled_dot_product_attention: bool True = attend, or float added; (N|1, H|1, L, S)
        if key_padding_mask is not None:
            kpm = self._mask("key_padding_mask", key_padding_mask, ((n, n_k),) if batched else ((n_k,), ), dt)
            mask = F.reshape(kpm, (n, 1, 1, n_k))
        if attn_mask is not None:
            am = self._mask("attn_mask", attn_mask, ((n_q, n_k), (n * h, n_q, n_k)), dt)
            am = F.reshape(am, (n, h, n_q, n_k)) if _data(am).ndim == 3 else am
            mask = am if mask is None else _merge(mask, am, dt)
        extra = (self.bias_k is not None) + self.add_zero_attn  # key positions appended below
        if mask is not None and extra:
            m = _data(mask)
            pad = namespace_of(m).zeros(tuple(m.shape[:-1]) + (extra,), dtype=m.dtype)  # False / 0: attended
            mask = F.concat([mask, pad], axis=-1)
        if mask is not None:
            m = _data(mask)
            xp = namespace_of(m)
            if xp.isdtype(m.dtype, "bool"):
                mask = ~m  # True = ignore -> True = attend
        w, b = self.in_proj_weight, self.in_proj_bias
        heads = []
        for i, x in enumerate((query, key, value)):
            if self._qkv_same_embed_dim:
                wi = F.index(w, (slice(i * e, (i + 1) * e), slice(None)))
            else:
                wi = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[i]
            bi = None if b is None else F.index(b, (slice(i * e, (i + 1) * e),))
            y = F.linear(x, wi, bi)  # (N, L, E) -> (N, H, L, D)
            if i and self.bias_k is not None:  # bias_k / bias_v as one more key position
                y = F.concat([y, F.broadcast_to((self.bias_k, self.bias_v)[i - 1], (n, 1, e))], axis=1)
            y = F.permute_dims(F.reshape(y, (n, int(y.shape[1]), h, d)), (0, 2, 1, 3))
            if i and self.add_zero_attn:  # a zero key and value
                y = F.concat([y, namespace_of(_data(y)).zeros((n, h, 1, d), dtype=dt)], axis=2)
            heads.append(y)
        q, k, v = heads
        p_drop = self.dropout if self.training else 0.0
        weights = None
        if need_weights:  # PyTorch's math path: the weights are an output
            s = F.mul(F.matmul(q, F.permute_dims(k, (0, 1, 3, 2))), 1.0 / math.sqrt(d))
            if mask is not None:
                m = _data(mask)
                if namespace_of(m).isdtype(m.dtype, "bool"):
                    xp = namespace_of(m)
                    mask = xp.where(m, xp.asarray(0.0, dtype=dt), xp.asarray(-math.inf, dtype=dt))
                s = F.add(s, mask)
            weights = F.softmax(s, axis=-1)
            if p_drop > 0.0:
                weights = F.dropout(weights, p_drop, rng=self._rng(namespace_of(_data(weights))))
            out = F.matmul(weights, v)
            if average_attn_weights:
                weights = F.mean(weights, axis=1)
            if not batched:
                weights = F.reshape(weights, tuple(weights.shape)[1:])
        else:
            rng = self._rng(namespace_of(_data(q))) if p_drop > 0.0 else None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop, rng=rng)
        out = F.reshape(F.permute_dims(out, (0, 2, 1, 3)), (n, n_q, e))
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        if not batched:
            out = F.reshape(out, (n_q, e))
        elif not self.batch_first:
            out = F.permute_dims(out, (1, 0, 2))
        return out, weights


def _merge(a: Any, b: Any, dtype: Any) -> Any:
    """Two masks in PyTorch's convention (bool True = ignore, or float added) as one: bool when both are bool
    (ignored where either ignores), else their float sum (a bool as -inf where True)."""
    da, db = _data(a), _data(b)
    xp = namespace_of(da, db)
    if xp.isdtype(da.dtype, "bool") and xp.isdtype(db.dtype, "bool"):
        return da | db

    def as_float(m: Any) -> Any:
        d = _data(m)
        if xp.isdtype(d.dtype, "bool"):
            return xp.where(d, xp.asarray(-math.inf, dtype=dtype), xp.asarray(0.0, dtype=dtype))
        return m
    return F.add(as_float(a), as_float(b))
