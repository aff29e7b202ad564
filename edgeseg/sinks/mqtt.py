"""``mqtt`` sink: results, counts, stats, snapshots and Home Assistant discovery, through an on-disk spool.

The topic layout and payloads are in :mod:`edgeseg.mqtt.topics`, delivery in :mod:`edgeseg.mqtt.publisher`,
the spool in :mod:`edgeseg.mqtt.spool`. This module turns results into messages: every result gets the next
``seq`` and goes to the spool (a batch of results in one transaction) before anything is sent, so a result
this sink accepted is delivered, or counted as dropped, even across a broker outage or a process restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from edgeseg.fields import meta
from edgeseg.instances import MASK_FORMATS
from edgeseg.mqtt.broker import SECRETS_HINT, load_credentials, parse_broker_url
from edgeseg.sinks.base import SinkContext, SinkSpec
from edgeseg.validate import FieldError

if TYPE_CHECKING:
    from edgeseg.sinks.mqtt_sink import MqttSink

MiB = 1024 * 1024
_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
_PREFIX_PATTERN = r"^[^#+/][^#+]*[^#+/]$|^[^#+/]$"
_ID_SAYS = "one topic level of letters, digits, _ and -"
_PREFIX_SAYS = "topic levels without + or #, and no / at either end"


@dataclass(frozen=True)
class MqttSinkConfig:
    """Publish to an MQTT broker (see the README's topic table)."""

    __secrets__: ClassVar[Mapping[str, str]] = {
        name: SECRETS_HINT for name in ("username", "password", "user", "pass", "passwd", "token", "secret")
    }

    url: str | None = field(
        default=None, metadata=meta("Broker: mqtt://host[:port] or mqtts://host[:port] (null: off).")
    )
    device_id: str | None = field(
        default=None,
        metadata=meta(
            "Topic level, client id and spool name (null: the hostname).", pattern=_ID_PATTERN, says=_ID_SAYS
        ),
    )
    prefix: str = field(
        default="edgeseg", metadata=meta("First topic level.", pattern=_PREFIX_PATTERN, says=_PREFIX_SAYS)
    )
    protocol: str = field(
        default="mqttv5", metadata=meta("MQTT protocol version.", choices=("mqttv5", "mqttv311"))
    )
    mask_format: str = field(default="rle", metadata=meta("Masks in results.", choices=MASK_FORMATS))
    max_rate: float | None = field(
        default=None, metadata=meta("Most results per second (null: every result).", gt=0)
    )
    max_events_per_s: float = field(
        default=20.0,
        metadata=meta(
            "Most track events per second of capture time on the events topic (bursts up to one second's "
            "worth); the rest are counted as suppressed. An end or zone exit always follows a published "
            "new or zone enter.",
            gt=0,
        ),
    )
    counts_interval_s: float = field(
        default=1.0,
        metadata=meta(
            "Least seconds between two updates of a retained count topic: a change sooner waits, and the "
            "count it has by then is sent (the last is always sent; 0: every change). Results carry every "
            "frame's instances.",
            ge=0,
        ),
    )
    # MQTT carries it in two bytes: paho's struct.pack of 70000 killed the publisher thread at connect
    keepalive_s: int = field(default=30, metadata=meta("MQTT keepalive in seconds.", ge=5, le=65535))
    reconnect_min_s: float = field(default=0.5, metadata=meta("First reconnect delay.", gt=0))
    reconnect_max_s: float = field(default=30.0, metadata=meta("Longest reconnect delay.", gt=0))
    max_inflight: int = field(
        default=20, metadata=meta("Messages (results and events) sent but not yet acknowledged.", ge=1)
    )
    stats_interval_s: float = field(default=10.0, metadata=meta("Seconds between stats messages.", gt=0))
    snapshot_interval_s: float | None = field(
        default=None, metadata=meta("Seconds between annotated JPEG snapshots (null: off).", gt=0)
    )
    snapshot_max_bytes: int = field(
        default=256 * 1024, metadata=meta("Larger snapshots are skipped.", ge=1024)
    )
    snapshot_width: int = field(default=640, metadata=meta("Snapshots are scaled down to this width.", ge=16))
    spool_max_bytes: int = field(
        default=64 * MiB,
        metadata=meta("Spool size cap; the oldest messages (results and events) go first.", ge=4096),
    )
    spool_max_age_s: float = field(
        default=7 * 86400.0,
        metadata=meta("Messages (results and events) older than this leave the spool unsent.", gt=0),
    )
    flush_timeout_s: float = field(
        # at most a day: a wait past threading.TIMEOUT_MAX (1e10 s, "for ever") failed the sink at stop
        default=5.0,
        metadata=meta(
            "At stop: longest wait for the broker to take the spool (at most a day; as a service, within the "
            "unit's TimeoutStopSec=, which `edgeseg doctor --service` checks).",
            ge=0,
            le=86400,
        ),
    )
    linger_s: float = field(
        default=0.02,
        metadata=meta(
            "Once a result waits for the sink, the results that come within this many seconds go with it: "
            "one spool write and one wake of the publisher for them all (the demo pipeline on 2 cores "
            "1.5-5.5% faster), each result reaching the spool at most this much later (0: each on its own).",
            ge=0,
            le=1,
        ),
    )
    discovery: bool = field(default=True, metadata=meta("Publish Home Assistant MQTT discovery."))
    discovery_prefix: str = field(
        default="homeassistant",
        metadata=meta("Home Assistant discovery prefix.", pattern=_PREFIX_PATTERN, says=_PREFIX_SAYS),
    )
    username_file: Path | None = field(default=None, metadata=meta("File holding the user name."))
    password_file: Path | None = field(default=None, metadata=meta("File holding the password."))
    ca_file: Path | None = field(default=None, metadata=meta("mqtts: CA certificate (null: system CAs)."))
    cert_file: Path | None = field(default=None, metadata=meta("mqtts: client certificate."))
    key_file: Path | None = field(default=None, metadata=meta("mqtts: client key."))

    def __post_init__(self) -> None:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise FieldError("reconnect_max_s", f"must be >= reconnect_min_s ({self.reconnect_min_s:g})")


def create(section: MqttSinkConfig, ctx: SinkContext) -> MqttSink | None:
    if section.url is None:
        return None
    parse_broker_url(section.url)  # a malformed URL fails before the credentials are read
    credentials = load_credentials(
        section.username_file, section.password_file, section.ca_file, section.cert_file, section.key_file
    )
    # the sink (paho, sqlite3, ssl: ~10 MB of RSS) is imported only by a run that publishes
    from edgeseg.sinks.mqtt_sink import MqttSink

    return MqttSink(section, ctx, credentials)


SPEC = SinkSpec("mqtt", MqttSinkConfig, create, "MQTT publishing with an on-disk spool.")
