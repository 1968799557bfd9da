"""xpnn.data: bundled digits, IDX/MNIST reading, batching, splits, preprocessing, cutout and mixup."""
from __future__ import annotations

import gzip

import array_api_strict as xs
import numpy as np
import pytest

import xpnn.data as D
from xpnn.errors import DTypeError, ShapeError
from test_gradcheck import numeric_grad  # central differences, float64


# --- digits ------------------------------------------------------------------------------------------------------

def test_load_digits_shapes_dtypes_and_values():
    X, y = D.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.array_equal(np.bincount(y), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    raw, _ = D.load_digits(raw=True)
    assert raw.dtype == np.uint8 and raw.max() == 16
    assert np.array_equal(raw.astype(np.float32) / 16, X)
    imgs, _ = D.load_digits(images=True)
    assert imgs.shape == (1797, 8, 8) and np.array_equal(imgs.reshape(1797, 64), X)


def test_load_digits_matches_known_first_image():
    raw, y = D.load_digits(raw=True, images=True)
    # the first optdigits test image is a 0 (same values as sklearn.datasets.load_digits().images[0])
    assert y[0] == 0
    assert raw[0, 0].tolist() == [0, 0, 5, 13, 9, 1, 0, 0]
    assert raw[0, 7].tolist() == [0, 0, 6, 13, 10, 0, 0, 0]


# --- IDX / MNIST -------------------------------------------------------------------------------------------------

def _write_mnist(folder, n_train=12, n_test=5, gz=True, variant=False):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        name = stem.replace("-idx", ".idx") if variant else stem
        D.write_idx(folder / (name + (".gz" if gz else "")), arr)
    return arrays


@pytest.mark.parametrize("gz,variant", [(True, False), (False, False), (False, True)])
def test_load_mnist_reads_idx_files(tmp_path, gz, variant):
    arrays = _write_mnist(tmp_path, gz=gz, variant=variant)
    (Xtr, ytr), (Xte, yte) = D.load_mnist(tmp_path)
    assert Xtr.shape == (12, 784) and Xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert Xte.shape == (5, 784) and yte.shape == (5,)
    assert np.array_equal(Xtr, arrays["train-images-idx3-ubyte"].reshape(12, 784).astype(np.float32) / 255)
    assert np.array_equal(yte, arrays["t10k-labels-idx1-ubyte"])
    (raw, _), _ = D.load_mnist(tmp_path, raw=True, flatten=False)
    assert raw.dtype == np.uint8 and np.array_equal(raw, arrays["train-images-idx3-ubyte"])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip_all_types(tmp_path, dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    D.write_idx(tmp_path / "a.idx", a)
    b = D.read_idx(tmp_path / "a.idx")
    assert b.dtype == np.dtype(dtype) and np.array_equal(a, b)


def test_load_mnist_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        D.load_mnist(tmp_path / "nope")
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        D.load_mnist(tmp_path)


def test_idx_truncated_and_corrupt_files(tmp_path):
    a = np.arange(100, dtype=np.uint8).reshape(10, 10)
    D.write_idx(tmp_path / "a", a)
    data = (tmp_path / "a").read_bytes()
    (tmp_path / "short").write_bytes(data[:-7])
    with pytest.raises(D.DatasetError, match="truncated or corrupt"):
        D.read_idx(tmp_path / "short")
    (tmp_path / "header").write_bytes(data[:6])
    with pytest.raises(D.DatasetError, match="header"):
        D.read_idx(tmp_path / "header")
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(D.DatasetError, match="not an IDX file"):
        D.read_idx(tmp_path / "junk")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(data)[:-10])
    with pytest.raises(D.DatasetError, match="damaged gzip"):
        D.read_idx(tmp_path / "bad.gz")
    assert isinstance(D.DatasetError("x"), ValueError)


def test_load_mnist_inconsistent_counts(tmp_path):
    _write_mnist(tmp_path)
    D.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(D.DatasetError, match="do not match"):
        D.load_mnist(tmp_path)


# --- batches / split -----------------------------------------------------------------------------------------------

def test_batches_cover_every_row_once():
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    got = list(D.batches(X, y, 4, seed=0))
    assert [len(b) for b, _ in got] == [4, 4, 2]
    ys = np.concatenate([yb for _, yb in got])
    assert sorted(ys.tolist()) == list(range(10)) and ys.tolist() != list(range(10))
    for xb, yb in got:  # rows stay paired with their labels
        assert np.array_equal(xb[:, 0], 2 * yb)
    assert [len(b) for b, _ in D.batches(X, y, 4, drop_last=True)] == [4, 4]
    plain = np.concatenate([yb for _, yb in D.batches(X, y, 3, shuffle=False)])
    assert plain.tolist() == list(range(10))


def test_batches_seeding():
    X = np.arange(50.0).reshape(50, 1)
    order = lambda seed: np.concatenate([b[:, 0] for b, _ in D.batches(X, None, 7, seed=seed)])  # noqa: E731
    assert np.array_equal(order(3), order(3))
    rng = np.random.default_rng(3)
    assert not np.array_equal(order(rng), order(rng))  # a Generator gives a new order per epoch


def test_batches_errors():
    with pytest.raises(ValueError, match="3 samples but y has 2"):
        next(D.batches(np.zeros((3, 2)), np.zeros(2), 2))
    with pytest.raises(ValueError, match="batch_size"):
        next(D.batches(np.zeros((3, 2)), None, 0))


def test_batches_array_api_strict():
    X = xs.reshape(xs.arange(12, dtype=xs.float32), (6, 2))
    y = xs.arange(6)
    out = list(D.batches(X, y, 4, seed=1))
    assert all(type(b) is type(X) for b, _ in out)
    assert sorted(np.concatenate([np.asarray(yb) for _, yb in out]).tolist()) == list(range(6))


def test_train_test_split_plain_and_stratified():
    X, y = D.load_digits()
    Xtr, Xte, ytr, yte = D.train_test_split(X, y, 0.25, seed=0)
    assert Xtr.shape == (1347, 64) and Xte.shape == (450, 64)  # ceil(0.25 * 1797) test rows, as scikit-learn
    both = np.concatenate([Xtr, Xte])
    assert np.array_equal(np.sort(both, axis=0), np.sort(X, axis=0))
    Xtr, Xte, ytr, yte = D.train_test_split(X, y, 0.2, seed=1, stratify=True)
    share = np.bincount(yte, minlength=10) / np.bincount(y)
    assert np.all(np.abs(share - 0.2) < 0.01)
    a = D.train_test_split(X, y, 100, shuffle=False)
    assert np.array_equal(a[1], X[-100:]) and np.array_equal(a[2], y[:-100])
    with pytest.raises(ValueError, match="test_size"):
        D.train_test_split(X, y, 1.5)
    with pytest.raises(ValueError, match="test rows"):
        D.train_test_split(X, y, 1797)


def test_train_test_split_stratified_rare_classes_gives_the_asked_size():
    y = np.array([0] * 50 + [1] * 50 + [2, 2, 3, 3], dtype=np.int64)
    X = np.arange(y.size, dtype=np.float32)[:, None]
    for test_size, n_test in ((0.25, 26), (0.5, 52), (10, 10)):
        Xtr, Xte, ytr, yte = D.train_test_split(X, y, test_size, seed=0, stratify=True)
        assert yte.size == n_test and ytr.size == y.size - n_test
        assert np.array_equal(np.sort(np.concatenate([Xtr, Xte])[:, 0]), X[:, 0])
        assert abs(np.sum(yte == 0) - np.sum(yte == 1)) <= 1
    # a class of one member cannot be in both parts: scikit-learn's error, not a silent test-only class
    with pytest.raises(ValueError, match=r"least populated classes in y have only 1 member.*members are: \[2, 3\]"):
        D.train_test_split(X[:102], np.array([0] * 50 + [1] * 50 + [2, 3]), 0.25, seed=0, stratify=True)
    with pytest.raises(ValueError, match="least populated"):
        D.train_test_split(np.zeros((10, 1), np.float32), np.arange(10), 0.3, seed=0, stratify=True)
    with pytest.raises(ShapeError, match=r"stratify needs class labels of shape \(n,\)"):
        D.train_test_split(X, np.eye(4, dtype=np.int64)[y], 0.25, stratify=True)


def test_train_test_split_array_api_strict():
    X = xs.reshape(xs.arange(40, dtype=xs.float64), (20, 2))
    y = xs.asarray([0, 1] * 10)
    Xtr, Xte, ytr, yte = D.train_test_split(X, y, 0.5, seed=0, stratify=True)
    assert type(Xtr) is type(X) and Xte.shape == (10, 2)
    assert np.bincount(np.asarray(yte)).tolist() == [5, 5]


# --- preprocessing -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("xp", [np, xs], ids=["numpy", "array_api_strict"])
def test_standardizer(xp):
    rng = np.random.default_rng(0)
    raw = rng.normal(3.0, 2.0, (200, 5)).astype(np.float64)
    raw[:, 2] = 7.0  # constant column: centred, not divided by zero
    X = xp.asarray(raw)
    s = D.Standardizer().fit(X)
    Z = np.asarray(s.transform(X))
    assert np.allclose(Z.mean(0), 0, atol=1e-12)
    assert np.allclose(Z.std(0)[[0, 1, 3, 4]], 1) and np.all(Z[:, 2] == 0)
    assert np.allclose(np.asarray(s.inverse_transform(s.transform(X))), raw)
    s2 = D.Standardizer().load_state_dict({k: np.asarray(v) for k, v in s.state_dict().items()}).to(xp)
    assert np.array_equal(np.asarray(s2.transform(X)), Z)


def test_standardizer_constant_float32_columns_are_only_centred():
    # a float32 mean of 1000 copies of 0.1 (or 1e4 + 0.3) is off by a few ulps: the std must still be 0
    X = np.tile(np.float32([0.1, 1e4 + 0.3, 0.0]), (1000, 1))
    X[:, 2] = np.linspace(0, 1, 1000, dtype=np.float32)
    s = D.Standardizer().fit(X)
    Z = s.transform(X)
    assert np.all(Z[:, :2] == 0) and s.scale_[0] == 1 and s.scale_[1] == 1
    assert np.isclose(Z[:, 2].std(), 1, atol=1e-5) and abs(Z[:, 2].mean()) < 1e-5


def test_standardizer_errors():
    s = D.Standardizer()
    with pytest.raises(RuntimeError, match="fit"):
        s.transform(np.zeros((2, 3), np.float32))
    s.fit(np.ones((4, 3), np.float32))
    with pytest.raises(ShapeError, match="fitted on 3 features"):
        s.transform(np.zeros((2, 4), np.float32))
    with pytest.raises(DTypeError, match="floating"):
        s.fit(np.ones((4, 3), np.int64))


@pytest.mark.parametrize("xp", [np, xs], ids=["numpy", "array_api_strict"])
def test_pca_matches_eigendecomposition(xp):
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    pca = D.PCA(3).fit(xp.asarray(raw))
    cov = np.cov(raw, rowvar=False)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:3]
    assert np.allclose(np.asarray(pca.explained_variance_), evals[order])
    comps = np.asarray(pca.components_)
    assert np.allclose(np.abs(comps @ evecs[:, order]), np.eye(3), atol=1e-8)
    # sign convention: the largest-magnitude entry of every component is positive
    assert np.all(comps[np.arange(3), np.abs(comps).argmax(1)] > 0)
    Z = np.asarray(D.PCA(3, whiten=True).fit_transform(xp.asarray(raw)))
    assert np.allclose(np.cov(Z, rowvar=False), np.eye(3), atol=1e-6)
    full = D.PCA(6).fit(xp.asarray(raw))
    assert np.allclose(np.asarray(full.inverse_transform(full.transform(xp.asarray(raw)))), raw)


def test_pca_variance_fraction_and_errors():
    X, _ = D.load_digits()
    pca = D.PCA(0.9).fit(X)
    ratio = np.asarray(pca.explained_variance_ratio_)
    assert ratio.sum() >= 0.9 and ratio[:-1].sum() < 0.9
    assert pca.transform(X).shape == (1797, pca.components_.shape[0])
    with pytest.raises(ValueError, match="exceeds"):
        D.PCA(65).fit(X)
    with pytest.raises(ValueError, match="fraction"):
        D.PCA(1.5)


def test_one_hot_is_the_functional_one():
    from xpnn import functional as F

    assert D.one_hot is F.one_hot
    assert D.one_hot(np.array([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]


# --- cutout / mixup -----------------------------------------------------------------------------------------------

def test_cutout_blanks_one_square_per_image():
    X = np.ones((50, 64), np.float32)
    out = D.cutout(X, 3, image_shape=(8, 8), seed=0)
    assert out.shape == X.shape and np.all(X == 1)  # input untouched
    holes = (out == 0).reshape(50, 8, 8)
    counts = holes.sum(axis=(1, 2))
    assert counts.max() == 9 and counts.min() >= 1  # clipped at the border, never empty
    for h in holes:  # the zeros form one axis-aligned rectangle
        r, c = np.nonzero(h)
        assert len(r) == (r.max() - r.min() + 1) * (c.max() - c.min() + 1)
    img4 = D.cutout(np.ones((4, 3, 8, 8), np.float32), 2, seed=1)
    assert np.all((img4 == 0).sum(axis=(2, 3)) == (img4[:, :1] == 0).sum(axis=(2, 3)))  # same hole per channel
    with pytest.raises(ShapeError, match="image_shape"):
        D.cutout(X, 3)


def test_cutout_array_api_strict_matches_numpy():
    X, _ = D.load_digits()
    a = D.cutout(X[:10], 4, image_shape=(8, 8), seed=5)
    b = D.cutout(xs.asarray(X[:10]), 4, image_shape=(8, 8), seed=5)
    assert np.array_equal(a, np.asarray(b))


def test_mixup_is_a_convex_combination():
    X = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    y = np.arange(16)
    Xm, ya, yb, lam = D.mixup(X, y, alpha=0.4, seed=0)
    assert 0.0 <= lam <= 1.0 and np.array_equal(ya, y)
    assert np.allclose(Xm, lam * X + (1 - lam) * X[yb], atol=1e-6)
    assert sorted(yb.tolist()) == list(range(16))
    with pytest.raises(ValueError, match="alpha"):
        D.mixup(X, y, alpha=0)


def test_mixup_loss_combines_losses_and_gradients():
    from xpnn import functional as F

    class CE:  # minimal loss module following the protocol
        def __call__(self, logits, y):
            self._l, self._g = F.cross_entropy_with_grad(logits, y)
            return self._l

        def backward(self):
            return self._g

    logits = np.random.default_rng(2).normal(size=(8, 5))
    ya, yb = np.arange(8) % 5, (np.arange(8) + 2) % 5
    loss, grad = D.mixup_loss(CE(), logits, ya, yb, 0.3)
    la, ga = F.cross_entropy_with_grad(logits, ya)
    lb, gb = F.cross_entropy_with_grad(logits, yb)
    assert np.isclose(loss, 0.3 * la + 0.7 * lb) and np.allclose(grad, 0.3 * ga + 0.7 * gb)


# --- DropConnect ---------------------------------------------------------------------------------------------------

def test_dropconnect_masks_weights_in_training_only():
    from xpnn import nn

    layer = D.DropConnect(20, 30, p=0.4, seed=0, dtype="float64")
    assert isinstance(layer, nn.Linear) and isinstance(layer, nn.Module)
    x = np.random.default_rng(1).normal(size=(5, 20))
    y = layer(x)
    mask = layer._mask
    assert set(np.unique(mask).tolist()) == {0.0, 1 / 0.6}
    assert abs((mask == 0).mean() - 0.4) < 0.05
    assert np.allclose(y, x @ (layer.weight.data * mask).T + layer.bias.data)
    layer.eval()
    assert np.allclose(layer(x), x @ layer.weight.data.T + layer.bias.data)
    with pytest.raises(ValueError, match="p must be"):
        D.DropConnect(2, 2, p=1.0)


def test_dropconnect_gradients_match_finite_differences():
    layer = D.DropConnect(4, 3, p=0.5, seed=3, dtype="float64")
    x = np.random.default_rng(2).normal(size=(6, 4))
    dy = np.random.default_rng(3).normal(size=(6, 3))
    layer(x)
    mask = layer._mask.copy()
    layer.zero_grad()
    dx = layer.backward(dy)

    w, b, xx = layer.weight.data.copy(), layer.bias.data.copy(), x.copy()

    def f():  # the same mask, fixed
        return float(np.sum((xx @ (w * mask).T + b) * dy))

    num_w, num_x = numeric_grad(f, w), numeric_grad(f, xx)
    assert np.allclose(layer.weight.grad, num_w, atol=1e-7)
    assert np.allclose(layer.bias.grad, dy.sum(0))
    assert np.allclose(dx, num_x, atol=1e-7)


def test_dropconnect_trains_in_a_model_and_on_array_api_strict():
    from xpnn import nn, optim
    from xpnn.train import evaluate, fit

    X, y = D.load_digits()
    Xtr, Xte, ytr, yte = D.train_test_split(X, y, 0.25, seed=0, stratify=True)
    model = nn.Sequential(D.DropConnect(64, 64, p=0.3, seed=0), nn.ReLU(), nn.Linear(64, 10, seed=1)).to(xs)
    fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=3e-3), Xtr, ytr, epochs=4,
        batch_size=32, progress=False, seed=0)
    assert evaluate(model, nn.CrossEntropyLoss(), Xte, yte)["accuracy"] > 0.9


# --- split sizes as scikit-learn's ---------------------------------------------------------------------------------

def test_train_test_split_sizes_match_sklearn():
    """Test rows = ceil(test_size * n) for a fraction, the count for an int, train = the rest (7 @ 0.3 -> 3 test
    rows, not round()'s 2; the digits 1797 @ 0.25 -> 450); out-of-range sizes raise ValueError as sklearn does."""
    sk = pytest.importorskip("sklearn.model_selection", reason="scikit-learn is the reference for split sizes")
    for n in list(range(2, 40)) + [99, 100, 101, 1000, 1797]:
        for test_size in (0.01, 0.1, 0.15, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.7, 0.9, 0.99, 1, 2, n // 2, n - 1):
            X = np.arange(n, dtype=np.float32)[:, None]
            y = np.arange(n) % 3
            try:
                want = [a.shape[0] for a in sk.train_test_split(X, y, test_size=test_size, random_state=0)[:2]]
            except ValueError as exc:
                with pytest.raises(ValueError, match="test_size|train set will be empty"):
                    D.train_test_split(X, y, test_size, seed=0)
                assert "test_size" in str(exc) or "empty" in str(exc)
                continue
            got = [a.shape[0] for a in D.train_test_split(X, y, test_size, seed=0)[:2]]
            assert got == want, (n, test_size)
    for n, test_size, n_test in ((7, 0.3, 3), (10, 0.25, 3), (11, 0.1, 2), (1797, 0.25, 450)):
        assert D.train_test_split(np.zeros((n, 1)), np.zeros(n, np.int64), test_size, seed=0)[1].shape[0] == n_test
    for bad in (0.0, 1.0, 1.5, -0.1, 0, 10, -1):
        with pytest.raises(ValueError, match=r"should be either positive and smaller than the number of samples 10"):
            D.train_test_split(np.zeros((10, 1)), np.zeros(10, np.int64), bad)
    with pytest.raises(ValueError, match="train set will be empty"):
        D.train_test_split(np.zeros((10, 1)), np.zeros(10, np.int64), 0.95)  # ceil(9.5) = 10 test rows
    with pytest.raises(TypeError, match="float fraction or an int count"):
        D.train_test_split(np.zeros((10, 1)), np.zeros(10, np.int64), "0.2")


def _sklearn_stratified_test_counts(sk, y, test_size, seeds):
    """The per-class test counts scikit-learn's stratified split gives for each random_state in ``seeds`` (it
    breaks ties between equal remainders at random)."""
    classes = np.unique(y)
    out = set()
    for rs in seeds:
        yte = sk.train_test_split(np.zeros((y.size, 1)), y, test_size=test_size, random_state=rs, stratify=y)[3]
        out.add(tuple(int(np.sum(yte == c)) for c in classes))
    return out


@pytest.mark.parametrize("namespace", ["numpy", "array_api_strict"])
def test_train_test_split_stratified_counts_match_sklearn(namespace):
    """Per-class test counts as scikit-learn's StratifiedShuffleSplit (its approximate mode): equal where sklearn's
    are the same for every random_state, one of sklearn's outcomes where it breaks a tie at random; its errors for
    a one-member class and for fewer test or train rows than classes."""
    sk = pytest.importorskip("sklearn.model_selection", reason="scikit-learn is the reference for stratified splits")
    wrap = (lambda a: a) if namespace == "numpy" else xs.asarray
    rng = np.random.default_rng(0)
    layouts = [np.repeat(np.arange(3), [5, 7, 11]), np.repeat(np.arange(4), [2, 2, 3, 40]),
               np.repeat(np.arange(5), [10, 10, 10, 10, 10]), np.asarray(D.load_digits()[1]),
               rng.integers(0, 6, 97), np.repeat(np.arange(2), [3, 50])]
    for y in layouts:
        X = np.arange(y.size, dtype=np.float64)[:, None]
        classes = np.unique(y)
        for test_size in (0.1, 0.2, 0.25, 0.3, 0.5, 0.75, len(classes), y.size - len(classes)):
            try:
                sk_counts = _sklearn_stratified_test_counts(sk, y, test_size, range(4))
            except ValueError as exc:
                with pytest.raises(ValueError, match=str(exc).split(" ")[1]):
                    D.train_test_split(wrap(X), wrap(y), test_size, seed=0, stratify=True)
                continue
            Xtr, Xte, ytr, yte = (np.asarray(a) for a in D.train_test_split(wrap(X), wrap(y), test_size, seed=1,
                                                                                stratify=True))
            got = tuple(int(np.sum(yte == c)) for c in classes)
            if len(sk_counts) > 1:  # a random tie-break: ours must be one of sklearn's possible outcomes
                sk_counts |= _sklearn_stratified_test_counts(sk, y, test_size, range(4, 64))
            assert got in sk_counts, (y.size, test_size, got, sk_counts)
            assert np.array_equal(np.sort(np.concatenate([Xtr, Xte])[:, 0]), X[:, 0])
            np.testing.assert_array_equal(ytr, y[Xtr[:, 0].astype(int)])
    y = np.repeat(np.arange(4), 5)
    with pytest.raises(ValueError, match="the test_size = 2 should be greater or equal to the number of classes = 4"):
        D.train_test_split(wrap(np.zeros((20, 1))), wrap(y), 2, stratify=True)
    with pytest.raises(ValueError, match="the train_size = 3 should be greater or equal to the number of classes = 4"):
        D.train_test_split(wrap(np.zeros((20, 1))), wrap(y), 17, stratify=True)


def test_train_test_split_takes_the_labels_to_stratify_by_as_scikit_learn_does():
    """``stratify=y`` (an array, scikit-learn's form) stratifies like ``stratify=True``; other labels stratify by
    those; a wrong length is a ShapeError."""
    sklearn_ms = pytest.importorskip("sklearn.model_selection", reason="scikit-learn is the reference for the counts")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.repeat(np.arange(4), 10)
    groups = np.tile(np.arange(2), 20)
    for by, want in ((y, y), (list(groups), groups)):
        _, _, _, y_te = D.train_test_split(X, y, 0.25, seed=0, stratify=by)
        _, _, _, by_te = D.train_test_split(X, want, 0.25, seed=0, stratify=by)
        _, ref = sklearn_ms.train_test_split(want, test_size=0.25, random_state=0, stratify=want)
        assert sorted(np.bincount(by_te).tolist()) == sorted(np.bincount(ref).tolist())
        assert y_te.shape == (10,)
    a = D.train_test_split(X, y, 0.25, seed=1, stratify=True)
    b = D.train_test_split(X, y, 0.25, seed=1, stratify=y)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ShapeError, match="stratify must be True or an array of 40 labels"):
        D.train_test_split(X, y, 0.25, stratify=y[:5])
