"""Softmax cross-entropy from logits, loss and gradient in one call (mean reduction), float32 logits (N, C):
the floor counts the logits read once and the gradient written once."""
import pytest

from conftest import impls


@pytest.mark.parametrize("impl", impls("cross_entropy"))
@pytest.mark.parametrize("size", ["4096x1000", "65536x10", "8192x32768"])
def test_cross_entropy(run_case, size, impl):
    run_case("cross_entropy", size, impl)
