"""PINN residuals and Jacobians: PyTorch's per-point kernels for the core's PINN system."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import array_api_compat
import torch
from torch.func import functional_call, grad_and_value, vmap

import sketchlinalg as sl
from sketchlinalg import PATHS, PINNSystem, Term

from ._operators import jacobian_operator, split_params

__all__ = ["PATHS", "PINNSystem", "Term", "pinn_residual", "pinn_system"]

Scalar = Callable[[torch.Tensor], torch.Tensor]


def _params(model: Any, params: Any, where: str) -> Mapping[Any, torch.Tensor]:
    """``params`` (default: the module's trainable parameters), keyed by names of the
    module's parameters or buffers (``functional_call`` would silently ignore any other)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if params is None:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}
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


def pinn_residual(
    model: torch.nn.Module,
    params: Mapping[str, torch.Tensor] | None,
    terms: Sequence[Term],
    *,
    points: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The stacked weighted PINN residual ``r(params)`` of shape ``(N,)``.

    A pure function of ``params``: it can be batched with ``torch.func.vmap`` over
    parameters (the line searches do) and differentiated with ``torch.func``.

    Parameters
    ----------
    model : torch.nn.Module
        Maps one point of shape ``(d,)`` to a scalar or ``(1,)`` output.
    params : dict name -> torch.Tensor, or None
        Values for (some of) the module's parameters, used through
        ``torch.func.functional_call``; the module's own tensors (buffers included) fill
        in the rest. ``None``: the module's trainable parameters.
    terms : sequence of Term
    points : sequence of torch.Tensor, optional
        One tensor per term replacing its points (freshly drawn ones, say).

    Returns
    -------
    torch.Tensor of shape (N,), ``N = sum_k N_k``
        Row ``i`` of term ``k`` is ``sqrt(weight_k / N_k) * residual_k(u, x_i)``.
    """
    params = _params(model, params, "pinn_residual")
    probe = next(iter(params.values()))
    terms = sl.check_terms(
        terms, points=points, dtype=probe.dtype, device=probe.device, where="pinn_residual"
    )
    u = _scalar_model(model, params)

    def values(k: int, pts: torch.Tensor) -> torch.Tensor:
        return vmap(lambda x: terms[k].at(u, x))(pts)

    return sl.stack_residual(terms, values, xp=array_api_compat.array_namespace(probe))


def pinn_system(
    model: torch.nn.Module,
    params: Mapping[str, torch.Tensor] | None,
    terms: Sequence[Term],
    *,
    path: str = "auto",
    memory_budget: int | None = None,
    chunk_size: int | None = None,
    out: torch.Tensor | None = None,
    points: Sequence[torch.Tensor] | None = None,
) -> PINNSystem:
    r"""The weighted PINN residual and its Jacobian (:func:`sketchlinalg.build_pinn_system`).

    ``path="materialized"``: per-point gradients (``vmap`` over the points of
    ``grad_and_value`` of one row in the parameters), the explicit matrix and the residual
    in one pass, ``chunk_size`` points at a time; ``"matrix-free"``: :func:`jacobian_operator`
    of :func:`pinn_residual` (batched JVPs / VJPs, ``chunk_size`` columns at a time);
    ``"auto"``: materialized when a step fits in ``memory_budget`` (default 2 GiB,
    :func:`sketchlinalg.jacobian_path`).

    Parameters
    ----------
    model : torch.nn.Module
        Maps one point of shape ``(d,)`` to a scalar or ``(1,)`` output (called through
        ``torch.func.functional_call``; what ``params`` leaves out comes from the module).
    params : dict name -> torch.Tensor, or None
        Only tensors with ``requires_grad=True`` are differentiated; ``None``: the module's
        trainable parameters.
    terms : sequence of Term
    path, memory_budget, chunk_size
        As above.
    out : torch.Tensor of shape (N, P), optional
        A contiguous buffer that receives ``J`` (materialized path). Passing the same one
        every step allocates the ``N x P`` matrix once, not once per step (at ``N P =
        10^9`` that saves page faults and allocator fragmentation: ``python -m
        benchmarks.scale --framework torch``); the next call overwrites it.
    points : sequence of torch.Tensor, optional
        One tensor per term replacing its points.

    Returns
    -------
    PINNSystem
        ``(residual, jacobian, path)``.

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
    params = _params(model, params, "pinn_system")
    trainable, frozen, layout = split_params(params, "pinn_system")
    like = layout.flatten(trainable)
    terms = sl.check_terms(terms, points=points, dtype=like.dtype, device=like.device)

    def kernel(term: Term) -> Any:
        def row(train: dict[Any, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return term.at(_scalar_model(model, {**frozen, **train}), x)

        return vmap(grad_and_value(row), in_dims=(None, 0))

    kernels = [kernel(t) for t in terms]

    def rows(k: int, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grads, values = kernels[k](trainable, pts)
        return values, layout.flatten_batch(grads)

    def matrix_free() -> tuple[torch.Tensor, sl.JacobianOperator]:
        return jacobian_operator(
            lambda p: pinn_residual(model, p, terms), params, chunk_size=chunk_size
        )

    with torch.no_grad():
        return sl.build_pinn_system(
            terms,
            like=like,
            rows=rows,
            matrix_free=matrix_free,
            unflatten=layout.unflatten,
            path=path,
            memory_budget=memory_budget,
            chunk_size=chunk_size,
            out=out,
        )
