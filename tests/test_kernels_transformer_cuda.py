"""The transformer kernels on a GPU (tests marked ``cuda``, run by scripts/gpu_check.sh): the launchers of
xpnn._cuda.transformer through CuPy (kernels compiled by NVRTC), against the float64 NumPy references the CPU-shim
tests use (tests/test_kernels_transformer.py). Skipped with the reason without CuPy and a device."""
from __future__ import annotations

import math

import numpy as np
import pytest

from xpnn._cuda import registry, transformer

from _transformer_reference import (ATTN_SHAPES, DTYPES, EPS, LN_SHAPES, TOL, _activation_input, _qkv, _rows,
                                    attention_reference, close, gelu_reference, layer_norm_backward_reference,
                                    layer_norm_reference)


@pytest.fixture(scope="module")
def gpu():
    import cupy

    from xpnn._cuda.loader import CupyLoader

    return cupy, CupyLoader()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LN_SHAPES + [(4096, 768)], ids=str)
def test_layer_norm_on_gpu(gpu, shape, dtype):
    cp, ld = gpu
    x = _rows(shape, dtype, seed=1)
    rng = np.random.default_rng(2)
    w, b, dy = (rng.standard_normal(s).astype(dtype) for s in (shape[1], shape[1], shape))
    y, mean, rstd = transformer.layer_norm(ld, cp, cp.asarray(x), cp.asarray(w), cp.asarray(b), shape[1], EPS)
    close(cp.asnumpy(y), layer_norm_reference(x, w, b, EPS)[0], dtype, scale=4)
    got = transformer.layer_norm_backward(ld, cp, cp.asarray(x), cp.asarray(dy), mean, rstd, cp.asarray(w), shape[1])
    for g, want, s in zip(got, layer_norm_backward_reference(x, dy, w), (4, 4 * math.sqrt(shape[0]),
                                                                         4 * math.sqrt(shape[0]))):
        close(cp.asnumpy(g), want, dtype, scale=s)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ATTN_SHAPES + [(2, 4, 300, 300, 64)], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash_attention_on_gpu(gpu, shape, dtype, causal):
    cp, ld = gpu
    q, k, v = _qkv(shape, dtype, seed=5)
    scale = 1 / math.sqrt(shape[4])
    want_out, want_lse, backward = attention_reference(q, k, v, causal, scale)
    dq_, dk_, dv_ = (cp.asarray(a) for a in (q, k, v))
    out, lse = transformer.flash_attention(ld, cp, dq_, dk_, dv_, is_causal=causal)
    close(cp.asnumpy(out), want_out, dtype)
    dout = np.random.default_rng(7).standard_normal(q.shape).astype(dtype)
    got = transformer.flash_attention_backward(ld, cp, dq_, dk_, dv_, out, lse, cp.asarray(dout), is_causal=causal)
    for g, want in zip(got, backward(dout)):
        close(cp.asnumpy(g), want, dtype, scale=4)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_backward_and_gelu_on_gpu(gpu, dtype):
    cp, ld = gpu
    rng = np.random.default_rng(12)
    ids = rng.integers(0, 50, (8, 64))
    dy = rng.standard_normal((8, 64, 128)).astype(dtype)
    want = np.zeros((50, 128))
    np.add.at(want, ids.reshape(-1), dy.reshape(-1, 128).astype(np.float64))
    got = transformer.embedding_backward(ld, cp, cp.asarray(dy), indices=cp.asarray(ids), num_embeddings=50)
    close(cp.asnumpy(got), want, dtype, scale=4)
    x = _activation_input(dtype)
    from xpnn._cuda import providers

    for approximate in ("none", "tanh"):
        y = providers.launcher(registry.row("gelu"))(ld, cp, cp.asarray(x), approximate=approximate)
        tol = dict(rtol=2e-3, atol=2e-3) if dtype == "float16" else TOL[dtype]
        np.testing.assert_allclose(cp.asnumpy(y).astype(np.float64), gelu_reference(x, approximate)[0], **tol)
