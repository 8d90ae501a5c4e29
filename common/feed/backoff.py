"""Reconnect delays as a pure generator (no clock, no sleeping: the caller sleeps what it yields).

The delay before attempt *n* (from 0) is ``min(cap, initial * factor**n)`` scaled by a random
factor in ``(1 - jitter, 1]``, so many feeds restarting at once do not reconnect in lock step,
and a delay is never more than the cap. The caller makes a fresh generator (a reset) only after a
synced book was published: a server that accepts connections and then drops them keeps the
delays growing instead of causing a hot loop.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff(*, initial: float = 0.5, factor: float = 2.0, cap: float = 30.0, jitter: float = 0.5,
            rng: random.Random | None = None) -> Iterator[float]:
    """Yield jittered, capped, exponentially growing delays in seconds, forever.

    ``jitter`` is the fraction of each delay that may be taken off at random (0 = none, 1 = full
    jitter). Raises ``ValueError`` on nonsensical parameters.
    """
    if initial <= 0 or factor < 1 or cap < initial or not 0 <= jitter <= 1:
        raise ValueError(f"bad backoff parameters initial={initial} factor={factor} cap={cap} jitter={jitter}")
    r = rng or random.Random()
    base = initial
    while True:
        yield base * (1.0 - jitter * r.random())
        base = min(cap, base * factor)
