"""The MQTT contract: topic names under ``<prefix>/<device_id>/`` and the JSON payloads published there.

Each JSON payload carries a ``schema`` field (``edgeseg.<kind>/<version>``) and has a JSON Schema in
``edgeseg/schemas/<kind>.json`` that the tests validate every published message against.

=====================  ==========================================================  =====  ========
topic                  payload                                                     QoS    retained
=====================  ==========================================================  =====  ========
``status``             ``online`` / ``offline`` (last will ``offline``)             1      yes
``source``             ``online`` while results come, ``offline`` while none do    1      yes
``info``               software, model (name, sha256), classes, source, frame size  1      yes
``results``            one result record per frame, ``boot_id`` + ``seq``           1      no
``counts/<class>``     instances of that class in the latest result (on change)    1      yes
``counts/all``         instances of every class in the latest result (on change)   1      yes
``events``             one track event per message (``new``, ``end``, zones, lines)  1      no
``zones/<zone>/<cls>``  ``{"inside", "entered", "exited"}`` of a zone (on change)   1      yes
``lines/<line>/<cls>``  ``{"in", "out"}`` crossings of a line (on change)           1      yes
``stats``              FPS, latency, drops, stage times, spool, link, temperature  0      no
``snapshot``           annotated JPEG, at most every ``snapshot_interval_s``       0      yes
``config/<key>/state``  the value in effect of each live key (dotted key path)     1      yes
``config/result``      the reply to every change request (JSON)                    1      no
=====================  ==========================================================  =====  ========

In (subscribed): ``config/<key>/set`` (one value, JSON or a bare word), ``config/set`` (a JSON object
``{key path: value}``; an MQTT 5 request's response topic and correlation data get the reply too),
``config/save`` (``state``, the default: keep the live changes across restarts; ``yaml``: write them into the
pipeline file), and Home Assistant's ``homeassistant/status`` (and ``<discovery_prefix>/status``).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg import __version__

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
RESULTS_SCHEMA = "edgeseg.results/1"
EVENTS_SCHEMA = "edgeseg.events/1"
INFO_SCHEMA = "edgeseg.info/1"
STATS_SCHEMA = "edgeseg.stats/1"
CONFIG_RESULT_SCHEMA = "edgeseg.config_result/1"
ONLINE, OFFLINE = b"online", b"offline"

# ``replay`` is the first key of every results payload, so the publisher marks a message replayed by
# swapping this fixed prefix instead of parsing and re-serializing a payload of several kilobytes
_LIVE = b'{"replay":false,'
_REPLAY = b'{"replay":true,'
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sanitize(text: str, fill: str) -> str:
    """``text`` reduced to ``[A-Za-z0-9_-]`` (runs of anything else become ``fill``, none at the ends): safe
    as a topic level, an MQTT client id and a Home Assistant object id."""
    return _UNSAFE.sub(fill, text).strip(fill)


def topic_name(text: str) -> str:
    """``text`` as one topic level: no ``/``, ``+``, ``#`` or spaces (``a b/c`` -> ``a_b_c``); a name with
    nothing of ``[A-Za-z0-9]`` in it (``人``, ``человек``) as its punycode (``gmq``, ``b1afbucs4d``)."""
    # (punycode is one-to-one: labels in Chinese or Cyrillic would all be reduced to "_", one topic and one
    # Home Assistant sensor for every class)
    return sanitize(text, "_") or sanitize(text.encode("punycode").decode("ascii"), "_") or "_"


@dataclass(frozen=True)
class Topics:
    """Every topic of one device."""

    prefix: str
    device_id: str
    discovery_prefix: str = "homeassistant"

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device_id}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def source(self) -> str:
        """Whether the counts are the scene's now: ``online`` while results come, ``offline`` before the
        first and once they paused (a camera gone)."""
        return f"{self.base}/source"

    @property
    def info(self) -> str:
        return f"{self.base}/info"

    @property
    def results(self) -> str:
        return f"{self.base}/results"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    @property
    def snapshot(self) -> str:
        return f"{self.base}/snapshot"

    def config_state(self, key: str) -> str:
        return f"{self.base}/config/{key}/state"

    def config_key_set(self, key: str) -> str:
        """``config/<key>/set``; ``config_key_set("+")`` subscribes to every key."""
        return f"{self.base}/config/{key}/set"

    @property
    def config_set(self) -> str:
        return f"{self.base}/config/set"

    @property
    def config_save(self) -> str:
        return f"{self.base}/config/save"

    @property
    def config_result(self) -> str:
        return f"{self.base}/config/result"

    def config_key(self, topic: str) -> str | None:
        """The key path of a ``config/<key>/set`` topic (``None`` for any other topic; an empty level is
        an empty key, refused like any unknown one)."""
        head, tail = f"{self.base}/config/", "/set"
        if topic.startswith(head) and topic.endswith(tail) and len(topic) >= len(head) + len(tail):
            return topic[len(head) : -len(tail)]
        return None

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    def zone_counts(self, zone: str, class_name: str) -> str:
        """``zones/<zone>/<class>``: the zone's figures for that class (retained)."""
        return f"{self.base}/zones/{topic_name(zone)}/{topic_name(class_name)}"

    def line_counts(self, line: str, class_name: str) -> str:
        """``lines/<line>/<class>``: the line's crossings for that class (retained)."""
        return f"{self.base}/lines/{topic_name(line)}/{topic_name(class_name)}"

    def counts(self, class_name: str) -> str:
        """``counts/<class>``; ``counts("all")`` is the total."""
        return f"{self.base}/counts/{topic_name(class_name)}"

    @property
    def discovery(self) -> str:
        """Home Assistant device-based discovery."""
        return f"{self.discovery_prefix}/device/{self.device_id}/config"

    @property
    def ha_status(self) -> tuple[str, ...]:
        """Where Home Assistant may announce itself (birth and last will, ``online`` / ``offline``): its
        default ``homeassistant/status``, whatever its discovery prefix (``DEFAULT_BIRTH_WILL_TOPIC`` in its
        ``mqtt/const.py``), and ``<discovery_prefix>/status`` for a birth moved along with the prefix."""
        return tuple(dict.fromkeys(("homeassistant/status", f"{self.discovery_prefix}/status")))


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def finite(value: float | None, digits: int = 3) -> float | None:
    """JSON has no NaN: an unmeasured figure is ``null``."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def results_payload(record: str, boot_id: str, seq: int) -> bytes:
    """A live ``results`` message: a result's record (the text of :func:`edgeseg.sinks.record.encoded_record`)
    with this topic's ``seq``, after ``replay``, ``schema`` and the process's ``boot_id``."""
    head = _dumps({"replay": False, "schema": RESULTS_SCHEMA, "boot_id": boot_id, "seq": seq})
    return head[:-1] + b"," + record.encode()


def event_payload(event: Mapping[str, Any], boot_id: str, source: str) -> bytes:
    """An ``events`` message: one event of :meth:`edgeseg.events.Event.to_dict`, with the process's
    ``boot_id`` and the stream's source. ``replay`` first, like ``results``, so a replay is marked alike."""
    return _dumps({"replay": False, "schema": EVENTS_SCHEMA, "boot_id": boot_id, "source": source, **event})


def as_replay(payload: bytes) -> bytes:
    """The same ``results`` or ``events`` message marked ``"replay": true`` (sent from the spool's
    backlog)."""
    if payload.startswith(_LIVE):
        return _REPLAY + payload[len(_LIVE) :]
    return payload


@dataclass(frozen=True)
class ModelInfo:
    """What ``info`` says about the model: card name, file and its sha256 (``None`` for on-sensor)."""

    name: str
    path: str | None
    sha256: str | None


def info_payload(
    device_id: str,
    boot_id: str,
    started_at: float,
    model: ModelInfo,
    classes: Sequence[str],
    source: str,
    frame_size: tuple[int, int] | None,
    mask_format: str,
) -> bytes:
    """The retained ``info`` message; ``frame_size`` is ``(width, height)`` once the first frame arrived."""
    return _dumps(
        {
            "schema": INFO_SCHEMA,
            "version": __version__,
            "device_id": device_id,
            "boot_id": boot_id,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
            "started_at_unix": round(started_at, 3),
            "model": {"name": model.name, "path": model.path, "sha256": model.sha256},
            "classes": list(classes),
            "source": source,
            "frame": None if frame_size is None else {"width": frame_size[0], "height": frame_size[1]},
            "mask_format": mask_format,
        }
    )


def config_result_payload(doc: Mapping[str, Any]) -> bytes:
    """A reply on ``config/result`` (:meth:`edgeseg.live.Outcome.to_json` and where the request came)."""
    return _dumps({"schema": CONFIG_RESULT_SCHEMA, **doc})


def config_state_payload(value: Any) -> bytes:
    """A ``config/<key>/state`` value: JSON (a number as Home Assistant's number entity reads it)."""
    return _dumps(value) if isinstance(value, Mapping) else json.dumps(value).encode()


def stats_payload(doc: Mapping[str, Any]) -> bytes:
    """The ``stats`` message (built by the sink from the pipeline's, the spool's and the link's figures)."""
    return _dumps({"schema": STATS_SCHEMA, **doc})


def cpu_temperature_c(root: Path = Path("/sys/class/thermal")) -> float | None:
    """The first thermal zone's temperature in °C (Raspberry Pi: the SoC), ``None`` where there is none."""
    for zone in sorted(root.glob("thermal_zone*/temp")):
        try:
            return round(int(zone.read_text().strip()) / 1000.0, 1)
        except (OSError, ValueError):
            continue
    return None


def load_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one payload kind (``results``, ``events``, ``info``, ``stats``, ``discovery``)."""
    doc: dict[str, Any] = json.loads((SCHEMA_DIR / f"{kind}.json").read_text(encoding="utf-8"))
    return doc
