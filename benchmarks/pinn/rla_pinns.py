"""Run the public rla-pinns code on its Poisson 5D problem, for side-by-side comparisons.

rla-pinns (Guzman-Cordero, Dangel, Goldshlager, Zeinhofer: "Improving energy natural
gradient descent through Woodbury, momentum, and randomization", 2025) is the PyTorch code
of ENGD-Woodbury and SPRING for PINNs. This command fetches it at a fixed commit, installs
it into its own virtual environment and runs its ``train.py`` *unchanged*, with its own
command-line options, on the problem ``python -m benchmarks.pinn --problem poisson5d-cos``
solves: ``--equation=poisson --boundary_condition=cos_sum --dim_Omega=5 --N_Omega=800
--N_dOmega=200 --batch_frequency=1 --model=mlp-tanh-64-64-48-48`` (float64, fresh points every
step, its 31-point grid line search). The damping (and SPRING's momentum) are the values of
the published best runs of its Poisson 5D experiment (``rla_pinns/exp1_poisson5d/best_runs``).

Run::

    python -m benchmarks.pinn.rla_pinns --workdir /tmp/rla-pinns \\
        --out benchmarks/results/pinn/issue21_rla.jsonl

Each run is pinned to one core with one thread (as ``python -m benchmarks.pinn`` pins its
runs), for ``--budget`` seconds (``--num_seconds``); the record has the steps taken, the
seconds per step and the RMS error ``train.py`` prints after its last step (on its own
8,000 random evaluation points), and the user and system CPU seconds of the process. A
second, shorter run of each under ``cProfile`` gives the time per step of its phases:
``evaluate_losses_with_layer_inputs_and_grad_outputs`` (the forward Laplacian and the
backward pass its Jacobian is made of) and ``grid_line_search``. ``python -m
benchmarks.pinn.compare`` tabulates these records next to ours.

Where GitHub is not reachable, ``--rla-pinns`` and ``--hessianfree`` take local clones (any
path ``git clone`` accepts). The environment installs the tested torch of
``constraints.txt`` (rla-pinns pins torch 2.2.0, a CUDA build on most indexes) and, with
``--no-deps``, the PyTorchHessianFree commit rla-pinns names, which its ``train.py`` imports.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pstats
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .._common import _clean, machine_info
from .__main__ import _thread_env

ROOT = Path(__file__).resolve().parents[2]
RLA_PINNS_URL = "https://github.com/andresguzco/rla-pinns.git"
#: "Updating the Readme file with citation ..." (2025-12-03), the camera-ready code.
RLA_PINNS_COMMIT = "354483b"
HESSIANFREE_URL = "https://github.com/ltatzel/PyTorchHessianFree.git"
#: The commit rla-pinns' setup.cfg names.
HESSIANFREE_COMMIT = "f430d815cfddf763728a73fa8c01ef916ab0d623"
#: Packages ``train.py`` imports (rla-pinns' ``install_requires`` less its pins).
PACKAGES = (
    "einops",
    "numpy",
    "scipy",
    "wandb",
    "backpack-for-pytorch",
    "matplotlib",
    "tueplots",
    "palettable",
    "pandas",
)

PROBLEM_ARGS = (
    "--equation=poisson",
    "--boundary_condition=cos_sum",
    "--dim_Omega=5",
    "--N_Omega=800",
    "--N_dOmega=200",
    "--batch_frequency=1",
    "--model=mlp-tanh-64-64-48-48",
)
#: rla-pinns' optimizers as its best Poisson 5D runs call them (exp1_poisson5d/best_runs).
OPTIMIZERS = {
    "engd-woodbury": (
        "--optimizer=RNGD",
        "--RNGD_approximation=exact",
        "--RNGD_damping=3.1732122998048178e-12",
    ),
    "spring": (
        "--optimizer=RNGD",
        "--RNGD_approximation=exact",
        "--RNGD_damping=2.086286730036186e-10",
        "--RNGD_momentum=0.0632666532797279",
    ),
}
#: Functions whose cumulative time per call is a phase of rla-pinns' step.
PHASES = {
    "jacobian_s": "evaluate_losses_with_layer_inputs_and_grad_outputs",
    "line_search_s": "grid_line_search",
    "step_s": "step",
}
_STEP_LINE = re.compile(r"Step: (\d+), Loss: ([^,]+), L2 Error: ([^,]+),.* Time: ([0-9.]+)s")


def _git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True)


def setup(workdir: Path, rla_pinns: str, hessianfree: str) -> Path:
    """Clone both repositories at their commits and build the environment; its python."""
    workdir.mkdir(parents=True, exist_ok=True)
    src, hf, venv = workdir / "rla-pinns", workdir / "PyTorchHessianFree", workdir / "venv"
    for url, path, commit in (
        (rla_pinns, src, RLA_PINNS_COMMIT),
        (hessianfree, hf, HESSIANFREE_COMMIT),
    ):
        if not path.exists():
            _git("clone", "-q", url, str(path))
        _git("checkout", "-q", commit, cwd=path)
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        torch_pin = next(
            line.strip()
            for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.startswith("torch==")
        )
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, torch_pin, *PACKAGES], check=True)
        subprocess.run([*pip, "--no-deps", str(hf)], check=True)
    return python


def _run(python: Path, src: Path, args: list[str], core: int, log: Path) -> dict[str, float]:
    """Run ``train.py args`` on one core and one thread; its CPU times."""
    env = _thread_env(1)
    env.update(WANDB_MODE="disabled", PYTHONPATH=str(src))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("w") as f:
        proc = subprocess.run(
            ["taskset", "-c", str(core), str(python), *args],
            cwd=src / "rla_pinns",
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            check=False,
        )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"rla-pinns exited with status {proc.returncode}; see {log}")
    return {
        "cpu_user_s": after.ru_utime - before.ru_utime,
        "cpu_system_s": after.ru_stime - before.ru_stime,
    }


def _last_step(log: Path) -> dict[str, float]:
    lines = [m for m in map(_STEP_LINE.search, log.read_text().splitlines()) if m]
    if not lines:
        raise SystemExit(f"no 'Step:' line in {log}")
    last = lines[-1]
    steps, elapsed = int(last.group(1)) + 1, float(last.group(4))
    return {
        "iterations": steps,
        "wall_s": elapsed,
        "seconds_per_step": elapsed / steps,
        "final_loss": float(last.group(2)),
        "rms": float(last.group(3)),
        "initial_loss": float(lines[0].group(2)),
    }


def _phases(profile: Path, steps: float) -> dict[str, float]:
    """Mean seconds per call of each phase function in a cProfile dump."""
    # {(file, line, name): (primitive calls, calls, own time, cumulative time, callers)}
    stats: Any = getattr(pstats.Stats(str(profile)), "stats")  # noqa: B009 (untyped)
    out: dict[str, float] = {}
    for key, name in PHASES.items():
        hits = [(v[1], v[3]) for (f, _, n), v in stats.items() if n == name and "rla_pinns" in f]
        if hits:
            calls, cum = max(hits, key=lambda h: h[1])
            out[key] = cum / max(calls, 1)
            out[key[:-2] + "_calls"] = calls
    out["profiled_steps"] = steps
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Set up rla-pinns, run each optimizer, append one record per run to ``--out``."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.pinn.rla_pinns", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--workdir",
        type=Path,
        required=True,
        help="where the clones, the environment and the logs go",
    )
    p.add_argument("--rla-pinns", default=RLA_PINNS_URL, help="URL or path to clone")
    p.add_argument("--hessianfree", default=HESSIANFREE_URL, help="URL or path to clone")
    p.add_argument(
        "--optimizers", default=",".join(OPTIMIZERS), help=f"comma list of {tuple(OPTIMIZERS)}"
    )
    p.add_argument("--budget", type=float, default=90.0, help="seconds per run (--num_seconds)")
    p.add_argument(
        "--profile-budget",
        type=float,
        default=20.0,
        help="seconds of the cProfile run of each optimizer (0: none)",
    )
    p.add_argument("--core", type=int, default=0, help="the core the runs are pinned to")
    p.add_argument(
        "--seeds",
        default="0",
        help="comma list of seeds s: --data_seed=s --model_seed=s+1 (train.py's defaults: s=0)",
    )
    p.add_argument("--out", type=Path, required=True, help="JSON-lines file of the records")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(
            f"--seeds: expected a comma list of integers, got {args.seeds!r}"
        ) from None
    for n in names:
        if n not in OPTIMIZERS:
            raise SystemExit(f"--optimizers: expected names from {tuple(OPTIMIZERS)}, got {n!r}")
    if not args.budget > 0:
        raise SystemExit(f"--budget must be > 0 seconds, got {args.budget}")
    python = setup(args.workdir, args.rla_pinns, args.hessianfree)
    src = args.workdir / "rla-pinns"
    command = "python -m benchmarks.pinn.rla_pinns " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])
    )
    records = []
    for seed, name in itertools.product(seeds, names):
        train = [
            "train.py",
            *PROBLEM_ARGS,
            *OPTIMIZERS[name],
            f"--data_seed={seed}",
            f"--model_seed={seed + 1}",
        ]
        machine = machine_info(ROOT)
        log = args.workdir / f"{name}-seed{seed}.log"
        start = time.perf_counter()
        cpu = _run(python, src, [*train, f"--num_seconds={args.budget:g}"], args.core, log)
        record: dict[str, Any] = {
            "problem": "poisson5d-cos",
            "problem_settings": {"laplacian": "forward (rla-pinns)"},
            "framework": "rla-pinns (torch)",
            "optimizer": name,
            "seed": seed,
            "rla_pinns_args": train,
            "rla_pinns_commit": RLA_PINNS_COMMIT,
            "budget_s": args.budget,
            "threads": 1,
            "dtype": "float64",
            "process_s": time.perf_counter() - start,
            **_last_step(log),
            **cpu,
            "rel_l2": None,
            "error_note": "RMS error printed by train.py after its last step, on its own "
            "random evaluation points",
        }
        if args.profile_budget > 0 and seed == seeds[0]:
            prof = args.workdir / f"{name}.prof"
            plog = args.workdir / f"{name}.profile.log"
            profiled = ["-m", "cProfile", "-o", str(prof), *train]
            _run(
                python, src, [*profiled, f"--num_seconds={args.profile_budget:g}"], args.core, plog
            )
            record["phases"] = _phases(prof, _last_step(plog)["iterations"])
            record["phases_note"] = (
                f"mean seconds per call under cProfile ({args.profile_budget:g} s run)"
            )
        record["command"] = command
        record["machine"] = machine
        records.append(_clean(record))
        with args.out.open("a") as f:
            f.write(json.dumps(records[-1]) + "\n")
        print(
            f"rla-pinns {name} seed {seed}: {record['iterations']} steps, "
            f"{record['seconds_per_step']:.3f} s/step, RMS {record['rms']:.2e}",
            flush=True,
        )
    return records


if __name__ == "__main__":
    main()
