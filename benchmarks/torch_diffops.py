"""Benchmark: formulations of the Laplacian in torch.func, where a PINN step spends its time.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m benchmarks.torch_diffops
    python -m benchmarks.torch_diffops --quick     # small sizes, seconds
    python -m benchmarks.torch_diffops --threads 2 --out DIR

Every formulation of :func:`sketchlinalg_torch.laplacian` (``LAPLACIAN_METHODS``) is timed
on the Poisson residual ``-Laplace u(x) - f(x)`` of a tanh MLP in float64, in the three
settings in which a natural-gradient step evaluates it:

1. ``residual``: the residual at all collocation points (``vmap`` over points);
2. ``jacobian``: the materialized Jacobian, ``vmap`` over points of
   ``torch.func.grad_and_value`` of the residual row in the parameters (what
   ``pinn_system(path="materialized")`` does; the dominant cost of an SNGD step);
3. ``line_search``: the loss at the 31 step sizes of the grid line search (``vmap`` over
   step sizes of the ``vmap`` over points);
4. ``products``: the matrix-free path, one block of 16 JVPs and one of 16 VJPs in the
   parameters (:func:`sketchlinalg_torch.jacobian_operator` of the residual vector,
   linearization included).

The default of :func:`sketchlinalg_torch.laplacian` is the method with the smallest
``jacobian + line_search`` time (the two that every SNGD step pays; minima over repeats,
which are interleaved over methods so that load from other processes falls on all alike).
All methods are first checked to agree with each other.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sketchlinalg_torch as st
import torch
from torch.func import functional_call, grad_and_value, vmap

from ._common import (
    Progress,
    format_float,
    load_average,
    machine_info,
    markdown_table,
    median,
    write_json,
    write_text,
)

__all__ = ["main", "run"]

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("residual", "jacobian", "line_search", "products")


def _mlp(widths: Sequence[int], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers).to(torch.float64)


def _source(x: torch.Tensor) -> torch.Tensor:
    return 2 * math.pi**2 * torch.sin(math.pi * x[0]) * torch.sin(math.pi * x[1])


def _cases(
    model: torch.nn.Module, points: torch.Tensor, method: str, grid: int
) -> dict[str, Callable[[], Any]]:
    params = {k: v.detach() for k, v in model.named_parameters()}

    def row(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        def u(y: torch.Tensor) -> torch.Tensor:
            return functional_call(model, p, (y,)).reshape(())

        return -st.laplacian(u, x, method=method) - _source(x)

    def residual(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return vmap(row, in_dims=(None, 0))(p, points)

    per_point = vmap(grad_and_value(row), in_dims=(None, 0))
    direction = {k: torch.randn_like(v) * 1e-3 for k, v in params.items()}
    etas = 0.5 ** torch.arange(grid, dtype=torch.float64)

    def line_search() -> torch.Tensor:
        def loss(eta: torch.Tensor) -> torch.Tensor:
            r = residual({k: params[k] - eta * direction[k] for k in params})
            return 0.5 * (r * r).sum()

        return vmap(loss)(etas)

    g = torch.Generator().manual_seed(2)
    n_params = sum(v.numel() for v in params.values())
    X = torch.randn(n_params, 16, generator=g, dtype=torch.float64)
    Y = torch.randn(points.shape[0], 16, generator=g, dtype=torch.float64)
    trainable = {k: v.clone().requires_grad_(True) for k, v in params.items()}

    def products() -> tuple[torch.Tensor, torch.Tensor]:
        _, J = st.jacobian_operator(residual, trainable)
        return J.matmat(X), J.rmatmat(Y)

    return {
        "products": products,
        "residual": lambda: residual(params),
        "jacobian": lambda: per_point(params, points),
        "line_search": line_search,
    }


def _time_once(fn: Callable[[], Any]) -> float:
    with torch.no_grad():
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def run(
    widths: Sequence[int], n_points: int, repeats: int, grid: int, progress: Progress
) -> dict[str, Any]:
    """Check agreement, then time every method in every setting.

    The repeats are interleaved (round-robin over methods and settings), so that load from
    other processes falls on all methods alike.

    Returns
    -------
    dict
        ``{"check": max abs differences, "times": {method: {setting: [seconds]}}}``.
    """
    model = _mlp(widths, 0)
    g = torch.Generator().manual_seed(1)
    points = torch.rand(n_points, widths[0], generator=g, dtype=torch.float64)
    ref = None
    check: dict[str, float] = {}
    times: dict[str, dict[str, list[float]]] = {}
    cases = {}
    for method in st.LAPLACIAN_METHODS:
        cases[method] = _cases(model, points, method, grid)
        with torch.no_grad():
            grads, vals = cases[method]["jacobian"]()
            for setting in SETTINGS:  # warm-up
                cases[method][setting]()
        flat = torch.cat([grads[k].reshape(n_points, -1) for k in grads], 1)
        if ref is None:
            ref = (vals, flat)
        check[method] = max(float((vals - ref[0]).abs().max()), float((flat - ref[1]).abs().max()))
        times[method] = {s: [] for s in SETTINGS}
    for rep in range(repeats):
        for method in st.LAPLACIAN_METHODS:
            for setting in SETTINGS:
                times[method][setting].append(_time_once(cases[method][setting]))
        progress(f"repeat {rep + 1}/{repeats} done")
    for method in st.LAPLACIAN_METHODS:
        progress(
            f"{method:14s} "
            + "  ".join(f"{s} {min(times[method][s]) * 1e3:7.1f} ms" for s in SETTINGS)
            + " (min)"
        )
    return {"check": check, "times": times}


def _step_cost(t: dict[str, list[float]]) -> float:
    """What one SNGD step spends on the Laplacian: Jacobian plus line search (minima)."""
    return min(t["jacobian"]) + min(t["line_search"])


def _markdown(result: dict[str, Any], config: dict[str, Any], command: str) -> str:
    info = result["machine"]
    times = result["times"]
    rows = []
    for method in times:
        rows.append(
            [method]
            + [
                f"{format_float(min(times[method][s]) * 1e3)} / "
                f"{format_float(median(times[method][s]) * 1e3)}"
                for s in SETTINGS
            ]
            + [format_float(_step_cost(times[method]) * 1e3)]
            + [format_float(result["check"][method])]
        )
    best = min(times, key=lambda m: _step_cost(times[m]))
    versions = f"torch {torch.__version__}"
    return "\n".join(
        [
            "# Laplacian formulations in torch.func (sketchlinalg_torch.laplacian)",
            "",
            f"- Command: `{command}` (working directory: repository root)",
            f"- Date (UTC): {info['date_utc']}; {versions}; torch threads: "
            f"{config['threads']}; env OMP_NUM_THREADS={info['env']['OMP_NUM_THREADS']}, "
            f"OPENBLAS_NUM_THREADS={info['env']['OPENBLAS_NUM_THREADS']}",
            f"- Machine: {info['cpu_model']}, {info['cpu_count']} CPUs; load average "
            f"before/after {config['load_before']} / {load_average()} (other jobs shared the "
            "CPUs, so timings are noisy)",
            f"- Problem: Poisson residual `-Laplace u(x) - f(x)` of a tanh MLP "
            f"{config['widths']} (P = {config['n_params']}), float64, {config['n_points']} "
            f"random points in (0,1)^2; grid line search of {config['grid']} step sizes.",
            f"- Times: minimum / median of {config['repeats']} repeats after a warm-up, "
            "milliseconds, `time.perf_counter`, under `torch.no_grad()`; repeats interleaved "
            "over methods. The minimum is the less load-sensitive number.",
            "",
            markdown_table(
                [
                    "method",
                    "residual (ms)",
                    "jacobian (ms)",
                    "line_search (ms)",
                    "products (ms)",
                    "jacobian + line_search (ms, min)",
                    "max diff",
                ],
                rows,
            ),
            "",
            "- `residual`: `vmap` over points of the residual row.",
            "- `jacobian`: `vmap` over points of `torch.func.grad_and_value` of the row in the "
            "parameters: the materialized N x P Jacobian (pinn_system's fast path).",
            "- `line_search`: `vmap` over the step sizes of the residual at all points, then the "
            "loss.",
            "- `products`: `jacobian_operator` of the residual vector, one `matmat` of 16 "
            "columns (vmapped JVPs) and one `rmatmat` of 16 columns (vmapped VJPs).",
            "- `jacobian + line_search`: the sum of the minima, what an SNGD step with a "
            "materialized Jacobian and the grid line search spends on the Laplacian.",
            "- `max diff`: largest absolute difference of the residual and the Jacobian from "
            f"the first method ({next(iter(times))}).",
            "",
            f"Fastest per step (the default of `laplacian`): **{best}**.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write ``torch_diffops.json`` and ``torch_diffops.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    widths = [2, 16, 16, 1] if args.quick else [2, 64, 64, 1]
    n_points = 100 if args.quick else 900
    grid = 31
    progress = Progress("torch_diffops")
    load_before = load_average()
    t0 = time.perf_counter()
    res = run(widths, n_points, args.repeats, grid, progress)
    model = _mlp(widths, 0)
    config = {
        "widths": widths,
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_points": n_points,
        "grid": grid,
        "repeats": args.repeats,
        "threads": args.threads,
        "quick": args.quick,
        "load_before": load_before,
    }
    command = "python -m benchmarks.torch_diffops " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    result = {
        "config": config,
        "machine": machine_info(ROOT),
        "torch": torch.__version__,
        "seconds_total": time.perf_counter() - t0,
        **res,
    }
    name = "torch_diffops_quick" if args.quick else "torch_diffops"
    write_json(args.out / f"{name}.json", result)
    write_text(args.out / f"{name}.md", _markdown(result, config, command.strip()))
    progress(f"wrote {args.out / name}.json and .md")


if __name__ == "__main__":
    main()
