"""benchmarks/scale.py in --quick mode: two tiny widths, two SNGD steps each, both frameworks.

No timing or accuracy claims: the records must be complete, the measured peak memory and the
model's prediction present, and the error finite.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import scale


def test_quick_scale_run_writes_complete_records(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    stem = tmp_path / "scale_quick"
    out = scale.main(["--quick", "--framework", "jax,torch", "--out", str(stem)])
    records = out["records"]
    assert {(r["framework"], r["width"]) for r in records} == {
        (fw, w) for fw in ("jax", "torch") for w in (8, 16)
    }
    for r in records:
        assert r["n_params"] == scale.n_params(r["width"])
        assert r["steps"] == 2 and r["n_points"] == 1020
        assert math.isfinite(r["rel_l2"]) and math.isfinite(r["median_step_s"])
        assert r["peak_rss_mib"] >= r["rss_before_mib"] > 0
        assert r["model_mib"] > r["rss_before_mib"]  # the baseline plus the step's arrays
        assert r["trace"][2]["loss"] <= r["trace"][1]["loss"]  # loss before step 2 vs step 1
    saved = json.loads(stem.with_suffix(".json").read_text())
    assert len(saved["records"]) == 4 and saved["machine"]["cpu_count"] >= 1
    assert stem.with_suffix(".png").exists()
    assert "| jax | 105 |" in stem.with_suffix(".md").read_text()


def test_parameter_counts() -> None:
    assert scale.n_params(1000) == 1_005_001
    assert scale.n_params(314) == 100_167
    assert scale.n_params(98) == 10_095
