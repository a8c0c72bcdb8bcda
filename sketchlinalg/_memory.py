"""Memory model of the direction methods and Jacobian paths: peak bytes from N, P, rank, chunk."""

from __future__ import annotations

from typing import Any, NamedTuple

from . import _dispatch
from ._validation import check_int

__all__ = ["JACOBIAN_PATHS", "MEMORY_METHODS", "MemoryEstimate", "estimate_memory", "memory_plan"]

MEMORY_METHODS = ("dense", "woodbury", "nystrom", "nystrom-pcg", "kernel-nystrom")
JACOBIAN_PATHS = ("materialized", "matrix-free")
_JACOBIANS = (*JACOBIAN_PATHS, "array")

#: Working copies of the ``P x l`` sketch in the Nystrom algorithm at its peak: the test
#: matrix Omega, Y = A Omega, Y_nu = Y + nu Omega, B = Y_nu C^{-1}, and U plus the SVD's
#: workspace (measured on NumPy/LAPACK and XLA, see benchmarks/scale.py).
NYSTROM_COPIES = 6
#: Square matrices alive in the exact methods: the Gram (or kernel) matrix, its damped copy
#: ``G + mu I`` with the identity, and the Cholesky factor (measured with tracemalloc on
#: NumPy, tests/test_memory.py; XLA fuses some of them under jit).
DENSE_COPIES = 4
#: ``P``-vectors alive in a step besides the sketch: parameters, gradient, direction,
#: the candidate of the line search; Nystrom-PCG adds its five CG vectors.
STEP_VECTORS = 4
PCG_VECTORS = 5
#: The memory budget of ``auto`` choices when none is given (bytes), for host arrays.
DEFAULT_BUDGET = 2 * 2**30
#: On an accelerator the default budget is this fraction of its free memory (the rest is
#: headroom for the framework's caches and the model's own buffers).
DEVICE_BUDGET_FRACTION = 0.5


def default_budget(like: Any = None) -> int:
    """The memory budget of ``auto`` choices when none is given.

    For arrays on an accelerator (CUDA torch, CuPy, JAX on a GPU) half of the device's free
    memory (:data:`DEVICE_BUDGET_FRACTION`), which is what a step there can use; for host
    arrays, or when the device does not report its memory, :data:`DEFAULT_BUDGET` (2 GiB).

    Parameters
    ----------
    like : array or device, optional
        An array on the device the step runs on (the flat parameters), or that device.

    Returns
    -------
    int
        Bytes.
    """
    free = None if like is None else _dispatch.free_device_memory(like)
    return DEFAULT_BUDGET if free is None else int(DEVICE_BUDGET_FRACTION * free)


class MemoryEstimate(NamedTuple):
    """Peak memory of one natural-gradient step, by part.

    Attributes
    ----------
    method : str
        Direction method (:data:`MEMORY_METHODS`).
    jacobian : str
        Jacobian path (:data:`JACOBIAN_PATHS`, or ``"array"`` for a given explicit ``J``).
    bytes : int
        Peak bytes: ``max(jacobian build, jacobian + direction)`` plus ``baseline``.
    parts : dict of str to int
        Bytes of each part (``"jacobian"``, ``"jacobian build"``, ``"direction"``,
        ``"vectors"``, ``"baseline"``).
    fits : bool or None
        ``bytes <= memory_budget``; ``None`` when no budget was given.
    """

    method: str
    jacobian: str
    bytes: int
    parts: dict[str, int]
    fits: bool | None


def estimate_memory(
    method: str,
    n_residuals: int,
    n_params: int,
    *,
    rank: int = 100,
    oversample: int = 0,
    jacobian: str = "materialized",
    chunk_size: int | None = None,
    itemsize: int = 8,
    baseline: int = 0,
    memory_budget: int | None = None,
) -> MemoryEstimate:
    r"""Peak bytes of one step of ``method`` with ``N`` residuals, ``P`` parameters.

    The model counts arrays, in entries of ``itemsize`` bytes (``l = rank + oversample``,
    ``c`` the chunk size):

    ================= ================================================================
    part              entries
    ================= ================================================================
    jacobian          ``N P`` when materialized (``dense`` and ``woodbury`` always
                      materialize ``J``); ``0`` matrix-free
    jacobian build    materialized: ``N P + 2 c P`` (the adapters write the per-point
                      gradients of ``c`` points at a time, and their flattened copy, into
                      the preallocated ``J``; ``c = N`` when not chunked); matrix-free:
                      ``2 c (N + P)`` (a block of JVPs / VJPs and its result)
    direction         dense ``4 P^2`` (``G``, ``I``, ``G + mu I``, its factor); woodbury
                      ``4 N^2``;
                      nystrom ``6 P l + N l``; nystrom-pcg ``6 P l + N l + 5 P``;
                      kernel-nystrom ``P l + 6 N l``
    vectors           ``4 P`` (parameters, gradient, direction, line-search candidate)
    ================= ================================================================

    ``bytes = max(jacobian build, jacobian + direction) + vectors + baseline``. What the
    model leaves out: the network's own autodiff activations (model-specific: a matrix-free
    product stores the activations of ``c`` tangents), the framework's runtime and compiled
    code (pass a measured ``baseline``), and allocator slack. ``benchmarks/scale.py``
    compares it with measured peak resident memory.

    Parameters
    ----------
    method : str
        One of :data:`MEMORY_METHODS`.
    n_residuals, n_params : int
        ``N`` and ``P``.
    rank, oversample : int
        Sketch size ``l = rank + oversample`` of the Nystrom methods (capped at the
        dimension they sketch).
    jacobian : {"materialized", "matrix-free", "array"}
        How ``J`` is had: built explicitly from per-point gradients, used through
        products only, or given as an explicit array (counted, but not built).
    chunk_size : int, optional
        Points per block of a materialized Jacobian (default ``N``: all at once) or columns
        per block of a matrix-free product (default ``l``: one block).
    itemsize : int
        Bytes per entry: 8 for float64, 4 for float32.
    baseline : int
        Bytes already in use (e.g. the process's resident memory before the step).
    memory_budget : int, optional
        When given, ``fits`` says whether the estimate is within it.

    Returns
    -------
    MemoryEstimate

    Examples
    --------
    >>> from sketchlinalg import estimate_memory
    >>> est = estimate_memory("dense", 1_000, 1_000_000)  # a P x P Gram at P = 10^6
    >>> round(est.bytes / 2**40, 1)  # TiB
    29.1
    >>> budget = 16 * 2**30  # the Jacobian built 128 points at a time
    >>> est = estimate_memory("nystrom", 1_000, 1_000_000, rank=100, chunk_size=128,
    ...                       memory_budget=budget)
    >>> est.fits, round(est.bytes / 2**30, 1)
    (True, 12.0)
    """
    if method not in MEMORY_METHODS:
        raise ValueError(f"method must be one of {MEMORY_METHODS}, got {method!r}")
    if jacobian not in _JACOBIANS:
        raise ValueError(f"jacobian must be one of {_JACOBIANS}, got {jacobian!r}")
    N = check_int(n_residuals, "n_residuals", low=1)
    P = check_int(n_params, "n_params", low=1)
    rank = check_int(rank, "rank", low=1)
    oversample = check_int(oversample, "oversample", low=0)
    itemsize = check_int(itemsize, "itemsize", low=1)
    baseline = check_int(baseline, "baseline", low=0)
    if memory_budget is not None:
        memory_budget = check_int(memory_budget, "memory_budget", low=0)
    l_param = min(rank + oversample, P)
    l_kernel = min(rank + oversample, N)
    materialized = jacobian != "matrix-free" or method in ("dense", "woodbury")
    jac = N * P if materialized else 0
    if jacobian == "array":
        build = 0
    elif materialized:
        c = N if chunk_size is None else min(check_int(chunk_size, "chunk_size", low=1), N)
        build = N * P + 2 * c * P
    else:
        c = l_param if chunk_size is None else check_int(chunk_size, "chunk_size", low=1)
        build = 2 * c * (N + P)
    direction = {
        "dense": DENSE_COPIES * P * P,
        "woodbury": DENSE_COPIES * N * N,
        "nystrom": NYSTROM_COPIES * P * l_param + N * l_param,
        "nystrom-pcg": NYSTROM_COPIES * P * l_param + N * l_param + PCG_VECTORS * P,
        "kernel-nystrom": P * l_kernel + NYSTROM_COPIES * N * l_kernel,
    }[method]
    vectors = STEP_VECTORS * P
    parts = {
        "jacobian": jac * itemsize,
        "jacobian build": build * itemsize,
        "direction": direction * itemsize,
        "vectors": vectors * itemsize,
        "baseline": baseline,
    }
    total = max(build, jac + direction) * itemsize + vectors * itemsize + baseline
    fits = None if memory_budget is None else total <= memory_budget
    path = "array" if jacobian == "array" else ("materialized" if materialized else "matrix-free")
    return MemoryEstimate(method, path, total, parts, fits)


def memory_plan(
    n_residuals: int,
    n_params: int,
    *,
    memory_budget: int,
    rank: int = 100,
    oversample: int = 0,
    chunk_size: int | None = None,
    itemsize: int = 8,
    baseline: int = 0,
) -> list[MemoryEstimate]:
    """Every (method, Jacobian path) configuration with its estimate and whether it fits.

    ``dense`` and ``woodbury`` appear once (they materialize ``J``); the sketch methods
    appear with both paths. Sorted by bytes. :func:`choose_method` picks among the accurate
    methods that fit (see its docs); ``auto`` never picks one that does not.

    Parameters
    ----------
    n_residuals, n_params : int
    memory_budget : int
        Bytes.
    rank, oversample, chunk_size, itemsize, baseline
        As in :func:`estimate_memory`.

    Returns
    -------
    list of MemoryEstimate

    Examples
    --------
    >>> from sketchlinalg import memory_plan
    >>> plan = memory_plan(1_020, 1_005_001, rank=100, memory_budget=16 * 2**30)
    >>> [(e.method, e.jacobian) for e in plan if e.fits][:3]
    [('kernel-nystrom', 'matrix-free'), ('nystrom', 'matrix-free'), ('nystrom-pcg', 'matrix-free')]
    """
    budget = check_int(memory_budget, "memory_budget", low=0)
    out = []
    for method in MEMORY_METHODS:
        paths = ("materialized",) if method in ("dense", "woodbury") else JACOBIAN_PATHS
        for path in paths:
            out.append(
                estimate_memory(
                    method,
                    n_residuals,
                    n_params,
                    rank=rank,
                    oversample=oversample,
                    jacobian=path,
                    chunk_size=chunk_size,
                    itemsize=itemsize,
                    baseline=baseline,
                    memory_budget=budget,
                )
            )
    return sorted(out, key=lambda e: e.bytes)
