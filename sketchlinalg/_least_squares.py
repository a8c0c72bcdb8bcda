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

This module holds the public function: its signature, its documentation, the checks of its
inputs and the result. The rest: the loop with its state (``_lsq_loop``), the damping
control and the trust-region step (``_lsq_damping``), the checked residual and Jacobian
(``_lsq_problem``), overflow-safe arithmetic and the Jacobian-derived quantities
(``_lsq_numerics``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from . import _dispatch
from ._direction import METHODS
from ._finite_diff import FD_SCHEMES
from ._lsq_bounds import Box, active_mask
from ._lsq_loop import Settings, first_order, run
from ._lsq_loss import LossTerms, make_loss
from ._lsq_numerics import safe_dot
from ._lsq_options import (
    as_start,
    check_bounds,
    check_direction_options,
    check_positive,
    check_scale,
    check_scipy_only,
    check_tol,
    check_verbose,
)
from ._lsq_problem import Jacobian, Residual
from ._lsq_report import LeastSquaresIteration, Reporter, wrap_callback
from ._operator import LinearOperator
from ._random import as_sampler
from ._sparse_direct import SparseDirect
from ._sparse_fd import SparsityGroups
from ._status import Status
from ._validation import check_int

__all__ = ["LeastSquaresIteration", "LeastSquaresResult", "least_squares"]

Array = Any

DIRECTIONS = (*METHODS, SparseDirect.method)


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
    jac : array, sparse matrix or LinearOperator of shape (m, n)
        Jacobian at ``x``, of the type the Jacobian was given in (an array for dense finite
        differences, a sparse matrix with ``jac_sparsity``; a sparse ``jac`` stays sparse,
        in CSR form when weighted). With a robust loss, the weighted ``diag(w) J`` of
        scipy, whose ``J_w^T J_w`` is the Gauss–Newton Hessian of the robust cost.
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


@_dispatch.in_full_float32
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
    * ``"sparse-direct"``: for a ``scipy.sparse`` Jacobian, SuperLU of the sparse
      ``J_s^T J_s + mu I`` per trial (:class:`SparseDirect`), exact, with Nielsen's damping;
      ``J`` is never densified.
    * ``"auto"`` (default): :func:`choose_method`'s choice, with ``"svd"`` in place of its
      exact methods when the Jacobian is materialized (an array); ``"sparse-direct"`` for a
      ``scipy.sparse`` Jacobian and ``"nystrom-pcg"`` for a CuPy or torch sparse one.

    **Sparse Jacobians** (``jac`` returning a ``scipy.sparse``, ``cupyx.scipy.sparse`` or
    torch sparse matrix, of the library of ``x0``) stay sparse throughout: the scaling, the
    robust-loss weights and the column norms of ``x_scale="jac"`` (the default, as for an
    array) work on the stored entries (:class:`SparseOperator`). On a nonlinear PDE with
    ``n = 102,400`` unknowns the default took 20.8 s where scipy's ``trf`` with
    ``tr_solver="lsmr"`` took 301.6 s, to a lower final cost (``benchmarks/lsq_sparse.py``).
    With ``"nystrom-pcg"`` (CuPy, torch), CG may run up to ``min(n, 2000)`` iterations per
    trial unless ``direction_options`` caps it; a trial whose CG stopped unconverged is
    counted and named in the result's message.

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
    jac : {"2-point", "3-point"}, callable, array, sparse matrix or LinearOperator
        The Jacobian ``J = df/dx`` of shape ``(m, n)``: finite differences (forward or
        central, array-API code; their evaluations are not counted in ``nfev``), a
        callable ``jac(x, *args, **kwargs)`` returning an array, a sparse matrix (scipy,
        CuPy or torch: above) or a :class:`LinearOperator` (possibly matrix-free), or a
        constant array / sparse matrix / operator.
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
    jac_sparsity : None, sparse matrix or array-like of shape (m, n)
        scipy's meaning: the pattern of ``J`` (non-zero where ``J`` may be), for finite
        differences. Structurally orthogonal columns (no row in common) are differenced
        together (Curtis, Powell, Reid 1974; grouped greedily in column order), so a
        Jacobian with a few non-zeros per row costs a few evaluations of ``fun`` instead of
        ``n`` (they are not counted in ``nfev``, as for dense differences), and it is built
        as a sparse matrix of the library of ``x0`` (NumPy: ``scipy.sparse``; CuPy; torch),
        then used as a sparse ``jac`` (above). Only with ``jac="2-point"`` / ``"3-point"``.
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
        ``"svd"``, one of :data:`METHODS`, or ``"sparse-direct"`` (a ``scipy.sparse``
        Jacobian): how the damped system is solved (above).
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
    check_scipy_only(tr_solver, tr_options, workers)
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
    ftol_v = check_tol(ftol, "ftol", eps)
    xtol_v = check_tol(xtol, "xtol", eps)
    gtol_v = check_tol(gtol, "gtol", eps)
    max_nfev = 100 * n if max_nfev is None else check_int(max_nfev, "max_nfev", low=1)
    tau = check_positive(initial_damping, "initial_damping")
    opts = check_direction_options(direction_options, direction)
    sampler = as_sampler(opts.pop("seed", 0))
    fixed_scale = check_scale(x_scale, "x_scale", xp, dtype, device, n)
    rel_step = check_scale(diff_step, "diff_step", xp, dtype, device, n, allow_jac=False)
    if rel_step is not None and float(xp.min(xp.asarray(rel_step))) < eps:
        raise ValueError(f"diff_step must be >= eps = {eps:.3g} (a smaller step rounds to 0)")
    if isinstance(jac, str) and jac not in FD_SCHEMES:
        raise ValueError(
            f"jac must be one of {FD_SCHEMES}, a callable, an array, a sparse matrix or a "
            "LinearOperator, "
            f"got {jac!r} (complex steps are not supported)"
        )
    robust = make_loss(loss, f_scale, xp, dtype, device)
    on_step = wrap_callback(callback)

    residual = Residual(fun, args, kwargs, xp, dtype)
    # f_raw: the residuals of fun; f: those the iteration works on (weighted by a robust
    # loss, see _lsq_loss), with the Jacobian weighted alike: J_w^T f_w is the gradient.
    f_raw = residual(x0, "x0")
    finite0 = bool(xp.all(xp.isfinite(f_raw)))
    terms: LossTerms | None = None
    if robust is None:
        cost = 0.5 * safe_dot(xp, f_raw, f_raw) if finite0 else math.inf
    else:
        terms = robust.terms(f_raw, "x0") if finite0 else None
        cost = terms.cost if terms is not None else math.inf
    if not math.isfinite(cost):
        raise ValueError(
            "fun(x0) returned NaN/Inf residuals (or a cost that overflows, or a loss callable "
            "that returned NaN/Inf); start from a point where the residuals are finite"
        )
    sparsity = None
    if jac_sparsity is not None:
        if not isinstance(jac, str):
            raise ValueError(
                "jac_sparsity is the pattern of finite differences (jac='2-point' or "
                f"'3-point'), but jac is a {type(jac).__name__}; return the sparse Jacobian "
                "from jac instead, or drop jac_sparsity"
            )
        sparsity = SparsityGroups(jac_sparsity, (residual.m, n))
    jacobian = Jacobian(
        jac, args, kwargs, residual, xp, dtype, (residual.m, n), rel_step, box, sparsity
    )
    reporter = Reporter(verbose_v, cost)
    settings = Settings(
        xp=xp,
        residual=residual,
        jacobian=jacobian,
        robust=robust,
        box=box,
        ftol=ftol_v,
        xtol=xtol_v,
        gtol=gtol_v,
        max_nfev=max_nfev,
        tau=tau,
        eps=eps,
        direction=direction,
        options=opts,
        sampler=sampler,
        fixed_scale=fixed_scale,
        reporter=reporter,
        on_step=on_step,
    )
    out = run(settings, x0, f_raw, terms, cost)
    optimality = first_order(xp, out.x, out.grad, box)
    reporter.summary(out.message, out.nfev, out.cost, optimality)
    return LeastSquaresResult(
        x=out.x,
        cost=out.cost,
        fun=out.fun,
        jac=out.jac,
        grad=out.grad,
        optimality=optimality,
        nfev=out.nfev,
        njev=out.njev,
        status=out.status,
        message=out.message,
        success=out.status > 0,
        nit=out.nit,
        damping=out.damping,
        direction=out.direction,
        nonfinite_trials=out.nonfinite_trials,
        result=out.result,
        active_mask=active_mask(xp, out.x, box, xtol_v if xtol_v is not None else eps),
    )
