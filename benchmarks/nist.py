"""NIST StRD nonlinear regression: sketchlinalg.least_squares against scipy, by LRE.

All 27 problems x both starting vectors, float64. Solvers (every one gets the same residual
function, the same exact Jacobian from ``jax.jacfwd`` compiled once per problem, the same
tolerances ``ftol = xtol = gtol = 1e-15`` and the same evaluation budget):

* ``ours``: ``sketchlinalg.least_squares`` (``direction="auto"``: SVD + trust region);
* ``ours-dense``: the same with ``direction="dense"`` (normal equations by Cholesky,
  Nielsen's damping): what the SVD buys;
* ``ours-fd`` / ``ours-fd3``: ours with 2-point / 3-point finite differences instead of the
  exact Jacobian;
* ``scipy-lm``, ``scipy-trf``: ``scipy.optimize.least_squares(method="lm" | "trf")``.

Score: LRE ``-log10(|x - c| / |c|)`` capped at 11, minimum over the parameters and the
RSS; the RSS of each solution is evaluated in 50-digit arithmetic (mpmath), see
``tests/test_nist.py``. Two budgets: scipy's default ``max_nfev = 100 n`` (the main table)
and a generous 5,000 evaluations. Times are the median of ``--repeats`` solves (JAX
compilation excluded); set ``OPENBLAS_NUM_THREADS=1`` for steadier timings.

Run: ``OPENBLAS_NUM_THREADS=1 python -m benchmarks.nist [--repeats R] [--out DIR]``
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import scipy.optimize

import sketchlinalg as sl

from . import _nist
from ._common import (
    Progress,
    format_float,
    machine_info,
    markdown_table,
    median,
    write_json,
    write_text,
)

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[1]
TOL: dict[str, Any] = {"ftol": 1e-15, "xtol": 1e-15, "gtol": 1e-15}
SOLVERS = ("ours", "ours-dense", "ours-fd", "ours-fd3", "scipy-lm", "scipy-trf")
TABLE_SOLVERS = ("ours", "ours-fd", "scipy-lm", "scipy-trf")
GENEROUS = 5000
TARGET = 6.0


def _solve(
    solver: str,
    fun: Callable[[np.ndarray], np.ndarray],
    jac: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    max_nfev: int | None,
) -> Any:
    if solver == "ours":
        return sl.least_squares(fun, x0, jac=jac, max_nfev=max_nfev, **TOL)
    if solver == "ours-dense":
        return sl.least_squares(fun, x0, jac=jac, direction="dense", max_nfev=max_nfev, **TOL)
    if solver == "ours-fd":
        return sl.least_squares(fun, x0, jac="2-point", max_nfev=max_nfev, **TOL)
    if solver == "ours-fd3":
        return sl.least_squares(fun, x0, jac="3-point", max_nfev=max_nfev, **TOL)
    method = solver.split("-")[1]
    return scipy.optimize.least_squares(fun, x0, jac=jac, method=method, max_nfev=max_nfev, **TOL)


def run_case(
    problem: _nist.Problem,
    start: int,
    solver: str,
    fun: Callable[[np.ndarray], np.ndarray],
    jac: Callable[[np.ndarray], np.ndarray],
    max_nfev: int | None,
    repeats: int,
) -> dict[str, Any]:
    """Solve one problem from one start ``repeats`` times; score the last solution."""
    times = []
    res: Any = None
    x0 = problem.start(start)
    for _ in range(repeats):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # scipy's overflow warnings at wild trial points
            t0 = time.perf_counter()
            res = _solve(solver, fun, jac, x0, max_nfev)
            times.append(time.perf_counter() - t0)
    x = np.asarray(res.x, dtype=np.float64)
    finite = bool(np.all(np.isfinite(x)))
    rss_exact = _nist.exact_rss(problem, x) if finite else float("nan")
    score = _nist.solution_lre(problem, x, rss_exact)
    return {
        "problem": problem.name,
        "difficulty": problem.difficulty,
        "start": start,
        "solver": solver,
        "max_nfev": max_nfev,
        "lre": score["min"],
        "lre_params": score["params"],
        "lre_rss": score["rss"],
        "lre_rss_float64": _nist.lre(2.0 * float(res.cost), problem.certified_rss),
        "nfev": int(res.nfev),
        "njev": None if res.njev is None else int(res.njev),
        "status": int(res.status),
        "success": bool(res.success),
        "message": str(res.message),
        "time_s": median(times),
        "rss_exact": rss_exact,
        "x": x.tolist(),
    }


def _counts(records: list[dict[str, Any]], budget: int | None) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {s: {1: 0, 2: 0} for s in SOLVERS}
    for r in records:
        if r["max_nfev"] == budget and r["lre"] >= TARGET:
            out[r["solver"]][r["start"]] += 1
    return out


def _markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    machine = meta["machine"]
    lines = [
        "# NIST StRD nonlinear regression: sketchlinalg.least_squares vs scipy",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {machine.get('cpu_model')} ({machine.get('cpu_count')} CPUs, "
        f"load {machine.get('load_average_1_5_15min')}), {machine.get('platform')}; "
        f"OPENBLAS_NUM_THREADS={machine.get('env', {}).get('OPENBLAS_NUM_THREADS')}; "
        f"numpy {machine['versions'].get('numpy')}, scipy {machine['versions'].get('scipy')}, "
        f"jax {machine['versions'].get('jax')}; {machine.get('date_utc')}.",
        "",
        "Every solver gets the same float64 residual, the same exact Jacobian (`jax.jacfwd`, "
        "compiled once per problem; the `-fd` rows use finite differences instead) and "
        "`ftol = xtol = gtol = 1e-15`. LRE = -log10(|x - c| / |c|) capped at 11, minimum "
        "over the parameters and the RSS (RSS of the solution evaluated in 50-digit "
        "arithmetic). Target: LRE >= 6.",
        "",
        "## Problems solved to LRE >= 6 (of 27)",
        "",
    ]
    budgets: list[tuple[str, int | None]] = [("100 n (scipy default)", None)]
    budgets.append((f"{GENEROUS}", GENEROUS))
    rows = []
    for solver in SOLVERS:
        row = [f"`{solver}`"]
        for _, budget in budgets:
            c = _counts(records, budget)[solver]
            row += [str(c[1]), str(c[2])]
        rows.append(row)
    headers = ["solver"]
    for label, _ in budgets:
        headers += [f"start 1, max_nfev {label}", f"start 2, max_nfev {label}"]
    lines += [markdown_table(headers, rows), ""]
    lines += [
        "Solvers: `ours` = `sketchlinalg.least_squares` (direction `auto`: SVD + trust "
        "region), `ours-dense` = direction `dense` (Cholesky of the normal equations, "
        "Nielsen damping), `ours-fd` / `ours-fd3` = ours with 2-point / 3-point finite "
        "differences, `scipy-lm` / `scipy-trf` = `scipy.optimize.least_squares`.",
        "",
        "## Side by side (max_nfev = 100 n): LRE / nfev / median time [ms]",
        "",
    ]
    by_key = {(r["problem"], r["start"], r["solver"], r["max_nfev"]): r for r in records}
    headers = ["problem", "start"] + [f"{s}" for s in TABLE_SOLVERS]
    rows = []
    for name in _nist.NAMES:
        for start in (1, 2):
            row = [name, str(start)]
            for solver in TABLE_SOLVERS:
                r = by_key.get((name, start, solver, None))
                if r is None:
                    row.append("-")
                    continue
                mark = "" if r["lre"] >= TARGET else " ✗"
                row.append(
                    f"{r['lre']:.1f}{mark} / {r['nfev']} / {format_float(r['time_s'] * 1e3, 2)}"
                )
            rows.append(row)
    lines += [markdown_table(headers, rows), ""]
    worst = sorted(
        (r for r in records if r["solver"] == "ours" and r["max_nfev"] is None),
        key=lambda r: r["lre"],
    )[:6]
    lines += ["## Lowest scores of `ours` (max_nfev = 100 n)", ""]
    lines += [
        f"- {r['problem']} start {r['start']}: LRE {r['lre']:.1f} (parameters "
        f"{r['lre_params']:.1f}, RSS {r['lre_rss']:.1f}), nfev {r['nfev']}, status "
        f"{r['status']}: {r['message']}"
        for r in worst
    ]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write ``nist.json`` and ``nist.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", type=str, default="", help="comma-separated problem names")
    args = parser.parse_args(argv)
    directory = _nist.data_dir(ROOT)
    if not directory.is_dir():
        print(f"NIST StRD data not found at {directory}", file=sys.stderr)
        return 1
    names = [n for n in args.only.split(",") if n] or list(_nist.NAMES)
    progress = Progress("nist")
    records: list[dict[str, Any]] = []
    compile_s = {}
    for name in names:
        problem = _nist.load(name, directory)
        fun = problem.residual_numpy()
        t0 = time.perf_counter()
        _, jac, _ = _nist.jax_functions(problem)
        jac(problem.start2)
        compile_s[name] = time.perf_counter() - t0
        for start in (1, 2):
            for budget in (None, GENEROUS):
                for solver in SOLVERS:
                    records.append(run_case(problem, start, solver, fun, jac, budget, args.repeats))
            summary = ", ".join(
                f"{r['solver']} {r['lre']:.1f}" for r in records[-len(SOLVERS) * 2 : -len(SOLVERS)]
            )
            progress(f"{name} start {start}: {summary}")
    command = "OPENBLAS_NUM_THREADS=1 python -m benchmarks.nist" + (
        f" --repeats {args.repeats}" if args.repeats != 3 else ""
    )
    meta = {
        "command": command,
        "machine": machine_info(ROOT),
        "tolerances": TOL,
        "budgets": {"default": "100 n (scipy's default)", "generous": GENEROUS},
        "target_lre": TARGET,
        "jax_compile_s": compile_s,
        "counts_lre_ge_6": {
            "max_nfev_100n": _counts(records, None),
            f"max_nfev_{GENEROUS}": _counts(records, GENEROUS),
        },
    }
    write_json(args.out / "nist.json", {**meta, "records": records})
    write_text(args.out / "nist.md", _markdown(records, meta))
    progress(f"wrote {args.out / 'nist.json'} and {args.out / 'nist.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
