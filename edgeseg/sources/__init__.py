"""Frame sources chosen by URI: one small class per kind behind the :class:`Source` protocol.

URIs (``SourceConfig.uri``):

==========================================  =========  ==================================================
``synthetic:parts[?seed=&width=&height=&fps=]``  live   the demo conveyor scene, with ground truth
``video.mp4`` / ``file:///abs/video.mp4``   offline    every frame of a video file
``frames/`` / ``'frames/*.png'``            offline    every image of a folder or glob, in natural order
``v4l2:N`` / ``/dev/videoN``                live       a USB / V4L2 camera
``rtsp://…`` / ``http(s)://…``              live       a network stream (FFmpeg)
``gst:<pipeline ending in appsink>``        live       a GStreamer pipeline (Jetson CSI: nvarguscamerasrc)
``picamera2:[N][?network=net.rpk&fps=]``    live       Raspberry Pi camera, IMX500 on-sensor network
==========================================  =========  ==================================================

*Live* sources deliver frames at the sensor's pace whether or not anyone keeps up (the pipeline drops the
oldest when busy) and reconnect with exponential backoff when the device or stream drops, saying so in the log
(throttled) and in ``stats.state``; after ``source.reconnect_timeout_s`` without a frame ``read()`` raises
:class:`~edgeseg.errors.SourceError`. *Offline* sources deliver every frame exactly once, as fast as they are
consumed (or paced at ``fps``), say how many there are in ``frames_total``, and count what they could not
deliver whole (``stats.lost``).

:func:`make_source` builds a source without touching the device; whoever owns it calls ``open()`` once.
:func:`open_source` does both, for one-shot callers.

Threading: ``read()`` is called by one thread; ``close()`` may be called from any thread at any time, also
while ``read()`` blocks on a connection that never comes. After ``close()`` the next (or current) ``read()``
returns ``None`` within one device read timeout.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.backoff import backoff_delays
from edgeseg.errors import SourceError
from edgeseg.frame import Frame
from edgeseg.sources.spec import MIN_FPS, SourceConfig

log = logging.getLogger("edgeseg.sources")

URI_FORMS = (
    "synthetic:parts[?seed=N&width=W&height=H&fps=F], a video file, an image folder or glob, "
    "v4l2:N or /dev/videoN, rtsp://..., http(s)://..., gst:<pipeline ! appsink>, "
    "picamera2:[N][?network=net.rpk]"
)


@dataclass(frozen=True)
class SourceStats:
    """What a source has done so far (a snapshot; safe to read from any thread).

    Attributes:
        frames: frames delivered by ``read()``.
        skipped: frames the source could not decode and skipped (corrupt video frames, unreadable images).
        damaged: frames delivered although only partly decoded (a truncated JPEG, the rest filled in).
        expected: frames a video file's header announces (None: unknown, live, or an image sequence).
        missing: frames the header announces that the file turned out not to have (a truncated or damaged
            file; known once it has ended).
        reconnects: connection attempts after the first one (live sources), failed or not.
        attempt: connection attempts since the last frame (live sources; 0 while frames flow).
        last_error: why the last connection attempt or read failed (live sources), None before any failure.
        state: one human line: ``"running"``, ``"connecting (attempt 3)"``, ``"waiting for source (attempt 3,
            last error: cannot open /dev/video0)"``, ``"uploading network firmware 40%"``, ``"ended"``,
            ``"closed"``.
        fps: the nominal frame rate once known: a video file's own rate (also when ``fps`` paces it), the
            configured pace, a live device's or stream's own rate, else None (an output video's rate).
        waiting: the source works but has no frame for the pipeline, by design and for a while: between
            connection attempts, or while a sensor loads its network. The watchdog is fed meanwhile, as long
            as no device call hangs (``state`` says what it waits for).
        held_back: frames a ready live device gave without what the pipeline needs, not passed on (an AI
            Camera's frames without its network's result, which picamera2's own demos also pass over). Not
            lost: as with a live camera's frames dropped while a stage is busy, the next frame follows.
    """

    frames: int = 0
    skipped: int = 0
    damaged: int = 0
    expected: int | None = None
    missing: int = 0
    reconnects: int = 0
    attempt: int = 0
    last_error: str | None = None
    state: str = "new"
    fps: float | None = None
    waiting: bool = False
    held_back: int = 0

    @property
    def lost(self) -> int:
        """Input frames that did not reach the pipeline whole: skipped + damaged + missing."""
        return self.skipped + self.damaged + self.missing


@runtime_checkable
class Source(Protocol):
    """A stream of :class:`~edgeseg.frame.Frame` objects.

    Attributes:
        uri: the URI it was opened from (for messages).
        live: True for cameras and streams (frames come at the sensor's pace; drop when busy), False for
            files (every frame is delivered; block when busy).
        frames_total: number of frames an offline source will deliver (progress/ETA; a video header's count
            can overstate it), ``None`` for live or looping sources.
    """

    uri: str
    live: bool

    @property
    def frames_total(self) -> int | None: ...

    @property
    def stats(self) -> SourceStats: ...

    def open(self) -> None:
        """Acquire the device or file; raises :class:`~edgeseg.errors.SourceError` if it can never work."""

    def read(self) -> Frame | None:
        """The next frame, blocking until one is there; ``None`` at the end or after ``close()``.

        Raises:
            SourceError: the source failed for good: a file with no decodable frame at all, a live source
                without a frame for ``source.reconnect_timeout_s``.
        """

    def close(self) -> None:
        """Release everything; idempotent, callable from any thread, also before ``open()`` finished."""


@dataclass(frozen=True)
class ParsedUri:
    """A source URI split into its parts.

    Attributes:
        scheme: registry key (``synthetic``, ``file``, ``v4l2``, ``rtsp``, ``http``, ``https``, ``gst``,
            ``picamera2``).
        target: what follows the scheme: scene name, path or glob, device index or path, full stream URL,
            GStreamer pipeline, camera number.
        options: ``?key=value`` options (only for ``synthetic:`` and ``picamera2:``; stream URLs and paths
            keep their ``?``).
    """

    uri: str
    scheme: str
    target: str
    options: Mapping[str, str]


_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+):(.*)$", re.DOTALL)
_WITH_OPTIONS = frozenset({"synthetic", "picamera2"})
_WHOLE_URL = frozenset({"rtsp", "rtsps", "http", "https"})


def parse_uri(uri: str, exists: Callable[[str], bool] = os.path.exists) -> ParsedUri:
    """Split a source URI (see the module docstring); SourceError names the accepted forms.

    ``exists``: whether a ``file:`` URI's path, as written, is a file (then it is not percent-decoded); the
    loader asks it of the folder a relative path follows, the pipeline file's."""
    uri = uri.strip()
    if not uri:
        raise SourceError(f"empty source URI {uri!r}: use {URI_FORMS}")
    m = _SCHEME.match(uri)
    # os.path.exists, not Path.exists: a name longer than the file system takes (a long gst: pipeline) is
    # no file, where Path.exists raised "File name too long"
    if m is None or os.path.exists(uri):
        if uri.startswith("/dev/video"):
            return ParsedUri(uri, "v4l2", uri, {})
        return ParsedUri(uri, "file", uri, {})
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme not in SOURCES:
        raise SourceError(f"unknown source URI {uri!r}: use {URI_FORMS}")
    if scheme in _WHOLE_URL:
        _check_port(uri)
        return ParsedUri(uri, scheme, uri, {})
    if scheme == "file":
        path = rest[2:] if rest.startswith("//") else rest
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
        # A file URI as a file manager copies it is percent-encoded (a space is %20); a path that exists as
        # written (a file whose name holds a '%') is taken as it is.
        if "%" in path and not exists(path):
            path = unquote(path)
        return ParsedUri(uri, scheme, path, {})
    options: dict[str, str] = {}
    if scheme in _WITH_OPTIONS and "?" in rest:
        rest, query = rest.split("?", 1)
        try:
            options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True))
        except ValueError:
            raise SourceError(
                f"source URI {uri!r}: cannot parse options {query!r} (use ?key=value&key=value)"
            ) from None
    return ParsedUri(uri, scheme, rest, options)


_PORT = re.compile(r":(\d+)$")


def _check_port(url: str) -> None:
    """Refuse a stream URL whose port no socket has (``rtsp://cam:99999/x``, ``:0``): it was retried for ever.
    Read from the host part alone, after the user info's last '@' (a password may hold digits after a ':')."""
    rest = url.partition("://")[2]
    host = re.split(r"[/?#]", rest.rpartition("@")[2], maxsplit=1)[0]
    m = _PORT.search(host)
    if m is not None and not 1 <= int(m.group(1)) <= 65535:
        raise SourceError(f"source URI {redact_url(url)!r}: port {m.group(1)} is out of range (1-65535)")


_RAW_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^@/?#:]*):(?!\d+[/?]).*@(?P<rest>[^@/?#]+.*)$",
    re.DOTALL,
)


def redact_url(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (``rtsp://admin:***@cam/stream``), for
    log lines, errors and records; anything that is not such a URL comes back unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        # A raw '#', '/' or '?' in the password (which FFmpeg cannot connect with either: it wants %23, %2F,
        # %3F) ends the netloc early, so urlsplit sees no password; the user info still runs to the last '@'
        # before the host. (Not after a host's port: ``http://cam:8080/v?user=a@b`` holds no password.)
        m = _RAW_USERINFO.match(url)
        return url if m is None else f"{m['scheme']}{m['user']}:***@{m['rest']}"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def check_options(parsed: ParsedUri, allowed: tuple[str, ...]) -> None:
    """Raise :class:`SourceError` when the URI carries an option its source does not know."""
    for key in parsed.options:
        if key not in allowed:
            raise SourceError(
                f"source URI {parsed.uri!r}: unknown option {key!r} (allowed: {', '.join(allowed) or 'none'})"
            )


def option_int(
    parsed: ParsedUri, key: str, default: int, minimum: int = 1, maximum: int | None = None
) -> int:
    """Option ``key`` of the URI as an integer in ``[minimum, maximum]``, or ``default`` when absent."""
    raw = parsed.options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise SourceError(
            f"source URI {parsed.uri!r}: option {key} must be an integer {allowed} (got {raw!r})"
        )
    return value


def option_fps(parsed: ParsedUri, default: float | None) -> float | None:
    """Option ``fps`` of the URI as a frame rate (as ``source.fps`` takes), or ``default`` when absent."""
    raw = parsed.options.get("fps")
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not MIN_FPS <= value < float("inf"):  # 1e-300 was taken: the pacer's OverflowError
        raise SourceError(
            f"source URI {parsed.uri!r}: option fps must be a number >= {MIN_FPS:g} (got {raw!r})"
        )
    return value


def to_bgr(image: NDArray[Any]) -> NDArray[np.uint8]:
    """A decoded image as ``(H, W, 3)`` uint8 BGR (grey and BGRA converted; no copy when already so)."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.asarray(image, dtype=np.uint8)


class Pacer:
    """Delivers at most one frame per tick of a ``fps`` clock (``fps`` None: no pacing), like a camera.

    A consumer that falls behind gets a frame at once (the camera has one ready) and then waits for the next
    tick of the original clock: it is never handed a catch-up burst. Waits end early when ``stop`` is set.
    ``tick`` numbers the clock tick of the frame just handed out (0 for the first; ticks a consumer fell
    behind by are skipped, as a camera's sequence number skips the frames nobody read); unpaced, it counts
    the frames. ``now_ns`` is the ``time.monotonic_ns()`` the tick was chosen at: the frame's capture time,
    which lies in its tick's period (a time read later, after a preemption, may lie in the next one).
    """

    def __init__(self, fps: float | None, stop: threading.Event) -> None:
        self._period_ns = round(1e9 / fps) if fps else 0
        self._stop = stop
        self._start_ns = 0
        self._next_ns = 0  # next tick; 0 = clock not started
        self.tick = -1
        self.now_ns = 0

    def wait(self) -> bool:
        """Sleep until the next tick; False when stopped meanwhile."""
        now = time.monotonic_ns()
        if not self._period_ns:
            self.tick += 1
            self.now_ns = now
            return not self._stop.is_set()
        if self._next_ns > now:
            if self._stop.wait((self._next_ns - now) / 1e9):
                return False
            now = self._next_ns
        if not self._next_ns:
            self._start_ns, self._next_ns = now, now + self._period_ns
        else:
            self._next_ns += self._period_ns * (1 + (now - self._next_ns) // self._period_ns)
        self.tick = (self._next_ns - self._start_ns) // self._period_ns - 1
        self.now_ns = now
        return not self._stop.is_set()


def make_source(source: str | SourceConfig) -> Source:
    """Build the source for a URI or a :class:`SourceConfig` without opening it (touches no device or file).

    URI options (``synthetic:parts?fps=10``) take precedence over the config's fields. The caller calls
    ``open()`` once, and ``close()`` in any case.

    Raises:
        SourceError: unknown URI form, unknown or malformed option.
    """
    config = SourceConfig(uri=source) if isinstance(source, str) else source
    parsed = parse_uri(config.uri)
    return SOURCES[parsed.scheme](parsed, config)


def open_source(source: str | SourceConfig) -> Source:
    """:func:`make_source`, then ``open()`` (closed again if that fails): for one-shot callers and tests.

    Raises:
        SourceError: what :func:`make_source` raises, or a missing file or a device that can never work.
    """
    src = make_source(source)
    try:
        src.open()
    except BaseException:
        src.close()
        raise
    return src


def list_cameras() -> list[str]:
    """This machine's V4L2 devices with their driver names, e.g. ``["/dev/video0 (HD Pro Webcam C920)"]``."""
    cameras = []
    for device in sorted(glob.glob("/dev/video*"), key=natural_key):
        try:
            name = Path("/sys/class/video4linux", Path(device).name, "name").read_text().strip()
        except OSError:
            name = ""
        cameras.append(f"{device} ({name})" if name else device)
    return cameras


def natural_key(path: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``frame2.png`` before ``frame10.png``."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", path))


SourceFactory = Callable[[ParsedUri, SourceConfig], Source]


def _synthetic(parsed: ParsedUri, config: SourceConfig) -> Source:
    from edgeseg.sources.synthetic import SyntheticSource

    return SyntheticSource.from_uri(parsed, config)


def _files(parsed: ParsedUri, config: SourceConfig) -> Source:
    from edgeseg.sources.files import file_source

    return file_source(parsed, config)


def _opencv_live(parsed: ParsedUri, config: SourceConfig) -> Source:
    from edgeseg.sources.opencv_live import OpenCVLiveSource

    return OpenCVLiveSource.from_uri(parsed, config)


def _picamera2(parsed: ParsedUri, config: SourceConfig) -> Source:
    from edgeseg.sources.picamera2 import Picamera2Source

    return Picamera2Source.from_uri(parsed, config)


# Keyed by URI scheme; paths without a scheme are "file", /dev/video* paths are "v4l2". Modules are imported
# on first use so that an optional source's imports cost nothing to the others.
SOURCES: dict[str, SourceFactory] = {
    "synthetic": _synthetic,
    "file": _files,
    "v4l2": _opencv_live,
    "rtsp": _opencv_live,
    "rtsps": _opencv_live,
    "http": _opencv_live,
    "https": _opencv_live,
    "gst": _opencv_live,
    "picamera2": _picamera2,
}

__all__ = [
    "SOURCES",
    "URI_FORMS",
    "Pacer",
    "ParsedUri",
    "Source",
    "SourceConfig",
    "SourceStats",
    "backoff_delays",
    "list_cameras",
    "make_source",
    "open_source",
    "parse_uri",
    "redact_url",
]
