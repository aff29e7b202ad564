"""Straight rods that cross or meet in a T, told apart by line fitting (``SemanticParams.rods``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.geometry import min_area_rect

ROD_MIN_HALF_WIDTH = 1.5  # pixels: thinner bands are no rods a distance transform can measure
MAX_RODS = 6
# The split's budget is counted in pixels of the boxes its reliefs look at; a fit takes about this many times
# a relief's time per box pixel, per pixel of its crop (measured 3.8-4.1x on random blobs, where fits fail at
# the first line, 6x on the demo model's maps, where most succeed: the line transform votes every centre
# pixel at 180 angles)
FIT_COST = 4


def fit_rods(
    mask: NDArray[np.bool_],
) -> list[tuple[int, int, NDArray[np.bool_], tuple[float, ...]]] | None:
    """A component made of two or more straight rods, one crop ``(x, y, mask, rect)`` per rod in ``mask``'s
    frame; None when it is not that.

    The rods' half-width r is read from the distance transform (across a band its values spread evenly
    over ``[0, r]``); the centre band (distance >= r/2) is explained by straight lines, strongest first
    (Hough), each taking the centre pixels within r of it, while a line runs at least four widths. Every
    pixel goes to its nearest line; if more than a tenth lie farther than a rod's head reaches from all of
    them, something else is there, and the component is left to the distance relief.
    """
    min_len = 16.0 * ROD_MIN_HALF_WIDTH
    if math.hypot(*mask.shape) < min_len:
        return None
    m8 = np.asarray(cv2.copyMakeBorder(mask.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0))
    dist = np.asarray(cv2.distanceTransform(m8, cv2.DIST_L2, 3), np.float32)[1:-1, 1:-1]
    half = upper_quartile(dist[mask]) / 0.75
    min_len = 8.0 * half
    if half < ROD_MIN_HALF_WIDTH or math.hypot(*mask.shape) < min_len:
        return None
    band = (dist >= 0.5 * half).view(np.uint8).copy()
    segments: list[tuple[float, float, float, float]] = []
    while len(segments) < MAX_RODS:
        by, bx = np.nonzero(band)
        if len(by) < int(min_len):  # no line can get more votes than there are pixels: skip the transform
            break
        lines = cv2.HoughLines(band, 1, np.pi / 180, int(min_len))
        if lines is None or len(lines) == 0:  # no line: None up to OpenCV 5.0, empty from 5.1
            break
        rho, theta = (float(v) for v in lines[0, 0])
        c, s = math.cos(theta), math.sin(theta)
        on = np.abs(bx * c + by * s - rho) <= half
        along = by[on] * c - bx[on] * s
        extent = float(along.max() - along.min()) if len(along) else 0.0
        if extent < min_len or len(along) < 0.6 * extent * half:  # short, or no solid band (ring tangents)
            break
        t0, t1 = float(along.min()), float(along.max())
        segments.append((rho * c - t0 * s, rho * s + t0 * c, rho * c - t1 * s, rho * s + t1 * c))
        band[by[on], bx[on]] = 0
    if len(segments) < 2:  # one rod (a bolt with its head, say) is for the distance relief to judge
        return None
    ys, xs = np.nonzero(mask)
    px, py = xs.astype(np.float32), ys.astype(np.float32)
    d = np.stack([segment_distance(px, py, *q) for q in segments])
    if float(np.mean(d.min(axis=0) <= 2.5 * half + 1.0)) < 0.9:
        return None
    nearest = d.argmin(axis=0)
    out = []
    for k in range(len(segments)):
        sel = nearest == k
        if not sel.any():
            continue
        qx, qy = xs[sel], ys[sel]
        x0, y0 = int(qx.min()), int(qy.min())
        rod = np.zeros((int(qy.max()) - y0 + 1, int(qx.max()) - x0 + 1), bool)
        rod[qy - y0, qx - x0] = True
        out.append((x0, y0, rod, min_area_rect(row_ends(qx, qy) + 0.5)))
    return out if len(out) > 1 else None  # a line can win no pixel from its neighbours


def whole_crop(
    x: int, y: int, tight: NDArray[np.bool_], contour: NDArray[np.int32]
) -> tuple[int, int, NDArray[np.bool_], tuple[float, ...]]:
    """A component as one crop of its own frame; its oriented box comes from its outer contour."""
    return (0, 0, tight, min_area_rect(contour.reshape(-1, 2) - (x, y) + 0.5))


def piece_rods(
    piece: tuple[int, int, NDArray[np.bool_], tuple[float, ...]],
    bores: NDArray[np.bool_] | None = None,
    afford: Callable[[int], bool] | None = None,
) -> list[tuple[int, int, NDArray[np.bool_], tuple[float, ...]]]:
    """The rods of one crop ``(x, y, mask, rect)`` as crops in the same frame, or the crop itself.

    Straight rods that cross or meet fill less than half of their oriented box; one rod, or anything
    fuller, is left as it is, and so is a ring: a crop around one of the ``bores`` (its component's, in the
    same frame), whose hole leaves it less than half full too. ``afford(cost)`` says whether the split's
    budget pays for a fit (``FIT_COST`` per pixel of the crop), else the crop is left as it is.
    """
    x, y, mask, rect = piece
    area = int(np.count_nonzero(mask))
    if area >= 0.5 * rect[2] * rect[3] or (bores is not None and encloses(piece, bores)):
        return [piece]
    if afford is not None and not afford(FIT_COST * area):
        return [piece]
    rods = fit_rods(mask)
    if rods is None:
        return [piece]
    return [(x + rx, y + ry, m, (r[0] + x, r[1] + y, *r[2:])) for rx, ry, m, r in rods]


def encloses(piece: tuple[int, int, NDArray[np.bool_], tuple[float, ...]], marked: NDArray[np.bool_]) -> bool:
    """Whether the outline of a crop ``(x, y, mask, rect)`` encloses a ``marked`` pixel (same frame as the
    crop's origin; marked pixels are outside the mask)."""
    x, y, mask, _ = piece
    h, w = mask.shape
    inside = marked[y : y + h, x : x + w]
    if not inside.any():
        return False
    outlines, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros((h, w), np.uint8)
    cv2.drawContours(filled, outlines, -1, 1, thickness=cv2.FILLED)
    return bool((filled.view(bool) & inside).any())


def row_ends(xs: NDArray[np.intp], ys: NDArray[np.intp]) -> NDArray[np.float32]:
    """The first and last of each row's pixels ``(xs, ys)``, given in raster order, as ``(K, 2)`` points: they
    have the same convex hull as all of them, so a smallest oriented box as small, for a fraction of the
    points (a rod has a few thousand pixels, and the hull's cost was a sixth of its fit). (Where a hull has
    several smallest boxes, OpenCV may pick another: a handful of pixels, never a rod's.)"""
    first = np.flatnonzero(np.concatenate(([True], ys[1:] != ys[:-1])))
    last = np.concatenate((first[1:], [len(ys)])) - 1
    idx = np.concatenate((first, last))
    return np.stack([xs[idx], ys[idx]], axis=1).astype(np.float32)


def label_row_ends(lab: NDArray[np.int32], n: int) -> list[NDArray[np.float32]]:
    """:func:`row_ends` of each of the regions 1..n of the label image ``lab`` (index k: region k's; index 0
    and a region without pixels: empty), from one pass over its runs: the first and last pixel of a region
    in a row are the start of its first run there and the end of its last."""
    w = lab.shape[1]
    flat = np.ascontiguousarray(lab).ravel()
    change = np.ones(flat.size + 1, bool)  # change[i]: pixel i starts a run (so pixel i - 1 ends one)
    np.not_equal(flat[1:], flat[:-1], out=change[1:-1])
    change[::w] = True  # every row starts a run (and the pixel before it ends one)
    starts = np.flatnonzero(change[:-1])
    labels = flat[starts]
    labelled = labels > 0
    ends = np.flatnonzero(change[1:])[labelled]
    starts, labels = starts[labelled], labels[labelled]
    out = [np.empty((0, 2), np.float32)] * (n + 1)
    if not len(starts):
        return out
    order = np.argsort(labels, kind="stable")  # each region's runs, still in raster order
    starts, ends, labels = starts[order], ends[order], labels[order]
    rows = starts // w
    first = np.flatnonzero(np.concatenate(([True], (labels[1:] != labels[:-1]) | (rows[1:] != rows[:-1]))))
    last = np.concatenate((first[1:], [len(starts)])) - 1
    ys = rows[first]
    firsts = np.stack((starts[first] - ys * w, ys), axis=1).astype(np.float32)
    lasts = np.stack((ends[last] - ys * w, ys), axis=1).astype(np.float32)
    bounds = np.searchsorted(labels[first], np.arange(n + 2)).tolist()
    for k in range(1, n + 1):
        a, b = bounds[k], bounds[k + 1]
        if a < b:
            out[k] = np.concatenate((firsts[a:b], lasts[a:b]))
    return out


def segment_distance(
    px: NDArray[np.float32],
    py: NDArray[np.float32],
    x0: float,
    y0: float,
    x1: float,
    y1: float,
) -> NDArray[np.float32]:
    """Distance of points to the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((px - x0) * dx + (py - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return np.asarray(np.hypot(px - x0 - t * dx, py - y0 - t * dy), np.float32)


def upper_quartile(values: NDArray[np.float32]) -> float:
    """``np.percentile(values, 75)`` (linear between the two nearest ranks), from a partial sort: a
    component's distances are thousands, and percentile's full machinery cost more than the rest here."""
    k = 0.75 * (len(values) - 1)
    lo, hi = math.floor(k), math.ceil(k)
    part = np.partition(values, (lo, hi))
    a, b, t = part[lo], part[hi], values.dtype.type(k - lo)
    # numpy's own interpolation, in the values' precision: from the nearer rank
    return float(a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t))
