"""Datasets, batching, preprocessing and batch regularizers.

- ``load_digits()``: the bundled 8x8 digits (UCI optdigits, CC BY 4.0); ``load_mnist(path)``: MNIST IDX files.
- ``batches``, ``train_test_split``; ``Standardizer``, ``PCA``; ``one_hot`` (from ``xpnn.functional``).
- ``cutout``, ``mixup`` (+ ``mixup_loss``); the ``DropConnect`` layer lives in ``xpnn.nn`` and is re-exported here.
"""
from __future__ import annotations

from typing import Any

from ..functional import one_hot
from .augment import cutout, mixup, mixup_loss
from .batching import as_generator, batches, train_test_split
from .digits import load_digits
from .mnist import DatasetError, load_mnist, read_idx, write_idx
from .preprocessing import PCA, Standardizer
from .sorting import sorting_task

__all__ = [
    "load_digits", "load_mnist", "read_idx", "write_idx", "DatasetError",
    "batches", "train_test_split", "as_generator",
    "Standardizer", "PCA", "one_hot",
    "cutout", "mixup", "mixup_loss", "DropConnect",
    "sorting_task",
]


def __getattr__(name: str) -> Any:
    if name == "DropConnect":  # a layer: imported on first use so xpnn.data does not need xpnn.nn at import
        from ..nn.dropconnect import DropConnect

        return DropConnect
    raise AttributeError(f"module 'xpnn.data' has no attribute {name!r}")
