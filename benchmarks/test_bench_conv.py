"""Convolutions: one Conv2d layer's forward + backward at LeNet-5's layers (batch 64) and a 3x3 64->64 layer at
32x32 (batch 32), and a LeNet-5 training step (1x28x28, batch 64, Adam), xpnn vs PyTorch (no plain-NumPy version:
the ratio column is empty for these; compare the xpnn-numpy and torch-cpu rows of a group)."""
import pytest

from conftest import impls


@pytest.mark.parametrize("impl", impls("conv2d"))
@pytest.mark.parametrize("size", ["lenet1", "lenet2", "3x3-64"])
def test_conv2d(run_case, size, impl):
    run_case("conv2d", size, impl)


@pytest.mark.parametrize("impl", impls("lenet_step"))
def test_lenet_step(run_case, impl):
    run_case("lenet_step", "batch64", impl)
