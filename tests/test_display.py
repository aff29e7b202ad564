"""The display sink shows a real window under Xvfb, and refuses cleanly (no SIGABRT) without a display."""

from __future__ import annotations

import contextlib
import ctypes
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
def _xvfb_server() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real Xvfb on a display number it picks itself, once it accepts connections, and its name; killed at
    the end, its socket and lock file removed (a killed Xvfb leaves them behind). A number picked here from
    the process id could be another test process's: that server was used as this one's, and its socket
    removed at the end under the other process's tests."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.fail("Xvfb is not installed (scripts/test.sh installs it: apt-get install xvfb)")
    read_end, write_end = os.pipe()
    args = [exe, "-displayfd", str(write_end), "-screen", "0", "640x480x24", "-nolisten", "tcp"]
    proc = subprocess.Popen(args, pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    with os.fdopen(read_end) as ready:
        number = ready.readline().strip()  # written once it accepts connections; "" if it ended
    try:
        assert number, f"Xvfb did not start (status {proc.poll()})"
        yield proc, f":{number}"
    finally:
        proc.terminate()
        proc.wait(5)
        if number:
            Path(f"/tmp/.X11-unix/X{number}").unlink(missing_ok=True)
            Path(f"/tmp/.X{number}-lock").unlink(missing_ok=True)


@pytest.fixture
def xvfb() -> Iterator[str]:
    with _xvfb_server() as (_, display):
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


# a display sink fed one instance on a grey frame by send(i), its stop requests in stops
_SINK = """
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
"""

SERVER_DIES = (
    """
import os, signal, sys, time
"""
    + _SINK
    + """for i in range(3):
    send(i)
os.kill(SERVER_PID, signal.SIGKILL)  # the X server dies (a session ends, Xvfb killed)
time.sleep(0.5)
for i in range(3, 10):
    send(i)
sink.close()
print("stops", len(stops) > 0)
"""
)


def test_an_x_server_that_dies_mid_run_stops_the_run_instead_of_exiting_the_process() -> None:
    # Qt's xcb plugin calls exit(1) at the next event it processes on a broken X connection: the process
    # vanished with status 1, no summary, an MP4 being written left unreadable
    with _xvfb_server() as (server, display):
        done = run_python(SERVER_DIES.replace("SERVER_PID", str(server.pid)), {"DISPLAY": display})
    assert done.returncode == 0, done.stderr
    assert "stops True" in done.stdout
    assert f"the X server DISPLAY={display} stopped answering" in done.stderr


CLOSED_BY_USER = (
    """
import os, time
"""
    + _SINK
    + """deadline = time.monotonic() + 20
i = 0
while not stops and time.monotonic() < deadline:
    send(i)
    i += 1
    time.sleep(0.02)
for k in range(5):  # what the pipeline still sends while it stops
    send(i + k)
open("MARKER", "w").close()
time.sleep(1.5)  # the test looks for a window now
sink.close()
print("stops", len(stops))
"""
)


def _close_like_a_window_manager(display: str, window: int) -> None:
    """Send ``window`` the WM_DELETE_WINDOW message a window manager sends when the user clicks its X."""
    x11 = ctypes.cdll.LoadLibrary("libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]

    class ClientMessage(ctypes.Structure):  # XClientMessageEvent, Xlib.h
        _fields_ = [
            ("type", ctypes.c_int),
            ("serial", ctypes.c_ulong),
            ("send_event", ctypes.c_int),
            ("display", ctypes.c_void_p),
            ("window", ctypes.c_ulong),
            ("message_type", ctypes.c_ulong),
            ("format", ctypes.c_int),
            ("data", ctypes.c_long * 5),
        ]

    class XEvent(ctypes.Union):
        _fields_ = [("xclient", ClientMessage), ("pad", ctypes.c_long * 24)]

    dpy = x11.XOpenDisplay(display.encode())
    assert dpy, f"cannot open {display}"
    try:
        event = XEvent()
        event.xclient.type = 33  # ClientMessage
        event.xclient.window = window
        event.xclient.message_type = x11.XInternAtom(dpy, b"WM_PROTOCOLS", 0)
        event.xclient.format = 32
        event.xclient.data[0] = x11.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
        assert x11.XSendEvent(dpy, window, 0, 0, ctypes.byref(event))
        x11.XFlush(dpy)
    finally:
        x11.XCloseDisplay(dpy)


def _xdotool() -> str:
    """The xdotool on PATH, which the tests that act as a user at the window need (skipped without one)."""
    xdotool = shutil.which("xdotool")
    if xdotool is None:
        pytest.skip("xdotool not installed (apt-get install xdotool; scripts/test.sh does it as root)")
    return xdotool


@contextlib.contextmanager
def _python_on(display: str, code: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """``code`` run by a Python of its own on the X display ``display``, its output piped, yielded with its
    environment (for the X tools run beside it); killed at the end if it has not ended."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(DISPLAY=display, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        yield child, env
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


def test_a_window_the_user_closes_stops_the_run_and_stays_closed(xvfb: str, tmp_path: Path) -> None:
    # Qt's getWindowProperty raised "NULL guiReceiver" on the closed window: the sink failed on every frame,
    # imshow opened a new window and the run went on to its end with frames reported lost
    xdotool = _xdotool()
    marker = tmp_path / "after-stop"
    with _python_on(xvfb, CLOSED_BY_USER.replace("MARKER", str(marker))) as (child, env):

        def windows() -> list[int]:
            found = subprocess.run([xdotool, "search", "--onlyvisible", "--name", "^edgeseg-test$"],
                                   env=env, capture_output=True, text=True)  # fmt: skip
            return [int(w) for w in found.stdout.split()]

        deadline = time.monotonic() + 15
        while not windows() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert windows(), "the window never opened"
        _close_like_a_window_manager(xvfb, windows()[0])
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline + 10:
            time.sleep(0.1)
        assert windows() == [], "the frames sent while the run stops opened the window again"
        out, err = child.communicate(timeout=20)
    assert child.returncode == 0, err
    assert "stops 1" in out


OTHER_KEYS = (
    """
import os, time
"""
    + _SINK
    + """i = 0
while not stops and not os.path.exists("MARKER"):
    send(i)
    i += 1
    time.sleep(0.02)
sink.close()
print("stops", len(stops))
"""
)


def test_a_key_whose_code_ends_in_the_byte_of_esc_does_not_stop_the_run(xvfb: str, tmp_path: Path) -> None:
    # the sink read keys with waitKey, which keeps the low byte of the key's code: the Search key of a
    # multimedia keyboard (keysym 0x1008FF1B) was Esc and ended the run
    xdotool = _xdotool()
    marker = tmp_path / "keys-sent"
    with _python_on(xvfb, OTHER_KEYS.replace("MARKER", str(marker))) as (child, env):
        deadline = time.monotonic() + 15
        search = [xdotool, "search", "--name", "^edgeseg-test$"]
        found: list[str] = []
        while not found and time.monotonic() < deadline:
            found = subprocess.run(search, env=env, capture_output=True).stdout.decode().split()
            time.sleep(0.1)
        assert found, "the window never opened"
        for window in found:  # Qt makes several X windows for one HighGUI window
            subprocess.run([xdotool, "key", "--window", window, "XF86Search"], env=env, check=True)
        time.sleep(1.0)  # the key has been read
        marker.touch()
        out, err = child.communicate(timeout=20)
    assert child.returncode == 0, err
    assert "stops 0" in out


_SHOWN_AT = """
import time
import cv2, numpy as np
from edgeseg.frame import Frame, Result
from edgeseg.instances import Instances
from edgeseg.sinks.display import DisplaySink
SINK
for w, h in SIZES:
    img = np.full((h, w, 3), 90, np.uint8)
    inst = Instances.from_crops((h, w), [1], [0.9], [(20, 20)], [np.ones((30, 40), bool)])
    rect = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until Qt has laid the window out
        sink.send(Result(Frame(0, img, time.monotonic_ns(), time.time()), inst))
        now = cv2.getWindowImageRect("edgeseg-test")
        if now == rect and now[2] > 0:
            break
        rect = now
        time.sleep(0.05)
    print("shown", rect[2], rect[3])
sink.close()
"""
PLAIN_SINK = 'sink = DisplaySink("edgeseg-test")'


def shown_at(sink: str, sizes: list[tuple[int, int]]) -> str:
    """A script that sends frames of each of ``sizes`` (width, height) in turn to the window made by ``sink``
    (lines that set ``sink``) and prints the size each is shown at once Qt has laid the window out."""
    return _SHOWN_AT.replace("SINK", sink).replace("SIZES", repr(sizes))


def test_the_window_shows_the_frame_at_its_own_size(xvfb: str) -> None:
    # the window was sized to the frame, but Qt's toolbar and status bar took 62 pixels of its height: a
    # 320x240 frame was shown shrunk to 237x178, its labels blurred
    done = run_python(shown_at(PLAIN_SINK, [(320, 240)]), {"DISPLAY": xvfb})
    assert done.returncode == 0, done.stderr
    assert "shown 320 240" in done.stdout


def test_a_frame_of_another_size_resizes_the_window_to_show_it_at_its_own_size(xvfb: str) -> None:
    # the window was sized for the first frame only: a camera back at another resolution was shown at the
    # old one's size (400x300 at 320x240, 240x180 blown up to 320x240)
    done = run_python(shown_at(PLAIN_SINK, [(320, 240), (400, 300), (240, 180)]), {"DISPLAY": xvfb})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["shown 320 240", "shown 400 300", "shown 240 180"]
