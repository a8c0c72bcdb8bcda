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

from .._common import markdown_table, write_text


def table(records: list[dict[str, Any]]) -> str:
    """The markdown report of ``records``."""
    rows = [
        [
            r["problem"],
            r["framework"],
            r["optimizer"],
            str(r["problem_settings"].get("laplacian", "default")),
            str(r["iterations"]),
            f"{r['seconds_per_step']:.3f}",
            f"{r['rel_l2']:.2e}",
            f"{r['rms']:.2e}",
        ]
        for r in records
    ]
    head = [
        "problem",
        "framework",
        "optimizer",
        "laplacian",
        "steps",
        "s/step",
        "rel. L2 error",
        "RMS error",
    ]
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
        "points after the last step.\n\n"
        f"{markdown_table(head, rows)}\n"
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
