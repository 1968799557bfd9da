"""Mini-batches and train/test splits for arrays of any backend (NumPy, CuPy, any array-API namespace)."""
from __future__ import annotations

from typing import Any, Iterator, Union

import numpy as np

from ..backend import backend_of, namespace_of, to_numpy
from ..errors import ShapeError

from ..random import generator

__all__ = ["batches", "train_test_split", "SeedLike", "as_generator"]

SeedLike = Union[int, np.random.Generator, None]


def as_generator(seed: SeedLike) -> np.random.Generator:
    """A NumPy Generator from an int seed, ``None`` (fresh entropy) or an existing Generator (used as is)."""
    return generator(seed)


def _check_lengths(where: str, X: Any, y: Any) -> int:
    if X.ndim < 1:
        raise ValueError(f"{where}: X must have a leading sample axis, got a 0-d array")
    n = int(X.shape[0])
    if y is not None and int(y.shape[0]) != n:
        raise ValueError(f"{where}: X has {n} samples but y has {int(y.shape[0])}")
    return n


def batches(
    X: Any,
    y: Any = None,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: SeedLike = None,
    *,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(X_batch, y_batch)`` pairs of at most ``batch_size`` rows (``y_batch`` is ``None`` when ``y`` is).

    With ``shuffle`` the rows are permuted once per call (one gather on the arrays' own device); the batches are
    then slices of the permuted copy, so a step costs no extra allocation. ``seed`` is an int (same order every
    call), a ``numpy.random.Generator`` (a new order every call, reproducible) or ``None``.

    ``rank``/``world_size`` (data-parallel training): this rank's shard, as ``torch.utils.data.DistributedSampler``
    makes it: the same permutation on every rank (so ``seed`` must be an int or a Generator in the same state on
    every rank), padded with its first rows to a multiple of ``world_size``, rank r taking positions
    r, r + world_size, ... Every rank then gets the same number of rows and batches, and batch k of all ranks
    together is batch k of ``batch_size * world_size`` rows of the unsharded order.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batches: batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"batches: world_size must be a positive int, got {world_size!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"batches: rank must be an int in 0..{world_size - 1} (world_size={world_size}), got {rank!r}")
    xp = namespace_of(X, y, where="batches")
    n = _check_lengths("batches", X, y)
    if world_size > 1:
        if shuffle and seed is None:
            raise ValueError("batches: with world_size > 1 and shuffle, pass seed (an int, or a Generator in the same "
                             "state on every rank) so that all ranks shuffle the same way")
        order = as_generator(seed).permutation(n) if shuffle else np.arange(n)
        X, y, n = _shard(xp, X, y, order, rank, world_size)
    elif shuffle and n > 1:
        perm = backend_of(X).asarray(as_generator(seed).permutation(n))
        X = xp.take(X, perm, axis=0)
        if y is not None:
            y = xp.take(y, perm, axis=0)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, n)
        yield X[start:end, ...], (None if y is None else y[start:end, ...])


def _shard(xp: Any, X: Any, y: Any, order: np.ndarray, rank: int, world_size: int) -> tuple[Any, Any, int]:
    """Rows ``order[rank::world_size]`` of ``order`` padded (cyclically, from its start) to a multiple of
    ``world_size`` (DistributedSampler's padding), gathered from X and y on their device."""
    total = -(-order.size // world_size) * world_size
    if total > order.size:
        order = np.resize(order, total)  # repeats order from its start as often as needed (n < world_size too)
    idx = backend_of(X).asarray(order[rank:total:world_size])
    X = xp.take(X, idx, axis=0)
    if y is not None:
        y = xp.take(y, idx, axis=0)
    return X, y, int(idx.shape[0])


def _stratified_counts(counts: np.ndarray, n_test: int) -> np.ndarray:
    """Test rows per class: each class's share of ``n_test`` rounded down, the rows left over going to the largest
    remainders (ties: larger classes first), so the counts add up to exactly ``n_test`` even with rare classes."""
    ideal = counts * (n_test / counts.sum())
    k = np.floor(ideal).astype(np.int64)
    order = np.lexsort((-counts, -(ideal - k)))  # largest remainder first, then the larger class
    k[order[: n_test - int(k.sum())]] += 1
    return k


def train_test_split(
    X: Any,
    y: Any,
    test_size: Union[float, int] = 0.25,
    *,
    seed: SeedLike = None,
    shuffle: bool = True,
    stratify: bool = False,
) -> tuple[Any, Any, Any, Any]:
    """Split rows into ``X_train, X_test, y_train, y_test`` (scikit-learn's order), on the arrays' own backend.

    ``test_size``: a fraction in (0, 1) or a row count. ``stratify=True`` keeps each class's share of ``y`` in
    both parts (needs integer labels). Without ``shuffle`` the last rows are the test set.
    """
    xp = namespace_of(X, y, where="train_test_split")
    n = _check_lengths("train_test_split", X, y)
    if isinstance(test_size, float):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"train_test_split: test_size must be in (0, 1) as a fraction, got {test_size}")
        n_test = int(round(test_size * n))
    elif isinstance(test_size, int) and not isinstance(test_size, bool):
        n_test = test_size
    else:
        raise TypeError(f"train_test_split: test_size must be a float fraction or an int count, got {test_size!r}")
    if not 0 < n_test < n:
        raise ValueError(
            f"train_test_split: test_size={test_size} gives {n_test} test rows out of {n}; need 1..{n - 1}"
        )
    rng = as_generator(seed)
    if stratify:
        labels = to_numpy(y)
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"train_test_split: stratify needs integer labels, got {labels.dtype}")
        if labels.ndim != 1:
            raise ShapeError(f"train_test_split: stratify needs class labels of shape (n,), got {labels.shape}")
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        if shuffle:
            groups = [rng.permutation(idx) for idx in groups]
        k = _stratified_counts(np.array([idx.size for idx in groups]), n_test)
        test_parts = [idx[idx.size - kc:] for idx, kc in zip(groups, k)]
        train_parts = [idx[: idx.size - kc] for idx, kc in zip(groups, k)]
        train_idx, test_idx = np.concatenate(train_parts), np.concatenate(test_parts)
        if shuffle:  # do not leave the rows grouped by class
            train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
        else:
            train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    else:
        order = rng.permutation(n) if shuffle else np.arange(n)
        train_idx, test_idx = order[: n - n_test], order[n - n_test:]
    be = backend_of(X)
    tr, te = be.asarray(train_idx), be.asarray(test_idx)
    return xp.take(X, tr, axis=0), xp.take(X, te, axis=0), xp.take(y, tr, axis=0), xp.take(y, te, axis=0)
