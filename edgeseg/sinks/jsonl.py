"""``jsonl`` sink: one JSON object per result and line (see :func:`edgeseg.sinks.record.result_record`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.errors import ConfigError
from edgeseg.fields import meta
from edgeseg.frame import Result
from edgeseg.instances import MASK_FORMATS, MaskFormat
from edgeseg.sinks.base import SinkContext, SinkSpec, check_output_path
from edgeseg.sinks.record import result_record


@dataclass(frozen=True)
class JsonlSinkConfig:
    """JSON lines output."""

    path: Path | None = field(default=None, metadata=meta("Write one JSON line per frame here (null: off)."))
    mask_format: str = field(default="rle", metadata=meta("How masks are written.", choices=MASK_FORMATS))


class JsonlSink:
    """Appends one line per result to ``path`` and flushes it, so a reader (``tail -f``) sees it at once."""

    def __init__(
        self, path: Path, mask_format: MaskFormat = "rle", class_names: tuple[str, ...] = ()
    ) -> None:
        self.path = check_output_path(path, "sinks.jsonl.path")
        if mask_format not in ("rle", "polygon", "none"):
            raise ConfigError(
                f"sinks.jsonl.mask_format: must be 'rle', 'polygon' or 'none', got {mask_format!r}"
            )
        self.mask_format: MaskFormat = mask_format
        self.class_names = class_names
        self._seq = 0
        self._file = self.path.open("w", encoding="utf-8")

    def send(self, result: Result) -> None:
        record = result_record(result, self._seq, self.mask_format, self.class_names)
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        self._seq += 1

    def close(self) -> None:
        self._file.close()


def create(section: JsonlSinkConfig, ctx: SinkContext) -> JsonlSink | None:
    if section.path is None:
        return None
    mask_format: MaskFormat = section.mask_format  # type: ignore[assignment]
    return JsonlSink(section.path, mask_format, ctx.class_names)


SPEC = SinkSpec("jsonl", JsonlSinkConfig, create, "JSON lines output.")
