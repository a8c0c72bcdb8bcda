"""Data-parallel natural gradients in torch: the optimizers' ``process_group`` on the gloo
backend with 2 and 4 processes (CPU, float64), against the same optimizer on one process.

Each rank fits its own share of 26 points (4 ranks: 7, 7, 6, 6) of a small least-squares
problem (tests/torch_distributed_worker.py). Checked for every method: the sharded update
equals the single-device one (relative 1e-10) and is the same on every rank, a 20-step run
follows the single-device loss curve (relative 1e-8), a NaN residual on one rank makes
every rank skip, and the bytes each rank sends per step equal the communication model.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch not installed")
pytest.importorskip("sketchlinalg_torch", reason="sketchlinalg_torch not importable")
dist = torch.distributed
if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402
import torch_distributed_worker as worker  # noqa: E402

#: The methods and their default-option configurations (adaptive damping, grid search).
METHODS = [
    "sngd", "sngd-adaptive-rank", "sngd-matrix-free", "engd", "engd-woodbury", "nystrom-pcg",
    "spring",
]  # fmt: skip
P = sum(w * v + v for w, v in zip(worker.WIDTHS, worker.WIDTHS[1:], strict=False))  # 19
S = 8  # bytes per float64 entry
INT = 8  # bytes per int64 row count


@pytest.fixture(scope="module")
def single() -> dict:
    """Every configuration on one process, all points."""
    return {name: worker.run_optimizer(name, worker.Problem()) for name in worker.CONFIGS}


@pytest.fixture(scope="module", params=[2, 4], ids=["2-ranks", "4-ranks"])
def sharded(request, tmp_path_factory) -> list[dict]:
    """Every configuration on ``world`` gloo processes: each rank's results."""
    world = request.param
    out = tmp_path_factory.mktemp(f"dist{world}")
    init = out / "init"
    try:
        mp.spawn(worker.main, args=(world, str(out), str(init)), nprocs=world, join=True)
    except Exception as e:  # the ranks' tracebacks say more than spawn's summary
        errors = "\n".join(p.read_text() for p in sorted(out.glob("*.err")))
        pytest.fail(f"a rank failed: {e}\n{errors}")
    return [torch.load(out / f"rank{k}.pt", weights_only=False) for k in range(world)]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", list(worker.CONFIGS))
def test_sharded_update_equals_the_single_device_update(sharded, single, name):
    ours = [r["sharded"][name] for r in sharded]
    for rank in ours:
        assert torch.equal(rank["theta0"], single[name]["theta0"])
        # the same sketch (seed) and the same reductions: the same update on every rank
        assert torch.equal(rank["first_update"], ours[0]["first_update"])
        assert rank["losses"] == ours[0]["losses"]
    assert _rel(ours[0]["first_update"], single[name]["first_update"]) <= 1e-10
    assert [r["status"] for r in ours[0]["records"]] == [
        r["status"] for r in single[name]["records"]
    ]


@pytest.mark.parametrize("name", METHODS)
def test_sharded_run_follows_the_single_device_loss_curve(sharded, single, name):
    mine = torch.tensor(sharded[0]["sharded"][name]["losses"])
    ref = torch.tensor(single[name]["losses"])
    assert mine.shape == ref.shape
    assert float(((mine - ref).abs() / ref.abs()).max()) <= 1e-8
    if worker.CONFIGS[name][2] == worker.STEPS:
        assert ref[-1] < 0.05 * ref[0]  # it trains


def test_a_nonfinite_residual_on_one_rank_makes_every_rank_skip(sharded):
    for rank in sharded:
        nf = rank["nonfinite"]
        assert nf["skipped"] == 1
        assert nf["status"] == 3  # NONFINITE
        assert nf["moved"] == 0.0
        assert nf["after"] == 0  # the next step is taken again


def test_ranks_with_different_seeds_are_refused(sharded):
    for rank in sharded:
        assert "sketch generators differ" in rank["seed_check"]


def model_bytes(name: str, record: dict, rows: int, n_max: int) -> int:
    """The communication model: bytes one rank sends in one step (float64, int64 counts).

    Every step: the global row count (int64) and the loss (one entry). Then by method
    (``l`` the sketch size, ``k`` CG iterations, ``N_max`` the largest shard's rows):

    * sngd: ``J^T [J Omega, r]``, ``P (l + 1)`` entries; an adaptive rank adds the
      memory budget's minimum (int64); at ``l = min(N, P)`` with a materialized ``J``,
      ``G`` comes from the thin SVD of the gathered ``[J, r]`` (as engd-woodbury);
    * nystrom-pcg: the same sketch, and ``P`` entries per CG product (``k + 1``: the
      last one checks the true residual);
    * engd: ``J^T [J, r]``, ``P (P + 1)`` entries;
    * engd-woodbury, spring: the all-gather of ``[J_d, r_d]``: its row counts (int64)
      and ``N_max (P + 1)`` entries; SPRING's right-hand side ``r - beta J phi`` is
      gathered too (int64 + ``N_max`` entries) per trial;
    * per trial, 2 entries (slope and curvature along the step, ``J d``) for SNGD with an
      adaptive damping or rank, and for SPRING;
    * one entry per trial loss of the line search or the gain ratio.
    """
    base = INT + S
    trials, evals = record["trials"], record["evaluations"]
    l = record["rank"]
    kind = name.split("-fixed")[0].split("-adaptive-rank")[0].split("-matrix-free")[0]
    adaptive = not name.endswith("-fixed")
    if kind == "sngd":
        if name == "sngd-adaptive-rank":  # materialized J, rank min(N, P) = P: gathered
            assert l == P
            comm = INT + INT + S * n_max * (P + 1)
        else:
            comm = S * P * (l + 1)
        comm += trials * 2 * S if adaptive else 0
    elif kind == "nystrom-pcg":
        assert trials == 1  # (info.direction: the first trial's CG iterations)
        comm = S * P * (l + 1) + S * P * (record["iterations"] + 1)
    elif kind == "engd":
        comm = S * P * (P + 1)
    elif kind == "engd-woodbury":
        comm = INT + S * n_max * (P + 1)
    else:
        assert kind == "spring"
        comm = INT + S * n_max * (P + 1) + trials * (INT + S * n_max + 2 * S)
    return base + comm + S * evals


@pytest.mark.parametrize("name", list(worker.CONFIGS))
def test_communication_per_step_equals_the_model(sharded, name):
    n_max = max(r["rows"] for r in sharded)
    checked = 0
    for rank in sharded:
        for record in rank["sharded"][name]["records"]:
            if name.startswith("nystrom-pcg") and record["trials"] > 1:
                continue
            assert record["bytes"] == sum(b for _, b in record["log"])
            assert record["bytes"] == model_bytes(name, record, rank["rows"], n_max), record["log"]
            checked += 1
    assert checked >= len(sharded)
