"""``A A^T`` at about half the flops of a matrix product: the Woodbury kernel ``J J^T``
and dense ENGD's ``J^T J`` by NumPy's ``syrk`` for torch CPU tensors, by blocks on the
backends whose product has no ``syrk`` (``_dispatch.symmetric_product``)."""

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
    monkeypatch.setattr(_dispatch, "_host_syrk", lambda xp, A: None)
    monkeypatch.setattr(_dispatch, "_blocks_symmetric_product", lambda xp, A: True)
    A = np.random.default_rng(seed).standard_normal((n, p))
    with backend.default_device():
        K = backend.to_numpy(
            _dispatch.symmetric_product(backend.xp, backend.asarray(A), block=block)
        )
    ref = A @ A.T
    assert np.max(np.abs(K - ref)) <= 10 * p * backend.eps * max(1.0, np.max(np.abs(ref)))


@pytest.mark.parametrize("case", ["jax", "torch-autograd"])
def test_jax_and_tracked_torch_take_the_blocks(monkeypatch, case):
    pytest.importorskip(case.split("-")[0])
    from array_api_compat import array_namespace

    seen = []
    real = _dispatch._blocks_symmetric_product
    monkeypatch.setattr(
        _dispatch, "_blocks_symmetric_product", lambda xp, A: seen.append(real(xp, A)) or False
    )
    A = np.random.default_rng(0).standard_normal((600, 7))
    if case == "torch-autograd":
        import torch

        x = torch.asarray(A).requires_grad_()
    else:
        import jax.numpy as jnp

        x = jnp.asarray(A, dtype=jnp.float32)
    _dispatch.symmetric_product(array_namespace(x), x)
    assert seen == [True]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("transposed", [False, True])
def test_torch_cpu_takes_numpys_syrk(monkeypatch, dtype, transposed):
    torch = pytest.importorskip("torch")
    from array_api_compat import array_namespace

    monkeypatch.setattr(
        _dispatch, "_blocks_symmetric_product", lambda xp, A: pytest.fail("took the blocks")
    )
    A = np.random.default_rng(1).standard_normal((30, 600) if transposed else (600, 30))
    x = torch.asarray(A, dtype=getattr(torch, dtype))
    x = x.T if transposed else x  # J^T J of dense ENGD: a transposed view
    K = _dispatch.symmetric_product(array_namespace(x), x)
    assert isinstance(K, torch.Tensor) and K.dtype == x.dtype and K.device == x.device
    assert torch.equal(K, K.T)  # one triangle, mirrored
    ref = (A.T if transposed else A) @ (A.T if transposed else A).T
    eps = float(torch.finfo(x.dtype).eps)
    assert np.max(np.abs(K.numpy() - ref)) <= 10 * 600 * eps * np.max(np.abs(ref))


def test_torch_inside_vmap_falls_back_to_a_product():
    torch = pytest.importorskip("torch")
    from array_api_compat import array_namespace

    A = torch.asarray(np.random.default_rng(2).standard_normal((3, 5, 4)))
    xp = array_namespace(A)
    K = torch.func.vmap(lambda a: _dispatch.symmetric_product(xp, a))(A)
    assert torch.allclose(K, A @ A.transpose(1, 2))


def test_numpy_and_small_matrices_take_one_product(monkeypatch):
    import array_api_compat.numpy as xnp

    assert not _dispatch._blocks_symmetric_product(xnp, np.ones((600, 3)))  # syrk itself
    calls = []
    monkeypatch.setattr(_dispatch, "_blocks_symmetric_product", lambda xp, A: calls.append(1))
    _dispatch.symmetric_product(xnp, np.ones((2 * _dispatch.GRAM_BLOCK - 1, 3)))
    assert calls == []  # below two blocks: never asks
