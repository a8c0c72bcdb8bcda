"""The per-rank program of tests/test_distributed_torch.py (run by torch.multiprocessing
spawn on the gloo backend): each rank fits its own share of the points of a small
least-squares problem, and rank 0 runs the same problem on one device for reference.

Results go to ``<out>/rank<k>.pt`` (a dict of plain tensors and numbers) for the test to
compare."""

from __future__ import annotations

import datetime
import os
import traceback

import torch
import torch.distributed as dist

F64 = torch.float64
N_POINTS = 26  # 4 ranks: 7, 7, 6, 6 points (unequal shards)
WIDTHS = (1, 6, 1)  # P = 19
STEPS = 20

#: name -> (optimizer class name, options, steps). Adaptive damping and the grid line
#: search unless fixed; the "-fixed" configurations (a fixed damping, no line search) have
#: a communication without trials.
FIXED = {"damping": 1e-3, "line_search": None}
CONFIGS = {
    "sngd": ("SNGD", {"rank": 8}, STEPS),
    "sngd-adaptive-rank": ("SNGD", {}, 3),  # rank min(N, P): G by the gathered thin SVD
    "sngd-matrix-free": ("SNGD", {"rank": 8, "matrix_free": True}, 2),
    "engd": ("ENGD", {}, STEPS),
    "engd-woodbury": ("ENGDWoodbury", {}, STEPS),
    # CG to a tight tolerance: where it stops at sqrt(eps) (the default), a rounding
    # difference can change its iteration count, which moves the direction by ~1e-5 here
    "nystrom-pcg": ("NystromPCG", {"rank": 6, "rtol": 1e-12}, STEPS),
    "spring": ("SPRING", {}, STEPS),
    "sngd-fixed": ("SNGD", {"rank": 8, **FIXED}, 1),
    "engd-fixed": ("ENGD", FIXED, 1),
    "engd-woodbury-fixed": ("ENGDWoodbury", FIXED, 1),
    "nystrom-pcg-fixed": ("NystromPCG", {"rank": 6, **FIXED}, 1),
    "spring-fixed": ("SPRING", FIXED, 1),
}


def mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(WIDTHS[0], WIDTHS[1]), torch.nn.Tanh(), torch.nn.Linear(WIDTHS[1], 1)
    ).to(F64)


class Problem:
    """Fit noisy samples of a teacher MLP with a student of the same shape: shard ``rank``
    of ``world`` of the points (all of them by default); ``poison`` makes the residual NaN
    while set. The noise keeps the loss away from zero, so that the rounding differences
    of a sharded sum do not grow into relative differences of a vanishing loss."""

    def __init__(self, world: int = 1, rank: int = 0) -> None:
        self.net = mlp(0)
        teacher = mlp(10)
        x = torch.linspace(-2, 2, N_POINTS, dtype=F64)[:, None]
        noise = torch.randn(N_POINTS, dtype=F64, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            y = teacher(x).reshape(-1) + 0.1 * noise
        self.x = torch.tensor_split(x, world)[rank]
        self.y = torch.tensor_split(y, world)[rank]
        self.poison = False
        self.calls = 0  # trial-loss evaluations (one per vmap batch)

    def raw(self, p: dict) -> torch.Tensor:
        """The residual, for the Jacobian (not counted)."""
        r = torch.func.functional_call(self.net, p, (self.x,)).reshape(-1) - self.y
        return r * float("nan") if self.poison else r

    def residual(self, p: dict) -> torch.Tensor:
        """The residual for the line search's trial losses (counted)."""
        self.calls += 1
        return self.raw(p)

    def system(self, p: dict) -> tuple:
        """``(r, J)`` with ``J`` materialized (``torch.func.jacrev``): fast at this size."""
        import sketchlinalg as sl

        r = self.raw(p)
        jac = torch.func.jacrev(self.raw)(p)
        return r, sl.aslinearoperator(torch.cat([jac[k].reshape(r.shape[0], -1) for k in p], 1))

    def free_system(self, p: dict) -> tuple:
        """``(r, J)`` with a matrix-free ``J`` (the optimizers' default)."""
        import sketchlinalg_torch as slt

        return slt.jacobian_operator(self.raw, p)


def run_optimizer(name: str, problem: Problem, group: object = None) -> dict:
    """``CONFIGS[name]``'s optimizer on ``problem`` for its steps (sharded over ``group``)."""
    import sketchlinalg_torch as slt

    cls_name, options, steps = CONFIGS[name]
    options = dict(options)
    matrix_free = options.pop("matrix_free", False)
    opt = getattr(slt, cls_name)(
        problem.net.named_parameters(),
        problem.free_system if matrix_free else problem.system,
        residual_fn=problem.residual,
        seed=3,
        process_group=group,
        **options,
    )
    theta0 = torch.nn.utils.parameters_to_vector(problem.net.parameters()).detach().clone()
    losses, records = [], []
    for k in range(steps):
        calls = problem.calls
        before = torch.nn.utils.parameters_to_vector(problem.net.parameters()).clone()
        losses.append(float(opt.step()))
        after = torch.nn.utils.parameters_to_vector(problem.net.parameters())
        info = opt.last_step
        records.append(
            {
                "update": (after - before).detach().clone(),
                "bytes": opt.last_step_bytes,
                "log": [] if opt.communication is None else list(opt.communication.log),
                "evaluations": problem.calls - calls,
                "trials": int(info.trials),
                "iterations": info.direction.iterations,
                "rank": info.rank,
                "status": int(info.status),
            }
        )
        if opt.communication is not None:
            opt.communication.log.clear()
        if k == 0:
            first = records[0]["update"]
    state = opt.state[next(iter(problem.net.parameters()))]
    return {
        "theta0": theta0,
        "first_update": first,
        "losses": losses,
        "records": records,
        "skipped": int(state["skipped"]),
    }


def main(rank: int, world: int, out: str, init_file: str) -> None:
    try:
        _main(rank, world, out, init_file)
    except BaseException:
        with open(os.path.join(out, f"rank{rank}.err"), "w") as f:
            f.write(traceback.format_exc())
        raise


def _main(rank: int, world: int, out: str, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),
    )
    group = dist.group.WORLD
    results: dict = {"sharded": {}, "rows": int(Problem(world, rank).x.shape[0])}
    for name in CONFIGS:
        results["sharded"][name] = run_optimizer(name, Problem(world, rank), group)

    # a non-finite residual on the last rank only: every rank skips that step
    problem = Problem(world, rank)
    import sketchlinalg_torch as slt

    opt = slt.SNGD(
        problem.net.named_parameters(), problem.system, residual_fn=problem.residual, rank=8,
        seed=3,
        process_group=group,
    )  # fmt: skip
    opt.step()
    problem.poison = rank == world - 1
    before = torch.nn.utils.parameters_to_vector(problem.net.parameters()).clone()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.step()
    after = torch.nn.utils.parameters_to_vector(problem.net.parameters())
    problem.poison = False
    state = opt.state[next(iter(problem.net.parameters()))]
    results["nonfinite"] = {
        "skipped": int(state["skipped"]),
        "status": int(opt.last_step.status),
        "moved": float((after - before).detach().abs().max()),
    }
    opt.step()  # and the run goes on
    results["nonfinite"]["after"] = int(state["status"])

    # different seeds on different ranks: refused on every rank
    try:
        slt.SNGD(
            problem.net.named_parameters(), residual_fn=problem.residual, seed=rank,
            process_group=group,
        )  # fmt: skip
        results["seed_check"] = "accepted"
    except ValueError as e:
        results["seed_check"] = str(e)
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
