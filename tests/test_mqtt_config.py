"""The MQTT sink's settings: broker URLs, device ids, where credentials come from, and the payload format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeseg.config import load_config
from edgeseg.errors import ConfigError
from edgeseg.mqtt.broker import BrokerAddress, device_id, load_credentials, parse_broker_url
from edgeseg.mqtt.topics import Topics, as_replay, results_payload, topic_name
from edgeseg.sinks.mqtt import MqttSinkConfig

HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)


@given(HOSTS, st.integers(1, 65535), st.booleans())
def test_a_broker_address_round_trips_through_its_url(host: str, port: int, tls: bool) -> None:
    address = BrokerAddress(host, port, tls)
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
    with pytest.raises(ConfigError, match=r"^sinks\.mqtt\.device_id: must match"):
        load_config(None, ["sinks.mqtt.device_id=a/b"], env={})


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


def test_reconnect_delays_double_up_to_the_cap_with_jitter_below_the_plain_delay() -> None:
    import itertools

    from edgeseg.backoff import backoff_delays

    plain = list(itertools.islice(backoff_delays(0.5, 4.0), 6))
    assert plain == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    jittered = list(itertools.islice(backoff_delays(0.5, 4.0, jitter=0.5), 200))
    caps = [*plain, *[4.0] * 194]
    assert all(c * 0.5 <= d <= c for d, c in zip(jittered, caps, strict=True))
    assert len({round(d, 6) for d in jittered[10:]}) > 100  # not in lockstep
