"""Getting started (Flax linen): the 1D Poisson PINN with a linen module and its variables."""

import functools

import jax

jax.config.update("jax_enable_x64", True)  # natural gradients want float64
import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402

import sketchlinalg as sl  # noqa: E402


class MLP(nn.Module):
    """The network at one point x of shape (1,): an output of shape (1,)."""

    @nn.compact
    def __call__(self, x):
        for _ in range(2):  # Flax creates float32 parameters unless told otherwise
            x = jnp.tanh(nn.Dense(20, param_dtype=jnp.float64)(x))
        return nn.Dense(1, param_dtype=jnp.float64)(x)


module = MLP()
variables = module.init(jax.random.key(0), jnp.zeros(1))

interior = jnp.linspace(0.0, 1.0, 66)[1:-1, None]
boundary = jnp.array([[0.0], [1.0]])
terms = [
    slj.Term(lambda u, x: -slj.laplacian(u, x) - jnp.pi**2 * jnp.sin(jnp.pi * x[0]), interior),
    slj.Term(lambda u, x: u(x), boundary, weight=2.0),
]
# the module is given as it is: the adapter applies it to the variables (module.apply)
opt = slj.sngd(
    functools.partial(slj.pinn_system, module, terms=terms),
    residual_fn=functools.partial(slj.pinn_residual, module, terms=terms),
)
state = opt.init(variables)


@jax.jit
def step(variables, state):
    updates, state = opt.update(None, state, variables)
    return optax.apply_updates(variables, updates), state


for i in range(40):
    variables, state = step(variables, state)
    if i % 10 == 9:
        print(f"step {i + 1:3d} | {sl.step_summary(state)}")

x = jnp.linspace(0.0, 1.0, 1001)[:, None]
u, exact = module.apply(variables, x)[:, 0], jnp.sin(jnp.pi * x[:, 0])
error = float(jnp.linalg.norm(u - exact) / jnp.linalg.norm(exact))
print(f"Flax linen MLP, {int(state.steps)} SNGD steps: relative L2 error {error:.2e}")
assert error < 1e-4 and int(state.skipped) == 0
