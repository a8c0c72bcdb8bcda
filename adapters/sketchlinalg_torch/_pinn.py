"""PINN residuals and their Jacobians from a module, point sets and per-point residuals."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch.func import functional_call, grad_and_value, vmap

from ._operators import (
    JacobianOperator,
    _Layout,
    check_chunk_size,
    check_residual,
    jacobian_operator,
    matrix_operator,
    split_params,
)

__all__ = ["PATHS", "PINNSystem", "Term", "pinn_residual", "pinn_system"]

PATHS = ("auto", "materialized", "matrix-free")
DEFAULT_MEMORY_BUDGET = 2 * 2**30  # bytes

Scalar = Callable[[torch.Tensor], torch.Tensor]


class Term(NamedTuple):
    """One family of PINN residual rows.

    Attributes
    ----------
    residual : callable
        ``residual(u, x) -> scalar`` for one point ``x`` of shape ``(d,)``, where
        ``u(x) -> scalar`` is the network at the current parameters. For
        ``-Laplace u = f``: ``lambda u, x: -laplacian(u, x) - f(x)``; for a Dirichlet
        boundary ``u = g``: ``lambda u, x: u(x) - g(x)``. It must be written for one point
        (it runs under ``torch.func.vmap`` over the points).
    points : torch.Tensor of shape (N_k, d)
        Collocation points, in the parameters' dtype and on their device.
    weight : float
        Measure of the term's domain (``|Omega|`` for interior points, ``|dOmega|`` for the
        boundary); each row is scaled by ``sqrt(weight / N_k)`` so that ``1/2 ||r||^2`` is a
        quadrature of the continuous loss (the Theory page of the documentation).
    name : str
        Label used in messages.
    """

    residual: Callable[[Scalar, torch.Tensor], torch.Tensor]
    points: torch.Tensor
    weight: float = 1.0
    name: str = ""


class PINNSystem(NamedTuple):
    """The weighted residual of a PINN and its Jacobian operator.

    Attributes
    ----------
    residual : torch.Tensor of shape (N,)
        The rows of all terms, stacked in order (detached).
    jacobian : JacobianOperator of shape (N, P)
        Over the flattened trainable parameters.
    path : str
        ``"materialized"`` or ``"matrix-free"``: which construction ran.
    """

    residual: torch.Tensor
    jacobian: JacobianOperator
    path: str


def _check_model(model: Any) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _default_params(model: torch.nn.Module, params: Any) -> Any:
    if params is None:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}
    return params


def _check_keys(model: torch.nn.Module, params: Any, where: str) -> Mapping[Any, torch.Tensor]:
    """``params`` must be a dict keyed by names of the module's parameters or buffers
    (``functional_call`` would silently ignore any other key)."""
    if not isinstance(params, Mapping):
        raise TypeError(
            f"{where}: params must be a dict name -> tensor or None, got {type(params).__name__}"
        )
    known = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    known |= {n for n, _ in model.named_buffers(remove_duplicate=False)}
    unknown = [k for k in params if k not in known]
    if unknown:
        raise ValueError(
            f"{where}: params has keys that name no parameter or buffer of the model: "
            f"{unknown[:4]!r}{' ...' if len(unknown) > 4 else ''} (expected names such as "
            f"{sorted(known)[:3]!r}; give an optimizer model.named_parameters(), not "
            "model.parameters())"
        )
    return params


def _check_terms(terms: Any, layout: _Layout) -> list[Term]:
    if isinstance(terms, Term) or not isinstance(terms, Sequence) or not terms:
        raise TypeError(
            f"terms must be a non-empty sequence of Term, got {type(terms).__name__}"
            + (" (wrap a single Term in a list)" if isinstance(terms, Term) else "")
        )
    out = []
    for i, term in enumerate(terms):
        label = f"terms[{i}]" + (f" ({term.name!r})" if getattr(term, "name", "") else "")
        if not isinstance(term, Term):
            raise TypeError(f"{label} must be a Term, got {type(term).__name__}")
        if not callable(term.residual):
            raise TypeError(f"{label}.residual must be callable (u, x) -> scalar")
        pts = term.points
        if not isinstance(pts, torch.Tensor) or pts.ndim != 2 or pts.shape[0] == 0:
            raise ValueError(
                f"{label}.points must be a non-empty tensor of shape (N_k, d), got "
                f"{type(pts).__name__} of shape {tuple(getattr(pts, 'shape', ()))}"
            )
        if pts.dtype != layout.dtype or pts.device != layout.device:
            raise TypeError(
                f"{label}.points must have the parameters' dtype {layout.dtype} and device "
                f"{layout.device}, got {pts.dtype} on {pts.device}"
            )
        w = float(term.weight)
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"{label}.weight must be a finite number >= 0, got {term.weight!r}")
        out.append(term)
    return out


def _scalar_model(model: torch.nn.Module, params: Mapping[Any, torch.Tensor]) -> Scalar:
    def u(x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, dict(params), (x,))
        if out.numel() != 1:
            raise ValueError(
                "model must map one point of shape (d,) to a scalar or a (1,) output, got an "
                f"output of shape {tuple(out.shape)}"
            )
        return out.reshape(())

    return u


def _row_values(
    model: torch.nn.Module, params: Mapping[Any, torch.Tensor], term: Term, label: str
) -> torch.Tensor:
    u = _scalar_model(model, params)
    rows = vmap(lambda x: term.residual(u, x))(term.points)
    if not isinstance(rows, torch.Tensor) or tuple(rows.shape) != (term.points.shape[0],):
        raise ValueError(
            f"{label}.residual must return a scalar per point (shape ()), got "
            f"{tuple(rows.shape[1:]) if isinstance(rows, torch.Tensor) else type(rows).__name__}"
        )
    return rows


def pinn_residual(
    model: torch.nn.Module, params: Mapping[str, torch.Tensor] | None, terms: Sequence[Term]
) -> torch.Tensor:
    """The stacked weighted PINN residual ``r(params)`` of shape ``(N,)``.

    A pure function of ``params``: it can be batched with ``torch.func.vmap`` over
    parameters (the grid line search does) and differentiated with ``torch.func``.

    Parameters
    ----------
    model : torch.nn.Module
        Maps one point of shape ``(d,)`` to a scalar or ``(1,)`` output.
    params : dict name -> torch.Tensor, or None
        Values for (some of) the module's parameters, used through
        ``torch.func.functional_call``; the module's own tensors (buffers included) fill
        in the rest. ``None``: the module's trainable parameters.
    terms : sequence of Term

    Returns
    -------
    torch.Tensor of shape (N,), ``N = sum_k N_k``
        Row ``i`` of term ``k`` is ``sqrt(weight_k / N_k) * residual_k(u, x_i)``.
    """
    model = _check_model(model)
    params = _check_keys(model, _default_params(model, params), "pinn_residual")
    if isinstance(terms, Term) or not isinstance(terms, Sequence) or not terms:
        raise TypeError(f"terms must be a non-empty sequence of Term, got {type(terms).__name__}")
    parts = []
    for i, term in enumerate(terms):
        rows = _row_values(model, params, term, f"terms[{i}]")
        parts.append(rows * math.sqrt(float(term.weight) / term.points.shape[0]))
    return torch.cat(parts)


def pinn_system(
    model: torch.nn.Module,
    params: Mapping[str, torch.Tensor] | None,
    terms: Sequence[Term],
    *,
    path: str = "auto",
    memory_budget: int | None = None,
    chunk_size: int | None = None,
    out: torch.Tensor | None = None,
) -> PINNSystem:
    r"""The weighted PINN residual and its Jacobian over the trainable parameters.

    Two constructions of ``J`` (``N x P``):

    * ``"materialized"``: per-point gradients, ``torch.func.vmap`` over the points of
      ``torch.func.grad_and_value`` of one residual row in the parameters, which gives the
      explicit matrix and the residual in one pass (in blocks of ``chunk_size`` points).
    * ``"matrix-free"``: :func:`jacobian_operator` of :func:`pinn_residual`: products are
      batched JVPs and VJPs (in blocks of ``chunk_size`` columns).
    * ``"auto"``: materialized when ``N * P * itemsize <= memory_budget``.

    With ``u = model`` at ``params``, row ``i`` of term ``k`` is
    ``sqrt(weight_k / N_k) * residual_k(u, x_i)`` (the Theory page of the documentation).

    Parameters
    ----------
    model : torch.nn.Module
        Maps one point of shape ``(d,)`` to a scalar or ``(1,)`` output
        (``torch.func.functional_call`` with ``params``; buffers and parameters that
        ``params`` leaves out are taken from the module and not differentiated).
    params : dict name -> torch.Tensor, or None
        Only tensors with ``requires_grad=True`` are differentiated. ``None``: the
        module's trainable parameters (``named_parameters()`` with ``requires_grad``).
    terms : sequence of Term
    path : {"auto", "materialized", "matrix-free"}
    memory_budget : int, optional
        Bytes allowed for the explicit Jacobian on the ``"auto"`` path (default 2 GiB).
    chunk_size : int, optional
        Points per vmapped block (materialized) or columns per block of products
        (matrix-free); default: all at once.
    out : torch.Tensor of shape (N, P), optional
        Materialized path: a contiguous tensor of the parameters' dtype and device that
        receives ``J`` (``path="auto"`` then means ``"materialized"``). Passing the same
        buffer every step (``functools.partial(pinn_system, ..., out=buffer)``) allocates
        the ``N x P`` matrix once instead of once per step: for large ``N P`` that saves
        the page faults of fresh memory and keeps the allocator from fragmenting (measured
        at ``N P = 10^9``: ``python -m benchmarks.scale --framework torch``). The returned
        Jacobian views the buffer, so the next call overwrites it.

    Returns
    -------
    PINNSystem
        ``(residual, jacobian, path)``; ``jacobian.path == path``.

    Examples
    --------
    >>> import torch
    >>> from sketchlinalg_torch import Term, pinn_system, laplacian
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    >>> net = net.double()
    >>> pts = torch.rand(10, 2, dtype=torch.float64)
    >>> terms = [Term(lambda u, x: -laplacian(u, x) - 1.0, pts, weight=1.0, name="interior")]
    >>> r, J, path = pinn_system(net, None, terms)
    >>> r.shape, J.shape, path
    (torch.Size([10]), (10, 33), 'materialized')
    """
    model = _check_model(model)
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    chunk_size = check_chunk_size(chunk_size)
    params = _check_keys(model, _default_params(model, params), "pinn_system")
    trainable, frozen, layout = split_params(params, "pinn_system")
    terms = _check_terms(terms, layout)
    N = sum(t.points.shape[0] for t in terms)
    P = layout.size
    if out is not None:
        if path == "matrix-free":
            raise ValueError('pinn_system: out= is for the materialized path, got "matrix-free"')
        ok = (
            isinstance(out, torch.Tensor)
            and tuple(out.shape) == (N, P)
            and out.dtype == layout.dtype
            and out.device == layout.device
            and out.is_contiguous()
        )
        if not ok:
            got = (
                f"shape {tuple(out.shape)}, {out.dtype} on {out.device}, "
                f"contiguous={out.is_contiguous()}"
                if isinstance(out, torch.Tensor)
                else type(out).__name__
            )
            raise ValueError(
                f"pinn_system: out must be a contiguous tensor of shape {(N, P)}, "
                f"{layout.dtype} on {layout.device}; got {got}"
            )
        path = "materialized"
    if path == "auto":
        budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
        itemsize = torch.empty((), dtype=layout.dtype).element_size()
        path = "materialized" if N * P * itemsize <= budget else "matrix-free"

    if path == "matrix-free":
        r, J = jacobian_operator(
            lambda p: pinn_residual(model, p, terms), params, chunk_size=chunk_size
        )
        return PINNSystem(r, J, "matrix-free")

    # Rows are written into one preallocated N x P matrix (not concatenated at the end), so
    # the peak is J plus one chunk of per-point gradients.
    M = torch.empty((N, P), dtype=layout.dtype, device=layout.device) if out is None else out
    r = torch.empty((N,), dtype=layout.dtype, device=layout.device)
    offset = 0
    with torch.no_grad():
        for i, term in enumerate(terms):
            label = f"terms[{i}]"

            def row(train: dict[Any, torch.Tensor], x: torch.Tensor, term: Term = term) -> Any:
                u = _scalar_model(model, {**frozen, **train})
                return term.residual(u, x)

            per_point = vmap(grad_and_value(row), in_dims=(None, 0))
            pts = term.points
            c = pts.shape[0] if chunk_size is None else chunk_size
            scale = math.sqrt(float(term.weight) / pts.shape[0])
            for s in range(0, pts.shape[0], c):
                grads, vals = per_point(trainable, pts[s : s + c])
                if tuple(vals.shape) != (pts[s : s + c].shape[0],):
                    raise ValueError(
                        f"{label}.residual must return a scalar per point (shape ()), got "
                        f"{tuple(vals.shape[1:])}"
                    )
                rows = slice(offset + s, offset + s + vals.shape[0])
                torch.mul(layout.flatten_batch(grads), scale, out=M[rows])
                torch.mul(vals, scale, out=r[rows])
            offset += pts.shape[0]
    r = check_residual(r, "pinn_system: the terms' residual", layout.dtype)
    return PINNSystem(r, matrix_operator(M, layout), "materialized")
