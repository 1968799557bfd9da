"""The training loop: ``fit`` (mini-batches, progress bar, validation, callbacks) -> ``History``; ``evaluate``;
``predict``; the ``EarlyStopping`` callback.

``fit`` works on any backend: it finds the model's backend from its parameters and moves the data there once,
before the first epoch. Each epoch shuffles the data with one gather on that device and then walks through slices
of it; losses and hit counts are summed on the device and read back only when the progress bar refreshes and at the
end of the epoch, so a GPU run is not synchronised every step.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .autograd.grad_mode import no_grad
from ._tensor import Tensor, tensor
from .backend import Backend, backend_of, get_backend, to_numpy
from .data.batching import SeedLike, as_generator, batches
from .debug import check_device_errors
from .errors import NonFiniteError
from .nn.explicit import call_backward

__all__ = ["fit", "evaluate", "predict", "History", "Callback", "EarlyStopping"]

BatchTransform = Callable[[Any, Any], tuple[Any, Any]]


class History:
    """Per-epoch metrics of a ``fit`` run: ``history["loss"]``, ``["accuracy"]``, ``["val_loss"]``,
    ``["val_accuracy"]`` (the accuracy keys only for integer class labels, the ``val_`` keys only with
    validation data) and ``["time"]`` (seconds per epoch). ``stopped_epoch`` is set when a callback stopped early.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.stopped_epoch: Optional[int] = None

    def append(self, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    @property
    def epochs(self) -> int:
        """Number of completed epochs."""
        return len(self.history.get("loss", []))

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.history.items() if v and k != "time")
        return f"History(epochs={self.epochs}{', ' + last if last else ''})"

    def plot(self, path: Any, *, title: Optional[str] = None) -> None:
        """Write the loss (and accuracy) curves, training and validation, to an image file (PNG by extension).

        Needs matplotlib (``pip install "xpnn[plot]"``). Uses matplotlib's object API (no pyplot global state).
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            from matplotlib.ticker import MaxNLocator
        except ImportError:
            raise ImportError(
                'History.plot needs matplotlib: pip install "xpnn[plot]" (or pip install matplotlib)'
            ) from None
        if not self.epochs:
            raise ValueError("History.plot: no completed epochs to plot")
        panels = [("loss", "loss")] + ([("accuracy", "accuracy")] if "accuracy" in self.history else [])
        fig = Figure(figsize=(5.0 * len(panels), 3.6), layout="constrained")
        FigureCanvasAgg(fig)
        x = list(range(1, self.epochs + 1))
        for i, (key, label) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            ax.plot(x, self.history[key], label="train")
            if f"val_{key}" in self.history:
                ax.plot(x, self.history[f"val_{key}"], label="validation")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        fig.savefig(path, dpi=100)


class Callback:
    """Hooks called by ``fit``; override the ones you need. ``on_epoch_end`` returning True stops training."""

    def on_train_begin(self, model: Any, history: History) -> None:
        pass

    def on_batch_end(self, step: int, model: Any) -> None:
        """``step`` counts optimizer steps from 1 over the whole run."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float], model: Any) -> Optional[bool]:
        """``epoch`` counts from 1; ``logs`` holds this epoch's metrics (the keys of ``History``)."""
        return None

    def on_train_end(self, model: Any, history: History) -> None:
        pass


class EarlyStopping(Callback):
    """Stop once ``patience`` epochs in a row have not improved ``monitor`` on its best by more than ``min_delta``
    (Keras's rule: with ``patience=3`` and no improvement after epoch 1, training stops after epoch 4;
    ``patience=0`` stops at the first epoch without improvement).

    ``mode``: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracies, min otherwise). With
    ``restore_best_weights`` the model gets the parameters of its best epoch back at the end.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = True,
    ) -> None:
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = abs(min_delta)
        self.maximize = mode == "max" or (mode == "auto" and "acc" in monitor)
        self.restore_best_weights = restore_best_weights
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.stopped_epoch: Optional[int] = None
        self._best_state: Any = None
        self._wait = 0

    def on_train_begin(self, model: Any, history: History) -> None:
        self.best, self.best_epoch, self.stopped_epoch, self._best_state, self._wait = None, None, None, None, 0

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)
        if self.maximize:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict[str, float], model: Any) -> Optional[bool]:
        if self.monitor not in logs:
            raise KeyError(
                f"EarlyStopping: metric {self.monitor!r} not in this run's metrics {sorted(logs)}; "
                "pass validation_data to fit to monitor val_ metrics"
            )
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self._wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_state = model.state_dict()
            return None
        self._wait += 1
        if self._wait >= self.patience:  # the patience-th epoch in a row without improvement: stop now
            self.stopped_epoch = epoch
            return True
        return None

    def on_train_end(self, model: Any, history: History) -> None:
        if self.restore_best_weights and self._best_state is not None and self.best_epoch != history.epochs:
            model.load_state_dict(self._best_state)


# --- helpers ---------------------------------------------------------------------------------------------------

def _model_backend(model: Any) -> tuple[Backend, Any]:
    """The backend and floating dtype of the model's parameters (the default backend, float32 if it has none)."""
    for p in model.parameters():
        return backend_of(p.data), p.data.dtype
    be = get_backend()
    return be, be.xp.float32


def _to_backend(be: Backend, dtype: Any, X: Any, y: Any, where: str) -> tuple[Any, Any]:
    """Move X and y to ``be``, casting floating ones (inputs, regression or one-hot targets) to the model's dtype;
    integer class labels keep theirs."""
    X = be.asarray(X)
    xp = be.xp
    if xp.isdtype(X.dtype, "real floating") and X.dtype != dtype:
        X = xp.astype(X, dtype)
    y = be.asarray(y)
    if xp.isdtype(y.dtype, "real floating") and y.dtype != dtype:
        y = xp.astype(y, dtype)
    if X.ndim < 1 or y.ndim < 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"{where}: X {tuple(X.shape)} and y {tuple(y.shape)} must have the same number of rows")
    if X.shape[0] == 0:
        raise ValueError(f"{where}: no samples")
    return X, y


def _check_optimizer(model: Any, optimizer: Any) -> None:
    """An optimizer holding none of the model's parameters would train nothing, silently: refuse it."""
    groups = getattr(optimizer, "param_groups", None)
    if not groups:
        return
    mine = {id(p) for p in model.parameters()}
    if mine and not any(id(p) in mine for g in groups for p in g["params"]):
        raise ValueError(f"fit: the {type(optimizer).__name__} optimizer holds none of the model's parameters (was it "
                         f"built for another model?); build it with {type(optimizer).__name__}(model.parameters(), ...)")


def _sample_count(loss_fn: Any, y: Any) -> Any:
    """How many samples the loss of a batch with targets ``y`` averages over (``sample_count`` of xpnn's losses:
    the rows, or for ``CrossEntropyLoss`` the targets not ignored, counted on the device); the rows for any other
    callable."""
    count = getattr(loss_fn, "sample_count", None)
    return count(y) if callable(count) else int(y.shape[0])


class _Meter:
    """Per-batch losses and sample counts written into two device buffers, hits summed on the device; read back
    (one sync) only by ``result``. The epoch's loss is the mean over its samples whatever the batch size: each
    batch's mean loss weighted by the number of samples it covers (``_sample_count``; a summed loss as it is); a batch
    with no sample (every target ignored: its mean is NaN, as PyTorch's) adds nothing. Accuracy counts the same
    samples (an ignored target never hits). Keeping each batch's loss (one write per step, no per-step reduction)
    lets ``first_nonfinite`` name the batch that made the mean NaN."""

    def __init__(self, xp: Any, classify: bool, loss_fn: Any, batches: int) -> None:
        self.xp = xp
        self.classify = classify
        self.mean = getattr(loss_fn, "reduction", "mean") == "mean"
        self.losses = xp.zeros((batches,), dtype=xp.float64)
        self.counts = xp.zeros((batches,), dtype=xp.int64)
        self.hits = xp.zeros((), dtype=xp.int64)
        self.batches = 0

    def add(self, loss: Any, count: Any, logits: Any, y: Any) -> None:
        self.losses[self.batches] = loss
        self.counts[self.batches] = count
        self.batches += 1
        if self.classify:
            xp = self.xp
            self.hits += xp.sum(xp.astype(xp.argmax(logits, axis=-1) == y, xp.int64))

    def _kept(self) -> tuple[Any, Any]:
        """(this epoch's batch losses, whether each covers a sample)."""
        return self.losses[:self.batches], self.counts[:self.batches] > 0

    def result(self, prefix: str = "", group: Any = None) -> dict[str, float]:
        """The mean loss (and accuracy); with a process ``group``, over the rows of all ranks (a collective)."""
        check_device_errors()  # label checks deferred on the device (see xpnn.debug): a read happens here anyway
        xp = self.xp
        losses, used = self._kept()
        counts = self.counts[:self.batches]
        terms = losses * xp.astype(counts, losses.dtype) if self.mean else losses
        loss = float(xp.sum(xp.where(used, terms, xp.zeros((), dtype=terms.dtype))))
        hits, n = (int(v) for v in to_numpy(xp.stack([self.hits, xp.sum(counts)])))
        if group is not None:
            loss, hits, n = (float(v) for v in group.all_reduce(np.array([loss, hits, n], dtype=np.float64)))
        out = {f"{prefix}loss": loss / max(n, 1)}
        if self.classify:
            out[f"{prefix}accuracy"] = hits / max(n, 1)
        return out

    def first_nonfinite(self) -> Optional[int]:
        """The 1-based index of this meter's first batch (of samples) whose loss is NaN or inf, ``None`` if there is
        none (one read; call it once a result was not finite)."""
        losses, used = self._kept()
        bad = to_numpy(self.xp.logical_and(self.xp.logical_not(self.xp.isfinite(losses)), used))
        return int(np.argmax(bad)) + 1 if bad.any() else None


def _check_finite_loss(loss: float, meter: _Meter, epoch: int, first_step: int, steps_per_epoch: int,
                       history: History, bar: Any) -> None:
    """Raise ``NonFiniteError`` naming the epoch and first batch when the mean training loss ``fit`` just read is
    NaN or inf (Keras' ``TerminateOnNaN`` stops there too; this raises, so a script cannot go on with NaN weights).
    Costs no read unless the loss is bad; the error carries ``epoch``, ``batch``, ``step`` and the ``history`` of
    the epochs completed before."""
    if math.isfinite(loss):
        return
    if bar is not None:
        bar.close()
    batch = meter.first_nonfinite()  # None: data-parallel, another rank's batch
    where = f"epoch {epoch}" if batch is None else \
        f"epoch {epoch}, batch {batch} of {steps_per_epoch} (step {first_step + batch})"
    err = NonFiniteError(
        f"fit: the training loss became {loss} at {where}; training stopped (the parameters are likely NaN/inf from "
        f"that step on). Check the data for NaN/inf (numpy.isfinite(X).all()), lower the learning rate, or run "
        f"with xpnn.set_debug(True) to raise at the first op that makes one")
    err.epoch, err.batch, err.history = epoch, batch, history  # type: ignore[attr-defined]
    err.step = None if batch is None else first_step + batch  # type: ignore[attr-defined]
    raise err


def _process_group(model: Any) -> Any:
    """The process group of a ``DistributedDataParallel`` model with more than one rank, else ``None``."""
    group = getattr(model, "process_group", None)
    if group is None or getattr(group, "world_size", 1) == 1:
        return None
    from .distributed import DistributedDataParallel

    return group if isinstance(model, DistributedDataParallel) else None


def _check_same_run(group: Any, **settings: Any) -> None:
    """Every rank of a data-parallel ``fit`` must pass the same data size and settings (every rank raises)."""
    every = group.allgather_object(settings)
    for r, theirs in enumerate(every):
        if theirs != every[0]:
            diff = {k: (every[0][k], theirs[k]) for k in settings if theirs[k] != every[0][k]}
            from .distributed import DistributedError

            raise DistributedError(f"fit: every rank must pass the same data and settings (each rank takes its "
                                   f"shard itself); rank 0 vs rank {r}: {diff}")


def _is_classification(xp: Any, y: Any) -> bool:
    return xp.isdtype(y.dtype, "integral") and y.ndim == 1


def _progress_bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=True, dynamic_ncols=True)


def _fmt(logs: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "time")


def _tape_ready(model: Any, loss_fn: Any) -> bool:
    """Whether ``fit`` can train with ``loss.backward()`` (autograd): xpnn modules all the way down. A module or a
    loss whose ``backward`` is written by hand keeps the explicit protocol: its parameters get their gradients
    outside the tape, and ``DistributedDataParallel`` reduces those only at the end of its explicit ``backward``."""
    from .nn.explicit import Module

    if not isinstance(model, Module) or not isinstance(loss_fn, Module):
        return False
    return not loss_fn._explicit_backward and not any(getattr(m, "_explicit_backward", False) for m in model.modules())


# --- public API ------------------------------------------------------------------------------------------------

def evaluate(model: Any, loss_fn: Any, X: Any, y: Any, *, batch_size: int = 1024) -> dict[str, float]:
    """Mean loss (and accuracy, for integer class labels) of ``model`` on ``(X, y)`` in eval mode, under
    ``xpnn.no_grad()`` (nothing is recorded, and a forward kept for a pending ``backward`` stays as it was).

    Returns ``{"loss": ..., "accuracy": ...}``, means over the samples (ignored targets do not count), the same for
    every ``batch_size``; the model's train/eval mode is restored afterwards. For a
    ``DistributedDataParallel`` model every rank evaluates a share of the rows and all get the result over all rows:
    a collective, so call it on every rank (or evaluate ``model.module`` on one rank alone).
    """
    be, dtype = _model_backend(model)
    X, y = _to_backend(be, dtype, X, y, "evaluate")
    was_training = getattr(model, "training", True)
    model.eval()
    group = _process_group(model)
    if group is not None:  # each rank evaluates rows rank, rank + world_size, ...; the sums are added up
        X, y = X[group.rank::group.world_size, ...], y[group.rank::group.world_size, ...]
    try:
        meter = _Meter(be.xp, _is_classification(be.xp, y), loss_fn, -(-int(y.shape[0]) // batch_size))
        with no_grad():
            for xb, yb in batches(X, y, batch_size, shuffle=False):
                out = model(tensor(xb))
                loss = loss_fn(out, yb)
                meter.add(loss.data if isinstance(loss, Tensor) else loss, _sample_count(loss_fn, yb), out.data, yb)
        return meter.result(group=group)
    finally:
        model.train(was_training)


def predict(model: Any, X: Any, *, batch_size: int = 1024) -> Any:
    """``model(X)`` in eval mode under ``xpnn.no_grad()``, in batches, on the model's backend: the outputs (e.g.
    logits, not probabilities) for every row, as one array."""
    be, dtype = _model_backend(model)
    X = be.asarray(X)
    if be.xp.isdtype(X.dtype, "real floating") and X.dtype != dtype:
        X = be.xp.astype(X, dtype)
    was_training = getattr(model, "training", True)
    model.eval()
    try:
        with no_grad():
            outs = [model(tensor(xb)).data for xb, _ in batches(X, None, batch_size, shuffle=False)]
    finally:
        model.train(was_training)
    return outs[0] if len(outs) == 1 else be.xp.concat(outs, axis=0)


def fit(
    model: Any,
    loss_fn: Any,
    optimizer: Any,
    X: Any,
    y: Any,
    *,
    epochs: int,
    batch_size: int,
    validation_data: Optional[tuple[Any, Any]] = None,
    callbacks: Optional[Sequence[Callback]] = None,
    progress: bool = True,
    seed: SeedLike = None,
    shuffle: bool = True,
    batch_transform: Optional[BatchTransform] = None,
    cuda_graph: Any = False,
) -> History:
    """Train ``model`` with mini-batch steps of ``optimizer`` on ``loss_fn`` for ``epochs`` passes over ``(X, y)``.

    X: ``(n, ...)`` inputs, y: ``(n,)`` integer class labels (accuracy is reported) or targets of the loss; arrays
    of any backend (NumPy arrays are fine): they are moved to the model's backend, floating X cast to the model's
    dtype. One step: ``zero_grad``; ``loss = loss_fn(model(xpnn.tensor(xb)), yb)``; ``loss.backward()`` (the
    explicit ``model.backward(loss_fn.backward())`` for modules with a hand-written backward); ``optimizer.step()``.

    validation_data: ``(X_val, y_val)`` evaluated after every epoch (``val_loss``, ``val_accuracy``).
    callbacks: ``Callback`` objects (e.g. ``EarlyStopping``). progress: a tqdm bar per epoch on a terminal or in a
    notebook; one plain line per epoch on stdout when tqdm is not installed or stderr goes to a file or a pipe (a
    bar's carriage returns would fill the log); nothing with ``progress=False``. seed: shuffling order (int,
    Generator or None). batch_transform: ``(xb, yb) -> (xb, yb)`` applied to training batches only (e.g.
    ``lambda x, y: (cutout(x, 3, image_shape=(8, 8)), y)``).
    cuda_graph: capture the training step in a CUDA graph (``xpnn.cuda``) and replay it for every full batch: the
    first three full batches run eagerly (warm-up), the last partial batch of an epoch too. Needs the CUDA backend
    (or a ``xpnn.cuda.GraphRuntime`` stand-in); raises ``xpnn.errors.CaptureError`` for a step that cannot be
    captured.

    Metrics are means over samples (``_Meter``; ignored targets do not count). Raises ``xpnn.NonFiniteError`` when
    the training loss is NaN or inf, naming the epoch and the first bad batch (attributes ``epoch``, ``batch``,
    ``step``, ``history``); checked where the loss is read anyway (epoch end, progress refresh), so no extra sync.

    Data-parallel (``model`` a ``xpnn.distributed.DistributedDataParallel`` over several ranks, every rank calling
    ``fit`` with the same data): each epoch's order is sharded like ``DistributedSampler`` (see
    ``xpnn.data.batches``), ``batch_size`` is per rank, a ``seed`` of ``None`` is drawn on rank 0 and shared,
    metrics (training and validation) are averaged over all ranks' rows, so callbacks such as ``EarlyStopping``
    decide the same on every rank; the progress bar or lines appear on rank 0 only. Callbacks run on every rank.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fit: epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"fit: batch_size must be a positive int, got {batch_size!r}")
    _check_optimizer(model, optimizer)
    be, dtype = _model_backend(model)
    xp = be.xp
    X, y = _to_backend(be, dtype, X, y, "fit")
    if validation_data is not None:
        if len(validation_data) != 2:
            raise ValueError(f"fit: validation_data must be a pair (X_val, y_val), got a "
                             f"{type(validation_data).__name__} of length {len(validation_data)}")
        X_val, y_val = _to_backend(be, dtype, validation_data[0], validation_data[1], "fit (validation_data)")
    classify = _is_classification(xp, y)
    group = _process_group(model)
    if group is not None and cuda_graph is not False and cuda_graph is not None:  # before any collective
        raise ValueError("fit: cuda_graph=True with a DistributedDataParallel model over several ranks is not "
                         "supported (its gradient all-reduce is issued from the host during backward and cannot "
                         "be captured); train data-parallel without cuda_graph")
    rank, world = (group.rank, group.world_size) if group is not None else (0, 1)
    if group is not None:  # ranks that disagree here would run different numbers of steps and hang
        _check_same_run(group, n=int(X.shape[0]), epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                        validation_rows=None if validation_data is None else int(X_val.shape[0]))
    if group is not None and seed is None:  # every rank must shuffle the same way: rank 0 draws the seed
        seed = group.broadcast_object(int(as_generator(None).integers(2**63)))
    rng = as_generator(seed)
    cbs: list[Callback] = list(callbacks or [])
    history = History()
    n = int(X.shape[0])
    steps_per_epoch = -(-(-(-n // world)) // batch_size)
    progress = progress and rank == 0
    tqdm_ok = progress and _bars_can_draw()
    graphed = None
    if cuda_graph is not False and cuda_graph is not None:
        from .cuda import graph_step_runner

        graphed = graph_step_runner(model, loss_fn, optimizer, cuda_graph)
    step = 0
    tape = _tape_ready(model, loss_fn)
    model.train()
    for cb in cbs:
        cb.on_train_begin(model, history)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        meter = _Meter(xp, classify, loss_fn, steps_per_epoch)
        first_step = step
        bar = _progress_bar(tqdm_ok, steps_per_epoch, f"epoch {epoch}/{epochs}")
        last_refresh = t0
        for xb, yb in batches(X, y, batch_size, shuffle=shuffle, seed=rng, rank=rank, world_size=world):
            if batch_transform is not None:
                xb, yb = batch_transform(xb, yb)
            if graphed is not None and int(xb.shape[0]) == batch_size:
                loss, logits = graphed(xb, yb)  # replays write into the graph's static outputs: read them now
            else:
                optimizer.zero_grad()
                if tape:
                    out = model(tensor(xb))
                    loss_t = loss_fn(out, yb)
                    loss_t.backward()
                    logits, loss = out.data, loss_t.data
                else:  # a module with a hand-written backward (the first version's protocol) somewhere
                    logits = model(xb)
                    loss = loss_fn(logits, yb)
                    call_backward(model, loss_fn.backward(), need_input_grad=False)  # no gradient for the data
                optimizer.step()
            meter.add(loss, _sample_count(loss_fn, yb), logits, yb)
            step += 1
            for cb in cbs:
                cb.on_batch_end(step, model)
            if bar is not None:
                bar.update(1)
                now = time.perf_counter()
                if now - last_refresh > 0.5:  # reading the sums back syncs a GPU: do it twice a second at most
                    partial = meter.result()  # distributed: rank 0's rows
                    if group is None:  # (ranks stop together, at the end of the epoch)
                        _check_finite_loss(partial["loss"], meter, epoch, first_step, steps_per_epoch, history, bar)
                    bar.set_postfix_str(_fmt(partial), refresh=False)
                    last_refresh = now
        logs = meter.result(group=group)
        _check_finite_loss(logs["loss"], meter, epoch, first_step, steps_per_epoch, history, bar)
        if validation_data is not None:
            logs.update({f"val_{k}": v for k, v in evaluate(model, loss_fn, X_val, y_val,
                                                             batch_size=max(batch_size, 1024)).items()})
        logs["time"] = time.perf_counter() - t0
        history.append(logs)
        if bar is not None:
            bar.set_postfix_str(_fmt(logs), refresh=False)
            bar.close()
        elif progress:  # no tqdm, or output to a file or pipe: one plain line per epoch
            print(f"epoch {epoch}/{epochs}  {_fmt(logs)}  ({logs['time']:.2f} s)", flush=True)
        stop = False
        for cb in cbs:
            stop = bool(cb.on_epoch_end(epoch, logs, model)) or stop
        if stop:
            history.stopped_epoch = epoch
            break
    for cb in cbs:
        cb.on_train_end(model, history)
    return history


def _bars_can_draw() -> bool:
    """Whether tqdm is installed and can redraw a bar in place: stderr is a terminal, or ``tqdm.auto`` picked its
    notebook widget (Jupyter)."""
    try:
        import tqdm  # noqa: F401
        from tqdm.auto import tqdm as auto_tqdm
    except ImportError:
        return False
    if any(cls.__module__ == "tqdm.notebook" for cls in auto_tqdm.__mro__):
        return True
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # no stderr (pythonw), or a closed one
        return False
