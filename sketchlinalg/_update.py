"""A plain natural-gradient update of parameters held as arrays of any array library."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import array_api_compat as _compat

from . import _dispatch
from ._dispatch import backend_name as target_name
from ._operator import as_operator
from ._step import StepEngine, StepInfo
from ._validation import check_finite

__all__ = ["StepResult", "natural_gradient_step"]

Array = Any


class StepResult(NamedTuple):
    """What :func:`natural_gradient_step` returns.

    Attributes
    ----------
    params : array, list, tuple or dict of arrays
        The updated parameters, in the structure they were given (the same objects when
        ``inplace=True``); unchanged when the step was not taken.
    direction : array of shape (P,)
        The flat direction ``d``; the step was ``-learning_rate * d``.
    info : sketchlinalg.StepInfo
        What the core's step did (``info.status``; ``info.direction`` is the solver's
        :class:`sketchlinalg.DirectionInfo`).
    """

    params: Any
    direction: Array
    info: StepInfo


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


@_dispatch.in_full_float32
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
    r"""One natural-gradient step ``theta <- theta - eta d`` for parameters held as arrays.

    The core's :class:`StepEngine` without a line search
    (``eta = learning_rate``), on any array library (on CuPy: native sketch, cuSOLVER
    factorizations, no host round trip). The
    columns of ``J`` follow the parameters flattened in row-major order and concatenated in
    the order given. Its non-finite policy holds: if ``J``, ``r`` or ``d`` holds NaN/Inf the
    parameters are left unchanged, ``info.status`` is ``NONFINITE`` and a
    :class:`sketchlinalg.StepWarning` says so.

    Parameters
    ----------
    params : array, or a list, tuple or dict of arrays
        The parameters, all of ``J``'s dtype and library (any array-API library works the
        same way; ``inplace=True`` needs mutable arrays: CuPy, NumPy, PyTorch).
    J : LinearOperator or array
        Residual Jacobian ``(N, P)`` (``sketchlinalg_cupy.aslinearoperator`` turns sparse
        matrices and cupyx operators into one; :class:`DLPackOperator` serves a PyTorch or
        JAX Jacobian on the GPU).
    r : array of shape (N,)
        Residual.
    damping : float
        ``mu >= 0``.
    learning_rate : float
        ``eta >= 0``.
    inplace : bool
        Update the given arrays in place (saves one copy of the parameters, which
        matters at a million parameters) instead of returning new ones.
    **options
        ``method`` (default ``"auto"``; ``"nystrom"`` for SNGD), ``seed``, and the method's
        own options (``rank``, ``inverse``, ...; :func:`sketchlinalg.make_solver`).

    Returns
    -------
    StepResult
        ``(params, direction, info)``.

    Raises
    ------
    TypeError, ValueError
        Bad parameters (naming the entry), a Jacobian whose width is not the number of
        parameter entries, a negative learning rate.

    Examples
    --------
    >>> import numpy as np
    >>> from sketchlinalg import natural_gradient_step
    >>> J, r = np.eye(3), np.array([1.0, 2.0, 3.0])
    >>> out = natural_gradient_step([np.zeros(2), np.zeros(1)], J, r, damping=0.0,
    ...                             method="dense")
    >>> [p.tolist() for p in out.params]
    [[-1.0, -2.0], [-3.0]]
    """
    where = "natural_gradient_step"
    arrays, keys = _leaves(params, where)
    J = as_operator(J, "J")
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
        check_finite(xp, a, f"{where}: {label}", "the parameters must be finite to be updated")
    sizes = [math.prod(int(s) for s in a.shape) for a in arrays]
    if sum(sizes) != J.shape[1]:
        raise ValueError(
            f"{where}: params hold {sum(sizes)} entries (sizes {sizes}) but J of shape "
            f"{J.shape} has {J.shape[1]} columns; they must be equal"
        )
    if inplace and backend == "jax":
        raise TypeError(f"{where}: inplace=True needs mutable arrays; JAX arrays are immutable")
    seed = options.pop("seed", 0)
    method = options.pop("method", "auto")
    engine = StepEngine.from_options(
        method, damping=damping, line_search=None, learning_rate=learning_rate, **options
    )
    state = engine.init(xp.zeros((J.shape[1],), dtype=J.dtype, device=J.device))
    update, new, info = engine.step(J, r, state, seed=seed)
    new_arrays = []
    offset = 0
    for a, size in zip(arrays, sizes, strict=True):
        piece = xp.reshape(update[offset : offset + size], tuple(a.shape))
        offset += size
        if inplace:
            a += piece
            new_arrays.append(a)
        else:
            new_arrays.append(a + piece)
    out: Any
    if keys is None:
        out = new_arrays[0]
    elif isinstance(params, Mapping):
        out = dict(zip(keys, new_arrays, strict=True))
    else:
        out = tuple(new_arrays) if isinstance(params, tuple) else new_arrays
    return StepResult(out, new.previous, info)
