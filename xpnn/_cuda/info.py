"""What ``xpnn info`` reports about CUDA: CuPy and CUDA versions, the device, whether kernels are enabled.

Every probe is guarded: without CuPy, without a driver or without a device the answer says so instead of raising.
"""
from __future__ import annotations

from typing import Any


def _version(v: int) -> str:
    """CUDA encodes versions as 1000*major + 10*minor (0: no driver)."""
    if v == 0:
        return "none"
    return f"{v // 1000}.{(v % 1000) // 10}"


def cuda_info() -> dict[str, Any]:
    """CuPy/CUDA versions, device and kernel sources (whether kernels are enabled is ``xpnn.kernels_enabled()``:
    this package never imports the dispatcher, which imports it)."""
    from . import registry, sources

    out: dict[str, Any] = {
        "cupy": None,
        "cuda_runtime": None,
        "cuda_driver": None,
        "nvrtc": None,
        "device": None,
        "compute_capability": None,
        "kernels": len(registry.RAW) + len(registry.elementwise()),
    }
    try:
        out["kernel_sources"] = str(sources.kernel_dir())
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        out["kernel_sources"] = f"missing ({exc})"
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001
        out["cupy"] = f"not installed ({type(exc).__name__})"
        return out
    out["cupy"] = cupy.__version__
    probes = {
        "cuda_runtime": lambda: _version(cupy.cuda.runtime.runtimeGetVersion()),
        "cuda_driver": lambda: _version(cupy.cuda.runtime.driverGetVersion()),
        "nvrtc": lambda: ".".join(str(v) for v in cupy.cuda.nvrtc.getVersion()),
    }
    for key, probe in probes.items():
        try:
            out[key] = probe()
        except Exception as exc:  # noqa: BLE001
            out[key] = f"unavailable ({type(exc).__name__})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001
        out["device"] = f"none ({type(exc).__name__}: {exc})"
        return out
    if n == 0:
        out["device"] = "none (0 CUDA devices)"
        return out
    try:
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        out["device"] = name.decode() if isinstance(name, bytes) else str(name)
        out["compute_capability"] = dev.compute_capability
        out["device_count"] = n
    except Exception as exc:  # noqa: BLE001
        out["device"] = f"unavailable ({type(exc).__name__}: {exc})"
    return out
