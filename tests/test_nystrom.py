"""Randomized Nystrom: exact invariants (hypothesis), prescribed-spectrum bounds, fallbacks,
misuse."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from spectra import psd_with_spectrum

import sketchlinalg as sl
from sketchlinalg import _dispatch

SPECTRA = ("uniform", "exponential", "polynomial", "low_rank")


def make_spectrum(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return np.sort(rng.uniform(0.1, 1.0, n))[::-1]
    if kind == "exponential":
        return 0.7 ** np.arange(n)
    if kind == "polynomial":
        return 1.0 / np.arange(1, n + 1) ** 2
    lam = np.zeros(n)
    r = max(1, n // 4)
    lam[:r] = np.sort(rng.uniform(0.5, 2.0, r))[::-1]
    return lam


def tolerance(backend, n: int, l: int) -> float:
    # Errors of the shifted algorithm scale with nu = eps ||Y||_F <= eps ||A|| ||Omega||_F
    # (||Omega||_F ~ sqrt(n l)) plus the rounding of the products; margin 20.
    return 20 * backend.eps * np.sqrt(n * l) * 10


@given(
    n=st.sampled_from([12, 30]),
    frac=st.sampled_from([0.25, 0.5, 1.0]),  # shape buckets: every new shape recompiles JAX
    kind=st.sampled_from(SPECTRA),
    sketch=st.sampled_from(sl.SKETCH_KINDS),
    seed=st.integers(0, 2**31 - 1),
)
def test_nystrom_invariants(backend, n, frac, kind, sketch, seed):
    """A_hat Omega = A Omega; A_hat PSD; A - A_hat PSD; U orthonormal; lam >= 0 descending."""
    rng = np.random.default_rng(seed)
    l = max(1, int(frac * n))
    A, _ = psd_with_spectrum(make_spectrum(kind, n, rng), seed)
    approx = sl.nystrom(backend.asarray(A), l, sketch=sketch, seed=seed)
    Omega = backend.to_numpy(
        sl.sketch_matrix(n, l, xp=backend.xp, dtype=backend.dtype, kind=sketch, seed=seed)
    )
    U = backend.to_numpy(approx.eigenvectors)
    lam = backend.to_numpy(approx.eigenvalues)
    Ahat = backend.to_numpy(approx.to_dense())
    scale = np.linalg.norm(A, 2)
    tol = tolerance(backend, n, l)
    assert U.shape == (n, l) and lam.shape == (l,)
    assert np.all(lam >= 0) and np.all(np.diff(lam) <= tol * scale)
    np.testing.assert_allclose(U.T @ U, np.eye(l), atol=tol * 10)
    # interpolation of the sketch, relative to ||A|| ||Omega||
    err = np.linalg.norm(Ahat @ Omega - A @ Omega) / (scale * np.linalg.norm(Omega))
    assert err <= tol, err
    assert np.linalg.eigvalsh((Ahat + Ahat.T) / 2).min() >= -tol * scale
    # A - A_hat is PSD in exact arithmetic; rounding in the l x l core is amplified by
    # cond(Omega)^2 (measured over 800 cases: violation <= 0.5 eps sqrt(n l) cond(Omega)^2).
    kappa2 = np.linalg.cond(Omega) ** 2
    assert np.linalg.eigvalsh(A - (Ahat + Ahat.T) / 2).min() >= -tol * kappa2 * scale


@given(
    n=st.sampled_from([10, 25]),
    r=st.sampled_from([1, 3, 8]),
    extra=st.sampled_from([0, 2]),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31 - 1),
)
def test_exact_recovery_when_rank_fits(backend, n, r, extra, scale, seed):
    """rank(A) <= l: A_hat = A up to rounding, amplified by cond(Q^T Omega)^2."""
    rng = np.random.default_rng(seed)
    lam = np.zeros(n)
    lam[:r] = scale * rng.uniform(0.2, 3.0, r)
    A, Q = psd_with_spectrum(lam, seed)
    l = min(n, r + extra)
    approx = sl.nystrom(backend.asarray(A), l, seed=seed + 1)
    Omega = backend.to_numpy(
        sl.sketch_matrix(n, l, xp=backend.xp, dtype=backend.dtype, seed=seed + 1)
    )
    # Exact in exact arithmetic; numerically the error grows with the conditioning of the
    # sketch restricted to range(A) (and with lam_max / lam_min on it).
    kappa = np.linalg.cond(Q[:, :r].T @ Omega) ** 2 * lam[:r].max() / lam[:r].min()
    tol = tolerance(backend, n, l) * kappa
    err = np.linalg.norm(backend.to_numpy(approx.to_dense()) - A, 2) / np.linalg.norm(A, 2)
    assert err <= tol, (err, tol)
    # the non-zero eigenvalues are recovered
    np.testing.assert_allclose(
        backend.to_numpy(approx.eigenvalues)[:r], np.sort(lam)[::-1][:r], atol=tol * lam.max()
    )


@pytest.mark.parametrize(
    ("spectrum", "k", "p"),
    [
        ("exponential", 10, 5),
        ("exponential", 10, 10),
        ("polynomial", 10, 5),
        ("polynomial", 20, 10),
    ],
)
def test_error_within_tropp_bound_on_prescribed_spectra(backend64, spectrum, k, p):
    """E ||A - A_hat||_* <= (1 + k/(p-1)) sum_{i>k} lam_i  (Tropp et al. 2017, Thm 4.1).

    20 fixed seeds: the sample mean must sit below the expectation bound and every draw
    below twice it. The nuclear error of a PSD residual is its trace.
    """
    n = 300
    lam = 0.8 ** np.arange(n) if spectrum == "exponential" else 1.0 / np.arange(1, n + 1) ** 2
    A, _ = psd_with_spectrum(lam, 0)
    Ab = backend64.asarray(A)
    bound = (1 + k / (p - 1)) * lam[k:].sum()
    errors = []
    for seed in range(20):
        approx = sl.nystrom(Ab, k + p, seed=seed)
        errors.append(np.trace(A) - backend64.to_numpy(approx.eigenvalues).sum())
    errors = np.array(errors)
    assert errors.mean() <= bound, (errors.mean(), bound)
    assert errors.max() <= 2 * bound, (errors.max(), bound)
    # and never better than optimal: ||A - A_hat||_* >= sum_{i > k+p} lam_i
    assert errors.min() >= lam[k + p :].sum() * (1 - 1e-6)


def test_oversampling_truncates_to_rank(backend64):
    lam = 0.5 ** np.arange(40)
    A, _ = psd_with_spectrum(lam, 1)
    approx = sl.nystrom(backend64.asarray(A), 5, oversample=10, seed=0)
    assert approx.rank == 5
    err = np.linalg.norm(backend64.to_numpy(approx.to_dense()) - A, 2)
    assert err <= 1.5 * lam[5]  # near the optimal rank-5 error lam_6


def test_cholesky_failure_falls_back_and_says_so(backend):
    """A zero column in Omega makes the core singular: the eigh fallback must take over."""
    n, l = 20, 6
    lam = np.linspace(1, 2, n)
    A, _ = psd_with_spectrum(lam, 3)
    Omega = np.random.default_rng(0).standard_normal((n, l))
    Omega[:, 2] = 0.0
    approx = sl.nystrom(backend.asarray(A), l, sketch=backend.asarray(Omega))
    assert approx.core == "eigh (cholesky failed)"
    Ahat = backend.to_numpy(approx.to_dense())
    assert np.all(np.isfinite(Ahat))
    tol = tolerance(backend, n, l) * 10
    np.testing.assert_allclose(Ahat @ Omega, A @ Omega, atol=tol * np.linalg.norm(Omega))
    assert np.linalg.eigvalsh(A - Ahat).min() >= -tol


@pytest.mark.parametrize("core", ["cholesky", "eigh"])
def test_cores_agree(backend64, core):
    A, _ = psd_with_spectrum(0.6 ** np.arange(30), 4)
    a = sl.nystrom(backend64.asarray(A), 8, seed=2, core=core)
    b = sl.nystrom(backend64.asarray(A), 8, seed=2)
    assert a.core == core
    np.testing.assert_allclose(
        backend64.to_numpy(a.to_dense()), backend64.to_numpy(b.to_dense()), atol=1e-10
    )


def test_forced_cholesky_failure_via_dispatch(monkeypatch):
    A, _ = psd_with_spectrum(np.linspace(1, 2, 15), 5)
    monkeypatch.setattr(_dispatch, "cholesky", lambda xp, M: None)
    approx = sl.nystrom(A, 5, seed=0)
    assert approx.core == "eigh (cholesky failed)"
    assert np.linalg.eigvalsh(A - approx.to_dense()).min() >= -1e-12


def test_zero_operator_gives_zero_approximation(backend):
    approx = sl.nystrom(backend.asarray(np.zeros((8, 8))), 3, seed=0)
    assert np.all(np.isfinite(backend.to_numpy(approx.eigenvectors)))
    np.testing.assert_allclose(backend.to_numpy(approx.eigenvalues), 0.0, atol=backend.eps)


def test_nystrom_misuse(backend):
    A = backend.asarray(np.eye(5))
    with pytest.raises(ValueError, match=r"rank must be in \[1, 5\], got 0"):
        sl.nystrom(A, 0)
    with pytest.raises(ValueError, match=r"rank must be in \[1, 5\], got 6"):
        sl.nystrom(A, 6)
    with pytest.raises(TypeError, match="rank must be an int"):
        sl.nystrom(A, 2.5)
    with pytest.raises(ValueError, match="square 2-D"):
        sl.nystrom(backend.asarray(np.ones((5, 4))), 2)
    with pytest.raises(ValueError, match="tagged PSD"):
        sl.nystrom(sl.aslinearoperator(A), 2)
    with pytest.raises(ValueError, match="core must be one of"):
        sl.nystrom(A, 2, core="qr")
    with pytest.raises(ValueError, match=r"sketch array must have shape \(5, l\)"):
        sl.nystrom(A, 3, sketch=backend.asarray(np.ones((5, 2))))
    bad = np.eye(5)
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or Inf.*check the operator"):
        sl.nystrom(backend.asarray(bad), 2)


def test_nystrom_on_gram_of_function_operator(backend64):
    """Adapters hand in block-product callables: the Gram view of them must sketch alike."""
    rng = np.random.default_rng(0)
    J = rng.standard_normal((15, 40)) * (0.5 ** np.arange(40))
    Jb = backend64.asarray(J)
    op = sl.FunctionOperator(
        lambda X: Jb @ X, lambda Y: Jb.T @ Y, shape=(15, 40), dtype=backend64.dtype, xp=backend64.xp
    )
    approx = sl.nystrom(sl.gram(op), 15, seed=1)
    np.testing.assert_allclose(backend64.to_numpy(approx.to_dense()), J.T @ J, atol=1e-9)
