"""Geometry conventions: affine maps, letterbox, roi, oriented boxes."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeseg.errors import InputError
from edgeseg.geometry import (
    AxisAffine,
    canonical_obbs,
    letterbox,
    mask_polygons,
    min_area_rect,
    obb_corners,
    roi_pixels,
    roi_to_frame,
    stretch,
    validate_roi,
)
from edgeseg.instances import Instances


def _obb(points: np.ndarray) -> np.ndarray:
    """The canonical oriented box of points (no pixel extent)."""
    return canonical_obbs(np.array(min_area_rect(points, pixel_extent=False)))[0]


finite = st.floats(-1e4, 1e4, allow_nan=False)
scale = st.floats(0.05, 20, allow_nan=False)
affines = st.builds(AxisAffine, scale, scale, finite, finite)


@settings(max_examples=100, deadline=None)
@given(affines, affines, st.lists(st.tuples(finite, finite), min_size=1, max_size=5))
def test_affine_inverse_and_composition_round_trip_points_and_boxes(
    a: AxisAffine, b: AxisAffine, pts: list[tuple[float, float]]
) -> None:
    p = np.array(pts)
    assert np.allclose(a.inverse().points(a.points(p)), p, rtol=1e-9, atol=1e-6)
    assert np.allclose(a.then(b).points(p), b.points(a.points(p)), rtol=1e-9, atol=1e-6)
    boxes = np.concatenate([p, p + 3.0], axis=1)
    assert np.allclose(a.inverse().boxes(a.boxes(boxes)), boxes, rtol=1e-9, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 2000), st.integers(16, 1024), st.integers(16, 1024))
def test_letterbox_fits_the_image_inside_the_input_centred(sh: int, sw: int, dh: int, dw: int) -> None:
    lb = letterbox((sh, sw), (dh, dw))
    assert lb.new_w <= dw
    assert lb.new_h <= dh
    assert 0 <= lb.left <= dw - lb.new_w
    assert 0 <= lb.top <= dh - lb.new_h
    assert abs((dw - lb.new_w) - 2 * lb.left) <= 1
    assert abs((dh - lb.new_h) - 2 * lb.top) <= 1
    # the image's far corner lands on the resized block's far corner (within rounding of the resize)
    x, y = lb.to_model.points(np.array([sw, sh], float))
    assert abs(x - (lb.left + lb.new_w)) <= 0.5 + 1e-9
    assert abs(y - (lb.top + lb.new_h)) <= 0.5 + 1e-9
    back = lb.to_model.inverse().points(lb.to_model.points(np.array([[0.0, 0.0], [sw, sh]])))
    assert np.allclose(back, [[0, 0], [sw, sh]])


def test_letterbox_matches_ultralytics_arithmetic_on_a_known_case() -> None:
    # 810x1080 bus.jpg into 640x640: scale 0.5926, 480x640 block, 80 px padding left and right
    lb = letterbox((1080, 810), (640, 640))
    assert (lb.new_w, lb.new_h, lb.left, lb.top) == (480, 640, 80, 0)


rois = st.tuples(st.floats(0, 0.6), st.floats(0, 0.6), st.floats(0.05, 0.4), st.floats(0.05, 0.4))


@settings(max_examples=100, deadline=None)
@given(rois, st.integers(8, 1000), st.integers(8, 1000))
def test_roi_crop_maps_back_to_the_frame(roi: tuple[float, float, float, float], h: int, w: int) -> None:
    x0, y0, x1, y1 = roi_pixels(roi, (h, w))
    assert 0 <= x0 < x1 <= w
    assert 0 <= y0 < y1 <= h
    to_frame = roi_to_frame(roi, (h, w))
    assert np.allclose(to_frame.points(np.array([[0.0, 0.0]])), [[x0, y0]])
    assert np.allclose(to_frame.inverse().points(np.array([[x1, y1]], float)), [[x1 - x0, y1 - y0]])


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0, 1, exclude_max=True),
    st.floats(0, 1, exclude_max=True),
    st.floats(0, 1),
    st.floats(0, 1),
    st.integers(1, 2000),
    st.integers(1, 2000),
)
def test_any_valid_roi_is_at_least_one_pixel_inside_the_frame(
    left: float, top: float, fw: float, fh: float, h: int, w: int
) -> None:
    # a roi thinner than half a pixel at the far edge of the frame, anywhere validate_roi lets it be
    roi = (left, top, max((1 - left) * fw, 1e-9), max((1 - top) * fh, 1e-9))
    x0, y0, x1, y1 = roi_pixels(roi, (h, w))
    assert 0 <= x0 < x1 <= w
    assert 0 <= y0 < y1 <= h


def test_a_roi_thinner_than_half_a_pixel_at_the_far_edge_is_the_last_pixel() -> None:
    # 0.9995 * 640 rounds to 640, the far edge itself: the crop used to start there, empty, and resizing
    # it failed inside OpenCV
    assert roi_pixels((0.9995, 0.9995, 0.0005, 0.0005), (480, 640)) == (639, 479, 640, 480)


@pytest.mark.parametrize(
    "roi", [(0.5, 0.5, 0.6, 0.2), (-0.1, 0, 0.5, 0.5), (0, 0, 0, 0.5), (0, 0, float("nan"), 1), (1, 2, 3)]
)
def test_invalid_rois_are_rejected(roi: tuple[float, ...]) -> None:
    with pytest.raises(InputError, match="roi"):
        validate_roi(roi)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(finite, finite, st.floats(1, 500), st.floats(1, 500), st.floats(-720, 720))
def test_oriented_boxes_follow_the_convention(cx: float, cy: float, a: float, b: float, angle: float) -> None:
    corners = cv2.boxPoints(((cx, cy), (a, b), angle))
    obb = _obb(corners)
    w, h, ang = float(obb[2]), float(obb[3]), float(obb[4])
    assert w >= h
    assert -90.0 <= ang < 90.0
    assert (w, h) == pytest.approx((max(a, b), min(a, b)), rel=1e-3, abs=1e-2)
    # the corners of the canonical box are the input corners (as a set)
    ours = obb_corners(obb)[0]
    dist = np.linalg.norm(ours[:, None, :] - corners[None, :, :], axis=-1)
    tol = 1e-2 * max(1.0, a, b, abs(cx), abs(cy))
    assert dist.min(axis=1).max() < tol
    assert dist.min(axis=0).max() < tol  # each input corner is one of ours: four distinct corners
    # in order around the box: its sides are w, h, w, h
    sides = np.linalg.norm(np.roll(ours, -1, axis=0) - ours, axis=1)
    assert sides == pytest.approx([w, h, w, h], abs=tol)


def test_angle_is_measured_from_x_towards_y() -> None:
    # a box whose long side runs down-right at 30 deg (y down): angle +30
    rad = math.radians(30)
    direction = np.array([math.cos(rad), math.sin(rad)])
    normal = np.array([-math.sin(rad), math.cos(rad)])
    pts = np.array([s * 60 * direction + t * 10 * normal for s in (-1, 1) for t in (-1, 1)])
    assert float(_obb(pts)[4]) == pytest.approx(30.0, abs=1e-3)


def test_the_oriented_box_of_a_pixel_block_covers_whole_pixels() -> None:
    m = np.ones((80, 240), bool)
    block = Instances.from_crops((200, 300), [0], [1.0], [(10, 20)], [m])
    assert block.obb[0].tolist() == pytest.approx([130.0, 60.0, 240.0, 80.0, 0.0], abs=1e-4)
    pixel = Instances.from_crops((1, 1), [0], [1.0], [(0, 0)], [np.ones((1, 1), bool)])
    assert pixel.obb[0].tolist()[2:4] == pytest.approx([1.0, 1.0])


def test_polygons_are_each_part_on_frame_pixel_corners_largest_first() -> None:
    m = np.zeros((20, 30), bool)
    m[2:4, 2:4] = True
    m[5:15, 10:25] = True
    m[15, 12] = True  # a notch: corners round the outside of each pixel
    large, small = mask_polygons(m, (100, 200), tolerance=0.0)
    assert sorted(map(tuple, large.tolist())) == sorted(
        [(110, 205), (125, 205), (125, 215), (113, 215), (113, 216), (112, 216), (112, 215), (110, 215)]
    )
    assert sorted(map(tuple, small.tolist())) == [(102, 202), (102, 204), (104, 202), (104, 204)]
    assert mask_polygons(np.zeros((3, 3), bool)) == ()
    with pytest.raises(InputError, match="tolerance"):
        mask_polygons(m, tolerance=-1)


@pytest.mark.parametrize("radius", [5, 12, 40, 120])
@pytest.mark.parametrize("angle", [0, 20, 45])
def test_an_outline_on_pixel_corners_simplifies_to_no_more_vertices_than_one_through_pixel_centres(
    radius: int, angle: int
) -> None:
    # (the corners' staircase zigzags about a slanted edge: simplified at the tolerance alone, it kept 1.5
    # times the vertices, and polygon JSON, meant to be the small format, grew past RLE)
    m = np.zeros((300, 300), np.uint8)
    cv2.ellipse(m, (150, 150), (radius, max(2, radius // 3)), angle, 0, 360, 1, -1)
    centres, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    (outline,) = mask_polygons(m.astype(bool), tolerance=1.0)
    assert len(outline) <= len(cv2.approxPolyDP(centres[0], 1.0, True))


def test_exact_figures_of_the_small_conversions() -> None:
    # a roi in pixels, a stretch, and a letterbox with an odd padding (Ultralytics puts the extra pixel at
    # the bottom: top = round(16.5 - 0.1))
    assert roi_pixels((0.25, 0.5, 0.5, 0.25), (480, 640)) == (160, 240, 480, 360)
    assert stretch((480, 640), (320, 320)) == AxisAffine(0.5, 2 / 3)
    lb = letterbox((100, 200), (65, 64))
    assert (lb.new_w, lb.new_h, lb.left, lb.top) == (64, 32, 0, 16)


@pytest.mark.parametrize(
    ("rect", "obb"),
    [
        ((5, 6, 10, 20, 30), (5, 6, 20, 10, -60)),  # h the longer side: it runs along angle - 90
        ((5, 6, 20, 10, 30), (5, 6, 20, 10, 30)),
        ((5, 6, 10, 10, 30), (5, 6, 10, 10, -60)),  # a square: the description in [-90, 0)
        ((5, 6, 10, 10, -30), (5, 6, 10, 10, -30)),
    ],
)
def test_canonical_oriented_boxes_of_known_rectangles(
    rect: tuple[float, ...], obb: tuple[float, ...]
) -> None:
    assert canonical_obbs(np.array([rect], float))[0].tolist() == pytest.approx(obb)
