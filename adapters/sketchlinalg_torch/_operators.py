"""Jacobian operators of residual functions of parameter dicts, built with ``torch.func``.

The operator acts on the *flattened trainable parameters*: the tensors of the parameter
dict with ``requires_grad=True``, each flattened in row-major order and concatenated in
the dict's order. Entries with ``requires_grad=False`` are passed to the residual function
unchanged and are not differentiated (nor are the buffers and parameters of a module that
the dict leaves out: ``torch.func.functional_call`` takes those from the module).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import array_api_compat
import torch
from torch.func import jvp, vjp, vmap

import sketchlinalg as sl

__all__ = ["JacobianOperator", "jacobian_operator", "to_scipy"]

Params = Mapping[str, torch.Tensor] | torch.Tensor
ResidualFn = Callable[[Any], torch.Tensor]


class _Layout:
    """Names, shapes and sizes of the trainable tensors; flattening and unflattening."""

    def __init__(self, trainable: dict[Any, torch.Tensor]) -> None:
        self.names = list(trainable)
        self.shapes = [tuple(t.shape) for t in trainable.values()]
        self.sizes = [math.prod(s) for s in self.shapes]
        first = next(iter(trainable.values()))
        self.dtype = first.dtype
        self.device = first.device
        self.size = sum(self.sizes)

    def flatten(self, tensors: Mapping[Any, torch.Tensor]) -> torch.Tensor:
        """Dict of tensors of the layout's shapes -> vector ``(P,)``."""
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def flatten_batch(self, tensors: Mapping[Any, torch.Tensor]) -> torch.Tensor:
        """Dict of ``(c, *shape)`` tensors -> ``(c, P)``."""
        return torch.cat([tensors[n].reshape(tensors[n].shape[0], -1) for n in self.names], dim=1)

    def unflatten(self, vector: torch.Tensor) -> dict[Any, torch.Tensor]:
        """Vector ``(P,)`` -> dict of tensors (views)."""
        parts = torch.split(vector, self.sizes)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def unflatten_batch(self, block: torch.Tensor) -> dict[Any, torch.Tensor]:
        """``(c, P)`` -> dict of ``(c, *shape)`` tensors."""
        c = block.shape[0]
        parts = torch.split(block, self.sizes, dim=1)
        return {n: p.reshape(c, *s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}


def split_params(
    params: Any, where: str, name: str = "params"
) -> tuple[dict[Any, torch.Tensor], dict[Any, torch.Tensor], _Layout]:
    """Split a parameter dict into trainable and frozen entries (detached) and a layout.

    A lone tensor is treated as the dict ``{None: tensor}``.
    """
    if isinstance(params, torch.Tensor):
        items: dict[Any, Any] = {None: params}
    elif isinstance(params, Mapping):
        items = dict(params)
    else:
        raise TypeError(
            f"{where}: {name} must be a dict name -> torch.Tensor (e.g. "
            f"dict(model.named_parameters())) or a tensor, got {type(params).__name__}"
        )
    if not items:
        raise ValueError(
            f"{where}: {name} is empty: no trainable tensor (expected at least one with "
            "requires_grad=True)"
        )
    for key, value in items.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{where}: {name}[{key!r}] must be a torch.Tensor, got {type(value).__name__}"
            )
    trainable = {k: v.detach() for k, v in items.items() if v.requires_grad}
    frozen = {k: v.detach() for k, v in items.items() if not v.requires_grad}
    if not trainable:
        raise ValueError(
            f"{where}: {name} has no trainable tensor: all {len(items)} entries have "
            "requires_grad=False (expected at least one with requires_grad=True; only those "
            "are differentiated)"
        )
    dtypes = {t.dtype for t in trainable.values()}
    devices = {t.device for t in trainable.values()}
    if len(dtypes) > 1 or len(devices) > 1:
        raise ValueError(
            f"{where}: the trainable tensors of {name} must share one dtype and device, got "
            f"dtypes {sorted(map(str, dtypes))} and devices {sorted(map(str, devices))}"
        )
    dtype = dtypes.pop()
    if not dtype.is_floating_point or dtype.is_complex:
        raise TypeError(f"{where}: trainable tensors must be real floating, got {dtype}")
    return trainable, frozen, _Layout(trainable)


def merge(
    trainable: Mapping[Any, torch.Tensor], frozen: Mapping[Any, torch.Tensor], lone: bool
) -> Any:
    """Rebuild the structure the user's function expects (a dict, or the lone tensor)."""
    if lone:
        return trainable[None]
    return {**frozen, **trainable}


def check_residual(r: Any, where: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A residual must be a finite 1-D tensor (of the parameters' dtype when given)."""
    if not isinstance(r, torch.Tensor):
        raise TypeError(
            f"{where} must return the residual as a torch.Tensor of shape (N,), "
            f"got {type(r).__name__}"
        )
    if r.ndim != 1:
        raise ValueError(
            f"{where} must return a 1-D residual of shape (N,), got shape {tuple(r.shape)} "
            "(flatten it, e.g. r.reshape(-1))"
        )
    if dtype is not None and r.dtype != dtype:
        raise TypeError(
            f"{where} returned a residual of dtype {r.dtype}, expected the parameters' {dtype}"
        )
    if not bool(torch.isfinite(r).all()):
        bad = int((~torch.isfinite(r)).sum())
        raise ValueError(
            f"{where} returned a residual with {bad} non-finite entries of {r.shape[0]} "
            "(expected all finite); the parameters were not changed"
        )
    return r


def _chunked(
    fn: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    """Apply ``fn`` to column blocks of ``X`` (``(n, k)`` -> ``(m, k)``) of ``chunk_size``."""
    k = X.shape[1]
    c = k if chunk_size is None else chunk_size
    if k <= c:
        return fn(X)
    return torch.cat([fn(X[:, i : i + c]) for i in range(0, k, c)], dim=1)


def check_chunk_size(chunk_size: Any) -> int | None:
    """``None`` or a positive int."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return chunk_size


class JacobianOperator(sl.FunctionOperator):
    """A residual Jacobian ``J`` (``N x P``) over the flattened trainable parameters.

    Built by :func:`jacobian_operator` (``path="matrix-free"``) or :func:`pinn_system`
    (``"materialized"`` or ``"matrix-free"``); a :class:`sketchlinalg.FunctionOperator`,
    so every core routine accepts it.

    Attributes
    ----------
    path : str
        ``"materialized"`` (``matrix`` holds ``J``) or ``"matrix-free"`` (products are
        batched JVPs and VJPs).
    matrix : torch.Tensor or None
        The explicit ``(N, P)`` Jacobian on the materialized path.
    names : list
        Keys of the trainable tensors, in the order of the flattened columns.
    shapes : list of tuple
        Their shapes.
    """

    def __init__(
        self,
        matmat: Callable[[torch.Tensor], torch.Tensor],
        rmatmat: Callable[[torch.Tensor], torch.Tensor],
        *,
        shape: tuple[int, int],
        layout: _Layout,
        path: str,
        matrix: torch.Tensor | None = None,
    ) -> None:
        probe = torch.empty(0, dtype=layout.dtype, device=layout.device)
        super().__init__(
            matmat,
            rmatmat,
            shape=shape,
            dtype=layout.dtype,
            xp=array_api_compat.array_namespace(probe),
            device=layout.device,
        )
        self.path = path
        self.matrix = matrix
        self._layout = layout
        self.names = list(layout.names)
        self.shapes = list(layout.shapes)

    @property
    def is_materialized(self) -> bool:
        """True on the materialized path (``auto`` then counts no materialization cost)."""
        return self.matrix is not None

    def to_dense(self) -> torch.Tensor:
        """The explicit ``(N, P)`` Jacobian (free on the materialized path)."""
        if self.matrix is not None:
            return self.matrix
        return super().to_dense()

    def unflatten(self, vector: torch.Tensor) -> dict[Any, torch.Tensor]:
        """Split a parameter-space vector ``(P,)`` into a dict of tensors shaped like the
        trainable parameters (keys ``names``; the key of a lone tensor is ``None``).
        """
        if not isinstance(vector, torch.Tensor) or tuple(vector.shape) != (self.shape[1],):
            raise ValueError(
                f"unflatten: expected a tensor of shape ({self.shape[1]},), got "
                f"{tuple(getattr(vector, 'shape', ()))}"
            )
        return self._layout.unflatten(vector)

    def __repr__(self) -> str:
        return f"<JacobianOperator shape={self.shape} dtype={self.dtype} path={self.path}>"


def matrix_operator(M: torch.Tensor, layout: _Layout) -> JacobianOperator:
    """A materialized Jacobian as a :class:`JacobianOperator`."""
    return JacobianOperator(
        lambda X: M @ X,
        lambda Y: M.T @ Y,
        shape=(M.shape[0], M.shape[1]),
        layout=layout,
        path="materialized",
        matrix=M,
    )


def jacobian_operator(
    residual_fn: ResidualFn, params: Params, *, chunk_size: int | None = None
) -> tuple[torch.Tensor, JacobianOperator]:
    r"""The residual ``r = residual_fn(params)`` and its Jacobian as a matrix-free operator.

    ``J.matmat(X)`` (``X`` of shape ``(P, k)``) is a batch of Jacobian-vector products
    (``torch.func.jvp`` under ``torch.func.vmap`` over the columns), ``J.rmatmat(Y)`` a
    batch of vector-Jacobian products (one ``torch.func.vjp`` linearization, reused, under
    ``vmap``), both in blocks of at most ``chunk_size`` columns to bound memory.

    Parameters
    ----------
    residual_fn : callable
        ``params -> r``: a pure function (no in-place changes of its inputs, no global
        randomness) returning a 1-D tensor of shape ``(N,)``; it receives a dict with the
        same keys as ``params`` (or a tensor when ``params`` is a tensor).
    params : dict name -> torch.Tensor, or torch.Tensor
        The point of linearization. Only tensors with ``requires_grad=True`` are
        differentiated (and they must share one real floating dtype and one device); the
        others are passed through as constants.
    chunk_size : int, optional
        Columns per vmapped block of products (default: all at once).

    Returns
    -------
    r : torch.Tensor of shape (N,)
        Detached residual.
    J : JacobianOperator of shape (N, P)
        ``J.path == "matrix-free"``; dtype and device of the parameters; its array
        namespace is ``array_api_compat.array_namespace(r)``.

    Raises
    ------
    TypeError, ValueError
        ``params`` not a dict of tensors, no trainable tensor, mixed dtypes or devices,
        or a residual that is not a finite 1-D tensor of the parameters' dtype.

    Examples
    --------
    >>> import torch
    >>> from sketchlinalg_torch import jacobian_operator
    >>> A = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    >>> x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    >>> r, J = jacobian_operator(lambda p: A @ p["x"] - 1.0, {"x": x})
    >>> J.shape, J.path
    ((3, 2), 'matrix-free')
    >>> torch.equal(J.to_dense(), A)
    True
    """
    if not callable(residual_fn):
        raise TypeError(f"residual_fn must be callable, got {type(residual_fn).__name__}")
    chunk_size = check_chunk_size(chunk_size)
    lone = isinstance(params, torch.Tensor)
    trainable, frozen, layout = split_params(params, "jacobian_operator")

    def f(train: dict[Any, torch.Tensor]) -> torch.Tensor:
        return residual_fn(merge(train, frozen, lone))

    with torch.no_grad():
        try:
            linearized = vjp(f, trainable)
        except RuntimeError:
            # torch.func's message for a non-tensor output is obscure: say what was expected
            check_residual(f(trainable), "residual_fn", layout.dtype)
            raise
    r, vjp_fn = linearized[0], linearized[1]
    r = check_residual(r, "residual_fn", layout.dtype)
    N, P = r.shape[0], layout.size

    def jvp_block(X: torch.Tensor) -> torch.Tensor:
        tangents = layout.unflatten_batch(X.T)
        with torch.no_grad():
            out = vmap(lambda t: jvp(f, (trainable,), (t,))[1])(tangents)
        return out.T

    def vjp_block(Y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            cot = vmap(vjp_fn)(Y.T.contiguous())[0]
        return layout.flatten_batch(cot).T

    def matmat(X: torch.Tensor) -> torch.Tensor:
        if X.shape[1] == 0:
            return X.new_zeros((N, 0))
        return _chunked(jvp_block, X, chunk_size)

    def rmatmat(Y: torch.Tensor) -> torch.Tensor:
        if Y.shape[1] == 0:
            return Y.new_zeros((P, 0))
        return _chunked(vjp_block, Y, chunk_size)

    J = JacobianOperator(matmat, rmatmat, shape=(N, P), layout=layout, path="matrix-free")
    return r, J


def to_scipy(A: sl.LinearOperator) -> Any:
    """View an operator with CPU torch products as a ``scipy.sparse.linalg.LinearOperator``.

    Each SciPy product converts the NumPy block to a tensor of the operator's dtype (no
    copy where possible), calls ``matmat`` / ``rmatmat`` and converts back, so SciPy's
    solvers (``lsqr``, ``eigsh``, ``cg``) run on a Jacobian or Gram operator.

    Parameters
    ----------
    A : sketchlinalg.LinearOperator
        An operator whose products are torch tensors on the CPU (e.g. a
        :class:`JacobianOperator`, or ``sketchlinalg.gram(J)``).

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
        Same shape; dtype ``float64`` or ``float32`` as the operator's.

    Raises
    ------
    TypeError
        ``A`` is not a sketchlinalg operator with torch products.
    ValueError
        The operator lives on a non-CPU device.

    Examples
    --------
    >>> import numpy as np, torch
    >>> import sketchlinalg as sl
    >>> from sketchlinalg_torch import to_scipy
    >>> op = to_scipy(sl.aslinearoperator(torch.eye(3, dtype=torch.float64)))
    >>> (op @ np.ones(3)).tolist()
    [1.0, 1.0, 1.0]
    """
    import numpy as np
    import scipy.sparse.linalg as spla

    if not isinstance(A, sl.LinearOperator):
        raise TypeError(f"A must be a sketchlinalg.LinearOperator, got {type(A).__name__}")
    if not array_api_compat.is_torch_namespace(A.xp):
        raise TypeError(f"A must have torch products, got the namespace {A.xp.__name__}")
    if A.device is not None and torch.device(A.device).type != "cpu":
        raise ValueError(
            f"to_scipy needs an operator on the CPU, got device {A.device}; build it from "
            "CPU tensors (SciPy works on host memory)"
        )
    np_dtype = np.dtype(str(A.dtype).removeprefix("torch."))

    def wrap(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Any], Any]:
        def apply(X: Any) -> Any:
            T = torch.from_numpy(np.ascontiguousarray(X, dtype=np_dtype))
            vec = T.ndim == 1
            out = fn(T[:, None] if vec else T)
            return (out[:, 0] if vec else out).detach().cpu().numpy()

        return apply

    return spla.LinearOperator(
        A.shape,
        matvec=wrap(A.matmat),
        rmatvec=wrap(A.rmatmat),
        matmat=wrap(A.matmat),
        rmatmat=wrap(A.rmatmat),
        dtype=np_dtype,
    )
