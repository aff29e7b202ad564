"""Frame -> model input tensor, recording the mapping back to frame pixels.

One pass per step through OpenCV/numpy: ROI crop (a view), resize (stretch, or Ultralytics' letterbox with a
constant pad), then colour order, ``(x - mean) / std`` and layout written straight into the output tensor.
The geometry depends only on the frame size and the ROI, so it is computed once and re-derived whenever
either changes (a reconnected stream can come back at another size).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.errors import InputError
from edgeseg.geometry import FULL_ROI, AxisAffine, Roi, letterbox, roi_pixels, stretch
from edgeseg.modelcard import InputSpec


@dataclass(frozen=True, eq=False)
class Prepared:
    """A frame made ready for one model.

    Attributes:
        tensor: the model input, shape/dtype/layout of the card's ``input`` (``None`` when the network ran
            on the sensor and ``attached`` holds its outputs).
        to_frame: model-input pixels -> full-frame pixels (ROI and letterbox included).
        frame_shape: ``(H, W)`` of the frame.
        attached: output tensors computed on the sensor (IMX500), by name.
        crop_box: ``(x0, y0, x1, y1)`` frame pixels of the region the model input shows (the ROI crop).
    """

    tensor: NDArray[np.generic] | None
    to_frame: AxisAffine
    frame_shape: tuple[int, int]
    attached: Mapping[str, NDArray[np.float32]] | None = None
    crop_box: tuple[int, int, int, int] | None = None

    def spent(self) -> Prepared:
        """The same without its input tensor, once the model has run: what decoding needs is the geometry
        (a frame waiting to be decoded would otherwise hold its tensor, 0.9 MB at 640x480)."""
        return replace(self, tensor=None)

    @property
    def crop_shape(self) -> tuple[int, int]:
        """``(h, w)`` of the region the model input shows."""
        x0, y0, x1, y1 = self.crop_box or (0, 0, self.frame_shape[1], self.frame_shape[0])
        return (y1 - y0, x1 - x0)


@dataclass(frozen=True)
class _Geometry:
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 in the frame
    resized_wh: tuple[int, int]  # size the crop is resized to
    pad: tuple[int, int, int, int]  # top, bottom, left, right (letterbox only)
    to_frame: AxisAffine


class Preprocessor:
    """Turns BGR uint8 frames into the tensor an :class:`InputSpec` describes."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        # the last geometry and its key, as one value: inference threads running frames side by side read
        # and replace it, and a key must never be read with another key's geometry
        self._cached: tuple[tuple[tuple[int, int], Roi], _Geometry] | None = None
        order = [2, 1, 0] if spec.color == "rgb" else [0, 1, 2]  # frame planes are B, G, R
        self._order = order
        self._mean = np.asarray(spec.mean, np.float32)
        self._std = np.asarray(spec.std, np.float32)
        self._identity = spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)

    def geometry(self, frame_hw: tuple[int, int], roi: Roi = FULL_ROI) -> _Geometry:
        """Crop, resize and padding for a frame size and ROI (cached until either changes)."""
        key = ((int(frame_hw[0]), int(frame_hw[1])), roi)
        cached = self._cached
        if cached is not None and cached[0] == key:
            return cached[1]
        spec = self.spec
        x0, y0, x1, y1 = roi_pixels(roi, frame_hw)
        ch, cw = y1 - y0, x1 - x0
        crop_to_frame = AxisAffine(1.0, 1.0, float(x0), float(y0))
        if spec.resize == "letterbox":
            lb = letterbox((ch, cw), (spec.height, spec.width))
            new_w, new_h = max(lb.new_w, 1), max(lb.new_h, 1)
            # per-axis gains of the rounded resize (what cv2.resize really does, and Ultralytics' scale_boxes)
            to_model = AxisAffine(new_w / cw, new_h / ch, float(lb.left), float(lb.top))
            pad = (lb.top, spec.height - new_h - lb.top, lb.left, spec.width - new_w - lb.left)
            geo = _Geometry((x0, y0, x1, y1), (new_w, new_h), pad, to_model.inverse().then(crop_to_frame))
        else:
            to_model = stretch((ch, cw), (spec.height, spec.width))
            geo = _Geometry(
                (x0, y0, x1, y1),
                (spec.width, spec.height),
                (0, 0, 0, 0),
                to_model.inverse().then(crop_to_frame),
            )
        self._cached = (key, geo)
        return geo

    def resized(self, image: NDArray[np.uint8], roi: Roi = FULL_ROI) -> tuple[NDArray[np.uint8], _Geometry]:
        """The BGR uint8 ``(height, width, 3)`` image the model sees, before normalization."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"frames must be (H, W, 3) uint8 BGR, got {image.dtype} {image.shape}")
        geo = self.geometry((image.shape[0], image.shape[1]), roi)
        x0, y0, x1, y1 = geo.crop
        img: NDArray[np.uint8] = image[y0:y1, x0:x1]
        if (img.shape[1], img.shape[0]) != geo.resized_wh:
            img = np.asarray(cv2.resize(img, geo.resized_wh, interpolation=cv2.INTER_LINEAR), np.uint8)
        top, bottom, left, right = geo.pad
        if top or bottom or left or right:
            v = self.spec.pad_value
            img = np.asarray(
                cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(v, v, v)),
                np.uint8,
            )
        return np.ascontiguousarray(img), geo

    def __call__(
        self, image: NDArray[np.uint8], roi: Roi = FULL_ROI
    ) -> tuple[NDArray[np.generic], _Geometry]:
        """Input tensor of the spec's shape and dtype, and the geometry that made it."""
        img, geo = self.resized(image, roi)
        spec = self.spec
        if spec.layout == "nhwc":
            if spec.color == "rgb":
                img = np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), np.uint8)
            if spec.dtype == "uint8":
                return img[None], geo
            x = img.astype(np.float32)
            if not self._identity:
                x -= self._mean
                x /= self._std
            return (x if spec.dtype == "float32" else x.astype(np.float16))[None], geo
        planes = cv2.split(img)
        if spec.dtype == "uint8":
            out8 = np.empty((1, 3, spec.height, spec.width), np.uint8)
            for c, p in enumerate(self._order):
                out8[0, c] = planes[p]
            return out8, geo
        out = np.empty((1, 3, spec.height, spec.width), np.float32)
        for c, p in enumerate(self._order):
            # (x - mean) / std written into the output plane: no HWC float copy, no transpose pass
            np.subtract(planes[p], self._mean[c], out=out[0, c], dtype=np.float32)
            np.divide(out[0, c], self._std[c], out=out[0, c])
        return (out if spec.dtype == "float32" else out.astype(np.float16)), geo
