"""Conjugate gradients: solutions, blocks, Nystrom preconditioning, and reported failures."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from spectra import psd_with_spectrum

import sketchlinalg as sl


@given(log_mu=st.floats(-3, 0), m=st.sampled_from([0, 1, 3]), seed=st.integers(0, 2**31 - 1))
def test_pcg_solves_damped_system(backend, log_mu, m, seed):
    n, mu = 25, 10.0**log_mu
    A, _ = psd_with_spectrum(0.8 ** np.arange(n), seed)
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((n, m)) if m else rng.standard_normal(n)
    rtol = 10 * backend.sqrt_eps
    res = sl.pcg(backend.asarray(A), backend.asarray(b), mu=mu, rtol=rtol, maxiter=10 * n)
    x = backend.to_numpy(res.x)
    assert x.shape == b.shape
    assert bool(np.all(backend.to_numpy(res.converged) if m else res.converged)), res.message
    resid = np.linalg.norm((A + mu * np.eye(n)) @ x - b, axis=0) / np.linalg.norm(b, axis=0)
    # the recurrence residual drifts from the true one by O(eps cond)
    cond = (1 + mu) / mu
    assert np.all(resid <= rtol + 100 * backend.eps * cond)


def test_block_columns_equal_separate_solves(backend64):
    n = 30
    A, _ = psd_with_spectrum(np.linspace(0.01, 1, n), 2)
    B = np.random.default_rng(0).standard_normal((n, 3))
    B[:, 1] *= 1e-3  # columns converge at different iterations
    Ab = backend64.asarray(A)
    block = sl.pcg(Ab, backend64.asarray(B), rtol=1e-10)
    for j in range(3):
        single = sl.pcg(Ab, backend64.asarray(B[:, j]), rtol=1e-10)
        np.testing.assert_allclose(
            backend64.to_numpy(block.x)[:, j], backend64.to_numpy(single.x), atol=1e-12
        )
        assert int(backend64.to_numpy(block.iterations)[j]) == single.iterations
    assert "converged" in block.message


def test_zero_rhs_converges_immediately(backend):
    res = sl.pcg(backend.asarray(np.eye(4)), backend.asarray(np.zeros(4)))
    assert res.converged and res.iterations == 0
    np.testing.assert_array_equal(backend.to_numpy(res.x), 0.0)


def test_indefinite_operator_is_detected_not_iterated(backend):
    A = np.diag([1.0, -2.0, 3.0, 0.5])
    b = np.ones(4)
    res = sl.pcg(backend.asarray(A), backend.asarray(b))
    assert not res.converged
    assert int(backend.to_numpy(res.status)) == 2
    assert "not positive definite" in res.message
    assert np.all(np.isfinite(backend.to_numpy(res.x)))


def test_maxiter_is_reported_with_advice(backend):
    A, _ = psd_with_spectrum(np.logspace(-6, 0, 40), 0)
    res = sl.pcg(backend.asarray(A), backend.asarray(np.ones(40)), maxiter=3, rtol=1e-12)
    assert not res.converged and res.iterations == 3
    assert int(backend.to_numpy(res.status)) == 1
    assert "maxiter=3" in res.message and "try" in res.message


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NumPy's own inf * 0 warning
def test_nonfinite_is_reported(backend64):
    A = np.eye(3)
    A[0, 0] = np.inf
    res = sl.pcg(backend64.asarray(A), backend64.asarray(np.ones(3)))
    assert not res.converged
    assert int(backend64.to_numpy(res.status)) in (2, 3)  # inf curvature or NaN residual
    assert "NaN" in res.message or "positive definite" in res.message


@pytest.mark.parametrize("mu", [1e-4, 1e-6, 1e-8])
def test_nystrom_pcg_beats_cg_by_10x_and_stays_flat(backend64, mu):
    """Exponential decay, l = 200 >= 2 d_eff(mu): Nystrom-PCG needs >= 10x fewer iterations
    than CG at rtol 1e-8, and at most 5 whatever cond(A + mu I) = 1/mu is."""
    n = 600
    A, _ = psd_with_spectrum(0.8 ** np.arange(n), 0)
    b = np.random.default_rng(1).standard_normal(n)
    Ab, bb = backend64.asarray(A), backend64.asarray(b)
    approx = sl.nystrom(Ab, 200, seed=0)
    assert 2 * float(backend64.to_numpy(approx.effective_dimension(mu))) <= 200
    plain = sl.pcg(Ab, bb, mu=mu, rtol=1e-8, maxiter=20 * n)
    pre = sl.pcg(Ab, bb, mu=mu, rtol=1e-8, preconditioner=sl.nystrom_preconditioner(approx, mu))
    assert pre.converged, pre.message
    # plain CG at cond = 1e8 may meet rtol only in its recurrence (status 5, "inaccurate":
    # the true residual stalls just above 1e-8); its count is then a lower bound
    assert int(backend64.to_numpy(plain.status)) in (0, 5), plain.message
    assert pre.iterations * 10 <= plain.iterations, (pre.iterations, plain.iterations)
    assert pre.iterations <= 5
    x = backend64.to_numpy(pre.x)
    assert np.linalg.norm((A + mu * np.eye(n)) @ x - b) <= 1e-7 * np.linalg.norm(b)


def test_preconditioner_is_spd_and_exact_on_full_rank(backend64):
    n = 12
    A, _ = psd_with_spectrum(np.linspace(0.1, 2, n), 3)
    approx = sl.nystrom(backend64.asarray(A), n, seed=0)
    mu = 0.5
    Pinv = backend64.to_numpy(sl.nystrom_preconditioner(approx, mu).to_dense())
    assert np.linalg.eigvalsh(Pinv).min() > 0
    # with A_hat = A, P^{-1}(A + mu I) = (lam_min + mu) I: one CG iteration suffices
    np.testing.assert_allclose(Pinv @ (A + mu * np.eye(n)), (0.1 + mu) * np.eye(n), atol=1e-9)
    res = sl.pcg(
        backend64.asarray(A),
        backend64.asarray(np.ones(n)),
        mu=mu,
        preconditioner=sl.nystrom_preconditioner(approx, mu),
        rtol=1e-10,
    )
    assert res.iterations <= 2


def test_pcg_misuse(backend):
    A = backend.asarray(np.eye(3))
    with pytest.raises(ValueError, match="mu must be >= 0"):
        sl.pcg(A, backend.asarray(np.ones(3)), mu=-1.0)
    with pytest.raises(ValueError, match=r"shape \(3,\) or \(3, m\)"):
        sl.pcg(A, backend.asarray(np.ones(4)))
    with pytest.raises(ValueError, match="tagged symmetric"):
        sl.pcg(sl.aslinearoperator(A), backend.asarray(np.ones(3)))
    with pytest.raises(ValueError, match="preconditioner has shape"):
        sl.pcg(
            A,
            backend.asarray(np.ones(3)),
            preconditioner=sl.aslinearoperator(backend.asarray(np.eye(2)), psd=True),
        )
    with pytest.raises(TypeError, match="preconditioner must be"):
        sl.pcg(A, backend.asarray(np.ones(3)), preconditioner=3)
    approx = sl.nystrom(A, 2, seed=0)
    with pytest.raises(ValueError, match="mu must be > 0"):
        sl.nystrom_preconditioner(approx, 0.0)
