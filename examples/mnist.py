"""Train an MLP on MNIST (or Fashion-MNIST) from the four IDX files, on NumPy or CUDA.

Download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and
t10k-labels-idx1-ubyte.gz into one folder, then:

    python examples/mnist.py --path ~/data/mnist [--backend cuda] [--epochs 10] [--hidden 512,512]

(or `xpnn train --dataset mnist:PATH`). A 784-512-512-10 ReLU network with Adam reaches about 98% test accuracy.
`--model cnn` trains LeNet-5 (two 5x5 convolutions with max pooling, then 120-84-10) on the 1x28x28 images instead.
"""
import argparse

import numpy as np

import xpnn
from xpnn import data, nn, optim
from xpnn.train import evaluate, fit

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])  # the whole first paragraph
parser.add_argument("--path", required=True, help="folder with the four MNIST IDX files (gzip or not)")
parser.add_argument("--backend", default="auto", choices=["numpy", "cpu", "cuda", "auto"],
                    help="array backend; cpu is numpy (default: auto = cuda when a GPU is present)")
parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"], help="mlp, or cnn (LeNet-5)")
parser.add_argument("--hidden", default="512,512", help="hidden widths, comma-separated")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--dropout", type=float, default=0.2)
parser.add_argument("--limit", type=int, default=0, help="use only the first N training images (0: all)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--save", help="checkpoint path")
parser.add_argument("--plot", help="training curves PNG (needs matplotlib)")
parser.add_argument("--no-progress", action="store_true")
args = parser.parse_args()

backend = xpnn.get_backend(args.backend)
(X_train, y_train), (X_test, y_test) = data.load_mnist(args.path)  # float32 in [0, 1], (n, 784)
if args.limit:
    X_train, y_train = X_train[: args.limit], y_train[: args.limit]
scaler = data.Standardizer().fit(X_train)
# move the data to the backend once; fit and evaluate then use it in place
X_train, X_test = backend.asarray(scaler.transform(X_train)), backend.asarray(scaler.transform(X_test))
y_train, y_test = backend.asarray(y_train), backend.asarray(y_test)
print(f"MNIST: {X_train.shape[0]} train / {X_test.shape[0]} test images; backend {backend.name}")

rng = np.random.default_rng(args.seed)
sizes = [784] + [int(h) for h in args.hidden.split(",") if h] + [10]
if args.model == "cnn":
    from xpnn.models import lenet5

    X_train, X_test = X_train.reshape(-1, 1, 28, 28), X_test.reshape(-1, 1, 28, 28)  # (N, C, H, W)
    model = lenet5(10, backend=backend, seed=args.seed)
else:
    layers = []
    for d_in, d_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(d_in, d_out, backend=backend, seed=rng), nn.ReLU()]
        if args.dropout:
            layers.append(nn.Dropout(args.dropout, seed=int(rng.integers(2**31))))
    model = nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1], backend=backend, seed=rng))
optimizer = optim.Adam(model.parameters(), lr=args.lr)

history = fit(model, nn.CrossEntropyLoss(), optimizer, X_train, y_train, epochs=args.epochs,
              batch_size=args.batch_size, validation_data=(X_test, y_test), progress=not args.no_progress,
              seed=args.seed)
result = evaluate(model, nn.CrossEntropyLoss(), X_test, y_test)
print(f"test accuracy {result['accuracy']:.4f} after {history.epochs} epoch{'s' if history.epochs != 1 else ''} "
      f"({sum(history['time']):.1f} s on {backend.name})")
if args.save:
    xpnn.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()},
              args.save, metadata={"sizes": sizes, "model": args.model})
    print(f"saved {args.save}")
if args.plot:
    history.plot(args.plot, title="MNIST")
    print(f"curves written to {args.plot}")
