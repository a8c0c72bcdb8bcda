"""Batched PINN evaluation for torch MLPs (``sketchlinalg_torch._batched``): a per-point
residual run once on all its points, in the layout where its values equal the ``vmap``
ones, and ``vmap`` wherever no layout does."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

import sketchlinalg_torch as slt  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sketchlinalg_torch import _batched  # noqa: E402
from sketchlinalg_torch._mlp import MLP  # noqa: E402
from torch.func import vmap  # noqa: E402


class _Wrapped(torch.nn.Module):
    """The same network outside the MLP fast paths: the ``vmap`` reference."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def _net(seed, widths, dtype):
    torch.manual_seed(seed)
    layers = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1]).to(dtype)


def _columns_stack(u, x):  # new points built as columns
    return u(torch.stack([x[0], 0 * x[0] + 1.0, x[2]])) - u(x)


def _derivatives(u, x):
    value, g, lap = slt.derivatives(u, x, laplacian_dims=[1, 2])
    return g[0] - lap + value**3 + torch.cos(x[1])


# residual -> the layout its batched evaluation takes (None: vmap), for d = 3
RESIDUALS = {
    "laplacian": (lambda u, x: -slt.laplacian(u, x) + torch.sin(x[0]), "columns"),
    "batch-style": (lambda u, x: u(x) - torch.sin(x[..., 0]), "rows"),
    "stack": (_columns_stack, "columns"),
    "derivatives": (_derivatives, "columns"),
    "time-derivative": (lambda u, x: slt.time_derivative(u, x, 1) * u(0.5 * x), "columns"),
    "gradient": (lambda u, x: slt.gradient(u, x)[2] - x[1] * u(x), "columns"),
    "reduces-x": (lambda u, x: u(x) * x.sum(), None),
    "func-grad": (lambda u, x: torch.func.grad(u)(x).sum(), None),
    "divergence": (lambda u, x: slt.divergence(lambda y: y * u(y), x), None),
    "fixed-point": (lambda u, x: u(x) - u(torch.zeros(3, dtype=x.dtype)), None),
}


def _tol(dtype):
    return 50 * float(torch.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(RESIDUALS))
def test_batched_residual_and_jacobian_equal_vmap(dtype, name):
    residual, expected = RESIDUALS[name]
    net = _net(0, [3, 8, 8, 1], dtype)
    pts = torch.rand(11, 3, dtype=dtype, generator=torch.Generator().manual_seed(1))
    terms = [slt.Term(residual, pts, weight=2.0, name=name)]
    r = slt.pinn_residual(net, None, terms).detach()
    (layout,) = MLP.of(net).batch_layouts.values()
    assert layout == expected
    ref_net = _Wrapped(net)
    r0 = slt.pinn_residual(ref_net, None, terms).detach()
    scale = max(1.0, float(r0.abs().max()))
    assert float((r - r0).abs().max()) <= _tol(dtype) * scale
    # the Jacobian: factor rows from the batched pass where it applies
    _, J, _ = slt.pinn_system(net, None, terms, path="materialized")
    _, J0, _ = slt.pinn_system(ref_net, None, terms, path="materialized")
    assert float((J.matrix - J0.matrix).abs().max()) <= _tol(dtype) * max(
        1.0, float(J0.matrix.abs().max())
    )
    probes = list(MLP.of(net).checked.values())
    if expected is not None:  # the factor rows ran on the batch
        assert [batch for _, batch in probes] == [expected]


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    dim=st.integers(1, 4),
    n=st.integers(2, 9),
    depth=st.integers(1, 3),
    name=st.sampled_from(["laplacian-dims", "value", "gradient", "two-calls"]),
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_values_equal_vmap_on_random_networks(dtype, seed, dim, n, depth, name):
    # n = dim and n = 2 included: square batches where a wrong layout would still run
    def residual(u, x):
        if name == "laplacian-dims":
            value, g, lap = slt.derivatives(u, x, laplacian_dims=range(dim - 1, dim))
            return g[0] - lap + value**2
        if name == "value":
            return u(x) - x[0]
        if name == "gradient":
            return slt.gradient(u, x)[dim - 1] * u(x)
        return u(x) * u(0.5 * x) - slt.laplacian(u, x)

    net = _net(seed, [dim] + [5] * depth + [1], dtype)
    pts = torch.rand(n, dim, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    terms = [slt.Term(residual, pts)]
    r = slt.pinn_residual(net, None, terms).detach()
    assert list(MLP.of(net).batch_layouts.values()) != [None]  # batched
    r0 = slt.pinn_residual(_Wrapped(net), None, terms).detach()
    assert float((r - r0).abs().max()) <= _tol(dtype) * max(1.0, float(r0.abs().max()))


def test_decided_once_and_reused_under_function_transforms():
    net = _net(2, [3, 6, 1], torch.float64)
    params = {k: v.detach() for k, v in net.named_parameters()}
    pts = torch.rand(7, 3, dtype=torch.float64)
    terms = [slt.Term(RESIDUALS["laplacian"][0], pts)]
    ref_net = _Wrapped(net)
    direction = {k: torch.randn_like(v) for k, v in params.items()}

    def moved(eta, prefix=""):
        return {prefix + k: v - eta * direction[k] for k, v in params.items()}

    def grid():
        return vmap(lambda e: slt.pinn_residual(net, moved(e), terms))(etas)

    etas = torch.tensor([0.0, 0.1, 0.5], dtype=torch.float64)
    before = grid()  # unknown under vmap: mapped over the points, and nothing decided
    assert MLP.of(net).batch_layouts == {}
    slt.pinn_residual(net, params, terms)  # a plain call decides
    assert list(MLP.of(net).batch_layouts.values()) == ["columns"]
    after = grid()  # batched, under the vmap over step sizes
    loop = torch.stack([slt.pinn_residual(ref_net, moved(float(e), "net."), terms) for e in etas])
    assert torch.allclose(before, loop, rtol=1e-12, atol=1e-13)
    assert torch.allclose(after, loop, rtol=1e-12, atol=1e-13)
    # the matrix-free Jacobian (JVPs and VJPs of the batched residual) equals the explicit one
    _, Jm, path = slt.pinn_system(net, None, terms, path="matrix-free")
    _, J, _ = slt.pinn_system(net, None, terms, path="materialized")
    assert path == "matrix-free"
    eye = torch.eye(J.shape[1], dtype=torch.float64)
    assert torch.allclose(Jm.matmat(eye), J.matrix, rtol=1e-10, atol=1e-12)


def test_a_batch_that_fails_later_falls_back_to_vmap():
    # Right when it was decided, failing later (a branch the check did not see): vmap from
    # then on, with the right values, for the residual and the Jacobian.
    net = _net(4, [2, 6, 1], torch.float64)
    fail = []

    def residual(u, x):
        if fail and x.ndim == 2:
            raise RuntimeError("a branch only a batch takes")
        return u(x) - x[0]

    terms = [slt.Term(residual, torch.rand(6, 2, dtype=torch.float64))]
    slt.pinn_residual(net, None, terms)
    assert list(MLP.of(net).batch_layouts.values()) == ["columns"]
    fail.append(True)
    r = slt.pinn_residual(net, None, terms).detach()
    assert list(MLP.of(net).batch_layouts.values()) == [None]
    r0 = slt.pinn_residual(_Wrapped(net), None, terms).detach()
    assert torch.allclose(r, r0, rtol=1e-13, atol=1e-14)
    # the Jacobian of a residual whose batch fails after its factor check
    fail.clear()
    other = [slt.Term(lambda u, x: residual(u, x) * 2.0, terms[0].points)]
    slt.pinn_system(net, None, other)
    fail.append(True)
    _, J, _ = slt.pinn_system(net, None, other)
    _, J0, _ = slt.pinn_system(_Wrapped(net), None, other)
    assert torch.allclose(J.matrix, J0.matrix, rtol=1e-13, atol=1e-14)


def test_a_single_point_is_mapped_and_the_layout_is_off_outside_a_batch():
    net = _net(5, [3, 4, 1], torch.float64)
    terms = [slt.Term(RESIDUALS["laplacian"][0], torch.rand(1, 3, dtype=torch.float64))]
    slt.pinn_residual(net, None, terms)
    assert list(MLP.of(net).batch_layouts.values()) == [None]
    assert _batched.batch_layout() is None
    with pytest.raises(ValueError, match="one point of shape"):  # outside: per point only
        slt.laplacian(lambda y: (y**2).sum(), torch.rand(4, 3))


@pytest.mark.parametrize("name", ["laplacian", "derivatives", "stack", "batch-style"])
def test_autograd_through_the_batched_residual_equals_vmap(name):
    # first-order optimizers (L-BFGS, Adam) differentiate pinn_residual with autograd
    residual, _ = RESIDUALS[name]
    net = _net(6, [3, 8, 8, 1], torch.float64)
    pts = torch.rand(9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    terms = [slt.Term(residual, pts)]
    grads = []
    for model in (net, _Wrapped(net)):
        r = slt.pinn_residual(model, None, terms)
        loss = 0.5 * (r * r).sum()
        grads.append(torch.autograd.grad(loss, list(net.parameters()), materialize_grads=True))
    assert list(MLP.of(net).batch_layouts.values()) != [None]
    for g, g0 in zip(*grads, strict=True):
        assert torch.allclose(g, g0, rtol=1e-11, atol=1e-12)


def test_points_that_make_a_wrong_layout_right_do_not_decide_it():
    # u(x) - x[..., 1] is written for rows; on two points of d = 2 with p1[0] == p0[1] the
    # columns layout gives the same values, so the decision also looks at moved points
    net = _net(7, [2, 6, 1], torch.float64)

    def residual(u, x):
        return u(x) - x[..., 1]

    pts = torch.tensor([[0.2, 0.7], [0.7, 0.4]], dtype=torch.float64)
    params = {k: v.detach() for k, v in net.named_parameters()}
    wrong = _batched.evaluate(MLP.of(net), residual, pts, "columns", params)
    ref_net = _Wrapped(net)
    r0 = slt.pinn_residual(ref_net, None, [slt.Term(residual, pts)]).detach()
    assert torch.allclose(wrong * 2**-0.5, r0, rtol=1e-14, atol=1e-15)  # the coincidence
    terms = [slt.Term(residual, pts)]
    slt.pinn_residual(net, None, terms)
    assert list(MLP.of(net).batch_layouts.values()) == ["rows"]
    other = torch.tensor([[0.1, 0.3], [0.5, 0.9]], dtype=torch.float64)
    r = slt.pinn_residual(net, None, terms, points=[other]).detach()
    r0 = slt.pinn_residual(ref_net, None, terms, points=[other]).detach()
    assert torch.allclose(r, r0, rtol=1e-13, atol=1e-14)
