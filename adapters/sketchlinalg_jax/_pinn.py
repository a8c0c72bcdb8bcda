"""PINN residuals and Jacobians: JAX's per-point kernels for the core's PINN system."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

import sketchlinalg as sl
from sketchlinalg import PATHS, PINNSystem, Term

from ._operators import check_params, jacobian_operator

__all__ = ["PATHS", "PINNSystem", "Term", "pinn_residual", "pinn_system"]

PyTree = Any
Model = Callable[[PyTree, jax.Array], jax.Array]


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


def pinn_residual(
    model: Model,
    params: PyTree,
    terms: Sequence[Term],
    *,
    points: Sequence[jax.Array] | None = None,
) -> jax.Array:
    """The weighted residual vector ``r(params)`` of shape ``(N,)`` (no Jacobian).

    This is what line searches evaluate: one forward pass per point. ``points`` (one array
    per term) replaces the terms' points, e.g. freshly drawn ones.
    """
    check_params(params)
    flat, unravel = ravel_pytree(params)
    terms = sl.check_terms(terms, points=points, dtype=flat.dtype)
    rows = [jax.vmap(_row(model, t, unravel), in_axes=(None, 0)) for t in terms]
    return sl.stack_residual(terms, lambda k, pts: rows[k](flat, pts), xp=jnp)


def pinn_system(
    model: Model,
    params: PyTree,
    terms: Sequence[Term],
    *,
    path: str = "auto",
    memory_budget: int | None = None,
    chunk_size: int | None = None,
    points: Sequence[jax.Array] | None = None,
) -> PINNSystem:
    """Residual and Jacobian operator of a PINN (:func:`sketchlinalg.build_pinn_system`).

    Parameters
    ----------
    model : callable
        ``model(params, x) -> scalar`` for one point ``x`` of shape ``(d,)``.
    params : pytree
        Network parameters (float leaves of one dtype).
    terms : sequence of Term
        Interior, boundary, initial... point sets with their residuals and weights.
    path : {"auto", "materialized", "matrix-free"}
        ``"materialized"`` builds the explicit ``N x P`` Jacobian from per-point gradients
        (``vmap`` over points of ``value_and_grad`` in the parameters), usually far cheaper
        than ``N`` VJPs of the whole residual; ``"matrix-free"`` keeps batched JVPs/VJPs;
        ``"auto"`` materializes when a step fits in ``memory_budget``
        (:func:`sketchlinalg.jacobian_path`).
    memory_budget : int, optional
        Bytes for ``"auto"`` (default 2 GiB).
    chunk_size : int, optional
        Materialized path: points per chunk (bounds the per-point gradient temporaries);
        matrix-free path: block columns per chunk.
    points : sequence of arrays, optional
        One array per term replacing its points (an optimizer passes them through its
        ``update(..., points=...)`` so that a training loop can resample).

    Returns
    -------
    PINNSystem
    """
    check_params(params)
    flat, unravel = ravel_pytree(params)
    terms = sl.check_terms(terms, points=points, dtype=flat.dtype)
    kernels = [
        jax.vmap(jax.value_and_grad(_row(model, t, unravel)), in_axes=(None, 0)) for t in terms
    ]

    def matrix_free() -> tuple[jax.Array, sl.JacobianOperator]:
        return jacobian_operator(
            lambda p: pinn_residual(model, p, terms), params, chunk_size=chunk_size
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
    )
