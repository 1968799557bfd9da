"""CPU shim: xpnn's CUDA sources compiled with g++ and run through the same launch code as on a GPU."""
from .loader import ShimLoader, build, shim_provider

__all__ = ["ShimLoader", "build", "shim_provider"]
