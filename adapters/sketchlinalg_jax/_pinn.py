"""PINN residuals and Jacobians from point sets and per-point residual functions."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ._operators import JacobianOperator, check_params, check_residual, jacobian_operator

__all__ = ["PATHS", "PINNSystem", "Term", "pinn_residual", "pinn_system"]

PyTree = Any
Model = Callable[[PyTree, jax.Array], jax.Array]

PATHS = ("auto", "materialized", "matrix-free")
DEFAULT_MEMORY_BUDGET = 2 * 2**30


class Term(NamedTuple):
    """One family of PINN residual rows.

    Attributes
    ----------
    residual : callable
        ``residual(u, x) -> scalar`` for one point ``x`` of shape ``(d,)``, where
        ``u(x) -> scalar`` is the network at the current parameters. E.g. for
        ``-Laplace u = f``: ``lambda u, x: -laplacian(u, x) - f(x)``.
    points : array of shape (N_k, d)
        Collocation points.
    weight : float
        Measure of the term's domain (``|Omega|`` for interior points, ``|dOmega|`` for the
        boundary); each row is scaled by ``sqrt(weight / N_k)`` so that ``1/2 ||r||^2`` is a
        quadrature of the continuous loss (the Theory page of the documentation).
    name : str
        Label for messages.
    """

    residual: Callable[[Callable[[jax.Array], jax.Array], jax.Array], jax.Array]
    points: jax.Array
    weight: float = 1.0
    name: str = ""


class PINNSystem(NamedTuple):
    """The weighted residual of a PINN and its Jacobian operator.

    Attributes
    ----------
    residual : jax.Array of shape (N,)
        Rows of all terms, stacked in order.
    jacobian : JacobianOperator of shape (N, P)
        Over the flattened parameters.
    path : str
        ``"materialized"`` or ``"matrix-free"``.
    """

    residual: jax.Array
    jacobian: JacobianOperator
    path: str


def _scalar_model(model: Model, params: PyTree) -> Callable[[jax.Array], jax.Array]:
    def u(x: jax.Array) -> jax.Array:
        out = model(params, x)
        if out.size != 1:
            raise ValueError(
                f"model(params, x) must return a scalar (or shape (1,)) for one point, got "
                f"shape {out.shape}"
            )
        return jnp.reshape(out, ())

    return u


def _check_terms(terms: Sequence[Term]) -> list[Term]:
    terms = list(terms)
    if not terms:
        raise ValueError("terms must hold at least one Term")
    for i, t in enumerate(terms):
        if not isinstance(t, Term):
            raise TypeError(f"terms[{i}] must be a Term, got {type(t).__name__}")
        if t.points.ndim != 2 or t.points.shape[0] < 1:
            raise ValueError(
                f"terms[{i}] ({t.name or 'unnamed'}): points must have shape (N_k, d) with "
                f"N_k >= 1, got {t.points.shape}"
            )
        if not t.weight > 0:
            raise ValueError(
                f"terms[{i}] ({t.name or 'unnamed'}): weight must be > 0, got {t.weight}"
            )
    return terms


def _row_fn(model: Model, term: Term) -> Callable[[PyTree, jax.Array], jax.Array]:
    scale = math.sqrt(term.weight / term.points.shape[0])

    def row(params: PyTree, x: jax.Array) -> jax.Array:
        return scale * jnp.reshape(term.residual(_scalar_model(model, params), x), ())

    return row


def pinn_residual(model: Model, params: PyTree, terms: Sequence[Term]) -> jax.Array:
    """The weighted residual vector ``r(params)`` of shape ``(N,)`` (no Jacobian).

    This is what line searches evaluate: one forward pass per point.
    """
    terms = _check_terms(terms)
    parts = [jax.vmap(_row_fn(model, t), in_axes=(None, 0))(params, t.points) for t in terms]
    return jnp.concatenate(parts)


def pinn_system(
    model: Model,
    params: PyTree,
    terms: Sequence[Term],
    *,
    path: str = "auto",
    memory_budget: int | None = None,
    chunk_size: int | None = None,
) -> PINNSystem:
    """Residual and Jacobian operator of a PINN.

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
        (``vmap`` over points of ``grad`` in the parameters), usually far cheaper than
        ``N`` VJPs of the whole residual; ``"matrix-free"`` keeps batched JVPs/VJPs;
        ``"auto"`` materializes when ``N * P * itemsize <= memory_budget``.
    memory_budget : int, optional
        Bytes for ``"auto"`` (default 2 GiB).
    chunk_size : int, optional
        Materialized path: points per chunk (bounds the per-point gradient temporaries);
        matrix-free path: block columns per chunk.

    Returns
    -------
    PINNSystem
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    terms = _check_terms(terms)
    check_params(params)
    flat, unravel = ravel_pytree(params)
    N = sum(t.points.shape[0] for t in terms)
    P = flat.shape[0]
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    if path == "auto":
        path = "materialized" if N * P * flat.dtype.itemsize <= budget else "matrix-free"
    if path == "matrix-free":
        r, J = jacobian_operator(
            lambda p: pinn_residual(model, p, terms), params, chunk_size=chunk_size
        )
        return PINNSystem(r, J, "matrix-free")

    # J is assembled in place: every term (in chunks of ``chunk_size`` points) writes its
    # rows into one preallocated N x P buffer, so under jit the peak is J plus one chunk's
    # per-point gradients, not J twice (which concatenating per-term blocks would cost).
    r = jnp.zeros((N,), flat.dtype)
    Jd = jnp.zeros((N, P), flat.dtype)
    offset = 0
    for t in terms:
        row = _row_fn(model, t)

        def value_and_grad(x: jax.Array, row: Any = row) -> tuple[jax.Array, jax.Array]:
            return jax.value_and_grad(lambda th: row(unravel(th), x))(flat)

        batched = jax.vmap(value_and_grad)
        n = t.points.shape[0]
        c = n if chunk_size is None else min(chunk_size, n)
        if c == n:
            rk, Jk = batched(t.points)
            r = jax.lax.dynamic_update_slice(r, rk, (offset,))
            Jd = jax.lax.dynamic_update_slice(Jd, Jk, (offset, 0))
        else:

            def body(
                i: jax.Array,
                carry: tuple[jax.Array, jax.Array],
                batched: Any = batched,
                t: Term = t,
                n: int = n,
                c: int = c,
                offset: int = offset,
            ) -> tuple[jax.Array, jax.Array]:
                r, Jd = carry
                start = jnp.minimum(i * c, n - c)  # the last chunk overlaps the one before
                rk, Jk = batched(jax.lax.dynamic_slice_in_dim(t.points, start, c))
                r = jax.lax.dynamic_update_slice(r, rk, (offset + start,))
                return r, jax.lax.dynamic_update_slice(Jd, Jk, (offset + start, 0))

            r, Jd = jax.lax.fori_loop(0, math.ceil(n / c), body, (r, Jd))
        offset += n
    r = check_residual(r, "pinn_system")
    J = JacobianOperator(
        lambda X: Jd @ X,
        lambda Y: Jd.T @ Y,
        shape=(N, P),
        dtype=Jd.dtype,
        path="materialized",
        unravel=unravel,
        dense=Jd,
    )
    return PINNSystem(r, J, "materialized")
