"""Backends: which array library (namespace) arrays live in.

Selection order: explicit ``backend=`` argument > ``use_backend(...)`` context / ``set_backend(...)``
> ``XPNN_BACKEND`` environment variable > ``"numpy"``. ``"auto"`` means CUDA when CuPy sees a device, else NumPy.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import types
from typing import Any, Iterator, Union

import array_api_compat
import numpy as np

from .errors import BackendUnavailableError, DTypeError, NamespaceMismatchError

__all__ = [
    "Backend",
    "BackendLike",
    "get_backend",
    "set_backend",
    "use_backend",
    "namespace_of",
    "is_numpy_namespace",
    "is_cupy_namespace",
    "cuda_available",
    "resolve_dtype",
]

CUDA_INSTALL_HINT = 'pip install "xpnn[cuda12]"  (or "xpnn[cuda13]" for CUDA 13 drivers)'
BACKEND_NAMES = ("numpy", "cuda", "auto")
BACKEND_ALIASES = {"cpu": "numpy", "cupy": "cuda", "gpu": "cuda"}  # other names get_backend accepts


class Backend:
    """An array namespace plus the helpers xpnn needs to move data in and out of it.

    ``name`` is ``"numpy"``, ``"cuda"`` or the namespace's module name for other array-API libraries.
    """

    def __init__(self, name: str, xp: types.ModuleType):
        self.name = name
        self.xp = xp

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Backend) and other.name == self.name and other.xp is self.xp

    def __hash__(self) -> int:
        return hash((self.name, id(self.xp)))

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """Return ``x`` as an array of this backend (copying across devices when needed)."""
        dt = resolve_dtype(self.xp, dtype) if dtype is not None else None
        if self.name == "cuda":
            return self.xp.asarray(x, dtype=dt)  # cupy accepts numpy arrays and cupy arrays
        if not array_api_compat.is_array_api_obj(x) or array_api_compat.array_namespace(x) is self.xp:
            return self.xp.asarray(x, dtype=dt)
        return self.xp.asarray(to_numpy(x), dtype=dt)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Return ``x`` as a NumPy array on the host."""
        return to_numpy(x)


BackendLike = Union[str, Backend, types.ModuleType, None]


def to_numpy(x: Any) -> np.ndarray:
    """Host NumPy copy (or view, for NumPy input) of an array from any supported namespace."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except Exception:  # some namespaces refuse dlpack export of certain arrays; fall through
            pass
    return np.asarray(x)


def is_numpy_namespace(xp: Any) -> bool:
    return array_api_compat.is_numpy_namespace(xp)


def is_cupy_namespace(xp: Any) -> bool:
    return array_api_compat.is_cupy_namespace(xp)


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device (never raises)."""
    try:
        import cupy  # noqa: F401
    except Exception:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _cuda_backend() -> Backend:
    try:
        import cupy  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend 'cuda' needs CuPy, which is not installed ({exc}). Install it with: {CUDA_INSTALL_HINT}"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when no driver / no device
        raise BackendUnavailableError(
            f"backend 'cuda' needs an NVIDIA GPU, but no CUDA device or driver was found ({type(exc).__name__}: "
            f"{exc}). "
            "Use backend='numpy' (or 'auto' to pick the GPU only when one exists)."
        ) from None
    if count == 0:
        raise BackendUnavailableError(
            "backend 'cuda' needs an NVIDIA GPU, but CuPy found 0 devices. "
            "Use backend='numpy' (or 'auto' to pick the GPU only when one exists)."
        )
    return Backend("cuda", array_api_compat.array_namespace(cupy.empty(0)))


_NUMPY = Backend("numpy", array_api_compat.array_namespace(np.empty(0)))
_cuda_cache: list[Backend] = []
_current: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("xpnn_backend", default=None)
_global: list[Backend | None] = [None]


def _from_name(name: str) -> Backend:
    key = BACKEND_ALIASES.get(name.strip().lower(), name.strip().lower())
    if key == "numpy":
        return _NUMPY
    if key == "cuda":
        if not _cuda_cache:
            _cuda_cache.append(_cuda_backend())
        return _cuda_cache[0]
    if key == "auto":
        return _from_name("cuda") if cuda_available() else _NUMPY
    raise ValueError(f"unknown backend {name!r}: expected one of {', '.join(BACKEND_NAMES + tuple(BACKEND_ALIASES))} "
                     f"({', '.join(f'{alias} = {to}' for alias, to in BACKEND_ALIASES.items())})")


def _from_module(mod: types.ModuleType) -> Backend:
    if array_api_compat.is_numpy_namespace(mod):
        return _NUMPY
    if array_api_compat.is_cupy_namespace(mod):
        return _from_name("cuda")
    xp = mod
    if not hasattr(mod, "__array_api_version__"):
        # a plain library module such as torch: use array_api_compat's wrapper namespace for it
        try:
            xp = importlib.import_module(f"array_api_compat.{mod.__name__}")
        except ImportError:
            raise TypeError(f"{mod.__name__!r} is not an array-API namespace") from None
    return Backend(mod.__name__, xp)


def get_backend(name: BackendLike = None) -> Backend:
    """Resolve ``name`` (a name, a ``Backend``, an array-API namespace module, or ``None``) to a ``Backend``.

    ``None`` uses the active choice: ``use_backend`` context, then ``set_backend``, then ``$XPNN_BACKEND``, then NumPy.
    """
    if isinstance(name, Backend):
        return name
    if isinstance(name, types.ModuleType):
        return _from_module(name)
    if isinstance(name, str):
        return _from_name(name)
    if name is not None:
        raise TypeError(f"backend must be a name, a Backend or a namespace module, not {type(name).__name__}")
    active = _current.get() or _global[0]
    if active is not None:
        return active
    env = os.environ.get("XPNN_BACKEND", "").strip()
    if not env:
        return _NUMPY
    try:
        return _from_name(env)
    except (ValueError, BackendUnavailableError) as exc:  # say where the name came from
        raise type(exc)(f"{exc} (from the XPNN_BACKEND environment variable)") from None


def set_backend(name: BackendLike) -> Backend:
    """Set the process-wide default backend (``None`` resets to ``$XPNN_BACKEND``/NumPy). Returns it."""
    _global[0] = None if name is None else get_backend(name)
    return get_backend()


@contextlib.contextmanager
def use_backend(name: BackendLike) -> Iterator[Backend]:
    """Context manager: make ``name`` the default backend inside the ``with`` block."""
    token = _current.set(get_backend(name))
    try:
        yield _current.get()  # type: ignore[misc]
    finally:
        _current.reset(token)


def backend_of(x: Any) -> Backend:
    """The backend an array belongs to."""
    return _from_module(array_api_compat.array_namespace(x))


def _describe(x: Any) -> str:
    if array_api_compat.is_cupy_array(x):
        return f"cupy array on device {x.device.id}"
    mod = type(x).__module__.split(".")[0]
    return f"{mod} array"


def namespace_of(*arrays: Any, where: str = "xpnn") -> Any:
    """The array-API namespace shared by ``arrays`` (``None`` entries ignored).

    Raises ``NamespaceMismatchError`` naming ``where`` and the disagreeing arguments when libraries or devices mix.
    """
    numpy_only = False
    for a in arrays:  # fast path: NumPy arrays (and the scalars NumPy reductions return) only: the generic
        if type(a) is np.ndarray or isinstance(a, np.generic):  # lookup costs ~10 us per call
            numpy_only = True
        elif a is not None:
            numpy_only = False
            break
    if numpy_only:
        return _NUMPY.xp
    arrs = [a for a in arrays if a is not None]
    if not arrs:
        raise TypeError(f"{where}: no arrays given")
    try:
        xp = array_api_compat.array_namespace(*arrs)
    except TypeError:
        kinds = sorted({_describe(a) for a in arrs})
        for a in arrs:
            if not array_api_compat.is_array_api_obj(a):
                hint = ("pass its .data" if type(a).__name__ == "Parameter"
                        else "convert with xpnn.get_backend().asarray(x)")
                raise TypeError(f"{where}: expected arrays, got {type(a).__name__}; {hint}") from None
        raise NamespaceMismatchError(
            f"{where}: arrays from different libraries were mixed ({' and '.join(kinds)}); "
            "move them to one backend first, e.g. backend.asarray(x) or model.to(backend)"
        ) from None
    if array_api_compat.is_cupy_namespace(xp) and len(arrs) > 1:
        devs = {a.device.id for a in arrs}
        if len(devs) > 1:
            raise NamespaceMismatchError(f"{where}: cupy arrays on different devices {sorted(devs)} were mixed")
    return xp


_DTYPE_NAMES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


def resolve_dtype(xp: Any, dtype: Any, default: str = "float32") -> Any:
    """Turn ``dtype`` (None, a name such as ``"float32"``, a NumPy dtype or a namespace dtype) into ``xp``'s dtype."""
    if dtype is None:
        return getattr(xp, default)
    if isinstance(dtype, str):
        name = dtype
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype).split(".")[-1].strip("'>")
    if name not in _DTYPE_NAMES or not hasattr(xp, name):
        raise DTypeError(f"unsupported dtype {dtype!r}: expected one of float16, float32, float64")
    return getattr(xp, name)


def is_dtype_like(x: Any) -> bool:
    """Whether ``x`` names a dtype (``"float64"``, ``np.float64``, a namespace dtype) rather than a backend (so
    ``m.to("float64")`` and ``t.to(np.float32)`` read as casts)."""
    if x is None or isinstance(x, (Backend, types.ModuleType)):
        return False
    if isinstance(x, str):
        return x.strip() in ("float16", "float32", "float64")
    try:
        resolve_dtype(np, x)
    except Exception:
        return False
    return True


def dtype_name(dtype: Any) -> str:
    """'float32' for any spelling of float32 (NumPy, CuPy, array_api_strict dtypes)."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype).split(".")[-1].strip("'>").replace("dtype(", "").strip("')")
