"""Layers, containers and losses, each with one ``forward`` over ``xpnn.functional`` ops.

On Tensors: ``loss = loss_fn(model(xpnn.tensor(x)), y); loss.backward()`` (autograd). On arrays (the explicit API,
sugar over the same recorded call): ``y = m(x)``; ``dx = m.backward(dy)`` adds parameter gradients into ``.grad``
and returns the input gradient; losses: ``loss = loss_fn(pred, target)``, ``dpred = loss_fn.backward()``.
A model's parameters and gradients live in one flat buffer each (every Parameter's ``.data``/``.grad`` is a view
into it), so an optimizer step is one pass.
"""
from . import activation as _activation
from .activation import *  # noqa: F401,F403 (every layer in its __all__: a new activation needs no edit here)
from .attention import MultiheadAttention
from .batchnorm import BatchNorm1d
from .batchnorm2d import BatchNorm2d
from .container import Identity, ModuleList, Residual, Sequential
from .conv import Conv2d
from .dropconnect import DropConnect
from .dropout import Dropout
from .embedding import Embedding
from .flatten import Flatten
from .layernorm import LayerNorm
from .linear import Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from .maxout import Maxout
from .explicit import Module
from .parameter import FlatBuffer, Parameter, flat_buffer_of
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .transformer import TransformerEncoder, TransformerEncoderLayer
from .transformer import Transformer, TransformerDecoder, TransformerDecoderLayer
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from . import utils
from .. import init  # nn.init.xavier_uniform_(...), as torch.nn.init

__all__ = [
    "Module", "Parameter", "FlatBuffer", "flat_buffer_of",
    "Linear", *_activation.__all__, "Maxout",
    "Dropout", "DropConnect", "BatchNorm1d", "Sequential", "Residual", "ModuleList", "Identity",
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss",
    "MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder",
    "TransformerDecoderLayer", "TransformerDecoder", "Transformer",
    "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten", "BatchNorm2d", "utils",
    "Embedding", "LayerNorm",
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
    "init",
]
