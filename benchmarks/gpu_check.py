"""GPU check: the core's invariants on CuPy, torch-CUDA and JAX-GPU, and GPU timings.

Usage (from the repository root, on a machine with an NVIDIA GPU)::

    python -m benchmarks.gpu_check             # checks + timings at ~5k and ~1M parameters
    python -m benchmarks.gpu_check --quick     # checks + timings at ~5k only
    python -m benchmarks.gpu_check --cpu-dry-run --out DIR   # the same code on the CPU,
                                               # tiny sizes, NumPy in CuPy's place (no
                                               # eager-JAX invariants: the core's tests
                                               # cover them)

Without a CUDA device it prints ``no CUDA device: skipped`` and exits 0 without writing
anything. With one it

1. checks, on every GPU backend that is available (CuPy, torch-CUDA, JAX-GPU), in float64
   against a NumPy float64 reference: the native sampler (draws on the device, repeatable,
   standard moments), the triangular solve, the detection of a failed Cholesky, the
   Nystrom invariants (``A_hat Omega = A Omega``, ``A - A_hat`` PSD, exact recovery when
   ``rank(A) <= l``; also float32), and every method of ``natural_gradient_direction``;
   on CuPy also the zero-copy DLPack exchange with PyTorch and JAX (same device pointer)
   and the hybrid path: a torch or JAX Jacobian seen from CuPy through
   ``sketchlinalg_cupy.dlpack_operator``, the direction computed on CuPy and the
   parameters updated through shared memory;
2. times, at ~5k parameters (the ``[2, 64, 64, 1]`` MLP of ``examples/jax_poisson2d.py``,
   P = 4,417) and ~1M (``[2, 1000, 1000, 1]``, P = 1,005,001), with N = 1,020 residual
   rows (30 x 30 interior + 4 x 30 boundary points):

   * ``nystrom+solve``: ``natural_gradient_direction(J, r, method="nystrom", rank=200)``
     for an explicit random ``N x P`` Jacobian drawn on the device (CuPy, torch, and JAX
     under ``jax.jit``);
   * ``sngd step``: one SNGD step of the Poisson 2D PINN (rank 200, damping 1e-10,
     31-point grid line search) with ``sketchlinalg_jax.sngd`` under ``jax.jit`` (as in
     the example), with ``sketchlinalg_torch.SNGD`` on CUDA, and the hybrid JAX model +
     CuPy core (JAX Jacobian products, sketch and solve on CuPy through DLPack, line
     search in JAX).

   Every timing synchronizes the device before the clock stops (``cupy`` stream sync,
   ``torch.cuda.synchronize``, ``jax.block_until_ready``); the first runs (compilation,
   allocator warm-up) are reported apart and the median and minimum of the repeats are
   kept. The table is printed and written with the GPU model to
   ``benchmarks/results/gpu_check.json`` and ``.md``. The exit status is 1 when a check
   failed or a case raised.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np
import sketchlinalg_cupy as slc

import sketchlinalg as sl
from sketchlinalg import _dispatch

from ._common import (
    format_float,
    machine_info,
    markdown_table,
    median,
    relative_error,
    write_json,
    write_text,
)

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
SKIP_MESSAGE = "no CUDA device: skipped"


# ----------------------------------------------------------------------------------------
# backends
# ----------------------------------------------------------------------------------------
@dataclass
class Lib:
    """One array library on one device, with set-up and synchronization helpers."""

    name: str
    xp: Any
    device: Any
    put: Callable[[np.ndarray], Any]  # host data -> array on the device (set-up only)
    get: Callable[[Any], np.ndarray]  # array -> host float64 copy (checks only)
    block: Callable[[Any], None]  # wait until the array (and all work before it) is ready
    ptr: Callable[[Any], int]  # device address of the first element

    @property
    def kind(self) -> str:
        """``"cupy"``, ``"numpy"``, ``"torch"`` or ``"jax"``."""
        return self.name.split("-")[0]


def _cupy_lib() -> Lib | str:
    ok, reason = slc.cuda_status()
    if not ok:
        return reason
    cupy = importlib.import_module("cupy")
    xp = importlib.import_module("array_api_compat.cupy")

    def block(a: Any) -> None:
        cupy.cuda.get_current_stream().synchronize()

    return Lib(
        "cupy",
        xp,
        cupy.cuda.Device(0),
        put=cupy.asarray,
        get=lambda a: np.asarray(cupy.asnumpy(a), dtype=np.float64),
        block=block,
        ptr=lambda a: int(a.data.ptr),
    )


def _numpy_lib() -> Lib:
    xp = importlib.import_module("array_api_compat.numpy")
    return Lib(
        "numpy",
        xp,
        "cpu",
        put=lambda a: np.array(a),
        get=lambda a: np.asarray(a, dtype=np.float64),
        block=lambda a: None,
        ptr=lambda a: int(a.__array_interface__["data"][0]),
    )


def _torch_lib(cuda: bool) -> Lib | str:
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return "torch is not installed"
    if cuda and not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    device = torch.device("cuda:0" if cuda else "cpu")

    def block(a: Any) -> None:
        if cuda:
            torch.cuda.synchronize(device)

    return Lib(
        "torch-cuda" if cuda else "torch-cpu",
        importlib.import_module("array_api_compat.torch"),
        device,
        put=lambda a: torch.tensor(np.array(a), device=device),  # a copy: never aliases `a`
        get=lambda a: a.detach().cpu().numpy().astype(np.float64),
        block=block,
        ptr=lambda a: int(a.data_ptr()),
    )


def _jax_lib(gpu: bool) -> Lib | str:
    try:
        jax = importlib.import_module("jax")
    except ImportError:
        return "jax is not installed"
    jax.config.update("jax_enable_x64", True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no GPU/TPU found" notes of CPU-only jaxlibs
            devices = jax.devices("gpu" if gpu else "cpu")
    except RuntimeError as exc:
        return f"jax {jax.__version__} has no GPU backend ({str(exc).splitlines()[0]})"
    device = devices[0]
    return Lib(
        "jax-gpu" if gpu else "jax-cpu",
        importlib.import_module("jax.numpy"),
        device,
        put=lambda a: jax.device_put(a, device),
        get=lambda a: np.asarray(a, dtype=np.float64),
        block=lambda a: jax.block_until_ready(a),
        ptr=lambda a: int(a.unsafe_buffer_pointer()),
    )


def detect(cpu_dry_run: bool) -> dict[str, Lib | str]:
    """The libraries to check: a :class:`Lib` where available, else the reason why not.

    On a GPU machine the first entry (``cupy``) is the array core of the hybrid checks;
    in a CPU dry run NumPy plays its part.
    """
    if cpu_dry_run:
        return {"numpy": _numpy_lib(), "torch-cpu": _torch_lib(False), "jax-cpu": _jax_lib(False)}
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU
    return {"cupy": _cupy_lib(), "torch-cuda": _torch_lib(True), "jax-gpu": _jax_lib(True)}


def gpu_model(libs: dict[str, Lib | str]) -> dict[str, Any]:
    """Name, memory and driver of GPU 0, from whichever library can tell."""
    info: dict[str, Any] = {}
    if isinstance(libs.get("cupy"), Lib):
        cupy = importlib.import_module("cupy")
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        info["name"] = name.decode() if isinstance(name, bytes) else str(name)
        info["memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
        info["compute_capability"] = f"{props['major']}.{props['minor']}"
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        info["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        info["cupy"] = cupy.__version__
    if isinstance(libs.get("torch-cuda"), Lib):
        torch = importlib.import_module("torch")
        info.setdefault("name", torch.cuda.get_device_name(0))
        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
    jax_lib = libs.get("jax-gpu")
    if isinstance(jax_lib, Lib):
        jax = importlib.import_module("jax")
        info.setdefault("name", jax_lib.device.device_kind)
        info["jax"] = jax.__version__
    return info


# ----------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------
def _record(
    out: list[dict[str, Any]], lib: str, name: str, error: float, tol: float, note: str = ""
) -> None:
    ok = bool(math.isfinite(error) and error <= tol)
    out.append({"backend": lib, "check": name, "error": error, "tol": tol, "ok": ok, "note": note})


def _psd(lam: np.ndarray, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(lam), len(lam))))
    return (q * lam) @ q.T


def check_backend(lib: Lib, out: list[dict[str, Any]]) -> None:
    """The core's invariants on one library, in float64 (and float32 for Nystrom)."""
    xp, dev, f64 = lib.xp, lib.device, lib.xp.float64
    rng = np.random.default_rng(0)

    # native sampler: on the device, repeatable, standard moments
    n, l = 2000, 100
    om1 = sl.sketch_matrix(n, l, xp=xp, dtype=f64, device=dev, seed=7)
    om2 = sl.sketch_matrix(n, l, xp=xp, dtype=f64, device=dev, seed=7)
    om3 = sl.sketch_matrix(n, l, xp=xp, dtype=f64, device=dev, seed=8)
    on_device = array_api_compat.device(om1) == dev
    same = np.array_equal(lib.get(om1), lib.get(om2))
    differs = not np.array_equal(lib.get(om1), lib.get(om3))
    v = lib.get(om1)
    moments = max(abs(v.mean()) * math.sqrt(v.size), abs(v.var() - 1) * math.sqrt(v.size / 2))
    _record(
        out,
        lib.name,
        "sampler: on device, repeatable, moments (z-score)",
        moments if (on_device and same and differs) else math.inf,
        6.0,
        f"device {array_api_compat.device(om1)}, same seed equal {same}, "
        f"new seed differs {differs}",
    )

    # triangular solve (native) against NumPy
    m = 200
    L = np.tril(rng.standard_normal((m, m))) + m * np.eye(m)
    B = rng.standard_normal((m, 5))
    x_lo = lib.get(_dispatch.solve_triangular(xp, lib.put(L), lib.put(B), lower=True))
    x_up = lib.get(_dispatch.solve_triangular(xp, lib.put(L.T.copy()), lib.put(B), lower=False))
    err = max(
        relative_error(x_lo, np.linalg.solve(L, B)), relative_error(x_up, np.linalg.solve(L.T, B))
    )
    _record(out, lib.name, "triangular solve (lower, upper)", err, 1e-12)

    # Cholesky: a failure must be reported (None), a success must be right
    bad = _dispatch.cholesky(xp, lib.put(np.diag([1.0, -1.0, 2.0])))
    A = _psd(np.linspace(1.0, 3.0, 50), 1)
    good = _dispatch.cholesky(xp, lib.put(A))
    err = math.inf if good is None else relative_error(lib.get(good), np.linalg.cholesky(A))
    _record(
        out,
        lib.name,
        "cholesky: failure detected, success exact",
        err if bad is None else math.inf,
        1e-12,
        "indefinite input gave None" if bad is None else "indefinite input gave a factor",
    )

    # Nystrom invariants, float64 and float32
    n, l = 300, 40
    lam = 0.8 ** np.arange(n)
    A = _psd(lam, 2)
    scale = np.linalg.norm(A, 2)
    for dtype_name, eps in (("float64", 2.2e-16), ("float32", 1.2e-7)):
        dtype = getattr(xp, dtype_name)
        tol = 20 * eps * math.sqrt(n * l) * 10
        Ad = lib.put(A.astype(dtype_name))
        Om = sl.sketch_matrix(n, l, xp=xp, dtype=dtype, device=dev, seed=3)
        approx = sl.nystrom(Ad, l, sketch=Om)
        Ah, Omh = lib.get(approx.to_dense()), lib.get(Om)
        inv = np.linalg.norm(Ah @ Omh - A @ Omh) / (scale * np.linalg.norm(Omh))
        psd_gap = max(0.0, -np.linalg.eigvalsh(A - Ah).min()) / scale
        neg = max(0.0, -lib.get(approx.eigenvalues).min()) / scale
        _record(
            out,
            lib.name,
            f"nystrom {dtype_name}: A_hat Omega = A Omega, A - A_hat PSD, lam >= 0",
            max(inv, psd_gap, neg),
            tol,
        )
    lam_r = np.concatenate([np.linspace(1.0, 10.0, 20), np.zeros(n - 20)])
    A = _psd(lam_r, 3)
    approx = sl.nystrom(lib.put(A), 30, seed=5)
    _record(
        out,
        lib.name,
        "nystrom: exact recovery, rank(A)=20 <= l=30",
        relative_error(lib.get(approx.to_dense()), A),
        1e-9,
    )

    # every direction method against the float64 reference
    N, P, mu = 600, 200, 1e-3
    J = rng.standard_normal((N, P)) * (0.98 ** np.arange(P))[None, :]  # cond(J^T J) ~ 3e3
    r = rng.standard_normal(N)
    ref = np.linalg.solve(J.T @ J + mu * np.eye(P), J.T @ r)
    Jd, rd = lib.put(J), lib.put(r)
    # (options, tolerance): exact methods, the sketch at full rank, PCG to rtol 1e-13; the
    # kernel sketch of the rank-P kernel J J^T (N > P) loses a few digits to its shift.
    cases: dict[str, tuple[dict[str, Any], float]] = {
        "dense": ({}, 1e-9),
        "woodbury": ({}, 1e-9),
        "nystrom": ({"rank": P}, 1e-9),
        "nystrom-pcg": ({"rank": 100, "rtol": 1e-13, "maxiter": 500}, 1e-9),
        "kernel-nystrom": ({"rank": N}, 1e-6),
    }
    for method, (kw, tol) in cases.items():
        d, info = sl.natural_gradient_direction(Jd, rd, damping=mu, method=method, seed=1, **kw)
        _record(
            out,
            lib.name,
            f"direction {method} vs float64 reference",
            relative_error(lib.get(d), ref),
            tol,
            info.message if method == "nystrom-pcg" else "",
        )


def _residual_problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((80, 30)) / math.sqrt(30)
    theta = rng.standard_normal(30)
    return M, theta


def check_exchange(core: Lib, other: Lib, out: list[dict[str, Any]]) -> None:
    """Zero-copy DLPack both ways between the array core and a framework, and the hybrid:
    the framework's Jacobian products feeding the core, the direction flowing back."""
    a = core.put(np.arange(12.0).reshape(3, 4))
    t = slc.dlpack_exchange(a, other.xp)
    back = slc.dlpack_exchange(t, core.xp)
    # JAX wraps aligned buffers (cupy's are) without a copy; on the host it may copy.
    strict = core.kind == "cupy" or other.kind == "torch"
    same = core.ptr(a) == other.ptr(t) == core.ptr(back)
    values = np.array_equal(other.get(t), core.get(a))
    _record(
        out,
        f"{core.name}<->{other.name}",
        "dlpack exchange: same memory both ways",
        0.0 if values and (same or not strict) else math.inf,
        0.0,
        f"same pointer {same}",
    )

    M, theta = _residual_problem()
    mu = 1e-3
    jac = np.cos(M @ theta)[:, None] * M
    r_ref = np.sin(M @ theta)
    ref = np.linalg.solve(jac.T @ jac + mu * np.eye(M.shape[1]), jac.T @ r_ref)
    if other.kind == "torch":
        torch = importlib.import_module("torch")
        st = importlib.import_module("sketchlinalg_torch")
        Mt = other.put(M)
        params = {"w": other.put(theta).requires_grad_()}
        r, J = st.jacobian_operator(lambda p: torch.sin(Mt @ p["w"]), params)
    else:
        jnp = importlib.import_module("jax.numpy")
        slj = importlib.import_module("sketchlinalg_jax")
        Mj = other.put(M)
        params = {"w": other.put(theta)}
        r, J = slj.jacobian_operator(lambda p: jnp.sin(Mj @ p["w"]), params)
    Jc = slc.dlpack_operator(J, core.xp)
    rc = slc.dlpack_exchange(r, core.xp)
    worst = 0.0
    for method, kw in (
        ("dense", {}),
        ("nystrom", {"rank": M.shape[1]}),
        ("nystrom-pcg", {"rank": 10, "rtol": 1e-13, "maxiter": 500}),
    ):
        d, _ = sl.natural_gradient_direction(Jc, rc, damping=mu, method=method, seed=2, **kw)
        worst = max(worst, relative_error(core.get(d), ref))
    _record(out, f"{other.name}->{core.name}", "hybrid direction (products by DLPack)", worst, 1e-8)
    if other.kind == "torch":
        # Update the torch parameters in place through a core view of their memory.
        view = slc.dlpack_exchange(params["w"], core.xp)
        slc.natural_gradient_step(view, Jc, rc, damping=mu, method="dense", inplace=True)
        err = relative_error(other.get(params["w"]), theta - ref)
        _record(out, f"{core.name}->{other.name}", "in-place step through shared memory", err, 1e-8)


def core_for(model: Lib, available: list[Lib]) -> Lib | None:
    """The array core that a framework's Jacobian feeds: CuPy on a GPU machine.

    In a CPU dry run NumPy stands in for CuPy, except next to JAX: NumPy marks arrays
    imported from JAX read-only and cannot export them back, so torch-CPU (whose tensors
    are always writable, like CuPy arrays) takes its place there.
    """
    kinds = {lib.kind: lib for lib in available}
    if "cupy" in kinds:
        return kinds["cupy"]
    if model.kind == "jax":
        return kinds.get("torch")
    return kinds.get("numpy")


def run_checks(
    libs: dict[str, Lib | str], *, skip_invariants: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """All checks on all available libraries; failures are recorded, not raised.

    ``skip_invariants`` names library kinds whose invariants are not checked (the CPU dry
    run skips eager JAX on the CPU, slow to compile and covered by the core's tests).
    """
    out: list[dict[str, Any]] = []
    available = [lib for lib in libs.values() if isinstance(lib, Lib)]
    for lib in available:
        if lib.kind not in skip_invariants:
            _guarded(out, lib.name, "invariants", functools.partial(check_backend, lib, out))
    for model in available:
        core = core_for(model, available)
        if model.kind in ("torch", "jax") and core is not None and core is not model:
            label = f"{core.name}<->{model.name}"
            _guarded(out, label, "exchange", functools.partial(check_exchange, core, model, out))
    return out


def _guarded(out: list[dict[str, Any]], lib: str, what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as exc:  # a crash is a failed check, reported with the reason
        traceback.print_exc()
        out.append(
            {
                "backend": lib,
                "check": f"{what} raised",
                "error": math.inf,
                "tol": 0.0,
                "ok": False,
                "note": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            }
        )


# ----------------------------------------------------------------------------------------
# timings
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Size:
    """A problem size: MLP width, collocation grid, sketch rank."""

    label: str
    width: int
    n_side: int
    rank: int
    chunk_size: int | None

    @property
    def n_params(self) -> int:
        w = self.width
        return 2 * w + w + w * w + w + w + 1

    @property
    def n_rows(self) -> int:
        return self.n_side * self.n_side + 4 * self.n_side


def sizes(args: argparse.Namespace) -> list[Size]:
    """The sizes to time (``--quick``: ~5k only; ``--cpu-dry-run``: tiny)."""
    if args.cpu_dry_run:
        return [Size("tiny", 8, 4, 10, None)]
    out = [Size("~5k", 64, 30, 200, None)]
    if not args.quick:
        out.append(Size("~1M", 1000, 30, 200, args.chunk_size))
    return out


def _timed(
    fn: Callable[[int], Any], block: Callable[[Any], None], repeats: int, warmup: int
) -> dict[str, Any]:
    """First-call time, then median and minimum of ``repeats`` synchronized calls."""
    firsts: list[float] = []
    times: list[float] = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        block(fn(i))
        dt = time.perf_counter() - t0
        (firsts if i < warmup else times).append(dt)
    return {
        "first_s": firsts[0] if firsts else math.nan,
        "median_s": median(times),
        "min_s": min(times) if times else math.nan,
        "repeats": len(times),
    }


def _load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"_gpu_check_{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_nystrom_solve(lib: Lib, size: Size, repeats: int, warmup: int) -> dict[str, Any]:
    """``natural_gradient_direction(method="nystrom")`` with an explicit random Jacobian."""
    xp, N, P = lib.xp, size.n_rows, size.n_params
    J = sl.sketch_matrix(N, P, xp=xp, dtype=xp.float64, device=lib.device, seed=11)
    J = J / math.sqrt(P)
    r = sl.sketch_matrix(N, 1, xp=xp, dtype=xp.float64, device=lib.device, seed=12)[:, 0]
    lib.block(J)
    opts: dict[str, Any] = {"damping": 1e-8, "method": "nystrom", "rank": size.rank}
    if lib.kind == "jax":
        jax = importlib.import_module("jax")

        @jax.jit
        def direction(J: Any, r: Any, key: Any) -> Any:
            return sl.natural_gradient_direction(J, r, seed=key, **opts)[0]

        def call(i: int) -> Any:
            return direction(J, r, jax.random.key(i))
    else:

        def call(i: int) -> Any:
            return sl.natural_gradient_direction(J, r, seed=i, **opts)[0]

    return _timed(call, lib.block, repeats, warmup)


def time_jax_sngd(lib: Lib, size: Size, repeats: int, warmup: int) -> dict[str, Any]:
    """One step of ``sketchlinalg_jax.sngd`` under ``jax.jit``, as examples/jax_poisson2d."""
    jax = importlib.import_module("jax")
    optax = importlib.import_module("optax")
    slj = importlib.import_module("sketchlinalg_jax")
    ex = _load_example("jax_poisson2d")
    with jax.default_device(lib.device):
        params = ex.init_mlp(jax.random.key(0), [2, size.width, size.width, 1], "torch")
        terms = ex.make_terms(size.n_side)
        system = functools.partial(slj.pinn_system, ex.mlp, terms=terms, chunk_size=size.chunk_size)
        residual = functools.partial(slj.pinn_residual, ex.mlp, terms=terms)
        opt = slj.sngd(
            system, rank=size.rank, damping=1e-10, seed=0, residual_fn=residual, line_search="grid"
        )
        state = opt.init(params)

        @jax.jit
        def step(params: Any, state: Any) -> tuple[Any, Any]:
            updates, state = opt.update(None, state, params)
            return optax.apply_updates(params, updates), state

        carry = [params, state]

        def call(i: int) -> Any:
            carry[0], carry[1] = step(carry[0], carry[1])
            return carry[0]

        result = _timed(call, lib.block, repeats, warmup)
    # pinn_system's "auto" rule, the core's
    result["jacobian_path"] = sl.jacobian_path(
        size.n_rows, size.n_params, chunk_size=size.chunk_size
    )
    result["loss"] = float(carry[1].loss)
    return result


def time_torch_sngd(lib: Lib, size: Size, repeats: int, warmup: int) -> dict[str, Any]:
    """One ``sketchlinalg_torch.SNGD`` step on the library's device."""
    torch = importlib.import_module("torch")
    st = importlib.import_module("sketchlinalg_torch")
    ex = _load_example("torch_poisson2d")
    model = ex.make_model([2, size.width, size.width, 1], 0, "default", torch.float64)
    model = model.to(lib.device)
    terms = [
        t._replace(points=t.points.to(lib.device))
        for t in ex.make_terms(size.n_side, size.n_side, torch.float64)
    ]
    opt = st.SNGD(
        model.named_parameters(),
        functools.partial(st.pinn_system, model, terms=terms, chunk_size=size.chunk_size),
        residual_fn=functools.partial(st.pinn_residual, model, terms=terms),
        rank=size.rank,
        damping=1e-10,
        seed=0,
    )
    losses: list[Any] = []

    def call(i: int) -> Any:
        losses.append(opt.step())
        return losses[-1]

    result = _timed(call, lib.block, repeats, warmup)
    result["jacobian_path"] = opt.jacobian_path
    result["loss"] = float(losses[-1])
    return result


def time_hybrid_sngd(
    core: Lib, jax_lib: Lib, size: Size, repeats: int, warmup: int
) -> dict[str, Any]:
    """SNGD with the JAX model and the core on ``core`` (CuPy): Jacobian products by DLPack.

    The residual, the Jacobian products (or the materialized Jacobian, when
    :func:`sketchlinalg.jacobian_path` says so, as ``pinn_system``'s ``auto``) and the
    grid line search run in JAX under ``jax.jit``; the sketch, the factorization and the
    solve run on ``core``; the arrays cross by DLPack without a copy.
    """
    jax = importlib.import_module("jax")
    jnp = importlib.import_module("jax.numpy")
    slj = importlib.import_module("sketchlinalg_jax")
    flatten = importlib.import_module("jax.flatten_util")
    ex = _load_example("jax_poisson2d")
    with jax.default_device(jax_lib.device):
        params = ex.init_mlp(jax.random.key(0), [2, size.width, size.width, 1], "torch")
        terms = ex.make_terms(size.n_side)
        theta0, unravel = flatten.ravel_pytree(params)
    N, P = size.n_rows, size.n_params
    materialize = sl.jacobian_path(N, P, chunk_size=size.chunk_size) == "materialized"

    def system(theta: Any, path: str) -> Any:
        return slj.pinn_system(ex.mlp, unravel(theta), terms, path=path, chunk_size=size.chunk_size)

    @jax.jit
    def residual(theta: Any) -> Any:
        return slj.pinn_residual(ex.mlp, unravel(theta), terms)

    @jax.jit
    def dense_system(theta: Any) -> tuple[Any, Any]:
        s = system(theta, "materialized")
        return s.residual, s.jacobian.to_dense()

    @jax.jit
    def jvp_block(theta: Any, X: Any) -> Any:
        return system(theta, "matrix-free").jacobian.matmat(X)

    @jax.jit
    def vjp_block(theta: Any, Y: Any) -> Any:
        return system(theta, "matrix-free").jacobian.rmatmat(Y)

    @jax.jit
    def line_search_update(theta: Any, d: Any) -> tuple[Any, Any]:
        def loss(t: Any) -> Any:
            res = residual(t)
            return 0.5 * jnp.vdot(res, res)

        res = sl.grid_line_search(
            lambda etas: jax.vmap(lambda eta: loss(theta - eta * d))(etas), loss(theta)
        )
        return theta - res.step_size * d, res.loss

    carry: list[Any] = [theta0, None]

    def call(i: int) -> Any:
        theta = carry[0]
        if materialize:
            r, Jd = dense_system(theta)
            J: sl.LinearOperator = sl.aslinearoperator(Jd)
        else:
            r = residual(theta)
            J = sl.FunctionOperator(
                functools.partial(jvp_block, theta),
                functools.partial(vjp_block, theta),
                shape=(N, P),
                dtype=theta.dtype,
                xp=jnp,
            )
        Jc = slc.dlpack_operator(J, core.xp)
        d, _ = sl.natural_gradient_direction(
            Jc,
            slc.dlpack_exchange(r, core.xp),
            damping=1e-10,
            method="nystrom",
            rank=size.rank,
            seed=i,
        )
        carry[0], carry[1] = line_search_update(theta, slc.dlpack_exchange(d, jnp))
        return carry[0]

    result = _timed(call, jax_lib.block, repeats, warmup)
    result["jacobian_path"] = "materialized" if materialize else "matrix-free"
    result["loss"] = float(carry[1])
    return result


def _free(libs: dict[str, Lib | str]) -> None:
    """Return cached device memory between cases (CuPy pool, torch cache)."""
    if "cupy" in sys.modules and isinstance(libs.get("cupy"), Lib):
        sys.modules["cupy"].get_default_memory_pool().free_all_blocks()
    torch_lib = libs.get("torch-cuda")
    if isinstance(torch_lib, Lib):
        sys.modules["torch"].cuda.empty_cache()


def run_timings(libs: dict[str, Lib | str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every timing case at every size; a case that raises is recorded with its error."""
    out: list[dict[str, Any]] = []
    available = {name: lib for name, lib in libs.items() if isinstance(lib, Lib)}
    jax_lib = next((lib for lib in available.values() if lib.kind == "jax"), None)
    torch_lib = next((lib for lib in available.values() if lib.kind == "torch"), None)
    core = None if jax_lib is None else core_for(jax_lib, list(available.values()))
    for size in sizes(args):
        cases: list[tuple[str, str, Callable[[], dict[str, Any]]]] = []
        for lib in available.values():
            cases.append(
                (
                    "nystrom+solve",
                    lib.name + (" (jit)" if lib.kind == "jax" else ""),
                    functools.partial(time_nystrom_solve, lib, size, args.repeats, args.warmup),
                )
            )
        if jax_lib is not None:
            cases.append(
                (
                    "sngd step",
                    f"{jax_lib.name} (optax, jit)",
                    functools.partial(time_jax_sngd, jax_lib, size, args.repeats, args.warmup),
                )
            )
        if torch_lib is not None:
            cases.append(
                (
                    "sngd step",
                    f"{torch_lib.name} (torch.optim)",
                    functools.partial(time_torch_sngd, torch_lib, size, args.repeats, args.warmup),
                )
            )
        if jax_lib is not None and core is not None:
            cases.append(
                (
                    "sngd step",
                    f"{jax_lib.name} model + {core.name} core",
                    functools.partial(
                        time_hybrid_sngd, core, jax_lib, size, args.repeats, args.warmup
                    ),
                )
            )
        for case, backend, fn in cases:
            print(f"  timing {case} | {backend} | {size.label} ...", file=sys.stderr, flush=True)
            row: dict[str, Any] = {
                "case": case,
                "backend": backend,
                "size": size.label,
                "n_params": size.n_params,
                "n_rows": size.n_rows,
                "rank": size.rank,
            }
            try:
                row.update(fn())
            except Exception as exc:
                traceback.print_exc()
                row["error"] = (
                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                )
            out.append(row)
            _free(libs)
    return out


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------
def report(
    libs: dict[str, Lib | str],
    gpu: dict[str, Any],
    checks: list[dict[str, Any]],
    timings: list[dict[str, Any]],
) -> str:
    """Markdown: GPU, backends, checks, timings."""
    lines = [
        "# GPU check",
        "",
        f"GPU: {gpu.get('name', 'none')} ({gpu.get('memory_gib', '?')} GiB). "
        "Generated by `python -m benchmarks.gpu_check`.",
        "",
        "## Backends",
        "",
        markdown_table(
            ["backend", "status"],
            [
                [name, "available" if isinstance(lib, Lib) else f"skipped: {lib}"]
                for name, lib in libs.items()
            ],
        ),
        "",
        "## Checks (float64 reference on the host)",
        "",
        markdown_table(
            ["backend", "check", "error", "tol", "ok", "note"],
            [
                [
                    c["backend"],
                    c["check"],
                    format_float(c["error"]),
                    format_float(c["tol"]),
                    "yes" if c["ok"] else "**NO**",
                    c["note"],
                ]
                for c in checks
            ],
        ),
        "",
        "## Timings (synchronized; median and min of the repeats, first call apart)",
        "",
        markdown_table(
            ["case", "backend", "size", "P", "N", "first [s]", "median [s]", "min [s]", "note"],
            [
                [
                    t["case"],
                    t["backend"],
                    t["size"],
                    str(t["n_params"]),
                    str(t["n_rows"]),
                    format_float(t.get("first_s")),
                    format_float(t.get("median_s")),
                    format_float(t.get("min_s")),
                    t.get("error") or t.get("jacobian_path", ""),
                ]
                for t in timings
            ],
        ),
        "",
    ]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="only the ~5k size")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="untimed first calls (compilation)")
    p.add_argument(
        "--chunk-size", type=int, default=64, help="Jacobian block columns/points per chunk at ~1M"
    )
    p.add_argument("--no-timings", action="store_true", help="checks only")
    p.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="run everything on the CPU at tiny sizes (NumPy stands in for CuPy); writes "
        "files only with --out",
    )
    p.add_argument("--out", type=Path, default=None, help="folder (default benchmarks/results)")
    args = p.parse_args(argv)
    if args.cpu_dry_run:
        args.repeats, args.warmup = min(args.repeats, 1), min(args.warmup, 1)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the checks and timings; return the exit status (0: passed or skipped)."""
    args = parse(argv)
    libs = detect(args.cpu_dry_run)
    if not any(isinstance(lib, Lib) for lib in libs.values()):
        reasons = "; ".join(f"{name}: {lib}" for name, lib in libs.items())
        print(f"gpu_check: {SKIP_MESSAGE} ({reasons})")
        return 0
    gpu = gpu_model(libs)
    print(f"gpu_check: GPU {gpu.get('name', 'none (CPU dry run)')}", flush=True)
    for name, lib in libs.items():
        print(f"  {name}: {'available' if isinstance(lib, Lib) else 'skipped: ' + str(lib)}")
    checks = run_checks(libs, skip_invariants=("jax",) if args.cpu_dry_run else ())
    timings = [] if args.no_timings else run_timings(libs, args)
    text = report(libs, gpu, checks, timings)
    print(text)
    out_dir = (
        args.out
        if args.out is not None
        else (None if args.cpu_dry_run else ROOT / "benchmarks" / "results")
    )
    if out_dir is not None:
        payload = {
            "gpu": gpu,
            "machine": machine_info(ROOT),
            "backends": {n: ("available" if isinstance(v, Lib) else v) for n, v in libs.items()},
            "checks": checks,
            "timings": timings,
            "options": {k: str(v) for k, v in vars(args).items()},
        }
        write_json(out_dir / "gpu_check.json", payload)
        write_text(out_dir / "gpu_check.md", text)
        print(f"wrote {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'}")
    failed = [c for c in checks if not c["ok"]] + [t for t in timings if "error" in t]
    if failed:
        print(f"gpu_check: {len(failed)} check(s) or case(s) FAILED")
        return 1
    print("gpu_check: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
