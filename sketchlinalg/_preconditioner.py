"""The Nystrom preconditioner for ``A + mu I`` (Frangella, Tropp & Udell 2023)."""

from __future__ import annotations

from typing import Any

from . import _dispatch
from ._lowrank import LowRankPSD, smallest_positive
from ._operator import FunctionOperator, LinearOperator
from ._validation import check_nonnegative

__all__ = ["nystrom_preconditioner"]

Array = Any


def nystrom_preconditioner(approx: LowRankPSD, mu: float | Array) -> LinearOperator:
    r"""Inverse Nystrom preconditioner for ``(A + mu I)`` from ``A_hat = U diag(lam) U^T``.

    .. math::

        P^{-1} = (\lambda_l + \mu)\, U \operatorname{diag}\big(1/(\lambda + \mu)\big) U^T
                 + (I - U U^T),

    with ``lam_l`` the smallest kept eigenvalue. ``P^{-1}`` is symmetric positive
    definite for ``mu > 0``. If the sketch size is about twice the effective dimension
    ``d_eff(mu)``, ``P^{-1/2} (A + mu I) P^{-1/2}`` has a condition number O(1) with high
    probability, so CG converges in a few iterations whatever ``cond(A)`` is.

    Parameters
    ----------
    approx : LowRankPSD
        Nystrom approximation of ``A`` (:func:`nystrom`).
    mu : float
        Damping ``> 0``.

    Returns
    -------
    LinearOperator
        Applies ``P^{-1}``; pass it to :func:`pcg` as ``preconditioner``.

    References
    ----------
    Frangella, Tropp, Udell. Randomized Nystrom preconditioning. SIAM J. Matrix Anal.
    Appl. 44(2), 2023, eq. (1.3) and Theorem 5.1.
    """
    if not isinstance(approx, LowRankPSD):
        raise TypeError(f"approx must be a LowRankPSD (from nystrom), got {type(approx).__name__}")
    mu = check_nonnegative(
        mu, "mu", strict=True, context="nystrom_preconditioner", xp=approx.xp, dtype=approx.dtype
    )
    U, lam = approx.eigenvectors, approx.eigenvalues
    xp = approx.xp
    lam_l = smallest_positive(xp, lam)  # a zero-padded sketch has trailing zeros
    scale = (lam_l + mu) / (lam + mu)

    def apply(X: Array) -> Array:
        UtX = U.T @ X
        return U @ (scale[:, None] * UtX) + (X - U @ UtX)

    return FunctionOperator(
        apply,
        shape=approx.shape,
        dtype=approx.dtype,
        xp=approx.xp,
        device=_dispatch.device_of(U),
        psd=True,
    )
