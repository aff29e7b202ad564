"""Preprocessing: tensors bit-identical to Ultralytics', normalization, layouts, and the mapping back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeseg.errors import InputError
from edgeseg.modelcard import InputSpec
from edgeseg.preprocess import Preprocessor

GOLDEN = Path(__file__).parent / "golden" / "yolov8n_seg_320_ultralytics.json"
YOLO = InputSpec(name="images", width=320, height=320, resize="letterbox")


def test_letterboxed_input_is_byte_identical_to_ultralytics(assets_dir: Path) -> None:
    golden = json.loads(GOLDEN.read_text())
    cases = {c["image"]: c for c in golden["cases"]}  # both models share the input
    pre = Preprocessor(YOLO)
    for image, case in cases.items():
        frame = cv2.imread(str(assets_dir / image))
        letterboxed, geo = pre.resized(frame)
        tensor, _ = pre(frame)
        assert hashlib.sha256(letterboxed.tobytes()).hexdigest() == case["letterboxed_bgr_sha256"], image
        assert hashlib.sha256(tensor.tobytes()).hexdigest() == case["input_tensor_sha256"], image
        lb = case["letterbox"]
        assert geo.pad == (lb["pad_top"], lb["pad_bottom"], lb["pad_left"], lb["pad_right"])


def test_nchw_tensor_is_colour_flipped_and_normalized_per_channel() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    spec = InputSpec(name="x", width=64, height=48, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0))
    tensor, _ = Preprocessor(spec)(frame)
    rgb = frame[..., ::-1].astype(np.float32)
    want = ((rgb - np.float32([10, 20, 30])) / np.float32([2, 4, 8])).transpose(2, 0, 1)[None]
    assert tensor.dtype == np.float32
    assert tensor.shape == (1, 3, 48, 64)
    np.testing.assert_array_equal(tensor, want)


def test_nhwc_bgr_keeps_channel_order() -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    frame[..., 0] = 255  # blue
    spec = InputSpec(name="x", width=8, height=8, layout="nhwc", color="bgr")
    tensor, _ = Preprocessor(spec)(frame)
    assert tensor.shape == (1, 8, 8, 3)
    np.testing.assert_array_equal(tensor[0, 0, 0], [1.0, 0.0, 0.0])


@pytest.mark.parametrize(("dtype", "layout"), [("float16", "nchw"), ("uint8", "nchw"), ("uint8", "nhwc")])
def test_requested_dtype_and_layout(dtype: str, layout: str) -> None:
    frame = np.full((10, 20, 3), (1, 2, 3), np.uint8)
    std = (1.0, 1.0, 1.0) if dtype == "uint8" else (255.0, 255.0, 255.0)
    spec = InputSpec(name="x", width=20, height=10, dtype=dtype, layout=layout, std=std)  # type: ignore[arg-type]
    tensor, _ = Preprocessor(spec)(frame)
    assert tensor.dtype == np.dtype(dtype)
    assert tensor.shape == spec.shape
    first = tensor[0, :, 0, 0] if layout == "nchw" else tensor[0, 0, 0, :]
    expect = np.array([3, 2, 1], np.float64) / (1 if dtype == "uint8" else 255)  # rgb
    np.testing.assert_allclose(first.astype(np.float64), expect, rtol=1e-3)


@settings(max_examples=60, deadline=None)
@given(
    fh=st.integers(8, 400),
    fw=st.integers(8, 400),
    left=st.floats(0, 0.5),
    top=st.floats(0, 0.5),
    width=st.floats(0.2, 0.5),
    height=st.floats(0.2, 0.5),
    mh=st.integers(16, 128),
    mw=st.integers(16, 128),
    resize=st.sampled_from(["letterbox", "stretch"]),
)
def test_model_input_content_maps_onto_the_roi_crop_in_frame_pixels(
    fh: int, fw: int, left: float, top: float, width: float, height: float, mh: int, mw: int, resize: str
) -> None:
    spec = InputSpec(name="x", width=mw, height=mh, resize=resize)  # type: ignore[arg-type]
    geo = Preprocessor(spec).geometry((fh, fw), (left, top, width, height))
    x0, y0, x1, y1 = geo.crop
    pt, _, pl, _ = geo.pad
    nw, nh = geo.resized_wh
    corners = geo.to_frame.points(np.array([[pl, pt], [pl + nw, pt + nh]], np.float64))
    np.testing.assert_allclose(corners, [[x0, y0], [x1, y1]], atol=1e-9)


def test_a_bright_pixel_maps_back_to_where_it_was() -> None:
    frame = np.zeros((300, 500, 3), np.uint8)
    frame[200:210, 350:360] = 255
    spec = InputSpec(name="x", width=128, height=128, resize="letterbox")
    pre = Preprocessor(spec)
    roi = (0.5, 0.4, 0.5, 0.6)
    img, geo = pre.resized(frame, roi)
    ys, xs = np.nonzero(img[..., 0] > 127)
    centre = geo.to_frame.points(np.array([[xs.mean() + 0.5, ys.mean() + 0.5]]))[0]
    np.testing.assert_allclose(centre, [355, 205], atol=1.0)


def test_a_roi_at_the_far_corner_thinner_than_half_a_pixel_gives_the_corner_pixel() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[479, 639] = (10, 20, 30)
    for resize in ("letterbox", "stretch"):
        spec = InputSpec(name="x", width=8, height=8, resize=resize)  # type: ignore[arg-type]
        img, geo = Preprocessor(spec).resized(frame, (0.9995, 0.9995, 0.0005, 0.0005))
        assert geo.crop == (639, 479, 640, 480)
        assert (img == (10, 20, 30)).all(axis=2).all()


def test_geometry_is_rederived_when_the_frame_size_changes() -> None:
    pre = Preprocessor(InputSpec(name="x", width=64, height=64, resize="letterbox"))
    small = pre(np.zeros((32, 64, 3), np.uint8))[1]
    big = pre(np.zeros((128, 64, 3), np.uint8))[1]
    assert small.pad != big.pad
    assert big.to_frame.sy == pytest.approx(2.0)


def test_non_bgr_frames_are_rejected_with_an_input_error() -> None:
    pre = Preprocessor(InputSpec(name="x", width=8, height=8))
    with pytest.raises(InputError, match=r"frames must be \(H, W, 3\) uint8 BGR"):
        pre(np.zeros((8, 8), np.uint8))
