"""The problem as :func:`least_squares` evaluates it: residuals and Jacobian, checked.

* :class:`Residual` calls ``fun(x, *args, **kwargs)`` and checks each result: an array of
  the backend and dtype of ``x0``, 1-D (a 0-d result becomes shape ``(1,)``), with the
  number of residuals ``m`` fixed by the first call.
* :class:`Jacobian` evaluates ``jac`` (finite differences, projected into the box with
  bounds, grouped by ``jac_sparsity`` when given; a callable; a constant array, sparse
  matrix or operator) and checks its shape ``(m, n)`` and dtype; it returns what ``jac``
  gave, the dense array (``None`` when matrix-free or sparse) and an operator (a
  :class:`SparseOperator` for a sparse matrix of scipy, CuPy or torch: never densified).
* :func:`weigh_jacobian` weights the rows by a robust loss, ``J_w = diag(w) J``, so that
  ``J_w^T f_w`` is the gradient of the robust cost and ``J_w^T J_w`` the Gauss–Newton part
  of its Hessian (scipy's ``scale_for_robust_loss_function``, see ``_lsq_loss``).

Every error message names the argument, what was expected, what was received and where
(``x0``, a trial point, a finite-difference point).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _dispatch
from ._finite_diff import finite_difference_jacobian
from ._lsq_bounds import Box, bounded_fd_jacobian
from ._lsq_loss import LossTerms
from ._operator import FunctionOperator, LinearOperator, aslinearoperator
from ._sparse import SparseOperator, check_vector_library, sparse_library
from ._sparse_fd import SparsityGroups, grouped_fd_jacobian

__all__ = ["Jacobian", "Residual", "weigh_jacobian"]

Array = Any


class Residual:
    """``fun`` with the checks: an array of the backend and dtype of ``x0``, fixed shape."""

    def __init__(
        self,
        fun: Callable[..., Array],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        xp: Any,
        dtype: Any,
    ) -> None:
        self.fun, self.args, self.kwargs = fun, args, kwargs
        self.xp, self.dtype = xp, dtype
        self.m: int = -1

    def __call__(self, x: Array, where: str) -> Array:
        f = self.fun(x, *self.args, **self.kwargs)
        if not _dispatch.is_array(f):
            raise TypeError(
                f"fun must return an array of the backend of x0, got {type(f).__name__} at {where}"
            )
        if f.ndim == 0:
            f = self.xp.reshape(f, (1,))
        if f.ndim != 1:
            raise ValueError(
                f"fun must return a 1-D array of residuals, got shape {tuple(f.shape)} at {where}"
            )
        if f.dtype != self.dtype:
            raise TypeError(
                f"fun returned dtype {f.dtype} at {where}, but x0 has dtype {self.dtype}; the "
                "residuals must have the dtype of x"
            )
        if self.m < 0:
            self.m = int(f.shape[0])
        elif f.shape[0] != self.m:
            raise ValueError(
                f"fun returned shape {tuple(f.shape)} at {where}, but shape ({self.m},) at x0; "
                "the number of residuals must not change between calls"
            )
        return f


class Jacobian:
    """Evaluates ``jac``: returns (what the user gave, a dense array or None, an operator)."""

    def __init__(
        self,
        jac: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        residual: Residual,
        xp: Any,
        dtype: Any,
        shape: tuple[int, int],
        rel_step: Any,
        box: Box | None = None,
        sparsity: SparsityGroups | None = None,
    ) -> None:
        self.box, self.sparsity = box, sparsity
        self.jac, self.args, self.kwargs = jac, args, kwargs
        self.residual = residual
        self.xp, self.dtype, self.shape = xp, dtype, shape
        self.rel_step = rel_step
        self.constant: tuple[Any, Array | None, LinearOperator] | None = None
        if not isinstance(jac, str) and not callable(jac):
            if not (
                isinstance(jac, LinearOperator)
                or _dispatch.is_array(jac)
                or sparse_library(jac) is not None
            ):
                raise TypeError(
                    "jac must be '2-point', '3-point', a callable, an array, a sparse matrix "
                    f"or a LinearOperator, got {type(jac).__name__}"
                )
            self.constant = self._check(jac, "jac")

    def __call__(self, x: Array, f: Array) -> tuple[Any, Array | None, LinearOperator]:
        if self.constant is not None:
            return self.constant
        if isinstance(self.jac, str):
            point = lambda z: self.residual(z, "a finite-difference point")  # noqa: E731
            if self.sparsity is not None:
                Js = grouped_fd_jacobian(
                    point,
                    x,
                    f,
                    self.sparsity,
                    scheme=self.jac,
                    rel_step=self.rel_step,
                    xp=self.xp,
                    lower=None if self.box is None else self.box.lb,
                    upper=None if self.box is None else self.box.ub,
                )
                return Js, None, SparseOperator(Js, "the finite-difference Jacobian")
            if self.box is None:
                J = finite_difference_jacobian(
                    point, x, f, scheme=self.jac, rel_step=self.rel_step, xp=self.xp
                )
            else:
                J = bounded_fd_jacobian(
                    point, x, f, scheme=self.jac, rel_step=self.rel_step, xp=self.xp, box=self.box
                )
            return (
                J,
                J,
                FunctionOperator(
                    lambda X: J @ X,
                    lambda Y: J.T @ Y,
                    shape=self.shape,
                    dtype=self.dtype,
                    xp=self.xp,
                ),
            )
        return self._check(self.jac(x, *self.args, **self.kwargs), "jac(x)")

    def _check(self, J: Any, what: str) -> tuple[Any, Array | None, LinearOperator]:
        if sparse_library(J) is not None:
            sparse = SparseOperator(J, what)
            check_vector_library(sparse, self.xp, what)
            self._check_shape_dtype(sparse, what)
            return J, None, sparse
        if isinstance(J, LinearOperator):
            self._check_shape_dtype(J, what)
            if isinstance(J, SparseOperator):
                check_vector_library(J, self.xp, what)
            return J, (J.to_dense() if J.is_materialized else None), J
        if not _dispatch.is_array(J):
            raise TypeError(
                f"{what} must be an array, a sparse matrix or a LinearOperator, got "
                f"{type(J).__name__}"
            )
        self._check_shape_dtype(J, what)
        op = FunctionOperator(
            lambda X: J @ X, lambda Y: J.T @ Y, shape=self.shape, dtype=self.dtype, xp=self.xp
        )
        return J, J, op

    def _check_shape_dtype(self, J: Any, what: str) -> None:
        if tuple(J.shape) != self.shape:
            raise ValueError(
                f"{what} has shape {tuple(J.shape)}, expected (m, n) = {self.shape} (m "
                "residuals, n variables)"
            )
        if J.dtype != self.dtype:
            raise TypeError(f"{what} has dtype {J.dtype}, x0 has dtype {self.dtype}")


def weigh_jacobian(
    xp: Any, terms: LossTerms | None, J_user: Any, Jd: Array | None, J_op: LinearOperator
) -> tuple[Any, Array | None, LinearOperator]:
    """The Jacobian for the result, as an array (or None) and as an operator, with its rows
    weighted by a robust loss, ``J_w = diag(w) J`` (unchanged for the linear loss).

    The result's Jacobian keeps the type that ``jac`` gave (an array, a sparse matrix, in
    CSR form, or an operator).
    """
    if terms is None:
        return J_user, Jd, J_op
    if isinstance(J_op, SparseOperator):
        weighted = J_op.scale(rows=terms.w)
        return (weighted if isinstance(J_user, LinearOperator) else weighted.matrix), None, weighted
    w = terms.w[:, None]
    if Jd is not None:
        Jw = w * Jd
        op = FunctionOperator(
            lambda X: Jw @ X, lambda Y: Jw.T @ Y, shape=J_op.shape, dtype=J_op.dtype, xp=xp
        )
        return (aslinearoperator(Jw) if isinstance(J_user, LinearOperator) else Jw), Jw, op
    op = FunctionOperator(
        lambda X: w * J_op.matmat(X),
        lambda Y: J_op.rmatmat(w * Y),
        shape=J_op.shape,
        dtype=J_op.dtype,
        xp=xp,
        device=J_op.device,
    )
    return op, None, op
