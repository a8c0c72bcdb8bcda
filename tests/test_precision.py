"""Float32 precision policy: the core computes in full float32, never TF32 (GPU backends).

On a CPU, TF32 does not exist, so these tests check the policy where it is set: JAX's
matmul precision while a core call traces (and the HIGHEST precision it puts on every
product of the lowered program), torch's float32 matmul precision while a core call runs,
and the user's setting restored after the call, also when the call raises.
"""

from __future__ import annotations

import re

import array_api_compat
import numpy as np
import pytest

import sketchlinalg as sl

jax = pytest.importorskip("jax")
jnp = jax.numpy
torch = pytest.importorskip("torch")


def _precision(lib: str) -> str:
    if lib == "jax":
        return str(jax.config.jax_default_matmul_precision)
    return str(torch.get_float32_matmul_precision())


def _recording_operator(lib: str, A: np.ndarray, seen: list[str]):
    """``A`` as an operator that records the library's matmul precision at each product."""
    if lib == "jax":
        M, xp = jnp.asarray(A, dtype=jnp.float32), jnp
        dtype = jnp.float32
    else:
        M, xp = torch.asarray(A, dtype=torch.float32), torch
        dtype = torch.float32

    def matmat(X):
        seen.append(_precision(lib))
        return M @ X

    def rmatmat(Y):
        seen.append(_precision(lib))
        return M.T @ Y

    return (
        sl.FunctionOperator(
            matmat, rmatmat, shape=A.shape, dtype=dtype, xp=array_api_compat.array_namespace(M)
        ),
        M,
        xp,
    )


@pytest.fixture(params=["jax", "torch"])
def lib(request):
    if request.param == "torch":
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")  # the user asked for TF32
        yield "torch"
        torch.set_float32_matmul_precision(previous)
    else:
        yield "jax"


@pytest.mark.parametrize("method", [m for m in sl.METHODS if m != "auto"])
def test_every_solver_runs_its_products_in_full_float32(lib, method):
    A = np.random.default_rng(0).standard_normal((40, 12))
    seen: list[str] = []
    J, M, _ = _recording_operator(lib, A, seen)
    options = {"rank": 6} if method in ("nystrom", "nystrom-pcg", "kernel-nystrom") else {}
    solver = sl.make_solver(method, **options)
    r = M[:, 0] * 0 + 1
    before = _precision(lib)
    solver.solve(solver.init(J, r, seed=0), damping=1e-2)
    assert seen, "the solver never applied the operator"
    assert set(seen) == {"highest"}, f"{method} on {lib}: products at {sorted(set(seen))}"
    assert _precision(lib) == before  # the user's setting is back


def test_entry_points_run_in_full_float32(lib):
    A = np.random.default_rng(1).standard_normal((30, 10))
    seen: list[str] = []
    J, M, _ = _recording_operator(lib, A, seen)
    r = M[:, 0] * 0 + 1
    calls = {
        "nystrom": lambda: sl.nystrom(sl.gram(J), 5, seed=0),
        "natural_gradient_direction": lambda: sl.natural_gradient_direction(
            J, r, damping=1e-2, method="nystrom", rank=5
        ),
        "spring_direction": lambda: sl.spring_direction(J, r, M[0] * 0, damping=1e-2, momentum=0.5),
        "pcg": lambda: sl.pcg(sl.gram(J), M.T @ r, mu=1e-2),
    }
    for name, call in calls.items():
        seen.clear()
        call()
        assert seen and set(seen) == {"highest"}, f"{name} on {lib}: {sorted(set(seen))}"


def test_torch_setting_is_restored_when_a_core_call_raises():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:

        def boom(X):
            assert torch.get_float32_matmul_precision() == "highest"
            raise RuntimeError("boom")

        xp = array_api_compat.array_namespace(torch.zeros(1))
        J = sl.FunctionOperator(boom, boom, shape=(4, 3), dtype=torch.float32, xp=xp)
        with pytest.raises(RuntimeError, match="boom"):
            sl.nystrom(sl.gram(J), 2, seed=0)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)


def test_jax_program_of_a_core_call_has_only_highest_products():
    """The lowered program of a jitted step carries HIGHEST on every float32 product
    (what makes a GPU compute them in IEEE float32); the user's own code keeps DEFAULT."""
    A = jnp.asarray(np.random.default_rng(2).standard_normal((50, 20)), dtype=jnp.float32)
    r = jnp.ones(50, dtype=jnp.float32)

    def step(A):
        return sl.natural_gradient_direction(A, r, damping=1e-3, method="nystrom", rank=10)[0]

    text = jax.jit(step).lower(A).as_text()
    precisions = set(re.findall(r"precision = \[(\w+), (\w+)\]", text))
    assert precisions == {("HIGHEST", "HIGHEST")}, precisions
    user = jax.jit(lambda A: A.T @ A).lower(A).as_text()
    assert set(re.findall(r"precision = \[(\w+), (\w+)\]", user)) == {("DEFAULT", "DEFAULT")}
