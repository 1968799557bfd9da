"""``nn.TransformerEncoderLayer``, ``nn.TransformerEncoder``, ``nn.TransformerDecoderLayer``,
``nn.TransformerDecoder`` and ``nn.Transformer``: PyTorch's parameter names, outputs and gradients with its weights
loaded (post-norm and norm_first, relu and gelu, batch_first both ways, masks), double backward, float64 finite
differences, array_api_strict and the errors."""
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


# --- nn.TransformerDecoderLayer, nn.TransformerDecoder, nn.Transformer --------------------------------------------


def _decoder_pair(torch, **kw):
    kw = {"dim_feedforward": 16, "dropout": 0.0, **kw}
    tm = torch.nn.TransformerDecoderLayer(8, 2, dtype=torch.float64, **kw)
    xm = nn.TransformerDecoderLayer(8, 2, dtype="float64", **kw)
    xm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return tm, xm


def _masks(rng, kind, n, t, s):
    """(tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask) in PyTorch's convention (bool True =
    ignore, or float added)."""
    if kind == "none":
        return None, None, None, None
    if kind == "causal":
        return np.triu(np.ones((t, t), dtype=bool), 1), None, None, None
    if kind == "causal_float":
        return nn.Transformer.generate_square_subsequent_mask(t, dtype="float64"), rng.standard_normal((t, s)), \
            None, None
    tkpm, mkpm = np.zeros((n, t), dtype=bool), np.zeros((n, s), dtype=bool)
    tkpm[0, 3:] = True
    mkpm[1, 4:] = True
    mkpm[n - 1, 0] = True
    return np.triu(np.ones((t, t), dtype=bool), 1), rng.random((t, s)) < 0.2, tkpm, mkpm


def _torch_or_none(torch, a):
    return None if a is None else torch.tensor(a)


DECODER_CASES = [(nf, act, bf, mask, mode) for nf in (False, True) for act in ("relu", "gelu") for bf in (False, True)
                 for mask, mode in (("none", "train"), ("causal", "eval"), ("padding", "train"),
                                    ("causal_float", "eval"))]


@pytest.mark.parametrize("case", DECODER_CASES, ids=lambda c: "-".join(map(str, c)))
def test_decoder_layer_outputs_and_gradients_match_pytorch(case, torch):
    """Outputs and the gradients of tgt, memory and every parameter with PyTorch's weights loaded (float64, dropout
    0, train and eval mode): post-norm and norm_first, relu and gelu, batch_first both ways, causal (bool and float)
    and padding masks on both attentions."""
    norm_first, activation, batch_first, mask, mode = case
    rng = np.random.default_rng(DECODER_CASES.index(case))
    tm, xm = _decoder_pair(torch, activation=activation, batch_first=batch_first, norm_first=norm_first)
    getattr(tm, mode)(), getattr(xm, mode)()
    n, t, s = 3, 5, 6
    tgt = rng.standard_normal((n, t, 8) if batch_first else (t, n, 8))
    mem = rng.standard_normal((n, s, 8) if batch_first else (s, n, 8))
    masks = _masks(rng, mask, n, t, s)
    causal = mask.startswith("causal")
    names = ("tgt_mask", "memory_mask", "tgt_key_padding_mask", "memory_key_padding_mask")
    ttgt, tmem = torch.tensor(tgt, requires_grad=True), torch.tensor(mem, requires_grad=True)
    t_out = tm(ttgt, tmem, tgt_is_causal=causal, **{k: _torch_or_none(torch, m) for k, m in zip(names, masks)})
    g = rng.standard_normal(tuple(t_out.shape))
    t_out.backward(torch.tensor(g))
    xtgt, xmem = xpnn.tensor(tgt, requires_grad=True), xpnn.tensor(mem, requires_grad=True)
    out = xm(xtgt, xmem, tgt_is_causal=causal, **dict(zip(names, masks)))
    out.backward(g)
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(xtgt.grad, ttgt.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(xmem.grad, tmem.grad.numpy(), atol=1e-10)
    t_params = dict(tm.named_parameters())
    assert [n for n, _ in xm.named_parameters()] == list(t_params)
    for name, p in xm.named_parameters():
        np.testing.assert_allclose(p.grad, t_params[name].grad.numpy(), atol=1e-10, err_msg=name)


def test_decoder_layer_parameter_names_and_unbatched_input_match_pytorch(torch):
    for kw in ({}, {"bias": False}, {"norm_first": True, "activation": "gelu"}):
        tm = torch.nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, **kw)
        xm = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, **kw)
        assert [(k, tuple(v.shape)) for k, v in xm.state_dict().items()] == \
            [(k, tuple(v.shape)) for k, v in tm.state_dict().items()]
    rng = np.random.default_rng(1)
    tm, xm = _decoder_pair(torch, dropout=0.3, activation="gelu")
    tm.eval(), xm.eval()
    tgt, mem = rng.standard_normal((4, 8)), rng.standard_normal((6, 8))
    np.testing.assert_allclose(xm(xpnn.tensor(tgt), xpnn.tensor(mem)).numpy(),
                               tm(torch.tensor(tgt), torch.tensor(mem)).detach().numpy(), atol=1e-10)


def test_decoder_layer_takes_a_callable_activation(torch):
    rng = np.random.default_rng(2)
    tm = torch.nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, activation=torch.nn.functional.silu,
                                          dtype=torch.float64, batch_first=True)
    xm = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, activation=xpnn.functional.silu, dtype="float64",
                                    batch_first=True)
    xm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    tgt, mem = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 3, 8))
    np.testing.assert_allclose(xm(xpnn.tensor(tgt), xpnn.tensor(mem)).numpy(),
                               tm(torch.tensor(tgt), torch.tensor(mem)).detach().numpy(), atol=1e-10)


def test_decoder_layer_dropout_is_active_in_training_only():
    rng = np.random.default_rng(0)
    tgt, mem = xpnn.tensor(rng.standard_normal((2, 4, 8))), xpnn.tensor(rng.standard_normal((2, 3, 8)))
    m = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.5, batch_first=True, dtype="float64", seed=0)
    assert not np.allclose(m(tgt, mem).numpy(), m(tgt, mem).numpy())
    m.eval()
    np.testing.assert_array_equal(m(tgt, mem).numpy(), m(tgt, mem).numpy())


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_gradcheck_float64(norm_first):
    rng = np.random.default_rng(3)
    m = nn.TransformerDecoderLayer(4, 2, dim_feedforward=6, dropout=0.0, batch_first=True, norm_first=norm_first,
                                   activation="gelu", dtype="float64", seed=0)
    tgt, mem, w = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 2, 4)), rng.standard_normal((2, 3, 4))
    causal = np.triu(np.ones((3, 3), dtype=bool), 1)
    mkpm = np.array([[False, True], [False, False]])

    def run(a, b):
        return (m(a, b, tgt_mask=causal, memory_key_padding_mask=mkpm, tgt_is_causal=True) * w).sum()

    def loss():
        with xpnn.no_grad():
            return float(run(xpnn.tensor(tgt), xpnn.tensor(mem)))

    xt, xm_ = xpnn.tensor(tgt, requires_grad=True), xpnn.tensor(mem, requires_grad=True)
    run(xt, xm_).backward()
    np.testing.assert_allclose(xt.grad, numeric_grad(loss, tgt), atol=1e-6)
    np.testing.assert_allclose(xm_.grad, numeric_grad(loss, mem), atol=1e-6)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, numeric_grad(loss, p.data), atol=1e-6, err_msg=name)


def test_decoder_layer_runs_on_array_api_strict_with_numpys_results():
    import array_api_strict as xps

    rng = np.random.default_rng(5)
    m = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True, activation="gelu", dtype="float64",
                                   seed=0)
    tgt, mem = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 5, 8))
    causal = np.triu(np.ones((4, 4), dtype=bool), 1)
    mkpm = np.zeros((2, 5), dtype=bool)
    mkpm[1, 3:] = True
    xt = xpnn.tensor(tgt, requires_grad=True)
    want = m(xt, xpnn.tensor(mem), tgt_mask=causal, memory_key_padding_mask=mkpm)
    want.sum().backward()
    grads = {n: np.array(p.grad) for n, p in m.named_parameters()}
    m.zero_grad()
    m.to(xps)
    st = xpnn.tensor(xps.asarray(tgt), requires_grad=True)
    got = m(st, xpnn.tensor(xps.asarray(mem)), tgt_mask=xps.asarray(causal), memory_key_padding_mask=xps.asarray(mkpm))
    got.sum().backward()
    assert type(got.data).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(got.data), want.numpy(), atol=1e-12)
    np.testing.assert_allclose(np.asarray(st.grad), xt.grad, atol=1e-12)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(np.asarray(p.grad), grads[name], atol=1e-12, err_msg=name)


def test_decoder_layer_wrong_shapes_and_masks_raise_naming_the_layer():
    m = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, batch_first=True, dtype="float64")
    where = r"TransformerDecoderLayer\(d_model=8, nhead=2, dim_feedforward=16, activation=relu, norm_first=False\)"
    tgt, mem = xpnn.tensor(np.zeros((2, 4, 8))), xpnn.tensor(np.zeros((2, 5, 8)))
    with pytest.raises(ShapeError, match=where + r": expected tgt of shape \(N, T, E\) with E = d_model = 8 .*got tgt "
                                               r"\(2, 4, 6\) and memory \(2, 5, 8\)"):
        m(xpnn.tensor(np.zeros((2, 4, 6))), mem)
    with pytest.raises(ShapeError, match=where + r": expected memory of shape \(N, S, E\) with E = d_model = 8"):
        m(tgt, xpnn.tensor(np.zeros((2, 5, 7))))
    with pytest.raises(ShapeError, match=where + r": expected memory .*both batched 3-D or both unbatched 2-D.*got "
                                               r"tgt \(2, 4, 8\) and memory \(5, 8\)"):
        m(tgt, xpnn.tensor(np.zeros((5, 8))))
    with pytest.raises(ShapeError, match=where + r": expected tgt and memory of one batch size N \(axis 0\), got tgt "
                                               r"\(2, 4, 8\) and memory \(3, 5, 8\)"):
        m(tgt, xpnn.tensor(np.zeros((3, 5, 8))))
    with pytest.raises(ShapeError, match=where + r", self-attention \(tgt_mask is its attn_mask.*expected attn_mask of "
                                               r"shape \(4, 4\) or \(4, 4, 4\), got \(4, 5\)"):
        m(tgt, mem, tgt_mask=np.zeros((4, 5), dtype=bool))
    with pytest.raises(ShapeError, match=where + r", cross-attention \(memory_mask is its attn_mask.*expected "
                                               r"attn_mask of shape \(4, 5\) or \(4, 4, 5\), got \(4, 4\)"):
        m(tgt, mem, memory_mask=np.zeros((4, 4), dtype=bool))
    with pytest.raises(ShapeError, match=where + r", cross-attention \(.*memory_key_padding_mask its "
                                               r"key_padding_mask\).*expected key_padding_mask of shape \(2, 5\), got "
                                               r"\(2, 4\)"):
        m(tgt, mem, memory_key_padding_mask=np.zeros((2, 4), dtype=bool))
    with pytest.raises(DTypeError, match=where + r", self-attention .*expected key_padding_mask of dtype bool"):
        m(tgt, mem, tgt_key_padding_mask=np.zeros((2, 4), dtype=np.int32))
    with pytest.raises(ValueError, match=where + r", self-attention .*is_causal=True is a hint"):
        m(tgt, mem, tgt_is_causal=True)
    with pytest.raises(ValueError, match="TransformerDecoderLayer: activation must be 'relu', 'gelu' or a callable"):
        nn.TransformerDecoderLayer(8, 2, activation="swish")
    with pytest.raises(ValueError, match=r"TransformerDecoder: num_layers must be a positive integer, got 0"):
        nn.TransformerDecoder(m, 0)


@pytest.mark.parametrize("final_norm", [False, True])
def test_decoder_stack_matches_pytorch(torch, final_norm):
    """``nn.TransformerDecoder``: PyTorch's state_dict names (``layers.{i}.*``, ``norm.*``), outputs and gradients
    with causal and padding masks; the copies draw their own dropout masks."""
    torch.manual_seed(0)
    ref = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(8, 2, 16, dropout=0.1, norm_first=True), 2,
                                      norm=torch.nn.LayerNorm(8) if final_norm else None).double().eval()
    layer = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.1, norm_first=True, dtype="float64")
    mine = nn.TransformerDecoder(layer, 2, norm=nn.LayerNorm(8, dtype="float64") if final_norm else None).eval()
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    assert list(mine.state_dict()) == list(state)
    mine.load_state_dict(state)
    rng = np.random.default_rng(0)
    tgt, mem = rng.standard_normal((5, 2, 8)), rng.standard_normal((6, 2, 8))
    _, _, tkpm, mkpm = _masks(rng, "padding", 2, 5, 6)
    causal = np.triu(np.ones((5, 5), dtype=bool), 1)
    tt, tm_ = torch.tensor(tgt, requires_grad=True), torch.tensor(mem, requires_grad=True)
    xt, xm_ = xpnn.tensor(tgt, requires_grad=True), xpnn.tensor(mem, requires_grad=True)
    want = ref(tt, tm_, tgt_mask=torch.tensor(causal), tgt_key_padding_mask=torch.tensor(tkpm),
               memory_key_padding_mask=torch.tensor(mkpm), tgt_is_causal=True)
    got = mine(xt, xm_, tgt_mask=causal, tgt_key_padding_mask=tkpm, memory_key_padding_mask=mkpm, tgt_is_causal=True)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), atol=1e-10)
    w = rng.standard_normal(tgt.shape)
    (want * torch.tensor(w)).sum().backward()
    (got * w).sum().backward()
    np.testing.assert_allclose(xt.grad, tt.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(xm_.grad, tm_.grad.numpy(), atol=1e-10)
    params = dict(mine.named_parameters())
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(params[name].grad, p.grad.numpy(), atol=1e-10, err_msg=name)
    train = nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16, dropout=0.5, dtype="float64", seed=0), 2,
                                  seed=1)
    x = np.ones((3, 1, 8))
    assert not np.array_equal(train.layers[0].dropout(x), train.layers[1].dropout(x))


@pytest.mark.filterwarnings("ignore::UserWarning")  # (PyTorch's notes on its nested-tensor path and mixed masks)
@pytest.mark.parametrize("batch_first,norm_first,mode", [(False, False, "train"), (True, True, "eval"),
                                                         (True, False, "eval"), (False, True, "train")])
def test_transformer_matches_pytorch(batch_first, norm_first, mode, torch):
    """``nn.Transformer``: PyTorch's constructor signature, state_dict names, outputs and the gradients of src, tgt
    and every parameter with PyTorch's weights loaded, with every mask; ``generate_square_subsequent_mask``."""
    import inspect

    ours = list(inspect.signature(nn.Transformer.__init__).parameters)
    theirs = list(inspect.signature(torch.nn.Transformer.__init__).parameters)
    assert ours[:14] == theirs[:14]  # (self, d_model, ..., bias; then PyTorch's device / dtype)
    torch.manual_seed(1)
    ref = torch.nn.Transformer(8, 2, 2, 1, 16, dropout=0.0, activation="gelu", batch_first=batch_first,
                               norm_first=norm_first, dtype=torch.float64)
    mine = nn.Transformer(8, 2, 2, 1, 16, dropout=0.0, activation="gelu", batch_first=batch_first,
                          norm_first=norm_first, dtype="float64")
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    assert list(mine.state_dict()) == list(state)
    mine.load_state_dict(state)
    getattr(ref, mode)(), getattr(mine, mode)()
    rng = np.random.default_rng(2)
    n, s, t = 3, 6, 5
    src = rng.standard_normal((n, s, 8) if batch_first else (s, n, 8))
    tgt = rng.standard_normal((n, t, 8) if batch_first else (t, n, 8))
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(t, dtype="float64")
    np.testing.assert_array_equal(tgt_mask, torch.nn.Transformer.generate_square_subsequent_mask(t).numpy())
    assert nn.Transformer.generate_square_subsequent_mask(t).dtype == np.float32
    src_mask = rng.random((s, s)) < 0.2
    np.fill_diagonal(src_mask, False)
    _, memory_mask, tkpm, mkpm = _masks(rng, "padding", n, t, s)
    kw = dict(src_mask=src_mask, tgt_mask=tgt_mask, memory_mask=memory_mask, src_key_padding_mask=mkpm,
              tgt_key_padding_mask=tkpm, memory_key_padding_mask=mkpm, tgt_is_causal=True)
    tsrc, ttgt = torch.tensor(src, requires_grad=True), torch.tensor(tgt, requires_grad=True)
    xsrc, xtgt = xpnn.tensor(src, requires_grad=True), xpnn.tensor(tgt, requires_grad=True)
    want = ref(tsrc, ttgt, **{k: v if isinstance(v, bool) else torch.tensor(v) for k, v in kw.items()})
    got = mine(xsrc, xtgt, **kw)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), atol=1e-10)
    w = rng.standard_normal(tuple(want.shape))
    (want * torch.tensor(w)).sum().backward()
    (got * w).sum().backward()
    np.testing.assert_allclose(xsrc.grad, tsrc.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(xtgt.grad, ttgt.grad.numpy(), atol=1e-10)
    params = dict(mine.named_parameters())
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(params[name].grad, p.grad.numpy(), atol=1e-10, err_msg=name)


def test_transformer_custom_parts_initialisation_and_shape_errors():
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dtype="float64"), 1)
    dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16, dtype="float64"), 1)
    m = nn.Transformer(8, 2, custom_encoder=enc, custom_decoder=dec, dtype="float64", seed=0)
    assert m.encoder is enc and m.decoder is dec
    assert sorted(m.state_dict()) == sorted([f"encoder.{k}" for k in enc.state_dict()] +
                                            [f"decoder.{k}" for k in dec.state_dict()])
    d = nn.Transformer(8, 2, 1, 1, 16, seed=0)
    for name, p in d.named_parameters():  # PyTorch's _reset_parameters: Xavier-uniform for every matrix
        if p.ndim > 1:
            bound = np.sqrt(6.0 / sum(p.shape))
            assert np.abs(p.numpy()).max() <= bound and np.abs(p.numpy()).max() > 0.8 * bound, name
    a, b = nn.Transformer(8, 2, 1, 1, 16, seed=3), nn.Transformer(8, 2, 1, 1, 16, seed=3)
    np.testing.assert_array_equal(a.decoder.layers[0].linear1.weight.numpy(),
                                  b.decoder.layers[0].linear1.weight.numpy())
    x = xpnn.tensor(np.zeros((5, 2, 8), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"Transformer\(d_model=8, nhead=2, batch_first=False\): expected src and tgt "
                                         r"of one batch size N \(axis 1\), got src \(5, 2, 8\) and tgt \(4, 3, 8\)"):
        d(x, xpnn.tensor(np.zeros((4, 3, 8), dtype=np.float32)))
    with pytest.raises(ShapeError, match=r"expected src and tgt with E = d_model = 8 features \(last axis\), got src "
                                         r"\(5, 2, 8\) and tgt \(4, 2, 6\)"):
        d(x, xpnn.tensor(np.zeros((4, 2, 6), dtype=np.float32)))
