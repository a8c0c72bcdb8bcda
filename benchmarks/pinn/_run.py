"""The framework-neutral training loop of the PINN benchmark: budget, trace, live line, record."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Protocol

import numpy as np

import sketchlinalg as sl

from .._common import peak_rss_mib
from .optimizers import OptimizerSpec
from .problems import Problem

__all__ = ["LiveLine", "Trainer", "errors", "train"]

#: First evaluation time of the error-vs-time trace [s] and the growth factor between two.
TRACE_START_S = 0.25
TRACE_GROWTH = 1.2


class Trainer(Protocol):
    """What a framework runner builds for one (problem, optimizer) pair."""

    n_params: int
    n_points: int

    def step(self) -> tuple[float, float | None]:
        """One optimizer step, finished (no pending asynchronous work); returns the loss
        ``1/2 ||r||^2`` before the step and the step size (``None`` where there is none)."""
        ...

    def loss(self) -> float:
        """``1/2 ||r||^2`` at the current parameters (on the current points)."""
        ...

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The network at the rows of ``X``, as float64 NumPy values."""
        ...

    def extra(self) -> dict[str, Any]:
        """Runner-specific facts for the record (skipped steps, Jacobian path, ...)."""
        ...


def errors(problem: Problem, trainer: Trainer, X: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Relative L2 error ``||u - u*|| / ||u*||`` and absolute RMS error on ``X``."""
    u = trainer.predict(X)
    diff = u - ref
    return {
        "rel_l2": float(np.linalg.norm(diff) / np.linalg.norm(ref)),
        "rms": float(np.sqrt(np.mean(diff**2))),
    }


def _progress(trainer: Any) -> str:
    """The natural-gradient state of a trainer (:func:`sketchlinalg.step_summary`), if any."""
    state = trainer.step_state() if hasattr(trainer, "step_state") else None
    return "" if state is None else sl.step_summary(state)


class LiveLine:
    """A progress bar with loss / error / step size on stderr.

    On a terminal the line is redrawn in place (at most 4 times a second); otherwise one line
    is printed every ``every_s`` seconds so that logs stay readable.
    """

    def __init__(self, label: str, budget: float, every_s: float = 10.0) -> None:
        self.label = label
        self.budget = budget
        self.tty = sys.stderr.isatty()
        self.every_s = every_s if not self.tty else 0.25
        self.last = -math.inf

    def update(
        self,
        elapsed: float,
        step: int,
        loss: float,
        err: float | None,
        eta: float | None,
        *,
        force: bool = False,
        extra: str = "",
    ) -> None:
        """Show the state after ``step`` steps and ``elapsed`` training seconds."""
        now = time.perf_counter()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        frac = min(elapsed / self.budget, 1.0) if self.budget > 0 else 1.0
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        parts = [
            f"[{self.label}] [{bar}] {elapsed:6.1f}/{self.budget:g} s",
            f"step {step:6d}",
            f"rel.L2 {err:.2e}" if err is not None else "rel.L2 ........",
            # a natural-gradient run's summary has its own loss and step size
            extra or f"loss {loss:.3e}" + (f"  eta {eta:.1e}" if eta is not None else ""),
        ]
        line = "  ".join(p for p in parts if p)
        end = "" if self.tty and not force else "\n"
        print(("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)


def train(
    problem: Problem,
    spec: OptimizerSpec,
    trainer: Trainer,
    *,
    framework: str,
    budget: float,
    max_steps: int | None,
    quick: bool,
    label: str,
) -> dict[str, Any]:
    """Run ``trainer`` for ``budget`` training seconds (or ``max_steps`` steps).

    Only optimizer steps are timed (the first one includes JAX's compilation, which is also
    reported on its own); evaluations for the trace are not. Returns the run's record
    without the machine description.
    """
    X = problem.eval_points(quick)
    ref = np.asarray(problem.exact(np, X), dtype=np.float64)
    live = LiveLine(label, budget)
    first = errors(problem, trainer, X, ref)
    loss0 = trainer.loss()
    trace: list[dict[str, float]] = [
        {"t": 0.0, "step": 0, "loss": loss0, "rel_l2": first["rel_l2"], "rms": first["rms"]}
    ]
    live.update(0.0, 0, loss0, first["rel_l2"], None, force=True)
    elapsed = 0.0
    first_step_s = math.nan
    steps = 0
    status = "budget"
    message = ""
    next_eval = TRACE_START_S
    err: float | None = first["rel_l2"]
    loss, eta = loss0, None
    step_sizes: list[float] = []
    while elapsed < budget:
        if max_steps is not None and steps >= max_steps:
            status = "max_steps"
            break
        t0 = time.perf_counter()
        try:
            loss, eta = trainer.step()
        except (ArithmeticError, ValueError, RuntimeError) as exc:  # reported, not hidden
            status, message = "error", f"{type(exc).__name__}: {exc}"
            break
        dt = time.perf_counter() - t0
        elapsed += dt
        steps += 1
        if steps == 1:
            first_step_s = dt
        if eta is not None:
            step_sizes.append(eta)
        if not math.isfinite(loss):
            status, message = "nonfinite", f"loss {loss} at step {steps}"
            break
        if elapsed >= next_eval:
            e = errors(problem, trainer, X, ref)
            err = e["rel_l2"]
            trace.append({"t": elapsed, "step": steps, "loss": loss, **e})
            next_eval = max(next_eval * TRACE_GROWTH, elapsed * TRACE_GROWTH)
        live.update(elapsed, steps, loss, err, eta, extra=_progress(trainer))
    final = errors(problem, trainer, X, ref)
    final_loss = trainer.loss()
    trace.append({"t": elapsed, "step": steps, "loss": final_loss, **final})
    live.update(
        elapsed, steps, final_loss, final["rel_l2"], eta, force=True, extra=_progress(trainer)
    )
    return {
        "problem": problem.name,
        "problem_settings": problem.settings,
        "framework": framework,
        "optimizer": spec.label,
        "kind": spec.kind,
        "settings": spec.settings,
        "quick": quick,
        "widths": problem.quick_widths if quick else problem.widths,
        "n_params": trainer.n_params,
        "n_points": trainer.n_points,
        "resampled_points": problem.resample,
        "eval_points": int(X.shape[0]),
        "eval_note": problem.eval_note,
        "budget_s": budget,
        "iterations": steps,
        "wall_s": elapsed,
        "first_step_s": first_step_s,
        "seconds_per_step": elapsed / steps if steps else math.nan,
        "initial_loss": loss0,
        "final_loss": final_loss,
        "initial_rel_l2": first["rel_l2"],
        "rel_l2": final["rel_l2"],
        "rms": final["rms"],
        "median_step_size": float(np.median(step_sizes)) if step_sizes else None,
        "status": status,
        "message": message,
        "trace": trace,
        "peak_rss_mib": peak_rss_mib(),
        **trainer.extra(),
    }
