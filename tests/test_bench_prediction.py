"""``edgeseg bench``'s prediction of the threaded pipeline's rate (issue 18, target 4). How close it comes to
``edgeseg run`` is measured by scripts/bench_prediction.py, not asserted here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg import cli
from edgeseg.bench import bench_outputs, rate_bounds
from edgeseg.config import load_config
from edgeseg.sinks.display import DisplaySinkConfig
from edgeseg.sinks.jsonl import JsonlSinkConfig
from edgeseg.sinks.mqtt import MqttSinkConfig
from edgeseg.sinks.video import VideoSinkConfig

#                    read  preprocess infer decode annotate serialize
WALL = np.array([20.0, 2.0, 100.0, 40.0, 5.0, 3.0])
CPU = np.array(
    [20.0, 2.0, 150.0, 40.0, 5.0, 3.0]
)  # infer: onnxruntime's intra-op threads, more CPU than wall


def test_the_prediction_is_bounded_by_the_cores_when_the_stages_together_need_more_cpu_than_there_is() -> (
    None
):
    bounds = rate_bounds(WALL, CPU, cores=2, live=False, pace_fps=None)
    # the slowest stage alone would allow 10 fps; 2 cores give 2000 ms CPU/s over 220 ms CPU per frame
    assert min(bounds.values()) == pytest.approx(2000 / 220)
    assert min(bounds, key=bounds.__getitem__).startswith("2 cores")


def test_with_cores_to_spare_the_slowest_stage_bounds_the_prediction() -> None:
    bounds = rate_bounds(WALL, CPU, cores=8, live=False, pace_fps=None)
    assert min(bounds.values()) == pytest.approx(10.0)
    assert min(bounds, key=bounds.__getitem__).startswith("slowest stage infer")


def test_a_paced_source_caps_the_prediction_at_its_pace() -> None:
    bounds = rate_bounds(WALL, CPU, cores=8, live=True, pace_fps=5.0)
    assert min(bounds.values()) == 5.0


def test_a_live_source_spends_cpu_on_frames_the_pipeline_drops() -> None:
    # reads at its 30 fps pace whatever the stages take: 30 x 20 ms = 600 ms CPU/s is not the stages'
    bounds = rate_bounds(WALL, CPU, cores=2, live=True, pace_fps=30.0)
    assert min(bounds.values()) == pytest.approx((2000 - 600) / 200)


# the bench's threaded run measures the pipeline's rate for 8 s; these tests look at what it prints, not at
# how close the rate is (scripts/bench_prediction.py is for that): 1.5 s
THREADED_S = 1.5


def test_bench_prints_the_model_and_the_predicted_pipeline_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edgeseg.bench.THREADED_S", THREADED_S)
    plot = tmp_path / "bench.png"
    assert cli.main(["bench", "--frames", "5", "--warmup", "1", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    model = next(line for line in out.splitlines() if line.startswith("model: "))
    assert "cores: " in model
    assert "ms CPU per frame" in model
    predicted = next(line for line in out.splitlines() if line.startswith("predicted pipeline rate: "))
    assert float(predicted.split()[3]) > 0
    assert plot.is_file()


def test_the_bench_writes_the_configured_files_elsewhere_and_names_the_outputs_it_leaves_out(
    tmp_path: Path,
) -> None:
    config = load_config(
        None,
        [
            f"sinks.jsonl.path={tmp_path / 'out.jsonl'}",
            f"sinks.video.path={tmp_path / 'out.mp4'}",
            "sinks.mqtt.url=mqtt://127.0.0.1:1",
            "sinks.display.enabled=true",
        ],
    )
    folder = tmp_path / "bench"
    sinks, left_out = bench_outputs(config.sinks, folder)
    assert sinks.section(JsonlSinkConfig).path == folder / "jsonl-out.jsonl"
    assert sinks.section(VideoSinkConfig).path == folder / "video-out.mp4"
    assert sinks.section(MqttSinkConfig).url is None
    assert not sinks.section(DisplaySinkConfig).enabled
    assert left_out == ("display", "mqtt")
    # nothing configured: nothing written, nothing left out
    none, nothing = bench_outputs(load_config(None, []).sinks, folder)
    assert none.section(JsonlSinkConfig).path is None
    assert nothing == ()


def test_bench_counts_the_json_lines_it_would_write_and_says_what_it_leaves_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("edgeseg.bench.THREADED_S", THREADED_S)
    plot = tmp_path / "bench.png"
    args = ["bench", "--frames", "3", "--warmup", "1", "--plot", str(plot)]
    args += ["--set", "sinks.jsonl.path=out.jsonl", "--set", "sinks.mqtt.url=mqtt://127.0.0.1:1"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    predicted = next(line for line in out.splitlines() if line.startswith("predicted pipeline rate: "))
    assert "writing its jsonl output to a temporary folder" in predicted
    assert "not in that rate: the mqtt output" in out
    assert not (tmp_path / "out.jsonl").exists()  # the run's file is not the bench's


def test_bench_prediction_runs_the_edgeseg_of_its_interpreter_in_a_checkout_without_a_venv(
    tmp_path: Path,
) -> None:
    # the script in a checkout with no .venv beside it (another venv's python runs it, PYTHONPATH its tree)
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "scripts").mkdir()
    script = shutil.copy(repo / "scripts" / "bench_prediction.py", tmp_path / "scripts")
    done = subprocess.run(
        [sys.executable, script, "--rounds", "1", "--frames", "3", "--warmup", "1", "--max-frames", "10"],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert len(figures["predicted_fps"]) == len(figures["measured_fps"]) == 1
