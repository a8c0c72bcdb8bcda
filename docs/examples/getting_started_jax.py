"""Getting started (JAX): a 1D Poisson PINN trained by SNGD, an optax transformation."""

import functools
import itertools

import jax

jax.config.update("jax_enable_x64", True)  # natural gradients want float64
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402

import sketchlinalg as sl  # noqa: E402


def mlp(params, x):  # the network at one point x of shape (1,): a scalar
    for W, b in params[:-1]:
        x = jnp.tanh(W @ x + b)
    W, b = params[-1]
    return (W @ x + b)[0]


# -u'' = pi^2 sin(pi x) on (0, 1), u(0) = u(1) = 0; the solution is u* = sin(pi x).
sizes, keys = [1, 20, 20, 1], jax.random.split(jax.random.key(0), 3)
params = [
    (jax.random.normal(k, (m, n)) / n**0.5, jnp.zeros(m))
    for k, (n, m) in zip(keys, itertools.pairwise(sizes), strict=True)
]
interior = jnp.linspace(0.0, 1.0, 66)[1:-1, None]  # 64 collocation points, shape (64, 1)
boundary = jnp.array([[0.0], [1.0]])
terms = [
    slj.Term(lambda u, x: -slj.laplacian(u, x) - jnp.pi**2 * jnp.sin(jnp.pi * x[0]), interior),
    slj.Term(lambda u, x: u(x), boundary, weight=2.0),  # 2 boundary points
]
opt = slj.sngd(
    functools.partial(slj.pinn_system, mlp, terms=terms),  # params -> (r, J)
    residual_fn=functools.partial(slj.pinn_residual, mlp, terms=terms),  # for the line search
)  # no rank, no damping: both adapt (sketchlinalg.StepEngine)
state = opt.init(params)


@jax.jit
def step(params, state, points):
    # J, Nystrom sketch, grid line search; points= reaches pinn_system and pinn_residual
    updates, state = opt.update(None, state, params, points=points)
    return optax.apply_updates(params, updates), state


shifted = interior + 0.5 / 65  # a second set of 64 points, between the first ones
for i in range(50):  # alternate the interior points: resampling needs no new optimizer
    params, state = step(params, state, [interior if i % 2 == 0 else shifted, boundary])

x = jnp.linspace(0.0, 1.0, 1001)[:, None]
u, exact = jax.vmap(functools.partial(mlp, params))(x), jnp.sin(jnp.pi * x[:, 0])
error = float(jnp.linalg.norm(u - exact) / jnp.linalg.norm(exact))
print(
    f"SNGD, {int(state.steps)} steps: loss {float(state.loss):.2e}, relative L2 error {error:.2e}"
)
print(
    f"last step: {sl.Status(int(state.status)).name}, damping {float(state.damping):.1e}, "
    f"rank {int(state.rank)}, skipped steps: {int(state.skipped)}"
)
assert error < 1e-5 and int(state.skipped) == 0
