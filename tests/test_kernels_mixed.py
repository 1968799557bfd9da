"""The fused mixed-precision Adam kernel (kernels/adam_mixed.cu) on the CPU shim: bit for bit the reference
(xpnn.functional.mixed_precision: cast the float16 gradient up, adam_update on the float32 master, cast down), and
one launch per step of ``optim.Adam`` on a float16 model."""
from __future__ import annotations

import numpy as np
import pytest

from xpnn import _dispatch, nn, optim
from xpnn._cuda import make_provider
from xpnn.errors import DTypeError
from xpnn.functional.mixed_precision import adam_update_mixed

from shim.requirements import require_cxx

require_cxx()  # skip (with the reason) without a C++ compiler, before anything builds the shim

from shim import ShimLoader  # noqa: E402

OPTIONS = [dict(), dict(weight_decay=0.1), dict(weight_decay=0.1, decoupled_weight_decay=True), dict(amsgrad=True),
           dict(maximize=True, weight_decay=0.01, amsgrad=True)]


def _arrays(n: int, offset: int, seed: int = 0):
    """float16 param/grad, float32 master/moments; ``offset`` entries past a 64-byte boundary (0: aligned)."""
    rng = np.random.default_rng(seed)

    def at(a):
        raw = np.empty(a.nbytes + 128, np.uint8)
        start = (-raw.ctypes.data) % 64 + offset * a.itemsize
        out = raw[start:start + a.nbytes].view(a.dtype)
        out[...] = a
        return out

    master = rng.standard_normal(n).astype(np.float32)
    return (at(master.astype(np.float16)), at(master), at(rng.standard_normal(n).astype(np.float16)),
            at(np.zeros(n, np.float32)), at(np.zeros(n, np.float32)), at(np.zeros(n, np.float32)))


@pytest.mark.parametrize("opts", OPTIONS, ids=str)
@pytest.mark.parametrize("n,offset", [(1, 0), (7, 0), (8, 0), (1037, 0), (1037, 1), (64, 3)])
def test_fused_kernel_matches_the_reference_bit_for_bit(n, offset, opts):
    loader = ShimLoader()
    results = []
    for use_kernel in (False, True):
        param, master, grad, m, v, vmax = _arrays(n, offset)
        for step in (1, 2, 3):
            kwargs = dict(step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, **opts)
            if use_kernel:
                before = loader.launches
                with _dispatch.use_provider(make_provider(loader)):
                    adam_update_mixed(param, master, grad, m, v, vmax, **kwargs)
                assert loader.launches == before + 1
            else:
                with _dispatch.use_kernels(False):
                    adam_update_mixed(param, master, grad, m, v, vmax, **kwargs)
            grad *= np.float16(-0.7)
        results.append((param, master, m, v, vmax))
    for want, got in zip(*results):
        np.testing.assert_array_equal(got, want)


def test_arguments_are_checked():
    param, master, grad, m, v, vmax = _arrays(5, 0)
    with pytest.raises(DTypeError, match="master must be float32"):
        adam_update_mixed(param, master.astype(np.float16), grad, m, v, step=1, lr=0.1, beta1=0.9, beta2=0.99,
                          eps=1e-8)
    with pytest.raises(ValueError, match="amsgrad=True needs"):
        adam_update_mixed(param, master, grad, m, v, step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, amsgrad=True)


def test_adam_on_a_float16_model_is_one_launch_per_step():
    """optim.Adam on a float16 model: one fused kernel per step, the same values as the unfused reference path."""
    rng = np.random.default_rng(1)
    loader = ShimLoader()
    results = []
    for use_kernel in (False, True):
        model = nn.Sequential(nn.Linear(13, 9, dtype="float16", seed=0), nn.ReLU(),
                              nn.Linear(9, 3, dtype="float16", seed=1))
        opt = optim.AdamW(model.parameters(), lr=1e-2)
        grads = [rng.standard_normal(p.shape).astype(np.float16) for p in model.parameters()]
        for _ in range(3):
            for p, g in zip(model.parameters(), grads):
                p.grad = g
            if use_kernel:
                before = loader.launches
                with _dispatch.use_provider(make_provider(loader)):
                    opt.step()
                assert loader.launches == before + 1  # the whole flat buffer, one launch
            else:
                with _dispatch.use_kernels(False):
                    opt.step()
        results.append([np.array(p.data) for p in model.parameters()])
        rng = np.random.default_rng(1)
    for want, got in zip(*results):
        np.testing.assert_array_equal(got, want)
