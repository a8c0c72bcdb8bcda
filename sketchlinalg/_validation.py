"""Boundary checks shared by the public functions; messages name argument, expected, received."""

from __future__ import annotations

import numbers
from typing import Any

import array_api_compat as _compat

from . import _dispatch

__all__: list[str] = []

Array = Any


def check_int(value: Any, name: str, *, low: int, high: int | None = None) -> int:
    """An int in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be in {bound}, got {value}")
    return value


def check_nonnegative(value: Any, name: str, *, strict: bool = False, context: str = "") -> None:
    """``value >= 0`` (``> 0`` if ``strict``) for a Python number or a concrete 0-d array.

    A traced value cannot be inspected and is accepted as is.
    """
    if _compat.is_array_api_obj(value):
        if getattr(value, "ndim", 0) != 0:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        if _dispatch.is_tracing(value):
            return
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


def check_rhs(B: Any, n: int, dtype: Any, name: str, where: str) -> tuple[Array, bool]:
    """A vector ``(n,)`` or block ``(n, m)`` of ``dtype``; returns the block and a vector flag."""
    if not _compat.is_array_api_obj(B):
        raise TypeError(f"{where}: {name} must be an array, got {type(B).__name__}")
    if B.ndim not in (1, 2) or B.shape[0] != n:
        raise ValueError(
            f"{where}: {name} must have shape ({n},) or ({n}, m), got {tuple(B.shape)}"
        )
    if B.dtype != dtype:
        raise TypeError(f"{where}: {name} has dtype {B.dtype}, expected {dtype}")
    return (B[:, None], True) if B.ndim == 1 else (B, False)


def check_finite(xp: Any, X: Array, what: str, hint: str) -> None:
    """Raise ``ValueError`` when a concrete array holds NaN or Inf (skipped under tracing)."""
    if _dispatch.is_tracing(X):
        return
    if not bool(xp.all(xp.isfinite(X))):
        raise ValueError(f"{what} contains NaN or Inf; {hint}")
