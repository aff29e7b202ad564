"""Zones and lines: membership, crossings, counts and events for confirmed tracks (``zones:``/``lines:``).

Geometry is in normalized frame coordinates (``x / width``, ``y / height``, 0..1), so a pipeline keeps its
zones when the resolution changes; distances (``margin``, ``dead_band``) are in the same units. Only
confirmed tracks count (``track_id >= 0``): a detection without an id (``-1``) is never a crossing or a
visit, so unconfirmed detections cannot pile up as one shared id. Every duration is in seconds of the
frames' capture timestamps.

**Zone membership** is by an anchor point of the box (``anchor``, default the bottom centre) or, with
``min_fraction``, by the fraction of the instance's *mask* inside the polygon. Each observation is clearly
inside (anchor more than ``margin`` inside the edge; mask fraction >= ``min_fraction + fraction_band / 2``,
at most 1), clearly outside (more than ``margin`` outside; fraction < ``min_fraction - fraction_band / 2``,
or none of the mask inside), or on the edge (no evidence either way). A track enters after being clearly
inside for ``enter_s`` (from its first clearly-inside observation to a later one, with no clearly-outside or
edge observation between),
and leaves likewise after ``exit_s`` clearly outside. So jitter on the edge smaller than ``margin`` never
changes anything, and a one-frame spike never does when ``enter_s``/``exit_s`` exceed one frame interval.
``loiter`` fires once per stay, ``loiter_s`` after the entry.

**Line crossing** uses the anchor's path between consecutive observations of a track (not box corners, so a
line 10 px from the frame edge works, and a jump across the line between two frames at 5 fps counts). A
track is *on a side* when its anchor is more than ``dead_band`` from the (infinite) line. A crossing is
counted when a track that was on one side is next on the other side and one step of its path in between
touched the finite segment: jitter inside the band never counts, a track that walks round the segment's end
never counts, and an object that never touched the line never counts. ``in``: to the right-hand side of the
line as drawn on screen from its first point to its second (a line drawn left to right: ``in`` is
downward); ``out``: the other way.

**State**: per confirmed track, per zone and line, a few numbers; all purged when the track ends (the
tracker's ``end`` event, or not seen for more than the tracker's ``lost_s``). A track that ends inside a
zone gets its ``zone_exit`` in the same frame as its ``end`` (also at shutdown, from :meth:`ZoneStage.close`),
so ``inside`` counts go back to 0; its time inside runs to where a seen exit would have put it: ``exit_s``
after it was last seen (or first seen outside), never counting the time it went unseen before it ended.

**Event bound**: per track, ``new`` + ``end``; per track and zone at most ``1 + life / (enter_s + exit_s)``
enter/exit pairs (a stay and an absence each last at least ``enter_s``/``exit_s``) plus one ``loiter``
per stay; per track and line one crossing per passage from side to side (at least ``2 * dead_band`` of
travel each).
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.events import Counts, Direction, Event, EventSequence
from edgeseg.fields import meta as _m
from edgeseg.geometry import fill_polygon
from edgeseg.validate import FieldError, describe, is_number

if TYPE_CHECKING:
    from edgeseg.frame import Result

Points = tuple[tuple[float, float], ...]
ANCHORS = ("bottom_center", "center", "top_center")
NAME_PATTERN = r"^[A-Za-z0-9_-]+$"  # a topic level on MQTT
# a zone's corners: checking that no two edges cross compares every pair (0.2 s at this many, 100 s at
# 30000, from a file or a reload); a drawn zone needs tens
MAX_ZONE_POINTS = 1000
# a zone whose part more than margin inside is a sliver narrower than this is taken as having none: no
# anchor would fall into it, and the search would need cells as small as the sliver (10 s for one 1e-6 wide)
INSIDE_SLACK = 1e-3  # (normalized: under a pixel of a frame 640 wide)
SLACK_S = 1e-3  # on durations, so capture times rounded to the nanosecond meet whole frame intervals


@dataclass(frozen=True)
class ZoneConfig:
    """A named zone: a polygon in normalized frame coordinates; counts tracks inside, entering, leaving."""

    polygon: Points = field(
        metadata=_m("Corners [[x, y], ...] in order round the zone, each once, normalized 0..1; 3 to 1000.")
    )
    anchor: str = field(
        default="bottom_center",
        metadata=_m("Point of the box that must be inside (when min_fraction is null).", choices=ANCHORS),
    )
    min_fraction: float | None = field(
        default=None,
        metadata=_m(
            "Membership by mask: this fraction of the mask inside (null: by anchor point).", gt=0, le=1
        ),
    )
    margin: float = field(
        default=0.01,
        metadata=_m(
            "Anchor membership: the anchor must be this far inside the edge to count as inside, this far "
            "outside to count as outside (normalized distance).",
            ge=0,
            le=0.5,
        ),
    )
    fraction_band: float = field(
        default=0.1,
        metadata=_m(
            "Mask membership: inside from min_fraction + half this (at most 1), outside below min_fraction - "
            "half this (or with no pixel inside).",
            ge=0,
            le=1,
        ),
    )
    enter_s: float = field(default=0.3, metadata=_m("Seconds clearly inside before a track enters.", ge=0))
    exit_s: float = field(default=0.5, metadata=_m("Seconds clearly outside before a track leaves.", ge=0))
    loiter_s: float | None = field(
        default=None, metadata=_m("Seconds inside that make a loiter event (null: none).", gt=0)
    )

    def __post_init__(self) -> None:
        if len(self.polygon) < 3:
            raise FieldError("polygon", "must have at least 3 points [x, y]", _raw(self.polygon))
        if len(self.polygon) > MAX_ZONE_POINTS:
            raise FieldError(
                "polygon", f"must have at most {MAX_ZONE_POINTS} points, got {len(self.polygon)}"
            )
        if _on_one_line(self.polygon):
            raise FieldError(
                "polygon", "must enclose an area (its points lie on one line)", _raw(self.polygon)
            )
        # corners out of order, or one listed twice: not the zone meant (a figure of eight through a corner
        # listed twice was refused or taken by the sum of its lobes' signed areas, 0 when symmetric)
        if _meets_itself(self.polygon):
            raise FieldError(
                "polygon",
                "must not cross or touch itself (list its corners in order round the zone, each once)",
                _raw(self.polygon),
            )
        if abs(_signed_area(self.polygon)) < 1e-9:
            raise FieldError("polygon", "must enclose an area", _raw(self.polygon))
        # a zone narrower than twice the margin has no point clearly inside: no track ever entered it, and
        # nothing said why (a zone that counts nothing looks like a quiet scene)
        if self.min_fraction is None and not _reaches_inside(self.polygon, self.margin):
            raise FieldError(
                "margin",
                "must be less than half the zone's width: no point of it lies more than margin inside its "
                "edge, so no track would ever enter (widen the zone, lower margin, or count by min_fraction)",
                self.margin,
            )


@dataclass(frozen=True)
class LineConfig:
    """A named counting line: a segment in normalized frame coordinates; counts crossings in and out."""

    points: Points = field(
        metadata=_m("Two points [[x0, y0], [x1, y1]], normalized 0..1; in = to the right of x0,y0 -> x1,y1.")
    )
    anchor: str = field(
        default="bottom_center", metadata=_m("Point of the box whose path counts.", choices=ANCHORS)
    )
    dead_band: float = field(
        default=0.01,
        metadata=_m(
            "A track is on a side only beyond this distance from the line (normalized).", ge=0, le=0.5
        ),
    )

    def __post_init__(self) -> None:
        if len(self.points) != 2:
            raise FieldError("points", "must be exactly 2 points [x, y]", _raw(self.points))
        (x0, y0), (x1, y1) = self.points
        if math.hypot(x1 - x0, y1 - y0) < 1e-6:
            raise FieldError("points", "must be 2 different points", _raw(self.points))


def _raw(points: Points) -> list[list[float]]:
    return [list(p) for p in points]


def _signed_area(points: Points) -> float:
    return 0.5 * sum(
        x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, (*points[1:], points[0]), strict=True)
    )


def _turn(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> float:
    """Twice the signed area of the triangle ``a, b, c`` (0: on one line)."""
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _on_one_line(points: Points) -> bool:
    """Whether every point lies within 1e-9 of the line through the first and the one farthest from it."""
    a = points[0]
    far = max(points, key=lambda p: math.dist(a, p))
    span = math.dist(a, far)
    return span == 0 or all(abs(_turn(a, far, p)) <= 1e-9 * span for p in points)


def _reaches_inside(points: Points, margin: float) -> bool:
    """Whether some point lies more than ``margin`` inside the polygon, by the distance membership measures
    (``cv2.pointPolygonTest``), give or take ``INSIDE_SLACK``: polylabel's search (Mapbox), best cell first
    over a quadtree of the bounding box, a cell dropped when no point of it can be that far in (the distance
    changes no faster than the point moves)."""
    contour = np.asarray(points, np.float32).reshape(-1, 1, 2)
    xs, ys = zip(*points, strict=True)

    def cell(x: float, y: float, half: float) -> tuple[float, float, float, float, float]:
        d = cv2.pointPolygonTest(contour, (x, y), True)
        return -(d + half * math.sqrt(2)), x, y, half, d  # (the farthest any point of it can be, first)

    half = max(max(xs) - min(xs), max(ys) - min(ys)) / 2
    cells = [cell((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, half)]
    while cells:
        reach, x, y, half, d = heapq.heappop(cells)
        if d > margin:
            return True
        if -reach <= margin + INSIDE_SLACK:
            return False  # (nor can any other cell's point: this one reaches farthest)
        half /= 2
        for cx, cy in (
            (x - half, y - half),
            (x + half, y - half),
            (x - half, y + half),
            (x + half, y + half),
        ):
            heapq.heappush(cells, cell(cx, cy, half))
    return False


def _meets_itself(points: Points) -> bool:
    """Whether two edges that are not neighbours meet: cross, touch, or overlap along a line (a corner
    listed twice, as in a figure of eight or a pinch, is two such edges meeting). A corner repeated at once
    (a double click, or the first again at the end as GeoJSON closes a ring) is one corner."""
    pts = [p for p, q in zip(points, (*points[1:], points[0]), strict=True) if p != q]
    n = len(pts)
    edges = [(pts[i], pts[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 2, n - (i == 0)):  # not the next edge, nor (from the first) the last
            (p, q), (r, u) = edges[i], edges[j]
            d1, d2 = _turn(r, u, p), _turn(r, u, q)
            if d1 * d2 > 0:
                continue
            d3, d4 = _turn(p, q, r), _turn(p, q, u)
            if d3 * d4 > 0:
                continue
            if d1 or d2 or d3 or d4:
                return True
            # on one line: they meet where their extents overlap
            if all(
                max(min(p[k], q[k]), min(r[k], u[k])) <= min(max(p[k], q[k]), max(r[k], u[k])) for k in (0, 1)
            ):
                return True
    return False


def check_points(value: Any, key: str, fail: Callable[..., Exception]) -> Points:
    """A YAML list of ``[x, y]`` pairs, each coordinate in [0, 1], as a tuple of float pairs."""
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(p, (list, tuple))
        and len(p) == 2
        # (is_number: an integer past a float's range, 400 digits, was an OverflowError from math.isfinite)
        and all(is_number(v) for v in p)
        for p in value
    )
    if not ok:
        raise fail(key, "must be a list of [x, y] points", value)
    for p in value:
        if not all(0.0 <= v <= 1.0 for v in p):
            raise fail(
                key, f"each point must be inside the frame, normalized 0..1: {describe(list(p))} is not"
            )
    return tuple((float(p[0]), float(p[1])) for p in value)


def check_name(name: Any, key: str, fail: Callable[..., Exception]) -> str:
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
        raise fail(key, f"name must match {NAME_PATTERN} (it is an MQTT topic level)", name)
    return name


# --- state --------------------------------------------------------------------------------------------


class _ZoneState:
    __slots__ = ("entered_t", "inside", "loitered", "pending")

    def __init__(self) -> None:
        self.inside = False
        self.pending: float | None = None  # capture time of the first observation for a change
        self.entered_t = 0.0
        self.loitered = False


class _LineState:
    __slots__ = ("last", "side", "touched")

    def __init__(self) -> None:
        self.side = 0  # -1 / +1: the side it was last seen beyond the dead band on; 0: not yet
        self.last: tuple[float, float] | None = None  # the previous observation's anchor
        self.touched = False  # a step since it was last beyond the band touched the segment


class _TrackState:
    __slots__ = ("class_id", "last_t", "lines", "zones")

    def __init__(self, class_id: int, n_zones: int, n_lines: int) -> None:
        self.class_id = class_id
        self.last_t = 0.0
        self.zones = [_ZoneState() for _ in range(n_zones)]
        self.lines = [_LineState() for _ in range(n_lines)]


def anchor_points(xyxy: NDArray[Any], anchor: str, width: int, height: int) -> NDArray[np.float64]:
    """``(N, 2)`` normalized anchor points of ``(N, 4)`` pixel boxes."""
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    x = (b[:, 0] + b[:, 2]) / 2
    y = {"bottom_center": b[:, 3], "center": (b[:, 1] + b[:, 3]) / 2, "top_center": b[:, 1]}[anchor]
    out: NDArray[np.float64] = np.stack([x / width, y / height], axis=1)
    return out


class LineGeometry:
    """A segment's side and crossing tests (normalized coordinates)."""

    def __init__(self, config: LineConfig) -> None:
        (ax, ay), (bx, by) = config.points
        self.a = (ax, ay)
        self.d = (bx - ax, by - ay)
        self.length = math.hypot(*self.d)
        self.n = (-self.d[1] / self.length, self.d[0] / self.length)  # right-hand side on screen
        self.band = config.dead_band

    def distance(self, p: tuple[float, float]) -> float:
        """Signed distance from the infinite line: > 0 on the ``in`` side."""
        return (p[0] - self.a[0]) * self.n[0] + (p[1] - self.a[1]) * self.n[1]

    def side(self, p: tuple[float, float]) -> int:
        s = self.distance(p)
        return 1 if s > self.band else -1 if s < -self.band else 0

    def touches(self, p: tuple[float, float], q: tuple[float, float]) -> bool:
        """Whether the step ``p -> q`` meets the finite segment."""
        sp, sq = self.distance(p), self.distance(q)
        if (sp > 0 and sq > 0) or (sp < 0 and sq < 0):
            return False
        if sp == sq:  # both on the line
            return any(0.0 <= self._along(r) <= 1.0 for r in (p, q))
        f = sp / (sp - sq)
        x = (p[0] + f * (q[0] - p[0]), p[1] + f * (q[1] - p[1]))
        return 0.0 <= self._along(x) <= 1.0

    def _along(self, p: tuple[float, float]) -> float:
        return ((p[0] - self.a[0]) * self.d[0] + (p[1] - self.a[1]) * self.d[1]) / (self.length**2)


class ZoneCounter:
    """The zone and line rules on plain observations (the stage feeds it from results; tests directly).

    Not thread-safe: one per stream, fed in capture order.
    """

    def __init__(
        self,
        zones: Mapping[str, ZoneConfig],
        lines: Mapping[str, LineConfig],
        lost_s: float = 2.0,
        sequence: EventSequence | None = None,
    ) -> None:
        self.zones = dict(zones)
        self.lines = dict(lines)
        self.lost_s = lost_s
        self.sequence = sequence or EventSequence()
        self._zone_list = list(self.zones.items())
        self._contours = [np.asarray(z.polygon, np.float32).reshape(-1, 1, 2) for _, z in self._zone_list]
        self._line_list = [(name, LineGeometry(cfg)) for name, cfg in self.lines.items()]
        self._tracks: dict[int, _TrackState] = {}
        self._rasters: dict[tuple[int, int], list[NDArray[np.bool_]]] = {}
        self.counts = Counts()
        self._last: tuple[int, float] | None = None  # the previous frame's capture ns and wall time

    @property
    def active(self) -> int:
        """Tracks with state held now."""
        return len(self._tracks)

    def observe(
        self,
        t_ns: int,
        wall: float,
        track_ids: Sequence[int],
        class_ids: Sequence[int],
        zone_evidence: Sequence[Sequence[int]],
        line_points: Sequence[Sequence[tuple[float, float]]],
        ended: Sequence[int] = (),
        ended_at: tuple[int, float] | None = None,
    ) -> list[Event]:
        """One frame: the events it makes.

        Args:
            t_ns, wall: the frame's capture time (monotonic ns) and wall time.
            track_ids, class_ids: the frame's instances (ids < 0 are ignored).
            zone_evidence: per instance, per zone: +1 clearly inside, -1 clearly outside, 0 on the edge.
            line_points: per instance, per line: the anchor point (normalized).
            ended: tracks the tracker ended in this frame.
            ended_at: the capture ns and wall time it ended them at (default: this frame's).
        """
        t = t_ns / 1e9
        events: list[Event] = []
        at = (t_ns, wall) if ended_at is None else ended_at
        if self._last is not None and t_ns < self._last[0]:
            # the source restarted: nothing carries over, and what ended, ended with the old stream
            ended, at = [*ended, *self._tracks], self._last
        self._last = (t_ns, wall)
        for tid in ended:
            self._end(tid, *at, events)
        for tid in [k for k, st in self._tracks.items() if t - st.last_t > self.lost_s + SLACK_S]:
            self._end(tid, t_ns, wall, events)
        for i, tid in enumerate(track_ids):
            if tid < 0:
                continue
            st = self._tracks.get(tid)
            if st is None:
                st = self._tracks[tid] = _TrackState(
                    int(class_ids[i]), len(self._zone_list), len(self._line_list)
                )
            st.last_t = t
            for k, evidence in enumerate(zone_evidence[i]):
                self._zone_step(tid, st, k, evidence, t, t_ns, wall, events)
            for k, p in enumerate(line_points[i]):
                self._line_step(tid, st, k, p, t_ns, wall, events)
        self.counts.apply(events)
        return events

    def close(self, t_ns: int, wall: float) -> list[Event]:
        """``zone_exit`` for every track still inside a zone; all state is dropped."""
        events: list[Event] = []
        for tid in list(self._tracks):
            self._end(tid, t_ns, wall, events)
        self.counts.apply(events)
        self._last = None
        return events

    def _event(self, kind: Any, tid: int, st: _TrackState, t_ns: int, wall: float, **kw: Any) -> Event:
        return Event(kind, self.sequence.take(), tid, st.class_id, t_ns, wall, **kw)

    def _end(self, tid: int, t_ns: int, wall: float, events: list[Event]) -> None:
        st = self._tracks.pop(tid, None)
        if st is None:
            return
        for k, zs in enumerate(st.zones):
            if zs.inside:
                name, cfg = self._zone_list[k]
                # the stay ends where an exit seen would have: exit_s after the track was first seen outside
                # or, unseen since, last seen; not the lost_s it went unseen, nor an outage before a restart
                out_from = st.last_t if zs.pending is None else zs.pending
                left = min(out_from + cfg.exit_s, t_ns / 1e9)
                dur = max(0.0, left - zs.entered_t)
                events.append(self._event("zone_exit", tid, st, t_ns, wall, zone=name, duration_s=dur))

    def _zone_step(
        self,
        tid: int,
        st: _TrackState,
        k: int,
        evidence: int,
        t: float,
        t_ns: int,
        wall: float,
        events: list[Event],
    ) -> None:
        zs = st.zones[k]
        name, cfg = self._zone_list[k]
        wants = evidence > 0 if not zs.inside else evidence < 0
        if evidence == 0 or not wants:
            zs.pending = None
        else:
            if zs.pending is None:
                zs.pending = t
            hold = cfg.exit_s if zs.inside else cfg.enter_s
            if t - zs.pending + SLACK_S >= hold:
                zs.pending = None
                if zs.inside:
                    zs.inside = False
                    dur = t - zs.entered_t
                    events.append(self._event("zone_exit", tid, st, t_ns, wall, zone=name, duration_s=dur))
                else:
                    zs.inside, zs.entered_t, zs.loitered = True, t, False
                    events.append(self._event("zone_enter", tid, st, t_ns, wall, zone=name))
        if (
            zs.inside
            and not zs.loitered
            and cfg.loiter_s is not None
            and t - zs.entered_t + SLACK_S >= cfg.loiter_s
        ):
            zs.loitered = True
            dur = t - zs.entered_t
            events.append(self._event("loiter", tid, st, t_ns, wall, zone=name, duration_s=dur))

    def _line_step(
        self,
        tid: int,
        st: _TrackState,
        k: int,
        p: tuple[float, float],
        t_ns: int,
        wall: float,
        events: list[Event],
    ) -> None:
        ls = st.lines[k]
        name, geo = self._line_list[k]
        if ls.last is not None and geo.touches(ls.last, p):
            ls.touched = True
        ls.last = p
        side = geo.side(p)
        if side == 0:
            return
        if ls.side != 0 and side != ls.side and ls.touched:
            direction: Direction = "in" if side > 0 else "out"
            events.append(self._event("line_cross", tid, st, t_ns, wall, line=name, direction=direction))
        ls.side = side
        ls.touched = False

    # evidence from instances -------------------------------------------------------------------------

    def evidence(self, instances: Any) -> tuple[list[list[int]], list[list[tuple[float, float]]]]:
        """Per instance: the zone evidence and the line anchor points (see :meth:`observe`)."""
        h, w = instances.image_shape
        n = len(instances)
        zone_ev: list[list[int]] = [[] for _ in range(n)]
        line_pts: list[list[tuple[float, float]]] = [[] for _ in range(n)]
        if not n:
            return zone_ev, line_pts
        anchors = {a: anchor_points(instances.xyxy, a, w, h).tolist() for a in ANCHORS}
        for k, (_, cfg) in enumerate(self._zone_list):
            if cfg.min_fraction is None:
                contour = self._contours[k]
                for i in range(n):
                    x, y = anchors[cfg.anchor][i]
                    d = cv2.pointPolygonTest(contour, (x, y), True)
                    zone_ev[i].append(1 if d > cfg.margin else -1 if d < -cfg.margin else 0)
            else:
                raster = self._raster(h, w)[k]
                for i in range(n):
                    x0, y0, x1, y1 = (int(v) for v in instances.mask_box[i])
                    inside = np.count_nonzero(instances.masks[i] & raster[y0:y1, x0:x1])
                    frac = inside / max(int(instances.area[i]), 1)
                    hi = min(cfg.min_fraction + cfg.fraction_band / 2, 1.0)
                    lo = cfg.min_fraction - cfg.fraction_band / 2
                    # (no pixel inside is outside, whatever the band: a min_fraction under half of it put
                    # "clearly outside" below 0, and a part that walked out stayed in till its track ended)
                    zone_ev[i].append(1 if frac >= hi else -1 if frac < lo or not inside else 0)
        for line in self.lines.values():
            for i in range(n):
                x, y = anchors[line.anchor][i]
                line_pts[i].append((x, y))
        return zone_ev, line_pts

    def _raster(self, h: int, w: int) -> list[NDArray[np.bool_]]:
        rasters = self._rasters.get((h, w))
        if rasters is None:
            rasters = []
            for _, cfg in self._zone_list:
                # the pixels whose centres lie inside (to a tenth of a pixel, as pycocotools fills a polygon),
                # in the anchors' convention (x / width): scaled by
                # (w - 1, h - 1) and filled edges included, a pixel half out counted inside by its mask
                # fraction while its anchor was outside
                img = np.zeros((h, w), bool)
                crop, (x0, y0) = fill_polygon(np.asarray(cfg.polygon) * [w, h], (h, w))
                img[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
                rasters.append(img)
            self._rasters = {(h, w): rasters}  # one resolution at a time
        return rasters


class ZoneStage:
    """Zones and lines as a pipeline stream stage after the tracker (:class:`edgeseg.pipeline.StreamStage`).

    Reads the tracker's ``end`` events on the result to purge state and appends its own events.
    """

    name = "zones"

    def __init__(
        self,
        zones: Mapping[str, ZoneConfig],
        lines: Mapping[str, LineConfig],
        lost_s: float = 2.0,
        sequence: EventSequence | None = None,
    ) -> None:
        self.counter = ZoneCounter(zones, lines, lost_s, sequence)
        self._last: tuple[int, float] = (0, 0.0)
        self._pending: list[Event] = []  # exits made by reset(), sent with the next result

    def process(self, result: Result) -> Result:
        frame, inst = result.frame, result.instances
        self._last = (frame.t_capture_ns, frame.wall_time)
        ends = [e for e in result.events if e.kind == "end"]
        ended = [e.track_id for e in ends]
        # a source restart's tracks end at the old stream's last frame, not this one: their exits too
        ended_at = (ends[0].t_capture_ns, ends[0].wall_time) if ends else None
        ids = inst.track_id
        if ids is None:
            track_ids: list[int] = []
            zone_ev: list[list[int]] = []
            line_pts: list[list[tuple[float, float]]] = []
        else:
            track_ids = ids.tolist()
            zone_ev, line_pts = self.counter.evidence(inst)
        events = self.counter.observe(
            frame.t_capture_ns,
            frame.wall_time,
            track_ids,
            inst.class_id.tolist(),
            zone_ev,
            line_pts,
            ended,
            ended_at,
        )
        if self._pending:
            events, self._pending = [*self._pending, *events], []
        if not events:
            return result
        return replace(result, events=(*result.events, *events))

    def reset(self) -> None:
        self._pending.extend(self.counter.close(*self._last))

    def close(self) -> list[Event]:
        events, self._pending = [*self._pending, *self.counter.close(*self._last)], []
        return events
