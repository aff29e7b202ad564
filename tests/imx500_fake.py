"""Fakes of picamera2's ``Picamera2`` and ``IMX500`` classes that reproduce what the real ones do.

picamera2 cannot be imported here (no libcamera). The fakes stand in at the narrowest boundary (the two
classes) and copy the real behaviour from raspberrypi/picamera2 v0.3.36 (file/line of that tag):

- ``IMX500(network_file, camera_id)`` loads the network onto the first IMX500 sensor whose device-tree node
  contains ``camera_id`` (any IMX500 for ``''``) and takes that camera's ``Num`` from
  ``Picamera2.global_camera_info()`` as its ``camera_num``; none: RuntimeError (``imx500.py:308-335``).
  ``Picamera2(n)`` opens ``global_camera_info()[n]``, a list sorted by reversed ``Id``
  (``picamera2.py:296-312, 344``).
- ``IMX500.__init__`` reads the network package itself (``__ni_from_network``, ``imx500.py:823-860``): the
  firmware blocks' headers with ``struct`` (``struct.error`` on a file cut short), then the cpio archive after
  them with libarchive (``ArchiveError`` when it is none); :data:`RPK` is the smallest package it accepts.
- ``IMX500.__init__`` sets the inference crop to the full sensor
  (``picamera2/devices/imx500/imx500.py:366-367``); ``set_inference_roi_abs`` bounds it to the sensor and
  keeps it in ``config['roi']`` (``imx500.py:687-716``).
- ``get_fw_upload_progress`` asserts when debugfs is not readable (``imx500.py:373-379, 469-487``:
  ``fw_progress`` is ``NONE`` without access to ``/sys/kernel/debug`` or the ``sudo -n`` helper) and returns
  ``(0, 0)`` outside the requested stage; each call runs two processes (``cat`` of two debugfs files, or
  ``sudo -n`` of two helper scripts: ``imx500.py:373-387``), which ``World.progress_reads`` counts.
- ``get_outputs`` returns None without ``CnnOutputTensor``, else the flat float32 tensor cut and reshaped in
  Fortran order with the shapes parsed from the 712-byte ``CnnOutputTensorInfo`` struct
  (``imx500.py:660-685, 734-762``; ``[]`` shapes, hence ``[]`` outputs, for an all-zero struct).
- ``get_roi_scaled`` is the inference crop bounded to the frame's ``ScalerCrop`` and scaled into main-stream
  pixels, through the raw (sensor-mode) size with libcamera's integer ``Rectangle`` arithmetic
  (``imx500.py:511-539``): a crop outside the image is clipped, not shifted.
- ``get_input_size`` is the network's input, 320x320 for the zoo DeepLabV3+ (raspberrypi/imx500-models
  README).
- ``Picamera2.configure`` crops the sensor to the main stream's aspect ratio (``picamera2.py:1274-1280``:
  ``ScalerCrops`` from libcamera with ``preserve_ar``), unless a zoom ``ScalerCrop`` is set; every frame's
  metadata carries that ``ScalerCrop`` in full-sensor pixels and ``SensorTimestamp`` in CLOCK_BOOTTIME ns;
  ``capture_metadata`` is the next frame's metadata (``picamera2.py:1962-1989``); ``make_array`` is
  ``(H, W, 3)`` uint8.

The world is a scene in full-sensor pixels (rectangles of a class id): the image shows it through the
ScalerCrop, the network's class map shows it through the inference crop, so a test can check where a
decoded instance lands in the image.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import errno
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from edgeseg.sources.picamera2 import Picamera2Modules

SENSOR = (4056, 3040)
RAW_WH = (2028, 1520)  # the IMX500 sensor mode picamera2 picks for preview sizes
NETWORK_WH = (320, 320)
AI_CAMERA_ID = "/base/axi/pcie@120000/rp1/i2c@88000/imx500@1a"  # libcamera id: its device-tree node
Rect = tuple[int, int, int, int]
# a network package with no firmware block and an empty newc cpio archive (only its TRAILER!!! entry)
RPK = b"070701" + b"0" * 88 + b"0000000B" + b"0" * 8 + b"TRAILER!!!\0" + b"\0" * 3 + b"\0" * 400


class ArchiveError(Exception):
    """``libarchive.exception.ArchiveError`` (libarchive-c), which ``fd_reader`` raises for a non-archive."""


def read_network_package(path: str) -> None:
    """What ``IMX500.__ni_from_network`` (``imx500.py:823-860``, 0.3.36) reads of the file."""
    with open(path, "rb") as fp:
        fw = memoryview(fp.read())
    cpio_offset = 0
    while True:
        (magic, size) = struct.unpack(">4sI", fw[:8])
        if magic != b"9464":
            break
        fw = fw[8:]
        flags = struct.unpack("8B", fw[:8])
        fw = fw[(size + 60 - 8) :]
        (magic,) = struct.unpack("4s", fw[:4])
        if magic != b"3695":
            raise RuntimeError(f"No matching footer found in firmware file {path}")
        fw = fw[4:]
        cpio_offset += size + 64
        if (flags[6] & 0x01) == 1:
            fw = fw[32:]
            cpio_offset += 32
    with open(path, "rb") as fp:
        fp.seek(cpio_offset)
        if fp.read(6) not in (b"070701", b"070702", b"070707"):
            raise ArchiveError("Unrecognized archive format (errno=84, retcode=-30, archive_p=1)")


class OutputTensorInfo(ctypes.LittleEndianStructure):  # imx500.py:48-54
    _fields_ = [
        ("tensor_data_num", ctypes.c_uint32),
        ("num_dimensions", ctypes.c_uint32),
        ("size", ctypes.c_uint16 * 16),
    ]


class CnnOutputTensorInfoExported(ctypes.LittleEndianStructure):  # imx500.py:58-64
    _fields_ = [
        ("network_name", ctypes.c_char * 64),
        ("num_tensors", ctypes.c_uint32),
        ("info", OutputTensorInfo * 16),
        ("frameCount", ctypes.c_uint8),
    ]


assert ctypes.sizeof(CnnOutputTensorInfoExported) == 712


def tensor_info(shapes: list[tuple[int, ...]]) -> bytes:
    """``CnnOutputTensorInfo`` as libcamera exports it."""
    info = CnnOutputTensorInfoExported()
    info.network_name = b"deeplabv3plus"
    info.num_tensors = len(shapes)
    for i, shape in enumerate(shapes):
        info.info[i].tensor_data_num = i
        info.info[i].num_dimensions = len(shape)
        for k, d in enumerate(shape):
            info.info[i].size[k] = d
    return bytes(info)


def bounded(a: Rect, b: Rect) -> Rect:
    """libcamera ``Rectangle::boundedTo``."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return (x0, y0, max(x1 - x0, 0), max(y1 - y0, 0))


def scaled(r: Rect, num: tuple[int, int], den: tuple[int, int]) -> Rect:
    """libcamera ``Rectangle::scaledBy`` (integer arithmetic)."""
    return (
        r[0] * num[0] // den[0],
        r[1] * num[1] // den[1],
        r[2] * num[0] // den[0],
        r[3] * num[1] // den[1],
    )


def aspect_crop(wh: tuple[int, int]) -> Rect:
    """The centred full-sensor crop with the main stream's aspect ratio (libcamera's ``ScalerCrops``)."""
    sw, sh = SENSOR
    if wh[0] * sh >= wh[1] * sw:  # wider than 4:3: full width
        h = sw * wh[1] // wh[0]
        return (0, (sh - h) // 2, sw, h)
    w = sh * wh[0] // wh[1]
    return ((sw - w) // 2, 0, w, sh)


@dataclass
class World:
    """What the fakes share: the scene, the order things were built in, the requests, failures to inject.

    ``shapes``: the network's outputs, counting values (default: a DeepLab class map of ``objects`` seen
    through the inference crop, ``output_wh`` pixels). ``objects``: ``(class id, (x, y, w, h) in full-sensor
    px)``.
    """

    results_from: int = 2
    # requests whose metadata carries no CnnOutputTensor after the results began (a frame the network has
    # no output for: get_outputs returns None, imx500.py:662-664); ``no_results_from``: every one from there
    no_results_at: frozenset[int] = frozenset()
    no_results_from: int | None = None
    fail_capture_at: int | None = None
    stall_capture_at: int | None = None  # that capture's request never completes (a frontend timeout)
    stall_metadata_at: int | None = None  # likewise the request of that capture_metadata()
    # every that many captures one fails or stalls (a camera that keeps failing: the last one of each run)
    fail_capture_every: int | None = None
    stall_capture_every: int | None = None
    fail_metadata_at: int | None = None
    # from this request on, mapping the frame's buffer fails as with the memory gone: make_array maps it
    # (request.py's _MappedBuffer, through the allocator's sync: mmap.mmap, OSError ENOMEM)
    fail_mapping_from: int | None = None
    cameras_open: int = 0
    metadata_calls: int = 0
    progress_readable: bool = True
    progress_reads: int = 0  # get_fw_upload_progress calls (two processes each on a Pi)
    zoom: Rect | None = None  # a ScalerCrop set by the user; None: picamera2's aspect-ratio crop
    objects: list[tuple[int, Rect]] = field(default_factory=list)
    shapes: list[tuple[int, ...]] | None = None
    output_wh: tuple[int, int] = NETWORK_WH
    built: list[str] = field(default_factory=list)
    requests: list[FakeRequest] = field(default_factory=list)
    roi_calls: list[Rect] = field(default_factory=list)
    imx500: FakeIMX500 | None = None
    # what Picamera2.global_camera_info() lists, already in its order (picamera2.py:296-312)
    cameras: list[dict[str, Any]] = field(
        default_factory=lambda: [{"Model": "imx500", "Id": AI_CAMERA_ID, "Num": 0}]
    )
    opened: list[str] = field(default_factory=list)  # the Id of each camera Picamera2() opened
    closed: int = 0
    captures: int = 0
    frames: int = 0

    def modules(self, with_imx500: bool = True) -> Picamera2Modules:
        world = self

        class IMX500(FakeIMX500):
            def __init__(self, network_file: str, camera_id: str = "") -> None:
                super().__init__(world, network_file, camera_id)

        class Picamera2(FakePicamera2):
            def __init__(self, camera_num: int = 0) -> None:
                super().__init__(world, camera_num)

            @staticmethod
            def global_camera_info() -> list[dict[str, Any]]:
                return world.cameras

        return Picamera2Modules(Picamera2=Picamera2, IMX500=IMX500 if with_imx500 else None)

    def render(self, view: Rect, wh: tuple[int, int]) -> np.ndarray:
        """Class ids of the scene seen through ``view`` (full-sensor px) at ``wh`` pixels (at centres)."""
        w, h = wh
        xs = view[0] + (np.arange(w) + 0.5) * view[2] / w
        ys = view[1] + (np.arange(h) + 0.5) * view[3] / h
        out = np.zeros((h, w), np.float32)
        for cls, (x, y, ow, oh) in self.objects:
            inside = ((ys >= y) & (ys < y + oh))[:, None] & ((xs >= x) & (xs < x + ow))[None, :]
            out[inside] = cls
        return out

    def outputs(self, frame: int) -> tuple[list[float], bytes]:
        """``CnnOutputTensor`` and ``CnnOutputTensorInfo`` for a frame."""
        if self.shapes is not None:
            total = sum(int(np.prod(s)) for s in self.shapes)
            return list(np.arange(total, dtype=np.float32) + 1000 * frame), tensor_info(self.shapes)
        assert self.imx500 is not None
        class_map = self.render(self.imx500.config["roi"], self.output_wh)
        # listed as (h, w) and read back in Fortran order by get_outputs
        return list(class_map.ravel(order="F")), tensor_info([class_map.shape])


class FakeRequest:
    def __init__(self, camera: FakePicamera2, index: int) -> None:
        self.picam2 = camera
        self.index = index
        self.released = False
        world = camera.world
        self.metadata: dict[str, Any] = camera.next_metadata()
        stopped = world.no_results_from is not None and index >= world.no_results_from
        skipped = index in world.no_results_at or stopped
        if (
            world.imx500 is not None and world.results_from <= index and not skipped
        ):  # once the firmware is up
            self.metadata["CnnOutputTensor"], self.metadata["CnnOutputTensorInfo"] = world.outputs(index)

    def get_metadata(self) -> dict[str, Any]:
        return self.metadata

    def make_array(self, stream: str) -> np.ndarray:
        assert stream == "main"
        world, wh = self.picam2.world, self.picam2.configured["main"]["size"]
        if world.fail_mapping_from is not None and self.index >= world.fail_mapping_from:
            raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
        if world.objects:
            ids = world.render(self.metadata["ScalerCrop"], wh)
            return np.repeat((ids * 10).astype(np.uint8)[:, :, None], 3, axis=2)
        return np.full((wh[1], wh[0], 3), self.index % 256, np.uint8)

    def release(self) -> None:
        self.released = True


class FakeIMX500:
    class FwProgressType:  # imx500.py:302-305
        NONE, DIRECT, INDIRECT = 0, 1, 2

    def __init__(self, world: World, network_file: str, camera_id: str = "") -> None:
        # imx500.py:312-335: the v4l2 subdevices of IMX500 sensors, the first whose of_node link (a path
        # ending in the camera's device-tree node) contains camera_id
        sensor = next(
            (
                c
                for c in world.cameras
                if c["Model"] == "imx500" and camera_id in f"../../../../firmware/devicetree{c['Id']}"
            ),
            None,
        )
        if sensor is None:
            raise RuntimeError("IMX500: Requested camera dev-node not found")
        read_network_package(network_file)
        world.built.append("IMX500")
        world.imx500 = self
        self.world = world
        self.network_file = network_file
        self.sensor_id = str(sensor["Id"])
        self.camera_num = int(sensor["Num"])
        self.config: dict[str, Any] = {"network_file": network_file}
        self.fw_progress = self.FwProgressType.DIRECT if world.progress_readable else self.FwProgressType.NONE
        self._progress = 0
        self.set_inference_roi_abs((0, 0, *SENSOR))  # imx500.py:366-367
        world.roi_calls.clear()

    def _fw_progress_read(self) -> str:
        assert self.fw_progress != self.FwProgressType.NONE  # imx500.py:374
        self._progress = min(self._progress + 400_000, 1_000_000)
        return f"2 {self._progress} 1000000"

    def get_fw_upload_progress(self, stage_req: int) -> tuple[int, int]:  # imx500.py:469-487
        self.world.progress_reads += 1
        stage, block, size = (int(v) for v in self._fw_progress_read().split())
        return (min(block, size), size) if stage == stage_req else (0, 0)

    def get_outputs(self, metadata: dict[str, Any], add_batch: bool = False) -> list[np.ndarray] | None:
        flat = metadata.get("CnnOutputTensor")
        if not flat:
            return None
        values = np.fromiter(flat, dtype=np.float32)
        outputs, offset = [], 0
        for shape in self.get_output_shapes(metadata):
            size = int(np.prod(shape))
            tensor = values[offset : offset + size].reshape(shape, order="F")
            outputs.append(np.expand_dims(tensor, 0) if add_batch else tensor)
            offset += size
        return outputs

    def get_output_shapes(self, metadata: dict[str, Any]) -> list[tuple[int, ...]]:  # imx500.py:679-685
        raw = metadata.get("CnnOutputTensorInfo")
        if not raw:
            return []
        assert len(raw) == ctypes.sizeof(CnnOutputTensorInfoExported)
        parsed = CnnOutputTensorInfoExported.from_buffer_copy(raw)
        return [tuple(t.size[: t.num_dimensions]) for t in parsed.info[: parsed.num_tensors]]

    def get_roi_scaled(self, request: FakeRequest, stream: str = "main") -> Rect:  # imx500.py:511-539
        isp = tuple(request.picam2.camera_configuration()[stream]["size"])
        sensor_crop = scaled(request.get_metadata()["ScalerCrop"], RAW_WH, SENSOR)
        obj = scaled(bounded((0, 0, *SENSOR), self.config["roi"]), RAW_WH, SENSOR)
        x, y, w, h = bounded(obj, sensor_crop)
        return scaled((x - sensor_crop[0], y - sensor_crop[1], w, h), isp, sensor_crop[2:])  # type: ignore[arg-type]

    def get_input_size(self) -> tuple[int, int]:
        return NETWORK_WH

    def set_inference_roi_abs(self, roi: tuple[int, int, int, int]) -> None:
        self.config["roi"] = bounded(tuple(int(v) for v in roi), (0, 0, *SENSOR))  # type: ignore[arg-type]
        self.world.roi_calls.append(self.config["roi"])


class FakePicamera2:
    camera_properties: ClassVar[dict[str, tuple[int, int]]] = {"PixelArraySize": SENSOR}

    def __init__(self, world: World, camera_num: int) -> None:
        if world.cameras_open:
            # picamera2.py:314-368, 574 (0.3.36): libcamera's acquire() fails on a camera that is open (in
            # this process too), and __init__ says so
            raise RuntimeError("Camera __init__ sequence did not complete.")
        world.cameras_open += 1
        world.built.append("Picamera2")
        world.opened.append(str(world.cameras[camera_num]["Id"]))  # picamera2.py:344 (IndexError if none)
        self.world = world
        self.camera_num = camera_num
        self.configured: dict[str, Any] = {}
        self.started = False
        self.scaler_crop: Rect = (0, 0, *SENSOR)
        self.stalled_jobs = 0  # capture jobs queued that will never complete

    def create_preview_configuration(
        self, main: dict[str, Any], controls: dict[str, Any], buffer_count: int
    ) -> dict[str, Any]:
        return {
            "main": {"size": main.get("size", (640, 480)), "format": main["format"]},
            "raw": {"size": RAW_WH},
            "controls": controls,
        }

    def configure(self, config: dict[str, Any]) -> None:
        self.configured = config
        self.scaler_crop = self.world.zoom or aspect_crop(config["main"]["size"])

    def camera_configuration(self) -> dict[str, Any]:
        return self.configured

    def start(self) -> None:
        self.started = True

    def next_metadata(self) -> dict[str, Any]:
        self.world.frames += 1
        return {
            "ScalerCrop": self.scaler_crop,
            "SensorTimestamp": time.clock_gettime_ns(time.CLOCK_BOOTTIME) - 5_000_000,
        }

    def capture_metadata(self, wait: bool | float | None = None) -> dict[str, Any]:
        assert self.started
        self.world.metadata_calls += 1
        if self.world.metadata_calls == self.world.fail_metadata_at:
            raise RuntimeError("Camera frontend has timed out!")
        if self.world.metadata_calls == self.world.stall_metadata_at:
            self._stall(wait)
        return self.next_metadata()

    def _stall(self, wait: bool | float | None) -> None:
        """A job whose request never completes: picamera2.py:1508-1535 (0.3.36) queues it and waits, a number
        being the longest wait (concurrent.futures' TimeoutError); None or True wait for ever
        (raspberrypi/picamera2#1086)."""
        if wait is None or wait is True:
            raise AssertionError("picamera2 would wait for ever on a camera that stalled")
        self.stalled_jobs += 1
        time.sleep(float(wait))
        raise concurrent.futures.TimeoutError()

    def capture_request(self, wait: bool | float | None = None) -> FakeRequest:
        assert self.started
        world = self.world
        world.captures += 1
        n = world.captures
        if n == world.fail_capture_at or (world.fail_capture_every and n % world.fail_capture_every == 0):
            raise RuntimeError("Camera frontend has timed out!")
        if n == world.stall_capture_at or (world.stall_capture_every and n % world.stall_capture_every == 0):
            self._stall(wait)
        request = FakeRequest(self, len(self.world.requests))
        self.world.requests.append(request)
        return request

    def cancel_all_and_flush(self) -> None:  # picamera2.py:1354-1366
        self.stalled_jobs = 0

    def stop(self) -> None:
        # picamera2.py:1394-1406: with its event loop in a thread (no preview: NullPreview's), stop() is a job
        # queued behind the others and waited for without a timeout
        if self.stalled_jobs:
            raise AssertionError("stop() would wait for ever behind a capture job that never completes")
        self.started = False

    def close(self) -> None:  # picamera2.py:704-716: stops a started camera first
        if self.started:
            self.stop()
        self.world.closed += 1
        self.world.cameras_open -= 1
