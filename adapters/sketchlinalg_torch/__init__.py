"""sketchlinalg_torch: the PyTorch adapter of sketchlinalg.

Jacobian operators of residual functions built with ``torch.func``, the per-point kernels
of PINN residual systems (materialized per-point Jacobians or matrix-free JVP/VJP
products), differential operators, and natural-gradient ``torch.optim.Optimizer`` classes
(SNGD, ENGD, ENGD-Woodbury, Nystrom-PCG, SPRING) over the core's step engine
(:class:`sketchlinalg.StepEngine`).
Natural-gradient work wants float64; float32 works.

The names and their meaning are shared with ``sketchlinalg_jax`` (adapters/README.md).
A PINN in a few lines (``examples/torch_poisson2d.py`` is the full version)::

    terms = [Term(lambda u, x: -laplacian(u, x) - f(x), interior, weight=1.0),
             Term(lambda u, x: u(x) - g(x), boundary, weight=4.0)]
    opt = SNGD(model.named_parameters(),
               functools.partial(pinn_system, model, terms=terms),
               residual_fn=functools.partial(pinn_residual, model, terms=terms))
    for _ in range(100):
        opt.step()

The model takes one point ``(d,)`` or, written for batches, ``(n, d)`` (``pinn_system``'s
``batched``).
"""

import warnings as _warnings

import torch as _torch

from ._diffops import (
    LAPLACIAN_METHODS,
    derivatives,
    divergence,
    gradient,
    laplacian,
    time_derivative,
)
from ._distributed import TorchCollective
from ._operators import JacobianOperator, jacobian_operator, to_scipy
from ._optim import (
    ENGD,
    LINE_SEARCHES,
    SNGD,
    SPRING,
    ENGDWoodbury,
    NaturalGradient,
    NystromPCG,
)
from ._pinn import PATHS, PINNSystem, Term, pinn_residual, pinn_system

__all__ = [
    "ENGD",
    "LAPLACIAN_METHODS",
    "LINE_SEARCHES",
    "PATHS",
    "SNGD",
    "SPRING",
    "ENGDWoodbury",
    "JacobianOperator",
    "NaturalGradient",
    "NystromPCG",
    "PINNSystem",
    "Term",
    "TorchCollective",
    "derivatives",
    "divergence",
    "gradient",
    "jacobian_operator",
    "laplacian",
    "pinn_residual",
    "pinn_system",
    "time_derivative",
    "to_scipy",
]


def _load_forward_ad() -> None:
    # The first forward-mode AD call of a process (torch.func.jvp) makes torch register its
    # forward-AD decompositions with torch.jit.script, which emits a DeprecationWarning from
    # inside torch (2.10+). Do that once here with exactly that warning silenced, so that
    # users' and tests' warning filters ("error") do not trip over torch's own internals.
    with _warnings.catch_warnings():
        _warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning
        )
        _torch.func.jvp(_torch.sin, (_torch.zeros(()),), (_torch.ones(()),))


_load_forward_ad()
