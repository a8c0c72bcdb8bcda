"""The method choice (``auto``) and solvers by name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from . import _dispatch
from ._distributed import is_sharded
from ._exact import SVD, Dense, Woodbury
from ._memory import DEFAULT_BUDGET, default_budget, estimate_memory
from ._sketched import KernelNystrom, Nystrom, NystromPCG
from ._solver_base import (
    DEFAULT_RANK,
    AutoState,
    DirectionInfo,
    DirectionSolver,
    _check_rank,
    _check_system,
    _set,
)
from ._sparse import SparseOperator
from ._sparse_direct import SparseDirect
from ._status import Method
from ._validation import check_int, check_nonnegative

__all__ = ["Auto", "choose_method", "make_solver", "solver_options"]

Array = Any

PCG_ITERATIONS_ASSUMED = 50
MATVEC_PENALTY = 5.0  # matrix-vector flops cost ~5x matrix-matrix flops (measured, linalg.md)


def choose_method(
    n_residuals: int,
    n_params: int,
    *,
    rank: int = DEFAULT_RANK,
    itemsize: int = 8,
    memory_budget: int | None = None,
    materialized: bool = False,
) -> tuple[str, str]:
    """The rule behind ``method="auto"``: the cheapest accurate method that fits in memory.

    ``auto`` returns the damped Gauss–Newton direction ``(J^T J + mu I)^{-1} J^T r`` to
    working accuracy, so it chooses among the exact methods: ``"woodbury"``, ``"dense"``
    and ``"nystrom-pcg"`` (exact up to its tolerance, with the sketch as preconditioner).
    The plain sketch (``"nystrom"``, SNGD) is an approximation whose accuracy depends on
    ``rank`` versus the effective dimension: ask for it explicitly.

    Flop model (``N`` residuals, ``P`` parameters, sketch size ``l``; one product with
    ``J`` or ``J^T`` counted as ``2 N P`` flops per column); memory comes from
    :func:`estimate_memory` (the method's peak, ``J`` included):

    ============== ========================================
    method         flops
    ============== ========================================
    woodbury       ``M + N^2 P + N^3 / 3``
    dense          ``M + N P^2 + P^3 / 3``
    nystrom-pcg    ``4 N P l + 12 P l^2 + c 4 N P k``
    ============== ========================================

    where ``M = 2 N P min(N, P)`` is the cost of materializing ``J`` (zero when ``J`` is
    already an array), ``12 P l^2`` counts the Cholesky solve and SVD of the sketch,
    ``k = 50`` PCG iterations are assumed, and ``c = 5`` weighs their matrix-vector
    products, which run at about a fifth of the flop rate of the matrix-matrix products
    of the dense methods. These constants come from ``benchmarks/linalg.py`` (the
    "auto" section of ``benchmarks/results/linalg.md``: with ``k = 20, c = 1`` the rule
    picked Nystrom-PCG where dense/woodbury were 2.5-8x faster). An exact dense method is
    chosen when it fits in ``memory_budget`` and costs no more than Nystrom-PCG (or
    Nystrom-PCG does not fit); otherwise ``"nystrom-pcg"``. A method that does not fit is
    never chosen: when none fits, ``ValueError`` says how much the smallest needs.

    Parameters
    ----------
    n_residuals, n_params : int
        ``N`` and ``P``.
    rank : int
        Sketch size ``l`` the sketch methods would use.
    itemsize : int
        Bytes per entry (8 for float64, 4 for float32).
    memory_budget : int, optional
        Bytes; default 2 GiB.
    materialized : bool
        Whether ``J`` is already an explicit array.

    Returns
    -------
    (method, reason) : tuple of str

    Raises
    ------
    ValueError
        When not even Nystrom-PCG fits in ``memory_budget``.
    """
    N, P, l = n_residuals, n_params, min(rank, n_params)
    budget = DEFAULT_BUDGET if memory_budget is None else memory_budget
    path = "array" if materialized else "matrix-free"
    M = 0.0 if materialized else 2.0 * N * P * min(N, P)
    flops = {
        "woodbury": M + N * N * P + N**3 / 3,
        "dense": M + N * P * P + P**3 / 3,
        "nystrom-pcg": 4.0 * N * P * l
        + 12.0 * P * l * l
        + MATVEC_PENALTY * 4.0 * N * P * PCG_ITERATIONS_ASSUMED,
    }
    memory = {
        m: estimate_memory(m, N, P, rank=l, jacobian=path, itemsize=itemsize, memory_budget=budget)
        for m in flops
    }
    pcg_cost = flops["nystrom-pcg"]
    fitting = {m: flops[m] for m in ("woodbury", "dense") if memory[m].fits}
    if fitting:
        best = min(fitting, key=lambda m: fitting[m])
        if fitting[best] <= pcg_cost or not memory["nystrom-pcg"].fits:
            return best, (
                f"auto: {best} is exact and cheapest that fits (~{fitting[best]:.2g} flops, "
                f"~{memory[best].bytes / 2**20:.4g} MiB, vs ~{pcg_cost:.2g} flops for "
                f"Nystrom-PCG with a rank-{l} preconditioner)"
            )
        return "nystrom-pcg", (
            f"auto: nystrom-pcg (~{pcg_cost:.2g} flops) is cheaper than {best} "
            f"(~{fitting[best]:.2g})"
        )
    if memory["nystrom-pcg"].fits:
        return "nystrom-pcg", (
            f"auto: nystrom-pcg (~{memory['nystrom-pcg'].bytes / 2**20:.4g} MiB), since no "
            f"dense exact method fits in {budget / 2**30:.3g} GiB"
        )
    needs = ", ".join(f"{m} ~{memory[m].bytes / 2**30:.3g} GiB" for m in memory)
    raise ValueError(
        f"method='auto': no accurate method fits memory_budget={budget} bytes "
        f"({budget / 2**30:.3g} GiB) for N={N}, P={P}, rank={l}, {path} Jacobian ({needs}; "
        "sketchlinalg.memory_plan lists every configuration); raise memory_budget, lower "
        "rank, or choose method='nystrom'"
    )


@dataclass(frozen=True)
class Auto(DirectionSolver):
    """:func:`choose_method`'s pick among the accurate methods (woodbury, dense,
    nystrom-pcg), made in :meth:`init` from the shapes; the state carries the choice. A
    ``scipy.sparse`` ``J`` skips the cost model: :class:`SparseDirect` (exact, never dense).

    Parameters
    ----------
    rank : int, optional
        Preconditioner rank if Nystrom-PCG is chosen (default ``min(100, P)``).
    memory_budget : int, optional
        Bytes (default :func:`default_budget`: 2 GiB on the host, half the free memory of
        the accelerator holding ``r``).
    rtol, maxiter : optional
        Nystrom-PCG's tolerance and iteration cap.
    """

    rank: int | None = None
    memory_budget: int | None = None
    rtol: float | None = None
    maxiter: int | None = None
    method: ClassVar[str] = Method.AUTO.value

    def __post_init__(self) -> None:
        _set(self, "rank", _check_rank(self.rank))
        if self.memory_budget is not None:
            _set(self, "memory_budget", check_int(self.memory_budget, "memory_budget", low=1))
        NystromPCG(rtol=self.rtol, maxiter=self.maxiter)

    def init(self, J: Any, r: Array | None = None, *, seed: Any = 0) -> AutoState:
        """Choose by :func:`choose_method`, then the chosen solver's ``init``."""
        J, xp = _check_system(J, r)
        if is_sharded(J):
            raise NotImplementedError(
                "method='auto' does not run on a row-sharded Jacobian: choose nystrom, "
                "nystrom-pcg, dense or woodbury"
            )
        N, P = J.shape
        solver: DirectionSolver
        if isinstance(J, SparseOperator) and J.library == "scipy":
            solver = SparseDirect()
            reason = (
                "auto: sparse-direct, exact (J is a scipy.sparse matrix: SuperLU of the "
                "sparse J^T J + mu I)"
            )
            return AutoState(solver, solver.init(J, r, seed=seed), reason)
        method, reason = choose_method(
            N,
            P,
            rank=min(DEFAULT_RANK if self.rank is None else self.rank, P),
            itemsize=4 if J.dtype == xp.float32 else 8,
            memory_budget=(
                default_budget(r if r is not None else J.device)
                if self.memory_budget is None
                else self.memory_budget
            ),
            materialized=J.is_materialized,
        )
        if method == "nystrom-pcg":
            rank = None if self.rank is None else min(self.rank, P)
            solver = NystromPCG(rank=rank, rtol=self.rtol, maxiter=self.maxiter)
        else:
            solver = Dense() if method == "dense" else Woodbury()
        return AutoState(solver, solver.init(J, r, seed=seed), reason)

    def check_damping(self, damping: Any, xp: Any = None, dtype: Any = None) -> Any:
        """Any ``mu >= 0`` (the chosen solver may need ``mu > 0``)."""
        return check_nonnegative(damping, "damping", xp=xp, dtype=dtype)

    def solve(
        self, state: AutoState, rhs: Array | None = None, *, damping: float | Array
    ) -> tuple[Array, DirectionInfo]:
        """The chosen solver's ``solve``; its message ends with the reason of the choice."""
        if (
            not state.solver.allows_zero_damping
            and not _dispatch.is_tracing(damping)
            and float(check_nonnegative(damping, "damping")) == 0
        ):
            raise ValueError(
                "method='auto' with damping=0: the pseudo-inverse needs a dense exact "
                f"method (dense or woodbury), but {state.reason.removeprefix('auto: ')}; "
                "use damping > 0, a larger memory_budget, or method='nystrom' with "
                "inverse='projected'"
            )
        d, info = state.solver.solve(state.state, rhs, damping=damping)
        return d, info._replace(message=f"{info.message}; {state.reason}")


# ---------------------------------------------------------------------------------
# by name
# ---------------------------------------------------------------------------------

_SOLVERS: dict[str, type[DirectionSolver]] = {
    Method.AUTO.value: Auto,
    Method.DENSE.value: Dense,
    Method.WOODBURY.value: Woodbury,
    Method.NYSTROM.value: Nystrom,
    Method.NYSTROM_PCG.value: NystromPCG,
    Method.KERNEL_NYSTROM.value: KernelNystrom,
    Method.SVD.value: SVD,
    SparseDirect.method: SparseDirect,  # sparse J only: not among METHODS
}


def make_solver(method: str | Method, **options: Any) -> DirectionSolver:
    """The solver object of a method name, with its own options only.

    Options that the method does not take raise ``TypeError`` naming them and the valid
    ones (no keyword is silently ignored); options set to ``None`` take the default.

    Examples
    --------
    >>> from sketchlinalg import make_solver
    >>> solver = make_solver("nystrom", rank=50, inverse="projected")
    >>> type(solver).__name__, solver.rank, solver.inverse
    ('Nystrom', 50, 'projected')
    """
    name = method.value if isinstance(method, Method) else method
    cls = _SOLVERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"method must be one of {tuple(_SOLVERS)}, got {method!r}")
    fields = tuple(f.name for f in dataclasses.fields(cls))
    unknown = sorted(k for k, v in options.items() if k not in fields and v is not None)
    if unknown:
        raise TypeError(
            f"method {name!r} takes the options {list(fields) or 'none'}; got unknown "
            f"option(s) {unknown}"
        )
    return cls(**{k: v for k, v in options.items() if k in fields and v is not None})


def solver_options(method: str | Method) -> tuple[str, ...]:
    """The option names of a method's solver."""
    name = method.value if isinstance(method, Method) else method
    return tuple(f.name for f in dataclasses.fields(_SOLVERS[name]))
