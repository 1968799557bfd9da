"""The straightforward NumPy versions of the benchmarked math: what a person writes from the textbook formulas
(fresh arrays for every intermediate, one optimizer loop per tensor). The benchmarks compare xpnn against these.

All functions take and return float32 NumPy arrays; shapes are given in each docstring.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["sigmoid_backward", "softmax", "logsumexp", "cross_entropy_with_grad", "Adam", "SGD", "MLP", "SeedNet",
           "seed_net_data"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), the textbook expression."""
    return 1.0 / (1.0 + np.exp(-x))


def linear_forward_backward(x: np.ndarray, w: np.ndarray, b: np.ndarray,
                            dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """y = x @ w.T + b and its gradients: (y, dx = dy @ w, dw = dy.T @ x, db = dy.sum(0))."""
    return x @ w.T + b, dy @ w, dy.T @ x, dy.sum(axis=0)


def sigmoid_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dx = dy * y * (1 - y), any shape."""
    return dy * y * (1 - y)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the rows of x (N, C), with the row max subtracted."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logsumexp(x: np.ndarray) -> np.ndarray:
    """log(sum(exp(x))) of each row of x (N, C) -> (N,), with the row max subtracted."""
    m = x.max(axis=1, keepdims=True)
    return (np.log(np.exp(x - m).sum(axis=1, keepdims=True)) + m)[:, 0]


def cross_entropy_with_grad(logits: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean softmax cross-entropy of logits (N, C) with class targets (N,): (loss, dloss/dlogits (N, C)).

    Softmax with the max subtracted, then -log p[target], and the gradient (p - onehot) / N.
    """
    n, c = logits.shape
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(n), target]).mean()
    onehot = np.eye(c, dtype=logits.dtype)[target]
    return loss, (p - onehot) / n


class Adam:
    """Adam with bias correction, one tensor at a time: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr * m_hat / (sqrt(v_hat) + eps) with m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)."""

    def __init__(self, params: Sequence[np.ndarray], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, grads: Sequence[np.ndarray]) -> None:
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g ** 2
            m_hat = self.m[i] / (1 - self.b1 ** self.t)
            v_hat = self.v[i] / (1 - self.b2 ** self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def state(self) -> list[np.ndarray]:
        return self.m + self.v


class SGD:
    """SGD with momentum, one tensor at a time (``torch.optim.SGD``): buf = g on the first step, else
    buf = momentum * buf + g; p -= lr * buf."""

    def __init__(self, params: Sequence[np.ndarray], lr: float = 1e-2, momentum: float = 0.9):
        self.params = list(params)
        self.lr, self.momentum = lr, momentum
        self.buf: list[np.ndarray] = []

    def step(self, grads: Sequence[np.ndarray]) -> None:
        if not self.buf:
            self.buf = [g.copy() for g in grads]
        else:
            for i, g in enumerate(grads):
                self.buf[i] = self.momentum * self.buf[i] + g
        for p, b in zip(self.params, self.buf):
            p -= self.lr * b

    def state(self) -> list[np.ndarray]:
        return self.buf


class MLP:
    """ReLU network (sizes e.g. (784, 512, 512, 10)) with softmax cross-entropy and Adam; PyTorch's layout and
    initialisation (weight (out, in), uniform(-1/sqrt(in), 1/sqrt(in)) for weights and biases)."""

    def __init__(self, sizes: Sequence[int], seed: int = 0, lr: float = 1e-3):
        rng = np.random.default_rng(seed)
        self.weights, self.biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(fan_in)
            self.weights.append(rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32))
            self.biases.append(rng.uniform(-bound, bound, fan_out).astype(np.float32))
        self.opt = Adam(self.weights + self.biases, lr=lr)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One step on a batch x (N, sizes[0]), y (N,) integer classes; returns the loss."""
        acts = [x]
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = h @ w.T + b
            h = np.maximum(z, 0) if i < last else z
            acts.append(h)
        loss, dz = cross_entropy_with_grad(acts[-1], y)
        gw, gb = [None] * len(self.weights), [None] * len(self.weights)
        for i in range(last, -1, -1):
            gw[i] = dz.T @ acts[i]
            gb[i] = dz.sum(axis=0)
            if i > 0:
                dz = (dz @ self.weights[i]) * (acts[i] > 0)
        self.opt.step(gw + gb)
        return float(loss)

    def state(self) -> list[np.ndarray]:
        return self.weights + self.biases + self.opt.state()


def seed_net_data(n: int = 64, d_in: int = 1000, h: int = 100, d_out: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Data and weights of the source notes' two-layer network: x (n, d_in), y (n, d_out), w1 (d_in, h), w2 (h, d_out).

    The notes draw w1 from randn; here w1 is scaled by 1/sqrt(d_in) so ``x @ w1`` stays O(1): with unscaled
    weights ``exp(-x @ w1)`` reaches 1e-44, a subnormal float32 that would slow every later multiply.
    """
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((n, d_in), dtype=np.float32),
        "y": rng.standard_normal((n, d_out), dtype=np.float32),
        "w1": rng.standard_normal((d_in, h), dtype=np.float32) / np.float32(math.sqrt(d_in)),
        "w2": rng.standard_normal((h, d_out), dtype=np.float32),
    }


class SeedNet:
    """The two-layer sigmoid network of the source notes: h = sigmoid(x @ w1) (n, h), y_pred = h @ w2 (n, d_out),
    summed squared error, plain gradient descent (lr 1e-4), no biases. Arrays from ``seed_net_data`` (copied)."""

    def __init__(self, data: dict[str, np.ndarray], lr: float = 1e-4):
        self.x, self.y = data["x"], data["y"]
        self.w1, self.w2 = data["w1"].copy(), data["w2"].copy()
        self.lr = lr

    def train_step(self) -> float:
        h = 1 / (1 + np.exp(np.dot(-self.x, self.w1)))
        y_pred = np.dot(h, self.w2)
        loss = np.square(y_pred - self.y).sum()
        grad_y_pred = 2 * (y_pred - self.y)
        grad_w2 = np.dot(h.T, grad_y_pred)
        grad_h = np.dot(grad_y_pred, self.w2.T)
        grad_w1 = np.dot(self.x.T, grad_h * h * (np.ones(h.shape, dtype=h.dtype) - h))
        self.w1 -= self.lr * grad_w1
        self.w2 -= self.lr * grad_w2
        return float(loss)

    def state(self) -> list[np.ndarray]:
        return [self.w1, self.w2]
