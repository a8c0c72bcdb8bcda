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

from sketchlinalg._pinn import Derivatives, laplacian_weights, laplacian_with_fallback

from ._forward_laplacian import Unsupported, forward_jet, forward_laplacian

__all__ = [
    "LAPLACIAN_METHODS",
    "derivatives",
    "divergence",
    "gradient",
    "laplacian",
    "time_derivative",
]

Scalar = Callable[[jax.Array], jax.Array]

LAPLACIAN_METHODS = ("forward", "hessian_trace", "fwd_over_rev", "fwd_over_fwd")


def gradient(u: Scalar, x: jax.Array) -> jax.Array:
    """``grad u(x)`` of a scalar function of one point ``x`` of shape ``(d,)`` (reverse mode)."""
    return jax.grad(u)(x)


def time_derivative(u: Scalar, x: jax.Array, index: int = 0) -> jax.Array:
    """``du/dx_index`` at ``x`` (one forward-mode JVP; ``index`` 0 is ``t`` by convention)."""
    e = jnp.zeros_like(x).at[index].set(1.0)
    return jax.jvp(u, (x,), (e,))[1]


def derivatives(u: Scalar, x: jax.Array, *, laplacian_dims: object = None) -> Derivatives:
    r"""Value, gradient and Laplacian of a scalar function at one point, in one forward pass.

    Where a residual needs several derivatives of ``u`` (``u_t - kappa u_xx``, a transport
    term beside a diffusion), one :func:`derivatives` replaces a :func:`time_derivative`
    and a :func:`laplacian`: the forward Laplacian (Li et al. 2024) carries the value, the
    ``d`` first derivatives and ``sum_{i in dims} d^2 u / dx_i^2`` together (``d + 2``
    channels), so the network runs once under the parameters' gradient. A function outside
    the forward rules takes reverse mode (gradient, Hessian diagonal), with a warning once.

    Parameters
    ----------
    u : callable
        ``u(x) -> scalar`` for ``x`` of shape ``(d,)``.
    x : array of shape (d,)
    laplacian_dims : int or sequence of int, optional
        The coordinates the Laplacian sums over (e.g. ``[1, 2]`` for the spatial part of
        ``x = (t, x_1, x_2)``); ``None``: all of them.

    Returns
    -------
    sketchlinalg.Derivatives
        ``(value, gradient, laplacian)``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from sketchlinalg_jax import derivatives
    >>> v, g, lap = derivatives(lambda y: y[0] * y[1] ** 2, jnp.array([2.0, 3.0]),
    ...                         laplacian_dims=[1])
    >>> float(v), g.tolist(), float(lap)  # u = t x^2: u_t = x^2, u_x = 2 t x, u_xx = 2 t
    (18.0, [9.0, 12.0], 4.0)
    """
    if x.ndim != 1:
        raise ValueError(f"derivatives: x must be one point of shape (d,), got shape {x.shape}")
    w = laplacian_weights(laplacian_dims, x.shape[0], "derivatives")
    weights = None if w is None else jnp.asarray(w, dtype=x.dtype)

    def by_reverse_mode() -> Derivatives:
        value, g = jax.value_and_grad(u)(x)
        diag = jnp.diagonal(jax.hessian(u)(x))
        lap = jnp.sum(diag) if weights is None else jnp.sum(weights * diag)
        return Derivatives(jnp.reshape(value, ()), g, lap)

    return laplacian_with_fallback(
        lambda: Derivatives(*forward_jet(u, x, weights)),
        by_reverse_mode,
        "reverse mode",
        Unsupported,
    )


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
