r"""Direction solvers: set up once from a Jacobian, then solve for any damping.

Every solver returns the damped Gauss–Newton (natural-gradient) direction

.. math::

    d(\mu) = (J^T J + \mu I)^{-1} J^T b

for a residual-space right-hand side ``b`` (the residual ``r`` itself, or SPRING's
``r - beta J phi``), exactly or through a model ``G_hat`` of ``G = J^T J``. The work splits
in two phases, as lineax's ``AbstractLinearSolver.init`` / ``compute``:

* ``state = solver.init(J, r, seed=...)`` touches ``J``: the Gram or kernel matrix, a
  thin SVD, or a Nystrom sketch (fused with ``g = J^T r`` in one pass over ``J``);
* ``d, info = solver.solve(state, damping=mu)`` is cheap and can be repeated for many
  damping values (Levenberg–Marquardt trials) without touching ``J`` again (Nystrom-PCG
  excepted: each CG iteration is a product with ``J`` and ``J^T``).

Each solver takes only its own options. ``info.predicted_decrease`` is the decrease of the
solver's quadratic model ``1/2 ||b||^2 - b^T J d + 1/2 d^T G_hat d`` at the step ``-d``,
computed without a pass over ``J`` (the gain ratio of an adaptive damping needs it);
``info.gram_scale`` is the scale of ``G`` that a relative damping refers to.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from . import _dispatch
from ._lowrank import LowRankPSD
from ._operator import LinearOperator, as_operator
from ._sketch import SKETCH_KINDS
from ._status import Status
from ._validation import check_int, check_nonnegative

__all__ = ["DirectionInfo", "DirectionSolver"]

Array = Any

DEFAULT_RANK = 100


class DirectionInfo(NamedTuple):
    """What a direction solve did.

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
        ``d_eff(mu) = sum lam_i / (lam_i + mu)`` of the spectrum the method knows (sketch
        methods, the SVD, and the exact methods with ``factorization="eigh"``); a sketch
        size below about ``2 d_eff`` loses accuracy.
    converged : bool or array
        ``status == Status.SUCCESS``.
    message : str
        Details: the factorization used, PCG's message, why ``auto`` chose, what failed.
    gradient : array or None
        ``g = J^T r`` when the method computed it on the way (parameter-space methods), so
        that a line search needs no second pass over ``J`` for its slope ``g^T d``.
    status : Status or int32 array
        :class:`Status`: ``NONFINITE`` when ``J``, the right-hand side or the result holds
        NaN/Inf (never a NaN direction with a success status), PCG's status otherwise.
    predicted_decrease : array or None
        Decrease of the solver's quadratic model of ``1/2 ||b - J d||^2`` at the step
        ``-d``: ``1/2 (d^T g + mu ||d||^2)`` for a damped solve (no pass over ``J``).
    gram_scale : array or None
        Scale of ``G = J^T J``: its largest eigenvalue (from the sketch, the SVD, or power
        iteration on the formed matrix), what a relative damping refers to.
    slope : array or None
        ``d^T g`` with ``g = J^T b``: the decrease rate of the model along ``-d``.
    curvature : array or None
        ``d^T G_model d``: the model decrease of a step ``-eta d`` is
        ``eta slope - eta^2 curvature / 2``.
    """

    method: str
    rank: int | None
    error_estimate: Any
    iterations: Any
    effective_dimension: Any
    converged: Any
    message: str
    gradient: Any = None
    status: Any = Status.SUCCESS
    predicted_decrease: Any = None
    gram_scale: Any = None
    slope: Any = None
    curvature: Any = None


def make_info(method: str, status: Any, message: str, **fields: Any) -> DirectionInfo:
    """A :class:`DirectionInfo` with ``converged`` from ``status``; other fields by name."""
    fields.setdefault("rank", None)
    fields.setdefault("error_estimate", None)
    fields.setdefault("iterations", None)
    fields.setdefault("effective_dimension", None)
    return DirectionInfo(
        method=method,
        converged=_converged(status),
        message=message + _nonfinite_note(status),
        status=status,
        **fields,
    )


# ---------------------------------------------------------------------------------
# states
# ---------------------------------------------------------------------------------


class GramState(NamedTuple):
    """State of :class:`Dense` (``M = G``) and :class:`Woodbury` (``M = J J^T``).

    ``eigenvalues`` / ``eigenvectors`` are set with ``factorization="eigh"``. For a
    row-sharded ``J`` (:class:`ShardedOperator`), :class:`Dense` keeps the operator as
    ``jacobian`` (its transpose products all-reduce) and :class:`Woodbury` the gathered
    rows, with the shard's operator as ``sharded``.
    """

    jacobian: Array
    matrix: Array
    residual: Array | None
    gradient: Array | None
    eigenvalues: Array | None
    eigenvectors: Array | None
    finite: Any
    scale: Array
    sharded: Any = None  # Woodbury on a row-sharded J: the shard's operator (gathers rhs)


class SVDState(NamedTuple):
    """State of :class:`SVD`: ``J = U diag(s) V^T`` (thin)."""

    U: Array
    s: Array
    V: Array
    residual: Array | None
    coefficients: Array | None  # U^T r
    finite: Any


class SketchState(NamedTuple):
    """State of :class:`Nystrom`, :class:`KernelNystrom` and :class:`NystromPCG`.

    ``saturated``: the sketch has as many columns as ``G`` can have non-zero eigenvalues
    (``min(N, P)``), so it misses nothing.
    """

    jacobian: LinearOperator
    approx: LowRankPSD
    residual: Array | None
    gradient: Array | None
    error_estimate: Any
    finite: Any
    saturated: Any = False


class AutoState(NamedTuple):
    """State of :class:`Auto`: the chosen solver, its state and the reason."""

    solver: DirectionSolver
    state: Any
    reason: str


# ---------------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DirectionSolver:
    """Base class of the direction solvers (configure, ``init`` once, ``solve`` often).

    Subclasses set :attr:`method` and implement :meth:`init` and :meth:`solve`; both run
    with float32 products at full precision on GPUs (:func:`_dispatch.full_float32`), a
    subclass's own included.
    """

    method: ClassVar[str] = ""
    #: Whether ``damping=0`` is allowed (a pseudo-inverse).
    allows_zero_damping: ClassVar[bool] = True
    #: Whether :meth:`solve` returns ``g = J^T r`` in ``info.gradient``.
    computes_gradient: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("init", "solve"):
            if name in cls.__dict__:
                setattr(cls, name, _dispatch.in_full_float32(cls.__dict__[name]))

    def init(self, J: Array | LinearOperator, r: Array | None = None, *, seed: Any = 0) -> Any:
        """Touch ``J`` once: factor, decompose or sketch it (``r`` rides along where it
        saves a pass). ``seed`` drives the sketch of the randomized solvers."""
        raise NotImplementedError

    def solve(
        self, state: Any, rhs: Array | None = None, *, damping: float | Array
    ) -> tuple[Array, DirectionInfo]:
        """``d ~ (J^T J + mu I)^{-1} J^T rhs`` (``rhs`` default: the ``r`` given to init)."""
        raise NotImplementedError

    def scale(self, state: Any) -> Any:
        """The largest eigenvalue of ``G`` (an estimate), from the state: what a damping
        relative to the spectrum is measured against."""
        raise NotImplementedError

    def damping_floor(self, state: Any) -> Any:
        """The smallest damping this state supports well (``0`` for exact solvers; for a
        Nystrom sketch below full rank, its smallest kept eigenvalue)."""
        return 0.0

    def check_damping(self, damping: Any, xp: Any = None, dtype: Any = None) -> Any:
        """Validate ``damping`` for this solver (a float, or a traced 0-d array)."""
        return check_nonnegative(
            damping,
            "damping",
            strict=not self.allows_zero_damping,
            context=f"method={self.method!r}",
            xp=xp,
            dtype=dtype,
        )

    def __call__(
        self,
        J: Array | LinearOperator,
        r: Array,
        *,
        damping: float | Array,
        seed: Any = 0,
    ) -> tuple[Array, DirectionInfo]:
        """``init`` and ``solve`` in one call."""
        return self.solve(self.init(J, r, seed=seed), damping=damping)


# ---------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------


def _check_system(J: Any, r: Any) -> tuple[LinearOperator, Any]:
    J = as_operator(J, "J")
    if r is not None:
        _check_residual(J, r, "r")
    return J, J.xp


def _check_residual(J: LinearOperator, r: Any, name: str) -> None:
    N = J.shape[0]
    if not _dispatch.is_array(r):
        raise TypeError(f"{name} must be an array of shape ({N},), got {type(r).__name__}")
    if r.ndim != 1 or r.shape[0] != N:
        raise ValueError(
            f"{name} must have shape ({N},) for J of shape {J.shape}, got {tuple(r.shape)}"
        )
    if r.dtype != J.dtype:
        raise TypeError(f"{name} has dtype {r.dtype}, J has {J.dtype}")


def _rhs(state: Any, rhs: Array | None, J: LinearOperator | None) -> Array:
    if rhs is None:
        if state.residual is None:
            raise ValueError(
                "solve: no right-hand side: pass rhs, or give the residual r to init(J, r)"
            )
        return state.residual
    if J is not None:
        _check_residual(J, rhs, "rhs")
    return rhs


def _all_finite(xp: Any, *arrays: Array) -> Any:
    """One reduction per array: a Python bool eagerly, a 0-d bool array under tracing."""
    ok = None
    for a in arrays:
        if a is None:
            continue
        f = xp.all(xp.isfinite(a))
        ok = f if ok is None else (ok & f)
    if ok is None:
        return True
    return ok if _dispatch.is_tracing(ok) else bool(ok)


def _finite_and(xp: Any, a: Any, b: Any) -> Any:
    """``a and b`` for flags that are Python bools or (traced) 0-d arrays."""
    if _dispatch.is_tracing(a) or _dispatch.is_tracing(b):
        return xp.asarray(a) & xp.asarray(b)
    return bool(a) and bool(b)


def _status(xp: Any, finite: Any, base: Any = Status.SUCCESS) -> Any:
    """``NONFINITE`` where ``finite`` is false, else ``base`` (array under tracing)."""
    if _dispatch.is_tracing(finite) or _dispatch.is_tracing(base):
        return xp.where(finite, xp.asarray(base, dtype=xp.int32), xp.asarray(3, dtype=xp.int32))
    return Status(int(base)) if bool(finite) else Status.NONFINITE


def _converged(status: Any) -> Any:
    return status == Status.SUCCESS if _dispatch.is_tracing(status) else status is Status.SUCCESS


def _nonfinite_note(status: Any) -> str:
    if _dispatch.is_tracing(status) or status is not Status.NONFINITE:
        return ""
    return (
        "; NaN/Inf in J, the right-hand side or the result: the direction is not usable "
        "(check the residual function and its derivatives at these parameters)"
    )


def _dot(xp: Any, a: Array, b: Array) -> Array:
    return xp.sum(a * b)


def _pred_damped(xp: Any, d: Array, g: Array, mu: Any) -> Array:
    """Model decrease ``1/2 (d^T g + mu ||d||^2)`` of a damped solve ``(G + mu I) d = g``.

    Equal to ``d^T g - 1/2 d^T G d`` there, and a sum of two non-negative terms (no
    cancellation).
    """
    return 0.5 * (_dot(xp, d, g) + mu * _dot(xp, d, d))


def _eye(xp: Any, n: int, like: Array) -> Array:
    return xp.eye(n, dtype=like.dtype, device=_dispatch.device_of(like))


def _eig_solve(xp: Any, w: Array, V: Array, B: Array, mu: Any) -> Array:
    """``V diag(1/(w + mu))_+ V^T B``, dropping ``w + mu <= n eps max(w + mu)``."""
    n = w.shape[0]
    top = xp.max(w) + mu
    keep = (w + mu) > n * float(xp.finfo(w.dtype).eps) * top
    inv = xp.where(keep, 1.0 / xp.where(keep, w + mu, xp.ones_like(w)), xp.zeros_like(w))
    return V @ (inv[:, None] * (V.T @ B))


def _chol_solve(xp: Any, L: Array, B: Array) -> Array:
    z = _dispatch.solve_triangular(xp, L, B, lower=True)
    return _dispatch.solve_triangular(xp, L.T, z, lower=False)


def cholesky_or(
    xp: Any,
    M: Array,
    with_factor: Callable[[Array], Any],
    fallback: Callable[[], Any],
    *,
    usable: Any = True,
) -> tuple[Any, Any]:
    """``with_factor(L)`` for the lower Cholesky factor ``L`` of ``M``, or ``fallback()`` when
    that factorization fails (or ``usable`` is false: then none is attempted).

    The one place where a failed Cholesky factorization is handled, the same way eagerly and
    under ``jax.jit``: eagerly a Python branch (a raised error or a NaN factor is a failure,
    :func:`_dispatch.cholesky`); traced, a ``lax.cond`` on the factor being finite (and
    ``usable``), so the fallback runs where the eager one would, instead of the NaN factor
    reaching the result. Both functions must return arrays of the same shapes and dtypes.
    Also returns whether the factor was used: a Python bool eagerly, a 0-d bool array
    under tracing.
    """
    if not _dispatch.is_tracing(M, usable):
        L = _dispatch.cholesky(xp, M) if bool(usable) else None
        return (fallback(), False) if L is None else (with_factor(L), True)
    L = _dispatch.cholesky_factor(xp, M)
    ok = xp.all(xp.isfinite(L)) & usable
    return _dispatch.cond(xp, ok, lambda: with_factor(L), fallback), ok


def _psd_solve(xp: Any, M: Array, B: Array, mu: Any, finite: Any) -> tuple[Array, str]:
    """``(M + mu I)^{-1} B`` for a PSD ``M`` (a block ``B``): Cholesky when ``mu > 0``,
    the eigendecomposition when the Cholesky fails or ``mu = 0`` (pseudo-inverse).

    Eager and traced code take the same route (:func:`cholesky_or`).
    """
    tracing = _dispatch.is_tracing(M, B, mu)
    if not tracing and not finite:
        return xp.full(B.shape, math.nan, dtype=B.dtype), "not factored (NaN/Inf)"

    def by_eigh() -> Array:
        w, V = xp.linalg.eigh(M)
        return _eig_solve(xp, w, V, B, mu)

    usable = (mu > 0) if _dispatch.is_tracing(mu) else float(mu) > 0
    damped = M + mu * _eye(xp, M.shape[0], M)
    X, used = cholesky_or(xp, damped, lambda L: _chol_solve(xp, L, B), by_eigh, usable=usable)
    if _dispatch.is_tracing(used):
        return X, "cholesky of the damped matrix (eigendecomposition where it fails)"
    if used:
        return X, "cholesky of the damped matrix"
    if usable:
        return X, "eigendecomposition (cholesky failed)"
    return X, "pseudo-inverse by eigendecomposition"


def _set(obj: Any, name: str, value: Any) -> None:
    """Store a normalized option on a frozen solver (``numpy.int64(5)`` -> ``5``)."""
    object.__setattr__(obj, name, value)


def _check_rank(rank: Any) -> int | None:
    return None if rank is None else check_int(rank, "rank", low=1)


def _check_sketch(sketch: Any) -> str:
    if sketch not in SKETCH_KINDS:
        raise ValueError(f"sketch must be one of {SKETCH_KINDS}, got {sketch!r}")
    return str(sketch)


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return str(value)
