"""The CuPy adapter (sketchlinalg_cupy) and the core's CuPy branches.

Every test body runs on the host libraries (NumPy, PyTorch-CPU, JAX-CPU) and, where a
CUDA device is present, on CuPy / torch-CUDA / JAX-GPU; the GPU cases skip with the reason
(CuPy missing, no driver, no device). On the host, NumPy stands in for CuPy: the DLPack
exchange, the operator wrapper, the SciPy operators and the update step are written once
for any namespace, so their code paths are covered without a GPU.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pathlib
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
import sketchlinalg_cupy as slc
import torch

import sketchlinalg as sl
from sketchlinalg import _dispatch

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUDA_OK, CUDA_REASON = slc.cuda_status()


# ----------------------------------------------------------------------------------------
# libraries: host ones always, GPU ones when CuPy reaches a device
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lib:
    """One array library on one device."""

    name: str
    xp: Any
    device: Any

    @property
    def kind(self) -> str:
        return self.name.split("-")[0]

    def put(self, a: np.ndarray) -> Any:
        """Host data -> a fresh array of this library (set-up only)."""
        a = np.array(a)
        if self.kind == "torch":
            return torch.tensor(a, device=self.device)
        if self.kind == "jax":
            import jax

            return jax.device_put(a, self.device)
        return self.xp.asarray(a)

    def get(self, a: Any) -> np.ndarray:
        """An array of this library -> float64 NumPy copy."""
        if self.kind == "torch":
            return a.detach().cpu().numpy().astype(np.float64)
        if self.kind == "cupy":
            return np.asarray(a.get(), dtype=np.float64)
        return np.array(a, dtype=np.float64)

    def ptr(self, a: Any) -> int:
        """Address of the first element."""
        if self.kind == "torch":
            return int(a.data_ptr())
        if self.kind == "cupy":
            return int(a.data.ptr)
        if self.kind == "jax":
            return int(a.unsafe_buffer_pointer())
        return int(a.__array_interface__["data"][0])


def _jax() -> Any:
    jax = pytest.importorskip("jax", reason="jax not installed")
    jax.config.update("jax_enable_x64", True)
    return jax


def load(name: str) -> Lib:
    """The library ``name``, or skip with the reason."""
    if name == "numpy":
        return Lib(name, importlib.import_module("array_api_compat.numpy"), "cpu")
    if name == "torch":
        return Lib(name, importlib.import_module("array_api_compat.torch"), torch.device("cpu"))
    if name == "jax":
        jax = _jax()
        return Lib(name, importlib.import_module("jax.numpy"), jax.devices("cpu")[0])
    if not CUDA_OK:
        pytest.skip(f"no CUDA device for {name}: {CUDA_REASON}")
    if name == "cupy":
        cupy = importlib.import_module("cupy")
        return Lib(name, importlib.import_module("array_api_compat.cupy"), cupy.cuda.Device(0))
    if name == "torch-cuda":
        if not torch.cuda.is_available():
            pytest.skip(f"torch {torch.__version__} was built without CUDA or sees no GPU")
        return Lib(name, importlib.import_module("array_api_compat.torch"), torch.device("cuda:0"))
    if name == "jax-gpu":
        jax = _jax()
        try:
            devices = jax.devices("gpu")
        except RuntimeError as exc:
            pytest.skip(f"jax has no GPU backend: {str(exc).splitlines()[0]}")
        return Lib(name, importlib.import_module("jax.numpy"), devices[0])
    raise ValueError(name)


CORES = ["numpy", "torch", "cupy"]  # namespaces the core runs on in these tests
# (core, framework): the framework's arrays / Jacobians feed the core through DLPack.
PAIRS = [
    ("numpy", "torch"),
    ("torch", "jax"),
    ("cupy", "torch-cuda"),
    ("cupy", "jax-gpu"),
]


@pytest.fixture(params=CORES)
def core(request: pytest.FixtureRequest) -> Lib:
    return load(request.param)


@pytest.fixture(params=PAIRS, ids=lambda p: f"{p[0]}<-{p[1]}")
def pair(request: pytest.FixtureRequest) -> tuple[Lib, Lib]:
    a, b = request.param
    return load(a), load(b)


def _psd(lam: np.ndarray, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(lam), len(lam))))
    return (q * lam) @ q.T


def _problem(seed: int = 0, N: int = 40, P: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, P)), rng.standard_normal(N)


def _reference(J: np.ndarray, r: np.ndarray, mu: float) -> np.ndarray:
    return np.linalg.solve(J.T @ J + mu * np.eye(J.shape[1]), J.T @ r)


# ----------------------------------------------------------------------------------------
# package hygiene
# ----------------------------------------------------------------------------------------
def test_package_imports_without_cupy_torch_or_jax():
    code = (
        "import sys, sketchlinalg_cupy; "
        "print(sorted(m for m in ('cupy', 'cupyx', 'torch', 'jax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_every_public_name_is_documented_and_all_is_sorted():
    assert list(slc.__all__) == sorted(slc.__all__, key=lambda n: (not n[0].isupper(), n))
    for name in slc.__all__:
        obj = getattr(slc, name)
        doc = inspect.getdoc(obj)
        assert doc and len(doc) > 40, f"sketchlinalg_cupy.{name} has no real docstring"
        if inspect.isclass(obj):
            for meth_name, meth in vars(obj).items():
                if not meth_name.startswith("_") and callable(meth):
                    assert inspect.getdoc(meth), f"{name}.{meth_name} has no docstring"


def test_cuda_status_gives_a_reason():
    ok, reason = slc.cuda_status()
    assert isinstance(ok, bool) and reason
    if not ok:
        assert "cupy" in reason.lower() or "cuda" in reason.lower()


# ----------------------------------------------------------------------------------------
# DLPack exchange
# ----------------------------------------------------------------------------------------
def test_exchange_shares_memory_both_ways(pair):
    core, fw = pair
    a = core.put(np.arange(12.0).reshape(3, 4))
    t = slc.dlpack_exchange(a, fw.xp)
    back = slc.dlpack_exchange(t, core.xp)
    np.testing.assert_array_equal(fw.get(t), np.arange(12.0).reshape(3, 4))
    assert core.ptr(back) == core.ptr(a)
    if fw.kind != "jax" or core.kind == "cupy":  # JAX may copy unaligned host buffers
        assert fw.ptr(t) == core.ptr(a)
    if fw.kind == "torch":  # a write through one is seen by the other
        t += 1.0
        np.testing.assert_array_equal(core.get(a), np.arange(12.0).reshape(3, 4) + 1.0)


def test_exchange_detaches_a_tensor_that_requires_grad():
    w = torch.arange(3.0, dtype=torch.float64).requires_grad_()
    a = slc.dlpack_exchange(w, np)
    assert a.__array_interface__["data"][0] == w.data_ptr()
    assert w.requires_grad


def test_host_arrays_are_never_copied_to_the_device():
    """CuPy gets only GPU memory; the check comes before CuPy is even imported."""
    with pytest.raises(ValueError, match="never copies through the host"):
        slc.dlpack_exchange(np.zeros(3))
    with pytest.raises(ValueError, match=r"lives on CPU \(host\)"):
        slc.from_torch(torch.zeros(3))
    jax = _jax()
    host = jax.device_put(jax.numpy.zeros(3), jax.devices("cpu")[0])  # a GPU's default: GPU
    with pytest.raises(ValueError, match="never copies through the host"):
        slc.from_jax(host)


def test_exchange_validation_names_the_argument():
    with pytest.raises(TypeError, match=r"from_torch: tensor must be a torch.Tensor, got ndarray"):
        slc.from_torch(np.zeros(3))
    with pytest.raises(TypeError, match=r"from_jax: array must be a jax.Array, got Tensor"):
        slc.from_jax(torch.zeros(3))
    with pytest.raises(TypeError, match=r"to_torch: array must be a cupy.ndarray, got ndarray"):
        slc.to_torch(np.zeros(3))
    with pytest.raises(TypeError, match=r"to_jax: array must be a cupy.ndarray, got Tensor"):
        slc.to_jax(torch.zeros(3))
    with pytest.raises(TypeError, match=r"must be an array that supports DLPack.*got list"):
        slc.dlpack_exchange([1.0, 2.0], np)
    with pytest.raises(TypeError, match="xp must be an array namespace"):
        slc.dlpack_exchange(np.zeros(3), object())
    readonly = np.zeros(3)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match=r"jax cannot wrap x \(ndarray\) without a copy"):
        slc.dlpack_exchange(readonly, _jax().numpy)


def test_jax_traced_values_are_refused():
    jax = _jax()

    def f(x: Any) -> Any:
        slc.dlpack_exchange(x, np)
        return x

    with pytest.raises(TypeError, match="traced JAX value"):
        jax.jit(f)(jax.numpy.zeros(3))


@pytest.mark.skipif(not CUDA_OK, reason=f"no CUDA device: {CUDA_REASON}")
def test_cupy_torch_and_jax_round_trips_on_the_gpu():
    cupy = importlib.import_module("cupy")
    if torch.cuda.is_available():
        t = torch.randn(50, 4, device="cuda", dtype=torch.float64)
        a = slc.from_torch(t)
        assert isinstance(a, cupy.ndarray) and a.data.ptr == t.data_ptr()
        assert slc.to_torch(a).data_ptr() == t.data_ptr()
    jax = _jax()
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:
        return
    x = jax.device_put(jax.numpy.arange(8.0), gpu)
    a = slc.from_jax(x)
    assert a.data.ptr == x.unsafe_buffer_pointer()
    assert slc.to_jax(a).unsafe_buffer_pointer() == a.data.ptr


# ----------------------------------------------------------------------------------------
# operators
# ----------------------------------------------------------------------------------------
def _sparse_lib(core: Lib) -> tuple[Any, Any]:
    """(sparse module, sparse.linalg module) of the core's library."""
    if core.kind == "cupy":
        return (
            importlib.import_module("cupyx.scipy.sparse"),
            importlib.import_module("cupyx.scipy.sparse.linalg"),
        )
    return scipy.sparse, scipy.sparse.linalg


@pytest.fixture(params=["numpy", "cupy"])
def sparse_core(request: pytest.FixtureRequest) -> Lib:
    return load(request.param)


def test_sparse_matrix_operator(sparse_core):
    sp, _ = _sparse_lib(sparse_core)
    rng = np.random.default_rng(1)
    A = rng.standard_normal((30, 12)) * (rng.random((30, 12)) < 0.3)
    op = slc.aslinearoperator(sp.csr_matrix(sparse_core.put(A)))
    X, Y = rng.standard_normal((12, 3)), rng.standard_normal((30, 2))
    np.testing.assert_allclose(sparse_core.get(op.matmat(sparse_core.put(X))), A @ X)
    np.testing.assert_allclose(sparse_core.get(op.rmatmat(sparse_core.put(Y))), A.T @ Y)
    np.testing.assert_allclose(sparse_core.get(op.to_dense()), A)
    assert op.shape == (30, 12) and op.device == sparse_core.device


def test_scipy_like_linear_operator(sparse_core):
    _, spla = _sparse_lib(sparse_core)
    A = _psd(np.linspace(1.0, 2.0, 15), 2)
    Ad = sparse_core.put(A)
    sym = spla.LinearOperator((15, 15), matvec=lambda v: Ad @ v, dtype=np.float64)
    op = slc.aslinearoperator(sym, psd=True)  # no rmatvec: the tag makes it transposable
    approx = sl.nystrom(op, 15, seed=0)
    np.testing.assert_allclose(sparse_core.get(approx.to_dense()), A, atol=1e-10)
    rect = np.random.default_rng(3).standard_normal((9, 4))
    R = sparse_core.put(rect)
    lo = spla.LinearOperator(
        (9, 4), matvec=lambda v: R @ v, rmatvec=lambda v: R.T @ v, dtype=np.float64
    )
    J = slc.aslinearoperator(lo)
    np.testing.assert_allclose(sparse_core.get(J.to_dense()), rect)
    np.testing.assert_allclose(sparse_core.get(J.T.to_dense()), rect.T)


def test_aslinearoperator_rejects_bad_input():
    with pytest.raises(TypeError, match="aslinearoperator: A must be a 2-D CuPy array"):
        slc.aslinearoperator([[1.0]])
    with pytest.raises(TypeError, match="real floating dtype"):
        slc.aslinearoperator(scipy.sparse.eye(3, dtype=np.int64, format="csr"))
    arr = np.eye(2)
    assert slc.aslinearoperator(arr, psd=True).is_psd


def test_function_operator(core):
    A = _psd(np.arange(1.0, 7.0), 3)
    Ad = core.put(A)
    op = slc.function_operator(lambda X: Ad @ X, shape=(6, 6), psd=True, xp=core.xp)
    assert op.dtype == core.xp.float64 and op.is_psd
    np.testing.assert_allclose(core.get(op.T.to_dense()), A, atol=1e-12)
    with pytest.raises(TypeError, match="function_operator: dtype must have a real floating"):
        slc.function_operator(lambda X: X, shape=(2, 2), dtype=core.xp.int64, xp=core.xp)
    with pytest.raises(TypeError, match="xp must be an array namespace"):
        slc.function_operator(lambda X: X, shape=(2, 2), xp=object())


@pytest.mark.skipif(not CUDA_OK, reason=f"no CUDA device: {CUDA_REASON}")
def test_function_operator_defaults_to_cupy():
    cupy = importlib.import_module("cupy")
    op = slc.function_operator(lambda X: 2.0 * X, shape=(4, 4), psd=True)
    assert isinstance(op.matvec(cupy.ones(4)), cupy.ndarray)


def test_dlpack_operator_products_and_directions(pair):
    """A framework's Jacobian (materialized and matrix-free) drives the core on another
    library; every method gives the direction of the float64 reference."""
    core, fw = pair
    J, r = _problem()
    mu = 1e-3
    ref = _reference(J, r, mu)
    base = sl.aslinearoperator(fw.put(J))
    Jc = slc.dlpack_operator(base, core.xp)
    assert isinstance(Jc, slc.DLPackOperator) and Jc.base is base
    assert Jc.shape == (40, 12) and Jc.is_materialized
    assert Jc.dtype == core.xp.float64 and core.kind in type(Jc.matvec(core.put(J[0]))).__module__
    X = np.random.default_rng(2).standard_normal((12, 3))
    np.testing.assert_allclose(core.get(Jc.matmat(core.put(X))), J @ X, atol=1e-12)
    np.testing.assert_allclose(core.get(Jc.T.matmat(core.put(J @ X))), J.T @ J @ X, atol=1e-10)
    dense = Jc.to_dense()
    np.testing.assert_array_equal(core.get(dense), J)
    rc = core.put(r)
    for method, kw in (("dense", {}), ("nystrom", {"rank": 12}), ("nystrom-pcg", {"rank": 6})):
        d, info = sl.natural_gradient_direction(Jc, rc, damping=mu, method=method, seed=0, **kw)
        assert info.converged
        np.testing.assert_allclose(core.get(d), ref, rtol=1e-7, atol=1e-9)


def test_framework_jacobian_feeds_the_core_and_the_step_flows_back(pair):
    """The model's Jacobian products (torch.func / jax.linearize) cross by DLPack at each
    product; the step updates the framework's parameters in place through shared memory."""
    core, fw = pair
    rng = np.random.default_rng(4)
    M, theta = rng.standard_normal((30, 8)) / 3.0, rng.standard_normal(8)
    mu = 1e-4
    jac = np.cos(M @ theta)[:, None] * M
    ref = _reference(jac, np.sin(M @ theta), mu)
    Mf = fw.put(M)
    if fw.kind == "torch":
        st = pytest.importorskip("sketchlinalg_torch")
        params = {"w": fw.put(theta).requires_grad_()}
        r, J = st.jacobian_operator(lambda p: torch.sin(Mf @ p["w"]), params)
    else:
        slj = pytest.importorskip("sketchlinalg_jax")
        params = {"w": fw.put(theta)}
        r, J = slj.jacobian_operator(lambda p: fw.xp.sin(Mf @ p["w"]), params)
    Jc = slc.dlpack_operator(J, core.xp)
    assert not Jc.is_materialized
    rc = slc.dlpack_exchange(r, core.xp)
    if fw.kind == "torch":
        view = slc.dlpack_exchange(params["w"], core.xp)
        out = slc.natural_gradient_step(
            view, Jc, rc, damping=mu, method="nystrom", rank=8, inplace=True
        )
        assert out.params is view
        np.testing.assert_allclose(fw.get(params["w"]), theta - ref, rtol=1e-8, atol=1e-10)
    else:
        d, _ = sl.natural_gradient_direction(Jc, rc, damping=mu, method="nystrom", rank=8)
        new = params["w"] - slc.dlpack_exchange(d, fw.xp)
        np.testing.assert_allclose(fw.get(new), theta - ref, rtol=1e-8, atol=1e-10)


def test_dlpack_operator_refuses_a_host_operator_for_cupy():
    J = sl.aslinearoperator(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"DLPackOperator: base .* lives on CPU"):
        slc.dlpack_operator(J)
    with pytest.raises(TypeError, match=r"base must be a sketchlinalg.LinearOperator"):
        slc.dlpack_operator(np.zeros((3, 2)), np)


# ----------------------------------------------------------------------------------------
# the update step
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("structure", ["array", "list", "tuple", "dict"])
@pytest.mark.parametrize("inplace", [False, True])
def test_natural_gradient_step(core, structure, inplace):
    J, r = _problem(5, N=30, P=10)
    mu, lr = 1e-3, 0.5
    expected = np.concatenate([np.zeros(6), np.ones(3), [2.0]]) - lr * _reference(J, r, mu)
    shapes = [(2, 3), (3,), ()]
    pieces = [np.zeros(6), np.ones(3), np.array([2.0])]
    arrays = [core.put(p.reshape(s)) for p, s in zip(pieces, shapes, strict=True)]
    params: Any
    if structure == "array":
        params = core.put(np.ones(10))
        expected = np.ones(10) - lr * _reference(J, r, mu)
    elif structure == "list":
        params = arrays
    elif structure == "tuple":
        params = tuple(arrays)
    else:
        params = dict(zip("abc", arrays, strict=True))
    out = slc.natural_gradient_step(
        params,
        core.put(J),
        core.put(r),
        damping=mu,
        learning_rate=lr,
        method="dense",
        inplace=inplace,
    )
    leaves = (
        [out.params]
        if structure == "array"
        else list(out.params.values() if structure == "dict" else out.params)
    )
    assert type(out.params) is type(params) or structure == "array"
    flat = np.concatenate([core.get(p).reshape(-1) for p in leaves])
    np.testing.assert_allclose(flat, expected, rtol=1e-10)
    assert [tuple(p.shape) for p in leaves] == ([(10,)] if structure == "array" else shapes)
    originals = (
        [params]
        if structure == "array"
        else list(params.values() if structure == "dict" else params)
    )
    same = all(a is b for a, b in zip(leaves, originals, strict=True))
    assert same == inplace
    assert out.info.direction.method == "dense" and tuple(out.direction.shape) == (10,)
    assert out.info.status is sl.Status.SUCCESS


def test_natural_gradient_step_validation(core):
    J, r = _problem(6, N=20, P=5)
    Jd, rd = core.put(J), core.put(r)
    with pytest.raises(ValueError, match=r"params hold 4 entries .* has 5 columns"):
        slc.natural_gradient_step(core.put(np.zeros(4)), Jd, rd, damping=1e-3)
    p32 = core.put(np.zeros(1, dtype=np.float32))
    with pytest.raises(TypeError, match=r"params\[1\] has dtype .*float32"):
        slc.natural_gradient_step([core.put(np.zeros(4)), p32], Jd, rd, damping=1e-3)
    with pytest.raises(ValueError, match="learning_rate must be >= 0, got -1"):
        slc.natural_gradient_step(core.put(np.zeros(5)), Jd, rd, damping=1e-3, learning_rate=-1)
    with pytest.raises(TypeError, match="params must be an array, a list/tuple"):
        slc.natural_gradient_step("abc", Jd, rd, damping=1e-3)
    with pytest.raises(ValueError, match="params is empty"):
        slc.natural_gradient_step([], Jd, rd, damping=1e-3)
    with pytest.raises(TypeError, match=r"params\[0\] must be an array, got float"):
        slc.natural_gradient_step([1.0], Jd, rd, damping=1e-3)
    other = np.zeros(5) if core.kind != "numpy" else torch.zeros(5, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"params is a .* array but J's products are"):
        slc.natural_gradient_step(other, Jd, rd, damping=1e-3)
    params = core.put(np.arange(5.0))
    bad_r = core.put(np.full(20, np.nan))
    with pytest.warns(sl.StepWarning, match="parameters were left unchanged"):
        out = slc.natural_gradient_step(
            params, Jd, bad_r, damping=1e-3, method="dense", inplace=True
        )
    np.testing.assert_array_equal(core.get(params), np.arange(5.0))
    assert out.info.status is sl.Status.NONFINITE


def test_natural_gradient_step_refuses_inplace_on_jax():
    jax_lib = load("jax")
    J, r = _problem(7, N=10, P=3)
    with pytest.raises(TypeError, match="JAX arrays are immutable"):
        slc.natural_gradient_step(
            jax_lib.put(np.zeros(3)), jax_lib.put(J), jax_lib.put(r), damping=1e-3, inplace=True
        )


# ----------------------------------------------------------------------------------------
# the core's backend-specific pieces, same bodies on every core namespace
# ----------------------------------------------------------------------------------------
def test_native_sampler_draws_on_the_device(core):
    xp, dev = core.xp, core.device
    a = sl.sketch_matrix(500, 40, xp=xp, dtype=xp.float64, device=dev, seed=3)
    b = sl.sketch_matrix(500, 40, xp=xp, dtype=xp.float64, device=dev, seed=3)
    c = sl.sketch_matrix(500, 40, xp=xp, dtype=xp.float64, device=dev, seed=4)
    assert _dispatch.device_of(a) == dev
    assert core.kind in type(a).__module__  # the backend's own array, no host detour
    np.testing.assert_array_equal(core.get(a), core.get(b))
    assert not np.array_equal(core.get(a), core.get(c))
    v = core.get(a)
    assert abs(v.mean()) < 6 / math.sqrt(v.size) and abs(v.var() - 1) < 6 * math.sqrt(2 / v.size)
    u = sl.DefaultSampler(5).uniform((1000,), xp=xp, dtype=xp.float32, device=dev)
    assert u.dtype == xp.float32 and float(xp.min(u)) >= 0.0 and float(xp.max(u)) < 1.0


def test_triangular_solve(core):
    rng = np.random.default_rng(8)
    L = np.tril(rng.standard_normal((30, 30))) + 30 * np.eye(30)
    B = rng.standard_normal((30, 4))
    lo = _dispatch.solve_triangular(core.xp, core.put(L), core.put(B), lower=True)
    up = _dispatch.solve_triangular(core.xp, core.put(L.T), core.put(B), lower=False)
    np.testing.assert_allclose(core.get(lo), scipy.linalg.solve_triangular(L, B, lower=True))
    np.testing.assert_allclose(core.get(up), scipy.linalg.solve_triangular(L.T, B, lower=False))


def test_failed_cholesky_is_reported_not_returned(core):
    """CuPy's default returns cuSOLVER's partial factor (finite, wrong): it must be None."""
    assert _dispatch.cholesky(core.xp, core.put(np.diag([1.0, -1.0, 2.0]))) is None
    A = _psd(np.linspace(1.0, 2.0, 8), 5)
    L = _dispatch.cholesky(core.xp, core.put(A))
    assert L is not None
    np.testing.assert_allclose(core.get(L), np.linalg.cholesky(A), atol=1e-12)


def test_nystrom_with_a_singular_core_falls_back_to_eigh(core):
    """A zero sketch column makes the Cholesky core singular; the result stays exact."""
    n, l = 20, 6
    A = _psd(np.linspace(1.0, 2.0, n), 3)
    Omega = np.random.default_rng(0).standard_normal((n, l))
    Omega[:, 2] = 0.0
    approx = sl.nystrom(core.put(A), l, sketch=core.put(Omega))
    assert approx.core == "eigh (cholesky failed)"
    Ahat = core.get(approx.to_dense())
    np.testing.assert_allclose(Ahat @ Omega, A @ Omega, atol=1e-10)
    assert np.linalg.eigvalsh(A - Ahat).min() >= -1e-10


def test_sngd_direction_matches_the_reference(core):
    J, r = _problem(9, N=50, P=20)
    d, info = sl.natural_gradient_direction(
        core.put(J), core.put(r), damping=1e-3, method="nystrom", rank=20, seed=1
    )
    assert info.method == "nystrom"
    np.testing.assert_allclose(core.get(d), _reference(J, r, 1e-3), rtol=1e-8)


# ----------------------------------------------------------------------------------------
# benchmarks/gpu_check.py
# ----------------------------------------------------------------------------------------
def _gpu_check(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.gpu_check")


@pytest.mark.skipif(CUDA_OK, reason="a CUDA device is present: the check would run for real")
def test_gpu_check_skips_without_a_cuda_device(monkeypatch, capsys, tmp_path):
    gpu_check = _gpu_check(monkeypatch)
    monkeypatch.setattr(gpu_check, "ROOT", tmp_path)  # nothing may be written
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # restored afterwards
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out
    assert "no CUDA device: skipped" in out
    assert not list(tmp_path.rglob("*"))


@pytest.mark.slow
def test_gpu_check_cpu_dry_run(monkeypatch, capsys, tmp_path):
    """The whole script (checks, timings, report) on the CPU at tiny sizes."""
    gpu_check = _gpu_check(monkeypatch)
    status = gpu_check.main(["--cpu-dry-run", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert (tmp_path / "gpu_check.json").exists() and (tmp_path / "gpu_check.md").exists()
    assert "hybrid direction" in out and "model + torch-cpu core" in out
