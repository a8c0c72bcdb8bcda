"""Sharded JAX steps on 4 CPU devices, checked against one device (run in a subprocess).

``python tests/_distributed_jax_cases.py`` sets ``XLA_FLAGS`` to 4 host devices before JAX
is imported (a pytest session has already imported JAX with one device, hence the
subprocess: ``tests/test_distributed_jax.py``) and prints one JSON object: per method the
relative difference of the sharded and the single-device update, the collectives of the
compiled sharded step (from its HLO) and the communication model; per method the loss
curves of a 20-step run on one device and sharded (of a noisy fit: ``fit_terms``); the
update and the state of a step with one shard's residual non-finite.
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import functools
import json
from pathlib import Path
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as PS  # noqa: E402

import sketchlinalg as sl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import jax_poisson2d as ex  # noqa: E402

from benchmarks.scaling import collectives  # noqa: E402  (the one HLO parser)

DEVICES = 4
RANK = 12
WIDTH = 8
N_SIDE = 8  # 64 interior + 32 boundary points: N = 96, both multiples of 4
FIT_WIDTH = 4  # the 20-step runs: P = 37 < N = 96


def model(method: str, N: int, P: int, rank: int) -> dict[str, Any]:
    """The communication of one sharded step by method (static HLO: loop bodies once).

    Row-space methods move no row-sized array: ``sngd`` one all-reduce of the ``P x (l+1)``
    block ``[J^T (J Omega), J^T r]`` with the loss (``P (l+1) + 1`` elements);
    ``nystrom-pcg`` that, plus one all-reduce of ``P`` (``J^T (J p)``) per CG iteration;
    ``engd`` one all-reduce of ``J^T J``, ``J^T r`` and the loss (``P^2 + P + 1``).
    Every other collective is a scalar all-reduce: a trial loss of the line search (or of the
    damping's gain ratio); XLA may also reduce the loss apart from its block. Residual-space
    methods (``engd-woodbury``, ``spring``) form the ``N x N`` kernel from all of ``J``: the
    optimizer gathers ``[J, r]`` once (``N (P + 1)`` elements) and runs them replicated,
    so every other collective is a scalar trial loss. Sizes are per device (the compiled
    module is the program of one device).
    """
    if method in ("sngd", "sngd-matrix-free", "sngd-chunked"):  # matrix-free: by VJPs
        return {"blocks": [P * (rank + 1) + 1], "per_cg_iteration": None}
    if method == "nystrom-pcg":
        return {"blocks": [P * (rank + 1) + 1], "per_cg_iteration": P}
    if method == "engd":
        return {"blocks": [P * P + P + 1], "per_cg_iteration": None}
    if method == "sngd-adaptive":  # per rung l: P (l+1) + 1; the exact top rung gathers J
        return {}
    return {"gathered": N * (P + 1)}


def fit_terms(points: list[jax.Array]) -> list[slj.Term]:
    """Fit noisy samples of a teacher MLP (``FIT_WIDTH``) at ``points``, one term per set:
    each point carries its target as a third coordinate. With fewer parameters than points
    and noise in the targets, the loss stays away from zero (a Poisson residual that the
    network can interpolate heads to zero with a vanishing damping, and there roundoff
    grows about 10x per step into relative differences of the loss)."""
    teacher = ex.init_mlp(jax.random.key(1), [2, FIT_WIDTH, FIT_WIDTH, 1], "torch")
    terms = []
    for i, x in enumerate(points):
        noise = jax.random.normal(jax.random.key(5 + i), (x.shape[0],))
        y = jax.vmap(functools.partial(ex.mlp, teacher))(x).reshape(-1) + 0.1 * noise
        data = jnp.concatenate([x, y[:, None]], axis=1)
        terms.append(slj.Term(lambda u, x: u(x[:2]) - x[2], data, name=f"fit{i}"))
    return terms


def flat(tree: Any) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def main() -> dict[str, Any]:
    assert len(jax.devices()) == DEVICES, jax.devices()
    mesh = jax.make_mesh((DEVICES,), ("data",), axis_types=(AxisType.Auto,))
    rows = NamedSharding(mesh, PS("data"))
    replicated = NamedSharding(mesh, PS())
    params = ex.init_mlp(jax.random.key(0), [2, WIDTH, WIDTH, 1], "torch")
    terms = ex.make_terms(N_SIDE)
    points = [t.points for t in terms]
    sharded_points = [jax.device_put(p, rows) for p in points]
    N = sum(int(p.shape[0]) for p in points)
    P = int(flat(params).size)
    factories = {
        "sngd": functools.partial(slj.sngd, rank=RANK),
        "nystrom-pcg": functools.partial(slj.nystrom_pcg, rank=RANK),
        "engd": slj.engd,
        "engd-woodbury": slj.engd_woodbury,
        "spring": slj.spring,
        "sngd-adaptive": slj.sngd,  # the defaults: the sketch size adapts
        "sngd-matrix-free": functools.partial(slj.sngd, rank=RANK),
        "sngd-chunked": functools.partial(slj.sngd, rank=RANK),  # chunks of 5 points per shard
    }

    fit = fit_terms(points)
    fit_points = [t.points for t in fit]
    sharded_fit_points = [jax.device_put(p, rows) for p in fit_points]
    fit_params = ex.init_mlp(jax.random.key(0), [2, FIT_WIDTH, FIT_WIDTH, 1], "torch")

    def optimizer(method: str, sharding: Any, terms: list[slj.Term] = terms, **kw: Any) -> Any:
        path = "matrix-free" if method.endswith("matrix-free") else "auto"
        chunk = 5 if method.endswith("chunked") else None
        system = functools.partial(
            slj.pinn_system, ex.mlp, terms=terms, sharding=sharding, path=path, chunk_size=chunk
        )
        residual = functools.partial(slj.pinn_residual, ex.mlp, terms=terms, sharding=sharding)
        return factories[method](system, residual_fn=residual, seed=3, **kw)

    def stepper(opt: Any) -> Any:
        @jax.jit
        def step(params: Any, state: Any, points: Any) -> Any:
            updates, state = opt.update(None, state, params, points=points)
            return updates, optax.apply_updates(params, updates), state

        return step

    result: dict[str, Any] = {"N": N, "P": P, "rank": RANK, "devices": DEVICES, "methods": {}}
    sngd_steps: Any = None
    for method in factories:
        one, many = optimizer(method, None), optimizer(method, rows)
        state = one.init(params)
        step1, stepN = stepper(one), stepper(many)
        u1, p1, s1 = step1(params, state, points)
        # a second step too: SPRING's momentum and the adapted damping / rank enter there
        u1b, _, _ = step1(p1, s1, points)
        p_r, s_r = jax.device_put((params, state), replicated)
        compiled = stepN.lower(p_r, s_r, sharded_points).compile()
        uN, pN, sN = compiled(p_r, s_r, sharded_points)
        uNb, _, _ = compiled(pN, sN, sharded_points)
        if method == "sngd":
            sngd_steps = step1, compiled
        # 20 steps of the noisy fit: the sharded run follows the single-device loss curve.
        # CG to a tight tolerance: where it stops at sqrt(eps) (the default), a rounding
        # difference can change its iteration count, and with it the direction
        kw = {"rtol": 1e-12} if method == "nystrom-pcg" else {}
        one_fit, many_fit = optimizer(method, None, fit, **kw), optimizer(method, rows, fit, **kw)
        fit_state = one_fit.init(fit_params)
        fp_r, fs_r = jax.device_put((fit_params, fit_state), replicated)
        curves = {}
        for name, step, p, s, pts in (
            ("one", stepper(one_fit), fit_params, fit_state, fit_points),
            ("sharded", stepper(many_fit), fp_r, fs_r, sharded_fit_points),
        ):
            losses = []
            for _ in range(20):
                _, p, s = step(p, s, pts)
                losses.append(float(s.loss))
            curves[name] = losses
        a, b = flat(u1), flat(uN)
        a2, b2 = flat(u1b), flat(uNb)
        leaves = jax.tree.leaves(uN)
        result["methods"][method] = {
            "rel_diff": float(np.linalg.norm(a - b) / np.linalg.norm(a)),
            "rel_diff_second": float(np.linalg.norm(a2 - b2) / np.linalg.norm(a2)),
            "update_norm": float(np.linalg.norm(a)),
            "replicated": all(x.sharding.is_fully_replicated for x in leaves),
            "collectives": collectives(compiled.as_text()),
            "model": model(method, N, P, RANK),
            "curves": curves,
        }
    state = factories["sngd"](lambda p: None, seed=3).init(params)

    # one shard's residual non-finite: the whole step is skipped on every device
    interior = np.array(points[0])
    interior[3 * N_SIDE * N_SIDE // DEVICES + 1] = np.nan  # a point of the last shard
    bad = [jax.device_put(jnp.asarray(interior), rows), sharded_points[1]]
    p_r, s_r = jax.device_put((params, state), replicated)
    u, _, s = sngd_steps[1](p_r, s_r, bad)
    shards = [np.asarray(x.data) for leaf in jax.tree.leaves(u) for x in leaf.addressable_shards]
    result["nonfinite"] = {
        "all_zero": all(bool(np.all(x == 0)) for x in shards),
        "skipped": int(s.skipped),
        "status": int(s.status),
        "status_nonfinite": int(sl.Status.NONFINITE),
        "loss_finite": bool(np.isfinite(float(s.loss))),
    }

    # refused: an eager step on sharded rows; a term whose points do not split evenly
    opt = optimizer("sngd", rows)
    errors = {}
    try:
        opt.update(None, s_r, p_r, points=sharded_points)
    except ValueError as exc:
        errors["eager"] = str(exc)
    try:
        slj.pinn_system(ex.mlp, params, terms, points=[points[0][:10], points[1]], sharding=rows)
    except ValueError as exc:
        errors["uneven"] = str(exc)
    result["errors"] = errors
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
