"""The paho client as every edgeseg connection sets it up (publisher, ``edgeseg mqtt``, ``doctor``): one place
for the protocol, TLS, credentials, last will and socket options, and for turning failures into one line."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edgeseg.mqtt.broker import BrokerAddress, Credentials

_AUTH_FAILURES = (0x86, 0x87, 4, 5)  # MQTT 5 bad user name or password / not authorized; 3.1.1 CONNACK 4, 5


def make_client(
    address: BrokerAddress,
    credentials: Credentials,
    client_id: str,
    protocol: str = "mqttv5",
    connect_timeout_s: float = 5.0,
    will: tuple[str, bytes] | None = None,
) -> mqtt.Client:
    """A configured, unconnected client (clean session: edgeseg's spool, not the broker, keeps state)."""
    v5 = protocol == "mqttv5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else True,
    )
    client.connect_timeout = connect_timeout_s
    client.on_socket_open = lambda c, u, sock: _no_delay(sock)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    if credentials.username is not None:
        client.username_pw_set(credentials.username, credentials.password)
    if address.tls:
        client.tls_set(
            ca_certs=str(credentials.ca_file) if credentials.ca_file else None,
            certfile=str(credentials.cert_file) if credentials.cert_file else None,
            keyfile=str(credentials.key_file) if credentials.key_file else None,
        )
    return client


def start_connect(client: mqtt.Client, address: BrokerAddress, keepalive_s: int) -> str | None:
    """Open the connection and send CONNECT (blocking for at most the connect timeout); ``None``, or why it
    failed in a few words. The broker's answer (CONNACK) comes later, through ``on_connect``."""
    try:
        if client.protocol == MQTTProtocolVersion.MQTTv5:
            client.connect(address.host, address.port, keepalive_s, clean_start=True)
        else:
            client.connect(address.host, address.port, keepalive_s)
    except (OSError, ValueError) as exc:
        return describe_error(exc)
    return None


def refusal(rc: ReasonCode, credentials: Credentials) -> str:
    """Why a CONNACK refused us, with a hint where the credentials came from when they are the cause."""
    hint = ""
    if rc.value in _AUTH_FAILURES:
        hint = f" (check the MQTT credentials; from {credentials.origin})"
    return f"broker refused the connection: {rc}{hint}"


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    return str(exc) or type(exc).__name__


def _no_delay(sock: Any) -> None:
    # results are small and latency matters more than packing: send each at once
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
