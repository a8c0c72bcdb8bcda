"""The repository stays lint- and type-clean, and the README's demo runs."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest
from example_loader import load_example

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "sketchlinalg", "tests"],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_is_clean(cmd):
    if shutil.which(cmd[0]) is None and importlib.util.find_spec(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} is not installed (pip install -e '.[test]')")
    out = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_nystrom_demo_runs(capsys):
    demo = load_example("nystrom_demo")
    # The sketched inverse is accurate when ||G - G_hat|| << mu: with eigenvalues 0.81^i,
    # rank 60 leaves ~0.81^60 = 3e-6, against mu = 1e-3.
    demo.main(["--n-residuals", "120", "--n-params", "80", "--rank", "60", "--damping", "1e-3"])
    out = capsys.readouterr().out
    rows = {line.split()[0]: float(line.split()[2]) for line in out.splitlines()[-6:]}
    assert set(rows) == {"dense", "woodbury", "nystrom", "nystrom-pcg", "kernel-nystrom", "auto"}
    assert max(rows["dense"], rows["woodbury"], rows["nystrom-pcg"], rows["auto"]) < 1e-8, out
    assert max(rows["nystrom"], rows["kernel-nystrom"]) < 1e-2, out
