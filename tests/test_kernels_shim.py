"""Verification layer 2: the CUDA sources run on the CPU through the C++ shim (tests/shim) and the same Python launch
code as on a GPU (xpnn._cuda.launch), and match the array-API reference in xpnn.functional.

The reference runs with kernels disabled; the kernel runs with the shim provider installed. Cooperative kernels run
with each block's threads in forward and in reverse order. Rows in one test are distinct, so stale shared memory
from a previous row would show.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import xpnn.functional as F
from xpnn import _dispatch
from xpnn._cuda import launch, make_provider, registry
from xpnn.functional import updates

from _row_accuracy import check_exponent_term, check_row_entries
from shim.requirements import require_cxx

require_cxx()  # skip (with the reason) without a C++ compiler, before anything builds the shim

from shim import ShimLoader, build
from shim.loader import FLAGS

ORDERS = ("forward", "reverse")
WIDTHS = (1, 7, 1000, 4097)
TOL = {"float16": dict(rtol=2e-3, atol=2e-3), "float32": dict(rtol=2e-5, atol=1e-6),
       "float64": dict(rtol=1e-12, atol=1e-13)}


@pytest.fixture(scope="module", params=ORDERS)
def loader(request):
    return ShimLoader(reverse=request.param == "reverse")


@pytest.fixture(scope="module")
def forward_loader():
    return ShimLoader()


def reference(fn, *args, **kwargs):
    with _dispatch.use_kernels(False):
        return fn(*args, **kwargs)


def through_kernel(loader, fn, *args, **kwargs):
    before = loader.launches
    with _dispatch.use_provider(make_provider(loader)):
        out = fn(*args, **kwargs)
    assert loader.launches > before, f"{fn.__name__} did not run a shim kernel"
    return out


def close(got, want, dtype):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64),
                               **TOL[dtype])


# ---- the shim itself ----------------------------------------------------------------------------------------------

def test_shim_build_is_warning_free():
    log = build().log
    assert log == "", f"g++ {' '.join(FLAGS)} warned:\n{log}"


def test_non_cooperative_kernel_that_synchronises_is_an_error(forward_loader):
    row = registry.RAW_BY_NAME["softmax"]
    wrong = registry.RawKernel(row.name, row.source, row.entry, row.dtypes, cooperative=False)
    x = np.ones((2, 40), np.float32)
    with pytest.raises(RuntimeError, match="non-cooperative"):
        forward_loader.raw(wrong, "float32").launch(2, 32, (x, np.empty_like(x), np.int64(2), np.int64(40),
                                                                np.int32(0)))


def test_launcher_checks_scalar_types_and_block_size(forward_loader):
    kernel = forward_loader.raw(registry.RAW_BY_NAME["softmax"], "float32")
    x = np.ones((2, 40), np.float32)
    out = np.empty_like(x)
    with pytest.raises(TypeError, match="n_cols must be a numpy.int64, got int"):
        kernel.launch(2, 32, (x, out, np.int64(2), 40, np.int32(0)))
    with pytest.raises(TypeError, match="x must be float32, got float64"):
        kernel.launch(2, 32, (x.astype(np.float64), out, np.int64(2), np.int64(40), np.int32(0)))
    with pytest.raises(TypeError, match="C-contiguous"):
        kernel.launch(2, 32, (np.ones((40, 2), np.float32).T, out, np.int64(2), np.int64(40), np.int32(0)))
    with pytest.raises(ValueError, match="multiple of 32"):
        kernel.launch(2, 48, (x, out, np.int64(2), np.int64(40), np.int32(0)))


def test_block_choice():
    assert [launch.row_block(c) for c in (1, 7, 256, 1000, 4097, 100_000)] == [32, 32, 32, 64, 256, 1024]
    assert launch.row_block(4097, 8) == 512 and launch.row_block(4097, 2) == 128  # at most 4 packs per thread
    assert [launch.row_lanes(c) for c in (1, 2, 4, 5, 10, 33, 64, 65, 256, 257)] == [1, 1, 1, 2, 4, 16, 16, 32, 32, 0]
    assert launch.flat_grid(1) == 1 and launch.flat_grid(10**9) == launch.MAX_GRID


@pytest.mark.parametrize("dtype,per_pack", [("float16", 8), ("float32", 4), ("float64", 2)])
@pytest.mark.parametrize("n", [1, 255, 4096, 10**6, 2**24 + 3, 67 * 2**20])
def test_flat_grid_sizes_by_packs(dtype, per_pack, n):
    """The optimizer kernels take a 16-byte pack per thread and iteration: the grid has a thread per pack (no block
    without a pack, as one thread per element left 3/4 of the float32 blocks empty), and on a GPU at most
    FLAT_BLOCKS_PER_SM blocks per multiprocessor (grid-stride loops cover the rest)."""
    assert launch.pack_items(np.dtype(dtype)) == per_pack
    packs = -(-n // per_pack)
    grid = launch.flat_grid(n, per_thread=per_pack)
    threads = grid * launch.FLAT_BLOCK
    if grid < launch.MAX_GRID:
        assert threads >= packs > threads - launch.FLAT_BLOCK  # every block has at least one pack
    sms = 132  # an H100 SXM
    capped = launch.flat_grid(n, per_thread=per_pack, sm_count=sms)
    assert capped == min(grid, launch.FLAT_BLOCKS_PER_SM * sms) >= 1


def test_optimizer_launches_size_their_grid_by_packs():
    """adam_update over 3 * 1024 + 1 float32 entries (769 packs and a tail entry): 4 blocks of 256 threads, not the
    13 of one thread per element; the result still matches the reference (the tail included)."""
    loader = ShimLoader()
    grids = []
    run = loader._launch
    loader._launch = lambda name, grid, *rest: (grids.append((name, grid)), run(name, grid, *rest))[1]
    n = 3 * 1024 + 1
    rng = np.random.default_rng(0)
    results = []
    for provider in (None, make_provider(loader)):
        p, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
        m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
        with _dispatch.use_provider(provider), _dispatch.use_kernels(provider is not None):
            updates.adam_update(p, g, m, v, step=1, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8)
        results.append((p, m, v))
        rng = np.random.default_rng(0)
    assert grids == [("adam_update<float>", 4)]
    for want, got in zip(*results):
        np.testing.assert_array_equal(got, want)


def test_cross_entropy_lanes_follow_the_width():
    """Cross-entropy rows get about two 16-byte packs per lane: 10 float32 classes -> 2 lanes (16 rows per warp),
    1 lane up to 8 classes, and as many lanes as the other row kernels from 65 classes on."""
    assert [launch.cross_entropy_lanes(c) for c in (1, 3, 8, 9, 10, 16, 17, 33, 64, 65, 256, 257)] == \
        [1, 1, 1, 2, 2, 2, 4, 8, 8, 32, 32, 0]
    assert launch.cross_entropy_lanes(10, 2) == 1 and launch.cross_entropy_lanes(10, 8) == 4
    assert launch.row_launch(65536, 10, lanes=2) == (512, 256, 2)  # 128 rows per block


@pytest.mark.parametrize("width", [3, 10, 17, 33, 64])
def test_cross_entropy_narrow_rows_with_fewer_lanes(width):
    """The kernel at the lanes cross_entropy_lanes chooses (recorded from the launch), rows at every offset from a
    16-byte boundary (the row start moves with the row index), several rounds of the grid-stride loop."""
    loader = ShimLoader()
    launched = []
    run = loader._launch
    loader._launch = lambda name, grid, block, args, *rest: (launched.append((name, args[-1])),
                                                             run(name, grid, block, args, *rest))[1]
    x = _rows(width, "float32", n=301, seed=width)
    t = np.arange(301) * 7 % width
    t[::13] = -100
    for reduction in ("mean", "none"):
        kwargs = dict(reduction=reduction, label_smoothing=0.05)
        got = through_kernel(loader, F.cross_entropy_with_grad, x, t, **kwargs)
        want = reference(F.cross_entropy_with_grad, x, t, **kwargs)
        close(got[0], want[0], "float32")
        close(got[1], want[1], "float32")
    lanes = {int(a) for n, a in launched if n.startswith("cross_entropy_fwd_bwd")}
    assert lanes == {launch.cross_entropy_lanes(width)}


def test_launch_table_comes_from_the_rows():
    """Every op of the registry has a launch function (helpers excluded): a raw row's from providers.LAUNCHERS (each
    a module constant of the registry), an elementwise row's the one generated launcher bound to it; each elementwise
    row is the kernel an op declares."""
    from xpnn._cuda import providers
    from xpnn.autograd import Op

    assert {row.name for row in registry.RAW + registry.elementwise() if providers.launcher(row) is not None} == \
        set(registry.ops())
    assert {row.name for row in providers.LAUNCHERS} == {row.name for row in registry.RAW if not row.helper}
    assert all(getattr(registry, row.name.upper()) is row for row in registry.RAW)
    assert providers.launcher(registry.SOFTMAX) is launch.softmax
    for row in registry.elementwise():
        fn = providers.launcher(row)
        assert fn.func is launch.elementwise and fn.args == (row,)

    def declared(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from declared(sub)

    assert set(registry.elementwise()) <= {op.kernel for op in declared(Op)}


def test_row_launch_choice():
    """(grid, block, lanes): a few lanes per narrow row (several rows per warp), a warp per row up to 256 entries,
    a block per wider row; no idle warps for few rows; grids capped."""
    assert launch.row_launch(65536, 10) == (1024, 256, 4)  # 64 rows per block
    assert launch.row_launch(7, 1) == (1, 32, 1)
    assert launch.row_launch(3, 70) == (1, 96, 32)
    assert launch.row_launch(4096, 1000) == (4096, 64, 0)
    assert launch.row_launch(8192, 32768) == (8192, 1024, 0)
    assert launch.row_launch(10**7, 10)[0] == launch.row_launch(10**6, 1000)[0] == launch.MAX_GRID
    assert launch.row_launch(8192, 32768, max_block=512) == (8192, 512, 0)
    assert launch.row_launch(100, 10, max_block=64) == (7, 64, 4)


def test_every_kernel_declares_its_launch_bounds(forward_loader):
    """Without __launch_bounds__ the compiler may give a kernel more registers than its largest block can have
    (the launch then fails on a GPU only); the launcher never exceeds the bound."""
    from xpnn._cuda import sources

    for row in registry.RAW:
        kernel = row.entry.split("<")[0]
        bound = sources.launch_bound(row.source, kernel)  # optionally with a minimum of blocks per multiprocessor
        assert re.search(rf"__launch_bounds__\({bound}(, \d+)?\)\n{kernel}\(", sources.read_source(row.source)), kernel
    ce = forward_loader.raw(registry.RAW_BY_NAME["cross_entropy_with_grad"], "float64")
    assert ce.max_block == 512
    x = np.zeros((2, 4000))
    with pytest.raises(ValueError, match="launch_bounds"):
        ce.launch(2, 1024, (x, np.zeros(2, np.int64), np.zeros(2, np.uint64), x.copy(), np.zeros(()), np.zeros(2),
                            np.int64(2), np.int64(4000), np.int64(-100), np.float64(0), np.int32(1), np.int32(0)))


# ---- elementwise activation backwards ---------------------------------------------------------------------------

ACTIVATIONS = [
    (F.sigmoid_backward, "y", ()), (F.tanh_backward, "y", ()), (F.relu_backward, "x", ()),
    (F.leaky_relu_backward, "x", (0.2,)), (F.elu_backward, "x", (0.7,)), (F.selu_backward, "x", ()),
    # inputs whose NaN gives NaN (PyTorch's softplus/mish backwards too)
    (F.softplus_backward, "x_nan", ()), (F.softplus_backward, "x_nan", (0.5, 3.0)), (F.mish_backward, "x_nan", ()),
]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("fn,saved,extra", ACTIVATIONS, ids=lambda v: getattr(v, "__name__", None))
def test_activation_backward(forward_loader, fn, saved, extra, dtype):
    rng = np.random.default_rng(1)
    if saved == "y":  # outputs of sigmoid/tanh
        s = (rng.uniform(-1, 1, (33, 17)) if fn is F.tanh_backward else rng.uniform(0, 1, (33, 17)))
    else:  # inputs, including extremes, exact zeros, both sides of softplus's threshold (20 and 3 / 0.5 = 6) and
        # a NaN (PyTorch: a NaN input passes a finite gradient, except through softplus and mish)
        s = rng.standard_normal((33, 17)) * 3
        s[0, :11] = [1e4, -1e4, 0.0, -0.0, 80.0, -80.0, np.nan, 20.0, 20.001, 6.0, 6.001]
    dy = rng.standard_normal((33, 17))
    s, dy = s.astype(dtype), dy.astype(dtype)
    want = reference(fn, s, dy, *extra)
    got = through_kernel(forward_loader, fn, s, dy, *extra)
    assert got.dtype == want.dtype and got.shape == want.shape
    if saved == "x":
        assert np.isfinite(got[0, 6]) and np.isfinite(want[0, 6])
    elif saved == "x_nan":
        assert np.isnan(got[0, 6]) and np.isnan(want[0, 6])
    tol = dict(rtol=5e-3, atol=5e-3) if dtype == "float16" else TOL[dtype]  # the kernel computes half in float
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), **tol)


def test_activation_backward_non_contiguous(forward_loader):
    rng = np.random.default_rng(2)
    y = rng.uniform(0, 1, (20, 30)).astype(np.float32).T
    dy = rng.standard_normal((30, 20)).astype(np.float32)
    close(through_kernel(forward_loader, F.sigmoid_backward, y, dy), reference(F.sigmoid_backward, y, dy), "float32")


# ---- row kernels ------------------------------------------------------------------------------------------------

def _rows(width: int, dtype: str, n: int = 5, scale: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + width)
    x = rng.standard_normal((n, width)) * scale
    x[:, 0] += np.arange(n)  # distinct rows
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("fn", [F.logsumexp, F.softmax, F.log_softmax], ids=lambda f: f.__name__)
def test_row_kernels(loader, fn, width, dtype):
    x = _rows(width, dtype)
    x[1] *= 1e4 / 3  # |x| ~ 1e4
    if width > 1:
        x[2, ::3] = -np.inf  # -inf entries (never the whole row)
    x[3] = -np.inf  # a whole row of -inf: lse = -inf, softmax NaN, like the reference
    with np.errstate(invalid="ignore", divide="ignore"):
        want = reference(fn, x)
        got = through_kernel(loader, fn, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("fn", [F.logsumexp, F.softmax, F.log_softmax], ids=lambda f: f.__name__)
def test_row_kernels_float16(forward_loader, fn):
    x = _rows(300, "float16")
    close(through_kernel(forward_loader, fn, x), reference(fn, x), "float16")


@pytest.mark.parametrize("width", [3, 10, 70, 300], ids=["lane_rows", "sub_warp_rows", "warp_rows", "block_rows"])
def test_row_kernels_more_rows_than_blocks(loader, monkeypatch, width):
    """Grid-stride over rows (each block or warp handles several), and the cross-entropy loss summed over blocks."""
    monkeypatch.setattr(launch, "MAX_GRID", 2)
    n = 19
    x = _rows(width, "float32", n=n)
    close(through_kernel(loader, F.softmax, x), reference(F.softmax, x), "float32")
    t = np.arange(n) * 7 % width
    t[[3, 11]] = -100
    for reduction in ("mean", "sum", "none"):
        kwargs = dict(reduction=reduction, label_smoothing=0.1)
        got = through_kernel(loader, F.cross_entropy_with_grad, x, t, **kwargs)
        want = reference(F.cross_entropy_with_grad, x, t, **kwargs)
        close(got[0], want[0], "float32")
        close(got[1], want[1], "float32")


@pytest.mark.parametrize("width", [2, 10, 70, 300], ids=["lane_rows", "sub_warp_rows", "warp_rows", "block_rows"])
def test_row_kernels_nan_among_neg_inf(loader, width):
    """A NaN in a row whose other entries are all -inf propagates (the merge of two empty sums keeps the NaN on
    every lane, whichever side it is on)."""
    x = np.full((4, width), -np.inf, np.float32)
    x[0, 1] = np.nan
    x[1, width - 1] = np.nan
    x[2, 0] = 1.0
    x[3, :] = 0.5
    with np.errstate(invalid="ignore"):
        want = reference(F.logsumexp, x)
        got = through_kernel(loader, F.logsumexp, x)
    np.testing.assert_array_equal(np.isnan(got), [True, True, False, False])
    close(got, want, "float32")


def test_cross_entropy_many_rows(forward_loader):
    """Thousands of rows: the count kernel loops over targets, hundreds of blocks add partial losses."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3001, 3)).astype(np.float32)
    t = rng.integers(0, 3, 3001)
    t[::5] = -100
    for reduction in ("mean", "sum"):
        got = through_kernel(forward_loader, F.cross_entropy_with_grad, x, t, reduction=reduction)
        want = reference(F.cross_entropy_with_grad, x, t, reduction=reduction)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
        close(got[1], want[1], "float32")


def test_softmax_exponent_term_within_2_ulp(forward_loader):
    """The exponent term exp(x - m) within 2 ulp (tests/_row_accuracy.py); exp2f(d * log2(e)) was up to 64 ulp off
    at d = -87 (the rounding of the product: |d| * 2^-24 in the exponent)."""
    check_exponent_term(lambda fn, *a, **k: through_kernel(forward_loader, fn, *a, **k))


@pytest.mark.parametrize("width", [10, 1000, 4097, 40000])  # lanes, block rows, block rows, split rows
def test_row_entries_within_the_stated_ulp_bound(forward_loader, width):
    check_row_entries(lambda fn, *a, **k: through_kernel(forward_loader, fn, *a, **k), width)


def _row_kernels_within_tolerance(loader):
    """Row kernels and cross-entropy (every row path: lanes, warps, blocks, split rows) against the reference at
    the float32 tolerance of this file."""
    for width in (3, 10, 70, 300, 1000, 4097):
        x = _rows(width, "float32", n=9)
        x[1] *= 20  # |x - m| up to ~100: exponents down to 1e-40
        for fn in (F.logsumexp, F.softmax, F.log_softmax):
            with np.errstate(under="ignore"):
                close(through_kernel(loader, fn, x), reference(fn, x), "float32")
        t = np.arange(9) * 5 % width
        t[4] = -100
        for reduction in ("mean", "none"):
            kwargs = dict(reduction=reduction, label_smoothing=0.1)
            got = through_kernel(loader, F.cross_entropy_with_grad, x, t, **kwargs)
            want = reference(F.cross_entropy_with_grad, x, t, **kwargs)
            close(got[0], want[0], "float32")
            close(got[1], want[1], "float32")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cooperative_kernels_under_random_thread_orders(seed):
    """Each block's fibers in a seeded random order, drawn afresh at every barrier and shuffle (beyond forward and
    reverse): a missing barrier or a read of a slot another thread writes in the same phase shows up in some
    orders only."""
    _row_kernels_within_tolerance(ShimLoader(order_seed=seed))


def test_tolerances_hold_with_fma_contraction_and_a_fast_exp():
    """The shim built as a GPU may compute: a*b+c contracted into FMAs (-ffp-contract=fast -mfma) and expf as
    fast-math's ex2.approx of the rounded product (-DXPNN_SHIM_FAST_EXP, up to 64 ulp): the comparisons with the
    reference still hold at this file's tolerances (rows, cross-entropy, the optimizers)."""
    try:
        with open("/proc/cpuinfo") as f:
            has_fma = " fma " in f.read()
    except OSError:
        has_fma = False
    if not has_fma:
        pytest.skip("the CPU has no FMA instructions (-mfma): contraction cannot be emulated here")
    loader = ShimLoader(extra_flags=("-ffp-contract=fast", "-mfma", "-DXPNN_SHIM_FAST_EXP"))
    _row_kernels_within_tolerance(loader)
    rng = np.random.default_rng(6)
    n = 1037
    for amsgrad in (False, True):
        results = []
        for provider in (None, make_provider(loader)):
            p, m, v, vmax = rng.standard_normal(n).astype(np.float32), *(np.zeros(n, np.float32) for _ in range(3))
            rng = np.random.default_rng(6)
            grads = np.random.default_rng(7).standard_normal((3, n)).astype(np.float32)
            with _dispatch.use_provider(provider), _dispatch.use_kernels(provider is not None):
                for step in (1, 2, 3):
                    updates.adam_update(p, grads[step - 1], m, v, vmax if amsgrad else None, step=step, lr=1e-2,
                                        beta1=0.9, beta2=0.999, eps=1e-8, amsgrad=amsgrad)
            results.append((p, m, v))
        for got, want in zip(results[1], results[0]):
            close(got, want, "float32")


# ---- cross-entropy ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("width", WIDTHS)
def test_cross_entropy(loader, width, dtype):
    n = 6
    x = _rows(width, dtype, n=n, seed=5)
    x[1] *= 1e4 / 3
    if width > 1:
        x[2, 1::2] = -np.inf
    rng = np.random.default_rng(width)
    target = rng.integers(0, width, n)
    target[2] = 0  # a finite entry of the row with -inf entries
    target[3] = -100  # ignored
    target[4] = 7 if width > 7 else width - 1
    for reduction in ("mean", "sum", "none"):
        for eps in (0.0, 0.1):
            want = reference(F.cross_entropy_with_grad, x, target, reduction=reduction, label_smoothing=eps)
            got = through_kernel(loader, F.cross_entropy_with_grad, x, target, reduction=reduction,
                                 label_smoothing=eps)
            for g, w in zip(got, want):
                assert np.asarray(g).dtype == np.asarray(w).dtype and np.shape(g) == np.shape(w)
            close(got[0], want[0], dtype)
            close(got[1], want[1], dtype)
            assert not np.any(got[1][3]), "ignored rows get a zero gradient"


def test_cross_entropy_ignore_index_and_int32_targets(forward_loader):
    x = _rows(9, "float32", n=4)
    target = np.array([3, 5, 3, 8], dtype=np.int32)
    for kwargs in (dict(ignore_index=3), dict(ignore_index=3, reduction="sum", label_smoothing=0.3)):
        want = reference(F.cross_entropy_with_grad, x, target, **kwargs)
        got = through_kernel(forward_loader, F.cross_entropy_with_grad, x, target, **kwargs)
        close(got[0], want[0], "float32")
        close(got[1], want[1], "float32")


def test_cross_entropy_all_ignored_mean_is_nan(forward_loader):
    x = _rows(5, "float32", n=3)
    target = np.full(3, -100)
    with np.errstate(invalid="ignore", divide="ignore"):
        loss, grad = through_kernel(forward_loader, F.cross_entropy_with_grad, x, target)
    assert np.isnan(loss) and not np.any(grad)


def test_cross_entropy_float16_computes_in_float32(forward_loader):
    x = _rows(1000, "float16", n=4)
    t = np.array([0, 999, 500, 3])
    got = through_kernel(forward_loader, F.cross_entropy_with_grad, x, t, label_smoothing=0.05)
    want = reference(F.cross_entropy_with_grad, x, t, label_smoothing=0.05)
    assert got[0].dtype == np.float16 and got[1].dtype == np.float16
    close(got[0], want[0], "float16")
    close(got[1], want[1], "float16")


def test_cross_entropy_large_logits_keep_float32_digits(forward_loader):
    """(m - x[t]) + log(s) keeps the digits that (m + log s) - x[t] loses at |x| ~ 1e4."""
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal((8, 50))).astype(np.float32)  # float32 spacing at 1e4: ~1e-3
    t = np.argmax(x, axis=1)  # small losses at the row max ...
    t[::2] = np.argmin(x[::2], axis=1)  # ... and larger ones
    exact = reference(F.cross_entropy, x.astype(np.float64), t, reduction="none")
    loss, _ = through_kernel(forward_loader, F.cross_entropy_with_grad, x, t, reduction="none")
    np.testing.assert_allclose(loss, exact, rtol=1e-5, atol=1e-5)  # the other order is off by up to ~5e-4


# ---- optimizer updates ------------------------------------------------------------------------------------------

def _state(n: int, dtype: str, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n).astype(dtype)
    states = [np.zeros(n, dtype) for _ in range(k)]  # as optimizers start; the steps make them non-zero
    return param, states


def _run_steps(fn, loader, n, dtype, n_states, optional, kwargs_for_step, steps=4):
    """Run ``steps`` updates through the reference and through the shim kernel from the same start."""
    results = []
    for use_kernel in (False, True):
        param, states = _state(n, dtype, n_states)
        grads = np.random.default_rng(9).standard_normal((steps, n)).astype(dtype)
        states = [s if keep else None for s, keep in zip(states, optional)]
        for i in range(steps):
            if use_kernel:
                through_kernel(loader, fn, param, grads[i], *states, **kwargs_for_step(i + 1))
            else:
                reference(fn, param, grads[i], *states, **kwargs_for_step(i + 1))
        results.append([param] + [s for s in states if s is not None])
    # bit for bit: same operation order, scalars rounded as the reference rounds them, no FMA contraction in the shim
    for want, got in zip(*results):
        np.testing.assert_allclose(got, want, rtol=0, atol=0)


N_FLAT = 1000 + 37  # more than one block, not a multiple of the block size


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opts", [
    dict(), dict(weight_decay=0.1), dict(weight_decay=0.1, decoupled_weight_decay=True), dict(amsgrad=True),
    dict(maximize=True, weight_decay=0.01, amsgrad=True),
], ids=str)
def test_adam(forward_loader, opts, dtype):
    amsgrad = opts.get("amsgrad", False)
    _run_steps(updates.adam_update, forward_loader, N_FLAT, dtype, 3, (True, True, amsgrad),
               lambda step: dict(step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, **opts))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opts", [
    dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=0.01),
    dict(momentum=0.8, dampening=0.3, maximize=True),
], ids=str)
def test_sgd(forward_loader, opts, dtype):
    _run_steps(updates.sgd_update, forward_loader, N_FLAT, dtype, 1, (opts.get("momentum", 0) != 0,),
               lambda step: dict(lr=0.05, first_step=step == 1, **opts))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opts", [dict(), dict(lr_decay=0.1, weight_decay=0.05, maximize=True)], ids=str)
def test_adagrad(forward_loader, opts, dtype):
    _run_steps(updates.adagrad_update, forward_loader, N_FLAT, dtype, 1, (True,),
               lambda step: dict(step=step, lr=0.1, **opts))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opts", [
    dict(momentum=0.0, centered=False), dict(momentum=0.9, centered=False),
    dict(momentum=0.0, centered=True, weight_decay=0.1), dict(momentum=0.5, centered=True, maximize=True),
], ids=str)
def test_rmsprop(forward_loader, opts, dtype):
    _run_steps(updates.rmsprop_update, forward_loader, N_FLAT, dtype, 3,
               (True, opts["centered"], opts["momentum"] > 0),
               lambda step: dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=opts.get("weight_decay", 0.0),
                                 momentum=opts["momentum"], centered=opts["centered"],
                                 maximize=opts.get("maximize", False)))


def test_update_of_non_contiguous_param_falls_back(forward_loader):
    param = np.ones((10, 4), np.float32).T  # not C-contiguous: an in-place kernel update would need a copy
    grad, m, v = np.ones_like(param), np.zeros_like(param), np.zeros_like(param)
    before = forward_loader.launches
    with _dispatch.use_provider(make_provider(forward_loader)):
        updates.adam_update(param, grad, m, v, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    assert forward_loader.launches == before
    np.testing.assert_allclose(param, 0.9, rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 0), (0, 7)])
def test_row_kernels_do_not_launch_on_empty_rows(forward_loader, shape):
    """No launch for N = 0 or C = 0: the launchers answer an empty result (N = 0) or leave an empty row to the
    reference (C = 0: logsumexp -inf, softmax/log_softmax empty, as PyTorch), and cross-entropy leaves an empty
    batch to the reference (PyTorch's NaN mean and an empty gradient) and no class to its error."""
    x = np.zeros(shape, np.float32)
    for name, want in (("logsumexp", np.full(shape[0], -np.inf, np.float32)), ("softmax", x), ("log_softmax", x)):
        before = forward_loader.launches
        direct = getattr(launch, name)(forward_loader, np, x)
        assert direct is NotImplemented if shape[1] == 0 else direct.shape == want.shape
        with _dispatch.use_provider(make_provider(forward_loader)):
            got = getattr(F, name)(x)
        assert forward_loader.launches == before, name
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.float32
    before = forward_loader.launches
    assert launch.cross_entropy_with_grad(forward_loader, np, x, np.zeros(shape[0], np.int64)) is NotImplemented
    with _dispatch.use_provider(make_provider(forward_loader)):
        if shape[0] == 0:
            loss, grad = F.cross_entropy_with_grad(x, np.zeros(0, np.int64))
            assert np.isnan(loss) and grad.shape == shape
        else:
            with pytest.raises(ValueError, match="cross_entropy"):
                F.cross_entropy_with_grad(x, np.zeros(shape[0], np.int64))
    assert forward_loader.launches == before
@pytest.mark.parametrize("fn, n_states, kwargs", [
    (updates.adam_update, 2, dict(step=2, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)),
    (updates.sgd_update, 1, dict(lr=0.1, momentum=0.9)),
])
def test_update_with_a_gradient_that_broadcasts_runs_the_kernel(forward_loader, fn, n_states, kwargs):
    rng = np.random.default_rng(0)
    param = rng.normal(size=(4, 8)).astype(np.float32)
    grad = rng.normal(size=(1, 8)).astype(np.float32)  # broadcasts to the param, as NumPy's p -= lr * g
    want = param.copy()
    reference(fn, want, np.broadcast_to(grad, param.shape).copy(), *[np.zeros_like(param) for _ in range(n_states)],
              **kwargs)
    out = through_kernel(forward_loader, fn, param, grad, *[np.zeros_like(param) for _ in range(n_states)], **kwargs)
    assert out is param
    close(param, want, "float32")
