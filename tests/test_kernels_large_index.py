"""Index math past 2**31 elements, on the CPU shim: a flat optimizer update (kernels/common.cuh, xpnn_flat_update,
through xpnn._cuda.launch's grid choice) over float32 arrays of 2**31 + 4099 elements that live in one sparse file
mapped into memory. The shim runs only the few blocks of the grid whose grid-stride loops reach the elements just
below and past 2**31, the last 16-byte pack and the scalar tail (``ShimLoader(only_blocks=...)``): about 1 MB of
pages is ever touched and the launch takes well under a second. An 8 GiB hole in front of the arrays catches the
writes of a 32-bit element offset (it wraps to about -2**31) without a crash, so a broken copy of the kernel is
seen to leave the elements past 2**31 unwritten. Skipped, with the reason, where the filesystem makes no sparse
files or the address space is too small."""
from __future__ import annotations

import math
import os
import shutil
import sys

import numpy as np
import pytest

from xpnn import _dispatch
from xpnn._cuda import launch, make_provider
from xpnn._cuda.sources import kernel_dir
from xpnn.functional import updates

from shim.requirements import require_cxx

require_cxx()

from shim import ShimLoader, build

N = 2**31 + 4099  # float32: 2**29 + 1024 packs of 4, then a scalar tail of 3
PACK = 4
GUARD = 2**33 + 2**20  # bytes of hole before the arrays: a wrapped 32-bit offset (about -2**31 elements) lands here
OPTS = dict(lr=0.1, momentum=0.9, dampening=0.25, weight_decay=0.01)
INT_OFFSET = ("arrays[a] + k * V", "arrays[a] + (int)(k * V)")  # the broken copy: element offset in 32 bits


def _sparse_arrays(path):
    """param, grad, momentum buffer: views of one sparse file after GUARD bytes of hole (skip if not sparse)."""
    if sys.maxsize < 2**62:
        pytest.skip("needs a 64-bit address space to map 3 x 8 GiB")
    span = -(-N * 4 // 64) * 64  # each array at a 64-byte offset, as in a flat buffer (16-byte packs)
    size = GUARD + 3 * span
    try:
        with open(path, "wb") as f:
            f.truncate(size)
    except OSError as e:
        pytest.skip(f"cannot make a {size / 2**30:.0f} GiB sparse file in {path.parent}: {e}")
    if os.stat(path).st_blocks * 512 > 2**20:
        pytest.skip(f"the filesystem of {path.parent} does not make sparse files ({size / 2**30:.0f} GiB would be "
                    "written)")
    whole = np.memmap(path, dtype=np.float32, mode="r+", shape=(size // 4,))
    return whole, [whole[(GUARD + i * span) // 4:][:N] for i in range(3)]


def _plan(n):
    """The grid the launcher picks, the blocks to run, and the elements those blocks update."""
    threads = launch.FLAT_BLOCK
    grid = launch.flat_grid(n, threads, per_thread=PACK)
    stride, n_packs = grid * threads, n // PACK
    targets = [2**31 - 1, 2**31, 2**31 + 5, n_packs * PACK - 1]  # packs around 2**31, the last pack
    blocks = sorted({(e // PACK) % stride // threads for e in targets} | {0})  # block 0: the scalar tail
    touched = []
    for b in blocks:
        g = np.arange(b * threads, (b + 1) * threads, dtype=np.int64)
        k = (g[:, None] + np.arange(math.ceil(n_packs / stride))[None, :] * stride).ravel()
        k = k[k < n_packs]
        touched.append((k[:, None] * PACK + np.arange(PACK)).ravel())
        tail = n_packs * PACK + g
        touched.append(tail[tail < n])
    idx = np.unique(np.concatenate(touched))
    assert idx.min() < 2**31 <= idx.max() and idx.max() == n - 1 and np.isin(targets, idx).all()
    return blocks, idx


def _update(loader, arrays, idx):
    """Fill the touched elements, run the kernel, return (got, want) at those elements."""
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(idx.size).astype(np.float32) for _ in arrays]
    for a, v in zip(arrays, values):
        a[idx] = v
    before = loader.launches
    with _dispatch.use_provider(make_provider(loader)):
        updates.sgd_update(arrays[0], arrays[1], arrays[2], **OPTS)
    assert loader.launches == before + 1
    with _dispatch.use_kernels(False):
        want = updates.sgd_update(values[0].copy(), values[1], values[2], **OPTS)
    return arrays[0][idx], want


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    path = tmp_path_factory.mktemp("sparse") / "arrays.f32"
    whole, arrays = _sparse_arrays(path)
    yield whole, arrays
    del whole, arrays
    path.unlink()


def test_flat_update_past_2_31_elements(sparse):
    """The packs just below and past element 2**31, the last pack and the scalar tail are updated as the reference
    updates them; an element of a block that did not run keeps its 0 (only the chosen blocks ran)."""
    whole, arrays = sparse
    blocks, idx = _plan(N)
    got, want = _update(ShimLoader(only_blocks=tuple(blocks)), arrays, idx)
    np.testing.assert_array_equal(got, want)
    skipped = [2**30, 2**31 + 2048]
    assert not np.isin(skipped, idx).any() and not arrays[0][skipped].any()


def test_a_32_bit_element_offset_is_caught(sparse, tmp_path):
    """A copy of xpnn_flat_update whose element offset is a 32-bit int writes the packs past 2**31 about 8 GiB
    before the array (into the hole) and leaves them as they were: the same check sees it."""
    whole, arrays = sparse
    dest = tmp_path / "kernels"
    shutil.copytree(kernel_dir(), dest)
    common = dest / "common.cuh"
    text = common.read_text()
    assert text.count(INT_OFFSET[0]) == 2, "xpnn_flat_update changed: update INT_OFFSET"
    common.write_text(text.replace(*INT_OFFSET))
    blocks, idx = _plan(N)
    for a in arrays:
        a[idx] = 0
    got, want = _update(ShimLoader(library=build(kernels=dest).library, only_blocks=tuple(blocks)), arrays, idx)
    below = idx < 2**31
    np.testing.assert_array_equal(got[below], want[below])  # below 2**31 the 32-bit offset is right
    past = (idx >= 2**31) & (idx < N // PACK * PACK)  # the packed body past 2**31 (the tail has 64-bit offsets)
    assert past.sum() > 1000 and not np.array_equal(got[past], want[past]), "the 32-bit offset went unnoticed"
