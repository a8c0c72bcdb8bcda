"""Sparse Jacobians: SparseOperator over scipy / torch / CuPy, SparseDirect, and
least_squares with sparse Jacobians (same answers as with the dense Jacobian)."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

import sketchlinalg as sl
from benchmarks.lsq_sparse import PDEProblem
from sketchlinalg._sparse_fd import SparsityGroups, grouped_fd_jacobian

# (library, format): the sparse matrices each library offers; CUDA ones skip without a device
LIBRARIES = ("scipy", "torch", "torch-cuda", "cupyx")
FORMATS = {"scipy": ("csr", "csc", "coo"), "torch": ("coo", "csr", "csc")}
DTYPES = (np.float32, np.float64)


def _device_library(library: str) -> Any:
    """The module behind ``library``, or skip (not installed, or no device)."""
    if library in ("torch", "torch-cuda"):
        torch = pytest.importorskip("torch")
        if library == "torch-cuda" and not torch.cuda.is_available():
            pytest.skip("torch-cuda: no CUDA device")
        return torch
    if library == "cupyx":
        cupy = pytest.importorskip("cupy")
        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                pytest.skip("cupy: no CUDA device")
        except Exception as err:  # no driver / no device
            pytest.skip(f"cupy: no CUDA device ({type(err).__name__})")
        importlib.import_module("cupyx.scipy.sparse")
        return cupy
    return np


def _sparse(library: str, A: np.ndarray, fmt: str) -> Any:
    """``A`` (dense NumPy) as a sparse matrix of ``library`` in format ``fmt``."""
    mod = _device_library(library)
    if library == "scipy":
        return sp.coo_matrix(A).asformat(fmt)
    if library == "cupyx":
        cs = importlib.import_module("cupyx.scipy.sparse")
        return cs.csr_matrix(mod.asarray(A)).asformat(fmt)
    device = "cuda" if library == "torch-cuda" else "cpu"
    T = mod.asarray(A, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "sparse CSR support is in beta"
        return {"coo": T.to_sparse, "csr": T.to_sparse_csr, "csc": T.to_sparse_csc}[fmt]()


def _vector(library: str, a: np.ndarray) -> Any:
    mod = _device_library(library)
    if library == "scipy":
        return a
    if library == "cupyx":
        return mod.asarray(a)
    return mod.asarray(a, device="cuda" if library == "torch-cuda" else "cpu")


def _numpy(a: Any) -> np.ndarray:
    if hasattr(a, "get"):
        return a.get()
    if hasattr(a, "cpu"):
        return a.cpu().numpy()
    return np.asarray(a)


def _random_sparse(rng: np.random.Generator, m: int, n: int, density: float, dtype: Any):
    A = rng.standard_normal((m, n)) * (rng.random((m, n)) < density)
    A[np.arange(min(m, n)), np.arange(min(m, n))] += 1.0  # no empty column
    return A.astype(dtype)


def _cases() -> list[Any]:
    out = []
    for library in LIBRARIES:
        for fmt in FORMATS.get(library.split("-")[0], ("csr",)):
            for dtype in DTYPES:
                out.append(
                    pytest.param(library, fmt, dtype, id=f"{library}-{fmt}-{dtype.__name__}")
                )
    return out


# ---------------------------------------------------------------------------------
# SparseOperator
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("library", "fmt", "dtype"), _cases())
def test_sparse_operator_matches_dense(library, fmt, dtype):
    rng = np.random.default_rng(0)
    A = _random_sparse(rng, 40, 25, 0.1, dtype)
    op = sl.aslinearoperator(_sparse(library, A, fmt))
    assert isinstance(op, sl.SparseOperator)
    assert op.shape == (40, 25) and op.library == library.split("-")[0]
    assert op.nnz == np.count_nonzero(A)
    eps = np.finfo(dtype).eps
    X = rng.standard_normal((25, 3)).astype(dtype)
    Y = rng.standard_normal((40, 2)).astype(dtype)
    scale = np.abs(A).max() * 25 * eps
    np.testing.assert_allclose(
        _numpy(op.matmat(_vector(library, X))), A @ X, atol=10 * scale * np.abs(X).max()
    )
    np.testing.assert_allclose(
        _numpy(op.rmatmat(_vector(library, Y))), A.T @ Y, atol=10 * scale * np.abs(Y).max()
    )
    np.testing.assert_allclose(_numpy(op.to_dense()), A, rtol=0, atol=0)
    np.testing.assert_allclose(
        _numpy(op.column_norms()), np.linalg.norm(A.astype(np.float64), axis=0), rtol=8 * eps
    )
    w = rng.random(40).astype(dtype)
    c = rng.random(25).astype(dtype)
    scaled = op.scale(rows=_vector(library, w), columns=_vector(library, c))
    assert isinstance(scaled, sl.SparseOperator) and scaled.nnz == op.nnz
    np.testing.assert_allclose(_numpy(scaled.to_dense()), w[:, None] * A * c[None, :], rtol=4 * eps)
    assert op.all_finite()


def test_sparse_operator_sums_duplicates_without_touching_the_input():
    rows, cols, vals = np.array([0, 0, 1]), np.array([1, 1, 0]), np.array([1.0, 2.0, 4.0])
    A = sp.coo_matrix((vals, (rows, cols)), shape=(2, 2))
    op = sl.SparseOperator(A)
    np.testing.assert_array_equal(op.column_norms(), [4.0, 3.0])  # (1 + 2), not sqrt(1 + 4)
    assert A.nnz == 3  # the caller's matrix is unchanged


def test_sparse_operator_nonfinite_entries_are_reported():
    A = sp.csr_matrix(np.array([[1.0, np.nan], [0.0, 2.0]]))
    assert not sl.SparseOperator(A).all_finite()


def test_sparse_operator_bad_input():
    with pytest.raises(TypeError, match="A must be a sparse matrix of"):
        sl.SparseOperator(np.eye(2))
    with pytest.raises(TypeError, match="J's dtype"):
        sl.SparseOperator(sp.csr_matrix(np.eye(2, dtype=np.int64)), "J")
    with pytest.raises(ValueError, match="positive dimensions"):
        sl.SparseOperator(sp.csr_matrix((0, 3)))
    torch = pytest.importorskip("torch")
    with pytest.raises(NotImplementedError, match="torch"):
        sl.SparseOperator(torch.eye(3, dtype=torch.float64).to_sparse()).gram()


def test_sparse_library_recognizes_only_sparse_matrices():
    from sketchlinalg._sparse import sparse_library

    assert sparse_library(sp.csr_matrix(np.eye(2))) == "scipy"
    assert sparse_library(sp.csc_array(np.eye(2))) == "scipy"
    assert sparse_library(np.eye(2)) is None
    assert sparse_library(scipy.sparse.linalg.aslinearoperator(np.eye(2))) is None
    torch = pytest.importorskip("torch")
    assert sparse_library(torch.eye(2).to_sparse()) == "torch"
    assert sparse_library(torch.eye(2)) is None


# ---------------------------------------------------------------------------------
# SparseDirect
# ---------------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**31 - 1),
    m=st.integers(1, 60),
    n=st.integers(1, 40),
    log_mu=st.floats(-8, 2),
    dtype=st.sampled_from(DTYPES),
)
def test_sparse_direct_solves_the_damped_normal_equations(seed, m, n, log_mu, dtype):
    """``(J^T J + mu I) d = J^T r`` to a backward error of a few eps (any pattern, any
    rank, rank-deficient J included), and the same direction as Dense."""
    rng = np.random.default_rng(seed)
    A = (rng.standard_normal((m, n)) * (rng.random((m, n)) < 0.2)).astype(dtype)
    r = rng.standard_normal(m).astype(dtype)
    mu = float(np.max(np.sum(A.astype(np.float64) ** 2, axis=0), initial=1.0)) * 10.0**log_mu
    solver = sl.SparseDirect()
    d, info = solver.solve(solver.init(sp.csr_matrix(A), r), damping=mu)
    assert info.converged and info.method == "sparse-direct" and d.dtype == dtype
    A64 = A.astype(np.float64)
    M = A64.T @ A64 + mu * np.eye(n)
    g = A64.T @ r.astype(np.float64)
    eps = float(np.finfo(dtype).eps)
    residual = np.linalg.norm(M @ d - g)
    assert residual <= 50 * n * eps * (np.linalg.norm(M, 2) * np.linalg.norm(d) + np.linalg.norm(g))
    d64 = d.astype(np.float64)
    expected_pred = float(0.5 * (d64 @ g + mu * d64 @ d64))
    assert float(info.predicted_decrease) == pytest.approx(expected_pred, rel=100 * eps, abs=1e-30)


def test_sparse_direct_matches_dense_and_auto_picks_it():
    rng = np.random.default_rng(1)
    A = _random_sparse(rng, 300, 120, 0.03, np.float64)
    r = rng.standard_normal(300)
    J = sp.csr_matrix(A)
    dense = sl.make_solver("dense")
    d_dense, _ = dense.solve(dense.init(A, r), damping=1e-3)
    for method in ("sparse-direct", "auto"):
        solver = sl.make_solver(method)
        d, info = solver.solve(solver.init(J, r), damping=1e-3)
        np.testing.assert_allclose(d, d_dense, rtol=1e-10, atol=1e-12 * np.abs(d_dense).max())
        assert info.method == "sparse-direct" and "nnz(L + U)" in info.message
    assert (
        "sparse-direct"
        in sl.make_solver("auto").solve(sl.make_solver("auto").init(J, r), damping=1.0)[1].message
    )
    # another right-hand side, and the scale of G (its largest eigenvalue, from below)
    solver = sl.SparseDirect(ordering="COLAMD")
    state = solver.init(J)
    b = rng.standard_normal(300)
    d, _ = solver.solve(state, b, damping=0.5)
    np.testing.assert_allclose((A.T @ A + 0.5 * np.eye(120)) @ d, A.T @ b, rtol=1e-9, atol=1e-9)
    top = np.linalg.eigvalsh(A.T @ A)[-1]
    assert 0.9 * top <= solver.scale(state) <= top * (1 + 1e-12)


def test_sparse_direct_reports_trouble():
    solver = sl.SparseDirect()
    J = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, np.inf]]))
    d, info = solver.solve(solver.init(J, np.ones(2)), damping=1.0)
    assert info.status == sl.Status.NONFINITE and not info.converged
    assert np.all(np.isnan(d))  # flagged, not passed off as a direction
    with pytest.raises(ValueError, match=r"damping must be > 0 with method='sparse-direct'"):
        solver.solve(solver.init(sp.eye(2, format="csr"), np.ones(2)), damping=0.0)
    with pytest.raises(TypeError, match=r"needs J as a scipy\.sparse matrix"):
        solver.init(np.eye(2), np.ones(2))
    with pytest.raises(ValueError, match="ordering must be one of"):
        sl.SparseDirect(ordering="AMD")
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="got torch"):
        solver.init(
            torch.eye(2, dtype=torch.float64).to_sparse(), torch.ones(2, dtype=torch.float64)
        )


# ---------------------------------------------------------------------------------
# least_squares with sparse Jacobians
# ---------------------------------------------------------------------------------


def _chain(x: np.ndarray) -> np.ndarray:
    """A banded nonlinear problem: Rosenbrock-like couplings along a chain (m = 2n - 2)."""
    return np.concatenate([10.0 * (x[1:] - x[:-1] ** 2), 1.0 - x[:-1]])


def _chain_jac(x: np.ndarray) -> sp.csr_matrix:
    n = x.shape[0]
    i = np.arange(n - 1)
    top = sp.coo_matrix(
        (
            np.concatenate([-20.0 * x[:-1], np.full(n - 1, 10.0)]),
            (np.concatenate([i, i]), np.concatenate([i, i + 1])),
        ),
        shape=(n - 1, n),
    )
    bottom = sp.coo_matrix((np.full(n - 1, -1.0), (i, i)), shape=(n - 1, n))
    return sp.vstack([top, bottom]).tocsr()


def test_chain_jacobian_is_right():
    x = np.random.default_rng(2).standard_normal(7)
    fd = scipy.optimize.approx_fprime(x, _chain, 1e-7)
    np.testing.assert_allclose(_chain_jac(x).toarray(), fd, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"x_scale": 1.0},
        {"loss": "soft_l1", "f_scale": 0.5},
        {"bounds": (np.full(30, -0.5), np.full(30, 0.8))},
    ],
    ids=["default", "x_scale", "soft_l1", "bounds"],
)
def test_least_squares_sparse_equals_dense(options):
    x0 = np.full(30, -1.2)
    x0[1::2] = 1.0
    if "bounds" in options:
        x0 = np.clip(x0, -0.5, 0.8)
    dense = sl.least_squares(
        _chain, x0, jac=lambda x: _chain_jac(x).toarray(), direction="dense", **options
    )
    sparse = sl.least_squares(_chain, x0, jac=_chain_jac, **options)
    assert sparse.direction == "sparse-direct"
    assert sparse.status > 0 and dense.status > 0
    assert sp.issparse(sparse.jac)
    assert sparse.cost == pytest.approx(dense.cost, rel=1e-6, abs=1e-20)
    np.testing.assert_allclose(sparse.x, dense.x, rtol=1e-6, atol=1e-8)
    if "bounds" in options:
        np.testing.assert_array_equal(sparse.active_mask, dense.active_mask)


def test_least_squares_pde_reaches_scipy_trf_cost():
    """The benchmark problem, small (n = 4,096): our default reaches scipy trf/lsmr's final
    cost or lower, with at most one more Jacobian, and solves the discrete equations."""
    problem = PDEProblem(64)
    ours = sl.least_squares(problem.fun, problem.x0, jac=problem.jac)
    theirs = scipy.optimize.least_squares(
        problem.fun, problem.x0, jac=problem.jac, method="trf", tr_solver="lsmr"
    )
    assert ours.status > 0 and ours.direction == "sparse-direct"
    assert ours.cost <= theirs.cost
    assert ours.njev <= theirs.njev + 1
    assert np.max(np.abs(ours.x - problem.u_star)) < 1e-9


def test_least_squares_constant_sparse_jac_and_float32():
    rng = np.random.default_rng(3)
    A = _random_sparse(rng, 80, 30, 0.1, np.float32)
    b = rng.standard_normal(80).astype(np.float32)
    J = sp.csc_matrix(A)
    res = sl.least_squares(lambda x: J @ x - b, np.zeros(30, np.float32), jac=J)
    x_ls = np.linalg.lstsq(A.astype(np.float64), b.astype(np.float64), rcond=None)[0]
    assert res.status > 0 and res.x.dtype == np.float32
    np.testing.assert_allclose(res.x, x_ls, rtol=1e-3, atol=1e-3 * np.abs(x_ls).max())


@pytest.mark.parametrize("library", ["torch", "torch-cuda", "cupyx"])
def test_least_squares_device_sparse_uses_pcg(library):
    """torch / CuPy sparse Jacobians take the matrix-free Nystrom-PCG direction and reach
    the same minimizer as scipy's sparse Jacobian."""
    mod = _device_library(library)
    x0 = np.full(20, -1.2)
    x0[1::2] = 1.0
    reference = sl.least_squares(_chain, x0, jac=_chain_jac)

    def fun(x):
        return mod.concatenate([10.0 * (x[1:] - x[:-1] ** 2), 1.0 - x[:-1]])

    def jac(x):
        return _sparse(library, _chain_jac(_numpy(x)).toarray(), "csr")

    res = sl.least_squares(fun, _vector(library, x0), jac=jac)
    assert res.status > 0 and res.direction == "nystrom-pcg"
    np.testing.assert_allclose(_numpy(res.x), reference.x, rtol=1e-6, atol=1e-8)


def test_least_squares_sparse_bad_input():
    x0 = np.zeros(4)
    good = _chain_jac(x0)
    with pytest.raises(ValueError, match=r"jac\(x\) has shape \(5, 4\), expected"):
        sl.least_squares(_chain, x0, jac=lambda x: good[:5])
    with pytest.raises(TypeError, match=r"jac\(x\) has dtype float32"):
        sl.least_squares(_chain, x0, jac=lambda x: good.astype(np.float32))
    with pytest.raises(TypeError, match=r"needs J as a scipy\.sparse matrix"):
        sl.least_squares(
            _chain, x0, jac=lambda x: _chain_jac(x).toarray(), direction="sparse-direct"
        )
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="torch sparse matrix, which multiplies torch arrays"):
        sl.least_squares(_chain, x0, jac=lambda x: torch.tensor(good.toarray()).to_sparse())
    with pytest.raises(TypeError, match=r"needs J as a scipy\.sparse matrix .*, got torch"):
        sl.least_squares(
            lambda x: torch.cat([10.0 * (x[1:] - x[:-1] ** 2), 1.0 - x[:-1]]),
            torch.zeros(4, dtype=torch.float64),
            jac=lambda x: torch.tensor(_chain_jac(x.numpy()).toarray()).to_sparse(),
            direction="sparse-direct",
        )


# ---------------------------------------------------------------------------------
# jac_sparsity: grouped finite differences
# ---------------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**31 - 1),
    m=st.integers(1, 30),
    n=st.integers(1, 30),
    density=st.floats(0.0, 0.5),
)
def test_sparsity_groups_are_structurally_orthogonal(seed, m, n, density):
    rng = np.random.default_rng(seed)
    pattern = rng.random((m, n)) < density
    groups = SparsityGroups(sp.csr_matrix(pattern.astype(float)), (m, n))
    group = np.array(groups.group)
    assert group.shape == (n,) and groups.n_groups == (group.max() + 1 if n else 0)
    for g in range(groups.n_groups):
        # no row has two pattern entries in one group
        assert np.all(pattern[:, group == g].sum(axis=1) <= 1)
    # greedy: a column joins a later group only when each earlier one conflicts with it
    for j in range(n):
        for g in range(group[j]):
            earlier = (group[:j] == g).nonzero()[0]
            assert np.any(pattern[:, earlier][pattern[:, j]].any(axis=1))
    # the dense array-like form gives the same groups
    assert SparsityGroups(pattern.tolist(), (m, n)).group == groups.group


def test_sparsity_groups_of_a_band():
    n = 50
    band = sp.diags([np.ones(n - 1), np.ones(n), np.ones(n - 1)], [-1, 0, 1])
    assert SparsityGroups(band, (n, n)).n_groups == 3


@pytest.mark.parametrize("scheme", ["2-point", "3-point"])
@pytest.mark.parametrize("bounded", [False, True])
def test_grouped_differences_match_the_jacobian(scheme, bounded):
    n = 40
    x = np.linspace(-1.0, 1.5, n)
    pattern = _chain_jac(np.ones(n)) != 0
    groups = SparsityGroups(pattern, (2 * n - 2, n))
    calls = []

    def fun(z):
        calls.append(1)
        return _chain(z)

    lower = upper = None
    if bounded:  # x on the upper bound in some variables, the lower in others
        lower, upper = np.full(n, -1.0), np.full(n, 1.5)
    J = grouped_fd_jacobian(
        fun,
        x,
        _chain(x),
        groups,
        scheme=scheme,
        rel_step=None,
        xp=xp_numpy,
        lower=lower,
        upper=upper,
    )
    assert sp.issparse(J) and J.shape == (2 * n - 2, n)
    assert len(calls) == groups.n_groups * (1 if scheme == "2-point" else 2) < n
    exact = _chain_jac(x).toarray()
    tol = 1e-6 if scheme == "2-point" else 1e-9
    np.testing.assert_allclose(J.toarray(), exact, atol=tol * np.abs(exact).max())


def test_least_squares_with_jac_sparsity():
    n = 200
    x0 = np.full(n, -1.2)
    x0[1::2] = 1.0
    pattern = sp.csr_matrix(_chain_jac(np.ones(n)) != 0)
    calls = []

    def fun(x):
        calls.append(1)
        return _chain(x)

    exact = sl.least_squares(_chain, x0, jac=_chain_jac)
    fd = sl.least_squares(fun, x0, jac_sparsity=pattern)
    assert fd.status > 0 and fd.direction == "sparse-direct" and sp.issparse(fd.jac)
    assert len(calls) <= fd.nfev + 3 * fd.njev  # 2 groups: 2 evaluations per Jacobian
    np.testing.assert_allclose(fd.x, exact.x, rtol=1e-6, atol=1e-8)
    bounded = sl.least_squares(
        fun, np.clip(x0, -0.5, 0.8), jac="3-point", jac_sparsity=pattern, bounds=(-0.5, 0.8)
    )
    reference = sl.least_squares(_chain, np.clip(x0, -0.5, 0.8), jac=_chain_jac, bounds=(-0.5, 0.8))
    assert bounded.status > 0
    np.testing.assert_allclose(bounded.x, reference.x, rtol=1e-6, atol=1e-8)


def test_jac_sparsity_torch_and_errors():
    torch = pytest.importorskip("torch")
    n = 12
    pattern = (_chain_jac(np.ones(n)) != 0).toarray()

    def fun(x):
        return torch.cat([10.0 * (x[1:] - x[:-1] ** 2), 1.0 - x[:-1]])

    x0 = torch.full((n,), 0.5, dtype=torch.float64)
    res = sl.least_squares(fun, x0, jac_sparsity=torch.tensor(pattern))
    assert res.status > 0 and res.direction == "nystrom-pcg"
    assert "sparse" in str(res.jac.layout)
    np.testing.assert_allclose(res.x.numpy(), np.ones(n), atol=1e-6)
    with pytest.raises(ValueError, match=r"jac_sparsity has shape \(3, 3\)"):
        sl.least_squares(_chain, np.zeros(n), jac_sparsity=np.ones((3, 3)))
    with pytest.raises(TypeError, match="jac_sparsity must be a sparse matrix or an array"):
        sl.least_squares(_chain, np.zeros(n), jac_sparsity="banded")
    jnp = pytest.importorskip("jax.numpy")
    with pytest.raises(TypeError, match="jac_sparsity needs x0 of NumPy, CuPy or torch"):
        sl.least_squares(
            lambda x: jnp.concatenate([10.0 * (x[1:] - x[:-1] ** 2), 1.0 - x[:-1]]),
            jnp.zeros(n),
            jac_sparsity=pattern,
        )
