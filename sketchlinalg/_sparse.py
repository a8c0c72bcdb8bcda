r"""Sparse matrices of scipy, CuPy and torch as :class:`LinearOperator`\ s.

A Jacobian with a few non-zeros per row (a discretized PDE, bundle adjustment, a
finite-element residual) is given as the sparse matrix of the library its arrays belong to:

============================ =============================== ==========================
library                      matrix types                    vectors
============================ =============================== ==========================
``scipy.sparse``             any format (``csr_array``, ...)  NumPy
``cupyx.scipy.sparse``       any format                      CuPy (on the device)
``torch``                    ``sparse_coo``, ``sparse_csr``,  torch (CPU or CUDA)
                             ``sparse_csc`` layouts
============================ =============================== ==========================

:class:`SparseOperator` keeps it in compressed-row form (CSR, duplicates summed) and never
densifies it: products are the library's sparse-dense products, so each costs
``O(nnz k)`` for a block of ``k`` columns. What the solvers need on top of products comes
from the stored entries ``data`` alone, with the pattern kept:

* :meth:`SparseOperator.scale` ``diag(w) A diag(c)`` (a robust loss weights the rows,
  a variable scaling the columns): ``data_i w_{row(i)} c_{col(i)}``;
* :meth:`SparseOperator.column_norms` ``||A e_j||`` (MINPACK's ``x_scale="jac"``): the
  column sums of the squared entries, one product with ``A^T``;
* :meth:`SparseOperator.gram` ``A^T A`` as a sparse matrix (scipy and CuPy), what
  :class:`~sketchlinalg.SparseDirect` factors.

The library is recognized by the module of the matrix's type, and the functions it needs
(``scipy.sparse``, ``torch.sparse_csr_tensor``) are looked up in modules that are already
loaded: sketchlinalg imports none of these libraries itself.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from collections.abc import Iterator
from typing import Any

from . import _dispatch
from ._operator import LinearOperator
from ._validation import check_float_dtype

__all__ = ["SPARSE_LIBRARIES", "SparseOperator", "sparse_library"]

Array = Any

#: The libraries whose sparse matrices are recognized.
SPARSE_LIBRARIES = ("scipy", "cupyx", "torch")

# the array namespace each library's sparse matrices multiply with
_VECTOR_LIBRARY = {"scipy": "numpy", "cupyx": "cupy", "torch": "torch"}


def sparse_library(A: Any) -> str | None:
    """``"scipy"``, ``"cupyx"`` or ``"torch"`` for a sparse matrix of that library, else
    ``None`` (dense arrays, operators and everything else)."""
    module = type(A).__module__ or ""
    if module.startswith("scipy.sparse") and hasattr(A, "tocsr"):
        return "scipy"
    if module.startswith("cupyx.scipy.sparse") and hasattr(A, "tocsr"):
        return "cupyx"
    if module.startswith("torch") and "sparse" in str(getattr(A, "layout", "")):
        return "torch"
    return None


class SparseOperator(LinearOperator):
    r"""A sparse matrix of scipy, CuPy or torch as a :class:`LinearOperator`.

    Parameters
    ----------
    A : sparse matrix
        ``scipy.sparse`` (any format), ``cupyx.scipy.sparse`` (any format), or a torch
        tensor with a sparse layout (COO, CSR or CSC), 2-D, real floating (float32 or
        float64). It is converted to CSR once (duplicate entries summed); the caller's
        matrix is not modified.
    name : str
        The argument's name in error messages.

    Attributes
    ----------
    library : str
        ``"scipy"``, ``"cupyx"`` or ``"torch"``.
    matrix : sparse matrix
        The CSR matrix of that library (what :attr:`jacobian` results hold).
    nnz : int
        Number of stored entries.

    Notes
    -----
    Products ``A X`` and ``A^T Y`` are the library's sparse-dense products on the
    vectors of its array library (NumPy for scipy, CuPy for cupyx, torch for torch), so
    the vectors must be of that library, on the matrix's device.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from sketchlinalg import aslinearoperator
    >>> J = aslinearoperator(sp.random(1000, 300, density=0.01, format="csr", random_state=0))
    >>> type(J).__name__, J.shape, J.library
    ('SparseOperator', (1000, 300), 'scipy')
    """

    def __init__(self, A: Any, name: str = "A") -> None:
        library = sparse_library(A)
        if library is None:
            raise TypeError(
                f"{name} must be a sparse matrix of {SPARSE_LIBRARIES}, got {type(A).__name__}"
            )
        shape = tuple(int(s) for s in A.shape)
        if len(shape) != 2:
            raise ValueError(f"{name} must be a 2-D sparse matrix, got shape {shape}")
        if 0 in shape:
            raise ValueError(f"{name} must have positive dimensions, got shape {shape}")
        self.library = library
        if library == "torch":
            with _torch_csr_quiet():
                csr = (A.coalesce() if A.layout == _torch().sparse_coo else A).to_sparse_csr()
            data = csr.values()
        else:
            csr = A.tocsr(copy=True)
            csr.sum_duplicates()
            data = csr.data
        xp = _dispatch.namespace(data)
        check_float_dtype(xp, data.dtype, f"{name}'s dtype")
        super().__init__((shape[0], shape[1]), data.dtype, xp=xp, device=_dispatch.device_of(data))
        self.matrix = csr
        self._data = data
        self._transpose = csr.t() if library == "torch" else csr.T
        self._rows: Array | None = None

    # -- the entries -----------------------------------------------------------------
    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self._data.shape[0])

    def _pattern(self) -> tuple[Array, Array]:
        """(row pointers, column indices) of the CSR form."""
        if self.library == "torch":
            return self.matrix.crow_indices(), self.matrix.col_indices()
        return self.matrix.indptr, self.matrix.indices

    def _with_data(self, data: Array) -> SparseOperator:
        """The matrix with the same pattern and new entries."""
        indptr, indices = self._pattern()
        if self.library == "torch":
            with _torch_csr_quiet():
                new = _torch().sparse_csr_tensor(
                    indptr, indices, data, size=self.shape, check_invariants=False
                )
        else:
            new = type(self.matrix)((data, indices, indptr), shape=self.shape)
        out = object.__new__(SparseOperator)
        LinearOperator.__init__(out, self.shape, self.dtype, xp=self.xp, device=self.device)
        out.library, out.matrix, out._data, out._rows = self.library, new, data, self._rows
        out._transpose = new.t() if self.library == "torch" else new.T
        return out

    def _row_of_entry(self) -> Array:
        """The row index of each stored entry (computed once)."""
        if self._rows is None:
            xp = self.xp
            indptr, _ = self._pattern()
            counts = indptr[1:] - indptr[:-1]
            rows = xp.arange(self.shape[0], dtype=counts.dtype, device=self.device)
            self._rows = xp.repeat(rows, counts)
        return self._rows

    def all_finite(self) -> bool:
        """Whether every stored entry is finite."""
        return bool(self.xp.all(self.xp.isfinite(self._data)))

    def scale(self, rows: Array | None = None, columns: Array | None = None) -> SparseOperator:
        """``diag(rows) A diag(columns)`` with the same pattern (``None``: no scaling)."""
        xp, data = self.xp, self._data
        if rows is not None:
            data = data * xp.take(rows, self._row_of_entry())
        if columns is not None:
            data = data * xp.take(columns, self._pattern()[1])
        return self._with_data(data)

    def column_norms(self) -> Array:
        """``||A e_j||_2`` for every column ``j`` (0 for an empty column)."""
        xp = self.xp
        squares = self._with_data(self._data * self._data)
        ones = xp.ones((self.shape[0],), dtype=self.dtype, device=self.device)
        return xp.sqrt(squares.rmatvec(ones))

    def gram(self) -> Any:
        """``A^T A`` as a sparse matrix of the library (CSC: symmetric, so also the CSR
        form of the same matrix). Not for torch, which has no sparse-sparse product on
        every device: there ``A^T A`` is applied by products."""
        if self.library == "torch":
            raise NotImplementedError(
                "A^T A of a torch sparse matrix is not formed; use a matrix-free method "
                "(nystrom-pcg, nystrom)"
            )
        return (self._transpose @ self.matrix).tocsc()

    # -- products -----------------------------------------------------------------
    @property
    def is_materialized(self) -> bool:
        """``False``: the dense methods would densify it (what they cost is counted)."""
        return False

    def _matmat(self, X: Array) -> Array:
        return self.matrix @ X

    def _rmatmat(self, Y: Array) -> Array:
        return self._transpose @ Y

    def to_dense(self) -> Array:
        """The dense ``(m, n)`` array (``toarray()``, or torch's ``to_dense()``)."""
        return self.matrix.to_dense() if self.library == "torch" else self.matrix.toarray()

    def __repr__(self) -> str:
        return (
            f"<SparseOperator shape={self.shape} dtype={self.dtype} nnz={self.nnz} "
            f"library={self.library}>"
        )


def check_vector_library(op: SparseOperator, xp: Any, name: str) -> None:
    """Raise ``TypeError`` when ``xp`` (of ``x0``) is not the array library that the
    sparse matrix ``op`` multiplies with."""
    want = _VECTOR_LIBRARY[op.library]
    have = getattr(xp, "__name__", "")
    if want not in have.split("."):
        raise TypeError(
            f"{name} is a {op.library} sparse matrix, which multiplies {want} arrays, but x0 "
            f"is an array of {have!r}; give x0 as a {want} array (or J as a sparse matrix of "
            "x0's library)"
        )


@contextlib.contextmanager
def _torch_csr_quiet() -> Iterator[None]:
    """Silence torch's "sparse CSR support is in beta" warning for the CSR form made here
    (the caller did not ask for a CSR tensor; the products used are tested)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


def _torch() -> Any:
    return importlib.import_module("torch")  # torch is loaded: its sparse tensors reached us
