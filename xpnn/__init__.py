"""xpnn: neural networks written once against the Python Array API — NumPy on the CPU, CuPy (with fused CUDA
kernels) on NVIDIA GPUs, and any other array-API library.
"""
from ._dispatch import kernels_enabled, set_kernels_enabled, use_kernels
from ._version import __version__
from .backend import Backend, get_backend, set_backend, use_backend
from .debug import set_debug
from .errors import (
    BackendUnavailableError,
    CheckpointError,
    DTypeError,
    NamespaceMismatchError,
    NonFiniteError,
    ShapeError,
    XpnnError,
)
from . import data, functional, init, nn, optim, train
from .io import load, save

F = functional  # ``from xpnn import F`` works as ``import xpnn.functional as F`` (PyTorch's spelling)

__all__ = [
    "__version__", "Backend", "get_backend", "set_backend", "use_backend", "set_debug",
    "kernels_enabled", "set_kernels_enabled", "use_kernels", "functional", "F", "nn", "optim", "init", "data", "train",
    "save", "load",
    "XpnnError", "BackendUnavailableError", "ShapeError", "DTypeError", "NamespaceMismatchError",
    "NonFiniteError", "CheckpointError",
]
