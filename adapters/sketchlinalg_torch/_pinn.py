"""PINN residuals and Jacobians: PyTorch's per-point kernels for the core's PINN system."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import array_api_compat
import torch
from torch.func import functional_call, grad_and_value, vmap

import sketchlinalg as sl
from sketchlinalg import PATHS, PINNSystem, Term

from ._batched import batched_values, evaluate, give_up, layout_of
from ._mlp import MLP, factor_rows, ghost_shapes, residual_key, write_rows
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


# The calling convention each module was found to follow (probed once per module):
# True when it wants a batch (n, d) of points, False when it takes one point (d,).
_BATCH_STYLE: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def _batch_style(
    model: torch.nn.Module,
    params: Mapping[Any, torch.Tensor],
    x0: torch.Tensor,
    batched: bool | None,
    where: str,
) -> bool:
    """Whether ``model`` is called on a batch ``(1, d)`` (True) or on a point ``(d,)``.

    ``batched=None`` decides by calling the module once on the point ``x0``: a module that
    fails there, or returns more than one value, and returns one value for ``x0[None]``
    (shape ``(1, d)``) is batch-style. The answer is remembered per module.
    """
    if batched is not None:
        if not isinstance(batched, bool):
            raise TypeError(f"{where}: batched must be True, False or None, got {batched!r}")
        return batched
    known = _BATCH_STYLE.get(model)
    if known is not None:
        return known
    tried: list[str] = []
    for style, x in ((False, x0), (True, x0[None])):
        try:
            with torch.no_grad():
                out = functional_call(model, dict(params), (x,))
        except Exception as exc:  # the user's forward: any failure means "not this form"
            tried.append(f"on a {tuple(x.shape)} input it raised {type(exc).__name__}: {exc}")
            continue
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            _BATCH_STYLE[model] = style
            return style
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        tried.append(f"on a {tuple(x.shape)} input it returned {shape}")
    raise ValueError(
        f"{where}: the model must map one point of shape (d,) to a scalar or (1,) output, or a "
        f"batch of shape (n, d) to (n,) or (n, 1); {'; '.join(tried)}"
    )


def _scalar_model(
    model: torch.nn.Module, params: Mapping[Any, torch.Tensor], batched: bool
) -> Scalar:
    """``u(x)`` for one point ``x`` of shape ``(d,)``: the module called on ``x`` or, for a
    batch-style module, on ``x[None]`` (vmap over the points batches either form); an
    :class:`MLP` runs its layers directly (no ``functional_call``)."""
    mlp = MLP.of(model)
    if mlp is not None:
        return lambda x: mlp(params, x).reshape(())

    def u(x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, dict(params), (x[None] if batched else x,))
        if out.numel() != 1:
            raise ValueError(
                "model must map one point of shape (d,) to a scalar or a (1,) output, or a "
                f"batch (n, d) to (n,) or (n, 1); got an output of shape {tuple(out.shape)} "
                f"for an input of shape {tuple(x.shape) if not batched else (1, *x.shape)}"
            )
        return out.reshape(())

    return u


def pinn_residual(
    model: torch.nn.Module,
    params: Mapping[str, torch.Tensor] | None,
    terms: Sequence[Term],
    *,
    points: Sequence[torch.Tensor] | None = None,
    batched: bool | None = None,
) -> torch.Tensor:
    """The stacked weighted PINN residual ``r(params)`` of shape ``(N,)``.

    A pure function of ``params``: it can be batched with ``torch.func.vmap`` over
    parameters (the line searches do) and differentiated with ``torch.func``.

    Each term's residual, written for one point, is mapped over its points with
    ``torch.func.vmap``. For an MLP (a ``torch.nn.Sequential`` of ``nn.Linear`` layers and
    activations) it is instead run once on all the points, as columns ``x`` of shape
    ``(d, n)`` (``x[0]``: every point's first coordinate) or as rows ``(n, d)``
    (``x[..., 0]``), with ``u`` and the differential operators of this adapter acting on
    the batch: the same values without ``vmap``'s per-operation cost. The layout is
    chosen the first time a residual function is seen at a number of points, by comparing
    its values with the mapped ones there and at a perturbed copy of the points; a
    residual that matches neither keeps ``vmap``.

    Parameters
    ----------
    model : torch.nn.Module
        Maps one point of shape ``(d,)`` to a scalar or ``(1,)`` output, or (batch-style)
        a batch ``(n, d)`` to ``(n,)`` or ``(n, 1)``; see ``batched``.
    params : dict name -> torch.Tensor, or None
        Values for (some of) the module's parameters, used through
        ``torch.func.functional_call``; the module's own tensors (buffers included) fill
        in the rest. ``None``: the module's trainable parameters.
    terms : sequence of Term
    points : sequence of torch.Tensor, optional
        One tensor per term replacing its points (freshly drawn ones, say).
    batched : bool or None
        How the module is called: ``False`` on one point ``(d,)``, ``True`` on a batch of
        one ``(1, d)`` (a module written for batches, ``x[:, 0:1]``); ``torch.func.vmap``
        over the points batches either form. ``None`` (default): decided once per module
        by calling it on the first point both ways.

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
    style = _batch_style(model, params, terms[0].points[0], batched, "pinn_residual")
    u = _scalar_model(model, params, style)
    mlp = MLP.of(model)

    def values(k: int, pts: torch.Tensor) -> torch.Tensor:
        def mapped(at: torch.Tensor) -> torch.Tensor:
            return vmap(lambda x: terms[k].at(u, x))(at)

        if mlp is not None:  # all points in one eager evaluation where the residual allows
            out = batched_values(mlp, params, terms[k].residual, pts, mapped)
            if out is not None:
                return out
        return mapped(pts)

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
    workspace: torch.Tensor | None = None,
    points: Sequence[torch.Tensor] | None = None,
    batched: bool | None = None,
) -> PINNSystem:
    r"""The weighted PINN residual and its Jacobian (:func:`sketchlinalg.build_pinn_system`).

    ``path="materialized"``: per-point gradients (``vmap`` over the points of
    ``grad_and_value`` of one row in the parameters), the explicit matrix and the residual
    in one pass, ``chunk_size`` points at a time. For a ``torch.nn.Sequential`` whose
    parameters all belong to its ``nn.Linear`` layers (an MLP) the rows come from layer
    factors instead: each layer's inputs and the residual's gradients in its outputs (one
    reverse pass per point, no per-point weight gradient from autograd), multiplied into
    the rows of ``J`` by one batched product per layer, all points in one block unless
    ``chunk_size`` says otherwise (``sketchlinalg_torch._mlp``); a residual function whose
    factor rows differ from the per-point gradients the first time it is seen (it
    differentiates ``u`` in ``x`` by reverse or tangent mode, where the weights also act)
    keeps the per-point gradients. The factor pass runs on all the points at once where
    :func:`pinn_residual` batches the residual (its factor rows are compared with the
    per-point gradients in that form too). ``"matrix-free"``: :func:`jacobian_operator`
    of :func:`pinn_residual` (batched JVPs / VJPs, ``chunk_size`` columns at a time);
    ``"auto"``: materialized when a step fits in ``memory_budget`` (default 2 GiB on the host,
    half the free memory of a GPU: :func:`sketchlinalg.default_budget`;
    :func:`sketchlinalg.jacobian_path`).

    Parameters
    ----------
    model : torch.nn.Module
        Maps one point of shape ``(d,)`` to a scalar or ``(1,)`` output, or a batch
        ``(n, d)`` to ``(n,)`` or ``(n, 1)`` (called through ``torch.func.functional_call``;
        what ``params`` leaves out comes from the module).
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
    workspace : torch.Tensor, optional
        A contiguous 1-D tensor that receives ``J`` in its first ``N P`` elements when it
        has that many (of the parameters' dtype and device), any ``N``; else a new matrix
        is allocated (:func:`sketchlinalg.build_pinn_system`). The optimizers pass the last
        step's matrix, so a step allocates no ``N x P`` matrix (and takes no page faults
        on its first touch).
    points : sequence of torch.Tensor, optional
        One tensor per term replacing its points.
    batched : bool or None
        As in :func:`pinn_residual`.

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
    style = _batch_style(model, params, terms[0].points[0], batched, "pinn_system")

    def kernel(term: Term) -> Any:
        def row(train: dict[Any, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return term.at(_scalar_model(model, {**frozen, **train}, style), x)

        return vmap(grad_and_value(row), in_dims=(None, 0))

    kernels = [kernel(t) for t in terms]

    def generic(k: int, pts: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        grads, values = kernels[k](trainable, pts)
        return values, layout.column_blocks(grads)

    mlp = MLP.of(model) if path != "matrix-free" else None
    probes: list[Any] = [(None, None)] * len(terms)
    if mlp is not None:
        u = _scalar_model(model, params, style)
        with torch.no_grad():
            for k, t in enumerate(terms):

                def mapped(at: torch.Tensor, t: Term = t) -> torch.Tensor:
                    return vmap(lambda x: t.at(u, x))(at)

                batch = layout_of(mlp, params, t.residual, t.points, mapped)
                probes[k] = _factor_probe(mlp, t, trainable, frozen, layout, generic, k, batch)
        if chunk_size is None and all(p[0] is not None for p in probes):
            # the factors of all points are small (N x channels x width per layer): one
            # block (the weight gradients are formed by blocks in write_rows)
            chunk_size = max(int(t.points.shape[0]) for t in terms)

    def rows(k: int, pts: torch.Tensor) -> tuple[torch.Tensor, Any]:
        probe, batch = probes[k]
        if mlp is None or probe is None:
            return generic(k, pts)
        try:
            values, factors = factor_rows(
                mlp, terms[k].at, trainable, frozen, pts, probe, _batched(mlp, terms[k], pts, batch)
            )
        except Exception:
            if batch is None:
                raise
            # a branch the checks did not see: the generic rows now, vmap from now on
            give_up(mlp, terms[k].residual, pts)
            return generic(k, pts)

        def write(target: torch.Tensor, scale: float) -> None:
            write_rows(mlp, layout.names, layout.sizes, factors, target, scale)

        return values, write

    def matrix_free() -> tuple[torch.Tensor, sl.JacobianOperator]:
        return jacobian_operator(
            lambda p: pinn_residual(model, p, terms, batched=style), params, chunk_size=chunk_size
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
            workspace=workspace,
        )


def _batched(mlp: MLP, term: Term, pts: torch.Tensor, batch: str | None) -> Any:
    """The batched evaluation of ``term`` for :func:`factor_rows` (None: ``vmap``)."""
    if batch is None:
        return None
    return lambda params, ghosts, record: evaluate(
        mlp, term.residual, pts, batch, params, ghosts, record
    )


def _factor_probe(
    mlp: MLP,
    term: Term,
    trainable: dict[Any, torch.Tensor],
    frozen: Mapping[Any, torch.Tensor],
    layout: Any,
    generic: Callable[[int, torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]],
    k: int,
    batch: str | None,
) -> tuple[Any, str | None]:
    """The ghost shapes of ``term``'s factor rows (:func:`ghost_shapes`) and the batch
    layout they are computed in (``_batched``; ``None``: ``vmap`` over the points), or
    ``(None, None)`` when factor rows do not apply: the first time a residual function is
    seen with a module, its factor rows at (up to) three points are compared with the
    generic per-point gradients, batched (when ``batch`` names a layout) and else mapped;
    a mismatch (``u`` differentiated in ``x`` by reverse mode, say), or an error, keeps the
    generic path for it. Remembered (a residual's calls of ``u`` do not depend on the
    point's values)."""
    seen = mlp.checked
    pts = term.points
    key = (residual_key(term.residual), tuple(pts.shape[1:]), pts.dtype, batch)
    if key in seen:
        return seen[key]
    found: tuple[Any, str | None] = (None, None)
    try:
        # three points where the batch could be read either way (two points of d = 2)
        few = pts[: 3 if pts.shape[-1] == 2 else 2]
        ref_values, blocks = generic(k, few)
        ref = torch.cat(blocks, dim=1)
        tol = float(torch.finfo(pts.dtype).eps) ** 0.5
        for lay in (batch, None) if batch is not None else (None,):
            try:
                fn = _batched(mlp, term, few, lay)
                probe = ghost_shapes(mlp, term.at, {**frozen, **trainable}, pts[0], fn)
                values, factors = factor_rows(mlp, term.at, trainable, frozen, few, probe, fn)
                fast = torch.empty((few.shape[0], layout.size), dtype=pts.dtype, device=pts.device)
                write_rows(mlp, layout.names, layout.sizes, factors, fast, 1.0)
            except Exception:  # this form of the factor pass fails: the next one, or generic
                continue
            scale = float(ref_values.abs().max())
            if torch.allclose(values, ref_values, rtol=tol, atol=tol * scale) and torch.allclose(
                fast, ref, rtol=tol, atol=tol * float(ref.abs().max())
            ):
                found = (probe, lay)
                break
    except Exception:  # no ghost shapes or no generic rows: the generic path decides
        pass
    seen[key] = found
    return found
