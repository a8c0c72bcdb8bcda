"""Multilayer perceptrons as functions: a direct forward and Jacobian rows from layer factors.

A ``torch.nn.Sequential`` whose parameters all belong to its ``torch.nn.Linear`` children
(any other child has none: activations, scalings, ``Flatten``...) is evaluated here layer by
layer, without ``torch.func.functional_call`` swapping the module's tensors on every call.

Its residual Jacobian rows come from two factors per layer, as in per-example gradient
methods (Goodfellow 2015, "Efficient per-example gradient computations"; Dangel et al.
2020, BackPACK). A layer ``z = W a + b`` acts on every channel of the forward Laplacian
(value, ``d`` first derivatives, Laplacian: ``c = d + 2`` channels, one for a plain call of
``u``), so the gradient of a residual row ``r_n`` is

.. math::

    \\frac{\\partial r_n}{\\partial W} = \\sum_{k} g_{nk} a_{nk}^T, \\qquad
    \\frac{\\partial r_n}{\\partial b} = g_{n0},

where ``a_{nk}`` is the layer's input in channel ``k`` at point ``n`` and ``g_{nk} =
\\partial r_n / \\partial z_{nk}``. The ``g`` are gradients in a zero "ghost" added to
each layer's output (one ghost per point, not in the weights, so no per-point weight
gradient is formed by autograd). ``r_n`` depends on the ghosts of point ``n`` only, so one
ordinary reverse pass of ``sum_n r_n`` through the points' batched forward (``vmap``) gives
every point's ``g``, 15-20% faster than a ``vmap`` of per-point ``grad`` (whose backward
runs under the batching rules). The weight blocks are then one batched product per layer
(``c``-term sums), written straight into the rows of ``J``.
A term that calls ``u`` several times sums the products of its calls.

The weights must enter ``r`` only through these forward products: a residual that
differentiates ``u`` in ``x`` by reverse mode (its parameters then also act in the backward
pass) breaks that, so the adapter's ``pinn_system`` compares each residual function's
factor rows once with the generic per-point gradients and uses them only where the two
agree.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.func import vmap

from ._forward_laplacian import Jet, jet_rule

__all__ = ["MLP", "factor_rows", "ghost_shapes", "residual_key", "write_rows"]

#: Bytes of one block of per-point weight gradients (a batched product) in :func:`write_rows`.
_BLOCK_BYTES = 2 * 2**20


class MLP:
    """A ``torch.nn.Sequential`` of ``nn.Linear`` layers and parameter-free children.

    Call :meth:`of` to get one (``None`` for other modules). ``mlp(params, x)`` is the
    module's output at ``x`` (a tensor or a forward-Laplacian :class:`Jet`) with the
    tensors of ``params`` in place of the module's own (``functional_call`` semantics).

    Attributes
    ----------
    linears : list of (weight name, bias name or None)
        The parameter names of each linear layer, in order.
    """

    def __init__(self, model: torch.nn.Sequential) -> None:
        self._model = weakref.ref(model)
        self.signature = _signature(model)
        #: per residual function: (its ghost shapes, the batch layout of its factor pass)
        #: where its factor rows matched the generic per-point gradients, else (None,
        #: None) (filled by the adapter's pinn_system)
        self.checked: dict[Any, Any] = {}
        #: per residual function and points' shape: the layout of its batched evaluation,
        #: or None (vmap); filled by ``_batched.layout_of``
        self.batch_layouts: dict[Any, str | None] = {}
        self._scratch: torch.Tensor | None = None
        self._ghosts: dict[Any, list[torch.Tensor]] = {}
        # (kind, payload): ("linear", (weight name, bias name)) or ("module", child)
        self._steps: list[tuple[str, Any]] = []
        self.linears: list[tuple[str, str | None]] = []
        for name, child in model.named_children():
            if type(child) is torch.nn.Linear:
                names = (f"{name}.weight", None if child.bias is None else f"{name}.bias")
                self._steps.append(("linear", (len(self.linears), *names)))
                self.linears.append(names)
            elif type(child) in _ACTIVATIONS:
                self._steps.append(("activation", _ACTIVATIONS[type(child)]))
            else:
                self._steps.append(("module", child))

    _cache: ClassVar[weakref.WeakKeyDictionary[torch.nn.Module, MLP | None]] = (
        weakref.WeakKeyDictionary()
    )

    def scratch(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """A kept buffer of at least ``n`` elements of ``like``'s dtype and device, for the
        blocks of :func:`write_rows`: a fresh 2 MiB product per block faulted its pages in
        on every build (glibc maps such blocks afresh), half of the 1,800 minor page faults
        of a build of the nonlinear problem's Jacobian (N = 202)."""
        buf = self._scratch
        if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._scratch = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf[:n]

    def ghosts(self, c: int, shapes: list[torch.Size], like: torch.Tensor) -> list[torch.Tensor]:
        """Zero leaves of shapes ``(c, *s)`` requiring gradients, kept from call to call
        (they are only read: each build's gradients come from ``autograd.grad``): fresh
        zeros were as many multi-MiB page-faulting fills per build (Poisson 5D: 5 a term,
        2.9 MiB each). Kept: the last four shapes, ``c x channels x (sum of the layer
        widths)`` numbers each (about a tenth of the ``c`` rows of ``J`` at width 64)."""
        key = (c, tuple(shapes), like.dtype, like.device)
        kept = self._ghosts.get(key)
        if kept is None:
            if len(self._ghosts) >= 4:  # a few terms' blocks; the oldest leaves first
                self._ghosts.pop(next(iter(self._ghosts)))
            kept = self._ghosts[key] = [
                torch.zeros((c, *s), dtype=like.dtype, device=like.device, requires_grad=True)
                for s in shapes
            ]
        return kept

    @classmethod
    def of(cls, model: Any) -> MLP | None:
        """The :class:`MLP` of ``model``, or ``None`` when it is not one: a ``Sequential``
        whose every parameter and buffer belongs to an ``nn.Linear`` child (at least one).
        Remembered per module, and made afresh when its children change."""
        if not isinstance(model, torch.nn.Sequential):
            return None
        if model in cls._cache:
            known = cls._cache[model]
            if known is None or known.signature == _signature(model):
                return known  # (a module whose children changed is looked at again)
        ok = any(type(c) is torch.nn.Linear for c in model.children()) and all(
            type(c) is torch.nn.Linear
            or (next(c.parameters(), None) is None and next(c.buffers(), None) is None)
            for c in model.children()
        )
        mlp = cls(model) if ok else None
        cls._cache[model] = mlp
        return mlp

    def tensor(self, params: Mapping[Any, torch.Tensor], name: str | None) -> Any:
        """``params[name]``, else the module's own tensor (``None`` for no bias)."""
        if name is None:
            return None
        if name in params:
            return params[name]
        model = self._model()
        assert model is not None
        return model.get_parameter(name)

    def __call__(
        self,
        params: Mapping[Any, torch.Tensor],
        x: Any,
        ghosts: Iterator[torch.Tensor] | None = None,
        record: list[tuple[int, torch.Tensor, torch.Tensor]] | None = None,
    ) -> Any:
        """The output at ``x``; with ``ghosts``, each layer output gets the next ghost
        added (its channels stacked on a leading axis) and ``record`` receives ``(layer,
        input channels, output channels)`` of every linear call."""
        h = x
        for kind, payload in self._steps:
            if kind == "module":
                h = payload(h)
                continue
            if kind == "activation":  # its function or jet rule, without Module.__call__
                h = payload[1](h) if isinstance(h, Jet) else payload[0](h)
                continue
            layer, w_name, b_name = payload
            W, b = self.tensor(params, w_name), self.tensor(params, b_name)
            jet = isinstance(h, Jet)
            if jet:
                d = h.grad.shape[0]
                A = torch.cat([h.value[None], h.grad, h.lap[None]])
            else:
                A = h[None]
            Z = F.linear(A, W)
            if ghosts is not None:
                Z = Z + next(ghosts)
            if record is not None:
                record.append((layer, A, Z))
            if jet:
                # split and squeeze, not indexing: the backward of Z[0] or Z[1 : d + 1]
                # fills a fresh zero matrix of Z's size (its pages faulted in), split's is
                # one concatenation and squeeze's a view
                z0, zg, zl = torch.split(Z, [1, d, 1])
                z0, zl = z0.squeeze(0), zl.squeeze(0)
                h = Jet(z0 if b is None else z0 + b, zg, zl, h.weights)
            else:
                h = Z.squeeze(0) if b is None else Z.squeeze(0) + b
        return h


#: Parameter-free activation modules whose forward is one function of the input: called as
#: that function (on a tensor) or its forward-Laplacian rule (on a :class:`Jet`), skipping
#: ``Module.__call__`` and ``__torch_function__`` (a tenth of a small PINN's evaluation).
_ACTIVATIONS: dict[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    torch.nn.Tanh: (torch.tanh, jet_rule(torch.tanh)),
    torch.nn.Sigmoid: (torch.sigmoid, jet_rule(torch.sigmoid)),
}


def _signature(model: torch.nn.Sequential) -> tuple[Any, ...]:
    """The children (names, objects, biases): what a cached :class:`MLP` was built from."""
    return tuple(
        (name, id(c), type(c), getattr(c, "bias", None) is None)
        for name, c in model.named_children()
    )


def residual_key(fn: Callable[..., Any]) -> Any:
    """What identifies a residual function across re-creations of the same closure (its
    code, defaults and captured objects): runs drawn afresh each step keep one check."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return fn
    cells = tuple(id(c.cell_contents) for c in (getattr(fn, "__closure__", None) or ()))
    defaults = tuple(id(v) for v in (getattr(fn, "__defaults__", None) or ()))
    return (code, cells, defaults)


def factor_rows(
    mlp: MLP,
    at: Callable[[Callable[[Any], Any], torch.Tensor], Any],
    train: dict[Any, torch.Tensor],
    frozen: Mapping[Any, torch.Tensor],
    points: torch.Tensor,
    probe: tuple[list[torch.Size], list[int]],
    batched: Callable[..., torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor, torch.Tensor]]]:
    """Residual values ``(c,)`` and per-call factors ``(layer, A, G)`` at ``c`` points:
    ``A`` (``(c, channels, ..., in)``) the layer's inputs and ``G`` (``(c, channels, ...,
    out)``) the residual's gradients in its outputs; ``probe``: :func:`ghost_shapes` of
    the residual. ``batched(params, ghosts, record)``, when given, evaluates the residual
    on all the points at once (``_batched``: each call's channels ``(channels, c, ...)``,
    the points second) in place of the ``vmap`` over them."""
    params = {**frozen, **{k: v.detach() for k, v in train.items()}}

    def row(ghosts: list[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        record: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        it = iter(ghosts)
        out = at(lambda y: _scalar(mlp(params, y, it, record)), x)
        return out, [A for _, A, _ in record]

    shapes, layers = probe
    c = points.shape[0]
    with torch.enable_grad():
        ghosts = mlp.ghosts(c, shapes, points)
        if batched is None:
            values, inputs = vmap(row)(ghosts, points)
        else:  # the points on the second axis of each call's channels
            record: list[tuple[int, torch.Tensor, torch.Tensor]] = []
            values = batched(params, iter([g.transpose(0, 1) for g in ghosts]), record)
            inputs = [A.transpose(0, 1) for _, A, _ in record]
        if values.requires_grad:
            # r_n depends on the ghosts of point n only: one reverse pass of sum_n r_n
            grads = torch.autograd.grad(values.sum(), ghosts, materialize_grads=True)
        else:  # a residual that does not call u
            grads = tuple(torch.zeros_like(g) for g in ghosts)
    values = values.detach()
    inputs = [A.detach() for A in inputs]
    return values, list(zip(layers, inputs, grads, strict=True))


def _scalar(out: Any) -> Any:
    if out.numel() != 1:
        raise ValueError(f"model must map one point to one value; got shape {tuple(out.shape)}")
    return out.reshape(())


def ghost_shapes(
    mlp: MLP,
    at: Callable[[Callable[[Any], Any], torch.Tensor], Any],
    params: Mapping[Any, torch.Tensor],
    x0: torch.Tensor,
    batched: Callable[..., torch.Tensor] | None = None,
) -> tuple[list[torch.Size], list[int]]:
    """The output shapes (for one point) and layers of the linear calls of one residual
    evaluation, no ghosts: the ghosts the factor pass adds. At the point ``x0``, or, with
    ``batched`` (as in :func:`factor_rows`), from its batched evaluation (whose calls can
    differ: its derivatives all run forward)."""
    record: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        if batched is None:
            at(lambda y: _scalar(mlp(params, y, None, record)), x0)
            return [Z.shape for _, _, Z in record], [layer for layer, _, _ in record]
        batched(params, None, record)  # each call's channels (channels, points, ...)
    return [Z[:, 0].shape for _, _, Z in record], [layer for layer, _, _ in record]


def write_rows(
    mlp: MLP,
    names: list[Any],
    sizes: list[int],
    factors: list[tuple[int, torch.Tensor, torch.Tensor]],
    target: torch.Tensor,
    scale: float,
) -> None:
    """``target`` (``(c, P)``, the rows of ``J``) receives ``scale`` times the Jacobian rows
    the factors give, in the columns of the trainable tensors ``names`` (sizes ``sizes``,
    the layout's order)."""
    c = target.shape[0]
    offsets: dict[Any, tuple[int, int]] = {}
    start = 0
    for name, size in zip(names, sizes, strict=True):
        offsets[name] = (start, size)
        start += size
    written: set[Any] = set()

    def put(name: str | None, make: Callable[[torch.Tensor, bool], None]) -> None:
        if name is None or name not in offsets:
            return  # no bias, or a frozen tensor
        lo, size = offsets[name]
        make(target[:, lo : lo + size], name not in written)
        written.add(name)

    for layer, A, G in factors:
        w_name, b_name = mlp.linears[layer]
        out, inp = G.shape[-1], A.shape[-1]
        Gt = (G * scale if scale != 1.0 else G).reshape(c, -1, out)
        At = A.reshape(c, -1, inp)

        def weight(dest: torch.Tensor, first: bool, Gt: Any = Gt, At: Any = At) -> None:
            # by blocks of rows: a product into the strided rows of J would run batch by
            # batch; a small contiguous product and a copy stay in cache
            step = max(1, _BLOCK_BYTES // (Gt.shape[-1] * At.shape[-1] * dest.element_size()))
            for i in range(0, c, step):
                a, b = Gt[i : i + step].transpose(1, 2), At[i : i + step]
                shape = (a.shape[0], a.shape[1], b.shape[2])
                part = torch.bmm(a, b, out=mlp.scratch(math.prod(shape), dest).view(shape))
                rows = dest[i : i + step].view(part.shape)
                rows.copy_(part) if first else rows.add_(part)

        def bias(dest: torch.Tensor, first: bool, G: Any = G) -> None:
            # the bias enters the value channel (the first) only
            part = G[:, 0].reshape(c, -1, G.shape[-1]).sum(1)
            part = part * scale if scale != 1.0 else part
            dest.copy_(part) if first else dest.add_(part)

        put(w_name, weight)
        put(b_name, bias)
    missing = set(names) - written
    if missing:  # a trainable tensor no call used: its columns are zero
        for name in missing:
            lo, size = offsets[name]
            target[:, lo : lo + size].zero_()
