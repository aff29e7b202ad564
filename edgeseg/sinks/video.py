"""``video`` sink: annotated frames into a video file (``cv2.VideoWriter``), finalized on close; or into
segments, a new file every ``segment_s`` seconds of video, the oldest deleted past ``keep``."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeseg.cvpath import opencv_name_problem
from edgeseg.errors import ConfigError, SinkError
from edgeseg.fields import meta
from edgeseg.frame import Result
from edgeseg.sinks.base import SinkContext, SinkReport, SinkSpec, check_output_path, probe_path
from edgeseg.stderr import native_stderr_silenced
from edgeseg.validate import FieldError

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0


@dataclass(frozen=True)
class VideoSinkConfig:
    """Annotated video output."""

    path: Path | None = field(default=None, metadata=meta("Write an annotated video here (null: off)."))
    fps: float | None = field(default=None, metadata=meta("Frame rate (null: the source's, else 25).", gt=0))
    codec: str = field(
        default="mp4v",
        metadata=meta(
            "FourCC of the video codec.",
            pattern=r"^[A-Za-z0-9 ]{4}$",
            says="4 letters, digits or spaces (mp4v, MJPG)",
        ),
    )
    segment_s: float | None = field(
        default=None,
        metadata=meta(
            "Start a new file every this many seconds of video, named <stem>-<UTC time of its first "
            "frame><suffix> beside path (null: one file). An MP4 is readable only once closed, so a crash "
            "or power cut then loses the segment being written, not the whole recording.",
            gt=0,
        ),
    )
    keep: int | None = field(
        default=None,
        metadata=meta(
            "With segment_s: most segment files kept beside path (earlier runs' included), the oldest "
            "deleted first (null: all).",
            ge=1,
        ),
    )

    def __post_init__(self) -> None:
        if self.keep is not None and self.segment_s is None:
            raise FieldError("keep", "needs segment_s (a single file has nothing to keep)")


class VideoSink:
    """Writes each result, annotated, as one video frame.

    The encoder is tried for real when the sink is built (a scratch file beside ``path``), so a codec this
    OpenCV lacks or a place it cannot write is an error before the first frame. The writer opens on the
    first result (its size fixes the video's size; later frames of another size, e.g. after a stream
    reconnect, are resized to it). The frame rate is ``fps``, else the source's, else 25. Each file is read
    back when it is closed: frames it does not hold (a full disk) are reported lost.

    With ``segment_s``, a new file starts after every ``segment_s`` seconds of video (at that frame rate),
    named by the capture time of its first frame; with ``keep``, once a file is opened or the sink closes,
    the oldest segment files beside ``path`` (this sink's name pattern only) go until ``keep`` are left.
    """

    def __init__(
        self,
        path: Path,
        fps: float | None = None,
        codec: str = "mp4v",
        ctx: SinkContext | None = None,
        segment_s: float | None = None,
        keep: int | None = None,
    ) -> None:
        self.path = check_output_path(path, "sinks.video.path")
        self.fps = fps
        self.codec = codec
        self.ctx = SinkContext() if ctx is None else ctx
        self.segment_s = segment_s
        self.keep = keep
        self._segment = re.compile(
            re.escape(self.path.stem) + r"-\d{8}T\d{6}\.\d{3}Z(-\d+)?" + re.escape(self.path.suffix)
        )
        self._writer: cv2.VideoWriter | None = None
        self._file = self.path  # the file being written
        # with keep: this sink's segments still there, in the order written (a clock set back names a newer
        # one earlier, so their names do not tell which is the oldest)
        self._made: list[Path] = []
        self._size: tuple[int, int] = (0, 0)
        self._rate = 0.0
        self._per_file = 0  # frames a segment holds (0: one file)
        self._in_file = 0
        self.frames_written = 0
        self.frames_in_files = 0  # frames the closed files hold, read back
        self.opened = 0  # files written, closed or not (a service's segments: only counted)
        self.removed = 0  # old segment files deleted for keep
        self.prune_failures = 0
        self._prune_error: str | None = None
        problem = opencv_name_problem(self.path)
        if problem is not None:
            raise ConfigError(f"sinks.video.path: {problem}")
        if not self._probe(DEFAULT_FPS):
            raise ConfigError(
                f"sinks.video.codec: this OpenCV cannot encode {self.codec!r} into {self.path.suffix} files "
                "(mp4v works with .mp4, MJPG with .avi)"
            )
        # an encoder takes a range of rates (mp4v 0.01..65535, MJPG from 0.01): outside it every frame failed
        if fps is not None and not self._probe(fps):
            raise ConfigError(f"sinks.video.fps: this OpenCV cannot write {self.codec!r} at {fps:g} fps")

    def _probe(self, fps: float) -> bool:
        """Whether a scratch file beside ``path`` takes a frame in ``codec`` at ``fps``."""
        probe = probe_path(self.path)
        try:
            with native_stderr_silenced():  # FFmpeg prints its own version of the error raised by the caller
                writer = cv2.VideoWriter(
                    str(probe), cv2.VideoWriter.fourcc(*self.codec), float(fps), (64, 64)
                )
                ok = writer.isOpened()
                if ok:
                    writer.write(np.zeros((64, 64, 3), np.uint8))
                writer.release()
            return ok and probe.is_file() and probe.stat().st_size > 0
        finally:
            probe.unlink(missing_ok=True)

    def send(self, result: Result) -> None:
        img = self.ctx.render(result)
        if self._writer is not None and self._per_file and self._in_file >= self._per_file:
            self._finish()
        if self._writer is None:
            width, height = self._size if self.opened else (img.shape[1], img.shape[0])
            self._open(width, height, result.frame.wall_time)
        assert self._writer is not None
        if (img.shape[1], img.shape[0]) != self._size:
            img = np.ascontiguousarray(cv2.resize(img, self._size, interpolation=cv2.INTER_AREA))
        self._writer.write(img)
        self.frames_written += 1
        self._in_file += 1

    def _open(self, width: int, height: int, wall_time: float) -> None:
        fps = self.fps or self.ctx.source_fps() or DEFAULT_FPS
        target = self.path if self.segment_s is None else self._segment_path(wall_time)
        writer = cv2.VideoWriter(
            str(target), cv2.VideoWriter.fourcc(*self.codec), float(fps), (width, height)
        )
        if not writer.isOpened():
            raise SinkError(f"OpenCV cannot open {target} for writing with codec {self.codec!r}")
        if not self.opened:
            log.info("writing %dx%d video at %.2f fps to %s", width, height, fps, target)
        self._writer, self._size, self._rate, self._file = writer, (width, height), float(fps), target
        self._per_file = 0 if self.segment_s is None else max(1, round(self.segment_s * fps))
        self._in_file = 0
        self.opened += 1
        if self.keep is not None:
            self._made.append(target)
        self._prune()

    def _segment_path(self, wall_time: float) -> Path:
        t = wall_time if wall_time > 0 else time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
        target = self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}")
        n = 1
        while target.exists():  # two segments in one millisecond, or a clock set back
            n += 1
            target = self.path.with_name(f"{self.path.stem}-{stamp}-{n}{self.path.suffix}")
        return target

    def _finish(self) -> None:
        """Close the file being written and count what it really holds (VideoWriter.write reports
        nothing, not even a full disk)."""
        assert self._writer is not None
        self._writer.release()
        self._writer = None
        cap = cv2.VideoCapture(str(self._file))
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        finally:
            cap.release()
        self.frames_in_files += min(max(count, 0), self._in_file)

    def _prune(self) -> None:
        if self.keep is None:
            return
        folder = self.path.parent if str(self.path.parent) else Path(".")
        try:
            mine = {p for p in folder.iterdir() if self._segment.fullmatch(p.name)}
        except OSError as exc:
            self._prune_failed(f"cannot list {folder}: {exc.strerror or exc}")
            return
        self._made = [p for p in self._made if p in mine]
        # earlier runs' segments first, oldest name first, then this run's in the order it wrote them
        oldest_first = sorted(mine.difference(self._made)) + self._made
        for old in oldest_first[: max(0, len(oldest_first) - self.keep)]:
            if old == self._file and self._writer is not None:
                continue
            try:
                old.unlink()
                self._made = [p for p in self._made if p != old]
                self.removed += 1
            except OSError as exc:
                self._prune_failed(f"cannot delete {old}: {exc.strerror or exc}")

    def _prune_failed(self, why: str) -> None:
        """Nothing recorded is lost, but the folder outgrows ``keep``: logged once, in the summary."""
        self.prune_failures += 1
        if self._prune_error is None:
            log.warning("video: %s; the folder holds more than keep=%d segments", why, self.keep)
        self._prune_error = why

    def close(self) -> None:
        if self._writer is None:
            return
        self._finish()
        self._prune()

    def describe(self) -> str:
        if self.segment_s is None:
            return f"{self.path} (annotated video, {self.codec})"
        kept = f", {self.keep} kept" if self.keep is not None else ""
        return f"{self._pattern()} (annotated video, {self.codec}, {self.segment_s:g} s a file{kept})"

    def _pattern(self) -> str:
        return str(self.path.with_name(f"{self.path.stem}-*{self.path.suffix}"))

    def report(self) -> SinkReport:
        open_file = self._in_file if self._writer is not None else 0  # not read back before close
        held = self.frames_in_files + open_file
        rate = f" at {self._rate:g} fps" if self.frames_written else ""
        if self.segment_s is None:
            lines = [f"video: {held} frames written to {self.path}{rate}"]
        else:
            removed = f", {self.removed} old ones deleted (keep {self.keep})" if self.removed else ""
            lines = [f"video: {held} frames written to {self.opened} files {self._pattern()}{rate}{removed}"]
        if self._prune_error is not None:
            lines.append(
                f"video: {self.prune_failures} times old segments could not be deleted for keep={self.keep} "
                f"(last: {self._prune_error}); no frame was lost"
            )
        lost = self.frames_written - held
        if lost:
            where = self.path if self.segment_s is None else self._pattern()
            lines.append(
                f"video: LOST {lost} frames: {where} holds {held} of the {self.frames_written} written"
            )
        return SinkReport(tuple(lines), lost)


def create(section: VideoSinkConfig, ctx: SinkContext) -> VideoSink | None:
    if section.path is None:
        return None
    return VideoSink(section.path, section.fps, section.codec, ctx, section.segment_s, section.keep)


SPEC = SinkSpec("video", VideoSinkConfig, create, "Annotated video output.")
