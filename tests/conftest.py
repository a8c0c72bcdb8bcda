"""Backend x dtype fixtures, hypothesis profiles and reference helpers.

Every numerical test runs on numpy, array-api-strict, torch (CPU) and jax (CPU), in float32
and float64. References are computed in float64 NumPy; tolerances come from the dtype.
A backend that is not installed is skipped with the reason.
"""

from __future__ import annotations

import importlib
import math
import os
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
    raise ValueError(name)


@dataclass(frozen=True)
class Backend:
    """One backend and dtype, with conversion helpers and dtype-derived tolerances."""

    name: str
    dtype_name: str
    xp: Any

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
        """Float64 NumPy data -> this backend's array in this dtype."""
        a = np.asarray(a, dtype=np.float64).astype(self.dtype_name)
        if self.name == "torch":
            import torch

            return torch.from_numpy(a.copy())
        return self.xp.asarray(a)

    def to_numpy(self, a: Any) -> np.ndarray:
        """Any array of this backend -> float64 NumPy."""
        if self.name == "torch":
            return a.detach().cpu().numpy().astype(np.float64)
        if self.name == "numpy":  # reductions return NumPy scalars, which lack __dlpack__
            return np.asarray(a, dtype=np.float64)
        return np.from_dlpack(a).astype(np.float64)

    def __repr__(self) -> str:
        return f"{self.name}-{self.dtype_name}"


@pytest.fixture(params=BACKEND_NAMES)
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(
    params=[(b, d) for b in BACKEND_NAMES for d in DTYPE_NAMES], ids=lambda p: f"{p[0]}-{p[1]}"
)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every backend x dtype."""
    name, dtype = request.param
    return Backend(name, dtype, _load(name))


@pytest.fixture(params=BACKEND_NAMES)
def backend64(request: pytest.FixtureRequest) -> Backend:
    """Every backend, float64 only (for statistical and convergence claims)."""
    return Backend(request.param, "float64", _load(request.param))
