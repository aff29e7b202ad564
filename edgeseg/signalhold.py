"""Holding SIGINT, SIGTERM and SIGHUP from the start of the ``edgeseg`` command until it can handle them
(see :mod:`edgeseg.launch`). Its own module, importing nothing of edgeseg's, so that both ways in can hold
them first: :mod:`edgeseg.launch` and :func:`edgeseg.cli.entry`, the console script of installs made before
``edgeseg.launch`` existed."""

from __future__ import annotations

import signal
from types import FrameType

_HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Held:
    """Records SIGINT, SIGTERM and SIGHUP instead of acting on them, until the command hands them over."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self._previous = {s: signal.signal(s, self._record) for s in _HELD}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)

    def stops(self) -> list[int]:
        """What came before the command could stop, first first; a SIGHUP is left out: the pipeline file is
        read after it, so there is nothing to reload yet."""
        return [s for s in self.signals if s != signal.SIGHUP]

    def release(self) -> None:
        """For a command that handles no signal of its own: the signals' usual actions back, then each one
        held delivered to them, as if it had come now."""
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        for signum in self.signals:
            signal.raise_signal(signum)
