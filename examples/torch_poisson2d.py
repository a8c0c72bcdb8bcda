"""Poisson 2D with SNGD in PyTorch: -Laplace u = 2 pi^2 sin(pi x) sin(pi y) on (0,1)^2, u = 0
on the boundary; the solution is u* = sin(pi x) sin(pi y).

Network: a [2, 64, 64, 1] tanh MLP (4,417 parameters), float64. Collocation: a 30 x 30
grid of interior points (spacing 1/31, 900 points, weight |Omega| = 1) and 30 points per
side of the boundary (120 points, each corner once, weight |dOmega| = 4), so the residual
has N = 1,020 rows. Optimizer: SNGD with the library's defaults: a fresh Nystrom sketch of
the Gauss–Newton matrix J^T J every step, its size and the damping adapting to the problem
(sketchlinalg.StepEngine), and ENGD's 31-point grid line search. The Jacobian is
materialized by per-point gradients (pinn_system's "materialized" path; 1,020 x 4,417 in
float64 is 36 MB). ``--rank`` / ``--damping`` fix them instead.

Run::

    python examples/torch_poisson2d.py [--budget 60] [--steps 1000] [--threads N] [--device cuda]

Threads: on a machine with two CPUs or fewer the example runs torch on one thread unless
``--threads`` says otherwise. Two threads are 1.7x faster while nothing else runs, and 1.6x
slower than one while another process keeps a core busy (``python -m
benchmarks.torch_cpu_settings``; docs/troubleshooting.md, "Threads on small CPU machines").

A progress line every ``--print-every`` steps (the step, the training time, the state of
the run by ``sketchlinalg.step_summary``: loss 1/2 ||r||^2 before the step, its step size,
the damping and sketch size for the next step, skipped steps, the status; and the last
relative L2 error, evaluated every ``--eval-every`` steps, with the step it was taken at), then
a final line with the iterations, the training wall time and the relative L2 error
||u - u*|| / ||u*|| on a uniform 100 x 100 grid of [0,1]^2 (boundary included). Training
stops after ``--steps`` steps or at the first step that ends after ``--budget`` seconds;
set-up and evaluation are not timed.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import time
from typing import Any

import torch
from sketchlinalg_torch import SNGD, Term, laplacian, pinn_residual, pinn_system

from sketchlinalg import step_summary


def source(x: torch.Tensor) -> torch.Tensor:
    """``f(x, y) = 2 pi^2 sin(pi x) sin(pi y)``."""
    return 2 * math.pi**2 * torch.sin(math.pi * x[..., 0]) * torch.sin(math.pi * x[..., 1])


def exact(x: torch.Tensor) -> torch.Tensor:
    """``u*(x, y) = sin(pi x) sin(pi y)``."""
    return torch.sin(math.pi * x[..., 0]) * torch.sin(math.pi * x[..., 1])


def collocation(
    n_interior: int, n_side: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """An ``n_interior^2`` interior grid and ``4 n_side`` boundary points."""
    t = torch.linspace(0, 1, n_interior + 2, dtype=dtype)[1:-1]
    X, Y = torch.meshgrid(t, t, indexing="ij")
    interior = torch.stack([X.reshape(-1), Y.reshape(-1)], dim=1)
    s = torch.linspace(0, 1, n_side + 1, dtype=dtype)[:-1]
    zero, one = torch.zeros_like(s), torch.ones_like(s)
    boundary = torch.cat(
        [
            torch.stack([s, zero], 1),  # bottom, left to right
            torch.stack([one, s], 1),  # right, bottom to top
            torch.stack([1 - s, one], 1),  # top, right to left
            torch.stack([zero, 1 - s], 1),  # left, top to bottom
        ]
    )
    return interior, boundary


def make_terms(n_interior: int, n_side: int, dtype: torch.dtype) -> list[Term]:
    """The interior (PDE) and boundary (Dirichlet) residual terms."""
    interior, boundary = collocation(n_interior, n_side, dtype)
    return [
        Term(lambda u, x: -laplacian(u, x) - source(x), interior, weight=1.0, name="interior"),
        Term(lambda u, x: u(x), boundary, weight=4.0, name="boundary"),
    ]


def make_model(widths: list[int], seed: int, init: str, dtype: torch.dtype) -> torch.nn.Module:
    """A tanh MLP; ``init`` is ``"default"`` (PyTorch's) or ``"xavier"`` (Glorot normal,
    zero biases)."""
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        lin = torch.nn.Linear(a, b)
        if init == "xavier":
            torch.nn.init.xavier_normal_(lin.weight)
            torch.nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers).to(dtype)


def default_threads() -> int | None:
    """One torch thread on a machine with two CPUs or fewer (``None``: torch's default).

    There, a second busy process (tests, another run) makes two threads slower than one,
    while one thread costs a factor below two on a quiet machine: the safer default.
    """
    return 1 if (os.cpu_count() or 1) <= 2 else None


def relative_l2_error(model: torch.nn.Module, n_eval: int) -> float:
    """``||u - u*|| / ||u*||`` on a uniform ``n_eval x n_eval`` grid of [0, 1]^2."""
    first = next(model.parameters())
    t = torch.linspace(0, 1, n_eval, dtype=first.dtype, device=first.device)
    X, Y = torch.meshgrid(t, t, indexing="ij")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], dim=1)
    with torch.no_grad():
        u = model(pts).reshape(-1)
    ref = exact(pts)
    return float(torch.linalg.vector_norm(u - ref) / torch.linalg.vector_norm(ref))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train and print progress; return the final numbers (for tests)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds")
    parser.add_argument("--steps", type=int, default=10_000, help="maximum steps")
    parser.add_argument("--rank", type=int, default=None, help="sketch size (default: adaptive)")
    parser.add_argument("--damping", type=float, default=None, help="fixed mu (default: adaptive)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2, help="hidden layers")
    parser.add_argument("--n-interior", type=int, default=30, help="interior grid per axis")
    parser.add_argument("--n-side", type=int, default=30, help="boundary points per side")
    parser.add_argument("--n-eval", type=int, default=100, help="evaluation grid per axis")
    parser.add_argument("--init", choices=("default", "xavier"), default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: 1 on machines with <= 2 CPUs, else torch's)",
    )
    parser.add_argument("--float32", action="store_true", help="float32 instead of float64")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--eval-every", type=int, default=20, help="evaluate the L2 error every k steps (untimed)"
    )
    parser.add_argument("--print-every", type=int, default=5, help="a progress line every k steps")
    parser.add_argument(
        "--inverse", choices=("woodbury", "projected"), default=None, help="default: the library's"
    )
    parser.add_argument("--oversample", type=int, default=None, help="default: the library's")
    parser.add_argument("--quiet", action="store_true", help="only the final line")
    args = parser.parse_args(argv)
    threads = args.threads if args.threads is not None else default_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    dtype = torch.float32 if args.float32 else torch.float64

    widths = [2] + [args.width] * args.depth + [1]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device")
    # Built on the CPU, then moved: the same initial network on every device.
    model = make_model(widths, args.seed, args.init, dtype).to(device)
    terms = [
        t._replace(points=t.points.to(device))
        for t in make_terms(args.n_interior, args.n_side, dtype)
    ]
    n_params = sum(p.numel() for p in model.parameters())
    n_rows = sum(t.points.shape[0] for t in terms)
    rank = None if args.rank is None else min(args.rank, n_params)
    print(
        f"Poisson 2D: MLP {widths} ({n_params} parameters), {n_rows} residual rows, "
        f"SNGD rank {rank or 'adaptive'}, {args.inverse or 'default'} inverse, damping "
        f"{args.damping or 'adaptive'}, grid line search, {dtype}, "
        f"{torch.get_num_threads()} torch threads, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        flush=True,
    )
    opt = SNGD(
        model.named_parameters(),
        functools.partial(pinn_system, model, terms=terms),
        residual_fn=functools.partial(pinn_residual, model, terms=terms),
        seed=args.seed,
        **{
            name: value
            for name, value in (
                ("rank", rank),
                ("damping", args.damping),
                ("inverse", args.inverse),
                ("oversample", args.oversample),
            )
            if value is not None
        },
    )
    elapsed = 0.0
    steps = 0
    loss = float("nan")
    error, error_step = relative_l2_error(model, args.n_eval), 0
    while steps < args.steps and elapsed < args.budget:
        t0 = time.perf_counter()
        loss = float(opt.step())
        elapsed += time.perf_counter() - t0
        steps += 1
        if args.eval_every and steps % args.eval_every == 0:
            error, error_step = relative_l2_error(model, args.n_eval), steps
        if not args.quiet and (steps % args.print_every == 0 or steps == 1):
            print(
                f"step {steps:5d} | {elapsed:6.1f} s | {step_summary(opt)} | "
                f"rel. L2 {error:.2e} (at step {error_step})",
                flush=True,
            )
    error = relative_l2_error(model, args.n_eval)
    print(
        f"final: {steps} iterations, {elapsed:.1f} s training, relative L2 error "
        f"{error:.3e} on a {args.n_eval}x{args.n_eval} grid (loss before the last step "
        f"{loss:.3e}, jacobian path {opt.jacobian_path})"
    )
    return {"steps": steps, "seconds": elapsed, "error": error, "loss": loss}


if __name__ == "__main__":
    main()
