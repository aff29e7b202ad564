"""``edgeseg mqtt listen`` / ``forget`` and the broker check of ``edgeseg doctor``: short-lived clients that
share the sink's URL, credential and topic rules."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import uuid
from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TextIO

from edgeseg.errors import ConfigError, EdgesegError, InputError, TransientError
from edgeseg.mqtt.broker import BrokerAddress, Credentials, device_id, load_credentials, parse_broker_url
from edgeseg.mqtt.topics import Topics

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from edgeseg.sinks.mqtt import MqttSinkConfig

ELIDE_OVER = 48  # characters of an RLE string shown by ``listen`` unless --raw


class BrokerError(EdgesegError):
    """The broker cannot be reached, or refuses the connection."""


class BrokerUnreachableError(BrokerError, TransientError):
    """No connection, or no answer to it: the broker down or the network away, which its return fixes
    (status 4, where a refusal of the credentials or settings is 2)."""


def connect(
    address: BrokerAddress, credentials: Credentials, protocol: str, timeout: float = 5.0
) -> mqtt.Client:
    """A connected client with its network loop running, speaking ``protocol`` (``sinks.mqtt.protocol``: a
    broker of MQTT 3.1.1 only refuses a client of 5); :class:`BrokerError` in one line otherwise."""
    # paho (with ssl: ~8 MB of RSS) only for a command that talks to a broker: every command builds the
    # argument parser from this module
    from edgeseg.mqtt.client import describe_error, make_client, refusal, start_connect

    try:
        client = make_client(
            address,
            credentials,
            f"edgeseg-tool-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
            connect_timeout_s=timeout,
        )
    except (OSError, ValueError) as exc:
        raise BrokerError(f"cannot connect to {address}: {describe_error(exc)}") from None
    answer: list[Any] = []
    ready = threading.Event()

    def on_connect(c: mqtt.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
        answer.append(rc)
        ready.set()

    client.on_connect = on_connect
    problem = start_connect(client, address, keepalive_s=30)
    if problem is not None:
        raise BrokerUnreachableError(f"cannot connect to {address}: {problem}")
    client.loop_start()
    if not ready.wait(timeout) or answer[0].is_failure:
        client.loop_stop()
        if not answer:
            raise BrokerUnreachableError(f"{address}: no answer within {timeout:g} s")
        raise BrokerError(f"{address}: {refusal(answer[0], credentials)}")
    return client


def check(
    address: BrokerAddress, credentials: Credentials, protocol: str, timeout: float = 5.0
) -> str | None:
    """``None`` when the broker accepts a connection with these credentials and protocol, else why not."""
    try:
        client = connect(address, credentials, protocol, timeout)
    except BrokerError as exc:
        return str(exc)
    client.disconnect()
    client.loop_stop()
    return None


def describe(payload: bytes, raw: bool = False) -> str:
    """A payload as one printable line: JSON compact (long RLE strings elided unless ``raw``), text as is
    (as a JSON string where it is not printable as it is), binary as its size and kind."""
    if payload[:3] == b"\xff\xd8\xff":
        return f"<JPEG image, {len(payload)} bytes>"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(payload)} bytes of binary data>"
    try:
        doc = json.loads(text)
        return json.dumps(doc if raw else _elide(doc), separators=(",", ":"))
    except (ValueError, RecursionError):  # not JSON, or nested deeper than these recurse: shown as text
        # quoted where a line break or a control character (an escape sequence) would print as it is
        return text if text.isprintable() else json.dumps(text)


def _elide(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {
            k: (
                f"<{len(v)} chars>"
                if k == "counts" and isinstance(v, str) and len(v) > ELIDE_OVER
                else _elide(v)
            )
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [_elide(v) for v in doc]
    return doc


def listen(
    client: mqtt.Client,
    topics: Sequence[str],
    out: TextIO,
    count: int | None = None,
    timeout: float | None = None,
    raw: bool = False,
) -> int:
    """Print ``topic payload`` lines for messages on ``topics`` until ``count`` messages or ``timeout`` s;
    returns how many were printed."""
    printed = 0
    done = threading.Event()
    lock = threading.Lock()
    failed: list[OSError] = []

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal printed
        with lock:
            if done.is_set():
                return
            flag = " (retained)" if msg.retain else ""
            try:
                out.write(f"{msg.topic}{flag} {describe(bytes(msg.payload), raw)}\n")
                out.flush()
            except OSError as exc:
                # raised here, it would end paho's network thread and leave the wait below without an end
                # (`edgeseg mqtt listen | head -1`): the caller's thread raises it
                failed.append(exc)
                done.set()
                return
            printed += 1
            if count is not None and printed >= count:
                done.set()

    def subscribe() -> None:
        for topic in topics:
            client.subscribe(topic, qos=1)

    def on_connect(c: mqtt.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
        # paho reconnects by itself with a clean session: a broker that restarted forgot the subscriptions,
        # and nothing more was printed
        if not rc.is_failure:
            subscribe()

    client.on_message = on_message
    client.on_connect = on_connect
    subscribe()
    done.wait(timeout)
    done.set()
    if failed:
        raise failed[0]
    return printed


def _retained(
    client: mqtt.Client, topics: Topics, settle_s: float, discovery: bool, check: bool = True
) -> list[str]:
    """The device's topics (discovery included) that hold a retained message now; with ``check``, a
    :class:`BrokerError` where the broker does not let this user read them (the discovery's too, if
    ``discovery``)."""
    found: set[str] = set()
    lock = threading.Lock()
    # a broker whose ACL denies reading grants the subscription all the same and delivers nothing (Mosquitto
    # 2): no retained topic seen, "cleared 0", and the device stayed in Home Assistant. A message of our own
    # (empty, not retained, on a level no device uses) that does not come back, with nothing else, says so
    # (one denied publishing alone still reads what it could not clear: forget says that). One in each tree:
    # a user who may read <prefix>/# but not homeassistant/# saw the device's topics only, "cleared" them, and
    # the discovery stayed. (Home Assistant takes only topics that end in /config for discovery.) A device
    # with sinks.mqtt.discovery: false may well have no right there
    tag = uuid.uuid4().hex[:8]
    discovery_tree = topics.discovery.rsplit("/", 1)[0]
    probes = {f"{topics.base}/forget-probe/{tag}": topics.base}  # probe: the tree it tests
    if discovery:
        probes[f"{discovery_tree}/forget-probe-{tag}"] = discovery_tree
    echoed: set[str] = set()
    all_back = threading.Event()

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with lock:
            if msg.topic in probes:
                echoed.add(msg.topic)
                if len(echoed) == len(probes):
                    all_back.set()
            elif msg.retain and msg.payload:
                found.add(msg.topic)

    subscriptions = [topics.discovery, f"{topics.base}/#", *probes]
    client.on_message = on_message
    client.subscribe([(topic, 1) for topic in subscriptions])
    for probe in probes:  # (after the subscription: a broker takes a client's packets in order)
        client.publish(probe, b"", qos=1)
    # the broker sends a subscription's retained messages before it takes our next packet, and a client's
    # messages in order: every probe back, every retained message is here (a fixed wait made forget take 3 s
    # for nothing). One that never comes back (denied) waits settle_s
    all_back.wait(settle_s)
    client.unsubscribe(subscriptions)
    with lock:
        unread = [
            f"{tree}/#"
            for probe, tree in probes.items()
            if probe not in echoed and not any(topic.startswith(f"{tree}/") for topic in found)
        ]
        # (a user who may not publish sees no probe come back: one who reads what it cannot clear, with no
        # probe back, is told so by forget)
        if check and unread and (echoed or not found):
            lost = " and ".join(probe for probe in probes if probe not in echoed)
            raise BrokerError(
                f"the broker did not deliver to this user its own test message on {lost} within {settle_s:g} "
                f"s: does its ACL let this user read (and publish to) {' and '.join(unread)}? "
                "Nothing was cleared"
            )
        return sorted(found)


def forget(client: mqtt.Client, topics: Topics, settle_s: float = 1.5, discovery: bool = True) -> list[str]:
    """Clear the device's retained messages (discovery, status, info, counts, snapshot) with empty retained
    payloads, which removes it from Home Assistant; returns the topics cleared, or raises
    :class:`BrokerError` naming those the broker kept. ``discovery``: whether the user must be able to read
    the discovery prefix (a discovery seen there is cleared either way)."""
    cleared = _retained(client, topics, settle_s, discovery)
    for topic in cleared:
        client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    # a broker whose ACL denies this user the topics acknowledges the empty payloads all the same (MQTT 3.1.1
    # cannot say no), and a device still running publishes them again: forget said "cleared" and Home
    # Assistant kept the device; what is still there says it
    # (what was cleared was read before: this look needs only the base tree's test message, which says the
    # broker has sent everything; the discovery's never comes back to a user granted the discovery topic
    # alone, and "Nothing was cleared" was said of what was)
    kept = _retained(client, topics, settle_s, discovery=False, check=False) if cleared else []
    if kept:
        raise BrokerError(
            f"the broker kept {len(kept)} of the {len(cleared)} retained topic(s) of {topics.device_id} "
            f"({', '.join(kept[:3])}{', ...' if len(kept) > 3 else ''}): does its ACL let this user publish "
            "there? (or the device runs and publishes them again: stop it first)"
        )
    return cleared


# the ``edgeseg mqtt`` command ----------------------------------------------------------------------------


def _target(args: argparse.Namespace) -> tuple[BrokerAddress, Credentials, Topics, MqttSinkConfig]:
    """Broker, credentials and topics from ``--url``/``--device-id``/``--prefix``, else the pipeline's
    ``sinks.mqtt`` section; the section too (its protocol and discovery)."""
    from edgeseg.cliconfig import pipeline_path
    from edgeseg.config import load_config
    from edgeseg.sinks.mqtt import MqttSinkConfig
    from edgeseg.validate import constrain

    # the flags skip the pipeline's validation: a wildcard in a topic level was a paho traceback
    rules = {f.name: f.metadata for f in fields(MqttSinkConfig)}
    for flag, name in (("--prefix", "prefix"), ("--device-id", "device_id")):
        if (value := getattr(args, name)) is not None:
            _check_utf8(flag, value)
            constrain(flag, value, rules[name])
    section = MqttSinkConfig()
    if args.pipeline is not None or not args.url:
        # a bundled pipeline's name too, as 'edgeseg run NAME' takes it
        section = load_config(pipeline_path(args.pipeline)).sinks.section(MqttSinkConfig)
    url = args.url or section.url
    if not url:
        raise ConfigError("sinks.mqtt.url: no broker given (use --url mqtt://host[:port] or a pipeline file)")
    address = parse_broker_url(url, "--url" if args.url else "sinks.mqtt.url")
    creds = load_credentials(
        section.username_file, section.password_file, section.ca_file, section.cert_file, section.key_file
    )
    topics = Topics(
        args.prefix or section.prefix,
        device_id(args.device_id or section.device_id),
        section.discovery_prefix,
    )
    return address, creds, topics, section


def add_parser(sub: Any) -> None:
    """The ``mqtt`` subcommand and its ``listen`` and ``forget`` actions."""
    p = sub.add_parser(
        "mqtt",
        help="listen to a device's messages, or make a broker forget a device",
        description="Helpers for the MQTT side of a pipeline. The broker, device id, credentials and protocol"
        " come from --url/--device-id or the pipeline file's sinks.mqtt section.",
    )
    actions = p.add_subparsers(dest="mqtt_action", metavar="ACTION", required=True)
    for name, text in (
        ("listen", "print the messages a device publishes, decoded (like mosquitto_sub piped to jq)"),
        ("forget", "clear the device's retained messages and its Home Assistant discovery"),
    ):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument(
            "pipeline", nargs="?", metavar="PIPELINE", help="pipeline YAML or a bundled name (default: demo)"
        )
        a.add_argument("--url", metavar="URL", help="broker, mqtt://host[:port] (default: sinks.mqtt.url)")
        a.add_argument("--device-id", metavar="ID", help="device id (default: sinks.mqtt.device_id)")
        a.add_argument("--prefix", metavar="PREFIX", help="topic prefix (default: sinks.mqtt.prefix)")
        if name == "listen":
            a.add_argument("--topic", action="append", metavar="TOPIC",
                           help="topic filter (repeatable; default: <prefix>/<device_id>/#)")  # fmt: skip
            a.add_argument("--count", type=int, metavar="N", help="exit after N messages")
            a.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")
            a.add_argument("--raw", action="store_true", help="print RLE mask strings in full")


def _check_limits(args: argparse.Namespace) -> None:
    """``--count`` and ``--timeout`` that ``listen`` can keep: with 0 messages it waited for a first one
    (forever on a quiet device) and printed it; an infinite timeout raised OverflowError in the wait."""
    if args.count is not None and args.count < 1:
        raise InputError(f"--count: must be >= 1 (got {args.count})")
    if args.timeout is not None and not 0 < args.timeout <= threading.TIMEOUT_MAX:
        raise InputError(f"--timeout: must be a number of seconds > 0 (got {args.timeout:g})")


def _check_utf8(flag: str, value: str) -> bytes:
    """``value`` as UTF-8; an :class:`InputError` for an argument of bytes not UTF-8 (Python keeps them as
    surrogates, which paho's encoding raised on: UnicodeEncodeError, a traceback)."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{flag} {value!r}: not UTF-8 text") from None


def _check_filters(topics: Sequence[str]) -> None:
    """``--topic`` filters a broker takes (MQTT 5.0, 4.7): paho refused the others in the subscription, a
    traceback ("ValueError: Invalid subscription filter." or, for a name not UTF-8, UnicodeEncodeError)."""
    for topic in topics:
        size = len(_check_utf8("--topic", topic))
        levels = topic.split("/")
        wild = any(len(level) > 1 and ("+" in level or "#" in level) for level in levels)
        if not 0 < size <= 65535 or wild or "#" in levels[:-1]:
            raise InputError(
                f"--topic {topic!r}: not an MQTT topic filter (+ and # stand for a whole level, # for the "
                "last one only)"
            )


def command(args: argparse.Namespace) -> int:
    if args.mqtt_action == "listen":
        _check_limits(args)
        _check_filters(args.topic or [])
    address, creds, topics, section = _target(args)
    client = connect(address, creds, section.protocol)
    try:
        if args.mqtt_action == "listen":
            listen(client, args.topic or [f"{topics.base}/#"], sys.stdout, args.count, args.timeout, args.raw)
        else:
            cleared = forget(client, topics, discovery=section.discovery)
            print(f"cleared {len(cleared)} retained topic(s) of {topics.device_id} on {address}")
            for topic in cleared:
                print(f"  {topic}")
    except KeyboardInterrupt:
        return 130
    finally:
        client.disconnect()
        client.loop_stop()
    return 0
