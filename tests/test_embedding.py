"""F.embedding / nn.Embedding: rows and the scatter-add gradient (repeated ids add up, padding_idx gets none)
against PyTorch, float64 finite differences, second order through the backward, the array-API path, torch
state_dicts and from_pretrained, and ids that are out of range or not integers."""
from __future__ import annotations

import array_api_strict as xs
import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import nn
from xpnn.errors import DTypeError, ShapeError
from _numgrad import numeric_grad

RNG = np.random.default_rng(0)
W = RNG.normal(size=(10, 4))
IDS = np.array([[1, 3, 3, 0, 9], [2, 3, 1, 1, 7]])  # repeats, padding candidates 1 and -1 (= 9)


@pytest.mark.parametrize("padding_idx", [None, 1, -1])
@pytest.mark.parametrize("ids", [IDS, IDS[0], np.array(4)], ids=["2d", "1d", "0d"])
def test_values_and_weight_gradient_match_torch(padding_idx, ids):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for embedding")
    Wt = xpnn.tensor(W, requires_grad=True)
    y = F.embedding(xpnn.tensor(ids), Wt, padding_idx=padding_idx)
    g = np.random.default_rng(1).normal(size=y.shape)
    y.backward(g)
    T = torch.tensor(W, requires_grad=True)
    ty = torch.nn.functional.embedding(torch.tensor(ids), T, padding_idx=padding_idx)
    ty.backward(torch.tensor(g))
    assert y.shape == tuple(ty.shape) == ids.shape + (4,)
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    np.testing.assert_allclose(Wt.grad, T.grad.numpy(), rtol=1e-12, atol=0)


def test_weight_gradient_matches_finite_differences():
    g = np.random.default_rng(2).normal(size=IDS.shape + (4,))
    w = W.copy()
    Wt = xpnn.tensor(w, requires_grad=True)
    (F.embedding(IDS, Wt) * g).sum().backward()
    np.testing.assert_allclose(Wt.grad, numeric_grad(lambda: float(np.sum(F.embedding(IDS, w) * g)), w),
                               rtol=1e-6, atol=1e-8)
    # with padding_idx: the finite difference of that row is not 0, the gradient is (PyTorch's rule)
    Wp = xpnn.tensor(w, requires_grad=True)
    (F.embedding(IDS, Wp, padding_idx=3) * g).sum().backward()
    want = numeric_grad(lambda: float(np.sum(F.embedding(IDS, w) * g)), w)
    want[3] = 0.0
    np.testing.assert_allclose(Wp.grad, want, rtol=1e-6, atol=1e-8)


def test_second_order_through_the_scatter_add():
    """The backward is an op with its own backward: d(sum(dW * c))/d(g) and a second derivative of a loss whose
    gradient depends on the weight, against PyTorch."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for embedding")
    c = np.random.default_rng(3).normal(size=W.shape)
    Wt = xpnn.tensor(W, requires_grad=True)
    y = F.embedding(IDS, Wt, padding_idx=1)
    (dw,) = xpnn.grad((y * y).sum(), [Wt], create_graph=True)
    (d2,) = xpnn.grad((dw * c).sum(), [Wt])
    T = torch.tensor(W, requires_grad=True)
    ty = torch.nn.functional.embedding(torch.tensor(IDS), T, padding_idx=1)
    (tdw,) = torch.autograd.grad((ty * ty).sum(), T, create_graph=True)
    (td2,) = torch.autograd.grad((tdw * torch.tensor(c)).sum(), T)
    np.testing.assert_allclose(dw.numpy(), tdw.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(d2.numpy(), td2.numpy(), rtol=1e-12)


def test_backward_function_on_arrays():
    g = np.random.default_rng(4).normal(size=IDS.shape + (4,))
    dw = F.embedding_backward(g, IDS, 10, padding_idx=3)
    want = np.zeros((10, 4))
    np.add.at(want, IDS, g)
    want[3] = 0
    np.testing.assert_allclose(dw, want, rtol=1e-15)


def test_array_api_strict_matches_numpy():
    g = np.random.default_rng(5).normal(size=IDS.shape + (4,))
    out = []
    for conv in (lambda a: a, xs.asarray):
        Wt = xpnn.tensor(conv(W), requires_grad=True)
        y = F.embedding(xpnn.tensor(conv(IDS)), Wt, padding_idx=3)
        (y * conv(g)).sum().backward()
        out.append((np.asarray(y.numpy()), np.asarray(Wt.grad)))
    np.testing.assert_array_equal(out[1][0], out[0][0])
    np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-14)


def test_module_loads_torch_state_dict_and_from_pretrained():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for Embedding")
    tm = torch.nn.Embedding(10, 4, padding_idx=2)
    m = nn.Embedding(10, 4, padding_idx=2, seed=0)
    assert list(m.state_dict()) == list(tm.state_dict()) == ["weight"]
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    np.testing.assert_array_equal(m(IDS), tm(torch.tensor(IDS)).detach().numpy())
    frozen = nn.Embedding.from_pretrained(tm.weight.detach().numpy())
    assert not frozen.weight.requires_grad and frozen.weight.dtype == np.float32
    assert nn.Embedding.from_pretrained(W, freeze=False).weight.requires_grad


def test_module_initialisation_like_torch():
    m = nn.Embedding(1000, 16, padding_idx=-2, seed=1)
    w = m.weight.numpy()
    assert m.padding_idx == 998 and w.dtype == np.float32 and np.all(w[998] == 0)
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1.0) < 0.02  # N(0, 1), as torch.nn.Embedding
    assert repr(m) == "Embedding(1000, 16, padding_idx=998)"
    np.testing.assert_array_equal(nn.Embedding(5, 2, seed=3).weight.numpy(), nn.Embedding(5, 2, seed=3).weight.numpy())


def test_training_updates_only_the_looked_up_rows():
    m = nn.Embedding(6, 3, padding_idx=0, seed=0)
    opt = xpnn.optim.SGD(m.parameters(), lr=0.1)
    before = m.weight.numpy().copy()
    loss = (m(xpnn.tensor(np.array([0, 2, 2]))) ** 2).sum()
    loss.backward()
    opt.step()
    changed = np.any(m.weight.numpy() != before, axis=1)
    np.testing.assert_array_equal(changed, [False, False, True, False, False, False])


def test_bad_ids_name_the_layer_range_and_value():
    m = nn.Embedding(10, 4)
    with pytest.raises(IndexError, match=r"^Embedding\(10, 4\): token ids must be in \[0, 9\], got 10$"):
        m(np.array([[1, 10]]))
    with pytest.raises(IndexError, match=r"token ids must be in \[0, 9\], got -1 \(2 entries out of range\)"):
        m(xpnn.tensor(np.array([-1, 3, 12])))
    with pytest.raises(IndexError, match=r"^embedding: token ids must be in \[0, 9\], got 99$"):
        F.embedding(np.array([99]), W)
    with pytest.raises(DTypeError, match=r"Embedding\(10, 4\): token ids must be an integer array, got dtype float32"):
        m(np.array([1.0, 2.0], np.float32))
    with pytest.raises(ShapeError, match="embedding: expected weight of shape"):
        F.embedding(IDS, np.ones(4))
    with pytest.raises(ValueError, match="padding_idx must be within num_embeddings"):
        nn.Embedding(10, 4, padding_idx=10)
    with pytest.raises(NotImplementedError, match="max_norm"):
        nn.Embedding(10, 4, max_norm=1.0)
    with pytest.raises(ValueError, match="num_embeddings must be a positive integer"):
        nn.Embedding(0, 4)


def test_explicit_api_on_token_ids_in_a_sequential():
    """Arrays in (integer ids, no floating input): the layers inside still record, ``backward(dy)`` fills the
    parameters' gradients as the tape does and returns no input gradient."""
    ids = IDS
    make = lambda: nn.Sequential(nn.Embedding(10, 4, padding_idx=3, seed=0, dtype="float64"),  # noqa: E731
                                 nn.LayerNorm(4, dtype="float64"), nn.GELU(), nn.Flatten(),
                                 nn.Linear(20, 3, seed=1, dtype="float64"))
    a, b = make(), make()
    out = a(ids)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3)
    dy = np.random.default_rng(6).normal(size=out.shape)
    assert a.backward(dy) is None
    (b(xpnn.tensor(ids)) * dy).sum().backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12, err_msg=name)
    assert not np.any(a[0].weight.grad[3])


def test_out_of_range_ids_off_numpy_are_checked_on_the_device():
    """On other namespaces (no host read inside a step, as for class labels): the rows of bad ids are NaN, nothing is
    read out of bounds, and check_device_errors raises; in debug mode the call raises at once."""
    from xpnn.debug import check_device_errors, debug_mode

    m = nn.Embedding(10, 4, backend=xs, dtype="float64", seed=0)
    y = m(xpnn.tensor(xs.asarray([[3, 10], [-2, 1]])))
    out = np.asarray(y.numpy())
    assert np.isnan(out[0, 1]).all() and np.isnan(out[1, 0]).all()
    np.testing.assert_array_equal(out[0, 0], np.asarray(m.weight.data)[3])
    y.sum().backward()  # (NaN rows carry no gradient into row 0, the stand-in id)
    np.testing.assert_array_equal(np.asarray(m.weight.grad)[0], 0.0)
    with pytest.raises(IndexError, match=r"embedding: token ids must be in \[0, 9\], an out-of-range one was seen"):
        check_device_errors()
    check_device_errors()  # (reset)
    with debug_mode(), pytest.raises(IndexError, match=r"Embedding\(10, 4\): token ids must be in \[0, 9\], got 10"):
        m(xs.asarray([3, 10]))
    g = F.gather(xs.asarray(np.eye(3)), 1, xs.asarray([[0], [3], [1]]))
    assert np.isnan(np.asarray(g)[1, 0]) and np.asarray(g)[2, 0] == 0.0
    with pytest.raises(IndexError, match=r"gather: index must be in \[0, 2\]"):
        check_device_errors()


def test_writing_into_the_ids_after_the_forward_raises_at_backward():
    """The ids are saved for the weight's gradient: a write into the ids Tensor before the backward raises (as in
    PyTorch) instead of scattering the gradient into the new rows."""
    from xpnn.errors import InplaceModifiedError

    torch = pytest.importorskip("torch", reason="PyTorch is the reference for the version counter")
    tw, tids = torch.tensor(W, requires_grad=True), torch.tensor(IDS)
    ty = torch.nn.functional.embedding(tids, tw)
    tids[0, 0] = 5
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ty.sum().backward()
    w, ids = xpnn.tensor(W, requires_grad=True), xpnn.tensor(IDS.copy())
    y = F.embedding(ids, w)
    ids[0, 0] = 5
    with pytest.raises(InplaceModifiedError, match="embedding: .*modified by an inplace operation"):
        y.sum().backward()


def test_from_pretrained_refuses_a_list_naming_the_method():
    with pytest.raises(TypeError, match="Embedding.from_pretrained: embeddings must be a 2-D array or Tensor, got list"):
        nn.Embedding.from_pretrained(W.tolist())
