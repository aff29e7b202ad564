"""The display sink shows a real window under Xvfb, and refuses cleanly (no SIGABRT) without a display."""

from __future__ import annotations

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


@pytest.fixture
def xvfb() -> Iterator[str]:
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.fail("Xvfb is not installed (scripts/test.sh installs it: apt-get install xvfb)")
    display = f":{90 + os.getpid() % 100}"
    proc = subprocess.Popen([exe, display, "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    sock = Path(f"/tmp/.X11-unix/X{display[1:]}")
    for _ in range(100):
        if sock.exists():
            break
        time.sleep(0.05)
    try:
        yield display
    finally:
        proc.terminate()
        proc.wait(5)


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
