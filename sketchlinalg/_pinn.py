r"""PINN residual systems, written once: terms, row weights, the Jacobian path and assembly.

A PINN residual stacks families of rows (:class:`Term`): row ``i`` of term ``k`` is
``sqrt(w_k / N_k) * residual_k(u, x_i)``, so that ``1/2 ||r||^2`` is a quadrature of the
continuous loss ``1/2 sum_k w_k mean_i residual_k(u, x_i)^2`` (``w_k`` the measure of the
term's domain). An adapter supplies only the per-point kernels of its framework (the
residual rows of a batch of points and their gradients in the flat parameters, and a
matrix-free Jacobian operator); this module validates the terms, chooses between the
materialized and the matrix-free Jacobian with :func:`estimate_memory`, and assembles
``J`` in place, chunk by chunk.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from . import _dispatch
from ._memory import DEFAULT_BUDGET, default_budget, estimate_memory
from ._operator import FunctionOperator
from ._validation import check_int

__all__ = [
    "PATHS",
    "Derivatives",
    "JacobianOperator",
    "PINNSystem",
    "Term",
    "build_pinn_system",
    "check_terms",
    "jacobian_path",
    "stack_residual",
]

Array = Any

#: Bytes of Jacobian rows per block of the materialized build on the host when no
#: ``chunk_size`` is given: blocks that stay in cache build the Jacobian 1.7-2.4x faster than
#: one block of all points (Poisson 5D, P = 10,065: ``python -m benchmarks.pinn_jacobian``).
_HOST_CHUNK_BYTES = 12 * 2**20
#: Fewest points per such block (per-block overhead stays small when rows are long).
_HOST_CHUNK_MIN_POINTS = 64
#: The same for JAX on the host, whose blocks are the iterations of one compiled loop (no
#: per-block dispatch): smaller blocks, 2 MiB of rows and at least 16 points, built the
#: forward-Laplacian Jacobian 15-25% faster than 12 MiB ones (Poisson 5D: 52 against 62 ms;
#: Poisson 2D and heat 1D: 22 against 29 ms at 16-32 points, one core).
_JAX_HOST_CHUNK_BYTES = 2 * 2**20
_JAX_HOST_CHUNK_MIN_POINTS = 16

#: Jacobian constructions of :func:`build_pinn_system` (``"auto"`` chooses).
PATHS = ("auto", "materialized", "matrix-free")


class Term(NamedTuple):
    """One family of PINN residual rows (the same class in every adapter).

    Attributes
    ----------
    residual : callable
        ``residual(u, x) -> scalar`` for one point ``x`` of shape ``(d,)``, where
        ``u(x) -> scalar`` is the network at the current parameters. For
        ``-Laplace u = f``: ``lambda u, x: -laplacian(u, x) - f(x)``; for a Dirichlet
        boundary ``u = g``: ``lambda u, x: u(x) - g(x)``. It is written for one point (the
        adapters map it over the points).
    points : array of shape (N_k, d)
        Collocation points, in the parameters' dtype and on their device.
    weight : float
        ``w_k >= 0``: measure of the term's domain (``|Omega|`` for interior points,
        ``|dOmega|`` for the boundary); each row is scaled by ``sqrt(w_k / N_k)``. ``0``
        turns the term off (its rows are zero).
    name : str
        Label used in messages.
    """

    residual: Callable[..., Any]
    points: Any
    weight: float = 1.0
    name: str = ""

    def at(self, u: Callable[[Any], Any], x: Any) -> Any:
        """``residual(u, x)`` for one point, checked to be a scalar of ``x``'s dtype (a 0-d
        array); the adapters' per-point kernels call it, so that a residual returning a
        vector or a list is a ``ValueError`` / ``TypeError`` naming the term, not an error
        inside the framework's autodiff."""
        out = self.residual(u, x)
        label = f"Term {self.name!r}" if self.name else "Term"
        if not _dispatch.is_array(out):
            raise TypeError(
                f"{label}: residual(u, x) must return a scalar array for one point, got "
                f"{type(out).__name__}"
            )
        if math.prod(int(s) for s in out.shape) != 1:
            raise ValueError(
                f"{label}: residual(u, x) must return a scalar for one point x of shape "
                f"{tuple(x.shape)}, got shape {tuple(out.shape)} (it is mapped over the points "
                "by the adapter: write it for one point)"
            )
        if out.dtype != x.dtype:
            raise TypeError(
                f"{label}: residual(u, x) returned dtype {out.dtype} for points of dtype "
                f"{x.dtype}; compute it in the points' dtype"
            )
        return _dispatch.namespace(out).reshape(out, ())


class PINNSystem(NamedTuple):
    """The weighted residual of a PINN and its Jacobian operator.

    Attributes
    ----------
    residual : array of shape (N,)
        The rows of all terms, stacked in order.
    jacobian : JacobianOperator of shape (N, P)
        Over the flattened trainable parameters.
    path : str
        ``"materialized"`` or ``"matrix-free"``: which construction ran.
    """

    residual: Any
    jacobian: JacobianOperator
    path: str


class Derivatives(NamedTuple):
    r"""A scalar function's value, gradient and (partial) Laplacian at one point, from one
    forward pass (the adapters' ``derivatives``).

    Attributes
    ----------
    value : array, 0-d
        ``u(x)``.
    gradient : array of shape (d,)
        ``grad u(x)``: every first derivative, the time derivative included.
    laplacian : array, 0-d
        ``sum_{i in dims} d^2 u / dx_i^2`` over the requested coordinates (all by default).
    """

    value: Any
    gradient: Any
    laplacian: Any


def laplacian_weights(dims: Any, d: int, where: str) -> list[float] | None:
    """The 0/1 weights ``w_i`` of the Laplacian over the coordinates ``dims`` of a point
    of ``d`` coordinates (``None``: all of them, the plain Laplacian)."""
    if dims is None:
        return None
    items = [dims] if isinstance(dims, int) and not isinstance(dims, bool) else dims
    try:
        idx = list(items)
    except TypeError:
        idx = [None]
    if not idx or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
        raise TypeError(f"{where}: laplacian_dims must be an int or a non-empty sequence of "
                        f"ints, got {dims!r}")  # fmt: skip
    bad = [i for i in idx if not -d <= i < d]
    if bad:
        raise ValueError(f"{where}: laplacian_dims {bad} out of range for a point of {d} "
                         "coordinates")  # fmt: skip
    chosen = {i % d for i in idx}
    if len(chosen) != len(idx):
        raise ValueError(f"{where}: laplacian_dims repeats a coordinate: {dims!r}")
    return [1.0 if i in chosen else 0.0 for i in range(d)]


class JacobianOperator(FunctionOperator):
    """A residual Jacobian ``J`` (``N x P``) over flattened parameters, and how it is made.

    Built by the adapters' ``jacobian_operator`` (matrix-free: batched JVPs / VJPs) and
    ``pinn_system``; every core routine accepts it.

    Parameters
    ----------
    matmat, rmatmat : callable
        Block products ``J X`` and ``J^T Y``.
    shape, dtype, xp, device
        As :class:`FunctionOperator`.
    path : {"materialized", "matrix-free"}
    matrix : array, optional
        The explicit ``(N, P)`` Jacobian (the materialized path).
    unflatten : callable, optional
        Maps a flat parameter-space vector ``(P,)`` to the parameters' structure.
    chunk_size : int, optional
        Columns per block of the products (:class:`FunctionOperator`).

    Attributes
    ----------
    path : str
    matrix : array or None
    """

    def __init__(
        self,
        matmat: Callable[[Array], Array],
        rmatmat: Callable[[Array], Array],
        *,
        shape: tuple[int, int],
        dtype: Any,
        xp: Any,
        device: Any = None,
        path: str,
        matrix: Array | None = None,
        unflatten: Callable[[Array], Any] | None = None,
        chunk_size: int | None = None,
    ) -> None:
        if path not in PATHS[1:]:
            raise ValueError(f"path must be one of {PATHS[1:]}, got {path!r}")
        super().__init__(
            matmat, rmatmat, shape=shape, dtype=dtype, xp=xp, device=device, chunk_size=chunk_size
        )
        self.path = path
        self.matrix = matrix
        self._unflatten = unflatten

    @classmethod
    def from_matrix(
        cls, M: Array, *, unflatten: Callable[[Array], Any] | None = None
    ) -> JacobianOperator:
        """A materialized Jacobian (products are matmuls with ``M``)."""
        xp = _dispatch.namespace(M)
        return cls(
            lambda X: M @ X,
            lambda Y: M.T @ Y,
            shape=(int(M.shape[0]), int(M.shape[1])),
            dtype=M.dtype,
            xp=xp,
            device=_dispatch.device_of(M),
            path="materialized",
            matrix=M,
            unflatten=unflatten,
        )

    @property
    def is_materialized(self) -> bool:
        """True on the materialized path (``auto`` then counts no materialization cost)."""
        return self.matrix is not None

    def to_dense(self) -> Array:
        """The explicit ``(N, P)`` Jacobian (free on the materialized path)."""
        return self.matrix if self.matrix is not None else super().to_dense()

    def unflatten(self, vector: Array) -> Any:
        """Split a parameter-space vector ``(P,)`` into the parameters' structure."""
        if self._unflatten is None:
            raise ValueError("this JacobianOperator was built without an unflatten function")
        P = self.shape[1]
        if not _dispatch.is_array(vector) or tuple(vector.shape) != (P,):
            raise ValueError(
                f"unflatten: expected an array of shape ({P},), got "
                f"{tuple(getattr(vector, 'shape', ()))}"
            )
        return self._unflatten(vector)

    def __repr__(self) -> str:
        return f"<JacobianOperator shape={self.shape} dtype={self.dtype} path={self.path}>"


def check_terms(
    terms: Any,
    *,
    points: Sequence[Any] | None = None,
    dtype: Any = None,
    device: Any = None,
    where: str = "pinn_system",
) -> list[Term]:
    """Validate a sequence of :class:`Term` (points 2-D, non-empty, of ``dtype`` and on
    ``device`` when given; weights finite and ``>= 0``); ``points``, one array per term,
    replaces the terms' points (freshly drawn ones, say)."""
    if isinstance(terms, Term) or not isinstance(terms, Sequence) or not terms:
        raise TypeError(
            f"{where}: terms must be a non-empty sequence of Term, got {type(terms).__name__}"
            + (" (wrap a single Term in a list)" if isinstance(terms, Term) else "")
        )
    if points is not None:
        if not isinstance(points, Sequence) or len(points) != len(terms):
            raise ValueError(
                f"{where}: points must hold one array per term ({len(terms)}), got "
                f"{len(points) if isinstance(points, Sequence) else type(points).__name__}"
            )
        terms = [
            t._replace(points=p) if isinstance(t, Term) else t
            for t, p in zip(terms, points, strict=True)
        ]
    out: list[Term] = []
    for i, term in enumerate(terms):
        label = f"{where}: terms[{i}]" + (f" ({term.name!r})" if getattr(term, "name", "") else "")
        if not isinstance(term, Term):
            raise TypeError(f"{label} must be a Term, got {type(term).__name__}")
        if not callable(term.residual):
            raise TypeError(f"{label}.residual must be callable (u, x) -> scalar")
        pts = term.points
        if not _dispatch.is_array(pts) or pts.ndim != 2 or pts.shape[0] == 0:
            raise ValueError(
                f"{label}.points must be a non-empty array of shape (N_k, d), got "
                f"{type(pts).__name__} of shape {tuple(getattr(pts, 'shape', ()))}"
            )
        if dtype is not None and pts.dtype != dtype:
            raise TypeError(
                f"{label}.points have dtype {pts.dtype}, the parameters {dtype}; cast the "
                "points (or the parameters) so that they agree"
            )
        if device is not None and not _dispatch.is_tracing(pts):
            pdev = _dispatch.device_of(pts)
            if pdev != device:
                raise ValueError(f"{label}.points are on {pdev}, the parameters on {device}")
        w = term.weight
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
            raise ValueError(f"{label}.weight must be a finite number >= 0, got {w!r}")
        out.append(term)
    return out


_laplacian_fallbacks: set[str] = set()  # reasons already warned about


def laplacian_with_fallback(
    forward: Callable[[], Array],
    fallback: Callable[[], Array],
    name: str,
    error: type[Exception],
) -> Array:
    """An adapter's forward Laplacian, or its ``fallback`` formulation (named ``name``)
    where the forward rules raise ``error``, with a ``RuntimeWarning`` once per reason.

    Written once for both adapters: the function is traced (or run) at the point, so the
    failure is a Python exception of that call, never an array value.
    """
    try:
        return forward()
    except error as exc:
        if str(exc) not in _laplacian_fallbacks:
            _laplacian_fallbacks.add(str(exc))
            warnings.warn(
                f"laplacian: {exc}; this function's Laplacian takes {name} "
                "(slower under a gradient in the parameters)",
                RuntimeWarning,
                stacklevel=3,
            )
        return fallback()


def row_scale(term: Term) -> float:
    """``sqrt(w_k / N_k)``: the factor of every row of the term."""
    return math.sqrt(float(term.weight) / int(term.points.shape[0]))


def stack_residual(
    terms: Sequence[Term], values: Callable[[int, Array], Array], *, xp: Any
) -> Array:
    """The weighted residual ``r`` of shape ``(N,)`` from ``values(k, points) -> (N_k,)``."""
    parts = []
    for k, t in enumerate(terms):
        v = values(k, t.points)
        if tuple(v.shape) != (t.points.shape[0],):
            raise ValueError(
                f"terms[{k}].residual must return a scalar per point, got rows of shape "
                f"{tuple(v.shape)} for {t.points.shape[0]} points"
            )
        parts.append(row_scale(t) * v)
    return xp.concat(parts) if len(parts) > 1 else parts[0]


def jacobian_path(
    n_residuals: int,
    n_params: int,
    *,
    itemsize: int = 8,
    memory_budget: int | None = None,
    method: str = "nystrom",
    rank: int = 100,
    chunk_size: int | None = None,
) -> str:
    """``"materialized"`` when a step of ``method`` with the explicit Jacobian fits in
    ``memory_budget`` (:func:`estimate_memory`), else ``"matrix-free"``.

    A materialized ``J`` makes every product a matmul (far cheaper than JVPs / VJPs), so it
    is taken whenever it fits. Default budget 2 GiB.

    Examples
    --------
    >>> from sketchlinalg import jacobian_path
    >>> jacobian_path(1_000, 5_000), jacobian_path(100_000, 1_000_000)
    ('materialized', 'matrix-free')
    """
    budget = (
        DEFAULT_BUDGET
        if memory_budget is None
        else check_int(memory_budget, "memory_budget", low=1)
    )
    est = estimate_memory(
        method,
        n_residuals,
        n_params,
        rank=min(rank, n_params),
        jacobian="materialized",
        chunk_size=chunk_size,
        itemsize=itemsize,
        memory_budget=budget,
    )
    return "materialized" if est.fits else "matrix-free"


def build_pinn_system(
    terms: Sequence[Term],
    *,
    like: Array,
    rows: Callable[[int, Array], tuple[Array, Array | Sequence[Array]]],
    matrix_free: Callable[[], tuple[Array, JacobianOperator]],
    unflatten: Callable[[Array], Any] | None = None,
    path: str = "auto",
    memory_budget: int | None = None,
    chunk_size: int | None = None,
    out: Array | None = None,
    workspace: Array | None = None,
) -> PINNSystem:
    """Residual and Jacobian of a PINN from an adapter's per-point kernels.

    Parameters
    ----------
    terms : sequence of Term
        Already checked (:func:`check_terms`).
    like : array of shape (P,)
        The flat parameters (namespace, dtype, device and ``P``).
    rows : callable
        ``rows(k, points) -> (values (c,), grads)``: term ``k``'s unweighted residual at
        ``c`` points and its gradients in the flat parameters, ``grads`` of shape ``(c, P)``
        or a sequence of ``(c, P_j)`` column blocks with ``sum P_j = P`` (one per parameter
        tensor, written into their columns of ``J`` as they are: no concatenated copy), or
        (mutable arrays only) a callable ``write(rows, scale)`` that writes ``scale`` times
        the gradients into ``rows``, the ``(c, P)`` view of ``J`` they belong in (an adapter
        that forms them by products of its own, straight into ``J``).
    matrix_free : callable
        ``() -> (r, J)``: the matrix-free residual and operator.
    unflatten : callable, optional
        Flat vector -> parameter structure, for the operator.
    path : {"auto", "materialized", "matrix-free"}
        ``"auto"``: :func:`jacobian_path`.
    memory_budget : int, optional
        Bytes for ``"auto"``; default :func:`default_budget` of the parameters (2 GiB on the
        host, half the free memory of an accelerator).
    chunk_size : int, optional
        Materialized path: points per block of ``rows`` (bounds its temporaries). Default:
        on the host, blocks of about 12 MiB of Jacobian rows (at least 64 points; JAX: 2 MiB,
        at least 16 points), which stay in cache (1.7-2.4x faster than one block of all
        points); on an accelerator all points in one block.
    out : array of shape (N, P), optional
        A mutable buffer (not JAX) that receives ``J``; reused every step, it saves the
        allocation of an ``N x P`` matrix per step. Implies the materialized path.
    workspace : array, optional
        A contiguous 1-D array: on the materialized path ``J`` is written into its first
        ``N P`` elements when it has that many, of the parameters' dtype and device;
        otherwise a new matrix is allocated (keep the returned matrix as the next
        workspace). Unlike ``out`` it takes any ``N``: what an optimizer keeps from step to
        step when the points change. A fresh ``N x P`` matrix costs a page fault per 4 KiB
        on first touch: PyTorch runs of Poisson 5D (``N P = 10^7``) spent 38 of 90 s in
        system time before the optimizers reused the matrix, 2-3 s after
        (``benchmarks/results/pinn/issue21_rla_side_by_side.md``). JAX arrays are
        immutable: a JAX workspace of exactly ``N P`` elements is the initial value the
        rows are written over (no zero-filled ``N x P`` matrix), and under ``jax.jit`` with
        the workspace donated (``donate_argnums``) XLA writes ``J`` in its buffer; without
        donation XLA copies it first, which costs more than a fresh matrix.

    Returns
    -------
    PINNSystem
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", low=1)
    xp = _dispatch.namespace(like)
    N = sum(int(t.points.shape[0]) for t in terms)
    P = int(like.shape[0])
    device = _dispatch.device_of(like)
    if out is not None:
        _check_out(out, xp, (N, P), like, path)
        path = "materialized"
    if workspace is not None:
        _check_workspace(workspace, xp)
    if path == "auto":
        itemsize = 4 if like.dtype == xp.float32 else 8
        budget = default_budget(like) if memory_budget is None else memory_budget
        path = jacobian_path(N, P, itemsize=itemsize, memory_budget=budget, chunk_size=chunk_size)
    if path == "matrix-free":
        r, J = matrix_free()
        return PINNSystem(r, J, "matrix-free")

    # Rows are written into one preallocated N x P matrix (not concatenated at the end):
    # the peak is J plus one chunk of per-point gradients, not J twice.
    # (empty: every row is written below; zeros would be one more pass over N x P, which
    # JAX's empty is: a donated JAX workspace spares it)
    if out is None and workspace is not None and _fits(workspace, N * P, like):
        out = xp.reshape(workspace if _immutable(xp) else workspace[: N * P], (N, P))
    M = xp.empty((N, P), dtype=like.dtype, device=device) if out is None else out
    r = xp.empty((N,), dtype=like.dtype, device=device)
    if chunk_size is None and _dispatch.free_device_memory(like) is None:  # the host
        row_bytes = P * (4 if like.dtype == xp.float32 else 8)
        if _dispatch.backend_name(xp) == "jax":
            chunk_size = max(_JAX_HOST_CHUNK_MIN_POINTS, _JAX_HOST_CHUNK_BYTES // row_bytes)
        else:
            chunk_size = max(_HOST_CHUNK_MIN_POINTS, _HOST_CHUNK_BYTES // row_bytes)
    offset = 0
    for k, t in enumerate(terms):
        n = int(t.points.shape[0])
        c = n if chunk_size is None else min(chunk_size, n)
        scale = row_scale(t)

        def block(
            i: Any,
            carry: tuple[Array, Array],
            k: int = k,
            t: Term = t,
            n: int = n,
            c: int = c,
            offset: int = offset,
            scale: float = scale,
        ) -> tuple[Array, Array]:
            r, M = carry
            start = min(i * c, n - c) if isinstance(i, int) else xp.minimum(i * c, n - c)
            values, grads = rows(k, _dispatch.dynamic_slice(xp, t.points, start, c))
            if callable(grads):  # the adapter writes the rows itself (mutable arrays)
                if tuple(values.shape) != (c,):
                    raise ValueError(
                        f"terms[{k}].residual must return a scalar per point: got rows of "
                        f"shape {tuple(values.shape)} for {c} points"
                    )
                grads(M[offset + start : offset + start + c, :], scale)
                return _dispatch.set_rows(xp, r, offset + start, values, scale), M
            blocks: list[Array] = list(grads) if isinstance(grads, (list, tuple)) else [grads]
            shapes = [tuple(g.shape) for g in blocks]
            if (
                tuple(values.shape) != (c,)
                or any(len(s) != 2 or s[0] != c for s in shapes)
                or sum(s[1] for s in shapes) != P
            ):
                raise ValueError(
                    f"terms[{k}].residual must return a scalar per point: got rows of shape "
                    f"{tuple(values.shape)} and gradients {shapes} for {c} points and "
                    f"{P} parameters"
                )
            r = _dispatch.set_rows(xp, r, offset + start, values, scale)
            return r, _dispatch.set_rows(xp, M, offset + start, blocks, scale)

        # the last chunk overlaps the one before, so every chunk has c points
        chunks = math.ceil(n / c)
        r, M = (
            block(0, (r, M)) if chunks == 1 else _dispatch.fori_loop(xp, 0, chunks, block, (r, M))
        )
        offset += n
    return PINNSystem(r, JacobianOperator.from_matrix(M, unflatten=unflatten), "materialized")


def _immutable(xp: Any) -> bool:
    return _dispatch.backend_name(xp) == "jax"


def _check_workspace(workspace: Any, xp: Any) -> None:
    if not (_dispatch.is_array(workspace) and workspace.ndim == 1 and _contiguous(workspace)):
        got = (
            f"shape {tuple(workspace.shape)}"
            if _dispatch.is_array(workspace)
            else type(workspace).__name__
        )
        raise ValueError(f"pinn_system: workspace must be a contiguous 1-D array; got {got}")


def _contiguous(a: Any) -> bool:
    if hasattr(a, "is_contiguous"):  # torch
        return bool(a.is_contiguous())
    flags = getattr(a, "flags", None)  # NumPy, CuPy
    return True if flags is None else bool(flags["C_CONTIGUOUS"])


def _fits(workspace: Any, size: int, like: Array) -> bool:
    xp = _dispatch.namespace(like)
    return (
        (int(workspace.shape[0]) == size if _immutable(xp) else int(workspace.shape[0]) >= size)
        and workspace.dtype == like.dtype
        and _dispatch.device_of(workspace) == _dispatch.device_of(like)
    )


def _check_out(out: Any, xp: Any, shape: tuple[int, int], like: Array, path: str) -> None:
    if path == "matrix-free":
        raise ValueError('pinn_system: out= is for the materialized path, got "matrix-free"')
    if _dispatch.backend_name(xp) == "jax":
        raise TypeError("pinn_system: out= needs a mutable array; JAX arrays are immutable")
    contiguous = getattr(out, "is_contiguous", None)
    ok = (
        _dispatch.is_array(out)
        and tuple(out.shape) == shape
        and out.dtype == like.dtype
        and _dispatch.device_of(out) == _dispatch.device_of(like)
        and (contiguous is None or contiguous())
    )
    if not ok:
        got = (
            f"shape {tuple(out.shape)}, {out.dtype} on {_dispatch.device_of(out)}"
            + ("" if contiguous is None else f", contiguous={contiguous()}")
            if _dispatch.is_array(out)
            else type(out).__name__
        )
        raise ValueError(
            f"pinn_system: out must be a contiguous array of shape {shape}, {like.dtype} on "
            f"{_dispatch.device_of(like)}; got {got}"
        )
