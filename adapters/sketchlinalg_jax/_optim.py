"""Natural-gradient optimizers as optax gradient transformations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

import sketchlinalg as sl

from ._linesearch import armijo_line_search, grid_line_search
from ._operators import check_params

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
SystemFn = Callable[[PyTree], Any]

LINE_SEARCHES = ("grid", "armijo", None)


class NGDState(NamedTuple):
    """State of a natural-gradient transformation.

    Attributes
    ----------
    key : jax.Array
        PRNG key; split every step, the sub-key seeds that step's sketch.
    steps : jax.Array
        Steps taken.
    loss : jax.Array
        ``1/2 ||r||^2`` at the parameters of the last update (before its step).
    step_size : jax.Array
        The last step size ``eta``.
    previous : jax.Array
        The last (flat) direction; SPRING's momentum term.
    skipped : jax.Array
        Steps skipped because the direction or loss was not finite (the parameters are
        then left unchanged instead of receiving NaN).
    """

    key: jax.Array
    steps: jax.Array
    loss: jax.Array
    step_size: jax.Array
    previous: jax.Array
    skipped: jax.Array


def _split_system(out: Any) -> tuple[jax.Array, sl.LinearOperator]:
    r, J = out[0], out[1]
    if not isinstance(J, sl.LinearOperator):
        raise TypeError(
            "system_fn must return (residual, jacobian) with a sketchlinalg LinearOperator "
            f"jacobian (e.g. pinn_system or jacobian_operator), got {type(J).__name__}"
        )
    return r, J


def natural_gradient(
    system_fn: SystemFn,
    *,
    method: str,
    damping: float,
    residual_fn: Callable[[PyTree], jax.Array] | None = None,
    rank: int | None = None,
    oversample: int = 0,
    inverse: str = "woodbury",
    sketch: str = "gaussian",
    line_search: str | None = "grid",
    learning_rate: float = 1.0,
    momentum: float = 0.0,
    seed: int | jax.Array = 0,
    grid_size: int = 31,
    pcg_rtol: float | None = None,
    pcg_maxiter: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """A natural-gradient optax transformation (the factories below fix ``method``).

    Each ``update(updates, state, params)`` evaluates ``system_fn(params) -> (r, J)``,
    computes the direction ``d`` with :func:`sketchlinalg.natural_gradient_direction`
    (or :func:`sketchlinalg.spring_direction`), chooses a step size and returns the
    update ``-eta d`` as a pytree. The incoming ``updates`` (gradients) are ignored: the
    direction is built from the residual. Chain it with optax's own transformations
    (clipping, schedules via ``optax.scale_by_schedule``) or set ``line_search=None`` and
    chain an optax line search such as ``optax.scale_by_backtracking_linesearch``.

    Parameters
    ----------
    system_fn : callable
        ``params -> (r, J)``: a :class:`PINNSystem` (``functools.partial(pinn_system,
        model, terms=...)``) or :func:`jacobian_operator` of a residual function.
    method : {"nystrom", "dense", "woodbury", "nystrom-pcg", "spring"}
    damping : float
        ``mu`` of ``(J^T J + mu I)^{-1}``; ``0`` is allowed for ``"dense"``,
        ``"woodbury"`` and ``"spring"`` (pseudo-inverse) and for ``"nystrom"`` with
        ``inverse="projected"``.
    residual_fn : callable, optional
        ``params -> r`` without the Jacobian, for the line search (default: the residual
        of ``system_fn``, which also builds a Jacobian per candidate).
    rank, oversample, inverse, sketch
        Sketch settings (:func:`sketchlinalg.nystrom`, :meth:`LowRankPSD.solve`);
        ``sketch`` is the test-matrix distribution (``"gaussian"``, ``"rademacher"``,
        ``"sparse_sign"``).
    line_search : {"grid", "armijo", None}
        ENGD's 31-point grid (one batched pass), Armijo backtracking, or a fixed
        ``learning_rate``.
    learning_rate : float
        Step size when ``line_search`` is ``None``.
    momentum : float
        SPRING's ``beta`` (``method="spring"`` only).
    seed : int or JAX key
        Initial PRNG key of the sketches.
    grid_size : int
        Points of the grid line search.
    pcg_rtol, pcg_maxiter
        Nystrom-PCG settings.

    Returns
    -------
    optax.GradientTransformationExtraArgs
    """
    methods = ("nystrom", "dense", "woodbury", "nystrom-pcg", "spring")
    if method not in methods:
        raise ValueError(f"method must be one of {methods}, got {method!r}")
    if line_search not in LINE_SEARCHES:
        raise ValueError(f"line_search must be one of {LINE_SEARCHES}, got {line_search!r}")
    if not damping >= 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    if sketch not in sl.SKETCH_KINDS:
        raise ValueError(f"sketch must be one of {sl.SKETCH_KINDS}, got {sketch!r}")
    if method == "spring" and not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")

    def init(params: PyTree) -> NGDState:
        check_params(params)
        flat, _ = ravel_pytree(params)
        key = jax.random.key(seed) if isinstance(seed, int) else seed
        zero = jnp.zeros((), flat.dtype)
        return NGDState(
            key,
            jnp.zeros((), jnp.int32),
            zero,
            zero,
            jnp.zeros_like(flat),
            jnp.zeros((), jnp.int32),
        )

    def update(
        updates: PyTree, state: NGDState, params: PyTree | None = None, **extra: Any
    ) -> tuple[PyTree, NGDState]:
        del updates, extra
        if params is None:
            raise ValueError(
                "natural-gradient transformations need params: update(g, state, params)"
            )
        flat, unravel = ravel_pytree(params)
        r, J = _split_system(system_fn(params))
        if J.shape[1] != flat.shape[0]:
            raise ValueError(
                f"system_fn's Jacobian has {J.shape[1]} columns but params have "
                f"{flat.shape[0]} entries"
            )
        key, sub = jax.random.split(state.key)
        g = None
        if method == "spring":
            d = sl.spring_direction(J, r, state.previous, damping=damping, momentum=momentum)
        else:
            d, info = sl.natural_gradient_direction(
                J,
                r,
                damping=damping,
                method=method,
                rank=rank,
                oversample=oversample,
                sketch=sketch,
                seed=sub,
                inverse=inverse,
                rtol=pcg_rtol,
                maxiter=pcg_maxiter,
            )
            g = info.gradient
        loss0 = 0.5 * jnp.vdot(r, r)

        def loss_fn(theta: jax.Array) -> jax.Array:
            res = (
                residual_fn(unravel(theta))
                if residual_fn is not None
                else system_fn(unravel(theta))[0]
            )
            return 0.5 * jnp.vdot(res, res)

        if line_search == "grid":
            eta, _ = grid_line_search(loss_fn, flat, d, num=grid_size)
        elif line_search == "armijo":
            g = J.rmatvec(r) if g is None else g  # the direction's own J^T r when it has one
            eta = armijo_line_search(loss_fn, flat, d, g, loss0=loss0)
        else:
            eta = jnp.asarray(learning_rate, flat.dtype)
        step = eta * d
        ok = jnp.all(jnp.isfinite(step)) & jnp.isfinite(loss0)
        step = jnp.where(ok, step, jnp.zeros_like(step))
        new_state = NGDState(
            key=key,
            steps=state.steps + 1,
            loss=loss0,
            step_size=jnp.where(ok, eta, jnp.zeros_like(eta)),
            previous=jnp.where(ok, d, state.previous),
            skipped=state.skipped + (~ok).astype(jnp.int32),
        )
        return unravel(-step), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def sngd(
    system_fn: SystemFn, *, rank: int, damping: float, **kwargs: Any
) -> optax.GradientTransformationExtraArgs:
    """SNGD: sketched natural gradient, ``d = (G_hat + mu I)^{-1} g`` with a rank-``rank``
    Nystrom ``G_hat`` drawn afresh each step (Best Mckay et al., ICML 2025).

    See :func:`natural_gradient` for the keyword arguments.
    """
    return natural_gradient(system_fn, method="nystrom", rank=rank, damping=damping, **kwargs)


def engd(
    system_fn: SystemFn, *, damping: float = 0.0, **kwargs: Any
) -> optax.GradientTransformationExtraArgs:
    """ENGD: dense Gram matrix, ``d = (G + mu I)^{-1} g`` (``G^+ g`` at ``mu = 0``).

    Mueller & Zeinhofer, ICML 2023. See :func:`natural_gradient` for the keyword arguments.
    """
    return natural_gradient(system_fn, method="dense", damping=damping, **kwargs)


def engd_woodbury(
    system_fn: SystemFn, *, damping: float = 0.0, **kwargs: Any
) -> optax.GradientTransformationExtraArgs:
    """ENGD in residual space: ``d = J^T (J J^T + mu I)^{-1} r`` (exact; ``N x N``).

    Guzman-Cordero et al., NeurIPS 2025. See :func:`natural_gradient`.
    """
    return natural_gradient(system_fn, method="woodbury", damping=damping, **kwargs)


def nystrom_pcg(
    system_fn: SystemFn, *, rank: int, damping: float, **kwargs: Any
) -> optax.GradientTransformationExtraArgs:
    """Damped Gauss–Newton solved by CG with a rank-``rank`` Nystrom preconditioner.

    Frangella, Tropp & Udell, SIMAX 2023. See :func:`natural_gradient`.
    """
    return natural_gradient(system_fn, method="nystrom-pcg", rank=rank, damping=damping, **kwargs)


def spring(
    system_fn: SystemFn, *, damping: float, momentum: float = 0.9, **kwargs: Any
) -> optax.GradientTransformationExtraArgs:
    """SPRING: kernel-form natural gradient with momentum ``beta`` (Goldshlager et al. 2024).

    ``phi_k = J^T (J J^T + mu I)^{-1} (r - beta J phi_{k-1}) + beta phi_{k-1}``.
    See :func:`natural_gradient`.
    """
    return natural_gradient(
        system_fn, method="spring", damping=damping, momentum=momentum, **kwargs
    )
