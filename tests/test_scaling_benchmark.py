"""benchmarks/scaling.py in --quick mode: SNGD on 1 and 2 JAX CPU devices, weak and strong.

No timing claims: the records must be complete, the communication read from the compiled
step's HLO must equal the model (one all-reduce of the ``P x (l+1)`` block with the loss,
scalar all-reduces of the line search; nothing on one device), and the plot must exist.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import scaling


def test_quick_scaling_run_writes_complete_records(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("jax")
    out = scaling.main(["--quick", "--out-dir", str(tmp_path)])
    assert out["failures"] == []
    records = out["records"]
    assert {(r["mode"], r["devices"], r["method"]) for r in records} == {
        (mode, d, "sngd") for mode in ("weak", "strong") for d in (1, 2)
    }
    settings = out["settings"]
    P = scaling.n_params(settings["widths"])
    rank = settings["rank"]
    for r in records:
        assert r["P"] == P and r["rank"] == rank
        assert r["n_per_shard"] * r["devices"] == r["N"]
        if r["mode"] == "weak":
            assert r["n_per_shard"] == settings["n_per_shard"]
        else:
            assert r["N"] == settings["n_total"]
        assert math.isfinite(r["median_step_s"]) and r["median_step_s"] > 0
        assert len(r["step_s"]) == settings["steps"] and r["compile_s"] > 0
        assert r["loss_finite"]
        assert r["bytes_per_step"] == r["bytes_model"], r["collectives"]
        if r["devices"] == 1:
            assert r["bytes_per_step"] == 0 and r["collectives"] == []
        else:
            ops = r["collectives"]
            assert {c["op"] for c in ops} == {"all-reduce"}
            # the block [J^T (J Omega), J^T r] (with the loss or without it), else scalars
            big = [c["elements"] for c in ops if c["elements"] > 1]
            assert big in ([P * (rank + 1) + 1], [P * (rank + 1)]), big
            assert r["bytes_per_step"] >= 8 * (P * (rank + 1) + 1)
            assert r["model"]["n_loss"] >= 1  # the line search's trial losses
            assert not any(r["N"] in s or r["n_per_shard"] in s for c in ops for s in c["shapes"])
    # SNGD's volume does not depend on N: the same bytes in weak and strong at D = 2
    two = {r["mode"]: r["bytes_per_step"] for r in records if r["devices"] == 2}
    assert two["weak"] == two["strong"] > 0

    saved = json.loads((tmp_path / "scaling_quick.json").read_text())
    assert len(saved["records"]) == 4
    assert saved["machine"]["cpu_count"] >= 1 and saved["load_before"] is not None
    assert (tmp_path / "scaling_quick.png").stat().st_size > 0
    text = (tmp_path / "scaling_quick.md").read_text()
    assert "## Weak scaling" in text and "## Strong scaling" in text
    assert "not a speedup" in text


def test_collectives_parser_and_point_split() -> None:
    hlo = "\n".join(
        [
            "ENTRY %main.1 (p: f64[3]) -> f64[] {",
            "  %ar = f64[10,4]{1,0} all-reduce(f64[10,4]{1,0} %x), to_apply=%add",
            "  %s = f64[] all-reduce(f64[] %y), to_apply=%add",
            "  %g = f32[8,2]{1,0} all-gather(f32[4,2]{1,0} %z), dimensions={0}",
            "}",
        ]
    )
    ops = scaling.collectives(hlo)
    assert [c["op"] for c in ops] == ["all-reduce", "all-reduce", "all-gather"]
    assert [c["bytes"] for c in ops] == [320, 8, 64]
    assert not any(c["conditional"] for c in ops)
    assert scaling.split_points(2048, 8) == (1640, 408)
    n_int, n_bdry = scaling.split_points(256, 1)
    assert n_int + n_bdry == 256 and n_int == 205
    with pytest.raises(ValueError, match="do not split"):
        scaling.split_points(100, 8)
    assert scaling.n_params([2, 64, 64, 1]) == 4417
