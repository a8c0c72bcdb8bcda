"""Benchmark: torch threads and ``torch.compile`` for the PyTorch SNGD step on a small CPU.

Usage (from the repository root, with nothing else running)::

    python -m benchmarks.torch_cpu_settings
    python -m benchmarks.torch_cpu_settings --quick      # small network, seconds

The problem is the torch quick-start example (``examples/torch_poisson2d.py`` with its
defaults: Poisson 2D, a ``[2, 64, 64, 1]`` tanh MLP, float64, 1,020 residual rows) trained
by :class:`sketchlinalg_torch.SNGD` with the library's defaults. Every configuration starts
from the same initial network and takes the same steps (the configurations of a phase take
their steps in turn); recorded per configuration: the time of the first step (compilation
included), the per-step times after it, and the loss trace (which must agree across
configurations).

1. Threads: ``torch.set_num_threads(1)`` and ``(2)``, on a quiet machine and while one
   other process keeps a core busy (a Python busy loop in a subprocess: the situation of a
   2-core machine on which a test run, an editor's language server or a second experiment
   runs at the same time).
2. ``torch.compile``: eager (one thread, quiet) against ``torch.compile(model)`` passed to
   ``pinn_system`` / ``pinn_residual``, and against ``torch.compile`` of the
   ``pinn_system`` closure itself.

Writes ``benchmarks/results/torch_cpu_settings.{json,md}`` (``_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import sketchlinalg_torch as slt
import torch

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


def _example() -> Any:
    spec = importlib.util.spec_from_file_location(
        "torch_poisson2d", ROOT / "examples" / "torch_poisson2d.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # torch.compile re-imports the module it traces
    spec.loader.exec_module(module)
    return module


class _Trainer:
    """One configuration: its own network (the same initial one), optimizer and records."""

    def __init__(
        self, example: Any, widths: list[int], n_interior: int, threads: int, compile_: str
    ) -> None:
        self.threads = threads
        model = example.make_model(widths, 0, "default", torch.float64)
        terms = example.make_terms(n_interior, n_interior, torch.float64)
        net: Any = torch.compile(model) if compile_ == "module" else model
        system_fn: Any = functools.partial(slt.pinn_system, net, terms=terms)
        if compile_ == "system":
            system_fn = torch.compile(system_fn)
        self.opt = slt.SNGD(
            net.named_parameters(),
            system_fn,
            residual_fn=functools.partial(slt.pinn_residual, net, terms=terms),
        )
        self.times: list[float] = []
        self.losses: list[float] = []

    def step(self) -> None:
        torch.set_num_threads(self.threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dynamo's notes on lru_cache-wrapped helpers
            t0 = time.perf_counter()
            self.losses.append(float(self.opt.step()))
            self.times.append(time.perf_counter() - t0)

    def record(self) -> dict[str, Any]:
        return {"first_s": self.times[0], "step_s": self.times[1:], "loss": self.losses}


def run(
    widths: list[int], n_interior: int, steps: int, progress: Progress
) -> dict[str, dict[str, Any]]:
    """Every configuration (see the module docstring). Within each phase (quiet, busy) the
    configurations take their steps in turn, so that a change of load falls on all alike."""
    example = _example()
    make = functools.partial(_Trainer, example, widths, n_interior)
    out: dict[str, dict[str, Any]] = {}
    for busy in (False, True):
        load = "one other busy process" if busy else "quiet"
        phase = {
            f"eager, 1 thread, {load}": make(1, "none"),
            f"eager, 2 threads, {load}": make(2, "none"),
        }
        if not busy:
            phase["torch.compile(model), 1 thread, quiet"] = make(1, "module")
            phase["torch.compile(pinn_system), 1 thread, quiet"] = make(1, "system")
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for k in range(steps):
                for trainer in phase.values():
                    trainer.step()
                progress(f"{load}: step {k + 1}/{steps}")
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
        for name, trainer in phase.items():
            out[name] = {"threads": trainer.threads, "busy": busy, **trainer.record()}
            progress(
                f"{name}: first {out[name]['first_s']:.2f} s, "
                f"{median(out[name]['step_s']):.3f} s/step"
            )
    return out


def _markdown(result: dict[str, Any], command: str) -> str:
    info, config, runs = result["machine"], result["config"], result["runs"]
    base = median(runs["eager, 1 thread, quiet"]["step_s"])
    ref = runs["eager, 1 thread, quiet"]["loss"]
    rows = []
    for name, r in runs.items():
        step = median(r["step_s"])
        drift = max(abs(a - b) / abs(b) for a, b in zip(r["loss"], ref, strict=True))
        rows.append(
            [
                name,
                format_float(r["first_s"]),
                format_float(step),
                format_float(step / base),
                format_float(r["loss"][-1]),
                format_float(drift),
            ]
        )
    return "\n".join(
        [
            "# torch threads and torch.compile for the SNGD step on a small CPU",
            "",
            f"- Command: `{command}` (working directory: repository root)",
            f"- Date (UTC): {info['date_utc']}; torch {torch.__version__}",
            f"- Machine: {info['cpu_model']}, {info['cpu_count']} CPUs; load average "
            f"before/after {config['load_before']} / {config['load_after']}",
            f"- Problem: the torch quick start (Poisson 2D, MLP {config['widths']}, "
            f"{config['n_interior']}^2 interior + {4 * config['n_interior']} boundary points, "
            f"float64), `SNGD` with the library's defaults, {config['steps']} steps from the "
            "same initial network in every configuration.",
            "- Busy: a Python busy loop in a subprocess holds one core for the whole run.",
            "",
            markdown_table(
                [
                    "configuration",
                    "first step (s)",
                    "step (s, median of the rest)",
                    "vs eager 1 thread quiet",
                    "final loss",
                    "max rel. loss difference",
                ],
                rows,
            ),
            "",
            "- `first step`: includes compilation for the `torch.compile` rows.",
            "- `max rel. loss difference`: largest relative difference of the loss trace from "
            "the eager one-thread run (rounding differs between thread counts and compiled "
            "kernels).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write ``torch_cpu_settings.json`` and ``.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small network (smoke test)")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    widths = [2, 16, 16, 1] if args.quick else [2, 64, 64, 1]
    n_interior = 8 if args.quick else 30
    progress = Progress("torch_cpu_settings")
    load_before = load_average()
    t0 = time.perf_counter()
    runs = run(widths, n_interior, args.steps, progress)
    config = {
        "widths": widths,
        "n_interior": n_interior,
        "steps": args.steps,
        "quick": args.quick,
        "load_before": load_before,
        "load_after": load_average(),
    }
    command = "python -m benchmarks.torch_cpu_settings " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    result = {
        "config": config,
        "machine": machine_info(ROOT),
        "seconds_total": time.perf_counter() - t0,
        "runs": runs,
    }
    name = "torch_cpu_settings_quick" if args.quick else "torch_cpu_settings"
    write_json(args.out / f"{name}.json", result)
    write_text(args.out / f"{name}.md", _markdown(result, command.strip()))
    progress(f"wrote {args.out / name}.json and .md")


if __name__ == "__main__":
    main()
