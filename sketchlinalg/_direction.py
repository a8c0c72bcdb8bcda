"""Natural-gradient / Gauss–Newton step directions from a Jacobian operator and a residual."""

from __future__ import annotations

from typing import Any, NamedTuple

from . import _dispatch
from ._estimate import estimate_error
from ._lowrank import LowRankPSD
from ._memory import estimate_memory
from ._nystrom import check_finite_product, nystrom, nystrom_from_sketch
from ._operator import LinearOperator, aslinearoperator, gram, kernel
from ._pcg import pcg
from ._preconditioner import nystrom_preconditioner
from ._random import Sampler, as_sampler
from ._sketch import sketch_matrix
from ._validation import check_int, check_nonnegative

__all__ = [
    "METHODS",
    "DirectionInfo",
    "choose_method",
    "natural_gradient_direction",
    "spring_direction",
]

Array = Any

METHODS = ("auto", "dense", "woodbury", "nystrom", "nystrom-pcg", "kernel-nystrom")
DEFAULT_RANK = 100
DEFAULT_MEMORY_BUDGET = 2 * 2**30  # bytes
PCG_ITERATIONS_ASSUMED = 50
MATVEC_PENALTY = 5.0  # matrix-vector flops cost ~5x matrix-matrix flops (measured, linalg.md)


class DirectionInfo(NamedTuple):
    """What :func:`natural_gradient_direction` did.

    Attributes
    ----------
    method : str
        The method that ran (what ``"auto"`` chose, if it was asked).
    rank : int or None
        Rank of the Nystrom approximation (sketch methods).
    error_estimate : array or None
        Estimated ``||A - A_hat||_2`` when ``error_power_iters > 0`` (sketch methods).
    iterations : int, array or None
        PCG iterations (``"nystrom-pcg"``).
    effective_dimension : array or None
        ``d_eff(mu) = sum lam_i / (lam_i + mu)`` of the sketched spectrum (sketch methods);
        a sketch size below about ``2 d_eff`` loses accuracy.
    converged : bool or array
        ``False`` only when PCG did not converge.
    message : str
        Details: the solver used for exact methods, PCG's message, why ``auto`` chose.
    gradient : array or None
        ``g = J^T r`` when the method computed it on the way (``"dense"``, ``"nystrom"``,
        ``"nystrom-pcg"``), so that a line search needs no second pass over ``J`` for its
        slope ``g^T d``; ``None`` otherwise.
    """

    method: str
    rank: int | None
    error_estimate: Any
    iterations: Any
    effective_dimension: Any
    converged: Any
    message: str
    gradient: Any = None


def choose_method(
    n_residuals: int,
    n_params: int,
    *,
    rank: int = DEFAULT_RANK,
    itemsize: int = 8,
    memory_budget: int | None = None,
    materialized: bool = False,
) -> tuple[str, str]:
    """The rule behind ``method="auto"``: the cheapest accurate method that fits in memory.

    ``auto`` returns the damped Gauss–Newton direction ``(J^T J + mu I)^{-1} J^T r`` to
    working accuracy, so it chooses among the exact methods: ``"woodbury"``, ``"dense"``
    and ``"nystrom-pcg"`` (exact up to its tolerance, with the sketch as preconditioner).
    The plain sketch (``"nystrom"``, SNGD) is an approximation whose accuracy depends on
    ``rank`` versus the effective dimension: ask for it explicitly.

    Flop model (``N`` residuals, ``P`` parameters, sketch size ``l``; one product with
    ``J`` or ``J^T`` counted as ``2 N P`` flops per column); memory comes from
    :func:`estimate_memory` (the method's peak, ``J`` included):

    ============== ========================================
    method         flops
    ============== ========================================
    woodbury       ``M + N^2 P + N^3 / 3``
    dense          ``M + N P^2 + P^3 / 3``
    nystrom-pcg    ``4 N P l + 12 P l^2 + c 4 N P k``
    ============== ========================================

    where ``M = 2 N P min(N, P)`` is the cost of materializing ``J`` (zero when ``J`` is
    already an array), ``12 P l^2`` counts the Cholesky solve and SVD of the sketch,
    ``k = 50`` PCG iterations are assumed, and ``c = 5`` weighs their matrix-vector
    products, which run at about a fifth of the flop rate of the matrix-matrix products
    of the dense methods. These constants come from ``benchmarks/linalg.py`` (the
    "auto" section of ``benchmarks/results/linalg.md``: with ``k = 20, c = 1`` the rule
    picked Nystrom-PCG where dense/woodbury were 2.5-8x faster). An exact dense method is
    chosen when it fits in ``memory_budget`` and costs no more than Nystrom-PCG (or
    Nystrom-PCG does not fit); otherwise ``"nystrom-pcg"``. A method that does not fit is
    never chosen: when none fits, ``ValueError`` says how much the smallest needs.

    Parameters
    ----------
    n_residuals, n_params : int
        ``N`` and ``P``.
    rank : int
        Sketch size ``l`` the sketch methods would use.
    itemsize : int
        Bytes per entry (8 for float64, 4 for float32).
    memory_budget : int, optional
        Bytes; default 2 GiB.
    materialized : bool
        Whether ``J`` is already an explicit array.

    Returns
    -------
    (method, reason) : tuple of str

    Raises
    ------
    ValueError
        When not even Nystrom-PCG fits in ``memory_budget``.
    """
    N, P, l = n_residuals, n_params, min(rank, n_params)
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    path = "array" if materialized else "matrix-free"
    M = 0.0 if materialized else 2.0 * N * P * min(N, P)
    flops = {
        "woodbury": M + N * N * P + N**3 / 3,
        "dense": M + N * P * P + P**3 / 3,
        "nystrom-pcg": 4.0 * N * P * l
        + 12.0 * P * l * l
        + MATVEC_PENALTY * 4.0 * N * P * PCG_ITERATIONS_ASSUMED,
    }
    memory = {
        m: estimate_memory(m, N, P, rank=l, jacobian=path, itemsize=itemsize, memory_budget=budget)
        for m in flops
    }
    pcg_cost = flops["nystrom-pcg"]
    fitting = {m: flops[m] for m in ("woodbury", "dense") if memory[m].fits}
    if fitting:
        best = min(fitting, key=lambda m: fitting[m])
        if fitting[best] <= pcg_cost or not memory["nystrom-pcg"].fits:
            return best, (
                f"auto: {best} is exact and cheapest that fits (~{fitting[best]:.2g} flops, "
                f"~{memory[best].bytes / 2**20:.4g} MiB, vs ~{pcg_cost:.2g} flops for "
                f"Nystrom-PCG with a rank-{l} preconditioner)"
            )
        return "nystrom-pcg", (
            f"auto: nystrom-pcg (~{pcg_cost:.2g} flops) is cheaper than {best} "
            f"(~{fitting[best]:.2g})"
        )
    if memory["nystrom-pcg"].fits:
        return "nystrom-pcg", (
            f"auto: nystrom-pcg (~{memory['nystrom-pcg'].bytes / 2**20:.4g} MiB), since no "
            f"dense exact method fits in {budget / 2**30:.3g} GiB"
        )
    needs = ", ".join(f"{m} ~{memory[m].bytes / 2**30:.3g} GiB" for m in memory)
    raise ValueError(
        f"method='auto': no accurate method fits memory_budget={budget} bytes "
        f"({budget / 2**30:.3g} GiB) for N={N}, P={P}, rank={l}, {path} Jacobian ({needs}; "
        "sketchlinalg.memory_plan lists every configuration); raise memory_budget, lower "
        "rank, or choose method='nystrom'"
    )


def natural_gradient_direction(
    J: Array | LinearOperator,
    r: Array,
    *,
    damping: float | Array,
    method: str = "auto",
    rank: int | None = None,
    oversample: int = 0,
    sketch: str = "gaussian",
    seed: int | Sampler | Any = 0,
    inverse: str = "woodbury",
    rtol: float | None = None,
    maxiter: int | None = None,
    error_power_iters: int = 0,
    memory_budget: int | None = None,
) -> tuple[Array, DirectionInfo]:
    r"""Natural-gradient (damped Gauss–Newton) direction ``d ~ (J^T J + mu I)^{-1} J^T r``.

    The step is then ``theta <- theta - eta d``. Methods:

    * ``"dense"``: ``G = J^T J`` formed (``P x P``); ``(G + mu I)^{-1} g`` by Cholesky, or
      the pseudo-inverse ``G^+ g`` (eigendecomposition, cut at ``P eps lam_max``) when
      ``mu = 0``: the ENGD baseline.
    * ``"woodbury"``: exact, in residual space: ``J^T (J J^T + mu I)^{-1} r`` (``N x N``),
      pseudo-inverse at ``mu = 0``.
    * ``"nystrom"`` (SNGD): ``G_hat = nystrom(gram(J), rank)``, then
      ``(G_hat + mu I)^{-1} g`` (``inverse="woodbury"``) or the projected inverse
      (``inverse="projected"``, allows ``mu = 0``).
    * ``"nystrom-pcg"``: ``(G + mu I) d = g`` by CG, preconditioned with the Nystrom
      preconditioner of ``G_hat``: exact up to ``rtol``.
    * ``"kernel-nystrom"``: the sketch in residual space, ``J^T (K_hat + mu I)^{-1} r``
      with ``K_hat = nystrom(kernel(J), rank)``.
    * ``"auto"``: :func:`choose_method` (woodbury, dense or nystrom-pcg: always the
      accurate damped direction).

    All of them equal the ENGD direction ``G^+ g`` as ``mu -> 0`` on ``range(G)`` when the
    rank reaches ``rank(G)``. With a fixed method (not ``"auto"`` with data-dependent
    parts: ``"auto"`` depends on shapes only) and a fixed rank, the whole function traces
    under ``jax.jit``; pass a JAX key as ``seed`` for a fresh sketch each step.

    Parameters
    ----------
    J : LinearOperator or array
        Residual Jacobian ``(N, P)``.
    r : array of shape (N,)
        Residual; the gradient of ``1/2 ||r||^2`` is ``g = J^T r``.
    damping : float
        ``mu >= 0`` (``> 0`` for ``"nystrom"`` with ``inverse="woodbury"`` and for
        ``"nystrom-pcg"``).
    method : str
        One of ``METHODS``.
    rank : int, optional
        Rank of sketch methods, default ``min(100, dimension)``.
    oversample, sketch, seed
        Passed to :func:`nystrom`.
    inverse : {"woodbury", "projected"}
        Inverse of the sketch methods (:meth:`LowRankPSD.solve`).
    rtol, maxiter : optional
        PCG tolerance (default ``sqrt(eps)``) and iteration cap (default ``P``).
    error_power_iters : int
        When ``> 0``, estimate ``||A - A_hat||_2`` with that many power steps (costs as
        many extra products).
    memory_budget : int, optional
        Bytes for ``"auto"`` (default 2 GiB).

    Returns
    -------
    d : array of shape (P,)
    info : DirectionInfo

    References
    ----------
    Best Mckay, Kaur, Greif, Wetton. Near-optimal sketchy natural gradients for PINNs.
    ICML 2025. Mueller, Zeinhofer. Achieving high accuracy with PINNs via energy natural
    gradient descent. ICML 2023. Guzman-Cordero et al. Improving ENGD through Woodbury,
    momentum and randomization. NeurIPS 2025.

    Examples
    --------
    >>> import numpy as np
    >>> from sketchlinalg import natural_gradient_direction
    >>> rng = np.random.default_rng(0)
    >>> J, r = rng.standard_normal((30, 8)), rng.standard_normal(30)
    >>> d, info = natural_gradient_direction(J, r, damping=1e-3, method="nystrom", rank=8)
    >>> exact = np.linalg.solve(J.T @ J + 1e-3 * np.eye(8), J.T @ r)
    >>> info.method, bool(np.allclose(d, exact))
    ('nystrom', True)
    """
    J = aslinearoperator(J)
    N, P = J.shape
    xp = J.xp
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if getattr(r, "ndim", None) != 1 or r.shape[0] != N:
        raise ValueError(
            f"r must have shape ({N},) for J of shape {J.shape}, "
            f"got {tuple(getattr(r, 'shape', ()))}"
        )
    if r.dtype != J.dtype:
        raise TypeError(f"r has dtype {r.dtype}, J has {J.dtype}")
    mu = check_nonnegative(damping, "damping", xp=xp, dtype=J.dtype)
    error_power_iters = check_int(error_power_iters, "error_power_iters", low=0)
    reason = ""
    if method == "auto":
        itemsize = 4 if J.dtype == xp.float32 else 8
        l_auto = min(DEFAULT_RANK if rank is None else rank, P)
        method, reason = choose_method(
            N,
            P,
            rank=l_auto,
            itemsize=itemsize,
            memory_budget=memory_budget,
            materialized=J.is_materialized,
        )
        if method == "nystrom-pcg" and not _dispatch.is_tracing(mu) and float(mu) == 0:
            raise ValueError(
                "method='auto' with damping=0: the pseudo-inverse needs a dense exact method "
                f"(dense or woodbury), but {reason.removeprefix('auto: ')}; use damping > 0, "
                "a larger memory_budget, or method='nystrom' with inverse='projected'"
            )

    if method in ("dense", "woodbury"):
        Jd = J.to_dense()
        g = None
        if method == "dense":
            g = Jd.T @ r
            d, used = _psd_solve(xp, Jd.T @ Jd, g, mu)
        else:
            y, used = _psd_solve(xp, Jd @ Jd.T, r, mu)
            d = Jd.T @ y
        msg = f"{method}: {used}" + (f"; {reason}" if reason else "")
        return d, DirectionInfo(method, None, None, None, None, True, msg, g)

    sampler = as_sampler(seed)
    space_dim = N if method == "kernel-nystrom" else P
    rank = (
        min(DEFAULT_RANK, space_dim)
        if rank is None
        else check_int(rank, "rank", low=1, high=space_dim)
    )
    g = None
    if method == "kernel-nystrom":
        A = kernel(J)
        approx = nystrom(A, rank, oversample=oversample, sketch=sketch, seed=sampler)
    else:
        A = gram(J)
        approx, g = _gram_nystrom_and_gradient(J, r, rank, oversample, sketch, sampler)
    err = None
    if error_power_iters:
        err = estimate_error(A, approx, power_iters=error_power_iters, seed=sampler.fold_in(1))
    deff = approx.effective_dimension(mu)
    iterations: Any = None
    converged: Any = True
    if method == "nystrom":
        d = approx.solve(g, mu, mode=inverse)
        msg = f"nystrom: rank {rank}, {inverse} inverse, core {approx.core}"
    elif method == "kernel-nystrom":
        d = J.rmatvec(approx.solve(r, mu, mode=inverse))
        msg = f"kernel-nystrom: rank {rank}, {inverse} inverse, core {approx.core}"
    else:
        check_nonnegative(mu, "damping", strict=True, context='method="nystrom-pcg"')
        res = pcg(
            A,
            g,
            mu=mu,
            preconditioner=nystrom_preconditioner(approx, mu),
            rtol=rtol,
            maxiter=maxiter,
        )
        d, iterations, converged = res.x, res.iterations, res.converged
        msg = f"nystrom-pcg: rank {rank}; {res.message}"
    if reason:
        msg += f"; {reason}"
    return d, DirectionInfo(method, rank, err, iterations, deff, converged, msg, g)


def _gram_nystrom_and_gradient(
    J: LinearOperator, r: Array, rank: int, oversample: int, sketch: str, sampler: Sampler
) -> tuple[LowRankPSD, Array]:
    """``nystrom(gram(J), rank)`` and ``g = J^T r`` from one block product with ``J^T``.

    ``Y = J^T (J Omega)`` and ``J^T r`` share the pass over ``J^T``: ``J^T [J Omega, r]``.
    For a materialized ``N x P`` Jacobian that pass streams the whole matrix from memory,
    so one pass instead of two saves about as much as a full gradient costs.
    """
    xp = J.xp
    l = min(rank + oversample, J.shape[1])
    Omega = sketch_matrix(
        J.shape[1], l, xp=xp, dtype=J.dtype, device=J.device, kind=sketch, seed=sampler
    )
    W = J.rmatmat(xp.concat([J.matmat(Omega), r[:, None]], axis=1))
    Y, g = W[:, :l], W[:, l]
    check_finite_product(xp, Y)
    return nystrom_from_sketch(xp, Omega, Y, rank=rank), g


def spring_direction(
    J: Array | LinearOperator,
    r: Array,
    previous: Array,
    *,
    damping: float | Array,
    momentum: float | Array,
) -> Array:
    r"""SPRING direction: natural gradient with Kaczmarz-style momentum, in kernel form.

    .. math::

        \phi_k = J^T (J J^T + \mu I)^{-1} (r - \beta J \phi_{k-1}) + \beta \phi_{k-1}

    (exact ``N x N`` solve; pseudo-inverse at ``mu = 0``). With ``beta = 0`` it is the
    ``"woodbury"`` direction of :func:`natural_gradient_direction`.

    Parameters
    ----------
    J : LinearOperator or array
        Residual Jacobian ``(N, P)``.
    r : array of shape (N,)
    previous : array of shape (P,)
        ``phi_{k-1}`` (zeros at the first step).
    damping : float
        ``mu >= 0``.
    momentum : float
        ``beta`` in ``[0, 1)``.

    Returns
    -------
    array of shape (P,)

    References
    ----------
    Goldshlager, Abrahamsen, Lin. A Kaczmarz-inspired approach to accelerate the
    optimization of neural network wavefunctions. J. Comput. Phys. 2024.
    """
    J = aslinearoperator(J)
    N, P = J.shape
    if getattr(r, "ndim", None) != 1 or r.shape[0] != N:
        raise ValueError(f"r must have shape ({N},), got {tuple(getattr(r, 'shape', ()))}")
    if getattr(previous, "ndim", None) != 1 or previous.shape[0] != P:
        raise ValueError(
            f"previous must have shape ({P},), got {tuple(getattr(previous, 'shape', ()))}"
        )
    damping = check_nonnegative(damping, "damping", xp=J.xp, dtype=J.dtype)
    momentum = check_nonnegative(momentum, "momentum", xp=J.xp, dtype=J.dtype)
    if not _dispatch.is_tracing(momentum) and float(momentum) >= 1:
        raise ValueError(f"momentum must be < 1, got {float(momentum)}")
    Jd = J.to_dense()
    y, _ = _psd_solve(J.xp, Jd @ Jd.T, r - momentum * (Jd @ previous), damping)
    return Jd.T @ y + momentum * previous


def _psd_solve(xp: Any, M: Array, b: Array, mu: Any) -> tuple[Array, str]:
    """``(M + mu I)^{-1} b`` for a PSD ``M``: Cholesky when ``mu > 0``, else pseudo-inverse.

    Eager Cholesky failures fall back to the eigendecomposition. Under tracing the choice
    is made on whether ``mu`` is a positive Python number.
    """
    n = M.shape[0]
    eye = xp.eye(n, dtype=M.dtype, device=_dispatch.device_of(M))
    tracing = _dispatch.is_tracing(M, b)
    mu_positive = (not _dispatch.is_tracing(mu)) and float(mu) > 0
    if mu_positive or _dispatch.is_tracing(mu):
        Ms = M + mu * eye
        L = xp.linalg.cholesky(Ms) if tracing else _dispatch.cholesky(xp, Ms)
        if L is not None:
            z = _dispatch.solve_triangular(xp, L, b[:, None], lower=True)
            x = _dispatch.solve_triangular(xp, L.T, z, lower=False)[:, 0]
            return x, "cholesky of the damped matrix"
    w, V = xp.linalg.eigh(M)
    top = xp.max(w) + mu
    keep = (w + mu) > n * float(xp.finfo(M.dtype).eps) * top
    inv = xp.where(keep, 1.0 / xp.where(keep, w + mu, xp.ones_like(w)), xp.zeros_like(w))
    x = V @ (inv * (V.T @ b))
    label = (
        "pseudo-inverse by eigendecomposition"
        if not mu_positive
        else ("eigendecomposition (cholesky failed)")
    )
    return x, label
