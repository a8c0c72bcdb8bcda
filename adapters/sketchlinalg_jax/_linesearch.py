"""Step-size rules for natural-gradient directions: ENGD's grid and Armijo backtracking."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["armijo_line_search", "grid_line_search"]

Loss = Callable[[jax.Array], jax.Array]


def grid_line_search(
    loss_fn: Loss, params: jax.Array, direction: jax.Array, *, num: int = 31
) -> tuple[jax.Array, jax.Array]:
    """ENGD's grid line search: the best of ``eta = 2^0, 2^-1, ..., 2^-(num-1)``.

    The loss at all ``num`` candidates ``params - eta * direction`` is evaluated in one
    batched pass (``vmap`` over the step sizes) and the argmin is returned. Non-finite
    losses never win; if every candidate is non-finite, ``eta = 0`` (no step).

    Parameters
    ----------
    loss_fn : callable
        Flat parameter vector -> scalar loss.
    params, direction : jax.Array of shape (P,)
    num : int
        Number of grid points.

    Returns
    -------
    eta : 0-d array
    losses : array of shape (num,)
        The loss at every candidate (``inf`` where non-finite).

    References
    ----------
    Mueller, Zeinhofer. Achieving high accuracy with PINNs via energy natural gradient
    descent. ICML 2023.
    """
    etas = 0.5 ** jnp.arange(num, dtype=params.dtype)
    losses = jax.vmap(lambda eta: loss_fn(params - eta * direction))(etas)
    losses = jnp.where(jnp.isfinite(losses), losses, jnp.inf)
    best = jnp.argmin(losses)
    eta = jnp.where(jnp.isfinite(losses[best]), etas[best], jnp.zeros((), params.dtype))
    return eta, losses


def armijo_line_search(
    loss_fn: Loss,
    params: jax.Array,
    direction: jax.Array,
    gradient: jax.Array,
    *,
    loss0: jax.Array | None = None,
    c: float = 1e-4,
    max_halvings: int = 30,
) -> jax.Array:
    """Backtracking: the first ``eta = 2^-j`` with ``L(p - eta d) <= L(p) - c eta g.d``.

    ``jax.lax.while_loop``, so it traces under ``jit``; returns 0 if no step within
    ``max_halvings`` satisfies the condition (or ``g.d <= 0``: not a descent direction).
    """
    loss0 = loss_fn(params) if loss0 is None else loss0
    slope = jnp.vdot(gradient, direction)

    def accepted(eta: jax.Array) -> jax.Array:
        new = loss_fn(params - eta * direction)
        return jnp.isfinite(new) & (new <= loss0 - c * eta * slope)

    def cond(state: tuple[jax.Array, jax.Array]) -> jax.Array:
        j, eta = state
        return (j < max_halvings) & ~accepted(eta)

    def body(state: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        j, eta = state
        return j + 1, eta / 2

    _, eta = jax.lax.while_loop(cond, body, (jnp.asarray(0), jnp.ones((), params.dtype)))
    ok = (slope > 0) & accepted(eta)
    return jnp.where(ok, eta, jnp.zeros((), params.dtype))
