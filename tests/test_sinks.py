"""Sinks: JSON lines round-trip the instances, video files are finalized, bad paths fail at build time."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_instances import instance_sets
from videofile import frame_count

from edgeseg.config import load_config
from edgeseg.errors import ConfigError
from edgeseg.events import Event
from edgeseg.frame import Frame, Result, StageTimes
from edgeseg.instances import MASK_FORMATS, Instances, MaskFormat
from edgeseg.mqtt.topics import RESULTS_SCHEMA, event_payload, results_payload
from edgeseg.sinks import SINKS, SinkContext, result_record
from edgeseg.sinks.jsonl import JsonlSink, rotated
from edgeseg.sinks.record import encoded_record
from edgeseg.sinks.video import VideoSink


def make_result(index: int, h: int = 48, w: int = 64) -> Result:
    img = np.full((h, w, 3), 40, np.uint8)
    inst = Instances.from_crops(
        (h, w), [1, 2], [0.9, 0.6], [(3, 4), (20, 10)], [np.ones((5, 6), bool), np.eye(8, dtype=bool)]
    )
    t0 = time.monotonic_ns()
    times = StageTimes(t0, t0 + 1_000_000, t0 + 3_000_000, t0 + 4_000_000, t0 + 4_000_000)
    return Result(Frame(index, img, t0, 1700000000.5 + index, source="test"), inst, times)


def test_jsonl_writes_one_flushed_record_per_result_that_round_trips_the_instances(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path, "rle", ("background", "nut", "washer"))
    results = [make_result(i) for i in range(3)]
    for r in results:
        sink.send(r)
    assert len(path.read_text().splitlines()) == 3  # flushed before close
    sink.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert records[1]["wall_time"] == 1700000001.5
    assert records[0]["timings_ms"] == {"preprocess": 1.0, "infer": 2.0, "decode": 1.0, "latency": 4.0}
    assert [i["class_name"] for i in records[0]["instances"]] == ["nut", "washer"]
    back = Instances.from_dict(records[2])
    assert [m.tolist() for m in back.masks] == [m.tolist() for m in results[2].instances.masks]


def test_a_record_names_every_class_its_card_names_and_gives_timings_to_the_microsecond() -> None:
    names = ("background", "nut")
    inst = Instances.from_crops(
        (48, 64), [0, 1, 2], [0.9, 0.8, 0.7], [(0, 0)] * 3, [np.ones((2, 2), bool)] * 3
    )
    t0 = 10_000_000_000
    times = StageTimes(t0, t0 + 1_000_457, t0 + 3_000_457, t0 + 4_500_000, t0 + 4_512_345)
    record = result_record(
        Result(Frame(0, np.zeros((48, 64, 3), np.uint8), t0, 1.0), inst, times), 0, "rle", names
    )
    # (a class beyond the card's names keeps its id as its name)
    assert [i["class_name"] for i in record["instances"]] == ["background", "nut", "2"]
    assert record["timings_ms"] == {"preprocess": 1.0, "infer": 2.0, "decode": 1.5, "latency": 4.512}


@settings(max_examples=80, deadline=None)
@given(
    instance_sets(),
    st.sampled_from(MASK_FORMATS),
    st.text(max_size=6),
    st.integers(0, 2**40),
)
def test_a_result_is_encoded_once_and_its_json_line_and_mqtt_payload_hold_its_record_as_before(
    instances: Instances, mask_format: MaskFormat, source: str, seq: int
) -> None:
    names = ("background", "nut", "wäsher")
    frame = Frame(7, np.zeros((*instances.image_shape, 3), np.uint8), 5, 1.7e9, source=source)
    result = Result(frame, instances, StageTimes(5, 6, 8, 9, 9))
    text = encoded_record(result, mask_format, names)
    assert encoded_record(result, mask_format, names) is text
    record = result_record(result, seq, mask_format, names)
    line = f'{{"seq":{seq},{text}'
    # byte for byte what the JSON lines sink wrote when each sink encoded the record itself
    assert line == json.dumps(record, separators=(",", ":"))
    payload = json.loads(results_payload(text, "ab" * 16, seq))
    assert list(payload) == ["replay", "schema", "boot_id", *record]
    assert payload == {"replay": False, "schema": RESULTS_SCHEMA, "boot_id": "ab" * 16, **record}


def test_a_record_json_cannot_hold_is_written_by_no_sink(tmp_path: Path) -> None:
    frame = Frame(0, np.zeros((48, 64, 3), np.uint8), 0, float("nan"))  # a clock gone wrong
    bad = Result(frame, Instances.empty((48, 64)))
    sink = JsonlSink(tmp_path / "out.jsonl")
    with pytest.raises(ValueError, match="JSON compliant"):
        sink.send(bad)  # the pipeline counts it lost for this sink, and a reader sees the gap
    sink.send(make_result(1))
    sink.close()
    assert [json.loads(line)["seq"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [1]


def result_with(index: int, parts: int) -> Result:
    """A result of ``parts`` instances: its JSON line grows with them."""
    crops = [np.ones((2 + k % 5, 3), bool) for k in range(parts)]
    inst = Instances.from_crops(
        (48, 64), [1] * parts, [0.5] * parts, [(k % 60, k % 40) for k in range(parts)], crops
    )
    t0 = time.monotonic_ns()
    return Result(Frame(index, np.zeros((48, 64, 3), np.uint8), t0, 1.0e9 + index), inst, StageTimes(t0))


def rolled_lines(path: Path, keep: int) -> list[list[bytes]]:
    """The lines of a rolling JSON lines file and its full files, oldest file first."""
    files = [rotated(path, k) for k in range(keep, 0, -1)] + [path]
    return [f.read_bytes().splitlines(keepends=True) for f in files if f.exists()]


@settings(max_examples=40, deadline=None)
@given(
    parts=st.lists(st.integers(0, 30), min_size=1, max_size=40),
    max_bytes=st.integers(300, 4000),
    keep=st.integers(1, 3),
)
def test_a_rolling_jsonl_keeps_the_newest_whole_lines_in_files_under_max_bytes(
    tmp_path_factory: pytest.TempPathFactory, parts: list[int], max_bytes: int, keep: int
) -> None:
    path = tmp_path_factory.mktemp("roll") / "out.jsonl"
    sink = JsonlSink(path, max_bytes=max_bytes, keep=keep)
    for i, n in enumerate(parts):
        sink.send(result_with(i, n))
    sink.close()
    assert not rotated(path, keep + 1).exists()
    files = rolled_lines(path, keep)
    for lines in files:
        assert sum(map(len, lines)) <= max_bytes or len(lines) == 1  # a longer line gets a file of its own
    seqs = [json.loads(line)["seq"] for lines in files for line in lines]
    assert seqs == list(range(len(parts) - len(seqs), len(parts)))  # the newest, in order, none cut
    assert sink.rotations == len(files) - 1 or sink.rotations > keep
    assert f"({sink.rotations} rotations)" in sink.report().lines[0]


def test_a_rolling_jsonl_continues_its_file_at_a_start_and_cuts_a_partial_last_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "out.jsonl"
    first = JsonlSink(path, max_bytes=1 << 20)
    for i in range(3):
        first.send(make_result(i))
    first.close()
    with path.open("ab") as f:
        f.write(b'{"seq":3,"frame":')  # a power cut mid-line
    with caplog.at_level(logging.WARNING, logger="edgeseg.sinks.jsonl"):
        second = JsonlSink(path, max_bytes=1 << 20)
    assert "ended in a partial line (17 bytes), cut off" in caplog.text
    for i in range(2):
        second.send(make_result(i))
    second.close()
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [0, 1, 2, 0, 1]
    whole = path.read_bytes()
    with path.open("ab") as f:
        f.write(b"x" * 150_000)  # a partial line longer than the chunks the start reads back
    JsonlSink(path, max_bytes=1 << 20).close()
    assert path.read_bytes() == whole
    JsonlSink(path).close()  # without max_bytes, one file for one run: emptied at the start
    assert path.read_bytes() == b""


def test_a_rotation_that_fails_loses_no_line_and_is_reported_and_tried_again_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "out.jsonl"
    blocker = rotated(path, 1)
    blocker.mkdir()
    (blocker / "x").write_text("a folder where the full file would go")
    sink = JsonlSink(path, max_bytes=4096, keep=1)
    with caplog.at_level(logging.WARNING, logger="edgeseg.sinks.jsonl"):
        for i in range(40):
            sink.send(make_result(i))
    size = path.stat().st_size
    assert size > 2 * 4096
    assert caplog.text.count("cannot rotate") == 1
    report = sink.report().lines
    tries = int(report[1].split()[1])
    assert 1 < tries <= size // 4096 + 1 < 40  # tried again once per 4096 bytes more, not at every line
    assert "rotations failed (last: cannot rotate" in report[1]
    assert report[1].endswith("the file grew past max_bytes, no line was lost")
    (blocker / "x").unlink()
    blocker.rmdir()
    sent = 40
    while not sink.rotations and sent < 100:  # the next try, after 4096 bytes more, succeeds
        sink.send(make_result(sent))
        sent += 1
    sink.close()
    assert sink.rotations == 1
    seqs = [json.loads(line)["seq"] for lines in rolled_lines(path, 1) for line in lines]
    assert seqs == list(range(sent))
    assert len(rolled_lines(path, 1)[1]) == 1  # the line that came when the rotation succeeded


def test_a_rolling_jsonl_whose_file_was_deleted_or_moved_away_starts_a_new_one_at_the_next_rotation(
    tmp_path: Path,
) -> None:
    # someone freeing space (rm out.jsonl), or logrotate moving it: the sink wrote on into the deleted (or
    # moved) file for good, growing past max_bytes without bound, every rotation failing on the missing name
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path, max_bytes=4096, keep=2)
    for i in range(10):
        sink.send(make_result(i))
    path.unlink()
    for i in range(10, 60):
        sink.send(make_result(i))
    sink.close()
    assert sink.report().lines == (f"jsonl: 60 results written to {path} ({sink.rotations} rotations)",)
    assert path.stat().st_size <= 4096
    seqs = [json.loads(line)["seq"] for lines in rolled_lines(path, 2) for line in lines]
    assert seqs == list(range(60 - len(seqs), 60))


def test_a_rolling_jsonl_needs_max_bytes_of_a_few_lines_at_least() -> None:
    with pytest.raises(ConfigError, match=r"sinks\.jsonl\.max_bytes: must be >= 4096 \(got 100\)"):
        load_config(None, ["sinks.jsonl.max_bytes=100"])
    with pytest.raises(ConfigError, match=r"sinks\.jsonl\.keep: must be >= 1 \(got 0\)"):
        load_config(None, ["sinks.jsonl.keep=0"])


def test_record_of_a_result_with_missing_stamps_is_valid_json() -> None:
    r = make_result(0)
    bare = Result(r.frame, r.instances, StageTimes())
    text = json.dumps(result_record(bare, 0), allow_nan=False)
    assert json.loads(text)["timings_ms"]["latency"] is None


def test_an_event_carries_the_very_wall_time_of_its_frames_record() -> None:
    # events on MQTT carry no frame index: a consumer finds an event's result by the capture time they share,
    # which rounding to the microsecond broke for about half of the frames (1796503433.1450317 -> ...032)
    wall = 1796503433.1450317
    frame = Frame(7, np.zeros((48, 64, 3), np.uint8), 5_000_000_123, wall, source="test")
    event = Event("new", 0, 1, 1, frame.t_capture_ns, frame.wall_time)
    record = json.loads(
        json.dumps(result_record(Result(frame, Instances.empty((48, 64)), events=(event,)), 0))
    )
    message = json.loads(event_payload(event.to_dict(), "0" * 32, "test"))
    assert record["wall_time"] == record["events"][0]["wall_time"] == message["wall_time"] == wall


def test_video_sink_writes_every_frame_and_finalizes_the_file_on_close(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    sink = VideoSink(path, fps=10)
    for i in range(7):
        sink.send(make_result(i))
    sink.close()
    assert frame_count(path) == 7


def test_video_segments_hold_segment_s_of_video_each_and_a_closed_one_is_whole_while_the_next_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.mp4"
    (tmp_path / "out-notes.mp4").write_bytes(b"not ours")
    sink = VideoSink(path, fps=10, segment_s=1.0)
    for i in range(15):
        sink.send(make_result(i))
    # the process could die now: the first second is a finished file already
    # named by their first frame's capture time, 1700000000.5 + index, in UTC
    made = [tmp_path / f"out-20231114T2213{s}.500Z.mp4" for s in ("20", "30", "40")]
    first = made[0]
    assert sorted(tmp_path.glob("out-2*.mp4")) == made[:2]
    assert frame_count(first) == 10
    for i in range(15, 25):
        sink.send(make_result(i))
    sink.close()
    assert sorted(tmp_path.glob("out-2*.mp4")) == made
    assert [frame_count(f) for f in made] == [10, 10, 5]
    assert not path.exists()
    assert sink.report().lost == 0
    assert sink.report().lines[0].startswith(f"video: 25 frames written to 3 files {tmp_path}/out-*.mp4")


def test_video_segments_beyond_keep_go_oldest_first_earlier_runs_included_and_nothing_else(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.mp4"
    others = [tmp_path / "out-notes.mp4", tmp_path / "out.mp4", tmp_path / "other-20231114T221320.500Z.mp4"]
    for other in others:
        other.write_bytes(b"not ours")
    made = [tmp_path / f"out-20231114T2213{s}.500Z.mp4" for s in ("20", "25", "30")]  # frames 0, 5, 10
    later = tmp_path / "out-20231114T221500.500Z.mp4"  # frame 100
    first = VideoSink(path, fps=10, segment_s=0.5, keep=2)
    for i in range(12):  # 3 files of 5, 5 and 2 frames
        first.send(make_result(i))
    first.close()
    assert first.removed == 1
    assert first.opened == 3
    assert [f.exists() for f in made] == [False, True, True]
    second = VideoSink(path, fps=10, segment_s=0.5, keep=2)  # a restart, later frames
    for i in range(100, 103):
        second.send(make_result(i))
    second.close()
    assert [f.exists() for f in made] == [False, False, True]
    assert later.exists()
    assert "1 old ones deleted (keep 2)" in second.report().lines[0]
    assert all(other.read_bytes() == b"not ours" for other in others)


def test_video_segments_written_after_the_clock_was_set_back_are_the_ones_keep_keeps(tmp_path: Path) -> None:
    """A clock that ran ahead and is stepped back (NTP, a fake-hwclock date from the future) names the
    newer segments earlier: deleted oldest name first, each new segment went at the next one's start and
    every one at the close, leaving only the two from before the step."""
    path = tmp_path / "out.mp4"
    sink = VideoSink(path, fps=10, segment_s=0.5, keep=2)
    for i in range(25):  # 5 files of 5 frames, the last three after the clock went back a day
        result = make_result(i)
        if i >= 10:
            result = replace(result, frame=replace(result.frame, wall_time=result.frame.wall_time - 86400))
        sink.send(result)
    sink.close()
    newest = [tmp_path / f"out-20231113T2213{s}.500Z.mp4" for s in ("35", "40")]  # frames 15 and 20
    assert sorted(tmp_path.glob("out-2*.mp4")) == newest
    assert [frame_count(f) for f in newest] == [5, 5]
    assert sink.removed == 3


def test_an_old_segment_that_cannot_be_deleted_is_reported_and_recording_goes_on(tmp_path: Path) -> None:
    stuck = tmp_path / "out-20200101T000000.000Z.mp4"  # the oldest by name, and a folder: unlink fails
    stuck.mkdir()
    sink = VideoSink(tmp_path / "out.mp4", fps=10, segment_s=0.5, keep=1)
    for i in range(12):
        sink.send(make_result(i))
    sink.close()
    assert stuck.is_dir()
    assert sink.report().lost == 0
    assert sink.prune_failures == 4  # tried at each of the 3 opens and at the close
    assert "could not be deleted for keep=1" in sink.report().lines[1]
    assert sink.frames_in_files == 12


def test_video_keep_needs_segments_and_segment_s_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"sinks\.video\.keep: needs segment_s"):
        load_config(None, ["sinks.video.path=x.mp4", "sinks.video.keep=3"])
    with pytest.raises(ConfigError, match=r"sinks\.video\.segment_s: must be > 0 \(got 0\)"):
        load_config(None, ["sinks.video.path=x.mp4", "sinks.video.segment_s=0"])


@pytest.mark.parametrize("name", ["jsonl", "video"])
def test_output_in_a_missing_folder_fails_at_build_time_naming_the_key(tmp_path: Path, name: str) -> None:
    from edgeseg.sinks.jsonl import JsonlSinkConfig
    from edgeseg.sinks.video import VideoSinkConfig

    section = (JsonlSinkConfig if name == "jsonl" else VideoSinkConfig)(path=tmp_path / "nope" / "x.out")
    with pytest.raises(ConfigError, match=rf"^sinks\.{name}\.path: folder .* does not exist"):
        SINKS[name].create(section, SinkContext())


def test_output_under_a_file_says_that_is_no_folder_not_that_it_does_not_exist(tmp_path: Path) -> None:
    # --output results.jsonl/x.mp4 with results.jsonl a file: "folder results.jsonl does not exist"
    from edgeseg.sinks.jsonl import JsonlSinkConfig

    (tmp_path / "results.jsonl").write_text("{}\n")
    section = JsonlSinkConfig(path=tmp_path / "results.jsonl" / "x.jsonl")
    with pytest.raises(ConfigError, match=r"^sinks\.jsonl\.path: .*results\.jsonl is not a folder"):
        SINKS["jsonl"].create(section, SinkContext())


def test_sinks_whose_section_leaves_them_off_are_not_built() -> None:
    from edgeseg.config import SinksConfig
    from edgeseg.sinks import build_sinks

    assert build_sinks(SinksConfig(), SinkContext()) == {}
