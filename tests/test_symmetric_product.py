"""``A A^T`` by blocks: the Woodbury kernel ``J J^T`` and dense ENGD's ``J^T J`` at about
half the flops of a matrix product on the backends whose product has no ``syrk``
(``_dispatch.symmetric_product``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sketchlinalg import _dispatch


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 40), p=st.integers(1, 12), block=st.integers(1, 9),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_symmetric_product_is_the_product(backend, monkeypatch, n, p, block, seed):
    # force the blocked path on every backend (it is taken only on torch / JAX CPU)
    monkeypatch.setattr(_dispatch, "_blocks_symmetric_product", lambda xp, A: True)
    A = np.random.default_rng(seed).standard_normal((n, p))
    with backend.default_device():
        K = backend.to_numpy(
            _dispatch.symmetric_product(backend.xp, backend.asarray(A), block=block)
        )
    ref = A @ A.T
    assert np.max(np.abs(K - ref)) <= 10 * p * backend.eps * max(1.0, np.max(np.abs(ref)))


@pytest.mark.parametrize("library", ["torch", "jax"])
def test_torch_and_jax_cpu_take_the_blocks(monkeypatch, library):
    pytest.importorskip(library)
    from array_api_compat import array_namespace

    seen = []
    real = _dispatch._blocks_symmetric_product
    monkeypatch.setattr(
        _dispatch, "_blocks_symmetric_product", lambda xp, A: seen.append(real(xp, A)) or False
    )
    A = np.random.default_rng(0).standard_normal((600, 7))
    if library == "torch":
        import torch

        x = torch.asarray(A)
    else:
        import jax.numpy as jnp

        x = jnp.asarray(A, dtype=jnp.float32)
    _dispatch.symmetric_product(array_namespace(x), x)
    assert seen == [True]


def test_numpy_and_small_matrices_take_one_product(monkeypatch):
    import array_api_compat.numpy as xnp

    assert not _dispatch._blocks_symmetric_product(xnp, np.ones((600, 3)))  # syrk itself
    calls = []
    monkeypatch.setattr(_dispatch, "_blocks_symmetric_product", lambda xp, A: calls.append(1))
    _dispatch.symmetric_product(xnp, np.ones((2 * _dispatch.GRAM_BLOCK - 1, 3)))
    assert calls == []  # below two blocks: never asks
