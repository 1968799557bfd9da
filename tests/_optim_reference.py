"""Independent NumPy re-derivations of the optimizer formulas (out of place, float64), written from PyTorch's
documented algorithms; the tests compare xpnn's in-place updates against them."""
import math

import numpy as np


def _grad(p, g, wd, maximize):
    g = -g if maximize else g
    return g + wd * p if wd else g


def sgd(p, g, st, *, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False):
    g = _grad(p, g, weight_decay, maximize)
    if momentum:
        if "buf" not in st:
            st["buf"] = g.copy()
        else:
            st["buf"] = momentum * st["buf"] + (1 - dampening) * g
        g = g + momentum * st["buf"] if nesterov else st["buf"]
    return p - lr * g


def adagrad(p, g, st, *, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False, initial=0.0):
    st["t"] = st.get("t", 0) + 1
    g = _grad(p, g, weight_decay, maximize)
    clr = lr / (1 + (st["t"] - 1) * lr_decay)
    st["sum"] = st.get("sum", np.full_like(p, initial)) + g * g
    return p - clr * g / (np.sqrt(st["sum"]) + eps)


def rmsprop(p, g, st, *, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False):
    g = _grad(p, g, weight_decay, maximize)
    st["sq"] = alpha * st.get("sq", np.zeros_like(p)) + (1 - alpha) * g * g
    if centered:
        st["ga"] = alpha * st.get("ga", np.zeros_like(p)) + (1 - alpha) * g
        avg = np.sqrt(st["sq"] - st["ga"] ** 2) + eps
    else:
        avg = np.sqrt(st["sq"]) + eps
    if momentum > 0:
        st["buf"] = momentum * st.get("buf", np.zeros_like(p)) + g / avg
        return p - lr * st["buf"]
    return p - lr * g / avg


def adam(p, g, st, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
         decoupled=False):
    b1, b2 = betas
    st["t"] = t = st.get("t", 0) + 1
    g = -g if maximize else g
    if decoupled:
        p = p * (1 - lr * weight_decay)
    elif weight_decay:
        g = g + weight_decay * p
    st["m"] = b1 * st.get("m", np.zeros_like(p)) + (1 - b1) * g
    st["v"] = b2 * st.get("v", np.zeros_like(p)) + (1 - b2) * g * g
    m_hat = st["m"] / (1 - b1**t)
    v = st["v"]
    if amsgrad:
        st["vmax"] = v = np.maximum(st.get("vmax", np.zeros_like(p)), v)
    return p - lr * m_hat / (np.sqrt(v) / math.sqrt(1 - b2**t) + eps)


REFERENCES = {"sgd": sgd, "adagrad": adagrad, "rmsprop": rmsprop, "adam": adam}

# every option branch of each algorithm: (reference keyword arguments)
CASES = {
    "sgd": [
        dict(lr=0.1),
        dict(lr=0.1, weight_decay=0.05),
        dict(lr=0.1, maximize=True),
        dict(lr=0.1, momentum=0.9),
        dict(lr=0.1, momentum=0.9, dampening=0.3),
        dict(lr=0.1, momentum=0.9, nesterov=True),
        dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05, maximize=True),
        dict(lr=0.1, momentum=0.8, dampening=0.5, weight_decay=0.05),
    ],
    "adagrad": [
        dict(lr=0.1),
        dict(lr=0.1, lr_decay=0.5),
        dict(lr=0.1, weight_decay=0.05),
        dict(lr=0.1, maximize=True, eps=1e-3),
        dict(lr=0.1, weight_decay=0.05, maximize=True, lr_decay=0.1, initial=0.3),
    ],
    "rmsprop": [
        dict(lr=0.01),
        dict(lr=0.01, centered=True),
        dict(lr=0.01, momentum=0.9),
        dict(lr=0.01, weight_decay=0.05, alpha=0.9),
        dict(lr=0.01, maximize=True),
        dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.05, maximize=True, eps=1e-3),
    ],
    "adam": [
        dict(lr=0.1),
        dict(lr=0.1, weight_decay=0.05),
        dict(lr=0.1, weight_decay=0.05, decoupled=True),
        dict(lr=0.1, amsgrad=True),
        dict(lr=0.1, maximize=True),
        dict(lr=0.1, betas=(0.5, 0.6), eps=1e-3, amsgrad=True, weight_decay=0.05, maximize=True),
        dict(lr=0.1, betas=(0.0, 0.0), weight_decay=0.1, decoupled=True, maximize=True),
    ],
}


def case_id(case):
    return ",".join(f"{k}={v}" for k, v in case.items())
