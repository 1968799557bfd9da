"""``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` and the cells against PyTorch (weights loaded from torch, float64: outputs,
final states and every gradient within 1e-6), finite-difference checks of the cell ops, double backward, errors."""
import itertools

import numpy as np
import pytest

import xpnn
import xpnn.functional as F
import xpnn.nn as nn
from xpnn.errors import DTypeError, ShapeError
from _numgrad import numeric_grad

TOL = dict(rtol=1e-6, atol=1e-9)
MODES = ["RNN", "RNN_relu", "LSTM", "GRU"]


def _pair(torch, mode, **kw):
    """(xpnn layer, torch layer) with torch's float64 weights loaded into the xpnn one."""
    name, extra = ("RNN", {"nonlinearity": "relu"}) if mode == "RNN_relu" else (mode, {})
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(**kw, **extra).double()
    mine = getattr(nn, name)(**kw, **extra, dtype="float64")
    mine.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    return mine, ref


def _states(out, lstm):
    return list(out[1]) if lstm else [out[1]]


def _compare_grads(mine, ref, pairs):
    for name, p in mine.named_parameters():
        np.testing.assert_allclose(p.grad, dict(ref.named_parameters())[name].grad.numpy(), **TOL, err_msg=name)
    for label, (a, b) in pairs.items():
        np.testing.assert_allclose(a.grad, b.grad.numpy(), **TOL, err_msg=label)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (2, False), (2, True)])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("initial", [False, True])
def test_layer_matches_torch(torch, mode, num_layers, bidirectional, batch_first, initial):
    lstm = mode == "LSTM"
    mine, ref = _pair(torch, mode, input_size=5, hidden_size=4, num_layers=num_layers,
                      bidirectional=bidirectional, batch_first=batch_first)
    rng = np.random.default_rng(1)
    steps, batch = 6, 3
    x = rng.normal(size=(batch, steps, 5) if batch_first else (steps, batch, 5))
    rows = num_layers * (2 if bidirectional else 1)
    states = [rng.normal(size=(rows, batch, 4)) for _ in range(2 if lstm else 1)]
    X, Xt = xpnn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    S = [xpnn.tensor(s, requires_grad=True) for s in states]
    St = [torch.tensor(s, requires_grad=True) for s in states]
    hx = (tuple(S) if lstm else S[0]) if initial else None
    hxt = (tuple(St) if lstm else St[0]) if initial else None
    out, out_t = mine(X, hx), ref(Xt, hxt)
    np.testing.assert_allclose(out[0].numpy(), out_t[0].detach().numpy(), **TOL)
    assert out[0].shape == tuple(out_t[0].shape)
    for a, b in zip(_states(out, lstm), _states(out_t, lstm)):
        assert a.shape == tuple(b.shape)
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), **TOL)
    g = rng.normal(size=out[0].shape)
    gs = [rng.normal(size=s.shape) for s in _states(out, lstm)]
    loss = (out[0] * xpnn.tensor(g)).sum()
    loss_t = (out_t[0] * torch.tensor(g)).sum()
    for a, b, w in zip(_states(out, lstm), _states(out_t, lstm), gs):
        loss = loss + (a * xpnn.tensor(w)).sum()
        loss_t = loss_t + (b * torch.tensor(w)).sum()
    loss.backward()
    loss_t.backward()
    pairs = {"input": (X, Xt)}
    if initial:
        pairs.update({f"state {i}": (a, b) for i, (a, b) in enumerate(zip(S, St))})
    _compare_grads(mine, ref, pairs)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_layer_with_lengths_matches_torch_packed(torch, mode, bidirectional, batch_first):
    """A padded batch with ``lengths=`` equals torch's packed run padded back: outputs (zeros past each end), the
    states at each sequence's last step, and the gradients (zero at padded input steps)."""
    lstm = mode == "LSTM"
    mine, ref = _pair(torch, mode, input_size=3, hidden_size=4, num_layers=2, bidirectional=bidirectional,
                      batch_first=batch_first)
    rng = np.random.default_rng(2)
    lengths = [3, 5, 1, 5]  # unsorted, with a tie
    steps, batch = 5, 4
    x = rng.normal(size=(batch, steps, 3) if batch_first else (steps, batch, 3))
    rows = 2 * (2 if bidirectional else 1)
    states = [rng.normal(size=(rows, batch, 4)) for _ in range(2 if lstm else 1)]
    X, Xt = xpnn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    S = [xpnn.tensor(s, requires_grad=True) for s in states]
    St = [torch.tensor(s, requires_grad=True) for s in states]
    out = mine(X, tuple(S) if lstm else S[0], lengths=lengths)
    packed = torch.nn.utils.rnn.pack_padded_sequence(Xt, torch.tensor(lengths), batch_first=batch_first,
                                                     enforce_sorted=False)
    out_t = ref(packed, tuple(St) if lstm else St[0])
    padded_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_t[0], batch_first=batch_first, total_length=steps)
    np.testing.assert_allclose(out[0].numpy(), padded_t.detach().numpy(), **TOL)
    for a, b in zip(_states(out, lstm), _states(out_t, lstm)):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), **TOL)
    g = rng.normal(size=out[0].shape)
    loss = (out[0] * xpnn.tensor(g)).sum() + sum((s * s).sum() for s in _states(out, lstm))
    loss_t = (padded_t * torch.tensor(g)).sum() + sum((s * s).sum() for s in _states(out_t, lstm))
    loss.backward()
    loss_t.backward()
    _compare_grads(mine, ref, {"input": (X, Xt), **{f"state {i}": p for i, p in enumerate(zip(S, St))}})
    pad = np.arange(steps)[:, None] >= np.asarray(lengths)[None, :]  # (T, N)
    gx = X.grad.transpose(1, 0, 2) if batch_first else X.grad
    assert np.all(gx[pad] == 0)


@pytest.mark.parametrize("mode", MODES)
def test_padded_steps_change_nothing(mode):
    """Other values at the padded steps: the same outputs, states and gradients."""
    lstm = mode == "LSTM"
    kind, extra = ("RNN", {"nonlinearity": "relu"}) if mode == "RNN_relu" else (mode, {})
    m = getattr(nn, kind)(3, 4, bidirectional=True, dtype="float64", seed=0, **extra)
    rng = np.random.default_rng(3)
    lengths = np.array([4, 2, 3])
    x = rng.normal(size=(4, 3, 3))
    x2 = x.copy()
    x2[np.arange(4)[:, None] >= lengths[None, :]] = 1e3  # garbage past the ends
    results = []
    for data in (x, x2):
        m.zero_grad()
        X = xpnn.tensor(data, requires_grad=True)
        out = m(X, lengths=lengths)
        states = _states(out, lstm)
        (out[0].sum() + sum(s.sum() for s in states)).backward()
        results.append([out[0].numpy(), *[s.numpy() for s in states], X.grad,
                        *[p.grad.copy() for p in m.parameters()]])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [True, False])
def test_cells_match_torch(torch, mode, bias):
    lstm = mode == "LSTM"
    name, extra = ("RNNCell", {"nonlinearity": "relu"}) if mode == "RNN_relu" else (mode + "Cell", {})
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(5, 4, bias=bias, **extra).double()
    mine = getattr(nn, name)(5, 4, bias=bias, dtype="float64", **extra)
    mine.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    assert list(mine.state_dict()) == list(ref.state_dict())
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 5))
    states = [rng.normal(size=(3, 4)) for _ in range(2 if lstm else 1)]
    for initial in (True, False):
        mine.zero_grad()
        ref.zero_grad()
        X, Xt = xpnn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        S = [xpnn.tensor(s, requires_grad=True) for s in states]
        St = [torch.tensor(s, requires_grad=True) for s in states]
        hx = (tuple(S) if lstm else S[0]) if initial else None
        hxt = (tuple(St) if lstm else St[0]) if initial else None
        out, out_t = mine(X, hx), ref(Xt, hxt)
        outs, outs_t = (list(out), list(out_t)) if lstm else ([out], [out_t])
        for a, b in zip(outs, outs_t):
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), **TOL)
        sum((a * a).sum() for a in outs).backward()
        sum((b * b).sum() for b in outs_t).backward()
        _compare_grads(mine, ref, {"input": (X, Xt), **({f"state {i}": p for i, p in enumerate(zip(S, St))}
                                                         if initial else {})})
    # unbatched: (input_size,) and (hidden_size,)
    one = mine(xpnn.tensor(x[0]), tuple(xpnn.tensor(s[0]) for s in states) if lstm else xpnn.tensor(states[0][0]))
    one_t = ref(torch.tensor(x[0]), tuple(torch.tensor(s[0]) for s in states) if lstm else torch.tensor(states[0][0]))
    for a, b in zip(*((list(one), list(one_t)) if lstm else ([one], [one_t]))):
        assert a.shape == (4,)
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), **TOL)


def test_parameter_names_and_shapes_match_torch(torch):
    for name, kw in itertools.product(["RNN", "LSTM", "GRU"], [dict(num_layers=2, bidirectional=True),
                                                                dict(num_layers=3, bias=False)]):
        ref = getattr(torch.nn, name)(7, 5, **kw)
        mine = getattr(nn, name)(7, 5, **kw)
        assert [(k, tuple(v.shape)) for k, v in mine.state_dict().items()] == \
            [(k, tuple(v.shape)) for k, v in ref.state_dict().items()]
        assert repr(mine) == repr(ref)
        bound = 1 / np.sqrt(5)  # torch's init: every parameter U(-1/sqrt(H), 1/sqrt(H))
        assert all(np.abs(p.data).max() <= bound for p in mine.parameters())


def test_unbatched_input_matches_torch(torch):
    mine, ref = _pair(torch, "LSTM", input_size=3, hidden_size=2, num_layers=2, bidirectional=True)
    x = np.random.default_rng(5).normal(size=(4, 3))
    out, (h, c) = mine(xpnn.tensor(x))
    out_t, (h_t, c_t) = ref(torch.tensor(x))
    assert out.shape == (4, 4) and h.shape == (4, 2)
    for a, b in ((out, out_t), (h, h_t), (c, c_t)):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), **TOL)


def test_arrays_in_arrays_out():
    m = nn.GRU(3, 2, dtype="float64", seed=0)
    x = np.random.default_rng(6).normal(size=(4, 2, 3))
    out, h = m(x)
    assert type(out) is np.ndarray and type(h) is np.ndarray
    ref_out, ref_h = m(xpnn.tensor(x))
    np.testing.assert_array_equal(out, ref_out.numpy())
    np.testing.assert_array_equal(h, ref_h.numpy())


def test_dropout_between_layers():
    m = nn.LSTM(3, 8, num_layers=2, dropout=0.5, dtype="float64", seed=0)
    x = xpnn.tensor(np.random.default_rng(7).normal(size=(5, 2, 3)))
    m.eval()
    a, b = m(x)[0].numpy(), m(x)[0].numpy()
    np.testing.assert_array_equal(a, b)
    m.train()
    assert not np.allclose(m(x)[0].numpy(), a)
    with pytest.warns(UserWarning, match="num_layers=1"):
        nn.GRU(3, 4, dropout=0.2)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cell_ops_gradcheck(cell):
    """Finite differences (float64) of ``F.lstm_cell`` / ``F.gru_cell`` for every input, both outputs."""
    rng = np.random.default_rng(8)
    hidden, gates = 3, 4 if cell == "lstm" else 3
    gx, gh = rng.normal(size=(2, gates * hidden)), rng.normal(size=(2, gates * hidden))
    state = rng.normal(size=(2, hidden))
    weights = [rng.normal(size=(2, hidden)) for _ in range(2 if cell == "lstm" else 1)]
    op = F.lstm_cell if cell == "lstm" else F.gru_cell

    def value(*arrays):
        out = op(*arrays)
        outs = out if isinstance(out, tuple) else (out,)
        return sum((o * w).sum() for o, w in zip(outs, weights))

    ts = [xpnn.tensor(a, requires_grad=True) for a in (gx, gh, state)]
    value(*ts).backward()
    for t, a, name in zip(ts, (gx, gh, state), ("gx", "gh", "state")):
        np.testing.assert_allclose(t.grad, numeric_grad(lambda: float(value(gx, gh, state)), a),
                                   rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_cell_double_backward_matches_torch(torch, mode):
    """``create_graph=True`` through the cell ops: the gradient of a function of the input gradient."""
    torch.manual_seed(0)
    ref = getattr(torch.nn, mode + "Cell")(3, 2).double()
    mine = getattr(nn, mode + "Cell")(3, 2, dtype="float64")
    mine.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    x = np.random.default_rng(9).normal(size=(2, 3))
    X, Xt = xpnn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, out_t = mine(X), ref(Xt)
    y, y_t = (out[0] * out[1], out_t[0] * out_t[1]) if mode == "LSTM" else (out * out, out_t * out_t)
    (gx,) = xpnn.grad(y.sum(), [X], create_graph=True)
    (gx_t,) = torch.autograd.grad(y_t.sum(), [Xt], create_graph=True)
    np.testing.assert_allclose(gx.numpy(), gx_t.detach().numpy(), **TOL)
    (gx * gx).sum().backward()
    (gx_t * gx_t).sum().backward()
    _compare_grads(mine, ref, {"input": (X, Xt)})


@pytest.mark.parametrize("mode", MODES)
def test_layer_double_backward_matches_torch(torch, mode):
    """``create_graph=True`` through ``F.recurrence`` (bidirectional, with lengths): its backward recomputes the
    steps with recorded ops, so a function of the input gradient differentiates again."""
    lstm = mode == "LSTM"
    mine, ref = _pair(torch, mode, input_size=3, hidden_size=2, bidirectional=True)
    x = np.random.default_rng(11).normal(size=(4, 3, 3))
    lengths = [4, 2, 3]
    X, Xt = xpnn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out = mine(X, lengths=lengths)
    out_t = ref(torch.nn.utils.rnn.pack_padded_sequence(Xt, torch.tensor(lengths), enforce_sorted=False))
    y = (out[0] * out[0]).sum() + sum((s * s).sum() for s in _states(out, lstm))
    padded_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_t[0])
    y_t = (padded_t * padded_t).sum() + sum((s * s).sum() for s in _states(out_t, lstm))
    (gx,) = xpnn.grad(y, [X], create_graph=True)
    (gx_t,) = torch.autograd.grad(y_t, [Xt], create_graph=True)
    np.testing.assert_allclose(gx.numpy(), gx_t.detach().numpy(), **TOL)
    (gx * gx).sum().backward()
    (gx_t * gx_t).sum().backward()
    _compare_grads(mine, ref, {"input": (X, Xt)})


def test_generic_path_on_array_api_strict():
    strict = pytest.importorskip("array_api_strict")
    x = np.random.default_rng(10).normal(size=(4, 2, 3))
    results = []
    for backend in ("numpy", strict):
        m = nn.LSTM(3, 2, num_layers=2, bidirectional=True, dtype="float64", seed=0, backend=backend)
        X = xpnn.tensor(m.weight_ih_l0.backend.asarray(x) if hasattr(m.weight_ih_l0, "backend") else x,
                        requires_grad=True)
        out, (h, c) = m(X, lengths=[4, 3])
        (out.sum() + h.sum()).backward()
        results.append([np.asarray(a) for a in (out.numpy(), h.numpy(), X.grad, m.weight_hh_l1.grad)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_errors_name_layer_expected_and_given():
    m = nn.LSTM(4, 3, num_layers=2)
    x = xpnn.tensor(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(ShapeError, match=r"LSTM\(4, 3, num_layers=2\): expected input of shape \(T, N, 4\).*"
                                         r"got \(5, 2, 6\)"):
        m(xpnn.tensor(np.zeros((5, 2, 6), np.float32)))
    with pytest.raises(ShapeError, match=r"expected h_0 of shape \(2, 2, 3\).*got \(1, 2, 3\)"):
        m(x, (xpnn.tensor(np.zeros((1, 2, 3), np.float32)), xpnn.tensor(np.zeros((2, 2, 3), np.float32))))
    with pytest.raises(ShapeError, match=r"expected c_0 of shape \(2, 2, 3\).*got \(2, 3\)"):
        m(x, (xpnn.tensor(np.zeros((2, 2, 3), np.float32)), xpnn.tensor(np.zeros((2, 3), np.float32))))
    with pytest.raises(TypeError, match=r"LSTM.*expected hx = \(h_0, c_0\)"):
        m(x, xpnn.tensor(np.zeros((2, 2, 3), np.float32)))
    with pytest.raises(ValueError, match=r"LSTM.*lengths must be between 1 and the sequence length 5.*max 6"):
        m(x, lengths=[6, 2])
    with pytest.raises(ValueError, match=r"expected 2 lengths"):
        m(x, lengths=[5])
    with pytest.raises(DTypeError, match=r"expected input of dtype float32.*got float64"):
        m(xpnn.tensor(np.zeros((5, 2, 4))))
    with pytest.raises(ShapeError, match=r"GRU\(4, 3, batch_first=True\): expected input of shape \(N, T, 4\)"):
        nn.GRU(4, 3, batch_first=True)(xpnn.tensor(np.zeros((2, 5, 3), np.float32)))
    with pytest.raises(ShapeError, match=r"GRUCell\(4, 3\): expected hx of shape \(2, 3\), got \(3, 3\)"):
        nn.GRUCell(4, 3)(xpnn.tensor(np.zeros((2, 4), np.float32)), xpnn.tensor(np.zeros((3, 3), np.float32)))
    with pytest.raises(ShapeError, match=r"LSTMCell\(4, 3\): expected input of shape \(N, 4\).*got \(2, 5\)"):
        nn.LSTMCell(4, 3)(xpnn.tensor(np.zeros((2, 5), np.float32)))
    with pytest.raises(NotImplementedError, match="proj_size"):
        nn.LSTM(4, 3, proj_size=2)
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(4, 3, nonlinearity="sigmoid")
    with pytest.raises(ShapeError, match=r"lstm_cell: expected gh of shape \(2, 12\)"):
        F.lstm_cell(np.zeros((2, 12)), np.zeros((2, 9)), np.zeros((2, 3)))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("shape", [(0, 2, 4), (0, 4)])
def test_zero_length_sequence_raises_naming_the_layer(batch_first, shape):
    """PyTorch: "Expected sequence length to be larger than 0 in RNN"; not a reshape error from deep inside."""
    if batch_first and len(shape) == 3:
        shape = (2, 0, 4)
    with pytest.raises(ShapeError, match=r"GRU\(4, 3.*\): expected a sequence length T larger than 0.*got input of "
                                         r"shape " + re_shape(shape)):
        nn.GRU(4, 3, batch_first=batch_first)(xpnn.tensor(np.zeros(shape, np.float32)))


def re_shape(shape):
    return r"\(" + r", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + r"\)"


def test_a_list_input_raises_type_error_naming_the_layer():
    from xpnn.nn.utils.rnn import pack_padded_sequence

    with pytest.raises(TypeError, match=r"LSTM\(2, 3\): expected input to be an array, a Tensor or a PackedSequence, "
                                        r"got list"):
        nn.LSTM(2, 3)([[[0.0, 1.0]]])
    with pytest.raises(TypeError, match=r"GRUCell\(2, 3\): expected input to be an array or Tensor, got list"):
        nn.GRUCell(2, 3)([[0.0, 1.0]])
    with pytest.raises(TypeError, match=r"pack_padded_sequence: expected input to be an array or Tensor, got list"):
        pack_padded_sequence([[[0.0, 1.0]]], [1])


def _recurrence_args(mode, dtype, bias, seed=0, steps=6, batch=5, hidden=4):
    rng = np.random.default_rng(seed)
    gates = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    gx = rng.normal(size=(steps, batch, gates * hidden))
    w = rng.normal(size=(gates * hidden, hidden)) * 0.5
    b = rng.normal(size=gates * hidden) if bias else None
    h0, c0 = rng.normal(size=(batch, hidden)), (rng.normal(size=(batch, hidden)) if mode == "LSTM" else None)
    return [None if a is None else a.astype(dtype) for a in (gx, w, b, h0, c0)]


def _recurrence_run(args, mode, reverse, masks, seed=1):
    """Outputs of ``F.recurrence`` on Tensors and the gradients of a random weighting of them (arrays)."""
    ts = [None if a is None else xpnn.tensor(a, requires_grad=True) for a in args]
    out = F.recurrence(*ts, mode=mode, reverse=reverse, masks=masks)
    rng = np.random.default_rng(seed)
    loss = sum(F.sum(o * xpnn.tensor(rng.normal(size=o.shape).astype(args[0].dtype))) for o in out)
    loss.backward()
    return [o.numpy() for o in out] + [t.grad for t in ts if t is not None]


def _reference_only(run):
    """``run()`` with recurrence's NumPy overrides removed (the array-API reference runs), then restored."""
    from xpnn.autograd.op import register_override
    from xpnn.functional import recurrent_numpy

    register_override("recurrence", "forward", "numpy", None)
    register_override("recurrence", "backward", "numpy", None)
    try:
        return run()
    finally:
        register_override("recurrence", "forward", "numpy", recurrent_numpy._forward)
        register_override("recurrence", "backward", "numpy", recurrent_numpy._backward)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_recurrence_numpy_fast_path_equals_the_reference(mode, reverse, masked, bias):
    """The NumPy override of ``recurrence`` (recurrent_numpy) gives the reference's outputs, final states and
    gradients in float64 (the same operations: equal to 1e-12), with lengths (steps where every sequence runs have
    no mask), in reverse, with and without bias; twice, so the second call runs on recycled buffers."""
    from xpnn.autograd.op import register_override
    from xpnn.functional import recurrent_numpy

    args = _recurrence_args(mode, np.float64, bias)
    masks = None
    if masked:
        keep = np.arange(6)[:, None] < np.array([6, 3, 6, 1, 4])[None, :]  # (T, N)
        masks = [None if k.all() else (k[:, None], k[:, None].astype(np.float64)) for k in keep]
    want = _reference_only(lambda: _recurrence_run(args, mode, reverse, masks))
    ran = []

    def spy(ctx, *a, **kw):
        out = recurrent_numpy._forward(ctx, *a, **kw)
        ran.append(out is not NotImplemented)
        return out

    register_override("recurrence", "forward", "numpy", spy)
    try:
        for _ in range(2):
            got = _recurrence_run(args, mode, reverse, masks)
            assert len(got) == len(want)
            for a, b in zip(got, want):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    finally:
        register_override("recurrence", "forward", "numpy", recurrent_numpy._forward)
    assert ran == [True, True]


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float16, 0)])
def test_recurrence_numpy_fast_path_float32_and_float16_fallback(dtype, tol):
    """float32 runs the fast path (close to the reference); float16 is left to the reference (the same values)."""
    from xpnn.autograd.op import Context, override_for
    from xpnn.functional import recurrent_numpy

    args = _recurrence_args("LSTM", dtype, True)
    applies = recurrent_numpy._forward(Context((False,) * 5, tuple(args)), *args, mode="LSTM")
    assert (applies is NotImplemented) == (dtype == np.float16)
    assert override_for("recurrence", "forward", args[0]) is not None
    want = _reference_only(lambda: _recurrence_run(args, "LSTM", True, None))
    got = _recurrence_run(args, "LSTM", True, None)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_recurrence_output_changed_in_place_leaves_the_gradients():
    """The fast path's output is not the state buffer it saved: writing into the output after the forward leaves
    the backward's values unchanged."""
    args = _recurrence_args("LSTM", np.float64, True)
    want = _recurrence_run(args, "LSTM", False, None)
    ts = [xpnn.tensor(a, requires_grad=True) for a in args]
    ys, h, c = F.recurrence(*ts, mode="LSTM")
    ys.data[...] = 7.0
    rng = np.random.default_rng(1)
    loss = sum(F.sum(o * xpnn.tensor(rng.normal(size=o.shape))) for o in (ys, h, c))
    loss.backward()
    for t, g in zip(ts, want[3:]):
        np.testing.assert_array_equal(t.grad, g)


def test_recurrence_bias_of_the_wrong_shape_raises():
    gx, w, _, h0, c0 = _recurrence_args("LSTM", np.float64, True)
    with pytest.raises(ShapeError, match=r"recurrence: expected b_hh of shape \(16,\), got \(4,\)"):
        F.recurrence(gx, w, np.zeros(4), h0, c0, mode="LSTM")


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_recurrence_backward_twice_with_retain_graph(mode):
    """The fast path's backward reads its saved buffers without changing them: a second backward (retain_graph)
    adds the same gradients again."""
    args = _recurrence_args(mode, np.float64, True)
    ts = [None if a is None else xpnn.tensor(a, requires_grad=True) for a in args]
    out = F.recurrence(*ts, mode=mode, reverse=True)
    loss = sum(F.sum(o * o) for o in out)
    loss.backward(retain_graph=True)
    first = [t.grad.copy() for t in ts if t is not None]
    loss.backward()
    for t, g in zip([t for t in ts if t is not None], first):
        np.testing.assert_allclose(t.grad, 2 * g, rtol=1e-15)


@pytest.mark.parametrize("mode,hidden", [("LSTM", 32), ("GRU", 64), ("RNN_TANH", 128)])
@pytest.mark.parametrize("blocked", [False, True])
def test_recurrence_numpy_step_product_forms_equal_the_reference(monkeypatch, mode, hidden, blocked):
    """Both forms of the fast path's per-step products h @ weight_hh.T and dgates @ weight_hh (one product, or blocks
    of rows written into the transposed result; recurrent_numpy chooses by timing) give the reference's values in
    float64 to 1e-12, in reverse with lengths."""
    from xpnn.functional import recurrent_numpy

    monkeypatch.setattr(recurrent_numpy, "_rows", lambda n, k, m, dtype: 16 if blocked else 0)
    args = _recurrence_args(mode, np.float64, True, steps=5, batch=3, hidden=hidden)
    keep = np.arange(5)[:, None] < np.array([5, 2, 4])[None, :]
    masks = [None if k.all() else (k[:, None], k[:, None].astype(np.float64)) for k in keep]
    want = _reference_only(lambda: _recurrence_run(args, mode, True, masks))
    got = _recurrence_run(args, mode, True, masks)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_recurrence_numpy_step_product_form_is_measured_once():
    """The form of a per-step product is timed once per shape and dtype; blocks only where they tile the rows and
    are small enough for the small-matrix kernels."""
    from xpnn.functional import recurrent_numpy

    key = (3, 32, 128, "d")
    recurrent_numpy._ROWS.pop(key, None)
    first = recurrent_numpy._rows(3, 32, 128, np.float64)
    assert first in (0, 64) and recurrent_numpy._ROWS[key] == first
    recurrent_numpy._ROWS[key] = 16  # (a cached choice is not measured again)
    assert recurrent_numpy._rows(3, 32, 128, np.float64) == 16
    recurrent_numpy._ROWS.pop(key)
    assert recurrent_numpy._rows(3, 4, 16, np.float64) == 0  # (16 rows: no 64-row blocks)
    assert recurrent_numpy._rows(4096, 1024, 4096, np.float64) == 0  # (8-row blocks still too large)
