"""The picamera2/IMX500 adapter against fakes of the two picamera2 classes it touches (tests/imx500_fake.py,
which cites the picamera2 0.3.36 lines each behaviour copies)."""

from __future__ import annotations

import logging
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FakeClock
from imx500_fake import AI_CAMERA_ID, RPK, World, aspect_crop

from edgeseg.config import SourceConfig
from edgeseg.errors import MissingDependencyError, SourceError, SourceGoneError
from edgeseg.sources import open_source, parse_uri
from edgeseg.sources.picamera2 import UPLOAD_TIMEOUT_S, Picamera2Source, import_picamera2

OUTPUT_SHAPES: list[tuple[int, ...]] = [(21, 17, 3), (5,)]  # as CnnOutputTensorInfo lists them (no batch)


def _flat_outputs(frame: int) -> np.ndarray:
    total = sum(int(np.prod(s)) for s in OUTPUT_SHAPES)
    return np.arange(total, dtype=np.float32) + 1000 * frame


def _source(
    tmp_path: Path,
    world: World,
    width: int = 640,
    height: int = 480,
    capture_timeout_s: float | None = None,
    **kwargs: Any,
) -> Picamera2Source:
    network = tmp_path / "net.rpk"
    network.write_bytes(RPK)
    config = SourceConfig(uri=f"picamera2:?network={network}&fps=15", width=width, height=height, **kwargs)
    src = Picamera2Source.from_uri(parse_uri(config.uri), config)
    src._modules_factory = world.modules  # the narrowest boundary: where the picamera2 classes come from
    if capture_timeout_s is not None:  # (5 s, or three frame times of a slower camera)
        src._capture_timeout_s = capture_timeout_s
    src.open()
    return src


def test_imx500_is_built_before_picamera2(tmp_path: Path) -> None:
    world = World()
    src = _source(tmp_path, world)
    src.close()
    assert world.built == ["IMX500", "Picamera2"]


def test_a_numbered_camera_gets_the_network_on_its_own_sensor_and_is_the_one_captured(
    tmp_path: Path,
) -> None:
    # two AI Cameras on a Raspberry Pi 5, one service each: picamera2:1 must not load camera 0's sensor
    second = "/base/axi/pcie@120000/rp1/i2c@80000/imx500@1a"
    world = World(
        cameras=[
            {"Model": "imx500", "Id": AI_CAMERA_ID, "Num": 0},
            {"Model": "imx500", "Id": second, "Num": 1},
        ]
    )
    network = tmp_path / "net.rpk"
    network.write_bytes(RPK)
    src = Picamera2Source("picamera2:1", camera_num=1, network=str(network), modules=world.modules)
    src.open()
    src.close()
    assert world.imx500 is not None
    assert world.imx500.sensor_id == second
    assert world.opened == [second]


def test_on_sensor_outputs_are_attached_in_network_order_with_a_batch_axis(tmp_path: Path) -> None:
    world = World(results_from=0, shapes=OUTPUT_SHAPES)
    src = _source(tmp_path, world)
    frame = src.read()
    src.close()
    assert frame is not None
    assert frame.tensors is not None
    assert list(frame.tensors) == ["output0", "output1"]
    flat = _flat_outputs(0)
    first = flat[: 21 * 17 * 3].reshape((21, 17, 3), order="F")[None]
    assert frame.tensors["output0"].dtype == np.float32
    np.testing.assert_array_equal(frame.tensors["output0"], first)
    np.testing.assert_array_equal(frame.tensors["output1"], flat[21 * 17 * 3 :][None])


def test_frames_during_the_upload_are_held_back_until_the_first_result(tmp_path: Path) -> None:
    world = World(results_from=3, shapes=OUTPUT_SHAPES)
    src = _source(tmp_path, world)
    frames = [src.read() for _ in range(2)]
    src.close()
    assert [f.index for f in frames if f is not None] == [0, 1]
    assert all(f is not None and f.tensors is not None for f in frames)
    assert len(world.requests) == 5  # three grabbed without results, not delivered
    assert src.stats.frames == 2


def _states_while_uploading(world: World, src: Picamera2Source, clock: FakeClock) -> list[tuple[str, bool]]:
    """The source's state line and waiting flag at each capture (the device calls the upload spans), the
    captures a second apart (the progress is read once a second)."""
    seen: list[tuple[str, bool]] = []
    capture = src._camera.capture_request

    def spying(wait: bool | float | None = None) -> Any:
        seen.append((src.stats.state, src.stats.waiting))
        clock.now += 1.0
        return capture(wait)

    src._camera.capture_request = spying
    src.read()
    return seen


def test_the_upload_is_the_state_line_and_the_source_waits_until_the_first_result(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    world = World(results_from=3, shapes=OUTPUT_SHAPES)
    src = _source(tmp_path, world)
    after_open = src.stats.state
    seen = _states_while_uploading(world, src, fake_clock)
    after = src.stats
    src.close()
    assert after_open == "uploading network firmware"  # not "connecting" for the minutes the upload takes
    assert seen == [
        ("uploading network firmware", True),
        ("uploading network firmware 40%", True),
        ("uploading network firmware 80%", True),
        ("uploading network firmware 100%", True),
    ]
    assert (after.state, after.waiting) == ("running", False)


def test_unreadable_upload_progress_is_an_upload_without_percentage_not_a_crash(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    world = World(results_from=3, shapes=OUTPUT_SHAPES, progress_readable=False)
    src = _source(tmp_path, world)
    seen = _states_while_uploading(world, src, fake_clock)
    src.close()
    assert seen == [("uploading network firmware", True)] * 4


def test_the_upload_progress_is_read_once_a_second_not_at_every_frame(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    """Each read of the progress runs two processes on the Pi (picamera2's ``cat`` of two debugfs files, or
    ``sudo -n`` of two helper scripts, each run a line in the journal): at every frame of the upload, 60 a
    second at 30 fps for minutes. picamera2's own progress bar polls every 0.5 s (``imx500.py:497-509``)."""
    world = World(results_from=20, shapes=OUTPUT_SHAPES)
    src = _source(tmp_path, world)
    capture = src._camera.capture_request

    def a_frame_later(wait: bool | float | None = None) -> Any:
        fake_clock.now += 0.125  # (8 fps)
        return capture(wait)

    src._camera.capture_request = a_frame_later
    frame = src.read()
    src.close()
    assert frame is not None
    assert frame.tensors is not None
    assert world.progress_reads == 3  # 20 frames in 2.5 s: at the first, 1 s and 2 s later


def test_frames_without_a_result_after_the_first_are_held_back_and_counted(tmp_path: Path) -> None:
    world = World(results_from=0, shapes=OUTPUT_SHAPES, no_results_at=frozenset({1, 2}))
    src = _source(tmp_path, world)
    frames = [src.read() for _ in range(2)]
    src.close()
    assert all(f is not None and f.tensors is not None for f in frames)
    assert len(world.requests) == 4
    assert (src.stats.frames, src.stats.held_back) == (2, 2)


def test_frames_without_a_result_are_logged_at_info_as_the_camera_outpacing_the_network_is_normal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """picamera2's IMX500 demos take ``get_outputs() is None`` as routine (they keep the last result, and set
    the camera's FrameRate to the network's ``inference_rate``: ``imx500_object_detection_demo.py``); a
    camera at its default rate with a slower network misses results on most frames. Only results missing
    for ``capture_timeout_s`` warn (a drop, the test below)."""
    world = World(results_from=0, shapes=OUTPUT_SHAPES, no_results_at=frozenset({1, 2}))
    src = _source(tmp_path, world)
    with caplog.at_level(logging.INFO, logger="edgeseg.sources"):
        frames = [src.read() for _ in range(2)]
    src.close()
    assert all(f is not None for f in frames)
    assert src.stats.held_back == 2
    held = [r for r in caplog.records if "no result for a frame" in r.getMessage()]
    assert [r.levelno for r in held] == [logging.INFO, logging.INFO]


def test_a_sensor_that_stops_giving_results_is_a_drop_that_says_so(tmp_path: Path) -> None:
    """Frames keep coming without results (the network stopped): without a limit every one was held back
    for ever, the watchdog fed and nothing said."""
    world = World(results_from=0, shapes=OUTPUT_SHAPES, no_results_from=1)
    src = _source(tmp_path, world, capture_timeout_s=0.05, reconnect_initial_s=0.001)
    assert src.read() is not None
    reader = threading.Thread(target=src.read)
    reader.start()
    deadline = time.monotonic() + 5
    while src.stats.reconnects < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    src.close()
    reader.join(5)
    assert not reader.is_alive()
    assert src.stats.reconnects >= 1
    assert "the IMX500 gave frames but no result for" in (src.stats.last_error or "")
    assert world.built.count("IMX500") == 1  # the network stays loaded


def test_the_upload_limit_counts_from_when_the_camera_streams_not_from_the_network_load(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    """The network uploads while the camera streams: a camera that could not be opened for longer than the
    limit must still get its whole upload time, not be given up on at its first frame."""
    world = World(results_from=3, shapes=OUTPUT_SHAPES)
    world.cameras_open = 1  # held elsewhere: Picamera2() fails
    src = _source(tmp_path, world, reconnect_initial_s=0.001, reconnect_max_s=0.001, reconnect_timeout_s=0)
    assert src.stats.attempt == 1
    fake_clock.now += 2 * UPLOAD_TIMEOUT_S
    world.cameras_open = 0
    frame = src.read()
    src.close()
    assert frame is not None
    assert frame.tensors is not None


def test_a_network_with_no_result_for_the_upload_limit_of_streaming_ends_the_source(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    world = World(results_from=10**9, shapes=OUTPUT_SHAPES)
    src = _source(tmp_path, world)
    capture = src._camera.capture_request

    def a_minute_later(wait: bool | float | None = None) -> Any:
        fake_clock.now += 60.0
        return capture(wait)

    src._camera.capture_request = a_minute_later
    with pytest.raises(SourceGoneError, match="gave no result in 900 s of streaming"):
        src.read()
    src.close()
    assert len(world.requests) == 15
    assert world.cameras_open == 0


@pytest.mark.parametrize(
    ("size", "zoom", "roi", "network_sees"),
    [
        ((640, 480), None, None, aspect_crop((640, 480))),  # 4:3 of the 4056x3040 sensor: 4053 wide
        ((1280, 720), None, None, aspect_crop((1280, 720))),  # 16:9: the sensor is cropped top and bottom
        ((640, 480), (1014, 760, 2028, 1520), (0.5, 0.25, 0.5, 0.5), (2028, 760, 1014, 1520)),  # zoom, roi
    ],
)
def test_inference_crop_is_cut_to_the_image_and_mapped_with_what_the_network_saw(
    tmp_path: Path,
    size: tuple[int, int],
    zoom: tuple[int, int, int, int] | None,
    roi: tuple[float, float, float, float] | None,
    network_sees: tuple[int, int, int, int],
) -> None:
    world = World(results_from=0, zoom=zoom)
    src = _source(tmp_path, world, width=size[0], height=size[1], roi=roi)
    frame = src.read()
    src.close()
    assert world.imx500 is not None
    assert frame is not None
    assert frame.tensor_roi is not None
    assert world.imx500.config["roi"] == network_sees
    cx, cy, cw, ch = world.requests[-1].metadata["ScalerCrop"]
    x, y, w, h = network_sees
    assert frame.tensor_roi == pytest.approx(((x - cx) / cw, (y - cy) / ch, w / cw, h / ch))
    # once the crop is inside the image, picamera2's own mapping agrees (to its integer rounding)
    px = world.imx500.get_roi_scaled(world.requests[-1])
    normalized = (px[0] / size[0], px[1] / size[1], px[2] / size[0], px[3] / size[1])
    assert frame.tensor_roi == pytest.approx(normalized, abs=2 / min(size))


def test_sensor_crop_is_normalized_and_stamped_at_the_sensor(tmp_path: Path) -> None:
    world = World(results_from=0, zoom=(507, 380, 3042, 2280))
    src = _source(tmp_path, world)
    before = time.monotonic_ns()
    frame = src.read()
    src.close()
    assert frame is not None
    assert frame.roi == pytest.approx((0.125, 0.125, 0.75, 0.75))  # ScalerCrop over the pixel array
    assert frame.t_capture_ns < before  # stamped at the sensor, before the request was read


def test_roi_outside_the_image_is_one_clear_line(tmp_path: Path) -> None:
    world = World(results_from=0, zoom=(0, 0, 2028, 1520))
    with pytest.raises(SourceError, match=r"source\.roi .* lies outside the image"):
        _source(tmp_path, world, roi=(0.6, 0.6, 0.3, 0.3))


def test_an_roi_outside_the_image_leaves_the_camera_closed(tmp_path: Path) -> None:
    """The error comes from the first frame's metadata, with the camera configured and started: it stayed
    open and streaming, and close() skipped it (the source never counted as connected), so the process ended
    with picamera2's threads still running in libcamera (every other failure of a connect closes it)."""
    world = World(results_from=0, zoom=(0, 0, 2028, 1520))
    network = tmp_path / "net.rpk"
    network.write_bytes(RPK)
    src = Picamera2Source("picamera2:", network=str(network), roi=(0.6, 0.6, 0.3, 0.3), modules=world.modules)
    with pytest.raises(SourceError, match="lies outside the image"):
        src.open()
    src.close()
    assert world.cameras_open == 0
    assert world.closed == 1


def test_every_request_is_released(tmp_path: Path) -> None:
    world = World()
    src = _source(tmp_path, world)
    for _ in range(4):
        src.read()
    src.close()
    assert len(world.requests) == 6  # two held back during the upload
    assert all(r.released for r in world.requests)
    assert world.closed == 1


def test_the_cameras_frame_rate_is_the_sources(tmp_path: Path) -> None:
    src = _source(tmp_path, World())  # (fps=15 in its URI)
    src.close()
    assert src.stats.fps == 15.0


def test_roi_becomes_the_on_sensor_inference_crop(tmp_path: Path) -> None:
    world = World()
    src = _source(tmp_path, world, roi=(0.25, 0.25, 0.5, 0.5))
    src.close()
    assert world.roi_calls == [(1014, 760, 2028, 1520)]


def test_camera_failure_is_reconnected_without_reloading_the_network(tmp_path: Path) -> None:
    world = World(results_from=0, fail_capture_at=2)
    src = _source(tmp_path, world, reconnect_initial_s=0.001)
    frames = [src.read() for _ in range(3)]
    src.close()
    assert [f.index for f in frames if f is not None] == [0, 1, 2]
    assert world.built == ["IMX500", "Picamera2", "Picamera2"]
    assert src.stats.reconnects == 1


def test_a_camera_that_stalls_is_given_up_on_after_the_capture_timeout_and_opened_again(
    tmp_path: Path,
) -> None:
    """A camera whose frontend timed out completes no request: capture_request() without a timeout waited for
    ever (raspberrypi/picamera2#1086), and a stop() queued behind the abandoned capture would too."""
    world = World(results_from=0, stall_capture_at=2)
    src = _source(tmp_path, world, reconnect_initial_s=0.001, capture_timeout_s=0.2)
    started = time.monotonic()
    frames = [src.read() for _ in range(3)]
    waited = time.monotonic() - started
    src.close()
    assert [f.index for f in frames if f is not None] == [0, 1, 2]
    assert world.built == ["IMX500", "Picamera2", "Picamera2"]
    assert src.stats.reconnects == 1
    assert 0.2 <= waited < 10


@pytest.mark.parametrize("fault", ["stall", "fail"])
def test_a_camera_whose_first_frame_does_not_come_is_closed_and_opened_again(
    tmp_path: Path, fault: str
) -> None:
    """The crop is fitted to the first frame's metadata after start: a stall there waited for ever, and a
    failure left the camera open, so that every later try failed to open it ("Camera __init__ sequence did
    not complete")."""
    world = World(results_from=0, **{f"{fault}_metadata_at": 1})
    src = _source(tmp_path, world, reconnect_initial_s=0.001, capture_timeout_s=0.2)
    frame = src.read()
    src.close()
    assert frame is not None
    assert world.built == ["IMX500", "Picamera2", "Picamera2"]
    assert world.cameras_open == 0
    assert src.stats.reconnects == 1


@pytest.mark.parametrize(("fault", "reason"), [("stall", "the camera stalled"), ("fail", "capture failed")])
def test_a_camera_that_keeps_dropping_is_reported_as_reconnects_are_not_at_every_drop(
    tmp_path: Path, fault: str, reason: str, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An AI Camera that stalls after each frame for months logged a WARNING at every stall (one line each
    cycle); its drops are now the live sources' drops, reported 1-3, 10, 20, … with the reason in the line."""
    caplog.set_level(logging.DEBUG, logger="edgeseg.sources")
    world = World(results_from=0, **{f"{fault}_capture_every": 2})  # a frame, a drop, a frame, a drop, …
    src = _source(tmp_path, world, reconnect_initial_s=0.001, reconnect_max_s=0.001, capture_timeout_s=0.001)
    frames = [src.read() for _ in range(25)]  # (the clock stands still: no connection holds for STABLE_S)
    src.close()
    assert all(f is not None for f in frames)
    assert src.stats.reconnects == 24
    drops = [r for r in caplog.records if "dropped" in r.getMessage() or reason in r.getMessage()]
    assert len(drops) == 24  # one line a drop, with its reason in it
    assert all(reason in r.getMessage() for r in drops)
    warned = [r.getMessage() for r in drops if r.levelno >= logging.WARNING]
    assert len(warned) == 5  # drops 1, 2, 3, 10 and 20
    assert "(drop 20 in a row; drops are reported again at 30)" in warned[-1]


def test_plain_camera_without_network_attaches_nothing(tmp_path: Path) -> None:
    world = World(zoom=(507, 380, 3042, 2280))
    src = Picamera2Source("picamera2:", modules=world.modules)
    src.open()
    frame = src.read()
    src.close()
    assert frame is not None
    assert frame.tensors is None
    assert frame.tensor_roi is None
    assert frame.roi == pytest.approx((0.125, 0.125, 0.75, 0.75))
    assert world.built == ["Picamera2"]


def test_missing_network_file_is_one_clear_line(tmp_path: Path) -> None:
    src = Picamera2Source("picamera2:", network=str(tmp_path / "nope.rpk"), modules=World().modules)
    with pytest.raises(SourceError, match=r"IMX500 network not found: .*nope\.rpk"):
        src.open()


@pytest.mark.parametrize(
    "content",
    [b"9464" + bytes([0, 0, 3, 232]) + bytes(20), b"<!DOCTYPE html><html>a download page</html>"],
    ids=["cut-short", "not-a-package"],
)
def test_a_network_file_picamera2_cannot_read_is_one_clear_line(tmp_path: Path, content: bytes) -> None:
    # IMX500() parses the .rpk itself: struct.error for a download cut short, libarchive's ArchiveError for a
    # file that is no network package (imx500.py:823-860 in 0.3.36)
    network = tmp_path / "net.rpk"
    network.write_bytes(content)
    src = Picamera2Source("picamera2:", network=str(network), modules=World().modules)
    with pytest.raises(SourceError, match=r"cannot load IMX500 network .*net\.rpk: "):
        src.open()


def test_without_picamera2_the_error_says_what_to_install() -> None:
    with pytest.raises(MissingDependencyError, match="apt install python3-picamera2"):
        open_source("picamera2:")


def test_picamera2_broken_by_numpy_2_in_the_venv_is_one_line_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Raspberry Pi OS's picamera2 imports its encoders, hence apt's simplejpeg, built for Debian's numpy 1.x;
    # a venv with --system-site-packages that pip gave numpy 2 fails there with a ValueError, not an
    # ImportError (picamera2/encoders/jpeg_encoder.py:3 "import simplejpeg"; raspberrypi/picamera2#1211,
    # #1088)
    package = tmp_path / "picamera2"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise ValueError('numpy.dtype size changed, may indicate binary incompatibility. "
        "Expected 96 from C header, got 88 from PyObject')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    with pytest.raises(MissingDependencyError, match=r"^picamera2 cannot load .*simplejpeg"):
        open_source("picamera2:")


def test_imx500_support_missing_a_module_names_it_instead_of_asking_for_a_newer_picamera2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # picamera2/devices/imx500/imx500.py:12-17 (0.3.36) imports Imath, OpenEXR, jsonschema and libarchive;
    # Raspberry Pi OS Trixie lacks Imath: "No module named 'Imath'" (raspberrypi/picamera2#1345)
    package = tmp_path / "picamera2"
    (package / "devices").mkdir(parents=True)
    (package / "__init__.py").write_text("class Picamera2:\n    pass\n")
    (package / "devices" / "__init__.py").write_text("import Imath\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("picamera2", "picamera2.devices"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(MissingDependencyError) as raised:
        import_picamera2(True)
    assert "No module named 'Imath'" in str(raised.value)
    assert ">= 0.3.22" not in str(raised.value)


def test_picamera2_missing_libcamera_names_it_instead_of_saying_it_is_only_on_raspberry_pi_os(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pip install picamera2 in a venv without --system-site-packages: picamera2/picamera2.py imports
    # libcamera, apt's python3-libcamera (not on PyPI): "No module named 'libcamera'"
    package = tmp_path / "picamera2"
    package.mkdir()
    (package / "__init__.py").write_text("import libcamera\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    with pytest.raises(MissingDependencyError) as raised:
        import_picamera2(False)
    assert "'libcamera'" in str(raised.value)
    assert "--system-site-packages" in str(raised.value)
    assert "only on Raspberry Pi OS" not in str(raised.value)


@pytest.fixture
def picamera2_0_3_17(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed picamera2 older than 0.3.22: ``Picamera2`` but no ``picamera2.devices.IMX500``."""
    module = types.ModuleType("picamera2")
    module.Picamera2 = object  # type: ignore[attr-defined]
    module.__path__ = []  # a package whose submodule picamera2.devices has no IMX500
    devices = types.ModuleType("picamera2.devices")
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setitem(sys.modules, "picamera2.devices", devices)


@pytest.mark.usefixtures("picamera2_0_3_17")
def test_plain_camera_works_with_a_picamera2_older_than_0_3_22() -> None:
    assert import_picamera2(False).Picamera2 is object


@pytest.mark.usefixtures("picamera2_0_3_17")
def test_network_with_a_picamera2_older_than_0_3_22_says_which_version_is_needed() -> None:
    with pytest.raises(
        MissingDependencyError, match=r"needs picamera2 >= 0\.3\.22 \(picamera2\.devices\.IMX500\)"
    ):
        import_picamera2(True)
