"""In-place writes and backward: version counters on Tensors (PyTorch's rule).

Every in-place write xpnn makes (``t[key] = v``, ``t += v`` under ``no_grad``, an optimizer step, ``load_state_dict``,
``xpnn.init``) bumps a version counter shared by the Tensors holding the same values (``detach()``, views made by
xpnn's ops); an op notes the versions of the inputs/outputs it saved for backward, and backward raises
``InplaceModifiedError`` (a ``RuntimeError``) when one moved. PyTorch is the reference: it raises in the same cases
("one of the variables needed for gradient computation has been modified by an inplace operation")."""
from __future__ import annotations

import array_api_strict
import numpy as np
import pytest

import xpnn
from xpnn import functional as F
from xpnn import nn, optim
from xpnn.amp import GradScaler
from xpnn.errors import InplaceModifiedError

NAMESPACES = {"numpy": np, "array_api_strict": array_api_strict}
MODIFIED = r"modified by an inplace operation"


def _t(xp, values, requires_grad=False):
    return xpnn.tensor(xp.asarray(values, dtype=xp.float64), requires_grad=requires_grad)


def _torch_raises(fn):
    """Whether ``fn(torch)`` raises PyTorch's in-place error at backward (the reference for each case here)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for in-place checks")
    try:
        fn(torch)
    except RuntimeError as exc:
        assert "modified by an inplace operation" in str(exc)
        return True
    return False


# --- the three ways a saved value used to change the gradient silently --------------------------------------------
def _repro_item_assignment(lib, make):
    w, x = make([1.0, 2.0], True), make([2.0, 3.0], False)
    y = (w * x).sum()
    x[0] = 100.0
    y.backward()
    return w


def _repro_detach_write(lib, make):
    w = make([1.0, 2.0], True)
    y = (w ** 2).sum()
    w.detach()[0] = 10.0
    y.backward()
    return w


def _repro_no_grad_iadd(lib, make):
    w = make([1.0, 2.0], True)
    y = (w ** 2).sum()
    with (lib.no_grad()):
        w += 1.0
    y.backward()
    return w


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("repro, op, which", [(_repro_item_assignment, "mul", "input 1"),
                                              (_repro_detach_write, "pow", "input 0"),
                                              (_repro_no_grad_iadd, "pow", "input 0")],
                         ids=["item-assignment", "detach-write", "no-grad-iadd"])
def test_write_to_a_saved_value_raises_at_backward(repro, op, which, ns):
    """``w.grad`` was [100, 3], [20, 4] and [4, 6]: the backward read the new values."""
    xp = NAMESPACES[ns]
    assert _torch_raises(lambda torch: repro(torch, lambda v, rg: torch.tensor(v, requires_grad=rg)))
    with pytest.raises(InplaceModifiedError,
                       match=rf"^{op}: .*{MODIFIED}: {which} of {op} \(float64, shape \(2,\)\), saved for backward "
                             r"at version 0, is now at version 1"):
        repro(xpnn, lambda v, rg: _t(xp, v, rg))
    assert issubclass(InplaceModifiedError, RuntimeError)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_writes_nothing_saved_stay_free(ns):
    """add saves neither input; a write before the forward or after the backward changes nothing either."""
    xp = NAMESPACES[ns]
    w, x = _t(xp, [1.0, 2.0], True), _t(xp, [2.0, 3.0])
    x[1] = 7.0  # before the forward
    y = (w + x).sum()
    x[0] = 100.0
    y.backward()
    np.testing.assert_array_equal(np.asarray(w.grad), [1.0, 1.0])
    w2 = _t(xp, [1.0, 2.0], True)
    z = (w2 * x).sum()
    z.backward()
    x[0] = 5.0  # after the backward
    with xpnn.no_grad():
        w2 += 1.0
    np.testing.assert_array_equal(np.asarray(w2.grad), [100.0, 7.0])
    w3, other = _t(xp, [1.0, 2.0], True), _t(xp, [0.0, 0.0])
    u = (w3 * x).sum()  # mul saves w3 and x; a write elsewhere (even to a Tensor with a counter) is free
    other[0] = 1.0
    w3.detach()[0] = 1.0  # the same value: still a write, but...
    with pytest.raises(InplaceModifiedError):  # ...to a saved input
        u.backward(retain_graph=True)


def test_unrelated_writes_between_forward_and_backward_stay_free():
    w, x, other = _t(np, [1.0, 2.0], True), _t(np, [2.0, 3.0]), _t(np, [5.0, 6.0])
    y = (w * x * other.detach().sum()).sum()  # other is read, not saved (its sum is)
    other[0] = 0.0
    x.reshape(2).detach()
    y.backward()
    np.testing.assert_array_equal(w.grad, [22.0, 33.0])


def test_saved_output_written_through_detach_raises_like_pytorch():
    """exp saves its output: writing it (through a detached Tensor sharing it) makes the gradient wrong."""
    def run(lib, make):
        w = make([1.0, 2.0], True)
        y = w.exp()
        loss = y.sum()
        with lib.no_grad():
            y.detach()[0] = 0.0
        loss.backward()

    assert _torch_raises(lambda torch: run(torch, lambda v, rg: torch.tensor(v, requires_grad=rg)))
    with pytest.raises(InplaceModifiedError, match=rf"^exp: .*output 0 of exp"):
        run(xpnn, lambda v, rg: _t(np, v, rg))


# --- detach and views share the counter ---------------------------------------------------------------------------
@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("view", [lambda x: x[0], lambda x: x[:, 1:], lambda x: x.reshape(4), lambda x: x.T,
                                  lambda x: x.detach(), lambda x: xpnn.tensor(x), lambda x: x.reshape(4)[1:][0:2],
                                  lambda x: x.split(1)[1], lambda x: F.chunk(x, 2, 1)[0], lambda x: x.unbind(0)[0]],
                         ids=["row", "slice", "reshape", "transpose", "detach", "tensor-of-tensor", "view-of-view",
                              "split", "chunk", "unbind"])
def test_write_through_a_view_is_a_write_to_its_base(view, ns):
    xp = NAMESPACES[ns]
    w, x = _t(xp, np.ones((2, 2)), True), _t(xp, np.ones((2, 2)))
    loss = (w * x).sum()
    v = view(x)
    assert v._version == x._version == 0
    if v.ndim == 1:
        v[1] = 5.0
    else:
        v[0, 0] = 5.0
    assert x._version == v._version == 1
    with pytest.raises(InplaceModifiedError, match=r"input 1 of mul"):
        loss.backward()


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("piece", [lambda x: x.split(1)[0], lambda x: F.chunk(x, 2, 1)[1], lambda x: x.unbind(1)[0]],
                         ids=["split", "chunk", "unbind"])
def test_write_into_the_base_of_a_saved_piece_is_seen(piece, ns):
    """split/chunk/unbind pieces are views: a write into the input after an op saved a piece (recorded or not) is a
    write into the piece, as in PyTorch."""
    xp = NAMESPACES[ns]
    w, x = _t(xp, np.ones((2, 2)), True), _t(xp, np.ones((2, 2)))
    loss = (w[0] * piece(x)).sum()
    x[0, 0] = 5.0
    with pytest.raises(InplaceModifiedError, match=r"input 1 of mul"):
        loss.backward()
    x = _t(xp, np.ones((2, 2)), True)  # recorded pieces of a leaf that requires grad, the leaf written under no_grad
    loss = (piece(x) ** 3).sum()
    with xpnn.no_grad():
        x += 1.0
    with pytest.raises(InplaceModifiedError, match=MODIFIED):
        loss.backward()


def test_write_into_the_base_of_a_saved_piece_matches_pytorch():
    def write_base(torch):
        x = torch.ones(2, 2)
        loss = (torch.ones(2, requires_grad=True) * x.split(1)[0]).sum()
        x[0, 0] = 5.0
        loss.backward()

    def write_piece(torch):
        x = torch.ones(2, 2)
        w = torch.ones(2, 2, requires_grad=True)
        loss = (w * x).sum()
        x.split(1)[1][0, 0] = 5.0
        loss.backward()

    assert _torch_raises(write_base) and _torch_raises(write_piece)


def test_view_of_a_saved_value_matches_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for in-place checks")
    x = torch.ones((2, 2))
    w = torch.ones((2, 2), requires_grad=True)
    loss = (w * x).sum()
    v = x.reshape(4)
    v[1] = 5.0
    assert x._version == v._version == 1
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


@pytest.mark.parametrize("ns", NAMESPACES)
def test_a_copy_made_by_indexing_has_its_own_counter(ns):
    """An integer-array index copies (as in PyTorch): writing the copy leaves the saved value alone."""
    xp = NAMESPACES[ns]
    w, x = _t(xp, [1.0, 2.0, 3.0], True), _t(xp, [4.0, 5.0, 6.0])
    loss = (w * x).sum()
    c = x[xp.asarray([0, 2])]
    c[0] = 0.0
    assert c._version == 1 and x._version == 0
    loss.backward()
    np.testing.assert_array_equal(np.asarray(w.grad), [4.0, 5.0, 6.0])


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("how", ["int", "bool", "tuple"])
def test_write_into_an_index_tensor_after_indexing_is_seen(how, ns):
    """``x[idx]`` keeps ``idx`` for the backward's scatter: a write into ``idx`` before the backward raises (it sent
    the gradient to the new positions silently), as in PyTorch; a Tensor key with no write gives the gradient."""
    xp = NAMESPACES[ns]
    for write in (False, True):
        x = _t(xp, [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], True)
        if how == "bool":
            idx = xpnn.tensor(xp.asarray([[True, False, True], [False, False, True]]))
            y = x[idx]
        elif how == "int":
            idx = xpnn.tensor(xp.asarray([1, 1]))  # (repeated: the gradients add up)
            y = x[idx]
        else:
            idx = xpnn.tensor(xp.asarray([2, 0]))
            y = x[:, idx]
        loss = (y * y).sum()
        if not write:
            loss.backward()
            want = np.zeros((2, 3))
            if how == "bool":
                want[[0, 0, 1], [0, 2, 2]] = [2.0, 6.0, 12.0]
            elif how == "int":
                want[1] = [16.0, 20.0, 24.0]
            else:
                want[:, [2, 0]] = np.asarray([[3.0, 1.0], [6.0, 4.0]]) * 2
            np.testing.assert_array_equal(np.asarray(x.grad), want)
            continue
        if how == "bool":
            idx[0, 1] = True
        else:
            idx[0] = 0
        with pytest.raises(InplaceModifiedError, match=r"input 1 of index"):
            loss.backward()


def test_write_into_an_index_tensor_matches_pytorch():
    def run(torch):
        x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        idx = torch.tensor([2, 0])
        loss = (x[idx] ** 2).sum()
        idx[0] = 1
        loss.backward()

    assert _torch_raises(run)



@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("how", ["array", "mask", "list", "nested list", "tuple"])
def test_a_write_into_an_index_array_or_list_after_indexing_leaves_the_gradient(how, ns):
    """``x[key]`` with a NumPy array or a list in the key (not a Tensor: no version counter to check) takes the
    key's values at the forward: a later write into the caller's array or list leaves the gradient of the loss as
    computed (it went to the new positions silently). PyTorch copies a list key into an index tensor (the same
    gradient, checked here); it shares a NumPy array key's memory, and its gradient then moves."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for indexing with host keys")
    xp = NAMESPACES[ns]
    make = {"array": lambda: np.array([2, 0]), "mask": lambda: np.array([True, False, True]), "list": lambda: [2, 0],
            "nested list": lambda: [[2, 0]], "tuple": lambda: (slice(None), np.array([2, 0]))}[how]
    values = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]

    def grad(lib, x, written):
        key = make()
        loss = (x[key] ** 3).sum()
        if written:
            target = key[0] if how == "nested list" else key[1] if how == "tuple" else key
            target[:] = [1, 1] if how != "mask" else [False, True, True]
        loss.backward()
        return np.asarray(x.grad.detach().numpy() if lib is torch else x.grad)

    want = grad(xpnn, _t(xp, values, True), written=False)
    np.testing.assert_array_equal(grad(xpnn, _t(xp, values, True), written=True), want)
    if how == "list":  # (torch reads a nested list as a tuple of indices, deprecated)
        x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
        np.testing.assert_array_equal(grad(torch, x, written=True), want)

def test_version_counts_writes_like_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for _version")
    for lib, make in ((torch, lambda: torch.zeros(3)), (xpnn, lambda: xpnn.tensor(np.zeros(3)))):
        t = make()
        d = t.detach()
        t[0] = 1.0
        d[1] = 2.0
        with lib.no_grad():
            t += 1.0
        assert (t._version, d._version) == (3, 3), lib.__name__


def test_double_backward_with_retain_graph_checks_each_time():
    w, x = _t(np, [1.0, 2.0], True), _t(np, [2.0, 3.0])
    y = (w * x).sum()
    y.backward(retain_graph=True)
    x[0] = 0.0
    with pytest.raises(InplaceModifiedError):
        y.backward()
    np.testing.assert_array_equal(w.grad, [2.0, 3.0])


def test_create_graph_still_differentiates_through_saved_values():
    x = _t(np, [1.0, 2.0], True)
    (g,) = xpnn.grad((x ** 3).sum(), x, create_graph=True)
    g.sum().backward()
    np.testing.assert_allclose(x.grad, 6 * np.array([1.0, 2.0]))


# --- parameters and optimizers ------------------------------------------------------------------------------------
def _model_and_data(lib):
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(5, 4)), rng.normal(size=(3, 5))
    x, y = rng.normal(size=(6, 4)), np.array([0, 1, 2, 0, 1, 2])
    if lib == "torch":
        import torch

        model = torch.nn.Sequential(torch.nn.Linear(4, 5, bias=False), torch.nn.ReLU(),
                                    torch.nn.Linear(5, 3, bias=False)).double()
        with torch.no_grad():
            model[0].weight.copy_(torch.tensor(w1))
            model[2].weight.copy_(torch.tensor(w2))
        return (model, torch.optim.SGD(model.parameters(), lr=0.1), torch.tensor(x), torch.tensor(y),
                torch.nn.functional.cross_entropy)
    model = nn.Sequential(nn.Linear(4, 5, bias=False, dtype="float64"), nn.ReLU(),
                          nn.Linear(5, 3, bias=False, dtype="float64"))
    model[0].weight.data = w1
    model[2].weight.data = w2
    return model, optim.SGD(model.parameters(), lr=0.1), xpnn.tensor(x), xpnn.tensor(y), F.cross_entropy


@pytest.mark.parametrize("lib", ["torch", "xpnn"])
def test_backward_after_an_optimizer_step_through_the_old_graph_raises(lib):
    """The step writes the parameters in place (PyTorch bumps their versions too): the old graph's backward would
    mix the new weights into the old activations. The usual order (backward, step, new forward) is free."""
    if lib == "torch":
        pytest.importorskip("torch", reason="PyTorch is the reference for in-place checks")
    model, opt, x, y, ce = _model_and_data(lib)
    for _ in range(2):  # the usual loop
        opt.zero_grad()
        ce(model(x), y).backward()
        opt.step()
    loss = ce(model(x), y)
    loss.backward(retain_graph=True)
    opt.step()
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()
    stale = ce(model(x), y)
    opt.step()
    with pytest.raises(RuntimeError, match=MODIFIED):
        stale.backward()


def test_optimizer_step_bumps_the_parameters_it_writes_only():
    model = nn.Sequential(nn.Linear(3, 2, seed=0), nn.Linear(2, 2, seed=1))
    model[1].weight.requires_grad_(False)
    opt = optim.Adam(model.parameters(), lr=0.1)
    model(xpnn.tensor(np.ones((1, 3), np.float32))).sum().backward()
    before = [p._version for p in model.parameters()]
    opt.step()
    after = [p._version for p in model.parameters()]
    assert [a - b for a, b in zip(after, before)] == [1, 1, 0, 1]  # the frozen weight is not written


def test_skipped_amp_step_writes_nothing():
    """GradScaler skips a step whose gradients hold inf: the parameters are not written, so a retained graph's
    backward still runs."""
    model = nn.Linear(2, 1, seed=0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    scaler = GradScaler()
    loss = (model(xpnn.tensor(np.ones((1, 2), np.float32))) * np.float32(np.inf)).sum()
    scaler.scale(loss).backward(retain_graph=True)
    versions = [p._version for p in model.parameters()]
    scaler.step(opt)
    assert [p._version for p in model.parameters()] == versions
    loss.backward()


def test_explicit_api_still_trains_and_checks_the_order():
    """The explicit API (arrays in, ``m.backward(dy)``) runs on the same tape: the usual forward, backward, step
    works; a step between a forward and its backward raises."""
    model = nn.Sequential(nn.Linear(4, 3, seed=0), nn.ReLU(), nn.Linear(3, 2, seed=1))
    opt = optim.SGD(model.parameters(), lr=0.1)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    for _ in range(3):
        opt.zero_grad()
        out = model(x)
        model.backward(np.ones_like(out))
        opt.step()
    model(x)
    opt.step()
    with pytest.raises(InplaceModifiedError, match=r"^linear: .*input 1 of linear \(float32, shape \(2, 3\)\)"):
        model.backward(np.ones((5, 2), np.float32))


@pytest.mark.parametrize("write", [lambda p: setattr(p, "data", np.zeros(p.shape, np.float32)),
                                   lambda p: xpnn.init.zeros_(p),
                                   lambda p: p.__setitem__((0, 0), 1.0)],
                         ids=["data-assignment", "init", "item-assignment"])
def test_writes_into_a_packed_parameter_are_seen(write):
    """A Parameter's values are a view of its model's flat buffer; every xpnn write into them counts."""
    model = nn.Linear(3, 2, seed=0)
    list(model.parameters())  # packs the flat buffer
    assert model.weight._flat is not None
    loss = model(xpnn.tensor(np.ones((1, 3), np.float32))).sum()
    with xpnn.no_grad():
        write(model.weight)
    with pytest.raises(InplaceModifiedError, match=r"input 1 of linear"):
        loss.backward()


def test_load_state_dict_is_a_write():
    model = nn.Linear(3, 2, seed=0)
    state = model.state_dict()
    loss = model(xpnn.tensor(np.ones((1, 3), np.float32))).sum()
    model.load_state_dict(state)
    with pytest.raises(InplaceModifiedError):
        loss.backward()


def test_raw_array_writes_are_not_seen():
    """The documented limit: a write straight into ``.data`` (NumPy's own ``[...] =``) bumps no counter."""
    w, x = _t(np, [1.0, 2.0], True), _t(np, [2.0, 3.0])
    y = (w * x).sum()
    x.data[0] = 100.0
    y.backward()
    assert x._version == 0
    np.testing.assert_array_equal(w.grad, [100.0, 3.0])
