"""Kernel cases for the sanitized CPU shim; run by ``shim.asan.run_cases`` in a Python with ASan's runtime preloaded.

    python tests/shim/asan_runner.py --library LIB [--numpy-buffers] [CASE ...]

Every kernel and dtype of the registry runs at least once, through the launch code of ``xpnn._cuda.launch``: rows
of width 1, 7, 1000 and 4097 (warp-per-row and block-per-row), -inf entries and rows, ignored targets, more rows
than blocks, every optimizer with its optional state buffers. Inputs are C-contiguous views at the start of larger
arrays, so a kernel reading one element past its input reads the NumPy array's slack; the loader hands the kernels
exactly-sized ``malloc`` copies instead (unless ``--numpy-buffers``), where ASan sees the overflow. Results are
compared with the array-API reference too. Prints ``ok CASE`` per case; a sanitizer finding aborts the process.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]

import numpy as np  # noqa: E402

import xpnn.functional as F  # noqa: E402
from xpnn import _dispatch  # noqa: E402
from xpnn._cuda import launch, make_provider, registry  # noqa: E402
from xpnn.functional import mixed_precision, updates  # noqa: E402

from shim.loader import ShimLoader  # noqa: E402

FLOATS = ("float16", "float32", "float64")
WIDTHS = (1, 7, 1000, 4097)
TOL = {"float16": dict(rtol=5e-3, atol=5e-3), "float32": dict(rtol=2e-5, atol=1e-6),
       "float64": dict(rtol=1e-12, atol=1e-13)}
Case = Callable[[Callable[..., ShimLoader]], None]


def slack(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous view at the start of a larger array (NaN after its end)."""
    flat = np.full(a.size + 16, np.nan if a.dtype.kind == "f" else -1, dtype=a.dtype)
    flat[:a.size] = a.ravel()
    return flat[:a.size].reshape(a.shape)


def run(loader: ShimLoader, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn`` through the shim kernels, checked against the reference (kernels off)."""
    copies = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args]  # in-place updates
    with np.errstate(all="ignore"):
        with _dispatch.use_kernels(False):
            want = fn(*copies, **kwargs)
        before = loader.launches
        with _dispatch.use_provider(make_provider(loader)):
            got = fn(*args, **kwargs)
    if loader.launches == before:
        raise AssertionError(f"{fn.__name__} did not run a shim kernel")
    dtype = np.dtype(args[0].dtype).name
    pairs = list(zip(got, want)) if isinstance(got, tuple) else [(got, want)]
    if got is None:  # in-place optimizer update: compare every array argument
        pairs = [(a, c) for a, c in zip(args, copies) if isinstance(a, np.ndarray)]
    for g, w in pairs:
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64), **TOL[dtype],
                                   err_msg=f"{fn.__name__} {dtype} {np.shape(args[0])} {kwargs}")
    return got


def rows(n: int, width: int, dtype: str, seed: int = 0) -> np.ndarray:
    """Distinct rows: row 1 at |x| ~ 1e4, row 2 with -inf entries, row 3 all -inf (when n allows)."""
    rng = np.random.default_rng(seed + width)
    x = rng.standard_normal((n, width)) * 3
    x[:, 0] += np.arange(n)
    if n > 1:
        x[1] *= 3e3 if dtype != "float16" else 1
    if n > 2 and width > 1:
        x[2, 1::2] = -np.inf
    return x.astype(dtype)


# ---- cases ----------------------------------------------------------------------------------------------------------

def activations(make: Callable[..., ShimLoader]) -> None:
    loader = make()
    rng = np.random.default_rng(1)
    for dtype in FLOATS:
        for shape in ((1,), (7,), (33, 17)):
            y = slack(rng.uniform(0, 1, shape).astype(dtype))
            x = slack((rng.standard_normal(shape) * 3).astype(dtype))
            dy = slack(rng.standard_normal(shape).astype(dtype))
            run(loader, F.sigmoid_backward, y, dy)
            run(loader, F.tanh_backward, y, dy)
            run(loader, F.relu_backward, x, dy)
            run(loader, F.leaky_relu_backward, x, dy, 0.2)
            run(loader, F.elu_backward, x, dy, 0.7)
            run(loader, F.selu_backward, x, dy)
            run(loader, F.softplus_backward, x, dy, 0.5, 1.0)
            run(loader, F.mish_backward, x, dy)


def row_kernels(make: Callable[..., ShimLoader]) -> None:
    loader = make()
    for dtype in FLOATS:
        for width in WIDTHS:
            x = rows(5, width, dtype)
            x[3] = -np.inf  # a whole row of -inf
            x = slack(x)
            for fn in (F.logsumexp, F.softmax, F.log_softmax):
                run(loader, fn, x)


def cross_entropy(make: Callable[..., ShimLoader]) -> None:
    loader = make()
    for dtype in FLOATS:
        for width in WIDTHS:
            x = slack(rows(6, width, dtype, seed=5))
            target = np.random.default_rng(width).integers(0, width, 6)
            target[2] = 0  # a finite entry of the row with -inf entries
            target[3] = -100  # ignored
            target[5] = width - 1  # the last column
            target = slack(target)
            for reduction in ("mean", "sum", "none"):
                run(loader, F.cross_entropy_with_grad, x, target, reduction=reduction,
                    label_smoothing=0.1 if reduction != "sum" else 0.0)
        x = slack(rows(4, 9, dtype))
        run(loader, F.cross_entropy_with_grad, x, np.array([3, 5, 3, 8], np.int32), ignore_index=3)
        run(loader, F.cross_entropy_with_grad, x, slack(np.full(4, -100)))  # every target ignored: NaN mean


@contextmanager
def max_grid(n: int) -> Iterator[None]:
    old, launch.MAX_GRID = launch.MAX_GRID, n
    try:
        yield
    finally:
        launch.MAX_GRID = old


def grid_stride(make: Callable[..., ShimLoader]) -> None:
    """More rows than blocks (each warp or block loops over rows; partial losses of two blocks), in both thread
    orders, and thousands of narrow rows (hundreds of blocks add their partial losses)."""
    for reverse in (False, True):
        loader = make(reverse=reverse)
        with max_grid(2):
            for width in (70, 300):  # warp rows, block rows
                x = slack(rows(19, width, "float32"))
                t = np.arange(19) * 7 % width
                t[[3, 11]] = -100
                run(loader, F.softmax, x)
                for reduction in ("mean", "sum", "none"):
                    run(loader, F.cross_entropy_with_grad, x, slack(t), reduction=reduction, label_smoothing=0.1)
    rng = np.random.default_rng(4)
    x = slack(rng.standard_normal((3001, 3)).astype(np.float32))
    t = rng.integers(0, 3, 3001)
    t[::5] = -100
    run(make(), F.cross_entropy_with_grad, x, slack(t))


def _steps(loader: ShimLoader, fn: Callable[..., Any], n: int, dtype: str, states: tuple[bool, ...],
           step_kwargs: Callable[[int], dict]) -> None:
    """Three updates from zero state (``states``: which optional buffers exist; the others are None)."""
    rng = np.random.default_rng(n)
    param = slack(rng.standard_normal(n).astype(dtype))
    bufs = [slack(np.zeros(n, dtype)) if keep else None for keep in states]
    for step in (1, 2, 3):
        run(loader, fn, param, slack(rng.standard_normal(n).astype(dtype)), *bufs, **step_kwargs(step))


def optimizers(make: Callable[..., ShimLoader]) -> None:
    loader = make()
    for dtype in ("float32", "float64"):
        for n in (1, 7, 1037):
            for opts in (dict(), dict(weight_decay=0.1, decoupled_weight_decay=True),
                         dict(amsgrad=True, maximize=True, weight_decay=0.01)):
                _steps(loader, updates.adam_update, n, dtype, (True, True, opts.get("amsgrad", False)),
                       lambda s, o=opts: dict(step=s, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, **o))
            for opts in (dict(), dict(momentum=0.9, nesterov=True, weight_decay=0.01),
                         dict(momentum=0.8, dampening=0.3, maximize=True)):
                _steps(loader, updates.sgd_update, n, dtype, (opts.get("momentum", 0) != 0,),
                       lambda s, o=opts: dict(lr=0.05, first_step=s == 1, **o))
            _steps(loader, updates.adagrad_update, n, dtype, (True,),
                   lambda s: dict(step=s, lr=0.1, lr_decay=0.1, weight_decay=0.05))
            if dtype == "float32":  # float16 params with float32 masters: one fused kernel
                rng = np.random.default_rng(n)
                master = rng.standard_normal(n).astype(np.float32)
                arrays = [slack(master.astype(np.float16)), slack(master)] + [slack(np.zeros(n, np.float32))
                                                                               for _ in range(3)]
                for step in (1, 2, 3):
                    run(loader, mixed_precision.adam_update_mixed, arrays[0], arrays[1],
                        slack(rng.standard_normal(n).astype(np.float16)), *arrays[2:], step=step, lr=1e-2,
                        beta1=0.9, beta2=0.999, eps=1e-8, amsgrad=True, weight_decay=0.01)
            for momentum, centered in ((0.0, False), (0.9, False), (0.0, True), (0.5, True)):
                _steps(loader, updates.rmsprop_update, n, dtype, (True, centered, momentum > 0),
                       lambda s, m=momentum, c=centered: dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.1,
                                                              momentum=m, centered=c))


def conv(make: Callable[..., ShimLoader]) -> None:
    """im2col/col2im (through conv2d and avg_pool2d) and max-pool forward/backward on edge geometries: kernel =
    input size, 1x1 with stride > kernel, dilation, groups, padding, ceil_mode."""
    loader = make()
    rng = np.random.default_rng(6)

    def max_pool2d_backward(dy: np.ndarray, argmax: np.ndarray, *args: Any) -> Any:  # dy first: run()'s dtype
        return F.max_pool2d_backward(argmax, dy, *args)

    for dtype in FLOATS:
        for xs, ws, stride, padding, dilation, groups in (
                ((2, 3, 7, 6), (4, 3, 3, 2), 1, 0, 1, 1), ((2, 4, 9, 8), (6, 2, 3, 3), 2, 1, 2, 2),
                ((1, 2, 5, 5), (2, 2, 5, 5), 1, 0, 1, 1), ((3, 6, 8, 10), (3, 2, 1, 1), 3, (1, 2), 1, 3)):
            x = slack(rng.standard_normal(xs).astype(dtype))
            w = slack((rng.standard_normal(ws) * 0.5).astype(dtype))
            y = run(loader, F.conv2d, x, w, None, stride, padding, dilation, groups)
            dy = slack(rng.standard_normal(y.shape).astype(dtype))
            run(loader, F.conv2d_backward, x, w, dy, stride, padding, dilation, groups)
        for xs, k, st, p, d, ceil in (((2, 3, 7, 6), (3, 2), (2, 1), 1, 1, True), ((1, 2, 9, 9), 3, 2, 1, 2, True),
                                      ((2, 2, 4, 4), 4, 1, 0, 1, False), ((1, 2, 5, 5), 1, 2, 0, 1, False)):
            x = slack(rng.standard_normal(xs).astype(dtype))
            y, arg = run(loader, F.max_pool2d_with_argmax, x, k, st, p, d, ceil)
            dy = slack(rng.standard_normal(y.shape).astype(dtype))
            run(loader, max_pool2d_backward, dy, slack(arg), xs, k, st, p, d, ceil)
            if d == 1:
                run(loader, F.avg_pool2d, x, k, st, p, ceil, False)


def split_rows(make: Callable[..., ShimLoader]) -> None:
    """Few wide rows split across blocks (kernels/row_split.cu), thresholds lowered: chunks of 64 entries and a
    shorter last chunk, every dtype."""
    old = launch.SPLIT_MIN_COLS, launch.SPLIT_MIN_CHUNK
    launch.SPLIT_MIN_COLS, launch.SPLIT_MIN_CHUNK = 100, 64
    try:
        loader = make()
        for dtype in FLOATS:
            for n, width in ((1, 1000), (3, 4097)):
                x = slack(rows(n, width, dtype))
                for fn in (F.softmax, F.log_softmax, F.logsumexp):
                    run(loader, fn, x)
    finally:
        launch.SPLIT_MIN_COLS, launch.SPLIT_MIN_CHUNK = old


def capturable(make: Callable[..., ShimLoader]) -> None:
    """kernels/capturable.cu: the optimizers with step/lr in (exact-size, 0-d) device buffers; unscale + check."""
    from xpnn.amp import unscale_and_check_

    loader = make()
    for dtype in ("float32", "float64"):
        for n in (1, 7, 1037):
            for opts in (dict(), dict(weight_decay=0.1, decoupled_weight_decay=True),
                         dict(amsgrad=True, maximize=True, weight_decay=0.01)):
                _steps(loader, updates.adam_update, n, dtype, (True, True, opts.get("amsgrad", False)),
                       lambda s, o=opts, d=dtype: dict(step=slack(np.asarray(s, d)), lr=slack(np.asarray(1e-2, d)),
                                                       beta1=0.9, beta2=0.999, eps=1e-8, **o))
            dev = lambda s, d=dtype: dict(lr=slack(np.asarray(0.05, d)), step=slack(np.asarray(s, d)))  # noqa: E731
            _steps(loader, updates.sgd_update, n, dtype, (True,),
                   lambda s, d=dev: dict(lr=d(s)["lr"], momentum=0.9, nesterov=True, first_step=s == 1))
            _steps(loader, updates.adagrad_update, n, dtype, (True,),
                   lambda s, d=dev: dict(**d(s), lr_decay=0.1, weight_decay=0.05))
            _steps(loader, updates.rmsprop_update, n, dtype, (True, True, True),
                   lambda s, d=dev: dict(lr=d(s)["lr"], alpha=0.99, eps=1e-8, weight_decay=0.1, momentum=0.5,
                                         centered=True))
    for dtype in FLOATS:
        for n in (1, 7, 1037):
            g = slack(np.random.default_rng(n).standard_normal(n).astype(dtype) * 64)
            if n > 1:
                g[n - 2] = np.inf
            run(loader, unscale_and_check_, g, slack(np.asarray(2.0**-6, np.float32)),
                slack(np.zeros((), np.float32)))


def recurrent(make: Callable[..., ShimLoader]) -> None:
    """kernels/rnn_cells.cu: the LSTM and GRU steps, forward and backward, at a few batch and hidden sizes."""
    from xpnn.functional.recurrent import step_backward

    def lstm_cell_backward(gx: Any, gh: Any, c: Any, dh: Any, dc: Any) -> Any:
        dgates, _, _, dc_prev = step_backward("LSTM", gx, gh, None, c, None, dh, dc)
        return dgates, dc_prev

    def gru_cell_backward(gx: Any, gh: Any, h: Any, dh: Any) -> Any:
        return step_backward("GRU", gx, gh, h, None, None, dh, None)[:3]

    loader = make()
    rng = np.random.default_rng(8)
    for dtype in FLOATS:
        for n, hidden in ((1, 1), (3, 5), (7, 33)):
            state = slack(rng.standard_normal((n, hidden)).astype(dtype))
            dh, dc = (slack(rng.standard_normal((n, hidden)).astype(dtype)) for _ in range(2))
            for gates in (4, 3):
                gx, gh = (slack((rng.standard_normal((n, gates * hidden)) * 2).astype(dtype)) for _ in range(2))
                if gates == 4:
                    run(loader, F.lstm_cell, gx, gh, state)
                    run(loader, lstm_cell_backward, gx, gh, state, dh, dc)
                else:
                    run(loader, F.gru_cell, gx, gh, state)
                    run(loader, gru_cell_backward, gx, gh, state, dh)
def _tape(fn: Callable[..., Any], arrays: tuple[np.ndarray, ...], dy: np.ndarray) -> tuple[Any, ...]:
    """(out, the gradients of ``arrays``) of ``fn`` on Tensors, backward from ``dy``."""
    import xpnn

    ts = [xpnn.Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.backward(dy)
    return (out.data,) + tuple(t.grad for t in ts)


def transformer(make: Callable[..., ShimLoader]) -> None:
    """kernels/layer_norm.cu, attention.cu, embedding.cu and the GELU / SiLU rows, forward and backward through the
    ops: rows of every lane layout, a row of several chunks, head dims 32/64/128 and a T not a multiple of 16 or 32."""

    def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, dy: np.ndarray) -> tuple[Any, ...]:
        return _tape(lambda *t: F.layer_norm(t[0], (x.shape[-1],), t[1], t[2]), (x, w, b), dy)

    def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, dy: np.ndarray, causal: bool) -> tuple[Any, ...]:
        return _tape(lambda *t: F.scaled_dot_product_attention(*t, is_causal=causal), (q, k, v), dy)

    def gelu(x: np.ndarray, dy: np.ndarray, approximate: str) -> tuple[Any, ...]:
        return _tape(lambda t: F.gelu(t, approximate=approximate), (x,), dy)

    def silu(x: np.ndarray, dy: np.ndarray) -> tuple[Any, ...]:
        return _tape(F.silu, (x,), dy)

    def embedding_backward(dy: np.ndarray, ids: np.ndarray) -> Any:
        return F.embedding_backward(dy, ids, 20, padding_idx=3)

    loader = make()
    rng = np.random.default_rng(0)
    for dtype in FLOATS:
        for n, d in ((5, 3), (9, 70), (3, 1000), (2, 20000)):
            x, dy = (slack(rng.standard_normal((n, d)).astype(dtype)) for _ in range(2))
            w, b = (slack(rng.standard_normal(d).astype(dtype)) for _ in range(2))
            run(loader, layer_norm, x, w, b, dy)
        for head_dim, t in ((32, 37), (64, 20), (128, 9)):
            q, k, v, dy = (slack((rng.standard_normal((1, 2, t, head_dim)) * 0.5).astype(dtype)) for _ in range(4))
            for causal in (False, True):
                run(loader, attention, q, k, v, dy, causal)
        x, dy = (slack(rng.standard_normal((7, 33)).astype(dtype)) for _ in range(2))
        for approximate in ("none", "tanh"):
            run(loader, gelu, x, dy, approximate)
        run(loader, silu, x, dy)
        run(loader, embedding_backward, slack(rng.standard_normal((4, 9, 40)).astype(dtype)),
            slack(rng.integers(0, 20, (4, 9))))


CASES: dict[str, Case] = {
    "activations": activations,
    "row_kernels": row_kernels,
    "cross_entropy": cross_entropy,
    "grid_stride": grid_stride,
    "split_rows": split_rows,
    "optimizers": optimizers,
    "conv": conv,
    "capturable": capturable,
    "recurrent": recurrent,
    "transformer": transformer,
}


def covered() -> set[tuple[str, str]]:
    """(kernel, dtype) pairs the cases above are meant to reach: every registry row and dtype."""
    return {(row.name, dt) for row in registry.RAW + registry.elementwise() for dt in row.dtypes}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", required=True, type=Path)
    ap.add_argument("--numpy-buffers", action="store_true", help="no exactly-sized copies (to show they matter)")
    ap.add_argument("cases", nargs="*", metavar="CASE", help=f"any of {', '.join(CASES)} (default: all)")
    args = ap.parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}; known: {list(CASES)}")
    launched: set[tuple[str, str]] = set()

    def make(reverse: bool = False) -> ShimLoader:
        loader = ShimLoader(reverse=reverse, library=args.library, exact_buffers=not args.numpy_buffers)
        raw = loader.raw
        loader.raw = lambda row, dtype: (launched.add((row.name, dtype)), raw(row, dtype))[1]  # type: ignore
        elementwise = loader.elementwise
        loader.elementwise = lambda row, dtype: (launched.add((row.name, dtype)),  # type: ignore
                                                 elementwise(row, dtype))[1]
        return loader

    names = args.cases or list(CASES)
    for name in names:
        CASES[name](make)
        print("ok", name, flush=True)
    if not args.cases:
        missing = covered() - launched
        if missing:
            print(f"kernels never launched: {sorted(missing)}", file=sys.stderr)
            return 1
        print(f"ok every kernel and dtype ({len(launched)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
