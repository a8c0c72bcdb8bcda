"""The repository stays lint- and type-clean, and the README's demo runs."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest

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
    spec = importlib.util.spec_from_file_location(
        "nystrom_demo", ROOT / "examples" / "nystrom_demo.py"
    )
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.main(["--n-residuals", "120", "--n-params", "80", "--rank", "40"])
    out = capsys.readouterr().out
    for method in ("dense", "woodbury", "nystrom", "nystrom-pcg", "kernel-nystrom", "auto"):
        assert f"\n{method} " in out
    # every method's relative error is printed and small on this easy problem
    errors = [float(line.split()[2]) for line in out.splitlines()[-6:]]
    assert max(errors) < 1e-3, out
