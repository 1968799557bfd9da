"""Layers, containers and losses with an explicit ``forward``/``backward`` protocol (no autograd tape).

``y = m(x)``; ``dx = m.backward(dy)`` adds parameter gradients into ``.grad`` and returns the input gradient;
losses: ``loss = loss_fn(pred, target)``, ``dpred = loss_fn.backward()``. A model's parameters and gradients live
in one flat buffer each (every Parameter's ``.data``/``.grad`` is a view into it).
"""
from .activation import ELU, SELU, LeakyReLU, PReLU, ReLU, Sigmoid, Softmax, Tanh
from .batchnorm import BatchNorm1d
from .container import Residual, Sequential
from .dropconnect import DropConnect
from .dropout import Dropout
from .linear import Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .maxout import Maxout
from .module import Module
from .parameter import FlatBuffer, Parameter, flat_buffer_of

__all__ = [
    "Module", "Parameter", "FlatBuffer", "flat_buffer_of",
    "Linear", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "PReLU", "ELU", "SELU", "Softmax", "Maxout",
    "Dropout", "DropConnect", "BatchNorm1d", "Sequential", "Residual",
    "CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss",
]
