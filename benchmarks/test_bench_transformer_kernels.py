"""The transformer kernels on a GPU (skipped without one): each op through ``xpnn.functional`` with its fused kernels
("xpnn-cuda") and with kernels off ("xpnn-cuda-generic", the array-API path on CuPy), float32 unless the size says
float16. Memory-bound ones (layer_norm, gelu) record the bytes that must move and the fraction of the copy floor
(the bandwidth of a plain device copy of the same bytes, measured in this run) in ``extra_info``, as
benchmarks/conftest.py does; attention records its FLOP/s (4 * B * H * T^2 * D for the forward, 2.5x that for
forward + backward, halved when causal) and the bytes of the inputs and outputs only (the fused kernels never
write the (T, T) scores; the generic path does).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import _dispatch
from xpnn.bench.timing import copy_bandwidth, device_sync

IMPLS = ("xpnn-cuda", "xpnn-cuda-generic")


@pytest.fixture(scope="module")
def cp():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no device")
    except Exception as exc:  # no CuPy, no driver, no device
        pytest.skip(f"needs CuPy and a CUDA device ({type(exc).__name__}: {exc})")
    return cupy


def _bench(benchmark: Any, case: str, size: str, impl: str, fn: Callable[[], Any], nbytes: int,
           flops: float | None = None) -> None:
    benchmark.group = f"{case} {size}"
    benchmark.extra_info.update(case=case, size=size, impl=impl, device="cuda", bytes_moved=nbytes)

    def call() -> Any:
        with _dispatch.use_kernels(impl == "xpnn-cuda"):
            out = fn()
        device_sync("cuda")
        return out

    call()  # warm-up: kernel compilation
    benchmark(call)
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return
    median = stats.stats.median
    if flops is not None:
        benchmark.extra_info["TFLOPs"] = flops / median / 1e12
    else:
        copy = copy_bandwidth("cuda", nbytes)
        benchmark.extra_info.update(bandwidth_GBps=nbytes / median / 1e9, copy_GBps=copy / 1e9,
                                    floor_fraction=(nbytes / copy) / median)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", ["8192x768", "16384x1024-float16", "4096x4096"])
def test_layer_norm(benchmark, cp, size, impl):
    """Forward (reads x, writes y: the floor; the statistics are 8 bytes a row) and forward + backward."""
    dims, _, dtype = size.partition("-")
    n, d = (int(v) for v in dims.split("x"))
    dtype = dtype or "float32"
    rng = cp.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=cp.float32).astype(dtype)
    w, b = cp.ones(d, dtype), cp.zeros(d, dtype)
    item = np.dtype(dtype).itemsize
    _bench(benchmark, "layer_norm", size, impl, lambda: F.layer_norm(x, (d,), w, b), 2 * n * d * item + 8 * n)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", ["8192x768", "4096x4096"])
def test_layer_norm_backward(benchmark, cp, size, impl):
    """Forward + backward through the tape: x read twice, y and dx written, dy read (5 passes of n * d)."""
    n, d = (int(v) for v in size.split("x"))
    rng = cp.random.default_rng(0)
    x = xpnn.Tensor(rng.standard_normal((n, d), dtype=cp.float32), requires_grad=True)
    w = xpnn.Tensor(cp.ones(d, cp.float32), requires_grad=True)
    b = xpnn.Tensor(cp.zeros(d, cp.float32), requires_grad=True)
    dy = rng.standard_normal((n, d), dtype=cp.float32)

    def step() -> Any:
        y = F.layer_norm(x, (d,), w, b)
        y.backward(dy)
        return x.grad

    _bench(benchmark, "layer_norm_fwd_bwd", size, impl, step, 5 * n * d * 4)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(benchmark, cp, approximate, impl):
    n = 1 << 24
    x = cp.random.default_rng(0).standard_normal(n, dtype=cp.float32)
    _bench(benchmark, f"gelu_{approximate}", "16M", impl, lambda: F.gelu(x, approximate=approximate), 8 * n)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", ["32x4x64x32", "8x12x512x64", "4x8x1024x128-causal", "4x8x1024x64-float16"])
def test_attention(benchmark, cp, size, impl):
    """Forward + backward of F.scaled_dot_product_attention (B x H x T x D)."""
    dims, _, tag = size.partition("-")
    bsz, h, t, d = (int(v) for v in dims.split("x"))
    dtype = "float16" if tag == "float16" else "float32"
    causal = tag == "causal"
    rng = cp.random.default_rng(0)
    q, k, v = (xpnn.Tensor(rng.standard_normal((bsz, h, t, d), dtype=cp.float32).astype(dtype), requires_grad=True)
               for _ in range(3))
    g = rng.standard_normal((bsz, h, t, d), dtype=cp.float32).astype(dtype)

    def step() -> Any:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out.backward(g)
        return q.grad

    flops = 4 * bsz * h * t * t * d * 3.5 * (0.5 if causal else 1.0)
    item = np.dtype(dtype).itemsize
    _bench(benchmark, "attention_fwd_bwd", size, impl, step, 9 * bsz * h * t * d * item, flops=flops)


@pytest.mark.parametrize("impl", IMPLS)
def test_embedding_backward(benchmark, cp, impl):
    """dweight of a (50257, 768) table from 32 x 512 token ids (GPT-2 sized)."""
    rng = cp.random.default_rng(0)
    ids = rng.integers(0, 50257, (32, 512))
    g = rng.standard_normal((32, 512, 768), dtype=cp.float32)
    _bench(benchmark, "embedding_backward", "32x512x768", impl,
           lambda: F.embedding_backward(g, ids, 50257), g.nbytes + 50257 * 768 * 4 + math.prod(ids.shape) * 8)
