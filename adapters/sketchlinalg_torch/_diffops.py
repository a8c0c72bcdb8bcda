"""Differential operators of a function of one point, built on ``torch.func``.

Each PINN residual row is differentiated once more, in the parameters, to build the
Jacobian (and it is evaluated under ``vmap`` over points, and over step sizes in the grid
line search), so the formulation of the Laplacian sets the cost of a step.
``benchmarks/torch_diffops.py`` measures the formulations below in those three settings;
:func:`laplacian` defaults to the fastest one measured (``benchmarks/results/torch_diffops.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vmap

from sketchlinalg._pinn import Derivatives, laplacian_weights, laplacian_with_fallback

from ._batched import NotBatched, batch_layout
from ._forward_laplacian import Jet, Unsupported, forward_jet, forward_laplacian

__all__ = [
    "LAPLACIAN_METHODS",
    "derivatives",
    "divergence",
    "gradient",
    "laplacian",
    "time_derivative",
]

Scalar = Callable[[torch.Tensor], torch.Tensor]

LAPLACIAN_METHODS = ("forward", "rev_over_rev", "fwd_over_rev", "fwd_over_fwd", "hessian_trace")
DEFAULT_LAPLACIAN = "forward"


def _check_point(x: torch.Tensor, where: str) -> str | None:
    """The layout of the batch ``x`` is inside a batched PINN evaluation (``_batched``),
    else ``None`` after checking that ``x`` is one point."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: x must be a torch.Tensor, got {type(x).__name__}")
    layout = batch_layout()
    if layout is not None:
        if x.ndim != 2:
            raise NotBatched(f"{where} at an input of shape {tuple(x.shape)} in a batch")
        return layout
    if x.ndim != 1:
        raise ValueError(
            f"{where}: x must be one point of shape (d,), got shape {tuple(x.shape)}; "
            "use torch.func.vmap over points"
        )
    return None


def _batch_jet(
    u: Callable[[Any], Any], x: torch.Tensor, layout: str, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`forward_jet` on a batch of points in ``layout`` (``_batched``): values
    ``(n,)``, gradients ``(d, n)``, Laplacians ``(n,)``. No reverse-mode fallback here: a
    function outside the forward rules raises and the evaluation maps over the points."""
    if layout == "columns":
        d, n = x.shape
        seed = torch.eye(d, dtype=x.dtype, device=x.device)[:, :, None].expand(d, d, n)
    else:
        n, d = x.shape
        seed = torch.eye(d, dtype=x.dtype, device=x.device)[:, None, :].expand(d, n, d)
    out = u(Jet(x, seed, torch.zeros_like(x), weights))
    if not isinstance(out, Jet) or out.value.numel() != n:
        raise NotBatched("the function is not one value per point of the batch")
    return out.value.reshape(n), out.grad.reshape(d, n), out.lap.reshape(n)


def gradient(u: Scalar, x: torch.Tensor) -> torch.Tensor:
    """Gradient ``grad u(x)`` of a scalar function ``u`` of one point ``x`` of shape ``(d,)``
    (one reverse pass); shape ``(d,)``.

    Examples
    --------
    >>> import torch
    >>> from sketchlinalg_torch import gradient
    >>> gradient(lambda x: (x**2).sum(), torch.tensor([1.0, 2.0])).tolist()
    [2.0, 4.0]
    """
    layout = _check_point(x, "gradient")
    if layout is not None:
        return _batch_jet(u, x, layout)[1]
    return grad(u)(x)


def time_derivative(u: Scalar, x: torch.Tensor, index: int = 0) -> torch.Tensor:
    """Partial derivative ``du/dx_index`` at one point ``x`` of shape ``(d,)`` (one
    forward-mode JVP; ``index`` 0 is time by the convention ``x = (t, space)``); 0-d.

    Examples
    --------
    >>> import torch
    >>> from sketchlinalg_torch import time_derivative
    >>> float(time_derivative(lambda x: x[0] * x[1], torch.tensor([2.0, 3.0])))
    3.0
    """
    layout = _check_point(x, "time_derivative")
    d = x.shape[-1 if layout == "rows" else 0]
    if isinstance(index, bool) or not isinstance(index, int) or not -d <= index < d:
        raise ValueError(f"index must be an int in [0, {d}), got {index!r}")
    if layout is not None:
        return _batch_jet(u, x, layout)[1][index]
    e = torch.eye(x.shape[0], dtype=x.dtype, device=x.device)[index]
    return jvp(u, (x,), (e,))[1]


def derivatives(u: Scalar, x: torch.Tensor, *, laplacian_dims: object = None) -> Derivatives:
    r"""Value, gradient and Laplacian of a scalar function at one point, in one forward pass.

    Where a residual needs several derivatives of ``u`` (``u_t - kappa u_xx``, a transport
    term beside a diffusion), one :func:`derivatives` replaces a :func:`time_derivative`
    and a :func:`laplacian`: the forward Laplacian (Li et al. 2024) carries the value, the
    ``d`` first derivatives and ``sum_{i in dims} d^2 u / dx_i^2`` together (``d + 2``
    channels), so the network runs once and its parameters' gradient is one reverse pass
    (separate calls run it once per operator and sum their per-point parameter gradients,
    which costs more than the passes themselves). A function outside the forward rules
    takes reverse mode (gradient, Hessian diagonal), with a warning once.

    Parameters
    ----------
    u : callable
        ``u(x) -> scalar`` tensor for ``x`` of shape ``(d,)``.
    x : torch.Tensor of shape (d,)
    laplacian_dims : int or sequence of int, optional
        The coordinates the Laplacian sums over (e.g. ``[1, 2]`` for the spatial part of
        ``x = (t, x_1, x_2)``); ``None``: all of them.

    Returns
    -------
    sketchlinalg.Derivatives
        ``(value, gradient, laplacian)``.

    Examples
    --------
    >>> import torch
    >>> from sketchlinalg_torch import derivatives
    >>> x = torch.tensor([2.0, 3.0], dtype=torch.float64)
    >>> v, g, lap = derivatives(lambda y: y[0] * y[1] ** 2, x, laplacian_dims=[1])
    >>> float(v), g.tolist(), float(lap)  # u = t x^2: u_t = x^2, u_x = 2 t x, u_xx = 2 t
    (18.0, [9.0, 12.0], 4.0)
    """
    layout = _check_point(x, "derivatives")
    w = laplacian_weights(laplacian_dims, x.shape[-1 if layout == "rows" else 0], "derivatives")
    weights = None if w is None else torch.tensor(w, dtype=x.dtype, device=x.device)
    if layout is not None:
        return Derivatives(*_batch_jet(u, x, layout, weights))

    def by_reverse_mode() -> Derivatives:
        g, value = torch.func.grad_and_value(u)(x)
        diag = torch.diagonal(jacrev(grad(u))(x))
        lap = diag.sum() if weights is None else (weights * diag).sum()
        return Derivatives(value.reshape(()), g, lap)

    return laplacian_with_fallback(
        lambda: Derivatives(*forward_jet(u, x, weights)),
        by_reverse_mode,
        "reverse mode",
        Unsupported,
    )


def divergence(v: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Divergence ``sum_i dv_i / dx_i`` of a vector field ``v: R^d -> R^d`` at one point
    ``x`` of shape ``(d,)``: the trace of the forward-mode Jacobian (``d`` JVPs in one
    ``vmap``); 0-d.

    Examples
    --------
    >>> import torch
    >>> from sketchlinalg_torch import divergence
    >>> float(divergence(lambda x: x * x, torch.tensor([1.0, 2.0])))
    6.0
    """
    if _check_point(x, "divergence") is not None:
        raise NotBatched("divergence has no batched form")
    return torch.diagonal(jacfwd(v)(x)).sum()


def laplacian(u: Scalar, x: torch.Tensor, *, method: str = DEFAULT_LAPLACIAN) -> torch.Tensor:
    r"""Laplacian ``sum_i d^2 u / dx_i^2`` of a scalar function at one point.

    Formulations (``benchmarks/torch_diffops.py`` times them; the default has the smallest
    cost per natural-gradient step, the materialized per-point Jacobian in the parameters
    plus the batched line search):

    * ``"forward"`` (default): the forward Laplacian (Li et al. 2024): the value, gradient
      and Laplacian of every intermediate are carried forward together (``d + 2``
      channels, one pass), so a further gradient in the parameters is reverse over forward
      only. ``u`` runs on a jet (value, gradient, Laplacian) in place of
      ``x``: linear layers, matrix products, arithmetic, the usual activations, indexing,
      ``stack``/``cat`` and reshapes have rules; a function calling anything else takes
      ``"rev_over_rev"`` instead, with a warning naming it, once per function.
    * ``"rev_over_rev"``: ``trace(jacrev(grad(u))(x))``: the gradient by one reverse
      pass, then the Hessian rows by ``d`` vmapped vector-Jacobian products.
    * ``"fwd_over_rev"``: ``sum_i e_i^T (d/dt) grad u(x + t e_i)``: a JVP of the gradient
      per basis vector, vmapped over the basis.
    * ``"fwd_over_fwd"``: ``sum_i d^2/dt^2 u(x + t e_i)`` by a JVP of a JVP, vmapped over
      the basis (no reverse pass).
    * ``"hessian_trace"``: ``trace(torch.func.hessian(u)(x))`` (``jacfwd(jacrev(u))``).

    Parameters
    ----------
    u : callable
        ``u(x) -> scalar`` tensor for ``x`` of shape ``(d,)``.
    x : torch.Tensor of shape (d,)
    method : str
        One of ``LAPLACIAN_METHODS``.

    Returns
    -------
    torch.Tensor, 0-d

    Examples
    --------
    >>> import torch
    >>> from sketchlinalg_torch import laplacian
    >>> x = torch.tensor([0.5, -1.0], dtype=torch.float64)
    >>> float(laplacian(lambda y: (y**2).sum() + y[0] * y[1], x))
    4.0
    """
    layout = _check_point(x, "laplacian")
    if layout is not None:
        if method != "forward":
            raise NotBatched(f"laplacian method {method!r} has no batched form")
        return _batch_jet(u, x, layout)[2]
    if method == "forward":
        return laplacian_with_fallback(
            lambda: forward_laplacian(u, x),
            lambda: laplacian(u, x, method="rev_over_rev"),
            "rev_over_rev",
            Unsupported,
        )
    if method == "fwd_over_fwd":
        basis = torch.eye(x.shape[0], dtype=x.dtype, device=x.device)

        def second(e: torch.Tensor) -> torch.Tensor:
            return jvp(lambda y: jvp(u, (y,), (e,))[1], (x,), (e,))[1]

        return vmap(second)(basis).sum()
    if method == "fwd_over_rev":
        basis = torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
        g = grad(u)
        return vmap(lambda e: (jvp(g, (x,), (e,))[1] * e).sum())(basis).sum()
    if method == "hessian_trace":
        return torch.diagonal(hessian(u)(x)).sum()
    if method == "rev_over_rev":
        return torch.diagonal(jacrev(grad(u))(x)).sum()
    raise ValueError(f"method must be one of {LAPLACIAN_METHODS}, got {method!r}")
