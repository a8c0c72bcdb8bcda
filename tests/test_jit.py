"""Everything a JAX optimizer calls with a fixed rank traces under ``jax.jit``."""

from __future__ import annotations

import numpy as np
import pytest

import sketchlinalg as sl

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax.config.update("jax_enable_x64", True)


def _problem():
    rng = np.random.default_rng(0)
    J = rng.standard_normal((30, 20)) * (0.7 ** np.arange(20))[None, :]
    return jnp.asarray(J), jnp.asarray(rng.standard_normal(30))


OPTIONS = {
    "dense": {},
    "woodbury": {},
    "svd": {},
    "nystrom": {"rank": 20},
    "nystrom-pcg": {"rank": 20, "rtol": 1e-12, "maxiter": 100},
    "kernel-nystrom": {"rank": 20},
}


@pytest.mark.parametrize("method", list(OPTIONS))
def test_direction_jits_and_matches_eager(method):
    J, r = _problem()

    def step(J, r, key, mu):
        d, info = sl.natural_gradient_direction(
            J, r, damping=mu, method=method, seed=key, **OPTIONS[method]
        )
        return d, info.effective_dimension, info.iterations

    key = jax.random.key(42)
    d_jit, _, its = jax.jit(step)(J, r, key, 1e-3)
    d_eager, _, _ = step(J, r, key, 1e-3)
    ref = np.linalg.solve(np.asarray(J.T @ J) + 1e-3 * np.eye(20), np.asarray(J.T @ r))
    np.testing.assert_allclose(np.asarray(d_jit), np.asarray(d_eager), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(np.asarray(d_jit), ref, rtol=1e-5, atol=1e-8)
    if method == "nystrom-pcg":
        assert int(its) <= 3


def test_fresh_sketch_per_key_under_jit():
    J, _ = _problem()

    @jax.jit
    def sketch_eigs(key):
        return sl.nystrom(sl.gram(J), 5, seed=key).eigenvalues

    a, b = sketch_eigs(jax.random.key(0)), sketch_eigs(jax.random.key(1))
    assert not np.allclose(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(sketch_eigs(jax.random.key(0))))


def test_function_operator_built_inside_jit():
    """The adapters' pattern: block products from closures, built inside the traced step."""
    J, r = _problem()

    @jax.jit
    def step(params_scale, key):
        Js = J * params_scale
        op = sl.FunctionOperator(
            lambda X: Js @ X, lambda Y: Js.T @ Y, shape=Js.shape, dtype=Js.dtype, xp=jnp
        )
        approx = sl.nystrom(sl.gram(op), 10, seed=key)
        return approx.solve(op.rmatvec(r), 1e-2), approx.effective_dimension(1e-2)

    d, deff = step(2.0, jax.random.key(3))
    assert d.shape == (20,) and 0 < float(deff) <= 10


def test_pcg_jits_with_while_loop():
    A = jnp.asarray(np.diag(np.linspace(1, 100, 50)))
    b = jnp.ones(50)

    @jax.jit
    def solve(A, b):
        res = sl.pcg(A, b, mu=0.0, rtol=1e-10, maxiter=200)
        return res.x, res.converged, res.status, res.iterations  # (message is a str)

    x, converged, status, iterations = solve(A, b)
    np.testing.assert_allclose(np.asarray(x), 1 / np.linspace(1, 100, 50), rtol=1e-8)
    assert bool(converged) and int(status) == 0 and 0 < int(iterations) <= 50
