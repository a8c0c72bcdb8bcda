"""PyTorch adapter: the natural-gradient ``torch.optim.Optimizer`` classes."""

from __future__ import annotations

import copy
import functools
import io
import itertools
import math

import pytest

torch = pytest.importorskip("torch", reason="torch not installed")
slt = pytest.importorskip("sketchlinalg_torch", reason="sketchlinalg_torch not importable")

from example_loader import load_example  # noqa: E402
from torch_nets import mlp  # noqa: E402

import sketchlinalg as sl  # noqa: E402

F64 = torch.float64

OPTIMIZERS = {
    "SNGD": (slt.SNGD, {"rank": 10, "damping": 1e-6}),
    "SNGD-rademacher": (slt.SNGD, {"rank": 10, "damping": 1e-6, "sketch": "rademacher"}),
    "ENGD": (slt.ENGD, {"damping": 1e-6}),
    "ENGDWoodbury": (slt.ENGDWoodbury, {"damping": 1e-6}),
    "NystromPCG": (slt.NystromPCG, {"rank": 10, "damping": 1e-6}),
    "SPRING": (slt.SPRING, {"damping": 1e-6, "momentum": 0.5}),
}


def regression(dtype=F64, seed=0):
    """A tiny nonlinear least-squares problem: fit a teacher [1, 6, 1] tanh MLP with a
    student of the same shape (N = 24 residuals, P = 19 parameters)."""
    net = mlp([1, 6, 1], seed, dtype)
    teacher = mlp([1, 6, 1], seed + 10, dtype)
    x = torch.linspace(-2, 2, 24, dtype=dtype)[:, None]
    with torch.no_grad():
        y = teacher(x).reshape(-1)

    def residual(p):
        return torch.func.functional_call(net, p, (x,)).reshape(-1) - y

    return net, residual


def pinn_1d(dtype=F64, seed=0):
    """-u'' = pi^2 sin(pi x) on (0, 1), u(0) = u(1) = 0, with a [1, 8, 1] MLP (P = 25)."""
    net = mlp([1, 8, 1], seed, dtype)
    interior = torch.linspace(0, 1, 18, dtype=dtype)[1:-1, None]
    boundary = torch.tensor([[0.0], [1.0]], dtype=dtype)
    terms = [
        slt.Term(
            lambda u, x: -slt.laplacian(u, x) - math.pi**2 * torch.sin(math.pi * x[0]),
            interior,
            1.0,
        ),
        slt.Term(lambda u, x: u(x), boundary, 2.0),
    ]
    system_fn = functools.partial(slt.pinn_system, net, terms=terms)
    residual_fn = functools.partial(slt.pinn_residual, net, terms=terms)
    return net, system_fn, residual_fn


def loss_of(residual_fn, net):
    with torch.no_grad():
        r = residual_fn({k: v.detach() for k, v in net.named_parameters()})
    return float(0.5 * r @ r)


def snapshot(net):
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def assert_unchanged(net, before):
    for k, v in net.named_parameters():
        assert torch.equal(v.detach(), before[k]), k


# -- convergence ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("line_search", ["grid", "armijo", None])
def test_optimizers_decrease_a_least_squares_loss(name, line_search):
    cls, kwargs = OPTIMIZERS[name]
    net, residual = regression()
    start = loss_of(residual, net)
    lr = 1.0 if line_search is not None else 0.5
    opt = cls(
        net.named_parameters(), residual_fn=residual, line_search=line_search, lr=lr, **kwargs
    )
    losses = [float(opt.step()) for _ in range(6)]
    assert losses[0] == pytest.approx(start, rel=1e-12)
    end = loss_of(residual, net)
    assert end < 1e-2 * start, (losses, end)
    if line_search == "grid":  # the grid includes eta = 2^-30 ~ no step: never worse
        assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise([*losses, end]))
    assert opt.state[net[0].weight]["step"] == 6
    assert opt.jacobian_path == "matrix-free"


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizers_train_a_tiny_pinn(name):
    cls, kwargs = OPTIMIZERS[name]
    net, system_fn, residual_fn = pinn_1d()
    start = loss_of(residual_fn, net)
    opt = cls(net.named_parameters(), system_fn, residual_fn=residual_fn, **kwargs)
    for _ in range(10):
        opt.step()
    assert opt.jacobian_path == "materialized"
    assert loss_of(residual_fn, net) < 0.5 * start


def test_optimizer_passes_the_last_jacobian_back_as_workspace():
    """A system_fn taking ``workspace=`` gets the last step's matrix: no N x P allocation
    per step; when the points grow in number a new matrix is built (and kept), and the
    steps are bit-identical to a run whose system_fn takes no workspace."""
    net, system_fn, _ = pinn_1d()
    twin = copy.deepcopy(net)
    terms = system_fn.keywords["terms"]
    more = [torch.rand(20, 1, dtype=F64), terms[1].points]  # 22 rows instead of 18
    calls = []  # (workspace passed, storage of the J built)

    def with_workspace(p, workspace=None, points=None):
        out = slt.pinn_system(net, p, terms, workspace=workspace, points=points)
        calls.append(
            (None if workspace is None else workspace.data_ptr(), out.jacobian.matrix.data_ptr())
        )
        return out

    def without(p, points=None):
        return slt.pinn_system(twin, p, terms, points=points)

    runs = [
        slt.SNGD(
            m.named_parameters(),
            fn,
            rank=10,
            damping=1e-6,
            residual_fn=functools.partial(slt.pinn_residual, m, terms=terms),
        )
        for m, fn in ((net, with_workspace), (twin, without))
    ]
    for points in (None, None, more, None):
        for opt in runs:
            opt.step(points=points)
    (p0, j0), (p1, j1), (p2, j2), (p3, j3) = calls
    assert p0 is None and p1 == j0 and j1 == j0  # the first matrix is reused
    assert p2 == j0 and j2 != j0  # too small for 22 rows: a new one
    assert p3 == j2 and j3 == j2  # which is kept and reused for 18 rows
    for (k, a), b in zip(net.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b), k


def test_float32_works():
    net, residual = regression(dtype=torch.float32)
    start = loss_of(residual, net)
    opt = slt.SNGD(net.named_parameters(), residual_fn=residual, rank=10, damping=1e-4)
    for _ in range(5):
        opt.step()
    assert net[0].weight.dtype == torch.float32
    assert loss_of(residual, net) < 0.5 * start
    assert opt.state[net[0].weight]["loss"].dtype == torch.float32


def test_float32_defaults_keep_float32_state():
    """Defaults on a float32 model: the core's linear algebra runs in float64 (matrix-free J
    promoted), the parameters, the state and the returned loss stay float32."""
    net, residual = regression(dtype=torch.float32)
    start = loss_of(residual, net)
    opt = slt.SNGD(net.named_parameters(), residual_fn=residual)
    losses = [opt.step() for _ in range(5)]
    assert all(loss.dtype == torch.float32 for loss in losses)
    state = opt.state[net[0].weight]
    assert {v.dtype for v in state.values()} <= {torch.float32, torch.int32}, state
    assert loss_of(residual, net) < 0.5 * start


def test_sngd_with_full_rank_takes_the_engd_step():
    """rank >= P: the Nystrom approximation is G itself, so the damped directions agree."""
    steps = {}
    for name, cls, extra in (("sngd", slt.SNGD, {"rank": 19}), ("engd", slt.ENGD, {})):
        net, residual = regression()
        before = snapshot(net)
        opt = cls(
            net.named_parameters(), residual_fn=residual, damping=1e-3, line_search=None, **extra
        )
        opt.step()
        steps[name] = torch.cat(
            [(v.detach() - before[k]).reshape(-1) for k, v in net.named_parameters()]
        )
    torch.testing.assert_close(steps["sngd"], steps["engd"], rtol=1e-8, atol=1e-10)


def test_engd_woodbury_and_pcg_agree_with_engd():
    steps = {}
    for name, cls, extra in (
        ("engd", slt.ENGD, {}),
        ("woodbury", slt.ENGDWoodbury, {}),
        ("pcg", slt.NystromPCG, {"rank": 5, "rtol": 1e-13, "maxiter": 200}),
        ("spring0", slt.SPRING, {"momentum": 0.0}),
    ):
        net, residual = regression()
        before = snapshot(net)
        opt = cls(
            net.named_parameters(), residual_fn=residual, damping=1e-2, line_search=None, **extra
        )
        opt.step()
        steps[name] = torch.cat(
            [(v.detach() - before[k]).reshape(-1) for k, v in net.named_parameters()]
        )
    for name in ("woodbury", "pcg", "spring0"):
        torch.testing.assert_close(steps[name], steps["engd"], rtol=1e-7, atol=1e-10)


# -- state and resumption -------------------------------------------------------------


def _saved(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("name", ["SNGD", "SPRING", "NystromPCG"])
def test_resumed_run_is_bit_identical(name):
    cls, kwargs = OPTIMIZERS[name]

    def make(seed_model=0):
        net, system_fn, residual_fn = pinn_1d(seed=seed_model)
        opt = cls(net.named_parameters(), system_fn, residual_fn=residual_fn, seed=7, **kwargs)
        return net, opt

    net_a, opt_a = make()
    for _ in range(5):
        opt_a.step()

    net_b, opt_b = make()
    for _ in range(2):
        opt_b.step()
    model_state, opt_state = _saved(net_b.state_dict()), _saved(opt_b.state_dict())
    for _ in range(2):  # the interrupted run goes on a little: must not matter
        opt_b.step()

    net_c, opt_c = make(seed_model=1)  # different initial weights, overwritten by the load
    net_c.load_state_dict(model_state)
    opt_c.load_state_dict(opt_state)
    for _ in range(3):
        opt_c.step()
    for (k, a), (_, c) in zip(net_a.named_parameters(), net_c.named_parameters(), strict=True):
        assert torch.equal(a, c), k
    assert opt_c.state[net_c[0].weight]["step"] == 5


def test_sketches_differ_between_steps_and_seeds():
    def first_step(seed):
        net, residual = regression()
        opt = slt.SNGD(
            net.named_parameters(), residual_fn=residual, rank=4, damping=1e-6, seed=seed
        )
        before = snapshot(net)
        opt.step()
        return net[0].weight.detach() - before["0.weight"]

    torch.testing.assert_close(first_step(1), first_step(1), rtol=0, atol=0)
    assert not torch.equal(first_step(1), first_step(2))


def test_generator_argument_and_state_dict_entry():
    net, residual = regression()
    gen = torch.Generator().manual_seed(3)
    opt = slt.SNGD(
        net.named_parameters(), residual_fn=residual, rank=4, damping=1e-6, generator=gen
    )
    assert opt.generator is gen
    state0 = gen.get_state().clone()
    opt.step()
    assert not torch.equal(gen.get_state(), state0)
    sd = opt.state_dict()
    assert torch.equal(sd["sketch_generator"], gen.get_state())
    assert sd["param_groups"][0]["param_names"][0] == "0.weight"
    with pytest.raises(TypeError, match=r"torch\.Generator"):
        slt.SNGD(net.named_parameters(), residual_fn=residual, rank=4, damping=1e-6, generator=3)


# -- torch conventions ------------------------------------------------------------------


def test_param_groups_scale_the_step_and_lr_zero_freezes_a_group():
    net, residual = regression()
    before = snapshot(net)
    groups = [
        {"params": list(net[0].named_parameters(prefix="0"))},
        {"params": list(net[2].named_parameters(prefix="2")), "lr": 0.0},
    ]
    opt = slt.ENGD(groups, residual_fn=residual, damping=1e-3, line_search=None)
    opt.step()
    assert not torch.equal(net[0].weight.detach(), before["0.weight"])
    assert torch.equal(net[2].weight.detach(), before["2.weight"])
    # lr multiplies the step of its group: half the lr, half the step (same direction)
    steps = {}
    for lr in (1.0, 0.5):
        net, residual = regression()
        before = snapshot(net)
        opt = slt.ENGD(net.named_parameters(), residual_fn=residual, damping=1e-3, lr=lr)
        opt.step()
        steps[lr] = net[0].weight.detach() - before["0.weight"]
    torch.testing.assert_close(steps[0.5], 0.5 * steps[1.0], rtol=1e-12, atol=1e-15)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr must be a finite float >= 0"):
        opt.step()


def test_unnamed_parameters_are_keyed_by_position_and_closure_is_returned():
    x = torch.zeros(3, dtype=F64, requires_grad=True)
    A = torch.randn(8, 3, dtype=F64, generator=torch.Generator().manual_seed(0))

    def residual(p):
        return A @ p[0] - 1.0

    opt = slt.ENGD([x], residual_fn=residual, damping=0.0)
    assert opt.step(lambda: "closure value") == "closure value"
    ref = torch.linalg.lstsq(A, torch.ones(8, dtype=F64)).solution
    torch.testing.assert_close(x.detach(), ref, rtol=1e-10, atol=1e-12)  # one GN step: exact
    opt.zero_grad()


def test_frozen_parameters_are_passed_but_not_optimized():
    net, system_fn, residual_fn = pinn_1d()
    net[0].bias.requires_grad_(False)
    before = snapshot(net)
    opt = slt.SNGD(
        net.named_parameters(), system_fn, residual_fn=residual_fn, rank=10, damping=1e-8
    )
    opt.step()
    assert torch.equal(net[0].bias.detach(), before["0.bias"])
    assert not torch.equal(net[0].weight.detach(), before["0.weight"])


# -- bad input ------------------------------------------------------------------------------


def test_bad_residuals_raise_and_leave_parameters_unchanged():
    net, residual = regression()
    before = snapshot(net)
    bad = {
        "2-D": (lambda p: residual(p)[:, None], ValueError, "1-D residual"),
        "not a tensor": (lambda p: residual(p).tolist(), TypeError, "array of shape"),
        "dtype": (lambda p: residual(p).float(), TypeError, "dtype"),
    }
    for label, (fn, error, match) in bad.items():
        opt = slt.SNGD(
            net.named_parameters(), residual_fn=fn, rank=5, damping=1e-8, line_search=None
        )
        with pytest.raises(error, match=match):
            opt.step()
        assert_unchanged(net, before)
        assert "step" not in opt.state[net[0].weight], label


def test_bad_system_fn_output_raises():
    net, residual = regression()
    before = snapshot(net)

    def wrong_shape(p):
        r, J = slt.jacobian_operator(residual, p)
        return r[:-1], J

    opt = slt.ENGD(net.named_parameters(), wrong_shape, residual_fn=residual)
    with pytest.raises(ValueError, match="expected"):
        opt.step()
    opt = slt.ENGD(net.named_parameters(), lambda p: residual(p), residual_fn=residual)
    with pytest.raises(TypeError, match=r"\(r, J\)"):
        opt.step()
    opt = slt.ENGD(net.named_parameters(), lambda p: (residual(p), None), residual_fn=residual)
    with pytest.raises(TypeError, match="LinearOperator"):
        opt.step()
    assert_unchanged(net, before)


def test_non_finite_steps_are_skipped_counted_and_warned():
    """One policy with the JAX optimizers: NaN in J or r leaves the parameters unchanged, the
    state counts a skipped step with status NONFINITE, and a StepWarning says so."""
    net, residual = regression()
    before = snapshot(net)

    def nan_jacobian(p):
        r, J = slt.jacobian_operator(residual, p)
        return r, sl.aslinearoperator(J.to_dense() * torch.nan)

    for system_fn, fn in ((nan_jacobian, residual), (None, lambda p: residual(p) / 0.0)):
        opt = slt.SNGD(net.named_parameters(), system_fn, residual_fn=fn, rank=5, damping=1e-8)
        with pytest.warns(sl.StepWarning, match="not taken"):
            opt.step()
        assert_unchanged(net, before)
        state = opt.state[net[0].weight]
        assert int(state["skipped"]) == 1 and int(state["status"]) == sl.Status.NONFINITE
        assert opt.last_step.status is sl.Status.NONFINITE


def test_constructor_errors_name_the_argument():
    net, residual = regression()
    params = list(net.named_parameters())
    frozen = [(k, v.detach()) for k, v in params]
    with pytest.raises(ValueError, match="no trainable parameter"):
        slt.ENGD(frozen, residual_fn=residual)
    with pytest.raises(ValueError, match=r"rank must be <= P = 19.*got 20"):
        slt.SNGD(params, residual_fn=residual, rank=20, damping=1e-8)
    with pytest.raises(ValueError, match="damping must be > 0 with method='nystrom'"):
        slt.SNGD(params, residual_fn=residual, rank=5, damping=0.0)
    slt.SNGD(params, residual_fn=residual, rank=5, damping=0.0, inverse="projected")
    with pytest.raises(ValueError, match="damping must be >= 0"):
        slt.ENGD(params, residual_fn=residual, damping=-1.0)
    with pytest.raises(ValueError, match="line_search"):
        slt.ENGD(params, residual_fn=residual, line_search="wolfe")
    with pytest.raises(ValueError, match=r"sketch must be one of .*got 'srht'"):
        slt.SNGD(params, residual_fn=residual, rank=5, damping=1e-6, sketch="srht")
    with pytest.raises(ValueError, match="needs residual_fn"):
        slt.ENGD(params, lambda p: slt.jacobian_operator(residual, p))
    with pytest.raises(TypeError, match="system_fn"):
        slt.ENGD(params)
    with pytest.raises(ValueError, match="momentum"):
        slt.SPRING(params, residual_fn=residual, damping=1e-6, momentum=1.0)
    with pytest.raises(ValueError, match="lr must be a finite float >= 0"):
        slt.ENGD(params, residual_fn=residual, lr=-1.0)
    slt.ENGD(params, residual_fn=residual, lr=0.0)  # schedulers anneal to 0
    with pytest.raises(TypeError, match="unknown option"):
        slt.ENGD(params, residual_fn=residual, rank=3)
    with pytest.raises(ValueError, match="only 'lr' may be set per group"):
        slt.ENGD([{"params": [params[0][1]], "damping": 1.0}], residual_fn=residual)


# -- the example ------------------------------------------------------------------------------


def test_poisson_example_runs_small(capsys):
    example = load_example("torch_poisson2d")
    argv = ["--steps", "3", "--width", "12", "--n-interior", "6", "--n-side", "5"]
    out = example.main(
        [*argv, "--rank", "30", "--n-eval", "20", "--eval-every", "3", "--print-every", "1"]
    )
    text = capsys.readouterr().out
    assert out["steps"] == 3 and math.isfinite(out["error"])
    assert text.count("\nstep ") == 3 and "L2 error" in text
    assert text.splitlines()[-1].startswith("final: 3 iterations")
    interior, boundary = example.collocation(30, 30, F64)
    assert interior.shape == (900, 2) and boundary.shape == (120, 2)
    assert len({tuple(p) for p in boundary.tolist()}) == 120  # every corner once
    assert copy.deepcopy(out) == out
