"""sketchlinalg: randomized linear algebra for natural-gradient and Gauss–Newton steps.

The core is written against the Python array API standard (through array-api-compat), so
the same code runs on NumPy, PyTorch, JAX, CuPy and array-api-strict arrays. It never
imports a framework itself.

Operators
    :class:`LinearOperator`, :class:`FunctionOperator`, :func:`aslinearoperator`,
    :func:`gram` (``J^T W J``), :func:`kernel` (``J W J^T``).
Randomness
    :class:`Sampler`, :class:`DefaultSampler`, :class:`PortableSampler`,
    :func:`as_sampler`, :func:`sketch_matrix`.
Low-rank approximation
    :func:`nystrom`, :class:`LowRankPSD`, :func:`estimate_error`,
    :func:`adaptive_nystrom`.
Solvers and directions
    :func:`pcg`, :func:`nystrom_preconditioner`, :func:`natural_gradient_direction`,
    :func:`spring_direction`, :func:`choose_method`.
Memory
    :func:`estimate_memory`, :func:`memory_plan`, :class:`MemoryEstimate`: peak bytes of
    each direction method and Jacobian path, the model behind ``auto``'s memory check.
Nonlinear least squares
    :func:`least_squares` (scipy-compatible Levenberg–Marquardt around the directions),
    :class:`LeastSquaresResult`.
"""

from ._adaptive import AdaptiveNystromResult, adaptive_nystrom
from ._direction import (
    METHODS,
    DirectionInfo,
    choose_method,
    natural_gradient_direction,
    spring_direction,
)
from ._estimate import estimate_error
from ._least_squares import LeastSquaresResult, least_squares
from ._lowrank import LowRankPSD
from ._memory import JACOBIAN_PATHS, MEMORY_METHODS, MemoryEstimate, estimate_memory, memory_plan
from ._nystrom import nystrom
from ._operator import FunctionOperator, LinearOperator, aslinearoperator, gram, kernel
from ._pcg import PCGResult, pcg
from ._preconditioner import nystrom_preconditioner
from ._random import DefaultSampler, PortableSampler, Sampler, as_sampler
from ._sketch import SKETCH_KINDS, sketch_matrix

__version__ = "0.1.0"

__all__ = [
    "JACOBIAN_PATHS",
    "MEMORY_METHODS",
    "METHODS",
    "SKETCH_KINDS",
    "AdaptiveNystromResult",
    "DefaultSampler",
    "DirectionInfo",
    "FunctionOperator",
    "LeastSquaresResult",
    "LinearOperator",
    "LowRankPSD",
    "MemoryEstimate",
    "PCGResult",
    "PortableSampler",
    "Sampler",
    "adaptive_nystrom",
    "as_sampler",
    "aslinearoperator",
    "choose_method",
    "estimate_error",
    "estimate_memory",
    "gram",
    "kernel",
    "least_squares",
    "memory_plan",
    "natural_gradient_direction",
    "nystrom",
    "nystrom_preconditioner",
    "pcg",
    "sketch_matrix",
    "spring_direction",
]
