"""The documentation: it builds with warnings as errors, its examples run, and the API
reference documents every public name of the core and of the adapters.

The build is the README's documentation command, ``python -m sphinx -W --keep-going -b html
docs <out>``, into a fresh folder (a stale environment would not re-read unchanged pages,
and so would hide their warnings). The examples of ``docs/examples/`` run first, each in its
own interpreter with a timeout; the build then shows their output instead of running them
again (``docs/conf.py``, ``SKETCHLINALG_DOCS_EXAMPLE_OUTPUT``).
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import math
import os
import pathlib
import re
import subprocess
import sys
import zlib
from dataclasses import dataclass
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGES = ("sketchlinalg", "sketchlinalg_jax", "sketchlinalg_torch", "sketchlinalg_cupy")
# Each example, the line it must print (the examples assert their own accuracy), its limit [s].
EXAMPLES = {
    "getting_started_jax": (r"SNGD, \d+ steps: .*relative L2 error", 300),
    "getting_started_torch": (r"SNGD, \d+ steps: .*relative L2 error", 300),
    "getting_started_equinox": (r"Equinox MLP, \d+ SNGD steps: relative L2 error", 300),
    "getting_started_flax_linen": (r"Flax linen MLP, \d+ SNGD steps: relative L2 error", 300),
    "getting_started_flax_nnx": (r"Flax nnx MLP, \d+ SNGD steps: relative L2 error", 300),
    "least_squares": (r"sketchlinalg +status [1-4],", 120),
}
BUILD_TIMEOUT = 600
# As docs/conf.py runs them: one BLAS/OpenMP thread unless the caller chose otherwise.
EXAMPLE_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **os.environ}


@dataclass
class Run:
    """One subprocess: its exit code (``None`` after a timeout) and output."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds_allowed: float

    def log(self) -> str:
        if self.returncode is None:
            return f"timed out after {self.seconds_allowed} s\n{self.stdout}\n{self.stderr}"
        return (
            f"exit code {self.returncode}\n--- stdout ---\n{self.stdout}\n"
            f"--- stderr ---\n{self.stderr}"
        )


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> Run:
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return Run(None, out, err, timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr, timeout)


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, dict[str, Run]]:
    """Run every example once; their outputs go to a folder for the build to show."""
    folder = tmp_path_factory.mktemp("example_output")
    runs = {}
    for name, (_, timeout) in EXAMPLES.items():
        run = _run([sys.executable, str(DOCS / "examples" / f"{name}.py")], timeout, EXAMPLE_ENV)
        runs[name] = run
        if run.returncode == 0:
            (folder / f"{name}.txt").write_text(run.stdout)
    return folder, runs


@pytest.fixture(scope="module")
def build(
    examples: tuple[pathlib.Path, dict[str, Run]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Run, pathlib.Path]:
    """The documentation built once, into a fresh folder, warnings as errors."""
    out = tmp_path_factory.mktemp("docs") / "html"
    env = {**os.environ, "SKETCHLINALG_DOCS_EXAMPLE_OUTPUT": str(examples[0])}
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "docs", str(out)]
    return _run(cmd, BUILD_TIMEOUT, env), out


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_runs_and_reports(examples, name):
    run = examples[1][name]
    assert run.returncode == 0, f"docs/examples/{name}.py failed: {run.log()}"
    assert re.search(EXAMPLES[name][0], run.stdout), run.log()


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_is_shown_with_its_output(name):
    page = (DOCS / "getting_started.md").read_text()
    assert f"{{literalinclude}} examples/{name}.py" in page
    assert f"{{literalinclude}} /_build/examples/{name}.txt" in page


def test_docs_build_without_warnings(build):
    run, out = build
    assert run.returncode == 0, f"the documentation build failed: {run.log()}"
    assert (out / "index.html").is_file()
    assert (out / "api" / "core.html").is_file()


def _inventory(path: pathlib.Path) -> dict[str, str]:
    """``{name: domain:role}`` of a Sphinx ``objects.inv`` (format version 2)."""
    raw = path.read_bytes()
    header_end = 0
    for _ in range(4):  # four comment lines, then the zlib stream
        header_end = raw.index(b"\n", header_end) + 1
    assert raw.startswith(b"# Sphinx inventory version 2"), raw[:40]
    entries = {}
    for line in zlib.decompress(raw[header_end:]).decode().splitlines():
        m = re.match(r"(.+?)\s+(\S+:\S+)\s+(-?\d+)\s+(\S*)\s+(.*)", line.rstrip())
        if m:
            entries[m.group(1)] = m.group(2)
    return entries


def _own_docstring(obj: Any) -> str:
    """The object's own docstring: not inherited, not a NamedTuple's generated one."""
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__") or ""
        fields = getattr(obj, "_fields", None)
        if fields is not None and doc.strip() == f"{obj.__name__}({', '.join(fields)})":
            return ""
        return inspect.cleandoc(doc)
    return inspect.getdoc(obj) or ""


def _public_names() -> list[tuple[str, str, Any]]:
    """``(package, name, object)`` for every name of every package's ``__all__``."""
    out = []
    for pkg in PACKAGES:
        module = importlib.import_module(pkg)
        out += [(pkg, name, getattr(module, name)) for name in module.__all__]
    return out


PUBLIC = [pytest.param(pkg, name, obj, id=f"{pkg}.{name}") for pkg, name, obj in _public_names()]


def _is_constant(obj: Any) -> bool:
    return not (inspect.isclass(obj) or callable(obj))


@pytest.mark.parametrize(("pkg", "name", "obj"), PUBLIC)
def test_public_name_has_a_docstring(pkg, name, obj):
    if _is_constant(obj):
        # A tuple of option values has no docstring of its own: the reference page gives it
        # one (the text of its autodata directive), checked here.
        pages = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
        m = re.search(rf"\.\. autodata:: {re.escape(pkg)}\.{name}\n\n( {{3}}\S.*)", pages)
        assert m, f"{pkg}.{name}: the API reference gives no description of this constant"
        return
    doc = _own_docstring(obj)
    assert len(doc) > 40, f"{pkg}.{name} has no real docstring"
    if inspect.isclass(obj):
        for attr, value in vars(obj).items():
            if attr.startswith("_"):
                continue
            if inspect.isfunction(value) or isinstance(value, (property, staticmethod)):
                fn = value.fget if isinstance(value, property) else value
                assert inspect.getdoc(fn), f"{pkg}.{name}.{attr} has no docstring"


def test_api_reference_documents_every_public_name(build):
    run, out = build
    if run.returncode != 0:
        pytest.fail(f"the documentation build failed: {run.log()}")
    inventory = _inventory(out / "objects.inv")
    missing = [
        f"{pkg}.{name}"
        for pkg, name, obj in _public_names()
        if f"{pkg}.{name}" not in inventory
        or (_is_constant(obj) and inventory[f"{pkg}.{name}"] != "py:data")
    ]
    assert not missing, f"not in the API reference (docs/api/*.md): {missing}"


def test_code_examples_in_the_pages_run(capsys):
    """The Python blocks of the Markdown pages run: ``>>>`` examples as doctests (one per
    page, since the blocks of a page build on each other), plain blocks as scripts."""
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    doctests = scripts = 0
    for page in sorted(DOCS.glob("*.md")):
        blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
        for block in (b for b in blocks if ">>>" not in b):
            scripts += 1
            exec(compile(block, f"docs/{page.name}", "exec"), {})
        text = "\n".join(b for b in blocks if ">>>" in b)
        if text:
            doctests += 1
            test = parser.get_doctest(text, {}, page.name, str(page), 0)
            result = runner.run(test, out=lambda s: print(s, end=""))
            assert result.failed == 0, f"docs/{page.name}: a >>> example failed (see the output)"
    capsys.readouterr()  # what the plain blocks print is not checked
    assert doctests >= 1 and scripts >= 1


def _cpu_commands() -> list[str]:
    """The commands of the "Try it on CPUs" block of docs/multi_device.md."""
    page = (DOCS / "multi_device.md").read_text()
    section = page.split("## Try it on CPUs", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "docs/multi_device.md: no bash block under 'Try it on CPUs'"
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.parametrize("command", _cpu_commands())
def test_multi_device_page_commands_run(command):
    """The documented multi-device commands, as written (JAX on 4 host devices, torchrun
    with 2 gloo processes): every step finite, the loss falls."""
    pytest.importorskip("jax" if "jax_multi_device" in command else "torch.distributed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "adapters")]),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    words = command.split()
    while "=" in words[0]:  # leading VAR=value assignments
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    program, script, *args = words
    if program == "python":
        cmd = [sys.executable, script, *args]
    else:  # torchrun from this environment (or its module form)
        exe = pathlib.Path(sys.executable).with_name("torchrun")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
        cmd += [script, *args]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    if "jax_multi_device" in command:
        assert "4 devices" in run.stdout
        losses = [float(line.split("loss")[1].split()[0])
                  for line in run.stdout.splitlines() if line.startswith("step")]  # fmt: skip
        assert len(losses) == 3 and all(map(math.isfinite, losses)) and losses[-1] < losses[0]
    else:
        assert "ranks: 2" in run.stdout and "final loss" in run.stdout
