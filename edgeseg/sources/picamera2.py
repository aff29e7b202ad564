"""``picamera2:``: the Raspberry Pi camera, optionally running an IMX500 network on the sensor (AI Camera).

URI: ``picamera2:[N][?network=/path/net.rpk&fps=30&width=640&height=480]`` (``N`` camera number, default 0;
URI options win over the config's ``imx500_network``, ``fps``, ``width``, ``height``).

With a network, each frame carries what the sensor computed for it:

* ``Frame.tensors``: ``{"output0": …, "output1": …}``, float32 arrays with a leading batch axis, in the
  network's output order, exactly as ``IMX500.get_outputs(metadata, add_batch=True)`` returns them (the
  flat ``CnnOutputTensor`` reshaped in Fortran order with the shapes in ``CnnOutputTensorInfo``). Frames the
  network has no result for (``get_outputs`` returns ``None``, e.g. during the firmware upload) carry
  ``tensors=None``.
* ``Frame.tensor_roi``: the region of the image the network saw, normalized: ``IMX500.get_roi_scaled``
  (the inference crop mapped into main-stream pixels) divided by the image size.

``source.roi`` becomes the on-sensor inference crop (``IMX500.set_inference_roi_abs`` in full-sensor pixels),
because the sensor only runs the network on that crop. ``IMX500(network)`` is built before ``Picamera2()``,
as the firmware upload requires; the upload takes minutes the first time and shows in ``stats.state``
(``"uploading network firmware 40%"``) and in the log, not as a hang.

picamera2 lives only on Raspberry Pi OS (``apt install python3-picamera2``); it is imported when the source
opens. Tests pass fake ``Picamera2``/``IMX500`` classes through ``modules``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from edgeseg.errors import MissingDependencyError, SourceError
from edgeseg.geometry import FULL_ROI, Roi, validate_roi
from edgeseg.sources import ParsedUri, check_options, option_float, option_int
from edgeseg.sources.live import Grab, LiveSource

if TYPE_CHECKING:
    from edgeseg.sources.spec import SourceConfig

log = logging.getLogger("edgeseg.sources")

OPTIONS = ("network", "fps", "width", "height")
IMX500_SENSOR_WH = (4056, 3040)  # full pixel array: the coordinates of set_inference_roi_abs
FW_NETWORK_STAGE = 2  # picamera2.devices.imx500.imx500.FW_NETWORK_STAGE


class Picamera2Modules(NamedTuple):
    """The two picamera2 classes the source uses (real ones, or fakes in tests)."""

    Picamera2: Callable[..., Any]
    IMX500: Callable[..., Any]


def import_picamera2() -> Picamera2Modules:
    """``picamera2.Picamera2`` and ``picamera2.devices.IMX500`` (MissingDependencyError: what to install)."""
    try:
        from picamera2 import Picamera2
        from picamera2.devices import IMX500
    except ImportError as e:
        raise MissingDependencyError(
            f"picamera2 is only on Raspberry Pi OS: apt install python3-picamera2 ({e})"
        ) from None
    return Picamera2Modules(Picamera2, IMX500)


def _rect(value: Any) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` of a tuple or a libcamera ``Rectangle`` (older picamera2 returns the latter)."""
    if hasattr(value, "width"):
        return (float(value.x), float(value.y), float(value.width), float(value.height))
    x, y, w, h = value
    return (float(x), float(y), float(w), float(h))


def _normalized(rect: Sequence[float], wh: tuple[int, int]) -> Roi | None:
    """A pixel rectangle as a normalized roi, clipped to the frame; None when empty."""
    x, y, w, h = rect
    left, top = min(max(x / wh[0], 0.0), 1.0), min(max(y / wh[1], 0.0), 1.0)
    width, height = min(w / wh[0], 1.0 - left), min(h / wh[1], 1.0 - top)
    if width <= 0 or height <= 0:
        return None
    return validate_roi((left, top, width, height))


class Picamera2Source(LiveSource):
    """Frames ``(H, W, 3)`` uint8 BGR from picamera2 (format ``RGB888``, which libcamera orders B, G, R).

    Args:
        uri: for messages.
        camera_num: picamera2 camera number (with a network, the IMX500's own ``camera_num`` is used).
        network: path of an IMX500 network package (``.rpk``), or None for a plain camera.
        width, height: main stream size (None: picamera2's default).
        fps: ``FrameRate`` control (None: the camera's default).
        roi: on-sensor inference crop, normalized over the full sensor (network only).
        modules: where the picamera2 classes come from (:func:`import_picamera2`; fakes in tests).
    """

    def __init__(
        self,
        uri: str,
        *,
        camera_num: int = 0,
        network: str | None = None,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        roi: Roi | None = None,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        give_up_after_s: float | None = None,
        modules: Callable[[], Picamera2Modules] = import_picamera2,
    ) -> None:
        super().__init__(uri, reconnect_initial_s, reconnect_max_s, give_up_after_s)
        self.camera_num = camera_num
        self.network = network
        self._size = (width, height) if width and height else None
        self._fps = fps
        self._roi = roi
        self._modules_factory = modules
        self._modules: Picamera2Modules | None = None
        self._imx500: Any = None
        self._camera: Any = None
        self._results = 0  # frames that carried on-sensor outputs
        self._fw_decile = -1

    @classmethod
    def from_uri(cls, parsed: ParsedUri, config: SourceConfig) -> Picamera2Source:
        """Build from ``picamera2:[N][?network=…&fps=…&width=…&height=…]`` and the source config."""
        check_options(parsed, OPTIONS)
        if parsed.target and not parsed.target.isdigit():
            raise SourceError(
                f"source URI {parsed.uri!r}: picamera2: takes a camera number (picamera2:0), "
                f"got {parsed.target!r}"
            )
        return cls(
            parsed.uri,
            camera_num=int(parsed.target or 0),
            network=parsed.options.get("network") or config.imx500_network,
            width=option_int(parsed, "width", config.width or 0) or None,
            height=option_int(parsed, "height", config.height or 0) or None,
            fps=option_float(parsed, "fps", config.fps),
            roi=config.roi,
            reconnect_initial_s=config.reconnect_initial_s,
            reconnect_max_s=config.reconnect_max_s,
            give_up_after_s=config.give_up_after_s(),
        )

    def open(self) -> None:
        """Import picamera2, load the network onto the sensor (before ``Picamera2()``), start the camera."""
        self._modules = self._modules_factory()
        if self.network is not None:
            if not os.path.isfile(self.network):
                raise SourceError(f"source URI {self.uri!r}: IMX500 network not found: {self.network}")
            try:
                self._imx500 = self._modules.IMX500(self.network)
            except (RuntimeError, OSError) as e:
                raise SourceError(
                    f"source URI {self.uri!r}: cannot load IMX500 network {self.network}: {e}"
                ) from None
            self.camera_num = int(getattr(self._imx500, "camera_num", self.camera_num))
            if self._roi is not None:
                left, top, width, height = self._roi
                sw, sh = IMX500_SENSOR_WH
                self._imx500.set_inference_roi_abs(
                    (round(left * sw), round(top * sh), round(width * sw), round(height * sh))
                )
            self._state = "uploading network firmware"
            log.info(
                "%s: uploading network %s to the IMX500 (minutes the first time)", self.uri, self.network
            )
        super().open()

    def _connect(self) -> str | None:
        modules = self._modules or self._modules_factory()
        try:
            camera = modules.Picamera2(self.camera_num)
            main: dict[str, Any] = {"format": "RGB888"}
            if self._size is not None:
                main["size"] = self._size
            controls = {"FrameRate": float(self._fps)} if self._fps else {}
            config = camera.create_preview_configuration(
                main=main, controls=controls, buffer_count=12 if self._imx500 is not None else 4
            )
            camera.configure(config)
            camera.start()
        except (RuntimeError, OSError, IndexError) as e:
            return f"cannot start camera {self.camera_num}: {e}"
        self._camera = camera
        return None

    def _grab(self) -> Grab | None:
        camera = self._camera
        try:
            request = camera.capture_request()
        except (RuntimeError, OSError) as e:
            log.warning("%s: capture failed: %s", self.uri, e)
            return None
        try:
            metadata = request.get_metadata()
            t_ns, wall = self._capture_time(metadata), time.time()
            image = np.ascontiguousarray(request.make_array("main")[:, :, :3], dtype=np.uint8)
            wh = (int(image.shape[1]), int(image.shape[0]))
            roi = self._sensor_roi(metadata)
            tensors, tensor_roi = None, None
            if self._imx500 is not None:
                outputs = self._imx500.get_outputs(metadata, add_batch=True)
                if outputs is not None:
                    tensors = {f"output{i}": np.asarray(t, dtype=np.float32) for i, t in enumerate(outputs)}
                    self._results += 1
                else:
                    self._report_firmware()
                tensor_roi = _normalized(_rect(self._imx500.get_roi_scaled(request)), wh)
        finally:
            request.release()
        return Grab(
            image=image, t_capture_ns=t_ns, wall_time=wall, roi=roi, tensors=tensors, tensor_roi=tensor_roi
        )

    def _disconnect(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            try:
                camera.stop()
            finally:
                camera.close()

    def _running_state(self) -> str:
        if self._imx500 is not None and not self._results:
            return self._state  # still uploading: keep the upload progress line
        return "running"

    def _report_firmware(self) -> None:
        """Surface the network upload progress while the sensor has produced no result yet."""
        if self._results:
            return
        current, total = self._imx500.get_fw_upload_progress(FW_NETWORK_STAGE)
        if total:
            pct = 100 * current / total
            self._state = f"uploading network firmware {pct:.0f}%"
            if int(pct // 10) > self._fw_decile:
                self._fw_decile = int(pct // 10)
                log.info("%s: %s (%d of %d bytes)", self.uri, self._state, current, total)

    def _capture_time(self, metadata: dict[str, Any]) -> int:
        """Sensor exposure start in ``time.monotonic_ns`` units (libcamera stamps CLOCK_BOOTTIME)."""
        now = time.monotonic_ns()
        sensor_ns = metadata.get("SensorTimestamp")
        if not isinstance(sensor_ns, int) or sensor_ns <= 0:
            return now
        age = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - sensor_ns
        return now - age if 0 <= age < 10**10 else now

    def _sensor_roi(self, metadata: dict[str, Any]) -> Roi:
        """Normalized part of the pixel array the image covers (``ScalerCrop`` over ``PixelArraySize``)."""
        crop = metadata.get("ScalerCrop")
        array = getattr(self._camera, "camera_properties", {}).get("PixelArraySize")
        if crop is None or array is None:
            return FULL_ROI
        return _normalized(_rect(crop), (int(array[0]), int(array[1]))) or FULL_ROI
