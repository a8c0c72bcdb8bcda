"""Left singular vectors and singular values of a tall, skinny matrix from its Gram matrix.

The Nystrom factor ``B`` is ``n x l`` with ``n`` up to millions and ``l`` about a hundred.
LAPACK's thin SVD (or QR) of such a matrix is memory bound: its Householder panels stream
the whole matrix once per column, 12-22 s for ``10^6 x 100`` on two cores, against about
0.3 s for one ``B^T B`` product. Here ``B = Q R`` comes from shifted CholeskyQR3 (Fukaya,
Kannan, Nakatsukasa, Yamamoto, Yanagisawa 2020): one CholeskyQR pass on the Gram matrix
shifted by ``s = 11 (n l + l (l + 1)) eps ||B||_F^2`` (its Cholesky factorization cannot
fail), then two plain passes, each of which squares the loss of orthogonality of the one
before; then ``R = W diag(S) V^T`` is a small SVD and ``U = Q W``. Every ``n``-sized step is
a Gram product or a triangular solve with ``l`` columns.

Accuracy. Shifted CholeskyQR3 is as accurate as Householder QR (orthogonality and residual
of order ``eps``) for condition numbers up to about ``1 / eps``. The Nystrom factor is far
inside that range: ``B B^T`` has its non-zero eigenvalues in ``[nu, lambda_max + nu]`` with
``nu >= eps ||Y||_F``, so ``cond(B) <~ eps^{-1/2}``. Exactly zero columns (the null
directions that the eigendecomposition core drops) are carried through as zero columns
with zero singular values. When a factorization still fails (possible only outside that
range) the eager path falls back to LAPACK; under ``jax.jit`` the result is NaN, and the
Nystrom factorization (its caller) then takes the same LAPACK fallback by a ``lax.cond``.
"""

from __future__ import annotations

from typing import Any

from . import _dispatch

__all__: list[str] = []

Array = Any

#: ``m >= TALL_RATIO * n`` takes the Gram route; shorter matrices go to LAPACK.
TALL_RATIO = 8


def thin_svd(xp: Any, B: Array) -> tuple[Array, Array]:
    """``U, S`` of ``B = U diag(S) V^T`` (``U`` is ``m x n``, ``S`` descending), ``m >= n``."""
    m, n = B.shape
    if m >= TALL_RATIO * n:
        QR = _shifted_cholesky_qr3(xp, B)
        if QR is not None:
            Q, R = QR
            W, S, _ = xp.linalg.svd(R)
            return Q @ W, S
    U, S, _ = xp.linalg.svd(B, full_matrices=False)
    return U, S


def _shifted_cholesky_qr3(xp: Any, B: Array) -> tuple[Array, Array] | None:
    """``B = Q R`` (``Q`` orthonormal but for B's zero columns), or ``None`` if a pass fails."""
    m, n = B.shape
    eps = float(xp.finfo(B.dtype).eps)
    zero = xp.linalg.vector_norm(B, axis=0) == 0
    shift = 11.0 * (m * n + n * (n + 1)) * eps * xp.sum(B * B)
    tracing = _dispatch.is_tracing(B)
    Q, R = B, None
    # After two passes Q is orthonormal to rounding, so the third pass's factor is the
    # identity to rounding: applying its inverse by a matrix product is as accurate as a
    # triangular solve, and cheaper.
    for s, explicit in ((shift, False), (None, False), (None, True)):
        step = _cholesky_qr(xp, Q, zero, s, tracing, explicit)
        if step is None:
            return None
        Q, Rk = step
        R = Rk if R is None else Rk @ R
    assert R is not None
    # Zero columns of B: Q's columns are zero there, R's would be e_j; they must be zero.
    return Q, xp.where(zero[None, :], xp.zeros_like(R), R)


def _cholesky_qr(
    xp: Any, X: Array, zero: Array, shift: Any, tracing: bool, explicit: bool
) -> tuple[Array, Array] | None:
    """One CholeskyQR pass: ``X^T X + s I = L L^T``, ``Q = X L^{-T}``, ``R = L^T``."""
    G = X.T @ X
    n = G.shape[0]
    eye = xp.eye(n, dtype=X.dtype, device=_dispatch.device_of(X))
    G = 0.5 * (G + G.T)
    if shift is not None:
        G = G + shift * eye
    # A zero column gets a unit diagonal: it stays decoupled and maps to a zero column of Q.
    G = xp.where(zero[None, :] & zero[:, None], eye, G)
    L = _dispatch.cholesky_factor(xp, G) if tracing else _dispatch.cholesky(xp, G)
    if L is None:
        return None
    if explicit:
        Q = X @ _dispatch.solve_triangular(xp, L, eye, lower=True).T
    else:
        Q = _dispatch.solve_triangular(xp, L, X.T, lower=True).T
    return Q, L.T
