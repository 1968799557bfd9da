"""Faults found in a review of the kernels, each checked on the CPU shim against the reference, and the
semantics the reference and the kernels share checked against PyTorch where it is installed.

1. rows containing +inf: logsumexp = +inf, softmax/log_softmax/cross-entropy NaN over the row (the online
   log-sum-exp merge computed exp(inf - inf) = NaN for logsumexp);
2. AMSGrad propagates a NaN into max_exp_avg_sq (fmaxf dropped it);
3. the last-block loss reduction fences on both sides of its atomic hand-off (the reader's acquire fence was
   missing): checked by the shim's hand-off discipline on deliberately broken copies of the source, and by its
   cross-block ordering model (a published store no acquire ordered before another block's load);
4. ReLU backward follows PyTorch for NaN: dy = NaN at x <= 0 gives 0, x = NaN passes dy;
5. warp semantics on the shim: shuffles meet only at the same call site with the same mask, partial masks and
   __syncwarp are modelled (deliberately broken copies of common.cuh).
Also: the shim really runs blocks on several OS threads at once.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import xpnn.functional as F
from xpnn import _dispatch
from xpnn._cuda import make_provider
from xpnn._cuda.sources import kernel_dir
from xpnn.functional import updates

from shim.requirements import require_cxx

require_cxx()  # skip (with the reason) without a C++ compiler, before anything builds the shim

from shim import ShimLoader, build

INF, NAN = np.inf, np.nan
ORDERS = ("forward", "reverse")


@pytest.fixture(scope="module", params=ORDERS)
def loader(request):
    return ShimLoader(reverse=request.param == "reverse")


def reference(fn, *args, **kwargs):
    with _dispatch.use_kernels(False), np.errstate(all="ignore"):
        return fn(*args, **kwargs)


def through_kernel(loader, fn, *args, **kwargs):
    before = loader.launches
    with _dispatch.use_provider(make_provider(loader)), np.errstate(all="ignore"):
        out = fn(*args, **kwargs)
    assert loader.launches > before, f"{fn.__name__} did not run a shim kernel"
    return out


def _special_rows(width: int, dtype: str) -> np.ndarray:
    """Rows: finite; one +inf; +inf twice; +inf and NaN; NaN; all -inf but one +inf; finite (distinct rows)."""
    rng = np.random.default_rng(width)
    x = rng.standard_normal((7, width)) * 2 + np.arange(7)[:, None]
    x[1, width // 2] = INF
    x[2, 0] = x[2, -1] = INF
    x[3, 0], x[3, -1] = INF, NAN
    x[4, width // 3] = NAN
    x[5, :] = -INF
    x[5, width - 1] = INF
    return x.astype(dtype)


def _assert_same(got, want, dtype):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    tol = {"float16": 3e-3, "float32": 2e-5, "float64": 1e-12}[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


# ---- 1. rows containing +inf ------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [1, 7, 1000, 4097])
def test_reference_semantics_of_inf_rows(width):
    """logsumexp +inf for a row with +inf and no NaN, NaN with a NaN; every other output NaN over such rows."""
    x = _special_rows(width, "float64")
    has_inf = np.isposinf(x).any(axis=1)
    has_nan = np.isnan(x).any(axis=1)
    lse = reference(F.logsumexp, x)
    np.testing.assert_array_equal(np.isposinf(lse), has_inf & ~has_nan)
    np.testing.assert_array_equal(np.isnan(lse), has_nan)
    bad = has_inf | has_nan
    for fn in (F.softmax, F.log_softmax):
        out = reference(fn, x)
        assert np.isnan(out[bad]).all() and np.isfinite(out[~bad]).all() | (out[~bad] == -INF).all()
    t = np.zeros(7, np.int64)
    loss, grad = reference(F.cross_entropy_with_grad, x, t, reduction="none")
    np.testing.assert_array_equal(np.isnan(loss), bad)
    assert np.isnan(grad[bad]).all() and np.isfinite(grad[~bad]).all()


def test_reference_semantics_match_pytorch():
    torch = pytest.importorskip("torch")
    x = _special_rows(9, "float64")
    x[6, 0] = -INF  # one -inf entry in a finite row
    t = np.array([0, 4, 1, 2, 3, 8, 0])
    tx = torch.tensor(x, requires_grad=True)
    _assert_same(reference(F.logsumexp, x), torch.logsumexp(tx, 1).detach().numpy(), "float64")
    _assert_same(reference(F.softmax, x), torch.softmax(tx, 1).detach().numpy(), "float64")
    _assert_same(reference(F.log_softmax, x), torch.log_softmax(tx, 1).detach().numpy(), "float64")
    for kwargs in (dict(reduction="none"), dict(reduction="sum", label_smoothing=0.1)):
        loss, grad = reference(F.cross_entropy_with_grad, x, t, **kwargs)
        tx.grad = None
        want = torch.nn.functional.cross_entropy(tx, torch.tensor(t), **kwargs)
        want.sum().backward()
        _assert_same(loss, want.detach().numpy(), "float64")
        _assert_same(grad, tx.grad.numpy(), "float64")


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("width", [1, 7, 1000, 4097])
@pytest.mark.parametrize("fn", [F.logsumexp, F.softmax, F.log_softmax], ids=lambda f: f.__name__)
def test_row_kernels_inf_rows(loader, fn, width, dtype):
    x = _special_rows(width, dtype)
    _assert_same(through_kernel(loader, fn, x), reference(fn, x), dtype)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("width", [1, 7, 1000, 4097])
def test_cross_entropy_inf_rows(loader, width, dtype):
    x = _special_rows(width, dtype)
    t = np.array([0, width // 2, 0, width - 1, 0, width - 1, -100])
    x[6, 0] = INF  # an ignored row with +inf: NaN gradient, loss 0 (PyTorch's too)
    for reduction in ("none", "sum", "mean"):
        for eps in (0.0, 0.1):
            got = through_kernel(loader, F.cross_entropy_with_grad, x, t, reduction=reduction, label_smoothing=eps)
            want = reference(F.cross_entropy_with_grad, x, t, reduction=reduction, label_smoothing=eps)
            _assert_same(got[0], want[0], dtype)
            _assert_same(got[1], want[1], dtype)


# ---- 2. AMSGrad NaN -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_amsgrad_propagates_nan(loader, dtype):
    results = []
    for use_kernel in (False, True):
        rng = np.random.default_rng(0)
        param = rng.standard_normal(300).astype(dtype)
        m, v, vmax = (np.zeros(300, dtype) for _ in range(3))
        for step in (1, 2):
            grad = rng.standard_normal(300).astype(dtype)
            if step == 2:
                grad[[3, 150, 299]] = NAN
            args = (param, grad, m, v, vmax)
            kwargs = dict(step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, amsgrad=True)
            (through_kernel(loader, updates.adam_update, *args, **kwargs) if use_kernel
             else reference(updates.adam_update, *args, **kwargs))
        results.append((param, m, v, vmax))
    for want, got in zip(*results):
        assert np.isnan(want[[3, 150, 299]]).all()
        np.testing.assert_array_equal(got, want)  # NaN where the reference has NaN, equal elsewhere


# ---- 3. the last-block hand-off ---------------------------------------------------------------------------------

ACQUIRE = "        if (last) __threadfence();  // acquire"
RELEASE = "        __threadfence();  // release"


def _broken(tmp_path: Path, remove: str) -> Path:
    dest = tmp_path / "kernels"
    shutil.copytree(kernel_dir(), dest)
    src = dest / "softmax_cross_entropy.cu"
    text = src.read_text()
    assert text.count(remove) == 1, f"softmax_cross_entropy.cu changed: update {__file__}"
    src.write_text(text.replace(remove, "        // (fence removed by the test)"))
    return dest


def _summed_loss(loader):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 3000)).astype(np.float32)  # 40 blocks, 4 workers
    t = rng.integers(0, 3000, 40)
    return through_kernel(loader, F.cross_entropy_with_grad, x, t, reduction="sum")[0], \
        reference(F.cross_entropy_with_grad, x, t, reduction="sum")[0]


@pytest.mark.parametrize("remove,message", [(ACQUIRE, "missing acquire fence"), (RELEASE, "missing release fence")],
                         ids=["acquire", "release"])
def test_shim_catches_a_missing_fence(tmp_path, remove, message):
    broken = ShimLoader(library=build(kernels=_broken(tmp_path, remove)).library)
    with pytest.raises(RuntimeError, match=message):
        _summed_loss(broken)


OTHER_THREAD_STORES = (
    "    if (threadIdx.x == 0) {\n        xpnn_publish(partials + blockIdx.x, total);\n",
    "    if (threadIdx.x == blockDim.x - 1u) xpnn_publish(partials + blockIdx.x, total);  // broken: not thread 0\n"
    "    if (threadIdx.x == 0) {\n")


def test_shim_orders_stores_between_blocks(tmp_path):
    """A block's partial stored by its last thread while thread 0 fences and counts the block done, with nothing
    ordering the two (no __syncthreads, and the fence is not the storing thread's): on a GPU the last block may
    read the partial before it lands. Every thread keeps the per-thread fence rules, so the shim without the
    cross-block ordering model (-DXPNN_SHIM_NO_ORDERING) computes the right sum on one worker and reports nothing;
    the shim that tags each published store with its block, thread and fence epoch finds that no acquire ordered
    the last block's load of it."""
    dest = tmp_path / "kernels"
    shutil.copytree(kernel_dir(), dest)
    src = dest / "softmax_cross_entropy.cu"
    text = src.read_text()
    assert text.count(OTHER_THREAD_STORES[0]) == 1, f"softmax_cross_entropy.cu changed: update {__file__}"
    src.write_text(text.replace(*OTHER_THREAD_STORES))
    unordered = ShimLoader(library=build(("-DXPNN_SHIM_NO_ORDERING",), kernels=dest).library, workers=1)
    got, want = _summed_loss(unordered)
    np.testing.assert_allclose(got, want, rtol=1e-5)  # the old shim did not see the fault
    with pytest.raises(RuntimeError, match=r"block \d+ \(thread 255\) stored, which no acquire ordered"):
        _summed_loss(ShimLoader(library=build(kernels=dest).library, workers=1))


@pytest.mark.parametrize("workers", [1, 2, 4, 7])
def test_last_block_reduction_on_concurrent_blocks(workers):
    """The summed loss is right whichever block finishes last, with blocks on up to 7 OS threads at once."""
    loader = ShimLoader(workers=workers)
    for _ in range(3):
        got, want = _summed_loss(loader)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert loader.last_threads_used == workers


def test_blocks_run_concurrently():
    loader = ShimLoader(workers=4)
    x = np.random.default_rng(2).standard_normal((64, 4000)).astype(np.float32)
    for _ in range(20):  # blocks of 512 fibers each take long enough for the OS threads to overlap
        through_kernel(loader, F.softmax, x)
        if loader.last_max_in_flight >= 2:
            break
    assert loader.last_threads_used == 4
    assert loader.last_max_in_flight >= 2, "no two blocks ever ran at the same time"


def test_shared_memory_is_per_block_under_concurrency():
    """__shared__ is thread_local per worker: concurrent blocks reducing different rows do not mix partials."""
    x = np.random.default_rng(3).standard_normal((97, 2000)) + np.arange(97)[:, None]
    got = through_kernel(ShimLoader(workers=7), F.logsumexp, x)
    np.testing.assert_allclose(got, reference(F.logsumexp, x), rtol=1e-12)


# ---- 4. ReLU backward NaN ------------------------------------------------------------------------------------------

def _relu_cases(dtype):
    x = np.array([0.0, -0.0, -1.0, 2.0, NAN, NAN, -INF, INF, 1.0], dtype)
    dy = np.array([NAN, NAN, NAN, NAN, 3.0, NAN, INF, 5.0, -INF], dtype)
    return x, dy


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_relu_backward_nan_semantics(loader, dtype):
    x, dy = _relu_cases(dtype)
    want = np.array([0.0, 0.0, 0.0, NAN, 3.0, NAN, 0.0, 5.0, -INF])
    ref = reference(F.relu_backward, x, dy)
    np.testing.assert_array_equal(ref.astype(np.float64), want)
    np.testing.assert_array_equal(through_kernel(loader, F.relu_backward, x, dy).astype(np.float64), want)


def test_relu_backward_matches_pytorch():
    torch = pytest.importorskip("torch")
    x, dy = _relu_cases("float32")
    tx = torch.tensor(x, requires_grad=True)
    torch.relu(tx).backward(torch.tensor(dy))
    np.testing.assert_array_equal(reference(F.relu_backward, x, dy), tx.grad.numpy())


# ---- persistent scratch -----------------------------------------------------------------------------------------

def test_cross_entropy_keeps_its_scratch_and_leaves_counters_zero():
    """Counters and partials are allocated once and reused; after each call the counters are back at zero (the
    kernel resets them), also after a call that failed part way (the launcher resets them)."""
    from xpnn._cuda import scratch

    scratch.clear()
    loader = ShimLoader(workers=3)
    x = np.random.default_rng(4).standard_normal((50, 300)).astype(np.float32)
    t = np.arange(50) % 300
    for reduction in ("mean", "sum", "mean"):
        got = through_kernel(loader, F.cross_entropy_with_grad, x, t, reduction=reduction)[0]
        np.testing.assert_allclose(got, reference(F.cross_entropy_with_grad, x, t, reduction=reduction)[0],
                                   rtol=1e-5)
        kept = {k: v for k, v in scratch._arrays.items() if "counters" in k[-2]}
        assert len(kept) == 1 and not next(iter(kept.values())).any()
    assert len(scratch._arrays) == 2  # counters and partials, once


def test_failed_launch_leaves_counters_zero(tmp_path):
    from xpnn._cuda import scratch

    broken = ShimLoader(library=build(kernels=_broken(tmp_path, ACQUIRE)).library)
    with pytest.raises(RuntimeError):
        _summed_loss(broken)
    assert not any(v.any() for k, v in scratch._arrays.items() if "counters" in k[-2])
    got, want = _summed_loss(ShimLoader())
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("n", [300, 6000])  # small arrays take np.where itself, larger ones the masked AND
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_zero_where_is_where_bit_for_bit(dtype, n):
    """The NumPy fast path of the ReLU backward reference (bits ANDed with a mask) equals where(cond, 0, values),
    -0.0, NaN and inf included, on contiguous and strided arrays; array_api_strict takes xp.where."""
    from xpnn.functional._masking import zero_where

    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(dtype)
    v = rng.standard_normal(n).astype(dtype)
    x[:6] = [0.0, -0.0, NAN, INF, -INF, 1.0]
    v[6:12] = [NAN, INF, -INF, -0.0, 0.0, NAN]
    bits = f"u{np.dtype(dtype).itemsize}"
    for xs, vs in ((x, v), (x[::3], v[::3])):
        got = zero_where(np, xs <= 0, vs)
        want = np.where(xs <= 0, np.zeros_like(vs), vs)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.view(bits), want.view(bits))
    strict = pytest.importorskip("array_api_strict")
    if dtype != "float16":
        xs, vs = strict.asarray(x), strict.asarray(v)
        got = zero_where(strict, xs <= 0, vs)
        np.testing.assert_array_equal(np.asarray(got), np.where(x <= 0, 0, v))


UNWRITTEN_PARTIAL = ("    if (lane == 0) {\n        partial_m[warp] = st.m;",
                     "    if (lane == 0 && st.s != A(0)) {  // broken: warps with nothing to add write nothing\n"
                     "        partial_m[warp] = st.m;")


def _lse_of_rows_with_one_finite_pack(loader):
    """logsumexp of rows whose entries are -inf but for the first pack (positive): a block of 64 threads per row,
    the second warp's share is all -inf (its state (-inf, 0))."""
    x = np.full((8, 1000), -np.inf, np.float32)
    x[:, :4] = np.random.default_rng(5).random((8, 4)) + 0.5
    return through_kernel(loader, F.logsumexp, x), reference(F.logsumexp, x)


def test_shim_poisons_uninitialised_shared_memory(tmp_path):
    """A block reduction that reads the shared partials of warps that never wrote them (here: warps with nothing
    to add skip the write) is wrong on a GPU, where unwritten shared memory holds garbage. A shim whose shared
    memory stays zero (the old behaviour, -DXPNN_SHIM_NO_POISON) passes it (the partial (0, 0) merges to the same
    result here); the shim that fills shared memory with 0xFF bytes (NaN) at every block start catches it."""
    dest = tmp_path / "kernels"
    shutil.copytree(kernel_dir(), dest)
    common = dest / "common.cuh"
    text = common.read_text()
    assert text.count(UNWRITTEN_PARTIAL[0]) == 1
    common.write_text(text.replace(*UNWRITTEN_PARTIAL))
    zero_filled = ShimLoader(library=build(("-DXPNN_SHIM_NO_POISON",), kernels=dest).library)
    got, want = _lse_of_rows_with_one_finite_pack(zero_filled)
    np.testing.assert_allclose(got, want, rtol=1e-6)  # the old shim did not see the fault
    poisoned = ShimLoader(library=build(kernels=dest).library)
    got, want = _lse_of_rows_with_one_finite_pack(poisoned)
    assert np.isnan(got).all(), f"the poisoned shim missed the unwritten partials: {got} vs {want}"
    got, want = _lse_of_rows_with_one_finite_pack(ShimLoader())  # the real source reads only what it wrote
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ---- 5. warp semantics --------------------------------------------------------------------------------------------

WARP_SUM = "    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(XPNN_FULL_MASK, v, off);\n"
DIVERGENT_WARP_SUM = (
    "    for (int off = 16; off > 0; off /= 2) {  // broken: the two lanes of a pair shuffle at different lines\n"
    "        if (threadIdx.x & (unsigned)off) v += __shfl_xor_sync(XPNN_FULL_MASK, v, off);\n"
    "        else v += __shfl_xor_sync(XPNN_FULL_MASK, v, off);\n"
    "    }\n")
GROUP_SUM = "    for (int off = lanes / 2; off > 0; off /= 2) v += __shfl_xor_sync(XPNN_FULL_MASK, v, off);\n"


def _with_common(tmp_path: Path, old: str, new: str) -> Path:
    dest = tmp_path / "kernels"
    shutil.copytree(kernel_dir(), dest)
    common = dest / "common.cuh"
    text = common.read_text()
    assert text.count(old) == 1, f"common.cuh changed: update {__file__}"
    common.write_text(text.replace(old, new))
    return dest


def test_shim_matches_shuffles_by_call_site(tmp_path):
    """A warp sum whose lanes shuffle at two different lines (the pair's lanes in different branches) computes
    the right sum when shuffles are matched by count (the old shim, -DXPNN_SHIM_COUNT_SHUFFLES), but lanes of one
    shuffle must meet at the same instruction: the shim that tags each shuffle with its call site fails it."""
    dest = _with_common(tmp_path, WARP_SUM, DIVERGENT_WARP_SUM)
    counted = ShimLoader(library=build(("-DXPNN_SHIM_COUNT_SHUFFLES",), kernels=dest).library, workers=1)
    got, want = _summed_loss(counted)
    np.testing.assert_allclose(got, want, rtol=1e-5)  # the old shim did not see the fault
    with pytest.raises(RuntimeError, match=r"common.cuh:\d+ .*and __shfl_xor_sync at .*common.cuh:\d+ .*meet in one "
                                           r"warp barrier"):
        _summed_loss(ShimLoader(library=build(kernels=dest).library, workers=1))


def _smoothed_narrow_rows(loader):
    """Cross-entropy with label smoothing over 10 classes: 2 lanes per row, 16 rows per warp, and the smoothing
    sum reduced over each row's lanes (xpnn_group_sum with lanes = 2)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((70, 10)).astype(np.float32)
    t = rng.integers(0, 10, 70)
    return (through_kernel(loader, F.cross_entropy_with_grad, x, t, label_smoothing=0.1),
            reference(F.cross_entropy_with_grad, x, t, label_smoothing=0.1))


@pytest.mark.parametrize("mask,error", [
    ("(((1u << lanes) - 1u) << (threadIdx.x % 32u / (unsigned)lanes * (unsigned)lanes))", None),  # the row's lanes
    ("((1u << lanes) - 1u)", r"lane \d+ is not in its mask 0x00000003"),  # the warp's first row's lanes only
    ("0x0000ffffu", r"lane \d+ is not in its mask 0x0000ffff"),
])
def test_shim_models_partial_masks(tmp_path, mask, error):
    """The row-group sum with a partial mask: each row's own lanes (and a __syncwarp of them first) is right and
    runs (the old shim refused any mask but the full one); a mask that leaves out lanes that call the shuffle fails
    the launch, naming the lane and the mask."""
    group = (f"    const unsigned group = {mask};\n    __syncwarp(group);\n"
             "    for (int off = lanes / 2; off > 0; off /= 2) v += __shfl_xor_sync(group, v, off);\n")
    loader = ShimLoader(library=build(kernels=_with_common(tmp_path, GROUP_SUM, group)).library)
    if error is None:
        (loss, grad), (loss_ref, grad_ref) = _smoothed_narrow_rows(loader)
        np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
        np.testing.assert_allclose(grad, grad_ref, rtol=1e-5, atol=1e-7)
    else:
        with pytest.raises(RuntimeError, match=error):
            _smoothed_narrow_rows(loader)


def test_shim_catches_a_shuffle_reading_outside_its_mask(tmp_path):
    """Lanes 0-15 shuffle among themselves (mask 0x0000ffff) while lanes 16-31 do with theirs, but the xor offset 16
    reads the other half: undefined on a GPU, a failed launch on the shim."""
    broken = ("    const unsigned half = threadIdx.x % 32u < 16u ? 0x0000ffffu : 0xffff0000u;  // broken\n"
              "    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(half, v, off);\n")
    loader = ShimLoader(library=build(kernels=_with_common(tmp_path, WARP_SUM, broken)).library, workers=1)
    with pytest.raises(RuntimeError, match=r"reads lane \d+, outside the mask"):
        _summed_loss(loader)
