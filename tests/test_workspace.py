"""The recycled NumPy buffers of the CPU fast paths (xpnn.functional._workspace): a buffer is never handed out while
anything references it (views, saved autograd contexts, retained graphs, two models of the same shapes, threads),
is reused once released, and a steady-state conv/pool step allocates no large scratch block."""
import threading
import weakref

import numpy as np
import pytest
import xpnn
import xpnn.functional as F
from xpnn import nn
from xpnn.bench.allocations import LARGE_BLOCK, count_allocations
from xpnn.functional import _workspace as W


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_buffer_is_reused_only_when_nothing_references_it():
    W.clear()
    a = W.buffer("t", (3, 4), np.float32)
    b = W.buffer("t", (3, 4), np.float32)
    assert a is not b  # a is still held here
    pooled = {id(a), id(b)}
    view = a[1:]
    del a
    c = W.buffer("t", (3, 4), np.float32)
    assert c is not view.base and c is not b  # a view keeps its buffer out of reuse
    pooled.add(id(c))
    other = (W.buffer("t", (3, 4), np.float64), W.buffer("u", (3, 4), np.float32))  # other keys: other buffers
    assert all(id(o) not in pooled for o in other)
    del view, b, c
    d = W.buffer("t", (3, 4), np.float32)
    assert id(d) in pooled  # released: reused
    assert W.cached_bytes() == 3 * 48 + 96 + 48
    W.clear()
    assert W.cached_bytes() == 0


def test_buffers_per_key_are_capped():
    W.clear()
    held = [W.buffer("cap", (8,), np.float32) for _ in range(W.PER_KEY + 3)]
    assert len({id(h) for h in held}) == len(held)
    assert W.cached_bytes() == W.PER_KEY * 32
    W.clear()


def test_threads_get_their_own_buffers():
    W.clear()
    mine = W.buffer("thr", (4,), np.float32)
    theirs = []
    t = threading.Thread(target=lambda: theirs.append(W.buffer("thr", (4,), np.float32)))
    t.start()
    t.join()
    assert theirs[0] is not mine
    W.clear()


def _cnn(seed):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, seed=seed, dtype="float64"), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 5, 3, seed=seed + 1, dtype="float64"), nn.MaxPool2d(2, padding=1), nn.Flatten())


def _grads(m):
    return [np.array(p.grad) for p in m.parameters()]


def test_two_models_of_the_same_shapes_interleaved():
    """Both forwards before both backwards (the saved columns and argmaxes of the first must survive the second
    forward), explicit API and tape, equal the gradients of each model run alone."""
    x1, x2 = randn(4, 3, 9, 9, seed=1), randn(4, 3, 9, 9, seed=2)
    alone = []
    for seed, x in ((0, x1), (10, x2)):
        m = _cnn(seed)
        out = m(x)
        m.backward(np.ones_like(out))
        alone.append(_grads(m))
    m1, m2 = _cnn(0), _cnn(10)
    o1, o2 = m1(x1), m2(x2)
    m2.backward(np.ones_like(o2))
    m1.backward(np.ones_like(o1))
    for want, m in zip(alone, (m1, m2)):
        for a, b in zip(want, _grads(m)):
            np.testing.assert_array_equal(a, b)
    m1.zero_grad()
    m2.zero_grad()
    l1 = F.sum(m1(xpnn.tensor(x1)))
    l2 = F.sum(m2(xpnn.tensor(x2)))
    l1.backward()
    l2.backward()
    for want, m in zip(alone, (m1, m2)):
        for a, b in zip(want, _grads(m)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_retained_graph_backward_twice_after_other_calls():
    """A graph kept with retain_graph=True still holds its columns and argmaxes: another model's forward and
    backward of the same shapes in between does not change its second backward."""
    m, other = _cnn(0), _cnn(5)
    x = randn(2, 3, 9, 9, seed=3)
    loss = F.sum(m(xpnn.tensor(x)))
    loss.backward(retain_graph=True)
    first = _grads(m)
    m.zero_grad()
    F.sum(other(xpnn.tensor(randn(2, 3, 9, 9, seed=4)))).backward()
    loss.backward()
    for a, b in zip(first, _grads(m)):
        np.testing.assert_array_equal(a, b)


def test_gradients_handed_out_stay_valid_across_steps():
    """An input gradient returned to the caller (a view of a workspace accumulator on the col2im path) keeps its
    values while the caller holds it, whatever runs next."""
    # N*C small and stride 2: the NCHW col2im path, dx a view of its padded accumulator
    conv = nn.Conv2d(1, 2, 3, stride=2, padding=1, seed=0, dtype="float64")
    x = randn(2, 1, 6, 6, seed=5)
    conv(x)
    dx = conv.backward(np.ones((2, 2, 3, 3)))
    assert dx.base is not None  # a view of the accumulator, which must stay out of reuse
    kept = dx.copy()
    for seed in range(3):
        conv(randn(2, 1, 6, 6, seed=seed))
        conv.backward(randn(2, 2, 3, 3, seed=seed))
    np.testing.assert_array_equal(dx, kept)


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def cpu_threads_count(request):
    """The NumPy fast paths run with this many threads (``xpnn.functional.cpu_threads``), back to the default after."""
    from xpnn.functional import cpu_threads
    cpu_threads.set_num_threads(request.param)
    yield request.param
    cpu_threads.set_num_threads(None)


def test_conv_pool_step_allocates_no_large_scratch(cpu_threads_count, monkeypatch):
    """Steady state: a conv + relu + max-pool forward and backward (LeNet's second layer at batch 64) allocates no
    NumPy block of 128 KiB or more besides the conv's output and input gradient: no column tensor, padded copy or
    accumulator, and the relu output and gradient and the pooling input gradient are recycled buffers. Split over
    two threads (forced at this size), the conv's output and input gradient are recycled buffers too (each chunk
    writes its rows), so nothing of that size is allocated at all."""
    from xpnn.functional import conv_numpy
    monkeypatch.setattr(conv_numpy, "CHUNK_MIN_ELEMENTS", 1)
    conv = nn.Conv2d(6, 16, 5, seed=0, dtype="float32")
    m = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2))
    x = np.random.default_rng(0).standard_normal((64, 6, 14, 14), dtype=np.float32)
    dy = np.ones((64, 16, 5, 5), np.float32)

    def step():
        m.zero_grad()
        m(x)
        m.backward(dy)

    for _ in range(2):
        step()
    count = count_allocations(step)
    out, inp = 64 * 16 * 10 * 10 * 4, 64 * 6 * 14 * 14 * 4
    results = sorted([out, inp])  # conv y (409,600 B); conv dx
    assert all(s >= LARGE_BLOCK for s in results)
    assert sorted(count.sizes) == (results if cpu_threads_count == 1 else [])


def test_relu_backward_with_a_recycled_mask():
    """Large NumPy inputs build relu's backward mask in a recycled buffer: the results equal the small-input path
    (NaN in dy kept where x > 0, +0.0 where x <= 0) and a result stays intact after later calls."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 512)).astype(np.float32)
    dy = rng.standard_normal((256, 512)).astype(np.float32)
    dy[0, :4] = np.nan
    first = F.relu_backward(x, dy)
    want = np.where(x <= 0, np.float32(0), dy)
    np.testing.assert_array_equal(first, want)
    kept = first.copy()
    F.relu_backward(-x, dy)
    np.testing.assert_array_equal(first, kept)
    small = F.relu_backward(x[:4], dy[:4])  # below the recycling size: the plain path
    np.testing.assert_array_equal(small, want[:4])


def test_recycled_outputs_stay_intact_while_held():
    """relu's output and gradient and max-pooling's output and input gradient come from recycled buffers on large
    NumPy inputs: each result the caller holds keeps its values through later calls of the same shapes (which then
    get other buffers), equals a fresh computation, and is reused only once dropped."""
    x = np.random.default_rng(0).standard_normal((64, 16, 10, 10)).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal((64, 16, 5, 5)).astype(np.float32)
    relu = nn.ReLU()
    pool = nn.MaxPool2d(2)
    y = relu(x)
    p = pool(y)
    dp = pool.backward(dy)
    dx = relu.backward(dp)
    held = [a.copy() for a in (y, p, dp, dx)]
    np.testing.assert_array_equal(held[0], np.maximum(x, 0))
    np.testing.assert_array_equal(held[3], np.where(x > 0, dp, np.float32(0)))
    for seed in range(3):  # the same shapes again on other data while the first results are held
        x2 = np.random.default_rng(seed + 2).standard_normal(x.shape).astype(np.float32)
        y2 = relu(x2)
        pool(y2)
        relu.backward(pool.backward(-dy))
        assert not any(np.shares_memory(y2, a) for a in (y, p, dp, dx))
    for a, want in zip((y, p, dp, dx), held):
        np.testing.assert_array_equal(a, want)
    refs = [weakref.ref(a) for a in (y, p, dp, dx)]
    del y, p, dp, dx, held
    assert all(r() is not None for r in refs)  # dropped by the caller, kept by the workspace
    y3 = relu(x)
    assert y3 is refs[0]()  # released: the freed buffer comes back
