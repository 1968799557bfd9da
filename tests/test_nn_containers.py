"""Containers and module-level helpers with PyTorch's behaviour: ``ModuleList``, ``Identity``, ``Module.apply``,
``nn.Softmax``/``nn.LogSoftmax`` with ``dim=``, and the ``NLLLoss`` module (torch as the reference where present)."""
import numpy as np
import pytest

import xpnn
from xpnn import nn


def lin(i, o, seed):
    return nn.Linear(i, o, seed=seed)


def test_module_list_registers_children_like_torch():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for ModuleList names")

    class Ours(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([lin(3, 4, 0), nn.ReLU()])
            self.layers.append(lin(4, 2, 1))
            self.head = lin(2, 2, 2)

        def forward(self, x):
            for m in self.layers:
                x = m(x)
            return self.head(x)

    class Theirs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Linear(3, 4), torch.nn.ReLU()])
            self.layers.append(torch.nn.Linear(4, 2))
            self.head = torch.nn.Linear(2, 2)

        def forward(self, x):
            for m in self.layers:
                x = m(x)
            return self.head(x)

    ours, theirs = Ours(), Theirs()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(ours(xpnn.tensor(x)).numpy(), theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    # all parameters live in one flat buffer once the owner's parameters() packs them
    params = list(ours.parameters())
    assert len(params) == 6 and nn.flat_buffer_of(params) is not None


def test_module_list_list_operations():
    a, b, c, d = lin(2, 2, 0), nn.ReLU(), lin(2, 3, 1), nn.Identity()
    ml = nn.ModuleList([a, b])
    assert len(ml) == 2 and ml[0] is a and ml[-1] is b and list(ml) == [a, b]
    ml.extend([c])
    ml.insert(1, d)
    assert list(ml) == [a, d, b, c]
    assert list(ml._modules) == ["0", "1", "2", "3"]  # renumbered, as torch does
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "3.weight", "3.bias"]
    part = ml[1:3]
    assert isinstance(part, nn.ModuleList) and list(part) == [d, b]
    assert list(ml) == [a, d, b, c]  # slicing leaves the original alone
    ml[1] = c2 = nn.Tanh()
    assert ml[1] is c2 and not hasattr(ml, "4")
    del ml[0]
    assert list(ml) == [c2, b, c] and [n for n, _ in ml.named_parameters()] == ["2.weight", "2.bias"]
    ml += [nn.Sigmoid()]
    assert len(ml) == 4 and isinstance(ml[3], nn.Sigmoid)
    assert len(nn.ModuleList()) == 0
    with pytest.raises(IndexError, match="ModuleList index 4 out of range for 4 modules"):
        ml[4]
    with pytest.raises(TypeError, match="ModuleList indices must be integers or slices"):
        ml["0"]
    with pytest.raises(TypeError, match="ModuleList: child 4 must be an xpnn.nn.Module, got int"):
        ml.append(3)
    with pytest.raises(TypeError, match="ModuleList.extend: expected an iterable of modules"):
        ml.extend(nn.ReLU())
    with pytest.raises(NotImplementedError, match="ModuleList does not implement forward"):
        ml(np.zeros((1, 2), np.float32))


def test_module_list_trains_with_an_optimizer():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(lin(4, 4, s) for s in range(3))

        def forward(self, x):
            for m in self.blocks:
                x = xpnn.F.tanh(m(x))
            return x

    net = Net()
    opt = xpnn.optim.SGD(net.parameters(), lr=0.1)
    x = xpnn.tensor(np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32))
    before = net.state_dict()
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (net(x) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(not np.allclose(before[k], v) for k, v in net.state_dict().items() if k.endswith("weight"))


def test_identity_passes_the_input_and_its_gradient():
    x = xpnn.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    idm = nn.Identity(54, unused=0.1)  # torch accepts and ignores arguments
    y = idm(x)
    assert y is x
    (y * 2).sum().backward()
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 2.0))
    a = np.ones((2, 3), np.float32)
    assert idm(a) is a
    np.testing.assert_array_equal(idm.backward(np.full((2, 3), 3.0, np.float32)), np.full((2, 3), 3.0))
    model = nn.Sequential(lin(3, 3, 0), nn.Identity())
    assert list(model.state_dict()) == ["0.weight", "0.bias"]


def test_apply_visits_children_first_then_self_like_torch():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for Module.apply's order")
    ours = nn.Sequential(lin(2, 2, 0), nn.Sequential(nn.ReLU(), lin(2, 2, 1)), nn.Tanh())
    theirs = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(2, 2)),
                                 torch.nn.Tanh())
    seen, seen_t = [], []
    assert ours.apply(lambda m: seen.append(type(m).__name__)) is ours
    theirs.apply(lambda m: seen_t.append(type(m).__name__))
    assert seen == seen_t == ["Linear", "ReLU", "Linear", "Sequential", "Tanh", "Sequential"]

    def init(m):
        if isinstance(m, nn.Linear):
            xpnn.init.constant(m.weight, 0.5)
            xpnn.init.zeros(m.bias)

    ours.apply(init)
    for k, v in ours.state_dict().items():
        assert np.all(v == (0.5 if k.endswith("weight") else 0.0)), k


@pytest.mark.parametrize("cls", ["Softmax", "LogSoftmax"])
def test_softmax_layers_take_dim_like_torch(cls):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for nn.Softmax/nn.LogSoftmax")
    x = np.random.default_rng(2).normal(size=(3, 4, 5))
    for d in (0, 1, -1):
        ours, theirs = getattr(nn, cls)(dim=d), getattr(torch.nn, cls)(dim=d)
        assert ours.dim == ours.axis == d
        np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).numpy(), rtol=1e-12)
        np.testing.assert_allclose(getattr(nn, cls)(axis=d)(x), ours(x))
    np.testing.assert_allclose(getattr(nn, cls)()(x), getattr(torch.nn, cls)(dim=-1)(torch.from_numpy(x)).numpy(),
                               rtol=1e-12)
    with pytest.raises(TypeError, match=rf"^{cls}: got both axis=1 and dim=1"):
        getattr(nn, cls)(1, dim=1)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_module_matches_torch(reduction):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for NLLLoss")
    rng = np.random.default_rng(3)
    z = rng.normal(size=(6, 4))
    t = np.array([0, 3, 3, 1, 2, 7])
    w = rng.uniform(0.5, 2.0, size=4)
    ours = nn.NLLLoss(w, ignore_index=7, reduction=reduction)
    theirs = torch.nn.NLLLoss(torch.from_numpy(w), ignore_index=7, reduction=reduction)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    assert list(nn.NLLLoss().state_dict()) == list(torch.nn.NLLLoss().state_dict()) == []
    x = xpnn.tensor(z, requires_grad=True)
    loss = ours(nn.LogSoftmax(dim=1)(x), t)
    r = torch.from_numpy(z).requires_grad_(True)
    ref = theirs(torch.nn.LogSoftmax(dim=1)(r), torch.from_numpy(t))
    np.testing.assert_allclose(loss.numpy(), ref.detach().numpy(), rtol=1e-12)
    loss.sum().backward()
    ref.sum().backward()
    np.testing.assert_allclose(x.grad, r.grad.numpy(), rtol=1e-12)
    # the explicit API: arrays in, loss_fn.backward() gives the gradient of the (summed) loss
    logp = nn.LogSoftmax(dim=1)(z)
    out = ours(logp, t)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-12)
    assert ours.backward().shape == (6, 4)
    # LogSoftmax + NLLLoss == CrossEntropyLoss
    if reduction == "mean":
        np.testing.assert_allclose(nn.NLLLoss()(nn.LogSoftmax(dim=1)(z), t % 4), nn.CrossEntropyLoss()(z, t % 4),
                                   rtol=1e-12)


def test_sequential_slicing_item_assignment_and_deletion_like_torch():
    """``seq[a:b]`` is a Sequential of the same children under their names, ``seq[i] = m`` replaces a child,
    ``del seq[i]`` / ``del seq[a:b]`` removes and renumbers, as ``torch.nn.Sequential``; the errors name
    Sequential. Slicing moves no parameter: the model it came from keeps its one buffer and trains on."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for Sequential's indexing")
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    seq = nn.Sequential(lin(3, 4, 0), nn.ReLU(), lin(4, 2, 1), nn.Tanh())
    ref = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2), torch.nn.Tanh())
    buf, w0 = seq.flat_buffer(), seq[0].weight.data
    part, tpart = seq[1:3], ref[1:3]
    assert type(part) is nn.Sequential and list(part) == [seq[1], seq[2]]
    assert list(part.state_dict()) == list(tpart.state_dict()) == ["2.weight", "2.bias"]
    assert seq.flat_buffer() is buf and seq[0].weight.data is w0  # nothing repacked
    np.testing.assert_allclose(seq[2:](seq[:2](x)), seq(x), rtol=1e-6)
    assert len(seq[::2]) == len(ref[::2]) == 2 and len(seq[5:]) == 0
    seq.eval()
    assert not seq[:2].training

    seq[3] = nn.Sigmoid()
    ref[3] = torch.nn.Sigmoid()
    assert type(seq[-1]) is nn.Sigmoid and list(seq._modules) == ["0", "1", "2", "3"]
    np.testing.assert_allclose(seq(x), 1 / (1 + np.exp(-seq[:3](x))), rtol=1e-6)
    seq[2] = lin(4, 6, 2)
    assert seq.flat_buffer() is not None and seq(x).shape == (5, 6)

    del seq[1]
    del ref[1]
    assert [type(m) for m in seq] == [nn.Linear, nn.Linear, nn.Sigmoid]
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert list(ref.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    del seq[1:]
    assert len(seq) == 1 and seq.flat_buffer() is not None and seq(x).shape == (5, 4)

    with pytest.raises(IndexError, match="Sequential index 3 out of range for 1 modules"):
        seq[3]
    with pytest.raises(IndexError, match="Sequential index -2 out of range"):
        seq[-2] = nn.ReLU()
    with pytest.raises(TypeError, match="Sequential indices must be integers or slices, got str"):
        seq["0"]
    with pytest.raises(TypeError, match="Sequential: child 0 must be an xpnn.nn.Module"):
        seq[0] = torch.nn.ReLU()
