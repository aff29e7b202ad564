"""Writing a live tuning back into a pipeline YAML: only the tuned lines change, comments and layout stay."""

from __future__ import annotations

import contextlib
import copy
import difflib
import os
import resource
import shutil
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edgeseg.config import PIPELINES_DIR, load_config
from edgeseg.errors import ConfigError
from edgeseg.yamledit import write_back

TUNING = {"postprocess.semantic.dist_threshold": 0.35, "source.roi": [0.1, 0.2, 0.5, 0.5]}
ROI_LINE = "  roi: [0.1, 0.2, 0.5, 0.5]"


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copyfile(PIPELINES_DIR / name, target)
    return target


def _diff(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines) of a line diff, without line ends."""
    removed, added = [], []
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        (removed if line.startswith("-") else added).append(line[1:])
    return removed, added


def _comment_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


def _is_subsequence(needles: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(needle == line for line in it) for needle in needles)


def _applied(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``changes`` set the way write_back must set them (null or missing sections made)."""
    result = copy.deepcopy(data)
    for key, value in changes.items():
        *sections, name = key.split(".")
        node = result
        for section in sections:
            if node.get(section) is None:
                node[section] = {}
            node = node[section]
        node[name] = value
    return result


def _same_comment_column(old: str, new: str) -> bool:
    return old.index("#") == new.index("#") and old[old.index("#") :] == new[new.index("#") :]


def test_write_back_changes_only_the_tuned_lines_of_demo_and_keeps_comments(tmp_path: Path) -> None:
    path = _copy(tmp_path, "demo.yaml")
    before = path.read_text()

    write_back(path, TUNING)

    after = path.read_text()
    removed, added = _diff(before, after)
    assert removed == ["  semantic: null"]
    assert sorted(added) == sorted([ROI_LINE, "  semantic:", "    dist_threshold: 0.35"])
    assert _is_subsequence(_comment_lines(before), after.splitlines())
    assert yaml.safe_load(after) == _applied(yaml.safe_load(before), TUNING)


def test_write_back_changes_only_the_tuned_lines_of_aicam_and_keeps_comments(tmp_path: Path) -> None:
    path = _copy(tmp_path, "aicam-imx500-deeplab.yaml")
    before = path.read_text()
    # both keys exist: `source.roi` (null) and `postprocess.semantic.dist_threshold` (a number)
    assert "  roi: null" in before
    assert yaml.safe_load(before)["postprocess"]["semantic"]["dist_threshold"] != 0.35

    write_back(path, TUNING)

    after = path.read_text()
    removed, added = _diff(before, after)
    assert [line.split(":")[0] for line in removed] == ["  roi", "    dist_threshold"]
    assert [line.split("#")[0].rstrip() for line in added] == [ROI_LINE, "    dist_threshold: 0.35"]
    # the end-of-line comments of the changed lines stay, in the same column
    assert _same_comment_column(removed[0], added[0])
    assert _same_comment_column(removed[1], added[1])
    assert _is_subsequence(_comment_lines(before), after.splitlines())
    # the anchor and the alias (and the comment after it) are untouched
    assert "  path: *network              # the same .rpk: its outputs arrive with each frame" in after
    assert yaml.safe_load(after) == _applied(yaml.safe_load(before), TUNING)


def test_write_back_turns_a_null_section_into_a_mapping_above_its_commented_out_keys(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "postprocess:\n"
        "  semantic: null   # the card's values\n"
        "  #   dist_threshold: 0.5\n"
        "  #   size_threshold: 20\n"
        "\n"
        "pipeline:\n"
        "  queue_size: 2\n"
    )

    write_back(path, {"postprocess.semantic.dist_threshold": 0.35, "postprocess.score_threshold": 0.4})

    assert path.read_text() == (
        "postprocess:\n"
        "  semantic:        # the card's values\n"
        "    dist_threshold: 0.35\n"
        "  #   dist_threshold: 0.5\n"
        "  #   size_threshold: 20\n"
        "  score_threshold: 0.4\n"
        "\n"
        "pipeline:\n"
        "  queue_size: 2\n"
    )


def test_write_back_adds_new_keys_and_sections_above_the_blank_line_ending_a_section(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("source:\n  uri: v4l2:0\n\n# the model\nmodel:\n  path: m.onnx\n")

    write_back(path, {"source.roi": [0, 0, 1, 1], "source.fps": 15, "sinks.jsonl.path": None})

    assert path.read_text() == (
        "source:\n  uri: v4l2:0\n  roi: [0, 0, 1, 1]\n  fps: 15\n\n# the model\nmodel:\n  path: m.onnx\n"
        "sinks:\n  jsonl:\n    path: null\n"
    )


def test_write_back_keeps_the_files_indentation(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("model:\n    path: m.onnx\nclasses:\n  -   nut\n  -   bolt\npostprocess: null\n")

    write_back(path, {"postprocess.semantic.dist_threshold": 0.35})

    assert path.read_text() == (
        "model:\n    path: m.onnx\nclasses:\n  -   nut\n  -   bolt\n"
        "postprocess:\n    semantic:\n        dist_threshold: 0.35\n"
    )


def test_write_back_indents_by_two_where_the_file_has_no_nested_block_section(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("a: 1\nb: {x: 1}\n")  # (a flow mapping on its key's line says nothing of the step)

    write_back(path, {"c.d": 2})

    assert path.read_text() == "a: 1\nb: {x: 1}\nc:\n  d: 2\n"


@pytest.mark.parametrize("key", ["source..fps", " source.fps", "source.fps "])
def test_write_back_refuses_what_is_not_a_key_path(tmp_path: Path, key: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("source:\n  uri: v4l2:0\n")

    with pytest.raises(ConfigError, match="not a key path"):
        write_back(path, {key: 1})

    assert path.read_text() == "source:\n  uri: v4l2:0\n"


@pytest.mark.parametrize(
    ("before", "changes", "after"),
    [
        pytest.param(  # the block scalar's lines go, the blank line after it and the next key stay
            "source:\n  uri: |\n    rtsp://cam/1\n    more\n\n  fps: 5  # the rate\n",
            {"source.uri": "v4l2:0"},
            "source:\n  uri: v4l2:0\n\n  fps: 5  # the rate\n",
            id="block-scalar",
        ),
        pytest.param(
            "source:\n  uri: >-\n    rtsp://cam/1\n\n\nmodel:\n  path: m.onnx\n",
            {"source.uri": "v4l2:0"},
            "source:\n  uri: v4l2:0\n\n\nmodel:\n  path: m.onnx\n",
            id="folded-scalar-before-blank-lines",
        ),
        pytest.param(  # a null section inside another: its keys one step deeper, the comment in its column
            "sinks:\n  jsonl: null  # off\n  mqtt:\n    host: h\n",
            {"sinks.jsonl.path": "out.jsonl"},
            "sinks:\n  jsonl:       # off\n    path: out.jsonl\n  mqtt:\n    host: h\n",
            id="nested-null-section",
        ),
        pytest.param(  # a new section after sections apart gets a blank line; a new value does not
            "source:\n  uri: x\n\nmodel:\n  path: m\n",
            {"a.b": 1},
            "source:\n  uri: x\n\nmodel:\n  path: m\n\na:\n  b: 1\n",
            id="new-section-after-blank",
        ),
        pytest.param(
            "source:\n  uri: x\n\nmodel:\n  path: m\n",
            {"debug": True},
            "source:\n  uri: x\n\nmodel:\n  path: m\ndebug: true\n",
            id="new-value-after-blank",
        ),
        pytest.param(  # the whole file indented: its step is 4, from its nested section
            "  source:\n      uri: x\n  model: null\n",
            {"model.path": "m"},
            "  source:\n      uri: x\n  model:\n      path: m\n",
            id="indented-file",
        ),
        pytest.param(  # a block list's items go; the comment line after it stays
            "source:\n  roi:\n    - 0\n    - 0\n  # the crop\n  fps: 5\n",
            {"source.roi": [0.1, 0.1, 0.5, 0.5]},
            "source:\n  roi: [0.1, 0.1, 0.5, 0.5]\n  # the crop\n  fps: 5\n",
            id="block-list",
        ),
        pytest.param(  # a value on the line below its key comes up; the key's comment follows it
            "source:\n  uri: x\n  roi:  # the crop\n    [0, 0, 1, 1]\nmodel: m\n",
            {"source.roi": [0.1, 0.1, 0.5, 0.5]},
            "source:\n  uri: x\n  roi: [0.1, 0.1, 0.5, 0.5] # the crop\nmodel: m\n",
            id="value-below-its-key",
        ),
    ],
)
def test_write_back_edits_each_layout_to_exactly_this_text(
    tmp_path: Path, before: str, changes: dict[str, Any], after: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(before)

    write_back(path, changes)

    assert path.read_text() == after


def test_write_back_keeps_every_other_line_byte_for_byte(tmp_path: Path) -> None:
    text = (
        "source:\n"
        "  uri: &cam v4l2:0   # the camera\n"
        "  again: *cam        # an alias with a comment\n"
        "  width:\n"
        "  height: ~\n"
        '  card: {name: "x:0", width: 513, height: 513, layout: nchw, color: rgb, dtype: float32,\n'
        "         mean: [127.5, 127.5, 127.5]}\n"
        "  quoted: 'yes'\n"
        "  fps: 15\n"
    )
    path = tmp_path / "p.yaml"
    path.write_text(text)

    write_back(path, {"source.fps": 30, "source.height": 480, "source.card.width": 600})

    expected = text.replace("fps: 15", "fps: 30").replace("height: ~", "height: 480")
    assert path.read_text() == expected.replace("width: 513", "width: 600")


def test_write_back_keeps_the_comment_after_a_quoted_value_with_a_hash(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("a:\n  name: 'it''s # not a comment'   # the comment\n  b: \"x # y\"\n")

    write_back(path, {"a.name": "new", "a.b": "z: w"})

    assert path.read_text() == "a:\n  name: new                       # the comment\n  b: 'z: w'\n"


def test_write_back_replaces_a_block_list_by_a_flow_list(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("classes:   # names\n  - nut\n  # the long one\n  - bolt\n\n# the source\nsource: x\n")

    write_back(path, {"classes": ["a", "b"]})

    assert path.read_text() == "classes: [a, b] # names\n\n# the source\nsource: x\n"


def test_write_back_separates_a_new_section_like_the_others(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("a:\n  x: 1\n\nb:\n  y: 2\n")

    write_back(path, {"c.z": 3, "d": 4})

    assert path.read_text() == "a:\n  x: 1\n\nb:\n  y: 2\n\nc:\n  z: 3\nd: 4\n"


def test_write_back_refuses_a_layout_it_cannot_edit_line_by_line(tmp_path: Path) -> None:
    text = "card: {name: x,\n  width: 513}\n"
    path = tmp_path / "p.yaml"
    path.write_text(text)

    with pytest.raises(ConfigError) as info:
        write_back(path, {"card.height": 600})  # a new key goes below the flow mapping, not into it

    assert str(info.value) == (
        f"{path}: cannot write the tuning back: its layout cannot be edited line by line here; "
        "set the values by hand"
    )
    assert path.read_text() == text


def test_write_back_keeps_crlf_line_ends_and_a_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"a:\r\n  b: 1   # one\r\nc: 2")

    write_back(path, {"a.b": 3, "c": 4})

    assert path.read_bytes() == b"a:\r\n  b: 3   # one\r\nc: 4"


def test_write_back_writes_numpy_values_as_plain_yaml(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("a:\n  x: 1\n")

    values = {"a.x": np.float64(0.25), "a.n": np.int64(3), "a.enabled": np.bool_(True), "a.roi": np.zeros(2)}

    write_back(path, values)

    assert path.read_text() == "a:\n  x: 0.25\n  n: 3\n  enabled: true\n  roi: [0.0, 0.0]\n"


@pytest.mark.parametrize("name", ["demo.yaml", "aicam-imx500-deeplab.yaml"])
def test_write_back_result_loads_as_a_pipeline_with_the_new_values(tmp_path: Path, name: str) -> None:
    path = _copy(tmp_path, name)

    write_back(path, TUNING)

    config = load_config(path, env={})
    assert config.postprocess.semantic is not None
    assert config.postprocess.semantic.dist_threshold == 0.35
    assert config.source.roi == (0.1, 0.2, 0.5, 0.5)
    assert config.name == path.stem


def test_write_back_does_not_touch_the_file_when_the_values_are_already_there(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("a:\n  x: 0.50   # spelled so\n  on: true\n")
    os.utime(path, (1_000_000, 1_000_000))

    write_back(path, {"a.x": 0.5, "a.on": True})

    assert path.read_text() == "a:\n  x: 0.50   # spelled so\n  on: true\n"
    assert path.stat().st_mtime == 1_000_000


def test_write_back_keeps_permission_bits_and_writes_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.yaml"
    real.write_text("a: 1\n")
    real.chmod(0o640)
    link = tmp_path / "link.yaml"
    link.symlink_to(real)

    write_back(link, {"a": 2})

    assert link.is_symlink()
    assert real.read_text() == "a: 2\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.yaml", "real.yaml"]


def test_write_back_refuses_a_key_path_that_crosses_a_value(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("source:\n  uri: v4l2:0\n")

    with pytest.raises(ConfigError) as info:
        write_back(path, {"source.uri.fps": 30})

    assert str(info.value) == f"{path}: source.uri: is a value, not a section, cannot set source.uri.fps"
    assert path.read_text() == "source:\n  uri: v4l2:0\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("- a\n- b\n", "the file is not a mapping of sections (got list)"),
        ("# only a comment\n", "the file is not a mapping of sections (the file is empty)"),
        ("a: [1, 2\nb: 3\n", "invalid YAML at line 2, column 2: expected ',' or ']', but got ':'"),
    ],
)
def test_write_back_refuses_a_file_that_is_not_a_pipeline(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)

    with pytest.raises(ConfigError) as info:
        write_back(path, {"a": 1})

    message = str(info.value)
    assert message.startswith(f"{path}: cannot write the tuning back: {reason}")
    assert "\n" not in message
    assert path.read_text() == text


def test_write_back_reports_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"

    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot write the tuning back: No such file"):
        write_back(path, {"a": 1})


def test_write_back_refuses_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "p.yaml"
    path.write_text("a: 1\n")
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        probe = folder / "probe"
        with contextlib.suppress(OSError):
            probe.touch()
            probe.unlink()
            pytest.skip("this user (root) can write into a read-only folder")

        with pytest.raises(ConfigError, match=r"p\.yaml: cannot write the tuning back: .*denied"):
            write_back(path, {"a": 2})

        assert path.read_text() == "a: 1\n"
    finally:
        folder.chmod(0o755)


def test_write_back_reports_a_temp_file_that_cannot_be_created(tmp_path: Path) -> None:
    # a real failure even for root: the temp file's name (".<name>.XXXXXXXX.tmp") is longer than NAME_MAX
    path = tmp_path / ("p" * 250 + ".yaml")
    path.write_text("a: 1\n")

    with pytest.raises(ConfigError, match=r"tuning back: cannot write a new copy in .*name too long"):
        write_back(path, {"a": 2})

    assert path.read_text() == "a: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes fail with EFBIG (for root too) while inside."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics checked on Linux")
def test_write_back_leaves_the_file_whole_when_the_write_fails(tmp_path: Path) -> None:
    path = _copy(tmp_path, "demo.yaml")
    before = path.read_bytes()

    with _file_size_limit(len(before) // 2), pytest.raises(ConfigError) as info:
        write_back(path, TUNING)

    assert "cannot write the tuning back: cannot write a new copy" in str(info.value)
    assert "the file is unchanged" in str(info.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["demo.yaml"]
