"""Jacobian operators of residual functions of pytrees: batched JVPs / VJPs, chunked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

import sketchlinalg as sl
from sketchlinalg import JacobianOperator

__all__ = [
    "JacobianOperator",
    "Params",
    "apply_updates",
    "check_params",
    "jacobian_operator",
    "split_params",
]

PyTree = Any


class Params(NamedTuple):
    """A pytree split into its trainable parameters and the rest (:func:`split_params`).

    Attributes
    ----------
    flat : jax.Array of shape (P,)
        The parameters, raveled (``jax.flatten_util.ravel_pytree`` order).
    unflatten : callable
        ``theta -> pytree``: the original pytree with the parameters replaced by ``theta``'s
        entries and every other leaf as it was.
    updates : callable
        ``theta -> pytree`` of the same structure, ``theta``'s entries at the parameters and
        ``None`` at every other leaf (what an optax transformation returns: apply it with
        :func:`apply_updates` or ``equinox.apply_updates``).
    """

    flat: jax.Array
    unflatten: Callable[[jax.Array], PyTree]
    updates: Callable[[jax.Array], PyTree]


def _is_float_array(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return (
        hasattr(leaf, "shape")
        and dtype is not None
        and not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
        and jnp.issubdtype(dtype, jnp.inexact)
    )


def split_params(params: PyTree, name: str = "params") -> Params:
    """The trainable parameters of a pytree: its floating-point array leaves.

    Every other leaf (functions, integer or boolean arrays, PRNG keys, ``None``, Python
    scalars next to arrays) is held fixed, as ``equinox.is_inexact_array`` filters: so an
    Equinox module or a Flax ``nnx`` module (with its ``Rngs``) is its own parameter pytree.
    A pytree of Python floats only (``{"a": 1.0, "b": 2.0}``) is all parameters. Complex
    leaves and mixed float dtypes are refused (the natural-gradient step is real and needs
    one dtype).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from sketchlinalg_jax import split_params
    >>> p = split_params({"w": jnp.ones(2), "act": jnp.tanh, "n": jnp.asarray(3)})
    >>> p.flat.tolist(), p.updates(p.flat)["act"] is None
    ([1.0, 1.0], True)
    """
    with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not with_path:
        raise ValueError(f"{name} has no leaves (expected a pytree of float arrays or a module)")
    leaves = [leaf for _, leaf in with_path]
    trainable = [_is_float_array(leaf) for leaf in leaves]
    if not any(trainable):  # a pytree of Python floats: scipy-style x0
        trainable = [isinstance(leaf, float) for leaf in leaves]
        if not all(trainable):
            bad = next(
                (path, leaf) for (path, leaf), t in zip(with_path, trainable, strict=True) if not t
            )
            raise TypeError(
                f"{name} has no floating-point array leaf to train (leaf "
                f"{jax.tree_util.keystr(bad[0])} is {type(bad[1]).__name__}"
                f"{' of dtype ' + str(bad[1].dtype) if hasattr(bad[1], 'dtype') else ''}); "
                "natural-gradient optimizers train real float arrays"
            )
    dtypes: dict[str, str] = {}
    for (path, leaf), t in zip(with_path, trainable, strict=True):
        if not t:
            continue
        dtype = jnp.result_type(leaf)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(
                f"{name} leaf {jax.tree_util.keystr(path)} has dtype {dtype}; natural-gradient "
                "optimizers need real floating leaves (split it into real and imaginary parts)"
            )
        dtypes.setdefault(str(dtype), jax.tree_util.keystr(path))
    if len(dtypes) > 1:
        where = ", ".join(f"{d} at {k}" for d, k in sorted(dtypes.items()))
        raise TypeError(
            f"{name} mixes float dtypes ({where}); use one (Flax: param_dtype=jnp.float64, "
            "Equinox: dtype=jnp.float64 on each layer)"
        )
    flat, unravel = ravel_pytree([leaf for leaf, t in zip(leaves, trainable, strict=True) if t])

    def rebuild(theta: jax.Array, fixed: Callable[[Any], Any]) -> PyTree:
        values = iter(unravel(theta))
        out = [
            next(values) if t else fixed(leaf) for leaf, t in zip(leaves, trainable, strict=True)
        ]
        return jax.tree_util.tree_unflatten(treedef, out)

    return Params(
        flat,
        lambda theta: rebuild(theta, lambda leaf: leaf),
        lambda theta: rebuild(theta, lambda leaf: None),
    )


def check_params(params: PyTree, name: str = "params") -> None:
    """Reject pytrees :func:`split_params` cannot train (no float leaf, complex or mixed
    float dtypes)."""
    split_params(params, name)


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
    """``params + updates`` leaf by leaf, keeping the leaves whose update is ``None`` (the
    fixed leaves of :func:`split_params`: an Equinox module's functions, an ``nnx``
    module's RNG state), each in its parameter's dtype; otherwise as
    ``optax.apply_updates`` (which cannot add ``None`` to a function).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from sketchlinalg_jax import apply_updates
    >>> new = apply_updates({"w": jnp.ones(2), "act": jnp.tanh}, {"w": jnp.ones(2), "act": None})
    >>> new["w"].tolist(), new["act"] is jnp.tanh
    ([2.0, 2.0], True)
    """

    def add(p: Any, u: Any) -> Any:
        if u is None or p is None:
            return p
        return jnp.asarray(p + u).astype(jnp.result_type(p))

    return jax.tree_util.tree_map(add, params, updates, is_leaf=lambda x: x is None)


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
        ``params -> r`` with ``r`` of shape ``(N,)``.
    params : pytree
        Where to linearize: any pytree (a dict of arrays, an Equinox or Flax ``nnx``
        module); its floating-point arrays are the parameters (:func:`split_params`).
    chunk_size : int, optional
        Largest number of block columns pushed through the model at once.

    Returns
    -------
    r : jax.Array of shape (N,)
    J : sketchlinalg.JacobianOperator of shape (N, P)
        Over the flattened parameters (:func:`split_params` order);
        ``J.unflatten`` maps a flat vector back to the pytree. ``J.path == "matrix-free"``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from sketchlinalg_jax import jacobian_operator
    >>> r, J = jacobian_operator(lambda p: jnp.stack([p["a"] ** 2, 3 * p["a"]]), {"a": 2.0})
    >>> J.to_dense().tolist()
    [[4.0], [3.0]]
    """
    flat, unravel, _ = split_params(params)
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
