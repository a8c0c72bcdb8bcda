r"""The Levenberg–Marquardt loop of :func:`least_squares`, with its state made explicit.

:func:`run` iterates from a checked start (:class:`Settings`, built by
:func:`least_squares` from its arguments) until a stopping test holds. What changes from
one accepted point to the next is one :class:`_Iterate` (the point, its residuals, cost,
Jacobian, gradient and scaling, and the counters); a trial step either replaces it
(accepted) or only changes the damping (rejected).

Per accepted point ``x`` (Moré 1978): the gtol test, one set-up of the direction solver on
``J_s = J D^{-1}`` (an SVD, a factorization or a sketch), then trial steps

.. math::

    p = -D^{-1} (J_s^T J_s + \mu I)^{-1} J_s^T f,

each judged by the gain ratio ``rho = (F(x) - F(x + p)) / (F(x) - 1/2 ||f + J p||^2)``
(with bounds, the projected step ``s = P(x + p) - x`` and the model
``-(g^T s + 1/2 ||J s||^2)``); ``rho > 1e-4`` accepts. ``mu`` comes from
:mod:`._lsq_damping`, the residuals and the Jacobian from :mod:`._lsq_problem`, the
overflow-safe arithmetic from :mod:`._lsq_numerics`. ftol and xtol are tested after every
trial, accepted or not; a trial point with NaN/Inf residuals is rejected like a bad step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import _dispatch
from ._exact import SVD
from ._lsq_bounds import Box, free_mask, project, projected_gradient_norm
from ._lsq_damping import TRUST_FACTOR, Nielsen, TrustRegion, trust_region_step
from ._lsq_loss import LossTerms, RobustLoss
from ._lsq_numerics import (
    column_norms,
    cost_reduction,
    gradient,
    gradient_measure,
    inf_norm,
    max_scaled_curvature,
    safe_dot,
    safe_norm,
    scaled_jacobian,
)
from ._lsq_problem import Jacobian, Residual, weigh_jacobian
from ._lsq_report import LeastSquaresIteration, Reporter
from ._operator import LinearOperator
from ._solver_base import DEFAULT_RANK, DirectionSolver
from ._solvers import choose_method, make_solver, solver_options
from ._sparse import SparseOperator
from ._status import Status

__all__ = [
    "ACCEPT_RATIO",
    "STATUS_MESSAGES",
    "Outcome",
    "Settings",
    "first_order",
    "resolve_direction",
    "run",
]

Array = Any

STATUS_MESSAGES = {
    -3: "Numerical failure: see the details.",
    -2: "Stopped because `callback` raised `StopIteration`.",
    0: "The maximum number of function evaluations is exceeded.",
    1: "`gtol` termination condition is satisfied.",
    2: "`ftol` termination condition is satisfied.",
    3: "`xtol` termination condition is satisfied.",
    4: "Both `ftol` and `xtol` termination conditions are satisfied.",
}

# A trial step is accepted when the actual reduction of the cost is at least this fraction
# of the reduction the linear model predicts (More 1978 uses 1e-4).
ACCEPT_RATIO = 1e-4

# Nystrom-PCG's iteration cap for a sparse Jacobian (unless direction_options sets one):
# each iteration is two sparse products, O(nnz(J)); the default cap of the dense path (100)
# left Levenberg-Marquardt with inexact steps on a 2-D PDE (benchmarks/lsq_sparse.py).
SPARSE_PCG_MAXITER = 2000


class Settings(NamedTuple):
    """What :func:`least_squares` checked: the problem, the options and the start."""

    xp: Any
    residual: Residual
    jacobian: Jacobian
    robust: RobustLoss | None
    box: Box | None
    ftol: float | None
    xtol: float | None
    gtol: float | None
    max_nfev: int
    tau: float
    eps: float
    direction: str
    options: dict[str, Any]
    sampler: Any
    fixed_scale: Any
    reporter: Reporter
    on_step: Any


@dataclass
class _Iterate:
    """The accepted point and what was evaluated there, with the counters of the run.

    ``f_raw`` are the residuals of ``fun``; ``f`` those the iteration works on (weighted by
    a robust loss, ``terms``), with the Jacobian weighted alike (``J_out`` for the result,
    ``Jd`` dense or ``None``, ``J_op`` an operator): ``g = J_w^T f_w`` is the gradient.
    ``D`` is the scaling (``None``: identity), ``col_norms`` the column norms of ``Jd``.
    """

    x: Array
    f_raw: Array
    f: Array
    terms: LossTerms | None
    cost: float
    J_out: Any
    Jd: Array | None
    J_op: LinearOperator
    col_norms: Array | None
    g: Array
    D: Array | None
    nfev: int
    njev: int
    nit: int = 0
    # trial points with non-finite residuals: in all, and since the last acceptance
    nonfinite_trials: int = 0
    nonfinite_streak: int = 0
    # trial directions the solver did not converge for (PCG at maxiter), the last message
    inexact_trials: int = 0
    inexact_detail: str = ""
    used_direction: str = ""
    notes: list[str] = field(default_factory=list)


class Outcome(NamedTuple):
    """The end of :func:`run`: the last accepted point and why the loop stopped."""

    x: Array
    cost: float
    fun: Array
    jac: Any
    grad: Array
    nfev: int
    njev: int
    nit: int
    status: int
    message: str
    result: Status
    damping: float
    direction: str
    nonfinite_trials: int


class _Trial(NamedTuple):
    """The verdict on one trial point that has finite model and step."""

    accept: bool
    ftol_ok: bool
    rho: float
    actual: float
    terms: LossTerms | None


def resolve_direction(
    direction: str,
    opts: dict[str, Any],
    materialized: bool,
    shape: tuple[int, int],
    dtype: Any,
    xp: Any,
    J_op: LinearOperator | None = None,
) -> str:
    """``"auto"``: :func:`choose_method`, with ``"svd"`` for its exact choices on arrays;
    for a sparse ``J``, ``"sparse-direct"`` (scipy) or ``"nystrom-pcg"`` (CuPy, torch)."""
    if direction != "auto":
        return direction
    if isinstance(J_op, SparseOperator):
        return "sparse-direct" if J_op.library == "scipy" else "nystrom-pcg"
    m, n = shape
    rank = opts.get("rank")
    method, _ = choose_method(
        m,
        n,
        rank=min(DEFAULT_RANK if rank is None else rank, n),
        itemsize=4 if dtype == xp.float32 else 8,
        memory_budget=opts.get("memory_budget"),
        materialized=materialized,
    )
    return "svd" if (materialized and method in ("dense", "woodbury")) else method


def first_order(xp: Any, x: Array, g: Array, box: Box | None) -> float:
    """``||g||_inf``, or ``||x - P(x - g)||_inf`` with bounds."""
    return inf_norm(xp, g) if box is None else projected_gradient_norm(xp, x, g, box)


def _first_order(cfg: Settings, state: _Iterate) -> float:
    return first_order(cfg.xp, state.x, state.g, cfg.box)


def _fnorm(cfg: Settings, state: _Iterate) -> float:
    """``||f||`` of the gtol test; ``sqrt(2 F)`` with a robust loss, whose weighted
    residuals are large where the weights are clipped (``J_w^T f_w`` stays the gradient,
    but ``||f_w||`` no longer measures the cost)."""
    if cfg.robust is None or state.cost <= 0.0:
        return safe_norm(cfg.xp, state.f if cfg.robust is None else state.f_raw)
    return math.sqrt(2.0 * state.cost)


def _finite_jacobian(xp: Any, state: _Iterate) -> bool:
    if not bool(xp.all(xp.isfinite(state.g))):
        return False
    if isinstance(state.J_op, SparseOperator):
        return state.J_op.all_finite()
    return state.Jd is None or bool(xp.all(xp.isfinite(state.Jd)))


def _start(
    cfg: Settings, x0: Array, f_raw: Array, terms: LossTerms | None, cost: float
) -> tuple[_Iterate, Any, DirectionSolver, Nielsen | TrustRegion]:
    """The first iterate (Jacobian and scaling at ``x0``), the scaling mode, the solver and
    the damping control."""
    xp = cfg.xp
    f = f_raw if terms is None else terms.f_w
    J_out, Jd, J_op = weigh_jacobian(xp, terms, *cfg.jacobian(x0, f_raw))
    n = int(x0.shape[0])
    m = cfg.residual.m
    dtype = x0.dtype
    # x_scale=None: MINPACK's "jac" (scipy's "lm") for least squares; 1 (scipy's "trf", its
    # method for robust losses) with a robust loss, whose clipped weights shrink the columns
    # of J_w that "jac" would divide by, and so inflate the steps.
    col_norms = column_norms(xp, Jd, J_op)
    jac_default = col_norms is not None and cfg.robust is None
    scale_mode = "jac" if (cfg.fixed_scale is None and jac_default) else cfg.fixed_scale
    if isinstance(scale_mode, str) and col_norms is None:
        raise ValueError(
            'x_scale="jac" needs the Jacobian\'s columns, but jac gave a matrix-free operator; '
            "pass x_scale as a float or an array of shape (n,)"
        )
    D: Array | None = None
    if isinstance(scale_mode, str):  # "jac"
        assert col_norms is not None
        D = xp.where(col_norms > 0, col_norms, xp.ones_like(col_norms))
    elif isinstance(scale_mode, float):
        if scale_mode != 1.0:
            D = xp.full((n,), 1.0 / scale_mode, dtype=dtype, device=_dispatch.device_of(x0))
    elif scale_mode is not None and not isinstance(scale_mode, str):
        D = xp.broadcast_to(1.0 / scale_mode, (n,))
    opts = cfg.options
    method = resolve_direction(cfg.direction, opts, Jd is not None, (m, n), dtype, xp, J_op)
    if method == "nystrom-pcg" and isinstance(J_op, SparseOperator) and "maxiter" not in opts:
        # a CG iteration on a sparse J costs O(nnz), far below the sketch: let CG converge
        opts = {**opts, "maxiter": min(n, SPARSE_PCG_MAXITER)}
    solver: DirectionSolver = (
        SVD()
        if method == "svd"
        else make_solver(method, **{k: v for k, v in opts.items() if k in solver_options(method)})
    )
    control: Nielsen | TrustRegion
    if method == "svd":
        x_norm0 = safe_norm(xp, x0 if D is None else D * x0)
        control = TrustRegion(TRUST_FACTOR * x_norm0 if x_norm0 > 0 else TRUST_FACTOR)
    else:
        mu0 = cfg.tau * max_scaled_curvature(xp, J_op, D, col_norms, cfg.sampler)
        control = Nielsen(mu0, cfg.eps)
    state = _Iterate(
        x=x0,
        f_raw=f_raw,
        f=f,
        terms=terms,
        cost=cost,
        J_out=J_out,
        Jd=Jd,
        J_op=J_op,
        col_norms=col_norms,
        g=gradient(xp, Jd, J_op, f),
        D=D,
        nfev=1,
        njev=1,
        used_direction=method,
    )
    return state, scale_mode, solver, control


def _judge(
    cfg: Settings, state: _Iterate, f_new: Array, predicted: float, where: str
) -> _Trial | None:
    """The gain ratio and the tests at a trial point; ``None`` where it is not finite."""
    xp, robust = cfg.xp, cfg.robust
    if not bool(xp.all(xp.isfinite(f_new))):
        return None
    terms_new: LossTerms | None = None
    if robust is None or state.terms is None:
        actual = cost_reduction(xp, state.f, f_new)
    else:
        terms_new = robust.terms(f_new, where)
        finite_cost = math.isfinite(terms_new.cost)
        actual = robust.reduction(state.terms, terms_new) if finite_cost else math.inf
    if not (math.isfinite(actual) and math.isfinite(predicted)):
        return None
    rho = actual / predicted if predicted > 0 else -math.inf
    ftol, cost = cfg.ftol, state.cost
    return _Trial(
        accept=predicted > 0 and actual > 0 and rho > ACCEPT_RATIO,
        ftol_ok=(
            ftol is not None
            and abs(actual) <= ftol * cost
            and predicted <= ftol * cost
            and rho <= 2.0
        ),
        rho=rho,
        actual=actual,
        terms=terms_new,
    )


def _move(
    cfg: Settings, state: _Iterate, x_new: Array, f_new: Array, trial: _Trial, scale_mode: Any
) -> None:
    """Accept ``x_new``: its cost, Jacobian, gradient and (``x_scale="jac"``) scaling."""
    xp = cfg.xp
    state.x, state.f_raw = x_new, f_new
    if trial.terms is None:
        state.f = f_new
        state.cost = 0.5 * safe_dot(xp, state.f, state.f)
    else:
        state.terms = trial.terms
        state.f, state.cost = trial.terms.f_w, trial.terms.cost
    state.nit += 1
    state.nonfinite_streak = 0
    state.J_out, state.Jd, state.J_op = weigh_jacobian(
        xp, state.terms, *cfg.jacobian(state.x, state.f_raw)
    )
    state.njev += 1
    state.col_norms = column_norms(xp, state.Jd, state.J_op)
    if state.col_norms is not None and isinstance(scale_mode, str):  # "jac"
        state.D = xp.maximum(state.D, state.col_norms)
    state.g = gradient(xp, state.Jd, state.J_op, state.f)


def _report(cfg: Settings, state: _Iterate, actual: float, p: Array, mu: float) -> bool:
    """The verbose row and the callback after an accepted step; ``True`` to stop."""
    xp = cfg.xp
    optimality = _first_order(cfg, state)
    cfg.reporter.row(state.nit, state.nfev, state.cost, actual, safe_norm(xp, p), optimality, mu)
    return cfg.on_step is not None and bool(
        cfg.on_step(
            LeastSquaresIteration(
                x=xp.asarray(state.x, copy=True),
                cost=float(state.cost),
                fun=state.f_raw,
                jac=state.J_out,
                grad=state.g,
                optimality=optimality,
                nfev=state.nfev,
                njev=state.njev,
                nit=state.nit,
            )
        )
    )


def run(cfg: Settings, x0: Array, f_raw: Array, terms: LossTerms | None, cost: float) -> Outcome:
    """Levenberg–Marquardt from ``x0`` (``f_raw = fun(x0)`` finite, its loss ``terms`` and
    ``cost``) until a stopping test holds."""
    xp, box = cfg.xp, cfg.box
    state, scale_mode, solver, control = _start(cfg, x0, f_raw, terms, cost)
    status: int | None = None
    failure = Status.NONFINITE  # what a status -3 was (NaN/Inf, or no decrease in the end)
    notes = state.notes

    cfg.reporter.header()
    cfg.reporter.row(0, state.nfev, state.cost, None, None, _first_order(cfg, state), control.mu)

    while status is None:
        if not _finite_jacobian(xp, state):
            status = -3
            notes.append(
                "the Jacobian (or J^T f) at x holds NaN/Inf; x is the last point with finite "
                "residuals (finite-difference steps may have left the domain of fun)"
            )
            break
        # With bounds: the variables on a bound that -g points out of are fixed for this
        # point (their columns of J_s zeroed, their gradient left out of the gtol test).
        x, g, D = state.x, state.g, state.D
        free = None if box is None else free_mask(xp, x, g, box)
        g_free = g if free is None else xp.where(free, g, xp.zeros_like(g))
        if (
            cfg.gtol is not None
            and gradient_measure(xp, g_free, _fnorm(cfg, state), state.col_norms) <= cfg.gtol
        ):
            status = 1
            break
        if state.nfev >= cfg.max_nfev:
            status = 0
            break
        Js = scaled_jacobian(xp, state.Jd, state.J_op, D, free)
        x_norm = safe_norm(xp, x if D is None else D * x)
        # One set-up per point (factorization, SVD or sketch); every trial below re-solves
        # it for its damping without another pass over J.
        if isinstance(control, TrustRegion) and state.Jd is None:
            Js = scaled_jacobian(xp, state.J_op.to_dense(), state.J_op, D, free)
        setup = solver.init(Js, state.f, seed=cfg.sampler.fold_in(state.nit + 1))
        while True:  # trial steps until one is accepted or a test stops the run
            if isinstance(control, TrustRegion):
                assert isinstance(solver, SVD)
                d, control.mu, predicted = trust_region_step(
                    xp, solver, setup, control.radius, control.mu
                )
                detail = "svd"
            else:
                d, info = solver.solve(setup, damping=control.mu)
                state.used_direction, detail = info.method, info.message
                predicted = float(info.predicted_decrease)
                if not bool(info.converged) and info.status != Status.NONFINITE:
                    state.inexact_trials += 1
                    state.inexact_detail = detail
            if not bool(xp.all(xp.isfinite(d))):
                notes.append(f"a direction with NaN/Inf was rejected ({detail})")
                control.reject(math.inf)
                if control.exhausted():
                    status = -3
                    notes.append("the damping overflowed (the trust region collapsed)")
                    break
                continue
            p = -d if D is None else -d / D
            x_new = x + p
            step_norm = safe_norm(xp, d)
            if box is not None and free is not None:
                # The projected step actually taken, and its model decrease
                # -(g^T s + 1/2 ||J s||^2) (Kanzow, Yamashita, Fukushima 2004).
                unprojected_same = bool(xp.all(x_new == x))
                x_new = project(xp, x + xp.where(free, p, xp.zeros_like(p)), box)
                s_step = x_new - x
                Js_step = state.Jd @ s_step if state.Jd is not None else state.J_op.matvec(s_step)
                predicted = -(safe_dot(xp, g, s_step) + 0.5 * safe_dot(xp, Js_step, Js_step))
                if bool(xp.all(x_new == x)) and not unprojected_same:
                    # the whole step left the box: shrink it (it tends to the projected
                    # steepest-descent step, which moves while x is not stationary)
                    control.reject(step_norm)
                    if control.exhausted():
                        status, failure = -3, Status.NO_DECREASE
                        notes.append("the damping overflowed (the trust region collapsed)")
                        break
                    continue
                step_norm = safe_norm(xp, s_step if D is None else D * s_step)
            xtol_ok = cfg.xtol is not None and step_norm <= cfg.xtol * (cfg.xtol + x_norm)
            if bool(xp.all(x_new == x)):
                status = 3 if state.nonfinite_streak == 0 else -3
                if not xtol_ok:
                    notes.append("the step fell below the floating-point resolution of x")
                break
            where = f"trial point {state.nfev}"
            f_new = cfg.residual(x_new, where)
            state.nfev += 1
            trial = _judge(cfg, state, f_new, predicted, where)
            if trial is None:
                state.nonfinite_trials += 1
                state.nonfinite_streak += 1
            accept = trial is not None and trial.accept
            ftol_ok = trial is not None and trial.ftol_ok
            if trial is not None and accept:
                _move(cfg, state, x_new, f_new, trial, scale_mode)
                control.accept(trial.rho, step_norm)
                if _report(cfg, state, trial.actual, p, control.mu):
                    status = -2  # scipy: the callback's StopIteration overrides the tests
                    break
            else:
                control.reject(step_norm)
            if ftol_ok or xtol_ok:
                status = 4 if (ftol_ok and xtol_ok) else (2 if ftol_ok else 3)
                if status == 3 and state.nonfinite_streak > 0 and not accept:
                    status = -3
                    notes.append(
                        "every trial point since the last accepted step had non-finite "
                        "residuals and the step shrank below xtol"
                    )
                break
            if control.exhausted():
                status, failure = -3, Status.NO_DECREASE
                notes.append("the damping overflowed (the trust region collapsed)")
                break
            if accept:
                break
            if state.nfev >= cfg.max_nfev:
                status = 0
                break

    if status > 0 and not _finite_jacobian(xp, state):
        status, failure = -3, Status.NONFINITE
        notes.append(
            "the Jacobian (or J^T f) at the final x holds NaN/Inf, so optimality cannot be "
            "judged there"
        )
    if state.nonfinite_trials:
        notes.append(
            f"{state.nonfinite_trials} trial point(s) had non-finite residuals"
            + ("" if cfg.robust is None else " (or a non-finite robust cost)")
            + " and were rejected (damping increased)"
        )
    if state.inexact_trials:
        notes.append(
            f"the direction solver did not converge for {state.inexact_trials} trial step(s) "
            f"(last: {state.inexact_detail}), so those steps were inexact and the run may "
            "have stopped short of the minimum; raise direction_options maxiter or rank"
        )
    message = STATUS_MESSAGES[status]
    if notes:
        message = f"{message} Details: {'; '.join(notes)}."
    return Outcome(
        x=state.x,
        cost=float(state.cost),
        fun=state.f_raw,
        jac=state.J_out,
        grad=state.g,
        nfev=state.nfev,
        njev=state.njev,
        nit=state.nit,
        status=status,
        message=message,
        result=(
            Status.SUCCESS
            if status > 0
            else Status.MAX_ITERATIONS
            if status in (0, -2)
            else failure
        ),
        damping=float(control.mu),
        direction=state.used_direction,
        nonfinite_trials=state.nonfinite_trials,
    )
