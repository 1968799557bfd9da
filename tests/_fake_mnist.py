"""Tiny MNIST-format IDX files for the CLI and example tests (no download)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import xpnn.data as D


def write_fake_mnist(folder: Path, n_train: int = 300, n_test: int = 100, *, noise: int = 60, gz: bool = True) -> None:
    """The four MNIST files in ``folder``: class k images have a bright k-th horizontal band, plus noise."""
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, noise, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 + 2 * k: 4 + 2 * k, :] = 255
        D.write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        D.write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
