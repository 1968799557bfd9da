"""Exceptions raised at xpnn's public boundary."""
from __future__ import annotations


class XpnnError(Exception):
    """Base class of xpnn's own errors."""


class BackendUnavailableError(XpnnError, RuntimeError):
    """The requested backend cannot run here (no CuPy, no CUDA device, ...)."""


class ShapeError(XpnnError, ValueError):
    """An array has the wrong shape for the layer or function it was given to."""


class DTypeError(XpnnError, TypeError):
    """An array has a dtype the layer or function does not accept."""


class NamespaceMismatchError(XpnnError, TypeError):
    """Arrays from different array libraries (or devices) were mixed in one call."""


class NonFiniteError(XpnnError, FloatingPointError):
    """NaN or inf found where it would silently poison training (debug mode; ``fit``'s training loss)."""


class CheckpointError(XpnnError, ValueError):
    """A checkpoint file is missing, truncated, corrupt or does not match the model."""


class CaptureError(XpnnError, RuntimeError):
    """A training step cannot be captured in a CUDA graph (a host read, a new allocation, a changed shape/dtype)."""


class InplaceModifiedError(XpnnError, RuntimeError):
    """A value an op saved for backward was changed in place after the op ran (its version counter moved), so the
    gradient would be wrong: PyTorch's "modified by an inplace operation" error."""
