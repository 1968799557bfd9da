"""The ``xpnn`` command: ``xpnn train`` (train an MLP on digits or MNIST), ``xpnn predict`` (class labels from a
``xpnn train --save`` checkpoint), ``xpnn export`` (such a checkpoint as ONNX / safetensors), ``xpnn info``,
``xpnn bench``.

Every flag is checked by argparse before any work: a bad value is a usage error (exit status 2) that names the flag.

``main(argv=None) -> int`` is the entry point (``pyproject.toml``: ``xpnn = "xpnn.cli:main"``; also ``python -m xpnn``).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

from .errors import XpnnError
from .random import generator

__all__ = ["main", "build_model", "make_optimizer", "load_trained", "ACTIVATIONS", "OPTIMIZERS"]

# name -> class name in xpnn.nn
ACTIVATIONS = {
    "relu": "ReLU", "leaky_relu": "LeakyReLU", "prelu": "PReLU", "elu": "ELU", "selu": "SELU",
    "tanh": "Tanh", "sigmoid": "Sigmoid",
}
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


def build_model(sizes: Sequence[int], activation: str = "relu", *, backend: Any = None, dtype: Any = None,
                seed: Any = 0, dropout: float = 0.0) -> Any:
    """An MLP ``Linear -> activation [-> Dropout] -> ... -> Linear`` for layer widths ``sizes`` (input first)."""
    from . import nn

    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: choose from {', '.join(ACTIVATIONS)}")
    rng = generator(seed)
    act = getattr(nn, ACTIVATIONS[activation])
    layers: list[Any] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(d_in, d_out, backend=backend, dtype=dtype, seed=rng))
        if i < len(sizes) - 2:
            layers.append(act(backend=backend, dtype=dtype) if activation == "prelu" else act())
            if dropout > 0:
                layers.append(nn.Dropout(dropout, seed=int(rng.integers(2**31))))
    return nn.Sequential(*layers)


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
    side = int(round(n_features ** 0.5))
    if side * side != n_features:
        raise ValueError(f"--model cnn needs square single-channel images, got rows of {n_features} features")
    return 1, side, side


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


def _train(args: argparse.Namespace) -> int:
    from . import data, io, nn
    from .models import cnn_for
    from .train import Callback, _fmt, evaluate, fit

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
                  "seed": args.seed, "dtype": args.dtype, "test_accuracy": result["accuracy"]}
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
        sys.stdout.flush()
        sys.stderr.flush()
        get_process_group().abort(code)


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
                     "(they are used when one is; NumPy runs the array-API code)")
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


def load_trained(path: str, backend: Any = None, *, model: Optional[str] = None,
                 activation: Optional[str] = None) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, standardizer, config)`` rebuilt from a checkpoint written by ``xpnn train --save``, or from a
    ``.safetensors`` file (``xpnn export --safetensors``, or a PyTorch model's ``safetensors.torch.save_file`` of
    the same layout: see ``_safetensors_config``; ``model``/``activation`` then say what its metadata does not).

    The model is in eval mode on ``backend``; ``config`` holds the training settings (``sizes``, ``activation``,
    ``dtype``, ...); the standardizer is ``None`` for a .safetensors file that holds none. Raises
    ``CheckpointError`` when the file is not such a checkpoint.
    """
    from . import data, io
    from .errors import CheckpointError

    if path.lower().endswith(".safetensors"):
        return _load_safetensors_model(path, backend, model, activation)
    state = io.load(path)
    missing = [k for k in ("model", "standardizer", "config") if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"--checkpoint {path}: not a checkpoint written by `xpnn train --save` (no "
                              f"{', '.join(missing)} entry); load it with xpnn.load(path) instead")
    config = state["config"]
    try:
        sizes = [int(v) for v in config["sizes"]]
        if config.get("model") == "cnn":  # xpnn train --model cnn
            from .models import cnn_for

            model = cnn_for(_image_shape(sizes[0]), sizes[-1], backend=backend, dtype=str(config["dtype"]))
        else:
            model = build_model(sizes, str(config["activation"]), backend=backend, dtype=str(config["dtype"]),
                                dropout=float(config.get("dropout", 0.0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"--checkpoint {path}: its config cannot rebuild the model ({exc})") from None
    model.load_state_dict(state["model"])
    model.eval()
    scaler = data.Standardizer().load_state_dict(state["standardizer"])
    return model, scaler.to(_model_backend(model)), config


def _model_backend(model: Any) -> Any:
    """The Backend holding the model's parameters."""
    from .backend import get_backend, namespace_of

    return get_backend(namespace_of(next(iter(model.parameters())).data))


# metadata keys of a .safetensors file written by `xpnn export --safetensors` (all str -> str)
_ST_KEYS = ("xpnn_model", "sizes", "activation", "dropout", "dtype", "standardizer")


def _safetensors_config(path: str, state: dict[str, Any], meta: dict[str, str], model: Optional[str],
                        activation: Optional[str]) -> dict[str, Any]:
    """The config that rebuilds the model of a .safetensors file: from the metadata ``xpnn export`` writes, else
    from the weights' shapes (PyTorch's layout of ``build_model``'s MLP, ``Sequential(Linear, act, Linear, ...)``,
    or of ``xpnn.models``' CNNs) with ``model`` ("mlp" or "cnn") and ``activation`` (default relu)."""
    from .errors import CheckpointError

    if "xpnn_model" in meta:
        try:
            config = {"model": meta["xpnn_model"], "sizes": [int(v) for v in meta["sizes"].split(",")],
                      "activation": meta.get("activation", "relu"), "dropout": float(meta.get("dropout", 0.0)),
                      "dtype": meta["dtype"]}
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"--checkpoint {path}: damaged xpnn metadata ({type(exc).__name__}: {exc})") from None
        if model is not None and model != config["model"]:
            raise ValueError(f"--model {model}: {path} holds a {config['model']} model")
        if activation is not None and activation != config["activation"]:
            raise ValueError(f"--activation {activation}: {path} holds a model with {config['activation']}")
        return config
    if model is None:
        raise ValueError(f"--checkpoint {path}: the file has no xpnn metadata; say which model its weights belong "
                         "to with --model mlp or --model cnn (and --activation for an MLP without ReLU)")
    layers = sorted((int(k.split(".")[0]), v) for k, v in state.items()
                    if k.endswith(".weight") and k.split(".")[0].isdigit() and v.ndim >= 2)
    if not layers:
        raise CheckpointError(f"--checkpoint {path}: no Sequential layer weights ('0.weight', ...) in it; it holds "
                              f"{sorted(state)[:6]}")
    dtype = str(layers[0][1].dtype)
    if model == "cnn":
        first = layers[0][1]
        linear = [w for _, w in layers if w.ndim == 2]
        convs = [w for _, w in layers if w.ndim == 4]
        if first.ndim != 4 or not linear or len(convs) != 2:
            raise CheckpointError(f"--checkpoint {path}: its weights are not those of xpnn.models' CNNs "
                                  "(two Conv2d then Linear layers)")
        if first.shape[-1] == 5:  # lenet5: 28x28 images
            side = 28
        else:  # digits_cnn-like: conv3x3 c1, conv3x3 c2, maxpool2, Linear(c2 * (side/2)**2, ...)
            side = 2 * int(round((linear[0].shape[1] / convs[1].shape[0]) ** 0.5))
        sizes = [int(first.shape[1]) * side * side, int(linear[-1].shape[0])]
        return {"model": "cnn", "sizes": sizes, "activation": "relu", "dropout": 0.0, "dtype": dtype}
    if model != "mlp":
        raise ValueError(f"--model {model}: expected mlp or cnn")
    if any(w.ndim != 2 for _, w in layers):
        raise CheckpointError(f"--checkpoint {path}: --model mlp, but it holds weights of other than 2 dimensions "
                              "(a CNN? then --model cnn)")
    idx = [i for i, _ in layers]
    step = idx[1] - idx[0] if len(idx) > 1 else 2
    prelu = any(k.endswith(".weight") and v.ndim == 1 for k, v in state.items())
    return {"model": "mlp", "sizes": [int(layers[0][1].shape[1])] + [int(w.shape[0]) for _, w in layers],
            "activation": activation or ("prelu" if prelu else "relu"), "dropout": 0.5 if step == 3 else 0.0,
            "dtype": dtype}


def _load_safetensors_model(path: str, backend: Any, model: Optional[str],
                            activation: Optional[str]) -> tuple[Any, Any, dict[str, Any]]:
    """``load_trained`` for a .safetensors file (see ``_safetensors_config``)."""
    import json

    from . import data, io
    from .errors import CheckpointError

    state, meta = io.load_safetensors(path, with_metadata=True)
    config = _safetensors_config(path, state, meta, model, activation)
    sizes = config["sizes"]
    if config["model"] == "cnn":
        from .models import cnn_for

        net = cnn_for(_image_shape(sizes[0]), sizes[-1], backend=backend, dtype=config["dtype"])
    else:
        net = build_model(sizes, config["activation"], backend=backend, dtype=config["dtype"],
                          dropout=config["dropout"])
    net.load_state_dict(state)  # CheckpointError naming missing/unexpected keys or a shape mismatch
    net.eval()
    scaler = None
    if "standardizer" in meta:
        try:
            stats = json.loads(meta["standardizer"])
            scaler = data.Standardizer().load_state_dict(
                {k: np.asarray(stats[k], dtype=np.float64) for k in ("mean", "scale")})
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"--checkpoint {path}: damaged standardizer metadata ({exc})") from None
        scaler = scaler.to(_model_backend(net))
    return net, scaler, config


def _preprocessed(model: Any, scaler: Any, config: dict[str, Any]) -> Any:
    """``model`` behind what ``xpnn predict`` does to the rows first: the standardizer, then (cnn) rows to
    (N, 1, side, side) images. The exported ONNX model then takes the rows predict takes."""
    from . import functional as F
    from . import nn

    xp = _model_backend(model).xp
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
    n_features = int(config["sizes"][0])
    if args.onnx:
        from . import onnx as xonnx

        xp = _model_backend(model).xp
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
    model, scaler, config = load_trained(path, backend, model=args.model, activation=args.activation)
    sizes = [int(v) for v in config["sizes"]]
    X = _read_rows(os.path.expanduser(args.input), sizes[0])
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


def _bench(argv: list[str]) -> int:
    try:
        from . import bench
    except ImportError as exc:
        print(f"xpnn bench: the benchmark module is not available ({exc})", file=sys.stderr)
        return 1
    return int(bench.main(argv) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xpnn", description="xpnn: neural networks on NumPy (CPU) or CuPy (GPU).")
    sub = parser.add_subparsers(dest="command", metavar="{train,predict,info,bench}")
    t = sub.add_parser("train", help="train an MLP classifier (bundled digits by default)",
                       description="Train an MLP classifier and print the test accuracy. With no arguments: the "
                                   "bundled 8x8 digits, 64-128-10 ReLU network, Adam, on the default backend.")
    t.add_argument("--dataset", default="digits",
                   help="digits (bundled 8x8 digits) or mnist:PATH (folder with the IDX files) (default: digits)")
    t.add_argument("--backend", default=None, choices=["auto", "numpy", "cpu", "cuda"],
                   help="array backend; cpu is numpy (default: $XPNN_BACKEND or numpy; auto = cuda when a GPU is "
                        "present)")
    t.add_argument("--model", default="mlp", choices=["mlp", "cnn"],
                   help="mlp, or cnn: a small CNN for 8x8 images (digits), LeNet-5 for 28x28 (MNIST); --hidden, "
                        "--activation and --dropout apply to mlp only (default: mlp)")
    t.add_argument("--hidden", type=_parse_hidden, default=_parse_hidden(DEFAULTS["hidden"]),
                   help=f"hidden layer widths, comma-separated, 0 for none (default: {DEFAULTS['hidden']})")
    t.add_argument("--activation", default=DEFAULTS["activation"], choices=list(ACTIVATIONS),
                   help=f"activation after each hidden layer (default: {DEFAULTS['activation']})")
    t.add_argument("--optimizer", default=DEFAULTS["optimizer"], choices=list(OPTIMIZERS),
                   help=f"optimizer (default: {DEFAULTS['optimizer']})")
    lrs = ", ".join(f"{k} {v[1]:g}" for k, v in OPTIMIZERS.items())
    t.add_argument("--lr", type=_float_in(0.0, float("inf"), low_open=True, high_open=True), default=None,
                   help=f"learning rate > 0 (default: per optimizer: {lrs})")
    t.add_argument("--weight-decay", type=_float_in(0.0, float("inf"), high_open=True), default=0.0,
                   help="L2 weight decay >= 0 (AdamW: decoupled) (default: 0)")
    t.add_argument("--dropout", type=_float_in(0.0, 1.0, high_open=True), default=0.0,
                   help="dropout probability in [0, 1) after each hidden activation (default: 0)")
    t.add_argument("--label-smoothing", type=_float_in(0.0, 1.0), default=DEFAULTS["label_smoothing"],
                   help="label smoothing in [0, 1] of the training loss; loss and val_loss include it, the final "
                        f"test loss does not (default: {DEFAULTS['label_smoothing']})")
    t.add_argument("--epochs", type=_int_at_least(1), default=None,
                   help=f"passes over the training rows, >= 1 (default: {DEFAULTS['epochs']} for mlp, {CNN_EPOCHS} "
                        "for cnn)")
    t.add_argument("--batch-size", type=_int_at_least(1), default=DEFAULTS["batch_size"],
                   help=f"rows per optimizer step, >= 1 (default: {DEFAULTS['batch_size']})")
    t.add_argument("--test-size", type=_float_in(0.0, 1.0, low_open=True, high_open=True),
                   default=DEFAULTS["test_size"],
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``xpnn`` command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":  # everything after "bench" belongs to the benchmark's own parser
        return _bench(argv[1:])
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 1
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "predict":
            return _predict(args)
        if args.command == "export":
            return _export(args)
        return _info(args)
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
