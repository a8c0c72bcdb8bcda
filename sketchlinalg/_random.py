"""Explicit randomness: the sampler protocol, the default and the portable samplers.

The array API standard has no random number generator. Every randomized routine of
sketchlinalg takes a ``seed`` argument that :func:`as_sampler` turns into a
:class:`Sampler`: an immutable object that, given a namespace, dtype, device and shape,
returns an array, and that derives independent child streams with :meth:`Sampler.fold_in`.
Nothing is global: the same sampler gives the same array every time.

* :class:`DefaultSampler` (what an ``int`` seed becomes) uses the backend's own generator
  (NumPy PCG64, ``torch.Generator``, ``jax.random``, CuPy's Philox) and falls back to
  :class:`PortableSampler` for any other namespace (array-api-strict, ...).
* :class:`PortableSampler` is written in array-API integer arithmetic only: a counter-based
  hash (each entry is a pure function of seed, stream and index), so it gives the same
  numbers on every backend that has 64-bit integers, up to the rounding of ``log``/``cos``.
* A JAX PRNG key passed as ``seed`` becomes a key-based sampler, so a key carried in an
  optax state (and traced under ``jax.jit``) drives the sketch.
"""

from __future__ import annotations

import numbers
from typing import Any

from . import _dispatch

__all__ = ["DefaultSampler", "PortableSampler", "Sampler", "as_sampler"]

Array = Any

_M32 = 0xFFFFFFFF


class Sampler:
    """Protocol of a random source for sketches (subclass it to plug in a generator).

    A sampler is immutable. ``normal`` and ``uniform`` return the same array each time they
    are called with the same arguments; :meth:`fold_in` derives an independent sampler, which
    is how one seed feeds several draws (new sketch columns, power-iteration vectors).
    Subclasses implement :meth:`normal`, :meth:`uniform` and :meth:`fold_in`.
    """

    def normal(self, shape: tuple[int, ...], *, xp: Any, dtype: Any, device: Any = None) -> Array:
        """Standard normal samples of ``shape`` in namespace ``xp``."""
        raise NotImplementedError

    def uniform(self, shape: tuple[int, ...], *, xp: Any, dtype: Any, device: Any = None) -> Array:
        """Uniform samples on [0, 1) of ``shape`` in namespace ``xp``."""
        raise NotImplementedError

    def fold_in(self, data: int) -> Sampler:
        """An independent sampler derived from this one and the integer ``data``."""
        raise NotImplementedError


class PortableSampler(Sampler):
    """Counter-based sampler written in array-API integer operations only.

    Entry ``i`` of a draw is ``h(h(i ^ k0) + k1)`` for a 32-bit integer hash ``h`` (two
    xor-shift-multiply rounds, computed in int64 with masks so no product overflows) and
    keys ``k0, k1`` derived from ``(seed, stream)`` by SplitMix64. Normals come from the
    Box-Muller transform of two such uniforms. It needs a namespace with ``int64``
    (JAX only with ``jax_enable_x64``).

    Parameters
    ----------
    seed : int
        Non-negative seed.
    stream : tuple of int, optional
        Path of :meth:`fold_in` calls that led here.
    """

    def __init__(self, seed: int, stream: tuple[int, ...] = ()) -> None:
        self.seed = _check_int_seed(seed)
        self.stream = tuple(int(s) for s in stream)

    def __repr__(self) -> str:
        return f"PortableSampler(seed={self.seed}, stream={self.stream})"

    def fold_in(self, data: int) -> PortableSampler:
        return PortableSampler(self.seed, (*self.stream, int(data)))

    def _keys(self, salt: int) -> tuple[int, int]:
        h = _dispatch.mix_seed(self.seed, (*self.stream, salt))
        return h & _M32, (h >> 32) & _M32

    def _bits(self, count: int, salt: int, xp: Any, device: Any) -> Array:
        k0, k1 = self._keys(salt)
        i = xp.arange(count, dtype=xp.int64, device=device)
        if i.dtype != xp.int64:
            raise TypeError(
                "PortableSampler needs 64-bit integers, but this namespace gave "
                f"{i.dtype}; enable them (jax: jax_enable_x64) or use an int seed"
            )
        return _hash32(xp, _hash32(xp, i ^ k0) + k1)

    def uniform(self, shape: tuple[int, ...], *, xp: Any, dtype: Any, device: Any = None) -> Array:
        count = _prod(shape)
        u = (xp.astype(self._bits(count, 0, xp, device), dtype) + 0.5) * 2.0**-32
        return xp.reshape(u, shape)

    def normal(self, shape: tuple[int, ...], *, xp: Any, dtype: Any, device: Any = None) -> Array:
        count = _prod(shape)
        # Box-Muller: u1 in (0, 1] so the log is finite, u2 in [0, 1).
        u1 = (xp.astype(self._bits(count, 1, xp, device), xp.float64) + 1.0) * 2.0**-32
        u2 = xp.astype(self._bits(count, 2, xp, device), xp.float64) * 2.0**-32
        z = xp.sqrt(-2.0 * xp.log(u1)) * xp.cos((2.0 * 3.141592653589793) * u2)
        return xp.reshape(xp.astype(z, dtype), shape)


def _hash32(xp: Any, x: Array) -> Array:
    # 32-bit integer finalizer (xor-shift-multiply); inputs and outputs in [0, 2^32).
    # Multipliers are below 2^31, so every product fits in int64 without overflow.
    x = x & _M32
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & _M32
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & _M32
    x = ((x ^ (x >> 15)) * 0x7FEB352D) & _M32
    return x ^ (x >> 16)


class DefaultSampler(Sampler):
    """The sampler an integer seed becomes: the backend's native generator.

    NumPy uses PCG64, PyTorch a ``torch.Generator`` on the target device, JAX
    ``jax.random`` (with a key from the seed, or the key itself), CuPy a Philox4x32-10
    generator on the target device; other namespaces use :class:`PortableSampler`. Each
    draw builds a fresh generator from ``(seed, stream)``, so nothing is stateful.

    Parameters
    ----------
    seed : int or JAX PRNG key
        The seed; a JAX key (possibly traced under ``jax.jit``) is used as is.
    stream : tuple of int, optional
        Path of :meth:`fold_in` calls that led here.
    """

    def __init__(self, seed: int | Any, stream: tuple[int, ...] = ()) -> None:
        self.seed = seed if _dispatch.is_jax_key(seed) else _check_int_seed(seed)
        self.stream = tuple(int(s) for s in stream)

    def __repr__(self) -> str:
        return f"DefaultSampler(seed={self.seed!r}, stream={self.stream})"

    def fold_in(self, data: int) -> DefaultSampler:
        return DefaultSampler(self.seed, (*self.stream, int(data)))

    def _draw(self, kind: str, shape: tuple[int, ...], xp: Any, dtype: Any, device: Any) -> Array:
        if _dispatch.has_native_random(xp):
            return _dispatch.native_random(
                xp, kind, shape, dtype=dtype, device=device, seed=self.seed, stream=self.stream
            )
        if not isinstance(self.seed, int):
            raise TypeError(
                f"a JAX key cannot seed arrays of the {_dispatch.backend_name(xp)!r} namespace"
            )
        portable = PortableSampler(self.seed, self.stream)
        return getattr(portable, kind)(shape, xp=xp, dtype=dtype, device=device)

    def normal(self, shape: tuple[int, ...], *, xp: Any, dtype: Any, device: Any = None) -> Array:
        return self._draw("normal", shape, xp, dtype, device)

    def uniform(self, shape: tuple[int, ...], *, xp: Any, dtype: Any, device: Any = None) -> Array:
        return self._draw("uniform", shape, xp, dtype, device)


def as_sampler(seed: int | Sampler | Any) -> Sampler:
    """Turn a ``seed`` argument into a :class:`Sampler`.

    Parameters
    ----------
    seed : int, Sampler or JAX PRNG key
        An int becomes a :class:`DefaultSampler`; a sampler is returned as is; a JAX key
        becomes a key-based :class:`DefaultSampler`.

    Returns
    -------
    Sampler

    Examples
    --------
    >>> from sketchlinalg import as_sampler
    >>> as_sampler(3)
    DefaultSampler(seed=3, stream=())
    """
    if isinstance(seed, Sampler):
        return seed
    if _dispatch.is_jax_key(seed):
        return DefaultSampler(seed)
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return DefaultSampler(_check_int_seed(seed))
    raise TypeError(
        "seed must be a non-negative int, a sketchlinalg.Sampler or a JAX PRNG key; "
        f"got {type(seed).__name__}"
    )


def _check_int_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(seed)


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out
