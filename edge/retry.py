"""Exponential backoff with jitter, shared by the driver threads and the publisher."""

from __future__ import annotations

import random

_rng = random.Random()


def backoff(attempt: int, *, first: float, cap: float) -> float:
    """Seconds to wait before try number ``attempt + 1`` (``attempt`` >= 1 failures so far).

    Doubles from ``first`` up to ``cap``, then takes a random 50-100 % of it, so a fleet
    of agents that lost the same broker does not come back in lockstep.
    """
    ceiling = min(cap, first * 2 ** min(max(attempt - 1, 0), 32))
    return float(ceiling * _rng.uniform(0.5, 1.0))
