"""Every op of xpnn, declared once (forward, backward, per-call context) and written against the Python Array API.

Plain arrays in -> arrays of the same namespace out, with no graph: plain NumPy code can call these directly, and
CuPy arrays take the fused CUDA kernels where they exist (``xpnn.set_kernels_enabled(False)`` forces the generic
path). ``xpnn.Tensor`` in -> Tensors out, recording the graph that ``backward()`` walks. ``import xpnn.functional
as F`` (or ``from xpnn import F``).
"""
from . import activations as _activations
from .activations import *  # noqa: F401,F403 (every name in its __all__: a new activation needs no edit here)
from . import conv_numpy as _conv_numpy  # registers the NumPy fast paths of conv2d / max_pool2d  # noqa: F401
from . import recurrent_numpy as _recurrent_numpy  # registers the NumPy fast path of recurrence  # noqa: F401
from . import activations_numpy as _activations_numpy  # registers the NumPy fast paths of gelu  # noqa: F401
from . import normalization_numpy as _normalization_numpy  # registers the NumPy fast path of layer_norm  # noqa: F401
from .attention import scaled_dot_product_attention
from .concat import cat, chunk, concat, split, stack
from .conv import conv2d, conv2d_backward
from .dropout import dropout, dropout_mask
from .embedding import embedding, embedding_backward
from .elementwise import abs, add, astype, clip, div, exp, log, matmul, mul, neg, pow, sqrt, sub
from .linear import linear, linear_backward
from .losses import (
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_with_grad,
    cross_entropy,
    cross_entropy_with_grad,
    mse_loss,
    mse_loss_with_grad,
    nll_loss,
)
from .normalization import batch_norm, layer_norm
from .pooling import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
    max_pool2d_with_argmax,
)
from .recurrent import gru_cell, lstm_cell, masked_update, recurrence
from .reductions import max, mean, min, sum
from .selection import argwhere, gather, masked_fill, nonzero, tril, tril_mask, triu, triu_mask, where
from .shape import (broadcast_to, clone, contiguous, expand, expand_as, index, permute, permute_dims, reshape, squeeze,
                    sum_to, transpose, unsqueeze)
from .softmax import log_softmax, logsumexp, softmax, softmax_backward
from .targets import accuracy, one_hot
from .updates import adagrad_update, adam_update, rmsprop_update, sgd_update

__all__ = [
    "concat", "stack",
    "scaled_dot_product_attention",
    *_activations.__all__,
    "softmax", "log_softmax", "logsumexp", "softmax_backward", "linear", "linear_backward", "one_hot", "accuracy",
    "cross_entropy", "cross_entropy_with_grad", "nll_loss", "mse_loss", "mse_loss_with_grad",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_with_grad",
    "batch_norm", "dropout", "dropout_mask",
    "add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "abs", "clip", "astype", "matmul",
    "sum", "mean", "max", "min", "reshape", "permute_dims", "broadcast_to", "sum_to", "index",
    "adam_update", "sgd_update", "adagrad_update", "rmsprop_update",
    "cat", "split", "chunk", "unsqueeze", "squeeze", "transpose", "permute", "expand", "contiguous", "clone",
    "expand_as",
    "where", "masked_fill", "tril", "triu", "tril_mask", "triu_mask", "gather", "nonzero", "argwhere",
    "embedding", "embedding_backward", "layer_norm",
    "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_with_argmax", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_backward", "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "lstm_cell", "gru_cell", "recurrence", "masked_update",
]
