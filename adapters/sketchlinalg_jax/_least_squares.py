"""Nonlinear least squares of residual functions of pytrees, with JAX derivatives."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import sketchlinalg as sl

from ._operators import JacobianOperator, split_params

__all__ = ["JACOBIAN_MODES", "least_squares"]

PyTree = Any

JACOBIAN_MODES = ("auto", "dense", "operator")
DEFAULT_DENSE_LIMIT = 2**24  # entries of J (128 MiB in float64)


def least_squares(
    fun: Callable[..., jax.Array],
    x0: PyTree,
    *,
    jacobian: str = "auto",
    dense_limit: int = DEFAULT_DENSE_LIMIT,
    chunk_size: int | None = None,
    jit: bool = True,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> sl.LeastSquaresResult:
    r""":func:`sketchlinalg.least_squares` for a residual function of a pytree, with exact
    Jacobians from JAX.

    Minimizes ``1/2 ||f(x)||^2`` for ``f = fun(x, *args, **kwargs)`` (flattened to
    ``(m,)``) over a pytree ``x`` of float arrays (:func:`split_params`: ``n`` entries) by
    Levenberg–Marquardt, with the Jacobian by automatic differentiation:
    ``"dense"``, the ``(m, n)`` array by ``jacfwd`` (``n <= m``) or ``jacrev``, compiled
    once (the solver then uses an SVD and a trust region); ``"operator"``, a matrix-free
    :class:`sketchlinalg.JacobianOperator` (batched JVPs / VJPs, ``chunk_size`` columns at
    a time, compiled once as functions of the parameters and the block; ``x_scale=1``
    unless given); ``"auto"``, ``"dense"`` when ``m n <= dense_limit``.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args, **kwargs) -> residuals`` with ``x`` a pytree like ``x0``.
    x0 : pytree
        Starting point: float leaves of one dtype (float64 needs
        ``jax.config.update("jax_enable_x64", True)``).
    jacobian : {"auto", "dense", "operator"}
    dense_limit : int
        Largest ``m n`` that ``"auto"`` materializes.
    chunk_size : int, optional
        Column chunk of the matrix-free products (``"operator"``).
    jit : bool
        Compile the residual (and the dense Jacobian) with ``jax.jit``.
    args, kwargs
        Extra arguments of ``fun``.
    **options
        Passed to :func:`sketchlinalg.least_squares` (``ftol``, ``xtol``, ``gtol``,
        ``x_scale``, ``max_nfev``, ``direction``, ``direction_options``, ...).

    Returns
    -------
    sketchlinalg.LeastSquaresResult
        With ``x`` and ``grad`` as pytrees like ``x0``; ``fun`` is the flattened residual
        and ``jac`` the Jacobian over the flattened parameters (an array, or a
        :class:`sketchlinalg.JacobianOperator` whose ``unflatten`` maps a flat vector to
        the pytree).

    References
    ----------
    Moré, J. J. The Levenberg-Marquardt algorithm: implementation and theory. Lecture Notes
    in Mathematics 630, Springer, 1978. Nielsen, H. B. Damping parameter in Marquardt's
    method. IMM-REP-1999-05, DTU, 1999.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from sketchlinalg_jax import least_squares
    >>> t = jnp.linspace(0.0, 3.0, 20)
    >>> y = 2.0 * jnp.exp(-1.3 * t)
    >>> res = least_squares(lambda p: p["a"] * jnp.exp(-p["b"] * t) - y, {"a": 1.0, "b": 1.0})
    >>> bool(res.success), round(float(res.x["a"]), 4), round(float(res.x["b"]), 4)
    (True, 2.0, 1.3)
    """
    if jacobian not in JACOBIAN_MODES:
        raise ValueError(f"jacobian must be one of {JACOBIAN_MODES}, got {jacobian!r}")
    if isinstance(dense_limit, bool) or not isinstance(dense_limit, int) or dense_limit < 0:
        raise ValueError(f"dense_limit must be an int >= 0, got {dense_limit!r}")
    for name in ("jac", "args", "kwargs"):
        if name in options:
            raise TypeError(f"least_squares got {name!r} in options; it builds the Jacobian")
    flat0, unravel, _ = split_params(x0, "x0")
    kwargs = {} if kwargs is None else dict(kwargs)
    args = tuple(args)

    def flat_fun(theta: jax.Array) -> jax.Array:
        return jnp.ravel(fun(unravel(theta), *args, **kwargs))

    m = int(jax.eval_shape(flat_fun, flat0).shape[0])
    n = int(flat0.shape[0])
    mode = jacobian
    if mode == "auto":
        mode = "dense" if m * n <= dense_limit else "operator"

    residual = jax.jit(flat_fun) if jit else flat_fun
    jac: Callable[[jax.Array], Any]
    if mode == "dense":
        dense = jax.jacfwd(flat_fun) if n <= m else jax.jacrev(flat_fun)
        jac = jax.jit(dense) if jit else dense
    else:
        jac = _operator_jacobian(flat_fun, unravel, (m, n), flat0.dtype, chunk_size, jit)

    res = sl.least_squares(residual, flat0, jac, **options)
    return res._replace(x=unravel(res.x), grad=unravel(res.grad))


def _operator_jacobian(
    flat_fun: Callable[[jax.Array], jax.Array],
    unravel: Callable[[jax.Array], PyTree],
    shape: tuple[int, int],
    dtype: Any,
    chunk_size: int | None,
    jit: bool,
) -> Callable[[jax.Array], JacobianOperator]:
    """``theta -> J(theta)`` as a matrix-free :class:`JacobianOperator`.

    The block products ``J X`` (batched JVPs) and ``J^T Y`` (batched VJPs) are compiled once
    as functions of ``(theta, block)``, so the new Jacobian of every iteration costs no
    tracing (unlike :func:`jacobian_operator`, which linearizes anew at each call).
    """

    def jvp_block(theta: jax.Array, X: jax.Array) -> jax.Array:
        return jax.vmap(lambda v: jax.jvp(flat_fun, (theta,), (v,))[1], 1, 1)(X)

    def vjp_block(theta: jax.Array, Y: jax.Array) -> jax.Array:
        pullback = jax.vjp(flat_fun, theta)[1]
        return jax.vmap(lambda u: pullback(u)[0], 1, 1)(Y)

    jvp_fn = jax.jit(jvp_block) if jit else jvp_block
    vjp_fn = jax.jit(vjp_block) if jit else vjp_block

    def jac(theta: jax.Array) -> JacobianOperator:
        return JacobianOperator(
            functools.partial(jvp_fn, theta),
            functools.partial(vjp_fn, theta),
            shape=shape,
            dtype=dtype,
            xp=jnp,
            path="matrix-free",
            unflatten=unravel,
            chunk_size=chunk_size,
        )

    return jac
