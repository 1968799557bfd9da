"""The ``xpnn`` command: ``xpnn train`` (train an MLP or a CNN on digits or MNIST), ``xpnn predict`` (class labels from
a ``xpnn train --save`` checkpoint or a ``.safetensors`` file), ``xpnn export`` (such a checkpoint as ONNX /
safetensors), ``xpnn info``, ``xpnn bench``.

Every flag is checked by argparse before any work: a bad value, an unknown flag or a flag that does not apply to the
chosen model or dataset is a usage error (exit status 2) that names the flag and shows the subcommand's usage.

``main(argv=None) -> int`` is the entry point (``pyproject.toml``: ``xpnn = "xpnn.cli:main"``; also ``python -m xpnn``).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

from .errors import CheckpointError, XpnnError
from .models import ACTIVATIONS, load_trained, model_backend, square_image_shape
from .models import mlp as build_model

__all__ = ["main", "build_model", "make_optimizer", "load_trained", "ACTIVATIONS", "OPTIMIZERS"]

# name -> (class name in xpnn.optim, default learning rate, extra keyword arguments)
OPTIMIZERS: dict[str, tuple[str, float, dict[str, Any]]] = {
    "adam": ("Adam", 3e-3, {}),
    "adamw": ("AdamW", 3e-3, {}),
    "sgd": ("SGD", 0.1, {}),
    "momentum": ("SGD", 0.05, {"momentum": 0.9}),
    "nesterov": ("SGD", 0.05, {"momentum": 0.9, "nesterov": True}),
    "rmsprop": ("RMSprop", 1e-3, {}),
    "adagrad": ("Adagrad", 0.05, {}),
}

# Defaults of `xpnn train`, chosen on digits: >= 97.5% test accuracy for each of 20 seeds (mean 98.6%) in ~0.5 s
# of training on 2 CPU cores (scikit-learn's MLPClassifier(128): 0.98 in 0.56 s).
DEFAULTS = {"hidden": "128", "activation": "relu", "optimizer": "adam", "epochs": 20, "batch_size": 32,
            "seed": 0, "label_smoothing": 0.1, "test_size": 0.25}

# `xpnn train --model cnn` (16-32 channel CNN, 15 epochs) on digits: 98.9-100% test accuracy for seeds 0-9 (mean
# 99.4%), 5-10 s on 2 shared CPU cores with OPENBLAS_NUM_THREADS=1
CNN_EPOCHS = 15


def make_optimizer(name: str, params: Any, lr: Optional[float] = None, weight_decay: float = 0.0) -> Any:
    """The optimizer called ``name`` (see ``OPTIMIZERS``) with its default learning rate unless ``lr`` is given."""
    from . import optim

    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose from {', '.join(OPTIMIZERS)}")
    cls_name, default_lr, extra = OPTIMIZERS[name]
    kwargs = dict(extra)
    if weight_decay:
        kwargs["weight_decay"] = weight_decay
    return getattr(optim, cls_name)(params, lr=default_lr if lr is None else lr, **kwargs)


def _int_at_least(low: int) -> Any:
    """argparse ``type=``: an int >= ``low`` (argparse adds the flag's name to the message)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    parse.__name__ = f"int >= {low}"
    return parse


def _float_in(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Any:
    """argparse ``type=``: a finite float in the interval from ``low`` to ``high`` (open ends as given)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}") from None
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok or value != value:
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value
    parse.__name__ = f"number in {interval}"
    return parse


def _parse_hidden(text: str) -> list[int]:
    text = text.strip()
    if text in ("", "0", "none"):
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden takes comma-separated widths such as 128,64, got {text!r}"
        ) from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--hidden widths must be positive, got {text!r}")
    return sizes


def _load_dataset(spec: str, test_size: float, seed: int) -> tuple[str, tuple[Any, Any, Any, Any]]:
    from . import data

    if spec == "digits":
        X, y = data.load_digits()
        return "digits", data.train_test_split(X, y, test_size, seed=seed, stratify=True)
    if spec.startswith("mnist:"):
        path = os.path.expanduser(spec[len("mnist:"):])  # the shell leaves "~" after "mnist:" alone
        (X_train, y_train), (X_test, y_test) = data.load_mnist(path)
        return f"mnist ({path})", (X_train, X_test, y_train, y_test)
    raise argparse.ArgumentTypeError(f"--dataset must be 'digits' or 'mnist:PATH', got {spec!r}")


def _image_shape(n_features: int) -> tuple[int, int, int]:
    try:
        return square_image_shape(n_features)
    except ValueError:
        raise ValueError(f"--model cnn needs square single-channel images, got rows of {n_features} features") from None


def _as_images(X: Any) -> Any:
    return X.reshape((X.shape[0],) + _image_shape(int(X.shape[1])))


def _cli_backend(name: Optional[str]) -> Any:
    """``get_backend(name)`` with the advice spelled as command-line flags (``--backend numpy``)."""
    from .backend import get_backend
    from .errors import BackendUnavailableError

    try:
        return get_backend(name)
    except BackendUnavailableError as exc:
        reason = str(exc).split(" Use backend=")[0].rstrip()
        flag = f"--backend {name}" if name else f"$XPNN_BACKEND={os.environ.get('XPNN_BACKEND', '')}"
        raise BackendUnavailableError(f"{flag}: {reason} Use --backend numpy (or --backend auto to use the GPU "
                                      "only when one exists).") from None


def _available_memory() -> Optional[int]:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; ``None`` when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# arrays an optimizer keeps per parameter, besides the parameter and its gradient (upper bound per family)
_STATE_ARRAYS = {"adam": 2, "adamw": 2, "sgd": 0, "momentum": 1, "nesterov": 1, "rmsprop": 1, "adagrad": 1}


def _free_device_memory(backend: Any) -> Optional[int]:
    """Free bytes on the CUDA device of ``backend`` (``None`` for host backends or when unknown)."""
    if backend.name != "cuda":
        return None
    try:
        import cupy

        return int(cupy.cuda.runtime.memGetInfo()[0])
    except Exception:  # noqa: BLE001 - a size check must never be what fails
        return None


def _check_model_size(sizes: Sequence[int], dtype: str, optimizer: str, backend: Any) -> None:
    """Fail before building a model that cannot fit in memory (``--hidden 100000,100000``): parameters, gradients
    and optimizer state on the backend's device, and the float64 draw of the largest weight matrix on the host."""
    n = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    on_device = n * np.dtype(dtype).itemsize * (2 + _STATE_ARRAYS.get(optimizer, 2))
    init_draw = max(a * b for a, b in zip(sizes[:-1], sizes[1:])) * 8
    host, device = _available_memory(), _free_device_memory(backend)
    needs = [(on_device + init_draw, host, "memory")] if backend.name != "cuda" else [
        (on_device, device, "GPU memory"), (init_draw, host, "host memory")]
    for need, avail, what in needs:
        if avail is not None and need > avail:
            raise ValueError(
                f"--hidden {','.join(map(str, sizes[1:-1])) or 0}: the {'-'.join(map(str, sizes))} model has {n:,} "
                f"parameters, about {need / 2**30:.1f} GiB with gradients and {optimizer} state in {dtype}; only "
                f"{avail / 2**30:.1f} GiB of {what} is available: use smaller widths"
            )


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail before training when ``--save``/``--plot`` cannot be written (missing folder, no matplotlib, bad format)."""
    from pathlib import Path

    args.save = os.path.expanduser(args.save) if args.save else None
    args.plot = os.path.expanduser(args.plot) if args.plot else None
    for flag, path in (("--save", args.save), ("--plot", args.plot)):
        if path and not Path(path).resolve().parent.is_dir():
            raise FileNotFoundError(f"{flag} {path}: folder {Path(path).resolve().parent} does not exist")
    if args.plot:
        try:
            from matplotlib.backend_bases import FigureCanvasBase
        except ImportError:
            raise ImportError('--plot needs matplotlib: pip install "xpnn[plot]"') from None
        suffix = Path(args.plot).suffix.lstrip(".").lower()
        formats = FigureCanvasBase.get_supported_filetypes()
        if suffix and suffix not in formats:
            raise ValueError(f"--plot {args.plot}: unsupported image format {suffix!r} (use .png, or one of "
                             f"{', '.join(sorted(formats))})")


# `xpnn train --model gpt`: the sorting task (xpnn.data.sorting_task: 6-12 digits -> the digits sorted); a GPT of
# GPT_SIZE (xpnn.models.GPT) trained on GPT_ROWS generated rows, held-out rows scored by greedy generation
GPT_SIZE = {"n_layer": 2, "n_head": 4, "d_model": 64}
GPT_ROWS = {"train": 20000, "test": 1000}
GPT_DEFAULTS = {"epochs": 4, "lr": 3e-3, "batch_size": 64}


def _train_gpt(args: argparse.Namespace, say: Any) -> int:
    """``xpnn train --model gpt``: next-token training on the sorting task, then the held-out rows sorted exactly."""
    from . import data, io
    from .models import GPT, NextTokenLoss, sorted_exactly
    from .optim.lr_scheduler import CosineAnnealingLR
    from .train import Callback, _fmt, fit

    class EpochLines(Callback):
        def on_epoch_end(self, epoch: int, logs: dict, model: Any) -> None:
            say(f"epoch {epoch}/{args.epochs}  {_fmt(logs)}", flush=True)

    if args.epochs is None:
        args.epochs = GPT_DEFAULTS["epochs"]
    _check_outputs(args)
    backend = _cli_backend(args.backend)
    X, Y = data.sorting_task(GPT_ROWS["train"] + GPT_ROWS["test"], seed=args.seed)
    n_test = GPT_ROWS["test"]
    X_train, Y_train, X_test, Y_test = X[n_test:], Y[n_test:], X[:n_test], Y[:n_test]
    block = int(X.shape[1])
    model = GPT(data.sorting.SORT_VOCAB, block, backend=backend, dtype=args.dtype, seed=args.seed, **GPT_SIZE)
    optimizer = make_optimizer(args.optimizer, model.parameters(), args.lr if args.lr is not None else
                               GPT_DEFAULTS["lr"], args.weight_decay)
    lr = optimizer.param_groups[0]["lr"]
    loss_fn = NextTokenLoss(label_smoothing=args.label_smoothing)
    say(f"xpnn train: sorting task (6-12 digits -> sorted): {X_train.shape[0]} train / {n_test} held-out rows; "
        f"backend {backend.name}", flush=True)
    say(f"model gpt {GPT_SIZE['n_layer']} layers, {GPT_SIZE['n_head']} heads, d_model {GPT_SIZE['d_model']}, "
        f"{sum(int(p.size) for p in model.parameters())} parameters; {args.optimizer} lr {lr:g} (cosine), {args.epochs} "
        f"epochs, batch {args.batch_size}, seed {args.seed} (loss: next-token cross-entropy on the answers)",
        flush=True)
    schedule = CosineAnnealingLR(optimizer, args.epochs * -(-int(X_train.shape[0]) // args.batch_size))

    class Cosine(Callback):  # the learning rate decays to 0 over the run, step by step
        def on_batch_end(self, step: int, model: Any) -> None:
            schedule.step()

    t0 = time.perf_counter()
    history = fit(model, loss_fn, optimizer, X_train, Y_train, epochs=args.epochs, batch_size=args.batch_size,
                  validation_data=(X_test, Y_test), progress=not args.no_progress, seed=args.seed,
                  callbacks=[Cosine()] + ([EpochLines()] if args.no_progress else []))
    seconds = time.perf_counter() - t0
    exact = sorted_exactly(model, X_test)
    say(f"held-out sequences sorted exactly: {exact:.4f} ({n_test} rows, greedy generation; {history.epochs} epochs "
        f"in {seconds:.2f} s on {backend.name})", flush=True)
    if args.save:
        config = {"model": "gpt", "task": "sort", "vocab_size": data.sorting.SORT_VOCAB, "block_size": block,
                  **GPT_SIZE, "optimizer": args.optimizer, "lr": lr, "epochs": history.epochs,
                  "batch_size": args.batch_size, "seed": args.seed, "dtype": args.dtype, "sorted_exactly": exact}
        io.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": config}, args.save)
        print(f"saved checkpoint to {args.save}  (xpnn predict --checkpoint {args.save} --input FILE.txt: one digit "
              "sequence per line)")
    if args.plot:
        history.plot(args.plot, title="xpnn train: gpt on the sorting task")
        print(f"saved training curves to {args.plot}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from . import data, io, nn
    from .models import cnn_for
    from .train import Callback, _fmt, evaluate, fit

    if args.model == "gpt":
        if args.distributed:
            raise ValueError("--distributed is not supported with --model gpt")
        return _train_gpt(args, print)

    group = _init_distributed() if args.distributed else None
    rank0 = group is None or group.rank == 0
    say = print if rank0 else (lambda *a, **k: None)  # distributed: rank 0 prints, saves and plots

    class EpochLines(Callback):  # --no-progress: one plain line per epoch (log-friendly)
        def on_epoch_end(self, epoch: int, logs: dict, model: Any) -> None:
            say(f"epoch {epoch}/{args.epochs}  {_fmt(logs)}", flush=True)

    if args.epochs is None:
        args.epochs = CNN_EPOCHS if args.model == "cnn" else DEFAULTS["epochs"]
    _check_outputs(args)  # a bad --save/--plot path fails now, not after the training it would have kept
    backend = _cli_backend(args.backend)  # None: XPNN_BACKEND or numpy
    name, (X_train, X_test, y_train, y_test) = _load_dataset(args.dataset, args.test_size, args.seed)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    sizes = [int(X_train.shape[1])] + args.hidden + [n_classes]
    if args.model != "cnn":
        _check_model_size(sizes, args.dtype, args.optimizer, backend)
    input_range = [float(np.min(X_train)), float(np.max(X_train))]  # saved: xpnn predict warns about other units
    scaler = data.Standardizer().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    if args.model == "cnn":  # square single-channel images: rows of side*side pixels -> (N, 1, side, side)
        X_train, X_test, image_shape = _as_images(X_train), _as_images(X_test), _image_shape(int(X_train.shape[1]))
        model = cnn_for(image_shape, n_classes, backend=backend, dtype=args.dtype, seed=args.seed)
    else:
        model = build_model(sizes, args.activation, backend=backend, dtype=args.dtype, seed=args.seed,
                            dropout=args.dropout)
    if group is not None:
        from .distributed import DistributedDataParallel

        model = DistributedDataParallel(model, process_group=group)  # rank 0's initial weights on every rank
    optimizer = make_optimizer(args.optimizer, model.parameters(), args.lr, args.weight_decay)
    lr = optimizer.param_groups[0]["lr"]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    say(f"xpnn train: {name}: {X_train.shape[0]} train / {X_test.shape[0]} test rows, {sizes[0]} features, "
          f"{n_classes} classes; backend {backend.name}", flush=True)
    arch = f"{'-'.join(map(str, sizes))} {args.activation}"
    if args.model == "cnn":
        kind = "lenet5" if image_shape[1:] == (28, 28) else "conv3x3(16)-conv3x3(32)-maxpool2-64"
        arch = f"cnn {kind} on {'x'.join(map(str, image_shape))} images, {n_classes} classes"
    per_rank = f" per rank x {group.world_size} ranks ({group.backend})" if group is not None else ""
    say(f"model {arch}, {args.optimizer} lr {lr:g}, {args.epochs} epoch{'s' if args.epochs != 1 else ''}, "
        f"batch {args.batch_size}{per_rank}, seed {args.seed} (validation = the test split)", flush=True)
    if args.label_smoothing:
        say(f"loss and val_loss: cross-entropy with label smoothing {args.label_smoothing:g} (the training "
            "objective); test loss: plain cross-entropy", flush=True)
    t0 = time.perf_counter()
    history = fit(model, loss_fn, optimizer, X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                  validation_data=(X_test, y_test), progress=not args.no_progress, seed=args.seed,
                  callbacks=[EpochLines()] if args.no_progress else None)
    seconds = time.perf_counter() - t0
    result = evaluate(model, nn.CrossEntropyLoss(), X_test, y_test)
    # val_loss above includes the label smoothing of training; the test loss is the plain cross-entropy
    plain = " (plain cross-entropy, without label smoothing)" if args.label_smoothing else ""
    say(f"test accuracy: {result['accuracy']:.4f}  (test loss{plain} {result['loss']:.4f}; "
          f"{history.epochs} epoch{'s' if history.epochs != 1 else ''} in {seconds:.2f} s on {backend.name})", flush=True)
    if not rank0:
        return _leave_distributed()
    if args.save:  # atomic (xpnn.save writes a temporary file and renames it), once: by rank 0
        config = {"dataset": args.dataset, "model": args.model, "sizes": sizes, "activation": args.activation, "dropout": args.dropout,
                  "optimizer": args.optimizer, "lr": lr, "epochs": history.epochs, "batch_size": args.batch_size,
                  "seed": args.seed, "dtype": args.dtype, "test_accuracy": result["accuracy"],
                  "input_range": input_range}
        if group is not None:
            config["world_size"] = group.world_size
        io.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "standardizer": scaler.state_dict(),
                 "config": config}, args.save)
        print(f"saved checkpoint to {args.save}  (xpnn predict --checkpoint {args.save} --input FILE.npy; "
              "xpnn.load(path) -> dict with model, optimizer, standardizer, config)")
    if args.plot:
        history.plot(args.plot, title=f"xpnn train: {name}")
        print(f"saved training curves to {args.plot}")
    return _leave_distributed() if group is not None else 0


def _leave_distributed() -> int:
    from .distributed import destroy_process_group

    destroy_process_group()
    return 0


def _init_distributed() -> Any:
    """``--distributed``: join the mpiexec job (a note on stderr, and training anyway, when there is only one rank)."""
    from .distributed import init_process_group

    group = init_process_group("auto")
    if group.world_size == 1:
        print("xpnn train --distributed: world size 1 (not started with mpiexec -n N?); training on this process "
              "alone", file=sys.stderr, flush=True)
    return group


def _abort_other_ranks(code: int) -> None:
    """After an error on this rank of a distributed run: stop every rank (they may be waiting for this one)."""
    from .distributed import get_process_group, get_world_size, is_initialized

    if is_initialized() and get_world_size() > 1:
        get_process_group().abort(code)  # (flushes this rank's output and lets mpiexec forward it first)


def _mpi_lines() -> list[str]:
    """``xpnn info``: mpi4py, the MPI library and mpiexec; NCCL through CuPy (never raises)."""
    import shutil

    from .distributed import nccl_available

    lines = []
    try:
        import mpi4py
        from mpi4py import MPI

        lib = " ".join(MPI.Get_library_version().strip().splitlines()[0].split())
        where = shutil.which("mpiexec") or "not on PATH"
        lines.append(f"distributed: mpi4py {mpi4py.__version__}, {lib}; mpiexec: {where}")
    except Exception as exc:  # noqa: BLE001 - info must never crash
        lines.append(f"distributed: MPI unavailable ({type(exc).__name__}: {exc}); pip install \"xpnn[mpi]\"")
    if nccl_available():
        from .distributed.process_group import _nccl_module

        lines.append(f"             NCCL {_nccl_module().get_version()} (cupy.cuda.nccl)")
    else:
        lines.append("             NCCL: unavailable (needs CuPy and the nvidia-nccl-cu12/-cu13 wheel)")
    return lines


def _info(args: argparse.Namespace) -> int:
    import array_api_compat

    from . import __version__, _dispatch
    from .backend import cuda_available, get_backend
    from .errors import BackendUnavailableError

    lines = [
        f"xpnn {__version__}",
        f"python {platform.python_version()} ({platform.platform()})",
        f"numpy {np.__version__}, array-api-compat {array_api_compat.__version__}",
    ]
    try:
        lines.append(f"default backend: {get_backend().name}")
    except (BackendUnavailableError, ValueError) as exc:
        lines.append(f"default backend: unavailable ({exc})")
    lines.append("backends: numpy: available")
    gpu = cuda_available()
    if gpu:
        lines.append("          cuda: available")
    else:
        try:
            get_backend("cuda")
            lines.append("          cuda: available")
            gpu = True
        except BackendUnavailableError as exc:
            reason = str(exc).split(" Use backend=")[0].rstrip()
            lines.append(f"          cuda: unavailable: {reason}")
    if not _dispatch.kernels_enabled():
        lines.append("fused kernels enabled: no (XPNN_DISABLE_KERNELS)")
    elif gpu:
        lines.append("fused kernels enabled: yes (used for CuPy arrays on the CUDA device)")
    else:
        lines.append("fused kernels enabled: yes, but not used here: no CUDA device or driver found "
                     "(they are used when one is; NumPy arrays take the array-API code and the cpu kernels below)")
    from .functional import cpu_kernels

    lines.append(f"cpu kernels (compiled NumPy-array loops): {cpu_kernels.status()}")
    from .functional import blas

    lines.append(f"cpu BLAS gemm (Linear's weight gradient added into .grad): {blas.status()}")
    lines.extend(_mpi_lines())
    try:
        from ._cuda.info import cuda_info

        info = cuda_info()
    except Exception as exc:  # noqa: BLE001 - info must never crash
        lines.append(f"cuda details: unavailable ({type(exc).__name__}: {exc})")
    else:
        lines.append("cuda details:")
        lines.extend(f"  {key}: {value}" for key, value in info.items())
    print("\n".join(lines))
    return 0


def _preprocessed(model: Any, scaler: Any, config: dict[str, Any]) -> Any:
    """``model`` behind what ``xpnn predict`` does to the rows first: the standardizer, then (cnn) rows to
    (N, 1, side, side) images. The exported ONNX model then takes the rows predict takes."""
    from . import functional as F
    from . import nn

    xp = model_backend(model).xp
    dtype = getattr(xp, str(config["dtype"]))
    mean, scale = xp.astype(scaler.mean_, dtype), xp.astype(scaler.scale_, dtype)
    image = _image_shape(int(config["sizes"][0])) if config.get("model") == "cnn" else None

    class Preprocessed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            x = (x - mean) / scale
            if image is not None:
                x = F.reshape(x, (x.shape[0],) + image)
            return self.model(x)

    return Preprocessed()


def _export(args: argparse.Namespace) -> int:
    import json

    from . import io

    if not args.onnx and not args.safetensors:
        raise ValueError("give --onnx PATH and/or --safetensors PATH (what to write)")
    outputs = [(flag, os.path.expanduser(p)) for flag, p in (("--onnx", args.onnx), ("--safetensors", args.safetensors))
               if p]
    for flag, out in outputs:
        folder = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{flag} {out}: folder {folder} does not exist")
    path = os.path.expanduser(args.checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (write one with xpnn train --save {path})")
    model, scaler, config = load_trained(path)
    if config.get("model") == "gpt":
        raise ValueError(f"{path}: xpnn export writes classifiers (mlp, cnn); for a --model gpt checkpoint use "
                         "xpnn.models.load_trained(path) and xpnn.onnx.export / xpnn.io.save_safetensors in Python")
    n_features = int(config["sizes"][0])
    if args.onnx:
        from . import onnx as xonnx

        xp = model_backend(model).xp
        net = _preprocessed(model, scaler, config) if scaler is not None else model
        example = xp.zeros((2, n_features), dtype=getattr(xp, str(config["dtype"])))
        if scaler is None and config.get("model") == "cnn":
            example = _as_images(example)
        xonnx.export(net, example, os.path.expanduser(args.onnx), input_names=["input"], output_names=["logits"],
                     dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=args.opset)
        print(f"wrote {args.onnx}: input 'input' (batch, {n_features}) {config['dtype']} rows in the units of the "
              f"training data{' (standardized inside)' if scaler is not None else ''}, output 'logits' "
              f"(batch, {config['sizes'][-1]})")
    if args.safetensors:
        meta = {"xpnn_model": str(config.get("model", "mlp")), "sizes": ",".join(str(int(v)) for v in config["sizes"]),
                "activation": str(config.get("activation", "relu")), "dropout": repr(float(config.get("dropout", 0.0))),
                "dtype": str(config["dtype"])}
        if scaler is not None:
            from .backend import to_numpy

            meta["standardizer"] = json.dumps({k: np.asarray(to_numpy(v), dtype=np.float64).tolist()
                                               for k, v in scaler.state_dict().items()})
        io.save_safetensors(model.state_dict(), os.path.expanduser(args.safetensors), metadata=meta)
        print(f"wrote {args.safetensors}: the model's state_dict (PyTorch's names) and the metadata xpnn predict "
              f"needs (xpnn predict --checkpoint {args.safetensors} --input FILE)")
    return 0


def _read_rows(path: str, n_features: int) -> np.ndarray:
    """Rows of ``path`` (.npy: an array of rows, or of images flattened to rows; .csv: comma-separated numbers, an
    optional header line) as a 2-D float64 array of ``n_features`` columns."""
    lower = path.lower()
    if lower.endswith(".npy"):
        try:
            X = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--input {path}: cannot read it as a .npy array ({exc})") from None
    elif lower.endswith((".csv", ".txt")):
        with open(path) as f:
            first = f.readline()
        try:
            [float(v) for v in first.replace(",", " ").split()]
            skip = 0
        except ValueError:
            skip = 1  # a header line
        try:
            X = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
        except ValueError as exc:
            raise ValueError(f"--input {path}: cannot read it as comma-separated numbers ({exc})") from None
    else:
        raise ValueError(f"--input {path}: expected a .npy or .csv file")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"--input {path}: expected numbers, got an array of dtype {X.dtype}")
    if X.ndim == 1 and X.shape[0] == n_features:
        X = X[None, :]  # one sample
    elif X.ndim > 2 and int(np.prod(X.shape[1:])) == n_features:
        X = X.reshape(X.shape[0], -1)  # images, e.g. (n, 8, 8) or (n, 28, 28)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"--input {path}: got an array of shape {X.shape}; the model expects rows of "
                         f"{n_features} features (shape (n, {n_features}))")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"--input {path}: holds NaN or infinite values")
    return X.astype(np.float64)


def _rescale_hint(low: float, high: float, given_low: float, given_high: float, integral: bool) -> str:
    """An expression that maps input values in [given_low, given_high] onto the trained range [low, high]."""
    if given_low >= 0 and low == 0:  # counts or pixels: divide by the full scale (8-bit pixels: 255, digits: 16)
        full = next((f for f in (16, 255, 65535) if given_high <= f), given_high) if integral else given_high
        return f"X / {full:g}" if high == 1 else f"X * {high:g} / {full:g}"
    shifted = f"(X {'-' if given_low >= 0 else '+'} {abs(given_low):g})"
    scaled = f"{shifted} * {(high - low) / ((given_high - given_low) or 1.0):.6g}"
    return scaled if low == 0 else f"{low:g} + {scaled}"


def _warn_if_out_of_range(X: np.ndarray, config: dict[str, Any], in_path: str, ckpt: str) -> None:
    """A warning on stderr when the input's values lie far outside the range of the training data saved in the
    checkpoint (0-255 pixels or raw 0-16 digits given to a model trained on [0, 1]): farther than the trained
    range's own width beyond either end. Checkpoints without ``input_range`` (older ones) are not checked."""
    if "input_range" not in config or X.size == 0:
        return
    low, high = (float(v) for v in config["input_range"])
    given_low, given_high = float(X.min()), float(X.max())
    width = max(high - low, 1e-12)
    if low - width <= given_low and given_high <= high + width:
        return
    hint = _rescale_hint(low, high, given_low, given_high, bool(np.all(X == np.round(X))))
    print(f"xpnn predict: warning: --input {in_path} holds values in [{given_low:g}, {given_high:g}], far outside "
          f"[{low:g}, {high:g}], the range of the data the model in {ckpt} was trained on "
          f"({config.get('dataset', 'unknown dataset')}); its predictions for these rows are unreliable. Rescale the "
          f"input to the trained range first, e.g. {hint}", file=sys.stderr, flush=True)


def _predict(args: argparse.Namespace) -> int:
    from .backend import to_numpy
    from .train import predict

    out = os.path.expanduser(args.output) if args.output else None
    if out:
        from pathlib import Path

        if not Path(out).resolve().parent.is_dir():
            raise FileNotFoundError(f"--output {out}: folder {Path(out).resolve().parent} does not exist")
        if not out.lower().endswith((".npy", ".csv", ".txt")):
            raise ValueError(f"--output {out}: expected a .npy, .csv or .txt file name")
    path = os.path.expanduser(args.checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--checkpoint {path}: no such file (write one with xpnn train --save {path})")
    backend = _cli_backend(args.backend)
    try:
        model, scaler, config = load_trained(path, backend, model=args.model, activation=args.activation)
    except (CheckpointError, ValueError) as exc:  # the message names the file and what it is; name the flag instead
        raise type(exc)(re.sub(r"^xpnn\.(load|models\.load_trained): ", "--checkpoint ", str(exc))) from None
    if config.get("model") == "gpt":
        return _predict_gpt(model, config, os.path.expanduser(args.input), out)
    sizes = [int(v) for v in config["sizes"]]
    in_path = os.path.expanduser(args.input)
    X = _read_rows(in_path, sizes[0])
    _warn_if_out_of_range(X, config, in_path, path)
    xp = backend.xp
    Xb = xp.astype(backend.asarray(X), getattr(xp, str(config["dtype"])))
    Xs = scaler.transform(Xb) if scaler is not None else Xb  # (a .safetensors file may hold no standardizer)
    if config.get("model") == "cnn":
        Xs = _as_images(Xs)
    logits = predict(model, Xs, batch_size=args.batch_size)  # predict returns logits
    labels = to_numpy(xp.argmax(logits, axis=1)).astype(np.int64)
    if out is None:
        sys.stdout.write("".join(f"{v}\n" for v in labels.tolist()))
    elif out.lower().endswith(".npy"):
        np.save(out, labels)
    else:
        np.savetxt(out, labels, fmt="%d")
    if out is not None:
        print(f"wrote {labels.shape[0]} class labels to {out}", file=sys.stderr)
    return 0


def _predict_gpt(model: Any, config: dict[str, Any], in_path: str, out: Optional[str]) -> int:
    """``xpnn predict`` of a ``--model gpt`` checkpoint: each line of the text file ``in_path`` is a digit sequence
    (``3 1 4 1 5`` or ``31415``); prints (or writes to ``out``) the generated answer, the digits sorted."""
    from .models import sort_digits

    if not os.path.isfile(in_path):
        raise FileNotFoundError(f"--input {in_path}: no such file")
    seqs = []
    max_len = (int(config["block_size"]) - 1) // 2
    with open(in_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            digits = line.replace(" ", "").replace(",", "").strip()
            if not digits:
                continue
            if not digits.isdigit() or not 1 <= len(digits) <= max_len:
                raise ValueError(f"--input {in_path}, line {n}: expected 1 to {max_len} digits 0-9 (a --model gpt "
                                 f"checkpoint sorts digit sequences), got {line.strip()!r}")
            seqs.append([int(c) for c in digits])
    text = "".join(" ".join(map(str, a)) + "\n" for a in sort_digits(model, seqs))
    if out is None:
        sys.stdout.write(text)
    else:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {len(seqs)} answers to {out}", file=sys.stderr)
    return 0


def _bench(argv: list[str]) -> int:
    try:
        from . import bench
    except ImportError as exc:
        print(f"xpnn bench: the benchmark module is not available ({exc})", file=sys.stderr)
        return 1
    return int(bench.main(argv) or 0)


class _SubcommandParser(argparse.ArgumentParser):
    """The parser of one subcommand: an unrecognized argument is its own usage error (argparse hands it up to the
    top-level parser, whose usage says nothing about the subcommand's flags)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


# flags of `xpnn train` that only --model mlp uses: (flag, dest, default)
_MLP_ONLY = (("--hidden", "hidden", DEFAULTS["hidden"]), ("--activation", "activation", DEFAULTS["activation"]),
             ("--dropout", "dropout", 0.0))


def _check_train_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Usage error for a flag that the chosen model or dataset would ignore; then fill in the defaults."""
    if args.model != "mlp":
        given = [flag for flag, dest, _ in _MLP_ONLY if getattr(args, dest) is not None]
        if given:
            parser.error(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --model mlp only; "
                         f"--model {args.model} has a fixed architecture (see xpnn train --help): leave "
                         f"{'it' if len(given) == 1 else 'them'} out")
    if args.model == "gpt" and (args.dataset is not None or args.test_size is not None):
        parser.error("--dataset and --test-size do not apply to --model gpt (it trains on the generated sorting "
                     "task): leave them out")
    if args.dataset is None:
        args.dataset = "digits"
    if args.optimizer is None:
        args.optimizer = "adamw" if args.model == "gpt" else DEFAULTS["optimizer"]
    if args.batch_size is None:
        args.batch_size = GPT_DEFAULTS["batch_size"] if args.model == "gpt" else DEFAULTS["batch_size"]
    if args.test_size is not None and args.dataset != "digits":
        parser.error(f"--test-size applies to --dataset digits only; --dataset {args.dataset} has its own test "
                     "split: leave it out")
    for flag, dest, default in _MLP_ONLY:
        if getattr(args, dest) is None:
            setattr(args, dest, _parse_hidden(default) if dest == "hidden" else default)
    if args.test_size is None:
        args.test_size = DEFAULTS["test_size"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xpnn", description="xpnn: neural networks on NumPy (CPU) or CuPy (GPU).")
    sub = parser.add_subparsers(dest="command", metavar="{train,predict,info,bench}", parser_class=_SubcommandParser)
    t = sub.add_parser("train", help="train a classifier: an MLP, or a CNN with --model cnn (bundled digits by "
                                     "default)",
                       description="Train a classifier (an MLP, or with --model cnn a small CNN for 8x8 images and "
                                   "LeNet-5 for 28x28) on the bundled digits or MNIST and print the test accuracy. "
                                   "With no arguments: the bundled 8x8 digits, 64-128-10 ReLU MLP, Adam, on the "
                                   "default backend.")
    t.add_argument("--dataset", default=None,
                   help="digits (bundled 8x8 digits) or mnist:PATH (folder with the IDX files) (default: digits)")
    t.add_argument("--backend", default=None, choices=["auto", "numpy", "cpu", "cuda"],
                   help="array backend; cpu is numpy (default: $XPNN_BACKEND or numpy; auto = cuda when a GPU is "
                        "present)")
    t.add_argument("--model", default="mlp", choices=["mlp", "cnn", "gpt"],
                   help="mlp, or cnn: a small CNN for 8x8 images (digits), LeNet-5 for 28x28 (MNIST), or gpt: a "
                        "small GPT on the generated sorting task (no --dataset); --hidden, "
                        "--activation and --dropout apply to mlp only (default: mlp)")
    t.add_argument("--hidden", type=_parse_hidden, default=None,
                   help=f"mlp only: hidden layer widths, comma-separated, 0 for none (default: {DEFAULTS['hidden']})")
    t.add_argument("--activation", default=None, choices=list(ACTIVATIONS),
                   help=f"mlp only: activation after each hidden layer (default: {DEFAULTS['activation']})")
    t.add_argument("--optimizer", default=None, choices=list(OPTIMIZERS),
                   help=f"optimizer (default: {DEFAULTS['optimizer']}; adamw for gpt)")
    lrs = ", ".join(f"{k} {v[1]:g}" for k, v in OPTIMIZERS.items())
    t.add_argument("--lr", type=_float_in(0.0, float("inf"), low_open=True, high_open=True), default=None,
                   help=f"learning rate > 0 (default: per optimizer: {lrs})")
    t.add_argument("--weight-decay", type=_float_in(0.0, float("inf"), high_open=True), default=0.0,
                   help="L2 weight decay >= 0 (AdamW: decoupled) (default: 0)")
    t.add_argument("--dropout", type=_float_in(0.0, 1.0, high_open=True), default=None,
                   help="mlp only: dropout probability in [0, 1) after each hidden activation (default: 0)")
    t.add_argument("--label-smoothing", type=_float_in(0.0, 1.0), default=DEFAULTS["label_smoothing"],
                   help="label smoothing in [0, 1] of the training loss; loss and val_loss include it, the final "
                        f"test loss does not (default: {DEFAULTS['label_smoothing']})")
    t.add_argument("--epochs", type=_int_at_least(1), default=None,
                   help=f"passes over the training rows, >= 1 (default: {DEFAULTS['epochs']} for mlp, {CNN_EPOCHS} "
                        "for cnn)")
    t.add_argument("--batch-size", type=_int_at_least(1), default=None,
                   help=f"rows per optimizer step, >= 1 (default: {DEFAULTS['batch_size']}; "
                        f"{GPT_DEFAULTS['batch_size']} for gpt)")
    t.add_argument("--test-size", type=_float_in(0.0, 1.0, low_open=True, high_open=True), default=None,
                   help=f"digits: fraction of rows held out for testing, in (0, 1) (default: {DEFAULTS['test_size']})")
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="parameter and input dtype (default: float32)")
    t.add_argument("--seed", type=_int_at_least(0), default=DEFAULTS["seed"],
                   help=f"seed >= 0 of the split, the initial weights and the batch order (default: {DEFAULTS['seed']})")
    t.add_argument("--save", metavar="PATH", help="write a checkpoint (model, optimizer, standardizer, config) for "
                                                   "xpnn predict or xpnn.load (default: none)")
    t.add_argument("--plot", metavar="PATH", help="write loss/accuracy curves (PNG; needs matplotlib) (default: none)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars, one line per epoch instead")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of mpiexec -n N (NCCL when every rank has a GPU, else MPI); "
                        "--batch-size is per rank (default: off, one process)")
    pr = sub.add_parser("predict", help="class labels for new rows from a checkpoint of xpnn train --save",
                        description="Load a checkpoint written by `xpnn train --save PATH`, standardize the input "
                                    "rows as in training and print one predicted class label per line (or write "
                                    "them to --output). Input rows are in the units of the training data (digits, "
                                    "mnist: pixel values in [0, 1], as xpnn.data.load_digits/load_mnist return).")
    pr.add_argument("--checkpoint", required=True, metavar="PATH", help="checkpoint of xpnn train --save")
    pr.add_argument("--input", required=True, metavar="FILE",
                    help=".npy (rows, or images flattened to rows) or .csv (comma-separated rows, optional header)")
    pr.add_argument("--output", metavar="FILE", default=None,
                    help="write the labels to a .npy, .csv or .txt file instead of printing them (default: print)")
    pr.add_argument("--backend", default=None, choices=["auto", "numpy", "cpu", "cuda"],
                    help="array backend (default: $XPNN_BACKEND or numpy)")
    pr.add_argument("--batch-size", type=_int_at_least(1), default=1024,
                    help="rows per forward pass, >= 1 (default: 1024)")
    pr.add_argument("--model", default=None, choices=["mlp", "cnn"],
                    help="for a .safetensors --checkpoint without xpnn metadata (e.g. saved from PyTorch): the "
                         "model its weights belong to (default: from the file's metadata)")
    pr.add_argument("--activation", default=None, choices=list(ACTIVATIONS),
                    help="for a .safetensors --checkpoint without xpnn metadata: the MLP's activation (default: "
                         "from the metadata, else relu)")
    ex = sub.add_parser("export", help="write a checkpoint of xpnn train --save as ONNX and/or safetensors",
                        description="Export a checkpoint written by `xpnn train --save`: --onnx writes an ONNX "
                                    "model (input 'input': rows as xpnn predict takes them, standardized inside; "
                                    "output 'logits'; dynamic batch axis), --safetensors the model's state_dict "
                                    "with the metadata xpnn predict needs.")
    ex.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint of xpnn train --save")
    ex.add_argument("--onnx", metavar="PATH", default=None, help="write an ONNX model (needs the onnx package)")
    ex.add_argument("--safetensors", metavar="PATH", default=None,
                    help="write the weights as .safetensors (needs the safetensors package)")
    ex.add_argument("--opset", type=_int_at_least(13), default=None,
                    help="ONNX opset version (default: 17)")
    sub.add_parser("info", help="versions, backends, CUDA device and kernel status")
    sub.add_parser("bench", help="run the benchmarks (arguments are passed on; see xpnn bench --help)",
                   add_help=False)
    return parser


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` of ``parser``."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``xpnn`` command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":  # everything after "bench" belongs to the benchmark's own parser
        return _bench(argv[1:])
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "train":
            _check_train_flags(args, _subcommand(parser, "train"))
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 1
    try:
        run = {"train": _train, "predict": _predict, "export": _export, "info": _info}[args.command]
        code = run(args)
        sys.stdout.flush()  # a reader that left shows here (below), not as a traceback at exit
        return code
    except BrokenPipeError:  # stdout's reader left early (xpnn predict ... | head -3): stop quietly, as cat does
        try:  # Python flushes stdout again at exit: point it at /dev/null
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        _abort_other_ranks(141)
        return 141  # 128 + SIGPIPE, the status of a shell tool stopped the same way
    except (XpnnError, FileNotFoundError, ValueError, ImportError, argparse.ArgumentTypeError) as exc:
        print(f"xpnn {args.command}: error: {exc}", file=sys.stderr)
        _abort_other_ranks(1)
        return 1
    except MemoryError as exc:
        hint = "" if str(exc).startswith("--") else " (use smaller --hidden widths or --batch-size)"
        print(f"xpnn {args.command}: error: out of memory: {exc}{hint}", file=sys.stderr)
        _abort_other_ranks(1)
        return 1
    except KeyboardInterrupt:
        print(f"xpnn {args.command}: interrupted", file=sys.stderr)
        _abort_other_ranks(130)
        return 130
