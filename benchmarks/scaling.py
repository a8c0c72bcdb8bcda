"""Scaling: data-parallel natural-gradient steps on 1, 2, 4 and 8 JAX CPU devices (issue 20).

What is measured
----------------
One jitted training step (``opt.update(None, state, params, points=points)`` then
``optax.apply_updates``, the pattern of ``examples/jax_multi_device.py``) of the Poisson 2D
PINN (``-Laplace u = 2 pi^2 sin(pi x) sin(pi y)`` on ``(0, 1)^2``, ``u = 0`` on the
boundary; the tanh MLP ``--widths``, default ``[2, 64, 64, 1]``, P = 4,417, PyTorch's
default initialization, seed 0; float64), with the collocation points of both terms sharded
by rows over a mesh axis ``"data"`` of D devices (``pinn_system(..., sharding=
NamedSharding(mesh, PartitionSpec("data")))``) and parameters and optimizer state
replicated. The points are uniform random (seed 0): 80% in the interior, 20% on the
boundary, both counts multiples of D.

* weak scaling: ``--n-per-shard`` points per device (default 256), N = D x 256;
* strong scaling: ``--n-total`` points in all (default 2,048), N / D per device; the same
  points for every D.

Per (mode, D, method) the record holds ``median_step_s`` (median over ``--steps`` timed
steps, each synchronized with ``jax.block_until_ready``; the first call is excluded and
reported as ``first_call_s``; compilation is ahead of time, ``compile_s``), and the
communication of one step read from the compiled program's HLO (``lower(...).compile()
.as_text()``): every collective (all-reduce, all-gather, reduce-scatter,
collective-permute, all-to-all), its result shapes and bytes. That is the per-device
volume of the static program: an op inside a loop (a line-search trial, a CG iteration) is
counted once, whatever its trip count; ops only in a branch of a ``lax.cond`` are flagged
``conditional`` and left out of ``bytes_per_step``. The communication model
(``bytes_model``), per device, float64, zero for D = 1 (nothing to reduce):

* ``sngd`` (fixed rank l, default 100): one all-reduce of the ``P x (l+1)`` block
  ``[J^T (J Omega), J^T r]`` with the loss, plus one scalar all-reduce per line-search
  loss evaluation in the program: ``8 (P (l+1) + 1 + n_loss)`` bytes, independent of N
  and of D;
* ``nystrom-pcg``: that, plus ``8 P`` per CG iteration (``J^T (J p)``; ``n_cg`` loops in
  the program);
* ``engd-woodbury`` (exact, residual space): one all-gather of ``[J, r]`` to form the
  ``N x N`` kernel, which is then factored and solved replicated, plus the scalar trial
  losses: ``8 (N (P + 1) + n_loss)`` bytes, which grows with N.

Every D runs in its own subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=D
--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``, BLAS and OpenMP at one
thread), so each "device" is one single-threaded XLA CPU device. On a machine with fewer
cores than D the devices share the cores: the times then measure the overhead of
partitioning (collectives through shared memory, more, smaller kernels), not a speedup.
The CPU count and the load average before and after are recorded.

Run::

    python -m benchmarks.scaling                       # sngd, nystrom-pcg, engd-woodbury
    python -m benchmarks.scaling --methods sngd --devices 1,2,4,8 --steps 9
    python -m benchmarks.scaling --quick               # smoke test: D in {1, 2}, tiny

Writes ``scaling.json``, ``scaling.md`` and ``scaling.png`` (``scaling_quick.*`` with
``--quick``) to ``--out-dir`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._common import (
    format_float,
    load_average,
    machine_info,
    markdown_table,
    median,
    write_json,
    write_text,
)
from .crossover import square_points

__all__ = ["collectives", "comm_model", "main", "n_params", "split_points"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("sngd", "nystrom-pcg", "engd-woodbury")
MODES = ("weak", "strong")
#: Share of the collocation points in the interior (the rest on the boundary).
INTERIOR = 0.8
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
_OP = re.compile(r"=\s*(\(.*?\)|\S+)\s+(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
_ARRAY = re.compile(r"\b(pred|[subf]\d+|bf16)\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^(ENTRY )?%(\S+) .*\{$")
_CALLED = re.compile(r"(?:to_apply|body|condition|calls)=%([\w.\-]+)")
_BRANCHES = re.compile(
    r"(?:true_computation|false_computation)=%([\w.\-]+)|branch_computations=\{([^}]*)\}"
)


# ----------------------------------------------------------------------------------------
# HLO: collectives and their bytes (the approach of tests/_distributed_jax_cases.py)
# ----------------------------------------------------------------------------------------
def _unconditional(hlo: str) -> set[str]:
    """Computations reachable from the entry without entering a ``conditional``'s branch."""
    edges: dict[str, set[str]] = {}
    current, entry = "", ""
    for line in hlo.splitlines():
        m = _COMPUTATION.match(line)
        if m:
            current = m.group(2)
            entry = current if m.group(1) else entry
            edges.setdefault(current, set())
            continue
        if current and "conditional(" not in line:
            edges[current].update(_CALLED.findall(line))
        elif current:  # a conditional's predicate operands are computed unconditionally
            edges[current].update(_CALLED.findall(_BRANCHES.sub("", line)))
    seen, todo = {entry}, [entry]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _itemsize(dtype: str) -> int:
    if dtype == "pred":
        return 1
    if dtype == "bf16":
        return 2
    bits = dtype[1:]
    return int(bits) // 8 if bits.isdigit() else 8


def collectives(hlo: str) -> list[dict[str, Any]]:
    """The collectives of a compiled module's HLO text.

    Parameters
    ----------
    hlo : str
        ``jax.jit(f).lower(...).compile().as_text()``.

    Returns
    -------
    list of dict
        Per op: ``op``, result ``shapes``, ``elements``, ``bytes`` and ``conditional``
        (only in a branch of a ``lax.cond`` / ``lax.switch``). Each op is counted once where
        it stands (an op in a loop body once, whatever the trip count).
    """
    always = _unconditional(hlo)
    out = []
    current = ""
    for line in hlo.splitlines():
        c = _COMPUTATION.match(line)
        if c:
            current = c.group(2)
            continue
        m = _OP.search(line)
        if m is None:
            continue
        shapes = []
        elements = nbytes = 0
        for dtype, dims in _ARRAY.findall(m.group(1)):
            shape = [int(d) for d in dims.split(",") if d]
            size = math.prod(shape)
            shapes.append(shape)
            elements += size
            nbytes += size * _itemsize(dtype)
        out.append(
            {
                "op": m.group(2),
                "shapes": shapes,
                "elements": elements,
                "bytes": nbytes,
                "conditional": current not in always,
            }
        )
    return out


def n_params(widths: list[int]) -> int:
    """Parameters of the MLP with layer widths ``widths``."""
    return sum((a + 1) * b for a, b in itertools.pairwise(widths))


def comm_model(
    method: str, *, N: int, P: int, rank: int, devices: int, ops: list[dict[str, Any]]
) -> dict[str, Any]:
    """The modelled bytes of one step per device, given the op counts of the program.

    ``n_loss`` (scalar all-reduces besides the loss of the block) and ``n_cg`` (all-reduces
    of ``P`` elements: CG loops) are read from ``ops``; the sizes are the model's. Returns
    ``bytes``, the terms, and ``lower_bound`` bytes (the block, or ``J``, alone).
    """
    if devices == 1:
        return {"bytes": 0, "lower_bound": 0, "formula": "0 (one device)"}
    if method in ("sngd", "nystrom-pcg"):
        block = P * (rank + 1)
        scalars = sum(1 for c in ops if c["elements"] == 1 and not c["conditional"])
        # the loss travels with its block (P (l+1) + 1 elements) or apart as one more scalar
        apart = any(c["elements"] == block for c in ops)
        n_loss = scalars - 1 if apart else scalars
        n_cg = sum(1 for c in ops if c["elements"] == P and not c["conditional"])
        if method == "sngd":
            n_cg = 0
        total = 8 * (block + 1 + n_loss + n_cg * P)
        formula = f"8 (P (l+1) + 1 + n_loss{' + n_cg P' if method == 'nystrom-pcg' else ''})"
        return {
            "bytes": total,
            "lower_bound": 8 * (block + 1),
            "formula": formula,
            "n_loss": n_loss,
            "n_cg": n_cg,
            "block_elements": block + 1,
        }
    # engd-woodbury: the optimizer gathers [J, r] once (N (P + 1) elements) and runs the
    # kernel method replicated; the trial losses are scalar all-reduces
    scalars = sum(1 for c in ops if c["elements"] == 1 and not c["conditional"])
    return {
        "bytes": 8 * (N * (P + 1) + scalars),
        "lower_bound": 8 * N * P,
        "formula": "8 (N (P + 1) + n_loss) (gather of [J, r])",
        "n_loss": scalars,
    }


def split_points(n: int, multiple: int) -> tuple[int, int]:
    """Interior and boundary counts of ``n`` points, each a multiple of ``multiple``."""
    if n % multiple:
        raise ValueError(f"{n} points do not split over {multiple} devices")
    n_int = multiple * max(1, round(INTERIOR * n / multiple))
    if n_int >= n:
        n_int = n - multiple
    return n_int, n - n_int


# ----------------------------------------------------------------------------------------
# child: one device count, every case of it
# ----------------------------------------------------------------------------------------
def _shard(host: Any, sharding: Any) -> Any:
    """A global array of ``host`` split by rows (each process fills its own devices' rows)."""
    import jax

    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _child(job: dict[str, Any]) -> list[dict[str, Any]]:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import optax
    import sketchlinalg_jax as slj
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as PS

    D = int(job["devices"])
    assert jax.device_count() == D, jax.devices()
    mesh = jax.make_mesh((D,), ("data",), axis_types=(AxisType.Auto,))
    rows = NamedSharding(mesh, PS("data"))
    replicated = NamedSharding(mesh, PS())
    widths = [int(w) for w in job["widths"]]
    rank = int(job["rank"])

    def mlp(params: Any, x: jax.Array) -> jax.Array:
        h = x
        for W, b in params[:-1]:
            h = jnp.tanh(W @ h + b)
        W, b = params[-1]
        return (W @ h + b)[0]

    key = jax.random.key(0)
    params = []
    for fan_in, fan_out in itertools.pairwise(widths):
        key, kw, kb = jax.random.split(key, 3)
        bound = 1 / math.sqrt(fan_in)
        params.append(
            (
                jax.random.uniform(kw, (fan_out, fan_in), minval=-bound, maxval=bound),
                jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound),
            )
        )
    P = n_params(widths)

    def exact(x: jax.Array) -> jax.Array:
        return jnp.sin(math.pi * x[..., 0]) * jnp.sin(math.pi * x[..., 1])

    def interior(u: Any, x: jax.Array) -> jax.Array:
        return -slj.laplacian(u, x) - 2 * math.pi**2 * exact(x)

    def boundary(u: Any, x: jax.Array) -> jax.Array:
        return u(x)

    factories: dict[str, Callable[..., Any]] = {
        "sngd": functools.partial(slj.sngd, rank=rank),
        "nystrom-pcg": functools.partial(slj.nystrom_pcg, rank=rank),
        "engd-woodbury": slj.engd_woodbury,
    }
    records = []
    for case in job["cases"]:
        n_int, n_bdry = case["n_interior"], case["n_boundary"]
        host = square_points(n_int, n_bdry, seed=0)
        points = [_shard(h, rows) for h in host]
        terms = [
            slj.Term(interior, jnp.asarray(host[0]), weight=1.0, name="interior"),
            slj.Term(boundary, jnp.asarray(host[1]), weight=4.0, name="boundary"),
        ]
        system = functools.partial(slj.pinn_system, mlp, terms=terms, sharding=rows)
        residual = functools.partial(slj.pinn_residual, mlp, terms=terms, sharding=rows)
        opt = factories[case["method"]](system, residual_fn=residual, seed=0)
        p0 = jax.device_put(params, replicated)
        s0 = jax.device_put(opt.init(params), replicated)

        def step(params: Any, state: Any, points: Any, opt: Any = opt) -> Any:
            updates, state = opt.update(None, state, params, points=points)
            return optax.apply_updates(params, updates), state

        t0 = time.perf_counter()
        compiled = jax.jit(step).lower(p0, s0, points).compile()
        compile_s = time.perf_counter() - t0
        ops = collectives(compiled.as_text() or "")
        t0 = time.perf_counter()
        p, s = jax.block_until_ready(compiled(p0, s0, points))
        first_call_s = time.perf_counter() - t0
        losses = [float(s.loss)]
        times = []
        for _ in range(int(job["steps"])):
            t0 = time.perf_counter()
            p, s = jax.block_until_ready(compiled(p, s, points))
            times.append(time.perf_counter() - t0)
            losses.append(float(s.loss))
        N = n_int + n_bdry
        always = [c for c in ops if not c["conditional"]]
        model = comm_model(case["method"], N=N, P=P, rank=rank, devices=D, ops=ops)
        records.append(
            {
                **case,
                "devices": D,
                "N": N,
                "n_per_shard": N // D,
                "P": P,
                "rank": rank if case["method"] != "engd-woodbury" else None,
                "compile_s": compile_s,
                "first_call_s": first_call_s,
                "step_s": times,
                "median_step_s": median(times),
                "losses": losses,
                "loss_finite": bool(np.all(np.isfinite(losses))),
                "collectives": ops,
                "n_collectives": len(always),
                "bytes_per_step": sum(c["bytes"] for c in always),
                "bytes_conditional": sum(c["bytes"] for c in ops if c["conditional"]),
                "largest_collective_bytes": max((c["bytes"] for c in always), default=0),
                "model": model,
                "bytes_model": model["bytes"],
            }
        )
        print(
            f"[scaling D={D}] {case['mode']} {case['method']}: N={N} "
            f"step {records[-1]['median_step_s']:.4f} s, "
            f"{records[-1]['bytes_per_step']} B/step (model {model['bytes']})",
            file=sys.stderr,
            flush=True,
        )
    return records


def _child_env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    flags = " ".join(
        f
        for f in env.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    )
    env["XLA_FLAGS"] = (
        f"{flags} --xla_force_host_platform_device_count={devices} "
        "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    paths = [str(ROOT), str(ROOT / "adapters"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def _cases(args: argparse.Namespace, devices: int) -> list[dict[str, Any]]:
    dmax = math.lcm(*args.devices)
    cases = []
    for mode in args.modes:
        if mode == "weak":
            n_int, n_bdry = split_points(args.n_per_shard, 1)
            n_int, n_bdry = n_int * devices, n_bdry * devices
        else:
            n_int, n_bdry = split_points(args.n_total, dmax)
        for method in args.methods:
            cases.append(
                {"mode": mode, "method": method, "n_interior": n_int, "n_boundary": n_bdry}
            )
    return cases


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------
def _ratio(r: dict[str, Any], base: dict[str, Any] | None) -> float | None:
    if base is None or not r["median_step_s"]:
        return None
    return float(r["median_step_s"] / base["median_step_s"])


def plot(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Seconds per step (top) and bytes per step (bottom) vs D, weak (left) and strong."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in MODES if any(r["mode"] == m for r in records)] or ["weak"]
    fig, axes = plt.subplots(2, len(modes), figsize=(5 * len(modes), 7), squeeze=False)
    all_devices = sorted({int(r["devices"]) for r in records}) or [1]
    for col, mode in enumerate(modes):
        ax_t, ax_b = axes[0][col], axes[1][col]
        for method in METHODS:
            recs = sorted(
                (r for r in records if r["mode"] == mode and r["method"] == method),
                key=lambda r: r["devices"],
            )
            if not recs:
                continue
            Ds = [r["devices"] for r in recs]
            (line,) = ax_t.plot(Ds, [r["median_step_s"] for r in recs], "o-", label=method)
            if mode == "strong" and recs[0]["devices"] == 1:
                t1 = recs[0]["median_step_s"]
                ax_t.plot(Ds, [t1 / d for d in Ds], ":", color=line.get_color(), lw=1)
            elif mode == "weak" and recs[0]["devices"] == 1:
                ax_t.axhline(recs[0]["median_step_s"], ls=":", color=line.get_color(), lw=1)
            multi = [r for r in recs if r["devices"] > 1]
            ax_b.plot(
                [r["devices"] for r in multi],
                [r["bytes_per_step"] for r in multi],
                "o-",
                color=line.get_color(),
                label=f"{method} (HLO)",
            )
            modelled = [r for r in multi if r["bytes_model"] is not None]
            if modelled:
                ax_b.plot(
                    [r["devices"] for r in modelled],
                    [r["bytes_model"] for r in modelled],
                    "x",
                    ms=9,
                    color=line.get_color(),
                    label=f"{method} (model)",
                )
        ideal = "flat (ideal)" if mode == "weak" else "t(1)/D (ideal)"
        sizes = sorted({(r["n_per_shard"], r["N"]) for r in records if r["mode"] == mode})
        what = f"{sizes[0][0]} points per device" if mode == "weak" and sizes else "fixed total N"
        if mode == "strong" and sizes:
            what = f"N = {sizes[0][1]} in all"
        ax_t.set_title(f"{mode} scaling ({what}); dotted: {ideal}", fontsize=9)
        ax_t.set_ylabel("median seconds per step")
        ax_b.set_ylabel("bytes per step per device (D = 1: none)")
        ax_b.set_yscale("log")
        ax_t.set_yscale("log")
        for ax in (ax_t, ax_b):
            ax.set_xscale("log", base=2)
            ax.set_xlim(all_devices[0] / 1.3, all_devices[-1] * 1.3)
            ax.set_xticks(all_devices, [str(d) for d in all_devices])
            ax.minorticks_off()
            ax.set_xlabel("devices D (XLA CPU devices)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(out: dict[str, Any]) -> str:
    """The markdown text of the results."""
    records = out["records"]
    machine = out["machine"]
    cores = machine.get("cpu_affinity_count") or machine.get("cpu_count")
    s = out["settings"]
    lines = [
        "# Scaling: data-parallel natural-gradient steps on JAX CPU devices",
        "",
        f"Command: `{out['command']}`",
        "",
        f"Poisson 2D PINN, MLP {s['widths']} (P = {n_params(s['widths'])}), float64, "
        f"rank l = {s['rank']} (sngd, nystrom-pcg), uniform random points (80% interior), "
        f"median over {s['steps']} steps after a first call. Weak scaling: "
        f"{s['n_per_shard']} points per device; strong scaling: {s['n_total']} points in all.",
        "",
        f"Machine: {machine.get('cpu_model') or machine.get('processor')}, "
        f"{machine.get('cpu_count')} CPUs ({cores} usable), jax {machine['versions'].get('jax')}; "
        f"load average (1, 5, 15 min) before {out['load_before']}, after {out['load_after']}; "
        f"wall time {out['wall_s']:.0f} s; {out['machine']['date_utc']}.",
        "",
        f"**Note.** The D devices are XLA CPU devices of one process "
        f"(`--xla_force_host_platform_device_count=D`), each single-threaded, on a machine "
        f"with {cores} usable core(s). With D > {cores} the devices share the cores, so the "
        "times measure the overhead of partitioning the step (collectives through shared "
        "memory, smaller kernels, more dispatch), not a speedup; on real accelerators each "
        "shard has its own device and strong scaling would divide the row work by D. The "
        "communication volumes are properties of the compiled program and hold on any "
        "hardware.",
        "",
        "Bytes: the collectives of the compiled step's HLO, per device, the result bytes of "
        "each op counted once (a loop body's ops once, whatever the trip count; ops only in a "
        "`lax.cond` branch left out). Model: sngd `8 (P (l+1) + 1 + n_loss)`, nystrom-pcg "
        "also `+ 8 P` per CG loop, with `n_loss` (scalar all-reduces of line-search losses) "
        "and `n_cg` counted in the program; engd-woodbury `8 (N (P + 1) + n_loss)` (one "
        "all-gather of [J, r] for the N x N kernel). Nothing is communicated on one device.",
        "",
    ]
    for mode in MODES:
        recs = [r for r in records if r["mode"] == mode]
        if not recs:
            continue
        lines += [f"## {mode.capitalize()} scaling", ""]
        rows = []
        for r in sorted(recs, key=lambda r: (METHODS.index(r["method"]), r["devices"])):
            base = next(
                (
                    b
                    for b in recs
                    if b["method"] == r["method"]
                    and b["devices"] == min(x["devices"] for x in recs)
                ),
                None,
            )
            rows.append(
                [
                    r["method"],
                    str(r["devices"]),
                    str(r["N"]),
                    str(r["n_per_shard"]),
                    format_float(r["median_step_s"], 3),
                    format_float(_ratio(r, base), 3),
                    format_float(r["compile_s"], 3),
                    str(r["n_collectives"]),
                    f"{r['bytes_per_step']:,}",
                    "-" if r["bytes_model"] is None else f"{r['bytes_model']:,}",
                    f"{r['model']['lower_bound']:,}",
                ]
            )
        lines.append(
            markdown_table(
                [
                    "method",
                    "D",
                    "N",
                    "N / D",
                    "s / step",
                    "vs min D",
                    "compile s",
                    "collectives",
                    "bytes / step (HLO)",
                    "bytes model",
                    "model lower bound",
                ],
                rows,
            )
        )
        lines.append("")
    lines += [f"Plot: `{out['plot']}`", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--devices", type=_ints, default=None, help="default 1,2,4,8")
    p.add_argument("--methods", default=None, help=f"comma-separated of {','.join(METHODS)}")
    p.add_argument("--modes", default="weak,strong")
    p.add_argument("--n-per-shard", type=int, default=None, help="weak scaling (default 256)")
    p.add_argument("--n-total", type=int, default=None, help="strong scaling (default 2048)")
    p.add_argument("--widths", type=_ints, default=None, help="default 2,64,64,1")
    p.add_argument("--rank", type=int, default=None, help="sketch size (default 100)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 5)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, D in {1, 2}")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--child", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    defaults: dict[str, Any] = {
        "devices": [1, 2] if quick else [1, 2, 4, 8],
        "methods": "sngd" if quick else ",".join(METHODS),
        "n_per_shard": 40 if quick else 256,
        "n_total": 80 if quick else 2048,
        "widths": [2, 8, 8, 1] if quick else [2, 64, 64, 1],
        "rank": 10 if quick else 100,
        "steps": 2 if quick else 5,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.methods = [m for m in args.methods.split(",") if m]
    args.modes = [m for m in args.modes.split(",") if m]
    for m in args.methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    for m in args.modes:
        if m not in MODES:
            p.error(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    if args.child is None and "strong" in args.modes:
        split_points(args.n_total, math.lcm(*args.devices))  # raises if it does not split
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point: run every D in a subprocess, write JSON, markdown and the plot."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.child is not None:
        job = json.loads(args.child[0])
        Path(args.child[1]).write_text(json.dumps(_child(job)))
        return {}
    stem = args.out_dir / ("scaling_quick" if args.quick else "scaling")
    load_before = load_average()
    t_start = time.perf_counter()
    records: list[dict[str, Any]] = []
    failures = []
    for D in args.devices:
        job = {
            "devices": D,
            "widths": args.widths,
            "rank": args.rank,
            "steps": args.steps,
            "cases": _cases(args, D),
        }
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "records.json"
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.scaling",
                "--child",
                json.dumps(job),
                str(path),
            ]
            proc = subprocess.run(cmd, cwd=ROOT, env=_child_env(D), check=False)
            if proc.returncode != 0 or not path.exists():
                print(f"[scaling] D={D}: subprocess failed ({proc.returncode})", file=sys.stderr)
                failures.append({"devices": D, "returncode": proc.returncode})
                continue
            records.extend(json.loads(path.read_text()))
    wall_s = time.perf_counter() - t_start
    out: dict[str, Any] = {
        "description": __doc__,
        "command": "python -m benchmarks.scaling " + " ".join(argv),
        "settings": {
            "devices": args.devices,
            "methods": args.methods,
            "modes": args.modes,
            "n_per_shard": args.n_per_shard,
            "n_total": args.n_total,
            "widths": args.widths,
            "rank": args.rank,
            "steps": args.steps,
            "quick": args.quick,
            "dtype": "float64",
            "child_env": {k: _child_env(1)[k] for k in ("OMP_NUM_THREADS", "XLA_FLAGS")},
        },
        "machine": machine_info(ROOT),
        "load_before": load_before,
        "load_after": load_average(),
        "wall_s": wall_s,
        "failures": failures,
        "plot": stem.with_suffix(".png").name,
        "records": records,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    title = f"Poisson 2D PINN, MLP {args.widths}, float64, data-parallel steps on D XLA CPU devices"
    plot(records, stem.with_suffix(".png"), title)
    write_json(stem.with_suffix(".json"), out)
    text = report(out)
    write_text(stem.with_suffix(".md"), text)
    print(text)
    return out


if __name__ == "__main__":
    main()
