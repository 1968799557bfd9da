"""``xpnn.manual_seed``: everything xpnn draws without its own seed (layer initialisation, ``xpnn.init``, dropout
masks, shuffling) repeats exactly after the same seed; an explicit ``seed=`` is unaffected."""
import numpy as np
import pytest

import xpnn
from xpnn import nn


@pytest.fixture(autouse=True)
def fresh_global_stream():
    """Each test starts, and leaves the process, without a manual seed."""
    xpnn.random._global[0] = None
    yield
    xpnn.random._global[0] = None


def run(seed):
    """A short training run that draws from every unseeded source."""
    xpnn.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))
    extra = xpnn.init.normal(nn.Parameter(np.zeros((2, 2), np.float32)))
    X = np.arange(40, dtype=np.float32).reshape(10, 4) / 40
    y = np.arange(10) % 3
    opt = xpnn.optim.SGD(model.parameters(), lr=0.1)
    losses, orders = [], []
    for _ in range(2):
        for xb, yb in xpnn.data.batches(X, y, batch_size=4, shuffle=True):
            orders.append(yb.tolist())
            opt.zero_grad()
            loss = nn.CrossEntropyLoss()(model(xpnn.tensor(xb)), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    mask = xpnn.F.dropout(np.ones(6, np.float32), 0.5)
    return model.state_dict(), np.asarray(extra), losses, orders, mask


def test_manual_seed_makes_runs_identical():
    a, b, c = run(123), run(123), run(124)
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2] and a[3] == b[3]
    np.testing.assert_array_equal(a[4], b[4])
    assert not np.array_equal(a[0]["0.weight"], c[0]["0.weight"]) and a[2] != c[2]


def test_explicit_seeds_are_unaffected_and_returns_none():
    ref = nn.Linear(3, 3, seed=7).weight.numpy()
    assert xpnn.manual_seed(0) is None
    np.testing.assert_array_equal(nn.Linear(3, 3, seed=7).weight.numpy(), ref)
    g1, g2 = nn.Linear(3, 3).weight.numpy(), nn.Linear(3, 3).weight.numpy()
    assert not np.array_equal(g1, g2)  # one stream: later draws differ, as after torch.manual_seed


def test_without_manual_seed_draws_are_fresh():
    assert not np.array_equal(nn.Linear(3, 3).weight.numpy(), nn.Linear(3, 3).weight.numpy())


def test_manual_seed_rejects_non_ints():
    with pytest.raises(TypeError, match="manual_seed: seed must be an int, got float"):
        xpnn.manual_seed(1.5)
    xpnn.manual_seed(np.int64(3))
