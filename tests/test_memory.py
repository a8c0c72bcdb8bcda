"""The memory model (sketchlinalg.estimate_memory, memory_plan) and auto's use of it."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sketchlinalg as sl


def test_arithmetic_of_each_part() -> None:
    N, P, l, c = 30, 1000, 20, 7
    e = sl.estimate_memory(
        "nystrom", N, P, rank=l, jacobian="matrix-free", chunk_size=c, baseline=123
    )
    assert e.parts == {
        "jacobian": 0,
        "jacobian build": 2 * c * (N + P) * 8,
        "direction": (6 * P * l + N * l) * 8,
        "vectors": 4 * P * 8,
        "baseline": 123,
    }
    assert e.bytes == max(2 * c * (N + P), 6 * P * l + N * l) * 8 + 4 * P * 8 + 123
    assert e.fits is None and e.jacobian == "matrix-free"
    d = sl.estimate_memory("dense", N, P)
    assert d.jacobian == "materialized"  # dense always materializes J
    assert d.bytes == max(3 * N * P, N * P + 4 * P * P) * 8 + 4 * P * 8  # unchunked build
    chunked = sl.estimate_memory("nystrom", N, P, rank=l, chunk_size=c)
    assert chunked.parts["jacobian build"] == (N * P + 2 * c * P) * 8
    w = sl.estimate_memory("woodbury", N, P, itemsize=4)
    assert w.bytes == max(3 * N * P, N * P + 4 * N * N) * 4 + 4 * P * 4
    k = sl.estimate_memory("kernel-nystrom", N, P, rank=100)  # rank capped at N
    assert k.parts["direction"] == (P * N + 6 * N * N) * 8
    pcg = sl.estimate_memory("nystrom-pcg", N, P, rank=l)
    assert (
        pcg.parts["direction"] - sl.estimate_memory("nystrom", N, P, rank=l).parts["direction"]
        == 5 * P * 8
    )


def test_a_million_parameters() -> None:
    # The dense Gram matrix at P = 10^6 needs terabytes; the sketch fits in 16 GiB.
    N, P = 1_020, 1_005_001
    assert sl.estimate_memory("dense", N, P).bytes > 2**44  # > 17 TB
    plan = sl.memory_plan(N, P, rank=100, chunk_size=128, memory_budget=16 * 2**30)
    assert [e.bytes for e in plan] == sorted(e.bytes for e in plan)
    assert len(plan) == 8  # dense and woodbury once, the three sketch methods twice
    fitting = {(e.method, e.jacobian) for e in plan if e.fits}
    assert ("nystrom", "materialized") in fitting and ("dense", "materialized") not in fitting
    # unchunked, the per-point gradients of all N points would sit beside J: 3 N P
    unchunked = sl.estimate_memory("nystrom", N, P, rank=100, memory_budget=16 * 2**30)
    assert not unchunked.fits
    # a J that already exists as an array is counted but not built again
    given = sl.estimate_memory("nystrom", N, P, rank=100, jacobian="array")
    assert given.parts["jacobian build"] == 0 and given.jacobian == "array"
    assert given.bytes == (N * P + 6 * P * 100 + N * 100 + 4 * P) * 8


@given(
    N=st.integers(1, 5000),
    P=st.integers(1, 200_000),
    rank=st.integers(1, 500),
    budget=st.integers(0, 2**34),
    materialized=st.booleans(),
)
def test_auto_never_picks_what_does_not_fit(N, P, rank, budget, materialized) -> None:
    path = "array" if materialized else "matrix-free"  # materialized: J is given as an array
    pcg = sl.estimate_memory("nystrom-pcg", N, P, rank=rank, jacobian=path, memory_budget=budget)
    if not pcg.fits and not any(
        sl.estimate_memory(m, N, P, jacobian=path, memory_budget=budget).fits
        for m in ("dense", "woodbury")
    ):
        with pytest.raises(ValueError, match="no accurate method fits"):
            sl.choose_method(N, P, rank=rank, memory_budget=budget, materialized=materialized)
        return
    method, _ = sl.choose_method(N, P, rank=rank, memory_budget=budget, materialized=materialized)
    est = sl.estimate_memory(method, N, P, rank=rank, jacobian=path, memory_budget=budget)
    assert est.fits, (method, est)


@pytest.mark.parametrize(("N", "P", "rank"), [(60, 4000, 40), (300, 400, 50), (50, 20_000, 30)])
def test_model_against_measured_numpy_allocations(N, P, rank) -> None:
    # tracemalloc sees NumPy's allocations: the peak above the given J and r must lie within
    # [0.5, 1.25] of the model's direction part plus the returned P-vector (the J the caller
    # made and the optimizer's other vectors are not allocated by this call).
    rng = np.random.default_rng(0)
    J, r = rng.standard_normal((N, P)), rng.standard_normal(N)
    for method in sl.MEMORY_METHODS:
        if method == "dense" and P > 5000:
            continue
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            options = {} if method in ("dense", "woodbury") else {"rank": rank}
            sl.natural_gradient_direction(J, r, damping=1e-6, method=method, **options)
            peak = tracemalloc.get_traced_memory()[1] - start
        finally:
            tracemalloc.stop()
        est = sl.estimate_memory(method, N, P, rank=rank)
        model = est.parts["direction"] + P * 8
        assert 0.5 <= peak / model <= 1.25, (method, peak, model)


def test_validation_names_the_argument() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        sl.estimate_memory("cholesky", 10, 10)
    with pytest.raises(ValueError, match="jacobian must be one of"):
        sl.estimate_memory("nystrom", 10, 10, jacobian="lazy")
    with pytest.raises(ValueError, match="n_params"):
        sl.estimate_memory("nystrom", 10, 0)
    with pytest.raises(ValueError, match="memory_budget"):
        sl.memory_plan(10, 10, memory_budget=-1)


# -- the default budget: the host's 2 GiB, or half an accelerator's free memory ------------


def test_default_budget_is_the_host_budget_for_host_arrays(backend) -> None:
    x = backend.asarray(np.zeros(3))
    if backend.device is None:
        assert sl.default_budget(x) == sl.default_budget() == 2 * 2**30
    else:  # a device backend (where a GPU exists): half of what the device reports free
        assert 0 < sl.default_budget(x) < 2**50


class _FakeGPU:
    """A device object as JAX shows one: ``platform`` and ``memory_stats()``."""

    platform = "gpu"

    def __init__(self, stats):
        self.stats = stats

    def memory_stats(self):
        return self.stats


_FakeGPU.__module__ = "jaxlib._jax"  # what the dispatcher recognizes JAX devices by


def test_free_device_memory_reads_the_device_statistics() -> None:
    from sketchlinalg import _dispatch

    gpu = _FakeGPU({"bytes_limit": 10 * 2**30, "bytes_in_use": 2 * 2**30})
    assert _dispatch.free_device_memory(gpu) == 8 * 2**30
    assert sl.default_budget(gpu) == 4 * 2**30
    assert _dispatch.free_device_memory(_FakeGPU({})) is None  # no statistics: the default
    assert sl.default_budget(_FakeGPU(None)) == 2 * 2**30
    assert _dispatch.free_device_memory(np.zeros(2)) is None
    assert _dispatch.free_device_memory(None) is None


def test_the_path_rule_and_the_ladder_follow_the_device_budget(monkeypatch) -> None:
    """On an accelerator with room, the materialized Jacobian and larger sketches are
    chosen where the host budget would refuse them (P = 10^6: J is 8 GB)."""
    from sketchlinalg import _dispatch

    N, P = 1_020, 1_005_001
    assert sl.jacobian_path(N, P) == "matrix-free"
    assert sl.jacobian_path(N, P, memory_budget=sl.default_budget(_FakeGPU(None))) == (
        "matrix-free"
    )
    big = _FakeGPU({"bytes_limit": 140 * 2**30, "bytes_in_use": 0})
    assert sl.jacobian_path(N, P, memory_budget=sl.default_budget(big)) == "materialized"

    # build_pinn_system asks the parameters' device when no budget is given.
    seen = []

    def free(where):
        seen.append(where)
        return 140 * 2**30

    monkeypatch.setattr(_dispatch, "free_device_memory", free)
    like = np.zeros(4)
    assert sl.default_budget(like) == 70 * 2**30 and seen[-1] is like
    engine = sl.StepEngine.from_options("nystrom")  # SNGD: adaptive rank
    J = sl.aslinearoperator(np.ones((40, 60)))
    small = engine._ladder(J, np, 10_000)
    large = engine._ladder(J, np, sl.default_budget(like))
    assert len(small) < len(large) and large[-1] == 40
