"""Jacobian rows of torch MLPs from layer factors (``sketchlinalg_torch._mlp``): equal to the
generic per-point gradients, and the generic path wherever the factors do not apply."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import sketchlinalg_torch as slt  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sketchlinalg_torch import _mlp, _pinn  # noqa: E402
from sketchlinalg_torch._mlp import MLP  # noqa: E402
from torch.func import functional_call  # noqa: E402

ACTIVATIONS = {
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
    "silu": torch.nn.SiLU,
    "softplus": torch.nn.Softplus,
}


def _net(seed, widths, activation, dtype, bias=True):
    torch.manual_seed(seed)
    layers = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [torch.nn.Linear(fan_in, fan_out, bias=bias), ACTIVATIONS[activation]()]
    return torch.nn.Sequential(*layers[:-1]).to(dtype)


def _terms(kind, points, dim):
    """Residuals that reach u through the forward Laplacian, plain calls, several calls."""

    def interior(u, x):
        if kind == "laplacian":
            return -slt.laplacian(u, x) + torch.sin(x.sum())
        if kind == "derivatives":  # value, gradient and a partial Laplacian, u^3
            value, grad, lap = slt.derivatives(u, x, laplacian_dims=range(1, dim))
            return grad[0] - lap + value**3
        # two calls of u and a Laplacian: their products add up
        return u(x) * u(0.5 * x) - slt.laplacian(u, x)

    def boundary(u, x):
        return u(x) - x[0]

    return [
        slt.Term(interior, points[0], weight=2.0, name="interior"),
        slt.Term(boundary, points[1], weight=0.5, name="boundary"),
    ]


def _generic(monkeypatch, model, params, terms):
    with monkeypatch.context() as m:
        m.setattr(_pinn.MLP, "of", classmethod(lambda cls, module: None))
        return slt.pinn_system(model, params, terms, path="materialized")


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    dim=st.integers(2, 4),
    depth=st.integers(1, 3),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    kind=st.sampled_from(["laplacian", "derivatives", "two-calls"]),
    bias=st.booleans(),
    frozen=st.booleans(),
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_factor_rows_equal_the_generic_rows(
    monkeypatch, dtype, seed, dim, depth, activation, kind, bias, frozen
):
    model = _net(seed, [dim] + [6] * depth + [1], activation, dtype, bias)
    params = dict(model.named_parameters())
    if frozen:  # the first layer's weight is not trained: no columns for it
        params["0.weight"] = params["0.weight"].detach()
    g = torch.Generator().manual_seed(seed)
    points = [
        torch.rand(9, dim, generator=g, dtype=dtype),
        torch.rand(4, dim, generator=g, dtype=dtype),
    ]
    terms = _terms(kind, points, dim)
    r, J, path = slt.pinn_system(model, params, terms, path="materialized")
    mlp = MLP.of(model)
    assert mlp is not None and all(probe is not None for probe, _ in mlp.checked.values())
    r0, J0, _ = _generic(monkeypatch, model, params, terms)
    eps = float(torch.finfo(dtype).eps)
    scale = float(J0.matrix.abs().max())
    assert path == "materialized" and J.shape == J0.shape
    assert float((J.matrix - J0.matrix).abs().max()) <= 100 * eps * max(1.0, scale)
    assert float((r - r0).abs().max()) <= 100 * eps * max(1.0, float(r0.abs().max()))


def test_repeated_builds_reuse_zero_ghosts_and_stay_exact(monkeypatch):
    # The factor pass keeps its zero "ghost" leaves between builds: builds with other point
    # counts, new parameters and repeats must give the generic rows every time, and the
    # kept ghosts must stay zero and gradient-free.
    model = _net(3, [3, 6, 6, 1], "tanh", torch.float64)
    g = torch.Generator().manual_seed(3)
    for n, step in [(9, 0.0), (5, 0.1), (9, 0.2), (9, 0.2)]:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(step)
        points = [
            torch.rand(n, 3, generator=g, dtype=torch.float64),
            torch.rand(4, 3, generator=g, dtype=torch.float64),
        ]
        terms = _terms("derivatives", points, 3)
        r, J, _ = slt.pinn_system(model, None, terms, path="materialized")
        r0, J0, _ = _generic(monkeypatch, model, None, terms)
        assert torch.allclose(J.matrix, J0.matrix, rtol=1e-12, atol=1e-14)
        assert torch.allclose(r, r0, rtol=1e-12, atol=1e-14)
    kept = [t for ghosts in MLP.of(model)._ghosts.values() for t in ghosts]
    assert kept and all(t.grad is None and not t.any() for t in kept)


@pytest.mark.parametrize("derivative", ["gradient", "time_derivative"])
def test_reverse_and_tangent_derivatives_fall_back_to_the_generic_rows(monkeypatch, derivative):
    # The weights then also act in the backward (or tangent) pass, which the factors miss:
    # the first comparison sees it, and the generic rows are used.
    model = _net(0, [2, 5, 5, 1], "tanh", torch.float64)
    diff = getattr(slt, derivative)

    def interior(u, x):
        d = diff(u, x)
        return (d.sum() if d.ndim else d) - slt.laplacian(u, x)

    points = torch.rand(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    terms = [slt.Term(interior, points, name="interior")]
    _, J, _ = slt.pinn_system(model, None, terms)
    assert list(MLP.of(model).checked.values()) == [(None, None)]  # no factor rows
    _, J0, _ = _generic(monkeypatch, model, None, terms)
    assert torch.allclose(J.matrix, J0.matrix, rtol=1e-12, atol=1e-14)


def test_a_fallback_is_remembered_per_residual_function(monkeypatch):
    model = _net(1, [2, 4, 1], "tanh", torch.float64)
    calls = []
    real = _mlp.factor_rows

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_pinn, "factor_rows", counting)

    def residual(u, x):
        return slt.gradient(u, x).sum()  # reverse mode: no factor rows

    points = torch.rand(5, 2, dtype=torch.float64)
    for _ in range(3):
        slt.pinn_system(model, None, [slt.Term(residual, points)])
    assert len(calls) == 1  # checked once, then the generic path without asking again


def test_mlp_recognizes_sequentials_of_linear_layers_only():
    assert MLP.of(torch.nn.Linear(2, 1)) is None  # not a Sequential
    assert MLP.of(torch.nn.Sequential(torch.nn.Tanh())) is None  # no linear layer
    norm = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 1))
    assert MLP.of(norm) is None  # parameters outside nn.Linear
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    mlp = MLP.of(net)
    assert mlp is not None and MLP.of(net) is mlp  # remembered
    assert mlp.linears == [("0.weight", "0.bias"), ("2.weight", "2.bias")]
    net[2] = torch.nn.Linear(3, 1, bias=False)  # a changed module is looked at again
    assert MLP.of(net) is not mlp and MLP.of(net).linears[1] == ("2.weight", None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mlp_forward_equals_the_modules(dtype):
    net = _net(3, [3, 8, 8, 1], "silu", dtype)
    params = {k: v + 0.1 for k, v in net.named_parameters()}  # not the module's own
    x = torch.rand(5, 3, dtype=dtype)
    ref = functional_call(net, params, (x,))
    got = torch.stack([MLP.of(net)(params, xi) for xi in x])
    assert torch.allclose(
        got.reshape(-1), ref.reshape(-1), rtol=0, atol=10 * float(torch.finfo(dtype).eps)
    )
    # and the residual through it is the generic one
    terms = [slt.Term(lambda u, y: u(y) - 1.0, x)]
    r = slt.pinn_residual(net, params, terms)
    assert np.allclose(r.detach().numpy(), (ref.reshape(-1) - 1.0).detach().numpy() / np.sqrt(5))
