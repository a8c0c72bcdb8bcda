"""The step engine and its line searches, on every backend: written once, used by both
adapters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import sketchlinalg as sl


def _quadratic(backend, theta0, d):
    """Trial losses of ``1/2 (theta - eta d - 0.4)^2`` summed, as a batched callback."""
    t0, dd = backend.asarray(theta0), backend.asarray(d)

    def trial(etas):
        pts = t0[None, :] - etas[:, None] * dd[None, :]
        return 0.5 * backend.xp.sum((pts - 0.4) ** 2, axis=1)

    return trial


# -- line searches -------------------------------------------------------------------------


def test_grid_line_search_takes_the_best_lower_point(backend):
    trial = _quadratic(backend, np.ones(3), np.ones(3))  # theta - eta = 0.4 at eta = 0.6
    loss0 = backend.asarray(np.asarray(0.5 * 3 * 0.36))
    res = sl.grid_line_search(trial, loss0)
    assert float(backend.to_numpy(res.step_size)) == 0.5 and res.status is sl.Status.SUCCESS
    assert float(backend.to_numpy(res.loss)) == pytest.approx(0.5 * 3 * 0.01, rel=1e-6)
    assert res.evaluations == 31


@pytest.mark.parametrize("batch", [None, 1, 4])
def test_grid_line_search_never_goes_uphill_and_ignores_nonfinite(backend, batch):
    xp = backend.xp
    loss0 = backend.asarray(np.asarray(1.0))
    up = sl.grid_line_search(lambda etas: 1.0 + etas, loss0, num=5, batch=batch)
    assert float(backend.to_numpy(up.step_size)) == 0.0 and up.status is sl.Status.NO_DECREASE
    assert int(backend.to_numpy(xp.asarray(up.evaluations))) == 5  # nothing below: all tried
    assert float(backend.to_numpy(up.loss)) == 1.0

    def nan_for_long_steps(etas):  # NaN for eta >= 1/4, else (1 - eta - 0.875)^2 + 0.5
        ok = etas < 0.2
        return xp.where(ok, (0.125 - etas) ** 2 + 0.5, xp.full_like(etas, float("nan")))

    res = sl.grid_line_search(nan_for_long_steps, loss0, num=6, batch=batch)
    assert float(backend.to_numpy(res.step_size)) == 0.125
    nan0 = sl.grid_line_search(lambda e: e, backend.asarray(np.asarray(np.nan)), num=3, batch=batch)
    assert nan0.status is sl.Status.NONFINITE and float(backend.to_numpy(nan0.step_size)) == 0


def _unimodal_ray(k, curvature):
    """Trial losses ``c (eta - eta*)^2 - c eta*^2 + 1`` with ``eta* = 0.7 * 2^-k`` (falling
    from 1, then rising) and the list of batch sizes they were called with."""
    star = 0.7 * 2.0**-k
    calls = []

    def trial(etas):
        calls.append(etas.shape[0])
        return curvature * ((etas - star) ** 2 - star**2) + 1.0

    return trial, calls


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(0, 33),
    batch=st.integers(1, 9),
    num=st.integers(1, 31),
    curvature=st.floats(0.1, 10.0),
)
def test_early_stopping_grid_returns_the_full_grids_choice_on_a_unimodal_loss(
    k, batch, num, curvature
):
    """Along a ray the loss ``c (eta - eta*)^2 - c eta*^2 + 1`` falls, bottoms out at
    ``eta* = 0.7 * 2^-k`` and rises: the batched search stops once it has seen the rise, with
    the full grid's step, and a step of ``2^-j`` costs ``j + 2`` evaluations one by one."""
    trial, calls = _unimodal_ray(k, curvature)
    loss0 = np.asarray(1.0)
    full = sl.grid_line_search(trial, loss0, num=num)
    calls.clear()
    early = sl.grid_line_search(trial, loss0, num=num, batch=batch)
    assert float(early.step_size) == float(full.step_size)
    assert float(early.loss) == float(full.loss) and early.status is full.status
    assert float(early.first_loss) == float(full.first_loss)
    assert all(c == batch for c in calls) and int(early.evaluations) == min(sum(calls), num)
    if full.status is sl.Status.SUCCESS:
        j = round(-np.log2(float(full.step_size)))
        assert sum(calls) == batch * -(-min(j + 2, num) // batch)


@settings(max_examples=80, deadline=None)
@given(
    k=st.integers(0, 33),
    start=st.integers(0, 40),
    batch=st.integers(1, 6),
    num=st.integers(1, 31),
    curvature=st.floats(0.1, 10.0),
)
def test_warm_started_grid_returns_the_full_grids_choice_on_a_unimodal_loss(
    k, start, batch, num, curvature
):
    """From any start the search goes down, then up, until the minimum of a unimodal loss
    is bracketed: the full grid's step, in ``|j - start| + 3`` evaluations or fewer one by
    one (a step of ``2^-j``; ``start`` is clipped to the grid)."""
    trial, calls = _unimodal_ray(k, curvature)
    loss0 = np.asarray(1.0)
    full = sl.grid_line_search(trial, loss0, num=num)
    calls.clear()
    warm = sl.grid_line_search(trial, loss0, num=num, batch=batch, start=start)
    made = list(calls)
    assert float(warm.step_size) == float(full.step_size)
    assert float(warm.loss) == float(full.loss) and warm.status is full.status
    s = min(start, num - 1)
    assert float(warm.first_loss) == float(trial(np.asarray([0.5**s]))[0])
    assert all(c == batch for c in made) and int(warm.evaluations) <= sum(made)
    if full.status is sl.Status.SUCCESS and batch == 1:
        j = round(-np.log2(float(full.step_size)))
        assert sum(made) <= abs(j - s) + 3


def test_warm_started_grid_on_every_backend(backend):
    """The loss ``(0.4 - 0.6 eta)^2``-like ray of :func:`_quadratic` has its grid minimum
    at ``eta = 1/2``: from ``start = 4`` the search goes down once (1/16, 1/32: worse) and
    then up to 1/2 (1/4 better, 1/2 better, 1 worse); a traced start under ``jax.jit``."""
    trial = _quadratic(backend, np.ones(3), np.ones(3))
    loss0 = backend.asarray(np.asarray(0.5 * 3 * 0.36))
    res = sl.grid_line_search(trial, loss0, batch=1, start=4)
    assert float(backend.to_numpy(res.step_size)) == 0.5 and res.status is sl.Status.SUCCESS
    assert int(backend.to_numpy(backend.xp.asarray(res.evaluations))) == 6
    with pytest.raises(ValueError, match="start must be"):
        sl.grid_line_search(trial, loss0, batch=1, start=backend.asarray(np.zeros(2)))
    with pytest.raises(ValueError, match="start"):
        sl.grid_line_search(trial, loss0, batch=1, start=-1)


def test_warm_started_grid_traces_under_jit():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    @jax.jit
    def search(x, start):
        res = sl.grid_line_search(lambda e: (x - 4.0 * e) ** 2, x**2, batch=1, start=start)
        return res.step_size, res.evaluations

    for start in (0, 2, 7):
        eta, n = search(jnp.asarray(1.0), jnp.asarray(start))
        assert float(eta) == 0.25
        assert int(n) == {0: 4, 2: 3, 7: 8}[start]  # 7, 8 | 6, 5, 4, 3, 2, 1


@settings(max_examples=60, deadline=None)
@given(
    table=st.lists(
        st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0, np.nan, np.inf]), min_size=12, max_size=12
    ),
    loss0=st.sampled_from([1.0, 2.0, np.nan]),
    num=st.integers(1, 12),
    batch=st.integers(1, 5),
    start=st.integers(0, 14),
)
@example(table=[1.0] * 12, loss0=2.0, num=12, batch=3, start=0)  # ties: the larger step
@example(table=[3.0, 1.0, 2.0, 0.5, 3.0] + [1.0] * 7, loss0=2.0, num=12, batch=2, start=6)
def test_grid_eager_and_traced_make_the_same_choices(table, loss0, num, batch, start):
    """The early-stopping grid runs over Python numbers eagerly and over 0-d arrays under
    ``jax.jit``: on any losses along the grid (ties, dips, NaN, inf) both take the same
    step, loss, status and count of evaluations."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    values = np.asarray(table)

    def eager_trial(etas):
        return values[np.rint(-np.log2(etas)).astype(int)]

    def traced_trial(etas):
        return jnp.asarray(values)[jnp.rint(-jnp.log2(etas)).astype(jnp.int32)]

    @jax.jit
    def traced(l0, k):
        res = sl.grid_line_search(traced_trial, l0, num=num, batch=batch, start=k)
        return res.step_size, res.loss, res.status, res.evaluations, res.first_loss

    eager = sl.grid_line_search(eager_trial, np.asarray(loss0), num=num, batch=batch, start=start)
    eta, loss, status, count, first = traced(jnp.asarray(loss0), jnp.asarray(start))
    assert float(eager.step_size) == float(eta)
    np.testing.assert_array_equal(float(eager.loss), float(loss))
    assert int(eager.status) == int(status) and int(eager.evaluations) == int(count)
    np.testing.assert_array_equal(float(eager.first_loss), float(first))


def test_armijo_line_search(backend):
    loss0 = backend.asarray(np.asarray(9.0))
    # L(eta) = (3 - 6 eta)^2 along d = 6 (the gradient of x^2 at 3): eta = 1/2 exact
    res = sl.armijo_line_search(lambda e: (3.0 - 6.0 * e) ** 2, loss0, 36.0)
    assert float(backend.to_numpy(res.step_size)) == 0.5 and res.status is sl.Status.SUCCESS
    assert int(backend.to_numpy(res.evaluations)) == 2
    bad = sl.armijo_line_search(lambda e: (3.0 + 6.0 * e) ** 2, loss0, -36.0, max_halvings=4)
    assert float(backend.to_numpy(bad.step_size)) == 0 and bad.status is sl.Status.NO_DECREASE
    with pytest.raises(ValueError, match=r"c must be in \(0, 1\)"):
        sl.armijo_line_search(lambda e: e, loss0, 1.0, c=1.0)


def test_line_searches_trace_under_jit():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    @jax.jit
    def both(x):
        def trial(etas):
            return (x - 4.0 * etas) ** 2

        g = sl.grid_line_search(trial, x**2)
        e = sl.grid_line_search(trial, x**2, batch=2)
        a = sl.armijo_line_search(trial, x**2, 8.0 * x)
        return g.step_size, g.status, e.step_size, e.evaluations, a.step_size, a.status

    g, gs, e, ne, a, as_ = both(jnp.asarray(1.0))
    assert float(g) == float(e) == 0.25 and float(a) == 0.25 and int(gs) == int(as_) == 0
    assert int(ne) == 4  # eta = 1, 1/2 | 1/4, 1/8: bracketed


# -- the engine ------------------------------------------------------------------------------


def _linear(backend, seed=0, N=12, P=5):
    rng = np.random.default_rng(seed)
    A, y = rng.standard_normal((N, P)), rng.standard_normal(N)
    return A, y, backend.asarray(A), backend.asarray(y)


@pytest.mark.parametrize("line_search", [None, "grid", "armijo"])
def test_one_gauss_newton_step_solves_a_linear_problem(backend64, line_search):
    A, y, Ab, yb = _linear(backend64)
    engine = sl.StepEngine(sl.Dense(), damping=0.0, line_search=line_search)
    theta = backend64.asarray(np.zeros(5))

    def trial(etas, d):
        moved = theta[None, :] - etas[:, None] * d[None, :]
        res = moved @ Ab.T - yb[None, :]
        return 0.5 * backend64.xp.sum(res * res, axis=1)

    update, state, info = engine.step(Ab, Ab @ theta - yb, engine.init(theta), trial_loss=trial)
    ref = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(backend64.to_numpy(theta + update), ref, rtol=1e-10)
    assert info.status is sl.Status.SUCCESS and int(backend64.to_numpy(state.steps)) == 1
    assert float(backend64.to_numpy(state.step_size)) == 1.0


def test_momentum_is_springs_recursion(backend64):
    A, _, Ab, yb = _linear(backend64, seed=1, N=6, P=9)
    engine = sl.StepEngine(sl.Woodbury(), damping=0.1, line_search=None, momentum=0.5)
    theta = backend64.asarray(np.zeros(9))
    state = engine.init(theta)
    prev = np.zeros(9)
    for _ in range(3):
        r = Ab @ theta - yb
        update, state, _ = engine.step(Ab, r, state)
        ref, _ = sl.spring_direction(A, backend64.to_numpy(r), prev, damping=0.1, momentum=0.5)
        np.testing.assert_allclose(-backend64.to_numpy(update), ref, rtol=1e-10, atol=1e-12)
        prev = ref
        theta = theta + update


def test_momentum_remembers_the_step_taken_not_the_raw_direction(backend64):
    """With a line search, SPRING's phi is the step taken, ``eta d``: a direction the line
    search had to shorten is not carried at full length into the next one."""
    _, _, Ab, yb = _linear(backend64, seed=2, N=6, P=9)
    engine = sl.StepEngine(sl.Woodbury(), damping=1e-3, line_search="grid", momentum=0.5)
    theta = backend64.asarray(np.zeros(9))
    state = engine.init(theta)
    for _ in range(3):
        # the residual is 2 A theta - y but J = A: the full step overshoots twofold
        def trial(etas, d, theta=theta):
            res = 2.0 * (Ab @ (theta[:, None] - d[:, None] * etas[None, :])) - yb[:, None]
            return 0.5 * backend64.xp.sum(res * res, axis=0)

        r = 2.0 * (Ab @ theta) - yb
        update, state, info = engine.step(Ab, r, state, trial_loss=trial)
        assert info.status is sl.Status.SUCCESS and float(info.step_size) < 1.0
        np.testing.assert_allclose(
            backend64.to_numpy(state.previous), -backend64.to_numpy(update), rtol=1e-12
        )
        theta = theta + update


def test_warm_started_grid_takes_the_same_steps_for_fewer_evaluations(backend64):
    """Gauss–Newton on ``r = 8 A theta + sin(A theta) - y`` with ``J = A`` (an eighth of
    the curvature, so the best steps are about ``1/8``): along each step the loss falls
    and rises once, so the grid started at the last step size chooses what the grid from
    ``eta = 1`` chooses, in fewer evaluations (3 instead of 5 for a step of 1/8)."""
    _, _, Ab, yb = _linear(backend64, seed=3, N=12, P=5)
    xp = backend64.xp

    def residual(theta):
        z = Ab @ theta
        return 8.0 * z + xp.sin(z) - yb

    runs = {}
    for warm in (False, True):
        engine = sl.StepEngine(sl.Dense(), damping=1e-6, grid_warm_start=warm)
        theta = backend64.asarray(np.zeros(5))
        state, etas, count = engine.init(theta), [], [0]
        for _ in range(3):

            def trial(e, d, theta=theta, count=count):
                count[0] += int(e.shape[0])
                res = [residual(theta - float(eta) * d) for eta in backend64.to_numpy(e)]
                return xp.stack([0.5 * xp.sum(v * v) for v in res])

            update, state, info = engine.step(Ab, residual(theta), state, trial_loss=trial)
            etas.append(float(backend64.to_numpy(info.step_size)))
            theta = theta + update
        runs[warm] = (etas, count[0], backend64.to_numpy(theta))
    assert runs[True][0] == runs[False][0], runs
    assert all(0 < e < 1 for e in runs[True][0]), runs
    np.testing.assert_array_equal(runs[True][2], runs[False][2])
    assert runs[True][1] < runs[False][1], runs


def test_nonfinite_step_is_skipped_counted_and_warned(backend):
    _, _, Ab, yb = _linear(backend)
    engine = sl.StepEngine(sl.Nystrom(rank=3), damping=1e-3, line_search=None)
    state = engine.init(backend.asarray(np.zeros(5)))
    r = backend.asarray(np.where(np.arange(12) == 4, np.nan, 1.0))
    with pytest.warns(sl.StepWarning, match="not taken"):
        update, state, info = engine.step(Ab, r, state)
    assert np.all(backend.to_numpy(update) == 0)
    assert int(backend.to_numpy(state.skipped)) == 1 and info.status is sl.Status.NONFINITE
    assert int(backend.to_numpy(state.status)) == sl.Status.NONFINITE
    with pytest.warns(sl.StepWarning):
        update, state, info = engine.step(Ab * float("nan"), yb, state)
    assert int(backend.to_numpy(state.skipped)) == 2 and np.all(backend.to_numpy(update) == 0)


def test_an_uphill_direction_is_not_taken(backend64):
    _, _, Ab, yb = _linear(backend64)
    engine = sl.StepEngine(sl.Dense(), damping=0.0, line_search="grid", grid_size=5)
    theta = backend64.asarray(np.zeros(5))
    update, state, info = engine.step(
        Ab, Ab @ theta - yb, engine.init(theta), trial_loss=lambda etas, d: 100.0 + etas
    )
    assert info.status is sl.Status.NO_DECREASE and np.all(backend64.to_numpy(update) == 0)
    assert int(backend64.to_numpy(state.skipped)) == 0  # not a NaN: not "skipped"


def test_learning_rate_scales_the_step_and_may_be_per_parameter(backend64):
    _, _, Ab, yb = _linear(backend64)
    theta = backend64.asarray(np.zeros(5))
    steps = {}
    for lr in (1.0, 0.25):
        engine = sl.StepEngine(sl.Dense(), damping=1e-3, line_search=None, learning_rate=lr)
        steps[lr] = backend64.to_numpy(engine.step(Ab, Ab @ theta - yb, engine.init(theta))[0])
    np.testing.assert_allclose(steps[0.25], 0.25 * steps[1.0], rtol=1e-14)
    engine = sl.StepEngine(sl.Dense(), damping=1e-3, line_search=None)
    rates = np.array([1.0, 0.0, 2.0, 1.0, 0.5])
    per = engine.step(
        Ab, Ab @ theta - yb, engine.init(theta), learning_rate=backend64.asarray(rates)
    )
    np.testing.assert_allclose(backend64.to_numpy(per[0]), rates * steps[1.0], rtol=1e-14)


def test_engine_options_are_checked_once():
    with pytest.raises(TypeError, match="solver must be a DirectionSolver"):
        sl.StepEngine("nystrom")
    with pytest.raises(ValueError, match="damping must be > 0 with method='nystrom-pcg'"):
        sl.StepEngine(sl.NystromPCG(), damping=0.0)
    with pytest.raises(ValueError, match="line_search must be one of"):
        sl.StepEngine(sl.Dense(), line_search="wolfe")
    with pytest.raises(ValueError, match="learning_rate must be >= 0"):
        sl.StepEngine(sl.Dense(), learning_rate=-1.0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        sl.StepEngine(sl.Woodbury(), momentum=1.0)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['inverse'\] for method 'dense'"):
        sl.StepEngine.from_options("dense", inverse="projected")
    with pytest.raises(ValueError, match=r"linalg_dtype must be one of \('float64', None\)"):
        sl.StepEngine(sl.Dense(), linalg_dtype="float16")
    with pytest.raises(TypeError, match="grid_warm_start must be True or False, got 1"):
        sl.StepEngine(sl.Dense(), grid_warm_start=1)
    assert not sl.StepEngine.from_options("dense", grid_warm_start=False).grid_warm_start
    engine = sl.StepEngine.from_options("nystrom", rank=7, damping=1e-4, momentum=0.5)
    assert engine.solver == sl.Nystrom(rank=7) and engine.momentum == 0.5
    assert sl.StepEngine.from_options("dense", linalg_dtype=None).linalg_dtype is None


def _float32(backend, a):
    """NumPy data rounded to float32, as an array of ``backend`` (float32)."""
    a = np.asarray(a, dtype=np.float32)
    if backend.name == "torch":
        import torch

        return torch.from_numpy(a.copy())
    return backend.xp.asarray(a)


def test_float32_step_is_the_float64_step_of_the_same_data(backend64):
    """With ``linalg_dtype="float64"`` (default) a float32 step is the float64 step of the
    same (exactly representable) J and r, rounded once; update, state and losses stay
    float32."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((12, 5)).astype(np.float32)
    y = rng.standard_normal(12).astype(np.float32)
    # a damping float32 holds exactly (the state keeps it in the parameters' dtype)
    engine = sl.StepEngine(sl.Nystrom(rank=3), damping=2.0**-10, line_search=None)
    theta32 = _float32(backend64, np.zeros(5))
    u32, s32, info = engine.step(
        _float32(backend64, A), _float32(backend64, y), engine.init(theta32), seed=5
    )
    u64, s64, _ = engine.step(
        backend64.asarray(A), backend64.asarray(y), engine.init(backend64.asarray(np.zeros(5))),
        seed=5,
    )  # fmt: skip
    assert u32.dtype == backend64.xp.float32 and info.loss.dtype == backend64.xp.float32
    assert all(v.dtype in (backend64.xp.float32, backend64.xp.int32) for v in s32), [
        v.dtype for v in s32
    ]
    expected = backend64.to_numpy(u64).astype(np.float32)
    np.testing.assert_array_equal(backend64.to_numpy(u32).astype(np.float32), expected)
    np.testing.assert_array_equal(
        backend64.to_numpy(s32.damping).astype(np.float32),
        backend64.to_numpy(s64.damping).astype(np.float32),
    )


def test_float32_gauss_newton_step_resolves_what_j_holds(backend64):
    """cond(J) = 1e4: the Gram's 1e8 is beyond float32 (``eps_32 cond(G) ~ 12``), not beyond
    float64. The promoted step solves the float32 problem to float64's accuracy; kept in
    float32 (``linalg_dtype=None``) it cannot."""
    rng = np.random.default_rng(4)
    U, _ = np.linalg.qr(rng.standard_normal((40, 10)))
    V, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    A = ((U * np.logspace(0, -4, 10)) @ V.T).astype(np.float32)
    y = (A.astype(np.float64) @ rng.standard_normal(10)).astype(np.float32)
    ref = np.linalg.lstsq(A.astype(np.float64), y.astype(np.float64), rcond=None)[0]
    errors = {}
    for dtype in ("float64", None):
        engine = sl.StepEngine(sl.Dense(), damping=0.0, line_search=None, linalg_dtype=dtype)
        theta = _float32(backend64, np.zeros(10))
        update, _, _ = engine.step(
            _float32(backend64, A), -_float32(backend64, y), engine.init(theta)
        )
        d = backend64.to_numpy(update)
        errors[dtype] = np.linalg.norm(d - ref) / np.linalg.norm(ref)
    # float64 solve of cond(G) = 1e8, then one rounding to float32
    assert errors["float64"] < 1e-5, errors
    assert errors[None] > 1e-3, errors


def test_has_float64_asks_the_backend():
    import array_api_compat.numpy as xp

    from sketchlinalg import _dispatch

    class NoDouble:
        float64 = "float64"

        @staticmethod
        def zeros(shape, dtype=None, device=None):
            raise TypeError("float64 is not supported on this device")

    assert _dispatch.has_float64(xp) and not _dispatch.has_float64(NoDouble)


def _jax_linear_step(engine, A, y):
    """One engine step on ``0.5 ||A theta - y||^2`` in JAX, with a vectorized trial loss."""
    import jax.numpy as jnp

    def step(theta, state, key):
        def trial(etas, d):
            res = (theta[None, :] - etas[:, None] * d[None, :]) @ A.T - y[None, :]
            return 0.5 * jnp.sum(res * res, axis=1)

        update, state, _ = engine.step(A, A @ theta - y, state, trial_loss=trial, seed=key)
        return update, state

    return step


def test_engine_traces_under_jit_like_eager():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    rng = np.random.default_rng(2)
    A = jnp.asarray(rng.standard_normal((12, 5)))
    y = jnp.asarray(rng.standard_normal(12))
    for solver in (sl.Dense(), sl.Woodbury(), sl.Nystrom(rank=5), sl.NystromPCG(rank=3)):
        engine = sl.StepEngine(solver, damping=1e-3, line_search="armijo", momentum=0.3)
        step = _jax_linear_step(engine, A, y)

        theta = jnp.zeros(5)
        key = jax.random.key(0)
        eager = step(theta, engine.init(theta), key)
        traced = jax.jit(step)(theta, engine.init(theta), key)
        np.testing.assert_allclose(np.asarray(traced[0]), np.asarray(eager[0]), rtol=1e-9)
        assert int(traced[1].status) == int(eager[1].status) == 0


# -- the adaptive damping and rank -------------------------------------------------------------


def _curve_fit(backend, seed=0, n=40):
    """Fit ``a exp(-b t) + c``: a small nonlinear least-squares problem, its residual and
    Jacobian as functions of the parameters, and a batched trial loss."""
    xp = backend.xp
    t = backend.asarray(np.linspace(0.0, 3.0, n))
    y = 2.0 * xp.exp(-1.3 * t) + 0.5

    def residual(p):
        return p[0] * xp.exp(-p[1] * t) + p[2] - y

    def jacobian(p):
        e = xp.exp(-p[1] * t)
        return xp.stack([e, -p[0] * t * e, xp.ones_like(t)], axis=1)

    def trial(theta):
        def losses(etas, d):
            return xp.stack([0.5 * xp.sum(residual(theta - eta * d) ** 2) for eta in etas])

        return losses

    return residual, jacobian, trial


@pytest.mark.parametrize("line_search", ["grid", None])
def test_adaptive_damping_starts_relative_to_the_spectrum_and_converges(backend64, line_search):
    residual, jacobian, trial = _curve_fit(backend64)
    engine = sl.StepEngine(sl.Dense(), line_search=line_search)  # damping="adaptive"
    assert engine.adaptive_damping and engine.needs_trial_loss
    theta = backend64.asarray(np.array([1.0, 1.0, 0.0]))
    state = engine.init(theta)
    J = jacobian(theta)
    lam1 = np.linalg.eigvalsh(backend64.to_numpy(J).T @ backend64.to_numpy(J))[-1]
    update, state, info = engine.step(J, residual(theta), state, trial_loss=trial(theta))
    # the first trial's damping is tau lam_1 (tau = 1e-3)
    assert float(backend64.to_numpy(info.damping)) == pytest.approx(1e-3 * lam1, rel=1e-6)
    mus = [float(backend64.to_numpy(state.damping))]
    theta = theta + update
    for _ in range(30):
        update, state, info = engine.step(
            jacobian(theta), residual(theta), state, trial_loss=trial(theta)
        )
        theta = theta + update
        mus.append(float(backend64.to_numpy(state.damping)))
    np.testing.assert_allclose(backend64.to_numpy(theta), [2.0, 1.3, 0.5], rtol=1e-6)
    eps = np.finfo(np.float64).eps
    assert min(mus) < 1e-6 * lam1 and min(mus) >= 0.99 * 100 * eps * lam1 * 1e-3
    assert info.status in (sl.Status.SUCCESS, sl.Status.NO_DECREASE)


def test_no_decrease_raises_the_damping_from_the_same_setup(backend64):
    """A trial whose loss goes up is re-solved with mu * nu (the sketch or factorization is
    reused: J is touched once), up to max_trials, and the step is then not taken."""
    A = backend64.asarray(np.random.default_rng(0).standard_normal((12, 5)))
    y = backend64.asarray(np.ones(12))
    theta = backend64.asarray(np.zeros(5))
    engine = sl.StepEngine(sl.Dense(), line_search=None, max_trials=3)
    calls = []

    def uphill(etas, d):
        calls.append(1)
        return 1e6 + etas  # never below the loss

    update, state, info = engine.step(A, A @ theta - y, engine.init(theta), trial_loss=uphill)
    assert info.status is sl.Status.NO_DECREASE and np.all(backend64.to_numpy(update) == 0)
    assert len(calls) == 3 and int(backend64.to_numpy(info.trials)) == 3
    # trials at mu0, 2 mu0, 8 mu0 (Nielsen: nu = 2, 4, 8); the next step starts at 64 mu0
    # with nu = 16
    mu_last = float(backend64.to_numpy(info.damping))
    assert float(backend64.to_numpy(state.damping)) == pytest.approx(8.0 * mu_last)
    assert float(backend64.to_numpy(state.nu)) == 16.0


def _adaptive_run(backend, engine, singular_values, N, P, steps, seed):
    """Steps of ``engine`` on the linear problem ``A theta = y``, ``A = U diag(s) V^T`` with a
    prescribed spectrum (``min(N, P)`` singular values): the sketch sizes it chose, the last
    info, ``theta``, ``A`` and ``y`` (NumPy) and the ladder."""
    rng = np.random.default_rng(seed)
    k = min(N, P)
    U = np.linalg.qr(rng.standard_normal((N, k)))[0]
    V = np.linalg.qr(rng.standard_normal((P, k)))[0]
    A_np = (U * singular_values(k)) @ V.T
    y_np = rng.standard_normal(N)
    A, y = backend.asarray(A_np), backend.asarray(y_np)
    assert engine.adaptive_rank
    ladder = engine._ladder(sl.aslinearoperator(A), backend.xp, sl.default_budget(A))
    theta = backend.asarray(np.zeros(P))
    state, ranks, info = engine.init(theta), [], None
    for k in range(steps):

        def trial(etas, d, theta=theta):  # the exact loss of the linear problem
            res = A @ (theta[:, None] - d[:, None] * etas[None, :]) - y[:, None]
            return 0.5 * backend.xp.sum(res * res, axis=0)

        update, state, info = engine.step(A, A @ theta - y, state, trial_loss=trial, seed=k)
        theta = theta + update
        ranks.append(int(backend.to_numpy(state.rank)))
    return ranks, info, backend.to_numpy(theta), A_np, y_np, ladder


def test_adaptive_rank_climbs_when_the_sketch_misses_curvature(backend64):
    """A Gram matrix with a slowly decaying spectrum and a damping that falls: the sketch
    grows from its first size and stays on its ladder (here 25 ... 200: beyond, a sketch
    would cost more than twice an exact solve), and says once that it is capped."""
    engine = sl.StepEngine(sl.Nystrom(), line_search="grid")
    with pytest.warns(sl.StepWarning, match="sketch capped at rank 200 of 1000"):
        ranks, info, *_, ladder = _adaptive_run(
            backend64, engine, lambda P: 0.99 ** np.arange(P), 2000, 1000, steps=8, seed=1
        )
    assert ladder == [25, 50, 100, 200]
    assert max(ranks) == 200 and set(ranks) <= {25, 50, 100, 200}, ranks
    assert info.rank in (100, 200)


def test_a_capped_sketch_says_so_once(backend64, monkeypatch):
    """A ladder that stops below ``min(N, P)`` (here forced to 25 and 50; in use, by the
    memory budget) while ``d_eff`` wants more: one warning naming the cap, then a bit in
    ``state.warned``; the run goes on."""
    monkeypatch.setattr(sl.StepEngine, "_ladder", lambda self, J, xp, budget: [25, 50])
    engine = sl.StepEngine(sl.Nystrom(), line_search="grid")
    with pytest.warns(sl.StepWarning, match="sketch capped at rank 50 of 150") as seen:
        ranks, info, *_ = _adaptive_run(
            backend64, engine, lambda P: np.ones(P), 300, 150, steps=4, seed=2
        )
    assert sum("capped" in str(w.message) for w in seen) == 1
    assert ranks[-1] == 50 and info.status is sl.Status.SUCCESS


def test_small_problem_sketch_grows_to_the_exact_gram(backend64):
    """Below CHEAP_FLOPS every size is affordable: the ladder ends at ``min(N, P)``, where
    the "sketch" is ``G`` itself (a thin SVD of ``J``). A flat spectrum (``d_eff`` above
    half of every smaller rank) climbs there and the step is Gauss-Newton's."""
    engine = sl.StepEngine(sl.Nystrom(), damping=1e-12, line_search="grid")
    ranks, info, theta, A, y, ladder = _adaptive_run(
        backend64, engine, lambda P: 0.98 ** np.arange(P), 300, 200, steps=6, seed=3
    )
    assert ladder == [25, 50, 100, 200]
    assert ranks == [200] * 6, ranks  # from 100, the first step asks for more
    assert info.direction.message.endswith("core svd")
    assert np.linalg.norm(A.T @ (A @ theta - y)) <= 1e-8 * np.linalg.norm(A.T @ y)


@pytest.mark.parametrize("solver", [sl.Nystrom(), sl.NystromPCG()], ids=["sngd", "pcg"])
def test_sketched_ladder_ends_at_the_exact_gram_in_residual_form(backend64, solver):
    """With fewer residuals than parameters (an explicit ``J``, ``N = 300 < P = 1500``) the
    sizes a sketch can afford stop at 100, and the ladder's top is ``N`` itself: ``G``
    solved as ``J^T (J J^T + mu I)^{-1} r``. A flat spectrum climbs there (SNGD: ``d_eff``
    above half the sketch; Nystrom-PCG: CG needs many iterations), and the steps are
    Gauss-Newton's: the underdetermined system is solved."""
    engine = sl.StepEngine(solver, damping=1e-12, line_search="grid")
    ranks, info, theta, A, y, ladder = _adaptive_run(
        backend64, engine, lambda k: 0.995 ** np.arange(k), 300, 1500, steps=4, seed=5
    )
    assert ladder == [25, 50, 100, 300]
    assert ranks[-1] == 300 and info.rank == 300, ranks
    assert "exact top rung" in info.direction.message
    assert np.linalg.norm(A @ theta - y) <= 1e-8 * np.linalg.norm(y)


def test_the_exact_top_rung_is_the_damped_gauss_newton_direction(backend64):
    """At the top, :class:`ExactTop` returns ``(G + mu I)^{-1} J^T b`` (to rounding), with
    ``d_eff`` and the scale of ``G``'s spectrum; below it, Nystrom's sketch."""
    from sketchlinalg._sketched import ExactTop

    rng = np.random.default_rng(6)
    A = rng.standard_normal((40, 90)) * 0.8 ** np.arange(90)[None, :]
    b = rng.standard_normal(40)
    J = sl.aslinearoperator(backend64.asarray(A))
    rb = backend64.asarray(b)
    solver = ExactTop(sl.Nystrom())
    top = solver.init_top(J, rb)
    G = A.T @ A
    lam = np.linalg.eigvalsh(G)
    for mu in (1e-1, 1e-6):
        d, info = solver.solve(top, damping=mu)
        want = np.linalg.solve(G + mu * np.eye(90), A.T @ b)
        np.testing.assert_allclose(backend64.to_numpy(d), want, rtol=1e-6, atol=1e-9)
        deff = np.sum(lam / (lam + mu))
        assert float(backend64.to_numpy(info.effective_dimension)) == pytest.approx(deff, 1e-8)
    assert float(backend64.to_numpy(solver.scale(top))) == pytest.approx(lam[-1], rel=1e-10)
    assert float(solver.damping_floor(top)) == 0 and bool(solver.saturated(top))
    below = solver.init_sketch(sl.Nystrom(rank=10).init(J, rb, seed=0))
    d_s, _ = solver.solve(below, damping=1e-3)
    d_n, _ = sl.Nystrom(rank=10).solve(below.sketch, damping=1e-3)
    np.testing.assert_array_equal(backend64.to_numpy(d_s), backend64.to_numpy(d_n))


def _pcg_ranks(backend, singular_values, N, P, steps=3):
    """The sizes an adaptive Nystrom-PCG preconditioner takes on a linear problem."""
    engine = sl.StepEngine(sl.NystromPCG(), damping=1e-10, line_search="grid")
    return _adaptive_run(backend, engine, singular_values, N, P, steps, seed=4)[0]


def test_adaptive_pcg_preconditioner_follows_cg_iterations(backend64):
    """Nystrom-PCG's sketch is a preconditioner: it grows while CG needs more than
    PCG_GROW_ITERATIONS iterations (a flat spectrum) and shrinks when CG converges at once
    and d_eff is far below it (a spectrum of rank 4)."""
    from sketchlinalg._step import PCG_GROW_ITERATIONS

    if backend64.name == "jax":
        pytest.skip("JAX: the same engine code as the other backends; eagerly it compiles 30 s")
    assert PCG_GROW_ITERATIONS == 25
    flat = _pcg_ranks(backend64, lambda P: np.logspace(0, -4, P), 800, 800)
    assert flat[0] == 200, flat  # from the first size, 100 (ladder 25 ... 200)
    low = _pcg_ranks(backend64, lambda P: np.r_[np.ones(4), np.zeros(P - 4)], 600, 400)
    assert low[0] == 50 and low == sorted(low, reverse=True), low


def test_stall_is_reported_once_with_what_was_tried():
    A, y = np.eye(3), np.ones(3)
    engine = sl.StepEngine(sl.Dense(), damping=1e-3, line_search=None, stall_window=3)
    theta = np.zeros(3)
    state = engine.init(theta)
    warnings_seen = []
    for _ in range(6):
        with _capture(warnings_seen):
            _, state, info = engine.step(A, A @ theta - y, state)  # theta never moves
    stalled = [w for w in warnings_seen if "stalled" in str(w.message)]
    assert len(stalled) == 1 and "damping 1.00e-03" in str(stalled[0].message)
    assert info.status is sl.Status.STALLED and int(state.since_best) >= 3


def test_compiled_steps_warn_as_eager_steps_do(monkeypatch):
    """Under ``jax.jit`` the step warns as it does eagerly (a host callback on the steps
    that have something to say): a step not taken, a stall once per episode, a capped
    sketch once per run; the warning points at the caller's line."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def run(engine, A, r_of, steps, compiled):
        def one(r, state):
            update, state, _ = engine.step(A, r, state, trial_loss=trial, seed=0)
            return update, state

        def trial(etas, d):
            res = A @ (-d[:, None] * etas[None, :]) - y[:, None]
            return 0.5 * jnp.sum(res * res, axis=0)

        fn = jax.jit(one) if compiled else one
        state, seen = engine.init(jnp.zeros(A.shape[1])), []
        for k in range(steps):
            with _capture(seen):
                update, state = fn(r_of(k), state)
                jax.block_until_ready(update)
        return [str(w.message) for w in seen], [w.filename for w in seen], state

    # NaN in the residual: "not taken" on each such step, from the caller's line
    A, y = jnp.eye(3), jnp.ones(3)
    engine = sl.StepEngine(sl.Dense(), damping=1e-3, line_search=None, stall_window=3)
    nan = jnp.where(jnp.arange(3) == 1, jnp.nan, 1.0)
    for compiled in (False, True):
        msgs, files, state = run(engine, A, lambda k: nan if k < 2 else -y, 6, compiled)
        assert sum("not taken" in m for m in msgs) == 2, (compiled, msgs)
        assert sum("stalled" in m for m in msgs) == 1, (compiled, msgs)  # steps 2..5 stall
        assert set(files) == {__file__}, files
        assert int(state.skipped) == 2
    # a capped sketch: once per run, compiled or not
    monkeypatch.setattr(sl.StepEngine, "_ladder", lambda self, J, xp, budget: [25, 50])
    rng = np.random.default_rng(2)
    A = jnp.asarray(np.linalg.qr(rng.standard_normal((300, 150)))[0])
    y = jnp.asarray(rng.standard_normal(300))
    engine = sl.StepEngine(sl.Nystrom(), line_search="grid")
    for compiled in (False, True):
        msgs, _, _ = run(engine, A, lambda k: -y, 3, compiled)
        assert sum("sketch capped at rank 50 of 150" in m for m in msgs) == 1, (compiled, msgs)


class _capture:
    def __init__(self, sink):
        self.sink = sink

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self._log = self._cm.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self.sink.extend(self._log)
        return self._cm.__exit__(*exc)


def test_adaptive_engine_traces_under_jit_like_eager():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    rng = np.random.default_rng(2)
    # SNGD's ladders: [25, 50, 60] starts at its exact top (60 is nearest the first size,
    # 100); [25, 50, 100, 150] starts on a sketch and climbs to the exact top
    cases = [(sl.Woodbury(), 60, 80, 3), (sl.Nystrom(), 60, 80, 3), (sl.Nystrom(), 150, 200, 4)]
    cases.append((sl.NystromPCG(), 150, 200, 3))
    for solver, N, P, steps in cases:
        A = jnp.asarray(rng.standard_normal((N, P)) * 0.97 ** np.arange(P)[None, :])
        y = jnp.asarray(rng.standard_normal(N))
        engine = sl.StepEngine(solver, line_search="grid")
        step = _jax_linear_step(engine, A, y)

        theta = jnp.zeros(P)
        state = engine.init(theta)
        jitted = jax.jit(step)
        ranks = []
        for k in range(steps):
            key = jax.random.key(k)
            eager = step(theta, state, key)
            traced = jitted(theta, state, key)
            # CG stops at a relative residual sqrt(eps): XLA's rounding moves its iterate
            rtol = 1e-5 if isinstance(solver, sl.NystromPCG) else 1e-8
            np.testing.assert_allclose(np.asarray(traced[0]), np.asarray(eager[0]), rtol=rtol)
            for a, b in zip(eager[1], traced[1], strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol)
            theta, state = theta + eager[0], eager[1]
            ranks.append(int(state.rank))
        if N == 150 and isinstance(solver, sl.Nystrom):
            assert ranks[0] in (100, 150) and ranks[-1] == 150, ranks
