"""The layer math of the first version, kept under its old import path: each name now lives next to its op
(``linear``, ``activations``, ``softmax``, ``normalization``, ``dropout``)."""
from .activations import maxout, maxout_backward, prelu, prelu_backward
from .dropout import dropout_mask, make_rng
from .linear import linear_backward
from .normalization import batch_norm_backward, batch_norm_eval, batch_norm_train
from .softmax import softmax_backward

__all__ = [
    "linear_backward",
    "softmax_backward",
    "prelu",
    "prelu_backward",
    "maxout",
    "maxout_backward",
    "batch_norm_train",
    "batch_norm_eval",
    "batch_norm_backward",
    "dropout_mask",
    "make_rng",
]
