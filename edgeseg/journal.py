"""Lines for a person at a terminal, or for journald when systemd connected stderr/stdout to the journal.

systemd sets ``$JOURNAL_STREAM`` to the ``device:inode`` of the stream it connected (systemd.exec(5)); a
stream that matches it goes to journald, which takes a ``<N>`` prefix on each line as its syslog priority
(``<3>`` error ... ``<7>`` debug; sd-daemon(3)) and stamps time, unit and process itself. Such lines get the
priority and nothing else of ours, so ``journalctl -p warning -u edgeseg@x`` shows warnings and errors only.
Anywhere else a line reads ``edgeseg: ...`` (log records ``edgeseg: WARNING: ...``).

The command's own lines on stderr (log records, progress, its messages) never wait long on whoever reads it:
the thread writing one may be the main thread, which also acts on SIGTERM and feeds the watchdog, or a stage
of the pipeline. A reader that stopped reading (a stuck log shipper, a parent that reads only at the end)
fills a pipe in 64 KB; from then on lines are left out, counted, and the count is said when the stream takes
lines again and in the run's summary (:func:`left_out`). The summary on stdout is written the same way, so a
run ends whoever reads its stdout; what it left out of the summary, stderr says (:func:`summary_left_out`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import select
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

from edgeseg.errors import StdoutError

PREFIX = "edgeseg: "
# the longest a line waits for a stream that was taking lines: a reader that is alive drains a pipe in far
# less; once one line was left out, the next ones do not wait at all until the stream takes one again
PATIENCE_S = 1.0
# characters written at a time: at most PIPE_BUF bytes in UTF-8, which a pipe with room takes whole
CHUNK = select.PIPE_BUF // 4


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


class _Outlet:
    """The state of a stream of the process as the lines written to it found it (one for all threads):
    ``name`` the stream's, ``lines`` what its lines are, for the notice of those left out."""

    def __init__(self, name: str = "stderr", lines: str = "lines of log and progress") -> None:
        self.name, self.lines = name, lines
        self.lock = threading.Lock()
        self.stuck = False  # the last line was left out: the next ones do not wait
        self.unsaid = 0  # lines left out since the last one written
        self.cut = False  # a line was left out part-way: the next text starts on a new line
        self.total = 0
        self.why = f"nothing was reading {name}"  # why the last line left out was, for the notice


_outlet = _Outlet()  # stderr's: the command's log, progress and messages (put, say)
_summary_outlet = _Outlet("stdout", "lines of the run's summary")  # stdout's (echo)


def _takes(fd: int, wait_s: float) -> bool:
    """Whether the stream at ``fd`` takes a chunk now, or within ``wait_s``: a pipe with room for PIPE_BUF
    bytes, a socket with room in its buffer, a terminal not held by ^S; a file always does. A broken stream
    counts as taking it, so that the write says what is wrong."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(round(wait_s * 1000)))


def put(stream: TextIO, text: str, outlet: _Outlet | None = None) -> None:
    """Write ``text`` (whole lines, or a terminal's line rewritten in place) to ``stream`` unless that would
    wait on its reader (see the module's docstring); thread-safe. ``outlet``: the stream's state (None:
    stderr's)."""
    try:
        fd: int | None = stream.fileno()
    except (OSError, ValueError, AttributeError):
        fd = None  # a stream in memory never waits
    out = _outlet if outlet is None else outlet
    with out.lock:
        if fd is not None and not _takes(fd, 0.0 if out.stuck else PATIENCE_S):
            out.stuck, out.unsaid, out.total = True, out.unsaid + 1, out.total + 1
            out.why = f"nothing was reading {out.name}"
            return
        out.stuck = False
        if out.unsaid:
            notice = f"{out.why}: {out.lines} left out here: {out.unsaid}"
            journal = to_journal(stream)
            shown = journal_lines(notice, logging.WARNING) if journal else f"{PREFIX}WARNING: {notice}"
            text = ("\n" if out.cut else "") + shown + "\n" + text
            out.unsaid, out.cut = 0, False
        for start in range(0, len(text), CHUNK):
            if start and fd is not None and not _takes(fd, 0.0):
                out.stuck, out.cut, out.unsaid, out.total = True, True, 1, out.total + 1
                out.why = f"nothing was reading {out.name}"
                return
            try:
                stream.write(text[start : start + CHUNK])
                stream.flush()
            except BrokenPipeError:
                if out is not _outlet:
                    raise  # stdout's reader leaving ends a listing (see cli.main)
                # stderr's reader left for good (a log shipper that died, `2>&1 | head -1`): its lines are
                # left out and counted as for one that stopped reading, and the run goes on to close its
                # outputs and to its exit status instead of dying of the first line it logs
                drop(stream)
                out.stuck, out.cut, out.unsaid, out.total = True, start > 0, 1, out.total + 1
                out.why = f"nothing was reading {out.name}"
                return
            except OSError as exc:
                if out is not _outlet:
                    raise  # stdout's: CheckedStdout says so
                # stderr on a full disk (`>> run.log 2>&1`): the run died of the first line it logged, its
                # outputs unfinished. The line is left out and counted as for a reader that stopped, and the
                # next ones are tried (the disk may take them again)
                out.stuck, out.cut, out.unsaid, out.total = True, start > 0, 1, out.total + 1
                out.why = f"stderr could not be written ({exc.strerror})"
                return


class CheckedStdout(io.TextIOBase):
    """``stream`` (stdout) whose failed writes are a :class:`StdoutError` naming it: a command's output to a
    full disk (``> /dev/full``) was a traceback, from whichever line (ours, pycocotools') or flush failed,
    or an "Exception ignored" and status 120 from the flush at the exit. A reader that left stays a
    BrokenPipeError (see :func:`edgeseg.cli.main`)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        with self._checked():
            return self.stream.write(text)

    def flush(self) -> None:
        with self._checked():
            self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding

    @contextlib.contextmanager
    def _checked(self) -> Iterator[None]:
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise StdoutError(f"cannot write to stdout: {exc.strerror}") from None


def drop(stream: TextIO) -> None:
    """Point ``stream``, whose reader has left for good (a closed pipe), at /dev/null: what it still
    buffers, and what comes after, goes nowhere, instead of failing at every write and at the exit's
    flush."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def left_out() -> int:
    """Lines :func:`put` has left out of stderr in this process."""
    with _outlet.lock:
        return _outlet.total


def left_out_why() -> str:
    """Why the last line :func:`put` left out of stderr was: nothing read it, or a write failed (a full
    disk)."""
    with _outlet.lock:
        return _outlet.why


def summary_left_out() -> int:
    """Lines :func:`echo` has left out of stdout in this process."""
    with _summary_outlet.lock:
        return _summary_outlet.total


class Handler(logging.Handler):
    """Log records to ``stream`` through :func:`put`."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            put(self.stream, self.format(record) + "\n")
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def say(text: str, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Write one message of the command's own (start-up line, reload, error) to stderr (or ``stream``)."""
    out = sys.stderr if stream is None else stream
    line = journal_lines(text, level) if to_journal(out) else PREFIX + text
    put(out, line + "\n")


def echo(text: str, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Write a line of output (the run's summary) to stdout (or ``stream``), as is on a terminal, unless
    that would wait on its reader as :func:`put` has it: a run whose stdout nobody reads (a parent that
    reads stderr only, a stalled journal) ends all the same, and says how many lines it left out
    (:func:`summary_left_out`)."""
    out = sys.stdout if stream is None else stream
    put(out, (journal_lines(text, level) if to_journal(out) else text) + "\n", _summary_outlet)


class Formatter(logging.Formatter):
    """``edgeseg: WARNING: message`` on a terminal; ``<4>message`` (every line) into the journal."""

    def __init__(self, journal: bool) -> None:
        super().__init__("%(message)s" if journal else PREFIX + "%(levelname)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return journal_lines(text, record.levelno) if self.journal else text
