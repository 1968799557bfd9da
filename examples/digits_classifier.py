"""Train an MLP on the bundled 8x8 digits: preprocessing, fit with a progress bar and early stopping, test
accuracy, checkpoint save and reload. Runs on NumPy or CUDA (`--backend cuda`).

    python examples/digits_classifier.py [--backend numpy] [--epochs 40] [--save digits.npz] [--plot curves.png]
"""
import argparse

import numpy as np

import xpnn
from xpnn import data, nn, optim
from xpnn.train import EarlyStopping, evaluate, fit, predict

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--backend", default="numpy", choices=["numpy", "cuda", "auto"])
parser.add_argument("--hidden", type=int, default=128)
parser.add_argument("--epochs", type=int, default=40, help="at most this many (early stopping may end sooner)")
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--lr", type=float, default=3e-3)
parser.add_argument("--dropconnect", type=float, default=0.0, help="DropConnect probability of the hidden layer")
parser.add_argument("--cutout", type=int, default=0, help="cutout square size for training batches (0: off)")
parser.add_argument("--pca", type=int, default=0, help="keep this many principal components (0: all pixels)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--save", help="checkpoint path (the model is reloaded from it to check the predictions)")
parser.add_argument("--plot", help="write the training curves to this PNG (needs matplotlib)")
parser.add_argument("--no-progress", action="store_true")
args = parser.parse_args()

backend = xpnn.get_backend(args.backend)

# data: 1,797 images -> train / validation (for early stopping) / test, standardized with training statistics
X, y = data.load_digits()
X_train, X_test, y_train, y_test = data.train_test_split(X, y, 0.25, seed=args.seed, stratify=True)
X_train, X_val, y_train, y_val = data.train_test_split(X_train, y_train, 0.1, seed=args.seed, stratify=True)
scaler = data.Standardizer().fit(X_train)
X_train, X_val, X_test = (scaler.transform(a) for a in (X_train, X_val, X_test))
if args.pca:
    pca = data.PCA(args.pca, whiten=True).fit(X_train)
    X_train, X_val, X_test = (pca.transform(a) for a in (X_train, X_val, X_test))
print(f"train {X_train.shape}, validation {X_val.shape}, test {X_test.shape}; backend {backend.name}")


def make_model(seed):
    rng = np.random.default_rng(seed)
    d_in = X_train.shape[1]
    first = (data.DropConnect(d_in, args.hidden, p=args.dropconnect, backend=backend, seed=rng) if args.dropconnect
             else nn.Linear(d_in, args.hidden, backend=backend, seed=rng))
    return nn.Sequential(first, nn.ReLU(), nn.Linear(args.hidden, 10, backend=backend, seed=rng))


model = make_model(args.seed)
optimizer = optim.Adam(model.parameters(), lr=args.lr)
loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
transform = None
if args.cutout:  # cutout works on the flat rows of 8x8 images (not after PCA)
    rng = np.random.default_rng(args.seed)

    def transform(xb, yb):
        return data.cutout(xb, args.cutout, image_shape=(8, 8), seed=rng), yb

history = fit(model, loss_fn, optimizer, X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
              validation_data=(X_val, y_val), callbacks=[EarlyStopping("val_loss", patience=5)],
              progress=not args.no_progress, seed=args.seed, batch_transform=transform)
result = evaluate(model, nn.CrossEntropyLoss(), X_test, y_test)
print(f"stopped after {history.epochs} epochs; test accuracy {result['accuracy']:.4f}, test loss {result['loss']:.4f}")

if args.plot:
    history.plot(args.plot, title="digits")
    print(f"curves written to {args.plot}")
if args.save:
    xpnn.save({"model": model.state_dict(), "scaler": scaler.state_dict()}, args.save,
              metadata={"hidden": args.hidden, "test_accuracy": result["accuracy"]})
    checkpoint, meta = xpnn.load(args.save, with_metadata=True)
    restored = make_model(args.seed + 1)  # different initial weights, replaced by the checkpoint's
    restored.load_state_dict(checkpoint["model"])
    same = np.array_equal(backend.to_numpy(predict(model, X_test)), backend.to_numpy(predict(restored, X_test)))
    print(f"saved {args.save} (xpnn {meta['xpnn_version']}); reloaded model gives identical predictions: {same}")
