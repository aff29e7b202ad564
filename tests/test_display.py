"""The display sink shows a real window under Xvfb, and refuses cleanly (no SIGABRT) without a display."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SHOW = """
import cv2, numpy as np, time
from edgeseg.frame import Frame, Result
from edgeseg.instances import Instances
from edgeseg.sinks.display import DisplaySink
sink = DisplaySink("edgeseg-test")
img = np.full((120, 160, 3), 90, np.uint8)
inst = Instances.from_crops((120, 160), [1], [0.9], [(20, 20)], [np.ones((30, 40), bool)])
for i in range(5):
    sink.send(Result(Frame(i, img, time.monotonic_ns(), time.time()), inst))
print("visible", cv2.getWindowProperty("edgeseg-test", cv2.WND_PROP_VISIBLE))
sink.close()
"""


@contextlib.contextmanager
def _xvfb_server(first: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real Xvfb on a display from ``first`` on (one a process: tests in parallel do not meet), and its
    name; killed at the end, its socket removed (a killed Xvfb leaves it behind)."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.fail("Xvfb is not installed (scripts/test.sh installs it: apt-get install xvfb)")
    display = f":{first + os.getpid() % 50}"
    proc = subprocess.Popen([exe, display, "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    sock = Path(f"/tmp/.X11-unix/X{display[1:]}")
    for _ in range(100):
        if sock.exists():
            break
        time.sleep(0.05)
    try:
        yield proc, display
    finally:
        proc.terminate()
        proc.wait(5)
        sock.unlink(missing_ok=True)


@pytest.fixture
def xvfb() -> Iterator[str]:
    with _xvfb_server(90) as (_, display):
        yield display


def run_python(code: str, env_update: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(env_update, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_display_sink_opens_a_real_window_under_xvfb(xvfb: str) -> None:
    done = run_python(SHOW, {"DISPLAY": xvfb})
    assert done.returncode == 0, done.stderr
    assert "visible 1.0" in done.stdout


def test_without_a_display_the_sink_raises_a_clear_error_instead_of_aborting() -> None:
    done = run_python(SHOW, {})
    assert done.returncode == 1  # a Python exception, not SIGABRT (-6)
    assert "ConfigError: sinks.display: no display: DISPLAY and WAYLAND_DISPLAY are unset" in done.stderr


def test_a_display_variable_pointing_at_no_server_is_refused_too() -> None:
    done = run_python(SHOW, {"DISPLAY": ":250"})
    assert done.returncode == 1
    assert "the X server DISPLAY=:250 does not answer" in done.stderr


SERVER_DIES = """
import os, signal, sys, time
import numpy as np
from edgeseg.frame import Frame, Result
from edgeseg.instances import Instances
from edgeseg.sinks.base import SinkContext
from edgeseg.sinks.display import DisplaySink
stops = []
sink = DisplaySink("edgeseg-test", SinkContext(request_stop=lambda: stops.append(1)))
img = np.full((120, 160, 3), 90, np.uint8)
inst = Instances.from_crops((120, 160), [1], [0.9], [(20, 20)], [np.ones((30, 40), bool)])
def send(i):
    sink.send(Result(Frame(i, img, time.monotonic_ns(), time.time()), inst))
for i in range(3):
    send(i)
os.kill(SERVER_PID, signal.SIGKILL)  # the X server dies (a session ends, Xvfb killed)
time.sleep(0.5)
for i in range(3, 10):
    send(i)
sink.close()
print("stops", len(stops) > 0)
"""


def test_an_x_server_that_dies_mid_run_stops_the_run_instead_of_exiting_the_process() -> None:
    # Qt's xcb plugin calls exit(1) at the next event it processes on a broken X connection: the process
    # vanished with status 1, no summary, an MP4 being written left unreadable
    with _xvfb_server(190) as (server, display):
        done = run_python(SERVER_DIES.replace("SERVER_PID", str(server.pid)), {"DISPLAY": display})
    assert done.returncode == 0, done.stderr
    assert "stops True" in done.stdout
    assert f"the X server DISPLAY={display} stopped answering" in done.stderr
