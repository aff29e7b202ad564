"""``jsonl`` sink: one JSON object per result and line (see :func:`edgeseg.sinks.record.result_record`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.errors import ConfigError, SinkError
from edgeseg.fields import meta
from edgeseg.frame import Result
from edgeseg.instances import MASK_FORMATS, MaskFormat
from edgeseg.sinks.base import SinkContext, SinkReport, SinkSpec, check_output_path
from edgeseg.sinks.record import result_record


@dataclass(frozen=True)
class JsonlSinkConfig:
    """JSON lines output."""

    path: Path | None = field(default=None, metadata=meta("Write one JSON line per frame here (null: off)."))
    mask_format: str = field(default="rle", metadata=meta("How masks are written.", choices=MASK_FORMATS))


class JsonlSink:
    """Appends one line per result to ``path``, so a reader (``tail -f``) sees it at once.

    Lines are written whole or not at all: a write that fails half-way (a full disk) is cut back to the last
    complete line before the error is raised, so the file never ends in a partial record. ``close`` fsyncs.
    """

    takes_final_events = True  # the pipeline's last record: the events made at shutdown (``final``)

    def __init__(
        self, path: Path, mask_format: MaskFormat = "rle", class_names: tuple[str, ...] = ()
    ) -> None:
        self.path = check_output_path(path, "sinks.jsonl.path")
        self.mask_format: MaskFormat = mask_format
        self.class_names = class_names
        self._seq = 0
        self.written = 0
        self._size = 0  # bytes of complete lines
        self._error: str | None = None
        try:
            self._fd: int | None = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644
            )
        except OSError as exc:
            raise ConfigError(f"sinks.jsonl.path: cannot create {self.path}: {exc.strerror}") from None

    def send(self, result: Result) -> None:
        record = result_record(result, self._seq, self.mask_format, self.class_names)
        self._seq += 1  # a record that could not be written leaves a gap a reader can see
        self._write((json.dumps(record, separators=(",", ":")) + "\n").encode())
        self.written += 1

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise SinkError(f"{self.path}: already closed")
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

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        except OSError as exc:
            self._error = f"cannot sync {self.path}: {exc.strerror}"
            raise SinkError(self._error) from None
        finally:
            os.close(fd)

    def describe(self) -> str:
        return f"{self.path} (JSON lines)"

    def report(self) -> SinkReport:
        return SinkReport((f"jsonl: {self.written} results written to {self.path}",))


def create(section: JsonlSinkConfig, ctx: SinkContext) -> JsonlSink | None:
    if section.path is None:
        return None
    mask_format: MaskFormat = section.mask_format  # type: ignore[assignment]
    return JsonlSink(section.path, mask_format, ctx.class_names)


SPEC = SinkSpec("jsonl", JsonlSinkConfig, create, "JSON lines output.")
