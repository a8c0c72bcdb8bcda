"""The Gram spectrum of a PINN before and after SNGD training (Poisson 2D, JAX, float64).

The nonzero eigenvalues of ``G = J^T J`` (``P x P``) are those of ``J J^T`` (``N x N``), so
they are computed exactly from the ``N x N`` kernel. Printed and saved: the eigenvalues, the
effective dimension ``d_eff(mu) = sum lam / (lam + mu)`` at several ``mu``, and the relative
tail ``sum_{i>k} lam_i / sum lam_i`` (the nuclear-norm error of the best rank-``k``
approximation, which bounds the Nystrom error up to a factor ``1 + k/(p-1)``, algorithms.md
section 2) for a few ``k``.

Run: ``python -m benchmarks.pinn.spectrum [--budget 60] [--rank 300]``; writes
``benchmarks/results/pinn/spectrum.json`` (plotted by ``python -m benchmarks.pinn.report``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import sketchlinalg_jax as slj

from .._common import machine_info, write_json
from ._jax import JaxTrainer, _terms, mlp
from ._run import train
from .optimizers import parse_optimizers
from .problems import make_problem

RESULTS = Path(__file__).resolve().parents[1] / "results" / "pinn"
MUS = (1e-12, 1e-10, 1e-8, 1e-6, 1e-4)
KS = (10, 50, 100, 300, 500)


def gram_eigenvalues(trainer: JaxTrainer) -> np.ndarray:
    """Eigenvalues of ``J J^T`` at the trainer's parameters, descending, clipped at 0."""
    _, J, _ = slj.pinn_system(mlp, trainer.params, _terms(trainer.problem, trainer.points))
    Jd = J.to_dense()
    lam = np.linalg.eigvalsh(np.asarray(Jd @ Jd.T))[::-1]
    return np.maximum(lam, 0.0)


def summary(lam: np.ndarray) -> dict[str, Any]:
    """Effective dimensions and best-rank-k relative tails of the spectrum ``lam``."""
    total = float(lam.sum())
    return {
        "eigenvalues": lam.tolist(),
        "trace": total,
        "d_eff": {f"{mu:g}": float(np.sum(lam / (lam + mu))) for mu in MUS},
        "relative_tail": {str(k): float(lam[k:].sum() / total) for k in KS if k < lam.size},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, compute both spectra, write JSON, print a summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--budget", type=float, default=60.0, help="SNGD training seconds")
    p.add_argument("--rank", type=int, default=300)
    p.add_argument("--out", type=Path, default=RESULTS / "spectrum.json")
    args = p.parse_args(argv)
    problem = make_problem("poisson2d")
    spec = parse_optimizers(f"sngd:rank={args.rank}")[0]
    trainer = JaxTrainer(problem, spec, seed=0, quick=False)
    before = summary(gram_eigenvalues(trainer))
    record = train(
        problem,
        spec,
        trainer,
        framework="jax",
        budget=args.budget,
        max_steps=None,
        quick=False,
        label="spectrum|jax|" + spec.label,
    )
    after = summary(gram_eigenvalues(trainer))
    out = {
        "description": __doc__,
        "problem": "poisson2d",
        "n_params": trainer.n_params,
        "n_points": trainer.n_points,
        "optimizer": spec.label,
        "training": {k: record[k] for k in ("iterations", "wall_s", "rel_l2", "final_loss")},
        "initial": before,
        "trained": after,
        "machine": machine_info(),
        "command": "python -m benchmarks.pinn.spectrum " + " ".join(argv or sys.argv[1:]),
    }
    write_json(args.out, out)
    for name, s in (("initial", before), ("trained", after)):
        lam = np.asarray(s["eigenvalues"])
        print(
            f"{name}: lam_1 = {lam[0]:.3e}, lam_100 = {lam[99]:.3e}, lam_300 = {lam[299]:.3e}, "
            f"d_eff(1e-10) = {s['d_eff']['1e-10']:.0f}, tail after 300 = "
            f"{s['relative_tail'].get('300', float('nan')):.2e}"
        )
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
