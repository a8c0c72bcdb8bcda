"""Random test matrices (sketches) ``Omega`` of shape ``(n, l)``.

* ``"gaussian"``: i.i.d. standard normal entries; the default and the one the error bounds
  of Tropp et al. (2017) are stated for.
* ``"rademacher"``: i.i.d. +-1 entries; as good in practice, cheaper to draw.
* ``"sparse_sign"``: each row holds ``nnz_per_row`` entries +-1/sqrt(nnz_per_row) in
  distinct random columns, zeros elsewhere (Martinsson & Tropp 2020, section 9.2). The
  array API has no sparse arrays, so it is stored dense: the distribution is what it offers.
"""

from __future__ import annotations

import math
from typing import Any

from ._random import Sampler, as_sampler
from ._validation import check_float_dtype, check_int

__all__ = ["SKETCH_KINDS", "sketch_matrix"]

Array = Any

SKETCH_KINDS = ("gaussian", "rademacher", "sparse_sign")


def sketch_matrix(
    n: int,
    l: int,
    *,
    xp: Any,
    dtype: Any,
    device: Any = None,
    kind: str = "gaussian",
    seed: int | Sampler | Any = 0,
    nnz_per_row: int | None = None,
) -> Array:
    """Draw a random test matrix ``Omega`` of shape ``(n, l)``.

    Parameters
    ----------
    n, l : int
        Rows (the operator's dimension) and columns (the sketch size).
    xp, dtype, device
        Namespace, real floating dtype and device of the result.
    kind : {"gaussian", "rademacher", "sparse_sign"}
        Distribution of the entries: i.i.d. standard normal (the default, and the one the
        error bounds of Tropp et al. 2017 are stated for); i.i.d. +-1; or sparse sign, each
        row holding ``nnz_per_row`` entries +-1/sqrt(nnz_per_row) in distinct random columns
        (Martinsson & Tropp 2020, section 9.2; stored dense, since the array API has no
        sparse arrays).
    seed : int, Sampler or JAX key
        Source of randomness (see :func:`as_sampler`). The same seed gives the same matrix.
    nnz_per_row : int, optional
        Non-zeros per row of a sparse-sign sketch; default ``min(l, 8)``.

    Returns
    -------
    array of shape (n, l)

    Examples
    --------
    >>> import numpy as np
    >>> from sketchlinalg import sketch_matrix
    >>> Om = sketch_matrix(5, 2, xp=np, dtype=np.float64, kind="rademacher", seed=1)
    >>> sorted(set(np.abs(Om).ravel().tolist()))
    [1.0]
    """
    n = check_int(n, "n", low=1)
    l = check_int(l, "l", low=1)
    check_float_dtype(xp, dtype, "dtype")
    if kind not in SKETCH_KINDS:
        raise ValueError(f"kind must be one of {SKETCH_KINDS}, got {kind!r}")
    sampler = as_sampler(seed)
    if kind == "gaussian":
        return sampler.normal((n, l), xp=xp, dtype=dtype, device=device)
    if kind == "rademacher":
        u = sampler.uniform((n, l), xp=xp, dtype=dtype, device=device)
        return xp.where(
            u < 0.5,
            xp.asarray(-1.0, dtype=dtype, device=device),
            xp.asarray(1.0, dtype=dtype, device=device),
        )
    zeta = min(l, 8) if nnz_per_row is None else nnz_per_row
    if isinstance(zeta, bool) or not isinstance(zeta, int) or not 1 <= zeta <= l:
        raise ValueError(f"nnz_per_row must be an int in [1, l={l}], got {nnz_per_row!r}")
    # The zeta columns of a row are those holding its zeta smallest uniforms: distinct
    # columns, uniformly chosen, drawn without a data-dependent loop.
    u = sampler.uniform((n, l), xp=xp, dtype=dtype, device=device)
    kth = xp.sort(u, axis=1)[:, zeta - 1 : zeta]
    signs = sampler.fold_in(1).uniform((n, l), xp=xp, dtype=dtype, device=device)
    scale = 1.0 / math.sqrt(zeta)
    value = xp.where(
        signs < 0.5,
        xp.asarray(-scale, dtype=dtype, device=device),
        xp.asarray(scale, dtype=dtype, device=device),
    )
    return xp.where(u <= kth, value, xp.zeros_like(u))
