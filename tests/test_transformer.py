"""``nn.TransformerEncoderLayer``: PyTorch's parameter names, outputs and gradients with its weights loaded
(post-norm and norm_first, relu and gelu, batch_first both ways, masks), double backward, float64 finite
differences and the errors."""
import numpy as np
import pytest

import xpnn
from xpnn import nn
from xpnn.errors import DTypeError, ShapeError

from _numgrad import numeric_grad


def _pair(torch, **kw):
    kw = {"dim_feedforward": 16, "dropout": 0.0, **kw}
    tm = torch.nn.TransformerEncoderLayer(8, 2, dtype=torch.float64, **kw)
    xm = nn.TransformerEncoderLayer(8, 2, dtype="float64", **kw)
    xm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return tm, xm


def test_parameter_names_and_shapes_are_pytorchs(torch):
    for kw in ({}, {"bias": False}, {"norm_first": True, "activation": "gelu"}):
        tm = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, **kw)
        xm = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, **kw)
        assert [(k, tuple(v.shape)) for k, v in xm.state_dict().items()] == \
            [(k, tuple(v.shape)) for k, v in tm.state_dict().items()]


CASES = [(nf, act, bf, mask) for nf in (False, True) for act in ("relu", "gelu") for bf in (False, True)
         for mask in ("none", "padding", "causal")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_outputs_and_gradients_match_pytorch(case, torch):
    norm_first, activation, batch_first, mask = case
    rng = np.random.default_rng(CASES.index(case))
    tm, xm = _pair(torch, activation=activation, batch_first=batch_first, norm_first=norm_first)
    n, s = 3, 5
    x = rng.standard_normal((n, s, 8) if batch_first else (s, n, 8))
    kpm = src_mask = None
    if mask == "padding":
        kpm = np.zeros((n, s), dtype=bool)
        kpm[0, 3:] = True
        kpm[2, 4] = True
    elif mask == "causal":
        src_mask = np.triu(np.ones((s, s), dtype=bool), 1)
    tx = torch.tensor(x, requires_grad=True)
    t_out = tm(tx, src_mask=None if src_mask is None else torch.tensor(src_mask),
               src_key_padding_mask=None if kpm is None else torch.tensor(kpm))
    g = rng.standard_normal(tuple(t_out.shape))
    t_out.backward(torch.tensor(g))
    xx = xpnn.tensor(x, requires_grad=True)
    out = xm(xx, src_mask=src_mask, src_key_padding_mask=kpm)
    out.backward(g)
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(xx.grad, tx.grad.numpy(), atol=1e-6)
    t_params = dict(tm.named_parameters())
    for name, p in xm.named_parameters():
        np.testing.assert_allclose(p.grad, t_params[name].grad.numpy(), atol=1e-6, err_msg=name)


def test_unbatched_input_and_eval_dropout_match_pytorch(torch):
    rng = np.random.default_rng(1)
    tm, xm = _pair(torch, dropout=0.3, activation="gelu")
    tm.eval(), xm.eval()
    x = rng.standard_normal((5, 8))
    np.testing.assert_allclose(xm(xpnn.tensor(x)).numpy(), tm(torch.tensor(x)).detach().numpy(), atol=1e-6)


def test_dropout_is_active_in_training_only():
    x = xpnn.tensor(np.random.default_rng(0).standard_normal((2, 5, 8)))
    m = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.5, batch_first=True, dtype="float64", seed=0)
    a, b = m(x).numpy(), m(x).numpy()
    assert not np.allclose(a, b)
    m.eval()
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())


def test_double_backward_matches_pytorch(torch):
    rng = np.random.default_rng(2)
    tm, xm = _pair(torch, activation="gelu", norm_first=True, batch_first=True)
    x, g = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 4, 8))
    tx = torch.tensor(x, requires_grad=True)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        (tgx,) = torch.autograd.grad(tm(tx), (tx,), torch.tensor(g), create_graph=True)
    (t2,) = torch.autograd.grad((tgx ** 2).sum(), (tx,))
    xx = xpnn.tensor(x, requires_grad=True)
    (gx,) = xpnn.grad(xm(xx), [xx], grad_outputs=[g], create_graph=True)
    (x2,) = xpnn.grad((gx ** 2).sum(), [xx])
    np.testing.assert_allclose(gx.numpy(), tgx.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(np.asarray(x2), t2.numpy(), atol=1e-6)


@pytest.mark.parametrize("norm_first", [False, True])
def test_gradcheck_float64(norm_first):
    rng = np.random.default_rng(3)
    m = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, batch_first=True, norm_first=norm_first,
                                   activation="gelu", dtype="float64", seed=0)
    x = rng.standard_normal((2, 3, 4))
    w = rng.standard_normal((2, 3, 4))
    causal = np.triu(np.ones((3, 3), dtype=bool), 1)

    def loss():
        with xpnn.no_grad():
            return float((m(xpnn.tensor(x), src_mask=causal) * w).sum())

    xx = xpnn.tensor(x, requires_grad=True)
    (m(xx, src_mask=causal) * w).sum().backward()
    np.testing.assert_allclose(xx.grad, numeric_grad(loss, x), atol=1e-6)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, numeric_grad(loss, p.data), atol=1e-6, err_msg=name)


def test_bad_arguments_raise_naming_the_layer():
    with pytest.raises(ValueError, match=r"MultiheadAttention\(embed_dim=10, num_heads=4\): embed_dim must be "
                                         r"divisible by num_heads"):
        nn.TransformerEncoderLayer(10, 4)
    with pytest.raises(ValueError, match="activation must be 'relu', 'gelu' or a callable, got 'swish'"):
        nn.TransformerEncoderLayer(8, 2, activation="swish")
    m = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True, dtype="float64")
    x = xpnn.tensor(np.zeros((2, 5, 8)))
    with pytest.raises(ShapeError, match=r"MultiheadAttention\(embed_dim=8, num_heads=2\): expected attn_mask of "
                                         r"shape \(5, 5\) or \(4, 5, 5\), got \(4, 4\)"):
        m(x, src_mask=np.zeros((4, 4), dtype=bool))
    with pytest.raises(DTypeError, match=r"expected key_padding_mask of dtype bool .* or float64 .*got int32"):
        m(x, src_key_padding_mask=np.zeros((2, 5), dtype=np.int32))


def test_runs_on_array_api_strict_with_numpys_results():
    import array_api_strict as xps

    rng = np.random.default_rng(5)
    m = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True, activation="gelu",
                                   dtype="float64", seed=0)
    x = rng.standard_normal((2, 5, 8))
    kpm = np.zeros((2, 5), dtype=bool)
    kpm[1, 3:] = True
    xx = xpnn.tensor(x, requires_grad=True)
    want = m(xx, src_key_padding_mask=kpm)
    want.sum().backward()
    grads = {n: np.array(p.grad) for n, p in m.named_parameters()}
    m.zero_grad()
    m.to(xps)
    sx = xpnn.tensor(xps.asarray(x), requires_grad=True)
    got = m(sx, src_key_padding_mask=xps.asarray(kpm))
    got.sum().backward()
    assert type(got.data).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(got.data), want.numpy(), atol=1e-12)
    np.testing.assert_allclose(np.asarray(sx.grad), xx.grad, atol=1e-12)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(np.asarray(p.grad), grads[name], atol=1e-12, err_msg=name)


@pytest.mark.parametrize("final_norm", [False, True])
def test_encoder_stack_matches_pytorch(torch, final_norm):
    """``nn.TransformerEncoder``: PyTorch's state_dict names (``layers.{i}.*``, ``norm.*``), outputs and gradients
    with a padding mask and a causal mask."""
    torch.manual_seed(0)
    ref_layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
    ref = torch.nn.TransformerEncoder(ref_layer, 2, norm=torch.nn.LayerNorm(8) if final_norm else None,
                                      enable_nested_tensor=False).double().eval()
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True, dtype="float64")
    mine = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8, dtype="float64") if final_norm else None,
                                 enable_nested_tensor=False).eval()
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    assert sorted(mine.state_dict()) == sorted(state)
    mine.load_state_dict(state)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 8))
    pad = np.array([[False] * 5, [False, False, False, True, True]])
    causal = np.triu(np.ones((5, 5), dtype=bool), 1)  # True = ignore, like the padding mask
    xt = torch.tensor(x, requires_grad=True)
    xm = xpnn.tensor(x, requires_grad=True)
    want = ref(xt, mask=torch.tensor(causal), src_key_padding_mask=torch.tensor(pad), is_causal=True)
    got = mine(xm, mask=causal, src_key_padding_mask=pad, is_causal=True)
    np.testing.assert_allclose(got.data, want.detach().numpy(), rtol=1e-6, atol=1e-9)
    w = rng.standard_normal(x.shape)
    (want * torch.tensor(w)).sum().backward()
    (got * w).sum().backward()
    np.testing.assert_allclose(xm.grad, xt.grad.numpy(), rtol=1e-6, atol=1e-9)
    params = dict(mine.named_parameters())
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(params[name].grad, p.grad.numpy(), rtol=1e-6, atol=1e-9, err_msg=name)


def test_encoder_copies_are_independent_with_their_own_dropout():
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.5, dtype="float64", seed=0)
    enc = nn.TransformerEncoder(layer, 2, seed=1)
    first, second = enc.layers[0], enc.layers[1]
    np.testing.assert_array_equal(first.linear1.weight.data, layer.linear1.weight.data)
    first.linear1.weight.data[...] += 1.0
    assert not np.array_equal(first.linear1.weight.data, second.linear1.weight.data)
    x = np.ones((3, 1, 8))
    assert not np.array_equal(first.dropout(x), second.dropout(x))  # the copies draw different masks
    with pytest.raises(ValueError, match=r"TransformerEncoder: num_layers must be a positive integer, got 0"):
        nn.TransformerEncoder(layer, 0)


def test_encoder_stack_on_array_api_strict_with_numpys_results():
    import array_api_strict as xps

    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, dtype="float64", seed=0)
    enc = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8, dtype="float64"))
    x = np.random.default_rng(0).standard_normal((2, 5, 8))
    causal = np.triu(np.ones((5, 5), dtype=bool), 1)
    want = enc(xpnn.tensor(x), mask=causal, is_causal=True)
    enc.to(xps)
    sx = xpnn.tensor(xps.asarray(x), requires_grad=True)
    got = enc(sx, mask=xps.asarray(causal), is_causal=True)
    got.sum().backward()
    assert type(sx.grad).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(got.data), want.numpy(), atol=1e-12)
