"""sketchlinalg_jax: JAX adapter of sketchlinalg.

Jacobian operators of residual functions of pytrees, the per-point kernels of PINN systems,
differential operators, and natural-gradient optimizers as optax transformations (SNGD,
ENGD, ENGD-Woodbury, Nystrom-PCG, SPRING) over the core's step engine
(:class:`sketchlinalg.StepEngine`). Natural-gradient work wants float64:
``jax.config.update("jax_enable_x64", True)`` before creating arrays; float32 works.
"""

from ._diffops import LAPLACIAN_METHODS, divergence, gradient, laplacian, time_derivative
from ._least_squares import JACOBIAN_MODES, least_squares
from ._operators import JacobianOperator, jacobian_operator
from ._optim import (
    LINE_SEARCHES,
    NGDState,
    engd,
    engd_woodbury,
    natural_gradient,
    nystrom_pcg,
    sngd,
    spring,
)
from ._pinn import PATHS, PINNSystem, Term, pinn_residual, pinn_system

__all__ = [
    "JACOBIAN_MODES",
    "LAPLACIAN_METHODS",
    "LINE_SEARCHES",
    "PATHS",
    "JacobianOperator",
    "NGDState",
    "PINNSystem",
    "Term",
    "divergence",
    "engd",
    "engd_woodbury",
    "gradient",
    "jacobian_operator",
    "laplacian",
    "least_squares",
    "natural_gradient",
    "nystrom_pcg",
    "pinn_residual",
    "pinn_system",
    "sngd",
    "spring",
    "time_derivative",
]
