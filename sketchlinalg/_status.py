"""One vocabulary for what happened: the status codes and the method names.

Every solver and step of the library reports its outcome as a :class:`Status`: ``pcg``
(per column), the direction solvers, the natural-gradient step engine, and
:func:`least_squares` (which also gives scipy's integer ``status`` at its boundary). Under
``jax.jit`` a status is an ``int32`` array holding one of these values, so it can be
compared with the members directly (``info.status == Status.NONFINITE``).

The method names (:class:`Method`) are defined here once and used by the core, both
adapters and the benchmarks.
"""

from __future__ import annotations

import enum

__all__ = ["Method", "Status", "status_message"]


class Status(enum.IntEnum):
    """Outcome of a solve or a step (lineax's ``RESULTS``, in our words).

    ========================== ==========================================================
    member                     meaning
    ========================== ==========================================================
    ``SUCCESS`` (0)            solved / step taken
    ``MAX_ITERATIONS`` (1)     an iteration or evaluation cap was hit first
    ``INDEFINITE`` (2)         CG met non-positive curvature: the operator is not PSD
    ``NONFINITE`` (3)          NaN or Inf in the data (Jacobian, residual) or the result
    ``BAD_PRECONDITIONER`` (4) the preconditioner is not positive definite
    ``INACCURATE`` (5)         the tolerance was met by the recurrence, not by the true
                               residual (rounding limits the attainable accuracy)
    ``NO_DECREASE`` (6)        no trial step lowered the loss: the step was not taken
    ``STALLED`` (7)            the loss has not improved for a window of steps
    ``DIVERGED`` (8)           the loss rose far above its best value
    ========================== ==========================================================
    """

    SUCCESS = 0
    MAX_ITERATIONS = 1
    INDEFINITE = 2
    NONFINITE = 3
    BAD_PRECONDITIONER = 4
    INACCURATE = 5
    NO_DECREASE = 6
    STALLED = 7
    DIVERGED = 8


_MESSAGES = {
    Status.SUCCESS: "success",
    Status.MAX_ITERATIONS: "the iteration cap was reached before the tolerance",
    Status.INDEFINITE: "non-positive curvature: the operator is not positive definite",
    Status.NONFINITE: (
        "NaN or Inf in the Jacobian, the residual or the result; the step was not taken "
        "(check the model and the points for overflow, log/sqrt of negative numbers)"
    ),
    Status.BAD_PRECONDITIONER: "the preconditioner is not positive definite",
    Status.INACCURATE: "rounding kept the true residual above the tolerance",
    Status.NO_DECREASE: (
        "no trial step lowered the loss; the step was not taken (raise the damping, or "
        "the rank of a sketched method)"
    ),
    Status.STALLED: "the loss has stopped improving",
    Status.DIVERGED: "the loss rose far above its best value",
}


def status_message(status: int | Status) -> str:
    """A sentence for a status code (for a concrete code: eager code, or after ``jit``).

    Examples
    --------
    >>> from sketchlinalg import Status, status_message
    >>> status_message(Status.NONFINITE).split(";")[0]
    'NaN or Inf in the Jacobian, the residual or the result'
    """
    return _MESSAGES[Status(int(status))]


class Method(str, enum.Enum):
    """Names of the direction methods (each one is a solver class, :mod:`sketchlinalg`).

    The members are strings (``Method.NYSTROM == "nystrom"``), so either spelling works
    wherever a method is named.
    """

    AUTO = "auto"
    DENSE = "dense"
    WOODBURY = "woodbury"
    NYSTROM = "nystrom"
    NYSTROM_PCG = "nystrom-pcg"
    KERNEL_NYSTROM = "kernel-nystrom"
    SVD = "svd"

    def __str__(self) -> str:
        return self.value
