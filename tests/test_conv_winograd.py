"""The Winograd F(2x2, 3x3) path of the NumPy conv2d (conv_numpy.winograd_*, kernels/cpu/winograd.cpp): forward,
dx and dW against the array-API reference (kernels off), PyTorch and finite differences; its compiled tile
transforms against their definitions; inf/NaN, odd sizes, padding 0-2 (asymmetric too), batches split over
threads."""
import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import _dispatch
from xpnn.functional import conv as C, conv_numpy, cpu_kernels, cpu_threads
from _numgrad import numeric_grad

pytestmark = pytest.mark.skipif(cpu_kernels.library() is None,
                                reason=f"the CPU kernels are not built here (the Winograd path needs them): "
                                       f"{cpu_kernels.status()}")

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)

# (x shape, C_out, padding): odd sizes (partial tiles), padding 0, 1, 2 and per axis, N = 1, C_in != C_out
CASES = [
    ((2, 16, 8, 8), 16, 1),
    ((3, 16, 7, 9), 20, 1),
    ((1, 17, 5, 6), 16, 0),
    ((2, 16, 6, 5), 18, 2),
    ((2, 16, 9, 7), 16, (0, 2)),
    ((1, 24, 3, 3), 16, (2, 1)),
    ((2, 16, 1, 2), 16, 1),
]


@pytest.fixture(autouse=True)
def small_planes(monkeypatch):
    """Winograd for the tests' small planes too (by default from ``WINOGRAD_MIN_TILES`` tiles per sample)."""
    monkeypatch.setattr(conv_numpy, "WINOGRAD_MIN_TILES", 1)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.fixture
def winograd_calls(monkeypatch):
    """The list of (C_in, C_out) of each ``winograd_conv`` run (forward and dx), to check that the path ran."""
    real, calls = conv_numpy.winograd_conv, []

    def spy(x, u, *args, **kw):
        calls.append((u.shape[2], u.shape[1]))
        return real(x, u, *args, **kw)

    monkeypatch.setattr(conv_numpy, "winograd_conv", spy)
    return calls


def through_tape(x, w, b, dy, padding):
    """(y, dx, dW, db) of conv2d through the tape (the NumPy overrides)."""
    xt, wt, bt = (xpnn.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.conv2d(xt, wt, bt, 1, padding)
    y.backward(xpnn.tensor(dy))
    return [np.array(y.data), xt.grad, wt.grad, bt.grad]


def reference(x, w, b, dy, padding):
    """(y, dx, dW, db) of the array-API reference (kernels off: no NumPy override runs)."""
    with _dispatch.use_kernels(False):
        g = C.conv2d_geometry(x.shape, w.shape, 1, padding)
        y = C.conv2d_forward(x, w, b, g, 1)[0]
        return [np.asarray(y)] + [np.asarray(a) for a in F.conv2d_backward(x, w, dy, 1, padding)]


def case_arrays(xs, co, padding, dtype, seed=1):
    x, w, b = randn(*xs, seed=seed), randn(co, xs[1], 3, 3, seed=seed + 1), randn(co, seed=seed + 2)
    g = C.conv2d_geometry(xs, w.shape, 1, padding)
    dy = randn(xs[0], co, g.oh, g.ow, seed=seed + 3)
    return [a.astype(dtype) for a in (x, w, b, dy)]


def bounds(x, w, dy, padding):
    """The reference's (y, dx, dW) of |x|, |w|, |dy| (float64): the sums of |terms| that bound the rounding."""
    y, dx, dw, _ = reference(*(np.abs(a).astype(np.float64) for a in (x, w, np.zeros(w.shape[0]), dy)), padding)
    return y, dx, dw


@pytest.mark.parametrize("xs,co,padding", CASES)
def test_winograd_matches_the_reference_in_float64(winograd_calls, xs, co, padding):
    """y, dx, dW, db equal the array-API reference to ~1e-12 of the sums of |terms|, twice (recycled buffers), the
    Winograd path having run for the forward and dx."""
    x, w, b, dy = case_arrays(xs, co, padding, np.float64)
    scale = bounds(x, w, dy, padding)
    want = reference(x, w, b, dy, padding)
    for _ in range(2):
        winograd_calls.clear()
        got = through_tape(x, w, b, dy, padding)
        assert winograd_calls == [(xs[1], co), (co, xs[1])]
        for a, e, s in zip(got, want, scale + (None,)):
            assert a.dtype == np.float64 and a.shape == e.shape
            tol = 1e-12 * (np.abs(e) if s is None else s) + 1e-300
            assert (np.abs(a - e) <= tol).all()


@pytest.mark.parametrize("xs,co,padding", CASES)
def test_winograd_float32_error_is_within_a_few_ulp_of_the_sums_of_terms(winograd_calls, xs, co, padding):
    """float32: each of y, dx, dW within 64 float32 ulps of its sum of |terms| (|x| * |w| and so on) of the
    float64 reference's exact answer (F(2x2,3x3) mixes at most 16 inputs with weights of at most 1.5 per term;
    a wrong transform entry is off by whole terms)."""
    x, w, b, dy = case_arrays(xs, co, padding, np.float32)
    scale = bounds(x, w, dy, padding)
    want = reference(*(a.astype(np.float64) for a in (x, w, b, dy)), padding)
    got = through_tape(x, w, b, dy, padding)
    assert winograd_calls
    eps = np.finfo(np.float32).eps
    for a, e, s in zip(got[:3], want[:3], scale):
        assert a.dtype == np.float32
        assert (np.abs(a - e) <= 64 * eps * s + 1e-30).all()


def test_winograd_matches_torch():
    """The benchmark's shape, small: 3x3 64->64, "same" padding, float32 and float64, against
    torch.nn.functional.conv2d's output and gradients."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for conv2d")
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        x, w, b, dy = case_arrays((3, 64, 10, 9), 64, 1, dtype)
        got = through_tape(x, w, b, dy, 1)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        ty = torch.nn.functional.conv2d(tx, tw, tb, 1, 1)
        ty.backward(torch.tensor(dy))
        for a, t in zip(got, (ty.detach(), tx.grad, tw.grad, tb.grad)):
            t = t.numpy()
            np.testing.assert_allclose(a, t, rtol=tol, atol=tol * float(np.abs(t).max()))


def test_winograd_gradcheck():
    """float64 finite differences of sum(conv2d(x, w, b) * r) through the Winograd path (odd sizes, padding 1)."""
    x, w, b, r = case_arrays((1, 16, 3, 5), 16, 1, np.float64)
    _, dx, dw, db = through_tape(x, w, b, r, 1)

    def loss():
        y = F.conv2d(xpnn.tensor(x), xpnn.tensor(w), xpnn.tensor(b), 1, 1)
        return float((np.asarray(y.data) * r).sum())

    for got, arr in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(got, numeric_grad(loss, arr), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_split_over_threads(monkeypatch, winograd_calls, dtype):
    """The batch split over 2 and 3 threads (one chunk per thread, small blocks): the same results as one thread's
    to rounding, identical from run to run at a thread count."""
    monkeypatch.setattr(conv_numpy, "CHUNK_MIN_ELEMENTS", 1)
    monkeypatch.setattr(conv_numpy, "WINOGRAD_BLOCK_TILES", 1)  # one sample per block
    split = []
    real = cpu_threads.parallel_for
    monkeypatch.setattr(cpu_threads, "parallel_for", lambda n, body, m=1: split.append(real(n, body, m)) or split[-1])
    x, w, b, dy = case_arrays((5, 16, 7, 6), 24, 1, dtype)
    scale = bounds(x, w, dy, 1)
    runs = {}
    try:
        for threads in (1, 2, 2, 3, 3):
            cpu_threads.set_num_threads(threads)
            split.clear()
            runs.setdefault(threads, []).append(through_tape(x, w, b, dy, 1))
            assert split[:3] == [threads] * 3  # forward, dx and dW split
    finally:
        cpu_threads.set_num_threads(None)
    assert winograd_calls
    eps = np.finfo(dtype).eps
    for threads in (2, 3):
        for a, again, one, s in zip(runs[threads][0], runs[threads][1], runs[1][0], scale + (None,)):
            np.testing.assert_array_equal(a, again)
            if s is not None:
                assert (np.abs(a - one) <= 64 * eps * s + 1e-30).all()


@pytest.mark.parametrize("where", ["x inf", "x nan", "w inf", "w nan", "dy inf", "dy nan"])
def test_winograd_inf_and_nan_give_the_references_non_finite_pattern(winograd_calls, where):
    """An inf or NaN spreads through a Winograd tile to outputs the direct convolution leaves finite: those results
    are recomputed by the shift path, so y, dx and dW are inf/NaN exactly where the reference's are."""
    x, w, b, dy = case_arrays((2, 16, 7, 8), 16, 1, np.float64)
    arr = {"x": x, "w": w, "dy": dy}[where.split()[0]]
    arr.reshape(-1)[arr.size // 3] = np.inf if where.endswith("inf") else np.nan
    with np.errstate(all="ignore"):
        got = through_tape(x, w, b, dy, 1)
        want = reference(x, w, b, dy, 1)
    assert winograd_calls
    assert not np.isfinite(want[0 if where[0] in "xw" else 2]).all()  # (y from x or w; dW from dy)
    for a, e in zip(got, want):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(e))
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(e))
        fin = np.isfinite(e)
        np.testing.assert_allclose(a[fin], e[fin], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 2, 2), (0, 2, 1, 0), (2, 1, 0, 2)])
def test_winograd_conv_with_asymmetric_padding_is_the_direct_correlation(dtype, pads):
    """``winograd_conv`` with top/left padding pt, pl and output sizes for any bottom/right padding pb, pr (the
    implicit zeros past the input), odd sizes, on NumPy's direct correlation of the padded input."""
    pt, pb, pl, pr = pads
    x, w, b = randn(3, 16, 7, 6, seed=1).astype(dtype), randn(17, 16, 3, 3, seed=2).astype(dtype), \
        randn(17, seed=3).astype(dtype)
    oh, ow = 7 + pt + pb - 2, 6 + pl + pr - 2
    u = conv_numpy.winograd_weights(w, "test.wino_u")
    y, blocks = conv_numpy.winograd_conv(x, u, b, pt, pl, oh, ow, "test.wino", True)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # (N, C, oh, ow, 3, 3)
    want = np.einsum("ncpqij,ocij->nopq", win, w.astype(np.float64)) + b[:, None, None]
    tol = (1e-12 if dtype == np.float64 else 1e-4) * np.abs(want).max()
    np.testing.assert_allclose(y, want, rtol=0, atol=tol)
    assert [(lo, hi) for lo, hi, _ in blocks] == [(0, 3)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_transforms_are_their_definitions(dtype):
    """The three compiled transforms against their matrices, per tile, for samples 1:3 of 4 (odd sizes, padding
    1 on top and 2 on the left, entries stored with a padded stride): V = B^T d B, y = A^T m A + bias (cropped),
    E = A dY A^T (dY 0 past its edge); the output transform reports a non-finite output, and only then."""
    rng = np.random.default_rng(0)
    n, c, h, w, pt, pl = 4, 3, 5, 7, 1, 2
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    oh, ow = 5, 6
    th, tw = 3, 3
    t = 2 * th * tw
    v = np.full((16, c * t + 8), np.nan, dtype)[:, :c * t].reshape(16, c, t)
    cpu_kernels.winograd_input(x, v, 1, 3, pt, pl, th, tw)
    xp = np.zeros((n, c, 2 * th + 2, 2 * tw + 2))
    xp[:, :, pt:pt + h, pl:pl + w] = x[:, :, :2 * th + 2 - pt, :2 * tw + 2 - pl]
    m = rng.standard_normal((16, c, t)).astype(dtype)
    y = np.full((n, c, oh, ow), 7.0, dtype)
    bias = rng.standard_normal(c).astype(dtype)
    assert not cpu_kernels.winograd_output(m, y, bias, 1, 3, th, tw)
    dy = rng.standard_normal((n, c, oh, ow)).astype(dtype)
    e = np.empty((16, c, t), dtype)
    cpu_kernels.winograd_dy(dy, e, 1, 3)
    dyp = np.zeros((n, c, 2 * th, 2 * tw))
    dyp[:, :, :oh, :ow] = dy
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for k, s in enumerate(range(1, 3)):
        for ty in range(th):
            for tx in range(tw):
                ti = (k * th + ty) * tw + tx
                d = xp[s, :, 2 * ty:2 * ty + 4, 2 * tx:2 * tx + 4]
                np.testing.assert_allclose(v[:, :, ti].T.reshape(c, 4, 4), BT @ d @ BT.T, rtol=tol, atol=tol)
                out = AT @ m[:, :, ti].T.reshape(c, 4, 4).astype(np.float64) @ AT.T + bias[:, None, None]
                got = y[s, :, 2 * ty:2 * ty + 2, 2 * tx:2 * tx + 2]
                np.testing.assert_allclose(got, out[:, :got.shape[1], :got.shape[2]], rtol=tol, atol=tol)
                dyt = dyp[s, :, 2 * ty:2 * ty + 2, 2 * tx:2 * tx + 2]
                np.testing.assert_allclose(e[:, :, ti].T.reshape(c, 4, 4), AT.T @ dyt @ AT, rtol=tol, atol=tol)
    assert (y[[0, 3]] == 7).all()  # other samples untouched
    m[5, 1, 4] = np.inf
    assert cpu_kernels.winograd_output(m, y, bias, 1, 3, th, tw)
    with pytest.raises(ValueError, match="winograd_input"):
        cpu_kernels.winograd_input(x, v[:, :, :-1], 1, 3, pt, pl, th, tw)


def test_winograd_applies_only_where_it_computes_the_convolution(monkeypatch):
    """3x3, stride 1, dilation 1, groups 1, padding <= 2, 16+ channels, the compiled kernels on; else not (the
    shift or im2col paths run)."""
    def applies(xs, ws, stride=1, padding=1, dilation=1, groups=1, dtype=np.float32):
        g = C.conv2d_geometry(xs, ws, stride, padding, dilation, groups)
        return conv_numpy.winograd_apply(g, ws[0], groups, dtype)

    assert applies((2, 16, 8, 8), (16, 16, 3, 3))
    assert applies((2, 64, 8, 8), (64, 64, 3, 3), padding=2, dtype=np.float64)
    assert not applies((2, 16, 8, 8), (16, 16, 3, 3), padding=3)
    assert not applies((2, 16, 8, 8), (16, 16, 3, 3), stride=2)
    assert not applies((2, 16, 8, 8), (16, 16, 3, 3), dilation=2)
    assert not applies((2, 32, 8, 8), (32, 16, 3, 3), groups=2)
    assert not applies((2, 16, 8, 8), (16, 16, 5, 5))
    assert not applies((2, 8, 8, 8), (16, 8, 3, 3))
    assert not applies((2, 16, 8, 8), (16, 16, 3, 3), dtype=np.float16)
    with _dispatch.use_kernels(False):
        assert not applies((2, 16, 8, 8), (16, 16, 3, 3))
    monkeypatch.setattr(conv_numpy, "WINOGRAD_MIN_TILES", 100)  # (the default: small planes take the shift path)
    assert applies((32, 64, 32, 32), (64, 64, 3, 3))  # the benchmark's conv2d 3x3-64
    assert applies((2, 16, 19, 20), (16, 16, 3, 3))  # 10 x 10 tiles
    assert not applies((2, 16, 19, 18), (16, 16, 3, 3))
    assert not applies((2, 16, 20, 20), (16, 16, 3, 3), padding=0)  # the output 18 x 18: 9 x 9 tiles
    assert applies((2, 16, 21, 21), (16, 16, 3, 3), padding=0)  # 19 x 19: 10 x 10 tiles (dx's 21 x 21: 11 x 11)


def test_winograd_of_a_strided_input_and_a_broadcast_dy(winograd_calls):
    """A non-contiguous input (column-major planes) and the stride-0 dy of ``y.sum()``: the transforms read
    contiguous copies; the results equal the reference's (float64, to 1e-12 of the sums of |terms|)."""
    x, w, b, _ = case_arrays((2, 16, 7, 8), 16, 1, np.float64)
    xs = np.ascontiguousarray(np.swapaxes(x, 2, 3)).swapaxes(2, 3)
    assert not xs.flags.c_contiguous
    xt, wt, bt = (xpnn.tensor(a, requires_grad=True) for a in (xs, w, b))
    y = F.conv2d(xt, wt, bt, 1, 1)
    y.sum().backward()
    ones = np.ones(y.shape)
    want = reference(x, w, b, ones, 1)
    scale = bounds(x, w, ones, 1)
    assert winograd_calls == [(16, 16), (16, 16)]
    for a, e, s in zip((np.asarray(y.data), xt.grad, wt.grad), want, scale):
        assert (np.abs(a - e) <= 1e-12 * s + 1e-300).all()


@pytest.mark.parametrize("kind", ["misaligned", "memmap"])
def test_winograd_forward_with_a_misaligned_or_subclass_bias(tmp_path, winograd_calls, kind):
    """A bias whose data is not aligned to its dtype (``np.frombuffer`` at an odd byte offset) or an ndarray
    subclass (``np.load(..., mmap_mode="r")``), on the functional API and through the tape: the transforms read an
    aligned plain array; y equals the reference's (no ValueError from the compiled output transform)."""
    x, w, b, dy = case_arrays((2, 16, 7, 8), 16, 1, np.float64)
    if kind == "misaligned":
        raw = np.zeros(b.nbytes + 1, np.uint8)
        bm = np.frombuffer(raw.data, dtype=b.dtype, offset=1, count=b.size)
        assert not bm.flags.aligned
        raw[1:] = b.view(np.uint8)
    else:
        np.save(tmp_path / "b.npy", b)
        bm = np.load(tmp_path / "b.npy", mmap_mode="r")
        assert type(bm) is np.memmap
    want = reference(x, w, b, dy, 1)
    np.testing.assert_allclose(F.conv2d(x, w, bm, 1, 1), want[0], rtol=1e-12, atol=1e-12)
    got = through_tape(x, w, bm, dy, 1)
    assert winograd_calls
    for a, e in zip(got, want):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def test_winograd_backward_with_the_kernels_turned_off_after_the_forward(winograd_calls):
    """A forward on the Winograd path, then its backward with the compiled kernels off (``use_kernels(False)``, as
    an evaluation helper or another thread may set): dx and dW from the NumPy paths, equal to the reference's (no
    ValueError from the transforms); the same with the kernels turned off between the two backwards of a retained
    graph."""
    x, w, b, dy = case_arrays((2, 16, 7, 8), 16, 1, np.float64)
    want = reference(x, w, b, dy, 1)
    for off_for_both in (True, False):
        winograd_calls.clear()
        xt, wt, bt = (xpnn.tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.conv2d(xt, wt, bt, 1, 1)
        assert winograd_calls == [(16, 16)]
        if not off_for_both:
            y.backward(xpnn.tensor(dy), retain_graph=True)
            for t in (xt, wt, bt):
                t.grad = None
        with _dispatch.use_kernels(False):
            y.backward(xpnn.tensor(dy))
        for a, e in zip((xt.grad, wt.grad, bt.grad), want[1:]):
            np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def test_winograd_runs_to_its_end_when_another_thread_turns_the_kernels_off(monkeypatch, winograd_calls):
    """The kernels turned off (by another thread: the switch is process-wide) while a Winograd forward or dx is
    between its transforms: the call finishes on the compiled transforms it chose, with the reference's values."""
    x, w, b, dy = case_arrays((3, 16, 7, 8), 16, 1, np.float64)
    want = reference(x, w, b, dy, 1)
    monkeypatch.setattr(conv_numpy, "WINOGRAD_BLOCK_TILES", 1)  # one sample per block: transforms after the flip
    real = cpu_kernels.winograd_input

    def flip(*args):
        real(*args)
        _dispatch.set_kernels_enabled(False)

    monkeypatch.setattr(cpu_kernels, "winograd_input", flip)
    was = _dispatch.kernels_enabled()
    try:
        xt, wt, bt = (xpnn.tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.conv2d(xt, wt, bt, 1, 1)
        _dispatch.set_kernels_enabled(True)
        y.backward(xpnn.tensor(dy))
    finally:
        _dispatch.set_kernels_enabled(was)
    assert winograd_calls == [(16, 16), (16, 16)]
    for a, e in zip((np.asarray(y.data), xt.grad, wt.grad, bt.grad), want):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def test_winograd_keeps_the_transformed_input_only_for_a_weight_gradient(monkeypatch):
    """The forward keeps every block's transformed input V (4x the input) only where dW will be asked for: under
    no_grad, on plain arrays, or with a frozen weight it runs block by block in one V (peak memory well below the
    whole batch's V), and a frozen weight's dx is still the reference's."""
    import tracemalloc
    from xpnn.functional import _workspace
    monkeypatch.setattr(conv_numpy, "WINOGRAD_BLOCK_TILES", 1)  # one sample per block
    x, w, b, dy = case_arrays((16, 16, 16, 16), 16, 1, np.float64)
    v_all = 16 * 16 * 64 * x.shape[0] * x.itemsize  # every sample's V: 16 entries x C x 64 tiles
    cpu_threads.set_num_threads(1)
    try:
        for run in ("no_grad", "arrays", "frozen"):
            _workspace.clear()
            xt, wt = xpnn.tensor(x, requires_grad=run == "frozen"), xpnn.tensor(w, requires_grad=False)
            tracemalloc.start()
            try:
                if run == "no_grad":
                    with xpnn.no_grad():
                        y = F.conv2d(xpnn.tensor(x), xpnn.tensor(w, requires_grad=True), None, 1, 1)
                elif run == "arrays":
                    y = F.conv2d(x, w, None, 1, 1)
                else:
                    y = F.conv2d(xt, wt, None, 1, 1)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < v_all / 2, (run, peak, v_all)
            if run == "frozen":
                y.backward(xpnn.tensor(dy))
                np.testing.assert_allclose(xt.grad, reference(x, w, b, dy, 1)[1], rtol=1e-12, atol=1e-12)
                assert wt.grad is None
    finally:
        cpu_threads.set_num_threads(None)


@pytest.mark.parametrize("where", ["x", "dy"])
def test_winograd_transforms_overflowing_a_finite_float32_convolution(winograd_calls, where):
    """Rows alternating +-2e38 (float32): the direct convolution of a centre-tap kernel is finite, but the transforms'
    differences (d2 - d1 of x, p - q of dy) overflow to inf; the results are recomputed, finite and equal to the
    reference's."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    dy = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    big = x if where == "x" else dy
    big[...] = 0
    big[:, 0, ::2] = 2e38
    big[:, 0, 1::2] = -2e38
    w = np.zeros((16, 16, 3, 3), np.float32)
    w[:, 0, 1, 1] = 0.5  # (dW's entries for channel 0 stay sums of finite products of the others' x and dy)
    b = np.zeros(16, np.float32)
    with np.errstate(all="ignore"):
        got = through_tape(x, w, b, dy, 1)
        want = reference(x, w, b, dy, 1)
    assert winograd_calls
    assert np.isfinite(want[0 if where == "x" else 1]).all()  # (y from x, dx from dy: finite)
    for a, e in zip(got, want):
        fin = np.isfinite(e)
        np.testing.assert_array_equal(np.isfinite(a), fin)
        np.testing.assert_allclose(a[fin], e[fin], rtol=1e-5, atol=1e-30 + 1e-6 * np.abs(e[fin]).max())


@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_two_forwards_then_two_backwards(monkeypatch, winograd_calls, threads):
    """Two forwards of one layer on different inputs (the second's recycled buffers must not be the first's saved V
    or output), a no_grad forward between, then the backwards in reverse order, one retained and run again: every
    y, dx and dW equals the reference's of its own input."""
    monkeypatch.setattr(conv_numpy, "CHUNK_MIN_ELEMENTS", 1)
    monkeypatch.setattr(conv_numpy, "WINOGRAD_BLOCK_TILES", 1)
    (x1, w, b, dy1), (x2, _, _, dy2) = case_arrays((3, 16, 7, 8), 16, 1, np.float64, seed=1), \
        case_arrays((3, 16, 7, 8), 16, 1, np.float64, seed=5)
    want = [reference(x, w, b, dy, 1) for x, dy in ((x1, dy1), (x2, dy2))]
    cpu_threads.set_num_threads(threads)
    try:
        wt, bt = xpnn.tensor(w, requires_grad=True), xpnn.tensor(b, requires_grad=True)
        xs = [xpnn.tensor(x, requires_grad=True) for x in (x1, x2)]
        ys = [F.conv2d(x, wt, bt, 1, 1) for x in xs]
        with xpnn.no_grad():
            F.conv2d(xpnn.tensor(x2 * 3), wt, bt, 1, 1)
        got = {}
        for k, retain in ((1, True), (1, False), (0, False)):
            wt.grad = bt.grad = None
            xs[k].grad = None
            ys[k].backward(xpnn.tensor((dy1, dy2)[k]), retain_graph=retain)
            got[k, retain] = (np.asarray(ys[k].data), xs[k].grad, wt.grad, bt.grad)
    finally:
        cpu_threads.set_num_threads(None)
    assert len(winograd_calls) == 3 + 3
    for (k, _), arrays in got.items():
        for a, e in zip(arrays, want[k]):
            np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)
