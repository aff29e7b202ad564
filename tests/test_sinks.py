"""Sinks: JSON lines round-trip the instances, video files are finalized, bad paths fail at build time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeseg.errors import ConfigError
from edgeseg.frame import Frame, Result, StageTimes
from edgeseg.instances import Instances
from edgeseg.sinks import SINKS, SinkContext, result_record
from edgeseg.sinks.jsonl import JsonlSink
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


def test_record_of_a_result_with_missing_stamps_is_valid_json() -> None:
    r = make_result(0)
    bare = Result(r.frame, r.instances, StageTimes())
    text = json.dumps(result_record(bare, 0), allow_nan=False)
    assert json.loads(text)["timings_ms"]["latency"] is None


def test_video_sink_writes_every_frame_and_finalizes_the_file_on_close(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    sink = VideoSink(path, fps=10)
    for i in range(7):
        sink.send(make_result(i))
    sink.close()
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 7


@pytest.mark.parametrize("name", ["jsonl", "video"])
def test_output_in_a_missing_folder_fails_at_build_time_naming_the_key(tmp_path: Path, name: str) -> None:
    from edgeseg.sinks.jsonl import JsonlSinkConfig
    from edgeseg.sinks.video import VideoSinkConfig

    section = (JsonlSinkConfig if name == "jsonl" else VideoSinkConfig)(path=tmp_path / "nope" / "x.out")
    with pytest.raises(ConfigError, match=rf"^sinks\.{name}\.path: folder .* does not exist"):
        SINKS[name].create(section, SinkContext())


def test_sinks_whose_section_leaves_them_off_are_not_built() -> None:
    from edgeseg.config import SinksConfig
    from edgeseg.sinks import build_sinks

    assert build_sinks(SinksConfig(), SinkContext()) == {}
