"""A plain natural-gradient update of CuPy parameter arrays (the core's, with this
package's operators)."""

from __future__ import annotations

from typing import Any

import sketchlinalg as sl

from ._operators import aslinearoperator

__all__ = ["StepResult", "natural_gradient_step"]

StepResult = sl.StepResult


def natural_gradient_step(params: Any, J: Any, r: Any, **options: Any) -> sl.StepResult:
    """:func:`sketchlinalg.natural_gradient_step` that also takes ``J`` as a
    ``cupyx.scipy.sparse`` matrix or a cupyx ``LinearOperator`` (:func:`aslinearoperator`).

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
    return sl.natural_gradient_step(params, aslinearoperator(J), r, **options)
