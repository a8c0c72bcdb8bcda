"""Natural-gradient / Gauss–Newton step directions in one call (over the solver objects)."""

from __future__ import annotations

from typing import Any

from . import _dispatch
from ._operator import LinearOperator, as_operator
from ._solvers import DirectionInfo, Woodbury, make_solver
from ._status import Method
from ._validation import check_nonnegative

__all__ = ["METHODS", "natural_gradient_direction", "spring_direction"]

Array = Any

#: Every direction method, by name (:class:`Method`).
METHODS = tuple(m.value for m in Method)


@_dispatch.in_full_float32
def natural_gradient_direction(
    J: Array | LinearOperator,
    r: Array,
    *,
    damping: float | Array,
    method: str | Method = "auto",
    seed: Any = 0,
    **options: Any,
) -> tuple[Array, DirectionInfo]:
    r"""Natural-gradient (damped Gauss–Newton) direction ``d ~ (J^T J + mu I)^{-1} J^T r``.

    The step is then ``theta <- theta - eta d``. This is ``solver.init`` followed by one
    ``solver.solve`` of the method's solver object (:func:`make_solver`); keep the solver
    and its state to solve for several damping values without touching ``J`` again.

    * ``"dense"`` (:class:`Dense`): ``G = J^T J`` formed (``P x P``); Cholesky of
      ``G + mu I``, the pseudo-inverse ``G^+ g`` at ``mu = 0``: the ENGD baseline.
    * ``"woodbury"`` (:class:`Woodbury`): exact, in residual space:
      ``J^T (J J^T + mu I)^{-1} r`` (``N x N``).
    * ``"svd"`` (:class:`SVD`): from a thin SVD of ``J`` (backward stable).
    * ``"nystrom"`` (:class:`Nystrom`, SNGD): ``G_hat = nystrom(gram(J), rank)``, then
      ``(G_hat + mu I)^{-1} g`` (``inverse="woodbury"``) or the projected inverse
      (``inverse="projected"``, allows ``mu = 0``).
    * ``"nystrom-pcg"`` (:class:`NystromPCG`): ``(G + mu I) d = g`` by CG, preconditioned
      with the Nystrom preconditioner of ``G_hat``: exact up to ``rtol``.
    * ``"kernel-nystrom"`` (:class:`KernelNystrom`): the sketch in residual space,
      ``J^T (K_hat + mu I)^{-1} r`` with ``K_hat = nystrom(kernel(J), rank)``.
    * ``"auto"`` (:class:`Auto`): :func:`choose_method` (woodbury, dense or nystrom-pcg:
      always the accurate damped direction).

    All of them equal the ENGD direction ``G^+ g`` as ``mu -> 0`` on ``range(G)`` when the
    rank reaches ``rank(G)``. With a fixed method and rank the whole function traces under
    ``jax.jit``; pass a JAX key as ``seed`` for a fresh sketch each step.

    Parameters
    ----------
    J : LinearOperator or array
        Residual Jacobian ``(N, P)``.
    r : array of shape (N,)
        Residual; the gradient of ``1/2 ||r||^2`` is ``g = J^T r``.
    damping : float
        ``mu >= 0`` (``> 0`` for ``"nystrom"`` with ``inverse="woodbury"`` and for
        ``"nystrom-pcg"``).
    method : str or Method
        One of :data:`METHODS`.
    seed : int, Sampler or JAX key
        Randomness of the sketch methods (:func:`as_sampler`).
    **options
        The method's own options, and only those (another raises ``TypeError``):
        ``rank``, ``oversample``, ``sketch``, ``core``, ``error_power_iters`` (sketch
        methods), ``inverse`` (``"nystrom"``, ``"kernel-nystrom"``), ``rtol``,
        ``maxiter`` (``"nystrom-pcg"``, ``"auto"``), ``memory_budget`` and ``rank``
        (``"auto"``), ``factorization`` (``"dense"``, ``"woodbury"``).

    Returns
    -------
    d : array of shape (P,)
    info : DirectionInfo
        ``info.status`` is ``Status.NONFINITE`` when ``J``, ``r`` or ``d`` holds NaN/Inf
        (``d`` is then not usable), ``Status.SUCCESS`` or PCG's status otherwise.

    References
    ----------
    Best Mckay, Kaur, Greif, Wetton. Near-optimal sketchy natural gradients for PINNs.
    ICML 2025. Mueller, Zeinhofer. Achieving high accuracy with PINNs via energy natural
    gradient descent. ICML 2023. Guzman-Cordero et al. Improving ENGD through Woodbury,
    momentum and randomization. NeurIPS 2025.

    Examples
    --------
    >>> import numpy as np
    >>> from sketchlinalg import natural_gradient_direction
    >>> rng = np.random.default_rng(0)
    >>> J, r = rng.standard_normal((30, 8)), rng.standard_normal(30)
    >>> d, info = natural_gradient_direction(J, r, damping=1e-3, method="nystrom", rank=8)
    >>> exact = np.linalg.solve(J.T @ J + 1e-3 * np.eye(8), J.T @ r)
    >>> info.method, info.status.name, bool(np.allclose(d, exact))
    ('nystrom', 'SUCCESS', True)
    """
    solver = make_solver(method, **options)
    J = as_operator(J, "J")
    solver.check_damping(damping, J.xp, J.dtype)
    return solver.solve(solver.init(J, r, seed=seed), damping=damping)


@_dispatch.in_full_float32
def spring_direction(
    J: Array | LinearOperator,
    r: Array,
    previous: Array,
    *,
    damping: float | Array,
    momentum: float | Array,
) -> tuple[Array, DirectionInfo]:
    r"""SPRING direction: natural gradient with Kaczmarz-style momentum, in kernel form.

    .. math::

        \phi_k = J^T (J J^T + \mu I)^{-1} (r - \beta J \phi_{k-1}) + \beta \phi_{k-1}

    (exact ``N x N`` solve, :class:`Woodbury`; pseudo-inverse at ``mu = 0``). With
    ``beta = 0`` it is the ``"woodbury"`` direction of :func:`natural_gradient_direction`.
    The step engine (:class:`StepEngine`, ``momentum=beta``) applies the same recursion
    with any solver.

    Parameters
    ----------
    J : LinearOperator or array
        Residual Jacobian ``(N, P)``.
    r : array of shape (N,)
    previous : array of shape (P,)
        ``phi_{k-1}`` (zeros at the first step).
    damping : float
        ``mu >= 0``.
    momentum : float
        ``beta`` in ``[0, 1)``.

    Returns
    -------
    phi : array of shape (P,)
    info : DirectionInfo
        The Woodbury solve's record; ``info.status`` is :attr:`Status.NONFINITE` when
        ``J``, ``r``, ``previous`` or the result holds NaN or Inf (never a silent NaN).

    References
    ----------
    Goldshlager, Abrahamsen, Lin. A Kaczmarz-inspired approach to accelerate the
    optimization of neural network wavefunctions. J. Comput. Phys. 2024.
    """
    J = as_operator(J, "J")
    N, P = J.shape
    if getattr(r, "ndim", None) != 1 or r.shape[0] != N:
        raise ValueError(
            f"r must have shape ({N},) for J of shape {J.shape}, got "
            f"{tuple(getattr(r, 'shape', ()))}"
        )
    if getattr(previous, "ndim", None) != 1 or previous.shape[0] != P:
        raise ValueError(
            f"previous must have shape ({P},) for J of shape {J.shape}, got "
            f"{tuple(getattr(previous, 'shape', ()))}"
        )
    for name, v in (("r", r), ("previous", previous)):
        if v.dtype != J.dtype:
            raise TypeError(f"{name} has dtype {v.dtype}, J has {J.dtype}; cast one of them")
    beta = check_momentum(momentum, J.xp, J.dtype)
    solver = Woodbury()
    solver.check_damping(damping, J.xp, J.dtype)
    state = solver.init(J)
    d, info = solver.solve(state, r - beta * J.matvec(previous), damping=damping)
    return d + beta * previous, info


def check_momentum(momentum: Any, xp: Any = None, dtype: Any = None) -> Any:
    """``beta`` in ``[0, 1)`` (a traced value is returned unchecked)."""
    beta = check_nonnegative(momentum, "momentum", xp=xp, dtype=dtype)
    if not _dispatch.is_tracing(beta) and float(beta) >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {float(beta)}")
    return beta
