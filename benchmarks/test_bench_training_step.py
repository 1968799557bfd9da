"""Whole training steps: a 784-512-512-10 ReLU MLP (Adam, cross-entropy, float32; zero_grad, forward, backward,
step) and the source notes' two-layer sigmoid network (64 x 1000 -> 100 -> 10, squared error, SGD lr 1e-4)."""
import pytest

from conftest import impls


@pytest.mark.parametrize("impl", impls("mlp_step"))
@pytest.mark.parametrize("size", ["batch256", "batch4096"])
def test_mlp_step(run_case, size, impl):
    run_case("mlp_step", size, impl)


@pytest.mark.parametrize("impl", impls("seed_net"))
def test_seed_net_step(run_case, impl):
    run_case("seed_net", "64x1000", impl)


@pytest.mark.parametrize("impl", impls("tiny_step"))
def test_tiny_step(run_case, impl):
    """Host overhead: a 16-32-32-4 MLP at batch 8 (explicit API, autograd, PyTorch, plain NumPy)."""
    run_case("tiny_step", "batch8", impl)
