"""The inputs of :func:`least_squares`: the start, the bounds, scipy's keywords that have
another name here or no counterpart, and the checks of the options (tolerances, scales,
``direction_options``).

Each check names the argument, what was expected and what was received; a keyword of
``scipy.optimize.least_squares`` that is not supported names what to use instead.
"""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Mapping
from typing import Any

import array_api_compat as _compat

from . import _dispatch
from ._solvers import solver_options
from ._validation import check_float_dtype

__all__ = [
    "as_start",
    "check_bounds",
    "check_direction_options",
    "check_positive",
    "check_scale",
    "check_scipy_only",
    "check_tol",
    "check_verbose",
]

Array = Any


def _host_namespace() -> Any:
    """``array_api_compat.numpy``, imported on first use: the namespace for Python data.

    The core imports no framework at import time; a start given as a list or a Python
    number is host data, which scipy converts with NumPy too.
    """
    try:
        return importlib.import_module("array_api_compat.numpy")
    except ImportError as exc:
        raise TypeError(
            "x0 is not an array, and converting Python data (a list, tuple or number) needs "
            "NumPy, which is not installed; pass x0 as an array of your backend"
        ) from exc


def _default_float(xp: Any, device: Any) -> Any:
    """The backend's default real floating dtype (float64 for NumPy; PyTorch's
    ``torch.get_default_dtype()``; JAX's float32 without ``jax_enable_x64``)."""
    info = getattr(xp, "__array_namespace_info__", None)
    if info is not None:
        try:
            return info().default_dtypes(device=device)["real floating"]
        except Exception:  # an older namespace without default_dtypes(device=...)
            pass
    return xp.float64 if _dispatch.has_float64(xp, device) else xp.float32


def as_start(x0: Any) -> tuple[Any, Array]:
    """``x0`` as a finite 1-D real floating array, and its namespace.

    An array of any array-API backend keeps its backend; integer and boolean arrays become
    the backend's default real floating dtype. Python data (a list, a tuple, a number)
    becomes a NumPy array (as in scipy), so ``fun`` then receives NumPy arrays. A 0-d start
    becomes shape ``(1,)``.
    """
    if _dispatch.is_array(x0):
        xp = _compat.array_namespace(x0)
    else:
        if x0 is None or isinstance(x0, (str, bytes, Mapping)):
            raise TypeError(
                "x0 must be an array of an array-API backend, or a list, tuple or number, "
                f"got {type(x0).__name__}"
            )
        xp = _host_namespace()
        try:
            x0 = xp.asarray(x0)
        except Exception as exc:  # NumPy's conversion error, whatever its type
            raise TypeError(
                "x0 must be an array of an array-API backend, or a list, tuple or number that "
                f"NumPy converts to a 1-D array, got {type(x0).__name__} ({exc})"
            ) from exc
    dtype = x0.dtype
    if xp.isdtype(dtype, "complex floating"):
        raise ValueError(
            f"x0 must be real, got dtype {dtype}; split a complex problem into real and "
            "imaginary parts (2n real variables, 2m residuals)"
        )
    if xp.isdtype(dtype, ("integral", "bool")):
        x0 = xp.astype(x0, _default_float(xp, _dispatch.device_of(x0)))
    check_float_dtype(xp, x0.dtype, "x0's dtype")
    if x0.ndim == 0:
        x0 = xp.reshape(x0, (1,))
    if x0.ndim != 1:
        raise ValueError(f"x0 must be 1-D of shape (n,), got shape {tuple(x0.shape)}")
    if not bool(xp.all(xp.isfinite(x0))):
        bad = int(xp.sum(xp.astype(~xp.isfinite(x0), xp.int32)))
        raise ValueError(f"x0 holds {bad} NaN/Inf value(s); the starting point must be finite")
    return xp, x0


def _first(xp: Any, mask: Array) -> int:
    return int(xp.argmax(xp.astype(mask, xp.int32)))


def _bound(value: Any, name: str, xp: Any, x0: Array) -> Array:
    """One side of the bounds as an array of shape ``(n,)`` in the dtype of ``x0``."""
    n, dtype, device = int(x0.shape[0]), x0.dtype, _dispatch.device_of(x0)
    try:
        arr = xp.asarray(value, dtype=dtype, device=device)
    except Exception as exc:  # any backend's conversion error
        raise TypeError(
            f"bounds: {name} must be a number or an array of shape ({n},), got "
            f"{type(value).__name__}"
        ) from exc
    if arr.ndim == 0:
        arr = xp.broadcast_to(arr, (n,))
    if tuple(arr.shape) != (n,):
        raise ValueError(
            f"Inconsistent shapes between bounds and x0: {name} has shape {tuple(arr.shape)}, "
            f"x0 has shape ({n},); each bound must be a number or match x0"
        )
    if bool(xp.any(xp.isnan(arr))):
        raise ValueError(f"bounds: {name} holds NaN; use -inf / inf for an unbounded variable")
    return arr


def check_bounds(bounds: Any, xp: Any, x0: Array) -> tuple[Array, Array] | None:
    """scipy's forms of ``bounds`` and its checks; ``(lb, ub)`` of shape ``(n,)`` in the
    dtype of ``x0``, or ``None`` when every bound is infinite (unconstrained).

    ``None``, a 2-tuple ``(lb, ub)`` of numbers or arrays of shape ``(n,)``, or an object
    with ``lb`` and ``ub`` attributes (``scipy.optimize.Bounds``). As in scipy, ``lb < ub``
    everywhere and ``lb <= x0 <= ub`` (a start on a bound is feasible).
    """
    if bounds is None:
        return None
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        lb, ub = bounds.lb, bounds.ub
    else:
        if isinstance(bounds, (str, bytes)) or not hasattr(bounds, "__len__"):
            raise TypeError(
                "bounds must be None, a 2-tuple (lb, ub) or a scipy.optimize.Bounds, got "
                f"{type(bounds).__name__}"
            )
        if len(bounds) != 2:
            raise ValueError(
                f"bounds must contain 2 elements (lb, ub), got {len(bounds)}: {bounds!r}"
            )
        lb, ub = bounds
    lower, upper = _bound(lb, "lb", xp, x0), _bound(ub, "ub", xp, x0)
    crossed = lower >= upper
    if bool(xp.any(crossed)):
        j = _first(xp, crossed)
        raise ValueError(
            "Each lower bound must be strictly less than each upper bound: bounds has "
            f"lb[{j}] = {float(lower[j])} >= ub[{j}] = {float(upper[j])}"
        )
    outside = (x0 < lower) | (x0 > upper)
    if bool(xp.any(outside)):
        j = _first(xp, outside)
        count = int(xp.sum(xp.astype(outside, xp.int32)))
        raise ValueError(
            f"x0 is infeasible: {count} entr{'y lies' if count == 1 else 'ies lie'} outside "
            f"bounds, the first x0[{j}] = {float(x0[j])} not in [{float(lower[j])}, "
            f"{float(upper[j])}]"
        )
    if not bool(xp.any(xp.isfinite(lower) | xp.isfinite(upper))):
        return None
    return lower, upper


def check_scipy_only(tr_solver: Any, tr_options: Any, workers: Any) -> None:
    """scipy's keywords of the trust-region solvers and the finite differences that have
    another name here (``direction``, ``direction_options``) or no counterpart."""
    if tr_solver is not None:
        instead = {
            "exact": 'direction="svd" (one SVD per Jacobian; what "auto" picks for an array)',
            "lsmr": 'direction="nystrom-pcg" (products with J and J^T only, for large or '
            "matrix-free Jacobians), with its rank and rtol in direction_options",
        }
        raise ValueError(
            f"tr_solver={tr_solver!r} is not supported: scipy's trust-region solvers are "
            "chosen here with direction; use "
            + instead.get(
                tr_solver if isinstance(tr_solver, str) else "",
                'direction="svd" for scipy\'s "exact", "nystrom-pcg" for its "lsmr"',
            )
        )
    if tr_options is not None:
        if not isinstance(tr_options, Mapping):
            raise TypeError(
                f"tr_options must be a mapping or None, got {type(tr_options).__name__}"
            )
        if tr_options:
            raise ValueError(
                f"tr_options {sorted(tr_options)} are options of scipy's trust-region solvers "
                "and are not supported; pass the direction solver's options as "
                "direction_options (e.g. rank, rtol, maxiter for direction='nystrom-pcg')"
            )
    if workers is not None:
        raise ValueError(
            "workers is not supported: finite-difference Jacobians are evaluated in this "
            "process as array operations; give jac as a callable (automatic differentiation), "
            "or parallelize inside fun"
        )


def check_verbose(verbose: Any) -> int:
    """0, 1 or 2 (``True`` / ``False`` count as 1 / 0, as in scipy)."""
    if not isinstance(verbose, numbers.Integral) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    return int(verbose)


def check_tol(value: Any, name: str, eps: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float or None, got {type(value).__name__}")
    value = float(value)
    if not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0 or None, got {value}")
    return max(value, eps)


def check_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_direction_options(options: Mapping[str, Any] | None, direction: str) -> dict[str, Any]:
    """The options of ``direction``'s solver (for ``"auto"``: of Auto and Nystrom-PCG, the
    sketched method it may choose), plus ``seed``."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"direction_options must be a mapping, got {type(options).__name__}")
    valid = {"seed", *solver_options(direction)}
    if direction == "auto":
        valid |= set(solver_options("nystrom-pcg"))
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(
            f"direction_options has unknown key(s) {unknown} for direction={direction!r}; "
            f"valid: {sorted(valid)}"
        )
    return dict(options)


def check_scale(
    value: Any,
    name: str,
    xp: Any,
    dtype: Any,
    device: Any,
    n: int,
    *,
    allow_jac: bool = True,
) -> Any:
    """None, "jac" (if allowed), a positive float, or a positive array of shape (n,)."""
    if value is None:
        return None
    if isinstance(value, str):
        if allow_jac and value == "jac":
            return "jac"
        raise ValueError(
            f"{name} must be {'None, ' + repr('jac') + ', ' if allow_jac else 'None, '}"
            f"a positive float or an array of shape ({n},), got {value!r}"
        )
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        if not (number > 0 and math.isfinite(number)):
            raise ValueError(f"{name} must be positive and finite, got {number}")
        return number
    try:
        arr = xp.asarray(value, dtype=dtype, device=device)
    except Exception as exc:  # any backend's conversion error
        raise TypeError(
            f"{name} must be a positive float or an array of shape ({n},), got "
            f"{type(value).__name__}"
        ) from exc
    if arr.ndim == 0:
        arr = xp.reshape(arr, (1,)) if n == 1 else arr
    if tuple(arr.shape) not in ((n,), ()):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(arr.shape)}")
    if not bool(xp.all(xp.isfinite(arr) & (arr > 0))):
        raise ValueError(f"{name} must be positive and finite")
    return arr
