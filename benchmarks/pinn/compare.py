"""A side-by-side table of PINN benchmark records (one JSON-lines file).

Run: ``python -m benchmarks.pinn.compare RUNS.jsonl [--out TABLE.md]``: one row per record
(framework, optimizer, Laplacian method, steps in the budget, seconds per step, errors),
with the commands and machine of the records, for runs made side by side with
``python -m benchmarks.pinn ... --laplacian METHOD --out RUNS.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .._common import markdown_table, median, write_text


def _num(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(records: list[dict[str, Any]]) -> str:
    """The markdown report of ``records``."""
    rows = [
        [
            r["problem"],
            r["framework"],
            r["optimizer"],
            str(r["problem_settings"].get("laplacian", "default")),
            str(r.get("seed", "-")),
            str(r["iterations"]),
            f"{r['seconds_per_step']:.3f}",
            _num(r.get("rel_l2"), ".2e"),
            f"{r['rms']:.2e}",
            _num(r.get("cpu_user_s"), ".1f"),
            _num(r.get("cpu_system_s"), ".1f"),
        ]
        for r in records
    ]
    head = [
        "problem",
        "framework",
        "optimizer",
        "laplacian",
        "seed",
        "steps",
        "s/step",
        "rel. L2 error",
        "RMS error",
        "user CPU [s]",
        "system CPU [s]",
    ]
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        key = (
            r["problem"],
            r["framework"],
            r["optimizer"],
            str(r["problem_settings"].get("laplacian", "default")),
        )
        groups.setdefault(key, []).append(r)
    summary = ""
    if any(len(g) > 1 for g in groups.values()):
        summary_rows = [
            [
                *key,
                str(len(g)),
                f"{median([float(r['iterations']) for r in g]):.0f}",
                f"{median([r['seconds_per_step'] for r in g]):.3f}",
                f"{median([r['rms'] for r in g]):.2e}",
                f"{min(r['rms'] for r in g):.2e} - {max(r['rms'] for r in g):.2e}",
            ]
            for key, g in groups.items()
        ]
        summary = (
            "\nOver the seeds (median; the range of the RMS error):\n\n"
            + markdown_table(
                [
                    "problem",
                    "framework",
                    "optimizer",
                    "laplacian",
                    "runs",
                    "steps",
                    "s/step",
                    "RMS error",
                    "RMS range",
                ],
                summary_rows,
            )
            + "\n"
        )
    after_first: dict[tuple[str, str, str], list[float]] = {}
    for r in records:  # the first step (JAX: compilation) left out
        if r["framework"] in ("jax", "torch") and r["iterations"] > 1:
            s = (r["wall_s"] - r["first_step_s"]) / (r["iterations"] - 1)
            after_first.setdefault((r["problem"], r["optimizer"], r["framework"]), []).append(s)
    ratio_rows = [
        [
            p,
            o,
            f"{median(v):.4f}",
            f"{median(after_first[p, o, 'torch']):.4f}",
            f"{median(after_first[p, o, 'torch']) / median(v):.2f}",
        ]
        for (p, o, f), v in after_first.items()
        if f == "jax" and (p, o, "torch") in after_first
    ]
    ratios = (
        "\ntorch / JAX seconds per step (median over runs of the steps after the first):\n\n"
        + markdown_table(
            ["problem", "optimizer", "JAX s/step", "torch s/step", "torch / JAX"], ratio_rows
        )
        + "\n"
        if ratio_rows
        else ""
    )
    profiled = [r for r in records if r.get("phases")]
    phases = ""
    if profiled:
        phase_rows = [
            [
                r["problem"],
                r["framework"],
                r["optimizer"],
                str(r.get("seed", "-")),
                str(r["phases"].get("profiled_steps")),
                _num(r["phases"].get("jacobian_s"), ".3f"),
                _num(r["phases"].get("line_search_s"), ".3f"),
                _num(r["phases"].get("line_search_evaluations"), ".1f"),
                _num(r["phases"].get("step_s"), ".3f"),
                r.get("phases_note", ""),
            ]
            for r in profiled
        ]
        phases = (
            "\nPhases per step: `jacobian`: the residual and what the step's kernel is built "
            "from (rla-pinns: layer inputs and output gradients; ours: the materialized "
            "Jacobian); `line search`: the grid search's loss evaluations (`evaluations`: "
            "how many, median over the steps; `-`: not counted); `step`: the optimizer's "
            "whole step.\n\n"
            + markdown_table(
                [
                    "problem",
                    "framework",
                    "optimizer",
                    "seed",
                    "steps",
                    "jacobian [s]",
                    "line search [s]",
                    "evaluations",
                    "step [s]",
                    "how",
                ],
                phase_rows,
            )
            + "\n"
        )
    commands = "\n".join(f"- `{c}`" for c in dict.fromkeys(r["command"] for r in records))
    machines = {
        (
            m.get("cpu_model"),
            m.get("cpu_count"),
            tuple(m.get("load_average_1_5_15min") or ()),
            m.get("date_utc"),
        )
        for m in (r["machine"] for r in records)
    }
    machine_lines = "\n".join(
        f"- {cpu} ({n} CPUs), load before {list(load)}, {date}"
        for cpu, n, load, date in sorted(machines, key=lambda m: str(m[3]))
    )
    budget = records[0].get("budget_s")
    threads = records[0].get("threads")
    return (
        f"# PINN runs side by side ({budget:.0f} s per run, {threads} thread(s), one pinned "
        "core each)\n\n"
        f"Commands:\n\n{commands}\n\nMachine:\n\n{machine_lines}\n\n"
        "`laplacian`: the adapters' Laplacian method (`default`: `forward` in both "
        "adapters); `steps`: steps taken in the budget; errors on the problem's evaluation "
        "points after the last step (`-`: not reported); CPU seconds of the run's process "
        "(start-up and compilation included).\n\n"
        f"{markdown_table(head, rows)}\n{summary}{ratios}{phases}"
    )


def main(argv: list[str] | None = None) -> None:
    """Read the records, print the table and write it next to them (or to ``--out``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    records = [json.loads(line) for line in args.runs.read_text().splitlines() if line.strip()]
    text = table(records)
    write_text(args.out or args.runs.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
