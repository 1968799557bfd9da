"""PyTorch's tensor ops for attention code (``view``/``reshape``, ``unsqueeze``, ``squeeze``, ``permute``,
``transpose``, ``contiguous``, ``clone``, ``split``, ``chunk``, ``cat``, ``stack``, ``where``, ``masked_fill``,
``tril``/``triu`` and their masks, ``expand``, integer-array indexing, ``gather``): values and gradients against
PyTorch in float64, float64 finite differences, the array-API path (array_api_strict) and bad input."""
from __future__ import annotations

import array_api_strict as xs
import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn.errors import DTypeError, ShapeError
from _numgrad import numeric_grad

RNG = np.random.default_rng(0)
MASK = RNG.random((3, 4)) > 0.5
IDX = np.array([2, 0, 2, 1, 2])
GIDX = RNG.integers(0, 4, size=(2, 3, 2))

# name -> (input shapes, constants, f(lib, inputs, constants)); lib is xpnn.functional or torch, and the calls are
# spelled the same for both (PyTorch's names)
CASES = {
    "view": ([(2, 3, 4)], {}, lambda L, x, c: x[0].view(4, 6)),
    "view_minus_one": ([(2, 3, 4)], {}, lambda L, x, c: x[0].view(-1, 4)),
    "reshape": ([(2, 3, 4)], {}, lambda L, x, c: x[0].reshape((3, 8))),
    "unsqueeze": ([(2, 3)], {}, lambda L, x, c: L.unsqueeze(x[0], -1) * x[0].unsqueeze(0).unsqueeze(2)),
    "squeeze_all": ([(2, 1, 3, 1)], {}, lambda L, x, c: x[0].squeeze()),
    "squeeze_dim": ([(2, 1, 3, 1)], {}, lambda L, x, c: L.squeeze(x[0], 1) * 1.0),
    "squeeze_kept": ([(2, 1, 3)], {}, lambda L, x, c: x[0].squeeze(0)),
    "permute": ([(2, 3, 4)], {}, lambda L, x, c: L.permute(x[0], (2, 0, 1)) * x[0].permute(2, 0, 1)),
    "transpose": ([(2, 3, 4)], {}, lambda L, x, c: L.transpose(x[0], 0, 2) + x[0].transpose(-1, 0)),
    "transpose_then_view": ([(2, 3, 4)], {}, lambda L, x, c: x[0].transpose(1, 2).contiguous().view(2, 12)),
    "clone": ([(3, 4)], {}, lambda L, x, c: x[0].clone() * L.clone(x[0])),
    "split_int": ([(7, 3)], {}, lambda L, x, c: L.split(x[0], 3)),
    "split_sizes": ([(2, 7)], {}, lambda L, x, c: x[0].split([2, 0, 5], dim=1)),
    "split_one_piece_used": ([(4, 6)], {}, lambda L, x, c: x[0].split(2, -1)[1]),
    "chunk": ([(2, 3, 7)], {}, lambda L, x, c: L.chunk(x[0], 3, dim=2)),
    "chunk_fewer": ([(5, 2)], {}, lambda L, x, c: x[0].chunk(4)),
    "cat": ([(2, 3), (2, 1), (2, 2)], {}, lambda L, x, c: L.cat(x, dim=1)),
    "cat_dim0": ([(1, 3), (2, 3)], {}, lambda L, x, c: L.cat(x)),
    "stack": ([(2, 3), (2, 3)], {}, lambda L, x, c: L.stack(x, dim=-1)),
    "where": ([(3, 4), (4,)], {"m": MASK}, lambda L, x, c: L.where(c["m"], x[0], x[1])),
    "where_scalar": ([(3, 4)], {"m": MASK}, lambda L, x, c: L.where(c["m"], 0.25, x[0]) + x[0].where(c["m"], -1.0)),
    "masked_fill": ([(2, 3, 4)], {"m": MASK}, lambda L, x, c: x[0].masked_fill(c["m"], -3.0)),
    "masked_fill_row": ([(3, 4)], {"m": MASK[:1]}, lambda L, x, c: L.masked_fill(x[0], c["m"], 2.0)),
    "tril": ([(2, 4, 5)], {}, lambda L, x, c: L.tril(x[0]) + x[0].tril(-1) + L.tril(x[0], 2)),
    "triu": ([(4, 3)], {}, lambda L, x, c: L.triu(x[0], 1) * x[0].triu()),
    "expand": ([(3, 1)], {}, lambda L, x, c: x[0].expand(2, 3, 4) * x[0].expand(-1, 4)),
    "expand_as": ([(1, 4)], {"m": MASK}, lambda L, x, c: x[0].expand_as(c["m"])),
    "index_rows": ([(3, 4)], {"i": IDX}, lambda L, x, c: x[0][c["i"]]),
    "index_cols": ([(3, 4)], {"i": IDX[:3]}, lambda L, x, c: x[0][:, c["i"]]),
    "index_pairs": ([(3, 4)], {"i": IDX, "j": IDX[::-1].copy()}, lambda L, x, c: x[0][c["i"], c["j"]]),
    "gather": ([(3, 4, 5)], {"i": GIDX}, lambda L, x, c: L.gather(x[0], 1, c["i"]) + x[0].gather(1, c["i"])),
    "gather_last": ([(3, 4)], {"i": GIDX[0]}, lambda L, x, c: x[0].gather(-1, c["i"])),
}
NP_ONLY = {"index_pairs"}  # the one-hot scatter of other namespaces takes one integer array


def _inputs(name):
    shapes = CASES[name][0]
    rng = np.random.default_rng(len(name))
    return [rng.standard_normal(s) for s in shapes]


def _weights(outs, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(o.shape)) for o in outs]


def _run_xpnn(name, arrays, ns="numpy"):
    """Outputs and input gradients of case ``name`` (loss: the outputs weighted by fixed random arrays)."""
    _, consts, fn = CASES[name]
    conv = (lambda a: a) if ns == "numpy" else xs.asarray
    ts = [xpnn.tensor(conv(a), requires_grad=True) for a in arrays]
    c = {k: xpnn.tensor(conv(v)) for k, v in consts.items()}
    outs = fn(F, ts, c)
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum(((o * conv(w)).sum() for o, w in zip(outs, _weights(outs))), start=xpnn.tensor(conv(np.zeros(()))))
    loss.backward()
    return [np.asarray(o.numpy()) for o in outs], [np.asarray(xpnn.get_backend("numpy").asarray(t.grad))
                                                   if t.grad is not None else np.zeros(t.shape) for t in ts]


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_match_torch(name):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for its tensor ops")
    arrays = _inputs(name)
    outs, grads = _run_xpnn(name, arrays)
    _, consts, fn = CASES[name]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    touts = fn(torch, ts, {k: torch.tensor(v) for k, v in consts.items()})
    touts = touts if isinstance(touts, tuple) else (touts,)
    assert len(outs) == len(touts)
    sum((o * torch.tensor(w)).sum() for o, w in zip(touts, _weights(touts))).backward()
    for o, t in zip(outs, touts):
        assert o.shape == tuple(t.shape)
        np.testing.assert_allclose(o, t.detach().numpy(), rtol=1e-6, atol=1e-12)
    for g, t in zip(grads, ts):
        want = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_match_finite_differences(name):
    arrays = _inputs(name)
    _, grads = _run_xpnn(name, arrays)
    _, consts, fn = CASES[name]
    c = {k: xpnn.tensor(v) for k, v in consts.items()}

    def loss():
        outs = fn(F, [xpnn.tensor(a) for a in arrays], c)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return float(sum(float((o.numpy() * w).sum()) for o, w in zip(outs, _weights(outs))))

    for a, g in zip(arrays, grads):
        np.testing.assert_allclose(g, numeric_grad(loss, a), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", sorted(set(CASES) - NP_ONLY))
def test_array_api_strict_matches_numpy(name):
    arrays = _inputs(name)
    outs, grads = _run_xpnn(name, arrays)
    souts, sgrads = _run_xpnn(name, arrays, ns="array_api_strict")
    for a, b in zip(outs + grads, souts + sgrads):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["where", "masked_fill", "tril", "gather", "split_sizes", "cat"])
def test_double_backward_matches_torch(name):
    """The backward rules are written with ops: a second derivative through them (of loss = sum(w * out**2)) is
    PyTorch's."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for its tensor ops")
    arrays = _inputs(name)
    _, consts, fn = CASES[name]

    def second(L, ts, c, grad, const):
        outs = fn(L, ts, c)
        outs = outs if isinstance(outs, tuple) else (outs,)
        loss = sum(((o * o * const(w)).sum() for o, w in zip(outs, _weights(outs))), start=0.0)
        gs = grad(loss, ts)
        return grad(sum(((g * g).sum() for g in gs), start=0.0), ts)

    xts = [xpnn.tensor(a, requires_grad=True) for a in arrays]
    got = second(F, xts, {k: xpnn.tensor(v) for k, v in consts.items()},
                 lambda y, ts: xpnn.grad(y, ts, create_graph=True), lambda w: w)
    tts = [torch.tensor(a, requires_grad=True) for a in arrays]
    want = second(torch, tts, {k: torch.tensor(v) for k, v in consts.items()},
                  lambda y, ts: torch.autograd.grad(y, ts, create_graph=True), torch.tensor)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.detach().numpy(), rtol=1e-6, atol=1e-12)


def test_arrays_in_arrays_out():
    x = np.arange(12.0).reshape(3, 4)
    assert type(F.transpose(x, 0, 1)) is np.ndarray and F.transpose(x, 0, 1).shape == (4, 3)
    pieces = F.split(x, 2, dim=1)
    assert all(type(p) is np.ndarray for p in pieces) and np.shares_memory(pieces[0], x)  # views
    np.testing.assert_array_equal(F.tril(x), np.tril(x))
    np.testing.assert_array_equal(F.triu(x, -1), np.triu(x, -1))
    np.testing.assert_array_equal(F.masked_fill(x, MASK, 0.0), np.where(MASK, 0.0, x))
    assert F.masked_fill(x.astype(np.float32), MASK, -np.inf).dtype == np.float32
    np.testing.assert_array_equal(F.gather(x, 1, GIDX[0]), np.take_along_axis(x, GIDX[0], 1))


def test_contiguous_copies_only_strided_arrays():
    x = np.arange(12.0).reshape(3, 4)
    assert F.contiguous(x) is x
    c = F.contiguous(x.T)
    assert c.flags.c_contiguous and not np.shares_memory(c, x)
    t = xpnn.tensor(x)
    assert t.contiguous() is t
    s = xpnn.tensor(xs.asarray(x))
    assert s.contiguous() is s  # (no strides in the array API)
    assert not np.shares_memory(F.clone(x), x)


def test_masks_match_torch():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for tril/triu")
    for rows, cols, k in [(4, None, 0), (3, 5, 1), (5, 3, -2)]:
        ones = torch.ones(rows, rows if cols is None else cols, dtype=torch.bool)
        np.testing.assert_array_equal(F.tril_mask(rows, cols, k), torch.tril(ones, k).numpy())
        np.testing.assert_array_equal(F.triu_mask(rows, cols, k), torch.triu(ones, k).numpy())
    m = F.tril_mask(3, backend=xs)
    assert isinstance(m, type(xs.asarray(1))) and m.dtype == xs.bool


def test_causal_attention_pattern():
    """The pattern attention code writes: scores masked with -inf above the diagonal, then a softmax."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for its tensor ops")
    s = np.random.default_rng(3).standard_normal((2, 4, 4))
    x = xpnn.tensor(s, requires_grad=True)
    y = F.softmax(x.masked_fill(~xpnn.tensor(F.tril_mask(4)), float("-inf")), axis=-1)
    (y * y).sum().backward()
    tx = torch.tensor(s, requires_grad=True)
    ty = torch.softmax(tx.masked_fill(~torch.tril(torch.ones(4, 4, dtype=torch.bool)), float("-inf")), -1)
    (ty * ty).sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_bad_input_errors():
    x = xpnn.tensor(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match=r"expand: cannot expand shape \(2, 3\) to \(2, 4\)"):
        x.expand(2, 4)
    with pytest.raises(ShapeError, match="expand"):
        x.expand(-1, 2, 3)  # -1 on a new axis
    with pytest.raises(ShapeError, match=r"split: sizes \[1, 1\] must .* add up to the size 3"):
        x.split([1, 1], dim=1)
    with pytest.raises(ValueError, match="chunk: chunks must be a positive int"):
        x.chunk(0)
    with pytest.raises(IndexError, match="dimension out of range"):
        F.transpose(x, 0, 2)
    with pytest.raises(IndexError, match="unsqueeze: dimension out of range"):
        x.unsqueeze(3)
    with pytest.raises(DTypeError, match="where: condition must be a bool array, got float64"):
        F.where(x, x, 0.0)
    with pytest.raises(ShapeError, match="where: operands of shapes"):
        F.where(np.zeros((4,), bool), x, 0.0)
    with pytest.raises(ShapeError, match=r"masked_fill: mask of shape \(3, 3\) does not broadcast"):
        x.masked_fill(np.zeros((3, 3), bool), 0.0)
    with pytest.raises(ShapeError, match=r"masked_fill: mask of shape \(2, 2, 3\) does not broadcast"):
        x.masked_fill(np.zeros((2, 2, 3), bool), 0.0)  # would grow the input
    with pytest.raises(ShapeError, match="tril: expected an input of at least 2 dimensions"):
        F.tril(np.zeros(3))
    with pytest.raises(IndexError, match=r"gather: index must be in \[0, 2\], got 3"):
        x.gather(1, np.array([[0, 3]]))
    with pytest.raises(IndexError, match=r"gather: index must be in \[0, 2\], got -1"):
        x.gather(1, np.array([[-1, 0]]))
    with pytest.raises(DTypeError, match="gather: index must be an integer array, got dtype float64"):
        x.gather(1, np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="gather: index of shape"):
        x.gather(0, np.zeros((3,), np.int64))


def test_masked_fill_value_tensor_gets_the_gradient_of_the_filled_entries():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for masked_fill")
    x = np.random.default_rng(4).standard_normal((3, 4))
    g = np.random.default_rng(5).standard_normal((3, 4))
    X, V = xpnn.tensor(x, requires_grad=True), xpnn.tensor(np.array(0.5), requires_grad=True)
    (X.masked_fill(xpnn.tensor(MASK), V) * g).sum().backward()
    TX, TV = torch.tensor(x, requires_grad=True), torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    (TX.masked_fill(torch.tensor(MASK), TV) * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(V.grad, TV.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(X.grad, TX.grad.numpy(), rtol=1e-12)
    with pytest.raises(ShapeError, match="masked_fill: value must be a number or a 0-d array"):
        X.masked_fill(MASK, np.ones(4))


@pytest.mark.parametrize("op", ["masked_fill", "where", "gather"])
def test_writing_into_a_saved_mask_or_index_raises_at_backward(op):
    """The bool mask of ``masked_fill``/``where`` and the index of ``gather`` are saved for the backward: a write
    into them (``t[...] = v``) between the forward and the backward raises, as in PyTorch, instead of routing the
    gradient by the new values. PyTorch raises in the same cases."""
    from xpnn.errors import InplaceModifiedError

    torch = pytest.importorskip("torch", reason="PyTorch is the reference for the version counter")
    x = RNG.normal(size=(3, 4))
    keys = {"masked_fill": MASK, "where": MASK, "gather": np.zeros((3, 1), np.int64)}
    calls = {"masked_fill": lambda t, k: t.masked_fill(k, 0.0), "where": lambda t, k: t.where(k, 0.0),
             "gather": lambda t, k: t.gather(1, k)}
    for lib, make, error in ((torch, torch.tensor, RuntimeError), (xpnn, xpnn.tensor, InplaceModifiedError)):
        t, k = make(x, requires_grad=True), make(keys[op].copy())
        y = calls[op](t, k)
        k[0, 0] = not keys[op][0, 0] if op != "gather" else 3
        with pytest.raises(error, match="modified by an inplace operation"):
            y.sum().backward()


@pytest.mark.parametrize("xp", [np, xs], ids=["numpy", "array_api_strict"])
def test_masked_fill_keeps_the_input_dtype_and_where_promotes_as_torch(xp):
    """``masked_fill`` never changes the input's dtype (an integer input with a float value truncates it, a
    non-finite one is a ValueError naming the op); ``where`` with operands of different kinds promotes as PyTorch
    (bool < integer < floating; a Python int next to a bool array is an integer), on NumPy and array_api_strict
    (whose own ``where`` refuses mixed kinds)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for masked_fill and where dtypes")
    c, i, f = np.array([True, False, True]), np.array([1, 2, 3]), np.array([0.5, 1.5, 2.5], np.float32)
    mk = (lambda a: xpnn.tensor(a, backend=xp))
    cases = [(lambda L, T: T(i).masked_fill(T(c), 1.5)), (lambda L, T: T(i).masked_fill(T(c), -2.7)),
             (lambda L, T: T(c).masked_fill(T(c), 0)), (lambda L, T: L.where(T(c), T(c), 2)),
             (lambda L, T: L.where(T(c), T(i), T(f))), (lambda L, T: L.where(T(c), T(c), T(i))),
             (lambda L, T: L.where(T(c), T(f), T(f.astype(np.float64))))]
    for case in cases:
        want, got = case(torch, torch.tensor), case(F, mk)
        got = np.asarray(got.to("numpy").numpy())
        assert got.dtype == want.numpy().dtype
        np.testing.assert_array_equal(got, want.numpy())
    with pytest.raises(ValueError, match="masked_fill: value -inf cannot be converted to the input's dtype int64"):
        mk(i).masked_fill(mk(c), float("-inf"))


def test_transpose_of_0d_and_1d_and_chunk_of_an_empty_dim_as_torch():
    """``t.transpose(0, -1)`` of a 1-D (or 0-d) Tensor is the Tensor (dims in [-1, 0]), as in PyTorch;
    ``chunk(k)`` along an axis of length 0 gives ``k`` empty pieces, as ``torch.chunk``."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for transpose and chunk")
    for shape in [(), (3,)]:
        for dims in [(0, 0), (-1, -1), (0, -1), (-1, 0)]:
            x = xpnn.tensor(np.arange(float(np.prod(shape))).reshape(shape), requires_grad=True)
            y = x.transpose(*dims)
            assert y.shape == tuple(torch.zeros(shape).transpose(*dims).shape)
            (y * 2.0).sum().backward()
            np.testing.assert_array_equal(x.grad, np.full(shape, 2.0))
    with pytest.raises(IndexError, match="transpose"):
        xpnn.tensor(np.ones(3)).transpose(0, 1)
    for shape, dim in [((0, 2), 0), ((2, 0), -1)]:
        want = [tuple(t.shape) for t in torch.zeros(shape).chunk(3, dim)]
        assert [tuple(t.shape) for t in xpnn.tensor(np.zeros(shape)).chunk(3, dim)] == want
        assert [tuple(t.shape) for t in F.chunk(np.zeros(shape), 3, dim)] == want


@pytest.mark.parametrize("key", [np.array([0, 2, 2]), [0, 1, 1], (slice(None), np.array([3, 0, 3])),
                                 (Ellipsis, [3, 0]), np.array([True, False, True])],
                         ids=["ndarray", "list", "slice-ndarray", "ellipsis-list", "bool-ndarray"])
def test_index_with_numpy_arrays_and_lists_on_array_api_strict(key):
    """``x[np.array(...)]`` and ``x[[...]]`` as in PyTorch on a Tensor of any namespace: the host index becomes an
    array of the Tensor's namespace (array_api_strict indexes with its own arrays only, and raised a TypeError from
    deep inside it)."""
    a = np.arange(12.0).reshape(3, 4)
    ref = xpnn.tensor(a, requires_grad=True)
    want = ref[key]
    (want * want).sum().backward()
    x = xpnn.tensor(a, backend=xs, requires_grad=True)
    y = x[key]
    (y * y).sum().backward()
    np.testing.assert_array_equal(np.asarray(y.to("numpy").numpy()), want.numpy())
    from xpnn.backend import to_numpy

    np.testing.assert_array_equal(to_numpy(x.grad), ref.grad)


def test_more_bad_input_names_the_op():
    """Errors that came from NumPy without the op's name (expand to fewer sizes, cat of mismatched shapes), named
    the wrong op (masked_fill's non-bool mask said "where") or let a float diagonal through (tril(x, 0.5))."""
    x = xpnn.tensor(np.ones((2, 3, 4)))
    with pytest.raises(ShapeError, match=r"expand: the number of sizes \(3, 4\) must be at least the number of "
                                         r"dimensions of shape \(2, 3, 4\)"):
        x.expand(3, 4)
    with pytest.raises(ShapeError, match=r"concat: inputs must have one shape except in dimension 1, got shapes "
                                         r"\[\(2, 3, 4\), \(2, 2, 5\)\]"):
        F.cat([x, xpnn.tensor(np.ones((2, 2, 5)))], dim=1)
    for mask in (np.ones(4, int), xpnn.tensor(np.ones(4))):
        with pytest.raises(DTypeError, match="masked_fill: mask must be a bool array, got (int64|float64)"):
            x.masked_fill(mask, 0.0)
    for fn in (F.tril, F.triu):
        with pytest.raises(TypeError, match=r"(tril|triu): diagonal must be an int, got 0.5"):
            fn(x, 0.5)
    np.testing.assert_array_equal(F.tril(np.ones((2, 2)), np.int64(-1)), [[0.0, 0.0], [1.0, 0.0]])


@pytest.mark.parametrize("xp", [np, xs], ids=["numpy", "array_api_strict"])
def test_where_of_a_condition_alone_nonzero_and_argwhere_as_torch(xp):
    """``where(condition)`` is ``torch.where(condition)`` = ``nonzero(condition, as_tuple=True)``: one index array
    per axis, in row-major order (it was a TypeError, missing arguments); ``nonzero`` gives the (K, ndim) indices
    (``torch.nonzero``, ``torch.argwhere``), ``as_tuple`` the per-axis ones; bool, integer and floating inputs, 0-d,
    empty and all-zero ones; arrays in, arrays out; Tensors in, Tensors without gradient or graph node out; the
    top-level names and the Tensor methods."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for where(condition) and nonzero")
    inputs = [np.array([[0.0, 1.5, 0.0], [-2.0, 0.0, 3.0]]), MASK, np.array([[[0, 3], [1, 0]]]), np.array(5),
              np.array(0.0), np.zeros((2, 3)), np.zeros((0, 4), bool), np.array([True])]

    def same(got, want):
        got = got.to("numpy").numpy() if isinstance(got, xpnn.Tensor) else got
        assert tuple(got.shape) == tuple(want.shape)
        np.testing.assert_array_equal(np.asarray(got), want.numpy())

    for a in inputs:
        t = torch.tensor(a)
        want_tuple, want = torch.where(t), torch.nonzero(t)
        assert len(want_tuple) == max(a.ndim, 1)
        for arg in (xp.asarray(a), xpnn.tensor(xp.asarray(a))):
            for got_tuple in (F.where(arg), xpnn.where(arg), F.nonzero(arg, as_tuple=True)):
                assert type(got_tuple) is tuple and len(got_tuple) == len(want_tuple)
                for g, w in zip(got_tuple, want_tuple):
                    same(g, w)
            for got in (F.nonzero(arg), xpnn.nonzero(arg), xpnn.argwhere(arg), F.argwhere(arg)):
                same(got, want)
                assert isinstance(got, xpnn.Tensor) == isinstance(arg, xpnn.Tensor)
    x = xpnn.tensor(xp.asarray(inputs[0]), requires_grad=True)
    for got in (x.nonzero(), x.argwhere(), *x.nonzero(as_tuple=True), *xpnn.where(x * 2 > 1)):
        assert not got.requires_grad and got.grad_fn is None
    same(x.nonzero(), torch.tensor(inputs[0]).nonzero())
    with pytest.raises(TypeError, match="where: pass both input and other, or neither"):
        F.where(MASK, np.ones((3, 4)))
    with pytest.raises(TypeError, match="as_tuple must be a bool"):
        F.nonzero(MASK, as_tuple=1)


@pytest.mark.parametrize("xp", [np, xs], ids=["numpy", "array_api_strict"])
def test_expand_as_is_an_op_of_its_own_with_expands_rules(xp):
    """``F.expand_as(x, other)`` (``Tensor.expand_as``, now one op so that ONNX export reads ``other``'s shape at run
    time): ``torch.Tensor.expand_as``'s values, ``x``'s gradient summed back, none for ``other`` (any dtype; only
    its shape is read), and expand's error naming the op."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for expand_as")
    x0, other0 = RNG.standard_normal((3, 1)), RNG.standard_normal((2, 3, 4))
    tx, to = torch.tensor(x0, requires_grad=True), torch.tensor(other0, requires_grad=True)
    ty = tx.expand_as(to)
    (ty * torch.tensor(other0)).sum().backward()
    x, other = xpnn.tensor(xp.asarray(x0), requires_grad=True), xpnn.tensor(xp.asarray(other0), requires_grad=True)
    y = F.expand_as(x, other)
    assert tuple(y.shape) == (2, 3, 4)
    np.testing.assert_array_equal(np.asarray(y.to("numpy").numpy()), ty.detach().numpy())
    (y * xpnn.tensor(xp.asarray(other0))).sum().backward()
    np.testing.assert_allclose(np.asarray(x.grad), tx.grad.numpy(), rtol=1e-12)
    assert other.grad is None
    with pytest.raises(ShapeError, match=r"expand_as: cannot expand shape \(3, 1\) to \(2, 2\)"):
        F.expand_as(x, xp.zeros((2, 2), dtype=xp.bool))
    np.testing.assert_array_equal(np.asarray(F.expand_as(xp.asarray(x0), xp.zeros((3, 2), dtype=xp.bool))),
                                  np.broadcast_to(x0, (3, 2)))  # arrays in, arrays out
