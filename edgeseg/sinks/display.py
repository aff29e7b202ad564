"""``display`` sink: annotated frames in an OpenCV window.

opencv-python's Qt build aborts the whole process (SIGABRT, uncatchable) when a HighGUI call finds no usable
display, so :func:`display_problem` checks the environment (and that the X server answers) before any HighGUI
call is made.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeseg.annotate import PALETTE
from edgeseg.errors import ConfigError
from edgeseg.fields import meta
from edgeseg.frame import Result
from edgeseg.sinks.base import SinkContext, SinkReport, SinkSpec
from edgeseg.sinks.tune import TunePanel
from edgeseg.splitview import render_split_view
from edgeseg.validate import FieldError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DisplaySinkConfig:
    """Window output."""

    enabled: bool = field(
        default=False, metadata=meta("Show annotated frames in a window (needs a display).")
    )
    window: str = field(default="edgeseg", metadata=meta("Window title.", pattern=r"\S"))
    tune: bool = field(
        default=False,
        metadata=meta(
            "Trackbars for the live thresholds (keys: n, [ ], s save, r reset) and the split's view."
        ),
    )

    def __post_init__(self) -> None:
        # OpenCV's Qt backend makes the window from the title's bytes as UTF-8 but finds a trackbar's window
        # by them as Latin-1 (window_QT.cpp, icvFindTrackBarByName): with "Prüfstand" every frame failed
        # with "NULL window handler" and the window never showed one
        if self.tune and not self.window.isascii():
            raise FieldError("window", "must be ASCII with tune (OpenCV's trackbars miss it)", self.window)


QUIT_KEYS = (ord("q"), 27)  # q, Esc, as cv2.waitKeyEx returns them


def _x_server_answers(display: str) -> bool:
    """Whether the X server named by ``display`` (``:0``, ``host:1.0``, ``unix:2``) accepts connections."""
    host, _, rest = display.rpartition(":")
    try:
        number = int(rest.split(".")[0])
    except ValueError:
        return False
    try:
        if host in ("", "unix"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(f"/tmp/.X11-unix/X{number}")
        else:
            with socket.create_connection((host, 6000 + number), timeout=1.0):
                pass
    except OSError:
        return False
    return True


def _qt_platforms() -> set[str] | None:
    """The Qt platform plugins bundled with this OpenCV build (``None`` when it is not a Qt build)."""
    plugins = Path(cv2.__file__).parent / "qt" / "plugins" / "platforms"
    if not plugins.is_dir():
        return None
    return {p.name for p in plugins.iterdir()}


SYSTEM_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype", "/usr/share/fonts")


def _qt_fonts() -> None:
    """Point Qt at the system's fonts when OpenCV's own folder does not exist.

    opencv-python's Qt build sets ``QT_QPA_FONTDIR`` to ``cv2/qt/fonts`` at import but ships no fonts there,
    so every text Qt draws (the trackbars' names) comes out blank; Qt reads the variable when the first
    window opens, after this.
    """
    current = os.environ.get("QT_QPA_FONTDIR")
    if current is None or Path(current).is_dir():
        return
    found = next((d for d in SYSTEM_FONT_DIRS if Path(d).is_dir()), None)
    if found is not None:
        os.environ["QT_QPA_FONTDIR"] = found


def _qt_style() -> None:
    """Draw the trackbars in Qt's ``windows`` style unless ``QT_STYLE_OVERRIDE`` names one.

    The default, Fusion, caches what it draws in Qt's global pixmap cache, made (with its timer) on the
    sink's thread; the process's exit handlers destroy it on the main thread, and every run with trackbars
    ended with "QObject::killTimer: Timers cannot be stopped from another thread" and a ``~QObject`` line of
    the same. The ``windows`` style caches nothing. Qt reads the variable when the first window opens.
    """
    os.environ.setdefault("QT_STYLE_OVERRIDE", "windows")


def display_problem(env: dict[str, str] | None = None) -> str | None:
    """Why no window can be opened here, or ``None`` when one can."""
    env = dict(os.environ) if env is None else env
    x11, wayland = env.get("DISPLAY", ""), env.get("WAYLAND_DISPLAY", "")
    if x11:
        if _x_server_answers(x11):
            return None
        return f"the X server DISPLAY={x11} does not answer"
    if wayland:
        platforms = _qt_platforms()
        if platforms is None or any("wayland" in p for p in platforms):
            return None
        return f"WAYLAND_DISPLAY={wayland} is set but this OpenCV build only draws through X11: set DISPLAY"
    return "no display: DISPLAY and WAYLAND_DISPLAY are unset"


class DisplaySink:
    """Shows each result, annotated, in window ``window``; ``q``/Esc or closing the window stops the pipeline.

    With ``tune`` (and a pipeline with live settings), the window gets a trackbar per live threshold
    (:mod:`edgeseg.sinks.tune`) and, for results that carry one, the view of the semantic split beside the
    frame. All HighGUI calls happen on the thread that calls :meth:`send` and :meth:`close` (the sink's
    thread). Raises :class:`ConfigError` at construction when there is no usable display.
    """

    def __init__(self, window: str = "edgeseg", ctx: SinkContext | None = None, tune: bool = False) -> None:
        problem = display_problem()
        if problem is not None:
            # --tune refuses --no-display: under it the way out is a display, or the web page's sliders
            hint = (
                "tune mode is the display window: run it where there is one, or tune with --web"
                if tune
                else "run with --no-display"
            )
            raise ConfigError(f"sinks.display: {problem} ({hint})")
        _qt_fonts()
        self.window = window
        self.ctx = SinkContext() if ctx is None else ctx
        control = self.ctx.control
        self.panel = TunePanel(window, control) if tune and control is not None else None
        if self.panel is not None:
            _qt_style()
        self._open = False
        self._sized_for = (0, 0)  # the frame size (width, height) the window was last sized for
        self._x11 = os.environ.get("DISPLAY", "")
        self._server_lost = False
        self._closed = False  # the user closed the window: no HighGUI call would do anything but reopen it

    def _server_gone(self) -> bool:
        """Whether the X server has stopped answering (then no HighGUI call is made again).

        Checked before every HighGUI call: on a broken X connection Qt's xcb plugin calls ``exit(1)`` at the
        next event it processes, which ended the whole process (status 1, no summary, an MP4 being written
        left unreadable); a connect to its socket costs far less than drawing the frame.
        """
        if not self._server_lost and self._x11 and not _x_server_answers(self._x11):
            self._server_lost = True
            log.warning("display: the X server DISPLAY=%s stopped answering; stopping the run", self._x11)
            self.ctx.request_stop()
        return self._server_lost

    def _window_closed(self) -> bool:
        """Whether the user closed the window (its title bar's X).

        Qt's backend frees its state with its last window, and ``getWindowProperty`` then raises "NULL
        guiReceiver" (``window_QT.cpp``, ``cvGetPropVisible_QT``) rather than answer that it is not visible.
        """
        try:
            return cv2.getWindowProperty(self.window, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            return True

    def send(self, result: Result) -> None:
        if self._closed:
            return
        img = self.ctx.render(result, self.panel.lines() if self.panel is not None else ())
        if self.panel is not None and result.split_view is not None:
            # a strip under the frame: class map, relief, markers side by side
            h, w = img.shape[:2]
            strip = render_split_view(result.split_view, PALETTE, (max(1, h // 2), w))
            img = np.ascontiguousarray(np.vstack([img, strip]))
        if self._server_gone():
            return
        height, width = img.shape[:2]
        # the window is sized for its first frame, and again for a frame of another size (a camera back at
        # another resolution was shown at the old one's size)
        resize = (width, height) != self._sized_for
        if not self._open:
            # GUI_NORMAL: Qt's toolbar and status bar took 62 pixels of the window sized for the frame below,
            # which was then shown shrunk (a 320x240 frame at 237x178)
            cv2.namedWindow(self.window, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
            if self.panel is not None:
                self.panel.create()
            self._open = True
        elif self.panel is not None:
            self.panel.sync()
        if resize:
            cv2.resizeWindow(self.window, width, height)
            self._sized_for = (width, height)
        cv2.imshow(self.window, img)
        # the whole code: waitKey keeps its low byte, which made keys that are not q or Esc quit (the Search
        # key, keysym 0x1008FF1B, as Esc) or save the tuning (Reload, 0x1008FF73, as s)
        key = cv2.waitKeyEx(1)
        if resize and self.panel is not None:
            self._make_room_for_trackbars(width, height)
        if self.panel is not None and self.panel.key(key):
            return
        if key in QUIT_KEYS:
            self.ctx.request_stop()
        elif self._window_closed():
            # the frames still coming while the pipeline stops would open a new window
            self._open, self._closed = False, True
            log.info("display: the window was closed; stopping the run")
            self.ctx.request_stop()

    def _make_room_for_trackbars(self, width: int, height: int) -> None:
        """Grow the window by the height its trackbars take. Qt lays them out inside the window sized for the
        frame, which was then shown shrunk to what was left (a 320x240 frame at 186x140 under four trackbars);
        the image's rect, known once the window has been laid out (the first ``waitKey``), says how much."""
        shown = cv2.getWindowImageRect(self.window)[3]
        if 0 < shown < height:
            cv2.resizeWindow(self.window, width, 2 * height - shown)

    def close(self) -> None:
        if self._open and not self._server_gone():
            cv2.destroyWindow(self.window)
            cv2.waitKey(1)
            self._open = False

    def describe(self) -> str:
        return f"window {self.window!r}"

    def report(self) -> SinkReport:
        return SinkReport(())


def create(section: DisplaySinkConfig, ctx: SinkContext) -> DisplaySink | None:
    if not section.enabled:
        return None
    return DisplaySink(section.window, ctx, section.tune)


SPEC = SinkSpec("display", DisplaySinkConfig, create, "Window output.")
