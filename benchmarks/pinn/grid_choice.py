"""Where the early-stopping grid and the whole grid choose differently, along a trajectory.

The grid line search evaluates ``eta = 2^0, ..., 2^-30``; by default (``grid_batch=1``) one
candidate at a time from ``eta = 1`` down, stopping once the loss rises past its lowest
point (the whole grid's choice where the loss along the step falls and then rises once),
and with ``grid_batch=None`` the whole grid at once (how the suite's records were made).
For one torch problem and seed this runs the whole grid's trajectory and, at every step,
also asks the early-stopping search for its choice on the same losses along the same step;
then it runs the default's own trajectory. It reports the steps where the choices differ
and both trajectories' relative L2 errors every ``--every`` steps.

Run: ``python -m benchmarks.pinn.grid_choice [--problem nonlinear] [--optimizer
engd-woodbury] [--steps 900] [--seeds 0,1,2]``; writes
``benchmarks/results/pinn/grid_choice.{json,md}``. Not timed (one thread).
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._common import machine_info, markdown_table, write_json, write_text
from .optimizers import parse_optimizers
from .problems import make_problem

RESULTS = Path(__file__).resolve().parents[1] / "results" / "pinn"


def _index(eta: Any) -> int | None:
    """The grid index ``k`` of ``eta = 2^-k`` (``None``: no step taken)."""
    value = float(eta)
    return round(-math.log2(value)) if value > 0 else None


@contextlib.contextmanager
def _shadowed_searches(choices: list[tuple[Any, Any]]) -> Iterator[None]:
    """While active, every grid search of the step engine also runs the early-stopping
    search on the same trial losses; ``choices`` receives ``(its index, the early stop's)``."""
    import sketchlinalg._step as step_module

    search = step_module.grid_line_search

    def both(trial_loss: Any, loss0: Any, **kw: Any) -> Any:
        res = search(trial_loss, loss0, **kw)
        early = search(trial_loss, loss0, num=kw.get("num", 31), batch=1)
        choices.append((_index(res.step_size), _index(early.step_size)))
        return res

    step_module.grid_line_search = both
    try:
        yield
    finally:
        step_module.grid_line_search = search


def run(problem_name: str, optimizer: str, steps: int, every: int, seed: int) -> dict[str, Any]:
    """Both trajectories of one seed: the whole grid's (with the early stop's choices
    alongside) and the early stop's own."""
    import torch

    from ._torch import TorchTrainer

    torch.set_num_threads(1)
    problem = make_problem(problem_name)
    X = problem.eval_points(False)
    exact = problem.exact(np, X)

    def error(trainer: Any) -> float:
        u = trainer.predict(X)
        return float(np.linalg.norm(u - exact) / np.linalg.norm(exact))

    out: dict[str, Any] = {"seed": seed}
    for label, batch in (("whole", "all"), ("early", "1")):
        (spec,) = parse_optimizers(f"{optimizer}:grid_batch={batch}")
        trainer = TorchTrainer(problem, spec, seed=seed, quick=False)
        choices: list[tuple[Any, Any]] = []
        errors = []
        with _shadowed_searches(choices) if label == "whole" else contextlib.nullcontext():
            for i in range(1, steps + 1):
                trainer.step()
                if i % every == 0:
                    errors.append((i, error(trainer)))
        out[label] = errors
        if label == "whole":
            out["differing_steps"] = [
                {"step": i, "whole": a, "early": b} for i, (a, b) in enumerate(choices) if a != b
            ]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the seeds; write JSON and markdown; return the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--problem", default="nonlinear")
    p.add_argument("--optimizer", default="engd-woodbury")
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--every", type=int, default=300, help="steps between error evaluations")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", type=Path, default=RESULTS / "grid_choice")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [run(args.problem, args.optimizer, args.steps, args.every, s) for s in seeds]
    command = (
        f"python -m benchmarks.pinn.grid_choice --problem {args.problem} --optimizer "
        f"{args.optimizer} --steps {args.steps} --every {args.every} --seeds {args.seeds}"
    )
    result = {"command": command, "machine": machine_info(), "problem": args.problem,
              "optimizer": args.optimizer, "framework": "torch", "runs": runs}  # fmt: skip
    rows = []
    for r in runs:
        differ = r["differing_steps"]
        where = ", ".join(f"{d['step']} ({d['whole']} / {d['early']})" for d in differ[:5])
        for (step, whole), (_, early) in zip(r["whole"], r["early"], strict=True):
            rows.append([str(r["seed"]), str(step), f"{whole:.2e}", f"{early:.2e}",
                         f"{len(differ)}: {where or '-'}"])  # fmt: skip
    text = "\n".join(
        [
            f"# The whole grid and the early-stopping grid along {args.problem} "
            f"({args.optimizer}, torch)",
            "",
            f"Command: `{command}`",
            "",
            "`differing steps`: steps (from 0) of the whole grid's trajectory where the "
            "early-stopping search on the same losses chose another step size (grid index "
            "`k` of `2^-k`, whole / early; the first five); errors: relative L2 on the "
            "problem's evaluation points of each search's own trajectory.",
            "",
            markdown_table(
                ["seed", "step", "whole grid rel. L2", "early stop rel. L2", "differing steps"],
                rows,
            ),
            "",
        ]
    )
    write_json(args.out.with_suffix(".json"), result)
    write_text(args.out.with_suffix(".md"), text)
    print(text)
    return result


if __name__ == "__main__":
    main()
