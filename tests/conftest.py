"""Tests marked ``cuda`` need CuPy and a CUDA device: skipped (with the reason shown) when there is none, never
skipped when there is one."""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    from xpnn.backend import cuda_available

    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in marked:
        item.add_marker(skip)
