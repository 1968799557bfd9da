"""NumPy fast paths of GELU's forward and backward (``gelu``, ``gelu_backward``), registered as overrides of their
declarations (``xpnn.autograd.register_override``; kind ``"numpy"``).

The declarations write each formula as array expressions: ~10 (tanh form) to ~60 (erf form) passes over the
input, each a fresh temporary the size of the activation (a (B*T, 4C) GPT MLP activation is 4 MiB in float32, so
every temporary is a new ``mmap`` that page-faults on first touch). Here the same operations, in the same order
(so the same values up to the association of a few constant products), run in place on blocks of ``_BLOCK``
elements that stay in the CPU cache, with one fresh array: the result. Float16 (computed in float32 by the
declarations), non-contiguous or mismatched inputs go to the declaration.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..autograd.op import Context, register_override
from . import _workspace
from .activations import _ERF_TAYLOR, _ERFC_FIT, _INV_SQRT_2PI, _SQRT1_2, _TANH_C, _TANH_K, Gelu, GeluBackward

__all__ = ["gelu_numpy", "gelu_backward_numpy"]

_BLOCK = 1 << 15  # elements per block: 128 KiB of float32, a few scratch blocks fit in L2
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _blocks(fn: Callable[..., None], out: np.ndarray, n_scratch: int, *inputs: np.ndarray) -> np.ndarray:
    """Run ``fn(out_block, scratch_blocks, *input_blocks)`` over consecutive blocks of the flattened (C-contiguous)
    arrays; the scratch blocks are ``_workspace`` buffers of ``_BLOCK`` elements."""
    size = out.size
    n = min(size, _BLOCK)
    scratch = [_workspace.buffer(f"gelu.scratch{i}", (n,), out.dtype) for i in range(n_scratch)]
    flat_out = out.reshape(-1)
    flat_in = [a.reshape(-1) for a in inputs]
    for i in range(0, size, n):
        j = min(i + n, size)
        s = [b[:j - i] for b in scratch] if j - i < n else scratch
        fn(flat_out[i:j], s, *(a[i:j] for a in flat_in))
    return out


def _fits(*arrays: np.ndarray) -> bool:
    a = arrays[0]
    return (a.dtype in _FLOATS and a.ndim > 0 and all(b.dtype == a.dtype and b.shape == a.shape
                                                       and b.flags.c_contiguous for b in arrays))


def _erf_block(out: np.ndarray, z: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``activations._erf(z)`` into ``out`` with the scratch blocks ``a`` and ``b`` (the same polynomials)."""
    small = np.clip(z, -1.0, 1.0, out=a)  # x * P(x**2) for |x| < 1
    np.multiply(small, small, out=b)
    np.multiply(b, _ERF_TAYLOR[-1], out=out)
    out += _ERF_TAYLOR[-2]
    for c in _ERF_TAYLOR[-3::-1]:
        out *= b
        out += c
    out *= small
    big = np.abs(z, out=a)  # 1 - exp(-x**2) * R(u) for |x| >= 1, u = (48 / (2 + x) - 11) / 5
    np.clip(big, 1.0, 6.0, out=big)
    np.add(big, 2.0, out=b)
    np.divide(48.0, b, out=b)
    b -= 11.0
    b /= 5.0
    r = _horner_inplace(_ERFC_FIT, b)
    np.multiply(big, big, out=big)
    np.negative(big, out=big)
    np.exp(big, out=big)
    big *= r
    np.subtract(1.0, big, out=big)
    np.copysign(big, z, out=big)  # -big where z < 0 (the reference's where(x < 0, -big, big); z = +-0 is small)
    mask = np.abs(z) >= 1.0
    np.copyto(out, big, where=mask)
    return out


def _horner_inplace(coefs: tuple[float, ...], u: np.ndarray) -> np.ndarray:
    """``sum(coefs[i] * u**i)`` into a new block (small: the erfc fit's argument only)."""
    out = u * coefs[-1]
    out += coefs[-2]
    for c in coefs[-3::-1]:
        out *= u
        out += c
    return out


def _gelu_tanh_block(out: np.ndarray, s: list[np.ndarray], x: np.ndarray) -> None:
    t = np.multiply(x, _TANH_C, out=s[0])  # the declaration's order: ((c x) x) x
    t *= x
    t *= x
    t += x
    t *= _TANH_K
    np.tanh(t, out=t)
    t += 1.0
    np.multiply(x, 0.5, out=out)
    out *= t


def _gelu_erf_block(out: np.ndarray, s: list[np.ndarray], x: np.ndarray) -> None:
    z = np.multiply(x, _SQRT1_2, out=s[0])
    e = _erf_block(s[1], z, s[2], out)
    e += 1.0
    np.multiply(x, 0.5, out=out)
    out *= e


def _gelu_backward_tanh_block(out: np.ndarray, s: list[np.ndarray], x: np.ndarray, dy: np.ndarray) -> None:
    x2, t, u = s
    np.multiply(x, x, out=x2)
    np.multiply(x2, _TANH_C, out=t)  # t = tanh(sqrt(2/pi) (x + c x**2 x))
    t *= x
    t += x
    t *= _TANH_K
    np.tanh(t, out=t)
    np.multiply(t, t, out=u)  # 0.5 x (1 - t**2) * sqrt(2/pi) (1 + 3 c x**2)
    np.subtract(1.0, u, out=u)
    u *= x
    u *= 0.5
    x2 *= 3.0 * _TANH_C
    x2 += 1.0
    x2 *= _TANH_K
    u *= x2
    t += 1.0  # + 0.5 (1 + t)
    t *= 0.5
    t += u
    np.multiply(t, dy, out=out)


def _gelu_backward_erf_block(out: np.ndarray, s: list[np.ndarray], x: np.ndarray, dy: np.ndarray) -> None:
    z = np.multiply(x, _SQRT1_2, out=s[0])
    d = _erf_block(s[1], z, s[2], out)  # 0.5 (1 + erf(x / sqrt 2))
    d += 1.0
    d *= 0.5
    p = np.multiply(x, x, out=s[0])  # + x phi(x)
    p *= -0.5
    np.exp(p, out=p)
    p *= _INV_SQRT_2PI
    p *= x
    d += p
    np.multiply(d, dy, out=out)


def gelu_numpy(ctx: Context, x: Any, *, approximate: str = "none") -> Any:
    """``Gelu.forward`` for C-contiguous float32/float64 NumPy arrays (else ``NotImplemented``)."""
    if not _fits(x):
        return NotImplemented
    Gelu.save(ctx, None, x, approximate=approximate)
    if approximate == "tanh":
        return _blocks(_gelu_tanh_block, np.empty_like(x), 1, x)
    return _blocks(_gelu_erf_block, np.empty_like(x), 3, x)


def gelu_backward_numpy(ctx: Context, x: Any, dy: Any, *, approximate: str = "none") -> Any:
    """``GeluBackward.forward`` for C-contiguous float32/float64 NumPy arrays of one shape and dtype (else
    ``NotImplemented``)."""
    if not _fits(x, dy):
        return NotImplemented
    GeluBackward.save(ctx, None, x, dy, approximate=approximate)
    if approximate == "tanh":
        return _blocks(_gelu_backward_tanh_block, np.empty_like(dy), 3, x, dy)
    return _blocks(_gelu_backward_erf_block, np.empty_like(dy), 3, x, dy)


register_override(Gelu.name, "forward", "numpy", gelu_numpy)
register_override(GeluBackward.name, "forward", "numpy", gelu_backward_numpy)
