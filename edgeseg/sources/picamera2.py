"""``picamera2:``: the Raspberry Pi camera, optionally running an IMX500 network on the sensor (AI Camera).

URI: ``picamera2:[N][?network=/path/net.rpk&fps=30&width=640&height=480]`` (``N`` camera number, default 0;
URI options win over the config's ``imx500_network``, ``fps``, ``width``, ``height``).

With a network, each frame carries what the sensor computed for it:

* ``Frame.tensors``: ``{"output0": …, "output1": …}``, float32 arrays with a leading batch axis, in the
  network's output order, exactly as ``IMX500.get_outputs(metadata, add_batch=True)`` returns them (the
  flat ``CnnOutputTensor`` reshaped in Fortran order with the shapes in ``CnnOutputTensorInfo``). Frames the
  network has no result for (``get_outputs`` returns ``None``: the metadata has no ``CnnOutputTensor``,
  ``imx500.py:660-664``) are not delivered: during the firmware upload (below), and after the first result
  as ``stats.held_back`` (logged at INFO: with a network slower than the camera they are most frames, and
  picamera2's demos keep the last result for them). Results missing for ``capture_timeout_s`` in a row are a
  drop, with that reason and a warning: the camera is opened again.
* ``Frame.tensor_roi``: the region of the image the network saw, normalized: the inference crop (full-sensor
  pixels) over the frame's ``ScalerCrop`` (the part of the sensor the image shows).

``source.roi`` (default: the whole sensor) becomes the on-sensor inference crop
(``IMX500.set_inference_roi_abs`` in full-sensor pixels), because the sensor only runs the network on that
crop. The network sees that crop whatever the image shows, so after each configure it is cut to its
intersection with the ``ScalerCrop`` (as Sony modlib's ``AiCamera._verify_roi`` does, ``ai_camera.py``):
with a main stream that is not 4:3 (picamera2 then crops the sensor to the stream's aspect ratio,
``picamera2.py:1274-1280`` in 0.3.36), a zoom, or an roi crossing the image edge, a crop outside the image
would put the network's output where the image shows something else (``IMX500.get_roi_scaled`` clips it to
the image, ``imx500.py:536``, and so hides the shift).

``IMX500(network)`` is built before ``Picamera2()``, as the firmware upload requires. The upload takes minutes
the first time: until the first result ``stats.state`` is ``"uploading network firmware 40%"`` (read once a
second, :data:`PROGRESS_READ_S`; or without the percentage when debugfs is not readable: picamera2 >= 0.3.35
then asserts in ``get_fw_upload_progress``, ``imx500.py:373-379``), the source counts as waiting (the watchdog
stays fed) and frames without results are not delivered, so they are neither published as empty nor counted
as failed inference. A network with no result in :data:`UPLOAD_TIMEOUT_S` of the camera streaming (the
upload runs while it streams) ends ``read()`` with :class:`~edgeseg.errors.SourceGoneError` (status 4: the
service restarts, and uploads it again) rather than leaving an unattended device uploading for ever.

picamera2 lives only on Raspberry Pi OS (``apt install python3-picamera2``); it is imported when the source
opens, and ``picamera2.devices.IMX500`` (picamera2 >= 0.3.22) only with a network. Tests pass fake
``Picamera2``/``IMX500`` classes through ``modules``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as JobTimeout
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from edgeseg.errors import MissingDependencyError, SourceError, SourceGoneError
from edgeseg.geometry import FULL_ROI, Roi, validate_roi
from edgeseg.sources import ParsedUri, check_options, option_fps, option_int
from edgeseg.sources.live import Grab, LiveSource, reported_attempt
from edgeseg.sources.spec import MAX_SIDE

if TYPE_CHECKING:
    from edgeseg.sources.spec import SourceConfig

log = logging.getLogger("edgeseg.sources")

OPTIONS = ("network", "fps", "width", "height")
IMX500_SENSOR_WH = (4056, 3040)  # full pixel array: the coordinates of set_inference_roi_abs
FW_NETWORK_STAGE = 2  # picamera2.devices.imx500.imx500.FW_NETWORK_STAGE
# Longest wait for one frame (at least CAPTURE_FRAMES frame times at the camera's rate): a camera whose
# frontend timed out completes no request, and picamera2 waits for one for ever (raspberrypi/picamera2#1086)
CAPTURE_TIMEOUT_S = 5.0
CAPTURE_FRAMES = 3
IMX500_SINCE = "0.3.22"  # picamera2's CHANGELOG: "Add IMX500 support"
# How often the upload progress is read: each read runs two processes (cat of two debugfs files, or sudo -n of
# two helper scripts, each run logged: imx500.py:373-387 in 0.3.36), too many to run at every frame
PROGRESS_READ_S = 1.0
UPLOAD_TIMEOUT_S = 900.0  # the first upload of a network takes minutes; one with no result in 15 is stuck
Rect = tuple[float, float, float, float]


class Picamera2Modules(NamedTuple):
    """The picamera2 classes the source uses (real ones, or fakes in tests); IMX500 only with a network."""

    Picamera2: Callable[..., Any]
    IMX500: Callable[..., Any] | None


def import_picamera2(with_imx500: bool) -> Picamera2Modules:
    """``picamera2.Picamera2`` and, ``with_imx500``, ``picamera2.devices.IMX500`` (MissingDependencyError
    saying what to install)."""
    try:
        from picamera2 import Picamera2
    except ImportError as e:
        if e.name and not e.name.startswith("picamera2"):
            # picamera2 is there, a module it imports is not: most often libcamera (apt's python3-libcamera,
            # not on PyPI) after pip install picamera2, or in a venv made without --system-site-packages
            raise MissingDependencyError(
                f"picamera2 {_installed_version()} cannot load: the module {e.name!r} it imports is missing "
                "(apt's python3-libcamera provides libcamera): sudo apt install python3-picamera2, and make "
                "the venv with --system-site-packages"
            ) from None
        raise MissingDependencyError(
            f"picamera2 is only on Raspberry Pi OS: apt install python3-picamera2 ({e})"
        ) from None
    except ValueError as e:
        # picamera2 imports apt's simplejpeg, built for Debian's numpy 1.x; a venv where pip put numpy 2
        # (opencv-python >= 4.12 requires it) fails there with "numpy.dtype size changed"
        # (raspberrypi/picamera2#1211)
        raise MissingDependencyError(
            f"picamera2 cannot load under numpy {np.__version__} ({e}): Raspberry Pi OS builds its "
            "simplejpeg for its own numpy; in this environment: pip install --force-reinstall simplejpeg"
        ) from None
    if not with_imx500:
        return Picamera2Modules(Picamera2, None)
    try:
        from picamera2.devices import IMX500
    except ImportError as e:
        if not (e.name or "picamera2").startswith("picamera2"):
            # IMX500 is there, but a module its file imports is not (imx500.py:12-17 in 0.3.36: Imath,
            # OpenEXR, jsonschema, libarchive; Raspberry Pi OS Trixie lacks Imath, raspberrypi/picamera2#1345)
            raise MissingDependencyError(
                f"picamera2 {_installed_version()} cannot load its IMX500 support ({e}): install the "
                "module it names for this Python"
            ) from None
        raise MissingDependencyError(
            f"source.imx500_network needs picamera2 >= {IMX500_SINCE} (picamera2.devices.IMX500), this is "
            f"picamera2 {_installed_version()}: sudo apt update && "
            "sudo apt install python3-picamera2 imx500-all"
        ) from None
    return Picamera2Modules(Picamera2, IMX500)


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("picamera2")
    except PackageNotFoundError:
        return "of unknown version"


def _rect(value: Any) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` of a tuple or a libcamera ``Rectangle`` (older picamera2 returns the latter)."""
    if hasattr(value, "width"):
        return (float(value.x), float(value.y), float(value.width), float(value.height))
    x, y, w, h = value
    return (float(x), float(y), float(w), float(h))


def _normalized(rect: Sequence[float], wh: tuple[float, float]) -> Roi | None:
    """A pixel rectangle as a normalized roi, clipped to the frame; None when empty."""
    x, y, w, h = rect
    left, top = min(max(x / wh[0], 0.0), 1.0), min(max(y / wh[1], 0.0), 1.0)
    width, height = min(w / wh[0], 1.0 - left), min(h / wh[1], 1.0 - top)
    if width <= 0 or height <= 0:
        return None
    return validate_roi((left, top, width, height))


def _intersection(a: Rect, b: Rect) -> Rect | None:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


class Picamera2Source(LiveSource):
    """Frames ``(H, W, 3)`` uint8 BGR from picamera2 (format ``RGB888``, which libcamera orders B, G, R).

    Args:
        uri: for messages.
        camera_num: picamera2 camera number; with a network, that camera when it is an AI Camera (IMX500),
            else the first AI Camera.
        network: path of an IMX500 network package (``.rpk``), or None for a plain camera.
        width, height: main stream size (None: picamera2's default).
        fps: ``FrameRate`` control (None: the camera's default).
        roi: on-sensor inference crop, normalized over the full sensor (network only; default all of it).
        modules: where the picamera2 classes come from, given whether IMX500 is needed
            (:func:`import_picamera2`; fakes in tests).
        capture_timeout_s: longest wait for a frame (at least :data:`CAPTURE_FRAMES` frame times at
            ``fps``); then the camera is closed and opened again, as after a failed capture.
        upload_timeout_s: longest wait for the network's first result once the camera streams; then
            ``read()`` raises SourceGoneError.
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
        modules: Callable[[bool], Picamera2Modules] = import_picamera2,
        capture_timeout_s: float = CAPTURE_TIMEOUT_S,
        upload_timeout_s: float = UPLOAD_TIMEOUT_S,
    ) -> None:
        super().__init__(uri, reconnect_initial_s, reconnect_max_s, give_up_after_s)
        self.camera_num = camera_num
        self.network = network
        self._size = (width, height) if width and height else None
        self._fps = fps
        self._capture_timeout_s = max(capture_timeout_s, CAPTURE_FRAMES / fps) if fps else capture_timeout_s
        sw, sh = IMX500_SENSOR_WH
        fx, fy, fw, fh = roi or FULL_ROI
        # what the user asked for, and what the network is set to see (cut to the image at each configure)
        self._requested: Rect = (round(fx * sw), round(fy * sh), round(fw * sw), round(fh * sh))
        self._inference_roi: Rect = self._requested
        self._modules_factory = modules
        self._modules: Picamera2Modules | None = None
        self._imx500: Any = None
        self._camera: Any = None
        self._results = 0  # frames that carried on-sensor outputs
        self._last_result = 0.0  # when the last one came (monotonic s), or the camera started
        self._fw_decile = -1
        self._upload = "uploading network firmware"
        self._progress_readable = True
        self._next_progress_read = 0.0  # (monotonic s)
        self._upload_timeout_s = upload_timeout_s

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
            width=option_int(parsed, "width", config.width or 0, maximum=MAX_SIDE) or None,
            height=option_int(parsed, "height", config.height or 0, maximum=MAX_SIDE) or None,
            fps=option_fps(parsed, config.fps),
            roi=config.roi,
            reconnect_initial_s=config.reconnect_initial_s,
            reconnect_max_s=config.reconnect_max_s,
            give_up_after_s=config.give_up_after_s(),
        )

    def open(self) -> None:
        """Import picamera2, load the network onto the sensor (before ``Picamera2()``), start the camera."""
        if self.network is not None and not os.path.isfile(self.network):
            raise SourceError(f"source URI {self.uri!r}: IMX500 network not found: {self.network}")
        self._modules = self._modules_factory(self.network is not None)
        if self.network is not None and self._modules.IMX500 is not None:
            sensor = self._numbered_imx500(self._modules.Picamera2)
            try:
                self._imx500 = self._modules.IMX500(self.network, camera_id=sensor)
            except Exception as e:
                # (besides RuntimeError and OSError, its own reading of the .rpk raises struct.error for a
                # file cut short and libarchive's ArchiveError for one that is no package: imx500.py:823-860)
                raise SourceError(
                    f"source URI {self.uri!r}: cannot load IMX500 network {self.network}: {e}"
                ) from None
            if not sensor:  # the first AI Camera, whatever its number
                self.camera_num = int(getattr(self._imx500, "camera_num", self.camera_num))
            self._set_inference_roi(self._requested)
            log.info(
                "%s: uploading network %s to the IMX500 (minutes the first time)", self.uri, self.network
            )
        super().open()

    def _numbered_imx500(self, picamera2: Any) -> str:
        """libcamera's id of camera ``camera_num`` when it is an IMX500, else ``""``. ``IMX500(net)`` alone
        loads the network onto the first AI Camera (``imx500.py:308-335``: ``camera_id`` picks the sensor
        whose device-tree node contains it), so with two of them ``picamera2:1`` would load and capture camera
        0. Picamera2 numbers cameras by their place in ``global_camera_info()`` (``picamera2.py:344``)."""
        cameras = picamera2.global_camera_info()
        if self.camera_num >= len(cameras) or cameras[self.camera_num].get("Model") != "imx500":
            return ""  # not an AI Camera: the network goes to the first one, as before
        return str(cameras[self.camera_num]["Id"])

    def _connect(self) -> str | None:
        modules = self._modules or self._modules_factory(self.network is not None)
        try:
            camera = modules.Picamera2(self.camera_num)
        except (RuntimeError, OSError, IndexError) as e:
            return f"cannot start camera {self.camera_num}: {e}"
        self._camera = (
            camera  # (from here a failure closes it: the next try could not open it while it lives)
        )
        try:
            main: dict[str, Any] = {"format": "RGB888"}
            if self._size is not None:
                main["size"] = self._size
            controls = {"FrameRate": float(self._fps)} if self._fps else {}
            config = camera.create_preview_configuration(
                main=main, controls=controls, buffer_count=12 if self._imx500 is not None else 4
            )
            camera.configure(config)
            camera.start()
            if self._imx500 is not None:
                self._fit_inference_roi(camera.capture_metadata(wait=self._capture_timeout_s))
        except (RuntimeError, OSError, IndexError, JobTimeout) as e:
            if isinstance(e, JobTimeout):
                camera.cancel_all_and_flush()  # (see _grab)
            self._disconnect()
            return f"cannot start camera {self.camera_num}: {e or self._stalled()}"
        except SourceError:
            # an roi outside the image: the user's to fix, not retried; close() would skip a camera that
            # never counted as connected
            self._disconnect()
            raise
        self._last_result = time.monotonic()
        return None

    def _fit_inference_roi(self, metadata: dict[str, Any]) -> None:
        """Cut the requested inference crop to the image's ScalerCrop (SourceError when they do not meet)."""
        crop = metadata.get("ScalerCrop")
        if crop is None:
            return
        fit = _intersection(self._requested, _rect(crop))
        if fit is None:
            raise SourceError(
                f"source {self.uri!r}: source.roi {self._requested} (sensor px) lies outside the image "
                f"(ScalerCrop {_rect(crop)}): choose an roi inside it"
            )
        if fit != self._inference_roi:
            log.info(
                "%s: inference crop %s cut to the image's ScalerCrop %s: %s",
                self.uri,
                self._inference_roi,
                _rect(crop),
                fit,
            )
            self._set_inference_roi(fit)

    @property
    def inference_crop(self) -> Rect:
        """The crop the network runs on, ``(x, y, w, h)`` in full-sensor pixels."""
        return self._inference_roi

    def _set_inference_roi(self, rect: Rect) -> None:
        self._imx500.set_inference_roi_abs(tuple(round(v) for v in rect))
        self._inference_roi = rect

    def _grab(self) -> Grab | str | None:
        camera = self._camera
        try:
            # (a number: picamera2 waits that long, then raises; since 0.3.22's dispatch_functions)
            request = camera.capture_request(wait=self._capture_timeout_s)
        except JobTimeout:
            # The capture's job stays queued, and a stop() queued behind it would wait for it for ever
            # (picamera2.py:1404 in 0.3.36): cancelled first, as cancel_all_and_flush's docstring says to.
            camera.cancel_all_and_flush()
            return self._stalled()
        except (RuntimeError, OSError) as e:
            return f"capture failed: {e}"
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
                    self._last_result = time.monotonic()
                elif not self._results:
                    self._report_firmware()
                    self._check_upload_time()
                tensor_roi = self._tensor_roi(metadata, request, wh)
        finally:
            request.release()
        if tensors is None and self._results:
            # at INFO: a network slower than the camera misses most frames, which picamera2's demos take as
            # routine (they keep the last result); results missing for capture_timeout_s warn, as a drop
            if reported_attempt(self._held_back + 1):  # (read() counts it once it is held back)
                log.info(
                    "%s: the IMX500 gave no result for a frame (%d so far): held back",
                    self.uri,
                    self._held_back + 1,
                )
            silent_s = time.monotonic() - self._last_result
            if silent_s >= self._capture_timeout_s:
                return f"the IMX500 gave frames but no result for {silent_s:.1f} s"
        return Grab(
            image=image, t_capture_ns=t_ns, wall_time=wall, roi=roi, tensors=tensors, tensor_roi=tensor_roi
        )

    def _stalled(self) -> str:
        return f"the camera stalled (no frame in {self._capture_timeout_s:g} s)"

    def _disconnect(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            try:
                camera.stop()
            finally:
                camera.close()

    def _tensor_roi(self, metadata: dict[str, Any], request: Any, wh: tuple[int, int]) -> Roi | None:
        """The inference crop over this frame's ScalerCrop: the part of the image the network saw."""
        crop = metadata.get("ScalerCrop")
        if crop is None:  # no crop to map through: picamera2's own mapping
            return _normalized(_rect(self._imx500.get_roi_scaled(request)), wh)
        cx, cy, cw, ch = _rect(crop)
        x, y, w, h = self._inference_roi
        return _normalized((x - cx, y - cy, w, h), (cw, ch))

    def _preparing(self) -> bool:
        return self._imx500 is not None and not self._results

    def _nominal_fps(self) -> float | None:
        return self._fps

    def _holds_back(self, grab: Grab) -> bool:
        return self._imx500 is not None and grab.tensors is None

    def _running_state(self) -> str:
        return self._upload if self._preparing() else "running"

    def _report_firmware(self) -> None:
        """Surface the network upload progress while the sensor has produced no result yet."""
        now = time.monotonic()
        if self._results or not self._progress_readable or now < self._next_progress_read:
            return
        self._next_progress_read = now + PROGRESS_READ_S
        try:
            current, total = self._imx500.get_fw_upload_progress(FW_NETWORK_STAGE)
        except (AssertionError, OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
            # picamera2 >= 0.3.35 asserts without debugfs access or its sudo helper; older ones read debugfs
            self._progress_readable = False
            log.info(
                "%s: network upload progress is not readable (%s): waiting for the first result", self.uri, e
            )
            return
        if total:
            pct = 100 * current / total
            self._upload = f"uploading network firmware {pct:.0f}%"
            if int(pct // 10) > self._fw_decile:
                self._fw_decile = int(pct // 10)
                log.info("%s: %s (%d of %d bytes)", self.uri, self._upload, current, total)

    def _check_upload_time(self) -> None:
        """SourceGoneError once the network has given no result for ``upload_timeout_s`` since the camera
        started (the upload runs while it streams: a camera that could not be opened for a while still gets
        its whole time): until its first result the source counts as waiting, so nothing else would end the
        wait (the camera delivers, held back, and the watchdog stays fed)."""
        if time.monotonic() - self._last_result >= self._upload_timeout_s:  # (no result: the start)
            raise SourceGoneError(
                f"source {self.uri!r}: the IMX500 network {self.network} gave no result in "
                f"{self._upload_timeout_s:g} s of streaming ({self._upload}): a fresh start uploads it again"
            )

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
