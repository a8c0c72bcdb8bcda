"""The core's data parallelism (sketchlinalg._distributed) in NumPy: shards simulated by
threads that meet in a collective, against the step on all rows in one piece."""

from __future__ import annotations

import functools
import threading

import numpy as np
import pytest

import sketchlinalg as sl


class Hub:
    """Where the threads of a simulated run meet: every shard deposits its array, all read
    them in shard order (the same sum, bit for bit, on every shard)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.barrier = threading.Barrier(n, timeout=60)
        self.slots: list = [None] * n
        self.calls: list[list[str]] = [[] for _ in range(n)]

    def exchange(self, rank: int, x, op: str) -> list:
        self.calls[rank].append(op)
        self.slots[rank] = x
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out


class ThreadCollective(sl.Collective):
    """A :class:`sketchlinalg.Collective` over the threads of a :class:`Hub`."""

    is_local = False

    def __init__(self, hub: Hub, rank: int) -> None:
        self.hub, self.rank = hub, rank

    def sum(self, x):
        return functools.reduce(np.add, self.hub.exchange(self.rank, np.asarray(x), "sum"))

    def minimum(self, x):
        return functools.reduce(np.minimum, self.hub.exchange(self.rank, np.asarray(x), "min"))

    def gather_rows(self, x):
        return np.concatenate(self.hub.exchange(self.rank, x, "gather"))

    def total_rows(self, n):
        return int(sum(self.hub.exchange(self.rank, n, "rows")))


def run_shards(n: int, fn):
    """``fn(rank, collective)`` on ``n`` threads; their results in rank order."""
    hub = Hub(n)
    results: list = [None] * n
    errors: list = []

    def target(rank: int) -> None:
        try:
            results[rank] = fn(rank, ThreadCollective(hub, rank))
        except BaseException as e:
            errors.append(e)
            hub.barrier.abort()

    threads = [threading.Thread(target=target, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results, hub


def least_squares(N: int, P: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((N, P)) * np.logspace(0, -1, P)
    y = rng.standard_normal(N)
    return J, y


def trial_loss_of(J, r):
    """The loss of the rows ``(J, r)`` at ``theta - eta d`` (a linear residual)."""

    def loss(etas, d):
        Jd = J @ d
        return np.array([0.5 * np.sum((r - eta * Jd) ** 2) for eta in etas])

    return loss


#: name -> (method, options)
ENGINES = {
    "sngd": ("nystrom", {"rank": 6}),
    "sngd-adaptive": ("nystrom", {}),
    "engd": ("dense", {}),
    "engd-woodbury": ("woodbury", {}),
    "nystrom-pcg": ("nystrom-pcg", {"rank": 6, "rtol": 1e-12}),
    "spring": ("woodbury", {"momentum": 0.5}),
    "sngd-fixed": ("nystrom", {"rank": 6, "damping": 1.0, "line_search": None}),
    "sngd-armijo": ("nystrom", {"rank": 6, "line_search": "armijo"}),
    "sngd-whole-grid": ("nystrom", {"rank": 6, "grid_batch": None}),
}


def steps(engine, J, y, theta, n_steps, collective=None, rows=slice(None)):
    """``n_steps`` steps on the rows ``rows`` of the problem; the updates and losses."""
    state = engine.init(theta)
    updates, losses = [], []
    for k in range(n_steps):
        r = J @ theta - y
        update, state, info = engine.step(
            J[rows], r[rows], state, trial_loss=trial_loss_of(J[rows], r[rows]), seed=k,
            collective=collective,
        )  # fmt: skip
        theta = theta + update
        updates.append(update)
        losses.append(float(info.loss))
    return updates, losses, state


@pytest.mark.parametrize("name", list(ENGINES))
@pytest.mark.parametrize("shape", [(40, 12), (10, 30)], ids=["tall", "wide"])
def test_the_identity_collective_changes_nothing(name, shape):
    method, options = ENGINES[name]
    engine = sl.StepEngine.from_options(method, **options)
    J, y = least_squares(*shape)
    theta = np.zeros(shape[1])
    a = steps(engine, J, y, theta, 3)
    b = steps(engine, J, y, theta, 3, collective=sl.Collective())
    for u, v in zip(a[0], b[0], strict=True):
        assert np.array_equal(u, v)
    assert a[1] == b[1]


@pytest.mark.parametrize("name", list(ENGINES))
@pytest.mark.parametrize("shards", [2, 3])
@pytest.mark.parametrize("shape", [(40, 12), (10, 30)], ids=["tall", "wide"])
def test_sharded_steps_equal_the_single_device_steps(name, shards, shape):
    method, options = ENGINES[name]
    engine = sl.StepEngine.from_options(method, **options)
    J, y = least_squares(*shape)
    theta = np.zeros(shape[1])
    ref_updates, ref_losses, ref_state = steps(engine, J, y, theta, 4)
    bounds = np.array_split(np.arange(shape[0]), shards)  # unequal shards

    def shard(rank, collective):
        rows = slice(int(bounds[rank][0]), int(bounds[rank][-1]) + 1)
        return steps(engine, J, y, theta, 4, collective, rows)

    results, _ = run_shards(shards, shard)
    for updates, losses, state in results:
        for u, v in zip(updates, results[0][0], strict=True):
            assert np.array_equal(u, v)  # the same update on every shard
        # the first step to 1e-10; later ones, as the residual (wide: consistent) goes to
        # zero, at the rounding floor of the parameters: relative to the first step
        scale = np.linalg.norm(ref_updates[0])
        for u, ref in zip(updates, ref_updates, strict=True):
            assert np.linalg.norm(u - ref) <= 1e-10 * scale
        np.testing.assert_allclose(losses, ref_losses, rtol=0, atol=1e-12 * ref_losses[0])
        assert int(state.rank) == int(ref_state.rank)


def test_a_nan_on_one_shard_makes_every_shard_skip():
    engine = sl.StepEngine.from_options("nystrom", rank=6)
    J, y = least_squares(40, 12)
    theta = np.zeros(12)

    def shard(rank, collective):
        rows = slice(20 * rank, 20 * rank + 20)
        r = (J @ theta - y)[rows]
        if rank == 1:
            r = r.copy()
            r[3] = np.nan
        with pytest.warns(sl.StepWarning, match="not taken"):
            update, state, info = engine.step(
                J[rows], r, engine.init(theta), trial_loss=trial_loss_of(J[rows], r),
                collective=collective,
            )  # fmt: skip
        return update, int(state.skipped), info.status

    results, _ = run_shards(2, shard)
    for update, skipped, status in results:
        assert not update.any()
        assert skipped == 1
        assert status is sl.Status.NONFINITE


def test_one_all_reduce_for_the_sketch_and_the_gradient():
    """SNGD with a fixed rank and damping, no line search: the row count, the loss and
    ``J^T [J Omega, r]`` (P x (l + 1)) are all that is communicated."""
    engine = sl.StepEngine.from_options("nystrom", rank=6, damping=1e-3, line_search=None)
    J, y = least_squares(40, 12)
    r = J @ np.zeros(12) - y
    sizes: list = []

    def shard(rank, collective):
        class Counting(ThreadCollective):
            def sum(self, x):
                if rank == 0:
                    sizes.append(np.shape(x))
                return super().sum(x)

        rows = slice(20 * rank, 20 * rank + 20)
        c = Counting(collective.hub, rank)
        return engine.step(J[rows], r[rows], engine.init(np.zeros(12)), collective=c)[0]

    _, hub = run_shards(2, shard)
    assert hub.calls[0] == ["rows", "sum", "sum"]
    assert sizes == [(), (12, 7)]


def test_sharded_operator_sums_its_transpose_products():
    J = np.arange(20.0).reshape(5, 4)
    Y = np.ones((5, 2))

    def shard(rank, collective):
        rows = slice(0, 3) if rank == 0 else slice(3, 5)
        op = sl.ShardedOperator(J[rows], collective)
        return op.shape, op.global_shape, op.rmatmat(Y[rows]), op.matmat(np.eye(4))

    results, _ = run_shards(2, shard)
    assert results[0][0] == (3, 4) and results[1][0] == (2, 4)
    assert results[0][1] == results[1][1] == (5, 4)
    for res in results:
        np.testing.assert_allclose(res[2], J.T @ Y)
    np.testing.assert_allclose(np.vstack([results[0][3], results[1][3]]), J)


@pytest.mark.parametrize("method", ["auto", "svd", "kernel-nystrom"])
def test_methods_without_a_sharded_form_say_so(method):
    J = np.ones((4, 3))
    op = sl.ShardedOperator(J, ThreadCollective(Hub(1), 0), rows=8)
    with pytest.raises(NotImplementedError, match="sharded"):
        sl.make_solver(method).init(op, np.ones(4))


def test_a_collective_must_be_one():
    engine = sl.StepEngine.from_options("dense", damping=1e-3, line_search=None)
    with pytest.raises(TypeError, match="Collective"):
        engine.step(np.eye(2), np.ones(2), engine.init(np.zeros(2)), collective=object())


def test_float32_shards_step_in_float64_like_one_device():
    """float32 rows are promoted before the reductions: the sums run in float64."""
    engine = sl.StepEngine.from_options("nystrom", rank=6)
    J64, y64 = least_squares(40, 12)
    J, y = J64.astype(np.float32), y64.astype(np.float32)
    theta = np.zeros(12, dtype=np.float32)
    ref, _, _ = steps(engine, J, y, theta, 1)

    def shard(rank, collective):
        return steps(engine, J, y, theta, 1, collective, slice(20 * rank, 20 * rank + 20))[0]

    results, _ = run_shards(2, shard)
    for updates in results:
        assert updates[0].dtype == np.float32
        np.testing.assert_allclose(updates[0], ref[0], rtol=1e-5, atol=1e-6)
