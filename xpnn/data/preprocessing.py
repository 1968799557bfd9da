"""Input preprocessing fitted on training data: ``Standardizer`` (zero mean, unit variance) and ``PCA``.

Both are written against the array API: they fit and transform arrays of whatever backend they are given
(fitted statistics live on that backend; ``to(backend)`` moves them).
"""
from __future__ import annotations

import warnings

from typing import Any, Optional, Union

from ..backend import BackendLike, get_backend, namespace_of
from ..errors import DTypeError, ShapeError

__all__ = ["Standardizer", "PCA"]


def _check_2d(where: str, xp: Any, X: Any, n_features: Optional[int] = None) -> None:
    if X.ndim != 2:
        raise ShapeError(f"{where}: expected X of shape (n_samples, n_features), got shape {tuple(X.shape)}")
    if not xp.isdtype(X.dtype, "real floating"):
        raise DTypeError(f"{where}: expected a floating X (float32/float64), got {X.dtype}; convert it first")
    if n_features is not None and X.shape[1] != n_features:
        raise ShapeError(f"{where}: fitted on {n_features} features, got X of shape {tuple(X.shape)}")


class Standardizer:
    """Per-feature standardization ``(X - mean) / std`` with the statistics of the data given to ``fit``.

    Constant features (std == 0, e.g. the blank corner pixels of the digits) are only centred (their scale is 1).
    Attributes after ``fit``: ``mean_`` and ``scale_``, shape ``(n_features,)``.
    """

    def __init__(self) -> None:
        self.mean_: Any = None
        self.scale_: Any = None

    def _fitted(self, where: str) -> None:
        if self.mean_ is None:
            raise RuntimeError(f"Standardizer.{where}: call fit(X) first")

    def fit(self, X: Any) -> "Standardizer":
        """X: ``(n_samples, n_features)`` floating. Returns self."""
        xp = namespace_of(X, where="Standardizer.fit")
        _check_2d("Standardizer.fit", xp, X)
        if X.shape[0] < 1:
            raise ShapeError("Standardizer.fit: X has no rows")
        # statistics of X - X[0]: a constant column is then exactly 0, so its std is exactly 0 (computed on X
        # itself, the rounding error of the float32 mean gives a spurious std like 1e-6 and the column would be
        # scaled by 1e6 instead of only centred)
        shift = X[0, ...]
        D = X - shift
        self.mean_ = shift + xp.mean(D, axis=0)
        std = xp.std(D, axis=0)
        self.scale_ = xp.where(std > 0, std, xp.ones_like(std))
        return self

    def transform(self, X: Any) -> Any:
        """``(X - mean_) / scale_``, same shape and namespace as X."""
        self._fitted("transform")
        xp = namespace_of(X, self.mean_, where="Standardizer.transform")
        _check_2d("Standardizer.transform", xp, X, int(self.mean_.shape[0]))
        return (X - xp.astype(self.mean_, X.dtype)) / xp.astype(self.scale_, X.dtype)

    def fit_transform(self, X: Any) -> Any:
        return self.fit(X).transform(X)

    def inverse_transform(self, Z: Any) -> Any:
        """``Z * scale_ + mean_``: back to the original units."""
        self._fitted("inverse_transform")
        xp = namespace_of(Z, self.mean_, where="Standardizer.inverse_transform")
        _check_2d("Standardizer.inverse_transform", xp, Z, int(self.mean_.shape[0]))
        return Z * xp.astype(self.scale_, Z.dtype) + xp.astype(self.mean_, Z.dtype)

    def to(self, backend: BackendLike) -> "Standardizer":
        """Move the fitted statistics to ``backend`` (a name, Backend or namespace). Returns self."""
        self._fitted("to")
        be = get_backend(backend)
        self.mean_, self.scale_ = be.asarray(self.mean_), be.asarray(self.scale_)
        return self

    def state_dict(self) -> dict[str, Any]:
        """``{"mean": ..., "scale": ...}`` for ``xpnn.save``."""
        self._fitted("state_dict")
        return {"mean": self.mean_, "scale": self.scale_}

    def load_state_dict(self, state: dict[str, Any]) -> "Standardizer":
        if set(state) != {"mean", "scale"}:
            raise KeyError(f"Standardizer.load_state_dict: expected keys mean, scale; got {sorted(state)}")
        if tuple(state["mean"].shape) != tuple(state["scale"].shape) or len(state["mean"].shape) != 1:
            raise ShapeError(
                f"Standardizer.load_state_dict: mean {tuple(state['mean'].shape)} and scale "
                f"{tuple(state['scale'].shape)} must both be (n_features,)"
            )
        self.mean_, self.scale_ = state["mean"], state["scale"]
        return self


class PCA:
    """Principal component analysis by SVD of the centred data: ``Z = (X - mean_) @ components_.T``.

    n_components: the number of components kept (an int), or a fraction in (0, 1): keep the fewest components
    that explain at least that share of the variance. ``whiten=True`` divides each component by its standard
    deviation so Z has unit variance per component at any scale of X (components whose singular value is below
    ``rtol * s_max``, i.e. numerically zero, are left unscaled instead of blown up; ``rtol=None`` is NumPy's
    ``matrix_rank`` tolerance ``max(n, d) * finfo(dtype).eps``; a relative tolerance, since an absolute ``eps``
    added to the variance stops being small when the data's scale is). Component signs are fixed (largest-magnitude entry positive)
    so the result does not depend on the backend's SVD. Attributes after ``fit``: ``mean_ (d,)``,
    ``components_ (k, d)``, ``explained_variance_ (k,)``, ``explained_variance_ratio_ (k,)``, ``whiten_scale_ (k,)``
    (the divisor used when whitening).
    """

    def __init__(self, n_components: Union[int, float], whiten: bool = False, rtol: Optional[float] = None, *,
                 eps: Optional[float] = None) -> None:
        if eps is not None:  # the first version's absolute floor, which made whitening scale-dependent
            warnings.warn("PCA: eps is no longer used (whitening divides by the standard deviation and leaves "
                          "components below rtol * the largest singular value unscaled); pass rtol instead",
                          DeprecationWarning, stacklevel=2)
        if isinstance(n_components, bool) or not isinstance(n_components, (int, float)):
            raise TypeError(f"PCA: n_components must be an int or a float fraction, got {n_components!r}")
        if isinstance(n_components, float) and not 0.0 < n_components < 1.0:
            raise ValueError(f"PCA: a float n_components is a variance fraction in (0, 1), got {n_components}")
        if isinstance(n_components, int) and n_components < 1:
            raise ValueError(f"PCA: n_components must be >= 1, got {n_components}")
        if rtol is not None and not 0.0 <= rtol < 1.0:
            raise ValueError(f"PCA: rtol is a relative tolerance in [0, 1), got {rtol!r}")
        self.n_components = n_components
        self.whiten = whiten
        self.rtol = rtol
        self.mean_: Any = None
        self.components_: Any = None
        self.explained_variance_: Any = None
        self.explained_variance_ratio_: Any = None
        self.whiten_scale_: Any = None

    def _fitted(self, where: str) -> None:
        if self.components_ is None:
            raise RuntimeError(f"PCA.{where}: call fit(X) first")

    def fit(self, X: Any) -> "PCA":
        """X: ``(n_samples, n_features)`` floating, at least 2 rows. Returns self."""
        xp = namespace_of(X, where="PCA.fit")
        _check_2d("PCA.fit", xp, X)
        n, d = int(X.shape[0]), int(X.shape[1])
        if n < 2:
            raise ShapeError(f"PCA.fit: needs at least 2 samples, got X of shape {tuple(X.shape)}")
        self.mean_ = xp.mean(X, axis=0)
        _, s, vt = xp.linalg.svd(X - self.mean_, full_matrices=False)
        var = s * s / (n - 1)
        total = xp.sum(var)
        ratio = var / total if float(total) > 0 else xp.zeros_like(var)
        k_max = min(n, d)
        if isinstance(self.n_components, float):
            cum = xp.cumulative_sum(ratio)
            k = int(xp.sum(xp.astype(cum < self.n_components, xp.int64))) + 1
            k = min(k, k_max)
        else:
            if self.n_components > k_max:
                raise ValueError(
                    f"PCA.fit: n_components={self.n_components} exceeds min(n_samples, n_features)={k_max} "
                    f"for X of shape {tuple(X.shape)}"
                )
            k = self.n_components
        comps = vt[:k, ...]
        # deterministic signs: the largest-|.| entry of each component positive (ties: any of them; never 0)
        mag = xp.abs(comps)
        peak = xp.where(mag == xp.max(mag, axis=1, keepdims=True), comps, xp.zeros_like(comps))
        sign = xp.sign(xp.sum(peak, axis=1, keepdims=True))
        sign = xp.where(sign == 0, xp.ones_like(sign), sign)
        self.components_ = comps * sign
        self.explained_variance_ = var[:k]
        self.explained_variance_ratio_ = ratio[:k]
        rtol = self.rtol if self.rtol is not None else max(n, d) * float(xp.finfo(s.dtype).eps)
        tiny = s[:k] <= rtol * xp.max(s)  # numerically zero components: a division would only amplify noise
        self.whiten_scale_ = xp.where(tiny, xp.ones_like(s[:k]), xp.sqrt(var[:k]))
        return self

    def transform(self, X: Any) -> Any:
        """``(n, d) -> (n, k)``."""
        self._fitted("transform")
        xp = namespace_of(X, self.components_, where="PCA.transform")
        _check_2d("PCA.transform", xp, X, int(self.mean_.shape[0]))
        Z = (X - xp.astype(self.mean_, X.dtype)) @ xp.astype(self.components_, X.dtype).T
        if self.whiten:
            Z = Z / xp.astype(self.whiten_scale_, X.dtype)
        return Z

    def fit_transform(self, X: Any) -> Any:
        return self.fit(X).transform(X)

    def inverse_transform(self, Z: Any) -> Any:
        """``(n, k) -> (n, d)``: the reconstruction from the kept components."""
        self._fitted("inverse_transform")
        xp = namespace_of(Z, self.components_, where="PCA.inverse_transform")
        _check_2d("PCA.inverse_transform", xp, Z, int(self.components_.shape[0]))
        if self.whiten:
            Z = Z * xp.astype(self.whiten_scale_, Z.dtype)
        return Z @ xp.astype(self.components_, Z.dtype) + xp.astype(self.mean_, Z.dtype)

    def to(self, backend: BackendLike) -> "PCA":
        """Move the fitted arrays to ``backend``. Returns self."""
        self._fitted("to")
        be = get_backend(backend)
        for name in ("mean_", "components_", "explained_variance_", "explained_variance_ratio_", "whiten_scale_"):
            setattr(self, name, be.asarray(getattr(self, name)))
        return self
