"""Time one optimizer step at ~5,000 parameters: SNGD against dense ENGD in both forms.

Poisson 2D, ``[2, 64, 64, 1]`` (4,417 parameters), 1,020 points, float64, JAX. Every variant
is one jitted call doing the same work around the direction (per-point Jacobian, 31-point
grid line search, update); only the direction differs:

* ``sngd-r<l>``: rank-``l`` Nystrom, Woodbury inverse (what ``sketchlinalg_jax.sngd`` runs);
* ``engd-cholesky``: the fast dense form, Cholesky of ``G + mu I`` (``sketchlinalg_jax.engd``);
* ``engd-woodbury``: the kernel form, Cholesky of ``J J^T + mu I`` (N x N;
  ``sketchlinalg_jax.engd_woodbury``), what SNGD competes with when ``N < P``;
* ``engd-lstsq``: the reference form of the ENGD paper's code, ``jnp.linalg.lstsq(G, g)``
  (an SVD-based least-squares solve of the ``P x P`` system).

Run: ``python -m benchmarks.pinn.steptime [--repeats 5] [--ranks 100,300]``; writes
``benchmarks/results/pinn/steptime.{json,md}``. It runs on JAX's default device (a GPU where
there is one: ``benchmarks/gpu_suite.sh`` writes ``benchmarks/results/gpu/steptime.*``); the
record names the device.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import sketchlinalg_jax as slj

import sketchlinalg as sl

from .._common import machine_info, markdown_table, median, write_json, write_text
from ._jax import _loss, _natural_gradient, _terms, init_mlp, mlp
from .optimizers import parse_optimizers
from .problems import make_problem

RESULTS = Path(__file__).resolve().parents[1] / "results" / "pinn"


def _reference_engd_step(problem: Any, points: list[Any], params: Any) -> Any:
    """One ENGD step with the ENGD paper's direction ``lstsq(G, g)``, same line search."""
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(params)
    r, J, _ = slj.pinn_system(mlp, params, _terms(problem, points))
    Jd = J.to_dense()
    d = jnp.linalg.lstsq(Jd.T @ Jd, Jd.T @ r)[0]

    def loss_fn(theta: Any) -> Any:
        return _loss(unravel(theta), points, problem)

    res = sl.grid_line_search(
        lambda etas: jax.vmap(lambda eta: loss_fn(flat - eta * d))(etas), 0.5 * jnp.vdot(r, r)
    )
    return unravel(flat - res.step_size * d)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time the variants; write JSON and markdown; return the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--repeats", type=int, default=5, help="timed steps per variant (median)")
    p.add_argument("--ranks", default="100,300")
    p.add_argument("--out", type=Path, default=RESULTS / "steptime")
    p.add_argument(
        "--widths", default=None, help="layer widths, e.g. 2,16,16,1 (default: the problem's)"
    )
    args = p.parse_args(argv)
    problem = make_problem("poisson2d")
    if args.widths:
        problem = dataclasses.replace(problem, widths=[int(w) for w in args.widths.split(",")])
    points = [jnp.asarray(a) for a in problem.points(np.random.default_rng(0), False)]
    params = init_mlp(jax.random.key(0), problem.widths)
    n_params = sum(int(W.size + b.size) for W, b in params)

    variants: dict[str, Any] = {}
    for rank in (int(r) for r in args.ranks.split(",")):
        variants[f"sngd-r{rank}"] = parse_optimizers(f"sngd:rank={rank}")[0]
    variants["engd-cholesky"] = parse_optimizers("engd")[0]
    variants["engd-woodbury"] = parse_optimizers("engd-woodbury")[0]
    steps: dict[str, Any] = {}
    for name, spec in variants.items():
        opt = _natural_gradient(problem, spec, points, 0, n_params)
        state = opt.init(params)

        def step(params: Any, state: Any, opt: Any = opt) -> Any:
            updates, state = opt.update(None, state, params)
            return optax.apply_updates(params, updates), state

        jitted = jax.jit(step)
        steps[name] = functools.partial(lambda f, s, p: f(p, s)[0], jitted, state)
    steps["engd-lstsq"] = jax.jit(functools.partial(_reference_engd_step, problem, points))

    results: list[dict[str, Any]] = []
    for name, fn in steps.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn(params))
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(params))
            times.append(time.perf_counter() - t0)
        results.append(
            {"variant": name, "median_s": median(times), "times_s": times, "first_s": compile_s}
        )
        print(
            f"{name:14s} median {median(times):8.3f} s  (first call {compile_s:.2f} s)",
            file=sys.stderr,
            flush=True,
        )
    by: dict[str, float] = {r["variant"]: r["median_s"] for r in results}
    ratios = (
        {f"engd-lstsq / {k}": by["engd-lstsq"] / by[k] for k in by if k.startswith("sngd")}
        | {f"engd-cholesky / {k}": by["engd-cholesky"] / by[k] for k in by if k.startswith("sngd")}
        | {f"{k} / engd-woodbury": by[k] / by["engd-woodbury"] for k in by if k.startswith("sngd")}
    )
    out = {
        "description": __doc__,
        "problem": "poisson2d",
        "n_params": n_params,
        "n_points": sum(int(a.shape[0]) for a in points),
        "repeats": args.repeats,
        "results": results,
        "ratios": ratios,
        "machine": machine_info(),
        "device": str(jax.devices()[0]),
        "command": "python -m benchmarks.pinn.steptime " + " ".join(argv or sys.argv[1:]),
    }
    write_json(args.out.with_suffix(".json"), out)
    rows = [[r["variant"], f"{r['median_s']:.3f}", f"{r['first_s']:.2f}"] for r in results]
    table = markdown_table(["variant", "median step [s]", "first call incl. compile [s]"], rows)
    ratio_rows = [[k, f"{v:.1f}x"] for k, v in ratios.items()]
    text = (
        f"# One optimizer step at P = {n_params} (Poisson 2D, N = {out['n_points']}, JAX, "
        f"float64, {out['device']})\n\n`{out['command']}`\n\n{table}\n\n"
        + markdown_table(["ratio (time / time)", "value"], ratio_rows)
        + "\n"
    )
    write_text(args.out.with_suffix(".md"), text)
    print(text)
    return out


if __name__ == "__main__":
    main()
