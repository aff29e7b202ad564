"""The MQTT sink's settings: broker URLs, device ids, where credentials come from, and the payload format."""

from __future__ import annotations

import json
import math
import re
from ipaddress import IPv6Address
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeseg.config import load_config
from edgeseg.errors import ConfigError
from edgeseg.mqtt.broker import BrokerAddress, device_id, load_credentials, parse_broker_url
from edgeseg.mqtt.discovery import discovery_payload
from edgeseg.mqtt.topics import (
    ModelInfo,
    Topics,
    as_replay,
    cpu_temperature_c,
    finite,
    info_payload,
    results_payload,
    topic_name,
)
from edgeseg.sinks.mqtt import MqttSinkConfig

HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)


@given(HOSTS, st.integers(1, 65535), st.booleans())
def test_a_broker_address_round_trips_through_its_url(host: str, port: int, tls: bool) -> None:
    address = BrokerAddress(host, port, tls)
    assert parse_broker_url(str(address)) == address


@given(st.ip_addresses(v=6), st.integers(1, 65535), st.booleans())
def test_an_ipv6_broker_address_is_shown_as_a_url_that_names_it(
    host: IPv6Address, port: int, tls: bool
) -> None:
    # shown as mqtt://::1:1883 (in the start line, the summary and every connection error), the host and
    # the port ran together: neither the reader nor --url could tell them apart
    address = BrokerAddress(str(host), port, tls)
    assert parse_broker_url(str(address)) == address


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker", BrokerAddress("broker", 1883, False)),
        ("mqtts://broker", BrokerAddress("broker", 8883, True)),
        ("mqtt://10.0.0.5:1884/", BrokerAddress("10.0.0.5", 1884, False)),
        ("mqtt://[::1]:1883", BrokerAddress("::1", 1883, False)),
    ],
)
def test_broker_urls_default_the_port_by_scheme(url: str, expected: BrokerAddress) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("tcp://broker", "expected mqtt://host[:port]"),
        ("broker:1883", "expected mqtt://host[:port]"),
        ("mqtt://", "no host"),
        ("mqtt://broker/topic", "unexpected path"),
        ("mqtt://user@broker", "no credentials in the URL"),
        ("mqtt://broker:port", "expected mqtt://host[:port]"),
        ("mqtt://broker:0", "port 0"),  # was 1883 without a word
    ],
)
def test_malformed_broker_urls_are_one_line_errors_naming_the_key(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=r"^sinks\.mqtt\.url: ") as info:
        parse_broker_url(url)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_the_device_id_is_the_sanitized_hostname_plus_the_service_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "pi 4.local")
    assert device_id(None, env={}) == "pi-4-local"
    assert device_id(None, env={"EDGESEG_INSTANCE": "front door"}) == "pi-4-local-front-door"
    assert device_id("line3", env={"EDGESEG_INSTANCE": "a"}) == "line3-a"


def test_systemd_credentials_win_over_the_environment_and_config_files(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-username").write_text("from-systemd\n")
    (creds / "mqtt-password").write_text("s3cret\n")
    (creds / "mqtt-ca").write_text("CA")
    files = tmp_path / "user"
    files.write_text("from-file")
    env = {"CREDENTIALS_DIRECTORY": str(creds), "EDGESEG_MQTT_USERNAME": "from-env"}
    got = load_credentials(username_file=files, env=env)
    assert (got.username, got.password, got.ca_file, got.origin) == (
        "from-systemd",
        "s3cret",
        creds / "mqtt-ca",
        "systemd credentials",
    )
    assert "s3cret" not in repr(got)
    got = load_credentials(
        username_file=files, env={"EDGESEG_MQTT_USERNAME": "u", "EDGESEG_MQTT_PASSWORD": "p"}
    )
    assert (got.username, got.password, got.origin) == ("u", "p", "environment")
    got = load_credentials(username_file=files, env={})
    assert (got.username, got.password, got.origin) == ("from-file", None, "files")


def test_an_unreadable_or_empty_credential_file_is_a_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "pw"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=r"^sinks\.mqtt\.password_file: .*pw is empty$"):
        load_credentials(password_file=empty, env={"EDGESEG_MQTT_USERNAME": "u"})
    with pytest.raises(ConfigError, match=r"^sinks\.mqtt\.ca_file: cannot read .*nope"):
        load_credentials(ca_file=tmp_path / "nope", env={})


@pytest.mark.parametrize("key", ["password", "username", "token"])
def test_secrets_in_the_pipeline_file_are_refused_with_where_they_go(tmp_path: Path, key: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"model: {{path: m.onnx}}\nsinks: {{mqtt: {{url: 'mqtt://b', {key}: hunter2}}}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"sinks.mqtt.{key}: secrets are not read from pipeline files")
    assert "CREDENTIALS_DIRECTORY" in message
    assert "hunter2" not in message


def test_the_mqtt_section_is_validated_like_every_other_section() -> None:
    config = load_config(None, ["sinks.mqtt.url=mqtt://b", "sinks.mqtt.max_rate=2.5"], env={})
    section = config.sinks.section(MqttSinkConfig)
    assert (section.url, section.max_rate, section.prefix) == ("mqtt://b", 2.5, "edgeseg")
    with pytest.raises(ConfigError, match=r"^sinks\.mqtt\.protocol: must be one of mqttv5, mqttv311"):
        load_config(None, ["sinks.mqtt.protocol=mqttv3"], env={})
    with pytest.raises(ConfigError, match=r"^sinks\.mqtt\.device_id: must be one topic level of letters"):
        load_config(None, ["sinks.mqtt.device_id=a/b"], env={})


def test_a_keepalive_over_the_16_bit_field_mqtt_carries_it_in_is_refused_at_load() -> None:
    # 70000 was taken, then the publisher thread died at connect (struct.error) and nothing was published
    with pytest.raises(
        ConfigError, match=r"^sinks\.mqtt\.keepalive_s: must be in \[5, 65535\] \(got 70000\)"
    ):
        load_config(None, ["sinks.mqtt.keepalive_s=70000"], env={})
    section = load_config(None, ["sinks.mqtt.keepalive_s=65535"], env={}).sinks.section(MqttSinkConfig)
    assert section.keepalive_s == 65535


def test_a_flush_timeout_longer_than_a_thread_can_wait_is_refused_at_load() -> None:
    # 1e10 ("wait for ever") was taken, then the sink failed at stop: Thread.join's OverflowError
    with pytest.raises(ConfigError, match=r"^sinks\.mqtt\.flush_timeout_s: must be in \[0, 86400\]"):
        load_config(None, ["sinks.mqtt.flush_timeout_s=1e10"], env={})


@given(st.integers(0, 2**31), st.text(min_size=1, max_size=8))
def test_a_replayed_results_payload_differs_only_in_its_replay_flag(seq: int, source: str) -> None:
    live = results_payload(f'"frame":3,"source":{json.dumps(source)}}}', "ab" * 16, seq)
    doc, again = json.loads(live), json.loads(as_replay(live))
    assert doc["replay"] is False
    assert again == {**doc, "replay": True}
    assert doc["seq"] == seq


def test_topic_levels_never_contain_wildcards_or_separators() -> None:
    assert topic_name("traffic light/#1+") == "traffic_light_1"
    topics = Topics("edgeseg", "cam1")
    assert topics.counts("a/b") == "edgeseg/cam1/counts/a_b"
    assert topics.discovery == "homeassistant/device/cam1/config"


def test_labels_in_a_script_without_ascii_letters_each_get_a_topic_and_a_sensor_of_their_own() -> None:
    # a model labelled in Chinese or Cyrillic: every class was counts/_ and Home Assistant got one sensor
    classes = ["人", "车", "自行车", "человек"]
    topics = Topics("edgeseg", "cam1")
    levels = [topics.counts(name).rpartition("/")[2] for name in classes]
    assert len(set(levels)) == len(classes)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", level) for level in levels)
    doc = json.loads(discovery_payload(topics, "m", classes, False, (), (), ()))
    counts = [key for key in doc["cmps"] if key.startswith("count_") and key != "count_all"]
    assert len(counts) == len(classes)
    assert topic_name("traffic light/#1+") == "traffic_light_1"  # a name with ASCII in it keeps its topic


def test_reconnect_delays_double_up_to_the_cap_with_jitter_below_the_plain_delay() -> None:
    import itertools

    from edgeseg.backoff import backoff_delays

    plain = list(itertools.islice(backoff_delays(0.5, 4.0), 6))
    assert plain == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    jittered = list(itertools.islice(backoff_delays(0.5, 4.0, jitter=0.5), 200))
    caps = [*plain, *[4.0] * 194]
    assert all(c * 0.5 <= d <= c for d, c in zip(jittered, caps, strict=True))
    assert len({round(d, 6) for d in jittered[10:]}) > 100  # not in lockstep


@pytest.mark.parametrize(
    ("topic", "key"),
    [
        ("edgeseg/cam1/config/postprocess.semantic.min_score/set", "postprocess.semantic.min_score"),
        ("edgeseg/cam1/config//set", ""),  # (an empty level: an empty key, refused like any unknown one)
        ("edgeseg/cam1/config/set", None),  # (the whole-document topic: its "/set" overlaps the head's "/")
        ("edgeseg/cam1/config/a/state", None),
        ("edgeseg/cam1/configs/a/set", None),
        ("edgeseg/cam2/config/a/set", None),
    ],
)
def test_a_config_key_is_read_only_from_this_devices_key_set_topics(topic: str, key: str | None) -> None:
    assert Topics("edgeseg", "cam1").config_key(topic) == key


def test_an_unmeasured_figure_is_null_and_a_measured_one_rounded() -> None:
    assert [finite(v) for v in (None, math.nan, math.inf, -math.inf)] == [None] * 4
    assert finite(np.float32(1.23456)) == 1.235
    assert type(finite(np.float32(1.23456))) is float
    assert finite(48.26, digits=1) == 48.3


def test_the_cpu_temperature_is_the_first_readable_thermal_zones_in_degrees(tmp_path: Path) -> None:
    assert cpu_temperature_c(tmp_path) is None  # (a machine without thermal zones)
    for name, text in (
        ("thermal_zone0", "not a number\n"),
        ("thermal_zone1", "48312\n"),
        ("thermal_zone2", "9\n"),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "temp").write_text(text)
    assert cpu_temperature_c(tmp_path) == 48.3


def test_info_says_the_frame_size_once_known_and_when_the_run_started() -> None:
    model = ModelInfo("demo-parts", "models/demo-parts.onnx", "ab" * 32)
    before = json.loads(
        info_payload("cam1", "0" * 32, 1_700_000_000.12345, model, ["nut"], "synthetic:", None, "rle")
    )
    assert before["frame"] is None
    assert before["started_at"] == "2023-11-14T22:13:20Z"
    assert before["started_at_unix"] == 1_700_000_000.123
    after = json.loads(info_payload("cam1", "0" * 32, 0.0, model, ["nut"], "synthetic:", (640, 480), "rle"))
    assert after["frame"] == {"width": 640, "height": 480}
