"""The one place where the core touches a specific array library.

The array API standard has no random number generator, no triangular solve and no
structured loop, and it cannot say whether an array is being traced by ``jax.jit``.
This module supplies those pieces. It never imports a framework: when an array of a
framework reaches it, that framework is already loaded, so its module is taken from
``sys.modules``. A backend without a native routine gets the array-API-only version
written in the calling module (see ``_random.PortableSampler`` and the generic branch of
:func:`solve_triangular`).

Support table (native routine used / generic fallback):

=========================  =======  =====  =====  =====  ==================
piece                      numpy    torch  jax    cupy   array-api-strict
=========================  =======  =====  =====  =====  ==================
random normal / uniform    native   native native native portable (hash)
triangular solve           scipy*   native native native generic
Cholesky, order > 8192     blocks   native blocks* native native
while / fori loop, cond    python   python lax    python python
host call (warnings)       python   python debug  python python
full float32 products      -        flag   ctx    env    -
row update (set_rows)      write    write  lax    write  write
trace detection            no       no     yes    no     no
=========================  =======  =====  =====  =====  ==================

"blocks": :func:`cholesky_factor` (OpenBLAS's threaded ``potrf`` crashes on large orders;
*JAX on a GPU calls its own). "generic" solves with ``xp.linalg.solve`` (same O(l^2 n) cost
for the Nystrom core, but an LU instead of a substitution for the dense n x n solves). *NumPy
uses SciPy's ``solve_triangular`` when SciPy is installed (imported on first use), else the
generic one.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import array_api_compat as _compat

__all__: list[str] = []

Array = Any


def _module(name: str) -> Any:
    """Return an already-imported module, or ``None``; never imports."""
    return sys.modules.get(name)


def is_array(x: Any) -> bool:
    """Whether ``x`` is an array of a namespace that array-api-compat knows."""
    return bool(_compat.is_array_api_obj(x))


def device_of(x: Any) -> Any:
    """The device of an array, or ``None`` under tracing (where it cannot be asked)."""
    return None if is_tracing(x) else _compat.device(x)


def free_device_memory(where: Any) -> int | None:
    """Free bytes on the accelerator of ``where`` (an array, or a device); ``None`` on the
    host, or when the library does not say.

    torch: ``torch.cuda.mem_get_info``; CuPy: ``cudaMemGetInfo``; JAX: the device's
    ``memory_stats()`` (``bytes_limit - bytes_in_use``; a traced value asks JAX's default
    device). Only modules already loaded are asked (their arrays reached us).
    """
    device = where
    if is_array(where):
        if _compat.is_jax_array(where):
            jax = _module("jax")
            device = jax.devices()[0] if is_tracing(where) else next(iter(where.devices()))
        else:
            device = where.device
    kind = type(device).__module__.split(".")[0]
    try:
        if kind == "torch" and getattr(device, "type", None) == "cuda":
            return int(_module("torch").cuda.mem_get_info(device)[0])
        if kind == "cupy":
            with device:
                return int(_module("cupy").cuda.runtime.memGetInfo()[0])
        if kind in ("jax", "jaxlib") and getattr(device, "platform", "cpu") != "cpu":
            stats = device.memory_stats() or {}
            if "bytes_limit" in stats:
                return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    except Exception:  # a driver or runtime that cannot answer: the caller's default
        return None
    return None


def has_float64(xp: Any, device: Any = None) -> bool:
    """Whether the backend holds float64 arrays (on ``device``): not JAX without
    ``jax_enable_x64``, nor a device without double precision (Apple MPS)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JAX warns, and falls back to float32
        try:
            z = xp.zeros((), dtype=xp.float64, device=device)
        except Exception:  # a backend's refusal, whatever its type
            return False
    return bool(z.dtype == xp.float64)


def backend_name(xp: Any) -> str:
    """Name the backend behind an array namespace (for messages and dispatch)."""
    if _compat.is_numpy_namespace(xp):
        return "numpy"
    if _compat.is_torch_namespace(xp):
        return "torch"
    if _compat.is_jax_namespace(xp):
        return "jax"
    if _compat.is_cupy_namespace(xp):
        return "cupy"
    if _compat.is_array_api_strict_namespace(xp):
        return "array_api_strict"
    return getattr(xp, "__name__", "unknown")


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """Float32 matrix products at full float32 precision (IEEE, not TF32) inside the block.

    NVIDIA GPUs since Ampere multiply float32 matrices in TF32 (a 10-bit mantissa, relative
    error ~5e-4) when the library allows it: JAX does so by default, torch after
    ``torch.set_float32_matmul_precision("high")``. A sketch ``Y = G Omega`` or a kernel
    ``J J^T`` in TF32 is not the product of a positive semidefinite matrix to float32
    accuracy, and the Cholesky factor, the Nystrom core and the Woodbury solve built on it
    inherit a 1e-3 error. The core therefore runs every one of its own computations in full
    float32; the model's passes outside a core call (a Jacobian build, a residual) keep the
    user's setting (docs/theory.md, "Precision on GPUs").

    JAX: ``jax.default_matmul_precision("highest")`` (a trace-time setting: it also holds
    inside ``jit``). torch: ``torch.set_float32_matmul_precision("highest")`` while the block
    runs, restored after (a process-wide flag). CuPy multiplies in TF32 only when the
    environment variable ``CUPY_TF32=1`` is set; it is left alone. No-op for libraries that
    are not imported and on CPUs.
    """
    with contextlib.ExitStack() as stack:
        jax = _module("jax")
        if jax is not None:
            stack.enter_context(jax.default_matmul_precision("highest"))
        torch = _module("torch")
        if torch is not None:
            previous = torch.get_float32_matmul_precision()
            if previous != "highest":
                torch.set_float32_matmul_precision("highest")
                stack.callback(torch.set_float32_matmul_precision, previous)
        yield


_F = TypeVar("_F", bound=Callable[..., Any])


def in_full_float32(fn: _F) -> _F:
    """``fn`` run under :func:`full_float32` (a decorator for the core's entry points)."""
    if getattr(fn, "_full_float32", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with full_float32():
            return fn(*args, **kwargs)

    wrapper._full_float32 = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def is_tracing(*arrays: Any) -> bool:
    """True when any argument is a JAX tracer (inside ``jit``, ``vmap``, ``grad``...).

    Under tracing, array values are unknown: no ``bool(array)``, no ``float(array)``,
    no Python branch on data. Callers use the branch-free form of their algorithm then.
    """
    jax = _module("jax")
    if jax is None:
        return False
    tracer = jax.core.Tracer
    return any(isinstance(a, tracer) for a in arrays)


def is_jax_key(obj: Any) -> bool:
    """True for a JAX PRNG key (new-style typed key or legacy uint32[2])."""
    jax = _module("jax")
    if jax is None or not _compat.is_jax_array(obj):
        return False
    if jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
        return True
    return bool(obj.dtype == jax.numpy.uint32 and obj.shape == (2,))


def solve_triangular(xp: Any, L: Array, B: Array, *, lower: bool) -> Array:
    """Solve ``L X = B`` for a triangular ``L`` (native where the backend has one)."""
    name = backend_name(xp)
    if name == "torch":
        torch = _module("torch")
        return torch.linalg.solve_triangular(L, B, upper=not lower)
    if name == "jax":
        jsl = importlib.import_module("jax.scipy.linalg")  # jax is loaded: its arrays reached us
        return jsl.solve_triangular(L, B, lower=lower)
    if name == "cupy":
        csl = importlib.import_module("cupyx.scipy.linalg")
        return csl.solve_triangular(L, B, lower=lower)
    if name == "numpy":
        try:  # SciPy is NumPy's LAPACK front end; without it, the generic solve below
            ssl = importlib.import_module("scipy.linalg")
        except ImportError:
            ssl = None
        if ssl is not None:
            return ssl.solve_triangular(L, B, lower=lower, check_finite=False)
    return xp.linalg.solve(L, B)


#: Orders above twice this are factored by blocks of this order on OpenBLAS-backed backends
#: (NumPy, JAX on the CPU): see :func:`cholesky_factor`.
CHOLESKY_BLOCK = 4096


def _openblas_backed(xp: Any, M: Array) -> bool:
    """Whether ``xp.linalg.cholesky(M)`` runs LAPACK's ``potrf`` of the host's OpenBLAS."""
    name = backend_name(xp)
    if name == "numpy":
        return True
    if name == "jax":
        device = device_of(M)
        platform = getattr(device, "platform", None)
        if platform is None:  # traced: the computation runs on the default backend
            platform = _module("jax").default_backend()
        return bool(platform == "cpu")
    return False


def cholesky_factor(xp: Any, M: Array, *, block: int | None = None) -> Array:
    r"""``xp.linalg.cholesky(M)`` (lower), by blocks for large orders on OpenBLAS.

    The threaded ``dpotrf`` of OpenBLAS crashes the process (a segmentation fault, or
    ``free(): invalid pointer``) on large matrices with some thread counts: here (OpenBLAS
    0.3.31, as bundled with NumPy 2.4 and used by JAX's CPU backend, two threads) from
    order ~15,800 in float64, which an ENGD-Woodbury kernel at N = 16,000 reaches; OpenBLAS
    issues 2562 and 2821 report the same on other versions. Above ``2 * block`` the factor
    is computed by the right-looking blocked algorithm: for each diagonal block,

    .. math::

        L_{kk} = \operatorname{chol}(A_{kk}), \quad
        L_{ik} = A_{ik} L_{kk}^{-T}, \quad
        A_{ii'} \leftarrow A_{ii'} - L_{ik} L_{i'k}^T,

    the same flops (``n^3 / 3``, mostly in the trailing matrix products), with ``potrf`` only
    on blocks of order ``block`` (default :data:`CHOLESKY_BLOCK`). Functional (no in-place
    update), so it traces under ``jax.jit``; a non-positive-definite ``M`` fails as the
    library's own factorization does (NumPy raises, JAX returns NaN). Other backends (torch,
    CuPy) call their own factorization directly.
    """
    block = CHOLESKY_BLOCK if block is None else block
    if M.ndim != 2 or M.shape[-1] <= 2 * block or not _openblas_backed(xp, M):
        return xp.linalg.cholesky(M)
    return blocked_cholesky(xp, M, block)


def blocked_cholesky(xp: Any, M: Array, block: int) -> Array:
    """The lower Cholesky factor of a 2-D ``M`` by blocks of order ``block`` (any backend;
    :func:`cholesky_factor` says when and why)."""
    n = M.shape[-1]
    columns = []
    A = M
    for k in range(0, n, block):
        b = min(block, n - k)
        L_kk = xp.linalg.cholesky(A[:b, :b])
        L_ik = solve_triangular(xp, L_kk, A[b:, :b].T, lower=True).T
        top = xp.zeros((k, b), dtype=M.dtype, device=device_of(M))
        columns.append(xp.concat([top, L_kk, L_ik], axis=0))
        A = A[b:, b:] - L_ik @ L_ik.T
    return xp.concat(columns, axis=1)


#: Rows per block of :func:`symmetric_product` where it works by blocks.
GRAM_BLOCK = 256


def _blocks_symmetric_product(xp: Any, A: Array) -> bool:
    """Whether ``A @ A.T`` should run by blocks: a host (CPU) backend whose matrix product
    does not detect the symmetric case. NumPy calls BLAS's ``syrk`` for ``A @ A.T`` itself;
    torch and JAX on the CPU run a full ``gemm``; a GPU's single large product is faster
    than many small ones."""
    name = backend_name(xp)
    if name == "torch":
        return bool(A.device.type == "cpu")
    if name == "jax":
        return _openblas_backed(xp, A)
    return False


def _host_syrk(xp: Any, A: Array) -> Array | None:
    """``A A^T`` by the host BLAS's ``syrk`` through NumPy, or ``None`` where it cannot run.

    A torch CPU tensor (not tracked by autograd, not inside a ``torch.func`` transform) is
    viewed as a NumPy array without a copy and the product comes back the same way.
    NumPy's ``a @ a.T`` runs ``syrk`` (``n^2 p`` flops, one triangle mirrored) where torch's
    runs ``gemm`` (``2 n^2 p``). Measured on one core of the 2-core CPU machine at
    ``n = 1000, p = 10,065`` (float64): 0.215 s against 0.314 s for the blocked product of
    :func:`symmetric_product` and 0.472 s for torch's ``A @ A.T``. JAX is left to the
    blocks: NumPy inside ``jax.pure_callback`` deadlocked (JAX 0.10.2, one intra-op
    thread) converting the callback's argument.
    """
    np_ = _module("numpy")
    name = backend_name(xp)
    if np_ is None or A.dtype not in (xp.float32, xp.float64) or 0 in A.shape:
        return None
    if name == "torch":
        if A.device.type != "cpu" or A.requires_grad:
            return None
        try:  # a functorch-wrapped tensor (vmap, grad) has no storage to share
            a = A.numpy()
        except (RuntimeError, TypeError, ValueError):
            return None
        return _module("torch").from_numpy(a @ a.T)
    return None


def symmetric_product(xp: Any, A: Array, *, block: int | None = None) -> Array:
    r"""``A A^T`` for a 2-D ``A`` (``n x p``) at about half the flops of a matrix product.

    The kernel ``J J^T`` of the Woodbury direction and the Gram matrix ``J^T J`` of dense
    ENGD are symmetric: BLAS's ``syrk`` forms one triangle, ``n^2 p`` flops against
    ``2 n^2 p``. NumPy calls it for ``A @ A.T``; torch and JAX (on the CPU) do not, so there
    NumPy's product is called on the same memory (:func:`_host_syrk`) and, where it cannot
    be (JAX, a tensor tracked by autograd), the rows are split into ``b``
    blocks of about ``block`` rows (default :data:`GRAM_BLOCK`) and only the blocks on and
    below the diagonal are multiplied,

    .. math::

        (A A^T)_{ij} = A_i A_j^T \ (j \le i), \qquad (A A^T)_{ji} = (A A^T)_{ij}^T,

    a fraction ``(b + 1) / (2 b)`` of the flops. Functional
    (it traces under ``jax.jit``); other backends and small ``n`` take ``A @ A.T``.
    """
    block = GRAM_BLOCK if block is None else block
    n = A.shape[0]
    if A.ndim != 2:
        return A @ A.T
    K = _host_syrk(xp, A)
    if K is not None:
        return K
    if n < 2 * block or not _blocks_symmetric_product(xp, A):
        return A @ A.T
    b = -(-n // block)
    edges = [round(i * n / b) for i in range(b + 1)]
    parts = [A[edges[i] : edges[i + 1], :] for i in range(b)]
    lower = {(i, j): parts[i] @ parts[j].T for i in range(b) for j in range(i + 1)}
    rows = [
        xp.concat([lower[i, j] if j <= i else lower[j, i].T for j in range(b)], axis=1)
        for i in range(b)
    ]
    return xp.concat(rows, axis=0)


def cholesky(xp: Any, M: Array) -> Array | None:
    """Lower Cholesky factor of ``M``, or ``None`` when the factorization fails.

    Eager only: numpy, torch and array-api-strict raise on failure, JAX returns NaN; both
    are mapped to ``None``. CuPy by default returns cuSOLVER's partial factor, finite and
    wrong, when ``M`` is not positive definite: it runs with ``cupyx.errstate(linalg=
    "raise")`` so that the failure raises ``LinAlgError`` instead. Under tracing the caller
    must not use it.
    """
    try:
        if backend_name(xp) == "cupy":
            cupyx = importlib.import_module("cupyx")  # cupy is loaded: its arrays reached us
            with cupyx.errstate(linalg="raise"):
                L = xp.linalg.cholesky(M)
        else:
            L = cholesky_factor(xp, M)
    except (ValueError, RuntimeError, ArithmeticError):  # LinAlgError is a ValueError
        return None
    if not bool(xp.all(xp.isfinite(L))):
        return None
    return L


def namespace(*arrays: Any) -> Any:
    """The array-API namespace of the arrays (``array_api_compat.array_namespace``)."""
    return _compat.array_namespace(*arrays)


def _any_traced(tree: Any) -> bool:
    """Whether a (nested tuple / list of) array(s) holds a JAX tracer."""
    if isinstance(tree, (tuple, list)):
        return any(_any_traced(t) for t in tree)
    return is_tracing(tree)


def cond(xp: Any, pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> Any:
    """``true_fn() if pred else false_fn()``, traceable under ``jax.jit``.

    A traced JAX ``pred`` gets ``jax.lax.cond`` (both branches are traced, one runs);
    otherwise the branch is a Python ``if`` on ``bool(pred)``. Both functions take no
    argument and must return arrays of the same shapes and dtypes.
    """
    if backend_name(xp) == "jax" and is_tracing(pred):
        return _module("jax").lax.cond(pred, true_fn, false_fn)
    return true_fn() if bool(pred) else false_fn()


def switch(xp: Any, index: Any, branches: list[Callable[[], Any]]) -> Any:
    """``branches[index]()``, traceable under ``jax.jit`` (a traced index gets
    ``jax.lax.switch``: every branch is traced, one runs; they must return arrays of the same
    shapes and dtypes)."""
    if backend_name(xp) == "jax" and is_tracing(index):
        return _module("jax").lax.switch(index, branches)
    return branches[int(index)]()


def fori_loop(xp: Any, lower: int, upper: int, body: Callable[[Any, Any], Any], init: Any) -> Any:
    """``for i in range(lower, upper): state = body(i, state)``, compiled once under JAX.

    JAX gets ``jax.lax.fori_loop`` (``i`` is then traced: slice with :func:`dynamic_slice`
    and write with :func:`set_rows`); other backends run a Python loop with int ``i``.
    """
    if backend_name(xp) == "jax":
        return _module("jax").lax.fori_loop(lower, upper, body, init)
    state = init
    for i in range(lower, upper):
        state = body(i, state)
    return state


def dynamic_slice(xp: Any, x: Array, start: Any, size: int) -> Array:
    """Rows ``start : start + size`` of ``x`` (``start`` may be traced under JAX)."""
    if backend_name(xp) == "jax":
        return _module("jax").lax.dynamic_slice_in_dim(x, start, size, axis=0)
    return x[start : start + size, ...]


def set_rows(
    xp: Any, x: Array, start: Any, block: Array | Sequence[Array], scale: float = 1.0
) -> Array:
    """``x`` with rows ``start : start + c`` replaced by ``scale * block``.

    ``block`` is a ``(c, ...)`` array or a sequence of ``(c, k_j)`` column blocks of a 2-D
    ``x`` (``sum k_j`` its columns), written side by side: the per-parameter gradients of an
    adapter go into their columns without a concatenated copy. In place for mutable arrays
    (NumPy, PyTorch, CuPy: no copy of ``x``, which matters for an ``N x P`` Jacobian; the
    scaling writes straight into ``x``, one pass over the block, not a scaled temporary and
    a copy); a functional update for JAX (``lax.dynamic_update_slice``, in place inside a
    compiled loop, the scaling fused).
    """
    blocks: list[Array] = list(block) if isinstance(block, (list, tuple)) else [block]
    if backend_name(xp) == "jax":
        lax = _module("jax").lax
        whole = blocks[0] if len(blocks) == 1 else xp.concat(blocks, axis=1)
        return lax.dynamic_update_slice_in_dim(x, scale * whole, start, axis=0)
    rows = x[start : start + blocks[0].shape[0], ...]
    col = 0
    for b in blocks:
        target = rows if len(blocks) == 1 else rows[:, col : col + b.shape[1]]
        col += b.shape[1] if len(blocks) > 1 else 0
        if backend_name(xp) == "torch":
            _module("torch").mul(b, scale, out=target)
        else:
            target[...] = b if scale == 1.0 else scale * b
    return x


def map_columns(xp: Any, fn: Callable[[Array], Array], X: Array, chunk: int | None) -> Array:
    """``fn`` applied to blocks of at most ``chunk`` columns of ``X``, results concatenated.

    Bounds the memory of a block product (a block of JVPs holds the model's activations for
    every column). JAX gets ``jax.lax.map`` over equal blocks (the last one zero-padded:
    products are linear, and the padding is dropped), so the chunks run one after another in
    one compiled loop; other backends loop in Python.
    """
    k = X.shape[1]
    if chunk is None or k <= chunk:
        return fn(X)
    if backend_name(xp) == "jax":
        lax = _module("jax").lax
        n = -(-k // chunk)
        Xp = xp.concat([X, xp.zeros((X.shape[0], n * chunk - k), dtype=X.dtype)], axis=1)
        blocks = xp.moveaxis(xp.reshape(Xp, (X.shape[0], n, chunk)), 1, 0)
        out = lax.map(fn, blocks)  # (n, m, chunk)
        return xp.reshape(xp.moveaxis(out, 0, 1), (out.shape[1], n * chunk))[:, :k]
    return xp.concat([fn(X[:, i : i + chunk]) for i in range(0, k, chunk)], axis=1)


def while_loop(xp: Any, cond: Callable[[Any], Any], body: Callable[[Any], Any], state: Any) -> Any:
    """``while cond(state): state = body(state)``, traceable under ``jax.jit``.

    A traced JAX state gets ``jax.lax.while_loop`` (so the loop compiles once, whatever the
    count); otherwise (other backends, eager JAX) a Python loop runs, with one host
    synchronization per test.
    """
    if backend_name(xp) == "jax" and _any_traced(state):
        return _module("jax").lax.while_loop(cond, body, state)
    while bool(cond(state)):
        state = body(state)
    return state


def to_list(x: Array) -> list[Any]:
    """The elements of an eager 1-D array as Python numbers (one host transfer where the
    library has ``tolist``; element by element otherwise, e.g. array-api-strict)."""
    tolist = getattr(x, "tolist", None)
    if callable(tolist):
        return list(tolist())
    return [float(x[i]) for i in range(x.shape[0])]


def host_call(xp: Any, pred: Any, fn: Callable[..., None], *args: Any) -> None:
    """Call ``fn(*args)`` on the host when ``pred`` holds (for warnings).

    Eagerly a Python branch. Under ``jax.jit`` a ``lax.cond`` around
    ``jax.debug.callback``: a compiled step can still warn, and only the steps that have
    something to say pay for the call (``fn`` receives NumPy arrays then).
    """
    if backend_name(xp) == "jax" and _any_traced((pred, *args)):
        jax = _module("jax")

        def call(values: tuple[Any, ...]) -> None:
            jax.debug.callback(fn, *values)

        jax.lax.cond(pred, call, lambda values: None, tuple(args))
        return
    if bool(pred):
        fn(*args)


# ----------------------------------------------------------------------------------
# native random number generation
# ----------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """One step of the SplitMix64 mixer on Python ints (for deriving seeds)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def mix_seed(seed: int, stream: tuple[int, ...]) -> int:
    """A 63-bit seed derived from a user seed and a stream path."""
    h = splitmix64(seed & _MASK64)
    for s in stream:
        h = splitmix64(h ^ (s & _MASK64))
    return h >> 1


def has_native_random(xp: Any) -> bool:
    """Whether :func:`native_random` supports this namespace."""
    return backend_name(xp) in ("numpy", "torch", "jax", "cupy")


def native_random(
    xp: Any,
    kind: str,
    shape: tuple[int, ...],
    *,
    dtype: Any,
    device: Any,
    seed: int | Any,
    stream: tuple[int, ...],
) -> Array:
    """Draw ``kind`` ("normal" or "uniform" on [0, 1)) with the backend's own generator.

    ``seed`` is a Python int, or for JAX a PRNG key (possibly traced). The same
    ``(seed, stream)`` gives the same array on the same backend.
    """
    name = backend_name(xp)
    if name == "jax":
        jax = _module("jax")
        key = seed if is_jax_key(seed) else jax.random.key(mix_seed(int(seed), ()) >> 32)
        for s in stream:
            key = jax.random.fold_in(key, s)
        fn = jax.random.normal if kind == "normal" else jax.random.uniform
        out = fn(key, shape, dtype=dtype)
        return out if device is None else jax.device_put(out, device)
    s64 = mix_seed(int(seed), stream)
    if name == "numpy":
        np = _module("numpy")
        gen = np.random.Generator(np.random.PCG64(s64))
        if kind == "normal":
            return xp.asarray(gen.standard_normal(shape, dtype=dtype))
        return xp.asarray(gen.random(shape, dtype=dtype))
    if name == "torch":
        torch = _module("torch")
        gen = torch.Generator(device=device if device is not None else "cpu")
        gen.manual_seed(s64)
        fn = torch.randn if kind == "normal" else torch.rand
        return fn(shape, generator=gen, dtype=dtype, device=device)
    if name == "cupy":
        # Philox: a counter-based generator whose per-thread states start in O(1); the
        # default XORWOW pays a skip-ahead per state at every construction. The states are
        # allocated on the current device, so the generator is built inside the context.
        cp = _module("cupy")
        with cp.cuda.Device(device.id if device is not None else None):
            gen = cp.random.Generator(cp.random.Philox4x3210(s64))
            if kind == "normal":
                return gen.standard_normal(shape, dtype=dtype)
            return gen.random(shape, dtype=dtype)
    raise TypeError(f"no native random generator for the {name!r} namespace")
