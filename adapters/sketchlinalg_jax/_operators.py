"""Jacobian operators of residual functions of pytrees: batched JVPs / VJPs, chunked."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

import sketchlinalg as sl

__all__ = ["JacobianOperator", "check_params", "jacobian_operator"]

PyTree = Any


class JacobianOperator(sl.FunctionOperator):
    """A :class:`sketchlinalg.FunctionOperator` that also says how its products are made.

    Attributes
    ----------
    path : str
        ``"matrix-free"`` (batched JVPs/VJPs) or ``"materialized"`` (an explicit array).
    unravel : callable
        Maps a flat parameter vector of length ``P`` back to the parameter pytree.
    """

    def __init__(
        self,
        matmat: Callable[[jax.Array], jax.Array],
        rmatmat: Callable[[jax.Array], jax.Array],
        *,
        shape: tuple[int, int],
        dtype: Any,
        path: str,
        unravel: Callable[[jax.Array], PyTree],
        dense: jax.Array | None = None,
    ) -> None:
        super().__init__(matmat, rmatmat, shape=shape, dtype=dtype, xp=jnp)
        self.path = path
        self.unravel = unravel
        self._dense = dense

    def to_dense(self) -> jax.Array:
        """The ``(N, P)`` Jacobian (free on the materialized path)."""
        return self._dense if self._dense is not None else super().to_dense()

    @property
    def is_materialized(self) -> bool:
        """True on the materialized path."""
        return self._dense is not None


def check_params(params: PyTree, name: str = "params") -> None:
    """Reject pytrees with non-floating leaves or mixed dtypes (they cannot be raveled)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        raise ValueError(f"{name} has no array leaves")
    dtypes = set()
    for path, leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name} leaf {jax.tree_util.keystr(path)} has dtype {dtype}; natural-gradient "
                "optimizers need real floating leaves (cast it, or keep it out of params)"
            )
        dtypes.add(dtype)
    if len(dtypes) > 1:
        raise TypeError(f"{name} mixes dtypes {sorted(map(str, dtypes))}; use one float dtype")


def _chunked(
    fn: Callable[[jax.Array], jax.Array], X: jax.Array, chunk_size: int | None
) -> jax.Array:
    """Apply a column-batched ``fn`` to ``X`` (n, k) in chunks of at most ``chunk_size`` columns.

    Chunks run one after another under ``jax.lax.map``, so peak memory is that of one chunk.
    The last chunk is zero-padded (products are linear) and the padding is dropped.
    """
    k = X.shape[1]
    if chunk_size is None or k <= chunk_size:
        return fn(X)
    n_chunks = math.ceil(k / chunk_size)
    pad = n_chunks * chunk_size - k
    Xp = jnp.pad(X, ((0, 0), (0, pad)))
    blocks = jnp.moveaxis(Xp.reshape(X.shape[0], n_chunks, chunk_size), 1, 0)
    out = jax.lax.map(fn, blocks)  # (n_chunks, m, chunk)
    out = jnp.moveaxis(out, 0, 1).reshape(out.shape[1], n_chunks * chunk_size)
    return out[:, :k]


def check_residual(r: Any, where: str) -> jax.Array:
    """A 1-D floating residual; eagerly, also finite."""
    if not hasattr(r, "shape") or r.ndim != 1:
        raise ValueError(
            f"{where}: the residual function must return a 1-D array of shape (N,), got "
            f"shape {getattr(r, 'shape', type(r).__name__)}"
        )
    if not isinstance(r, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(r))):
        bad = int(jnp.sum(~jnp.isfinite(r)))
        raise ValueError(
            f"{where}: the residual holds {bad} NaN/Inf value(s) at these parameters; check "
            "the model and the points (overflow, log/sqrt of a negative number)"
        )
    return r


def jacobian_operator(
    residual_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    chunk_size: int | None = None,
) -> tuple[jax.Array, JacobianOperator]:
    """Residual and matrix-free Jacobian operator of ``residual_fn`` at ``params``.

    The residual is linearized once (``jax.linearize``); ``matmat`` maps the linearized JVP
    over the columns of a block with ``vmap`` and ``rmatmat`` does the same with its
    transpose (batched VJPs). With ``chunk_size``, blocks are processed ``chunk_size``
    columns at a time (``jax.lax.map``), bounding the memory of a product.

    Parameters
    ----------
    residual_fn : callable
        ``params -> r`` with ``r`` of shape ``(N,)``; ``params`` is any pytree of float arrays.
    params : pytree
        Where to linearize.
    chunk_size : int, optional
        Largest number of block columns pushed through the model at once.

    Returns
    -------
    r : jax.Array of shape (N,)
    J : JacobianOperator of shape (N, P)
        Over the flattened parameters (``jax.flatten_util.ravel_pytree`` order);
        ``J.unravel`` maps a flat vector back to the pytree. ``J.path == "matrix-free"``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from sketchlinalg_jax import jacobian_operator
    >>> r, J = jacobian_operator(lambda p: jnp.stack([p["a"] ** 2, 3 * p["a"]]), {"a": 2.0})
    >>> J.to_dense().tolist()
    [[4.0], [3.0]]
    """
    check_params(params)
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    flat, unravel = ravel_pytree(params)

    def f(theta: jax.Array) -> jax.Array:
        return residual_fn(unravel(theta))

    r, jvp = jax.linearize(f, flat)
    check_residual(r, "jacobian_operator")
    if r.dtype != flat.dtype:
        raise TypeError(f"jacobian_operator: residual dtype {r.dtype} != params dtype {flat.dtype}")
    vjp_t = jax.linear_transpose(jvp, flat)

    def vjp(y: jax.Array) -> jax.Array:
        return vjp_t(y)[0]

    def matmat(X: jax.Array) -> jax.Array:
        return _chunked(jax.vmap(jvp, in_axes=1, out_axes=1), X, chunk_size)

    def rmatmat(Y: jax.Array) -> jax.Array:
        return _chunked(jax.vmap(vjp, in_axes=1, out_axes=1), Y, chunk_size)

    J = JacobianOperator(
        matmat,
        rmatmat,
        shape=(r.shape[0], flat.shape[0]),
        dtype=r.dtype,
        path="matrix-free",
        unravel=unravel,
    )
    return r, J
