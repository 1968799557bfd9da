"""Ready-made networks built from ``xpnn.nn`` layers (used by ``xpnn train`` and the examples): ``mlp`` (a
multi-layer perceptron of given widths), ``digits_cnn`` for 1x8x8 images, ``lenet5`` for 1x28x28 images, ``cnn_for``
picks one by image size; ``load_trained`` rebuilds the model of an ``xpnn train --save`` checkpoint."""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from . import data, io, nn
from .backend import get_backend, namespace_of
from .errors import CheckpointError
from .random import generator

__all__ = ["mlp", "digits_cnn", "lenet5", "cnn_for", "square_image_shape", "load_trained", "ACTIVATIONS"]

# activation name (as ``xpnn train --activation`` takes it) -> class name in xpnn.nn
ACTIVATIONS = {
    "relu": "ReLU", "leaky_relu": "LeakyReLU", "prelu": "PReLU", "elu": "ELU", "selu": "SELU",
    "tanh": "Tanh", "sigmoid": "Sigmoid",
}


def mlp(sizes: Sequence[int], activation: str = "relu", *, backend: Any = None, dtype: Any = None,
        seed: Any = 0, dropout: float = 0.0) -> nn.Sequential:
    """An MLP ``Linear -> activation [-> Dropout] -> ... -> Linear`` for layer widths ``sizes`` (input first), e.g.
    ``mlp([64, 128, 10])``: input (N, 64) -> logits (N, 10). ``activation``: a key of ``ACTIVATIONS``; ``dropout``
    > 0 adds a Dropout after each hidden activation. Raises ValueError for an unknown activation."""
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


def digits_cnn(n_classes: int = 10, in_channels: int = 1, *, channels: Sequence[int] = (16, 32), hidden: int = 64,
               backend: Any = None, dtype: Any = None, seed: Any = 0) -> nn.Sequential:
    """For (N, in_channels, 8, 8) images: two 3x3 same-padded convolutions with ReLU, 2x2 max pool, a hidden
    Linear layer: ``conv(c1) -> relu -> conv(c2) -> relu -> maxpool2 -> flatten -> linear(hidden) -> relu ->
    linear(n_classes)``. Works for any image side divisible by 2 (the first Linear takes c2 * (H/2) * (W/2))."""
    return _small_cnn(n_classes, in_channels, 8, 8, channels, hidden, backend, dtype, seed)


def _small_cnn(n_classes: int, in_channels: int, h: int, w: int, channels: Sequence[int], hidden: int,
               backend: Any, dtype: Any, seed: Any) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    c1, c2 = channels
    kw = dict(backend=backend, dtype=dtype)
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 3, padding=1, seed=rng, **kw), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1, seed=rng, **kw), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(c2 * (h // 2) * (w // 2), hidden, seed=rng, **kw), nn.ReLU(),
        nn.Linear(hidden, n_classes, seed=rng, **kw),
    )


def lenet5(n_classes: int = 10, in_channels: int = 1, *, backend: Any = None, dtype: Any = None,
           seed: Any = 0) -> nn.Sequential:
    """LeNet-5 with ReLU and max pooling for (N, in_channels, 28, 28) images: conv5x5(6, padding 2) -> relu ->
    maxpool2 -> conv5x5(16) -> relu -> maxpool2 -> flatten (400) -> linear(120) -> relu -> linear(84) -> relu ->
    linear(n_classes)."""
    rng = np.random.default_rng(seed)
    kw = dict(backend=backend, dtype=dtype)
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, seed=rng, **kw), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, seed=rng, **kw), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120, seed=rng, **kw), nn.ReLU(),
        nn.Linear(120, 84, seed=rng, **kw), nn.ReLU(),
        nn.Linear(84, n_classes, seed=rng, **kw),
    )


def cnn_for(image_shape: Sequence[int], n_classes: int, *, backend: Any = None, dtype: Any = None,
            seed: Any = 0) -> nn.Sequential:
    """``lenet5`` for (C, 28, 28) images, else the small CNN of ``digits_cnn`` sized for (C, H, W) with even
    H and W. Raises ValueError for other shapes."""
    if len(image_shape) != 3:
        raise ValueError(f"cnn_for: expected an image shape (C, H, W), got {tuple(image_shape)}")
    c, h, w = (int(s) for s in image_shape)
    if (h, w) == (28, 28):
        return lenet5(n_classes, c, backend=backend, dtype=dtype, seed=seed)
    if h < 2 or w < 2 or h % 2 or w % 2:
        raise ValueError(f"cnn_for: images must have even height and width >= 2, got {tuple(image_shape)}")
    return _small_cnn(n_classes, c, h, w, (16, 32), 64, backend, dtype, seed)


def square_image_shape(n_features: int) -> tuple[int, int, int]:
    """``(1, side, side)`` for rows of ``n_features = side * side`` pixels (64 -> (1, 8, 8), 784 -> (1, 28, 28)).
    Raises ValueError when ``n_features`` is not a square."""
    side = int(round(n_features ** 0.5))
    if side * side != n_features:
        raise ValueError(f"rows of {n_features} features are not square single-channel images")
    return 1, side, side


def load_trained(path: io.PathLike, backend: Any = None) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, standardizer, config)`` rebuilt from a checkpoint written by ``xpnn train --save``.

    The model (``mlp`` or ``cnn_for``, as trained) is in eval mode on ``backend`` and takes standardized rows:
    ``model(scaler.transform(X))`` for an MLP, with the rows reshaped to ``(N, 1, side, side)`` images for a CNN.
    ``config`` holds the training settings (``model``, ``sizes``, ``activation``, ``dtype``, ``input_range``, ...).
    Raises ``CheckpointNotFoundError`` for a missing file and ``CheckpointError`` when the file is not such a
    checkpoint.
    """
    path = os.fspath(path)
    state = io.load(path)
    missing = [k for k in ("model", "standardizer", "config") if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"xpnn.models.load_trained: {path} is an xpnn checkpoint but not a checkpoint written "
                              f"by `xpnn train --save` (no {', '.join(missing)} entry); load it with xpnn.load(path) "
                              "instead")
    config = state["config"]
    try:
        sizes = [int(v) for v in config["sizes"]]
        if config.get("model") == "cnn":  # xpnn train --model cnn
            model = cnn_for(square_image_shape(sizes[0]), sizes[-1], backend=backend, dtype=str(config["dtype"]))
        else:
            model = mlp(sizes, str(config["activation"]), backend=backend, dtype=str(config["dtype"]),
                        dropout=float(config.get("dropout", 0.0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"xpnn.models.load_trained: {path}: its config cannot rebuild the model "
                              f"({exc})") from None
    model.load_state_dict(state["model"])
    model.eval()
    scaler = data.Standardizer().load_state_dict(state["standardizer"])
    return model, scaler.to(get_backend(namespace_of(next(iter(model.parameters())).data))), config
