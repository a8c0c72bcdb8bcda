"""Step-size rules for natural-gradient directions: ENGD's grid and Armijo backtracking.

Both take parameters and directions as dicts of tensors (or single tensors): the loss is a
function of the parameter dict, as the residual functions of this package are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.func import vmap

__all__ = ["armijo_line_search", "grid_line_search"]

LossFn = Callable[[Any], torch.Tensor]


def _as_dicts(
    params: Any, direction: Any, where: str
) -> tuple[dict[Any, torch.Tensor], dict[Any, torch.Tensor], bool]:
    """Params and direction as dicts (``{None: t}`` for lone tensors); direction keys must
    be a subset of the params keys with matching shapes."""
    lone = isinstance(params, torch.Tensor)
    if lone:
        p: dict[Any, torch.Tensor] = {None: params}
        if not isinstance(direction, torch.Tensor):
            raise TypeError(
                f"{where}: direction must be a tensor like params, got {type(direction).__name__}"
            )
        d: dict[Any, torch.Tensor] = {None: direction}
    elif isinstance(params, Mapping):
        p = dict(params)
        if not isinstance(direction, Mapping):
            raise TypeError(
                f"{where}: direction must be a dict like params, got {type(direction).__name__}"
            )
        d = dict(direction)
    else:
        raise TypeError(
            f"{where}: params must be a dict name -> tensor or a tensor, got "
            f"{type(params).__name__}"
        )
    for k, v in d.items():
        if k not in p:
            raise ValueError(f"{where}: direction has the key {k!r}, which params lacks")
        if not isinstance(v, torch.Tensor) or v.shape != p[k].shape:
            raise ValueError(
                f"{where}: direction[{k!r}] must be a tensor of shape {tuple(p[k].shape)}, got "
                f"{tuple(getattr(v, 'shape', ()))}"
            )
    return {k: v.detach() for k, v in p.items()}, {k: v.detach() for k, v in d.items()}, lone


def _rebuild(p: dict[Any, torch.Tensor], lone: bool) -> Any:
    return p[None] if lone else p


def grid_line_search(
    loss_fn: LossFn,
    params: Mapping[str, torch.Tensor] | torch.Tensor,
    direction: Mapping[str, torch.Tensor] | torch.Tensor,
    *,
    num: int = 31,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ENGD's grid line search: the best of ``eta = 2^0, 2^-1, ..., 2^-(num-1)``.

    The loss at all ``num`` candidates ``params - eta * direction`` is evaluated in one
    batched pass (``torch.func.vmap`` of ``loss_fn`` over the step sizes) and the argmin
    is returned, whether or not it improves on the current loss (as ENGD does).
    Non-finite losses never win; if every candidate is non-finite, ``eta = 0``.

    Parameters
    ----------
    loss_fn : callable
        ``params -> scalar`` tensor, written for one parameter set (pure, so that
        ``vmap`` can batch it).
    params : dict name -> torch.Tensor, or torch.Tensor
    direction : dict or torch.Tensor
        Same structure; a dict may hold a subset of the keys (the other entries stay fixed).
    num : int
        Grid points.

    Returns
    -------
    eta : torch.Tensor, 0-d
    losses : torch.Tensor of shape (num,)
        The loss at every candidate (``inf`` where non-finite).

    References
    ----------
    Mueller, Zeinhofer. Achieving high accuracy with PINNs via energy natural gradient
    descent. ICML 2023.

    Examples
    --------
    >>> import torch
    >>> from sketchlinalg_torch import grid_line_search
    >>> x = torch.tensor([4.0], dtype=torch.float64)
    >>> eta, losses = grid_line_search(lambda p: (p**2).sum(), x, torch.tensor([16.0]).double())
    >>> float(eta), losses.shape
    (0.25, torch.Size([31]))
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}")
    p, d, lone = _as_dicts(params, direction, "grid_line_search")
    first = next(iter(d.values()))
    etas = 0.5 ** torch.arange(num, dtype=first.dtype, device=first.device)
    fixed = {k: v for k, v in p.items() if k not in d}

    def at(eta: torch.Tensor) -> torch.Tensor:
        moved = {k: p[k] - eta * d[k] for k in d}
        return loss_fn(_rebuild({**fixed, **moved}, lone))

    with torch.no_grad():
        losses = vmap(at)(etas)
    if losses.shape != (num,):
        raise ValueError(f"loss_fn must return a scalar, got shape {tuple(losses.shape[1:])}")
    losses = torch.where(torch.isfinite(losses), losses, torch.inf)
    best = torch.argmin(losses)
    eta = torch.where(torch.isfinite(losses[best]), etas[best], torch.zeros_like(etas[best]))
    return eta, losses


def armijo_line_search(
    loss_fn: LossFn,
    params: Mapping[str, torch.Tensor] | torch.Tensor,
    direction: Mapping[str, torch.Tensor] | torch.Tensor,
    slope: torch.Tensor | float,
    *,
    loss0: torch.Tensor | float | None = None,
    c: float = 1e-4,
    max_halvings: int = 30,
    eta0: float = 1.0,
) -> torch.Tensor:
    """Backtracking: the first ``eta = eta0 2^-j`` with ``L(p - eta d) <= L(p) - c eta s``.

    Parameters
    ----------
    loss_fn : callable
        ``params -> scalar`` tensor.
    params, direction : dict or torch.Tensor
        As in :func:`grid_line_search`.
    slope : tensor or float
        ``s = g . d``, the directional derivative of the loss along ``-direction`` (taken
        with a minus sign); ``s <= 0`` means ``-d`` is not a descent direction, and then
        ``eta = 0``.
    loss0 : tensor or float, optional
        ``L(params)`` if already known.
    c : float
        Sufficient-decrease constant in ``(0, 1)``.
    max_halvings : int
        Candidates tried after ``eta0``.
    eta0 : float
        First step size.

    Returns
    -------
    eta : torch.Tensor, 0-d
        The accepted step size, or 0 if none of the ``max_halvings + 1`` candidates passed.

    Examples
    --------
    >>> import torch
    >>> from sketchlinalg_torch import armijo_line_search
    >>> x, d = torch.tensor([1.0]).double(), torch.tensor([4.0]).double()
    >>> float(armijo_line_search(lambda p: (p**2).sum(), x, d, slope=8.0))
    0.25
    """
    if not 0 < c < 1:
        raise ValueError(f"c must be in (0, 1), got {c!r}")
    if isinstance(max_halvings, bool) or not isinstance(max_halvings, int) or max_halvings < 0:
        raise ValueError(f"max_halvings must be an int >= 0, got {max_halvings!r}")
    p, d, lone = _as_dicts(params, direction, "armijo_line_search")
    first = next(iter(d.values()))
    zero = torch.zeros((), dtype=first.dtype, device=first.device)
    s = float(slope)
    with torch.no_grad():
        L0 = float(loss_fn(_rebuild(p, lone))) if loss0 is None else float(loss0)
        if not (s > 0 and math.isfinite(L0)):
            return zero
        eta = float(eta0)
        for _ in range(max_halvings + 1):
            moved = {**p, **{k: p[k] - eta * d[k] for k in d}}
            new = float(loss_fn(_rebuild(moved, lone)))
            if math.isfinite(new) and new <= L0 - c * eta * s:
                return zero + eta
            eta *= 0.5
    return zero
