"""Samplers and test matrices: reproducible, correctly distributed, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sketchlinalg as sl


@pytest.mark.parametrize("kind", sl.SKETCH_KINDS)
def test_same_seed_same_sketch_and_dtype(backend, kind):
    kw = dict(xp=backend.xp, dtype=backend.dtype, kind=kind)
    a = sl.sketch_matrix(40, 6, seed=7, **kw)
    b = sl.sketch_matrix(40, 6, seed=7, **kw)
    c = sl.sketch_matrix(40, 6, seed=8, **kw)
    assert a.shape == (40, 6) and a.dtype == backend.dtype
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    assert not np.array_equal(backend.to_numpy(a), backend.to_numpy(c))
    # fold_in gives a different, reproducible stream
    s = sl.as_sampler(7)
    d1 = sl.sketch_matrix(40, 6, seed=s.fold_in(1), **kw)
    d2 = sl.sketch_matrix(40, 6, seed=s.fold_in(1), **kw)
    np.testing.assert_array_equal(backend.to_numpy(d1), backend.to_numpy(d2))
    assert not np.array_equal(backend.to_numpy(a), backend.to_numpy(d1))


def test_rademacher_and_sparse_sign_structure(backend):
    R = backend.to_numpy(
        sl.sketch_matrix(200, 10, xp=backend.xp, dtype=backend.dtype, kind="rademacher", seed=1)
    )
    assert set(np.unique(R)) == {-1.0, 1.0}
    assert abs(R.mean()) < 4 / np.sqrt(R.size)  # 4 standard deviations
    S = backend.to_numpy(
        sl.sketch_matrix(
            300, 12, xp=backend.xp, dtype=backend.dtype, kind="sparse_sign", seed=2, nnz_per_row=3
        )
    )
    np.testing.assert_array_equal((S != 0).sum(axis=1), 3)
    np.testing.assert_allclose(np.abs(S[S != 0]), 1 / np.sqrt(3), rtol=backend.eps * 4)
    # columns are used uniformly: each column's count is Binomial(300, 3/12)
    counts = (S != 0).sum(axis=0)
    assert np.all(np.abs(counts - 75) < 5 * np.sqrt(300 * 0.25 * 0.75))


@pytest.mark.parametrize("sampler", ["default", "portable"])
def test_gaussian_moments(backend64, sampler):
    seed = sl.PortableSampler(3) if sampler == "portable" else 3
    Z = backend64.to_numpy(
        sl.sketch_matrix(4000, 25, xp=backend64.xp, dtype=backend64.dtype, seed=seed)
    )
    n = Z.size
    # mean ~ N(0, 1/n), variance ~ N(1, 2/n), kurtosis 3: bounds at 5 standard deviations
    assert abs(Z.mean()) < 5 / np.sqrt(n)
    assert abs(Z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs((Z**4).mean() - 3) < 5 * np.sqrt(96 / n)
    # no correlation between neighbouring entries (counter-based hashes must decorrelate)
    flat = Z.ravel()
    assert abs(np.mean(flat[1:] * flat[:-1])) < 5 / np.sqrt(n)


def test_portable_sampler_is_the_same_on_every_backend(backend64):
    ref = sl.PortableSampler(11).normal((50, 4), xp=np, dtype=np.float64)
    got = sl.PortableSampler(11).normal((50, 4), xp=backend64.xp, dtype=backend64.dtype)
    np.testing.assert_allclose(backend64.to_numpy(got), ref, rtol=1e-12, atol=1e-12)


def test_default_sampler_uses_portable_fallback_on_strict():
    xps = pytest.importorskip("array_api_strict")
    a = sl.DefaultSampler(5).uniform((30,), xp=xps, dtype=xps.float64)
    b = sl.PortableSampler(5).uniform((30,), xp=xps, dtype=xps.float64)
    np.testing.assert_array_equal(np.from_dlpack(a), np.from_dlpack(b))
    u = np.from_dlpack(a)
    assert np.all((u >= 0) & (u < 1))


def test_jax_key_as_seed():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    key = jax.random.key(0)
    a = sl.sketch_matrix(10, 3, xp=jnp, dtype=jnp.float32, seed=key)
    b = sl.sketch_matrix(10, 3, xp=jnp, dtype=jnp.float32, seed=key)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = sl.sketch_matrix(10, 3, xp=jnp, dtype=jnp.float32, seed=jax.random.key(1))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


@given(bad=st.sampled_from([-1, 1.5, "a", True, None]))
def test_bad_seeds_are_rejected(bad):
    with pytest.raises((TypeError, ValueError), match="seed"):
        sl.sketch_matrix(4, 2, xp=np, dtype=np.float64, seed=bad)


def test_bad_sketch_arguments():
    with pytest.raises(ValueError, match="kind must be one of"):
        sl.sketch_matrix(4, 2, xp=np, dtype=np.float64, kind="srtt")
    with pytest.raises(ValueError, match="l must be >= 1"):
        sl.sketch_matrix(4, 0, xp=np, dtype=np.float64)
    with pytest.raises(ValueError, match="nnz_per_row"):
        sl.sketch_matrix(4, 2, xp=np, dtype=np.float64, kind="sparse_sign", nnz_per_row=3)
