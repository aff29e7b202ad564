"""Pipeline config: defaults, overrides, env, one-line key-path errors, committed pipelines, schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from edgeseg.config import (
    DEFAULT_PIPELINE,
    PIPELINES_DIR,
    ModelConfig,
    Override,
    PipelineConfig,
    SourceConfig,
    config_json_schema,
    load_config,
)
from edgeseg.errors import ConfigError
from edgeseg.semantic import SemanticParams
from edgeseg.sources import make_source, open_source, parse_uri
from edgeseg.statedir import state_dir
from edgeseg.yamlfile import load, one_line

PIPELINES = sorted(PIPELINES_DIR.glob("*.yaml"))
M = "model: {path: m.onnx}\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_a_minimal_file_gets_every_default(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "model: {path: m.onnx}\n"), env={})
    assert config == PipelineConfig(
        name="p", source=SourceConfig(), model=ModelConfig(path=tmp_path / "m.onnx")
    )
    assert config.sinks["jsonl"].mask_format == "rle"
    assert config.pipeline.queue_size == 2


def test_no_path_loads_the_demo_pipeline() -> None:
    config = load_config(None, env={})
    assert config.name == "demo"
    assert config.source.uri.startswith("synthetic:parts")
    assert config.model.path == (DEFAULT_PIPELINE.parent.parent / "models" / "demo-parts.onnx").resolve()


def test_set_overrides_beat_env_which_beats_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "source: {fps: 5}\nmodel: {path: m.onnx}\n")
    env = {
        "EDGESEG__SOURCE__FPS": "7",
        "EDGESEG__SINKS__JSONL__MASK_FORMAT": "polygon",
        "EDGESEG_ASSETS": "/x",
    }
    config = load_config(path, ["source.fps=9", "postprocess.semantic.dist_threshold=0.3"], env=env)
    assert config.source.fps == 9.0
    assert config.sinks["jsonl"].mask_format == "polygon"
    assert config.postprocess.semantic.over(SemanticParams()) == SemanticParams(dist_threshold=0.3)
    assert load_config(path, env=env).source.fps == 7.0


def test_floats_in_exponent_form_are_numbers_in_the_file_in_set_and_in_the_environment(
    tmp_path: Path,
) -> None:
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string: each was refused as "must be a number (got '1e-3')"."""
    path = _write(
        tmp_path, "source: {fps: 1E1}\nmodel: {path: m.onnx}\npostprocess: {semantic: {min_score: 1e-3}}\n"
    )
    config = load_config(
        path, ["postprocess.semantic.dist_threshold=5e-1"], env={"EDGESEG__SOURCE__FPS": "2.5e+1"}
    )
    assert config.postprocess.semantic.over(SemanticParams()) == SemanticParams(
        min_score=0.001, dist_threshold=0.5
    )
    assert config.source.fps == 25.0
    assert load_config(path, env={}).source.fps == 10.0


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4),
        max_leaves=8,
    )
)
@example("x\x85y")  # a NEL: was written as it is in quotes, read back as a space
@example("\xa0")  # a no-break space: was stripped off the text written
@example("\n\U00010000")  # was written as JSON: its surrogate pair read back as two characters
@example([float("inf"), "\n"])  # was written as JSON: Infinity read back as a string
def test_a_value_written_on_one_line_reads_back_as_it_was_by_ours_and_pyyamls_loader(value: Any) -> None:
    """Saved tuning and edited pipelines are written so (text ``1e3`` quoted, ``5e-05`` as ``5.0e-05``)."""
    text = one_line(value)
    assert "\n" not in text
    assert load(text) == value
    assert yaml.safe_load(text) == value


def test_relative_paths_in_the_file_follow_the_file_and_overrides_follow_the_cwd(tmp_path: Path) -> None:
    path = _write(tmp_path, "source: {uri: clips/a.mp4}\nmodel: {path: ../m.onnx, engine_cache_dir: cache}\n")
    config = load_config(path, env={})
    assert config.source.uri == str(tmp_path / "clips" / "a.mp4")
    assert config.model.path == tmp_path.parent / "m.onnx"
    assert config.model.engine_cache_dir == tmp_path / "cache"
    assert load_config(path, ["model.path=x.onnx"], env={}).model.path == Path("x.onnx")


def test_a_relative_xdg_state_home_is_ignored_as_the_xdg_spec_says() -> None:
    """``XDG_STATE_HOME=state`` made the state directory (MQTT spool, saved tuning) the current directory's
    ``state/edgeseg``: another one in each folder a command ran in."""
    home = Path.home() / ".local" / "state" / "edgeseg"
    assert state_dir(env={"XDG_STATE_HOME": "state"}) == home
    assert state_dir(env={"XDG_STATE_HOME": "/var/x"}) == Path("/var/x/edgeseg")
    assert state_dir(env={}) == home


def test_a_relative_state_dir_in_the_file_follows_the_file_and_one_typed_follows_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pipeline.state_dir: state`` was the current directory's: a run from elsewhere kept its spool and
    saved tuning in another folder, unlike every other path in the file."""
    (tmp_path / "site").mkdir()
    path = _write(tmp_path / "site", M + "pipeline: {state_dir: state}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(path, env={}).pipeline.state_dir == tmp_path / "site" / "state"
    assert load_config(path, ["pipeline.state_dir=here"], env={}).pipeline.state_dir == Path("here")


def test_a_relative_file_uri_in_the_file_follows_the_file_as_a_plain_path_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "site" / "clips").mkdir(parents=True)
    video = tmp_path / "site" / "clips" / "a.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()
    path = _write(tmp_path / "site", M + "source: {uri: 'file:clips/a.avi'}\n")
    monkeypatch.chdir(tmp_path)  # a service runs from another folder than the pipeline's
    config = load_config(path, env={})
    source = open_source(config.source)
    try:
        assert source.read() is not None
    finally:
        source.close()
    assert config.source.uri == str(video)
    # typed on the command line, it is the current directory's, as a plain path is
    assert load_config(path, ["source.uri=file:clips/a.avi"], env={}).source.uri == "file:clips/a.avi"


@pytest.mark.parametrize(
    ("name", "written"),
    [("a%20b.avi", "a%20b.avi"), ("a b.avi", "a%20b.avi"), ("50%.avi", "50%.avi")],
    ids=["percent in the name", "percent-encoded", "bare percent"],
)
def test_a_relative_file_uri_with_a_percent_names_the_same_file_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, written: str
) -> None:
    """A file: URI is percent-decoded unless its path exists as written: that was asked of the current
    directory, so ``file:a%20b.avi`` beside the pipeline was that file from the pipeline's folder and
    ``a b.avi`` (missing) from any other."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / name).touch()
    path = _write(tmp_path / "site", M + f"source: {{uri: 'file:{written}'}}\n")
    for cwd in (tmp_path / "site", tmp_path):
        monkeypatch.chdir(cwd)
        assert load_config(path, env={}).source.uri == str(tmp_path / "site" / name), cwd


def test_a_file_named_like_a_scheme_beside_the_pipeline_is_its_source_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``uri: rec-10:00.avi`` was a file only where the current directory held it: from another folder it was
    an unknown scheme ``rec-10``, although the other relative paths in the file follow the file."""
    (tmp_path / "site").mkdir()
    video = tmp_path / "site" / "rec-10:00.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()
    path = _write(tmp_path / "site", M + "source: {uri: 'rec-10:00.avi'}\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(path, env={})
    assert config.source.uri == str(video)
    source = open_source(config.source)
    try:
        assert source.read() is not None
    finally:
        source.close()


def test_a_relative_network_in_a_picamera2_uri_follows_the_file_as_source_imx500_network_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the model's path (the same .rpk) followed the file, the URI's network the current directory: the
    # camera then failed to open ('IMX500 network not found: nets/a.rpk') wherever the run started
    uri = "picamera2:0?network=nets/a.rpk&fps=15"
    path = _write(tmp_path, f"source: {{uri: '{uri}'}}\nmodel: {{path: nets/a.rpk, backend: imx500}}\n")
    monkeypatch.chdir(tmp_path.parent)
    config = load_config(path, env={})
    assert make_source(config.source).network == str(tmp_path / "nets" / "a.rpk")  # type: ignore[attr-defined]
    assert parse_uri(config.source.uri).options["fps"] == "15"  # the URI's other options kept
    assert load_config(path, [f"source.uri={uri}"], env={}).source.uri == uri  # typed: the cwd's


def test_a_mapping_set_on_a_section_merges_into_it_and_its_paths_follow_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, M + "source: {uri: clips/a.mp4, fps: 5}\n")
    source = Override('source.uri="synthetic:parts?seed=3"', "--source")
    config = load_config(path, [source, "source={loop: true}"], env={})
    # the flag and the file's other keys are kept: only the keys given replace theirs
    assert (config.source.uri, config.source.loop, config.source.fps) == ("synthetic:parts?seed=3", True, 5)
    monkeypatch.chdir(tmp_path.parent)
    # a path typed on the command line is the current directory's, inside a mapping as outside one
    assert load_config(path, ["source={uri: b.mp4}"], env={}).source.uri == "b.mp4"
    with pytest.raises(ConfigError, match=r"^source\.fsp: unknown key; did you mean fps\? .*\[--set\]$"):
        load_config(path, ["source={fsp: 3}"], env={})
    # an empty mapping or null still empties a section
    assert load_config(path, ["source={}"], env={}).source == SourceConfig()
    with pytest.raises(ConfigError, match=r"^zones\.b\.b: unknown key"):
        load_config(path, ["zones=&a {b: *a}"], env={})  # a mapping holding itself


@pytest.mark.parametrize(
    ("uri", "more"),
    [("clip.mp4", []), ("synthetic:parts", []), ("picamera2:0", ["source.imx500_network=null"])],
)
def test_the_imx500_backend_without_a_picamera2_source_running_a_network_is_one_line_at_load(
    uri: str, more: list[str]
) -> None:
    with pytest.raises(ConfigError, match=r"^source\.uri: the imx500 backend takes its results from .*\]$"):
        load_config(
            PIPELINES_DIR / "aicam-imx500-deeplab.yaml",
            [Override(f"source.uri={uri}", "--source"), *more],
            env={},
        )


def test_environment_variables_keep_the_case_of_zone_and_line_names(tmp_path: Path) -> None:
    square = "polygon: [[0, 0], [1, 0], [1, 1], [0, 1]]"
    path = _write(
        tmp_path, M + f"tracker: {{enabled: true}}\nzones: {{Dock: {{{square}}}, dock: {{{square}}}}}\n"
    )
    env = {"EDGESEG__ZONES__Dock__ENTER_S": "2", "EDGESEG__LINES__Gate__POINTS": "[[0, 0.5], [1, 0.5]]"}
    config = load_config(path, env=env)
    assert (config.zones["Dock"].enter_s, config.zones["dock"].enter_s) == (2, 0.3)
    assert list(config.lines) == ["Gate"]


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (M, ["sinks.jsonl.mask_format=bmp"],
         "sinks.jsonl.mask_format: must be one of rle, polygon, none (got 'bmp') [--set]"),
        (M + "postprocess: {semantic: {dist_threshold: 1.7}}", [],
         "postprocess.semantic.dist_threshold: must be in (0, 1] (got 1.7)"),
        ("model: {path: m.onnx, backend: tensorflow}", [], "model.backend: must be one of onnxruntime, "),
        (M + "source: {fps: 0}", [], "source.fps: must be >= 1e-06 (got 0)"),
        (M + "source: {fps: 1e-300}", [], "source.fps: must be >= 1e-06 (got 1e-300)"),  # was OverflowError
        ("model: {path: m, threads: 99999999999999999999}", [], "model.threads: must be in [0, 1024]"),
        (M + 'sinks: {jsonl: {path: "a\\0b.jsonl"}}', [], "sinks.jsonl.path: must be a path (got 'a\\x00b"),
        (M + "pipeline: {queue_size: two}", [], "pipeline.queue_size: must be an integer (got 'two')"),
        # a file source fills each queue: a billion decoded frames were taken, until memory ran out
        (M + "pipeline: {queue_size: 1000000000}", [], "pipeline.queue_size: must be in [1, 64] (got 10000"),
        (M + "postprocess: {score_threshold: 1.5}", [], "postprocess.score_threshold: must be in [0, 1]"),
        (M + "source: {roi: [0, 0, 2, 1]}", [], "source.roi: must be [left, top, width, height]"),
        (M + "source: {uri: 'webcam:0'}", [], "source.uri: unknown source URI 'webcam:0': use "),
        (M + "source: {width: 640}", [], "source.height: required when source.width is set"),
        (M + "source: {width: 100000, height: 480}", [], "source.width: must be in [1, 8192] (got 100000)"),
        (M + "source: {reconnect_max_s: 1e12}", [], "source.reconnect_max_s: must be in (0, 86400] (got 1"),
        # a wait longer than the unit's watchdog interval (60 s) is a stall: systemd restarts the service
        (M + "source: {stream_timeout_s: 45}", [], "source.stream_timeout_s: must be in (0, 30] (got 45)"),
        (M + "source: {uri: 'rtsp://h:99999/x'}", [], "source.uri: source URI 'rtsp://h:99999/x': port 99"),
        (M + "sinks: {video: {codec: h264x}}", [], "sinks.video.codec: must be 4 letters, digits or spaces"),
        (M + "sinks: {display: {enabled: 'yes'}}", [], "sinks.display.enabled: must be true or false"),
        ("source: {uri: v4l2:0}", [], "model.path: required"),
        (M + "sinks: [display]", [], "sinks: must be a section of key: value pairs"),
    ],
)  # fmt: skip
def test_invalid_values_give_one_line_starting_with_the_key_path(
    tmp_path: Path, text: str, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text), overrides, env={})
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(message)


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"^sinks\.jsonl\.mask_fromat: unknown key; did you mean mask_format\?"
    ):
        load_config(_write(tmp_path, "model: {path: m}\nsinks: {jsonl: {mask_fromat: rle}}"), env={})
    with pytest.raises(
        ConfigError, match=r"^postprocess\.semantic\.dist_treshold: unknown key; did you mean dist_th"
    ):
        load_config(_write(tmp_path, "model: {path: m}"), ["postprocess.semantic.dist_treshold=0.2"], env={})
    with pytest.raises(ConfigError, match=r"^mqtt: unknown key \(allowed: name, source, model, "):
        load_config(_write(tmp_path, "model: {path: m}\nmqtt: {host: x}"), env={})
    with pytest.raises(
        ConfigError, match=r"^source\.fsp: unknown key; did you mean fps\? .*\[env EDGESEG__SOURCE__FSP\]"
    ):
        load_config(_write(tmp_path, "model: {path: m}"), env={"EDGESEG__SOURCE__FSP": "3"})


def test_broken_yaml_and_bad_set_syntax_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"p\.yaml: invalid YAML at line \d+, column \d+: "):
        load_config(_write(tmp_path, "model:\n  path: [unclosed\n"), env={})
    with pytest.raises(ConfigError, match=r"--set 'source\.fps': expected key\.path=value"):
        load_config(_write(tmp_path, "model: {path: m}"), ["source.fps"], env={})
    with pytest.raises(ConfigError, match=r"cannot read pipeline file"):
        load_config(tmp_path / "missing.yaml", env={})


# YAML aliases: six levels of nine copies are 9**6 items in a few lines (a real "billion laughs" has nine)
_LAUGHS = "&a [1, 1, 1, 1, 1, 1, 1, 1, 1]"
for _name in "bcdef":
    _LAUGHS = f"&{_name} [{_LAUGHS}, {', '.join([f'*{chr(ord(_name) - 1)}'] * 8)}]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: {path: {2020-01-01: m}}", 'model.path: must be a string (got {"2020-01-01": "m"})'),
        ("model: {path: &r [*r]}", "model.path: must be a string (got [[[["),
        (f"model: {{path: m, providers: {_LAUGHS}}}", "model.providers: must be a list of strings (got [[[["),
        (f"model: {{path: m}}\nsource: {{roi: {_LAUGHS}}}", "source.roi: must be [left, top, width, height]"),
    ],
    ids=["date-key", "recursive-alias", "alias-bomb", "alias-bomb-roi"],
)  # fmt: skip
def test_a_value_that_yaml_aliases_or_keys_make_unprintable_as_json_is_a_short_one_line_error(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text), env={})
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)
    assert len(str(err.value)) < 1000


@pytest.mark.parametrize("name", ["site/cam1", "x/../../../escaped", "a\0b"])
def test_a_pipeline_name_holding_a_path_separator_is_refused_at_load_naming_the_key(
    tmp_path: Path, name: str
) -> None:
    """The name is the saved tuning's file name (``tuning-NAME.yaml`` in the state directory): ``site/cam1``
    saved into a folder ``tuning-site`` there, and ``x/../../../escaped`` outside the state directory."""
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, f"name: {json.dumps(name)}\n" + M), env={})
    assert str(err.value).startswith("name: must not contain '/' or NUL"), err.value
    assert str(err.value).endswith("p.yaml]"), err.value


def test_a_value_nested_deeper_than_python_recurses_is_a_one_line_error(tmp_path: Path) -> None:
    """PyYAML composes a node per level of nesting: ``[[[[...`` 20,000 deep, in the file or in ``--set``,
    was a RecursionError and its traceback."""
    deep = "[" * 20000 + "]" * 20000
    with pytest.raises(ConfigError, match=r"p\.yaml: invalid YAML: nested too deeply$"):
        load_config(_write(tmp_path, M + f"name: {deep}\n"), env={})
    # a --set value that is no YAML is its text, as for any other
    with pytest.raises(ConfigError, match=r"^source\.fps: must be a number \(got '\[\[\[.*\[--set\]$"):
        load_config(_write(tmp_path, M), [f"source.fps={deep}"], env={})


def test_a_long_string_value_is_cut_in_its_error_message(tmp_path: Path) -> None:
    """A string of 100,000 characters where a number goes (a mistaken paste in the file, a --set, an MQTT
    payload) was echoed whole on the error's one line."""
    text = "x" * 100_000
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, M), [f"source.fps={text}"], env={})
    assert (
        str(err.value) == f"source.fps: must be a number (got '{'x' * 200}...' (100000 characters)) [--set]"
    )
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, M), [f"source.roi=[{text}, 0, 1, 1]"], env={})
    assert len(str(err.value)) < 500, str(err.value)[:500]


def test_a_key_holding_a_line_break_is_named_on_the_errors_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, M + 'zones: {"a\\nb": {polygon: [[0, 0], [1, 0], [1, 1]]}}'), env={})
    assert str(err.value).startswith('"zones.a\\nb": name must match')
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, 'model: {path: m, "x\\ry": 1}'), env={})
    assert str(err.value).startswith('"model.x\\ry": unknown key')
    assert "\r" not in str(err.value)


def test_a_key_of_a_megabyte_is_cut_on_the_errors_line_as_a_value_is(tmp_path: Path) -> None:
    key = "k" * 1_000_000  # (an explicit "? key" is the way to a key over YAML's 1024 characters)
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, f"model:\n  path: m\n  ? {key}\n  : 1\n"), env={})
    assert str(err.value).startswith("model." + "k" * 100)
    assert "unknown key" in str(err.value)
    assert len(str(err.value)) < 1000, str(err.value)[:1000]


def test_a_number_python_or_a_float_cannot_take_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # PyYAML's int() of more than 4300 digits and its date of month 13 raised ValueError, and a float field
    # given 400 digits OverflowError in math.isfinite: tracebacks, from a file, a card or a saved tuning
    unread = "p.yaml: invalid YAML at line 2, column 15: cannot read this value"
    for text, expected in [
        (
            f"source: {{fps: {'1' * 5000}}}",
            f"{unread} (Exceeds the limit (4300 digits) for integer string conversion: value has 5000 "
            "digits)",
        ),
        ("source: {fps: 2020-13-45}", f"{unread} (month must be in 1..12)"),
        (
            f"source: {{fps: {'1' * 4000}}}",
            f'source.fps: must be a number (got "{"1" * 200}... (4000 digits)")',
        ),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(_write(tmp_path, M + text), env={})
        assert expected in str(err.value)
        assert len(str(err.value)) < 1000, str(err.value)[:1000]


def test_a_roi_holding_an_integer_past_a_floats_range_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # float() of it raised OverflowError, which validate_roi did not take for a bad ROI
    big = "1" * 400
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, M + f"source: {{roi: [{big}, 0, 1, 1]}}"), env={})
    assert str(err.value).startswith("source.roi: must be [left, top, width, height] inside the frame")


def test_a_zone_point_holding_an_integer_past_a_floats_range_is_one_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    # math.isfinite of it raised OverflowError in the zones' point check
    polygon = f"[[{'1' * 400}, 0], [1, 0], [1, 1]]"
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, M + f"zones: {{a: {{polygon: {polygon}}}}}"), env={})
    assert str(err.value).startswith("zones.a.polygon: must be a list of [x, y] points")


def test_a_key_written_twice_is_an_error_naming_its_line_where_yaml_aliases_merge_as_before(
    tmp_path: Path,
) -> None:
    # a second sinks: appended to a file dropped the first one's sinks (PyYAML keeps the last)
    text = M + "sinks: {jsonl: {path: out.jsonl}}\nsource: {uri: 'synthetic:parts'}\nsinks: {mqtt: {}}\n"
    with pytest.raises(
        ConfigError, match=r"p\.yaml: invalid YAML at line 4, column 1: found duplicate key 'sinks'$"
    ):
        load_config(_write(tmp_path, text), env={})
    with pytest.raises(ConfigError, match=r"at line 1, column 23: found duplicate key 'path'$"):
        load_config(_write(tmp_path, "model: {path: m.onnx, 'path': n.onnx}"), env={})
    merged = "base: &m {path: a.onnx, threads: 2}\nmodel: {<<: *m, path: m.onnx}\n"
    assert load(merged)["model"] == {"path": "m.onnx", "threads": 2}


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_every_committed_pipeline_loads(pipeline: Path) -> None:
    config = load_config(pipeline, env={})
    assert config.name == pipeline.stem


def test_the_committed_schema_is_up_to_date() -> None:
    committed = json.loads((PIPELINES_DIR / "schema.json").read_text())
    assert committed == config_json_schema(), (
        "regenerate: python -c 'import json; from edgeseg.config import config_json_schema;"
        " print(json.dumps(config_json_schema(), indent=2))' > pipelines/schema.json"
    )


def _validate(value: Any, schema: dict[str, Any], path: str = "") -> None:
    """The subset of JSON Schema that config_json_schema emits, enough to check the pipelines against it."""
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                _validate(value, option, path)
                return
            except AssertionError as e:
                errors.append(str(e))
        raise AssertionError(f"{path}: {errors}")
    kind = schema["type"]
    checks = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if kind in ("integer", "number"):
        ok = not isinstance(value, bool) and isinstance(value, int if kind == "integer" else (int, float))
    else:
        ok = isinstance(value, checks[kind])
    assert ok, f"{path}: {value!r} is not {kind}"
    if kind == "object":
        assert set(schema.get("required", ())) <= set(value), f"{path}: missing {schema.get('required')}"
        for key, item in value.items():
            if "properties" not in schema:  # a named mapping (zones, lines): every entry the same section
                assert re.search(schema["propertyNames"]["pattern"], key), f"{path}.{key}: bad name"
                _validate(item, schema["additionalProperties"], f"{path}.{key}")
                continue
            assert key in schema["properties"], f"{path}.{key}: not in schema"
            _validate(item, schema["properties"][key], f"{path}.{key}")
    if kind == "array":
        assert schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value))
        for i, item in enumerate(value):
            _validate(item, schema["items"], f"{path}[{i}]")
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    if "pattern" in schema:
        assert re.search(schema["pattern"], value), f"{path}: {value!r} !~ {schema['pattern']}"
    for word, test in (("minimum", lambda lo: value >= lo), ("maximum", lambda hi: value <= hi),
                       ("exclusiveMinimum", lambda lo: value > lo)):  # fmt: skip
        if word in schema:
            assert test(schema[word]), f"{path}: {value!r} fails {word} {schema[word]}"


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_every_committed_pipeline_validates_against_the_schema(pipeline: Path) -> None:
    _validate(yaml.safe_load(pipeline.read_text()), config_json_schema())


def test_the_schema_rejects_what_the_loader_rejects() -> None:
    schema = config_json_schema()
    with pytest.raises(AssertionError):
        _validate({"model": {"path": "m"}, "sinks": {"jsonl": {"mask_format": "bmp"}}}, schema)
    with pytest.raises(AssertionError):
        _validate({"model": {"path": "m"}, "source": {"fsp": 3}}, schema)
    with pytest.raises(AssertionError):
        _validate({"source": {"uri": "v4l2:0"}}, schema)
