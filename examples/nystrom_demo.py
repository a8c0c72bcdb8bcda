"""Nystrom + Woodbury on a Gauss-Newton system, in plain NumPy (the README's main job for now).

A Jacobian with decaying singular values (as PINN Jacobians have) defines the Gram matrix
G = J^T J. We compute the damped natural-gradient direction d = (G + mu I)^{-1} J^T r with
every method of ``sketchlinalg.natural_gradient_direction`` and compare it with a dense
Cholesky solve: time, relative error and what each method reports.

Run: ``python examples/nystrom_demo.py [--n-residuals N] [--n-params P] [--seed S]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import sketchlinalg as sl


def make_problem(n: int, p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A Jacobian ``J = U diag(s) V^T`` with ``s_i = 0.9^i`` and a random residual."""
    rng = np.random.default_rng(seed)
    k = min(n, p)
    u, _ = np.linalg.qr(rng.standard_normal((n, k)))
    v, _ = np.linalg.qr(rng.standard_normal((p, k)))
    J = (u * 0.9 ** np.arange(k)) @ v.T
    return J, rng.standard_normal(n)


def main(argv: list[str] | None = None) -> None:
    """Run the demo and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-residuals", type=int, default=2000)
    parser.add_argument("--n-params", type=int, default=1500)
    parser.add_argument("--rank", type=int, default=150)
    parser.add_argument("--damping", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    J, r = make_problem(args.n_residuals, args.n_params, args.seed)
    mu = args.damping
    print(f"J: {J.shape[0]} residuals x {J.shape[1]} parameters, damping mu = {mu:g}")

    t0 = time.perf_counter()
    G = J.T @ J
    reference = np.linalg.solve(G + mu * np.eye(G.shape[0]), J.T @ r)
    t_ref = time.perf_counter() - t0
    print(f"dense reference (numpy.linalg.solve of G + mu I): {t_ref:.3f} s\n")

    # The Nystrom approximation itself: eigenvalues against the exact ones.
    approx = sl.nystrom(sl.gram(J), args.rank, seed=args.seed)
    exact = np.linalg.eigvalsh(G)[::-1][: args.rank]
    lam = approx.eigenvalues
    print(
        f"nystrom(gram(J), rank={args.rank}): lam_1 = {lam[0]:.4g} (exact {exact[0]:.4g}), "
        f"lam_{args.rank} = {lam[-1]:.3g} (exact {exact[-1]:.3g}), "
        f"d_eff(mu) = {float(approx.effective_dimension(mu)):.1f}, "
        f"||G - G_hat||_2 ~ {float(sl.estimate_error(sl.gram(J), approx, seed=1)):.2e}\n"
    )

    header = f"{'method':<16}{'time [s]':>10}{'rel. error':>13}  info"
    print(header)
    print("-" * len(header))
    # each method takes only its own options (sketchlinalg.make_solver)
    options = {
        "dense": {},
        "woodbury": {},
        "nystrom": {"rank": args.rank},
        "nystrom-pcg": {"rank": args.rank, "rtol": 1e-10},
        "kernel-nystrom": {"rank": args.rank},
        "auto": {"rank": args.rank, "rtol": 1e-10},
    }
    for method, opts in options.items():
        t0 = time.perf_counter()
        d, info = sl.natural_gradient_direction(
            J, r, damping=mu, method=method, seed=args.seed, **opts
        )
        elapsed = time.perf_counter() - t0
        err = np.linalg.norm(d - reference) / np.linalg.norm(reference)
        print(f"{method:<16}{elapsed:>10.3f}{err:>13.2e}  {info.message}")


if __name__ == "__main__":
    main()
