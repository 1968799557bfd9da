"""Optimizers with PyTorch's names, defaults and formulas; each updates a model's flat parameter buffer in one pass.

>>> opt = xpnn.optim.Adam(model.parameters(), lr=1e-3)
>>> loss_fn(model(x), y); model.backward(loss_fn.backward()); opt.step(); opt.zero_grad()
"""
from .adagrad import Adagrad
from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "lr_scheduler"]
