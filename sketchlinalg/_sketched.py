"""Sketched direction solvers: SNGD (Nystrom), its residual-space form, Nystrom-PCG."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from . import _dispatch
from ._distributed import gathered, global_shape, is_sharded
from ._estimate import estimate_error
from ._exact import SVD, Woodbury
from ._lowrank import SOLVE_MODES, LowRankPSD, effective_dimension, smallest_positive
from ._nystrom import CORES, nystrom_from_sketch
from ._operator import LinearOperator, gram, kernel
from ._pcg import pcg
from ._preconditioner import nystrom_preconditioner
from ._random import Sampler, as_sampler
from ._sketch import sketch_matrix
from ._solver_base import (
    DEFAULT_RANK,
    DirectionInfo,
    DirectionSolver,
    GramState,
    SketchState,
    _all_finite,
    _check_choice,
    _check_rank,
    _check_residual,
    _check_sketch,
    _check_system,
    _dot,
    _finite_and,
    _pred_damped,
    _rhs,
    _set,
    _status,
    make_info,
)
from ._status import Method, Status
from ._validation import check_int, check_nonnegative

__all__ = ["KernelNystrom", "Nystrom", "NystromPCG"]

Array = Any

#: CG iterations of Nystrom-PCG when ``maxiter`` is not given.
DEFAULT_PCG_ITERATIONS = 100


@dataclass(frozen=True)
class _Sketched(DirectionSolver):
    rank: int | None = None
    oversample: int = 0
    sketch: str = "gaussian"
    core: str = "auto"
    error_power_iters: int = 0

    def __post_init__(self) -> None:
        _set(self, "rank", _check_rank(self.rank))
        _set(self, "oversample", check_int(self.oversample, "oversample", low=0))
        _check_sketch(self.sketch)
        _check_choice(self.core, "core", CORES)
        iters = check_int(self.error_power_iters, "error_power_iters", low=0)
        _set(self, "error_power_iters", iters)

    def scale(self, state: SketchState) -> Any:
        """The sketch's largest eigenvalue."""
        return state.approx.eigenvalues[0]

    def effective_dimension(self, state: SketchState, mu: Any) -> Any:
        """``d_eff(mu)`` of the sketch's spectrum."""
        return state.approx.effective_dimension(mu)

    def saturated(self, state: SketchState) -> Any:
        """Whether the sketch misses nothing of ``G`` (rank ``min(N, P)``)."""
        return state.saturated

    def init(self, J: Any, r: Array | None = None, *, seed: Any = 0) -> SketchState:
        """Sketch ``G = J^T J`` (and ``g = J^T r`` in the same pass)."""
        return _gram_init(self, J, r, seed)

    def _start(
        self, state: SketchState, rhs: Array | None, damping: Any
    ) -> tuple[LinearOperator, LowRankPSD, Any, Any, Array]:
        """``(J, approx, xp, mu, g)`` of a solve on the Gram sketch: the checked damping
        and ``g = J^T rhs`` (the fused gradient when ``rhs`` is None)."""
        J = state.jacobian
        mu = self.check_damping(damping, J.xp, J.dtype)
        return J, state.approx, J.xp, mu, _gradient(state, rhs)

    def _rank(self, dim: int) -> int:
        if self.rank is None:
            return min(DEFAULT_RANK, dim)
        return check_int(self.rank, "rank", low=1, high=dim)

    def _finish_init(
        self,
        A: LinearOperator,
        approx: LowRankPSD,
        sampler: Sampler,
        J: LinearOperator,
        r: Any,
        g: Any,
        finite: Any,
    ) -> SketchState:
        err = None
        if self.error_power_iters:
            err = estimate_error(
                A, approx, power_iters=self.error_power_iters, seed=sampler.fold_in(1)
            )
        return SketchState(J, approx, r, g, err, finite, approx.rank >= min(global_shape(J)))


def _gram_sketch(
    J: LinearOperator,
    r: Array | None,
    rank: int,
    oversample: int,
    sketch: str,
    sampler: Sampler,
    core: str,
) -> tuple[LowRankPSD, Array | None, Any]:
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
    JO = J.matmat(Omega)
    if r is None:
        Y, g = J.rmatmat(JO), None
    else:
        W = J.rmatmat(xp.concat([JO, r[:, None]], axis=1))
        Y, g = W[:, :l], W[:, l]
    finite = _all_finite(xp, Y, g)
    Ysafe = Y if finite is True or _dispatch.is_tracing(Y) else xp.zeros_like(Y)
    return nystrom_from_sketch(xp, Omega, Ysafe, rank=rank, core=core), g, finite


def _gram_exact(J: LinearOperator, r: Array | None) -> tuple[LowRankPSD, Array | None, Any]:
    """``G = J^T J`` exactly, ``V diag(s^2) V^T`` from the thin SVD ``J = U diag(s) V^T`` of
    a materialized ``J`` (:class:`SVD`'s set-up), and ``g = J^T r = V (s * U^T r)``.

    A sketch with as many columns as ``G`` has non-zero eigenvalues (``min(N, P)``) would
    only approximate, at several times the cost, what one thin SVD gives exactly (and
    backward stably: the singular values of ``J``, not an eigendecomposition of ``G``).
    """
    xp = J.xp
    svd = SVD().init(J, r)
    lam = svd.s * svd.s
    finite = _finite_and(xp, svd.finite, _all_finite(xp, lam))
    g = None if svd.coefficients is None else svd.V @ (svd.s * svd.coefficients)
    return LowRankPSD(svd.V, lam, core="svd"), g, finite


def _gram_init(solver: _Sketched, J: Any, r: Array | None, seed: Any) -> SketchState:
    """The state of a solver that sketches ``G = J^T J`` (fused with ``g = J^T r``); at a
    rank of ``min(N, P)`` or more with a materialized ``J``, ``G`` itself (thin SVD)."""
    J, xp = _check_system(J, r)
    sampler = as_sampler(seed)
    rank = solver._rank(J.shape[1])
    if J.is_materialized and rank >= min(global_shape(J)):
        approx, g, finite = _gram_exact(*gathered(J, r))  # sharded: every shard's rows
    else:
        approx, g, finite = _gram_sketch(
            J, r, rank, solver.oversample, solver.sketch, sampler, solver.core
        )
    return solver._finish_init(gram(J), approx, sampler, J, r, g, _and(finite, r, xp))


def _gradient(state: SketchState, rhs: Array | None) -> Array:
    """``J^T rhs``; the fused ``g = J^T r`` of :func:`_gram_init` when ``rhs`` is None."""
    if rhs is None:
        _rhs(state, None, None)
        return state.gradient
    _check_residual(state.jacobian, rhs, "rhs")
    return state.jacobian.rmatvec(rhs)


@dataclass(frozen=True)
class _WithInverse(_Sketched):
    """A sketch whose regularized inverse is applied directly (``inverse=`` chooses it)."""

    inverse: str = "woodbury"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice(self.inverse, "inverse", SOLVE_MODES)

    @property
    def allows_zero_damping(self) -> bool:  # type: ignore[override]
        """Only the projected inverse exists at ``mu = 0``."""
        return self.inverse == "projected"

    def check_damping(self, damping: Any, xp: Any = None, dtype: Any = None) -> Any:
        """``mu >= 0``, and ``> 0`` for the Woodbury inverse."""
        return check_nonnegative(
            damping,
            "damping",
            strict=self.inverse == "woodbury",
            context=(
                f"method={self.method!r} and inverse='woodbury' (use inverse='projected' for 0)"
            ),
            xp=xp,
            dtype=dtype,
        )

    def damping_floor(self, state: SketchState) -> Any:
        """The smallest kept eigenvalue ``lam_l`` of a sketch below full rank: with a smaller
        ``mu``, the Woodbury inverse scales the part of ``g`` outside the sketched range by
        ``1/mu`` (far more than any direction it resolves); ``0`` once saturated."""
        xp = state.approx.xp
        floor = smallest_positive(xp, state.approx.eigenvalues)
        return xp.where(xp.asarray(state.saturated), xp.zeros_like(floor), floor)


@dataclass(frozen=True)
class Nystrom(_WithInverse):
    r"""SNGD: ``d = (G_hat + mu I)^{-1} J^T b`` with a rank-``rank`` Nystrom ``G_hat``.

    ``G_hat = nystrom(gram(J), rank)`` from one block product (fused with ``g = J^T r``);
    ``inverse="woodbury"`` applies the exact inverse of ``G_hat + mu I`` (needs
    ``mu > 0``; the part of ``g`` outside the sketched range is scaled by ``1/mu``),
    ``"projected"`` the inverse on the sketched range only (allows ``mu = 0``).

    Parameters
    ----------
    rank : int, optional
        Eigenpairs kept, default ``min(100, P)``.
    oversample : int
        Extra sketch columns.
    sketch : {"gaussian", "rademacher", "sparse_sign"}
        Test-matrix distribution.
    inverse : {"woodbury", "projected"}
    core : {"auto", "cholesky", "eigh"}
        Factorization of the Nystrom core (:func:`nystrom`).
    error_power_iters : int
        Power steps for the estimate ``||G - G_hat||_2`` (as many extra products).

    References
    ----------
    Best Mckay, Kaur, Greif, Wetton. Near-optimal sketchy natural gradients for PINNs.
    ICML 2025. Frangella, Tropp, Udell. Randomized Nystrom preconditioning. SIMAX 2023.
    """

    method: ClassVar[str] = Method.NYSTROM.value
    computes_gradient: ClassVar[bool] = True

    def solve(
        self, state: SketchState, rhs: Array | None = None, *, damping: float | Array
    ) -> tuple[Array, DirectionInfo]:
        """``(G_hat + mu I)^{-1} g`` or its projected form, ``O(P l)``."""
        _, approx, xp, mu, g = self._start(state, rhs, damping)
        d = approx.solve(g, mu, mode=self.inverse)
        Utd = approx.eigenvectors.T @ d
        curvature = _dot(xp, Utd, approx.eigenvalues * Utd)  # d^T G_hat d
        pred = _pred_damped(xp, d, g, mu) if self.inverse == "woodbury" else None
        msg = f"nystrom: rank {approx.rank}, {self.inverse} inverse, core {approx.core}"
        info = _sketch_info(
            xp,
            self.method,
            approx,
            state,
            d,
            g,
            mu,
            msg,
            slope=_dot(xp, d, g),
            curvature=curvature,
            pred=pred,
        )
        return d, info


def _not_sharded(J: Any, method: str) -> None:
    if is_sharded(J):
        raise NotImplementedError(
            f"method={method!r} does not run on a row-sharded Jacobian (ShardedOperator); the "
            "data-parallel methods are nystrom, nystrom-pcg, dense and woodbury"
        )


def _and(finite: Any, r: Any, xp: Any) -> Any:
    return _finite_and(xp, finite, _all_finite(xp, r))


def _sketch_info(
    xp: Any,
    method: str,
    approx: LowRankPSD,
    state: SketchState,
    d: Array,
    g: Any,
    mu: Any,
    msg: str,
    *,
    slope: Any,
    curvature: Any,
    pred: Any = None,
    iterations: Any = None,
    base: Any = Status.SUCCESS,
) -> DirectionInfo:
    status = _status(xp, _finite_and(xp, _all_finite(xp, d), state.finite), base)
    return make_info(
        method,
        status,
        msg,
        rank=approx.rank,
        error_estimate=state.error_estimate,
        iterations=iterations,
        effective_dimension=approx.effective_dimension(mu),
        gradient=g,
        predicted_decrease=slope - 0.5 * curvature if pred is None else pred,
        gram_scale=approx.eigenvalues[0],
        slope=slope,
        curvature=curvature,
    )


@dataclass(frozen=True)
class KernelNystrom(_WithInverse):
    r"""The sketch in residual space: ``d = J^T (K_hat + mu I)^{-1} b``,
    ``K_hat = nystrom(kernel(J), rank)`` (``N``-dimensional sketch).

    Options as :class:`Nystrom` (``rank`` default ``min(100, N)``).
    """

    method: ClassVar[str] = Method.KERNEL_NYSTROM.value

    def init(self, J: Any, r: Array | None = None, *, seed: Any = 0) -> SketchState:
        """Sketch ``K = J J^T``."""
        J, xp = _check_system(J, r)
        _not_sharded(J, self.method)
        rank = self._rank(J.shape[0])
        sampler = as_sampler(seed)
        A = kernel(J)
        l = min(rank + self.oversample, J.shape[0])
        Omega = sketch_matrix(
            J.shape[0], l, xp=xp, dtype=J.dtype, device=J.device, kind=self.sketch, seed=sampler
        )
        Y = A.matmat(Omega)
        finite = _all_finite(xp, Y)
        Ysafe = Y if finite is True or _dispatch.is_tracing(Y) else xp.zeros_like(Y)
        approx = nystrom_from_sketch(xp, Omega, Ysafe, rank=rank, core=self.core)
        return self._finish_init(A, approx, sampler, J, r, None, _and(finite, r, xp))

    def solve(
        self, state: SketchState, rhs: Array | None = None, *, damping: float | Array
    ) -> tuple[Array, DirectionInfo]:
        """``J^T (K_hat + mu I)^{-1} rhs``: one product with ``J^T``."""
        J, approx = state.jacobian, state.approx
        xp = J.xp
        mu = self.check_damping(damping, xp, J.dtype)
        b = _rhs(state, rhs, J)
        y = approx.solve(b, mu, mode=self.inverse)
        d = J.rmatvec(y)
        # the K_hat model: 1/2 (K_hat y) . (b + mu y)
        Ky = approx.matmat(y)
        msg = f"kernel-nystrom: rank {approx.rank}, {self.inverse} inverse, core {approx.core}"
        info = _sketch_info(
            xp,
            self.method,
            approx,
            state,
            d,
            None,
            mu,
            msg,
            slope=_dot(xp, Ky, b),
            curvature=_dot(xp, Ky, Ky),
        )
        return d, info


@dataclass(frozen=True)
class NystromPCG(_Sketched):
    r"""``(G + mu I) d = J^T b`` by CG, preconditioned by a rank-``rank`` Nystrom sketch.

    Exact up to ``rtol`` (default ``sqrt(eps)``) within ``maxiter`` iterations (default
    ``min(100, P)``; CG stopped there still gives a descent direction, and the status says
    ``MAX_ITERATIONS``: a larger preconditioner rank is the cure). Needs
    ``mu > 0``. The sketch (fused with ``g = J^T r``) is made once in :meth:`init`; every
    :meth:`solve` builds the preconditioner for its ``mu`` in ``O(P l)`` and runs CG (one
    product with ``J`` and ``J^T`` per iteration).

    References
    ----------
    Frangella, Tropp, Udell. Randomized Nystrom preconditioning. SIMAX 2023.
    """

    rtol: float | None = None
    maxiter: int | None = None
    method: ClassVar[str] = Method.NYSTROM_PCG.value
    allows_zero_damping: ClassVar[bool] = False
    computes_gradient: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rtol is not None:
            _set(self, "rtol", check_nonnegative(self.rtol, "rtol"))
        if self.maxiter is not None:
            _set(self, "maxiter", check_int(self.maxiter, "maxiter", low=0))

    def solve(
        self, state: SketchState, rhs: Array | None = None, *, damping: float | Array
    ) -> tuple[Array, DirectionInfo]:
        """Preconditioned CG on ``(G + mu I) d = g``."""
        J, approx, xp, mu, g = self._start(state, rhs, damping)
        res = pcg(
            gram(J),
            g,
            mu=mu,
            preconditioner=nystrom_preconditioner(approx, mu),
            rtol=self.rtol,
            maxiter=_pcg_maxiter(self.maxiter, J.shape[1]),
        )
        d = res.x
        slope = _dot(xp, d, g)  # (G + mu I) d = g up to rtol: d^T G d = d^T g - mu ||d||^2
        info = _sketch_info(
            xp,
            self.method,
            approx,
            state,
            d,
            g,
            mu,
            f"nystrom-pcg: rank {approx.rank}; {res.message}",
            slope=slope,
            curvature=slope - mu * _dot(xp, d, d),
            pred=_pred_damped(xp, d, g, mu),
            iterations=res.iterations,
            base=_pcg_status(res.status),
        )
        return d, info


def _pcg_maxiter(maxiter: int | None, n: int) -> int:
    """The CG iteration cap: ``maxiter``, else ``min(DEFAULT_PCG_ITERATIONS, P)``."""
    return min(DEFAULT_PCG_ITERATIONS, n) if maxiter is None else maxiter


def _pcg_status(status: Any) -> Any:
    return status if _dispatch.is_tracing(status) else Status(int(status))


class TopState(NamedTuple):
    """Set-up of :class:`ExactTop`: the Nystrom sketch of a rung below the top, or the exact
    kernel and its eigenvalues at the top. Under ``jax.jit`` both are present (the ladder is
    a ``lax.switch`` whose branches return one structure; the unused one is zeros) and
    ``top`` selects."""

    sketch: SketchState | None
    exact: GramState | None
    spectrum: Array | None
    top: Any


#: The top rung's solver: the kernel ``K = J J^T``, Cholesky of ``K + mu I`` per damping.
_EXACT = Woodbury()


@dataclass(frozen=True)
class ExactTop(DirectionSolver):
    r"""A sketched solver on an adaptive ladder whose top rung is ``G`` itself, in residual
    form.

    Below the top, ``sketched`` (:class:`Nystrom`: SNGD, or :class:`NystromPCG`) at the
    ladder's size. At the top (an explicit ``J`` with ``N < P``: a Nystrom approximation of
    rank ``N`` *is* ``G = J^T J``) the direction is ``(G + mu I)^{-1} J^T b = J^T (J J^T +
    mu I)^{-1} b`` (the push-through identity), by a Cholesky factorization of the ``N x N``
    damped kernel, with the kernel's eigenvalues (those of ``G``) for ``d_eff`` and the
    scale: about the cost of one sketch of rank ``N / 4``, exact, and backward stable
    (``G``'s eigenvectors would need a division by the square roots of the kernel's
    eigenvalues, which loses the small ones).
    """

    sketched: _Sketched = Nystrom()
    computes_gradient: ClassVar[bool] = True

    @property
    def method(self) -> str:  # type: ignore[override]
        """The sketched solver's method."""
        return self.sketched.method

    def check_damping(self, damping: Any, xp: Any = None, dtype: Any = None) -> Any:
        """As the sketched solver's."""
        return self.sketched.check_damping(damping, xp, dtype)

    def init_top(self, J: LinearOperator, r: Array | None) -> TopState:
        """The top rung's set-up: ``K = J J^T`` and its eigenvalues."""
        exact = _EXACT.init(J, r)
        xp = _dispatch.namespace(exact.matrix)
        if exact.finite is True or _dispatch.is_tracing(exact.matrix):
            lam = xp.linalg.eigvalsh(exact.matrix)
        else:
            lam = xp.full((exact.matrix.shape[0],), float("nan"), dtype=exact.matrix.dtype)
        lam = xp.maximum(xp.flip(lam), xp.zeros_like(lam))  # descending, clipped at 0
        return TopState(None, exact._replace(scale=lam[0]), lam, True)

    def init_sketch(self, sketch: SketchState) -> TopState:
        """A rung below the top, from its sketch."""
        return TopState(sketch, None, None, False)

    def scale(self, state: TopState) -> Any:
        """The largest eigenvalue of ``G`` (the sketch's, or the kernel's)."""
        return _pick(state, lambda s: self.sketched.scale(s), lambda lam: lam[0])

    def damping_floor(self, state: TopState) -> Any:
        """The sketch's smallest eigenvalue below the top, ``0`` at the top (exact)."""
        return _pick(state, lambda s: self.sketched.damping_floor(s), lambda lam: 0.0 * lam[0])

    def effective_dimension(self, state: TopState, mu: Any) -> Any:
        """``d_eff(mu)`` of the spectrum the rung knows."""
        return _pick(
            state, lambda s: self.sketched.effective_dimension(s, mu), lambda lam: _deff(lam, mu)
        )

    def saturated(self, state: TopState) -> Any:
        """Whether the rung misses nothing of ``G`` (always at the top)."""
        return _pick(state, lambda s: self.sketched.saturated(s), lambda lam: True)

    def solve(
        self, state: TopState, rhs: Array | None = None, *, damping: float | Array
    ) -> tuple[Array, DirectionInfo]:
        """The rung's direction (under ``jax.jit`` a ``lax.cond`` on ``state.top``)."""
        sketch, exact, spectrum = state.sketch, state.exact, state.spectrum
        if exact is None or spectrum is None:
            assert sketch is not None
            return self.sketched.solve(sketch, rhs, damping=damping)

        def top() -> tuple[Array, DirectionInfo]:
            d, info = _EXACT.solve(exact, rhs, damping=damping)
            return d, info._replace(
                method=self.method,
                message=f"{self.method}: exact top rung, {info.message}",
                effective_dimension=_deff(spectrum, damping),
            )

        if sketch is None:
            return top()
        # traced: one of the two runs; the info keeps the arrays both have
        xp = _dispatch.namespace(spectrum)

        def arrays(d: Array, info: DirectionInfo) -> tuple[Array, ...]:
            floats = (xp.asarray(getattr(info, f), dtype=spectrum.dtype) for f in _FLOAT_FIELDS)
            its = 0 if info.iterations is None else info.iterations
            ints = (xp.asarray(info.status, dtype=xp.int32), xp.asarray(its, dtype=xp.int32))
            return (d, *ints, *floats)

        d, status, iterations, *floats = _dispatch.cond(
            xp,
            state.top,
            lambda: arrays(*top()),
            lambda: arrays(*self.sketched.solve(sketch, rhs, damping=damping)),
        )
        info = make_info(
            self.method,
            status,
            f"{self.method}: adaptive rank, exact at the top rung",
            rank=sketch.approx.rank,
            error_estimate=sketch.error_estimate,
            iterations=iterations,
            **dict(zip(_FLOAT_FIELDS, floats, strict=True)),
        )
        return d, info


#: The array fields of a direction's info that both rungs of :class:`ExactTop` give.
_FLOAT_FIELDS = (
    "effective_dimension", "predicted_decrease", "gram_scale", "slope", "curvature",
)  # fmt: skip


def _deff(lam: Array, mu: Any) -> Array:
    return effective_dimension(_dispatch.namespace(lam), lam, mu)


def _pick(state: TopState, sketch: Any, exact: Any) -> Any:
    """``sketch(state.sketch)`` or ``exact(state.spectrum)``, whichever the rung holds (both,
    selected by ``state.top``, under ``jax.jit``)."""
    if state.exact is None:
        return sketch(state.sketch)
    if state.sketch is None:
        return exact(state.spectrum)
    a, b = exact(state.spectrum), sketch(state.sketch)
    xp = _dispatch.namespace(state.spectrum)
    return xp.where(state.top, xp.asarray(a), xp.asarray(b))
