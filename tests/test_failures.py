"""Nothing fails silently: every failure a user can meet ends in one clear line, a summary that says what was
lost where, and an exit status that says so. Real processes, real files, real signals, a real full disk."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from mjpeg import MjpegServer

REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("DISPLAY", "WAYLAND_DISPLAY", "NOTIFY_SOCKET"):
        env.pop(key, None)
    env.update(extra)
    return env


def edgeseg(*args: str, cwd: Path, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeseg", *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn(*args: str, cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgeseg", *args],
        cwd=cwd,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("edgeseg: error: "), done.stderr
    return lines[0]


def wait_for_line(stream: object, needle: str, timeout: float) -> list[str]:
    """Lines read from ``stream`` (a text pipe) until one contains ``needle``; fails after ``timeout``."""
    seen: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in stream:  # type: ignore[attr-defined]
            seen.append(line)
            if needle in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), f"no line with {needle!r} in {timeout} s: {seen}"
    return seen


@pytest.fixture
def yolo(assets_dir: Path) -> Path:
    return assets_dir / "models" / "yolov8n-seg_int8_320.onnx"


@pytest.fixture
def clip(assets_dir: Path) -> Path:
    return assets_dir / "video" / "pedestrians_crossing_640x360.mp4"  # 188 frames at 23.976 fps


# 1. a sink that fails is a failed run ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output", "/proc/x.mp4"], "sinks.video.path: cannot create /proc/x.mp4"),
        (["--output", "/proc/x.jsonl"], "sinks.jsonl.path: cannot create /proc/x.jsonl"),
        (["--output", "out.mp4", "--set", "sinks.video.codec=zzzz"],
         "sinks.video.codec: this OpenCV cannot encode"),
        # every frame failed to be written (the run's exit 3), the file never made
        (["--output", "out.mp4", "--set", "sinks.video.fps=100000"],
         "sinks.video.fps: this OpenCV cannot write 'mp4v' at 100000 fps"),
        (["--output", "a.jsonl", "--output", "b.jsonl"],
         "--output b.jsonl: a.jsonl is already written as jsonl"),
    ],
)  # fmt: skip
def test_an_output_that_cannot_be_written_is_one_line_before_the_first_frame(
    tmp_path: Path, clip: Path, yolo: Path, args: list[str], message: str
) -> None:
    done = edgeseg("run", "--source", str(clip), "--model", str(yolo), *args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in one_error_line(done)
    assert done.stdout == ""  # no frame was processed, no summary claims anything


def test_a_codec_is_tried_for_real_at_start(tmp_path: Path, clip: Path, yolo: Path) -> None:
    probe = cv2.VideoWriter(str(tmp_path / "p.mp4"), cv2.VideoWriter.fourcc(*"avc1"), 25.0, (64, 64))
    has_avc1 = probe.isOpened()
    probe.release()
    done = edgeseg(
        "run", "--source", str(clip), "--model", str(yolo), "--max-frames", "2",
        "--output", "out.mp4", "--set", "sinks.video.codec=avc1", cwd=tmp_path,
    )  # fmt: skip
    if has_avc1:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 2
        assert "sinks.video.codec: this OpenCV cannot encode 'avc1'" in one_error_line(done)


@contextlib.contextmanager
def small_disk(tmp_path: Path, size_kb: int) -> Iterator[tuple[Path, dict[str, str]]]:
    """A folder on a tmpfs of ``size_kb`` (root), else a file size limit on the process: a disk that fills."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)], check=True)
        try:
            yield folder, {}
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)
    else:
        yield folder, {"EDGESEG_TEST_FSIZE": str(size_kb * 1024)}


def test_a_full_disk_under_jsonl_loses_whole_lines_only_and_exits_3(
    tmp_path: Path, clip: Path, yolo: Path
) -> None:
    with small_disk(tmp_path, 24) as (folder, env):
        out = folder / "out.jsonl"
        cmd = ["run", "--source", str(clip), "--model", str(yolo), "--max-frames", "60", "--output", str(out)]
        if env:  # not root: RLIMIT_FSIZE stands in for the tmpfs (writes past it fail with EFBIG)
            limit = int(env["EDGESEG_TEST_FSIZE"])
            code = f"import resource,runpy,sys;resource.setrlimit(resource.RLIMIT_FSIZE,({limit},{limit}));sys.argv=['edgeseg',*sys.argv[1:]];runpy.run_module('edgeseg',run_name='__main__')"  # noqa: E501
            done = subprocess.run(
                [sys.executable, "-c", code, *cmd], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                timeout=180,
            )  # fmt: skip
        else:
            done = edgeseg(*cmd, cwd=tmp_path)
        text = out.read_bytes()
    assert done.returncode == 3, done.stderr
    assert text.endswith(b"\n")
    records = [json.loads(line) for line in text.decode().splitlines()]  # every line whole
    records = [r for r in records if not r.get("final")]  # the shutdown events' record is not a frame's
    assert 0 < len(records) < 60
    lost = 60 - len(records)
    assert f"jsonl: LOST {lost} results it failed on (last error: cannot write {out}" in done.stdout
    assert done.stdout.startswith(f"done, {lost} LOST ({lost} at jsonl): 60 frames processed of 60 read")
    assert "Traceback" not in done.stderr
    assert "No space left on device" in done.stderr or "File too large" in done.stderr


def test_a_jsonl_file_deleted_mid_run_is_reported_lost_and_exits_3(tmp_path: Path) -> None:
    # a cleanup job or a stray rm: writes into the deleted file go on without an error, and vanish at close
    out = tmp_path / "out.jsonl"
    proc = spawn("run", "--output", str(out), "--set", "pipeline.stats_interval_s=0.2", cwd=tmp_path)
    try:
        wait_for_line(proc.stderr, " fps", timeout=120)
        out.unlink()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 3, stderr
    written = int(stdout.split("jsonl: ")[1].split()[0])
    assert f"jsonl: LOST {written} results: {out} was deleted during the run" in stdout
    assert stdout.startswith(f"stopped (SIGTERM), {written} LOST ({written} at jsonl): ")
    assert "Traceback" not in stderr


def test_the_summarys_head_splits_what_was_lost_into_input_frames_and_each_sinks_losses(
    tmp_path: Path,
) -> None:
    """An undecodable image and results a sink could not write: the head's one number, "4 LOST: 3 frames
    processed of 3 read", read as more frames lost than were read."""
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(frames / f"{i:03d}.png"), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    (frames / "002.png").write_bytes(b"not a png")
    (tmp_path / "out.jsonl").symlink_to("/dev/full")  # every write fails: ENOSPC
    done = edgeseg("run", "--source", str(frames), "--output", "out.jsonl", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("done, 4 LOST (1 input frame, 3 at jsonl): 3 frames processed of 3 read")
    # the lines below still say what each is
    assert "source: LOST 1 frame that could not be decoded (skipped; see the log)" in lines
    assert any(line.startswith("jsonl: LOST 3 results it failed on") for line in lines), lines


def test_the_summary_says_one_frame_in_the_singular(tmp_path: Path) -> None:
    """The head said "done, 1 LOST (1 input frames): 1 frames processed of 1 read", the lines below it
    "source: LOST 1 frames that could not be decoded" and "accuracy vs ground truth over 1 frames"."""
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "000.png"), np.zeros((120, 160, 3), np.uint8))
    (frames / "001.png").write_bytes(b"not a png")
    done = edgeseg("run", "--source", str(frames), cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("done, 1 LOST (1 input frame): 1 frame processed of 1 read"), lines
    assert "source: LOST 1 frame that could not be decoded (skipped; see the log)" in lines
    # and the lines a run on the synthetic scene adds: "over 1 frames"
    lines = edgeseg("run", "--max-frames", "1", cwd=tmp_path).stdout.splitlines()
    assert lines[0].startswith("done: 1 frame processed of 1 read"), lines
    assert any(line.startswith("accuracy vs ground truth over 1 frame: PQ") for line in lines), lines
    assert any(line.startswith("tracking vs ground truth over 1 frame: IDF1") for line in lines), lines


def test_json_lines_to_a_fifo_another_process_reads_are_delivered_not_reported_lost(tmp_path: Path) -> None:
    # `mkfifo live.jsonl` and a consumer reading it: a pipe has nothing to fsync (EINVAL), which is no loss
    fifo = tmp_path / "live.jsonl"
    os.mkfifo(fifo)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(fifo.open().readlines()), daemon=True)
    reader.start()
    done = edgeseg("run", "--max-frames", "3", "--output", str(fifo), cwd=tmp_path, timeout=120)
    reader.join(10)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"jsonl: {len(lines)} results written to {fifo}" in done.stdout
    assert [json.loads(line)["seq"] for line in lines] == list(range(len(lines)))
    assert "LOST" not in done.stdout


def test_bench_plot_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    for plot, message in (
        ("b.txt", "--plot b.txt: the plot is a PNG image"),
        ("/proc/b.png", "--plot: cannot"),
    ):
        done = edgeseg("bench", "--plot", plot, "--frames", "1", "--warmup", "0", cwd=tmp_path)
        assert done.returncode == 2
        assert message in one_error_line(done)


# 2. truncated or damaged input is reported --------------------------------------------------------------


def test_a_truncated_video_reports_frames_expected_and_decoded_and_exits_3(
    tmp_path: Path, clip: Path, yolo: Path
) -> None:
    cut = tmp_path / "cut.mp4"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) * 3 // 10])
    done = edgeseg("run", "--source", str(cut), "--model", str(yolo), "--output", "out.jsonl", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    decoded = len((tmp_path / "out.jsonl").read_text().splitlines())
    assert 0 < decoded < 188
    assert "of the 188 its header announces (truncated or damaged file)" in done.stdout
    assert "LOST" in done.stdout.splitlines()[0]


def test_skipped_and_damaged_images_are_counted_and_records_name_their_file(
    tmp_path: Path, assets_dir: Path, yolo: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(assets_dir / "images" / "bus.jpg", folder / "1-bus.jpg")
    shutil.copy(assets_dir / "images" / "zidane.jpg", folder / "2-zidane.jpg")
    (folder / "3-garbage.png").write_bytes(b"not an image at all")
    data = (assets_dir / "images" / "bus.jpg").read_bytes()
    (folder / "4-cut.jpg").write_bytes(data[: len(data) * 6 // 10])
    done = edgeseg(
        "run", "--source", str(folder), "--model", str(yolo), "--output", "out.jsonl", cwd=tmp_path
    )
    assert done.returncode == 3, done.stderr
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    records = [r for r in records if not r.get("final")]  # the shutdown events' record is not a frame's
    assert [Path(r["file"]).name for r in records] == ["1-bus.jpg", "2-zidane.jpg", "4-cut.jpg"]
    assert [r.get("damaged", False) for r in records] == [False, False, True]
    assert "3 frames processed of 3 read" in done.stdout
    assert "source: LOST 1 frame that could not be decoded" in done.stdout
    assert "source: 1 damaged frames processed" in done.stdout
    assert "3-garbage.png" in done.stderr
    assert "4-cut.jpg" in done.stderr


# 3. live sources that cannot open say what they are doing ----------------------------------------------


@pytest.mark.parametrize("command", ["run", "bench"])
@pytest.mark.parametrize("uri", ["v4l2:7", "/dev/video37"])
def test_a_camera_that_does_not_exist_is_an_immediate_error(tmp_path: Path, command: str, uri: str) -> None:
    done = edgeseg(command, "--source", uri, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    line = one_error_line(done)
    assert uri.removeprefix("v4l2:") in line
    assert "camera" in line


def test_a_stream_that_never_answers_is_retried_then_given_up_with_the_reason_and_status_4(
    tmp_path: Path,
) -> None:
    """Given up after source.reconnect_timeout_s, the camera or stream may be back by a restart: status 4,
    which the unit restarts (it was 2, which RestartPreventExitStatus= keeps from being restarted)."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = edgeseg(
        "run", "--source", f"rtsp://127.0.0.1:{port}/x", "--set", "source.reconnect_timeout_s=2",
        "--set", "source.reconnect_initial_s=0.2", "--set", "pipeline.stats_interval_s=0.3",
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert "attempt" in done.stderr  # the retries are visible without -v
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("edgeseg: error: ")
    assert f"rtsp://127.0.0.1:{port}/x" in last
    assert "nan" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_a_run_its_source_gave_up_on_mid_run_says_failed_not_done_before_its_error(
    tmp_path: Path, mjpeg_server: MjpegServer
) -> None:
    """The summary's head said "done: 44 frames processed ..." above the error and status 4."""
    proc = spawn(
        "run", "--source", mjpeg_server.url, "--set", "source.reconnect_timeout_s=1",
        "--set", "source.reconnect_initial_s=0.2", "--set", "pipeline.stats_interval_s=0.3", cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_for_line(proc.stderr, " fps", timeout=120)  # frames came
        mjpeg_server.flowing.clear()  # the connection stays open, nothing more is sent
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 4, stderr
    assert stdout.startswith("failed: "), stdout
    assert "giving up after source.reconnect_timeout_s" in stderr.strip().splitlines()[-1]


def test_under_a_service_manager_a_missing_camera_is_waited_for_and_sigterm_stops_cleanly(
    tmp_path: Path,
) -> None:
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        proc = spawn(
            "run", "--source", "/dev/video37", "--set", "pipeline.stats_interval_s=0.3",
            cwd=tmp_path, NOTIFY_SOCKET=str(notify),
        )  # fmt: skip
        try:
            wait_for_line(proc.stderr, "waiting for source", timeout=60)
            proc.send_signal(signal.SIGTERM)
            stdout, _ = proc.communicate(timeout=15)
        finally:
            proc.kill()
    assert proc.returncode == 0
    assert stdout.startswith("stopped (SIGTERM): 0 frames processed")


# 4. configuration that leaks -------------------------------------------------------------------------


def test_a_file_given_by_source_plays_at_its_own_rate_not_the_demo_pipelines(
    tmp_path: Path, assets_dir: Path
) -> None:
    video = assets_dir / "video" / "vtest_pets2009_480x360_h264.avi"  # 10 fps
    done = edgeseg(
        "run", "--source", str(video), "--max-frames", "12", "--output", "out.mp4", "--output", "out.jsonl",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    cap.release()
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len([line for line in lines if '"final":true' not in line]) == 12  # + the shutdown events' record
    start = next(line for line in done.stderr.splitlines() if line.startswith("edgeseg: running "))
    assert "pipelines/demo.yaml" in start
    assert "out.mp4" in start
    assert "out.jsonl" in start
    assert str(video) in start
    assert "onnxruntime" in start
    assert "set by the stream" not in done.stderr


def test_a_bundled_pipeline_runs_by_name_and_the_list_names_them(tmp_path: Path) -> None:
    listed = edgeseg("pipelines", "-v", cwd=tmp_path)
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert {"demo", "video-file", "usb-camera"} <= set(names)
    unknown = edgeseg("run", "nosuch", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "no bundled pipeline of that name (bundled: " in one_error_line(unknown)
    done = edgeseg("run", "demo", "-v", "--max-frames", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "edgeseg: running pipelines/demo.yaml" in done.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--source", "webcam:0"], {}, "source.uri: unknown source URI 'webcam:0'"),
        (["--source", "webcam:0"], {}, "[--source]"),
        (["--roi", "0,0,2,1"], {}, "[--roi]"),
        ([], {"EDGESEG__MQTTT__URL": "x"}, "[env EDGESEG__MQTTT__URL]"),
        (["--model", "."], {}, "model path . is a folder"),
        (["--model", "sub/nosuch.onnx"], {}, "model file not found: sub/nosuch.onnx"),
    ],
)
def test_errors_name_where_the_bad_value_came_from(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    done = edgeseg("run", *args, cwd=tmp_path, **env)
    assert done.returncode == 2
    assert message in one_error_line(done)


def test_a_yaml_key_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("model: {path: m.onnx}\nsource: {fsp: 3}\n")
    done = edgeseg("run", "p.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert one_error_line(done).endswith("[p.yaml]")


# 5. the run's own report ------------------------------------------------------------------------------


def test_sigint_mid_run_finalizes_outputs_and_exits_130(tmp_path: Path) -> None:
    proc = spawn("run", "--output", "out.jsonl", "--set", "pipeline.stats_interval_s=0.2", cwd=tmp_path)
    try:
        wait_for_line(proc.stderr, " fps", timeout=120)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert stdout.startswith("interrupted (SIGINT): ")
    written = len((tmp_path / "out.jsonl").read_text().splitlines())
    assert f"jsonl: {written} results written" in stdout


@pytest.mark.parametrize(
    ("sig", "code", "first"),
    [(signal.SIGINT, 130, "interrupted (SIGINT): "), (signal.SIGTERM, 0, "stopped (SIGTERM): ")],
)
def test_a_stop_signal_repeated_until_the_end_keeps_the_summary_and_the_exit_status(
    tmp_path: Path, sig: int, code: int, first: str
) -> None:
    # an impatient Ctrl-C Ctrl-C ..., or a supervisor that repeats its SIGTERM: the ones after the first
    # land while the run finalizes, prints its summary and exits; none may cut those short
    proc = spawn("run", "--output", "out.jsonl", "--set", "pipeline.stats_interval_s=0.2", cwd=tmp_path)
    try:
        wait_for_line(proc.stderr, " fps", timeout=120)
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(sig)
            time.sleep(0.002)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert stdout.startswith(first), stdout
    written = len((tmp_path / "out.jsonl").read_text().splitlines())
    assert f"jsonl: {written} results written" in stdout
    assert "memory: peak" in stdout  # the summary's last line
    assert "Traceback" not in stderr


@pytest.mark.parametrize("repeated", [False, True], ids=["once", "repeated"])
@pytest.mark.parametrize(
    ("sig", "code", "message"),
    [(signal.SIGINT, 130, "edgeseg: interrupted"), (signal.SIGTERM, 0, "stopped by SIGTERM before")],
)
def test_a_signal_during_start_up_exits_130_for_sigint_and_0_for_sigterm(
    tmp_path: Path, sig: int, code: int, message: str, repeated: bool
) -> None:
    # a stream server that accepts and never answers: the first connect blocks in start-up (FFmpeg open)
    connected = threading.Event()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        held: list[socket.socket] = []

        def accept() -> None:
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])
                connected.set()

        threading.Thread(target=accept, daemon=True).start()
        proc = spawn("run", "--source", f"http://127.0.0.1:{port}/stream.mjpg", cwd=tmp_path)
        try:
            assert connected.wait(120)
            proc.send_signal(sig)
            # repeated (Ctrl-C Ctrl-C ...): the repeats land in the start-up's clean-up and the exit
            deadline = time.monotonic() + 30
            while repeated and proc.poll() is None and time.monotonic() < deadline:
                proc.send_signal(sig)
                time.sleep(0.0002)
            _, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
            for conn in held:
                conn.close()
    assert proc.returncode == code, stderr
    assert message in stderr
    assert "Traceback" not in stderr


def test_progress_on_a_terminal_is_one_line_updated_in_place_with_the_max_frames_total(
    tmp_path: Path, clip: Path, yolo: Path
) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeseg", "run", "--source", str(clip), "--model", str(yolo),
         "--max-frames", "20"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=slave, text=True,
    )  # fmt: skip
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    proc.wait(30)
    assert proc.returncode == 0
    shown = b"".join(chunks).decode()
    assert "/20 frames" in shown
    assert "/188" not in shown
    assert "\r" in shown
    assert shown.count("\n") <= 3, shown  # the start-up line; status lines rewrite one line


def test_progress_without_a_terminal_is_periodic_lines_with_total_and_eta(
    tmp_path: Path, clip: Path, yolo: Path
) -> None:
    done = edgeseg(
        "run", "--source", str(clip), "--model", str(yolo), "--max-frames", "60",
        "--set", "pipeline.stats_interval_s=0.3", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status = [line for line in done.stderr.splitlines() if "/60 frames" in line]
    assert status
    assert any("ETA" in line for line in status)
    assert "nan" not in done.stderr + done.stdout


# 6. structure ---------------------------------------------------------------------------------------


def test_the_pipeline_opens_its_source_once(tmp_path: Path, clip: Path) -> None:
    from edgeseg.config import load_config
    from edgeseg.pipeline import Pipeline
    from edgeseg.sources.files import VideoFileSource

    opened: list[int] = []
    original = VideoFileSource.open

    def counting_open(self: VideoFileSource) -> None:
        opened.append(1)
        original(self)

    config = load_config(None, [f"source.uri={json.dumps(str(clip))}", "pipeline.max_frames=3"], env={})
    VideoFileSource.open = counting_open  # type: ignore[method-assign]
    try:
        pipeline = Pipeline.from_config(config)
        assert opened == []  # built, not opened
        stats = pipeline.run()
    finally:
        VideoFileSource.open = original  # type: ignore[method-assign]
    assert opened == [1]
    assert stats.frames_done == 3


def test_every_command_in_the_readme_parses_as_written() -> None:
    import shlex

    from edgeseg.cli import _parser

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands: list[str] = []
    for block in readme.split("```bash\n")[1:]:
        text = block.split("```", 1)[0].replace("\\\n", " ")
        commands += [line.split("#", 1)[0] for line in text.splitlines() if line.startswith("edgeseg ")]
    assert len(commands) >= 10
    for command in commands:
        try:
            _parser().parse_args(shlex.split(command)[1:])
        except SystemExit as exc:
            raise AssertionError(f"README command does not parse: {command}") from exc
