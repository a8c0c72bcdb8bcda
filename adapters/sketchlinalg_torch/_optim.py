"""Natural-gradient optimizers as ``torch.optim.Optimizer`` subclasses over the core's step.

A natural-gradient step needs the residual as a *function of the parameters* (to build its
Jacobian and to evaluate the trial points of the line search), which a torch closure does
not give; so the functions are handed to the optimizer once and ``step()`` needs no closure
(one is still accepted and called, as in ``torch.optim``)::

    opt = SNGD(model.named_parameters(), functools.partial(pinn_system, model, terms=terms),
               residual_fn=functools.partial(pinn_residual, model, terms=terms))
    for _ in range(steps):
        loss = opt.step()          # 1/2 ||r||^2 before the step
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch.func import vmap

import sketchlinalg as sl

from ._distributed import TorchCollective, check_same_generator
from ._operators import jacobian_operator

__all__ = [
    "ENGD",
    "LINE_SEARCHES",
    "SNGD",
    "SPRING",
    "ENGDWoodbury",
    "NaturalGradient",
    "NystromPCG",
]

LINE_SEARCHES = sl.LINE_SEARCHES
# the core's StepState fields, in order ("step" is torch's name of "steps")
_STATE_KEYS = ("step", *sl.StepState._fields[1:])


class NaturalGradient(torch.optim.Optimizer):
    r"""Natural-gradient (damped Gauss–Newton) optimizer running the core's
    :class:`sketchlinalg.StepEngine`; the subclasses fix ``method``.

    Each :meth:`step` evaluates ``system_fn(params) -> (r, J)`` and runs the core's step
    (direction, line search, momentum, the non-finite policy), then sets
    ``theta <- theta - lr eta d`` with each group's ``lr``. The loss is ``1/2 ||r||^2``.

    Parameters
    ----------
    params : iterable
        ``model.named_parameters()`` (recommended), ``(name, tensor)`` pairs, tensors, or
        groups (dicts with ``"params"`` and ``"lr"``). Tensors with ``requires_grad=False``
        are passed to the functions but not optimized.
    system_fn : callable, optional
        ``params -> (r, J)``, e.g. ``functools.partial(pinn_system, model, terms=terms)``;
        ``params`` is a dict from each parameter's name (or position, for plain tensors) to
        the live tensor. Default: :func:`jacobian_operator` of ``residual_fn``.
    method : str
        The direction method (:data:`sketchlinalg.METHODS`).
    residual_fn : callable, optional
        ``params -> r`` (same dict), pure so that ``torch.func.vmap`` can batch it over step
        sizes: needed by the line searches.
    lr : float
        ``>= 0`` per group, multiplying the step after the line search.
    seed : int
        Seed of the sketch generator (ignored when ``generator`` is given).
    generator : torch.Generator, optional
        Source of the sketches, on the parameters' device; each step draws one seed from
        it. Saved by :meth:`state_dict`, so a resumed run continues bit-identically.
    chunk_size : int, optional
        Columns per block of the default matrix-free Jacobian.
    process_group : ProcessGroup, optional
        Data parallelism over the collocation points (``torch.distributed``, launched with
        ``torchrun``): each rank's ``system_fn`` and ``residual_fn`` evaluate only its own
        points, and the core's step sums every reduction over rows across the group
        (:class:`TorchCollective`; :meth:`sketchlinalg.StepEngine.step`'s ``collective``):
        the sketch ``J^T [J Omega, r]`` (``P x (l + 1)``), the loss, ``J^T J`` (ENGD), each
        CG product (Nystrom-PCG), the trial losses of the line search; the kernel methods
        (ENGD-Woodbury, SPRING) all-gather ``[J_d, r_d]``. Every rank must give the same
        ``seed`` (checked) and the same parameters; the update is then the same on all
        ranks. ``torch.distributed.group.WORLD`` for all processes; ``None`` (default):
        no distribution.
    **options
        Of :meth:`sketchlinalg.StepEngine.from_options`: ``damping``, ``line_search``,
        ``grid_size``, ``grid_batch``, ``grid_warm_start``, ``armijo_c``, ``momentum`` and
        the solver's options (``rank``, ``inverse``, ``sketch``, ``rtol``, ...).

    Attributes
    ----------
    engine : sketchlinalg.StepEngine
    generator : torch.Generator
    last_step : sketchlinalg.StepInfo or None
        The core's record of the last step (``last_step.direction`` is the solver's).
    jacobian_path : str or None
        ``J.path`` at the last step.
    communication : TorchCollective or None
        With ``process_group``: the collective, whose ``bytes`` and ``log`` count what this
        rank sent.
    last_step_bytes : int
        Bytes this rank sent in the last step (``0`` without ``process_group``).

    Notes
    -----
    The state under the first parameter is the core's :class:`sketchlinalg.StepState`
    (``step``, ``loss``, ``step_size``, ``previous``, ``skipped``, ``status``, ``damping``,
    ``rank``...); the sketch
    generator's state is ``state_dict()["sketch_generator"]``. A step with NaN/Inf in the
    residual, the Jacobian or the direction is not taken (``skipped`` counts it, a
    :class:`sketchlinalg.StepWarning` says so), as in the JAX optimizers. Bad input raises
    before any parameter is written.
    """

    method: ClassVar[str | None] = None
    option_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        params: Iterable[Any],
        system_fn: Callable[..., Any] | None = None,
        *,
        residual_fn: Callable[..., torch.Tensor] | None = None,
        lr: float = 1.0,
        seed: int = 0,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
        process_group: Any = None,
        **options: Any,
    ) -> None:
        where = type(self).__name__
        method = options.pop("method", type(self).method)
        if method is None:
            raise TypeError(f"{where}: give the direction method (sketchlinalg.METHODS)")
        if "learning_rate" in options:
            raise TypeError(f"{where}: the learning rate is lr (per parameter group)")
        self.engine = sl.StepEngine.from_options(method, **{**self.option_defaults, **options})
        _check_lr(lr, where)
        if system_fn is None and residual_fn is None:
            raise TypeError(f"{where}: give system_fn (params -> (r, J)) or residual_fn")
        for name, fn in (("system_fn", system_fn), ("residual_fn", residual_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{where}: {name} must be callable, got {type(fn).__name__}")
        if self.engine.line_search is not None and residual_fn is None:
            raise ValueError(
                f"{where}: line_search={self.engine.line_search!r} needs residual_fn (params "
                "-> r, pure so that torch.func.vmap can batch it), e.g. "
                "functools.partial(pinn_residual, model, terms=terms); or pass line_search=None"
            )
        if system_fn is None:
            assert residual_fn is not None
            res_fn = residual_fn

            def system_fn(p: dict[Any, torch.Tensor], **kw: Any) -> Any:
                return jacobian_operator(lambda q: res_fn(q, **kw), p, chunk_size=chunk_size)

        self.system_fn, self.residual_fn = system_fn, residual_fn
        self._system_kwargs = sl.forwarded_kwargs(system_fn)
        self._residual_kwargs = sl.forwarded_kwargs(residual_fn)
        # The last step's N x P matrix, passed back as ``workspace=`` (pinn_system): a step
        # then allocates and page-faults no Jacobian.
        self._takes_workspace = _names_parameter(system_fn, "workspace")
        self._workspace: torch.Tensor | None = None
        super().__init__(params, {"lr": lr})
        for i, group in enumerate(self.param_groups):
            extra = sorted(set(group) - {"params", "lr", "param_names"})
            if extra:
                raise ValueError(
                    f"{where}: parameter group {i} has option(s) {extra}; only 'lr' may be set "
                    "per group (every other option shapes one joint direction)"
                )
            _check_lr(group["lr"], where)
        trainable = [p for p in self._named_params().values() if p.requires_grad]
        self._check_trainable(trainable, where)
        self.generator = _generator(generator, seed, trainable[0].device, where)
        self.communication: TorchCollective | None = None
        self.last_step_bytes = 0
        if process_group is not None:
            self.communication = TorchCollective(process_group, trainable[0].device)
            check_same_generator(self.communication, self.generator)
        self.last_step: sl.StepInfo | None = None
        self.jacobian_path: str | None = None

    def _keep_workspace(self, J: Any) -> None:
        M = getattr(J, "matrix", None)
        if not (self._takes_workspace and isinstance(M, torch.Tensor) and M.is_contiguous()):
            return
        if self._workspace is None or M.data_ptr() != self._workspace.data_ptr():
            self._workspace = M.reshape(-1)  # a new (larger, or first) matrix

    @property
    def direction_info(self) -> sl.DirectionInfo | None:
        """The solver's record of the last step (``last_step.direction``)."""
        return None if self.last_step is None else self.last_step.direction

    def _named_params(self) -> dict[Any, torch.Tensor]:
        """All parameters of all groups, keyed by name (or flat position if unnamed)."""
        out: dict[Any, torch.Tensor] = {}
        for group in self.param_groups:
            names = group.get("param_names")
            for i, p in enumerate(group["params"]):
                key = names[i] if names is not None else len(out)
                if key in out:
                    raise ValueError(f"two parameters share the name {key!r}")
                out[key] = p
        return out

    def _check_trainable(self, trainable: list[torch.Tensor], where: str) -> int:
        if not trainable:
            raise ValueError(
                f"{where}: no trainable parameter: every tensor given to the optimizer has "
                "requires_grad=False (expected at least one with requires_grad=True)"
            )
        P = sum(p.numel() for p in trainable)
        rank = getattr(self.engine.solver, "rank", None)
        if rank is not None and not isinstance(self.engine.solver, sl.KernelNystrom) and rank > P:
            raise ValueError(
                f"{where}: rank must be <= P = {P} (the number of trainable parameters), got {rank}"
            )
        return P

    def _learning_rate(self, named: dict[Any, torch.Tensor], keys: list[Any]) -> Any:
        """One float when every group shares ``lr``, else a per-parameter vector."""
        lr_of = {id(p): g["lr"] for g in self.param_groups for p in g["params"]}
        rates = [lr_of[id(named[k])] for k in keys]
        for rate in rates:
            _check_lr(rate, type(self).__name__)
        if len(set(rates)) == 1:
            return float(rates[0])
        return torch.cat(
            [named[k].new_full((named[k].numel(),), a) for k, a in zip(keys, rates, strict=True)]
        )

    def state_dict(self) -> dict[str, Any]:
        """The optimizer state, with the sketch generator's state under
        ``"sketch_generator"`` (see :meth:`torch.optim.Optimizer.state_dict`)."""
        out = super().state_dict()
        out["sketch_generator"] = self.generator.get_state()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`, the sketch generator's state included, so that the
        following steps repeat those of the run that saved it bit for bit."""
        gen_state = state_dict.get("sketch_generator")
        if gen_state is None and state_dict.get("state"):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: no 'sketch_generator' entry, so the "
                "resumed sketches would differ from the saved run's; save with state_dict()"
            )
        super().load_state_dict(state_dict)
        if gen_state is not None:
            self.generator.set_state(gen_state.detach().to("cpu", torch.uint8))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, **extra: Any) -> Any:
        """Take one natural-gradient step.

        Parameters
        ----------
        closure : callable, optional
            Not needed; if given, it is called first with gradients enabled and its value is
            returned, as in ``torch.optim``.
        **extra
            Keyword arguments passed on to ``system_fn`` and ``residual_fn`` where they
            accept them by name (e.g. ``points=`` of :func:`pinn_system`, to resample).

        Returns
        -------
        torch.Tensor
            ``1/2 ||r||^2`` before the step (or the closure's value).
        """
        where = type(self).__name__
        closure_value = None
        if closure is not None:
            with torch.enable_grad():
                closure_value = closure()
        named = self._named_params()
        keys = [k for k, p in named.items() if p.requires_grad]
        P = self._check_trainable([named[k] for k in keys], where)
        dtype = named[keys[0]].dtype
        kwargs = self._system_kwargs(extra)
        if self._takes_workspace and not {"workspace", "out"} & set(kwargs):
            kwargs["workspace"] = self._workspace
        out = self.system_fn(named, **kwargs)
        r, J = sl.check_system(out, P, dtype, f"{where}: system_fn")
        self._keep_workspace(J)
        base = {k: p.detach() for k, p in named.items()}
        sizes = [named[k].numel() for k in keys]
        res_kwargs = self._residual_kwargs(extra)

        flat = torch.cat([base[k].reshape(-1) for k in keys])

        def trial_loss(etas: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
            def loss(eta: torch.Tensor) -> torch.Tensor:
                # one update of the flat vector, then views: two operations a trial, not
                # two per tensor (the eager dispatch dominates small PINNs' trials)
                parts = torch.split(flat - eta * d, sizes)
                moved = {k: v.view_as(base[k]) for k, v in zip(keys, parts, strict=True)}
                res = self.residual_fn({**base, **moved}, **res_kwargs)  # type: ignore[misc]
                return 0.5 * (res * res).sum()

            if etas.shape[0] == 1:  # the sequential grid: no vmap overhead for one point
                return loss(etas[0])[None]
            return vmap(loss)(etas)

        state = self.state[next(iter(named.values()))]
        current = (
            sl.StepState(*(state[k] for k in _STATE_KEYS))
            if "previous" in state
            else self.engine.init(torch.zeros(P, dtype=dtype, device=r.device))
        )
        gen_before = self.generator.get_state()
        seed = int(
            torch.randint(0, 2**62, (1,), generator=self.generator, device=self.generator.device)
        )
        try:
            lr = self._learning_rate(named, keys)
            sent = 0 if self.communication is None else self.communication.bytes
            update, new, info = self.engine.step(
                J, r, current, trial_loss=trial_loss, seed=seed, learning_rate=lr,
                collective=self.communication,
            )  # fmt: skip
            if self.communication is not None:
                self.last_step_bytes = self.communication.bytes - sent
        except BaseException:
            self.generator.set_state(gen_before)  # a failed step consumes no randomness
            raise
        for k, part in zip(keys, torch.split(update, sizes), strict=True):
            named[k].add_(part.view_as(named[k]))
        state.update(zip(_STATE_KEYS, (torch.as_tensor(v).clone() for v in new), strict=True))
        self.last_step, self.jacobian_path = info, getattr(J, "path", None)
        return closure_value if closure is not None else info.loss


def _names_parameter(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes a keyword argument called ``name`` explicitly (not ``**kw``)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _check_lr(lr: Any, where: str) -> None:
    if (
        isinstance(lr, bool)
        or not isinstance(lr, (int, float))
        or not (math.isfinite(lr) and lr >= 0)
    ):
        raise ValueError(f"{where}: lr must be a finite float >= 0, got {lr!r}")


def _generator(
    generator: torch.Generator | None, seed: Any, device: torch.device, where: str
) -> torch.Generator:
    if generator is None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
            raise ValueError(f"{where}: seed must be an int >= 0, got {seed!r}")
        if int(seed) >= 2**64:
            raise ValueError(f"{where}: seed must be below 2**64 (torch.Generator), got {seed}")
        return torch.Generator(device=device).manual_seed(int(seed))
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{where}: generator must be a torch.Generator, got {type(generator)}")
    if generator.device.type != device.type:
        raise ValueError(f"{where}: generator is on {generator.device}, the parameters on {device}")
    return generator


class SNGD(NaturalGradient):
    """SNGD (Best Mckay, Kaur, Greif, Wetton, ICML 2025): ``d = (G_hat + mu I)^{-1} J^T r``
    with a fresh Nystrom ``G_hat`` each step (:class:`sketchlinalg.Nystrom`); without ``rank``
    and ``damping`` both adapt. See :class:`NaturalGradient`.

    Examples
    --------
    >>> import torch
    >>> from sketchlinalg_torch import SNGD
    >>> A = torch.randn(20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> x = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    >>> opt = SNGD([("x", x)], residual_fn=lambda p: A @ p["x"] - 1.0)
    >>> losses = [float(opt.step()) for _ in range(2)]
    >>> losses[1] < losses[0]
    True
    """

    method = "nystrom"


class ENGD(NaturalGradient):
    """ENGD (Mueller & Zeinhofer, ICML 2023): the dense Gram matrix, ``(G + mu I)^{-1} J^T r``
    (:class:`sketchlinalg.Dense`; ``damping=0`` is the pseudo-inverse)."""

    method = "dense"


class ENGDWoodbury(NaturalGradient):
    """ENGD in residual space (Guzman-Cordero et al., NeurIPS 2025):
    ``J^T (J J^T + mu I)^{-1} r``, exact, ``N x N`` (:class:`sketchlinalg.Woodbury`)."""

    method = "woodbury"


class NystromPCG(NaturalGradient):
    """``(G + mu I) d = J^T r`` by CG with a Nystrom preconditioner (Frangella, Tropp, Udell,
    SIMAX 2023), exact up to ``rtol`` (:class:`sketchlinalg.NystromPCG`)."""

    method = "nystrom-pcg"


class SPRING(NaturalGradient):
    """SPRING (Goldshlager, Abrahamsen, Lin, J. Comput. Phys. 2024): the Woodbury direction
    with momentum ``beta`` (default :data:`sketchlinalg.SPRING_MOMENTUM`, 0.5):
    ``phi_k = J^T (J J^T + mu I)^{-1} (r - beta J phi_{k-1}) + beta phi_{k-1}``."""

    method = "woodbury"
    option_defaults: ClassVar[dict[str, Any]] = {"momentum": sl.SPRING_MOMENTUM}
