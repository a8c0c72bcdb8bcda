"""Overflow-safe arithmetic and the Jacobian-derived quantities of :func:`least_squares`.

* :func:`safe_dot`, :func:`safe_norm`: ``a . b`` and ``||a||_2`` with both vectors divided
  by their largest magnitude first, so that nothing overflows in the array arithmetic for
  values near the dtype's range; the scales are multiplied back as Python floats.
* :func:`cost_reduction`: ``1/2 (||f||^2 - ||f_new||^2) = 1/2 (f - f_new) . (f + f_new)``,
  the factored form, with no cancellation of two nearly equal costs near a solution.
* :func:`gradient` ``g = J^T f``, :func:`gradient_measure` (MINPACK's gtol test
  ``max_j |g_j| / (||J e_j|| ||f||)``, the cosines between the columns of ``J`` and
  ``f``), :func:`column_norms` ``||J e_j||`` (of a dense or a sparse ``J``; unknown for a
  matrix-free operator).
* :func:`scaled_jacobian` ``J_s = J D^{-1}`` (columns of variables held on a bound zeroed),
  and :func:`max_scaled_curvature` ``max_j (J_s^T J_s)_jj`` for the initial damping
  ``mu_0 = tau max_j (J_s^T J_s)_jj`` (a power-iteration estimate of ``||J_s||_2^2`` when
  ``J`` is matrix-free).
"""

from __future__ import annotations

import math
from typing import Any

from ._operator import FunctionOperator, LinearOperator
from ._sparse import SparseOperator

__all__ = [
    "column_norms",
    "cost_reduction",
    "gradient",
    "gradient_measure",
    "inf_norm",
    "max_abs",
    "max_scaled_curvature",
    "safe_dot",
    "safe_norm",
    "scaled_jacobian",
]

Array = Any

# Power iterations for the largest eigenvalue of the scaled J^T J when J is matrix-free.
_POWER_ITERS = 8


def max_abs(xp: Any, a: Array) -> float:
    return float(xp.max(xp.abs(a)))


def inf_norm(xp: Any, g: Array) -> float:
    """``||g||_inf`` (NaN when ``g`` holds NaN: the result reports it, never hides it)."""
    return float(xp.max(xp.abs(g)))


def safe_dot(xp: Any, a: Array, b: Array) -> float:
    """``a . b`` of finite vectors without overflow in the array arithmetic.

    Both are divided by their largest magnitude first; the product of the two scales is a
    Python float, which becomes ``inf`` silently where the dot product overflows. A scaled
    sum of exactly zero gives ``0`` (not ``inf * 0``), whatever the scales.
    """
    sa, sb = max_abs(xp, a), max_abs(xp, b)
    if sa == 0.0 or sb == 0.0:
        return 0.0
    scaled = float(xp.sum((a / sa) * (b / sb)))
    return 0.0 if scaled == 0.0 else sa * sb * scaled


def safe_norm(xp: Any, a: Array) -> float:
    """``||a||_2`` of a finite vector without overflow (scaled like :func:`safe_dot`)."""
    sa = max_abs(xp, a)
    if sa == 0.0 or not math.isfinite(sa):
        return sa
    return sa * float(xp.linalg.vector_norm(a / sa))


def cost_reduction(xp: Any, f: Array, f_new: Array) -> float:
    """``1/2 (||f||^2 - ||f_new||^2) = 1/2 (f - f_new) . (f + f_new)``, both finite.

    The factored form has no cancellation of two nearly equal costs near a solution.
    """
    s = max(max_abs(xp, f), max_abs(xp, f_new))
    if s == 0.0:
        return 0.0
    a, b = f / s, f_new / s
    return 0.5 * s * s * float(xp.sum((a - b) * (a + b)))


def column_norms(xp: Any, Jd: Array | None, J_op: LinearOperator) -> Array | None:
    """``||J e_j||`` of a dense (``Jd``) or sparse ``J``; ``None`` when matrix-free."""
    if Jd is not None:
        return xp.linalg.vector_norm(Jd, axis=0)
    if isinstance(J_op, SparseOperator):
        return J_op.column_norms()
    return None


def gradient(xp: Any, Jd: Array | None, J_op: LinearOperator, f: Array) -> Array:
    return Jd.T @ f if Jd is not None else J_op.rmatvec(f)


def gradient_measure(xp: Any, g: Array, fnorm: float, col_norms: Array | None) -> float:
    """MINPACK's ``max_j |g_j| / (||J e_j|| ||f||)`` (or ``||g||_inf`` when the column
    norms are unknown: a matrix-free ``J``)."""
    if fnorm == 0.0:
        return 0.0
    if col_norms is None:
        return float(xp.max(xp.abs(g)))
    safe = xp.where(col_norms > 0, col_norms, xp.ones_like(col_norms))
    cosines = xp.where(col_norms > 0, xp.abs(g) / safe, xp.zeros_like(g))
    return float(xp.max(cosines)) / fnorm


def scaled_jacobian(
    xp: Any, Jd: Array | None, J_op: LinearOperator, D: Array | None, free: Array | None = None
) -> Array | LinearOperator:
    """``J D^{-1}`` as an array (materialized), a sparse operator (same pattern) or an
    operator (matrix-free); with ``free`` (bounds), the columns of the fixed variables
    zeroed."""
    if free is not None:
        ones = xp.ones(free.shape, dtype=J_op.dtype, device=J_op.device)
        keep = xp.where(free, ones, xp.zeros_like(ones))
        D_free = keep if D is None else keep / D
        if Jd is not None:
            return Jd * D_free[None, :]
        if isinstance(J_op, SparseOperator):
            return J_op.scale(columns=D_free)
        return FunctionOperator(
            lambda X: J_op.matmat(D_free[:, None] * X),
            lambda Y: D_free[:, None] * J_op.rmatmat(Y),
            shape=J_op.shape,
            dtype=J_op.dtype,
            xp=xp,
            device=J_op.device,
        )
    if Jd is not None:
        return Jd if D is None else Jd / D[None, :]
    if D is None:
        return J_op
    inv = 1.0 / D
    if isinstance(J_op, SparseOperator):
        return J_op.scale(columns=inv)
    return FunctionOperator(
        lambda X: J_op.matmat(inv[:, None] * X),
        lambda Y: inv[:, None] * J_op.rmatmat(Y),
        shape=J_op.shape,
        dtype=J_op.dtype,
        xp=xp,
        device=J_op.device,
    )


def max_scaled_curvature(
    xp: Any, J_op: LinearOperator, D: Array | None, col_norms: Array | None, sampler: Any
) -> float:
    """``max_j (J_s^T J_s)_jj`` from the column norms (dense or sparse ``J``), else a
    power estimate of ``||J_s||_2^2`` (matrix-free)."""
    if col_norms is not None:
        scaled = col_norms if D is None else col_norms / D
        return float(xp.max(scaled)) ** 2
    Js = scaled_jacobian(xp, None, J_op, D)
    v = sampler.fold_in(0).normal((Js.shape[1],), xp=xp, dtype=Js.dtype, device=Js.device)
    lam = 0.0
    for _ in range(_POWER_ITERS):
        v = v / safe_norm(xp, v)
        w = Js.rmatvec(Js.matvec(v))
        lam = safe_norm(xp, w)
        if lam == 0.0 or not math.isfinite(lam):
            break
        v = w
    return lam if math.isfinite(lam) and lam > 0 else 1.0
