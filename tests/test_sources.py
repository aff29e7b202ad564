"""Frame sources: files lose no frame, live sources reconnect with backoff, bad input gives one clear line."""

from __future__ import annotations

import importlib.machinery
import io
import itertools
import json
import logging
import shutil
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from edgeseg import imagesize
from edgeseg.config import SourceConfig
from edgeseg.errors import SourceError
from edgeseg.frame import Frame, Result
from edgeseg.imagesize import image_header
from edgeseg.instances import Instances
from edgeseg.mqtt.topics import load_schema, results_payload
from edgeseg.sinks.record import encoded_record, result_record
from edgeseg.sources import Source, backoff_delays, make_source, open_source, parse_uri
from edgeseg.sources.opencv_live import OpenCVLiveSource, opencv_has_gstreamer


def _write_video(path: Path, n: int, size: tuple[int, int] = (64, 48)) -> None:
    """An MJPEG AVI whose frame ``i`` is filled with grey level ``10 * i``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), 10 * i, np.uint8))
    writer.release()


def _drain(src: Source) -> list[int]:
    indices = []
    while (frame := src.read()) is not None:
        indices.append(frame.index)
    return indices


def _wait_until(predicate: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_video_file_delivers_every_frame_once_and_reports_the_total(assets_dir: Path) -> None:
    video = assets_dir / "video" / "pedestrians_crossing_640x360.mp4"
    src = open_source(str(video))
    try:
        assert not src.live
        assert src.frames_total == 188
        first = src.read()
        assert first is not None
        assert first.image.shape == (360, 640, 3)
        assert first.image.dtype == np.uint8
        indices = [first.index, *_drain(src)]
    finally:
        src.close()
    assert indices == list(range(188))
    assert src.stats.frames == 188
    assert src.stats.skipped == 0
    assert src.stats.state == "closed"


def _video_with_a_corrupt_fifth_frame(tmp_path: Path) -> Path:
    """An MJPEG AVI of 10 frames whose 5th frame's JPEG header and data are wiped."""
    good = tmp_path / "good.avi"
    _write_video(good, 10)
    data = bytearray(good.read_bytes())
    jpeg_starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    data[jpeg_starts[4] : jpeg_starts[4] + 200] = bytes(200)
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data))
    return bad


def test_corrupt_video_frame_is_counted_and_skipped_not_fatal(tmp_path: Path) -> None:
    bad = _video_with_a_corrupt_fifth_frame(tmp_path)
    src = open_source(str(bad))
    try:
        indices = _drain(src)
    finally:
        src.close()
    assert indices == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert src.stats.skipped == 1


def test_folder_and_glob_yield_images_in_natural_order(tmp_path: Path) -> None:
    for n in (10, 2, 1):
        cv2.imwrite(str(tmp_path / f"frame{n}.png"), np.full((8, 8, 3), n, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    for uri in (str(tmp_path), str(tmp_path / "frame*.png")):
        src = open_source(uri)
        try:
            assert src.frames_total == 3
            levels = []
            while (frame := src.read()) is not None:
                levels.append(int(frame.image[0, 0, 0]))
        finally:
            src.close()
        assert levels == [1, 2, 10], uri


def test_hidden_files_in_a_folder_are_not_images_of_it_as_in_a_glob(tmp_path: Path) -> None:
    # macOS writes an AppleDouble "._NAME" beside each file it copies to a FAT/exFAT stick or an SMB share:
    # read as images they would be undecodable input frames, each a warning, and the run would exit 3
    for n in (1, 2):
        cv2.imwrite(str(tmp_path / f"IMG_{n}.JPG"), np.full((8, 8, 3), n, np.uint8))
        (tmp_path / f"._IMG_{n}.JPG").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    for uri in (str(tmp_path), str(tmp_path / "*.JPG")):
        src = open_source(uri)
        try:
            assert src.frames_total == 2, uri
            files = [Path(frame.file or "").name for frame in iter(src.read, None)]
        finally:
            src.close()
        assert files == ["IMG_1.JPG", "IMG_2.JPG"], uri
        assert src.stats.lost == 0, uri


def test_unreadable_image_in_a_folder_is_counted_and_skipped(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a1.png"), np.zeros((8, 8), np.uint8))  # grey becomes BGR
    (tmp_path / "a2.png").write_bytes(b"\x89PNG but truncated")
    cv2.imwrite(str(tmp_path / "a3.png"), np.zeros((8, 8, 4), np.uint8))  # BGRA becomes BGR
    src = open_source(str(tmp_path))
    frames = []
    while (frame := src.read()) is not None:
        frames.append(frame)
    src.close()
    assert [f.index for f in frames] == [0, 2]
    assert all(f.image.shape == (8, 8, 3) for f in frames)
    assert src.stats.skipped == 1


def bilevel_png(path: Path, width: int, height: int) -> None:
    """A valid black 1-bit PNG: a few KB on disk for any size (20000 x 20000: 1.2 GB once decoded as BGR)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\0" * (1 + (width + 7) // 8)) * height
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(png)


def screen_gif(path: Path, width: int, height: int) -> None:
    """A GIF of one pixel on a ``width`` x ``height`` logical screen (GIF89a: its size at bytes 6-9), which
    OpenCV decodes at the screen's size, written to ``path`` whatever its suffix (OpenCV goes by content)."""
    ok, data = cv2.imencode(".gif", np.zeros((1, 1, 3), np.uint8))
    assert ok
    gif = bytearray(data.tobytes())
    gif[6:10] = struct.pack("<HH", width, height)
    path.write_bytes(gif)


def _a_folder_whose_middle_image_is_skipped(
    folder: Path, caplog: pytest.LogCaptureFixture, write: Callable[[Path], None]
) -> None:
    """Reads a folder of a1.png, a2.png (written by ``write``) and a3.png, warnings logged to ``caplog``:
    the two small images are read and a2.png alone is skipped."""
    cv2.imwrite(str(folder / "a1.png"), np.zeros((8, 8), np.uint8))
    write(folder / "a2.png")
    cv2.imwrite(str(folder / "a3.png"), np.zeros((8, 8), np.uint8))
    src = open_source(str(folder))
    with caplog.at_level(logging.WARNING, "edgeseg.sources"):
        indices = _drain(src)
    src.close()
    assert indices == [0, 2]
    assert src.stats.skipped == 1


def test_an_image_too_large_to_decode_is_skipped_by_its_header_and_refused_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _a_folder_whose_middle_image_is_skipped(tmp_path, caplog, lambda path: bilevel_png(path, 20000, 20000))
    assert (
        "a2.png (frame 1): 20000x20000 pixels, more than the 8192x8192 an image is decoded at" in caplog.text
    )
    with pytest.raises(SourceError, match=r"a2\.png is 20000x20000 pixels, more than the 8192x8192 "):
        open_source(str(tmp_path / "a2.png"))


def test_an_image_whose_size_its_header_does_not_tell_is_skipped_and_refused_alone_not_decoded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _a_folder_whose_middle_image_is_skipped(tmp_path, caplog, lambda path: screen_gif(path, 9000, 9000))
    assert "a2.png (frame 1): of unknown size: its header is cut short or not" in caplog.text
    with pytest.raises(SourceError, match=r"a2\.png is of unknown size: its header is cut short or not"):
        open_source(str(tmp_path / "a2.png"))


def test_a_video_whose_frames_are_over_the_image_limit_is_refused_at_open_in_one_line(tmp_path: Path) -> None:
    # each 8200 x 8200 frame is 200 MB decoded: a 16000 x 16000 MJPEG of a few KB a frame would be 768 MB
    video = tmp_path / "huge.avi"
    _write_video(video, 1, (8200, 8200))
    with pytest.raises(SourceError) as err:
        open_source(str(video))
    assert "\n" not in str(err.value)
    assert f"{video} has 8200x8200 frames, more than the 8192x8192 pixels a frame is decoded at" in str(
        err.value
    )


@pytest.mark.parametrize(
    ("name", "params"),
    [("a.png", []), ("a.jpg", []), ("a.bmp", []), ("a.tiff", []), ("a.webp", []), ("a.ppm", []),
     ("a.pgm", []), ("lossless.webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
     ("raw.tiff", [cv2.IMWRITE_TIFF_COMPRESSION, 1])],
)  # fmt: skip
def test_the_header_of_each_image_format_the_sources_take_gives_its_size(
    tmp_path: Path, name: str, params: list[int]
) -> None:
    image = np.zeros((37, 53, 3), np.uint8)
    cv2.imwrite(str(tmp_path / name), image[:, :, 0] if name.endswith(".pgm") else image, params)
    header = image_header(str(tmp_path / name))
    assert header is not None
    assert (header.width, header.height) == (53, 37)
    (tmp_path / "cut").write_bytes((tmp_path / name).read_bytes()[:6])
    assert image_header(str(tmp_path / "cut")) is None  # the decoder says what is wrong with it


def test_a_jpeg_header_of_fill_bytes_alone_is_read_only_so_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fill bytes (0xFF) may precede a marker, and the reader skipped them one read(1) at a time: a few bytes
    # of JPEG start and gigabytes of 0xFF behind them cost a Python loop for every byte of the file
    path = tmp_path / "fill.jpg"
    path.write_bytes(b"\xff\xd8" + b"\xff" * (1 << 20))
    read: list[int] = []

    class Counted(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            read.append(len(data))
            return data

    monkeypatch.setattr(
        imagesize, "open", lambda p, mode: Counted(io.FileIO(p, mode.replace("b", ""))), raising=False
    )
    assert image_header(str(path)) is None
    assert sum(read) <= 64 * 1024  # the header's own bytes and a bounded run of fill bytes


def test_a_jpeg_too_large_to_decode_whole_is_decoded_at_a_reduced_size(tmp_path: Path) -> None:
    # a phone's 200 MP photo: libjpeg decodes it at 1/2 of its size, at no cost of the whole
    cv2.imwrite(str(tmp_path / "big.jpg"), np.full((8200, 8200), 200, np.uint8))
    src = open_source(str(tmp_path / "big.jpg"))
    frame = src.read()
    src.close()
    assert frame is not None
    assert frame.image.shape == (4100, 4100, 3)
    assert src.stats.lost == 0


def test_16_bit_images_are_delivered_as_8_bit_not_skipped_as_unreadable(tmp_path: Path) -> None:
    # machine-vision and scientific cameras save 16-bit PNG/TIFF; OpenCV reads them: nothing is lost
    cv2.imwrite(str(tmp_path / "a1.png"), np.full((8, 8, 3), 0x1234, np.uint16))
    cv2.imwrite(str(tmp_path / "a2.tiff"), np.full((8, 8), 0xFF00, np.uint16))  # grey becomes BGR
    cv2.imwrite(str(tmp_path / "a3.png"), np.full((8, 8, 3), 7, np.uint8))
    src = open_source(str(tmp_path))
    frames = []
    while (frame := src.read()) is not None:
        frames.append(frame)
    src.close()
    assert [f.index for f in frames] == [0, 1, 2]
    assert all(f.image.shape == (8, 8, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [int(f.image[0, 0, 0]) for f in frames] == [0x12, 0xFF, 7]
    assert src.stats.lost == 0


def test_a_photo_with_an_exif_orientation_is_delivered_upright(tmp_path: Path) -> None:
    # A phone (or a camera on its side) stores a portrait shot as landscape pixels plus EXIF Orientation 6
    # ("rotate 90 degrees clockwise to view"): delivered as stored, every person in it lies on their side.
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, :40] = 255  # the left half of the stored pixels is white: the top half once upright
    jpeg = cv2.imencode(".jpg", stored)[1].tobytes()
    orientation = b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"  # tag 0x0112, SHORT, 1, value 6
    exif = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01" + orientation + b"\x00\x00\x00\x00"
    app1 = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    (tmp_path / "portrait.jpg").write_bytes(jpeg[:2] + app1 + jpeg[2:])
    src = open_source(str(tmp_path))
    frame = src.read()
    src.close()
    assert frame is not None
    assert frame.image.shape == (80, 40, 3)
    assert frame.image[:40].mean() > 200  # white on top
    assert frame.image[40:].mean() < 50


def test_file_frames_are_resized_when_width_and_height_are_set(tmp_path: Path) -> None:
    _write_video(tmp_path / "v.avi", 3)
    src = open_source(SourceConfig(uri=str(tmp_path / "v.avi"), width=32, height=24))
    frame = src.read()
    src.close()
    assert frame is not None
    assert frame.image.shape == (24, 32, 3)


def test_looping_file_restarts_and_keeps_counting(tmp_path: Path) -> None:
    _write_video(tmp_path / "v.avi", 3)
    src = open_source(SourceConfig(uri=str(tmp_path / "v.avi"), loop=True))
    indices = [src.read().index for _ in range(7)]  # type: ignore[union-attr]
    src.close()
    assert src.frames_total is None
    assert indices == list(range(7))


def test_a_looping_video_with_a_corrupt_frame_warns_in_the_first_pass_and_counts_it_in_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a damaged video looped for months warned about the same frame at every pass (one line each few s)
    bad = _video_with_a_corrupt_fifth_frame(tmp_path)
    caplog.set_level(logging.DEBUG, logger="edgeseg.sources")
    src = open_source(SourceConfig(uri=str(bad), loop=True))
    indices = [src.read().index for _ in range(27)]  # type: ignore[union-attr]
    src.close()
    assert indices == [i for i in range(30) if i % 10 != 4]
    assert src.stats.skipped == 3  # counted at each pass, for the run's summary
    said = [r for r in caplog.records if "undecodable" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG, logging.DEBUG]


def test_a_looping_folder_warns_about_an_unreadable_or_truncated_image_once_and_counts_it_at_each_pass(
    assets_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copy(assets_dir / "images" / "bus.jpg", tmp_path / "a1.jpg")
    data = (assets_dir / "images" / "zidane.jpg").read_bytes()
    (tmp_path / "a2.jpg").write_bytes(data[: len(data) // 2])  # truncated: decoded, flagged damaged
    (tmp_path / "a3.jpg").write_bytes(data[:100])  # headers only: skipped
    caplog.set_level(logging.DEBUG, logger="edgeseg.sources")
    src = open_source(SourceConfig(uri=str(tmp_path), loop=True))
    indices = [src.read().index for _ in range(6)]  # type: ignore[union-attr]
    src.close()
    assert indices == [0, 1, 3, 4, 6, 7]
    assert (src.stats.damaged, src.stats.skipped) == (3, 2)  # a3 of the third pass is not read yet
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split(": ", 1)[1] for w in warned] == [
        f"{tmp_path / 'a2.jpg'} (frame 1) is a truncated JPEG: processed anyway, its missing part filled in "
        "by the decoder",
        f"skipped image {tmp_path / 'a3.jpg'} (frame 2): of unknown size: its header is cut short or not a "
        "JPEG, PNG, BMP, TIFF, WebP or PGM/PPM one (another format would be decoded at whatever size it "
        "holds)",
    ]
    assert len([r for r in caplog.records if "a2.jpg" in r.getMessage() or "a3.jpg" in r.getMessage()]) == 5


def test_looping_a_raw_stream_file_that_cannot_seek_back_starts_again_from_its_first_frame(
    tmp_path: Path,
) -> None:
    # A raw stream without an index (rpicam-vid's default .h264, a .mjpeg of concatenated JPEGs) "seeks"
    # to frame 0 without error and then decodes nothing: the loop must not spin on it for ever.
    clip = tmp_path / "clip.mjpeg"
    with clip.open("wb") as f:
        for i in range(3):
            f.write(cv2.imencode(".jpg", np.full((48, 64, 3), 40 * i, np.uint8))[1].tobytes())
    src = open_source(SourceConfig(uri=str(clip), loop=True))
    frames: list[tuple[int, int]] = []

    def read_seven() -> None:
        while len(frames) < 7 and (frame := src.read()) is not None:
            frames.append((frame.index, round(frame.image[0, 0, 0] / 40)))

    reader = threading.Thread(target=read_seven, daemon=True)
    reader.start()
    reader.join(20)
    src.close()
    reader.join(5)
    assert [index for index, _ in frames] == list(range(7))
    assert [level for _, level in frames] == [0, 1, 2, 0, 1, 2, 0]


def test_looping_a_folder_whose_images_all_became_unreadable_ends_instead_of_spinning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The folder's images go away under a looping run (a USB stick pulled, a mount lost, a cleanup job):
    # every pass skips them all, and without an end the read loops for ever at full CPU, a warning a file.
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 8, 3), i, np.uint8))
    src = open_source(SourceConfig(uri=str(tmp_path), loop=True))
    assert [src.read().index for _ in range(3)] == [0, 1, 2]  # type: ignore[union-attr]
    for image in tmp_path.iterdir():
        image.unlink()
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(src.read()), daemon=True)
    reader.start()
    reader.join(10)
    src.close()
    reader.join(5)
    assert result == [None]
    assert src.stats.skipped == 3  # the rest of the pass that read f0, then one whole pass
    assert "read no image: the loop ends" in caplog.text


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.mp4", "file not found"),
        (lambda d: (d / "notes.mp4").write_text("hello") and d / "notes.mp4", "cannot decode"),
        (lambda d: (d / "broken.png").write_bytes(b"no") and d / "broken.png", "cannot decode image"),
        (lambda d: d / "*.jpg", "matches no files"),
    ],
)
def test_unreadable_or_missing_file_gives_one_line_naming_it(
    tmp_path: Path, make: object, expected: str
) -> None:
    target = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(SourceError) as err:
        open_source(str(target))
    message = str(err.value)
    assert "\n" not in message
    assert expected in message
    assert str(target) in message


@pytest.mark.parametrize(
    "uri",
    [
        "foo:bar",
        "synthetic:cubes",
        "synthetic:parts?sed=3",
        "synthetic:parts?fps=fast",
        "v4l2:front",
        "picamera2:x",
        "",
    ],
)
def test_bad_uri_gives_one_clear_line(uri: str) -> None:
    with pytest.raises(SourceError) as err:
        open_source(uri)
    message = str(err.value)
    assert "\n" not in message
    assert repr(uri) in message


def test_unknown_scheme_lists_the_accepted_forms() -> None:
    with pytest.raises(SourceError, match=r"v4l2:N.*rtsp://.*gst:.*picamera2:"):
        parse_uri("webcam:0")


def test_uri_forms_map_to_their_sources() -> None:
    assert parse_uri("/dev/video2").scheme == "v4l2"
    assert parse_uri("rtsp://cam.local:554/s?x=1").target == "rtsp://cam.local:554/s?x=1"
    assert parse_uri("frames/img?.png").scheme == "file"
    assert parse_uri("gst:videotestsrc ! appsink").target == "videotestsrc ! appsink"
    assert dict(parse_uri("picamera2:1?network=/n.rpk&fps=10").options) == {"network": "/n.rpk", "fps": "10"}


def test_a_file_uri_as_a_file_manager_copies_it_opens_the_file(tmp_path: Path) -> None:
    # "Copy location" in a file manager or a browser gives file:///home/u/My%20Clips/clip%201.avi: a space
    # is %20 in a URI, and the host may be spelled localhost
    (tmp_path / "My Clips").mkdir()
    _write_video(tmp_path / "My Clips" / "clip 1.avi", 3)
    encoded = str(tmp_path / "My%20Clips" / "clip%201.avi")
    for uri in (f"file://{encoded}", f"file://localhost{encoded}", f"file://{tmp_path}/My Clips/clip 1.avi"):
        src = open_source(uri)
        try:
            assert _drain(src) == [0, 1, 2], uri
        finally:
            src.close()


def test_synthetic_source_carries_ground_truth_and_honours_uri_options() -> None:
    src = open_source(SourceConfig(uri="synthetic:parts?seed=3&width=320&height=240", width=640, height=480))
    try:
        frames = [src.read() for _ in range(2)]
    finally:
        src.close()
    assert src.live
    assert src.frames_total is None
    for i, frame in enumerate(frames):
        assert frame is not None
        assert frame.index == i
        assert frame.image.shape == (240, 320, 3)
        assert frame.truth is not None
        assert frame.truth.image_shape == (240, 320)
        assert len(frame.truth) > 0
    assert frames[0].t_capture_ns < frames[1].t_capture_ns  # type: ignore[union-attr]


@pytest.mark.parametrize("fps", ["1e-300", "0", "nan", "inf"])
def test_a_uri_fps_the_pacer_cannot_wait_for_is_refused_like_source_fps(fps: str) -> None:
    # synthetic:parts?fps=1e-300 was taken, then the pacer's OverflowError (an infinite period) a traceback
    with pytest.raises(SourceError, match=rf"option fps must be a number >= 1e-06 \(got '{fps}'\)"):
        open_source(f"synthetic:parts?fps={fps}").close()


@pytest.mark.parametrize(
    ("uri", "port"),
    [
        ("rtsp://h:99999/x", "99999"),
        ("http://admin:se:cret@cam:0/video?a=b", "0"),
        ("rtsps://[::1]:70000", "70000"),
    ],
)
def test_a_stream_port_out_of_range_is_refused_at_once_naming_it(uri: str, port: str) -> None:
    # rtsp://h:99999/x was taken and then retried for ever (FFmpeg cannot open it)
    with pytest.raises(SourceError, match=rf"port {port} is out of range \(1-65535\)$") as err:
        parse_uri(uri)
    assert "cret" not in str(err.value)
    for good in ("rtsp://h:65535/x", "rtsp://user:99999@h/x", "http://cam/x?port=:99999", "rtsp://h/x:99999"):
        assert parse_uri(good).target == good


def test_a_uri_longer_than_a_file_name_can_be_is_parsed_not_a_traceback() -> None:
    # a gst: pipeline of over 255 characters without a '/' raised "File name too long" from Path.exists
    long = "a" * 300
    assert parse_uri(f"gst:{long}").scheme == "gst"
    assert parse_uri(f"v4l2:{long}").scheme == "v4l2"
    with pytest.raises(SourceError, match="glob matches no files"):
        make_source(f"*{long}.png")


@pytest.mark.parametrize("option", ["width", "height"])
def test_a_synthetic_size_beyond_8k_is_refused_naming_the_option(option: str) -> None:
    # synthetic:parts?width=100000 was taken: minutes of laying out the scene before the first frame
    with pytest.raises(
        SourceError, match=rf"option {option} must be an integer in \[1, 8192\] \(got '100000'\)"
    ):
        make_source(f"synthetic:parts?{option}=100000")


def test_a_paced_source_says_its_rate_and_a_recording_of_it_plays_at_that_rate(tmp_path: Path) -> None:
    """The demo's scene is paced at 30 fps: its recording was written at the video sink's fallback of 25 and
    played a fifth too slow."""
    from edgeseg import cli

    for uri, fps in (("synthetic:parts?fps=30", 30.0), ("synthetic:parts", None)):  # (unpaced: no rate)
        src = open_source(uri)
        src.close()
        assert src.stats.fps == fps
    video = tmp_path / "demo.mp4"
    assert (
        cli.main(["run", "--source", "synthetic:parts?fps=30", "--output", str(video), "--max-frames", "5"])
        == 0
    )
    cap = cv2.VideoCapture(str(video))
    try:
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
    finally:
        cap.release()


def test_paced_synthetic_source_stops_when_closed_from_another_thread() -> None:
    src = open_source("synthetic:parts?width=320&height=240&fps=0.01")  # one frame per 100 s
    assert src.read() is not None
    threading.Timer(0.05, src.close).start()
    assert src.read() is None


def test_a_paced_synthetic_scene_moves_on_in_real_time_when_read_slowly() -> None:
    # a camera at 50 fps read every ~70 ms: each frame is the scene as it is at its capture time, so the
    # indices skip the frames nobody read (the tracker's velocities then hold at any reading rate)
    src = open_source("synthetic:parts?width=320&height=240&fps=50")
    try:
        frames = []
        for _ in range(6):
            frame = src.read()
            assert frame is not None
            frames.append(frame)
            time.sleep(0.07)
    finally:
        src.close()
    t0 = frames[0].t_capture_ns
    for frame in frames:
        # a frame's capture time lies in its tick's 20 ms (once, a time read after the tick was chosen lay in
        # the next one, when the thread was preempted in between)
        assert 0 <= (frame.t_capture_ns - t0) / 20e6 - frame.index < 1
    assert frames[-1].index >= 15
    assert src.stats.frames == 6


def test_backoff_doubles_up_to_the_maximum() -> None:
    assert list(itertools.islice(backoff_delays(0.5, 4.0), 6)) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def _read_as_stream(
    tmp_path: Path, length: int, reads: int, initial_s: float, max_s: float
) -> tuple[OpenCVLiveSource, list[Frame | None]]:
    """``reads`` reads of a video of ``length`` frames opened as a stream: it ends, and is reconnected."""
    video = tmp_path / "stream.avi"
    _write_video(video, length)
    src = OpenCVLiveSource(
        str(video), str(video), cv2.CAP_FFMPEG, reconnect_initial_s=initial_s, reconnect_max_s=max_s
    )
    src.open()
    try:
        return src, [src.read() for _ in range(reads)]
    finally:
        src.close()


def test_live_stream_that_ends_is_reconnected_with_backoff(tmp_path: Path) -> None:
    src, frames = _read_as_stream(tmp_path, 4, 10, 0.001, 0.004)
    assert src.live
    assert [f.index for f in frames if f is not None] == list(range(10))  # capture count goes on
    levels = [int(f.image.mean() + 5) // 10 for f in frames if f is not None]
    assert levels == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]  # the "stream" came back twice
    assert src.stats.reconnects == 2


def test_a_stream_that_drops_after_each_connect_backs_off_and_logs_a_few_lines_not_two_a_drop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a flapping stream (one frame, then it drops: a camera that keeps crashing, a flaky link) is one outage
    # going on: retried ever more slowly, its drops logged 1-3, 10, 20, ... as failed attempts are
    caplog.set_level(logging.DEBUG, logger="edgeseg.sources")
    src, frames = _read_as_stream(tmp_path, 1, 25, 0.01, 0.04)
    assert [f.index for f in frames if f is not None] == list(range(25))
    assert src.stats.reconnects == 24
    drops = [r for r in caplog.records if "stream dropped after 1 frame(s)" in r.getMessage()]
    assert len(drops) == 24
    assert (
        drops[-1]
        .getMessage()
        .endswith("reconnecting in 0.04 s (drop 24 in a row; drops are reported again at 30)")
    )
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # drops 1, 2, 3, 10 and 20, each with its "frames flow again" (it was 48 lines, two a drop)
    assert len(warned) == 10


def test_live_source_whose_first_connect_never_succeeds_stops_cleanly(tmp_path: Path) -> None:
    missing = tmp_path / "camera-not-there.avi"
    src = OpenCVLiveSource(
        str(missing), str(missing), cv2.CAP_FFMPEG, reconnect_initial_s=0.001, reconnect_max_s=0.01
    )
    src.open()
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(src.read()))
    reader.start()
    try:
        _wait_until(lambda: src.stats.reconnects >= 3)
        assert src.stats.state.startswith(("waiting for source (attempt", "connecting"))
        assert src.stats.last_error == f"cannot open {missing}"
    finally:
        src.close()
        reader.join(timeout=10)
    assert not reader.is_alive()
    assert result == [None]
    assert src.stats.frames == 0
    assert src.stats.state == "closed"


def test_live_source_connects_once_the_stream_appears(tmp_path: Path) -> None:
    video = tmp_path / "late.avi"
    src = OpenCVLiveSource(
        str(video), str(video), cv2.CAP_FFMPEG, reconnect_initial_s=0.001, reconnect_max_s=0.01
    )
    src.open()
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(src.read()))
    reader.start()
    _wait_until(lambda: src.stats.reconnects >= 2)
    _write_video(tmp_path / "tmp.avi", 2)
    (tmp_path / "tmp.avi").rename(video)  # appears atomically, like a camera being plugged in
    reader.join(timeout=10)
    src.close()
    assert len(result) == 1
    assert result[0] is not None
    assert src.stats.state == "closed"


def test_gst_pipeline_needs_an_opencv_with_gstreamer() -> None:
    if opencv_has_gstreamer():
        src = open_source("gst:videotestsrc num-buffers=2 ! videoconvert ! video/x-raw,format=BGR ! appsink")
        frame = src.read()
        src.close()
        assert frame is not None
        assert frame.image.ndim == 3
    else:
        with pytest.raises(SourceError, match="no GStreamer support"):
            open_source("gst:videotestsrc ! appsink")


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer")
def test_a_gst_source_under_pips_opencv_names_the_system_opencv_it_hides_and_how_to_uncover_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian's and JetPack's python3-opencv (with GStreamer) carry no pip metadata, so pip install put
    opencv-python (without) into the --system-site-packages venv ahead of it; the error then said to apt
    install python3-opencv, which was installed."""
    system = tmp_path / "dist-packages"
    system.mkdir()
    # where Debian's python3-opencv puts it (cv2.cpython-311-aarch64-linux-gnu.so); found, never imported
    hidden = system / f"cv2{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    hidden.write_bytes(b"")
    monkeypatch.setattr(sys, "path", [*sys.path, str(system)])
    with pytest.raises(SourceError) as caught:
        open_source("gst:videotestsrc ! appsink")
    message = str(caught.value)
    assert cv2.__file__ in message
    assert f"hides the one at {hidden}" in message
    assert message.endswith(": pip uninstall opencv-python (in this environment)")


def test_truncated_video_reports_the_frames_its_header_announces_against_those_decoded(
    assets_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = (assets_dir / "video" / "pedestrians_crossing_640x360.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 3 // 10])  # its index (moov) comes first, so it still opens
    src = open_source(str(cut))
    try:
        indices = _drain(src)
    finally:
        src.close()
    stats = src.stats
    assert stats.expected == 188
    assert 0 < stats.frames == len(indices) < 188
    assert stats.missing == 188 - stats.frames - stats.skipped
    assert stats.lost == stats.skipped + stats.missing
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"decoded {stats.frames}" in warnings[-1]
    assert "of the 188 frames its header announces (truncated or damaged file" in warnings[-1]


def test_no_intact_asset_video_is_reported_truncated_even_where_its_header_overstates(
    assets_dir: Path,
) -> None:
    counts = {}
    for video in sorted((assets_dir / "video").iterdir()):
        src = open_source(str(video))
        try:
            _drain(src)
        finally:
            src.close()
        assert (src.stats.skipped, src.stats.missing, src.stats.lost) == (0, 0, 0), video.name
        counts[video.name] = (src.stats.frames, src.stats.expected)
    # 682 chunks in its AVI index, 341 of them empty "repeat the previous frame" ones: the header overstates.
    assert counts["crowd_topdown_1280x720_h264.avi"] == (341, 682)


def test_a_paced_video_file_reports_its_own_frame_rate(tmp_path: Path) -> None:
    _write_video(tmp_path / "v.avi", 3)  # 10 fps
    src = open_source(SourceConfig(uri=str(tmp_path / "v.avi"), fps=200))
    try:
        assert _drain(src) == [0, 1, 2]
    finally:
        src.close()
    assert src.stats.fps == 10


def test_truncated_jpeg_is_processed_flagged_damaged_and_counted_with_its_file_name(
    assets_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copy(assets_dir / "images" / "bus.jpg", tmp_path / "a1.jpg")
    data = (assets_dir / "images" / "zidane.jpg").read_bytes()
    (tmp_path / "a2.jpg").write_bytes(data[: len(data) // 2])  # libjpeg decodes the top half
    (tmp_path / "a3.jpg").write_bytes(data[:100])  # headers only: nothing decodes
    src = open_source(str(tmp_path))
    try:
        frames = []
        while (frame := src.read()) is not None:
            frames.append(frame)
    finally:
        src.close()
    assert [(f.index, Path(f.file or "").name, f.damaged) for f in frames] == [
        (0, "a1.jpg", False),
        (1, "a2.jpg", True),
    ]
    assert frames[1].image.shape == (720, 1280, 3)
    assert (src.stats.damaged, src.stats.skipped, src.stats.lost) == (1, 1, 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(tmp_path / "a2.jpg") in w and "frame 1" in w and "truncated JPEG" in w for w in warnings)

    results = [Result(f, Instances.empty(f.shape)) for f in frames]
    records = [result_record(r, seq) for seq, r in enumerate(results)]
    assert records[0]["file"] == str(tmp_path / "a1.jpg")
    assert "damaged" not in records[0]
    assert records[1]["damaged"] is True
    schema = load_schema("results")
    for r in results:
        jsonschema.validate(json.loads(results_payload(encoded_record(r), "0" * 32, 0)), schema)
