"""Live sources say what they are doing: a missing camera, a dead or stalled stream, and when they give up."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from mjpeg import MjpegServer

from edgeseg.config import SourceConfig
from edgeseg.errors import SourceError
from edgeseg.frame import Frame
from edgeseg.sources import Source, list_cameras, make_source, open_source
from edgeseg.sources.live import Grab, LiveSource, reported_attempt
from edgeseg.sources.opencv_live import OpenCVLiveSource

MISSING_DEVICES = ("v4l2:57", "/dev/video58")  # numbers no test machine has


def _wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "edgeseg.sources"
    ]


def _read_until_it_gives_up(src: Source, server: MjpegServer) -> tuple[list[Frame], list[SourceError]]:
    """Read ``src`` on a thread of its own, the ``server``'s stream stalled after 3 frames, until the source
    gives up (bounded: 15 s); the frames read and the errors it ended with."""
    frames: list[Frame] = []
    errors: list[SourceError] = []

    def read() -> None:
        try:
            while (frame := src.read()) is not None:
                frames.append(frame)
                if len(frames) == 3:
                    server.flowing.clear()
        except SourceError as e:
            errors.append(e)

    src.open()
    reader = threading.Thread(target=read)
    reader.start()
    reader.join(timeout=15)
    src.close()
    reader.join(timeout=5)
    return frames, errors


@pytest.mark.parametrize("uri", MISSING_DEVICES)
def test_a_camera_that_does_not_exist_is_an_immediate_one_line_error_listing_the_cameras(
    uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with pytest.raises(SourceError) as err:
        open_source(uri)
    message = str(err.value)
    assert "\n" not in message
    assert f"no camera /dev/video{uri[-2:]} on this machine" in message
    assert f"(cameras: {', '.join(list_cameras()) or 'none'})" in message


@pytest.mark.parametrize("uri", MISSING_DEVICES)
def test_under_systemd_a_missing_camera_is_waited_for_with_one_warning_until_closed(
    uri: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    caplog.set_level(logging.DEBUG, logger="edgeseg.sources")
    src = open_source(SourceConfig(uri=uri, reconnect_initial_s=0.01, reconnect_max_s=0.02))
    result: list[Frame | None] = []
    reader = threading.Thread(target=lambda: result.append(src.read()))
    reader.start()
    try:
        _wait_until(lambda: src.stats.attempt >= 5)
        assert reader.is_alive()
        assert src.stats.state.startswith("waiting for source (attempt")
        assert src.stats.last_error == f"/dev/video{uri[-2:]} does not exist"
    finally:
        src.close()
        reader.join(timeout=5)
    assert not reader.is_alive()
    assert result == [None]
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert f"waiting for /dev/video{uri[-2:]} to appear" in warnings[0]


def test_an_unreachable_stream_gives_up_after_reconnect_timeout_naming_attempts_and_last_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    uri = "rtsp://127.0.0.1:9/x"  # the discard port: nothing listens, the connection is refused at once
    src = make_source(SourceConfig(uri=uri, reconnect_timeout_s=1.5))
    errors: list[BaseException] = []

    def read() -> None:
        try:
            src.open()
            src.read()
        except SourceError as e:
            errors.append(e)

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(timeout=15)
    src.close()
    reader.join(timeout=5)
    assert len(errors) == 1
    message = str(errors[0])
    assert "\n" not in message
    assert message.startswith(f"source {uri!r}: no frame for ")
    assert f"{src.stats.attempt} connection attempt(s) failed" in message
    assert src.stats.attempt >= 2
    assert f"last error: cannot open {uri}" in message
    assert "source.reconnect_timeout_s = 1.5 s" in message
    assert f"attempt 1 failed: cannot open {uri}; next attempt in 0.5 s" in _warnings(caplog)[0]


def test_reconnect_timeout_defaults_to_60_s_and_to_never_under_systemd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert SourceConfig().give_up_after_s() == 60
    assert SourceConfig(reconnect_timeout_s=0).give_up_after_s() is None
    assert SourceConfig(reconnect_timeout_s=2.5).give_up_after_s() == 2.5
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    assert SourceConfig().give_up_after_s() is None
    assert SourceConfig(reconnect_timeout_s=2.5).give_up_after_s() == 2.5


def test_failed_attempts_are_logged_1_to_3_then_at_round_numbers() -> None:
    logged = [k for k in range(1, 3001) if reported_attempt(k)]
    assert logged == [1, 2, 3, *range(10, 100, 10), *range(100, 1000, 100), 1000, 2000, 3000]


def test_a_stalled_stream_is_noticed_within_the_read_timeout_logged_and_reconnected(
    mjpeg_server: MjpegServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = mjpeg_server.url
    src = OpenCVLiveSource(
        url, url, cv2.CAP_FFMPEG, reconnect_initial_s=0.1, reconnect_max_s=0.2, stream_timeout_s=1.0
    )
    frames: list[Frame] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set() and (frame := src.read()) is not None:
            frames.append(frame)

    src.open()
    reader = threading.Thread(target=read)
    reader.start()
    try:
        _wait_until(lambda: len(frames) >= 5)
        mjpeg_server.flowing.clear()
        _wait_until(lambda: src.stats.last_error is not None)
        stalled_at = len(frames)
        assert src.stats.last_error == f"stream dropped after {stalled_at} frame(s)"
        _wait_until(lambda: src.stats.attempt >= 2)  # reconnects fail while the server stays silent
        assert src.stats.last_error == f"cannot open {url}"
        assert src.stats.state.endswith(f", last error: cannot open {url})")
        assert len(frames) == stalled_at
        mjpeg_server.flowing.set()
        _wait_until(lambda: len(frames) >= stalled_at + 5)
    finally:
        stop.set()
        src.close()
        reader.join(timeout=10)
    assert not reader.is_alive()
    assert [f.index for f in frames] == list(range(len(frames)))
    assert frames[-1].image.shape == (180, 320, 3)
    warnings = _warnings(caplog)
    assert warnings[0] == f"source {url!r}: stream dropped after {stalled_at} frame(s); reconnecting in 0.1 s"
    assert warnings[1].startswith(f"source {url!r}: attempt 1 failed: cannot open {url}; next attempt in ")
    assert warnings[-1].startswith(f"source {url!r}: frames flow again after a ")


def test_a_give_up_time_shorter_than_the_read_timeout_gives_up_with_a_true_account(
    mjpeg_server: MjpegServer,
) -> None:
    """With source.reconnect_timeout_s below the read's own timeout (5 s by default), a stream that stalled
    was given up on right after the read timed out, and the message said "0 connection attempt(s) failed",
    as if connecting had been tried and had worked."""
    url = mjpeg_server.url
    src = OpenCVLiveSource(url, url, cv2.CAP_FFMPEG, stream_timeout_s=1.0, give_up_after_s=0.3)
    frames, errors = _read_until_it_gives_up(src, mjpeg_server)
    assert len(errors) == 1, frames
    message = str(errors[0])
    assert "0 connection attempt(s)" not in message
    assert f"last error: stream dropped after {len(frames)} frame(s)" in message
    assert "no reconnection attempted" in message
    assert "source.reconnect_timeout_s = 0.3 s" in message


def test_source_stream_timeout_s_is_how_long_a_stalled_stream_is_waited_for_before_reconnecting(
    mjpeg_server: MjpegServer,
) -> None:
    """The 5 s wait of a stream's open and read was reached by no config key: a slow RTSP camera over Wi-Fi
    could not be given longer, nor a stalled stream noticed sooner. With 0.5 s, a stall is reconnected
    (attempts fail while the server stays silent) within a give-up time of 3 s, which the 5 s read alone
    would have used up ("no reconnection attempted")."""
    url = mjpeg_server.url
    src = make_source(SourceConfig(uri=url, stream_timeout_s=0.5, reconnect_timeout_s=3))
    frames, errors = _read_until_it_gives_up(src, mjpeg_server)
    assert len(errors) == 1, frames
    assert re.search(r"no frame for [\d.]+ s, [1-9]\d* connection attempt\(s\) failed", str(errors[0]))


def test_a_stream_password_never_reaches_logs_errors_or_records(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    src = make_source(SourceConfig(uri="rtsp://admin:s3cret@127.0.0.1:9/x", reconnect_timeout_s=0.5))
    assert src.uri == "rtsp://admin:***@127.0.0.1:9/x"  # what messages and Frame.source carry
    src.open()  # a failed first connect is logged, not raised: read() retries until it gives up
    try:
        with pytest.raises(SourceError) as err:
            src.read()
    finally:
        src.close()
    assert "s3cret" not in str(err.value)
    assert "s3cret" not in caplog.text
    assert "admin:***@127.0.0.1:9/x" in str(err.value)


@pytest.mark.parametrize("password", ["abc#123", "a/b", "a?b"])
def test_a_password_with_a_character_it_should_have_percent_encoded_is_still_redacted(
    password: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # FFmpeg cannot connect with a raw '#', '/' or '?' in the password (it needs %23, %2F, %3F): the stream
    # never opens, and each attempt's warning, for months under systemd, and the error must not carry it.
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    src = make_source(SourceConfig(uri=f"rtsp://admin:{password}@127.0.0.1:9/x", reconnect_timeout_s=0.5))
    assert src.uri == "rtsp://admin:***@127.0.0.1:9/x"
    src.open()
    try:
        with pytest.raises(SourceError) as err:
            src.read()
    finally:
        src.close()
    assert password not in str(err.value)
    assert password not in caplog.text
    assert "admin:***@127.0.0.1:9/x" in str(err.value)


class _SlowDevice(LiveSource):
    """A device whose grab blocks until released and whose release takes a while (as ``cap.release()``
    of an FFmpeg stream can): records when it was disconnected."""

    def __init__(self) -> None:
        super().__init__("slow:")
        self.in_grab = threading.Event()
        self.let_grab_return = threading.Event()
        self.disconnected_at: float | None = None

    def _connect(self) -> str | None:
        return None

    def _grab(self) -> Grab | None:
        self.in_grab.set()
        self.let_grab_return.wait(10)
        return Grab(np.zeros((4, 4, 3), np.uint8), time.monotonic_ns(), time.time())

    def _disconnect(self) -> None:
        time.sleep(0.3)
        self.disconnected_at = time.monotonic()


def test_a_read_interrupted_by_close_returns_only_once_the_device_is_released() -> None:
    """close() during a grab hands the release to a thread of its own; the reader must not return first, or
    the process may exit while that thread is inside the device's library (SIGABRT at exit, seen in CI)."""
    source = _SlowDevice()
    source.open()
    reader = threading.Thread(target=lambda: [None for _ in iter(source.read, None)])  # as the pipeline reads
    reader.start()
    assert source.in_grab.wait(5)
    source.close()  # the grab holds the device: the release waits for it
    source.let_grab_return.set()
    reader.join(5)
    assert not reader.is_alive()
    returned_at = time.monotonic()
    assert source.disconnected_at is not None
    assert source.disconnected_at <= returned_at


def test_the_edgeseg_command_keeps_its_exit_code_when_a_thread_is_still_inside_a_call() -> None:
    """A daemon thread left in a blocking call at exit: the command ends at once, with main()'s exit code."""
    code = (
        "import threading, time\n"
        "from edgeseg import cli\n"
        "threading.Thread(target=time.sleep, args=(60,), name='edgeseg-source', daemon=True).start()\n"
        "cli.main = lambda held=None: 3\n"
        "print('summary', flush=False)\n"
        "cli.entry()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 3
    assert done.stdout == "summary\n"  # written out before the exit
