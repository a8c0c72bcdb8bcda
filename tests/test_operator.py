"""Operator algebra: products agree with dense arrays; misuse raises with both shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sketchlinalg as sl


def _tol(backend):
    return 50 * backend.eps


@given(
    m=st.sampled_from([3, 7, 12]),
    n=st.sampled_from([2, 5, 9]),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_array_operator_products_match_dense(backend, m, n, k, seed):
    rng = np.random.default_rng(seed)
    A, X, Y = rng.standard_normal((m, n)), rng.standard_normal((n, k)), rng.standard_normal((m, k))
    op = sl.aslinearoperator(backend.asarray(A))
    assert op.shape == (m, n) and op.dtype == backend.dtype
    tol = _tol(backend) * (1 + np.abs(A).sum())
    np.testing.assert_allclose(backend.to_numpy(op.matmat(backend.asarray(X))), A @ X, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(op.rmatmat(backend.asarray(Y))), A.T @ Y, atol=tol)
    np.testing.assert_allclose(
        backend.to_numpy(op.matvec(backend.asarray(X[:, 0]))), A @ X[:, 0], atol=tol
    )
    np.testing.assert_allclose(
        backend.to_numpy(op.rmatvec(backend.asarray(Y[:, 0]))), A.T @ Y[:, 0], atol=tol
    )
    np.testing.assert_allclose(backend.to_numpy(op.T.matmat(backend.asarray(Y))), A.T @ Y, atol=tol)
    assert op.T.T is op
    np.testing.assert_allclose(backend.to_numpy(op @ backend.asarray(X)), A @ X, atol=tol)


@given(seed=st.integers(0, 2**31 - 1), weighted=st.booleans())
def test_gram_and_kernel_views_match_dense(backend, seed, weighted):
    rng = np.random.default_rng(seed)
    N, P = 9, 6
    J = rng.standard_normal((N, P))
    wN = rng.uniform(0, 2, N) if weighted else np.ones(N)
    wP = rng.uniform(0, 2, P) if weighted else np.ones(P)
    Jb = backend.asarray(J)
    G = sl.gram(Jb, backend.asarray(wN) if weighted else None)
    K = sl.kernel(Jb, backend.asarray(wP) if weighted else None)
    assert G.is_psd and K.is_psd and G.shape == (P, P) and K.shape == (N, N)
    Gref, Kref = J.T @ (wN[:, None] * J), (J * wP) @ J.T
    tol = _tol(backend) * np.abs(J).sum() ** 2
    np.testing.assert_allclose(backend.to_numpy(G.to_dense()), Gref, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(K.to_dense()), Kref, atol=tol)
    X = rng.standard_normal((P, 3))
    np.testing.assert_allclose(
        backend.to_numpy(G.matmat(backend.asarray(X))), Gref @ X, atol=tol * 10
    )
    Y = rng.standard_normal((N, 2))
    np.testing.assert_allclose(
        backend.to_numpy(K.rmatmat(backend.asarray(Y))), Kref @ Y, atol=tol * 10
    )


def test_function_operator_and_to_dense(backend):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 7))
    Ab = backend.asarray(A)
    op = sl.FunctionOperator(
        lambda X: Ab @ X, lambda Y: Ab.T @ Y, shape=(4, 7), dtype=backend.dtype, xp=backend.xp
    )
    tol = _tol(backend) * 10
    np.testing.assert_allclose(backend.to_numpy(op.to_dense()), A, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(op.T.to_dense()), A.T, atol=tol)
    # A symmetric operator needs no rmatmat; a general one says it has none.
    S = sl.FunctionOperator(
        lambda X: X * 2, shape=(3, 3), dtype=backend.dtype, xp=backend.xp, symmetric=True
    )
    np.testing.assert_allclose(
        backend.to_numpy(S.rmatvec(backend.asarray(np.ones(3)))), 2 * np.ones(3)
    )
    F = sl.FunctionOperator(lambda X: Ab @ X, shape=(4, 7), dtype=backend.dtype, xp=backend.xp)
    with pytest.raises(NotImplementedError, match="rmatmat"):
        F.rmatvec(backend.asarray(np.ones(4)))


def test_shape_errors_name_both_shapes(backend):
    op = sl.aslinearoperator(backend.asarray(np.ones((4, 3))))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 2\)"):
        op.matmat(backend.asarray(np.ones((5, 2))))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(3, 2\)"):
        op.rmatmat(backend.asarray(np.ones((3, 2))))
    with pytest.raises(ValueError, match="2-D"):
        op.matmat(backend.asarray(np.ones(3)))
    with pytest.raises(ValueError, match="1-D"):
        op.matvec(backend.asarray(np.ones((3, 1))))
    with pytest.raises(ValueError, match="must be 2-D"):
        sl.aslinearoperator(backend.asarray(np.ones(3)))
    other = "float64" if backend.dtype_name == "float32" else "float32"
    Xo = backend.xp.asarray(backend.asarray(np.ones((3, 2))), dtype=getattr(backend.xp, other))
    with pytest.raises(TypeError, match="dtype mismatch"):
        op.matmat(Xo)
    bad = sl.FunctionOperator(lambda X: X, shape=(4, 3), dtype=backend.dtype, xp=backend.xp)
    with pytest.raises(ValueError, match=r"returned shape \(3, 1\), expected \(4, 1\)"):
        bad.matvec(backend.asarray(np.ones(3)))


def test_constructor_validation():
    xp = pytest.importorskip("array_api_compat.numpy")
    with pytest.raises(ValueError, match="pair of ints"):
        sl.FunctionOperator(lambda X: X, shape=(3,), dtype=xp.float64, xp=xp)
    with pytest.raises(ValueError, match="square"):
        sl.FunctionOperator(lambda X: X, shape=(3, 2), dtype=xp.float64, xp=xp, psd=True)
    with pytest.raises(TypeError, match="real floating"):
        sl.FunctionOperator(lambda X: X, shape=(3, 3), dtype=xp.int64, xp=xp)
    with pytest.raises(TypeError, match="must be a 2-D array or a LinearOperator"):
        sl.aslinearoperator([[1.0, 2.0]])
    J = np.ones((4, 3))
    with pytest.raises(ValueError, match="length 4"):
        sl.gram(J, np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        sl.gram(J, -np.ones(4))


def test_device_mismatch_is_reported():
    xps = pytest.importorskip("array_api_strict")
    A = xps.asarray(np.eye(3))
    op = sl.aslinearoperator(A)
    X = xps.asarray(np.ones((3, 1)), device=xps.Device("device1"))
    with pytest.raises(ValueError, match="device mismatch"):
        op.matmat(X)


def test_psd_tag_roundtrip():
    op = sl.aslinearoperator(np.eye(3))
    assert not op.is_psd
    tagged = sl.aslinearoperator(op, psd=True)
    assert tagged.is_psd and tagged.is_symmetric
    assert sl.aslinearoperator(tagged) is tagged
