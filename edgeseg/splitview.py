"""A side view of what the semantic split saw, for tuning its parameters next to the annotated frame.

The instances of a semantic model come from post-processing (:func:`edgeseg.semantic.semantic_to_instances`),
and when two touching parts come out as one instance the annotated frame does not say why. This view does,
from a :class:`~edgeseg.semantic.SplitView` (:func:`edgeseg.semantic.explain_split`,
:meth:`edgeseg.model.Model.explain`), in three panels:

- the class map in the class colours: was it the network (the parts are of different classes, or a gap was
  classed as part) or the split?
- the distance relief with the ``dist_threshold`` contour (red): markers start inside that contour, so two
  parts whose neck stays inside it (the neck is deeper than the threshold) share one marker; raising
  ``dist_threshold`` cuts the neck;
- the markers (each its own colour) over the dimmed relief, with the instance outlines: one marker spanning
  both parts means one instance; two markers and one outline means they were merged (``saddle_ratio``) or
  one part fell under ``size_threshold``. On a map of noise the view draws the reliefs and markers of only
  so many components the split did not look at; the caption says how many it left out (``unshown``).

For a model that draws where parts touch (a card's ``contact``), nothing is split: the middle panel shows the
contact pixels instead of a relief, and each component is one marker (a gap in the contact band is where two
parts became one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.annotate import PALETTE, wrap_text
from edgeseg.errors import InputError
from edgeseg.semantic import SplitView

__all__ = ["render_split_view"]

_GAP = 4  # pixels between panels
_FILL = (32, 32, 32)  # BGR of the margins around panels
_OUTLINE = (255, 255, 255)  # instance outlines
_LEVEL = (64, 64, 255)  # the threshold contour: red, which viridis lacks
_SUB = 4  # fractional bits of the outline points (cv2.polylines shift)
_Draw = Callable[[int, int], NDArray[np.uint8]]  # a panel at (width, height)
_Panel = tuple[
    _Draw, str, list[NDArray[np.int32]], tuple[int, int, int]
]  # drawing, caption, outlines, colour


def render_split_view(
    view: SplitView,
    class_colors: Sequence[tuple[int, int, int]] = PALETTE,
    size: tuple[int, int] = (480, 320),
) -> NDArray[np.uint8]:
    """A BGR ``size`` = ``(h, w)`` image of the view's class map, relief and markers, each with a caption.

    The panels are stacked vertically in a tall ``size`` (a strip beside the frame) and side by side in a
    wide one, whichever shows them bigger; each keeps the view's aspect ratio. Class ``k`` is drawn in
    ``class_colors[k % len(class_colors)]`` (BGR; default :data:`edgeseg.annotate.PALETTE`, the annotated
    frame's colours), background black.
    """
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise InputError(f"render_split_view: size must be positive (h, w), got {size}")
    if not class_colors:
        raise InputError("render_split_view: class_colors is empty")
    vh, vw = view.class_map.shape
    stacked = _panel_scale((h - 2 * _GAP) / 3, w, vh, vw) >= _panel_scale(h, (w - 2 * _GAP) / 3, vh, vw)
    if stacked:
        cells = [(0, round(k * (h + _GAP) / 3), w, round((k + 1) * (h + _GAP) / 3) - _GAP) for k in range(3)]
    else:
        cells = [(round(k * (w + _GAP) / 3), 0, round((k + 1) * (w + _GAP) / 3) - _GAP, h) for k in range(3)]
    out = np.full((h, w, 3), _FILL, np.uint8)
    n_inst, n_mark = len(view.instances), view.n_markers
    middle: _Panel = (
        (_relief_panel(view), f"distance relief (threshold {view.threshold:.2f})", _contours(view), _LEVEL)
        if view.contact is None and view.touching is None
        else (
            _contact_panel(view, view.class_map == view.contact),
            f"contact (class {view.contact}): nothing split",
            [],
            _LEVEL,
        )
        if view.touching is None
        else (_contact_panel(view, view.touching), "contact map: split at its cores", [], _LEVEL)
    )
    panels: tuple[_Panel, ...] = (
        (_ClassPanel(view, class_colors), "class map", [], _OUTLINE),
        middle,
        (
            _marker_panel(view),
            f"{n_mark} marker{'s' * (n_mark != 1)} -> {n_inst} instance{'s' * (n_inst != 1)}"
            + (f", {view.unshown} not drawn" if view.unshown else ""),
            _instance_outlines(view),
            _OUTLINE,
        ),
    )
    for (x0, y0, x1, y1), (draw, caption, outlines, color) in zip(cells, panels, strict=True):
        cw, ch = max(1, x1 - x0), max(1, y1 - y0)
        s = _panel_scale(ch, cw, vh, vw)
        pw, ph = max(1, min(cw, round(vw * s))), max(1, min(ch, round(vh * s)))
        px, py = x0 + (cw - pw) // 2, y0 + (ch - ph) // 2
        panel = draw(pw, ph)
        _outline(panel, outlines, (pw / vw, ph / vh), color)
        _caption(panel, caption)
        out[py : py + ph, px : px + pw] = panel
    return out


def _panel_scale(cell_h: float, cell_w: float, vh: int, vw: int) -> float:
    return max(0.0, min(cell_h / vh, cell_w / vw))


def _shrink(image: NDArray[Any], pw: int, ph: int) -> NDArray[Any]:
    """``image`` resized to ``(ph, pw)`` by nearest neighbour: labels and levels stay what they were."""
    return np.asarray(cv2.resize(image, (pw, ph), interpolation=cv2.INTER_NEAREST))


class _ClassPanel:
    """The class map in class colours at a panel's size, background black."""

    def __init__(self, view: SplitView, colors: Sequence[tuple[int, int, int]]) -> None:
        self.ids = view.class_map
        top = max(int(self.ids.max(initial=0)), view.background)
        self.lut = np.array([colors[k % len(colors)] for k in range(top + 1)], np.uint8).reshape(-1, 3)
        self.lut[view.background] = 0

    def __call__(self, pw: int, ph: int) -> NDArray[np.uint8]:
        ids = _shrink(self.ids, pw, ph)
        if len(self.lut) <= 256:  # one table look-up in OpenCV
            lut = np.zeros((1, 256, 3), np.uint8)
            lut[0, : len(self.lut)] = self.lut
            gray = np.asarray(cv2.cvtColor(ids.astype(np.uint8), cv2.COLOR_GRAY2BGR), np.uint8)
            return np.asarray(cv2.LUT(gray, lut), np.uint8)
        return np.ascontiguousarray(self.lut[ids])


def _viridis(relief: NDArray[np.float32], gain: float = 1.0) -> NDArray[np.uint8]:
    """A relief (already at the panel's size) in viridis, black outside the components, times ``gain``."""
    levels = np.asarray(cv2.convertScaleAbs(relief, alpha=255.0), np.uint8)  # rounded, saturated
    out = np.asarray(cv2.applyColorMap(levels, cv2.COLORMAP_VIRIDIS), np.uint8)
    out[relief <= 0] = 0
    return out if gain == 1.0 else np.asarray(cv2.convertScaleAbs(out, alpha=gain), np.uint8)


def _relief_panel(view: SplitView) -> _Draw:
    return lambda pw, ph: _viridis(_shrink(view.relief, pw, ph))


def _contact_panel(view: SplitView, where: NDArray[np.bool_]) -> _Draw:
    """Where a model that draws contacts (a class or a map) put them (white), over its parts (grey)."""

    def draw(pw: int, ph: int) -> NDArray[np.uint8]:
        out = np.zeros((ph, pw, 3), np.uint8)
        out[_shrink(view.class_map, pw, ph) != view.background] = 64
        out[_shrink(where.view(np.uint8), pw, ph).view(bool)] = 255
        return out

    return draw


def _marker_panel(view: SplitView) -> _Draw:
    """Markers in their own colours over the dimmed relief; small markers are grown before the panel
    shrinks the view, so none disappears."""

    def draw(pw: int, ph: int) -> NDArray[np.uint8]:
        out = _viridis(_shrink(view.relief, pw, ph), 0.35)
        markers = view.markers.astype(np.float32)  # exact up to 2**24 labels; OpenCV dilates no int32
        grow = math.ceil(max(view.markers.shape[1] / pw, view.markers.shape[0] / ph))
        if grow > 1 and view.n_markers:
            markers = np.asarray(cv2.dilate(markers, np.ones((grow, grow), np.uint8)), np.float32)
        lab = _shrink(markers, pw, ph).astype(np.int32)
        on = lab > 0
        out[on] = _label_colors(view.n_markers)[lab[on]]
        return out

    return draw


def _label_colors(n: int) -> NDArray[np.uint8]:
    """Bright, well-spread BGR colours for labels 1..n (row 0 unused): golden-ratio hues."""
    hues = (np.arange(n + 1) * 0.618034 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 220), np.full_like(hues, 255)], axis=1)[None]
    return np.asarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0], np.uint8)


def _contours(view: SplitView) -> list[NDArray[np.int32]]:
    """The outlines of the region above the threshold (where markers start), in view pixels."""
    above = (view.relief > view.threshold).view(np.uint8)
    contours, _ = cv2.findContours(above, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return [np.asarray(c, np.int32).reshape(-1, 2) for c in contours]


def _instance_outlines(view: SplitView) -> list[NDArray[np.int32]]:
    """The instances' outlines, in view pixels (traced in each instance's own crop)."""
    inst = view.instances
    out: list[NDArray[np.int32]] = []
    for i in range(len(inst)):
        x0, y0 = (int(v) for v in inst.mask_box[i][:2])
        contours, _ = cv2.findContours(inst.masks[i].view(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        out.extend(np.asarray(c, np.int32).reshape(-1, 2) + np.array([x0, y0], np.int32) for c in contours)
    return out


def _outline(
    panel: NDArray[np.uint8],
    outlines: Sequence[NDArray[np.int32]],
    scale: tuple[float, float],
    color: tuple[int, int, int],
) -> None:
    """Draw ``outlines`` (``(N, 2)`` points in view pixels) onto ``panel`` (view pixels times ``scale``), in
    place. Traced at the view's resolution and drawn scaled, a thin line stays visible however far the
    panel shrinks the view."""
    if not outlines:
        return
    factor = np.array([scale[0], scale[1]]) * (1 << _SUB)
    pts = [np.rint((c + 0.5) * factor).astype(np.int32) for c in outlines]
    cv2.polylines(panel, pts, True, color, 1, cv2.LINE_AA, shift=_SUB)


def _caption(panel: NDArray[np.uint8], text: str) -> None:
    """``text`` at the top of ``panel`` on a darkened box, wrapped to the panel's width: on one line, a
    panel of a narrow strip cut it off ("distance relief (threshold", the threshold itself lost)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.3, min(0.5, panel.shape[1] / 500))

    def width(line: str) -> int:
        return int(cv2.getTextSize(line, font, scale, 1)[0][0])

    lines = wrap_text(text, width, panel.shape[1] - 8)
    (_, th), base = cv2.getTextSize(text, font, scale, 1)
    step = th + base + 2
    box = panel[: len(lines) * step + 4, : max(map(width, lines)) + 8]  # slices stop at the panel's edges
    box //= 3  # darken behind the text
    for i, line in enumerate(lines):
        cv2.putText(panel, line, (4, th + 3 + i * step), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
