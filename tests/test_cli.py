"""The ``edgeseg`` command as a user runs it: a subprocess, real files, real signals."""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from test_sources import bilevel_png, screen_gif
from videofile import frame_count

from edgeseg.cliconfig import add_pipeline_args, bundled_pipelines, load_cli_config

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return env


def edgeseg(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeseg", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def yolo(assets_dir: Path) -> Path:
    return assets_dir / "models" / "yolov8n-seg_int8_320.onnx"


def test_help_lists_every_command_and_run_option(tmp_path: Path) -> None:
    top = edgeseg("--help", cwd=tmp_path)
    assert top.returncode == 0
    for command in ("run", "bench", "eval", "doctor"):
        assert command in top.stdout
    run = edgeseg("run", "--help", cwd=tmp_path)
    for flag in (
        "--source",
        "--model",
        "--roi",
        "--display",
        "--no-display",
        "--output",
        "--max-frames",
        "--set",
    ):
        assert flag in run.stdout


def test_run_on_the_real_video_writes_an_annotated_video_with_every_frame(
    tmp_path: Path, assets_dir: Path, yolo: Path
) -> None:
    video = assets_dir / "video" / "pedestrians_crossing_640x360.mp4"
    out = tmp_path / "out.mp4"
    done = edgeseg(
        "run", "--source", str(video), "--model", str(yolo), "--output", str(out), cwd=tmp_path, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert frame_count(out) == frame_count(video) == 188
    assert "188 frames processed of 188 read" in done.stdout
    assert "dropped" not in done.stdout
    assert f"video: 188 frames written to {out} at 23.976 fps" in done.stdout  # the clip's own rate


def test_sigterm_stops_a_live_run_cleanly_and_finalizes_the_video(tmp_path: Path, yolo: Path) -> None:
    out = tmp_path / "live.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeseg", "run", "--source", "synthetic:parts?width=320&height=240",
         "--model",
         str(yolo), "--output", str(out), "--set", "pipeline.stats_interval_s=0.2"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        for line in proc.stderr:  # the periodic stats line shows frames are flowing
            if " fps " in line and not line.startswith("0 frames"):
                break
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=2.0)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert stdout.startswith("stopped (SIGTERM):")
    assert frame_count(out) > 0  # the container was finalized: a truncated mp4 does not open


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "nosuch:thing"], "unknown source URI 'nosuch:thing'"),
        (["--source", "missing.mp4"], "missing.mp4"),
        (["--set", "pipeline.queue_size=0"], "pipeline.queue_size"),
        (["--set", "sinks.nosuch.path=x"], "sinks.nosuch"),
        (["--roi", "0.1,0.2"], "--roi"),
        (["--output", "results.txt"], "--output"),
        (["--max-frames", "0"], "--max-frames"),
    ],
)
def test_bad_input_gives_one_clear_line_and_exit_code_2(
    tmp_path: Path, yolo: Path, args: list[str], message: str
) -> None:
    done = edgeseg("run", "--model", str(yolo), *args, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("edgeseg: error: ")
    assert message in lines[0]


def test_unreadable_video_file_gives_one_clear_line(tmp_path: Path, yolo: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    done = edgeseg("run", "--source", str(bad), "--model", str(yolo), cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("edgeseg: error: ")
    assert "broken.mp4" in lines[0]


def test_explicit_display_without_a_display_is_an_error_not_an_abort(tmp_path: Path, yolo: Path) -> None:
    done = edgeseg(
        "run",
        "--source",
        "synthetic:parts",
        "--model",
        str(yolo),
        "--display",
        "--max-frames",
        "3",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "edgeseg: error: sinks.display: no display: DISPLAY and WAYLAND_DISPLAY are unset "
        "(run with --no-display)"
    ]


def test_frames_discarded_at_a_stop_are_not_explained_as_a_live_sources_drops() -> None:
    """A video file stopped by SIGTERM said "discarded at stop: 4 (not lost: a live source keeps the newest
    frame)": a file is no live source, and those frames were read ahead when the stop came."""
    from edgeseg.cli import summary
    from edgeseg.sources import SourceStats
    from edgeseg.stats import PipelineStats

    stopped = PipelineStats(frames_read=290, frames_done=286, discarded=4)
    lines = summary(stopped, SourceStats(frames=290), [], "stopped (SIGTERM)", {})
    assert "discarded at stop: 4 (not lost: read ahead when the run was stopped)" in lines
    busy = PipelineStats(frames_read=100, frames_done=93, drops={"infer": 5}, discarded=2)
    lines = summary(busy, SourceStats(frames=100), [], "stopped (SIGTERM)", {})
    assert (
        "dropped while a stage was busy: 5 (infer 5) (not lost: a live source keeps the newest frame); "
        "discarded at stop: 2 (not lost: read ahead when the run was stopped)"
    ) in lines


def test_the_progress_line_of_a_slow_stream_shows_its_rate_between_frames_and_a_pause_as_no_result() -> None:
    """A stream of a frame every 10 s (a time-lapse camera) was said to have "no result for 7 s" 5 s after
    each of its frames; the pause rule of the FPS sensor (no result for over 5 s and 4 of its gaps) is the
    progress line's too."""
    from edgeseg.cli import status_text
    from edgeseg.sources import SourceStats
    from edgeseg.stats import PipelineStats

    source = SourceStats(frames=12, state="running")
    between = status_text(PipelineStats(frames_read=12, frames_done=12, fps=0.1, idle_s=7.0), source, None)
    assert between == "12 frames  0.1 fps"
    gone = status_text(PipelineStats(frames_read=12, frames_done=12, fps=0.1, idle_s=41.0), source, None)
    assert gone == "12 frames  no result for 41 s"
    fast_gone = status_text(PipelineStats(frames_read=99, frames_done=99, fps=25.0, idle_s=6.0), source, None)
    assert fast_gone == "99 frames  no result for 6 s"


def test_the_summary_says_what_a_post_processing_budget_left_out_over_the_run(tmp_path: Path) -> None:
    run = ("run", "--source", "synthetic:parts", "--max-frames", "12")
    capped = edgeseg(*run, "--set", "postprocess.semantic.max_instances=2", cwd=tmp_path)
    assert capped.returncode == 0, capped.stderr
    said = [line for line in capped.stdout.splitlines() if line.startswith("over the run, ")]
    assert len(said) == 1, capped.stdout
    dropped, maps = (
        int(n)
        for n in re.findall(r"and (\d+) instances beyond max_instances dropped, in (\d+) maps", said[0])[0]
    )
    assert dropped > 0
    assert 1 <= maps <= 12
    plain = edgeseg(*run, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "over the run" not in plain.stdout + plain.stderr


@pytest.mark.parametrize("where", ["video", "image folder", "video output", "bench plot"])
def test_a_file_name_that_is_not_utf8_is_a_one_line_error_not_a_crash(
    tmp_path: Path, assets_dir: Path, where: str
) -> None:
    # a Latin-1 name (an SD card written elsewhere): Python holds it with surrogate escapes, and OpenCV's
    # bindings died of SIGSEGV on such a str in VideoCapture, imread, VideoWriter and imwrite: status 139, no
    # line, no summary, the outputs unfinished (bench: after its minutes of timing)
    name = b"caf\xe9"
    video = assets_dir / "video" / "pedestrians_crossing_640x360.mp4"
    images = tmp_path / "frames"
    images.mkdir()
    cv2.imwrite(str(images / "a.jpg"), np.zeros((48, 64, 3), np.uint8))
    args: list[str | bytes] = ["run", "--max-frames", "2"]
    if where == "video":
        (tmp_path / os.fsdecode(name + b".mp4")).write_bytes(video.read_bytes())
        args += ["--source", name + b".mp4"]
    elif where == "image folder":
        (images / os.fsdecode(name + b".jpg")).write_bytes((images / "a.jpg").read_bytes())
        args += ["--source", "frames"]
    elif where == "video output":
        args += ["--output", name + b".mp4"]
    else:
        args = ["bench", "--plot", name + b".png"]
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", *args],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("edgeseg: error: ")
    assert "caf\\xe9." in lines[0]
    assert lines[0].endswith("is not valid UTF-8, which OpenCV cannot open (rename it)")


def test_an_output_name_that_is_not_utf8_is_summarized_escaped_under_a_strict_utf8_stdout(
    tmp_path: Path,
) -> None:
    # PYTHONIOENCODING=utf-8 gives stdout the strict errors of a en_US.UTF-8 locale: the summary line naming
    # the JSON lines file raised UnicodeEncodeError once the run was done (a traceback, exit status 1)
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "run", "--max-frames", "2", "--output", b"caf\xe9.jsonl"],
        cwd=tmp_path, env={**_env(), "PYTHONIOENCODING": "utf-8"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "written to caf\\udce9.jsonl" in done.stdout
    assert (tmp_path / os.fsdecode(b"caf\xe9.jsonl")).stat().st_size > 0


def test_an_output_name_the_locale_cannot_encode_is_a_one_line_error(tmp_path: Path) -> None:
    # an ASCII locale without Python's UTF-8 mode (as a latin-1 one for a Cyrillic name): the pipeline file's
    # 'öut.jsonl' raised UnicodeEncodeError out of the output check, a traceback with exit status 1
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        f"model: {{path: {REPO / 'models' / 'demo-parts.onnx'}}}\nsinks: {{jsonl: {{path: öut.jsonl}}}}\n",
        encoding="utf-8",
    )
    env = {**_env(), "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "run", "p.yaml", "--max-frames", "1"],
        cwd=tmp_path, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "edgeseg: error: sinks.jsonl.path: cannot create \\xf6ut.jsonl: the name cannot be written in this "
        "locale's ascii file names (set LANG=C.UTF-8)\n"
    )


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_a_run_started_with_stdout_or_stderr_closed_finishes_its_outputs(tmp_path: Path, closed: str) -> None:
    # Python leaves sys.stdout/sys.stderr None for a closed descriptor: the start-up line (stderr) or the
    # summary (stdout) raised AttributeError; with stderr closed mid-run, with the stages going: SIGABRT.
    # A folder of images, read in order: the demo's live scene drops frames on a loaded machine
    fd = {"stdout": 1, "stderr": 2}[closed]
    (tmp_path / "frames").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "frames" / f"{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    done = subprocess.run(
        ["sh", "-c", f'exec "$@" {fd}>&-', "sh", sys.executable, "-m", "edgeseg", "run", "--max-frames", "3",
         "--source", "frames", "--output", "out.jsonl"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records if not r.get("final")] == [0, 1, 2]
    if closed == "stderr":
        assert "jsonl: 3 results written to out.jsonl" in done.stdout
    else:
        assert done.stderr.startswith("edgeseg: running pipelines/demo.yaml")


def test_doctor_reports_backends_cameras_and_displays(tmp_path: Path) -> None:
    done = edgeseg("doctor", cwd=tmp_path)
    assert done.returncode == 0
    assert "its telemetry off" in done.stdout
    for topic in ("onnxruntime", "tensorrt", "v4l2", "window (--display)", "pycocotools"):
        assert topic in done.stdout


@pytest.mark.parametrize(("given", "what"), [("clip.mp4", "a video or an image"), ("frames", "a folder")])
def test_a_video_or_a_folder_given_as_the_pipeline_is_one_line_pointing_to_source(
    tmp_path: Path, assets_dir: Path, given: str, what: str
) -> None:
    # `edgeseg run clip.mp4` read the video whole, then said "not UTF-8 text ...; save it as UTF-8"
    shutil.copy(assets_dir / "video" / "pedestrians_crossing_640x360.mp4", tmp_path / "clip.mp4")
    (tmp_path / "frames").mkdir()
    done = edgeseg("run", given, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        f"edgeseg: error: pipeline '{given}': {what}, not a pipeline file (give it with --source {given})\n",
    )


def test_a_folder_named_as_a_bundled_pipeline_is_refused_naming_the_bundled_ones_path(tmp_path: Path) -> None:
    # `edgeseg run demo` in a folder holding a demo/ folder said only "a folder ... --source demo"
    (tmp_path / "demo").mkdir()
    done = edgeseg("run", "demo", cwd=tmp_path)
    bundled = bundled_pipelines()["demo"]
    assert (done.returncode, done.stderr) == (
        2,
        "edgeseg: error: pipeline 'demo': a folder, not a pipeline file (give it with --source demo; the "
        f"bundled pipeline demo is {bundled})\n",
    )


def test_a_bundled_pipelines_path_outside_a_checkout_is_refused_naming_how_to_run_it(tmp_path: Path) -> None:
    # `edgeseg run pipelines/usb-camera.yaml` as README wrote it, from an installed edgeseg: "cannot read
    # pipeline file (No such file or directory)" and nothing of the bundled pipeline of that name
    done = edgeseg("run", "pipelines/usb-camera.yaml", cwd=tmp_path)
    bundled = bundled_pipelines()["usb-camera"]
    assert (done.returncode, done.stderr) == (
        2,
        "edgeseg: error: pipeline 'pipelines/usb-camera.yaml': no such file; the bundled one of that name "
        f"runs with 'edgeseg run usb-camera' ({bundled})\n",
    )


@pytest.mark.parametrize("flag", ["--source", "--model", "--roi", "--web", "--mqtt", "--state-dir"])
def test_a_flag_given_an_empty_value_is_refused_in_one_line_not_dropped(tmp_path: Path, flag: str) -> None:
    # `--mqtt "$BROKER"` with the variable unset ran the pipeline without MQTT, `--source "$CAMERA"` on the
    # pipeline's own source, without a word
    done = edgeseg("run", "--max-frames", "1", flag, "", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        f"edgeseg: error: {flag}: empty value (leave the flag out, or give one)\n",
    )


def test_a_pipeline_after_web_is_told_to_go_before_it_not_shown_the_address_pattern(tmp_path: Path) -> None:
    # `edgeseg run --web demo`: --web's optional address took the pipeline, and the error was the address's
    # regular expression, "must match ^(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$ (got 'demo')"
    done = edgeseg("run", "--web", "demo", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "edgeseg: error: --web: 'demo' is not HOST:PORT; give the pipeline before --web (edgeseg run demo "
        "--web), or an address after it (--web 127.0.0.1:8080)\n",
    )
    done = edgeseg("run", "demo", "--web", "8080", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "edgeseg: error: --web: '8080' is not HOST:PORT (e.g. --web 127.0.0.1:8080)\n",
    )


def test_a_pipeline_name_longer_than_a_file_name_can_be_is_one_line(tmp_path: Path) -> None:
    # "OSError: [Errno 36] File name too long" from Path.is_dir, a traceback
    done = edgeseg("run", "a" * 300, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert re.fullmatch(
        r"edgeseg: error: pipeline 'a{300}': no such file, and no bundled pipeline .*\n", done.stderr
    )


@pytest.mark.parametrize(
    ("flag", "name", "says"),
    [
        ("--model", "m" * 300 + ".onnx", r"model path m{300}\.onnx: File name too long"),
        (
            "--output",
            "o" * 300 + ".jsonl",
            r"sinks\.jsonl\.path: cannot create o{300}\.jsonl: File name too long",
        ),
        (
            "--output",
            "v" * 300 + ".mp4",
            r"sinks\.video\.path: cannot create v{300}\.mp4: File name too long",
        ),
    ],
    ids=["model", "jsonl", "video"],
)
def test_a_model_or_output_name_longer_than_a_file_name_can_be_is_one_line(
    tmp_path: Path, assets_dir: Path, flag: str, name: str, says: str
) -> None:
    # "OSError: [Errno 36] File name too long" from Path.is_dir (find_card, check_output_path), a traceback
    image = str(assets_dir / "images" / "bus.jpg")
    done = edgeseg("run", "--source", image, "--max-frames", "1", flag, name, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert re.fullmatch(f"edgeseg: error: {says}\n", done.stderr), done.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".mp4"])
def test_an_output_name_as_long_as_a_file_name_can_be_is_written(
    tmp_path: Path, assets_dir: Path, suffix: str
) -> None:
    # 255 bytes, which the file system takes: refused ('File name too long') for the write check's scratch
    # file beside it, whose name added '.' and '.edgeseg-probe-PID' to it
    name = "o" * (255 - len(suffix)) + suffix
    image = str(assets_dir / "images" / "bus.jpg")
    done = edgeseg("run", "--source", image, "--max-frames", "1", "--output", name, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / name).stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no scratch file left


def test_a_pipeline_file_too_large_to_be_one_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    # /dev/zero, or a log named .yaml: read into memory whole (without an end) before anything was said
    with open(tmp_path / "huge.yaml", "wb") as f:
        f.truncate(300 << 20)  # sparse: nothing written
    done = edgeseg("run", "huge.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "edgeseg: error: huge.yaml: too large for a pipeline file (more than 1 MB)\n",
    )


@pytest.mark.parametrize("env", [{"EDGESEG__SOURCE": "{fps: 10}"}, {"EDGESEG__source__fps": "10"}])
def test_a_camera_setting_from_the_environment_carries_over_to_the_source_flag_as_one_from_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    # the loader takes both variables; --source took neither for the user's, and cleared the fps silently
    parser = argparse.ArgumentParser()
    add_pipeline_args(parser)
    args = parser.parse_args(
        ["usb-camera", "--source", "clip.mp4", "--set", f"pipeline.state_dir={tmp_path}"]
    )
    assert load_cli_config(args).source.fps is None  # the pipeline file's 30 does not pace the file
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_cli_config(args).source.fps == 10


def test_doctor_checks_a_bundled_pipeline_named_as_run_takes_it(tmp_path: Path) -> None:
    # 'edgeseg pipelines' says 'edgeseg run NAME' runs one; doctor took NAME for a file in the working
    # directory: "edgeseg: error: demo: cannot read pipeline file (No such file or directory)"
    done = edgeseg("doctor", "demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pipeline demo" in done.stdout


def test_doctor_reports_an_unreadable_mqtt_credential_as_the_brokers_check_beside_the_rest(
    tmp_path: Path,
) -> None:
    # load_credentials' ConfigError ended doctor with that one line: no backend, camera or model line shown
    model = Path(__file__).resolve().parents[1] / "models" / "demo-parts.onnx"
    mqtt = f"{{url: 'mqtt://127.0.0.1:1', username_file: {tmp_path / 'none'}}}"
    (tmp_path / "p.yaml").write_text(f"model: {{path: {model}}}\nsinks: {{mqtt: {mqtt}}}\n")
    done = edgeseg("doctor", "p.yaml", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""
    assert "onnxruntime" in done.stdout
    assert re.search(r"^ok +pipeline p +model ", done.stdout, re.M)
    assert re.search(
        r"^-- +pipeline p +mqtt broker +sinks\.mqtt\.username_file: cannot read .*none: No such file",
        done.stdout,
        re.M,
    )


def _doctor_with_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]
) -> list[str]:
    """The lines of ``edgeseg doctor`` (which must succeed) run with fake packages ahead of the installed
    ones: ``files``, paths in site-packages and their text, written under ``tmp_path``/site."""
    site = tmp_path / "site"
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    monkeypatch.setenv("PYTHONPATH", str(site))
    done = edgeseg("doctor", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_doctor_reports_a_picamera2_that_cannot_import_as_unusable_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # apt's picamera2 in a venv where pip put numpy 2: its simplejpeg (built for numpy 1.x) raises this at
    # import (raspberrypi/picamera2#1211); the package is there, so finding it is not enough
    lines = _doctor_with_packages(
        tmp_path,
        monkeypatch,
        {
            "picamera2/__init__.py": "raise ValueError('numpy.dtype size changed, may indicate binary "
            "incompatibility. Expected 96 from C header, got 88 from PyObject')\n"
        },
    )
    line = next(x for x in lines if "imx500 (picamera2)" in x)
    assert "installed" not in line
    assert "numpy.dtype size changed" in line


def test_doctor_reports_jetpack_5s_tensorrt_8_as_unusable_naming_tensorrt_10(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _doctor_with_packages(
        tmp_path,
        monkeypatch,
        {
            "tensorrt/__init__.py": "__version__ = '8.5.2.2'\n",  # JetPack 5.1's
            "pycuda/__init__.py": "",
            "pycuda/driver.py": "",
        },
    )
    line = next(x for x in lines if "backend  tensorrt" in x)
    assert "installed" not in line
    assert "needs TensorRT 10" in line
    assert "this is TensorRT 8.5.2.2" in line


def test_doctor_on_a_jetson_without_pycuda_advises_pip_install_pycuda_not_the_tensorrt_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # JetPack's tensorrt comes from apt (python3-libnvinfer) without pip metadata: 'pip install
    # edgeseg[tensorrt]' then fetches PyPI's tensorrt, whose tensorrt-cu12 fails to build on a Jetson
    # (ultralytics/ultralytics#22271); what is missing there is pycuda alone
    lines = _doctor_with_packages(
        tmp_path,
        monkeypatch,
        {"tensorrt/__init__.py": "__version__ = '10.3.0'\n"},  # JetPack 6.1's
    )
    at = next(i for i, x in enumerate(lines) if "backend  tensorrt" in x)
    assert "pycuda missing" in lines[at]
    fix = lines[at + 1]
    assert "on a Jetson, JetPack's TensorRT" in fix
    assert "and pip install pycuda; elsewhere, pip install edgeseg[tensorrt]" in fix


@pytest.mark.parametrize(
    ("pipeline", "failing"),
    [
        ("model: {path: " + "m" * 300 + ".onnx}\n", "model"),
        ("model: {path: demo}\nsource: {uri: 'v4l2:/dev/" + "v" * 300 + "'}\n", "camera"),
    ],
    ids=["model", "camera"],
)
def test_doctor_on_a_pipeline_naming_a_file_longer_than_a_file_name_can_be_reports_it_missing(
    tmp_path: Path, pipeline: str, failing: str
) -> None:
    # "OSError: [Errno 36] File name too long" from Path.exists in pipeline_checks, a traceback
    (tmp_path / "p.yaml").write_text(pipeline.replace("demo", str(REPO / "models" / "demo-parts.onnx")))
    done = edgeseg("doctor", "p.yaml", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert re.search(rf"^-- +pipeline p +{failing} ", done.stdout, re.MULTILINE), done.stdout


def test_doctor_on_a_pipeline_whose_v4l2_device_is_no_dev_path_says_what_run_says(tmp_path: Path) -> None:
    # 'v4l2:video0' (no /dev/): "ValueError: 'video0' is not in the subpath of '/dev'", a traceback
    model = REPO / "models" / "demo-parts.onnx"
    (tmp_path / "p.yaml").write_text(f"model: {{path: {model}}}\nsource: {{uri: 'v4l2:video0'}}\n")
    done = edgeseg("doctor", "p.yaml", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert re.search(
        r"^-- +pipeline p +camera +source URI 'v4l2:video0': v4l2 needs a device number or path",
        done.stdout,
        re.MULTILINE,
    ), done.stdout


def test_a_state_dir_longer_than_a_file_name_can_be_is_no_traceback(tmp_path: Path, assets_dir: Path) -> None:
    # "OSError: [Errno 36] File name too long" from Path.is_file looking for the saved tuning: a run that
    # writes nothing there (no MQTT spool, no engine) runs; one that does says so in one line
    image = str(assets_dir / "images" / "bus.jpg")
    state = str(tmp_path / ("s" * 300))
    done = edgeseg("run", "--source", image, "--max-frames", "1", "--state-dir", state, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_a_saved_tuning_value_an_upgrade_made_invalid_is_left_out_with_a_warning_and_the_rest_runs(
    tmp_path: Path,
) -> None:
    """A saved value the configuration no longer takes (a key renamed, a range narrowed) stopped every start
    with exit 2, which the unit does not restart: the device stayed down until someone deleted the file."""
    (tmp_path / "state").mkdir()
    tuning = tmp_path / "state" / "tuning-demo.yaml"
    text = (
        "postprocess.semantic.min_score: 0.4\n"
        "postprocess.semantic.dist_threshold: 7\n"  # (0, 1]
        "postprocess.semantic.min_scor: 0.5\n"  # a key renamed
    )
    tuning.write_text(text)
    done = edgeseg("run", "--state-dir", "state", "--max-frames", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "left out, the rest of the saved tuning" in line]
    assert len(warnings) == 2, done.stderr
    assert f"{tuning.relative_to(tmp_path)}: postprocess.semantic.min_scor: not a key" in warnings[0]
    assert warnings[1].startswith(
        "edgeseg: WARNING: postprocess.semantic.dist_threshold: must be in (0, 1] (got 7)"
    )
    assert (
        f"applying saved tuning from {tuning.relative_to(tmp_path)}: postprocess.semantic.min_score=0.4; "
        "left out (the file keeps them; see the warnings): postprocess.semantic.min_scor, "
        "postprocess.semantic.dist_threshold"
    ) in done.stdout + done.stderr
    assert tuning.read_text() == text


def _stdout_env(buffered: bool) -> dict[str, str]:
    """The tests' environment, with stdout block-buffered as in a user's shell or unbuffered as under
    PYTHONUNBUFFERED (a container's, a unit's): a write then fails at the line, not at the exit's flush."""
    env = _env()
    env.pop("PYTHONUNBUFFERED", None)
    return env if buffered else {**env, "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("buffered", [True, False])
def test_a_reader_that_closes_the_pipe_ends_a_listing_quietly_with_exit_0(
    tmp_path: Path, buffered: bool
) -> None:
    # `edgeseg pipelines | head -1`: the reader is gone before the listing is written
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeseg", "pipelines"], cwd=tmp_path, env=_stdout_env(buffered), stdout=write,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(write)
    os.close(read)
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0, "")


@pytest.mark.parametrize("buffered", [True, False])
@pytest.mark.parametrize("command", [["pipelines"], ["doctor"]])
def test_a_listing_to_a_full_disk_is_one_line_and_exit_2(
    tmp_path: Path, command: list[str], buffered: bool
) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "edgeseg", *command], cwd=tmp_path, env=_stdout_env(buffered), stdout=full,
            stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert (done.returncode, done.stderr) == (
        2,
        "edgeseg: error: cannot write to stdout: No space left on device\n",
    )


def test_eval_to_a_full_disk_is_one_line_and_exit_2(tmp_path: Path, assets_dir: Path, yolo: Path) -> None:
    annotations = assets_dir / "datasets" / "voc2011_labelme_instances" / "annotations_coco.json"
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "edgeseg", "eval", str(annotations), "--model", str(yolo)], cwd=tmp_path,
            env=_stdout_env(True), stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert (done.returncode, done.stderr) == (
        2,
        "edgeseg: error: cannot write to stdout: No space left on device\n",
    )


@pytest.mark.parametrize("buffered", [True, False])
def test_a_run_whose_summary_meets_a_full_disk_says_so_and_keeps_its_outputs_and_status(
    tmp_path: Path, buffered: bool
) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "edgeseg", "run", "--max-frames", "3", "--output", "out.jsonl"],
            cwd=tmp_path, env=_stdout_env(buffered), stdout=full, stderr=subprocess.PIPE, text=True,
            timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    said = "edgeseg: the run's summary was not written: cannot write to stdout: No space left on device\n"
    assert done.stderr.endswith(said)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert records[-1].get("final")  # the output was finished


def test_a_run_that_lost_results_exits_3_when_the_reader_of_its_summary_closed_the_pipe(
    tmp_path: Path,
) -> None:
    # `edgeseg run ... | true` with every write of the JSON lines failing (a full disk): the summary cannot be
    # written, and the exit status is then all that says results were lost
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeseg", "run", "--max-frames", "3", "--set", "sinks.jsonl.path=/dev/full"],
        cwd=tmp_path, env=_env(), stdout=write, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(write)
    os.close(read)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "cannot write /dev/full: No space left on device" in err
    assert "Traceback" not in err


def test_a_run_whose_stderr_reader_closed_the_pipe_goes_on_to_its_outputs_and_summary(tmp_path: Path) -> None:
    # a log shipper that died, `edgeseg run 2>&1 | head -1`: stderr's reader is gone for good
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeseg", "run", "--max-frames", "5", "--output", "out.jsonl"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=write, text=True,
    )  # fmt: skip
    os.close(write)
    os.close(read)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    written = len((tmp_path / "out.jsonl").read_text().splitlines())
    assert f"jsonl: {written} results written" in out
    assert "nothing was reading stderr: lines of log and progress left out: " in out


@pytest.mark.parametrize("buffered", [True, False])
def test_a_run_whose_stderr_is_a_full_disk_goes_on_to_its_outputs_summary_and_status(
    tmp_path: Path, buffered: bool
) -> None:
    # `edgeseg run ... >> run.log 2>&1` on a disk that filled: the run died of its start-up line (status 1, or
    # 120 from the exit's flush), its outputs unfinished
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "edgeseg", "run", "--max-frames", "5", "--output", "out.jsonl"],
            cwd=tmp_path, env=_stdout_env(buffered), stdout=subprocess.PIPE, stderr=full, text=True,
            timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout
    written = len((tmp_path / "out.jsonl").read_text().splitlines())
    assert f"jsonl: {written} results written" in done.stdout
    said = "over the run, stderr could not be written (No space left on device): lines of log and progress"
    assert said in done.stdout


def test_a_run_leaves_onnxruntime_telemetry_off_unless_its_owner_turns_it_on(tmp_path: Path) -> None:
    # onnxruntime 1.29 on writes a device id and an event store (to upload) under ~/.cache/Microsoft when
    # imported, except where CI is set (a device's environment never has it)
    env = {k: v for k, v in _env().items() if k not in ("ORT_DISABLE_TELEMETRY", "CI")}
    store = Path(".cache", "Microsoft", "DeveloperTools")
    homes = {name: tmp_path / name for name in ("plain", "edgeseg", "owner")}
    for home in homes.values():
        home.mkdir()
    plain = "import onnxruntime; onnxruntime.InferenceSession('models/demo-parts.onnx')"
    subprocess.run(
        [sys.executable, "-c", plain], cwd=REPO, env={**env, "HOME": str(homes["plain"])}, check=True
    )
    if not (homes["plain"] / store).exists():
        pytest.skip(f"this onnxruntime keeps no telemetry store (nothing in {store} after a session)")
    run = ["run", "--max-frames", "3"]
    for name, extra in (("edgeseg", {}), ("owner", {"ORT_DISABLE_TELEMETRY": "0"})):
        done = subprocess.run(
            [sys.executable, "-m", "edgeseg", *run],
            cwd=tmp_path,
            env={**env, "HOME": str(homes[name]), **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    assert not (homes["edgeseg"] / store).exists()
    assert (homes["owner"] / store).exists()  # the owner's own setting wins


def test_eval_reports_coco_mask_ap_and_pq_on_real_ground_truth(
    tmp_path: Path, assets_dir: Path, yolo: Path
) -> None:
    annotations = assets_dir / "datasets" / "voc2011_labelme_instances" / "annotations_coco.json"
    done = edgeseg("eval", str(annotations), "--model", str(yolo), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ap_line = next(line for line in done.stdout.splitlines() if line.startswith("mask AP"))
    pq_line = next(line for line in done.stdout.splitlines() if line.startswith("accuracy vs ground truth"))
    # 3 VOC photos, 12 hand-drawn instances; yolov8n-seg int8 at 320 px measured AP 0.215, PQ 0.198 here.
    assert float(ap_line.split()[2]) > 0.1
    assert "over 3 images" in pq_line
    # pycocotools' progress lines go to stderr: `| head -1` shows the set, not "creating index..."
    assert done.stdout.startswith("3 images, 19 shared classes: "), done.stdout[:200]


def test_eval_of_a_set_without_annotations_of_the_shared_classes_reports_no_mask_ap(
    tmp_path: Path, assets_dir: Path, yolo: Path
) -> None:
    # was "mask AP -1.000  AP50 -1.000  AP75 -1.000": COCOeval's mark for no ground truth, read as a score
    dataset = assets_dir / "datasets" / "voc2011_labelme_instances"
    doc = json.loads((dataset / "annotations_coco.json").read_text())
    doc["annotations"] = []
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps(doc))
    done = edgeseg("eval", str(annotations), "--images", str(dataset), "--model", str(yolo), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ap_line = next(line for line in done.stdout.splitlines() if line.startswith("mask AP"))
    assert ap_line == "mask AP n/a (no annotations of the shared classes)"
    assert "-1.000" not in done.stdout


def test_eval_counts_no_false_positive_for_a_detection_inside_a_crowd_annotation(
    tmp_path: Path, assets_dir: Path, yolo: Path
) -> None:
    # the big bus of 2011_000025 marked iscrowd: its detection was a false positive (PQ 0.180, 6 false) while
    # the mask AP ignored it. Reference: panopticapi's rule (an unmatched prediction more than half inside the
    # crowd region of its class is left out), by a script on this model's detections and pycocotools'
    # annToMask: PQ 0.2228 (SQ 0.2384, RQ 0.2653; 7 matched, 5 false, 4 missed); 8, 5, 4 without the crowd
    dataset = assets_dir / "datasets" / "voc2011_labelme_instances"
    doc = json.loads((dataset / "annotations_coco.json").read_text())
    counts = []
    for crowd in (False, True):
        doc["annotations"][3]["iscrowd"] = int(crowd)
        annotations = tmp_path / "annotations.json"
        annotations.write_text(json.dumps(doc))
        done = edgeseg("eval", str(annotations), "--images", str(dataset), "--model", str(yolo), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        pq_line = next(
            line for line in done.stdout.splitlines() if line.startswith("accuracy vs ground truth")
        )
        found = re.search(r"PQ ([\d.]+) .*; (\d+) matched, (\d+) false, (\d+) missed", pq_line)
        assert found is not None, pq_line
        counts.append(tuple(int(v) for v in found.groups()[1:]))
    matched, false, missed = counts[0]
    assert counts[1] == (matched - 1, false, missed)  # the bus is neither matched nor false
    assert float(found[1]) == pytest.approx(0.2228, abs=0.01)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda d: d.update(images=[]), "lists no images"),  # was mask AP 0.000 and exit status 0
        (lambda d: d["images"][0].pop("file_name"), "images[0] has no 'file_name'"),
        (lambda d: d["categories"][0].pop("name"), "categories[0] has no 'name'"),
        # a detection (bounding box) file: the masks eval needs are not there
        (lambda d: [a.pop("segmentation") for a in d["annotations"]], "annotations[0] has no 'segmentation'"),
        (lambda d: [a.pop("iscrowd") for a in d["annotations"]], "annotations[0] has no 'iscrowd'"),
        # (as exports write a box without a mask: an IndexError traceback from pycocotools, and exit status 1)
        (lambda d: d["annotations"][5].update(segmentation=[]), "annotation 5 has a segmentation"),
        (lambda d: d["annotations"][5].update(segmentation=[[1, 2]]), "cannot read ([[1, 2]])"),
        # (a ValueError traceback from int())
        (lambda d: d["images"][1].update(id="img1"), "images[1].id must be an integer, as in COCO's format"),
        (lambda d: d["categories"][2].update(id="2"), "categories[2].id must be an integer"),
        # (a TypeError traceback; "image ... is 500x338 but ... gives 500x338 for it")
        (
            lambda d: d["images"][0].update(file_name=5),
            "images[0].file_name must be a string, as in COCO's format, got 5",
        ),
        (
            lambda d: d["images"][2].update(width="500"),
            "images[2].width must be an integer, as in COCO's format, got '500'",
        ),
    ],
    ids=[
        "no-images",
        "image-without-file-name",
        "category-without-name",
        "boxes-only",
        "no-iscrowd",
        "no-polygon",
        "one-vertex",
        "image-id-of-text",
        "category-id-of-text",
        "file-name-of-a-number",
        "width-of-text",
    ],
)
def test_eval_of_an_annotations_file_it_cannot_use_is_a_one_line_error(
    tmp_path: Path, assets_dir: Path, yolo: Path, spoil: Callable[[dict[str, Any]], object], message: str
) -> None:
    # before, all but the first were a KeyError traceback and exit status 1
    dataset = assets_dir / "datasets" / "voc2011_labelme_instances"
    doc = json.loads((dataset / "annotations_coco.json").read_text())
    spoil(doc)
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps(doc))
    done = edgeseg("eval", str(annotations), "--images", str(dataset), "--model", str(yolo), cwd=tmp_path)
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert done.stderr.startswith(f"edgeseg: error: {annotations}")
    assert message in done.stderr


def test_eval_of_an_annotations_file_nested_deeper_than_python_recurses_is_a_one_line_error(
    tmp_path: Path, yolo: Path
) -> None:
    # (json.loads raised RecursionError, which is no ValueError: a traceback and exit status 1)
    annotations = tmp_path / "annotations.json"
    annotations.write_text("[" * 100_000)
    done = edgeseg("eval", str(annotations), "--model", str(yolo), cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        f"edgeseg: error: {annotations} is not a COCO annotations file: nested too deeply\n",
    )


def test_eval_of_images_at_another_size_than_their_annotations_is_a_one_line_error(
    tmp_path: Path, assets_dir: Path, yolo: Path
) -> None:
    # images resized after labelling: the masks, drawn at the annotations' size, landed in the top-left
    # corner of the photo and the run reported AP 0.000 with exit status 0
    dataset = assets_dir / "datasets" / "voc2011_labelme_instances"
    annotations = tmp_path / "annotations.json"
    annotations.write_text((dataset / "annotations_coco.json").read_text())
    for image in (dataset / "JPEGImages").glob("*.jpg"):
        img = cv2.imread(str(image))
        (tmp_path / "JPEGImages").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "JPEGImages" / image.name), cv2.resize(img, None, fx=2, fy=2))
    done = edgeseg("eval", str(annotations), "--model", str(yolo), cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.match(
        r"edgeseg: error: image \S+/JPEGImages/2011_000003\.jpg is 1000x676 but \S+ gives 500x338", lines[0]
    )


def _eval_one_image(
    tmp_path: Path,
    assets_dir: Path,
    yolo: Path,
    width: int,
    height: int,
    write: Callable[[Path, int, int], None],
) -> subprocess.CompletedProcess[str]:
    """``edgeseg eval`` of a COCO file (the VOC 2011 set's categories) of one image, huge.png of ``width`` x
    ``height``, written by ``write`` into ``tmp_path``."""
    doc = json.loads(
        (assets_dir / "datasets" / "voc2011_labelme_instances" / "annotations_coco.json").read_text()
    )
    doc["images"] = [{"id": 1, "file_name": "huge.png", "width": width, "height": height}]
    doc["annotations"] = []
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    write(tmp_path / "huge.png", width, height)
    return edgeseg("eval", "annotations.json", "--model", str(yolo), cwd=tmp_path)


def test_eval_of_an_image_too_large_to_decode_is_a_one_line_error(
    tmp_path: Path, assets_dir: Path, yolo: Path
) -> None:
    # a 20000x20000 PNG of a few KB was decoded whole, to 1.2 GB
    done = _eval_one_image(tmp_path, assets_dir, yolo, 20000, 20000, bilevel_png)
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert "huge.png is 20000x20000 pixels, more than the 8192x8192 an image is decoded at" in done.stderr


def test_eval_of_an_image_whose_size_its_header_does_not_tell_is_a_one_line_error(
    tmp_path: Path, assets_dir: Path, yolo: Path
) -> None:
    # a GIF under a .png name, a few hundred bytes, was decoded at its 9000x9000 (243 MB) and evaluated
    done = _eval_one_image(tmp_path, assets_dir, yolo, 9000, 9000, screen_gif)
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert "huge.png is of unknown size: its header is cut short or not a JPEG, PNG" in done.stderr


def test_bench_prints_a_stage_table_and_writes_the_latency_plot(tmp_path: Path, yolo: Path) -> None:
    plot = tmp_path / "bench.png"
    # the threaded run after the table measures the pipeline's rate for THREADED_S (8 s), which this test
    # does not look at (tests/test_bench_prediction.py does): 1 s
    short = (
        "import runpy, edgeseg.bench; edgeseg.bench.THREADED_S = 1.0; "
        "runpy.run_module('edgeseg', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", short, "bench", "--model", str(yolo), "--frames", "10", "--plot", str(plot)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pipeline ran 1 s on its threads" in done.stdout
    for stage in ("preprocess", "infer", "decode"):
        assert stage in done.stdout
    image = cv2.imread(str(plot))
    assert image is not None
    assert min(image.shape[:2]) > 100


def test_a_sigterm_ends_bench_by_the_signal_with_no_plot_not_status_0(tmp_path: Path, yolo: Path) -> None:
    """README's status table said SIGTERM is a clean stop with status 0, which is `run`'s: bench (minutes of
    timing, its figures meaningful only whole) ends by the signal, as any program does, and writes nothing;
    a status 0 would pass for a finished bench."""
    plot = tmp_path / "bench.png"
    bench = subprocess.Popen(
        [sys.executable, "-m", "edgeseg", "bench", "--model", str(yolo), "--frames", "100000", "--plot",
         str(plot)],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(3)  # loading, or timing: either way not done
        bench.send_signal(signal.SIGTERM)
        _, err = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == -signal.SIGTERM, err
    assert not plot.exists()
    assert "Traceback" not in err


def loaded_by_run(run_args: list[str], packages: set[str], modules: frozenset[str] = frozenset()) -> set[str]:
    """Which of the top-level ``packages`` and of the ``modules`` a process that ran ``edgeseg run`` with
    ``run_args`` (and succeeded) has loaded."""
    probe = (
        "import sys\n"
        "from edgeseg import cli\n"
        f"code = cli.main(['run', *{run_args!r}])\n"
        "top = {m.split('.')[0] for m in sys.modules}\n"
        f"loaded = (top & set({sorted(packages)!r})) | (set(sys.modules) & set({sorted(modules)!r}))\n"
        "print('loaded:', ','.join(sorted(loaded)))\n"
        "sys.exit(code)\n"
    )
    cmd = [sys.executable, "-c", probe]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("loaded:"))
    return {m for m in line.removeprefix("loaded:").strip().split(",") if m}


def test_a_run_that_neither_publishes_nor_serves_the_page_never_loads_paho_asyncio_or_other_commands() -> (
    None
):
    """Every command builds the same parser and sink registry; the MQTT client (paho, ssl, sqlite3) and the
    web server (aiohttp, asyncio) cost ~15 MB of RSS and are loaded only by a run that uses them. The other
    subcommands' modules, and what they alone need (subprocess), are not loaded by a run either."""
    run = ["--max-frames", "3", "--source", "synthetic:parts?width=320&height=240"]
    heavy = {"paho", "sqlite3", "ssl", "asyncio", "aiohttp", "subprocess"}
    assert loaded_by_run(run, heavy, frozenset({"edgeseg.bench", "edgeseg.doctor"})) == set()


def test_a_run_that_hashes_nothing_never_loads_openssl(tmp_path: Path) -> None:
    """hashlib loads OpenSSL's libcrypto (3.6 MB resident); only the MQTT sink and TensorRT's engine cache
    hash anything, so a camera, video or image run without them leaves it out. (The synthetic source
    cannot: numpy.random imports secrets, whose hmac loads it.)"""
    for k in range(3):
        cv2.imwrite(str(tmp_path / f"{k}.png"), np.full((48, 64, 3), 40 * k, np.uint8))
    assert loaded_by_run(["--source", str(tmp_path)], {"_hashlib", "hashlib"}) == set()


def test_the_demo_run_reuses_freed_memory_instead_of_faulting_in_fresh_pages_every_frame(
    tmp_path: Path,
) -> None:
    # Each frame's blocks (frame, float canvases, label maps: ~25 MB on the demo) are freed by other threads
    # than the one that made them; without the heaps' kept top (edgeseg.malloc.tune_malloc), glibc gave that
    # space back at once and the next frame faulted it in again, ~5,000-7,000 pages a frame and a third of
    # the run's CPU time in the kernel. Counted as the difference between a short and a longer run, so
    # start-up is out.
    def faults(frames: int) -> int:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
        done = edgeseg("run", "--max-frames", str(frames), cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before

    per_frame = (faults(90) - faults(30)) / 60
    assert per_frame < 1500, f"{per_frame:.0f} page faults a frame"


def test_a_sigterm_as_the_pipeline_starts_stops_its_threads_and_finalizes_its_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the source's opening and the main loop, SIGTERM still interrupts as during start-up: the run
    ended "stopped before the pipeline started" with its stage threads running (the process then exited
    without waiting for what they write)."""
    from edgeseg import cli
    from edgeseg.pipeline import Pipeline

    start = Pipeline.start

    def start_then_sigterm(self: Pipeline) -> None:
        start(self)
        signal.raise_signal(signal.SIGTERM)  # (its handler runs at once, on this thread)

    monkeypatch.setattr(Pipeline, "start", start_then_sigterm)
    out = tmp_path / "o.jsonl"
    code = cli.main(
        ["run", "--source", "synthetic:parts?fps=30", "--output", str(out), "--max-frames", "900"]
    )
    assert code == 0
    assert [t.name for t in threading.enumerate() if t.name.startswith("edgeseg-")] == []


# the ways the command starts: `python -m edgeseg`, the console script (setup.cfg's entry point), and the
# console script of an install made before edgeseg.launch, which stays until `pip install` runs again (pip's
# script template: `from edgeseg.cli import entry` ... `sys.exit(entry())`)
COMMANDS = {
    "python -m edgeseg": [sys.executable, "-m", "edgeseg"],
    "console script": [sys.executable, "-c", "from edgeseg.launch import entry; entry()"],
    "old console script": [
        sys.executable,
        "-c",
        "import sys; from edgeseg.cli import entry; sys.exit(entry())",
    ],
}


def signalled_while_it_loads(
    command: list[str], sig: signal.Signals, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Runs the command and sends it ``sig`` once it is loading numpy: before ``edgeseg.cli`` and its
    handlers (OpenCV, onnxruntime and the rest still to load), as a supervisor's signal just after a start."""
    proc = subprocess.Popen(
        command, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while "_multiarray_umath" not in Path(f"/proc/{proc.pid}/maps").read_text():
            assert proc.poll() is None, "ended before numpy loaded"
            assert time.monotonic() < deadline, "numpy never loaded"
            time.sleep(0.001)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


RUN = ["run", "--source", "synthetic:parts?fps=30", "--max-frames", "10"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_sigterm_while_the_command_loads_is_a_clean_stop_with_status_0(
    tmp_path: Path, command: str
) -> None:
    done = signalled_while_it_loads([*COMMANDS[command], *RUN], signal.SIGTERM, tmp_path)
    assert (done.returncode, done.stderr) == (0, "edgeseg: stopped by SIGTERM before the pipeline started\n")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_sigint_while_the_command_loads_is_one_line_and_status_130(tmp_path: Path, command: str) -> None:
    done = signalled_while_it_loads([*COMMANDS[command], *RUN], signal.SIGINT, tmp_path)
    assert (done.returncode, done.stderr) == (130, "edgeseg: interrupted\n")
    listing = signalled_while_it_loads([*COMMANDS[command], "pipelines"], signal.SIGINT, tmp_path)
    assert (listing.returncode, listing.stderr, listing.stdout) == (130, "edgeseg: interrupted\n", "")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_sighup_while_the_command_loads_leaves_the_run_going(tmp_path: Path, command: str) -> None:
    """A `systemctl reload` right after a start: the pipeline file is read after it, nothing to reload yet."""
    done = signalled_while_it_loads([*COMMANDS[command], *RUN], signal.SIGHUP, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("done: ")  # (a live source may drop a frame: 9 of 10 read)
    assert "Traceback" not in done.stderr


def _run_script(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -c script`` with the arguments of a short run (``RUN``)."""
    return subprocess.run(
        [sys.executable, "-c", script, *RUN], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60
    )


def test_a_sigterm_after_the_run_put_its_handlers_back_leaves_its_status(tmp_path: Path) -> None:
    """The moment between the end of `edgeseg run`'s own handlers and the exit: a supervisor's repeated
    SIGTERM there ended the process by it, and the run's status (0 here, 3 for a loss) was lost."""
    script = (
        "import signal\n"
        "from edgeseg import cli\n"
        "from edgeseg.launch import entry\n"
        "restore = cli._Signals.restore\n"
        "def restore_then_sigterm(self):\n"
        "    restore(self)\n"
        "    signal.raise_signal(signal.SIGTERM)\n"
        "cli._Signals.restore = restore_then_sigterm\n"
        "entry()\n"
    )
    done = _run_script(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("done: ")  # (a live source may drop a frame: 9 of 10 read)


def test_a_sigterm_as_the_run_sets_up_its_service_link_is_a_clean_stop(tmp_path: Path) -> None:
    """Under `edgeseg run`'s handlers, while it imported and made its link to systemd (sdnotify, watchdog):
    that SIGTERM came before the try that turns it into the clean stop, and ended the command with
    TerminatedError's traceback and status 1."""
    script = (
        "import signal\n"
        "from edgeseg.sdnotify import Notifier\n"
        "from edgeseg.launch import entry\n"
        "from_env = Notifier.from_env.__func__\n"
        "def from_env_then_sigterm(cls, environ=None):\n"
        "    notifier = from_env(cls, environ)\n"
        "    signal.raise_signal(signal.SIGTERM)\n"
        "    return notifier\n"
        "Notifier.from_env = classmethod(from_env_then_sigterm)\n"
        "entry()\n"
    )
    done = _run_script(script, tmp_path)
    assert (done.returncode, done.stderr) == (0, "edgeseg: stopped by SIGTERM before the pipeline started\n")


def test_a_sigterm_while_the_model_loads_exits_without_waiting_for_the_load(tmp_path: Path) -> None:
    """The model loads on a thread of its own (``model.nice``), which the command waits for. A SIGTERM that
    stops that wait left the thread inside the load; Python 3.11's interrupted join() took it for ended
    (threading.py, _wait_for_tstate_lock's bpo-45274 branch), and the command exited through the
    interpreter's teardown with it still in onnxruntime's C++: killed by SIGABRT ("terminate called without
    an active exception") or SIGSEGV, about one start in ten under a `systemctl stop` during start-up. The
    load is made slow here so that it is still under way at the exit."""
    script = (
        "import os, signal, time\n"
        "from edgeseg.model import Model\n"
        "from edgeseg.launch import entry\n"
        "load = Model.load.__func__\n"
        "def slow_load(cls, *args, **kwargs):\n"
        "    time.sleep(0.5)\n"  # (the command waits for this thread by now)
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "    return load(cls, *args, **kwargs)\n"
        "Model.load = classmethod(slow_load)\n"
        "entry()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "-v", *RUN], cwd=tmp_path, env=_env(), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "stopped by SIGTERM before the pipeline started" in done.stderr
    assert "exiting with threads still running: edgeseg-load" in done.stderr


def test_a_bundled_pipeline_copied_with_pipelines_copy_runs_from_its_own_folder(tmp_path: Path) -> None:
    """Save into YAML on a bundled pipeline says to copy it to a file of one's own; copied as it is, the demo
    named its model relative to the bundled folder (``../models/demo-parts.onnx``): "model file not found"."""
    (tmp_path / "site").mkdir()
    done = edgeseg("pipelines", "--copy", "demo", "site/mine.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    copy = (tmp_path / "site" / "mine.yaml").read_text()
    # only the model's line and the editor's schema pointer (which found no schema.json beside the copy)
    # changed; the comments and layout are the bundled file's
    bundled = (REPO / "pipelines" / "demo.yaml").read_text().splitlines()
    assert [a for a, b in zip(copy.splitlines(), bundled, strict=True) if a != b] == [
        f"# yaml-language-server: $schema={REPO / 'pipelines' / 'schema.json'}",
        f"  path: {REPO / 'models' / 'demo-parts.onnx'} # relative paths are relative to this file",
    ]
    run = edgeseg("run", "mine.yaml", "--max-frames", "1", cwd=tmp_path / "site")
    assert run.returncode == 0, run.stderr
    again = edgeseg("pipelines", "--copy", "usb-camera", "site/mine.yaml", cwd=tmp_path)
    assert again.returncode == 2
    assert (
        again.stderr
        == "edgeseg: error: --copy: site/mine.yaml exists; not overwritten (give a new file name)\n"
    )
    assert (tmp_path / "site" / "mine.yaml").read_text() == copy


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The checkout's package copied (its links to pipelines/ and models/ followed) and built as a wheel: the
    copy and the wheel."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    src = tmp_path / "src"  # a copy: building in place leaves build/ and *.egg-info in the checkout
    # (models/reference: the demo model's benchmark reference, which scripts/ read from the checkout)
    left_out = shutil.ignore_patterns("__pycache__", "reference")
    shutil.copytree(REPO / "edgeseg", src / "edgeseg", ignore=left_out)
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (path,) = (tmp_path / "dist").glob("edgeseg-*.whl")
    return src, path


def test_the_wheel_ships_every_module_and_data_file_of_the_package(wheel: tuple[Path, Path]) -> None:
    """``pip install edgeseg`` (not ``-e``) installs the wheel: a subpackage without ``__init__.py`` is left
    out of it by ``packages = find:`` (edgeseg.mqtt was: every command ended in ModuleNotFoundError), and a
    data file setup.cfg does not declare is missing where the code opens it."""
    src, path = wheel
    shipped = set(zipfile.ZipFile(path).namelist())
    tree = {p.relative_to(src).as_posix() for p in (src / "edgeseg").rglob("*") if p.is_file()}
    assert sorted(tree - shipped) == []


def test_an_installed_wheel_runs_the_bundled_demo_and_its_selftest_and_lists_the_pipelines(
    tmp_path: Path, wheel: tuple[Path, Path]
) -> None:
    """The bundled pipelines and the demo model were the checkout's alone: installed from a wheel (``pip
    install .``, not ``-e``), ``edgeseg run``, ``edgeseg run demo``, ``edgeseg selftest`` and ``edgeseg
    pipelines`` each ended in "no bundled pipelines"."""
    site = tmp_path / "site-packages"  # the wheel as pip lays it out, with no checkout beside it
    zipfile.ZipFile(wheel[1]).extractall(site)
    env = _env()
    env["PYTHONPATH"] = str(site)

    def edgeseg_installed(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "edgeseg", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    where = subprocess.run(
        [sys.executable, "-c", "import edgeseg; print(edgeseg.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert where.stdout.startswith(str(site)), where
    for args in (["run"], ["run", "demo"]):
        assert "frames processed of 5 read" in edgeseg_installed(*args, "--max-frames", "5"), args
    assert edgeseg_installed("selftest", "--frames", "2").splitlines()[-1] == "PASS"
    listed = [line.split()[0] for line in edgeseg_installed("pipelines").splitlines()]
    assert listed == sorted(p.stem for p in (REPO / "pipelines").glob("*.yaml"))
    # video-file names the evaluation assets beside a checkout (../shared/assets), which a wheel has not:
    # the run ended in "model file not found" without a word of what to give instead
    video = subprocess.run(
        [sys.executable, "-m", "edgeseg", "run", "video-file", "--max-frames", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assets = site / "shared" / "assets"  # (../../shared/assets from edgeseg/pipelines/)
    assert (video.returncode, video.stderr) == (
        2,
        f"edgeseg: error: bundled pipeline video-file: its model {assets}/models/yolov8n-seg_int8_320.onnx "
        "is not here: give one with --model FILE; its video "
        f"{assets}/video/vtest_pets2009_480x360_h264.avi is not here: give one with --source FILE\n",
    )


def test_a_run_under_opencv_4_as_setup_cfg_allows_starts(tmp_path: Path) -> None:
    """setup.cfg takes opencv-python from 4.8, and on a Jetson the system OpenCV 4 (with GStreamer) is the
    one to use; OpenCV 5 moved ``cv2.setLogLevel`` to ``cv2.utils.logging`` (opencv/opencv#27812), and every
    command under OpenCV 4 ended in AttributeError: module 'cv2.utils' has no attribute 'logging'."""
    target = tmp_path / "opencv4"
    opencv4 = "opencv-python-headless==4.12.0.88"  # the last 4.x, built for numpy 2 as this venv's is
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), opencv4]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(REPO)])

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "edgeseg", *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    assert "opencv 4.12.0" in run("doctor").stdout
    done = run("run", "--source", "synthetic:parts", "--max-frames", "3", "--output", "o.jsonl")
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert results[-1]["final"]  # (a live source may drop frames while a stage is busy)


def test_the_oldest_onnxruntime_setup_cfg_allows_runs_the_demo(tmp_path: Path) -> None:
    """pip keeps an installed onnxruntime that meets setup.cfg's minimum; from 1.16 to 1.20 the demo (the
    default pipeline) stopped at its model: no CPU kernel for DepthToSpace on uint8 before 1.21."""
    setup_cfg = (REPO / "setup.cfg").read_text(encoding="utf-8")
    match = re.search(r"^\s+onnxruntime>=([\d.]+)$", setup_cfg, re.MULTILINE)
    assert match is not None
    target = tmp_path / "onnxruntime"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    installed = subprocess.run(
        [*pip, f"onnxruntime=={match[1]}"], capture_output=True, text=True, timeout=300
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(REPO)])
    command = [sys.executable, "-m", "edgeseg", "run", "--max-frames", "3"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # the run had that onnxruntime, not this venv's
    doctor = subprocess.run(
        [sys.executable, "-m", "edgeseg", "doctor"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert re.search(rf"onnxruntime +{re.escape(match[1])}", doctor.stdout), doctor.stdout
