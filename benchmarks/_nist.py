"""The NIST StRD nonlinear regression problems: parser, model formulas, LRE.

The 27 data files live outside the repository, in ``../shared/data/nist_strd`` relative to
the repository root (see :func:`data_dir`); nothing is copied here. Each file's header holds
the model formula, both starting vectors, the certified parameters (11 significant digits)
and the certified residual sum of squares; :data:`MODELS` is our translation of every
formula into Python, written once against a small math namespace so that the same code runs
with NumPy, JAX (for exact Jacobians by ``jax.jacfwd``) and mpmath (for the RSS in
extended precision, which checks the translations and measures the RSS of a solution
without float64 rounding).

This module imports no sketchlinalg code and no relative modules, so tests can load it by
path. NumPy is needed; JAX and mpmath only by the functions that use them.

References
----------
NIST Statistical Reference Datasets, nonlinear regression,
https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml.
McCullough, B. D. Assessing the reliability of statistical software: Part II. The American
Statistician 53(2), 1999 (the LRE).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

__all__ = [
    "LRE_CAP",
    "MODELS",
    "NAMES",
    "Problem",
    "data_dir",
    "exact_rss",
    "jax_functions",
    "load",
    "load_all",
    "lre",
    "solution_lre",
]

LRE_CAP = 11.0  # the certified values carry 11 significant digits

Model = Callable[[Any, Any, Any], Any]


# ------------------------------------------------------------------------------------
# The model formulas, b = (b1, ..., bk) as b[0], ..., x = predictor(s), m = math namespace
# with exp, sin, cos, arctan, log and pi. Comments quote the file headers.
# ------------------------------------------------------------------------------------
def _misra1a(b: Any, x: Any, m: Any) -> Any:  # y = b1*(1-exp[-b2*x])
    return b[0] * (1 - m.exp(-b[1] * x))


def _chwirut(b: Any, x: Any, m: Any) -> Any:  # y = exp[-b1*x]/(b2+b3*x)
    return m.exp(-b[0] * x) / (b[1] + b[2] * x)


def _lanczos(b: Any, x: Any, m: Any) -> Any:  # y = b1*exp(-b2*x) + b3*exp(-b4*x) + b5*exp(-b6*x)
    return b[0] * m.exp(-b[1] * x) + b[2] * m.exp(-b[3] * x) + b[4] * m.exp(-b[5] * x)


def _gauss(b: Any, x: Any, m: Any) -> Any:
    # y = b1*exp( -b2*x ) + b3*exp( -(x-b4)**2 / b5**2 ) + b6*exp( -(x-b7)**2 / b8**2 )
    return (
        b[0] * m.exp(-b[1] * x)
        + b[2] * m.exp(-((x - b[3]) ** 2) / b[4] ** 2)
        + b[5] * m.exp(-((x - b[6]) ** 2) / b[7] ** 2)
    )


def _danwood(b: Any, x: Any, m: Any) -> Any:  # y = b1*x**b2
    return b[0] * x ** b[1]


def _misra1b(b: Any, x: Any, m: Any) -> Any:  # y = b1 * (1-(1+b2*x/2)**(-2))
    return b[0] * (1 - (1 + b[1] * x / 2) ** (-2))


def _kirby2(b: Any, x: Any, m: Any) -> Any:  # y = (b1 + b2*x + b3*x**2) / (1 + b4*x + b5*x**2)
    return (b[0] + b[1] * x + b[2] * x**2) / (1 + b[3] * x + b[4] * x**2)


def _rational_cubic(b: Any, x: Any, m: Any) -> Any:
    # y = (b1+b2*x+b3*x**2+b4*x**3) / (1+b5*x+b6*x**2+b7*x**3)   (Hahn1, Thurber)
    return (b[0] + b[1] * x + b[2] * x**2 + b[3] * x**3) / (
        1 + b[4] * x + b[5] * x**2 + b[6] * x**3
    )


def _nelson(b: Any, x: Any, m: Any) -> Any:  # log[y] = b1 - b2*x1 * exp[-b3*x2]
    x1, x2 = x
    return b[0] - b[1] * x1 * m.exp(-b[2] * x2)


def _mgh17(b: Any, x: Any, m: Any) -> Any:  # y = b1 + b2*exp[-x*b4] + b3*exp[-x*b5]
    return b[0] + b[1] * m.exp(-x * b[3]) + b[2] * m.exp(-x * b[4])


def _misra1c(b: Any, x: Any, m: Any) -> Any:  # y = b1 * (1-(1+2*b2*x)**(-.5))
    return b[0] * (1 - (1 + 2 * b[1] * x) ** (-0.5))


def _misra1d(b: Any, x: Any, m: Any) -> Any:  # y = b1*b2*x*((1+b2*x)**(-1))
    return b[0] * b[1] * x * ((1 + b[1] * x) ** (-1))


def _roszman1(b: Any, x: Any, m: Any) -> Any:  # y = b1 - b2*x - arctan[b3/(x-b4)]/pi
    return b[0] - b[1] * x - m.arctan(b[2] / (x - b[3])) / m.pi


def _enso(b: Any, x: Any, m: Any) -> Any:
    # y = b1 + b2*cos( 2*pi*x/12 ) + b3*sin( 2*pi*x/12 )
    #        + b5*cos( 2*pi*x/b4 ) + b6*sin( 2*pi*x/b4 )
    #        + b8*cos( 2*pi*x/b7 ) + b9*sin( 2*pi*x/b7 )
    w = 2 * m.pi * x
    return (
        b[0]
        + b[1] * m.cos(w / 12)
        + b[2] * m.sin(w / 12)
        + b[4] * m.cos(w / b[3])
        + b[5] * m.sin(w / b[3])
        + b[7] * m.cos(w / b[6])
        + b[8] * m.sin(w / b[6])
    )


def _mgh09(b: Any, x: Any, m: Any) -> Any:  # y = b1*(x**2+x*b2) / (x**2+x*b3+b4)
    return b[0] * (x**2 + x * b[1]) / (x**2 + x * b[2] + b[3])


def _thurber(b: Any, x: Any, m: Any) -> Any:
    return _rational_cubic(b, x, m)


def _boxbod(b: Any, x: Any, m: Any) -> Any:  # y = b1*(1-exp[-b2*x])
    return b[0] * (1 - m.exp(-b[1] * x))


def _rat42(b: Any, x: Any, m: Any) -> Any:  # y = b1 / (1+exp[b2-b3*x])
    return b[0] / (1 + m.exp(b[1] - b[2] * x))


def _mgh10(b: Any, x: Any, m: Any) -> Any:  # y = b1 * exp[b2/(x+b3)]
    return b[0] * m.exp(b[1] / (x + b[2]))


def _eckerle4(b: Any, x: Any, m: Any) -> Any:  # y = (b1/b2) * exp[-0.5*((x-b3)/b2)**2]
    return (b[0] / b[1]) * m.exp(-0.5 * ((x - b[2]) / b[1]) ** 2)


def _rat43(b: Any, x: Any, m: Any) -> Any:  # y = b1 / ((1+exp[b2-b3*x])**(1/b4))
    return b[0] / ((1 + m.exp(b[1] - b[2] * x)) ** (1 / b[3]))


def _bennett5(b: Any, x: Any, m: Any) -> Any:  # y = b1 * (b2+x)**(-1/b3)
    return b[0] * (b[1] + x) ** (-1 / b[2])


MODELS: dict[str, Model] = {
    "Misra1a": _misra1a,
    "Chwirut2": _chwirut,
    "Chwirut1": _chwirut,
    "Lanczos3": _lanczos,
    "Gauss1": _gauss,
    "Gauss2": _gauss,
    "DanWood": _danwood,
    "Misra1b": _misra1b,
    "Kirby2": _kirby2,
    "Hahn1": _rational_cubic,
    "Nelson": _nelson,
    "MGH17": _mgh17,
    "Lanczos1": _lanczos,
    "Lanczos2": _lanczos,
    "Gauss3": _gauss,
    "Misra1c": _misra1c,
    "Misra1d": _misra1d,
    "Roszman1": _roszman1,
    "ENSO": _enso,
    "MGH09": _mgh09,
    "Thurber": _thurber,
    "BoxBOD": _boxbod,
    "Rat42": _rat42,
    "MGH10": _mgh10,
    "Eckerle4": _eckerle4,
    "Rat43": _rat43,
    "Bennett5": _bennett5,
}
"""Model formula per dataset; NIST's order (lower, average, higher difficulty)."""

NAMES: tuple[str, ...] = tuple(MODELS)

# Nelson's response is log(y): its residual is log(y) - model.
LOG_RESPONSE = frozenset({"Nelson"})


@dataclass(frozen=True)
class Problem:
    """One NIST StRD nonlinear regression problem, as parsed from its file.

    Attributes
    ----------
    name : str
    difficulty : str
        ``"Lower"``, ``"Average"`` or ``"Higher"``.
    y : ndarray of shape (n_obs,)
        The response (``log(y)`` for Nelson is applied by the residual functions).
    x : ndarray of shape (n_obs, n_predictors)
    start1, start2, certified, certified_sd : ndarray of shape (k,)
    certified_rss : float
    text : dict
        The same numbers as decimal strings (``"y"``, ``"x"``: lists per observation,
        ``"certified"``, ``"certified_rss"``), for extended-precision evaluation.
    """

    name: str
    difficulty: str
    y: np.ndarray
    x: np.ndarray
    start1: np.ndarray
    start2: np.ndarray
    certified: np.ndarray
    certified_sd: np.ndarray
    certified_rss: float
    text: dict[str, Any]

    @property
    def n_params(self) -> int:
        """Number of parameters ``k``."""
        return int(self.certified.shape[0])

    def start(self, which: int) -> np.ndarray:
        """Starting vector 1 or 2."""
        if which not in (1, 2):
            raise ValueError(f"which must be 1 or 2, got {which}")
        return self.start1 if which == 1 else self.start2

    def predictors(self, x: Any) -> Any:
        """What the model takes as ``x``: the column, or (x1, x2) for Nelson."""
        return (x[:, 0], x[:, 1]) if x.shape[1] > 1 else x[:, 0]

    def response(self, y: Any, m: Any) -> Any:
        """The response the model fits (``log(y)`` for Nelson)."""
        return m.log(y) if self.name in LOG_RESPONSE else y

    def residual_numpy(self) -> Callable[[np.ndarray], np.ndarray]:
        """``b -> response - model(b)`` in float64 NumPy.

        Overflow and invalid operations at far-away trial points give Inf/NaN residuals
        silently (the solvers reject such points); no floating-point warning is raised.
        """
        model = MODELS[self.name]
        target = self.response(self.y, np)
        xs = self.predictors(self.x)

        def residual(b: np.ndarray) -> np.ndarray:
            with np.errstate(all="ignore"):
                return np.asarray(target - model(b, xs, np), dtype=np.float64)

        return residual

    def jacobian_complex_step(self) -> Callable[[np.ndarray], np.ndarray]:
        """``b -> J(b)`` by complex-step differentiation, exact to rounding.

        ``J[:, j] = Im r(b + i h e_j) / h`` with ``h = 1e-30 max(1, |b_j|)``: no
        difference of two function values is formed, so there is no cancellation and the
        truncation error ``O(h^2)`` is far below float64 rounding (Squire and Trapp,
        SIAM Review 40, 1998). Every model here is analytic in its parameters. All columns
        come from one vectorized evaluation. Needs no JAX (no compilation), which keeps
        the tests fast.
        """
        model = MODELS[self.name]
        cols = self.predictors(self.x)
        xs = (cols[0][:, None], cols[1][:, None]) if isinstance(cols, tuple) else cols[:, None]
        k = self.n_params

        def jacobian(b: np.ndarray) -> np.ndarray:
            h = 1e-30 * np.maximum(1.0, np.abs(b))
            B = b[:, None] + 1j * np.diag(h)  # column j perturbs b_j
            with np.errstate(all="ignore"):
                out = model([B[i][None, :] for i in range(k)], xs, np)
            return np.asarray(-out.imag / h[None, :], dtype=np.float64)

        return jacobian


def data_dir(repo_root: Path | None = None) -> Path:
    """``<repo_root>/../shared/data/nist_strd`` (the default root is this file's repo)."""
    root = Path(__file__).resolve().parents[1] if repo_root is None else repo_root
    return root.parent / "shared" / "data" / "nist_strd"


_DATA_LINES = re.compile(r"^\s*Data\s+\(lines\s+(\d+)\s+to\s+(\d+)\)")
_PARAM = re.compile(r"^\s*b(\d+)\s*=\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")
_RSS = re.compile(r"Residual Sum of Squares:\s*(\S+)")
_LEVEL = re.compile(r"(Lower|Average|Higher) Level of Difficulty")


def load(name: str, directory: Path | None = None) -> Problem:
    """Parse ``<directory>/<name>.dat``.

    The header states where the data lie (``Data (lines a to b)``); the parameter lines
    read ``bk = start1 start2 certified sd``.
    """
    path = (data_dir() if directory is None else directory) / f"{name}.dat"
    lines = path.read_text(encoding="ascii").splitlines()
    header = "\n".join(lines[:60])
    match = next((_DATA_LINES.match(line) for line in lines[:15] if _DATA_LINES.match(line)), None)
    if match is None:
        raise ValueError(f"{path}: no 'Data (lines a to b)' in the header")
    first, last = int(match.group(1)), int(match.group(2))
    params: dict[int, tuple[str, ...]] = {}
    for line in lines[:60]:
        pm = _PARAM.match(line)
        if pm:
            params[int(pm.group(1))] = pm.groups()[1:]
    k = len(params)
    if sorted(params) != list(range(1, k + 1)):
        raise ValueError(f"{path}: parameters {sorted(params)} are not b1..bk")
    rss_match = _RSS.search(header)
    level = _LEVEL.search(header)
    if rss_match is None or level is None:
        raise ValueError(f"{path}: no certified RSS or difficulty level in the header")
    rows = [lines[i - 1].split() for i in range(first, last + 1)]
    if any(len(r) != len(rows[0]) for r in rows):
        raise ValueError(f"{path}: ragged data lines")
    cols = [[float(v) for v in r] for r in rows]
    table = np.array(cols, dtype=np.float64)
    vec = [params[i] for i in range(1, k + 1)]
    return Problem(
        name=name,
        difficulty=level.group(1),
        y=table[:, 0],
        x=table[:, 1:],
        start1=np.array([float(v[0]) for v in vec]),
        start2=np.array([float(v[1]) for v in vec]),
        certified=np.array([float(v[2]) for v in vec]),
        certified_sd=np.array([float(v[3]) for v in vec]),
        certified_rss=float(rss_match.group(1)),
        text={
            "y": [r[0] for r in rows],
            "x": [r[1:] for r in rows],
            "certified": [v[2] for v in vec],
            "certified_rss": rss_match.group(1),
        },
    )


def load_all(directory: Path | None = None) -> dict[str, Problem]:
    """Every problem of :data:`NAMES`, keyed by name."""
    return {name: load(name, directory) for name in NAMES}


def lre(value: float, certified: float, cap: float = LRE_CAP) -> float:
    """Log relative error ``-log10(|value - certified| / |certified|)`` in ``[0, cap]``.

    A non-finite ``value`` scores 0.
    """
    if not math.isfinite(value):
        return 0.0
    if value == certified:
        return cap
    rel = abs(value - certified) / abs(certified)
    return float(min(cap, max(0.0, -math.log10(rel))))


def exact_rss(problem: Problem, b: Any, digits: int = 50) -> float:
    """Residual sum of squares at ``b`` in ``digits``-digit arithmetic (mpmath).

    ``b`` is a sequence of floats (taken exactly) or decimal strings; the data are read
    from their decimal strings. Needs mpmath.
    """
    import mpmath

    ctx = mpmath.mp.clone()
    ctx.dps = digits
    m = SimpleNamespace(
        exp=ctx.exp, sin=ctx.sin, cos=ctx.cos, arctan=ctx.atan, log=ctx.log, pi=ctx.pi
    )
    bs = [ctx.mpf(v) for v in (b if isinstance(b[0], str) else [float(v) for v in b])]
    model = MODELS[problem.name]
    total = ctx.mpf(0)
    for y_s, x_s in zip(problem.text["y"], problem.text["x"], strict=True):
        xs = tuple(ctx.mpf(v) for v in x_s)
        target = problem.response(ctx.mpf(y_s), m)
        r = target - model(bs, xs if len(xs) > 1 else xs[0], m)
        total += r * r
    return float(total)


def solution_lre(problem: Problem, b: np.ndarray, rss: float) -> dict[str, float]:
    """LREs of a solution: per parameter, of the RSS, and their minimum (``"min"``)."""
    params = [lre(float(v), float(c)) for v, c in zip(b, problem.certified, strict=True)]
    rss_lre = lre(rss, problem.certified_rss)
    return {"params": min(params), "rss": rss_lre, "min": min(*params, rss_lre)}


def jax_functions(
    problem: Problem,
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray], Any]:
    """Float64 NumPy callables ``(residual, jacobian)`` compiled by JAX, and the JAX residual.

    The Jacobian is exact (``jax.jacfwd``, to rounding). Needs JAX with
    ``jax_enable_x64``; the third item is the residual as a function of a JAX array.
    """
    import jax
    import jax.numpy as jnp

    if jnp.zeros(()).dtype != jnp.float64:
        raise RuntimeError('enable float64 first: jax.config.update("jax_enable_x64", True)')
    model = MODELS[problem.name]
    y = jnp.asarray(problem.y)
    target = problem.response(y, jnp)
    xs = problem.predictors(jnp.asarray(problem.x))

    def residual(b: Any) -> Any:
        return target - model(b, xs, jnp)

    r_jit = jax.jit(residual)
    j_jit = jax.jit(jax.jacfwd(residual))

    def r_np(b: np.ndarray) -> np.ndarray:
        return np.asarray(r_jit(jnp.asarray(b)))

    def j_np(b: np.ndarray) -> np.ndarray:
        return np.asarray(j_jit(jnp.asarray(b)))

    return r_np, j_np, residual
