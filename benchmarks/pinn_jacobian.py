"""What a natural-gradient step spends on the PINN Jacobian, per Laplacian method, in both
frameworks.

For one benchmark problem (default Poisson 5D: ``[5, 64, 64, 48, 48, 1]`` tanh,
P = 10,065, 800 + 200 points, float64) time, through the public entry points:

* ``jacobian``: ``pinn_system(..., path="materialized")``: the weighted residual and the
  explicit ``N x P`` Jacobian (per-point gradients in the parameters), what every step
  builds, in the default cache-sized blocks of points (the default method also in one block
  of all points, the build before such blocks); in torch into the last build's matrix
  (``workspace=``, as the optimizers do; the default method also into a fresh matrix); in
  JAX into a fresh matrix, the default method also over the last build's, donated
  (``workspace=``, as the optimizers with ``workspace=True`` under a donating jit);
* ``residual``: ``pinn_residual``: one evaluation of the loss, the unit of the line search
  (the grid search evaluates ``k + 2`` of them for a step of ``2^-k``).

Every Laplacian method of each adapter is timed in one run, interleaved over repeats, one
thread (``--threads``), the first call (compilation) excluded; minimum and median reported.

Run: ``python -m benchmarks.pinn_jacobian [--problem poisson5d] [--repeats 9] [--out DIR]
[--tag TAG]`` (writes ``pinn_jacobian.json`` and ``pinn_jacobian.md``, ``pinn_jacobian_TAG.*``
with ``--tag``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    load_average,
    machine_info,
    markdown_table,
    median,
    write_json,
    write_text,
)

ROOT = Path(__file__).resolve().parents[1]


def _jax_cases(problem: Any) -> dict[str, dict[str, Callable[..., Any]]]:
    import jax

    jax.config.update("jax_enable_x64", True)
    import sketchlinalg_jax as slj

    from .pinn._jax import _terms, init_mlp, mlp
    from .pinn.problems import with_laplacian

    params = init_mlp(jax.random.key(0), problem.widths)
    points = [jax.numpy.asarray(p) for p in problem.points(np.random.default_rng(0), False)]
    n_points = sum(int(p.shape[0]) for p in points)
    cases = {}
    for method in slj.LAPLACIAN_METHODS:
        terms = _terms(with_laplacian(problem, method), points)

        residual = jax.jit(lambda p, terms=terms: slj.pinn_residual(mlp, p, terms))
        variants = _variants(method, slj.LAPLACIAN_METHODS[0], n_points)
        if method == slj.LAPLACIAN_METHODS[0]:
            variants.append((f"{method}, donated workspace", None))
        for label, chunk in variants:

            def build(p: Any, ws: Any = None, terms: Any = terms, chunk: Any = chunk) -> Any:
                s = slj.pinn_system(
                    mlp, p, terms, path="materialized", chunk_size=chunk, workspace=ws
                )
                return s.residual, jax.numpy.reshape(s.jacobian.to_dense(), (-1,))

            # "donated workspace": as the optimizers with workspace=True under a jit that
            # donates their state (the last build's matrix is the next one's buffer)
            donated = "workspace" in label
            system = jax.jit(build, donate_argnums=1) if donated else jax.jit(build)
            kept = {"J": build(params)[1]} if donated else None

            def jacobian(s: Any = system, kept: Any = kept) -> Any:
                if kept is None:
                    return jax.block_until_ready(s(params))
                r, kept["J"] = s(params, kept["J"])
                return jax.block_until_ready((r, kept["J"]))

            cases[label] = {
                "jacobian": jacobian,
                "residual": lambda r=residual: jax.block_until_ready(r(params)),
            }
    return cases


def _variants(method: str, default: str, n_points: int) -> list[tuple[str, int | None]]:
    """The method with the default blocks; the default method also in one block of all
    points (the build before blocks were sized to the cache)."""
    out: list[tuple[str, int | None]] = [(method, None)]
    if method == default:
        out.append((f"{method}, one block", n_points))
    return out


def _torch_cases(problem: Any) -> dict[str, dict[str, Callable[..., Any]]]:
    import sketchlinalg_torch as slt
    import torch

    from .pinn._torch import make_mlp
    from .pinn.problems import with_laplacian

    model = make_mlp(problem.widths, 0)
    params = dict(model.named_parameters())
    points = [torch.as_tensor(p) for p in problem.points(np.random.default_rng(0), False)]
    n_points = sum(int(p.shape[0]) for p in points)
    cases = {}
    for method in slt.LAPLACIAN_METHODS:
        specs = with_laplacian(problem, method).terms
        terms = [
            slt.Term(lambda u, x, s=s: s.residual(torch, slt, u, x), p, s.weight, s.name)
            for s, p in zip(specs, points, strict=True)
        ]

        def residual(terms: Any = terms) -> Any:
            with torch.no_grad():
                return slt.pinn_residual(model, params, terms)

        variants = _variants(method, slt.LAPLACIAN_METHODS[0], n_points)
        if method == slt.LAPLACIAN_METHODS[0]:
            variants.append((f"{method}, fresh matrix", None))
        for label, chunk in variants:
            # As the optimizers call it: the last build's matrix is the next one's workspace
            # (none for "fresh matrix": a new N x P matrix per build, page faults included).
            kept: dict[str, Any] = {}

            def jacobian(
                terms: Any = terms,
                chunk: Any = chunk,
                kept: Any = kept,
                fresh: bool = "fresh" in label,
            ) -> Any:
                out = slt.pinn_system(
                    model,
                    params,
                    terms,
                    path="materialized",
                    chunk_size=chunk,
                    workspace=None if fresh else kept.get("J"),
                )
                kept["J"] = out.jacobian.to_dense().reshape(-1)
                return out

            cases[label] = {"jacobian": jacobian, "residual": residual}
    return cases


def run(problem_name: str, repeats: int, frameworks: list[str]) -> list[dict[str, Any]]:
    """Time every (framework, method, kind); one record each."""
    from .pinn.problems import make_problem

    problem = make_problem(problem_name)
    records = []
    for framework in frameworks:
        cases = (_jax_cases if framework == "jax" else _torch_cases)(problem)
        times: dict[tuple[str, str], list[float]] = {}
        first: dict[tuple[str, str], float] = {}
        for method, kinds in cases.items():  # the first call: compilation, tracing
            for kind, fn in kinds.items():
                t0 = time.perf_counter()
                fn()
                first[method, kind] = time.perf_counter() - t0
        for _ in range(repeats):  # interleaved over methods: load drifts hit all alike
            for method, kinds in cases.items():
                for kind, fn in kinds.items():
                    t0 = time.perf_counter()
                    fn()
                    times.setdefault((method, kind), []).append(time.perf_counter() - t0)
        for (method, kind), ts in times.items():
            records.append(
                {
                    "framework": framework,
                    "method": method,
                    "kind": kind,
                    "min_s": min(ts),
                    "median_s": median(ts),
                    "first_call_s": first[method, kind],
                    "repeats": repeats,
                }
            )
            print(
                f"{framework:>5} {method:>14} {kind:>8}: min {min(ts) * 1e3:8.1f} ms  "
                f"median {median(ts) * 1e3:8.1f} ms",
                flush=True,
            )
    return records


def _markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    by = {(r["framework"], r["method"], r["kind"]): r for r in records}
    rows = []
    for framework in dict.fromkeys(r["framework"] for r in records):
        methods = list(dict.fromkeys(r["method"] for r in records if r["framework"] == framework))
        fastest = min(by[framework, m, "jacobian"]["min_s"] for m in methods)
        for m in methods:
            jac, res = by[framework, m, "jacobian"], by[framework, m, "residual"]
            rows.append(
                [
                    framework,
                    m,
                    f"{jac['min_s'] * 1e3:.1f} / {jac['median_s'] * 1e3:.1f}",
                    f"{jac['min_s'] / fastest:.2f}",
                    f"{res['min_s'] * 1e3:.1f} / {res['median_s'] * 1e3:.1f}",
                ]
            )
    machine = meta["machine"]
    table = markdown_table(
        [
            "framework",
            "laplacian",
            "jacobian [ms] min / median",
            "vs fastest",
            "residual [ms] min / median",
        ],
        rows,
    )
    return (
        f"# PINN Jacobian build per Laplacian method ({meta['problem']}, P = {meta['n_params']}, "
        f"N = {meta['n_points']}, float64)\n\n"
        f"Command: `{meta['command']}`\n\n"
        f"Machine: {machine.get('cpu_model')} ({machine.get('cpu_count')} CPUs), "
        f"`GLIBC_TUNABLES={machine.get('env', {}).get('GLIBC_TUNABLES') or ''}`, "
        f"{meta['threads']} thread(s), load before/after {meta['load_before']} / "
        f"{meta['load_after']}; jax {machine.get('versions', {}).get('jax')}, torch "
        f"{machine.get('versions', {}).get('torch')}; {machine.get('date_utc', '')}\n\n"
        '`jacobian`: `pinn_system(..., path="materialized")` (weighted residual and the '
        "explicit N x P Jacobian), what every natural-gradient step builds (torch: into the "
        "last build's matrix, `workspace=`, as the optimizers do; `fresh matrix`: a new one "
        "per build; JAX: a new one per build, `donated workspace`: over the last build's, "
        "donated to the jitted build, as the optimizers with `workspace=True` under a jit "
        "that donates their state); `residual`: "
        "`pinn_residual`, one loss evaluation of the line search. Minimum and median of "
        f"{meta['repeats']} repeats interleaved over the methods, first call excluded.\n\n"
        f"{table}\n\n"
        "For reference: the public rla-pinns code builds no N x P matrix (its kernel is "
        "formed from layer inputs and output gradients); its forward Laplacian plus one "
        "backward pass took 0.024 s in the issue's run and 0.024-0.038 s under cProfile in "
        "the runs of `python -m benchmarks.pinn.rla_pinns` "
        "(`benchmarks/results/pinn/issue21_rla_*.md`).\n"
    )


def main(argv: list[str] | None = None) -> None:
    """Run and write ``pinn_jacobian.json`` / ``.md``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problem", default="poisson5d")
    p.add_argument("--framework", default="jax,torch")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument(
        "--tag",
        default="",
        help="suffix of the output names (pinn_jacobian_TAG.*), e.g. for a run under other "
        "environment settings",
    )
    args = p.parse_args(argv)
    if args.tag and not re.fullmatch(r"[A-Za-z0-9_-]+", args.tag):
        raise SystemExit(f"--tag: expected letters, digits, '-' or '_', got {args.tag!r}")
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
        f"intra_op_parallelism_threads={args.threads}"
    )
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.threads]))
    import torch

    torch.set_num_threads(args.threads)
    from .pinn.problems import make_problem

    problem = make_problem(args.problem)
    pts = problem.points(np.random.default_rng(0), False)
    widths = problem.widths
    n_params = sum(a * b + b for a, b in itertools.pairwise(widths))
    load_before = load_average()
    records = run(args.problem, args.repeats, args.framework.split(","))
    meta = {
        "command": "python -m benchmarks.pinn_jacobian " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(ROOT),
        "problem": args.problem,
        "n_params": n_params,
        "n_points": int(sum(p.shape[0] for p in pts)),
        "threads": args.threads,
        "repeats": args.repeats,
        "load_before": load_before,
        "load_after": load_average(),
    }
    name = f"pinn_jacobian_{args.tag}" if args.tag else "pinn_jacobian"
    write_json(args.out / f"{name}.json", {**meta, "records": records})
    text = _markdown(records, meta)
    write_text(args.out / f"{name}.md", text)
    print(text)


if __name__ == "__main__":
    main()
