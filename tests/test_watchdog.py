"""The service manager's side of a run: systemd's notify protocol on a real datagram socket, played here.

READY after the first result, WATCHDOG pings only while every stage makes progress (frames out, or a source
whose reconnect attempts complete), STATUS with figures, RELOADING/READY around SIGHUP, STOPPING at the end;
and log lines in journald's format when stderr is the journal stream.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mjpeg import MjpegServer
from mqtt_harness import Broker

from edgeseg import journal
from edgeseg.frame import Frame
from edgeseg.instances import Instances
from edgeseg.journal import Formatter, journal_lines, priority
from edgeseg.mqtt.broker import Credentials
from edgeseg.mqtt.publisher import Publisher
from edgeseg.pipeline import ModelStages, Pipeline
from edgeseg.sdnotify import Notifier
from edgeseg.sinks.base import SinkContext
from edgeseg.sinks.mqtt import MqttSinkConfig
from edgeseg.sinks.mqtt_sink import MqttSink
from edgeseg.sources import make_source
from edgeseg.watchdog import ServiceLink, StartupExtender

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "demo-parts.onnx"


@dataclass(frozen=True)
class Note:
    at: float  # monotonic seconds
    fields: dict[str, str]


class Manager:
    """systemd's end of ``$NOTIFY_SOCKET``: a datagram socket (a path, or an abstract name with ``@``) whose
    messages are collected with their arrival time."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.notes: list[Note] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            # as systemd 252 reads it (src/core/manager.c, manager_dispatch_notify_fd): a datagram longer
            # than NOTIFY_BUFFER_MAX (4096) or holding a NUL byte is ignored whole; lines end at \n or \r
            if len(data) > 4096 or b"\0" in data.rstrip(b"\0"):
                continue
            lines = re.split(r"[\n\r]", data.decode())
            fields = dict(line.split("=", 1) for line in lines if "=" in line)
            with self._lock:
                self.notes.append(Note(time.monotonic(), fields))

    def seen(self) -> list[Note]:
        with self._lock:
            return list(self.notes)

    def wait_for(self, check: Callable[[Note], bool], timeout_s: float = 30.0, after: float = 0.0) -> Note:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for note in self.seen():
                if note.at >= after and check(note):
                    return note
            time.sleep(0.05)
        shown = "\n".join(str(n.fields) for n in self.seen()[-10:])
        raise AssertionError(f"no such notification within {timeout_s} s; the last ones:\n{shown}")

    def pings(self, since: float = 0.0, until: float = float("inf")) -> list[Note]:
        return [n for n in self.seen() if since <= n.at <= until and n.fields.get("WATCHDOG") == "1"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    m = Manager(str(tmp_path / "notify"))
    try:
        yield m
    finally:
        m.close()


def _reap(proc: subprocess.Popen[str]) -> None:
    """Kill a run that a failed check left running."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def _longest_gap(notes: list[Note]) -> float:
    times = [n.at for n in notes]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


# the protocol ------------------------------------------------------------------------------------------


def test_a_notification_reaches_an_abstract_socket_and_a_newline_cannot_forge_a_field() -> None:
    m = Manager(f"@edgeseg-test-{uuid.uuid4().hex}")
    try:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": m.address})
        assert notifier.status("line one\nREADY=1")
        note = m.wait_for(lambda n: "STATUS" in n.fields, timeout_s=5)
        assert note.fields == {"STATUS": "line one READY=1"}
    finally:
        m.close()


def test_a_status_with_a_carriage_return_a_nul_or_over_4_kib_reaches_systemd_with_its_ping(
    manager: Manager,
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": manager.address})
    for status in ("camera says\rREADY=1", "a\0b", "é" * 3000):
        assert notifier.watchdog(status)
    manager.wait_for(lambda n: n.fields.get("STATUS", "").startswith("é"), timeout_s=5)
    forged, nul, long = manager.seen()
    assert forged.fields == {"WATCHDOG": "1", "STATUS": "camera says READY=1"}
    assert nul.fields == {"WATCHDOG": "1", "STATUS": "a b"}
    assert long.fields["WATCHDOG"] == "1"
    assert set(long.fields["STATUS"]) == {"é"}
    # as much as fits, cut between characters (é is 2 bytes)
    assert len(f"WATCHDOG=1\nSTATUS={long.fields['STATUS']}".encode()) in (4095, 4096)


def test_a_reload_says_when_it_began_on_the_monotonic_clock_in_microseconds_and_close_lets_go(
    manager: Manager,
) -> None:
    # (systemd >= 253 with Type=notify-reload wants MONOTONIC_USEC beside RELOADING=1)
    notifier = Notifier.from_env({"NOTIFY_SOCKET": manager.address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    note = manager.wait_for(lambda n: "RELOADING" in n.fields, timeout_s=5)
    assert note.fields["RELOADING"] == "1"
    assert before <= int(note.fields["MONOTONIC_USEC"]) <= after
    notifier.close()
    assert not notifier.status("after close")  # (its socket is gone: nothing sent, nothing raised)


def test_the_watchdog_interval_is_taken_only_when_it_is_meant_for_this_process() -> None:
    mine = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(mine).watchdog_s == 3.0
    assert Notifier.from_env({**mine, "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2500000"}).watchdog_s == 2.5
    assert not Notifier.from_env({}).enabled


def test_a_manager_that_went_away_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING):
        assert not notifier.watchdog("x")
        assert not notifier.watchdog("x")
    assert len([r for r in caplog.records if "cannot notify" in r.getMessage()]) == 1
    assert not notifier.enabled


# a real run on a real network stream -------------------------------------------------------------------


def test_a_run_on_a_stream_is_ready_pings_while_frames_flow_and_keeps_pinging_while_its_source_reconnects(
    mjpeg_server: MjpegServer, tmp_path: Path
) -> None:
    """The stream stalls after frames flowed: the read times out (source.stream_timeout_s), and the source's
    reconnect attempts complete in bounded time (each open times out), so pings go on with a STATUS that
    says the source is not delivering, and why, and systemd does not restart the service; SIGHUP is
    bracketed by RELOADING=1 and READY=1; frames flowing again are reported; SIGTERM sends STOPPING=1 and
    exits 0."""
    watchdog_s = 4.0  # over the 1 s a stream read or open may take (source.stream_timeout_s below)
    m = Manager(f"@edgeseg-test-{uuid.uuid4().hex}")
    env = {
        **os.environ,
        "NOTIFY_SOCKET": m.address,
        "WATCHDOG_USEC": str(int(watchdog_s * 1e6)),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("JOURNAL_STREAM", None)
    cmd = [sys.executable, "-m", "edgeseg", "run", "--source", mjpeg_server.url]
    cmd += ["--set", "source.reconnect_initial_s=0.2", "--set", "source.reconnect_max_s=0.5"]
    cmd += ["--set", "source.stream_timeout_s=1"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready = m.wait_for(lambda n: n.fields.get("READY") == "1", timeout_s=60)
        assert ready.fields["MAINPID"] == str(proc.pid)
        assert "frames" in ready.fields["STATUS"]
        # frames flow: pings carry the figures
        flowing = m.wait_for(lambda n: n.fields.get("WATCHDOG") == "1" and "fps" in n.fields["STATUS"])
        assert "latency p50" in flowing.fields["STATUS"]
        m.wait_for(lambda n: n.fields.get("WATCHDOG") == "1", after=flowing.at + 0.01)

        mjpeg_server.flowing.clear()
        stalled_at = time.monotonic()
        # the source's state, in an outage: "connecting (attempt k, last error: ...)" for an open's timeout,
        # "waiting for source (...)" only for the 0.2-0.5 s between attempts, which a ping every half
        # interval may never land in
        outage_state = re.compile(r"(waiting for source|connecting) \((attempt \d+, )?last error: ")
        waiting = m.wait_for(
            lambda n: n.fields.get("WATCHDOG") == "1" and bool(outage_state.search(n.fields["STATUS"])),
            after=stalled_at,
        )

        # attempts keep completing: pings continue for longer than the watchdog interval (a third attempt or
        # later: a ping may land on none of attempt 3's 1.2-1.5 s)
        def attempts(n: Note) -> int:
            return max((int(k) for k in re.findall(r"attempt (\d+)", n.fields.get("STATUS", ""))), default=0)

        m.wait_for(lambda n: n.fields.get("WATCHDOG") == "1" and attempts(n) >= 3, after=waiting.at)
        outage = m.pings(since=stalled_at)
        assert outage[-1].at - stalled_at > watchdog_s
        assert all("stalled" not in n.fields.get("STATUS", "") for n in m.seen())

        sent = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        reloading = m.wait_for(lambda n: n.fields.get("RELOADING") == "1", after=sent, timeout_s=10)
        assert int(reloading.fields["MONOTONIC_USEC"]) > 0
        m.wait_for(lambda n: n.fields.get("READY") == "1", after=reloading.at, timeout_s=10)

        mjpeg_server.flowing.set()
        back = time.monotonic()
        m.wait_for(
            lambda n: n.fields.get("WATCHDOG") == "1" and "waiting" not in n.fields["STATUS"], after=back
        )
        # never a gap that would have let the watchdog fire
        assert _longest_gap(m.pings(since=ready.at)) < watchdog_s

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        _reap(proc)
        m.close()
    assert proc.returncode == 0, err
    stopping = [n for n in m.seen() if n.fields.get("STOPPING") == "1"]
    assert stopping
    assert stopping[0].fields["STATUS"] == "stopping (SIGTERM)"
    assert "reloaded" in err
    assert out.startswith("stopped (SIGTERM)")


def test_a_run_its_source_gave_up_on_tells_the_manager_it_failed_and_why_not_finished(
    mjpeg_server: MjpegServer, manager: Manager, tmp_path: Path
) -> None:
    """STOPPING=1 said STATUS=finished, which systemd shows for the failed unit until its next start."""
    env = {**os.environ, "NOTIFY_SOCKET": manager.address, "PYTHONUNBUFFERED": "1"}
    env.pop("JOURNAL_STREAM", None)
    cmd = [sys.executable, "-m", "edgeseg", "run", "--source", mjpeg_server.url]
    cmd += ["--set", "source.reconnect_timeout_s=1", "--set", "source.reconnect_initial_s=0.2"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        manager.wait_for(lambda n: n.fields.get("READY") == "1", timeout_s=60)
        mjpeg_server.flowing.clear()  # the connection stays open, nothing more is sent
        _, err = proc.communicate(timeout=60)
    finally:
        _reap(proc)
    assert proc.returncode == 4, err
    stopping = manager.wait_for(lambda n: n.fields.get("STOPPING") == "1", timeout_s=5)
    assert stopping.fields["STATUS"].startswith(f"failed: source '{mjpeg_server.url}': no frame for "), (
        stopping.fields
    )


def test_a_read_blocked_for_longer_than_the_interval_stops_the_pings(
    mjpeg_server: MjpegServer, tmp_path: Path
) -> None:
    """The same stall with a 2 s watchdog: the stream read waits up to its 5 s timeout, longer than the
    interval, so pings stop (systemd would restart the service) and the journal says which call stalled."""
    m = Manager(f"@edgeseg-test-{uuid.uuid4().hex}")
    env = {**os.environ, "NOTIFY_SOCKET": m.address, "WATCHDOG_USEC": "2000000"}
    env.pop("JOURNAL_STREAM", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeseg", "run", "--source", mjpeg_server.url],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        m.wait_for(lambda n: n.fields.get("WATCHDOG") == "1" and "fps" in n.fields["STATUS"], timeout_s=60)
        mjpeg_server.flowing.clear()
        stalled_at = time.monotonic()
        stalled = m.wait_for(lambda n: n.fields.get("STATUS", "").startswith("stalled"), after=stalled_at)
        assert stalled.fields["STATUS"].startswith("stalled: a read call has not returned for ")
        assert "WATCHDOG" not in stalled.fields
        assert all(p.at < stalled.at for p in m.pings(since=stalled_at))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        _reap(proc)
        m.close()
    assert "the pipeline has stalled (a read call has not returned for" in err


def test_the_jetson_prepare_step_asks_for_start_up_time_while_it_loads_the_model(manager: Manager) -> None:
    env = {**os.environ, "NOTIFY_SOCKET": manager.address}
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "service", "prepare", "demo"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    note = manager.wait_for(lambda n: "EXTEND_TIMEOUT_USEC" in n.fields, timeout_s=5)
    assert int(note.fields["EXTEND_TIMEOUT_USEC"]) == 30_000_000
    assert note.fields["STATUS"].startswith("starting: preparing the model ")
    assert note.fields["STATUS"].endswith("demo-parts.onnx")


# a stage that hangs ------------------------------------------------------------------------------------


class HangingDecode(ModelStages):
    """The real demo model, whose decode never returns from frame ``at`` on (until released)."""

    def __init__(self, at: int) -> None:
        from edgeseg.model import Model

        super().__init__(Model.load(DEMO_MODEL))
        self.at = at
        self.release = threading.Event()

    def decode(self, frame: Frame, prepared: object, outputs: object, snapshot: object = None) -> Instances:
        if frame.index >= self.at:
            self.release.wait()
        return super().decode(frame, prepared, outputs)


class DyingDecode(HangingDecode):
    """The decode thread's work ends for good at frame ``at``: it raises what no stage catches."""

    def decode(self, frame: Frame, prepared: object, outputs: object, snapshot: object = None) -> Instances:
        if frame.index >= self.at:
            raise SystemExit("the decode thread's work is gone")
        return super().decode(frame, prepared, outputs)


def _serve(pipeline: Pipeline, link: ServiceLink, until: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not until() and time.monotonic() < deadline:
        link.tick(pipeline)
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("stages", "why"),
    [(HangingDecode, "a decode call has not returned for"), (DyingDecode, "the decode thread has ended")],
)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the dying thread
def test_pings_stop_when_the_decode_stage_hangs_or_its_thread_dies(
    manager: Manager, stages: type[HangingDecode], why: str
) -> None:
    watchdog_s = 1.0
    notifier = Notifier(manager.address, int(watchdog_s * 1e6))
    hanging = stages(at=10**9)  # not before READY and three pings
    pipeline = Pipeline(make_source("synthetic:parts?seed=1&fps=30"), hanging)
    link = ServiceLink(notifier, lambda: "figures")
    pipeline.start()
    try:
        _serve(pipeline, link, lambda: len(manager.pings()) >= 3, timeout_s=30)
        assert link.ready
        assert len(manager.pings()) >= 3
        hanging.at = 0  # the next decode call hangs (or its thread ends)
        stalled_note: list[Note] = []

        def stalled() -> bool:
            # on a busy machine "no result for 1 s" may come first; the STATUS then names the stalled call
            stalled_note[:] = [n for n in manager.seen() if n.fields.get("STATUS", "").startswith("stalled")]
            return any(why in n.fields["STATUS"] for n in stalled_note)

        _serve(pipeline, link, stalled, timeout_s=30)
        assert stalled_note, "the stall was never reported"
        assert any(why in n.fields["STATUS"] for n in stalled_note), [n.fields for n in stalled_note]
        # the manager keeps hearing STATUS but no ping for well over the interval: systemd would restart us
        _serve(pipeline, link, lambda: False, timeout_s=3 * watchdog_s)
        assert manager.pings(since=stalled_note[0].at) == []
    finally:
        hanging.release.set()
        pipeline.stop()
        pipeline.wait(10)
        notifier.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_stage_hung_on_the_first_frame_stops_the_requests_for_start_up_time(
    manager: Manager, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before READY a hung decode went unnoticed: start-up time was asked for until
    pipeline.start_timeout_s (30 min), so systemd waited that long to end and restart the service."""
    monkeypatch.setattr("edgeseg.watchdog.EXTEND_STEP_S", 0.1)
    notifier = Notifier(manager.address, 1_000_000)
    starting = StartupExtender(notifier)
    starting.start(1800.0, "waiting for the first result")
    hanging = HangingDecode(at=0)
    pipeline = Pipeline(make_source("synthetic:parts?seed=1&fps=30"), hanging)
    link = ServiceLink(notifier, lambda: "figures", starting)
    pipeline.start()
    try:
        with caplog.at_level(logging.ERROR):
            _serve(pipeline, link, lambda: bool(manager.pings()) or link.ready, timeout_s=2)  # (1 s: a stall)
            stalled = manager.wait_for(lambda n: n.fields.get("STATUS", "").startswith("stalled: "))
        _serve(pipeline, link, lambda: False, timeout_s=1.0)
        extensions = [n for n in manager.seen() if "EXTEND_TIMEOUT_USEC" in n.fields]
        assert extensions
        assert all(n.at <= stalled.at for n in extensions)
        assert not link.ready
        assert "the pipeline has stalled before its first result" in caplog.text
    finally:
        starting.stop()
        hanging.release.set()
        pipeline.stop()
        pipeline.wait(10)
        notifier.close()


def test_pings_stop_when_the_mqtt_publisher_thread_dies_and_the_summary_says_so(
    manager: Manager, broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a real broker and publisher, until the publisher's thread meets an error nothing in it expects: the
    # sink's thread still spools every result, so only the sink's own health can tell the watchdog
    step = Publisher._step
    broken = threading.Event()

    def step_until_broken(self: Publisher, link: Any) -> None:
        if broken.is_set():
            raise RuntimeError("an error nothing expected")
        step(self, link)

    monkeypatch.setattr(Publisher, "_step", step_until_broken)
    watchdog_s = 1.0
    notifier = Notifier(manager.address, int(watchdog_s * 1e6))
    ctx = SinkContext(class_names=("background", "nut", "washer", "bolt"), state_dir=tmp_path)
    sink = MqttSink(MqttSinkConfig(url=broker.url, device_id="cam1"), ctx, Credentials())
    pipeline = Pipeline(make_source("synthetic:parts?seed=1&fps=30"), HangingDecode(at=10**9), {"mqtt": sink})
    link = ServiceLink(notifier, lambda: "figures")
    pipeline.start()
    try:
        _serve(pipeline, link, lambda: len(manager.pings()) >= 3, timeout_s=30)
        assert len(manager.pings()) >= 3
        assert sink.publisher.stats().delivery.acked > 0
        broken.set()
        why = "sink mqtt: the MQTT publisher has stopped (RuntimeError: an error nothing expected)"

        def stalled() -> list[Note]:
            return [n for n in manager.seen() if n.fields.get("STATUS", "").startswith(f"stalled: {why}")]

        _serve(pipeline, link, lambda: bool(stalled()), timeout_s=30)
        assert stalled(), [n.fields for n in manager.seen()[-5:]]
        _serve(pipeline, link, lambda: False, timeout_s=3 * watchdog_s)
        assert manager.pings(since=stalled()[0].at) == []  # systemd would restart the service
        assert "publisher stopped (RuntimeError" in sink.status()
    finally:
        pipeline.stop()
        pipeline.wait(10)
        notifier.close()
    report = sink.report()
    assert "mqtt: the publisher stopped during the run (RuntimeError: an error nothing expected);" in (
        "\n".join(report.lines)
    )
    assert report.lost == 0  # what it could not send is in the spool, for the next start


# journald ----------------------------------------------------------------------------------------------


def _journal_env(stream: Path) -> dict[str, str]:
    st = os.stat(stream)
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    env.pop("NOTIFY_SOCKET", None)
    return env


def test_into_the_journal_every_line_carries_its_syslog_priority_and_no_prefix_of_ours(
    tmp_path: Path,
) -> None:
    """stderr and stdout both connected to the journal (the unit's default): warnings <4>, errors <3>,
    the start-up line and the summary <6>, a summary line saying LOST <4>."""
    log = tmp_path / "journal.txt"
    log.touch()
    missing = tmp_path / "missing.mp4"
    with open(log, "w") as stream:
        done = subprocess.run(
            [sys.executable, "-m", "edgeseg", "run", "--source", str(missing)],
            cwd=tmp_path, env=_journal_env(log), stdout=stream, stderr=stream, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2
    assert log.read_text().splitlines() == [f"<3>error: source '{missing}': file not found: {missing}"]

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    import cv2

    for i in range(4):
        cv2.imwrite(str(frames / f"{i:03d}.png"), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    (frames / "002.png").write_bytes(b"not a png")
    with open(log, "w") as stream:
        done = subprocess.run(
            [sys.executable, "-m", "edgeseg", "run", "--source", str(frames)],
            cwd=tmp_path, env=_journal_env(log), stdout=stream, stderr=stream, timeout=120,
        )  # fmt: skip
    lines = log.read_text().splitlines()
    assert done.returncode == 3, lines
    assert all(line[:3] in ("<3>", "<4>", "<6>") for line in lines), lines
    assert any(line.startswith("<6>running ") for line in lines)
    assert any(line.startswith("<4>") and "002.png" in line for line in lines)
    assert any(line.startswith("<4>done, 1 LOST (1 input frame): 3 frames processed") for line in lines)
    assert any(line.startswith("<4>source: LOST 1 frame ") for line in lines)
    assert not any("edgeseg: " in line for line in lines)


def test_on_a_terminal_or_a_file_lines_keep_their_edgeseg_prefix(tmp_path: Path) -> None:
    env = {**os.environ}
    env.pop("JOURNAL_STREAM", None)
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "run", "--source", str(tmp_path / "missing.mp4")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.stderr.startswith("edgeseg: error: source ")


def test_a_multi_line_record_is_prefixed_on_every_line() -> None:
    record = logging.LogRecord("edgeseg", logging.WARNING, __file__, 1, "one\ntwo", None, None)
    assert Formatter(journal=True).format(record) == "<4>one\n<4>two"
    assert Formatter(journal=False).format(record) == "edgeseg: WARNING: one\ntwo"
    assert journal_lines("x", logging.DEBUG) == "<7>x"
    assert [priority(v) for v in (50, 40, 30, 20, 10)] == [2, 3, 4, 6, 7]


# nobody reads stderr ---------------------------------------------------------------------------------------


def _small_pipe() -> tuple[int, int]:
    """A pipe of one page: full once a line sits in it (Linux counts a pipe's room in pages)."""
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)
    return read, write


def _drain(fd: int) -> str:
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_lines_a_full_pipe_cannot_take_are_left_out_counted_and_said_once_it_drains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(journal, "_outlet", journal._Outlet())
    monkeypatch.setattr(journal, "PATIENCE_S", 0.05)
    read, write = _small_pipe()
    with open(write, "w") as stream, open(read, "rb", buffering=0):
        started = time.monotonic()
        for i in range(200):
            journal.put(stream, f"line {i}\n")
        assert time.monotonic() - started < 10  # (a hang, not a timing: a blocking write never returns)
        taken = _drain(read)
        assert taken.startswith("line 0\n")
        left = 200 - taken.count("\n")
        assert left > 0
        assert journal.left_out() == left

        journal.put(stream, "line 200\n")
        notice = "edgeseg: WARNING: nothing was reading stderr: lines of log and progress left out here:"
        assert _drain(read) == f"{notice} {left}\nline 200\n"
        # a text longer than the pipe takes whole is written while it has room, and the rest left out
        long = "x" * (3 * journal.CHUNK) + "\n"
        journal.put(stream, long)
        cut = _drain(read)
        assert long.startswith(cut)
        assert 0 < len(cut) < len(long)
        journal.put(stream, "next\n")
        assert _drain(read) == f"\n{notice} 1\nnext\n"
        assert journal.left_out() == left + 1


def test_a_line_waits_for_a_reader_that_is_slow_but_alive_and_nothing_is_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(journal, "_outlet", journal._Outlet())
    monkeypatch.setattr(journal, "PATIENCE_S", 60.0)  # (the line goes out as soon as the reader reads)
    read, write = _small_pipe()
    with open(write, "w") as stream, open(read, "rb", buffering=0):
        stream.write("x" * 4096)  # the pipe full
        stream.flush()
        taken: list[bytes] = []
        reader = threading.Timer(0.3, lambda: taken.append(os.read(read, 4096)))
        reader.start()
        journal.put(stream, "waited\n")
        reader.join()
        assert taken == [b"x" * 4096]
        assert _drain(read) == "waited\n"
        assert journal.left_out() == 0


def test_summary_lines_a_full_stdout_cannot_take_are_left_out_counted_apart_from_stderrs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(journal, "_outlet", journal._Outlet())
    monkeypatch.setattr(journal, "_summary_outlet", journal._Outlet("stdout", "lines of the run's summary"))
    monkeypatch.setattr(journal, "PATIENCE_S", 0.05)
    read, write = _small_pipe()
    with open(write, "w") as stream, open(read, "rb", buffering=0):
        stream.write("x")  # (one byte: the pipe has no page of room left)
        stream.flush()
        for i in range(5):
            journal.echo(f"summary {i}", stream=stream)
        assert journal.summary_left_out() == 5
        assert journal.left_out() == 0
        assert _drain(read) == "x"
        journal.echo("summary 5", stream=stream)
        notice = "edgeseg: WARNING: nothing was reading stdout: lines of the run's summary left out here: 5"
        assert _drain(read) == f"{notice}\nsummary 5\n"


def test_a_run_whose_stdout_nobody_reads_ends_and_says_on_stderr_what_it_left_out_of_the_summary(
    tmp_path: Path,
) -> None:
    """stdout a pipe that is full before the run starts and that nobody reads (a parent that reads stderr
    only, a stalled journal): the run's summary no longer holds it at its end forever."""
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    read, write = _small_pipe()
    os.write(write, b"." * 4096)
    cmd = [sys.executable, "-m", "edgeseg", "run", "--max-frames", "20"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=write, stderr=subprocess.PIPE, text=True)
    os.close(write)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        _reap(proc)
    try:
        assert _drain(read) == "." * 4096  # nothing of the summary got in, nor waits to
    finally:
        os.close(read)
    assert proc.returncode == 0
    said = re.search(
        r"edgeseg: nothing was reading stdout: lines of the run's summary left out: (\d+)\n", err
    )
    assert said is not None, err
    assert int(said.group(1)) >= 3  # (done, stage medians, memory at least)


def test_a_run_whose_stderr_nobody_reads_keeps_pinging_the_watchdog_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    """stderr a pipe that is full before the run starts and that nobody reads: the run goes on (the main
    thread, which feeds the watchdog and acts on signals, never waits on it, nor do the stages); read again,
    it says how many lines it left out, and so does the summary."""
    m = Manager(f"@edgeseg-test-{uuid.uuid4().hex}")
    env = {**os.environ, "NOTIFY_SOCKET": m.address, "WATCHDOG_USEC": "2000000"}
    env.pop("JOURNAL_STREAM", None)
    read, write = _small_pipe()
    os.write(write, b"." * 4096)
    cmd = [sys.executable, "-m", "edgeseg", "run", "--set", "pipeline.stats_interval_s=0.05"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=write, text=True)
    os.close(write)
    try:
        ready = m.wait_for(lambda n: n.fields.get("READY") == "1", timeout_s=60)
        m.wait_for(lambda n: n.fields.get("WATCHDOG") == "1", after=ready.at + 3, timeout_s=10)
        assert _longest_gap(m.pings(since=ready.at)) < 2.0
        assert _drain(read) == "." * 4096
        os.set_blocking(read, True)
        said = os.read(read, 4096)
        assert re.match(
            rb"edgeseg: WARNING: nothing was reading stderr: lines of log and progress left out here: \d+\n",
            said,
        )
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        _reap(proc)
        os.close(read)
        m.close()
    assert proc.returncode == 0
    assert out.startswith("stopped (SIGTERM)")
    assert re.search(
        r"over the run, nothing was reading stderr: lines of log and progress left out: \d+\n", out
    )
