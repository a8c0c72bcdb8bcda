"""Package hygiene: the core imports no framework, every public name is documented."""

from __future__ import annotations

import ast
import inspect
import pathlib
import subprocess
import sys

import sketchlinalg as sl

CORE = pathlib.Path(sl.__file__).parent
FRAMEWORKS = ("numpy", "jax", "jaxlib", "torch", "cupy", "cupyx", "scipy")


def test_core_files_import_no_framework():
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FRAMEWORKS, f"{path.name} imports {name}"


def test_importing_the_core_loads_no_framework():
    code = f"import sys, sketchlinalg; print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_public_name_is_documented():
    for name in sl.__all__:
        obj = getattr(sl, name)
        if isinstance(obj, (tuple, str)):
            continue
        doc = inspect.getdoc(obj)
        assert doc and len(doc) > 40, f"sketchlinalg.{name} has no real docstring"
        if inspect.isclass(obj):
            for meth_name, meth in inspect.getmembers(obj, predicate=inspect.isfunction):
                if not meth_name.startswith("_"):
                    assert inspect.getdoc(meth), f"sketchlinalg.{name}.{meth_name} has no docstring"


def test_all_is_sorted_and_complete():
    exported = {n for n in dir(sl) if (not n.startswith("_") and n[0].isupper()) or n in sl.__all__}
    assert set(sl.__all__) <= exported
    assert len(set(sl.__all__)) == len(sl.__all__)
