"""Error estimates (seeded statistical bounds) and adaptive rank."""

from __future__ import annotations

import numpy as np
import pytest
from spectra import psd_with_spectrum

import sketchlinalg as sl


@pytest.mark.parametrize("decay", ["exponential", "polynomial"])
def test_error_estimate_within_factor_two(backend64, decay):
    """Over 40 seeds: the estimate never exceeds the truth (it is a Rayleigh quotient) and
    is within a factor 2 below it in at least 38 of 40 draws (the Kuczynski-Wozniakowski
    bound gives failure probability <= 0.824 sqrt(n) 2^{-19.5} < 1e-4 per draw at q = 20)."""
    n = 200
    lam = 0.85 ** np.arange(n) if decay == "exponential" else 1.0 / np.arange(1, n + 1) ** 2
    A, _ = psd_with_spectrum(lam, 0)
    Ab = backend64.asarray(A)
    approx = sl.nystrom(Ab, 15, seed=3)
    true = np.linalg.norm(A - backend64.to_numpy(approx.to_dense()), 2)
    ests = np.array(
        [
            float(backend64.to_numpy(sl.estimate_error(Ab, approx, power_iters=20, seed=s)))
            for s in range(40)
        ]
    )
    assert np.all(ests <= true * (1 + 1e-8))
    assert np.sum(ests >= true / 2) >= 38, (ests.min(), true)


def test_error_estimate_is_zero_for_exact_approximation(backend):
    lam = np.zeros(10)
    lam[:3] = [3.0, 2.0, 1.0]
    A, _ = psd_with_spectrum(lam, 1)
    approx = sl.nystrom(backend.asarray(A), 5, seed=0)
    est = float(backend.to_numpy(sl.estimate_error(backend.asarray(A), approx, power_iters=5)))
    assert 0 <= est <= 1e3 * backend.eps * 3


def test_adaptive_rank_reaches_tolerance(backend64):
    n = 300
    lam = 0.7 ** np.arange(n)
    A, _ = psd_with_spectrum(lam, 0)
    mu = 1e-6
    res = sl.adaptive_nystrom(backend64.asarray(A), mu=mu, tol=1.0, rank0=4, seed=0)
    assert res.converged, res.message
    assert res.error_estimate <= mu
    true = np.linalg.norm(A - backend64.to_numpy(res.approx.to_dense()), 2)
    assert true <= 2 * mu  # the estimate is a lower bound: check the truth too
    # doubling from 4 reuses earlier columns: ranks 4, 8, 16, 32, 64 ...
    assert res.ranks[:3] == (4, 8, 16) and res.rank == res.ranks[-1]
    # lam_i <= 1e-6 needs i >= 39: the rank cannot be smaller than that
    assert res.rank >= 39
    assert "tolerance met" in res.message


def test_adaptive_rank_stops_at_cap_and_says_so(backend64):
    n = 100
    A, _ = psd_with_spectrum(np.linspace(0.5, 1.0, n), 0)  # flat: no low-rank structure
    res = sl.adaptive_nystrom(backend64.asarray(A), mu=1e-3, rank0=5, max_rank=40, seed=0)
    assert not res.converged
    assert res.rank == 40 and res.ranks == (5, 10, 20, 40)
    assert "max_rank=40" in res.message and "raise max_rank" in res.message
    assert res.error_estimate > 1e-3


def test_adaptive_misuse():
    A = np.eye(5)
    with pytest.raises(ValueError, match="mu must be > 0"):
        sl.adaptive_nystrom(A, mu=0.0)
    with pytest.raises(ValueError, match="growth must be > 1"):
        sl.adaptive_nystrom(A, mu=1.0, growth=1.0)
    with pytest.raises(ValueError, match="max_rank"):
        sl.adaptive_nystrom(A, mu=1.0, max_rank=6)
    approx = sl.nystrom(A, 2)
    with pytest.raises(ValueError, match="approx has shape"):
        sl.estimate_error(np.eye(6), approx)
    with pytest.raises(ValueError, match="power_iters"):
        sl.estimate_error(A, approx, power_iters=0)
