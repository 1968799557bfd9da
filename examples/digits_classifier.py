"""Train an MLP on the bundled 8x8 digits: preprocessing, fit with a progress bar and early stopping, test
accuracy, checkpoint save and reload. Runs on NumPy or CUDA (`--backend cuda`).

    python examples/digits_classifier.py [--backend numpy] [--epochs 40] [--save digits.npz] [--plot curves.png]
"""
import argparse

import numpy as np

import xpnn
from xpnn import data, nn, optim
from xpnn.train import EarlyStopping, evaluate, fit, predict

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])  # the whole first paragraph
parser.add_argument("--backend", default="numpy", choices=["numpy", "cpu", "cuda", "auto"],
                    help="array backend; cpu is numpy, auto = cuda when a GPU is present (default: numpy)")
parser.add_argument("--hidden", type=int, default=128, help="hidden layer width (default: 128)")
parser.add_argument("--epochs", type=int, default=40,
                    help="at most this many; early stopping (patience 5 on val_loss) may end sooner (default: 40)")
parser.add_argument("--batch-size", type=int, default=32, help="rows per step (default: 32)")
parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default: 3e-3)")
parser.add_argument("--dropconnect", type=float, default=0.0,
                    help="DropConnect probability of the hidden layer, in [0, 1) (default: 0)")
parser.add_argument("--cutout", type=int, default=0,
                    help="cutout square size in pixels for training batches, 0-8; not with --pca (default: 0, off)")
parser.add_argument("--pca", type=int, default=0,
                    help="keep this many whitened principal components, 1-64; not with --cutout (default: 0, all pixels)")
parser.add_argument("--seed", type=int, default=0, help="seed >= 0 (default: 0)")
parser.add_argument("--save", help="checkpoint path (the model is reloaded from it to check the predictions)")
parser.add_argument("--plot", help="write the training curves to this PNG (needs matplotlib)")
parser.add_argument("--no-progress", action="store_true")
args = parser.parse_args()
# every incompatible or out-of-range flag is rejected here, before any work
for flag, value, ok, want in (("--hidden", args.hidden, args.hidden >= 1, ">= 1"),
                              ("--epochs", args.epochs, args.epochs >= 1, ">= 1"),
                              ("--batch-size", args.batch_size, args.batch_size >= 1, ">= 1"),
                              ("--lr", args.lr, args.lr > 0, "> 0"),
                              ("--dropconnect", args.dropconnect, 0 <= args.dropconnect < 1, "in [0, 1)"),
                              ("--cutout", args.cutout, 0 <= args.cutout <= 8, "in 0..8"),
                              ("--pca", args.pca, 0 <= args.pca <= 64, "in 0..64"),
                              ("--seed", args.seed, args.seed >= 0, ">= 0")):
    if not ok:
        parser.error(f"argument {flag}: must be {want}, got {value}")
if args.pca and args.cutout:
    parser.error("--cutout blanks squares of the 8x8 images, --pca replaces the pixels by components: "
                 "use one of them")

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

early = EarlyStopping("val_loss", patience=5)
print("loss and val_loss: cross-entropy with label smoothing 0.1 (the training objective); "
      "test loss: plain cross-entropy")
history = fit(model, loss_fn, optimizer, X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
              validation_data=(X_val, y_val), callbacks=[early], progress=not args.no_progress, seed=args.seed,
              batch_transform=transform)
result = evaluate(model, nn.CrossEntropyLoss(), X_test, y_test)
if early.stopped_epoch is not None:
    ran = (f"early stopping after epoch {early.stopped_epoch} (no val_loss improvement for 5 epochs; the weights "
           f"of the best epoch, {early.best_epoch}, restored)")
else:
    ran = f"ran all {history.epochs} epoch{'s' if history.epochs != 1 else ''} (early stopping did not trigger)"
print(f"{ran}; test accuracy {result['accuracy']:.4f}, test loss (plain cross-entropy) {result['loss']:.4f}")

if args.plot:
    history.plot(args.plot, title=f"digits: MLP 64-{args.hidden}-10, Adam lr {args.lr:g}")
    print(f"curves written to {args.plot}")
if args.save:
    xpnn.save({"model": model.state_dict(), "scaler": scaler.state_dict()}, args.save,
              metadata={"hidden": args.hidden, "test_accuracy": result["accuracy"]})
    checkpoint, meta = xpnn.load(args.save, with_metadata=True)
    restored = make_model(args.seed + 1)  # different initial weights, replaced by the checkpoint's
    restored.load_state_dict(checkpoint["model"])
    same = np.array_equal(backend.to_numpy(predict(model, X_test)), backend.to_numpy(predict(restored, X_test)))
    print(f"saved {args.save} (xpnn {meta['xpnn_version']}); reloaded model gives identical predictions: {same}")
