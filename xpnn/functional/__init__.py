"""Pure functions on arrays: forward and backward of every op, written once against the Python Array API.

Arrays in, arrays of the same namespace out: plain NumPy code can call these directly, and CuPy arrays take the
fused CUDA kernels where they exist (``xpnn.set_kernels_enabled(False)`` forces the generic path).
"""
from .activations import (
    elu,
    elu_backward,
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu_backward,
    selu,
    selu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from .conv import conv2d, conv2d_backward
from .linear import accuracy, linear, one_hot
from .losses import (
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_with_grad,
    cross_entropy,
    cross_entropy_with_grad,
    mse_loss,
    mse_loss_with_grad,
)
from .pooling import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
    max_pool2d_with_argmax,
)
from .softmax import log_softmax, logsumexp, softmax
from .updates import adagrad_update, adam_update, rmsprop_update, sgd_update

__all__ = [
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "relu", "relu_backward",
    "leaky_relu", "leaky_relu_backward", "elu", "elu_backward", "selu", "selu_backward",
    "softmax", "log_softmax", "logsumexp", "linear", "one_hot", "accuracy",
    "cross_entropy", "cross_entropy_with_grad", "mse_loss", "mse_loss_with_grad",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_with_grad",
    "adam_update", "sgd_update", "adagrad_update", "rmsprop_update",
    "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_with_argmax", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_backward", "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
]
