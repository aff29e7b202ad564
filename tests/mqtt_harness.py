"""Real parts for the MQTT tests: a Mosquitto broker on a random loopback port, a paho subscriber that records
everything it receives, and ``edgeseg run`` as a subprocess. Everything started here is stopped by the
fixtures, also when a test fails.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "demo-parts.onnx"


def mosquitto_path() -> str:
    """The broker binary; missing is a failure in CI (the test command installs it) and a skip elsewhere."""
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if exe is None:
        msg = "mosquitto not installed (apt-get install mosquitto; scripts/test.sh does it as root)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port from the ephemeral range (what ``bind(0)`` hands out) can be taken while the broker is down: a
    client that keeps connecting to 127.0.0.1:P may get P as its own source port and connect to itself
    (TCP simultaneous open), and the restarted broker then fails with "Address already in use".
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class Broker:
    """One Mosquitto process; ``stop()`` and ``start()`` again on the same port model an outage.

    Persistence is on, so the test subscriber's session (and the QoS 1 messages queued for it) outlive a
    broker restart, as they would on a real installation.
    """

    def __init__(self, workdir: Path, extra_config: str = "") -> None:
        self.exe = mosquitto_path()
        self.workdir = workdir
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # started as root, Mosquitto drops to the 'mosquitto' user, which cannot read the test's files
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            # not 0 (unlimited): Mosquitto 2.0.11 then drops a client whose QoS 1 publish an ACL denies
            "max_queued_messages 100000\n" + extra_config
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        # SIGTERM, so Mosquitto saves its persistence file (the subscriber's session) as on a clean shutdown
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def dynsec_broker(workdir: Path, username: str, password: str, acls: Sequence[dict[str, Any]]) -> Broker:
    """A broker (not started) with Mosquitto's dynamic security plugin: ``username`` bound by ``acls``
    (``{"acltype": "subscribePattern", "topic": ..., "allow": False}``), anyone else allowed everything.
    Unlike an ``acl_file``, which grants every subscription and delivers nothing, the plugin refuses a
    subscription its ACL denies (SUBACK 0x80 in MQTT 3.1.1, 0x87 "Not authorized" in 5)."""
    plugins = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))
    if not plugins:
        pytest.skip("Mosquitto's dynamic security plugin is not installed (it ships with mosquitto 2)")
    # the plugin's password: PBKDF2-HMAC-SHA512 of 64 bytes, base64, beside its base64 salt and iterations
    # (mosquitto 2.0 plugins/dynamic-security/clients.c and the file `mosquitto_ctrl dynsec init` writes)
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101, 64)
    config = {
        "clients": [
            {
                "username": username,
                "password": base64.b64encode(digest).decode(),
                "salt": base64.b64encode(salt).decode(),
                "iterations": 101,
                "roles": [{"rolename": "bound"}],
            }
        ],
        "roles": [{"rolename": "bound", "acls": list(acls)}],
        "defaultACLAccess": dict.fromkeys(
            ("publishClientSend", "publishClientReceive", "subscribe", "unsubscribe"), True
        ),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "dynsec.json"
    path.write_text(json.dumps(config))
    path.chmod(0o644)  # (read by Mosquitto as the test's user)
    return Broker(workdir, extra_config=f"plugin {plugins[0]}\nplugin_opt_config_file {path}\n")


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    received: float

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """A real paho subscriber (QoS 1, persistent session) recording every message it receives."""

    def __init__(self, port: int, topics: Sequence[str] = ("#",)) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        self.client.reconnect_delay_set(0.1, 0.5)
        self._topics = topics
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        assert self.wait(lambda: self.client.is_connected(), 10)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        for topic in self._topics:
            client.subscribe(topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic()))

    def on(self, suffix: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str, timeout: float = 30.0) -> dict[str, bytes]:
    """The retained messages under ``topic`` as a fresh subscriber sees them.

    The broker queues them to the subscriber as it handles the SUBSCRIBE, and handles one client's packets
    in order: a message this probe publishes afterwards to a topic of its own comes back after them all.
    """
    got: dict[str, bytes] = {}
    name = f"probe-{uuid.uuid4().hex[:8]}"
    marker = f"{name}/done"
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == marker:
            done.set()
        elif msg.retain:
            got[msg.topic] = bytes(msg.payload)

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(topic, qos=1)
    client.subscribe(marker, qos=1)
    client.publish(marker, b"", qos=1)
    client.loop_start()
    try:
        assert done.wait(timeout), f"the broker did not deliver {marker} back within {timeout:g} s"
    finally:
        client.disconnect()
        client.loop_stop()
    return got


def edgeseg_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGESEG", "CREDENTIALS_DIRECTORY"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env.update(extra)
    return env


class Edgeseg:
    """``edgeseg run`` on the demo model and the synthetic scene, publishing to ``url``."""

    def __init__(
        self,
        workdir: Path,
        url: str,
        *args: str,
        device: str = "cam1",
        fps: float = 8.0,
        env: dict[str, str] | None = None,
        state: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.state = state or workdir / "state"
        workdir.mkdir(parents=True, exist_ok=True)
        self.stdout = workdir / f"stdout-{uuid.uuid4().hex[:6]}.txt"
        self.stderr = self.stdout.with_name(self.stdout.name.replace("stdout", "stderr"))
        cmd = [
            sys.executable, "-m", "edgeseg", "run", "--mqtt", url, "--state-dir", str(self.state),
            "--set", f"sinks.mqtt.device_id={device}", "--source", f"synthetic:parts?fps={fps}",
            "--set", "sinks.mqtt.reconnect_min_s=0.2", "--set", "sinks.mqtt.reconnect_max_s=1",
            "--set", "sinks.mqtt.stats_interval_s=1", *args,
        ]  # fmt: skip
        self.code: int | None = None
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.proc = subprocess.Popen(cmd, cwd=workdir, env=env or edgeseg_env(), stdout=out, stderr=err)

    @property
    def spool(self) -> Path:
        return next(self.state.glob("mqtt-spool-*.sqlite3"))

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(), self.stderr.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` and wait for the exit status (SIGKILL after ``timeout`` s)."""
        self.send(sig)
        try:
            return self.wait(timeout)
        finally:
            self.kill()

    def __enter__(self) -> Edgeseg:
        return self

    def __exit__(self, *exc: object) -> None:
        self.code = self.stop()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def results(messages: Sequence[Message]) -> list[dict[str, Any]]:
    return [m.json() for m in messages if m.topic.endswith("/results")]


def in_order_per_stream(docs: Sequence[dict[str, Any]]) -> bool:
    """Each (boot, live/replay) stream arrives in increasing ``seq``; a message seen before may come again
    (re-delivery after a reconnect), a new one never comes before an older new one."""
    last: dict[tuple[str, bool], int] = {}
    seen: set[tuple[str, int]] = set()
    for d in docs:
        key = (d["boot_id"], d["replay"])
        if (d["boot_id"], d["seq"]) in seen:
            continue
        seen.add((d["boot_id"], d["seq"]))
        if d["seq"] <= last.get(key, -1):
            return False
        last[key] = d["seq"]
    return True
