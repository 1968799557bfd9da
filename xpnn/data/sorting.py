"""The sorting task (generated, no download): a sequence of digits, a separator, then the same digits sorted, as
next-token prediction on the answer half (``xpnn train --model gpt``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .batching import as_generator

__all__ = ["sorting_task", "SORT_VOCAB", "SORT_SEP", "SORT_PAD", "IGNORE"]

SORT_SEP = 10  #: the token between the digits and their sorted copy
SORT_PAD = 11  #: fills sequences shorter than the longest (after the answer; never a target)
SORT_VOCAB = 12  #: digits 0-9, SEP, PAD
IGNORE = -100  #: target of the positions that are not trained on (``cross_entropy``'s default ``ignore_index``)


def sorting_task(n: int, min_len: int = 6, max_len: int = 12, *, seed: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples ``(tokens, targets)``, both int64 of shape (n, 2 * max_len + 1).

    Row: ``d_1 .. d_L SEP s_1 .. s_L PAD ...`` with L uniform in [min_len, max_len], digits uniform in 0-9 and s the
    digits sorted. ``targets[i, t]`` is the token at t + 1 where that token is part of the answer (``s_1 .. s_L``,
    predicted from ``SEP s_1 .. s_{L-1}``), else ``IGNORE``: the loss is next-token prediction on the answer half.
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"sorting_task: need 1 <= min_len <= max_len, got {min_len} and {max_len}")
    rng = as_generator(seed)
    width = 2 * max_len + 1
    tokens = np.full((n, width), SORT_PAD, dtype=np.int64)
    targets = np.full((n, width), IGNORE, dtype=np.int64)
    lengths = rng.integers(min_len, max_len + 1, size=n)
    digits = rng.integers(0, 10, size=(n, max_len))
    for i, length in enumerate(lengths):
        d = digits[i, :length]
        s = np.sort(d)
        tokens[i, :length] = d
        tokens[i, length] = SORT_SEP
        tokens[i, length + 1:2 * length + 1] = s
        targets[i, length:2 * length] = s
    return tokens, targets
