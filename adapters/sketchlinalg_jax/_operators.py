"""Jacobian operators of residual functions of pytrees: batched JVPs / VJPs, chunked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

import sketchlinalg as sl
from sketchlinalg import JacobianOperator

__all__ = ["JacobianOperator", "check_params", "jacobian_operator"]

PyTree = Any


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
    J : sketchlinalg.JacobianOperator of shape (N, P)
        Over the flattened parameters (``jax.flatten_util.ravel_pytree`` order);
        ``J.unflatten`` maps a flat vector back to the pytree. ``J.path == "matrix-free"``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from sketchlinalg_jax import jacobian_operator
    >>> r, J = jacobian_operator(lambda p: jnp.stack([p["a"] ** 2, 3 * p["a"]]), {"a": 2.0})
    >>> J.to_dense().tolist()
    [[4.0], [3.0]]
    """
    check_params(params)
    flat, unravel = ravel_pytree(params)
    r, jvp = jax.linearize(lambda theta: residual_fn(unravel(theta)), flat)
    if getattr(r, "ndim", None) != 1:
        raise ValueError(
            f"jacobian_operator: the residual function must return a 1-D array of shape (N,), "
            f"got shape {getattr(r, 'shape', type(r).__name__)}"
        )
    vjp_t = jax.linear_transpose(jvp, flat)
    J = JacobianOperator(
        jax.vmap(jvp, in_axes=1, out_axes=1),
        jax.vmap(lambda y: vjp_t(y)[0], in_axes=1, out_axes=1),
        shape=(r.shape[0], flat.shape[0]),
        dtype=flat.dtype,
        xp=jnp,
        path="matrix-free",
        unflatten=unravel,
        chunk_size=chunk_size,
    )
    sl.check_system((r, J), flat.shape[0], flat.dtype, "jacobian_operator")
    return r, J
