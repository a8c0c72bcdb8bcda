"""Real JAX models through the natural-gradient optimizers: Equinox modules, Flax linen and
Flax nnx models passed as they are (no partition / split by the user), and the parameter
split that makes it work (:func:`sketchlinalg_jax.split_params`)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = pytest.importorskip("jax.numpy")
slj = pytest.importorskip("sketchlinalg_jax")


def _terms(dtype=jnp.float64):
    """Poisson 1D: ``-u'' = pi^2 sin(pi x)`` on (0, 1), ``u(0) = u(1) = 0``."""
    x = jnp.linspace(0.0, 1.0, 24, dtype=dtype)[1:-1, None]
    b = jnp.asarray([[0.0], [1.0]], dtype=dtype)
    return [
        slj.Term(
            lambda u, x: -slj.laplacian(u, x) - math.pi**2 * jnp.sin(math.pi * x[0]), x, name="pde"
        ),
        slj.Term(lambda u, x: u(x), b, weight=2.0, name="boundary"),
    ]


def _train(opt, params, residual, steps=12, jit=None):
    """``steps`` compiled optimizer steps (``jit``: ``jax.jit``, or ``eqx.filter_jit`` for a
    module with non-array leaves); the losses before each and at the end."""
    state = opt.init(params)

    @(jit or jax.jit)
    def step(params, state):
        updates, state = opt.update(None, state, params)
        return slj.apply_updates(params, updates), state

    losses = []
    for _ in range(steps):
        r = residual(params)
        losses.append(0.5 * float(jnp.vdot(r, r)))
        params, state = step(params, state)
    r = residual(params)
    losses.append(0.5 * float(jnp.vdot(r, r)))
    return params, state, losses


def _check_falls(losses, state):
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < 0.1 * losses[0], losses
    assert int(state.skipped) == 0


def test_equinox_module_is_its_own_parameter_pytree():
    eqx = pytest.importorskip("equinox")
    net = eqx.nn.MLP(1, "scalar", 16, 2, activation=jnp.tanh, key=jax.random.key(0))
    terms = _terms()
    system = functools.partial(slj.pinn_system, terms=terms)
    residual = functools.partial(slj.pinn_residual, terms=terms)
    opt = slj.sngd(system, residual_fn=residual)
    new, state, losses = _train(opt, net, residual, jit=eqx.filter_jit)
    _check_falls(losses, state)
    assert isinstance(new, eqx.nn.MLP) and new.activation is net.activation
    # equinox's own apply_updates takes the same updates
    updates, _ = opt.update(None, opt.init(net), net)
    assert updates.activation is None
    moved = eqx.apply_updates(net, updates)
    np.testing.assert_allclose(
        np.asarray(moved.layers[0].weight),
        np.asarray(net.layers[0].weight + updates.layers[0].weight),
    )


def test_flax_linen_module_applied_to_its_variables():
    linen = pytest.importorskip("flax.linen")

    class MLP(linen.Module):
        @linen.compact
        def __call__(self, x):
            h = jnp.tanh(linen.Dense(16, param_dtype=jnp.float64)(x))
            h = jnp.tanh(linen.Dense(16, param_dtype=jnp.float64)(h))
            return linen.Dense(1, param_dtype=jnp.float64)(h)

    module = MLP()
    variables = module.init(jax.random.key(0), jnp.zeros(1))
    terms = _terms()
    system = functools.partial(slj.pinn_system, module, terms=terms)
    residual = functools.partial(slj.pinn_residual, module, terms=terms)
    opt = slj.engd_woodbury(system, residual_fn=residual)
    _, state, losses = _train(opt, variables, residual)
    _check_falls(losses, state)


def test_flax_linen_default_float32_parameters_with_float32_points():
    """Flax's default float32 parameters train with float32 points (the step's linear
    algebra runs in float64); float64 points are refused by name."""
    linen = pytest.importorskip("flax.linen")

    class MLP(linen.Module):
        @linen.compact
        def __call__(self, x):
            return linen.Dense(1)(jnp.tanh(linen.Dense(16)(x)))

    module = MLP()
    variables = module.init(jax.random.key(0), jnp.zeros(1, dtype=jnp.float32))
    terms64 = _terms()
    with pytest.raises(TypeError, match=r"points have dtype float64, the parameters float32"):
        slj.pinn_system(module, variables, terms64)
    terms = _terms(jnp.float32)
    system = functools.partial(slj.pinn_system, module, terms=terms)
    residual = functools.partial(slj.pinn_residual, module, terms=terms)
    opt = slj.sngd(system, residual_fn=residual)
    _, state, losses = _train(opt, variables, residual)
    assert state.loss.dtype == jnp.float32
    _check_falls(losses, state)


def test_flax_nnx_module_is_its_own_parameter_pytree():
    nnx = pytest.importorskip("flax.nnx")
    rngs = nnx.Rngs(0)
    net = nnx.Sequential(
        nnx.Linear(1, 16, param_dtype=jnp.float64, rngs=rngs),
        jnp.tanh,
        nnx.Linear(16, 16, param_dtype=jnp.float64, rngs=rngs),
        jnp.tanh,
        nnx.Linear(16, 1, param_dtype=jnp.float64, rngs=rngs),
    )
    terms = _terms()
    system = functools.partial(slj.pinn_system, terms=terms)
    residual = functools.partial(slj.pinn_residual, terms=terms)
    opt = slj.nystrom_pcg(system, residual_fn=residual)
    new, state, losses = _train(opt, net, residual)
    _check_falls(losses, state)
    assert isinstance(new, nnx.Sequential)
    nnx.update(net, nnx.state(new))  # the in-place nnx idiom takes the trained state
    np.testing.assert_array_equal(np.asarray(residual(net)), np.asarray(residual(new)))


def test_nnx_module_with_rng_state_keeps_it_fixed():
    """An nnx module that holds ``Rngs`` (integer counts, PRNG keys): they are not trained
    and come back unchanged."""
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.rngs = rngs
            self.inner = nnx.Linear(1, 8, param_dtype=jnp.float64, rngs=rngs)
            self.outer = nnx.Linear(8, 1, param_dtype=jnp.float64, rngs=rngs)

        def __call__(self, x):
            return self.outer(jnp.tanh(self.inner(x)))

    net = Net(nnx.Rngs(3))
    split = slj.split_params(net)
    assert split.flat.shape == (1 * 8 + 8 + 8 * 1 + 1,)
    terms = _terms()
    residual = functools.partial(slj.pinn_residual, terms=terms)
    opt = slj.spring(functools.partial(slj.pinn_system, terms=terms), residual_fn=residual)
    new, _, losses = _train(opt, net, residual, steps=4)
    assert losses[-1] < losses[0]
    before = [np.asarray(jax.random.key_data(k)) for k in jax.tree.leaves(net.rngs)
              if jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key)]  # fmt: skip
    after = [np.asarray(jax.random.key_data(k)) for k in jax.tree.leaves(new.rngs)
             if jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key)]  # fmt: skip
    assert before and all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_split_params_holds_every_other_leaf_fixed():
    tree = {
        "w": jnp.arange(3.0),
        "b": np.ones(2),
        "act": jnp.tanh,
        "count": jnp.asarray(7, dtype=jnp.int32),
        "key": jax.random.key(0),
        "p": 0.5,  # a Python float next to arrays: a setting, not a parameter
        "none": None,
    }
    split = slj.split_params(tree)
    assert split.flat.shape == (5,)
    back = split.unflatten(split.flat + 1.0)
    np.testing.assert_array_equal(np.asarray(back["w"]), [1.0, 2.0, 3.0])
    assert back["act"] is jnp.tanh and back["p"] == 0.5 and int(back["count"]) == 7
    updates = split.updates(split.flat)
    assert updates["act"] is None and updates["count"] is None and updates["p"] is None
    applied = slj.apply_updates(tree, updates)
    np.testing.assert_array_equal(np.asarray(applied["w"]), 2 * np.arange(3.0))
    assert applied["key"] is tree["key"]
    # Python floats alone are the parameters (scipy-style x0)
    assert slj.split_params({"a": 1.0, "b": 2.0}).flat.tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("tree", "match"),
    [
        ({"n": jnp.asarray(3)}, r"params has no floating-point array leaf to train \(leaf \['n'\]"),
        ({"z": jnp.ones(2, dtype=jnp.complex128)}, "complex128; natural-gradient optimizers"),
        (
            {"a": jnp.ones(2, dtype=jnp.float32), "b": jnp.ones(2)},
            r"params mixes float dtypes \(float32 at \['a'\], float64 at \['b'\]\)",
        ),
        ({}, "params has no leaves"),
    ],
)
def test_split_params_refuses_what_it_cannot_train(tree, match):
    with pytest.raises((TypeError, ValueError), match=match):
        slj.split_params(tree)


def test_residual_promoted_by_a_constant_is_named():
    """A float32 model whose residual a float64 constant promotes: the error names the
    term and both dtypes (not a dtype error deep inside the Jacobian's assembly)."""
    params = {"w": jnp.ones(3, dtype=jnp.float32)}
    x = jnp.linspace(0.0, 1.0, 4, dtype=jnp.float32)[:, None]
    f64 = jnp.ones((), dtype=jnp.float64)
    terms = [slj.Term(lambda u, x: u(x) - f64, x, name="fit")]

    def model(p, x):
        return jnp.sum(p["w"] * x[0])

    match = r"Term 'fit': residual\(u, x\) returned dtype float64 for points of dtype float32"
    with pytest.raises(TypeError, match=match):
        slj.pinn_system(model, params, terms)


def test_module_without_params_must_be_callable():
    with pytest.raises(TypeError, match="with params=None the model must be a callable pytree"):
        slj.pinn_system({"w": jnp.ones(2)}, terms=_terms())
    with pytest.raises(TypeError, match="pinn_residual: give terms"):
        slj.pinn_residual(lambda p, x: p, {"w": jnp.ones(2)})
