"""Boundary checks shared by the public functions; messages name argument, expected, received."""

from __future__ import annotations

import numbers
from typing import Any

from . import _dispatch

__all__: list[str] = []

Array = Any


def check_int(value: Any, name: str, *, low: int, high: int | None = None) -> int:
    """An int in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_float_dtype(xp: Any, dtype: Any, name: str) -> None:
    """``float32`` or ``float64``: half precision has no eigensolvers or Cholesky to rely on."""
    try:
        floating = xp.isdtype(dtype, "real floating")
    except Exception:  # each backend raises its own type for a non-dtype
        floating = False
    if not floating:
        raise TypeError(f"{name} must be a real floating dtype (float32 or float64), got {dtype!r}")
    if dtype not in (xp.float32, xp.float64):
        raise TypeError(
            f"{name} {dtype} is not supported: use float32 or float64 (half precision lacks the "
            "eigendecompositions and Cholesky factorizations the solvers need); cast the inputs"
        )


def check_nonnegative(
    value: Any,
    name: str,
    *,
    strict: bool = False,
    context: str = "",
    xp: Any = None,
    dtype: Any = None,
) -> Any:
    """Check ``value >= 0`` (``> 0`` if ``strict``) and return it as a Python float.

    A concrete 0-d array or NumPy scalar becomes a Python float, so that it cannot promote
    the dtype of the arrays it multiplies (a ``numpy.float64`` times a float32 array is
    float64 under NEP 50). A traced value cannot be inspected: it is returned as is, cast
    to ``dtype`` when ``xp`` and ``dtype`` are given.
    """
    if _dispatch.is_array(value):
        if getattr(value, "ndim", 0) != 0:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        if _dispatch.is_tracing(value):
            return value if xp is None else xp.astype(value, dtype)
        number = float(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    else:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    where = f" with {context}" if context else ""
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {number}")
    if strict and number <= 0:
        raise ValueError(f"{name} must be > 0{where}, got {number}")
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {number}")
    if xp is not None and dtype is not None and number > float(xp.finfo(dtype).max):
        raise ValueError(
            f"{name} must be representable in {dtype} (at most {float(xp.finfo(dtype).max):.3e}), "
            f"got {number:.3e}"
        )
    return number


def check_rhs(
    B: Any, n: int, dtype: Any, name: str, where: str, against: str = "the operator"
) -> tuple[Array, bool]:
    """A vector ``(n,)`` or block ``(n, m)`` of ``dtype`` (that of ``against``); returns the
    block and a vector flag."""
    if not _dispatch.is_array(B):
        raise TypeError(f"{where}: {name} must be an array, got {type(B).__name__}")
    if B.ndim not in (1, 2) or B.shape[0] != n:
        raise ValueError(
            f"{where}: {name} must have shape ({n},) or ({n}, m) for {against}, got "
            f"{tuple(B.shape)}"
        )
    if B.dtype != dtype:
        raise TypeError(f"{where}: {name} has dtype {B.dtype}, {against} has {dtype}")
    return (B[:, None], True) if B.ndim == 1 else (B, False)


def check_finite(xp: Any, X: Array, what: str, hint: str) -> None:
    """Raise ``ValueError`` when a concrete array holds NaN or Inf (skipped under tracing)."""
    if _dispatch.is_tracing(X):
        return
    if not bool(xp.all(xp.isfinite(X))):
        raise ValueError(f"{what} contains NaN or Inf; {hint}")
