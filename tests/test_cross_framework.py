"""JAX and PyTorch adapters agree: same weights and points give the same system and direction."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402
import sketchlinalg_torch as slt  # noqa: E402

import sketchlinalg as sl  # noqa: E402

PI = math.pi


def _weights(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((o, i)) / math.sqrt(i), rng.standard_normal(o) * 0.1)
        for i, o in itertools.pairwise(sizes)
    ]


def _points():
    g = (np.arange(6) + 0.5) / 6
    X, Y = np.meshgrid(g, g, indexing="ij")
    interior = np.stack([X.ravel(), Y.ravel()], 1)
    s = np.linspace(0, 1, 5, endpoint=False)
    boundary = np.concatenate([np.stack([s, 0 * s], 1), np.stack([0 * s + 1, s], 1)])
    return interior, boundary


def _jax_system(weights, interior, boundary):
    params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in weights]

    def mlp(p, x):
        for W, b in p[:-1]:
            x = jnp.tanh(W @ x + b)
        W, b = p[-1]
        return (W @ x + b)[0]

    def f(x):
        return 2 * PI**2 * jnp.sin(PI * x[0]) * jnp.sin(PI * x[1])

    terms = [
        slj.Term(lambda u, x: -slj.laplacian(u, x) - f(x), jnp.asarray(interior), 1.0),
        slj.Term(lambda u, x: u(x), jnp.asarray(boundary), 4.0),
    ]
    return slj.pinn_system(mlp, params, terms)


def _torch_system(weights, interior, boundary):
    layers = []
    for W, _ in weights:
        layers += [torch.nn.Linear(W.shape[1], W.shape[0]), torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers[:-1]).double()
    with torch.no_grad():
        for k, (W, b) in enumerate(weights):
            model[2 * k].weight.copy_(torch.from_numpy(W))
            model[2 * k].bias.copy_(torch.from_numpy(b))

    def f(x):
        return 2 * PI**2 * torch.sin(PI * x[0]) * torch.sin(PI * x[1])

    terms = [
        slt.Term(lambda u, x: -slt.laplacian(u, x) - f(x), torch.from_numpy(interior), 1.0),
        slt.Term(lambda u, x: u(x), torch.from_numpy(boundary), 4.0),
    ]
    return slt.pinn_system(model, None, terms)


@pytest.mark.parametrize("path", ["materialized", "matrix-free"])
def test_same_system_and_directions_in_jax_and_torch(path):
    weights = _weights([2, 8, 8, 1])
    interior, boundary = _points()
    sj = _jax_system(weights, interior, boundary)
    st = _torch_system(weights, interior, boundary)
    # both flatten (W0, b0, W1, b1, ...) row-major: the columns correspond
    np.testing.assert_allclose(np.asarray(sj.residual), st.residual.numpy(), rtol=1e-12, atol=1e-12)
    Jj, Jt = np.asarray(sj.jacobian.to_dense()), st.jacobian.to_dense().numpy()
    np.testing.assert_allclose(Jj, Jt, rtol=1e-11, atol=1e-11)
    gnorm = np.linalg.norm(Jj, 2) ** 2
    mu = 1e-4 * gnorm
    # the two Jacobians differ by rounding (~1e-13 relative); the solves amplify that by
    # cond(G + mu I) <= (||G|| + mu) / mu
    rtol = 1e4 * np.finfo(np.float64).eps * (gnorm + mu) / mu
    for method in ("dense", "woodbury", "nystrom"):
        # PortableSampler draws the same sketch on every backend: even SNGD agrees
        kw = {"rank": 40, "seed": sl.PortableSampler(3)} if method == "nystrom" else {}
        dj, _ = sl.natural_gradient_direction(
            sj.jacobian, sj.residual, damping=mu, method=method, **kw
        )
        dt, _ = sl.natural_gradient_direction(
            st.jacobian, st.residual, damping=mu, method=method, **kw
        )
        err = np.linalg.norm(np.asarray(dj) - dt.numpy()) / np.linalg.norm(dt.numpy())
        assert err <= rtol, (method, err, rtol)
