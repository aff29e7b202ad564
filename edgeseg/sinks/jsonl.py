"""``jsonl`` sink: one JSON object per result and line (see :func:`edgeseg.sinks.record.result_record`)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.errors import ConfigError, SinkError
from edgeseg.fields import meta
from edgeseg.frame import Result
from edgeseg.instances import MASK_FORMATS, MaskFormat
from edgeseg.sinks.base import SinkContext, SinkReport, SinkSpec, check_output_path
from edgeseg.sinks.record import encoded_record

log = logging.getLogger(__name__)

MIN_ROTATE_BYTES = 4096
_TAIL_CHUNK = 65536


@dataclass(frozen=True)
class JsonlSinkConfig:
    """JSON lines output."""

    path: Path | None = field(default=None, metadata=meta("Write one JSON line per frame here (null: off)."))
    mask_format: str = field(default="rle", metadata=meta("How masks are written.", choices=MASK_FORMATS))
    max_bytes: int | None = field(
        default=None,
        metadata=meta(
            "Make the file a rolling log, as a service needs: a start continues it, and a line that would "
            "take it past this size starts a new one, the full one becoming PATH.1, the one before PATH.2, "
            "... (null: one file of any size, emptied at each start).",
            ge=MIN_ROTATE_BYTES,
        ),
    )
    keep: int = field(
        default=3,
        metadata=meta("With max_bytes: the full files kept beside PATH (PATH.1 ... PATH.keep).", ge=1),
    )


def rotated(path: Path, k: int) -> Path:
    """The ``k``-th newest full file of a rolling ``path`` (``out.jsonl.1``, ``out.jsonl.2``, ...)."""
    return path.with_name(f"{path.name}.{k}")


class JsonlSink:
    """Appends one line per result to ``path``, so a reader (``tail -F``) sees it at once.

    Lines are written whole or not at all: a write that fails half-way (a full disk) is cut back to the last
    complete line before the error is raised, so the file never ends in a partial record. ``close`` fsyncs.

    With ``max_bytes`` the file is a rolling log that a service can write for months in bounded space: a
    start continues the file (cutting back a last line that a crash left partial), and a line that would take
    it past ``max_bytes`` goes to a new file, the full one renamed ``PATH.1`` after fsync, and the older ones
    one number up, ``keep`` of them kept. A line is never split: one longer than ``max_bytes`` gets a file of
    its own. A rotation that fails (the folder became read-only, say) loses nothing: lines go on into the
    current file, and the failure is logged and reported.
    """

    takes_final_events = True  # the pipeline's last record: the events made at shutdown (``final``)

    def __init__(
        self,
        path: Path,
        mask_format: MaskFormat = "rle",
        class_names: tuple[str, ...] = (),
        max_bytes: int | None = None,
        keep: int = 3,
    ) -> None:
        self.path = check_output_path(path, "sinks.jsonl.path")
        self.mask_format: MaskFormat = mask_format
        self.class_names = class_names
        self.max_bytes = max_bytes
        self.keep = keep
        self._seq = 0
        self.written = 0
        self.rotations = 0
        self._rotate_error: str | None = None
        self._rotate_failures = 0
        self._rotate_at = max_bytes  # the size a line may not take the file past, then a rotation
        self._size = 0  # bytes of complete lines
        self._error: str | None = None
        self.deleted = 0  # results written into a file deleted under the run: gone once it is closed
        rolling = max_bytes is not None
        try:
            # (a rolling file is read back at the start, for a last line a crash left partial)
            mode = os.O_RDWR if rolling else os.O_WRONLY | os.O_TRUNC
            fd = os.open(self.path, mode | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"sinks.jsonl.path: cannot create {self.path}: {exc.strerror}") from None
        self._fd: int | None = fd
        if rolling:
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
                self._size = _complete_lines_end(fd, end)
                os.ftruncate(fd, self._size)
                os.lseek(fd, self._size, os.SEEK_SET)
            except OSError as exc:
                os.close(fd)
                raise ConfigError(f"sinks.jsonl.path: cannot continue {self.path}: {exc.strerror}") from None
            if self._size < end:  # a run that ended mid-line (a crash, a power cut): its last line is partial
                log.warning(
                    "jsonl: %s ended in a partial line (%d bytes), cut off", self.path, end - self._size
                )

    def send(self, result: Result) -> None:
        seq, self._seq = self._seq, self._seq + 1  # a record that could not be written leaves a gap
        text = encoded_record(result, self.mask_format, self.class_names)
        self._write(f'{{"seq":{seq},{text}\n'.encode())
        self.written += 1

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise SinkError(f"{self.path}: already closed")
        if self._rotate_at is not None and self._size and self._size + len(data) > self._rotate_at:
            self._rotate()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._size)
                os.lseek(self._fd, self._size, os.SEEK_SET)
            except OSError:
                pass  # the line may stay partial; the error below is reported either way
            self._error = f"cannot write {self.path}: {exc.strerror}"
            raise SinkError(self._error) from None
        self._size += len(data)

    def _rotate(self) -> None:
        """The current file becomes ``PATH.1`` (fsynced), the older ones one number up; a new ``PATH``."""
        assert self._fd is not None
        moved = False
        try:
            os.fsync(self._fd)
            # PATH deleted (space freed by hand) or moved away (logrotate) under the open file: nothing to
            # rename, and writing on into that file would grow it past max_bytes for good; a new PATH it is
            if self.path.exists():
                for k in range(self.keep - 1, 0, -1):
                    if rotated(self.path, k).exists():
                        os.replace(rotated(self.path, k), rotated(self.path, k + 1))
                os.replace(self.path, rotated(self.path, 1))
                moved = True
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._rotate_failures += 1
            self._rotate_error = f"cannot rotate {self.path}: {exc.strerror or exc}"
            if moved:  # the current file keeps its name, so a reader of PATH misses nothing
                try:
                    os.replace(rotated(self.path, 1), self.path)
                except OSError as back:
                    where = rotated(self.path, 1)
                    self._rotate_error += f", nor rename it back ({back.strerror}): lines go on into {where}"
            if self._rotate_failures == 1:
                log.warning("jsonl: %s; lines go on into the current file", self._rotate_error)
            # tried again once the file has grown by max_bytes more, not at every line (each try fsyncs)
            self._rotate_at = self._size + (self.max_bytes or 0)
            return
        os.close(self._fd)
        self._fd, self._size, self._rotate_at = fd, 0, self.max_bytes
        self.rotations += 1
        _sync_folder(self.path.parent)

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        except OSError as exc:
            if (
                exc.errno != errno.EINVAL
            ):  # (EINVAL: a FIFO or a terminal, that another process reads: no disk)
                self._error = f"cannot sync {self.path}: {exc.strerror}"
                raise SinkError(self._error) from None
        finally:
            self._count_deleted(fd)
            os.close(fd)

    def _count_deleted(self, fd: int) -> None:
        """A file deleted while open (``rm``, a cleanup job) takes writes without an error and vanishes at its
        close: the run's one file then holds none of its results. (A rolling log's lines are dropped by
        design, by ``keep``, and one deleted by hand to free space starts a new file: no loss there.)"""
        with contextlib.suppress(OSError):
            if self.max_bytes is None and self.written and os.fstat(fd).st_nlink == 0:
                self.deleted = self.written
                log.warning(
                    "jsonl: %s was deleted during the run: its %d results are lost", self.path, self.written
                )

    def describe(self) -> str:
        if self.max_bytes is None:
            return f"{self.path} (JSON lines)"
        return f"{self.path} (JSON lines, a new file past {self.max_bytes} bytes, {self.keep} full kept)"

    def report(self) -> SinkReport:
        line = f"jsonl: {self.written} results written to {self.path}"
        if self.max_bytes is not None:
            line += f" ({self.rotations} rotations)"
        lines = [line]
        if self._rotate_error is not None:
            lines.append(
                f"jsonl: {self._rotate_failures} rotations failed (last: {self._rotate_error}); "
                "the file grew past max_bytes, no line was lost"
            )
        if self.deleted:
            lines.append(f"jsonl: LOST {self.deleted} results: {self.path} was deleted during the run")
        return SinkReport(tuple(lines), self.deleted)


def _complete_lines_end(fd: int, end: int) -> int:
    """The size of the complete lines of a file of ``end`` bytes: up to its last newline (0 if none)."""
    pos = end
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        chunk = os.pread(fd, pos - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        pos = start
    return 0


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that renames in it survive a power cut (best effort: not every filesystem can)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def create(section: JsonlSinkConfig, ctx: SinkContext) -> JsonlSink | None:
    if section.path is None:
        return None
    mask_format: MaskFormat = section.mask_format  # type: ignore[assignment]
    return JsonlSink(section.path, mask_format, ctx.class_names, section.max_bytes, section.keep)


SPEC = SinkSpec("jsonl", JsonlSinkConfig, create, "JSON lines output.")
