"""least_squares: agreement with scipy, the result fields, every backend, stopping, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sketchlinalg as sl
from sketchlinalg._finite_diff import finite_difference_jacobian

scipy_optimize = pytest.importorskip("scipy.optimize")

DIRECTIONS = ("auto", "svd", "dense", "woodbury", "nystrom", "nystrom-pcg", "kernel-nystrom")
TIGHT = {"ftol": 1e-12, "xtol": 1e-12, "gtol": 1e-12}


# -- easy problems in NumPy -----------------------------------------------------------
def rosenbrock(x):
    return np.array([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])


def rosenbrock_jac(x):
    return np.array([[-20.0 * x[0], 10.0], [-1.0, 0.0]])


T = np.linspace(0.0, 4.0, 25)
Y = 3.0 * np.exp(-0.7 * T) + 0.5 + 0.01 * np.sin(7.0 * T)  # a non-zero residual at the optimum


def exp_fit(p):
    return p[0] * np.exp(-p[1] * T) + p[2] - Y


def exp_fit_jac(p):
    e = np.exp(-p[1] * T)
    return np.stack([e, -p[0] * T * e, np.ones_like(T)], axis=1)


PROBLEMS = {
    "rosenbrock": (rosenbrock, rosenbrock_jac, np.array([-1.2, 1.0])),
    "exp-fit": (exp_fit, exp_fit_jac, np.array([1.0, 0.1, 0.0])),
}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_agrees_with_scipy_lm(problem, direction):
    fun, jac, x0 = PROBLEMS[problem]
    ref = scipy_optimize.least_squares(fun, x0, jac=jac, method="lm", **TIGHT)
    res = sl.least_squares(fun, x0, jac=jac, direction=direction, **TIGHT)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-7, atol=1e-9)
    assert res.cost == pytest.approx(ref.cost, rel=1e-9, abs=1e-20)
    # the "auto" choice on a materialized Jacobian is the SVD with a trust region
    assert res.direction == ("svd" if direction == "auto" else direction)


@pytest.mark.parametrize("scheme", ["2-point", "3-point"])
def test_finite_differences_agree_with_scipy(scheme):
    fun, _, x0 = PROBLEMS["exp-fit"]
    ref = scipy_optimize.least_squares(fun, x0, jac=scheme, method="lm", **TIGHT)
    res = sl.least_squares(fun, x0, jac=scheme, **TIGHT)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6)


def test_result_has_scipy_fields_with_their_meaning():
    fun, jac, x0 = PROBLEMS["exp-fit"]
    res = sl.least_squares(fun, x0, jac=jac)
    ref = scipy_optimize.least_squares(fun, x0, jac=jac, method="lm")
    missing = set(ref.keys()) - set(res._fields) - {"active_mask"}
    assert not missing, missing
    assert res.x.shape == x0.shape
    assert isinstance(res.cost, float) and res.cost == pytest.approx(0.5 * res.fun @ res.fun)
    np.testing.assert_array_equal(res.fun, fun(res.x))
    np.testing.assert_allclose(res.jac, jac(res.x), rtol=1e-15)
    np.testing.assert_allclose(res.grad, jac(res.x).T @ fun(res.x), rtol=1e-12, atol=1e-15)
    assert res.optimality == pytest.approx(np.max(np.abs(res.grad)))
    assert isinstance(res.nfev, int) and isinstance(res.njev, int)
    assert 1 <= res.njev <= res.nfev
    assert res.status in (1, 2, 3, 4)
    assert res.success is True
    assert isinstance(res.message, str) and "termination condition" in res.message


# -- every backend -----------------------------------------------------------------------
def _backend_problem(backend):
    xp = backend.xp
    t = backend.asarray(np.linspace(0.0, 2.0, 12))
    y = backend.asarray(2.0 * np.exp(-1.5 * np.linspace(0.0, 2.0, 12)) + 0.25)

    def fun(p):
        return p[0] * xp.exp(-p[1] * t) + p[2] - y

    def jac(p):
        e = xp.exp(-p[1] * t)
        return xp.stack([e, -p[0] * t * e, xp.ones_like(t)], axis=1)

    return fun, jac, backend.asarray([1.0, 1.0, 0.0])


@pytest.mark.parametrize("jac_kind", ["analytic", "2-point"])
def test_every_backend(backend, jac_kind):
    if backend.name == "jax" and jac_kind == "2-point":
        # Eager JAX compiles every new primitive shape (~0.1 s each here); finite
        # differences are array-API code, covered on the three other backends.
        pytest.skip("finite differences on JAX: covered by the other backends (compile time)")
    fun, jac, x0 = _backend_problem(backend)
    res = sl.least_squares(fun, x0, jac=jac if jac_kind == "analytic" else "2-point")
    assert res.success, res.message
    assert res.x.dtype == backend.dtype and res.fun.dtype == backend.dtype
    x = backend.to_numpy(res.x)
    tol = 1e-7 if backend.dtype_name == "float64" else (1e-3 if jac_kind == "2-point" else 1e-4)
    np.testing.assert_allclose(x, [2.0, 1.5, 0.25], rtol=tol, atol=tol)
    assert res.cost < (1e-20 if backend.dtype_name == "float64" else 1e-8)


@pytest.mark.parametrize("direction", ["nystrom", "nystrom-pcg", "dense"])
def test_every_backend_through_direction_methods(backend64, direction):
    if backend64.name == "jax":
        pytest.skip("JAX: the direction methods are tested in test_direction (compile time)")
    fun, jac, x0 = _backend_problem(backend64)
    res = sl.least_squares(fun, x0, jac=jac, direction=direction)
    assert res.success, res.message
    np.testing.assert_allclose(backend64.to_numpy(res.x), [2.0, 1.5, 0.25], rtol=1e-7)


# -- Jacobians as operators -------------------------------------------------------------
def _matrix_free(jac):
    def op(p):
        J = jac(p)
        return sl.FunctionOperator(
            lambda X: J @ X, lambda Y: J.T @ Y, shape=J.shape, dtype=J.dtype, xp=np
        )

    return op


@pytest.mark.parametrize("direction", ["auto", "nystrom", "nystrom-pcg", "kernel-nystrom"])
def test_matrix_free_jacobian(direction):
    fun, jac, x0 = PROBLEMS["exp-fit"]
    ref = scipy_optimize.least_squares(fun, x0, jac=jac, method="lm", **TIGHT)
    res = sl.least_squares(
        fun, x0, jac=_matrix_free(jac), direction=direction, x_scale=1.0, max_nfev=2000, **TIGHT
    )
    assert res.success, res.message
    assert isinstance(res.jac, sl.LinearOperator)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6)


@pytest.mark.parametrize(
    ("direction", "options", "per_point"),
    [
        ("nystrom", {"rank": 3}, 3),  # J Omega, J^T [J Omega, f], and g = J^T f
        ("dense", {}, 2),  # J materialized (to_dense: one product), g = J^T f
        ("woodbury", {}, 2),
        ("kernel-nystrom", {"rank": 10}, 4),  # 2 for K Omega, g, and J^T y per trial
    ],
)
def test_one_factorization_serves_every_damping_trial(direction, options, per_point):
    """Rejected trial steps re-solve the point's factorization or sketch for a new damping:
    the passes over J per Jacobian evaluation do not grow with the number of trials."""
    fun, jac, _ = PROBLEMS["exp-fit"]
    passes: list[list[int]] = []

    def counting_jac(p):
        J = jac(p)
        count = [0]
        passes.append(count)

        def mm(X):
            count[0] += 1
            return J @ X

        def rmm(Y):
            count[0] += 1
            return J.T @ Y

        return sl.FunctionOperator(mm, rmm, shape=J.shape, dtype=J.dtype, xp=np)

    res = sl.least_squares(
        fun,
        np.array([10.0, 3.0, -5.0]),
        jac=counting_jac,
        direction=direction,
        x_scale=1.0,
        direction_options=options,
        initial_damping=1e-8,
        max_nfev=500,
        **TIGHT,
    )
    assert res.success, res.message
    rejected = res.nfev - 1 - res.nit
    assert rejected >= 3  # the far start and the tiny initial damping force rejections
    trials_at = len(passes) - 1  # the last Jacobian only gives the final gradient
    body = [c[0] for c in passes[1:trials_at]]  # the first also runs the power iteration
    if direction == "kernel-nystrom":  # one product with J^T per trial maps y back
        assert sum(body) <= (per_point - 1) * len(body) + res.nfev
    else:
        assert set(body) == {per_point}, body


def test_sketched_direction_below_full_rank_still_converges():
    """A rank-2 sketch of a 3-parameter Gauss–Newton matrix: inexact steps, judged by the
    exact model value, still reach the minimizer (more slowly)."""
    fun, jac, x0 = PROBLEMS["exp-fit"]
    ref = scipy_optimize.least_squares(fun, x0, jac=jac, method="lm", **TIGHT)
    res = sl.least_squares(
        fun,
        x0,
        jac=jac,
        direction="nystrom",
        direction_options={"rank": 2, "seed": 3},
        max_nfev=3000,
        **TIGHT,
    )
    assert res.success, res.message
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6)


def test_matrix_free_jacobian_refuses_jac_scaling():
    fun, jac, x0 = PROBLEMS["exp-fit"]
    with pytest.raises(ValueError, match="x_scale"):
        sl.least_squares(fun, x0, jac=_matrix_free(jac), x_scale="jac")


def test_constant_jacobian_solves_a_linear_problem():
    rng = np.random.default_rng(0)
    A, b = rng.standard_normal((20, 5)), rng.standard_normal(20)
    res = sl.least_squares(lambda x: A @ x - b, np.zeros(5), jac=A)
    np.testing.assert_allclose(res.x, np.linalg.lstsq(A, b, rcond=None)[0], rtol=1e-10)
    assert res.status == 1


@given(
    shape=st.sampled_from([(6, 3), (10, 4), (8, 8)]),
    seed=st.integers(0, 2**31 - 1),
    direction=st.sampled_from(["svd", "dense", "woodbury"]),
)
def test_linear_least_squares_property(shape, seed, direction):
    """For f(x) = A x - b the minimizer is lstsq(A, b), whatever the scaling of A's columns."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3, shape[1])[None, :]
    b = rng.standard_normal(shape[0])
    res = sl.least_squares(lambda x: A @ x - b, np.zeros(shape[1]), jac=A, direction=direction)
    ref = np.linalg.lstsq(A, b, rcond=None)[0]
    assert res.success, res.message
    best = 0.5 * (A @ ref - b) @ (A @ ref - b)
    # equal up to rounding (the square, zero-residual cases: both at rounding level)
    assert abs(res.cost - best) <= 1e-10 * best + 1e-18 * (b @ b)


def test_jac_scaling_is_invariant_to_units():
    """x_scale='jac' (MINPACK's D): rescaling a variable rescales the iterates."""
    fun, jac, x0 = PROBLEMS["exp-fit"]
    c = np.array([1e4, 1e-3, 1.0])
    res = sl.least_squares(fun, x0, jac=jac, **TIGHT)
    res_c = sl.least_squares(
        lambda z: fun(z / c), x0 * c, jac=lambda z: jac(z / c) / c[None, :], **TIGHT
    )
    assert res_c.nfev == res.nfev
    np.testing.assert_allclose(res_c.x / c, res.x, rtol=1e-9)


# -- stopping -------------------------------------------------------------------------------
def test_max_nfev_status_0():
    fun, jac, x0 = PROBLEMS["rosenbrock"]
    res = sl.least_squares(fun, x0, jac=jac, max_nfev=3)
    assert res.status == 0 and not res.success and res.nfev == 3
    assert "maximum number of function evaluations" in res.message


def test_zero_residual_is_gtol_status_1():
    fun, jac, _ = PROBLEMS["rosenbrock"]
    res = sl.least_squares(fun, np.array([1.0, 1.0]), jac=jac)
    assert res.status == 1 and res.nfev == 1 and res.cost == 0.0


def test_finite_difference_evaluations_are_not_counted():
    fun, _, x0 = PROBLEMS["exp-fit"]
    calls = []

    def counted(x):
        calls.append(1)
        return fun(x)

    res = sl.least_squares(counted, x0, jac="3-point")
    assert len(calls) == res.nfev + 2 * x0.size * res.njev


def test_finite_difference_helper_accuracy():
    x = np.array([0.3, -2.0, 5.0])
    exact = exp_fit_jac(x)
    for scheme, tol in (("2-point", 1e-6), ("3-point", 1e-9)):
        J = finite_difference_jacobian(exp_fit, x, exp_fit(x), scheme=scheme, rel_step=None, xp=np)
        assert np.max(np.abs(J - exact)) <= tol * np.max(np.abs(exact))


# -- non-finite residuals during the run -----------------------------------------------------
def _log_fit(x):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(x) - np.log([2.0, 3.0])


def test_nonfinite_trial_points_are_rejected_not_propagated():
    # From x0 = 50 the undamped Gauss–Newton step of log(x) - log(2) lands at x < 0.
    res = sl.least_squares(
        _log_fit, np.array([50.0, 40.0]), jac=lambda x: np.diag(1.0 / x), direction="dense"
    )
    assert res.success, res.message
    assert res.nonfinite_trials >= 1
    assert "non-finite residuals" in res.message
    assert np.all(np.isfinite(res.x)) and np.all(np.isfinite(res.fun))
    np.testing.assert_allclose(res.x, [2.0, 3.0], rtol=1e-8)


def test_residuals_nonfinite_everywhere_but_x0_is_a_numerical_failure():
    x0 = np.array([1.5, -0.5])

    def fun(x):
        return x - 1.0 if np.array_equal(x, x0) else np.full(2, np.nan)

    res = sl.least_squares(fun, x0, jac=lambda x: np.eye(2))
    assert res.status == -3 and not res.success
    np.testing.assert_array_equal(res.x, x0)
    assert "non-finite residuals" in res.message


def test_nonfinite_finite_difference_jacobian_is_reported():
    def fun(x):  # finite at x0 only; the FD steps land on NaN
        return x - 1.0 if np.array_equal(x, np.array([2.0])) else np.array([np.nan])

    res = sl.least_squares(fun, np.array([2.0]))
    assert res.status == -3 and "Jacobian" in res.message
    np.testing.assert_array_equal(res.x, [2.0])


# -- bad input -------------------------------------------------------------------------------
def test_x0_with_nan_names_x0():
    fun, jac, _ = PROBLEMS["rosenbrock"]
    with pytest.raises(ValueError, match="x0"):
        sl.least_squares(fun, np.array([np.nan, 1.0]), jac=jac)


def test_residual_shape_changing_between_calls():
    def fun(x):
        return np.ones(3) * x[0] if x[0] == 2.0 else np.ones(4) * x[0]

    with pytest.raises(ValueError, match="number of residuals must not change"):
        sl.least_squares(fun, np.array([2.0]), jac="2-point")


def test_nonfinite_residuals_at_x0():
    with pytest.raises(ValueError, match="x0"):
        sl.least_squares(lambda x: np.array([np.inf]) * x, np.array([1.0]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "trf"}, ValueError, "bounds"),
        ({"bounds": (5.0, -5.0)}, ValueError, "strictly less than each upper bound"),
        ({"loss": "l1"}, ValueError, "loss"),
        ({"jac": "cs"}, ValueError, "complex"),
        ({"jac": np.ones((3, 2))}, ValueError, r"shape \(3, 2\)"),
        ({"jac": lambda x: np.ones((2, 3))}, ValueError, r"expected \(m, n\) = \(2, 2\)"),
        ({"jac": lambda x: [[1.0, 0.0]]}, TypeError, "a sparse matrix or a LinearOperator"),
        ({"direction": "qr"}, ValueError, "direction"),
        ({"direction_options": {"ranks": 2}}, TypeError, "ranks"),
        ({"ftol": -1.0}, ValueError, "ftol"),
        ({"max_nfev": 0}, ValueError, "max_nfev"),
        ({"x_scale": np.array([1.0, -1.0])}, ValueError, "x_scale"),
        ({"initial_damping": 0.0}, ValueError, "initial_damping"),
        ({"jac": "2-point", "diff_step": 1e-20}, ValueError, "diff_step"),
    ],
)
def test_bad_options(kwargs, error, match):
    fun, jac, x0 = PROBLEMS["rosenbrock"]
    kwargs = {"jac": jac, **kwargs}
    with pytest.raises(error, match=match):
        sl.least_squares(fun, x0, **kwargs)


def test_bad_fun_results():
    x0 = np.array([1.0, 2.0])
    with pytest.raises(TypeError, match="dtype"):
        sl.least_squares(lambda x: np.asarray(x, dtype=np.float32), x0)
    with pytest.raises(ValueError, match="1-D"):
        sl.least_squares(lambda x: np.ones((2, 2)), x0)
    with pytest.raises(TypeError, match="array"):
        sl.least_squares(lambda x: [1.0, 2.0], x0)
    with pytest.raises(TypeError, match="x0"):
        sl.least_squares(rosenbrock, "1.0, 2.0")
    with pytest.raises(ValueError, match="1-D"):
        sl.least_squares(rosenbrock, np.ones((2, 1)))


def test_scalar_x0_and_args():
    res = sl.least_squares(
        lambda x, a, b=0.0: x * x - a + b, np.asarray(3.0), args=(2.0,), kwargs={"b": 0.0}
    )
    assert res.x.shape == (1,)
    assert res.x[0] == pytest.approx(math.sqrt(2.0), rel=1e-8)


# -- the JAX convenience ---------------------------------------------------------------------
def test_jax_pytree_convenience():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from sketchlinalg_jax._least_squares import least_squares as jax_least_squares

    t = jnp.asarray(T)

    def fun(p):
        return p["amp"] * jnp.exp(-p["rate"] * t) + p["offset"][0] - jnp.asarray(Y)

    x0 = {"amp": jnp.asarray(1.0), "rate": jnp.asarray(0.1), "offset": jnp.zeros(1)}
    ref = scipy_optimize.least_squares(exp_fit, np.array([1.0, 0.1, 0.0]), jac=exp_fit_jac)
    for mode in ("dense", "operator"):
        res = jax_least_squares(fun, x0, jacobian=mode, **TIGHT)
        assert res.success, res.message
        got = [float(res.x["amp"]), float(res.x["rate"]), float(res.x["offset"][0])]
        np.testing.assert_allclose(got, ref.x, rtol=1e-6)
        assert set(res.grad) == {"amp", "offset", "rate"}
    with pytest.raises(ValueError, match="x0"):
        jax_least_squares(fun, {**x0, "amp": jnp.asarray(jnp.nan)})
    with pytest.raises(ValueError, match="jacobian"):
        jax_least_squares(fun, x0, jacobian="jacfwd")


def test_result_speaks_the_status_vocabulary():
    fun, jac, x0 = PROBLEMS["exp-fit"]
    assert sl.least_squares(fun, x0, jac=jac).result is sl.Status.SUCCESS
    capped = sl.least_squares(fun, x0, jac=jac, max_nfev=2)
    assert capped.status == 0 and capped.result is sl.Status.MAX_ITERATIONS


def test_nonfinite_jacobian_at_the_final_point_is_not_success():
    """x converges (xtol) to a point where the Jacobian is NaN: status -3, not success."""

    def fun(x):
        return np.array([x[0] - 1.0, 1e-3 * x[1]])

    def jac(x):
        J = np.array([[1.0, 0.0], [0.0, 1e-3]])
        return J if abs(x[0] - 1.0) > 1e-12 else J * np.nan

    res = sl.least_squares(fun, np.array([3.0, 1.0]), jac=jac, x_scale=1.0)
    assert res.status == -3 and not res.success and res.result is sl.Status.NONFINITE


def test_x_scale_array_on_numpy():
    fun, jac, x0 = PROBLEMS["exp-fit"]
    ref = scipy_optimize.least_squares(fun, x0, jac=jac, method="lm", **TIGHT)
    res = sl.least_squares(fun, x0, jac=jac, x_scale=np.array([1.0, 2.0, 0.5]), **TIGHT)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6)
