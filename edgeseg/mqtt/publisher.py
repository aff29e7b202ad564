"""The MQTT connection: one thread that connects, reconnects, drains the spool and keeps retained state.

Why one thread and paho's external-loop API (``loop_read``/``loop_write``/``loop_misc`` around our own
``select``): every paho call happens on this thread, so there is no locking around the client, and a
socketpair wakes the thread the moment the sink has stored new results.

Delivery of the spool's messages, ``results`` and ``events`` (at least once, ordered per stream, never
blocked by an undeliverable message) is :mod:`edgeseg.mqtt.delivery`'s; each connection is a fresh paho
client with a clean session, so paho never resends on its own: the spool is the only queue.

Connection: the pipeline never waits for the broker, and an attempt waits ``connect_timeout_s`` for the
broker's CONNACK (a hung broker takes the connection and never answers). Failed attempts are retried with
exponential backoff and jitter, capped at ``reconnect_max_s``, and logged in one line (the reason, the next
attempt and its number; repeats of the same reason are logged every ``LOG_REPEAT`` attempts). On every
connect: the subscriptions are made, the retained state (``info``, discovery, counts, snapshot) is
published, then ``status`` ``online`` last. The last will sets ``status`` ``offline``; a clean stop
publishes it too.
"""

from __future__ import annotations

import contextlib
import logging
import math
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgeseg.backoff import backoff_delays
from edgeseg.logtally import said
from edgeseg.mqtt.broker import BrokerAddress, Credentials
from edgeseg.mqtt.client import describe_error, make_client, refusal, start_connect
from edgeseg.mqtt.delivery import SUSPECT_DROPS, Delivery, DeliveryFigures, MessageKey, packet_size
from edgeseg.mqtt.spool import Spool
from edgeseg.mqtt.topics import OFFLINE, ONLINE, Topics

log = logging.getLogger(__name__)

STABLE_S = 10.0  # a connection that lasted this long resets the reconnect backoff
LOG_REPEAT = 10  # a connect failure that repeats is logged again every this many attempts
IDLE_WAIT_S = 0.5
KEEPALIVE_TIMEOUT = 0x8D  # the reason code paho gives when our keepalive ends the link (and a broker's)
# the link ended with no reason from the broker (paho's code for a closed socket: what Mosquitto 2.0.11 does
# to a client when another connects with its client id), or an MQTT 5 broker's "Session taken over"
UNEXPLAINED = (0x80, 0x8E)
CLASH_FLAPS = 3  # links in a row dropped before STABLE_S, the last unexplained: the log names a likely cause
GOODBYE_ACK_WAIT_S = 1.0  # at a clean stop, how long results in flight may take to be acknowledged
REFRESH_S = 1.0  # how often ``refresh`` brings the retained state that no result changes up to date


@dataclass(frozen=True)
class PublisherSettings:
    """How the link behaves (``sinks.mqtt`` keys of the same names)."""

    protocol: str = "mqttv5"
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    max_inflight: int = 20
    stats_interval_s: float = 10.0
    connect_timeout_s: float = 5.0
    mask_format: str = "rle"  # (the advice for a results message over the broker's limit)

    def close_bound_s(self, flush_timeout_s: float) -> float:
        """The longest :meth:`Publisher.close` waits: the flush, a connect in flight, the thread's own end."""
        return flush_timeout_s + self.connect_timeout_s + 3.0


@dataclass(frozen=True)
class PublisherStats:
    """The link's figures for ``stats`` and the run's summary.

    Attributes:
        connected: whether the broker is connected now.
        connects: successful connections so far; ``reconnects`` is this minus the first.
        skipped_retained: the retained payloads not sent, by topic: over the broker's maximum packet size, or
            as large as one it hung up on (a snapshot, mostly; the sink counts only those as snapshots).
        replies_dropped: replies to ``config/*`` requests dropped unsent (a flood outran the socket).
        last_error: why the last connection attempt failed or the link dropped.
        ended: why the publisher's thread ended before it was closed (an error nothing here expected):
            nothing is published from then on, and what is spooled waits for the next start.
        refused_subscriptions: the topic filters the broker refused to subscribe to (its ACL), until a later
            connect's is granted: requests there (``config/*``, Home Assistant's birth) are never received.
        delivery: the figures of the spool's messages, results and events alike (acknowledged, replayed,
            dropped undeliverable, PUBACK times); ``acked_by_topic`` and ``lost_by_topic`` tell them apart.
    """

    connected: bool = False
    connects: int = 0
    skipped_retained: Mapping[str, int] = field(default_factory=dict)
    replies_dropped: int = 0
    last_error: str | None = None
    ended: str | None = None
    refused_subscriptions: tuple[str, ...] = ()
    delivery: DeliveryFigures = field(default_factory=DeliveryFigures)

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)


@dataclass
class _Retained:
    payload: bytes
    qos: int
    sent: bool = False
    # the smallest payload of this topic the broker hung up on (:class:`HangUps`): none as big is sent (a
    # snapshot changes at every interval; each would cost the link three drops)
    hung_up_at: int | None = None
    not_before: float = 0.0
    last_sent: float = -math.inf
    skipped: int = 0  # payloads of this topic not sent (too large)


@dataclass
class _Link:
    """State of one connection (a fresh paho client each time)."""

    client: mqtt.Client
    connected: bool = False
    opened_at: float = 0.0  # when CONNECT went out (the broker's CONNACK is due within connect_timeout_s)
    max_packet: int | None = None
    connected_at: float = 0.0
    dropped: str | None = None
    # ended by a keepalive timeout (ours, or the broker's DISCONNECT saying so): the link stalled, which
    # says nothing about the message sent last (:class:`HangUps` looks for a broker that hangs up at once)
    timed_out: bool = False
    unexplained: bool = False  # ended by one of UNEXPLAINED
    subscribing: dict[int, str] = field(default_factory=dict)  # SUBSCRIBE's message id: its topic filter


@dataclass(frozen=True)
class Message:
    """A message the broker delivered to one of our subscriptions; an MQTT 5 request may name the topic
    and correlation data of its reply. ``retained``: the broker kept it and sent it as we subscribed (at
    every connect), not as it was published."""

    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None
    retained: bool = False


MessageHandler = Callable[[Message], None]
# replies waiting for the next step of the publisher thread: a request arrives only while connected and is
# answered within the same step, so only a flood of requests that outruns the socket fills this; then the
# oldest replies go first (a reply is only useful now)
REPLY_QUEUE = 1024


class Publisher:
    """Publishes the spool and the retained state to one broker from a thread of its own.

    Args:
        address, credentials, client_id: where and as whom to connect.
        spool: the results to deliver (shared with the sink, which appends).
        topics: the device's topic names (status and last will).
        settings: timings and limits.
        stats_payload: builds the ``stats`` message; called on this thread every ``stats_interval_s``.
        refresh: called on this thread every ``REFRESH_S``, connected or not: updates the retained state that
            changes with time rather than with a result (``source`` going ``offline`` when results stop).
    """

    def __init__(
        self,
        address: BrokerAddress,
        credentials: Credentials,
        client_id: str,
        spool: Spool,
        topics: Topics,
        settings: PublisherSettings,
        stats_payload: Callable[[], bytes] | None = None,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self.credentials = credentials
        self.client_id = client_id
        self.spool = spool
        self.topics = topics
        self.settings = settings
        self._stats_payload = stats_payload
        self._refresh = refresh
        self._next_refresh = 0.0
        self._lock = threading.Lock()
        self._retained: dict[str, _Retained] = {}
        self._handlers: dict[str, MessageHandler] = {}
        self._replies: deque[tuple[str, bytes, bytes | None]] = deque(maxlen=REPLY_QUEUE)
        self._unsendable_replies = 0
        self._link: _Link | None = None
        self._attempt = 0
        # links in a row that dropped before STABLE_S (a broker that hangs up at once, another client with
        # our id): their drops and connects are logged as failed attempts are, not each
        self._flaps = 0
        self._delays = self._new_delays()
        self._next_attempt = 0.0
        self._last_reason: str | None = None
        self._next_stats = 0.0
        self._next_retained = math.inf  # when the next retained topic held back is due
        self._stop = threading.Event()
        self._flush_deadline = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="edgeseg-mqtt", daemon=True)
        self.delivery = Delivery(spool, settings.max_inflight, settings.mask_format)
        self._s = PublisherStats()

    # called from other threads ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """New messages are in the spool (or retained state changed): publish them now."""
        with contextlib.suppress(OSError):  # a full pipe means a wake-up is already pending
            self._wake_w.send(b"\0")

    def set_retained(self, topic: str, payload: bytes, qos: int = 1, min_interval_s: float = 0.0) -> None:
        """Keep ``topic`` at ``payload`` (retained): sent if it changed, and again after a reconnect.

        ``min_interval_s``: a change this soon after the topic was last sent waits until then and goes out
        as the value it has by that time; the last value is always sent, at the latest when the publisher
        stops (before ``offline``)."""
        with self._lock:
            entry = self._retained.get(topic)
            if entry is not None and entry.payload == payload and entry.qos == qos:
                return
            if entry is None:
                entry = self._retained[topic] = _Retained(payload, qos)
            else:
                entry.payload, entry.qos, entry.sent = payload, qos, False
                entry.not_before = entry.last_sent + min_interval_s
            # a change held back no longer than one already pending needs no wake-up: the thread wakes for
            # that one anyway (counts change at every frame and are held back for seconds)
            if entry.not_before >= self._next_retained:
                return
        self.wake()

    def reply(self, topic: str, payload: bytes, correlation_data: bytes | None = None) -> None:
        """Publish ``payload`` on ``topic`` once (QoS 1, not retained) when connected; with MQTT 5 and
        ``correlation_data``, the reply carries it. Replies wait for a connection in a short queue."""
        with self._lock:
            if len(self._replies) == REPLY_QUEUE:  # the oldest goes: count it, say it
                dropped = self._s.replies_dropped + 1
                self._s = replace(self._s, replies_dropped=dropped)
                if said(dropped):
                    log.warning("a reply to a config request was dropped unsent (%d so far)", dropped)
            self._replies.append((topic, payload, correlation_data))
        self.wake()

    def subscribe(self, topic: str, handler: MessageHandler) -> None:
        """Call ``handler(message)`` on this thread for messages on ``topic`` (subscribed on every
        connect, so commands keep working after a broker restart)."""
        with self._lock:
            self._handlers[topic] = handler

    def resend_retained(self, topic: str, delay_s: float = 0.0) -> None:
        """Send the retained ``topic`` again after ``delay_s`` (Home Assistant's birth message)."""
        with self._lock:
            entry = self._retained.get(topic)
            if entry is not None:
                entry.sent = False
                entry.not_before = time.monotonic() + delay_s
        self.wake()

    def stats(self) -> PublisherStats:
        figures = self.delivery.figures()
        with self._lock:
            skipped = {topic: entry.skipped for topic, entry in self._retained.items() if entry.skipped}
            return replace(self._s, delivery=figures, skipped_retained=skipped)

    def close(self, flush_timeout_s: float) -> bool:
        """Stop: deliver what the spool holds while connected (for at most ``flush_timeout_s``), publish
        ``status`` ``offline``, disconnect. What is left stays in the spool for the next start.

        Returns whether the thread has ended; if not (a connect hanging in DNS), it is left behind, a daemon,
        and the caller must not close what it still uses.
        """
        self._flush_deadline = time.monotonic() + flush_timeout_s
        self._stop.set()
        self.wake()
        if self._thread.is_alive():
            self._thread.join(self.settings.close_bound_s(flush_timeout_s))
        if self._thread.is_alive():
            log.warning("the MQTT publisher did not stop in time; leaving it behind")
            return False
        self._wake_r.close()
        self._wake_w.close()
        return True

    # the thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._finished():
                self._maybe_refresh()
                link = self._link
                if link is None:
                    if time.monotonic() >= self._next_attempt and not self._stop.is_set():
                        self._connect()
                    else:
                        self._wait(min(IDLE_WAIT_S, max(0.0, self._next_attempt - time.monotonic())))
                    continue
                self._step(link)
        except Exception as exc:
            log.exception("MQTT publisher failed; results stay in the spool for the next start")
            with self._lock:
                self._s = replace(self._s, ended=f"{type(exc).__name__}: {exc}")
        finally:
            self._goodbye()

    def _finished(self) -> bool:
        if not self._stop.is_set():
            return False
        link = self._link
        if link is None or not link.connected or time.monotonic() >= self._flush_deadline:
            return True
        return self.delivery.idle()

    def _wait(self, timeout: float) -> None:
        readable, _, _ = select.select([self._wake_r], [], [], timeout)
        if readable:
            self._drain_wake()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _step(self, link: _Link) -> None:
        sock = link.client.socket()
        if sock is None:
            self._drop(link, link.dropped or "connection closed")
            return
        # a hung broker (or whatever listens there) takes the connection and never answers: paho would wait
        # for the keepalive, and call it one
        wait = self.settings.connect_timeout_s
        if not link.connected and link.dropped is None and time.monotonic() - link.opened_at > wait:
            self._drop(link, f"no CONNACK within {wait:g} s of CONNECT")
            return
        want_write = link.client.want_write()
        timeout = 0.0 if want_write else IDLE_WAIT_S
        if link.connected:
            now = time.monotonic()
            timeout = min(timeout, max(0.0, self._next_retained - now))
            if self._stats_payload is not None:
                timeout = min(timeout, max(0.0, self._next_stats - now))
        try:
            readable, writable, _ = select.select(
                [sock, self._wake_r], [sock] if want_write else [], [], timeout
            )
        except (OSError, ValueError) as exc:  # the socket was closed under us
            self._drop(link, str(exc))
            return
        if self._wake_r in readable:
            self._drain_wake()
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        if sock in readable:
            rc = link.client.loop_read()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and (sock in writable or link.client.want_write()):
            rc = link.client.loop_write()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            rc = link.client.loop_misc()
        self.delivery.flush()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or link.dropped is not None:
            self._drop(link, link.dropped or mqtt.error_string(rc))
            return
        if link.connected:
            # results first: a retained update sent ahead of a result delays its PUBACK by the peer's
            # delayed ACK (~40 ms) when the broker leaves Nagle's algorithm on (Mosquitto's default)
            link.dropped = self.delivery.pump(link.client, link.max_packet)
            self._publish_retained(link)
            self._publish_replies(link)
            self._maybe_stats(link)

    # connecting -----------------------------------------------------------------------------------

    def _connect(self) -> None:
        s = self.settings
        try:
            client = make_client(
                self.address,
                self.credentials,
                self.client_id,
                s.protocol,
                s.connect_timeout_s,
                will=(self.topics.status, OFFLINE),
            )
        except (OSError, ValueError) as exc:  # unusable TLS material
            self._failed(describe_error(exc))
            return
        # the spool's window (max_inflight) is the only one: paho's own, 20 by default, would queue the
        # results over it inside paho, unsent until PUBACKs come, however large max_inflight is
        client.max_inflight_messages_set(0)
        link = _Link(client)
        client.on_connect = lambda c, u, flags, rc, props: self._on_connect(link, rc, props)
        client.on_disconnect = lambda c, u, flags, rc, props: self._on_disconnect(link, rc)
        client.on_publish = lambda c, u, mid, rc, props: self.delivery.on_publish(mid, rc)
        client.on_subscribe = lambda c, u, mid, rcs, props: self._on_subscribe(link, mid, rcs)
        client.on_message = lambda c, u, msg: self._on_message(msg)
        problem = start_connect(client, self.address, s.keepalive_s)
        if problem is not None:
            self._failed(problem)
            return
        link.opened_at = time.monotonic()
        self._link = link

    def _on_connect(self, link: _Link, rc: ReasonCode, props: Any) -> None:
        if rc.is_failure:
            link.dropped = refusal(rc, self.credentials)
            return
        link.connected = True
        link.max_packet = getattr(props, "MaximumPacketSize", None) if props is not None else None
        self.delivery.start()
        self.delivery.hang_ups.connected()
        with self._lock:
            self._s = replace(self._s, connected=True, connects=self._s.connects + 1, last_error=None)
            handlers = list(self._handlers)
            for entry in self._retained.values():
                entry.sent = False
        for topic in handlers:
            _, mid = link.client.subscribe(topic, qos=1)
            if mid is not None:  # (None: not sent, the link gone; the next connect subscribes again)
                link.subscribing[mid] = topic
        if self._attempt:
            level = logging.WARNING if self._flap_said() else logging.DEBUG
            log.log(level, "connected to %s after %d failed attempt(s)", self.address, self._attempt)
        else:
            log.info("connected to %s", self.address)
        link.connected_at = time.monotonic()
        self._next_stats = time.monotonic()
        self._publish_retained(link, with_status=True)

    def _on_subscribe(self, link: _Link, mid: int, reason_codes: list[ReasonCode]) -> None:
        # a broker's ACL may refuse a subscription (SUBACK 0x80 in MQTT 3.1.1, a reason code of 0x80 or more
        # in 5: Mosquitto's dynamic security plugin answers 0x87, "Not authorized") while the connection goes
        # on: live control was deaf and nothing said so. Said once, until a later connect is granted it
        topic = link.subscribing.pop(mid, None)
        if topic is None:
            return
        failed = any(rc.is_failure for rc in reason_codes)
        with self._lock:
            before = self._s.refused_subscriptions
            if failed:
                after = before if topic in before else (*before, topic)
            else:
                after = tuple(t for t in before if t != topic)
            self._s = replace(self._s, refused_subscriptions=after)
        if failed and topic not in before:
            log.warning(
                "the broker refused the subscription to %s (%s): what is sent there is never received "
                "(does its ACL let %s subscribe to it?)",
                topic,
                ", ".join(str(rc) for rc in reason_codes),
                self.credentials.username or "this client",
            )

    def _on_disconnect(self, link: _Link, rc: ReasonCode) -> None:
        if rc.value == KEEPALIVE_TIMEOUT:
            link.timed_out = True
        link.unexplained = rc.value in UNEXPLAINED
        if link.dropped is None:
            link.dropped = f"disconnected: {rc}"

    def _drop(self, link: _Link, reason: str) -> None:
        was_connected = link.connected
        sock = link.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._link = None
        with self._lock:
            self._s = replace(self._s, connected=False, last_error=reason)
        # (a broker that announced its limit was never sent more)
        if was_connected and link.max_packet is None and not link.timed_out:
            self._hung_up(self.delivery.hang_ups.lost())
        if self._stop.is_set():
            return
        flapped = False
        if was_connected:
            lasted = time.monotonic() - link.connected_at
            flapped = lasted < STABLE_S
            self._flaps = self._flaps + 1 if flapped else 0
            if flapped and link.unexplained and self._flaps >= CLASH_FLAPS:
                # two devices cloned from one SD card image share the hostname, hence the device id and
                # the client id: each connect knocks the other off, for ever; the broker does not say so
                reason += (
                    f"; another client may be using client id {self.client_id} "
                    "(two devices with one sinks.mqtt.device_id?)"
                )
            log.log(
                logging.WARNING if self._flap_said() else logging.DEBUG,
                "lost the connection to %s after %.1f s (%s); %d message(s) in flight stay in the spool",
                self.address,
                lasted,
                reason,
                self.delivery.in_flight,
            )
            if not flapped:
                # the backoff starts again only after a connection that held: a broker that drops us
                # right after each connect is retried ever more slowly, not in a tight loop
                self._attempt = 0
                self._delays = self._new_delays()
                self._last_reason = None
        self._failed(reason, flapped)

    def _flap_said(self) -> bool:
        """Whether a line about the link that dropped last is logged: flaps 1-3, then every LOG_REPEAT."""
        return self._flaps <= 3 or self._flaps % LOG_REPEAT == 0

    def _hung_up(self, found: tuple[MessageKey, int] | None) -> None:
        """Never send again what the broker hangs up on: a results message, or a retained payload."""
        if found is None:
            return
        key, size = found
        if isinstance(key, int):
            self.delivery.hung_up_on(key, size)
            return
        topic, _ = key
        with self._lock:
            entry = self._retained.get(topic)
            if entry is None:
                return
            entry.hung_up_at = size if entry.hung_up_at is None else min(entry.hung_up_at, size)
        log.warning(
            "%s: the broker hung up each of the last %d times its %d bytes were sent (over its packet "
            "limit?); nothing as big is sent to it again",
            topic,
            SUSPECT_DROPS,
            size,
        )

    def _skip_retained(self, entry: _Retained, why: str) -> None:
        with self._lock:
            entry.skipped += 1
            n = entry.skipped
        # a snapshot stays too large for as long as the scene stays busy: not a line at every interval
        if said(n):
            log.warning("%s; not sent (%d so far)", why, n)

    def _new_delays(self) -> Iterator[float]:
        # jitter: a fleet that lost the same broker must not reconnect in lockstep
        return backoff_delays(self.settings.reconnect_min_s, self.settings.reconnect_max_s, jitter=0.5)

    def _failed(self, reason: str, flapped: bool = False) -> None:
        self._attempt += 1
        if not flapped:  # an attempt that did not connect: an outage, said as one
            self._flaps = 0
        delay = next(self._delays)
        self._next_attempt = time.monotonic() + delay
        with self._lock:
            self._s = replace(self._s, last_error=reason)
        message = "cannot connect to %s: %s; next attempt in %.1f s (attempt %d)"
        args = (self.address, reason, delay, self._attempt)
        if reason != self._last_reason or self._attempt % LOG_REPEAT == 0:
            log.warning(message, *args)
        else:
            log.debug(message, *args)
        self._last_reason = reason

    # publishing -----------------------------------------------------------------------------------

    def _publish_retained(self, link: _Link, with_status: bool = False, all_now: bool = False) -> None:
        """The retained topics due (``all_now``: every one not sent yet, whatever its delay)."""
        now = time.monotonic()
        with self._lock:
            unsent = [(t, e) for t, e in self._retained.items() if not e.sent]
            due = unsent if all_now else [(t, e) for t, e in unsent if e.not_before <= now]
            for _, entry in due:
                entry.sent = True
                entry.last_sent = now
            # the step's select wakes for the next one held back (a change with nothing after it)
            self._next_retained = min((e.not_before for _, e in unsent if not e.sent), default=math.inf)
            # what is checked is what is sent: set_retained may replace a payload once the lock is let go
            sending = [(t, e, e.payload, e.qos) for t, e in due]
        for topic, entry, payload, qos in sending:
            size = len(payload)
            if entry.hung_up_at is not None and size >= entry.hung_up_at:
                self._skip_retained(entry, f"{topic}: {size} bytes; the broker hung up on {entry.hung_up_at}")
                continue
            if link.max_packet is not None and packet_size(topic, payload) > link.max_packet:
                self._skip_retained(
                    entry,
                    f"{topic}: {size} bytes is over the broker's packet limit of {link.max_packet} bytes",
                )
                continue
            info = link.client.publish(topic, payload, qos=qos, retain=True)
            self.delivery.hang_ups.sent(info.mid if qos else None, (topic, hash(payload)), len(payload))
        if with_status:
            info = link.client.publish(self.topics.status, ONLINE, qos=1, retain=True)
            self.delivery.hang_ups.sent(info.mid, (self.topics.status, hash(ONLINE)), len(ONLINE))

    def _publish_replies(self, link: _Link) -> None:
        with self._lock:
            replies = list(self._replies)
            self._replies.clear()
        for topic, payload, correlation in replies:
            props = None
            if correlation is not None and link.client.protocol == MQTTProtocolVersion.MQTTv5:
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.CorrelationData = correlation
            try:
                link.client.publish(topic, payload, qos=1, retain=False, properties=props)
            except ValueError as exc:  # a request's response topic with a wildcard: the broker forwards it
                self._unsendable_replies += 1
                n = self._unsendable_replies
                if said(n):
                    log.warning("a reply on %r was not sent (%d so far): %s", topic, n, exc)

    def _maybe_refresh(self) -> None:
        now = time.monotonic()
        if self._refresh is None or now < self._next_refresh:
            return
        self._next_refresh = now + REFRESH_S
        self._refresh()

    def _maybe_stats(self, link: _Link) -> None:
        if self._stats_payload is None or time.monotonic() < self._next_stats:
            return
        self._next_stats = time.monotonic() + self.settings.stats_interval_s
        link.client.publish(self.topics.stats, self._stats_payload(), qos=0)

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            handler = next(
                (h for t, h in self._handlers.items() if mqtt.topic_matches_sub(t, msg.topic)), None
            )
        if handler is None:
            return
        props = getattr(msg, "properties", None)
        message = Message(
            msg.topic,
            bytes(msg.payload),
            getattr(props, "ResponseTopic", None) or None,
            getattr(props, "CorrelationData", None),
            bool(msg.retain),
        )
        try:
            handler(message)
        except Exception as exc:  # one bad message never stops the link
            log.warning("handling a message on %s failed: %s", msg.topic, exc)

    def _goodbye(self) -> None:
        """Final stats and ``offline`` on a clean stop, then a clean disconnect (no last will)."""
        link = self._link
        self._link = None
        if link is None or not link.connected:
            return
        try:
            # PUBACKs of results still in flight first: one that arrives after the final stats would leave
            # them counting as dropped a result the broker has (acknowledged after its overflow drop)
            deadline = time.monotonic() + GOODBYE_ACK_WAIT_S
            while self.delivery.in_flight and time.monotonic() < deadline:
                if link.client.loop(0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
                self.delivery.flush()
            self.delivery.flush()
            self._publish_retained(link, all_now=True)  # the last state, before offline
            if self._stats_payload is not None:
                link.client.publish(self.topics.stats, self._stats_payload(), qos=0)
            info = link.client.publish(self.topics.status, OFFLINE, qos=1, retain=True)
            deadline = time.monotonic() + 1.0
            while not info.is_published() and time.monotonic() < deadline:
                if link.client.loop(0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
                self.delivery.flush()
            self.delivery.flush()
            if not info.is_published():  # a clean disconnect drops the last will: the broker may keep online
                log.warning("the broker did not acknowledge status offline; it may still show online")
            link.client.disconnect()
            link.client.loop(0.05)
        except Exception as exc:  # stopping anyway; the last will covers us
            log.debug("clean MQTT disconnect failed: %s", exc)
        with self._lock:
            self._s = replace(self._s, connected=False)
