"""PyTorch runner of the PINN benchmark: torch.optim Adam / L-BFGS and sketchlinalg_torch's
optimizers."""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import sketchlinalg_torch as slt
import torch

import sketchlinalg as sl

from .._common import median
from .optimizers import OptimizerSpec
from .problems import Problem

__all__ = ["TorchTrainer", "make_mlp"]


def make_mlp(widths: list[int], seed: int, dtype: Any = torch.float64) -> torch.nn.Module:
    """A float64 tanh MLP with ``torch.nn.Linear``'s default initialization."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(torch.nn.Linear(a, b, dtype=dtype))
        if i < len(widths) - 2:
            layers.append(torch.nn.Tanh())
    torch.random.set_rng_state(gen_state)  # leave the global generator as it was
    return torch.nn.Sequential(*layers)


def _scalar(x: Any) -> float:
    """A Python float of a loss (a tensor that may carry autograd history, or a number)."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


class TorchTrainer:
    """One (problem, optimizer) pair in PyTorch, float64."""

    def __init__(
        self,
        problem: Problem,
        spec: OptimizerSpec,
        *,
        seed: int,
        quick: bool,
        dtype: str = "float64",
        device: str = "cpu",
    ) -> None:
        self.dtype = getattr(torch, dtype)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: torch sees no CUDA device")
        self.problem = problem
        self.spec = spec
        self.quick = quick
        self.rng = np.random.default_rng(seed)
        widths = problem.quick_widths if quick else problem.widths
        self.model = make_mlp(widths, seed, self.dtype).to(self.device)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.terms = self._draw()
        # Seconds per natural-gradient step in its phases: the system_fn call (residual and
        # Jacobian), the residual_fn calls inside the step (the line search; and how many)
        # and the whole.
        self.phases: dict[str, list[float]] = {
            "jacobian_s": [],
            "line_search_s": [],
            "line_search_evaluations": [],
            "step_s": [],
        }
        self._line_search_s: float | None = None  # accumulates while a step runs
        self._line_search_evaluations = 0
        self.n_points = sum(int(t.points.shape[0]) for t in self.terms)
        kind, s = spec.kind, spec.settings
        params = list(self.model.parameters())
        self.scheduler: Any = None
        if kind == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=s["lr"])
            gamma = s["decay"] ** (1.0 / s["decay_steps"])
            self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.opt, gamma)
        elif kind == "lbfgs":
            self.opt = torch.optim.LBFGS(
                params,
                lr=1.0,
                max_iter=5,
                history_size=s["history"],
                tolerance_grad=0.0,
                tolerance_change=0.0,
                line_search_fn="strong_wolfe",
            )
        else:
            self.opt = self._natural_gradient(seed)

    def _draw(self) -> list[slt.Term]:
        out = []
        for spec, pts in zip(
            self.problem.terms, self.problem.points(self.rng, self.quick), strict=True
        ):

            def residual(u: Any, x: torch.Tensor, spec: Any = spec) -> Any:
                return spec.residual(torch, slt, u, x)

            points = torch.as_tensor(pts, dtype=self.dtype, device=self.device)
            out.append(slt.Term(residual, points, spec.weight, spec.name))
        return out

    def _system(self, params: Any, workspace: torch.Tensor | None = None) -> Any:
        t0 = time.perf_counter()
        out = slt.pinn_system(self.model, params, self.terms, workspace=workspace)
        self.phases["jacobian_s"].append(time.perf_counter() - t0)
        return out

    def _residual(self, params: Any) -> torch.Tensor:
        t0 = time.perf_counter()
        out = slt.pinn_residual(self.model, params, self.terms)
        if self._line_search_s is not None:
            self._line_search_s += time.perf_counter() - t0
            self._line_search_evaluations += 1
        return out

    def _natural_gradient(self, seed: int) -> slt.NaturalGradient:
        settings = dict(self.spec.settings)
        if "rank" in settings:
            settings["rank"] = min(settings["rank"], self.n_params)
        cls = {
            "engd": slt.ENGD,
            "engd-woodbury": slt.ENGDWoodbury,
            "spring": slt.SPRING,
            "sngd": slt.SNGD,
            "nystrom-pcg": slt.NystromPCG,
        }.get(self.spec.kind)
        if cls is None:
            raise ValueError(f"not a natural-gradient kind: {self.spec.kind!r}")
        named = self.model.named_parameters()
        return cls(named, self._system, residual_fn=self._residual, seed=seed, **settings)

    def _closure(self) -> torch.Tensor:
        self.opt.zero_grad()
        r = slt.pinn_residual(self.model, None, self.terms)
        loss = 0.5 * torch.dot(r, r)
        loss.backward()
        return loss

    def step(self) -> tuple[float, float | None]:
        if self.problem.resample:
            self.terms = self._draw()
        kind = self.spec.kind
        if kind == "adam":
            loss = self._closure()
            self.opt.step()
            self.scheduler.step()
            return float(loss.detach()), None
        out: Any
        if kind == "lbfgs":
            out = self.opt.step(self._closure)  # type: ignore[arg-type]  # returns the loss
            return _scalar(out), None
        self._line_search_s, self._line_search_evaluations = 0.0, 0
        t0 = time.perf_counter()
        out = self.opt.step()
        self.phases["step_s"].append(time.perf_counter() - t0)
        self.phases["line_search_s"].append(self._line_search_s)
        self.phases["line_search_evaluations"].append(self._line_search_evaluations)
        self._line_search_s = None
        first = next(iter(self.model.parameters()))
        return _scalar(out), float(self.opt.state[first]["step_size"])

    def loss(self) -> float:
        with torch.no_grad():
            r = self._residual(None)
        return 0.5 * float(torch.dot(r, r))

    def predict(self, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self.model(torch.as_tensor(X, dtype=self.dtype, device=self.device))
            return out.reshape(-1).double().cpu().numpy()

    def step_state(self) -> Any:
        """The core's StepState of a natural-gradient run (None for Adam / L-BFGS)."""
        if not isinstance(self.opt, slt.NaturalGradient):
            return None
        state = self.opt.state[next(iter(self.model.parameters()))]
        if "previous" not in state:
            return None
        return sl.StepState(state["step"], *(state[k] for k in sl.StepState._fields[1:]))

    def extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dtype": str(self.dtype).removeprefix("torch."),
            "versions": {"torch": torch.__version__},
            "torch_threads": torch.get_num_threads(),
            "device": str(self.device),
        }
        if self.device.type == "cuda":
            out["device_model"] = torch.cuda.get_device_name(self.device)
            out["device_peak_memory_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        if isinstance(self.opt, slt.NaturalGradient):
            out["jacobian_path"] = self.opt.jacobian_path
        state = self.step_state()
        if state is not None:
            out["skipped_steps"] = int(state.skipped)
            out["final_damping"] = float(state.damping)
            out["final_rank"] = int(state.rank)
            out["final_status"] = sl.Status(int(state.status)).name
        if len(self.phases["step_s"]) > 1:  # the first step (warm-up) left out
            out["phases"] = {k: median(v[1:]) for k, v in self.phases.items()}
            out["phases"]["profiled_steps"] = len(self.phases["step_s"]) - 1
            out["phases_note"] = "median over the steps after the first, timed around the calls"
        return out
