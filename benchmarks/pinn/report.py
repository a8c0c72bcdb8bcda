"""Turn the PINN benchmark records into markdown tables, target checks and PNG plots.

Run: ``python -m benchmarks.pinn.report [--runs FILE ...]`` (default: every
``benchmarks/results/pinn/runs*.jsonl``).
For every (problem, framework, optimizer) the latest record is used. Writes
``benchmarks/results/pinn/report.md``, ``error_vs_time_<framework>.png`` (relative L2 error
against training wall time, one panel per problem, one line per optimizer) and
``gram_spectrum.png`` (from ``spectrum.json``, when present).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._common import format_float, markdown_table, write_text
from .optimizers import UNTUNED
from .problems import PROBLEMS

RESULTS = Path(__file__).resolve().parents[1] / "results" / "pinn"
BASELINES = ("adam", "lbfgs")
#: Issue 5's required gap between the best natural-gradient error and the best of Adam/L-BFGS.
REQUIRED_GAP = {"poisson2d": 1000.0}
DEFAULT_GAP = 100.0
POISSON2D_SNGD_TARGET = 2e-6
POISSON5D_PUBLIC_RMS = 1.6e-4
#: Issue 22: an untuned default within this factor of the best tuned error; SNGD's default on
#: Poisson 5D below POISSON5D_SNGD_TARGET; float32 defaults on Poisson 2D below the next.
DEFAULTS_FACTOR = 3.0
POISSON5D_SNGD_TARGET = 1e-4
FLOAT32_TARGET = 1e-3
#: The defaults held to DEFAULTS_FACTOR (dense ENGD's step cost is what the others remove).
DEFAULTS_HELD = ("sngd-default", "engd-woodbury-default", "nystrom-pcg-default", "spring-default")


def load(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The latest non-quick record per (problem, beta, framework, optimizer), in file order."""
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    lines = [line for path in paths for line in path.read_text().splitlines()]
    for line in lines:
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("quick") or "rel_l2" not in rec:
            continue
        beta = (rec.get("problem_settings") or {}).get("beta")
        latest[(rec["problem"], beta, rec["framework"], rec["optimizer"])] = rec
    return list(latest.values())


def _err(rec: dict[str, Any]) -> float:
    v = rec.get("rel_l2")
    return float(v) if v is not None and math.isfinite(v) else math.inf


def _problem_key(rec: dict[str, Any]) -> str:
    beta = (rec.get("problem_settings") or {}).get("beta")
    return rec["problem"] + (f" (beta={beta:g})" if beta not in (None, 1.0) else "")


def results_table(records: Sequence[dict[str, Any]]) -> str:
    """One row per run."""
    rows = []
    for r in records:
        rows.append(
            [
                _problem_key(r),
                r["framework"],
                r["optimizer"],
                str(r["n_params"]),
                str(r["n_points"]),
                str(r["iterations"]),
                format_float(r.get("seconds_per_step")),
                f"{r['wall_s']:.0f}",
                format_float(r.get("final_loss")),
                format_float(r.get("rel_l2")),
                format_float(r.get("rms")),
                f"{r.get('peak_rss_mib', float('nan')):.0f}",
                r.get("status", "") + (f": {r['message'][:60]}" if r.get("message") else ""),
            ]
        )
    return markdown_table(
        [
            "problem",
            "framework",
            "optimizer",
            "P",
            "N",
            "steps",
            "s/step",
            "wall [s]",
            "final loss",
            "rel. L2",
            "RMS",
            "peak RSS [MiB]",
            "status",
        ],
        rows,
    )


def error_at(rec: dict[str, Any], t: float) -> float:
    """The relative L2 error of the last trace point at or before ``t`` seconds."""
    best = math.inf
    for point in rec.get("trace", []):
        if point["t"] <= t and point.get("rel_l2") is not None:
            best = point["rel_l2"]
    return best


def target_checks(records: Sequence[dict[str, Any]], steptime: dict[str, Any] | None) -> str:
    """Issue 5's targets, each with the measured numbers and a met / not met verdict."""
    lines = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((_problem_key(r), r["framework"]), []).append(r)
    gap_rows = []
    sngd_vs_engd: dict[str, list[bool]] = {}
    for (problem, fw), recs in sorted(groups.items()):
        base = [r for r in recs if r["kind"] in BASELINES]
        ngd = [r for r in recs if r["kind"] not in BASELINES]
        if not base or not ngd:
            continue
        best_base = min(base, key=_err)
        best_ngd = min(ngd, key=_err)
        gap = _err(best_base) / _err(best_ngd)
        need = REQUIRED_GAP.get(problem, DEFAULT_GAP)
        gap_rows.append(
            [
                problem,
                fw,
                f"{best_ngd['optimizer']} {format_float(_err(best_ngd))}",
                f"{best_base['optimizer']} {format_float(_err(best_base))}",
                f"{gap:.3g}x",
                f">= {need:g}x",
                "met" if gap >= need else "NOT met",
            ]
        )
        engd = [r for r in recs if r["kind"] == "engd"]
        sngd = [r for r in recs if r["kind"] == "sngd"]
        if engd and sngd:
            best_sngd = min(sngd, key=_err)
            sngd_vs_engd.setdefault(fw, []).append(_err(best_sngd) <= _err(engd[0]))
            lines.append(
                f"- {problem} / {fw}: best SNGD ({best_sngd['optimizer']}) "
                f"{format_float(_err(best_sngd))} vs dense ENGD {format_float(_err(engd[0]))} "
                f"at the same budget ({engd[0]['budget_s']:g} s)"
            )
    out = ["## Targets (issue 5)", ""]
    out.append(
        "**Best natural-gradient method vs the best of Adam and L-BFGS** (final relative L2 "
        "error after the same wall-time budget):"
    )
    out += [
        "",
        markdown_table(
            ["problem", "framework", "best NGD", "best baseline", "gap", "target", "verdict"],
            gap_rows,
        ),
        "",
    ]
    for r in records:
        if r["problem"] == "poisson2d" and r["kind"] == "sngd":
            verdict = "met" if _err(r) <= POISSON2D_SNGD_TARGET else "NOT met"
            out.append(
                f"- Poisson 2D, {r['framework']} {r['optimizer']} (P = {r['n_params']}): "
                f"relative L2 {format_float(_err(r))} after {r['wall_s']:.0f} s "
                f"(target <= {POISSON2D_SNGD_TARGET:g}: {verdict})"
            )
    out.append("")
    out.append("**SNGD vs dense ENGD at equal wall time** (target: SNGD <= ENGD on >= 3 of 4):")
    out += lines
    for fw, wins in sorted(sngd_vs_engd.items()):
        out.append(f"- {fw}: SNGD <= ENGD on {sum(wins)} of {len(wins)} problems")
    out.append("")
    for r in records:
        if r["problem"] == "poisson5d":
            rms = r.get("rms")
            ok = rms is not None and rms < POISSON5D_PUBLIC_RMS
            out.append(
                f"- Poisson 5D, {r['framework']} {r['optimizer']}: RMS {format_float(rms)}, "
                f"relative L2 {format_float(r.get('rel_l2'))} after {r['wall_s']:.0f} s "
                f"(public ENGD-Woodbury: RMS ~{POISSON5D_PUBLIC_RMS:g} in 90 s; "
                f"{'lower' if ok else 'NOT lower'})"
            )
    if steptime:
        out += ["", f"**One step at P = {steptime['n_params']}** (`{steptime['command']}`):", ""]
        for k, v in steptime["ratios"].items():
            out.append(f"- {k}: {v:.1f}x")
    return "\n".join(out)


def _initial_loss(rec: dict[str, Any]) -> float:
    trace = rec.get("trace") or [{}]
    return float(trace[0].get("loss", math.nan))


def _default_row(rec: dict[str, Any], best: dict[str, Any] | None) -> list[str]:
    ratio = _err(rec) / _err(best) if best is not None else math.nan
    held = rec["optimizer"] in DEFAULTS_HELD
    verdict = ("within 3x" if ratio <= DEFAULTS_FACTOR else "NOT within 3x") if held else "not held"
    below = rec.get("final_loss", math.inf) < _initial_loss(rec)
    return [
        _problem_key(rec),
        rec["framework"],
        rec["optimizer"],
        format_float(_err(rec)),
        f"{best['optimizer']} {format_float(_err(best))}" if best is not None else "-",
        f"{ratio:.2g}x" if math.isfinite(ratio) else "-",
        verdict,
        f"{format_float(_initial_loss(rec))} -> {format_float(rec.get('final_loss'))}"
        + ("" if below else " (NOT below)"),
        str(rec.get("final_status", "-")),
        f"{format_float(rec.get('final_damping'))}"
        + (f", rank {rec['final_rank']}" if rec.get("final_rank") else ""),
    ]


def defaults_section(
    records: Sequence[dict[str, Any]],
    float32: Sequence[dict[str, Any]] = (),
    extra: Sequence[dict[str, Any]] = (),
) -> str:
    """Issue 22: the untuned defaults against the best tuned run of any optimizer."""
    defaults = [r for r in records if r["optimizer"] in UNTUNED]
    if not defaults:
        return ""
    header = [
        "problem",
        "framework",
        "default",
        "rel. L2",
        "best tuned",
        "ratio",
        "target",
        "loss: initial -> final",
        "final status",
        "damping, rank at the end",
    ]
    rows = []
    for r in defaults:
        tuned = [
            t
            for t in records
            if t["optimizer"] not in UNTUNED
            and _problem_key(t) == _problem_key(r)
            and t["framework"] == r["framework"]
        ]
        rows.append(_default_row(r, min(tuned, key=_err) if tuned else None))
    out = [
        "## Untuned defaults vs best tuned (issue 22)",
        "",
        "Every natural-gradient optimizer with no damping, rank or momentum given "
        "(`--optimizers defaults`), against the best relative L2 error any tuned "
        "configuration of any optimizer reached on the same problem and framework in these "
        f"records. Target: within {DEFAULTS_FACTOR:g}x for "
        + ", ".join(DEFAULTS_HELD)
        + " (dense ENGD is listed, not held: its step cost is what the others remove).",
        "",
        markdown_table(header, rows),
        "",
    ]
    for r in defaults:
        if r["problem"] == "poisson5d" and r["optimizer"] == "sngd-default":
            ok = _err(r) <= POISSON5D_SNGD_TARGET
            out.append(
                f"- Poisson 5D, {r['framework']} sngd-default: relative L2 "
                f"{format_float(_err(r))} (target <= {POISSON5D_SNGD_TARGET:g}: "
                f"{'met' if ok else 'NOT met'})"
            )
    for r in float32:
        if r["optimizer"] in UNTUNED and r["problem"] == "poisson2d":
            ok = _err(r) <= FLOAT32_TARGET
            out.append(
                f"- Poisson 2D, float32, {r['framework']} {r['optimizer']}: relative L2 "
                f"{format_float(_err(r))} (target <= {FLOAT32_TARGET:g}: "
                f"{'met' if ok else 'NOT met'}); loss {format_float(_initial_loss(r))} -> "
                f"{format_float(r.get('final_loss'))}"
            )
    if extra:
        out += [
            "",
            "**Problems outside the suite** (the defaults were not tuned to them): "
            + "; ".join(sorted({make_title(r) for r in extra})),
            "",
            markdown_table(
                [*header[:3], "rel. L2", "loss: initial -> final", "final status", "damping, rank"],
                [
                    [
                        _problem_key(r),
                        r["framework"],
                        r["optimizer"],
                        format_float(_err(r)),
                        f"{format_float(_initial_loss(r))} -> {format_float(r.get('final_loss'))}",
                        str(r.get("final_status", "-")),
                        format_float(r.get("final_damping"))
                        + (f", rank {r['final_rank']}" if r.get("final_rank") else ""),
                    ]
                    for r in extra
                ],
            ),
        ]
    return "\n".join(out)


def _at_step(rec: dict[str, Any], k: int) -> dict[str, Any] | None:
    """The last trace point at or before step ``k``."""
    points = [p for p in rec.get("trace") or [] if p.get("step", math.inf) <= k]
    return points[-1] if points else None


#: The issue-21 reruns of the natural-gradient rows: (file pattern, section title, intro).
ISSUE21_RERUNS = (
    (
        "rerun_issue21_*.jsonl",
        "Natural-gradient rows rerun after the step-cost work (issue 21)",
        "The natural-gradient configurations of the committed records, same budget and "
        "pinning, rerun with the forward-Laplacian Jacobians, the early-stopping line search, "
        "the symmetric kernel product and (torch) the MLP rows from layer factors "
        "(`rerun_issue21_*.jsonl`).",
    ),
    (
        "rerun_issue21b_*.jsonl",
        "Natural-gradient rows rerun after the warm-started grid (issue 21)",
        "As above, with the grid line search started at the last step size and (torch) the "
        "factor rows from one reverse pass (`rerun_issue21b_*.jsonl`: every JAX row; the "
        "torch rows the previous rerun left behind).",
    ),
    (
        "rerun_issue21c_*.jsonl",
        "Natural-gradient rows rerun with the current defaults (issue 21)",
        "As above, with the grid line search's warm start off again (the default since dense "
        "ENGD stalled on transport with it) and (torch) the factor pass without zero-filled "
        "temporaries (`rerun_issue21c_*.jsonl`: every JAX row; the torch rows that were "
        "behind their records in the reruns above).",
    ),
    (
        "rerun_issue21d_*.jsonl",
        "torch rows rerun with batched residuals (issue 21)",
        "As above, with torch's per-point residuals of MLPs run on all their points at once "
        "(no `vmap`) in the line search and the factor pass (`rerun_issue21d_torch.jsonl`: "
        "the seven torch rows of the previous section).",
    ),
)


def rerun_section(
    records: Sequence[dict[str, Any]],
    reruns: Sequence[dict[str, Any]],
    *,
    title: str = "Tuned rows rerun with the current code (issue 15)",
    intro: str = (
        "The same tuned configurations, budget and pinning as the committed records "
        "(`rerun_issue15_*.jsonl`), run through the step engine in the core."
    ),
) -> str:
    """Tuned rows rerun with later code, next to the committed records."""
    if not reruns:
        return ""
    committed = {(_problem_key(r), r["framework"], r["optimizer"]): r for r in records}
    rows = []
    for r in reruns:
        old = committed.get((_problem_key(r), r["framework"], r["optimizer"]))
        ratio = _err(r) / _err(old) if old is not None else math.nan
        same = "-"
        if old is not None:  # per-step accuracy apart from per-step time
            k = min(int(r.get("iterations", 0)), int(old.get("iterations", 0)))
            a, b = _at_step(old, k), _at_step(r, k)
            if a is not None and b is not None:
                same = (
                    f"{format_float(a['rel_l2'])} (step {a['step']}) / "
                    f"{format_float(b['rel_l2'])} (step {b['step']})"
                )
        rows.append(
            [
                _problem_key(r),
                r["framework"],
                r["optimizer"],
                format_float(_err(old)) if old is not None else "-",
                format_float(_err(r)),
                f"{ratio:.2g}x" if math.isfinite(ratio) else "-",
                str(old.get("iterations", "-")) if old is not None else "-",
                str(r.get("iterations", "-")),
                same,
            ]
        )
    header = [
        "problem",
        "framework",
        "optimizer",
        "committed rel. L2",
        "rerun rel. L2",
        "rerun / committed",
        "committed steps",
        "rerun steps",
        "at the common step: committed / rerun",
    ]
    return "\n".join(
        [
            f"## {title}",
            "",
            f"{intro} The last column compares the two traces at the last evaluation "
            "before the smaller step count: the accuracy per step, apart from the time per "
            "step.",
            "",
            markdown_table(header, rows),
            "",
        ]
    )


def make_title(rec: dict[str, Any]) -> str:
    """``name: title`` of a record's problem."""
    from .problems import make_problem

    return f"{rec['problem']}: {make_problem(rec['problem']).title}"


def plot_errors(records: Sequence[dict[str, Any]], framework: str, path: Path) -> bool:
    """Relative L2 error vs wall time, one panel per problem; False when nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in records if r["framework"] == framework and r.get("trace")]
    problems = [p for p in PROBLEMS if any(r["problem"] == p for r in recs)]
    if not problems:
        return False
    fig, axes = plt.subplots(1, len(problems), figsize=(4.2 * len(problems), 3.8), squeeze=False)
    for ax, problem in zip(axes[0], problems, strict=True):
        ax.set_prop_cycle(color=[plt.get_cmap("tab20")(i) for i in range(20)])
        for r in (r for r in recs if r["problem"] == problem):
            pts = [p for p in r["trace"] if p.get("rel_l2") is not None and p["t"] > 0]
            if not pts:
                continue
            style = "--" if r["kind"] in BASELINES else "-"
            ax.loglog(
                [p["t"] for p in pts], [p["rel_l2"] for p in pts], style, label=r["optimizer"]
            )
        ax.set_title(problem)
        ax.set_xlabel("wall time [s]")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("relative L2 error")
    axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"PINN benchmark, {framework}, float64 (dashed: Adam / L-BFGS)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_spectrum(spectrum: dict[str, Any], path: Path) -> None:
    """Eigenvalues of G at initialization and after training, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name in ("initial", "trained"):
        lam = [v for v in spectrum[name]["eigenvalues"] if v > 0]
        ax.semilogy(range(1, len(lam) + 1), lam, label=name)
    ax.set_xlabel("index i")
    ax.set_ylabel("eigenvalue lambda_i of G = J^T J")
    ax.set_title(
        f"Poisson 2D Gram spectrum (P = {spectrum['n_params']}, N = {spectrum['n_points']})"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> str:
    """Write the report and plots; return the markdown."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--runs",
        type=Path,
        nargs="*",
        default=None,
        help="JSON-lines record files (default: every runs*.jsonl in the results folder)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    runs = args.runs or sorted(RESULTS.glob("runs*.jsonl"))
    records = load(runs)
    float32 = load(sorted(RESULTS.glob("float32_runs*.jsonl")))
    extra = load(sorted(RESULTS.glob("extra_runs*.jsonl")))
    reruns = load(sorted(RESULTS.glob("rerun_issue15_*.jsonl")))
    if not records:
        raise SystemExit(f"no full-benchmark records in {[str(p) for p in runs]}")
    order = {name: i for i, name in enumerate(PROBLEMS)}
    records.sort(key=lambda r: (order.get(r["problem"], 99), r["framework"]))
    args.out.mkdir(parents=True, exist_ok=True)
    steptime_path = RESULTS / "steptime.json"
    steptime = json.loads(steptime_path.read_text()) if steptime_path.exists() else None
    machine = records[-1].get("machine", {})
    sources = ", ".join(f"`{p.name}`" for p in runs)
    parts = [
        "# PINN benchmark results",
        "",
        "Produced by `python -m benchmarks.pinn.report` from the records in "
        f"{sources}; each record holds the exact command, the settings and the "
        "machine. Relative L2 error on the evaluation set of each problem, after the same "
        "training wall-time budget for every optimizer (first step, including JAX "
        "compilation, counted).",
        "",
        f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cpu_count', '?')} cores, "
        f"Python {str(machine.get('python', '?')).split()[0]}, "
        f"load average at start {machine.get('load_average_1_5_15min')}. Cores available "
        "to the runs (CPU affinity): "
        + ", ".join(sorted({str(r.get("machine", {}).get("cpu_affinity_count")) for r in records}))
        + "; thread settings: "
        + ", ".join(
            sorted(
                {
                    " ".join(
                        f"{k}={v}"
                        for k, v in r.get("machine", {}).get("env", {}).items()
                        if v and k in ("OMP_NUM_THREADS", "XLA_FLAGS")
                    )
                    or "defaults"
                    for r in records
                }
            )
        )
        + ".",
        "",
        "Commands: " + "; ".join(sorted({f"`{r['command']}`" for r in records})),
        "",
        target_checks(records, steptime),
        "",
        defaults_section(records, float32, extra),
        "",
        rerun_section(records, reruns),
        "",
        *(
            part
            for pattern, title, intro in ISSUE21_RERUNS
            for part in (
                rerun_section(
                    records, load(sorted(RESULTS.glob(pattern))), title=title, intro=intro
                ),
                "",
            )
        ),
        "## All runs",
        "",
        results_table(records),
        "",
    ]
    for fw in ("jax", "torch"):
        png = args.out / f"error_vs_time_{fw}.png"
        if plot_errors(records, fw, png):
            parts += [f"![relative L2 error vs time, {fw}]({png.name})", ""]
    spectrum_path = RESULTS / "spectrum.json"
    if spectrum_path.exists():
        spectrum = json.loads(spectrum_path.read_text())
        plot_spectrum(spectrum, args.out / "gram_spectrum.png")
        tr = spectrum["trained"]
        parts += [
            "## Gram spectrum",
            "",
            f"`{spectrum['command']}`: eigenvalues of G at initialization and after "
            f"{spectrum['training']['iterations']} SNGD steps (relative L2 "
            f"{format_float(spectrum['training']['rel_l2'])}). Trained: d_eff(1e-10) = "
            f"{tr['d_eff']['1e-10']:.0f} of {len(tr['eigenvalues'])}; relative tail after "
            "rank k: "
            + ", ".join(f"k={k}: {format_float(v)}" for k, v in tr["relative_tail"].items())
            + ".",
            "",
            "![Gram spectrum](gram_spectrum.png)",
            "",
        ]
    text = "\n".join(parts)
    write_text(args.out / "report.md", text)
    print(text)
    return text


if __name__ == "__main__":
    main()
