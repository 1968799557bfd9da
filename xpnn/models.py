"""Ready-made convolutional networks built from ``xpnn.nn`` layers (used by ``xpnn train --model cnn`` and the
examples): ``digits_cnn`` for 1x8x8 images, ``lenet5`` for 1x28x28 images, ``cnn_for`` picks one by image size."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import nn

__all__ = ["digits_cnn", "lenet5", "cnn_for"]


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
