"""Track events (``new``, ``end``, ``zone_enter``, ``zone_exit``, ``line_cross``, ``loiter``) and counts.

Events are made by the stream stages (:mod:`edgeseg.tracker` for ``new``/``end``, :mod:`edgeseg.zones` for
the rest), carried on :attr:`edgeseg.frame.Result.events` and published by the serializing sinks (the JSONL
record's ``events``, one MQTT message each on ``<base>/events``). Each stream numbers its events with one
:class:`EventSequence` shared by its stages, so ``event_seq`` counts up by one without gaps in the order the
events were made.

Every ``new`` is followed by an ``end`` for the same track: when the tracker drops it (lost for
``tracker.lost_s``, out of the frame, a source restart, a reset) or, at the latest, when the pipeline stops
(the stages' ``close`` returns the final events, see :class:`edgeseg.pipeline.StreamStage`). A track that
ends while inside a zone gets its ``zone_exit`` right after its ``end`` (the zone stage runs after the
tracker), so ``inside`` goes back to 0 and ``inside == entered - exited`` holds for every zone and class.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

EventKind = Literal["new", "end", "zone_enter", "zone_exit", "line_cross", "loiter"]
EVENT_KINDS: tuple[str, ...] = ("new", "end", "zone_enter", "zone_exit", "line_cross", "loiter")
Direction = Literal["in", "out"]


@dataclass(frozen=True)
class Event:
    """One thing that happened to a confirmed track.

    Attributes:
        kind: what happened (:data:`EVENT_KINDS`).
        event_seq: the stream's own 0-based count of events.
        track_id: the track (``Instances.track_id``, always >= 1).
        class_id: the track's class.
        t_capture_ns: capture time (monotonic ns) of the frame the event was seen in; at shutdown, of the
            stream's last frame.
        wall_time: the same moment as Unix seconds.
        zone: the zone (``zone_enter``, ``zone_exit``, ``loiter``).
        line: the line (``line_cross``).
        direction: ``in`` or ``out`` (``line_cross``, see :class:`edgeseg.zones.LineConfig`).
        duration_s: seconds of capture time: inside the zone (``zone_exit``, ``loiter``), the track's life
            from its first confirmed frame to the last it was seen in (``end``).
    """

    kind: EventKind
    event_seq: int
    track_id: int
    class_id: int
    t_capture_ns: int
    wall_time: float
    zone: str | None = None
    line: str | None = None
    direction: Direction | None = None
    duration_s: float | None = None

    def to_dict(self, class_names: Sequence[str] = ()) -> dict[str, Any]:
        """A JSON-ready dict (the ``events.json`` schema's ``event``); ``None`` fields are left out."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "event_seq": self.event_seq,
            "track_id": self.track_id,
            "class_id": self.class_id,
        }
        if class_names:
            cid = self.class_id
            out["class_name"] = class_names[cid] if 0 <= cid < len(class_names) else str(cid)
        # as it is, not rounded: the same number as the record of the frame it was seen in, which is how a
        # consumer of the events topic (no frame index there) finds the result it belongs to
        out["wall_time"] = self.wall_time
        out["t_capture_s"] = round(self.t_capture_ns / 1e9, 6)
        for key in ("zone", "line", "direction"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.duration_s is not None:
            out["duration_s"] = round(self.duration_s, 3)
        return out


class EventSequence:
    """A stream's ``event_seq`` counter, shared by its stages (they run on one thread)."""

    def __init__(self) -> None:
        self.next = 0

    def take(self) -> int:
        seq = self.next
        self.next += 1
        return seq


# counts ---------------------------------------------------------------------------------------------

ZONE_COUNTS = ("inside", "entered", "exited")
LINE_COUNTS = ("in", "out")


class Counts:
    """Per zone and class ``inside``/``entered``/``exited``, per line and class ``in``/``out``, kept from
    events (so every consumer of the events can keep the same figures)."""

    def __init__(self) -> None:
        self.zones: dict[tuple[str, int], dict[str, int]] = {}
        self.lines: dict[tuple[str, int], dict[str, int]] = {}

    def apply(self, events: Iterable[Event]) -> set[tuple[str, str, int]]:
        """Count ``events``; returns the ``("zones"|"lines", name, class_id)`` whose figures changed."""
        changed: set[tuple[str, str, int]] = set()
        for e in events:
            if e.zone is not None and e.kind in ("zone_enter", "zone_exit"):
                c = self.zones.setdefault((e.zone, e.class_id), dict.fromkeys(ZONE_COUNTS, 0))
                if e.kind == "zone_enter":
                    c["inside"] += 1
                    c["entered"] += 1
                else:
                    c["inside"] -= 1
                    c["exited"] += 1
                changed.add(("zones", e.zone, e.class_id))
            elif e.line is not None and e.kind == "line_cross" and e.direction is not None:
                c = self.lines.setdefault((e.line, e.class_id), dict.fromkeys(LINE_COUNTS, 0))
                c[e.direction] += 1
                changed.add(("lines", e.line, e.class_id))
        return changed

    def figures(self, kind: str, name: str, class_id: int) -> dict[str, int]:
        table = self.zones if kind == "zones" else self.lines
        default = ZONE_COUNTS if kind == "zones" else LINE_COUNTS
        return dict(table.get((name, class_id), dict.fromkeys(default, 0)))
