"""The PINN benchmark suite (benchmarks/pinn): problem definitions and --quick smoke runs.

No accuracy claims here: the problems' exact solutions must zero every residual term, and
``--quick`` runs of every problem x framework x optimizer must write records with finite
errors and, where the points are fixed, a lower loss than at the start.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.pinn import __main__ as cli
from benchmarks.pinn import report, rla_pinns
from benchmarks.pinn.optimizers import DEFAULT_LIST, KINDS, parse_optimizers
from benchmarks.pinn.problems import EXTRA_PROBLEMS, PROBLEMS, make_problem, parameter_count

FRAMEWORKS = ("jax", "torch")


def _residuals_of_exact_solution(framework: str, name: str) -> list[np.ndarray]:
    """Every term's residual with the network replaced by the exact solution."""
    problem = make_problem(name, beta=1.5)
    pts = problem.points(np.random.default_rng(0), False)
    out = []
    if framework == "jax":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        import sketchlinalg_jax as slj

        def u(x: jax.Array) -> jax.Array:
            return problem.exact(jnp, x)

        for term, p in zip(problem.terms, pts, strict=True):
            fn = jax.vmap(lambda x, term=term: term.residual(jnp, slj, u, x))
            out.append(np.asarray(fn(jnp.asarray(p))))
    else:
        torch = pytest.importorskip("torch")
        import sketchlinalg_torch as slt

        def v(x: torch.Tensor) -> torch.Tensor:
            return problem.exact(torch, x)

        for term, p in zip(problem.terms, pts, strict=True):
            fn = torch.func.vmap(lambda x, term=term: term.residual(torch, slt, v, x))
            out.append(fn(torch.as_tensor(p[:200])).numpy())
    return out


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", PROBLEMS + EXTRA_PROBLEMS)
def test_exact_solution_zeroes_every_term(framework: str, name: str) -> None:
    # The PDE, source, boundary/initial/periodic data and exact solution agree: a wrong
    # sign, factor or boundary value leaves an O(1) residual.
    for term, res in zip(
        make_problem(name).terms, _residuals_of_exact_solution(framework, name), strict=True
    ):
        assert res.size > 0
        assert np.max(np.abs(res)) < 1e-9, f"{name}/{term.name}: max |r| = {np.max(np.abs(res))}"


def test_rla_pinns_log_is_read_from_its_step_lines(tmp_path: Path) -> None:
    """The side-by-side record takes steps, time and RMS error from train.py's last line."""
    log = tmp_path / "run.log"
    log.write_text(
        "Running on device cpu in dtype torch.float64.\n"
        "Step: 0000000, Loss: 121.8, L2 Error: 1.6, Interior: 120.4, Boundary: 1.4, Time: 1.4s\n"
        "noise\n"
        "Step: 0000009, Loss: 0.011, L2 Error: 0.017, Interior: 0.010, Boundary: 0.0005, "
        "Time: 10.0s\n"
    )
    got = rla_pinns._last_step(log)
    assert got["iterations"] == 10 and got["seconds_per_step"] == pytest.approx(1.0)
    assert got["rms"] == 0.017 and got["final_loss"] == 0.011 and got["initial_loss"] == 121.8
    log.write_text("Traceback ...\n")
    with pytest.raises(SystemExit, match="no 'Step:' line"):
        rla_pinns._last_step(log)


def test_problem_sizes() -> None:
    assert parameter_count(make_problem("poisson2d").widths) == 4417
    assert 5_000 <= parameter_count(make_problem("poisson5d").widths) <= 10_100
    p5 = make_problem("poisson5d")
    a = p5.points(np.random.default_rng(0), False)
    b = p5.points(np.random.default_rng(1), False)
    assert p5.resample and not np.array_equal(a[0], b[0])
    bdry = a[1]  # every boundary point lies on a face of the cube
    assert np.all(np.any((bdry == 0.0) | (bdry == 1.0), axis=1))
    with pytest.raises(ValueError, match="problem must be one of"):
        make_problem("burgers")
    with pytest.raises(ValueError, match="beta"):
        make_problem("transport", beta=-1.0)


def test_parse_optimizers() -> None:
    specs = parse_optimizers(DEFAULT_LIST)
    assert {s.kind for s in specs} == set(KINDS)
    (s,) = parse_optimizers("sngd:rank=50;damping=1e-8;inverse=projected")
    assert (s.settings["rank"], s.settings["damping"], s.settings["inverse"]) == (
        50,
        1e-8,
        "projected",
    )
    assert parse_optimizers("sngd-r100")[0].settings["rank"] == 100
    with pytest.raises(ValueError, match="unknown kind 'sgd'"):
        parse_optimizers("sgd")
    with pytest.raises(ValueError, match="setting 'ranks=3'"):
        parse_optimizers("sngd:ranks=3")
    with pytest.raises(ValueError, match="expected an integer"):
        parse_optimizers("sngd:rank=2.5")
    with pytest.raises(ValueError, match="repeat"):
        parse_optimizers("adam,adam")
    # the grid's batch: an engine setting of the natural-gradient kinds only
    (full, one) = parse_optimizers("engd-woodbury:grid_batch=all,spring:grid_batch=2")
    assert full.settings["grid_batch"] is None and one.settings["grid_batch"] == 2
    assert "grid_batch" not in parse_optimizers("engd-woodbury")[0].settings
    with pytest.raises(ValueError, match="setting 'grid_batch=all'"):
        parse_optimizers("adam:grid_batch=all")


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", PROBLEMS)
def test_quick_runs(framework: str, name: str, tmp_path: Path) -> None:
    pytest.importorskip(framework)
    out = tmp_path / "runs.jsonl"
    records = cli.main(["--problem", name, "--framework", framework, "--quick", "--out", str(out)])
    lines = out.read_text().splitlines()
    assert len(lines) == len(records) == len(parse_optimizers(DEFAULT_LIST))
    for rec in map(json.loads, lines):
        label = f"{name}/{framework}/{rec['optimizer']}"
        assert rec["status"] == "max_steps", f"{label}: {rec['status']} {rec['message']}"
        assert rec["iterations"] == cli.QUICK_STEPS
        assert math.isfinite(rec["rel_l2"]) and math.isfinite(rec["rms"]), label
        assert rec["machine"]["cpu_count"] >= 1 and rec["peak_rss_mib"] > 0
        assert rec["device"].startswith("cpu"), rec["device"]  # the default device, recorded
        assert rec["trace"][0]["step"] == 0 and rec["trace"][-1]["step"] == cli.QUICK_STEPS
        if not rec["resampled_points"]:  # same points before and after: the loss must drop
            assert rec["final_loss"] < rec["initial_loss"], label


def test_report_from_records(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("torch")
    runs = tmp_path / "runs.jsonl"
    cli.main(
        [
            "--problem",
            "poisson2d,nonlinear",
            "--framework",
            "torch",
            "--quick",
            "--optimizers",
            "adam,sngd-r100,engd",
            "--out",
            str(runs),
        ]
    )
    # Present the smoke records as full ones so that the report machinery runs on them.
    lines = [json.loads(line) | {"quick": False} for line in runs.read_text().splitlines()]
    runs.write_text("".join(json.dumps(r) + "\n" for r in lines))
    text = report.main(["--runs", str(runs), "--out", str(tmp_path)])
    assert "| poisson2d | torch | sngd-r100 |" in text
    assert "best SNGD (sngd-r100)" in text
    assert (tmp_path / "report.md").exists() and (tmp_path / "error_vs_time_torch.png").exists()
    best = min(r["rel_l2"] for r in lines if r["problem"] == "poisson2d" and r["kind"] != "adam")
    assert report.error_at(lines[0], 0.0) == lines[0]["initial_rel_l2"]
    assert best > 0


def test_grid_choice_runs_both_searches(tmp_path: Path) -> None:
    """The diagnostic runs both trajectories of a seed, records the shadow search's choices
    and restores the engine's search afterwards."""
    pytest.importorskip("torch")
    import sketchlinalg._step as step_module
    from benchmarks.pinn import grid_choice

    search = step_module.grid_line_search
    out = grid_choice.main(
        ["--steps", "4", "--every", "2", "--seeds", "0", "--out", str(tmp_path / "g")]
    )
    assert step_module.grid_line_search is search
    (run,) = out["runs"]
    assert [s for s, _ in run["whole"]] == [s for s, _ in run["early"]] == [2, 4]
    assert all(math.isfinite(e) for _, e in run["whole"] + run["early"])
    assert all(d["whole"] != d["early"] for d in run["differing_steps"])
    assert (tmp_path / "g.md").read_text().count("| 0 |") == 2
