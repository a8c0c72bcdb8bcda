"""sketchlinalg: randomized linear algebra for natural-gradient and Gauss–Newton steps.

The core is written against the Python array API standard (through array-api-compat), so
the same code runs on NumPy, PyTorch, JAX, CuPy and array-api-strict arrays. It never
imports a framework itself.

Operators
    :class:`LinearOperator`, :class:`FunctionOperator`, :func:`aslinearoperator`,
    :func:`gram` (``J^T W J``), :func:`kernel` (``J W J^T``); :class:`SparseOperator`
    (sparse matrices of :data:`SPARSE_LIBRARIES`: scipy, CuPy, torch).
Randomness
    :class:`Sampler`, :class:`DefaultSampler`, :class:`PortableSampler`,
    :func:`as_sampler`, :func:`sketch_matrix`.
Low-rank approximation
    :func:`nystrom`, :class:`LowRankPSD`, :func:`estimate_error`,
    :func:`adaptive_nystrom`.
Direction solvers (``init`` once, ``solve`` for any damping)
    :class:`Dense`, :class:`Woodbury`, :class:`SVD`, :class:`Nystrom`,
    :class:`KernelNystrom`, :class:`NystromPCG`, :class:`SparseDirect`, :class:`Auto`,
    :func:`make_solver`,
    :func:`choose_method`; the one-call :func:`natural_gradient_direction` and
    :func:`spring_direction`; :func:`pcg`, :func:`nystrom_preconditioner`.
Status vocabulary
    :class:`Status`, :func:`status_message`, :class:`Method`.
The step engine (shared by the JAX and PyTorch optimizers)
    :class:`StepEngine`, :class:`StepState`, :class:`StepInfo`, :class:`StepWarning`,
    :data:`OPTIMIZERS`, :data:`SPRING_MOMENTUM`, :func:`grid_line_search`,
    :func:`armijo_line_search`, :class:`LineSearchResult`; for adapters:
    :func:`check_system`, :func:`forwarded_kwargs`.
Data parallelism (rows of ``J`` split across devices or processes)
    :class:`Collective` (the sum over shards an adapter supplies; the identity on one
    device), :class:`ShardedOperator` (a shard's rows, ``J^T Y`` all-reduced).
PINN systems (the adapters supply per-point kernels)
    :class:`Term`, :class:`PINNSystem`, :class:`JacobianOperator`, :func:`check_terms`,
    :func:`stack_residual`, :func:`build_pinn_system`, :func:`jacobian_path`.
Plain updates and interop
    :func:`natural_gradient_step`, :class:`StepResult` (parameters held as arrays of any
    library); :func:`dlpack_exchange`, :class:`DLPackOperator` (zero-copy DLPack exchange,
    e.g. a PyTorch or JAX Jacobian on the GPU seen from CuPy).
Memory
    :func:`estimate_memory`, :func:`memory_plan`, :class:`MemoryEstimate`,
    :func:`default_budget`: peak bytes of
    each direction method and Jacobian path, the model behind ``auto``'s memory check.
Nonlinear least squares
    :func:`least_squares` (scipy-compatible Levenberg–Marquardt around the directions),
    :class:`LeastSquaresResult`, :class:`LeastSquaresIteration` (what ``callback`` receives).
"""

from ._adaptive import AdaptiveNystromResult, adaptive_nystrom
from ._direction import METHODS, natural_gradient_direction, spring_direction
from ._distributed import Collective, ShardedOperator
from ._estimate import estimate_error
from ._exact import SVD, Dense, Woodbury
from ._interop import DLPackOperator, dlpack_exchange
from ._least_squares import LeastSquaresResult, least_squares
from ._linesearch import LINE_SEARCHES, LineSearchResult, armijo_line_search, grid_line_search
from ._lowrank import LowRankPSD
from ._lsq_report import LeastSquaresIteration
from ._memory import (
    JACOBIAN_PATHS,
    MEMORY_METHODS,
    MemoryEstimate,
    default_budget,
    estimate_memory,
    memory_plan,
)
from ._nystrom import nystrom
from ._operator import FunctionOperator, LinearOperator, aslinearoperator, gram, kernel
from ._pcg import PCGResult, pcg
from ._pinn import (
    PATHS,
    Derivatives,
    JacobianOperator,
    PINNSystem,
    Term,
    build_pinn_system,
    check_terms,
    jacobian_path,
    stack_residual,
)
from ._preconditioner import nystrom_preconditioner
from ._progress import step_summary
from ._random import DefaultSampler, PortableSampler, Sampler, as_sampler
from ._sketch import SKETCH_KINDS, sketch_matrix
from ._sketched import KernelNystrom, Nystrom, NystromPCG
from ._solver_base import DirectionInfo, DirectionSolver
from ._solvers import Auto, choose_method, make_solver
from ._sparse import SPARSE_LIBRARIES, SparseOperator
from ._sparse_direct import SparseDirect
from ._status import Method, Status, status_message
from ._step import (
    OPTIMIZERS,
    SPRING_MOMENTUM,
    StepEngine,
    StepInfo,
    StepState,
    StepWarning,
    check_system,
    forwarded_kwargs,
)
from ._update import StepResult, natural_gradient_step

__version__ = "0.1.0"

__all__ = [
    "JACOBIAN_PATHS",
    "LINE_SEARCHES",
    "MEMORY_METHODS",
    "METHODS",
    "OPTIMIZERS",
    "PATHS",
    "SPARSE_LIBRARIES",
    "SPRING_MOMENTUM",
    "SKETCH_KINDS",
    "SVD",
    "AdaptiveNystromResult",
    "Auto",
    "Collective",
    "DLPackOperator",
    "DefaultSampler",
    "Derivatives",
    "Dense",
    "DirectionInfo",
    "DirectionSolver",
    "FunctionOperator",
    "JacobianOperator",
    "KernelNystrom",
    "LeastSquaresIteration",
    "LeastSquaresResult",
    "LineSearchResult",
    "LinearOperator",
    "LowRankPSD",
    "MemoryEstimate",
    "Method",
    "Nystrom",
    "NystromPCG",
    "PCGResult",
    "PINNSystem",
    "PortableSampler",
    "Sampler",
    "SparseDirect",
    "ShardedOperator",
    "SparseOperator",
    "Status",
    "StepEngine",
    "StepInfo",
    "StepResult",
    "StepState",
    "StepWarning",
    "Term",
    "Woodbury",
    "adaptive_nystrom",
    "armijo_line_search",
    "as_sampler",
    "aslinearoperator",
    "build_pinn_system",
    "check_system",
    "check_terms",
    "choose_method",
    "dlpack_exchange",
    "estimate_error",
    "default_budget",
    "estimate_memory",
    "forwarded_kwargs",
    "gram",
    "grid_line_search",
    "jacobian_path",
    "kernel",
    "least_squares",
    "make_solver",
    "memory_plan",
    "natural_gradient_direction",
    "natural_gradient_step",
    "nystrom",
    "nystrom_preconditioner",
    "pcg",
    "sketch_matrix",
    "spring_direction",
    "stack_residual",
    "status_message",
    "step_summary",
]
