"""Natural-gradient optimizers as optax gradient transformations over the core's step."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import sketchlinalg as sl

from ._operators import split_params
from ._sharding import RowShardedJacobian

__all__ = [
    "LINE_SEARCHES",
    "NGDState",
    "engd",
    "engd_woodbury",
    "natural_gradient",
    "nystrom_pcg",
    "sngd",
    "spring",
]

PyTree = Any
SystemFn = Callable[..., Any]
LINE_SEARCHES = sl.LINE_SEARCHES


class NGDState(NamedTuple):
    """State of a natural-gradient transformation: a PRNG key (split every step, the sub-key
    seeds that step's sketch) followed by the fields of the core's
    :class:`sketchlinalg.StepState` (``steps``, ``loss``, ``step_size``, ``previous``,
    ``skipped``, ``status``, ``damping``, ``nu``, ``rank``, ``best_loss``, ``since_best``,
    ``warned``), with their meaning, and ``workspace``: the last step's Jacobian, flattened,
    with ``workspace=True`` (:func:`natural_gradient`), else ``None``."""

    key: jax.Array
    steps: jax.Array
    loss: jax.Array
    step_size: jax.Array
    previous: jax.Array
    skipped: jax.Array
    status: jax.Array
    damping: jax.Array
    nu: jax.Array
    rank: jax.Array
    best_loss: jax.Array
    since_best: jax.Array
    warned: jax.Array
    workspace: jax.Array | None = None

    def step_state(self) -> sl.StepState:
        """The core's :class:`sketchlinalg.StepState` fields."""
        return sl.StepState(*self[1 : 1 + len(sl.StepState._fields)])


def _check_seed(seed: Any) -> jax.Array:
    if isinstance(seed, jax.Array) and jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"seed must be an int >= 0 or a JAX PRNG key, got {seed!r}")
    return jax.random.key(int(seed))


def natural_gradient(
    system_fn: SystemFn,
    *,
    method: str,
    residual_fn: Callable[..., jax.Array] | None = None,
    learning_rate: float | optax.Schedule = 1.0,
    seed: int | jax.Array = 0,
    workspace: bool = False,
    **options: Any,
) -> optax.GradientTransformationExtraArgs:
    """A natural-gradient optax transformation over :class:`sketchlinalg.StepEngine`.

    ``update(updates, state, params, **extra)`` evaluates ``system_fn(params) -> (r, J)``,
    runs the core's step (direction, line search, momentum, the non-finite policy) and
    returns ``-learning_rate * eta * d`` as a pytree; the incoming ``updates`` are ignored.
    ``params`` is any pytree: a dict of arrays, or an Equinox or Flax ``nnx`` module whose
    floating-point arrays are the parameters (:func:`split_params`); the update holds
    ``None`` at its other leaves, so apply it with :func:`apply_updates` (or
    ``equinox.apply_updates``; ``optax.apply_updates`` when every leaf is a float array).
    Keyword arguments of ``update`` that ``system_fn`` / ``residual_fn`` accept by name are
    passed on, so a loop can resample points without rebuilding the optimizer
    (``opt.update(None, state, params, points=[interior, boundary])`` with
    ``functools.partial(pinn_system, model, terms=terms)``). With ``line_search=None`` it
    chains with optax's line searches.

    Data parallelism: with ``functools.partial(pinn_system, model, terms=terms,
    sharding=rows)`` (and ``pinn_residual`` with the same ``sharding`` as ``residual_fn``)
    the rows of ``r`` and ``J`` stay on the devices of their points; run ``update`` under
    ``jax.jit`` (an eager call with sharded rows is refused) with the parameters and the
    state replicated. XLA then turns ``J^T (J Omega)``, ``J^T r``, ``J^T J`` and the
    trial losses into local products plus all-reduces; the sketch (one PRNG key), its
    factorization and the update are computed replicated (:func:`pinn_system`).

    Parameters
    ----------
    system_fn : callable
        ``params -> (r, J)``: ``functools.partial(pinn_system, model, terms=...)`` or
        :func:`jacobian_operator` of a residual function.
    method : str
        The direction method (:data:`sketchlinalg.METHODS`).
    residual_fn : callable, optional
        ``params -> r``, for the line search (default: ``system_fn(params)[0]``, which
        also builds a Jacobian per candidate).
    learning_rate : float or optax schedule
        ``lr >= 0`` multiplying the step after the line search (a schedule is evaluated at
        the step count).
    seed : int or JAX key
        Initial PRNG key of the sketches.
    workspace : bool
        Keep the last step's materialized Jacobian in the state (``NGDState.workspace``,
        sized by ``system_fn(params)`` in ``init``) and pass it to ``system_fn`` as
        ``workspace=`` (:func:`pinn_system`), which builds the next ``J`` over it. Jit the
        step with the state donated, ``jax.jit(step, donate_argnums=...)``: XLA then writes
        each ``J`` in the same buffer, with no zero fill and no first-touch page faults of
        an ``N x P`` matrix (Poisson 5D, ``N P = 10^7``: ``benchmarks/results/
        pinn_jacobian_donated.md``); without donation XLA copies the buffer, which is
        slower than a fresh matrix and holds two. ``system_fn`` must take ``workspace=``.
    **options
        Of :meth:`sketchlinalg.StepEngine.from_options`: ``damping``, ``line_search``,
        ``grid_size``, ``grid_batch``, ``grid_warm_start``, ``armijo_c``, ``momentum`` and
        the solver's options (``rank``, ``inverse``, ``sketch``, ``rtol``, ...).

    Returns
    -------
    optax.GradientTransformationExtraArgs
    """
    schedule = learning_rate if callable(learning_rate) else None
    if schedule is None:
        options["learning_rate"] = learning_rate
    engine = sl.StepEngine.from_options(method, **options)
    key0 = _check_seed(seed)
    system_kwargs = sl.forwarded_kwargs(system_fn)
    residual_kwargs = sl.forwarded_kwargs(residual_fn or system_fn)
    residual = residual_fn or (lambda p, **kw: system_fn(p, **kw)[0])
    if workspace and "workspace" not in system_kwargs({"workspace": None}):
        raise ValueError(
            "workspace=True needs a system_fn that takes workspace= (pinn_system does); "
            f"got {getattr(system_fn, '__name__', type(system_fn).__name__)}"
        )

    def init(params: PyTree) -> NGDState:
        flat = split_params(params).flat
        buffer = _workspace0(params) if workspace else None
        # a copy of the key per state: a state donated to a jitted step gives up its buffers
        return NGDState(jnp.copy(key0), *engine.init(flat), workspace=buffer)

    def _workspace0(params: PyTree) -> jax.Array | None:
        """A zero buffer the size of ``system_fn(params)``'s materialized ``J`` (shapes only)."""
        matrix = jax.eval_shape(lambda p: getattr(system_fn(p)[1], "matrix", None), params)
        if matrix is None or len(matrix.shape) != 2:
            return None
        return jnp.zeros((matrix.shape[0] * matrix.shape[1],), matrix.dtype)

    def update(
        updates: PyTree, state: NGDState, params: PyTree | None = None, **extra: Any
    ) -> tuple[PyTree, NGDState]:
        del updates
        if params is None:
            raise ValueError(
                "natural-gradient transformations need params: update(g, state, params)"
            )
        flat, unravel, as_updates = split_params(params)
        kwargs = system_kwargs(extra)
        if state.workspace is not None:
            kwargs.setdefault("workspace", state.workspace)
        r, J = sl.check_system(system_fn(params, **kwargs), flat.shape[0])
        kept = _kept(state.workspace, getattr(J, "matrix", None))
        _check_traced_if_sharded(r)
        if isinstance(J, RowShardedJacobian) and engine.solver.method == "woodbury":
            r, J = J.replicated(r)  # the N x N kernel: gather [J, r] once, run replicated

        def trial_loss(etas: jax.Array, d: jax.Array) -> jax.Array:
            def loss(eta: jax.Array) -> jax.Array:
                res = residual(unravel(flat - eta * d), **residual_kwargs(extra))
                return 0.5 * jnp.vdot(res, res)

            return jax.vmap(loss)(etas)

        key, sub = jax.random.split(state.key)
        lr = None if schedule is None else schedule(state.steps)
        step, new, _ = engine.step(
            J, r, state.step_state(), trial_loss=trial_loss, seed=sub, learning_rate=lr
        )
        return as_updates(step), NGDState(key, *new, workspace=kept)

    return optax.GradientTransformationExtraArgs(init, update)


def _kept(workspace: jax.Array | None, matrix: Any) -> jax.Array | None:
    """The step's ``J`` as the next workspace when it has the workspace's size and dtype
    (the state keeps its shapes: a ``J`` of another size leaves the workspace as it was)."""
    if workspace is None or not isinstance(matrix, jax.Array):
        return workspace
    if matrix.size != workspace.size or matrix.dtype != workspace.dtype:
        return workspace
    return jnp.reshape(matrix, (-1,))


def _check_traced_if_sharded(r: Any) -> None:
    """Rows sharded over devices (``pinn_system(..., sharding=...)``) need ``jax.jit``: the
    eager step mixes row-sharded and replicated operands, which its checks refuse."""
    if isinstance(r, jax.core.Tracer) or not isinstance(r, jax.Array):
        return
    if len(r.sharding.device_set) > 1 and not r.sharding.is_fully_replicated:
        raise ValueError(
            "the residual is sharded over several devices: run the optimizer's update under "
            "jax.jit (a jitted training step), where XLA partitions the step"
        )


def sngd(system_fn: SystemFn, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """SNGD: ``d = (G_hat + mu I)^{-1} g`` with a fresh Nystrom ``G_hat`` each step (Best
    Mckay et al., ICML 2025; :class:`sketchlinalg.Nystrom`). Without ``rank`` and ``damping``
    both adapt (:class:`sketchlinalg.StepEngine`). See :func:`natural_gradient`."""
    return natural_gradient(system_fn, method="nystrom", **kwargs)


def engd(system_fn: SystemFn, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """ENGD: dense Gram matrix, ``d = (G + mu I)^{-1} g`` (Mueller & Zeinhofer, ICML 2023;
    :class:`sketchlinalg.Dense`; ``damping=0`` is the pseudo-inverse). See
    :func:`natural_gradient`."""
    return natural_gradient(system_fn, method="dense", **kwargs)


def engd_woodbury(system_fn: SystemFn, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """ENGD in residual space: ``d = J^T (J J^T + mu I)^{-1} r`` (exact, ``N x N``;
    Guzman-Cordero et al., NeurIPS 2025; :class:`sketchlinalg.Woodbury`)."""
    return natural_gradient(system_fn, method="woodbury", **kwargs)


def nystrom_pcg(system_fn: SystemFn, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """Damped Gauss–Newton solved by CG with a Nystrom preconditioner (Frangella, Tropp &
    Udell, SIMAX 2023; :class:`sketchlinalg.NystromPCG`). See :func:`natural_gradient`."""
    return natural_gradient(system_fn, method="nystrom-pcg", **kwargs)


def spring(
    system_fn: SystemFn, *, momentum: float = sl.SPRING_MOMENTUM, **kwargs: Any
) -> optax.GradientTransformationExtraArgs:
    """SPRING: the Woodbury direction with momentum ``beta`` (Goldshlager et al. 2024):
    ``phi_k = J^T (J J^T + mu I)^{-1} (r - beta J phi_{k-1}) + beta phi_{k-1}``."""
    return natural_gradient(system_fn, method="woodbury", momentum=momentum, **kwargs)
