"""What the live control (:mod:`edgeseg.control`) hands to the stages and to its front-ends (MQTT, the tune
window, the web page): small immutable records and the protocol the front-ends call.

It sits below the config loader and the sinks, so a sink can drive the control without importing either.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from edgeseg.geometry import Roi
from edgeseg.heads import DecodeOptions

if TYPE_CHECKING:
    from edgeseg.config import PipelineConfig


def parse_request(text: str) -> Any:
    """A front-end's request body as JSON; ``ValueError`` where it is not, or is nested deeper than the
    interpreter recurses (``[[[[...`` a few thousand deep: a RecursionError from ``json.loads``)."""
    try:
        return json.loads(text)
    except RecursionError:  # still the sender's mistake, to be answered as one
        raise ValueError("nested too deeply") from None


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One immutable version of the settings a frame is processed with.

    A frame takes the snapshot current when it is preprocessed and keeps it through decode and into its
    result (``config_version``), so no frame mixes an old ROI with a new threshold.

    Attributes:
        version: ``config_version``: 1 for the configuration the pipeline started with, +1 per change.
        config: the whole configuration (``None`` for a pipeline built without one, in tests).
        roi: the region preprocessing crops (``None``: the whole frame).
        decode: the head's options with every "null = the model card's" value resolved.
    """

    version: int = 0
    config: PipelineConfig | None = None
    roi: Roi | None = None
    decode: DecodeOptions = field(default_factory=DecodeOptions)


@dataclass(frozen=True)
class Outcome:
    """What one update did: ``applied`` key -> the value now in effect, ``rejected`` key -> why (one line,
    the same words the YAML loader uses), ``version`` the ``config_version`` after it."""

    applied: Mapping[str, Any]
    rejected: Mapping[str, str]
    version: int

    @property
    def ok(self) -> bool:
        return not self.rejected

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "applied": dict(self.applied),
            "rejected": dict(self.rejected),
            "config_version": self.version,
        }


TunableKind = Literal["number", "integer", "bool", "roi"]


@dataclass(frozen=True)
class Tunable:
    """A key that may change while the pipeline runs and applies to its model, with its value in effect
    and the range a slider for it may span (``lo``/``hi`` ``None``: unbounded on that side; above an
    exclusive bound, ``lo`` is the first step past it: every value a slider offers is one the key takes)."""

    key: str
    value: Any
    kind: TunableKind
    doc: str
    lo: float | None = None
    hi: float | None = None
    step: float | None = None


class Controls(Protocol):
    """The one way to change a running pipeline (:class:`edgeseg.control.Control`)."""

    def current(self) -> Snapshot: ...

    def update(self, changes: Mapping[str, Any], origin: str) -> Outcome:
        """Validate ``changes`` (dotted key path -> value) like the YAML and apply what is valid at once."""

    def tunables(self) -> Sequence[Tunable]: ...

    def value(self, key: str) -> Any:
        """The value in effect for ``key`` (the card's for a null key), JSON-ready."""

    def watch(self, callback: Callable[[Outcome], None]) -> None:
        """Call ``callback`` after every update that applied something (on the updating thread)."""

    def save(self, into_yaml: bool = False) -> str:
        """Keep the live changes across restarts; returns one line saying what was saved where."""

    def reset(self) -> Outcome:
        """Undo the live changes not saved (back to what a restart would run)."""

    def reload(self) -> Outcome:
        """Read the pipeline's files again and apply what changed there (SIGHUP)."""
