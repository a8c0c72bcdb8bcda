"""``LowRankPSD``: a PSD matrix ``U diag(lam) U^T`` with orthonormal ``U``, and its inverses."""

from __future__ import annotations

from typing import Any

import array_api_compat as _compat

from . import _dispatch
from ._operator import FunctionOperator, LinearOperator
from ._validation import check_float_dtype, check_nonnegative, check_rhs

__all__ = ["LowRankPSD"]

Array = Any

SOLVE_MODES = ("woodbury", "projected")


class LowRankPSD:
    """Low-rank PSD matrix ``A_hat = U diag(lam) U^T`` (``n x n``, rank ``k``).

    Parameters
    ----------
    eigenvectors : array of shape (n, k)
        ``U``, with orthonormal columns.
    eigenvalues : array of shape (k,)
        ``lam``, non-negative and in descending order.
    shift : float or 0-d array, optional
        The stabilizing shift ``nu`` that :func:`nystrom` used (informational).
    core : str, optional
        How the core factorization was done: ``"cholesky"``, ``"eigh"`` or
        ``"eigh (cholesky failed)"`` (informational).

    Notes
    -----
    Produced by :func:`nystrom`. Every method costs ``O(n k)`` per vector.
    """

    def __init__(
        self, eigenvectors: Array, eigenvalues: Array, shift: Any = 0.0, core: str = "given"
    ) -> None:
        for name, a in (("eigenvectors", eigenvectors), ("eigenvalues", eigenvalues)):
            if not _dispatch.is_array(a):
                raise TypeError(f"{name} must be an array, got {type(a).__name__}")
        xp = _compat.array_namespace(eigenvectors, eigenvalues)
        if eigenvectors.ndim != 2 or eigenvalues.ndim != 1:
            raise ValueError(
                "eigenvectors must be 2-D and eigenvalues 1-D, got shapes "
                f"{tuple(eigenvectors.shape)} and {tuple(eigenvalues.shape)}"
            )
        if eigenvectors.shape[1] != eigenvalues.shape[0]:
            raise ValueError(
                f"eigenvectors have {eigenvectors.shape[1]} columns but there are "
                f"{eigenvalues.shape[0]} eigenvalues"
            )
        check_float_dtype(xp, eigenvectors.dtype, "eigenvectors' dtype")
        if eigenvalues.dtype != eigenvectors.dtype:
            raise TypeError(
                f"eigenvalues have dtype {eigenvalues.dtype}, eigenvectors "
                f"{eigenvectors.dtype}; they must match"
            )
        if eigenvectors.shape[0] == 0:
            raise ValueError(
                f"eigenvectors must have at least one row, got shape {tuple(eigenvectors.shape)}"
            )
        self.eigenvectors = eigenvectors
        self.eigenvalues = eigenvalues
        self.shift = shift
        self.core = core
        self.xp = xp

    # -- basic properties ----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        n = int(self.eigenvectors.shape[0])
        return (n, n)

    @property
    def rank(self) -> int:
        """Number of eigenpairs kept (``k``)."""
        return int(self.eigenvalues.shape[0])

    @property
    def dtype(self) -> Any:
        """Dtype of the factors."""
        return self.eigenvectors.dtype

    def __repr__(self) -> str:
        return (
            f"LowRankPSD(n={self.shape[0]}, rank={self.rank}, dtype={self.dtype}, "
            f"core={self.core!r})"
        )

    # -- products --------------------------------------------------------------------
    def matmat(self, X: Array) -> Array:
        """``A_hat X`` for ``X`` of shape ``(n,)`` or ``(n, m)``."""
        X2, vec = check_rhs(X, self.shape[0], self.dtype, "X", "LowRankPSD.matmat")
        U = self.eigenvectors
        Y = U @ (self.eigenvalues[:, None] * (U.T @ X2))
        return Y[:, 0] if vec else Y

    def to_dense(self) -> Array:
        """``U diag(lam) U^T`` as an ``(n, n)`` array."""
        U = self.eigenvectors
        return (U * self.eigenvalues[None, :]) @ U.T

    def as_operator(self) -> LinearOperator:
        """This matrix as a PSD-tagged :class:`LinearOperator`."""
        U = self.eigenvectors
        return FunctionOperator(
            lambda X: U @ (self.eigenvalues[:, None] * (U.T @ X)),
            shape=self.shape,
            dtype=self.dtype,
            xp=self.xp,
            device=_dispatch.device_of(U),
            psd=True,
        )

    def truncate(self, k: int) -> LowRankPSD:
        """Keep the ``k`` leading eigenpairs."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.rank:
            raise ValueError(f"k must be an int in [1, {self.rank}], got {k!r}")
        return LowRankPSD(self.eigenvectors[:, :k], self.eigenvalues[:k], self.shift, self.core)

    def effective_dimension(self, mu: float | Array) -> Array:
        """Effective dimension ``d_eff(mu) = sum_i lam_i / (lam_i + mu)``.

        It counts the eigenvalues that matter at damping ``mu``; a Nystrom preconditioner
        of sketch size about ``2 d_eff(mu)`` makes CG converge in a handful of iterations
        (Frangella, Tropp & Udell 2023). ``mu = 0`` gives the number of non-zero eigenvalues.
        """
        mu = check_nonnegative(mu, "mu", xp=self.xp, dtype=self.dtype)
        return effective_dimension(self.xp, self.eigenvalues, mu)

    # -- inverses ----------------------------------------------------------------------
    @_dispatch.in_full_float32
    def solve(
        self,
        B: Array,
        mu: float | Array,
        *,
        mode: str = "woodbury",
        rcond: float | None = None,
    ) -> Array:
        """Apply a regularized inverse of ``A_hat`` to ``B`` (a vector or a block).

        ``mode="woodbury"`` (needs ``mu > 0``) is the exact inverse of ``A_hat + mu I``::

            (A_hat + mu I)^{-1} B = U diag(1/(lam + mu)) U^T B + (B - U U^T B) / mu

        ``mode="projected"`` inverts on the sketched range only::

            U diag(1/(lam + mu))_+ U^T B,

        dropping eigenvalues with ``lam + mu <= rcond * (lam_max + mu)``; at ``mu = 0``
        this is the truncated pseudo-inverse ``A_hat^+ B``.

        Parameters
        ----------
        B : array of shape (n,) or (n, m)
        mu : float or 0-d array
            Damping, ``>= 0`` (``> 0`` for ``"woodbury"``).
        mode : {"woodbury", "projected"}
        rcond : float, optional
            Relative cut-off of ``"projected"``; default ``n * eps(dtype)``.

        Returns
        -------
        array of the shape of ``B``

        References
        ----------
        Frangella, Tropp, Udell. Randomized Nystrom preconditioning. SIMAX 2023.
        """
        if mode not in SOLVE_MODES:
            raise ValueError(f"mode must be one of {SOLVE_MODES}, got {mode!r}")
        mu = check_nonnegative(
            mu,
            "mu",
            strict=(mode == "woodbury"),
            context=f'mode="{mode}"',
            xp=self.xp,
            dtype=self.dtype,
        )
        B2, vec = check_rhs(B, self.shape[0], self.dtype, "B", "LowRankPSD.solve")
        xp = self.xp
        U, lam = self.eigenvectors, self.eigenvalues
        UtB = U.T @ B2
        if mode == "woodbury":
            X = U @ (UtB / (lam + mu)[:, None]) + (B2 - U @ UtB) / mu
        else:
            if rcond is None:
                rcond = self.shape[0] * float(xp.finfo(self.dtype).eps)
            denom = lam + mu
            top = xp.max(denom) if self.rank > 0 else xp.asarray(0.0, dtype=self.dtype)
            keep = denom > rcond * top
            inv = xp.where(
                keep, 1.0 / xp.where(keep, denom, xp.ones_like(denom)), xp.zeros_like(denom)
            )
            X = U @ (inv[:, None] * UtB)
        return X[:, 0] if vec else X


def effective_dimension(xp: Any, lam: Array, mu: Any) -> Array:
    """``sum_i lam_i / (lam_i + mu)`` of non-negative eigenvalues ``lam`` (terms with
    ``lam_i + mu = 0`` count 0)."""
    denom = lam + mu
    safe = xp.where(denom > 0, denom, xp.ones_like(denom))
    return xp.sum(xp.where(denom > 0, lam / safe, xp.zeros_like(lam)))


def smallest_positive(xp: Any, lam: Array) -> Array:
    """The smallest positive entry of ``lam`` (``lam_l`` of a sketch, whose zero-padded
    tail is skipped), or ``0`` when none is positive."""
    positive = xp.where(lam > 0, lam, xp.full_like(lam, float("inf")))
    smallest = xp.min(positive)
    return xp.where(xp.isfinite(smallest), smallest, xp.zeros_like(smallest))
