"""benchmarks/crossover.py at tiny sizes (JAX): complete records, exact at full rank, skips.

No timing claims: a row per (N, method), finite times, the sketch exact (up to rounding) when
its rank reaches P, and a cell over the memory cap recorded as skipped with the reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import crossover

WIDTH = 8
P = crossover.n_params(WIDTH)  # 105
METHODS = ("woodbury", "nystrom", "nystrom-pcg")


def _tiny(out: Path, *extra: str) -> list[str]:
    common = ["--quick", "--framework", "jax", "--widths", str(WIDTH), "--repeats", "1"]
    return [*common, *extra, "--out", str(out)]


def test_full_rank_run_is_complete_and_exact(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    # N = 100 <= P: the woodbury cell is the reference; N = 200 > P: a dense reference.
    out = crossover.main(_tiny(tmp_path, "--n", "100,200", "--rank", str(P)))
    saved = json.loads((tmp_path / "crossover_quick.json").read_text())
    rows = saved["rows"]
    assert len(rows) == 6
    assert {(r["n_points"], r["method"]) for r in rows} == {
        (n, m) for n in (100, 200) for m in METHODS
    }
    for r in rows:
        assert r["n_params"] == P and r["framework"] == "jax"
        assert not r["skipped"] and r["skip_reason"] is None and "failed" not in r
        assert r["jacobian_path"] == "materialized"
        assert r["direction_s"] > 0 and r["first_call_s"] > 0 and r["build_s"] > 0
        assert r["peak_mib"] > 0
        assert math.isclose(r["damping"], 1e-6 * r["lambda_max"]) and r["damping"] > 0
        assert r["reference_method"] == ("woodbury" if r["n_points"] <= P else "dense")
        assert math.isfinite(r["rel_error"])
        # at rank P the sketch is G itself: exact up to rounding (and CG to its rtol)
        assert r["rel_error"] <= 1e-6, r
    ref_row = next(r for r in rows if (r["n_points"], r["method"]) == (100, "woodbury"))
    assert ref_row["error_note"] == "reference (this cell)"
    assert saved["machine"]["cpu_count"] >= 1 and saved["load_average_after"] is not None
    assert [e["n_params"] for e in out["crossover"]] == [P]
    md = (tmp_path / "crossover_quick.md").read_text()
    assert f"| jax | 100 | {P} | nystrom (l={P}) | materialized |" in md
    assert "## Crossover" in md and "python -m benchmarks.crossover --quick" in md


def test_cell_over_the_memory_cap_is_skipped_with_its_reason(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    N, rank = 100, 20
    sizes = {
        m: crossover.memory_estimate(
            m,
            N,
            P,
            width=WIDTH,
            rank=rank,
            path="materialized",
            chunk=N,
            product_chunk=1,
            itemsize=8,
        )[0]
        for m in METHODS
    }
    assert max(sizes["nystrom"], sizes["nystrom-pcg"], N * P * 8) < sizes["woodbury"]
    cap = (max(sizes["nystrom"], sizes["nystrom-pcg"]) + sizes["woodbury"]) / 2
    out = crossover.main(
        _tiny(tmp_path, "--n", str(N), "--rank", str(rank), "--memory-cap-gib", f"{cap / 2**30!r}")
    )
    rows = {r["method"]: r for r in out["rows"]}
    wood = rows["woodbury"]
    assert wood["skipped"] and wood.get("direction_s") is None
    assert wood["skip_reason"].startswith("memory:") and "> cap" in wood["skip_reason"]
    assert f"kernel copies 4 x {N} x {N}" in wood["skip_reason"]
    for m in ("nystrom", "nystrom-pcg"):
        r = rows[m]
        assert not r["skipped"] and r["direction_s"] > 0
        # the woodbury reference does not fit either: no error, and why
        assert r["rel_error"] is None and "reference woodbury" in r["error_note"]
    assert out["crossover"][0]["woodbury_skipped_from"] == N
    md = (tmp_path / "crossover_quick.md").read_text()
    assert "Woodbury skipped from N = 100" in md
