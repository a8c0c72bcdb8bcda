"""One progress line for a natural-gradient run, the same in every framework."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._status import Status

__all__ = ["step_summary"]

#: What a summary shows, in order: the state field and its label.
_FIELDS = (("loss", "loss"), ("step_size", "eta"), ("damping", "mu"), ("rank", "rank"))


def _field(state: Any, name: str) -> Any:
    if isinstance(state, Mapping):  # a torch optimizer's state: "step" for "steps"
        return state["step" if name == "steps" and "step" in state else name]
    return getattr(state, name)


def step_summary(state: Any) -> str:
    """The state of a natural-gradient run as one line a person can read.

    ``loss`` (``1/2 ||r||^2`` before the last step), ``eta`` (its step size, ``0`` when it
    was not taken), ``mu`` (the damping for the next step), ``rank`` (the sketch size for
    the next step, sketched methods only), ``skipped`` (steps not taken because of NaN/Inf
    so far) and the last step's status in words. Examples and training loops print it
    with the step, the time and the last evaluated error.

    Parameters
    ----------
    state : StepState, sketchlinalg_jax.NGDState, torch optimizer or mapping
        The core's :class:`StepState`, a JAX optimizer's state, a
        ``sketchlinalg_torch`` optimizer (or its ``opt.state[param]``): any object with the
        :class:`StepState` fields as attributes or keys. Array fields are read on the host
        (call it outside ``jax.jit``).

    Returns
    -------
    str

    Examples
    --------
    >>> import numpy as np
    >>> import sketchlinalg as sl
    >>> engine = sl.StepEngine(sl.Dense())
    >>> A, y = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), np.array([1.0, 2.0, 3.0])
    >>> theta = np.zeros(2)
    >>> state = engine.init(theta)
    >>> def trial_loss(etas, d):
    ...     return np.array([0.5 * np.sum((A @ (theta - t * d) - y) ** 2) for t in etas])
    >>> update, state, _ = engine.step(A, A @ theta - y, state, trial_loss=trial_loss)
    >>> sl.step_summary(state)
    'loss 7.000e+00  eta 1.0e+00  mu 5.3e-04  skipped 0  success'
    """
    groups = getattr(state, "param_groups", None)
    if groups is not None:  # a torch.optim.Optimizer: the state it keeps at its first tensor
        state = state.state[groups[0]["params"][0]]
    parts = []
    for name, label in _FIELDS:
        value = float(_field(state, name))
        if name == "rank":
            if value > 0:
                parts.append(f"{label} {int(value)}")
        elif name == "loss":
            parts.append(f"{label} {value:.3e}")
        else:
            parts.append(f"{label} {value:.1e}")
    parts.append(f"skipped {int(_field(state, 'skipped'))}")
    parts.append(Status(int(_field(state, "status"))).name.lower().replace("_", " "))
    return "  ".join(parts)
