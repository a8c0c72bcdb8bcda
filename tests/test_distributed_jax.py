"""Data-parallel JAX steps: collocation points sharded over 4 CPU devices (issue 20).

The sharded runs need ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before JAX is
imported, so they run in a subprocess (``tests/_distributed_jax_cases.py``, once per
session) and these tests check what it reports: the sharded step equals the single-device
step for every method, a 20-step run follows the single-device loss curve, a non-finite
residual on one shard skips the whole step, and the compiled step's collectives match the
communication model (row-space methods never move a row-sized array, so never gather
``J``). The example ``examples/jax_multi_device.py`` runs as documented.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("optax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as PS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = (
    "sngd",
    "nystrom-pcg",
    "engd",
    "engd-woodbury",
    "spring",
    "sngd-adaptive",
    "sngd-matrix-free",
    "sngd-chunked",
)
ROW_SPACE = ("sngd", "nystrom-pcg", "engd", "sngd-matrix-free", "sngd-chunked")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_ENABLE_X64"] = "1"
    env["JAX_PLATFORMS"] = "cpu"
    paths = [str(ROOT), str(ROOT / "adapters"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


@functools.cache
def _cases() -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "_distributed_jax_cases.py")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cases() -> dict[str, Any]:
    return _cases()


@pytest.mark.parametrize("method", METHODS)
def test_sharded_step_equals_single_device(cases, method):
    res = cases["methods"][method]
    assert res["update_norm"] > 0
    assert res["rel_diff"] <= 1e-10, res["rel_diff"]
    assert res["rel_diff_second"] <= 1e-10, res["rel_diff_second"]  # momentum, adapted mu
    assert res["replicated"]  # the update (and the sketch behind it) is the same everywhere


@pytest.mark.parametrize("method", METHODS)
def test_sharded_loss_curve_follows_single_device(cases, method):
    """20 steps of a noisy fit (the loss stays away from zero; Nystrom-PCG's CG to
    ``rtol=1e-12``): every method's sharded curve follows the single-device one to 1e-8."""
    curves = cases["methods"][method]["curves"]
    one, sharded = np.array(curves["one"]), np.array(curves["sharded"])
    assert one.shape == sharded.shape == (20,)
    assert one[-1] < 0.5 * one[0]  # it trains, down to the noise
    np.testing.assert_allclose(sharded, one, rtol=1e-8)


def test_nonfinite_shard_skips_the_whole_step(cases):
    bad = cases["nonfinite"]
    assert bad["all_zero"]  # every device's copy of the update
    assert bad["skipped"] == 1
    assert bad["status"] == bad["status_nonfinite"]
    assert not bad["loss_finite"]


def test_sharded_use_errors(cases):
    assert "jax.jit" in cases["errors"]["eager"]
    assert "not a multiple of the 4 shards" in cases["errors"]["uneven"]


def _no_row_sized(res: dict[str, Any], N: int, devices: int) -> None:
    rows = {N, N // devices}
    for c in res["collectives"]:
        for shape in c["shapes"]:
            assert not rows & set(shape), c  # nothing indexed by rows moves: no gather of J


@pytest.mark.parametrize("method", ROW_SPACE)
def test_row_space_communication_matches_model(cases, method):
    """One all-reduce of the parameter-space block (and per CG iteration one of ``P``);
    every other collective a scalar all-reduce of a trial loss."""
    N, devices = cases["N"], cases["devices"]
    res = cases["methods"][method]
    model = res["model"]
    ops = res["collectives"]
    assert {c["op"] for c in ops} == {"all-reduce"}, ops
    _no_row_sized(res, N, devices)
    big = sorted(c["elements"] for c in ops if c["elements"] > 1)
    scalars = [c for c in ops if c["elements"] == 1]
    per_cg = model["per_cg_iteration"]
    cg = [e for e in big if per_cg is not None and e == per_cg]
    blocks = sorted(e for e in big if e not in cg)
    # the loss travels with its block, or apart as one more scalar (XLA's choice)
    assert blocks in (model["blocks"], [b - 1 for b in model["blocks"]]), big
    assert (len(cg) >= 1) == (per_cg is not None)  # one per CG loop (one per damping trial)
    assert len(scalars) >= 1  # the line search's loss evaluations, sharded too
    total = sum(c["bytes"] for c in ops)
    assert total == 8 * (sum(blocks) + len(cg) * (per_cg or 0) + len(scalars))


def test_adaptive_sngd_gathers_J_only_at_its_exact_rung(cases):
    """Every rung of the adaptive sketch size is a branch of a ``lax.switch``: sketch rungs
    all-reduce ``P (l+1)`` (+ the loss), and only the exact top rung (``G`` in residual
    form, taken when the rank reaches ``min(N, P)``, here ``N < P`` with a materialized
    ``J``) all-gathers ``J``; what runs on every step moves no row-sized array."""
    N, P, devices = cases["N"], cases["P"], cases["devices"]
    ops = cases["methods"]["sngd-adaptive"]["collectives"]
    _no_row_sized({"collectives": [c for c in ops if not c["conditional"]]}, N, devices)
    gathers_J = [c for c in ops if c["elements"] == N * P]
    assert len(gathers_J) == 1 and gathers_J[0]["op"] == "all-gather"
    assert gathers_J[0]["conditional"]
    rungs = {
        c["shapes"][-1][1] - 1
        for c in ops
        if c["op"] == "all-reduce" and c["shapes"][-1][:1] == [P] and len(c["shapes"][-1]) == 2
    }
    assert len(rungs - {0}) >= 2, rungs  # sketch sizes l (and l = 0: J^T r alone)
    for c in ops:
        if c["op"] == "all-reduce" and c["elements"] > P + 3:
            assert c["conditional"] and c["elements"] % P in (0, 1), c  # P (l+1) (+ loss)


@pytest.mark.parametrize("method", ["engd-woodbury", "spring"])
def test_residual_space_communication_matches_model(cases, method):
    """The ``N x N`` kernel needs all of ``J`` on every device: ``[J, r]`` is gathered once
    (``N (P + 1)`` elements) and the kernel method runs replicated; every other collective
    is a scalar trial loss (no ``N x N`` traffic)."""
    N, P = cases["N"], cases["P"]
    res = cases["methods"][method]
    assert res["model"] == {"gathered": N * (P + 1)}
    ops = [c for c in res["collectives"] if not c["conditional"]]
    rows = [c for c in ops if c["elements"] > 1]
    assert all(c["op"] == "all-gather" for c in rows), rows
    assert sum(c["elements"] for c in rows) == N * (P + 1), rows
    assert all(c["op"] == "all-reduce" for c in ops if c["elements"] == 1)


# -- in this process (one device): the argument checks ------------------------------------
def _terms(n: int = 8) -> list[slj.Term]:
    x = jnp.linspace(0.0, 1.0, n)[:, None]
    return [slj.Term(lambda u, x: u(x) - x[0], x)]


def _model(p: Any, x: jax.Array) -> jax.Array:
    return jnp.tanh(p["w"] * x[0] + p["b"])


def _mesh(kind: Any) -> Any:
    return jax.make_mesh((1,), ("data",), axis_types=(kind,))


def test_sharding_argument_is_checked():
    params = {"w": jnp.ones(3), "b": jnp.zeros(3)}
    model = lambda p, x: jnp.sum(_model(p, x))  # noqa: E731
    with pytest.raises(TypeError, match="NamedSharding"):
        slj.pinn_system(model, params, _terms(), sharding=PS("data"))
    bad = NamedSharding(_mesh(AxisType.Auto), PS(None, "data"))
    with pytest.raises(ValueError, match="leading axis only"):
        slj.pinn_system(model, params, _terms(), sharding=bad)
    with pytest.raises(ValueError, match="Auto"):
        slj.pinn_system(
            model, params, _terms(), sharding=NamedSharding(_mesh(AxisType.Explicit), PS("data"))
        )


@pytest.mark.parametrize(
    ("path", "chunk_size"), [("materialized", None), ("materialized", 3), ("matrix-free", None)]
)
def test_sharding_on_one_device_is_the_plain_system(path, chunk_size):
    """A mesh of one device: the same residual and Jacobian (one term: the same order)."""
    params = {"w": jnp.linspace(0.5, 1.5, 3), "b": jnp.linspace(-0.2, 0.2, 3)}
    model = lambda p, x: jnp.sum(_model(p, x))  # noqa: E731
    sharding = NamedSharding(_mesh(AxisType.Auto), PS("data"))
    plain = slj.pinn_system(model, params, _terms(), path=path)
    sharded = slj.pinn_system(
        model, params, _terms(), path=path, sharding=sharding, chunk_size=chunk_size
    )
    assert sharded.path == plain.path == path
    np.testing.assert_allclose(np.asarray(sharded.residual), np.asarray(plain.residual))
    np.testing.assert_allclose(
        np.asarray(sharded.jacobian.to_dense()), np.asarray(plain.jacobian.to_dense())
    )
    r = slj.pinn_residual(model, params, _terms(), sharding=sharding)
    np.testing.assert_allclose(np.asarray(r), np.asarray(plain.residual))
