"""Softmax and log-sum-exp over the rows of float32 (N, C): the floor counts the input read once and the output
written once (softmax: N*C entries; logsumexp: N). Narrow rows (65536x10) run a few lanes per row, wide rows a
block per row with 16-byte loads (kernels/softmax_cross_entropy.cu), few wide rows (8x262144, GPU only) are split
across blocks (kernels/row_split.cu)."""
import pytest

from conftest import impls


@pytest.mark.parametrize("impl", impls("softmax", "logsumexp"))
@pytest.mark.parametrize("size", ["4096x1000", "65536x10", "8192x32768", "8x262144"])
@pytest.mark.parametrize("case", ["softmax", "logsumexp"])
def test_row_kernels(run_case, case, size, impl):
    run_case(case, size, impl)
