"""(Preconditioned) conjugate gradients on ``(A + mu I) x = b``, for vectors and blocks."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from . import _dispatch
from ._operator import LinearOperator, as_operator
from ._status import Status
from ._validation import check_int, check_nonnegative, check_rhs

__all__ = ["PCGResult", "pcg"]

Array = Any

# Per-column status codes (``PCGResult.status``): the library's Status values.
CONVERGED = int(Status.SUCCESS)
MAXITER = int(Status.MAX_ITERATIONS)
INDEFINITE = int(Status.INDEFINITE)
NONFINITE = int(Status.NONFINITE)
BAD_PRECONDITIONER = int(Status.BAD_PRECONDITIONER)
INACCURATE = int(Status.INACCURATE)

STATUS_NAMES = {
    CONVERGED: "converged",
    MAXITER: "maxiter",
    INDEFINITE: "indefinite",
    NONFINITE: "nonfinite",
    BAD_PRECONDITIONER: "bad_preconditioner",
    INACCURATE: "inaccurate",
}


class PCGResult(NamedTuple):
    """Result of :func:`pcg`.

    Attributes
    ----------
    x : array
        The solution, shaped like ``b``.
    converged : bool or array
        Whether ``||b - (A + mu I) x|| <= max(rtol ||b||, atol)`` (per column for blocks).
    iterations : int or array
        Iterations performed (per column for blocks).
    residual_norm : array
        The true residual ``||b - (A + mu I) x||``, recomputed at the end (per column for
        blocks).
    status : array of int
        Per column, a :class:`Status` value: 0 ``SUCCESS``, 1 ``MAX_ITERATIONS``, 2
        ``INDEFINITE`` (negative curvature: the operator is not positive definite), 3
        ``NONFINITE`` (NaN/Inf in ``b`` or in a product), 4 ``BAD_PRECONDITIONER`` (not
        positive definite), 5 ``INACCURATE`` (the recurrence met the tolerance but the
        recomputed true residual does not: rounding drift in an ill-conditioned system).
        A 0-d array for vector ``b``.
    message : str
        What happened and, when something went wrong, what to try.
    """

    x: Array
    converged: Any
    iterations: Any
    residual_norm: Array
    status: Array
    message: str


@_dispatch.in_full_float32
def pcg(
    A: Array | LinearOperator,
    b: Array,
    *,
    mu: float | Array = 0.0,
    preconditioner: LinearOperator | Callable[[Array], Array] | None = None,
    rtol: float | None = None,
    atol: float = 0.0,
    maxiter: int | None = None,
    x0: Array | None = None,
) -> PCGResult:
    """Solve ``(A + mu I) x = b`` by (preconditioned) conjugate gradients.

    Each column of a block ``b`` runs its own CG recurrence; all columns share one block
    product per iteration, and a column stops updating once it has converged or failed.
    Convergence is confirmed on the true residual, recomputed at the end (one more product).
    A negative or zero curvature ``p^T (A + mu I) p <= 0`` stops that column with status 2
    (indefinite) instead of iterating on garbage.

    Parameters
    ----------
    A : LinearOperator or array
        Symmetric positive semi-definite ``(n, n)`` operator.
    b : array of shape (n,) or (n, k)
    mu : float, optional
        Damping ``>= 0``; ``A + mu I`` must be positive definite.
    preconditioner : LinearOperator or callable, optional
        Applies ``P^{-1}`` (symmetric positive definite) to a block, e.g.
        :func:`nystrom_preconditioner`.
    rtol, atol : float
        Stop when ``||r|| <= max(rtol ||b||, atol)``; ``rtol`` defaults to
        ``sqrt(eps(dtype))``.
    maxiter : int, optional
        Iteration cap, default ``n``.
    x0 : array, optional
        Starting guess shaped like ``b`` (default zero).

    Returns
    -------
    PCGResult

    Notes
    -----
    Under ``jax.jit`` the loop is a ``jax.lax.while_loop``: it compiles once and still
    stops early. ``converged``/``iterations`` are then arrays and ``message`` is generic.

    References
    ----------
    Hestenes & Stiefel 1952; Saad, Iterative Methods for Sparse Linear Systems, Alg. 9.1.
    Frangella, Tropp, Udell. Randomized Nystrom preconditioning. SIMAX 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from sketchlinalg import pcg
    >>> A = np.diag([1.0, 2.0, 3.0])
    >>> res = pcg(A, np.ones(3), mu=1.0)
    >>> bool(res.converged), np.round(res.x, 6).tolist()
    (True, [0.5, 0.333333, 0.25])
    """
    if isinstance(A, LinearOperator) and not A.is_symmetric:
        raise ValueError(
            f"pcg: A must be tagged symmetric or PSD (e.g. gram(J), aslinearoperator(A, "
            f"psd=True)), got {A!r}"
        )
    A = as_operator(A, "A")
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"pcg: A must be square, got shape {A.shape}")
    n = A.shape[0]
    xp = A.xp
    mu = check_nonnegative(mu, "mu", xp=xp, dtype=A.dtype)
    B, vec = check_rhs(b, n, A.dtype, "b", "pcg", "A")
    eps = float(xp.finfo(A.dtype).eps)
    rtol = math.sqrt(eps) if rtol is None else rtol
    rtol = check_nonnegative(rtol, "rtol", xp=xp, dtype=A.dtype)
    atol = check_nonnegative(atol, "atol", xp=xp, dtype=A.dtype)
    maxiter = n if maxiter is None else check_int(maxiter, "maxiter", low=0)
    if x0 is None:
        X = xp.zeros_like(B)
    else:
        X, _ = check_rhs(x0, n, A.dtype, "x0", "pcg", "A")
        if X.shape != B.shape:
            raise ValueError(f"pcg: x0 has shape {tuple(x0.shape)}, b has {tuple(b.shape)}")

    def apply_A(V: Array) -> Array:
        return A.matmat(V) + mu * V

    apply_P: Callable[[Array], Array]
    if preconditioner is None:

        def apply_P(V: Array) -> Array:
            return V
    elif isinstance(preconditioner, LinearOperator):
        if preconditioner.shape != (n, n):
            raise ValueError(
                f"pcg: preconditioner has shape {preconditioner.shape}, A has {A.shape}"
            )
        apply_P = preconditioner.matmat
    elif callable(preconditioner):
        apply_P = _checked_callable(preconditioner, A.dtype)
    else:
        raise TypeError(
            "pcg: preconditioner must be a LinearOperator, a callable or None, got "
            f"{type(preconditioner).__name__}"
        )

    bnorm = xp.linalg.vector_norm(B, axis=0)
    thresh = xp.maximum(rtol * bnorm, xp.full_like(bnorm, atol))
    R = B - apply_A(X) if x0 is not None else B
    Z = apply_P(R)
    rz = xp.sum(R * Z, axis=0)
    rnorm = xp.linalg.vector_norm(R, axis=0)
    k = B.shape[1]
    zeros_i = xp.zeros((k,), dtype=xp.int32, device=_dispatch.device_of(B))
    done0 = rnorm <= thresh
    status0 = xp.where(done0, zeros_i, zeros_i + MAXITER)
    state = (xp.asarray(0), X, R, Z, Z, rz, rnorm, ~done0, status0, zeros_i)

    def cond(s: tuple[Any, ...]) -> Any:
        return (s[0] < maxiter) & xp.any(s[7])

    def body(s: tuple[Any, ...]) -> tuple[Any, ...]:
        it, X, R, Z, P, rz, rnorm, active, status, iters = s
        Q = apply_A(P)
        pq = xp.sum(P * Q, axis=0)
        broken = active & ~xp.isfinite(pq)  # NaN/Inf in A's product or in b: not curvature
        indefinite = active & xp.isfinite(pq) & ~(pq > 0)
        step = active & (pq > 0) & xp.isfinite(pq)
        alpha = xp.where(step, rz / xp.where(step, pq, xp.ones_like(pq)), xp.zeros_like(pq))
        X = X + alpha[None, :] * P
        R = R - alpha[None, :] * Q
        rnorm = xp.where(step, xp.linalg.vector_norm(R, axis=0), rnorm)
        nonfinite = step & ~xp.isfinite(rnorm)
        conv = step & (rnorm <= thresh)
        Z = apply_P(R)
        rz_new = xp.sum(R * Z, axis=0)
        bad_prec = step & ~conv & ~nonfinite & ~(rz_new > 0)
        still = step & ~conv & ~nonfinite & ~bad_prec
        beta = xp.where(still, rz_new / xp.where(still, rz, xp.ones_like(rz)), xp.zeros_like(rz))
        P = xp.where(still[None, :], Z + beta[None, :] * P, P)
        status = xp.where(conv, zeros_i + CONVERGED, status)
        status = xp.where(indefinite, zeros_i + INDEFINITE, status)
        status = xp.where(nonfinite | broken, zeros_i + NONFINITE, status)
        status = xp.where(bad_prec, zeros_i + BAD_PRECONDITIONER, status)
        iters = iters + xp.astype(step, xp.int32)
        rz = xp.where(still, rz_new, rz)
        return (it + 1, X, R, Z, P, rz, rnorm, still, status, iters)

    final = _dispatch.while_loop(xp, cond, body, state)
    _, X, _, _, _, _, rnorm, _, status, iters = final
    # The recurrence residual drifts from the true one by rounding (more so as
    # cond(A + mu I) grows): judge convergence on the true residual, one product more.
    rnorm = xp.linalg.vector_norm(B - apply_A(X), axis=0)
    drift = (status == CONVERGED) & ~(rnorm <= thresh)
    status = xp.where(drift, zeros_i + INACCURATE, status)
    converged = status == CONVERGED
    tracing = _dispatch.is_tracing(X, rnorm)
    message = (
        "pcg ran under tracing: inspect status"
        if tracing
        else _message(
            xp, status, iters, rnorm, bnorm, rtol, maxiter, preconditioner is not None, mu
        )
    )
    if vec:
        X, converged, iters, rnorm, status = X[:, 0], converged[0], iters[0], rnorm[0], status[0]
        if not tracing:
            converged, iters = bool(converged), int(iters)
    return PCGResult(X, converged, iters, rnorm, status, message)


def _message(
    xp: Any,
    status: Array,
    iters: Array,
    rnorm: Array,
    bnorm: Array,
    rtol: float,
    maxiter: int,
    preconditioned: bool,
    mu: Any,
) -> str:
    codes = [int(c) for c in status]
    its = [int(i) for i in iters]
    rel = [float(r) / float(b) if float(b) > 0 else 0.0 for r, b in zip(rnorm, bnorm, strict=True)]
    worst = max(rel) if rel else 0.0
    if all(c == CONVERGED for c in codes):
        return f"converged in {max(its, default=0)} iterations (relative residual {worst:.2e})"
    parts = []
    counts = {name: sum(1 for c in codes if c == code) for code, name in STATUS_NAMES.items()}
    if counts["maxiter"]:
        hint = "raise maxiter, raise mu"
        hint += (
            ", or a larger preconditioner rank"
            if preconditioned
            else ", or use a preconditioner (nystrom_preconditioner)"
        )
        parts.append(
            f"{counts['maxiter']} column(s) did not converge in maxiter={maxiter} iterations "
            f"(worst relative residual {worst:.2e} > rtol={rtol:.1e}); try: {hint}"
        )
    if counts["indefinite"]:
        parts.append(
            f"{counts['indefinite']} column(s) met non-positive curvature p^T (A + mu I) p <= 0: "
            f"A + mu I (mu={float(mu):g}) is not positive definite; check that A is PSD "
            "(e.g. a Gram matrix J^T J) and use mu > 0 if A is singular"
        )
    if counts["nonfinite"]:
        parts.append(
            f"{counts['nonfinite']} column(s) produced NaN or Inf: check A's products and b for "
            "non-finite values or overflow"
        )
    if counts["inaccurate"]:
        parts.append(
            f"{counts['inaccurate']} column(s) met rtol in the CG recurrence, but the recomputed "
            f"residual ||b - (A + mu I) x|| is {worst:.2e} relative to ||b|| (> rtol={rtol:.1e}): "
            "rounding limits the attainable accuracy of this ill-conditioned system; loosen "
            "rtol, raise mu, or precondition (nystrom_preconditioner)"
        )
    if counts["bad_preconditioner"]:
        parts.append(
            f"{counts['bad_preconditioner']} column(s) found r^T P^-1 r <= 0: the preconditioner "
            "is not positive definite; rebuild it (mu > 0) or drop it"
        )
    return "; ".join(parts)


def _checked_callable(fn: Callable[[Array], Array], dtype: Any) -> Callable[[Array], Array]:
    """A preconditioner callable whose result is checked for type, shape and dtype."""

    def apply(V: Array) -> Array:
        out = fn(V)
        if not _dispatch.is_array(out):
            raise TypeError(
                f"pcg: preconditioner returned {type(out).__name__}, expected an array of "
                f"shape {tuple(V.shape)}"
            )
        if tuple(out.shape) != tuple(V.shape) or out.dtype != dtype:
            raise ValueError(
                f"pcg: preconditioner returned shape {tuple(out.shape)} and dtype {out.dtype} "
                f"for a block of shape {tuple(V.shape)}; expected the same shape and dtype {dtype}"
            )
        return out

    return apply
