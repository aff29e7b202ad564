"""Reconnect delays, shared by live sources and the MQTT publisher."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator


def backoff_delays(
    initial_s: float, max_s: float, jitter: float = 0.0, rand: Callable[[], float] = random.random
) -> Iterator[float]:
    """Reconnect delays: ``initial_s``, doubling each attempt, capped at ``max_s`` (endless).

    With ``jitter`` j in (0, 1], each delay is scaled by a uniform factor in ``[1 - j, 1]``, so a fleet of
    devices that lost the same broker does not come back in lockstep.
    """
    delay = initial_s
    while True:
        yield min(delay, max_s) * (1.0 - jitter * rand())
        delay = min(delay * 2, max_s)
