"""Counts of what a stage left out to keep its cost bounded, said in the log at most once a minute.

A map of noise can make every frame's post-processing drop or skip something; a line per frame would flood
the journal of a device that runs for months, and silence would hide it. So each kind is counted, and one
warning line gives the counts since the last line.
"""

from __future__ import annotations

import logging
import math
import threading
import time

EVERY_S = 60.0


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
        with self._lock:
            self._sums = [a + b for a, b in zip(self._sums or [0] * len(counts), counts, strict=True)]
            now = time.monotonic()
            if now - self._last < self._every:
                return
            sums, self._sums, self._last = self._sums, [], now
        self._log.warning(self._message, *sums)
