"""The PINN benchmark problems (algorithms.md section 7), each defined once for every framework.

A :class:`Problem` holds everything that is not framework code: the domain, the exact
solution, the residual of each term (written against a math namespace ``m`` and the
differential operators ``d`` of an adapter, so that the same source runs with
``jax.numpy`` + ``sketchlinalg_jax`` and with ``torch`` + ``sketchlinalg_torch``), the
collocation points (NumPy arrays, converted by each runner), their quadrature weights and the
evaluation set. Residual rows are weighted by ``sqrt(weight / N_k)`` by ``pinn_system``
(algorithms.md section 1), so ``1/2 ||r||^2`` approximates the continuous loss.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["EXTRA_PROBLEMS", "PROBLEMS", "Problem", "TermSpec", "make_problem", "with_laplacian"]

PI = math.pi
Residual = Callable[[Any, Any, Callable[[Any], Any], Any], Any]
Exact = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class TermSpec:
    """One family of residual rows.

    Attributes
    ----------
    name : str
        Label (``"interior"``, ``"boundary"``, ...).
    residual : callable
        ``residual(m, d, u, x) -> scalar`` for one point ``x``: ``m`` is the array
        namespace (``jax.numpy`` or ``torch``), ``d`` the adapter (its ``laplacian``,
        ``gradient``, ``time_derivative``), ``u`` the network at the current parameters.
    weight : float
        Measure of the term's domain (the quadrature weight of the whole term).
    """

    name: str
    residual: Residual
    weight: float


@dataclass(frozen=True)
class Problem:
    """A PINN benchmark problem.

    Attributes
    ----------
    name : str
        Command-line name.
    title : str
        One-line description with the PDE.
    dim : int
        Input dimension of the network.
    widths : list of int
        Layer widths of the tanh MLP of the full benchmark.
    quick_widths : list of int
        Layer widths for ``--quick`` (CI smoke) runs.
    terms : list of TermSpec
    points : callable
        ``points(rng, quick) -> list of (N_k, d_k) float64 arrays``, one per term. ``rng`` is
        a ``numpy.random.Generator`` (used only by problems with random points).
    resample : bool
        Draw fresh random points every step (``points`` is called again with the run's rng).
    exact : callable
        ``exact(m, X) -> (n,)`` values of the exact solution at the rows of ``X``.
    eval_points : callable
        ``eval_points(quick) -> (n, dim)`` float64 array of evaluation points.
    eval_note : str
        How the evaluation points are laid out.
    settings : dict
        Problem parameters recorded with every run (e.g. ``beta``).
    """

    name: str
    title: str
    dim: int
    widths: list[int]
    quick_widths: list[int]
    terms: list[TermSpec]
    points: Callable[[np.random.Generator, bool], list[np.ndarray]]
    exact: Callable[[Any, Any], Any]
    eval_points: Callable[[bool], np.ndarray]
    eval_note: str
    resample: bool = False
    settings: dict[str, Any] = field(default_factory=dict)


# -- helpers --------------------------------------------------------------------------


def _midpoints(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` cell midpoints of ``(lo, hi)``."""
    return lo + (hi - lo) * (np.arange(n) + 0.5) / n


def _grid(*axes: np.ndarray) -> np.ndarray:
    """Tensor grid of the axes as an ``(n, len(axes))`` array (first axis slowest)."""
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([a.ravel() for a in mesh], axis=1)


def _square_boundary(n_side: int) -> np.ndarray:
    """``4 n_side`` points on the boundary of the unit square, each corner once."""
    s = np.arange(n_side) / n_side
    zero, one = np.zeros_like(s), np.ones_like(s)
    return np.concatenate(
        [
            np.stack([s, zero], 1),
            np.stack([one, s], 1),
            np.stack([1 - s, one], 1),
            np.stack([zero, 1 - s], 1),
        ]
    )


def _sin_prod(m: Any, X: Any) -> Any:
    return m.sin(PI * X[..., 0]) * m.sin(PI * X[..., 1])


# -- 1. Poisson 2D ----------------------------------------------------------------------


def _poisson2d() -> Problem:
    def interior(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        return -d.laplacian(u, x) - 2 * PI**2 * _sin_prod(m, x)

    def boundary(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        return u(x)

    def points(rng: np.random.Generator, quick: bool) -> list[np.ndarray]:
        n = 6 if quick else 30
        m = _midpoints(0.0, 1.0, n)
        return [_grid(m, m), _square_boundary(n)]

    def eval_points(quick: bool) -> np.ndarray:
        g = np.linspace(0.0, 1.0, 20 if quick else 100)
        return _grid(g, g)

    return Problem(
        name="poisson2d",
        title="Poisson 2D: -Laplace u = 2 pi^2 sin(pi x) sin(pi y) on (0,1)^2, u = 0 on the "
        "boundary",
        dim=2,
        widths=[2, 64, 64, 1],
        quick_widths=[2, 8, 1],
        terms=[TermSpec("interior", interior, 1.0), TermSpec("boundary", boundary, 4.0)],
        points=points,
        exact=_sin_prod,
        eval_points=eval_points,
        eval_note="uniform 100 x 100 grid of [0,1]^2 (boundary included)",
    )


# -- 2. Heat 1D -------------------------------------------------------------------------


def _heat1d() -> Problem:
    kappa = 0.25

    def interior(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        # x = (t, x); u_t - kappa u_xx (both from one forward pass)
        _, grad, u_xx = d.derivatives(u, x, laplacian_dims=[1])
        return grad[0] - kappa * u_xx

    def initial(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        return u(x) - m.sin(PI * x[1])

    def boundary(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        return u(x)

    def points(rng: np.random.Generator, quick: bool) -> list[np.ndarray]:
        n = 6 if quick else 30
        m = _midpoints(0.0, 1.0, n)
        zero, one = np.zeros(n), np.ones(n)
        initial_pts = np.stack([zero, m], 1)
        boundary_pts = np.concatenate([np.stack([m, zero], 1), np.stack([m, one], 1)])
        return [_grid(m, m), initial_pts, boundary_pts]

    def exact(m: Any, X: Any) -> Any:
        return m.exp(-(PI**2) * kappa * X[..., 0]) * m.sin(PI * X[..., 1])

    def eval_points(quick: bool) -> np.ndarray:
        g = np.linspace(0.0, 1.0, 20 if quick else 100)
        return _grid(g, g)

    return Problem(
        name="heat1d",
        title="Heat 1D: u_t = u_xx / 4 on (0,1) x (0,1), u(0,x) = sin(pi x), u(t,0) = u(t,1) = 0",
        dim=2,
        widths=[2, 64, 64, 1],
        quick_widths=[2, 8, 1],
        terms=[
            TermSpec("interior", interior, 1.0),
            TermSpec("initial", initial, 1.0),
            TermSpec("boundary", boundary, 2.0),
        ],
        points=points,
        exact=exact,
        eval_points=eval_points,
        eval_note="uniform 100 x 100 grid of [0,1]^2 in (t, x)",
    )


# -- 3. Nonlinear boundary-value problem ----------------------------------------------


def _nonlinear_bvp() -> Problem:
    def interior(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        c = m.cos(PI * x[0])
        f = PI**2 * c + c**3
        value, _, lap = d.derivatives(u, x)  # u and its Laplacian from one pass
        return -lap + value**3 - f

    def boundary(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        return u(x) + 1.0

    def points(rng: np.random.Generator, quick: bool) -> list[np.ndarray]:
        n = 16 if quick else 200
        return [_midpoints(-1.0, 1.0, n)[:, None], np.array([[-1.0], [1.0]])]

    def exact(m: Any, X: Any) -> Any:
        return m.cos(PI * X[..., 0])

    def eval_points(quick: bool) -> np.ndarray:
        return np.linspace(-1.0, 1.0, 100 if quick else 2000)[:, None]

    return Problem(
        name="nonlinear",
        title="Nonlinear BVP: -u'' + u^3 = pi^2 cos(pi x) + cos(pi x)^3 on (-1,1), u(+-1) = -1",
        dim=1,
        widths=[1, 64, 64, 1],
        quick_widths=[1, 8, 1],
        terms=[TermSpec("interior", interior, 2.0), TermSpec("boundary", boundary, 2.0)],
        points=points,
        exact=exact,
        eval_points=eval_points,
        eval_note="2,000 equispaced points of [-1,1]",
    )


# -- 4. Transport -----------------------------------------------------------------------


def _transport(beta: float) -> Problem:
    two_pi = 2 * PI

    def interior(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        g = d.derivatives(u, x).gradient  # forward: each layer's weights used once
        return g[0] + beta * g[1]

    def initial(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        return u(x) - m.sin(x[1])

    def periodic(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        # x = (t,); u(t, 0) - u(t, 2 pi).
        t = x[0]
        return u(m.stack([t, 0 * t])) - u(m.stack([t, 0 * t + two_pi]))

    def points(rng: np.random.Generator, quick: bool) -> list[np.ndarray]:
        n = 6 if quick else 30
        t = _midpoints(0.0, 1.0, n)
        xs = _midpoints(0.0, two_pi, n)
        x0 = _midpoints(0.0, two_pi, 2 * n)
        return [_grid(t, xs), np.stack([np.zeros_like(x0), x0], 1), t[:, None]]

    def exact(m: Any, X: Any) -> Any:
        return m.sin(X[..., 1] - beta * X[..., 0])

    def eval_points(quick: bool) -> np.ndarray:
        n = 20 if quick else 100
        return _grid(np.linspace(0.0, 1.0, n), np.linspace(0.0, two_pi, n))

    return Problem(
        name="transport",
        title=f"Transport: u_t + {beta:g} u_x = 0 on (0,1) x (0, 2 pi), periodic in x, "
        "u(0,x) = sin(x)",
        dim=2,
        widths=[2, 64, 64, 1],
        quick_widths=[2, 8, 1],
        terms=[
            TermSpec("interior", interior, two_pi),
            TermSpec("initial", initial, two_pi),
            TermSpec("periodic", periodic, 1.0),
        ],
        points=points,
        exact=exact,
        eval_points=eval_points,
        eval_note="uniform 100 x 100 grid of [0,1] x [0, 2 pi] in (t, x)",
        settings={"beta": beta},
    )


# -- 5. Poisson 5D with resampled points ------------------------------------------------


def _sum_of_waves(dim: int, wave: str) -> tuple[Exact, Residual, Residual]:
    """``u* = sum_i wave(pi x_i)`` (``wave``: ``"sin"`` or ``"cos"``, so that
    ``-Laplace u* = pi^2 u*``): the exact solution and the interior and boundary residuals."""

    def exact(m: Any, X: Any) -> Any:
        return sum(getattr(m, wave)(PI * X[..., i]) for i in range(dim))

    def interior(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        return -d.laplacian(u, x) - PI**2 * exact(m, x)

    def boundary(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        return u(x) - exact(m, x)

    return exact, interior, boundary


def _poisson5d() -> Problem:
    dim = 5
    exact, interior, boundary = _sum_of_waves(dim, "sin")

    def points(rng: np.random.Generator, quick: bool) -> list[np.ndarray]:
        # 800 + 200 points per step: the "1k" batch of the ENGD-Woodbury paper's public 5D
        # Poisson experiments (Guzman-Cordero et al. 2025). A first run with 3,000 + 500 points
        # took 12-60 s per natural-gradient step on one core (kept in
        # benchmarks/results/pinn/superseded_poisson5d_n3500.jsonl).
        n_int, n_bdry = (64, 16) if quick else (800, 200)
        interior_pts = rng.random((n_int, dim))
        bdry = rng.random((n_bdry, dim))
        face = rng.integers(0, dim, n_bdry)
        side = rng.integers(0, 2, n_bdry).astype(np.float64)
        bdry[np.arange(n_bdry), face] = side
        return [interior_pts, bdry]

    def eval_points(quick: bool) -> np.ndarray:
        return np.random.default_rng(12345).random((500 if quick else 20_000, dim))

    return Problem(
        name="poisson5d",
        title="Poisson 5D: -Laplace u = pi^2 sum sin(pi x_i) on (0,1)^5, u = u* on the "
        "boundary; points resampled every step",
        dim=dim,
        widths=[5, 64, 64, 48, 48, 1],
        quick_widths=[5, 8, 1],
        terms=[TermSpec("interior", interior, 1.0), TermSpec("boundary", boundary, 10.0)],
        points=points,
        exact=exact,
        eval_points=eval_points,
        eval_note="20,000 uniform random points of (0,1)^5 (seed 12345)",
        resample=True,
    )


def _poisson5d_cos() -> Problem:
    """rla-pinns' Poisson 5D (``--boundary_condition=cos_sum``), for the side-by-side runs.

    ``u* = sum_i cos(pi x_i)``, ``-Laplace u = pi^2 u*``; the loss
    ``1/2 mean(interior^2) + 1/2 mean(boundary^2)`` (both weights 1) on 800 + 200 points
    resampled every step and the ``[5, 64, 64, 48, 48, 1]`` tanh MLP: the
    ``mlp-tanh-64-64-48-48`` 1k-point setting of Guzman-Cordero et al. (2025), whose public
    code ``benchmarks/pinn/rla_pinns.py`` runs on the same problem.
    """
    base = _poisson5d()
    exact, interior, boundary = _sum_of_waves(base.dim, "cos")
    return dataclasses.replace(
        base,
        name="poisson5d-cos",
        title="Poisson 5D (rla-pinns' cos_sum): -Laplace u = pi^2 sum cos(pi x_i) on (0,1)^5, "
        "u = u* on the boundary, both loss weights 1; points resampled every step",
        terms=[TermSpec("interior", interior, 1.0), TermSpec("boundary", boundary, 1.0)],
        exact=exact,
    )


# -- problems outside the suite (checks that the defaults were not tuned to it) ---------


def _poisson2d_large() -> Problem:
    """A large source term: u* = 25 sin(2 pi x) sin(3 pi y), an initial loss of ~1e5."""

    def exact(m: Any, X: Any) -> Any:
        return 25.0 * m.sin(2 * PI * X[..., 0]) * m.sin(3 * PI * X[..., 1])

    def interior(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        return -d.laplacian(u, x) - 13 * PI**2 * exact(m, x)

    base = _poisson2d()
    return dataclasses.replace(
        base,
        name="poisson2d-large",
        title="Poisson 2D, large source: -Laplace u = 13 pi^2 u*, u* = 25 sin(2 pi x) "
        "sin(3 pi y) on (0,1)^2, u = 0 on the boundary",
        terms=[TermSpec("interior", interior, 1.0), base.terms[1]],
        exact=exact,
    )


def _reaction1d() -> Problem:
    """A nonlinear reaction-diffusion problem with a small residual scale (1e-3)."""
    eps = 0.05

    def exact(m: Any, X: Any) -> Any:
        return m.tanh(X[..., 0] / (2 * eps)) * m.cos(PI * X[..., 0] / 2)

    def interior(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        def residual_of(v: Callable[[Any], Any]) -> Any:
            value, _, lap = d.derivatives(v, x)
            return -(eps**2) * lap + value**3 - value

        f = residual_of(lambda y: exact(m, y))
        return 1e-3 * (residual_of(u) - f)

    def boundary(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
        return 1e-3 * (u(x) - exact(m, x))

    def points(rng: np.random.Generator, quick: bool) -> list[np.ndarray]:
        n = 16 if quick else 300
        return [_midpoints(-1.0, 1.0, n)[:, None], np.array([[-1.0], [1.0]])]

    def eval_points(quick: bool) -> np.ndarray:
        return np.linspace(-1.0, 1.0, 100 if quick else 2000)[:, None]

    return Problem(
        name="reaction1d",
        title="Reaction-diffusion 1D: -0.05^2 u'' + u^3 - u = f on (-1,1), u* = tanh(10 x) "
        "cos(pi x / 2), residuals scaled by 1e-3",
        dim=1,
        widths=[1, 64, 64, 1],
        quick_widths=[1, 8, 1],
        terms=[TermSpec("interior", interior, 2.0), TermSpec("boundary", boundary, 2.0)],
        points=points,
        exact=exact,
        eval_points=eval_points,
        eval_note="2,000 equispaced points of [-1,1]",
    )


PROBLEMS = ("poisson2d", "heat1d", "nonlinear", "transport", "poisson5d")
#: Problems outside the suite ("all" leaves them out): checks of the untuned defaults, and
#: rla-pinns' Poisson 5D for the side-by-side runs (benchmarks/pinn/rla_pinns.py).
EXTRA_PROBLEMS = ("poisson2d-large", "reaction1d", "poisson5d-cos")


def make_problem(name: str, *, beta: float = 1.0) -> Problem:
    """The problem called ``name`` (one of :data:`PROBLEMS`); ``beta`` is the transport speed."""
    if name == "poisson2d":
        return _poisson2d()
    if name == "heat1d":
        return _heat1d()
    if name == "nonlinear":
        return _nonlinear_bvp()
    if name == "transport":
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
        return _transport(beta)
    if name == "poisson5d":
        return _poisson5d()
    if name == "poisson5d-cos":
        return _poisson5d_cos()
    if name == "poisson2d-large":
        return _poisson2d_large()
    if name == "reaction1d":
        return _reaction1d()
    raise ValueError(f"problem must be one of {PROBLEMS + EXTRA_PROBLEMS}, got {name!r}")


def parameter_count(widths: list[int]) -> int:
    """Weights and biases of an MLP with these layer widths."""
    return sum((a + 1) * b for a, b in itertools.pairwise(widths))


class _Ops:
    """An adapter's differential operators with ``laplacian(..., method=method)``."""

    def __init__(self, adapter: Any, method: str) -> None:
        self._adapter, self._method = adapter, method

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    def laplacian(self, u: Callable[[Any], Any], x: Any) -> Any:
        return self._adapter.laplacian(u, x, method=self._method)


def with_laplacian(problem: Problem, method: str | None) -> Problem:
    """``problem`` whose residuals take the Laplacian by ``method`` (one of the adapter's
    ``LAPLACIAN_METHODS``; ``None``: the adapter's default), for side-by-side runs."""
    if method is None:
        return problem

    def wrap(spec: TermSpec) -> TermSpec:
        def residual(m: Any, d: Any, u: Callable[[Any], Any], x: Any) -> Any:
            return spec.residual(m, _Ops(d, method), u, x)

        return dataclasses.replace(spec, residual=residual)

    settings = {**problem.settings, "laplacian": method}
    return dataclasses.replace(problem, terms=[wrap(t) for t in problem.terms], settings=settings)
