"""The adding problem (Hochreiter & Schmidhuber, 1997), with sequences of different lengths: each step is a pair
(value in [0, 1), marker); exactly two steps of a sequence are marked, and the target is the sum of their values.
Guessing the mean (1.0) gives a mean squared error of about 0.167; an LSTM that carries the marked values to the
end of the sequence gets far below. The batch is packed (``pack_padded_sequence``, unsorted lengths), so the
padding never reaches the state; the prediction is read from the last layer's final state ``h_n[-1]``.

    python examples/adding_problem.py [--backend numpy|cpu|cuda|auto] [--steps 500] [--length 10]
"""
from __future__ import annotations

import argparse

import numpy as np

import xpnn
from xpnn import nn, optim
from xpnn.nn.utils.rnn import pack_padded_sequence


def make_batch(rng: np.random.Generator, batch: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs (length, batch, 2) zero-padded, lengths (batch,) in [length // 2, length], targets (batch, 1))."""
    lengths = rng.integers(length // 2, length + 1, size=batch)
    x = np.zeros((length, batch, 2), np.float32)
    y = np.zeros((batch, 1), np.float32)
    for b, n in enumerate(lengths):
        x[:n, b, 0] = rng.random(n)
        marked = rng.choice(n, size=2, replace=False)
        x[marked, b, 1] = 1.0
        y[b, 0] = x[marked, b, 0].sum()
    return x, lengths, y


class Adder(nn.Module):
    def __init__(self, hidden: int, backend: object) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2, hidden, backend=backend, seed=0)
        self.head = nn.Linear(hidden, 1, backend=backend, seed=1)

    def forward(self, x: xpnn.Tensor, lengths: np.ndarray) -> xpnn.Tensor:
        _, (h_n, _) = self.lstm(pack_padded_sequence(x, lengths, enforce_sorted=False))
        return self.head(h_n[-1])


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description="Train an LSTM on the adding problem (variable-length, packed).")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cpu", "cuda", "auto"],
                        help="array backend (default numpy)")
    parser.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    parser.add_argument("--length", type=int, default=10, help="longest sequence (default 10)")
    parser.add_argument("--hidden", type=int, default=32, help="LSTM hidden size (default 32)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.length < 4 or args.hidden < 1:
        parser.error("--steps and --hidden must be at least 1, --length at least 4")
    be = xpnn.get_backend(args.backend)
    rng = np.random.default_rng(0)
    model = Adder(args.hidden, be)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.MSELoss()
    for step in range(args.steps):
        x, lengths, y = make_batch(rng, 64, args.length)
        opt.zero_grad()
        loss = loss_fn(model(xpnn.tensor(be.asarray(x)), lengths), be.asarray(y))
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"{step:5d} {float(loss):.4f}")
    x, lengths, y = make_batch(np.random.default_rng(1), 512, args.length)
    with xpnn.no_grad():
        mse = float(np.mean((be.to_numpy(model(xpnn.tensor(be.asarray(x)), lengths).data) - y) ** 2))
    print(f"test mean squared error after {args.steps} steps: {mse:.4f} (guessing the mean: ~0.167)")
    return mse


if __name__ == "__main__":
    main()
