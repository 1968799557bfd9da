"""One small float64 call from NumPy code (F.sigmoid on (30, 1), F.cross_entropy_with_grad on one row of 65,
nn.Linear(64, 30) forward + backward on a batch of 10) next to the NumPy expression it replaces: the host cost of
xpnn's fast path for plain NumPy arrays."""
import pytest

from conftest import impls


@pytest.mark.parametrize("impl", impls("small_calls"))
@pytest.mark.parametrize("size", ["sigmoid", "cross_entropy", "linear"])
def test_small_calls(run_case, size, impl):
    run_case("small_calls", size, impl)
