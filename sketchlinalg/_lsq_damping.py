r"""Damping control of the Levenberg–Marquardt loop of :func:`least_squares`.

Each trial step minimizes the damped, scaled model ``||f + J p||^2 + mu ||D p||^2``; this
module holds the two rules that set ``mu`` from the gain ratio

.. math::

    \rho = \frac{F(x) - F(x + p)}{F(x) - \tfrac12 \|f + J p\|^2}

of the previous trial, and the trust-region step that the first of them needs.

* :class:`TrustRegion` (Moré 1978), with the SVD of ``J_s = J D^{-1}``: the radius
  ``Delta`` is controlled and ``mu`` follows from it, ``||D p(mu)|| = Delta`` (``mu = 0``,
  the Gauss–Newton step, whenever that fits). ``rho < 1/4`` or a rejected step:
  ``Delta <- ||D p|| / 4``; ``rho > 3/4`` with the step on the boundary:
  ``Delta <- 2 Delta``. :func:`trust_region_step` finds ``mu`` by Newton's method on
  ``1/Delta - 1/||D p(mu)||``, safeguarded by bisection (Moré 1978, sec. 5).
* :class:`Nielsen` (Nielsen 1999), with one solve per trial by any direction method:
  accepted, ``mu <- mu max(1/3, 1 - (2 rho - 1)^3)``, ``nu <- 2``; rejected,
  ``mu <- nu mu``, ``nu <- 2 nu``.

Both expose ``mu``, ``accept(rho, step_norm)``, ``reject(step_norm)`` and
``exhausted()`` (the damping overflowed, or the trust region collapsed).

References
----------
Moré, J. J. The Levenberg-Marquardt algorithm: implementation and theory. Numerical
Analysis, Lecture Notes in Mathematics 630, Springer, 1978, pp. 105-116.
Nielsen, H. B. Damping parameter in Marquardt's method. Report IMM-REP-1999-05,
Technical University of Denmark, 1999.
"""

from __future__ import annotations

import math
from typing import Any

from ._exact import SVD, SVDState
from ._lsq_numerics import safe_dot, safe_norm

__all__ = ["TRUST_FACTOR", "Nielsen", "TrustRegion", "trust_region_step"]

Array = Any

# Initial trust radius TRUST_FACTOR ||D x0|| (scipy's "trf" uses 1; with MINPACK's default
# ``factor`` 100, MGH10 and BoxBOD stay unsolved from NIST start 1 even with 5,000
# evaluations), and the iteration cap of the search for mu with ||D p(mu)|| = radius.
TRUST_FACTOR = 1.0
_TR_ITERS = 30


class Nielsen:
    """Damping control with one solve per trial (Nielsen 1999).

    Accepted with gain ratio ``rho``: ``mu <- mu max(1/3, 1 - (2 rho - 1)^3)``, ``nu <- 2``;
    rejected: ``mu <- nu mu``, ``nu <- 2 nu``. ``mu`` stays above ``eps^2 mu_0``.
    """

    def __init__(self, mu0: float, eps: float) -> None:
        self.mu = mu0 if mu0 > 0 else 1.0
        self.floor = self.mu * eps * eps
        self.nu = 2.0

    def accept(self, rho: float, step_norm: float) -> None:
        self.mu = max(self.mu * max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3), self.floor)
        self.nu = 2.0

    def reject(self, step_norm: float) -> None:
        self.mu, self.nu = self.mu * self.nu, 2.0 * self.nu

    def exhausted(self) -> bool:
        return not math.isfinite(self.mu * self.nu)


class TrustRegion:
    """Trust-region control of the damping (Moré 1978): ``mu`` solves ``||D p(mu)|| = Delta``.

    Rejected (or ``rho < 1/4``): ``Delta <- ||D p|| / 4``; ``rho > 3/4`` with the step on
    the boundary: ``Delta <- 2 Delta``. The Gauss–Newton step (``mu = 0``) is taken whenever
    it lies inside the region.
    """

    def __init__(self, radius: float) -> None:
        self.radius = radius
        self.mu = 0.0

    def accept(self, rho: float, step_norm: float) -> None:
        if rho < 0.25:
            self.radius = 0.25 * step_norm
        elif rho > 0.75 and step_norm >= 0.95 * self.radius:
            self.radius = 2.0 * self.radius

    def reject(self, step_norm: float) -> None:
        self.radius = 0.25 * min(step_norm, self.radius)

    def exhausted(self) -> bool:
        return not (self.radius > 0.0)


def trust_region_step(
    xp: Any, solver: SVD, state: SVDState, radius: float, mu_guess: float
) -> tuple[Array, float, float]:
    """The step of norm ``<= radius`` minimizing the linear model, its ``mu`` and the
    model decrease, from the SVD ``J_s = U diag(s) V^T`` (``O((m + n) k)`` per call).

    The Gauss–Newton step (pseudo-inverse, singular values below ``max(m, n) eps s_max``
    dropped) if it fits; otherwise ``mu > 0`` with ``| ||d(mu)|| - radius | <= radius / 10``,
    by Newton's method on ``1/radius - 1/||d(mu)||`` safeguarded by bisection (Moré 1978,
    sec. 5).
    """
    s, c = state.s, solver.coefficients(state, None)
    s2 = s * s
    sc = s * c
    kept = s > solver.cutoff(state)
    safe = xp.where(kept, s, xp.ones_like(s))
    a0 = xp.where(kept, c / safe, xp.zeros_like(s))
    if safe_norm(xp, a0) <= 1.1 * radius:
        return state.V @ a0, 0.0, 0.5 * safe_dot(xp, xp.where(kept, c, xp.zeros_like(c)), c)
    lo, hi = 0.0, safe_norm(xp, sc) / radius  # ||d(mu)|| <= ||s c|| / mu
    mu = mu_guess if lo < mu_guess < hi else 1e-3 * hi
    for _ in range(_TR_ITERS):
        denom = s2 + mu
        a = sc / denom
        na = safe_norm(xp, a)
        if abs(na - radius) <= 0.1 * radius:
            break
        if na > radius:
            lo = mu
        else:
            hi = mu
        q = safe_dot(xp, a, a / denom)  # sum s^2 c^2 / (s^2 + mu)^3 = -1/2 d||d||^2/dmu
        mu_new = mu + (na / radius - 1.0) * na * na / q if q > 0 else -1.0
        mu = mu_new if lo < mu_new < hi else max(1e-3 * hi, math.sqrt(lo * hi))
    a = sc / (s2 + mu)
    sa = s * a  # J_s d in the basis U: the model decrease is c . (s a) - 1/2 ||s a||^2
    return state.V @ a, mu, safe_dot(xp, c, sa) - 0.5 * safe_dot(xp, sa, sa)
