"""Zones, lines and events (issue 19, part B): the peers' failures as test cases (see
``../shared/notes/tracking-anchors.md``)."""

from __future__ import annotations

import itertools
import json
import math
import tracemalloc
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from test_pipeline import CollectSink, ListSource, SquareStages

from edgeseg.config import config_json_schema, load_config
from edgeseg.errors import ConfigError
from edgeseg.events import Counts, Event, EventKind, EventSequence
from edgeseg.frame import Frame, Result
from edgeseg.instances import Instances
from edgeseg.mqtt.topics import load_schema
from edgeseg.pipeline import Pipeline
from edgeseg.sinks.jsonl import JsonlSink
from edgeseg.sinks.record import result_record
from edgeseg.tracker import TrackerConfig, TrackerStage
from edgeseg.validate import FieldError
from edgeseg.zones import LineConfig, LineGeometry, ZoneConfig, ZoneCounter, ZoneStage, anchor_points

NS = 1_000_000_000
W, H = 640, 480
ROOT = Path(__file__).resolve().parents[1]


# --- configuration ------------------------------------------------------------------------------------

ZONE = "zones={reject: {polygon: [[0.6, 0], [1, 0], [1, 1], [0.6, 1]]}}"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "zones={reject: {polygon: [[0, 0], [0.5, 0]]}}",
            "zones.reject.polygon: must have at least 3 points",
        ),
        ("zones={reject: {polygon: [[0, 0], [0.5, 0], [1.5, 1]]}}", "zones.reject.polygon: each point must"),
        ("zones={reject: {polygon: [[0, 0], [0.5, 0.5], [1, 1]]}}", "zones.reject.polygon: must enclose"),
        ("zones={reject: {polygon: [0, 0, 1]}}", "zones.reject.polygon: must be a list of [x, y] points"),
        # corners out of order (a bow-tie): the symmetric one was said to "lie on one line", the other taken
        (
            "zones={reject: {polygon: [[0.2, 0.2], [0.8, 0.8], [0.8, 0.2], [0.2, 0.8]]}}",
            "zones.reject.polygon: must not cross or touch itself",
        ),
        (
            "zones={reject: {polygon: [[0.1, 0.1], [0.9, 0.8], [0.9, 0.1], [0.1, 0.9]]}}",
            "zones.reject.polygon: must not cross or touch itself",
        ),
        (
            "zones={reject: {polygon: [[0, 0], [1, 0], [1, 1]], enter_s: -1}}",
            "zones.reject.enter_s: must be >= 0",
        ),
        ("zones={reject: {polygon: [[0, 0], [1, 0], [1, 1]], anchr: 1}}", "zones.reject.anchr: unknown key"),
        ("zones={'a/b': {polygon: [[0, 0], [1, 0], [1, 1]]}}", "zones.a/b: name must match"),
        ("lines={belt: {points: [[0.5, 0]]}}", "lines.belt.points: must be exactly 2 points"),
        ("lines={belt: {points: [[0.5, 0], [0.5, 0]]}}", "lines.belt.points: must be 2 different points"),
        (
            "lines={belt: {points: [[0.5, 0], [0.5, 1]], dead_band: 2}}",
            "lines.belt.dead_band: must be in [0, 0.5]",
        ),
    ],
)
def test_bad_zones_and_lines_are_one_line_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text


STRIP = "polygon: [[0.2, 0.5], [0.8, 0.5], [0.8, 0.515], [0.2, 0.515]]"  # 0.015 high: under 2 * margin


def test_an_anchor_zone_narrower_than_twice_its_margin_is_refused_naming_it() -> None:
    """No anchor can be more than margin (0.01) inside a strip 0.015 high: it loaded, no track ever entered
    it, and nothing said why."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"zones={{door: {{{STRIP}}}}}"])
    assert str(err.value).startswith(
        "zones.door.margin: must be less than half the zone's width: no point of it lies more than margin "
        "inside its edge, so no track would ever enter (widen the zone, lower margin, or count by "
        "min_fraction) (got 0.01)"
    )
    for fix in ("margin: 0.005", "min_fraction: 0.5"):
        zone = load_config(None, [f"zones={{door: {{{STRIP}, {fix}}}}}"]).zones["door"]
        assert zone.polygon[2] == (0.8, 0.515)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.integers(0, 35), min_size=3, max_size=12, unique=True),
    swap=st.integers(0, 11),
)
def test_a_zone_with_its_corners_in_order_round_it_is_taken_and_out_of_order_refused(
    steps: list[int], swap: int
) -> None:
    """Corners on a circle (10 degrees apart at least): in order round it, a simple polygon; with two
    neighbours swapped (4 corners or more), one whose edges cross."""
    corners = [
        (0.5 + 0.4 * math.cos(math.radians(10 * k)), 0.5 + 0.4 * math.sin(math.radians(10 * k)))
        for k in sorted(steps)
    ]
    ZoneConfig(polygon=tuple(corners), margin=0.0)  # (three corners 10 degrees apart: a sliver)
    if len(corners) >= 4:
        k = swap % len(corners)
        corners[k], corners[(k + 1) % len(corners)] = corners[(k + 1) % len(corners)], corners[k]
        with pytest.raises(FieldError, match="must not cross or touch itself"):
            ZoneConfig(polygon=tuple(corners), margin=0.0)


@settings(max_examples=200, deadline=None)
@given(
    lobes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=4, max_size=4),
    crossing=st.booleans(),
    start=st.integers(0, 5),
)
def test_a_zone_through_one_corner_twice_is_refused_as_touching_itself_whatever_its_lobes(
    lobes: list[tuple[int, int]], crossing: bool, start: int
) -> None:
    """Two triangles joined at a corner listed twice, as a figure of eight (its path crosses there) or as a
    pinch (it touches): refused in one message, whatever the lobes' sizes (a symmetric figure of eight was
    said to "lie on one line", its area summing to 0, and any other one taken)."""
    (x1, y1), (x2, y2), (x3, y3), (x4, y4) = lobes  # tenths from the shared corner: up-left, down-right
    turn_a, turn_b = x1 * y2 - y1 * x2, x3 * y4 - y3 * x4  # (each lobe's turn, in integers)
    assume(turn_a != 0 and turn_b != 0)
    # lobes turning the same way make a pinch, opposite ways a figure of eight
    if ((turn_a > 0) == (turn_b > 0)) == crossing:
        (x3, y3), (x4, y4) = (x4, y4), (x3, y3)
    c = (0.5, 0.5)
    a1, a2 = (0.5 - x1 / 10, 0.5 - y1 / 10), (0.5 - x2 / 10, 0.5 - y2 / 10)
    b1, b2 = (0.5 + x3 / 10, 0.5 + y3 / 10), (0.5 + x4 / 10, 0.5 + y4 / 10)
    corners = [c, a1, a2, c, b1, b2]
    corners = corners[start:] + corners[:start]
    with pytest.raises(FieldError, match="must not cross or touch itself"):
        ZoneConfig(polygon=tuple(corners))
    # a corner listed twice in a row (a double click; the first again at the end, as GeoJSON closes a ring)
    # is one corner
    ZoneConfig(polygon=(c, a1, a1, a2, c), margin=0.0)  # (a lobe may be a sliver)


def test_a_zone_of_more_corners_than_a_drawn_one_needs_is_refused_in_one_line() -> None:
    # (each pair of edges was compared in Python: 3000 corners took a second to load, 30000 ~100 s)
    def circle(n: int) -> list[list[float]]:
        return [
            [0.5 + 0.4 * math.cos(2 * math.pi * k / n), 0.5 + 0.4 * math.sin(2 * math.pi * k / n)]
            for k in range(n)
        ]

    with pytest.raises(ConfigError) as err:
        load_config(None, [f"zones={{round: {{polygon: {json.dumps(circle(3000))}}}}}"])
    assert str(err.value).startswith("zones.round.polygon: must have at most 1000 points, got 3000"), (
        err.value
    )
    assert "\n" not in str(err.value)
    assert (
        len(
            load_config(None, [f"zones={{round: {{polygon: {json.dumps(circle(1000))}}}}}"])
            .zones["round"]
            .polygon
        )
        == 1000
    )


def test_zones_need_the_tracker_and_load_from_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^zones: count tracks: needs tracker.enabled: true"):
        load_config(None, [ZONE, "tracker.enabled=false"])
    c = load_config(None, [ZONE, "zones.reject.min_fraction=0.5"])
    assert c.zones["reject"].min_fraction == 0.5
    assert c.zones["reject"].polygon[0] == (0.6, 0.0)
    assert set(c.lines) == {"belt"}  # the demo's counting line


def test_the_committed_schema_knows_zones_and_lines() -> None:
    committed = json.loads((ROOT / "pipelines" / "schema.json").read_text())
    assert committed == config_json_schema()
    zone = committed["properties"]["zones"]["additionalProperties"]
    assert zone["required"] == ["polygon"]


# --- lines: randomized trajectories -------------------------------------------------------------------

LINES = {
    # a line across the middle, a random one, and lines 10 px from the bottom and the left edge
    "middle": ((0.2, 0.5), (0.8, 0.5)),
    "slanted": ((0.15, 0.8), (0.85, 0.2)),
    "bottom_edge": ((0.0, (H - 10) / H), (1.0, (H - 10) / H)),
    "left_edge": ((10 / W, 1.0), (10 / W, 0.0)),
}


def trajectory(
    rng: np.random.Generator, geo: LineGeometry, edge: bool, fps: float
) -> tuple[list[tuple[float, float] | None], dict[str, int]]:
    """One object's anchor per frame (``None``: not detected) and its true crossings ``{"in": n, "out": m}``.

    Built in the line's frame (``u`` along the segment, 0..1; ``v`` across it): dwells beyond the dead band on
    a side, passages from side to side at a fixed ``u`` inside the segment (a crossing) or beyond its ends
    (never touches it), optionally jittering on the line first, sometimes as one jump between two frames.
    """
    band = geo.band
    noise = 0.3 * band  # the jitter: always inside the dead band
    # a line 10 px from the frame edge: the object can only go as far as the edge beyond it
    far_edge = (10 - 1) / H if edge else 0.08
    clear = (band + noise + 0.2 * band, max(far_edge, band + noise + 0.3 * band))

    def point(u: float, v: float) -> tuple[float, float]:
        return (
            geo.a[0] + u * geo.d[0] + v * geo.n[0],
            geo.a[1] + u * geo.d[1] + v * geo.n[1],
        )

    side = int(rng.choice([-1, 1]))
    u = float(rng.uniform(0.1, 0.9))
    truth = {"in": 0, "out": 0}
    waypoints: list[tuple[float, float, int]] = []  # (u, v, frames to get there)

    def dwell() -> None:
        depth = float(rng.uniform(*clear)) if side > 0 or not edge else float(rng.uniform(clear[0], 0.08))
        waypoints.append((u, side * depth, int(rng.integers(1, 4))))
        waypoints.append((u, side * depth, int(fps * 0.6)))  # stays a while: seen there despite flicker

    dwell()
    for _ in range(int(rng.integers(1, 6))):
        kind = rng.random()
        if kind < 0.3:  # move along its side to somewhere else (inside or beyond the segment's ends)
            beyond = not edge and rng.random() < 0.3  # (an edge line spans the frame: nothing beyond)
            u = float(rng.choice([-0.15, 1.15])) if beyond else float(rng.uniform(0.1, 0.9))
            dwell()
            continue
        if kind < 0.5:  # jitter on the line and go back: never a crossing
            for _ in range(int(rng.integers(1, 8))):
                waypoints.append((u, float(rng.uniform(-1, 1)) * (band - noise) * 0.9, 1))
            dwell()
            continue
        # cross (or pass round the end when u is beyond it), maybe hesitating on the line first
        if rng.random() < 0.5:
            for _ in range(int(rng.integers(1, 6))):
                waypoints.append((u, float(rng.uniform(-1, 1)) * (band - noise) * 0.9, 1))
        side = -side
        if 0.0 < u < 1.0:
            truth["in" if side > 0 else "out"] += 1
        jump = rng.random() < 0.4  # one step from one side to the other (5 fps)
        depth = float(rng.uniform(*clear)) if side > 0 or not edge else float(rng.uniform(clear[0], 0.08))
        waypoints.append((u, side * depth, 1 if jump else int(rng.integers(2, 8))))
        waypoints.append((u, side * depth, int(fps * 0.6)))
    # frames: straight moves between waypoints, jitter on every observation, flicker (missed frames)
    path: list[tuple[float, float] | None] = []
    pu, pv = waypoints[0][0], waypoints[0][1]
    for wu, wv, n in waypoints:
        for k in range(1, n + 1):
            f = k / n
            cu, cv = pu + f * (wu - pu), pv + f * (wv - pv)
            must = k == n and n > 2  # the middle of a dwell is always seen
            if not must and rng.random() < 0.2:
                path.append(None)
                continue
            x, y = point(cu + rng.uniform(-noise, noise), cv + rng.uniform(-noise, noise))
            path.append((min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)))  # boxes are clipped to the frame
        pu, pv = wu, wv
    return path, truth


def test_1000_randomized_trajectories_count_every_true_crossing_and_nothing_else() -> None:
    rng = np.random.default_rng(19)
    errors, total = 0, Counter[str]()
    n_traj = 0
    for scene in range(50):
        name = list(LINES)[scene % len(LINES)]
        line = LineConfig(points=LINES[name], dead_band=0.01)
        geo = LineGeometry(line)
        counter = ZoneCounter({}, {"l": line}, lost_s=2.0)
        fps = float(rng.choice([5.0, 10.0, 30.0]))
        tracks = []
        for j in range(20):
            path, truth = trajectory(rng, geo, name.endswith("edge"), fps)
            start = int(rng.integers(0, 40))
            unconfirmed = int(rng.integers(0, 4))  # the first detections have no id yet
            tracks.append((scene * 100 + j + 1, j % 3, start, path, truth, unconfirmed))
            n_traj += 1
        length = max(t[2] + len(t[3]) for t in tracks) + 1
        got: dict[int, Counter[str]] = {t[0]: Counter() for t in tracks}
        for f in range(length):
            ids, cls, pts = [], [], []
            for tid, cid, start, path, _, unconfirmed in tracks:
                k = f - start
                if 0 <= k < len(path) and path[k] is not None:
                    ids.append(tid if k >= unconfirmed else -1)
                    cls.append(cid)
                    pts.append([path[k]])
            # unconfirmed detections (id -1) crossing the line back and forth every frame never count
            for _ in range(3):
                ids.append(-1)
                cls.append(0)
                pts.append([(float(rng.random()), float(rng.random()))])
            events = counter.observe(round(f * NS / fps), f / fps, ids, cls, [[] for _ in ids], pts)
            for e in events:
                assert e.kind == "line_cross"
                assert e.track_id > 0
                got[e.track_id][e.direction or ""] += 1
        for tid, _, _, _, truth, unconfirmed in tracks:
            total.update(truth)
            if unconfirmed:  # the id came after the first detections: none of them was a crossing
                pass
            if dict(got[tid]) != {k: v for k, v in truth.items() if v}:
                errors += 1
                print(name, fps, tid, dict(got[tid]), truth)
        # per-class counts agree with the events
        assert sum(sum(c.values()) for c in counter.counts.lines.values()) == sum(
            sum(c.values()) for c in got.values()
        )
    assert n_traj == 1000
    assert total["in"] + total["out"] > 500  # the trajectories do cross
    assert errors == 0


def test_flicker_on_the_line_never_counts_the_wrong_way_and_a_5_fps_jump_counts() -> None:
    line = LineConfig(points=((0.0, 0.5), (1.0, 0.5)), dead_band=0.02)  # drawn left to right: in = down
    counter = ZoneCounter({}, {"l": line})
    ys = [0.3, 0.49, 0.51, 0.495, 0.505, 0.3, 0.7]  # jitter on the line, back up, then one jump down
    events = [
        e for k, y in enumerate(ys) for e in counter.observe(k * NS // 5, 0.0, [1], [0], [[]], [[(0.5, y)]])
    ]
    assert [(e.kind, e.direction) for e in events] == [("line_cross", "in")]
    assert counter.counts.lines[("l", 0)] == {"in": 1, "out": 0}


def test_a_path_round_the_end_of_the_segment_never_counts() -> None:
    line = LineConfig(points=((0.4, 0.5), (0.6, 0.5)))
    counter = ZoneCounter({}, {"l": line})
    path = [(0.2, 0.3), (0.2, 0.7), (0.5, 0.7), (0.5, 0.3)]  # beside the segment, then through it
    events = [
        e for k, p in enumerate(path) for e in counter.observe(k * NS // 10, 0.0, [1], [0], [[]], [[p]])
    ]
    assert [e.direction for e in events] == ["out"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-0.3, 0.3), min_size=2, max_size=40),
    st.floats(0.005, 0.05),
)
def test_crossings_alternate_and_match_the_sides_visited(vs: list[float], band: float) -> None:
    """Whatever the path across a long line: counted crossings alternate in direction and equal the changes
    between the sides visited beyond the dead band."""
    line = LineConfig(points=((0.0, 0.5), (1.0, 0.5)), dead_band=band)
    counter = ZoneCounter({}, {"l": line})
    dirs = []
    for k, v in enumerate(vs):
        for e in counter.observe(k * NS // 10, 0.0, [7], [0], [[]], [[(0.5, 0.5 + v)]]):
            dirs.append(e.direction)
    geo = LineGeometry(line)
    sides = [s for s in (geo.side((0.5, 0.5 + v)) for v in vs) if s]
    changes = sum(1 for a, b in itertools.pairwise(sides) if a != b)
    assert len(dirs) == changes
    assert all(a != b for a, b in itertools.pairwise(dirs))


# --- zones -----------------------------------------------------------------------------------------------


def square(cx: float, cy: float, r: int = 10, track: int = 1, cls: int = 0) -> Instances:
    x0, y0 = round(cx - r), round(cy - r)
    crop = np.ones((2 * r, 2 * r), bool)
    return Instances.from_crops(
        (H, W), [cls], [0.9], [(x0, y0)], [crop], track_id=np.asarray([track], np.int64)
    )


def result_of(inst: Instances, k: int, fps: float, events: tuple[Event, ...] = ()) -> Result:
    t = round(k * NS / fps)
    frame = Frame(k, np.zeros((1, 1, 3), np.uint8), t, 1000.0 + t / NS)
    return Result(frame, inst, events=events)


@pytest.mark.parametrize("mode", ["anchor", "fraction"])
@pytest.mark.parametrize("fps", [5.0, 30.0])
def test_jitter_and_one_frame_spikes_at_a_zone_edge_make_no_events(mode: str, fps: float) -> None:
    """An object parked on the zone's edge with +-4 px jitter and one-frame spikes (a box flicker deep
    inside, then deep outside) for a minute: no enter or exit; then it really enters and leaves once."""
    zone = ZoneConfig(
        polygon=((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)),
        min_fraction=0.5 if mode == "fraction" else None,
        margin=0.02,  # 12.8 px at 640: wider than the jitter
        fraction_band=0.5,  # a 20 px square: 4 px of jitter moves its fraction by 0.2
        enter_s=0.5,
        exit_s=0.5,
    )
    stage = ZoneStage({"z": zone}, {})
    rng = np.random.default_rng(3)
    edge_x = 0.5 * W
    cy = H / 2
    events: list[Event] = []
    n = int(60 * fps)
    for k in range(n):
        x = edge_x + rng.uniform(-4, 4)
        if k % 97 == 50:
            x = edge_x + 100  # one frame far inside
        if k % 97 == 80:
            x = edge_x - 100  # one frame far outside
        events += stage.process(result_of(square(x, cy), k, fps)).events
    assert events == []
    for k in range(n, n + int(2 * fps)):  # in for 2 s
        events += stage.process(result_of(square(edge_x + 100, cy), k, fps)).events
    for k in range(n + int(2 * fps), n + int(4 * fps)):  # out for 2 s
        events += stage.process(result_of(square(edge_x - 100, cy), k, fps)).events
    assert [e.kind for e in events] == ["zone_enter", "zone_exit"]
    assert events[1].duration_s == pytest.approx(2.0, abs=0.5 + 2 / fps)
    assert stage.counter.counts.zones[("z", 0)] == {"inside": 0, "entered": 1, "exited": 1}


def test_a_one_frame_entry_is_not_an_entry_but_a_stay_of_enter_s_is_and_loiter_fires_once() -> None:
    zone = ZoneConfig(polygon=((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)), enter_s=0.3, loiter_s=2.0)
    counter = ZoneCounter({"z": zone}, {})
    kinds = []
    inside = [False, True, False, False] + [True] * 40  # 10 fps: one frame, then 4 s inside
    for k, ins in enumerate(inside):
        for e in counter.observe(k * NS // 10, 0.0, [4], [2], [[1 if ins else -1]], [[]]):
            kinds.append((k, e.kind))
    assert kinds == [(7, "zone_enter"), (27, "loiter")]
    # the track ends inside: its exit comes with its end
    events = counter.observe(50 * NS // 10, 0.0, [], [], [], [], ended=[4])
    assert [(e.kind, e.zone, e.class_id) for e in events] == [("zone_exit", "z", 2)]
    assert counter.active == 0
    assert counter.counts.zones[("z", 2)]["inside"] == 0


def test_unconfirmed_tracks_never_enter_a_zone() -> None:
    zone = ZoneConfig(polygon=((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)), enter_s=0.0)
    counter = ZoneCounter({"z": zone}, {})
    for k in range(20):
        assert counter.observe(k * NS // 10, 0.0, [-1, -1], [0, 1], [[1], [1]], [[], []]) == []
    assert counter.active == 0


# --- the whole stream: tracker + zones, events, bound, shutdown ----------------------------------------


def conveyor(k: int, fps: float, n_objects: int = 10) -> Instances:
    """``n_objects`` squares riding left to right at 80 px/s in lanes, wrapping round: a track a pass."""
    crops, origins, cls = [], [], []
    t = k / fps
    for j in range(n_objects):
        x = (j * 97 + 80 * t) % (W + 200) - 100
        y = 30 + j * 44
        if 12 <= x <= W - 12:
            crops.append(np.ones((20, 20), bool))
            origins.append((round(x) - 10, y - 10))
            cls.append(j % 3)
    if not crops:
        return Instances.empty((H, W))
    return Instances.from_crops((H, W), cls, [0.9] * len(cls), origins, crops)


def test_10_objects_for_10_minutes_stay_under_the_event_bound_and_every_new_has_an_end() -> None:
    fps, minutes = 5.0, 10
    seq = EventSequence()
    tracker = TrackerStage(TrackerConfig(enabled=True), seq)
    zone = ZoneConfig(polygon=((0.6, 0.0), (0.8, 0.0), (0.8, 1.0), (0.6, 1.0)), loiter_s=1.0)
    line = LineConfig(points=((0.5, 1.0), (0.5, 0.0)), anchor="center")  # parts ride right: "in"
    zones = ZoneStage({"z": zone}, {"l": line}, 2.0, seq)
    events: list[Event] = []
    for k in range(int(minutes * 60 * fps)):
        r = zones.process(tracker.process(result_of(conveyor(k, fps), k, fps)))
        events += r.events
    final = [*tracker.close(), *zones.close()]
    events += final
    kinds = Counter(e.kind for e in events)
    passes = kinds["new"]
    assert passes >= 10 * minutes * 60 * 80 / (W + 200) - 10  # each pass across the frame is one track
    # the documented bound (edgeseg.zones): per track new + end, per zone at most 1 + life / (enter_s +
    # exit_s) enter/exit pairs plus a loiter each, per line one crossing per passage from side to side
    lives = [e.duration_s or 0.0 for e in events if e.kind == "end"]
    stays = sum(1 + life / (zone.enter_s + zone.exit_s) for life in lives)
    crossings = Counter(e.track_id for e in events if e.kind == "line_cross")
    assert len(events) <= 2 * passes + 3 * stays + sum(crossings.values())
    # and what this scene makes exactly: every pass crosses the line once, inward; visits are whole
    assert max(crossings.values()) == 1
    assert len(crossings) >= passes - 20  # parts already past the line at the start or wrapping round
    assert len(events) <= 7 * passes
    news = {e.track_id for e in events if e.kind == "new"}
    ends = [e.track_id for e in events if e.kind == "end"]
    assert sorted(ends) == sorted(news)  # every new has exactly one end, the last ones from close()
    assert any(e.kind == "end" for e in final)
    enters = Counter(e.track_id for e in events if e.kind == "zone_enter")
    exits = Counter(e.track_id for e in events if e.kind == "zone_exit")
    assert enters == exits
    assert [e.event_seq for e in events] == list(range(len(events)))  # one sequence, no gaps
    assert zones.counter.active == 0
    assert tracker.tracker.active == 0


def test_state_stays_flat_over_30000_tracks() -> None:
    zone = ZoneConfig(polygon=((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)), enter_s=0.0, exit_s=0.0)
    line = LineConfig(points=((0.25, 0.0), (0.25, 1.0)))
    counter = ZoneCounter({"z": zone}, {"l": line}, lost_s=0.5)
    tid = 0

    def batch(n: int) -> None:
        nonlocal tid
        for _ in range(n // 10):
            ids = list(range(tid + 1, tid + 11))
            tid += 10
            for step, x in enumerate((0.2, 0.3)):
                counter.observe(
                    tid * NS // 10 + step, 0.0, ids, [i % 3 for i in ids], [[1]] * 10, [[(x, 0.5)]] * 10
                )
            if tid % 20 == 0:  # half the tracks are ended by the tracker, half time out (lost_s)
                counter.observe(tid * NS // 10 + 2, 0.0, [], [], [], [], ended=ids)

    batch(10_000)
    # 20000 tracks traced (tracemalloc makes each observe 9 times slower): 10 bytes held per ended track
    # fail it, as 1 MB over 90000 did; a counter that holds none grows by 1.5 KB
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    batch(20_000)
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert tid == 30_000
    assert counter.active <= 20
    assert grown < 200_000, grown
    assert counter.counts.zones[("z", 0)]["entered"] > 9_000


def test_final_events_reach_the_jsonl_file_at_shutdown(tmp_path: Path) -> None:
    seq = EventSequence()
    line = LineConfig(points=((0.0, 0.5), (1.0, 0.5)))
    jsonl = JsonlSink(tmp_path / "out.jsonl")
    sink = CollectSink()
    pipe = Pipeline(
        ListSource(10, period_s=0.01),
        SquareStages(),
        {"j": jsonl, "c": sink},
        stream_stages=[TrackerStage(TrackerConfig(enabled=True), seq), ZoneStage({}, {"l": line}, 2.0, seq)],
    )
    pipe.run()
    records = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(records) == 11
    assert records[-1]["final"] is True
    assert records[-1]["instances"] == []
    kinds = [e["kind"] for r in records for e in r["events"]]
    assert kinds.count("new") == 1
    assert kinds.count("end") == 1
    assert [e["kind"] for e in records[-1]["events"]] == ["end"]
    assert all(not r.final for r in sink.results)
    assert len(sink.results) == 10
    schema = load_schema("results")
    for r in records:
        jsonschema.validate(
            {"replay": False, "schema": "edgeseg.results/1", "boot_id": "0" * 32, **r}, schema
        )


def test_event_records_validate_against_both_schemas() -> None:
    events = (
        Event("new", 0, 1, 0, NS, 1.5),
        Event("zone_enter", 1, 1, 0, NS, 1.5, zone="z"),
        Event("loiter", 2, 1, 0, NS, 1.5, zone="z", duration_s=3.0),
        Event("line_cross", 3, 1, 0, NS, 1.5, line="l", direction="out"),
        Event("zone_exit", 4, 1, 0, NS, 1.5, zone="z", duration_s=3.5),
        Event("end", 5, 1, 0, NS, 1.5, duration_s=4.0),
    )
    record = result_record(result_of(square(100, 100), 3, 10.0, events), 0, class_names=("nut",))
    assert [e["kind"] for e in record["events"]] == [e.kind for e in events]
    assert record["events"][0]["class_name"] == "nut"
    jsonschema.validate(
        {"replay": False, "schema": "edgeseg.results/1", "boot_id": "0" * 32, **record},
        load_schema("results"),
    )
    schema = load_schema("events")
    for e in record["events"]:
        jsonschema.validate({"replay": False, "schema": "edgeseg.events/1", "boot_id": "0" * 32, **e}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {
                "replay": False,
                "schema": "edgeseg.events/1",
                "boot_id": "0" * 32,
                "kind": "line_cross",
                "event_seq": 0,
                "track_id": 1,
                "class_id": 0,
                "wall_time": 1.0,
                "t_capture_s": 1.0,
            },
            schema,
        )
    # the copy of the event inside results.json is the one in events.json
    assert load_schema("results")["$defs"]["event"] == schema["$defs"]["event"]


def test_mask_fraction_membership_uses_the_mask_not_the_box() -> None:
    """An L-shaped part whose box reaches into the zone but whose mask barely does is not inside."""
    zone = ZoneConfig(polygon=((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)), min_fraction=0.5, enter_s=0.0)
    counter = ZoneCounter({"z": zone}, {})
    crop = np.zeros((100, 100), bool)
    crop[:, :10] = True
    crop[90:, :] = True  # the foot reaches 80 px into the zone
    inst = Instances.from_crops((H, W), [0], [0.9], [(W // 2 - 20, 100)], [crop], track_id=np.asarray([1]))
    ev, _ = counter.evidence(inst)
    assert ev == [[-1]]
    assert math.isclose(counter.evidence(square(W * 0.75, 200))[0][0][0], 1)
    assert cv2.__version__  # cv2 rasterizes the zone


def test_a_mask_zone_with_a_small_min_fraction_sees_a_mask_wholly_outside_it_as_outside() -> None:
    """min_fraction 0.05 ("any overlap") with the default fraction_band 0.1 put "clearly outside" below a
    fraction of -0.05: a part that walked out of the zone stayed inside it until its track ended."""
    zone = ZoneConfig(
        polygon=((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)), min_fraction=0.05, enter_s=0.0
    )
    counter = ZoneCounter({"z": zone}, {})
    inside, outside = counter.evidence(square(W * 0.75, 200)), counter.evidence(square(W * 0.25, 200))
    assert (inside[0], outside[0]) == ([[1]], [[-1]])


def test_the_annotator_draws_zones_and_lines_at_their_normalized_places() -> None:
    from edgeseg.annotate import REGION_COLOR, annotate

    img = np.zeros((H, W, 3), np.uint8)
    out = annotate(
        img,
        Instances.empty((H, W)),
        zones={"reject": ((0.6, 0.2), (0.9, 0.2), (0.9, 0.8), (0.6, 0.8))},
        lines={"belt": ((0.5, 0.98), (0.5, 0.02))},
    )
    assert (img == 0).all()  # the input is never drawn on
    amber = np.all(np.abs(out.astype(int) - REGION_COLOR) < 120, axis=2) & (out.max(axis=2) > 60)
    assert (
        amber[H // 3 : 2 * H // 3, round(0.5 * (W - 1)) - 1 : round(0.5 * (W - 1)) + 2].mean() > 0.5
    )  # the line
    assert amber[H // 2, round(0.9 * (W - 1)) - 1 : round(0.9 * (W - 1)) + 2].any()  # the zone's right edge
    assert not amber[H // 2, W // 4 : W // 3].any()


@pytest.mark.parametrize("x", [0.3, 0.5, 0.61, 0.7503, 0.87, 0.9992])
def test_a_zones_edge_and_a_line_are_drawn_where_membership_and_crossing_change(x: float) -> None:
    # membership scales points by (w, h) on pixel corners (an anchor at x * W is on the edge); the drawing
    # scaled by (w - 1, h - 1) and rounded to whole pixels: an edge near x = 1 was drawn a pixel inside
    from edgeseg.annotate import annotate

    def centre(row: NDArray[np.uint8], at: float) -> float:
        """Where the drawing's ink in ``row`` around ``at`` is centred, in pixel-corner coordinates."""
        lo, hi = int(at) - 4, min(int(at) + 5, len(row))
        ink = row[lo:hi, 1].astype(np.float64)  # the amber's green
        return float((ink * np.arange(lo, hi)).sum() / ink.sum()) + 0.5

    empty = Instances.empty((H, W))
    out = annotate(
        np.zeros((H, W, 3), np.uint8), empty, zones={"z": ((0.1, 0.2), (x, 0.2), (x, 0.8), (0.1, 0.8))}
    )
    assert abs(centre(out[H // 2], x * W) - x * W) < 0.25
    y = 0.95 * x  # (a line's thicker ink, cut by the frame's bottom, would be centred higher)
    out = annotate(np.zeros((H, W, 3), np.uint8), empty, lines={"l": ((0.2, y), (0.8, y))})
    assert abs(centre(out[:, W // 3], y * H) - y * H) < 0.25
    # an edge on the frame's border is drawn on its outer pixels, not half a pixel outside (unseen)
    out = annotate(np.zeros((H, W, 3), np.uint8), empty, zones={"z": ((0, 0), (x, 0), (x, 1), (0, 1))})
    assert (out[0, W // 20 : int(x * W) - 2, 1] > 150).all()
    assert (out[H // 4 : H // 2, 0, 1] > 150).all()
    assert (out[H - 1, W // 20 : int(x * W) - 2, 1] > 150).all()


def test_a_diagonal_lines_name_is_drawn_at_its_top_end_not_at_a_far_corner_of_its_bounding_box() -> None:
    from edgeseg.annotate import REGION_COLOR, annotate

    img = np.full((400, 400, 3), 100, np.uint8)
    # from the bottom-left to the top-right: its name was drawn at (40, 40), the top-left corner of the
    # segment's bounding box, nowhere near the line
    out = annotate(img, Instances.empty((400, 400)), lines={"belt": ((0.1, 0.9), (0.9, 0.1))})
    fill = (out == REGION_COLOR).all(axis=2)  # the label's box; the line's pixels are antialiased or thick
    assert not fill[:80, :120].any()
    assert fill[:40, 280:].sum() > 100  # above the top end, at (359, 40)


def test_a_zones_name_is_drawn_at_its_top_corner_not_at_a_far_corner_of_its_bounding_box() -> None:
    from edgeseg.annotate import REGION_COLOR, annotate

    img = np.full((400, 400, 3), 100, np.uint8)
    # a triangle in the bottom-right half: its name was drawn at (40, 40), outside it, far from any edge
    triangle = ((0.1, 0.9), (0.9, 0.9), (0.9, 0.1))
    out = annotate(img, Instances.empty((400, 400)), zones={"reject": triangle})
    fill = (out == REGION_COLOR).all(axis=2)  # the label's box; the edges' pixels are antialiased or thick
    assert not fill[:80, :120].any()
    assert fill[:40, 280:].sum() > 100  # above its top corner, at (359, 40)


def test_a_source_restart_ends_every_track_at_the_old_streams_time_and_nothing_carries_over() -> None:
    seq = EventSequence()
    tracker = TrackerStage(TrackerConfig(enabled=True), seq)
    line = LineConfig(points=((0.5, 1.0), (0.5, 0.0)), anchor="center")
    zones = ZoneStage({}, {"l": line}, 2.0, seq)
    events: list[Event] = []
    for k in range(40):  # 4 s at 10 fps, then the source starts over (capture time and index go back)
        events += zones.process(tracker.process(result_of(conveyor(k, 10.0, 3), k, 10.0))).events
    before = {e.track_id for e in events if e.kind == "new"}
    for k in range(5):
        events += zones.process(tracker.process(result_of(conveyor(k, 10.0, 3), k, 10.0))).events
    ended = [e for e in events if e.kind == "end"]
    assert {e.track_id for e in ended} == before
    assert all(e.t_capture_ns == round(39 * NS / 10) and (e.duration_s or 0) >= 0 for e in ended)
    assert zones.counter.active == len({e.track_id for e in events if e.kind == "new"} - before)


def test_anchor_points_are_the_box_centre_at_its_bottom_its_middle_or_its_top() -> None:
    box = np.array([[64.0, 48.0, 192.0, 144.0]])
    got = {a: anchor_points(box, a, W, H).tolist() for a in ("bottom_center", "center", "top_center")}
    assert got == {"bottom_center": [[0.2, 0.3]], "center": [[0.2, 0.2]], "top_center": [[0.2, 0.1]]}


def test_a_step_touches_the_segment_only_where_it_meets_it() -> None:
    geo = LineGeometry(LineConfig(points=((0.4, 0.5), (0.6, 0.5))))
    assert geo.touches((0.5, 0.4), (0.5, 0.6))  # through it
    assert geo.touches((0.5, 0.4), (0.5, 0.5))  # onto it
    assert not geo.touches((0.5, 0.3), (0.5, 0.4))  # towards it, on one side: its extension meets it
    assert not geo.touches((0.5, 0.7), (0.5, 0.6))
    assert not geo.touches((0.2, 0.4), (0.2, 0.6))  # across the line beyond the segment's end
    assert geo.touches((0.45, 0.5), (0.7, 0.5))  # along the line, partly on the segment
    assert not geo.touches((0.7, 0.5), (0.8, 0.5))  # along the line, beyond its end
    assert geo.touches((0.3, 0.4), (0.7, 0.6))  # a slanted step through its middle
    diagonal = LineGeometry(LineConfig(points=((0.4, 0.4), (0.6, 0.6))))
    assert diagonal.touches((0.3, 0.7), (0.7, 0.3))
    assert not diagonal.touches((0.1, 0.4), (0.4, 0.1))  # across the line, short of the segment


def test_a_track_unseen_for_longer_than_lost_s_ends_and_not_before() -> None:
    zone = ZoneConfig(polygon=((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)), enter_s=0.0)
    counter = ZoneCounter({"z": zone}, {}, lost_s=2.0)
    counter.observe(0, 0.0, [1], [0], [[1]], [[]])
    assert counter.observe(2 * NS, 0.0, [2], [0], [[1]], [[]])[0].track_id == 2  # track 1: unseen for 2 s
    assert counter.active == 2
    events = counter.observe(2 * NS + NS // 100, 0.0, [2], [0], [[1]], [[]])
    # its stay: to exit_s (0.5) after it was last seen, not the 2 s it went unseen
    assert [(e.kind, e.track_id, e.duration_s) for e in events] == [("zone_exit", 1, pytest.approx(0.5))]
    assert counter.active == 1


def test_a_track_that_ends_inside_stays_until_exit_s_after_it_was_last_seen_or_first_seen_outside() -> None:
    zone = ZoneConfig(polygon=((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)), enter_s=0.0, exit_s=1.0)

    def stay(evidence: list[int], end_at_s: float) -> float:
        """Track 1 with ``evidence`` at 0, 0.1, 0.2 s ..., ended by the tracker at ``end_at_s``."""
        counter = ZoneCounter({"z": zone}, {}, lost_s=5.0)
        for i, e in enumerate(evidence):
            counter.observe(i * NS // 10, 0.0, [1], [0], [[e]], [[]])
        (exit_event,) = counter.observe(int(end_at_s * NS), 0.0, [], [], [], [], ended=[1])
        assert exit_event.kind == "zone_exit"
        assert exit_event.t_capture_ns == int(end_at_s * NS)
        assert exit_event.duration_s is not None
        return exit_event.duration_s

    assert stay([1, 1, 1, 1], end_at_s=4.0) == pytest.approx(0.3 + 1.0)  # last seen inside at 0.3 s
    assert stay([1, 1, -1, -1], end_at_s=4.0) == pytest.approx(0.2 + 1.0)  # first seen outside at 0.2 s
    assert stay([1, -1, 0, 1], end_at_s=4.0) == pytest.approx(0.3 + 1.0)  # back inside: no exit pending
    assert stay([1, 1, 1, 1], end_at_s=0.8) == pytest.approx(0.8)  # ended before exit_s had passed


def test_when_the_capture_time_goes_back_tracks_inside_exit_at_the_old_streams_last_frame() -> None:
    zone = ZoneConfig(polygon=((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)), enter_s=0.0)
    counter = ZoneCounter({"z": zone}, {})
    counter.observe(10 * NS, 100.0, [1], [0], [[1]], [[]])
    counter.observe(12 * NS, 102.0, [1], [0], [[1]], [[]])
    events = counter.observe(1 * NS, 200.0, [7], [0], [[1]], [[]])
    assert [(e.kind, e.track_id, e.t_capture_ns, e.wall_time) for e in events] == [
        ("zone_exit", 1, 12 * NS, 102.0),
        ("zone_enter", 7, 1 * NS, 200.0),
    ]
    assert events[0].duration_s == pytest.approx(2.0)


@pytest.mark.parametrize("restart", ["gap", "index"])
def test_a_track_inside_that_a_source_restart_ends_exits_with_its_end_at_the_old_streams_last_frame(
    restart: str,
) -> None:
    """A camera back after a minute (a gap over reset_gap_s) or a looping file (the frame index goes back):
    the tracker ends its tracks at the old stream's last frame; their zone_exit came at the new stream's
    first, so the zone had them inside through the outage."""
    sequence = EventSequence()
    tracker = TrackerStage(TrackerConfig(enabled=True), sequence)
    zone = ZoneConfig(polygon=((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)), enter_s=0.0)
    zones = ZoneStage({"z": zone}, {}, 2.0, sequence)
    events: list[Event] = []
    for k in range(10):
        events += zones.process(tracker.process(result_of(square(300, 200, track=-1), k, 10.0))).events
    after = result_of(Instances.empty((H, W)), 610 if restart == "gap" else 11, 10.0)
    if restart == "index":
        after = replace(after, frame=replace(after.frame, index=0))
    events += zones.process(tracker.process(after)).events
    end, exit_ = [e for e in events if e.kind in ("end", "zone_exit")]
    assert (end.kind, exit_.kind) == ("end", "zone_exit")
    assert (
        (exit_.t_capture_ns, exit_.wall_time) == (end.t_capture_ns, end.wall_time) == (9 * NS // 10, 1000.9)
    )
    assert exit_.duration_s == pytest.approx(0.9)  # entered at 0, last seen at 0.9 s


def strip(x0: int, width: int = 100) -> Instances:
    """A 10-row strip of ``width`` columns from column ``x0``, track 1."""
    return Instances.from_crops(
        (H, W), [0], [0.9], [(x0, 200)], [np.ones((10, width), bool)], track_id=np.asarray([1], np.int64)
    )


@pytest.mark.parametrize(
    ("min_fraction", "inside_at", "outside_below"),
    [(0.5, 75, 25), (0.875, 100, 63)],  # band 0.5: in from min + 0.25 (at most 1), out below min - 0.25
)
def test_mask_fraction_evidence_changes_at_the_edges_of_the_band(
    min_fraction: float, inside_at: int, outside_below: int
) -> None:
    zone = ZoneConfig(
        polygon=((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)), min_fraction=min_fraction, fraction_band=0.5
    )
    counter = ZoneCounter({"z": zone}, {})
    edge = round(0.5 * W)  # the zone's first column (the first whose centre lies inside)

    def evidence(columns_inside: int) -> int:
        return counter.evidence(strip(edge - (100 - columns_inside)))[0][0][0]

    assert [evidence(k) for k in (inside_at, inside_at - 1)] == [1, 0]
    assert [evidence(k) for k in (outside_below, outside_below - 1)] == [0, -1]


@pytest.mark.parametrize("edge", [0.25, 0.5, 0.75, 0.3, 0.9])
def test_a_one_column_part_is_inside_by_its_mask_fraction_exactly_when_its_anchor_is(edge: float) -> None:
    # (the zone's raster was scaled by (W - 1, H - 1), its edges filled: at x = 0.75 the column whose centre
    # lies a quarter of a pixel left of the edge was wholly inside by its mask, and outside by its anchor)
    polygon = ((edge, 0.0), (1.0, 0.0), (1.0, 1.0), (edge, 1.0))
    by_anchor = ZoneCounter({"z": ZoneConfig(polygon=polygon, margin=0.0, anchor="center")}, {})
    by_mask = ZoneCounter({"z": ZoneConfig(polygon=polygon, min_fraction=0.5, fraction_band=0.0)}, {})
    for x in range(round(edge * W) - 4, round(edge * W) + 4):
        part = strip(x, width=1)
        assert by_anchor.evidence(part)[0] == by_mask.evidence(part)[0] == [[1 if x + 0.5 > edge * W else -1]]


def test_anchor_evidence_is_on_the_edge_within_the_margin() -> None:
    zone = ZoneConfig(polygon=((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)), margin=0.05, anchor="center")
    counter = ZoneCounter({"z": zone}, {})
    # the strip's centre, as a fraction of the width, is 0.5 plus (a little more or less than) the margin
    at = {d: counter.evidence(strip(round((0.5 + d) * W) - 50))[0][0][0] for d in (0.06, 0.04, -0.04, -0.06)}
    assert at == {0.06: 1, 0.04: 0, -0.04: 0, -0.06: -1}


def test_a_track_the_tracker_ends_inside_a_zone_exits_in_the_same_result_with_its_stay() -> None:
    zone = ZoneConfig(polygon=((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)), enter_s=0.2, loiter_s=1.0)
    stage = ZoneStage({"z": zone}, {}, lost_s=2.0)
    events: list[tuple[int, str, float | None]] = []
    for k in range(20):  # 2 s inside at 10 fps: enters at 0.2 s, loiters at 1.2 s
        events += [
            (k, e.kind, e.duration_s) for e in stage.process(result_of(square(500, 200), k, 10.0)).events
        ]
    end = Event("end", 0, 1, 0, round(25 * NS / 10), 0.0, duration_s=2.5)
    out = stage.process(result_of(Instances.empty((H, W)), 25, 10.0, (end,)))
    events += [(25, e.kind, e.duration_s) for e in out.events]
    assert [(k, kind) for k, kind, _ in events] == [
        (2, "zone_enter"),
        (12, "loiter"),
        (25, "end"),
        (25, "zone_exit"),
    ]
    assert events[1][2] == pytest.approx(1.0)
    assert events[3][2] == pytest.approx(2.2)  # from its entry at 0.2 s to exit_s (0.5) after 1.9 s
    assert stage.counter.active == 0


def test_frames_with_the_same_capture_time_are_not_a_source_restart() -> None:
    zone = ZoneConfig(polygon=((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)), enter_s=0.0)
    counter = ZoneCounter({"z": zone}, {})
    kinds = [e.kind for _ in range(3) for e in counter.observe(NS, 0.0, [1], [0], [[1]], [[]])]
    assert kinds == ["zone_enter"]
    assert counter.active == 1


def test_a_tracks_life_in_its_end_event_runs_to_the_last_frame_it_was_seen_in() -> None:
    """Seen for 1 s at 10 fps, then gone: it ends once unseen for lost_s (2 s), and its life is the 0.9 s
    from its first frame to its last, not the 2.9 s to the frame that ended it."""
    stage = TrackerStage(TrackerConfig(enabled=True, lost_s=2.0))
    events: list[Event] = []
    for k in range(40):
        inst = square(100 + 5 * k, 200, track=-1) if k < 10 else Instances.empty((H, W))
        events += stage.process(result_of(inst, k, 10.0)).events
    (end,) = [e for e in events if e.kind == "end"]
    assert end.t_capture_ns > round(2.9 * NS)
    assert end.duration_s == pytest.approx(0.9)


def test_counts_keep_who_is_inside_between_an_enter_and_its_exit_and_each_lines_directions() -> None:
    counts = Counts()

    def event(kind: EventKind, **where: Any) -> Event:
        return Event(kind, 0, 1, 2, 0, 0.0, **where)

    assert counts.apply([event("zone_enter", zone="z")]) == {("zones", "z", 2)}
    assert counts.figures("zones", "z", 2) == {"inside": 1, "entered": 1, "exited": 0}
    counts.apply([event("zone_exit", zone="z", duration_s=1.0), event("loiter", zone="z", duration_s=5.0)])
    assert counts.figures("zones", "z", 2) == {"inside": 0, "entered": 1, "exited": 1}
    assert counts.apply([event("line_cross", line="l", direction="out")]) == {("lines", "l", 2)}
    assert counts.figures("lines", "l", 2) == {"in": 0, "out": 1}
    assert counts.figures("lines", "m", 2) == {"in": 0, "out": 0}  # (one never crossed)
    assert counts.apply([event("new"), event("end", duration_s=2.0)]) == set()


def test_an_events_json_has_its_frames_wall_time_other_times_to_the_microsecond_and_its_class() -> None:
    exit_ = Event("zone_exit", 3, 7, 0, 12_345_678_901, 1_700_000_000.1234567, zone="z", duration_s=1.23456)
    assert exit_.to_dict(("nut",)) == {
        "kind": "zone_exit",
        "event_seq": 3,
        "track_id": 7,
        "class_id": 0,
        "class_name": "nut",
        "wall_time": 1_700_000_000.1234567,  # (the frame's own: see test_sinks)
        "t_capture_s": 12.345679,
        "zone": "z",
        "duration_s": 1.235,
    }
    # (a class beyond the card's names keeps its id as its name; no names, no class_name)
    assert Event("new", 4, 8, 1, 0, 0.0).to_dict(("nut",))["class_name"] == "1"
    assert "class_name" not in Event("new", 4, 8, 1, 0, 0.0).to_dict()
