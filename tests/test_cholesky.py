"""The blocked Cholesky factor: what the core factors large matrices with on OpenBLAS.

OpenBLAS's threaded ``dpotrf`` crashes the process on large float64 matrices (here from
order ~15,800 with two threads), so NumPy and JAX-CPU factor orders above
``2 * CHOLESKY_BLOCK`` by blocks (``_dispatch.cholesky_factor``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sketchlinalg import _dispatch


def _spd(n: int, seed: int) -> np.ndarray:
    A = np.random.default_rng(seed).standard_normal((n, n + 3))
    return A @ A.T / n + np.eye(n)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 30), block=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_blocked_factor_is_the_cholesky_factor(backend, n, block, seed):
    M = _spd(n, seed)
    with backend.default_device():
        L = backend.to_numpy(_dispatch.blocked_cholesky(backend.xp, backend.asarray(M), block))
    assert np.array_equal(L, np.tril(L))  # lower triangular, zeros above exactly
    ref = np.linalg.cholesky(M)
    assert np.max(np.abs(L - ref)) <= 50 * n * backend.eps * np.max(np.abs(ref))


def test_blocked_factor_fails_like_the_library(backend64):
    """A matrix that is not positive definite: ``_dispatch.cholesky`` reports ``None``
    (NumPy raises inside a block, JAX gives NaN), whatever block the failure is in."""
    M = _spd(20, 0)
    M[13, 13] = -1.0
    xp = backend64.xp
    with backend64.default_device():
        Mx = backend64.asarray(M)
        try:
            L = _dispatch.blocked_cholesky(xp, Mx, 4)
        except (ValueError, RuntimeError, ArithmeticError):
            return
        assert not np.all(np.isfinite(backend64.to_numpy(L)))


def test_numpy_and_jax_cpu_factor_large_orders_by_blocks(monkeypatch):
    seen = []
    real = _dispatch.blocked_cholesky
    monkeypatch.setattr(_dispatch, "CHOLESKY_BLOCK", 4)
    monkeypatch.setattr(
        _dispatch, "blocked_cholesky", lambda xp, M, b: seen.append(b) or real(xp, M, b)
    )
    import array_api_compat.numpy as xnp

    M = _spd(9, 1)
    L = _dispatch.cholesky(xnp, M)
    assert seen == [4] and np.allclose(L, np.linalg.cholesky(M))
    assert _dispatch.cholesky(xnp, _spd(8, 1)) is not None and seen == [4]  # 8 = 2 * 4: direct
    jnp = pytest.importorskip("jax.numpy")
    _dispatch.cholesky(jnp, jnp.asarray(M))
    assert seen == [4, 4]
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xtorch

    _dispatch.cholesky(xtorch, torch.asarray(M))  # torch's own factor does not crash
    assert seen == [4, 4]


@pytest.mark.slow
def test_order_16000_factors_without_crashing_the_process():
    """Order 16,000 in float64 (an ENGD-Woodbury kernel at N = 16,000): OpenBLAS's own
    ``dpotrf`` killed the process here (segmentation fault, two threads)."""
    import array_api_compat.numpy as xnp

    n = 16_000
    M = np.eye(n) * 2.0
    M[1:, 0] = M[0, 1:] = 1e-3
    L = _dispatch.cholesky(xnp, M)
    assert L is not None
    rows = L[:50] @ L.T
    assert np.max(np.abs(rows - M[:50])) <= 100 * np.finfo(np.float64).eps
