"""Poisson 2D trained data-parallel: the collocation points sharded over every device.

The problem, network and terms of ``examples/jax_poisson2d.py`` (``-Laplace u = f`` on
``(0, 1)^2``, ``u = 0`` on the boundary), with the points of each term split over a mesh
axis ``"data"`` of all devices (``pinn_system(..., sharding=...)``). Under ``jax.jit`` each
device builds the Jacobian rows of its own points; the step then needs one all-reduce of a
``P x (l+1)`` block and the loss (SNGD), plus one of ``P`` per CG iteration (Nystrom-PCG),
or of ``J^T J`` (ENGD): ``J`` is never gathered. The residual-space methods
(``engd-woodbury``, ``spring``) all-gather ``J`` once to form their ``N x N`` kernel. The
sketch, its factorization and the update are computed replicated from one PRNG key.

Run on one machine (here: 4 CPU devices standing in for 4 accelerators)::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python examples/jax_multi_device.py

Several hosts: start the same command on each (one process per host, all devices of the
host), with ``--distributed``: it calls ``jax.distributed.initialize()`` first (on Slurm
or Cloud TPU the coordinator is found from the environment; else set
``JAX_COORDINATOR_ADDRESS=host:port``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, or
pass them to ``initialize``). The mesh then spans ``jax.devices()`` of all hosts; every
process builds the same global point arrays (``jax.make_array_from_callback`` reads only
the rows of its own devices) and runs the same program; only process 0 prints.

Options: ``--optimizer {sngd, nystrom-pcg, engd, engd-woodbury, spring}``, ``--steps``,
``--n-side`` (interior grid side; a multiple of the device count), ``--width``,
``--rank``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import optax  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as PS  # noqa: E402


def _poisson2d() -> Any:
    """``examples/jax_poisson2d.py`` (the problem's terms, the network, its error)."""
    name = "jax_poisson2d"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def shard_rows(points: jax.Array, sharding: NamedSharding) -> jax.Array:
    """A global array of ``points`` split by rows; each process fills only its own devices'
    rows (so it also works on several hosts)."""
    host = np.asarray(points)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def train(args: argparse.Namespace) -> dict[str, Any]:
    """``--steps`` sharded steps; print the loss of each."""
    ex = _poisson2d()
    devices = jax.device_count()
    if args.n_side % devices:
        raise SystemExit(f"--n-side {args.n_side} must be a multiple of the {devices} devices")
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(AxisType.Auto,))
    rows = NamedSharding(mesh, PS("data"))
    replicated = NamedSharding(mesh, PS())
    terms = ex.make_terms(args.n_side)
    points = [shard_rows(t.points, rows) for t in terms]
    system = functools.partial(slj.pinn_system, ex.mlp, terms=terms, sharding=rows)
    residual = functools.partial(slj.pinn_residual, ex.mlp, terms=terms, sharding=rows)
    factories: dict[str, Callable[..., Any]] = {
        "sngd": functools.partial(slj.sngd, rank=args.rank),
        "nystrom-pcg": functools.partial(slj.nystrom_pcg, rank=args.rank),
        "engd": slj.engd,
        "engd-woodbury": slj.engd_woodbury,
        "spring": slj.spring,
    }
    opt = factories[args.optimizer](system, residual_fn=residual, seed=args.seed)
    params = ex.init_mlp(jax.random.key(args.seed), [2, args.width, args.width, 1], "torch")
    params = jax.device_put(params, replicated)
    state = jax.device_put(opt.init(params), replicated)

    @jax.jit
    def step(params: Any, state: slj.NGDState, points: list[jax.Array]) -> Any:
        updates, state = opt.update(None, state, params, points=points)
        return optax.apply_updates(params, updates), state

    main = jax.process_index() == 0
    n_points = sum(int(p.shape[0]) for p in points)
    n_params = sum(int(W.size + b.size) for W, b in params)
    if main:
        print(
            f"Poisson 2D | {args.optimizer} | P={n_params} parameters, N={n_points} points "
            f"sharded over {devices} devices ({jax.process_count()} process(es), "
            f"{n_points // devices} points each) | float64",
            flush=True,
        )
    t0 = time.perf_counter()
    losses = []
    for it in range(1, args.steps + 1):
        params, state = step(params, state, points)
        loss = float(state.loss)  # the loss at the start of this step
        losses.append(loss)
        if main:
            print(
                f"step {it:4d} | loss {loss:.6e} | step size {float(state.step_size):.3g} | "
                f"skipped {int(state.skipped)} | {time.perf_counter() - t0:6.1f} s",
                flush=True,
            )
    err = ex.relative_l2_error(jax.device_get(params))
    if main:
        print(f"done: relative L2 error {err:.3e}")
    return {"losses": losses, "rel_l2": err, "devices": devices}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--optimizer",
        default="sngd",
        choices=["sngd", "nystrom-pcg", "engd", "engd-woodbury", "spring"],
    )
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--n-side", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--rank", type=int, default=None, help="sketch size (default: adaptive)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--distributed", action="store_true", help="call jax.distributed.initialize() first"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point."""
    args = parse(argv)
    if args.distributed:
        jax.distributed.initialize()
    return train(args)


if __name__ == "__main__":
    main()
