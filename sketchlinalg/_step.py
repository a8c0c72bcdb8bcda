r"""The natural-gradient step, written once: direction, damping, sketch size, line search,
step size, momentum, non-finite handling, stall detection and the info record. Both adapters
(optax and ``torch.optim``) run it.

One step at parameters ``theta`` with residual ``r``, Jacobian ``J`` and loss
``L = 1/2 ||r||^2``:

1. ``state = solver.init(J, r, seed)`` (for a sketched solver without a fixed ``rank``, at
   the sketch size the previous steps chose), then ``d = solver.solve(state, b, mu)`` with
   ``b = r`` or, with momentum ``beta`` (SPRING), ``b = r - beta J phi`` and
   ``d <- d + beta phi``, ``phi`` the previous step taken (``eta d``, without ``lr``; ``0``
   after a step not taken);
2. a step size ``eta``: the best point of the grid ``2^0 .. 2^-(n-1)`` (evaluated from
   ``eta = 1`` down until the loss rises past its minimum), Armijo backtracking, or
   ``eta = 1`` without a line search; a line search never accepts a point whose loss is not
   below ``L(theta)``;
3. with ``damping="adaptive"`` (the default) ``mu`` adapts, relative to the spectrum: it
   starts at ``initial_damping`` times the largest eigenvalue ``lam_1`` of ``G`` and, with a
   line search, falls tenfold after every step whose accepted step size is at least ``1/8``
   and rises fourfold when it was below ``1/32`` (down to ``100 eps lam_1``: the
   natural-gradient regime, where the line search sets the length); without one it follows
   Nielsen's rule on the gain ratio ``rho = (L(theta) - L(theta - d)) / (slope -
   curvature / 2)`` (Levenberg–Marquardt). A trial that finds no lower loss is re-solved
   with ``mu`` raised by Nielsen's factor from the same factorization or sketch. A sketch
   without a fixed rank doubles while it is below ``2 d_eff(mu)``, misses curvature along
   the step or the damping is below the smallest eigenvalue it resolves, and halves when far
   larger than ``d_eff``;
4. the update ``-lr eta d`` (``lr`` a scalar, a schedule value, or a per-parameter vector);
5. the one non-finite policy: if ``r``, ``J``, ``d`` or the loss holds NaN/Inf the update
   is zero (the parameters stay as they are), ``skipped`` counts it and the status is
   ``NONFINITE``; eagerly a :class:`StepWarning` says so. A run whose loss has not improved
   for ``stall_window`` steps gets the status ``STALLED`` (``DIVERGED`` when it rose far above
   its best) and, eagerly, one warning with the damping, rank and effective dimension.

A float32 ``J`` and ``r`` are promoted first (``linalg_dtype="float64"``, the default,
where the backend has float64): the steps above round at float64, the update and the state
come back in float32.

Everything is array-API code that traces under ``jax.jit`` (loops and branches are
``_dispatch`` loops, the sketch sizes a ``lax.switch`` over a fixed ladder).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, NamedTuple, cast

from . import _dispatch
from ._direction import METHODS, check_momentum
from ._distributed import Collective, ShardedOperator, collective_of, global_shape, sum_pair
from ._linesearch import LINE_SEARCHES, armijo_line_search, grid_line_search
from ._lowrank import LowRankPSD
from ._memory import default_budget, estimate_memory
from ._operator import LinearOperator, as_operator, promote
from ._sketched import ExactTop, TopState, _Sketched
from ._solver_base import DirectionInfo, DirectionSolver, GramState, SketchState
from ._solvers import make_solver, solver_options
from ._status import Method, Status, status_message
from ._validation import check_int, check_nonnegative

__all__ = [
    "OPTIMIZERS",
    "SPRING_MOMENTUM",
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
#: SPRING's default momentum ``beta`` in both adapters (the PINN suite's tuned setting).
SPRING_MOMENTUM = 0.5
_STEP_OPTIONS = (
    "damping",
    "initial_damping",
    "line_search",
    "learning_rate",
    "grid_size",
    "grid_batch",
    "grid_warm_start",
    "armijo_c",
    "momentum",
    "max_trials",
    "stall_window",
    "linalg_dtype",
)
#: Options for which ``None`` is a setting (off), not "the default".
_NONE_MEANS_OFF = ("line_search", "grid_batch", "linalg_dtype")
#: The values of ``linalg_dtype``.
LINALG_DTYPES = ("float64", None)
#: The first sketch size of an adaptive rank, and the smallest.
START_RANK = 100
MIN_RANK = 25
#: An explicit J's sketch sizes stop where the set-up costs more than twice an exact solve,
#: unless it costs at most this many flops (a small problem: any size is cheap).
CHEAP_FLOPS = 1e9
#: Adaptive damping: mu stays within [MU_FLOOR eps, MU_CEIL] times the largest eigenvalue.
MU_FLOOR = 100.0
MU_CEIL = 1e8
#: With a line search, mu falls while the accepted step size is at least SHORT_STEP and
#: rises when it is below TINY_STEP.
SHORT_STEP = 1.0 / 8.0
TINY_STEP = 1.0 / 32.0
#: ... by these factors.
DOWN = 10.0
UP = 4.0
#: An adaptive Nystrom-PCG preconditioner doubles when CG took more iterations than this,
#: and may halve when it took at most the second.
PCG_GROW_ITERATIONS = 25
PCG_SHRINK_ITERATIONS = 3
#: A run whose loss rose above DIVERGE_FACTOR times its best is reported as diverged.
DIVERGE_FACTOR = 1e4


class StepWarning(RuntimeWarning):
    """A natural-gradient step was not taken (non-finite values), or the run has stalled
    or diverged; see the message."""


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
        The last step taken, ``eta d`` (momentum's ``phi``; zero after a step not taken).
    skipped : int32 array
        Steps not taken because of NaN/Inf.
    status : int32 array
        :class:`Status` of the last step.
    damping : array
        The damping ``mu`` for the next step (adaptive; ``0`` before the first), or the fixed
        one.
    nu : array
        Nielsen's growth factor of ``mu`` after rejected trials.
    rank : int32 array
        The sketch size for the next step (sketched solvers; ``0`` before the first).
    best_loss : array
        The lowest loss seen (``inf`` before the first step).
    since_best : int32 array
        Steps since the loss last improved on ``best_loss`` (by a relative ``1e-4``).
    warned : int32 array
        Bits of the warnings given: ``1`` the stall or divergence warning of the current
        episode, ``2`` the (once per run) warning that an adaptive sketch wanted to grow past
        the largest size it may take.
    """

    steps: Array
    loss: Array
    step_size: Array
    previous: Array
    skipped: Array
    status: Array
    damping: Array
    nu: Array
    rank: Array
    best_loss: Array
    since_best: Array
    warned: Array


class StepInfo(NamedTuple):
    """What the last step did (eagerly; under ``jax.jit`` read the state instead).

    Attributes
    ----------
    status : Status or int32 array
        ``SUCCESS`` (taken), ``NO_DECREASE`` (no trial found a lower loss: not taken),
        ``NONFINITE`` (not taken), or ``STALLED`` / ``DIVERGED`` for the run.
    loss : array
        Loss before the step.
    new_loss : array
        Loss at the accepted point (``nan`` without a line search and a fixed damping,
        ``loss`` when the step was not taken).
    step_size : array
        ``eta``.
    damping : float or array
        ``mu`` used by the accepted (or last) trial.
    direction : DirectionInfo
        The solver's record of the first trial (method, effective dimension, its status...).
    rank : int or array or None
        The sketch size (sketched solvers).
    trials : int or array
        Solves made (more than one when a trial found no lower loss).
    """

    status: Any
    loss: Array
    new_loss: Array
    step_size: Array
    damping: Any
    direction: DirectionInfo
    rank: Any = None
    trials: Any = 1


class _Trial(NamedTuple):
    """One solve and line search at a damping (arrays only: it is a loop carry)."""

    d: Array
    eta: Array
    new_loss: Array
    full: Array  # the loss of the full step eta = 1
    taken: Array
    finite: Array
    slope: Array
    curvature: Array  # ||J d||^2
    model_curvature: Array  # d^T G_hat d of the solver's model
    mu_eff: Array
    iterations: Array  # CG iterations (Nystrom-PCG), else 0


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
        :class:`NystromPCG`, :class:`KernelNystrom`, :class:`SVD` or :class:`Auto`. A
        sketched solver without a ``rank`` gets an adaptive one: the sketch size doubles
        while it is below ``2 d_eff(mu)``, misses curvature along the step, or the damping
        the step wants is below the smallest eigenvalue the sketch resolves (``lam_l``; the
        unsketched part of the gradient would be scaled by ``1/mu``), and halves when the
        effective dimension ``d_eff(mu)`` falls below an eighth of it, between ``25`` and
        ``min(N, P)`` (and what fits 2 GiB), from ``100``. At ``min(N, P)`` with an explicit
        ``J`` the sketch is ``G`` itself: for SNGD with ``N < P`` the ladder always ends
        there, past the sizes a sketch can afford, with ``G`` solved in residual form
        (``J^T (J J^T + mu I)^{-1} r``, about the cost of one exact solve); else by
        one thin SVD. A sketch capped below ``min(N, P)`` (by memory or cost) while it
        wants to grow is warned about once.
    damping : float or "adaptive"
        ``"adaptive"`` (default): Levenberg–Marquardt damping, relative to the spectrum
        (module docs); a float: that fixed ``mu >= 0`` (``> 0`` where the solver needs it),
        which turns the adaptation off.
    initial_damping : float
        ``tau``: the adaptive damping starts at ``tau lam_1`` (Marquardt, Nielsen).
    line_search : {"grid", "armijo", None}
        ENGD's grid (``grid_size`` points from ``eta = 1`` down, evaluated ``grid_batch``
        at a time until the minimum along the step is bracketed), Armijo backtracking from
        ``eta = 1`` (constant ``armijo_c``), or none (``eta = 1``).
    learning_rate : float
        ``lr >= 0`` multiplying the line search's step: the update is ``-lr eta d``
        (:meth:`step` can override it per step: a schedule, per-parameter rates).
    grid_size, armijo_c : int, float
    grid_batch : int or None
        Trial losses per evaluation of the grid (:func:`grid_line_search`): ``1``
        (default) evaluates them one by one and stops once the loss rises past its
        minimum, so a step size of ``2^-k`` costs ``k + 2`` loss evaluations, not
        ``grid_size``; a larger batch suits a GPU, where a batch of evaluations costs
        about one; ``None`` evaluates the whole grid in one batch (no early stop).
    grid_warm_start : bool
        ``True``: the grid starts at the last accepted step size (``eta = 1`` after a step
        not taken) and searches down, then up, until the minimum is bracketed: for a loss
        that falls and then rises along the step it picks what the search from ``eta = 1``
        picks, in about three evaluations where step sizes change slowly instead of
        ``k + 2`` for a step of ``2^-k``. Where the loss along the step has a second, lower
        dip at larger steps it stays in the first: dense ENGD on the transport problem of
        the PINN benchmark stalled at tiny steps (relative error 0.51 after 36 steps,
        against 0.002 from ``eta = 1``). ``False`` (default): from ``eta = 1``.
    momentum : float
        SPRING's ``beta`` in ``[0, 1)`` (``0``: none).
    max_trials : int
        Solves per step with an adaptive damping (a trial that finds no lower loss is
        re-solved with ``mu`` raised by Nielsen's factor).
    stall_window : int
        Steps without improvement after which the run is reported as stalled.
    linalg_dtype : {"float64", None}
        ``"float64"`` (default): a float32 ``J`` and ``r`` are promoted, so the Gram or
        kernel, the sketch, the factorization and the solve round at float64 (the update
        and the state stay float32). Forming ``G = J^T J`` squares ``J``'s condition
        number: in float32 the damping cannot go below about ``1e-5 lam_1`` and eigenvalues
        under it are lost, while float64 resolves what ``J`` itself holds (singular values
        down to ``eps_32 s_1``). It costs a float64 copy of an explicit ``J`` and float64
        arithmetic (about 2x the linear algebra's time on CPUs and data-center GPUs, far
        more on consumer GPUs). ``None`` keeps the input's dtype. Where the backend has no
        float64 (JAX without ``jax_enable_x64``, Apple MPS) the step stays in float32.

    Examples
    --------
    A linear least-squares problem solved by one Gauss–Newton step:

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
    damping: float | str = "adaptive"
    initial_damping: float = 1e-3
    line_search: str | None = "grid"
    learning_rate: float = 1.0
    grid_size: int = 31
    grid_batch: int | None = 1
    grid_warm_start: bool = False
    armijo_c: float = 1e-4
    momentum: float = 0.0
    max_trials: int = 4
    stall_window: int = 100
    linalg_dtype: str | None = "float64"

    def __post_init__(self) -> None:
        if not isinstance(self.solver, DirectionSolver):
            raise TypeError(
                "solver must be a DirectionSolver (sketchlinalg.Nystrom(), Dense(), ...), got "
                f"{type(self.solver).__name__}"
            )
        if isinstance(self.damping, str):
            if self.damping != "adaptive":
                raise ValueError(f"damping must be 'adaptive' or a number, got {self.damping!r}")
        else:
            object.__setattr__(self, "damping", self.solver.check_damping(self.damping))
        tau = check_nonnegative(self.initial_damping, "initial_damping", strict=True)
        object.__setattr__(self, "initial_damping", tau)
        if self.line_search not in LINE_SEARCHES:
            raise ValueError(
                f"line_search must be one of {LINE_SEARCHES}, got {self.line_search!r}"
            )
        lr = check_nonnegative(self.learning_rate, "learning_rate")
        object.__setattr__(self, "learning_rate", lr)
        object.__setattr__(self, "grid_size", check_int(self.grid_size, "grid_size", low=1))
        if self.grid_batch is not None:
            batch = check_int(self.grid_batch, "grid_batch", low=1)
            object.__setattr__(self, "grid_batch", batch)
        if not isinstance(self.grid_warm_start, bool):
            raise TypeError(f"grid_warm_start must be True or False, got {self.grid_warm_start!r}")
        c = check_nonnegative(self.armijo_c, "armijo_c", strict=True)
        if not c < 1:
            raise ValueError(f"armijo_c must be in (0, 1), got {c}")
        object.__setattr__(self, "momentum", check_momentum(self.momentum))
        object.__setattr__(self, "max_trials", check_int(self.max_trials, "max_trials", low=1))
        window = check_int(self.stall_window, "stall_window", low=1)
        object.__setattr__(self, "stall_window", window)
        if self.linalg_dtype not in LINALG_DTYPES:
            raise ValueError(
                f"linalg_dtype must be one of {LINALG_DTYPES}, got {self.linalg_dtype!r}"
            )

    @classmethod
    def from_options(cls, method: str, **options: Any) -> StepEngine:
        """An engine from a method name and a flat set of options (what the adapters'
        optimizers take): the solver's own options go to :func:`make_solver`, the step's
        (``damping``, ``initial_damping``, ``line_search``, ``learning_rate``,
        ``grid_size``, ``grid_batch``, ``grid_warm_start``, ``armijo_c``, ``momentum``,
        ``max_trials``, ``stall_window``, ``linalg_dtype``) to the engine; any other raises
        ``TypeError`` naming the valid ones. ``None`` values take the defaults (except
        ``line_search=None``: no line search, ``grid_batch=None``: the whole grid in one
        batch, and ``linalg_dtype=None``: no promotion).

        Examples
        --------
        >>> import sketchlinalg as sl
        >>> engine = sl.StepEngine.from_options("nystrom", rank=50, damping=1e-6)
        >>> type(engine.solver).__name__, engine.solver.rank, engine.line_search
        ('Nystrom', 50, 'grid')
        >>> sl.StepEngine.from_options("nystrom").damping  # no rank, no damping: adaptive
        'adaptive'
        """
        own = set(solver_options(method)) if method in METHODS else set()
        unknown = sorted(k for k in options if k not in own and k not in _STEP_OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown option(s) {unknown} for method {method!r}; valid: "
                f"{sorted(own | set(_STEP_OPTIONS))}"
            )
        solver = make_solver(method, **{k: v for k, v in options.items() if k in own})
        step = {
            k: v
            for k, v in options.items()
            if k in _STEP_OPTIONS and (v is not None or k in _NONE_MEANS_OFF)
        }
        return cls(solver, **step)

    @property
    def adaptive_damping(self) -> bool:
        """Whether the damping follows the gain ratio (``damping="adaptive"``)."""
        return isinstance(self.damping, str)

    @property
    def adaptive_rank(self) -> bool:
        """Whether the sketch size adapts (a sketched solver without a ``rank``)."""
        return isinstance(self.solver, _Sketched) and self.solver.rank is None

    @property
    def needs_trial_loss(self) -> bool:
        """Whether :meth:`step` evaluates the loss at trial points (a line search, or the
        gain ratio of an adaptive damping)."""
        return self.line_search is not None or self.adaptive_damping

    @_dispatch.in_full_float32
    def init(self, params: Array) -> StepState:
        """The state before the first step, for flat parameters ``params`` of shape (P,)."""
        xp = _dispatch.namespace(params)
        if params.ndim != 1:
            raise ValueError(f"params must be flat, of shape (P,), got {tuple(params.shape)}")
        # derived from params, so the state sits where they do (a JAX array created with an
        # explicit device would be committed to it, and jit would compile a second time)
        zero = 0.0 * xp.sum(params[:0])
        mu = 0.0 if isinstance(self.damping, str) else float(self.damping)

        # one array per field: a state donated to a jitted step (``donate_argnums``) must
        # not hold one buffer twice
        def real(value: float) -> Array:
            return zero + value

        def integer() -> Array:
            return xp.astype(zero, xp.int32)

        return StepState(
            steps=integer(),
            loss=real(0.0),
            step_size=real(0.0),
            previous=xp.zeros_like(params),
            skipped=integer(),
            status=integer(),
            damping=real(mu),
            nu=real(2.0),
            rank=integer(),
            best_loss=real(math.inf),
            since_best=integer(),
            warned=integer(),
        )

    # -- the step ----------------------------------------------------------------------
    @_dispatch.in_full_float32
    def step(
        self,
        J: Array | LinearOperator,
        r: Array,
        state: StepState,
        *,
        trial_loss: Any = None,
        seed: Any = 0,
        learning_rate: float | Array | None = None,
        collective: Collective | None = None,
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
            array of step sizes (needed by the line searches and the adaptive damping).
        seed : int, Sampler or JAX key
            This step's sketch randomness.
        learning_rate : float or array, optional
            Overrides the engine's ``learning_rate`` for this step: ``lr >= 0``, a scalar
            (a schedule's value) or a ``(P,)`` vector (per-parameter rates).
        collective : Collective, optional
            Data parallelism over the rows: ``J`` and ``r`` are this shard's rows and
            ``trial_loss`` the loss of this shard's points; every reduction over rows (the
            loss, ``J^T (J Omega)``, ``J^T r``, ``J^T J``, the CG products, the slope and
            curvature along the step, the trial losses) is summed over the shards through
            it, the kernel methods gather the rows, and the update is the same on every
            shard (the ``seed`` must be too). ``None`` (default) or the identity
            :class:`Collective`: one device.

        Returns
        -------
        update : array of shape (P,)
            Zero when the step was not taken.
        new_state : StepState
        info : StepInfo
        """
        if isinstance(J, ShardedOperator) and collective is None:
            J, collective = J.local, J.collective
        J = as_operator(J, "J")
        xp = J.xp
        N, P = J.shape
        if not _dispatch.is_array(r) or r.ndim != 1 or r.shape[0] != N:
            raise ValueError(
                f"r must have shape ({N},) for J of shape {J.shape}, got "
                f"{tuple(getattr(r, 'shape', ()))}"
            )
        if r.dtype != J.dtype:
            raise TypeError(f"r has dtype {r.dtype}, J has {J.dtype}; cast one of them")
        if state.previous.shape != (P,):
            raise ValueError(
                f"the state belongs to {state.previous.shape[0]} parameters, J has {P} columns"
            )
        if self.needs_trial_loss and trial_loss is None:
            raise ValueError(
                f"line_search={self.line_search!r} with damping={self.damping!r} needs "
                "trial_loss (the loss at trial points)"
            )
        lr = self.learning_rate if learning_rate is None else _check_lr(learning_rate, P)
        wide = self._wide_dtype(xp, r)
        if collective is not None and not isinstance(collective, Collective):
            raise TypeError(
                f"collective must be a sketchlinalg.Collective, got {type(collective).__name__}"
            )
        if wide is not None:
            return self._promoted(J, r, state, wide, trial_loss, seed, lr, collective)
        return self._run(J, r, state, trial_loss, seed, lr, r.dtype, collective)

    def _run(
        self, J: LinearOperator, r: Array, state: StepState, trial_loss: Any, seed: Any,
        lr: Any, store: Any, collective: Collective | None = None,
    ) -> tuple[Array, StepState, StepInfo]:  # fmt: skip
        """:meth:`step` on checked input, in ``r``'s dtype; ``store`` is the dtype the update
        and the state are kept in (narrower when promoted): a step that overflows it is not
        taken. With a ``collective`` the rows are this shard's (module ``_distributed``)."""
        xp = J.xp
        if collective is not None and not collective.is_local:
            J = ShardedOperator(J, collective)  # J^T Y all-reduced; N the global count
            trial_loss = _summed(collective, trial_loss)
        c = collective_of(J)
        N, P = global_shape(J)
        loss0 = 0.5 * c.sum(xp.sum(r * r))
        eager = not _dispatch.is_tracing(r, loss0, state.previous)
        if eager and not bool(xp.isfinite(loss0)):
            return self._skip(xp, state, loss0)

        # The memory a sketch may take: 2 GiB on the host, half the free device memory on
        # an accelerator (default_budget).
        budget = default_budget(r)
        if self.adaptive_rank and not c.is_local and eager:  # one ladder on every shard
            device = _dispatch.device_of(r)
            budget = int(c.minimum(xp.asarray(budget, dtype=xp.int64, device=device)))
        ladder = self._ladder(J, xp, budget) if self.adaptive_rank else None
        solver = self._rungs(J, ladder)
        setup, rank = self._setup(J, r, state, seed, ladder, eager, solver)
        eps = float(xp.finfo(r.dtype).eps)
        if self.adaptive_damping:
            scale = xp.maximum(solver.scale(setup), xp.asarray(eps, dtype=r.dtype))
            lo, hi = MU_FLOOR * eps * scale, MU_CEIL * scale
            mu = xp.where(state.damping > 0, state.damping, self.initial_damping * scale)
            mu = xp.minimum(xp.maximum(mu, lo), hi)
            nu = state.nu
        else:
            mu, nu = state.damping, state.nu
        floor = solver.damping_floor(setup)

        def trial(mu: Any) -> tuple[_Trial, DirectionInfo]:
            """Solve for ``max(mu, floor)`` and search the step size."""
            mu_eff = xp.maximum(mu, floor) if self.adaptive_damping else mu
            d, dinfo, slope, curvature, model = self._direction(solver, J, r, setup, state, mu_eff)
            finite = xp.all(xp.isfinite(d)) & xp.isfinite(loss0)
            d = xp.where(finite, d, xp.zeros_like(d))  # the loss is evaluated at safe points
            if self.line_search is None:
                if self.adaptive_damping:  # pure Levenberg-Marquardt: judge the full step
                    full = trial_loss(xp.ones((1,), dtype=r.dtype), d)[0]
                    taken = (full < loss0) & (loss0 - full > 1e-4 * (slope - 0.5 * curvature))
                else:
                    full, taken = xp.full_like(loss0, math.nan), xp.asarray(True)
                eta, new_loss = xp.ones_like(loss0), full
            else:
                res = self._search(trial_loss, d, loss0, slope, state.step_size)
                eta, new_loss, full = res.step_size, res.loss, res.first_loss
                taken = xp.asarray(res.status == Status.SUCCESS)
            taken = taken & finite
            its = xp.asarray(0 if dinfo.iterations is None else dinfo.iterations, dtype=xp.int32)
            trial_ = _Trial(
                d, eta, new_loss, full, taken, finite, slope, curvature, model, mu_eff, its
            )
            return trial_, dinfo

        t, dinfo = trial(mu)
        trials: Any = 1
        if self.adaptive_damping and self.max_trials > 1:
            # a trial that found no lower loss: raise mu (Nielsen's rejection) and re-solve
            # the same factorization or sketch; the carry holds arrays only (jit)
            def cond(c: tuple[Any, Any, Any, _Trial]) -> Any:
                return (c[0] < self.max_trials) & ~c[3].taken & c[3].finite

            def body(c: tuple[Any, Any, Any, _Trial]) -> tuple[Any, Any, Any, _Trial]:
                mu = xp.minimum(c[1] * c[2], hi)
                return c[0] + 1, mu, 2.0 * c[2], trial(mu)[0]

            trials, mu, nu, t = _dispatch.while_loop(xp, cond, body, (xp.asarray(1), mu, nu, t))
        if self.adaptive_damping:
            mu_next, nu_next = self._update_damping(xp, mu, nu, t, loss0, lo, hi)
        else:
            mu_next, nu_next = mu, nu
        d, eta, taken, finite, mu_eff = t.d, t.eta, t.taken, t.finite, t.mu_eff

        # the step itself (a huge learning rate can overflow a finite direction)
        step = -(lr * eta) * d
        finite = finite & _fits(xp, step, store) & _fits(xp, eta * d, store)
        status = _combine(xp, finite, taken, eager)
        rank_next, capped = (
            self._next_rank(xp, solver, ladder, rank, mu_next, floor, setup, t, min(N, P))
            if ladder is not None
            else (0, False)
        )
        best, since, status, warned = self._watch(xp, state, loss0, status, capped)
        device = _dispatch.device_of(loss0)
        taken_a = xp.asarray(taken, device=device)
        step = xp.where(xp.asarray(finite, device=device), step, xp.zeros_like(step))
        new_state = StepState(
            steps=state.steps + 1,
            loss=loss0,
            step_size=xp.where(taken_a, eta, xp.zeros_like(eta)),
            # momentum remembers the step taken (eta d: SPRING's phi when eta = 1), not the
            # raw direction a line search had to shorten; a step not taken restarts it
            previous=xp.where(
                xp.asarray(finite, device=device),
                xp.where(taken_a, eta * d, xp.zeros_like(d)),
                state.previous,
            ),
            skipped=state.skipped + xp.astype(~xp.asarray(finite, device=device), xp.int32),
            status=xp.asarray(int(status) if eager else status, dtype=xp.int32, device=device),
            damping=xp.asarray(mu_next, dtype=loss0.dtype, device=device),
            nu=xp.asarray(nu_next, dtype=loss0.dtype, device=device),
            rank=xp.asarray(rank_next, dtype=xp.int32, device=device),
            best_loss=best,
            since_best=since,
            warned=warned,
        )
        self._report(
            xp, J, ladder, budget, solver, setup, state.warned, status, capped, loss0, best,
            mu_eff, rank, dinfo,
        )  # fmt: skip
        if eager:
            status = Status(int(status))
        info = StepInfo(
            status,
            loss0,
            xp.where(taken_a, t.new_loss, loss0),
            eta,
            mu_eff,
            dinfo,
            rank if ladder is not None else getattr(self.solver, "rank", None),
            trials,
        )
        return xp.where(taken_a, step, xp.zeros_like(step)), new_state, info

    # -- pieces ------------------------------------------------------------------------
    def _wide_dtype(self, xp: Any, r: Array) -> Any:
        """The dtype the step's linear algebra runs in when it is wider than ``r``'s."""
        if self.linalg_dtype is None or r.dtype != xp.float32:
            return None
        if not _dispatch.has_float64(xp, _dispatch.device_of(r)):
            return None
        return xp.float64

    def _promoted(
        self, J: LinearOperator, r: Array, state: StepState, wide: Any,
        trial_loss: Any, seed: Any, lr: Any, collective: Collective | None = None,
    ) -> tuple[Array, StepState, StepInfo]:  # fmt: skip
        """:meth:`step` in ``wide``: ``J``, ``r``, the state and the trial losses are
        promoted, the update, the state and the info's losses come back in ``r``'s dtype."""
        xp, low = J.xp, r.dtype

        def cast(x: Any, to: Any, frm: Any) -> Any:
            return xp.astype(x, to) if _dispatch.is_array(x) and x.dtype == frm else x

        def wide_loss(etas: Array, d: Array) -> Array:
            return xp.astype(trial_loss(xp.astype(etas, low), xp.astype(d, low)), wide)

        update, new, info = self._run(
            promote(J, wide),
            xp.astype(r, wide),
            StepState(*(cast(v, wide, low) for v in state)),
            None if trial_loss is None else wide_loss,
            seed,
            cast(lr, wide, low),
            low,
            collective,
        )
        info = info._replace(
            loss=cast(info.loss, low, wide),
            new_loss=cast(info.new_loss, low, wide),
            step_size=cast(info.step_size, low, wide),
            damping=cast(info.damping, low, wide),
        )
        return xp.astype(update, low), StepState(*(cast(v, low, wide) for v in new)), info

    def _direction(
        self, solver: DirectionSolver, J: LinearOperator, r: Array, setup: Any,
        state: StepState, mu: Any,
    ) -> tuple[Array, DirectionInfo, Any, Any, Any]:  # fmt: skip
        """The direction for ``mu``, its slope ``d^T J^T r`` and curvature ``||J d||^2``, and
        the curvature of the solver's model ``d^T G_hat d``.

        A sketch's model misses the curvature outside its range, so where the damping or
        the rank adapts the true curvature is measured (one product with ``J``): the gain
        ratio then judges the damping alone, and their ratio judges the sketch size.
        """
        xp = J.xp
        c = collective_of(J)
        beta = self.momentum
        if beta:
            phi = state.previous
            d, dinfo = solver.solve(setup, r - beta * J.matvec(phi), damping=mu)
            d = d + beta * phi
        else:
            d, dinfo = solver.solve(setup, damping=mu)
        model = dinfo.curvature
        exact = not isinstance(self.solver, _Sketched) or self.solver.method == Method.NYSTROM_PCG
        if beta or (not exact and (self.adaptive_damping or self.adaptive_rank)):
            Jd = J.matvec(d)  # one more product: the true model of the step
            slope, curvature = sum_pair(c, xp.sum(r * Jd), xp.sum(Jd * Jd))
            model = model if not beta else curvature
            return d, dinfo, slope, curvature, model
        return d, dinfo, dinfo.slope, dinfo.curvature, model

    def _search(self, trial_loss: Any, d: Array, loss0: Array, slope: Any, last_eta: Array) -> Any:
        def losses(etas: Array) -> Array:
            return trial_loss(etas, d)

        if self.line_search == "grid":
            start: Any = 0
            if self.grid_warm_start and self.grid_batch is not None:
                # the grid index of the last accepted step size (0 after a step not taken)
                xp = _dispatch.namespace(loss0)
                eta = xp.astype(last_eta, loss0.dtype)
                taken = eta > 0
                k = -xp.log2(xp.where(taken, eta, xp.ones_like(eta)))
                start = xp.astype(xp.round(k), xp.int32)
            return grid_line_search(
                losses, loss0, num=self.grid_size, batch=self.grid_batch, start=start
            )
        return armijo_line_search(losses, loss0, slope, c=self.armijo_c)

    def _update_damping(
        self, xp: Any, mu: Any, nu: Any, t: _Trial, loss0: Any, lo: Any, hi: Any
    ) -> tuple[Any, Any]:
        """The damping for the next step, from how this one went.

        Without a line search, Nielsen's rule on the gain ratio ``rho`` of the full step
        (the classic Levenberg–Marquardt). With one, the line search sets the step length
        and the damping only keeps the direction trustworthy, so it goes as low as the
        steps allow (the natural-gradient regime): ``mu / 10`` while the accepted step size
        is at least ``1/8``, ``4 mu`` when the search had to cut below ``1/32`` (the
        direction is poor), else unchanged. A step with no decrease at all raises ``mu`` by
        ``nu`` (doubled each time).
        """
        pred = t.slope - 0.5 * t.curvature
        safe = xp.where(pred > 0, pred, xp.ones_like(pred))
        rho = xp.where(pred > 0, (loss0 - t.full) / safe, xp.full_like(pred, -1.0))
        rho = xp.where(xp.isfinite(rho), rho, xp.full_like(rho, -1.0))
        one = xp.ones_like(nu)
        if self.line_search is None:
            factor = xp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        else:
            factor = xp.where(
                t.eta >= SHORT_STEP, one / DOWN, xp.where(t.eta < TINY_STEP, UP * one, one)
            )
        factor = xp.where(t.taken, factor, nu)
        nu_next = xp.where(t.taken, 2.0 * one, 2.0 * nu)
        return xp.minimum(xp.maximum(mu * factor, lo), hi), xp.minimum(nu_next, 2.0**20)

    def _ladder(self, J: LinearOperator, xp: Any, budget: int) -> list[int]:
        """The sketch sizes an adaptive rank moves on: 25, 50, 100, ... up to ``min(N, P)``,
        what fits ``budget`` (bytes; :func:`default_budget`) and, for an explicit ``J``, what
        costs at most twice an exact solve (flops of :func:`choose_method`'s model: beyond
        that an exact method is the cheaper way to the same accuracy).

        SNGD with an explicit ``J`` and ``N < P`` ends, past the sizes a sketch can afford,
        at ``N``: ``G`` itself, solved in residual form (:class:`ExactTop`), which costs
        about an exact solve."""
        N, P = global_shape(J)
        dim = min(N, P)
        method = "kernel-nystrom" if self.solver.method == "kernel-nystrom" else "nystrom"
        exact = min(N * N * P + N**3 / 3, N * P * P + P**3 / 3)
        affordable = max(2.0 * exact, CHEAP_FLOPS)
        exact_top = self._exact_top(J)
        sizes: list[int] = []
        l = MIN_RANK
        while min(l, dim) < dim or not exact_top:
            size = min(l, dim)
            if size >= dim and method == "nystrom" and J.is_materialized:
                flops = 4.0 * N * P * dim + 8.0 * dim**3  # G exactly: a thin SVD of J
            else:
                n = N if method == "kernel-nystrom" else P
                flops = 4.0 * N * P * size + 12.0 * n * size**2
            fits = _sketch_fits(J, xp, method, size, budget)
            if sizes and (not fits or (J.is_materialized and flops > affordable)):
                break
            sizes.append(size)
            if size >= dim:
                return sizes
            l *= 2
        if exact_top and _sketch_fits(J, xp, "woodbury", dim, budget):
            sizes.append(dim)  # the exact solve: what the cost rule compares against
        return sizes

    def _exact_top(self, J: LinearOperator) -> bool:
        """Whether an adaptive ladder ends at ``G`` in residual form (SNGD or Nystrom-PCG,
        explicit ``J``, ``N < P``)."""
        N, P = global_shape(J)
        ours = self.solver.method in (Method.NYSTROM, Method.NYSTROM_PCG)
        return ours and J.is_materialized and N < P

    def _rungs(self, J: LinearOperator, ladder: list[int] | None) -> DirectionSolver:
        """The solver the step runs: the engine's, or :class:`ExactTop` over it."""
        if ladder is not None and self._exact_top(J) and ladder[-1] == global_shape(J)[0]:
            assert isinstance(self.solver, _Sketched)
            return ExactTop(self.solver)
        return self.solver

    def _setup(
        self, J: LinearOperator, r: Array, state: StepState, seed: Any, ladder: Any,
        eager: bool, solver: DirectionSolver,
    ) -> tuple[Any, Any]:  # fmt: skip
        """The solver's set-up, at the sketch size of the state on an adaptive ladder."""
        if ladder is None:
            return self.solver.init(J, r, seed=seed), None
        xp = J.xp
        start = min(range(len(ladder)), key=lambda i: abs(ladder[i] - START_RANK))
        rank_arr = xp.asarray(state.rank)
        exact_top = isinstance(solver, ExactTop)
        if eager:
            rank = int(rank_arr) if int(rank_arr) > 0 else ladder[start]
            index = min(range(len(ladder)), key=lambda i: abs(ladder[i] - rank))
            size = ladder[index]
            if not exact_top:
                return self._sized(size).init(J, r, seed=seed), size
            assert isinstance(solver, ExactTop)
            if index == len(ladder) - 1:
                return solver.init_top(J, r), size
            return solver.init_sketch(self._sized(size).init(J, r, seed=seed)), size
        # traced: every size is compiled, one runs; the states are padded to the largest
        # sketch (and, with an exact top, carry the kernel's eigendecomposition too)
        sketches = ladder[:-1] if exact_top else ladder
        width = sketches[-1] if sketches else 1
        ladder_a = xp.asarray(ladder, dtype=xp.int32)
        rank = xp.where(rank_arr > 0, rank_arr, xp.asarray(ladder[start], dtype=xp.int32))
        index = xp.argmin(xp.abs(ladder_a - rank))
        N, P = global_shape(J)
        dtype = r.dtype

        def no_kernel() -> tuple[Any, ...]:
            return xp.zeros((N, N), dtype=dtype), xp.zeros((N,), dtype=dtype)

        def branch(size: int) -> Callable[[], tuple[Any, ...]]:
            def run() -> tuple[Any, ...]:
                s = self._sized(size).init(J, r, seed=seed)
                U, lam = s.approx.eigenvectors, s.approx.eigenvalues
                pad = width - lam.shape[0]
                U = xp.concat([U, xp.zeros((U.shape[0], pad), dtype=U.dtype)], axis=1)
                lam = xp.concat([lam, xp.zeros((pad,), dtype=lam.dtype)])
                g = s.gradient if s.gradient is not None else xp.zeros((0,), dtype=lam.dtype)
                err = (
                    xp.zeros((), dtype=lam.dtype)
                    if s.error_estimate is None
                    else (s.error_estimate)
                )
                kernel = no_kernel() if exact_top else ()
                out = (U, lam, g, xp.asarray(s.finite), xp.asarray(s.saturated), err)
                return out + kernel

            return run

        def top() -> tuple[Any, ...]:
            assert isinstance(solver, ExactTop)
            t = solver.init_top(J, r)
            U = xp.zeros((P, width), dtype=dtype)
            lam = xp.zeros((width,), dtype=dtype)
            g = J.rmatvec(r)  # what the (unused) sketch branch's solve reads: finite
            assert t.exact is not None
            finite = xp.asarray(t.exact.finite)
            out = (U, lam, g, finite, xp.asarray(True), xp.zeros((), dtype=dtype))
            return (*out, t.exact.matrix, t.spectrum)

        branches = [branch(size) for size in sketches] + ([top] if exact_top else [])
        U, lam, g, finite, saturated, err, *kernel = _dispatch.switch(xp, index, branches)
        approx = LowRankPSD(U, lam, core="eigh")
        gradient = g if self.solver.computes_gradient else None
        err = err if getattr(self.solver, "error_power_iters", 0) else None
        setup: Any = SketchState(J, approx, r, gradient, err, finite, saturated)
        if exact_top:
            M, spectrum = kernel
            exact = GramState(J.to_dense(), M, r, None, None, None, finite, spectrum[0])
            setup = TopState(setup, exact, spectrum, index == len(ladder) - 1)
        return setup, xp.take(ladder_a, xp.reshape(index, (1,)))[0]

    def _sized(self, rank: int) -> _Sketched:
        """The sketched solver at a sketch size of the ladder."""
        assert isinstance(self.solver, _Sketched)
        return dataclasses.replace(self.solver, rank=rank)

    def _next_rank(
        self, xp: Any, solver: DirectionSolver, ladder: list[int], rank: Any, mu: Any,
        floor: Any, setup: Any, t: _Trial, dim: int,
    ) -> tuple[Any, Any]:  # fmt: skip
        """Double the sketch while it misses curvature along the step (``||J d||^2`` over
        twice the model's ``d^T G_hat d``) or the damping the step wants is below what it
        resolves (``mu < lam_l``); halve it while ``d_eff(mu)`` is under an eighth of it and
        the model is faithful. Also returns whether it wants to grow past the ladder's top
        below ``dim = min(N, P)`` (capped by memory or cost)."""
        ladder_a = xp.asarray(ladder, dtype=xp.int32)
        rank_a = xp.asarray(rank, dtype=xp.int32)
        index = xp.argmin(xp.abs(ladder_a - rank_a))
        assert isinstance(solver, (_Sketched, ExactTop))
        deff = solver.effective_dimension(setup, t.mu_eff)
        saturated = xp.asarray(solver.saturated(setup))
        ratio = t.curvature / xp.where(t.model_curvature > 0, t.model_curvature, 1.0)
        # the sketch is adequate while its rank is at least twice d_eff (Frangella, Tropp,
        # Udell)
        small = 2.0 * deff > xp.astype(rank_a, deff.dtype)
        grow = ~saturated & (((mu < floor) & (floor > 0)) | (ratio > 2.0) | small)
        shrink = ~grow & (8.0 * deff < xp.astype(rank_a, deff.dtype)) & (ratio < 1.25)
        if self.solver.method == Method.NYSTROM_PCG:  # a preconditioner: judged by CG's iterations
            grow = ~saturated & (t.iterations > PCG_GROW_ITERATIONS)
            shrink = (
                ~grow
                & (t.iterations <= PCG_SHRINK_ITERATIONS)
                & (8.0 * deff < xp.astype(rank_a, deff.dtype))
            )
        # (a capped preconditioner only costs CG iterations: not worth a warning)
        capped = (
            grow & (index == len(ladder) - 1) & (ladder[-1] < dim)
            if self.solver.method != Method.NYSTROM_PCG
            else xp.asarray(False)
        )
        index = xp.where(grow, xp.minimum(index + 1, len(ladder) - 1), index)
        index = xp.where(shrink, xp.maximum(index - 1, 0), index)
        return xp.take(ladder_a, xp.reshape(index, (1,)))[0], capped

    def _report(
        self, xp: Any, J: LinearOperator, ladder: list[int] | None, budget: int,
        solver: DirectionSolver, setup: Any, warned: Any, status: Any, capped: Any,
        loss0: Any, best: Any, mu: Any, rank: Any, dinfo: DirectionInfo,
    ) -> None:  # fmt: skip
        """The step's warnings (:class:`StepWarning`): a step not taken (NaN/Inf), a run
        that stalled or diverged (once per episode), a capped sketch (once per run). Eager
        and compiled steps give the same ones: under ``jax.jit`` they come through a host
        callback that runs only on the steps that warn."""
        dtype, device = loss0.dtype, _dispatch.device_of(loss0)
        deff = dinfo.effective_dimension
        try:
            scale = solver.scale(setup)
        except NotImplementedError:  # a solver of the user's without a spectrum estimate
            scale = math.nan
        values = (
            xp.asarray(status, dtype=xp.int32, device=device),
            xp.asarray(warned, dtype=xp.int32, device=device),
            xp.asarray(capped, device=device),
            loss0,
            xp.asarray(best, dtype=dtype, device=device),
            xp.asarray(mu, dtype=dtype, device=device),
            xp.asarray(scale, dtype=dtype, device=device),
            xp.asarray(-1 if rank is None else rank, dtype=xp.int32, device=device),
            xp.asarray(math.nan if deff is None else deff, dtype=dtype, device=device),
        )
        code, old = values[0], values[1]
        trouble = (code == int(Status.STALLED)) | (code == int(Status.DIVERGED))
        need = (
            (code == int(Status.NONFINITE))
            | (trouble & (old % 2 == 0))
            | (values[2] & (old // 2 % 2 == 0))
        )
        how = dinfo.message  # a string: known when the step is traced too

        def warn(code: Any, old: Any, capped: Any, loss0: Any, best: Any, mu: Any,
                 scale: Any, rank: Any, deff: Any) -> None:  # fmt: skip
            status, old = Status(int(code)), int(old)
            deff_ = None if math.isnan(float(deff)) else float(deff)
            if status is Status.NONFINITE:
                _warn(
                    "natural-gradient step not taken: the direction, the loss or the step "
                    f"(learning rate x step size x direction) holds NaN/Inf ({how}); the "
                    "parameters are unchanged and state.skipped counts it. If the residual "
                    "or its Jacobian is NaN/Inf here, check the model and the points; if "
                    "the step overflowed, lower the learning rate or keep "
                    "damping='adaptive' (float64 helps)"
                )
            elif status in (Status.STALLED, Status.DIVERGED) and not old & 1:
                r = None if int(rank) < 0 else int(rank)
                _warn(self._stall_message(status, loss0, best, mu, scale, r, deff_))
            if ladder is not None and bool(capped) and not old & 2:
                _warn(self._capped_message(J, xp, ladder, deff_, budget))

        _dispatch.host_call(xp, need, warn, *values)

    def _capped_message(
        self, J: LinearOperator, xp: Any, ladder: list[int], deff: float | None, budget: int
    ) -> str:
        """What capped the sketch (the memory budget or the cost rule) and what to use."""
        N, P = global_shape(J)
        top = ladder[-1]
        fits = _sketch_fits(J, xp, "nystrom", min(2 * top, N, P), budget)
        why = (
            "more than twice an exact solve's flops" if fits else
            f"more memory than the {budget / 2**30:.3g} GiB budget"
        )  # fmt: skip
        wants = "" if deff is None else f" (2 d_eff = {2 * deff:.0f})"
        return (
            f"natural-gradient sketch capped at rank {top} of {min(N, P)}: the step wants a "
            f"larger one{wants}, but a larger sketch costs {why}. The direction misses "
            "curvature outside the sketch; an exact method (engd-woodbury, spring) or "
            "nystrom-pcg may reach further, or fix rank= to override"
        )

    def _watch(
        self, xp: Any, state: StepState, loss0: Any, status: Any, capped: Any
    ) -> tuple[Any, ...]:
        """Best loss, steps since it improved, the run's status (stalled, diverged) and the
        warning bits (1: stalled or diverged now, 2: the sketch was capped once)."""
        improved = loss0 < state.best_loss * (1.0 - 1e-4)
        best = xp.where(improved, loss0, state.best_loss)
        best = xp.where(xp.isfinite(loss0), best, state.best_loss)
        since = xp.where(improved, xp.zeros_like(state.since_best), state.since_best + 1)
        stalled = since >= self.stall_window
        diverged = xp.isfinite(best) & (loss0 > DIVERGE_FACTOR * best)
        code = xp.asarray(status, dtype=xp.int32)
        ok = code != int(Status.NONFINITE)
        code = xp.where(ok & stalled, xp.asarray(int(Status.STALLED), dtype=xp.int32), code)
        code = xp.where(ok & diverged, xp.asarray(int(Status.DIVERGED), dtype=xp.int32), code)
        trouble = (code == int(Status.STALLED)) | (code == int(Status.DIVERGED))
        one = xp.ones_like(state.warned)
        capped_ever = (state.warned // 2 % 2 == 1) | xp.asarray(capped)
        warned = xp.where(trouble, one, 0 * one) + xp.where(capped_ever, 2 * one, 0 * one)
        if not _dispatch.is_tracing(code):
            code = Status(int(code))
        return best, since, code, warned

    def _stall_message(
        self, status: Status, loss0: Any, best: Any, mu: Any, scale: Any, rank: int | None,
        deff: float | None,
    ) -> str:  # fmt: skip
        what = (
            f"the loss has not improved for {self.stall_window} steps"
            if status is Status.STALLED
            else f"the loss rose to {float(loss0):.3e}, more than {DIVERGE_FACTOR:g} times its best"
        )
        scale = float(scale)
        kind = "adaptive" if self.adaptive_damping else "fixed"
        relative = (
            f"{float(mu) / scale:.1e} of the largest eigenvalue {scale:.2e}, "
            if math.isfinite(scale) and scale > 0
            else ""
        )
        parts = [
            f"natural-gradient run {status.name.lower()}: {what} (best {float(best):.3e}, now "
            f"{float(loss0):.3e})",
            f"damping {float(mu):.2e} ({relative}{kind})",
        ]
        if rank is not None:
            parts.append(f"rank {rank}")
        if deff is not None:
            parts.append(f"effective dimension {deff:.0f}")
        hint = (
            "try damping='adaptive' and no fixed rank"
            if not self.adaptive_damping
            else "try more collocation points, a wider network or float64; a sketched method "
            "at its largest rank may need an exact one (engd-woodbury)"
        )
        return "; ".join(parts) + f". {hint}"

    def _skip(self, xp: Any, state: StepState, loss0: Array) -> tuple[Array, StepState, StepInfo]:
        _warn(
            "natural-gradient step not taken: the residual holds NaN/Inf, so the parameters "
            f"were left unchanged ({status_message(Status.NONFINITE)})"
        )
        zero = xp.zeros_like(loss0)
        status = xp.asarray(
            int(Status.NONFINITE), dtype=xp.int32, device=_dispatch.device_of(loss0)
        )
        new_state = state._replace(
            steps=state.steps + 1,
            loss=loss0,
            step_size=zero,
            skipped=state.skipped + 1,
            status=status,
        )
        dinfo = DirectionInfo(
            self.solver.method,
            None,
            None,
            None,
            None,
            False,
            "not solved: the residual is not finite",
            None,
            Status.NONFINITE,
        )
        info = StepInfo(Status.NONFINITE, loss0, loss0, zero, state.damping, dinfo)
        return xp.zeros_like(state.previous), new_state, info


def _combine(xp: Any, finite: Any, taken: Any, eager: bool) -> Any:
    """The step's status: NONFINITE, else SUCCESS when taken, else NO_DECREASE."""
    code = xp.where(
        finite,
        xp.where(taken, xp.asarray(0, dtype=xp.int32), xp.asarray(6, dtype=xp.int32)),
        xp.asarray(3, dtype=xp.int32),
    )
    return Status(int(code)) if eager else code


def _check_lr(lr: Any, P: int) -> Any:
    if _dispatch.is_array(lr) and getattr(lr, "ndim", 0) == 1:
        if lr.shape[0] != P:
            raise ValueError(f"learning_rate must be a scalar or of shape ({P},), got {lr.shape}")
        return lr
    return check_nonnegative(lr, "learning_rate")


def _sketch_fits(J: LinearOperator, xp: Any, method: str, rank: int, budget: int) -> bool:
    """Whether a sketch of ``rank`` of ``J`` fits ``budget`` bytes."""
    N, P = global_shape(J)
    return bool(estimate_memory(
        method, N, P, rank=rank, jacobian="array" if J.is_materialized else "matrix-free",
        itemsize=4 if J.dtype == xp.float32 else 8, memory_budget=budget,
    ).fits)  # fmt: skip


def _fits(xp: Any, x: Array, dtype: Any) -> Any:
    """Whether ``x`` is finite in ``dtype`` (a float64 step can overflow float32)."""
    return xp.all(xp.isfinite(x if x.dtype == dtype else xp.astype(x, dtype)))


#: Modules a step warning looks through to point at the caller's line: ours, the adapters',
#: the optimizer wrappers they run in, and JAX (a compiled step warns from a host callback).
_INTERNAL_MODULES = (
    "sketchlinalg", "torch.optim", "torch.utils._contextlib", "optax", "jax", "jaxlib",
)  # fmt: skip


def _warn(message: str) -> None:
    """Warn at the first frame outside the library (the user's ``opt.step()``)."""
    level, frame = 2, cast("FrameType | None", sys._getframe(1))
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith(
        _INTERNAL_MODULES
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, StepWarning, stacklevel=level)


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


def _summed(collective: Collective, trial_loss: Any) -> Any:
    """A trial loss of this shard's points, summed over the shards (one all-reduce of the
    batch of losses)."""
    if trial_loss is None:
        return None

    def loss(etas: Array, d: Array) -> Array:
        return collective.sum(trial_loss(etas, d))

    return loss
