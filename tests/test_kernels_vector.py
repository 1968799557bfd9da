"""The vectorised row kernels (16-byte packs, several per thread, scalar heads and tails; lanes per narrow row) on the
CPU shim against the reference: widths 1, 7, 1000, 4097 and the edges of each path, float16/32/64, inputs starting
at every offset from a 16-byte boundary (so the input's head differs from the fresh output's: scalar stores), both
thread orders."""
from __future__ import annotations

import numpy as np
import pytest

import xpnn.functional as F
from xpnn import _dispatch
from xpnn._cuda import launch, make_provider

from shim.requirements import require_cxx

require_cxx()  # skip (with the reason) without a C++ compiler, before anything builds the shim

from shim import ShimLoader  # noqa: E402

TOL = {"float16": dict(rtol=4e-3, atol=4e-3), "float32": dict(rtol=3e-5, atol=2e-6),
       "float64": dict(rtol=1e-12, atol=1e-13)}
WIDTHS = (1, 2, 3, 4, 5, 7, 10, 16, 33, 64, 65, 255, 256, 257, 1000, 4097)


@pytest.fixture(scope="module", params=("forward", "reverse"))
def loader(request):
    return ShimLoader(reverse=request.param == "reverse")


def _offset(x: np.ndarray, items: int) -> np.ndarray:
    """A C-contiguous copy of ``x`` starting ``items`` entries after a 64-byte boundary."""
    itemsize = x.dtype.itemsize
    raw = np.empty(x.nbytes + 64 + items * itemsize + 64, np.uint8)
    start = (-raw.ctypes.data) % 64 + items * itemsize
    out = raw[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    out[...] = x
    assert out.flags.c_contiguous and (out.ctypes.data - start) % 1 == 0
    return out


def _rows(n: int, width: int, dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed * 7919 + width)
    x = rng.standard_normal((n, width)) * 3 + np.arange(n)[:, None] * 0.25  # distinct rows
    if width > 3:
        x[n // 2, 1::3] = -np.inf
    return x.astype(dtype)


def _both(loader, fn, *args, **kwargs):
    with _dispatch.use_kernels(False), np.errstate(all="ignore"):
        want = fn(*args, **kwargs)
    before = loader.launches
    with _dispatch.use_provider(make_provider(loader)), np.errstate(all="ignore"):
        got = fn(*args, **kwargs)
    assert loader.launches > before
    return got, want


def _close(got, want, dtype):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("width", WIDTHS)
def test_row_kernels_every_alignment(loader, width, dtype):
    n = 9
    for offset in range(16 // np.dtype(dtype).itemsize):
        x = _offset(_rows(n, width, dtype, seed=offset), offset)
        for fn in (F.softmax, F.log_softmax, F.logsumexp):
            got, want = _both(loader, fn, x)
            _close(got, want, dtype)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("width", WIDTHS)
def test_cross_entropy_every_alignment(loader, width, dtype):
    n = 9
    rng = np.random.default_rng(width)
    t = rng.integers(0, width, n)
    t[n // 2] = 0  # a finite entry of the row with -inf entries
    t[1] = -100
    for offset in (0, 1, 16 // np.dtype(dtype).itemsize - 1):
        x = _offset(_rows(n, width, dtype, seed=offset), offset)
        for reduction, eps in (("none", 0.0), ("mean", 0.1), ("sum", 0.0)):
            got, want = _both(loader, F.cross_entropy_with_grad, x, t, reduction=reduction, label_smoothing=eps)
            _close(got[0], want[0], dtype)
            _close(got[1], want[1], dtype)


@pytest.mark.parametrize("width", [3, 10, 40, 100, 5000])
def test_more_rows_than_groups(loader, monkeypatch, width):
    """Grid-stride rounds where only part of a warp's row groups have a row (inactive lanes still shuffle)."""
    monkeypatch.setattr(launch, "MAX_GRID", 2)
    n = 8 * 32 * 2 + 13 if width < 64 else 37
    x = _rows(n, width, "float32")
    t = np.arange(n) % width
    for fn in (F.softmax, F.logsumexp):
        got, want = _both(loader, fn, x)
        _close(got, want, "float32")
    got, want = _both(loader, F.cross_entropy_with_grad, x, t, reduction="sum", label_smoothing=0.2)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    _close(got[1], want[1], "float32")


def test_wide_rows_stay_in_registers_up_to_the_largest_block():
    """The launch gives every thread of a wide row at most 4 packs (the row stays in registers between the passes)
    while the block allows it; wider rows stream through the 4-pack loop (both paths run in the tests here:
    4097 entries fit, 9000 float32 entries do not fit 512 threads)."""
    for n_cols, itemsize in ((1000, 4), (4097, 4), (4097, 8), (4097, 2), (8192, 4)):
        _, block, lanes = launch.row_launch(8, n_cols, max_block=512, itemsize=itemsize)
        assert lanes == 0 and n_cols // (16 // itemsize) <= 4 * block
    _, block, _ = launch.row_launch(8, 9000, max_block=512)
    assert 9000 // 4 > 4 * block


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_rows_too_wide_for_registers(loader, dtype):
    x = _offset(_rows(3, 9000 if dtype != "float16" else 18000, dtype), 1)
    t = np.array([0, 17, 8999])
    for fn in (F.softmax, F.log_softmax):
        got, want = _both(loader, fn, x)
        _close(got, want, dtype)
    got, want = _both(loader, F.cross_entropy_with_grad, x, t, label_smoothing=0.1)
    _close(got[0], want[0], dtype)
    _close(got[1], want[1], dtype)


# ---- optimizer updates in 16-byte packs ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("offsets", [(0, 0, 0, 0, 0), (1, 1, 1, 1, 1), (0, 1, 0, 0, 0), (0, 0, 0, 0, 3)], ids=str)
@pytest.mark.parametrize("n", [1, 3, 4, 1037])
def test_optimizer_updates_any_alignment(n, offsets, dtype):
    """Packs when every array is 16-byte aligned (also all shifted alike: still aligned when the shift is 16 bytes,
    else the scalar loop), the scalar path otherwise; the same bits as the reference either way."""
    from xpnn.functional import updates

    loader = ShimLoader()
    results = []
    for use_kernel in (False, True):
        rng = np.random.default_rng(5)
        arrays = [_offset(rng.standard_normal(n).astype(dtype), off) for off in offsets]
        param, grad, m, v, vmax = arrays
        m[...] = v[...] = vmax[...] = 0
        for step in (1, 2, 3):
            kwargs = dict(step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=True)
            if use_kernel:
                _both_inplace(loader, updates.adam_update, param, grad, m, v, vmax, **kwargs)
            else:
                with _dispatch.use_kernels(False):
                    updates.adam_update(param, grad, m, v, vmax, **kwargs)
            grad *= -0.5
        results.append([a.copy() for a in arrays])
    for want, got in zip(*results):
        np.testing.assert_array_equal(got, want)


def _both_inplace(loader, fn, *args, **kwargs):
    before = loader.launches
    with _dispatch.use_provider(make_provider(loader)):
        fn(*args, **kwargs)
    assert loader.launches > before


# ---- few wide rows split across blocks -------------------------------------------------------------------------

def test_row_split_choice():
    assert launch.row_split(8, 32768) == 4096 and launch.row_split(1, 10**6) == 4160
    assert launch.row_split(256, 16384) == launch.row_split(8, 16383) == 0
    assert all(launch.row_split(n, c) % 64 == 0 for n in (1, 3, 100) for c in (16384, 50_000, 10**6))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("n,width", [(1, 1000), (3, 4097), (5, 777)])
def test_split_rows(loader, monkeypatch, n, width, dtype):
    """Rows split into chunks of 64 entries or more (thresholds lowered), also with +inf/NaN rows and an input off a
    16-byte boundary; the split path really runs (two launches per call)."""
    monkeypatch.setattr(launch, "SPLIT_MIN_COLS", 100)
    monkeypatch.setattr(launch, "SPLIT_MIN_CHUNK", 64)
    assert launch.row_split(n, width) > 0
    x = _rows(n, width, dtype, seed=2)
    if n >= 3:
        x[1, 5] = np.inf
        x[2, width - 1] = np.nan
    for offset in (0, 1):
        xo = _offset(x, offset)
        for fn in (F.softmax, F.log_softmax, F.logsumexp):
            before = loader.launches
            got, want = _both(loader, fn, xo)
            assert loader.launches == before + 2
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
            _close(np.nan_to_num(got, nan=0, posinf=0), np.nan_to_num(want, nan=0, posinf=0), dtype)


@pytest.mark.parametrize("width", [64 * 100, 64 * 45])  # 100 and 45 chunks: several per lane of the merge
def test_split_rows_many_chunks_with_special_partials(loader, monkeypatch, width):
    """Many chunks per row, merged by each warp (a lane per chunk, then shuffles): partials of +inf, all -inf
    chunks (-inf, 0) and NaN merge exactly like the reference's row, and every chunk of a row sees the same lse."""
    monkeypatch.setattr(launch, "SPLIT_MIN_COLS", 100)
    monkeypatch.setattr(launch, "SPLIT_MIN_CHUNK", 64)
    monkeypatch.setattr(launch, "SPLIT_TARGET_BLOCKS", 1000)
    n = 6
    chunk = launch.row_split(n, width)
    assert chunk == 64 and -(-width // chunk) > 32
    x = _rows(n, width, "float32", seed=3)
    x[0, :] = 0.75  # constant: every log-softmax entry is -log(s), the same in every chunk
    x[1, 40 * 64 + 3] = np.inf  # a +inf partial: lse +inf, softmax NaN
    x[2, width - 2] = np.nan  # a NaN partial in the last chunk
    x[3, :] = -np.inf  # every partial (-inf, 0) but chunk 33's
    x[3, 33 * 64:34 * 64] = _rows(1, 64, "float32", seed=4)
    x[4, :] = -np.inf  # only empty partials: lse -inf, softmax NaN
    x[5, 31 * 64:] = -np.inf  # empty partials after lane 31's first chunk
    with np.errstate(invalid="ignore", divide="ignore"):
        for fn in (F.logsumexp, F.softmax, F.log_softmax):
            before = loader.launches
            got, want = _both(loader, fn, x)
            assert loader.launches == before + 2
            for special in (np.isnan, np.isposinf, np.isneginf):
                np.testing.assert_array_equal(special(got), special(want), err_msg=fn.__name__)
            finite = np.isfinite(want)
            _close(got[finite], want[finite], "float32")
        lse = _both(loader, F.logsumexp, x)[0]
        ls = _both(loader, F.log_softmax, x)[0]
    ref3 = x[3, 33 * 64:34 * 64].astype(np.float64)
    np.testing.assert_allclose(lse[3], np.log(np.exp(ref3 - ref3.max()).sum()) + ref3.max(), rtol=1e-6)
    assert len(set(ls[0].tolist())) == 1  # a constant row: every chunk's block merged to the same log(s)


def test_random_shapes_offsets_and_grids(monkeypatch):
    """Random (rows, width, dtype, offset, grid cap, thread order, workers): every row path against the reference."""
    rng = np.random.default_rng(2026)
    loaders = {(r, w): ShimLoader(reverse=r, workers=w) for r in (False, True) for w in (1, 3)}
    for trial in range(60):
        n = int(rng.integers(1, 40))
        width = int(rng.choice([1, 2, 3, 5, 8, 13, 31, 32, 63, 64, 65, 100, 255, 256, 257, 511, 1025, 2049, 3001,
                                9001]))
        dtype = str(rng.choice(["float16", "float32", "float64"]))
        offset = int(rng.integers(0, 16 // np.dtype(dtype).itemsize))
        monkeypatch.setattr(launch, "MAX_GRID", int(rng.choice([1, 2, 3, 65535])))
        split = bool(rng.integers(0, 2)) and width >= 128
        monkeypatch.setattr(launch, "SPLIT_MIN_COLS", 128 if split else 16384)
        monkeypatch.setattr(launch, "SPLIT_MIN_CHUNK", 64 if split else 4096)
        loader = loaders[(bool(rng.integers(0, 2)), int(rng.choice([1, 3])))]
        x = _offset(_rows(n, width, dtype, seed=trial), offset)
        t = rng.integers(0, width, n)
        t[rng.random(n) < 0.2] = -100
        where = f"trial {trial}: n={n} width={width} {dtype} offset={offset} split={split}"
        for fn in (F.softmax, F.log_softmax, F.logsumexp):
            got, want = _both(loader, fn, x)
            np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), **TOL[dtype],
                                       err_msg=where)
        eps = float(rng.choice([0.0, 0.1]))
        reduction = str(rng.choice(["none", "sum", "mean"]))
        got, want = _both(loader, F.cross_entropy_with_grad, x, t, reduction=reduction, label_smoothing=eps)
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64), **TOL[dtype],
                                       err_msg=where)
