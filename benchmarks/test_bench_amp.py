"""Loss scaling: GradScaler's unscale of a float16 gradient buffer in place with the inf/NaN flag (xpnn:
kernels/capturable.cu amp_unscale_check, 16-byte packs; torch: _amp_foreach_non_finite_check_and_unscale_). The
floor counts the buffer read once and written once (4 bytes per entry)."""
import pytest

from conftest import impls


@pytest.mark.parametrize("impl", impls("amp_unscale"))
@pytest.mark.parametrize("size", ["1e6", "1e7", "1e8"])
def test_amp_unscale(run_case, size, impl):
    run_case("amp_unscale", size, impl)
