"""PyTorch adapter: Jacobian operators, PINN systems, differential operators, line searches,
SciPy interop (optimizers: test_torch_optim.py)."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="torch not installed")
slt = pytest.importorskip("sketchlinalg_torch", reason="sketchlinalg_torch not importable")

from torch.func import jacrev  # noqa: E402
from torch_nets import mlp  # noqa: E402

import sketchlinalg as sl  # noqa: E402

F64 = torch.float64


def dense_jacobian(fn, params):
    """Reference: ``torch.func.jacrev`` of ``fn`` w.r.t. the trainable entries, flattened."""
    trainable = {k: v.detach() for k, v in params.items() if v.requires_grad}
    frozen = {k: v.detach() for k, v in params.items() if not v.requires_grad}
    jac = jacrev(lambda p: fn({**frozen, **p}))(trainable)
    n = next(iter(jac.values())).shape[0]
    return torch.cat([jac[k].reshape(n, -1) for k in trainable], dim=1)


def poisson_terms(n_int=7, n_bdry=4, dim=2, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    interior = torch.rand(n_int, dim, generator=g, dtype=dtype)
    boundary = torch.rand(n_bdry, dim, generator=g, dtype=dtype).round()
    return [
        slt.Term(lambda u, x: -slt.laplacian(u, x) - x.sum(), interior, 1.0, "interior"),
        slt.Term(lambda u, x: u(x) - 0.5, boundary, 4.0, "boundary"),
    ]


# -- public surface -------------------------------------------------------------------


def test_public_names_follow_the_shared_vocabulary_and_are_documented():
    shared = {
        "jacobian_operator",
        "Term",
        "pinn_system",
        "PINNSystem",
        "gradient",
        "laplacian",
        "time_derivative",
        "divergence",
        "SNGD",
        "ENGD",
        "ENGDWoodbury",
        "NystromPCG",
        "SPRING",
    }
    assert shared <= set(slt.__all__)
    assert len(set(slt.__all__)) == len(slt.__all__)
    for name in slt.__all__:
        obj = getattr(slt, name)
        if isinstance(obj, (tuple, str)):
            continue
        doc = inspect.getdoc(obj)
        assert doc and len(doc) > 40, name
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer):
            for meth in ("step", "state_dict", "load_state_dict"):
                assert inspect.getdoc(getattr(obj, meth)), f"{name}.{meth}"


# -- Jacobian operators -----------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_jacobian_operator_products_equal_jacrev(chunk_size):
    net = mlp([3, 5, 4, 2])
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    params = dict(net.named_parameters())
    params["0.bias"] = params["0.bias"].detach()  # a frozen entry: passed, not differentiated

    def residual(p):
        return torch.func.functional_call(net, p, (x,)).reshape(-1) - 1.0

    r, J = slt.jacobian_operator(residual, params, chunk_size=chunk_size)
    ref = dense_jacobian(residual, params)
    P = sum(v.numel() for v in params.values() if v.requires_grad)
    assert J.shape == (12, P) == tuple(ref.shape)
    assert J.path == "matrix-free" and J.matrix is None
    names = [k for k, v in params.items() if v.requires_grad]
    assert J.dtype == F64 and list(J.unflatten(torch.zeros(P, dtype=F64))) == names
    g = torch.Generator().manual_seed(2)
    X = torch.randn(P, 7, dtype=F64, generator=g)
    Y = torch.randn(12, 5, dtype=F64, generator=g)
    tol = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(J.matmat(X), ref @ X, **tol)
    torch.testing.assert_close(J.rmatmat(Y), ref.T @ Y, **tol)
    torch.testing.assert_close(J.matvec(X[:, 0]), ref @ X[:, 0], **tol)
    torch.testing.assert_close(J.to_dense(), ref, **tol)
    torch.testing.assert_close(r, residual({k: v.detach() for k, v in params.items()}))
    assert J.matmat(X[:, :0]).shape == (12, 0)
    # the operator is a core operator: gram / nystrom accept it
    G = sl.gram(J).to_dense()
    torch.testing.assert_close(G, ref.T @ ref, rtol=1e-12, atol=1e-12)


def test_jacobian_operator_lone_tensor_and_unflatten():
    A = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    x = torch.zeros(3, dtype=F64, requires_grad=True)
    _, J = slt.jacobian_operator(lambda t: torch.tanh(A @ t) - 0.3, x)
    torch.testing.assert_close(J.to_dense(), A)
    assert J.unflatten(torch.arange(3.0, dtype=F64))[None].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        J.unflatten(torch.zeros(4, dtype=F64))


@pytest.mark.parametrize(
    ("residual", "error", "match"),
    [
        (lambda p: p["x"].reshape(1, 2) * 2, ValueError, "1-D residual"),
        (lambda p: p["x"].float(), TypeError, "dtype"),
    ],
    ids=["2-D", "dtype"],
)
def test_jacobian_operator_rejects_bad_residuals(residual, error, match):
    x = torch.ones(2, dtype=F64, requires_grad=True)
    with pytest.raises(error, match=match):
        slt.jacobian_operator(residual, {"x": x})


def test_jacobian_operator_rejects_bad_params():
    with pytest.raises(ValueError, match="no trainable tensor"):
        slt.jacobian_operator(lambda p: p["x"], {"x": torch.ones(2, dtype=F64)})
    with pytest.raises(TypeError, match=r"dict name -> torch\.Tensor"):
        slt.jacobian_operator(lambda p: p, [torch.ones(2, requires_grad=True)])
    with pytest.raises(ValueError, match="share one dtype"):
        slt.jacobian_operator(
            lambda p: p["a"],
            {
                "a": torch.ones(2, dtype=F64, requires_grad=True),
                "b": torch.ones(2, requires_grad=True),
            },
        )
    with pytest.raises(ValueError, match="chunk_size"):
        slt.jacobian_operator(
            lambda p: p["a"], {"a": torch.ones(2, requires_grad=True)}, chunk_size=0
        )


# -- PINN systems -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "chunk_size"),
    [("materialized", None), ("materialized", 3), ("matrix-free", None), ("matrix-free", 4)],
)
def test_pinn_system_matches_jacrev(path, chunk_size):
    net = mlp([2, 6, 5, 1])
    terms = poisson_terms()
    params = dict(net.named_parameters())
    r, J, used = slt.pinn_system(net, params, terms, path=path, chunk_size=chunk_size)
    assert used == path == J.path
    assert (J.matrix is not None) == (path == "materialized")
    ref = dense_jacobian(lambda p: slt.pinn_residual(net, p, terms), params)
    assert J.shape == tuple(ref.shape) == (11, 59)
    r_ref = slt.pinn_residual(net, {k: v.detach() for k, v in params.items()}, terms)
    torch.testing.assert_close(r, r_ref, rtol=1e-13, atol=1e-13)
    g = torch.Generator().manual_seed(3)
    X = torch.randn(59, 6, dtype=F64, generator=g)
    Y = torch.randn(11, 4, dtype=F64, generator=g)
    torch.testing.assert_close(J.matmat(X), ref @ X, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(J.rmatmat(Y), ref.T @ Y, rtol=1e-11, atol=1e-11)


def test_pinn_system_writes_into_a_given_buffer():
    """``out=``: J lands in the caller's buffer (same storage every call), bad buffers raise."""
    net = mlp([2, 6, 5, 1])
    terms = poisson_terms()
    ref = slt.pinn_system(net, None, terms, path="materialized").jacobian.matrix
    buf = torch.full((11, 59), float("nan"), dtype=F64)
    for _ in range(2):
        _, J, used = slt.pinn_system(net, None, terms, path="auto", chunk_size=4, out=buf)
        assert used == "materialized" and J.matrix.data_ptr() == buf.data_ptr()
        torch.testing.assert_close(buf, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"out must be a contiguous array of shape \(11, 59\)"):
        slt.pinn_system(net, None, terms, out=torch.empty(11, 58, dtype=F64))
    with pytest.raises(ValueError, match="contiguous=False"):
        slt.pinn_system(net, None, terms, out=torch.empty(59, 11, dtype=F64).T)
    with pytest.raises(ValueError, match="float32"):
        slt.pinn_system(net, None, terms, out=torch.empty(11, 59, dtype=torch.float32))
    with pytest.raises(ValueError, match="materialized path"):
        slt.pinn_system(net, None, terms, path="matrix-free", out=buf)


def test_pinn_system_reuses_a_large_enough_workspace():
    """``workspace=``: J is a view of its first N P elements when it has that many (any N),
    a new matrix otherwise; the values are those of a fresh build; bad workspaces raise."""
    net = mlp([2, 6, 5, 1])
    terms = poisson_terms()
    ref = slt.pinn_system(net, None, terms, path="materialized").jacobian.matrix
    big = torch.full((11 * 59 + 7,), float("nan"), dtype=F64)
    _, J, _ = slt.pinn_system(net, None, terms, path="materialized", workspace=big)
    assert J.matrix.data_ptr() == big.data_ptr() and J.matrix.shape == (11, 59)
    torch.testing.assert_close(J.matrix, ref, rtol=0, atol=0)
    assert torch.isnan(big[11 * 59 :]).all()  # the tail is left alone
    for unusable in (torch.empty(11 * 59 - 1, dtype=F64), big.to(torch.float32)):
        _, J, _ = slt.pinn_system(net, None, terms, path="materialized", workspace=unusable)
        assert J.matrix.data_ptr() != unusable.data_ptr()
        torch.testing.assert_close(J.matrix, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="workspace must be a contiguous 1-D array; got shape"):
        slt.pinn_system(net, None, terms, workspace=torch.empty(11, 59, dtype=F64))
    with pytest.raises(ValueError, match="workspace must be a contiguous 1-D array"):
        slt.pinn_system(net, None, terms, workspace=big[::2])


def test_pinn_rows_are_weighted_by_measure_over_count():
    net = mlp([2, 4, 1])
    terms = poisson_terms(n_int=9, n_bdry=4)
    with torch.no_grad():
        r = slt.pinn_residual(net, None, terms)
        u = net(terms[1].points).reshape(-1)
    torch.testing.assert_close(r[9:], math.sqrt(4.0 / 4) * (u - 0.5))
    # 1/2 ||r||^2 is the quadrature of the continuous loss: mean over points times measure
    pde = r[:9] / math.sqrt(1.0 / 9)
    torch.testing.assert_close(0.5 * (r[:9] ** 2).sum(), 0.5 * (pde**2).mean())


def test_pinn_system_auto_path_follows_the_memory_budget():
    net = mlp([2, 4, 1])
    terms = poisson_terms()
    N, P = 11, 17
    assert slt.pinn_system(net, None, terms).path == "materialized"
    # the core's rule: materialized when a step with the explicit J fits the budget
    need = sl.estimate_memory("nystrom", N, P, rank=P, jacobian="materialized").bytes
    assert slt.pinn_system(net, None, terms, memory_budget=need).path == "materialized"
    assert slt.pinn_system(net, None, terms, memory_budget=need - 1).path == "matrix-free"
    assert sl.jacobian_path(N, P, memory_budget=need - 1) == "matrix-free"


def test_pinn_system_respects_buffers_and_frozen_parameters():
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = mlp([2, 4, 1])
            self.register_buffer("scale", torch.tensor(3.0, dtype=F64))

        def forward(self, x):
            return self.scale * self.body(x)

    net = Scaled()
    net.body[0].weight.requires_grad_(False)
    terms = poisson_terms()
    r, J, _ = slt.pinn_system(net, None, terms)  # params: the trainable ones
    assert list(J.unflatten(torch.zeros(9, dtype=F64))) == [
        "body.0.bias",
        "body.2.weight",
        "body.2.bias",
    ]
    assert J.shape == (11, 4 + 4 + 1)
    params = dict(net.named_parameters())  # frozen entry included: not differentiated
    r2, J2, _ = slt.pinn_system(net, params, terms, path="matrix-free")
    ref = dense_jacobian(lambda p: slt.pinn_residual(net, p, terms), params)
    torch.testing.assert_close(J.to_dense(), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(J2.to_dense(), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r, r2)
    with torch.no_grad():
        u = net(terms[1].points).reshape(-1)
    torch.testing.assert_close(r[7:], 1.0 * (u - 0.5))  # the buffer's scale 3 is applied


def test_pinn_system_rejects_bad_input():
    net = mlp([2, 4, 1])
    terms = poisson_terms()
    with pytest.raises(TypeError, match=r"nn\.Module"):
        slt.pinn_system(lambda x: x, None, terms)
    with pytest.raises(TypeError, match="wrap a single Term"):
        slt.pinn_system(net, None, terms[0])
    with pytest.raises(ValueError, match="path"):
        slt.pinn_system(net, None, terms, path="jacrev")
    bad = [slt.Term(terms[0].residual, terms[0].points.float())]
    with pytest.raises(TypeError, match=r"terms\[0\]\.points"):
        slt.pinn_system(net, None, bad)
    vec = [slt.Term(lambda u, x: torch.stack([u(x), u(x)]), terms[0].points)]
    with pytest.raises((ValueError, RuntimeError), match="scalar"):
        slt.pinn_system(net, None, vec)
    with pytest.raises(ValueError, match=r"name no parameter or buffer.*\[0, 1, 2, 3\]"):
        slt.pinn_system(net, dict(enumerate(net.parameters())), terms)
    with pytest.raises(TypeError, match="params must be a dict"):
        slt.pinn_residual(net, list(net.parameters()), terms)
    frozen = mlp([2, 4, 1]).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable tensor"):
        slt.pinn_system(frozen, None, terms)


# -- differential operators -----------------------------------------------------------


def _quadratic(A, b):
    return lambda x: x @ A @ x + b @ x + torch.sin(x[0])


@given(seed=st.integers(0, 2**31 - 1), dim=st.sampled_from([1, 2, 3]))
def test_differential_operators_match_closed_forms(seed, dim):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(dim, dim, dtype=F64, generator=g)
    b = torch.randn(dim, dtype=F64, generator=g)
    pts = torch.randn(4, dim, dtype=F64, generator=g)
    u = _quadratic(A, b)
    tol = dict(rtol=1e-12, atol=1e-12)
    lap_ref = 2 * torch.trace(A) - torch.sin(pts[:, 0])
    for method in slt.LAPLACIAN_METHODS:
        lap = torch.func.vmap(lambda x, m=method: slt.laplacian(u, x, method=m))(pts)
        torch.testing.assert_close(lap, lap_ref, **tol)
    grads = torch.func.vmap(lambda x: slt.gradient(u, x))(pts)
    grad_ref = pts @ (A + A.T) + b
    grad_ref[:, 0] += torch.cos(pts[:, 0])
    torch.testing.assert_close(grads, grad_ref, **tol)
    dt = torch.func.vmap(lambda x: slt.time_derivative(u, x, dim - 1))(pts)
    torch.testing.assert_close(dt, grad_ref[:, dim - 1], **tol)
    div = torch.func.vmap(lambda x: slt.divergence(lambda y: y @ A.T + b, x))(pts)
    torch.testing.assert_close(div, torch.trace(A).expand(4), **tol)


def test_laplacian_methods_agree_under_a_parameter_derivative():
    """The residual's per-point parameter gradient is the same for every formulation."""
    net = mlp([2, 5, 1])
    params = {k: v.detach() for k, v in net.named_parameters()}
    x = torch.tensor([0.3, 0.7], dtype=F64)

    def row(p, method):
        u = lambda y: torch.func.functional_call(net, p, (y,)).reshape(())  # noqa: E731
        return slt.laplacian(u, x, method=method)

    ref = torch.func.grad(row)(params, "rev_over_rev")
    for method in [m for m in slt.LAPLACIAN_METHODS if m != "rev_over_rev"]:
        got = torch.func.grad(row)(params, method)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-12, atol=1e-12)


def test_differential_operators_reject_bad_points():
    with pytest.raises(ValueError, match=r"shape \(d,\)"):
        slt.laplacian(lambda x: x.sum(), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="method"):
        slt.laplacian(lambda x: x.sum(), torch.zeros(2), method="taylor")
    with pytest.raises(ValueError, match="index"):
        slt.time_derivative(lambda x: x.sum(), torch.zeros(2), 2)


# -- SciPy interop --------------------------------------------------------------------


def test_to_scipy_round_trip_and_eigsh():
    spla = pytest.importorskip("scipy.sparse.linalg")
    net = mlp([2, 5, 1])
    terms = poisson_terms(n_int=20, n_bdry=8)
    for path in ("materialized", "matrix-free"):
        _, J, _ = slt.pinn_system(net, None, terms, path=path)
        Jd = J.to_dense().numpy()
        op = slt.to_scipy(J)
        assert op.shape == J.shape and op.dtype == np.float64
        v = np.linspace(-1, 1, J.shape[1])
        w = np.linspace(0, 2, J.shape[0])
        np.testing.assert_allclose(op @ v, Jd @ v, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(op.rmatvec(w), Jd.T @ w, rtol=1e-12, atol=1e-12)
        V = np.stack([v, 2 * v], axis=1)
        np.testing.assert_allclose(op.matmat(V), Jd @ V, rtol=1e-12, atol=1e-12)
    gram = slt.to_scipy(sl.gram(J))
    np.testing.assert_allclose(gram @ v, Jd.T @ (Jd @ v), rtol=1e-11, atol=1e-11)
    top = spla.eigsh(gram, k=3, which="LA", return_eigenvectors=False, tol=1e-12)
    ref = np.linalg.eigvalsh(Jd.T @ Jd)[-3:]
    np.testing.assert_allclose(np.sort(top), ref, rtol=1e-9)
    with pytest.raises(TypeError, match="LinearOperator"):
        slt.to_scipy(J.to_dense())
    with pytest.raises(TypeError, match="torch products"):
        slt.to_scipy(sl.aslinearoperator(np.eye(2)))


def _points(block):
    """Points in a block of residual values or of gradient column blocks."""
    return int(block[0].shape[0]) if isinstance(block, list) else len(block)


def _tiny_host_blocks(monkeypatch):
    """Host blocks of 2 points; returns the list that records the points of every block of
    rows written (residual values and J rows)."""
    import sketchlinalg._pinn as core_pinn

    monkeypatch.setattr(core_pinn, "_HOST_CHUNK_BYTES", 1)
    monkeypatch.setattr(core_pinn, "_HOST_CHUNK_MIN_POINTS", 2)
    seen = []
    rows = core_pinn._dispatch.set_rows
    monkeypatch.setattr(
        core_pinn._dispatch,
        "set_rows",
        lambda xp, x, s, b, c=1.0: seen.append(_points(b)) or rows(xp, x, s, b, c),
    )
    return seen


def test_pinn_system_builds_in_host_blocks_by_default(monkeypatch):
    """The host default splits the materialized build into blocks of points (sized by bytes
    of rows; shrunk here so that this small system needs several): the same J. (The
    generic per-point gradients: an MLP's rows from layer factors take one block.)"""
    from sketchlinalg_torch import _pinn

    monkeypatch.setattr(_pinn.MLP, "of", classmethod(lambda cls, module: None))
    net = mlp([2, 6, 5, 1])
    terms = poisson_terms()
    params = dict(net.named_parameters())
    whole = slt.pinn_system(net, params, terms, path="materialized", chunk_size=10_000)
    seen = _tiny_host_blocks(monkeypatch)
    blocks = slt.pinn_system(net, params, terms, path="materialized")
    assert set(seen) == {2}  # every block holds 2 points (residual and J rows)
    torch.testing.assert_close(blocks.jacobian.matrix, whole.jacobian.matrix, rtol=1e-14, atol=0)
    torch.testing.assert_close(blocks.residual, whole.residual, rtol=1e-14, atol=0)


def test_mlp_factor_rows_take_one_block_of_points(monkeypatch):
    """Rows from layer factors hold no per-point weight gradients (their temporaries are
    points x channels x width): each term is one block, however small the host blocks."""
    net = mlp([2, 6, 5, 1])
    terms = poisson_terms()
    seen = _tiny_host_blocks(monkeypatch)
    slt.pinn_system(net, None, terms, path="materialized")
    assert seen == [int(t.points.shape[0]) for t in terms]  # residual rows only, one block each
