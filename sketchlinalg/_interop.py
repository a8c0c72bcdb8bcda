"""Zero-copy exchange of arrays between array libraries through DLPack.

DLPack hands over a pointer, the shape, the strides and the device; the consumer wraps
the producer's memory without copying it, and the producer and consumer streams are
synchronized by the protocol (``__dlpack__(stream=...)``). Nothing here asks for a copy or
changes the device: an array on the host handed to a GPU library raises a ``ValueError``
instead of being copied through the host. (JAX may still copy *on the device* when a
buffer is not aligned the way XLA wants; it never moves it.) ``from_dlpack`` is part of the
array API standard, so this works between any two conforming libraries (CuPy, PyTorch, JAX,
NumPy); :mod:`sketchlinalg_cupy` adds the CuPy defaults.

DLPack device types used in the messages (``dlpack.h``): 1 CPU, 2 CUDA, 3 CUDA pinned
host, 10 ROCm, 11 ROCm host, 13 CUDA managed.
"""

from __future__ import annotations

import sys
from typing import Any

import array_api_compat as _compat

from ._dispatch import backend_name as target_name
from ._operator import LinearOperator

__all__ = ["DLPackOperator", "dlpack_exchange"]

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
            "managed or ROCm) and sketchlinalg never copies through the host: " + _HOW_TO_MOVE
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


def namespace_of(xp: Any, where: str) -> Any:
    """The array-API namespace of a library given as a module or a namespace (``cupy`` ->
    ``array_api_compat.cupy``, ``torch`` -> ``array_api_compat.torch``, ...)."""
    if not callable(getattr(xp, "from_dlpack", None)) or not callable(getattr(xp, "empty", None)):
        raise TypeError(
            f"{where}: xp must be an array namespace or module with from_dlpack (cupy, torch, "
            f"jax.numpy, numpy, or their array_api_compat namespaces), got {xp!r}"
        )
    return _compat.array_namespace(xp.empty((0,)))


def dlpack_exchange(x: Array, xp: Any) -> Array:
    """View an array of one library as an array of another, by DLPack, without a copy.

    The result shares ``x``'s memory and device: writing to one is seen by the other (JAX
    arrays must then not be modified behind JAX's back).

    Parameters
    ----------
    x : array
        Any array with ``__dlpack__`` and ``__dlpack_device__`` (CuPy, PyTorch, JAX,
        NumPy, ...). A PyTorch tensor that requires grad is detached first (no copy).
    xp : namespace or module
        Where the result lives: anything with a ``from_dlpack`` function (``cupy``,
        ``torch``, ``jax.numpy``, ``numpy``, their ``array_api_compat`` namespaces).

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
    >>> from sketchlinalg import dlpack_exchange
    >>> a = np.zeros(3)
    >>> t = dlpack_exchange(a, torch)
    >>> t += 1.0
    >>> a.tolist()
    [1.0, 1.0, 1.0]
    """
    where = "dlpack_exchange"
    if not callable(getattr(xp, "from_dlpack", None)):
        raise TypeError(
            f"{where}: xp must be an array namespace or module with a from_dlpack function "
            f"(cupy, torch, jax.numpy, numpy), got {xp!r}"
        )
    return exchange(x, xp, name="x", where=where)


class DLPackOperator(LinearOperator):
    """An operator of one library seen as an operator of another, by DLPack exchange.

    Every product hands its block to ``base`` by DLPack (no copy), lets ``base`` compute
    (a PyTorch or JAX Jacobian product on the GPU, say) and hands the result back, so the
    core can run on CuPy arrays while the model stays in its framework, and nothing passes
    through the host. Tags, shape and dtype are those of ``base``.

    Parameters
    ----------
    base : sketchlinalg.LinearOperator
        Operator whose products are arrays of another library, e.g. the Jacobian of
        ``sketchlinalg_torch.jacobian_operator`` or ``sketchlinalg_jax.pinn_system`` on a GPU.
    xp : namespace or module
        Library of the new operator's products (``cupy``, ``numpy``, ``torch``...).

    Attributes
    ----------
    base : sketchlinalg.LinearOperator
        The wrapped operator.

    Raises
    ------
    TypeError
        ``base`` is not a LinearOperator, or ``xp`` has no float dtype of ``base``'s name.
    ValueError
        ``base`` lives on a device that ``xp`` cannot wrap without a copy (a host operator
        for CuPy). When ``base.device`` is unknown (``None``), this is checked at the
        first product instead.

    Notes
    -----
    ``device`` is the device of ``xp`` that ``base.device`` maps to (``None`` when
    ``base.device`` is unknown; CuPy then works on its current device).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> import sketchlinalg as sl
    >>> J = sl.aslinearoperator(torch.arange(6.0, dtype=torch.float64).reshape(2, 3))
    >>> Jn = sl.DLPackOperator(J, np)   # the same operator, NumPy in and out
    >>> Jn.matvec(np.ones(3)).tolist()
    [3.0, 12.0]
    """

    def __init__(self, base: LinearOperator, xp: Any) -> None:
        where = "DLPackOperator"
        if not isinstance(base, LinearOperator):
            raise TypeError(
                f"{where}: base must be a sketchlinalg.LinearOperator, got {type(base).__name__}"
            )
        probe = None
        if base.device is not None:
            probe = base.xp.zeros((1, 1), dtype=base.dtype, device=base.device)
            check_importable(probe, target_name(xp), name=f"base (on {base.device})", where=where)
        xp = namespace_of(xp, where)
        dtype = getattr(xp, dtype_name(base.dtype), None)
        if dtype is None:
            raise TypeError(f"{where}: {target_name(xp)} has no dtype {dtype_name(base.dtype)}")
        device = None
        if probe is not None:
            device = _compat.device(exchange(probe, xp, name="base", where=where))
        super().__init__(
            base.shape, dtype, xp=xp, device=device, symmetric=base.is_symmetric, psd=base.is_psd
        )
        self.base = base

    def _to_base(self, X: Array, name: str) -> Array:
        return exchange(X, self.base.xp, name=name, where=f"{type(self).__name__} product")

    def _from_base(self, Y: Array, name: str) -> Array:
        return exchange(Y, self.xp, name=name, where=f"{type(self).__name__} product")

    def _matmat(self, X: Array) -> Array:
        return self._from_base(self.base.matmat(self._to_base(X, "X")), "base.matmat(X)")

    def _rmatmat(self, Y: Array) -> Array:
        return self._from_base(self.base.rmatmat(self._to_base(Y, "Y")), "base.rmatmat(Y)")

    def to_dense(self) -> Array:
        """``base.to_dense()`` by DLPack (no copy when ``base`` is materialized)."""
        return self._from_base(self.base.to_dense(), "base.to_dense()")

    @property
    def is_materialized(self) -> bool:
        """Whether ``base`` holds its entries."""
        return self.base.is_materialized
