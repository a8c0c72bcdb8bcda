"""Bad input, fed by hypothesis to every public entry point of the core, on every backend.

Each entry point has a valid call (a small, well-posed problem) and a list of argument
slots. A hypothesis example picks one slot and replaces its value by a malformed one of the
slot's kind: a wrong type, a wrong shape or number of dimensions, a wrong dtype (float16,
int32, bool, the other float precision), NaN/Inf at random positions, values near overflow,
negative, zero or huge sizes and tolerances, unknown option strings, bad seeds, callables
that return the wrong thing. The call must then either

* raise a ``TypeError`` or ``ValueError`` whose message names the argument (or, for
  non-finite data, says NaN/Inf), never an internal error of a backend, or
* return a result that is honest: every array in it finite, or a status that is not
  success (``Status.NONFINITE`` for NaN/Inf data), never a NaN with a success status.

Linear operators (:func:`gram`, :func:`kernel`, :func:`aslinearoperator`,
:class:`LowRankPSD`) are transparent: their products of NaN data are NaN, and the solvers
that consume them report it; their data slots get every mutation but non-finite values.

The adapters' entry points (optax transformations, ``torch.optim`` optimizers, PINN
systems) are fuzzed the same way in the last tests of the module.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from conftest import Backend, _load
from hypothesis import given, settings
from hypothesis import strategies as st

import sketchlinalg as sl

N, P = 12, 6
# Examples per entry point, backend and dtype (derandomized in CI). A deeper search:
# BAD_INPUT_EXAMPLES=300 JAX_EXAMPLES=60 python -m pytest tests/test_bad_input.py
EXAMPLES = int(os.environ.get("BAD_INPUT_EXAMPLES", 10))
JAX_EXAMPLES = int(os.environ.get("JAX_EXAMPLES", 4))
BACKENDS = ("numpy", "array_api_strict", "torch")
DTYPES = ("float32", "float64")
NONFINITE_WORDS = ("NaN", "Inf", "finite", "nonfinite", "non-finite")


# --- mutations ----------------------------------------------------------------------------
@dataclass
class Mutation:
    value: Any
    label: str
    nonfinite: bool = False  # NaN/Inf (or overflow) was put into the data


def _np(b, a):
    return b.to_numpy(a)


def _array_mutation(draw, a, b, *, finite_only: bool) -> Mutation:
    """A malformed version of the backend array ``a``."""
    kinds = ["type", "ndim", "shape", "dtype", "empty"]
    if not finite_only:
        kinds += ["nonfinite", "nonfinite", "overflow"]
    kind = draw(st.sampled_from(kinds))
    x = _np(b, a)
    if kind == "type":
        value = draw(st.sampled_from(["abc", None, 3.5, "list", "object"]))
        if value == "list":
            return Mutation(x.tolist(), "a list")
        if value == "object":
            return Mutation(object(), "an object")
        return Mutation(value, f"{value!r}")
    if kind == "ndim":
        shape = draw(st.sampled_from([(), (*x.shape, 1), (1, *x.shape)]))
        y = np.ones(shape) if shape == () else x.reshape(shape)
        return Mutation(b.asarray(y), f"shape {shape}")
    if kind == "shape":
        axis = draw(st.integers(0, x.ndim - 1))
        delta = draw(st.sampled_from([-1, 1]))
        idx = [slice(None)] * x.ndim
        if delta < 0:
            idx[axis] = slice(0, x.shape[axis] - 1)
            y = x[tuple(idx)]
        else:
            idx[axis] = slice(0, 1)
            y = np.concatenate([x, x[tuple(idx)]], axis=axis)
        return Mutation(b.asarray(y), f"shape {y.shape}")
    if kind == "empty":
        shape = (0, *x.shape[1:])
        return Mutation(b.asarray(np.zeros(shape)), f"shape {shape}")
    if kind == "dtype":
        names = ["int32", "bool", "float32" if b.dtype_name == "float64" else "float64"]
        if b.name != "array_api_strict":
            names.append("float16")
        name = draw(st.sampled_from(names))
        return Mutation(b.xp.astype(a, getattr(b.xp, name)), f"dtype {name}")
    if kind == "nonfinite":
        y = x.copy()
        count = draw(st.integers(1, 3))
        for _ in range(count):
            i = draw(st.integers(0, y.size - 1))
            y.flat[i] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return Mutation(b.asarray(y), f"{count} NaN/Inf", nonfinite=True)
    # overflow: entries near the dtype's largest value (their products overflow)
    big = float(np.finfo(b.dtype_name).max) ** draw(st.sampled_from([0.6, 0.9]))
    return Mutation(b.asarray(x * big), f"scaled by {big:.1e}", nonfinite=True)


_INTS = [-1, 0, -(10**12), 2.5, "3", True, None, math.nan, np.int64(2), [2]]
HUGE = 10**6  # a size far above the problem's (a rank > P must be refused)
_FLOATS = [-1.0, math.nan, math.inf, -math.inf, "1e-3", [1e-3], 1j, True, 0.0, 1e300, None]
_CHOICES = ["bogus", 3, None, "", ["gaussian"]]
_SEEDS = [-1, 2.5, "seed", None, [1, 2], np.int64(3), 2**70, object()]
_BOOLS = ["yes", None, 2, [True]]


def _scalar_mutation(draw, kind: str, b) -> Mutation:
    pool = {
        "int": [*_INTS, HUGE],
        "iters": _INTS,  # counts that cost time or memory when huge: not made huge
        "float": _FLOATS,
        "choice": _CHOICES,
        "seed": _SEEDS,
        "bool": _BOOLS,
    }[kind]
    value = draw(st.sampled_from(pool))
    if kind == "float" and isinstance(value, float) and draw(st.booleans()):
        # the same value as a 0-d array of the backend, or an array of the wrong shape
        with np.errstate(over="ignore"):  # 1e300 becomes inf in float32: a bad value too
            value = b.asarray(np.full(draw(st.sampled_from([(), (2,)])), float(value)))
    return Mutation(value, repr(value)[:40])


def _callable_mutation(draw, b, shape_out, *, finite_only: bool) -> Mutation:
    options = ["not callable", "string", "wrong shape", "list", "wrong dtype"]
    pick = draw(st.sampled_from(options if finite_only else [*options, "nan"]))
    if pick == "not callable":
        return Mutation(3, "3")
    if pick == "string":
        return Mutation("f", "'f'")

    def out(v):
        shape = shape_out(v)
        if pick == "wrong shape":
            return b.asarray(np.ones((shape[0] + 1, *tuple(shape[1:]))))
        if pick == "list":
            return [1.0] * shape[0]
        if pick == "nan":
            return b.asarray(np.full(shape, math.nan))
        other = "float32" if b.dtype_name == "float64" else "float64"
        return b.xp.astype(b.asarray(np.ones(shape)), getattr(b.xp, other))

    return Mutation(out, f"a callable returning {pick}", nonfinite=pick == "nan")


# --- entry points --------------------------------------------------------------------------
@dataclass
class Entry:
    """``call(kwargs) -> outcome``; ``report(outcome) -> (arrays, success claimed)``.

    ``slots`` maps argument name -> kind (``array``, ``int``, ``iters``, ``float``,
    ``choice``, ``seed``, ``bool``, ``callable``); ``names`` lists extra words a message
    may use for an argument (e.g. the dtype mismatch of ``r`` against ``J``).
    """

    base: Callable[[Any], dict[str, Any]]
    call: Callable[[dict[str, Any]], Any]
    report: Callable[[Any], tuple[list[Any], bool | None]]
    slots: dict[str, str]
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    transparent: bool = False
    callable_shape: Callable[[Any], tuple[int, ...]] = lambda v: tuple(v.shape)


def _problem(b):
    rng = np.random.default_rng(0)
    J = rng.standard_normal((N, P))
    r = rng.standard_normal(N)
    A = J.T @ J + np.eye(P)
    return J, r, A


def _direction_report(out):
    d, info = out
    return [d], int(info.status) == sl.Status.SUCCESS


def _direction_entry(method: str) -> Entry:
    sketched = method in ("nystrom", "kernel-nystrom", "nystrom-pcg")
    slots = {"J": "array", "r": "array", "damping": "float", "seed": "seed"}
    if sketched:
        slots |= {"rank": "int", "oversample": "int"}
    if method == "auto":
        slots["method"] = "choice"

    def base(b):
        J, r, _ = _problem(b)
        kw = {"J": b.asarray(J), "r": b.asarray(r), "damping": 1e-2, "method": method}
        if sketched:
            kw |= {"rank": 3, "oversample": 2}
        return kw | {"seed": 0}

    def call(kw):
        return sl.natural_gradient_direction(kw.pop("J"), kw.pop("r"), **kw)

    return Entry(base, call, _direction_report, slots, names={"J": ("operator",)})


def _spring_entry() -> Entry:
    def base(b):
        J, r, _ = _problem(b)
        return {
            "J": b.asarray(J),
            "r": b.asarray(r),
            "previous": b.asarray(np.ones(P)),
            "damping": 1e-2,
            "momentum": 0.5,
        }

    def call(kw):
        return sl.spring_direction(kw.pop("J"), kw.pop("r"), kw.pop("previous"), **kw)

    slots = {"J": "array", "r": "array", "previous": "array", "damping": "float"}
    return Entry(base, call, _direction_report, slots | {"momentum": "float"})


def _lowrank_report(approx):
    return [approx.eigenvectors, approx.eigenvalues], None


def _psd(b):
    return b.asarray(_problem(b)[2])


def _approx(b):
    return sl.nystrom(_psd(b), 3, seed=0)


def _pcg_report(res):
    return [res.x], bool(np.all(np.asarray(_to_np(res.status)) == 0))


def _to_np(a):
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _value_report(a):
    return [a], None


def _apply(op):
    """An operator's product with a vector of ones, for the report."""
    ones = op.xp.ones((op.shape[1],), dtype=op.dtype)
    return op.matvec(ones)


def _least_squares_entry() -> Entry:
    def base(b):
        data = np.linspace(0.0, 1.0, 8)
        y = 2.0 * np.exp(-1.5 * data)
        t, yy = b.asarray(data), b.asarray(y)
        xp = b.xp

        def fun(x):
            return x[0] * xp.exp(-x[1] * t) - yy

        return {
            "fun": fun,
            "x0": b.asarray(np.array([1.0, 1.0])),
            "ftol": 1e-8,
            "xtol": 1e-8,
            "gtol": 1e-8,
            "max_nfev": 200,
            "x_scale": 1.0,
            "initial_damping": 1e-3,
            "method": "lm",
            "direction": "auto",
            "loss": "linear",
            "jac": "2-point",
        }

    def call(kw):
        return sl.least_squares(kw.pop("fun"), kw.pop("x0"), **kw)

    def report(res):
        return [res.x, res.fun], bool(res.success)

    slots = {
        "fun": "callable",
        "x0": "array",
        "ftol": "float",
        "xtol": "float",
        "gtol": "float",
        "max_nfev": "iters",
        "x_scale": "float",
        "initial_damping": "float",
        "method": "choice",
        "direction": "choice",
        "loss": "choice",
        "jac": "choice",
    }
    return Entry(base, call, report, slots, callable_shape=lambda v: (8,))


def _engine_entry() -> Entry:
    def base(b):
        J, r, _ = _problem(b)
        return {
            "method": "nystrom",
            "J": b.asarray(J),
            "r": b.asarray(r),
            "theta": b.asarray(np.zeros(P)),
            "damping": "adaptive",
            "line_search": "grid",
            "learning_rate": 1.0,
            "grid_size": 7,
            "grid_batch": 2,
            "momentum": 0.0,
            "max_trials": 2,
            "stall_window": 10,
            "rank": 3,
            "xp": b.xp,
        }

    def call(kw):
        J, r, theta = kw.pop("J"), kw.pop("r"), kw.pop("theta")
        xp = kw.pop("xp")
        engine = sl.StepEngine.from_options(kw.pop("method"), **kw)

        def trial_loss(etas, d):
            return xp.stack([0.5 * xp.sum((r - eta * (J @ d)) ** 2) for eta in etas])

        update, _, info = engine.step(J, r, engine.init(theta), trial_loss=trial_loss, seed=0)
        return update, info

    def report(out):
        update, info = out
        return [update], int(info.status) == sl.Status.SUCCESS

    slots = {
        "method": "choice",
        "J": "array",
        "r": "array",
        "damping": "float",
        "line_search": "choice",
        "learning_rate": "float",
        "grid_size": "iters",
        "grid_batch": "iters",
        "momentum": "float",
        "max_trials": "iters",
        "stall_window": "int",
        "rank": "int",
    }
    return Entry(base, call, report, slots)


def _function_operator_entry() -> Entry:
    def base(b):
        J, _, _ = _problem(b)
        Jb = b.asarray(J)
        return {
            "matmat": lambda X: Jb @ X,
            "shape": (N, P),
            "dtype": b.dtype,
            "xp": b.xp,
            "chunk_size": None,
            "x": b.asarray(np.ones(P)),
        }

    def call(kw):
        x = kw.pop("x")
        return sl.FunctionOperator(kw.pop("matmat"), **kw).matvec(x)

    slots = {"matmat": "callable", "shape": "choice", "dtype": "choice", "chunk_size": "int"}
    return Entry(
        base,
        call,
        _value_report,
        slots | {"x": "array"},
        names={"matmat": ("FunctionOperator",), "x": ("matmat", "matvec", "X")},
        transparent=True,
        callable_shape=lambda X: (N, X.shape[1]),
    )


def _core_entries() -> dict[str, Entry]:
    entries = {f"direction[{m}]": _direction_entry(m) for m in sl.METHODS}
    entries["spring_direction"] = _spring_entry()
    entries["nystrom"] = Entry(
        lambda b: {"A": _psd(b), "rank": 3, "oversample": 1, "sketch": "gaussian", "seed": 0},
        lambda kw: sl.nystrom(kw.pop("A"), kw.pop("rank"), **kw),
        _lowrank_report,
        {"A": "array", "rank": "int", "oversample": "int", "sketch": "choice", "seed": "seed"},
    )
    entries["adaptive_nystrom"] = Entry(
        lambda b: {"A": _psd(b), "mu": 1e-2, "tol": 1.0, "rank0": 2, "max_rank": P, "seed": 0},
        lambda kw: sl.adaptive_nystrom(kw.pop("A"), **kw),
        lambda res: ([res.approx.eigenvectors, res.approx.eigenvalues], bool(res.converged)),
        {
            "A": "array",
            "mu": "float",
            "tol": "float",
            "rank0": "int",
            "max_rank": "int",
            "seed": "seed",
        },
    )
    entries["estimate_error"] = Entry(
        lambda b: {"A": _psd(b), "approx": _approx(b), "power_iters": 5, "seed": 0},
        lambda kw: sl.estimate_error(kw.pop("A"), kw.pop("approx"), **kw),
        _value_report,
        {"A": "array", "approx": "choice", "power_iters": "iters", "seed": "seed"},
    )
    entries["pcg"] = Entry(
        lambda b: {
            "A": _psd(b),
            "b": b.asarray(np.ones(P)),
            "mu": 0.0,
            "preconditioner": lambda V: V,
            "rtol": 1e-6,
            "atol": 0.0,
            "maxiter": 50,
            "x0": b.asarray(np.zeros(P)),
        },
        lambda kw: sl.pcg(kw.pop("A"), kw.pop("b"), **kw),
        _pcg_report,
        {
            "A": "array",
            "b": "array",
            "mu": "float",
            "preconditioner": "callable",
            "rtol": "float",
            "atol": "float",
            "maxiter": "iters",
            "x0": "array",
        },
    )
    entries["nystrom_preconditioner"] = Entry(
        lambda b: {"approx": _approx(b), "mu": 1e-2},
        lambda kw: _apply(sl.nystrom_preconditioner(**kw)),
        _value_report,
        {"approx": "choice", "mu": "float"},
    )
    entries["sketch_matrix"] = Entry(
        lambda b: {"n": P, "l": 3, "xp": b.xp, "dtype": b.dtype, "kind": "gaussian", "seed": 0},
        lambda kw: sl.sketch_matrix(kw.pop("n"), kw.pop("l"), **kw),
        _value_report,
        {"n": "iters", "l": "int", "dtype": "choice", "kind": "choice", "seed": "seed"},
    )
    for name, fn in (("gram", sl.gram), ("kernel", sl.kernel)):
        entries[name] = Entry(
            lambda b, n=N if name == "gram" else P: {
                "J": b.asarray(_problem(b)[0]),
                "weights": b.asarray(np.ones(n)),
            },
            lambda kw, fn=fn: _apply(fn(kw.pop("J"), **kw)),
            _value_report,
            {"J": "array", "weights": "array"},
            transparent=True,
        )
    entries["aslinearoperator"] = Entry(
        lambda b: {"A": _psd(b), "psd": True},
        lambda kw: _apply(sl.aslinearoperator(kw.pop("A"), **kw)),
        _value_report,
        {"A": "array", "psd": "bool"},
        transparent=True,
    )
    entries["LowRankPSD"] = Entry(
        lambda b: {
            "eigenvectors": b.asarray(np.eye(P)[:, :3]),
            "eigenvalues": b.asarray(np.array([3.0, 2.0, 1.0])),
            "shift": 0.0,
        },
        lambda kw: _apply(
            sl.LowRankPSD(kw.pop("eigenvectors"), kw.pop("eigenvalues"), **kw).as_operator()
        ),
        _value_report,
        {"eigenvectors": "array", "eigenvalues": "array", "shift": "float"},
        transparent=True,
    )
    entries["FunctionOperator"] = _function_operator_entry()
    entries["natural_gradient_step"] = Entry(
        lambda b: {
            "params": b.asarray(np.zeros(P)),
            "J": b.asarray(_problem(b)[0]),
            "r": b.asarray(_problem(b)[1]),
            "damping": 1e-2,
            "learning_rate": 1.0,
        },
        lambda kw: sl.natural_gradient_step(kw.pop("params"), kw.pop("J"), kw.pop("r"), **kw),
        lambda out: ([out.params], int(out.info.status) == sl.Status.SUCCESS),
        {"params": "array", "J": "array", "r": "array", "damping": "float"}
        | {"learning_rate": "float"},
        names={"J": ("operator",)},
    )
    entries["StepEngine"] = _engine_entry()
    entries["least_squares"] = _least_squares_entry()
    entries["grid_line_search"] = Entry(
        lambda b: {
            "trial_loss": lambda etas: (etas - 0.3) ** 2,
            "loss0": b.asarray(np.asarray(0.09)),
            "num": 7,
            "batch": 2,
        },
        lambda kw: sl.grid_line_search(kw.pop("trial_loss"), kw.pop("loss0"), **kw),
        lambda res: ([res.step_size, res.loss], int(res.status) == sl.Status.SUCCESS),
        {"trial_loss": "callable", "loss0": "float", "num": "iters", "batch": "iters"},
        callable_shape=lambda etas: tuple(etas.shape),
    )
    entries["armijo_line_search"] = Entry(
        lambda b: {
            "trial_loss": lambda etas: (etas - 0.3) ** 2,
            "loss0": b.asarray(np.asarray(0.09)),
            "slope": b.asarray(np.asarray(0.6)),
            "c": 1e-4,
            "max_halvings": 10,
            "eta0": 1.0,
        },
        lambda kw: sl.armijo_line_search(kw.pop("trial_loss"), kw.pop("loss0"), **kw),
        lambda res: ([res.step_size, res.loss], int(res.status) == sl.Status.SUCCESS),
        {
            "trial_loss": "callable",
            "loss0": "float",
            "slope": "float",
            "c": "float",
            "max_halvings": "iters",
            "eta0": "float",
        },
        callable_shape=lambda etas: tuple(etas.shape),
    )
    entries["Nystrom solver"] = Entry(
        lambda b: {
            "J": b.asarray(_problem(b)[0]),
            "r": b.asarray(_problem(b)[1]),
            "damping": 1e-2,
            "rank": 3,
            "oversample": 1,
            "sketch": "gaussian",
            "core": "auto",
            "inverse": "woodbury",
            "error_power_iters": 2,
        },
        _solver_call,
        _direction_report,
        {
            "J": "array",
            "r": "array",
            "damping": "float",
            "rank": "int",
            "oversample": "int",
            "sketch": "choice",
            "core": "choice",
            "inverse": "choice",
            "error_power_iters": "iters",
        },
    )
    sizes = {"n_residuals": "int", "n_params": "int", "rank": "int", "memory_budget": "int"}
    entries["memory"] = Entry(
        lambda b: {
            "method": "nystrom",
            "n_residuals": 100,
            "n_params": 50,
            "rank": 10,
            "memory_budget": 10**6,
            "itemsize": 8,
        },
        lambda kw: [
            sl.estimate_memory(kw["method"], kw["n_residuals"], kw["n_params"], rank=kw["rank"]),
            sl.memory_plan(kw["n_residuals"], kw["n_params"], memory_budget=kw["memory_budget"]),
            sl.choose_method(
                kw["n_residuals"],
                kw["n_params"],
                rank=kw["rank"],
                itemsize=kw["itemsize"],
                memory_budget=kw["memory_budget"],
            ),
            sl.jacobian_path(kw["n_residuals"], kw["n_params"], memory_budget=kw["memory_budget"]),
        ],
        lambda out: ([], None),
        sizes | {"method": "choice", "itemsize": "int"},
        # sizes too large for the budget: the message names the budget and what each needs
        names={k: ("memory_budget",) for k in ("n_residuals", "n_params", "itemsize")},
    )
    entries["as_sampler"] = Entry(
        lambda b: {"seed": 0, "xp": b.xp, "dtype": b.dtype},
        lambda kw: sl.as_sampler(kw["seed"]).normal((3,), xp=kw["xp"], dtype=kw["dtype"]),
        _value_report,
        {"seed": "seed"},
    )
    return entries


def _solver_call(kw):
    J, r, damping = kw.pop("J"), kw.pop("r"), kw.pop("damping")
    solver = sl.Nystrom(**kw)
    return solver.solve(solver.init(J, r, seed=0), damping=damping)


CORE = _core_entries()


def _outcome_is_acceptable(entry: Entry, slot: str, mutation: Mutation, b, call):
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", sl.StepWarning)  # the status is what is checked
            out = call()
    except Exception as exc:
        if _raised_in_user_code(exc):
            return "raised by the user's callable"  # propagated unchanged: as it must be
        if isinstance(exc, np.linalg.LinAlgError):  # a ValueError, but not our message
            pytest.fail(f"{slot}={mutation.label}: internal LinAlgError: {exc}")
        if not isinstance(exc, TypeError | ValueError):
            pytest.fail(f"{slot}={mutation.label}: {type(exc).__name__} is not documented: {exc}")
        message = str(exc)
        words = (slot, *entry.names.get(slot, ()))
        if mutation.nonfinite:
            words += NONFINITE_WORDS
        named = any(
            re.search(rf"(?<![A-Za-z_]){re.escape(w)}(?![A-Za-z_])", message) for w in words
        )
        assert named, f"{slot}={mutation.label}: the message does not name {words}: {message}"
        return "raised"
    arrays, success = entry.report(out)
    finite = all(bool(np.all(np.isfinite(np.asarray(_to_np(a), dtype=float)))) for a in arrays)
    if success is None:
        assert finite, f"{slot}={mutation.label}: returned NaN/Inf without a status"
    else:
        assert finite or not success, f"{slot}={mutation.label}: NaN/Inf with a success status"
        if mutation.nonfinite and not finite:
            assert not success
    return "returned"


def _raised_in_user_code(exc: BaseException) -> bool:
    """Whether ``exc`` came out of a callable of this module (the "user's") that the library
    called: such an exception must propagate unchanged."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    library = [i for i, f in enumerate(frames) if f.startswith(_LIBRARY)]
    return bool(library) and any(f == __file__ for f in frames[library[0] :])


_LIBRARY = sl.__file__.rsplit("__init__.py", 1)[0]


def _mutate(data, entry: Entry, kwargs: dict[str, Any], b) -> tuple[str, Mutation]:
    slot = data.draw(st.sampled_from(sorted(entry.slots)), label="slot")
    kind = entry.slots[slot]
    if kind == "array":
        mutation = data.draw(
            st.composite(
                lambda draw: _array_mutation(draw, kwargs[slot], b, finite_only=entry.transparent)
            )()
        )
    elif kind == "callable":
        mutation = data.draw(
            st.composite(
                lambda draw: _callable_mutation(
                    draw, b, entry.callable_shape, finite_only=entry.transparent
                )
            )()
        )
    else:
        mutation = data.draw(st.composite(lambda draw: _scalar_mutation(draw, kind, b))())
    return slot, mutation


@pytest.fixture(params=[(b, d) for b in BACKENDS for d in DTYPES], ids=lambda p: f"{p[0]}-{p[1]}")
def eager_backend(request):
    """NumPy, array-api-strict and PyTorch: cheap calls, many examples."""
    return Backend(*request.param, _load(request.param[0]))


@pytest.fixture(params=DTYPES)
def jax_backend(request):
    """JAX: every new shape compiles, so fewer examples (``JAX_EXAMPLES``)."""
    return Backend("jax", request.param, _load("jax"))


@pytest.mark.parametrize("name", sorted(CORE))
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_core_entry_point_rejects_or_reports_bad_input(eager_backend, name, data):
    _fuzz_core(eager_backend, name, data)


@pytest.mark.parametrize("name", sorted(CORE))
@settings(max_examples=JAX_EXAMPLES)
@given(data=st.data())
def test_core_entry_point_rejects_or_reports_bad_input_jax(jax_backend, name, data):
    _fuzz_core(jax_backend, name, data)


def _fuzz_core(backend, name, data):
    entry = CORE[name]
    kwargs = entry.base(backend)
    slot, mutation = _mutate(data, entry, kwargs, backend)
    kwargs[slot] = mutation.value
    _outcome_is_acceptable(entry, slot, mutation, backend, lambda: entry.call(dict(kwargs)))


@pytest.mark.parametrize("name", sorted(CORE))
def test_core_entry_point_valid_call_succeeds(backend, name):
    """The fuzzing starts from a call that works: else every mutation would 'fail' for free."""
    entry = CORE[name]
    arrays, success = entry.report(entry.call(entry.base(backend)))
    assert all(np.all(np.isfinite(np.asarray(_to_np(a), dtype=float))) for a in arrays)
    assert success in (None, True)


# --- the adapters --------------------------------------------------------------------------
# The conformance problem (a tiny PINN in both frameworks) with one optimizer; one example
# replaces one option, the system function's output or a term of the PINN system.
OPTIMIZERS = ("engd", "engd-woodbury", "spring", "sngd", "nystrom-pcg")
SKETCHED = ("sngd", "nystrom-pcg")
OPTION_SLOTS = {
    "learning_rate": "float",
    "damping": "float",
    "rank": "int",
    "grid_size": "iters",
    "line_search": "choice",
    "seed": "seed",
    "momentum": "float",
    "initial_damping": "float",
    "max_trials": "iters",
    "stall_window": "int",
    "armijo_c": "float",
}
SYSTEM_FAULTS = ("list", "r only", "short r", "J transposed", "NaN r", "NaN J", "float32 r")


def _options(name: str) -> dict[str, Any]:
    options = {"learning_rate": 1.0, "seed": 0, "grid_size": 7, "line_search": "grid"}
    return options | ({"rank": 4} if name in SKETCHED else {})


def _bad_system(system, fault: str, asarray, to32):
    """``system`` whose output is malformed as ``fault`` says."""

    def bad(*args, **kwargs):
        r, J, *_ = system(*args, **kwargs)
        if fault == "list":
            return [float(v) for v in np.asarray(_to_np(r))], J
        if fault == "r only":
            return r
        if fault == "short r":
            return r[:-1], J
        if fault == "J transposed":
            return r, J.T
        if fault == "NaN r":
            return r * asarray(np.nan), J
        if fault == "NaN J":
            dense = J.to_dense()
            return r, dense * asarray(np.nan)
        return to32(r), J

    return bad


def _draw_adapter_case(data) -> tuple[str, str, Mutation]:
    name = data.draw(st.sampled_from(OPTIMIZERS), label="optimizer")
    slots = [s for s in OPTION_SLOTS if s != "rank" or name in SKETCHED]
    slot = data.draw(st.sampled_from([*slots, "system_fn"]), label="slot")
    if slot == "system_fn":
        fault = data.draw(st.sampled_from(SYSTEM_FAULTS))
        return name, slot, Mutation(fault, fault, nonfinite=fault.startswith("NaN"))
    backend = _AdapterBackend()
    mutation = data.draw(
        st.composite(lambda draw: _scalar_mutation(draw, OPTION_SLOTS[slot], backend))()
    )
    return name, slot, mutation


class _AdapterBackend:
    """Scalar mutations of the adapters: plain NumPy 0-d arrays for the array cases."""

    def asarray(self, a):
        return np.asarray(a)


def _one_step(run_class, make):
    """(status, flat parameters) after one step of the conformance problem."""
    import test_conformance as tc

    run = run_class(make, tc._weights())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sl.StepWarning)  # a NaN step warns: that is right
        record = run.step()
    return record[3], record[4]


def _adapter_outcome(slot, mutation, make_and_step, names=()):
    """As :func:`_outcome_is_acceptable`, for one optimizer step of an adapter."""
    try:
        with np.errstate(all="ignore"):
            status, flat = make_and_step()
    except Exception as exc:
        if not isinstance(exc, TypeError | ValueError) or isinstance(exc, np.linalg.LinAlgError):
            pytest.fail(f"{slot}={mutation.label}: {type(exc).__name__} is not documented: {exc}")
        words = (slot, *names) + (NONFINITE_WORDS if mutation.nonfinite else ())
        message = str(exc)
        assert any(
            re.search(rf"(?<![A-Za-z_]){re.escape(w)}(?![A-Za-z_])", message) for w in words
        ), f"{slot}={mutation.label}: the message does not name {words}: {message}"
        return
    finite = bool(np.all(np.isfinite(flat)))
    assert finite, f"{slot}={mutation.label}: the parameters hold NaN/Inf"
    if mutation.nonfinite:
        assert status == sl.Status.NONFINITE, f"{slot}={mutation.label}: status {status}"


@settings(max_examples=JAX_EXAMPLES)
@given(data=st.data())
def test_jax_optimizers_reject_or_report_bad_options_and_systems(data):
    pytest.importorskip("optax")
    import test_conformance as tc

    name, slot, mutation = _draw_adapter_case(data)
    factory = {"engd": tc.slj.engd, "engd-woodbury": tc.slj.engd_woodbury}.get(name) or {
        "spring": tc.slj.spring,
        "sngd": tc.slj.sngd,
        "nystrom-pcg": tc.slj.nystrom_pcg,
    }[name]
    options = _options(name)
    if slot != "system_fn":
        options[slot] = mutation.value

    def make(system, residual):
        if slot == "system_fn":
            system = _bad_system(
                system,
                mutation.value,
                tc.jnp.asarray,
                lambda r: r.astype(tc.jnp.float32),
            )
        return factory(system, residual_fn=residual, **options)

    _adapter_outcome(
        slot, mutation, lambda: _one_step(tc.JaxRun, make), names=("system_fn", "r", "J")
    )


@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_torch_optimizers_reject_or_report_bad_options_and_systems(data):
    import test_conformance as tc

    name, slot, mutation = _draw_adapter_case(data)
    cls = {
        "engd": tc.slt.ENGD,
        "engd-woodbury": tc.slt.ENGDWoodbury,
        "spring": tc.slt.SPRING,
        "sngd": tc.slt.SNGD,
        "nystrom-pcg": tc.slt.NystromPCG,
    }[name]
    options = _options(name)
    options["lr"] = options.pop("learning_rate")
    if slot != "system_fn":
        options["lr" if slot == "learning_rate" else slot] = mutation.value

    def make(params, system, residual):
        if slot == "system_fn":
            system = _bad_system(
                system,
                mutation.value,
                lambda v: tc.torch.tensor(v, dtype=tc.torch.float64),
                lambda r: r.float(),
            )
        return cls(params, system, residual_fn=residual, **options)

    _adapter_outcome(
        slot, mutation, lambda: _one_step(tc.TorchRun, make), names=("lr", "system_fn", "r", "J")
    )


# --- the cases found by the fuzzing, one named test each ------------------------------------
def _J_r():
    J, r, _ = _problem(None)
    return J, r


REGRESSIONS = {
    "float16 data is refused by name": (
        lambda: sl.natural_gradient_direction(
            *(a.astype(np.float16) for a in _J_r()), damping=1e-3, method="nystrom", rank=2
        ),
        TypeError,
        r"J's dtype float16 is not supported: use float32 or float64",
    ),
    "float16 x0 in least_squares": (
        lambda: sl.least_squares(lambda x: x - 1, np.zeros(2, dtype=np.float16)),
        TypeError,
        r"x0's dtype float16 is not supported",
    ),
    "a shape of floats": (
        lambda: sl.FunctionOperator(lambda v: v, shape=(2.7, 3), dtype=np.float64, xp=np),
        ValueError,
        r"shape must be a pair of ints",
    ),
    "a preconditioner of the wrong shape": (
        lambda: sl.pcg(np.eye(5), np.ones(5), preconditioner=lambda V: V[:3]),
        ValueError,
        r"preconditioner returned shape \(3, 1\)",
    ),
    "J of the wrong type names J": (
        lambda: sl.natural_gradient_direction("J", np.ones(3), damping=1.0),
        TypeError,
        r"^J must be a 2-D array or a LinearOperator, got str",
    ),
    "r of another dtype in the step": (
        lambda: sl.StepEngine.from_options("dense", damping=1.0, line_search=None).step(
            np.eye(3), np.ones(3, dtype=np.float32), sl.StepEngine(sl.Dense()).init(np.zeros(3))
        ),
        TypeError,
        r"r has dtype float32, J has float64",
    ),
    "a NaN estimate": (
        lambda: sl.estimate_error(
            np.where(np.eye(6) > 0, np.nan, 0.0), sl.nystrom(np.eye(6), 2, seed=0)
        ),
        ValueError,
        r"estimate_error: the estimate contains NaN",
    ),
    "NaN parameters to update": (
        lambda: sl.natural_gradient_step(np.full(3, np.nan), np.eye(3), np.ones(3), damping=1.0),
        ValueError,
        r"natural_gradient_step: params contains NaN or Inf",
    ),
    "a tolerance that overflows float32": (
        lambda: sl.pcg(np.eye(3, dtype=np.float32), np.ones(3, dtype=np.float32), atol=1e300),
        ValueError,
        r"atol must be representable in float32",
    ),
    "a line search's loss0 as a float": (
        lambda: sl.grid_line_search(lambda e: e, 0.5),
        TypeError,
        r"grid_line_search: loss0 must be a 0-d array",
    ),
    "a bogus sketch name in nystrom": (
        lambda: sl.nystrom(np.eye(4), 2, sketch="srht"),
        ValueError,
        r"sketch must be one of",
    ),
    "a bogus dtype for sketch_matrix": (
        lambda: sl.sketch_matrix(4, 2, xp=np, dtype="bogus"),
        TypeError,
        r"dtype must be a real floating dtype",
    ),
}


@pytest.mark.parametrize("case", sorted(REGRESSIONS))
def test_found_case_raises_a_clear_error(case):
    call, kind, pattern = REGRESSIONS[case]
    with np.errstate(all="ignore"), pytest.raises(kind, match=pattern):
        call()


def test_numpy_integer_seeds_are_ints():
    J, r = _J_r()
    a, _ = sl.natural_gradient_direction(J, r, damping=1e-3, method="nystrom", rank=3, seed=3)
    b, _ = sl.natural_gradient_direction(
        J, r, damping=1e-3, method="nystrom", rank=3, seed=np.int64(3)
    )
    np.testing.assert_array_equal(a, b)


def test_spring_direction_reports_nan_in_its_status():
    J, r = _J_r()
    J[2, 1] = np.nan
    _, info = sl.spring_direction(J, r, np.zeros(P), damping=1e-2, momentum=0.5)
    assert info.status == sl.Status.NONFINITE and not info.converged


def test_a_learning_rate_that_overflows_the_step_skips_it():
    J, r = _J_r()
    J32, r32 = J.astype(np.float32), (1e3 * r).astype(np.float32)
    engine = sl.StepEngine.from_options("dense", damping=1e-2, line_search=None)
    state = engine.init(np.zeros(P, dtype=np.float32))
    with np.errstate(over="ignore"), pytest.warns(sl.StepWarning, match="not taken"):
        update, new, info = engine.step(J32, r32, state, learning_rate=1e38)
    assert info.status == sl.Status.NONFINITE and int(new.skipped) == 1
    assert np.all(update == 0)


def test_nystrom_of_an_operator_near_overflow_is_its_scaled_approximation():
    """Entries of 1e300: the shift's norm is taken scaled, so nothing overflows (before, the
    eigendecomposition raised LinAlgError)."""
    A = _problem(None)[2]
    small = sl.nystrom(A, 3, seed=0)
    huge = sl.nystrom(A * 1e300, 3, seed=0)
    np.testing.assert_allclose(huge.eigenvalues, 1e300 * small.eigenvalues, rtol=1e-10)


# --- PINN systems of the adapters: one term's points, weight or residual malformed ----------
TERM_SLOTS = {"points": "array", "weight": "float", "residual": "callable"}


def _draw_term_case(data, b) -> tuple[str, Mutation]:
    slot = data.draw(st.sampled_from(sorted(TERM_SLOTS)), label="slot")
    if slot == "points":
        base = b.asarray(np.linspace(0.05, 0.95, 10)[:, None])
        # points are data the residual only evaluates: NaN points give NaN residuals, which
        # the optimizers report (test_conformance); here every other malformation
        draw = st.composite(lambda draw: _array_mutation(draw, base, b, finite_only=True))
        return slot, data.draw(draw())
    if slot == "weight":
        return slot, data.draw(st.composite(lambda draw: _scalar_mutation(draw, "float", b))())
    pick = data.draw(st.sampled_from(["not callable", "string", "vector", "list", "other dtype"]))
    bad = {
        "not callable": 3,
        "string": "f",
        "vector": lambda u, x: u(x) * b.xp.ones((3,), dtype=b.dtype),
        "list": lambda u, x: [u(x)],
        "other dtype": lambda u, x: b.xp.astype(u(x), b.xp.float32),
    }[pick]
    return slot, Mutation(bad, pick)


def _term_outcome(slot, mutation, call):
    try:
        with np.errstate(all="ignore"):
            r = call()
    except Exception as exc:
        if _raised_in_user_code(exc):
            return
        if not isinstance(exc, TypeError | ValueError):
            pytest.fail(f"{slot}={mutation.label}: {type(exc).__name__} is not documented: {exc}")
        message = str(exc)
        named = slot in message or "terms[0]" in message
        assert named, f"{slot}={mutation.label}: the message does not name it: {message}"
        return
    assert np.all(np.isfinite(_to_np(r))), f"{slot}={mutation.label}: NaN residual, no error"


@settings(max_examples=JAX_EXAMPLES)
@given(data=st.data())
def test_jax_pinn_system_rejects_bad_terms(data):
    import test_conformance as tc

    b = Backend("jax", "float64", _load("jax"))
    slot, mutation = _draw_term_case(data, b)
    jnp, slj = tc.jnp, tc.slj
    kwargs = {
        "residual": lambda u, x: -slj.laplacian(u, x) - jnp.sin(x[0]),
        "points": b.asarray(np.linspace(0.05, 0.95, 10)[:, None]),
        "weight": 1.0,
    }
    kwargs[slot] = mutation.value
    params = [(jnp.asarray(W), jnp.asarray(c)) for W, c in tc._weights()]

    def mlp(p, x):
        (W0, b0), (W1, b1) = p
        return (W1 @ jnp.tanh(W0 @ x + b0) + b1)[0]

    def call():
        return slj.pinn_system(mlp, params, [slj.Term(**kwargs)])[0]

    _term_outcome(slot, mutation, call)


@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_torch_pinn_system_rejects_bad_terms(data):
    import test_conformance as tc

    torch, slt = tc.torch, tc.slt
    b = Backend("torch", "float64", _load("torch"))
    slot, mutation = _draw_term_case(data, b)
    kwargs = {
        "residual": lambda u, x: -slt.laplacian(u, x) - torch.sin(x[0]),
        "points": b.asarray(np.linspace(0.05, 0.95, 10)[:, None]),
        "weight": 1.0,
    }
    kwargs[slot] = mutation.value
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    net = net.double()

    def call():
        return slt.pinn_system(net, None, [slt.Term(**kwargs)])[0].detach()

    _term_outcome(slot, mutation, call)


def test_torch_optimizers_take_numpy_integer_seeds():
    import test_conformance as tc

    net = tc.torch.nn.Linear(2, 1).double()
    opt = tc.slt.SNGD(net.parameters(), lambda: None, seed=np.int64(3), line_search=None)
    ref = tc.torch.Generator().manual_seed(3)
    assert tc.torch.equal(opt.generator.get_state(), ref.get_state())
    with pytest.raises(ValueError, match=r"seed must be below 2\*\*64"):
        tc.slt.SNGD(net.parameters(), lambda: None, seed=2**70, line_search=None)
