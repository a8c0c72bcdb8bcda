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
from sketchlinalg import JacobianOperator

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

    def column_blocks(self, tensors: Mapping[Any, torch.Tensor]) -> list[torch.Tensor]:
        """Dict of ``(c, *shape)`` tensors -> the ``(c, P_j)`` column blocks of ``(c, P)``."""
        return [tensors[n].reshape(tensors[n].shape[0], -1) for n in self.names]

    def flatten_batch(self, tensors: Mapping[Any, torch.Tensor]) -> torch.Tensor:
        """Dict of ``(c, *shape)`` tensors -> ``(c, P)``."""
        return torch.cat(self.column_blocks(tensors), dim=1)

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


def jacobian_operator(
    residual_fn: ResidualFn, params: Params, *, chunk_size: int | None = None
) -> tuple[torch.Tensor, JacobianOperator]:
    r"""The residual ``r = residual_fn(params)`` and its Jacobian as a matrix-free operator.

    ``J.matmat(X)`` is a batch of Jacobian-vector products (``torch.func.jvp`` under
    ``vmap`` over the columns), ``J.rmatmat(Y)`` a batch of vector-Jacobian products (one
    ``torch.func.vjp`` linearization, reused), in blocks of at most ``chunk_size`` columns.

    Parameters
    ----------
    residual_fn : callable
        ``params -> r``, pure (no in-place changes of its inputs, no global randomness),
        returning a 1-D tensor; it receives a dict with the keys of ``params`` (or a tensor).
    params : dict name -> torch.Tensor, or torch.Tensor
        The point of linearization. Only tensors with ``requires_grad=True`` are
        differentiated (one real floating dtype, one device); the others are constants.
    chunk_size : int, optional
        Columns per vmapped block of products (default: all at once).

    Returns
    -------
    r : torch.Tensor of shape (N,)
    J : sketchlinalg.JacobianOperator of shape (N, P)
        ``J.path == "matrix-free"``; ``J.unflatten`` splits a flat vector into a dict of
        tensors shaped like the trainable parameters.

    Examples
    --------
    >>> import torch
    >>> from sketchlinalg_torch import jacobian_operator
    >>> A = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    >>> x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    >>> r, J = jacobian_operator(lambda p: A @ p["x"] - 1.0, {"x": x})
    >>> J.shape, J.path, torch.equal(J.to_dense(), A)
    ((3, 2), 'matrix-free', True)
    """
    if not callable(residual_fn):
        raise TypeError(f"residual_fn must be callable, got {type(residual_fn).__name__}")
    lone = isinstance(params, torch.Tensor)
    trainable, frozen, layout = split_params(params, "jacobian_operator")

    def f(train: dict[Any, torch.Tensor]) -> torch.Tensor:
        return residual_fn(merge(train, frozen, lone))

    with torch.no_grad():
        try:
            linearized = vjp(f, trainable)
        except RuntimeError:
            # torch.func's message for a non-tensor output is obscure: say what was expected
            sl.check_system((f(trainable), None), layout.size, layout.dtype, "residual_fn")
            raise
    r, vjp_fn = linearized[0], linearized[1]
    if not isinstance(r, torch.Tensor) or r.ndim != 1:
        sl.check_system((r, None), layout.size, layout.dtype, "residual_fn")

    def matmat(X: torch.Tensor) -> torch.Tensor:
        if X.shape[1] == 0:
            return X.new_zeros((r.shape[0], 0))
        with torch.no_grad():
            out = vmap(lambda t: jvp(f, (trainable,), (t,))[1])(layout.unflatten_batch(X.T))
        return out.T

    def rmatmat(Y: torch.Tensor) -> torch.Tensor:
        if Y.shape[1] == 0:
            return Y.new_zeros((layout.size, 0))
        with torch.no_grad():
            return layout.flatten_batch(vmap(vjp_fn)(Y.T.contiguous())[0]).T

    J = JacobianOperator(
        matmat,
        rmatmat,
        shape=(r.shape[0], layout.size),
        dtype=layout.dtype,
        xp=array_api_compat.array_namespace(r),
        device=layout.device,
        path="matrix-free",
        unflatten=layout.unflatten,
        chunk_size=chunk_size,
    )
    sl.check_system((r, J), layout.size, layout.dtype, "residual_fn")
    return r, J


def to_scipy(A: sl.LinearOperator) -> Any:
    """View an operator with CPU torch products as a ``scipy.sparse.linalg.LinearOperator``,
    so SciPy's solvers (``lsqr``, ``eigsh``, ``cg``) run on a Jacobian or Gram operator.

    Each SciPy product converts the NumPy block to a tensor (no copy where possible), calls
    ``matmat`` / ``rmatmat`` and converts back. ``TypeError`` if ``A`` is not an operator
    with torch products, ``ValueError`` if they live on a GPU.

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
