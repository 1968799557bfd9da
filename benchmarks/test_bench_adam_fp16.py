"""One Adam step of n float16 parameters with float32 master copies: xpnn's fused kernel (kernels/adam_mixed.cu:
read g16, p32, m, v; write p32, m, v, p16 = 28 bytes per parameter, one launch) against the usual three passes
(cast the gradient up, Adam on the master, cast down) in NumPy and PyTorch (fused Adam on the master)."""
import pytest

from conftest import impls


@pytest.mark.parametrize("impl", impls("adam_fp16"))
@pytest.mark.parametrize("size", ["1e6", "1e7", "1e8"])
def test_adam_fp16(run_case, size, impl):
    run_case("adam_fp16", size, impl)
