"""At-least-once delivery of the spool over a connection, in two ordered streams: live and replay.

On every connect (:meth:`Delivery.start`), whatever is still in the spool (messages in flight when the link
broke, the outage's backlog, an earlier run's leftovers) becomes the *replay* stream, sent oldest first with
``"replay": true``; what the sink stores after the connect is the *live* stream. Both are sent in spool order,
live first when both wait, at QoS 1 with at most ``max_inflight`` unacknowledged, so each arrives in
increasing ``seq``; a message in flight when a link broke may arrive twice. A message leaves the spool when
its PUBACK arrives (:meth:`Delivery.on_publish`), in batches (:meth:`Delivery.flush`).

Messages that can never be delivered leave the spool counted, instead of blocking it: one larger than the
broker's maximum packet size (the broker would drop the connection, on every reconnect), and one the broker
refused in its PUBACK (MQTT 5 reason code, e.g. "Not authorized" by an ACL). A broker that does not announce
its packet limit (MQTT 3.1.1 cannot) gives itself away by hanging up on such a message each time it is sent
(:class:`HangUps`).

Every method runs on the publisher's thread except :meth:`Delivery.figures`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edgeseg.logtally import said
from edgeseg.mqtt.spool import Spool
from edgeseg.mqtt.topics import as_replay

log = logging.getLogger(__name__)

LATENCY_WINDOW = 512
# links lost in a row with the same message the largest unconfirmed: the broker hangs up on that message (a
# message that is fine is confirmed within milliseconds of a connect, so one drop or two is chance)
SUSPECT_DROPS = 3
UNCONFIRMED_KEPT = 4096  # (a link with QoS 0 messages only confirms none of them)
# what makes a results message smaller, by sinks.mqtt.mask_format: a speckled mask's polygons (a ring round
# every speck) are larger than its RLE, so polygon is no advice for rle
SMALLER = {
    "rle": "sinks.mqtt.mask_format: none leaves the masks out (polygon is smaller than rle for smooth "
    "outlines only), or raise the broker's limit",
    "polygon": "sinks.mqtt.mask_format: rle is smaller for speckled masks and none leaves them out, or raise "
    "the broker's limit",
    "none": "the masks are out already (sinks.mqtt.mask_format: none): raise the broker's limit",
}


def _named(topic: str) -> str:
    """How a log line names a spooled message: by its topic's last level, results or events (a topic an
    earlier sinks.mqtt.prefix left in the spool too)."""
    return "an events message" if topic.rsplit("/", 1)[-1] == "events" else "a results message"


# a results message: its spool id; a retained one: its topic and the hash of its payload
MessageKey = int | tuple[str, int]


def packet_size(topic: str, payload: bytes) -> int:
    """The size of the MQTT 5 PUBLISH packet that carries ``payload`` on ``topic`` at QoS 1 with no
    properties: what a broker's maximum packet size bounds (a guess at the overhead would drop results that
    fit; MQTT 3.1.1's packet, the same less the properties' length byte, never announces a limit)."""
    remaining = 2 + len(topic.encode()) + 2 + 1 + len(payload)  # topic, packet id, properties' length
    header = 2 if remaining < 128 else 3 if remaining < 16_384 else 4 if remaining < 2_097_152 else 5
    return header + remaining


@dataclass(frozen=True)
class DeliveryFigures:
    """acked: acknowledged and deleted; replayed: sent from a connect's backlog; too_large, refused: deleted
    undelivered (see the module docstring); publish_ms_*: publish-to-PUBACK time of recent messages;
    acked_by_topic, lost_by_topic: the acknowledged, and the too large or refused, messages of each topic."""

    acked: int = 0
    replayed: int = 0
    too_large: int = 0
    refused: int = 0
    publish_ms_p50: float = float("nan")
    publish_ms_p99: float = float("nan")
    acked_by_topic: Mapping[str, int] = field(default_factory=dict)
    lost_by_topic: Mapping[str, int] = field(default_factory=dict)


class Delivery:
    """Sends the spool's messages over the current connection and deletes them when acknowledged."""

    def __init__(self, spool: Spool, max_inflight: int, mask_format: str = "rle") -> None:
        self.spool = spool
        self.max_inflight = max_inflight
        self._smaller = SMALLER[mask_format]  # the too-large message's advice
        self._pending: dict[int, tuple[int, int, str]] = {}  # mid -> (spool id, publish time ns, topic)
        self.hang_ups = HangUps()
        self._live_after = 0  # spool ids above this were stored after the connect
        self._replay_after = 0  # the replay stream's cursor, up to (and including) _replay_last
        self._replay_last = 0
        self._read_at = -1  # the spool's append count when the live stream was last read to its end
        self._acked: list[tuple[int, str]] = []  # (spool id, topic)
        self._refused: list[int] = []
        self._lock = threading.Lock()
        self._latency_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._n = {"acked": 0, "replayed": 0, "too_large": 0, "refused": 0}
        self._acked_by_topic: Counter[str] = Counter()
        self._lost_by_topic: Counter[str] = Counter()
        self._lost_by_kind: Counter[tuple[str, str]] = Counter()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        """A new connection: everything in the spool now is the replay stream."""
        self.flush()
        self._pending.clear()  # a fresh client with a clean session resends nothing: we do, from the spool
        self._live_after = self._replay_last = self.spool.last_id()
        self._replay_after = 0
        self._read_at = -1

    def idle(self) -> bool:
        """Nothing in flight and nothing left to send."""
        return not self._pending and not self.spool.read(0, 1)

    def pump(self, client: mqtt.Client, max_packet: int | None) -> str | None:
        """Publish until ``max_inflight`` messages are unacknowledged or nothing is left; ``None``, or why the
        link must be dropped."""
        room = self.max_inflight - len(self._pending)
        while room > 0:
            # (each stream is read again only when it may hold more: the live one once the sink stored
            # something since it was read to its end, the replay one until it was)
            replay, batch = False, []
            appended = self.spool.appended
            if appended != self._read_at:
                batch = self.spool.read(self._live_after, room)
                if len(batch) < room:
                    self._read_at = appended
            if not batch and self._replay_after < self._replay_last:
                batch = self.spool.read(self._replay_after, room, below_id=self._replay_last + 1)
                replay = True
                if not batch:
                    self._replay_after = self._replay_last
            if not batch:
                return None
            for entry in batch:
                if replay:
                    self._replay_after = entry.id
                else:
                    self._live_after = entry.id
                payload = as_replay(entry.payload) if replay else entry.payload
                if max_packet is not None and packet_size(entry.topic, payload) > max_packet:
                    self._too_large(entry.id, entry.topic, len(payload), max_packet)
                    continue
                info = client.publish(entry.topic, payload, qos=1)
                if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_QUEUE_SIZE):
                    return f"publish failed: {mqtt.error_string(info.rc)}"
                self._pending[info.mid] = (entry.id, time.monotonic_ns(), entry.topic)
                self.hang_ups.sent(info.mid, entry.id, len(payload))
                room -= 1
                if replay:
                    self._count("replayed")
        return None

    def on_publish(self, mid: int, rc: ReasonCode) -> None:
        """paho's ``on_publish``: the broker's PUBACK for ``mid`` (other messages' mids are ignored)."""
        self.hang_ups.acked(mid)
        sent = self._pending.pop(mid, None)
        if sent is None:
            return  # a retained or stats message
        if rc.is_failure:
            # refused for good: sending it again would be refused again and hold up every stop
            self._refused.append(sent[0])
            n = self._count("refused", topic=sent[2])
            if said(n):
                log.error("the broker refused %s: %s (%d so far); it is dropped", _named(sent[2]), rc, n)
            return
        self._acked.append((sent[0], sent[2]))
        with self._lock:
            self._latency_ms.append((time.monotonic_ns() - sent[1]) / 1e6)

    def hung_up_on(self, spool_id: int, size: int) -> None:
        """:class:`HangUps` found the broker hangs up on this message: drop it, counted as too large."""
        # (it was sent on the link that broke and never acknowledged: still pending until the next connect)
        topic = next((t for i, _, t in self._pending.values() if i == spool_id), "")
        self._too_large(spool_id, topic, size, None)

    def flush(self) -> None:
        """Delete what was acknowledged (or refused) since the last flush, in one transaction."""
        if self._acked or self._refused:
            acked, self._acked = self._acked, []
            self.spool.delete([*(i for i, _ in acked), *self._refused])
            self._refused = []
            self._count("acked", len(acked))
            with self._lock:
                self._acked_by_topic.update(topic for _, topic in acked)

    def figures(self) -> DeliveryFigures:
        with self._lock:
            lat = np.fromiter(self._latency_ms, np.float64, len(self._latency_ms))
            n = dict(self._n)
            acked, lost = dict(self._acked_by_topic), dict(self._lost_by_topic)
        p50, p99 = np.percentile(lat, [50, 99]) if lat.size else (float("nan"), float("nan"))
        return DeliveryFigures(
            **n,
            publish_ms_p50=float(p50),
            publish_ms_p99=float(p99),
            acked_by_topic=acked,
            lost_by_topic=lost,
        )

    def _count(self, key: str, n: int = 1, topic: str | None = None) -> int:
        """Add to a figure; its total, or with ``topic`` (a message of it lost: too large or refused) that
        topic's count of it: the log lines of one topic's losses (results) are not silenced by another's
        (events) ahead of them."""
        with self._lock:
            self._n[key] += n
            if topic is None:
                return self._n[key]
            self._lost_by_topic[topic] += n
            self._lost_by_kind[key, topic] += n
            return self._lost_by_kind[key, topic]

    def _too_large(self, spool_id: int, topic: str, size: int, limit: int | None) -> None:
        self.spool.delete([spool_id])
        n = self._count("too_large", topic=topic)
        if not said(n):
            return
        what = _named(topic)
        # (an events message carries no masks: the mask format's advice would not make it smaller)
        advice = (
            self._smaller
            if what == "a results message"
            else f"{what} carries no masks: raise the broker's limit"
        )
        if limit is None:
            log.error(
                "the broker hung up each of the last %d times %s of %d bytes was sent: taken as over its "
                "packet limit, dropped (%d so far); %s",
                SUSPECT_DROPS,
                what,
                size,
                n,
                advice,
            )
            return
        log.error(
            "%s of %d bytes is over the broker's packet limit of %d bytes: dropped (%d so far); %s",
            what,
            size,
            limit,
            n,
            advice,
        )


class HangUps:
    """Finds the message a broker hangs up on, where it did not announce its packet limit.

    The broker reads a connection's packets in order, so a PUBACK confirms every packet sent before the one
    it acknowledges; a broker that hangs up on a packet confirms nothing from there on. A message that was
    the largest unconfirmed one at ``SUSPECT_DROPS`` lost links in a row is the one (:meth:`lost`).
    A lost link counts only where the broker was seen reading the connection's packets: it confirmed one,
    or the message was the first sent (nothing before it to confirm). A broker that hangs up at once on
    every connection, for whatever reason, confirms nothing, and the largest of the backlog's first
    messages, replayed at each connect, was deleted as too large every three links.
    Messages are known by a key: a results message by its spool id, a retained one by its topic and the hash
    of its payload.
    """

    def __init__(self) -> None:
        self._sent: list[tuple[int | None, MessageKey, int]] = []  # (QoS 1 mid, key, size), in send order
        self._suspect: tuple[MessageKey | None, int] = (None, 0)  # (key, lost links in a row)
        self._first: MessageKey | None = None  # of this connection
        self._heard = False  # a PUBACK on this connection

    def connected(self) -> None:
        self._sent.clear()
        self._first, self._heard = None, False

    def sent(self, mid: int | None, key: MessageKey, size: int) -> None:
        """``mid``: that of a QoS 1 publish, whose PUBACK confirms it; ``None`` for QoS 0."""
        if self._first is None:
            self._first = key
        self._sent.append((mid, key, size))
        if len(self._sent) > UNCONFIRMED_KEPT:
            del self._sent[0]

    def acked(self, mid: int) -> None:
        for i, (sent_mid, _, _) in enumerate(self._sent):
            if sent_mid == mid:  # (paho calls on_publish for a QoS 0 message too, once written: no sign)
                self._heard = True
                if any(key == self._suspect[0] for _, key, _ in self._sent[: i + 1]):
                    self._suspect = (None, 0)
                del self._sent[: i + 1]
                return

    def lost(self) -> tuple[MessageKey, int] | None:
        """The link broke: the key and size of the message the broker hangs up on, once it is known."""
        if not self._sent:
            self._suspect = (None, 0)
            return None
        _, key, size = max(self._sent, key=lambda sent: sent[2])
        self._sent.clear()
        if not self._heard and key != self._first:
            return None  # no sign the broker read any of it: the count stands as it was
        drops = self._suspect[1] + 1 if self._suspect[0] == key else 1
        self._suspect = (key, drops)
        if drops < SUSPECT_DROPS:
            return None
        self._suspect = (None, 0)
        return key, size
