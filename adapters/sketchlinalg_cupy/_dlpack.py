"""Zero-copy exchange between CuPy and PyTorch / JAX on the GPU (the core's DLPack exchange,
:func:`sketchlinalg.dlpack_exchange`, with CuPy as the default side).

Nothing is ever copied through the host: a host array handed to CuPy raises ``ValueError``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import array_api_compat as _compat

from sketchlinalg._interop import check_importable, exchange
from sketchlinalg._interop import dlpack_exchange as _core_exchange

from ._device import cupy_namespace, import_cupy

__all__ = ["dlpack_exchange", "from_jax", "from_torch", "to_jax", "to_torch"]

Array = Any


def dlpack_exchange(x: Array, xp: Any = None) -> Array:
    """:func:`sketchlinalg.dlpack_exchange` with CuPy as the default target.

    Parameters
    ----------
    x : array
        Any DLPack array (CuPy, PyTorch, JAX, NumPy, ...); the result shares its memory.
    xp : namespace or module, optional
        Where the result lives (default CuPy).

    Returns
    -------
    array of ``xp``

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from sketchlinalg_cupy import dlpack_exchange
    >>> a = np.zeros(3)
    >>> t = dlpack_exchange(a, torch)
    >>> t += 1.0
    >>> a.tolist()
    [1.0, 1.0, 1.0]
    """
    if xp is None:
        # Check before importing CuPy, so the message is about the array, not the install.
        check_importable(x, "cupy", name="x", where="dlpack_exchange")
        xp = cupy_namespace("dlpack_exchange")
    return _core_exchange(x, xp)


def from_torch(tensor: Any) -> Array:
    """A CuPy array sharing the memory of a CUDA ``torch.Tensor`` (a tensor that requires
    grad is detached; a CPU tensor raises ``ValueError``: it is never copied implicitly).

    Examples
    --------
    On a CUDA machine (not run as a doctest)::

        a = from_torch(torch.randn(1000, 50, device="cuda", dtype=torch.float64))
    """
    where = "from_torch"
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{where}: tensor must be a torch.Tensor, got {type(tensor).__name__}")
    check_importable(tensor, "cupy", name="tensor", where=where)
    return exchange(tensor, cupy_namespace(where), name="tensor", where=where)


def to_torch(array: Any) -> Any:
    """A CUDA ``torch.Tensor`` sharing the memory of a CuPy array (``requires_grad=False``).

    Examples
    --------
    On a CUDA machine (not run as a doctest)::

        param.data.sub_(lr * to_torch(direction).view_as(param))
    """
    arr = _cupy_array(array, "to_torch")
    return exchange(arr, _module("torch", "to_torch"), name="array", where="to_torch")


def from_jax(array: Any) -> Array:
    """A CuPy array sharing the memory of a concrete (not traced) JAX array on a GPU; do not
    write to it while JAX may still use ``array``. A CPU array raises ``ValueError``."""
    where = "from_jax"
    if not _compat.is_jax_array(array):
        raise TypeError(f"{where}: array must be a jax.Array, got {type(array).__name__}")
    check_importable(array, "cupy", name="array", where=where)
    return exchange(array, cupy_namespace(where), name="array", where=where)


def to_jax(array: Any) -> Any:
    """A JAX array on the same GPU wrapping a CuPy array (JAX copies on the device when the
    buffer is not aligned its way; never to the host). float64 needs ``jax_enable_x64``; do
    not modify ``array`` afterwards."""
    arr = _cupy_array(array, "to_jax")
    return exchange(arr, _module("jax.numpy", "to_jax"), name="array", where="to_jax")


def _module(name: str, where: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{where} needs {name.split('.')[0]}, which is not installed") from exc


def _cupy_array(array: Any, where: str) -> Any:
    if not _compat.is_cupy_array(array):
        raise TypeError(
            f"{where}: array must be a cupy.ndarray, got {type(array).__name__} (host arrays "
            "are not exchanged: copy them explicitly, e.g. torch.from_numpy / jnp.asarray)"
        )
    import_cupy(where)
    return array
