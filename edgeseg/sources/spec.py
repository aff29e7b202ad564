"""``SourceConfig``: the ``source`` section of a pipeline, owned by the sources package.

It lives here, not in :mod:`edgeseg.config`, so that the sources never import the config loader (the loader
imports the sources to check a URI); :mod:`edgeseg.config` re-exports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from edgeseg.fields import meta as _m
from edgeseg.geometry import MAX_SIDE as MAX_SIDE  # the sources' limit, kept with the geometry for instances
from edgeseg.geometry import Roi
from edgeseg.validate import FieldError

_URI_DOC = (
    "Source URI: synthetic:parts, a video file, an image folder or glob, v4l2:N, /dev/videoN, rtsp://..., "
    "http(s)://..., gst:<pipeline>, picamera2:[N]"
)
# Without a service manager to restart it, a process whose camera never comes back should end and say so.
DEFAULT_RECONNECT_TIMEOUT_S = 60.0


# the longest reconnect delay: a wait past threading.TIMEOUT_MAX (292 years) raised OverflowError, and the
# source retried at once, over and over, then failed with "timestamp out of range for platform time_t"
MAX_DELAY_S = 86400.0

# the longest wait of one open or read of a stream or V4L2 camera: a stalled one is noticed this fast. A
# longer one (a slow RTSP camera over Wi-Fi) stays under half the unit's WatchdogSec=60s: a device call that
# has not returned within the watchdog interval counts as a stall, and systemd restarts the service
STREAM_TIMEOUT_S = 5.0
MAX_STREAM_TIMEOUT_S = 30.0

# a floor, not > 0: a period of 1e9/1e-300 ns is infinite, and one over threading.TIMEOUT_MAX (292 years)
# cannot be waited for (OverflowError)
MIN_FPS = 1e-6


@dataclass(frozen=True)
class SourceConfig:
    """Where frames come from (see :mod:`edgeseg.sources` for the URI forms)."""

    uri: str = field(default="synthetic:parts", metadata=_m(_URI_DOC, pattern=r"\S"))
    roi: Roi | None = field(
        default=None,
        metadata=_m(
            "Region to process, normalized [left, top, width, height] of the image; with an AI Camera "
            "network, of the full sensor (the crop the sensor runs the network on, cut to the image).",
            live=True,
        ),
    )
    fps: float | None = field(
        default=None,
        metadata=_m(
            "Frame rate: asked of cameras, paces synthetic/files (at least 1e-6: a frame in 11 days).",
            ge=MIN_FPS,
        ),
    )
    loop: bool = field(
        default=False, metadata=_m("Files: start again at the end (endless, no frames_total).")
    )
    width: int | None = field(
        default=None,
        metadata=_m(
            f"Frame width: camera request, synthetic size, file resize (at most {MAX_SIDE}).",
            ge=1,
            le=MAX_SIDE,
        ),
    )
    height: int | None = field(default=None, metadata=_m("Frame height (set with width).", ge=1, le=MAX_SIDE))
    reconnect_initial_s: float = field(
        default=0.5,
        metadata=_m("Live: first reconnect delay (doubles each try; at most a day).", gt=0, le=MAX_DELAY_S),
    )
    reconnect_max_s: float = field(
        default=10.0,
        metadata=_m("Live sources: longest reconnect delay (at most a day).", gt=0, le=MAX_DELAY_S),
    )
    reconnect_timeout_s: float | None = field(
        default=None,
        metadata=_m(
            "Live: give up after this many seconds without a frame (0: never; null: never under systemd, "
            "else 60).",
            ge=0,
        ),
    )
    stream_timeout_s: float = field(
        default=STREAM_TIMEOUT_S,
        metadata=_m(
            "Streams and V4L2 cameras: longest wait of one open or read before reconnecting (at most "
            f"{MAX_STREAM_TIMEOUT_S:g}, half the service's watchdog interval).",
            gt=0,
            le=MAX_STREAM_TIMEOUT_S,
        ),
    )
    imx500_network: str | None = field(
        default=None, metadata=_m("picamera2: IMX500 network (.rpk) for the sensor.")
    )

    def __post_init__(self) -> None:
        if (self.width is None) != (self.height is None):
            missing, given = ("height", "width") if self.height is None else ("width", "height")
            raise FieldError(missing, f"required when source.{given} is set (give both or neither)")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise FieldError(
                "reconnect_max_s", f"must be >= reconnect_initial_s ({self.reconnect_initial_s:g})"
            )

    def give_up_after_s(self) -> float | None:
        """Seconds without a frame after which a live source fails for good; None = it never gives up.

        ``reconnect_timeout_s`` null means: never when a service manager runs us (``NOTIFY_SOCKET`` set,
        systemd restarts and reports), else :data:`DEFAULT_RECONNECT_TIMEOUT_S`.
        """
        if self.reconnect_timeout_s is None:
            return None if under_service_manager() else DEFAULT_RECONNECT_TIMEOUT_S
        return self.reconnect_timeout_s or None


def under_service_manager() -> bool:
    """Whether systemd (or another ``sd_notify`` manager) runs this process: ``NOTIFY_SOCKET`` is set."""
    return bool(os.environ.get("NOTIFY_SOCKET"))
