"""A training step makes no device-to-host read on a non-NumPy namespace.

``array_api_strict``'s Array is patched so that ``__bool__``, ``__float__``, ``__int__``, ``__index__``, ``item`` and
``tolist`` count their calls; a step (forward, loss, backward, optimizer step) must make none. Label-range checks
are deferred to a device flag, read by ``xpnn.debug.check_device_errors`` (fit's metric reads, evaluate).
"""
import collections
import traceback

import array_api_strict
import numpy as np
import pytest

import xpnn
import xpnn.functional as F
import xpnn.nn as nn
import xpnn.optim as optim
from xpnn.debug import check_device_errors, debug_mode, pending_device_checks
from xpnn.train import fit

# The list; array_api_strict has no item/tolist (not in the standard): they are added, counting, and raise.
# __array__/__dlpack__/__complex__ (np.asarray(x), from_dlpack, complex(x)) copy to the host as well: counted too.
READS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "__array__", "__dlpack__", "__complex__")
ABSENT = ("item", "tolist")
ArrayType = type(array_api_strict.asarray(1.0))


class ReadCounter:
    """Counts host reads of array_api_strict arrays while ``active``; ``where`` says which line made them."""

    def __init__(self) -> None:
        self.active = False
        self.where: collections.Counter = collections.Counter()

    @property
    def count(self) -> int:
        return sum(self.where.values())


@pytest.fixture
def reads(monkeypatch):
    counter = ReadCounter()
    for name in READS:
        orig = getattr(ArrayType, name, None)
        if orig is None:
            assert name in ABSENT, f"array_api_strict's Array has no {name}: the patch would prove nothing"

            def orig(self, *args, _name=name, **kwargs):
                raise AttributeError(f"array_api_strict arrays have no {_name}() (not in the standard)")

        def counted(self, *args, _orig=orig, _name=name, **kwargs):
            if counter.active:
                frame = traceback.extract_stack(limit=3)[0]
                counter.where[(_name, frame.filename.rsplit("/", 1)[-1], frame.lineno)] += 1
            return _orig(self, *args, **kwargs)

        monkeypatch.setattr(ArrayType, name, counted, raising=False)
    check_device_errors()  # nothing left from other tests: no raised flag,
    check_device_errors.__globals__["_pending"].clear()  # and no flag of theirs that a check would read too
    yield counter
    check_device_errors.__globals__["_pending"].clear()  # a test that raised a flag must not leak it


def _data(n=8, d=16, classes=4, bad_label=None):
    rng = np.random.default_rng(0)
    x = rng.random((n, d), dtype=np.float32)
    y = rng.integers(0, classes, n)
    if bad_label is not None:
        y[3] = bad_label
    return x, y


def _model(be, d=16, classes=4):
    return nn.Sequential(nn.Linear(d, 32, seed=0, backend=be), nn.BatchNorm1d(32, backend=be), nn.ReLU(),
                         nn.Dropout(0.1, seed=0), nn.Linear(32, 32, seed=1, backend=be), nn.Tanh(),
                         nn.Linear(32, classes, seed=2, backend=be))


OPTIMIZERS = {
    "adam": lambda ps: optim.Adam(ps, lr=1e-3),
    "adamw-amsgrad": lambda ps: optim.AdamW(ps, lr=1e-3, amsgrad=True),
    "sgd-nesterov": lambda ps: optim.SGD(ps, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "rmsprop-centered": lambda ps: optim.RMSprop(ps, lr=1e-3, momentum=0.5, centered=True),
    "adagrad": lambda ps: optim.Adagrad(ps, lr=1e-2, lr_decay=1e-3),
}


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_explicit_api_step_makes_no_host_read(reads, opt_name):
    be = xpnn.get_backend(array_api_strict)
    x_np, y_np = _data()
    x, y = be.asarray(x_np), be.asarray(y_np)
    model, loss_fn = _model(be), nn.CrossEntropyLoss(label_smoothing=0.1)
    opt = OPTIMIZERS[opt_name](model.parameters())
    reads.active = True
    for _ in range(3):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
    reads.active = False
    assert reads.count == 0, dict(reads.where)
    assert np.isfinite(float(loss))  # the counter is off: reading the loss afterwards is the user's choice


@pytest.mark.parametrize("opt_name", ["adam", "sgd-nesterov"])
def test_tape_api_step_makes_no_host_read(reads, opt_name):
    be = xpnn.get_backend(array_api_strict)
    x_np, y_np = _data()
    x, y = be.asarray(x_np), be.asarray(y_np)
    model, loss_fn = _model(be), nn.CrossEntropyLoss(label_smoothing=0.1)
    opt = OPTIMIZERS[opt_name](model.parameters())
    reads.active = True
    for _ in range(3):
        opt.zero_grad()
        loss = loss_fn(model(xpnn.tensor(x)), y)
        loss.backward()
        opt.step()
    reads.active = False
    assert reads.count == 0, dict(reads.where)
    assert isinstance(loss, xpnn.Tensor) and np.isfinite(float(loss))


def test_tape_api_float_of_the_loss_raises_a_deferred_label_error(reads):
    be = xpnn.get_backend(array_api_strict)
    x_np, y_np = _data(bad_label=11)
    model, loss_fn = _model(be), nn.CrossEntropyLoss()
    loss = loss_fn(model(xpnn.tensor(be.asarray(x_np))), be.asarray(y_np))
    loss.backward()
    with pytest.raises(ValueError, match=r"cross_entropy: target values must be in \[0, 4\)"):
        float(loss)  # a read happens here anyway: the deferred check is read with it


@pytest.mark.parametrize("loss_name", ["mse", "bce"])
def test_regression_losses_make_no_host_read(reads, loss_name):
    be = xpnn.get_backend(array_api_strict)
    rng = np.random.default_rng(1)
    x = be.asarray(rng.random((8, 16), dtype=np.float32))
    t = be.asarray(rng.random((8, 4), dtype=np.float32))
    model = _model(be)
    loss_fn = nn.MSELoss() if loss_name == "mse" else nn.BCEWithLogitsLoss()
    opt = optim.Adam(model.parameters())
    reads.active = True
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model(x), t)
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
    reads.active = False
    assert reads.count == 0, dict(reads.where)


def test_bad_label_is_flagged_on_the_device_and_raised_at_the_next_check(reads):
    be = xpnn.get_backend(array_api_strict)
    x_np, y_np = _data(bad_label=7)
    x, y = be.asarray(x_np), be.asarray(y_np)
    model, loss_fn = _model(be), nn.CrossEntropyLoss()
    reads.active = True
    loss = loss_fn(model(x), y)
    grad = loss_fn.backward()
    reads.active = False
    assert reads.count == 0, dict(reads.where)
    assert pending_device_checks() == 1  # a read, after the step
    assert np.isnan(float(loss))  # never silently a number
    assert np.all(np.isfinite(np.asarray(grad)))  # the bad row is ignored: no kernel reads past a row
    with pytest.raises(ValueError, match=r"cross_entropy(_with_grad)?: target values must be in \[0, 4\)"):
        check_device_errors()
    assert pending_device_checks() == 0
    check_device_errors()  # cleared: does not raise twice


def test_bad_label_in_plain_cross_entropy_gives_nan_and_per_row_reduction_none():
    be = xpnn.get_backend(array_api_strict)
    x_np, y_np = _data(bad_label=-3)
    logits = be.asarray(x_np[:, :4])
    loss = xpnn.functional.cross_entropy(logits, be.asarray(y_np), reduction="none")
    assert np.all(np.isnan(np.asarray(loss)))
    with pytest.raises(ValueError, match="cross_entropy: target values"):
        check_device_errors()


def test_debug_mode_and_numpy_raise_at_the_call():
    x_np, y_np = _data(bad_label=4)
    be = xpnn.get_backend(array_api_strict)
    with debug_mode(True), pytest.raises(ValueError, match=r"got values in \[0, 4\]"):
        nn.CrossEntropyLoss()(be.asarray(x_np[:, :4]), be.asarray(y_np))
    with pytest.raises(ValueError, match=r"got values in \[0, 4\]"):
        nn.CrossEntropyLoss()(x_np[:, :4], y_np)
    assert pending_device_checks() == 0


def test_flags_of_many_steps_are_merged_into_one_array_updated_in_place(reads):
    be = xpnn.get_backend(array_api_strict)
    x_np, y_np = _data()
    _, bad_np = _data(bad_label=5)
    logits = be.asarray(x_np[:, :4])
    xpnn.functional.cross_entropy(logits, be.asarray(y_np))
    from xpnn.debug import _pending

    flags = [e[0] for e in _pending.values()]
    for labels in (bad_np, y_np, y_np):  # an error in an early step is not forgotten by later good ones
        xpnn.functional.cross_entropy(logits, be.asarray(labels))
    assert [e[0] for e in _pending.values()] == flags  # the same arrays (what a replayed CUDA graph writes to)
    assert pending_device_checks() == 1
    with pytest.raises(ValueError, match="target values"):
        check_device_errors()
    assert pending_device_checks() == 0
    xpnn.functional.cross_entropy(logits, be.asarray(y_np))
    check_device_errors()  # all labels valid: no error


def test_fit_reads_metrics_once_per_epoch_not_per_step(reads):
    be = xpnn.get_backend(array_api_strict)
    x, y = _data(n=64)
    model = _model(be)
    opt = optim.Adam(model.parameters())
    reads.active = True
    hist = fit(model, nn.CrossEntropyLoss(), opt, x, y, epochs=2, batch_size=8, progress=False, seed=0)
    reads.active = False
    assert hist.epochs == 2
    # per epoch: the deferred label flag, the loss sum and the hit count -- not one per step (8 steps an epoch)
    assert reads.count == 2 * 3, dict(reads.where)


def test_fit_raises_the_deferred_label_error_at_the_end_of_the_epoch():
    be = xpnn.get_backend(array_api_strict)
    x, y = _data(n=32, bad_label=9)
    model = _model(be)
    with pytest.raises(ValueError, match="target values must be in"):
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), x, y, epochs=1, batch_size=8,
                 progress=False)


def test_token_model_step_makes_no_host_read(reads):
    """Embedding (ids checked on the device), LayerNorm, GELU, SiLU, masked_fill with a causal mask, split and
    gather: a tape step on token ids reads nothing on the host."""
    be = xpnn.get_backend(array_api_strict)
    rng = np.random.default_rng(0)
    ids, y = be.asarray(rng.integers(0, 11, (8, 6))), be.asarray(rng.integers(0, 4, 8))
    model = nn.Sequential(nn.Embedding(11, 8, padding_idx=0, seed=0, backend=be), nn.LayerNorm(8, backend=be),
                          nn.GELU(), nn.SiLU())
    head = nn.Linear(24, 4, seed=1, backend=be)
    causal = F.tril_mask(6, backend=be)
    pick = be.asarray(np.zeros((8, 6, 1), np.int64))
    opt = optim.Adam([*model.parameters(), *head.parameters()], lr=1e-3)
    reads.active = True
    for _ in range(2):
        opt.zero_grad()
        h = model(xpnn.tensor(ids))                                   # (8, 6, 8)
        q, k = h.split(4, dim=-1)
        s = F.softmax((q @ k.transpose(1, 2)).masked_fill(~xpnn.tensor(causal), float("-inf")), axis=-1)
        h = F.cat([s @ k, h.gather(2, xpnn.tensor(pick))], dim=-1)    # (8, 6, 5)
        loss = F.cross_entropy(head(h[:, :, :4].reshape((8, 24))), y)
        loss.backward()
        opt.step()
    reads.active = False
    assert reads.count == 0, dict(reads.where)
    assert np.isfinite(float(loss))
