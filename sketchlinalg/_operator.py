"""Linear operators whose unit of work is a block product.

A :class:`LinearOperator` ``A`` of shape ``(m, n)`` knows its dtype, device and array
namespace and offers ``matmat(X) = A X`` for ``X`` of shape ``(n, k)`` and
``rmatmat(Y) = A^T Y`` for ``Y`` of shape ``(m, k)``. Everything else (vectors, the
transpose, a dense copy, Gram and kernel views) is derived. Subclasses fill in
``_matmat`` / ``_rmatmat`` only; the public methods check shapes, dtypes and devices and
name both shapes on a mismatch (the template-method design of ``scipy.sparse.linalg``).

Operators carry two tags that solvers check before they start (as in lineax):
``is_symmetric`` and ``is_psd`` (positive semi-definite, which implies symmetric).

Only real floating dtypes are supported: for them the adjoint is the transpose.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import array_api_compat as _compat

from . import _dispatch
from ._validation import check_float_dtype, check_int

__all__ = ["FunctionOperator", "LinearOperator", "aslinearoperator", "gram", "kernel"]

Array = Any


class LinearOperator:
    """Abstract linear operator ``A: R^n -> R^m`` with block products.

    Parameters
    ----------
    shape : tuple of int
        ``(m, n)``.
    dtype : dtype
        Real floating dtype of the namespace ``xp``.
    xp : namespace
        The array namespace the operator's products live in.
    device : device, optional
        Device of the products; ``None`` when unknown (then not checked).
    symmetric, psd : bool
        Tags. ``psd=True`` asserts that ``A`` is symmetric positive semi-definite.

    Notes
    -----
    Subclasses implement ``_matmat(X)`` and, where possible, ``_rmatmat(Y)``. The public
    :meth:`matmat` and :meth:`rmatmat` check their argument and the result.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        dtype: Any,
        *,
        xp: Any,
        device: Any = None,
        symmetric: bool = False,
        psd: bool = False,
    ) -> None:
        shape = _check_shape(shape)
        check_float_dtype(xp, dtype, "dtype")
        if (symmetric or psd) and shape[0] != shape[1]:
            raise ValueError(f"a symmetric or PSD operator must be square, got shape {shape}")
        self.shape: tuple[int, int] = shape
        self.dtype = dtype
        self.xp = xp
        self.device = device
        self.is_psd = bool(psd)
        self.is_symmetric = bool(symmetric or psd)

    # -- to be provided by subclasses ---------------------------------------------
    def _matmat(self, X: Array) -> Array:
        raise NotImplementedError

    def _rmatmat(self, Y: Array) -> Array:
        if self.is_symmetric:
            return self._matmat(Y)
        raise NotImplementedError(
            f"{type(self).__name__} has no transpose product (rmatmat); supply one"
        )

    # -- public products ---------------------------------------------------------
    def matmat(self, X: Array) -> Array:
        """Return ``A @ X`` for a block ``X`` of shape ``(n, k)``."""
        self._check_block(X, self.shape[1], "X", "matmat")
        return self._check_result(self._matmat(X), (self.shape[0], X.shape[1]), "matmat")

    def rmatmat(self, Y: Array) -> Array:
        """Return ``A^T @ Y`` for a block ``Y`` of shape ``(m, k)``."""
        self._check_block(Y, self.shape[0], "Y", "rmatmat")
        return self._check_result(self._rmatmat(Y), (self.shape[1], Y.shape[1]), "rmatmat")

    def matvec(self, x: Array) -> Array:
        """Return ``A @ x`` for a vector ``x`` of shape ``(n,)``."""
        _check_vector(x, "x", "matvec")
        return self.matmat(x[:, None])[:, 0]

    def rmatvec(self, y: Array) -> Array:
        """Return ``A^T @ y`` for a vector ``y`` of shape ``(m,)``."""
        _check_vector(y, "y", "rmatvec")
        return self.rmatmat(y[:, None])[:, 0]

    @property
    def is_materialized(self) -> bool:
        """Whether the operator holds its entries (products are plain matmuls).

        :func:`choose_method` then counts no cost for materializing it.
        """
        return False

    def __matmul__(self, X: Array) -> Array:
        if isinstance(X, LinearOperator):
            return NotImplemented
        return self.matvec(X) if getattr(X, "ndim", None) == 1 else self.matmat(X)

    @property
    def T(self) -> LinearOperator:
        """The transpose ``A^T`` (the adjoint, for real dtypes), as a view."""
        return _TransposeOperator(self)

    @property
    def H(self) -> LinearOperator:
        """The adjoint; equal to :attr:`T` for the real dtypes supported here."""
        return self.T

    def to_dense(self) -> Array:
        """Materialize ``A`` as an ``(m, n)`` array with the cheaper of n or m products."""
        m, n = self.shape
        xp = self.xp
        if n <= m:
            return self.matmat(xp.eye(n, dtype=self.dtype, device=self.device))
        return self.rmatmat(xp.eye(m, dtype=self.dtype, device=self.device)).T

    def __repr__(self) -> str:
        tags = ", psd" if self.is_psd else (", symmetric" if self.is_symmetric else "")
        return f"<{type(self).__name__} shape={self.shape} dtype={self.dtype}{tags}>"

    # -- checks ------------------------------------------------------------------
    def _check_block(self, X: Array, rows: int, name: str, method: str) -> None:
        if not _dispatch.is_array(X):
            raise TypeError(f"{method}: {name} must be an array, got {type(X).__name__}")
        if X.ndim != 2:
            raise ValueError(
                f"{method}: {name} must be 2-D of shape ({rows}, k), got shape {tuple(X.shape)}"
                " (use matvec/rmatvec for vectors)"
            )
        if X.shape[0] != rows:
            raise ValueError(
                f"{method}: dimension mismatch, operator has shape {self.shape} but {name} has "
                f"shape {tuple(X.shape)}; {name}.shape[0] must be {rows}"
            )
        if X.dtype != self.dtype:
            raise TypeError(
                f"{method}: dtype mismatch, operator has dtype {self.dtype} but {name} has "
                f"dtype {X.dtype}; cast one of them"
            )
        if self.device is not None and not _dispatch.is_tracing(X):
            dev = _compat.device(X)
            if dev != self.device:
                raise ValueError(
                    f"{method}: device mismatch, operator is on {self.device} but {name} is on "
                    f"{dev}; move one of them"
                )

    def _check_result(self, Y: Array, expected: tuple[int, int], method: str) -> Array:
        if not _dispatch.is_array(Y):
            raise TypeError(
                f"{type(self).__name__}.{method} returned {type(Y).__name__}, expected an "
                f"array of shape {expected}; check the product callable"
            )
        if Y.dtype != self.dtype:
            raise TypeError(
                f"{type(self).__name__}.{method} returned dtype {Y.dtype}, expected the "
                f"operator's {self.dtype}; check the product callable"
            )
        if tuple(Y.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}.{method} returned shape {tuple(Y.shape)}, expected "
                f"{expected}; check the product callable"
            )
        return Y


class _MatrixOperator(LinearOperator):
    """A 2-D array as an operator."""

    def __init__(self, A: Array, *, symmetric: bool, psd: bool) -> None:
        xp = _compat.array_namespace(A)
        super().__init__(
            tuple(A.shape),
            A.dtype,
            xp=xp,
            device=_dispatch.device_of(A),
            symmetric=symmetric,
            psd=psd,
        )
        self.array = A

    def _matmat(self, X: Array) -> Array:
        return self.array @ X

    def _rmatmat(self, Y: Array) -> Array:
        return self.array.T @ Y

    def to_dense(self) -> Array:
        return self.array

    @property
    def is_materialized(self) -> bool:
        return True


class FunctionOperator(LinearOperator):
    """An operator defined by block-product callables (what adapters build for Jacobians).

    Parameters
    ----------
    matmat : callable
        ``X (n, k) -> A X (m, k)``.
    rmatmat : callable, optional
        ``Y (m, k) -> A^T Y (n, k)``. Omit it for a symmetric operator.
    shape : tuple of int
        ``(m, n)``.
    dtype : dtype
        Real floating dtype of the products.
    xp : namespace
        Array namespace of the products (e.g. ``array_api_compat.array_namespace(x)``).
    device : device, optional
        Device of the products, checked against every block when given.
    symmetric, psd : bool
        Tags (``psd`` implies ``symmetric``).
    chunk_size : int, optional
        Apply the callables to blocks of at most this many columns (bounds the memory of a
        product of a large block; under JAX the blocks run in one ``lax.map``).

    Examples
    --------
    >>> import numpy as np
    >>> from sketchlinalg import FunctionOperator
    >>> A = np.arange(6.0).reshape(2, 3)
    >>> op = FunctionOperator(lambda X: A @ X, lambda Y: A.T @ Y, shape=(2, 3),
    ...                       dtype=np.float64, xp=np)
    >>> op.matvec(np.ones(3)).tolist()
    [3.0, 12.0]
    """

    def __init__(
        self,
        matmat: Callable[[Array], Array],
        rmatmat: Callable[[Array], Array] | None = None,
        *,
        shape: tuple[int, int],
        dtype: Any,
        xp: Any,
        device: Any = None,
        symmetric: bool = False,
        psd: bool = False,
        chunk_size: int | None = None,
    ) -> None:
        if not callable(matmat):
            raise TypeError(f"matmat must be callable, got {type(matmat).__name__}")
        if rmatmat is not None and not callable(rmatmat):
            raise TypeError(f"rmatmat must be callable or None, got {type(rmatmat).__name__}")
        if chunk_size is not None:
            chunk_size = check_int(chunk_size, "chunk_size", low=1)
        super().__init__(shape, dtype, xp=xp, device=device, symmetric=symmetric, psd=psd)
        self._matmat_fn = matmat
        self._rmatmat_fn = rmatmat
        self.chunk_size = chunk_size

    def _matmat(self, X: Array) -> Array:
        return _dispatch.map_columns(self.xp, self._matmat_fn, X, self.chunk_size)

    def _rmatmat(self, Y: Array) -> Array:
        if self._rmatmat_fn is None:
            return super()._rmatmat(Y)
        return _dispatch.map_columns(self.xp, self._rmatmat_fn, Y, self.chunk_size)


class _TransposeOperator(LinearOperator):
    def __init__(self, A: LinearOperator) -> None:
        m, n = A.shape
        super().__init__(
            (n, m), A.dtype, xp=A.xp, device=A.device, symmetric=A.is_symmetric, psd=A.is_psd
        )
        self.base = A

    def _matmat(self, X: Array) -> Array:
        return self.base._rmatmat(X)

    def _rmatmat(self, Y: Array) -> Array:
        return self.base._matmat(Y)

    @property
    def T(self) -> LinearOperator:
        return self.base


class _GramOperator(LinearOperator):
    """``J^T W J`` (P x P, PSD) with ``W = diag(weights)``."""

    def __init__(self, J: LinearOperator, weights: Array | None) -> None:
        super().__init__((J.shape[1], J.shape[1]), J.dtype, xp=J.xp, device=J.device, psd=True)
        self.jacobian = J
        self.weights = weights

    def _matmat(self, X: Array) -> Array:
        JX = self.jacobian._matmat(X)
        if self.weights is not None:
            JX = self.weights[:, None] * JX
        return self.jacobian._rmatmat(JX)

    def to_dense(self) -> Array:
        J = self.jacobian.to_dense()
        if self.weights is None:
            return _dispatch.symmetric_product(self.xp, J.T)
        return J.T @ (self.weights[:, None] * J)


class _KernelOperator(LinearOperator):
    """``J W J^T`` (N x N, PSD) with ``W = diag(weights)`` in parameter space."""

    def __init__(self, J: LinearOperator, weights: Array | None) -> None:
        super().__init__((J.shape[0], J.shape[0]), J.dtype, xp=J.xp, device=J.device, psd=True)
        self.jacobian = J
        self.weights = weights

    def _matmat(self, Y: Array) -> Array:
        JtY = self.jacobian._rmatmat(Y)
        if self.weights is not None:
            JtY = self.weights[:, None] * JtY
        return self.jacobian._matmat(JtY)

    def to_dense(self) -> Array:
        J = self.jacobian.to_dense()
        if self.weights is None:
            return _dispatch.symmetric_product(self.xp, J)
        return (J * self.weights[None, :]) @ J.T


def aslinearoperator(
    A: Array | LinearOperator, *, symmetric: bool = False, psd: bool = False
) -> LinearOperator:
    """View a 2-D array of any array-API backend (or an operator) as a :class:`LinearOperator`.

    Parameters
    ----------
    A : array, sparse matrix or LinearOperator
        A 2-D real floating array (numpy, torch, jax, cupy, array-api-strict, ...), a sparse
        matrix of scipy, CuPy or torch (a :class:`SparseOperator`, never densified), or an
        operator, which is returned unchanged unless new tags are asked for.
    symmetric, psd : bool
        Tags to attach. The caller asserts them; they are not checked numerically.

    Returns
    -------
    LinearOperator

    Examples
    --------
    >>> import numpy as np
    >>> from sketchlinalg import aslinearoperator
    >>> op = aslinearoperator(np.eye(3), psd=True)
    >>> op.shape, op.is_psd
    ((3, 3), True)
    """
    return as_operator(A, "A", symmetric=symmetric, psd=psd)


def as_operator(
    A: Array | LinearOperator, name: str, *, symmetric: bool = False, psd: bool = False
) -> LinearOperator:
    """:func:`aslinearoperator` for an entry point whose argument is called ``name``: every
    message names it (``J must be 2-D ...``, ``J's dtype float16 is not supported ...``).
    A sparse matrix (scipy, CuPy or torch) becomes a :class:`SparseOperator`."""
    from ._sparse import SparseOperator, sparse_library  # _sparse builds on this module

    if sparse_library(A) is not None:
        A = SparseOperator(A, name)
    if isinstance(A, LinearOperator):
        if (psd and not A.is_psd) or (symmetric and not A.is_symmetric):
            return FunctionOperator(
                A._matmat,
                A._rmatmat,
                shape=A.shape,
                dtype=A.dtype,
                xp=A.xp,
                device=A.device,
                symmetric=symmetric or A.is_symmetric,
                psd=psd or A.is_psd,
            )
        return A
    if not _dispatch.is_array(A):
        raise TypeError(f"{name} must be a 2-D array or a LinearOperator, got {type(A).__name__}")
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got an array of shape {tuple(A.shape)}")
    if 0 in tuple(A.shape):
        raise ValueError(f"{name} must have positive dimensions, got shape {tuple(A.shape)}")
    if (symmetric or psd) and A.shape[0] != A.shape[1]:
        raise ValueError(
            f"{name} must be square to be tagged symmetric or PSD, got shape {tuple(A.shape)}"
        )
    check_float_dtype(_compat.array_namespace(A), A.dtype, f"{name}'s dtype")
    return _MatrixOperator(A, symmetric=symmetric, psd=psd)


def gram(J: Array | LinearOperator, weights: Array | None = None) -> LinearOperator:
    """The Gram operator ``G = J^T W J`` (P x P), tagged PSD.

    For a residual Jacobian ``J`` (N x P) this is the Gauss–Newton matrix, i.e. the
    energy natural-gradient Gram matrix for PINNs. ``G X`` costs one product with ``J``
    and one with ``J^T``; ``G`` is never formed unless :meth:`LinearOperator.to_dense`
    is called.

    Parameters
    ----------
    J : array or LinearOperator
        ``(N, P)`` Jacobian.
    weights : array, optional
        Non-negative residual weights ``w`` of shape ``(N,)``; ``W = diag(w)``.
    """
    J = as_operator(J, "J")
    w = _check_weights(weights, J, J.shape[0], "gram")
    return _GramOperator(J, w)


def kernel(J: Array | LinearOperator, weights: Array | None = None) -> LinearOperator:
    """The residual-space kernel ``K = J W J^T`` (N x N), tagged PSD.

    ``K`` has the same non-zero eigenvalues as ``G = J^T J`` (for ``W = I``) and is the
    cheaper one to work with when ``N < P`` (see :func:`natural_gradient_direction`).

    Parameters
    ----------
    J : array or LinearOperator
        ``(N, P)`` Jacobian.
    weights : array, optional
        Non-negative parameter weights ``w`` of shape ``(P,)``; ``W = diag(w)``.
    """
    J = as_operator(J, "J")
    w = _check_weights(weights, J, J.shape[1], "kernel")
    return _KernelOperator(J, w)


# ------------------------------------------------------------------------------------
def _check_shape(shape: Any) -> tuple[int, int]:
    try:
        m, n = shape
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair of ints (m, n), got {shape!r}") from None
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in (m, n)):
        raise ValueError(f"shape must be a pair of ints (m, n), got {shape!r}")
    m, n = int(m), int(n)
    if m < 1 or n < 1:
        raise ValueError(f"shape must have positive entries, got {(m, n)}")
    return m, n


def _check_vector(x: Array, name: str, method: str) -> None:
    if getattr(x, "ndim", None) != 1:
        raise ValueError(
            f"{method}: {name} must be 1-D, got shape {tuple(getattr(x, 'shape', ()))}"
            " (use matmat/rmatmat for blocks)"
        )


def _check_weights(
    weights: Array | None, J: LinearOperator, length: int, where: str
) -> Array | None:
    if weights is None:
        return None
    if not _dispatch.is_array(weights) or weights.ndim != 1 or weights.shape[0] != length:
        raise ValueError(
            f"{where}: weights must be a 1-D array of length {length} for J of shape "
            f"{J.shape}, got {tuple(getattr(weights, 'shape', ()))}"
        )
    if weights.dtype != J.dtype:
        raise TypeError(f"{where}: weights have dtype {weights.dtype}, J has {J.dtype}")
    if not _dispatch.is_tracing(weights) and not bool(J.xp.all(weights >= 0)):
        raise ValueError(f"{where}: weights must be non-negative (the result must stay PSD)")
    return weights


def promote(J: LinearOperator, dtype: Any) -> LinearOperator:
    """``J`` with its products returned in the wider ``dtype`` (float32 -> float64).

    An explicit ``J`` is copied once in ``dtype``, so every product after it (the Gram or
    kernel, the sketch, the solve) rounds at ``dtype``'s precision; a matrix-free ``J``
    takes its arguments in its own dtype and returns its products in ``dtype``.
    """
    xp, low = J.xp, J.dtype
    if J.is_materialized:
        return _MatrixOperator(xp.astype(J.to_dense(), dtype), symmetric=False, psd=False)
    return FunctionOperator(
        lambda X: xp.astype(J.matmat(xp.astype(X, low)), dtype),
        lambda Y: xp.astype(J.rmatmat(xp.astype(Y, low)), dtype),
        shape=J.shape,
        dtype=dtype,
        xp=xp,
        device=J.device,
    )
