"""Zero-copy exchange of arrays between CuPy, PyTorch and JAX through DLPack.

DLPack hands over a pointer, the shape, the strides and the device; the consumer wraps
the producer's memory without copying it, and the producer and consumer streams are
synchronized by the protocol (``__dlpack__(stream=...)``). The functions here never ask
for a copy and never change the device: an array on the host handed to CuPy raises a
``ValueError`` instead of being copied through the host. (JAX may still copy *on the
device* when a buffer is not aligned the way XLA wants; it never moves it.)

DLPack device types used in the messages (``dlpack.h``): 1 CPU, 2 CUDA, 3 CUDA pinned
host, 10 ROCm, 11 ROCm host, 13 CUDA managed.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import array_api_compat as _compat

from sketchlinalg._dispatch import backend_name as target_name  # one namer for core and adapter

from ._device import cupy_namespace, import_cupy

__all__ = ["dlpack_exchange", "from_jax", "from_torch", "to_jax", "to_torch"]

Array = Any

_DEVICE_TYPES = {
    1: "CPU (host)",
    2: "CUDA",
    3: "CUDA pinned host",
    4: "OpenCL",
    7: "Vulkan",
    8: "Metal",
    10: "ROCm",
    11: "ROCm host",
    13: "CUDA managed",
    14: "oneAPI",
}
# Consumers that wrap only these device types (anything else would need a copy, or fails).
_IMPORTABLE = {
    "cupy": frozenset({2, 10, 13}),
    "numpy": frozenset({1, 3, 11, 13}),
}
_HOW_TO_MOVE = (
    "move it to the GPU first (torch: tensor.cuda(); JAX: jax.device_put(x, "
    "jax.devices('gpu')[0]); NumPy: cupy.asarray(x), an explicit copy)"
)


def describe_device(device_type: int, device_id: int) -> str:
    """``"CUDA:0"``-style text for a DLPack device."""
    name = _DEVICE_TYPES.get(device_type, f"DLPack device type {device_type}")
    return f"{name}:{device_id}" if device_type not in (1, 3, 11) else name


def dtype_name(dtype: Any) -> str:
    """``"float64"`` for ``torch.float64``, ``numpy.dtype('float64')``, ``jnp.float64``..."""
    name = getattr(dtype, "__name__", None) if isinstance(dtype, type) else None
    return name if name is not None else str(dtype).rsplit(".", 1)[-1]


def dlpack_device(x: Any, name: str, where: str) -> tuple[int, int]:
    """``x.__dlpack_device__()``, or a ``TypeError`` naming the argument."""
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.core.Tracer):
        raise TypeError(
            f"{where}: {name} is a traced JAX value (inside jax.jit, vmap or grad); DLPack "
            "exchange needs a concrete array, so call it outside the transformation"
        )
    get = getattr(x, "__dlpack_device__", None)
    if get is None or not hasattr(x, "__dlpack__"):
        raise TypeError(
            f"{where}: {name} must be an array that supports DLPack (__dlpack__ and "
            f"__dlpack_device__), got {type(x).__name__}"
        )
    device_type, device_id = get()
    return int(device_type), int(device_id)


def check_importable(x: Array, target: str, *, name: str, where: str) -> None:
    """Raise ``ValueError`` when ``target`` cannot wrap ``x`` where it lives (no copy)."""
    device_type, device_id = dlpack_device(x, name, where)
    allowed = _IMPORTABLE.get(target)
    if allowed is None or device_type in allowed:
        return
    here = describe_device(device_type, device_id)
    if target == "cupy":
        raise ValueError(
            f"{where}: {name} lives on {here}, but CuPy wraps only GPU memory (CUDA, CUDA "
            "managed or ROCm) and sketchlinalg_cupy never copies through the host: " + _HOW_TO_MOVE
        )
    raise ValueError(
        f"{where}: {name} lives on {here}, but {target} wraps only host memory; a DLPack "
        "exchange never moves data between devices: copy it explicitly (e.g. "
        "cupy.asnumpy(x), tensor.cpu())"
    )


def exchange(x: Array, xp: Any, *, name: str, where: str) -> Array:
    """Wrap ``x`` as an array of ``xp`` without a copy and without changing its device."""
    target = target_name(xp)
    check_importable(x, target, name=name, where=where)
    if _compat.is_torch_array(x) and getattr(x, "requires_grad", False):
        x = x.detach()  # shares the storage; DLPack cannot carry the autograd graph
    try:
        out = xp.from_dlpack(x)
    except BufferError as exc:  # e.g. a read-only NumPy array (a view of a JAX array) to JAX
        raise ValueError(
            f"{where}: {target} cannot wrap {name} ({type(x).__name__}) without a copy: {exc}"
        ) from exc
    before, after = dtype_name(x.dtype), dtype_name(out.dtype)
    if before != after:
        hint = " (enable jax_enable_x64 for float64)" if target == "jax" else ""
        raise TypeError(
            f"{where}: {target} turned {name} of dtype {before} into {after}{hint}; the "
            "exchange must keep the dtype"
        )
    return out


def dlpack_exchange(x: Array, xp: Any = None) -> Array:
    """View an array of one library as an array of another, by DLPack, without a copy.

    The namespace-generic form of :func:`from_torch`, :func:`to_torch`, :func:`from_jax`
    and :func:`to_jax`: the result shares ``x``'s memory and device. Writing to one is
    seen by the other (JAX arrays must then not be modified behind JAX's back).

    Parameters
    ----------
    x : array
        Any array with ``__dlpack__`` and ``__dlpack_device__`` (CuPy, PyTorch, JAX,
        NumPy, ...). A PyTorch tensor that requires grad is detached first (no copy).
    xp : namespace or module, optional
        Where the result lives: anything with a ``from_dlpack`` function (``cupy``,
        ``torch``, ``jax.numpy``, ``numpy``, their ``array_api_compat`` namespaces).
        Default: CuPy.

    Returns
    -------
    array of ``xp``
        Same shape, dtype, memory and device as ``x``.

    Raises
    ------
    TypeError
        ``x`` does not support DLPack, is a traced JAX value, or the consumer changed
        its dtype (JAX without ``jax_enable_x64`` turns float64 into float32).
    ValueError
        The consumer cannot wrap memory on ``x``'s device: a host array for CuPy, a GPU
        array for NumPy. Nothing is ever copied between the host and a device.

    Examples
    --------
    On the host, NumPy and PyTorch share memory the same way CuPy and a CUDA tensor do:

    >>> import numpy as np
    >>> import torch
    >>> from sketchlinalg_cupy import dlpack_exchange
    >>> a = np.zeros(3)
    >>> t = dlpack_exchange(a, torch)
    >>> t += 1.0
    >>> a.tolist()
    [1.0, 1.0, 1.0]
    """
    where = "dlpack_exchange"
    if xp is None:
        # Check before importing CuPy, so the message is about the array, not the install.
        check_importable(x, "cupy", name="x", where=where)
        xp = cupy_namespace(where)
    elif not callable(getattr(xp, "from_dlpack", None)):
        raise TypeError(
            f"{where}: xp must be an array namespace or module with a from_dlpack function "
            f"(cupy, torch, jax.numpy, numpy), got {xp!r}"
        )
    return exchange(x, xp, name="x", where=where)


def from_torch(tensor: Any) -> Array:
    """A CuPy array sharing the memory of a CUDA ``torch.Tensor`` (zero-copy, by DLPack).

    Parameters
    ----------
    tensor : torch.Tensor
        On a CUDA device; real or integer dtype. A tensor that requires grad is detached.

    Returns
    -------
    cupy.ndarray
        Same shape, strides, dtype, memory and device.

    Raises
    ------
    TypeError
        ``tensor`` is not a ``torch.Tensor``.
    ValueError
        ``tensor`` is on the CPU: it is never copied to the device implicitly.

    Examples
    --------
    On a CUDA machine (not run as a doctest)::

        t = torch.randn(1000, 50, device="cuda", dtype=torch.float64)
        a = from_torch(t)                      # cupy.ndarray, same memory
        assert a.data.ptr == t.data_ptr()
    """
    where = "from_torch"
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{where}: tensor must be a torch.Tensor, got {type(tensor).__name__}")
    check_importable(tensor, "cupy", name="tensor", where=where)
    return exchange(tensor, cupy_namespace(where), name="tensor", where=where)


def to_torch(array: Any) -> Any:
    """A CUDA ``torch.Tensor`` sharing the memory of a CuPy array (zero-copy, by DLPack).

    Parameters
    ----------
    array : cupy.ndarray

    Returns
    -------
    torch.Tensor
        On the same CUDA device, same shape, strides and dtype; ``requires_grad=False``.

    Raises
    ------
    TypeError
        ``array`` is not a CuPy array (a NumPy array has ``torch.from_numpy``).
    ImportError
        PyTorch is not installed.

    Examples
    --------
    On a CUDA machine (not run as a doctest)::

        d = to_torch(direction)                # the CuPy result back into PyTorch
        param.data.sub_(lr * d.view_as(param))
    """
    where = "to_torch"
    _check_cupy_array(array, "array", where)
    try:
        torch = importlib.import_module("torch")
    except ImportError as exc:
        raise ImportError(f"{where} needs PyTorch (pip install torch)") from exc
    return exchange(array, torch, name="array", where=where)


def from_jax(array: Any) -> Array:
    """A CuPy array sharing the memory of a JAX array on a GPU (zero-copy, by DLPack).

    Parameters
    ----------
    array : jax.Array
        Concrete (not traced), on one CUDA device.

    Returns
    -------
    cupy.ndarray
        The same memory: do not write to it while JAX may still use ``array``.

    Raises
    ------
    TypeError
        ``array`` is not a JAX array, or is traced (inside ``jax.jit``).
    ValueError
        ``array`` is on the CPU: it is never copied to the device implicitly.

    Examples
    --------
    On a CUDA machine (not run as a doctest)::

        r = from_jax(system.residual)          # jax.Array on the GPU -> cupy.ndarray
    """
    where = "from_jax"
    if not _compat.is_jax_array(array):
        raise TypeError(f"{where}: array must be a jax.Array, got {type(array).__name__}")
    check_importable(array, "cupy", name="array", where=where)
    return exchange(array, cupy_namespace(where), name="array", where=where)


def to_jax(array: Any) -> Any:
    """A JAX array on the same GPU, wrapping the memory of a CuPy array (by DLPack).

    JAX wraps the buffer without a copy when it is aligned and row-major, and otherwise
    copies it on the device; it never moves it to the host. JAX assumes its arrays are
    immutable: do not modify ``array`` afterwards.

    Parameters
    ----------
    array : cupy.ndarray
        float64 needs ``jax.config.update("jax_enable_x64", True)``.

    Returns
    -------
    jax.Array

    Raises
    ------
    TypeError
        ``array`` is not a CuPy array, or JAX would change its dtype (float64 without
        ``jax_enable_x64``).
    ImportError
        JAX is not installed.

    Examples
    --------
    On a CUDA machine (not run as a doctest)::

        d = to_jax(direction)                  # flat direction back to JAX
        params = unravel(flat - eta * d)
    """
    where = "to_jax"
    _check_cupy_array(array, "array", where)
    try:
        jnp = importlib.import_module("jax.numpy")
    except ImportError as exc:
        raise ImportError(f"{where} needs JAX (pip install 'sketchlinalg[jax]')") from exc
    return exchange(array, jnp, name="array", where=where)


def _check_cupy_array(array: Any, name: str, where: str) -> None:
    if not _compat.is_cupy_array(array):
        raise TypeError(
            f"{where}: {name} must be a cupy.ndarray, got {type(array).__name__} (host arrays "
            "are not exchanged: copy them explicitly, e.g. torch.from_numpy / jnp.asarray)"
        )
    import_cupy(where)
