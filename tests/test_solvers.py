"""Direction solvers: one set-up, many damping values; the model decrease; honest statuses."""

from __future__ import annotations

import numpy as np
import pytest

import sketchlinalg as sl

EXACT_OPTIONS = {
    "dense": {},
    "woodbury": {},
    "svd": {},
    "dense-eigh": {"factorization": "eigh"},
    "woodbury-eigh": {"factorization": "eigh"},
}


def _method(name):
    return name.removesuffix("-eigh")


def _problem(N=14, P=9, seed=0):
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((N, P)) * (0.6 ** np.arange(P))[None, :]
    return J, rng.standard_normal(N)


class Counting(sl.LinearOperator):
    """A matrix as an operator that counts its block products (passes over J)."""

    def __init__(self, A):
        import array_api_compat

        xp = array_api_compat.array_namespace(A)
        super().__init__(tuple(A.shape), A.dtype, xp=xp)
        self.A = A
        self.passes = 0

    def _matmat(self, X):
        self.passes += 1
        return self.A @ X

    def _rmatmat(self, Y):
        self.passes += 1
        return self.A.T @ Y


SOLVERS = {
    **EXACT_OPTIONS,
    "nystrom": {"rank": 9},
    "nystrom-projected": {"rank": 9, "inverse": "projected"},
    "kernel-nystrom": {"rank": 14},
}


def _solver(name):
    method = name.removesuffix("-eigh").removesuffix("-projected")
    return sl.make_solver(method, **SOLVERS[name])


@pytest.mark.parametrize("name", list(SOLVERS))
def test_one_setup_solves_for_every_damping_without_touching_J(backend64, name):
    """init touches J; every solve afterwards is a function of the state (kernel-nystrom
    maps back with one product with J^T), and equals the fresh damped solve."""
    J, r = _problem()
    solver = _solver(name)
    op = Counting(backend64.asarray(J))
    state = solver.init(op, backend64.asarray(r), seed=3)
    after_init = op.passes
    assert after_init >= 1
    G = J.T @ J
    scale = np.linalg.norm(G, 2)
    for rel in (1e-3, 1e-1, 10.0):
        mu = rel * scale
        d, info = solver.solve(state, damping=mu)
        ref = np.linalg.solve(G + mu * np.eye(9), J.T @ r)
        if name == "nystrom-projected":  # full rank: the projected inverse is exact too
            pass
        np.testing.assert_allclose(backend64.to_numpy(d), ref, rtol=1e-7, atol=1e-10)
        assert info.status is sl.Status.SUCCESS and info.converged
    per_solve = 1 if name == "kernel-nystrom" else 0
    assert op.passes == after_init + 3 * per_solve


def test_pcg_reuses_its_sketch_across_dampings(backend64):
    J, r = _problem()
    solver = sl.NystromPCG(rank=4, rtol=1e-12, maxiter=100)
    op = Counting(backend64.asarray(J))
    state = solver.init(op, backend64.asarray(r))
    sketch_passes = op.passes
    assert sketch_passes == 2  # J Omega, then J^T [J Omega, r]
    for mu in (1e-2, 1.0):
        d, info = solver.solve(state, damping=mu)
        ref = np.linalg.solve(J.T @ J + mu * np.eye(9), J.T @ r)
        np.testing.assert_allclose(backend64.to_numpy(d), ref, rtol=1e-8)
        assert info.status is sl.Status.SUCCESS and info.iterations >= 1


@pytest.mark.parametrize("name", list(SOLVERS))
def test_predicted_decrease_is_the_decrease_of_the_model(backend64, name):
    """info.predicted_decrease = d.g - 1/2 d^T G_model d, with G_model = G for the exact
    solvers and the sketched G_hat for the Nystrom ones (here of full rank: G_hat = G)."""
    J, r = _problem(seed=1)
    solver = _solver(name)
    mu = 1e-2 * np.linalg.norm(J, 2) ** 2
    d, info = solver(backend64.asarray(J), backend64.asarray(r), damping=mu, seed=2)
    dn = backend64.to_numpy(d)
    model = dn @ (J.T @ r) - 0.5 * np.sum((J @ dn) ** 2)
    np.testing.assert_allclose(float(backend64.to_numpy(info.predicted_decrease)), model, rtol=1e-9)
    slope, curvature = dn @ (J.T @ r), np.sum((J @ dn) ** 2)
    np.testing.assert_allclose(float(backend64.to_numpy(info.slope)), slope, rtol=1e-9)
    np.testing.assert_allclose(float(backend64.to_numpy(info.curvature)), curvature, rtol=1e-8)
    # the scale the damping is relative to: the largest eigenvalue of G, within power-iteration
    # accuracy where it is estimated
    top = np.linalg.eigvalsh(J.T @ J)[-1]
    assert (
        0.9 * top
        <= float(backend64.to_numpy(solver.scale(solver.init(backend64.asarray(J)))))
        <= 1.0000001 * top
    )


def test_low_rank_model_decrease_uses_the_sketch():
    J, r = _problem(N=30, P=20, seed=4)
    solver = sl.Nystrom(rank=5)
    state = solver.init(J, r, seed=0)
    U, lam = state.approx.eigenvectors, state.approx.eigenvalues
    for s in (solver, sl.Nystrom(rank=5, inverse="projected")):
        d, info = s.solve(state, damping=1e-2)
        Ghat = (U * lam) @ U.T
        g = J.T @ r
        np.testing.assert_allclose(info.predicted_decrease, d @ g - 0.5 * d @ Ghat @ d, rtol=1e-10)


@pytest.mark.parametrize(
    "method", ["dense", "woodbury", "svd", "nystrom", "nystrom-pcg", "kernel-nystrom", "auto"]
)
@pytest.mark.parametrize("where", ["J", "r", "overflow"])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's own overflow / invalid warnings
def test_nonfinite_data_is_a_status_never_a_silent_nan(backend, method, where):
    """NaN in J or r, or J scaled to overflow: status NONFINITE, no exception, no success."""
    J, r = _problem()
    if where == "J":
        J[3, 2] = np.nan
    elif where == "r":
        r[5] = np.nan
    else:
        J = J * (1e200 if backend.dtype_name == "float64" else 1e30)
    options = {"rank": 5} if method in ("nystrom", "nystrom-pcg", "kernel-nystrom") else {}
    d, info = sl.natural_gradient_direction(
        backend.asarray(J), backend.asarray(r), damping=1e-3, method=method, **options
    )
    if where == "overflow" and method == "svd":
        # the SVD never forms J^T J: its filter factors stay finite, and so is the answer
        assert info.status is sl.Status.SUCCESS and np.all(np.isfinite(backend.to_numpy(d)))
        return
    assert info.status is sl.Status.NONFINITE, (info.message, info.status)
    assert not info.converged
    assert "NaN/Inf" in info.message


def test_jit_reports_nonfinite_and_falls_back_like_eager():
    """Under jax.jit the status is an array carrying NONFINITE; a failed Cholesky falls back
    to the eigendecomposition exactly as the eager path does."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    J, r = _problem()
    Jn = J.copy()
    Jn[0, 0] = np.nan
    for method in ("dense", "woodbury", "svd", "nystrom"):
        options = {"rank": 5} if method == "nystrom" else {}

        def direction(J, r, method=method, options=options):
            d, info = sl.natural_gradient_direction(J, r, damping=1e-3, method=method, **options)
            return d, info.status

        _, status = jax.jit(direction)(jnp.asarray(Jn), jnp.asarray(r))
        assert int(status) == sl.Status.NONFINITE, method
    # rank-deficient kernel (N > P) and a damping below eps ||K||: Cholesky fails
    rank_deficient = np.repeat(J[:, :3], 3, axis=1)
    for method in ("dense", "woodbury"):

        def direction(J, r, method=method):
            return sl.natural_gradient_direction(J, r, damping=1e-300, method=method)[0]

        eager = direction(jnp.asarray(rank_deficient), jnp.asarray(r))
        traced = jax.jit(direction)(jnp.asarray(rank_deficient), jnp.asarray(r))
        assert np.all(np.isfinite(np.asarray(traced))), method
        np.testing.assert_allclose(np.asarray(traced), np.asarray(eager), rtol=1e-6, atol=1e-9)


def test_solvers_take_only_their_own_options():
    with pytest.raises(TypeError, match=r"method 'woodbury' takes the options .*'rank'"):
        sl.make_solver("woodbury", rank=3)
    with pytest.raises(ValueError, match="oversample must be >= 0, got -1"):
        sl.Nystrom(oversample=-1)
    with pytest.raises(ValueError, match="inverse must be one of"):
        sl.Nystrom(inverse="pinv")
    with pytest.raises(ValueError, match="method must be one of"):
        sl.make_solver("lbfgs")
    s = sl.make_solver("nystrom", rank=np.int64(7))
    assert s.rank == 7 and type(s.rank) is int
    assert sl.make_solver(sl.Method.DENSE) == sl.Dense()
    with pytest.raises(ValueError, match="no right-hand side"):
        sl.Dense().solve(sl.Dense().init(np.eye(3)), damping=1.0)


def test_pcg_stops_at_its_default_cap_with_a_descent_direction(backend64):
    """Without ``maxiter``, CG stops after ``min(100, P)`` iterations: the status says so,
    and the capped iterate is still a descent direction (``g^T d > 0``)."""
    rng = np.random.default_rng(3)
    N, P = 400, 300
    U = np.linalg.qr(rng.standard_normal((N, P)))[0]
    V = np.linalg.qr(rng.standard_normal((P, P)))[0]
    J = backend64.asarray((U * np.logspace(0, -6, P)) @ V.T)
    r = backend64.asarray(rng.standard_normal(N))
    solver = sl.NystromPCG(rank=2, rtol=1e-15)
    state = solver.init(J, r, seed=0)
    d, info = solver.solve(state, damping=1e-12)
    assert int(info.iterations) == 100
    assert info.status == sl.Status.MAX_ITERATIONS and not info.converged
    g = backend64.to_numpy(J).T @ backend64.to_numpy(r)
    assert float(g @ backend64.to_numpy(d)) > 0
    _, info = sl.NystromPCG(rank=2, rtol=1e-15, maxiter=P).solve(state, damping=1e-12)
    assert int(info.iterations) > 100


def test_pcg_status_names_nonfinite_input():
    res = sl.pcg(np.eye(3), np.array([1.0, np.nan, 0.0]), mu=1.0)
    assert int(res.status) == sl.Status.NONFINITE and not res.converged


@pytest.mark.parametrize(("N", "P"), [(14, 9), (9, 14)])
def test_nystrom_at_full_rank_is_the_exact_gram(backend, N, P):
    """A materialized J with ``rank >= min(N, P)``: ``G`` itself from a thin SVD of J (no
    sketch, no randomness), so the direction is the exact damped one."""
    J, r = _problem(N, P, seed=5)
    Jb, rb = backend.asarray(J), backend.asarray(r)
    state = sl.Nystrom(rank=min(N, P)).init(Jb, rb, seed=0)
    assert state.approx.core == "svd" and state.saturated
    G = J.T @ J
    tol = 50 * backend.eps * np.linalg.norm(G, 2)
    np.testing.assert_allclose(backend.to_numpy(state.approx.to_dense()), G, atol=tol)
    d, info = sl.Nystrom(rank=min(N, P)).solve(state, damping=1e-2)
    ref = np.linalg.solve(G + 1e-2 * np.eye(P), J.T @ r)
    np.testing.assert_allclose(backend.to_numpy(d), ref, rtol=1e5 * backend.eps)
    assert info.status is sl.Status.SUCCESS
