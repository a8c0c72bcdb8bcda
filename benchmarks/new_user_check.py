"""The optimizers' defaults on a PDE outside the PINN suite, written from the docs alone.

Helmholtz 1D: ``-u'' - k^2 u = f`` on (0, 1), ``k = 4``, Dirichlet data from
``u* = A (sin(3 pi x) + x / 2)`` with ``A = 100`` (a source of scale ~1e4, initial loss
~1e7), a [1, 32, 32, 1] tanh MLP (1,153 parameters), 200 interior midpoints and the two
boundary points. Every natural-gradient optimizer of ``sketchlinalg_torch`` is built with no
tuning argument and runs a fixed number of steps (so the result does not depend on the
machine's load), in float64 and float32; L-BFGS (strong Wolfe, the same number of
function evaluations at most) is the baseline.

Run::

    OMP_NUM_THREADS=1 python -m benchmarks.new_user_check [--steps 150]

Writes ``benchmarks/results/new_user_check.{json,md}``: per optimizer and dtype, the
relative L2 error on 1,000 points, the initial and final loss, the final status.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from sketchlinalg_torch import (
    SNGD,
    SPRING,
    ENGDWoodbury,
    NystromPCG,
    Term,
    laplacian,
    pinn_residual,
    pinn_system,
)

from sketchlinalg import Status

from ._common import machine_info, markdown_table, write_json, write_text

K, AMPLITUDE = 4.0, 100.0
OUT = Path(__file__).resolve().parent / "results"
OPTIMIZERS = {
    "sngd": SNGD,
    "nystrom-pcg": NystromPCG,
    "engd-woodbury": ENGDWoodbury,
    "spring": SPRING,
}


def exact(x: torch.Tensor) -> torch.Tensor:
    """``u*(x) = A (sin(3 pi x) + x / 2)``."""
    return AMPLITUDE * (torch.sin(3 * math.pi * x[..., 0]) + 0.5 * x[..., 0])


def source(x: torch.Tensor) -> torch.Tensor:
    """``f = -u*'' - k^2 u*``."""
    s = torch.sin(3 * math.pi * x[..., 0])
    return AMPLITUDE * ((3 * math.pi) ** 2 * s) - K**2 * exact(x)


def make(dtype: torch.dtype, seed: int = 0) -> tuple[torch.nn.Module, list[Term]]:
    """The network and the residual terms."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(1, 32),
        torch.nn.Tanh(),
        torch.nn.Linear(32, 32),
        torch.nn.Tanh(),
        torch.nn.Linear(32, 1),
    ).to(dtype)
    n = 200
    interior = ((torch.arange(n, dtype=dtype) + 0.5) / n)[:, None]
    boundary = torch.tensor([[0.0], [1.0]], dtype=dtype)
    terms = [
        Term(lambda u, x: -laplacian(u, x) - K**2 * u(x) - source(x), interior, name="pde"),
        Term(lambda u, x: u(x) - exact(x), boundary, weight=2.0, name="boundary"),
    ]
    return model, terms


def rel_l2(model: torch.nn.Module, dtype: torch.dtype) -> float:
    """Relative L2 error on 1,000 equispaced points of [0, 1]."""
    x = torch.linspace(0, 1, 1000, dtype=dtype)[:, None]
    with torch.no_grad():
        u = model(x).reshape(-1)
    ref = exact(x)
    return float(torch.linalg.vector_norm(u - ref) / torch.linalg.vector_norm(ref))


def run(name: str, dtype: torch.dtype, steps: int) -> dict[str, Any]:
    """One optimizer, defaults only, ``steps`` steps."""
    model, terms = make(dtype)
    residual = functools.partial(pinn_residual, model, terms=terms)
    with torch.no_grad():
        loss0 = 0.5 * float(torch.sum(residual(None) ** 2))
    t0 = time.perf_counter()
    status = "-"
    if name == "lbfgs":
        lbfgs = torch.optim.LBFGS(
            model.parameters(),
            max_iter=steps * 20,
            line_search_fn="strong_wolfe",
            tolerance_grad=0.0,
            tolerance_change=0.0,
            history_size=50,
        )

        def closure() -> torch.Tensor:
            lbfgs.zero_grad()
            loss = 0.5 * torch.sum(residual(None) ** 2)
            loss.backward()
            return loss

        lbfgs.step(closure)
    else:
        opt = OPTIMIZERS[name](
            model.named_parameters(),
            functools.partial(pinn_system, model, terms=terms),
            residual_fn=residual,
        )
        for _ in range(steps):
            opt.step()
        state = opt.state[next(iter(model.parameters()))]
        status = Status(int(state["status"])).name
    with torch.no_grad():
        loss = 0.5 * float(torch.sum(residual(None) ** 2))
    return {
        "optimizer": name,
        "dtype": str(dtype).removeprefix("torch."),
        "steps": steps if name != "lbfgs" else f"<= {steps * 20} iterations",
        "initial_loss": loss0,
        "final_loss": loss,
        "rel_l2": rel_l2(model, dtype),
        "status": status,
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every optimizer in both dtypes and write the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    records = []
    for dtype in (torch.float64, torch.float32):
        for name in (*OPTIMIZERS, "lbfgs"):
            rec = run(name, dtype, args.steps)
            records.append(rec)
            print(json.dumps(rec), flush=True)
    given = sys.argv[1:] if argv is None else argv
    command = "OMP_NUM_THREADS=1 python -m benchmarks.new_user_check " + " ".join(given)
    meta = {"command": command.strip(), "machine": machine_info(), "torch": torch.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "new_user_check.json", {**meta, "runs": records})
    rows = [
        [
            r["optimizer"],
            r["dtype"],
            str(r["steps"]),
            f"{r['initial_loss']:.3g}",
            f"{r['final_loss']:.3g}",
            f"{r['rel_l2']:.3g}",
            r["status"],
            f"{r['seconds']:.1f}",
        ]
        for r in records
    ]
    text = "\n".join(
        [
            "# Defaults on a PDE outside the suite (Helmholtz 1D, source scale 1e4)",
            "",
            (__doc__ or "").split("\n\n")[1].replace("\n", " "),
            "",
            f"Command: `{meta['command']}`; torch {torch.__version__}. Seconds include the load "
            "of the machine at the time and are not a speed claim.",
            "",
            markdown_table(
                [
                    "optimizer",
                    "dtype",
                    "steps",
                    "initial loss",
                    "final loss",
                    "rel. L2",
                    "status",
                    "seconds",
                ],
                rows,
            ),
            "",
        ]
    )
    write_text(args.out / "new_user_check.md", text)
    print(text)
    return records


if __name__ == "__main__":
    main()
