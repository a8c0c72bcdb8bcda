"""Differential operators of a function of one point, for PINN residuals.

Each PINN residual row is differentiated once more, in the parameters, to build the
Jacobian, so the formulation of the Laplacian sets the cost of a step.
``benchmarks/jax_diffops.py`` measures the formulations below under ``vmap`` over points and
``grad`` in the parameters; :func:`laplacian` defaults to the fastest measured one, the
forward Laplacian (``_forward_laplacian.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from sketchlinalg._pinn import laplacian_with_fallback

from ._forward_laplacian import Unsupported, forward_laplacian

__all__ = ["LAPLACIAN_METHODS", "divergence", "gradient", "laplacian", "time_derivative"]

Scalar = Callable[[jax.Array], jax.Array]

LAPLACIAN_METHODS = ("forward", "hessian_trace", "fwd_over_rev", "fwd_over_fwd")


def gradient(u: Scalar, x: jax.Array) -> jax.Array:
    """``grad u(x)`` of a scalar function of one point ``x`` of shape ``(d,)`` (reverse mode)."""
    return jax.grad(u)(x)


def time_derivative(u: Scalar, x: jax.Array, index: int = 0) -> jax.Array:
    """``du/dx_index`` at ``x`` (one forward-mode JVP; ``index`` 0 is ``t`` by convention)."""
    e = jnp.zeros_like(x).at[index].set(1.0)
    return jax.jvp(u, (x,), (e,))[1]


def divergence(v: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """``div v(x) = sum_i dv_i/dx_i`` of a vector field ``v: R^d -> R^d`` (d forward JVPs)."""
    basis = jnp.eye(x.shape[0], dtype=x.dtype)
    return jnp.sum(jax.vmap(lambda e: jax.jvp(v, (x,), (e,))[1] @ e)(basis))


def laplacian(u: Scalar, x: jax.Array, *, method: str = "forward") -> jax.Array:
    """Laplacian ``sum_i d^2 u / dx_i^2`` of a scalar function at one point ``x`` of shape (d,).

    Methods (measured by ``benchmarks/jax_diffops.py`` under ``vmap`` over points and
    ``grad`` in the parameters):

    * ``"forward"`` (the default): the forward Laplacian (Li et al. 2024): ``u`` is traced
      once and its value, gradient and Laplacian are carried forward together, ``d + 2``
      channels in one pass, so a further gradient in the parameters is reverse over
      forward only (``benchmarks/results/jax_diffops.md``). A function with an operation
      the forward rules do not cover (a loop, a conditional, a non-smooth operation of two
      ``x``-dependent values) takes ``"hessian_trace"`` instead, with a warning naming the
      operation, once per operation.
    * ``"hessian_trace"``: ``trace(jax.hessian(u)(x))``: the full ``d x d`` Hessian
      (forward over reverse).
    * ``"fwd_over_rev"``: ``e_i^T (d/de_i) grad u``: a JVP of the gradient per basis vector.
    * ``"fwd_over_fwd"``: ``sum_i`` of the second directional derivative along ``e_i``
      by nested JVPs, vmapped over the basis: no reverse pass at all.
    """
    if method == "forward":
        return laplacian_with_fallback(
            lambda: forward_laplacian(u, x),
            lambda: laplacian(u, x, method="hessian_trace"),
            "the Hessian trace",
            Unsupported,
        )
    basis = jnp.eye(x.shape[0], dtype=x.dtype)
    if method == "fwd_over_fwd":

        def second(e: jax.Array) -> jax.Array:
            return jax.jvp(lambda y: jax.jvp(u, (y,), (e,))[1], (x,), (e,))[1]

        return jnp.sum(jax.vmap(second)(basis))
    if method == "fwd_over_rev":
        g = jax.grad(u)
        return jnp.sum(jax.vmap(lambda e: jax.jvp(g, (x,), (e,))[1] @ e)(basis))
    if method == "hessian_trace":
        return jnp.trace(jax.hessian(u)(x))
    raise ValueError(f"method must be one of {LAPLACIAN_METHODS}, got {method!r}")
