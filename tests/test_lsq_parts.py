"""Direct tests of the parts of :func:`least_squares`: damping control, the SVD and
trust-region steps, the overflow-safe numerics, the checked problem wrappers and the loop.

Each rule is checked as an exact invariant against an independent NumPy computation, with
tolerances from the dtype's machine epsilon.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import array_api_compat.numpy as xp
import numpy as np
import pytest

import sketchlinalg as sl
from sketchlinalg._exact import SVD
from sketchlinalg._lsq_damping import Nielsen, TrustRegion, trust_region_step
from sketchlinalg._lsq_loop import _Iterate, resolve_direction
from sketchlinalg._lsq_loss import make_loss
from sketchlinalg._lsq_numerics import (
    column_norms,
    cost_reduction,
    gradient,
    gradient_measure,
    max_scaled_curvature,
    safe_dot,
    safe_norm,
    scaled_jacobian,
)
from sketchlinalg._lsq_problem import Jacobian, Residual, weigh_jacobian
from sketchlinalg._operator import FunctionOperator
from sketchlinalg._random import as_sampler

EPS = float(np.finfo(np.float64).eps)


def _system(m=12, n=4, cond=10.0, seed=0):
    """``J`` of shape (m, n) with singular values from 1 to ``1/cond``, and ``f``."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    J = (U * np.geomspace(1.0, 1.0 / cond, n)) @ V.T
    return J, rng.standard_normal(m)


def _operator(J):
    return FunctionOperator(lambda X: J @ X, lambda Y: J.T @ Y, shape=J.shape, dtype=J.dtype, xp=xp)


# -- Nielsen's damping update -------------------------------------------------------------
@pytest.mark.parametrize("rho", [1e-3, 0.25, 0.5, 0.75, 0.9, 1.0, 3.0])
def test_nielsen_accept(rho):
    control = Nielsen(2.0, EPS)
    control.reject(1.0)  # nu = 4: acceptance must reset it
    mu = control.mu
    control.accept(rho, 1.0)
    assert control.mu == mu * max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
    assert control.nu == 2.0


def test_nielsen_reject_doubles_nu():
    control = Nielsen(3.0, EPS)
    seen = []
    for _ in range(4):
        control.reject(1.0)
        seen.append((control.mu, control.nu))
    assert seen == [(6.0, 4.0), (24.0, 8.0), (192.0, 16.0), (3072.0, 32.0)]


def test_nielsen_floor_and_default():
    control = Nielsen(5.0, EPS)
    for _ in range(200):
        control.accept(1.0, 1.0)  # factor 1/3 each time, down to the floor eps^2 mu_0
    assert control.mu == 5.0 * EPS * EPS
    assert Nielsen(0.0, EPS).mu == 1.0 and Nielsen(-1.0, EPS).mu == 1.0


def test_nielsen_exhausted_on_overflow():
    control = Nielsen(1e300, EPS)
    assert not control.exhausted()
    rejects = 0
    while not control.exhausted():
        control.reject(1.0)
        rejects += 1
    # mu_k = 2^(k (k + 1) / 2) mu_0 and nu_k = 2^(k + 1): mu nu > 1.8e308 after k = 6
    assert rejects == 6 and not math.isfinite(control.mu * control.nu)


# -- Moré's trust-region control ------------------------------------------------------------
@pytest.mark.parametrize(
    ("rho", "step_norm", "radius"),
    [
        (0.1, 0.5, 0.125),  # poor agreement: ||D p|| / 4
        (-1.0, 1.0, 0.25),
        (0.2499, 0.5, 0.125),
        (0.25, 0.5, 1.0),  # 1/4 <= rho <= 3/4: unchanged
        (0.5, 1.0, 1.0),
        (0.75, 1.0, 1.0),
        (0.7501, 1.0, 2.0),
        (0.9, 0.5, 1.0),  # good, but inside the region: unchanged
        (0.9, 0.95, 2.0),  # good and on the boundary: 2 Delta
        (0.9, 1.0, 2.0),
    ],
)
def test_trust_region_accept(rho, step_norm, radius):
    control = TrustRegion(1.0)
    control.accept(rho, step_norm)
    assert control.radius == radius


def test_trust_region_reject_and_exhausted():
    control = TrustRegion(1.0)
    control.reject(0.5)
    assert control.radius == 0.125
    control.reject(math.inf)  # a non-finite direction: Delta / 4
    assert control.radius == 0.03125
    assert not control.exhausted()
    for _ in range(600):
        control.reject(math.inf)
    assert control.radius == 0.0 and control.exhausted()
    assert TrustRegion(math.nan).exhausted()


# -- the SVD step and the trust-region step -------------------------------------------------
@pytest.mark.parametrize("mu", [0.0, 1e-3, 0.5, 10.0])
def test_svd_step_solves_damped_normal_equations(mu):
    J, f = _system(cond=100.0)
    d, info = SVD().solve(SVD().init(J, f), damping=mu)
    ref = np.linalg.solve(J.T @ J + mu * np.eye(J.shape[1]), J.T @ f)
    tol = 100.0**2 * 10 * EPS  # cond(J^T J) eps
    np.testing.assert_allclose(d, ref, rtol=tol, atol=tol * np.abs(ref).max())
    model = 0.5 * (f @ f - np.sum((f - J @ d) ** 2))
    assert abs(float(info.predicted_decrease) - model) <= 100 * EPS * (f @ f)


def test_svd_step_pseudo_inverse_at_zero_damping():
    J, f = _system(n=3)
    J = np.concatenate([J, J[:, :1]], axis=1)  # rank 3 of 4: the minimum-norm step
    d, _ = SVD().solve(SVD().init(J, f), damping=0.0)
    np.testing.assert_allclose(d, np.linalg.pinv(J) @ f, rtol=1e3 * EPS, atol=1e3 * EPS)


@pytest.mark.parametrize("c", [1e-150, 1e150])
def test_svd_step_scale_equivariance(c):
    """``d(c J, c^2 mu) = d(J, mu) / c``: the filter factors form no ``s^2``."""
    J, f = _system()
    d, _ = SVD().solve(SVD().init(J, f), damping=0.3)
    d_c, _ = SVD().solve(SVD().init(c * J, f), damping=c * c * 0.3)
    np.testing.assert_allclose(c * d_c, d, rtol=100 * EPS)


def _tr_setup(D):
    J, f = _system(cond=50.0, seed=3)
    Js = J / D[None, :]
    solver = SVD()
    return J, f, Js, solver, solver.init(Js, f)


@pytest.mark.parametrize("D", [np.ones(4), np.array([1.0, 10.0, 0.1, 3.0])])
def test_trust_region_step_gauss_newton_when_it_fits(D):
    _, f, Js, solver, state = _tr_setup(D)
    gn = np.linalg.lstsq(Js, f, rcond=None)[0]
    for radius in (1e6, 1.05 * np.linalg.norm(gn), np.linalg.norm(gn) / 1.05):  # 10% slack
        d, mu, predicted = trust_region_step(xp, solver, state, radius, 0.0)
        assert mu == 0.0
        np.testing.assert_allclose(d, gn, rtol=1e4 * EPS)
        assert abs(predicted - 0.5 * (f @ f - np.sum((f - Js @ d) ** 2))) <= 1e3 * EPS * (f @ f)


@pytest.mark.parametrize("D", [np.ones(4), np.array([1.0, 10.0, 0.1, 3.0])])
@pytest.mark.parametrize("fraction", [0.5, 0.1, 1e-3])
@pytest.mark.parametrize("mu_guess", [0.0, 1.0])
def test_trust_region_step_on_the_boundary(D, fraction, mu_guess):
    J, f, Js, solver, state = _tr_setup(D)
    radius = fraction * np.linalg.norm(np.linalg.lstsq(Js, f, rcond=None)[0])
    d, mu, predicted = trust_region_step(xp, solver, state, radius, mu_guess)
    assert mu > 0.0
    assert abs(np.linalg.norm(d) - radius) <= 0.1 * radius  # ||D p|| = Delta to 10 %
    p = -d / D
    # p minimizes ||f + J p||^2 + mu ||D p||^2: (J^T J + mu D^2) p = -J^T f
    ref = np.linalg.solve(J.T @ J + mu * np.diag(D * D), -J.T @ f)
    cond = np.linalg.cond(J.T @ J + mu * np.diag(D * D))
    np.testing.assert_allclose(p, ref, rtol=10 * cond * EPS)
    # the model decrease of this step, and the SVD step at the same mu
    assert abs(predicted - 0.5 * (f @ f - np.sum((f + J @ p) ** 2))) <= 1e3 * EPS * (f @ f)
    np.testing.assert_allclose(solver.solve(state, damping=mu)[0], d, rtol=1e3 * EPS)


# -- overflow-safe numerics ----------------------------------------------------------------
def test_safe_norm_of_huge_and_special_values():
    a = np.full(3, 1e300)
    with np.errstate(over="ignore"):
        assert np.sqrt(np.sum(a * a)) == np.inf  # what the scaling avoids
    assert abs(safe_norm(xp, a) - math.sqrt(3.0) * 1e300) <= 2 * EPS * math.sqrt(3.0) * 1e300
    tiny = np.full(4, 1e-300)
    assert abs(safe_norm(xp, tiny) - 2e-300) <= 2 * EPS * 2e-300  # no underflow to 0 either
    assert safe_norm(xp, np.zeros(3)) == 0.0
    assert safe_norm(xp, np.array([1.0, np.inf])) == math.inf


def test_safe_dot_without_intermediate_overflow():
    a, b = np.full(3, 1e154), np.array([1e154, 1e154, -1e154])  # a . b = 1e308 < max
    with np.errstate(over="ignore"):
        assert np.cumsum(a * b)[-1] == np.inf  # the running sum overflows
    assert safe_dot(xp, a, b) == pytest.approx(1e308, rel=4 * EPS)
    assert safe_dot(xp, np.array([1e200, 3e200]), np.array([2e100, 1e100])) == pytest.approx(
        5e300, rel=4 * EPS
    )
    assert safe_dot(xp, np.zeros(2), a) == 0.0
    # a true overflow gives inf in Python floats, with no NumPy warning (warnings are errors)
    assert safe_dot(xp, np.array([1e200]), np.array([1e200])) == math.inf


def test_cost_reduction_has_no_cancellation():
    delta = 1e-12
    f, f_new = np.array([1.0 + delta, -2.0]), np.array([1.0, -2.0])
    exact = Fraction(1, 2) * sum(
        Fraction(a) ** 2 - Fraction(b) ** 2 for a, b in zip(f, f_new, strict=True)
    )
    value = cost_reduction(xp, f, f_new)
    assert abs(Fraction(value) - exact) <= 4 * EPS * exact
    naive = 0.5 * (f @ f - f_new @ f_new)
    assert abs(Fraction(naive) - exact) > 1e3 * EPS * exact  # the subtraction loses digits
    assert cost_reduction(xp, f, f) == 0.0
    assert cost_reduction(xp, np.zeros(2), np.zeros(2)) == 0.0
    big = cost_reduction(xp, np.array([3e200]), np.array([1e200]))
    assert big == math.inf or big > 1e300  # 4e400 overflows as a float, never NaN


def test_gradient_measure_is_minpack_cosines():
    J, f = _system(m=8, n=3)
    J[:, 1] = 0.0  # a zero column contributes cosine 0
    g = J.T @ f
    cos = np.abs(g) / np.where(np.linalg.norm(J, axis=0) > 0, np.linalg.norm(J, axis=0), 1.0)
    expected = cos.max() / np.linalg.norm(f)
    value = gradient_measure(xp, g, float(np.linalg.norm(f)), column_norms(xp, J, _operator(J)))
    assert abs(value - expected) <= 4 * EPS * expected
    assert value <= 1.0 + 4 * EPS  # a cosine (Cauchy-Schwarz)
    assert gradient_measure(xp, g, 0.0, column_norms(xp, J, _operator(J))) == 0.0
    assert gradient_measure(xp, g, 2.0, None) == np.abs(g).max()  # matrix-free


def test_gradient_and_scaled_jacobian_dense_and_operator_agree():
    J, f = _system(m=7, n=4)
    D = np.array([1.0, 2.0, 0.5, 4.0])
    op = _operator(J)
    np.testing.assert_array_equal(gradient(xp, J, op, f), J.T @ f)
    np.testing.assert_allclose(gradient(xp, None, op, f), J.T @ f, rtol=10 * EPS)
    free = np.array([True, False, True, True])
    dense = scaled_jacobian(xp, J, op, D, free)
    np.testing.assert_array_equal(dense[:, 1], 0.0)
    np.testing.assert_allclose(dense, J / D * free, rtol=EPS)
    mf = scaled_jacobian(xp, None, op, D, free)
    np.testing.assert_allclose(mf.matmat(np.eye(4)), dense, rtol=4 * EPS)
    np.testing.assert_allclose(
        scaled_jacobian(xp, None, op, D).matmat(np.eye(4)), J / D, rtol=4 * EPS
    )
    assert scaled_jacobian(xp, J, op, None) is J


def test_max_scaled_curvature():
    J, _ = _system(m=9, n=4, cond=1e3)
    D = np.array([1.0, 2.0, 0.5, 4.0])
    norms = column_norms(xp, J, _operator(J))
    dense = max_scaled_curvature(xp, _operator(J), D, norms, as_sampler(0))
    assert dense == pytest.approx(float(np.max(np.sum((J / D) ** 2, axis=0))), rel=4 * EPS)
    # matrix-free: a power estimate of ||J D^-1||_2^2 from below (a Rayleigh-type bound)
    top = np.linalg.norm(J / D, 2) ** 2
    estimate = max_scaled_curvature(xp, _operator(J), D, None, as_sampler(0))
    assert 0.5 * top <= estimate <= top * (1 + 100 * EPS)


# -- the problem wrappers ---------------------------------------------------------------
def test_residual_checks():
    r = Residual(lambda x, c: x * c, (2.0,), {}, xp, np.dtype(np.float64))
    np.testing.assert_array_equal(r(np.array([1.0, 2.0]), "x0"), [2.0, 4.0])
    assert r.m == 2
    with pytest.raises(ValueError, match=r"shape \(3,\) at trial point 1, but shape \(2,\)"):
        r(np.ones(3), "trial point 1")
    scalar = Residual(lambda x: x[0] ** 2, (), {}, xp, np.dtype(np.float64))
    assert scalar(np.array([3.0]), "x0").shape == (1,)
    with pytest.raises(TypeError, match=r"must return an array .* got list at x0"):
        Residual(lambda x: [1.0], (), {}, xp, np.float64)(np.ones(1), "x0")
    with pytest.raises(ValueError, match=r"1-D array .* shape \(2, 2\) at x0"):
        Residual(lambda x: np.ones((2, 2)), (), {}, xp, np.float64)(np.ones(1), "x0")
    with pytest.raises(TypeError, match="dtype float32 at x0, but x0 has dtype float64"):
        Residual(lambda x: np.ones(2, np.float32), (), {}, xp, np.dtype(np.float64))(
            np.ones(1), "x0"
        )


def test_nonfinite_residuals_at_start_and_changing_m():
    with pytest.raises(ValueError, match=r"fun\(x0\) returned NaN/Inf residuals"):
        sl.least_squares(lambda x: np.array([np.nan, 1.0]) * x[0], np.array([1.0]))
    with pytest.raises(ValueError, match="the number of residuals must not change"):
        sl.least_squares(lambda x: np.ones(2 + int(x[0] != 1.0)) * x[0], np.array([1.0]))


def test_jacobian_checks():
    residual = Residual(lambda x: x, (), {}, xp, np.dtype(np.float64))
    residual(np.ones(2), "x0")

    def make(jac):
        return Jacobian(jac, (), {}, residual, xp, np.dtype(np.float64), (2, 2), None)

    with pytest.raises(ValueError, match=r"jac\(x\) has shape \(3, 2\), expected \(m, n\)"):
        make(lambda x: np.ones((3, 2)))(np.ones(2), np.ones(2))
    with pytest.raises(TypeError, match=r"jac\(x\) has dtype float32, x0 has dtype float64"):
        make(lambda x: np.ones((2, 2), np.float32))(np.ones(2), np.ones(2))
    with pytest.raises(TypeError, match="jac must be '2-point', '3-point', a callable"):
        make(3)
    with pytest.raises(
        TypeError, match=r"jac\(x\) must be an array, a sparse matrix or a LinearOperator"
    ):
        make(lambda x: "J")(np.ones(2), np.ones(2))
    user, dense, op = make("2-point")(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(dense, np.eye(2), atol=1e-7)
    assert user is dense and op.shape == (2, 2)


def test_weigh_jacobian():
    J, f = _system(m=5, n=3)
    op = _operator(J)
    assert weigh_jacobian(xp, None, J, J, op) == (J, J, op)
    terms = make_loss("soft_l1", 0.5, xp, np.dtype(np.float64), None).terms(f, "x0")
    _, dense, _ = weigh_jacobian(xp, terms, J, J, op)
    np.testing.assert_array_equal(dense, terms.w[:, None] * J)
    _, none, mf = weigh_jacobian(xp, terms, op, None, op)
    assert none is None
    np.testing.assert_allclose(mf.matmat(np.eye(3)), dense, rtol=4 * EPS)
    np.testing.assert_allclose(mf.rmatvec(f), dense.T @ f, rtol=10 * EPS, atol=10 * EPS)


# -- the loop -----------------------------------------------------------------------------
def test_resolve_direction():
    assert resolve_direction("dense", {}, True, (50, 3), np.float64, xp) == "dense"
    assert resolve_direction("auto", {}, True, (50, 3), np.float64, xp) == "svd"
    assert resolve_direction("auto", {}, False, (50, 3), np.float64, xp) != "svd"


def test_iterate_is_the_state_of_the_loop():
    names = {f.name for f in dataclasses.fields(_Iterate)}
    assert {"x", "f", "f_raw", "cost", "Jd", "g", "D", "nfev", "njev", "nit"} <= names


@pytest.mark.parametrize("direction", ["svd", "dense"])
def test_linear_problem_in_one_step(direction):
    """On ``f(x) = A x - b`` the first Gauss–Newton step solves the problem."""
    A, b = _system(m=10, n=3, seed=5)
    res = sl.least_squares(
        lambda x: A @ x - b,
        np.zeros(3),
        jac=lambda x: A,
        direction=direction,
        x_scale=1.0,
        initial_damping=1e-12,
    )
    np.testing.assert_allclose(res.x, np.linalg.lstsq(A, b, rcond=None)[0], rtol=1e-8)
    assert res.success and res.nit >= 1 and res.njev == res.nit + 1


def test_safe_dot_of_cancelling_huge_vectors_is_zero_not_nan():
    """``sa * sb`` overflows to inf; the scaled sum is exactly 0: the dot product is 0."""
    a, b = np.array([1e200, 1e200]), np.array([1e150, -1e150])
    assert safe_dot(xp, a, b) == 0.0
    assert safe_dot(xp, a, np.array([1e150, 1e150])) == float("inf")  # a real overflow


def test_svd_scale_past_the_dtype_range_is_inf_without_a_warning():
    """``s_max^2`` overflows for ``s_max > sqrt(max)``: ``inf``, and no RuntimeWarning (the
    suite turns warnings into errors)."""
    J = xp.asarray(np.diag([1e200, 1.0]))
    solver = SVD()
    state = solver.init(J, xp.asarray(np.ones(2)))
    assert float(solver.scale(state)) == math.inf
    small = solver.init(xp.asarray(np.diag([3.0, 1.0])), xp.asarray(np.ones(2)))
    assert float(solver.scale(small)) == 9.0
