"""Whether CuPy can reach a CUDA device, and the lazy imports of CuPy and its namespace.

Nothing here imports CuPy at module import time: ``sketchlinalg_cupy`` imports (and its
namespace-generic parts run) on machines without CuPy or without a GPU.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["cuda_status"]

INSTALL_HINT = "pip install 'sketchlinalg[cupy]' (cupy-cuda12x)"


def cuda_status() -> tuple[bool, str]:
    """Whether CuPy is installed and sees at least one CUDA device, and why not.

    Use it to skip GPU work with a reason instead of failing on import or on the first
    allocation.

    Returns
    -------
    available : bool
        ``True`` when ``cupy`` imports and ``cupy.cuda.runtime.getDeviceCount() > 0``.
    reason : str
        What was found: the CuPy version, the device count and the name of device 0; or
        why CuPy cannot be used (not installed, no driver, no device).

    Examples
    --------
    >>> from sketchlinalg_cupy import cuda_status
    >>> ok, reason = cuda_status()
    >>> isinstance(ok, bool) and isinstance(reason, str)
    True
    """
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        return False, f"cupy is not installed ({exc}); {INSTALL_HINT}"
    version = getattr(cupy, "__version__", "?")
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDARuntimeError without driver, ImportError without libs...
        return False, f"CuPy {version} cannot reach a CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, f"CuPy {version} found no CUDA device (getDeviceCount() == {count})"
    try:
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception as exc:
        return False, f"CuPy {version} cannot query CUDA device 0 ({type(exc).__name__}: {exc})"
    return True, f"CuPy {version}, {count} CUDA device(s), device 0: {name}"


def import_cupy(where: str) -> Any:
    """The ``cupy`` module, or an ``ImportError`` that says who needed it and how to install."""
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:
        raise ImportError(f"{where} needs CuPy, which is not installed: {INSTALL_HINT}") from exc


def cupy_namespace(where: str) -> Any:
    """The array-API namespace of CuPy arrays (``array_api_compat.cupy``)."""
    import_cupy(where)
    return importlib.import_module("array_api_compat.cupy")
