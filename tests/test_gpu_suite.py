"""The GPU suite script runs as it is: every stage of its CPU dry run exits 0."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_suite.sh"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout")
def test_gpu_suite_dry_run_passes_every_stage(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    env = dict(os.environ, PYTHON=sys.executable, GPU_SUITE_RESULTS=str(tmp_path / "gpu"))
    env.pop("OUT", None)
    done = subprocess.run(
        ["bash", str(SCRIPT), "--cpu-dry-run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    log = (tmp_path / "gpu" / "suite.log").read_text()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stages = dict(re.findall(r"^== (\w+): exit (\d+)", log, re.M))
    assert stages == {"checks": "0", "tests": "0", "steptime": "0", "crossover": "0"}, log
    assert "failed: none" in log
    assert (tmp_path / "gpu" / "steptime.json").exists()


def test_gpu_suite_rejects_unknown_arguments() -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "unknown argument --bogus" in done.stderr


def test_gpu_suite_only_runs_the_stages_asked_for(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable, GPU_SUITE_RESULTS=str(tmp_path / "gpu"))
    env.pop("OUT", None)
    done = subprocess.run(
        ["bash", str(SCRIPT), "--cpu-dry-run", "--only=nothing"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "gpu" / "suite.log").read_text()
    for name in ("checks", "tests", "steptime", "crossover"):
        assert f"== {name}: not asked for (--only)" in log
    assert "failed: none" in log
