"""Coordinate conventions and the geometry every stage shares.

Conventions (stated here once, used everywhere):

- Pixel ``(col c, row r)`` covers the square ``[c, c+1) x [r, r+1)``; its centre is ``(c + 0.5, r + 0.5)``.
- Boxes are ``xyxy`` in pixels with exclusive far edges: a mask whose pixels span columns ``c0..c1`` has
  ``x1 = c0`` and ``x2 = c1 + 1``.
- An oriented box is ``(cx, cy, w, h, angle)``: centre in pixels, ``w >= h``, ``angle`` in degrees in
  ``[-90, 90)``, the direction of the ``w`` side measured from +x towards +y (clockwise on screen, because y
  points down).
- A ``roi`` is normalized ``(left, top, width, height)`` of the full sensor frame, each in ``[0, 1]``.
- Polygons are ``(K, 2)`` float32 ``(x, y)`` vertices; an outline of a mask runs on pixel corners, round the
  outside of its pixels (as COCO's own polygons: COCO's tools fill the pixels whose centres lie inside, to a
  tenth of a pixel: :func:`fill_polygon`).
- Masks are ``bool``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.errors import InputError
from edgeseg.validate import describe

Roi = tuple[float, float, float, float]
FULL_ROI: Roi = (0.0, 0.0, 1.0, 1.0)

# the longest side of a frame a source is asked for or makes: DCI 8K (8192 x 4320), beyond any camera's video.
# A synthetic scene 100000 px wide took minutes to lay out before its first frame.
MAX_SIDE = 8192


@dataclass(frozen=True)
class AxisAffine:
    """An axis-aligned scale and shift: ``x' = x * sx + tx``, ``y' = y * sy + ty``.

    Every mapping between the frame, a ROI crop and a (letterboxed) model input is of this form, so one
    type composes them and inverts them exactly.
    """

    sx: float = 1.0
    sy: float = 1.0
    tx: float = 0.0
    ty: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sx) and math.isfinite(self.sy) and self.sx > 0 and self.sy > 0):
            raise InputError(f"AxisAffine scales must be finite and > 0, got sx={self.sx}, sy={self.sy}")

    @property
    def is_isotropic(self) -> bool:
        return math.isclose(self.sx, self.sy, rel_tol=1e-9)

    def inverse(self) -> AxisAffine:
        return AxisAffine(1.0 / self.sx, 1.0 / self.sy, -self.tx / self.sx, -self.ty / self.sy)

    def then(self, other: AxisAffine) -> AxisAffine:
        """The mapping that applies ``self`` first and ``other`` second."""
        return AxisAffine(
            self.sx * other.sx,
            self.sy * other.sy,
            self.tx * other.sx + other.tx,
            self.ty * other.sy + other.ty,
        )

    def points(self, pts: NDArray[np.floating]) -> NDArray[np.float64]:
        """Map ``(..., 2)`` points ``(x, y)``."""
        p = np.asarray(pts, dtype=np.float64)
        return np.stack([p[..., 0] * self.sx + self.tx, p[..., 1] * self.sy + self.ty], axis=-1)

    def boxes(self, xyxy: NDArray[np.floating]) -> NDArray[np.float64]:
        """Map ``(N, 4)`` xyxy boxes (scales are positive, so corners keep their order)."""
        b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        scale = np.array([self.sx, self.sy, self.sx, self.sy])
        shift = np.array([self.tx, self.ty, self.tx, self.ty])
        out: NDArray[np.float64] = b * scale + shift
        return out


@dataclass(frozen=True)
class Letterbox:
    """How a ``(src_h, src_w)`` image is resized (aspect kept) and padded into ``(dst_h, dst_w)``.

    The arithmetic is Ultralytics': resized size ``round(src * r)``, padding split in two with the
    ``round(pad / 2 -/+ 0.1)`` rule, so the same input tensor comes out bit for bit.
    """

    scale: float
    new_w: int
    new_h: int
    left: int
    top: int
    dst_w: int
    dst_h: int

    @property
    def to_model(self) -> AxisAffine:
        """Source-image pixels -> model-input pixels."""
        return AxisAffine(self.scale, self.scale, float(self.left), float(self.top))


def letterbox(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Letterbox:
    """Letterbox parameters for fitting ``src_hw`` into ``dst_hw`` (both ``(height, width)``)."""
    sh, sw = src_hw
    dh, dw = dst_hw
    if min(sh, sw, dh, dw) <= 0:
        raise InputError(f"letterbox needs positive sizes, got src {src_hw} dst {dst_hw}")
    r = min(dh / sh, dw / sw)
    new_w, new_h = int(round(sw * r)), int(round(sh * r))
    pad_w, pad_h = (dw - new_w) / 2, (dh - new_h) / 2
    left, top = int(round(pad_w - 0.1)), int(round(pad_h - 0.1))
    return Letterbox(scale=r, new_w=new_w, new_h=new_h, left=left, top=top, dst_w=dw, dst_h=dh)


def stretch(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> AxisAffine:
    """Source pixels -> destination pixels when ``src_hw`` is resized to ``dst_hw`` ignoring aspect."""
    if min(*src_hw, *dst_hw) <= 0:
        raise InputError(f"resize needs positive sizes, got src {src_hw} dst {dst_hw}")
    return AxisAffine(dst_hw[1] / src_hw[1], dst_hw[0] / src_hw[0])


def validate_roi(roi: Roi) -> Roi:
    """Check a normalized ``(left, top, width, height)`` and return it as floats."""
    try:
        left, top, width, height = (float(v) for v in roi)
    # (OverflowError: an integer past a float's range, 400 digits in a file or an MQTT payload)
    except (TypeError, ValueError, OverflowError):  # shown cut short: a YAML alias bomb is a billion items
        raise InputError(f"roi must be 4 numbers (left, top, width, height), got {describe(roi)}") from None
    if not all(math.isfinite(v) for v in (left, top, width, height)):
        raise InputError(f"roi values must be finite, got {roi!r}")
    if left < 0 or top < 0 or width <= 0 or height <= 0 or left + width > 1 + 1e-9 or top + height > 1 + 1e-9:
        raise InputError(f"roi must lie inside the frame in normalized units (0..1), got {roi!r}")
    return (left, top, width, height)


def roi_pixels(roi: Roi, frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer pixel crop ``(x0, y0, x1, y1)`` of a normalized roi in a ``(H, W)`` frame (never empty)."""
    left, top, width, height = validate_roi(roi)
    h, w = frame_hw
    # a roi thinner than half a pixel at the far edge starts where the frame ends: it gets the last pixel
    x0, y0 = min(int(round(left * w)), w - 1), min(int(round(top * h)), h - 1)
    x1 = max(x0 + 1, min(w, int(round((left + width) * w))))
    y1 = max(y0 + 1, min(h, int(round((top + height) * h))))
    return x0, y0, x1, y1


def roi_to_frame(roi: Roi, frame_hw: tuple[int, int]) -> AxisAffine:
    """Pixels of the roi crop (as cut by :func:`roi_pixels`) -> full-frame pixels."""
    x0, y0, _, _ = roi_pixels(roi, frame_hw)
    return AxisAffine(1.0, 1.0, float(x0), float(y0))


def canonical_obbs(rects: NDArray[np.floating]) -> NDArray[np.float32]:
    """Turn ``(N, 5)`` OpenCV ``RotatedRect`` rows ``(cx, cy, w, h, angle)`` into the convention above.

    OpenCV's own angle range has changed between versions, but in all of them the ``w`` side runs along
    ``angle`` and the ``h`` side along ``angle - 90``, which is all this relies on.
    """
    r = np.asarray(rects, dtype=np.float64).reshape(-1, 5)
    w, h, theta = r[:, 2], r[:, 3], r[:, 4]
    h_longer = h >= w
    long_side = np.where(h_longer, h, w)
    short_side = np.where(h_longer, w, h)
    angle = ((np.where(h_longer, theta - 90.0, theta) + 90.0) % 180.0 - 90.0).astype(np.float32)
    angle[angle >= 90.0] -= 180.0  # a remainder just under 180 can round up to it
    # a square has two descriptions; keep the one in [-90, 0)
    angle = np.where((long_side - short_side < 1e-6) & (angle >= 0), angle - 90.0, angle)
    return np.stack([r[:, 0], r[:, 1], long_side, short_side, angle], axis=1).astype(np.float32)


def min_area_rect(points: NDArray[np.floating], pixel_extent: bool = True) -> tuple[float, ...]:
    """OpenCV's minimum-area rectangle of ``(K, 2)`` points as a raw ``(cx, cy, w, h, angle)`` row.

    With ``pixel_extent`` the points are pixel centres and the box grows by one pixel in ``w`` and ``h``
    so it covers whole pixels (a lone pixel is a 1x1 box, a 240x80 block a 240x80 box). Rows are turned
    into oriented boxes by :func:`canonical_obbs`, many at once.
    """
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    if len(pts) == 0:
        raise InputError("cannot fit an oriented box to zero points")
    (cx, cy), (w, h), a = cv2.minAreaRect(pts)
    grow = 1.0 if pixel_extent else 0.0
    return (cx, cy, w + grow, h + grow, a)


def obb_corners(obb: NDArray[np.floating]) -> NDArray[np.float32]:
    """Corners ``(N, 4, 2)`` of ``(N, 5)`` oriented boxes, in order around the box."""
    o = np.asarray(obb, dtype=np.float64).reshape(-1, 5)
    t = np.radians(o[:, 4])
    c, s = np.cos(t), np.sin(t)
    ux = np.stack([c, s], axis=-1) * (o[:, 2:3] / 2)  # half the w side
    uy = np.stack([-s, c], axis=-1) * (o[:, 3:4] / 2)  # half the h side
    ctr = o[:, :2]
    corners = np.stack([ctr - ux - uy, ctr + ux - uy, ctr + ux + uy, ctr - ux + uy], axis=1)
    return corners.astype(np.float32)


def _external_contours(mask: NDArray[np.bool_]) -> list[NDArray[np.int32]]:
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [np.asarray(c, dtype=np.int32) for c in contours]


def mask_rect(mask: NDArray[np.bool_]) -> tuple[float, ...]:
    """The smallest oriented box of a bool mask crop, in the crop's pixels, as a raw row of
    :func:`min_area_rect` (for :func:`canonical_obbs` to turn many at once).

    Fitted to the outer contours of all the mask's parts, so a mask split by an occluder keeps one box
    around all of it.
    """
    contours = _external_contours(mask)
    if not contours:
        raise InputError("cannot fit an oriented box to an empty mask")
    return min_area_rect(np.concatenate(contours).reshape(-1, 2).astype(np.float32) + 0.5)


def _corner_outlines(mask: NDArray[np.bool_]) -> list[NDArray[np.int32]]:
    """The outer outline of each part of ``mask``, on pixel corners (integer ``(x, y)``), round the outside
    of its pixels: OpenCV traces pixel centres, so it traces the mask at twice the size, where each traced
    pixel is a quarter of one of ours and stands for that pixel's corner on its side."""
    twice = np.repeat(np.repeat(mask.view(np.uint8), 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(twice, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        pts = (c.reshape(-1, 2) + 1) // 2
        # quarters of one corner, and corners along one straight side, are one vertex
        pts = pts[np.any(pts != np.roll(pts, 1, axis=0), axis=1)]
        (ax, ay), (bx, by) = (pts - np.roll(pts, 1, axis=0)).T, (np.roll(pts, -1, axis=0) - pts).T
        out.append(np.asarray(pts[ax * by != ay * bx], dtype=np.int32))
    return out


def mask_polygons(
    mask: NDArray[np.bool_], origin: tuple[int, int] = (0, 0), tolerance: float = 1.0
) -> tuple[NDArray[np.float32], ...]:
    """Simplified outlines ``(K, 2)`` of each part of a mask crop (largest first), on frame pixel corners, as
    COCO writes an object in parts: an object cut in two by an occluder is two polygons, their union its mask.

    ``tolerance`` is the Douglas-Peucker distance in pixels about the mask's edge (0 keeps every corner:
    filled, each outline is its part with its holes filled). Pixel corners zigzag half a pixel about a slanted
    edge, so the corners are simplified at ``tolerance + 0.5`` (at ``tolerance`` alone, outlines kept 1.5
    times the vertices they had when they ran through pixel centres). Each outline has at least 3 vertices
    (COCO's ``frPyObjects`` refuses fewer, and takes 2 for a box): where simplifying would leave fewer (a part
    1 px thin), it keeps every corner. So the vertices are bounded by the corners of the parts' outer edges;
    a part of one pixel is 4 of them (a mask of scattered specks is smaller as RLE).
    """
    if tolerance < 0:
        raise InputError(f"polygon tolerance must be >= 0, got {tolerance}")
    outlines = sorted(_corner_outlines(mask), key=lambda c: (cv2.contourArea(c), len(c)), reverse=True)
    out = []
    for outline in outlines:
        if tolerance > 0 and len(outline) > 3:
            simple = cv2.approxPolyDP(outline.reshape(-1, 1, 2), tolerance + 0.5, closed=True)
            if len(simple) >= 3:
                outline = np.asarray(simple, np.int32)
        pts = outline.reshape(-1, 2).astype(np.float32)
        pts[:, 0] += origin[0]
        pts[:, 1] += origin[1]
        out.append(pts)
    return tuple(out)


_CROSSINGS_AT_ONCE = 1 << 16  # crossings of sides with columns that fill_polygon lists together (~5 MB)
# pycocotools' outline runs on a grid of fifths of a pixel, in C ints: vertices are kept within this many
# pixels of the frame's origin (far beyond any frame; a vertex at 1e30 px overflowed)
_FAR = float(1 << 24)


def fill_polygon(
    poly: NDArray[np.floating], image_hw: tuple[int, int]
) -> tuple[NDArray[np.bool_], tuple[int, int]]:
    """Fill a polygon into a tight crop as pycocotools fills it (``frPyObjects``: ``rleFrPoly`` in its
    maskApi.c), pixel for pixel, so an outline on pixel corners comes back as its pixels. Returns the crop
    and its origin (x, y).

    That is, nearly, the pixels whose centres lie inside (even-odd): the outline is drawn on a grid of fifths
    of a pixel (each vertex rounded to it, each point along a side too), and in each column the pixels from
    where it crosses the column's centre line, down to where it crosses again, are inside; a centre on the
    outline is inside at the top of a part, outside at its bottom. (Pixel centres exactly on a simplified
    slanted side, and those within a tenth of a pixel of one, went the other way in a fill of the exact
    polygon, so our reading of a polygon differed from pycocotools' by a pixel here and there.)
    """
    h, w = image_hw
    a = np.clip(np.asarray(poly, np.float64).reshape(-1, 2), -_FAR, _FAR)
    x0, y0 = max(0, int(np.floor(a[:, 0].min()))), max(0, int(np.floor(a[:, 1].min())))
    x1, y1 = min(w, int(np.ceil(a[:, 0].max()))), min(h, int(np.ceil(a[:, 1].max())))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), bool), (0, 0)
    # each side from (xs, ys) to (xe, ye) in fifths, turned (as rleFrPoly turns it) to run left to right
    # where it is flat (|dx| >= |dy|), downward where steep; s: its slope along that run
    q = np.trunc(5.0 * a + 0.5)
    xs, ys = q[:, 0], q[:, 1]
    xe, ye = np.roll(xs, -1), np.roll(ys, -1)
    dx, dy = np.abs(xe - xs), np.abs(ye - ys)
    flat = dx >= dy
    flip = (flat & (xs > xe)) | (~flat & (ys > ye))
    xs, xe = np.where(flip, xe, xs), np.where(flip, xs, xe)
    ys, ye = np.where(flip, ye, ys), np.where(flip, ys, ye)
    moves = dx + dy > 0  # (a vertex repeated is a side of no length, one point: no crossing)
    # (a side that moves runs at least one fifth along: the 1 only keeps a side that does not from 0 / 0)
    s = np.where(flat, (ye - ys) / np.maximum(dx, 1), (xe - xs) / np.maximum(dy, 1))

    def along(
        start: NDArray[np.float64], t: NDArray[np.float64], side: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """A point's rounded coordinate ``t`` fifths along a side, as rleFrPoly computes it (C's (int))."""
        out: NDArray[np.float64] = np.trunc(start[side] + s[side] * t + 0.5)
        return out

    # the outline crosses column c's centre line where it steps from fifth 5c + 2 to 5c + 3 (or back); a flat
    # side's run meets every fifth between its ends, a steep one's those its rounded points reach
    sides = np.arange(len(a))
    first_u = np.where(flat, xs, along(xs, np.zeros(len(a)), sides))
    last_u = np.where(flat, xe, along(xs, dy, sides))
    lo, hi = np.minimum(first_u, last_u), np.maximum(first_u, last_u)
    left = np.clip(np.ceil((lo - 2) / 5), x0, x1).astype(np.int64)
    cols = np.where(moves, np.clip(np.floor((hi - 3) / 5) + 1, x0, x1).astype(np.int64) - left, 0)
    cols = np.maximum(cols, 0)
    ends = np.cumsum(cols)
    # only each pixel's parity counts (uint8 wraps at 256, an even number); the crossings are listed a run of
    # sides at a time: a 60 KB zigzag of 2000 sides across an 8192-pixel frame listed 33 million at once, 3 GB
    flips = np.zeros((y1 - y0 + 1, x1 - x0), np.uint8)
    start = 0
    while start < len(a):
        limit = ends[start] - cols[start] + _CROSSINGS_AT_ONCE
        stop = max(start + 1, int(np.searchsorted(ends, limit, "right")))
        run = cols[start:stop]
        side = np.repeat(np.arange(start, stop), run)
        col = left[side] + np.arange(len(side)) - np.repeat(np.cumsum(run) - run, run)
        u = 5.0 * col + 2
        # where the step is, the upper of the two points' rows (in fifths)
        v_flat = np.minimum(along(ys, u - xs[side], side), along(ys, u + 1 - xs[side], side))
        # a steep side steps at the first point past the centre line: near where its exact line crosses it
        rightward = s[side] > 0
        with np.errstate(divide="ignore", invalid="ignore"):  # (a flat side's guess is not used)
            guess = np.ceil(np.where(flat[side], 0.0, (u + 0.5 - xs[side]) / s[side]))
        past = np.zeros(len(side))
        for k in (1, 0, -1):  # (the float's error is well under a point; the first one past is the step)
            t = np.clip(guess + k, 1, dy[side])
            uk = along(xs, t, side)
            past = np.where(np.where(rightward, uk >= u + 1, uk <= u), t, past)
        v = np.where(flat[side], v_flat, ys[side] + past - 1)
        # in the column the inside flips at the first pixel whose centre is at or below the step
        row = np.ceil(np.clip((v + 0.5) / 5 - 0.5, 0, h)).astype(np.int64)
        np.add.at(flips, (np.clip(row, y0, y1) - y0, col - x0), 1)
        start = stop
    np.cumsum(flips, axis=0, dtype=np.uint8, out=flips)
    crop: NDArray[np.bool_] = (flips[:-1] & 1).view(np.bool_)
    return crop, (x0, y0)
