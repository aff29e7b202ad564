"""Offline sources: every frame of a video file, or every image of a folder or glob, exactly once.

A frame that cannot be decoded in the middle of a file (a corrupt packet, an unreadable image) is counted in
``stats.skipped``, logged with its position (a looping source logs the same one once, and counts it at each
pass) and skipped; it never ends the run. ``Frame.index`` is the frame's position in the file (or in the
sorted image list), so a skipped frame leaves a gap and results stay aligned with the input. A video that
ends before the frames its header announces is reported at its end (``stats.missing``); a JPEG cut short,
which libjpeg still decodes (its bottom filled in), is delivered with ``Frame.damaged`` set and counted in
``stats.damaged``. ``stats.lost`` adds the three up.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.cvpath import opencv_name_problem
from edgeseg.errors import SourceError
from edgeseg.frame import Frame
from edgeseg.imagesize import image_header
from edgeseg.sources import Pacer, ParsedUri, SourceStats, natural_key, to_bgr
from edgeseg.sources.spec import MAX_SIDE
from edgeseg.stderr import native_stderr_silenced

if TYPE_CHECKING:
    from edgeseg.sources.spec import SourceConfig

log = logging.getLogger("edgeseg.sources")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
# Consecutive failed reads after which a video is taken to have ended rather than to hold a corrupt stretch.
_MAX_BAD_RUN = 32
_JPEG_TAIL = 4096  # bytes at the end of a JPEG searched for its end marker, past any padding
# the most pixels an image is decoded at: an 8192 x 8192 frame (200 MB as BGR). A JPEG over it is decoded at
# 1/2, 1/4 or 1/8 of its size by libjpeg itself (a phone's 200 MP photo at 1/2); any other image over it is
# refused: a 20000 x 20000 PNG of a few KB decoded whole, to 1.2 GB.
MAX_PIXELS = MAX_SIDE * MAX_SIDE
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def file_source(parsed: ParsedUri, config: SourceConfig) -> VideoFileSource | ImageSequenceSource:
    """An image sequence for a folder, a glob or an image file; a video source for anything else."""
    path = parsed.target
    size = (config.width, config.height) if config.width and config.height else None
    if (config.width and not config.height) or (config.height and not config.width):
        raise SourceError(
            f"source {parsed.uri!r}: give both width and height to resize file frames, or neither"
        )
    if glob.has_magic(path) and not os.path.exists(path):
        files = sorted((p for p in glob.glob(path, recursive=True) if os.path.isfile(p)), key=natural_key)
        if not files:
            raise SourceError(f"source {parsed.uri!r}: the glob matches no files")
        return ImageSequenceSource(parsed.uri, files, loop=config.loop, fps=config.fps, size=size)
    if os.path.isdir(path):
        # Hidden files are left out, as a glob leaves them out: macOS's AppleDouble "._IMG_1.JPG" beside each
        # image it copies to a FAT stick or an SMB share is no image, and would count as an undecodable frame.
        files = sorted(
            (
                str(p)
                for p in Path(path).iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
            ),
            key=natural_key,
        )
        if not files:
            raise SourceError(
                f"source {parsed.uri!r}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder"
            )
        return ImageSequenceSource(parsed.uri, files, loop=config.loop, fps=config.fps, size=size)
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return ImageSequenceSource(parsed.uri, [path], loop=config.loop, fps=config.fps, size=size)
    return VideoFileSource(parsed.uri, path, loop=config.loop, fps=config.fps, size=size)


def truncated_jpeg(path: str) -> bool:
    """Whether a JPEG file lacks its end-of-image marker (FF D9, trailing padding allowed): it was cut short.

    A JPEG with data appended after its end marker (rare) is taken for a truncated one.
    """
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\xff\xd8":
                return False
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _JPEG_TAIL))
            tail = f.read()
    except OSError:
        return False
    return not tail.rstrip(b"\0\r\n\t ").endswith(b"\xff\xd9")


def unknown_size(path: str) -> str | None:
    """For an image whose header :func:`~edgeseg.imagesize.image_header` cannot read, why it is not decoded
    (one line); None where OpenCV has no decoder for it either (no image at all: imread says it cannot)."""
    # OpenCV decodes by content, not suffix: a GIF, JPEG 2000 or AVIF under an image's name (or a JPEG whose
    # frame header is past the segments read) would be decoded at whatever size it says, unchecked
    if not cv2.haveImageReader(path):
        return None
    return (
        "of unknown size: its header is cut short or not a JPEG, PNG, BMP, TIFF, WebP or PGM/PPM one "
        "(another format would be decoded at whatever size it holds)"
    )


def bounded_flags(path: str, flags: int) -> int | str:
    """``cv2.imread`` flags that decode the image at ``path`` within :data:`MAX_PIXELS`, read from its header
    first: ``flags``, or a JPEG's reduced ones; for an image too large to be, why (one line)."""
    header = image_header(path)
    if header is None:
        return unknown_size(path) or flags
    if header.pixels <= MAX_PIXELS:
        return flags
    if header.format == "jpeg":
        for factor, reduced in _REDUCED.items():
            if header.pixels <= MAX_PIXELS * factor * factor:
                return reduced
    return (
        f"{header.width}x{header.height} pixels, more than the {MAX_SIDE}x{MAX_SIDE} an image is decoded "
        f"at (a JPEG: {8 * MAX_SIDE}x{8 * MAX_SIDE}, decoded at 1/8)"
    )


def _check_readable(uri: str, path: str) -> None:
    if not os.path.exists(path):
        raise SourceError(f"source {uri!r}: file not found: {path}")
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise SourceError(f"source {uri!r}: not a readable file: {path}")


def _check_name(uri: str, path: str) -> None:
    """At construction, before any output is opened: OpenCV would crash on the name (see edgeseg.cvpath)."""
    problem = opencv_name_problem(path)
    if problem is not None:
        raise SourceError(f"source {uri!r}: {problem}")


class _FileBase:
    live = False

    def __init__(self, uri: str, loop: bool, fps: float | None, size: tuple[int, int] | None) -> None:
        self.uri = uri
        self._loop = loop
        self._size = size  # (W, H) to resize to, or None
        self._stop = threading.Event()
        self._pacer = Pacer(fps, self._stop)
        self._fps = fps
        self._frames = 0
        self._skipped = 0
        self._damaged = 0
        self._state = "new"

    @property
    def stats(self) -> SourceStats:
        return SourceStats(
            frames=self._frames,
            skipped=self._skipped,
            damaged=self._damaged,
            state=self._state,
            fps=self._fps,
        )

    def _frame(
        self, index: int, decoded: NDArray[Any], file: str | None = None, damaged: bool = False
    ) -> Frame:
        t_ns, wall = time.monotonic_ns(), time.time()
        image = to_bgr(decoded)
        if self._size is not None and (image.shape[1], image.shape[0]) != self._size:
            image = to_bgr(cv2.resize(image, self._size, interpolation=cv2.INTER_AREA))
        self._frames += 1
        return Frame(
            index=index,
            image=image,
            t_capture_ns=t_ns,
            wall_time=wall,
            source=self.uri,
            file=file,
            damaged=damaged,
        )


class VideoFileSource(_FileBase):
    """Every decodable frame of a video file (FFmpeg through OpenCV), ``(H, W, 3)`` uint8 BGR.

    ``frames_total`` (and ``stats.expected``) is the container header's frame count, which some files
    overstate: an AVI may hold empty "repeat the previous frame" chunks that count as frames and decode to
    nothing (``crowd_topdown_1280x720_h264.avi`` announces 682 frames at 50 fps, 341 of them empty). So fewer
    frames than announced count as ``stats.missing`` (a truncated or damaged file) only when the video also
    ends early in time: its latest frame timestamp falls short of the announced duration (count / fps) by
    more than two frame periods. A file without timestamps is judged by the count alone.

    ``stats.fps`` is the file's own frame rate, also when ``fps`` paces the reading: what an output video
    must play at.
    """

    def __init__(
        self,
        uri: str,
        path: str,
        loop: bool = False,
        fps: float | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        _check_name(uri, path)
        super().__init__(uri, loop, fps, size)
        self.path = path
        self._cap: cv2.VideoCapture | None = None
        self._lock = threading.Lock()  # close() from another thread waits for the decode in flight
        self._total: int | None = None
        self._pos = 0  # index of the next frame in the file
        self._base = 0  # frames of earlier passes when looping
        self._native_fps: float | None = None
        self._last_ms = 0.0  # latest presentation time decoded in the first pass
        self._checked = False  # the first pass has ended and was checked against the header
        self._missing = 0
        # frames delivered when the loop last started the file again: a pass that adds none ends the loop
        self._frames_at_rewind = 0

    @property
    def stats(self) -> SourceStats:
        return SourceStats(
            frames=self._frames,
            skipped=self._skipped,
            expected=self._total,
            missing=self._missing,
            state=self._state,
            fps=self._fps,
        )

    @property
    def frames_total(self) -> int | None:
        return None if self._loop else self._total

    def open(self) -> None:
        _check_readable(self.uri, self.path)
        cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"source {self.uri!r}: cannot decode {self.path} (not a video FFmpeg can read)")
        # the images' limit, before the first frame is decoded: a 16000 x 16000 MJPEG is a few KB a frame on
        # disk and 768 MB each decoded, with a queue of them held
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > MAX_PIXELS:
            cap.release()
            raise SourceError(
                f"source {self.uri!r}: {self.path} has {width}x{height} frames, more than the "
                f"{MAX_SIDE}x{MAX_SIDE} pixels a frame is decoded at"
            )
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._total = count if count > 0 else None
        native = float(cap.get(cv2.CAP_PROP_FPS))
        if 0 < native < 1000:
            self._native_fps = self._fps = native
        self._cap = cap
        self._state = "running"

    def read(self) -> Frame | None:
        if not self._pacer.wait():
            return None
        with self._lock:
            if self._cap is None or self._stop.is_set():
                return None
            return self._read(self._cap)

    def _read(self, cap: cv2.VideoCapture) -> Frame | None:
        bad = 0
        while not self._stop.is_set():
            ok, image = cap.read()
            if ok and image is not None and image.size:
                if bad:
                    # Failures followed by a good frame were a corrupt stretch, not the end of the file.
                    # Said in the first pass; a loop meets the same stretch at each pass, counted only.
                    self._skipped += bad
                    log.log(
                        logging.DEBUG if self._checked else logging.WARNING,
                        "%s: skipped %d undecodable frame(s) before frame %d",
                        self.path,
                        bad,
                        self._pos,
                    )
                if not self._checked:
                    self._last_ms = max(self._last_ms, float(cap.get(cv2.CAP_PROP_POS_MSEC)))
                frame = self._frame(self._base + self._pos, image)
                self._pos += 1
                return frame
            bad += 1
            self._pos += 1
            if bad >= _MAX_BAD_RUN or (self._total is not None and self._pos >= self._total):
                self._check_complete()
                if self._loop and self._frames > self._frames_at_rewind:
                    self._base += self._pos - bad
                    self._pos, bad = 0, 0
                    self._frames_at_rewind = self._frames
                    reopened = self._reopen(cap)
                    if reopened is not None:
                        cap = reopened
                        continue
                elif self._loop and self._frames:
                    log.warning(
                        "source %r: a pass of %s decoded no frame: the loop ends", self.uri, self.path
                    )
                break
        if self._stop.is_set():
            return None
        self._state = "ended"
        if not self._frames:
            raise SourceError(f"source {self.uri!r}: no decodable frame in {self.path}")
        return None

    def _reopen(self, cap: cv2.VideoCapture) -> cv2.VideoCapture | None:
        """The file opened again at its first frame (None, logged, when it no longer opens). Not a seek to
        frame 0: a raw stream without an index (rpicam-vid's default .h264, a .mjpeg) takes that seek
        without error and then decodes nothing."""
        cap.release()
        self._cap = None
        again = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        if not again.isOpened():
            again.release()
            log.warning("source %r: cannot open %s again to loop it: the source ends", self.uri, self.path)
            return None
        self._cap = again
        return again

    def _check_complete(self) -> None:
        """At the first end of the file: count the frames its header announces that it did not hold."""
        if self._checked:
            return
        self._checked = True
        seen = self._frames + self._skipped
        if self._total is None or seen >= self._total or not self._frames:
            return
        fps, span = self._native_fps, ""
        if fps and self._last_ms > 0:
            announced_ms = 1000 * self._total / fps
            if self._last_ms + 2000 / fps >= announced_ms:
                log.info(
                    "%s: %d frames decode where the header announces %d, but they span all of its %.1f s "
                    "(the header counts empty frames); nothing is missing",
                    self.path,
                    seen,
                    self._total,
                    announced_ms / 1000,
                )
                return
            span = f"; it ends at {self._last_ms / 1000:.1f} s of {announced_ms / 1000:.1f} s"
        self._missing = self._total - seen
        skipped = f" (and skipped {self._skipped})" if self._skipped else ""
        log.warning(
            "source %r: decoded %d%s of the %d frames its header announces (truncated or damaged file%s)",
            self.uri,
            self._frames,
            skipped,
            self._total,
            span,
        )

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
        self._state = "closed"


class ImageSequenceSource(_FileBase):
    """Every readable image of a sorted list of files, ``(H, W, 3)`` uint8 BGR (grey, BGRA and 16-bit
    converted).

    Images may differ in size (downstream derives transforms per frame).
    """

    def __init__(
        self,
        uri: str,
        files: list[str],
        loop: bool = False,
        fps: float | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        for file in files:
            _check_name(uri, file)
        super().__init__(uri, loop, fps, size)
        self.files = list(files)
        self._pos = 0
        self._base = 0
        # frames delivered when the loop last started the list again: a pass that adds none ends the loop
        # (the images went away under it: without an end it would skip them all for ever at full CPU)
        self._frames_at_rewind = 0
        # files warned about: a loop meets the same unreadable or truncated image at each pass, and says so
        # once (they are counted each time); an image that turns bad in a later pass is still news
        self._told: set[str] = set()

    @property
    def frames_total(self) -> int | None:
        return None if self._loop else len(self.files)

    def open(self) -> None:
        if len(self.files) == 1:
            _check_readable(self.uri, self.files[0])
            flags = bounded_flags(self.files[0], cv2.IMREAD_UNCHANGED)
            if isinstance(flags, str):
                raise SourceError(f"source {self.uri!r}: image {self.files[0]} is {flags}")
            if cv2.imread(self.files[0], flags) is None:
                raise SourceError(f"source {self.uri!r}: cannot decode image {self.files[0]}")
        self._state = "running"

    def read(self) -> Frame | None:
        if self._state != "running" or not self._pacer.wait():
            return None
        while not self._stop.is_set():
            if self._pos >= len(self.files):
                if not (self._loop and self._frames > self._frames_at_rewind):
                    if self._loop and self._frames:
                        log.warning(
                            "source %r: a pass of its %d images read no image: the loop ends",
                            self.uri,
                            len(self.files),
                        )
                    self._state = "ended"
                    if not self._frames:
                        raise SourceError(
                            f"source {self.uri!r}: none of its {len(self.files)} images is readable"
                        )
                    return None
                self._base += len(self.files)
                self._pos = 0
                self._frames_at_rewind = self._frames
            path = self.files[self._pos]
            index = self._base + self._pos
            self._pos += 1
            level = logging.DEBUG if path in self._told else logging.WARNING
            # any depth and colour, as IMREAD_UNCHANGED (16-bit, grey), but not that flag itself: it also
            # ignores EXIF orientation, and a phone's portrait photo would be processed lying on its side
            flags = bounded_flags(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
            if isinstance(flags, str):
                self._skipped += 1
                self._told.add(path)
                log.log(level, "source %r: skipped image %s (frame %d): %s", self.uri, path, index, flags)
                continue
            if flags in _REDUCED.values() and path not in self._told:
                self._told.add(path)
                log.warning("source %r: %s (frame %d) is over %d pixels: decoded at a reduced size",
                            self.uri, path, index, MAX_PIXELS)  # fmt: skip
            # read twice (2 bytes and the last 4 KB, then the decode) rather than decoding the bytes once:
            # cv2.imdecode gives up on a truncated JPEG that cv2.imread still decodes
            damaged = truncated_jpeg(path)
            # libjpeg prints "Premature end of JPEG file" on fd 2 itself; our warning below says it with the
            # file and frame. Silencing fd 2 for this one decode of a known-damaged file (a few ms, rare)
            # can only hide what another thread writes in those ms.
            with native_stderr_silenced() if damaged else contextlib.nullcontext():
                image = cv2.imread(path, flags)
            if image is not None and image.dtype == np.uint16:
                # a 16-bit PNG or TIFF (machine-vision cameras): its top 8 bits, as imread's own conversion
                image = np.right_shift(image, 8).astype(np.uint8)
            if image is None or image.dtype != np.uint8 or image.size == 0:
                self._skipped += 1
                self._told.add(path)
                log.log(level, "source %r: skipped unreadable image %s (frame %d)", self.uri, path, index)
                continue
            if damaged:
                self._damaged += 1
                self._told.add(path)
                log.log(
                    level,
                    "source %r: %s (frame %d) is a truncated JPEG: processed anyway, its missing part "
                    "filled in by the decoder",
                    self.uri,
                    path,
                    index,
                )
            return self._frame(index, image, file=path, damaged=damaged)
        return None

    def close(self) -> None:
        self._stop.set()
        self._state = "closed"
