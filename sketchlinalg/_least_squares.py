"""Nonlinear least squares: Levenberg–Marquardt around the natural-gradient directions.

The loop follows Moré (1978) for the scaling and the stopping tests. Each trial step solves
the damped, scaled Gauss–Newton system either from one SVD of the Jacobian per iteration
with Moré's trust-region control of the damping (``direction="svd"``, what ``"auto"`` picks
for a materialized Jacobian), or by one call of :func:`natural_gradient_direction` on the
scaled Jacobian with Nielsen's (1999) damping update, so every direction method (exact,
sketched, Nystrom-PCG) can drive it. The interface follows
``scipy.optimize.least_squares``: robust losses by scipy's weighting of the residuals and
the Jacobian (``_lsq_loss``), its forms of ``x0`` and ``bounds`` and its keywords without a
counterpart (``_lsq_options``), finite bounds by a projected Levenberg–Marquardt
(``_lsq_bounds``), ``verbose`` and ``callback`` (``_lsq_report``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from . import _dispatch
from ._direction import METHODS
from ._exact import SVD, SVDState
from ._finite_diff import FD_SCHEMES, finite_difference_jacobian
from ._lsq_bounds import (
    Box,
    active_mask,
    bounded_fd_jacobian,
    free_mask,
    project,
    projected_gradient_norm,
)
from ._lsq_loss import LossTerms, make_loss
from ._lsq_options import as_start, check_bounds, check_scipy_only, check_verbose
from ._lsq_report import LeastSquaresIteration, Reporter, wrap_callback
from ._operator import FunctionOperator, LinearOperator, aslinearoperator
from ._random import as_sampler
from ._solver_base import DEFAULT_RANK, DirectionSolver
from ._solvers import choose_method, make_solver, solver_options
from ._status import Status
from ._validation import check_int

__all__ = ["LeastSquaresIteration", "LeastSquaresResult", "least_squares"]

Array = Any

STATUS_MESSAGES = {
    -3: "Numerical failure: see the details.",
    -2: "Stopped because `callback` raised `StopIteration`.",
    0: "The maximum number of function evaluations is exceeded.",
    1: "`gtol` termination condition is satisfied.",
    2: "`ftol` termination condition is satisfied.",
    3: "`xtol` termination condition is satisfied.",
    4: "Both `ftol` and `xtol` termination conditions are satisfied.",
}

DIRECTIONS = METHODS

# A trial step is accepted when the actual reduction of the cost is at least this fraction
# of the reduction the linear model predicts (More 1978 uses 1e-4).
ACCEPT_RATIO = 1e-4
# Initial trust radius TRUST_FACTOR ||D x0|| (scipy's "trf" uses 1; with MINPACK's default
# ``factor`` 100, MGH10 and BoxBOD stay unsolved from NIST start 1 even with 5,000
# evaluations), and the iteration cap of the search for mu with ||D p(mu)|| = radius.
TRUST_FACTOR = 1.0
_TR_ITERS = 30
# Power iterations for the largest eigenvalue of the scaled J^T J when J is matrix-free.
_POWER_ITERS = 8


class LeastSquaresResult(NamedTuple):
    """Result of :func:`least_squares` (the fields of ``scipy.optimize.OptimizeResult``).

    Attributes
    ----------
    x : array of shape (n,)
        Solution found: the last point with finite residuals whose step was accepted.
    cost : float
        ``F(x) = 1/2 ||f(x)||^2``, or with a robust loss ``C^2/2 sum_i rho((f_i / C)^2)``
        (scipy's cost).
    fun : array of shape (m,)
        Residuals at ``x`` (as ``fun`` returns them, also with a robust loss).
    jac : array or LinearOperator of shape (m, n)
        Jacobian at ``x``, of the type the Jacobian was given in (an array for finite
        differences). With a robust loss, the weighted ``diag(w) J`` of scipy, whose
        ``J_w^T J_w`` is the Gauss–Newton Hessian of the robust cost.
    grad : array of shape (n,)
        Gradient of the cost at ``x``: ``J^T f``, or ``J^T (rho' f)`` with a robust loss.
    optimality : float
        ``||grad||_inf`` (first-order optimality of an unconstrained problem); with finite
        bounds the projected gradient ``||x - P(x - grad)||_inf``, ``P`` the projection onto
        the box (zero at a first-order point of the bounded problem).
    nfev : int
        Evaluations of ``fun``, not counting those made for finite differences.
    njev : int
        Jacobian evaluations (finite-difference Jacobians included).
    status : int
        ``-3`` numerical failure (non-finite Jacobian, or non-finite residuals at every
        trial point until the step vanished), ``-2`` ``callback`` raised
        ``StopIteration``, ``0`` ``max_nfev`` reached, ``1`` ``gtol``,
        ``2`` ``ftol``, ``3`` ``xtol``, ``4`` ``ftol`` and ``xtol`` satisfied.
    message : str
        The reason for stopping, with details (rejected non-finite trial points, ...).
    success : bool
        ``status > 0``.
    nit : int
        Accepted steps.
    damping : float
        Final Levenberg–Marquardt parameter ``mu`` of the scaled problem (``0`` after a
        Gauss–Newton step of the trust-region control).
    direction : str
        Direction method of the last step (what ``"auto"`` chose).
    nonfinite_trials : int
        Trial points whose residuals held NaN/Inf; each was rejected and the damping
        increased (the trust region shrunk).
    result : Status
        The outcome in the library's vocabulary: ``SUCCESS`` (status 1-4),
        ``MAX_ITERATIONS`` (0, and -2: the callback's stop is a cap set by the caller),
        ``NONFINITE`` or ``NO_DECREASE`` (-3: NaN/Inf, or the damping overflowed without a
        lower cost).
    active_mask : int array of shape (n,)
        scipy's: ``-1`` where ``x_j`` is on its lower bound, ``+1`` on its upper bound, ``0``
        free (within ``xtol max(1, |bound|)``, scipy's rule); zeros without finite bounds.
        The last field, with default ``None``, so that results built by position before it
        existed still construct.

    Notes
    -----
    A ``NamedTuple`` (``res.x``, ``res._asdict()``), where scipy returns a dict subclass.

    Examples
    --------
    >>> import numpy as np
    >>> from sketchlinalg import least_squares
    >>> res = least_squares(lambda x: x**2 - 2.0, np.array([1.0]), jac=lambda x: 2.0 * x[None, :])
    >>> res.success, res.status, round(float(res.x[0]), 10), res.cost < 1e-20
    (True, 3, 1.4142135624, True)
    """

    x: Array
    cost: float
    fun: Array
    jac: Any
    grad: Array
    optimality: float
    nfev: int
    njev: int
    status: int
    message: str
    success: bool
    nit: int
    damping: float
    direction: str
    nonfinite_trials: int
    result: Status = Status.SUCCESS
    active_mask: Any = None


def least_squares(
    fun: Callable[..., Array],
    x0: Array,
    jac: str | Array | LinearOperator | Callable[..., Any] = "2-point",
    *,
    bounds: Any = None,
    method: str = "lm",
    ftol: float | None = 1e-8,
    xtol: float | None = 1e-8,
    gtol: float | None = 1e-8,
    x_scale: str | float | Array | None = None,
    loss: str | Callable[[Array], Any] = "linear",
    f_scale: float = 1.0,
    diff_step: float | Array | None = None,
    tr_solver: str | None = None,
    tr_options: Mapping[str, Any] | None = None,
    jac_sparsity: Any = None,
    max_nfev: int | None = None,
    verbose: int = 0,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    callback: Callable[..., Any] | None = None,
    workers: Any = None,
    direction: str = "auto",
    direction_options: Mapping[str, Any] | None = None,
    initial_damping: float = 1e-3,
) -> LeastSquaresResult:
    r"""Minimize ``F(x) = 1/2 ||f(x)||^2``, or a robust cost, by Levenberg–Marquardt.

    Any array-API backend; scipy's interface.

    A drop-in for ``scipy.optimize.least_squares``: scipy's keywords are accepted, those
    without a counterpart are refused with the alternative named (see below). Each trial
    step solves the damped, scaled Gauss–Newton system

    .. math::

        p = -D^{-1} (J_s^T J_s + \mu I)^{-1} J_s^T f, \qquad J_s = J D^{-1},

    i.e. ``p`` minimizes ``||f + J p||^2 + mu ||D p||^2``. How (``direction``):

    * ``"svd"``: one thin SVD ``J_s = U diag(s) V^T`` per Jacobian, then
      ``p = -D^{-1} V diag(s / (s^2 + mu)) U^T f`` for any ``mu``. Backward stable (the
      normal equations square the condition number, which costs digits on ill-conditioned
      problems such as NIST's Lanczos or MGH10), and a rejected step is re-solved without a
      new factorization. The damping is then controlled as a trust region (Moré 1978): ``mu``
      is found so that ``||D p|| = Delta`` (the Gauss–Newton step ``mu = 0`` whenever it
      fits), ``Delta_0 = ||D x_0||`` (``1`` if zero); ``rho < 1/4`` or a rejected step gives
      ``Delta <- ||D p|| / 4``, ``rho > 3/4`` on the boundary ``Delta <- 2 Delta``. A
      matrix-free Jacobian is materialized for it (``n`` products).
    * ``"dense"``, ``"woodbury"``, ``"nystrom"``, ``"nystrom-pcg"``, ``"kernel-nystrom"``:
      :func:`natural_gradient_direction` on ``J_s`` (exact, sketched, or PCG; the sketched
      ones for Jacobians that are large or only available as products), one solve per
      trial, with Nielsen's damping update: accepted, ``mu <- mu max(1/3, 1 - (2 rho - 1)^3)``,
      ``nu <- 2``; rejected, ``mu <- nu mu``, ``nu <- 2 nu``;
      ``mu_0 = initial_damping * max_j (J_s^T J_s)_jj``.
    * ``"auto"`` (default): :func:`choose_method`'s choice, with ``"svd"`` in place of its
      exact methods when the Jacobian is materialized (an array).

    The gain ratio ``rho = (F(x) - F(x + p)) / (F(x) - 1/2 ||f + J p||^2)`` uses the model
    value of the step actually computed, so inexact (sketched) steps are judged correctly;
    ``rho > 1e-4`` accepts the step. A trial point where ``f`` holds NaN/Inf is rejected like
    a bad step (more damping, a shorter step), so NaN never enters ``x``; the result counts
    such points and says so in its message.

    With ``x_scale="jac"`` the scaling is MINPACK's: ``D_j = max(D_j, ||J e_j||)`` over the
    iterations (Moré 1978), which makes the method invariant to the units of the
    variables. Complex-step derivatives are out of scope.

    **Bounds** ``l <= x <= u`` (scipy's ``bounds``; ``-inf``/``inf`` entries allowed): a
    projected Levenberg–Marquardt (Kanzow, Yamashita and Fukushima 2004) on the same
    directions. At each accepted point the variables on a bound that the gradient pushes
    against, ``{j : x_j = l_j, g_j > 0} ∪ {j : x_j = u_j, g_j < 0}`` (Bertsekas 1982), are
    held fixed: their columns of ``J_s`` are zeroed and the damped system is solved for the
    others, by any ``direction``. The step is projected onto the box,
    ``x_+ = P(x + p)``, ``P(z) = min(max(z, l), u)``, and judged by the gain ratio with the
    model value of the step actually taken, ``s = x_+ - x``:

    .. math::

        \rho = \frac{F(x) - F(x + s)}{-(g^T s + \tfrac12 \|J s\|^2)}.

    A step whose projection does not move ``x`` is rejected without evaluating ``fun``; as
    the trust region (damping) tightens, ``s`` tends to the projected steepest-descent step,
    which lowers the cost while ``x`` is not a first-order point. Every point where ``fun``
    is evaluated lies in the box (finite differences step backward, or one-sided, at a
    bound, as in scipy), iterates may lie exactly on a bound (scipy's ``"trf"`` keeps them
    strictly inside by reflection, Coleman and Li 1996), and ``x0`` on a bound is kept as it
    is. ``optimality`` is ``||x - P(x - g)||_inf``; the ``gtol`` test below leaves out the
    fixed variables. ``active_mask`` is scipy's. Unbounded problems (``bounds=None`` or all
    infinite) run the unconstrained iteration unchanged.

    **Robust losses** (scipy's ``loss`` and ``f_scale``, Triggs et al. 2000). With a loss
    ``rho`` and the soft margin ``C = f_scale`` the cost is

    .. math::

        F(x) = \frac{C^2}{2} \sum_i \rho(z_i), \qquad z_i = (f_i(x) / C)^2,

    with ``rho(z) = z`` (``"linear"``), ``2 (sqrt(1 + z) - 1)`` (``"soft_l1"``), ``z`` for
    ``z <= 1`` else ``2 sqrt(z) - 1`` (``"huber"``), ``log(1 + z)`` (``"cauchy"``),
    ``arctan(z)`` (``"arctan"``), or a callable. Its gradient is ``J^T (rho'(z) f)`` and the
    Gauss–Newton part of its Hessian (the second derivatives of ``f`` dropped)
    ``J^T diag(rho' + 2 rho'' z) J``. With ``w = sqrt(max(rho' + 2 rho'' z, eps))`` the
    iteration runs unchanged on the weighted system ``f_w = rho' f / w``, ``J_w = diag(w) J``
    (scipy's ``scale_for_robust_loss_function``): ``J_w^T f_w`` is the gradient and
    ``J_w^T J_w`` that Hessian, so every direction method works with every loss, and the
    gain ratio compares the robust cost with the model of the weighted system. The weights
    are re-evaluated at each accepted point. Unlike scipy, whose ``"lm"`` (MINPACK) takes
    only the linear loss, the Levenberg–Marquardt loop here takes every loss; with the
    trust-region control (``"svd"``) and ``x_scale=1`` (the default with a robust loss) it
    is the iteration of scipy's ``method="trf"`` without bounds.

    Stopping (the meaning of scipy's ``method="lm"``; a tolerance below the dtype's machine
    epsilon is raised to it, ``None`` disables the test):

    * ``gtol``: ``max_j |(J^T f)_j| / (||J e_j|| ||f||) <= gtol`` (the cosines between the
      columns of ``J`` and ``f``; ``||J^T f||_inf <= gtol`` when ``J`` is a matrix-free
      operator), or ``f = 0``. With a robust loss ``J`` and ``f`` are the weighted ones and
      ``||f||`` is ``sqrt(2 F)`` (``||f_w||`` is large where the weights are clipped).
      With bounds, ``g_j = 0`` for the variables held on a bound. Status 1.
    * ``ftol``: the actual and the predicted relative reductions of the cost are both
      ``<= ftol`` and ``rho <= 2``. Status 2.
    * ``xtol``: ``||D p|| <= xtol (xtol + ||D x||)``. Status 3 (4 with ``ftol``).
    * ``max_nfev`` evaluations of ``fun``. Status 0.
    * ``callback`` raised ``StopIteration``. Status -2 (scipy's code).

    ``ftol`` and ``xtol`` are tested after every trial step, accepted or not. The loop has
    data-dependent control flow: it runs eagerly (JAX arrays work, but not under
    ``jax.jit``).

    Parameters
    ----------
    fun : callable
        ``fun(x, *args, **kwargs)`` returning the residuals ``f(x)``: a 1-D array of shape
        ``(m,)`` (or 0-d) of the same backend and dtype as ``x``; ``m`` must not change
        between calls.
    x0 : array_like of shape (n,) or a number
        Starting point; finite. An array of any array-API backend keeps its backend (an
        integer or boolean array becomes the backend's default real floating dtype:
        float64 for NumPy, ``torch.get_default_dtype()`` for PyTorch). A list, a tuple or a
        Python number becomes a float64 NumPy array, as in scipy (NumPy is imported then,
        through ``array_api_compat.numpy``), so ``fun`` receives NumPy arrays. A number or a
        0-d array is treated as shape ``(1,)``.
    jac : {"2-point", "3-point"}, callable, array or LinearOperator
        The Jacobian ``J = df/dx`` of shape ``(m, n)``: finite differences (forward or
        central, array-API code; their evaluations are not counted in ``nfev``), a
        callable ``jac(x, *args, **kwargs)`` returning an array or a
        :class:`LinearOperator` (possibly matrix-free), or a constant array / operator.
        ``"cs"`` (complex steps) is refused.
    bounds : None, 2-tuple or Bounds
        scipy's forms: ``(lb, ub)`` of numbers or arrays of shape ``(n,)``, or an object with
        ``lb`` and ``ub`` (``scipy.optimize.Bounds``); ``-inf``/``inf`` for an unbounded
        side. scipy's checks: ``lb < ub`` everywhere, shapes that match ``x0``,
        ``lb <= x0 <= ub`` (``x0 is infeasible`` otherwise). Finite bounds: above.
    method : {"lm"}
        Levenberg–Marquardt (the only method; it takes robust losses and finite bounds).
        ``"trf"`` and ``"dogbox"`` are refused.
    ftol, xtol, gtol : float or None
        Tolerances (see above); default ``1e-8`` like scipy.
    x_scale : {None, "jac"}, float or array of shape (n,)
        Characteristic scale of each variable, ``D = 1 / x_scale``; ``"jac"`` is the
        adaptive MINPACK scaling and needs the Jacobian's columns (an array or a
        materialized operator). ``None``: ``"jac"`` when the Jacobian is materialized and
        the loss is linear (scipy's ``"lm"``), else ``1`` (with a robust loss: scipy's
        ``"trf"``).
    loss : {"linear", "soft_l1", "huber", "cauchy", "arctan"} or callable
        The loss ``rho`` (above). A callable ``rho(z)`` takes the array ``z = (f / C)^2`` of
        shape ``(m,)`` and returns an array of shape ``(3, m)`` of that backend and dtype:
        ``rho(z)``, ``rho'(z)``, ``rho''(z)`` (scipy's protocol).
    f_scale : float
        The soft margin ``C > 0`` between inlier and outlier residuals; default ``1``. No
        effect with the linear loss.
    diff_step : float or array of shape (n,), optional
        Relative finite-difference step ``s``: the step of ``x_j`` is ``s x_j`` (``s`` at
        ``x_j = 0``), as in MINPACK; default ``eps^(1/2)`` (2-point) or ``eps^(1/3)``
        (3-point).
    tr_solver, tr_options : None
        scipy's trust-region solvers of ``"trf"``/``"dogbox"``: only ``None`` (and an empty
        ``tr_options``). The solver here is chosen with ``direction`` (``"svd"`` for scipy's
        ``"exact"``, ``"nystrom-pcg"`` for its ``"lsmr"``), its options with
        ``direction_options``.
    jac_sparsity : None
        Refused unless ``None``: finite differences are dense; give ``jac`` as a callable, or
        as a :class:`LinearOperator` of products.
    max_nfev : int, optional
        Default ``100 n``.
    verbose : {0, 1, 2}
        0: silent. 1: scipy's termination report (the message; the evaluations, the initial
        and final cost, the first-order optimality). 2: also a table with a row for the
        start and one per accepted step: iteration, ``nfev``, cost, cost reduction, step norm
        ``||p||``, optimality ``||grad||_inf`` and the damping ``mu``. Printed to stdout.
    args, kwargs
        Extra arguments of ``fun`` and ``jac``.
    callback : callable, optional
        Called after every accepted step (scipy's protocol): if its only parameter is named
        ``intermediate_result`` it receives a :class:`LeastSquaresIteration` (``x``,
        ``cost``, ``fun``, ``jac``, ``grad``, ``optimality``, ``nfev``, ``njev``, ``nit``),
        otherwise a copy of ``x``. Raising ``StopIteration`` stops the run with status
        ``-2``; the return value is ignored.
    workers : None
        Refused unless ``None`` (scipy's parallel finite differences).
    direction : str
        ``"svd"`` or one of :data:`METHODS`: how the damped system is solved (above).
    direction_options : mapping, optional
        Passed to :func:`natural_gradient_direction`: ``rank``, ``oversample``, ``sketch``,
        ``seed`` (default 0; trial step ``k = 1, 2, ...`` uses
        ``as_sampler(seed).fold_in(k)``, a fresh sketch per step), ``inverse``, ``rtol``,
        ``maxiter``, ``error_power_iters``, ``memory_budget``.
    initial_damping : float
        ``tau > 0`` in ``mu_0 = tau max_j (J_s^T J_s)_jj`` (for a matrix-free ``J``,
        ``tau`` times a power-iteration estimate of ``||J_s||_2^2``); not used by
        ``"svd"``, whose trust region starts at ``||D x_0||``.

    Returns
    -------
    LeastSquaresResult
        With a robust loss, ``cost`` is the robust cost ``F``, ``fun`` the residuals of
        ``fun`` and ``jac`` the weighted Jacobian ``J_w`` (scipy's, whose ``J_w^T J_w``
        approximates the Hessian of ``F``), ``grad`` the gradient of ``F``.

    Raises
    ------
    ValueError
        ``x0`` not finite, complex or not 1-D, ``f(x0)`` not finite, the number of residuals
        changing between calls, bounds (crossed, mis-shaped, NaN, ``x0`` outside),
        options out of range, scipy keywords without a counterpart.
    TypeError
        Non-array results of ``fun`` / ``jac`` / a loss callable, dtype or backend
        mismatches, a non-callable ``callback``.

    References
    ----------
    Moré, J. J. The Levenberg-Marquardt algorithm: implementation and theory. Numerical
    Analysis, Lecture Notes in Mathematics 630, Springer, 1978, pp. 105-116.
    Nielsen, H. B. Damping parameter in Marquardt's method. Report IMM-REP-1999-05,
    Technical University of Denmark, 1999.
    Madsen, K., Nielsen, H. B., Tingleff, O. Methods for non-linear least squares
    problems, 2nd ed., IMM, DTU, 2004.
    Triggs, B., McLauchlan, P. F., Hartley, R. I., Fitzgibbon, A. W. Bundle adjustment — a
    modern synthesis. Vision Algorithms: Theory and Practice, LNCS 1883, Springer, 2000,
    pp. 298-372.
    Kanzow, C., Yamashita, N., Fukushima, M. Levenberg–Marquardt methods with strong local
    convergence properties for solving nonlinear equations with convex constraints. J.
    Comput. Appl. Math. 172 (2004), pp. 375-397.
    Bertsekas, D. P. Projected Newton methods for optimization problems with simple
    constraints. SIAM J. Control Optim. 20 (1982), pp. 221-246.
    Coleman, T. F., Li, Y. An interior trust region approach for nonlinear minimization
    subject to bounds. SIAM J. Optim. 6 (1996), pp. 418-445.

    Examples
    --------
    Fit ``y = a exp(-b t)``:

    >>> import numpy as np
    >>> from sketchlinalg import least_squares
    >>> t = np.linspace(0.0, 3.0, 20)
    >>> y = 2.0 * np.exp(-1.3 * t)
    >>> res = least_squares(lambda p: p[0] * np.exp(-p[1] * t) - y, np.array([1.0, 1.0]))
    >>> res.success, np.round(res.x, 6).tolist()
    (True, [2.0, 1.3])

    The same with two gross outliers: the least-squares fit is pulled away, the
    ``"soft_l1"`` fit (``f_scale`` about the noise level) is not:

    >>> y_out = y.copy()
    >>> y_out[[3, 11]] += 5.0
    >>> def residuals(p):
    ...     return p[0] * np.exp(-p[1] * t) - y_out
    >>> plain = least_squares(residuals, [1.0, 1.0])
    >>> robust = least_squares(residuals, [1.0, 1.0], loss="soft_l1", f_scale=0.01)
    >>> bool(np.abs(plain.x - [2.0, 1.3]).max() > 0.1), np.round(robust.x, 2).tolist()
    (True, [2.0, 1.3])

    With the rate bounded above, ``b <= 1``, the fit ends on that bound:

    >>> res = least_squares(lambda p: p[0] * np.exp(-p[1] * t) - y, [1.0, 0.5],
    ...                     bounds=([0.0, 0.0], [np.inf, 1.0]))
    >>> res.success, float(res.x[1]), res.active_mask.tolist()
    (True, 1.0, [0, 1])
    """
    # -- input checks ---------------------------------------------------------------
    if method != "lm":
        raise ValueError(
            f'method must be "lm" (Levenberg–Marquardt), got {method!r}; robust losses work '
            "with it here, and so do finite bounds (a projected Levenberg–Marquardt), for "
            'which scipy has "trf" and "dogbox"'
        )
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    check_scipy_only(tr_solver, tr_options, jac_sparsity, workers)
    verbose_v = check_verbose(verbose)
    kwargs = {} if kwargs is None else dict(kwargs)
    args = tuple(args)
    xp, x0 = as_start(x0)
    lb_ub = check_bounds(bounds, xp, x0)
    box = None if lb_ub is None else Box(*lb_ub)
    n = int(x0.shape[0])
    dtype = x0.dtype
    device = _dispatch.device_of(x0)
    eps = float(xp.finfo(dtype).eps)
    ftol_v = _check_tol(ftol, "ftol", eps)
    xtol_v = _check_tol(xtol, "xtol", eps)
    gtol_v = _check_tol(gtol, "gtol", eps)
    max_nfev = 100 * n if max_nfev is None else check_int(max_nfev, "max_nfev", low=1)
    tau = _check_positive(initial_damping, "initial_damping")
    opts = _check_direction_options(direction_options, direction)
    sampler = as_sampler(opts.pop("seed", 0))
    fixed_scale = _check_scale(x_scale, "x_scale", xp, dtype, device, n)
    rel_step = _check_scale(diff_step, "diff_step", xp, dtype, device, n, allow_jac=False)
    if rel_step is not None and float(xp.min(xp.asarray(rel_step))) < eps:
        raise ValueError(f"diff_step must be >= eps = {eps:.3g} (a smaller step rounds to 0)")
    if isinstance(jac, str) and jac not in FD_SCHEMES:
        raise ValueError(
            f"jac must be one of {FD_SCHEMES}, a callable, an array or a LinearOperator, "
            f"got {jac!r} (complex steps are not supported)"
        )
    robust = make_loss(loss, f_scale, xp, dtype, device)
    on_step = wrap_callback(callback)

    residual = _Residual(fun, args, kwargs, xp, dtype)
    x = x0
    # f_raw: the residuals of fun; f: those the iteration works on (weighted by a robust
    # loss, see _lsq_loss), with the Jacobian weighted alike: J_w^T f_w is the gradient.
    f_raw = residual(x, "x0")
    nfev = 1
    finite0 = bool(xp.all(xp.isfinite(f_raw)))
    terms: LossTerms | None = None
    if robust is None:
        f = f_raw
        cost = 0.5 * _dot(xp, f, f) if finite0 else math.inf
    else:
        terms = robust.terms(f_raw, "x0") if finite0 else None
        cost = terms.cost if terms is not None else math.inf
        f = terms.f_w if terms is not None else f_raw
    if not math.isfinite(cost):
        raise ValueError(
            "fun(x0) returned NaN/Inf residuals (or a cost that overflows, or a loss callable "
            "that returned NaN/Inf); start from a point where the residuals are finite"
        )
    m = residual.m
    jacobian = _Jacobian(jac, args, kwargs, residual, xp, dtype, (m, n), rel_step, box)
    reporter = Reporter(verbose_v, cost)

    # -- the Levenberg–Marquardt loop -------------------------------------------------
    J_out, Jd, J_op = _weigh(xp, terms, *jacobian(x, f_raw))
    njev = 1
    D: Array | None = None  # scaling (None: identity)
    # x_scale=None: MINPACK's "jac" (scipy's "lm") for least squares; 1 (scipy's "trf", its
    # method for robust losses) with a robust loss, whose clipped weights shrink the columns
    # of J_w that "jac" would divide by, and so inflate the steps.
    jac_default = Jd is not None and robust is None
    scale_mode = "jac" if (fixed_scale is None and jac_default) else fixed_scale
    if isinstance(scale_mode, str) and Jd is None:
        raise ValueError(
            'x_scale="jac" needs the Jacobian\'s columns, but jac gave a matrix-free operator; '
            "pass x_scale as a float or an array of shape (n,)"
        )
    col_norms = _column_norms(xp, Jd) if Jd is not None else None
    if isinstance(scale_mode, str):  # "jac"
        assert col_norms is not None
        D = xp.where(col_norms > 0, col_norms, xp.ones_like(col_norms))
    elif isinstance(scale_mode, float):
        if scale_mode != 1.0:
            D = xp.full((n,), 1.0 / scale_mode, dtype=dtype, device=device)
    elif scale_mode is not None and not isinstance(scale_mode, str):
        D = xp.broadcast_to(1.0 / scale_mode, (n,))
    method_ = _resolve_direction(direction, opts, Jd is not None, (m, n), dtype, xp)
    solver: DirectionSolver = (
        SVD()
        if method_ == "svd"
        else make_solver(method_, **{k: v for k, v in opts.items() if k in solver_options(method_)})
    )
    if method_ == "svd":
        x_norm0 = _norm(xp, x if D is None else D * x)
        control: _Nielsen | _TrustRegion = _TrustRegion(
            TRUST_FACTOR * x_norm0 if x_norm0 > 0 else TRUST_FACTOR
        )
    else:
        mu0 = tau * _max_scaled_curvature(xp, Jd, J_op, D, col_norms, sampler)
        control = _Nielsen(mu0, eps)
    nit = 0
    status: int | None = None
    failure = Status.NONFINITE  # what a status -3 was (NaN/Inf, or no decrease in the end)
    notes: list[str] = []
    nonfinite_trials = 0
    nonfinite_streak = 0  # trial points with non-finite residuals since the last acceptance
    used_direction = method_
    step_count = 0
    g = _gradient(xp, Jd, J_op, f)

    def first_order(g: Array) -> float:
        """``||g||_inf``, or ``||x - P(x - g)||_inf`` with bounds."""
        return _inf_norm(xp, g) if box is None else projected_gradient_norm(xp, x, g, box)

    def fnorm() -> float:
        """``||f||`` of the gtol test; ``sqrt(2 F)`` with a robust loss, whose weighted
        residuals are large where the weights are clipped (``J_w^T f_w`` stays the
        gradient, but ``||f_w||`` no longer measures the cost)."""
        if robust is None or cost <= 0.0:
            return _norm(xp, f if robust is None else f_raw)
        return math.sqrt(2.0 * cost)

    reporter.header()
    reporter.row(0, nfev, cost, None, None, first_order(g), control.mu)

    while status is None:
        if not bool(xp.all(xp.isfinite(g))) or (
            Jd is not None and not bool(xp.all(xp.isfinite(Jd)))
        ):
            status = -3
            notes.append(
                "the Jacobian (or J^T f) at x holds NaN/Inf; x is the last point with finite "
                "residuals (finite-difference steps may have left the domain of fun)"
            )
            break
        # With bounds: the variables on a bound that -g points out of are fixed for this
        # point (their columns of J_s zeroed, their gradient left out of the gtol test).
        free = None if box is None else free_mask(xp, x, g, box)
        g_free = g if free is None else xp.where(free, g, xp.zeros_like(g))
        if gtol_v is not None and _gradient_measure(xp, g_free, fnorm(), col_norms, Jd) <= gtol_v:
            status = 1
            break
        if nfev >= max_nfev:
            status = 0
            break
        Js = _scaled(xp, Jd, J_op, D, free)
        x_norm = _norm(xp, x if D is None else D * x)
        # One set-up per point (factorization, SVD or sketch); every trial below re-solves
        # it for its damping without another pass over J.
        if isinstance(control, _TrustRegion):
            Js = Js if Jd is not None else _scaled(xp, J_op.to_dense(), J_op, D, free)
        setup = solver.init(Js, f, seed=sampler.fold_in(nit + 1))
        while True:  # trial steps until one is accepted or a test stops the run
            step_count += 1
            if isinstance(control, _TrustRegion):
                assert isinstance(solver, SVD)
                d, control.mu, predicted = _trust_region_step(
                    xp, solver, setup, control.radius, control.mu
                )
                detail = "svd"
            else:
                d, info = solver.solve(setup, damping=control.mu)
                used_direction, detail = info.method, info.message
                predicted = float(info.predicted_decrease)
            if not bool(xp.all(xp.isfinite(d))):
                notes.append(f"a direction with NaN/Inf was rejected ({detail})")
                control.reject(math.inf)
                if control.exhausted():
                    status = -3
                    notes.append("the damping overflowed (the trust region collapsed)")
                    break
                continue
            p = -d if D is None else -d / D
            x_new = x + p
            step_norm = _norm(xp, d)
            if box is not None and free is not None:
                # The projected step actually taken, and its model decrease
                # -(g^T s + 1/2 ||J s||^2) (Kanzow, Yamashita, Fukushima 2004).
                unprojected_same = bool(xp.all(x_new == x))
                x_new = project(xp, x + xp.where(free, p, xp.zeros_like(p)), box)
                s_step = x_new - x
                Js_step = Jd @ s_step if Jd is not None else J_op.matvec(s_step)
                predicted = -(_dot(xp, g, s_step) + 0.5 * _dot(xp, Js_step, Js_step))
                if bool(xp.all(x_new == x)) and not unprojected_same:
                    # the whole step left the box: shrink it (it tends to the projected
                    # steepest-descent step, which moves while x is not stationary)
                    control.reject(step_norm)
                    if control.exhausted():
                        status, failure = -3, Status.NO_DECREASE
                        notes.append("the damping overflowed (the trust region collapsed)")
                        break
                    continue
                step_norm = _norm(xp, s_step if D is None else D * s_step)
            xtol_ok = xtol_v is not None and step_norm <= xtol_v * (xtol_v + x_norm)
            if bool(xp.all(x_new == x)):
                status = 3 if nonfinite_streak == 0 else -3
                if not xtol_ok:
                    notes.append("the step fell below the floating-point resolution of x")
                break
            where = f"trial point {nfev}"
            f_new = residual(x_new, where)
            nfev += 1
            finite = bool(xp.all(xp.isfinite(f_new)))
            ftol_ok = False
            accept = False
            rho = -math.inf
            terms_new: LossTerms | None = None
            if finite:
                if robust is None or terms is None:
                    actual = _reduction(xp, f, f_new)
                else:
                    terms_new = robust.terms(f_new, where)
                    finite_cost = math.isfinite(terms_new.cost)
                    actual = robust.reduction(terms, terms_new) if finite_cost else math.inf
                finite = math.isfinite(actual) and math.isfinite(predicted)
            if finite:
                rho = actual / predicted if predicted > 0 else -math.inf
                accept = predicted > 0 and actual > 0 and rho > ACCEPT_RATIO
                ftol_ok = (
                    ftol_v is not None
                    and abs(actual) <= ftol_v * cost
                    and predicted <= ftol_v * cost
                    and rho <= 2.0
                )
            else:
                nonfinite_trials += 1
                nonfinite_streak += 1
            if accept:
                x, f_raw = x_new, f_new
                if terms_new is None:
                    f = f_new
                    cost = 0.5 * _dot(xp, f, f)
                else:
                    terms = terms_new
                    f, cost = terms.f_w, terms.cost
                nit += 1
                nonfinite_streak = 0
                control.accept(rho, step_norm)
                J_out, Jd, J_op = _weigh(xp, terms, *jacobian(x, f_raw))
                njev += 1
                if Jd is not None:
                    col_norms = _column_norms(xp, Jd)
                    if isinstance(scale_mode, str):  # "jac"
                        D = xp.maximum(D, col_norms)
                g = _gradient(xp, Jd, J_op, f)
                optimality = first_order(g)
                reporter.row(nit, nfev, cost, actual, _norm(xp, p), optimality, control.mu)
                if on_step is not None and on_step(
                    LeastSquaresIteration(
                        x=xp.asarray(x, copy=True),
                        cost=float(cost),
                        fun=f_raw,
                        jac=J_out,
                        grad=g,
                        optimality=optimality,
                        nfev=nfev,
                        njev=njev,
                        nit=nit,
                    )
                ):
                    status = -2  # scipy: the callback's StopIteration overrides the tests
                    break
            else:
                control.reject(step_norm)
            if ftol_ok or xtol_ok:
                status = 4 if (ftol_ok and xtol_ok) else (2 if ftol_ok else 3)
                if status == 3 and nonfinite_streak > 0 and not accept:
                    status = -3
                    notes.append(
                        "every trial point since the last accepted step had non-finite "
                        "residuals and the step shrank below xtol"
                    )
                break
            if control.exhausted():
                status, failure = -3, Status.NO_DECREASE
                notes.append("the damping overflowed (the trust region collapsed)")
                break
            if accept:
                break
            if nfev >= max_nfev:
                status = 0
                break

    if status > 0 and not (
        bool(xp.all(xp.isfinite(g))) and (Jd is None or bool(xp.all(xp.isfinite(Jd))))
    ):
        status, failure = -3, Status.NONFINITE
        notes.append(
            "the Jacobian (or J^T f) at the final x holds NaN/Inf, so optimality cannot be "
            "judged there"
        )
    if nonfinite_trials:
        notes.append(
            f"{nonfinite_trials} trial point(s) had non-finite residuals"
            + ("" if robust is None else " (or a non-finite robust cost)")
            + " and were rejected (damping increased)"
        )
    message = STATUS_MESSAGES[status]
    if notes:
        message = f"{message} Details: {'; '.join(notes)}."
    optimality = first_order(g)
    reporter.summary(message, nfev, float(cost), optimality)
    return LeastSquaresResult(
        x=x,
        cost=float(cost),
        fun=f_raw,
        jac=J_out,
        grad=g,
        optimality=optimality,
        nfev=nfev,
        njev=njev,
        status=status,
        message=message,
        success=status > 0,
        nit=nit,
        damping=float(control.mu),
        direction=used_direction,
        nonfinite_trials=nonfinite_trials,
        result=(
            Status.SUCCESS
            if status > 0
            else Status.MAX_ITERATIONS
            if status in (0, -2)
            else failure
        ),
        active_mask=active_mask(xp, x, box, xtol_v if xtol_v is not None else eps),
    )


# ------------------------------------------------------------------------------------
def _resolve_direction(
    direction: str,
    opts: dict[str, Any],
    materialized: bool,
    shape: tuple[int, int],
    dtype: Any,
    xp: Any,
) -> str:
    """``"auto"``: :func:`choose_method`, with ``"svd"`` for its exact choices on arrays."""
    if direction != "auto":
        return direction
    m, n = shape
    rank = opts.get("rank")
    method, _ = choose_method(
        m,
        n,
        rank=min(DEFAULT_RANK if rank is None else rank, n),
        itemsize=4 if dtype == xp.float32 else 8,
        memory_budget=opts.get("memory_budget"),
        materialized=materialized,
    )
    return "svd" if (materialized and method in ("dense", "woodbury")) else method


class _Nielsen:
    """Damping control with one solve per trial (Nielsen 1999).

    Accepted with gain ratio ``rho``: ``mu <- mu max(1/3, 1 - (2 rho - 1)^3)``, ``nu <- 2``;
    rejected: ``mu <- nu mu``, ``nu <- 2 nu``. ``mu`` stays above ``eps^2 mu_0``.
    """

    def __init__(self, mu0: float, eps: float) -> None:
        self.mu = mu0 if mu0 > 0 else 1.0
        self.floor = self.mu * eps * eps
        self.nu = 2.0

    def accept(self, rho: float, step_norm: float) -> None:
        self.mu = max(self.mu * max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3), self.floor)
        self.nu = 2.0

    def reject(self, step_norm: float) -> None:
        self.mu, self.nu = self.mu * self.nu, 2.0 * self.nu

    def exhausted(self) -> bool:
        return not math.isfinite(self.mu * self.nu)


class _TrustRegion:
    """Trust-region control of the damping (Moré 1978): ``mu`` solves ``||D p(mu)|| = Delta``.

    Rejected (or ``rho < 1/4``): ``Delta <- ||D p|| / 4``; ``rho > 3/4`` with the step on
    the boundary: ``Delta <- 2 Delta``. The Gauss–Newton step (``mu = 0``) is taken whenever
    it lies inside the region.
    """

    def __init__(self, radius: float) -> None:
        self.radius = radius
        self.mu = 0.0

    def accept(self, rho: float, step_norm: float) -> None:
        if rho < 0.25:
            self.radius = 0.25 * step_norm
        elif rho > 0.75 and step_norm >= 0.95 * self.radius:
            self.radius = 2.0 * self.radius

    def reject(self, step_norm: float) -> None:
        self.radius = 0.25 * min(step_norm, self.radius)

    def exhausted(self) -> bool:
        return not (self.radius > 0.0)


def _trust_region_step(
    xp: Any, solver: SVD, state: SVDState, radius: float, mu_guess: float
) -> tuple[Array, float, float]:
    """The step of norm ``<= radius`` minimizing the linear model, its ``mu`` and the
    model decrease, from the SVD ``J_s = U diag(s) V^T`` (``O((m + n) k)`` per call).

    The Gauss–Newton step (pseudo-inverse, singular values below ``max(m, n) eps s_max``
    dropped) if it fits; otherwise ``mu > 0`` with ``| ||d(mu)|| - radius | <= radius / 10``,
    by Newton's method on ``1/radius - 1/||d(mu)||`` safeguarded by bisection (Moré 1978,
    sec. 5).
    """
    s, c = state.s, solver.coefficients(state, None)
    s2 = s * s
    sc = s * c
    kept = s > solver.cutoff(state)
    safe = xp.where(kept, s, xp.ones_like(s))
    a0 = xp.where(kept, c / safe, xp.zeros_like(s))
    if _norm(xp, a0) <= 1.1 * radius:
        return state.V @ a0, 0.0, 0.5 * _dot(xp, xp.where(kept, c, xp.zeros_like(c)), c)
    lo, hi = 0.0, _norm(xp, sc) / radius  # ||d(mu)|| <= ||s c|| / mu
    mu = mu_guess if lo < mu_guess < hi else 1e-3 * hi
    for _ in range(_TR_ITERS):
        denom = s2 + mu
        a = sc / denom
        na = _norm(xp, a)
        if abs(na - radius) <= 0.1 * radius:
            break
        if na > radius:
            lo = mu
        else:
            hi = mu
        q = _dot(xp, a, a / denom)  # sum s^2 c^2 / (s^2 + mu)^3 = -1/2 d||d||^2/dmu
        mu_new = mu + (na / radius - 1.0) * na * na / q if q > 0 else -1.0
        mu = mu_new if lo < mu_new < hi else max(1e-3 * hi, math.sqrt(lo * hi))
    a = sc / (s2 + mu)
    sa = s * a  # J_s d in the basis U: the model decrease is c . (s a) - 1/2 ||s a||^2
    return state.V @ a, mu, _dot(xp, c, sa) - 0.5 * _dot(xp, sa, sa)


class _Residual:
    """``fun`` with the checks: an array of the backend and dtype of ``x0``, fixed shape."""

    def __init__(
        self,
        fun: Callable[..., Array],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        xp: Any,
        dtype: Any,
    ) -> None:
        self.fun, self.args, self.kwargs = fun, args, kwargs
        self.xp, self.dtype = xp, dtype
        self.m: int = -1

    def __call__(self, x: Array, where: str) -> Array:
        f = self.fun(x, *self.args, **self.kwargs)
        if not _dispatch.is_array(f):
            raise TypeError(
                f"fun must return an array of the backend of x0, got {type(f).__name__} at {where}"
            )
        if f.ndim == 0:
            f = self.xp.reshape(f, (1,))
        if f.ndim != 1:
            raise ValueError(
                f"fun must return a 1-D array of residuals, got shape {tuple(f.shape)} at {where}"
            )
        if f.dtype != self.dtype:
            raise TypeError(
                f"fun returned dtype {f.dtype} at {where}, but x0 has dtype {self.dtype}; the "
                "residuals must have the dtype of x"
            )
        if self.m < 0:
            self.m = int(f.shape[0])
        elif f.shape[0] != self.m:
            raise ValueError(
                f"fun returned shape {tuple(f.shape)} at {where}, but shape ({self.m},) at x0; "
                "the number of residuals must not change between calls"
            )
        return f


class _Jacobian:
    """Evaluates ``jac``: returns (what the user gave, a dense array or None, an operator)."""

    def __init__(
        self,
        jac: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        residual: _Residual,
        xp: Any,
        dtype: Any,
        shape: tuple[int, int],
        rel_step: Any,
        box: Box | None = None,
    ) -> None:
        self.box = box
        self.jac, self.args, self.kwargs = jac, args, kwargs
        self.residual = residual
        self.xp, self.dtype, self.shape = xp, dtype, shape
        self.rel_step = rel_step
        self.constant: tuple[Any, Array | None, LinearOperator] | None = None
        if not isinstance(jac, str) and not callable(jac):
            if not (isinstance(jac, LinearOperator) or _dispatch.is_array(jac)):
                raise TypeError(
                    "jac must be '2-point', '3-point', a callable, an array or a "
                    f"LinearOperator, got {type(jac).__name__}"
                )
            self.constant = self._check(jac, "jac")

    def __call__(self, x: Array, f: Array) -> tuple[Any, Array | None, LinearOperator]:
        if self.constant is not None:
            return self.constant
        if isinstance(self.jac, str):
            point = lambda z: self.residual(z, "a finite-difference point")  # noqa: E731
            if self.box is None:
                J = finite_difference_jacobian(
                    point, x, f, scheme=self.jac, rel_step=self.rel_step, xp=self.xp
                )
            else:
                J = bounded_fd_jacobian(
                    point, x, f, scheme=self.jac, rel_step=self.rel_step, xp=self.xp, box=self.box
                )
            return (
                J,
                J,
                FunctionOperator(
                    lambda X: J @ X,
                    lambda Y: J.T @ Y,
                    shape=self.shape,
                    dtype=self.dtype,
                    xp=self.xp,
                ),
            )
        return self._check(self.jac(x, *self.args, **self.kwargs), "jac(x)")

    def _check(self, J: Any, what: str) -> tuple[Any, Array | None, LinearOperator]:
        if isinstance(J, LinearOperator):
            if J.shape != self.shape:
                raise ValueError(
                    f"{what} has shape {J.shape}, expected (m, n) = {self.shape} (m residuals, "
                    "n variables)"
                )
            if J.dtype != self.dtype:
                raise TypeError(f"{what} has dtype {J.dtype}, x0 has dtype {self.dtype}")
            return J, (J.to_dense() if J.is_materialized else None), J
        if not _dispatch.is_array(J):
            raise TypeError(f"{what} must be an array or a LinearOperator, got {type(J).__name__}")
        if tuple(J.shape) != self.shape:
            raise ValueError(
                f"{what} has shape {tuple(J.shape)}, expected (m, n) = {self.shape} (m "
                "residuals, n variables)"
            )
        if J.dtype != self.dtype:
            raise TypeError(f"{what} has dtype {J.dtype}, x0 has dtype {self.dtype}")
        op = FunctionOperator(
            lambda X: J @ X, lambda Y: J.T @ Y, shape=self.shape, dtype=self.dtype, xp=self.xp
        )
        return J, J, op


def _max_abs(xp: Any, a: Array) -> float:
    return float(xp.max(xp.abs(a)))


def _inf_norm(xp: Any, g: Array) -> float:
    """``||g||_inf`` (NaN when ``g`` holds NaN: the result reports it, never hides it)."""
    return float(xp.max(xp.abs(g)))


def _weigh(
    xp: Any, terms: LossTerms | None, J_user: Any, Jd: Array | None, J_op: LinearOperator
) -> tuple[Any, Array | None, LinearOperator]:
    """The Jacobian for the result, as an array (or None) and as an operator, with its rows
    weighted by a robust loss, ``J_w = diag(w) J`` (unchanged for the linear loss).

    The result's Jacobian keeps the type that ``jac`` gave (an array, or an operator).
    """
    if terms is None:
        return J_user, Jd, J_op
    w = terms.w[:, None]
    if Jd is not None:
        Jw = w * Jd
        op = FunctionOperator(
            lambda X: Jw @ X, lambda Y: Jw.T @ Y, shape=J_op.shape, dtype=J_op.dtype, xp=xp
        )
        return (aslinearoperator(Jw) if isinstance(J_user, LinearOperator) else Jw), Jw, op
    op = FunctionOperator(
        lambda X: w * J_op.matmat(X),
        lambda Y: J_op.rmatmat(w * Y),
        shape=J_op.shape,
        dtype=J_op.dtype,
        xp=xp,
        device=J_op.device,
    )
    return op, None, op


def _dot(xp: Any, a: Array, b: Array) -> float:
    """``a . b`` of finite vectors without overflow in the array arithmetic.

    Both are divided by their largest magnitude first; the product of the two scales is a
    Python float, which becomes ``inf`` silently where the dot product overflows.
    """
    sa, sb = _max_abs(xp, a), _max_abs(xp, b)
    if sa == 0.0 or sb == 0.0:
        return 0.0
    return sa * sb * float(xp.sum((a / sa) * (b / sb)))


def _norm(xp: Any, a: Array) -> float:
    """``||a||_2`` of a finite vector without overflow (scaled like :func:`_dot`)."""
    sa = _max_abs(xp, a)
    if sa == 0.0 or not math.isfinite(sa):
        return sa
    return sa * float(xp.linalg.vector_norm(a / sa))


def _reduction(xp: Any, f: Array, f_new: Array) -> float:
    """``1/2 (||f||^2 - ||f_new||^2) = 1/2 (f - f_new) . (f + f_new)``, both finite.

    The factored form has no cancellation of two nearly equal costs near a solution.
    """
    s = max(_max_abs(xp, f), _max_abs(xp, f_new))
    if s == 0.0:
        return 0.0
    a, b = f / s, f_new / s
    return 0.5 * s * s * float(xp.sum((a - b) * (a + b)))


def _column_norms(xp: Any, J: Array) -> Array:
    return xp.linalg.vector_norm(J, axis=0)


def _gradient(xp: Any, Jd: Array | None, J_op: LinearOperator, f: Array) -> Array:
    return Jd.T @ f if Jd is not None else J_op.rmatvec(f)


def _gradient_measure(
    xp: Any, g: Array, fnorm: float, col_norms: Array | None, Jd: Array | None
) -> float:
    """MINPACK's ``max_j |g_j| / (||J e_j|| ||f||)`` (or ``||g||_inf`` when matrix-free)."""
    if fnorm == 0.0:
        return 0.0
    if Jd is None or col_norms is None:
        return float(xp.max(xp.abs(g)))
    safe = xp.where(col_norms > 0, col_norms, xp.ones_like(col_norms))
    cosines = xp.where(col_norms > 0, xp.abs(g) / safe, xp.zeros_like(g))
    return float(xp.max(cosines)) / fnorm


def _scaled(
    xp: Any, Jd: Array | None, J_op: LinearOperator, D: Array | None, free: Array | None = None
) -> Array | LinearOperator:
    """``J D^{-1}`` as an array (materialized) or an operator (matrix-free); with ``free``
    (bounds), the columns of the fixed variables zeroed."""
    if free is not None:
        ones = xp.ones(free.shape, dtype=J_op.dtype, device=J_op.device)
        keep = xp.where(free, ones, xp.zeros_like(ones))
        D_free = keep if D is None else keep / D
        if Jd is not None:
            return Jd * D_free[None, :]
        return FunctionOperator(
            lambda X: J_op.matmat(D_free[:, None] * X),
            lambda Y: D_free[:, None] * J_op.rmatmat(Y),
            shape=J_op.shape,
            dtype=J_op.dtype,
            xp=xp,
            device=J_op.device,
        )
    if Jd is not None:
        return Jd if D is None else Jd / D[None, :]
    if D is None:
        return J_op
    inv = 1.0 / D
    return FunctionOperator(
        lambda X: J_op.matmat(inv[:, None] * X),
        lambda Y: inv[:, None] * J_op.rmatmat(Y),
        shape=J_op.shape,
        dtype=J_op.dtype,
        xp=xp,
        device=J_op.device,
    )


def _max_scaled_curvature(
    xp: Any,
    Jd: Array | None,
    J_op: LinearOperator,
    D: Array | None,
    col_norms: Array | None,
    sampler: Any,
) -> float:
    """``max_j (J_s^T J_s)_jj`` (materialized), else a power estimate of ``||J_s||_2^2``."""
    if Jd is not None and col_norms is not None:
        scaled = col_norms if D is None else col_norms / D
        return float(xp.max(scaled)) ** 2
    Js = _scaled(xp, None, J_op, D)
    v = sampler.fold_in(0).normal((Js.shape[1],), xp=xp, dtype=Js.dtype, device=Js.device)
    lam = 0.0
    for _ in range(_POWER_ITERS):
        v = v / _norm(xp, v)
        w = Js.rmatvec(Js.matvec(v))
        lam = _norm(xp, w)
        if lam == 0.0 or not math.isfinite(lam):
            break
        v = w
    return lam if math.isfinite(lam) and lam > 0 else 1.0


def _check_tol(value: Any, name: str, eps: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float or None, got {type(value).__name__}")
    value = float(value)
    if not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0 or None, got {value}")
    return max(value, eps)


def _check_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def _check_direction_options(options: Mapping[str, Any] | None, direction: str) -> dict[str, Any]:
    """The options of ``direction``'s solver (for ``"auto"``: of Auto and Nystrom-PCG, the
    sketched method it may choose), plus ``seed``."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"direction_options must be a mapping, got {type(options).__name__}")
    valid = {"seed", *solver_options(direction)}
    if direction == "auto":
        valid |= set(solver_options("nystrom-pcg"))
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(
            f"direction_options has unknown key(s) {unknown} for direction={direction!r}; "
            f"valid: {sorted(valid)}"
        )
    return dict(options)


def _check_scale(
    value: Any,
    name: str,
    xp: Any,
    dtype: Any,
    device: Any,
    n: int,
    *,
    allow_jac: bool = True,
) -> Any:
    """None, "jac" (if allowed), a positive float, or a positive array of shape (n,)."""
    if value is None:
        return None
    if isinstance(value, str):
        if allow_jac and value == "jac":
            return "jac"
        raise ValueError(
            f"{name} must be {'None, ' + repr('jac') + ', ' if allow_jac else 'None, '}"
            f"a positive float or an array of shape ({n},), got {value!r}"
        )
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        if not (number > 0 and math.isfinite(number)):
            raise ValueError(f"{name} must be positive and finite, got {number}")
        return number
    try:
        arr = xp.asarray(value, dtype=dtype, device=device)
    except Exception as exc:  # any backend's conversion error
        raise TypeError(
            f"{name} must be a positive float or an array of shape ({n},), got "
            f"{type(value).__name__}"
        ) from exc
    if arr.ndim == 0:
        arr = xp.reshape(arr, (1,)) if n == 1 else arr
    if tuple(arr.shape) not in ((n,), ()):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(arr.shape)}")
    if not bool(xp.all(xp.isfinite(arr) & (arr > 0))):
        raise ValueError(f"{name} must be positive and finite")
    return arr
