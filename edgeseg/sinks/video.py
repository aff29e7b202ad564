"""``video`` sink: annotated frames into a video file (``cv2.VideoWriter``), finalized on close."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeseg.errors import ConfigError
from edgeseg.fields import meta
from edgeseg.frame import Result
from edgeseg.sinks.base import SinkContext, SinkSpec, check_output_path

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0


@dataclass(frozen=True)
class VideoSinkConfig:
    """Annotated video output."""

    path: Path | None = field(default=None, metadata=meta("Write an annotated video here (null: off)."))
    fps: float | None = field(default=None, metadata=meta("Frame rate (null: the source's, else 25).", gt=0))
    codec: str = field(
        default="mp4v", metadata=meta("FourCC of the video codec.", pattern=r"^[A-Za-z0-9 ]{4}$")
    )


class VideoSink:
    """Writes each result, annotated, as one video frame.

    The writer opens on the first result (its size fixes the video's size; later frames of another size,
    e.g. after a stream reconnect, are resized to it). The frame rate is ``fps``, else the source's, else 25.
    """

    def __init__(
        self, path: Path, fps: float | None = None, codec: str = "mp4v", ctx: SinkContext | None = None
    ) -> None:
        self.path = check_output_path(path, "sinks.video.path")
        if len(codec) != 4:
            raise ConfigError(
                f"sinks.video.codec: must be a four-character code such as 'mp4v', got {codec!r}"
            )
        if fps is not None and not fps > 0:
            raise ConfigError(f"sinks.video.fps: must be > 0, got {fps}")
        self.fps = fps
        self.codec = codec
        self.ctx = SinkContext() if ctx is None else ctx
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] = (0, 0)
        self.frames_written = 0

    def send(self, result: Result) -> None:
        img = self.ctx.render(result)
        if self._writer is None:
            self._open(img.shape[1], img.shape[0])
        assert self._writer is not None
        if (img.shape[1], img.shape[0]) != self._size:
            img = np.ascontiguousarray(cv2.resize(img, self._size, interpolation=cv2.INTER_AREA))
        self._writer.write(img)
        self.frames_written += 1

    def _open(self, width: int, height: int) -> None:
        fps = self.fps or self.ctx.source_fps() or DEFAULT_FPS
        writer = cv2.VideoWriter(
            str(self.path), cv2.VideoWriter.fourcc(*self.codec), float(fps), (width, height)
        )
        if not writer.isOpened():
            raise ConfigError(f"sinks.video: OpenCV cannot write {self.path} with codec {self.codec!r}")
        self._writer, self._size = writer, (width, height)
        log.info("writing %dx%d video at %.2f fps to %s", width, height, fps, self.path)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def create(section: VideoSinkConfig, ctx: SinkContext) -> VideoSink | None:
    if section.path is None:
        return None
    return VideoSink(section.path, section.fps, section.codec, ctx)


SPEC = SinkSpec("video", VideoSinkConfig, create, "Annotated video output.")
