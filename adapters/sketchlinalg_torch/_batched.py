"""A per-point PINN residual evaluated on all its points at once, without ``vmap``.

A residual is written for one point ``x`` of shape ``(d,)``; the adapter maps it over the
points with ``torch.func.vmap``, whose batching rules add a cost to every operation that
the same operations run eagerly on a batch do not pay (a small PINN's evaluation is
dispatch-bound). Many residuals are also correct when handed the whole batch in one of two
layouts:

* ``"columns"``: ``x`` of shape ``(d, n)``, so ``x[0]`` is the first coordinate of every
  point and ``torch.stack([t, 0 * t])`` builds new points as columns;
* ``"rows"``: ``x`` of shape ``(n, d)``, so ``x[..., 0]`` is the first coordinate of every
  point (code written for batches of points).

For an :class:`~sketchlinalg_torch._mlp.MLP` the network is called on the batch in either
layout (``u(x)`` returns ``(n,)``) and the differential operators of ``_diffops`` run the
forward Laplacian on it (gradient ``(d, n)``, value and Laplacian ``(n,)``). Which layout,
if any, gives a residual function's values is decided the first time it is seen: the
batched values on all the term's points, and on a perturbed copy of them, are compared
with the ``vmap`` ones. A residual
that matches neither (it uses ``x[0]`` and ``x[..., 0]``, calls ``torch.func`` on ``u``,
or reduces over ``x``) keeps ``vmap``. The decision is remembered per residual function
(:func:`~sketchlinalg_torch._mlp.residual_key`), the points' shape and dtype, and it is made
outside function transforms only (under ``vmap`` or ``grad`` a known answer is used, an
unknown one keeps ``vmap``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import torch

from ._forward_laplacian import Jet
from ._mlp import MLP, residual_key

__all__ = [
    "LAYOUTS",
    "NotBatched",
    "batch_layout",
    "batched_values",
    "evaluate",
    "give_up",
    "layout_of",
]

LAYOUTS = ("columns", "rows")

#: The layout of the batch a residual is evaluated on, None outside a batched evaluation;
#: the differential operators read it to accept a batch in place of one point.
_LAYOUT: ContextVar[str | None] = ContextVar("sketchlinalg_torch_batch_layout", default=None)


class NotBatched(Exception):
    """The residual does something the batched evaluation has no rule for (a differential
    operator other than the forward ones, ``u`` on a single point): ``vmap`` it is."""


def batch_layout() -> str | None:
    """The layout of the batched evaluation running now (``None``: one point at a time)."""
    return _LAYOUT.get()


class _BatchModel:
    """``u`` on a batch of points in ``layout``: ``(n,)`` values, or a :class:`Jet` of them
    (gradient ``(d, n)``) when called on a jet of the batch."""

    def __init__(
        self,
        mlp: MLP,
        params: Mapping[Any, torch.Tensor],
        layout: str,
        ghosts: Iterator[torch.Tensor] | None = None,
        record: list[Any] | None = None,
    ) -> None:
        self.mlp, self.params, self.layout = mlp, params, layout
        self.ghosts, self.record = ghosts, record

    def __call__(self, x: Any) -> Any:
        if x.ndim != 2:
            raise NotBatched(f"u called on an input of shape {tuple(x.shape)} in a batch")
        n = x.shape[1] if self.layout == "columns" else x.shape[0]
        if isinstance(x, Jet):
            if self.layout == "columns":  # the network's layout: points first
                x = Jet(x.value.T, x.grad.transpose(1, 2), x.lap.T, x.weights)
            out = self.mlp(self.params, x, self.ghosts, self.record)
            if not isinstance(out, Jet) or out.value.numel() != n:
                raise NotBatched("the network's output is not one value per point")
            d = out.grad.shape[0]
            return Jet(
                out.value.reshape(n), out.grad.reshape(d, n), out.lap.reshape(n), out.weights
            )
        rows = x.T if self.layout == "columns" else x
        out = self.mlp(self.params, rows, self.ghosts, self.record)
        if out.numel() != n:
            raise NotBatched("the network's output is not one value per point")
        return out.reshape(n)


def evaluate(
    mlp: MLP,
    residual: Callable[..., Any],
    pts: torch.Tensor,
    layout: str,
    params: Mapping[Any, torch.Tensor],
    ghosts: Iterator[torch.Tensor] | None = None,
    record: list[Any] | None = None,
) -> torch.Tensor:
    """The residual's values ``(n,)`` at ``pts`` from one evaluation on the batch in
    ``layout``; ``ghosts`` and ``record`` as in the :class:`MLP` call (the factor pass)."""
    u = _BatchModel(mlp, params, layout, ghosts, record)
    token = _LAYOUT.set(layout)
    try:
        out = residual(u, pts.T if layout == "columns" else pts)
    finally:
        _LAYOUT.reset(token)
    n = pts.shape[0]
    if not isinstance(out, torch.Tensor) or out.dtype != pts.dtype or out.numel() != n:
        raise NotBatched("the residual does not return one value per point")
    return out.reshape(n)


def _transformed(params: Mapping[Any, torch.Tensor]) -> bool:
    """Whether the tensors are wrapped by a ``torch.func`` transform (``vmap``, ``grad``):
    no decision can read their values there."""
    return any(torch._C._functorch.is_functorch_wrapped_tensor(p) for p in params.values())


def _key(residual: Callable[..., Any], pts: torch.Tensor) -> Any:
    # the point count too: a residual reading the batch's shape (x.flatten()[0]) can be
    # right at one count and wrong at another; resampled points keep their count
    return (residual_key(residual), tuple(pts.shape), pts.dtype)


def layout_of(
    mlp: MLP,
    params: Mapping[Any, torch.Tensor],
    residual: Callable[..., Any],
    pts: torch.Tensor,
    reference: Callable[[torch.Tensor], torch.Tensor],
) -> str | None:
    """The layout in which ``residual`` is evaluated on a batch (one of :data:`LAYOUTS`),
    or ``None`` (``vmap``); decided the first time it is seen at points like ``pts``
    (``(n, d)``): the first layout whose values match ``reference(points)``, the ``vmap``
    values, at all of ``pts`` and at all of a perturbed copy of them (points that happen to
    make a wrong layout right, all on one line say, are unlikely to stay so)."""
    known = mlp.batch_layouts
    key = _key(residual, pts)
    if key in known:
        return known[key]
    if _transformed(params):
        return None  # decided on the next plain call
    if pts.shape[0] < 2:  # a batch of one cannot tell a wrong layout apart
        known[key] = None
        return None
    g = torch.Generator(device=pts.device).manual_seed(0)
    noise = torch.rand(pts.shape, generator=g, dtype=pts.dtype, device=pts.device)
    moved = pts + 0.01 * (1.0 + pts.abs()) * (noise - 0.5)
    tol = float(torch.finfo(pts.dtype).eps) ** 0.5
    with torch.no_grad():
        refs = [reference(pts)]  # (the residual's own errors propagate from here)
        known[key] = None  # until a layout matches everywhere
        try:
            refs.append(reference(moved))
        except Exception:  # the residual is not defined off its points: no batch
            return None
        for layout in LAYOUTS:
            for at, ref in zip((pts, moved), refs, strict=True):
                try:
                    out = evaluate(mlp, residual, at, layout, params)
                except Exception:  # the user's residual on a batch: any failure means "not so"
                    break
                atol = tol * float(ref.abs().max()) if ref.numel() else 0.0
                if out.shape != ref.shape or not torch.allclose(out, ref, rtol=tol, atol=atol):
                    break
            else:
                known[key] = layout
                return layout
    return None


def give_up(mlp: MLP, residual: Callable[..., Any], pts: torch.Tensor) -> None:
    """Evaluate ``residual`` by ``vmap`` from now on (a batched call failed: a branch the
    check did not see)."""
    mlp.batch_layouts[_key(residual, pts)] = None


def batched_values(
    mlp: MLP,
    params: Mapping[Any, torch.Tensor],
    residual: Callable[..., Any],
    pts: torch.Tensor,
    reference: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor | None:
    """The residual's values ``(n,)`` at the points ``pts`` (``(n, d)``) from one batched
    evaluation, or ``None`` where it does not apply (then ``vmap`` them):
    :func:`layout_of`."""
    layout = layout_of(mlp, params, residual, pts, reference)
    if layout is None:
        return None
    try:
        return evaluate(mlp, residual, pts, layout, params)
    except Exception:  # vmap from now on (which raises the residual's own errors with
        give_up(mlp, residual, pts)  # the per-point messages)
        return None
