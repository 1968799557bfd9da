"""One Adam step (lr 1e-3, PyTorch's defaults otherwise), float32: over one flat buffer of n parameters, and over
a model of 200 small tensors (100 Linear(64, 64) layers). 28 bytes must move per parameter (read p, g, m, v;
write p, m, v). PyTorch: default Adam on the CPU, ``Adam(fused=True)`` on the GPU."""
import pytest

from conftest import impls


@pytest.mark.parametrize("impl", impls("adam"))
@pytest.mark.parametrize("size", ["1e6", "1e7", "1e8", "200-tensors"])
def test_adam(run_case, size, impl):
    run_case("adam", size, impl)
