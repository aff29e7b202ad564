"""Track events and zone/line counts over MQTT (issue 19): a real Mosquitto, ``edgeseg run`` on the demo
(whose pipeline has a counting line across the belt), a broker restart in the middle."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from mqtt_harness import Broker, Collector, Edgeseg

from edgeseg.errors import ConfigError
from edgeseg.events import Event
from edgeseg.frame import Frame, Result
from edgeseg.instances import Instances
from edgeseg.mqtt.broker import Credentials
from edgeseg.mqtt.discovery import discovery_payload
from edgeseg.mqtt.topics import Topics, load_schema
from edgeseg.sinks import mqtt_sink
from edgeseg.sinks.base import SinkContext
from edgeseg.sinks.mqtt import MqttSinkConfig
from edgeseg.sinks.mqtt_sink import EventCap, MqttSink

NS = 1_000_000_000
EVENTS = load_schema("events")


def validate_event(doc: Any) -> None:
    jsonschema.validate(doc, EVENTS, format_checker=jsonschema.FormatChecker())


def test_events_arrive_one_per_message_schema_valid_and_none_lost_across_a_broker_restart(
    tmp_path: Path,
    broker: Broker,
    collector: Collector,
) -> None:
    run = Edgeseg(tmp_path, broker.url, "--set", "sinks.mqtt.max_events_per_s=1000")
    try:
        assert collector.wait(lambda: len(collector.on("/events")) >= 3, 120), run.output()
        broker.stop()
        time.sleep(4)
        broker.start()
        assert collector.wait(lambda: any(m.json()["replay"] for m in collector.on("/events")), 60), (
            run.output()
        )
        crossed = lambda: any(m.json()["kind"] == "line_cross" for m in collector.on("/events"))  # noqa: E731
        assert collector.wait(crossed, 90), run.output()
        assert run.stop() == 0
    finally:
        run.kill()
    out, err = run.output()
    assert "Traceback" not in err
    published = re.search(r"mqtt: (\d+) events spooled", out)
    assert published, out
    assert collector.wait(
        lambda: len({m.json()["event_seq"] for m in collector.on("/events")}) >= int(published[1]), 10
    )
    docs = [m.json() for m in collector.on("edgeseg/cam1/events")]
    for doc in docs:
        validate_event(doc)  # one event per message: an object, never a list
    seqs = sorted({d["event_seq"] for d in docs})
    assert seqs == list(range(int(published[1])))  # none lost across the outage (duplicates allowed: QoS 1)
    by_seq = {d["event_seq"]: d for d in docs}
    news = {d["track_id"] for d in by_seq.values() if d["kind"] == "new"}
    ends = {d["track_id"] for d in by_seq.values() if d["kind"] == "end"}
    assert news
    assert news == ends
    crossings = [d for d in by_seq.values() if d["kind"] == "line_cross"]
    assert crossings
    assert {d["direction"] for d in crossings} == {"in"}
    # retained counts: one JSON object per line and class, the last one equals the crossings seen
    counts = {m.topic: m.json() for m in collector.messages if "/lines/belt/" in m.topic}
    for doc in counts.values():
        jsonschema.validate(doc, {**EVENTS["$defs"]["line_counts"], "$defs": EVENTS["$defs"]})
    assert sum(doc["in"] for doc in counts.values()) == len(crossings)
    discovery = collector.on("homeassistant/device/cam1/config")[0].json()
    assert "line_belt_nut_in" in discovery["cmps"]
    stats = collector.on("/stats")[-1].json()
    assert stats["events"]["suppressed"] == 0


def test_a_flickering_scene_is_capped_per_second_of_capture_time_and_pairs_stay_whole() -> None:
    cap = EventCap(5.0)
    events = []
    seq = 0
    # 100 tracks a second for 10 s, each new, into a zone, out, end within the second
    for k in range(1000):
        t = k * NS // 100
        tid = k + 1
        for kind, zone in (("new", None), ("zone_enter", "z"), ("zone_exit", "z"), ("end", None)):
            events.append(Event(kind, seq, tid, 0, t, 0.0, zone=zone))  # type: ignore[arg-type]
            seq += 1
    sent = [e for e in events if cap.admit(e)]
    assert cap.published + cap.suppressed == len(events)
    opening = [e for e in sent if e.kind in ("new", "zone_enter")]
    assert len(opening) <= 5 * 10 + 5  # the rate, plus one second's burst
    assert cap.suppressed > 3000
    news = {e.track_id for e in sent if e.kind == "new"}
    assert {e.track_id for e in sent if e.kind == "end"} == news
    enters = [(e.track_id, e.zone) for e in sent if e.kind == "zone_enter"]
    exits = [(e.track_id, e.zone) for e in sent if e.kind == "zone_exit"]
    assert enters == exits
    assert {t for t, _ in enters} <= news
    assert not cap._hidden
    assert not cap._inside


def test_the_zone_exit_a_track_gets_with_its_end_is_published_like_its_enter() -> None:
    """The stages put a track's ``end`` before the ``zone_exit`` it gets for ending inside (the tracker runs
    first): the cap must still publish that exit, or an events consumer has the track inside for ever."""
    from test_zones import H, W, result_of, square

    from edgeseg.events import EventSequence
    from edgeseg.tracker import TrackerConfig, TrackerStage
    from edgeseg.zones import ZoneConfig, ZoneStage

    seq = EventSequence()
    tracker = TrackerStage(TrackerConfig(enabled=True), seq)
    zone = ZoneConfig(polygon=((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)), enter_s=0.0)
    zones = ZoneStage({"z": zone}, {}, 2.0, seq)
    events: list[Event] = []
    for k in range(10):  # 1 s in the zone at 10 fps, then gone: lost_s later the track ends inside
        events += zones.process(tracker.process(result_of(square(300, 200, track=-1), k, 10.0))).events
    for k in range(10, 40):
        events += zones.process(tracker.process(result_of(Instances.empty((H, W)), k, 10.0))).events
    cap = EventCap(20.0)
    assert [(e.kind, cap.admit(e)) for e in events] == [
        ("new", True),
        ("zone_enter", True),
        ("end", True),
        ("zone_exit", True),
    ]
    assert cap.suppressed == 0
    assert not cap._inside


def test_discovery_has_a_sensor_per_zone_figure_and_class() -> None:
    topics = Topics("edgeseg", "cam1", "homeassistant")
    doc = json.loads(discovery_payload(topics, "demo", ["nut", "bolt"], False, (), ["reject"], ["belt"]))
    cmps = doc["cmps"]
    assert cmps["zone_reject_nut_inside"]["state_topic"] == "edgeseg/cam1/zones/reject/nut"
    assert cmps["zone_reject_bolt_entered"]["state_class"] == "total_increasing"
    assert cmps["line_belt_bolt_out"]["value_template"] == "{{ value_json['out'] }}"
    jsonschema.validate(doc, load_schema("discovery"))


def test_zone_sensors_whose_names_join_alike_get_distinct_keys_and_the_others_keep_theirs() -> None:
    """Zone ``a`` with class ``b_c`` and zone ``a_b`` with class ``c`` both made ``zone_a_b_c_inside``: one
    Home Assistant sensor overwrote the other."""
    topics = Topics("edgeseg", "cam1", "homeassistant")
    doc = json.loads(discovery_payload(topics, "m", ["b_c", "c"], False, (), ["a", "a_b"], ["a", "a_b"]))
    cmps = doc["cmps"]
    for kind, figures, level in (
        ("zone", ("inside", "entered", "exited"), "zones"),
        ("line", ("in", "out"), "lines"),
    ):
        sensors = [c for c in cmps.values() if c["state_topic"].startswith(f"edgeseg/cam1/{level}/")]
        assert len(sensors) == 2 * 2 * len(figures)  # every zone, class and figure has its own
        assert len({c["unique_id"] for c in sensors}) == len(sensors)
        assert cmps[f"{kind}1_a_b_c_{figures[0]}"]["state_topic"] == f"edgeseg/cam1/{level}/a/b_c"
        assert cmps[f"{kind}3_a_b_c_{figures[0]}"]["state_topic"] == f"edgeseg/cam1/{level}/a_b/c"
        # the pairs that collide with none keep the keys they had
        assert cmps[f"{kind}_a_c_{figures[0]}"]["state_topic"] == f"edgeseg/cam1/{level}/a/c"
        assert cmps[f"{kind}_a_b_b_c_{figures[0]}"]["state_topic"] == f"edgeseg/cam1/{level}/a_b/b_c"
    jsonschema.validate(doc, load_schema("discovery"))


def test_the_classes_no_instance_has_are_never_counted_nor_announced(tmp_path: Path) -> None:
    # a semantic model's background and its contact class (where parts touch) are classes of its map, not
    # of parts: no count topic, no Home Assistant sensor
    ctx = SinkContext(
        class_names=("background", "nut", "contact", "bolt"),
        never_instances=frozenset({0, 2}),
        state_dir=tmp_path,
    )
    sink = MqttSink(MqttSinkConfig(url="mqtt://127.0.0.1:1", device_id="cam1"), ctx, Credentials())
    try:
        assert sink.counted == ["nut", "bolt"]  # the count topics and the discovery's sensors
    finally:
        sink.close()


@pytest.mark.parametrize(
    ("classes", "words"),
    [
        (("nut", "all"), "the class 'all' would publish its count on counts/all, the topic of the total"),
        (
            ("a b", "a/b"),
            "the class 'a/b' would publish its count on counts/a_b, the topic of the class 'a b'",
        ),
    ],
)
def test_a_class_whose_count_topic_is_the_totals_or_another_class_is_refused_at_load_in_one_line(
    tmp_path: Path, classes: tuple[str, ...], words: str
) -> None:
    """A class named "all" published its count on counts/all, the total's topic, each overwriting the other,
    and its Home Assistant sensor (count_all) replaced the total's; two names sanitized alike shared one."""
    doc = json.loads(discovery_payload(Topics("edgeseg", "cam1"), "m", ["nut", "all"], False, (), [], []))
    assert doc["cmps"]["count_all"]["name"] == "all count"  # the total's sensor "Count" is gone
    ctx = SinkContext(class_names=classes, state_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^model\.path: ") as info:
        MqttSink(MqttSinkConfig(url="mqtt://127.0.0.1:1", device_id="cam1"), ctx, Credentials())
    assert words in str(info.value)
    assert not list(tmp_path.iterdir())  # refused before its spool was made


def test_an_event_that_cannot_be_serialized_is_lost_counted_and_reported_and_the_others_go_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = mqtt_sink.event_payload

    def payload(event: dict[str, Any], boot_id: str, source: str) -> bytes:
        if event["event_seq"] == 1:
            raise ValueError("Out of range float values are not JSON compliant")
        return real(event, boot_id, source)

    monkeypatch.setattr(mqtt_sink, "event_payload", payload)
    ctx = SinkContext(class_names=("nut",), state_dir=tmp_path)
    sink = MqttSink(MqttSinkConfig(url="mqtt://127.0.0.1:1", device_id="cam1"), ctx, Credentials())
    events = tuple(Event("new", seq, seq + 1, 0, seq * NS, 0.0) for seq in range(3))  # type: ignore[arg-type]
    frame = Frame(0, np.zeros((48, 64, 3), np.uint8), 0, 1.0e9, source="test")
    try:
        sink.send(Result(frame, Instances.empty((48, 64)), events=events))
        stats = json.loads(sink._stats_payload())
    finally:
        sink.close()
    report = sink.report()
    assert "mqtt: LOST 1 events (could not be serialized)" in report.lines
    assert "mqtt: 2 events spooled, 0 acknowledged by the broker" in report.lines
    assert report.lost == 1  # so the run does not end "done" with exit status 0
    assert stats["events"] == {"published": 2, "suppressed": 0, "lost": 1}
    jsonschema.validate(stats, load_schema("stats"))
    assert sink.spool.stats().depth == 3  # the two events and the result, spooled for the next start


def _a_run_of_60_frames(workdir: Path, url: str) -> str:
    """What a run of 60 frames at 30 fps in ``workdir``, publishing to ``url``, printed on stdout; it must end
    with status 0 and no traceback."""
    run = Edgeseg(workdir, url, "--max-frames", "60", fps=30)
    assert run.wait(120) == 0, run.output()
    out, err = run.output()
    assert "Traceback" not in err
    return out


def test_the_summary_counts_the_events_spooled_and_those_the_broker_acknowledged_apart(
    tmp_path: Path, broker: Broker
) -> None:
    """With the broker down the summary said "mqtt: 80 events published" beside "0 acknowledged" and "80
    events still in the spool": it counted the events put in the spool as published."""
    broker.stop()
    out = _a_run_of_60_frames(tmp_path / "down", broker.url)
    spooled = re.search(r"mqtt: (\d+) events spooled, 0 acknowledged by the broker", out)
    assert spooled, out
    assert int(spooled[1]) > 0
    assert "published" not in out
    assert f"and {spooled[1]} events still in the spool" in out
    broker.start()
    out = _a_run_of_60_frames(tmp_path / "up", broker.url)
    # a clean stop delivers everything: each event spooled is acknowledged
    both = re.search(r"mqtt: (\d+) events spooled, (\d+) acknowledged by the broker", out)
    assert both, out
    assert int(both[1]) > 0
    assert both[1] == both[2]


def test_uptime_counts_the_time_that_passed_whatever_the_wall_clock_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = SinkContext(class_names=("nut",), state_dir=tmp_path)
    sink = MqttSink(MqttSinkConfig(url="mqtt://127.0.0.1:1", device_id="cam1"), ctx, Credentials())
    try:
        stepped = time.time() - 30 * 86400  # NTP sets a clock that booted a month ahead back
        monkeypatch.setattr(mqtt_sink.time, "time", lambda: stepped)
        stats = json.loads(sink._stats_payload())
    finally:
        sink.close()
    assert 0 <= stats["uptime_s"] < 60
    jsonschema.validate(stats, load_schema("stats"))


def test_stats_link_figures_count_the_events_with_the_results(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    """Results and events share the spool and the link: stats' mqtt.acked (like replayed, too_large, refused
    and publish_ms) counts the messages of both, which the docstring said were the results'."""
    with Edgeseg(tmp_path, broker.url, "--set", "sinks.mqtt.max_events_per_s=1000") as run:
        assert collector.wait(lambda: len(collector.on("/events")) >= 3, 120), run.output()
    assert run.code == 0, run.output()
    assert collector.wait(lambda: collector.on("/status")[-1].payload == b"offline", 10)
    final = collector.on("/stats")[-1].json()
    assert final["events"]["published"] >= 3
    # a clean stop delivered everything: each message spooled is acknowledged, events too
    assert final["mqtt"]["acked"] == final["results"]["published"] + final["events"]["published"]


def test_the_events_the_rate_cap_suppresses_are_the_gaps_in_event_seq_on_the_topic(
    tmp_path: Path, broker: Broker, collector: Collector
) -> None:
    """events.json said event_seq has no gaps within a boot; on the events topic the events over
    max_events_per_s leave gaps, which a consumer must not take for lost messages: they are counted."""
    with Edgeseg(tmp_path, broker.url, "--set", "sinks.mqtt.max_events_per_s=0.5", fps=30) as run:
        suppressed = lambda: any(m.json()["events"]["suppressed"] for m in collector.on("/stats"))  # noqa: E731
        assert collector.wait(lambda: suppressed() and len(collector.on("/events")) >= 2, 120), run.output()
    assert run.code == 0, run.output()
    assert collector.wait(lambda: collector.on("/status")[-1].payload == b"offline", 10)
    final = collector.on("/stats")[-1].json()
    seqs = {m.json()["event_seq"] for m in collector.on("/events")}
    assert len(seqs) == final["events"]["published"]
    gaps = max(seqs) + 1 - len(seqs)
    assert gaps > 0
    # every gap is an event suppressed (those after the last one published are suppressed too)
    assert gaps <= final["events"]["suppressed"]
