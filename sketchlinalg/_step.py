r"""The natural-gradient step, written once: direction, line search, step size, momentum,
non-finite handling and the info record. Both adapters (optax and ``torch.optim``) run it.

One step at parameters ``theta`` with residual ``r``, Jacobian ``J`` and loss
``L = 1/2 ||r||^2``:

1. ``state = solver.init(J, r, seed)``, then ``d = solver.solve(state, b, mu)`` with
   ``b = r`` or, with momentum ``beta`` (SPRING), ``b = r - beta J phi`` and
   ``d <- d + beta phi``, ``phi`` the previous direction;
2. a step size ``eta``: the best point of the grid ``2^0 .. 2^-(n-1)`` (one batched loss
   evaluation), Armijo backtracking, or ``eta = 1`` without a line search; a line search
   never accepts a point whose loss is not below ``L(theta)``;
3. the update ``-lr eta d`` (``lr`` a scalar, a schedule value, or a per-parameter vector);
4. the one non-finite policy: if ``r``, ``J``, ``d`` or the loss holds NaN/Inf the update
   is zero (the parameters stay as they are), ``skipped`` counts it and the status is
   ``NONFINITE``; eagerly a :class:`StepWarning` says so.

Everything is array-API code that traces under ``jax.jit`` (loops are ``_dispatch`` loops).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import _dispatch
from ._direction import METHODS, check_momentum
from ._linesearch import LINE_SEARCHES, armijo_line_search, grid_line_search
from ._operator import LinearOperator, aslinearoperator
from ._solver_base import DirectionInfo, DirectionSolver
from ._solvers import make_solver, solver_options
from ._status import Status, status_message
from ._validation import check_int, check_nonnegative

__all__ = [
    "OPTIMIZERS",
    "StepEngine",
    "StepInfo",
    "StepState",
    "StepWarning",
    "check_system",
    "forwarded_kwargs",
]

Array = Any

#: The natural-gradient optimizers of both adapters: name -> direction method. SPRING is
#: the Woodbury direction with momentum.
OPTIMIZERS = {
    "sngd": "nystrom",
    "engd": "dense",
    "engd-woodbury": "woodbury",
    "nystrom-pcg": "nystrom-pcg",
    "spring": "woodbury",
}
_STEP_OPTIONS = ("damping", "line_search", "learning_rate", "grid_size", "armijo_c", "momentum")


class StepWarning(RuntimeWarning):
    """A natural-gradient step was not taken (non-finite values); see the message."""


class StepState(NamedTuple):
    """The state a natural-gradient step carries from one step to the next.

    All fields are arrays (0-d, or ``(P,)`` for ``previous``), so the state is a pytree in
    JAX and a set of tensors in a ``torch.optim`` state dict.

    Attributes
    ----------
    steps : int32 array
        Steps attempted.
    loss : array
        ``1/2 ||r||^2`` at the parameters of the last step (before it).
    step_size : array
        The last ``eta`` (``0`` when the step was not taken).
    previous : array of shape (P,)
        The last direction ``phi`` (momentum).
    skipped : int32 array
        Steps not taken because of NaN/Inf.
    status : int32 array
        :class:`Status` of the last step.
    """

    steps: Array
    loss: Array
    step_size: Array
    previous: Array
    skipped: Array
    status: Array


class StepInfo(NamedTuple):
    """What the last step did (eagerly; under ``jax.jit`` read the state instead).

    Attributes
    ----------
    status : Status or int32 array
        ``SUCCESS`` (taken), ``NO_DECREASE`` (the line search found no lower loss: not
        taken) or ``NONFINITE`` (not taken).
    loss : array
        Loss before the step.
    new_loss : array
        Loss at the accepted point by the line search (``nan`` without one, ``loss`` when
        the step was not taken).
    step_size : array
        ``eta``.
    damping : float or array
        ``mu`` used.
    direction : DirectionInfo
        The solver's record (method, rank, effective dimension, its own status...).
    """

    status: Any
    loss: Array
    new_loss: Array
    step_size: Array
    damping: Any
    direction: DirectionInfo


@dataclass(frozen=True)
class StepEngine:
    r"""A natural-gradient step rule: a direction solver plus how to step along it.

    Configured once (every option checked here), then :meth:`init` and :meth:`step` are
    pure functions of arrays. The adapters build one and only supply ``J``, ``r``, a trial
    loss and the seed; nothing of the step is written in them.

    Parameters
    ----------
    solver : DirectionSolver
        :class:`Nystrom` (SNGD), :class:`Dense` (ENGD), :class:`Woodbury`,
        :class:`NystromPCG`, :class:`KernelNystrom`, :class:`SVD` or :class:`Auto`.
    damping : float
        ``mu >= 0`` (``> 0`` where the solver needs it).
    line_search : {"grid", "armijo", None}
        ENGD's grid (``grid_size`` points in one batched evaluation), Armijo backtracking
        from ``eta = 1`` (constant ``armijo_c``), or none (``eta = 1``).
    learning_rate : float
        ``lr >= 0`` multiplying the line search's step: the update is ``-lr eta d``
        (:meth:`step` can override it per step: a schedule, per-parameter rates).
    grid_size : int
    armijo_c : float
    momentum : float
        SPRING's ``beta`` in ``[0, 1)`` (``0``: none).

    Examples
    --------
    A linear least-squares problem solved by one damped Gauss–Newton step:

    >>> import numpy as np
    >>> import sketchlinalg as sl
    >>> A, y = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), np.array([1.0, 2.0, 3.0])
    >>> engine = sl.StepEngine(sl.Dense(), damping=0.0, line_search=None)
    >>> theta = np.zeros(2)
    >>> update, state, info = engine.step(A, A @ theta - y, engine.init(theta))
    >>> theta = theta + update
    >>> bool(np.allclose(A.T @ (A @ theta - y), 0.0)), info.status.name
    (True, 'SUCCESS')
    """

    solver: DirectionSolver
    damping: float = 0.0
    line_search: str | None = "grid"
    learning_rate: float = 1.0
    grid_size: int = 31
    armijo_c: float = 1e-4
    momentum: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.solver, DirectionSolver):
            raise TypeError(
                "solver must be a DirectionSolver (sketchlinalg.Nystrom(), Dense(), ...), got "
                f"{type(self.solver).__name__}"
            )
        object.__setattr__(self, "damping", self.solver.check_damping(self.damping))
        if self.line_search not in LINE_SEARCHES:
            raise ValueError(
                f"line_search must be one of {LINE_SEARCHES}, got {self.line_search!r}"
            )
        lr = check_nonnegative(self.learning_rate, "learning_rate")
        object.__setattr__(self, "learning_rate", lr)
        object.__setattr__(self, "grid_size", check_int(self.grid_size, "grid_size", low=1))
        c = check_nonnegative(self.armijo_c, "armijo_c", strict=True)
        if not c < 1:
            raise ValueError(f"armijo_c must be in (0, 1), got {c}")
        object.__setattr__(self, "momentum", check_momentum(self.momentum))

    @classmethod
    def from_options(cls, method: str, **options: Any) -> StepEngine:
        """An engine from a method name and a flat set of options (what the adapters'
        optimizers take): the solver's own options go to :func:`make_solver`, the step's
        (``damping``, ``line_search``, ``grid_size``, ``armijo_c``, ``momentum``) to the
        engine; any other raises ``TypeError`` naming the valid ones.

        Examples
        --------
        >>> import sketchlinalg as sl
        >>> engine = sl.StepEngine.from_options("nystrom", rank=50, damping=1e-6)
        >>> type(engine.solver).__name__, engine.solver.rank, engine.line_search
        ('Nystrom', 50, 'grid')
        """
        own = set(solver_options(method)) if method in METHODS else set()
        unknown = sorted(k for k in options if k not in own and k not in _STEP_OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown option(s) {unknown} for method {method!r}; valid: "
                f"{sorted(own | set(_STEP_OPTIONS))}"
            )
        solver = make_solver(method, **{k: v for k, v in options.items() if k in own})
        return cls(solver, **{k: v for k, v in options.items() if k in _STEP_OPTIONS})

    @property
    def needs_trial_loss(self) -> bool:
        """Whether :meth:`step` evaluates the loss at trial points (a line search)."""
        return self.line_search is not None

    def init(self, params: Array) -> StepState:
        """The state before the first step, for flat parameters ``params`` of shape (P,)."""
        xp = _dispatch.namespace(params)
        if params.ndim != 1:
            raise ValueError(f"params must be flat, of shape (P,), got {tuple(params.shape)}")
        zero = xp.zeros((), dtype=params.dtype, device=_dispatch.device_of(params))
        izero = xp.zeros((), dtype=xp.int32, device=_dispatch.device_of(params))
        return StepState(izero, zero, zero, xp.zeros_like(params), izero, izero)

    def step(
        self,
        J: Array | LinearOperator,
        r: Array,
        state: StepState,
        *,
        trial_loss: Any = None,
        seed: Any = 0,
        learning_rate: float | Array | None = None,
    ) -> tuple[Array, StepState, StepInfo]:
        """One step: returns ``(update, new_state, info)``; apply ``theta + update``.

        Parameters
        ----------
        J : LinearOperator or array
            Jacobian ``(N, P)`` at ``theta``.
        r : array of shape (N,)
            Residual at ``theta``.
        state : StepState
        trial_loss : callable, optional
            ``(etas, direction) -> losses``: the loss at ``theta - eta_k d`` for a 1-D
            array of step sizes (needed by the line searches).
        seed : int, Sampler or JAX key
            This step's sketch randomness.
        learning_rate : float or array, optional
            Overrides the engine's ``learning_rate`` for this step: ``lr >= 0``, a scalar
            (a schedule's value) or a ``(P,)`` vector (per-parameter rates).

        Returns
        -------
        update : array of shape (P,)
            Zero when the step was not taken.
        new_state : StepState
        info : StepInfo
        """
        J = aslinearoperator(J)
        xp = J.xp
        N, P = J.shape
        if not _dispatch.is_array(r) or r.ndim != 1 or r.shape[0] != N:
            raise ValueError(
                f"r must have shape ({N},) for J of shape {J.shape}, got "
                f"{tuple(getattr(r, 'shape', ()))}"
            )
        if state.previous.shape != (P,):
            raise ValueError(
                f"the state belongs to {state.previous.shape[0]} parameters, J has {P} columns"
            )
        if self.line_search is not None and trial_loss is None:
            raise ValueError(f"line_search={self.line_search!r} needs trial_loss")
        lr = self.learning_rate if learning_rate is None else _check_lr(learning_rate, P)
        mu = self.damping
        loss0 = 0.5 * xp.sum(r * r)
        eager = not _dispatch.is_tracing(r, loss0, state.previous)
        if eager and not bool(xp.isfinite(loss0)):
            return self._skip(xp, state, loss0, mu, Status.NONFINITE, "the residual")

        solver_state = self.solver.init(J, r, seed=seed)
        beta = self.momentum
        if beta:
            phi = state.previous
            d, dinfo = self.solver.solve(solver_state, r - beta * J.matvec(phi), damping=mu)
            d = d + beta * phi
        else:
            d, dinfo = self.solver.solve(solver_state, damping=mu)

        if self.line_search is None:
            eta = xp.ones_like(loss0)
            new_loss = xp.full_like(loss0, float("nan"))
            ls_status: Any = Status.SUCCESS
        else:

            def losses(etas: Array) -> Array:
                return trial_loss(etas, d)

            if self.line_search == "grid":
                res = grid_line_search(losses, loss0, num=self.grid_size)
            else:
                g = dinfo.gradient if dinfo.gradient is not None else J.rmatvec(r)
                slope = xp.sum(g * d)
                res = armijo_line_search(losses, loss0, slope, c=self.armijo_c)
            eta, new_loss, ls_status = res.step_size, res.loss, res.status

        finite = xp.all(xp.isfinite(d)) & xp.isfinite(loss0)
        status = _combine(xp, finite, ls_status)
        device = _dispatch.device_of(loss0)
        # one 0-d boolean array drives every masked update (eagerly too: torch.where wants
        # a tensor condition)
        taken = xp.asarray(status == Status.SUCCESS, device=device)
        finite = xp.asarray(finite, device=device)
        step = -(lr * eta) * d
        new_state = StepState(
            steps=state.steps + 1,
            loss=loss0,
            step_size=xp.where(taken, eta, xp.zeros_like(eta)),
            previous=xp.where(finite, d, state.previous),
            skipped=state.skipped + xp.astype(~finite, xp.int32),
            status=xp.asarray(int(status) if eager else status, dtype=xp.int32, device=device),
        )
        if eager and status is Status.NONFINITE:
            _warn("the direction or the loss", dinfo.message)
        info = StepInfo(status, loss0, xp.where(taken, new_loss, loss0), eta, mu, dinfo)
        return xp.where(taken, step, xp.zeros_like(step)), new_state, info

    def _skip(
        self, xp: Any, state: StepState, loss0: Array, mu: Any, status: Status, what: str
    ) -> tuple[Array, StepState, StepInfo]:
        _warn(what, "")
        zero = xp.zeros_like(loss0)
        new_state = StepState(
            state.steps + 1,
            loss0,
            zero,
            state.previous,
            state.skipped + 1,
            xp.asarray(int(status), dtype=xp.int32, device=_dispatch.device_of(loss0)),
        )
        dinfo = DirectionInfo(
            self.solver.method,
            None,
            None,
            None,
            None,
            False,
            f"not solved: {what} is not finite",
            None,
            status,
        )
        return (
            xp.zeros_like(state.previous),
            new_state,
            StepInfo(status, loss0, loss0, zero, mu, dinfo),
        )


def _combine(xp: Any, finite: Any, ls_status: Any) -> Any:
    """The step's status: NONFINITE before the line search's verdict."""
    if _dispatch.is_tracing(finite) or _dispatch.is_tracing(ls_status):
        ls = xp.asarray(ls_status, dtype=xp.int32)
        return xp.where(finite, ls, xp.asarray(3, dtype=xp.int32))
    return Status(int(ls_status)) if bool(finite) else Status.NONFINITE


def _check_lr(lr: Any, P: int) -> Any:
    if _dispatch.is_array(lr) and getattr(lr, "ndim", 0) == 1:
        if lr.shape[0] != P:
            raise ValueError(f"learning_rate must be a scalar or of shape ({P},), got {lr.shape}")
        return lr
    return check_nonnegative(lr, "learning_rate")


def _warn(what: str, detail: str) -> None:
    warnings.warn(
        f"natural-gradient step not taken: {what} holds NaN/Inf, so the parameters were "
        f"left unchanged ({status_message(Status.NONFINITE)})" + (f"; {detail}" if detail else ""),
        StepWarning,
        stacklevel=3,
    )


def check_system(
    out: Any, n_params: int, dtype: Any = None, where: str = "system_fn"
) -> tuple[Array, LinearOperator]:
    """``(r, J)`` from what a system function returned (a :class:`PINNSystem`, the pair of a
    ``jacobian_operator``...), checked: ``r`` 1-D of ``dtype``, ``J`` a
    :class:`LinearOperator` of shape ``(len(r), n_params)``. NaN/Inf is not an error here:
    the step engine skips such a step and says so.

    Examples
    --------
    >>> import numpy as np
    >>> import sketchlinalg as sl
    >>> r, J = sl.check_system((np.ones(3), sl.aslinearoperator(np.ones((3, 2)))), 2)
    >>> J.shape
    (3, 2)
    """
    if not (isinstance(out, tuple) and len(out) >= 2):
        raise TypeError(
            f"{where} must return (r, J) (a PINNSystem or the pair of jacobian_operator), got "
            f"{type(out).__name__}"
        )
    r, J = out[0], out[1]
    if not _dispatch.is_array(r):
        raise TypeError(
            f"{where} must return the residual as an array of shape (N,), got {type(r).__name__}"
        )
    if r.ndim != 1:
        raise ValueError(
            f"{where} must return a 1-D residual of shape (N,), got shape {tuple(r.shape)} "
            "(flatten it, e.g. r.reshape(-1))"
        )
    if dtype is not None and r.dtype != dtype:
        raise TypeError(
            f"{where} returned a residual of dtype {r.dtype}, expected the parameters' {dtype}"
        )
    if not isinstance(J, LinearOperator):
        raise TypeError(
            f"{where} must return a sketchlinalg.LinearOperator Jacobian (pinn_system, "
            f"jacobian_operator), got {type(J).__name__}"
        )
    if J.shape != (r.shape[0], n_params):
        raise ValueError(
            f"{where} returned J of shape {J.shape}, expected {(r.shape[0], n_params)} "
            f"(N residuals x P = {n_params} parameters)"
        )
    return r, J


def forwarded_kwargs(fn: Callable[..., Any] | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A filter of keyword arguments: those ``fn`` accepts by name (all, with ``**kwargs``).

    The optimizers pass the extra arguments of their ``update`` / ``step`` (``points=`` to
    resample collocation points) on to the user's functions through it, leaving out the
    ones a function does not take (optax's ``value``, ``grad``... in a chain).

    Examples
    --------
    >>> from sketchlinalg import forwarded_kwargs
    >>> forwarded_kwargs(lambda p, points=None: p)({"points": 1, "value": 2})
    {'points': 1}
    """
    if fn is None:
        return lambda kw: {}
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return lambda kw: dict(kw)
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return lambda kw: dict(kw)
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return lambda kw: {k: v for k, v in kw.items() if k in names}
