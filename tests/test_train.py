"""xpnn.train: fit / evaluate / predict, History and its plot, EarlyStopping, progress output, flat memory."""
from __future__ import annotations

import os
import sys
import tracemalloc

import array_api_strict as xs
import numpy as np
import pytest

import xpnn.data as D
from xpnn import nn, optim
from xpnn.train import Callback, EarlyStopping, History, evaluate, fit, predict


def _digits(seed=0):
    X, y = D.load_digits()
    Xtr, Xte, ytr, yte = D.train_test_split(X, y, 0.25, seed=seed, stratify=True)
    s = D.Standardizer().fit(Xtr)
    return s.transform(Xtr), s.transform(Xte), ytr, yte


def _mlp(d_in=64, hidden=32, d_out=10, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(d_in, hidden, seed=rng, **kw), nn.ReLU(), nn.Linear(hidden, d_out, seed=rng, **kw))


def test_fit_learns_digits_and_records_history():
    Xtr, Xte, ytr, yte = _digits()
    model = _mlp()
    opt = optim.Adam(model.parameters(), lr=3e-3)
    hist = fit(model, nn.CrossEntropyLoss(), opt, Xtr, ytr, epochs=6, batch_size=32,
               validation_data=(Xte, yte), progress=False, seed=0)
    assert isinstance(hist, History) and hist.epochs == 6 and hist.stopped_epoch is None
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "time"}
    assert hist["loss"][-1] < hist["loss"][0] / 3
    assert hist["val_accuracy"][-1] > 0.93
    res = evaluate(model, nn.CrossEntropyLoss(), Xte, yte)
    assert res["accuracy"] == pytest.approx(hist["val_accuracy"][-1])
    assert res["loss"] == pytest.approx(hist["val_loss"][-1], rel=1e-5)
    logits = predict(model, Xte, batch_size=100)
    assert logits.shape == (len(yte), 10)
    assert np.mean(np.argmax(logits, axis=1) == yte) == pytest.approx(res["accuracy"])
    assert model.training  # evaluate/predict restore the mode


def test_epoch_loss_is_the_mean_over_samples():
    # with lr=0 nothing changes, so the epoch's training loss equals evaluate's loss on the same data,
    # even with an uneven last batch (10 rows, batches of 4)
    X = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    model = _mlp(3, 5, 3)
    hist = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.0), X, y,
               epochs=1, batch_size=4, progress=False, seed=0)
    ref = evaluate(model, nn.CrossEntropyLoss(), X, y)
    assert hist["loss"][0] == pytest.approx(ref["loss"], rel=1e-6)
    assert hist["accuracy"][0] == pytest.approx(ref["accuracy"])


def test_fit_is_reproducible_with_a_seed():
    Xtr, _, ytr, _ = _digits()
    states = []
    for _ in range(2):
        model = _mlp(seed=1)
        fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters()), Xtr[:200], ytr[:200],
            epochs=2, batch_size=16, progress=False, seed=7)
        states.append(model.state_dict())
    for k in states[0]:
        assert np.array_equal(states[0][k], states[1][k])


def test_fit_moves_numpy_data_to_the_models_backend():
    """The model lives in array_api_strict; fit gets NumPy float64 data and int labels."""
    Xtr, Xte, ytr, yte = _digits()
    model = _mlp().to(xs)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    hist = fit(model, nn.CrossEntropyLoss(), opt, Xtr.astype(np.float64), ytr, epochs=3, batch_size=64,
               validation_data=(Xte, yte), progress=False, seed=0)
    assert hist["val_accuracy"][-1] > 0.9
    assert type(predict(model, Xte)) is type(xs.asarray(0))


def test_fit_regression_with_mse_has_no_accuracy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    y = (X @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)
    model = nn.Sequential(nn.Linear(3, 1, seed=0))
    hist = fit(model, nn.MSELoss(), optim.Adam(model.parameters(), lr=0.05), X, y, epochs=30, batch_size=16,
               progress=False, seed=0)
    assert "accuracy" not in hist and hist["loss"][-1] < 0.05 * hist["loss"][0]


def test_fit_argument_errors():
    X, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
    model = _mlp(3, 4, 2)
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, nn.CrossEntropyLoss(), opt, X, y, epochs=0, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, nn.CrossEntropyLoss(), opt, X, y, epochs=1, batch_size=0)
    with pytest.raises(ValueError, match="same number of rows"):
        fit(model, nn.CrossEntropyLoss(), opt, X, y[:3], epochs=1, batch_size=2)
    with pytest.raises(ValueError, match="validation_data"):
        fit(model, nn.CrossEntropyLoss(), opt, X, y, epochs=1, batch_size=2, validation_data=(X,))


def test_batch_transform_and_callbacks_are_called():
    X = np.random.default_rng(0).normal(size=(20, 64)).astype(np.float32)
    y = np.arange(20) % 10
    seen = {"transform": 0, "batch": [], "epoch": [], "begin": 0, "end": 0}

    def transform(xb, yb):
        seen["transform"] += 1
        return D.cutout(xb, 3, image_shape=(8, 8)), yb

    class Recorder(Callback):
        def on_train_begin(self, model, history):
            seen["begin"] += 1

        def on_batch_end(self, step, model):
            seen["batch"].append(step)

        def on_epoch_end(self, epoch, logs, model):
            seen["epoch"].append((epoch, sorted(logs)))

        def on_train_end(self, model, history):
            seen["end"] += 1

    model = _mlp()
    fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), X, y, epochs=2, batch_size=8,
        callbacks=[Recorder()], progress=False, batch_transform=transform)
    assert seen["transform"] == 6 and seen["batch"] == [1, 2, 3, 4, 5, 6]
    assert seen["epoch"] == [(1, ["accuracy", "loss", "time"]), (2, ["accuracy", "loss", "time"])]
    assert seen["begin"] == seen["end"] == 1


class _FakeModel:
    def __init__(self):
        self.w = 0

    def state_dict(self):
        return {"w": self.w}

    def load_state_dict(self, state):
        self.w = state["w"]


def test_early_stopping_logic_and_restore():
    es = EarlyStopping(monitor="val_loss", patience=2, min_delta=0.01)
    model, hist = _FakeModel(), History()
    es.on_train_begin(model, hist)
    stops = []
    for epoch, value in enumerate([1.0, 0.8, 0.795, 0.9, 0.85, 0.7], start=1):
        model.w = epoch
        hist.append({"loss": 0.0, "val_loss": value})
        stops.append(es.on_epoch_end(epoch, {"val_loss": value}, model))
        if stops[-1]:
            break
    # 0.795 is not better than 0.8 by more than min_delta: epochs 3 and 4 are the 2 epochs without improvement
    assert stops == [None, None, None, True]
    assert es.best == 0.8 and es.best_epoch == 2 and es.stopped_epoch == 4
    es.on_train_end(model, hist)
    assert model.w == 2  # best weights restored
    acc = EarlyStopping(monitor="val_accuracy", patience=0)
    acc.on_train_begin(model, hist)
    assert acc.maximize and acc.on_epoch_end(1, {"val_accuracy": 0.5}, model) is None
    assert acc.on_epoch_end(2, {"val_accuracy": 0.4}, model) is True
    with pytest.raises(KeyError, match="validation_data"):
        EarlyStopping().on_epoch_end(1, {"loss": 1.0}, model)


def test_early_stopping_in_fit_restores_best_epoch():
    Xtr, Xte, ytr, yte = _digits()
    model = _mlp(hidden=64)
    # 60 training rows and a large learning rate: the model overfits and validation loss turns up after a few epochs
    es = EarlyStopping(monitor="val_loss", patience=1)
    hist = fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=0.03), Xtr[:60], ytr[:60],
               epochs=40, batch_size=10, validation_data=(Xte, yte), callbacks=[es], progress=False, seed=0)
    assert hist.stopped_epoch is not None and hist.epochs == hist.stopped_epoch < 40
    assert es.best == min(hist["val_loss"]) and es.best_epoch < hist.epochs
    assert evaluate(model, nn.CrossEntropyLoss(), Xte, yte)["loss"] == pytest.approx(es.best, rel=1e-5)


def test_progress_bar_and_plain_progress(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # a terminal: bars (not on a file/pipe)
    X = np.random.default_rng(0).normal(size=(16, 64)).astype(np.float32)
    y = np.arange(16) % 10
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.01)
    fit(model, nn.CrossEntropyLoss(), opt, X, y, epochs=2, batch_size=8, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "2/2" in err and "loss" in err
    monkeypatch.setitem(sys.modules, "tqdm", None)  # tqdm not installed: one printed line per epoch
    fit(model, nn.CrossEntropyLoss(), opt, X, y, epochs=2, batch_size=8, progress=True)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("epoch 1/2  loss ") and "accuracy" in out[1]
    fit(model, nn.CrossEntropyLoss(), opt, X, y, epochs=1, batch_size=8, progress=False)
    assert capsys.readouterr() == ("", "")


def test_progress_to_a_file_or_pipe_is_one_plain_line_per_epoch(capsys, monkeypatch):
    """stderr not a terminal (a log file, a pipe; here pytest's capture): no tqdm bar, whose carriage returns would
    fill the log, but one plain line per epoch on stdout; progress=False still prints nothing."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    X = np.random.default_rng(0).normal(size=(16, 64)).astype(np.float32)
    y = np.arange(16) % 10
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.01)
    fit(model, nn.CrossEntropyLoss(), opt, X, y, epochs=2, batch_size=8, progress=True)
    out, err = capsys.readouterr()
    assert err == "" and "\r" not in out
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  loss ") and lines[1].startswith("epoch 2/2  loss ")
    fit(model, nn.CrossEntropyLoss(), opt, X, y, epochs=1, batch_size=8, progress=False)
    assert capsys.readouterr() == ("", "")


def test_history_plot(tmp_path, monkeypatch):
    hist = History()
    for i in range(4):
        hist.append({"loss": 1.0 / (i + 1), "accuracy": 0.5 + 0.1 * i, "val_loss": 1.2 / (i + 1),
                     "val_accuracy": 0.4 + 0.1 * i, "time": 0.1})
    assert "epochs=4" in repr(hist)
    hist.plot(tmp_path / "curves.png", title="test")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no completed epochs"):
        History().plot(tmp_path / "empty.png")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"xpnn\[plot\]"):
        hist.plot(tmp_path / "x.png")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm (Linux) to read RSS")
def test_ten_thousand_steps_keep_memory_flat():
    """10,000 optimizer steps (about 3 s): resident memory does not grow between step 1,000 and step 10,000,
    and tracemalloc over steps 2,000..3,000 finds no per-step growth of Python or NumPy allocations."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40_000, 4)).astype(np.float32)
    y = rng.integers(0, 3, 40_000)
    model = _mlp(4, 8, 3)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    marks = {}

    class Probe(Callback):
        def on_batch_end(self, step, model):
            if step in (1_000, 10_000):
                marks[step] = _rss_bytes()
            elif step == 2_000:
                tracemalloc.start()  # counts only what is allocated from now on and still alive later
            elif step == 2_100:
                marks["traced_100"] = tracemalloc.get_traced_memory()[0]
            elif step == 3_000:
                marks["traced_1000"] = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()

    try:
        fit(model, nn.CrossEntropyLoss(), opt, X, y, epochs=1, batch_size=4, callbacks=[Probe()],
            progress=False, seed=0)
    finally:
        tracemalloc.stop()
    assert len(marks) == 4
    assert marks[10_000] - marks[1_000] < 1024 * 1024, marks  # < 1 MiB over 9,000 steps
    assert marks["traced_1000"] - marks["traced_100"] < 8 * 1024, marks  # < 9 bytes per step


def test_fit_trains_on_the_tape_and_with_hand_written_modules():
    """fit uses loss.backward() for xpnn modules and the explicit protocol when a module writes its own backward;
    both give the same parameters."""
    class Double(nn.Module):  # the first version's protocol
        def forward(self, x):
            return x * 2.0

        def backward(self, dy, need_input_grad=True):
            return dy * 2.0 if need_input_grad else None

    X = np.random.default_rng(0).normal(size=(24, 5)).astype(np.float32)
    y = np.arange(24) % 3
    params = []
    for hand_written in (False, True):
        body = [nn.Linear(5, 6, seed=0), nn.Tanh()] + ([Double()] if hand_written else [nn.Linear(6, 6, seed=9)])
        model = nn.Sequential(*body, nn.Linear(6, 3, seed=1))
        if not hand_written:  # the same function: a frozen Linear that doubles
            w = model[2].weight
            w.data = 2.0 * np.eye(6, dtype=np.float32)
            model[2].bias.data = np.zeros(6, np.float32)
            w.requires_grad = model[2].bias.requires_grad = False
        opt = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        fit(model, nn.CrossEntropyLoss(), opt, X, y, epochs=2, batch_size=8, progress=False, seed=0)
        params.append([p.data.copy() for p in (model[0].weight, model[-1].weight)])
    for a, b in zip(*params):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _ignored_rows_data(n=6):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = rng.integers(0, 3, n)
    y[[1, 4]] = -100
    return X, y


@pytest.mark.parametrize("namespace", ["numpy", "array_api_strict"])
def test_evaluate_with_ignored_targets_does_not_depend_on_the_batch_size(namespace):
    """Each batch's mean loss is weighted by the targets it averaged (not its rows), so the result is the mean over
    the non-ignored targets -- what one PyTorch cross_entropy over all rows gives -- for every batch size, and a
    batch whose targets are all ignored (NaN mean) adds nothing. Accuracy counts the non-ignored targets too."""
    torch = pytest.importorskip("torch", reason="PyTorch's mean reduction is the reference")
    from xpnn.backend import get_backend

    X, y = _ignored_rows_data()
    be = get_backend(xs if namespace == "array_api_strict" else "numpy")
    model = _mlp(4, 5, 3).to(be)
    logits = np.asarray(predict(model, X))
    want = float(torch.nn.functional.cross_entropy(torch.tensor(logits, dtype=torch.float64), torch.tensor(y)))
    want_acc = np.mean(np.argmax(logits, 1)[y != -100] == y[y != -100])
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100)
    for bs in (6, 4, 3, 2, 1):  # bs 1 and 2: batches of only ignored targets
        res = evaluate(model, loss_fn, be.asarray(X), be.asarray(y), batch_size=bs)
        assert res["loss"] == pytest.approx(want, rel=1e-6), bs
        assert res["accuracy"] == pytest.approx(want_acc), bs
    # fit's history uses the same meter: with lr=0 its epoch loss is evaluate's
    hist = fit(model, loss_fn, optim.SGD(model.parameters(), lr=0.0), X, y, epochs=1, batch_size=1,
               progress=False, shuffle=False)
    assert hist["loss"][0] == pytest.approx(want, rel=1e-6)
    assert hist["accuracy"][0] == pytest.approx(want_acc)


def test_fit_stops_at_the_first_nan_loss_naming_epoch_and_batch():
    """A NaN in the training data: fit raises NonFiniteError at the end of the epoch (where it reads the loss
    anyway), naming the first batch whose loss was NaN; the error carries the history of the epochs before."""
    from xpnn.errors import NonFiniteError

    Xtr, _, ytr, _ = _digits()
    X, y = Xtr[:100].copy(), ytr[:100]
    model = _mlp()
    hist_ok = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), X, y, epochs=1,
                  batch_size=10, progress=False, shuffle=False)
    assert hist_ok.epochs == 1
    X[37, 5] = np.nan  # row 37: the 4th batch of 10 without shuffling
    with pytest.raises(NonFiniteError, match=r"fit: the training loss became nan at epoch 1, batch 4 of 10 "
                                             r"\(step 4\)") as info:
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), X, y, epochs=3, batch_size=10,
            progress=False, shuffle=False)
    assert (info.value.epoch, info.value.batch, info.value.step) == (1, 4, 4)
    assert info.value.history.epochs == 0
    assert isinstance(info.value, FloatingPointError)


def test_fit_nan_check_names_the_batch_on_array_api_strict():
    """On a namespace where reads cost a sync the check reads nothing per step (test_no_host_reads counts them): it
    looks at the epoch's loss that fit reads anyway (the count of finite batches is kept on the device) and names
    the batch (here inf weights from epoch 2 on)."""
    from xpnn.backend import get_backend
    from xpnn.errors import NonFiniteError

    Xtr, _, ytr, _ = _digits()
    X, y = Xtr[:60], ytr[:60]
    be = get_backend(xs)
    model = _mlp().to(be)

    class PoisonInEpoch2(Callback):  # overflow the weights after epoch 1: the loss of epoch 2's first batch is inf
        def on_epoch_end(self, epoch, logs, model):
            if epoch == 1:
                p = next(iter(model.parameters()))
                p.data[...] = xs.full(p.data.shape, xs.inf, dtype=p.data.dtype)

    with pytest.raises(NonFiniteError, match=r"at epoch 2, batch 1 of 6 \(step 7\)") as info:
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), X, y, epochs=3, batch_size=10,
            progress=False, shuffle=False, callbacks=[PoisonInEpoch2()])
    assert info.value.history.epochs == 1 and np.isfinite(info.value.history["loss"][0])


def test_fit_nan_check_at_a_progress_refresh_stops_within_the_epoch(capsys, monkeypatch):
    """With a progress bar fit reads the loss at each refresh (twice a second): a NaN stops it there, in the middle
    of the epoch, naming the first bad batch."""
    pytest.importorskip("tqdm", reason="the progress bar needs tqdm")
    import xpnn.train as T
    from xpnn.errors import NonFiniteError

    clock = iter(range(10**6))
    monkeypatch.setattr(T.time, "perf_counter", lambda: float(next(clock)))  # 1 s per call: refresh every step
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # a terminal: bars (not on a file/pipe)
    Xtr, _, ytr, _ = _digits()
    X, y = Xtr[:100].copy(), ytr[:100]
    X[25, 0] = np.inf  # batch 3 of 10
    model = _mlp()
    steps = []

    class Count(Callback):
        def on_batch_end(self, step, model):
            steps.append(step)

    with pytest.raises(NonFiniteError, match=r"at epoch 1, batch 3 of 10 \(step 3\)"):
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), X, y, epochs=2, batch_size=10,
            shuffle=False, callbacks=[Count()])
    assert steps == [1, 2, 3]  # stopped at the refresh after batch 3, not at the end of the epoch
    capsys.readouterr()
