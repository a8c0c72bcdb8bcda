r"""Finite bounds ``lb <= x <= ub`` for :func:`least_squares`: a projected Levenberg–Marquardt.

At a feasible ``x`` with gradient ``g = J^T f`` the variables split into the *fixed* ones,
which lie on a bound that ``-g`` points out of,

.. math::

    \mathcal{A}(x) = \{ j : x_j = l_j,\ g_j > 0 \} \cup \{ j : x_j = u_j,\ g_j < 0 \},

and the free ones. The damped Gauss–Newton step is solved on the free variables only (the
columns of ``J`` of the fixed ones are zeroed, so every direction method applies unchanged)
and projected onto the box, ``x_+ = P(x + p)``, ``P(z) = min(max(z, l), u)`` (Kanzow,
Yamashita and Fukushima 2004; Bertsekas 1982 for the active set). The gain ratio judges the
step actually taken, ``s = x_+ - x``, by its model decrease ``-(g^T s + 1/2 ||J s||^2)``;
as the trust region (or the damping) shrinks, ``s`` tends to the projected steepest-descent
step, which decreases the model while ``x`` is not stationary.

First-order optimality: ``x = P(x - g)``; the result reports ``||x - P(x - g)||_inf``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from . import _dispatch
from ._finite_diff import default_relative_step

__all__ = [
    "Box",
    "active_mask",
    "bounded_fd_jacobian",
    "free_mask",
    "project",
    "projected_gradient_norm",
]

Array = Any


class Box(NamedTuple):
    """The bounds ``lb <= x <= ub``, arrays of shape ``(n,)`` (``-inf``/``inf`` allowed)."""

    lb: Array
    ub: Array


def project(xp: Any, x: Array, box: Box) -> Array:
    """``P(x) = min(max(x, lb), ub)``: the nearest point of the box."""
    return xp.minimum(xp.maximum(x, box.lb), box.ub)


def free_mask(xp: Any, x: Array, g: Array, box: Box) -> Array:
    """``True`` for the free variables: not on a bound that ``-g`` points out of."""
    fixed = ((x <= box.lb) & (g > 0)) | ((x >= box.ub) & (g < 0))
    return ~fixed


def projected_gradient_norm(xp: Any, x: Array, g: Array, box: Box) -> float:
    """``||x - P(x - g)||_inf``: zero exactly at the first-order points of the box
    (NaN when ``g`` holds NaN, never hidden)."""
    r = x - project(xp, x - g, box)
    r = xp.where(xp.isnan(g), g, r)
    return float(xp.max(xp.abs(r)))


def _default_int(xp: Any, device: Any) -> Any:
    info = getattr(xp, "__array_namespace_info__", None)
    if info is not None:
        try:
            return info().default_dtypes(device=device)["integral"]
        except Exception:  # an older namespace without default_dtypes(device=...)
            pass
    return xp.int64


def active_mask(xp: Any, x: Array, box: Box | None, rtol: float) -> Array:
    """scipy's ``active_mask``: ``-1`` on the lower bound, ``+1`` on the upper, ``0`` free.

    A bound is active when ``x`` is within ``rtol max(1, |bound|)`` of it (scipy's
    ``find_active_constraints`` with ``rtol = xtol``); zeros without bounds.
    """
    device = _dispatch.device_of(x)
    dtype = _default_int(xp, device)
    if box is None:
        return xp.zeros(x.shape, dtype=dtype, device=device)
    one = xp.ones_like(x)
    lower_dist, upper_dist = x - box.lb, box.ub - x
    lower_thr = rtol * xp.maximum(one, xp.abs(box.lb))
    upper_thr = rtol * xp.maximum(one, xp.abs(box.ub))
    lower = xp.isfinite(box.lb) & (lower_dist <= xp.minimum(upper_dist, lower_thr))
    upper = xp.isfinite(box.ub) & (upper_dist <= xp.minimum(lower_dist, upper_thr))
    return xp.astype(upper, dtype) - xp.astype(lower, dtype)


def bounded_fd_jacobian(
    fun: Callable[[Array], Array],
    x: Array,
    f0: Array,
    *,
    scheme: str,
    rel_step: Array | float | None,
    xp: Any,
    box: Box,
) -> Array:
    """Finite-difference Jacobian whose points all lie in the box (scipy's rule).

    The step ``h_j`` of :func:`finite_difference_jacobian` (``s x_j``, or ``s`` at
    ``x_j = 0``). ``"2-point"``: forward, or backward where ``x_j + h_j`` leaves the box.
    ``"3-point"``: central where ``x_j +- h_j`` both fit, else the one-sided three-point
    formula ``(-3 f_0 + 4 f(x + h e_j) - f(x + 2 h e_j)) / (2 h)`` towards the side with room.
    When the box is narrower than the step the step is cut to the room on the wider side.
    """
    n = x.shape[0]
    eps = float(xp.finfo(x.dtype).eps)
    s = default_relative_step(scheme, eps) if rel_step is None else rel_step
    h = xp.abs(s * xp.where(x != 0, x, xp.ones_like(x)))
    room_up, room_down = box.ub - x, x - box.lb
    factor = 1.0 if scheme == "2-point" else 2.0
    index = xp.arange(n, device=_dispatch.device_of(x))
    columns = []
    for j in range(n):
        e = xp.astype(index == j, x.dtype)
        hj, up, down = float(h[j]), float(room_up[j]), float(room_down[j])
        if scheme == "3-point" and hj <= up and hj <= down:
            x_plus, x_minus = x + hj * e, x - hj * e
            columns.append((fun(x_plus) - fun(x_minus)) / (x_plus[j] - x_minus[j]))
            continue
        sign = 1.0 if factor * hj <= up or up >= down else -1.0
        hj = min(hj, (up if sign > 0 else down) / factor)
        x1 = x + sign * hj * e
        step = float(x1[j] - x[j])
        if scheme == "2-point":
            columns.append((fun(x1) - f0) / step)
        else:
            x2 = x + 2.0 * sign * hj * e
            x2 = project(xp, x2, box)
            columns.append((-3.0 * f0 + 4.0 * fun(x1) - fun(x2)) / (2.0 * step))
    return xp.stack(columns, axis=1)
