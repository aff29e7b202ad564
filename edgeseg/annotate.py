"""Drawing results onto images: masks, boxes, labels and a small head-up display; never mutates inputs."""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.errors import InputError
from edgeseg.geometry import obb_corners
from edgeseg.instances import Instances

BoxStyle = Literal["obb", "xyxy", "none"]

# BGR, distinct at a glance; class k gets PALETTE[k % len]; a label's text on them is white or black (_ink)
PALETTE: tuple[tuple[int, int, int], ...] = (
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
    (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
)  # fmt: skip


def class_color(class_id: int) -> tuple[int, int, int]:
    return PALETTE[int(class_id) % len(PALETTE)]


def hud_lines(fps: float, latency_p50_ms: float, latency_p99_ms: float, dropped: int = 0) -> list[str]:
    """The standard HUD text for a pipeline's live figures; one not known yet (``nan``: a rate before two
    results) is a ``-``, not "nan"."""

    def shown(value: float, digits: int) -> str:
        return f"{value:.{digits}f}" if math.isfinite(value) else "-"  # OpenCV's font has no en dash

    latency = f"{shown(latency_p50_ms, 0)}/{shown(latency_p99_ms, 0)}"
    lines = [f"{shown(fps, 1)} fps  latency {latency} ms (p50/p99)"]
    if dropped:
        lines.append(f"dropped {dropped}")
    return lines


def annotate(
    image: NDArray[np.uint8],
    instances: Instances,
    class_names: Sequence[str] = (),
    *,
    hud: Sequence[str] = (),
    truth: Instances | None = None,
    alpha: float = 0.45,
    boxes: BoxStyle = "obb",
    labels: bool = True,
    zones: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    lines: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> NDArray[np.uint8]:
    """A new BGR image with ``instances`` drawn on a copy of ``image``.

    Args:
        image: ``(H, W, 3)`` uint8 BGR, the frame the instances' pixel coordinates refer to.
        instances: results in ``image`` pixels; each mask pixel is the frame's blended once with the
            instance's class colour (the later instance's where masks overlap), under every outline, box and
            label.
        class_names: names by class id; ids without a name are drawn as numbers, and so are names with a
            character OpenCV's font has no glyph for (CJK, Greek, ...), which it would draw as ``?``.
        hud: lines of text for the top-left corner (frame rate, latency, ...).
        truth: ground truth of this frame; when given, the HUD also shows the frame's panoptic quality.
        alpha: mask opacity in [0, 1].
        boxes: ``"obb"`` oriented boxes, ``"xyxy"`` axis-aligned boxes or ``"none"``.
        labels: draw ``name score`` above each instance, ``#id name score`` when it has a track id.
        zones, lines: polygons and segments by name in normalized frame coordinates (the pipeline's
            ``zones:``/``lines:``), drawn under the instances with their names; a line has a tick on its
            ``in`` side.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"annotate needs an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    if tuple(image.shape[:2]) != tuple(instances.image_shape):
        raise InputError(f"instances are for a {instances.image_shape} frame, the image is {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"annotate alpha must be in [0, 1], got {alpha}")
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.35, min(h, w) / 900)
    thick = max(1, round(scale * 2))
    _regions(out, zones or {}, lines or {}, scale, thick)
    n = len(instances)
    colors = [class_color(int(c)) for c in instances.class_id]
    mask_boxes = [[int(v) for v in box] for box in instances.mask_box.tolist()]
    if n and alpha > 0:
        # the masks painted in their colours on one layer, blended with the frame by OpenCV in one pass and
        # copied back under them: a blend and a copy per mask's box cost more than the frame's one
        layer = np.empty_like(out)  # (only its pixels under a mask are read)
        covered = np.zeros((h, w), np.uint8)
        for i in range(n):
            x0, y0, x1, y1 = mask_boxes[i]
            crop = instances.masks[i]
            layer[y0:y1, x0:x1][crop] = colors[i]
            covered[y0:y1, x0:x1] |= crop.view(np.uint8)
        cv2.addWeighted(out, 1 - alpha, layer, alpha, 0.0, dst=layer)
        cv2.copyTo(layer, covered, dst=out)
    corners = None
    if boxes == "obb":
        corners = _obb_outlines(instances.obb)
    elif boxes == "xyxy":
        # drawn as the axis-aligned oriented box, to 1/16 px: rounded to whole pixels (half to even), an edge
        # at .5 was drawn inside or outside the box by the parity of its pixel
        b = np.asarray(instances.xyxy, np.float64).reshape(-1, 4)
        centre, size = (b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]
        corners = _obb_outlines(np.column_stack([centre, size, np.zeros(len(b))]))
    for i in range(n):
        color = colors[i]
        x0, y0 = mask_boxes[i][:2]
        contours, _ = cv2.findContours(
            instances.masks[i].view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
        )
        cv2.drawContours(out, contours, -1, color, 1, lineType=cv2.LINE_AA)
        if corners is not None:
            cv2.polylines(out, [corners[i]], True, color, thick, lineType=cv2.LINE_AA, shift=OUTLINE_SHIFT)
        if labels:
            cid = int(instances.class_id[i])
            name = (
                class_names[cid] if 0 <= cid < len(class_names) and _drawable(class_names[cid]) else str(cid)
            )
            tid = -1 if instances.track_id is None else int(instances.track_id[i])
            track = f"#{tid} " if tid >= 0 else ""
            _label(out, f"{track}{name} {float(instances.score[i]):.2f}", (x0, y0), color, scale)
    text = list(hud)
    if truth is not None:
        from edgeseg.metrics import panoptic_quality

        pq = panoptic_quality(instances, truth)
        text.append(f"PQ {pq.pq:.2f}  ({pq.tp} matched, {pq.fp} false, {pq.fn} missed)")
    if text:
        _hud(out, text, scale)
    return out


OUTLINE_SHIFT = 4  # fractional bits of the oriented boxes' corners as OpenCV draws them (1/16 px)


def _obb_outlines(obb: NDArray[np.floating]) -> NDArray[np.int32]:
    """``(N, 4, 2)`` corners for ``cv2.polylines(..., shift=OUTLINE_SHIFT)``: each oriented box's line runs
    through the centres of its edge pixels, as ``cv2.rectangle`` draws a whole-pixel box, half a pixel inside
    the box's edges (xyxy boxes are drawn through it too). (Its corners rounded to whole pixels, half of all
    boxes were drawn 1 px outside on a side.)"""
    inset = np.asarray(obb, np.float64).reshape(-1, 5).copy()
    inset[:, 2:4] = np.maximum(inset[:, 2:4] - 1.0, 0.0)
    return np.round((obb_corners(inset) - 0.5) * (1 << OUTLINE_SHIFT)).astype(np.int32)


REGION_COLOR = (0, 215, 255)  # BGR amber: neither a class colour nor the HUD's white


def _regions(
    img: NDArray[np.uint8],
    zones: Mapping[str, Sequence[tuple[float, float]]],
    lines: Mapping[str, Sequence[tuple[float, float]]],
    scale: float,
    thick: int,
) -> None:
    h, w = img.shape[:2]
    # where membership changes: points scaled by (w, h) on pixel corners (zones.py), drawn to 1/16 px as
    # OpenCV's coordinates are pixel centres; scaled by (w - 1, h - 1) and rounded, an edge was drawn up to
    # a pixel from where a track's membership changes
    size = np.asarray([w, h], np.float64)

    def placed(points: Sequence[tuple[float, float]]) -> NDArray[np.float64]:
        # an edge on the frame's border on its outer pixels (drawn half a pixel outside, the top and left
        # ones were not seen); nothing lies outside the frame to be a member
        return np.clip(np.asarray(points, np.float64) * size, 0.5, size - 0.5)

    def fixed(p: NDArray[np.float64]) -> NDArray[np.int32]:
        return np.round((p - 0.5) * (1 << OUTLINE_SHIFT)).astype(np.int32)

    for name, polygon in zones.items():
        corners = placed(polygon)
        cv2.polylines(
            img, [fixed(corners)], True, REGION_COLOR, thick, lineType=cv2.LINE_AA, shift=OUTLINE_SHIFT
        )
        # at the top corner (the leftmost of a flat top): a triangle's bounding box may have its top-left
        # corner far outside it
        top = min(corners.tolist(), key=lambda p: (p[1], p[0]))
        _label(img, name, (int(top[0]), int(top[1])), REGION_COLOR, scale)
    for name, seg in lines.items():
        a, b = placed(seg[:2])
        cv2.line(
            img,
            tuple(fixed(a).tolist()),
            tuple(fixed(b).tolist()),
            REGION_COLOR,
            thick + 1,
            lineType=cv2.LINE_AA,  # (whole pixels otherwise: up to half a pixel off, the shift lost)
            shift=OUTLINE_SHIFT,
        )
        d = b - a
        n = np.asarray([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-9)  # the "in" side
        mid = (a + b) / 2
        tip = mid + n * max(8.0, 20 * scale)
        cv2.arrowedLine(
            img,
            tuple(fixed(mid).tolist()),
            tuple(fixed(tip).tolist()),
            REGION_COLOR,
            thick,
            shift=OUTLINE_SHIFT,
            tipLength=0.4,
        )
        # at the top end, as a zone's: a diagonal's bounding box has its top-left corner far from the line
        top = min((a, b), key=lambda p: (p[1], p[0]))
        _label(img, name, (int(top[0]), int(top[1])), REGION_COLOR, scale)


@functools.lru_cache(maxsize=256)
def _drawable(text: str) -> bool:
    """Whether OpenCV's font draws every character of ``text``.

    ``cv2.putText`` draws ``?`` for a character its font has no glyph for (``drawing.cpp``, ``putText``), so
    two classes named in Chinese came out as the same ``??``; which characters have glyphs depends on the
    OpenCV version (5.x draws accents and Cyrillic), so each one is drawn once and compared with ``?``.
    """
    return all(ch == "?" or not np.array_equal(_glyph(ch), _glyph("?")) for ch in text)


@functools.lru_cache(maxsize=1024)
def _glyph(ch: str) -> NDArray[np.uint8]:
    img = np.zeros((24, 24), np.uint8)
    cv2.putText(img, ch, (2, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
    return img


def _label(
    img: NDArray[np.uint8], text: str, at: tuple[int, int], color: tuple[int, int, int], scale: float
) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    x = min(max(0, at[0]), max(0, img.shape[1] - tw - 2))
    y = at[1] - 2 if at[1] - th - base - 2 >= 0 else at[1] + th + base + 2
    cv2.rectangle(img, (x, y - th - base), (x + tw + 2, y + 1), color, -1)
    cv2.putText(img, text, (x + 1, y - base + 1), font, scale, _ink(color), 1, cv2.LINE_AA)


@functools.lru_cache(maxsize=64)
def _ink(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """White or black text, whichever stands out more on BGR ``color``: white alone had a contrast of 1.4
    to 2 (unreadable) on the palette's light greens and yellows and on the zones' amber.

    By WCAG 2 relative luminance ``L``, white's contrast ``1.05 / (L + 0.05)`` and black's
    ``(L + 0.05) / 0.05`` are equal at ``L = 0.179``.
    """
    linear = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in (c / 255 for c in color)]
    luminance = 0.0722 * linear[0] + 0.7152 * linear[1] + 0.2126 * linear[2]
    return (0, 0, 0) if luminance > 0.179 else (255, 255, 255)


def _hud(img: NDArray[np.uint8], lines: Sequence[str], scale: float) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    s = scale * 1.2
    # a line wider than the frame goes on over the next lines, word by word: cut off at the right edge, the
    # tune window's "saved ... to PATH: key=value, ..." lost its second half on a 640x480 frame
    room = img.shape[1] - 12
    lines = [
        part
        for line in lines
        for part in wrap_text(line, lambda t: cv2.getTextSize(t, font, s, 1)[0][0], room)
    ]
    sizes = [cv2.getTextSize(t, font, s, 1) for t in lines]
    line_h = max(th + base for (_, th), base in sizes) + 4
    width = max(tw for (tw, _), _ in sizes) + 12
    panel = img[: min(img.shape[0], line_h * len(lines) + 8), : min(img.shape[1], width)]
    panel //= 3  # darken in place: only this corner of the copy
    for k, text in enumerate(lines):
        cv2.putText(img, text, (6, 4 + line_h * (k + 1) - 4), font, s, (255, 255, 255), 1, cv2.LINE_AA)


def wrap_text(text: str, width: Callable[[str], int], room: int) -> list[str]:
    """``text`` in lines of at most ``room`` by ``width``, broken between words; a word wider than that (a
    long path) is broken where a line is full: on a line of its own, it ran off the edge and lost its end."""
    if width(text) <= room:
        return [text]
    out: list[str] = []
    for word in text.split(" "):
        if out and width(f"{out[-1]} {word}") <= room:
            out[-1] = f"{out[-1]} {word}"
            continue
        while len(word) > 1 and width(word) > room:
            # the longest head that fits, at least one character (a line of one too wide still moves on)
            n = max(1, bisect.bisect_right(range(1, len(word) + 1), room, key=lambda k: width(word[:k])))
            out.append(word[:n])
            word = word[n:]
        out.append(word)
    return out
