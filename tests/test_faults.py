"""Fault injection: training with the natural-gradient optimizers of both frameworks (the optax
transformations ``sketchlinalg_jax.engd/engd_woodbury/spring/sngd/nystrom_pcg`` and the
``torch.optim`` classes ``sketchlinalg_torch.ENGD/ENGDWoodbury/SPRING/SNGD/NystromPCG``) when
something goes wrong mid-run.

The problem is the tiny PINN of ``test_conformance`` (its ``JaxRun`` / ``TorchRun``, weights and
optimizer factories are reused). Its system and residual functions are wrapped so that a
``fault=`` keyword of ``opt.update(...)`` / ``opt.step(...)`` (forwarded to them by name, see
:func:`sketchlinalg.forwarded_kwargs`) injects, at the steps a test chooses:

``"inf-residual"``
    one entry of the residual is ``+inf`` (in ``system_fn`` and ``residual_fn`` alike);
``"nan-jacobian"``
    one entry of the Jacobian is NaN, the residual stays finite;
``"raise-system"`` / ``"raise-residual"``
    ``system_fn`` raises, or ``residual_fn`` raises inside the line search (after the
    direction was solved), an :class:`InjectedFault`; in torch, a closure passed to ``step``
    may raise it too.

Expected: a non-finite step, however many in a row, is not taken (the parameters stay
finite and unchanged, ``skipped`` counts it, the status is ``NONFINITE``, a
:class:`sketchlinalg.StepWarning` says so) and training goes on lowering the loss afterwards,
as if the bad steps had not happened; an exception reaches the caller unchanged, leaves the
parameters and the optimizer state (the PRNG key, the torch sketch generator) bit for bit as
they were, and the next step is the one a run that never saw it would take. Checkpoints: JAX
params and ``NGDState`` (whose PRNG key goes through :func:`jax.random.key_data`) saved with
orbax and restored resume bit-identically; a torch ``SNGD`` checkpoint loaded from disk into a
freshly built model and optimizer (as a new process would) resumes bit-identically, and one
without the ``"sketch_generator"`` entry is refused. (A one-step NaN residual and the pickle /
in-memory ``torch.save`` resume are in ``test_conformance``; a same-seed torch resume is in
``test_torch_optim``.)
"""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402
import sketchlinalg_torch as slt  # noqa: E402
from test_conformance import DAMPING, JaxRun, TorchRun, _optimizers, _weights  # noqa: E402

import sketchlinalg as sl  # noqa: E402

NAMES = ["engd", "engd-woodbury", "spring", "sngd", "nystrom-pcg"]
# methods whose direction depends on the sketch, so on the PRNG key / generator
SKETCHED = {"sngd", "nystrom-pcg"}


class InjectedFault(RuntimeError):
    """The exception the wrapped functions raise on demand."""


def _faulty(system, residual, asarray, raised):
    """``(system_fn, residual_fn)`` around the run's own, taking a ``fault=`` keyword."""

    def spike(shape, value):
        out = np.zeros(shape)
        out[(0,) * len(shape)] = value
        return asarray(out)

    def faulty_system(params, fault=None):
        if fault == "raise-system":
            raised.append(InjectedFault("system_fn"))
            raise raised[-1]
        r, J, _ = system(params)
        if fault == "inf-residual":
            r = r + spike(r.shape, math.inf)
        elif fault == "nan-jacobian":
            J = sl.aslinearoperator(J.to_dense() + spike(J.shape, math.nan))
        return r, J

    def faulty_residual(params, fault=None):
        if fault == "raise-residual":
            raised.append(InjectedFault("residual_fn"))
            raise raised[-1]
        r = residual(params)
        return r + spike(r.shape, math.inf) if fault == "inf-residual" else r

    return faulty_system, faulty_residual


class FaultyJaxRun(JaxRun):
    """``JaxRun`` of one of the conformance optimizers, its functions wrapped by ``_faulty``."""

    def __init__(self, name):
        make = _optimizers("grid")[name][0]
        self.raised = []

        def wrapped(system, residual):
            self.residual = residual
            return make(*_faulty(system, residual, jnp.asarray, self.raised))

        super().__init__(wrapped, _weights())

    def loss(self):
        r = self.residual(self.params)
        return float(0.5 * jnp.vdot(r, r))

    def snapshot(self):
        return _leaves((self.params, self.state))


class FaultyTorchRun(TorchRun):
    """``TorchRun`` of one of the conformance optimizers, its functions wrapped by ``_faulty``."""

    def __init__(self, name):
        make = _optimizers("grid")[name][1]
        self.raised = []

        def wrapped(params, system, residual):
            self.residual = residual
            return make(params, *_faulty(system, residual, torch.from_numpy, self.raised))

        super().__init__(wrapped, _weights())

    def loss(self):
        with torch.no_grad():
            r = self.residual({k: v.detach() for k, v in self.net.named_parameters()})
        return float(0.5 * (r @ r))

    def snapshot(self):
        return copy.deepcopy(
            {"params": dict(self.net.named_parameters()), "opt": self.opt.state_dict()}
        )


RUNS = {"jax": FaultyJaxRun, "torch": FaultyTorchRun}


def _leaves(tree):
    """NumPy copies of a pytree's leaves, PRNG keys as their key data."""
    out = []
    for leaf in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out.append(np.array(leaf))
    return out


def _assert_identical(a, b, where="state"):
    """Bit-for-bit equality of nested dicts / lists of tensors and arrays."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a.detach(), b.detach()), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


@functools.cache
def _clean_params(framework, name, steps):
    """The flat parameters after ``steps`` fault-free steps (computed once per module)."""
    run = RUNS[framework](name)
    for _ in range(steps):
        flat = run.step()[4]
    return flat


def _assert_like_clean(flat, framework, name, steps):
    """The parameters are those of a fault-free run of ``steps`` steps: bit for bit, but
    where a skipped step drew a different sketch (full rank: equal up to rounding)."""
    ref = _clean_params(framework, name, steps)
    if name in SKETCHED:
        np.testing.assert_allclose(flat, ref, rtol=1e-7, atol=1e-9)
    else:
        np.testing.assert_array_equal(flat, ref)


# -- non-finite residual or Jacobian over several steps ------------------------------------


FAULTS = ("inf-residual", "nan-jacobian")
FAULT_CASES = [
    # the step is the core's, the same for both frameworks (test_conformance); each eager JAX
    # optimizer compiles for seconds, so JAX runs one with momentum and one with a sketch;
    # every solver's NONFINITE status under JAX is tested in test_direction / test_bad_input
    *[("jax", name, fault) for name in ("spring", "sngd") for fault in FAULTS],
    *[("torch", name, fault) for name in NAMES for fault in FAULTS],
]


@pytest.mark.parametrize(("framework", "name", "fault"), FAULT_CASES)
def test_a_fault_lasting_several_steps_is_skipped_and_training_recovers(framework, name, fault):
    run = RUNS[framework](name)
    first = run.step()
    assert first[3] == sl.Status.SUCCESS
    before = run.record()[4]
    loss_before = run.loss()
    for bad in (1, 2):  # steps 2 and 3 see the fault
        with pytest.warns(sl.StepWarning, match="not taken") as caught:
            rec = run.step(fault=fault)
        assert len(caught) == 1
        _, eta, skipped, status, flat = rec
        assert (skipped, status, eta) == (bad, sl.Status.NONFINITE, 0.0)
        assert np.all(np.isfinite(flat))
        np.testing.assert_array_equal(flat, before)  # not moved at all
    # recovered: a normal step (no warning: they are errors here) that lowers the loss
    _, eta, skipped, status, flat = run.step()
    assert (skipped, status) == (2, sl.Status.SUCCESS) and eta > 0
    assert np.all(np.isfinite(flat)) and not np.array_equal(flat, before)
    assert run.loss() < loss_before
    # ... as the second step of a run that never saw the fault
    _assert_like_clean(flat, framework, name, 2)


# -- an exception inside the user's functions ---------------------------------------------


def _raise_fault(run, where):
    """One step of ``run`` during which ``where`` raises an :class:`InjectedFault`."""
    if where == "closure":

        def closure():
            run.raised.append(InjectedFault("closure"))
            raise run.raised[-1]

        run.opt.step(closure)
    else:
        run.step(fault=f"raise-{where}")


EXCEPTION_CASES = [
    # JAX's state is a value that update() returns, so two cases suffice there: a sketch (the
    # PRNG key) and momentum (the previous direction)
    ("jax", "sngd", "residual"),
    ("jax", "spring", "system"),
    *[("torch", name, where) for name in NAMES for where in ("closure", "system", "residual")],
]


@pytest.mark.parametrize(("framework", "name", "where"), EXCEPTION_CASES)
def test_an_exception_in_a_step_propagates_and_changes_nothing(framework, name, where):
    run = RUNS[framework](name)
    run.step()
    saved = run.snapshot()
    with pytest.raises(InjectedFault) as caught:
        _raise_fault(run, where)
    assert caught.type is InjectedFault and len(run.raised) == 1
    assert caught.value is run.raised[0]  # the very exception, not a wrapper of it
    _assert_identical(run.snapshot(), saved)
    # the next step is the second step of a run that never saw the exception, bit for bit
    np.testing.assert_array_equal(run.step()[4], _clean_params(framework, name, 2))


# -- checkpoints ----------------------------------------------------------------------------


def _jax_sngd(seed):
    """JAX SNGD below full rank (at full rank the sketch is a thin SVD of ``J``, which no key
    changes) with its own seed: the sketches, so the steps, depend on the PRNG key."""
    return JaxRun(
        lambda s, r: slj.sngd(s, residual_fn=r, damping=DAMPING, rank=8, seed=seed), _weights()
    )


def test_orbax_checkpoint_of_params_and_state_resumes_bit_identically(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    ref = _jax_sngd(seed=0)
    expected = [ref.step()[4] for _ in range(3)]

    run = _jax_sngd(seed=0)
    run.step()
    saved = _leaves((run.params, run.state))
    tree = {
        "params": run.params,
        "state": run.state._replace(key=jax.random.key_data(run.state.key)),
    }
    path = tmp_path / "ckpt"
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, tree)
        ckptr.wait_until_finished()

    fresh = _jax_sngd(seed=1)  # another key and step count: all overwritten by the restore
    target = {
        "params": fresh.params,
        "state": fresh.state._replace(key=jax.random.key_data(fresh.state.key)),
    }
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(path, jax.tree.map(ocp.utils.to_shape_dtype_struct, target))
    state = restored["state"]
    assert isinstance(state, slj.NGDState)
    fresh.params = restored["params"]
    fresh.state = state._replace(key=jax.random.wrap_key_data(state.key))
    _assert_identical(_leaves((fresh.params, fresh.state)), saved)
    np.testing.assert_array_equal(fresh.step()[4], expected[1])
    np.testing.assert_array_equal(fresh.step()[4], expected[2])  # bit-identical resume

    # the key mattered: the same restore with another key takes another step
    other = _jax_sngd(seed=1)
    other.params, other.state = restored["params"], state._replace(key=other.state.key)
    assert not np.array_equal(other.step()[4], expected[1])


def _torch_sngd(seed, weights_seed=0):
    """Torch SNGD below full rank, so that the resumed sketches must be the saved
    generator's."""
    return TorchRun(
        lambda p, s, r: slt.SNGD(p, s, residual_fn=r, damping=DAMPING, rank=8, seed=seed),
        _weights(weights_seed),
    )


def test_torch_sngd_checkpoint_on_disk_resumes_bit_identically_in_a_fresh_optimizer(tmp_path):
    ref = _torch_sngd(seed=0)
    for _ in range(4):
        expected = ref.step()[4]

    run = _torch_sngd(seed=0)
    for _ in range(2):
        run.step()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": run.net.state_dict(), "opt": run.opt.state_dict()}, path)
    run.step()  # the saving run goes on: must not matter

    # a new process: other initial weights, another seed, other global RNG state, and
    # torch.load's default (weights_only) unpickler
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        fresh = _torch_sngd(seed=1, weights_seed=1)
        blob = torch.load(path)
        fresh.net.load_state_dict(blob["model"])
        fresh.opt.load_state_dict(blob["opt"])
        for _ in range(2):
            resumed = fresh.step()[4]
    np.testing.assert_array_equal(resumed, expected)
    assert int(fresh.opt.state[fresh.net[0].weight]["step"]) == 4

    # the generator mattered: the same load without its state does not resume
    other = _torch_sngd(seed=1)
    other.net.load_state_dict(blob["model"])
    other.opt.load_state_dict(blob["opt"])
    other.opt.generator.manual_seed(1)
    for _ in range(2):
        diverted = other.step()[4]
    assert not np.allclose(diverted, expected, rtol=1e-6, atol=0)


def test_torch_state_dict_without_the_sketch_generator_is_refused():
    run = _torch_sngd(seed=0)
    run.step()
    sd = run.opt.state_dict()
    del sd["sketch_generator"]
    fresh = _torch_sngd(seed=1, weights_seed=1)
    gen_before = fresh.opt.generator.get_state().clone()
    groups_before = copy.deepcopy(fresh.opt.param_groups)
    with pytest.raises(ValueError, match="sketch_generator"):
        fresh.opt.load_state_dict(sd)
    # refused before anything was loaded
    assert not fresh.opt.state
    assert torch.equal(fresh.opt.generator.get_state(), gen_before)
    _assert_identical(
        [{k: v for k, v in g.items() if k != "params"} for g in fresh.opt.param_groups],
        [{k: v for k, v in g.items() if k != "params"} for g in groups_before],
    )
