"""Getting started (Flax nnx): the 1D Poisson PINN with an nnx module, passed as it is."""

import functools

import jax

jax.config.update("jax_enable_x64", True)  # natural gradients want float64
import jax.numpy as jnp  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402
from flax import nnx  # noqa: E402

import sketchlinalg as sl  # noqa: E402

rngs = nnx.Rngs(0)
f64 = {"param_dtype": jnp.float64, "rngs": rngs}  # Flax's default parameters are float32
net = nnx.Sequential(  # the network at one point x of shape (1,): an output of shape (1,)
    nnx.Linear(1, 20, **f64),
    jnp.tanh,
    nnx.Linear(20, 20, **f64),
    jnp.tanh,
    nnx.Linear(20, 1, **f64),
)

interior = jnp.linspace(0.0, 1.0, 66)[1:-1, None]
boundary = jnp.array([[0.0], [1.0]])
terms = [
    slj.Term(lambda u, x: -slj.laplacian(u, x) - jnp.pi**2 * jnp.sin(jnp.pi * x[0]), interior),
    slj.Term(lambda u, x: u(x), boundary, weight=2.0),
]
# no model function: the module is its own parameter pytree (its float arrays train; RNG
# state and the activations stay as they are)
opt = slj.sngd(
    functools.partial(slj.pinn_system, terms=terms),
    residual_fn=functools.partial(slj.pinn_residual, terms=terms),
)
state = opt.init(net)


@jax.jit
def step(net, state):
    updates, state = opt.update(None, state, net)
    return slj.apply_updates(net, updates), state


for i in range(40):
    trained, state = step(net, state)
    nnx.update(net, nnx.state(trained))  # the nnx idiom: the module changes in place
    if i % 10 == 9:
        print(f"step {i + 1:3d} | {sl.step_summary(state)}")

x = jnp.linspace(0.0, 1.0, 1001)[:, None]
u, exact = net(x)[:, 0], jnp.sin(jnp.pi * x[:, 0])
error = float(jnp.linalg.norm(u - exact) / jnp.linalg.norm(exact))
print(f"Flax nnx MLP, {int(state.steps)} SNGD steps: relative L2 error {error:.2e}")
assert error < 1e-4 and int(state.skipped) == 0
