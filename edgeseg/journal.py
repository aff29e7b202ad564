"""Lines for a person at a terminal, or for journald when systemd connected stderr/stdout to the journal.

systemd sets ``$JOURNAL_STREAM`` to the ``device:inode`` of the stream it connected (systemd.exec(5)); a
stream that matches it goes to journald, which takes a ``<N>`` prefix on each line as its syslog priority
(``<3>`` error ... ``<7>`` debug; sd-daemon(3)) and stamps time, unit and process itself. Such lines get the
priority and nothing else of ours, so ``journalctl -p warning -u edgeseg@x`` shows warnings and errors only.
Anywhere else a line reads ``edgeseg: ...`` (log records ``edgeseg: WARNING: ...``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

PREFIX = "edgeseg: "


def priority(level: int) -> int:
    """The syslog priority of a logging level."""
    if level >= logging.CRITICAL:
        return 2
    if level >= logging.ERROR:
        return 3
    if level >= logging.WARNING:
        return 4
    if level >= logging.INFO:
        return 6
    return 7


def to_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the one systemd connected to the journal (``$JOURNAL_STREAM`` matches it)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def journal_lines(text: str, level: int) -> str:
    """``text`` with every line prefixed by the priority (journald reads each line as one entry)."""
    mark = f"<{priority(level)}>"
    return "\n".join(mark + line for line in (text.splitlines() or [""]))


def say(text: str, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Write one message of the command's own (start-up line, reload, error) to stderr (or ``stream``)."""
    out = sys.stderr if stream is None else stream
    line = journal_lines(text, level) if to_journal(out) else PREFIX + text
    out.write(line + "\n")
    out.flush()


def echo(text: str, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Write a line of output (the run's summary) to stdout (or ``stream``), as is on a terminal."""
    out = sys.stdout if stream is None else stream
    out.write((journal_lines(text, level) if to_journal(out) else text) + "\n")
    out.flush()


class Formatter(logging.Formatter):
    """``edgeseg: WARNING: message`` on a terminal; ``<4>message`` (every line) into the journal."""

    def __init__(self, journal: bool) -> None:
        super().__init__("%(message)s" if journal else PREFIX + "%(levelname)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return journal_lines(text, record.levelno) if self.journal else text
