"""sketchlinalg_cupy: the CuPy adapter of sketchlinalg (the GPU path).

The core runs on CuPy arrays as it runs on any array-API backend: the sketches are drawn
on the device by CuPy's own generator, the factorizations and the triangular solves are
cuSOLVER / cuBLAS calls, and nothing falls back to the host. This package adds what a
GPU user needs around it:

Operators
    :func:`aslinearoperator` (CuPy arrays, ``cupyx.scipy.sparse`` matrices,
    ``cupyx.scipy.sparse.linalg.LinearOperator``), :func:`function_operator`
    (block-product callables on CuPy arrays).
Zero-copy exchange with PyTorch and JAX
    :func:`from_torch`, :func:`to_torch`, :func:`from_jax`, :func:`to_jax`,
    :func:`dlpack_exchange` (any pair of DLPack libraries), and :func:`dlpack_operator` /
    :class:`DLPackOperator`: a torch-CUDA or JAX-GPU Jacobian seen as an operator over
    CuPy arrays, each block product crossing by DLPack, so the direction is computed on
    CuPy and flows back to the model without a host round trip.
Updates
    :func:`natural_gradient_step` (``theta <- theta - eta d`` on CuPy parameter arrays),
    :class:`StepResult`.
Device
    :func:`cuda_status`: whether CuPy sees a CUDA device, and why not.

CuPy is imported lazily: the package imports without it, and its namespace-generic
parts (DLPack exchange between NumPy and PyTorch, SciPy operators) run on any machine.
A host array handed to CuPy raises ``ValueError``; it is never copied implicitly.

A torch model's Jacobian feeding the core on CuPy (see adapters/README.md)::

    r, J = sketchlinalg_torch.jacobian_operator(residual_fn, params)     # CUDA tensors
    d, info = sketchlinalg.natural_gradient_direction(
        dlpack_operator(J), from_torch(r), damping=1e-8, method="nystrom", rank=200)
    flat_params.sub_(to_torch(d))                                         # no host copy
"""

from ._device import cuda_status
from ._dlpack import dlpack_exchange, from_jax, from_torch, to_jax, to_torch
from ._operators import DLPackOperator, aslinearoperator, dlpack_operator, function_operator
from ._step import StepResult, natural_gradient_step

__all__ = [
    "DLPackOperator",
    "StepResult",
    "aslinearoperator",
    "cuda_status",
    "dlpack_exchange",
    "dlpack_operator",
    "from_jax",
    "from_torch",
    "function_operator",
    "natural_gradient_step",
    "to_jax",
    "to_torch",
]
