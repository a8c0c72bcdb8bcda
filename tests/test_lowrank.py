"""LowRankPSD: the Woodbury and projected inverses agree with dense solves on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from spectra import psd_with_spectrum

import sketchlinalg as sl


def _approx(backend, n, k, seed):
    A, _ = psd_with_spectrum(0.7 ** np.arange(n), seed)
    return sl.nystrom(backend.asarray(A), k, seed=seed)


@given(
    k=st.sampled_from([3, 10]),
    log_mu=st.floats(-4, 1),
    m=st.sampled_from([0, 3]),
    seed=st.integers(0, 2**31 - 1),
)
def test_woodbury_solve_matches_dense(backend, k, log_mu, m, seed):
    n, mu = 20, 10.0**log_mu
    approx = _approx(backend, n, k, seed)
    Ahat = backend.to_numpy(approx.to_dense())
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((n, m)) if m else rng.standard_normal(n)
    X = backend.to_numpy(approx.solve(backend.asarray(B), mu))
    ref = np.linalg.solve(Ahat + mu * np.eye(n), B)
    # forward error <= cond * backward error; cond(A_hat + mu I) <= (1 + mu) / mu
    cond = (np.linalg.norm(Ahat, 2) + mu) / mu
    assert X.shape == B.shape
    np.testing.assert_allclose(X, ref, atol=50 * backend.eps * cond * np.abs(ref).max())


@given(k=st.sampled_from([4, 8]), seed=st.integers(0, 2**31 - 1), mu=st.sampled_from([0.0, 1e-3]))
def test_projected_solve_is_pinv_on_range(backend, k, seed, mu):
    n = 16
    approx = _approx(backend, n, k, seed)
    U = backend.to_numpy(approx.eigenvectors)
    lam = backend.to_numpy(approx.eigenvalues)
    b = np.random.default_rng(seed).standard_normal(n)
    x = backend.to_numpy(approx.solve(backend.asarray(b), mu, mode="projected"))
    keep = lam + mu > n * backend.eps * (lam.max() + mu)
    ref = U[:, keep] @ ((U[:, keep].T @ b) / (lam[keep] + mu))
    cond = (lam.max() + mu) / (lam[keep].min() + mu)
    np.testing.assert_allclose(x, ref, atol=50 * backend.eps * cond * np.abs(ref).max())
    # the projected solution lies in range(U)
    np.testing.assert_allclose(U @ (U.T @ x), x, atol=100 * backend.eps * cond * np.abs(x).max())


def test_effective_dimension(backend):
    lam = np.array([4.0, 1.0, 0.25, 0.0])
    U = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 4)))[0]
    approx = sl.LowRankPSD(backend.asarray(U), backend.asarray(lam))
    mu = 1.0
    np.testing.assert_allclose(
        backend.to_numpy(approx.effective_dimension(mu)),
        np.sum(lam / (lam + mu)),
        rtol=10 * backend.eps,
    )
    assert float(backend.to_numpy(approx.effective_dimension(0.0))) == 3.0
    assert approx.rank == 4 and approx.shape == (6, 6)
    np.testing.assert_allclose(
        backend.to_numpy(approx.as_operator().to_dense()),
        backend.to_numpy(approx.to_dense()),
        atol=10 * backend.eps,
    )
    t = approx.truncate(2)
    assert t.rank == 2


def test_solve_misuse(backend):
    approx = _approx(backend, 10, 3, 0)
    b = backend.asarray(np.ones(10))
    with pytest.raises(ValueError, match=r"mu must be > 0 with mode=\"woodbury\""):
        approx.solve(b, 0.0)
    with pytest.raises(ValueError, match="mu must be >= 0"):
        approx.solve(b, -1.0, mode="projected")
    with pytest.raises(ValueError, match="mode must be one of"):
        approx.solve(b, 1.0, mode="exact")
    with pytest.raises(ValueError, match=r"shape \(10,\) or \(10, m\)"):
        approx.solve(backend.asarray(np.ones(9)), 1.0)
    with pytest.raises(ValueError, match="must be finite"):
        approx.solve(b, float("nan"))
    with pytest.raises(ValueError, match="columns"):
        sl.LowRankPSD(backend.asarray(np.ones((4, 2))), backend.asarray(np.ones(3)))
