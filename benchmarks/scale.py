"""Scale: SNGD on Poisson 2D with up to a million parameters, time and measured memory vs P.

Poisson 2D (benchmarks/pinn/problems.py: 30 x 30 interior grid + 120 boundary points,
N = 1,020) with a wide tanh MLP ``[2, w, w, 1]`` (``P = w^2 + 5 w + 1``: w = 98 gives
10,095, w = 314 gives 100,167, w = 1000 gives 1,005,001), float64, SNGD: a rank-100 Nystrom
approximation of ``G = J^T J`` from a Rademacher sketch, the projected inverse with damping
``mu = 1e-3``, Armijo backtracking; the Jacobian materialized in chunks of points straight
into one ``N x P`` buffer (JAX: inside the compiled step; PyTorch: ``pinn_system(out=...)``,
one buffer for all steps).

Settings, and why:

* ``mu = 1e-3``: wide networks start far from the solution, where the Gauss–Newton model is
  poor along weak directions and tiny ``mu`` makes the line search shrink the step for many
  steps. At P = 100,167 (JAX, 18 steps) the relative L2 error was 1.7e-2 with ``mu =
  1e-10``, 3.6e-4 with ``1e-4`` and 9.0e-4 with ``1e-2``.
* Rademacher sketch: cheaper to draw than Gaussian (``P x 100`` signs: 1.2 s at P = 10^6,
  normals 2.6 s; JAX, two cores); ``--sketch gaussian`` for the distribution the Nystrom
  error bounds are stated for.
* ``--allocator reuse`` (default): the child runs with glibc's malloc told to keep freed
  memory and to use transparent huge pages (``ALLOCATORS``). On this virtual machine,
  touching fresh memory is slow (first touch of 8 GB: 1-34 s); building the 1020 x 10^6
  Jacobian took 25 s in fresh pages and 4.6 s in reused ones.

Every configuration trains in its own subprocess, so that its peak resident memory
(``getrusage`` maximum RSS, measured, not estimated) is its own. Recorded per run: time of
the first step and the median of the others (JAX compiles ahead of time, ``compile_s``),
peak RSS, the RSS before the first step, the prediction of
:func:`sketchlinalg.estimate_memory` (with that RSS as the baseline), the relative L2 error
on a 100 x 100 grid after the budget, and the error trace.

Run::

    python -m benchmarks.scale --framework jax --widths 1000 --budget 600
    python -m benchmarks.scale --framework jax,torch --widths 98,314 --budget 120 --append
    python -m benchmarks.scale --framework torch --widths 1000 --chunk-size 16 --append
    python -m benchmarks.scale --quick          # CI smoke test: tiny widths, 2 steps

Writes ``benchmarks/results/scale.{json,md,png}`` (``scale_quick.*`` with ``--quick``);
``--plot-only`` redraws the table and plot from the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import machine_info, markdown_table, median, peak_rss_mib, write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"
FRAMEWORKS = ("jax", "torch")
#: Environment of the child process per ``--allocator``. ``reuse``: glibc keeps freed memory
#: in the process (no ``mmap`` chunks, no trimming) and asks for transparent huge pages, so
#: the ``N x P`` Jacobian of every step reuses the pages of the step before.
ALLOCATORS: dict[str, dict[str, str]] = {
    "reuse": {
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0:"
        "glibc.malloc.trim_threshold=1099511627776"
    },
    "system": {},
}


def n_params(width: int) -> int:
    """Parameters of ``[2, w, w, 1]``."""
    return 3 * width + (width + 1) * width + width + 1


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _run_jax(job: dict[str, Any]) -> dict[str, Any]:
    import dataclasses
    import functools

    import jax

    jax.config.update("jax_enable_x64", job["dtype"] == "float64")
    import jax.numpy as jnp
    import numpy as np
    import optax
    import sketchlinalg_jax as slj

    from .pinn._jax import _terms, init_mlp, mlp
    from .pinn.problems import make_problem

    dtype = jnp.float64 if job["dtype"] == "float64" else jnp.float32
    problem = dataclasses.replace(
        make_problem("poisson2d"), widths=[2, job["width"], job["width"], 1]
    )
    points = [jnp.asarray(p, dtype) for p in problem.points(np.random.default_rng(0), False)]
    terms = _terms(problem, points)
    params = jax.tree.map(lambda a: a.astype(dtype), init_mlp(jax.random.key(0), problem.widths))
    system = functools.partial(
        slj.pinn_system, mlp, terms=terms, path="materialized", chunk_size=job["chunk_size"]
    )
    residual = functools.partial(slj.pinn_residual, mlp, terms=terms)
    opt = slj.sngd(
        system,
        rank=job["rank"],
        damping=job["damping"],
        inverse=job["inverse"],
        sketch=job["sketch"],
        residual_fn=residual,
        line_search=job["line_search"],
        seed=0,
    )
    state = opt.init(params)

    def step_fn(params: Any, state: Any) -> Any:
        updates, state = opt.update(None, state, params)
        return optax.apply_updates(params, updates), state

    # Compiled ahead of time: the memory baseline (RSS before the first step) then holds the
    # compiled program, and the first step's time is the step's, not the compiler's.
    t0 = time.perf_counter()
    step = jax.jit(step_fn).lower(params, state).compile()
    compile_s = time.perf_counter() - t0

    X = problem.eval_points(False)
    ref = problem.exact(np, X)
    Xj = jnp.asarray(X, dtype)

    def error(params: Any) -> float:
        u = np.asarray(jax.vmap(functools.partial(mlp, params))(Xj), dtype=np.float64)
        return float(np.linalg.norm(u - ref) / np.linalg.norm(ref))

    def one(params: Any, state: Any) -> Any:
        params, state = step(params, state)
        jax.block_until_ready(params)
        return params, state, float(state.loss), float(state.step_size)

    n_points = sum(int(p.shape[0]) for p in points)
    record = {**_loop(job, params, state, one, error, n_points), "compile_s": compile_s}
    # On a GPU the resident set does not see the device's memory: record its own peak.
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    peak = (stats or {}).get("peak_bytes_in_use")
    return {
        **record,
        "device": f"{device.platform}: {getattr(device, 'device_kind', device)}",
        "device_peak_mib": None if peak is None else peak / 2**20,
    }


def _run_torch(job: dict[str, Any]) -> dict[str, Any]:
    import dataclasses
    import functools

    import numpy as np
    import sketchlinalg_torch as slt
    import torch

    from .pinn._torch import make_mlp
    from .pinn.problems import make_problem

    dtype = torch.float64 if job["dtype"] == "float64" else torch.float32
    problem = dataclasses.replace(
        make_problem("poisson2d"), widths=[2, job["width"], job["width"], 1]
    )
    model = make_mlp(problem.widths, 0).to(dtype)
    terms = []
    for spec, pts in zip(
        problem.terms, problem.points(np.random.default_rng(0), False), strict=True
    ):

        def res(u: Any, x: torch.Tensor, spec: Any = spec) -> Any:
            return spec.residual(torch, slt, u, x)

        terms.append(slt.Term(res, torch.as_tensor(pts, dtype=dtype), spec.weight, spec.name))
    # One N x P buffer for the Jacobian of every step (pinn_system's out=): a fresh 8 GB
    # tensor per step at P = 10^6 costs page faults and fragments the heap.
    n_points = sum(int(t.points.shape[0]) for t in terms)
    buffer = torch.empty((n_points, n_params(job["width"])), dtype=dtype)
    opt = slt.SNGD(
        model.named_parameters(),
        functools.partial(
            slt.pinn_system,
            model,
            terms=terms,
            path="materialized",
            chunk_size=job["chunk_size"],
            out=buffer,
        ),
        residual_fn=functools.partial(slt.pinn_residual, model, terms=terms),
        rank=job["rank"],
        damping=job["damping"],
        inverse=job["inverse"],
        sketch=job["sketch"],
        line_search=job["line_search"],
        seed=0,
    )
    X = problem.eval_points(False)
    ref = problem.exact(np, X)
    Xt = torch.as_tensor(X, dtype=dtype)
    first = next(iter(model.parameters()))

    def error(_: Any) -> float:
        with torch.no_grad():
            u = model(Xt).reshape(-1).double().numpy()
        return float(np.linalg.norm(u - ref) / np.linalg.norm(ref))

    def one(params: Any, state: Any) -> Any:
        loss = float(opt.step())
        return params, state, loss, float(opt.state[first]["step_size"])

    return _loop(job, None, None, one, error, n_points)


def _loop(job: dict[str, Any], params: Any, state: Any, one: Any, error: Any, n_points: int) -> Any:

    rss_before = _current_rss_mib()
    err0 = error(params)
    trace = [{"t": 0.0, "step": 0, "rel_l2": err0}]
    times: list[float] = []
    elapsed, loss, eta = 0.0, math.nan, math.nan
    while elapsed < job["budget"] and len(times) < job["max_steps"]:
        t0 = time.perf_counter()
        params, state, loss, eta = one(params, state)
        dt = time.perf_counter() - t0
        times.append(dt)
        elapsed += dt
        err = error(params)
        trace.append({"t": elapsed, "step": len(times), "rel_l2": err, "loss": loss, "eta": eta})
        print(
            f"[scale {job['framework']} P={job['n_params']}] step {len(times):3d}  "
            f"{dt:7.2f} s  loss {loss:.3e}  eta {eta:.1e}  rel.L2 {err:.3e}  "
            f"peak RSS {peak_rss_mib() / 1024:.2f} GiB",
            file=sys.stderr,
            flush=True,
        )
        if not math.isfinite(loss):
            break
    peak = peak_rss_mib()
    return {
        **job,
        "n_points": n_points,
        "steps": len(times),
        "wall_s": elapsed,
        "first_step_s": times[0] if times else math.nan,
        "median_step_s": median(times[1:]) if len(times) > 1 else math.nan,
        "final_loss": loss,
        "rel_l2": trace[-1]["rel_l2"],
        "initial_rel_l2": err0,
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak,
        "dense_gram_mib": job["n_params"] ** 2 * 8 / 2**20,
        "trace": trace,
    }


def with_model(record: dict[str, Any]) -> dict[str, Any]:
    """The record with the memory model's prediction (recomputed from its sizes, so that the
    table always shows the current model of :func:`sketchlinalg.estimate_memory`)."""
    import sketchlinalg as sl

    on_device = record.get("device_peak_mib") is not None
    measured = record["device_peak_mib"] if on_device else record["peak_rss_mib"]
    model = sl.estimate_memory(
        "nystrom",
        record["n_points"],
        record["n_params"],
        rank=record["rank"],
        jacobian="materialized",
        chunk_size=record["chunk_size"],
        itemsize=8 if record["dtype"] == "float64" else 4,
        # On a GPU the model is compared with the device's own peak (no host baseline).
        baseline=0 if on_device else int(record["rss_before_mib"] * 2**20),
    )
    return {
        **record,
        "model_mib": model.bytes / 2**20,
        "model_parts_mib": {k: v / 2**20 for k, v in model.parts.items()},
        "measured_mib": measured,
        "model_ratio": (model.bytes / 2**20) / measured,
    }


def _child(argv: list[str]) -> None:
    job = json.loads(argv[0])
    record = _run_jax(job) if job["framework"] == "jax" else _run_torch(job)
    Path(argv[1]).write_text(json.dumps(record))


def plot(records: list[dict[str, Any]], path: Path) -> None:
    """Median time per step and peak memory vs P, one line per framework, with the dense
    Gram matrix's memory for contrast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for fw in FRAMEWORKS:
        recs = sorted(
            (r for r in records if r["framework"] == fw and r["steps"] > 1),
            key=lambda r: r["n_params"],
        )
        if not recs:
            continue
        P = [r["n_params"] for r in recs]
        ax1.loglog(P, [r["median_step_s"] for r in recs], "o-", label=f"SNGD ({fw})")
        ax2.loglog(
            P, [r["peak_rss_mib"] / 1024 for r in recs], "o-", label=f"SNGD ({fw}), measured"
        )
        ax2.loglog(P, [r["model_mib"] / 1024 for r in recs], "x:", label=f"model ({fw})")
    Ps = sorted({r["n_params"] for r in records})
    if Ps:
        ax2.loglog(Ps, [p * p * 8 / 2**30 for p in Ps], "k--", label="dense P x P Gram (float64)")
        ax2.axhline(16, color="r", lw=0.8, label="16 GiB budget")
    ax1.set_xlabel("parameters P")
    ax1.set_ylabel("median seconds per SNGD step")
    ax2.set_xlabel("parameters P")
    ax2.set_ylabel("peak resident memory [GiB]")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("SNGD on Poisson 2D, N = 1,020 points, rank 100, float64")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def slope(records: list[dict[str, Any]], fw: str) -> float | None:
    """Least-squares slope of log(median step time) vs log(P)."""
    import numpy as np

    recs = [r for r in records if r["framework"] == fw and r["steps"] > 1]
    if len(recs) < 2:
        return None
    x = np.log([r["n_params"] for r in recs])
    y = np.log([r["median_step_s"] for r in recs])
    return float(np.polyfit(x, y, 1)[0])


def _settings(r: dict[str, Any]) -> str:
    """The options that produced a record, as command-line flags."""
    return (
        f"`--damping {r['damping']:g} --sketch {r.get('sketch', 'gaussian')} "
        f"--chunk-size {r['chunk_size']} --budget {r['budget']:g} "
        f"--allocator {r.get('allocator', 'system')}`"
        + (f" `--max-steps {r['max_steps']}`" if r["max_steps"] < 1000 else "")
    )


def report(out: dict[str, Any], stem: Path) -> str:
    """Markdown table (and the plot) of the records."""
    recs = [with_model(r) for r in out["records"]]
    rows = [
        [
            r["framework"],
            f"{r['n_params']:,}",
            str(r["n_points"]),
            str(r["rank"]),
            str(r["steps"]),
            f"{r['first_step_s']:.1f}",
            f"{r['median_step_s']:.2f}",
            f"{r['measured_mib'] / 1024:.2f}" + (" (device)" if r.get("device_peak_mib") else ""),
            f"{r['model_mib'] / 1024:.2f} ({(r['model_ratio'] - 1) * 100:+.0f}%)",
            f"{r['dense_gram_mib'] / 1024:.3g}",
            f"{r['rel_l2']:.2e}",
            f"{r['wall_s']:.0f}",
            _settings(r),
        ]
        for r in recs
    ]
    table = markdown_table(
        [
            "framework",
            "P",
            "N",
            "rank",
            "steps",
            "first step [s]",
            "median step [s]",
            "peak RSS [GiB]",
            "model [GiB] (vs measured)",
            "dense Gram [GiB]",
            "rel. L2",
            "wall [s]",
            "settings",
        ],
        rows,
    )
    slopes = {fw: slope(recs, fw) for fw in FRAMEWORKS}
    m = out["machine"]
    text = (
        "# Scale: SNGD with up to a million parameters\n\n"
        f"Last command: `{out['command']}` on {m.get('cpu_model')}, {m.get('cpu_count')} "
        f"cores, {m.get('date_utc')}. Each row's own settings are in its last column "
        "(`python -m benchmarks.scale --framework F --widths W` with those options).\n\n"
        f"{table}\n\n"
        + "".join(
            f"- log-log slope of the median step time vs P ({fw}): {s:.2f}\n"
            for fw, s in slopes.items()
            if s is not None
        )
        + "\nPeak RSS is the subprocess's `ru_maxrss`; the model is "
        "`sketchlinalg.estimate_memory('nystrom', N, P, rank, jacobian='materialized', "
        "baseline=RSS before the first step)`.\n\n![time and memory vs P](" + stem.name + ".png)\n"
    )
    plot(recs, stem.with_suffix(".png"))
    return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the configurations (one subprocess each), write JSON, markdown and the plot."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1:])
        return {}
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--framework", default="jax", help="jax, torch or jax,torch")
    p.add_argument("--widths", default="98,314,1000", help="hidden widths w of [2, w, w, 1]")
    p.add_argument("--budget", type=float, default=600.0, help="training seconds per width")
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--rank", type=int, default=100)
    p.add_argument("--damping", type=float, default=1e-3)
    p.add_argument("--inverse", default="projected", choices=("projected", "woodbury"))
    p.add_argument("--line-search", default="armijo", choices=("armijo", "grid"))
    p.add_argument(
        "--sketch", default="rademacher", choices=("gaussian", "rademacher", "sparse_sign")
    )
    p.add_argument(
        "--allocator",
        default="reuse",
        choices=tuple(ALLOCATORS),
        help="glibc malloc settings of the child process (see the module docstring)",
    )
    p.add_argument("--chunk-size", type=int, default=64, help="points per Jacobian chunk")
    p.add_argument("--float32", action="store_true")
    p.add_argument("--quick", action="store_true", help="widths 8,16, 2 steps (CI smoke)")
    p.add_argument("--out", type=Path, default=None, help="output stem (default results/scale)")
    p.add_argument("--append", action="store_true", help="add to the records in the JSON")
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args(argv)
    stem = args.out or RESULTS / ("scale_quick" if args.quick else "scale")
    json_path = stem.with_suffix(".json")
    old = json.loads(json_path.read_text()) if json_path.exists() else None
    if args.plot_only:
        if old is None:
            raise SystemExit(f"--plot-only: {json_path} does not exist")
        old["records"] = [with_model(r) for r in old["records"]]
        write_json(json_path, old)
        write_text(stem.with_suffix(".md"), report(old, stem))
        return dict(old)
    frameworks = [f.strip() for f in args.framework.split(",")]
    if any(f not in FRAMEWORKS for f in frameworks):
        raise SystemExit(
            f"--framework: expected a comma list of {FRAMEWORKS}, got {args.framework}"
        )
    widths = [8, 16] if args.quick else [int(w) for w in args.widths.split(",")]
    records = list(old["records"]) if (args.append and old) else []
    for fw in frameworks:
        for w in widths:
            job = {
                "framework": fw,
                "width": w,
                "n_params": n_params(w),
                "rank": min(args.rank, n_params(w)),
                "damping": args.damping,
                "inverse": args.inverse,
                "sketch": args.sketch,
                "line_search": args.line_search,
                "allocator": args.allocator,
                "chunk_size": args.chunk_size,
                "dtype": "float32" if args.float32 else "float64",
                "budget": 30.0 if args.quick else args.budget,
                "max_steps": 2 if args.quick else args.max_steps,
            }
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "record.json"
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.scale",
                    "--child",
                    json.dumps(job),
                    str(path),
                ]
                env = {**os.environ, **ALLOCATORS[args.allocator]}
                proc = subprocess.run(
                    cmd, cwd=Path(__file__).resolve().parents[1], env=env, check=False
                )
                if proc.returncode != 0 or not path.exists():
                    print(
                        f"[scale] {fw} w={w}: subprocess failed ({proc.returncode})",
                        file=sys.stderr,
                    )
                    continue
                records = [r for r in records if (r["framework"], r["width"]) != (fw, w)]
                records.append(json.loads(path.read_text()))
    out = {
        "description": __doc__,
        "command": "python -m benchmarks.scale " + " ".join(argv),
        "machine": machine_info(),
        "records": sorted(
            (with_model(r) for r in records), key=lambda r: (r["framework"], r["n_params"])
        ),
    }
    write_json(json_path, out)
    text = report(out, stem)
    write_text(stem.with_suffix(".md"), text)
    print(text)
    return out


if __name__ == "__main__":
    main()
