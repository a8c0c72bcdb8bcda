"""Benchmark: sketchlinalg's low-rank approximation, solves and ``auto`` rule on dense CPU.

Usage (from the repository root)::

    python -m benchmarks.linalg            # full run, a few minutes on 2 cores
    python -m benchmarks.linalg --quick    # smoke test with small sizes, seconds
    python -m benchmarks.linalg --out DIR  # where linalg.json / linalg.md go

Everything is float64 NumPy on the CPU, and every method sees the same PSD operators:

1. Operators: synthetic ``A = Q diag(lam) Q^T`` (Haar-random ``Q``) with polynomial
   (``lam_i = i^-2``) and exponential (``lam_i = max(0.9^i, 1e-14)``) decay, and the
   Gauss-Newton Gram matrix ``G = J^T J`` of a small tanh-MLP PINN for the 2-D Poisson
   equation (``J`` built with JAX and materialized).
2. Rank-``k`` approximation: :func:`sketchlinalg.nystrom` against
   ``sklearn.utils.extmath.randomized_svd`` and ``scipy.sparse.linalg.eigsh``: wall time
   and the exact spectral-norm error ``||A - A_hat||_2``.
3. Solves of ``(A + mu I) x = b``: Nystrom-preconditioned CG, plain CG (both
   :func:`sketchlinalg.pcg`) and a dense Cholesky solve.
4. The ``auto`` rule of :func:`sketchlinalg.natural_gradient_direction`
   (:func:`sketchlinalg.choose_method`) against the measured fastest method.

The JSON holds every raw measurement and the machine description; the markdown holds the
summary tables and states what each column means.
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse.linalg
from sklearn.utils.extmath import randomized_svd
from threadpoolctl import threadpool_limits

import sketchlinalg
from sketchlinalg import (
    aslinearoperator,
    choose_method,
    natural_gradient_direction,
    nystrom,
    nystrom_preconditioner,
    pcg,
)

from ._common import (
    Progress,
    format_float,
    load_average,
    machine_info,
    markdown_table,
    median,
    time_call,
    write_json,
    write_text,
)

__all__ = [
    "FULL",
    "QUICK",
    "BenchConfig",
    "TestOperator",
    "build_operators",
    "main",
    "pinn_jacobian",
    "run",
    "run_directions",
    "run_lowrank",
    "run_solves",
    "spectral_error",
    "synthetic_psd",
]

Array = npt.NDArray[np.float64]
T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
TARGET_SPEEDUP = 1.5
# "Equal error": within 1% of randomized_svd's median error (two near-optimal methods
# differ by seed noise and rounding in the last digits).
TARGET_ERROR_RATIO = 1.01


# ----------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchConfig:
    """Sizes and repeat counts of one benchmark run.

    Attributes
    ----------
    sizes : tuple of int
        Dimensions ``n`` of the synthetic PSD matrices.
    exp_floor : float
        Floor of the exponential spectrum, ``lam_i = max(0.9^i, exp_floor)``.
    matrix_seed : int
        Seed of the random orthogonal eigenvectors and right-hand sides.
    pinn_widths : tuple of int
        Layer widths of the tanh MLP (``(2, 32, 32, 1)`` has 1185 parameters).
    pinn_grid : int
        Interior points form a ``pinn_grid x pinn_grid`` grid in ``(0, 1)^2``.
    pinn_boundary : int
        Boundary points, split evenly over the four edges.
    pinn_seed : int
        Seed of the MLP initialization.
    ranks : tuple of int
        Approximation ranks ``k``.
    repeats : int
        Timed repeats per low-rank case, each with its own seed.
    mu_factors : tuple of float
        Damping ``mu = c * lam_1(A)`` for each ``c``.
    pcg_ranks : tuple of int
        Sketch sizes ``l`` of the Nystrom preconditioner.
    rtol : float
        CG tolerance on ``||r|| / ||b||``.
    cg_maxiter_factor : int
        ``maxiter = cg_maxiter_factor * n`` for both CG variants.
    solve_repeats, solve_budget_s : int, float
        At most ``solve_repeats`` timed repeats per solve case; fewer (at least one) once
        the case has used ``solve_budget_s`` seconds.
    direction_shapes : tuple of (int, int)
        ``(N, P)`` shapes of the random Jacobians for the ``auto`` rule.
    direction_rank : int
        ``rank`` passed to ``natural_gradient_direction`` and ``choose_method``.
    direction_repeats, direction_budget_s : int, float
        As for the solves.
    """

    sizes: tuple[int, ...] = (2000,)
    exp_floor: float = 1e-14
    matrix_seed: int = 20250101
    pinn_widths: tuple[int, ...] = (2, 32, 32, 1)
    pinn_grid: int = 20
    pinn_boundary: int = 80
    pinn_seed: int = 0
    ranks: tuple[int, ...] = (20, 50, 100)
    repeats: int = 5
    mu_factors: tuple[float, ...] = (1e-4, 1e-8)
    pcg_ranks: tuple[int, ...] = (100, 200)
    rtol: float = 1e-8
    cg_maxiter_factor: int = 20
    solve_repeats: int = 5
    solve_budget_s: float = 10.0
    direction_shapes: tuple[tuple[int, int], ...] = (
        (200, 500),
        (200, 4000),
        (1000, 500),
        (1000, 4000),
    )
    direction_rank: int = 100
    direction_repeats: int = 5
    direction_budget_s: float = 15.0


FULL = BenchConfig()
QUICK = BenchConfig(
    sizes=(300,),
    pinn_widths=(2, 8, 8, 1),
    pinn_grid=6,
    pinn_boundary=16,
    ranks=(10, 20),
    repeats=3,
    pcg_ranks=(40,),
    solve_repeats=2,
    solve_budget_s=2.0,
    direction_shapes=((50, 120), (200, 60)),
    direction_rank=20,
    direction_repeats=2,
    direction_budget_s=2.0,
)


def _untimed() -> Any:
    # Untimed reference computations (building matrices, exact errors, exact solutions)
    # run with one BLAS thread: on a shared 2-core machine a 2-thread LAPACK call whose
    # second thread is descheduled slows down many-fold, while one thread is steady.
    return threadpool_limits(limits=1)


# ----------------------------------------------------------------------------------------
# Operators
# ----------------------------------------------------------------------------------------
@dataclass
class TestOperator:
    """A dense symmetric PSD test matrix and its exact spectrum.

    Attributes
    ----------
    name : str
    description : str
    matrix : ndarray of shape (n, n)
    eigenvalues : ndarray of shape (n,)
        Eigenvalues of ``matrix`` (``numpy.linalg.eigvalsh``), in descending order.
    build_seconds : float
    details : dict
        Extra facts recorded in the JSON (prescribed-vs-computed spectrum gap, ...).
    """

    __test__ = False  # not a pytest class

    name: str
    description: str
    matrix: Array
    eigenvalues: Array
    build_seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Dimension."""
        return int(self.matrix.shape[0])


def synthetic_psd(eigenvalues: Array, seed: int) -> Array:
    """``Q diag(eigenvalues) Q^T`` with a Haar-random orthogonal ``Q``, symmetrized.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n,)
    seed : int

    Returns
    -------
    ndarray of shape (n, n)
    """
    n = eigenvalues.shape[0]
    rng = np.random.default_rng(seed)
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    Q = Q * np.sign(np.diag(R))[None, :]
    A = (Q * eigenvalues[None, :]) @ Q.T
    return np.asarray(0.5 * (A + A.T), dtype=np.float64)


def pinn_jacobian(
    widths: Sequence[int], grid: int, n_boundary: int, seed: int
) -> tuple[Array, dict[str, Any]]:
    """Residual Jacobian of a tanh-MLP PINN for ``-Laplace(u) = f`` on ``(0, 1)^2``.

    Residuals (``f`` does not change ``J``, so it is left out)::

        r_i = sqrt(1 / N_int) * (-Laplace u(x_i))   for the interior points x_i
        r_j = sqrt(4 / N_b)   * u(y_j)              for the boundary points y_j

    ``J = d r / d theta`` by ``jax.jacrev`` at the initial parameters (Glorot-normal
    weights from ``jax.random.PRNGKey(seed)``, zero biases); the Laplacian is the trace of
    ``jax.hessian`` in ``x``, vmapped over the points. Float64 (``jax_enable_x64``).

    Parameters
    ----------
    widths : sequence of int
        Layer widths, input 2 and output 1.
    grid : int
        Interior points: the tensor grid ``linspace(0, 1, grid + 2)[1:-1]`` squared.
    n_boundary : int
        Boundary points, ``n_boundary // 4`` per edge at the cell midpoints.
    seed : int

    Returns
    -------
    J : ndarray of shape (N_int + N_b, P)
    info : dict
    """
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    jax.config.update("jax_enable_x64", True)
    key = jax.random.PRNGKey(seed)
    params = []
    for fan_in, fan_out in itertools.pairwise(widths):
        key, sub = jax.random.split(key)
        std = math.sqrt(2.0 / (fan_in + fan_out))
        W = std * jax.random.normal(sub, (fan_in, fan_out), dtype=jnp.float64)
        params.append((W, jnp.zeros((fan_out,), dtype=jnp.float64)))
    theta, unravel = ravel_pytree(params)

    def u(theta: Any, x: Any) -> Any:
        layers = unravel(theta)
        h = x
        for W, b in layers[:-1]:
            h = jnp.tanh(h @ W + b)
        W, b = layers[-1]
        return (h @ W + b)[0]

    def laplacian(theta: Any, x: Any) -> Any:
        return jnp.trace(jax.hessian(u, argnums=1)(theta, x))

    g = np.linspace(0.0, 1.0, grid + 2)[1:-1]
    gx, gy = np.meshgrid(g, g, indexing="ij")
    x_int = np.stack([gx.ravel(), gy.ravel()], axis=1)
    m = n_boundary // 4
    t = (np.arange(m) + 0.5) / m
    zeros, ones = np.zeros(m), np.ones(m)
    x_bnd = np.concatenate(
        [
            np.stack([t, zeros], axis=1),
            np.stack([ones, t], axis=1),
            np.stack([1.0 - t, ones], axis=1),
            np.stack([zeros, 1.0 - t], axis=1),
        ]
    )
    n_int, n_b = x_int.shape[0], x_bnd.shape[0]
    xi, xb = jnp.asarray(x_int), jnp.asarray(x_bnd)

    def residuals(theta: Any) -> Any:
        lap = jax.vmap(laplacian, in_axes=(None, 0))(theta, xi)
        ub = jax.vmap(u, in_axes=(None, 0))(theta, xb)
        return jnp.concatenate([math.sqrt(1.0 / n_int) * (-lap), math.sqrt(4.0 / n_b) * ub])

    J = np.asarray(jax.jacrev(residuals)(theta), dtype=np.float64)
    info = {
        "widths": list(widths),
        "n_params": int(theta.shape[0]),
        "n_interior": int(n_int),
        "n_boundary": int(n_b),
        "jacobian_shape": list(J.shape),
        "init": "Glorot-normal weights, zero biases",
        "jax_version": jax.__version__,
    }
    return J, info


def _finish_operator(
    name: str, description: str, A: Array, t0: float, details: dict[str, Any]
) -> TestOperator:
    eig = np.asarray(np.linalg.eigvalsh(A)[::-1], dtype=np.float64).copy()
    details = dict(details)
    details["min_eigenvalue"] = float(eig[-1])
    details["numerical_rank"] = int(np.sum(eig > A.shape[0] * np.finfo(np.float64).eps * eig[0]))
    return TestOperator(name, description, A, eig, time.perf_counter() - t0, details)


def build_operators(config: BenchConfig, progress: Callable[[str], None]) -> list[TestOperator]:
    """Build the synthetic spectra and the PINN Gram matrix of ``config``.

    Parameters
    ----------
    config : BenchConfig
    progress : callable
        Receives one line per operator.

    Returns
    -------
    list of TestOperator
    """
    with _untimed():
        return _build_operators(config, progress)


def _build_operators(config: BenchConfig, progress: Callable[[str], None]) -> list[TestOperator]:
    ops: list[TestOperator] = []
    for n in config.sizes:
        i = np.arange(1, n + 1, dtype=np.float64)
        spectra = {
            f"poly_n{n}": ("lam_i = i^-2, i = 1..n", i**-2.0),
            f"exp_n{n}": (
                f"lam_i = max(0.9^i, {config.exp_floor:g}), i = 1..n",
                np.maximum(0.9**i, config.exp_floor),
            ),
        }
        for name, (text, lam) in spectra.items():
            t0 = time.perf_counter()
            A = synthetic_psd(lam, config.matrix_seed + n)
            op = _finish_operator(
                name,
                f"Q diag(lam) Q^T, n={n}, {text}, Q Haar-random",
                A,
                t0,
                {"spectrum": text},
            )
            op.details["max_abs_gap_to_prescribed_spectrum"] = float(
                np.max(np.abs(op.eigenvalues - np.sort(lam)[::-1]))
            )
            ops.append(op)
            progress(
                f"operator {name}: n={n}, lam_1={op.eigenvalues[0]:.3g} ({op.build_seconds:.2f}s)"
            )
    t0 = time.perf_counter()
    J, info = pinn_jacobian(
        config.pinn_widths, config.pinn_grid, config.pinn_boundary, config.pinn_seed
    )
    G = J.T @ J
    G = np.asarray(0.5 * (G + G.T), dtype=np.float64)
    widths = "-".join(str(w) for w in config.pinn_widths)
    name = f"pinn_gram_p{G.shape[0]}"
    op = _finish_operator(
        name,
        f"G = J^T J, J = Jacobian ({J.shape[0]} x {J.shape[1]}) of a [{widths}] tanh-MLP "
        f"PINN for 2-D Poisson ({info['n_interior']} interior, {info['n_boundary']} boundary "
        "points)",
        G,
        t0,
        info,
    )
    ops.append(op)
    progress(
        f"operator {name}: J {J.shape}, lam_1={op.eigenvalues[0]:.3g}, "
        f"numerical rank {op.details['numerical_rank']} ({op.build_seconds:.2f}s)"
    )
    return ops


# ----------------------------------------------------------------------------------------
# 2. Low-rank approximation
# ----------------------------------------------------------------------------------------
# An approximation is (U, s, Vt): U diag(s) Vt, or U diag(s) U^T when Vt is None.
Approx = tuple[Array, Array, Array | None]


def _run_nystrom(oversample: Callable[[int], int], A: Array, k: int, seed: int) -> Approx:
    approx = nystrom(aslinearoperator(A, psd=True), k, oversample=oversample(k), seed=seed)
    return approx.eigenvectors, approx.eigenvalues, None


def _run_rsvd(n_iter: int | str, A: Array, k: int, seed: int) -> Approx:
    U, S, Vt = randomized_svd(A, k, n_iter=n_iter, random_state=seed)
    return U, S, Vt


def _run_eigsh(A: Array, k: int, seed: int) -> Approx:
    v0 = np.random.default_rng(seed).standard_normal(A.shape[0])
    w, V = scipy.sparse.linalg.eigsh(A, k, v0=v0)
    return V, w, None


@dataclass(frozen=True)
class _LowRankMethod:
    name: str
    family: str
    description: str
    run: Callable[[Array, int, int], Approx]
    sketch_columns: Callable[[int], int | None]


def _rsvd_auto_iters(k: int, n: int) -> int:
    # scikit-learn's rule for n_iter="auto".
    return 7 if k < 0.1 * n else 4


LOWRANK_METHODS: tuple[_LowRankMethod, ...] = (
    _LowRankMethod(
        "nystrom",
        "nystrom",
        "sketchlinalg.nystrom(aslinearoperator(A, psd=True), k, seed=s): Gaussian sketch "
        "of l = k columns, one product A @ Omega",
        functools.partial(_run_nystrom, lambda k: 0),
        lambda k: k,
    ),
    _LowRankMethod(
        "nystrom_os10",
        "nystrom",
        "same with oversample=10: sketch of l = k + 10 columns, truncated to rank k",
        functools.partial(_run_nystrom, lambda k: 10),
        lambda k: k + 10,
    ),
    _LowRankMethod(
        "nystrom_l2k",
        "nystrom",
        "same with oversample=k: sketch of l = 2k columns, truncated to rank k",
        functools.partial(_run_nystrom, lambda k: k),
        lambda k: 2 * k,
    ),
    _LowRankMethod(
        "rsvd_auto",
        "rsvd",
        "sklearn randomized_svd(A, k, random_state=s), defaults: n_oversamples=10, "
        "n_iter='auto' (7 if k < 0.1 n else 4) with LU normalization, i.e. 2 n_iter + 2 "
        "products with blocks of k + 10 columns",
        functools.partial(_run_rsvd, "auto"),
        lambda k: k + 10,
    ),
    _LowRankMethod(
        "rsvd_iter0",
        "rsvd",
        "sklearn randomized_svd(A, k, n_iter=0, random_state=s): 2 products with blocks "
        "of k + 10 columns, no power iteration",
        functools.partial(_run_rsvd, 0),
        lambda k: k + 10,
    ),
    _LowRankMethod(
        "eigsh",
        "eigsh",
        "scipy.sparse.linalg.eigsh(A, k, v0=rng(s).standard_normal(n)): ARPACK Lanczos, "
        "which='LM', tol=0 (machine precision), ncv=2k+1",
        _run_eigsh,
        lambda k: None,
    ),
)


def spectral_error(A: Array, approx: Approx) -> float:
    """Exact ``||A - A_hat||_2``.

    Parameters
    ----------
    A : ndarray of shape (n, n)
    approx : (U, s, Vt)
        ``A_hat = U diag(s) U^T`` when ``Vt`` is ``None`` (symmetric: the largest absolute
        eigenvalue of the difference, ``numpy.linalg.eigvalsh``), else ``U diag(s) Vt``
        (largest singular value of the difference, ``numpy.linalg.norm(., 2)``).

    Returns
    -------
    float
    """
    U, s, Vt = approx
    if Vt is None:
        D = A - (U * s[None, :]) @ U.T
        return float(np.max(np.abs(np.linalg.eigvalsh(0.5 * (D + D.T)))))
    return float(np.linalg.norm(A - (U * s[None, :]) @ Vt, 2))


def _ratio(num: float, den: float) -> float:
    if not (math.isfinite(num) and math.isfinite(den)) or den == 0:
        return math.nan
    return num / den


def run_lowrank(
    ops: Sequence[TestOperator], config: BenchConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Rank-``k`` approximations: time (median over seeds) and exact spectral error.

    For each operator and rank the methods run round-robin over the seeds ``0..repeats-1``
    after one untimed warm-up call each (seed ``10**6``).

    Parameters
    ----------
    ops : sequence of TestOperator
    config : BenchConfig
    progress : callable

    Returns
    -------
    dict
        ``methods`` (descriptions), ``records`` (one per call) and ``summary`` (one per
        operator, rank and method, with the ratio columns).
    """
    records: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for op in ops:
        A = op.matrix
        for k in config.ranks:
            if k >= op.n:
                continue
            for m in LOWRANK_METHODS:
                m.run(A, k, 10**6)
            per: dict[str, list[dict[str, Any]]] = {m.name: [] for m in LOWRANK_METHODS}
            for seed in range(config.repeats):
                for m in LOWRANK_METHODS:
                    gc.collect()
                    seconds, approx = time_call(functools.partial(m.run, A, k, seed))
                    with _untimed():
                        error = spectral_error(A, approx)
                    rec: dict[str, Any] = {
                        "operator": op.name,
                        "rank": k,
                        "method": m.name,
                        "seed": seed,
                        "sketch_columns": m.sketch_columns(k),
                        "seconds": seconds,
                        "error": error,
                    }
                    per[m.name].append(rec)
                    records.append(rec)
            optimal = float(op.eigenvalues[k])
            roundoff = op.n * float(np.finfo(np.float64).eps) * float(op.eigenvalues[0])
            med = {
                name: (median(r["seconds"] for r in rs), median(r["error"] for r in rs))
                for name, rs in per.items()
            }
            t_auto, e_auto = med["rsvd_auto"]
            t_zero, e_zero = med["rsvd_iter0"]
            for m in LOWRANK_METHODS:
                t, e = med[m.name]
                errors = [r["error"] for r in per[m.name]]
                times = [r["seconds"] for r in per[m.name]]
                row = {
                    "operator": op.name,
                    "n": op.n,
                    "rank": k,
                    "method": m.name,
                    "family": m.family,
                    "sketch_columns": m.sketch_columns(k),
                    "rsvd_n_iter": (
                        _rsvd_auto_iters(k, op.n)
                        if m.name == "rsvd_auto"
                        else 0
                        if m.name == "rsvd_iter0"
                        else None
                    ),
                    "repeats": len(times),
                    "seconds_median": t,
                    "seconds_min": min(times),
                    "seconds_max": max(times),
                    "error_median": e,
                    "error_min": min(errors),
                    "error_max": max(errors),
                    "optimal_error": optimal,
                    "error_over_optimal": _ratio(e, optimal),
                    "optimal_error_at_roundoff": optimal <= roundoff,
                    "faster_by_vs_rsvd_auto": _ratio(t_auto, t),
                    "error_ratio_vs_rsvd_auto": _ratio(e, e_auto),
                    "faster_by_vs_rsvd_iter0": _ratio(t_zero, t),
                    "error_ratio_vs_rsvd_iter0": _ratio(e, e_zero),
                }
                if m.family == "nystrom":
                    row["target_met"] = bool(
                        row["faster_by_vs_rsvd_auto"] >= TARGET_SPEEDUP
                        and row["error_ratio_vs_rsvd_auto"] <= TARGET_ERROR_RATIO
                    )
                summary.append(row)
            t_ny, e_ny = med["nystrom"]
            progress(
                f"lowrank {op.name} k={k}: nystrom {t_ny * 1e3:.1f} ms err {e_ny:.3g} | "
                f"rsvd {t_auto * 1e3:.1f} ms err {e_auto:.3g} | eigsh "
                f"{med['eigsh'][0] * 1e3:.1f} ms | optimal {optimal:.3g}"
            )
    return {
        "methods": {m.name: m.description for m in LOWRANK_METHODS},
        "target": (
            f"a nystrom row meets the target when faster_by_vs_rsvd_auto >= {TARGET_SPEEDUP} "
            f"and error_ratio_vs_rsvd_auto <= {TARGET_ERROR_RATIO} (medians over seeds; "
            "'equal error' allows 1% for seed noise and rounding)"
        ),
        "records": records,
        "summary": summary,
    }


# ----------------------------------------------------------------------------------------
# 3. Solves (A + mu I) x = b
# ----------------------------------------------------------------------------------------
@dataclass
class _SolveOutcome:
    x: Array
    seconds: float
    build_seconds: float | None
    iterations: int | None
    converged: bool
    status: str
    recurrence_relative_residual: float | None


def _solve_pcg(
    A: Array, b: Array, sketch: int | None, rtol: float, maxiter: int, mu: float, seed: int
) -> _SolveOutcome:
    t0 = time.perf_counter()
    precond = None
    if sketch is not None:
        approx = nystrom(aslinearoperator(A, psd=True), sketch, seed=seed)
        precond = nystrom_preconditioner(approx, mu)
    t1 = time.perf_counter()
    res = pcg(A, b, mu=mu, preconditioner=precond, rtol=rtol, maxiter=maxiter)
    t2 = time.perf_counter()
    return _SolveOutcome(
        res.x,
        t2 - t0,
        (t1 - t0) if sketch is not None else None,
        int(res.iterations),
        bool(res.converged),
        res.message,
        float(res.residual_norm) / float(np.linalg.norm(b)),
    )


def _solve_cholesky(A: Array, b: Array, mu: float, seed: int) -> _SolveOutcome:
    del seed  # deterministic
    t0 = time.perf_counter()
    M = A.copy()
    M.flat[:: A.shape[0] + 1] += mu
    factor = scipy.linalg.cho_factor(M, lower=True, overwrite_a=True, check_finite=False)
    x = scipy.linalg.cho_solve(factor, b, check_finite=False)
    t1 = time.perf_counter()
    return _SolveOutcome(
        np.asarray(x, dtype=np.float64), t1 - t0, None, None, True, "cholesky", None
    )


def _repeat(fn: Callable[[int], T], repeats: int, budget_s: float) -> list[T]:
    out: list[T] = []
    t0 = time.perf_counter()
    for i in range(repeats):
        gc.collect()
        out.append(fn(i))
        if time.perf_counter() - t0 > budget_s:
            break
    return out


def run_solves(
    ops: Sequence[TestOperator], config: BenchConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Nystrom-PCG vs plain CG vs dense Cholesky on ``(A + mu I) x = b``.

    Parameters
    ----------
    ops : sequence of TestOperator
    config : BenchConfig
    progress : callable

    Returns
    -------
    dict
        ``methods``, ``records`` (one per timed call) and ``summary`` (medians).
    """
    # Warm up every code path on a small problem (first-call overheads).
    small = synthetic_psd(np.linspace(1.0, 1e-3, 60), 0)
    rhs = np.ones(60)
    _solve_pcg(small, rhs, 10, config.rtol, 600, 1e-3, 0)
    _solve_pcg(small, rhs, None, config.rtol, 600, 1e-3, 0)
    _solve_cholesky(small, rhs, 1e-3, 0)

    records: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    methods: dict[str, str] = {}
    for op in ops:
        A, n = op.matrix, op.n
        b = np.random.default_rng(config.matrix_seed + 7).standard_normal(n)
        bnorm = float(np.linalg.norm(b))
        lam1 = float(op.eigenvalues[0])
        maxiter = config.cg_maxiter_factor * n
        cases: list[tuple[str, Callable[[float, int], _SolveOutcome]]] = []
        for l in config.pcg_ranks:
            if l >= n:
                continue
            name = f"nystrom_pcg_l{l}"
            methods[name] = (
                f"pcg(A, b, mu=mu, preconditioner=nystrom_preconditioner(nystrom(A, {l}, "
                f"seed=s), mu), rtol={config.rtol:g}, maxiter={config.cg_maxiter_factor}n); "
                "time includes building the preconditioner (seed s = repeat index)"
            )
            cases.append((name, functools.partial(_solve_pcg, A, b, l, config.rtol, maxiter)))
        methods["cg"] = (
            f"pcg(A, b, mu=mu, rtol={config.rtol:g}, maxiter={config.cg_maxiter_factor}n), "
            "no preconditioner"
        )
        cases.append(("cg", functools.partial(_solve_pcg, A, b, None, config.rtol, maxiter)))
        methods["cholesky"] = (
            "scipy.linalg.cho_factor(A + mu I) + cho_solve (copy of A, LAPACK potrf/potrs, "
            "check_finite=False)"
        )
        cases.append(("cholesky", functools.partial(_solve_cholesky, A, b)))
        for c in config.mu_factors:
            mu = c * lam1
            rows: dict[str, dict[str, Any]] = {}
            for name, fn in cases:
                outs = _repeat(
                    functools.partial(fn, mu), config.solve_repeats, config.solve_budget_s
                )
                recs = []
                for i, o in enumerate(outs):
                    true_res = float(np.linalg.norm(b - (A @ o.x + mu * o.x))) / bnorm
                    rec: dict[str, Any] = {
                        "operator": op.name,
                        "mu_factor": c,
                        "mu": mu,
                        "method": name,
                        "repeat": i,
                        "seconds": o.seconds,
                        "build_seconds": o.build_seconds,
                        "iterations": o.iterations,
                        "converged": o.converged,
                        "status": o.status,
                        "recurrence_relative_residual": o.recurrence_relative_residual,
                        "relative_residual": true_res,
                    }
                    recs.append(rec)
                    records.append(rec)
                builds = [r["build_seconds"] for r in recs if r["build_seconds"] is not None]
                iters = [r["iterations"] for r in recs if r["iterations"] is not None]
                rows[name] = {
                    "operator": op.name,
                    "n": n,
                    "mu_factor": c,
                    "mu": mu,
                    "method": name,
                    "repeats": len(recs),
                    "seconds_median": median(r["seconds"] for r in recs),
                    "seconds_min": min(r["seconds"] for r in recs),
                    "build_seconds_median": median(builds) if builds else None,
                    "iterations_median": median(iters) if iters else None,
                    "iterations_max": max(iters) if iters else None,
                    "all_converged": all(r["converged"] for r in recs),
                    "relative_residual_max": max(r["relative_residual"] for r in recs),
                    "max_iterations_allowed": maxiter if name != "cholesky" else None,
                }
            t_cg = rows["cg"]["seconds_median"]
            t_chol = rows["cholesky"]["seconds_median"]
            for row in rows.values():
                row["speedup_vs_cg"] = _ratio(t_cg, row["seconds_median"])
                row["speedup_vs_cholesky"] = _ratio(t_chol, row["seconds_median"])
                summary.append(row)
            parts = [
                f"{name} {row['seconds_median'] * 1e3:.0f} ms"
                + (f" ({row['iterations_median']:.0f} it)" if row["iterations_median"] else "")
                for name, row in rows.items()
            ]
            progress(f"solve {op.name} mu={c:g}*lam1: " + ", ".join(parts))
    return {"methods": methods, "records": records, "summary": summary}


# ----------------------------------------------------------------------------------------
# 4. The auto rule of natural_gradient_direction
# ----------------------------------------------------------------------------------------
DIRECTION_METHODS = ("dense", "woodbury", "nystrom", "nystrom-pcg")
ACCURATE_METHODS = ("dense", "woodbury", "nystrom-pcg")


def _time_direction(
    J: Array, r: Array, mu: float, method: str, rank: int, seed: int
) -> tuple[float, Array]:
    t0 = time.perf_counter()
    d, _ = natural_gradient_direction(J, r, damping=mu, method=method, rank=rank, seed=seed)
    return time.perf_counter() - t0, np.asarray(d, dtype=np.float64)


def run_directions(config: BenchConfig, progress: Callable[[str], None]) -> dict[str, Any]:
    """Time ``natural_gradient_direction`` per method and compare with ``choose_method``.

    ``J`` is Gaussian with entries ``N(0, 1/N)``, ``r`` Gaussian, damping
    ``mu = 1e-6 ||J||_2^2``. The reference direction is the exact
    ``(J^T J + mu I)^{-1} J^T r`` (SciPy Cholesky, in the smaller of the two spaces).

    Parameters
    ----------
    config : BenchConfig
    progress : callable

    Returns
    -------
    dict
        ``records`` (one per timed call) and ``summary`` (one per shape).
    """
    records: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    rank = config.direction_rank
    for N, P in config.direction_shapes:
        rng = np.random.default_rng(config.matrix_seed + N * 7919 + P)
        J = rng.standard_normal((N, P)) / math.sqrt(N)
        r = rng.standard_normal(N)
        with _untimed():
            mu = 1e-6 * float(scipy.linalg.svdvals(J)[0]) ** 2
            if N <= P:
                K = J @ J.T
                K.flat[:: N + 1] += mu
                exact = J.T @ scipy.linalg.cho_solve(scipy.linalg.cho_factor(K), r)
            else:
                G = J.T @ J
                G.flat[:: P + 1] += mu
                exact = scipy.linalg.cho_solve(scipy.linalg.cho_factor(G), J.T @ r)
        picked, reason = choose_method(N, P, rank=rank, materialized=True)
        _, auto_info = natural_gradient_direction(J, r, damping=mu, method="auto", rank=rank)
        times: dict[str, float] = {}
        errors: dict[str, float] = {}
        for m in DIRECTION_METHODS:
            natural_gradient_direction(J, r, damping=mu, method=m, rank=rank, seed=10**6)
            call = functools.partial(_time_direction, J, r, mu, m, rank)
            outs = _repeat(call, config.direction_repeats, config.direction_budget_s)
            errs = []
            for i, (seconds, d) in enumerate(outs):
                err = float(np.linalg.norm(d - exact) / np.linalg.norm(exact))
                errs.append(err)
                records.append(
                    {
                        "N": N,
                        "P": P,
                        "method": m,
                        "repeat": i,
                        "seconds": seconds,
                        "relative_error": err,
                    }
                )
            times[m] = median(s for s, _ in outs)
            errors[m] = median(errs)
        # auto only picks accurate methods: compare it with the fastest of those
        fastest = min(ACCURATE_METHODS, key=lambda m: times[m])
        fastest_exact = min(("dense", "woodbury"), key=lambda m: times[m])
        row = {
            "N": N,
            "P": P,
            "rank": rank,
            "damping": mu,
            "seconds_median": times,
            "relative_error_median": errors,
            "choose_method": picked,
            "choose_method_reason": reason,
            "auto_ran": auto_info.method,
            "fastest": fastest,
            "fastest_exact": fastest_exact,
            "auto_is_fastest": picked == fastest,
            "auto_slowdown_vs_fastest": _ratio(times[picked], times[fastest]),
        }
        summary.append(row)
        progress(
            f"direction N={N} P={P}: "
            + ", ".join(f"{m} {times[m] * 1e3:.0f} ms" for m in DIRECTION_METHODS)
            + f" | auto picks {picked}, fastest {fastest}"
        )
    return {
        "setup": (
            "J ~ N(0, 1/N) entries (N x P), r ~ N(0, 1), damping = 1e-6 ||J||_2^2; "
            f"natural_gradient_direction(J, r, damping=mu, method=m, rank={rank}, seed=s); "
            f"auto = choose_method(N, P, rank={rank}, materialized=True)"
        ),
        "records": records,
        "summary": summary,
    }


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------
def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else format_float(seconds * 1e3)


def _blas_summary(blas: Any) -> str:
    if isinstance(blas, list):
        parts = []
        for entry in blas:
            if isinstance(entry, dict) and entry.get("user_api") == "blas":
                parts.append(
                    f"{entry.get('internal_api')} {entry.get('version')} "
                    f"({entry.get('architecture')}, {entry.get('num_threads')} threads, "
                    f"{Path(str(entry.get('filepath'))).name})"
                )
        return "; ".join(parts) or "unknown"
    return "see JSON"


def render_markdown(result: dict[str, Any]) -> str:
    """The markdown report of a :func:`run` result.

    Parameters
    ----------
    result : dict

    Returns
    -------
    str
    """
    mach = result["machine"]
    v = mach["versions"]
    out: list[str] = [
        "# sketchlinalg linear-algebra benchmark",
        "",
        f"- Command: `{result['command']}` (working directory: repository root)",
        f"- Date (UTC): {mach['date_utc']}; total run time {result['total_seconds']:.0f} s"
        + ("; **quick mode (smoke-test sizes)**" if result["quick"] else ""),
        f"- Machine: {mach['cpu_model'] or mach['processor']}, {mach['cpu_count']} CPUs "
        f"({mach['cpu_affinity_count']} usable), {mach['platform']}",
        f"- BLAS: {_blas_summary(mach['blas'])}; OPENBLAS_CORETYPE="
        f"{mach['env'].get('OPENBLAS_CORETYPE')}",
        f"- Load average (1/5/15 min) at start {mach['load_average_1_5_15min']}, at end "
        f"{result['load_average_at_end']} (above the CPU count: other processes competed "
        "for the cores and the timings are noisier)",
        f"- Python {mach['python'].split()[0]}, numpy {v['numpy']}, scipy {v['scipy']}, "
        f"scikit-learn {v['scikit-learn']}, jax {v['jax']}, sketchlinalg {v['sketchlinalg']} "
        f"(git {str((mach.get('git') or {}).get('commit'))[:10]}"
        + (", dirty tree" if (mach.get("git") or {}).get("dirty") else "")
        + ")",
        "- All arrays float64 NumPy on the CPU; times are wall-clock `time.perf_counter` "
        "medians over repeats after an untimed warm-up, with the BLAS thread pools as "
        "configured"
        + (
            f" (capped at {result['thread_limit']} by --threads)"
            if result.get("thread_limit")
            else ""
        )
        + "; untimed reference computations (matrix assembly, exact errors and exact "
        "solutions) run single-threaded, which is steadier on a shared machine.",
        "",
        "## Operators",
        "",
    ]
    ranks = result["config"]["ranks"]
    op_rows = []
    for op in result["operators"]:
        eig = op["eigenvalues_head"]
        op_rows.append(
            [
                op["name"],
                str(op["n"]),
                op["description"],
                format_float(eig[0]),
                *[format_float(eig[k]) if k < len(eig) else "-" for k in ranks],
                str(op["details"]["numerical_rank"]),
            ]
        )
    out.append(
        markdown_table(
            ["operator", "n", "definition", "lam_1", *[f"lam_{k + 1}" for k in ranks], "num. rank"],
            op_rows,
        )
    )
    out += [
        "",
        "`lam_{k+1}` is the optimal rank-k spectral error (Eckart-Young). Eigenvalues are "
        "those of the assembled matrix (`numpy.linalg.eigvalsh`); numerical rank counts "
        "`lam_i > n eps lam_1`.",
        "",
        "## Rank-k approximation: sketchlinalg.nystrom vs randomized_svd vs eigsh",
        "",
        "Methods (seed `s` = repeat index, a different sketch each repeat):",
        "",
    ]
    for name, text in result["lowrank"]["methods"].items():
        out.append(f"- `{name}`: {text}")
    out += [
        "",
        "Columns: `l` sketch columns; `time` median wall time [ms]; `error` median exact "
        "`||A - A_hat||_2` (symmetric differences: max |eigvalsh|; randomized_svd's "
        "`U diag(S) Vt`: `numpy.linalg.norm(., 2)`); `err/opt` = error / lam_{k+1}; "
        "`faster_by` = time(rsvd_auto) / time(row); `error_ratio` = error(row) / "
        "error(rsvd_auto) (< 1 means the row is more accurate); `target` (nystrom rows): "
        f"faster_by >= {TARGET_SPEEDUP} and error_ratio <= {TARGET_ERROR_RATIO} (equal error "
        "up to 1% seed/rounding noise); `faster_by0`, `error_ratio0`: "
        "the same against rsvd_iter0. `(r)`: lam_{k+1} <= n eps lam_1, i.e. the optimal "
        "error is at the rounding level of the assembled matrix, so the errors and ratios "
        "of that case compare rounding noise, not approximation quality.",
        "",
    ]
    lr_rows = []
    for row in result["lowrank"]["summary"]:
        lr_rows.append(
            [
                row["operator"],
                str(row["rank"]),
                row["method"],
                "-" if row["sketch_columns"] is None else str(row["sketch_columns"]),
                _ms(row["seconds_median"]),
                format_float(row["error_median"]),
                format_float(row["error_over_optimal"])
                + (" (r)" if row["optimal_error_at_roundoff"] else ""),
                format_float(row["faster_by_vs_rsvd_auto"]),
                format_float(row["error_ratio_vs_rsvd_auto"]),
                ("yes" if row["target_met"] else "no") if "target_met" in row else "",
                format_float(row["faster_by_vs_rsvd_iter0"]),
                format_float(row["error_ratio_vs_rsvd_iter0"]),
            ]
        )
    out.append(
        markdown_table(
            [
                "operator",
                "k",
                "method",
                "l",
                "time [ms]",
                "error",
                "err/opt",
                "faster_by",
                "error_ratio",
                "target",
                "faster_by0",
                "error_ratio0",
            ],
            lr_rows,
        )
    )
    held = [r for r in result["lowrank"]["summary"] if "target_met" in r]
    met = [r for r in held if r["target_met"]]
    plain = [r for r in held if r["method"] == "nystrom"]
    cases = {(r["operator"], r["rank"]) for r in held}
    cases_met = {(r["operator"], r["rank"]) for r in met}
    meaningful = {(r["operator"], r["rank"]) for r in held if not r["optimal_error_at_roundoff"]}
    out += [
        "",
        f"Target (Nystrom >= {TARGET_SPEEDUP}x faster than randomized_svd(n_iter='auto') at "
        f"equal or better error): met by {len(met)} of {len(held)} nystrom rows, in "
        f"{len(cases_met)} of {len(cases)} (operator, k) cases ({len(cases_met & meaningful)} "
        f"of the {len(meaningful)} cases not marked (r)); by the plain `nystrom` row (l = k) "
        f"in {sum(1 for r in plain if r['target_met'])} of {len(plain)} cases.",
    ]
    if met:
        out.append(
            "Rows that meet it: "
            + "; ".join(
                f"{r['operator']} k={r['rank']} `{r['method']}` "
                f"({format_float(r['faster_by_vs_rsvd_auto'])}x faster, error ratio "
                f"{r['error_ratio_vs_rsvd_auto']:.4f})"
                for r in met
            )
            + "."
        )
    out += [
        "",
        "## Solves (A + mu I) x = b",
        "",
    ]
    for name, text in result["solves"]["methods"].items():
        out.append(f"- `{name}`: {text}")
    out += [
        "",
        "`b` ~ N(0, I) fixed per operator; `mu = c * lam_1(A)`. Columns: `time` median "
        "total [ms] (PCG: preconditioner build included, `build` is that part); `iters` "
        "median CG iterations; `conv` all repeats report convergence; `rel. residual` "
        "max over repeats of `||b - (A + mu I) x|| / ||b||` recomputed in NumPy; `vs CG`, "
        "`vs chol` = time(cg or cholesky) / time(row) (> 1: the row is faster); `reps` "
        "timed repeats (fewer than requested once a case used its time budget).",
        "",
    ]
    s_rows = []
    for row in result["solves"]["summary"]:
        s_rows.append(
            [
                row["operator"],
                f"{row['mu_factor']:g}",
                row["method"],
                _ms(row["seconds_median"]),
                _ms(row["build_seconds_median"]),
                "-" if row["iterations_median"] is None else f"{row['iterations_median']:.0f}",
                "yes" if row["all_converged"] else "NO",
                format_float(row["relative_residual_max"]),
                format_float(row["speedup_vs_cg"]),
                format_float(row["speedup_vs_cholesky"]),
                str(row["repeats"]),
            ]
        )
    out.append(
        markdown_table(
            [
                "operator",
                "c",
                "method",
                "time [ms]",
                "build [ms]",
                "iters",
                "conv",
                "rel. residual",
                "vs CG",
                "vs chol",
                "reps",
            ],
            s_rows,
        )
    )
    out += [
        "",
        "## The auto rule of natural_gradient_direction",
        "",
        result["directions"]["setup"] + ".",
        "",
        "Columns: median time [ms] per method; `nystrom err` = median "
        "`||d - d_exact|| / ||d_exact||` of the rank-limited SNGD direction (dense and "
        "woodbury are exact, nystrom-pcg exact to its rtol); `auto` = `choose_method` pick "
        '(same as what `method="auto"` ran; it only picks accurate methods); `fastest` = '
        "measured fastest accurate method (dense, woodbury, nystrom-pcg); `fastest exact` = "
        "faster of dense and woodbury; `auto/fastest` = time(auto pick) / time(fastest).",
        "",
    ]
    d_rows = []
    for row in result["directions"]["summary"]:
        t = row["seconds_median"]
        d_rows.append(
            [
                str(row["N"]),
                str(row["P"]),
                *[_ms(t[m]) for m in DIRECTION_METHODS],
                format_float(row["relative_error_median"]["nystrom"]),
                row["choose_method"]
                + ("" if row["auto_ran"] == row["choose_method"] else f" (ran {row['auto_ran']})"),
                row["fastest"],
                row["fastest_exact"],
                "yes" if row["auto_is_fastest"] else "no",
                format_float(row["auto_slowdown_vs_fastest"]),
            ]
        )
    out.append(
        markdown_table(
            [
                "N",
                "P",
                *[f"{m} [ms]" for m in DIRECTION_METHODS],
                "nystrom err",
                "auto",
                "fastest",
                "fastest exact",
                "auto = fastest",
                "auto/fastest",
            ],
            d_rows,
        )
    )
    out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------
def run(config: BenchConfig, *, quick: bool, command: str) -> dict[str, Any]:
    """Run the four parts of the benchmark.

    Parameters
    ----------
    config : BenchConfig
    quick : bool
        Recorded in the result.
    command : str
        The command line, recorded in the result.

    Returns
    -------
    dict
        Everything that goes into the JSON file.
    """
    progress = Progress("linalg")
    t0 = time.perf_counter()
    machine = machine_info(REPO_ROOT)
    progress(f"sketchlinalg {sketchlinalg.__version__}, {machine['cpu_count']} CPUs")
    ops = build_operators(config, progress)
    lowrank = run_lowrank(ops, config, progress)
    solves = run_solves(ops, config, progress)
    directions = run_directions(config, progress)
    head = max(config.ranks) + 1
    return {
        "benchmark": "linalg",
        "command": command,
        "quick": quick,
        "config": asdict(config),
        "machine": machine,
        "operators": [
            {
                "name": op.name,
                "n": op.n,
                "description": op.description,
                "build_seconds": op.build_seconds,
                "details": op.details,
                "eigenvalues_head": op.eigenvalues[:head].tolist(),
                "eigenvalue_tail": float(op.eigenvalues[-1]),
            }
            for op in ops
        ],
        "lowrank": lowrank,
        "solves": solves,
        "directions": directions,
        "total_seconds": time.perf_counter() - t0,
        "load_average_at_end": load_average(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m benchmarks.linalg``).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.linalg",
        description="Benchmark sketchlinalg's Nystrom, PCG and auto rule against SciPy and "
        "scikit-learn on dense float64 PSD matrices (CPU).",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test in seconds")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="output folder for linalg.json and linalg.md (quick mode: linalg_quick.*); "
        "default benchmarks/results",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="cap the BLAS/OpenMP thread pools (threadpoolctl); default: leave them as they are",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="override the synthetic dimensions n (default 2000; 300 with --quick)",
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.sizes:
        config = BenchConfig(**{**asdict(config), "sizes": tuple(args.sizes)})
    raw = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m benchmarks.linalg", *raw])
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=args.threads):
            result = run(config, quick=args.quick, command=command)
    else:
        result = run(config, quick=args.quick, command=command)
    result["thread_limit"] = args.threads
    stem = "linalg_quick" if args.quick else "linalg"
    text = render_markdown(result)
    write_json(args.out / f"{stem}.json", result)
    write_text(args.out / f"{stem}.md", text)
    print(text)
    print(f"wrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
