r"""Large sparse nonlinear least squares: sketchlinalg.least_squares against scipy's trf/lsmr.

The problem: the discrete nonlinear Poisson (Bratu-type) equation on the unit square,

.. math::

    F(u) = -\Delta_h u + u^3 - f = 0,

5-point Laplacian on an ``N x N`` interior grid (``h = 1 / (N + 1)``, zero Dirichlet
values), with ``f`` manufactured so that ``u* = 3 sin(pi x) sin(2 pi y)`` solves the
discrete equations exactly (the minimum cost is 0). ``n = m = N^2`` unknowns and residuals;
the Jacobian ``J = -Delta_h + diag(3 u^2)`` has 5 non-zeros per row and is passed to both
solvers as the same ``scipy.sparse`` CSR matrix by the same callable. Start: ``u0 = 0``.

Solvers, one after the other in one process, with the BLAS thread pools pinned
(``--threads``, default 2) and the load average recorded:

* ``scipy-trf-lsmr``: ``scipy.optimize.least_squares(method="trf", tr_solver="lsmr")``,
  scipy's method for large sparse problems (the only one: ``"lm"`` and ``tr_solver="exact"``
  densify J), default tolerances;
* ``ours``: ``sketchlinalg.least_squares`` with its defaults (``direction="auto"`` picks
  ``"sparse-direct"``: SuperLU of the sparse ``J_s^T J_s + mu I`` per trial);
* ``ours-pcg`` (``--with-pcg``): ``direction="nystrom-pcg"``, the matrix-free path that
  CuPy and torch sparse Jacobians take.

Reported: wall time, final cost, nfev / njev, status, the error ``max |u - u*|``, and the
speed-up ``t(scipy) / t(ours)`` at our final cost versus scipy's.

Run: ``python -m benchmarks.lsq_sparse [--grid 320] [--threads 2] [--out DIR]``
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse as sp

import sketchlinalg as sl

from ._common import (
    Progress,
    format_float,
    load_average,
    machine_info,
    markdown_table,
    peak_rss_mib,
    write_json,
    write_text,
)

ROOT = Path(__file__).resolve().parents[1]


class PDEProblem:
    """``F(u) = -Delta_h u + u^3 - f`` on an ``N x N`` grid; ``u_star`` solves it exactly.

    Parameters
    ----------
    grid : int
        ``N``, interior points per side (``n = N^2`` unknowns).
    dtype : numpy dtype
        float64 (default) or float32.
    """

    def __init__(self, grid: int, dtype: Any = np.float64) -> None:
        self.grid = grid
        h = 1.0 / (grid + 1)
        t = np.arange(1, grid + 1) * h
        X, Y = np.meshgrid(t, t, indexing="ij")
        one_d = sp.diags(
            [-np.ones(grid - 1), 2.0 * np.ones(grid), -np.ones(grid - 1)], [-1, 0, 1]
        ) / (h * h)
        eye = sp.identity(grid)
        self.laplacian = (sp.kron(one_d, eye) + sp.kron(eye, one_d)).tocsr().astype(dtype)
        self.u_star = (3.0 * np.sin(np.pi * X) * np.sin(2.0 * np.pi * Y)).ravel().astype(dtype)
        self.f = self.laplacian @ self.u_star + self.u_star**3
        self.x0 = np.zeros(grid * grid, dtype=dtype)
        self.jac_calls = 0

    def fun(self, u: np.ndarray) -> np.ndarray:
        """The residuals ``-Delta_h u + u^3 - f``."""
        return self.laplacian @ u + u**3 - self.f

    def jac(self, u: np.ndarray) -> sp.csr_matrix:
        """``J = -Delta_h + diag(3 u^2)`` (CSR, 5 non-zeros per row)."""
        self.jac_calls += 1
        return (self.laplacian + sp.diags(3.0 * u * u)).tocsr()


def _run(name: str, problem: PDEProblem, progress: Progress) -> dict[str, Any]:
    problem.jac_calls = 0
    start = time.perf_counter()
    if name == "scipy-trf-lsmr":
        res = scipy.optimize.least_squares(
            problem.fun, problem.x0, jac=problem.jac, method="trf", tr_solver="lsmr"
        )
        direction = "trf/lsmr"
    else:
        res = sl.least_squares(
            problem.fun,
            problem.x0,
            jac=problem.jac,
            direction="auto" if name == "ours" else "nystrom-pcg",
        )
        direction = res.direction
    seconds = time.perf_counter() - start
    row = {
        "solver": name,
        "direction": direction,
        "seconds": seconds,
        "cost": float(res.cost),
        "nfev": int(res.nfev),
        "njev": int(res.njev if res.njev is not None else problem.jac_calls),
        "status": int(res.status),
        "message": str(res.message),
        "max_error": float(np.max(np.abs(res.x - problem.u_star))),
        "optimality": float(res.optimality),
    }
    progress(
        f"{name}: {seconds:.1f} s, cost {row['cost']:.3e}, nfev {row['nfev']}, "
        f"status {row['status']}, max|u - u*| {row['max_error']:.2e}"
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=320, help="N (n = N^2 unknowns)")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads")
    parser.add_argument("--with-pcg", action="store_true", help="also time nystrom-pcg")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    progress = Progress("lsq_sparse")
    problem = PDEProblem(args.grid)
    n = args.grid**2
    progress(f"grid {args.grid} x {args.grid}: n = m = {n}, nnz(J) = {problem.jac(problem.x0).nnz}")
    solvers = ["scipy-trf-lsmr", "ours"] + (["ours-pcg"] if args.with_pcg else [])
    from threadpoolctl import threadpool_limits  # in the bench extra (scikit-learn's)

    load_before = load_average()
    with threadpool_limits(limits=args.threads):
        rows = [_run(name, problem, progress) for name in solvers]
    load_after = load_average()
    scipy_row = next(r for r in rows if r["solver"] == "scipy-trf-lsmr")
    for r in rows:
        r["speedup_vs_scipy"] = scipy_row["seconds"] / r["seconds"]
        r["cost_at_most_scipy"] = r["cost"] <= scipy_row["cost"]
    result = {
        "benchmark": "lsq_sparse",
        "problem": (
            f"-Delta_h u + u^3 = f on a {args.grid} x {args.grid} grid, u* = 3 sin(pi x) "
            "sin(2 pi y), u0 = 0, analytic scipy.sparse CSR Jacobian"
        ),
        "n": n,
        "m": n,
        "initial_cost": 0.5 * float(np.sum(problem.fun(problem.x0) ** 2)),
        "threads": args.threads,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "peak_rss_mib": peak_rss_mib(),
        "machine": machine_info(ROOT),
        "command": " ".join(
            ["python -m benchmarks.lsq_sparse", *(sys.argv[1:] if argv is None else argv)]
        ),
        "rows": rows,
    }
    table = markdown_table(
        [
            "solver",
            "direction",
            "time (s)",
            "speed-up vs scipy",
            "final cost",
            "cost <= scipy's",
            "nfev",
            "njev",
            "status",
            "max abs(u - u*)",
        ],
        [
            [
                r["solver"],
                r["direction"],
                f"{r['seconds']:.1f}",
                f"{r['speedup_vs_scipy']:.1f}x",
                format_float(r["cost"]),
                "yes" if r["cost_at_most_scipy"] else "no",
                str(r["nfev"]),
                str(r["njev"]),
                str(r["status"]),
                format_float(r["max_error"]),
            ]
            for r in rows
        ],
    )
    text = (
        f"# Large sparse least squares (n = {n})\n\n{result['problem']}; initial cost "
        f"{result['initial_cost']:.3g}. One process, solvers in turn, {args.threads} BLAS "
        f"threads; load average {load_before} before, {load_after} after; "
        f"{result['machine']['cpu_model']}, {result['machine']['cpu_count']} CPUs.\n\n"
        f"Command: `{result['command']}`\n\n{table}\n"
    )
    stem = "lsq_sparse" if args.grid == 320 else f"lsq_sparse_{args.grid}"
    write_json(args.out / f"{stem}.json", result)
    write_text(args.out / f"{stem}.md", text)
    print(text)
    ours = next(r for r in rows if r["solver"] == "ours")
    return 0 if math.isfinite(ours["cost"]) else 1


if __name__ == "__main__":
    sys.exit(main())
