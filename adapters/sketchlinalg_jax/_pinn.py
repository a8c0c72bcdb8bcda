"""PINN residuals and Jacobians: JAX's per-point kernels for the core's PINN system."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

import sketchlinalg as sl
from sketchlinalg import PATHS, PINNSystem, Term

from ._operators import jacobian_operator, split_params
from ._sharding import RowShardedJacobian, RowSharding, row_sharding

__all__ = ["PATHS", "PINNSystem", "Term", "pinn_residual", "pinn_system"]

PyTree = Any
Model = Callable[[PyTree, jax.Array], jax.Array]


def _model(model: Any, params: PyTree, where: str) -> tuple[Model, PyTree]:
    """``(apply, params)`` with ``apply(params, x) -> u(x)`` for one point ``x``.

    ``params=None``: the model is its own parameter pytree (an Equinox module, a Flax
    ``nnx`` module, any callable pytree), ``apply(m, x) = m(x)``; a Flax ``linen`` module
    is applied to its variables (``module.apply``); else ``model(params, x)``.
    """
    if params is None:
        if not callable(model):
            raise TypeError(
                f"{where}: with params=None the model must be a callable pytree (an Equinox "
                f"or Flax nnx module), got {type(model).__name__}"
            )
        return (lambda m, x: m(x)), model
    linen = sys.modules.get("flax.linen")
    if linen is not None and isinstance(model, linen.Module):
        return model.apply, params
    if not callable(model):
        raise TypeError(
            f"{where}: model must be callable, model(params, x) -> u, got {type(model).__name__}"
        )
    return model, params


def _row(model: Model, term: Term, unravel: Callable[[jax.Array], PyTree]) -> Any:
    """``(flat params, x) -> residual_k(u, x)``, a scalar."""

    def row(theta: jax.Array, x: jax.Array) -> jax.Array:
        params = unravel(theta)

        def u(y: jax.Array) -> jax.Array:
            out = model(params, y)
            if out.size != 1:
                raise ValueError(
                    f"model(params, x) must return a scalar (or shape (1,)) for one point, "
                    f"got shape {out.shape}"
                )
            return jnp.reshape(out, ())

        return term.at(u, x)

    return row


def _rows(model: Any, params: PyTree, terms: Any, points: Any, where: str) -> Any:
    """The checked terms and the flat parameters with the per-point kernel of each term."""
    apply, params = _model(model, params, where)
    flat, unravel, _ = split_params(params)
    terms = sl.check_terms(terms, points=points, dtype=flat.dtype, where=where)
    rows = [_row(apply, t, unravel) for t in terms]
    return terms, flat, unravel, apply, params, rows


def pinn_residual(
    model: Any,
    params: PyTree = None,
    terms: Sequence[Term] | None = None,
    *,
    points: Sequence[jax.Array] | None = None,
    sharding: jax.sharding.NamedSharding | None = None,
) -> jax.Array:
    """The weighted residual vector ``r(params)`` of shape ``(N,)`` (no Jacobian).

    This is what line searches evaluate: one forward pass per point. ``model``,
    ``params``, ``terms`` and ``sharding`` as in :func:`pinn_system` (with ``sharding``
    the rows come in its shard-major order, the same as :func:`pinn_system`'s); ``points``
    (one array per term) replaces the terms' points, e.g. freshly drawn ones.
    """
    where = "pinn_residual"
    rs = row_sharding(sharding)
    terms, flat, _, _, _, rows = _rows(model, params, _need(terms, where), points, where)
    batched = [jax.vmap(row, in_axes=(None, 0)) for row in rows]
    if rs is None:
        return sl.stack_residual(terms, lambda k, pts: batched[k](flat, pts), xp=jnp)
    rs.check([int(t.points.shape[0]) for t in terms], where)
    return rs.stack(
        [
            _scale(t) * _values(batched[k](flat, rs.constrain(t.points)), t, k)
            for k, t in enumerate(terms)
        ]
    )


def pinn_system(
    model: Any,
    params: PyTree = None,
    terms: Sequence[Term] | None = None,
    *,
    path: str = "auto",
    memory_budget: int | None = None,
    chunk_size: int | None = None,
    points: Sequence[jax.Array] | None = None,
    sharding: jax.sharding.NamedSharding | None = None,
    workspace: jax.Array | None = None,
) -> PINNSystem:
    """Residual and Jacobian operator of a PINN (:func:`sketchlinalg.build_pinn_system`).

    Parameters
    ----------
    model : callable, Equinox / Flax nnx module, or Flax linen module
        The network ``u`` at one point ``x`` of shape ``(d,)``, returning a scalar (or shape
        ``(1,)``), given as one of

        - a function ``model(params, x)`` of a parameter pytree;
        - a callable module that holds its parameters (an Equinox module, a Flax ``nnx``
          module), ``model(x)``, with ``params=None``: the module is the parameter pytree
          and its floating-point arrays are the parameters (:func:`split_params`), so an
          optimizer is given the module itself (``opt.init(net)``,
          ``opt.update(None, state, net)``, then :func:`apply_updates`);
        - a Flax ``linen`` module, applied to ``params`` (its variables) by
          ``model.apply(params, x)``.
    params : pytree, optional
        The parameters (floating-point leaves of one dtype; other leaves are held fixed),
        or ``None`` for a module that holds its own.
    terms : sequence of Term
        Interior, boundary, initial... point sets with their residuals and weights. The
        points must have the parameters' dtype (Flax's and Equinox's default parameters are
        float32 even with ``jax_enable_x64``: create them with ``param_dtype`` /
        ``dtype=jnp.float64`` for float64 work, or the points in float32).
    path : {"auto", "materialized", "matrix-free"}
        ``"materialized"`` builds the explicit ``N x P`` Jacobian from per-point gradients
        (``vmap`` over points of ``value_and_grad`` in the parameters), usually far cheaper
        than ``N`` VJPs of the whole residual; ``"matrix-free"`` keeps batched JVPs/VJPs;
        ``"auto"`` materializes when a step fits in ``memory_budget``
        (:func:`sketchlinalg.jacobian_path`).
    memory_budget : int, optional
        Bytes for ``"auto"`` (default 2 GiB on the host, half the free memory of a GPU:
        :func:`sketchlinalg.default_budget`).
    chunk_size : int, optional
        Materialized path: points per chunk (bounds the per-point gradient temporaries);
        matrix-free path: block columns per chunk.
    points : sequence of arrays, optional
        One array per term replacing its points (an optimizer passes them through its
        ``update(..., points=...)`` so that a training loop can resample).
    sharding : jax.sharding.NamedSharding, optional
        Data parallelism over collocation points:
        ``NamedSharding(mesh, PartitionSpec("data"))`` splits every term's points (their
        leading axis, a multiple of the number of shards) over the mesh axis ``"data"``,
        whose type must be ``AxisType.Auto`` (``jax.make_mesh`` defaults to ``Explicit``).
        The rows of ``r`` and ``J`` stay on the device of their points, so under
        ``jax.jit`` the optimizers' step computes ``J^T (J Omega)``, ``J^T r``, ``J^T J``
        and the loss as local products plus all-reduces, never gathering ``J``; the
        residual-space methods (``engd_woodbury``, ``spring``, and an adaptive SNGD's exact
        top rung when ``N < P``) all-gather ``J`` once to form the ``N x N`` kernel. The
        rows are ordered shard by shard (shard ``s``: its rows of term 0, of term 1, ...),
        which changes no step: ``||r||``, ``J^T J`` and ``J^T r`` are sums over rows. The
        materialized path builds each shard's rows in one block, or ``chunk_size`` points
        at a time; ``"auto"`` sizes a shard's ``N / shards`` rows against
        ``memory_budget``; the matrix-free path keeps one parameter copy per shard, so that
        ``J^T Y`` is one all-reduce. The optimizers' ``update`` must then run under
        ``jax.jit``, with the parameters and the state replicated. Several hosts:
        ``jax.distributed.initialize()``, a mesh over ``jax.devices()``, global point
        arrays (``jax.make_array_from_callback``), then the same code.
    workspace : jax.Array, optional
        The last build's Jacobian, flattened (``N P`` elements, the parameters' dtype): the
        materialized path writes the rows over it instead of over a zero-filled matrix.
        Under ``jax.jit`` with the workspace donated XLA builds ``J`` in its buffer, which
        saves the allocation, zero fill and first-touch page faults of an ``N x P`` matrix
        per step; the optimizers keep it with ``workspace=True``
        (:func:`natural_gradient`). Another size is ignored (a fresh matrix is built); not
        with ``sharding``.

    Returns
    -------
    PINNSystem

    Examples
    --------
    An Equinox module is its own parameter pytree:

    >>> import functools, jax, jax.numpy as jnp, equinox as eqx
    >>> import sketchlinalg_jax as slj
    >>> net = eqx.nn.MLP(1, "scalar", 8, 1, activation=jnp.tanh, key=jax.random.key(0))
    >>> x = jnp.linspace(0.0, 1.0, 5)[:, None]
    >>> terms = [slj.Term(lambda u, x: u(x) - x[0], x)]
    >>> system = functools.partial(slj.pinn_system, terms=terms)
    >>> system(net).jacobian.shape  # 5 points x 25 parameters
    (5, 25)
    """
    where = "pinn_system"
    rs = row_sharding(sharding)
    terms, flat, unravel, apply, params, rows = _rows(
        model, params, _need(terms, where), points, where
    )
    kernels = [jax.vmap(jax.value_and_grad(row), in_axes=(None, 0)) for row in rows]
    if rs is not None:
        if workspace is not None:
            raise ValueError("pinn_system: workspace= is for unsharded rows; got sharding=")
        return _sharded_system(
            rs, terms, flat, unravel, params, rows, kernels, path, memory_budget, chunk_size
        )

    def matrix_free() -> tuple[jax.Array, sl.JacobianOperator]:
        return jacobian_operator(
            lambda p: pinn_residual(apply, p, terms), params, chunk_size=chunk_size
        )

    return sl.build_pinn_system(
        terms,
        like=flat,
        rows=lambda k, pts: kernels[k](flat, pts),
        matrix_free=matrix_free,
        unflatten=unravel,
        path=path,
        memory_budget=memory_budget,
        chunk_size=chunk_size,
        workspace=workspace,
    )


def _scale(term: Term) -> float:
    """``sqrt(w_k / N_k)`` of the term's (global) point count."""
    return math.sqrt(float(term.weight) / int(term.points.shape[0]))


def _values(v: jax.Array, term: Term, k: int) -> jax.Array:
    if tuple(v.shape) != (term.points.shape[0],):
        raise ValueError(
            f"terms[{k}].residual must return a scalar per point, got rows of shape "
            f"{tuple(v.shape)} for {term.points.shape[0]} points"
        )
    return v


def _sharded_system(
    rs: RowSharding,
    terms: Sequence[Term],
    flat: jax.Array,
    unravel: Callable[[jax.Array], PyTree],
    params: PyTree,
    rows: list[Any],
    kernels: list[Any],
    path: str,
    memory_budget: int | None,
    chunk_size: int | None,
) -> PINNSystem:
    """:func:`pinn_system` with its rows sharded (:mod:`._sharding`)."""
    where = "pinn_system"
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    sizes = [int(t.points.shape[0]) for t in terms]
    rs.check(sizes, where)
    P = int(flat.shape[0])
    if path == "auto":
        budget = sl.default_budget(flat) if memory_budget is None else memory_budget
        itemsize = 4 if flat.dtype == jnp.float32 else 8
        path = sl.jacobian_path(sum(sizes) // rs.shards, P, itemsize=itemsize, memory_budget=budget)
    if path == "matrix-free":
        D = rs.shards

        def residual(p: PyTree) -> jax.Array:
            # one copy of the parameters per shard: a transposed product (J^T Y) sums the
            # contributions of every term on its shard, then all-reduces once
            thetas = rs.constrain(jnp.broadcast_to(split_params(p).flat, (D, P)))
            parts = []
            for k, t in enumerate(terms):
                pts = rs.constrain(jnp.reshape(t.points, (D, -1, *t.points.shape[1:])))
                values = jax.vmap(jax.vmap(rows[k], in_axes=(None, 0)))(thetas, pts)
                parts.append(_scale(t) * values)
            out = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)
            return rs.constrain(jnp.reshape(out, (-1,)))

        r, J = jacobian_operator(residual, params, chunk_size=chunk_size)
        return PINNSystem(r, J, "matrix-free")
    values, grads = [], []
    for k, t in enumerate(terms):
        v, g = _chunked_rows(rs, kernels[k], flat, t.points, chunk_size)
        scale = _scale(t)
        values.append(scale * _values(v, t, k))
        grads.append(scale * g)
    r, M = rs.stack(values), rs.stack(grads)
    return PINNSystem(r, RowShardedJacobian.of(M, rs, unflatten=unravel), "materialized")


def _chunked_rows(
    rs: RowSharding, kernel: Any, flat: jax.Array, points: jax.Array, chunk_size: int | None
) -> tuple[jax.Array, jax.Array]:
    """A term's residual rows and their gradients, each shard's points ``chunk_size`` at a
    time (``jax.lax.map``; the last chunk padded with copies of the shard's last point)."""
    D, n = rs.shards, int(points.shape[0]) // rs.shards
    if chunk_size is None or chunk_size >= n:
        return kernel(flat, rs.constrain(points))
    c = int(chunk_size)
    chunks = -(-n // c)
    local = rs.constrain(jnp.reshape(points, (D, n, *points.shape[1:])))
    pad = [(0, 0), (0, chunks * c - n)] + [(0, 0)] * (points.ndim - 1)
    local = rs.constrain(jnp.pad(local, pad, mode="edge"))
    blocks = jnp.moveaxis(jnp.reshape(local, (D, chunks, c, *points.shape[1:])), 1, 0)
    v, g = jax.lax.map(lambda x: jax.vmap(kernel, in_axes=(None, 0))(flat, x), blocks)
    v = jnp.reshape(jnp.moveaxis(v, 0, 1), (D, chunks * c))[:, :n]  # (chunks, D, c) -> rows
    g = jnp.reshape(jnp.moveaxis(g, 0, 1), (D, chunks * c, -1))[:, :n]
    return rs.constrain(jnp.reshape(v, (D * n,))), rs.constrain(jnp.reshape(g, (D * n, -1)))


def _need(terms: Any, where: str) -> Any:
    if terms is None:
        raise TypeError(f"{where}: give terms (a sequence of Term)")
    return terms
