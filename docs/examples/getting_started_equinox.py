"""Getting started (Equinox): the 1D Poisson PINN with an Equinox MLP, passed as it is."""

import functools

import jax

jax.config.update("jax_enable_x64", True)  # natural gradients want float64
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402

import sketchlinalg as sl  # noqa: E402

# the network at one point x of shape (1,), a scalar; float64 since x64 is on
net = eqx.nn.MLP(1, "scalar", 20, 2, activation=jnp.tanh, key=jax.random.key(0))

interior = jnp.linspace(0.0, 1.0, 66)[1:-1, None]
boundary = jnp.array([[0.0], [1.0]])
terms = [
    slj.Term(lambda u, x: -slj.laplacian(u, x) - jnp.pi**2 * jnp.sin(jnp.pi * x[0]), interior),
    slj.Term(lambda u, x: u(x), boundary, weight=2.0),
]
# no model function: the module is its own parameter pytree (its float arrays train)
opt = slj.sngd(
    functools.partial(slj.pinn_system, terms=terms),
    residual_fn=functools.partial(slj.pinn_residual, terms=terms),
)
state = opt.init(net)


@eqx.filter_jit  # the module holds functions (the activation): Equinox's jit filters them
def step(net, state):
    updates, state = opt.update(None, state, net)
    return eqx.apply_updates(net, updates), state  # or slj.apply_updates


for i in range(40):
    net, state = step(net, state)
    if i % 10 == 9:
        print(f"step {i + 1:3d} | {sl.step_summary(state)}")

x = jnp.linspace(0.0, 1.0, 1001)[:, None]
u, exact = jax.vmap(net)(x), jnp.sin(jnp.pi * x[:, 0])
error = float(jnp.linalg.norm(u - exact) / jnp.linalg.norm(exact))
print(f"Equinox MLP, {int(state.steps)} SNGD steps: relative L2 error {error:.2e}")
assert error < 1e-4 and int(state.skipped) == 0
