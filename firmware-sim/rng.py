"""Counter-based randomness: every random number is a pure function of a key and a counter.

Nothing here has state. A sensor's noise at sample ``n`` is ``normal(at(series_key, n))``
whatever window is being generated, which is what makes chunked, one-shot and real-time
generation agree bit for bit.

* ``stream_key(*parts)`` (Python) turns names into a 64-bit key: ``stream_key(seed,
  "oc-001", "oc-001-sonde", "salinity")``.
* ``substream(key, tag)`` derives an independent key inside a kernel (one per latent).
* ``at(key, n)`` is the n-th output of the SplitMix64 sequence seeded with ``key``
  (Steele, Lea & Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014):
  the state after n steps is ``key + n * golden``, so the n-th output needs no loop.
* ``uniform``, ``normal`` turn a 64-bit hash into a float; ``value_noise`` is smooth
  noise in time (random knots every ``period_ms``, C1 interpolation between them).

Counters are meant to be non-negative (sample indices, day numbers since 1970).
"""

from __future__ import annotations

import hashlib

import numpy as np
from numba import njit

from ._jit import PURE

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# Shift counts typed uint64: uint64 >> int64 would make Numba promote to float.
_S11, _S27, _S30, _S31, _S32 = (np.uint64(n) for n in (11, 27, 30, 31, 32))
_LOW32 = np.uint64(0xFFFFFFFF)
_TWO_PI = 2.0 * np.pi
_SQRT3 = np.sqrt(3.0)


def stream_key(*parts: object) -> np.uint64:
    """A 64-bit key named by ``parts`` (their ``str``), stable across runs and machines."""
    text = "\x1f".join(str(part) for part in parts).encode()
    return np.uint64(int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little"))


@njit(**PURE)
def splitmix64(x):
    """The SplitMix64 finaliser: a bijective avalanche of a uint64."""
    z = x
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(**PURE)
def at(key, n):
    """The ``n``-th output of the SplitMix64 stream seeded with ``key``."""
    return splitmix64(key + (np.uint64(n) + np.uint64(1)) * GOLDEN)


@njit(**PURE)
def substream(key, tag):
    """An independent key for one use (``tag``: a small constant) of a parent key."""
    return splitmix64(key ^ (np.uint64(tag) * _MIX2))


@njit(**PURE)
def uniform(h):
    """A float in [0, 1) from the top 53 bits of a hash."""
    return (h >> _S11) * (1.0 / 9007199254740992.0)


@njit(**PURE)
def normal(h):
    """A standard normal from one hash (Box-Muller on its two 32-bit halves)."""
    u1 = ((h >> _S32) + 0.5) * (1.0 / 4294967296.0)  # never 0: log stays finite
    u2 = (h & _LOW32) * (1.0 / 4294967296.0)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(_TWO_PI * u2)


@njit(**PURE)
def value_noise(key, t_ms, period_ms):
    """Smooth noise of unit variance at the knots: uniform knots every ``period_ms``,
    joined by smoothstep, so the curve and its slope are continuous."""
    x = t_ms / period_ms
    cell = np.floor(x)
    f = x - cell
    k = np.int64(cell)
    a = (2.0 * uniform(at(key, k)) - 1.0) * _SQRT3
    b = (2.0 * uniform(at(key, k + 1)) - 1.0) * _SQRT3
    return a + (b - a) * (f * f * (3.0 - 2.0 * f))


@njit(**PURE)
def normals(key, first, count, out):
    """``out[i] = normal(at(key, first + i))``: a block of one stream (for tests, bench)."""
    for i in range(count):
        out[i] = normal(at(key, first + i))
