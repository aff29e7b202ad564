"""The tracker (edgeseg.tracker), its pipeline slot, and the tracking metrics (IDF1, ID switches, MOTA)."""

from __future__ import annotations

import math
import tracemalloc
import warnings
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_pipeline import CollectSink, ListSource, SquareStages

import edgeseg.tracker as tracker_module
from edgeseg.cli import summary
from edgeseg.config import load_config
from edgeseg.errors import ConfigError
from edgeseg.frame import Frame, Result
from edgeseg.instances import Instances
from edgeseg.metrics import TrackingAccumulator, TrackingScore, mask_iou
from edgeseg.pipeline import Pipeline
from edgeseg.tracker import LOOK_FRAMES, LOOKS_MOST, UNCONFIRMED, Tracker, TrackerConfig, TrackerStage

H, W = 240, 320
NS = 1_000_000_000


def rod(cx: float, cy: float, length: float = 70, width: float = 6, angle: float = 45) -> np.ndarray:
    canvas = np.zeros((H, W), np.uint8)
    pts = cv2.boxPoints(((cx, cy), (length, width), angle))
    cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)


def disk(cx: float, cy: float, r: float = 8) -> np.ndarray:
    canvas = np.zeros((H, W), np.uint8)
    cv2.circle(canvas, (round(cx), round(cy)), round(r), 1, -1)
    return canvas.astype(bool)


def frame_of(
    masks: list[np.ndarray], cls: list[int] | None = None, score: list[float] | None = None
) -> Instances:
    """Instances from full-frame masks (empty ones left out)."""
    keep = [i for i, m in enumerate(masks) if m.any()]
    if not keep:
        return Instances.empty((H, W))
    crops, origins = [], []
    for i in keep:
        ys, xs = np.nonzero(masks[i])
        crops.append(masks[i][ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
        origins.append((int(xs.min()), int(ys.min())))
    c = [0] * len(masks) if cls is None else cls
    s = [0.9] * len(masks) if score is None else score
    return Instances.from_crops((H, W), [c[i] for i in keep], [s[i] for i in keep], origins, crops)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / area)


def run(tracker: Tracker, frames: list[Instances], fps: float, start: int = 0) -> list[Instances]:
    return [tracker.update(f, round((start + k) * NS / fps), start + k) for k, f in enumerate(frames)]


def passing_rods(fps: float, seconds: float = 3.0) -> list[Instances]:
    """Two parallel 45-degree rods sliding past each other along their length, 14 px apart across it: at
    the crossing their boxes nearly coincide, their masks never touch."""
    out = []
    for k in range(round(seconds * fps)):
        t = k / fps
        along = -60 + 60 * t  # px along the rods' axis, at 60 px/s: side by side at t = 1 s
        ux, uy = np.cos(np.pi / 4), np.sin(np.pi / 4)
        nx, ny = -uy, ux
        a = (160 + along * ux + 7 * nx, 120 + along * uy + 7 * ny)
        b = (160 - along * ux - 7 * nx, 120 - along * uy - 7 * ny)
        out.append(frame_of([rod(*a), rod(*b)]))
    return out


# --- association ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [5, 10, 30])
def test_objects_whose_boxes_overlap_but_masks_never_touch_keep_their_ids(fps: float) -> None:
    frames = passing_rods(fps)
    assert max(box_iou(f.xyxy[0], f.xyxy[1]) for f in frames if len(f) == 2) > 0.5
    assert all(not (f.dense_masks()[0] & f.dense_masks()[1]).any() for f in frames)
    # each rod stays on its own side of the shared axis: ids ordered by that side never change
    across = np.array([-1.0, 1.0]) / np.sqrt(2)
    ids = {
        tuple(f.track_id[np.argsort(f.obb[:, :2] @ across)].tolist())
        for f in run(Tracker(), frames, fps)
        if f.track_id is not None and len(f) == 2 and (f.track_id >= 0).all()
    }
    assert len(ids) == 1
    assert len(set(next(iter(ids)))) == 2


def moving_disks(fps: float, seconds: float = 4.0) -> tuple[list[Instances], list[list[int]]]:
    """Five disks on straight paths (two of them cross), and which disk each instance is."""
    starts = [(30, 40), (30, 200), (290, 120), (60, 120), (160, 30)]
    vel = [(60, 30), (60, -30), (-50, 0), (0, 0), (0, 40)]
    frames, who = [], []
    for k in range(round(seconds * fps)):
        t = k / fps
        pos = [(x + vx * t, y + vy * t) for (x, y), (vx, vy) in zip(starts, vel, strict=True)]
        inside = [i for i, (x, y) in enumerate(pos) if 10 < x < W - 10 and 10 < y < H - 10]
        frames.append(frame_of([disk(*pos[i]) for i in inside], cls=[i % 2 for i in inside]))
        who.append(inside)
    return frames, who


@pytest.mark.parametrize("fps", [5, 10, 30])
def test_the_same_scene_at_5_10_and_30_fps_gives_each_object_one_id(fps: float) -> None:
    frames, who = moving_disks(fps)
    ids_of: dict[int, set[int]] = {}
    for out, objects in zip(run(Tracker(), frames, fps), who, strict=True):
        assert out.track_id is not None
        for obj, tid in zip(objects, out.track_id.tolist(), strict=True):
            if tid != UNCONFIRMED:
                ids_of.setdefault(obj, set()).add(tid)
    assert sorted(ids_of) == [0, 1, 2, 3, 4]
    assert all(len(ids) == 1 for ids in ids_of.values()), ids_of
    assert len({next(iter(ids)) for ids in ids_of.values()}) == 5


def block(x0: float, y0: float, w: float = 30, h: float = 24) -> np.ndarray:
    """A ``w`` x ``h`` block at ``(x0, y0)``, clipped to the frame (a negative start would wrap round)."""
    canvas = np.zeros((H, W), bool)
    canvas[max(0, round(y0)) : max(0, round(y0 + h)), max(0, round(x0)) : max(0, round(x0 + w))] = True
    return canvas


def touching_blocks(
    fps: float, merged: tuple[float, float] = (1.0, 2.0), speed: float = 50, down: bool = False
) -> list[tuple[Instances, list]]:
    """Two blocks riding a belt at ``speed`` px/s (rightwards, or with ``down`` downwards), 4 px apart; from
    ``merged[0]`` to ``merged[1]`` seconds the segmentation fills the gap and gives one detection for both,
    then a second more of them apart. Each frame: detections, true masks."""
    out = []
    for k in range(round((merged[1] + 1) * fps)):
        t = k / fps
        gap = np.zeros((H, W), bool)
        if down:
            a, b = block(100, 20 + speed * t, w=24, h=30), block(100, 54 + speed * t, w=24, h=30)
            gap[round(50 + speed * t) : round(54 + speed * t), 100:124] = True
        else:
            a, b = block(20 + speed * t, 100), block(54 + speed * t, 100)
            gap[100:124, round(50 + speed * t) : round(54 + speed * t)] = True
        if merged[0] <= t < merged[1]:
            out.append((frame_of([a | b | gap]), [a, b]))
        else:
            out.append((frame_of([a, b]), [a, b]))
    return out


def full_mask(inst: Instances, i: int) -> np.ndarray:
    canvas = np.zeros(inst.image_shape, bool)
    x0, y0, x1, y1 = inst.mask_box[i].tolist()
    canvas[y0:y1, x0:x1] = inst.masks[i]
    return canvas


@pytest.mark.parametrize(
    ("fps", "speed", "until", "down"),
    [
        (5, 50, 2.0, False),
        (10, 50, 2.0, False),
        (30, 50, 2.0, False),
        (30, 6, 4.0, False),
        (30, 6, 4.0, True),
    ],
)
def test_touching_objects_segmented_as_one_keep_their_ids_and_get_their_own_masks(
    fps: float, speed: float, until: float, down: bool
) -> None:
    """At 6 px/s and 30 fps the pieces move a fifth of a pixel a frame: placed on whole pixels, they keep
    the fractions left out, or they would lag 18 px behind their blocks after 3 s merged."""
    scene = touching_blocks(fps, (1.0, until), speed, down)
    outs = run(Tracker(), [det for det, _ in scene], fps)
    before = outs[round(0.8 * fps)]
    assert before.track_id is not None
    assert sorted(before.track_id.tolist()) == [1, 2]
    merged_frames = [k for k in range(len(scene)) if 1.0 <= k / fps < until]
    for k in merged_frames:
        out, truth = outs[k], scene[k][1]
        assert len(scene[k][0]) == 1, k
        assert len(out) == 2, k
        assert out.track_id is not None
        # each piece is its block, with the id that block had before the merge
        left = int(np.argmin(out.mask_box[:, 1 if down else 0]))  # (the first block: left, or on top)
        assert out.track_id[left] == 1
        assert out.track_id[1 - left] == 2
        for piece, true in ((left, truth[0]), (1 - left, truth[1])):
            got = full_mask(out, piece)
            assert (got & true).sum() / (got | true).sum() > 0.8
    after = outs[-1]
    assert after.track_id is not None
    assert sorted(after.track_id.tolist()) == [1, 2]


@settings(max_examples=60, deadline=None)
@given(
    widths=st.lists(st.integers(12, 40), min_size=2, max_size=3),
    gap=st.integers(1, 6),
    speed=st.floats(-80, 80),
    fps=st.sampled_from([5, 10, 30]),
)
def test_a_split_detection_is_cut_into_disjoint_pieces_that_cover_it_exactly(
    widths: list[int], gap: int, speed: float, fps: int
) -> None:
    tracker = Tracker()
    x0 = 120 - sum(widths) // 2

    def blocks(t: float) -> list[np.ndarray]:
        out, x = [], x0 + speed * t
        for w in widths:
            out.append(block(x, 100, w=w, h=20))
            x += w + gap
        return out

    for k in range(4):
        before = tracker.update(frame_of(blocks(k / fps)), round(k * NS / fps), k)
    parts = blocks(4 / fps)
    merged = np.zeros((H, W), bool)
    merged[100:120, parts[0].any(axis=0).argmax() : W - parts[-1][:, ::-1].any(axis=0).argmax()] = True
    det = frame_of([merged], score=[0.8])
    out = tracker.update(det, round(4 * NS / fps), 4)
    assert out.track_id is not None
    event("split" if len(out) > 1 else "not split")
    if len(out) == 1:  # not split: the detection passes through untouched
        assert np.array_equal(full_mask(out, 0), merged)
        return
    pieces = [full_mask(out, i) for i in range(len(out))]
    assert len(out) == len(widths)
    assert np.array_equal(np.sum(pieces, axis=0), merged.astype(int))  # disjoint, and cover it exactly
    assert before.track_id is not None
    assert sorted(out.track_id.tolist()) == sorted(before.track_id.tolist())  # one piece per track
    assert np.all(out.track_id > 0)
    assert np.all(out.score == np.float32(0.8))
    assert np.all(out.area == [p.sum() for p in pieces])


def cut_across(fps: float) -> list[tuple[Instances, list[np.ndarray]]]:
    """Two blocks riding a belt side by side (a 30x24 and a 40x24, 2 px apart); in every other frame from 1 s
    to 2 s the segmentation cuts them across instead of between them: one detection is both blocks' top
    half, the other both bottom halves. Each frame: detections, true masks."""
    out = []
    for k in range(round(3 * fps)):
        t = k / fps
        a, b = block(20 + 50 * t, 100, w=30), block(52 + 50 * t, 100, w=40)
        if 1.0 <= t < 2.0 and k % 2:
            both = a | b
            both[100:124, round(50 + 50 * t) : round(52 + 50 * t)] = True
            top, bottom = both.copy(), both.copy()
            top[112:] = False
            bottom[:112] = False
            out.append((frame_of([top, bottom]), [a, b]))
        else:
            out.append((frame_of([a, b]), [a, b]))
    return out


def block_of(mask: np.ndarray, truth: list[np.ndarray]) -> int:
    """Which of two true blocks ``mask`` holds more of (0 or 1)."""
    return 0 if (mask & truth[0]).sum() > (mask & truth[1]).sum() else 1


@pytest.mark.parametrize("fps", [10, 30])
def test_objects_cut_across_by_the_segmentation_get_their_own_ids_back(fps: float) -> None:
    scene = cut_across(fps)
    outs = run(Tracker(), [det for det, _ in scene], fps)
    for k, (out, (_, truth)) in enumerate(zip(outs, scene, strict=True)):
        if (k % 2 and 1.0 <= k / fps < 2.0) or k < 2:
            continue  # a cut frame (no detection is either block), or before the ids are given
        assert out.track_id is not None
        for i in range(len(out)):
            assert out.track_id[i] == block_of(full_mask(out, i), truth) + 1, (k, out.track_id.tolist())


def test_with_split_merged_off_a_merged_detection_stays_one_instance() -> None:
    scene = touching_blocks(10)
    outs = run(Tracker(TrackerConfig(split_merged=False)), [det for det, _ in scene], 10)
    assert all(len(out) == len(det) for out, (det, _) in zip(outs, scene, strict=True))


def test_a_detection_that_holds_more_than_its_tracks_or_one_track_is_not_split() -> None:
    fps = 10
    tracker = Tracker()
    for k in range(5):
        tracker.update(frame_of([disk(60 + 5 * k, 120), disk(90 + 5 * k, 120)]), round(k * NS / fps), k)
    # one blob three times the two disks' area, holding both: more than those two objects
    big = disk(100, 120, r=25)
    out = tracker.update(frame_of([big]), round(5 * NS / fps), 5)
    assert len(out) == 1
    # one disk tracked alone, its detection grown by an untracked neighbour: one track, nothing to split
    alone = Tracker()
    for k in range(5):
        alone.update(frame_of([disk(60 + 5 * k, 120)]), round(k * NS / fps), k)
    out = alone.update(frame_of([disk(85, 120) | disk(100, 120)]), round(5 * NS / fps), 5)
    assert len(out) == 1


def belt_row(fps: float, seconds: float = 1.2, speed: float = 125.0) -> list[list[np.ndarray]]:
    """Four 30x24 blocks in a row, 4 px apart, on a belt at ``speed`` px/s: at 5 fps each moves 25 px a
    frame, so a block's old place is mostly where the block behind it is now."""
    return [
        [block(20 + 34 * i + speed * k / fps, 100) for i in range(4)] for k in range(round(seconds * fps))
    ]


@pytest.mark.parametrize("fps", [5, 10])
def test_a_fast_belt_keeps_its_ids_from_the_stream_s_second_frame(fps: float) -> None:
    frames = belt_row(fps)
    outs = run(Tracker(), [frame_of(f) for f in frames], fps)
    for out in outs:
        assert out.track_id is not None
        # left to right, the same four ids in every frame
        assert out.track_id[np.argsort(out.mask_box[:, 0])].tolist() == [1, 2, 3, 4]


def test_two_frames_with_the_same_capture_time_keep_the_ids_without_a_warning() -> None:
    tracker = Tracker()
    frame = frame_of([block(20, 100), block(60, 100)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a division by the zero interval would warn
        outs = [tracker.update(frame, t, k) for k, t in enumerate((0, 0, NS // 10))]
    assert all(o.track_id is not None and o.track_id.tolist() == [1, 2] for o in outs)


def test_guessing_the_scene_s_motion_costs_little_memory_however_many_objects_a_frame_holds() -> None:
    # 500 small disks 12 px apart: every track has dozens of detections within reach
    grid = [(6 + 12 * (i % 25), 6 + 12 * (i // 25)) for i in range(500)]
    first = frame_of([disk(x, y, r=3) for x, y in grid])
    second = frame_of([disk(x + 4, y, r=3) for x, y in grid])
    tracker = Tracker()
    tracker.update(first, 0, 0)
    tracemalloc.start()
    try:
        out = tracker.update(second, NS // 10, 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB"
    assert out.track_id is not None
    assert (out.track_id > 0).all()


def nested_rings(shift: int) -> Instances:
    """Square rings of one class, one pixel wide and one apart, around the frame's centre (moved by
    ``shift``): 58 objects whose boxes all overlap, each track's predicted box over every detection."""
    yy, xx = np.mgrid[:H, :W]
    ring = np.maximum(abs(yy - H // 2 - shift), abs(xx - W // 2 - shift))
    return frame_of([(ring == r) for r in range(2, min(H, W) // 2 - 2, 2)])


def test_a_frame_of_overlapping_objects_costs_no_more_mask_comparisons_than_the_budget(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    granted: list[int] = []  # pixels of each comparison made (each is paid for before it is made)
    take = tracker_module._Looks.take

    def spy(self: Any, pixels: int) -> bool:
        paid = bool(take(self, pixels))
        if paid:
            granted.append(max(pixels, self.floor))
        return paid

    monkeypatch.setattr(tracker_module._Looks, "take", spy)
    tracker = Tracker()
    frames = [nested_rings(k % 2) for k in range(4)]
    assert len(frames[0]) > 50
    pairs = 0
    for k, frame in enumerate(frames):
        granted.clear()
        out = tracker.update(frame, k * NS // 30, k)
        assert sum(granted) <= LOOK_FRAMES * H * W
        assert len(granted) <= LOOKS_MOST
        assert out.track_id is not None
        assert len(out) == len(frame)
        pairs += len(frame) ** 2
    # (every ring's box holds every smaller one's: without the budget each update compares about all pairs)
    assert tracker.unlooked > pairs // 4
    assert sum("tracker budget" in r.getMessage() for r in caplog.records) == 1  # once a minute at most


def test_a_scene_of_objects_is_compared_in_full_within_the_budget() -> None:
    tracker = Tracker()
    run(tracker, [frame_of(f) for f in belt_row(30)], 30)
    run(tracker, passing_rods(30), 30, start=1000)
    assert tracker.unlooked == 0


def test_a_belt_at_rest_is_not_given_a_motion_it_does_not_have() -> None:
    frames = belt_row(5, speed=0.0)
    outs = run(Tracker(), [frame_of(f) for f in frames], 5)
    assert all(o.track_id is not None and sorted(o.track_id.tolist()) == [1, 2, 3, 4] for o in outs)


def neighbour_merges(fps: float) -> list[tuple[Instances, list[np.ndarray]]]:
    """Two 30x24 blocks 4 px apart on a belt at 50 px/s. In the first frame at 1 s the segmentation gives the
    front block one detection with the gap and the back block's front 30% (a third bigger than the block; too
    little of the back block for a split), and the back block's rest another; until 1.5 s it then merges
    both blocks into one detection. Each frame: detections, true masks."""
    out = []
    for k in range(round(3 * fps)):
        t = k / fps
        x = 20 + 50 * t
        back, front = block(x, 100), block(x + 34, 100)
        gap = np.zeros((H, W), bool)
        gap[100:124, round(x + 30) : round(x + 34)] = True
        if k == math.ceil(fps):
            swallowed, rest = back.copy(), back.copy()
            swallowed[:, : round(x + 21)] = False
            rest[:, round(x + 21) :] = False
            out.append((frame_of([rest, front | swallowed | gap]), [back, front]))
        elif 1.0 <= t < 1.5:
            out.append((frame_of([back | front | gap]), [back, front]))
        else:
            out.append((frame_of([back, front]), [back, front]))
    return out


@pytest.mark.parametrize("fps", [10, 30])
def test_a_track_whose_detection_swallowed_part_of_a_neighbour_keeps_its_own_shape(fps: float) -> None:
    scene = neighbour_merges(fps)
    outs = run(Tracker(), [det for det, _ in scene], fps)
    for k, (out, (_, truth)) in enumerate(zip(outs, scene, strict=True)):
        if k < 2 or k == math.ceil(fps):
            continue
        assert out.track_id is not None
        assert len(out) == 2, k  # merged frames are split in two
        for i in range(len(out)):
            got = full_mask(out, i)
            which = block_of(got, truth)
            assert out.track_id[i] == which + 1, (k, out.track_id.tolist())
            # each piece stays near its block: the front track kept its own shape, not the swallowing
            # detection's (had it taken that, its pieces would drift down to an IoU of 0.4)
            assert (got & truth[which]).sum() / (got | truth[which]).sum() > 0.7, k


def in_pieces(
    fps: float, speed: float = 50, seconds: float = 3.0, pieces: tuple[float, float] = (1.0, 2.0)
) -> list[tuple[Instances, np.ndarray]]:
    """One 40x24 block on a belt at ``speed`` px/s for ``seconds``; in ``pieces`` the segmentation sees it,
    every other frame, as two pieces (its top and bottom thirds with a gap between). Each frame: detections,
    true mask."""
    out = []
    for k in range(round(seconds * fps)):
        t = k / fps
        whole = block(20 + speed * t, 100, w=40)
        if pieces[0] <= t < pieces[1] and k % 2:
            top, bottom = whole.copy(), whole.copy()
            top[110:] = False
            bottom[:114] = False
            out.append((frame_of([top, bottom], score=[0.9, 0.7]), whole))
        else:
            out.append((frame_of([whole]), whole))
    return out


@pytest.mark.parametrize(("fps", "speed"), [(10, 50), (30, 50), (10, 200)])
def test_an_object_segmented_in_pieces_is_one_instance_with_its_id(fps: float, speed: float) -> None:
    """At 200 px/s and 10 fps the block moves half its width a frame: its pieces are looked for where it is
    predicted to be now, not where it was."""
    scene = in_pieces(fps, speed) if speed <= 50 else in_pieces(fps, speed, seconds=1.3, pieces=(0.5, 1.2))
    outs = run(Tracker(), [det for det, _ in scene], fps)
    for (det, whole), out in zip(scene, outs, strict=True):
        assert len(out) == 1
        assert out.track_id is not None
        assert out.track_id.tolist() == [1]
        got = full_mask(out, 0)
        assert not (got & ~whole).any()
        if len(det) == 2:  # the pieces joined: exactly their pixels, their area-weighted score
            assert np.array_equal(got, full_mask(det, 0) | full_mask(det, 1))
            areas = det.area.astype(float)
            assert out.score[0] == pytest.approx((det.score * areas).sum() / areas.sum(), rel=1e-6)


def test_with_join_fragments_off_or_for_objects_tracked_apart_pieces_stay_apart() -> None:
    scene = in_pieces(10)
    outs = run(Tracker(TrackerConfig(join_fragments=False)), [det for det, _ in scene], 10)
    assert [len(o) for o in outs] == [len(det) for det, _ in scene]
    # two small blocks tracked side by side, 2 px apart: each is its own object, not a piece of the other
    pair = [frame_of([block(60 + 5 * k, 100, w=14), block(76 + 5 * k, 100, w=14)]) for k in range(8)]
    outs = run(Tracker(), pair, 10)
    assert all(len(o) == 2 for o in outs)


def test_an_object_of_another_class_never_takes_an_id() -> None:
    cfg = TrackerConfig(confirm_s=0)
    tracker = Tracker(cfg)
    first = tracker.update(frame_of([disk(100, 100)], cls=[0]), 0)
    second = tracker.update(frame_of([disk(101, 100)], cls=[1]), NS // 10)
    assert first.track_id is not None
    assert second.track_id is not None
    assert first.track_id[0] != second.track_id[0]


def test_a_low_score_detection_continues_a_track_but_never_starts_one() -> None:
    tracker = Tracker(TrackerConfig(confirm_s=0))
    seen = tracker.update(frame_of([disk(100, 100)]), 0)
    dipped = tracker.update(frame_of([disk(102, 100), disk(200, 100)], score=[0.3, 0.3]), NS // 10)
    assert seen.track_id is not None
    assert dipped.track_id is not None
    assert dipped.track_id.tolist() == [seen.track_id[0], UNCONFIRMED]


# --- time -------------------------------------------------------------------------------------------------


def test_a_track_lost_for_less_than_lost_s_on_empty_frames_takes_its_id_back() -> None:
    tracker = Tracker(TrackerConfig(lost_s=1.0))
    seen = run(tracker, [frame_of([disk(100, 100)])] * 5, 10)
    gone = run(tracker, [Instances.empty((H, W))] * 8, 10, start=5)
    back = run(tracker, [frame_of([disk(100, 100)])], 10, start=13)
    assert all(g.track_id is not None and len(g.track_id) == 0 for g in gone)
    assert back[0].track_id is not None
    assert seen[-1].track_id is not None
    assert back[0].track_id[0] == seen[-1].track_id[0] != UNCONFIRMED


def test_empty_frames_advance_time_so_an_id_does_not_come_back_after_lost_s() -> None:
    tracker = Tracker(TrackerConfig(lost_s=1.0))
    seen = run(tracker, [frame_of([disk(100, 100)])] * 5, 10)
    run(tracker, [Instances.empty((H, W))] * 15, 10, start=5)  # 1.5 s of frames with nothing in them
    back = run(tracker, [frame_of([disk(100, 100)])] * 3, 10, start=20)
    old = seen[-1].track_id
    assert old is not None
    assert old[0] != UNCONFIRMED
    assert all(b.track_id is not None and b.track_id[0] != old[0] for b in back)
    assert tracker.active == 1


def test_unconfirmed_detections_get_no_id_and_a_one_frame_flicker_never_does() -> None:
    tracker = Tracker(TrackerConfig(confirm_s=0.2))
    tracker.update(Instances.empty((H, W)), 0, 0)  # the stream has begun: later arrivals must confirm
    out = run(
        tracker,
        [frame_of([disk(100, 100), disk(200, 100) if k == 1 else np.zeros((H, W), bool)]) for k in range(4)],
        10,
        start=1,
    )
    assert [o.track_id.tolist() for o in out if o.track_id is not None] == [
        [UNCONFIRMED],
        [UNCONFIRMED, UNCONFIRMED],
        [1],
        [1],
    ]
    # and the results stay valid JSON for the results schema (track_id: an integer)
    doc = out[0].to_dict()
    assert doc["instances"][0]["track_id"] == -1
    assert Instances.from_dict(doc).track_id is not None


def test_what_the_first_frame_of_a_stream_shows_gets_ids_at_once() -> None:
    """Objects in view when the stream begins were there before it: no confirmation wait (as ByteTrack
    activates its first frame's tracks), after a restart too."""
    tracker = Tracker(TrackerConfig(confirm_s=0.2))
    out = run(tracker, [frame_of([disk(100, 100), disk(200, 100)])] * 2, 10)
    assert [o.track_id.tolist() for o in out if o.track_id is not None] == [[1, 2], [1, 2]]
    tracker.reset()
    again = run(tracker, [frame_of([disk(100, 100)])], 10, start=5)
    assert again[0].track_id is not None
    assert again[0].track_id.tolist() == [3]


# --- resets -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("restart", ["index goes back", "capture-time gap", "reset()"])
def test_a_source_restart_forgets_every_track_and_never_reuses_an_id(restart: str) -> None:
    tracker = Tracker()
    frames = [frame_of([disk(100, 100)])] * 5
    before = run(tracker, frames, 10, start=50)
    if restart == "index goes back":
        # a file source starting again: the index goes back, capture time goes on
        after = [tracker.update(f, (60 + k) * NS // 10, k) for k, f in enumerate(frames)]
    elif restart == "capture-time gap":
        after = run(tracker, frames, 10, start=50 + 10 * 60)  # a minute without frames: a reconnect
    else:
        tracker.reset()
        after = run(tracker, frames, 10, start=55)
    assert before[-1].track_id is not None
    assert after[-1].track_id is not None
    assert after[-1].track_id[0] > before[-1].track_id[0]
    assert tracker.active == 1
    assert tracker.resets == (0 if restart == "reset()" else 1)


def test_a_frame_size_change_is_a_new_stream_and_no_other_object_takes_an_id_by_its_old_pixels() -> None:
    """A camera that reconnects within reset_gap_s at another resolution: pixel coordinates before and
    after mean different places, so a part now where a track's pixels were must not take its id (a zone or
    line would see that track jump across the frame)."""

    def parts(shape: tuple[int, int], centres: list[tuple[int, int]], r: int) -> Instances:
        crop = np.zeros((2 * r + 1, 2 * r + 1), np.uint8)
        cv2.circle(crop, (r, r), r, 1, -1)
        origins = [(cx - r, cy - r) for cx, cy in centres]
        n = len(centres)
        return Instances.from_crops(shape, [0] * n, [0.9] * n, origins, [crop.astype(bool)] * n)

    stage = TrackerStage(TrackerConfig())
    for k in range(10):
        stage.process(
            Result(
                Frame(k, np.zeros((1, 1, 3), np.uint8), k * NS // 10, 1000.0), parts((H, W), [(150, 100)], 8)
            )
        )
    # 1 s later at twice the size: the part is at (300, 200) now, another one at its old pixels
    after = stage.process(
        Result(
            Frame(10, np.zeros((1, 1, 3), np.uint8), 2 * NS, 1002.0),
            parts((2 * H, 2 * W), [(300, 200), (150, 100)], 16),
        )
    )
    assert after.instances.track_id is not None
    assert 1 not in after.instances.track_id.tolist()
    assert [(e.kind, e.track_id, e.t_capture_ns) for e in after.events if e.kind == "end"] == [
        ("end", 1, 9 * NS // 10)
    ]
    assert stage.tracker.resets == 1


def test_a_storm_of_short_lived_detections_costs_memory_in_proportion_to_the_tracks_not_their_square() -> (
    None
):
    """Rain, or a model facing what it was not trained for: 300 detections a frame, each somewhere new,
    leave thousands of lost tracks held for lost_s. An update's memory may grow with tracks x detections
    (their similarities), not with (tracks + detections) squared (lap's square with a cost limit: 87 MB at
    3,000 tracks, 320 MB at 6,000, on a device with 512 MB)."""
    h, w, per_frame, frames = 480, 640, 300, 10
    places = [(8 * i + 4, 8 * j + 4) for j in range(h // 8) for i in range(w // 8)]

    def blobs(at: list[tuple[int, int]]) -> Instances:
        n = len(at)
        return Instances.from_crops(
            (h, w), [0] * n, [0.9] * n, [(x - 1, y - 1) for x, y in at], [np.ones((3, 3), bool)] * n
        )

    tracker = Tracker(TrackerConfig(confirm_s=0))
    for k in range(frames):
        tracker.update(blobs(places[per_frame * k : per_frame * (k + 1)]), k * NS // 30, k)
    lost = tracker.active
    storm = blobs(places[per_frame * frames : per_frame * (frames + 1)])
    tracemalloc.start()
    try:
        tracker.update(storm, frames * NS // 30, frames)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lost == per_frame * frames
    one_matrix = lost * per_frame * 8  # tracks x detections float64: 7.2 MB
    assert peak < 8 * one_matrix


def test_memory_stays_flat_over_100000_tracks() -> None:
    tracker = Tracker(TrackerConfig(confirm_s=0, lost_s=0.1, reset_gap_s=1.0))
    batch = frame_of([disk(20 + 30 * (i % 10), 30 + 40 * (i // 10)) for i in range(50)])
    t = 0

    def tracks(n: int) -> None:
        nonlocal t
        for _ in range(n // len(batch)):
            t += NS // 5  # longer than lost_s: the last batch's tracks end, this one's start
            tracker.update(batch, t)

    tracks(80_000)
    # the last 20000 traced (tracemalloc makes each update 5 times slower): 10 bytes held per ended track
    # fail it, as 1 MB over 100000 did; a tracker that holds none grows by 16 KB
    tracemalloc.start()
    try:
        start = tracemalloc.take_snapshot()
        tracks(20_000)
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(start, "filename"))
    finally:
        tracemalloc.stop()
    assert grown < 200_000, grown
    assert tracker.active == len(batch)


# --- properties -------------------------------------------------------------------------------------------

step = st.tuples(
    st.lists(st.tuples(st.integers(15, W - 15), st.integers(15, H - 15), st.integers(0, 1)), max_size=6),
    st.integers(1, 20),  # frame interval, in 1/20 s
)


@settings(max_examples=40, deadline=None)
@given(st.lists(step, min_size=1, max_size=25))
def test_ids_are_unique_per_frame_only_grow_and_never_come_back_after_lost_s(
    steps: list[tuple[list[tuple[int, int, int]], int]],
) -> None:
    cfg = TrackerConfig(lost_s=0.5, reset_gap_s=2.0)
    tracker = Tracker(cfg)
    t_ns, highest = 0, 0
    last_seen: dict[int, int] = {}
    for objects, gap in steps:
        t_ns += gap * NS // 20
        out = tracker.update(
            frame_of([disk(x, y) for x, y, _ in objects], cls=[c for *_, c in objects]), t_ns
        )
        assert out.track_id is not None
        ids = [i for i in out.track_id.tolist() if i != UNCONFIRMED]
        assert len(ids) == len(set(ids))
        new = [i for i in ids if i not in last_seen]
        assert all(i > highest for i in new)
        highest = max([highest, *new])
        for i in ids:
            if i in last_seen:
                assert t_ns - last_seen[i] <= (cfg.lost_s + 0.01) * NS
            last_seen[i] = t_ns


# --- config and pipeline ----------------------------------------------------------------------------------


def test_the_tracker_is_off_by_default_and_on_in_the_demo() -> None:
    assert load_config(None).tracker.enabled
    assert not TrackerConfig().enabled


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tracker.low_score=0.9", "tracker.low_score: must be <= high_score (0.6) (got 0.9)"),
        ("tracker.reset_gap_s=1", "tracker.reset_gap_s: must be > lost_s (2) (got 1.0)"),
        ("tracker.reset_gap_s=2", "tracker.reset_gap_s: must be > lost_s (2) (got 2.0)"),
        ("tracker.lost_s=0", "tracker.lost_s: "),
    ],
)
def test_bad_tracker_settings_are_one_line_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_settings_at_their_limits_are_taken() -> None:
    assert load_config(None, ["tracker.low_score=0.6"]).tracker.low_score == 0.6  # = high_score
    assert load_config(None, ["tracker.reset_gap_s=2.001"]).tracker.reset_gap_s == 2.001


def test_a_box_touching_the_frame_from_outside_is_out_and_one_on_its_border_is_at_its_edge() -> None:
    w, h = 640, 480
    assert not tracker_module._inside((-10, 5, 0, 20), w, h)  # its right side on the frame's left border
    assert not tracker_module._inside((5, -10, 20, 0), w, h)
    assert not tracker_module._inside((w, 5, w + 10, 20), w, h)
    assert not tracker_module._inside((5, h, 20, h + 10), w, h)
    assert tracker_module._inside((-10, -10, 1, 1), w, h)
    assert tracker_module._inside((w - 1, h - 1, w + 10, h + 10), w, h)
    edges = [[0, 5, 20, 20], [5, 0, 20, 20], [5, 5, w, 20], [5, 5, 20, h]]
    assert all(tracker_module._at_edge(box, w, h) for box in edges)
    assert not tracker_module._at_edge([1, 1, w - 1, h - 1], w, h)


def test_mask_comparisons_are_paid_from_the_budget_at_least_its_floor_each_until_it_is_spent() -> None:
    looks = tracker_module._Looks(LOOKS_MOST * 10)
    assert looks.floor == 10
    assert looks.take(1)  # a tiny comparison still costs the floor
    assert looks.left == LOOKS_MOST * 10 - 10
    assert looks.take(looks.left - 10)
    assert not looks.spent
    assert looks.take(10)  # exactly what is left
    assert looks.spent
    assert not looks.take(1)
    assert not looks.take(1)
    assert looks.refused == 2


class RaisingStage:
    name = "zones"

    def __init__(self) -> None:
        self.closed = False

    def process(self, result: Result) -> Result:
        if result.frame.index == 3:
            raise RuntimeError("zone polygon broke")
        return result

    def reset(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


def test_stream_stages_run_in_order_are_timed_and_a_failure_passes_the_result_on() -> None:
    sink, failing = CollectSink(), RaisingStage()
    pipe = Pipeline(
        ListSource(12, period_s=0.02),
        SquareStages(),
        {"c": sink},
        stream_stages=[TrackerStage(TrackerConfig()), failing],
    )
    stats = pipe.run()
    assert [r.frame.index for r in sink.results] == list(range(12))
    ids = [r.instances.track_id.tolist() for r in sink.results if r.instances.track_id is not None]
    assert len(ids) == 12
    assert len({tuple(i) for i in ids[-5:]}) == 1
    assert ids[-1][0] != UNCONFIRMED
    assert stats.bad_frames == {"stream:zones": 1}
    # the frame went on without that stage's work: reported, not counted as lost
    lines = summary(stats, pipe.source.stats, pipe.reports(), "done", {})
    passed_on = "results passed on without a stream stage's work: zones failed on 1 (not lost; see the log)"
    assert passed_on in lines
    assert not any("LOST" in line for line in lines)
    assert {"track", "zones"} <= set(stats.stage_ms)
    assert failing.closed
    assert all(r.times.published >= r.times.decoded for r in sink.results)


# --- metrics ----------------------------------------------------------------------------------------------


def random_sequence(rng: np.random.Generator) -> list[tuple[Instances, Instances]]:
    """Truth tracks of disks on random walks; predictions: the truth jittered, with id swaps, new ids,
    misses, unpublished (-1) and false detections."""
    n, frames = int(rng.integers(2, 6)), int(rng.integers(5, 30))
    pos = rng.uniform(30, [W - 30, H - 30], (n, 2))
    cls = rng.integers(0, 2, n)
    pred_id = np.arange(n) + 100
    seq = []
    for _ in range(frames):
        pos = np.clip(pos + rng.normal(0, 6, (n, 2)), 20, [W - 20, H - 20])
        present = [i for i in range(n) if rng.random() > 0.1]
        truth = frame_of([disk(*pos[i], 10) for i in present], cls=[int(cls[i]) for i in present])
        truth = truth.with_track_ids(np.asarray(present, np.int64))
        if rng.random() < 0.15:  # an id switch between two tracks, or a fresh id
            a, b = rng.integers(0, n, 2)
            pred_id[a], pred_id[b] = pred_id[b], pred_id[a]
            if a == b:
                pred_id[a] = pred_id.max() + 1
        shown = [i for i in present if rng.random() > 0.1]
        jitter = rng.normal(0, 2.5, (len(shown), 2))
        masks = [disk(*(pos[i] + jitter[k]), 10) for k, i in enumerate(shown)]
        classes = [int(cls[i]) for i in shown]
        ids = [int(pred_id[i]) if rng.random() > 0.1 else UNCONFIRMED for i in shown]
        if rng.random() < 0.3:
            masks.append(disk(*rng.uniform(20, [W - 20, H - 20]), 10))
            classes.append(0)
            ids.append(int(rng.integers(500, 503)))
        pred = frame_of(masks, cls=classes).with_track_ids(np.asarray(ids, np.int64))
        seq.append((pred, truth))
    return seq


@pytest.mark.parametrize("seed", range(12))
def test_idf1_switches_and_mota_equal_motmetrics_on_random_sequences(seed: int) -> None:
    mm = pytest.importorskip("motmetrics")
    seq = random_sequence(np.random.default_rng(seed))
    ours = TrackingAccumulator()
    theirs = mm.MOTAccumulator(auto_id=True)
    for pred, truth in seq:
        ours.add(pred, truth)
        motmetrics_update(theirs, pred, truth)
    assert_scores_as_motmetrics(ours.result(), mm, theirs)


def motmetrics_update(theirs: Any, pred: Instances, truth: Instances) -> None:
    """One frame into a ``motmetrics.MOTAccumulator``: the published tracks, class-aware mask IoU > 0.5."""
    assert pred.track_id is not None
    assert truth.track_id is not None
    shown = pred[pred.track_id >= 0]
    dist = np.full((len(truth), len(shown)), np.nan)
    for j in range(len(truth)):
        for i in range(len(shown)):
            iou = mask_iou(shown, i, truth, j)
            if iou > 0.5 and shown.class_id[i] == truth.class_id[j]:
                dist[j, i] = 1 - iou
    assert shown.track_id is not None
    theirs.update(truth.track_id.tolist(), shown.track_id.tolist(), dist)


def assert_scores_as_motmetrics(got: TrackingScore | None, mm: Any, theirs: Any) -> None:
    names = ["idf1", "idtp", "idfp", "idfn", "num_switches", "mota", "num_false_positives", "num_misses"]
    summary = mm.metrics.create().compute(theirs, metrics=names, name="x")
    assert got is not None
    assert got.idf1 == pytest.approx(float(summary["idf1"].iloc[0]), abs=1e-9)
    assert (got.idtp, got.idfp, got.idfn) == tuple(int(summary[k].iloc[0]) for k in ("idtp", "idfp", "idfn"))
    assert got.id_switches == int(summary["num_switches"].iloc[0])
    assert got.mota == pytest.approx(float(summary["mota"].iloc[0]), abs=1e-9)
    assert (got.fp, got.fn) == (
        int(summary["num_false_positives"].iloc[0]),
        int(summary["num_misses"].iloc[0]),
    )


def conveyor_sequence(rng: np.random.Generator, frames: int) -> list[tuple[Instances, Instances]]:
    """Parts crossing the frame one after another, each present for 10-40 frames and never again; predictions:
    the truth with one-frame misses, ids swapped between two parts in view, a part's id replaced mid-way by a
    fresh one, and false detections with ids of their own."""
    live: dict[int, list[float]] = {}  # truth id -> [x, y, frames left, predicted id]
    next_truth, next_pred = 0, 1000
    seq = []
    for _ in range(frames):
        if len(live) < 4 and rng.random() < 0.3:
            live[next_truth] = [20.0, float(rng.uniform(20, H - 20)), float(rng.integers(10, 41)), next_pred]
            next_truth, next_pred = next_truth + 1, next_pred + 1
        for g in list(live):
            live[g][0] += 7
            live[g][2] -= 1
            if live[g][2] < 0 or live[g][0] > W - 20:
                del live[g]
        ids = list(live)
        if len(ids) >= 2 and rng.random() < 0.05:
            a, b = rng.choice(ids, 2, replace=False)
            live[a][3], live[b][3] = live[b][3], live[a][3]
        if ids and rng.random() < 0.03:
            live[ids[int(rng.integers(len(ids)))]][3] = next_pred
            next_pred += 1
        truth = frame_of([disk(live[g][0], live[g][1], 10) for g in ids], cls=[g % 2 for g in ids])
        truth = truth.with_track_ids(np.asarray(ids, np.int64))
        shown = [g for g in ids if rng.random() > 0.1]
        masks = [disk(live[g][0] + rng.normal(0, 2), live[g][1], 10) for g in shown]
        classes, pids = [g % 2 for g in shown], [int(live[g][3]) for g in shown]
        if rng.random() < 0.1:
            masks.append(disk(*rng.uniform(20, [W - 20, H - 20]), 10))
            classes.append(0)
            pids.append(next_pred)
            next_pred += 1
        seq.append((frame_of(masks, cls=classes).with_track_ids(np.asarray(pids, np.int64)), truth))
    return seq


@pytest.mark.parametrize("seed", range(3))
def test_settled_tracks_give_the_scores_of_a_run_that_keeps_every_tally(seed: int) -> None:
    mm = pytest.importorskip("motmetrics")
    settled, kept = TrackingAccumulator(settle_after=25), TrackingAccumulator(settle_after=None)
    theirs = mm.MOTAccumulator(auto_id=True)
    for pred, truth in conveyor_sequence(np.random.default_rng(seed), 600):
        settled.add(pred, truth)
        kept.add(pred, truth)
        motmetrics_update(theirs, pred, truth)
    assert settled.result() == kept.result()
    got = settled.result()
    assert got is not None
    assert got.frames == 600
    assert 0 < got.idtp < got.tp  # swaps and fresh ids cost identity: the pairing had something to solve
    assert_scores_as_motmetrics(got, mm, theirs)


def test_a_long_run_holds_the_tallies_of_the_tracks_in_view_not_of_every_track_it_saw() -> None:
    settled, kept = TrackingAccumulator(settle_after=25), TrackingAccumulator(settle_after=None)
    held = []
    for k, (pred, truth) in enumerate(conveyor_sequence(np.random.default_rng(7), 1500)):
        settled.add(pred, truth)
        kept.add(pred, truth)
        if k % 100 == 99:
            held.append(settled.held())
    assert max(held) < 120  # about the tracks of the last 50 frames: 4 in view, a few ids each
    assert kept.held() > 5 * max(held)  # one run's every track: it grows with the run
    assert settled.result() == kept.result()


def test_a_perfect_tracker_scores_idf1_and_mota_one() -> None:
    acc = TrackingAccumulator()
    for _pred, truth in random_sequence(np.random.default_rng(0)):
        assert truth.track_id is not None
        acc.add(replace(truth, track_id=truth.track_id + 7), truth)
    got = acc.result()
    assert got is not None
    assert (got.idf1, got.mota, got.id_switches) == (1.0, 1.0, 0)


def test_the_mask_iou_of_a_moved_track_counts_its_overlap_once_in_the_union() -> None:
    track_inst = Instances.from_crops((40, 40), [0], [0.9], [(0, 0)], [np.ones((10, 10), bool)])  # 100 px
    det = Instances.from_crops((40, 40), [0], [0.9], [(2, 5)], [np.ones((10, 20), bool)])  # 200 px
    track = tracker_module._Track(track_inst, 0, track_inst.mask_box[0].tolist(), 0.0, (0.0, 0.0))
    looks = tracker_module._Looks(10**6)
    box = det.mask_box[0].tolist()
    # moved by (dx, dy) = (4, 3): rows 3..12, columns 4..13 against rows 5..14, columns 2..21: 8 x 10 px
    iou = tracker_module._shifted_iou(track, 4, 3, det, 0, box, looks)
    assert iou == pytest.approx(80 / (100 + 200 - 80))
    assert tracker_module._shifted_iou(track, 30, 0, det, 0, box, looks) == 0.0


@pytest.mark.parametrize("heading", ["right", "left", "down", "up"])
def test_a_track_that_leaves_the_frame_ends_once_predicted_wholly_outside_not_after_lost_s(
    heading: str,
) -> None:
    """A 30x24 block at 100 px/s leaves the frame; the track ends within two frames of its last sighting
    (where its motion puts it wholly outside), not lost_s (2 s) later."""
    tracker = Tracker(TrackerConfig(lost_s=2.0))
    vx, vy = {"right": (100, 0), "left": (-100, 0), "down": (0, 100), "up": (0, -100)}[heading]
    seen, ended = None, None
    for k in range(40):
        t = k / 10
        mask = block(W / 2 - 15 + vx * t, H / 2 - 12 + vy * t)
        tracker.update(frame_of([mask]), round(t * NS))
        if mask.any():
            seen = t
        if tracker.ended:
            ended = t
            break
    assert seen is not None
    assert ended is not None
    assert seen < ended <= seen + 0.2 + 1e-9  # not while it is in sight, nor lost_s after


def test_an_update_counts_the_pixels_its_mask_comparisons_looked_at_within_its_budget() -> None:
    tracker = Tracker()
    for k in range(3):
        tracker.update(frame_of([disk(100 + 3 * k, 100), disk(140 + 3 * k, 100)]), k * NS // 10)
    # each track's mask against its detection's, over their crops' overlap: at least the two disks' areas
    assert 2 * math.pi * 8**2 * 0.9 < tracker.looked <= LOOK_FRAMES * H * W
    tracker.update(Instances.empty((H, W)), 3 * NS // 10)
    assert tracker.looked == 0


def test_ids_count_up_from_one_without_gaps_whichever_way_a_track_gets_its_id_and_after_a_restart() -> None:
    tracker = Tracker(TrackerConfig(confirm_s=0.05))
    spots = [(40, 40), (120, 40), (200, 40), (40, 160), (120, 160)]

    def frame(k: int, t_s: float, shown: int) -> list[int]:
        out = tracker.update(frame_of([disk(*spots[i]) for i in range(shown)]), round(t_s * NS), k)
        assert out.track_id is not None
        return sorted(i for i in out.track_id.tolist() if i != UNCONFIRMED)

    assert frame(0, 0.0, 2) == [1, 2]  # the stream's first frame: ids at once
    assert frame(1, 0.1, 3) == [1, 2]  # a newcomer waits confirm_s for its id
    assert frame(2, 0.2, 3) == [1, 2, 3]
    assert frame(3, 0.3, 4) == [1, 2, 3]
    assert frame(4, 0.4, 4) == [1, 2, 3, 4]
    assert tracker.born == [(4, 0)]
    assert frame(0, 0.5, 2) == [5, 6]  # the source restarted (its index went back): new ids, none reused
    assert sorted(tid for tid, _, _ in tracker.ended) == [1, 2, 3, 4]


def test_a_track_unseen_for_lost_s_is_kept_and_one_unseen_for_longer_ends() -> None:
    tracker = Tracker(TrackerConfig(confirm_s=0, lost_s=2.0))
    tracker.update(frame_of([disk(100, 100)]), round(0.2 * NS), 0)
    tracker.update(Instances.empty((H, W)), round(2.2 * NS), 1)  # unseen for lost_s to the nanosecond
    assert tracker.ended == []
    assert tracker.active == 1
    tracker.update(Instances.empty((H, W)), round(2.3 * NS), 2)
    assert [tid for tid, _, _ in tracker.ended] == [1]


def test_scores_at_the_thresholds_count_as_at_or_above_them() -> None:
    cfg = TrackerConfig(confirm_s=0, high_score=0.6, low_score=0.3)
    tracker = Tracker(cfg)
    tracker.update(frame_of([disk(100, 100)], score=[0.6]), 0, 0)  # at high_score: starts a track
    assert tracker.born == [(1, 0)]
    out = tracker.update(frame_of([disk(102, 100)], score=[0.3]), NS // 10, 1)  # at low_score: continues it
    assert out.track_id is not None
    assert out.track_id.tolist() == [1]


def test_with_confirm_s_0_a_newcomer_gets_its_id_in_its_first_frame() -> None:
    tracker = Tracker(TrackerConfig(confirm_s=0))
    tracker.update(frame_of([disk(100, 100)]), 0, 0)
    out = tracker.update(frame_of([disk(100, 100), disk(200, 100)]), NS // 10, 1)
    assert out.track_id is not None
    assert sorted(out.track_id.tolist()) == [1, 2]


def test_a_frame_with_the_same_time_or_index_as_the_last_is_no_restart() -> None:
    tracker = Tracker(TrackerConfig(confirm_s=0))
    tracker.update(frame_of([disk(100, 100)]), NS, 5)
    tracker.update(frame_of([disk(101, 100)]), NS, 6)  # two frames captured at the same time
    tracker.update(frame_of([disk(102, 100)]), 2 * NS, 6)  # a source that gave one index twice
    out = tracker.update(frame_of([disk(103, 100)]), 3 * NS, 7)
    assert tracker.resets == 0
    assert out.track_id is not None
    assert out.track_id.tolist() == [1]


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 8),
    plan=st.lists(st.sampled_from(["keep", "gone", "one", "two"]), min_size=8, max_size=8),
)
def test_a_rebuilt_frame_keeps_the_order_and_says_where_each_detection_went(n: int, plan: list[str]) -> None:
    """Detections kept as they are, left out, or replaced by one or two instances: the rest keep their order,
    and ``at`` points at each detection's place (its replacement's first instance), -1 where it is gone."""
    inst = Instances.from_crops(
        (H, W), list(range(n)), [0.5] * n, [(10 * j, 0) for j in range(n)], [np.ones((4, 4), bool)] * n
    )
    sizes = {"one": 1, "two": 2}

    def replacement(j: int, k: int) -> Instances:
        crops = [np.ones((3, 3), bool)] * k
        return Instances.from_crops(
            (H, W), [100 + j] * k, [0.7] * k, [(10 * j, 50 + 10 * i) for i in range(k)], crops
        )

    new = {j: replacement(j, sizes[p]) for j, p in enumerate(plan[:n]) if p in sizes}
    gone = {j for j, p in enumerate(plan[:n]) if p == "gone"}
    out, at = tracker_module._rebuilt(inst, new, gone)
    expected: list[int] = []  # class ids in order: a detection's own, or its replacement's
    for j in range(n):
        if j in gone:
            assert at[j] == -1
            continue
        assert at[j] == len(expected)
        expected += [100 + j] * len(new[j]) if j in new else [j]
    assert out.class_id.tolist() == expected


def test_frames_without_truth_or_predictions_score_one_and_nothing_is_none() -> None:
    acc = TrackingAccumulator()
    assert acc.result() is None
    empty = Instances.empty((H, W)).with_track_ids(np.zeros(0, np.int64))
    for _ in range(3):
        acc.add(empty, empty)
    got = acc.result()
    assert got is not None
    assert (got.frames, got.idf1, got.mota, got.gt) == (3, 1.0, 1.0, 0)


def test_as_many_predictions_as_truth_with_a_new_id_halfway_score_idf1_one_half() -> None:
    acc = TrackingAccumulator()
    truth = frame_of([disk(100, 100)]).with_track_ids(np.asarray([1], np.int64))
    for pred_id in (1, 1, 2, 2):
        acc.add(truth.with_track_ids(np.asarray([pred_id], np.int64)), truth)
    got = acc.result()
    assert got is not None
    assert (got.idtp, got.idf1, got.id_switches, got.mota) == (2, 0.5, 1, 0.75)
