"""Conformance: the JAX (optax) and PyTorch (torch.optim) optimizers run the core's one step
and must behave the same, number for number, on the same problem.

Both frameworks train the same tiny PINN (-u'' = pi^2 sin(pi x) on (0, 1), u(0) = u(1) = 0,
a [1, 8, 1] tanh network with identical weights; both flatten the parameters as
W0, b0, W1, b1) through the same scenarios: every optimizer and line search, the learning
rate, a NaN residual at one step, a term of weight 0, a checkpoint and resume, and the
Jacobian path. Sketched methods run at full rank so that their direction does not depend on
the framework's random numbers.
"""

from __future__ import annotations

import functools
import io
import math
import pickle
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
optax = pytest.importorskip("optax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402
import sketchlinalg_torch as slt  # noqa: E402

import sketchlinalg as sl  # noqa: E402

PI = math.pi
P = 8 + 8 + 8 + 1
# Damping well above rounding: the two frameworks' Jacobians differ by rounding (~1e-15
# relative), which a solve amplifies by cond(G + mu I) <= (||G|| + mu) / mu.
DAMPING = 1e-3
INTERIOR = (np.arange(10) + 0.5)[:, None] / 10
BOUNDARY = np.array([[0.0], [1.0]])


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((8, 1)), rng.standard_normal(8) * 0.3),
        (rng.standard_normal((1, 8)) / 3, np.zeros(1)),
    ]


class JaxRun:
    """The problem and one optimizer in JAX (eager, so that warnings surface as in torch)."""

    def __init__(self, make, weights, boundary_weight=2.0):
        self.params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in weights]

        def mlp(p, x):
            (W0, b0), (W1, b1) = p
            return (W1 @ jnp.tanh(W0 @ x + b0) + b1)[0]

        terms = [
            slj.Term(
                lambda u, x: -slj.laplacian(u, x) - PI**2 * jnp.sin(PI * x[0]),
                jnp.asarray(INTERIOR),
                1.0,
            ),
            slj.Term(lambda u, x: u(x), jnp.asarray(BOUNDARY), boundary_weight),
        ]
        self.system = functools.partial(slj.pinn_system, mlp, terms=terms)
        self.opt = make(self.system, functools.partial(slj.pinn_residual, mlp, terms=terms))
        self.state = self.opt.init(self.params)

    def step(self, **extra):
        updates, self.state = self.opt.update(None, self.state, self.params, **extra)
        self.params = optax.apply_updates(self.params, updates)
        return self.record()

    def record(self):
        flat = np.concatenate([np.ravel(np.asarray(a)) for W, b in self.params for a in (W, b)])
        s = self.state
        return (float(s.loss), float(s.step_size), int(s.skipped), int(s.status), flat)

    def checkpoint(self):
        return pickle.dumps((self.params, self.state))

    def restore(self, blob):
        self.params, self.state = pickle.loads(blob)


class TorchRun:
    """The problem and one optimizer in PyTorch."""

    def __init__(self, make, weights, boundary_weight=2.0):
        self.net = torch.nn.Sequential(
            torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
        ).double()
        with torch.no_grad():
            for layer, (W, b) in zip((self.net[0], self.net[2]), weights, strict=True):
                layer.weight.copy_(torch.from_numpy(W))
                layer.bias.copy_(torch.from_numpy(b))
        terms = [
            slt.Term(
                lambda u, x: -slt.laplacian(u, x) - PI**2 * torch.sin(PI * x[0]),
                torch.from_numpy(INTERIOR),
                1.0,
            ),
            slt.Term(lambda u, x: u(x), torch.from_numpy(BOUNDARY), boundary_weight),
        ]
        self.system = functools.partial(slt.pinn_system, self.net, terms=terms)
        residual = functools.partial(slt.pinn_residual, self.net, terms=terms)
        self.opt = make(self.net.named_parameters(), self.system, residual)

    def step(self, **extra):
        self.opt.step(**extra)
        return self.record()

    def record(self):
        flat = np.concatenate([p.detach().numpy().ravel() for p in self.net.parameters()])
        s = self.opt.state[self.net[0].weight]
        return (float(s["loss"]), float(s["step_size"]), int(s["skipped"]), int(s["status"]), flat)

    def checkpoint(self):
        buf = io.BytesIO()
        torch.save((self.net.state_dict(), self.opt.state_dict()), buf)
        return buf.getvalue()

    def restore(self, blob):
        model, opt = torch.load(io.BytesIO(blob), weights_only=False)
        self.net.load_state_dict(model)
        self.opt.load_state_dict(opt)


def _optimizers(line_search, **extra):
    """(jax factory, torch factory) pairs with the same settings."""
    kw = {"line_search": line_search, **extra}
    return {
        "engd": (
            lambda s, r: slj.engd(s, residual_fn=r, damping=DAMPING, **kw),
            lambda p, s, r: slt.ENGD(p, s, residual_fn=r, damping=DAMPING, **_lr(kw)),
        ),
        "engd-woodbury": (
            lambda s, r: slj.engd_woodbury(s, residual_fn=r, damping=DAMPING, **kw),
            lambda p, s, r: slt.ENGDWoodbury(p, s, residual_fn=r, damping=DAMPING, **_lr(kw)),
        ),
        "spring": (
            lambda s, r: slj.spring(s, residual_fn=r, damping=DAMPING, momentum=0.5, **kw),
            lambda p, s, r: slt.SPRING(
                p, s, residual_fn=r, damping=DAMPING, momentum=0.5, **_lr(kw)
            ),
        ),
        "sngd": (
            lambda s, r: slj.sngd(s, residual_fn=r, damping=DAMPING, rank=P, **kw),
            lambda p, s, r: slt.SNGD(p, s, residual_fn=r, damping=DAMPING, rank=P, **_lr(kw)),
        ),
        "nystrom-pcg": (
            lambda s, r: slj.nystrom_pcg(
                s, residual_fn=r, damping=DAMPING, rank=P, rtol=1e-13, maxiter=200, **kw
            ),
            lambda p, s, r: slt.NystromPCG(
                p, s, residual_fn=r, damping=DAMPING, rank=P, rtol=1e-13, maxiter=200, **_lr(kw)
            ),
        ),
    }


def _lr(kw):
    """torch spells the learning rate ``lr``."""
    kw = dict(kw)
    if "learning_rate" in kw:
        kw["lr"] = kw.pop("learning_rate")
    return kw


def _pair(name, line_search="grid", boundary_weight=2.0, **extra):
    mj, mt = _optimizers(line_search, **extra)[name]
    w = _weights()
    return JaxRun(mj, w, boundary_weight), TorchRun(mt, w, boundary_weight)


def _assert_same(a, b, rtol):
    loss_a, eta_a, skip_a, status_a, flat_a = a
    loss_b, eta_b, skip_b, status_b, flat_b = b
    assert (skip_a, status_a) == (skip_b, status_b)
    assert eta_a == pytest.approx(eta_b, rel=1e-12), (eta_a, eta_b)
    assert loss_a == pytest.approx(loss_b, rel=rtol, nan_ok=True), (loss_a, loss_b)
    np.testing.assert_allclose(flat_a, flat_b, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", ["engd", "engd-woodbury", "spring", "sngd", "nystrom-pcg"])
@pytest.mark.parametrize("line_search", ["grid", "armijo", None])
def test_same_steps_in_both_frameworks(name, line_search):
    jr, tr = _pair(name, line_search, learning_rate=1.0 if line_search else 0.5)
    # full-rank sketches agree to rounding amplified by the sketch's condition number
    rtol = 1e-7 if name in ("sngd", "nystrom-pcg") else 1e-9
    for _ in range(3):
        _assert_same(jr.step(), tr.step(), rtol)


def test_learning_rate_scales_the_step_after_the_line_search():
    runs = {lr: _pair("engd", "grid", learning_rate=lr) for lr in (1.0, 0.5)}
    (j1, t1), (j5, t5) = runs[1.0], runs[0.5]
    start = j1.record()[4]
    a1, b1, a5, b5 = j1.step(), t1.step(), j5.step(), t5.step()
    for full, half in ((a1, a5), (b1, b5)):
        assert full[1] == half[1]  # the same eta from the line search ...
        np.testing.assert_allclose(
            half[4] - start, 0.5 * (full[4] - start), rtol=1e-12, atol=1e-15
        )  # ... and half the step
    _assert_same(a5, b5, 1e-9)


def test_a_nan_residual_at_one_step_is_skipped_the_same_way():
    jr, tr = _pair("engd-woodbury", "grid")
    bad = [np.where(np.arange(10)[:, None] == 3, np.nan, INTERIOR), BOUNDARY]
    nan_points = [jnp.asarray(p) for p in bad]
    torch_nan_points = [torch.from_numpy(p.copy()) for p in bad]
    _assert_same(jr.step(), tr.step(), 1e-9)
    before = jr.record()[4]
    with pytest.warns(sl.StepWarning, match="not taken"):
        a = jr.step(points=nan_points)
    with pytest.warns(sl.StepWarning, match="not taken"):
        b = tr.step(points=torch_nan_points)
    _assert_same(a, b, 1e-9)
    assert a[2] == 1 and a[3] == sl.Status.NONFINITE
    np.testing.assert_array_equal(a[4], before)  # the parameters did not move
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # good points again: a normal step, no warning
        _assert_same(jr.step(), tr.step(), 1e-9)
    assert jr.record()[3] == sl.Status.SUCCESS and jr.record()[2] == 1


def test_a_term_of_weight_zero_is_off_in_both():
    jr, tr = _pair("engd", "grid", boundary_weight=0.0)
    rj, Jj, _ = jr.system(jr.params)
    rt, Jt, _ = tr.system(None)
    assert np.all(np.asarray(rj)[-2:] == 0) and torch.all(rt[-2:] == 0)
    np.testing.assert_allclose(np.asarray(Jj.to_dense()), Jt.to_dense().numpy(), rtol=1e-12)
    for _ in range(2):
        _assert_same(jr.step(), tr.step(), 1e-9)


def test_checkpoint_and_resume_are_bit_identical_and_agree():
    ref_j, ref_t = _pair("spring", "armijo")
    for _ in range(4):
        ref = (ref_j.step(), ref_t.step())
    jr, tr = _pair("spring", "armijo")
    for _ in range(2):
        jr.step(), tr.step()
    saved = (jr.checkpoint(), tr.checkpoint())
    jr.step(), tr.step()  # the interrupted run goes on: must not matter
    jr2, tr2 = _pair("spring", "armijo")
    jr2.restore(saved[0])
    tr2.restore(saved[1])
    for _ in range(2):
        a, b = jr2.step(), tr2.step()
    np.testing.assert_array_equal(a[4], ref[0][4])  # bit-identical resume, each framework
    np.testing.assert_array_equal(b[4], ref[1][4])
    _assert_same(a, b, 1e-9)


def test_the_jacobian_path_is_the_cores_choice_in_both():
    jr, tr = _pair("engd")
    N = 12
    need = sl.estimate_memory("nystrom", N, P, rank=P, jacobian="materialized").bytes
    for budget, path in ((need, "materialized"), (need - 1, "matrix-free")):
        assert sl.jacobian_path(N, P, memory_budget=budget) == path
        assert jr.system(jr.params, memory_budget=budget).path == path
        assert tr.system(None, memory_budget=budget).path == path


def test_spring_default_momentum_is_the_cores():
    import inspect

    assert inspect.signature(slj.spring).parameters["momentum"].default == sl.SPRING_MOMENTUM
    assert slt.SPRING.option_defaults["momentum"] == sl.SPRING_MOMENTUM


@pytest.mark.parametrize("name", ["engd-woodbury", "spring"])
def test_the_adaptive_defaults_agree_too(name):
    """No damping given: the damping starts relative to the spectrum and adapts, in the core,
    so both frameworks take the same steps and reach the same damping."""
    factories = {
        "engd-woodbury": (
            lambda s, r: slj.engd_woodbury(s, residual_fn=r),
            lambda p, s, r: slt.ENGDWoodbury(p, s, residual_fn=r),
        ),
        "spring": (
            lambda s, r: slj.spring(s, residual_fn=r),
            lambda p, s, r: slt.SPRING(p, s, residual_fn=r),
        ),
    }
    mj, mt = factories[name]
    w = _weights()
    jr, tr = JaxRun(mj, w), TorchRun(mt, w)
    for _ in range(4):
        _assert_same(jr.step(), tr.step(), 1e-8)
    mu_j = float(jr.state.damping)
    mu_t = float(tr.opt.state[tr.net[0].weight]["damping"])
    assert mu_j == pytest.approx(mu_t, rel=1e-8) and mu_j > 0
