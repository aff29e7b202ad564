"""The ``mqtt`` sink itself: :class:`MqttSink` and the event cap. The section and its factory are in
:mod:`edgeseg.sinks.mqtt`, which imports this module only when ``sinks.mqtt.url`` is set, so a run that does
not publish never loads paho, sqlite3 or ssl."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edgeseg.atomic import replace_file
from edgeseg.errors import ConfigError
from edgeseg.events import Counts, Event
from edgeseg.frame import Result
from edgeseg.instances import MaskFormat
from edgeseg.logtally import said
from edgeseg.modelcard import file_sha256
from edgeseg.mqtt.broker import (
    BrokerAddress,
    Credentials,
    device_id,
    parse_broker_url,
)
from edgeseg.mqtt.delivery import DeliveryFigures
from edgeseg.mqtt.discovery import components, discovery_payload
from edgeseg.mqtt.publisher import Message, Publisher, PublisherSettings, PublisherStats
from edgeseg.mqtt.remote import RemoteControl
from edgeseg.mqtt.spool import Spool, SpoolStats
from edgeseg.mqtt.topics import (
    OFFLINE,
    ONLINE,
    ModelInfo,
    Topics,
    cpu_temperature_c,
    event_payload,
    finite,
    info_payload,
    results_payload,
    stats_payload,
    topic_name,
)
from edgeseg.procmem import memory_mb
from edgeseg.sinks.base import SinkContext, SinkReport
from edgeseg.sinks.record import encoded_record
from edgeseg.statedir import state_dir

if TYPE_CHECKING:
    from edgeseg.sinks.mqtt import MqttSinkConfig

log = logging.getLogger(__name__)


def spool_path(state: Path, device: str) -> Path:
    return state / f"mqtt-spool-{device}.sqlite3"


def discovered_path(state: Path, device: str) -> Path:
    """The Home Assistant components the last start announced (to remove those the next one lacks)."""
    return state / f"discovery-{device}.json"


def _announced(path: Path) -> dict[str, str]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read, no Home Assistant component is removed: %s", path, exc)
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(k): v for k, v in doc.items() if isinstance(v, str)}


def _sha256(path: Path | None) -> str | None:
    return file_sha256(path) if path is not None and path.is_file() else None


class EventCap:
    """The per-stream rate cap on published events: a token bucket of ``rate`` per second of capture time,
    holding at most one second's worth (at least 1).

    ``new``, ``zone_enter``, ``line_cross`` and ``loiter`` take a token or are suppressed. An ``end`` or
    ``zone_exit`` is published exactly when its ``new`` / ``zone_enter`` was, so a consumer never sees half
    a pair; every later event of a track whose ``new`` was suppressed is suppressed too. State is per live
    track: dropped at its ``end``, and per zone at its ``zone_exit`` (which may come just after the end).
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self._t: int | None = None
        self._hidden: set[int] = set()  # tracks whose new was suppressed
        self._inside: set[tuple[int, str]] = set()  # (track, zone) whose enter was published
        self.published = 0
        self.suppressed = 0

    def admit(self, e: Event) -> bool:
        ok = self._decide(e)
        if ok:
            self.published += 1
        else:
            self.suppressed += 1
        return ok

    def _decide(self, e: Event) -> bool:
        if self._t is not None and e.t_capture_ns > self._t:
            self.tokens = min(self.capacity, self.tokens + (e.t_capture_ns - self._t) / 1e9 * self.rate)
        self._t = e.t_capture_ns if self._t is None else max(self._t, e.t_capture_ns)
        if e.kind == "end":
            hidden = e.track_id in self._hidden
            self._hidden.discard(e.track_id)
            # its (track, zone) entries stay: the zone stage runs after the tracker, so the zone_exit of a
            # track that ends inside comes after its end (same frame) and must still find its enter there
            return not hidden
        if e.track_id in self._hidden:
            return False
        if e.kind == "zone_exit":
            key = (e.track_id, e.zone or "")
            if key in self._inside:
                self._inside.discard(key)
                return True
            return False
        if self.tokens < 1.0:
            if e.kind == "new":
                self._hidden.add(e.track_id)
            return False
        self.tokens -= 1.0
        if e.kind == "zone_enter":
            self._inside.add((e.track_id, e.zone or ""))
        return True


def _check_count_topics(classes: Sequence[str]) -> None:
    """A :class:`ConfigError` where a class's ``counts/<class>`` topic (and its Home Assistant sensor,
    ``count_<class>``) is another's: a class ``all`` and the total overwrote each other, and so did two names
    made one by :func:`topic_name` (``a b`` and ``a/b``)."""
    owners = {"all": "the total of all classes"}
    for name in classes:
        level = topic_name(name)
        owner = owners.setdefault(level, f"the class {name!r}")
        if owner != f"the class {name!r}":
            raise ConfigError(
                f"model.path: the class {name!r} would publish its count on counts/{level}, the topic of "
                f"{owner}; rename the class in the model card"
            )


class MqttSink:
    """Spools every result and publishes it, with the device's retained state, from its own thread.

    Args:
        config: the ``sinks.mqtt`` section (``url`` set).
        ctx: the pipeline's context (class names, live stats, model and source, state directory).
        credentials: as :func:`edgeseg.mqtt.broker.load_credentials` found them.
    """

    def __init__(self, config: MqttSinkConfig, ctx: SinkContext, credentials: Credentials) -> None:
        assert config.url is not None
        self.config = config
        self.ctx = ctx
        self.linger_s = config.linger_s  # the pipeline gathers the results that come within it into a batch
        self.address: BrokerAddress = parse_broker_url(config.url)
        self.device_id = device_id(config.device_id)
        self.topics = Topics(config.prefix, self.device_id, config.discovery_prefix)
        self.boot_id = uuid.uuid4().hex
        self.started_at = time.time()
        self._started = time.monotonic()  # (uptime from the wall clock would take in an NTP step)
        self.mask_format: MaskFormat = config.mask_format  # type: ignore[assignment]
        self.counted = [n for i, n in enumerate(ctx.class_names) if i not in ctx.never_instances]
        _check_count_topics(self.counted)
        self._model = ModelInfo(
            ctx.model_name, str(ctx.model_path) if ctx.model_path else None, _sha256(ctx.model_path)
        )
        self._lock = threading.Lock()
        self._seq = 0
        self._capped = 0
        self._unserializable = 0
        self._next_result_at = 0.0
        self._next_snapshot_at = 0.0
        self._snapshots_skipped = 0
        self._frame_size: tuple[int, int] | None = None
        self._counts: dict[str, int] | None = None
        self.event_cap = EventCap(config.max_events_per_s)
        self.zone_counts = Counts()
        self._events_lost = 0
        # what reached the spool: a result given a seq, or an event admitted, is lost where the write fails
        self._results_spooled = 0
        self._events_spooled = 0
        self._final: tuple[SpoolStats, PublisherStats] | None = None  # figures at close, for report()
        self._spool_deleted = False  # at close: the messages left in it went with it
        self.spool = Spool(
            spool_path(ctx.state_dir or state_dir(), self.device_id),
            config.spool_max_bytes,
            config.spool_max_age_s,
        )
        # results and events an earlier run left in the spool: sent by this one, acknowledged beside its own
        left = self.spool.stats().depth_by_topic
        self._results_carried = left.get(self.topics.results, 0)
        self._events_carried = left.get(self.topics.events, 0)
        self.publisher = Publisher(
            self.address,
            credentials,
            self.device_id,
            self.spool,
            self.topics,
            PublisherSettings(
                protocol=config.protocol,
                keepalive_s=config.keepalive_s,
                reconnect_min_s=config.reconnect_min_s,
                reconnect_max_s=config.reconnect_max_s,
                max_inflight=config.max_inflight,
                stats_interval_s=config.stats_interval_s,
                mask_format=config.mask_format,
            ),
            stats_payload=self._stats_payload,
            refresh=self._refresh_source,
        )
        self._publish_info()
        # live control: its state topics are retained before the first connect, so they go out before
        # ``status`` ``online``, like every retained topic
        self.remote = None if ctx.control is None else RemoteControl(self.publisher, self.topics, ctx.control)
        if config.discovery:
            announced = discovered_path(self.spool.path.parent, self.device_id)
            discovery = discovery_payload(
                self.topics,
                ctx.model_name,
                self.counted,
                config.snapshot_interval_s is not None,
                self.remote.tunables if self.remote is not None else (),
                tuple(ctx.zones),
                tuple(ctx.lines),
                _announced(announced),
            )
            self.publisher.set_retained(self.topics.discovery, discovery)
            try:
                replace_file(announced, json.dumps(components(discovery), sort_keys=True).encode())
            except OSError as exc:
                log.warning("%s cannot be written: %s", announced, exc)
            for topic in self.topics.ha_status:
                self.publisher.subscribe(topic, self._on_ha_status)
        self._publish_counts({name: 0 for name in self.counted})
        for cid in range(len(ctx.class_names)):
            if cid in ctx.never_instances:
                continue
            for kind, names in (("zones", ctx.zones), ("lines", ctx.lines)):
                for zone in names:
                    self._publish_zone_counts(kind, zone, cid)
        # no result yet: the counts above are no scene's (a camera missing at boot is not an empty room).
        # Kept after them (retained topics go out in the order first set), so the first result after an
        # outage has its counts sent before source online: not those of before the outage as current
        self.publisher.set_retained(self.topics.source, OFFLINE)
        self.publisher.start()
        log.info("publishing to %s as %s (spool %s)", self.address, self.topics.base, self.spool.path)

    # results ------------------------------------------------------------------------------------------

    takes_final_events = True  # the events made at shutdown (``end``) are published too

    def send(self, result: Result) -> None:
        self.send_batch([result])

    def send_batch(self, results: Sequence[Result]) -> None:
        """Spool the results and their events (one transaction), then update counts, info and the
        snapshot. A ``final`` result (see :class:`edgeseg.frame.Result`) publishes its events only."""
        messages: list[tuple[str, bytes]] = []
        for result in results:
            self._events(result, messages)
            if result.final or not self._admit():
                continue
            try:
                text = encoded_record(result, self.mask_format, self.ctx.class_names)
                payload = results_payload(text, self.boot_id, self._seq)
            except Exception as exc:  # one result that cannot be serialized never costs the batch
                self._unserializable += 1
                if said(self._unserializable):
                    log.error(
                        "result of frame %d cannot be serialized, it is lost (%d so far): %s",
                        result.frame.index,
                        self._unserializable,
                        exc,
                        exc_info=self._unserializable <= 3 and log.isEnabledFor(logging.DEBUG),
                    )
                continue
            messages.append((self.topics.results, payload))
            self._seq += 1
        if messages:
            # counts and logs its own failures (all of the batch, or one too large for it); never raises
            if self.spool.append(messages):
                stored = [topic for topic, payload in messages if self.spool.fits(topic, payload)]
                self._results_spooled += stored.count(self.topics.results)
                self._events_spooled += stored.count(self.topics.events)
            self.publisher.wake()
        results = [r for r in results if not r.final]
        if not results:
            return
        latest = results[-1]
        counts = dict.fromkeys(self.counted, 0)
        for cid in latest.instances.class_id.tolist():
            name = self._class_name(int(cid))
            counts[name] = counts.get(name, 0) + 1
        self._publish_counts(counts)
        self.publisher.set_retained(self.topics.source, ONLINE)
        h, w = latest.frame.shape
        if self._frame_size != (w, h):
            self._frame_size = (w, h)
            self._publish_info()
        self._maybe_snapshot(latest)

    def _events(self, result: Result, messages: list[tuple[str, bytes]]) -> None:
        """The result's events as ``events`` messages (those the rate cap admits, each before its result's
        message), and the retained zone and line counts they change (counted before the cap: exact)."""
        if not result.events:
            return
        names, source = self.ctx.class_names, result.frame.source
        for e in result.events:
            if not self.event_cap.admit(e):
                continue
            try:
                messages.append((self.topics.events, event_payload(e.to_dict(names), self.boot_id, source)))
            except Exception as exc:  # never expected: the fields are plain numbers and names
                self._events_lost += 1
                log.error("event %d cannot be serialized, it is lost: %s", e.event_seq, exc)
        for kind, name, cid in sorted(self.zone_counts.apply(result.events)):
            self._publish_zone_counts(kind, name, cid)

    def _publish_zone_counts(self, kind: str, name: str, cid: int) -> None:
        figures = self.zone_counts.figures(kind, name, cid)
        cls = self._class_name(cid)
        topic = self.topics.zone_counts(name, cls) if kind == "zones" else self.topics.line_counts(name, cls)
        self.publisher.set_retained(topic, json.dumps(figures, separators=(",", ":")).encode())

    def _admit(self) -> bool:
        """The optional rate cap: a result over ``max_rate`` takes no ``seq`` and is counted."""
        rate = self.config.max_rate
        if rate is None:
            return True
        now = time.monotonic()
        if now < self._next_result_at:
            with self._lock:
                self._capped += 1
            return False
        # schedule from the previous slot, not from now, so the long-run rate is max_rate exactly
        self._next_result_at = max(self._next_result_at + 1.0 / rate, now - 1.0 / rate)
        return True

    def _class_name(self, cid: int) -> str:
        names = self.ctx.class_names
        return names[cid] if 0 <= cid < len(names) else str(cid)

    def _publish_counts(self, counts: Mapping[str, int]) -> None:
        if counts == self._counts:
            return
        self._counts = dict(counts)
        # per-frame counts flicker (a detection missed in one frame): a count topic holds still for
        # counts_interval_s, so a Home Assistant sensor records a state a second, not one per frame
        every = self.config.counts_interval_s
        for name, n in counts.items():
            self.publisher.set_retained(self.topics.counts(name), str(n).encode(), min_interval_s=every)
        total = str(sum(counts.values())).encode()
        self.publisher.set_retained(self.topics.counts("all"), total, min_interval_s=every)

    def _refresh_source(self) -> None:
        """On the publisher's thread: ``source`` goes ``offline`` once results have paused (the camera gone),
        and the counts, "detected" and the zones' ``inside`` with it in Home Assistant; the next result sets
        it ``online`` again. (The counts stay what the last result had: unknown is not 0.)"""
        if self.ctx.stats().paused:
            self.publisher.set_retained(self.topics.source, OFFLINE)

    def _publish_info(self) -> None:
        self.publisher.set_retained(
            self.topics.info,
            info_payload(
                self.device_id,
                self.boot_id,
                self.started_at,
                self._model,
                self.ctx.class_names,
                self.ctx.source_uri,
                self._frame_size,
                self.mask_format,
            ),
        )

    def _maybe_snapshot(self, result: Result) -> None:
        interval = self.config.snapshot_interval_s
        now = time.monotonic()
        if interval is None or now < self._next_snapshot_at:
            return
        self._next_snapshot_at = now + interval
        img = self.ctx.render(result)
        width = self.config.snapshot_width
        if img.shape[1] > width:
            height = max(1, round(img.shape[0] * width / img.shape[1]))
            img = np.ascontiguousarray(cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA))
        ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        data = jpeg.tobytes() if ok else b""
        if not data or len(data) > self.config.snapshot_max_bytes:
            self._snapshots_skipped += 1
            n = self._snapshots_skipped
            # a busy scene stays busy: not a line at every snapshot_interval_s for as long
            if said(n):
                log.warning(
                    "snapshot of frame %d skipped: %d bytes is over sinks.mqtt.snapshot_max_bytes (%d) "
                    "(%d so far)",
                    result.frame.index,
                    len(data),
                    self.config.snapshot_max_bytes,
                    n,
                )
            return
        self.publisher.set_retained(self.topics.snapshot, data, qos=0)

    def _on_ha_status(self, message: Message) -> None:
        if message.payload.strip() == b"online":
            # Home Assistant restarted: send discovery again, after a random delay so a fleet of devices
            # does not answer its birth message all at once (its documentation's advice)
            self.publisher.resend_retained(self.topics.discovery, delay_s=random.uniform(0.0, 1.0))
            for name in [*self.counted, "all"]:
                self.publisher.resend_retained(self.topics.counts(name))

    # figures --------------------------------------------------------------------------------------

    def _stats_payload(self) -> bytes:
        p = self.ctx.stats()
        s = self.spool.stats()
        link = self.publisher.stats()
        d = link.delivery
        with self._lock:
            capped = self._capped
        # (the link keeps back any retained topic over the broker's limit: the discovery too, not a snapshot)
        snapshots_skipped = self._snapshots_skipped + link.skipped_retained.get(self.topics.snapshot, 0)
        return stats_payload(
            {
                "device_id": self.device_id,
                "boot_id": self.boot_id,
                "time": round(time.time(), 3),
                "uptime_s": round(time.monotonic() - self._started, 3),
                "fps": finite(p.fps_now, 2),  # (Home Assistant's FPS sensor: 0 while a camera is gone)
                "fps_mean": finite(p.fps_mean, 2),
                "latency_ms": {"p50": finite(p.latency_ms_p50), "p99": finite(p.latency_ms_p99)},
                "frames": {"read": p.frames_read, "done": p.frames_done},
                "stage_ms": {k: finite(v) for k, v in p.stage_ms.items()},
                "drops": dict(p.drops),
                "bad_frames": dict(p.bad_frames),
                "results": {
                    "published": self._results_spooled,
                    "capped": capped,
                    "lost": self._lost(self.topics.results, s, d) + self._unserializable,
                },
                "events": {
                    "published": self._events_spooled,
                    "suppressed": self.event_cap.suppressed,
                    "lost": self._lost(self.topics.events, s, d) + self._events_lost,
                },
                "spool": {
                    "depth": s.depth,
                    "bytes": s.bytes,
                    "file_bytes": s.file_bytes,
                    "oldest_age_s": finite(s.oldest_age_s),
                    "dropped": s.dropped,
                    "dropped_overflow": s.dropped_overflow,
                    "dropped_expired": s.dropped_expired,
                    "write_failed": s.write_failed,
                },
                "mqtt": {
                    "connected": link.connected,
                    "reconnects": link.reconnects,
                    "acked": d.acked,
                    "replayed": d.replayed,
                    "too_large": d.too_large,
                    "refused": d.refused,
                    "refused_subscriptions": list(link.refused_subscriptions),
                    "publish_ms": {"p50": finite(d.publish_ms_p50), "p99": finite(d.publish_ms_p99)},
                },
                "snapshots_skipped": snapshots_skipped,
                "cpu_temp_c": cpu_temperature_c(),
                "memory_mb": memory_mb(),
            }
        )

    @staticmethod
    def _lost(topic: str, s: SpoolStats, d: DeliveryFigures) -> int:
        """The messages of ``topic`` that were accepted into the spool (or offered to it) and will never be
        delivered: results and events share the spool and the link, and are counted apart."""
        return s.dropped_by_topic.get(topic, 0) + d.lost_by_topic.get(topic, 0)

    def describe(self) -> str:
        return f"{self.address} as {self.topics.base} (MQTT, spool {self.spool.path})"

    def failure(self) -> str | None:
        ended = self.publisher.stats().ended
        return (
            None if ended is None else f"the MQTT publisher has stopped ({ended}); results wait in the spool"
        )

    def status(self) -> str:
        s, link = self.spool.stats(), self.publisher.stats()
        state = "connected" if link.connected else f"disconnected ({link.last_error or 'connecting'})"
        if link.ended is not None:
            state = f"publisher stopped ({link.ended})"
        line = f"mqtt {state}, spool {s.depth}"
        if s.depth and s.oldest_age_s is not None:
            line += f" (oldest {s.oldest_age_s:.0f} s)"
        if s.dropped:
            line += f", {s.dropped} dropped"
        # Home Assistant's birth or live control deaf for as long as the broker's ACL says so: logged once
        refused = link.refused_subscriptions
        if refused:
            line += f", subscription refused: {refused[0]}" + (
                f" and {len(refused) - 1} more" if refused[1:] else ""
            )
        return line

    def report(self) -> SinkReport:
        """The run's account: what was published, what is left for the next start, what was lost."""
        s, link = self._final or (self.spool.stats(), self.publisher.stats())
        cap = self.event_cap
        # the spool's and the link's counts of each loss are of messages: results, and events where the
        # losses (or an earlier run's spool, with this one's tracker off) held any
        held = {"results": self.topics.results, "events": self.topics.events}
        gone_with_spool = s.depth_by_topic if self._spool_deleted else {}
        events_lost = self._lost(held["events"], s, link.delivery) + gone_with_spool.get(held["events"], 0)
        stored = "messages (results and events)" if events_lost else "results"
        # the spool outlives a change of sinks.mqtt.prefix: the earlier topics' messages may be lost here too
        others_lost = sum(
            n
            for counts in (s.dropped_by_topic, link.delivery.lost_by_topic, gone_with_spool)
            for topic, n in counts.items()
            if topic not in held.values()
        )
        if others_lost:
            results_lost = (
                self._lost(held["results"], s, link.delivery)
                + gone_with_spool.get(held["results"], 0)
                + self._unserializable
            )
            kinds = (
                (results_lost, "results"),
                (events_lost, "events"),
                (others_lost, "of other topics: an earlier sinks.mqtt.prefix"),
            )
            stored = "messages (" + ", ".join(f"{n} {kind}" for n, kind in kinds if n) + ")"
        lines = [
            f"mqtt {self.address} as {self.topics.base}: {self._results_spooled} results spooled"
            + (f" ({self._results_carried} more left by an earlier run)" if self._results_carried else "")
            + f", {link.delivery.acked_by_topic.get(self.topics.results, 0)} acknowledged by the broker, "
            f"{link.reconnects} reconnects"
        ]
        if link.ended is not None:
            lines.append(f"mqtt: the publisher stopped during the run ({link.ended}); nothing was sent after")
        if s.depth and not self._spool_deleted:
            left = [(s.depth_by_topic.get(topic, 0), kind) for kind, topic in held.items()]
            # (the spool outlives a change of sinks.mqtt.prefix: the earlier topics' messages go out too)
            left.append(
                (s.depth - sum(n for n, _ in left), "messages of other topics (an earlier sinks.mqtt.prefix)")
            )
            lines.append(
                "mqtt: "
                + " and ".join(f"{n} {kind}" for n, kind in left if n)
                + f" still in the spool {self.spool.path} (sent at the next start)"
            )
        lost = {
            "spool overflow": s.dropped_overflow,
            "expired": s.dropped_expired,
            "spool write failed": s.write_failed,
            f"in the spool {self.spool.path}, deleted during the run": s.depth if self._spool_deleted else 0,
            "could not be serialized": self._unserializable,
            "over the broker's packet limit": link.delivery.too_large,
            "refused by the broker": link.delivery.refused,
        }
        if any(lost.values()):
            lines.append(
                "mqtt: LOST " + ", ".join(f"{n} ({why})" for why, n in lost.items() if n) + f" {stored}"
            )
        if self._events_lost:
            lines.append(f"mqtt: LOST {self._events_lost} events (could not be serialized)")
        if self._capped:
            lines.append(f"mqtt: {self._capped} results not published (over sinks.mqtt.max_rate)")
        if cap.published or cap.suppressed:
            lines.append(
                # spooled, not published: with the broker down none of them left the machine
                f"mqtt: {self._events_spooled} events spooled"
                + (f" ({self._events_carried} more left by an earlier run)" if self._events_carried else "")
                + f", {link.delivery.acked_by_topic.get(self.topics.events, 0)} acknowledged by the broker"
                + (
                    f", {cap.suppressed} suppressed (over sinks.mqtt.max_events_per_s)"
                    if cap.suppressed
                    else ""
                )
            )
        if link.refused_subscriptions:
            lines.append(
                f"mqtt: the broker refused the subscription to {', '.join(link.refused_subscriptions)}: what "
                "was sent there was never received (its ACL)"
            )
        if link.replies_dropped:
            lines.append(f"mqtt: {link.replies_dropped} replies to config requests dropped unsent (a flood)")
        return SinkReport(tuple(lines), sum(lost.values()) + self._events_lost)

    def close(self) -> None:
        stopped = self.publisher.close(self.config.flush_timeout_s)
        self._final = (self.spool.stats(), self.publisher.stats())
        self._spool_deleted = self.spool.deleted()
        if self._spool_deleted and self._final[0].depth:
            log.warning(
                "spool %s was deleted during the run: its %d messages are lost",
                self.spool.path,
                self._final[0].depth,
            )
        if stopped:  # else the publisher thread may still use the spool; the process is ending anyway
            self.spool.close()
