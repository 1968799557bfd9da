"""Recurrent layers: a training step of a 2-layer LSTM (input 64, hidden 256, T 50, batch 32, Adam), xpnn through
autograd vs PyTorch (CPU; CUDA and the fused gate kernels vs kernels off when a device is present)."""
import pytest

from conftest import impls


@pytest.mark.parametrize("impl", impls("lstm_step"))
def test_lstm_step(run_case, impl):
    run_case("lstm_step", "h256-T50-batch32", impl)
