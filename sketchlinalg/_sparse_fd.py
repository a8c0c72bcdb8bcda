r"""Finite-difference Jacobians with a known sparsity pattern (scipy's ``jac_sparsity``).

Two columns of ``J`` that have no non-zero row in common are *structurally orthogonal*:
one evaluation ``f(x + h_j e_j + h_k e_k)`` gives both, since each row of the difference
sees only one of the two steps (Curtis, Powell, Reid 1974). :class:`SparsityGroups` splits
the columns of the pattern into such groups, greedily in column order (each column joins
the first group none of whose columns shares a row with it), and
:func:`grouped_fd_jacobian` differences ``f`` once per group (twice for ``"3-point"``)
instead of once per column: a banded or stencil Jacobian of any size costs a few dozen
evaluations. The entries are read off the differences at the pattern's positions and
returned as a sparse matrix of the library of ``x`` (``scipy.sparse`` for NumPy,
``cupyx.scipy.sparse`` for CuPy, a CSR tensor for torch), which stays sparse in
:func:`least_squares`.

The steps are those of the dense finite differences (relative to ``x_j``, rounded to the
step actually taken); with bounds, each column takes scipy's rule (a backward or one-sided
three-point formula where the box leaves no room), and a group's points stay in the box.

References
----------
Curtis, Powell, Reid. On the estimation of sparse Jacobian matrices. IMA J. Appl. Math.
13, 1974.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from . import _dispatch
from ._finite_diff import default_relative_step

__all__ = ["SparsityGroups", "grouped_fd_jacobian"]

Array = Any


class SparsityGroups:
    """The pattern of ``jac_sparsity`` and its structurally orthogonal column groups.

    Parameters
    ----------
    pattern : sparse matrix or array-like of shape (m, n)
        Non-zero (or ``True``) where ``J`` may be non-zero: a ``scipy.sparse`` matrix, or
        a dense array-like of the pattern (NumPy, nested lists).
    shape : tuple of int
        ``(m, n)`` expected.

    Attributes
    ----------
    rows, cols : list of int
        The pattern's positions, in CSR order (row by row, columns ascending).
    group : list of int
        The group of each column.
    n_groups : int
    """

    def __init__(self, pattern: Any, shape: tuple[int, int]) -> None:
        rows, cols, got = _positions(pattern)
        if got != shape:
            raise ValueError(
                f"jac_sparsity has shape {got}, expected (m, n) = {shape} (m residuals, "
                "n variables)"
            )
        m, n = shape
        order = sorted(range(len(rows)), key=lambda k: (rows[k], cols[k]))
        self.rows = [rows[k] for k in order]
        self.cols = [cols[k] for k in order]
        self.shape = shape
        rows_of: list[list[int]] = [[] for _ in range(n)]
        for i, j in zip(self.rows, self.cols, strict=True):
            rows_of[j].append(i)
        taken: list[set[int]] = [set() for _ in range(m)]  # groups already touching row i
        group = [0] * n
        for j in range(n):
            used = set().union(*(taken[i] for i in rows_of[j])) if rows_of[j] else set()
            g = 0
            while g in used:
                g += 1
            group[j] = g
            for i in rows_of[j]:
                taken[i].add(g)
        self.group = group
        self.n_groups = max(group) + 1 if group else 0
        indptr = [0] * (m + 1)
        for i in self.rows:
            indptr[i + 1] += 1
        for i in range(m):
            indptr[i + 1] += indptr[i]
        self.indptr = indptr


def _positions(pattern: Any) -> tuple[list[int], list[int], tuple[int, ...]]:
    """(rows, cols, shape) of the non-zeros of a sparse matrix or a dense array-like."""
    if hasattr(pattern, "tocoo") and hasattr(pattern, "nnz"):  # scipy / cupyx sparse
        coo = pattern.tocoo()
        coo.sum_duplicates()
        keep = coo.data != 0
        rows, cols = coo.row[keep], coo.col[keep]
        rows = rows.get() if hasattr(rows, "get") else rows
        cols = cols.get() if hasattr(cols, "get") else cols
        return rows.tolist(), cols.tolist(), tuple(int(s) for s in coo.shape)
    if hasattr(pattern, "layout") and "sparse" in str(pattern.layout):  # torch
        pattern = pattern.to_dense()
    if hasattr(pattern, "tolist") and hasattr(pattern, "shape"):
        if hasattr(pattern, "cpu"):
            pattern = pattern.cpu()
        nested = pattern.tolist()
    elif isinstance(pattern, (list, tuple)):
        nested = [list(row) for row in pattern]
    else:
        raise TypeError(
            "jac_sparsity must be a sparse matrix or an array-like of shape (m, n), got "
            f"{type(pattern).__name__}"
        )
    if not nested or not isinstance(nested[0], (list, tuple)):
        raise ValueError("jac_sparsity must be 2-D (m residuals x n variables)")
    width = len(nested[0])
    rows, cols = [], []
    for i, row in enumerate(nested):
        if len(row) != width:
            raise ValueError("jac_sparsity must be a rectangular 2-D array-like")
        for j, v in enumerate(row):
            if v:
                rows.append(i)
                cols.append(j)
    return rows, cols, (len(nested), width)


def grouped_fd_jacobian(
    fun: Callable[[Array], Array],
    x: Array,
    f0: Array,
    groups: SparsityGroups,
    *,
    scheme: str,
    rel_step: Array | float | None,
    xp: Any,
    lower: Array | None = None,
    upper: Array | None = None,
) -> Any:
    """The finite-difference Jacobian on ``groups``' pattern, as a sparse matrix of the
    library of ``x``: ``n_groups`` evaluations of ``fun`` (``2 n_groups`` for
    ``"3-point"``).

    Column ``j`` of group ``g`` takes the step ``h_j`` of the dense differences; ``J_ij``
    is the difference quotient of row ``i`` at the evaluations of group ``g``. With
    ``lower`` / ``upper`` (finite bounds), each column steps backward where forward has no
    room, and a ``"3-point"`` column without room on both sides uses the one-sided formula
    ``(-3 f_0 + 4 f(x + s) - f(x + 2 s)) / (2 s)``.
    """
    device = _dispatch.device_of(x)
    n, dtype = x.shape[0], x.dtype
    eps = float(xp.finfo(dtype).eps)
    s = default_relative_step(scheme, eps) if rel_step is None else rel_step
    h = xp.abs(s * xp.where(x != 0, x, xp.ones_like(x)))
    ones = xp.ones_like(x)
    sign, central = ones, None
    if lower is not None and upper is not None:
        room_up, room_down = upper - x, x - lower
        factor = 1.0 if scheme == "2-point" else 2.0
        if scheme == "3-point":
            central = (h <= room_up) & (h <= room_down)
        forward = (factor * h <= room_up) | (room_up >= room_down)
        sign = xp.where(forward, ones, -ones)
        room = xp.where(forward, room_up, room_down) / factor
        cut = xp.minimum(h, room)
        h = cut if central is None else xp.where(central, h, cut)
    elif scheme == "3-point":
        central = xp.ones(x.shape, dtype=xp.bool, device=device)
    group = xp.asarray(groups.group, device=device)
    diffs, denominators = [], xp.zeros_like(x)
    for g in range(groups.n_groups):
        member = group == g
        step = xp.where(member, sign * h, xp.zeros_like(x))
        x1 = x + step
        taken = x1 - x
        if scheme == "2-point":
            diffs.append(fun(x1) - f0)
            denominators = xp.where(member, taken, denominators)
            continue
        assert central is not None
        # central columns: f(x + h) - f(x - h); one-sided: -3 f0 + 4 f(x + s) - f(x + 2 s)
        x2 = x + xp.where(central, -step, 2.0 * step)
        if lower is not None and upper is not None:
            x2 = xp.minimum(xp.maximum(x2, lower), upper)
        f1, f2 = fun(x1), fun(x2)
        diffs.append((f1 - f2, -3.0 * f0 + 4.0 * f1 - f2))
        width = xp.where(central, x1 - x2, 2.0 * taken)
        denominators = xp.where(member, width, denominators)
    m = groups.shape[0]
    rows = xp.asarray(groups.rows, device=device)
    cols = xp.asarray(groups.cols, device=device)
    flat_index = xp.take(group, cols) * m + rows
    if scheme == "2-point":
        stacked = xp.reshape(xp.stack(diffs, axis=0), (-1,))
        values = xp.take(stacked, flat_index)
    else:
        assert central is not None
        two_sided = xp.reshape(xp.stack([d[0] for d in diffs], axis=0), (-1,))
        one_sided = xp.reshape(xp.stack([d[1] for d in diffs], axis=0), (-1,))
        values = xp.where(
            xp.take(central, cols),
            xp.take(two_sided, flat_index),
            xp.take(one_sided, flat_index),
        )
    values = values / xp.take(denominators, cols)
    return _sparse_matrix(x, values, groups, n)


def _sparse_matrix(x: Array, values: Array, groups: SparsityGroups, n: int) -> Any:
    """A CSR matrix of the library of ``x`` with ``groups``' pattern and ``values``."""
    shape = (groups.shape[0], n)
    name = type(x).__module__.split(".")[0]
    if name == "numpy":
        sparse = _import("scipy.sparse", "NumPy", "scipy")
        return sparse.csr_array((values, groups.cols, groups.indptr), shape=shape)
    if name == "cupy":
        sparse = _import("cupyx.scipy.sparse", "CuPy", "cupy")
        cupy = importlib.import_module("cupy")
        return sparse.csr_matrix(
            (values, cupy.asarray(groups.cols), cupy.asarray(groups.indptr)), shape=shape
        )
    if name == "torch":
        torch = importlib.import_module("torch")  # torch is loaded: x is its tensor
        return torch.sparse_csr_tensor(
            torch.tensor(groups.indptr, device=x.device),
            torch.tensor(groups.cols, device=x.device),
            values,
            size=shape,
            check_invariants=False,
        )
    raise TypeError(
        f"jac_sparsity needs x0 of NumPy, CuPy or torch (their sparse matrices hold the "
        f"Jacobian), got an array of {type(x).__module__!r}; give jac as a callable or a "
        "LinearOperator instead"
    )


def _import(module: str, library: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - scipy is a test dependency
        raise ImportError(
            f"jac_sparsity with {library} arrays builds a {module} matrix: install {package}"
        ) from err
