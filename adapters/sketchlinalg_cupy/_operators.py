"""sketchlinalg operators over CuPy arrays: from arrays, sparse matrices, cupyx operators,
block-product callables, and from operators of another library through DLPack."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import array_api_compat as _compat

import sketchlinalg as sl
from sketchlinalg._interop import check_importable, dtype_name, namespace_of

from ._device import cupy_namespace

__all__ = ["DLPackOperator", "aslinearoperator", "dlpack_operator", "function_operator"]

Array = Any

# (module that defines the class, class name, namespace of its products)
_SPARSE_MODULES = (("cupyx.scipy.sparse", "cupy"), ("scipy.sparse", "numpy"))
_OPERATOR_MODULES = (("cupyx.scipy.sparse.linalg", "cupy"), ("scipy.sparse.linalg", "numpy"))


def _namespace(name: str, where: str) -> Any:
    if name == "cupy":
        return cupy_namespace(where)
    return importlib.import_module(f"array_api_compat.{name}")


def _sparse_kind(A: Any) -> str | None:
    """``"cupy"`` / ``"numpy"`` for a cupyx / SciPy sparse matrix or array, else ``None``."""
    for module, name in _SPARSE_MODULES:
        mod = sys.modules.get(module)  # a sparse matrix of that kind means it is loaded
        if mod is not None and mod.issparse(A):
            return name
    return None


def _operator_kind(A: Any) -> str | None:
    """``"cupy"`` / ``"numpy"`` for a cupyx / SciPy ``LinearOperator``, else ``None``."""
    for module, name in _OPERATOR_MODULES:
        mod = sys.modules.get(module)
        if mod is not None and isinstance(A, mod.LinearOperator):
            return name
    return None


def _real_floating_dtype(dtype: Any, xp: Any, what: str, where: str) -> Any:
    if dtype is None or dtype_name(dtype) not in ("float16", "float32", "float64"):
        raise TypeError(f"{where}: {what} must have a real floating dtype, got {dtype}")
    return getattr(xp, dtype_name(dtype))


class _SparseOperator(sl.LinearOperator):
    """A cupyx (or SciPy) sparse matrix: ``A @ X`` and ``A.T @ Y`` on dense blocks."""

    def __init__(self, A: Any, xp: Any, *, symmetric: bool, psd: bool, where: str) -> None:
        data = getattr(A, "data", None)
        device = _compat.device(data) if _compat.is_array_api_obj(data) else None
        dtype = _real_floating_dtype(getattr(A, "dtype", None), xp, "A", where)
        super().__init__(tuple(A.shape), dtype, xp=xp, device=device, symmetric=symmetric, psd=psd)
        self.matrix = A

    def _matmat(self, X: Array) -> Array:
        return self.matrix @ X

    def _rmatmat(self, Y: Array) -> Array:
        return self.matrix.T @ Y


class _ScipyLikeOperator(sl.LinearOperator):
    """A ``cupyx.scipy.sparse.linalg.LinearOperator`` (or SciPy's): its block products."""

    def __init__(self, op: Any, xp: Any, *, symmetric: bool, psd: bool, where: str) -> None:
        dtype = _real_floating_dtype(getattr(op, "dtype", None), xp, "the LinearOperator", where)
        super().__init__(tuple(op.shape), dtype, xp=xp, symmetric=symmetric, psd=psd)
        self.operator = op

    def _matmat(self, X: Array) -> Array:
        return self.operator.matmat(X)

    def _rmatmat(self, Y: Array) -> Array:
        if self.is_symmetric:
            return self.operator.matmat(Y)
        return self.operator.rmatmat(Y)


def aslinearoperator(A: Any, *, symmetric: bool = False, psd: bool = False) -> sl.LinearOperator:
    """A :class:`sketchlinalg.LinearOperator` from a CuPy array, sparse matrix or operator.

    Takes a 2-D ``cupy.ndarray`` (any array-API array), a ``cupyx.scipy.sparse`` matrix
    (``A @ X``, ``A.T @ Y``), a ``cupyx.scipy.sparse.linalg.LinearOperator`` (its
    ``matmat`` / ``rmatmat``; without ``rmatvec`` it needs ``symmetric`` or ``psd``) or a
    :class:`sketchlinalg.LinearOperator`; SciPy's sparse matrices and operators work the
    same way on the host (which tests these paths without a GPU). The tags are asserted by
    the caller, not checked. ``TypeError`` for anything else or a non-floating dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from sketchlinalg_cupy import aslinearoperator
    >>> op = aslinearoperator(sp.diags([1.0, 2.0, 3.0]).tocsr(), psd=True)
    >>> op.matvec(np.ones(3)).tolist()
    [1.0, 2.0, 3.0]
    """
    where = "aslinearoperator"
    if isinstance(A, sl.LinearOperator) or _compat.is_array_api_obj(A):
        return sl.aslinearoperator(A, symmetric=symmetric, psd=psd)
    kind = _sparse_kind(A)
    if kind is not None:
        if len(A.shape) != 2:
            raise ValueError(f"{where}: A must be 2-D, got shape {tuple(A.shape)}")
        xp = _namespace(kind, where)
        return _SparseOperator(A, xp, symmetric=symmetric, psd=psd, where=where)
    kind = _operator_kind(A)
    if kind is not None:
        xp = _namespace(kind, where)
        return _ScipyLikeOperator(A, xp, symmetric=symmetric, psd=psd, where=where)
    raise TypeError(
        f"{where}: A must be a 2-D CuPy array, a cupyx.scipy.sparse matrix, a "
        "cupyx.scipy.sparse.linalg.LinearOperator or a sketchlinalg.LinearOperator, got "
        f"{type(A).__module__}.{type(A).__name__}"
    )


def function_operator(
    matmat: Callable[[Array], Array],
    rmatmat: Callable[[Array], Array] | None = None,
    *,
    shape: tuple[int, int],
    dtype: Any = None,
    device: Any = None,
    symmetric: bool = False,
    psd: bool = False,
    xp: Any = None,
) -> sl.FunctionOperator:
    """:class:`sketchlinalg.FunctionOperator` on CuPy arrays: block products ``matmat``
    (``X (n, k) -> A X``) and ``rmatmat`` (``Y (m, k) -> A^T Y``; omit for a symmetric
    operator) of ``shape (m, n)``; ``dtype`` default ``float64``; ``device`` checked on every
    block when given; ``xp`` default ``array_api_compat.cupy``.

    Examples
    --------
    >>> import array_api_compat.numpy as xnp
    >>> from sketchlinalg_cupy import function_operator
    >>> op = function_operator(lambda X: 2.0 * X, shape=(3, 3), psd=True, xp=xnp)
    >>> op.matvec(xnp.ones(3)).tolist()
    [2.0, 2.0, 2.0]
    """
    where = "function_operator"
    xp = cupy_namespace(where) if xp is None else namespace_of(xp, where)
    dtype = xp.float64 if dtype is None else _real_floating_dtype(dtype, xp, "dtype", where)
    return sl.FunctionOperator(
        matmat,
        rmatmat,
        shape=shape,
        dtype=dtype,
        xp=xp,
        device=device,
        symmetric=symmetric,
        psd=psd,
    )


DLPackOperator = sl.DLPackOperator


def dlpack_operator(J: sl.LinearOperator, xp: Any = None) -> sl.DLPackOperator:
    """Run the core on CuPy with an operator whose products are PyTorch or JAX GPU arrays:
    :class:`sketchlinalg.DLPackOperator` with CuPy as the default ``xp``.

    The sketch, the factorizations and the solve then run on CuPy arrays, each block
    product crosses to ``J``'s library and back by DLPack without a copy, and the direction
    comes out as a CuPy array (hand it back with :func:`to_torch` / :func:`to_jax`).

    Examples
    --------
    On a GPU (not run as a doctest)::

        r, J = sketchlinalg_torch.jacobian_operator(residual_fn, params)   # torch CUDA
        d, info = sl.natural_gradient_direction(
            dlpack_operator(J), from_torch(r), damping=1e-8, method="nystrom", rank=200)
    """
    where = "DLPackOperator"
    if xp is None:
        if not isinstance(J, sl.LinearOperator):
            raise TypeError(
                f"{where}: base must be a sketchlinalg.LinearOperator, got {type(J).__name__}"
            )
        if J.device is not None:  # say "host memory" before "CuPy is not installed"
            probe = J.xp.zeros((1, 1), dtype=J.dtype, device=J.device)
            check_importable(probe, "cupy", name=f"base (on {J.device})", where=where)
        xp = cupy_namespace(where)
    return sl.DLPackOperator(J, xp)
