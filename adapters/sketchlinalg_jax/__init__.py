"""sketchlinalg_jax: JAX adapter of sketchlinalg.

Jacobian operators of residual functions of pytrees, the per-point kernels of PINN systems,
differential operators, and natural-gradient optimizers as optax transformations (SNGD,
ENGD, ENGD-Woodbury, Nystrom-PCG, SPRING) over the core's step engine
(:class:`sketchlinalg.StepEngine`). Parameters are any pytree: a dict of arrays, an Equinox
or Flax ``nnx`` module (its floating-point arrays train, :func:`split_params`), or the
variables of a Flax ``linen`` module. Natural-gradient work wants float64:
``jax.config.update("jax_enable_x64", True)`` before creating arrays; float32 works.
"""

from ._diffops import (
    LAPLACIAN_METHODS,
    derivatives,
    divergence,
    gradient,
    laplacian,
    time_derivative,
)
from ._least_squares import JACOBIAN_MODES, least_squares
from ._operators import JacobianOperator, Params, apply_updates, jacobian_operator, split_params
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
    "Params",
    "Term",
    "apply_updates",
    "derivatives",
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
    "split_params",
    "spring",
    "time_derivative",
]
