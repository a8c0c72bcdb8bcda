"""Eager and ``jax.jit`` runs take the same route where a Cholesky factorization fails.

Every method and every optimizer meets a Jacobian of rank 2 (with a duplicated column) whose
Cholesky factorizations fail: the damped Gram or kernel matrix at a tiny damping (dense,
woodbury, auto), and the Nystrom sketch's core at a sketch size near the dimension (nystrom,
nystrom-pcg, kernel-nystrom). Eagerly the failure is caught and an eigendecomposition takes
over; the compiled run must take that fallback too (a NaN factor must not reach the
direction and make the step a silently skipped one), with the same status and the same
direction up to rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import sketchlinalg as sl
from sketchlinalg import _thin_svd
from sketchlinalg._sketched import _Sketched

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax.config.update("jax_enable_x64", True)

N = P = 40
SKETCHED = ("nystrom", "nystrom-pcg", "kernel-nystrom")
#: (method, core): every method, the sketched ones with both Cholesky cores of the sketch.
DIRECTION_CASES = [(m, None) for m in sl.METHODS if m not in SKETCHED] + [
    (m, core) for m in SKETCHED for core in ("cholesky", "auto")
]
#: Seeds tried for a sketch whose core's Cholesky fails (most of them do, at this size).
SEEDS = 16


def _problem(dtype_name: str) -> tuple[np.ndarray, np.ndarray]:
    """``J`` (``N x P``) of rank 2 with its first two columns equal, ``||J||_2 = 1``."""
    rng = np.random.default_rng(0)
    J = rng.standard_normal((N, 2)) @ rng.standard_normal((2, P))
    J[:, 1] = J[:, 0]
    J /= np.linalg.norm(J, 2)
    return J.astype(dtype_name), rng.standard_normal(N).astype(dtype_name)


def _options(method: str, core: str | None) -> dict:
    """A sketch size near the dimension: its core is numerically singular."""
    if method not in SKETCHED:
        return {}
    rank = N - 1 if method == "kernel-nystrom" else P - 1  # below min(N, P): a real sketch
    options = {"rank": rank, "core": core}
    if method == "nystrom-pcg":
        options["maxiter"] = 50
    return options


def _damping(method: str, dtype_name: str) -> float:
    """Tiny for the exact methods (``G + mu I`` does not factorize), ``lam_1`` for the
    sketches: the core fails whatever the damping, and the Woodbury inverse's ``1 / mu``
    on the part of ``g`` outside the sketch would amplify rounding differences."""
    if method in SKETCHED:
        return 1.0
    return 1e8 * float(np.finfo(dtype_name).smallest_normal)


def _tolerance(dtype_name: str) -> float:
    """Norm-wise relative difference allowed between an eager and a compiled direction."""
    return math.sqrt(float(np.finfo(dtype_name).eps))


def _expects_failure(solver: sl.DirectionSolver) -> bool:
    """Whether the solver factors by Cholesky at all (the SVD and the eigh core do not)."""
    if isinstance(solver, sl.SVD):
        return False
    return not (isinstance(solver, _Sketched) and solver.core == "eigh")


def _cholesky_failed(solver: sl.DirectionSolver, J, r, seed, mu) -> bool:
    """Whether an eager set-up and solve at ``seed`` fell back from a failed Cholesky."""
    state = solver.init(J, r, seed=seed)
    if isinstance(solver, _Sketched):
        return "cholesky failed" in state.approx.core
    return "cholesky failed" in solver.solve(state, damping=mu)[1].message


def _failing_seed(solver: sl.DirectionSolver, J, r, mu, seeds) -> object:
    """The first seed whose eager run meets a failed Cholesky (the test's premise)."""
    if not _expects_failure(solver):
        return seeds[0]
    for seed in seeds:
        if _cholesky_failed(solver, J, r, seed, mu):
            return seed
    pytest.fail(f"no Cholesky failure in {len(seeds)} seeds: the problem misses the point")


def _keys() -> list:
    return [jax.random.key(i) for i in range(SEEDS)]


def _assert_close(actual, desired, dtype_name: str) -> None:
    a, d = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(d))
    err = np.linalg.norm(a - d) / max(np.linalg.norm(d), np.finfo(np.float64).tiny)
    assert err <= _tolerance(dtype_name), f"relative difference {err:.2e}"


# -- directions ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@pytest.mark.parametrize(("method", "core"), DIRECTION_CASES, ids=str)
def test_direction_jit_takes_the_eager_fallback(method, core, dtype_name):
    J0, r0 = _problem(dtype_name)
    J, r = jnp.asarray(J0), jnp.asarray(r0)
    options = _options(method, core)
    solver = sl.make_solver(method, **options)
    mu = _damping(method, dtype_name)
    key = _failing_seed(solver, J, r, mu, _keys())

    def direction(J, r, key, mu):
        d, info = sl.natural_gradient_direction(
            J, r, damping=mu, method=method, seed=key, **options
        )
        return d, info.status

    d_eager, status_eager = direction(J, r, key, mu)
    d_jit, status_jit = jax.jit(direction)(J, r, key, mu)
    assert not np.any(np.isnan(np.asarray(d_jit))), "the compiled direction is NaN"
    assert int(status_jit) == int(status_eager) == sl.Status.SUCCESS
    _assert_close(d_jit, d_eager, dtype_name)


def test_thin_svd_failure_takes_the_eager_fallback_under_jit(monkeypatch):
    """The Nystrom factor's SVD (shifted CholeskyQR3) falls back to LAPACK when a pass
    fails: eagerly (a ``None`` pass) and compiled (a NaN pass) alike."""
    J0, r0 = _problem("float64")
    J, r = jnp.asarray(J0), jnp.asarray(r0)
    rank = 4  # P >= TALL_RATIO * rank: the CholeskyQR route
    assert _thin_svd.TALL_RATIO * rank <= P

    def failing_pass(xp, X, zero, shift, tracing, explicit):
        if not tracing:
            return None  # what a failed eager Cholesky gives
        n = X.shape[1]
        return X * math.nan, xp.full((n, n), math.nan, dtype=X.dtype)

    monkeypatch.setattr(_thin_svd, "_cholesky_qr", failing_pass)

    def direction(J, r, key):
        d, info = sl.natural_gradient_direction(
            J, r, damping=1.0, method="nystrom", seed=key, rank=rank
        )
        return d, info.status

    key = jax.random.key(0)
    d_eager, status_eager = direction(J, r, key)
    d_jit, status_jit = jax.jit(direction)(J, r, key)
    assert not np.any(np.isnan(np.asarray(d_jit))), "the compiled direction is NaN"
    assert int(status_jit) == int(status_eager) == sl.Status.SUCCESS
    _assert_close(d_jit, d_eager, "float64")


#: The methods that factor by Cholesky (the sketches with the Cholesky core).
CHOLESKY_CASES = [(m, "cholesky") for m in SKETCHED] + [(m, None) for m in ("dense", "woodbury")]
CHOLESKY_CASES.append(("auto", None))


@pytest.mark.parametrize(("method", "core"), CHOLESKY_CASES, ids=str)
def test_eager_fallback_is_finite_on_every_backend(backend, method, core):
    """Eagerly (every backend) the failed Cholesky falls back: a finite, successful step."""
    J0, r0 = _problem(backend.dtype_name)
    J, r = backend.asarray(J0), backend.asarray(r0)
    options = _options(method, core)
    solver = sl.make_solver(method, **options)
    mu = _damping(method, backend.dtype_name)
    seeds = _keys() if backend.name == "jax" else list(range(SEEDS))
    seed = _failing_seed(solver, J, r, mu, seeds)
    d, info = sl.natural_gradient_direction(J, r, damping=mu, method=method, seed=seed, **options)
    assert np.all(np.isfinite(backend.to_numpy(d)))
    assert info.status is sl.Status.SUCCESS, info.message


# -- steps of the engine and the optimizers --------------------------------------------------

#: (name, method, options): every optimizer of the adapters as they build it (default core),
#: then every method that no optimizer runs with the same options (the sketches with the
#: Cholesky core).
OPTIMIZER_CASES = [
    (name, method, {"momentum": sl.SPRING_MOMENTUM} if name == "spring" else {})
    for name, method in sl.OPTIMIZERS.items()
]
METHOD_CASES = [
    (f"{m}-core_cholesky", m, {"core": "cholesky"}) if m in SKETCHED else (m, m, {})
    for m in sl.METHODS
    if m in SKETCHED or m not in sl.OPTIMIZERS.values()
]
#: (input dtype, linalg_dtype): float64; float32 kept in float32; float32 promoted to float64
#: (the engine's default, for the optimizers).
F64, F32, F32_PROMOTED = ("float64", "float64"), ("float32", None), ("float32", "float64")
ENGINE_CASES = [
    pytest.param(*case, *dtypes, id=f"{case[0]}-{dtypes[0]}-linalg_{dtypes[1]}")
    for cases, all_dtypes in (
        (OPTIMIZER_CASES, (F64, F32, F32_PROMOTED)),
        (METHOD_CASES, (F64, F32)),
    )
    for case in cases
    for dtypes in all_dtypes
]


@pytest.mark.parametrize(("label", "method", "extra", "dtype_name", "linalg"), ENGINE_CASES)
def test_step_jit_takes_the_eager_fallback(label, method, extra, dtype_name, linalg):
    J0, r0 = _problem(dtype_name)
    J, r = jnp.asarray(J0), jnp.asarray(r0)
    options = {**_options(method, extra.get("core", "auto")), **extra}
    mu = _damping(method, dtype_name)
    engine = sl.StepEngine.from_options(
        method, damping=mu, line_search=None, linalg_dtype=linalg, **options
    )
    work = linalg or dtype_name  # the dtype the linear algebra runs in
    Jw, rw = J.astype(work), r.astype(work)
    key = _failing_seed(engine.solver, Jw, rw, mu, _keys())

    def step(theta, state, key):
        update, state, _ = engine.step(J, J @ theta + r, state, seed=key)
        return update, state

    theta = jnp.zeros(P, dtype=J.dtype)
    state = engine.init(theta)
    compiled = jax.jit(step)
    # twice at the same point (a Gauss-Newton step lands on the minimum, where the next
    # direction is rounding noise), the second time with the previous step in the state
    # (SPRING's momentum)
    for _ in range(2):
        eager = step(theta, state, key)
        traced = compiled(theta, state, key)
        assert not np.any(np.isnan(np.asarray(traced[0]))), "the compiled update is NaN"
        assert int(traced[1].status) == int(eager[1].status) == sl.Status.SUCCESS
        assert int(traced[1].skipped) == int(eager[1].skipped) == 0
        _assert_close(traced[0], eager[0], work)
        _assert_close(traced[1].previous, eager[1].previous, work)
        state = eager[1]
