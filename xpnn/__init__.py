"""xpnn: neural networks written once against the Python Array API — NumPy on the CPU, CuPy (with fused CUDA
kernels) on NVIDIA GPUs, and any other array-API library.
"""
from ._dispatch import kernels_enabled, set_kernels_enabled, use_kernels
from ._tensor import Tensor, grad, ones_like, tensor, zeros_like
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from ._version import __version__
from .backend import Backend, get_backend, set_backend, use_backend
from .debug import set_debug
from .errors import (
    BackendUnavailableError,
    CheckpointError,
    DTypeError,
    InplaceModifiedError,
    NamespaceMismatchError,
    NonFiniteError,
    ShapeError,
    XpnnError,
)
from . import autograd, data, functional, init, nn, optim, train
from . import amp, cuda, distributed, models, onnx  # xpnn.models.load_trained(...) etc. after a plain `import xpnn`
from . import functional as F
from .functional import argwhere, cat, chunk, nonzero, split, stack, tril, triu, where  # torch.cat, torch.where, ...
from .functional.cpu_threads import get_num_threads, set_num_threads  # torch.get_num_threads, ...
from .io import load, save
from .random import manual_seed

__all__ = [
    "Tensor", "tensor", "grad", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "autograd", "F",
    "__version__", "Backend", "get_backend", "set_backend", "use_backend", "set_debug",
    "kernels_enabled", "set_kernels_enabled", "use_kernels", "functional", "nn", "optim", "init", "data", "train",
    "amp", "cuda", "distributed", "models", "onnx",
    "save", "load", "manual_seed", "get_num_threads", "set_num_threads",
    "cat", "stack", "split", "chunk", "where", "nonzero", "argwhere", "tril", "triu", "zeros_like", "ones_like",
    "XpnnError", "BackendUnavailableError", "ShapeError", "DTypeError", "NamespaceMismatchError",
    "NonFiniteError", "CheckpointError", "InplaceModifiedError",
]
