"""Data parallelism: PINN rows sharded over the devices of a mesh axis.

The step is data parallel over collocation points: with the rows of ``J`` split over
devices, ``J^T (J Omega) = sum_d J_d^T (J_d Omega)``, ``J^T r`` and the loss are sums over
shards, and the ``l x l`` sketch core, the factorizations and the update are replicated.
Under ``jax.jit`` XLA's SPMD partitioner derives all of this from the shardings of ``r``
and ``J``: the core's step runs unchanged. This module only lays out the rows so that
every device holds its own rows of every term (shard-major order, no resharding of
``J``) and pins those shardings with ``jax.lax.with_sharding_constraint``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as PS

import sketchlinalg as sl

__all__ = ["RowShardedJacobian", "RowSharding", "row_sharding"]


class RowSharding:
    """The row axis of a ``NamedSharding``: its mesh axes and the number of shards.

    Parameters
    ----------
    sharding : jax.sharding.NamedSharding
        Of the collocation points: ``NamedSharding(mesh, PartitionSpec("data"))`` splits
        their leading axis over the mesh axis ``"data"`` (a tuple of axis names splits it
        over several); the other dimensions must not be sharded. The axes must be of type
        ``AxisType.Auto`` (XLA propagates the shardings through the core's step; under
        ``Explicit`` axes JAX asks every contraction over rows for an output sharding).
    """

    def __init__(self, sharding: Any) -> None:
        if not isinstance(sharding, NamedSharding):
            raise TypeError(
                "sharding must be a jax.sharding.NamedSharding of the points' leading axis, "
                f"e.g. NamedSharding(mesh, PartitionSpec('data')); got {type(sharding).__name__}"
            )
        spec = tuple(sharding.spec)
        if not spec or spec[0] is None or any(s is not None for s in spec[1:]):
            raise ValueError(
                "sharding must split the points' leading axis only, e.g. "
                f"PartitionSpec('data'); got {sharding.spec}"
            )
        axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
        types = dict(zip(sharding.mesh.axis_names, sharding.mesh.axis_types, strict=True))
        explicit = [a for a in axes if types[a] != AxisType.Auto]
        if explicit:
            raise ValueError(
                f"sharding: mesh axis {explicit[0]!r} is {types[explicit[0]]}; the step needs "
                "XLA's sharding propagation: make the mesh with axis_types=(AxisType.Auto,) "
                "(jax.make_mesh(shape, names, axis_types=...), jax.make_mesh defaults to "
                "Explicit)"
            )
        self.mesh = sharding.mesh
        self.axes: tuple[str, ...] = tuple(axes)
        self.shards = math.prod(int(self.mesh.shape[a]) for a in self.axes)

    def spec(self, ndim: int) -> NamedSharding:
        """Rows split over the axes, every other dimension replicated."""
        first = self.axes[0] if len(self.axes) == 1 else self.axes
        return NamedSharding(self.mesh, PS(first, *([None] * (ndim - 1))))

    def constrain(self, x: jax.Array) -> jax.Array:
        """``x`` with its leading axis pinned to the shards."""
        return jax.lax.with_sharding_constraint(x, self.spec(x.ndim))

    def replicate(self, x: jax.Array) -> jax.Array:
        """``x`` gathered onto every device of the mesh (one all-gather)."""
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, PS()))

    def check(self, sizes: Sequence[int], where: str) -> None:
        """Every term's point count must split evenly over the shards."""
        for k, n in enumerate(sizes):
            if n % self.shards:
                raise ValueError(
                    f"{where}: terms[{k}] has {n} points, not a multiple of the {self.shards} "
                    f"shards of mesh axis {self.axes if len(self.axes) > 1 else self.axes[0]!r}"
                )

    def stack(self, blocks: Sequence[jax.Array]) -> jax.Array:
        """The terms' rows stacked shard by shard: shard ``s`` holds its rows of term 0,
        then of term 1, ...; a local reshape and concatenation, no data moves."""
        blocks = [self.constrain(b) for b in blocks]
        if len(blocks) == 1:
            return blocks[0]
        D = self.shards
        parts = [self.constrain(jnp.reshape(b, (D, b.shape[0] // D, *b.shape[1:]))) for b in blocks]
        out = jnp.concatenate(parts, axis=1)
        return self.constrain(jnp.reshape(out, (-1, *out.shape[2:])))


def row_sharding(sharding: Any) -> RowSharding | None:
    """``None``, or the checked :class:`RowSharding` of ``sharding``."""
    return None if sharding is None else RowSharding(sharding)


class RowShardedJacobian(sl.JacobianOperator):
    """A materialized ``J`` whose rows are sharded over a mesh axis (``pinn_system(...,
    sharding=...)``); it remembers the sharding so that the optimizers can gather it.

    The residual-space methods (ENGD-Woodbury, SPRING) need the ``N x N`` kernel, whose
    entries pair rows of different devices. Left to XLA, the kernel, its factorization
    and solves are partitioned too, with collectives of ``N x N`` blocks at every use
    (about 6.6x the bytes of gathering ``J`` at 8 devices, ``benchmarks/scaling.py``);
    :meth:`replicated` gathers ``[J, r]`` once instead (``8 N (P + 1)`` bytes per
    device) and the kernel method then runs replicated, as in the torch adapter.
    """

    rows: RowSharding | None = None

    @classmethod
    def of(cls, M: jax.Array, rows: RowSharding, *, unflatten: Any) -> RowShardedJacobian:
        """The operator of the row-sharded matrix ``M``."""
        J = cls.from_matrix(M, unflatten=unflatten)
        assert isinstance(J, cls)
        J.rows = rows
        return J

    def replicated(self, r: jax.Array) -> tuple[jax.Array, sl.JacobianOperator]:
        """``(r, J)`` gathered onto every device."""
        assert self.rows is not None and self.matrix is not None
        M = self.rows.replicate(self.matrix)
        return self.rows.replicate(r), sl.JacobianOperator.from_matrix(M, unflatten=self._unflatten)
