"""``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``: PyTorch as the reference (forward, gradients,
double backward, masks, state_dict layout), float64 finite differences, array_api_strict, and the errors."""
import array_api_strict
import numpy as np
import pytest

import xpnn
from xpnn import F, nn
from xpnn.errors import DTypeError, ShapeError

from _numgrad import numeric_grad


def _qkv(rng, q_shape=(2, 3, 5, 4), k_len=6, v_dim=7):
    q = rng.standard_normal(q_shape)
    k = rng.standard_normal(q_shape[:-2] + (k_len, q_shape[-1]))
    v = rng.standard_normal(q_shape[:-2] + (k_len, v_dim))
    return q, k, v


MASKS = ["none", "causal", "bool_2d", "bool_batch_heads", "bool_dead_row", "float_2d", "float_per_head"]


def _mask(rng, kind, L=5, S=6):
    if kind == "bool_2d":
        m = rng.random((L, S)) > 0.4
        m[:, 0] = True
        return m
    if kind == "bool_batch_heads":  # broadcast over heads
        m = rng.random((2, 1, L, S)) > 0.4
        m[..., 2] = True
        return m
    if kind == "bool_dead_row":  # a query that may attend no key: PyTorch gives 0 there
        m = rng.random((3, L, S)) > 0.4
        m[..., 0] = True
        m[1, 2] = False
        return m
    if kind == "float_2d":
        return rng.standard_normal((L, S))
    if kind == "float_per_head":
        return rng.standard_normal((1, 3, L, S))
    return None


@pytest.mark.parametrize("kind", MASKS)
def test_sdpa_forward_and_gradients_match_pytorch(kind, torch):
    rng = np.random.default_rng(MASKS.index(kind))
    q, k, v = _qkv(rng, k_len=5 if kind == "causal" else 6)
    mask = _mask(rng, kind)
    causal = kind == "causal"
    float_mask = mask is not None and mask.dtype != bool
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tm = None if mask is None else torch.tensor(mask, requires_grad=float_mask)
    t_out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, is_causal=causal)
    g = rng.standard_normal(tuple(t_out.shape))
    t_out.backward(torch.tensor(g))
    xq, xk, xv = (xpnn.tensor(a, requires_grad=True) for a in (q, k, v))
    xm = None if mask is None else xpnn.tensor(mask, requires_grad=float_mask)
    out = F.scaled_dot_product_attention(xq, xk, xv, attn_mask=xm, is_causal=causal)
    out.backward(g)
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), atol=1e-12)
    for mine, theirs in zip((xq, xk, xv), (tq, tk, tv)):
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), atol=1e-12)
    if float_mask:
        np.testing.assert_allclose(xm.grad, tm.grad.numpy(), atol=1e-12)
    if kind == "bool_dead_row":
        assert np.all(out.numpy()[:, 1, 2] == 0) and np.all(xq.grad[:, 1, 2] == 0)


def test_sdpa_scale_and_plain_arrays_match_pytorch(torch):
    rng = np.random.default_rng(1)
    q, k, v = _qkv(rng, q_shape=(4, 3, 8))  # 3-D: batch only
    want = torch.nn.functional.scaled_dot_product_attention(*(torch.tensor(a) for a in (q, k, v)), scale=0.3)
    got = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    assert type(got) is np.ndarray
    np.testing.assert_allclose(got, want.numpy(), atol=1e-12)


@pytest.mark.parametrize("kind", ["none", "causal", "float_2d"])
def test_sdpa_double_backward_matches_pytorch(kind, torch):
    rng = np.random.default_rng(7)
    q, k, v = _qkv(rng, q_shape=(2, 5, 4), k_len=5)
    mask = _mask(rng, kind, 5, 5)
    g, w = rng.standard_normal((2, 5, 7)), [rng.standard_normal(a.shape) for a in (q, k, v)]
    causal = kind == "causal"

    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    t_out = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=None if mask is None else torch.tensor(mask), is_causal=causal)
    t_g1 = torch.autograd.grad(t_out, (tq, tk, tv), torch.tensor(g), create_graph=True)
    t_g2 = torch.autograd.grad(sum((a * torch.tensor(b)).sum() for a, b in zip(t_g1, w)), (tq, tk, tv))

    xq, xk, xv = (xpnn.tensor(a, requires_grad=True) for a in (q, k, v))
    out = F.scaled_dot_product_attention(xq, xk, xv, attn_mask=mask, is_causal=causal)
    g1 = xpnn.grad(out, [xq, xk, xv], grad_outputs=[g], create_graph=True)
    g2 = xpnn.grad(sum((a * b).sum() for a, b in zip(g1, w)), [xq, xk, xv])
    for mine, theirs in zip(list(g1) + list(g2), list(t_g1) + list(t_g2)):
        np.testing.assert_allclose(np.asarray(mine.data if hasattr(mine, "data") else mine),
                                   theirs.detach().numpy(), atol=1e-10)


@pytest.mark.parametrize("kind", ["causal", "bool_2d", "float_2d"])
def test_sdpa_gradcheck_float64(kind):
    rng = np.random.default_rng(3)
    q, k, v = _qkv(rng, q_shape=(1, 2, 5, 3), k_len=5 if kind == "causal" else 6, v_dim=2)
    mask = _mask(rng, kind)
    w = rng.standard_normal((1, 2, 5, 2))
    arrays = [q, k, v] + ([mask] if mask is not None and mask.dtype != bool else [])

    def loss():
        m = arrays[3] if len(arrays) > 3 else mask
        return float((F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=kind == "causal") * w).sum())

    ts = [xpnn.tensor(a, requires_grad=True) for a in arrays]
    m = ts[3] if len(ts) > 3 else mask
    out = F.scaled_dot_product_attention(ts[0], ts[1], ts[2], attn_mask=m, is_causal=kind == "causal")
    (out * w).sum().backward()
    for t, a in zip(ts, arrays):
        np.testing.assert_allclose(t.grad, numeric_grad(loss, a), atol=1e-7)


def test_sdpa_dropout_gradient_uses_the_same_mask():
    rng = np.random.default_rng(5)
    q, k, v = _qkv(rng)
    xq, xk, xv = (xpnn.tensor(a, requires_grad=True) for a in (q, k, v))
    out = F.scaled_dot_product_attention(xq, xk, xv, dropout_p=0.5, seed=11)
    out.sum().backward()
    again = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5, seed=11)  # the same mask
    np.testing.assert_allclose(out.numpy(), again)
    assert not np.allclose(again, F.scaled_dot_product_attention(q, k, v))

    def loss():
        return float(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5, seed=11).sum())

    np.testing.assert_allclose(xv.grad, numeric_grad(loss, v), atol=1e-7)
    np.testing.assert_allclose(xq.grad, numeric_grad(loss, q), atol=1e-7)


def test_sdpa_runs_on_array_api_strict():
    rng = np.random.default_rng(2)
    q, k, v = _qkv(rng)
    mask = _mask(rng, "bool_dead_row")
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    xs = [xpnn.tensor(array_api_strict.asarray(a), requires_grad=True) for a in (q, k, v)]
    got = F.scaled_dot_product_attention(*xs, attn_mask=array_api_strict.asarray(mask))
    assert type(got.data).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(got.data), want, atol=1e-12)
    got.sum().backward()
    ts = [xpnn.tensor(a, requires_grad=True) for a in (q, k, v)]
    F.scaled_dot_product_attention(*ts, attn_mask=mask).sum().backward()
    for a, b in zip(xs, ts):
        np.testing.assert_allclose(np.asarray(a.grad), b.grad, atol=1e-12)


def test_sdpa_bad_masks_and_shapes_raise_naming_the_op():
    rng = np.random.default_rng(0)
    q, k, v = _qkv(rng)
    with pytest.raises(ShapeError, match=r"scaled_dot_product_attention: expected attn_mask broadcastable to .*"
                                         r"\(2, 3, 5, 6\).*got \(5, 5\)"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((5, 5), dtype=bool))
    with pytest.raises(DTypeError, match="attn_mask of dtype bool .* or float64 .*got int64"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((5, 6), dtype=np.int64))
    with pytest.raises(DTypeError, match="got float32"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((5, 6), dtype=np.float32))
    with pytest.raises(ValueError, match="not both"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((5, 6), dtype=bool), is_causal=True)
    with pytest.raises(ShapeError, match=r"query \(\.\.\., L, E\).*\(2, 3, 5, 4\), \(2, 3, 6, 3\)"):
        F.scaled_dot_product_attention(q, k[..., :3], v)


# --- nn.MultiheadAttention ----------------------------------------------------------------------------------


def _mha_pair(torch, E=8, H=2, **kw):
    tm = torch.nn.MultiheadAttention(E, H, dtype=torch.float64, **kw)
    xm = nn.MultiheadAttention(E, H, dtype="float64", **kw)
    xm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return tm, xm


def test_mha_state_dict_keys_and_shapes_are_pytorchs(torch):
    tm = torch.nn.MultiheadAttention(8, 2)
    xm = nn.MultiheadAttention(8, 2)
    assert {k: tuple(v.shape) for k, v in xm.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in tm.state_dict().items()}
    assert [n for n, _ in xm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert not np.any(xm.in_proj_bias.numpy()) and not np.any(xm.out_proj.bias.numpy())
    assert nn.MultiheadAttention(8, 2, bias=False).state_dict().keys() == \
        torch.nn.MultiheadAttention(8, 2, bias=False).state_dict().keys()


CASES = [  # batch_first, need_weights, average, key_padding_mask kind, attn_mask kind, unbatched
    (False, True, True, None, None, False),
    (True, False, True, None, None, False),
    (True, True, False, "bool", None, False),
    (True, False, True, "bool", "bool", False),
    (False, True, True, "bool", "bool", False),
    (True, False, True, None, "float3d", False),
    (True, True, True, "float", "float", False),
    (False, False, True, None, "bool", True),
    (True, True, True, "bool", None, True),
]


@pytest.mark.parametrize("case", CASES)
def test_mha_outputs_weights_and_gradients_match_pytorch(case, torch):
    batch_first, need_weights, average, kpm_kind, am_kind, unbatched = case
    rng = np.random.default_rng(CASES.index(case))
    E, H, N, L, S = 8, 2, 3, 4, 5
    tm, xm = _mha_pair(torch, E, H, batch_first=batch_first)
    if unbatched:
        shapes = (L, E), (S, E)
    else:
        shapes = ((N, L, E), (N, S, E)) if batch_first else ((L, N, E), (S, N, E))
    q, k, v = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1]), rng.standard_normal(shapes[1])
    kpm = am = None
    if kpm_kind == "bool":
        kpm = rng.random((S,) if unbatched else (N, S)) < 0.3
        kpm[..., 0] = False
    elif kpm_kind == "float":
        kpm = rng.standard_normal((N, S))
    if am_kind == "bool":
        am = rng.random((L, S)) < 0.3
        am[:, :2] = False  # (no query without keys: PyTorch's weights are NaN there)
    elif am_kind == "float":
        am = rng.standard_normal((L, S))
    elif am_kind == "float3d":
        am = rng.standard_normal((N * H, L, S))
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    t_out, t_w = tm(tq, tk, tv, key_padding_mask=None if kpm is None else torch.tensor(kpm), need_weights=need_weights,
                    attn_mask=None if am is None else torch.tensor(am), average_attn_weights=average)
    g = rng.standard_normal(tuple(t_out.shape))
    ((t_out * torch.tensor(g)).sum() + (0 if t_w is None else (t_w ** 2).sum())).backward()
    xq, xk, xv = (xpnn.tensor(a, requires_grad=True) for a in (q, k, v))
    out, w = xm(xq, xk, xv, key_padding_mask=kpm, need_weights=need_weights, attn_mask=am,
                average_attn_weights=average)
    ((out * g).sum() + (0 if w is None else (w ** 2).sum())).backward()
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), atol=1e-6)
    assert (w is None) == (t_w is None)
    if w is not None:
        np.testing.assert_allclose(w.numpy(), t_w.detach().numpy(), atol=1e-6)
    for mine, theirs in zip((xq, xk, xv), (tq, tk, tv)):
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), atol=1e-6)
    t_params = dict(tm.named_parameters())
    for name, p in xm.named_parameters():
        np.testing.assert_allclose(p.grad, t_params[name].grad.numpy(), atol=1e-6, err_msg=name)


def test_mha_double_backward_matches_pytorch(torch):
    rng = np.random.default_rng(4)
    tm, xm = _mha_pair(torch, batch_first=True)
    x = rng.standard_normal((2, 4, 8))
    g = rng.standard_normal((2, 4, 8))
    causal = np.triu(np.ones((4, 4), dtype=bool), 1)
    tx = torch.tensor(x, requires_grad=True)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):  # (the CPU flash kernel has no 2nd)
        (tgx,) = torch.autograd.grad(tm(tx, tx, tx, need_weights=False, attn_mask=torch.tensor(causal))[0], (tx,),
                                     torch.tensor(g), create_graph=True)
    t_second = torch.autograd.grad((tgx ** 2).sum(), [tx] + list(tm.parameters()), allow_unused=True)
    xx = xpnn.tensor(x, requires_grad=True)
    (gx,) = xpnn.grad(xm(xx, xx, xx, need_weights=False, attn_mask=causal)[0], [xx], grad_outputs=[g],
                      create_graph=True)
    second = xpnn.grad((gx ** 2).sum(), [xx] + list(xm.parameters()), allow_unused=True)
    np.testing.assert_allclose(gx.numpy(), tgx.detach().numpy(), atol=1e-6)
    assert t_second[-1] is None  # (out_proj.bias does not reach the input gradient)
    for mine, theirs in zip(second, t_second):
        if theirs is None:
            assert mine is None or not np.any(np.asarray(mine))
        else:
            np.testing.assert_allclose(np.asarray(mine), theirs.numpy(), atol=1e-6)


def test_mha_gradcheck_float64():
    rng = np.random.default_rng(6)
    m = nn.MultiheadAttention(4, 2, batch_first=True, dtype="float64", seed=0)
    x = rng.standard_normal((2, 3, 4))
    kpm = np.array([[False, False, True], [False, False, False]])
    w = rng.standard_normal((2, 3, 4))

    def loss():
        with xpnn.no_grad():
            return float((m(xpnn.tensor(x), xpnn.tensor(x), xpnn.tensor(x), key_padding_mask=kpm,
                            need_weights=False)[0] * w).sum())

    xx = xpnn.tensor(x, requires_grad=True)
    (m(xx, xx, xx, key_padding_mask=kpm, need_weights=False)[0] * w).sum().backward()
    np.testing.assert_allclose(xx.grad, numeric_grad(loss, x), atol=1e-7)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, numeric_grad(loss, p.data), atol=1e-7, err_msg=name)


def test_mha_constructor_takes_pytorchs_positional_arguments(torch):
    import inspect

    ours = list(inspect.signature(nn.MultiheadAttention.__init__).parameters)
    theirs = list(inspect.signature(torch.nn.MultiheadAttention.__init__).parameters)
    assert ours[:10] == theirs[:10]  # (embed_dim, num_heads, dropout, bias, add_bias_kv, ..., batch_first)
    assert nn.MultiheadAttention(8, 2, 0.0, True, False, False, None, None, True).batch_first
    m = nn.MultiheadAttention(8, 2, 0.0, True, True, True, 4, 6)
    assert (m.kdim, m.vdim, m._qkv_same_embed_dim, m.add_zero_attn) == (4, 6, False, True)
    assert m.in_proj_weight is None and tuple(m.bias_k.shape) == (1, 1, 8)


def test_mha_bad_arguments_raise_naming_the_layer():
    with pytest.raises(ValueError, match=r"MultiheadAttention\(embed_dim=10, num_heads=3\): embed_dim must be "
                                         r"divisible by num_heads.*10 / 3"):
        nn.MultiheadAttention(10, 3)
    m = nn.MultiheadAttention(8, 2, batch_first=True, dtype="float64")
    x = xpnn.tensor(np.zeros((2, 4, 8)))
    with pytest.raises(ShapeError, match=r"MultiheadAttention\(embed_dim=8, num_heads=2\): expected attn_mask of "
                                         r"shape \(4, 4\) or \(4, 4, 4\), got \(3, 4\)"):
        m(x, x, x, attn_mask=np.zeros((3, 4), dtype=bool))
    with pytest.raises(ShapeError, match=r"expected key_padding_mask of shape \(2, 4\), got \(4, 2\)"):
        m(x, x, x, key_padding_mask=np.zeros((4, 2), dtype=bool))
    with pytest.raises(DTypeError, match=r"expected attn_mask of dtype bool .* or float64.*got int64"):
        m(x, x, x, attn_mask=np.zeros((4, 4), dtype=np.int64))
    with pytest.raises(ShapeError, match=r"expected query of shape \(N, L, E\) with E = 8.*got \(2, 4, 6\)"):
        m(xpnn.tensor(np.zeros((2, 4, 6))), x, x)
    with pytest.raises(DTypeError, match=r"expected query of dtype float64 .*got float32"):
        m(xpnn.tensor(np.zeros((2, 4, 8), dtype=np.float32)), x, x)


def test_a_forward_override_that_saves_only_the_inputs_and_output_gets_the_same_gradients():
    """A fused kernel replaces the forward and keeps what ``save`` keeps (q, k, v, mask, out), not the (L, S)
    probabilities: the backward then recomputes them, with the same result."""
    from xpnn.autograd import register_override
    from xpnn.functional.attention import ScaledDotProductAttention

    def fused(ctx, q, k, v, attn_mask=None, **params):
        out = ScaledDotProductAttention.forward(ctx, q, k, v, attn_mask, **params)
        del ctx.probs  # (a kernel has only out; it calls save)
        return out

    rng = np.random.default_rng(8)
    q, k, v = _qkv(rng)
    mask = _mask(rng, "bool_dead_row")
    g = rng.standard_normal((2, 3, 5, 7))

    def grads():
        ts = [xpnn.tensor(a, requires_grad=True) for a in (q, k, v)]
        (F.scaled_dot_product_attention(*ts, attn_mask=mask, dropout_p=0.3, seed=1) * g).sum().backward()
        return [t.grad for t in ts]

    want = grads()
    register_override("scaled_dot_product_attention", "forward", "numpy", fused)
    try:
        got = grads()
    finally:
        register_override("scaled_dot_product_attention", "forward", "numpy", None)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_sdpa_float16_computes_the_softmax_in_float32():
    rng = np.random.default_rng(9)
    q, k, v = _qkv(rng)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=False)
    ts = [xpnn.tensor(a.astype(np.float16), requires_grad=True) for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*ts)
    out.sum().backward()
    assert out.dtype == np.float16 and all(t.grad.dtype == np.float16 for t in ts)
    np.testing.assert_allclose(out.numpy(), want, atol=1e-2)


def test_sdpa_nan_and_infinite_scores_give_the_generic_rows():
    """The NumPy softmax's row maximum (np.fmax.reduce, which skips NaN) gives the rows of the array-API path
    (array_api_strict, xp.max): a NaN key makes every row that sees it NaN, an infinite score row is NaN too."""
    rng = np.random.default_rng(4)
    q, k, v = _qkv(rng, q_shape=(2, 5, 4), k_len=6, v_dim=3)
    k[0, 2, 1] = np.nan
    q[1, 3, :] = np.inf
    for causal in (False, True):
        got = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        strict = F.scaled_dot_product_attention(*(array_api_strict.asarray(a) for a in (q, k, v)), is_causal=causal)
        np.testing.assert_array_equal(got, np.asarray(strict))
        assert np.isnan(got[1, 3]).all() and np.isfinite(np.delete(got[1], 3, 0)).all()
        assert np.isnan(got[0, 2:]).all()  # the rows that attend the NaN key
@pytest.mark.parametrize("mask", ["causal", "bool", "bool_dead_row"])
@pytest.mark.parametrize("xp", [np, array_api_strict], ids=["numpy", "array_api_strict"])
def test_sdpa_nan_key_in_a_masked_position_matches_pytorch(mask, xp, torch):
    """A NaN in a key that some query rows mask out: PyTorch adds the mask as a -inf bias (its math path and CPU
    kernels), so NaN + -inf makes those rows NaN too; xpnn gives the same rows, on the NumPy (in place) and the
    generic path, forward and the recomputed probabilities of a double backward."""
    rng = np.random.default_rng(7)
    q, k, v = _qkv(rng, q_shape=(2, 5, 4), k_len=5, v_dim=3)
    k[:, 3, 1] = np.nan  # key 3: causal rows 0-2 cannot see it
    kw, tkw = {"is_causal": True}, {"is_causal": True}
    if mask != "causal":
        m = np.ones((5, 5), bool)
        m[:, 3] = False
        m[1, 3] = True  # only row 1 sees the NaN key
        if mask == "bool_dead_row":
            m[4] = False  # a row that sees no key: 0 in PyTorch
        kw, tkw = {"attn_mask": xp.asarray(m)}, {"attn_mask": torch.from_numpy(m)}
    want = torch.nn.functional.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)), **tkw).numpy()
    got = np.asarray(F.scaled_dot_product_attention(*(xp.asarray(a) for a in (q, k, v)), **kw))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
    qt = xpnn.tensor(xp.asarray(q), requires_grad=True)
    out = F.scaled_dot_product_attention(qt, xp.asarray(k), xp.asarray(v), **kw)
    (gq,) = xpnn.grad((out ** 2).sum(), [qt], create_graph=True)
    tq = torch.from_numpy(q).requires_grad_()
    tout = torch.nn.functional.scaled_dot_product_attention(tq, *(torch.from_numpy(a) for a in (k, v)), **tkw)
    (tg,) = torch.autograd.grad((tout ** 2).sum(), [tq], create_graph=True)
    np.testing.assert_array_equal(np.isnan(np.asarray(gq.data)), np.isnan(tg.detach().numpy()))


@pytest.mark.parametrize("mask", [None, "causal", "bool"])
def test_sdpa_with_no_keys_gives_zeros_like_pytorch(mask, torch):
    """S = 0 (e.g. an empty memory): PyTorch returns zeros of (..., L, Ev); gradients are zeros too."""
    q = xpnn.tensor(np.ones((2, 3, 4)), requires_grad=True)
    k = xpnn.tensor(np.ones((2, 0, 4)), requires_grad=True)
    v = xpnn.tensor(np.ones((2, 0, 5)), requires_grad=True)
    kw = {"is_causal": True} if mask == "causal" else {"attn_mask": np.zeros((3, 0), bool)} if mask else {}
    out = F.scaled_dot_product_attention(q, k, v, **kw)
    tkw = {"is_causal": True} if mask == "causal" else {"attn_mask": torch.zeros(3, 0, dtype=torch.bool)} if mask \
        else {}
    ref = torch.nn.functional.scaled_dot_product_attention(torch.ones(2, 3, 4, dtype=torch.float64),
                                                           torch.ones(2, 0, 4, dtype=torch.float64),
                                                           torch.ones(2, 0, 5, dtype=torch.float64), **tkw)
    np.testing.assert_array_equal(out.data, ref.numpy())
    out.sum().backward()
    np.testing.assert_array_equal(q.grad, np.zeros((2, 3, 4)))
    assert k.grad.shape == (2, 0, 4) and v.grad.shape == (2, 0, 5)


def test_mha_batch_mismatch_names_the_shapes_as_given():
    m = nn.MultiheadAttention(4, 2, dtype="float64")  # (L, N, E): the batch is axis 1
    q, kv = np.zeros((3, 2, 4)), np.zeros((3, 5, 4))
    with pytest.raises(ShapeError, match=r"query's batch size 2, got query \(3, 2, 4\), key \(3, 5, 4\) and value "
                                         r"\(3, 5, 4\)"):
        m(q, kv, kv)


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_sdpa_grouped_query_attention_matches_pytorch(kv_heads, torch):
    """``enable_gqa=True`` (PyTorch >= 2.5): key/value with fewer heads than the query; outputs and gradients."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 4, 3, 8))
    k = rng.standard_normal((2, kv_heads, 5, 8))
    v = rng.standard_normal((2, kv_heads, 5, 6))
    mask = rng.random((3, 5)) > 0.3
    mask[:, 0] = True
    mine = [xpnn.tensor(a, requires_grad=True) for a in (q, k, v)]
    ref = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    got = F.scaled_dot_product_attention(*mine, attn_mask=mask, enable_gqa=True)
    want = torch.nn.functional.scaled_dot_product_attention(*ref, attn_mask=torch.tensor(mask), enable_gqa=True)
    np.testing.assert_allclose(got.data, want.detach().numpy(), rtol=1e-7, atol=1e-12)
    w = rng.standard_normal(tuple(want.shape))
    (got * w).sum().backward()
    (want * torch.tensor(w)).sum().backward()
    for a, b in zip(mine, ref):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-7, atol=1e-12)


def test_sdpa_grouped_query_attention_errors():
    q, k = np.zeros((1, 4, 3, 8)), np.zeros((1, 3, 5, 8))
    with pytest.raises(ShapeError, match=r"scaled_dot_product_attention: enable_gqa=True needs key and value with one "
                                         r"head count \(axis -3\) that divides the query's 4, got key \(1, 3, 5, 8\)"):
        F.scaled_dot_product_attention(q, k, k, enable_gqa=True)
    with pytest.raises(ShapeError, match=r"enable_gqa=True needs query \(\.\.\., Hq, L, E\)"):
        F.scaled_dot_product_attention(np.zeros((3, 8)), np.zeros((5, 8)), np.zeros((5, 8)), enable_gqa=True)
    with pytest.raises(ShapeError, match=r"do not broadcast together"):  # without the flag, as PyTorch
        F.scaled_dot_product_attention(q, np.zeros((1, 2, 5, 8)), np.zeros((1, 2, 5, 8)))


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_learned_float_mask_passed_by_name_gets_its_gradient(need_weights, torch):
    """A Tensor given only as a keyword (here a learned attention bias) makes the call recorded, as a positional one
    does; before, array query/key/value with ``attn_mask=Tensor`` gave arrays and no gradient for the mask."""
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(8, 2).double()
    m = nn.MultiheadAttention(8, 2, dtype="float64")
    m.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    rng = np.random.default_rng(0)
    q, k, bias = rng.standard_normal((4, 3, 8)), rng.standard_normal((5, 3, 8)), rng.standard_normal((6, 4, 5))
    bt, bx = torch.tensor(bias, requires_grad=True), xpnn.tensor(bias, requires_grad=True)
    want = ref(torch.tensor(q), torch.tensor(k), torch.tensor(k), attn_mask=bt, need_weights=need_weights)[0]
    got = m(q, k, k, attn_mask=bx, need_weights=need_weights)[0]
    assert isinstance(got, xpnn.Tensor)
    (want ** 2).sum().backward()
    (got ** 2).sum().backward()
    np.testing.assert_allclose(got.data, want.detach().numpy(), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(bx.grad, bt.grad.numpy(), rtol=1e-7, atol=1e-12)


def test_sdpa_dropout_p_is_checked_and_one_drops_everything(torch):
    q = np.ones((2, 3, 4))
    for bad in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match=r"scaled_dot_product_attention: dropout_p must be a probability in "
                                             r"\[0, 1\], got " + repr(bad)):
            F.scaled_dot_product_attention(q, q, q, dropout_p=bad)
    x = xpnn.tensor(q, requires_grad=True)
    out = F.scaled_dot_product_attention(x, x, x, dropout_p=1.0, seed=0)
    ref = torch.nn.functional.scaled_dot_product_attention(*(torch.tensor(q),) * 3, dropout_p=1.0)
    np.testing.assert_array_equal(out.data, ref.numpy())
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, np.zeros_like(q))


KV_CASES = [  # kdim, vdim, add_bias_kv, add_zero_attn, batch_first, need_weights, masks, bias
    (4, 6, False, False, True, True, None, True),
    (4, 6, False, False, False, False, "bool", True),
    (8, 5, False, False, True, False, "float", False),
    (None, None, True, False, True, True, "bool", True),
    (None, None, False, True, False, True, "float", True),
    (4, 6, True, True, True, False, "bool", True),
    (4, 6, True, True, False, True, None, False),
    (3, 3, True, True, True, True, "float3d", True),
]


@pytest.mark.parametrize("case", KV_CASES)
def test_mha_kdim_vdim_bias_kv_and_zero_attn_match_pytorch(case, torch):
    """Separate q/k/v projections (``kdim``/``vdim``), ``add_bias_kv`` and ``add_zero_attn``: PyTorch's parameters
    (names, shapes, order), outputs, weights (S + 1 or + 2 columns) and the gradients of the inputs and every
    parameter, with masks (padded with an attended column per added key, as PyTorch pads them)."""
    kdim, vdim, bias_kv, zero_attn, batch_first, need_weights, masks, bias = case
    rng = np.random.default_rng(KV_CASES.index(case))
    E, H, N, L, S = 8, 2, 3, 4, 5
    kw = dict(bias=bias, add_bias_kv=bias_kv, add_zero_attn=zero_attn, kdim=kdim, vdim=vdim, batch_first=batch_first)
    tm, xm = _mha_pair(torch, E, H, **kw)
    assert [(k, tuple(v.shape)) for k, v in xm.named_parameters()] == \
        [(k, tuple(v.shape)) for k, v in tm.named_parameters()]
    assert xm._qkv_same_embed_dim == tm._qkv_same_embed_dim
    kd, vd = kdim or E, vdim or E

    def seq(length, dim):
        return rng.standard_normal((N, length, dim) if batch_first else (length, N, dim))
    q, k, v = seq(L, E), seq(S, kd), seq(S, vd)
    kpm = am = None
    if masks == "bool":
        kpm = rng.random((N, S)) < 0.3
        am = rng.random((L, S)) < 0.3
        kpm[:, 0] = am[:, 0] = False
    elif masks == "float":
        kpm, am = rng.standard_normal((N, S)), rng.standard_normal((L, S))
    elif masks == "float3d":
        am = rng.standard_normal((N * H, L, S))
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    t_out, t_w = tm(tq, tk, tv, key_padding_mask=None if kpm is None else torch.tensor(kpm),
                    need_weights=need_weights, attn_mask=None if am is None else torch.tensor(am))
    g = rng.standard_normal(tuple(t_out.shape))
    ((t_out * torch.tensor(g)).sum() + (0 if t_w is None else (t_w ** 2).sum())).backward()
    xq, xk, xv = (xpnn.tensor(a, requires_grad=True) for a in (q, k, v))
    out, w = xm(xq, xk, xv, key_padding_mask=kpm, need_weights=need_weights, attn_mask=am)
    ((out * g).sum() + (0 if w is None else (w ** 2).sum())).backward()
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), atol=1e-10)
    assert (w is None) == (t_w is None)
    if w is not None:
        assert tuple(w.shape) == (N, L, S + bias_kv + zero_attn)
        np.testing.assert_allclose(w.numpy(), t_w.detach().numpy(), atol=1e-10)
    for mine, theirs in zip((xq, xk, xv), (tq, tk, tv)):
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), atol=1e-10)
    t_params = dict(tm.named_parameters())
    for name, p in xm.named_parameters():
        np.testing.assert_allclose(p.grad, t_params[name].grad.numpy(), atol=1e-10, err_msg=name)


def test_mha_kdim_vdim_gradcheck_float64():
    rng = np.random.default_rng(7)
    m = nn.MultiheadAttention(4, 2, batch_first=True, kdim=3, vdim=5, add_bias_kv=True, add_zero_attn=True,
                              dtype="float64", seed=0)
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 2, 3)), rng.standard_normal((2, 2, 5))
    kpm = np.array([[False, True], [False, False]])
    w = rng.standard_normal((2, 3, 4))

    def loss():
        with xpnn.no_grad():
            return float((m(xpnn.tensor(q), xpnn.tensor(k), xpnn.tensor(v), key_padding_mask=kpm)[0] * w).sum())

    xs = [xpnn.tensor(a, requires_grad=True) for a in (q, k, v)]
    (m(*xs, key_padding_mask=kpm)[0] * w).sum().backward()
    for x, a in zip(xs, (q, k, v)):
        np.testing.assert_allclose(x.grad, numeric_grad(loss, a), atol=1e-7)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, numeric_grad(loss, p.data), atol=1e-7, err_msg=name)


def test_mha_kdim_vdim_wrong_shapes_name_the_layer():
    m = nn.MultiheadAttention(8, 2, batch_first=True, kdim=4, vdim=6, dtype="float64")
    q = xpnn.tensor(np.zeros((2, 3, 8)))
    k, v = xpnn.tensor(np.zeros((2, 5, 4))), xpnn.tensor(np.zeros((2, 5, 6)))
    assert tuple(m(q, k, v)[0].shape) == (2, 3, 8)
    with pytest.raises(ShapeError, match=r"MultiheadAttention\(embed_dim=8, num_heads=2\): expected key of shape "
                                         r"\(N, S, kdim\) with kdim = 4 .*got \(2, 5, 8\)"):
        m(q, xpnn.tensor(np.zeros((2, 5, 8))), v)
    with pytest.raises(ShapeError, match=r"expected value of shape \(N, S, vdim\) with vdim = 6 .*got \(2, 5, 4\)"):
        m(q, k, k)
    with pytest.raises(ShapeError, match=r"expected key and value of one length S .*key \(2, 5, 4\) and value "
                                         r"\(2, 4, 6\)"):
        m(q, k, xpnn.tensor(np.zeros((2, 4, 6))))
    with pytest.raises(ValueError, match=r"MultiheadAttention: kdim must be a positive integer, got 0"):
        nn.MultiheadAttention(8, 2, kdim=0)
