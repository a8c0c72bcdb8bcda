r"""Data parallelism over collocation points: the rows of ``J`` (and ``r``) split across
devices or processes, every reduction over rows routed through one hook.

With ``J`` split by rows into shards ``J_1, ..., J_D`` (``r`` likewise), every quantity the
natural-gradient step needs from the rows is a sum over shards:

.. math::

    J^T (J \Omega) = \sum_d J_d^T (J_d \Omega), \qquad
    J^T r = \sum_d J_d^T r_d, \qquad
    \tfrac12 \|r\|^2 = \sum_d \tfrac12 \|r_d\|^2,

so a sketched step is one all-reduce of a ``P x (l + 1)`` block plus a scalar, after which
the Nystrom core (``l x l``), the solve and the update are the same on every shard
(replicated). The same holds for ``J^T J`` (dense ENGD: ``P x (P + 1)`` with ``J^T r``) and
for each CG iteration of Nystrom-PCG (``P x 1``). Residual-space methods (Woodbury,
SPRING, the exact top rung of an adaptive SNGD) need the ``N x N`` kernel ``J J^T``,
whose off-diagonal blocks pair rows of different shards: they gather the rows
(``[J_d, r_d]``, one all-gather) and run replicated.

A :class:`Collective` supplies the two operations (the identity on one device); the
framework adapters implement them (``torch.distributed``, JAX collectives). A
:class:`ShardedOperator` is a shard's rows with the all-reduce in its transpose product,
so every ``J^T Y`` of the solvers is the global one.
"""

from __future__ import annotations

from typing import Any

from . import _dispatch
from ._operator import LinearOperator, aslinearoperator

__all__ = ["Collective", "ShardedOperator"]

Array = Any


class Collective:
    """The reductions over the shards of a row-split problem; this base class is the
    identity (one device, nothing split).

    An adapter subclasses it for its communication library and overrides the methods.
    Every shard must call them in the same order with arrays of the same shape (except
    the rows of :meth:`gather_rows`), as collectives require.

    Examples
    --------
    >>> import numpy as np
    >>> import sketchlinalg as sl
    >>> c = sl.Collective()
    >>> c.sum(np.ones(2)).tolist(), c.gather_rows(np.ones((2, 1))).shape, c.total_rows(3)
    ([1.0, 1.0], (2, 1), 3)
    """

    #: Whether this collective is the identity (one shard): the step then runs unchanged.
    is_local: bool = True

    def sum(self, x: Array) -> Array:
        """``sum_d x_d``: the all-reduce sum over the shards of an array of one shape
        (the result is the same, bit for bit, on every shard)."""
        return x

    def minimum(self, x: Array) -> Array:
        """``min_d x_d`` elementwise (the memory budget every shard can afford)."""
        return x

    def gather_rows(self, x: Array) -> Array:
        """``[x_1; x_2; ...; x_D]``: the shards' row blocks concatenated along axis 0 in
        shard order (their row counts may differ)."""
        return x

    def total_rows(self, n: int) -> int:
        """``sum_d n_d``: the number of rows over all shards."""
        return int(n)


class ShardedOperator(LinearOperator):
    r"""One shard's rows ``J_d`` (``N_d x P``) of a row-split ``J``, whose transpose
    product is the global one: ``J^T Y = sum_d J_d^T Y_d`` (one all-reduce).

    Products with ``J`` stay local (``J_d X``: the shard's rows of ``J X``); ``shape`` is the
    local one, ``global_shape`` ``(N, P)`` with ``N = sum_d N_d``. The step engine wraps the
    Jacobian in one when it is given a collective (:meth:`StepEngine.step`); the solvers ask
    :func:`collective_of` where a reduction is not a transpose product.

    Parameters
    ----------
    local : LinearOperator or array
        ``J_d``.
    collective : Collective
    rows : int, optional
        ``N``, the global number of rows (default: :meth:`Collective.total_rows`, one
        collective call).

    Examples
    --------
    Two shards simulated in one process: the transpose products, summed, are ``J^T Y``.

    >>> import numpy as np
    >>> import sketchlinalg as sl
    >>> J = np.arange(12.0).reshape(4, 3)
    >>> shards = [sl.ShardedOperator(J[:2], sl.Collective(), rows=4),
    ...           sl.ShardedOperator(J[2:], sl.Collective(), rows=4)]
    >>> Y = np.ones((4, 1))
    >>> bool(np.allclose(shards[0].rmatmat(Y[:2]) + shards[1].rmatmat(Y[2:]), J.T @ Y))
    True
    """

    def __init__(self, local: Any, collective: Collective, rows: int | None = None) -> None:
        local = aslinearoperator(local) if not isinstance(local, LinearOperator) else local
        if not isinstance(collective, Collective):
            raise TypeError(
                f"collective must be a sketchlinalg.Collective, got {type(collective).__name__}"
            )
        super().__init__(local.shape, local.dtype, xp=local.xp, device=local.device)
        self.local = local
        self.collective = collective
        n = collective.total_rows(local.shape[0]) if rows is None else int(rows)
        self.global_shape: tuple[int, int] = (n, local.shape[1])

    def _matmat(self, X: Array) -> Array:
        return self.local._matmat(X)

    def _rmatmat(self, Y: Array) -> Array:
        return self.collective.sum(self.local._rmatmat(Y))

    @property
    def is_materialized(self) -> bool:
        """Whether the shard's rows are held as an array."""
        return self.local.is_materialized

    def to_dense(self) -> Array:
        """The shard's rows ``J_d`` as an array (not the gathered ``J``: :func:`gathered`)."""
        return self.local.to_dense()


def collective_of(J: Any) -> Collective:
    """The collective of a :class:`ShardedOperator`, else the identity."""
    return J.collective if isinstance(J, ShardedOperator) else _LOCAL


def global_shape(J: LinearOperator) -> tuple[int, int]:
    """``(N, P)`` over all shards (``J.shape`` unless ``J`` is sharded)."""
    return J.global_shape if isinstance(J, ShardedOperator) else J.shape


def is_sharded(J: Any) -> bool:
    """Whether ``J`` is a shard of a row-split Jacobian with a non-trivial collective."""
    return isinstance(J, ShardedOperator) and not J.collective.is_local


def gathered(J: LinearOperator, r: Array | None) -> tuple[LinearOperator, Array | None]:
    """``(J, r)`` with every shard's rows: one all-gather of ``[J_d, r_d]``
    (``N x (P + 1)`` entries) for a sharded ``J``, else unchanged."""
    if not is_sharded(J):
        return J, r
    assert isinstance(J, ShardedOperator)
    xp, P = J.xp, J.shape[1]
    Jd = J.to_dense()
    block = Jd if r is None else xp.concat([Jd, r[:, None]], axis=1)
    full = J.collective.gather_rows(block)
    Jfull = aslinearoperator(full[:, :P])
    return Jfull, (None if r is None else full[:, P])


def gather_vector(J: Any, b: Array) -> Array:
    """A residual-space vector ``b`` (the shard's rows) with every shard's rows."""
    if not is_sharded(J):
        return b
    return collective_of(J).gather_rows(b[:, None])[:, 0]


def sum_pair(c: Collective, a: Array, b: Array) -> tuple[Array, Array]:
    """Two scalars summed over the shards in one all-reduce (unchanged when local)."""
    if c.is_local:
        return a, b
    xp = _dispatch.namespace(a)
    both = c.sum(xp.stack([a, b]))
    return both[0], both[1]


_LOCAL = Collective()
