"""PINN benchmark: the SNGD paper's problems in JAX and PyTorch against every baseline.

Run, e.g.::

    python -m benchmarks.pinn --problem poisson2d --framework jax \
        --optimizers sngd-r300,engd,adam --budget 120
    python -m benchmarks.pinn --problem all --framework jax,torch --quick

Every (problem, framework, optimizer) run trains in its own subprocess (a clean peak-memory
figure and no shared compilation caches) for ``--budget`` seconds of optimizer steps, shows a
progress bar with the loss, relative L2 error and step size, and appends one JSON record per
run to ``--out`` (default ``benchmarks/results/pinn/runs.jsonl``; ``--quick`` runs go to
``benchmarks/results/pinn/quick_runs.jsonl``). ``python -m benchmarks.pinn.report`` turns
the records into tables and plots.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .._common import _clean, machine_info
from .optimizers import DEFAULT_LIST, OptimizerSpec, parse_optimizers
from .problems import EXTRA_PROBLEMS, PROBLEMS, make_problem, with_laplacian

RESULTS = Path(__file__).resolve().parents[1] / "results" / "pinn"
FRAMEWORKS = ("jax", "torch")
#: Default training budget per run [s]; Poisson 5D is compared at 90 s (issue 5).
DEFAULT_BUDGET = {"poisson5d": 90.0, "poisson5d-cos": 90.0}
QUICK_BUDGET_S = 600.0  # --quick stops after QUICK_STEPS steps; the budget is a safety net
QUICK_STEPS = 4


def _split(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = list(allowed) if text == "all" else [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise SystemExit(f"--{what}: expected 'all' or a comma list of {allowed}, got {text!r}")
    return items


def run_one(
    problem_name: str,
    framework: str,
    spec: OptimizerSpec,
    *,
    budget: float,
    seed: int,
    quick: bool,
    beta: float = 1.0,
    dtype: str = "float64",
    device: str = "cpu",
    laplacian: str | None = None,
) -> dict[str, Any]:
    """Train one (problem, framework, optimizer) in this process; return its record.

    ``device``: the torch device of a torch run (``"cpu"``, ``"cuda"``, ``"cuda:1"``); JAX
    runs on JAX's default device (``JAX_PLATFORMS`` chooses), which the record names.
    """
    from ._run import train

    problem = with_laplacian(make_problem(problem_name, beta=beta), laplacian)
    if framework == "jax":
        from ._jax import JaxTrainer

        trainer: Any = JaxTrainer(problem, spec, seed=seed, quick=quick, dtype=dtype)
    elif framework == "torch":
        from ._torch import TorchTrainer

        trainer = TorchTrainer(problem, spec, seed=seed, quick=quick, dtype=dtype, device=device)
    else:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    label = f"{problem_name}|{framework}|{spec.label}"
    record = train(
        problem,
        spec,
        trainer,
        framework=framework,
        budget=budget,
        max_steps=QUICK_STEPS if quick else None,
        quick=quick,
        label=label,
    )
    record["seed"] = seed
    return record


def _pin(threads: int | None) -> None:
    """Bind this process to ``threads`` cores (Linux): XLA's and torch's helper threads
    then share them too, which the thread variables alone do not ensure."""
    if threads and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(cores[:threads]))


def _child(argv: list[str]) -> None:
    """``python -m benchmarks.pinn --child JSON OUT``: one run, record written to OUT."""
    job = json.loads(argv[0])
    _pin(job.get("threads"))
    spec = parse_optimizers(job["optimizer"])[0]
    record = run_one(
        job["problem"],
        job["framework"],
        spec,
        budget=job["budget"],
        seed=job["seed"],
        quick=job["quick"],
        beta=job["beta"],
        dtype=job.get("dtype", "float64"),
        device=job.get("device", "cpu"),
        laplacian=job.get("laplacian"),
    )
    record["peak_rss_scope"] = "process of this run"
    Path(argv[1]).write_text(json.dumps(_clean(record)))


def _thread_env(threads: int) -> dict[str, str]:
    """The environment of a run pinned to ``threads`` threads (BLAS, OpenMP, torch, XLA)."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    if threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
    return env


def _run_in_subprocess(job: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        cmd = [sys.executable, "-m", "benchmarks.pinn", "--child", json.dumps(job), str(out)]
        root = Path(__file__).resolve().parents[2]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, cwd=root, check=False, env=_thread_env(job["threads"]))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0 or not out.exists():
            return {
                **job,
                "status": "crashed",
                "message": f"subprocess exited with status {proc.returncode}",
            }
        record: dict[str, Any] = json.loads(out.read_text())
        # CPU seconds of the whole run process (start-up and compilation included): a
        # system time far above the user time's few percent means allocation churn.
        record["cpu_user_s"] = after.ru_utime - before.ru_utime
        record["cpu_system_s"] = after.ru_stime - before.ru_stime
        return record


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.pinn",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument(
        "--problem",
        default="poisson2d",
        help=f"'all' or a comma list of {PROBLEMS + EXTRA_PROBLEMS} (all: the suite's)",
    )
    p.add_argument("--framework", default="jax", help="'all' or a comma list of jax,torch")
    p.add_argument(
        "--optimizers",
        default=DEFAULT_LIST,
        help="comma list of kind[:key=value;...] (see benchmarks/pinn/optimizers.py); "
        f"default {DEFAULT_LIST}",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="training seconds per run (default 120; 90 for poisson5d; --quick: "
        f"{QUICK_STEPS} steps or {QUICK_BUDGET_S:g} s)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads per run (BLAS, OpenMP, torch, XLA; default 1: the one-core comparison; "
        "pinned in the subprocess of each run, not with --in-process)",
    )
    p.add_argument("--beta", type=float, default=1.0, help="transport speed (40: hard case)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument(
        "--laplacian",
        default=None,
        help="the adapters' Laplacian method (e.g. forward, hessian_trace, rev_over_rev; "
        "default: each adapter's default); recorded in problem_settings",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device of the torch runs (cpu, cuda, cuda:1; JAX uses its default device, "
        "JAX_PLATFORMS=cpu or cuda chooses); the record names the device and its model",
    )
    p.add_argument("--quick", action="store_true", help="tiny networks and point sets, 4 steps")
    p.add_argument("--out", type=Path, default=None, help="JSON-lines file the records go to")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="train in this process (default for --quick; peak memory is then the process's)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the requested grid of (problem, framework, optimizer); return the records."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1:])
        return []
    args = parse(argv)
    problems = (
        list(PROBLEMS)
        if args.problem == "all"
        else _split(args.problem, PROBLEMS + EXTRA_PROBLEMS, "problem")
    )
    frameworks = _split(args.framework, FRAMEWORKS, "framework")
    try:
        specs = parse_optimizers(args.optimizers)
    except ValueError as exc:
        raise SystemExit(f"--optimizers: {exc}") from None
    if args.budget is not None and not args.budget > 0:
        raise SystemExit(f"--budget must be > 0 seconds, got {args.budget}")
    out = args.out or RESULTS / ("quick_runs.jsonl" if args.quick else "runs.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    in_process = args.in_process or args.quick
    records = []
    for problem in problems:
        budget = args.budget or (
            QUICK_BUDGET_S if args.quick else DEFAULT_BUDGET.get(problem, 120.0)
        )
        for framework in frameworks:
            for spec in specs:
                job = {
                    "problem": problem,
                    "framework": framework,
                    "optimizer": spec.label,
                    "budget": budget,
                    "seed": args.seed,
                    "quick": args.quick,
                    "beta": args.beta,
                    "dtype": args.dtype,
                    "device": args.device,
                    "threads": args.threads,
                    "laplacian": args.laplacian,
                }
                if in_process:
                    record = run_one(
                        problem,
                        framework,
                        spec,
                        budget=budget,
                        seed=args.seed,
                        quick=args.quick,
                        beta=args.beta,
                        dtype=args.dtype,
                        device=args.device,
                        laplacian=args.laplacian,
                    )
                    record["peak_rss_scope"] = "whole process (--in-process)"
                else:
                    record = _run_in_subprocess(job)
                record["threads"] = args.threads
                record["command"] = "python -m benchmarks.pinn " + " ".join(argv)
                record["machine"] = machine
                with out.open("a") as fh:
                    fh.write(json.dumps(_clean(record)) + "\n")
                records.append(record)
    print(f"{len(records)} record(s) appended to {out}", file=sys.stderr)
    return records


if __name__ == "__main__":
    main()
