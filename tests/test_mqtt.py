"""Publishing over MQTT against a real Mosquitto broker, a real paho subscriber and ``edgeseg run`` processes
killed with real signals. Broker outages are real too: the broker process is stopped and started again."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import pytest
from mjpeg import MjpegServer
from mqtt_harness import (
    REPO,
    Broker,
    Collector,
    Edgeseg,
    edgeseg_env,
    free_port,
    in_order_per_stream,
    results,
    retained,
)

from edgeseg.mqtt.topics import Topics, load_schema
from edgeseg.synthetic import PartsScene

SCHEMAS = {kind: load_schema(kind) for kind in ("results", "info", "stats", "discovery", "config_result")}
# a broker outage: 5 or so failed connects at the harness's 0.2..1 s reconnect delays, 30 results offered
# (8 a second), and a 30000-byte spool full within its first second (the demo's results are 8-9 KB)
OUTAGE_S = 4.0


def validate(kind: str, doc: Any) -> None:
    jsonschema.validate(doc, SCHEMAS[kind], format_checker=jsonschema.FormatChecker())


def spooled(path: Path) -> list[tuple[str, int]]:
    """(boot_id, seq) of every results message in a spool file, in spool order (events share the spool)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT payload FROM messages WHERE topic LIKE '%/results' ORDER BY id").fetchall()
    return [(d["boot_id"], d["seq"]) for d in (json.loads(r[0]) for r in rows)]


def spooled_per_topic(path: Path) -> dict[str, int]:
    """How many messages of each topic a spool file holds."""
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT topic, COUNT(*) FROM messages GROUP BY topic").fetchall())


def spool_bytes(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COALESCE(SUM(size), 0) FROM messages").fetchone()[0])


def results_spooled(stdout: str) -> int:
    match = re.search(r"(\d+) results spooled", stdout)
    assert match, stdout
    return int(match.group(1))


def unique_results(collector: Collector) -> set[tuple[str, int]]:
    return {(d["boot_id"], d["seq"]) for d in results(collector.on("/results"))}


def test_every_payload_validates_and_status_follows_the_process_to_its_sigkill(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    run = Edgeseg(tmp_path, broker.url, "--set", "sinks.mqtt.snapshot_interval_s=1")
    try:
        assert collector.wait(lambda: len(collector.on("/results")) >= 6 and collector.on("/stats"), 90), (
            run.output()
        )
        assert collector.wait(lambda: collector.on("/snapshot"), 10)
        assert retained(broker.port, "edgeseg/cam1/status") == {"edgeseg/cam1/status": b"online"}
        run.kill()  # SIGKILL: no goodbye, the broker publishes the last will
        assert collector.wait(lambda: collector.on("/status")[-1].payload == b"offline", 10)
    finally:
        run.kill()
    assert retained(broker.port, "edgeseg/cam1/status") == {"edgeseg/cam1/status": b"offline"}
    status = [m.payload for m in collector.on("edgeseg/cam1/status")]
    assert status[0] == b"online"
    for m in collector.on("/results"):
        validate("results", m.json())
    for m in collector.on("/stats"):
        validate("stats", m.json())
    memory = collector.on("/stats")[-1].json()["memory_mb"]  # the device process's own, from /proc
    assert 0 < memory["resident"] <= memory["peak"]
    info = collector.on("/info")[-1].json()
    validate("info", info)
    assert info["frame"] == {"width": 640, "height": 480}
    assert info["classes"] == ["background", "nut", "washer", "bolt"]
    validate("discovery", collector.on("homeassistant/device/cam1/config")[0].json())
    assert collector.on("/snapshot")[0].payload[:2] == b"\xff\xd8"  # a JPEG
    assert {m.topic for m in collector.messages if "/counts/" in m.topic} >= {
        f"edgeseg/cam1/counts/{c}" for c in ("nut", "washer", "bolt", "all")
    }
    seqs = [d["seq"] for d in results(collector.on("/results"))]
    assert seqs == list(range(len(seqs)))


def test_online_is_published_after_info_and_discovery_on_every_connect(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    with Edgeseg(tmp_path, broker.url) as run:
        assert collector.wait(lambda: collector.on("/status"), 60), run.output()
    order = [m.topic for m in collector.messages]
    first_online = order.index("edgeseg/cam1/status")
    assert "edgeseg/cam1/info" in order[:first_online]
    assert "homeassistant/device/cam1/config" in order[:first_online]


def test_a_clean_stop_delivers_the_spool_publishes_offline_and_exits_0(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    run = Edgeseg(tmp_path, broker.url)
    assert collector.wait(lambda: len(collector.on("/results")) >= 5, 90), run.output()
    assert run.stop() == 0
    out, err = run.output()
    n = results_spooled(out)
    assert collector.wait(lambda: len(unique_results(collector)) == n, 10)
    # the broker hands the collector each message in its own time: offline, published last, may come later
    assert collector.wait(lambda: collector.on("/status")[-1].payload == b"offline", 10)
    assert spooled(run.spool) == []
    assert "LOST" not in out
    assert "Traceback" not in err


def test_a_broker_outage_loses_nothing_and_each_stream_stays_in_order(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    with Edgeseg(tmp_path, broker.url) as run:
        assert collector.wait(lambda: len(collector.on("/results")) >= 5, 90), run.output()
        broker.stop()
        time.sleep(OUTAGE_S)
        during = len(spooled(run.spool))
        broker.start()
        assert collector.wait(lambda: any(d["replay"] for d in results(collector.on("/results"))), 30)

        def caught_up() -> bool:  # the replay is through and live results flow again
            docs = results(collector.on("/results"))
            seqs = {d["seq"] for d in docs}
            return not docs[-1]["replay"] and seqs == set(range(max(seqs) + 1))

        assert collector.wait(caught_up, 30)
    code = run.code
    out, err = run.output()
    assert code == 0, (out, err)
    n = results_spooled(out)
    docs = results(collector.on("/results"))
    boot = docs[0]["boot_id"]
    assert collector.wait(lambda: unique_results(collector) == {(boot, s) for s in range(n)}, 15), (
        n,
        sorted(unique_results(collector))[-5:],
    )
    docs = results(collector.on("/results"))
    assert during >= 10  # the spool grew while the broker was down (8 results per second are offered)
    assert in_order_per_stream(docs)
    assert any(not d["replay"] for d in docs[-3:])  # the run ended on live results
    assert spooled(run.spool) == []
    assert "cannot connect to mqtt://127.0.0.1" in err  # the outage was logged ...
    assert err.count("cannot connect") <= 3  # ... once per reason, not once per attempt


def test_results_spooled_before_a_sigkill_during_an_outage_arrive_after_a_restart(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    first = Edgeseg(tmp_path, broker.url)
    try:
        assert collector.wait(lambda: len(collector.on("/results")) >= 5, 90), first.output()
        broker.stop()
        assert collector.wait(lambda: len(spooled(first.spool)) >= 10, 30), first.output()
    finally:
        first.kill()
    before_kill = spooled(first.spool)
    assert len(before_kill) >= 10
    second = Edgeseg(tmp_path, broker.url)  # same state directory and device: the same spool
    try:
        # its own results join the first run's in the spool before the broker is back
        ours = lambda: {b for b, _ in spooled(second.spool)} - {before_kill[0][0]}  # noqa: E731
        assert collector.wait(ours, 60), second.output()
        broker.start()
        wanted = set(before_kill)
        assert collector.wait(lambda: wanted <= unique_results(collector), 60), second.output()
    finally:
        assert second.stop() == 0
    docs = results(collector.on("/results"))
    replayed_first_boot = [d["seq"] for d in docs if d["boot_id"] == before_kill[0][0] and d["replay"]]
    assert replayed_first_boot == sorted(set(replayed_first_boot))  # in order, no gaps out of order
    assert in_order_per_stream(docs)
    assert spooled(second.spool) == []


def test_an_outage_longer_than_the_spool_keeps_it_within_its_cap_and_counts_every_drop(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    cap = 30_000
    # results only: track events share the spool and its loss counters (tests/test_mqtt_events.py)
    no_events = ("--set", "tracker.enabled=false", "--set", "lines={}")
    with Edgeseg(tmp_path, broker.url, "--set", f"sinks.mqtt.spool_max_bytes={cap}", *no_events) as run:
        assert collector.wait(lambda: len(collector.on("/results")) >= 3, 90), run.output()
        broker.stop()
        sizes = []
        for _ in range(int(OUTAGE_S)):
            time.sleep(1)
            sizes.append(spool_bytes(run.spool))
        broker.start()
        assert collector.wait(lambda: any(d["replay"] for d in results(collector.on("/results"))), 30)
    code = run.code
    out, err = run.output()
    assert max(sizes) <= cap
    assert run.spool.stat().st_size < 4 * cap + 2**20
    n = results_spooled(out)
    assert collector.wait(lambda: collector.on("/status")[-1].payload == b"offline", 10)
    final = collector.on("/stats")[-1].json()
    received = unique_results(collector)
    dropped = final["spool"]["dropped_overflow"]
    assert dropped > 0
    # every result is received or counted dropped; a result the broker took just before it stopped but could
    # not acknowledge may be both (the spool's contract: its counts never under-state a loss), and at most
    # max_inflight (20) results are unacknowledged at once
    assert n - len(received) <= dropped <= n - len(received) + 20
    assert final["results"]["lost"] == dropped
    assert code == 3, (out, err)  # results were lost: the run says so in its exit status ...
    assert f"{dropped} (spool overflow)" in out  # ... and in its summary
    assert re.search(r"spool .* is full .* dropped the \d+ oldest", err)  # and logged when it happened


def test_an_outage_longer_than_a_spool_shared_with_events_counts_results_and_events_lost_apart(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    """The demo pipeline's line makes track events, which share the spool with the results: stats'
    results.lost counted the events the overflow dropped too, events.lost none of them, and the summary's
    "acknowledged by the broker", beside "N results spooled", counted the events as well."""
    cap = 30_000
    with Edgeseg(tmp_path, broker.url, "--set", f"sinks.mqtt.spool_max_bytes={cap}") as run:
        assert collector.wait(lambda: len(collector.on("/results")) >= 3, 90), run.output()
        broker.stop()
        time.sleep(OUTAGE_S)
        broker.start()
        assert collector.wait(lambda: any(d["replay"] for d in results(collector.on("/results"))), 30)
    out, err = run.output()
    assert collector.wait(lambda: collector.on("/status")[-1].payload == b"offline", 10)
    final = collector.on("/stats")[-1].json()
    validate("stats", final)
    events = re.search(r"mqtt: (\d+) events spooled", out)
    acked = re.search(r"results spooled, (\d+) acknowledged by the broker", out)
    assert events, out
    assert acked, out
    received = len(unique_results(collector))
    received_events = len({m.json()["event_seq"] for m in collector.on("/events")})
    assert final["spool"]["dropped"] == final["results"]["lost"] + final["events"]["lost"]
    # each is received or counted lost; at most max_inflight (20) taken by the broker unacknowledged and both
    assert 0 <= final["results"]["lost"] - (results_spooled(out) - received) <= 20
    assert final["events"]["lost"] > 0
    assert 0 <= final["events"]["lost"] - (int(events[1]) - received_events) <= 20
    assert 0 <= received - int(acked[1]) <= 20
    # the summary counts the events the overflow dropped too, and says the loss is of both
    overflow = re.search(r"mqtt: LOST (\d+) \(spool overflow\) messages \(results and events\)", out)
    assert overflow, out
    assert int(overflow[1]) == final["spool"]["dropped_overflow"]
    assert run.code == 3, (out, err)
    assert "Traceback" not in err


def test_home_assistant_birth_makes_the_device_send_discovery_again_whatever_its_discovery_prefix(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    # Home Assistant's birth topic is homeassistant/status whatever its discovery prefix (DEFAULT_BIRTH_WILL_
    # TOPIC, homeassistant/components/mqtt/const.py): the device listened on <discovery_prefix>/status
    topic = "ha/device/cam1/config"
    with Edgeseg(tmp_path, broker.url, "--set", "sinks.mqtt.discovery_prefix=ha") as run:
        assert collector.wait(lambda: collector.on("/status") and collector.on(topic), 60), run.output()
        assert len(collector.on(topic)) == 1
        collector.publish("homeassistant/status", b"online")
        assert collector.wait(lambda: len(collector.on(topic)) == 2, 10)
        collector.publish("ha/status", b"online")  # (a birth moved along with the prefix)
        assert collector.wait(lambda: len(collector.on(topic)) == 3, 10)
    doc = collector.on(topic)[-1].json()
    validate("discovery", doc)
    assert doc["dev"]["ids"] == ["edgeseg_cam1"]
    assert {c["p"] for c in doc["cmps"].values()} == {"sensor", "binary_sensor", "number", "button"}
    assert {"count_nut", "count_washer", "count_bolt", "fps", "memory", "detected"} <= set(doc["cmps"])


def test_a_component_gone_after_a_model_change_is_removed_from_home_assistant(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    # Home Assistant keeps a component a device discovery payload merely omits: it removes one sent as
    # {"p": <platform>} only. The second model calls the nut a hexnut: "nut count" must go, not stay at 0
    models = Path(__file__).resolve().parents[1] / "models"
    other = tmp_path / "model"
    other.mkdir()
    shutil.copy(models / "demo-parts.onnx", other / "demo-parts.onnx")
    card = (models / "demo-parts.yaml").read_text()
    assert "classes: [background, nut, washer, bolt]" in card
    (other / "demo-parts.yaml").write_text(card.replace("[background, nut,", "[background, hexnut,"))
    topic = "homeassistant/device/cam1/config"
    with Edgeseg(tmp_path, broker.url) as run:
        assert collector.wait(lambda: collector.on(topic), 60), run.output()
    assert collector.on(topic)[-1].json()["cmps"]["count_nut"]["p"] == "sensor"
    with Edgeseg(tmp_path, broker.url, "--set", f"model.path={other / 'demo-parts.onnx'}") as run:
        assert collector.wait(lambda: len(collector.on(topic)) >= 2, 60), run.output()
    doc = collector.on(topic)[-1].json()
    validate("discovery", doc)
    assert doc["cmps"]["count_hexnut"]["p"] == "sensor"
    assert doc["cmps"]["count_nut"] == {"p": "sensor"}
    assert doc["cmps"]["count_washer"]["unique_id"] == "edgeseg_cam1_count_washer"
    # a third start with the same model has nothing left to remove
    with Edgeseg(tmp_path, broker.url, "--set", f"model.path={other / 'demo-parts.onnx'}") as run:
        assert collector.wait(lambda: len(collector.on(topic)) >= 3, 60), run.output()
    assert "count_nut" not in collector.on(topic)[-1].json()["cmps"]


def test_forget_clears_discovery_and_the_device_retained_topics(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    with Edgeseg(tmp_path, broker.url) as run:
        assert collector.wait(lambda: collector.on("/status"), 60), run.output()
    assert retained(broker.port, "homeassistant/device/cam1/config")
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "mqtt", "forget", "--url", broker.url, "--device-id", "cam1"],
        env=edgeseg_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "cleared" in done.stdout
    assert retained(broker.port, "homeassistant/device/cam1/config") == {}
    assert retained(broker.port, "edgeseg/cam1/#") == {}


def test_forget_returns_once_its_test_messages_are_back_not_after_a_fixed_wait(
    broker: Broker, collector: Collector
) -> None:
    """forget slept its settle time (1.5 s) twice, whatever came back: a user waited 3 s for nothing. Its own
    test messages, delivered after the retained ones, say when the broker has sent everything."""
    from edgeseg.mqtt.broker import Credentials, parse_broker_url
    from edgeseg.mqtt.topics import Topics
    from edgeseg.mqtt_commands import connect, forget

    collector.publish("homeassistant/device/cam1/config", b"{}", retain=True)
    collector.publish("edgeseg/cam1/status", b"online", retain=True)
    client = connect(parse_broker_url(broker.url), Credentials(), "mqttv5")
    cleared: list[list[str]] = []
    try:
        # a settle time no test waits for: forget returns when its test messages are back
        topics = Topics("edgeseg", "cam1")
        worker = threading.Thread(target=lambda: cleared.append(forget(client, topics, 600)), daemon=True)
        worker.start()
        worker.join(15)
    finally:
        client.disconnect()
        client.loop_stop()
    assert cleared == [["edgeseg/cam1/status", "homeassistant/device/cam1/config"]]


def test_snapshots_always_too_large_are_logged_three_times_then_once_a_hundred_not_once_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot over sinks.mqtt.snapshot_max_bytes (a busy scene's JPEG) stays over it: one warning a
    snapshot_interval_s for as long as the scene stays busy."""
    import numpy as np

    from edgeseg.frame import Frame, Result
    from edgeseg.instances import Instances
    from edgeseg.mqtt.broker import Credentials
    from edgeseg.sinks.base import SinkContext
    from edgeseg.sinks.mqtt import MqttSinkConfig
    from edgeseg.sinks.mqtt_sink import MqttSink

    config = MqttSinkConfig(
        url="mqtt://127.0.0.1:1", device_id="cam1", snapshot_interval_s=1e-9, snapshot_max_bytes=1024
    )
    sink = MqttSink(config, SinkContext(class_names=("nut",), state_dir=tmp_path), Credentials())
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)  # JPEG: ~5 kB
    try:
        for i in range(250):
            sink.send(Result(Frame(i, noise, i, 1.0e9, source="test"), Instances.empty((48, 64))))
    finally:
        sink.close()
    lines = [r.getMessage() for r in caplog.records if "snapshot of frame" in r.getMessage()]
    assert len(lines) == 5, lines  # snapshots 1, 2, 3, 100 and 200
    assert "(200 so far)" in lines[-1]
    assert json.loads(sink._stats_payload())["snapshots_skipped"] == 250


def test_a_retained_topic_always_over_the_packet_limit_is_logged_three_times_then_once_a_hundred(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The snapshot over the broker's packet limit: one warning a snapshot_interval_s, for good."""
    from edgeseg.mqtt.broker import Credentials, parse_broker_url
    from edgeseg.mqtt.publisher import Publisher, PublisherSettings
    from edgeseg.mqtt.spool import Spool
    from edgeseg.mqtt.topics import Topics

    small = Broker(tmp_path / "broker", extra_config="max_packet_size 2000\n")
    small.start()
    topics = Topics("edgeseg", "cam1")
    spool = Spool(tmp_path / "spool.sqlite3", 1 << 20, 3600.0)
    publisher = Publisher(
        parse_broker_url(small.url), Credentials(), "cam1", spool, topics, PublisherSettings()
    )
    publisher.start()
    try:
        for i in range(250):
            publisher.set_retained(topics.snapshot, b"%d" % i + b"x" * 3000, qos=0)
            deadline = time.monotonic() + 10
            while (
                publisher.stats().skipped_retained.get(topics.snapshot, 0) <= i
                and time.monotonic() < deadline
            ):
                time.sleep(0.001)
    finally:
        assert publisher.close(flush_timeout_s=2.0)
        spool.close()
        small.stop()
    assert publisher.stats().skipped_retained == {topics.snapshot: 250}
    lines = [r.getMessage() for r in caplog.records if "over the broker's packet limit" in r.getMessage()]
    assert len(lines) == 5, lines  # 1, 2, 3, 100 and 200
    assert "(200 so far)" in lines[-1]


def _forward(src: socket.socket, dst: socket.socket, chunks: int | None = None) -> None:
    """Copies to ``dst`` what ``src`` sends: its first ``chunks`` reads, or (None) all of it, and then its end
    as a half-close."""
    with contextlib.suppress(OSError):
        while chunks != 0 and (data := src.recv(65536)):
            dst.sendall(data)
            chunks = None if chunks is None else chunks - 1
    if chunks is None:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def _loopback_listener(on_accept: Callable[[socket.socket, list[socket.socket]], None]) -> Iterator[int]:
    """A listener on a loopback port (yielded) that hands each connection to ``on_accept``, on its accept
    thread, with the list of sockets closed at the end (every connection, and those ``on_accept`` adds)."""
    server = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conns.append(conn)
            on_accept(conn, conns)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        # close() alone does not wake the thread blocked in accept() (Linux): the join waited out its 5 s
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()
        for conn in conns:
            conn.close()
        thread.join(5)


@contextlib.contextmanager
def _mqtt311_only(broker_port: int) -> Iterator[int]:
    """A relay on a loopback port (yielded) to the broker on ``broker_port`` that speaks MQTT 3.1.1 only, as
    a broker of that version does: a CONNECT of another protocol level is answered with CONNACK return code
    1, "unacceptable protocol version", and the connection closed (MQTT 3.1.1, 3.1.2.2 [MQTT-3.1.2-2]).
    (Mosquitto 2.0 accepts every version and has no setting to refuse one.)"""

    def relay(device: socket.socket, conns: list[socket.socket]) -> None:
        with contextlib.suppress(OSError):
            # CONNECT: fixed header (type, remaining length as a varint), then 00 04 "MQTT" and the level
            head = device.recv(2)
            while head[-1] & 0x80:
                head += device.recv(1)
            rest = b""
            while len(rest) < 7 and (more := device.recv(7 - len(rest))):
                rest += more
            if rest[6:7] != b"\x04":
                device.sendall(b"\x20\x02\x00\x01")
                device.close()
                return
            broker = socket.create_connection(("127.0.0.1", broker_port))
            conns.append(broker)
            broker.sendall(head + rest)
            threading.Thread(target=_forward, args=(device, broker), daemon=True).start()
            threading.Thread(target=_forward, args=(broker, device), daemon=True).start()

    with _loopback_listener(relay) as port:
        yield port


def _pipeline_with_mqtt(tmp_path: Path, mqtt: str) -> Path:
    """A pipeline file in ``tmp_path``: the demo model, and ``mqtt`` (a YAML flow mapping) as sinks.mqtt."""
    pipeline = tmp_path / "p.yaml"
    model = Path(__file__).resolve().parents[1] / "models" / "demo-parts.onnx"
    pipeline.write_text(f"model: {{path: {model}}}\nsinks: {{mqtt: {mqtt}}}\n")
    return pipeline


def _forget(pipeline: Path) -> subprocess.CompletedProcess[str]:
    """``edgeseg mqtt forget`` of the device that the pipeline file ``pipeline`` names."""
    return subprocess.run(
        [sys.executable, "-m", "edgeseg", "mqtt", "forget", str(pipeline)],
        env=edgeseg_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_forget_listen_and_doctor_speak_the_pipelines_mqtt_protocol_to_a_broker_of_3_1_1_only(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    """The tools always connected with MQTT 5, whatever sinks.mqtt.protocol said: a broker that speaks only
    3.1.1 refused them, and doctor said the broker was unusable while the pipeline published to it fine."""
    from edgeseg.config import load_config
    from edgeseg.doctor import broker_checks

    collector.publish("edgeseg/cam1/status", b"online", retain=True)
    with _mqtt311_only(broker.port) as port:
        mqtt = f"{{url: 'mqtt://127.0.0.1:{port}', device_id: cam1, protocol: mqttv311}}"
        pipeline = _pipeline_with_mqtt(tmp_path, mqtt)
        [check] = broker_checks("p", load_config(pipeline, env={}), env={})
        assert check.ok, check.detail
        listen = subprocess.run(
            [sys.executable, "-m", "edgeseg", "mqtt", "listen", str(pipeline), "--count", "1",
             "--timeout", "20"],
            env=edgeseg_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert listen.returncode == 0, listen.stderr
        assert "edgeseg/cam1/status" in listen.stdout
        forget = _forget(pipeline)
        assert forget.returncode == 0, forget.stderr
    assert retained(broker.port, "edgeseg/cam1/#") == {}


@contextlib.contextmanager
def _broker_with_acl(tmp_path: Path, user: str, rules: str) -> Iterator[tuple[Broker, Collector]]:
    """A started broker whose user ``user`` (password ``secret``) has the ACL ``rules`` (Mosquitto's
    ``topic`` lines), and a collector on it: anonymous clients may do anything. Both stopped on leaving."""
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), user, "secret"], check=True)
    acl.write_text(f"topic readwrite #\nuser {user}\n{rules}\n")
    for path in (passwd, acl):
        path.chmod(0o644)
    locked = Broker(tmp_path / "broker", extra_config=f"password_file {passwd}\nacl_file {acl}\n")
    locked.start()
    collector = Collector(locked.port)
    try:
        yield locked, collector
    finally:
        collector.close()
        locked.stop()


EDGESEG_ONLY = "topic readwrite edgeseg/#"  # a device's user that may not touch homeassistant/#


def _forget_as(user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``edgeseg mqtt forget ARGS`` as ``user`` (password ``secret``)."""
    return subprocess.run(
        [sys.executable, "-m", "edgeseg", "mqtt", "forget", *args],
        env=edgeseg_env(EDGESEG_MQTT_USERNAME=user, EDGESEG_MQTT_PASSWORD="secret"),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_forget_that_the_broker_refuses_says_so_instead_of_cleared(tmp_path: Path) -> None:
    """A broker whose ACL denies the user the device's topics acknowledges the empty payloads anyway: forget
    said "cleared 1 retained topic(s)", exit status 0, and the device stayed in Home Assistant."""
    with _broker_with_acl(tmp_path, "viewer", "topic read #") as (locked, collector):
        collector.publish("edgeseg/cam1/status", b"online", retain=True)
        done = _forget_as("viewer", "--url", locked.url, "--device-id", "cam1")
        assert retained(locked.port, "edgeseg/cam1/#") == {"edgeseg/cam1/status": b"online"}
    assert done.returncode == 2, done.stdout
    assert "cleared" not in done.stdout
    assert done.stderr == (
        "edgeseg: error: the broker kept 1 of the 1 retained topic(s) of cam1 (edgeseg/cam1/status): does "
        "its ACL let this user publish there? (or the device runs and publishes them again: stop it first)\n"
    )


def test_forget_by_a_user_the_broker_lets_publish_but_not_read_says_so_instead_of_cleared_0(
    tmp_path: Path,
) -> None:
    """A broker whose ACL lets the user publish to the device's topics but not read them grants the
    subscription and delivers nothing (Mosquitto 2): forget saw no retained topic and said "cleared 0
    retained topic(s)", exit status 0, and the device stayed in Home Assistant."""
    with _broker_with_acl(tmp_path, "writer", "topic write #") as (locked, collector):
        collector.publish("homeassistant/device/cam1/config", b"{}", retain=True)
        done = _forget_as("writer", "--url", locked.url, "--device-id", "cam1")
        assert retained(locked.port, "homeassistant/device/cam1/config")
    assert done.returncode == 2, done.stdout
    assert "cleared" not in done.stdout
    assert done.stderr.startswith("edgeseg: error: the broker did not deliver to this user its own test")


def test_forget_by_a_user_who_cannot_read_the_discovery_prefix_says_so_instead_of_cleared(
    tmp_path: Path,
) -> None:
    """A user the ACL lets read and write edgeseg/# but not homeassistant/#: forget's test message came back
    from edgeseg/, it cleared the device's own topics and said "cleared 1", exit status 0, and the device
    stayed in Home Assistant (its discovery, which forget never saw, kept)."""
    with _broker_with_acl(tmp_path, "device", EDGESEG_ONLY) as (locked, collector):
        collector.publish("homeassistant/device/cam1/config", b"{}", retain=True)
        collector.publish("edgeseg/cam1/status", b"online", retain=True)
        done = _forget_as("device", "--url", locked.url, "--device-id", "cam1")
        assert retained(locked.port, "homeassistant/device/cam1/config")
    assert done.returncode == 2, done.stdout
    assert "cleared" not in done.stdout
    assert done.stderr.startswith("edgeseg: error: the broker did not deliver to this user its own test")
    # the right its test message needs, no more (a whole homeassistant/# was named)
    assert "read (and publish to) homeassistant/device/cam1/#?" in done.stderr


def test_forget_by_a_user_granted_the_discovery_topic_alone_clears_it(tmp_path: Path) -> None:
    """A user the ACL grants edgeseg/# and the device's discovery topic alone: forget saw and cleared both,
    then its look at what the broker kept waited for a test message beside the discovery topic, which never
    came back, and it said "Nothing was cleared" (exit status 2) about topics it had cleared."""
    rules = f"{EDGESEG_ONLY}\ntopic readwrite homeassistant/device/cam1/config"
    with _broker_with_acl(tmp_path, "device", rules) as (locked, collector):
        collector.publish("homeassistant/device/cam1/config", b"{}", retain=True)
        collector.publish("edgeseg/cam1/status", b"online", retain=True)
        done = _forget_as("device", "--url", locked.url, "--device-id", "cam1")
        assert done.returncode == 0, done.stderr
        assert retained(locked.port, "homeassistant/device/cam1/config") == {}
        assert retained(locked.port, "edgeseg/cam1/#") == {}
    assert done.stdout.startswith("cleared 2 retained topic(s) of cam1")


def test_forget_of_a_device_without_discovery_needs_no_right_to_the_discovery_prefix(tmp_path: Path) -> None:
    """sinks.mqtt.discovery: false, a user with edgeseg/# alone: forget clears the device's topics."""
    with _broker_with_acl(tmp_path, "device", EDGESEG_ONLY) as (locked, collector):
        collector.publish("edgeseg/cam1/status", b"online", retain=True)
        pipeline = _pipeline_with_mqtt(
            tmp_path, f"{{url: '{locked.url}', device_id: cam1, discovery: false}}"
        )
        done = _forget_as("device", str(pipeline))
        assert done.returncode == 0, done.stderr
        assert retained(locked.port, "edgeseg/cam1/#") == {}
    assert done.stdout.startswith("cleared 1 retained topic(s) of cam1")


def test_forget_with_a_pipeline_clears_the_discovery_under_its_discovery_prefix(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    pipeline = _pipeline_with_mqtt(
        tmp_path, f"{{url: '{broker.url}', device_id: cam1, discovery_prefix: ha}}"
    )
    collector.publish("ha/device/cam1/config", b"{}", retain=True)
    collector.publish("edgeseg/cam1/status", b"online", retain=True)
    done = _forget(pipeline)
    assert done.returncode == 0, done.stderr
    assert retained(broker.port, "ha/device/cam1/config") == {}
    assert retained(broker.port, "edgeseg/cam1/#") == {}


def test_a_snapshot_over_the_broker_packet_limit_is_skipped_without_a_reconnect_loop(tmp_path: Path) -> None:
    small = Broker(tmp_path / "broker", extra_config="max_packet_size 24000\n")
    small.start()
    collector = Collector(small.port)
    with Edgeseg(
        tmp_path,
        small.url,
        "--set",
        "sinks.mqtt.snapshot_interval_s=1",
        "--set",
        "sinks.mqtt.snapshot_max_bytes=1000000",
        "--set",
        "sinks.mqtt.mask_format=none",
    ) as run:
        assert collector.wait(lambda: len(collector.on("/stats")) >= 4, 90), run.output()
        collector.close()
        small.stop()
    err = run.output()[1]
    assert "over the broker's packet limit of 24000 bytes; not sent" in err
    assert collector.on("/snapshot") == []
    final = collector.on("/stats")[-1].json()
    assert final["mqtt"]["reconnects"] == 0
    assert final["snapshots_skipped"] >= 1


def test_a_discovery_over_the_broker_packet_limit_is_not_counted_as_a_skipped_snapshot(
    tmp_path: Path,
) -> None:
    """Stats' snapshots_skipped added every retained topic the broker's packet limit kept back: with snapshots
    off, it counted the Home Assistant discovery (a few kB) at every connect."""
    small = Broker(tmp_path / "broker", extra_config="max_packet_size 2000\n")
    small.start()
    collector = Collector(small.port)
    try:
        with Edgeseg(tmp_path, small.url, "--set", "sinks.mqtt.mask_format=none") as run:
            assert collector.wait(lambda: len(collector.on("/stats")) >= 2, 90), run.output()
    finally:
        collector.close()
        small.stop()
    err = run.output()[1]
    assert "homeassistant/device/cam1/config: " in err  # the discovery was kept back, and said so
    final = collector.on("/stats")[-1].json()
    assert final["snapshots_skipped"] == 0


def ha_available(doc: dict[str, Any], key: str, latest: dict[str, bytes]) -> bool:
    """Whether Home Assistant shows component ``key`` of the discovery ``doc`` as available, ``latest`` being
    the last payload of each topic: an ``availability`` list with ``availability_mode`` ``all`` needs
    ``online`` on each topic, ``availability_topic`` on its one; the root's shared option serves a component
    without its own (home-assistant.io integrations/mqtt: "Using availability topics", "Device discovery")."""
    cmp = doc["cmps"][key]
    topics = [a["topic"] for a in cmp["availability"]] if "availability" in cmp else []
    if not topics:
        topics = [cmp.get("availability_topic") or doc["avty_t"]]
    mode = cmp.get("availability_mode", "latest")  # (latest: the topic heard last decides)
    assert mode == "all" or len(topics) == 1, mode
    return all(latest.get(t) == b"online" for t in topics)


def test_while_the_camera_is_gone_home_assistant_shows_fps_0_and_the_counts_and_detected_unavailable(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    """While the stream sent nothing, stats' fps (Home Assistant's FPS sensor) stayed at the last rate: a
    dashboard showed a dead camera running at full speed, where the progress line and the web page say "no
    result for N s". And the retained counts and the "detected" sensor kept the last result's figures: a part
    seen as the camera died stayed "detected" for as long as it was gone, an occupancy sensor saying occupied
    about a dead camera. Now FPS falls to 0, those entities are unavailable while no result comes (FPS and the
    other device figures stay available), and all come back with the frames."""
    scene = PartsScene(320, 240, seed=1)
    camera = MjpegServer([cv2.imencode(".jpg", scene.frame(i).image)[1].tobytes() for i in range(8)])
    try:
        stream = ("--source", camera.url, "--set", "source.reconnect_max_s=1")
        with Edgeseg(tmp_path, broker.url, *stream) as run:

            def latest() -> dict[str, bytes]:
                return {m.topic: m.payload for m in collector.messages}

            def available(key: str) -> bool:
                configs = collector.on("homeassistant/device/cam1/config")
                return bool(configs) and ha_available(configs[-1].json(), key, latest())

            def running(since: int = 0) -> bool:
                fps = [m.json()["fps"] for m in collector.on("/stats")[since:]]
                return any(f and f > 1 for f in fps) and available("detected")

            seen = lambda: int(latest().get("edgeseg/cam1/counts/all", b"0")) > 0  # noqa: E731
            assert collector.wait(lambda: seen() and running(), 90), run.output()
            camera.flowing.clear()
            stalled = len(collector.on("/stats"))
            fell = lambda: 0 in [m.json()["fps"] for m in collector.on("/stats")[stalled:]]  # noqa: E731
            assert collector.wait(lambda: fell() and not available("detected"), 30), (latest(), run.output())
            assert not available("count_all")
            assert not available("count_nut")
            assert available("fps")
            assert available("latency_p50")
            camera.flowing.set()
            back = len(collector.on("/stats"))
            assert collector.wait(lambda: running(back) and available("count_all"), 60), run.output()
        validate("discovery", collector.on("homeassistant/device/cam1/config")[-1].json())
    finally:
        camera.close()


def test_a_rate_cap_publishes_fewer_results_with_contiguous_seq_and_counts_the_rest(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    with Edgeseg(tmp_path, broker.url, "--set", "sinks.mqtt.max_rate=2") as run:
        assert collector.wait(lambda: len(collector.on("/stats")) >= 5, 90), run.output()
    seqs = [d["seq"] for d in results(collector.on("/results"))]
    assert seqs == list(range(len(seqs)))
    final = collector.on("/stats")[-1].json()
    assert final["results"]["capped"] > 0
    assert final["results"]["published"] + final["results"]["capped"] == final["frames"]["done"]


def test_stats_published_counts_the_results_spooled_not_those_too_large_for_the_spool(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    """Stats' results.published was the next seq: a result larger than the whole spool, dropped and counted in
    results.lost, was counted published as well."""
    no_events = ("--set", "tracker.enabled=false", "--set", "lines={}")
    # the demo's results with RLE masks are 6-10 kB: some fit in the spool, some never do
    with Edgeseg(tmp_path, broker.url, "--set", "sinks.mqtt.spool_max_bytes=8500", *no_events) as run:
        lost = lambda: any(m.json()["results"]["lost"] for m in collector.on("/stats"))  # noqa: E731
        assert collector.wait(lambda: lost() and len(collector.on("/results")) >= 3, 90), run.output()
    out, err = run.output()
    assert collector.wait(lambda: collector.on("/status")[-1].payload == b"offline", 10)
    final = collector.on("/stats")[-1].json()
    assert "larger than its cap of 8500 bytes dropped" in err
    assert final["results"]["published"] == results_spooled(out) < final["frames"]["done"]


def _broker_for_edge_alone(tmp_path: Path) -> Broker:
    """A Mosquitto (not started yet) under ``tmp_path`` that lets in the user edge, password right-secret,
    and no one else (no anonymous client)."""
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "edge", "right-secret"], check=True)
    passwd.chmod(0o644)
    locked = Broker(tmp_path / "broker", extra_config=f"password_file {passwd}\n")
    locked.config.write_text(
        locked.config.read_text().replace("allow_anonymous true", "allow_anonymous false")
    )
    return locked


def test_a_broker_that_refuses_the_credentials_is_logged_and_retried_not_a_crash(tmp_path: Path) -> None:
    locked = _broker_for_edge_alone(tmp_path)
    locked.start()
    env = edgeseg_env(EDGESEG_MQTT_USERNAME="edge", EDGESEG_MQTT_PASSWORD="wrong-secret")
    try:
        run = Edgeseg(tmp_path, locked.url, "--max-frames", "30", env=env)
        code = run.wait(120)
    finally:
        locked.stop()
    out, err = run.output()
    assert code == 0, (out, err)  # nothing lost: the results wait in the spool for the right password
    assert (
        "broker refused the connection: Not authorized (check the MQTT credentials; from environment)" in err
    )
    assert err.count("refused") <= 3
    assert "wrong-secret" not in out + err
    assert re.search(r"\d+ (results|events) still in the spool", out)


def test_a_password_in_the_environment_is_used_for_a_user_named_by_username_file(tmp_path: Path) -> None:
    """EDGESEG_MQTT_PASSWORD was read only beside EDGESEG_MQTT_USERNAME: with the user name in a file (the
    password kept out of files), the login went without it and the broker refused it."""
    from edgeseg.config import load_config
    from edgeseg.doctor import broker_checks

    locked = _broker_for_edge_alone(tmp_path)
    user = tmp_path / "user"
    user.write_text("edge\n")
    config = load_config(None, [f"sinks.mqtt.url={locked.url}", f"sinks.mqtt.username_file={user}"], env={})
    locked.start()
    try:
        [check] = broker_checks("p", config, env={"EDGESEG_MQTT_PASSWORD": "right-secret"})
        [wrong] = broker_checks("p", config, env={"EDGESEG_MQTT_PASSWORD": "wrong-secret"})
    finally:
        locked.stop()
    assert check.ok, check.detail
    assert not wrong.ok
    assert "Not authorized" in wrong.detail


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--mqtt", "http://broker"], {}, "--mqtt: expected mqtt://host[:port] or mqtts://host[:port]"),
        (["--mqtt", "mqtt://u:pw@broker"], {}, "--mqtt: no credentials in the URL; secrets are not read"),
        (["--mqtt", "mqtt://broker:99999"], {}, "--mqtt: Port out of range"),
        (
            ["--mqtt", "mqtt://127.0.0.1:1", "--set", "sinks.mqtt.password=hunter2"],
            {},
            "sinks.mqtt.password: secrets are not read from pipeline files or EDGESEG__ variables",
        ),
        (
            ["--mqtt", "mqtt://127.0.0.1:1"],
            {"EDGESEG__SINKS__MQTT__PASSWORD": "hunter2"},
            "sinks.mqtt.password: secrets are not read",
        ),
        (
            ["--mqtt", "mqtt://127.0.0.1:1", "--set", "sinks.mqtt.password_file=/nonexistent/pw"],
            {},
            "sinks.mqtt.password_file: cannot read /nonexistent/pw: No such file or directory",
        ),
        (["--set", "sinks.mqtt.qos=2"], {}, "sinks.mqtt.qos: unknown key"),
    ],
)
def test_bad_mqtt_settings_are_one_line_errors_before_the_first_frame(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "run", "--state-dir", str(tmp_path), *args],
        env=edgeseg_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("edgeseg: error: ")
    assert message in lines[0]
    assert "hunter2" not in done.stderr


def test_listen_prints_the_device_messages_decoded_one_per_line(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    with Edgeseg(tmp_path, broker.url) as run:
        assert collector.wait(lambda: collector.on("/status"), 60), run.output()
        done = subprocess.run(
            [sys.executable, "-m", "edgeseg", "mqtt", "listen", "--url", broker.url, "--device-id", "cam1",
             "--topic", "edgeseg/cam1/results", "--count", "3", "--timeout", "60"],
            env=edgeseg_env(), capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        topic, _, payload = line.partition(" ")
        assert topic == "edgeseg/cam1/results"
        doc = json.loads(payload)
        assert doc["schema"] == "edgeseg.results/1"
        assert all(
            i["segmentation"]["counts"].endswith(" chars>") or len(i["segmentation"]["counts"]) <= 48
            for i in doc["instances"]
        )


@pytest.mark.parametrize("action", [["listen", "--timeout", "5"], ["forget"]])
def test_a_broker_that_is_down_ends_the_mqtt_tools_with_status_4_not_2(
    broker: Broker, action: list[str]
) -> None:
    """`edgeseg mqtt listen` / `forget` with the broker stopped exited 2, which says bad usage or
    configuration (an edit fixes it), where the broker coming back fixes it: a run-time failure, 4."""
    broker.stop()
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "mqtt", *action, "--url", broker.url, "--device-id", "cam1"],
        env=edgeseg_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (4, ""), done.stderr
    assert done.stderr == (
        f"edgeseg: error: cannot connect to {broker.url}: connection refused (is the broker running?)\n"
    )


def test_listen_takes_a_bundled_pipeline_by_name_as_run_does(broker: Broker, collector: Collector) -> None:
    # the name was taken for a file in the working directory: "edgeseg: error: demo: cannot read pipeline
    # file (No such file or directory)"
    collector.publish("edgeseg/cam1/status", b"online", retain=True)
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "mqtt", "listen", "demo", "--url", broker.url, "--device-id",
         "cam1", "--count", "1", "--timeout", "30"],
        env=edgeseg_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["edgeseg/cam1/status (retained) online"]


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--count", "0"], "--count: must be >= 1 (got 0)"),
        (["--timeout", "inf"], "--timeout: must be a number of seconds > 0 (got inf)"),
        (["--timeout", "nan"], "--timeout: must be a number of seconds > 0 (got nan)"),
        (["--timeout", "0"], "--timeout: must be a number of seconds > 0 (got 0)"),
    ],
)
def test_listen_refuses_a_count_or_timeout_it_cannot_keep_in_one_line(
    broker: Broker, flag: list[str], message: str
) -> None:
    # --count 0 waited for a first message, forever on a quiet broker (then printed it); --timeout inf was a
    # traceback (OverflowError in the wait); nan and 0 returned at once having listened to nothing
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "mqtt", "listen", "--url", broker.url, "--topic", "quiet/#", *flag],
        env=edgeseg_env(), capture_output=True, text=True, timeout=15,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"edgeseg: error: {message}\n"


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        ("a/#/b", "not an MQTT topic filter"),
        ("a+", "not an MQTT topic filter"),
        ("", "not an MQTT topic filter"),
        ("a\udcff", "not UTF-8 text"),  # the byte 0xff in argv
    ],
)
def test_listen_refuses_a_topic_filter_the_broker_would_not_take_in_one_line(
    broker: Broker, topic: str, why: str
) -> None:
    # paho refused it at the subscription: a traceback ("ValueError: Invalid subscription filter.", or
    # UnicodeEncodeError for a name not UTF-8) with exit status 1
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "mqtt", "listen", "--url", broker.url, "--topic", "ok/#",
         "--topic", topic, "--timeout", "5"],
        env=edgeseg_env(), capture_output=True, text=True, timeout=15,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"edgeseg: error: --topic {topic!r}: {why}" + (
        " (+ and # stand for a whole level, # for the last one only)\n" if "filter" in why else "\n"
    )


@pytest.mark.parametrize("action", ["listen", "forget"])
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        (
            "--prefix",
            "a/#",
            "--prefix: must be topic levels without + or #, and no / at either end (got 'a/#')",
        ),
        (
            "--device-id",
            "cam+1",
            "--device-id: must be one topic level of letters, digits, _ and - (got 'cam+1')",
        ),
        ("--prefix", "\udcff", "--prefix '\\udcff': not UTF-8 text"),  # the byte 0xff in argv
    ],
)
def test_a_prefix_or_device_id_flag_the_pipeline_would_refuse_is_refused_in_one_line(
    broker: Broker, action: str, flag: str, value: str, message: str
) -> None:
    # the flags skipped sinks.mqtt's rules: a wildcard made the subscription a paho traceback
    # ("ValueError: Invalid subscription filter."), a name not UTF-8 a UnicodeEncodeError
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "mqtt", action, "--url", broker.url, flag, value],
        env=edgeseg_env(), capture_output=True, text=True, timeout=15,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"edgeseg: error: {message}\n"


def test_listen_goes_on_printing_after_the_broker_restarts(tmp_path: Path, broker: Broker) -> None:
    """paho reconnects by itself, with a clean session: the subscriptions went with the broker's restart, and
    listen printed nothing more, never saying why, until its timeout or for good."""
    import paho.mqtt.publish

    out = tmp_path / "out.txt"
    with out.open("w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeseg", "mqtt", "listen", "--url", broker.url, "--topic", "t/#",
             "--timeout", "60"],
            env=edgeseg_env(), stdout=stdout, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def printed(payload: str) -> bool:
        # published until listen prints it: subscribed (and reconnected) is not known from outside
        with contextlib.suppress(OSError):
            paho.mqtt.publish.single("t/x", payload, qos=1, hostname="127.0.0.1", port=broker.port)
        time.sleep(0.2)
        return f"t/x {payload}" in out.read_text()

    def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
        return False

    try:
        assert wait_until(lambda: printed("before"), 20), out.read_text()
        broker.stop()
        broker.start()
        assert wait_until(lambda: printed("after"), 20), out.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        finally:
            proc.kill()
            proc.wait()


def test_listen_prints_any_payload_on_one_line_and_goes_on_after_json_nested_too_deep(
    broker: Broker, collector: Collector
) -> None:
    # '[' * 5000 made json.loads raise RecursionError in paho's network thread, which died of it: listen
    # printed nothing more and waited for its timeout; text with a line break printed as two lines
    payloads = {"t/a": b"[" * 5000, "t/b": b"two\nlines", "t/c": b"\x1b[2Jclear", "t/d": b'{"n": [1]}'}
    for topic, payload in payloads.items():
        collector.publish(topic, payload, retain=True)
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "mqtt", "listen", "--url", broker.url, "--topic", "t/#",
         "--count", "4", "--timeout", "15"],
        env=edgeseg_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" (retained) ", 1) for line in done.stdout.splitlines())
    assert lines == {
        "t/a": "[" * 5000,
        "t/b": '"two\\nlines"',
        "t/c": '"\\u001b[2Jclear"',
        "t/d": '{"n":[1]}',
    }


def test_listen_piped_to_a_reader_that_stops_exits_0_instead_of_hanging(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    # `edgeseg mqtt listen | head -1`: the write that fails is in paho's network thread, which died of it,
    # and listen waited for messages it could no longer see, forever
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeseg", "mqtt", "listen", "--url", broker.url, "--topic", "t/#"],
        env=edgeseg_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        got = threading.Thread(target=proc.stdout.readline, daemon=True)
        got.start()
        while got.is_alive() and proc.poll() is None:
            collector.publish("t/x", b"hello")
            got.join(0.1)
        proc.stdout.close()  # what head does after its line
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            collector.publish("t/x", b"hello")
            time.sleep(0.1)
        assert proc.poll() == 0
        assert proc.stderr.read() == ""
    finally:
        proc.kill()
        proc.wait()


def test_listen_to_a_full_disk_is_one_line_and_exit_2(broker: Broker, collector: Collector) -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeseg", "mqtt", "listen", "--url", broker.url, "--topic", "t/#"],
            env=edgeseg_env(), stdout=full, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            collector.publish("t/x", b"hello")
            time.sleep(0.1)
        assert (proc.poll(), proc.stderr.read()) == (
            2,
            "edgeseg: error: cannot write to stdout: No space left on device\n",
        )
    finally:
        proc.kill()
        proc.wait()


def test_doctor_with_a_pipeline_checks_that_its_broker_answers(
    tmp_path: Path,
    broker: Broker,
) -> None:
    pipeline = tmp_path / "p.yaml"
    model = Path(__file__).resolve().parents[1] / "models" / "demo-parts.onnx"
    for url, code, words in (
        (broker.url, 0, "answers (anonymous)"),
        ("mqtt://127.0.0.1:1", 1, "cannot connect"),
    ):
        pipeline.write_text(f"model: {{path: {model}}}\nsinks: {{mqtt: {{url: '{url}'}}}}\n")
        done = subprocess.run(
            [sys.executable, "-m", "edgeseg", "doctor", str(pipeline)],
            env=edgeseg_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == code, done.stdout + done.stderr
        line = next(x for x in done.stdout.splitlines() if "mqtt broker" in x)
        assert words in line


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 192 KB filesystem (tmpfs), so the spool meets a real ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_stops_spooling_with_a_counted_error_while_the_pipeline_goes_on(
    tmp_path: Path, tiny_disk: Path
) -> None:
    # results only: track events share the spool and its loss counters (tests/test_mqtt_events.py)
    no_events = ("--set", "tracker.enabled=false", "--set", "lines={}")
    run = Edgeseg(tmp_path, "mqtt://127.0.0.1:1", "--max-frames", "80", *no_events, fps=30, state=tiny_disk)
    code = run.wait(180)
    out, err = run.output()
    assert code == 3, (out, err)  # results were lost ...
    lost = re.search(r"mqtt: LOST (\d+) \(spool write failed\) results", out)
    assert lost, out  # ... and the summary says how many and why
    # "spooled" counts the results in the spool, not those its failed writes lost (no broker took any)
    assert results_spooled(out) == len(spooled(next(tiny_disk.glob("mqtt-spool-*.sqlite3"))))
    done = re.search(r"done, \d+ LOST \(\d+ at mqtt\): (\d+) frames? processed", out)
    assert done, out
    # every frame went on to the sink, full disk or not
    assert int(done.group(1)) == results_spooled(out) + int(lost.group(1))
    assert "database or disk is full" in err
    assert err.count("cannot store") <= 3  # logged, not once per frame
    assert "Traceback" not in err


def test_a_full_disk_counts_as_spooled_and_published_only_the_results_and_events_it_stored(
    tmp_path: Path, tiny_disk: Path
) -> None:
    # the demo pipeline's line makes track events, which go through the spool beside the results
    run = Edgeseg(tmp_path, "mqtt://127.0.0.1:1", "--max-frames", "80", fps=30, state=tiny_disk)
    code = run.wait(180)
    out, err = run.output()
    assert code == 3, (out, err)
    events = re.search(r"mqtt: (\d+) events spooled", out)
    lost = re.search(r"mqtt: LOST (\d+) \(spool write failed\) messages \(results and events\)", out)
    left = re.search(r"mqtt: (\d+) results and (\d+) events still in the spool", out)
    assert events, out
    assert lost, out
    assert left, out
    assert int(events.group(1)) > 0
    # the results spooled and the events spooled are those in the spool (no broker took any): none of
    # those the failed writes lost
    assert int(left.group(1)) == results_spooled(out)
    assert int(left.group(2)) == int(events.group(1))
    assert int(lost.group(1)) > 0
    assert "Traceback" not in err


def test_the_summary_counts_apart_the_results_and_the_events_an_earlier_run_left_in_the_spool(
    tmp_path: Path,
) -> None:
    """A run with its tracker and line off after one with them on (the broker down both times): its summary
    said "N results still in the spool", N counting the earlier run's events too."""
    first = Edgeseg(tmp_path, "mqtt://127.0.0.1:1", "--max-frames", "60", fps=30)
    assert first.wait(120) == 0, first.output()
    no_events = ("--set", "tracker.enabled=false", "--set", "lines={}")
    second = Edgeseg(tmp_path, "mqtt://127.0.0.1:1", "--max-frames", "5", *no_events, fps=30)
    assert second.wait(120) == 0, second.output()
    out, err = second.output()
    held = spooled_per_topic(second.spool)
    assert held["edgeseg/cam1/events"] > 0
    assert (
        f"mqtt: {held['edgeseg/cam1/results']} results and {held['edgeseg/cam1/events']} events still" in out
    )
    assert "Traceback" not in err


def test_the_summary_counts_the_results_an_earlier_run_left_apart_from_those_it_spooled(
    tmp_path: Path, broker: Broker
) -> None:
    """A run after one that spooled 39 results with the broker down said "4 results spooled, 43 acknowledged
    by the broker": more acknowledged than spooled, and nothing said where the others came from (its events'
    line likewise)."""
    # the demo pipeline's line makes track events, which share the spool with the results
    first = Edgeseg(tmp_path, "mqtt://127.0.0.1:1", "--max-frames", "60", fps=30)
    assert first.wait(120) == 0, first.output()
    left = spooled_per_topic(first.spool)
    results_left, events_left = left["edgeseg/cam1/results"], left["edgeseg/cam1/events"]
    second = Edgeseg(tmp_path, broker.url, "--max-frames", "60", fps=30)
    assert second.wait(120) == 0, second.output()
    out, err = second.output()
    now = results_spooled(out)
    events = re.search(r"mqtt: (\d+) events spooled", out)
    assert events, out
    # a clean stop delivers everything: this run's messages and the earlier run's
    assert (
        f"{now} results spooled ({results_left} more left by an earlier run), "
        f"{now + results_left} acknowledged"
    ) in out
    assert (
        f"mqtt: {events[1]} events spooled ({events_left} more left by an earlier run), "
        f"{int(events[1]) + events_left} acknowledged by the broker"
    ) in out
    assert "Traceback" not in err


def test_the_summary_counts_what_an_earlier_prefix_left_in_the_spool(tmp_path: Path) -> None:
    """After sinks.mqtt.prefix changed (the broker down both times), the summary said "N results still in the
    spool", N this prefix's alone: the earlier prefix's messages, sent at the next start, were left out."""
    no_events = ("--set", "tracker.enabled=false", "--set", "lines={}")
    for prefix in ("old", "new"):
        run = Edgeseg(
            tmp_path, "mqtt://127.0.0.1:1", "--max-frames", "3", "--set", f"sinks.mqtt.prefix={prefix}",
            *no_events, fps=30,
        )  # fmt: skip
        assert run.wait(120) == 0, run.output()
    out, err = run.output()
    held = spooled_per_topic(run.spool)
    assert held["old/cam1/results"] > 0
    assert (
        f"mqtt: {held['new/cam1/results']} results and {held['old/cam1/results']} messages of other topics "
        "(an earlier sinks.mqtt.prefix) still in the spool"
    ) in out
    assert "Traceback" not in err


def test_an_earlier_prefixs_messages_lost_are_counted_as_theirs_in_the_summary_and_the_spool_stats(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    """After sinks.mqtt.prefix changed, the earlier prefix's results and events that expired in the spool
    were summed up as "LOST N (expired) results", N its events too, none of them this prefix's results."""
    first = Edgeseg(
        tmp_path, "mqtt://127.0.0.1:1", "--max-frames", "30", "--set", "sinks.mqtt.prefix=old", fps=30
    )
    assert first.wait(120) == 0, first.output()
    ended = time.monotonic()
    held = spooled_per_topic(first.spool)
    assert held.keys() == {"old/cam1/results", "old/cam1/events"}
    old = sum(held.values())
    time.sleep(max(0.0, ended + 2.5 - time.monotonic()))  # all of them older than the next run's 2 s
    second = Edgeseg(
        tmp_path, broker.url, "--max-frames", "3", "--set", "sinks.mqtt.prefix=new",
        "--set", "sinks.mqtt.spool_max_age_s=2", "--set", "tracker.enabled=false", "--set", "lines={}",
    )  # fmt: skip
    code = second.wait(120)
    out, err = second.output()
    assert code == 3, (out, err)  # they were lost in this run: its exit status says so
    assert f"mqtt: LOST {old} (expired) messages ({old} of other topics: an earlier sinks.mqtt.prefix)" in out
    assert collector.wait(lambda: collector.on("new/cam1/stats"), 10)
    final = collector.on("new/cam1/stats")[-1].json()
    # this prefix's results and events lost none; the spool's figures hold the earlier prefix's
    assert (final["results"]["lost"], final["events"]["lost"]) == (0, 0)
    assert final["spool"]["dropped_expired"] == final["spool"]["dropped"] == old
    assert "Traceback" not in err


def test_a_spool_deleted_mid_run_has_its_messages_reported_lost_not_kept_for_the_next_start(
    tmp_path: Path,
) -> None:
    # `rm -rf ~/.local/state/edgeseg` while it runs: SQLite writes on into the deleted file, gone at exit
    run = Edgeseg(tmp_path, "mqtt://127.0.0.1:1", fps=30)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # results kept in the spool (the broker is down)
            with contextlib.suppress(sqlite3.OperationalError):  # (its tables not made yet)
                if any(run.state.glob("mqtt-spool-*.sqlite3")) and spooled(run.spool):
                    break
            time.sleep(0.1)
        shutil.rmtree(run.state)
        run.send(signal.SIGTERM)
        code = run.wait(30)
    finally:
        run.proc.kill()
    out, err = run.output()
    assert code == 3, (out, err)
    lost = re.search(r"mqtt: LOST (\d+) \(in the spool .*, deleted during the run\) messages", out)
    assert lost, out
    events = re.search(r"mqtt: (\d+) events spooled", out)
    assert int(lost.group(1)) == results_spooled(out) + (int(events.group(1)) if events else 0)
    assert "still in the spool" not in out
    assert "Traceback" not in err


def _tls_material(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for localhost / 127.0.0.1, made with the openssl CLI."""
    folder.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=edgeseg test CA")  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj",
        "/CN=localhost")  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


def test_mqtts_publishes_over_tls_and_an_unknown_ca_is_logged_and_retried(tmp_path: Path) -> None:
    ca, cert, key = _tls_material(tmp_path / "tls")
    tls_port = free_port()
    tls_broker = Broker(
        tmp_path / "broker",
        extra_config=f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n",
    )
    tls_broker.start()
    collector = Collector(tls_broker.port)  # the plain listener
    trusted = Edgeseg(tmp_path / "a", f"mqtts://localhost:{tls_port}", "--set", f"sinks.mqtt.ca_file={ca}")
    untrusted = Edgeseg(tmp_path / "b", f"mqtts://localhost:{tls_port}", device="cam2")  # system CAs only
    try:
        assert collector.wait(lambda: len(collector.on("cam1/results")) >= 3, 90), trusted.output()
        # the untrusted run's first connect has failed (or, were it let in, its results came meanwhile)
        collector.wait(lambda: "certificate verify failed" in untrusted.output()[1], 30)
    finally:
        trusted.stop()
        untrusted.stop()
        collector.close()
        tls_broker.stop()
    assert collector.on("cam2/results") == []
    err = untrusted.output()[1]
    assert "cannot connect to mqtts://localhost" in err
    assert "certificate verify failed" in err


def test_results_the_broker_refuses_are_dropped_counted_and_do_not_hold_up_the_stop(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic read #\ntopic write edgeseg/cam1/status\ntopic write edgeseg/cam1/stats\n")
    strict = Broker(tmp_path / "broker", extra_config=f"acl_file {acl}\n")
    strict.start()
    collector = Collector(strict.port)
    try:
        with Edgeseg(tmp_path, strict.url) as run:
            assert collector.wait(
                lambda: any(m.json()["mqtt"]["refused"] for m in collector.on("/stats")), 90
            )
            t0 = time.monotonic()
        stop_s = time.monotonic() - t0
    finally:
        collector.close()
        strict.stop()
    out, err = run.output()
    assert run.code == 3, (out, err)
    assert re.search(r"mqtt: LOST .*\d+ \(refused by the broker\)", out)
    assert "the broker refused a results message: Not authorized" in err
    assert collector.on("/results") == []
    assert stop_s < 5  # nothing left waiting for a PUBACK that will never come


TOPICS = Topics("edgeseg", "cam1")


def _sent_to_a_strict_broker(tmp_path: Path, extra_config: str, messages: list[tuple[str, int]]) -> Any:
    """A publisher's delivery figures once it has sent ``messages`` (topic, padding; numbered in order)
    from its spool to a broker that lets cam1 write its status alone (``extra_config``: ``{acl}`` its ACL)."""
    from edgeseg.mqtt.broker import Credentials, parse_broker_url
    from edgeseg.mqtt.publisher import Publisher, PublisherSettings
    from edgeseg.mqtt.spool import Spool

    acl = tmp_path / "acl"
    acl.write_text("topic read #\ntopic write edgeseg/cam1/status\n")
    strict = Broker(tmp_path / "broker", extra_config=extra_config.format(acl=acl))
    strict.start()
    spool = Spool(tmp_path / "spool.sqlite3", 1 << 22, 3600.0)
    spool.append([(topic, _numbered(n, pad=pad)) for n, (topic, pad) in enumerate(messages)])
    publisher = Publisher(
        parse_broker_url(strict.url), Credentials(), "cam1", spool, TOPICS, PublisherSettings()
    )
    publisher.start()
    try:
        deadline = time.monotonic() + 20
        while spool.stats().depth and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        assert publisher.close(flush_timeout_s=2.0)
        spool.close()
        strict.stop()
    return publisher.stats().delivery


@pytest.mark.parametrize(
    ("extra_config", "logged"),
    [
        # an ACL that forbids the results topic: every result refused (MQTT 5 PUBACK reason Not authorized)
        ("acl_file {acl}\n", "the broker refused a results message"),
        # a packet limit every result is over, announced in the CONNACK: none is sent
        ("max_packet_size 1000\n", "over the broker's packet limit of 1000 bytes"),
    ],
)
def test_results_the_broker_never_takes_are_logged_three_times_then_once_a_hundred_not_once_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, extra_config: str, logged: str
) -> None:
    """A condition that lasts (a broker's ACL, its packet limit against a busy scene's masks) made one error
    line a result: at 10 results a second, 864,000 journal lines a day."""
    d = _sent_to_a_strict_broker(tmp_path, extra_config, [(TOPICS.results, 1000)] * 250)
    assert d.refused + d.too_large == 250
    lines = [r.getMessage() for r in caplog.records if logged in r.getMessage()]
    assert len(lines) == 5, lines  # results 1, 2, 3, 100 and 200
    assert "(200 so far" in lines[-1]


def test_refused_events_ahead_of_results_do_not_silence_the_lines_about_the_results(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The refusals' log lines were counted across topics: events refused first (a zone crossed while the
    broker's ACL forbade everything) used up the three lines, and the results refused after them were never
    named (seen in CI: "refused an events message ... (3 so far)" and no line of results)."""
    d = _sent_to_a_strict_broker(
        tmp_path, "acl_file {acl}\n", [(TOPICS.events, 10)] * 5 + [(TOPICS.results, 10)] * 5
    )
    assert d.refused == 10
    said = [r.getMessage() for r in caplog.records if "the broker refused" in r.getMessage()]
    events = [line for line in said if "refused an events message" in line]
    results = [line for line in said if "refused a results message" in line]
    assert (len(events), len(results)) == (3, 3), said
    assert "(3 so far)" in results[-1]


def test_a_broker_that_drops_every_connection_at_once_is_retried_with_growing_delays(tmp_path: Path) -> None:
    """A listener that answers CONNECT with a valid MQTT 5 CONNACK and hangs up: the backoff must not reset
    on such short-lived connections (it once reconnected ~500 times a minute)."""
    accepted: list[float] = []

    def hang_up(conn: socket.socket) -> None:
        accepted.append(time.monotonic())
        conn.close()

    with _connack_then(hang_up) as port, Edgeseg(tmp_path, f"mqtt://127.0.0.1:{port}") as run:
        time.sleep(8)
    assert run.code == 0, run.output()
    # delays from reconnect_min_s 0.2 doubling up to reconnect_max_s 1 (with jitter): about a dozen in 8 s
    assert 3 <= len(accepted) <= 20, len(accepted)
    assert "lost the connection to mqtt://127.0.0.1" in run.output()[1]


def test_a_broker_that_drops_every_connection_at_once_is_logged_as_failed_attempts_are_not_twice_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Such a link (a broker that hangs up at once, another device with the same client id) logged "lost
    the connection" and "connected after N failed attempt(s)" at every attempt, for as long as it lasted."""
    from edgeseg.mqtt.publisher import PublisherSettings
    from edgeseg.mqtt.spool import Spool

    spool = Spool(tmp_path / "spool.sqlite3", 1 << 20, 3600.0)
    settings = PublisherSettings(reconnect_min_s=0.01, reconnect_max_s=0.02)
    with _connack_then(lambda conn: conn.close()) as port:
        _publish_until_connects(port, spool, settings, 31)
    spool.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    lost = [m for m in warned if m.startswith("lost the connection")]
    connected = [m for m in warned if m.startswith(f"connected to mqtt://127.0.0.1:{port} after")]
    # links 1, 2, 3, 10, 20 and 30 that dropped, and the connects after them
    assert len(lost) == 6, lost
    assert [m.split(" after ")[1] for m in connected] == [
        f"{k} failed attempt(s)" for k in (1, 2, 3, 10, 20, 30)
    ]


def test_two_devices_with_one_device_id_are_each_told_the_likely_cause_of_their_dropping_link(
    tmp_path: Path, broker: Broker
) -> None:
    """Two devices cloned from one SD card image share the hostname, the default device id, hence the client
    id: each connect knocks the other off the broker, for ever, and Mosquitto 2.0.11 closes the socket without
    a word, so each log said only "disconnected: Unspecified error"."""
    hint = "another client may be using client id cam1 (two devices with one sinks.mqtt.device_id?)"
    with Edgeseg(tmp_path / "a", broker.url) as a, Edgeseg(tmp_path / "b", broker.url) as b:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(hint in run.output()[1] for run in (a, b)):
            time.sleep(0.2)
        for run in (a, b):
            assert hint in run.output()[1], run.output()
            assert "lost the connection to mqtt://127.0.0.1" in run.output()[1]


def test_a_link_that_stalls_after_each_connect_drops_no_result_as_too_large(tmp_path: Path) -> None:
    """A link that lets the CONNACK through and then nothing (a weak radio link): each connection ends in our
    keepalive timeout with the backlog's first results unacknowledged. That is no broker hanging up on a
    message, yet after three the largest of them was deleted as over the packet limit, one result lost per
    three stalls."""
    from edgeseg.mqtt.publisher import PublisherSettings
    from edgeseg.mqtt.spool import Spool
    from edgeseg.mqtt.topics import Topics

    def swallow(conn: socket.socket) -> None:
        with conn:
            while conn.recv(65536):  # silence: what is sent is swallowed, nothing comes back
                pass

    spool = Spool(tmp_path / "spool.sqlite3", 1 << 20, 3600.0)
    spool.append(
        [(Topics("edgeseg", "cam1").results, _numbered(n, pad=500 if n == 1 else 0)) for n in range(4)]
    )
    settings = PublisherSettings(keepalive_s=1, reconnect_min_s=0.1, reconnect_max_s=0.2)
    with _connack_then(swallow) as port:
        stats = _publish_until_connects(port, spool, settings, 5).stats()
    assert stats.delivery.too_large == 0
    assert spool.stats().depth == 4
    spool.close()


def _publish_until_connects(port: int, spool: Any, settings: Any, connects: int) -> Any:
    """A publisher of ``spool`` for device cam1 on 127.0.0.1:``port``, run until it has connected
    ``connects`` times (30 s at most), then closed: returned for its stats."""
    from edgeseg.mqtt.broker import Credentials, parse_broker_url
    from edgeseg.mqtt.publisher import Publisher
    from edgeseg.mqtt.topics import Topics

    url = parse_broker_url(f"mqtt://127.0.0.1:{port}")
    publisher = Publisher(url, Credentials(), "cam1", spool, Topics("edgeseg", "cam1"), settings)
    publisher.start()
    try:
        deadline = time.monotonic() + 30
        while publisher.stats().connects < connects and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        assert publisher.close(flush_timeout_s=0.5)
    assert publisher.stats().connects >= connects, publisher.stats()
    return publisher


@contextlib.contextmanager
def _connack_then(after: Callable[[socket.socket], None]) -> Iterator[int]:
    """A listener on a loopback port (yielded) that answers each CONNECT with an MQTT 5 CONNACK (success, no
    session, no properties: no packet limit) and then hands the connection to ``after``, on a thread of its
    own; closed with every connection at the end."""

    def connack(conn: socket.socket, conns: list[socket.socket]) -> None:
        with contextlib.suppress(OSError):
            conn.recv(4096)  # CONNECT
            conn.sendall(b"\x20\x03\x00\x00\x00")
            threading.Thread(target=after, args=(conn,), daemon=True).start()

    with _loopback_listener(connack) as port:
        yield port


@contextlib.contextmanager
def _acks_held_back(broker_port: int) -> Iterator[int]:
    """A relay on a loopback port (yielded) to the broker on ``broker_port``, as a slow uplink: what the
    device sends reaches the broker at once, and of what the broker answers only the CONNACK comes back (its
    PUBACKs stay in the relay until the end)."""

    def relay(device: socket.socket, conns: list[socket.socket]) -> None:
        broker = socket.create_connection(("127.0.0.1", broker_port))
        conns.append(broker)
        threading.Thread(target=_forward, args=(device, broker), daemon=True).start()
        threading.Thread(target=_forward, args=(broker, device, 1), daemon=True).start()  # the CONNACK

    with _loopback_listener(relay) as port:
        yield port


def test_max_inflight_over_20_results_are_sent_before_the_first_puback(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    """paho keeps its own window of 20 unacknowledged messages and queues the rest inside itself: a
    sinks.mqtt.max_inflight above 20, for an uplink whose PUBACKs come late, sent no more than 20."""
    from edgeseg.mqtt.broker import Credentials, parse_broker_url
    from edgeseg.mqtt.publisher import Publisher, PublisherSettings
    from edgeseg.mqtt.spool import Spool
    from edgeseg.mqtt.topics import Topics

    topics = Topics("edgeseg", "cam1")
    spool = Spool(tmp_path / "spool.sqlite3", 1 << 20, 3600.0)
    spool.append([(topics.results, _numbered(n)) for n in range(100)])
    with _acks_held_back(broker.port) as port:
        url = parse_broker_url(f"mqtt://127.0.0.1:{port}")
        publisher = Publisher(url, Credentials(), "cam1", spool, topics, PublisherSettings(max_inflight=50))
        publisher.start()
        try:
            collector.wait(lambda: len(collector.on("/results")) >= 50, 10)
            time.sleep(0.5)  # (the window is full: no more come)
            sent = len(collector.on("/results"))
        finally:
            publisher.close(flush_timeout_s=0.5)
            spool.close()
    assert sent == 50


def test_a_broker_that_accepts_but_never_answers_is_retried_after_the_connect_timeout_not_the_keepalive(
    tmp_path: Path, broker: Broker
) -> None:
    """A hung broker (here stopped with SIGSTOP: the kernel still accepts the connection) never sends its
    CONNACK: each attempt waited for the keepalive (30 s) and was then logged as a keepalive timeout."""
    from edgeseg.mqtt.broker import Credentials, parse_broker_url
    from edgeseg.mqtt.publisher import Publisher, PublisherSettings
    from edgeseg.mqtt.spool import Spool
    from edgeseg.mqtt.topics import Topics

    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)
    spool = Spool(tmp_path / "spool.sqlite3", 1 << 20, 3600.0)
    settings = PublisherSettings(connect_timeout_s=1.0, reconnect_min_s=0.1, reconnect_max_s=0.2)
    publisher = Publisher(
        parse_broker_url(broker.url), Credentials(), "cam1", spool, Topics("edgeseg", "cam1"), settings
    )
    publisher.start()
    try:
        deadline = time.monotonic() + 10
        while publisher.stats().last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        error = publisher.stats().last_error
    finally:
        broker.proc.send_signal(signal.SIGCONT)
        publisher.close(flush_timeout_s=0.5)
        spool.close()
    assert error == "no CONNACK within 1 s of CONNECT"


def test_a_retained_topic_with_a_min_interval_sends_the_first_change_then_the_last_and_flushes_at_stop(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    from edgeseg.mqtt.broker import Credentials, parse_broker_url
    from edgeseg.mqtt.publisher import Publisher, PublisherSettings
    from edgeseg.mqtt.spool import Spool
    from edgeseg.mqtt.topics import Topics

    topics = Topics("edgeseg", "cam1")
    spool = Spool(tmp_path / "spool.sqlite3", 1 << 20, 3600.0)
    publisher = Publisher(
        parse_broker_url(broker.url), Credentials(), "cam1", spool, topics, PublisherSettings()
    )
    held, free = topics.counts("nut"), topics.counts("washer")
    interval = 4.0
    publisher.set_retained(held, b"1", min_interval_s=interval)
    publisher.start()
    try:
        assert collector.wait(lambda: collector.on(held), 10)
        for n in (2, 3, 4, 5):  # all within the interval: only the last goes out, once it has passed
            publisher.set_retained(held, str(n).encode(), min_interval_s=interval)
        for n in (1, 2, 3):  # without an interval every change goes out
            publisher.set_retained(free, str(n).encode())
            assert collector.wait(lambda n=n: [m.payload for m in collector.on(free)][-1:] == [b"%d" % n], 10)
        assert collector.wait(lambda: len(collector.on(held)) == 2, interval + 10)
        first, last = collector.on(held)
        assert (first.payload, last.payload) == (b"1", b"5")
        assert last.received - first.received >= 0.8 * interval
        publisher.set_retained(held, b"6", min_interval_s=interval)  # held back, then the stop comes
    finally:
        assert publisher.close(flush_timeout_s=2.0)
        spool.close()
    assert collector.wait(
        lambda: collector.on(topics.status)[-1:] and collector.on(topics.status)[-1].payload == b"offline", 10
    )
    order = [(m.topic, m.payload) for m in collector.messages]
    assert order.index((held, b"6")) < order.index((topics.status, b"offline"))
    assert retained(broker.port, held) == {held: b"6"}


def _publish_to_a_broker_limited_to_2000_bytes(
    tmp_path: Path,
    results: list[bytes],
    retained: dict[str, tuple[bytes, int]],
    protocol: str = "mqttv311",
    limit: str = "max_packet_size",
    kind: str = "results",
) -> tuple[set[int], Any, Collector]:
    """Publish ``results`` (as ``kind`` messages: results or events) and ``retained`` (topic -> payload, QoS)
    to a Mosquitto whose ``limit`` is 2000 bytes and that hangs up on a message over it without announcing
    the limit; the ``n`` of every result received, the publisher's stats and what the subscriber got, once
    the spool is empty (or 20 s passed)."""
    from edgeseg.mqtt.broker import Credentials, parse_broker_url
    from edgeseg.mqtt.publisher import Publisher, PublisherSettings
    from edgeseg.mqtt.spool import Spool
    from edgeseg.mqtt.topics import Topics

    small = Broker(tmp_path / "broker", extra_config=f"{limit} 2000\n")
    small.start()
    collector = Collector(small.port)
    topics = Topics("edgeseg", "cam1")
    spool = Spool(tmp_path / "spool.sqlite3", 1 << 20, 3600.0)
    spool.append([(getattr(topics, kind), payload) for payload in results])
    settings = PublisherSettings(protocol=protocol, reconnect_min_s=0.1, reconnect_max_s=0.5)
    publisher = Publisher(parse_broker_url(small.url), Credentials(), "cam1", spool, topics, settings)
    for topic, (payload, qos) in retained.items():
        publisher.set_retained(topic, payload, qos=qos)
    publisher.start()
    try:
        collector.wait(lambda: spool.stats().depth == 0, 20)
    finally:
        assert publisher.close(flush_timeout_s=2.0)
        spool.close()
        collector.close()
        small.stop()
    return {json.loads(m.payload)["n"] for m in collector.on("/results")}, publisher.stats(), collector


def _numbered(n: int, pad: int = 0) -> bytes:
    return b'{"replay":false,"n":%d,"pad":"%s"}' % (n, b"x" * pad)


@pytest.mark.parametrize(
    ("protocol", "limit"),
    [
        # MQTT 3.1.1 has no CONNACK property to announce the limit
        ("mqttv311", "max_packet_size"),
        # Mosquitto 2.0.11 (Debian 12, Raspberry Pi OS) announces no message_size_limit and refuses the
        # message with PUBACK reason 0x95, which is not a PUBACK code: paho calls it a protocol error
        ("mqttv5", "message_size_limit"),
    ],
)
def test_a_result_the_broker_hangs_up_on_is_dropped_counted_and_the_rest_go_on(
    tmp_path: Path, protocol: str, limit: str
) -> None:
    """The broker hung up on that result at every reconnect, for ever, and nothing stored after it was
    delivered."""
    results = [_numbered(0), _numbered(1, pad=5000), *(_numbered(n) for n in range(2, 6))]
    received, stats, _ = _publish_to_a_broker_limited_to_2000_bytes(tmp_path, results, {}, protocol, limit)
    assert received == {0, 2, 3, 4, 5}
    assert stats.delivery.too_large == 1


def test_a_result_within_the_announced_packet_limit_is_delivered_and_one_over_it_dropped(
    tmp_path: Path,
) -> None:
    """The packet limit is the whole PUBLISH packet (header, topic, packet id, properties and payload): a
    result of 1900 bytes fits a limit of 2000, and was dropped as too large by a 512-byte guess."""
    results = [_numbered(0), _numbered(1, pad=1869), _numbered(2, pad=1990), _numbered(3)]
    assert len(results[1]) == 1900
    received, stats, _ = _publish_to_a_broker_limited_to_2000_bytes(tmp_path, results, {}, "mqttv5")
    assert received == {0, 1, 3}
    assert stats.delivery.too_large == 1
    assert stats.reconnects == 0  # (the one over it was never sent: announced, the limit is known)


def test_a_speckled_result_over_the_broker_limit_is_not_advised_polygon_masks_which_are_larger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The drop's advice was "try sinks.mqtt.mask_format: polygon or none": a speckled mask's polygons (a
    ring round every speck) are larger than its RLE, and a user who took it had more results dropped."""
    import numpy as np

    from edgeseg.frame import Frame, Result
    from edgeseg.instances import Instances
    from edgeseg.mqtt.topics import results_payload
    from edgeseg.sinks.record import encoded_record

    labels = np.zeros((72, 96), np.int32)
    labels[8:64, 8:88] = np.random.default_rng(0).random((56, 80)) < 0.5  # one instance, half its pixels
    result = Result(
        Frame(0, np.zeros((72, 96, 3), np.uint8), 0, 1.0e9), Instances.from_label_image(labels, [0])
    )
    rle, polygon = encoded_record(result, "rle"), encoded_record(result, "polygon")
    assert 2000 < len(rle) < len(polygon)
    _publish_to_a_broker_limited_to_2000_bytes(tmp_path, [results_payload(rle, "0" * 32, 0)], {}, "mqttv5")
    [line] = [r.getMessage() for r in caplog.records if "over the broker's packet limit of" in r.getMessage()]
    assert line.endswith(
        "dropped (1 so far); sinks.mqtt.mask_format: none leaves the masks out (polygon is smaller than rle "
        "for smooth outlines only), or raise the broker's limit"
    )


def test_an_events_message_over_the_broker_limit_is_logged_as_one_with_no_advice_on_masks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An events message over the broker's limit was logged as "a results message" with advice on
    sinks.mqtt.mask_format, though events carry no masks."""
    events = [_numbered(0), _numbered(1, pad=5000)]
    _, stats, _ = _publish_to_a_broker_limited_to_2000_bytes(tmp_path, events, {}, "mqttv5", kind="events")
    assert stats.delivery.too_large == 1
    [line] = [r.getMessage() for r in caplog.records if "over the broker's packet limit of" in r.getMessage()]
    assert line.startswith("an events message of 5030 bytes is over the broker's packet limit of 2000 bytes")
    assert line.endswith("dropped (1 so far); an events message carries no masks: raise the broker's limit")


def test_an_mqtt311_retained_snapshot_the_broker_hangs_up_on_is_skipped_and_no_result_is_blamed(
    tmp_path: Path,
) -> None:
    retained = {"edgeseg/cam1/info": (b"{}", 1), "edgeseg/cam1/snapshot": (b"J" * 5000, 0)}
    results = [_numbered(n) for n in range(6)]
    received, stats, collector = _publish_to_a_broker_limited_to_2000_bytes(tmp_path, results, retained)
    assert received == set(range(6))
    assert stats.delivery.too_large == 0
    assert (
        stats.skipped_retained.get("edgeseg/cam1/snapshot", 0) >= 1
    )  # (at each connect after the broker hung up on it)
    assert collector.on("/snapshot") == []
    assert [m.payload for m in collector.on("/info")][-1:] == [b"{}"]


def test_the_oldest_paho_mqtt_setup_cfg_allows_delivers_the_results(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    """pip keeps an installed paho-mqtt that meets setup.cfg's minimum; under 2.0.0, whose ``Client.protocol``
    returns itself (paho/mqtt/client.py:956 in 2.0.0: ``return self.protocol``), the publisher stopped at its
    first connection with a RecursionError and nothing was sent."""
    setup_cfg = (REPO / "setup.cfg").read_text(encoding="utf-8")
    match = re.search(r"^\s+paho-mqtt>=([\d.]+)$", setup_cfg, re.MULTILINE)
    assert match is not None
    target = tmp_path / "paho"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    installed = subprocess.run([*pip, f"paho-mqtt=={match[1]}"], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    env = edgeseg_env(PYTHONPATH=os.pathsep.join([str(target), str(REPO)]))
    where = [sys.executable, "-c", "import paho.mqtt.client as c; print(c.__file__)"]
    assert subprocess.run(where, env=env, capture_output=True, text=True).stdout.startswith(str(target))
    command = [sys.executable, "-m", "edgeseg", "run", "--source", "synthetic:parts", "--max-frames", "5"]
    command += ["--mqtt", broker.url, "--state-dir", str(tmp_path / "state")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert collector.wait(lambda: len(results(collector.on("/results"))) > 0, timeout=10), done.stderr[-3000:]
