"""A plain natural-gradient update of parameters held as CuPy arrays."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import array_api_compat as _compat

import sketchlinalg as sl

from ._dlpack import target_name
from ._operators import aslinearoperator

__all__ = ["StepResult", "natural_gradient_step"]

Array = Any


class StepResult(NamedTuple):
    """What :func:`natural_gradient_step` returns.

    Attributes
    ----------
    params : array, list, tuple or dict of arrays
        The updated parameters, in the structure they were given (the same objects when
        ``inplace=True``).
    direction : array of shape (P,)
        The flat direction ``d``; the step was ``-learning_rate * d``.
    info : sketchlinalg.DirectionInfo
        What :func:`sketchlinalg.natural_gradient_direction` did.
    """

    params: Any
    direction: Array
    info: sl.DirectionInfo


def _leaves(params: Any, where: str) -> tuple[list[Any], list[Any] | None]:
    """The arrays of ``params`` in order, and their keys (``None`` for a single array)."""
    if _compat.is_array_api_obj(params):
        return [params], None
    if isinstance(params, Mapping):
        keys = list(params)
        arrays = [params[k] for k in keys]
    elif isinstance(params, Sequence) and not isinstance(params, str):
        keys = list(range(len(params)))
        arrays = list(params)
    else:
        raise TypeError(
            f"{where}: params must be an array, a list/tuple of arrays or a dict of arrays, "
            f"got {type(params).__name__}"
        )
    if not arrays:
        raise ValueError(f"{where}: params is empty (expected at least one array)")
    for k, a in zip(keys, arrays, strict=True):
        if not _compat.is_array_api_obj(a):
            raise TypeError(f"{where}: params[{k!r}] must be an array, got {type(a).__name__}")
    return arrays, keys


def natural_gradient_step(
    params: Any,
    J: Any,
    r: Array,
    *,
    damping: float,
    learning_rate: float = 1.0,
    inplace: bool = False,
    **options: Any,
) -> StepResult:
    r"""One natural-gradient step ``theta <- theta - eta d`` for CuPy parameter arrays.

    ``d ~ (J^T J + mu I)^{-1} J^T r`` comes from :func:`sketchlinalg.natural_gradient_direction`
    (run on CuPy: native sketch, cuSOLVER factorizations); the columns of ``J`` follow the
    parameters flattened in row-major order and concatenated in the order given. No line
    search: ``eta = learning_rate``.

    Parameters
    ----------
    params : cupy.ndarray, or a list, tuple or dict of them
        The parameters, all of ``J``'s dtype and library (any array-API library works the
        same way; ``inplace=True`` needs mutable arrays: CuPy, NumPy, PyTorch).
    J : LinearOperator, array, sparse matrix or cupyx LinearOperator
        Residual Jacobian ``(N, P)`` (anything :func:`aslinearoperator` takes; use
        :func:`dlpack_operator` for a PyTorch or JAX Jacobian on the GPU).
    r : array of shape (N,)
        Residual.
    damping : float
        ``mu >= 0``.
    learning_rate : float
        ``eta > 0``.
    inplace : bool
        Update the given arrays in place (saves one copy of the parameters, which
        matters at a million parameters) instead of returning new ones.
    **options
        Passed to :func:`sketchlinalg.natural_gradient_direction`: ``method`` (e.g.
        ``"nystrom"`` for SNGD), ``rank``, ``seed``, ``inverse``, ...

    Returns
    -------
    StepResult
        ``(params, direction, info)``.

    Raises
    ------
    TypeError, ValueError
        Bad parameters (naming the entry), a Jacobian whose width is not the number of
        parameter entries, a non-positive learning rate.
    FloatingPointError
        The direction is not finite; the parameters are left unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> from sketchlinalg_cupy import natural_gradient_step
    >>> J, r = np.eye(3), np.array([1.0, 2.0, 3.0])
    >>> out = natural_gradient_step([np.zeros(2), np.zeros(1)], J, r, damping=0.0,
    ...                             method="dense")
    >>> [p.tolist() for p in out.params]
    [[-1.0, -2.0], [-3.0]]
    """
    where = "natural_gradient_step"
    arrays, keys = _leaves(params, where)
    J = aslinearoperator(J)
    xp = J.xp
    backend = target_name(xp)
    for k, a in zip(keys or [None], arrays, strict=True):
        label = "params" if k is None else f"params[{k!r}]"
        got = target_name(_compat.array_namespace(a))
        if got != backend:
            raise TypeError(
                f"{where}: {label} is a {got} array but J's products are {backend} arrays; "
                "convert one of them (from_torch / from_jax / to_torch / to_jax)"
            )
        if a.dtype != J.dtype:
            raise TypeError(f"{where}: {label} has dtype {a.dtype}, J has {J.dtype}")
    sizes = [math.prod(int(s) for s in a.shape) for a in arrays]
    if sum(sizes) != J.shape[1]:
        raise ValueError(
            f"{where}: params hold {sum(sizes)} entries (sizes {sizes}) but J of shape "
            f"{J.shape} has {J.shape[1]} columns; they must be equal"
        )
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, (int, float))
        or not (math.isfinite(learning_rate) and learning_rate > 0)
    ):
        raise ValueError(
            f"{where}: learning_rate must be a finite float > 0, got {learning_rate!r}"
        )
    if inplace and backend == "jax":
        raise TypeError(f"{where}: inplace=True needs mutable arrays; JAX arrays are immutable")

    d, info = sl.natural_gradient_direction(J, r, damping=damping, **options)
    if not bool(xp.all(xp.isfinite(d))):
        raise FloatingPointError(
            f"{where}: the direction is not finite ({info.message}); the parameters are "
            "unchanged: increase damping"
        )
    new = []
    offset = 0
    for a, size in zip(arrays, sizes, strict=True):
        piece = xp.reshape(d[offset : offset + size], tuple(a.shape))
        offset += size
        if inplace:
            a -= learning_rate * piece
            new.append(a)
        else:
            new.append(a - learning_rate * piece)
    out: Any
    if keys is None:
        out = new[0]
    elif isinstance(params, Mapping):
        out = dict(zip(keys, new, strict=True))
    else:
        out = tuple(new) if isinstance(params, tuple) else new
    return StepResult(out, d, info)
