"""Parameter / FlatBuffer contract, Module registration, packing, to(), state_dict/load_state_dict."""
import array_api_strict
import numpy as np
import pytest

import xpnn
import xpnn.nn as nn
from xpnn.errors import CheckpointError, DTypeError, NamespaceMismatchError, ShapeError
from xpnn.nn import FlatBuffer, Parameter, flat_buffer_of
from xpnn.nn.parameter import views_supported


def mlp(seed=0, **kw):
    return nn.Sequential(nn.Linear(6, 5, seed=seed, **kw), nn.ReLU(), nn.Linear(5, 3, seed=seed + 1, **kw))


def test_lone_parameter_grad_is_zeros_on_demand():
    p = Parameter(np.arange(6.0, dtype=np.float32).reshape(2, 3))
    assert not p.has_grad
    g = p.grad
    assert g.shape == (2, 3) and g.dtype == np.float32 and not g.any()
    assert p.grad is g  # allocated once
    p.grad = np.ones((2, 3), np.float32)
    assert p.grad.sum() == 6
    p.grad = None
    assert not p.has_grad and not p.grad.any()
    with pytest.raises(ShapeError, match=r"\(2, 3\)"):
        p.grad = np.ones((3, 2), np.float32)
    with pytest.raises(DTypeError):
        p.grad = np.ones((2, 3), np.float64)
    assert p.shape == (2, 3) and p.ndim == 2 and p.size == 6 and p.dtype == np.float32


def test_parameter_rejects_integer_data():
    with pytest.raises(DTypeError, match="floating"):
        Parameter(np.arange(3))


def test_flat_buffer_views_and_assignment_copies_into_view():
    a = Parameter(np.ones((2, 3), np.float32))
    b = Parameter(np.full((4,), 2.0, np.float32))
    b.grad = np.full((4,), 7.0, np.float32)
    buf = FlatBuffer.pack([a, b])
    assert buf.data.shape == (20,) and buf.grad.shape == (20,)  # b starts 64 bytes in: 10 zeros of padding
    assert buf.params == [a, b] and a._flat is buf and b._offset == 16
    np.testing.assert_array_equal(buf.data, [1] * 6 + [0] * 10 + [2] * 4)
    np.testing.assert_array_equal(buf.grad, [0] * 6 + [0] * 10 + [7] * 4)  # existing grads are carried over
    view = a.grad
    a.grad = np.full((2, 3), 3.0, np.float32)
    assert a.grad is view  # copied into the view, not rebound
    assert buf.grad[:6].tolist() == [3.0] * 6
    a.data = np.zeros((2, 3), np.float32)
    assert buf.data[:6].tolist() == [0.0] * 6
    b.data[...] = 5.0  # in-place writes go to the buffer
    assert buf.data[16:].tolist() == [5.0] * 4 and not buf.data[6:16].any()
    buf.data[:] = -1.0
    assert float(a.data.sum()) == -6.0
    a.grad = None  # zeroes the view for flat members
    assert not buf.grad[:6].any() and a.grad is view
    with pytest.raises(ShapeError):
        a.grad = np.ones((6,), np.float32)


def test_flat_buffer_of_requires_exact_member_list():
    m = mlp()
    ps = list(m.parameters())
    buf = flat_buffer_of(ps)
    assert buf is not None and buf.params == ps
    assert flat_buffer_of(ps[:2]) is None
    assert flat_buffer_of(ps[::-1]) is None
    assert flat_buffer_of([]) is None
    assert flat_buffer_of([Parameter(np.zeros(3, np.float32))]) is None
    assert buf.size == ps[-1]._offset + ps[-1].size >= sum(p.size for p in ps)  # padded, see the next test


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_flat_buffer_offsets_are_64_byte_aligned_and_padding_stays_zero(dtype):
    """Each parameter starts at a multiple of 64 bytes; the padding is 0 in data and grad, and stays 0 through
    optimizer steps (weight decay, momentum, Adam's moments) and a state-dict round trip."""
    from xpnn import optim

    ps = [Parameter(np.full(shape, 0.5, dtype)) for shape in [(3, 5), (7,), (1,), (33,)]]
    buf = FlatBuffer.pack(ps)
    itemsize = np.dtype(dtype).itemsize
    assert all(p._offset * itemsize % 64 == 0 for p in ps)
    assert all(a._offset + a.size <= b._offset for a, b in zip(ps, ps[1:]))
    pad = np.ones(buf.size, bool)
    for p in ps:
        pad[p._offset:p._offset + p.size] = False
    assert pad.sum() == buf.size - sum(p.size for p in ps) > 0
    for opt in (optim.Adam(ps, lr=0.1, weight_decay=0.1, amsgrad=True), optim.SGD(ps, lr=0.1, momentum=0.9),
                optim.RMSprop(ps, lr=0.1, centered=True, momentum=0.5), optim.Adagrad(ps, lr=0.1)):
        for _ in range(3):
            for p in ps:
                p.grad = np.full(p.shape, -1.0, dtype)
            opt.step()
        assert not buf.data[pad].any() and not buf.grad[pad].any(), type(opt).__name__
        state = opt.state_dict()
        for i, p in enumerate(ps):
            for k, v in state["state"][i].items():
                if k != "step":
                    assert np.shape(v) == p.shape, (type(opt).__name__, k)
        opt.load_state_dict(state)
        opt.step()
        assert not buf.data[pad].any(), type(opt).__name__


def test_pack_refuses_mixed_dtypes_and_namespaces():
    a = Parameter(np.zeros(3, np.float32))
    assert FlatBuffer.pack([a, Parameter(np.zeros(3, np.float64))]) is None
    assert FlatBuffer.pack([a, Parameter(array_api_strict.zeros(3))]) is None
    assert a._flat is None


def test_containers_repack_children_and_layer_views_stay_valid():
    l1, l2 = nn.Linear(4, 3, seed=0), nn.Linear(3, 2, seed=1)
    w_before = np.array(l1.weight.data)
    old = flat_buffer_of(l1.parameters())
    assert old is not None
    m = nn.Sequential(l1, nn.Tanh(), l2)
    buf = flat_buffer_of(m.parameters())
    assert buf is not None and buf is not old and len(buf.params) == 4
    np.testing.assert_array_equal(l1.weight.data, w_before)
    # a child's parameters are a subset of the model buffer: asking for them must not repack
    list(l1.parameters())
    assert flat_buffer_of(m.parameters()) is buf
    r = nn.Residual(nn.Linear(3, 3, seed=2))
    assert flat_buffer_of(r.parameters()) is not None


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8, seed=0)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 2, seed=1)
        self.scale = 3.0  # plain attributes are not registered

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))

    def backward(self, dy):
        return self.fc1.backward(self.act.backward(self.fc2.backward(dy)))


def test_user_module_registration_and_lazy_packing():
    m = TwoLayer()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert [n for n, _ in m.named_modules()] == ["", "fc1", "act", "fc2"]
    assert flat_buffer_of(m.parameters()) is not None  # packed lazily on first parameters()
    x = np.ones((2, 4), np.float32)
    m.zero_grad()
    m.forward(x)
    m.backward(np.ones((2, 2), np.float32))
    buf = flat_buffer_of(m.parameters())
    assert float(np.abs(buf.grad).sum()) > 0
    assert float(np.abs(m.fc1.weight.grad).sum()) > 0
    m.zero_grad()
    assert not buf.grad.any()
    # reassigning an attribute replaces the registration
    m.fc2 = nn.Linear(8, 2, seed=5)
    assert len(list(m.parameters())) == 4
    del m.fc2
    assert [n for n, _ in m.named_parameters()] == ["fc1.weight", "fc1.bias"]


def test_parameters_is_a_plain_read():
    """``parameters()``/``named_parameters()`` pack nothing: a module packs its parameters when it is built (and a
    deep copy when it is copied); a layer assigned later keeps its own buffer."""
    m = TwoLayer()
    assert flat_buffer_of(m.parameters()) is not None  # packed when built
    m.extra = nn.Linear(2, 2, seed=3)
    ps = [m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias, m.extra.weight, m.extra.bias]
    before = [(p._flat, p.data) for p in ps]
    assert list(m.parameters()) == ps and [p for _, p in m.named_parameters()] == ps
    assert all(p._flat is flat and p.data is data for p, (flat, data) in zip(ps, before))
    assert flat_buffer_of(ps) is None


def test_module_requires_super_init():
    class Bad(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="super"):
        Bad()


def test_train_eval_propagates():
    m = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Sequential(nn.BatchNorm1d(3)))
    assert m.eval() is m
    assert all(not mod.training for mod in m.modules())
    m.train()
    assert all(mod.training for mod in m.modules())


def test_state_dict_round_trip_and_copies():
    m = nn.Sequential(nn.Linear(4, 3, seed=0), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2, seed=1))
    m(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))  # updates the running stats
    sd = m.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                        "1.num_batches_tracked", "3.weight", "3.bias"]
    assert int(sd["1.num_batches_tracked"]) == 1
    sd["0.weight"][...] = 0  # a copy: the model is untouched
    assert np.abs(m[0].weight.data).sum() > 0
    m2 = nn.Sequential(nn.Linear(4, 3, seed=7), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2, seed=8))
    buf = flat_buffer_of(m2.parameters())
    res = m2.load_state_dict(m.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert flat_buffer_of(m2.parameters()) is buf  # copied into the existing views
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_load_state_dict_from_other_namespaces_and_dtypes():
    m = mlp()
    sd = {k: np.asarray(v, dtype=np.float64) for k, v in mlp(seed=10).state_dict().items()}  # e.g. torch -> numpy
    m.load_state_dict(sd)
    np.testing.assert_allclose(m[0].weight.data, sd["0.weight"].astype(np.float32))
    strict_sd = {k: array_api_strict.asarray(v) for k, v in sd.items()}
    m.load_state_dict(strict_sd)
    assert isinstance(m[2].bias.data, np.ndarray)


def test_load_state_dict_errors():
    m = mlp()
    sd = m.state_dict()
    bad = dict(sd)
    bad.pop("2.bias")
    bad["extra.weight"] = np.zeros(3)
    with pytest.raises(CheckpointError, match=r"missing keys \['2.bias'\].*unexpected keys \['extra.weight'\]"):
        m.load_state_dict(bad)
    before = np.array(m[0].weight.data)
    wrong = dict(sd)
    wrong["0.bias"] = np.zeros(5, np.float32) + 1
    wrong["2.weight"] = np.zeros((5, 3), np.float32)
    with pytest.raises(CheckpointError, match=r"'2.weight'.*\(3, 5\).*\(5, 3\)"):
        m.load_state_dict(wrong)
    np.testing.assert_array_equal(m[0].weight.data, before)  # nothing copied on failure
    res = m.load_state_dict({"0.weight": sd["0.weight"], "junk": np.zeros(1)}, strict=False)
    assert res.unexpected_keys == ["junk"] and "0.bias" in res.missing_keys
    with pytest.raises(CheckpointError, match="mapping"):
        m.load_state_dict([1, 2])


def test_to_array_api_strict_and_back():
    assert views_supported(array_api_strict)
    m = nn.Sequential(nn.Linear(6, 5, seed=0), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3, seed=1))
    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    m.eval()
    y_np = m(x)
    assert m.to(array_api_strict) is m
    ps = list(m.parameters())
    assert all(array_api_compat_ns(p.data) == "array_api_strict" for p in ps)
    assert flat_buffer_of(ps) is not None
    assert array_api_compat_ns(m[1].running_var) == "array_api_strict"
    y_s = m(array_api_strict.asarray(x))
    np.testing.assert_allclose(xpnn.backend.to_numpy(y_s), y_np, rtol=1e-6, atol=1e-6)
    with pytest.raises(NamespaceMismatchError, match="Linear"):
        m(x)  # numpy input into a strict model
    m.to("numpy", dtype="float64")
    assert m[0].weight.dtype == np.float64 and m[1].running_mean.dtype == np.float64
    assert m[1].num_batches_tracked.dtype == np.int64
    assert flat_buffer_of(m.parameters()).data.dtype == np.float64
    np.testing.assert_allclose(m(x.astype(np.float64)), y_np, rtol=1e-5, atol=1e-6)


def array_api_compat_ns(a):
    import array_api_compat

    return array_api_compat.array_namespace(a).__name__.split(".")[-1]


def test_namespace_without_views_falls_back_to_per_parameter_storage(monkeypatch):
    from xpnn.nn import parameter

    monkeypatch.setitem(parameter._VIEWS_OK, id(array_api_strict), False)
    m = nn.Sequential(nn.Linear(3, 2, seed=0, backend=array_api_strict), nn.Tanh())
    ps = list(m.parameters())
    assert flat_buffer_of(ps) is None and all(p._flat is None for p in ps)
    x = array_api_strict.ones((2, 3), dtype=array_api_strict.float32)
    m.zero_grad()
    m(x)
    m.backward(array_api_strict.ones((2, 2), dtype=array_api_strict.float32))
    assert float(array_api_strict.sum(array_api_strict.abs(ps[0].grad))) > 0


def test_float16_parameters_allowed():
    lin = nn.Linear(4, 3, dtype="float16", seed=0)
    assert lin.weight.dtype == np.float16 and flat_buffer_of(lin.parameters()).data.dtype == np.float16
    y = lin(np.ones((2, 4), np.float16))
    assert y.dtype == np.float16
    lin.backward(np.ones((2, 3), np.float16))
    assert lin.bias.grad.tolist() == [2.0, 2.0, 2.0]


def test_dtype_argument_spellings():
    assert nn.Linear(2, 2, dtype=np.float64).weight.dtype == np.float64
    assert nn.Linear(2, 2, dtype=array_api_strict.float64, backend=array_api_strict).weight.dtype == array_api_strict.float64
    with pytest.raises(DTypeError):
        nn.Linear(2, 2, dtype="int32")


def test_to_keeps_gradients_and_lone_parameter_rebinds():
    m = mlp()
    m(np.ones((2, 6), np.float32))
    m.backward(np.ones((2, 3), np.float32))
    grads = [np.array(p.grad) for p in m.parameters()]
    m.to(array_api_strict)
    for g, p in zip(grads, m.parameters()):
        np.testing.assert_array_equal(xpnn.backend.to_numpy(p.grad), g)
    p = Parameter(np.zeros(3, np.float32))
    p.grad  # allocate
    p.data = np.ones(4, np.float32)  # a lone Parameter rebinds; a grad of the old shape is dropped
    assert p.shape == (4,) and not p.has_grad
    m.zero_grad(set_to_none=True)
    assert all(float(array_api_strict.sum(p.grad)) == 0.0 for p in m.parameters())


def test_mixed_dtype_user_module_is_left_unpacked():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2, dtype="float32")
            self.b = nn.Linear(2, 2, dtype="float64")

    m = Mixed()
    ps = list(m.parameters())
    assert len(ps) == 4 and flat_buffer_of(ps) is None
    assert flat_buffer_of(m.a.parameters()) is not None  # each layer keeps its own buffer
    m.zero_grad()
