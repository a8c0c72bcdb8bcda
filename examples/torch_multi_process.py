"""Data-parallel SNGD with torch.distributed: each process holds its own collocation points.

Poisson 1D, -u'' = pi^2 sin(pi x) on (0, 1), u(0) = u(1) = 0 (solution u* = sin(pi x)),
with a [1, 32, 32, 1] tanh MLP (1,153 parameters), float64. The 2,000 interior points are
dealt out to the ranks (rank k takes every k-th), the two boundary points sit on rank 0.
Each rank builds the residual and Jacobian of its own points only; the optimizer's
``process_group`` sums over the ranks what the step needs from the rows: the sketch
``J^T [J Omega, r]`` (one all-reduce of P x (l + 1) entries), the loss and the line
search's trial losses. The sketch, the Nystrom core, the direction and the update are
the same on every rank (same seed), so the model replicas stay identical.

Run::

    torchrun --standalone --nproc_per_node=2 examples/torch_multi_process.py [--steps 50]

On CPUs the processes talk through gloo; with CUDA GPUs each rank takes one GPU and NCCL.
Rank 0 prints the loss every ``--print-every`` steps, the bytes each rank sent per step,
and at the end the relative L2 error on 1,000 uniform points.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import time

import sketchlinalg_torch as slt
import torch
import torch.distributed as dist

import sketchlinalg as sl

N_INTERIOR = 2000
WIDTHS = (1, 32, 32, 1)


def mlp(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial parameters on every rank
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(WIDTHS)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(WIDTHS) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers).to(device, torch.float64)


def my_terms(rank: int, world: int, device: torch.device) -> list[slt.Term]:
    """This rank's share of the points: every ``world``-th interior point from ``rank``,
    and the boundary on rank 0."""
    x = torch.linspace(0, 1, N_INTERIOR + 2, dtype=torch.float64, device=device)[1:-1, None]

    def pde(u, x):
        return -slt.laplacian(u, x) - math.pi**2 * torch.sin(math.pi * x[0])

    terms = [slt.Term(pde, x[rank::world], 1.0 / N_INTERIOR)]
    if rank == 0:
        boundary = torch.tensor([[0.0], [1.0]], dtype=torch.float64, device=device)
        terms.append(slt.Term(lambda u, x: u(x), boundary, 1.0))
    return terms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--print-every", type=int, default=10)
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")

    net = mlp(device)
    terms = my_terms(rank, world, device)
    opt = slt.SNGD(
        net.named_parameters(),
        functools.partial(slt.pinn_system, net, terms=terms),
        residual_fn=functools.partial(slt.pinn_residual, net, terms=terms),
        seed=0,  # the same on every rank: the same sketch
        process_group=dist.group.WORLD,
    )
    say = print if rank == 0 else (lambda *a, **k: None)
    n_params = sum(p.numel() for p in net.parameters())
    say(f"ranks: {world} ({'nccl' if cuda else 'gloo'}), parameters: {n_params}, "
        f"points on rank 0: {sum(t.points.shape[0] for t in terms)}")  # fmt: skip
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        opt.step()
        if step % args.print_every == 0 or step == args.steps:
            summary = sl.step_summary(opt.state[next(net.parameters())])
            say(f"step {step:4d}  {summary}  sent {opt.last_step_bytes} B/rank")
    elapsed = time.perf_counter() - start

    with torch.no_grad():
        x = torch.linspace(0, 1, 1000, dtype=torch.float64, device=device)[:, None]
        u, exact = net(x).reshape(-1), torch.sin(math.pi * x[:, 0])
        error = float(torch.linalg.vector_norm(u - exact) / torch.linalg.vector_norm(exact))
    loss = float(opt.state[next(net.parameters())]["loss"])
    say(f"final loss {loss:.3e} after {args.steps} steps in {elapsed:.1f} s, "
        f"relative L2 error {error:.2e}")  # fmt: skip
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
