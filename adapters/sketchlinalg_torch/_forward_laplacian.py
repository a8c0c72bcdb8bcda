"""Forward Laplacian: the Laplacian of a torch function in one forward pass.

The forward Laplacian (Li et al., "A computational framework for neural network-based
variational Monte Carlo with Forward Laplacian", Nature Machine Intelligence 2024) carries
every intermediate value ``v`` of ``u(x)`` with its gradient ``dv/dx`` (``d`` channels, the
leading axis) and its Laplacian ``Delta v``:

* a linear operation ``L``: ``(L v, L dv, L Delta v)``;
* an elementwise ``f``: ``(f(v), f'(v) dv, f'(v) Delta v + f''(v) |dv|^2)``;
* a product ``a b`` (elementwise or a matrix product):
  ``(a b, a db + da b, a Delta b + Delta a b + 2 sum_i d_i a d_i b)``.

A :class:`Jet` enters ``u`` in place of ``x`` and answers torch's functions through
``__torch_function__``, so a module's ``forward`` (``nn.Linear``, activations, indexing,
``torch.stack``...) runs on it unchanged, under ``torch.func.vmap`` and ``grad`` in the
parameters. The Laplacian of ``u: R^d -> R`` costs one pass with ``d + 2`` channels; a
further gradient in the parameters is then reverse over forward, not reverse over reverse
over reverse. A function outside the rules below raises :class:`Unsupported` and
:func:`~sketchlinalg_torch.laplacian` falls back to the reverse-mode formulation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.func
import torch.nn.functional as F
from torch.func import vmap

__all__ = ["Jet", "Unsupported", "forward_jet", "forward_laplacian", "jet_rule"]


class Unsupported(NotImplementedError):
    """The function calls a torch function the forward Laplacian has no rule for."""


def _name(func: Any) -> str:
    return getattr(func, "__name__", repr(func))


class Jet:
    """A value with its gradient in ``x`` (leading axis: the ``d`` directions) and Laplacian.

    Attributes
    ----------
    value : torch.Tensor of shape S
    grad : torch.Tensor of shape (d, *S)
    lap : torch.Tensor of shape S
        ``sum_i w_i d^2 v / dx_i^2``: the Laplacian (``weights`` None) or a weighted one.
    weights : torch.Tensor of shape (d,) or None
        The ``w_i`` of ``lap`` (a 0/1 mask: the Laplacian over some coordinates only, while
        ``grad`` holds every first derivative); ``None``: all ones.
    """

    def __init__(
        self,
        value: torch.Tensor,
        grad: torch.Tensor,
        lap: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> None:
        self.value, self.grad, self.lap, self.weights = value, grad, lap, weights

    # -- what modules ask of their input ---------------------------------------------------
    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: self.value.dtype)
    device = property(lambda self: self.value.device)
    ndim = property(lambda self: self.value.ndim)

    def dim(self) -> int:
        return self.value.dim()

    def size(self, *args: Any) -> Any:
        return self.value.size(*args)

    def numel(self) -> int:
        return self.value.numel()

    def __len__(self) -> int:
        return len(self.value)

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        rule = _RULES.get(_name(func))
        if rule is None:
            raise Unsupported(f"no forward-Laplacian rule for {_name(func)}")
        return rule(*args, **kwargs)

    # -- operators: torch's own functions, dispatched through __torch_function__ ----------
    def __getitem__(self, idx: Any) -> Jet:
        return _structural(lambda t: t[idx], self)

    def __add__(self, other: Any) -> Any:
        return _add(self, other)

    __radd__ = __add__

    def __sub__(self, other: Any) -> Any:
        return _add(self, _neg(other))

    def __rsub__(self, other: Any) -> Any:
        return _add(_neg(self), other)

    def __mul__(self, other: Any) -> Any:
        return _mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Any:
        return _div(self, other)

    def __rtruediv__(self, other: Any) -> Any:
        return _div(other, self)

    def __matmul__(self, other: Any) -> Any:
        return _matmul(self, other)

    def __rmatmul__(self, other: Any) -> Any:
        return _matmul(other, self)

    def __neg__(self) -> Any:
        return _neg(self)

    def __pow__(self, p: Any) -> Any:
        return _pow(self, p)

    def __rpow__(self, base: Any) -> Any:
        if isinstance(base, Jet):
            raise Unsupported("a power of two x-dependent values")
        return _elementwise(lambda t: base**t, self)

    def reshape(self, *shape: Any) -> Jet:
        return _reshaped(self, self.value.reshape(*shape))

    view = reshape

    def squeeze(self, *args: Any) -> Jet:
        return _reshaped(self, self.value.squeeze(*args))

    def unsqueeze(self, dim: int) -> Jet:
        return _reshaped(self, self.value.unsqueeze(dim))

    def flatten(self, *args: Any) -> Jet:
        return _reshaped(self, self.value.flatten(*args))

    def sum(self, *args: Any, **kwargs: Any) -> Jet:
        return _structural(lambda t: t.sum(*args, **kwargs), self)

    def tanh(self) -> Jet:
        return _tanh(self)

    def sin(self) -> Jet:
        return _sin(self)

    def cos(self) -> Jet:
        return _cos(self)

    def exp(self) -> Jet:
        return _exp(self)


def _is_jet(v: Any) -> bool:
    return isinstance(v, Jet)


def _weighted(grad: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``w_i d_i v``: the gradient channels scaled by the Laplacian's weights."""
    if weights is None:
        return grad
    return grad * weights.reshape(-1, *([1] * (grad.ndim - 1)))


def _structural(fn: Callable[[torch.Tensor], torch.Tensor], a: Jet) -> Jet:
    """A linear map of one operand, applied to each channel."""
    return Jet(fn(a.value), vmap(fn)(a.grad), fn(a.lap), a.weights)


def _reshaped(a: Jet, value: torch.Tensor) -> Jet:
    """``a`` with its value replaced by ``value``, a reshape of it (the same elements in
    the same order): each channel reshaped alike, one call each (no ``vmap``)."""
    d = a.grad.shape[0]
    return Jet(value, a.grad.reshape(d, *value.shape), a.lap.reshape(value.shape), a.weights)


def _packed(fn: Callable[[torch.Tensor], torch.Tensor], a: Jet) -> Jet:
    """A linear map applied to all ``d + 2`` channels at once: one product (one matrix
    product for a layer, and one batched product for its per-point weight gradient)."""
    d = a.grad.shape[0]
    out = vmap(fn)(torch.cat([a.value[None], a.grad, a.lap[None]]))
    return Jet(out[0], out[1 : d + 1], out[d + 1], a.weights)


def _to(a: Any, shape: torch.Size) -> Jet:
    """``a`` broadcast to ``shape`` (a jet's channels follow its value)."""
    if a.value.shape == shape:
        return a
    d, lead = a.grad.shape[0], len(shape) - a.value.ndim
    grad = a.grad.reshape(d, *([1] * lead), *a.value.shape).expand(d, *shape)
    return Jet(a.value.expand(shape), grad, a.lap.expand(shape), a.weights)


def _neg(a: Any) -> Any:
    return Jet(-a.value, -a.grad, -a.lap, a.weights) if _is_jet(a) else -a


def _add(a: Any, b: Any) -> Any:
    if not _is_jet(a):
        a, b = b, a
    if not _is_jet(b):
        value = a.value + b
        a = _to(a, value.shape)
        return Jet(value, a.grad, a.lap, a.weights)
    value = a.value + b.value
    a, b = _to(a, value.shape), _to(b, value.shape)
    return Jet(value, a.grad + b.grad, a.lap + b.lap, a.weights)


def _sub(a: Any, b: Any, *, alpha: Any = None) -> Any:
    if alpha is not None:
        b = _mul(b, alpha)
    return _add(a, _neg(b))


def _bilinear(op: Callable[[Any, Any], Any], a: Any, b: Any) -> Jet:
    """A product ``op`` (elementwise or matrix), linear in each operand."""
    if not _is_jet(b):
        return _packed(lambda t: op(t, b), a)
    if not _is_jet(a):
        return _packed(lambda t: op(a, t), b)
    grad = vmap(lambda t: op(t, b.value))(a.grad) + vmap(lambda t: op(a.value, t))(b.grad)
    cross = vmap(op)(_weighted(a.grad, a.weights), b.grad).sum(0)
    lap = op(a.lap, b.value) + op(a.value, b.lap) + 2 * cross
    return Jet(op(a.value, b.value), grad, lap, a.weights)


def _mul(a: Any, b: Any) -> Jet:
    return _bilinear(torch.mul, a, b)


def _matmul(a: Any, b: Any) -> Jet:
    return _bilinear(torch.matmul, a, b)


def _linear(a: Any, weight: Any, bias: Any = None) -> Jet:
    if _is_jet(weight) or _is_jet(bias):
        raise Unsupported("linear with x-dependent weights")
    if not _is_jet(a):
        raise Unsupported("linear of a constant input with x-dependent arguments")
    d = a.grad.shape[0]
    # one matrix product for all d + 2 channels (F.linear acts on the last axis)
    z = F.linear(torch.cat([a.value[None], a.grad, a.lap[None]]), weight)
    out = Jet(z[0], z[1 : d + 1], z[d + 1], a.weights)
    if bias is None:
        return out
    return _add(out, bias)


def _elementwise(
    f: Callable[[torch.Tensor], torch.Tensor],
    a: Jet,
    derivatives: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    | None = None,
) -> Jet:
    """``(f(v), f'(v) dv, f'(v) Delta v + f''(v) |dv|^2)``.

    ``derivatives(v, f(v)) -> (f', f'')`` where a closed form is known, else by reverse
    mode (elementwise, so the gradient of ``sum f`` is ``f'``; double backward is defined
    for more of torch's functions than forward mode, e.g. ``silu``).
    """
    value = f(a.value)
    if derivatives is not None:
        d1, d2 = derivatives(a.value, value)
    else:

        def first(y: torch.Tensor) -> torch.Tensor:
            return torch.func.grad(lambda t: f(t).sum())(y)

        d1 = first(a.value)
        d2 = torch.func.grad(lambda t: first(t).sum())(a.value)
    grad = d1 * a.grad
    lap = d1 * a.lap + d2 * (_weighted(a.grad, a.weights) * a.grad).sum(0)
    return Jet(value, grad, lap, a.weights)


def _tanh(a: Jet) -> Jet:
    # f' = 1 - t^2 and f'' = -2 t f', so Delta f = f' (Delta v - 2 t |dv|^2): eight eager
    # operations, not the eleven of the general rule (a small PINN's steps are dispatch)
    t = torch.tanh(a.value)
    d1 = torch.addcmul(torch.ones_like(t), t, t, value=-1)
    sq = (_weighted(a.grad, a.weights) * a.grad).sum(0)
    return Jet(t, d1 * a.grad, d1 * torch.addcmul(a.lap, t, sq, value=-2), a.weights)


def _sin(a: Jet) -> Jet:
    return _elementwise(torch.sin, a, lambda v, s: (torch.cos(v), -s))


def _cos(a: Jet) -> Jet:
    return _elementwise(torch.cos, a, lambda v, c: (-torch.sin(v), -c))


def _exp(a: Jet) -> Jet:
    return _elementwise(torch.exp, a, lambda v, e: (e, e))


def _sigmoid(a: Jet) -> Jet:
    def derivatives(v: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d1 = s * (1 - s)
        return d1, d1 * (1 - 2 * s)

    return _elementwise(torch.sigmoid, a, derivatives)


def _pow(a: Any, p: Any) -> Jet:
    if _is_jet(p):
        raise Unsupported("a power with an x-dependent exponent")
    if isinstance(p, (int, float)) and p == 2:
        return _mul(a, a)
    return _elementwise(lambda t: t**p, a)


def _div(a: Any, b: Any) -> Any:
    if not _is_jet(b):
        return _bilinear(torch.div, a, b)
    return _mul(a, _elementwise(torch.reciprocal, b))


def _generic(f: Callable[..., torch.Tensor]) -> Callable[..., Jet]:
    """An elementwise function of its first argument (the others passed as they are)."""

    def rule(a: Jet, *args: Any, **kwargs: Any) -> Jet:
        if any(_is_jet(v) for v in (*args, *kwargs.values())):
            raise Unsupported(f"{_name(f)} of several x-dependent values")
        return _elementwise(lambda t: f(t, *args, **kwargs), a)

    return rule


def _sum(a: Jet, *args: Any, **kwargs: Any) -> Jet:
    return _structural(lambda t: t.sum(*args, **kwargs), a)


def _join(fn: Callable[..., torch.Tensor]) -> Callable[..., Jet]:
    """``torch.stack`` / ``torch.cat``: linear in every tensor of the sequence."""

    def rule(tensors: Sequence[Any], dim: int = 0) -> Jet:
        first = next(t for t in tensors if _is_jet(t))
        d = first.grad.shape[0]
        values, grads, laps = [], [], []
        for t in tensors:
            if _is_jet(t):
                value, grad, lap = t.value, t.grad, t.lap
            else:
                value, lap = t, torch.zeros_like(t)
                grad = lap.expand(d, *t.shape)
            values.append(value)
            grads.append(grad)
            laps.append(lap)
        grad = fn(grads, dim + 1 if dim >= 0 else dim)
        return Jet(fn(values, dim), grad, fn(laps, dim), first.weights)

    return rule


def _method(name: str) -> Callable[..., Any]:
    def rule(a: Jet, *args: Any, **kwargs: Any) -> Any:
        return getattr(a, name)(*args, **kwargs)

    return rule


# Elementwise functions whose derivatives come from autograd (no closed form written here).
_GENERIC = (torch.log, torch.log1p, torch.expm1, torch.sqrt, torch.rsqrt, torch.sinh,
            torch.cosh, torch.atan, torch.erf, torch.abs, F.silu, F.gelu, F.softplus, F.elu,
            F.relu, F.mish)  # fmt: skip

# Rules by the name of the torch function (a function and the Tensor method of the same
# name arrive with the same arguments: the jet or tensor first).
_RULES: dict[str, Callable[..., Any]] = {
    "linear": _linear,
    "matmul": _matmul,
    "__matmul__": _matmul,
    "__rmatmul__": lambda a, b: _matmul(b, a),
    "mm": _matmul,
    "mv": _matmul,
    "add": lambda a, b, alpha=None: _add(a, b if alpha is None else _mul(b, alpha)),
    "__add__": _add,
    "__radd__": _add,
    "sub": _sub,
    "__sub__": _sub,
    "__rsub__": lambda a, b: _add(_neg(a), b),
    "mul": _mul,
    "__mul__": _mul,
    "__rmul__": _mul,
    "div": _div,
    "true_divide": _div,
    "__truediv__": _div,
    "__rtruediv__": lambda a, b: _div(b, a),
    "__rdiv__": lambda a, b: _div(b, a),
    "neg": _neg,
    "negative": _neg,
    "__neg__": _neg,
    "pow": _pow,
    "__pow__": _pow,
    "square": lambda a: _mul(a, a),
    "tanh": _tanh,
    "sin": _sin,
    "cos": _cos,
    "exp": _exp,
    "sigmoid": _sigmoid,
    "sum": _sum,
    "stack": _join(torch.stack),
    "cat": _join(torch.cat),
    "concat": _join(torch.cat),
    "concatenate": _join(torch.cat),
    "reshape": lambda a, *shape: a.reshape(*shape),
    "view": lambda a, *shape: a.reshape(*shape),
    "squeeze": _method("squeeze"),
    "unsqueeze": _method("unsqueeze"),
    "flatten": _method("flatten"),
    "__getitem__": _method("__getitem__"),
    **{f.__name__: _generic(f) for f in _GENERIC},
}


def jet_rule(func: Any) -> Callable[..., Any]:
    """The forward-Laplacian rule of the torch function ``func`` (what
    ``func(jet, ...)`` runs through ``__torch_function__``)."""
    return _RULES[_name(func)]


def forward_jet(
    u: Callable[[Any], Any], x: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Value, gradient and (weighted) Laplacian of a scalar function at one point, forward.

    One pass with ``d + 2`` channels gives ``u(x)``, ``grad u(x)`` and
    ``sum_i w_i d^2 u / dx_i^2`` (the Laplacian for ``weights=None``).

    Parameters
    ----------
    u : callable
        ``u(x)`` of one point ``x`` of shape ``(d,)``, returning one element.
    x : torch.Tensor of shape (d,)
    weights : torch.Tensor of shape (d,), optional
        The ``w_i``; ``None``: all ones.

    Returns
    -------
    value : torch.Tensor, 0-d
    gradient : torch.Tensor of shape (d,)
    laplacian : torch.Tensor, 0-d

    Raises
    ------
    Unsupported
        ``u`` calls a torch function without a forward-Laplacian rule.
    """
    d = x.shape[0]
    seed = Jet(x, torch.eye(d, dtype=x.dtype, device=x.device), torch.zeros_like(x), weights)
    out = u(seed)
    if not _is_jet(out):  # u does not depend on x
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return torch.as_tensor(out, dtype=x.dtype, device=x.device).reshape(()), x * 0, zero
    if out.value.numel() != 1:
        raise ValueError(f"u(x) must return one element, got shape {tuple(out.value.shape)}")
    return out.value.reshape(()), out.grad.reshape(d), out.lap.reshape(())


def forward_laplacian(u: Callable[[Any], Any], x: torch.Tensor) -> torch.Tensor:
    """Laplacian ``sum_i d^2 u / dx_i^2`` of a scalar function at one point, forward
    (:func:`forward_jet`'s third output).

    Parameters
    ----------
    u : callable
        ``u(x)`` of one point ``x`` of shape ``(d,)``, returning one element.
    x : torch.Tensor of shape (d,)

    Returns
    -------
    torch.Tensor, 0-d

    Raises
    ------
    Unsupported
        ``u`` calls a torch function without a forward-Laplacian rule.
    """
    return forward_jet(u, x)[2]
