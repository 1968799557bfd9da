"""The one place kernels come from: a loader hands the launch code (``xpnn._cuda.launch``) either CuPy kernels
(``CupyLoader``, on a GPU) or kernels of the CPU shim (``tests/shim``, same sources built with g++), behind the
same two calls:

- ``raw(row, dtype)`` -> ``RawLaunch``: ``launch(grid, block, args)`` runs ``__global__`` kernel ``row`` for
  storage ``dtype`` after checking every argument against the kernel's C signature (arrays: dtype and C-contiguity;
  scalars: exactly the NumPy scalar type of the C parameter, since a Python float would be passed as a double);
- ``elementwise(row, dtype)`` -> a callable with ``cupy.ElementwiseKernel``'s call convention ``k(*inputs) -> out``.

Kernels are built lazily on first use and cached per (device, kernel, dtype).
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from ..errors import NamespaceMismatchError
from . import registry, sources


class KernelLoader(Protocol):
    name: str

    def raw(self, row: registry.RawKernel, dtype: str) -> "RawLaunch": ...

    def elementwise(self, row: registry.ElementwiseKernel, dtype: str) -> Callable[..., Any]: ...


def check_args(kernel: str, params: Sequence[sources.Param], dtype: str, args: Sequence[Any]) -> None:
    """Raise ``TypeError`` unless ``args`` match the C parameters of ``kernel`` instantiated for ``dtype``."""
    if len(args) != len(params):
        raise TypeError(f"kernel {kernel}: expected {len(params)} arguments, got {len(args)}")
    for p, a in zip(params, args):
        want = p.dtype(dtype)
        if p.pointer:
            flags = getattr(a, "flags", None)
            if flags is None or not hasattr(a, "dtype"):
                raise TypeError(f"kernel {kernel}: argument {p.name} must be an array, got {type(a).__name__}")
            if np.dtype(a.dtype).name != want:
                raise TypeError(f"kernel {kernel}: array {p.name} must be {want}, got {np.dtype(a.dtype).name}")
            if not flags.c_contiguous:
                raise TypeError(f"kernel {kernel}: array {p.name} must be C-contiguous")
        elif not (isinstance(a, np.generic) and a.dtype.name == want):
            got = a.dtype.name if isinstance(a, np.generic) else type(a).__name__
            raise TypeError(f"kernel {kernel}: scalar {p.name} must be a numpy.{want}, got {got}")


def check_device(kernel: str, device: int, args: Sequence[Any]) -> None:
    """Raise unless every CuPy array in ``args`` lives on ``device`` (the device the kernel is launched on)."""
    for a in args:
        dev = getattr(getattr(a, "device", None), "id", None)
        if dev is not None and dev != device:
            raise NamespaceMismatchError(
                f"kernel {kernel}: an argument lives on CUDA device {dev} but the current device is {device}; "
                f"run the call under `with cupy.cuda.Device({dev}):`")


class RawLaunch:
    """A compiled ``__global__`` function plus its signature; ``launch(grid, block, args)`` checks and runs it."""

    def __init__(self, row: registry.RawKernel, dtype: str, run: Callable[[int, int, tuple], None],
                 sm_count: int | None = None):
        self.row = row
        self.dtype = dtype
        self.name = row.name_expression(dtype)
        self.params = sources.signature(row.source, row.entry.split("<")[0])
        self.max_block = sources.launch_bound(row.source, row.entry.split("<")[0])
        self._run = run
        self.sm_count = sm_count  # multiprocessors of the device it runs on (grid caps); None: unknown (the shim)

    def launch(self, grid: int, block: int, args: tuple) -> None:
        if not (1 <= block <= self.max_block and block % 32 == 0):
            raise ValueError(f"kernel {self.name}: block size must be a multiple of 32 in [32, {self.max_block}] "
                             f"(its __launch_bounds__), got {block}")
        if grid > 2**31 - 1:
            raise ValueError(f"kernel {self.name}: grid must be at most 2**31 - 1 blocks, got {grid}")
        if grid < 1:
            raise ValueError(f"kernel {self.name}: grid must be >= 1, got {grid}")
        check_args(self.name, self.params, self.dtype, args)
        self._run(grid, block, args)


class CupyLoader:
    """Kernels compiled by CuPy (NVRTC) for the current device: ``RawModule`` per source, ``ElementwiseKernel``
    per op. Nothing touches the GPU before the first ``raw``/``elementwise`` call."""

    name = "cupy"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._modules: dict[tuple[int, str], Any] = {}
        self._raw: dict[tuple[int, str, str], RawLaunch] = {}
        self._elementwise: dict[str, Any] = {}
        self._sm_counts: dict[int, int] = {}

    @staticmethod
    def _device() -> int:
        import cupy

        return cupy.cuda.runtime.getDevice()

    @staticmethod
    def _sm_count(device: int) -> int:
        """Multiprocessors of ``device`` (the grid-stride launches cap their grids by it)."""
        import cupy

        return int(cupy.cuda.Device(device).attributes["MultiProcessorCount"])

    def _module(self, device: int, source: str) -> Any:
        import cupy

        key = (device, source)
        if key not in self._modules:
            self._modules[key] = cupy.RawModule(
                code=sources.read_source(source),
                name_expressions=registry.name_expressions(source),
            )
        return self._modules[key]

    def raw(self, row: registry.RawKernel, dtype: str) -> RawLaunch:
        device = self._device()
        key = (device, row.name, dtype)
        launch = self._raw.get(key)
        if launch is None:
            with self._lock:
                name = row.name_expression(dtype)
                fn = self._module(device, row.source).get_function(name)

                def run(grid: int, block: int, args: tuple, fn: Any = fn) -> None:
                    check_device(name, device, args)
                    # RawKernel(grid, block, args): a tuple per dimension; numpy scalars are passed by value with
                    # their own C type (a Python int or float would become a long long or a double)
                    fn((grid,), (block,), args)

                if device not in self._sm_counts:
                    self._sm_counts[device] = self._sm_count(device)
                launch = self._raw[key] = RawLaunch(row, dtype, run, self._sm_counts[device])
        return launch

    def elementwise(self, row: registry.ElementwiseKernel, dtype: str) -> Any:
        # one ElementwiseKernel per op: CuPy compiles and caches it per device and dtype on first call
        kernel = self._elementwise.get(row.name)
        if kernel is None:
            import cupy

            with self._lock:
                kernel = self._elementwise[row.name] = cupy.ElementwiseKernel(
                    row.in_params, row.out_params, row.body, row.kernel_name,
                    preamble=sources.read_source(registry.ELEMENTWISE_PREAMBLE),
                )
        return kernel
