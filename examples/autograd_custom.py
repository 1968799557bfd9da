"""A model that no module provides, written with Tensors: a residual block and a custom loss as expressions,
trained with ``loss.backward()`` on the bundled digits (is it a 0-4 or a 5-9?), then a Hessian-vector product of
the loss checked against finite differences of the gradient.

    python examples/autograd_custom.py [--backend numpy|cpu|cuda|auto] [--epochs 30]
"""
from __future__ import annotations

import argparse

import numpy as np

import xpnn
import xpnn.functional as F
from xpnn import data, nn, optim


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description="Train a residual block with a custom loss written as Tensor "
                                                 "expressions; check a Hessian-vector product.")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cpu", "cuda", "auto"],
                        help="array backend (default numpy)")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the training split (default 30)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    be = xpnn.get_backend(args.backend)

    X, y = data.load_digits()
    X_train, X_test, y_train, y_test = data.train_test_split(X, y, 0.25, seed=0, stratify=True)
    scaler = data.Standardizer().fit(X_train)
    X_train, X_test = be.asarray(scaler.transform(X_train)), be.asarray(scaler.transform(X_test))
    t_train = be.asarray((y_train >= 5).astype(np.float32))
    t_test = (y_test >= 5).astype(np.float32)

    proj = nn.Linear(64, 32, backend=be, seed=0)
    block = nn.Linear(32, 32, backend=be, seed=1)
    head = nn.Linear(32, 1, backend=be, seed=2)
    params = [p for m in (proj, block, head) for p in m.parameters()]
    opt = optim.Adam(params, lr=3e-3)

    def logits(x: xpnn.Tensor) -> xpnn.Tensor:
        h = F.relu(proj(x))
        h = h + F.tanh(block(h))  # residual block, as an expression
        return head(h).reshape(-1)

    def loss_of(x: xpnn.Tensor, t: object) -> xpnn.Tensor:
        z = logits(x)
        # a custom loss: logistic loss with a margin penalty on confident mistakes, plus L2 on the block
        bce = F.binary_cross_entropy_with_logits(z, t)
        wrong_sign = F.relu(-(z * (t * 2.0 - 1.0)))
        return bce + 0.1 * (wrong_sign ** 2).mean() + 1e-4 * (block.weight ** 2).sum()

    for epoch in range(args.epochs):
        for xb, tb in data.batches(X_train, t_train, batch_size=64, seed=epoch):
            opt.zero_grad()
            loss = loss_of(xpnn.tensor(xb), tb)
            loss.backward()
            opt.step()
    with xpnn.no_grad():
        z = logits(xpnn.tensor(X_test)).numpy()
    acc = float(np.mean((z > 0) == (t_test > 0.5)))
    print(f"test accuracy (0-4 vs 5-9) after {args.epochs} epoch{'s' if args.epochs != 1 else ''}: {acc:.4f}")

    # a Hessian-vector product of the loss on a batch, against finite differences of the gradient (float64)
    for m in (proj, block, head):
        m.to(dtype="float64")
    params = [p for m in (proj, block, head) for p in m.parameters()]
    xb = xpnn.tensor(be.asarray(X_train[:128], dtype="float64"))
    tb = be.asarray(t_train[:128], dtype="float64")
    rng = np.random.default_rng(0)
    directions = [be.asarray(rng.normal(size=p.shape)) for p in params]
    grads = xpnn.grad(loss_of(xb, tb), params, create_graph=True)
    hvp = xpnn.grad(sum((g * v).sum() for g, v in zip(grads, directions)), params)
    eps = 1e-6
    for p, v in zip(params, directions):
        p.data = p.data + eps * v
    up = [g.numpy() for g in xpnn.grad(loss_of(xb, tb), params)]
    for p, v in zip(params, directions):
        p.data = p.data - 2 * eps * v
    down = [g.numpy() for g in xpnn.grad(loss_of(xb, tb), params)]
    for p, v in zip(params, directions):
        p.data = p.data + eps * v
    fd = np.concatenate([((u - d) / (2 * eps)).ravel() for u, d in zip(up, down)])
    hv = np.concatenate([h.numpy().ravel() for h in hvp])
    rel = float(np.linalg.norm(hv - fd) / np.linalg.norm(fd))
    print(f"Hessian-vector product vs finite differences: relative difference {rel:.2e}")
    return acc


if __name__ == "__main__":
    main()
