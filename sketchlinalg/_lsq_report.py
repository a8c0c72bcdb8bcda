"""What :func:`least_squares` tells while it runs: the ``callback`` protocol and the
``verbose`` output (scipy's layout, with the damping as a last column)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["LeastSquaresIteration", "Reporter", "wrap_callback"]

Array = Any

_COLUMNS = (
    "Iteration",
    "Total nfev",
    "Cost",
    "Cost reduction",
    "Step norm",
    "Optimality",
    "Damping",
)


class LeastSquaresIteration(NamedTuple):
    """The state of :func:`least_squares` after an accepted step, given to ``callback``.

    scipy's ``intermediate_result`` (an ``OptimizeResult`` with ``x``, ``fun``, ``nit``,
    ``nfev``, ``cost``), with the Jacobian and the gradient added.

    Attributes
    ----------
    x : array of shape (n,)
        The current point (a copy: changing it does not change the run).
    cost : float
        ``F(x)``: ``1/2 ||f||^2``, or the robust cost ``C^2/2 sum rho((f/C)^2)``.
    fun : array of shape (m,)
        The residuals ``f(x)`` (not weighted by a robust loss).
    jac : array or LinearOperator of shape (m, n)
        The Jacobian at ``x`` (weighted by a robust loss, like the result's ``jac``).
    grad : array of shape (n,)
        The gradient of the cost.
    optimality : float
        ``||grad||_inf``.
    nfev, njev : int
        Evaluations of ``fun`` and of the Jacobian so far.
    nit : int
        Accepted steps so far.
    """

    x: Array
    cost: float
    fun: Array
    jac: Any
    grad: Array
    optimality: float
    nfev: int
    njev: int
    nit: int


def wrap_callback(callback: Any) -> Callable[[LeastSquaresIteration], bool] | None:
    """``callback`` as a function of the iteration that returns ``True`` to stop.

    scipy's protocol: a callable whose only parameter is named ``intermediate_result``
    receives the :class:`LeastSquaresIteration`; any other receives its ``x`` (a copy).
    Raising ``StopIteration`` stops the run (status ``-2``); the return value is ignored.
    """
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    try:
        names = set(inspect.signature(callback).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: scipy's callback(x)
        names = set()
    full = names == {"intermediate_result"}

    def call(state: LeastSquaresIteration) -> bool:
        try:
            if full:
                callback(intermediate_result=state)
            else:
                callback(state.x)
        except StopIteration:
            return True
        return False

    return call


class Reporter:
    """Prints scipy's ``verbose`` output: 2, a row per accepted step; 1 and 2, a summary."""

    def __init__(self, verbose: int, initial_cost: float) -> None:
        self.verbose = verbose
        self.initial_cost = initial_cost

    def header(self) -> None:
        if self.verbose == 2:
            print("".join(f"{c:^15}" for c in _COLUMNS))

    def row(
        self,
        iteration: int,
        nfev: int,
        cost: float,
        reduction: float | None,
        step_norm: float | None,
        optimality: float,
        damping: float,
    ) -> None:
        if self.verbose != 2:
            return
        blank = " " * 15
        print(
            f"{iteration:^15}{nfev:^15}{cost:^15.4e}"
            + (blank if reduction is None else f"{reduction:^15.2e}")
            + (blank if step_norm is None else f"{step_norm:^15.2e}")
            + f"{optimality:^15.2e}{damping:^15.2e}"
        )

    def summary(self, message: str, nfev: int, cost: float, optimality: float) -> None:
        if self.verbose >= 1:
            print(message)
            print(
                f"Function evaluations {nfev}, initial cost {self.initial_cost:.4e}, final "
                f"cost {cost:.4e}, first-order optimality {optimality:.2e}."
            )
