"""Where sketching pays: one natural-gradient direction by Woodbury, SNGD and Nystrom-PCG vs N, P.

What is measured
----------------
The cost of ONE damped natural-gradient direction

    d = (J^T J + mu I)^{-1} J^T r

for the Poisson 2D PINN (benchmarks/pinn/problems.py) with the tanh MLP ``[2, w, w, 1]``
(``P = w^2 + 5 w + 1``: w = 98, 314, 1000 give P = 10,095, 100,167, 1,005,001, as
benchmarks/scale.py) at its initialization (seed 0: ``init_mlp(jax.random.key(0))`` in JAX,
``make_mlp(widths, 0)`` in PyTorch, drawn in float64 and rounded for ``--dtype float32``;
the two frameworks draw different networks), for N collocation points drawn uniformly in the
unit square (seed 0): 80% in the interior, 20% on the boundary (a uniform side, a uniform
position on it). The problem's own points are a fixed 30 x 30 grid, which cannot be sized to
N, so they are not used. The methods, all through
:func:`sketchlinalg.natural_gradient_direction`:

* ``woodbury``: ENGD-Woodbury, the exact direction in residual space,
  ``J^T (J J^T + mu I)^{-1} r`` (an ``N x N`` kernel: ``2 N^2 P + N^3 / 3`` flops,
  ``N^2`` memory);
* ``nystrom``: SNGD, a rank-``l`` (default 200) Nystrom approximation of ``G = J^T J`` and
  the library's default inverse (``4 N P l`` flops, ``P l`` memory, approximate);
* ``nystrom-pcg``: CG on ``(G + mu I) d = J^T r`` preconditioned by the same rank-``l``
  sketch, the library's default ``rtol`` (``sqrt(eps)``) and iteration cap (100): exact up
  to ``rtol``, when CG converges.

Why: the exact Woodbury direction costs ``O(N^2 P)``; the sketch costs ``O(N P l)``. At
small N the kernel is cheap and exact, at large N it is neither cheap nor storable. This
command finds, from measurements, the N from which SNGD's direction is faster than
Woodbury's at each P, and where a method cannot run at all (its memory or its flops are over
the cap: such cells are recorded as SKIPPED with the reason, and are data).

Per (framework, N, P) the Jacobian is built once: explicitly (``pinn_system(...,
path="materialized")``, chunks of points) when ``2 N P`` entries (J and its build copy) fit
the memory cap, else matrix-free (``path="matrix-free"``: batched JVPs / VJPs; its "build"
is then the residual only, and every product, the linearization included, is part of the
direction time). The damping is ``mu = 1e-6 lambda_max(G)``, with ``lambda_max`` the
Rayleigh quotient after ``--power-iters`` (20) power iterations on ``J^T J`` (products with
``J`` and ``J^T`` from a seeded Gaussian start: a lower bound, recorded as ``lambda_max``);
every method of a (framework, N, P) gets the same ``mu``. Per (framework, N, P, method) the
record holds:

* ``build_s``: seconds to build ``J`` (and ``r``); JAX compiles first (``build_compile_s``);
* ``direction_s``: median over ``--repeats`` calls of the direction, the first call
  excluded and reported apart (``first_call_s``; JAX compiles ahead of time,
  ``compile_s``); every call synchronizes (``jax.block_until_ready``,
  ``torch.cuda.synchronize`` on a GPU); the sketch seed is 0 in every call;
* ``peak_mib``: on the CPU the process's peak resident memory during the cell (the kernel's
  high-water mark is reset before each cell through ``/proc/self/clear_refs``; where that
  is not allowed it is the process's peak so far: ``peak_kind`` says which); on a GPU the
  device's peak allocated memory (``torch.cuda.max_memory_allocated`` after a reset; JAX's
  ``peak_bytes_in_use``, which cannot be reset: the process's peak);
* ``rel_error``: ``||d - d_exact|| / ||d_exact||`` against an exact reference in float64
  by the cheaper exact method (``woodbury`` when ``N <= P``, ``dense`` when ``P < N``; in
  float64 runs the measured ``woodbury`` cell is itself the reference when it is the one):
  ``null`` with ``error_note`` when the reference does not fit the caps.

A cell is SKIPPED when its estimated memory (:func:`sketchlinalg.estimate_memory` of the
method and Jacobian path; for a matrix-free path plus a rough count of the autodiff
activations, ``ACTIVATION_UNITS`` numbers per hidden unit, point and block column) exceeds
``--memory-cap-gib`` (default 70% of the physical memory on the CPU, 70% of the free device
memory on a GPU), or its estimated flops (build + power iterations + ``repeats + 1``
directions, by the counts above; a matrix-free product column costs ``MF_PRODUCT`` times a
dense one) exceed ``--max-gflop`` (default: 60 s at 20 GFLOP/s on the CPU, 50 TFLOP/s on a
GPU). The reference is held to the same caps for its one call. A cell that raises (e.g. a
GPU out-of-memory) is recorded with ``failed``. Every cell runs in this process; memory is
freed between cells (``del``, ``gc.collect``, ``torch.cuda.empty_cache``). Threads are
pinned by the caller; the CPU count, load average before and after, and the framework
versions are recorded.

Run::

    python -m benchmarks.crossover                         # JAX, the full grid, float64
    python -m benchmarks.crossover --framework jax,torch --n 1000,4000 --widths 98,314
    python -m benchmarks.crossover --framework torch --device cuda --plot
    python -m benchmarks.crossover --quick                 # smoke test, < 60 s on a CPU

Writes ``crossover.json`` and ``crossover.md`` (``crossover_quick.*`` with ``--quick``) to
``--out`` (default benchmarks/results), and ``crossover.png`` with ``--plot`` (matplotlib).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import sketchlinalg as sl

from ._common import (
    format_float,
    load_average,
    machine_info,
    markdown_table,
    median,
    peak_rss_mib,
    relative_error,
    write_json,
    write_text,
)
from .pinn.problems import make_problem
from .scale import n_params

__all__ = [
    "collocation_points",
    "direction_flops",
    "main",
    "memory_estimate",
    "run",
    "summarize_crossover",
]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FRAMEWORKS = ("jax", "torch")
#: Methods with a flop and a memory model here (those of :func:`sketchlinalg.estimate_memory`).
METHODS = ("dense", "woodbury", "nystrom", "nystrom-pcg", "kernel-nystrom")
SKETCH_METHODS = ("nystrom", "nystrom-pcg", "kernel-nystrom")


@dataclasses.dataclass(frozen=True)
class Grid:
    """Default collocation counts, hidden widths, sketch rank and timed repeats."""

    n: tuple[int, ...]
    widths: tuple[int, ...]
    rank: int
    repeats: int


FULL = Grid(n=(1000, 4000, 16000, 64000), widths=(98, 314, 1000), rank=200, repeats=3)
QUICK = Grid(n=(200, 800), widths=(10, 30), rank=20, repeats=2)
DEFAULT_METHODS = ("woodbury", "nystrom", "nystrom-pcg")
#: Share of the physical memory (CPU) or of the free device memory (GPU) a cell may use.
MEMORY_FRACTION = 0.7
#: Assumed throughput for the default flop cap, and the seconds one cell may take. CPU: the
#: Woodbury direction at N = 16,000, P = 10,095 ran 6.5e12 flops in 125 s (52 GFLOP/s, two
#: cores, benchmarks/results/crossover.md); 40 keeps a margin. GPU: a guess (not measured).
CPU_GFLOPS = 40.0
GPU_GFLOPS = 50_000.0
CELL_SECONDS = 60.0
#: Flops per entry of J to build it from per-point gradients of the Laplacian residual, and
#: per ``N P`` for the residual alone (a forward pass with the Laplacian's extra streams).
BUILD_FLOPS = 30.0
RESIDUAL_FLOPS = 10.0
#: A matrix-free product column (one JVP or VJP of the residual) in units of a dense one.
MF_PRODUCT = 15.0
#: Numbers stored per hidden unit, point and block column by a matrix-free product
#: (linearization constants and the tangents of the Laplacian's streams), and as many for
#: the linearization: a rough count (JAX, N = 1000, w = 314: ~9 per column and ~10 for the
#: linearization, from the peak RSS of a product with 1 and 8 columns), rounded up.
ACTIVATION_UNITS = 12
#: Per-chunk budgets of the automatic chunk sizes (materialized points, matrix-free columns).
CHUNK_BYTES = 512 * 2**20
PRODUCT_BYTES = 2**30
#: Damping relative to the largest eigenvalue of G.
RELATIVE_DAMPING = 1e-6
#: CG iteration cap of nystrom-pcg when none is given (the library's default).
PCG_MAXITER = 100
GIB = 2**30


# ----------------------------------------------------------------------------------------
# problem, cost models
# ----------------------------------------------------------------------------------------
def collocation_points(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` uniform random points of the unit square: 80% interior, 20% on the boundary.

    Parameters
    ----------
    n : int
        Total number of points (at least 2).
    seed : int

    Returns
    -------
    [interior, boundary] : list of float64 arrays of shape (n_k, 2)
        In the order of the Poisson 2D problem's terms.
    """
    n_int = max(1, min(n - 1, round(0.8 * n)))
    return square_points(n_int, n - n_int, seed)


def square_points(n_int: int, n_bdry: int, seed: int = 0) -> list[np.ndarray]:
    """``n_int`` uniform points of the open unit square and ``n_bdry`` uniform points of its
    boundary (``[interior, boundary]``, float64 arrays of shape ``(n_k, 2)``)."""
    rng = np.random.default_rng(seed)
    interior = rng.random((n_int, 2))
    s = rng.random(n_bdry)
    side = rng.integers(0, 4, n_bdry)  # 0: y = 0, 1: x = 1, 2: y = 1, 3: x = 0
    boundary = np.stack(
        [
            np.where(side == 1, 1.0, np.where(side == 3, 0.0, s)),
            np.where(side == 0, 0.0, np.where(side == 2, 1.0, s)),
        ],
        axis=1,
    )
    return [interior, boundary]


def sketch_rank(method: str, rank: int, N: int, P: int) -> int | None:
    """The sketch size of a method (capped at the dimension it sketches), ``None`` if exact."""
    if method == "kernel-nystrom":
        return min(rank, N)
    return min(rank, P) if method in SKETCH_METHODS else None


def _product(N: int, P: int, path: str) -> float:
    """Flops of one column through ``J`` or ``J^T``."""
    return 2.0 * N * P * (MF_PRODUCT if path == "matrix-free" else 1.0)


def build_flops(N: int, P: int, path: str) -> float:
    """Flops to build ``J`` (materialized) or the residual (matrix-free)."""
    return (BUILD_FLOPS if path == "materialized" else RESIDUAL_FLOPS) * N * P


def power_flops(N: int, P: int, path: str, iters: int) -> float:
    """Flops of the power iterations for ``lambda_max``."""
    return iters * 2 * _product(N, P, path)


def direction_flops(method: str, N: int, P: int, l: int | None, path: str) -> float:
    """Estimated flops of one direction (a model for the caps, not a measurement).

    ``dense``: ``2 N P^2 + P^3 / 3``; ``woodbury``: ``2 N^2 P + N^3 / 3``; ``nystrom``:
    ``2 l + 1`` product columns (the sketch ``J^T (J Omega)`` and ``g = J^T r``) and
    ``8 P l^2 + 10 l^3`` for the factorizations; ``nystrom-pcg``: that and
    ``PCG_MAXITER`` iterations (two product columns each); ``kernel-nystrom`` as nystrom
    with ``N`` in ``P``'s place in the factorizations. A matrix-free product column costs
    ``MF_PRODUCT`` dense ones; the exact methods then also pay ``min(N, P)`` columns to
    materialize ``J``.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    N, P : int
    l : int or None
        Sketch size (sketch methods).
    path : {"materialized", "matrix-free"}

    Returns
    -------
    float
    """
    prod = _product(N, P, path)
    if method in ("dense", "woodbury"):
        extra = min(N, P) * prod if path == "matrix-free" else 0.0
        n = P if method == "dense" else N
        m = N if method == "dense" else P
        return 2.0 * m * n * n + n**3 / 3 + 24.0 * n * n + 2 * prod + extra
    assert l is not None
    side = N if method == "kernel-nystrom" else P
    flops = (2 * l + 1) * prod + 8.0 * side * l * l + 10.0 * l**3
    if method == "nystrom-pcg":
        flops += min(PCG_MAXITER, P) * (2 * prod + 4.0 * P * l)
    return flops


def _gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.3g} GiB"


def _direction_part(method: str, N: int, P: int, l: int) -> str:
    """What the direction's memory is, with the sizes."""
    return {
        "dense": f"Gram copies 4 x {P} x {P}",
        "woodbury": f"kernel copies 4 x {N} x {N}",
        "nystrom": f"sketch (6 x {P} + {N}) x {l}",
        "nystrom-pcg": f"sketch (6 x {P} + {N}) x {l}",
        "kernel-nystrom": f"sketch ({P} + 6 x {N}) x {l}",
    }[method]


def memory_estimate(
    method: str,
    N: int,
    P: int,
    *,
    width: int,
    rank: int,
    path: str,
    chunk: int,
    product_chunk: int,
    itemsize: int,
) -> tuple[int, str]:
    """Estimated peak bytes of a cell and a description of its largest parts.

    :func:`sketchlinalg.estimate_memory` for the method and Jacobian path (the exact
    methods always hold ``J``), plus a second ``J`` while a materialized build assembles
    it, plus, on the matrix-free path, the autodiff activations of
    a product: ``ACTIVATION_UNITS * N * 2 w * (product_chunk + 1)`` numbers (the
    linearization and a block of tangents).

    Returns
    -------
    (bytes, text) : tuple
    """
    l = sketch_rank(method, rank, N, P) or rank
    est = sl.estimate_memory(
        method,
        N,
        P,
        rank=l,
        jacobian=path,
        chunk_size=chunk if path == "materialized" else product_chunk,
        itemsize=itemsize,
    )
    total = est.bytes
    parts = []
    if est.parts["jacobian"]:
        parts.append(f"J {N} x {P} = {_gib(est.parts['jacobian'])}")
    if path == "materialized":
        # The build holds J twice while it assembles it: the run at N = 16,000, P = 100,167
        # (J = 11.9 GiB) was killed for memory at 23.2 GiB resident while building J.
        total += N * P * itemsize
        parts.append(f"J's build copy {_gib(N * P * itemsize)}")
    parts.append(f"{_direction_part(method, N, P, l)} = {_gib(est.parts['direction'])}")
    if path == "matrix-free" and method in SKETCH_METHODS:
        act = ACTIVATION_UNITS * N * 2 * width * (product_chunk + 1) * itemsize
        total += act
        parts.append(f"activations ~{_gib(act)}")
    return total, " + ".join(parts)


def _auto_chunk(chunk: int | None, N: int, P: int, itemsize: int) -> int:
    """Points per chunk of the materialized build: per-point gradients within CHUNK_BYTES."""
    if chunk is not None:
        return max(1, min(chunk, N))
    return max(1, min(N, 1024, CHUNK_BYTES // (2 * P * itemsize)))


def _auto_product_chunk(chunk: int | None, N: int, width: int, l: int, itemsize: int) -> int:
    """Block columns per matrix-free product: activations within PRODUCT_BYTES."""
    if chunk is not None:
        return max(1, min(chunk, l))
    per_column = ACTIVATION_UNITS * N * 2 * width * itemsize
    return max(1, min(l, PRODUCT_BYTES // per_column))


# ----------------------------------------------------------------------------------------
# frameworks
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Prepared:
    """A built system: the operand the direction needs (``J`` or the parameters), ``r``."""

    operand: Any
    residual: Any
    path: str
    build_s: float
    build_compile_s: float | None
    context: dict[str, Any]


class Backend:
    """What a framework supplies: the system, the timed direction, memory, device facts."""

    framework = ""

    def __init__(self, dtype: str, device: str) -> None:
        self.dtype_name = dtype

    # device facts
    @property
    def on_gpu(self) -> bool:
        raise NotImplementedError

    def device_info(self) -> dict[str, Any]:
        raise NotImplementedError

    def free_device_bytes(self) -> int | None:
        raise NotImplementedError

    # memory
    def reset_peak(self) -> str:
        """Reset the peak-memory counter; return what :meth:`peak_mib` will measure."""
        if self.on_gpu:
            return self._reset_device_peak()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return "peak RSS of the cell"
        except OSError:
            return "peak RSS of the process"

    def _reset_device_peak(self) -> str:
        raise NotImplementedError

    def peak_mib(self) -> float:
        if self.on_gpu:
            return self._device_peak_mib()
        return peak_rss_mib()

    def _device_peak_mib(self) -> float:
        raise NotImplementedError

    def free(self) -> None:
        gc.collect()

    # work
    def prepare(
        self, points: list[np.ndarray], width: int, path: str, chunk: int, product_chunk: int
    ) -> Prepared:
        raise NotImplementedError

    def lambda_max(self, prep: Prepared, iters: int) -> float:
        raise NotImplementedError

    def direction(
        self, prep: Prepared, method: str, options: dict[str, Any], mu: float, float64: bool
    ) -> tuple[Callable[[], tuple[Any, int, int]], float | None]:
        """A synchronized call ``() -> (d, status, iterations)`` and its compile seconds."""
        raise NotImplementedError

    def to_numpy(self, x: Any) -> np.ndarray:
        raise NotImplementedError


def _problem(width: int) -> Any:
    return dataclasses.replace(make_problem("poisson2d"), widths=[2, width, width, 1])


class JaxBackend(Backend):
    """JAX on its default device; every function compiled ahead of time (``jax.jit``)."""

    framework = "jax"

    def __init__(self, dtype: str, device: str) -> None:
        super().__init__(dtype, device)
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        self.dtype = jnp.float64 if dtype == "float64" else jnp.float32
        self.device = jax.devices()[0]

    @property
    def on_gpu(self) -> bool:
        return bool(self.device.platform != "cpu")

    def device_info(self) -> dict[str, Any]:
        return {
            "framework": "jax",
            "platform": self.device.platform,
            "device": str(self.device),
            "device_kind": self.device.device_kind,
        }

    def _stats(self) -> dict[str, Any]:
        try:
            return dict(self.device.memory_stats() or {})
        except Exception:  # not every backend reports memory
            return {}

    def free_device_bytes(self) -> int | None:
        s = self._stats()
        if "bytes_limit" in s:
            return int(s["bytes_limit"]) - int(s.get("bytes_in_use", 0))
        return None

    def _reset_device_peak(self) -> str:
        return "JAX peak_bytes_in_use of the process (not resettable)"

    def _device_peak_mib(self) -> float:
        return float(self._stats().get("peak_bytes_in_use", math.nan)) / 2**20

    def prepare(
        self, points: list[np.ndarray], width: int, path: str, chunk: int, product_chunk: int
    ) -> Prepared:
        jax, jnp = self.jax, self.jnp
        import sketchlinalg_jax as slj

        from .pinn._jax import _terms, init_mlp, mlp

        problem = _problem(width)
        pts = [jnp.asarray(p, self.dtype) for p in points]
        terms = _terms(problem, pts)
        # drawn in float64 and rounded, so that float32 runs see the same network
        params = jax.tree.map(
            lambda a: a.astype(self.dtype), init_mlp(jax.random.key(0), problem.widths)
        )

        def system(params: Any, pts: Any, path: str) -> Any:
            size = chunk if path == "materialized" else product_chunk
            return slj.pinn_system(mlp, params, terms, path=path, chunk_size=size, points=pts)

        def build(params: Any, pts: Any) -> Any:
            s = system(params, pts, path)
            return (s.residual, s.jacobian.matrix) if path == "materialized" else s.residual

        t0 = time.perf_counter()
        compiled = jax.jit(build).lower(params, pts).compile()
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(params, pts))
        build_s = time.perf_counter() - t0
        if path == "materialized":
            r, operand = out
        else:
            r, operand = out, (params, pts)

        def op(operand: Any) -> Any:
            if path == "materialized":
                return sl.aslinearoperator(operand)
            return system(operand[0], operand[1], "matrix-free").jacobian

        n = sum(int(W.size + b.size) for W, b in params)
        return Prepared(operand, r, path, build_s, compile_s, {"op": op, "n_params": n})

    def lambda_max(self, prep: Prepared, iters: int) -> float:
        jax, jnp = self.jax, self.jnp
        op = prep.context["op"]

        def rayleigh(operand: Any, v0: Any) -> Any:
            J = op(operand)

            def body(_: int, v: Any) -> Any:
                w = J.rmatvec(J.matvec(v))
                return w / jnp.linalg.norm(w)

            v = jax.lax.fori_loop(0, iters, body, v0 / jnp.linalg.norm(v0))
            Jv = J.matvec(v)
            return jnp.vdot(Jv, Jv)

        n = _n_params_of(prep)
        v0 = jnp.asarray(np.random.default_rng(0).standard_normal(n), self.dtype)
        return float(jax.jit(rayleigh)(prep.operand, v0))

    def direction(
        self, prep: Prepared, method: str, options: dict[str, Any], mu: float, float64: bool
    ) -> tuple[Callable[[], tuple[Any, int, int]], float | None]:
        jax, jnp = self.jax, self.jnp
        op = prep.context["op"]
        dtype = jnp.float64 if float64 else self.dtype
        operand, r = prep.operand, prep.residual
        if float64 and dtype != self.dtype:  # the reference of a float32 run
            operand, r = operand.astype(dtype), r.astype(dtype)

        def direction(operand: Any, r: Any, mu: Any) -> Any:
            d, info = sl.natural_gradient_direction(
                op(operand), r, damping=mu, method=method, seed=0, **options
            )
            its = -1 if info.iterations is None else info.iterations
            return d, jnp.asarray(info.status, jnp.int32), jnp.asarray(its, jnp.int32)

        mu_arr = jnp.asarray(mu, dtype)
        t0 = time.perf_counter()
        compiled = jax.jit(direction).lower(operand, r, mu_arr).compile()
        compile_s = time.perf_counter() - t0

        def call() -> tuple[Any, int, int]:
            d, status, its = jax.block_until_ready(compiled(operand, r, mu_arr))
            return d, int(status), int(its)

        return call, compile_s

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)


def _n_params_of(prep: Prepared) -> int:
    return int(prep.context["n_params"])


class TorchBackend(Backend):
    """PyTorch, eager, on ``--device`` (``cpu`` or ``cuda``)."""

    framework = "torch"

    def __init__(self, dtype: str, device: str) -> None:
        super().__init__(dtype, device)
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"--device cuda: torch {torch.__version__} sees no CUDA device")
        self.torch = torch
        self.dtype = torch.float64 if dtype == "float64" else torch.float32
        self.device = torch.device("cuda:0" if device == "cuda" else "cpu")

    @property
    def on_gpu(self) -> bool:
        return bool(self.device.type == "cuda")

    def device_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"framework": "torch", "device": str(self.device)}
        if self.on_gpu:
            info["name"] = self.torch.cuda.get_device_name(self.device)
            info["cuda"] = self.torch.version.cuda
        else:
            info["threads"] = self.torch.get_num_threads()
        return info

    def free_device_bytes(self) -> int | None:
        return int(self.torch.cuda.mem_get_info(self.device)[0]) if self.on_gpu else None

    def _reset_device_peak(self) -> str:
        self.torch.cuda.reset_peak_memory_stats(self.device)
        return "torch.cuda.max_memory_allocated of the cell"

    def _device_peak_mib(self) -> float:
        return float(self.torch.cuda.max_memory_allocated(self.device)) / 2**20

    def _sync(self) -> None:
        if self.on_gpu:
            self.torch.cuda.synchronize(self.device)

    def free(self) -> None:
        gc.collect()
        if self.on_gpu:
            self.torch.cuda.empty_cache()

    def prepare(
        self, points: list[np.ndarray], width: int, path: str, chunk: int, product_chunk: int
    ) -> Prepared:
        torch = self.torch
        import sketchlinalg_torch as slt

        from .pinn._torch import make_mlp

        problem = _problem(width)
        model = make_mlp(problem.widths, 0).to(device=self.device, dtype=self.dtype)
        terms = []
        for spec, pts in zip(problem.terms, points, strict=True):

            def res(u: Any, x: Any, spec: Any = spec) -> Any:
                return spec.residual(torch, slt, u, x)

            pts_t = torch.as_tensor(pts, dtype=self.dtype, device=self.device)
            terms.append(slt.Term(res, pts_t, spec.weight, spec.name))
        size = chunk if path == "materialized" else product_chunk
        # untimed warm-up on a few points (torch.func's first-call set-up)
        slt.pinn_system(
            model, None, terms, path=path, chunk_size=size, points=[t.points[:4] for t in terms]
        )
        self._sync()
        t0 = time.perf_counter()
        system = slt.pinn_system(model, None, terms, path=path, chunk_size=size)
        self._sync()
        build_s = time.perf_counter() - t0
        J = system.jacobian
        operand = J.matrix if path == "materialized" else J
        context = {"model": model, "n_params": int(J.shape[1])}
        return Prepared(operand, system.residual, path, build_s, None, context)

    def _operator(self, operand: Any) -> Any:
        return operand if isinstance(operand, sl.LinearOperator) else sl.aslinearoperator(operand)

    def lambda_max(self, prep: Prepared, iters: int) -> float:
        torch = self.torch
        J = self._operator(prep.operand)
        n = int(J.shape[1])
        v = torch.as_tensor(
            np.random.default_rng(0).standard_normal(n), dtype=self.dtype, device=self.device
        )
        v = v / torch.linalg.vector_norm(v)
        for _ in range(iters):
            w = J.rmatvec(J.matvec(v))
            v = w / torch.linalg.vector_norm(w)
        Jv = J.matvec(v)
        return float(torch.dot(Jv, Jv))

    def direction(
        self, prep: Prepared, method: str, options: dict[str, Any], mu: float, float64: bool
    ) -> tuple[Callable[[], tuple[Any, int, int]], float | None]:
        torch = self.torch
        operand, r = prep.operand, prep.residual
        if float64 and self.dtype != torch.float64:  # the reference of a float32 run
            operand, r = operand.double(), r.double()

        def call() -> tuple[Any, int, int]:
            d, info = sl.natural_gradient_direction(
                operand, r, damping=mu, method=method, seed=0, **options
            )
            self._sync()
            its = -1 if info.iterations is None else int(info.iterations)
            return d, int(info.status), its

        return call, None

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x.detach().cpu().double().numpy())


BACKENDS: dict[str, type[Backend]] = {"jax": JaxBackend, "torch": TorchBackend}


# ----------------------------------------------------------------------------------------
# the grid
# ----------------------------------------------------------------------------------------
def _physical_bytes() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def caps(backend: Backend, args: argparse.Namespace) -> tuple[int, float, str]:
    """Memory cap (bytes), flop cap (GFLOP) and where they come from."""
    free = backend.free_device_bytes() if backend.on_gpu else None
    if args.memory_cap_gib is not None:
        cap, how = int(args.memory_cap_gib * GIB), "--memory-cap-gib"
    elif free is not None:
        cap, how = int(MEMORY_FRACTION * free), f"{MEMORY_FRACTION:.0%} of free device memory"
    else:
        cap, how = int(MEMORY_FRACTION * _physical_bytes()), f"{MEMORY_FRACTION:.0%} of RAM"
    if args.max_gflop is not None:
        gflop, how_f = float(args.max_gflop), "--max-gflop"
    else:
        rate = GPU_GFLOPS if backend.on_gpu else CPU_GFLOPS
        gflop = rate * CELL_SECONDS
        how_f = f"{CELL_SECONDS:.0f} s at {rate:g} GFLOP/s"
    return cap, gflop, f"memory cap {_gib(cap)} ({how}); flop cap {gflop:.3g} GFLOP ({how_f})"


def _skip_reason(
    method: str,
    N: int,
    P: int,
    width: int,
    args: argparse.Namespace,
    path: str,
    chunk: int,
    product_chunk: int,
    cap: int,
    max_gflop: float,
    calls: int,
    setup_flops: float,
    extra_bytes: int = 0,
) -> tuple[str | None, int, float]:
    """Why a cell cannot run (or ``None``), its estimated bytes and GFLOP.

    ``extra_bytes`` is memory held besides the cell's own (the run's ``J`` while a float64
    reference of a float32 run is computed, with ``--dtype float64`` forced for it).
    """
    itemsize = 8 if args.dtype == "float64" else 4
    nbytes, parts = memory_estimate(
        method,
        N,
        P,
        width=width,
        rank=args.rank,
        path=path,
        chunk=chunk,
        product_chunk=product_chunk,
        itemsize=itemsize,
    )
    nbytes += extra_bytes
    l = sketch_rank(method, args.rank, N, P)
    gflop = (setup_flops + calls * direction_flops(method, N, P, l, path)) / 1e9
    if nbytes > cap:
        return f"memory: {parts}; ~{_gib(nbytes)} > cap {_gib(cap)}", nbytes, gflop
    if gflop > max_gflop:
        what = f"{calls} call(s)" if calls > 1 else "1 call"
        return (
            f"flops: ~{gflop:.3g} GFLOP ({what} + build) > max {max_gflop:.3g} GFLOP",
            nbytes,
            gflop,
        )
    return None, nbytes, gflop


def _status_name(status: int) -> str:
    try:
        return sl.Status(status).name
    except ValueError:
        return str(status)


def _exc_text(exc: BaseException) -> str:
    text = str(exc).splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _time_cell(
    backend: Backend, prep: Prepared, method: str, options: dict[str, Any], mu: float, repeats: int
) -> tuple[dict[str, Any], np.ndarray]:
    """Compile (JAX), the first call, ``repeats`` timed calls; the peak memory."""
    peak_kind = backend.reset_peak()
    call, compile_s = backend.direction(prep, method, options, mu, float64=False)
    t0 = time.perf_counter()
    d, status, its = call()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    rec = {
        "compile_s": compile_s,
        "first_call_s": first,
        "direction_s": median(times),
        "direction_min_s": min(times) if times else math.nan,
        "times_s": times,
        "peak_mib": backend.peak_mib(),
        "peak_kind": peak_kind,
        "status": _status_name(status),
        "iterations": None if its < 0 else its,
    }
    return rec, backend.to_numpy(d)


def run_group(
    backend: Backend,
    N: int,
    width: int,
    methods: Sequence[str],
    args: argparse.Namespace,
    cap: int,
    max_gflop: float,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Every method at one (framework, N, P): the rows, skipped cells included."""
    P = n_params(width)
    itemsize = 8 if args.dtype == "float64" else 4
    # Materialized when J fits the cap twice (its build holds two copies: memory_estimate).
    path = "materialized" if 2 * N * P * itemsize <= cap else "matrix-free"
    chunk = _auto_chunk(args.chunk_size, N, P, itemsize)
    product_chunk = _auto_product_chunk(args.product_chunk, N, width, min(args.rank, P), itemsize)
    setup = build_flops(N, P, path) + power_flops(N, P, path, args.power_iters)
    base: dict[str, Any] = {
        "framework": backend.framework,
        "device": str(getattr(backend, "device", "")),
        "dtype": args.dtype,
        "n_points": N,
        "width": width,
        "n_params": P,
        "jacobian_path": path,
        "chunk_size": chunk if path == "materialized" else product_chunk,
    }
    rows: dict[str, dict[str, Any]] = {}
    for m in methods:
        reason, nbytes, gflop = _skip_reason(
            m,
            N,
            P,
            width,
            args,
            path,
            chunk,
            product_chunk,
            cap,
            max_gflop,
            args.repeats + 1,
            setup,
        )
        rows[m] = {
            **base,
            "method": m,
            "rank": sketch_rank(m, args.rank, N, P),
            "estimated_mib": nbytes / 2**20,
            "estimated_gflop": gflop,
            "skipped": reason is not None,
            "skip_reason": reason,
            "rel_error": None,
            "error_note": None,
        }
    ref_method = "woodbury" if N <= P else "dense"
    ref_reason: str | None
    if path != "materialized":
        ref_reason = f"reference {ref_method} needs J materialized ({N} x {P} > memory cap)"
    else:
        # in float64 whatever the run's dtype; a float32 run's J stays alive meanwhile
        ref_args = argparse.Namespace(**{**vars(args), "dtype": "float64"})
        held = 0 if args.dtype == "float64" else N * P * 4
        ref_reason, _, _ = _skip_reason(
            ref_method,
            N,
            P,
            width,
            ref_args,
            path,
            chunk,
            product_chunk,
            cap,
            max_gflop,
            1,
            0.0,
            held,
        )
        if ref_reason is not None:
            ref_reason = f"reference {ref_method}: {ref_reason}"
    runnable = [m for m in methods if not rows[m]["skipped"]]
    if not runnable:
        log(f"{backend.framework} N={N} P={P}: every method skipped")
        return list(rows.values())

    backend.free()
    peak_kind = backend.reset_peak()
    log(f"{backend.framework} N={N} P={P}: building J ({path}, chunk {base['chunk_size']})")
    try:
        prep = backend.prepare(collocation_points(N, args.seed), width, path, chunk, product_chunk)
        build = {
            "build_s": prep.build_s,
            "build_compile_s": prep.build_compile_s,
            "build_peak_mib": backend.peak_mib(),
            "build_peak_kind": peak_kind,
        }
        lam = backend.lambda_max(prep, args.power_iters)
    except Exception as exc:  # e.g. out of device memory while building J: data too
        for m in runnable:
            rows[m]["failed"] = f"building J or lambda_max: {_exc_text(exc)}"
        log(f"  FAILED building J or lambda_max: {_exc_text(exc)}")
        backend.free()
        return list(rows.values())
    mu = RELATIVE_DAMPING * lam
    common = {**build, "lambda_max": lam, "damping": mu, "reference_method": ref_method}
    log(f"  lambda_max ~ {lam:.4g} ({args.power_iters} power iterations), mu = {mu:.3g}")

    ref: np.ndarray | None = None
    reuse = ref_method in runnable and args.dtype == "float64"
    order = ([ref_method] if reuse else []) + [
        m for m in runnable if not (reuse and m == ref_method)
    ]
    if not reuse and ref_reason is None:
        try:
            t0 = time.perf_counter()
            call, _ = backend.direction(prep, ref_method, {}, mu, float64=True)
            ref = backend.to_numpy(call()[0])
            common["reference_s"] = time.perf_counter() - t0
        except Exception as exc:  # e.g. out of device memory: the errors are then unknown
            ref_reason = f"reference {ref_method} failed: {_exc_text(exc)}"
        backend.free()
    for m in order:
        row = rows[m]
        row.update(common)
        options = {"rank": row["rank"]} if m in SKETCH_METHODS else {}
        log(f"  {m}: timing ({args.repeats} repeats after the first call)")
        try:
            rec, d = _time_cell(backend, prep, m, options, mu, args.repeats)
        except Exception as exc:  # a cell that raises (e.g. GPU out of memory) is data too
            row["failed"] = _exc_text(exc)
            log(f"  {m}: FAILED {row['failed']}")
            backend.free()
            continue
        row.update(rec)
        if reuse and m == ref_method:
            ref = d
            row["rel_error"], row["error_note"] = 0.0, "reference (this cell)"
        elif ref is not None:
            row["rel_error"] = relative_error(d, ref)
        else:
            row["error_note"] = ref_reason or f"reference {ref_method} did not run"
        log(
            f"  {m}: {format_float(row['direction_s'])} s "
            f"(first {format_float(rec['first_call_s'])} s), peak {row['peak_mib']:.0f} MiB, "
            f"rel. error {format_float(row['rel_error'])}"
        )
        del d
        backend.free()
    for m in methods:
        if rows[m]["skipped"]:
            rows[m].update(common)
    del prep
    backend.free()
    return list(rows.values())


def _direction_time(cells: dict[tuple[str, int], dict[str, Any]], method: str, N: int) -> Any:
    """The measured direction time of a cell, ``None`` if it was skipped or failed."""
    r = cells.get((method, N))
    if r is None or r["skipped"] or "failed" in r:
        return None
    t = r.get("direction_s")
    return t if t is not None and math.isfinite(t) else None


def summarize_crossover(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (framework, P): the smallest N from which SNGD (and Nystrom-PCG) is faster than
    Woodbury at every larger N where both ran, and where Woodbury was skipped."""
    out = []
    keys = sorted({(r["framework"], r["n_params"]) for r in rows})
    for fw, P in keys:
        cells = {
            (r["method"], r["n_points"]): r
            for r in rows
            if (r["framework"], r["n_params"]) == (fw, P)
        }

        timed = functools.partial(_direction_time, cells)
        Ns = sorted({N for _, N in cells})
        entry: dict[str, Any] = {"framework": fw, "n_params": P}
        for method in ("nystrom", "nystrom-pcg"):
            both = [N for N in Ns if timed(method, N) is not None and timed("woodbury", N)]
            n_from = None
            for N in reversed(both):
                if not timed(method, N) < timed("woodbury", N):
                    break
                n_from = N
            entry[method] = {
                "n_from": n_from,
                "compared_at": both,
                "speedup_at_n_from": (
                    None if n_from is None else timed("woodbury", n_from) / timed(method, n_from)
                ),
            }
        skipped = [N for N in Ns if ("woodbury", N) in cells and cells[("woodbury", N)]["skipped"]]
        entry["woodbury_skipped_from"] = skipped[0] if skipped else None
        entry["woodbury_skip_reason"] = (
            cells[("woodbury", skipped[0])]["skip_reason"] if skipped else None
        )
        entry["nystrom_ran_where_woodbury_skipped"] = [
            N for N in skipped if timed("nystrom", N) is not None
        ]
        out.append(entry)
    return out


def _crossover_text(summary: list[dict[str, Any]], methods: Sequence[str]) -> str:
    lines = []
    for e in summary:
        head = f"- {e['framework']}, P = {e['n_params']:,}: "
        parts = []
        for method, label in (("nystrom", "SNGD"), ("nystrom-pcg", "Nystrom-PCG")):
            if method not in methods or "woodbury" not in methods:
                continue
            s = e[method]
            if s["n_from"] is None:
                where = ", ".join(str(N) for N in s["compared_at"]) or "no N"
                parts.append(f"{label} below Woodbury: none measured (compared at {where})")
            else:
                parts.append(
                    f"{label} below Woodbury from N = {s['n_from']} "
                    f"({s['speedup_at_n_from']:.2g}x faster there)"
                )
        if e["woodbury_skipped_from"] is not None:
            ran = e["nystrom_ran_where_woodbury_skipped"]
            parts.append(
                f"Woodbury skipped from N = {e['woodbury_skipped_from']} "
                f"({e['woodbury_skip_reason']})"
                + (f"; SNGD ran at N = {', '.join(map(str, ran))}" if ran else "")
            )
        lines.append(head + ("; ".join(parts) if parts else "Woodbury or SNGD not run"))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------
def _error_cell(r: dict[str, Any]) -> str:
    if r.get("rel_error") is None:
        return "-"
    if r.get("error_note") == "reference (this cell)":
        return "0 (ref.)"
    return format_float(r["rel_error"])


def _note(r: dict[str, Any]) -> str:
    notes = []
    if r.get("failed"):
        notes.append(f"failed: {r['failed']}")
    if r.get("status") not in (None, "SUCCESS"):
        notes.append(str(r["status"]))
    if r.get("iterations") is not None:
        notes.append(f"{r['iterations']} CG its")
    if r.get("rel_error") is None and r.get("error_note") and not r["skipped"]:
        notes.append(f"no error: {r['error_note']}")
    if r.get("compile_s") is not None:
        notes.append(f"compile {format_float(r['compile_s'])} s")
    return "; ".join(notes)


def report(out: dict[str, Any]) -> str:
    """The markdown: command, machine, settings, the table and the crossover summary."""
    rows = [
        [
            r["framework"],
            str(r["n_points"]),
            f"{r['n_params']:,}",
            r["method"] + (f" (l={r['rank']})" if r.get("rank") else ""),
            r["jacobian_path"],
            format_float(r.get("build_s")),
            format_float(r.get("direction_s")),
            format_float(r.get("first_call_s")),
            f"{r['peak_mib']:.0f}" if r.get("peak_mib") is not None else "-",
            _error_cell(r),
            r["skip_reason"] or "",
            _note(r),
        ]
        for r in out["rows"]
    ]
    table = markdown_table(
        [
            "framework",
            "N",
            "P",
            "method",
            "J path",
            "J build [s]",
            "direction [s]",
            "first call [s]",
            "peak [MiB]",
            "rel. error",
            "skipped (reason)",
            "note",
        ],
        rows,
    )
    m, s = out["machine"], out["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
    caps_text = "\n".join(f"- {fw}: {c}" for fw, c in s["caps"].items())
    devices = "; ".join(
        f"{fw}: " + ", ".join(f"{k} {v}" for k, v in d.items() if k != "framework")
        for fw, d in out["devices"].items()
    )
    return (
        "# Where sketching pays: one natural-gradient direction vs N and P\n\n"
        f"Command: `{out['command']}`\n\n"
        f"Machine: {m.get('cpu_model') or m.get('processor')}, {m.get('cpu_count')} CPUs "
        f"({m.get('cpu_affinity_count')} usable), {m.get('date_utc')}; load average "
        f"before {out['load_average_before']}, after {out['load_average_after']}. "
        f"Devices: {devices}. Versions: {versions}.\n\n"
        f"Poisson 2D PINN, tanh MLP [2, w, w, 1] at its initialization (seed 0), N uniform "
        f"random collocation points (80% interior, 20% boundary, seed {s['seed']}), "
        f"{s['dtype']}, damping mu = {RELATIVE_DAMPING:g} lambda_max(J^T J) "
        f"({s['power_iters']} power iterations), sketch rank {s['rank']} (capped at P), "
        f"median of {s['repeats']} repeats after the first call. Caps:\n\n"
        f"{caps_text}\n\n"
        f"{table}\n\n"
        "Direction time excludes building J (its own column) on the materialized path; on the "
        "matrix-free path every product is in the direction time. Rel. error: against the "
        "float64 exact direction (woodbury when N <= P, dense when P < N). Skipped cells are "
        "where a method cannot run within the caps (the estimates are in the JSON).\n\n"
        "## Crossover\n\n"
        "The smallest N from which SNGD's direction is faster than Woodbury's at every "
        "larger N where both ran (from the rows above):\n\n"
        f"{_crossover_text(out['crossover'], s['methods'])}\n"
        + (f"\n![direction time vs N]({out['plot']})\n" if out.get("plot") else "")
    )


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """Direction time vs N, one line per (method, framework), one panel per P.

    Returns ``False`` (quietly) when matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Ps = sorted({r["n_params"] for r in rows})
    fig, axes = plt.subplots(1, len(Ps), figsize=(4.2 * len(Ps), 3.8), squeeze=False)
    styles = {"jax": "-", "torch": "--"}
    for ax, P in zip(axes[0], Ps, strict=True):
        for fw in FRAMEWORKS:
            for method in dict.fromkeys(r["method"] for r in rows):
                pts = sorted(
                    (r["n_points"], r["direction_s"])
                    for r in rows
                    if (r["framework"], r["n_params"], r["method"]) == (fw, P, method)
                    and r.get("direction_s") is not None
                    and math.isfinite(r["direction_s"])
                )
                if pts:
                    ax.loglog(
                        *zip(*pts, strict=True),
                        styles.get(fw, "-") + "o",
                        label=f"{method} ({fw})",
                    )
        ax.set_title(f"P = {P:,}")
        ax.set_xlabel("collocation points N")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("seconds per direction (median)")
    fig.suptitle("One natural-gradient direction: Woodbury vs Nystrom sketches")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------
def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"{flag}: expected a comma list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise SystemExit(f"{flag}: expected positive integers, got {text!r}")
    return values


def parse(argv: list[str]) -> argparse.Namespace:
    """Command-line options, with the grid resolved (``--quick`` defaults, then flags)."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.crossover",
        description=(__doc__ or "").splitlines()[0],
    )
    p.add_argument("--framework", default="jax", help="jax, torch or jax,torch")
    p.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="torch's device (JAX uses its default device)",
    )
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--n", default=None, help="collocation counts (default 1000,4000,16000,64000)")
    p.add_argument("--widths", default=None, help="hidden widths w (default 98,314,1000)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma list of {METHODS}")
    p.add_argument("--rank", type=int, default=None, help="sketch rank (default 200)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls (default 3)")
    p.add_argument("--power-iters", type=int, default=20, help="for lambda_max(J^T J)")
    p.add_argument("--seed", type=int, default=0, help="seed of the collocation points")
    p.add_argument(
        "--memory-cap-gib",
        type=float,
        default=None,
        help="skip cells estimated above this (default 70%% of RAM, or of free GPU memory)",
    )
    p.add_argument(
        "--max-gflop",
        type=float,
        default=None,
        help="skip cells estimated above this (default 60 s at 20 GFLOP/s CPU, 50 TFLOP/s GPU)",
    )
    p.add_argument(
        "--chunk-size", type=int, default=None, help="points per chunk of the materialized J"
    )
    p.add_argument(
        "--product-chunk", type=int, default=None, help="block columns per matrix-free product"
    )
    p.add_argument("--quick", action="store_true", help="N 200,800, widths 10,30, rank 20")
    p.add_argument("--plot", action="store_true", help="also write crossover.png (matplotlib)")
    p.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    args = p.parse_args(argv)
    grid = QUICK if args.quick else FULL
    args.n = _ints(args.n, "--n") if args.n else list(grid.n)
    args.widths = _ints(args.widths, "--widths") if args.widths else list(grid.widths)
    args.rank = grid.rank if args.rank is None else args.rank
    args.repeats = grid.repeats if args.repeats is None else args.repeats
    args.frameworks = [f.strip() for f in args.framework.split(",") if f.strip()]
    if not args.frameworks or any(f not in FRAMEWORKS for f in args.frameworks):
        raise SystemExit(
            f"--framework: expected a comma list of {FRAMEWORKS}, got {args.framework}"
        )
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.methods or any(m not in METHODS for m in args.methods):
        raise SystemExit(f"--methods: expected a comma list of {METHODS}, got {args.methods}")
    if min(n for n in args.n) < 2:
        raise SystemExit("--n: at least 2 points (interior and boundary)")
    if args.rank < 1 or args.repeats < 1 or args.power_iters < 1:
        raise SystemExit("--rank, --repeats and --power-iters must be >= 1")
    return args


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The whole grid; the output dictionary (also what is written as JSON)."""
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[crossover {time.perf_counter() - start:7.1f}s] {message}", file=sys.stderr)

    load_before = load_average()
    rows: list[dict[str, Any]] = []
    caps_text: dict[str, str] = {}
    devices: dict[str, Any] = {}
    for fw in args.frameworks:
        backend = BACKENDS[fw](args.dtype, args.device)
        cap, max_gflop, caps_text[fw] = caps(backend, args)
        devices[fw] = backend.device_info()
        log(f"{fw}: {caps_text[fw]}")
        for width in args.widths:
            for N in args.n:
                rows.extend(run_group(backend, N, width, args.methods, args, cap, max_gflop, log))
        del backend
        gc.collect()
    return {
        "description": __doc__,
        "command": command,
        "machine": machine_info(ROOT),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "devices": devices,
        "settings": {
            "frameworks": args.frameworks,
            "dtype": args.dtype,
            "n": args.n,
            "widths": args.widths,
            "methods": args.methods,
            "rank": args.rank,
            "repeats": args.repeats,
            "power_iters": args.power_iters,
            "seed": args.seed,
            "relative_damping": RELATIVE_DAMPING,
            "caps": caps_text,
            "quick": args.quick,
        },
        "rows": rows,
        "crossover": summarize_crossover(rows),
        "wall_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the grid; write ``crossover[_quick].{json,md}`` (and ``.png`` with ``--plot``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    out = run(args, "python -m benchmarks.crossover " + " ".join(argv))
    stem = args.out / ("crossover_quick" if args.quick else "crossover")
    stem.parent.mkdir(parents=True, exist_ok=True)
    if args.plot and plot(out["rows"], stem.with_suffix(".png")):
        out["plot"] = stem.with_suffix(".png").name
    write_json(stem.with_suffix(".json"), out)
    text = report(out)
    write_text(stem.with_suffix(".md"), text)
    print(text)
    return out


if __name__ == "__main__":
    main()
