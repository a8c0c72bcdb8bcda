"""Adaptive-rank Nystrom: grow the sketch until the error estimate meets a tolerance."""

from __future__ import annotations

from typing import Any, NamedTuple

from . import _dispatch
from ._estimate import estimate_error
from ._lowrank import LowRankPSD
from ._nystrom import _as_psd_operator, check_finite_product, nystrom_from_sketch
from ._operator import LinearOperator
from ._random import Sampler, as_sampler
from ._sketch import sketch_matrix
from ._validation import check_int, check_nonnegative

__all__ = ["AdaptiveNystromResult", "adaptive_nystrom"]

Array = Any


class AdaptiveNystromResult(NamedTuple):
    """Result of :func:`adaptive_nystrom`.

    Attributes
    ----------
    approx : LowRankPSD
        The final approximation.
    rank : int
        Its rank (the sketch size used).
    error_estimate : float
        Estimated ``||A - A_hat||_2`` of ``approx``.
    converged : bool
        Whether ``error_estimate <= tol * mu``.
    ranks : tuple of int
        Every sketch size tried, in order.
    errors : tuple of float
        The error estimate at each of them.
    message : str
        Why it stopped, and what to try if it did not converge.
    """

    approx: LowRankPSD
    rank: int
    error_estimate: float
    converged: bool
    ranks: tuple[int, ...]
    errors: tuple[float, ...]
    message: str


@_dispatch.in_full_float32
def adaptive_nystrom(
    A: Array | LinearOperator,
    *,
    mu: float,
    tol: float = 1.0,
    rank0: int = 16,
    max_rank: int | None = None,
    growth: float = 2.0,
    power_iters: int = 20,
    sketch: str = "gaussian",
    seed: int | Sampler | Any = 0,
) -> AdaptiveNystromResult:
    r"""Nystrom approximation whose rank grows until ``||A - A_hat||_2 <= tol * mu``.

    Starting from ``rank0`` sketch columns, the sketch is multiplied by ``growth``
    (reusing every earlier column and its product, so each round costs only the new
    columns) until the power-iteration estimate (:func:`estimate_error`) of the error is at
    most ``tol * mu`` or the sketch reaches ``max_rank``. When ``||A - A_hat|| <= mu``, the
    Nystrom-preconditioned system has condition number at most about ``2 + lam_l / mu``
    (Frangella, Tropp & Udell 2023, Prop. 5.3), and the Woodbury inverse
    ``(A_hat + mu I)^{-1}`` is within a factor 2 of ``(A + mu I)^{-1}``.

    This is an eager routine (its shapes change as it runs); under ``jax.jit`` use
    :func:`nystrom` with a fixed rank.

    Parameters
    ----------
    A : LinearOperator or array
        PSD operator ``(n, n)``.
    mu : float
        Damping ``> 0`` that sets the target.
    tol : float
        Target relative to ``mu``.
    rank0 : int
        First sketch size.
    max_rank : int, optional
        Cap on the sketch size, default ``min(n, 512)``.
    growth : float
        Factor by which the sketch grows each round (``> 1``).
    power_iters : int
        Power steps per estimate.
    sketch : str
        Test-matrix kind (:func:`sketch_matrix`).
    seed : int, Sampler or JAX key

    Returns
    -------
    AdaptiveNystromResult

    References
    ----------
    Frangella, Tropp, Udell. Randomized Nystrom preconditioning (AdaNys), SIMAX 2023.
    Murray et al. Randomized numerical linear algebra (RandLAPACK REVD2), 2023.
    """
    A = _as_psd_operator(A, "A", "adaptive_nystrom")
    n = A.shape[0]
    mu = check_nonnegative(mu, "mu", strict=True, context="adaptive_nystrom")
    tol = check_nonnegative(tol, "tol", strict=True)
    max_rank = min(n, 512) if max_rank is None else check_int(max_rank, "max_rank", low=1, high=n)
    rank0 = check_int(rank0, "rank0", low=1)
    rank0 = min(rank0, max_rank)
    if not growth > 1:
        raise ValueError(f"growth must be > 1, got {growth}")
    xp = A.xp
    sampler = as_sampler(seed)
    target = tol * float(mu)

    omegas: list[Array] = []
    products: list[Array] = []
    ranks: list[int] = []
    errors: list[float] = []
    size = 0
    new = rank0
    round_ = 0
    while True:
        Om = sketch_matrix(
            n, new, xp=xp, dtype=A.dtype, device=A.device, kind=sketch, seed=sampler.fold_in(round_)
        )
        Y = A.matmat(Om)
        check_finite_product(xp, Y)
        omegas.append(Om)
        products.append(Y)
        size += new
        Omega = omegas[0] if len(omegas) == 1 else xp.concat(omegas, axis=1)
        Ys = products[0] if len(products) == 1 else xp.concat(products, axis=1)
        approx = nystrom_from_sketch(xp, Omega, Ys, rank=size)
        err = float(
            estimate_error(
                A, approx, power_iters=power_iters, seed=sampler.fold_in(10_000 + round_)
            )
        )
        ranks.append(size)
        errors.append(err)
        if err <= target:
            msg = (
                f"tolerance met at rank {size}: estimated error {err:.3e} <= tol*mu = {target:.3e}"
            )
            return AdaptiveNystromResult(approx, size, err, True, tuple(ranks), tuple(errors), msg)
        if size >= max_rank:
            msg = (
                f"stopped at the rank cap max_rank={max_rank}: estimated error {err:.3e} > "
                f"tol*mu = {target:.3e}; raise max_rank, raise mu or tol, or use the result "
                "as a preconditioner (nystrom-pcg) instead of a direct inverse"
            )
            return AdaptiveNystromResult(approx, size, err, False, tuple(ranks), tuple(errors), msg)
        new = min(max(int(size * growth) - size, 1), max_rank - size)
        round_ += 1
