"""The core's :class:`sketchlinalg.Collective` over ``torch.distributed``: what the
optimizers' ``process_group=`` runs on (each rank holds its own collocation points)."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.distributed as dist

import sketchlinalg as sl

__all__ = ["TorchCollective"]

#: Bytes of the int64 row counts exchanged by :meth:`TorchCollective.gather_rows` and
#: :meth:`TorchCollective.total_rows`.
_INT_BYTES = 8


class TorchCollective(sl.Collective):
    """All-reduce and all-gather over a ``torch.distributed`` process group, with the bytes
    each rank sends counted.

    ``sum`` is an all-reduce (``SUM``), ``minimum`` one with ``MIN``; ``gather_rows``
    first all-gathers the row counts (8 bytes), then the blocks padded to the largest
    count (so ranks may hold different numbers of points). A rank's bytes are the
    payload it passes to each collective: ``numel * itemsize`` (the padded block for a
    gather); what the backend moves on the wire (a ring all-reduce sends about twice the
    payload) is a constant factor of it.

    Parameters
    ----------
    group : ProcessGroup, optional
        Default ``torch.distributed.group.WORLD``.
    device : torch.device, optional
        Where the row counts are exchanged (the parameters' device: CUDA for NCCL).

    Attributes
    ----------
    bytes : int
        Bytes sent by this rank so far.
    log : list of (str, int)
        ``(operation, bytes)`` of every collective call, in order.
    """

    def __init__(self, group: Any = None, device: Any = None) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "process_group needs torch.distributed initialized "
                "(torch.distributed.init_process_group, e.g. under torchrun)"
            )
        self.group = dist.group.WORLD if group is None else group
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.world_size = dist.get_world_size(self.group)
        self.rank = dist.get_rank(self.group)
        self.is_local = self.world_size == 1
        self.bytes = 0
        self.log: list[tuple[str, int]] = []

    def _count(self, op: str, n: int) -> None:
        self.bytes += n
        self.log.append((op, n))

    def _reduce(self, x: torch.Tensor, op: Any, name: str) -> torch.Tensor:
        y = x.detach().reshape(-1).clone()
        self._count(name, y.numel() * y.element_size())
        dist.all_reduce(y, op=op, group=self.group)
        return y.reshape(x.shape)

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """All-reduce ``SUM`` (the same result on every rank)."""
        return self._reduce(x, dist.ReduceOp.SUM, "sum")

    def minimum(self, x: torch.Tensor) -> torch.Tensor:
        """All-reduce ``MIN``."""
        return self._reduce(x, dist.ReduceOp.MIN, "minimum")

    def gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The ranks' row blocks concatenated in rank order (row counts may differ)."""
        n = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
        counts = [torch.zeros_like(n) for _ in range(self.world_size)]
        self._count("gather_rows:counts", _INT_BYTES)
        dist.all_gather(counts, n, group=self.group)
        sizes = [int(c) for c in counts]
        m = max(sizes)
        block = x.detach().contiguous()
        if block.shape[0] < m:
            pad = block.new_zeros((m - block.shape[0], *block.shape[1:]))
            block = torch.cat([block, pad])
        out = [torch.empty_like(block) for _ in range(self.world_size)]
        self._count("gather_rows", block.numel() * block.element_size())
        dist.all_gather(out, block, group=self.group)
        return torch.cat([o[:s] for o, s in zip(out, sizes, strict=True)])

    def total_rows(self, n: int) -> int:
        """``sum`` of the ranks' row counts (an int64 all-reduce)."""
        t = torch.tensor([int(n)], dtype=torch.int64, device=self.device)
        self._count("total_rows", _INT_BYTES)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return int(t)


def check_same_generator(collective: TorchCollective, generator: torch.Generator) -> None:
    """Raise unless every rank's sketch generator is in the same state (the sketch test
    matrix, hence the update, must be identical on all ranks). Not counted in the bytes."""
    state = generator.get_state().cpu().numpy().tobytes()
    digest = int.from_bytes(hashlib.blake2b(state, digest_size=7).digest(), "little")
    mine = torch.tensor([digest], dtype=torch.int64, device=collective.device)
    lo, hi = mine.clone(), mine.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=collective.group)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=collective.group)
    if int(lo) != int(hi):
        raise ValueError(
            "process_group: the ranks' sketch generators differ (give every rank the same "
            "seed= or generator): the sketch, hence the update, must be the same on all ranks"
        )
