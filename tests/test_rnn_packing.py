"""``xpnn.nn.utils.rnn``: ``pack_padded_sequence`` / ``pad_packed_sequence`` with torch's layout and semantics, and
the recurrent layers on packed sequences against PyTorch (float64, within 1e-6, gradients included)."""
import numpy as np
import pytest

import xpnn
import xpnn.nn as nn
from xpnn.errors import ShapeError
from xpnn.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

TOL = dict(rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths,enforce_sorted", [([5, 3, 3, 1], True), ([2, 5, 1, 4], False)])
def test_pack_matches_torch(torch, batch_first, lengths, enforce_sorted):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, 3) if batch_first else (5, 4, 3))
    X, Xt = xpnn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    p = pack_padded_sequence(X, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
    pt = torch.nn.utils.rnn.pack_padded_sequence(Xt, torch.tensor(lengths), batch_first=batch_first,
                                                 enforce_sorted=enforce_sorted)
    assert isinstance(p, PackedSequence)
    np.testing.assert_array_equal(p.batch_sizes, pt.batch_sizes.numpy())
    np.testing.assert_array_equal(p.data.numpy(), pt.data.detach().numpy())  # distinct lengths: one order
    for a, b in ((p.sorted_indices, pt.sorted_indices), (p.unsorted_indices, pt.unsorted_indices)):
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b.numpy()))
    padded, lens = pad_packed_sequence(p, batch_first=batch_first, padding_value=-2.0, total_length=6)
    padded_t, lens_t = torch.nn.utils.rnn.pad_packed_sequence(pt, batch_first=batch_first, padding_value=-2.0,
                                                              total_length=6)
    np.testing.assert_array_equal(padded.numpy(), padded_t.detach().numpy())
    np.testing.assert_array_equal(lens, lens_t.numpy())
    g = rng.normal(size=padded.shape)
    (padded * xpnn.tensor(g)).sum().backward()
    (padded_t * torch.tensor(g)).sum().backward()
    np.testing.assert_array_equal(X.grad, Xt.grad.numpy())  # zero at the padded steps


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("initial", [False, True])
def test_layers_on_packed_sequences_match_torch(torch, mode, bidirectional, enforce_sorted, initial):
    lstm = mode == "LSTM"
    torch.manual_seed(0)
    ref = getattr(torch.nn, mode)(3, 4, num_layers=2, bidirectional=bidirectional).double()
    mine = getattr(nn, mode)(3, 4, num_layers=2, bidirectional=bidirectional, dtype="float64")
    mine.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    lengths = [6, 4, 4, 2, 1] if enforce_sorted else [2, 6, 1, 4, 4]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 5, 3))
    rows = 2 * (2 if bidirectional else 1)
    states = [rng.normal(size=(rows, 5, 4)) for _ in range(2 if lstm else 1)]
    X, Xt = xpnn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    S = [xpnn.tensor(s, requires_grad=True) for s in states]
    St = [torch.tensor(s, requires_grad=True) for s in states]
    hx = (tuple(S) if lstm else S[0]) if initial else None
    hxt = (tuple(St) if lstm else St[0]) if initial else None
    out, hn = mine(pack_padded_sequence(X, lengths, enforce_sorted=enforce_sorted), hx)
    out_t, hn_t = ref(torch.nn.utils.rnn.pack_padded_sequence(Xt, torch.tensor(lengths),
                                                              enforce_sorted=enforce_sorted), hxt)
    assert isinstance(out, PackedSequence)
    np.testing.assert_array_equal(out.batch_sizes, out_t.batch_sizes.numpy())
    np.testing.assert_allclose(out.data.numpy(), out_t.data.detach().numpy(), **TOL)
    hs, hs_t = (list(hn), list(hn_t)) if lstm else ([hn], [hn_t])
    for a, b in zip(hs, hs_t):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), **TOL)
    g = rng.normal(size=out.data.shape)
    w = [rng.normal(size=a.shape) for a in hs]
    loss = (out.data * xpnn.tensor(g)).sum() + sum((a * xpnn.tensor(v)).sum() for a, v in zip(hs, w))
    loss_t = (out_t.data * torch.tensor(g)).sum() + sum((b * torch.tensor(v)).sum() for b, v in zip(hs_t, w))
    loss.backward()
    loss_t.backward()
    np.testing.assert_allclose(X.grad, Xt.grad.numpy(), **TOL)
    if initial:
        for a, b in zip(S, St):
            np.testing.assert_allclose(a.grad, b.grad.numpy(), **TOL)
    for name, p in mine.named_parameters():
        np.testing.assert_allclose(p.grad, dict(ref.named_parameters())[name].grad.numpy(), **TOL, err_msg=name)
    padded, lens = pad_packed_sequence(out)
    assert padded.shape == (6, 5, 4 * (2 if bidirectional else 1)) and list(lens) == lengths


def test_packing_errors():
    x = xpnn.tensor(np.zeros((4, 3, 2)))
    with pytest.raises(ValueError, match=r"sorted in decreasing order when enforce_sorted=True, got \[2, 4, 1\]"):
        pack_padded_sequence(x, [2, 4, 1])
    with pytest.raises(ValueError, match=r"pack_padded_sequence: lengths must be between 1 and the sequence length "
                                         r"4.*max 5.*longer than the padded sequence"):
        pack_padded_sequence(x, [5, 2, 1])
    with pytest.raises(ValueError, match=r"at least one step"):
        pack_padded_sequence(x, [4, 2, 0])
    with pytest.raises(ValueError, match=r"expected 3 lengths"):
        pack_padded_sequence(x, [4, 2])
    with pytest.raises(ShapeError, match=r"expected input of shape \(T, B, \*\)"):
        pack_padded_sequence(xpnn.tensor(np.zeros(4)), [4])
    p = pack_padded_sequence(x, [4, 2, 1])
    with pytest.raises(ValueError, match=r"total_length to be at least .* \(4\), got 3"):
        pad_packed_sequence(p, total_length=3)
    with pytest.raises(ShapeError, match=r"LSTM\(5, 3\): expected packed data of shape \(sum\(lengths\), 5\), "
                                         r"got \(7, 2\)"):
        nn.LSTM(5, 3, dtype="float64")(p)
    with pytest.raises(ValueError, match="lengths with a padded input"):
        nn.GRU(2, 3, dtype="float64")(p, lengths=[4, 2, 1])


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_pad_sequence_matches_torch_and_passes_gradients(torch, batch_first, padding_side):
    from xpnn.nn.utils.rnn import pad_sequence

    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((n, 3)) for n in (2, 5, 1)]
    mine = [xpnn.tensor(s, requires_grad=True) for s in seqs]
    theirs = [torch.tensor(s, requires_grad=True) for s in seqs]
    got = pad_sequence(mine, batch_first=batch_first, padding_value=-2.0, padding_side=padding_side)
    want = torch.nn.utils.rnn.pad_sequence(theirs, batch_first=batch_first, padding_value=-2.0,
                                           padding_side=padding_side)
    np.testing.assert_array_equal(got.data, want.detach().numpy())
    w = rng.standard_normal(tuple(want.shape))
    (got * w).sum().backward()
    (want * torch.tensor(w)).sum().backward()
    for a, b in zip(mine, theirs):
        np.testing.assert_array_equal(a.grad, b.grad.numpy())
    assert isinstance(pad_sequence(seqs), np.ndarray)  # arrays in, an array out


@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_pack_sequence_matches_torch_through_an_lstm(torch, enforce_sorted):
    from xpnn.nn.utils.rnn import pack_sequence

    rng = np.random.default_rng(1)
    lens = (5, 3, 2) if enforce_sorted else (2, 5, 3)
    seqs = [rng.standard_normal((n, 4)) for n in lens]
    torch.manual_seed(0)
    ref = torch.nn.LSTM(4, 3).double()
    mine = nn.LSTM(4, 3, dtype="float64")
    mine.flatten_parameters()  # PyTorch code calls it (cuDNN); a no-op here
    ref.flatten_parameters()
    mine.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    packed = pack_sequence(seqs, enforce_sorted=enforce_sorted)
    tpacked = torch.nn.utils.rnn.pack_sequence([torch.tensor(s) for s in seqs], enforce_sorted=enforce_sorted)
    np.testing.assert_array_equal(packed.batch_sizes, tpacked.batch_sizes.numpy())
    out, (h, c) = mine(packed)
    tout, (th, tc) = ref(tpacked)
    np.testing.assert_allclose(out.data, tout.data.detach().numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(h, th.detach().numpy(), rtol=1e-6, atol=1e-9)


def test_pad_sequence_errors_name_the_function():
    from xpnn.nn.utils.rnn import pack_sequence, pad_sequence

    with pytest.raises(ShapeError, match=r"pad_sequence: expected every sequence to have the trailing shape and dtype "
                                         r"of sequence 0 \(\(3,\), float64\), got \(\(4,\), float64\) at sequence 1"):
        pad_sequence([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match=r"pad_sequence: expected at least one sequence"):
        pad_sequence([])
    with pytest.raises(TypeError, match=r"pad_sequence: expected a list or tuple"):
        pad_sequence(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match=r"pack_sequence: expected sequence 0 to be an array or Tensor of shape"):
        pack_sequence([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"pack_padded_sequence: `lengths` must be sorted in decreasing order"):
        pack_sequence([np.zeros((1, 2)), np.zeros((3, 2))])
