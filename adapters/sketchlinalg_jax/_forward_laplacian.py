"""Forward Laplacian: the Laplacian of a JAX function in one forward pass.

The forward Laplacian (Li et al., "A computational framework for neural network-based
variational Monte Carlo with Forward Laplacian", Nature Machine Intelligence 2024) carries
every intermediate value ``v`` of ``u(x)`` together with its gradient ``dv/dx`` (``d``
channels) and its Laplacian ``Delta v`` (one channel) through the computation:

* a linear operation ``L`` acts on each channel: ``(L v, L dv, L Delta v)``;
* an elementwise ``f``: ``(f(v), f'(v) dv, f'(v) Delta v + f''(v) |dv|^2)``;
* a product ``a b`` (elementwise or ``dot_general``):
  ``(a b, a db + da b, a Delta b + Delta a b + 2 sum_i d_i a d_i b)``.

The Laplacian of ``u: R^d -> R`` then costs one pass with ``d + 2`` channels, against a
full ``d x d`` Hessian (forward over reverse) for :func:`jax.hessian`. The saving compounds
when the result is differentiated once more in the parameters, as every PINN Jacobian is:
reverse mode over a forward pass, not reverse over forward over reverse.

The function is traced to a jaxpr once (at trace time, under any outer ``vmap``/``grad``)
and interpreted with the rules above. Values that do not depend on ``x`` (the network's
parameters, constants) are evaluated as they are, without channels. A primitive without a
rule (a loop, a conditional, a non-smooth binary operation of two ``x``-dependent values)
raises :class:`Unsupported`, and :func:`~sketchlinalg_jax.laplacian` falls back to the
Hessian trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

__all__ = ["Unsupported", "forward_jet", "forward_laplacian"]


class Unsupported(NotImplementedError):
    """The function holds a primitive the forward Laplacian has no rule for."""


@dataclass(frozen=True)
class _Jet:
    """A value with its gradient (leading axis: the ``d`` input directions) and Laplacian."""

    value: jax.Array
    grad: jax.Array
    lap: jax.Array


# Linear primitives, with which operand positions are *kept*: used as they are and required
# not to depend on x (indices, a predicate). The result is linear (or affine) in the others;
# the channels of an affine operand that does not depend on x are zeros (add, pad...).
def _none(i: int) -> bool:
    return False


def _first(i: int) -> bool:
    return i == 0


def _after_first(i: int) -> bool:
    return i >= 1


def _after_second(i: int) -> bool:
    return i >= 2


_AFFINE = ("add", "add_any", "sub", "concatenate", "stack", "pad", "neg", "reshape",
           "broadcast_in_dim", "squeeze", "expand_dims", "transpose", "slice", "reduce_sum",
           "rev", "cumsum", "copy", "copy_p", "convert_element_type", "reduce_precision",
           "real", "split")  # fmt: skip
_LINEAR: dict[str, Callable[[int], bool]] = {
    **dict.fromkeys(_AFFINE, _none),
    "select_n": _first,  # the predicate
    "dynamic_slice": _after_first,  # the start indices
    "gather": _after_first,  # the indices
    "dynamic_update_slice": _after_second,  # the start indices
}

# Elementwise primitives of one or two operands, smooth where they are used.
_ELEMENTWISE = frozenset(
    {
        "tanh", "sin", "cos", "tan", "exp", "exp2", "log", "log1p", "expm1", "logistic",
        "sqrt", "rsqrt", "cbrt", "integer_pow", "pow", "sinh", "cosh", "asinh", "acosh",
        "atanh", "asin", "acos", "atan", "erf", "erfc", "abs", "max", "min", "div", "atan2",
        "square", "sign", "floor", "ceil", "round", "clamp",
    }
)  # fmt: skip

# Primitives that call a sub-jaxpr, with the parameter holding it.
_CALLS = {
    "pjit": "jaxpr",
    "jit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "remat": "jaxpr",
    "checkpoint": "jaxpr",
}


def _channels(fn: Callable[..., Any], *args: Any, jets: tuple[bool, ...]) -> Any:
    """``fn`` applied to the gradient channels: ``vmap`` over the leading axis of jets."""
    return jax.vmap(fn, in_axes=tuple(0 if j else None for j in jets))(*args)


def _bind(eqn: Any, *args: Any) -> Any:
    params = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(params, tuple):  # JAX < 0.7: (sub-functions, parameters)
        subfuns, params = params
        return eqn.primitive.bind(*subfuns, *args, **params)
    return eqn.primitive.bind(*args, **params)


def _linear(eqn: Any, vals: list[Any]) -> Any:
    """A primitive linear in its jet operands: the same primitive on each channel."""
    kept = _LINEAR[eqn.primitive.name]
    for i, v in enumerate(vals):
        if isinstance(v, _Jet) and kept(i):
            raise Unsupported(f"{eqn.primitive.name} with an x-dependent operand {i}")

    def channel(kind: str) -> list[Any]:
        # a jet's channel; a kept operand as it is; an affine constant: no derivative
        return [
            getattr(v, kind) if isinstance(v, _Jet) else v if kept(i) else jnp.zeros_like(v)
            for i, v in enumerate(vals)
        ]

    jets = tuple(isinstance(v, _Jet) for v in vals)
    value = _bind(eqn, *[v.value if isinstance(v, _Jet) else v for v in vals])
    grads = channel("grad")
    grad = _channels(lambda *a: _bind(eqn, *a), *grads, jets=jets)
    lap = _bind(eqn, *channel("lap"))
    if eqn.primitive.multiple_results:  # split
        return [_Jet(*parts) for parts in zip(value, grad, lap, strict=True)]
    return _Jet(value, grad, lap)


def _packed(fn: Callable[[jax.Array], jax.Array], a: _Jet) -> _Jet:
    """A linear map of all ``d + 2`` channels at once (one product, e.g. for a layer)."""
    d = a.grad.shape[0]
    out = jax.vmap(fn)(jnp.concatenate([a.value[None], a.grad, a.lap[None]]))
    return _Jet(out[0], out[1 : d + 1], out[d + 1])


def _wsum(x: jax.Array, w: jax.Array | None) -> jax.Array:
    """``sum_i w_i x_i`` over the leading (direction) axis; ``w`` None: all ones."""
    if w is None:
        return jnp.sum(x, axis=0)
    return jnp.tensordot(w.astype(x.dtype), x, axes=1)


def _product(eqn: Any, a: Any, b: Any, w: jax.Array | None = None) -> _Jet:
    """``mul`` or ``dot_general``: bilinear."""
    if not isinstance(b, _Jet):
        return _packed(lambda t: _bind(eqn, t, b), a)
    if not isinstance(a, _Jet):
        return _packed(lambda t: _bind(eqn, a, t), b)
    value = _bind(eqn, a.value, b.value)
    grad = _channels(lambda p: _bind(eqn, p, b.value), a.grad, jets=(True,)) + _channels(
        lambda q: _bind(eqn, a.value, q), b.grad, jets=(True,)
    )
    cross = _wsum(_channels(lambda p, q: _bind(eqn, p, q), a.grad, b.grad, jets=(True, True)), w)
    lap = _bind(eqn, a.lap, b.value) + _bind(eqn, a.value, b.lap) + 2 * cross
    return _Jet(value, grad, lap)


def _elementwise(eqn: Any, vals: list[Any], w: jax.Array | None = None) -> _Jet:
    """An elementwise primitive: its first and second partials by nested JVPs.

    With jets ``a`` (and ``b``) among the operands:
    ``grad = f_a da + f_b db``,
    ``lap = f_a Delta a + f_b Delta b + f_aa |da|^2 + 2 f_ab da.db + f_bb |db|^2``.
    """
    positions = [i for i, v in enumerate(vals) if isinstance(v, _Jet)]
    if len(positions) > 2:
        raise Unsupported(f"{eqn.primitive.name} of three x-dependent operands")
    base = [v.value if isinstance(v, _Jet) else v for v in vals]
    jets = [vals[i] for i in positions]

    def f(*ys: jax.Array) -> jax.Array:
        args = list(base)
        for i, y in zip(positions, ys, strict=True):
            args[i] = y
        return _bind(eqn, *args)

    primals = tuple(j.value for j in jets)

    def partial(k: int) -> Callable[..., tuple[jax.Array, jax.Array]]:
        def df(*ys: jax.Array) -> tuple[jax.Array, jax.Array]:
            tangents = tuple(jnp.ones_like(y) if i == k else jnp.zeros_like(y)
                             for i, y in enumerate(ys))  # fmt: skip
            return jax.jvp(f, ys, tangents)

        return df

    def second(k: int, m: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        tangents = tuple(jnp.ones_like(y) if i == m else jnp.zeros_like(y)
                         for i, y in enumerate(primals))  # fmt: skip
        (value, first), (_, sec) = jax.jvp(partial(k), primals, tangents)
        return value, first, sec

    if len(jets) == 1:
        (a,) = jets
        value, fa, faa = second(0, 0)
        grad = jax.vmap(lambda g: fa * g)(a.grad)
        lap = fa * a.lap + faa * _wsum(a.grad**2, w)
        return _Jet(value, grad, lap)
    a, b = jets
    value, fa, faa = second(0, 0)
    _, fb, fbb = second(1, 1)
    _, _, fab = second(0, 1)
    grad = jax.vmap(lambda p, q: fa * p + fb * q)(a.grad, b.grad)
    lap = (
        fa * a.lap
        + fb * b.lap
        + faa * _wsum(a.grad**2, w)
        + 2 * fab * _wsum(a.grad * b.grad, w)
        + fbb * _wsum(b.grad**2, w)
    )
    return _Jet(value, grad, lap)


def _is_float(var: Any) -> bool:
    """Whether a jaxpr variable holds floating-point (differentiable) values."""
    dtype = getattr(var.aval, "dtype", None)
    return dtype is not None and bool(jnp.issubdtype(dtype, jnp.inexact))


def _eval(
    jaxpr: Jaxpr, consts: list[Any], args: list[Any], w: jax.Array | None = None
) -> list[Any]:
    """Interpret ``jaxpr`` on jets; ``w``: the Laplacian's weights (None: all ones)."""
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, Literal) else env[v]

    for var, val in zip(jaxpr.constvars, consts, strict=True):
        env[var] = val
    for var, val in zip(jaxpr.invars, args, strict=True):
        env[var] = val
    for eqn in jaxpr.eqns:
        vals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if not any(isinstance(v, _Jet) for v in vals):
            out = _bind(eqn, *vals)
        elif not all(_is_float(v) for v in eqn.outvars):
            if len(eqn.outvars) != 1:
                raise Unsupported(f"{name} with integer results")
            out = _bind(eqn, *[v.value if isinstance(v, _Jet) else v for v in vals])
        elif name in _CALLS:
            inner = eqn.params[_CALLS[name]]
            if isinstance(inner, ClosedJaxpr):
                out = _eval(inner.jaxpr, list(inner.consts), vals, w)
            else:
                out = _eval(inner, [], vals, w)
        elif name in ("mul", "dot_general"):
            out = _product(eqn, vals[0], vals[1], w)
        elif name in _LINEAR:
            out = _linear(eqn, vals)
        elif name in _ELEMENTWISE:
            if name == "div" and not isinstance(vals[1], _Jet):
                out = _linear_in_first(eqn, vals)
            else:
                out = _elementwise(eqn, vals, w)
        else:
            raise Unsupported(f"no forward-Laplacian rule for {name!r}")
        outs = out if eqn.primitive.multiple_results or isinstance(out, list) else [out]
        if len(outs) != len(eqn.outvars):
            raise Unsupported(f"{name} with {len(eqn.outvars)} results")
        for var, val in zip(eqn.outvars, outs, strict=True):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]


def _linear_in_first(eqn: Any, vals: list[Any]) -> _Jet:
    """``a / c`` with a constant ``c``: linear in ``a``."""
    a, c = vals
    return _Jet(
        _bind(eqn, a.value, c),
        jax.vmap(lambda g: _bind(eqn, g, c))(a.grad),
        _bind(eqn, a.lap, c),
    )


def forward_jet(
    u: Callable[[jax.Array], jax.Array], x: jax.Array, weights: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Value, gradient and (weighted) Laplacian of a scalar function at one point, forward.

    One pass with ``d + 2`` channels gives ``u(x)``, ``grad u(x)`` and
    ``sum_i w_i d^2 u / dx_i^2`` (the Laplacian for ``weights=None``).

    Parameters
    ----------
    u : callable
        ``u(x)`` of one point ``x`` of shape ``(d,)``, returning a scalar (or one element).
    x : array of shape (d,)
    weights : array of shape (d,), optional
        The ``w_i``; ``None``: all ones.

    Returns
    -------
    value : scalar
    gradient : array of shape (d,)
    laplacian : scalar

    Raises
    ------
    Unsupported
        ``u`` holds a primitive without a forward-Laplacian rule.
    """
    if x.ndim != 1:
        raise ValueError(f"x must be one point of shape (d,), got shape {x.shape}")
    closed = jax.make_jaxpr(u)(x)
    seed = _Jet(x, jnp.eye(x.shape[0], dtype=x.dtype), jnp.zeros_like(x))
    (out,) = _eval(closed.jaxpr, list(closed.consts), [seed], weights)
    if not isinstance(out, _Jet):  # u does not depend on x
        zero = jnp.zeros((), dtype=x.dtype)
        return jnp.reshape(jnp.asarray(out, dtype=x.dtype), ()), jnp.zeros_like(x), zero
    if out.value.size != 1:
        raise ValueError(f"u(x) must return a scalar, got shape {out.value.shape}")
    return jnp.reshape(out.value, ()), jnp.reshape(out.grad, x.shape), jnp.reshape(out.lap, ())


def forward_laplacian(u: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """Laplacian ``sum_i d^2 u / dx_i^2`` of a scalar function at one point, forward
    (:func:`forward_jet`'s third output).

    Parameters
    ----------
    u : callable
        ``u(x)`` of one point ``x`` of shape ``(d,)``, returning a scalar (or one element).
    x : array of shape (d,)

    Returns
    -------
    The Laplacian, a scalar.

    Raises
    ------
    Unsupported
        ``u`` holds a primitive without a forward-Laplacian rule.
    """
    return forward_jet(u, x)[2]
