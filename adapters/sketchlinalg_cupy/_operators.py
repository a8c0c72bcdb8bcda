"""sketchlinalg operators over CuPy arrays: from arrays, sparse matrices, cupyx operators,
block-product callables, and from operators of another library through DLPack."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import array_api_compat as _compat

import sketchlinalg as sl

from ._device import cupy_namespace
from ._dlpack import check_importable, dtype_name, exchange, target_name

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

    Accepted (each becomes an operator whose products are arrays of the same library):

    * a 2-D ``cupy.ndarray`` (any array-API array: :func:`sketchlinalg.aslinearoperator`);
    * a ``cupyx.scipy.sparse`` matrix (``A @ X`` and ``A.T @ Y`` on dense blocks);
    * a ``cupyx.scipy.sparse.linalg.LinearOperator`` (its ``matmat`` / ``rmatmat``);
    * a :class:`sketchlinalg.LinearOperator` (returned, with the tags added).

    SciPy sparse matrices and SciPy ``LinearOperator``\\ s are accepted the same way (their
    products are NumPy arrays), which keeps these code paths testable without a GPU.

    Parameters
    ----------
    A : array, sparse matrix or LinearOperator
        Real floating dtype, shape ``(m, n)``.
    symmetric, psd : bool
        Tags, asserted by the caller (not checked numerically). An operator without
        ``rmatmat`` needs ``symmetric=True`` (or ``psd=True``) to be transposed.

    Returns
    -------
    sketchlinalg.LinearOperator

    Raises
    ------
    TypeError
        ``A`` is none of the above, or its dtype is not real floating.

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from sketchlinalg_cupy import aslinearoperator
    >>> op = aslinearoperator(sp.diags([1.0, 2.0, 3.0]).tocsr(), psd=True)
    >>> op.matvec(np.ones(3)).tolist()
    [1.0, 2.0, 3.0]

    With CuPy the same call takes ``cupyx.scipy.sparse.csr_matrix`` or a
    ``cupyx.scipy.sparse.linalg.LinearOperator``, and the core then runs on the GPU.
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
    """An operator from block-product callables on CuPy arrays.

    :class:`sketchlinalg.FunctionOperator` with the CuPy namespace filled in.

    Parameters
    ----------
    matmat : callable
        ``X (n, k) -> A X (m, k)`` on CuPy arrays.
    rmatmat : callable, optional
        ``Y (m, k) -> A^T Y (n, k)``; omit it for a symmetric operator.
    shape : tuple of int
        ``(m, n)``.
    dtype : dtype, optional
        ``float32`` or ``float64`` (default ``float64``).
    device : cupy.cuda.Device, optional
        When given, every block is checked to be on it.
    symmetric, psd : bool
        Tags (``psd`` implies ``symmetric``).
    xp : namespace, optional
        Array namespace of the products; default ``array_api_compat.cupy``.

    Returns
    -------
    sketchlinalg.FunctionOperator

    Examples
    --------
    >>> import array_api_compat.numpy as xnp
    >>> from sketchlinalg_cupy import function_operator
    >>> op = function_operator(lambda X: 2.0 * X, shape=(3, 3), psd=True, xp=xnp)
    >>> op.matvec(xnp.ones(3)).tolist()
    [2.0, 2.0, 2.0]
    """
    where = "function_operator"
    xp = cupy_namespace(where) if xp is None else _array_namespace(xp, where)
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


def _array_namespace(xp: Any, where: str) -> Any:
    """The array-API namespace for a module (``cupy`` -> ``array_api_compat.cupy``...)."""
    if not callable(getattr(xp, "from_dlpack", None)):
        raise TypeError(
            f"{where}: xp must be an array namespace with from_dlpack (array_api_compat.cupy, "
            f"array_api_compat.torch, jax.numpy, array_api_compat.numpy, ...), got {xp!r}"
        )
    name = target_name(xp)
    if name == "cupy":
        return cupy_namespace(where)
    if name in ("numpy", "torch"):
        return importlib.import_module(f"array_api_compat.{name}")
    return xp


class DLPackOperator(sl.LinearOperator):
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
    xp : namespace, optional
        Namespace of the new operator's products; default ``array_api_compat.cupy``.

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
    """

    def __init__(self, base: sl.LinearOperator, xp: Any = None) -> None:
        where = "DLPackOperator"
        if not isinstance(base, sl.LinearOperator):
            raise TypeError(
                f"{where}: base must be a sketchlinalg.LinearOperator, got {type(base).__name__}"
            )
        target = "cupy" if xp is None else target_name(xp)
        probe = None
        if base.device is not None:
            probe = base.xp.zeros((1, 1), dtype=base.dtype, device=base.device)
            check_importable(probe, target, name=f"base (on {base.device})", where=where)
        xp = cupy_namespace(where) if xp is None else _array_namespace(xp, where)
        dtype = getattr(xp, dtype_name(base.dtype), None)
        if dtype is None:
            raise TypeError(f"{where}: {target} has no dtype {dtype_name(base.dtype)}")
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


def dlpack_operator(J: sl.LinearOperator, xp: Any = None) -> DLPackOperator:
    """Run the core on CuPy with an operator whose products are PyTorch or JAX GPU arrays.

    Wraps ``J`` in a :class:`DLPackOperator`: the sketch, the factorizations and the solve
    of :func:`sketchlinalg.natural_gradient_direction` then run on CuPy arrays, each block
    product crosses to ``J``'s library and back by DLPack without a copy, and the
    direction comes out as a CuPy array (hand it back with :func:`to_torch` /
    :func:`to_jax`).

    Parameters
    ----------
    J : sketchlinalg.LinearOperator
        Over torch-CUDA tensors or JAX GPU arrays (any DLPack-capable library works).
    xp : namespace, optional
        Namespace of the new products; default CuPy. Host namespaces pair the same way
        (NumPy with PyTorch-CPU), which is how this path is tested without a GPU.

    Returns
    -------
    DLPackOperator

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> import sketchlinalg as sl
    >>> from sketchlinalg_cupy import dlpack_operator
    >>> J = sl.aslinearoperator(torch.arange(6.0, dtype=torch.float64).reshape(2, 3))
    >>> Jn = dlpack_operator(J, np)   # the same operator, NumPy in and out
    >>> Jn.matvec(np.ones(3)).tolist()
    [3.0, 12.0]

    On a GPU (not run as a doctest)::

        r, J = sketchlinalg_torch.jacobian_operator(residual_fn, params)   # torch CUDA
        d, info = sl.natural_gradient_direction(
            dlpack_operator(J), from_torch(r), damping=1e-8, method="nystrom", rank=200)
        d_torch = to_torch(d)
    """
    return DLPackOperator(J, xp)
