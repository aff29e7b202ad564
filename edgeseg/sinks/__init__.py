"""Sinks: where results go. ``SINKS`` maps each config section name (``sinks.<name>``) to a factory.

Adding a sink is one new module with a ``create(section, ctx)`` factory, one config section and one
entry here.
"""

from __future__ import annotations

from typing import Any

from edgeseg.sinks import display, jsonl, video
from edgeseg.sinks.base import Sink, SinkContext, SinkFactory
from edgeseg.sinks.record import result_record

SINKS: dict[str, SinkFactory] = {
    "display": display.create,
    "jsonl": jsonl.create,
    "video": video.create,
}


def build_sinks(config: Any, ctx: SinkContext) -> dict[str, Sink]:
    """The sinks that ``config`` (a :class:`edgeseg.config.SinksConfig`) turns on, by name.

    If one sink fails to build, those already built are closed before the error propagates.
    """
    built: dict[str, Sink] = {}
    try:
        for name, factory in SINKS.items():
            section = getattr(config, name, None)
            if section is None:
                continue
            sink = factory(section, ctx)
            if sink is not None:
                built[name] = sink
    except BaseException:
        for sink in built.values():
            sink.close()
        raise
    return built


__all__ = ["SINKS", "Sink", "SinkContext", "SinkFactory", "build_sinks", "result_record"]
