"""Numba settings for every kernel of the simulator, in one place.

``JIT`` is what each ``@njit(**JIT)`` gets:

* ``cache``: compiled kernels are kept in ``__pycache__``; a cold start compiles for
  ~20 s, a warm one loads in well under a second.
* no ``fastmath``: a value must be a function of (seed, series, time) only, so the same
  sample has to come out bit-identical whether it is computed alone (``value_at``) or in
  the middle of a long vectorised loop. Re-associated or approximate maths would break
  that.
* ``error_model="numpy"``: a division by zero gives inf/nan instead of raising, which
  keeps the kernels branch-free; the physics never divides by zero on purpose.
* ``PURE`` kernels also leave out reference counting (see below).

Numba keys each cached kernel on its *own* source file only, so editing ``rng.py`` would
leave a stale ``physics.py`` kernel that inlined the old code. ``_drop_stale_caches``
fingerprints all kernel modules at import and clears this package's cache files when any
of them changed.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

JIT: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy"}
# For kernels that never allocate: without Numba's reference counting, passing arrays
# (parameters, keys, the day table) into a small function costs nothing, where the atomic
# increments and decrements would cost ~10x the function's own work. Such a kernel must
# not create arrays (Numba refuses to compile one that does).
PURE: dict[str, Any] = {**JIT, "_nrt": False}

_KERNEL_MODULES = ("_jit.py", "rng.py", "astro.py", "physics.py", "render.py")
_STAMP = "sim-kernels.stamp"

log = logging.getLogger(__name__)


def _drop_stale_caches() -> None:
    here = Path(__file__).resolve().parent
    digest = hashlib.blake2b(digest_size=16)
    for name in _KERNEL_MODULES:
        path = here / name
        if path.exists():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    fingerprint = digest.hexdigest()
    cache_dir = here / "__pycache__"
    stamp = cache_dir / _STAMP
    try:
        if stamp.exists() and stamp.read_text() == fingerprint:
            return
        cache_dir.mkdir(exist_ok=True)
        for pattern in ("*.nbi", "*.nbc"):
            for stale in cache_dir.glob(pattern):
                stale.unlink(missing_ok=True)
        stamp.write_text(fingerprint)
        log.debug("numba caches of tidefield.sim cleared (kernel sources changed)")
    except OSError:  # a read-only install: Numba falls back to its user-wide cache
        pass


_drop_stale_caches()
