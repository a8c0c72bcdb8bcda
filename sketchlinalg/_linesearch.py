"""Step sizes along a direction: ENGD's grid and Armijo backtracking, written once.

Both work on a *trial-loss* callback ``trial_loss(etas) -> losses``: the loss at
``theta - eta_k d`` for a 1-D array of step sizes. The adapters build it from a residual
function (a batched pass, ``vmap`` over the step sizes, in JAX and PyTorch), so the search
itself is array-API code that traces under ``jax.jit``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

from . import _dispatch
from ._status import Status
from ._validation import check_float_dtype, check_int, check_nonnegative

__all__ = ["LINE_SEARCHES", "LineSearchResult", "armijo_line_search", "grid_line_search"]

Array = Any
TrialLoss = Callable[[Array], Array]

#: The line searches of the step engine (``None``: a fixed step size).
LINE_SEARCHES = ("grid", "armijo", None)


class LineSearchResult(NamedTuple):
    """What a line search found.

    Attributes
    ----------
    step_size : array
        ``eta`` (0-d); ``0`` when no candidate lowered the loss.
    loss : array
        The loss at the accepted point (``loss0`` when none was accepted).
    status : Status or int32 array
        ``SUCCESS``, ``NO_DECREASE`` (no candidate below ``loss0``, or not a descent
        direction) or ``NONFINITE`` (``loss0`` is not finite).
    evaluations : int or array
        Trial losses evaluated.
    first_loss : array
        The loss at the first candidate evaluated (``eta = 1`` unless the grid starts
        lower; ``eta0`` for Armijo): how well the quadratic model predicts that step (the
        gain ratio of an adaptive damping without a line search).
    """

    step_size: Array
    loss: Array
    status: Any
    evaluations: Any
    first_loss: Any = None


def _status(xp: Any, ok: Any, finite0: Any) -> Any:
    if _dispatch.is_tracing(ok, finite0):
        code = xp.where(ok, xp.asarray(0, dtype=xp.int32), xp.asarray(6, dtype=xp.int32))
        return xp.where(finite0, code, xp.asarray(3, dtype=xp.int32))
    if not bool(finite0):
        return Status.NONFINITE
    return Status.SUCCESS if bool(ok) else Status.NO_DECREASE


def grid_line_search(
    trial_loss: TrialLoss,
    loss0: Array,
    *,
    num: int = 31,
    batch: int | None = None,
    start: Any = 0,
) -> LineSearchResult:
    """ENGD's grid line search: the best of ``eta = 2^0, 2^-1, ..., 2^-(num-1)``.

    With ``batch=None`` ``trial_loss`` evaluates all ``num`` candidates in one call (the
    adapters batch it). With ``batch = b`` the candidates are evaluated ``b`` per call from
    ``eta = 2^-start`` down, and the search stops once the minimum is bracketed: a
    candidate is below ``loss0`` and a smaller step size was already worse than it. When
    the best candidate is the first one (``start > 0``) the search then goes up (``2^-(start
    - 1)``, ...) until a larger step is worse or ``eta = 1`` is reached. Along a ray
    ``theta - eta d`` of a descent direction the loss falls from ``loss0`` as ``eta``
    grows from 0, reaches its minimum and then rises; for such a (unimodal) loss the
    early stop returns exactly the full grid's choice, and a step of ``2^-k`` costs
    ``|k - start| + 2`` evaluations (``+ 1`` going up) instead of ``num`` (a second, lower
    dip is missed, as any local search would: a warm start at the previous step's size,
    ``StepEngine(grid_warm_start=True)``, costs about three evaluations where step sizes
    change slowly, but a dip at larger steps than the start can hold it at small ones).
    Non-finite losses never win, and the step is only taken when the
    best candidate is *below* ``loss0``: an uphill step is never accepted (then ``eta = 0``
    and the status is ``NO_DECREASE``).

    Parameters
    ----------
    trial_loss : callable
        ``etas (k,) -> losses (k,)``: the loss at ``theta - eta d`` for each ``eta``
        (``k = num`` with ``batch=None``, else ``k = batch``).
    loss0 : 0-d array
        The loss at ``theta``; its dtype and namespace are those of the search.
    num : int
        Grid points.
    batch : int, optional
        Candidates per call of ``trial_loss`` with the early stop; ``None``: the whole
        grid in one call. One is cheapest where an evaluation's cost grows with the batch
        (CPUs); on a GPU a batch of several costs about one evaluation.
    start : int or 0-d integer array
        The grid index ``k`` of the first candidate, ``eta = 2^-k`` (clipped to ``[0, num
        - 1]``; a traced array under ``jax.jit``); only with ``batch``.

    Returns
    -------
    LineSearchResult

    References
    ----------
    Mueller, Zeinhofer. Achieving high accuracy with PINNs via energy natural gradient
    descent. ICML 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from sketchlinalg import grid_line_search
    >>> res = grid_line_search(lambda etas: (1.0 - etas - 0.4) ** 2, np.asarray(0.36))
    >>> float(res.step_size), res.status.name
    (0.5, 'SUCCESS')
    >>> res = grid_line_search(lambda etas: (1.0 - etas - 0.4) ** 2, np.asarray(0.36), batch=1)
    >>> float(res.step_size), int(res.evaluations)  # eta = 1, 1/2, 1/4: bracketed
    (0.5, 3)
    >>> res = grid_line_search(
    ...     lambda etas: (1.0 - etas - 0.4) ** 2, np.asarray(0.36), batch=1, start=3
    ... )
    >>> float(res.step_size), int(res.evaluations)  # 1/8, 1/16, then up: 1/4, 1/2, 1
    (0.5, 5)
    """
    num = check_int(num, "num", low=1)
    xp = _check_search(trial_loss, loss0, "grid_line_search")
    device = _dispatch.device_of(loss0)
    if batch is None:
        etas = 0.5 ** xp.arange(num, dtype=loss0.dtype, device=device)
        losses = _finite(xp, _call(trial_loss, etas, num))
        best = xp.argmin(losses)
        best_loss = xp.take(losses, xp.reshape(best, (1,)))[0]
        best_eta = xp.take(etas, xp.reshape(best, (1,)))[0]
        return _grid_result(xp, loss0, best_eta, best_loss, num, losses[0])
    batch = check_int(batch, "batch", low=1)
    start = _checked_start(start)
    if _dispatch.is_tracing(loss0, start):
        return _traced_search(xp, trial_loss, loss0, num, batch, start, device)
    return _eager_search(xp, trial_loss, loss0, num, batch, start, device)


# The early-stopping grid's rule, written once over scalars: 0-d arrays under tracing
# (``select`` is ``xp.where``, ``invert`` is ``~``) or Python numbers eagerly, where a
# 0-d array per bookkeeping operation cost about as much as a residual evaluation of a
# small PINN (45 array operations an iteration; Python scalars need one host transfer of
# the batch's losses, the synchronization the loop's test makes anyway). The state is
# ``(down, up, best_loss, best_index, first, count, down_done, up_done)``: the next index
# downward and upward, the best candidate so far, the first loss evaluated, the count.


def _phases(
    s: tuple[Any, ...], loss0: Any, num: int, invert: Callable[[Any], Any]
) -> tuple[Any, Any]:
    """Whether the downward and the upward search are done."""
    down, up, best_loss, best_index = s[:4]
    below = best_loss < loss0
    # bracketed below: a smaller step than the best was evaluated (and was worse)
    down_done = (down >= num) | (below & (best_index < down - 1))
    # bracketed above: the best is not the largest step evaluated, or that is eta = 1
    up_done = invert(below) | (up < 0) | (best_index > up + 1)
    return down_done, up_done


def _grid_loop(
    xp: Any,
    candidates: Callable[[Any, Any, Any], tuple[Any, Any, Any, Any]],
    init: tuple[Any, ...],
    loss0: Any,
    num: int,
    batch: int,
    select: Callable[[Any, Any, Any], Any],
    invert: Callable[[Any], Any],
) -> tuple[Any, ...]:
    """Run the search from ``init`` (``(start, start - 1, inf, start, inf, 0)``);
    ``candidates(going_up, down, up) -> (loss, index, first loss, evaluated)`` evaluates
    the next batch: its best candidate (the larger step of a tie; non-finite or outside
    the grid: ``inf``), the batch's first loss and how many of it were on the grid."""

    def cond(s: tuple[Any, ...]) -> Any:
        return invert(s[6] & s[7])

    def body(s: tuple[Any, ...]) -> tuple[Any, ...]:
        down, up, best_loss, best_index, first, count, going_up, _ = s
        new_loss, new_index, first_loss, evaluated = candidates(going_up, down, up)
        # ties keep the larger step: a later downward candidate must be strictly lower,
        # an upward one as low (new_loss is inf where not finite)
        better = select(going_up, new_loss <= best_loss, new_loss < best_loss)
        better = better & (new_loss < float("inf"))
        new = (
            select(going_up, down, down + batch),
            select(going_up, up - batch, up),
            select(better, new_loss, best_loss),
            select(better, new_index, best_index),
            select(count == 0, first_loss, first),
            count + evaluated,
        )
        return (*new, *_phases(new, loss0, num, invert))  # once per iteration

    state = (*init, *_phases(init, loss0, num, invert))
    return _dispatch.while_loop(xp, cond, body, state)


def _traced_search(
    xp: Any, trial_loss: TrialLoss, loss0: Array, num: int, batch: int, start: Any, device: Any
) -> LineSearchResult:
    """The early-stopping grid as a ``while_loop`` over 0-d arrays (``jax.jit``)."""
    start = _start_index(xp, start, num, device)
    offsets = xp.arange(batch, dtype=xp.int32, device=device)

    def candidates(going_up: Any, down: Any, up: Any) -> tuple[Any, Any, Any, Any]:
        # downward: down, down + 1, ...; upward: up - batch + 1, ..., up (ascending, so
        # that argmin's tie-break keeps the larger step, as the full grid's does)
        index = xp.where(going_up, up - batch + 1 + offsets, down + offsets)
        valid = (index >= 0) & (index < num) & (~going_up | (index <= up))
        safe = xp.where(valid, index, xp.zeros_like(index))
        etas = 0.5 ** xp.astype(safe, loss0.dtype)
        losses = xp.astype(_finite(xp, _call(trial_loss, etas, batch)), loss0.dtype)
        masked = xp.where(valid, losses, xp.full_like(losses, float("inf")))
        k = xp.reshape(xp.argmin(masked), (1,))
        evaluated = xp.astype(xp.sum(xp.astype(valid, xp.int32)), xp.int32)
        return xp.take(masked, k)[0], xp.take(index, k)[0], losses[0], evaluated

    inf = xp.full_like(loss0, float("inf"))
    init = (start, start - 1, inf, start, inf, xp.asarray(0, dtype=xp.int32, device=device))
    out = _grid_loop(xp, candidates, init, loss0, num, batch, xp.where, lambda a: ~a)
    _, _, best_loss, best_index, first, count, _, _ = out
    best_eta = 0.5 ** xp.astype(best_index, loss0.dtype)
    return _grid_result(xp, loss0, best_eta, best_loss, count, first)


def _eager_search(
    xp: Any, trial_loss: TrialLoss, loss0: Array, num: int, batch: int, start: Any, device: Any
) -> LineSearchResult:
    """The early-stopping grid over Python numbers: the same choices as
    :func:`_traced_search` (the losses compared as the same floating-point values)."""
    s = min(max(int(start), 0), num - 1)
    inf = float("inf")

    def candidates(going_up: bool, down: int, up: int) -> tuple[float, int, float, int]:
        index = [up - batch + 1 + o if going_up else down + o for o in range(batch)]
        valid = [0 <= i < num and (not going_up or i <= up) for i in index]
        etas = xp.asarray(
            [0.5 ** (i if ok else 0) for i, ok in zip(index, valid, strict=True)],
            dtype=loss0.dtype,
            device=device,
        )
        out = _call(trial_loss, etas, batch)
        if out.dtype != loss0.dtype:
            out = xp.astype(out, loss0.dtype)
        losses = [v if math.isfinite(v) else inf for v in _dispatch.to_list(out)]
        masked = [v if ok else inf for v, ok in zip(losses, valid, strict=True)]
        k = min(range(batch), key=masked.__getitem__)  # the first of equal minima
        return masked[k], index[k], losses[0], sum(valid)

    def select(c: bool, a: Any, b: Any) -> Any:
        return a if c else b

    def invert(c: bool) -> bool:
        return not c

    init = (s, s - 1, inf, s, inf, 0)
    out = _grid_loop(xp, candidates, init, float(loss0), num, batch, select, invert)
    _, _, best_loss, best_index, first, count, _, _ = out

    def array(v: float) -> Array:
        return xp.asarray(v, dtype=loss0.dtype, device=device)

    return _grid_result(xp, loss0, array(0.5**best_index), array(best_loss), count, array(first))


def _checked_start(start: Any) -> Any:
    """``start`` as given: a 0-d array (traced or not) or an integer ``>= 0``."""
    if _dispatch.is_array(start):
        if getattr(start, "ndim", None) != 0:
            raise ValueError(
                f"grid_line_search: start must be an integer or a 0-d array, got shape "
                f"{tuple(start.shape)}"
            )
        return start
    return check_int(start, "start", low=0)


def _start_index(xp: Any, start: Any, num: int, device: Any) -> Any:
    """A :func:`_checked_start` as a 0-d int32 array in ``[0, num - 1]``."""
    if _dispatch.is_array(start):
        index = xp.astype(start, xp.int32)
    else:
        index = xp.asarray(start, dtype=xp.int32, device=device)
    return xp.minimum(xp.maximum(index, xp.zeros_like(index)), xp.full_like(index, num - 1))


def _call(trial_loss: TrialLoss, etas: Array, k: int) -> Array:
    losses = trial_loss(etas)
    if not _dispatch.is_array(losses) or tuple(losses.shape) != (k,):
        raise ValueError(
            f"grid_line_search: trial_loss must return shape ({k},) for {k} step sizes, "
            f"got {_describe(losses)}"
        )
    return losses


def _finite(xp: Any, losses: Array) -> Array:
    return xp.where(xp.isfinite(losses), losses, xp.full_like(losses, float("inf")))


def _grid_result(
    xp: Any, loss0: Array, eta: Array, loss: Array, evaluations: Any, first: Array
) -> LineSearchResult:
    ok = loss < loss0
    return LineSearchResult(
        xp.where(ok, eta, xp.zeros_like(loss0)),
        xp.where(ok, loss, loss0),
        _status(xp, ok, xp.isfinite(loss0)),
        evaluations,
        first,
    )


def armijo_line_search(
    trial_loss: TrialLoss,
    loss0: Array,
    slope: Array,
    *,
    c: float = 1e-4,
    max_halvings: int = 30,
    eta0: float = 1.0,
) -> LineSearchResult:
    """Backtracking: the first ``eta = eta0 2^-j`` with ``L(eta) <= loss0 - c eta slope``.

    ``slope = g^T d`` is the directional derivative along ``-d`` (with a minus sign);
    ``slope <= 0`` means ``-d`` is not a descent direction, and then no step is taken.
    One candidate per call of ``trial_loss`` (a loop that compiles once under ``jax.jit``).

    Parameters
    ----------
    trial_loss : callable
        ``etas (1,) -> losses (1,)``.
    loss0 : 0-d array
    slope : 0-d array or float
    c : float
        Sufficient-decrease constant in ``(0, 1)``.
    max_halvings : int
        Candidates tried after ``eta0``.
    eta0 : float
        First step size, ``> 0``.

    Returns
    -------
    LineSearchResult

    Examples
    --------
    >>> import numpy as np
    >>> from sketchlinalg import armijo_line_search
    >>> res = armijo_line_search(lambda e: (1.0 - 4.0 * e) ** 2, np.asarray(1.0), 8.0)
    >>> float(res.step_size), int(res.evaluations)  # eta = 1 and 1/2 fail, 1/4 is exact
    (0.25, 3)
    """
    c = check_nonnegative(c, "c", strict=True)
    if not c < 1:
        raise ValueError(f"c must be in (0, 1), got {c}")
    max_halvings = check_int(max_halvings, "max_halvings", low=0)
    eta0 = check_nonnegative(eta0, "eta0", strict=True)
    xp = _check_search(trial_loss, loss0, "armijo_line_search")
    zero = xp.zeros_like(loss0)
    if _dispatch.is_array(slope):
        if getattr(slope, "ndim", None) != 0:
            raise ValueError(
                f"armijo_line_search: slope must be a scalar, got shape {tuple(slope.shape)}"
            )
    elif isinstance(slope, numbers.Real) and not isinstance(slope, bool):
        slope = xp.asarray(float(slope), dtype=loss0.dtype)
    else:
        raise TypeError(
            f"armijo_line_search: slope must be a real number or a 0-d array, got "
            f"{type(slope).__name__}"
        )

    def loss_at(eta: Array) -> Array:
        out = trial_loss(xp.reshape(eta, (1,)))
        if not _dispatch.is_array(out) or tuple(out.shape) != (1,):
            raise ValueError(
                f"armijo_line_search: trial_loss must return shape (1,) for one step size, "
                f"got {_describe(out)}"
            )
        return out[0]

    def accepted(eta: Array, new: Array) -> Array:
        return xp.isfinite(new) & (new <= loss0 - c * eta * slope) & (new < loss0)

    def cond(s: tuple[Any, ...]) -> Any:
        j, eta, new = s
        return (j < max_halvings) & ~accepted(eta, new)

    def body(s: tuple[Any, ...]) -> tuple[Any, ...]:
        j, eta, _ = s
        eta = eta / 2
        return j + 1, eta, loss_at(eta)

    eta_start = zero + eta0
    first = loss_at(eta_start)
    j, eta, new = _dispatch.while_loop(xp, cond, body, (xp.asarray(0), eta_start, first))
    ok = (slope > 0) & accepted(eta, new)
    return LineSearchResult(
        xp.where(ok, eta, zero),
        xp.where(ok, new, loss0),
        _status(xp, ok, xp.isfinite(loss0)),
        j + 1,
        first,
    )


def _check_search(trial_loss: Any, loss0: Any, where: str) -> Any:
    """The namespace of a line search's ``loss0`` (a 0-d real floating array)."""
    if not callable(trial_loss):
        raise TypeError(f"{where}: trial_loss must be callable, got {type(trial_loss).__name__}")
    if not _dispatch.is_array(loss0) or getattr(loss0, "ndim", None) != 0:
        raise TypeError(
            f"{where}: loss0 must be a 0-d array (its dtype and namespace are the search's), "
            f"got {_describe(loss0)}"
        )
    xp = _dispatch.namespace(loss0)
    check_float_dtype(xp, loss0.dtype, f"{where}: loss0's dtype")
    return xp


def _describe(value: Any) -> str:
    if _dispatch.is_array(value):
        return f"an array of shape {tuple(value.shape)}"
    return type(value).__name__
