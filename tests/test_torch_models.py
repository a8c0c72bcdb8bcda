"""PyTorch adapter: modules written for a batch of points (``x[:, 0:1]``), not one point."""

from __future__ import annotations

import functools
import math

import pytest

torch = pytest.importorskip("torch", reason="torch not installed")
slt = pytest.importorskip("sketchlinalg_torch", reason="sketchlinalg_torch not importable")

import sketchlinalg as sl  # noqa: E402

F64 = torch.float64


class BatchNet(torch.nn.Module):
    """A PINN written the way many are: columns sliced out of a batch ``(n, 2)``."""

    def __init__(self, width: int = 12, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.hidden = torch.nn.Linear(2, width)
        self.out = torch.nn.Linear(width, 1)

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        x, y = xy[:, 0:1], xy[:, 1:2]
        return self.out(torch.tanh(self.hidden(torch.cat([x, y], dim=1))))


class PointNet(torch.nn.Module):
    """The same network written for one point ``(2,)``."""

    def __init__(self, batch: BatchNet) -> None:
        super().__init__()
        self.hidden, self.out = batch.hidden, batch.out

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(xy)))


def poisson_terms(n: int = 6) -> list:
    """-Laplace(u) = 2 pi^2 sin(pi x) sin(pi y) on the unit square, u = 0 on its boundary."""
    g = torch.linspace(0, 1, n + 2, dtype=F64)[1:-1]
    interior = torch.cartesian_prod(g, g)
    t = torch.linspace(0, 1, 9, dtype=F64)
    zero, one = torch.zeros_like(t), torch.ones_like(t)
    boundary = torch.cat([torch.stack(p, 1) for p in ((t, zero), (t, one), (zero, t), (one, t))])

    def pde(u, x):
        f = 2 * math.pi**2 * torch.sin(math.pi * x[0]) * torch.sin(math.pi * x[1])
        return -slt.laplacian(u, x) - f

    return [
        slt.Term(pde, interior, weight=1.0, name="interior"),
        slt.Term(lambda u, x: u(x), boundary, weight=1.0, name="boundary"),
    ]


@pytest.mark.parametrize("path", ["materialized", "matrix-free"])
def test_a_batch_style_module_gives_the_per_point_system(path):
    batch = BatchNet().double()
    point = PointNet(batch)
    terms = poisson_terms()
    r_b, J_b, _ = slt.pinn_system(batch, None, terms, path=path)
    r_p, J_p, _ = slt.pinn_system(point, None, terms, path=path)
    eps = torch.finfo(F64).eps
    torch.testing.assert_close(r_b, r_p, rtol=100 * eps, atol=100 * eps)
    e = torch.eye(J_p.shape[1], dtype=F64)
    torch.testing.assert_close(J_b.matmat(e), J_p.matmat(e), rtol=100 * eps, atol=100 * eps)
    res = slt.pinn_residual(batch, None, terms)
    torch.testing.assert_close(res, r_p, rtol=100 * eps, atol=100 * eps)


def test_a_batch_style_module_trains_with_the_default_sngd():
    net = BatchNet(width=24).double()
    terms = poisson_terms()
    opt = slt.SNGD(
        net.named_parameters(),
        functools.partial(slt.pinn_system, net, terms=terms),
        residual_fn=functools.partial(slt.pinn_residual, net, terms=terms),
    )
    first = float(opt.step())
    for _ in range(23):
        last = float(opt.step())
    assert opt.last_step is not None
    assert opt.last_step.status == sl.Status.SUCCESS
    summary = sl.step_summary(opt)  # the optimizer itself, or opt.state[param]
    assert summary.startswith(f"loss {last:.3e}") and summary.endswith("skipped 0  success")
    assert last < 1e-4 * first  # 66 -> 5e-7 when written


def test_the_calling_convention_can_be_given_and_is_checked():
    net = BatchNet().double()
    terms = poisson_terms()
    with pytest.raises(IndexError):
        slt.pinn_system(net, None, terms, batched=False)
    with pytest.raises(TypeError, match="batched must be True, False or None, got 'yes'"):
        slt.pinn_system(net, None, terms, batched="yes")
    # A per-point module called on a batch of one gives the same rows.
    point = PointNet(net)
    r1, _, _ = slt.pinn_system(point, None, terms, batched=True)
    r2, _, _ = slt.pinn_system(point, None, terms, batched=False)
    torch.testing.assert_close(r1, r2)


def test_a_module_that_fits_neither_form_is_refused_with_both_attempts():
    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 2).double()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)

    with pytest.raises(ValueError, match=r"on a \(2,\) input it returned \(2,\); on a \(1, 2\)"):
        slt.pinn_system(Two(), None, poisson_terms())


def test_float32_parameters_with_float64_points_name_both_dtypes():
    net = BatchNet()  # float32, torch's default
    msg = r"points have dtype torch\.float64, the parameters torch\.float32"
    with pytest.raises(TypeError, match=msg):
        slt.pinn_system(net, None, poisson_terms())
    terms32 = [t._replace(points=t.points.float()) for t in poisson_terms()]
    r, _, _ = slt.pinn_system(net, None, terms32)
    assert r.dtype == torch.float32
