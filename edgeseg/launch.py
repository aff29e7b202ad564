"""The ``edgeseg`` command's first module (the console script's and ``python -m edgeseg``'s): it holds the
stop signals and SIGHUP from the start of the process, and only then imports the command.

That import (numpy, OpenCV, onnxruntime: most of a second here, seconds on a Raspberry Pi) comes before the
command can handle a signal; under the signals' own actions a SIGTERM in it ended the process by that
signal (README's exit table says 0), SIGINT printed a KeyboardInterrupt traceback, and SIGHUP (a ``systemctl
reload`` just after a start) ended the service, which systemd takes for a clean exit and does not restart.
This module imports nothing heavy, so a library user who imports ``edgeseg`` keeps the signals as they were.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import NoReturn

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


def entry() -> NoReturn:
    """The ``edgeseg`` command."""
    held = Held()
    from edgeseg.cli import entry as command

    command(held)
