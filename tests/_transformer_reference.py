"""NumPy references (float64) of the math of the transformer ops, and the inputs the kernel tests share
(tests/test_kernels_transformer.py on the CPU shim, tests/test_kernels_transformer_cuda.py on a GPU)."""
from __future__ import annotations

import math

import numpy as np

DTYPES = ("float16", "float32", "float64")
EPS = 1e-5  # layer norm
TOL = {"float16": dict(rtol=1e-2, atol=1e-2), "float32": dict(rtol=1e-4, atol=1e-5),
       "float64": dict(rtol=1e-10, atol=1e-12)}


def close(got, want, dtype, scale=1.0):
    tol = dict(TOL[dtype])
    tol["atol"] *= scale
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), **tol)


# ---- references (float64) ----------------------------------------------------------------------------------------

def layer_norm_reference(x, weight, bias, eps):
    """y, mean, rstd over the last axis: biased variance, rstd = 1 / sqrt(var + eps) (torch.nn.functional.layer_norm,
    its saved statistics)."""
    x = x.astype(np.float64)
    mean = x.mean(-1)
    rstd = 1 / np.sqrt(((x - mean[..., None]) ** 2).mean(-1) + eps)
    y = (x - mean[..., None]) * rstd[..., None]
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, mean, rstd


def layer_norm_backward_reference(x, dy, weight):
    """dx, dweight, dbias from x and dy (the statistics recomputed in float64)."""
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    _, mean, rstd = layer_norm_reference(x, None, None, EPS)
    xhat = (x - mean[..., None]) * rstd[..., None]
    g = dy * (1.0 if weight is None else weight.astype(np.float64))
    n = x.shape[-1]
    dx = rstd[..., None] * (g - g.sum(-1, keepdims=True) / n - xhat * (g * xhat).sum(-1, keepdims=True) / n)
    return dx, (dy * xhat).reshape(-1, n).sum(0), dy.reshape(-1, n).sum(0)


def attention_reference(q, k, v, causal, scale):
    """out, lse, and the backward closure of softmax(scale q k^T [tril mask]) v (torch's
    scaled_dot_product_attention, is_causal: the top-left aligned tril(ones(Tq, Tk)))."""
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    s = np.einsum("...td,...sd->...ts", q, k) * scale
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    m = s.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(s - m).sum(-1, keepdims=True)))[..., 0]
    p = np.exp(s - lse[..., None])
    out = p @ v

    def backward(dout):
        dout = dout.astype(np.float64)
        dp = dout @ np.swapaxes(v, -1, -2)
        ds = p * (dp - (dout * out).sum(-1, keepdims=True))
        return ds @ k * scale, np.swapaxes(ds, -1, -2) @ q * scale, np.swapaxes(p, -1, -2) @ dout

    return out, lse, backward


def gelu_reference(x, approximate):
    from math import erf

    x = x.astype(np.float64)
    if approximate == "tanh":
        u = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        t = np.tanh(u)
        y = 0.5 * x * (1 + t)
        dydx = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x * x)
    else:
        cdf = 0.5 * (1 + np.vectorize(erf)(x / math.sqrt(2)))
        y = x * cdf
        dydx = cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return y, dydx




def _rows(shape, dtype, seed, offset=3.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + offset  # a mean far from 0: the two-pass variance keeps its digits
    x.reshape(-1, shape[-1])[:, 0] += np.arange(math.prod(shape[:-1]))  # distinct rows
    return x.astype(dtype)


# (rows, cols): lanes per row (3, 10, 64), a warp per row (200), block rows (1000, 4097), one chunk at most 512
# threads (8192 float32), several chunks (20000: read per pass)
LN_SHAPES = [(5, 3), (33, 10), (7, 64), (9, 200), (6, 1000), (3, 4097), (2, 20000)]


def _activation_input(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 29)) * 3
    x[0, :8] = [0.0, -0.0, 10.0, -10.0, 30.0, -30.0, 1e-3, -6.0]
    return x.astype(dtype)


# (batch, heads, Tq, Tk, D): head dims 32 / 64 / 128 and others below 128; T not a multiple of the 32-key tile or
# of the block's rows; Tq != Tk (causal: top-left aligned)
ATTN_SHAPES = [(2, 3, 37, 37, 32), (1, 2, 70, 70, 64), (1, 1, 45, 45, 128), (2, 1, 17, 50, 24), (1, 2, 50, 17, 64),
               (1, 1, 1, 1, 8)]


def _qkv(shape, dtype, seed):
    b, h, tq, tk, d = shape
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, h, tq, d)).astype(dtype)
    k = rng.standard_normal((b, h, tk, d)).astype(dtype)
    v = rng.standard_normal((b, h, tk, d)).astype(dtype)
    return q, k, v
