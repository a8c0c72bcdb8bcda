"""Natural-gradient directions: every method against the dense damped and pseudo-inverse
solutions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sketchlinalg as sl

SKETCHED = ("nystrom", "nystrom-pcg", "kernel-nystrom")


def _problem(N, P, seed):
    rng = np.random.default_rng(seed)
    # decaying column scales, as in PINN Jacobians
    J = rng.standard_normal((N, P)) * (0.7 ** np.arange(P))[None, :]
    return J, rng.standard_normal(N)


@given(
    shape=st.sampled_from([(12, 8), (8, 12)]),
    rel_mu=st.floats(1e-3, 1.0),
    method=st.sampled_from(sl.METHODS),
    seed=st.integers(0, 2**31 - 1),
)
def test_methods_agree_with_dense_damped_solution(backend, shape, rel_mu, method, seed):
    """With rank >= the sketched dimension, every method gives (J^T J + mu I)^{-1} J^T r."""
    N, P = shape
    J, r = _problem(N, P, seed)
    G = J.T @ J
    gnorm = np.linalg.norm(G, 2)
    mu = rel_mu * gnorm
    ref = np.linalg.solve(G + mu * np.eye(P), J.T @ r)
    dim = N if method == "kernel-nystrom" else P
    rtol = 100 * backend.eps
    options = {"rank": dim} if method in SKETCHED else {}
    if method in ("nystrom-pcg", "auto"):
        options.update(rtol=rtol, maxiter=20 * P)
    d, info = sl.natural_gradient_direction(
        backend.asarray(J), backend.asarray(r), damping=mu, method=method, seed=seed, **options
    )
    cond = (gnorm + mu) / mu
    tol = 200 * backend.eps * cond
    if method in SKETCHED:
        # the full-rank sketch reproduces G up to rounding amplified by cond(Omega)^2
        Om = backend.to_numpy(
            sl.sketch_matrix(dim, dim, xp=backend.xp, dtype=backend.dtype, seed=seed)
        )
        tol *= 1 if method == "nystrom-pcg" else np.linalg.cond(Om) ** 2
        # G itself (a thin SVD of J) once the rank reaches min(N, P): rank min(N, P)
        assert info.rank == (dim if method == "kernel-nystrom" else min(N, P))
    if method == "nystrom-pcg":
        assert info.converged, info.message
        tol += 10 * rtol * cond
    got = backend.to_numpy(d)
    assert got.shape == (P,)
    assert np.linalg.norm(got - ref) <= tol * np.linalg.norm(ref), (
        info.message,
        np.linalg.norm(got - ref) / np.linalg.norm(ref),
        tol,
    )
    assert info.method in sl.METHODS and info.method != "auto"


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("dense", {}),
        ("woodbury", {}),
        ("nystrom", {"inverse": "projected", "rank": 10}),
        ("kernel-nystrom", {"inverse": "projected", "rank": 10}),
    ],
)
def test_pseudo_inverse_direction_at_zero_damping(backend64, method, kwargs):
    """mu = 0 on a rank-deficient G (N < P): the ENGD direction G^+ g."""
    N, P = 10, 16
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((N, N)))
    v, _ = np.linalg.qr(rng.standard_normal((P, N)))
    J = (u * np.linspace(0.5, 2.0, N)) @ v.T  # rank N, cond 4
    r = rng.standard_normal(N)
    G, g = J.T @ J, J.T @ r
    ref = np.linalg.pinv(G, rtol=1e-10) @ g
    d, info = sl.natural_gradient_direction(
        backend64.asarray(J), backend64.asarray(r), damping=0.0, method=method, seed=1, **kwargs
    )
    np.testing.assert_allclose(backend64.to_numpy(d), ref, atol=1e-8 * np.abs(ref).max())
    if method in ("dense", "woodbury"):
        assert "pseudo-inverse" in info.message


def test_damped_direction_tends_to_pseudo_inverse(backend64):
    rng = np.random.default_rng(3)
    J = rng.standard_normal((6, 9))
    r = rng.standard_normal(6)
    ref = np.linalg.pinv(J.T @ J) @ (J.T @ r)
    errs = []
    for mu in (1e-2, 1e-4, 1e-6):
        d, _ = sl.natural_gradient_direction(
            backend64.asarray(J), backend64.asarray(r), damping=mu, method="woodbury"
        )
        errs.append(np.linalg.norm(backend64.to_numpy(d) - ref))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-5 * np.linalg.norm(ref)


def test_info_record_of_sketched_methods(backend64):
    J, r = _problem(40, 30, 0)
    mu = 1e-3
    d, info = sl.natural_gradient_direction(
        backend64.asarray(J),
        backend64.asarray(r),
        damping=mu,
        method="nystrom-pcg",
        rank=10,
        error_power_iters=10,
        rtol=1e-10,
    )
    assert info.method == "nystrom-pcg" and info.rank == 10
    assert info.iterations >= 1 and info.converged
    assert float(backend64.to_numpy(info.error_estimate)) >= 0
    deff = float(backend64.to_numpy(info.effective_dimension))
    assert 0 < deff <= 10
    ref = np.linalg.solve(J.T @ J + mu * np.eye(30), J.T @ r)
    np.testing.assert_allclose(backend64.to_numpy(d), ref, rtol=1e-6, atol=1e-8 * np.abs(ref).max())


@pytest.mark.parametrize("method", ["dense", "woodbury", "nystrom", "nystrom-pcg"])
def test_info_carries_the_gradient_it_computed(backend64, method):
    """``info.gradient`` is ``J^T r`` (one fused pass for the sketches), or None."""
    J, r = _problem(40, 30, 1)
    options = {"rank": 10} if method.startswith("nystrom") else {}
    _, info = sl.natural_gradient_direction(
        backend64.asarray(J), backend64.asarray(r), damping=1e-3, method=method, **options
    )
    if method == "woodbury":
        assert info.gradient is None
    else:
        np.testing.assert_allclose(backend64.to_numpy(info.gradient), J.T @ r, rtol=1e-12)


def test_auto_follows_choose_method(backend64):
    J, r = _problem(20, 300, 1)
    _, info = sl.natural_gradient_direction(
        backend64.asarray(J), backend64.asarray(r), damping=1e-6
    )
    expected, _ = sl.choose_method(20, 300, materialized=True)
    assert info.method == expected == "woodbury"
    assert "auto:" in info.message


def test_auto_with_zero_damping_needs_an_exact_method(backend64):
    rng = np.random.default_rng(2)
    J, r = rng.standard_normal((30, 40)), rng.standard_normal(30)  # rank 30, well conditioned
    Jb, rb = backend64.asarray(J), backend64.asarray(r)
    d, info = sl.natural_gradient_direction(Jb, rb, damping=0.0)
    assert info.method in ("dense", "woodbury")
    ref = np.linalg.pinv(J.T @ J) @ (J.T @ r)
    np.testing.assert_allclose(backend64.to_numpy(d), ref, rtol=1e-6, atol=1e-8 * np.abs(ref).max())
    # A budget that holds Nystrom-PCG at rank 2 but neither dense method: PCG needs mu > 0.
    budget = sl.estimate_memory("nystrom-pcg", 30, 40, rank=2).bytes
    assert not sl.estimate_memory("woodbury", 30, 40, memory_budget=budget).fits
    with pytest.raises(ValueError, match="damping=0"):
        sl.natural_gradient_direction(Jb, rb, damping=0.0, rank=2, memory_budget=budget)
    with pytest.raises(ValueError, match="no accurate method fits"):
        sl.natural_gradient_direction(Jb, rb, damping=0.0, memory_budget=100)


def test_choose_method_rule():
    # few residuals: the residual-space solve is exact and cheap
    assert sl.choose_method(900, 4417, rank=300, materialized=True)[0] == "woodbury"
    # many residuals, few parameters: the dense P x P Gram matrix
    assert sl.choose_method(100_000, 200, rank=100, materialized=True)[0] == "dense"
    # a million parameters: no dense method fits in 8 GiB, the rank-100 preconditioner does
    method, reason = sl.choose_method(900, 1_000_000, rank=100, memory_budget=8 * 2**30)
    assert method == "nystrom-pcg"
    assert "fits" in reason
    # ... and in the default 2 GiB not even its P x l sketch fits: an error, not a crash later
    with pytest.raises(ValueError, match="no accurate method fits"):
        sl.choose_method(900, 1_000_000, rank=100)
    # many columns, J only as products: materializing it costs more than PCG
    method, reason = sl.choose_method(2000, 20_000, rank=100, memory_budget=2**40)
    assert method == "nystrom-pcg"
    assert "cheaper" in reason
    # a budget that holds nothing: an error that says what the smallest method needs
    with pytest.raises(ValueError, match=r"no accurate method fits .* nystrom-pcg ~"):
        sl.choose_method(50, 50, memory_budget=1000)


@given(beta=st.floats(0.0, 0.95), seed=st.integers(0, 2**31 - 1))
def test_spring_matches_formula(backend, beta, seed):
    J, r = _problem(7, 11, seed)
    prev = np.random.default_rng(seed + 1).standard_normal(11)
    mu = 0.1
    K = J @ J.T + mu * np.eye(7)
    ref = J.T @ np.linalg.solve(K, r - beta * J @ prev) + beta * prev
    got, info = sl.spring_direction(
        backend.asarray(J), backend.asarray(r), backend.asarray(prev), damping=mu, momentum=beta
    )
    assert int(info.status) == sl.Status.SUCCESS
    cond = np.linalg.cond(K)
    np.testing.assert_allclose(
        backend.to_numpy(got), ref, atol=100 * backend.eps * cond * np.abs(ref).max()
    )


def test_spring_without_momentum_is_woodbury(backend64):
    J, r = _problem(7, 11, 0)
    a, _ = sl.spring_direction(
        backend64.asarray(J),
        backend64.asarray(r),
        backend64.asarray(np.zeros(11)),
        damping=0.1,
        momentum=0.0,
    )
    b, _ = sl.natural_gradient_direction(
        backend64.asarray(J), backend64.asarray(r), damping=0.1, method="woodbury"
    )
    np.testing.assert_allclose(backend64.to_numpy(a), backend64.to_numpy(b), atol=1e-12)


def test_direction_misuse(backend):
    J, r = backend.asarray(np.ones((4, 3))), backend.asarray(np.ones(4))
    with pytest.raises(ValueError, match="method must be one of"):
        sl.natural_gradient_direction(J, r, damping=1.0, method="lbfgs")
    with pytest.raises(ValueError, match=r"r must have shape \(4,\)"):
        sl.natural_gradient_direction(J, backend.asarray(np.ones(3)), damping=1.0)
    with pytest.raises(ValueError, match="damping must be >= 0"):
        sl.natural_gradient_direction(J, r, damping=-1.0)
    with pytest.raises(ValueError, match="damping must be > 0 with method='nystrom-pcg'"):
        sl.natural_gradient_direction(J, r, damping=0.0, method="nystrom-pcg", rank=2)
    with pytest.raises(ValueError, match="damping must be > 0 with method='nystrom' and inv"):
        sl.natural_gradient_direction(J, r, damping=0.0, method="nystrom", rank=2)
    with pytest.raises(TypeError, match=r"method 'dense' takes the options .*unknown .*'rank'"):
        sl.natural_gradient_direction(J, r, damping=1.0, method="dense", rank=2)
    with pytest.raises(ValueError, match="oversample must be >= 0"):
        sl.natural_gradient_direction(J, r, damping=1.0, method="nystrom", oversample=-1)
    with pytest.raises(ValueError, match=r"rank must be in \[1, 3\]"):
        sl.natural_gradient_direction(J, r, damping=1.0, method="nystrom", rank=4)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        sl.spring_direction(J, r, backend.asarray(np.ones(3)), damping=1.0, momentum=1.0)
