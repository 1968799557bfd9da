"""The two-layer sigmoid network of the source notes (seeds/000), on xpnn.functional: NumPy or CUDA.

The same program as two_layer_numpy.py (`diff` the two files). What changed, the drop-in path from NumPy code:
  1. `backend = xpnn.get_backend(args.backend)` picks NumPy or CuPy (GPU); the data is still drawn with NumPy's
     generator and moved there once with `backend.asarray` (the operators @, -, * work on either);
  2. the sigmoid, its backward and the loss with its gradient come from xpnn.functional (F): one call each,
     numerically stable, and fused CUDA kernels on a GPU;
  3. `float(loss)` reads the scalar back (a device sync on a GPU), so it happens only when printing.

    python examples/two_layer_xpnn.py [--backend numpy|cpu|cuda|auto] [--steps 2000] [--plot loss.png]
"""
import argparse

import numpy as np

import xpnn
import xpnn.functional as F

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])  # the whole first paragraph
parser.add_argument("--n", type=int, default=64, help="batch size")
parser.add_argument("--d-in", type=int, default=1000)
parser.add_argument("--hidden", type=int, default=100)
parser.add_argument("--d-out", type=int, default=10)
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--lr", type=float, default=1e-4)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--backend", default="numpy", choices=["numpy", "cpu", "cuda", "auto"])
parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
parser.add_argument("--plot", help="save the loss curve to this PNG (needs matplotlib)")
args = parser.parse_args()

backend = xpnn.get_backend(args.backend)

# sizes and random data: x (n, d_in), y (n, d_out); weights w1 (d_in, h), w2 (h, d_out)
n, d_in, h, d_out = args.n, args.d_in, args.hidden, args.d_out
rng = np.random.default_rng(args.seed)
x, y = rng.standard_normal((n, d_in)), rng.standard_normal((n, d_out))
w1, w2 = rng.standard_normal((d_in, h)), rng.standard_normal((h, d_out))
x, y, w1, w2 = (backend.asarray(a, dtype=args.dtype) for a in (x, y, w1, w2))

losses = []
for t in range(args.steps):
    # forward
    hid = F.sigmoid(x @ w1)  # (n, h)
    y_pred = hid @ w2  # (n, d_out)
    loss, grad_y_pred = F.mse_loss_with_grad(y_pred, y, reduction="sum")  # loss and 2 * (y_pred - y)
    if t % 100 == 0 or t == args.steps - 1:
        losses.append(float(loss))
        print(t, float(loss))

    # backward
    grad_w2 = hid.T @ grad_y_pred  # (h, d_out)
    grad_hid = grad_y_pred @ w2.T  # (n, h)
    grad_w1 = x.T @ F.sigmoid_backward(hid, grad_hid)  # (d_in, h)

    # gradient descent
    w1 -= args.lr * grad_w1
    w2 -= args.lr * grad_w2

print(f"backend {backend.name}, dtype {args.dtype}")
if args.plot:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([t for t in range(args.steps) if t % 100 == 0 or t == args.steps - 1], losses)
    ax.set_yscale("log")  # the loss falls by orders of magnitude: a linear axis hides all but the first steps
    ax.set_xlabel("step")
    ax.set_ylabel("loss (sum of squared errors, log scale)")
    ax.set_title(f"two-layer sigmoid net (seeds/000), xpnn.functional on {backend.name}, {args.dtype}")
    fig.savefig(args.plot)
    print(f"loss curve written to {args.plot}")
