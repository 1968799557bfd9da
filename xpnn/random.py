"""Seeds to random generators, in one place: ``generator`` (host, NumPy) and ``device_generator`` (the arrays'
library: CuPy's generator on the GPU, NumPy's elsewhere)."""
from __future__ import annotations

from typing import Any, Union

import numpy as np

__all__ = ["SeedLike", "generator", "device_generator"]

SeedLike = Union[int, np.random.Generator, None]


def generator(seed: SeedLike = None) -> np.random.Generator:
    """A NumPy Generator from an int seed, ``None`` (fresh entropy) or an existing Generator (used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def device_generator(xp: Any, seed: Any = None) -> Any:
    """A generator that draws arrays of namespace ``xp``: ``cupy.random.default_rng(seed)`` for CuPy, else
    ``generator(seed)`` (other namespaces copy NumPy draws in)."""
    from .backend import is_cupy_namespace

    if is_cupy_namespace(xp):
        import cupy

        return cupy.random.default_rng(seed)
    return generator(seed)
