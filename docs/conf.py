"""Sphinx configuration of the sketchlinalg documentation.

Build (from the repository root, with the ``[test]`` or ``[docs]`` extra installed)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The pages are Markdown (MyST). The API reference is autodoc + napoleon (NumPy style) on the
installed packages ``sketchlinalg``, ``sketchlinalg_jax``, ``sketchlinalg_torch`` and
``sketchlinalg_cupy``. The getting-started examples under ``docs/examples/`` run during the
build (each in a subprocess, with a timeout) and their printed output is shown beside them,
so a broken example fails the build.
"""

from __future__ import annotations

import inspect
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Any

from sphinx.errors import ExtensionError
from sphinx.util import logging

import sketchlinalg

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent

# -- project -------------------------------------------------------------------------------
project = "sketchlinalg"
author = "sketchlinalg developers"
copyright = "sketchlinalg developers"
release = version = sketchlinalg.__version__

# -- general -------------------------------------------------------------------------------
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples"]
# The benchmark results are included from ../benchmarks/results (see benchmarks.md), so new
# numbers flow into the pages without copies.

# -- MyST (Markdown) -----------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc + napoleon (NumPy-style docstrings) --------------------------------------------
autodoc_member_order = "bysource"
# The NumPy-style "Parameters" sections give the types; the annotations (``Any`` for arrays
# of every library) would only clutter the signatures.
autodoc_typehints = "none"
autodoc_preserve_defaults = True
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = False

# -- HTML ----------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"sketchlinalg {release}"

# -- the getting-started examples ------------------------------------------------------------
#: The scripts of docs/examples/ that the pages include, and the limit of each run [s].
EXAMPLES = {
    "getting_started_jax": 300,
    "getting_started_torch": 300,
    "getting_started_equinox": 300,
    "getting_started_flax_linen": 300,
    "getting_started_flax_nnx": 300,
    "least_squares": 120,
}
#: Where their output goes; the pages include it from here (under the source tree, which
#: ``literalinclude`` requires; docs/_build is ignored by git).
EXAMPLE_OUTPUT = DOCS / "_build" / "examples"
#: Set this variable to a folder holding ``<name>.txt`` for every example to show that
#: output instead of running the examples again (tests/test_docs.py runs them first).
OUTPUT_ENV = "SKETCHLINALG_DOCS_EXAMPLE_OUTPUT"
#: The examples are tiny: one BLAS/OpenMP thread each is as fast on an idle machine and far
#: steadier on a busy one (threaded LAPACK calls slow down badly when cores are contended).
#: Values set by the caller are kept.
EXAMPLE_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

logger = logging.getLogger(__name__)


def run_example(name: str, timeout: float) -> tuple[str, float]:
    """Run ``docs/examples/<name>.py`` in a fresh interpreter; return its output and time.

    Raises
    ------
    ExtensionError
        When the script fails, prints nothing or runs past ``timeout`` seconds.
    """
    script = DOCS / "examples" / f"{name}.py"
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**EXAMPLE_THREADS, **os.environ},
        )
    except subprocess.TimeoutExpired as exc:
        raise ExtensionError(f"docs example {script} ran past {timeout} s") from exc
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ExtensionError(
            f"docs example {script} failed (exit code {proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout, elapsed


def write_example_outputs(app: Any) -> None:
    """Give every example's output to the pages (``builder-inited``)."""
    EXAMPLE_OUTPUT.mkdir(parents=True, exist_ok=True)
    given = os.environ.get(OUTPUT_ENV)
    for name, timeout in EXAMPLES.items():
        target = EXAMPLE_OUTPUT / f"{name}.txt"
        if given:
            source = pathlib.Path(given) / f"{name}.txt"
            if not source.is_file():
                raise ExtensionError(f"{OUTPUT_ENV}={given} holds no output of {name}")
            if source.resolve() != target.resolve():
                shutil.copyfile(source, target)
            continue
        logger.info(f"running docs/examples/{name}.py ...")
        out, elapsed = run_example(name, timeout)
        target.write_text(out)
        logger.info(f"docs/examples/{name}.py ran in {elapsed:.1f} s")


def drop_type_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Drop the docstring that a constant inherits from its type (``autodoc-process-docstring``).

    ``autodata`` of a tuple or dict shows ``tuple.__doc__`` / ``dict.__doc__`` (the latter is
    not valid reStructuredText); the text of the directive in docs/api/ describes the
    constant instead.
    """
    doc = type(obj).__doc__
    if what == "data" and doc and "\n".join(lines).strip() == inspect.cleandoc(doc).strip():
        lines.clear()


def setup(app: Any) -> dict[str, Any]:
    """Register the example runner and the docstring filter of constants."""
    app.connect("builder-inited", write_example_outputs)
    app.connect("autodoc-process-docstring", drop_type_docstring, priority=100)  # before napoleon
    return {"parallel_read_safe": True}
