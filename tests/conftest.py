"""Backend x dtype fixtures, hypothesis profiles and reference helpers.

Every numerical test runs on numpy, array-api-strict, torch (CPU) and jax (CPU), in float32
and float64, and on the device backends torch-cuda, jax-gpu and cupy where a GPU is present
(the array-api-extra pattern). References are computed in float64 NumPy; tolerances come
from the dtype. A backend that is not installed, or has no device, is skipped with the
reason. While a test runs on a backend, that backend's default device is the backend's, so
arrays the test creates itself land where the backend's do; conversions to NumPy go through
each library's own host copy (``Tensor.cpu``, ``jax.device_get``, ``cupy.asnumpy``).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

BACKEND_NAMES = ("numpy", "array_api_strict", "torch", "jax")
#: Device backends: (fixture id, library). Skipped with the reason where no device exists.
DEVICE_BACKENDS = (("torch-cuda", "torch"), ("jax-gpu", "jax"), ("cupy", "cupy"))
DTYPE_NAMES = ("float32", "float64")


def _load(name: str) -> Any:
    """Import a backend and return its array namespace, or skip."""
    if name == "numpy":
        import array_api_compat.numpy as xp

        return xp
    if name == "array_api_strict":
        mod = pytest.importorskip("array_api_strict", reason="array-api-strict not installed")
        return mod
    if name == "torch":
        pytest.importorskip("torch", reason="torch not installed")
        return importlib.import_module("array_api_compat.torch")
    if name == "jax":
        jax = pytest.importorskip("jax", reason="jax not installed")
        jax.config.update("jax_enable_x64", True)
        return importlib.import_module("jax.numpy")
    if name == "cupy":
        pytest.importorskip("cupy", reason="cupy not installed")
        return importlib.import_module("array_api_compat.cupy")
    raise ValueError(name)


def _device(backend_id: str) -> Any:
    """The device of a device backend (skips without one); ``None`` for the CPU backends."""
    if backend_id == "torch-cuda":
        import torch

        if not torch.cuda.is_available():
            pytest.skip("torch-cuda: no CUDA device")
        return torch.device("cuda")
    if backend_id == "jax-gpu":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            pytest.skip("jax-gpu: no GPU device (jax.devices() has none)")
        return gpus[0]
    if backend_id == "cupy":
        import cupy

        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDA driver or runtime missing
            pytest.skip(f"cupy: no CUDA device ({type(exc).__name__}: {exc})")
        if count == 0:
            pytest.skip("cupy: no CUDA device")
        return cupy.cuda.Device(0)
    return None


@dataclass(frozen=True)
class Backend:
    """One backend and dtype, with conversion helpers and dtype-derived tolerances.

    ``name`` is the library ("numpy", "array_api_strict", "torch", "jax", "cupy");
    ``device`` is ``None`` for the CPU backends, else the GPU device.
    """

    name: str
    dtype_name: str
    xp: Any
    device: Any = None

    @property
    def dtype(self) -> Any:
        return getattr(self.xp, self.dtype_name)

    @property
    def eps(self) -> float:
        return float(np.finfo(self.dtype_name).eps)

    @property
    def sqrt_eps(self) -> float:
        return math.sqrt(self.eps)

    def asarray(self, a: Any) -> Any:
        """Float64 NumPy data -> this backend's array in this dtype, on its device."""
        a = np.asarray(a, dtype=np.float64).astype(self.dtype_name)
        if self.name == "torch":
            import torch

            t = torch.from_numpy(a.copy())
            return t if self.device is None else t.to(self.device)
        if self.name == "jax" and self.device is not None:
            import jax

            return jax.device_put(a, self.device)
        return self.xp.asarray(a)

    def to_numpy(self, a: Any) -> np.ndarray:
        """Any array of this backend -> float64 NumPy (the library's own host copy)."""
        if self.name == "torch":
            return a.detach().cpu().numpy().astype(np.float64)
        if self.name == "numpy":  # reductions return NumPy scalars, which lack __dlpack__
            return np.asarray(a, dtype=np.float64)
        if self.name == "jax":
            import jax

            return np.asarray(jax.device_get(a), dtype=np.float64)
        if self.name == "cupy":
            import cupy

            return cupy.asnumpy(a).astype(np.float64)
        return np.from_dlpack(a).astype(np.float64)

    @contextlib.contextmanager
    def default_device(self) -> Iterator[None]:
        """Make this backend's device the library's default while a test runs (JAX's CPU
        backend stays on the CPU on a GPU machine)."""
        if self.name == "torch" and self.device is not None:
            import torch

            previous = torch.get_default_device()
            torch.set_default_device(self.device)
            try:
                yield
            finally:
                torch.set_default_device(previous)
        elif self.name == "jax":
            import jax

            device = self.device if self.device is not None else jax.devices("cpu")[0]
            with jax.default_device(device):
                yield
        elif self.name == "cupy":
            with self.device:
                yield
        else:
            yield

    def __repr__(self) -> str:
        suffix = "" if self.device is None else f"@{self.device}"
        return f"{self.name}{suffix}-{self.dtype_name}"


_ALL = [(b, b) for b in BACKEND_NAMES] + list(DEVICE_BACKENDS)


def _backend(backend_id: str, library: str, dtype: str) -> Backend:
    xp = _load(library)
    return Backend(library, dtype, xp, _device(backend_id))


@pytest.fixture(params=[b for b, _ in _ALL])
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(
    params=[(i, lib, d) for i, lib in _ALL for d in DTYPE_NAMES], ids=lambda p: f"{p[0]}-{p[2]}"
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Every backend x dtype (device backends where a device exists)."""
    b = _backend(*request.param)
    with b.default_device():
        yield b


@pytest.fixture(params=_ALL, ids=lambda p: p[0])
def backend64(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Every backend, float64 only (for statistical and convergence claims)."""
    b = _backend(*request.param, "float64")
    with b.default_device():
        yield b
