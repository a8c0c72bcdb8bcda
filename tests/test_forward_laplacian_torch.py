"""The forward Laplacian (torch) equals the Hessian trace, also under a parameter gradient."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

import sketchlinalg_torch as slt  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sketchlinalg_torch._forward_laplacian import Unsupported, forward_laplacian  # noqa: E402
from torch.func import functional_call, grad, jacrev, vmap  # noqa: E402

F64 = torch.float64
ACTIVATIONS = {
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
    "silu": torch.nn.SiLU,
    "gelu": torch.nn.GELU,
    "softplus": torch.nn.Softplus,
}


def _net(seed, widths, activation):
    torch.manual_seed(seed)
    layers = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [torch.nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
    return torch.nn.Sequential(*layers[:-1]).to(F64)


def _hessian_trace(u, x):
    """Reverse over reverse (torch has no forward mode through silu's backward)."""
    return torch.diagonal(jacrev(jacrev(u))(x)).sum()


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
    net = _net(seed, [dim] + [7] * depth + [1], activation)
    x = torch.randn(dim, dtype=F64, generator=torch.Generator().manual_seed(seed))
    u = lambda y: net(y).reshape(())  # noqa: E731
    with torch.no_grad():
        ref = _hessian_trace(u, x)
        got = forward_laplacian(u, x)
    assert abs(float(got - ref)) <= 1e-12 * max(1.0, abs(float(ref)))


@settings(max_examples=5, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    dim=st.integers(1, 4),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
)
def test_forward_laplacian_parameter_gradients_match(seed, dim, activation):
    """The PINN Jacobian rows (vmap over points of grad in the parameters) are the same."""
    net = _net(seed, [dim, 6, 6, 1], activation)
    params = {k: v.detach() for k, v in net.named_parameters()}
    pts = torch.randn(4, dim, dtype=F64, generator=torch.Generator().manual_seed(seed))

    def row(p, x, lap):
        u = lambda y: functional_call(net, p, (y,)).reshape(())  # noqa: E731
        return lap(u, x) + u(x) ** 3

    ref = vmap(grad(row), in_dims=(None, 0, None))(params, pts, _hessian_trace)
    got = vmap(grad(row), in_dims=(None, 0, None))(params, pts, forward_laplacian)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-11, atol=1e-11)


def test_forward_laplacian_of_products_quotients_closures_and_batch_style_modules():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 3, dtype=F64, generator=g)
    x = torch.tensor([0.3, -0.7, 1.1], dtype=F64)

    def v(y):
        h = torch.tanh(A @ y)
        return (
            (h @ torch.sin(y)) / (1.0 + y[0] ** 2)
            + torch.sqrt(1.0 + y @ y)
            + torch.stack([y[0], 2 * y[1]]).sum() * torch.exp(y[2])
            - 1.0 / (2.0 + torch.cos(y[1]))
        )

    torch.testing.assert_close(forward_laplacian(v, x), _hessian_trace(v, x))
    # the Laplacian in the last two coordinates of a closure over the first (heat equation)
    w = lambda s: v(torch.cat([x[:1], s]))  # noqa: E731
    torch.testing.assert_close(forward_laplacian(w, x[1:]), _hessian_trace(w, x[1:]))
    # a batch-style module called on x[None], (1, d) -> (1, 1)
    net = _net(1, [3, 5, 1], "tanh")
    u = lambda y: net(y[None]).reshape(())  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(forward_laplacian(u, x), _hessian_trace(u, x))
    assert float(forward_laplacian(lambda y: torch.tensor(2.0, dtype=F64), x)) == 0.0


def test_laplacian_falls_back_with_a_warning():
    def u(y):
        return torch.logsumexp(y, 0) + torch.sin(y).sum()

    x = torch.tensor([0.3, -0.7, 1.1], dtype=F64)
    with pytest.raises(Unsupported, match="logsumexp"):
        forward_laplacian(u, x)
    with pytest.warns(RuntimeWarning, match="logsumexp.*rev_over_rev"):
        got = slt.laplacian(u, x)
    torch.testing.assert_close(got, _hessian_trace(u, x))


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    dim=st.integers(1, 4),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    data=st.data(),
)
def test_derivatives_are_value_gradient_and_partial_laplacian(seed, dim, activation, data):
    """One forward pass gives u, grad u and the Laplacian over any subset of coordinates;
    under vmap and a parameter gradient the rows equal those of separate operators."""
    dims = data.draw(st.lists(st.integers(0, dim - 1), min_size=1, max_size=dim, unique=True))
    net = _net(seed, [dim, 6, 6, 1], activation)
    x = torch.randn(dim, dtype=F64, generator=torch.Generator().manual_seed(seed))
    u = lambda y: net(y).reshape(())  # noqa: E731
    with torch.no_grad():
        value, gradient, lap = slt.derivatives(u, x, laplacian_dims=dims)
        H = jacrev(jacrev(u))(x)
        torch.testing.assert_close(value, u(x), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(gradient, jacrev(u)(x), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(lap, H.diagonal()[dims].sum(), rtol=1e-11, atol=1e-11)

    params = {k: v.detach() for k, v in net.named_parameters()}
    pts = torch.randn(4, dim, dtype=F64, generator=torch.Generator().manual_seed(seed + 1))

    def one_pass(p, y):
        w = lambda z: functional_call(net, p, (z,)).reshape(())  # noqa: E731
        v, g, lap = slt.derivatives(w, y, laplacian_dims=dims)
        return g[0] - 0.25 * lap + v**3

    def separate(p, y):
        w = lambda z: functional_call(net, p, (z,)).reshape(())  # noqa: E731
        lap = torch.diagonal(jacrev(jacrev(w))(y))[dims].sum()
        return slt.time_derivative(w, y, 0) - 0.25 * lap + w(y) ** 3

    got = vmap(grad(one_pass), in_dims=(None, 0))(params, pts)
    ref = vmap(grad(separate), in_dims=(None, 0))(params, pts)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-10, atol=1e-10)


def test_derivatives_of_products_fallback_and_bad_dims(monkeypatch):
    import sketchlinalg._pinn

    # the warning is issued once per reason and process: forget the earlier tests'
    monkeypatch.setattr(sketchlinalg._pinn, "_laplacian_fallbacks", set())
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 3, dtype=F64, generator=g)
    x = torch.tensor([0.3, -0.7, 1.1], dtype=F64)

    def v(y):  # products of two x-dependent values: the weighted cross terms
        return (torch.tanh(A @ y) @ torch.sin(y)) * y[2] + y[0] * y[1] ** 2

    diag = torch.diagonal(jacrev(jacrev(v))(x))
    assert torch.allclose(slt.derivatives(v, x, laplacian_dims=[0, 2]).laplacian,
                          diag[0] + diag[2], rtol=1e-12)  # fmt: skip
    assert torch.allclose(slt.derivatives(v, x, laplacian_dims=-1).laplacian, diag[2])
    assert torch.allclose(slt.derivatives(v, x).laplacian, diag.sum())

    def w(y):
        return torch.logsumexp(y, 0) * y[0]

    with pytest.warns(RuntimeWarning, match="logsumexp.*reverse mode"):
        got = slt.derivatives(w, x, laplacian_dims=[1])
    torch.testing.assert_close(got.laplacian, torch.diagonal(jacrev(jacrev(w))(x))[1])
    torch.testing.assert_close(got.gradient, jacrev(w)(x))
    with pytest.raises(ValueError, match=r"laplacian_dims .*out of range"):
        slt.derivatives(v, x, laplacian_dims=[3])
    with pytest.raises(ValueError, match="repeats"):
        slt.derivatives(v, x, laplacian_dims=[1, -2])
    with pytest.raises(TypeError, match="laplacian_dims must be"):
        slt.derivatives(v, x, laplacian_dims=[0.5])
