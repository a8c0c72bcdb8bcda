"""The tall-skinny SVD behind the Nystrom factor (shifted CholeskyQR3 + a small SVD).

Checked against LAPACK on prescribed singular values up to the condition number the
Nystrom factor can have (``cond(B) <~ eps^{-1/2}``), with zero columns, with the fallback,
under ``jax.jit``, and end to end through :func:`sketchlinalg.nystrom` on a tall problem.
"""

from __future__ import annotations

import numpy as np
import pytest
from spectra import psd_with_spectrum

import sketchlinalg as sl
from sketchlinalg import _thin_svd

M, N = 400, 20  # m >= TALL_RATIO * n: the Gram route


def tall(cond: float, seed: int, m: int = M, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q1 = np.linalg.qr(rng.standard_normal((m, n)))[0]
    Q2 = np.linalg.qr(rng.standard_normal((n, n)))[0]
    return (Q1 * np.logspace(0, -np.log10(cond), n)) @ Q2.T


def test_route_is_taken():
    assert M >= _thin_svd.TALL_RATIO * N


@pytest.mark.parametrize("power", [0.0, 0.25, 0.45])
def test_matches_lapack(backend, power):
    """cond(B) = eps^-power: S^2 and B B^T to O(eps) of the largest, U orthonormal."""
    cond = backend.eps**-power
    B = tall(cond, seed=3)
    assert _thin_svd._shifted_cholesky_qr3(backend.xp, backend.asarray(B)) is not None
    U, S = _thin_svd.thin_svd(backend.xp, backend.asarray(B))
    U, S = backend.to_numpy(U), backend.to_numpy(S)
    Sr = np.linalg.svd(B.astype(backend.dtype_name).astype(np.float64), compute_uv=False)
    tol = 50 * backend.eps * np.sqrt(M * N)
    assert np.all(np.diff(S) <= tol)
    np.testing.assert_allclose(S**2, Sr**2, atol=tol)
    np.testing.assert_allclose(U.T @ U, np.eye(N), atol=tol)
    np.testing.assert_allclose((U * S) @ (U * S).T, B @ B.T, atol=tol)


def test_zero_columns_stay_zero(backend64):
    """The eigh core's dropped directions (zero columns) give zero singular values."""
    B = tall(10.0, seed=4)
    B[:, [2, 11]] = 0.0
    xp = backend64.xp
    assert _thin_svd._shifted_cholesky_qr3(xp, backend64.asarray(B)) is not None
    U, S = (backend64.to_numpy(a) for a in _thin_svd.thin_svd(xp, backend64.asarray(B)))
    tol = 100 * backend64.eps * np.sqrt(M * N)
    np.testing.assert_allclose(S, np.linalg.svd(B, compute_uv=False), atol=tol)
    np.testing.assert_allclose((U * S) @ (U * S).T, B @ B.T, atol=tol)


def test_rank_deficient_falls_back_to_lapack():
    """Dependent non-zero columns: a CholeskyQR pass fails, the eager path uses LAPACK."""
    import array_api_compat.numpy as xp

    rng = np.random.default_rng(5)
    B = rng.standard_normal((M, 5)) @ rng.standard_normal((5, N))
    U, S = _thin_svd.thin_svd(xp, B)
    np.testing.assert_allclose(S, np.linalg.svd(B, compute_uv=False), atol=1e-12 * S[0])
    k = 1e-8 * S[0] < S
    np.testing.assert_allclose(U[:, k].T @ U[:, k], np.eye(int(k.sum())), atol=1e-12)


def test_under_jit():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    B = tall(1e6, seed=6)
    U, S = jax.jit(lambda B: _thin_svd.thin_svd(jnp, B))(jnp.asarray(B))
    U, S = np.asarray(U), np.asarray(S)
    np.testing.assert_allclose(S**2, np.linalg.svd(B, compute_uv=False) ** 2, atol=1e-12)
    np.testing.assert_allclose(U.T @ U, np.eye(N), atol=1e-12)


def test_nystrom_on_a_tall_sketch(backend):
    """End to end: n = 400, l = 20 takes the Gram route; the Nystrom invariants hold."""
    n, l = M, N
    lam = 0.6 ** np.arange(n)
    A, _ = psd_with_spectrum(lam, seed=7)
    approx = sl.nystrom(backend.asarray(A), l, seed=7)
    Omega = backend.to_numpy(
        sl.sketch_matrix(n, l, xp=backend.xp, dtype=backend.dtype, kind="gaussian", seed=7)
    )
    U = backend.to_numpy(approx.eigenvectors)
    Ahat = backend.to_numpy(approx.to_dense())
    tol = 200 * backend.eps * np.sqrt(n * l)
    np.testing.assert_allclose(U.T @ U, np.eye(l), atol=tol)
    np.testing.assert_allclose(Ahat @ Omega, A @ Omega, atol=tol * np.linalg.norm(Omega, 2))
    assert np.linalg.eigvalsh(A - Ahat).min() >= -tol
