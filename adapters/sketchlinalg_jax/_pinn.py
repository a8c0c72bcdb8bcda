"""PINN residuals and Jacobians: JAX's per-point kernels for the core's PINN system."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

import sketchlinalg as sl
from sketchlinalg import PATHS, PINNSystem, Term

from ._operators import jacobian_operator, split_params

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
) -> jax.Array:
    """The weighted residual vector ``r(params)`` of shape ``(N,)`` (no Jacobian).

    This is what line searches evaluate: one forward pass per point. ``model``,
    ``params`` and ``terms`` as in :func:`pinn_system`; ``points`` (one array per term)
    replaces the terms' points, e.g. freshly drawn ones.
    """
    terms, flat, _, _, _, rows = _rows(model, params, _need(terms, "pinn_residual"), points,
                                       "pinn_residual")  # fmt: skip
    batched = [jax.vmap(row, in_axes=(None, 0)) for row in rows]
    return sl.stack_residual(terms, lambda k, pts: batched[k](flat, pts), xp=jnp)


def pinn_system(
    model: Any,
    params: PyTree = None,
    terms: Sequence[Term] | None = None,
    *,
    path: str = "auto",
    memory_budget: int | None = None,
    chunk_size: int | None = None,
    points: Sequence[jax.Array] | None = None,
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
    terms, flat, unravel, apply, params, rows = _rows(
        model, params, _need(terms, where), points, where
    )
    kernels = [jax.vmap(jax.value_and_grad(row), in_axes=(None, 0)) for row in rows]

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
    )


def _need(terms: Any, where: str) -> Any:
    if terms is None:
        raise TypeError(f"{where}: give terms (a sequence of Term)")
    return terms
