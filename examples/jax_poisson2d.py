"""Poisson 2D with a sketched natural gradient (SNGD) in JAX + optax: the README's main job.

Problem: ``-Laplace u = 2 pi^2 sin(pi x) sin(pi y)`` on ``(0, 1)^2``, ``u = 0`` on the
boundary, exact solution ``u* = sin(pi x) sin(pi y)``. A ``[2, 64, 64, 1]`` tanh MLP (4,417
parameters) is trained on a 30 x 30 interior grid (900 points) and 30 points per boundary
edge (120), in float64, with SNGD at the library's defaults (sketch size and damping adapt;
ENGD's 31-point grid line search). The relative L2 error is measured on a 100 x 100 grid;
each progress line (:func:`sketchlinalg.step_summary`: loss, step size, damping, sketch
size, skipped steps, status) ends with the last one and the step it was taken at.

Run: ``python examples/jax_poisson2d.py [--budget SECONDS] [--steps N] [--rank R] ...``
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import sys
import time
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402

import sketchlinalg as sl  # noqa: E402

PI = math.pi
Params = list[tuple[jax.Array, jax.Array]]


def init_mlp(key: jax.Array, sizes: list[int], scheme: str) -> Params:
    """Weights and biases of a tanh MLP.

    ``"torch"``: PyTorch's default, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and
    biases; ``"normal"``: ``N(0, 1/fan_in)`` weights, zero biases; ``"glorot"``: Glorot normal
    weights, zero biases.
    """
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        key, kw, kb = jax.random.split(key, 3)
        if scheme == "torch":
            bound = 1 / math.sqrt(fan_in)
            W = jax.random.uniform(kw, (fan_out, fan_in), minval=-bound, maxval=bound)
            b = jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound)
        elif scheme == "normal":
            W = jax.random.normal(kw, (fan_out, fan_in)) / math.sqrt(fan_in)
            b = jnp.zeros(fan_out)
        elif scheme == "glorot":
            W = jax.random.normal(kw, (fan_out, fan_in)) * math.sqrt(2 / (fan_in + fan_out))
            b = jnp.zeros(fan_out)
        else:
            raise ValueError(f"unknown init scheme {scheme!r}")
        params.append((W, b))
    return params


def mlp(params: Params, x: jax.Array) -> jax.Array:
    """The network at one point ``x`` of shape (2,): a scalar."""
    h = x
    for W, b in params[:-1]:
        h = jnp.tanh(W @ h + b)
    W, b = params[-1]
    return (W @ h + b)[0]


def exact(x: jax.Array) -> jax.Array:
    """``u*(x, y) = sin(pi x) sin(pi y)``."""
    return jnp.sin(PI * x[..., 0]) * jnp.sin(PI * x[..., 1])


def make_terms(n_side: int = 30) -> list[slj.Term]:
    """Interior grid (``n_side^2`` points, weight |Omega| = 1) and boundary points
    (``n_side`` per edge, weight |dOmega| = 4)."""
    g = (jnp.arange(n_side) + 0.5) / n_side
    X, Y = jnp.meshgrid(g, g, indexing="ij")
    interior = jnp.stack([X.ravel(), Y.ravel()], axis=1)
    s = jnp.linspace(0.0, 1.0, n_side, endpoint=False)
    zero, one = jnp.zeros_like(s), jnp.ones_like(s)
    boundary = jnp.concatenate(
        [
            jnp.stack([s, zero], 1),
            jnp.stack([one, s], 1),
            jnp.stack([1 - s, one], 1),
            jnp.stack([zero, 1 - s], 1),
        ]
    )

    def f(x: jax.Array) -> jax.Array:
        return 2 * PI**2 * exact(x)

    return [
        slj.Term(lambda u, x: -slj.laplacian(u, x) - f(x), interior, weight=1.0, name="interior"),
        slj.Term(lambda u, x: u(x), boundary, weight=4.0, name="boundary"),
    ]


@functools.partial(jax.jit, static_argnames="n_eval")
def _relative_l2_error(params: Params, n_eval: int) -> jax.Array:
    g = (jnp.arange(n_eval) + 0.5) / n_eval
    X, Y = jnp.meshgrid(g, g, indexing="ij")
    pts = jnp.stack([X.ravel(), Y.ravel()], axis=1)
    u = jax.vmap(functools.partial(mlp, params))(pts)
    ref = exact(pts)
    return jnp.linalg.norm(u - ref) / jnp.linalg.norm(ref)


def relative_l2_error(params: Params, n_eval: int = 100) -> float:
    """``||u - u*|| / ||u*||`` on an ``n_eval x n_eval`` grid of (0, 1)^2 (compiled: a few
    milliseconds, so every progress line can show a fresh one)."""
    return float(_relative_l2_error(params, n_eval))


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train until ``--steps`` steps or ``--budget`` seconds; return a summary."""
    params = init_mlp(jax.random.key(args.seed), [2, args.width, args.width, 1], args.init)
    terms = make_terms(args.n_side)
    system = functools.partial(slj.pinn_system, mlp, terms=terms)
    residual = functools.partial(slj.pinn_residual, mlp, terms=terms)
    common: dict[str, Any] = {
        "damping": args.damping,
        "residual_fn": residual,
        "line_search": args.line_search,
    }
    factories = {
        "sngd": lambda: slj.sngd(system, rank=args.rank, seed=args.seed, **common),
        "nystrom-pcg": lambda: slj.nystrom_pcg(system, rank=args.rank, seed=args.seed, **common),
        "engd": lambda: slj.engd(system, **common),
        "engd-woodbury": lambda: slj.engd_woodbury(system, **common),
    }
    opt = factories[args.optimizer]()
    state = opt.init(params)
    n_params = sum(W.size + b.size for W, b in params)
    n_points = sum(t.points.shape[0] for t in terms)

    @jax.jit
    def step(params: Params, state: slj.NGDState) -> tuple[Params, slj.NGDState]:
        updates, state = opt.update(None, state, params)
        return optax.apply_updates(params, updates), state

    print(
        f"Poisson 2D | {args.optimizer} rank={args.rank or 'adaptive'} "
        f"damping={args.damping or 'adaptive'} | "
        f"P={n_params} parameters, N={n_points} points, init={args.init}, float64 | "
        "compiling the step...",
        file=sys.stderr,
        flush=True,
    )
    t0 = time.perf_counter()
    params, state = step(params, state)  # compiles
    jax.block_until_ready(params)
    compile_s = time.perf_counter() - t0
    it = 1
    err, err_step = relative_l2_error(params), 1

    def progress() -> None:
        elapsed = time.perf_counter() - t0
        print(
            f"step {it:5d} | {elapsed:6.1f} s | {sl.step_summary(state)} | "
            f"rel. L2 {err:.2e} (at step {err_step})",
            file=sys.stderr,
            flush=True,
        )

    progress()  # the first line: the step compiled and ran
    while it < args.steps and time.perf_counter() - t0 < args.budget:
        params, state = step(params, state)
        jax.block_until_ready(params)  # dispatch is asynchronous: time finished steps only
        it += 1
        if args.eval_every and it % args.eval_every == 0:
            err, err_step = relative_l2_error(params), it
        if it % args.print_every == 0 or it == args.steps:
            progress()
    jax.block_until_ready(params)
    wall = time.perf_counter() - t0
    err = relative_l2_error(params)
    summary = {
        "optimizer": args.optimizer,
        "steps": it,
        "wall_s": wall,
        "compile_s": compile_s,
        "rel_l2": err,
        "loss": float(state.loss),
        "n_params": int(n_params),
        "n_points": int(n_points),
        "skipped": int(state.skipped),
    }
    print(
        f"done: {it} steps in {wall:.1f} s (first step incl. compilation {compile_s:.1f} s), "
        f"relative L2 error {err:.3e}, loss {float(state.loss):.3e}"
    )
    return summary


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--optimizer", default="sngd", choices=["sngd", "nystrom-pcg", "engd", "engd-woodbury"]
    )
    p.add_argument("--budget", type=float, default=60.0, help="training wall-time budget [s]")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--rank", type=int, default=None, help="sketch size (default: adaptive)")
    p.add_argument("--damping", type=float, default=None, help="fixed mu (default: adaptive)")
    p.add_argument("--line-search", default="grid", choices=["grid", "armijo"])
    p.add_argument("--init", default="torch", choices=["torch", "normal", "glorot"])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--n-side", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--print-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=10, help="L2 error every k steps (untimed)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point."""
    return train(parse(argv))


if __name__ == "__main__":
    main()
