"""Sinks: where results go. ``SINKS`` maps each sink's name (its ``sinks.<name>`` config section) to the
:class:`SinkSpec` its module declares: the section's dataclass and the factory.

Adding a sink is one new module that ends with ``SPEC = SinkSpec(...)`` and one entry in ``SINKS``; its
config section, validation and JSON Schema follow from the spec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeseg.sinks import display, jsonl, mqtt, video, web
from edgeseg.sinks.base import (
    HealthSink,
    LosslessSink,
    ReportingSink,
    Sink,
    SinkContext,
    SinkFactory,
    SinkReport,
    SinkSpec,
    StatusSink,
)
from edgeseg.sinks.record import result_record

if TYPE_CHECKING:
    from edgeseg.config import SinksConfig

SINKS: dict[str, SinkSpec] = {s.name: s for s in (display.SPEC, jsonl.SPEC, video.SPEC, mqtt.SPEC, web.SPEC)}


def build_sinks(config: SinksConfig, ctx: SinkContext) -> dict[str, Sink]:
    """The sinks that ``config`` turns on, by name.

    If one sink fails to build, those already built are closed before the error propagates.
    """
    built: dict[str, Sink] = {}
    try:
        for name, spec in SINKS.items():
            sink = spec.create(config[name], ctx)
            if sink is not None:
                built[name] = sink
    except BaseException:
        for sink in built.values():
            sink.close()
        raise
    return built


__all__ = [
    "SINKS",
    "HealthSink",
    "LosslessSink",
    "ReportingSink",
    "Sink",
    "SinkContext",
    "SinkFactory",
    "SinkReport",
    "SinkSpec",
    "StatusSink",
    "build_sinks",
    "result_record",
]
