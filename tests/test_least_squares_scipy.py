"""least_squares at scipy parity: robust losses, the forms of x0 and bounds, verbose,
callback, and every keyword of ``scipy.optimize.least_squares`` (supported or refused)."""

from __future__ import annotations

import inspect
import itertools
import math

import array_api_compat.numpy as xnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sketchlinalg as sl
from sketchlinalg._least_squares import LeastSquaresIteration
from sketchlinalg._lsq_loss import _BUILTIN, make_loss

scipy_optimize = pytest.importorskip("scipy.optimize")

TIGHT = {"ftol": 1e-12, "xtol": 1e-12, "gtol": 1e-12}
ROBUST = ("soft_l1", "huber", "cauchy", "arctan")
EPS = float(np.finfo(np.float64).eps)

# -- exponential decay with 10% gross outliers ---------------------------------------------
_rng = np.random.default_rng(0)
T = np.linspace(0.0, 4.0, 60)
Y = 3.0 * np.exp(-0.8 * T) + 0.5 + 0.05 * _rng.standard_normal(T.size)
_OUTLIERS = _rng.choice(T.size, T.size // 10, replace=False)
Y[_OUTLIERS] += _rng.choice([-1.0, 1.0], _OUTLIERS.size) * _rng.uniform(2.0, 4.0, _OUTLIERS.size)
X0 = np.array([1.0, 1.0, 0.0])


def decay(p, y=Y):
    # the first Nielsen-damped trial steps overshoot to where exp overflows: those points are
    # rejected as non-finite, so the overflow is expected here
    with np.errstate(over="ignore", invalid="ignore"):
        return p[0] * np.exp(-p[1] * T) + p[2] - y


def decay_jac(p, y=Y):
    e = np.exp(-p[1] * T)
    return np.stack([e, -p[0] * T * e, np.ones_like(T)], axis=1)


# scipy's documented losses rho(z) and rho'(z), written independently of the library
RHO = {
    "soft_l1": lambda z: 2.0 * (np.sqrt(1.0 + z) - 1.0),
    "huber": lambda z: np.where(z <= 1.0, z, 2.0 * np.sqrt(z) - 1.0),
    "cauchy": np.log1p,
    "arctan": np.arctan,
}
RHO1 = {
    "soft_l1": lambda z: 1.0 / np.sqrt(1.0 + z),
    "huber": lambda z: np.where(z <= 1.0, 1.0, 1.0 / np.sqrt(np.maximum(z, 1.0))),
    "cauchy": lambda z: 1.0 / (1.0 + z),
    "arctan": lambda z: 1.0 / (1.0 + z * z),
}


def robust_cost(loss, f, c):
    return 0.5 * c * c * float(np.sum(RHO[loss]((f / c) ** 2)))


def robust_grad(loss, x, c):
    f = decay(x)
    return decay_jac(x).T @ (RHO1[loss]((f / c) ** 2) * f)


# -- robust losses against scipy's "trf" ------------------------------------------------------
# The Nielsen-damped directions ("dense", "nystrom-pcg") reach another local minimum of the
# non-convex arctan cost with f_scale=0.1 (cost 0.428 against scipy's 0.0986); the
# trust-region control ("auto" -> "svd") reaches scipy's.
PARITY = [
    (loss, f_scale, direction)
    for loss in ROBUST
    for f_scale in (0.1, 1.0)
    for direction in ("auto", "dense", "nystrom-pcg")
    if not (loss == "arctan" and f_scale == 0.1 and direction != "auto")
]


@pytest.mark.parametrize(("loss", "f_scale", "direction"), PARITY)
def test_robust_fit_matches_scipy_trf(loss, f_scale, direction):
    ref = scipy_optimize.least_squares(
        decay, X0, jac=decay_jac, loss=loss, f_scale=f_scale, **TIGHT
    )
    res = sl.least_squares(
        decay, X0, jac=decay_jac, loss=loss, f_scale=f_scale, direction=direction, **TIGHT
    )
    assert res.success, res.message
    rel = float(np.max(np.abs(res.x - ref.x) / np.abs(ref.x)))
    assert rel <= 1e-6 or res.cost <= ref.cost * (1.0 + 1e-12), (rel, res.cost, ref.cost)
    assert res.cost == pytest.approx(robust_cost(loss, decay(res.x), f_scale), rel=1e-12)
    assert res.cost == pytest.approx(ref.cost, rel=1e-10)
    np.testing.assert_array_equal(res.fun, decay(res.x))  # the raw residuals


@pytest.mark.parametrize("loss", ROBUST)
def test_robust_fit_is_not_pulled_by_outliers(loss):
    """The point of a robust loss: the fit ignores the outliers, least squares does not."""
    plain = sl.least_squares(decay, X0, jac=decay_jac)
    res = sl.least_squares(decay, X0, jac=decay_jac, loss=loss, f_scale=0.1)
    inliers = np.setdiff1d(np.arange(T.size), _OUTLIERS)
    truth = 3.0 * np.exp(-0.8 * T) + 0.5
    model = decay(res.x) + Y
    assert np.max(np.abs(model - truth)[inliers]) < 0.1
    assert np.max(np.abs(decay(plain.x) + Y - truth)[inliers]) > 0.2


@pytest.mark.parametrize("loss", ROBUST)
def test_robust_result_jac_and_grad_are_scipys(loss):
    """``jac`` is scipy's weighted Jacobian, ``grad`` the gradient of the robust cost."""
    ref = scipy_optimize.least_squares(decay, X0, jac=decay_jac, loss=loss, f_scale=0.5, **TIGHT)
    res = sl.least_squares(decay, X0, jac=decay_jac, loss=loss, f_scale=0.5, **TIGHT)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-7)
    np.testing.assert_allclose(res.jac, ref.jac, rtol=1e-5, atol=1e-6 * np.max(np.abs(ref.jac)))
    g = robust_grad(loss, res.x, 0.5)
    scale = np.abs(decay_jac(res.x)).T @ np.abs(decay(res.x))
    np.testing.assert_allclose(res.grad, g, rtol=0, atol=1e-12 * np.max(scale))
    assert res.optimality == pytest.approx(np.max(np.abs(res.grad)))


def _soft_l1_callable(z):
    t = 1.0 + z
    return np.stack([2.0 * (t**0.5 - 1.0), t**-0.5, -0.5 * t**-1.5])


def test_callable_loss_is_scipys_protocol():
    ref = scipy_optimize.least_squares(
        decay, X0, jac=decay_jac, loss=_soft_l1_callable, f_scale=0.1, **TIGHT
    )
    builtin = sl.least_squares(decay, X0, jac=decay_jac, loss="soft_l1", f_scale=0.1, **TIGHT)
    res = sl.least_squares(decay, X0, jac=decay_jac, loss=_soft_l1_callable, f_scale=0.1, **TIGHT)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, builtin.x, rtol=1e-12)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6)
    assert res.cost == pytest.approx(ref.cost, rel=1e-10)


@pytest.mark.parametrize(
    ("loss", "error", "match"),
    [
        (lambda z: np.stack([z, np.ones_like(z)]), ValueError, r"shape \(3, m\) = \(3, 60\)"),
        (lambda z: np.stack([z, z, z]).astype(np.float32), TypeError, "dtype"),
        (lambda z: "rho", TypeError, "loss"),
        ("l1", ValueError, "loss must be one of"),
        (3, ValueError, "loss must be one of"),
    ],
)
def test_bad_loss(loss, error, match):
    with pytest.raises(error, match=match):
        sl.least_squares(decay, X0, jac=decay_jac, loss=loss)


@pytest.mark.parametrize(
    ("f_scale", "error"), [(0.0, ValueError), (math.inf, ValueError), ("1", TypeError)]
)
def test_bad_f_scale(f_scale, error):
    with pytest.raises(error, match="f_scale"):
        sl.least_squares(decay, X0, jac=decay_jac, loss="huber", f_scale=f_scale)


def test_loss_callable_nan_at_x0_is_refused():
    with pytest.raises(ValueError, match="x0"):
        sl.least_squares(decay, X0, jac=decay_jac, loss=lambda z: np.stack([z * np.nan, z, z]))


def test_robust_loss_every_backend(backend):
    if backend.name == "jax" and backend.dtype_name == "float32":
        # Eager JAX compiles every new primitive (~4 s for this fit); float32 is covered by
        # the three other backends, JAX by float64.
        pytest.skip("JAX float32: covered by the other backends and JAX float64 (compile time)")
    xp = backend.xp
    t, y = backend.asarray(T), backend.asarray(Y)

    def fun(p):
        return p[0] * xp.exp(-p[1] * t) + p[2] - y

    def jac(p):
        e = xp.exp(-p[1] * t)
        return xp.stack([e, -p[0] * t * e, xp.ones_like(t)], axis=1)

    ref = sl.least_squares(decay, X0, jac=decay_jac, loss="soft_l1", f_scale=0.1)
    res = sl.least_squares(fun, backend.asarray(X0), jac=jac, loss="soft_l1", f_scale=0.1)
    assert res.success, res.message
    assert res.x.dtype == backend.dtype and res.fun.dtype == backend.dtype
    tol = 1e-7 if backend.dtype_name == "float64" else 1e-3
    np.testing.assert_allclose(backend.to_numpy(res.x), ref.x, rtol=tol)
    assert res.cost == pytest.approx(ref.cost, rel=tol)


# -- the loss functions themselves -----------------------------------------------------------
@pytest.mark.parametrize("loss", ROBUST)
def test_loss_derivatives(loss):
    """rho is scipy's documented loss; rho' and rho'' agree with central differences."""
    z = np.array([0.0, 0.1, 0.5, 0.9, 1.5, 4.0, 30.0])
    rho, d1, d2 = (np.asarray(a) for a in _BUILTIN[loss](xnp, z))
    np.testing.assert_allclose(rho, RHO[loss](z), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(d1, RHO1[loss](z), rtol=1e-14)
    h = 1e-5
    inner = z[1:]
    _, up1, _ = _BUILTIN[loss](xnp, inner + h)
    _, lo1, _ = _BUILTIN[loss](xnp, inner - h)
    np.testing.assert_allclose(d2[1:], (up1 - lo1) / (2 * h), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("loss", ROBUST)
def test_loss_weights_stay_finite_for_huge_residuals(loss):
    """No NaN: an overflowing (f / C)^2 gives the limits, and an infinite cost for the
    unbounded losses (the point is then rejected), never NaN weights."""
    robust = make_loss(loss, 0.5, xnp, np.float64, None)
    f = np.array([0.0, -1e-200, 1.0, -1e100, 1e200, 1.7e308])
    terms = robust.terms(f, "a test")
    assert np.all(np.isfinite(terms.w)) and np.all(terms.w > 0)
    assert np.all(np.isfinite(terms.f_w))
    if loss == "arctan":
        assert math.isfinite(terms.cost)
    else:
        assert terms.cost == math.inf


@given(
    loss=st.sampled_from(ROBUST),
    f_scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31 - 1),
)
def test_weighted_system_gives_the_robust_gradient(loss, f_scale, seed):
    """Invariants of the weighting: J_w^T f_w = J^T (rho' f), weights >= sqrt(eps), and
    J_w^T J_w = J^T diag(rho' + 2 rho'' z) J where the weight is not clipped."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal(20) * 10.0 ** rng.uniform(-3, 3, 20)
    J = rng.standard_normal((20, 4))
    terms = make_loss(loss, f_scale, xnp, np.float64, None).terms(f, "a test")
    w = np.asarray(terms.w)
    assert np.all(w >= math.sqrt(EPS) * (1 - 1e-12))
    z = (f / f_scale) ** 2
    rho1 = RHO1[loss](z)
    grad = J.T @ (rho1 * f)
    scale = np.abs(J).T @ np.abs(rho1 * f)
    assert np.all(np.abs((w[:, None] * J).T @ terms.f_w - grad) <= 1e-12 * scale)
    assert terms.cost == pytest.approx(robust_cost(loss, f, f_scale), rel=1e-12)
    _, d1, d2 = _BUILTIN[loss](xnp, z)
    curvature = np.asarray(d1 + 2 * d2 * z)
    free = curvature > EPS
    np.testing.assert_allclose(w[free] ** 2, curvature[free], rtol=1e-12)


# -- callback and verbose ---------------------------------------------------------------------
def test_callback_is_called_once_per_accepted_step():
    seen = []
    res = sl.least_squares(
        decay,
        X0,
        jac=decay_jac,
        loss="cauchy",
        f_scale=0.1,
        callback=lambda intermediate_result: seen.append(intermediate_result),
    )
    assert res.success and len(seen) == res.nit > 3
    assert all(isinstance(s, LeastSquaresIteration) for s in seen)
    assert [s.nit for s in seen] == list(range(1, res.nit + 1))
    costs = [s.cost for s in seen]
    assert all(b < a for a, b in itertools.pairwise(costs))
    last = seen[-1]
    np.testing.assert_array_equal(last.x, res.x)
    np.testing.assert_array_equal(last.fun, decay(res.x))
    np.testing.assert_array_equal(last.grad, res.grad)
    assert last.cost == res.cost and last.optimality == res.optimality and last.njev == res.njev


def test_callback_with_x_gets_a_copy():
    xs = []
    res = sl.least_squares(decay, X0, jac=decay_jac, callback=xs.append)
    assert len(xs) == res.nit
    np.testing.assert_array_equal(xs[-1], res.x)
    xs[-1][:] = np.nan  # the copy, not the run's x
    assert np.all(np.isfinite(res.x))


def test_callback_stop_iteration_is_status_minus_2_like_scipy():
    def stop_at_2(intermediate_result):
        if intermediate_result.nit == 2:
            raise StopIteration

    ref = scipy_optimize.least_squares(decay, X0, jac=decay_jac, callback=stop_at_2)
    res = sl.least_squares(decay, X0, jac=decay_jac, callback=stop_at_2)
    assert ref.status == -2 and not ref.success
    assert res.status == -2 and not res.success and res.nit == 2
    assert "callback" in res.message and "StopIteration" in res.message
    assert res.result is sl.Status.MAX_ITERATIONS
    assert np.all(np.isfinite(res.x)) and res.cost == pytest.approx(0.5 * res.fun @ res.fun)


def test_callback_must_be_callable():
    with pytest.raises(TypeError, match="callback"):
        sl.least_squares(decay, X0, jac=decay_jac, callback=3)


def test_verbose_2_prints_a_row_per_iteration(capsys):
    res = sl.least_squares(decay, X0, jac=decay_jac, loss="huber", f_scale=0.1, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "Iteration",
        "Total",
        "nfev",
        "Cost",
        "Cost",
        "reduction",
        "Step",
        "norm",
        "Optimality",
        "Damping",
    ]
    rows, summary = lines[1:-2], lines[-2:]
    assert len(rows) == res.nit + 1  # the start, then one per accepted step (scipy's layout)
    assert [int(r.split()[0]) for r in rows] == list(range(res.nit + 1))
    assert len(rows[0].split()) == 5 and all(len(r.split()) == 7 for r in rows[1:])
    assert float(rows[-1].split()[2]) == pytest.approx(res.cost, rel=1e-4)
    assert summary[0] == res.message
    assert summary[1].startswith(f"Function evaluations {res.nfev}, initial cost ")


def test_verbose_1_prints_the_report_and_0_nothing(capsys):
    res = sl.least_squares(decay, X0, jac=decay_jac, verbose=1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == res.message and len(lines) == 2
    assert f"first-order optimality {res.optimality:.2e}." in lines[1]
    sl.least_squares(decay, X0, jac=decay_jac)
    assert capsys.readouterr().out == ""


# -- x0 as scipy takes it ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "x0", [[1, 1, 0], (1.0, 1, 0.0), np.array([1, 1, 0]), np.array([True, True, False])]
)
def test_x0_array_like(x0):
    base = sl.least_squares(decay, X0, jac=decay_jac)
    res = sl.least_squares(decay, x0, jac=decay_jac)
    assert isinstance(res.x, np.ndarray) and res.x.dtype == np.float64
    np.testing.assert_array_equal(res.x, base.x)
    assert res.nfev == base.nfev


@pytest.mark.parametrize("x0", [3, 3.0, np.int64(3)])
def test_x0_python_number_like_scipy(x0):
    ref = scipy_optimize.least_squares(lambda x: x**2 - 2.0, x0, method="lm")
    res = sl.least_squares(lambda x: x**2 - 2.0, x0)
    assert res.x.shape == (1,) and res.x.dtype == np.float64
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-8)


def test_x0_integer_array_of_another_backend():
    strict = pytest.importorskip("array_api_strict")
    x0 = strict.asarray([1, 1, 0])
    t, y = strict.asarray(T), strict.asarray(Y)
    res = sl.least_squares(lambda p: p[0] * strict.exp(-p[1] * t) + p[2] - y, x0)
    assert res.x.dtype == strict.float64 and res.success


@pytest.mark.parametrize(
    ("x0", "error", "match"),
    [
        (np.array([1.0 + 1j, 1.0, 0.0]), ValueError, "x0 must be real"),
        ([[1.0, 1.0, 0.0]], ValueError, "1-D"),
        ("1, 1, 0", TypeError, "x0"),
        (None, TypeError, "x0"),
        ([1.0, "a", 0.0], TypeError, "x0"),
        ([1.0, math.nan, 0.0], ValueError, "NaN"),
    ],
)
def test_bad_x0(x0, error, match):
    with pytest.raises(error, match=match):
        sl.least_squares(decay, x0, jac=decay_jac)


# -- bounds ---------------------------------------------------------------------------------
INFINITE_BOUNDS = [
    (-np.inf, np.inf),
    (np.full(3, -np.inf), np.full(3, np.inf)),
    [[-np.inf] * 3, np.inf],
    scipy_optimize.Bounds(np.full(3, -np.inf), np.full(3, np.inf)),
]


@pytest.mark.parametrize("bounds", INFINITE_BOUNDS)
def test_infinite_bounds_are_unconstrained(bounds):
    base = sl.least_squares(decay, X0, jac=decay_jac, loss="soft_l1")
    res = sl.least_squares(decay, X0, jac=decay_jac, loss="soft_l1", bounds=bounds)
    np.testing.assert_array_equal(res.x, base.x)
    assert res.nfev == base.nfev and res.status == base.status


BAD_BOUNDS = [
    # (bounds, error, match, scipy also refuses it)
    ((1.0, 1.0), ValueError, "Each lower bound must be strictly less than each upper bound", True),
    (
        (np.array([0.0, 5.0, -1.0]), np.array([2.0, 4.0, 1.0])),
        ValueError,
        r"lb\[1\] = 5.0 >= ub\[1\] = 4.0",
        True,
    ),
    ((np.zeros(2), np.ones(2)), ValueError, "Inconsistent shapes between bounds and x0", True),
    # Bounds(-inf, inf) holds arrays of shape (1,), which scipy does not broadcast either
    (scipy_optimize.Bounds(-np.inf, np.inf), ValueError, r"lb has shape \(1,\)", True),
    ((2.0, 3.0), ValueError, "x0 is infeasible", True),
    (
        (-np.inf, np.array([np.inf, 0.5, np.inf])),
        ValueError,
        r"x0 is infeasible.*x0\[1\] = 1.0",
        True,
    ),
    (
        scipy_optimize.Bounds(-np.inf, [np.inf, 0.5, np.inf]),
        ValueError,
        r"x0 is infeasible: 1 entry lies outside bounds.*x0\[1\]",
        True,
    ),
    ((np.nan, np.inf), ValueError, "NaN", False),
    ((0.0, 1.0, 2.0), ValueError, "2 elements", True),
    (5.0, TypeError, "bounds must be None, a 2-tuple", True),
]


@pytest.mark.parametrize(("bounds", "error", "match", "scipy_refuses"), BAD_BOUNDS)
def test_bad_bounds(bounds, error, match, scipy_refuses):
    with pytest.raises(error, match=match):
        sl.least_squares(decay, X0, jac=decay_jac, bounds=bounds)
    if scipy_refuses:
        with pytest.raises((ValueError, TypeError)):
            scipy_optimize.least_squares(decay, X0, jac=decay_jac, bounds=bounds)


# -- every scipy keyword: supported, or refused with the alternative named -----------------
def _decay_args(p, y):
    return decay(p, y)


def _decay_args_jac(p, y):
    return decay_jac(p, y)


KEYWORDS = {
    "fun": [({"fun": decay}, None)],
    "x0": [({"x0": [1.0, 1.0, 0.0]}, None)],
    "jac": [
        ({"jac": "3-point"}, None),
        ({"jac": "cs"}, (ValueError, "complex steps are not supported")),
    ],
    "bounds": [
        ({"bounds": (-np.inf, np.inf)}, None),
        ({"bounds": (-10.0, 10.0)}, None),
    ],
    "method": [
        ({"method": "lm"}, None),
        ({"method": "trf"}, (ValueError, "robust losses work with it")),
        ({"method": "dogbox"}, (ValueError, "finite bounds")),
    ],
    "ftol": [({"ftol": 1e-10}, None), ({"ftol": -1.0}, (ValueError, "ftol"))],
    "xtol": [({"xtol": None}, None), ({"xtol": math.nan}, (ValueError, "xtol"))],
    "gtol": [({"gtol": 1e-10}, None), ({"gtol": "small"}, (TypeError, "gtol"))],
    "x_scale": [({"x_scale": "jac"}, None), ({"x_scale": 0.0}, (ValueError, "x_scale"))],
    "loss": [({"loss": "huber"}, None), ({"loss": "l1"}, (ValueError, "loss"))],
    "f_scale": [
        ({"f_scale": 0.5, "loss": "cauchy"}, None),
        ({"f_scale": -1.0}, (ValueError, "f_scale")),
    ],
    "diff_step": [({"jac": "2-point", "diff_step": 1e-7}, None)],
    "tr_solver": [
        ({"tr_solver": None}, None),
        ({"tr_solver": "exact"}, (ValueError, 'direction="svd"')),
        ({"tr_solver": "lsmr"}, (ValueError, 'direction="nystrom-pcg"')),
    ],
    "tr_options": [
        ({"tr_options": {}}, None),
        ({"tr_options": {"regularize": True}}, (ValueError, "direction_options")),
    ],
    "jac_sparsity": [
        ({"jac_sparsity": None}, None),
        ({"jac": "2-point", "jac_sparsity": np.ones((T.size, 3))}, None),
        ({"jac_sparsity": np.ones((T.size, 3))}, (ValueError, "jac_sparsity is the pattern")),
        ({"jac": "2-point", "jac_sparsity": np.ones((3, 3))}, (ValueError, "jac_sparsity has")),
    ],
    "max_nfev": [({"max_nfev": 500}, None), ({"max_nfev": 0}, (ValueError, "max_nfev"))],
    "verbose": [({"verbose": 0}, None), ({"verbose": 3}, (ValueError, "verbose"))],
    "args": [({"fun": _decay_args, "jac": _decay_args_jac, "args": (Y,)}, None)],
    "kwargs": [({"fun": _decay_args, "jac": _decay_args_jac, "kwargs": {"y": Y}}, None)],
    "callback": [
        ({"callback": lambda intermediate_result: None}, None),
        ({"callback": "print"}, (TypeError, "callback")),
    ],
    "workers": [({"workers": None}, None), ({"workers": map}, (ValueError, "jac as a callable"))],
}


def test_every_scipy_keyword_has_a_row():
    """Fails when scipy adds a keyword that least_squares neither supports nor refuses."""
    names = set(inspect.signature(scipy_optimize.least_squares).parameters)
    missing = sorted(names - set(KEYWORDS))
    assert not missing, f"scipy keyword(s) {missing}: support or refuse them, then add rows"
    ours = set(inspect.signature(sl.least_squares).parameters)
    assert names <= ours, sorted(names - ours)


@pytest.mark.parametrize(
    ("kwargs", "expect"),
    [
        pytest.param(kw, ex, id=f"{name}-{i}")
        for name, rows in KEYWORDS.items()
        for i, (kw, ex) in enumerate(rows)
    ],
)
def test_scipy_keyword(kwargs, expect):
    call = {"fun": decay, "x0": X0, "jac": decay_jac, **kwargs}
    if expect is None:
        res = sl.least_squares(**call)
        assert res.success, res.message
        return
    error, match = expect
    with pytest.raises(error, match=match):
        sl.least_squares(**call)
