"""Scaled dot-product attention (Vaswani et al., 2017), with the semantics of
``torch.nn.functional.scaled_dot_product_attention``, declared once as the op ``scaled_dot_product_attention``:

    S = q @ k^T * scale + bias        (..., L, S)
    P = softmax(S, axis=-1)           rows whose keys are all masked out give P = 0 (PyTorch's "safe softmax")
    out = (P * dropout_mask) @ v      (..., L, Ev)

``bias`` is 0 / -inf from a bool ``attn_mask`` (True = attend) or from ``is_causal`` (query i attends keys j <= i,
the upper-left aligned lower triangle, as in PyTorch), or a float ``attn_mask`` added as is.
The bias is added, as PyTorch adds it (its math path and its CPU kernels alike): a NaN score of a key that a query
cannot see still makes that query's row NaN, as in PyTorch (the ONNX lowering's ``Where`` keeps such a row finite).

Memory of the generic (array-API) path, per (batch, head): the forward materialises one (L, S) block, the scores,
turned in place into the probabilities P, which are kept for backward (the reference cannot do with less without
a fused kernel); with dropout the (L, S) dropout mask is a second block (as in PyTorch's math path). Its backward
materialises one more (L, S) block (dP, turned in place into dS; with dropout a transient P * mask for dv). The
row statistic ``delta = rowsum(dP * P) = rowsum(g * out)`` is taken from the output, as FlashAttention does.

A fused kernel may replace ``forward`` (``Op.kernel`` or ``register_override``); it then needs to save only what
``save`` saves (q, k, v, mask, out): without ``ctx.probs`` the backward recomputes P block-free from q and k.
Without a mask and dropout, the forward asks ``_dispatch.lookup(registry.FLASH_ATTENTION, ...)`` for the fused
FlashAttention-style kernel (``kernels/attention.cu``, as ``losses`` asks for the fused cross-entropy): it returns
out and the rows' log-sum-exp ``lse`` (saved as ``ctx.lse``), and never materialises an (L, S) block; the array
backward then runs ``registry.FLASH_ATTENTION_BACKWARD``, which recomputes P tile by tile from q, k and lse.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from .. import _dispatch
from .._cuda import registry
from ..autograd import op as _op
from ..autograd.op import Context, Op
from ..backend import dtype_name, is_cupy_namespace, is_numpy_namespace, namespace_of
from ..errors import DTypeError, ShapeError
from .dropout import dropout_mask as _dropout_mask, make_rng
from .elementwise import _mT, matmul, mul
from .shape import index, sum_to
from .softmax import softmax, softmax_backward

__all__ = ["scaled_dot_product_attention"]

_WHERE = "scaled_dot_product_attention"


def _broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> Optional[tuple[int, ...]]:
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            return None
        out.append(y if x == 1 else x)
    return tuple(out)


def _check(q: Any, k: Any, v: Any, attn_mask: Any = None, *, is_causal: bool = False, scale: float = 1.0,
           dropout_mask: Any = None) -> Any:
    """Shapes, dtypes and namespaces of a call (errors name the op, the expected and the given)."""
    xp = namespace_of(q, k, v, *(() if attn_mask is None else (attn_mask,)), where=_WHERE)
    if not xp.isdtype(q.dtype, "real floating"):
        raise DTypeError(f"{_WHERE}: expected floating query, key and value, got query of dtype {dtype_name(q.dtype)}")
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise DTypeError(f"{_WHERE}: query, key and value must have one dtype, got {dtype_name(q.dtype)}, "
                         f"{dtype_name(k.dtype)} and {dtype_name(v.dtype)}")
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ShapeError(f"{_WHERE}: expected query (..., L, E), key (..., S, E) and value (..., S, Ev), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"{_WHERE}: expected query (..., L, E), key (..., S, E) and value (..., S, Ev) with one E and "
                         f"one S, got {tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}")
    batch = _broadcast_shape(tuple(q.shape[:-2]), tuple(k.shape[:-2]))
    batch = None if batch is None else _broadcast_shape(batch, tuple(v.shape[:-2]))
    if batch is None:
        raise ShapeError(f"{_WHERE}: the batch axes of query {tuple(q.shape)}, key {tuple(k.shape)} and value "
                         f"{tuple(v.shape)} do not broadcast together")
    scores = batch + (int(q.shape[-2]), int(k.shape[-2]))
    if attn_mask is not None:
        if is_causal:
            raise ValueError(f"{_WHERE}: pass attn_mask or is_causal=True, not both (PyTorch's rule: fold the causal "
                             "mask into attn_mask)")
        if not (xp.isdtype(attn_mask.dtype, "bool") or attn_mask.dtype == q.dtype):
            raise DTypeError(f"{_WHERE}: expected attn_mask of dtype bool (True = attend) or {dtype_name(q.dtype)} "
                             f"(the query's, added to the scores), got {dtype_name(attn_mask.dtype)}")
        if attn_mask.ndim < 1 or _broadcast_shape(tuple(attn_mask.shape), scores) != scores:
            raise ShapeError(f"{_WHERE}: expected attn_mask broadcastable to the attention scores' shape {scores} "
                             f"(batch..., L, S), got {tuple(attn_mask.shape)}")
    if dropout_mask is not None and _broadcast_shape(tuple(dropout_mask.shape), scores) != scores:
        raise ShapeError(f"{_WHERE}: expected a dropout mask of shape {scores}, got {tuple(dropout_mask.shape)}")
    return xp


def _bias(xp: Any, attn_mask: Any, is_causal: bool, n_q: int, n_k: int, dtype: Any) -> tuple[Any, Any]:
    """(bias, keep): the additive mask (0 / -inf for bool masks and ``is_causal``; a float mask as is; ``None`` for
    no mask) with rows that mask every key set to 0, and ``keep`` (1.0 / 0.0 per row, shape (..., L, 1)) zeroing those
    rows' probabilities afterwards, or ``None`` when no row is fully masked. Only the mask's own shape is allocated."""
    if is_causal:
        i = xp.arange(n_q)[:, None]
        j = xp.arange(n_k)[None, :]
        allowed = j <= i
    elif attn_mask is None:
        return None, None
    elif xp.isdtype(attn_mask.dtype, "bool"):
        allowed = attn_mask
    else:
        allowed = attn_mask != -math.inf
        dead = ~xp.any(allowed, axis=-1, keepdims=True)
        if not bool(xp.any(dead)):
            return attn_mask, None
        return xp.where(dead, xp.zeros_like(attn_mask), attn_mask), xp.astype(~dead, dtype)
    dead = ~xp.any(allowed, axis=-1, keepdims=True)
    zero, ninf = xp.asarray(0.0, dtype=dtype), xp.asarray(-math.inf, dtype=dtype)
    if bool(xp.any(dead)):
        return xp.where(allowed | dead, zero, ninf), xp.astype(~dead, dtype)
    return xp.where(allowed, zero, ninf), None


def _softmax_rows(xp: Any, s: Any) -> Any:
    """softmax over the last axis of the (fresh) score array ``s``, in place where the namespace allows (NumPy,
    CuPy); float16 in float32."""
    if s.shape[-1] == 0:  # no keys (S = 0): no probabilities, the output is 0 (as PyTorch's)
        return s
    half = getattr(xp, "float16", None)
    if half is not None and s.dtype == half:
        return xp.astype(_softmax_rows(xp, xp.astype(s, xp.float32)), half)
    if type(s) is np.ndarray:  # NumPy's fmax reduction is ~1.5x faster than max over short rows; a row with a NaN
        s -= np.fmax.reduce(s, axis=-1, keepdims=True)  # ends all NaN either way (NaN - m, then the NaN row sum)
    else:
        s -= xp.max(s, axis=-1, keepdims=True)
    if (is_numpy_namespace(xp) and isinstance(s, np.ndarray)) or is_cupy_namespace(xp):
        xp.exp(s, out=s)  # (NumPy and CuPy take out=; the standard has no in-place exp)
    else:
        s = xp.exp(s)
    s /= xp.sum(s, axis=-1, keepdims=True)
    return s


class ScaledDotProductAttention(Op):
    """q (..., L, E), k (..., S, E), v (..., S, Ev), attn_mask (broadcastable to (..., L, S)) or None ->
    (..., L, Ev). Parameters: ``is_causal``, ``scale`` (a float), ``dropout_mask`` (an (..., L, S) array of 0 and
    1/(1-p), or None). See the module docstring for the math and what is materialised."""

    name = "scaled_dot_product_attention"
    check = staticmethod(_check)

    @staticmethod
    def forward(ctx: Context, q: Any, k: Any, v: Any, attn_mask: Any = None, *, is_causal: bool = False,
                scale: float = 1.0, dropout_mask: Any = None) -> Any:
        xp = namespace_of(q, k, v)
        fused = _dispatch.lookup(registry.FLASH_ATTENTION, xp, q.dtype) if attn_mask is None and \
            dropout_mask is None else None
        res = NotImplemented if fused is None else fused(q, k, v, is_causal=is_causal, scale=scale)
        if res is not NotImplemented:
            out, ctx.lse = res
            ScaledDotProductAttention.save(ctx, out, q, k, v, attn_mask, is_causal=is_causal, scale=scale,
                                           dropout_mask=dropout_mask)
            return out
        s = q @ _mT(k)  # the one (L, S) block
        s *= scale
        bias, keep = _bias(xp, attn_mask, is_causal, int(q.shape[-2]), int(k.shape[-2]), q.dtype)
        if bias is not None:
            if _broadcast_shape(tuple(bias.shape), tuple(s.shape)) == tuple(s.shape):
                s += bias
            else:  # (value's batch axes broadcast the scores further)
                s = s + bias
        p = _softmax_rows(xp, s)
        if keep is not None:
            p *= keep
        out = (p if dropout_mask is None else p * dropout_mask) @ v
        ScaledDotProductAttention.save(ctx, out, q, k, v, attn_mask, is_causal=is_causal, scale=scale,
                                       dropout_mask=dropout_mask)
        ctx.probs = p
        return out

    @staticmethod
    def onnx(g: Any, q: str, k: str, v: str, attn_mask: Optional[str] = None, *, is_causal: bool = False,
             scale: float = 1.0, dropout_mask: Any = None) -> str:
        """``MatMul``, ``Mul`` by the scale, the mask (``Where`` for bool and ``is_causal``, ``Add`` for float),
        ``Softmax`` (in float32 for float16), ``MatMul``; dropout is off in an exported (eval) model. A query whose
        keys are all masked out gives NaN there (``Softmax`` of a row of -inf), not 0."""
        nq, nk = len(g.shape(q)), len(g.shape(k))
        kt = g.op("Transpose", k, perm=list(range(nk - 2)) + [nk - 1, nk - 2])
        s = g.op("Mul", g.op("MatMul", q, kt), g.const(scale, dtype=q))
        if is_causal:
            n_q, n_k = g.shape(q)[nq - 2], g.shape(k)[nk - 2]
            attn_mask = g.const(np.arange(n_k)[None, :] <= np.arange(n_q)[:, None])
        if attn_mask is not None:
            if g.dtype(attn_mask) == np.bool_:
                s = g.op("Where", attn_mask, s, g.const(-np.inf, dtype=q))
            else:
                s = g.op("Add", s, attn_mask)
        half = g.dtype(q) == np.float16
        p = g.op("Softmax", g.cast(s, np.float32) if half else s, axis=-1)
        return g.op("MatMul", g.cast(p, np.float16) if half else p, v)

    @staticmethod
    def save(ctx: Context, out: Any, q: Any, k: Any, v: Any, attn_mask: Any = None, *, is_causal: bool = False,
             scale: float = 1.0, dropout_mask: Any = None) -> None:
        ctx.save_for_backward(q, k, v, attn_mask, out)
        ctx.is_causal, ctx.scale, ctx.dropout_mask = is_causal, scale, dropout_mask

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, Any, Any, Any]:
        """``dv = (P*M)^T g``, ``dP = (g v^T) * M``, ``dS = P * (dP - rowsum(dP * P))``, ``dq = dS k * scale``,
        ``dk = dS^T q * scale``, ``d attn_mask = dS`` (summed to the mask's shape; a bool mask gets none). With
        ``create_graph`` (or after a kernel's forward) P is recomputed from q and k with ``xpnn.functional`` ops, so
        the rule is differentiable again."""
        q, k, v, attn_mask, out = ctx.saved_tensors
        need = ctx.needs_input_grad
        dm, scale = ctx.dropout_mask, ctx.scale
        p = getattr(ctx, "probs", None)
        lse = getattr(ctx, "lse", None)
        if lse is not None and not ctx.create_graph:  # after the fused forward (no mask, no dropout)
            fused = _dispatch.lookup(registry.FLASH_ATTENTION_BACKWARD, namespace_of(g), g.dtype)
            res = NotImplemented if fused is None else fused(q, k, v, out, lse, g, is_causal=ctx.is_causal,
                                                             scale=scale)
            if res is not NotImplemented:
                return (*(d if n else None for d, n in zip(res, need)), None)
        if ctx.create_graph or p is None:
            p = _probs(ctx, q, k, attn_mask)
            pd = p if dm is None else mul(p, dm)
            dp = matmul(g, _mT(v))
            if dm is not None:
                dp = mul(dp, dm)
            ds = softmax_backward(p, dp, -1)
        else:  # arrays: in place, one (L, S) block
            xp = namespace_of(g)
            pd = p if dm is None else p * dm
            ds = g @ _mT(v)
            if dm is not None:
                ds *= dm
            ds -= xp.sum(g * out, axis=-1, keepdims=True)  # rowsum(dP * P) = rowsum(g * out)
            ds *= p
        dq = sum_to(mul(matmul(ds, k), scale), tuple(q.shape)) if need[0] else None
        dk = sum_to(mul(matmul(_mT(ds), q), scale), tuple(k.shape)) if need[1] else None
        dv = sum_to(matmul(_mT(pd), g), tuple(v.shape)) if need[2] else None
        dmask = sum_to(ds, tuple(attn_mask.shape)) if len(need) > 3 and need[3] else None
        return dq, dk, dv, dmask


def _probs(ctx: Context, q: Any, k: Any, attn_mask: Any) -> Any:
    """P recomputed with ``xpnn.functional`` ops (differentiable in q, k and a float mask)."""
    xp = ctx.xp if not isinstance(q, _op.TensorBase) else namespace_of(q.data)
    mask_data = attn_mask.data if isinstance(attn_mask, _op.TensorBase) else attn_mask
    bias, keep = _bias(xp, mask_data, ctx.is_causal, int(q.shape[-2]), int(k.shape[-2]), q.dtype)
    s = mul(matmul(q, _mT(k)), ctx.scale)
    if isinstance(attn_mask, _op.TensorBase) and attn_mask.requires_grad:
        if keep is not None:
            raise NotImplementedError(f"{_WHERE}: a float attn_mask that requires grad and masks every key of some "
                                      "query row cannot be differentiated twice; detach the mask")
        s = s + attn_mask
    elif bias is not None:
        s = s + bias
    p = softmax(s, axis=-1)
    return p if keep is None else mul(p, keep)


def scaled_dot_product_attention(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = False,
                                 *, rng: Any = None, seed: Any = None) -> Any:
    """Attention ``softmax(q @ k^T * scale + mask) @ v`` (``torch.nn.functional.scaled_dot_product_attention``).

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev); the batch axes (e.g. (N, heads))
    broadcast. ``attn_mask``: bool (True = take part in attention) or of the query's dtype (added to the scores),
    broadcastable to (..., L, S). ``is_causal``: query i attends keys j <= i (not with ``attn_mask``). ``scale``:
    default ``1/sqrt(E)``. ``dropout_p``: dropout on the attention probabilities (mask drawn from ``rng``, from
    ``make_rng``, or ``seed``). A query whose keys are all masked out gives 0 (as PyTorch). Raises ``ShapeError``,
    ``DTypeError`` (naming the expected and given shapes/dtypes) and ``ValueError`` (mask with ``is_causal``).

    ``enable_gqa`` (grouped-query attention, PyTorch's flag): key and value may have fewer heads (axis -3) than the
    query, a divisor of its count; query head h then uses key/value head h // (Hq / Hkv) (PyTorch's
    ``repeat_interleave``). Here key and value are gathered to the query's head count (a copy); ``ShapeError`` when
    the counts do not divide."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float, np.integer, np.floating)) or \
            not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{_WHERE}: dropout_p must be a probability in [0, 1], got {dropout_p!r}")
    if enable_gqa:
        key, value = _repeat_kv_heads(query, key, value)
    if scale is None:
        scale = 1.0 / math.sqrt(int(query.shape[-1]))
    dm = None
    if dropout_p > 0.0:
        data = [t.data if isinstance(t, _op.TensorBase) else t for t in (query, key, value)]
        xp = namespace_of(*data, where=_WHERE)
        batch = _broadcast_shape(tuple(data[0].shape[:-2]), tuple(data[1].shape[:-2])) or ()
        shape = batch + (int(data[0].shape[-2]), int(data[1].shape[-2]))
        if dropout_p == 1.0:  # every probability dropped: the output is 0 (as PyTorch)
            dm = xp.zeros(shape, dtype=data[0].dtype)
        else:
            dm = _dropout_mask(xp, shape, float(dropout_p), data[0].dtype,
                               rng if rng is not None else make_rng(xp, seed))
    return ScaledDotProductAttention.apply(query, key, value, attn_mask, is_causal=bool(is_causal),
                                           scale=float(scale), dropout_mask=dm)


def _repeat_kv_heads(query: Any, key: Any, value: Any) -> tuple[Any, Any]:
    """``enable_gqa``: key and value with Hkv heads (axis -3) gathered to the query's Hq heads, head h from
    h // (Hq / Hkv) (a no-op when the counts are equal)."""
    if query.ndim < 3 or key.ndim < 3 or value.ndim < 3:
        raise ShapeError(f"{_WHERE}: enable_gqa=True needs query (..., Hq, L, E), key (..., Hkv, S, E) and value "
                         f"(..., Hkv, S, Ev), got {tuple(query.shape)}, {tuple(key.shape)} and {tuple(value.shape)}")
    hq, hk, hv = int(query.shape[-3]), int(key.shape[-3]), int(value.shape[-3])
    if hk != hv or hk == 0 or hq % hk:
        raise ShapeError(f"{_WHERE}: enable_gqa=True needs key and value with one head count (axis -3) that divides "
                         f"the query's {hq}, got key {tuple(key.shape)} and value {tuple(value.shape)}")
    if hk == hq:
        return key, value
    data = key.data if isinstance(key, _op.TensorBase) else key
    heads = namespace_of(data).asarray(np.repeat(np.arange(hk), hq // hk))
    where = (Ellipsis, heads, slice(None), slice(None))
    return index(key, where), index(value, where)
