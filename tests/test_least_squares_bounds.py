"""least_squares with finite bounds (the projected Levenberg–Marquardt) against scipy's "trf".

Every bounded problem is solved here and by ``scipy.optimize.least_squares(method="trf")``
from the same start with the same Jacobian and tolerances; ours must match scipy's solution
(relative ``1e-8`` in ``x``) or reach a cost no higher than scipy's times ``1 + 1e-8``. The
set: NIST StRD problems whose bounds cut the certified optimum, Moré–Garbow–Hillstrom test
functions in boxes, and curve fits with a parameter that must stay non-negative. Every
evaluation of ``fun`` is checked to lie in the box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from example_loader import load_nist

import sketchlinalg as sl

scipy_optimize = pytest.importorskip("scipy.optimize")

ROOT = Path(__file__).resolve().parents[1]
TOL = {"ftol": 1e-10, "xtol": 1e-10, "gtol": 1e-10}
INF = np.inf


nist = load_nist()
NIST_DATA = nist.data_dir(ROOT)


class Bounded(NamedTuple):
    name: str
    fun: Any
    jac: Any
    x0: np.ndarray
    lb: np.ndarray
    ub: np.ndarray


def complex_step(fun):
    """``J`` of an analytic ``fun`` by complex steps (exact to rounding)."""

    def jac(x):
        n = x.shape[0]
        h = 1e-30 * np.maximum(1.0, np.abs(x))
        cols = [np.imag(fun(x + 1j * h[j] * np.eye(n)[j])) / h[j] for j in range(n)]
        return np.stack(cols, axis=1)

    return jac


def _mgh(name, fun, x0, lb, ub):
    f = lambda x: np.asarray(fun(x))  # noqa: E731
    return Bounded(
        name, f, complex_step(f), np.array(x0, float), np.array(lb, float), np.array(ub, float)
    )


T_BARD = np.arange(1, 16)
Y_BARD = np.array(
    [0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96, 1.34, 2.10, 4.39]
)
Y_KO = np.array(
    [0.1957, 0.1947, 0.1735, 0.16, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323, 0.0235, 0.0246]
)
U_KO = np.array([4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625])
T_BOX = 0.1 * np.arange(1, 11)
J_JS = np.arange(1, 11)
Y_OS1 = np.array(
    [0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751, 0.718,
     0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506, 0.490, 0.478, 0.467,
     0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411, 0.406]
)  # fmt: skip


def _bard(x):
    v = 16 - T_BARD
    return Y_BARD - (x[0] + T_BARD / (x[1] * v + x[2] * np.minimum(T_BARD, v)))


def _helical(x):
    theta = np.arctan(x[1] / x[0]) / (2 * np.pi) + (0.5 if np.real(x[0]) < 0 else 0.0)
    return np.array([10 * (x[2] - 10 * theta), 10 * (np.sqrt(x[0] ** 2 + x[1] ** 2) - 1), x[2]])


MGH = [
    _mgh(
        "rosenbrock",
        lambda x: [10 * (x[1] - x[0] ** 2), 1 - x[0]],
        [-1.2, 1],
        [-INF, -INF],
        [0.5, INF],
    ),
    _mgh(
        "powell-singular",
        lambda x: [
            x[0] + 10 * x[1],
            np.sqrt(5) * (x[2] - x[3]),
            (x[1] - 2 * x[2]) ** 2,
            np.sqrt(10) * (x[0] - x[3]) ** 2,
        ],
        [3, -1, 0, 1],
        [0.1, -20, -1, -1],
        [100, 20, 1, 50],
    ),
    _mgh(
        "brown-badly-scaled",
        lambda x: [x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2],
        [1, 1],
        [0, 3e-5],
        [1e6, 100],
    ),
    _mgh(
        "beale",
        lambda x: [c - x[0] * (1 - x[1] ** k) for k, c in ((1, 1.5), (2, 2.25), (3, 2.625))],
        [1, 1],
        [0.6, 0.6],
        [10, 100],
    ),
    _mgh(
        "box-3d",
        lambda x: (
            np.exp(-T_BOX * x[0])
            - np.exp(-T_BOX * x[1])
            - x[2] * (np.exp(-T_BOX) - np.exp(-10 * T_BOX))
        ),
        [0, 7.5, 20],
        [0, 5, 0],
        [2, 9.5, 20],
    ),
    _mgh(
        "freudenstein-roth",
        lambda x: [
            -13 + x[0] + ((5 - x[1]) * x[1] - 2) * x[1],
            -29 + x[0] + ((x[1] + 1) * x[1] - 14) * x[1],
        ],
        [0.5, -2],
        [0, -30],
        [20, -0.9],
    ),
    _mgh("helical-valley", _helical, [-1, 0, 0], [-100, -1, -1], [0.8, 1, 1]),
    _mgh("bard", _bard, [1, 1, 1], [0.1, 0.1, 0.1], [50, 50, 50]),
    _mgh(
        "kowalik-osborne",
        lambda x: Y_KO - x[0] * (U_KO**2 + U_KO * x[1]) / (U_KO**2 + U_KO * x[2] + x[3]),
        [0.25, 0.39, 0.415, 0.39],
        [-INF, 0.25, -INF, 0.2],
        [INF, INF, INF, INF],
    ),
    _mgh(
        "jennrich-sampson",
        lambda x: 2 + 2 * J_JS - (np.exp(J_JS * x[0]) + np.exp(J_JS * x[1])),
        [0.3, 0.4],
        [0.26, 0.27],
        [10, 20],
    ),
    _mgh(
        "osborne-1",
        lambda x: (
            Y_OS1
            - (
                x[0]
                + x[1] * np.exp(-10 * np.arange(33) * x[3])
                + x[2] * np.exp(-10 * np.arange(33) * x[4])
            )
        ),
        [0.5, 1.5, -1, 0.01, 0.02],
        [-INF, 1.4, -INF, -INF, -INF],
        [INF, INF, INF, INF, INF],
    ),
    _mgh(
        "linear-full-rank",
        lambda x: np.concatenate([x - 2 * x.sum() / 7 - 1, -2 * x.sum() / 7 - 1 + 0 * x[:2]]),
        [1, 1, 0, -1, -1],
        [-INF, 0.5, -INF, -1, -INF],
        [INF, INF, 0.8, INF, -0.5],
    ),
]

# exponential decay y = a exp(-k t) + c with noise; the unconstrained fit has c < 0
T_DECAY = np.linspace(0.0, 4.0, 30)
Y_DECAY = 3.0 * np.exp(-0.7 * T_DECAY) + np.random.default_rng(1).normal(0.0, 0.05, 30) - 0.05
Y_TWO = (
    2.0 * np.exp(-0.5 * T_DECAY)
    + 0.02 * np.exp(-3.0 * T_DECAY)
    + np.random.default_rng(2).normal(0.0, 0.03, 30)
)
CURVES = [
    _mgh(
        "decay-offset>=0",
        lambda p: p[0] * np.exp(-p[1] * T_DECAY) + p[2] - Y_DECAY,
        [1, 1, 0.5],
        [0, 0, 0],
        [INF, INF, INF],
    ),
    _mgh(
        "two-exponentials-amplitudes>=0",
        lambda p: p[0] * np.exp(-p[1] * T_DECAY) + p[2] * np.exp(-p[3] * T_DECAY) - Y_TWO,
        [1, 0.3, 1, 5],
        [0, 0, 0, 0],
        [INF, 10, INF, 10],
    ),
]


def _nist_cut(problem, start, index):
    """Bounds on parameter ``index`` that cut the certified value (10% of it, or halfway
    between the start and it when the start is that close); the others free."""
    n = problem.n_params
    c, x0 = problem.certified[index], problem.start(start)[index]
    lb, ub = np.full(n, -INF), np.full(n, INF)
    shift = 0.1 * abs(c)
    if x0 < c:
        ub[index] = c - shift if x0 <= c - shift else 0.5 * (x0 + c)
    else:
        lb[index] = c + shift if x0 >= c + shift else 0.5 * (x0 + c)
    return lb, ub


NIST_CASES = [
    ("Misra1a", 2, 0),
    ("Chwirut2", 2, 1),
    ("DanWood", 2, 1),
    ("Misra1b", 1, 1),
    ("MGH09", 2, 2),
    ("Thurber", 2, 3),
    ("BoxBOD", 2, 1),
    ("Rat42", 2, 2),
    ("Eckerle4", 2, 2),
    ("Rat43", 2, 3),
    ("Lanczos3", 2, 1),
    ("Kirby2", 2, 2),
]


def _nist_problems():
    if not NIST_DATA.is_dir():
        return []
    out = []
    for name, start, index in NIST_CASES:
        p = nist.load(name, NIST_DATA)
        lb, ub = _nist_cut(p, start, index)
        out.append(
            Bounded(
                f"nist-{name}-start{start}-b{index + 1}",
                p.residual_numpy(),
                p.jacobian_complex_step(),
                p.start(start),
                lb,
                ub,
            )
        )
    return out


PROBLEMS = MGH + CURVES + _nist_problems()


def feasible(fun, lb, ub):
    """``fun`` that asserts its argument lies in ``[lb, ub]``."""

    def checked(x):
        xr = np.real(x)
        assert np.all(xr >= lb) and np.all(xr <= ub), f"x = {xr} outside the bounds"
        return fun(x)

    return checked


def compare(p, **kwargs):
    """Ours and scipy's "trf" from ``p.x0``: (ours, scipy's, whether they match, a line)."""
    fun = feasible(p.fun, p.lb, p.ub)
    ours = sl.least_squares(fun, p.x0, jac=p.jac, bounds=(p.lb, p.ub), **TOL, **kwargs)
    kwargs.pop("direction", None)
    ref = scipy_optimize.least_squares(
        p.fun, p.x0, jac=p.jac, bounds=(p.lb, p.ub), method="trf", **TOL, **kwargs
    )
    close = np.allclose(ours.x, ref.x, rtol=1e-8, atol=0.0)
    lower = ours.cost <= ref.cost * (1 + 1e-8)
    info = (
        f"{p.name}: cost {ours.cost:.12g} vs scipy {ref.cost:.12g}, status {ours.status}, "
        f"nfev {ours.nfev} vs {ref.nfev}, active {ours.active_mask} vs {ref.active_mask}"
    )
    return ours, ref, (close or lower) and ours.success, info


def _projected_gradient(x, g, lb, ub):
    return float(np.max(np.abs(x - np.clip(x - g, lb, ub))))


@pytest.mark.parametrize("p", PROBLEMS, ids=[p.name for p in PROBLEMS])
def test_matches_scipy_trf(p):
    ours, ref, ok, info = compare(p)
    assert ok, info
    np.testing.assert_array_equal(ours.active_mask, ref.active_mask, err_msg=info)
    assert np.all(ours.x >= p.lb) and np.all(ours.x <= p.ub)
    # optimality is the projected gradient ||x - P(x - g)||_inf
    assert ours.optimality == _projected_gradient(ours.x, ours.grad, p.lb, p.ub)


def test_enough_problems():
    if not NIST_DATA.is_dir():
        pytest.skip(f"NIST StRD data not found at {NIST_DATA} (kept outside the repo)")
    assert len(PROBLEMS) >= 20
    # each problem has a bound active at scipy's solution or a finite bound (the bounds bite)
    assert all(np.any(np.isfinite(p.lb) | np.isfinite(p.ub)) for p in PROBLEMS)


NIELSEN = [p for p in MGH + CURVES if p.name not in ("powell-singular", "brown-badly-scaled")]


@pytest.mark.parametrize("p", NIELSEN, ids=[p.name for p in NIELSEN])
def test_nielsen_direction_matches_scipy(p):
    """The bounded iteration with Nielsen's damping and another direction method."""
    ours, _, ok, info = compare(p, direction="dense")
    assert ok, info
    assert ours.direction == "dense"


ROSEN = MGH[0]


def test_projected_gradient_not_gradient():
    """At a solution on a bound the gradient is not zero; optimality (projected) is."""
    res = sl.least_squares(ROSEN.fun, ROSEN.x0, jac=ROSEN.jac, bounds=(ROSEN.lb, ROSEN.ub))
    assert res.x[0] == 0.5 and res.x[1] == pytest.approx(0.25, rel=1e-10)
    assert abs(float(res.grad[0])) > 0.1
    assert res.optimality < 1e-8 and res.status == 1
    assert res.active_mask.tolist() == [1, 0]


def test_scipy_bound_forms_and_broadcasting():
    """A scalar side broadcasts, a Bounds object works, mixed infinite and finite bounds."""
    p = CURVES[0]
    base = sl.least_squares(p.fun, p.x0, jac=p.jac, bounds=(p.lb, p.ub))
    for bounds in ((0.0, np.inf), scipy_optimize.Bounds(np.zeros(3), np.full(3, np.inf))):
        res = sl.least_squares(p.fun, p.x0, jac=p.jac, bounds=bounds)
        np.testing.assert_array_equal(res.x, base.x)
    assert base.active_mask.tolist() == [0, 0, -1] and base.x[2] == 0.0
    free = sl.least_squares(p.fun, p.x0, jac=p.jac)
    assert free.x[2] < 0 and free.cost < base.cost  # the bound bites


@pytest.mark.parametrize("scheme", ["2-point", "3-point"])
def test_finite_differences_stay_feasible(scheme):
    """Difference steps turn back at the bounds (x0 on a bound, solution on a bound)."""
    p = CURVES[0]
    x0 = np.array([1.0, 0.5, 0.0])  # on the lower bound of c
    lb, ub = np.zeros(3), np.array([np.inf, 0.65, np.inf])  # k <= 0.65 cuts k ~ 0.7
    res = sl.least_squares(feasible(p.fun, lb, ub), x0, jac=scheme, bounds=(lb, ub), **TOL)
    ref = scipy_optimize.least_squares(p.fun, x0, jac=scheme, bounds=(lb, ub), **TOL)
    assert res.success
    assert res.cost <= ref.cost * (1 + 1e-8)
    np.testing.assert_array_equal(res.active_mask, ref.active_mask)
    assert res.active_mask.tolist() == [0, 1, -1]


def test_start_on_bound_and_fixed_variable():
    """x0 on a bound that the gradient pushes against: x stays there, exactly."""
    p = MGH[-1]  # linear full rank, x0[3] = lb[3]
    res = sl.least_squares(feasible(p.fun, p.lb, p.ub), p.x0, jac=p.jac, bounds=(p.lb, p.ub))
    assert res.x[3] == -1.0 and res.x[1] == 0.5
    assert res.success


@pytest.mark.parametrize("loss", ["soft_l1", "huber", "cauchy"])
def test_robust_loss_with_bounds(loss):
    y = Y_DECAY.copy()
    y[[4, 17]] += 2.0

    def fun(q):
        return q[0] * np.exp(-q[1] * T_DECAY) + q[2] - y

    lb, ub = np.zeros(3), np.full(3, np.inf)
    x0 = np.array([1.0, 1.0, 0.5])
    jac = complex_step(fun)
    kw = dict(loss=loss, f_scale=0.1, **TOL)
    res = sl.least_squares(feasible(fun, lb, ub), x0, jac=jac, bounds=(lb, ub), **kw)
    ref = scipy_optimize.least_squares(fun, x0, jac=jac, bounds=(lb, ub), **kw)
    assert res.success
    assert res.cost <= ref.cost * (1 + 1e-8) or np.allclose(res.x, ref.x, rtol=1e-8)
    np.testing.assert_array_equal(res.active_mask, ref.active_mask)


def test_float32():
    p = CURVES[0]
    t, y = np.float32(T_DECAY), np.float32(Y_DECAY)
    lb, ub = np.zeros(3, np.float32), np.full(3, np.inf, np.float32)

    def fun(q):
        assert q.dtype == np.float32 and np.all(q >= lb)
        return q[0] * np.exp(-q[1] * t) + q[2] - y

    res = sl.least_squares(fun, np.float32(p.x0), bounds=(lb, ub))
    ref = sl.least_squares(p.fun, p.x0, jac=p.jac, bounds=(p.lb, p.ub))
    assert res.x.dtype == np.float32 and res.success
    assert res.x[2] == 0.0 and res.active_mask.tolist() == [0, 0, -1]
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-3, atol=1e-4)


def test_unbounded_active_mask_is_zero():
    p = MGH[0]
    res = sl.least_squares(p.fun, p.x0, jac=p.jac)
    assert res.active_mask.tolist() == [0, 0]
    res_inf = sl.least_squares(p.fun, p.x0, jac=p.jac, bounds=(-np.inf, np.inf))
    np.testing.assert_array_equal(res_inf.x, res.x)
    assert res_inf.nfev == res.nfev and res_inf.optimality == res.optimality


@pytest.mark.parametrize("direction", ["nystrom-pcg", "svd"])
def test_matrix_free_jacobian(direction):
    """A LinearOperator Jacobian: the fixed columns are zeroed inside the products."""
    import array_api_compat.numpy as xpn

    p = CURVES[0]
    dense = p.jac

    def jac(q):
        J = dense(q)
        return sl.FunctionOperator(
            lambda X: J @ X, lambda Y: J.T @ Y, shape=J.shape, dtype=xpn.float64, xp=xpn
        )

    res = sl.least_squares(
        feasible(p.fun, p.lb, p.ub), p.x0, jac=jac, bounds=(p.lb, p.ub), x_scale=1.0,
        direction=direction, **TOL,
    )  # fmt: skip
    ref = scipy_optimize.least_squares(p.fun, p.x0, jac=dense, bounds=(p.lb, p.ub), **TOL)
    assert res.success and res.direction == direction
    assert res.cost <= ref.cost * (1 + 1e-8)
    assert res.active_mask.tolist() == [0, 0, -1]


def test_torch_backend():
    torch = pytest.importorskip("torch")
    t, y = torch.tensor(T_DECAY), torch.tensor(Y_DECAY)
    lb = torch.zeros(3, dtype=torch.float64)

    def fun(q):
        assert bool(torch.all(q >= lb))
        return q[0] * torch.exp(-q[1] * t) + q[2] - y

    x0 = torch.tensor(CURVES[0].x0)
    res = sl.least_squares(fun, x0, bounds=(lb, torch.inf))
    ref = sl.least_squares(CURVES[0].fun, CURVES[0].x0, bounds=(0.0, np.inf))
    assert isinstance(res.x, torch.Tensor) and isinstance(res.active_mask, torch.Tensor)
    np.testing.assert_allclose(res.x.numpy(), ref.x, rtol=1e-7, atol=1e-12)
    assert res.active_mask.tolist() == [0, 0, -1]
