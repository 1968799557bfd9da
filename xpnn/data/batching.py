"""Mini-batches and train/test splits for arrays of any backend (NumPy, CuPy, any array-API namespace)."""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterator, Optional, Union

import numpy as np

from ..backend import backend_of, namespace_of, to_numpy
from ..errors import ShapeError

from ..random import generator

__all__ = ["batches", "train_test_split", "split_sizes", "SeedLike", "as_generator"]

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


def split_sizes(n: int, test_size: Union[float, int], where: str = "train_test_split") -> tuple[int, int]:
    """``(n_train, n_test)`` for ``n`` rows as scikit-learn's ``train_test_split`` sizes them: a float fraction in
    (0, 1) gives ``ceil(test_size * n)`` test rows, an int that many; the rest are training rows. Raises ValueError
    (scikit-learn's message) for a size out of range or an empty train set, TypeError for another type."""
    if isinstance(test_size, numbers.Integral) and not isinstance(test_size, bool):
        if not 0 < test_size < n:
            raise ValueError(f"{where}: test_size={test_size} should be either positive and smaller than the number "
                             f"of samples {n} or a float in the (0, 1) range ({test_size} test rows out of {n})")
        n_test = int(test_size)
    elif isinstance(test_size, numbers.Real) and not isinstance(test_size, bool):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"{where}: test_size={test_size} should be either positive and smaller than the number "
                             f"of samples {n} or a float in the (0, 1) range")
        n_test = math.ceil(test_size * n)
    else:
        raise TypeError(f"{where}: test_size must be a float fraction or an int count, got {test_size!r}")
    if n - n_test <= 0:
        raise ValueError(f"{where}: with n_samples={n}, test_size={test_size} and train_size=None, the resulting "
                         f"train set will be empty ({n_test} test rows out of {n}). Adjust test_size.")
    return n - n_test, n_test


def _approximate_mode(counts: np.ndarray, draws: int, rng: Optional[np.random.Generator]) -> np.ndarray:
    """Per class, how many of ``draws`` rows to take from classes of ``counts`` rows: each class's share rounded
    down, the rows left over going to the largest remainders; equal remainders in a random order (``rng``) or in
    label order (``None``). scikit-learn's ``_approximate_mode`` (same expression, so the same rounding)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    remainder = continuous - floored
    tiebreak = rng.permutation(counts.size) if rng is not None else np.arange(counts.size)
    order = np.lexsort((tiebreak, -remainder))  # largest remainder first
    floored[order[: int(draws - floored.sum())]] += 1
    return floored.astype(np.int64)


def _stratified_test_counts(labels: Any, n_train: int, n_test: int, rng: Optional[np.random.Generator]) -> tuple[
        list[np.ndarray], np.ndarray]:
    """(row indices of each class, test rows per class) as scikit-learn's ``StratifiedShuffleSplit`` chooses them:
    the training rows per class are the approximate mode for ``n_train`` draws, the rest of each class is test. Raises
    scikit-learn's ValueErrors for a class of one member and for fewer train or test rows than classes."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"train_test_split: stratify needs integer labels, got {labels.dtype}")
    if labels.ndim != 1:
        raise ShapeError(f"train_test_split: stratify needs class labels of shape (n,), got {labels.shape}")
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        raise ValueError("train_test_split: the least populated classes in y have only 1 member, which is too few. "
                         "The minimum number of groups for any class cannot be less than 2. Classes with too few "
                         f"members are: {classes[counts < 2].tolist()}")
    for name, size in (("train_size", n_train), ("test_size", n_test)):
        if size < classes.size:
            raise ValueError(f"train_test_split: the {name} = {size} should be greater or equal to the number of "
                             f"classes = {classes.size}")
    groups = [np.flatnonzero(labels == c) for c in classes]
    return groups, counts - _approximate_mode(counts, n_train, rng)


def train_test_split(
    X: Any,
    y: Any,
    test_size: Union[float, int] = 0.25,
    *,
    seed: SeedLike = None,
    shuffle: bool = True,
    stratify: Any = False,
) -> tuple[Any, Any, Any, Any]:
    """Split rows into ``X_train, X_test, y_train, y_test`` (scikit-learn's order), on the arrays' own backend.

    ``test_size``: a fraction in (0, 1) (``ceil(test_size * n)`` test rows, as scikit-learn) or a row count; the
    other rows train (``split_sizes``). ``stratify=True`` keeps each class's share of ``y`` in both parts;
    ``stratify=labels`` (an array of n labels, scikit-learn's form, e.g. ``stratify=y``) those of ``labels`` (needs
    integer labels; per-class counts as scikit-learn's ``StratifiedShuffleSplit``, which raises ValueError for a
    class of one member or fewer train/test rows than classes). Without ``shuffle`` the last rows are the test set.
    """
    xp = namespace_of(X, y, where="train_test_split")
    n = _check_lengths("train_test_split", X, y)
    n_train, n_test = split_sizes(n, test_size)
    rng = as_generator(seed)
    if stratify is not False and stratify is not None:
        by = y if stratify is True else stratify
        labels = to_numpy(by) if hasattr(by, "shape") else np.asarray(by)  # (a list of labels too)
        if labels.shape[:1] != (n,):
            raise ShapeError(f"train_test_split: stratify must be True or an array of {n} labels (one per row), got "
                             f"shape {tuple(labels.shape)}")
        groups, k = _stratified_test_counts(labels, n_train, n_test, rng if shuffle else None)
        if shuffle:
            groups = [rng.permutation(idx) for idx in groups]
        test_parts = [idx[idx.size - kc:] for idx, kc in zip(groups, k)]
        train_parts = [idx[: idx.size - kc] for idx, kc in zip(groups, k)]
        train_idx, test_idx = np.concatenate(train_parts), np.concatenate(test_parts)
        if shuffle:  # do not leave the rows grouped by class
            train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
        else:
            train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    else:
        order = rng.permutation(n) if shuffle else np.arange(n)
        train_idx, test_idx = order[:n_train], order[n_train:]
    be = backend_of(X)
    tr, te = be.asarray(train_idx), be.asarray(test_idx)
    return xp.take(X, tr, axis=0), xp.take(X, te, axis=0), xp.take(y, tr, axis=0), xp.take(y, te, axis=0)
