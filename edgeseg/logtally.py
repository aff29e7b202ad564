"""Counts of what a stage left out to keep its cost bounded, said in the log at most once a minute.

A map of noise can make every frame's post-processing drop or skip something; a line per frame would flood
the journal of a device that runs for months, and silence would hide it. So each kind is counted, and one
warning line gives the counts since the last line. The process also keeps every kind's counts since it
started (:func:`totals`), so that a run's summary can say what was left out over the whole run
(:func:`since`).
"""

from __future__ import annotations

import logging
import math
import threading
import time

EVERY_S = 60.0
# every tally's counts since the process started, by message (tallies of one message, the trackers of two
# pipelines say, add up)
_totals: dict[str, list[int]] = {}
_totals_lock = threading.Lock()


def said(n: int) -> bool:
    """Whether the ``n``-th occurrence of one failure gets a log line: the first three, then one a hundred (a
    condition that lasts, an ACL or a busy scene, would log a line for every result for as long)."""
    return n <= 3 or n % 100 == 0


class LogTally:
    """Sums ``counts`` given to :meth:`add` and logs ``message % sums`` at most every ``every_s`` seconds.

    Thread-safe: the pipeline's stages and a user's own threads may share one."""

    def __init__(self, log: logging.Logger, message: str, every_s: float = EVERY_S) -> None:
        self._log, self._message, self._every = log, message, every_s
        self._lock = threading.Lock()
        self._sums: list[int] = []
        self._last = -math.inf

    def add(self, *counts: int) -> None:
        """Count ``counts`` (each its own figure of the message); nothing happens when they are all 0."""
        if not any(counts):
            return
        with _totals_lock:
            total = _totals.setdefault(self._message, [0] * len(counts))
            total[:] = [a + b for a, b in zip(total, counts, strict=True)]
        with self._lock:
            self._sums = [a + b for a, b in zip(self._sums or [0] * len(counts), counts, strict=True)]
            now = time.monotonic()
            if now - self._last < self._every:
                return
            sums, self._sums, self._last = self._sums, [], now
        self._log.warning(self._message, *sums)


def totals() -> dict[str, tuple[int, ...]]:
    """Every message's counts so far in this process (a mark for :func:`since`)."""
    with _totals_lock:
        return {message: tuple(counts) for message, counts in _totals.items()}


def since(mark: dict[str, tuple[int, ...]]) -> list[str]:
    """Each message with what was counted after ``mark`` (:func:`totals` then), as the log line says it;
    none for a message that counted nothing since."""
    lines = []
    for message, counts in totals().items():
        before = mark.get(message, (0,) * len(counts))
        more = tuple(a - b for a, b in zip(counts, before, strict=True))
        if any(more):
            lines.append(message % more)
    return lines
