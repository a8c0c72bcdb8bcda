"""Randomized Nystrom approximation of a PSD operator (one block product)."""

from __future__ import annotations

import math
from typing import Any

from . import _dispatch, _validation
from ._lowrank import LowRankPSD
from ._operator import LinearOperator, as_operator
from ._random import Sampler, as_sampler
from ._sketch import SKETCH_KINDS, sketch_matrix
from ._solver_base import cholesky_or
from ._thin_svd import TALL_RATIO, thin_svd
from ._validation import check_finite, check_int

__all__ = ["nystrom"]

Array = Any

CORES = ("auto", "cholesky", "eigh")


@_dispatch.in_full_float32
def nystrom(
    A: Array | LinearOperator,
    rank: int,
    *,
    oversample: int = 0,
    sketch: str | Array = "gaussian",
    seed: int | Sampler | Any = 0,
    core: str = "auto",
    check_finite: bool = True,
) -> LowRankPSD:
    r"""Stable randomized Nystrom approximation ``A_hat = U diag(lam) U^T`` of a PSD ``A``.

    With a test matrix ``Omega`` (``n x l``, ``l = rank + oversample``)::

        Y    = A Omega                               (the only access to A)
        nu   = eps * ||Y||_F,   Y_nu = Y + nu Omega  (shift for stability)
        C    = chol(Omega^T Y_nu),  B = Y_nu C^{-1}
        U, S = svd(B),           lam = max(S^2 - nu, 0)

    and the ``rank`` leading eigenpairs are kept. Without oversampling ``A_hat``
    interpolates the sketch, ``A_hat Omega = A Omega`` (up to ``nu``), and ``A - A_hat``
    is PSD. With ``l = k + p`` columns, ``E ||A - A_hat||_* <= (1 + k/(p - 1))
    sum_{i>k} lambda_i(A)`` (Tropp et al. 2017): near-optimal when the spectrum decays.

    Parameters
    ----------
    A : LinearOperator or array
        Symmetric PSD operator of shape ``(n, n)``. An operator must carry the PSD tag
        (:func:`gram`, :func:`kernel` and ``aslinearoperator(..., psd=True)`` give it); a
        2-D array is taken to be symmetric PSD by the caller.
    rank : int
        Number of eigenpairs returned, ``1 <= rank <= n``.
    oversample : int, optional
        Extra sketch columns ``p`` (the sketch has ``min(rank + p, n)`` columns).
    sketch : {"gaussian", "rademacher", "sparse_sign"} or array
        Test-matrix distribution (:func:`sketch_matrix`), or the test matrix ``Omega``
        itself, of shape ``(n, l)`` with ``l >= rank`` (then ``oversample`` and ``seed``
        are unused).
    seed : int, Sampler or JAX key
        Source of randomness (:func:`as_sampler`).
    core : {"auto", "cholesky", "eigh"}
        Factorization of the ``l x l`` core ``Omega^T Y_nu``. ``"auto"`` (and
        ``"cholesky"``) uses a Cholesky factorization and, if it fails (a numerically
        rank-deficient core), falls back to an eigendecomposition that drops the null
        directions, under ``jax.jit`` too (a ``lax.cond`` on the factor being finite);
        ``"eigh"`` always takes the eigendecomposition. The result's ``core`` attribute
        says which ran (under ``jax.jit``: ``"cholesky (eigh where it fails)"``).
    check_finite : bool
        Raise ``ValueError`` if ``A Omega`` holds NaN or Inf (skipped under tracing).

    Returns
    -------
    LowRankPSD

    References
    ----------
    Tropp, Yurtsever, Udell, Cevher. Fixed-rank approximation of a positive-semidefinite
    matrix from streaming data. NeurIPS 2017. Frangella, Tropp, Udell. Randomized Nystrom
    preconditioning. SIMAX 2023 (Algorithm 2.1).

    Examples
    --------
    >>> import numpy as np
    >>> from sketchlinalg import nystrom
    >>> Q = np.linalg.qr(np.random.default_rng(0).standard_normal((50, 5)))[0]
    >>> A = (Q * np.array([5.0, 4, 3, 2, 1])) @ Q.T
    >>> approx = nystrom(A, rank=5, seed=0)
    >>> bool(np.allclose(approx.to_dense(), A))
    True
    """
    A = _as_psd_operator(A, "A", "nystrom")
    n = A.shape[0]
    rank = check_int(rank, "rank", low=1, high=n)
    oversample = check_int(oversample, "oversample", low=0)
    if core not in CORES:
        raise ValueError(f"core must be one of {CORES}, got {core!r}")
    if not _dispatch.is_array(sketch) and (
        not isinstance(sketch, str) or sketch not in SKETCH_KINDS
    ):
        raise ValueError(f"sketch must be one of {SKETCH_KINDS} or an array, got {sketch!r}")
    if _dispatch.is_array(sketch):
        Omega: Any = sketch
        if Omega.ndim != 2 or Omega.shape[0] != n or not rank <= Omega.shape[1] <= n:
            raise ValueError(
                f"nystrom: a sketch array must have shape ({n}, l) with {rank} <= l <= {n} "
                f"(rank={rank}), got {tuple(Omega.shape)}"
            )
    else:
        l = min(rank + oversample, n)
        Omega = sketch_matrix(
            n, l, xp=A.xp, dtype=A.dtype, device=A.device, kind=sketch, seed=as_sampler(seed)
        )
    Y = A.matmat(Omega)
    if check_finite:
        check_finite_product(A.xp, Y)
    approx = nystrom_from_sketch(A.xp, Omega, Y, rank=rank, core=core)
    if check_finite:
        _validation.check_finite(
            A.xp,
            approx.eigenvalues,
            "the Nystrom approximation",
            f"A's entries overflow {A.dtype} in the sketch's products; rescale A",
        )
    return approx


def check_finite_product(xp: Any, Y: Array) -> None:
    check_finite(
        xp,
        Y,
        "the sketch product A @ Omega",
        "check the operator's products (for a Jacobian: the residual function and its "
        "derivatives at these parameters, e.g. an overflow or a log/sqrt of a negative "
        "number)",
    )


def nystrom_from_sketch(
    xp: Any, Omega: Array, Y: Array, *, rank: int, core: str = "auto"
) -> LowRankPSD:
    """The Nystrom approximation from a test matrix and its product ``Y = A Omega``.

    Shared by :func:`nystrom` and :func:`adaptive_nystrom` (which grows ``Omega``).
    """
    dtype = Y.dtype
    finfo = xp.finfo(dtype)
    eps = float(finfo.eps)
    # Shift: nu = eps ||Y||_F, floored so that an all-zero product still factorizes.
    floor = math.sqrt(float(finfo.smallest_normal))
    # ||Y||_F computed as s ||Y / s||_F (s = max |Y|): the plain sum of squares overflows
    # for entries above sqrt(max float).
    s = xp.max(xp.abs(Y))
    s = xp.where(s > 0, s, xp.ones_like(s))
    nu = xp.maximum(eps * s * xp.linalg.matrix_norm(Y / s), xp.asarray(floor, dtype=dtype))
    Y_nu = Y + nu * Omega
    M = Omega.T @ Y_nu
    M = 0.5 * (M + M.T)

    B, used = _core_factor(xp, M, Y_nu, core)
    U, S = _factor_svd(xp, B)
    lam = xp.maximum(S * S - nu, xp.zeros_like(S))
    return LowRankPSD(U[:, :rank], lam[:rank], shift=nu, core=used)


def _core_factor(xp: Any, M: Array, Y_nu: Array, core: str) -> tuple[Array, str]:
    """``B`` with ``B B^T = Y_nu M^+ Y_nu^T`` from the ``l x l`` core ``M``, and how.

    ``"cholesky"`` / ``"auto"``: ``B = Y_nu L^{-T}`` (``M = L L^T``), and where the Cholesky
    factorization fails the eigendecomposition below, eagerly and under ``jax.jit`` alike
    (:func:`cholesky_or`).
    """

    def by_eigh() -> Array:
        # B = Y_nu V diag(w^{-1/2}) on the numerically positive eigenvalues of the core:
        # B B^T = Y_nu M^+ Y_nu^T, the Nystrom approximation on range(M).
        w, V = xp.linalg.eigh(M)
        tol = M.shape[0] * float(xp.finfo(M.dtype).eps) * xp.max(xp.abs(w))
        good = w > tol
        inv_sqrt = xp.where(
            good, 1.0 / xp.sqrt(xp.where(good, w, xp.ones_like(w))), xp.zeros_like(w)
        )
        return (Y_nu @ V) * inv_sqrt[None, :]

    if core == "eigh":
        return by_eigh(), "eigh"

    def by_cholesky(L: Array) -> Array:
        return _dispatch.solve_triangular(xp, L, Y_nu.T, lower=True).T

    B, used = cholesky_or(xp, M, by_cholesky, by_eigh)
    if _dispatch.is_tracing(used):
        return B, "cholesky (eigh where it fails)"
    return B, "cholesky" if used else "eigh (cholesky failed)"


def _factor_svd(xp: Any, B: Array) -> tuple[Array, Array]:
    """``U, S`` of the thin SVD of ``B`` (:func:`thin_svd`). Where its CholeskyQR fails,
    :func:`thin_svd` falls back to LAPACK eagerly; under ``jax.jit`` the failure is a NaN
    result, so the same fallback runs there by a ``lax.cond`` on the result being finite."""
    U, S = thin_svd(xp, B)
    m, n = B.shape
    if not _dispatch.is_tracing(B) or m < TALL_RATIO * n:  # eager, or LAPACK already
        return U, S

    def lapack() -> tuple[Array, Array]:
        U, S, _ = xp.linalg.svd(B, full_matrices=False)
        return U, S

    # (a NaN B, from a NaN sketch product, gives NaN either way: no second SVD then)
    ok = (xp.all(xp.isfinite(U)) & xp.all(xp.isfinite(S))) | ~xp.all(xp.isfinite(B))
    return _dispatch.cond(xp, ok, lambda: (U, S), lapack)


def _as_psd_operator(A: Any, name: str, where: str) -> LinearOperator:
    if isinstance(A, LinearOperator):
        if not A.is_psd:
            raise ValueError(
                f"{where}: {name} must be tagged PSD; build it with gram(J), kernel(J) or "
                f"aslinearoperator(A, psd=True), got {A!r}"
            )
        return A
    if _dispatch.is_array(A):
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(
                f"{where}: {name} must be a square 2-D array, got shape {tuple(A.shape)}"
            )
        return as_operator(A, name, psd=True)
    raise TypeError(
        f"{where}: {name} must be a LinearOperator or a 2-D array, got {type(A).__name__}"
    )
