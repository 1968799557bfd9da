"""The bundled 8x8 handwritten digits (UCI optdigits, 1,797 images; see LICENSE_digits.txt)."""
from __future__ import annotations

from importlib import resources

import numpy as np

__all__ = ["load_digits"]

N_DIGITS = 1797


def load_digits(*, raw: bool = False, images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits as NumPy arrays ``(X, y)``; no download, no extra dependency.

    X: ``(1797, 64)`` float32 in [0, 1] (pixel count / 16); with ``raw=True`` the original counts 0..16 as uint8;
    with ``images=True`` shaped ``(1797, 8, 8)`` instead of flat rows. y: ``(1797,)`` int64 digits 0..9.
    Move them to a backend with ``xpnn.get_backend(name).asarray(X)`` (``xpnn.train.fit`` does it for you).
    """
    with resources.files(__package__).joinpath("digits.npz").open("rb") as f, np.load(f, allow_pickle=False) as z:
        pixels = z["images"]
        y = z["target"].astype(np.int64)
    if pixels.shape != (N_DIGITS, 8, 8) or y.shape != (N_DIGITS,):  # guards against a damaged install
        raise ValueError(f"load_digits: bundled digits.npz has shapes {pixels.shape}, {y.shape}; reinstall xpnn")
    X = pixels if raw else pixels.astype(np.float32) / np.float32(16.0)
    if not images:
        X = X.reshape(N_DIGITS, 64)
    return X, y
