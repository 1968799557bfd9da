"""Weight initialisation with PyTorch's semantics (``torch.nn.init``), in place, on arrays or Parameters.

Random values are drawn on the host with a NumPy ``Generator`` (``seed``: an int, a Generator, or ``None`` for fresh
entropy) and copied into the array's namespace and dtype, so the same seed gives the same weights on every backend.
Fans follow PyTorch: for a weight of shape ``(out, in, *k)``, ``fan_in = in * prod(k)``, ``fan_out = out * prod(k)``.
Every function returns its argument. Trailing-underscore aliases (``kaiming_uniform_``) match PyTorch's names.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Union

import numpy as np

from ._tensor import Tensor, bump_versions
from .backend import dtype_name, get_backend, namespace_of
from .errors import ShapeError
from .random import generator

__all__ = [
    "calculate_gain",
    "calculate_fan_in_and_fan_out",
    "uniform",
    "normal",
    "constant",
    "zeros",
    "ones",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
]

Seed = Union[int, np.random.Generator, None]

_LINEAR_GAIN = ("linear", "identity", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity: str, param: Optional[float] = None) -> float:
    """Recommended gain for ``nonlinearity`` (PyTorch's table): linear/sigmoid 1, tanh 5/3, relu sqrt(2),
    leaky_relu sqrt(2 / (1 + slope**2)) (slope ``param``, default 0.01), selu 3/4."""
    if nonlinearity in _LINEAR_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _target(tensor: Any) -> Any:
    """The array to write into (a Tensor's or Parameter's ``.data``, or the array itself)."""
    return tensor.data if isinstance(tensor, Tensor) else tensor


def calculate_fan_in_and_fan_out(tensor: Any) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape ``(out, in, *receptive_field)`` (at least 2-D)."""
    shape = tuple(_target(tensor).shape)
    if len(shape) < 2:
        raise ShapeError(f"init: fan in and fan out need an array with at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(tensor: Any, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _rng(seed: Seed) -> np.random.Generator:
    return generator(seed)


def _write(tensor: Any, values: np.ndarray) -> Any:
    target = _target(tensor)
    if isinstance(target, np.ndarray):
        target[...] = values
    else:
        xp = namespace_of(target, where="init")
        target[...] = get_backend(xp).asarray(values, dtype=dtype_name(target.dtype))
    if target is not tensor:
        bump_versions((tensor,))  # a Tensor or Parameter: an in-place write (optimizers re-read it)
    return tensor


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(_target(tensor).shape)


def uniform(tensor: Any, a: float = 0.0, b: float = 1.0, *, seed: Seed = None) -> Any:
    """Fill with values drawn from U(a, b)."""
    return _write(tensor, _rng(seed).uniform(a, b, size=_shape(tensor)))


def normal(tensor: Any, mean: float = 0.0, std: float = 1.0, *, seed: Seed = None) -> Any:
    """Fill with values drawn from N(mean, std**2)."""
    return _write(tensor, _rng(seed).normal(mean, std, size=_shape(tensor)))


def constant(tensor: Any, val: float) -> Any:
    """Fill with ``val``."""
    return _write(tensor, np.full(_shape(tensor), val))


def zeros(tensor: Any) -> Any:
    """Fill with 0."""
    return constant(tensor, 0.0)


def ones(tensor: Any) -> Any:
    """Fill with 1."""
    return constant(tensor, 1.0)


def xavier_uniform(tensor: Any, gain: float = 1.0, *, seed: Seed = None) -> Any:
    """Glorot uniform: U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(tensor, -a, a, seed=seed)


def xavier_normal(tensor: Any, gain: float = 1.0, *, seed: Seed = None) -> Any:
    """Glorot normal: N(0, std**2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return normal(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), seed=seed)


def _kaiming_std(tensor: Any, a: float, mode: str, nonlinearity: str) -> float:
    """``gain / sqrt(fan)``, ``gain = calculate_gain(nonlinearity, a)``: the std both He initialisations aim for."""
    fan = _fan(tensor, mode)
    if fan == 0:
        raise ShapeError(f"init: cannot initialise an array of shape {_shape(tensor)} (fan is 0)")
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform(
    tensor: Any, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", *, seed: Seed = None
) -> Any:
    """He uniform: U(-bound, bound) with ``bound = gain * sqrt(3 / fan)``, ``gain = calculate_gain(nonlinearity, a)``."""
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform(tensor, -bound, bound, seed=seed)


def kaiming_normal(
    tensor: Any, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", *, seed: Seed = None
) -> Any:
    """He normal: N(0, std**2) with ``std = gain / sqrt(fan)``, ``gain = calculate_gain(nonlinearity, a)``."""
    return normal(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity), seed=seed)


def orthogonal(tensor: Any, gain: float = 1.0, *, seed: Seed = None) -> Any:
    """A (semi-)orthogonal matrix (Saxe et al., 2013), ``torch.nn.init.orthogonal_``: the array viewed as
    (shape[0], prod(shape[1:])) gets orthonormal rows or columns (whichever are fewer), times ``gain``: the Q of a QR
    decomposition of a N(0, 1) draw, its signs fixed by R's diagonal. Raises ``ShapeError`` for fewer than 2 axes."""
    shape = _shape(tensor)
    if len(shape) < 2:
        raise ShapeError(f"init.orthogonal: expected an array of 2 or more axes, got shape {shape}")
    rows = shape[0]
    cols = math.prod(shape[1:])
    if rows * cols == 0:
        return tensor
    flat = _rng(seed).normal(0.0, 1.0, size=(rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _write(tensor, gain * q.reshape(shape))


# PyTorch spellings
uniform_ = uniform
normal_ = normal
constant_ = constant
zeros_ = zeros
ones_ = ones
xavier_uniform_ = xavier_uniform
xavier_normal_ = xavier_normal
kaiming_uniform_ = kaiming_uniform
kaiming_normal_ = kaiming_normal
orthogonal_ = orthogonal
_calculate_fan_in_and_fan_out = calculate_fan_in_and_fan_out
