"""``video`` sink: annotated frames into a video file (``cv2.VideoWriter``), finalized on close."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeseg.errors import ConfigError, SinkError
from edgeseg.fields import meta
from edgeseg.frame import Result
from edgeseg.sinks.base import SinkContext, SinkReport, SinkSpec, check_output_path, probe_path
from edgeseg.stderr import native_stderr_silenced

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

    The encoder is tried for real when the sink is built (a scratch file beside ``path``), so a codec this
    OpenCV lacks or a place it cannot write is an error before the first frame. The writer opens on the
    first result (its size fixes the video's size; later frames of another size, e.g. after a stream
    reconnect, are resized to it). The frame rate is ``fps``, else the source's, else 25. ``close`` reads
    the file back: frames the file does not hold (a full disk) are reported lost.
    """

    def __init__(
        self, path: Path, fps: float | None = None, codec: str = "mp4v", ctx: SinkContext | None = None
    ) -> None:
        self.path = check_output_path(path, "sinks.video.path")
        self.fps = fps
        self.codec = codec
        self.ctx = SinkContext() if ctx is None else ctx
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] = (0, 0)
        self._rate = 0.0
        self.frames_written = 0
        self.frames_in_file: int | None = None  # known after close()
        self._probe()

    def _probe(self) -> None:
        probe = probe_path(self.path)
        try:
            with native_stderr_silenced():  # FFmpeg prints its own version of the error raised below
                writer = cv2.VideoWriter(
                    str(probe), cv2.VideoWriter.fourcc(*self.codec), DEFAULT_FPS, (64, 64)
                )
                ok = writer.isOpened()
                if ok:
                    writer.write(np.zeros((64, 64, 3), np.uint8))
                writer.release()
            ok = ok and probe.is_file() and probe.stat().st_size > 0
        finally:
            probe.unlink(missing_ok=True)
        if not ok:
            raise ConfigError(
                f"sinks.video.codec: this OpenCV cannot encode {self.codec!r} into {self.path.suffix} files "
                "(mp4v works with .mp4, MJPG with .avi)"
            )

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
            raise SinkError(f"OpenCV cannot open {self.path} for writing with codec {self.codec!r}")
        self._writer, self._size, self._rate = writer, (width, height), float(fps)
        log.info("writing %dx%d video at %.2f fps to %s", width, height, fps, self.path)

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        # VideoWriter.write reports nothing (not even a full disk): count what the file really holds
        cap = cv2.VideoCapture(str(self.path))
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        finally:
            cap.release()
        self.frames_in_file = min(max(count, 0), self.frames_written)

    def describe(self) -> str:
        return f"{self.path} (annotated video, {self.codec})"

    def report(self) -> SinkReport:
        held = self.frames_written if self.frames_in_file is None else self.frames_in_file
        rate = f" at {self._rate:g} fps" if self.frames_written else ""
        lines = [f"video: {held} frames written to {self.path}{rate}"]
        lost = self.frames_written - held
        if lost:
            lines.append(
                f"video: LOST {lost} frames: {self.path} holds {held} of the {self.frames_written} written"
            )
        return SinkReport(tuple(lines), lost)


def create(section: VideoSinkConfig, ctx: SinkContext) -> VideoSink | None:
    if section.path is None:
        return None
    return VideoSink(section.path, section.fps, section.codec, ctx)


SPEC = SinkSpec("video", VideoSinkConfig, create, "Annotated video output.")
