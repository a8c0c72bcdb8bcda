"""Exact direction solvers: the dense Gram matrix, the Woodbury (kernel) form, the SVD."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from . import _dispatch
from ._distributed import collective_of, gather_vector, gathered, is_sharded
from ._lowrank import LowRankPSD
from ._solver_base import (
    DirectionInfo,
    DirectionSolver,
    GramState,
    SVDState,
    _all_finite,
    _check_choice,
    _check_system,
    _dot,
    _eig_solve,
    _finite_and,
    _pred_damped,
    _psd_solve,
    _rhs,
    _status,
    make_info,
)
from ._status import Method

__all__ = ["SVD", "Dense", "Woodbury"]

Array = Any

FACTORIZATIONS = ("cholesky", "eigh")


@dataclass(frozen=True)
class Dense(DirectionSolver):
    r"""Dense ENGD: ``G = J^T J`` formed (``P x P``), ``d = (G + mu I)^{-1} J^T b``.

    ``factorization="cholesky"`` (default) factors ``G + mu I`` in each :meth:`solve`
    (``P^3 / 3`` flops) and falls back to the eigendecomposition when that fails or at
    ``mu = 0`` (the pseudo-inverse ``G^+ g``, cut at ``P eps lam_max``: Mueller & Zeinhofer's
    ENGD); ``"eigh"`` decomposes ``G`` once in :meth:`init`, after which every damping costs
    ``O(P^2)``.

    References
    ----------
    Mueller, Zeinhofer. Achieving high accuracy with PINNs via energy natural gradient
    descent. ICML 2023.
    """

    factorization: str = "cholesky"
    method: ClassVar[str] = Method.DENSE.value
    computes_gradient: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_choice(self.factorization, "factorization", FACTORIZATIONS)

    def init(self, J: Any, r: Array | None = None, *, seed: Any = 0) -> GramState:
        """Form ``G = J^T J`` (and ``g = J^T r``); decompose it with ``"eigh"``."""
        J, xp = _check_system(J, r)
        Jd = J.to_dense()
        if is_sharded(J):  # G = sum_d J_d^T J_d, g = sum_d J_d^T r_d: one all-reduce
            P = Jd.shape[1]
            block = Jd if r is None else xp.concat([Jd, r[:, None]], axis=1)
            W = collective_of(J).sum(Jd.T @ block)
            g = None if r is None else W[:, P]
            return _gram_state(xp, self.factorization, J, W[:, :P], r, g)
        G = _dispatch.symmetric_product(xp, Jd.T)  # J^T J at syrk's flops
        g = None if r is None else Jd.T @ r
        return _gram_state(xp, self.factorization, Jd, G, r, g)

    def solve(
        self, state: GramState, rhs: Array | None = None, *, damping: float | Array
    ) -> tuple[Array, DirectionInfo]:
        """``(G + mu I)^{-1} J^T rhs`` (``O(P^2)`` after ``"eigh"``)."""
        xp = _dispatch.namespace(state.matrix)
        mu = self.check_damping(damping, xp, state.matrix.dtype)
        if rhs is None:
            b = _rhs(state, None, None)
            g = state.gradient if state.gradient is not None else state.jacobian.T @ b
        else:
            g = state.jacobian.T @ rhs
        d, how = _gram_solve(xp, state, g, mu)
        return _exact_info(xp, self.method, d, g, mu, how, state, state.finite)

    def scale(self, state: GramState) -> Any:
        """The largest eigenvalue of ``G``."""
        return state.scale


@dataclass(frozen=True)
class Woodbury(DirectionSolver):
    r"""ENGD in residual space: ``d = J^T (J J^T + mu I)^{-1} b`` (``N x N``, exact).

    Equal to ``(J^T J + mu I)^{-1} J^T b`` by the push-through identity; the cheap form when
    ``N < P``. Pseudo-inverse at ``mu = 0``. ``factorization`` as in :class:`Dense`.

    References
    ----------
    Guzman-Cordero, Dangel, Goldshlager, Zeinhofer. Improving ENGD through Woodbury,
    momentum and randomization. NeurIPS 2025.
    """

    factorization: str = "cholesky"
    method: ClassVar[str] = Method.WOODBURY.value

    def __post_init__(self) -> None:
        _check_choice(self.factorization, "factorization", FACTORIZATIONS)

    def init(self, J: Any, r: Array | None = None, *, seed: Any = 0) -> GramState:
        """Form the kernel ``K = J J^T`` (decompose it with ``"eigh"``); a row-sharded ``J``
        is gathered first (its kernel pairs rows of different shards) and the solve runs
        replicated."""
        J, xp = _check_system(J, r)
        sharded = J if is_sharded(J) else None
        J, r = gathered(J, r)
        Jd = J.to_dense()
        K = _dispatch.symmetric_product(xp, Jd)  # J J^T at syrk's flops
        state = _gram_state(xp, self.factorization, Jd, K, r, None)
        return state._replace(sharded=sharded)

    def solve(
        self, state: GramState, rhs: Array | None = None, *, damping: float | Array
    ) -> tuple[Array, DirectionInfo]:
        """``J^T (K + mu I)^{-1} rhs``; the model decrease is ``1/2 (K y) . (b + mu y)``."""
        xp = _dispatch.namespace(state.matrix)
        mu = self.check_damping(damping, xp, state.matrix.dtype)
        b = _rhs(state, rhs, None)
        if rhs is not None and state.sharded is not None:
            b = gather_vector(state.sharded, b)  # the shard's rows of rhs: gather them
        if rhs is not None:
            _check_vector(b, state.matrix.shape[0], state.matrix.dtype, "rhs")
        y, how = _gram_solve(xp, state, b, mu)
        d = state.jacobian.T @ y
        # d^T g + mu ||d||^2 = (K y) . b + mu (K y) . y, with K y computed, not r - mu y
        Ky = state.matrix @ y
        slope = _dot(xp, Ky, b)  # d^T J^T b = y^T K b
        pred = 0.5 * (slope + mu * _dot(xp, Ky, y))
        status = _status(xp, _finite_and(xp, _all_finite(xp, d), state.finite))
        deff = _eig_deff(xp, state, mu)
        info = make_info(
            self.method,
            status,
            f"{self.method}: {how}",
            effective_dimension=deff,
            predicted_decrease=pred,
            gram_scale=state.scale,
            slope=slope,
            curvature=_dot(xp, Ky, Ky),  # ||J d||^2 = ||K y||^2
        )
        return d, info

    def scale(self, state: GramState) -> Any:
        """The largest eigenvalue of ``J J^T`` (equal to ``G``'s)."""
        return state.scale


def _check_vector(b: Any, n: int, dtype: Any, name: str) -> None:
    if not _dispatch.is_array(b) or b.ndim != 1 or b.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(getattr(b, 'shape', ()))}")
    if b.dtype != dtype:
        raise TypeError(f"{name} has dtype {b.dtype}, expected {dtype}")


def _gram_state(
    xp: Any, factorization: str, Jd: Array, M: Array, r: Array | None, g: Array | None
) -> GramState:
    M = 0.5 * (M + M.T)
    finite = _all_finite(xp, M, r)
    w = V = None
    if factorization == "eigh":
        if finite is True or _dispatch.is_tracing(M):
            w, V = xp.linalg.eigh(M)
        else:
            w = xp.full((M.shape[0],), math.nan, dtype=M.dtype)
            V = xp.full(M.shape, math.nan, dtype=M.dtype)
        scale = xp.max(w)
    else:
        scale = _top_eigenvalue(xp, M)
    return GramState(Jd, M, r, g, w, V, finite, scale)


def _top_eigenvalue(xp: Any, M: Array, iters: int = 12) -> Array:
    """Largest eigenvalue of a PSD ``M`` by power iteration: ``O(iters n^2)``, a few percent
    of forming ``M``; from a fixed start (a mix of the diagonal and a ramp) that no eigenvector
    of a Gram matrix is orthogonal to in practice. A lower bound, within ~10% here."""
    n = M.shape[0]
    diag = xp.linalg.diagonal(M) if hasattr(xp.linalg, "diagonal") else xp.diagonal(M)
    ramp = xp.linspace(1.0, 2.0, n, dtype=M.dtype, device=_dispatch.device_of(M))
    v0 = xp.abs(diag) + xp.max(xp.abs(diag)) * ramp
    v0 = v0 / xp.linalg.vector_norm(v0)

    def body(_: Any, v: Array) -> Array:
        w = M @ v
        nrm = xp.linalg.vector_norm(w)
        return xp.where(nrm > 0, w / xp.where(nrm > 0, nrm, xp.ones_like(nrm)), v)

    v = _dispatch.fori_loop(xp, 0, iters, body, v0)
    return xp.maximum(xp.sum(v * (M @ v)), xp.max(diag))


def _gram_solve(xp: Any, state: GramState, b: Array, mu: Any) -> tuple[Array, str]:
    if state.eigenvalues is not None:
        x = _eig_solve(xp, state.eigenvalues, state.eigenvectors, b[:, None], mu)[:, 0]
        return x, "eigendecomposition (from init)"
    x, how = _psd_solve(xp, state.matrix, b[:, None], mu, state.finite)
    return x[:, 0], how


def _eig_deff(xp: Any, state: GramState, mu: Any) -> Any:
    if state.eigenvalues is None:
        return None
    w = xp.maximum(state.eigenvalues, xp.zeros_like(state.eigenvalues))
    return LowRankPSD(state.eigenvectors, w).effective_dimension(mu)


def _exact_info(
    xp: Any, method: str, d: Array, g: Array, mu: Any, how: str, state: GramState, finite0: Any
) -> tuple[Array, DirectionInfo]:
    status = _status(xp, _finite_and(xp, _all_finite(xp, d), finite0))
    pred = _pred_damped(xp, d, g, mu)
    info = make_info(
        method,
        status,
        f"{method}: {how}",
        effective_dimension=_eig_deff(xp, state, mu),
        gradient=g,
        predicted_decrease=pred,
        gram_scale=state.scale,
        slope=_dot(xp, d, g),
        curvature=_dot(xp, d, state.matrix @ d),
    )
    return d, info


@dataclass(frozen=True)
class SVD(DirectionSolver):
    r"""Damped steps from one thin SVD ``J = U diag(s) V^T``, for any ``mu``.

    ``d(mu) = V diag(s / (s^2 + mu)) U^T b``: backward stable (no squaring of the condition
    number, unlike the normal equations), each damping costs ``O((N + P) k)``; at ``mu = 0``
    singular values below ``max(N, P) eps s_max`` are dropped (the pseudo-inverse). The
    least-squares driver's trust region uses it. ``J`` is materialized.
    """

    method: ClassVar[str] = Method.SVD.value

    def init(self, J: Any, r: Array | None = None, *, seed: Any = 0) -> SVDState:
        """The thin SVD of ``J`` (and ``U^T r``)."""
        J, xp = _check_system(J, r)
        if is_sharded(J):
            raise NotImplementedError(
                "method='svd' does not run on a row-sharded Jacobian (ShardedOperator)"
            )
        Jd = J.to_dense()
        finite = _all_finite(xp, Jd, r)
        if finite is False:
            k = min(Jd.shape)
            nan = math.nan
            U = xp.full((Jd.shape[0], k), nan, dtype=Jd.dtype)
            s = xp.full((k,), nan, dtype=Jd.dtype)
            V = xp.full((Jd.shape[1], k), nan, dtype=Jd.dtype)
        else:
            U, s, Vt = xp.linalg.svd(Jd, full_matrices=False)
            V = Vt.T
        c = None if r is None else U.T @ r
        return SVDState(U, s, V, r, c, finite)

    def coefficients(self, state: SVDState, rhs: Array | None) -> Array:
        """``U^T b``."""
        return (
            state.coefficients
            if rhs is None and state.coefficients is not None
            else (state.U.T @ _rhs(state, rhs, None))
        )

    def cutoff(self, state: SVDState) -> Any:
        """``max(N, P) eps s_max``: smaller singular values are dropped at ``mu = 0``."""
        xp = _dispatch.namespace(state.s)
        n = max(state.U.shape[0], state.V.shape[0])
        return n * float(xp.finfo(state.s.dtype).eps) * xp.max(state.s)

    def solve(
        self, state: SVDState, rhs: Array | None = None, *, damping: float | Array
    ) -> tuple[Array, DirectionInfo]:
        """``V diag(s / (s^2 + mu)) U^T rhs``."""
        xp = _dispatch.namespace(state.s)
        mu = self.check_damping(damping, xp, state.s.dtype)
        c = self.coefficients(state, rhs)
        s = state.s
        kept = ((s > self.cutoff(state)) | (mu > 0)) & (s > 0)
        safe = xp.where(kept, s, xp.ones_like(s))
        zero = xp.zeros_like(s)
        # Filter factors f = s^2 / (s^2 + mu) = 1 / (1 + (mu / s) / s) and coefficients
        # c / (s + mu / s): no s^2 is formed, so nothing overflows for huge s (J near the
        # dtype's range) and small s give f -> 0 without 0 * inf.
        f = xp.where(kept, 1.0 / (1.0 + (mu / safe) / safe), zero)
        a = xp.where(kept, c / (safe + mu / safe), zero)
        d = state.V @ a
        # model decrease 1/2 sum c^2 (s^2 (s^2 + 2 mu) / (s^2 + mu)^2) = 1/2 sum c^2 f (2 - f)
        pred = 0.5 * xp.sum(c * c * f * (2.0 - f))
        slope, curvature = xp.sum(c * c * f), xp.sum(c * c * f * f)  # J d = U (c f)
        status = _status(xp, _finite_and(xp, _all_finite(xp, d), state.finite))
        deff = xp.sum(f)
        info = make_info(
            self.method,
            status,
            "svd: thin SVD of J, damping by filter factors",
            effective_dimension=deff,
            predicted_decrease=pred,
            gram_scale=self.scale(state),
            slope=slope,
            curvature=curvature,
        )
        return d, info

    def scale(self, state: SVDState) -> Any:
        """``s_max^2`` (``inf``, without an overflow warning, past the dtype's range)."""
        xp = _dispatch.namespace(state.s)
        s_max = xp.max(state.s)
        limit = math.sqrt(float(xp.finfo(state.s.dtype).max))
        squared = xp.minimum(s_max, xp.asarray(limit, dtype=s_max.dtype)) ** 2
        return xp.where(s_max > limit, xp.asarray(math.inf, dtype=s_max.dtype), squared)
