"""Seeds to random generators, in one place: ``generator`` (host, NumPy) and ``device_generator`` (the arrays'
library: CuPy's generator on the GPU, NumPy's elsewhere).

``manual_seed(seed)`` (``xpnn.manual_seed``) makes every draw that is not given its own seed reproducible: after
it, ``generator(None)`` / ``device_generator(xp, None)`` return generators seeded from one global stream instead
of fresh entropy. That covers ``xpnn.init`` functions, layers built with ``seed=None`` (``Linear``, ``Conv2d``,
...), ``Dropout``/``DropConnect`` masks, ``F.dropout`` without ``rng``/``seed``, and ``xpnn.data`` shuffling and
augmentation with ``seed=None``. An explicit ``seed=`` (an int or a Generator) is used as is.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

__all__ = ["SeedLike", "generator", "device_generator", "manual_seed"]

SeedLike = Union[int, np.random.Generator, None]

_global: list[Optional[np.random.Generator]] = [None]  # set by manual_seed: the stream unseeded draws come from


def manual_seed(seed: int) -> None:
    """Seed xpnn's own randomness (``torch.manual_seed``): every later generator made without a seed (see the
    module docstring) is drawn from a stream started at ``seed``, so two runs that call ``manual_seed(s)`` and then
    do the same things get the same numbers. It does not seed NumPy's or CuPy's global state (``np.random.*``)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    _global[0] = np.random.default_rng(int(seed))


def _next_seed() -> Optional[int]:
    """A seed from the ``manual_seed`` stream, or ``None`` (fresh entropy) when it was never called."""
    g = _global[0]
    return None if g is None else int(g.integers(2**63))


def generator(seed: SeedLike = None) -> np.random.Generator:
    """A NumPy Generator from an int seed, ``None`` (the ``manual_seed`` stream if set, else fresh entropy) or an
    existing Generator (used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(_next_seed() if seed is None else seed)


def device_generator(xp: Any, seed: Any = None) -> Any:
    """A generator that draws arrays of namespace ``xp``: ``cupy.random.default_rng(seed)`` for CuPy, else
    ``generator(seed)`` (other namespaces copy NumPy draws in). ``seed=None`` follows ``manual_seed``."""
    from .backend import is_cupy_namespace

    if is_cupy_namespace(xp):
        import cupy

        return cupy.random.default_rng(_next_seed() if seed is None else seed)
    return generator(seed)
