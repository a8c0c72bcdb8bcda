"""The forward Laplacian (JAX) equals the Hessian trace, also under a parameter gradient."""

from __future__ import annotations

import itertools

import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sketchlinalg_jax._forward_laplacian import Unsupported, forward_laplacian  # noqa: E402

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "sin": jnp.sin,
    "silu": jax.nn.silu,  # a jit-wrapped logistic times its input
    "softplus": jax.nn.softplus,  # custom_jvp
    "gelu": jax.nn.gelu,
    "sigmoid": jax.nn.sigmoid,
}


def _mlp(key, widths, activation):
    params = []
    for fan_in, fan_out in itertools.pairwise(widths):
        key, kw, kb = jax.random.split(key, 3)
        W = jax.random.normal(kw, (fan_out, fan_in)) / np.sqrt(fan_in)
        params.append((W, 0.3 * jax.random.normal(kb, (fan_out,))))

    def model(p, x):
        h = x
        for W, b in p[:-1]:
            h = activation(W @ h + b)
        W, b = p[-1]
        return (W @ h + b)[0]

    return model, params


def _hessian_trace(u, x):
    return jnp.trace(jax.hessian(u)(x))


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    dim=st.integers(1, 5),
    depth=st.integers(1, 3),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
)
def test_forward_laplacian_equals_the_hessian_trace_on_random_networks(
    seed, dim, depth, activation
):
    key = jax.random.key(seed)
    model, params = _mlp(key, [dim] + [7] * depth + [1], ACTIVATIONS[activation])
    x = jax.random.normal(jax.random.fold_in(key, 1), (dim,))
    u = lambda y: model(params, y)  # noqa: E731
    ref = _hessian_trace(u, x)
    got = forward_laplacian(u, x)
    tol = 1e-12 * max(1.0, float(jnp.abs(ref)))
    assert abs(float(got - ref)) <= tol


@settings(max_examples=5, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    dim=st.integers(1, 4),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
)
def test_forward_laplacian_parameter_gradients_match(seed, dim, activation):
    """The PINN Jacobian row: the gradient in the parameters of the Laplacian at a point."""
    key = jax.random.key(seed)
    model, params = _mlp(key, [dim, 6, 6, 1], ACTIVATIONS[activation])
    pts = jax.random.normal(jax.random.fold_in(key, 1), (4, dim))

    def row(lap, p, x):
        return lap(lambda y: model(p, y), x) + model(p, x) ** 3

    for x in pts:
        ref = jax.grad(lambda p, x=x: row(_hessian_trace, p, x))(params)
        got = jax.grad(lambda p, x=x: row(forward_laplacian, p, x))(params)
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got), strict=True):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-11, atol=1e-11)
    # batched over points and jitted, as pinn_system runs it
    batched = jax.jit(jax.vmap(jax.grad(lambda p, x: row(forward_laplacian, p, x)), (None, 0)))
    for leaf in jax.tree.leaves(batched(params, pts)):
        assert bool(jnp.all(jnp.isfinite(leaf)))


def test_forward_laplacian_of_products_quotients_and_closures():
    """Two x-dependent operands (mul, div, dot_general, pow), a partial Laplacian."""
    A = jnp.array([[1.0, 2.0, 0.5], [0.3, -1.0, 0.2], [0.0, 0.4, 1.5]])

    def u(x):
        h = jnp.tanh(A @ x)
        return (
            jnp.dot(h, jnp.sin(x)) / (1.0 + x[0] ** 2)
            + jnp.sum(jnp.concatenate([x, x**3]))
            + jnp.sqrt(1.0 + x @ x)
            + jnp.max(x) ** 2  # an x-dependent reduction: no rule, handled below
        )

    x = jnp.array([0.3, -0.7, 1.1])
    with pytest.raises(Unsupported, match="reduce_max"):
        forward_laplacian(u, x)

    def v(x):
        h = jnp.tanh(A @ x)
        return jnp.dot(h, jnp.sin(x)) / (1.0 + x[0] ** 2) + jnp.sqrt(1.0 + x @ x) + x[1] ** x[2]

    np.testing.assert_allclose(forward_laplacian(v, x), _hessian_trace(v, x), rtol=1e-12)
    # the Laplacian in the last two coordinates of a closure over the first
    w = lambda s: v(jnp.concatenate([x[:1], s]))  # noqa: E731
    np.testing.assert_allclose(forward_laplacian(w, x[1:]), _hessian_trace(w, x[1:]), rtol=1e-12)
    # a function that does not depend on x
    assert float(forward_laplacian(lambda y: jnp.float64(2.0), x)) == 0.0


def test_laplacian_falls_back_to_the_hessian_trace_with_a_warning():
    def u(x):
        return jnp.max(x) ** 2 + jnp.sum(jnp.sin(x))

    x = jnp.array([0.3, -0.7, 1.1])
    with pytest.warns(RuntimeWarning, match="reduce_max.*Hessian trace"):
        got = slj.laplacian(u, x)
    np.testing.assert_allclose(got, _hessian_trace(u, x), rtol=1e-13)


def test_forward_laplacian_rejects_a_batch_of_points():
    with pytest.raises(ValueError, match=r"shape \(d,\)"):
        forward_laplacian(lambda y: jnp.sum(y), jnp.zeros((2, 2)))


@settings(max_examples=4, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    dim=st.integers(1, 4),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    data=st.data(),
)
def test_derivatives_are_value_gradient_and_partial_laplacian(seed, dim, activation, data):
    """One forward pass gives u, grad u and the Laplacian over any subset of coordinates;
    the parameter gradient of a residual built on it equals that of separate operators."""
    dims = data.draw(st.lists(st.integers(0, dim - 1), min_size=1, max_size=dim, unique=True))
    key = jax.random.key(seed)
    model, params = _mlp(key, [dim, 6, 6, 1], ACTIVATIONS[activation])
    x = jax.random.normal(jax.random.fold_in(key, 1), (dim,))
    u = lambda y: model(params, y)  # noqa: E731
    value, gradient, lap = slj.derivatives(u, x, laplacian_dims=dims)
    H = jax.hessian(u)(x)
    np.testing.assert_allclose(value, u(x), rtol=1e-13)
    np.testing.assert_allclose(gradient, jax.grad(u)(x), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(lap, jnp.diagonal(H)[jnp.array(dims)].sum(), rtol=1e-11,
                               atol=1e-12)  # fmt: skip

    def one_pass(p, y):
        v, g, lap = slj.derivatives(lambda z: model(p, z), y, laplacian_dims=dims)
        return g[0] - 0.25 * lap + v**3

    def separate(p, y):
        w = lambda z: model(p, z)  # noqa: E731
        lap = jnp.diagonal(jax.hessian(w)(y))[jnp.array(dims)].sum()
        return slj.time_derivative(w, y, 0) - 0.25 * lap + w(y) ** 3

    pts = jax.random.normal(jax.random.fold_in(key, 2), (3, dim))
    got = jax.vmap(jax.grad(one_pass), (None, 0))(params, pts)
    ref = jax.vmap(jax.grad(separate), (None, 0))(params, pts)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-10, atol=1e-10)


def test_derivatives_fallback_and_bad_dims(monkeypatch):
    import sketchlinalg._pinn

    # the warning is issued once per reason and process: forget the earlier tests'
    monkeypatch.setattr(sketchlinalg._pinn, "_laplacian_fallbacks", set())
    x = jnp.array([0.3, -0.7, 1.1])

    def u(y):
        return jnp.max(y) ** 2 * y[0] + y[1] * y[2] ** 2

    with pytest.warns(RuntimeWarning, match="reduce_max.*reverse mode"):
        got = slj.derivatives(u, x, laplacian_dims=[0, 2])
    np.testing.assert_allclose(got.laplacian, jnp.diagonal(jax.hessian(u)(x))[jnp.array([0, 2])]
                               .sum(), rtol=1e-13)  # fmt: skip
    np.testing.assert_allclose(got.gradient, jax.grad(u)(x), rtol=1e-13)
    with pytest.raises(ValueError, match=r"laplacian_dims .*out of range"):
        slj.derivatives(u, x, laplacian_dims=[-4])
    with pytest.raises(TypeError, match="laplacian_dims must be"):
        slj.derivatives(u, x, laplacian_dims=[])
