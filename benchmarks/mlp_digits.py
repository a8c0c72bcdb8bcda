"""Gauss–Newton training of a 50k-parameter MLP on sklearn's digits: loss vs wall time.

Model: tanh MLP 64 -> 256 -> 128 -> 10 (50,826 parameters), float64, trained on 75% of the
8x8 digits (1,347 images) with the squared loss on one-hot targets, i.e. the residual
``r = (MLP(X) - onehot(y)) / sqrt(N)`` (13,470 residuals) and ``L = 1/2 ||r||^2``. The
Jacobian (13,470 x 50,826, 5.5 GB) is never formed: products with ``J`` / ``J^T`` are
batched JVPs / VJPs compiled once by JAX.

Methods, each given the same wall-time budget (the run is stopped from inside the residual
function when the budget is spent; the curve is the best loss seen so far):

* ``sketchlinalg-lm-nystrom-pcg``: :func:`sketchlinalg.least_squares` with the matrix-free
  Jacobian operator and ``direction="nystrom-pcg"``: the damped Gauss–Newton system solved
  by CG (at most ``--cg-maxiter`` iterations, rtol 1e-2) preconditioned with a rank
  ``--rank`` Nystrom sketch of ``J^T J`` (fresh each step); Nielsen's damping;
* ``sketchlinalg-lm-nystrom``: the same with ``direction="nystrom"`` (the sketched inverse
  alone, no CG);
* ``scipy-trf-lsmr``: ``scipy.optimize.least_squares(method="trf", tr_solver="lsmr")`` with
  the same products as a ``scipy.sparse.linalg.LinearOperator`` (LSMR capped at
  ``--lsmr-maxiter`` iterations per step);
* ``adam-lr1e-3`` and ``adam-lr1e-2``: full-batch Adam (optax), one jitted step each.

Run: ``OPENBLAS_NUM_THREADS=1 python -m benchmarks.mlp_digits [--budget-s 120] [--rank 50]``
Writes ``benchmarks/results/mlp_digits.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import scipy.optimize  # noqa: E402
import scipy.sparse.linalg  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import sketchlinalg as sl  # noqa: E402

from ._common import machine_info, markdown_table, write_json, write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = (64, 256, 128, 10)


class _TimeUp(Exception):
    """Raised from the residual when the wall-time budget is spent."""


def _mlp(params: list[tuple[jax.Array, jax.Array]], X: jax.Array) -> jax.Array:
    h = X
    for W, b in params[:-1]:
        h = jnp.tanh(h @ W + b)
    W, b = params[-1]
    return h @ W + b


def _init(seed: int) -> list[tuple[jax.Array, jax.Array]]:
    key = jax.random.key(seed)
    params = []
    for fan_in, fan_out in itertools.pairwise(SIZES):
        key, sub = jax.random.split(key)
        W = jax.random.normal(sub, (fan_in, fan_out), dtype=jnp.float64) / math.sqrt(fan_in)
        params.append((W, jnp.zeros(fan_out, dtype=jnp.float64)))
    return params


class _Logger:
    """Records (seconds since start, loss) of every evaluation and the best parameters."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.start = time.perf_counter()
        self.times: list[float] = []
        self.losses: list[float] = []
        self.best_loss = math.inf
        self.best: Any = None

    def __call__(self, loss: float, theta: Any) -> None:
        elapsed = time.perf_counter() - self.start
        if math.isfinite(loss) and loss < self.best_loss:
            self.best_loss, self.best = loss, theta
        self.times.append(elapsed)
        self.losses.append(self.best_loss)
        if elapsed > self.budget_s:
            raise _TimeUp


def main(argv: list[str] | None = None) -> int:
    """Train with every method and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=120.0)
    parser.add_argument("--rank", type=int, default=50)
    parser.add_argument("--cg-maxiter", type=int, default=30)
    parser.add_argument("--lsmr-maxiter", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X / 16.0, y, test_size=0.25, random_state=0)
    Xt, Xv = jnp.asarray(X_tr), jnp.asarray(X_te)
    Y1 = jax.nn.one_hot(jnp.asarray(y_tr), 10, dtype=jnp.float64)
    params0 = _init(args.seed)
    flat0, unravel = ravel_pytree(params0)
    n_train, P = Xt.shape[0], int(flat0.shape[0])
    scale = 1.0 / math.sqrt(n_train)

    def residual(theta: jax.Array) -> jax.Array:
        return jnp.ravel((_mlp(unravel(theta), Xt) - Y1) * scale)

    residual_jit = jax.jit(residual)
    m = int(jax.eval_shape(residual, flat0).shape[0])

    @jax.jit
    def jvp_block(theta: jax.Array, V: jax.Array) -> jax.Array:
        def one(v: jax.Array) -> jax.Array:
            return jax.jvp(residual, (theta,), (v,))[1]

        return jax.vmap(one, in_axes=1, out_axes=1)(V)

    @jax.jit
    def vjp_block(theta: jax.Array, U: jax.Array) -> jax.Array:
        _, pullback = jax.vjp(residual, theta)
        return jax.vmap(lambda u: pullback(u)[0], in_axes=1, out_axes=1)(U)

    def accuracy(theta: Any) -> float:
        pred = jnp.argmax(_mlp(unravel(jnp.asarray(theta)), Xv), axis=1)
        return float(jnp.mean(pred == jnp.asarray(y_te)))

    # warm up the compiled functions (block widths 1 and rank) outside the budgets
    for k in (1, args.rank):
        jvp_block(flat0, jnp.zeros((P, k))).block_until_ready()
        vjp_block(flat0, jnp.zeros((m, k))).block_until_ready()
    residual_jit(flat0).block_until_ready()

    runs: dict[str, dict[str, Any]] = {}

    # -- sketchlinalg: LM with the matrix-free Jacobian, two sketched direction methods ------
    def jac_sl(theta: jax.Array) -> sl.FunctionOperator:
        return sl.FunctionOperator(
            lambda V: jvp_block(theta, V),
            lambda U: vjp_block(theta, U),
            shape=(m, P),
            dtype=jnp.float64,
            xp=jnp,
        )

    ours = {
        "sketchlinalg-lm-nystrom-pcg": (
            "nystrom-pcg",
            {"rank": args.rank, "seed": args.seed, "maxiter": args.cg_maxiter, "rtol": 1e-2},
        ),
        "sketchlinalg-lm-nystrom": ("nystrom", {"rank": args.rank, "seed": args.seed}),
    }
    info: dict[str, Any] = {}
    for name, (direction, options) in ours.items():
        log = _Logger(args.budget_s)

        def fun_sl(theta: jax.Array, log: _Logger = log) -> jax.Array:
            r = residual_jit(theta)
            log(0.5 * float(r @ r), theta)
            return r

        try:
            res = sl.least_squares(
                fun_sl,
                flat0,
                jac_sl,
                direction=direction,
                direction_options=options,
                x_scale=1.0,
                ftol=1e-15,
                xtol=1e-15,
                gtol=1e-15,
                max_nfev=10**6,
            )
            info = {"status": res.status, "message": res.message, "nfev": res.nfev}
        except _TimeUp:
            info = {"status": "time budget spent", "nfev": len(log.times)}
        runs[name] = _summary(log, accuracy, info)
        print(f"{name}: {runs[name]['final_loss']:.4g}", flush=True)

    # -- scipy trf + lsmr with the same matrix-free products -------------------------------
    log = _Logger(args.budget_s)

    def fun_sp(theta: np.ndarray) -> np.ndarray:
        r = np.asarray(residual_jit(jnp.asarray(theta)))
        log(0.5 * float(r @ r), theta.copy())
        return r

    def jac_sp(theta: np.ndarray) -> scipy.sparse.linalg.LinearOperator:
        t = jnp.asarray(theta)
        return scipy.sparse.linalg.LinearOperator(
            (m, P),
            matvec=lambda v: np.asarray(jvp_block(t, jnp.asarray(v).reshape(P, 1)))[:, 0],
            rmatvec=lambda u: np.asarray(vjp_block(t, jnp.asarray(u).reshape(m, 1)))[:, 0],
            dtype=np.float64,
        )

    try:
        res_sp = scipy.optimize.least_squares(
            fun_sp,
            np.asarray(flat0),
            jac=jac_sp,
            method="trf",
            tr_solver="lsmr",
            tr_options={"maxiter": args.lsmr_maxiter},
            ftol=1e-15,
            xtol=1e-15,
            gtol=1e-15,
            max_nfev=10**6,
        )
        info = {"status": int(res_sp.status), "message": res_sp.message, "nfev": res_sp.nfev}
    except _TimeUp:
        info = {"status": "time budget spent", "nfev": len(log.times)}
    runs["scipy-trf-lsmr"] = _summary(log, accuracy, info)
    print(f"scipy-trf-lsmr: {runs['scipy-trf-lsmr']['final_loss']:.4g}", flush=True)

    # -- Adam ----------------------------------------------------------------------------
    def loss_fn(theta: jax.Array) -> jax.Array:
        r = residual(theta)
        return 0.5 * r @ r

    for lr in (1e-3, 1e-2):
        opt = optax.adam(lr)

        @jax.jit
        def step(theta: jax.Array, state: Any, opt: Any = opt) -> tuple[Any, Any, jax.Array]:
            loss, grad = jax.value_and_grad(loss_fn)(theta)
            updates, state = opt.update(grad, state, theta)
            return optax.apply_updates(theta, updates), state, loss

        theta, state = flat0, opt.init(flat0)
        step(theta, state)[2].block_until_ready()  # compile outside the budget
        log = _Logger(args.budget_s)
        steps = 0
        try:
            while True:
                new_theta, state, loss = step(theta, state)
                log(float(loss), theta)  # the loss of theta, before the update
                theta = new_theta
                steps += 1
        except _TimeUp:
            pass
        name = f"adam-lr{lr:.0e}".replace("e-0", "e-")
        runs[name] = _summary(log, accuracy, {"steps": steps})
        print(f"{name}: {runs[name]['final_loss']:.4g}", flush=True)

    machine = machine_info(ROOT)
    command = "OPENBLAS_NUM_THREADS=1 python -m benchmarks.mlp_digits" + (
        f" --budget-s {args.budget_s:g}" if args.budget_s != 120.0 else ""
    )
    meta = {
        "command": command,
        "machine": machine,
        "problem": {
            "model": f"tanh MLP {list(SIZES)}",
            "parameters": P,
            "residuals": m,
            "train_images": n_train,
            "test_images": int(Xv.shape[0]),
            "loss": "1/2 ||(MLP(X) - onehot(y)) / sqrt(N)||^2",
            "dtype": "float64",
        },
        "settings": {
            "budget_s": args.budget_s,
            "rank": args.rank,
            "cg_maxiter": args.cg_maxiter,
            "cg_rtol": 1e-2,
            "lsmr_maxiter": args.lsmr_maxiter,
            "seed": args.seed,
        },
    }
    write_json(args.out / "mlp_digits.json", {**meta, "runs": runs})
    _plot(runs, meta, args.out / "mlp_digits.png")
    rows = [
        [
            f"`{name}`",
            f"{r['final_loss']:.4g}",
            f"{r['test_accuracy']:.3f}",
            str(r["evaluations"]),
            str(r["info"].get("status", "")),
        ]
        for name, r in runs.items()
    ]
    text = (
        "# Gauss–Newton training of a 50k-parameter MLP on digits: loss vs wall time\n\n"
        f"Command: `{command}`\n\n"
        f"Machine: {machine.get('cpu_model')} ({machine.get('cpu_count')} CPUs, load "
        f"{machine.get('load_average_1_5_15min')}), jax {machine['versions'].get('jax')}, "
        f"scipy {machine['versions'].get('scipy')}; {machine.get('date_utc')}.\n\n"
        f"tanh MLP {list(SIZES)}: {P} parameters, {m} residuals ({n_train} training "
        f"images x 10 one-hot outputs), float64; budget {args.budget_s:g} s of wall time "
        f"per method; sketch rank {args.rank}; Nystrom-PCG at most {args.cg_maxiter} CG "
        f"iterations (rtol 1e-2) per step; LSMR at most {args.lsmr_maxiter} iterations per "
        "trf step. The loss is the best training loss reached (evaluations of the "
        "residual, or Adam steps); `mlp_digits.png` plots it against time.\n\n"
        + markdown_table(
            ["method", "final loss", "test accuracy", "evaluations / steps", "status"], rows
        )
        + "\n"
    )
    write_text(args.out / "mlp_digits.md", text)
    return 0


def _summary(log: _Logger, accuracy: Callable[[Any], float], info: dict[str, Any]) -> dict:
    return {
        "times_s": log.times,
        "best_loss": log.losses,
        "final_loss": log.best_loss,
        "test_accuracy": accuracy(log.best) if log.best is not None else float("nan"),
        "evaluations": len(log.times),
        "info": info,
    }


def _plot(runs: dict[str, dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in runs.items():
        ax.plot(r["times_s"], r["best_loss"], label=f"{name} (test acc {r['test_accuracy']:.3f})")
    ax.set_xlabel("wall time [s]")
    ax.set_ylabel("training loss 1/2 ||r||^2 (best so far)")
    ax.set_yscale("log")
    prob = meta["problem"]
    ax.set_title(f"digits, {prob['model']}, {prob['parameters']} parameters", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
