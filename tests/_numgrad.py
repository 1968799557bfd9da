"""Central finite differences for the float64 gradient checks (shared by the test files)."""
from __future__ import annotations

from typing import Callable

import numpy as np

EPS = 1e-6


def numeric_grad(f: Callable[[], float], arr: np.ndarray, eps: float = EPS) -> np.ndarray:
    """d f() / d arr by central differences, perturbing ``arr`` in place (restored afterwards)."""
    g = np.zeros(arr.shape)
    flat = arr.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        g.reshape(-1)[i] = (fp - fm) / (2 * eps)
    return g
