r"""Robust loss functions of :func:`least_squares` and the scaling that reduces them to
ordinary least squares.

With a loss ``rho`` and a soft margin ``C`` (``f_scale``) the cost is

.. math::

    F(x) = \frac{C^2}{2} \sum_i \rho(z_i), \qquad z_i = (f_i(x) / C)^2 .

Its gradient and the Gauss–Newton part of its Hessian (dropping the second derivatives of
``f``, as Triggs et al. 2000 do for robustified least squares) are

.. math::

    \nabla F = J^T (\rho'(z) \odot f), \qquad
    \nabla^2 F \approx J^T \operatorname{diag}(\rho'(z) + 2 \rho''(z) z) J .

With the row weights ``w = sqrt(max(rho' + 2 rho'' z, eps))`` the weighted system
``f_w = rho' f / w``, ``J_w = diag(w) J`` has ``J_w^T f_w = grad F`` and ``J_w^T J_w`` equal
to that Hessian (where the weight is not clipped), so every Levenberg–Marquardt step of
``1/2 ||f_w + J_w p||^2`` is a Gauss–Newton step of ``F``. This is the scaling of
``scipy.optimize.least_squares`` (``scale_for_robust_loss_function``); ``eps`` is the
machine epsilon of the dtype (scipy: of float64). The clip keeps the weights positive where
``rho' + 2 rho'' z <= 0`` (the far tails of ``"cauchy"`` and ``"arctan"``, whose cost is
not convex in ``f`` there).

Each loss gives ``(rho(z), rho'(z), rho''(z))`` elementwise, written so that a large ``z``
(an overflowing ``f / C``) gives the limits ``(inf or a finite limit, 0, 0)``, never NaN.

References
----------
Triggs, B., McLauchlan, P. F., Hartley, R. I., Fitzgibbon, A. W. Bundle adjustment — a
modern synthesis. Vision Algorithms: Theory and Practice, LNCS 1883, Springer, 2000,
pp. 298-372.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

from . import _dispatch

__all__ = ["LOSSES", "RobustLoss", "make_loss"]

Array = Any

#: The loss names of ``scipy.optimize.least_squares``.
LOSSES = ("linear", "soft_l1", "huber", "cauchy", "arctan")


def _soft_l1(xp: Any, z: Array) -> tuple[Array, Array, Array]:
    """``rho = 2 (sqrt(1 + z) - 1)``: a smooth ``|f|`` for large residuals."""
    t = 1.0 + z
    s = xp.sqrt(t)
    d1 = 1.0 / s
    return 2.0 * (s - 1.0), d1, -0.5 * d1 / t  # (1/s)/t: no overflow of s t


def _huber(xp: Any, z: Array) -> tuple[Array, Array, Array]:
    """``rho = z`` for ``z <= 1``, else ``2 sqrt(z) - 1``."""
    inlier = z <= 1.0
    one = xp.ones_like(z)
    s = xp.sqrt(xp.where(inlier, one, z))  # the square root only where it is used
    rho = xp.where(inlier, z, 2.0 * s - 1.0)
    r = 1.0 / s
    d1 = xp.where(inlier, one, r)
    d2 = xp.where(inlier, xp.zeros_like(z), -0.5 * r * r * r)
    return rho, d1, d2


def _cauchy(xp: Any, z: Array) -> tuple[Array, Array, Array]:
    """``rho = log(1 + z)``."""
    t = 1.0 + z
    d1 = 1.0 / t
    return xp.log1p(z), d1, -(d1 * d1)


def _arctan(xp: Any, z: Array) -> tuple[Array, Array, Array]:
    """``rho = arctan(z)``; for ``z > 1`` the derivatives in ``u = 1/z`` (no ``z^2``
    overflow): ``rho' = u^2 / (1 + u^2)``, ``rho'' = -2 u^3 / (1 + u^2)^2``."""
    small = z <= 1.0
    one = xp.ones_like(z)
    zs = xp.where(small, z, one)  # z where z <= 1
    u = 1.0 / xp.where(small, one, z)  # 1/z where z > 1
    ts, tu = 1.0 + zs * zs, 1.0 + u * u
    d1 = xp.where(small, 1.0 / ts, (u * u) / tu)
    d2 = xp.where(small, -2.0 * zs / (ts * ts), -2.0 * (u * u * u) / (tu * tu))
    return xp.atan(z), d1, d2


_BUILTIN: dict[str, Callable[[Any, Array], tuple[Array, Array, Array]]] = {
    "soft_l1": _soft_l1,
    "huber": _huber,
    "cauchy": _cauchy,
    "arctan": _arctan,
}


class LossTerms(NamedTuple):
    """A robust loss evaluated at residuals ``f``.

    ``rho`` is ``rho(z)`` (unscaled, ``cost = C^2 / 2 sum(rho)``), ``f_w`` and ``w`` the
    weighted residuals and the row weights of the Jacobian.
    """

    cost: float
    rho: Array
    f_w: Array
    w: Array


class RobustLoss:
    """A robust loss configured with its margin ``C``; :meth:`terms` evaluates it."""

    def __init__(
        self,
        name: str,
        rho: Callable[..., Any],
        f_scale: float,
        xp: Any,
        dtype: Any,
        device: Any,
    ) -> None:
        self.name, self.rho_fn, self.f_scale = name, rho, f_scale
        self.xp, self.dtype, self.device = xp, dtype, device
        self.eps = float(xp.finfo(dtype).eps)
        self.root_max = math.sqrt(float(xp.finfo(dtype).max))

    def _rho(self, z: Array, where: str) -> tuple[Array, Array, Array]:
        xp = self.xp
        if self.name in _BUILTIN:
            return _BUILTIN[self.name](xp, z)
        r = self.rho_fn(z)  # a user's callable, as in scipy: an array of shape (3, m)
        if not _dispatch.is_array(r):
            try:
                r = xp.asarray(r, dtype=self.dtype, device=self.device)
            except Exception as exc:  # any backend's conversion error
                raise TypeError(
                    "loss (a callable) must return an array of shape (3, m) with rho(z), "
                    f"rho'(z), rho''(z), got {type(r).__name__} at {where}"
                ) from exc
        m = int(z.shape[0])
        if tuple(r.shape) != (3, m):
            raise ValueError(
                f"loss (a callable) must return an array of shape (3, m) = (3, {m}) with "
                f"rho(z), rho'(z), rho''(z), got shape {tuple(r.shape)} at {where}"
            )
        if r.dtype != self.dtype:
            raise TypeError(
                f"loss (a callable) returned dtype {r.dtype} at {where}, but x0 has dtype "
                f"{self.dtype}; it must return the dtype of z"
            )
        return r[0, ...], r[1, ...], r[2, ...]

    def terms(self, f: Array, where: str) -> LossTerms:
        """The cost and the weighted system at the residuals ``f`` (finite).

        A cost that is not finite (an overflow, or NaN from a callable loss) is returned as
        ``inf`` for the caller to reject the point; the weights are then meaningless.
        """
        xp, c = self.xp, self.f_scale
        # z = (f / C)^2, inf where it would overflow (no overflow warning, no NaN below)
        a = xp.abs(f)
        big = a > self.root_max * c
        a = xp.where(big, xp.zeros_like(a), a) / c
        z = xp.where(big, xp.full_like(a, math.inf), a * a)
        rho, d1, d2 = self._rho(z, where)
        total = float(xp.sum(rho))
        cost = 0.5 * c * c * total if math.isfinite(total) else math.inf
        # Triggs et al. (2000): J^T diag(rho' + 2 rho'' z) J is the Gauss-Newton Hessian of
        # the robust cost; its square root weighs the rows, clipped at eps (scipy).
        floor = xp.asarray(self.eps, dtype=self.dtype, device=self.device)
        infinite = z == math.inf  # there rho'' z -> 0 for every built-in loss; 0 * inf is NaN
        d2z = xp.where(infinite, xp.zeros_like(z), d2 * xp.where(infinite, xp.zeros_like(z), z))
        w = xp.sqrt(xp.maximum(d1 + 2.0 * d2z, floor))
        return LossTerms(cost=cost, rho=rho, f_w=f * (d1 / w), w=w)

    def reduction(self, old: LossTerms, new: LossTerms) -> float:
        """``F(x) - F(x_new)`` summed from the elementwise differences (finite costs)."""
        c = self.f_scale
        return 0.5 * c * c * float(self.xp.sum(old.rho - new.rho))


def make_loss(loss: Any, f_scale: Any, xp: Any, dtype: Any, device: Any) -> RobustLoss | None:
    """Check ``loss`` and ``f_scale``; ``None`` for the least-squares loss."""
    if isinstance(f_scale, bool) or not isinstance(f_scale, numbers.Real):
        raise TypeError(f"f_scale must be a float > 0, got {type(f_scale).__name__}")
    scale = float(f_scale)
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"f_scale must be a finite number > 0, got {scale}")
    if callable(loss):
        return RobustLoss("callable", loss, scale, xp, dtype, device)
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(
            f"loss must be one of {LOSSES} or a callable rho(z) returning an array of shape "
            f"(3, m), got {loss!r}"
        )
    if loss == "linear":
        return None
    return RobustLoss(loss, _BUILTIN[loss], scale, xp, dtype, device)
