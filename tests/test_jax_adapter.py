"""JAX adapter: Jacobian operators, PINN systems, differential operators, optax optimizers."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import sketchlinalg_jax as slj  # noqa: E402
from example_loader import load_example  # noqa: E402

import sketchlinalg as sl  # noqa: E402


# -- a residual of a pytree with several leaves ------------------------------------------
def _params(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return {
        "w": jax.random.normal(k1, (3, 4)),
        "b": jax.random.normal(k2, (4,)),
        "s": jax.random.normal(k3, ()),
    }


def _residual(p):
    x = jnp.linspace(-1, 1, 9)[:, None] * jnp.ones((1, 3))
    return jnp.tanh(x @ p["w"] + p["b"]).sum(axis=1) * p["s"] - jnp.cos(x[:, 0])


def _dense_jacobian(fn, params):
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    return jax.jacfwd(lambda t: fn(unravel(t)))(flat)


@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_jacobian_operator_matches_jacfwd(chunk_size):
    params = _params()
    r, J = slj.jacobian_operator(_residual, params, chunk_size=chunk_size)
    Jd = np.asarray(_dense_jacobian(_residual, params))
    assert J.shape == Jd.shape == (9, 17) and J.path == "matrix-free"
    np.testing.assert_allclose(np.asarray(r), np.asarray(_residual(params)), rtol=1e-14)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((17, 7)), rng.standard_normal((9, 5))
    np.testing.assert_allclose(np.asarray(J.matmat(jnp.asarray(X))), Jd @ X, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        np.asarray(J.rmatmat(jnp.asarray(Y))), Jd.T @ Y, rtol=1e-12, atol=1e-12
    )
    # unflatten maps flat vectors back to the pytree
    back = J.unflatten(jnp.arange(17.0))
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)


def _tiny_pinn(n=12):
    """-u'' = pi^2 sin(pi x) on (0, 1), u(0) = u(1) = 0, with a [1, 6, 1] tanh net."""
    x = jnp.linspace(0.05, 0.95, n)[:, None]

    def model(p, x):
        return (p["W2"] @ jnp.tanh(p["W1"] @ x + p["b1"]))[0] + p["b2"]

    terms = [
        slj.Term(
            lambda u, x: -slj.laplacian(u, x) - math.pi**2 * jnp.sin(math.pi * x[0]), x, 1.0, "pde"
        ),
        slj.Term(lambda u, x: u(x), jnp.array([[0.0], [1.0]]), 2.0, "bc"),
    ]
    k = jax.random.split(jax.random.key(1), 2)
    params = {
        "W1": jax.random.normal(k[0], (6, 1)),
        "b1": jnp.zeros(6),
        "W2": jax.random.normal(k[1], (1, 6)) / 3,
        "b2": jnp.zeros(()),
    }
    return model, terms, params


@pytest.mark.parametrize("path", ["materialized", "matrix-free"])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_pinn_system_paths_match_jacfwd(path, chunk_size):
    model, terms, params = _tiny_pinn()
    sys_ = slj.pinn_system(model, params, terms, path=path, chunk_size=chunk_size)
    assert sys_.path == path and sys_.jacobian.path == path
    res = functools.partial(slj.pinn_residual, model, terms=terms)
    np.testing.assert_allclose(
        np.asarray(sys_.residual), np.asarray(res(params)), rtol=1e-13, atol=1e-13
    )
    Jd = np.asarray(_dense_jacobian(res, params))
    np.testing.assert_allclose(np.asarray(sys_.jacobian.to_dense()), Jd, rtol=1e-11, atol=1e-11)
    # weights: interior rows scaled by sqrt(1/12), boundary by sqrt(2/2)
    u = functools.partial(model, params)
    np.testing.assert_allclose(float(sys_.residual[-1]), float(u(jnp.array([1.0]))), rtol=1e-13)


def test_auto_path_follows_memory_budget():
    model, terms, params = _tiny_pinn()
    assert slj.pinn_system(model, params, terms).path == "materialized"
    assert slj.pinn_system(model, params, terms, memory_budget=100).path == "matrix-free"


@pytest.mark.parametrize("method", slj.LAPLACIAN_METHODS)
def test_differential_operators(method):
    def u(x):
        return jnp.sin(x[0]) * jnp.exp(2 * x[1]) + x[2] ** 3

    x = jnp.array([0.3, -0.2, 0.7])
    exact_lap = (
        -jnp.sin(x[0]) * jnp.exp(2 * x[1]) + 4 * jnp.sin(x[0]) * jnp.exp(2 * x[1]) + 6 * x[2]
    )
    np.testing.assert_allclose(
        float(slj.laplacian(u, x, method=method)), float(exact_lap), rtol=1e-13
    )
    g = slj.gradient(u, x)
    np.testing.assert_allclose(float(g[2]), 3 * 0.7**2, rtol=1e-13)
    np.testing.assert_allclose(float(slj.time_derivative(u, x, index=1)), float(g[1]), rtol=1e-13)
    np.testing.assert_allclose(
        float(slj.divergence(lambda y: y * y, x)), float(2 * x.sum()), rtol=1e-13
    )
    with pytest.raises(ValueError, match="method must be one of"):
        slj.laplacian(u, x, method="fd")


OPTIMIZERS = {
    "sngd": lambda s, **k: slj.sngd(s, rank=15, damping=1e-8, **k),
    "sngd_rademacher": lambda s, **k: slj.sngd(s, rank=15, damping=1e-8, sketch="rademacher", **k),
    "engd": lambda s, **k: slj.engd(s, damping=1e-10, **k),
    "engd_woodbury": lambda s, **k: slj.engd_woodbury(s, damping=1e-10, **k),
    "nystrom_pcg": lambda s, **k: slj.nystrom_pcg(s, rank=10, damping=1e-8, **k),
    "spring": lambda s, **k: slj.spring(s, damping=1e-8, momentum=0.5, **k),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("line_search", ["grid", "armijo"])
def test_optimizers_decrease_the_loss_on_a_tiny_pinn(name, line_search):
    model, terms, params = _tiny_pinn()
    system = functools.partial(slj.pinn_system, model, terms=terms)
    residual = functools.partial(slj.pinn_residual, model, terms=terms)
    opt = OPTIMIZERS[name](system, residual_fn=residual, line_search=line_search)
    state = opt.init(params)
    step = jax.jit(lambda p, s: opt.update(None, s, p))

    def loss(p):
        return 0.5 * float(jnp.sum(residual(p) ** 2))

    start = loss(params)
    for _ in range(15):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
    # from this init the loss plateaus for ~5 steps before natural gradients take off
    assert loss(params) < 0.5 * start, (name, start, loss(params))
    assert int(state.steps) == 15 and int(state.skipped) == 0


def test_optimizers_on_nonlinear_least_squares():
    """Fit y = a exp(-b t) + c: every method drives the residual to the noise floor."""
    t = jnp.linspace(0, 3, 40)
    y = 2.0 * jnp.exp(-1.3 * t) + 0.5

    def residual(p):
        return p["a"] * jnp.exp(-p["b"] * t) + p["c"] - y

    system = functools.partial(slj.jacobian_operator, residual)
    for name, make in OPTIMIZERS.items():
        rank_kw = {}
        if name == "sngd_rademacher":
            continue  # a 3 x 3 +-1 sketch is singular with positive probability
        if name == "sngd":
            opt = slj.sngd(system, rank=3, damping=1e-12, residual_fn=residual)
        else:
            opt = (
                make(system, residual_fn=residual, **rank_kw)
                if name != "nystrom_pcg"
                else slj.nystrom_pcg(system, rank=2, damping=1e-10, residual_fn=residual)
            )
        params = {"a": jnp.array(1.0), "b": jnp.array(1.0), "c": jnp.array(0.0)}
        state = opt.init(params)
        update = jax.jit(opt.update)  # compiled: eager steps cost ~0.4 s each here
        for _ in range(10):  # Gauss-Newton: 3 steps reach 1e-12 from this start
            updates, state = update(None, state, params)
            params = optax.apply_updates(params, updates)
        assert float(jnp.sum(residual(params) ** 2)) < 1e-12, name


def test_sngd_with_full_rank_takes_the_engd_step():
    model, terms, params = _tiny_pinn()
    system = functools.partial(slj.pinn_system, model, terms=terms)
    P = jax.flatten_util.ravel_pytree(params)[0].shape[0]
    a = slj.sngd(system, rank=P, damping=1e-3, line_search=None)
    b = slj.engd(system, damping=1e-3, line_search=None)
    ua, _ = a.update(None, a.init(params), params)
    ub, _ = b.update(None, b.init(params), params)
    fa, fb = jax.flatten_util.ravel_pytree(ua)[0], jax.flatten_util.ravel_pytree(ub)[0]
    np.testing.assert_allclose(np.asarray(fa), np.asarray(fb), rtol=1e-7, atol=1e-10)


def test_state_round_trips_and_keys_advance():
    model, terms, params = _tiny_pinn()
    opt = slj.sngd(functools.partial(slj.pinn_system, model, terms=terms), rank=5, damping=1e-6)
    state = opt.init(params)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    assert isinstance(jax.tree_util.tree_unflatten(treedef, leaves), slj.NGDState)
    _, s1 = jax.jit(lambda s: opt.update(None, s, params))(state)
    _, s1b = opt.update(None, state, params)
    assert not np.array_equal(jax.random.key_data(s1.key), jax.random.key_data(state.key))
    np.testing.assert_array_equal(jax.random.key_data(s1.key), jax.random.key_data(s1b.key))
    np.testing.assert_allclose(float(s1.loss), float(s1b.loss), rtol=1e-12)


def test_chains_with_optax_linesearch():
    """line_search=None gives the raw direction, which optax's own line search can scale."""
    t = jnp.linspace(0, 1, 20)

    def residual(p):
        return jnp.sin(p * t) - jnp.sin(1.7 * t)

    def value_fn(p):
        return 0.5 * jnp.sum(residual(p) ** 2)

    opt = optax.chain(
        slj.engd(functools.partial(slj.jacobian_operator, residual), line_search=None),
        optax.scale_by_backtracking_linesearch(max_backtracking_steps=20),
    )
    p = jnp.array(1.0)
    state = opt.init(p)
    for _ in range(10):
        value, grad = jax.value_and_grad(value_fn)(p)
        updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=value_fn)
        p = optax.apply_updates(p, updates)
    assert abs(float(p) - 1.7) < 1e-8


def test_bad_input_is_rejected_and_params_stay_finite():
    with pytest.raises(TypeError, match=r"integer|int"):
        slj.sngd(lambda p: None, rank=1, damping=1.0).init({"n": jnp.arange(3)})
    with pytest.raises(ValueError, match="1-D"):
        slj.jacobian_operator(lambda p: jnp.ones((2, 2)) * p, jnp.ones(()))
    t = jnp.linspace(0, 1, 5)
    system = functools.partial(slj.jacobian_operator, lambda p: p[0] * t - t)
    opt = slj.sngd(system, rank=3, damping=1e-3)
    state = opt.init(jnp.ones(2))
    with pytest.raises(ValueError, match=r"rank must be in \[1, 2\]"):
        opt.update(None, state, jnp.ones(2))
    # under jit a non-finite residual cannot raise: the step is skipped, and says so
    bad = functools.partial(slj.jacobian_operator, lambda p: jnp.log(p - 2.0))
    opt = slj.engd(bad, damping=1e-3)
    params = jnp.ones(3)
    step = jax.jit(lambda s, p: opt.update(None, s, p))
    with pytest.warns(sl.StepWarning, match="not taken"):
        updates, state = jax.block_until_ready(step(opt.init(params), params))
    assert np.all(np.isfinite(np.asarray(optax.apply_updates(params, updates))))
    assert int(state.skipped) == 1
    with pytest.raises(ValueError, match="line_search"):
        slj.sngd(system, rank=1, damping=1e-3, line_search="wolfe")
    with pytest.raises(ValueError, match=r"sketch must be one of .*got 'srht'"):
        slj.sngd(system, rank=1, damping=1e-3, sketch="srht")
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        slj.pinn_system(
            lambda p, x: p * x[0],
            jnp.ones(()),
            [slj.Term(lambda u, x: u(x), jnp.ones((2, 1)), -1.0)],
        )
    with pytest.raises(ValueError, match="learning_rate must be >= 0"):
        slj.engd(system, learning_rate=-1.0)
    with pytest.raises(ValueError, match="grid_size must be >= 1"):
        slj.engd(system, grid_size=0)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['rank'\]"):
        slj.engd(system, rank=3)
    # numpy integer seeds are ints
    slj.engd(system, seed=np.int64(3)).init(jnp.ones(2))
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        slj.engd(system, seed=-1)


def test_operator_feeds_core_methods():
    """The adapter's operator plugs into every core direction method."""
    params = _params()
    r, J = slj.jacobian_operator(_residual, params)
    Jd = np.asarray(J.to_dense())
    ref = np.linalg.solve(Jd.T @ Jd + 1e-2 * np.eye(17), Jd.T @ np.asarray(r))
    for method in ("dense", "woodbury", "nystrom-pcg"):
        options = {"rank": 9, "rtol": 1e-12} if method == "nystrom-pcg" else {}
        d, _ = sl.natural_gradient_direction(J, r, damping=1e-2, method=method, **options)
        np.testing.assert_allclose(np.asarray(d), ref, rtol=1e-7, atol=1e-10)


def test_float32_params_work():
    t = jnp.linspace(0, 3, 30, dtype=jnp.float32)
    y = 2.0 * jnp.exp(-1.3 * t)

    def residual(p):
        return p["a"] * jnp.exp(-p["b"] * t) - y

    params = {"a": jnp.array(1.0, jnp.float32), "b": jnp.array(1.0, jnp.float32)}
    opt = slj.sngd(functools.partial(slj.jacobian_operator, residual), rank=2, damping=1e-6)
    state = opt.init(params)
    for _ in range(15):
        updates, state = opt.update(None, state, params)
        params = optax.apply_updates(params, updates)
    assert params["a"].dtype == jnp.float32
    assert float(jnp.sum(residual(params) ** 2)) < 1e-8


def test_float32_defaults_compile_once_and_keep_float32():
    """Defaults (adaptive damping and rank) on float32 parameters under ``jax.jit``: the
    step's linear algebra runs in float64 (x64 is on), the optax state stays float32, so the
    second call reuses the first compilation."""
    t = jnp.linspace(0, 3, 30, dtype=jnp.float32)
    y = 2.0 * jnp.exp(-1.3 * t)

    def residual(p):
        return p["a"] * jnp.exp(-p["b"] * t) - y

    params = {"a": jnp.array(1.0, jnp.float32), "b": jnp.array(1.0, jnp.float32)}
    opt = slj.sngd(functools.partial(slj.jacobian_operator, residual))

    @jax.jit
    def step(params, state):
        updates, state = opt.update(None, state, params)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    dtypes = [x.dtype for x in jax.tree_util.tree_leaves(state)]
    for _ in range(12):
        params, state = step(params, state)
    assert [x.dtype for x in jax.tree_util.tree_leaves(state)] == dtypes
    assert jnp.float64 not in dtypes and params["a"].dtype == jnp.float32
    assert step._cache_size() == 1
    assert float(jnp.sum(residual(params) ** 2)) < 1e-8


def test_poisson_example_runs(capsys):
    ex = load_example("jax_poisson2d")
    # the example's defaults: no rank, no damping (both adapt)
    summary = ex.main(["--steps", "15", "--n-side", "8", "--width", "16"])
    assert summary["steps"] == 15 and summary["skipped"] == 0
    assert summary["rel_l2"] < 1.0 and summary["n_points"] == 8 * 8 + 4 * 8
    assert "relative L2 error" in capsys.readouterr().out


def test_pinn_system_builds_in_host_blocks_by_default(monkeypatch):
    """On the host the materialized build runs in blocks of points by default (sized by
    bytes of rows; shrunk here so that this small system needs several): the same J."""
    import sketchlinalg._pinn as core_pinn

    model, terms, params = _tiny_pinn()
    whole = slj.pinn_system(model, params, terms, path="materialized", chunk_size=10_000)
    loops = []
    fori_loop = core_pinn._dispatch.fori_loop
    monkeypatch.setattr(core_pinn, "_JAX_HOST_CHUNK_BYTES", 1)
    monkeypatch.setattr(core_pinn, "_JAX_HOST_CHUNK_MIN_POINTS", 3)
    monkeypatch.setattr(
        core_pinn._dispatch, "fori_loop", lambda *a: loops.append(a[2]) or fori_loop(*a)
    )
    blocks = slj.pinn_system(model, params, terms, path="materialized")
    assert loops == [4]  # 12 interior points in blocks of 3; the 2 boundary points in one
    np.testing.assert_allclose(
        np.asarray(blocks.jacobian.to_dense()), np.asarray(whole.jacobian.to_dense()), rtol=1e-14
    )
    np.testing.assert_allclose(np.asarray(blocks.residual), np.asarray(whole.residual), rtol=1e-14)


def _pointer(a):
    return a.unsafe_buffer_pointer()


def test_pinn_system_builds_over_a_donated_workspace():
    """``workspace=``: the rows are written over the last build's matrix; under a jit that
    donates it XLA writes ``J`` in its buffer (same pointer), with the values of a fresh
    build; another size is ignored; not with sharding."""
    model, terms, params = _tiny_pinn()

    def build(p, ws=None):
        s = slj.pinn_system(model, p, terms, path="materialized", chunk_size=5, workspace=ws)
        return s.residual, jnp.reshape(s.jacobian.to_dense(), (-1,))

    r0, J0 = jax.jit(build)(params)
    donated = jax.jit(build, donate_argnums=1)
    ws = jnp.full(J0.shape, jnp.nan)  # every element is written over
    for _ in range(3):
        before = _pointer(ws)
        r, ws = donated(params, ws)
        assert _pointer(ws) == before
        np.testing.assert_array_equal(np.asarray(ws), np.asarray(J0))
        np.testing.assert_array_equal(np.asarray(r), np.asarray(r0))
    _, J = jax.jit(build)(params, jnp.zeros(J0.shape[0] + 1))  # another size: a fresh build
    np.testing.assert_array_equal(np.asarray(J), np.asarray(J0))
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    with pytest.raises(ValueError, match="workspace= is for unsharded rows"):
        slj.pinn_system(model, params, terms, sharding=rows, workspace=J0)


@pytest.mark.parametrize("name", ["engd_woodbury", "sngd", "spring"])
def test_optimizer_workspace_keeps_the_jacobian_in_place(name):
    """``workspace=True``: the state holds the last ``J`` (sized in ``init``), the next
    build writes over it in place when the jitted step donates the state, and the steps
    equal those without a workspace bit for bit."""
    model, terms, params = _tiny_pinn()
    system = functools.partial(slj.pinn_system, model, terms=terms, path="materialized")
    residual = functools.partial(slj.pinn_residual, model, terms=terms)
    P = jax.flatten_util.ravel_pytree(params)[0].shape[0]
    runs = {}
    for workspace in (False, True):
        opt = OPTIMIZERS[name](system, residual_fn=residual, workspace=workspace)
        state = opt.init(params)
        if workspace:
            assert state.workspace.shape == (14 * P,)
        else:
            assert state.workspace is None

        def step(p, s, opt=opt):
            updates, s = opt.update(None, s, p)
            return optax.apply_updates(p, updates), s

        step = jax.jit(step, donate_argnums=(0, 1))
        p = jax.tree_util.tree_map(jnp.copy, params)
        pointers = []
        for _ in range(4):
            last = jax.tree_util.tree_map(jnp.copy, p)  # p is donated to the step
            p, state = step(p, state)
            if workspace:
                pointers.append(_pointer(state.workspace))
        runs[workspace] = (p, state, last)
        assert len(set(pointers)) <= 1
    (pa, sa, _), (pb, sb, last) = runs[False], runs[True]
    for a, b in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(sa.loss) == float(sb.loss) and int(sb.steps) == 4
    # the workspace holds the Jacobian the last step was taken with
    J_last = np.asarray(jax.jit(lambda q: system(q).jacobian.to_dense())(last))
    np.testing.assert_array_equal(np.asarray(sb.workspace), J_last.reshape(-1))


def test_optimizer_workspace_needs_a_system_taking_it_and_keeps_its_size():
    model, terms, params = _tiny_pinn()
    system = functools.partial(slj.pinn_system, model, terms=terms)
    with pytest.raises(ValueError, match="workspace=True needs a system_fn that takes"):
        slj.engd_woodbury(lambda p: system(p), workspace=True)
    # other points than init's: the workspace keeps its size and the step builds afresh
    opt = slj.engd_woodbury(system, workspace=True)
    state = opt.init(params)
    more = [jnp.linspace(0.1, 0.9, 20)[:, None], terms[1].points]
    _, s1 = jax.jit(lambda s: opt.update(None, s, params, points=more))(state)
    assert s1.workspace.shape == state.workspace.shape and int(s1.status) == 0


def test_a_fresh_state_can_be_donated():
    """No two fields of ``init``'s state share a buffer (nor two states their key): a
    jitted step may donate it (XLA refuses one buffer donated twice)."""
    model, terms, params = _tiny_pinn()
    opt = slj.engd_woodbury(functools.partial(slj.pinn_system, model, terms=terms))
    states = [opt.init(params), opt.init(params)]
    leaves = [x for s in states for x in jax.tree_util.tree_leaves(s)]
    keys = [jax.random.key_data(s.key) for s in states]
    pointers = [_pointer(x) for x in leaves if not jnp.issubdtype(x.dtype, jax.dtypes.prng_key)]
    pointers += [_pointer(k) for k in keys]
    assert len(set(pointers)) == len(pointers)
    step = jax.jit(lambda s: opt.update(None, s, params)[1], donate_argnums=0)
    for s in states:
        s = step(s)
        assert int(s.steps) == 1
