"""Natural-gradient optimizers as ``torch.optim.Optimizer`` subclasses.

Usage::

    system_fn = functools.partial(pinn_system, model, terms=terms)
    residual_fn = functools.partial(pinn_residual, model, terms=terms)
    opt = SNGD(model.named_parameters(), system_fn, residual_fn=residual_fn,
               rank=300, damping=1e-10, inverse="projected")
    for _ in range(steps):
        loss = opt.step()          # 1/2 ||r||^2 before the step

A natural-gradient step needs the residual as a *function of the parameters* (to build its
Jacobian and to evaluate the trial points of the line search), which a torch closure does
not give; so the functions are handed to the optimizer once and ``step()`` needs no closure
(one is still accepted and called, as in ``torch.optim``). The parameter dict those
functions receive is keyed by the names of ``model.named_parameters()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

import sketchlinalg as sl

from ._linesearch import armijo_line_search, grid_line_search
from ._operators import JacobianOperator, check_chunk_size, check_residual, jacobian_operator

__all__ = [
    "ENGD",
    "LINE_SEARCHES",
    "SNGD",
    "SPRING",
    "ENGDWoodbury",
    "NaturalGradient",
    "NystromPCG",
]

LINE_SEARCHES = ("grid", "armijo", None)
_METHODS = ("nystrom", "dense", "woodbury", "nystrom-pcg", "spring")
_INVERSES = ("woodbury", "projected")
# Options that shape the (joint) direction: they must agree across parameter groups.
_SHARED = ("damping", "rank", "oversample", "inverse", "sketch", "line_search", "momentum")

SystemFn = Callable[[dict[Any, torch.Tensor]], Any]
ResidualFn = Callable[[dict[Any, torch.Tensor]], torch.Tensor]


def _check_hyperparameters(method: str, h: dict[str, Any], where: str) -> None:
    damping = h["damping"]
    if isinstance(damping, bool) or not isinstance(damping, (int, float)):
        raise TypeError(f"{where}: damping must be a float, got {type(damping).__name__}")
    if not (math.isfinite(damping) and damping >= 0):
        raise ValueError(f"{where}: damping must be a finite float >= 0, got {damping!r}")
    needs_positive = method == "nystrom-pcg" or (method == "nystrom" and h["inverse"] == "woodbury")
    if needs_positive and damping == 0:
        raise ValueError(
            f"{where}: damping must be > 0 for method {method!r}"
            + (' with inverse="woodbury" (use inverse="projected" for 0)' * (method == "nystrom"))
            + ", got 0"
        )
    rank = h["rank"]
    if method in ("nystrom", "nystrom-pcg") and (
        isinstance(rank, bool) or not isinstance(rank, int) or rank < 1
    ):
        raise ValueError(f"{where}: rank must be a positive int, got {rank!r}")
    oversample = h["oversample"]
    if isinstance(oversample, bool) or not isinstance(oversample, int) or oversample < 0:
        raise ValueError(f"{where}: oversample must be an int >= 0, got {oversample!r}")
    if h["sketch"] not in sl.SKETCH_KINDS:
        raise ValueError(f"{where}: sketch must be one of {sl.SKETCH_KINDS}, got {h['sketch']!r}")
    if h["inverse"] not in _INVERSES:
        raise ValueError(f"{where}: inverse must be one of {_INVERSES}, got {h['inverse']!r}")
    if h["line_search"] not in LINE_SEARCHES:
        raise ValueError(
            f"{where}: line_search must be one of {LINE_SEARCHES}, got {h['line_search']!r}"
        )
    momentum = h["momentum"]
    if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        raise ValueError(f"{where}: momentum must be a float in [0, 1), got {momentum!r}")
    lr = h["lr"]
    if (
        isinstance(lr, bool)
        or not isinstance(lr, (int, float))
        or not (math.isfinite(lr) and lr > 0)
    ):
        raise ValueError(f"{where}: lr must be a finite float > 0, got {lr!r}")


class NaturalGradient(torch.optim.Optimizer):
    r"""Natural-gradient (damped Gauss–Newton) optimizer; the classes below fix ``method``.

    Each :meth:`step` evaluates ``system_fn(params) -> (r, J)`` at the current parameters,
    computes the direction ``d`` with :func:`sketchlinalg.natural_gradient_direction` (or
    :func:`sketchlinalg.spring_direction`), multiplies it by each group's ``lr``, picks a
    step size ``eta`` and sets ``theta <- theta - eta d``. The loss is
    ``L = 1/2 ||r||^2``.

    Parameters
    ----------
    params : iterable
        ``model.named_parameters()`` (recommended), a list of ``(name, tensor)`` pairs,
        tensors, or parameter groups (dicts with ``"params"`` and options). Tensors with
        ``requires_grad=False`` are passed to the functions but not optimized.
    system_fn : callable, optional
        ``params -> (r, J)`` with ``r`` of shape ``(N,)`` and ``J`` a
        ``sketchlinalg.LinearOperator`` of shape ``(N, P)`` over the flattened trainable
        parameters: e.g. ``functools.partial(pinn_system, model, terms=terms)`` or
        ``lambda p: jacobian_operator(residual_fn, p)``. ``params`` is a dict from each
        parameter's name (given named parameters) or its position in the optimizer's
        flat parameter list (given plain tensors) to the live tensor. Default:
        :func:`jacobian_operator` of ``residual_fn`` (matrix-free).
    method : {"nystrom", "dense", "woodbury", "nystrom-pcg", "spring"}
    residual_fn : callable, optional
        ``params -> r`` (same dict), pure so that ``torch.func.vmap`` can batch it over
        step sizes: needed by the line searches (e.g.
        ``functools.partial(pinn_residual, model, terms=terms)``).
    damping : float
        ``mu >= 0`` of ``(J^T J + mu I)^{-1}``; ``0`` (pseudo-inverse) is allowed for
        ``"dense"``, ``"woodbury"``, ``"spring"`` and for ``"nystrom"`` with
        ``inverse="projected"``.
    rank, oversample, inverse, sketch
        Sketch settings of ``"nystrom"`` and ``"nystrom-pcg"`` (``1 <= rank <= P``);
        ``sketch`` is the test-matrix distribution (``"gaussian"``, ``"rademacher"``,
        ``"sparse_sign"``).
    line_search : {"grid", "armijo", None}
        ENGD's grid ``eta = 2^0 .. 2^-(grid_size-1)`` in one batched pass (argmin),
        Armijo backtracking from ``eta = 1``, or ``eta = 1`` (the step is then ``lr d``).
    lr : float
        Per-group factor on the direction (a learning rate when ``line_search=None``).
    momentum : float
        SPRING's ``beta`` in ``[0, 1)``.
    seed : int
        Seed of the sketch generator (ignored when ``generator`` is given).
    generator : torch.Generator, optional
        Source of the sketches, on the parameters' device. Each step draws one 62-bit seed
        from it and passes it to the core (which draws the sketch with a native
        ``torch.Generator`` seeded from it). Its state is saved by :meth:`state_dict`
        and restored by :meth:`load_state_dict`, so a resumed run continues bit-identically.
    grid_size : int
        Points of the grid line search.
    chunk_size : int, optional
        Columns per block of the default matrix-free Jacobian.
    pcg_rtol, pcg_maxiter : optional
        Nystrom-PCG tolerance and iteration cap.
    armijo_c : float
        Sufficient-decrease constant of the Armijo search.

    Attributes
    ----------
    generator : torch.Generator
    direction_info : sketchlinalg.DirectionInfo or None
        What the core reported at the last step (``None`` for SPRING).
    jacobian_path : str or None
        ``J.path`` at the last step (``"materialized"`` / ``"matrix-free"``).

    Notes
    -----
    State (``state_dict()``): ``step``, ``loss`` (``L`` before the last step),
    ``step_size`` (the last ``eta``) and, for SPRING, ``previous`` (the last direction),
    kept under the first parameter; the generator's state is the top-level entry
    ``"sketch_generator"``. Every option except ``lr`` shapes one joint direction over
    all groups, so it must be equal in every group.

    Bad input (a residual that is not a finite 1-D tensor, a Jacobian of the wrong shape,
    no trainable parameter, ``rank > P``, a non-finite direction) raises before any
    parameter is written.
    """

    def __init__(
        self,
        params: Iterable[Any],
        system_fn: SystemFn | None = None,
        *,
        method: str,
        residual_fn: ResidualFn | None = None,
        damping: float,
        rank: int | None = None,
        oversample: int = 0,
        inverse: str = "woodbury",
        sketch: str = "gaussian",
        line_search: str | None = "grid",
        lr: float = 1.0,
        momentum: float = 0.0,
        seed: int = 0,
        generator: torch.Generator | None = None,
        grid_size: int = 31,
        chunk_size: int | None = None,
        pcg_rtol: float | None = None,
        pcg_maxiter: int | None = None,
        armijo_c: float = 1e-4,
    ) -> None:
        where = type(self).__name__
        if method not in _METHODS:
            raise ValueError(f"{where}: method must be one of {_METHODS}, got {method!r}")
        self.method = method
        defaults = {
            "lr": lr,
            "damping": damping,
            "rank": rank,
            "oversample": oversample,
            "inverse": inverse,
            "sketch": sketch,
            "line_search": line_search,
            "momentum": momentum,
        }
        _check_hyperparameters(method, defaults, where)
        if system_fn is None and residual_fn is None:
            raise TypeError(f"{where}: give system_fn (params -> (r, J)) or residual_fn")
        for name, fn in (("system_fn", system_fn), ("residual_fn", residual_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{where}: {name} must be callable, got {type(fn).__name__}")
        if line_search is not None and residual_fn is None:
            raise ValueError(
                f"{where}: line_search={line_search!r} needs residual_fn (params -> r, pure so "
                "that torch.func.vmap can batch it), e.g. functools.partial(pinn_residual, "
                "model, terms=terms); or pass line_search=None"
            )
        if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 1:
            raise ValueError(f"{where}: grid_size must be a positive int, got {grid_size!r}")
        if not 0 < armijo_c < 1:
            raise ValueError(f"{where}: armijo_c must be in (0, 1), got {armijo_c!r}")
        self.chunk_size = check_chunk_size(chunk_size)
        self.residual_fn = residual_fn
        if system_fn is None:
            assert residual_fn is not None
            res_fn = residual_fn

            def system_fn(p: dict[Any, torch.Tensor]) -> Any:
                return jacobian_operator(res_fn, p, chunk_size=self.chunk_size)

        self.system_fn = system_fn
        self.grid_size = grid_size
        self.pcg_rtol = pcg_rtol
        self.pcg_maxiter = pcg_maxiter
        self.armijo_c = armijo_c
        super().__init__(params, defaults)

        self._shared_options()  # every group's options are valid and agree
        named = self._named_params()
        trainable = [p for p in named.values() if p.requires_grad]
        self._check_trainable(trainable, where, rank)
        device = trainable[0].device
        if generator is None:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ValueError(f"{where}: seed must be an int >= 0, got {seed!r}")
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)
        elif not isinstance(generator, torch.Generator):
            raise TypeError(
                f"{where}: generator must be a torch.Generator, got {type(generator).__name__}"
            )
        elif generator.device.type != device.type:
            raise ValueError(
                f"{where}: generator is on {generator.device}, the parameters on {device}"
            )
        self.generator = generator
        self.direction_info: sl.DirectionInfo | None = None
        self.jacobian_path: str | None = None

    # -- parameters ----------------------------------------------------------------
    def _named_params(self) -> dict[Any, torch.Tensor]:
        """All parameters of all groups, keyed by name (or flat position if unnamed)."""
        out: dict[Any, torch.Tensor] = {}
        position = 0
        for group in self.param_groups:
            names = group.get("param_names")
            for i, p in enumerate(group["params"]):
                key = names[i] if names is not None else position
                if key in out:
                    raise ValueError(f"two parameters share the name {key!r}")
                out[key] = p
                position += 1
        return out

    def _check_trainable(self, trainable: list[torch.Tensor], where: str, rank: Any) -> int:
        if not trainable:
            raise ValueError(
                f"{where}: no trainable parameter: every tensor given to the optimizer has "
                "requires_grad=False (expected at least one with requires_grad=True)"
            )
        P = sum(p.numel() for p in trainable)
        if self.method in ("nystrom", "nystrom-pcg") and rank is not None and rank > P:
            raise ValueError(
                f"{where}: rank must be <= P = {P} (the number of trainable parameters), got {rank}"
            )
        return P

    def _shared_options(self) -> dict[str, Any]:
        first = self.param_groups[0]
        for i, group in enumerate(self.param_groups[1:], start=1):
            for key in _SHARED:
                if group[key] != first[key]:
                    raise ValueError(
                        f"{type(self).__name__}: option {key!r} must be equal in every parameter "
                        f"group (one joint direction), got {first[key]!r} in group 0 and "
                        f"{group[key]!r} in group {i}; only 'lr' may differ"
                    )
        for group in self.param_groups:
            _check_hyperparameters(self.method, group, type(self).__name__)
        return {key: first[key] for key in _SHARED}

    # -- state ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The optimizer state, with the sketch generator's state under
        ``"sketch_generator"`` (see :meth:`torch.optim.Optimizer.state_dict`)."""
        out = super().state_dict()
        out["sketch_generator"] = self.generator.get_state()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`, restoring the sketch generator's state too, so that
        the following steps repeat those of the run that saved it bit for bit."""
        gen_state = state_dict.get("sketch_generator")
        super().load_state_dict(state_dict)
        if gen_state is not None:
            self.generator.set_state(gen_state.detach().to("cpu", torch.uint8))

    # -- the step ------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one natural-gradient step.

        Parameters
        ----------
        closure : callable, optional
            Not needed (the functions were given to the constructor). If given, it is
            called first with gradients enabled and its value is returned, as in
            ``torch.optim``.

        Returns
        -------
        torch.Tensor
            ``1/2 ||r||^2`` at the parameters before the step (or the closure's value).

        Raises
        ------
        TypeError, ValueError
            Bad residual or Jacobian from ``system_fn`` (the parameters are unchanged).
        FloatingPointError
            The direction is not finite (the parameters are unchanged; increase
            ``damping``).
        """
        where = type(self).__name__
        closure_value = None
        if closure is not None:
            with torch.enable_grad():
                closure_value = closure()
        opts = self._shared_options()
        named = self._named_params()
        keys = [k for k, p in named.items() if p.requires_grad]
        P = self._check_trainable([named[k] for k in keys], where, opts["rank"])
        dtype = named[keys[0]].dtype
        out = self.system_fn(named)
        if not (isinstance(out, tuple) and len(out) >= 2):
            raise TypeError(
                f"{where}: system_fn must return (r, J) (a PINNSystem or the pair of "
                f"jacobian_operator), got {type(out).__name__}"
            )
        r = check_residual(out[0], f"{where}: system_fn", dtype)
        J = out[1]
        if not isinstance(J, sl.LinearOperator):
            raise TypeError(
                f"{where}: system_fn must return a sketchlinalg.LinearOperator Jacobian, got "
                f"{type(J).__name__}"
            )
        if J.shape != (r.shape[0], P):
            raise ValueError(
                f"{where}: system_fn returned J of shape {J.shape}, expected {(r.shape[0], P)} "
                f"(N residuals x P = {P} trainable parameters)"
            )
        dense = J.matrix if isinstance(J, JacobianOperator) and J.matrix is not None else J

        state = self.state[next(iter(named.values()))]
        gen_before = self.generator.get_state()
        seed = int(
            torch.randint(
                0, 2**62, (1,), generator=self.generator, device=self.generator.device
            ).item()
        )
        try:
            d, info = self._direction(dense, r, state, opts, seed, P, dtype)
            g = None if info is None else info.gradient
            step_dir, eta = self._step_size(named, keys, d, r, J, g, opts)
        except BaseException:
            self.generator.set_state(gen_before)  # a failed step consumes no randomness
            raise
        loss0 = 0.5 * torch.dot(r, r)

        if eta != 0.0:
            for k in keys:
                named[k].add_(step_dir[k], alpha=-eta)
        state["step"] = int(state.get("step", 0)) + 1
        state["loss"] = loss0.detach().clone()
        state["step_size"] = torch.tensor(eta, dtype=dtype, device=r.device)
        if self.method == "spring":
            state["previous"] = d.detach().clone()
        self.direction_info = info
        self.jacobian_path = getattr(J, "path", None)
        return closure_value if closure is not None else loss0

    def _direction(
        self,
        J: Any,
        r: torch.Tensor,
        state: dict[str, Any],
        opts: dict[str, Any],
        seed: int,
        P: int,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, sl.DirectionInfo | None]:
        where = type(self).__name__
        info = None
        if self.method == "spring":
            prev = state.get("previous")
            if not isinstance(prev, torch.Tensor) or prev.shape != (P,):
                prev = torch.zeros(P, dtype=dtype, device=r.device)
            d = sl.spring_direction(J, r, prev, damping=opts["damping"], momentum=opts["momentum"])
        else:
            d, info = sl.natural_gradient_direction(
                J,
                r,
                damping=opts["damping"],
                method=self.method,
                rank=opts["rank"],
                oversample=opts["oversample"],
                sketch=opts["sketch"],
                seed=seed,
                inverse=opts["inverse"],
                rtol=self.pcg_rtol,
                maxiter=self.pcg_maxiter,
            )
        if not bool(torch.isfinite(d).all()):
            raise FloatingPointError(
                f"{where}: the direction has non-finite entries (damping "
                f"{opts['damping']!r}); the parameters were not changed. Increase damping"
                + (" or lower the rank" if self.method in ("nystrom", "nystrom-pcg") else "")
            )
        return d, info

    def _step_size(
        self,
        named: dict[Any, torch.Tensor],
        keys: list[Any],
        d: torch.Tensor,
        r: torch.Tensor,
        J: sl.LinearOperator,
        g: torch.Tensor | None,
        opts: dict[str, Any],
    ) -> tuple[dict[Any, torch.Tensor], float]:
        """The direction per parameter (times its group's lr) and the step size; ``g`` is
        ``J^T r`` when the direction computed it (else one more pass over ``J``)."""
        lrs = {k: g["lr"] for g, k in self._group_of_keys(named)}
        parts = torch.split(d, [named[k].numel() for k in keys])
        step_dir = {
            k: (lrs[k] * part).view_as(named[k]) for k, part in zip(keys, parts, strict=True)
        }
        if opts["line_search"] is None:
            return step_dir, 1.0
        res_fn = self.residual_fn
        assert res_fn is not None

        def loss_fn(p: Any) -> torch.Tensor:
            res = res_fn(p)
            return 0.5 * (res * res).sum()

        detached = {k: p.detach() for k, p in named.items()}
        if opts["line_search"] == "grid":
            eta, _ = grid_line_search(loss_fn, detached, step_dir, num=self.grid_size)
            return step_dir, float(eta)
        flat_dir = torch.cat([step_dir[k].reshape(-1) for k in keys])
        slope = torch.dot(J.rmatvec(r) if g is None else g, flat_dir)
        loss0 = 0.5 * torch.dot(r, r)
        eta = armijo_line_search(loss_fn, detached, step_dir, slope, loss0=loss0, c=self.armijo_c)
        return step_dir, float(eta)

    def _group_of_keys(self, named: dict[Any, torch.Tensor]) -> list[tuple[dict[str, Any], Any]]:
        ids = {id(p): k for k, p in named.items()}
        return [(g, ids[id(p)]) for g in self.param_groups for p in g["params"]]


class SNGD(NaturalGradient):
    """SNGD: sketched natural gradient, ``d = (G_hat + mu I)^{-1} J^T r`` with a rank-``rank``
    Nystrom approximation ``G_hat`` of ``G = J^T J`` drawn afresh every step.

    Best Mckay, Kaur, Greif, Wetton, ICML 2025. ``inverse="projected"`` uses
    ``G_hat^+`` on the sketched range (allows ``damping=0``). See :class:`NaturalGradient`
    for the other arguments.

    Examples
    --------
    >>> import torch
    >>> from sketchlinalg_torch import SNGD
    >>> A = torch.randn(20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> x = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    >>> res = lambda p: A @ p["x"] - 1.0
    >>> opt = SNGD([("x", x)], residual_fn=res, rank=5, damping=1e-10)
    >>> losses = [float(opt.step()) for _ in range(2)]
    >>> losses[1] < losses[0]
    True
    """

    def __init__(
        self,
        params: Iterable[Any],
        system_fn: SystemFn | None = None,
        *,
        rank: int,
        damping: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, system_fn, method="nystrom", rank=rank, damping=damping, **kwargs)


class ENGD(NaturalGradient):
    """ENGD: the dense Gram matrix, ``d = (G + mu I)^{-1} J^T r`` by Cholesky, or the
    pseudo-inverse ``G^+ J^T r`` (eigendecomposition) at ``damping=0`` (the default).

    Mueller & Zeinhofer, ICML 2023. ``O(P^3)`` per step. See :class:`NaturalGradient`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        system_fn: SystemFn | None = None,
        *,
        damping: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, system_fn, method="dense", damping=damping, **kwargs)


class ENGDWoodbury(NaturalGradient):
    """ENGD in residual space: ``d = J^T (J J^T + mu I)^{-1} r``, exact, ``N x N``.

    Guzman-Cordero, Dangel, Goldshlager, Zeinhofer, NeurIPS 2025. Pseudo-inverse at the
    default ``damping=0``. See :class:`NaturalGradient`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        system_fn: SystemFn | None = None,
        *,
        damping: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, system_fn, method="woodbury", damping=damping, **kwargs)


class NystromPCG(NaturalGradient):
    """Damped Gauss–Newton ``(G + mu I) d = J^T r`` solved by CG with a rank-``rank``
    Nystrom preconditioner (exact up to ``pcg_rtol``).

    Frangella, Tropp, Udell, SIMAX 2023. See :class:`NaturalGradient`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        system_fn: SystemFn | None = None,
        *,
        rank: int,
        damping: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            params, system_fn, method="nystrom-pcg", rank=rank, damping=damping, **kwargs
        )


class SPRING(NaturalGradient):
    """SPRING: kernel-form natural gradient with Kaczmarz-style momentum ``beta``:
    ``phi_k = J^T (J J^T + mu I)^{-1} (r - beta J phi_{k-1}) + beta phi_{k-1}``.

    Goldshlager, Abrahamsen, Lin, J. Comput. Phys. 2024. ``phi_{k-1}`` is kept in the
    optimizer state. See :class:`NaturalGradient`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        system_fn: SystemFn | None = None,
        *,
        damping: float,
        momentum: float = 0.9,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            params, system_fn, method="spring", damping=damping, momentum=momentum, **kwargs
        )
