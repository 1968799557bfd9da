"""One SGD step with momentum 0.9 (lr 1e-2, PyTorch's defaults otherwise), float32: over one flat buffer of n
parameters, and over a model of 200 small tensors (100 Linear(64, 64) layers). 20 bytes must move per parameter
(read p, g, buf; write p, buf). PyTorch: default SGD."""
import pytest

from conftest import impls


@pytest.mark.parametrize("impl", impls("sgd"))
@pytest.mark.parametrize("size", ["1e6", "1e7", "1e8", "200-tensors"])
def test_sgd(run_case, size, impl):
    run_case("sgd", size, impl)
