"""Live control over MQTT against a real Mosquitto and a real ``edgeseg run``: config/<key>/set, config/set,
config/save, the retained config/<key>/state, replies (MQTT 5 correlation included) and a fuzz run."""

from __future__ import annotations

import contextlib
import json
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from mqtt_harness import Broker, Collector, Edgeseg, dynsec_broker, edgeseg_env, results, retained
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from test_mqtt import validate

from edgeseg.config import load_config
from edgeseg.control import Control
from edgeseg.modelcard import find_card
from edgeseg.mqtt.broker import Credentials, parse_broker_url
from edgeseg.mqtt.publisher import Publisher, PublisherSettings
from edgeseg.mqtt.remote import RemoteControl
from edgeseg.mqtt.spool import Spool
from edgeseg.mqtt.topics import Topics

BASE = "edgeseg/cam1"
SCORE = "postprocess.semantic.min_score"  # a slider: the demo model's lowest score kept
SIZE = "postprocess.semantic.size_threshold"
STATE = f"{BASE}/config/{SCORE}/state"
_card = find_card(Path(__file__).resolve().parents[1] / "models" / "demo-parts.onnx").semantic
assert _card is not None
CARD_SCORE = json.dumps(_card.min_score).encode()  # the state before any change
assert CARD_SCORE != b"0.35"  # the value the tests set
TYPO = "postprocess.semantic.dist_treshold"


def _replies(collector: Collector) -> list[dict[str, Any]]:
    return [m.json() for m in collector.on("/config/result")]


def _reply_to(collector: Collector, topic: str, n: int = 1, timeout: float = 10) -> dict[str, Any]:
    """The ``n``-th reply to a request sent on ``topic``."""
    assert collector.wait(
        lambda: len([r for r in _replies(collector) if r["request"] == topic]) >= n, timeout
    )
    return [r for r in _replies(collector) if r["request"] == topic][n - 1]


def test_a_set_applies_retains_the_value_in_effect_and_bad_requests_change_nothing(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    with Edgeseg(tmp_path, broker.url) as run:
        assert collector.wait(lambda: collector.on(f"{BASE}/status"), 60), run.output()
        order = [m.topic for m in collector.messages]
        # every tunable's state is out before the device says it is online, with the card's value
        assert STATE in order[: order.index(f"{BASE}/status")]
        assert collector.on(STATE)[0].payload == CARD_SCORE
        discovery = collector.on("homeassistant/device/cam1/config")[0].json()
        validate("discovery", discovery)
        slider = discovery["cmps"]["min_score"]
        assert slider["p"] == "number"
        assert (slider["command_topic"], slider["state_topic"]) == (f"{BASE}/config/{SCORE}/set", STATE)
        assert (slider["min"], slider["max"]) == (0, 1)

        set_topic = f"{BASE}/config/{SCORE}/set"
        collector.publish(set_topic, b"0.35")
        reply = _reply_to(collector, set_topic)
        validate("config_result", reply)
        assert reply["ok"] is True
        assert reply["applied"] == {SCORE: 0.35}
        version = reply["config_version"]
        assert version == 2
        assert collector.wait(lambda: collector.on(STATE)[-1].payload == b"0.35", 10)
        assert retained(broker.port, STATE) == {STATE: b"0.35"}
        # results processed after the change carry its version
        assert collector.wait(
            lambda: any(d["config_version"] == version for d in results(collector.on("/results"))), 30
        )

        bad = [
            (set_topic, b"abc", SCORE, "must be a number (got 'abc')"),
            (set_topic, b"1.7", SCORE, "must be in [0, 1] (got 1.7)"),
            (set_topic, b"true", SCORE, "must be a number (got true)"),
            (f"{BASE}/config/{TYPO}/set", b"0.3", TYPO, "unknown key; did you mean dist_threshold?"),
            (f"{BASE}/config/model.path/set", b'"/tmp/other.onnx"', "model.path", "needs a restart"),
            (f"{BASE}/config/set", b'{"postprocess.semantic": {"dist_threshold": ', "payload", "is not JSON"),
            (f"{BASE}/config/set", b"[1, 2]", "payload", "must be a JSON object"),
            # deeper than json.loads recurses: a RecursionError, which went unanswered
            (f"{BASE}/config/set", b"[" * 5000, "payload", "is not JSON (nested too deeply)"),
            (set_topic, b"[" * 5000, SCORE, "must be a number (got '[[[["),
            (f"{BASE}/config/set", b"x" * (1 << 20), "payload", "is over the 65536-byte limit"),
            (f"{BASE}/config/set", b"\xff\xfe", "payload", "is not UTF-8 text"),
            (f"{BASE}/config/save", b"disk", "payload", "must be state or yaml"),
        ]  # fmt: skip
        for topic, payload, key, words in bad:
            seen = len([r for r in _replies(collector) if r["request"] == topic])
            collector.publish(topic, payload)
            reply = _reply_to(collector, topic, seen + 1)
            validate("config_result", reply)
            assert reply["ok"] is False
            assert reply["applied"] == {}
            assert reply["config_version"] == version
            assert words in reply["rejected"][key], (topic, reply)
        # a refused value is never state: the only states are the start value and the one applied
        assert [m.payload for m in collector.on(STATE)] == [CARD_SCORE, b"0.35"]
        assert retained(broker.port, STATE) == {STATE: b"0.35"}
        before = len(collector.on("/results"))
        assert collector.wait(lambda: len(collector.on("/results")) > before + 3, 30), "results stopped"

        # one request, several keys: the valid ones apply together, each refused one is named
        collector.publish(f"{BASE}/config/set", json.dumps({SCORE: 0.3, "source.uri": "v4l2:0"}).encode())
        reply = _reply_to(collector, f"{BASE}/config/set", 6)
        assert reply["applied"] == {SCORE: 0.3}
        assert list(reply["rejected"]) == ["source.uri"]
        assert reply["config_version"] == version + 1

        collector.publish(f"{BASE}/config/save", b"")
        saved = _reply_to(collector, f"{BASE}/config/save", 2)
        assert saved["ok"] is True
        assert "tuning-demo.yaml" in saved["message"]
    assert run.code == 0, run.output()
    tuning = tmp_path / "state" / "tuning-demo.yaml"
    assert tuning.read_text().rstrip().endswith(f"{SCORE}: 0.3")

    # the saved tuning is applied at the next start, said so, and is the retained state from the start
    collector.publish(STATE, b"", retain=True)  # clear it: the new process must publish it itself
    watcher = Collector(broker.port, [STATE, f"{BASE}/results"])
    try:
        with Edgeseg(tmp_path, broker.url) as again:
            assert watcher.wait(lambda: watcher.on("/results"), 60), again.output()
            assert [m.payload for m in watcher.on(STATE)] == [b"0.3"]
    finally:
        watcher.close()
    said = r"applying saved tuning from .*tuning-demo.yaml: " + re.escape(SCORE) + "=0.3"
    assert re.search(said, again.output()[1])


def test_both_ends_of_every_home_assistant_slider_are_values_the_device_applies(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    # Home Assistant's number entity sends min + k * step (an integral float as an int: "0", not "0.0"); a
    # slider end the device refuses is a position the user drags to and sees snap back. The model without
    # a contact map splits touching parts by distance: dist_threshold (> 0) is a slider
    v1 = Path(__file__).resolve().parents[1] / "models" / "reference" / "demo-parts-v1.onnx"
    with Edgeseg(tmp_path, broker.url, "--set", f"model.path={v1}") as run:
        assert collector.wait(lambda: collector.on(f"{BASE}/status"), 60), run.output()
        cmps = collector.on("homeassistant/device/cam1/config")[0].json()["cmps"]
        sliders = {k: c for k, c in cmps.items() if c["p"] == "number"}
        assert "dist_threshold" in sliders  # exclusive lower bound: > 0
        for name, slider in sorted(sliders.items()):
            for end in (slider["min"], slider["max"]):
                value = int(end) if float(end).is_integer() else end
                topic = slider["command_topic"]
                seen = len([r for r in _replies(collector) if r["request"] == topic])
                collector.publish(topic, str(value).encode())
                reply = _reply_to(collector, topic, seen + 1)
                assert reply["ok"] is True, (name, value, reply["rejected"])


def test_a_request_published_with_retain_is_not_applied_at_each_connect_and_undoes_nothing(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    """A config/<key>/set published with retain came again at every connect (a start, a broker restart) and
    was applied each time: it undid the changes made since (the web page's, Home Assistant's)."""
    collector.publish(f"{BASE}/config/{SCORE}/set", b"0.35", retain=True)
    with Edgeseg(tmp_path, broker.url) as run:
        assert collector.wait(lambda: collector.on(f"{BASE}/status"), 60), run.output()
        # (a request after it: the broker sends a client's messages in order, the retained one first)
        collector.publish(f"{BASE}/config/{SIZE}/set", b"-2")
        assert _reply_to(collector, f"{BASE}/config/{SIZE}/set")["ok"] is False
    assert [r["request"] for r in _replies(collector)] == [f"{BASE}/config/{SIZE}/set"]
    assert retained(broker.port, STATE) == {STATE: CARD_SCORE}
    assert f"{BASE}/config/{SCORE}/set: a retained request, ignored (1 refused so far)" in run.output()[1]


def test_an_mqtt5_request_gets_its_reply_on_its_response_topic_with_its_correlation_data(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    got: list[tuple[str, bytes, bytes | None]] = []
    done = threading.Event()
    with _mqtt5_client(broker, "test/replies/42", got, done) as client, Edgeseg(tmp_path, broker.url) as run:
        assert collector.wait(lambda: collector.on(f"{BASE}/status"), 60), run.output()
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "test/replies/42"
        props.CorrelationData = b"\x00req-7"
        payload = json.dumps({SCORE: 0.4, SIZE: -2}).encode()
        client.publish(f"{BASE}/config/set", payload, qos=1, properties=props).wait_for_publish(5)
        assert done.wait(10)
    _, body, correlation = got[0]
    assert correlation == b"\x00req-7"
    reply = json.loads(body)
    validate("config_result", reply)
    assert reply["applied"] == {SCORE: 0.4}
    assert "must be >= 0 (got -2)" in reply["rejected"][SIZE]
    # and the same reply on config/result for everyone else
    assert _reply_to(collector, f"{BASE}/config/set") == reply


def test_a_request_whose_response_topic_has_a_wildcard_is_answered_only_on_config_result_and_the_link_goes_on(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    """Mosquitto forwards a response topic with a wildcard; paho refuses to publish on it, which ended the
    publisher thread: nothing was published any more (a retained request did it again at every start)."""
    got: list[tuple[str, bytes, bytes | None]] = []
    done = threading.Event()

    def request(value: float, response_topic: str) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic
        payload = json.dumps({SCORE: value}).encode()
        client.publish(f"{BASE}/config/set", payload, qos=1, properties=props).wait_for_publish(5)

    with _mqtt5_client(broker, "test/replies/42", got, done) as client, Edgeseg(tmp_path, broker.url) as run:
        assert collector.wait(lambda: collector.on(f"{BASE}/status"), 60), run.output()
        request(0.4, "test/replies/#")
        request(0.35, "test/replies/42")
        assert done.wait(10), run.output()
        stats = len(collector.on(f"{BASE}/stats"))
        assert collector.wait(lambda: len(collector.on(f"{BASE}/stats")) >= stats + 2, 10)
    assert run.code == 0, run.output()
    assert json.loads(got[0][1])["applied"] == {SCORE: 0.35}
    assert [r["applied"] for r in _replies(collector)] == [{SCORE: 0.4}, {SCORE: 0.35}]


@contextlib.contextmanager
def _mqtt5_client(
    broker: Broker, topic: str, got: list[tuple[str, bytes, bytes | None]], done: threading.Event
) -> Iterator[mqtt.Client]:
    """A running MQTT 5 client subscribed to ``topic``: each message it gets (topic, payload, correlation
    data) goes into ``got``, and sets ``done``."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"req-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        got.append((msg.topic, bytes(msg.payload), getattr(msg.properties, "CorrelationData", None)))
        done.set()

    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        yield client
    finally:
        client.loop_stop()
        client.disconnect()


KEYS = [
    SCORE, SIZE, "postprocess.semantic.rods", "source.roi", "postprocess.semantic.dist_threshold",
    "postprocess.score_threshold", "model.path", "sinks", "postprocess", "x.y.z", "", "a/b", "a.", ".",
]  # fmt: skip


FUZZ_TOPICS = [f"{BASE}/config/set", f"{BASE}/config/{SCORE}/set"]


def _fuzz_message(rng: random.Random) -> tuple[str, bytes]:
    kind = rng.randrange(4)
    if kind == 0:  # one key, any value
        key = rng.choice(KEYS)
        value = rng.choice([rng.uniform(-2, 2), rng.randrange(-5, 500), True, None, "abc", [0, 0, 1, 1], {}])
        return f"{BASE}/config/{key}/set", json.dumps(value).encode()
    if kind == 1:  # a JSON object of keys
        doc = {rng.choice(KEYS): rng.choice([rng.random(), -1, "x", [rng.random()] * 4]) for _ in range(3)}
        return f"{BASE}/config/set", json.dumps(doc).encode()
    if kind == 2:  # random bytes
        return rng.choice([f"{BASE}/config/set", f"{BASE}/config/{SCORE}/set"]), rng.randbytes(
            rng.randrange(64)
        )
    text = rng.choice(['{"a":', "[" * 500, '{"' + "k" * 5000 + '": 1}', "nan", "1e999", "-0", "\u00e9"])
    return rng.choice([f"{BASE}/config/set", f"{BASE}/config/{SCORE}/set"]), text.encode()


def test_a_thousand_random_payloads_on_the_config_topics_never_stop_the_pipeline(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    rng = random.Random(1234)
    with Edgeseg(tmp_path, broker.url) as run:
        assert collector.wait(lambda: len(collector.on("/results")) >= 2, 60), run.output()
        ours = 0  # requests on the device's config topics ("a/b" makes a topic it does not subscribe to)
        for _ in range(1000):
            topic, payload = _fuzz_message(rng)
            ours += mqtt.topic_matches_sub(f"{BASE}/config/+/set", topic) or topic == f"{BASE}/config/set"
            collector.client.publish(topic, payload, qos=1)
        # every request gets a reply
        assert collector.wait(lambda: len(_replies(collector)) >= ours, 120), (len(_replies(collector)), ours)
        before = len(collector.on("/results"))
        assert collector.wait(lambda: len(collector.on("/results")) >= before + 3, 30), "results stopped"
        run.send(signal.SIGTERM)
        assert run.wait(60) == 0, run.output()
    for reply in _replies(collector):
        validate("config_result", reply)
    # the state only ever held values that were applied
    applied = {
        json.dumps(v).encode() for r in _replies(collector) for k, v in r["applied"].items() if k == SCORE
    }
    assert {m.payload for m in collector.on(STATE)} <= applied | {CARD_SCORE}


@pytest.mark.parametrize("protocol", ["mqttv311", "mqttv5"])
def test_a_subscription_the_broker_refuses_is_logged_counted_in_stats_and_in_the_summary(
    tmp_path: Path, protocol: str
) -> None:
    """A broker whose ACL refuses config/+/set (SUBACK 0x80, or 0x87 in MQTT 5) kept the connection: the
    device published as ever and live control was silently deaf, nothing in the log, stats or summary."""
    deaf = dynsec_broker(
        tmp_path / "broker",
        "device",
        "secret",
        [{"acltype": "subscribePattern", "topic": "edgeseg/+/config/#", "allow": False}],
    )
    deaf.start()
    collector = Collector(deaf.port, ["edgeseg/cam1/stats"])

    def refused() -> list[list[str]]:
        return [m.json()["mqtt"]["refused_subscriptions"] for m in collector.on("/stats")]

    env = edgeseg_env(EDGESEG_MQTT_USERNAME="device", EDGESEG_MQTT_PASSWORD="secret")
    try:
        with Edgeseg(tmp_path, deaf.url, "--set", f"sinks.mqtt.protocol={protocol}", env=env) as run:
            assert collector.wait(lambda: any(refused()), 60), run.output()
    finally:
        collector.close()
        deaf.stop()
    validate("stats", collector.on("/stats")[-1].json())
    config = [f"{BASE}/config/+/set", f"{BASE}/config/set", f"{BASE}/config/save"]
    assert [r for r in refused() if r][-1] == config
    out, err = run.output()
    assert f"WARNING: the broker refused the subscription to {BASE}/config/+/set" in err
    assert (
        f"mqtt: the broker refused the subscription to {', '.join(config)}: what was sent there was never "
        "received (its ACL)"
    ) in out


def test_a_subscription_the_broker_refuses_is_in_the_status_line(tmp_path: Path) -> None:
    """systemd's STATUS= line said "mqtt connected, spool 0" while the broker refused the subscription to
    Home Assistant's birth (or live control's): said once in the log, weeks ago, and nowhere now."""
    from edgeseg.sinks.base import SinkContext
    from edgeseg.sinks.mqtt import MqttSinkConfig
    from edgeseg.sinks.mqtt_sink import MqttSink

    deaf = dynsec_broker(
        tmp_path / "broker",
        "device",
        "secret",
        [{"acltype": "subscribePattern", "topic": "homeassistant/#", "allow": False}],
    )
    deaf.start()
    ctx = SinkContext(class_names=("background", "nut"), state_dir=tmp_path)
    sink = MqttSink(
        MqttSinkConfig(url=deaf.url, device_id="cam1"), ctx, Credentials(username="device", password="secret")
    )
    try:
        deadline = time.monotonic() + 20
        while not sink.publisher.stats().refused_subscriptions and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.status() == "mqtt connected, spool 0, subscription refused: homeassistant/status"
    finally:
        sink.close()
        deaf.stop()


def test_two_updates_racing_leave_the_retained_state_at_the_value_in_effect(tmp_path: Path) -> None:
    """The web page and MQTT change one slider at once: each update's watcher read the value in effect and
    then retained it, so the first could retain its value after the second had retained the newer one (Home
    Assistant's slider stuck at a value the device no longer runs). The publisher is not started: its table
    of retained topics is what it sends, and sends again on every connect."""
    repo = Path(__file__).resolve().parents[1]
    card = find_card(repo / "models" / "demo-parts.onnx")
    control = Control(load_config(repo / "pipelines" / "demo.yaml", [], env={}), card)
    topics = Topics("edgeseg", "cam1", "homeassistant")
    spool = Spool(tmp_path / "spool.sqlite3", 1 << 20, 3600)
    publisher = Publisher(
        parse_broker_url("mqtt://127.0.0.1:1"), Credentials(), "cam1", spool, topics, PublisherSettings()
    )
    RemoteControl(publisher, topics, control)
    stale = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # a thread switch at almost every bytecode: the gap is hit within seconds
    try:
        for n in range(600):
            start = threading.Barrier(2, timeout=10)

            def update(value: float, start: threading.Barrier = start) -> None:
                start.wait()
                control.update({SCORE: value}, "test")

            threads = [
                threading.Thread(target=update, args=(v,)) for v in ((0.3, 0.7) if n % 2 else (0.7, 0.3))
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            held = json.loads(publisher._retained[topics.config_state(SCORE)].payload)
            if held != control.value(SCORE):
                stale.append((n, held, control.value(SCORE)))
    finally:
        sys.setswitchinterval(interval)
        publisher.close(0)
        spool.close()
    assert not stale


@pytest.mark.parametrize("named", [(), ("demo",)], ids=["none named", "demo named"])
def test_a_save_into_yaml_of_the_bundled_demo_refuses_and_leaves_it_as_it_was(
    tmp_path: Path, broker: Broker, collector: Collector, named: tuple[str, ...]
) -> None:
    """``edgeseg run`` with no pipeline argument runs the bundled demo, and so does ``edgeseg run demo``:
    "save into YAML" rewrote the checkout's (or the install's) ``pipelines/demo.yaml`` (the first was
    refused, the second was not)."""
    demo = Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml"
    before = demo.read_bytes()
    try:
        with Edgeseg(tmp_path, broker.url, *named) as run:
            assert collector.wait(lambda: collector.on(f"{BASE}/status"), 60), run.output()
            collector.publish(f"{BASE}/config/{SCORE}/set", b"0.35")
            assert _reply_to(collector, f"{BASE}/config/{SCORE}/set")["ok"] is True
            collector.publish(f"{BASE}/config/save", b"yaml")
            reply = _reply_to(collector, f"{BASE}/config/save")
        assert demo.read_bytes() == before
        assert reply["ok"] is False
        refusal = reply["rejected"]["payload"]
        assert "pipelines/demo.yaml is bundled with edgeseg" in refusal, reply
        assert "copy it ('edgeseg pipelines --copy demo FILE')" in refusal, reply
        assert "\n" not in refusal
    finally:
        demo.write_bytes(before)
