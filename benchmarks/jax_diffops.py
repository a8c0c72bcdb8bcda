"""Which Laplacian formulation makes a JAX PINN step fastest?

For the Poisson 2D network of the SNGD paper ([2, 64, 64, 1] tanh, 4,417 parameters) on
``N`` points, time (jitted, median of repeats) for every ``sketchlinalg_jax.laplacian``
method:

* ``residual``: the Laplacian at every point (what a line search evaluates);
* ``jacobian``: the per-point gradient in the parameters of the Laplacian (the materialized
  Jacobian, ``vmap`` over points of ``value_and_grad``): what a natural-gradient step costs.

Run: ``python -m benchmarks.jax_diffops [--points N] [--repeats R] [--out DIR]``
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from ._common import machine_info, markdown_table, median, write_json, write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _mlp(params: list[tuple[jax.Array, jax.Array]], x: jax.Array) -> jax.Array:
    h = x
    for W, b in params[:-1]:
        h = jnp.tanh(W @ h + b)
    W, b = params[-1]
    return (W @ h + b)[0]


def _time(fn: Any, *args: Any, repeats: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, median(times)


def run(points: int, width: int, repeats: int) -> list[dict[str, Any]]:
    """Time every method; return one record per method."""
    sizes = [2, width, width, 1]
    key = jax.random.key(0)
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        key, kw = jax.random.split(key)
        params.append(
            (jax.random.normal(kw, (fan_out, fan_in)) / math.sqrt(fan_in), jnp.zeros(fan_out))
        )
    flat, unravel = ravel_pytree(params)
    side = int(math.sqrt(points))
    g = (jnp.arange(side) + 0.5) / side
    X, Y = jnp.meshgrid(g, g, indexing="ij")
    pts = jnp.stack([X.ravel(), Y.ravel()], axis=1)
    records = []
    for method in slj.LAPLACIAN_METHODS:

        def lap(theta: jax.Array, x: jax.Array, method: str = method) -> jax.Array:
            return slj.laplacian(lambda y: _mlp(unravel(theta), y), x, method=method)

        residual = jax.jit(jax.vmap(lap, in_axes=(None, 0)))
        jacobian = jax.jit(jax.vmap(jax.value_and_grad(lap), in_axes=(None, 0)))
        c_res, t_res = _time(residual, flat, pts, repeats=repeats)
        c_jac, t_jac = _time(jacobian, flat, pts, repeats=repeats)
        rec = {
            "method": method,
            "points": int(pts.shape[0]),
            "params": int(flat.shape[0]),
            "residual_s": t_res,
            "jacobian_s": t_jac,
            "residual_first_call_s": c_res,
            "jacobian_first_call_s": c_jac,
        }
        print(
            f"{method:>14}: residual {t_res * 1e3:8.2f} ms   jacobian {t_jac * 1e3:8.2f} ms",
            flush=True,
        )
        records.append(rec)
    return records


def main(argv: list[str] | None = None) -> None:
    """Run the measurement and write ``jax_diffops.json`` and ``.md``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=900)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    records = run(args.points, args.width, args.repeats)
    best = min(records, key=lambda r: r["jacobian_s"])
    machine = machine_info(ROOT)
    cmd = (
        f"python -m benchmarks.jax_diffops --points {args.points} --width {args.width} "
        f"--repeats {args.repeats}"
    )
    write_json(
        args.out / "jax_diffops.json", {"command": cmd, "machine": machine, "records": records}
    )
    rows = [
        [
            r["method"],
            f"{r['residual_s'] * 1e3:.2f}",
            f"{r['jacobian_s'] * 1e3:.2f}",
            f"{r['jacobian_s'] / best['jacobian_s']:.2f}",
        ]
        for r in records
    ]
    table = markdown_table(
        ["laplacian method", "residual [ms]", "per-point Jacobian [ms]", "vs fastest"], rows
    )
    text = (
        f"# Laplacian formulations in JAX (Poisson 2D, [2,{args.width},{args.width},1] tanh, "
        f"{records[0]['params']} parameters, {records[0]['points']} points, float64)\n\n"
        f"Command: `{cmd}`\n\n"
        f"Machine: {machine.get('cpu_model')} ({machine.get('cpu_count')} CPUs), "
        f"{machine.get('platform')}, jax {machine.get('versions', {}).get('jax')}, "
        f"{machine.get('date_utc', '')}\n\n"
        "Median wall time of jitted calls (first call excluded). `residual`: the Laplacian at "
        "every point; `per-point Jacobian`: vmap over points of value_and_grad in the "
        "parameters.\n\n"
        f"{table}\n\nFastest for the Jacobian: **{best['method']}** (the default of `laplacian`).\n"
    )
    write_text(args.out / "jax_diffops.md", text)
    print(text)


if __name__ == "__main__":
    main()
