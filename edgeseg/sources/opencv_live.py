"""Live sources read through OpenCV: V4L2 cameras, RTSP/HTTP streams and GStreamer pipelines.

* ``v4l2:N`` / ``/dev/videoN``: a USB camera through V4L2; ``width``, ``height`` and ``fps`` are asked of
  the driver (the camera may pick the nearest mode it has; a different size is logged once and delivered).
  A device that does not exist is an error at ``open()`` naming the cameras there are, except under systemd
  (``NOTIFY_SOCKET`` set), where it is waited for: a USB camera may enumerate after the service starts.
* ``rtsp://…``, ``http(s)://…``: FFmpeg with open and read timeouts, so a dead stream is noticed in seconds
  (OpenCV's default read timeout is 30 s) and reconnected.
* ``gst:<pipeline>``: a GStreamer pipeline that ends in ``appsink`` delivering BGR, e.g. the Jetson CSI
  camera: ``gst:nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 !
  nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true
  max-buffers=1``. Needs an OpenCV built with GStreamer (Jetson's system ``python3-opencv``; the pip wheels
  have none). Size and rate are set in the pipeline's caps.

Every device call has a bounded wait. FFmpeg: ``source.stream_timeout_s`` (default 5 s) as
``CAP_PROP_OPEN_TIMEOUT_MSEC`` / ``CAP_PROP_READ_TIMEOUT_MSEC`` (OpenCV's defaults: 30 s). V4L2: OpenCV's
backend ignores those; it opens the device non-blocking and a read waits in ``select()`` for at most
``OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT`` seconds (default 10, read once per process at the first wait), then
fails, and an unplugged camera fails at once (ENODEV): we set that variable to ``stream_timeout_s`` (unless
the user set it) before the first V4L2 read. GStreamer: the backend's own 30 s open and read timeouts
(setting the read timeout on an open capture stops its pipeline in OpenCV 4.x, so we leave it).

Capture time is stamped when ``VideoCapture.read`` returns (monotonic ns): the closest the OpenCV API gets
to the sensor.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.metadata
import logging
import math
import os
import sys
import time
from typing import TYPE_CHECKING

import cv2

from edgeseg.errors import SourceError
from edgeseg.sources import ParsedUri, list_cameras, redact_url, to_bgr
from edgeseg.sources.live import Grab, LiveSource
from edgeseg.sources.spec import STREAM_TIMEOUT_S, under_service_manager

if TYPE_CHECKING:
    from edgeseg.sources.spec import SourceConfig

log = logging.getLogger("edgeseg.sources")

MIN_FPS, MAX_FPS = 1.0, 240.0  # a device's or stream's own rate outside this is no frame rate (stats.fps)


@functools.cache
def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV build can open ``gst:`` pipelines."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return line.split(":", 1)[1].strip().upper().startswith("YES")
    return False


def gstreamer_missing() -> str:
    """Why this OpenCV cannot open ``gst:`` pipelines and what to do, naming the cv2 imported.

    A distribution's OpenCV (Debian's and JetPack's ``python3-opencv``, built with GStreamer) carries no pip
    metadata, so ``pip install`` in a venv made with ``--system-site-packages`` puts pip's opencv-python
    (without GStreamer) into the venv, ahead of it on ``sys.path``: then the fix is to uninstall pip's.
    """
    imported = cv2.__spec__.origin if cv2.__spec__ else cv2.__file__
    said = f"the OpenCV imported ({cv2.__version__}, {imported}) has no GStreamer support"
    for entry in sys.path:
        spec = importlib.machinery.PathFinder.find_spec("cv2", [entry])
        if spec is not None and spec.origin not in (None, imported):
            dists = " ".join(importlib.metadata.packages_distributions().get("cv2", ["opencv-python"]))
            return f"{said} and hides the one at {spec.origin}: pip uninstall {dists} (in this environment)"
    return (
        f"{said} (pip's opencv-python is built without it): use a system OpenCV built with it (Jetson: "
        "apt install python3-opencv, in a venv made with --system-site-packages)"
    )


def v4l2_target(parsed: ParsedUri) -> int | str:
    """A ``v4l2:`` URI's device: its number, or its path under /dev (SourceError for anything else)."""
    if parsed.target.isdigit():
        return int(parsed.target)
    if not parsed.target.startswith("/dev/"):
        raise SourceError(
            f"source URI {parsed.uri!r}: v4l2 needs a device number or path (v4l2:0, /dev/video0)"
        )
    return parsed.target.strip()


class OpenCVLiveSource(LiveSource):
    """A camera, stream or pipeline opened with ``cv2.VideoCapture(target, api)``; frames ``(H, W, 3)`` BGR.

    Args:
        uri: for messages.
        target: device index, device path, stream URL, GStreamer pipeline, or any path OpenCV opens (a
            video file read as if it were a stream is how the reconnect logic is tested).
        api: ``cv2.CAP_V4L2``, ``cv2.CAP_FFMPEG``, ``cv2.CAP_GSTREAMER`` or ``cv2.CAP_ANY``.
        width, height, fps: asked of V4L2 devices; ignored (with a warning) elsewhere.
        reconnect_initial_s, reconnect_max_s: backoff between connection attempts.
        give_up_after_s: seconds without a frame after which ``read()`` raises SourceError (None: never).
        stream_timeout_s: longest wait of one open or read (see the module docstring for V4L2).
    """

    def __init__(
        self,
        uri: str,
        target: str | int,
        api: int,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        give_up_after_s: float | None = None,
        stream_timeout_s: float = STREAM_TIMEOUT_S,
    ) -> None:
        super().__init__(uri, reconnect_initial_s, reconnect_max_s, give_up_after_s)
        self.target = target
        self.api = api
        self._timeout_ms = max(1, round(stream_timeout_s * 1000))
        self._request = (width, height, fps)
        self._fps: float | None = None  # the device's or stream's own rate, once connected
        self._cap: cv2.VideoCapture | None = None
        self._size_warned = False

    @classmethod
    def from_uri(cls, parsed: ParsedUri, config: SourceConfig) -> OpenCVLiveSource:
        """Build from ``v4l2:N``, ``/dev/videoN``, ``rtsp://…``, ``http(s)://…`` or ``gst:<pipeline>``."""
        target: str | int = parsed.target.strip()
        api = {"v4l2": cv2.CAP_V4L2, "gst": cv2.CAP_GSTREAMER}.get(parsed.scheme, cv2.CAP_FFMPEG)
        if parsed.scheme == "v4l2":
            target = v4l2_target(parsed)
        elif config.width or config.height or config.fps:
            log.warning(
                "%s: width/height/fps are set by the stream or pipeline caps, not by edgeseg", parsed.uri
            )
        if parsed.scheme == "gst" and not target:
            raise SourceError(f"source URI {parsed.uri!r}: gst: needs a pipeline ending in appsink")
        v4l2 = api == cv2.CAP_V4L2
        return cls(
            redact_url(parsed.uri),  # the URI shows up in logs and in every published record
            target,
            api,
            width=config.width if v4l2 else None,
            height=config.height if v4l2 else None,
            fps=config.fps if v4l2 else None,
            reconnect_initial_s=config.reconnect_initial_s,
            reconnect_max_s=config.reconnect_max_s,
            give_up_after_s=config.give_up_after_s(),
            stream_timeout_s=config.stream_timeout_s,
        )

    @property
    def device(self) -> str | None:
        """The V4L2 device file (``/dev/video0``), None for streams and pipelines."""
        if self.api != cv2.CAP_V4L2:
            return None
        return f"/dev/video{self.target}" if isinstance(self.target, int) else self.target

    def open(self) -> None:
        if self.api == cv2.CAP_GSTREAMER and not opencv_has_gstreamer():
            raise SourceError(f"source URI {self.uri!r}: {gstreamer_missing()}")
        device = self.device
        if device is not None and not os.path.exists(device):
            cameras = ", ".join(list_cameras()) or "none"
            if not under_service_manager():
                raise SourceError(
                    f"source {self.uri!r}: no camera {device} on this machine (cameras: {cameras})"
                )
            self._announced = f"{device} does not exist"
            log.warning(
                "source %r: waiting for %s to appear (USB cameras may enumerate after boot; cameras now: %s)",
                self.uri,
                device,
                cameras,
            )
        super().open()

    def _connect(self) -> str | None:
        device = self.device
        params: list[int] = []
        if device is not None:
            if not os.path.exists(device):
                return f"{device} does not exist"
            if not os.access(device, os.R_OK | os.W_OK):
                return f"no permission to open {device} (is the user in the video group?)"
            # OpenCV reads this once per process, at the first V4L2 wait: set it before any read.
            os.environ.setdefault(
                "OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", str(math.ceil(self._timeout_ms / 1000))
            )
        elif self.api == cv2.CAP_FFMPEG:
            ms = self._timeout_ms
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(self.target, self.api, params)
        if not cap.isOpened():
            cap.release()
            return (
                f"cannot open {device} (busy, or not a capture device)"
                if device
                else f"cannot open {redact_url(str(self.target))}"
            )
        if device is not None:
            width, height, fps = self._request
            if width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if fps:
                cap.set(cv2.CAP_PROP_FPS, fps)
        reported = float(cap.get(cv2.CAP_PROP_FPS))
        # (a stream's container may say 0, or its clock's 90000: no rate to record a video at)
        self._fps = reported if MIN_FPS <= reported <= MAX_FPS else None
        self._cap = cap
        return None

    def _grab(self) -> Grab | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        t_ns, wall = time.monotonic_ns(), time.time()
        if not ok or image is None or image.size == 0:
            return None
        image = to_bgr(image)
        width, height, _ = self._request
        if not self._size_warned and width and height and (image.shape[1], image.shape[0]) != (width, height):
            self._size_warned = True
            log.warning(
                "%s: asked for %dx%d, the device delivers %dx%d", self.uri, width, height, *image.shape[1::-1]
            )
        return Grab(image=image, t_capture_ns=t_ns, wall_time=wall)

    def _nominal_fps(self) -> float | None:
        return self._fps

    def _disconnect(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
