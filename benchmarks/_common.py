"""Helpers shared by the benchmark commands: machine description, timing, output files."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "Progress",
    "format_float",
    "load_average",
    "machine_info",
    "markdown_table",
    "median",
    "peak_rss_mib",
    "time_call",
    "write_json",
    "write_text",
]

T = TypeVar("T")

_ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "XLA_FLAGS",
    "JAX_ENABLE_X64",
    "GLIBC_TUNABLES",
)
_PACKAGES = (
    "numpy",
    "scipy",
    "scikit-learn",
    "jax",
    "jaxlib",
    "optax",
    "torch",
    "array-api-compat",
    "sketchlinalg",
)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far [MiB] (``getrusage``; Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_call(fn: Callable[[], T]) -> tuple[float, T]:
    """Run ``fn()`` once and time it with :func:`time.perf_counter`.

    Parameters
    ----------
    fn : callable
        Zero-argument function.

    Returns
    -------
    (seconds, result) : tuple
        Wall time in seconds and whatever ``fn`` returned.
    """
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def relative_error(a: Any, ref: Any) -> float:
    """``||a - ref|| / ||ref||`` of two NumPy arrays (a zero ``ref`` divides by 1e-300)."""
    import numpy as np

    return float(np.linalg.norm(a - ref)) / max(float(np.linalg.norm(ref)), 1e-300)


def median(values: Iterable[float]) -> float:
    """Median of the finite values (``nan`` if there are none).

    Parameters
    ----------
    values : iterable of float

    Returns
    -------
    float
    """
    finite = [float(v) for v in values if math.isfinite(float(v))]
    return statistics.median(finite) if finite else math.nan


def format_float(x: float | None, digits: int = 3) -> str:
    """Compact text for a number in a markdown table (``-`` for missing/NaN).

    Parameters
    ----------
    x : float or None
    digits : int
        Significant digits.

    Returns
    -------
    str
    """
    if x is None or not math.isfinite(x):
        return "-"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table.

    Parameters
    ----------
    headers : sequence of str
    rows : sequence of sequences of str
        Each row has ``len(headers)`` cells.

    Returns
    -------
    str
    """
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _git_info(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
    }


def _blas_info() -> Any:
    try:
        import threadpoolctl

        return threadpoolctl.threadpool_info()
    except Exception:  # informational only
        pass
    try:
        import numpy as np

        return np.show_config(mode="dicts")
    except Exception:
        return None


def _gpu_models() -> list[str]:
    """The NVIDIA GPUs of the machine (``nvidia-smi``: name, memory, driver); ``[]`` without
    one. Asked of the driver, not of a framework, so that no framework is imported here."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def machine_info(repo_root: Path | None = None) -> dict[str, Any]:
    """Describe the machine and software the benchmark runs on.

    Parameters
    ----------
    repo_root : Path, optional
        Repository whose git commit is recorded.

    Returns
    -------
    dict
        Platform, processor, CPU counts, GPU models (``nvidia-smi``), Python and package
        versions, BLAS/thread-pool information, relevant environment variables
        (``OPENBLAS_CORETYPE`` included) and the UTC date.
    """
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity_count": affinity,
        "gpus": _gpu_models(),
        "python": sys.version,
        "python_executable": sys.executable,
        "versions": versions,
        "blas": _blas_info(),
        "env": {name: os.environ.get(name) for name in _ENV_VARS},
        "load_average_1_5_15min": load_average(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if repo_root is not None:
        info["git"] = _git_info(repo_root)
    return info


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where unavailable).

    A load above the core count means other processes competed for the CPUs while the
    benchmark ran, which inflates and scatters the timings.

    Returns
    -------
    list of float or None
    """
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__} to JSON")


def _clean(obj: Any) -> Any:
    # JSON has no NaN/Inf: write them as null.
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (NaN and Inf become ``null``).

    Parameters
    ----------
    path : Path
    obj : JSON-like object (numpy scalars and arrays allowed)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(_clean(obj), indent=1, default=_json_default, allow_nan=False) + "\n",
        encoding="utf-8",
    )


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, creating the parent folder.

    Parameters
    ----------
    path : Path
    text : str
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


class Progress:
    """One line per case on stderr, with the time since the start.

    Parameters
    ----------
    name : str
        Prefix of every line.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        """Print ``message`` to stderr."""
        elapsed = time.perf_counter() - self.start
        print(f"[{self.name} {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)
