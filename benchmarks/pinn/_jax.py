"""JAX runner of the PINN benchmark: optax Adam / L-BFGS and sketchlinalg_jax's optimizers."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402

import sketchlinalg as sl  # noqa: E402

from .optimizers import OptimizerSpec  # noqa: E402
from .problems import Problem  # noqa: E402

__all__ = ["JaxTrainer", "init_mlp", "mlp"]

Params = list[tuple[jax.Array, jax.Array]]


def init_mlp(key: jax.Array, widths: list[int], dtype: Any = jnp.float64) -> Params:
    """PyTorch's default initialization, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights
    and biases, in float64 (the PyTorch runner uses ``torch.nn.Linear``'s own)."""
    params = []
    for fan_in, fan_out in itertools.pairwise(widths):
        key, kw, kb = jax.random.split(key, 3)
        bound = 1 / math.sqrt(fan_in)
        W = jax.random.uniform(kw, (fan_out, fan_in), dtype, -bound, bound)
        b = jax.random.uniform(kb, (fan_out,), dtype, -bound, bound)
        params.append((W, b))
    return params


def mlp(params: Params, x: jax.Array) -> jax.Array:
    """The tanh MLP at one point ``x`` of shape ``(d,)``: a scalar."""
    h = x
    for W, b in params[:-1]:
        h = jnp.tanh(W @ h + b)
    W, b = params[-1]
    return (W @ h + b)[0]


def _terms(problem: Problem, points: list[jax.Array]) -> list[slj.Term]:
    out = []
    for spec, pts in zip(problem.terms, points, strict=True):

        def residual(u: Callable[[jax.Array], jax.Array], x: jax.Array, spec: Any = spec) -> Any:
            return spec.residual(jnp, slj, u, x)

        out.append(slj.Term(residual, pts, weight=spec.weight, name=spec.name))
    return out


def _loss(params: Params, points: list[jax.Array], problem: Problem) -> jax.Array:
    r = slj.pinn_residual(mlp, params, _terms(problem, points))
    return 0.5 * jnp.vdot(r, r)


def _natural_gradient(
    problem: Problem, spec: OptimizerSpec, points: list[jax.Array], seed: int, n_params: int
) -> optax.GradientTransformationExtraArgs:
    terms = _terms(problem, points)
    system = functools.partial(slj.pinn_system, mlp, terms=terms)
    residual = functools.partial(slj.pinn_residual, mlp, terms=terms)
    settings = dict(spec.settings)
    if "rank" in settings:
        settings["rank"] = min(settings["rank"], n_params)
    factory = {
        "engd": slj.engd,
        "engd-woodbury": slj.engd_woodbury,
        "spring": slj.spring,
        "sngd": slj.sngd,
        "nystrom-pcg": slj.nystrom_pcg,
    }.get(spec.kind)
    if factory is None:
        raise ValueError(f"not a natural-gradient kind: {spec.kind!r}")
    # the last step's J is the next one's workspace (the jitted step donates the state)
    return factory(system, residual_fn=residual, seed=seed, workspace=True, **settings)


class JaxTrainer:
    """One (problem, optimizer) pair in JAX, float64; every step is one jitted call (the
    natural-gradient steps donate the parameters and the state: ``workspace=True``).

    Collocation points are arguments of the jitted step, so problems that resample them
    (Poisson 5D) reuse one compilation.
    """

    def __init__(
        self,
        problem: Problem,
        spec: OptimizerSpec,
        *,
        seed: int,
        quick: bool,
        dtype: str = "float64",
    ) -> None:
        self.dtype = getattr(jnp, dtype)
        self.problem = problem
        self.spec = spec
        self.quick = quick
        self.rng = np.random.default_rng(seed)
        widths = problem.quick_widths if quick else problem.widths
        self.params = init_mlp(jax.random.key(seed), widths, self.dtype)
        self.n_params = sum(int(W.size + b.size) for W, b in self.params)
        self.points = self._draw()
        self.n_points = sum(int(p.shape[0]) for p in self.points)
        kind, s = spec.kind, spec.settings
        loss_fn = functools.partial(_loss, problem=problem)
        self._loss = jax.jit(loss_fn)
        if kind == "adam":
            schedule = optax.exponential_decay(s["lr"], s["decay_steps"], s["decay"])
            opt: Any = optax.adam(schedule)
        elif kind == "lbfgs":
            opt = optax.lbfgs(memory_size=s["history"])  # zoom (strong Wolfe) line search
        else:
            opt = _natural_gradient(problem, spec, self.points, seed, self.n_params)
        self.state = opt.init(self.params)

        if kind == "adam":

            def step(params: Params, state: Any, points: list[jax.Array]) -> Any:
                loss, g = jax.value_and_grad(loss_fn)(params, points)
                updates, state = opt.update(g, state, params)
                return optax.apply_updates(params, updates), state, loss, jnp.nan

        elif kind == "lbfgs":

            def step(params: Params, state: Any, points: list[jax.Array]) -> Any:
                def value_fn(p: Params) -> jax.Array:
                    return loss_fn(p, points)

                loss, g = jax.value_and_grad(value_fn)(params)
                updates, state = opt.update(g, state, params, value=loss, grad=g, value_fn=value_fn)
                eta = optax.tree_utils.tree_get(state, "learning_rate")
                return optax.apply_updates(params, updates), state, loss, eta

        else:

            def step(params: Params, state: Any, points: list[jax.Array]) -> Any:
                ngd = _natural_gradient(problem, spec, points, seed, self.n_params)
                updates, state = ngd.update(None, state, params)
                return optax.apply_updates(params, updates), state, state.loss, state.step_size

        # natural gradients: parameters and state donated, so each Jacobian is built in the
        # buffer of the last one (NGDState.workspace)
        self._step = jax.jit(step, donate_argnums=(0, 1) if spec.natural_gradient else ())

    def _draw(self) -> list[jax.Array]:
        return [jnp.asarray(p, self.dtype) for p in self.problem.points(self.rng, self.quick)]

    def step(self) -> tuple[float, float | None]:
        if self.problem.resample:
            self.points = self._draw()
        self.params, self.state, loss, eta = self._step(self.params, self.state, self.points)
        jax.block_until_ready(self.params)
        eta_f = float(eta)
        return float(loss), (eta_f if math.isfinite(eta_f) else None)

    def loss(self) -> float:
        return float(self._loss(self.params, self.points))

    def predict(self, X: np.ndarray) -> np.ndarray:
        Xj = jnp.asarray(X, self.dtype)
        return np.asarray(jax.vmap(functools.partial(mlp, self.params))(Xj), dtype=np.float64)

    def step_state(self) -> Any:
        """The core's StepState of a natural-gradient run (None for Adam / L-BFGS)."""
        if not isinstance(self.state, slj.NGDState):
            return None
        return self.state.step_state()

    def extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dtype": jnp.dtype(self.dtype).name,
            "versions": {"jax": jax.__version__},
            "device": str(jax.devices()[0]),
            "device_model": jax.devices()[0].device_kind,
        }
        state = self.step_state()
        if state is not None:
            out["skipped_steps"] = int(state.skipped)
            out["final_damping"] = float(state.damping)
            out["final_rank"] = int(state.rank)
            out["final_status"] = sl.Status(int(state.status)).name
        return out
