"""Sigmoid backward ``dx = dy * y * (1 - y)``, float32: 12 bytes must move per element (read y, dy; write dx)."""
import pytest

from conftest import impls


@pytest.mark.parametrize("impl", impls("sigmoid_backward"))
@pytest.mark.parametrize("size", ["1e6", "1e7", "1e8"])
def test_sigmoid_backward(run_case, size, impl):
    run_case("sigmoid_backward", size, impl)
