"""The picamera2/IMX500 adapter against fakes of the two picamera2 classes it touches.

picamera2 cannot be imported here (no libcamera). The fakes stand in at the narrowest boundary (the
``Picamera2`` and ``IMX500`` classes) and reproduce what the real ones hand over: ``CnnOutputTensor`` as a
flat float32 sequence reshaped in Fortran order by ``IMX500.get_outputs`` (``None`` on frames without a
result), ``get_roi_scaled`` as an ``(x, y, w, h)`` tuple in main-stream pixels, ``ScalerCrop`` in sensor
pixels, ``SensorTimestamp`` in CLOCK_BOOTTIME nanoseconds, and ``make_array`` as an ``(H, W, 3)`` uint8 array.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from edgeseg.config import SourceConfig
from edgeseg.errors import MissingDependencyError, SourceError
from edgeseg.sources import open_source, parse_uri
from edgeseg.sources.picamera2 import Picamera2Modules, Picamera2Source

OUTPUT_SHAPES = [(21, 17, 3), (5,)]  # as CnnOutputTensorInfo lists them (no batch axis)
MAIN_WH = (640, 480)
INFERENCE_ROI_PX = (80, 0, 480, 480)  # the square the network sees, in main-stream pixels


def _flat_outputs(frame: int) -> list[float]:
    total = sum(int(np.prod(s)) for s in OUTPUT_SHAPES)
    return list(np.arange(total, dtype=np.float32) + 1000 * frame)


class FakeRequest:
    def __init__(self, camera: FakePicamera2, index: int) -> None:
        self.picam2 = camera
        self.index = index
        self.released = False
        self.metadata: dict[str, Any] = {
            "ScalerCrop": (507, 380, 3042, 2280),
            "SensorTimestamp": time.clock_gettime_ns(time.CLOCK_BOOTTIME) - 5_000_000,
        }
        if index >= camera.world.results_from:  # the network delivers once the firmware is up
            self.metadata["CnnOutputTensor"] = _flat_outputs(index)
            self.metadata["CnnOutputTensorInfo"] = b"\0" * 712

    def get_metadata(self) -> dict[str, Any]:
        return self.metadata

    def make_array(self, stream: str) -> np.ndarray:
        assert stream == "main"
        w, h = self.picam2.configured["main"]["size"]
        return np.full((h, w, 3), self.index % 256, np.uint8)

    def release(self) -> None:
        self.released = True


class World:
    """What the fakes share: the order things were built in, the requests handed out, failures to inject."""

    def __init__(self, results_from: int = 2, fail_capture_at: int | None = None) -> None:
        self.results_from = results_from
        self.fail_capture_at = fail_capture_at
        self.built: list[str] = []
        self.requests: list[FakeRequest] = []
        self.roi_abs: tuple[int, int, int, int] | None = None
        self.closed = 0
        self.captures = 0

    def modules(self) -> Picamera2Modules:
        world = self

        class IMX500(FakeIMX500):
            def __init__(self, network_file: str, camera_id: str = "") -> None:
                super().__init__(world, network_file)

        class Picamera2(FakePicamera2):
            def __init__(self, camera_num: int = 0) -> None:
                super().__init__(world, camera_num)

        return Picamera2Modules(Picamera2=Picamera2, IMX500=IMX500)


class FakeIMX500:
    def __init__(self, world: World, network_file: str) -> None:
        world.built.append("IMX500")
        self.world = world
        self.network_file = network_file
        self.camera_num = 0
        self._progress = 0

    def get_outputs(self, metadata: dict[str, Any], add_batch: bool = False) -> list[np.ndarray] | None:
        flat = metadata.get("CnnOutputTensor")
        if not flat:
            return None
        values = np.fromiter(flat, dtype=np.float32)
        outputs, offset = [], 0
        for shape in OUTPUT_SHAPES:
            size = int(np.prod(shape))
            tensor = values[offset : offset + size].reshape(shape, order="F")
            outputs.append(np.expand_dims(tensor, 0) if add_batch else tensor)
            offset += size
        return outputs

    def get_roi_scaled(self, request: FakeRequest, stream: str = "main") -> tuple[int, int, int, int]:
        assert request.picam2.configured[stream]["size"] == MAIN_WH
        return INFERENCE_ROI_PX

    def get_input_size(self) -> tuple[int, int]:
        return (513, 513)

    def get_fw_upload_progress(self, stage_req: int) -> tuple[int, int]:
        self._progress = min(self._progress + 400_000, 1_000_000)
        return (self._progress, 1_000_000) if stage_req == 2 else (0, 0)

    def set_inference_roi_abs(self, roi: tuple[int, int, int, int]) -> None:
        self.world.roi_abs = roi


class FakePicamera2:
    camera_properties: ClassVar[dict[str, tuple[int, int]]] = {"PixelArraySize": (4056, 3040)}

    def __init__(self, world: World, camera_num: int) -> None:
        world.built.append("Picamera2")
        self.world = world
        self.camera_num = camera_num
        self.configured: dict[str, Any] = {}
        self.started = False

    def create_preview_configuration(
        self, main: dict[str, Any], controls: dict[str, Any], buffer_count: int
    ) -> dict[str, Any]:
        return {"main": {"size": main.get("size", MAIN_WH), "format": main["format"]}, "controls": controls}

    def configure(self, config: dict[str, Any]) -> None:
        self.configured = config

    def camera_configuration(self) -> dict[str, Any]:
        return self.configured

    def start(self) -> None:
        self.started = True

    def capture_request(self) -> FakeRequest:
        assert self.started
        self.world.captures += 1
        if self.world.captures == self.world.fail_capture_at:
            raise RuntimeError("Camera frontend has timed out!")
        request = FakeRequest(self, len(self.world.requests))
        self.world.requests.append(request)
        return request

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.world.closed += 1


def _source(tmp_path: Path, world: World, **kwargs: Any) -> Picamera2Source:
    network = tmp_path / "net.rpk"
    network.write_bytes(b"rpk")
    config = SourceConfig(uri=f"picamera2:?network={network}&fps=15", width=640, height=480, **kwargs)
    src = Picamera2Source.from_uri(parse_uri(config.uri), config)
    src._modules_factory = world.modules  # the narrowest boundary: where the two classes come from
    src.open()
    return src


def test_imx500_is_built_before_picamera2(tmp_path: Path) -> None:
    world = World()
    src = _source(tmp_path, world)
    src.close()
    assert world.built == ["IMX500", "Picamera2"]


def test_on_sensor_outputs_are_attached_in_network_order_with_a_batch_axis(tmp_path: Path) -> None:
    world = World(results_from=0)
    src = _source(tmp_path, world)
    frame = src.read()
    src.close()
    assert frame is not None
    assert frame.tensors is not None
    assert list(frame.tensors) == ["output0", "output1"]
    flat = np.asarray(_flat_outputs(0), np.float32)
    first = flat[: 21 * 17 * 3].reshape((21, 17, 3), order="F")[None]
    assert frame.tensors["output0"].dtype == np.float32
    np.testing.assert_array_equal(frame.tensors["output0"], first)
    np.testing.assert_array_equal(frame.tensors["output1"], flat[21 * 17 * 3 :][None])


def test_frames_without_a_network_result_carry_no_tensors_and_show_the_upload(tmp_path: Path) -> None:
    world = World(results_from=2)
    src = _source(tmp_path, world)
    frames = [src.read() for _ in range(3)]
    state_after_first_result = src.stats.state
    src.close()
    assert [f.tensors is None for f in frames if f is not None] == [True, True, False]
    assert state_after_first_result == "running"
    assert all(f is not None and f.image.shape == (480, 640, 3) for f in frames)


def test_firmware_upload_progress_is_the_state_until_the_first_result(tmp_path: Path) -> None:
    world = World(results_from=10)
    src = _source(tmp_path, world)
    src.read()
    state = src.stats.state
    src.close()
    assert state == "uploading network firmware 40%"


def test_input_tensor_roi_and_sensor_crop_are_normalized(tmp_path: Path) -> None:
    world = World(results_from=0)
    src = _source(tmp_path, world)
    before = time.monotonic_ns()
    frame = src.read()
    src.close()
    assert frame is not None
    assert frame.tensor_roi == pytest.approx((0.125, 0.0, 0.75, 1.0))
    assert frame.roi == pytest.approx((0.125, 0.125, 0.75, 0.75))  # ScalerCrop over the pixel array
    assert frame.t_capture_ns < before  # stamped at the sensor, before the request was read


def test_every_request_is_released(tmp_path: Path) -> None:
    world = World()
    src = _source(tmp_path, world)
    for _ in range(4):
        src.read()
    src.close()
    assert len(world.requests) == 4
    assert all(r.released for r in world.requests)
    assert world.closed == 1


def test_roi_becomes_the_on_sensor_inference_crop(tmp_path: Path) -> None:
    world = World()
    src = _source(tmp_path, world, roi=(0.25, 0.25, 0.5, 0.5))
    src.close()
    assert world.roi_abs == (1014, 760, 2028, 1520)


def test_camera_failure_is_reconnected_without_reloading_the_network(tmp_path: Path) -> None:
    world = World(fail_capture_at=2)
    src = _source(tmp_path, world, reconnect_initial_s=0.001)
    frames = [src.read() for _ in range(3)]
    src.close()
    assert [f.index for f in frames if f is not None] == [0, 1, 2]
    assert world.built == ["IMX500", "Picamera2", "Picamera2"]
    assert src.stats.reconnects == 1


def test_plain_camera_without_network_attaches_nothing(tmp_path: Path) -> None:
    world = World()
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


def test_without_picamera2_the_error_says_what_to_install() -> None:
    with pytest.raises(MissingDependencyError, match="apt install python3-picamera2"):
        open_source("picamera2:")
