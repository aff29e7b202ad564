"""Multi-object tracking on masks: fills ``Instances.track_id`` frame by frame (the ``tracker:`` section).

BYTE-style association in three passes, each a linear assignment (``lap``) on ``1 - similarity``:

1. confirmed tracks (seen now or lost for less than ``lost_s``) against high-score detections;
2. the confirmed tracks left against low-score detections (an object whose score dipped keeps its id);
3. tentative tracks against the high-score detections left; what is still left starts tentative tracks.

Similarity is class-aware (other classes: 0) and mask based: each track's last mask is moved by its
constant-velocity prediction to the frame's capture time, and its IoU with a detection's mask is computed on
the crops' overlap only, for the pairs whose boxes overlap (box gate). Boxes of two objects passing each other
overlap; their masks do not, so they keep their ids. Where masks cannot overlap (a new object at 5 fps has
moved more than its size by the next frame), a centre-distance similarity (within ``max_distance`` box
sizes, capped at ``FALLBACK_WEIGHT``, below a mask IoU of half) is the fallback. A new track starts with the
median velocity of the confirmed tracks (a conveyor, a panning camera): the scene's motion is the best guess
for an object not yet seen to move. On the stream's second frame no track has been seen to move: the velocity
that brings the most tracks onto a detection of their class is taken as the scene's (a fast conveyor at 5 fps
moves each part most of its length, onto the place its neighbour had).

Every duration is in seconds of the frames' capture timestamps (``Frame.t_capture_ns``), so a scene keeps
its ids at 5, 10 or 30 fps, and an empty frame advances time like any other. A track gets an id once it
has been matched for ``confirm_s`` (earlier detections of it get ``-1``), except what the stream's first
frame (after a reset too) shows, which was there before the stream began and gets ids at once (as ByteTrack
activates its first frame's tracks); ids count up from 1 without gaps
and are never reused, not even after a reset. The tracker resets itself when the source restarts: the frame
index goes back, the capture time goes back, or more than ``reset_gap_s`` passes between two frames (a
reconnect; nothing tracked before can be matched after it), or the frame's size changes (a camera back
at another resolution: a track's pixels would mean another place). A track that ends (lost for ``lost_s``, or
predicted out of the frame) is deleted with all its state.

Touching objects that the segmentation merged into one detection keep their tracks: when one detection
holds the predicted masks of two or more confirmed tracks seen in the last frame (each at least
``SPLIT_COVER`` inside it) and its area is about theirs together, it is split between them, each pixel to
the nearest predicted mask (``split_merged``). ``update`` then returns more instances than it was given.
A detection that overlaps its track's predicted mask poorly, or is much larger than it, while holding part of
another confirmed track's (the two cut across, or merged and not split) keeps the track's id, but not its
shape: the track keeps its last good mask and motion and moves on as predicted, so the next good view of each
object finds its own track. The other way round, detections that are pieces of one confirmed track's object
(each mostly inside its predicted mask, none most of it, together about its area, none holding another
track's object) are joined into one instance (``join_fragments``); ``update`` then returns fewer instances.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import cv2
import lap
import numpy as np
from numpy.typing import NDArray

from edgeseg.events import Event, EventSequence
from edgeseg.fields import meta as _m
from edgeseg.instances import Instances
from edgeseg.logtally import LogTally
from edgeseg.validate import FieldError

if TYPE_CHECKING:
    from edgeseg.frame import Result

log = logging.getLogger(__name__)

UNCONFIRMED = -1  # the track_id of a detection that has no published track (yet)
# The centre-distance fallback stays below this similarity, so a real mask overlap of half or more wins.
FALLBACK_WEIGHT = 0.4
# Velocity is smoothed over about this long: steady against the jitter of 30 fps boxes, quick at 5 fps.
VELOCITY_TAU_S = 0.2
# Splitting a merged detection: each track's predicted mask must lie this much inside it, and its area must
# be within these ratios of the tracks' areas together (smaller: one object tracked twice; larger: the
# detection holds more than those tracks). Each piece keeps at least SPLIT_MIN_PIECE of its track's area.
SPLIT_COVER = 0.6
SPLIT_AREA_RATIO = (0.75, 1.3)
SPLIT_MIN_PIECE = 0.3
# Joining fragments: each lies at least FRAGMENT_INSIDE inside one confirmed track's predicted mask, none is
# more than FRAGMENT_MAX of its area (a view of most of the object is that object), and together they are
# SPLIT_AREA_RATIO of its area.
FRAGMENT_INSIDE = 0.7
FRAGMENT_MAX = 0.7
# A detection is a poor view of a confirmed track when their (predicted) mask IoU is under KEEP_SHAPE_BELOW or
# it is more than GROWN times the track's area, and it also holds SHARED_VIEW of another confirmed track's
# predicted mask: two touching objects merged or cut across by the segmentation. The track then keeps its
# last good shape and moves on as predicted.
KEEP_SHAPE_BELOW = 0.5
GROWN = 1.3
SHARED_VIEW = 0.1
# The scene's motion, guessed on the stream's second frame, must bring at least CONSENSUS_MIN tracks within
# CONSENSUS_TOLERANCE of their size from a detection.
CONSENSUS_MIN = 2
CONSENSUS_TOLERANCE = 0.25
CONSENSUS_TRACKS = 64  # the largest tracks the guess looks at
CONSENSUS_NEAREST = 3  # candidate moves per track: to its nearest detections of its class
CONSENSUS_FIT = 8  # a track fits a move when one of its this many nearest detections lies where it brings it
# Slack on confirm_s, so capture times rounded to the nanosecond confirm after a whole number of frames.
CONFIRM_SLACK_S = 1e-3
# An update compares masks (a track's predicted mask with a detection's, on their crops' overlap) for at
# most LOOK_FRAMES frames' pixels and at most LOOKS_MOST times: a comparison counts as a LOOKS_MOST-th of
# the budget at least (its calls' own cost, whatever the frame's size). Scenes of objects take a few
# comparisons per track: the demo model's conveyor 0.36 of a frame's pixels (median; 1.1 at most), YOLOv8n-seg
# on a street of pedestrians close to the camera 0.9 (3.3 at most). Nested rings of one class, every box over
# every other (198 at 640x480), took 189 ms an update where their split took 16-21 ms; 7-8 ms with the budget
# (``scripts/bench_tracking.py --sets hostile``). Past the budget a pair keeps the centre-distance
# similarity, and no merged detection is split, no fragments joined, no view judged poor; counted
# (``Tracker.unlooked``) and logged at most once a minute.
LOOK_FRAMES = 16.0
LOOKS_MOST = 600


@dataclass(frozen=True)
class TrackerConfig:
    """Tracking: ids across frames for each instance (``Instances.track_id``)."""

    enabled: bool = field(default=False, metadata=_m("Track instances across frames (fills track_id)."))
    high_score: float = field(
        default=0.6,
        metadata=_m("Detections at or above this score match first and start tracks.", ge=0, le=1),
    )
    low_score: float = field(
        default=0.1,
        metadata=_m(
            "Detections from this score up to high_score only continue tracks; below: ignored.", ge=0, le=1
        ),
    )
    # ByteTrack's first association takes a cost of up to match_thresh 0.8 (1 - IoU): an IoU of 0.2
    min_similarity: float = field(
        default=0.2, metadata=_m("Least mask similarity (0..1) for a high-score match.", gt=0, le=1)
    )
    min_similarity_low: float = field(
        default=0.3, metadata=_m("Least mask similarity (0..1) for a low-score match.", gt=0, le=1)
    )
    max_distance: float = field(
        default=2.0,
        metadata=_m(
            "Fallback when masks cannot overlap: a centre offset from the prediction of this many object "
            "sizes (square root of the box area) scores 0, none scores 0.4; a match needs min_similarity.",
            gt=0,
        ),
    )
    confirm_s: float = field(
        default=0.05, metadata=_m("Seconds a new track must be matched in a row before it gets an id.", ge=0)
    )
    lost_s: float = field(
        default=2.0, metadata=_m("Seconds a track unseen is kept to take its id back, then ends.", gt=0)
    )
    split_merged: bool = field(
        default=True,
        metadata=_m(
            "Split a detection that holds two or more confirmed tracks' predicted masks (touching objects "
            "segmented as one) between them."
        ),
    )
    join_fragments: bool = field(
        default=True,
        metadata=_m(
            "Join detections that are pieces of one confirmed track's object (one object segmented as "
            "several) into one instance."
        ),
    )
    reset_gap_s: float = field(
        default=5.0,
        metadata=_m("A capture-time gap longer than this is a source restart: every track ends.", gt=0),
    )

    def __post_init__(self) -> None:
        if self.low_score > self.high_score:
            raise FieldError("low_score", f"must be <= high_score ({self.high_score:g})", self.low_score)
        if self.reset_gap_s <= self.lost_s:
            raise FieldError("reset_gap_s", f"must be > lost_s ({self.lost_s:g})", self.reset_gap_s)


class _Track:
    """One object's state; deleted as a whole when the track ends."""

    __slots__ = ("area", "box", "carry", "class_id", "first_t", "id", "last_t", "mask", "velocity")

    def __init__(
        self, inst: Instances, i: int, box: list[int], t: float, velocity: tuple[float, float]
    ) -> None:
        self.class_id = int(inst.class_id[i])
        self.id = UNCONFIRMED
        self.first_t = t
        self.velocity = velocity  # pixels per second
        self.observe(inst, i, box, t)

    def observe(self, inst: Instances, i: int, box: list[int], t: float) -> None:
        """Detection ``i`` of ``inst`` (its ``mask_box`` row ``box``) is this object at time ``t``."""
        self.mask = inst.masks[i]
        self.box = box
        self.carry = (0.0, 0.0)  # sub-pixel motion a split piece's whole-pixel placement left out
        self.area = int(inst.area[i])
        self.last_t = t

    def offset(self, t: float) -> tuple[float, float]:
        """The predicted move of the mask from its last observation to ``t``, in pixels."""
        dt = t - self.last_t
        return (self.velocity[0] * dt + self.carry[0], self.velocity[1] * dt + self.carry[1])

    def coast(self, t: float) -> None:
        """Seen at ``t`` where its prediction puts it: mask, area and velocity kept."""
        ox, oy = self.offset(t)
        dx, dy = round(ox), round(oy)
        self.box = [self.box[0] + dx, self.box[1] + dy, self.box[2] + dx, self.box[3] + dy]
        self.carry = (ox - dx, oy - dy)
        self.last_t = t

    def predicted(self, t: float) -> tuple[float, float, float, float]:
        dx, dy = self.velocity[0] * (t - self.last_t), self.velocity[1] * (t - self.last_t)
        return (self.box[0] + dx, self.box[1] + dy, self.box[2] + dx, self.box[3] + dy)


class _Looks:
    """The mask comparisons an update may still make (pixels left of its budget) and how many it refused."""

    __slots__ = ("budget", "floor", "left", "refused")

    def __init__(self, pixels: int) -> None:
        self.budget = self.left = pixels
        self.floor = max(1, pixels // LOOKS_MOST)  # what a comparison costs at least
        self.refused = 0

    @property
    def spent(self) -> bool:
        """No comparison can be paid for any more."""
        return self.left < self.floor

    def refuse(self, count: int) -> None:
        """``count`` comparisons not asked for, the budget being spent."""
        self.refused += count

    def take(self, pixels: int) -> bool:
        """Whether a comparison over ``pixels`` is paid for (and paid)."""
        cost = max(pixels, self.floor)
        if cost > self.left:
            self.refused += 1
            return False
        self.left -= cost
        return True


class Tracker:
    """Assigns track ids to each frame's instances; see the module docstring for the rules.

    Not thread-safe: one tracker per stream, fed in capture order.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_t: float | None = None
        self._last_index: int | None = None
        self._last_shape: tuple[int, int] | None = None
        self.resets = 0  # automatic resets (source restarts) so far
        self.unlooked = 0  # mask comparisons refused by the updates' budgets so far (LOOK_FRAMES)
        self.looked = 0  # pixels the last update's mask comparisons were counted (see LOOKS_MOST)
        self._unlooked_note = LogTally(
            log,
            "tracker budget: %d mask comparisons left out (frames of many overlapping objects of one class,"
            " such as a model facing what it was not trained for): those pairs compared by their distance"
            " only, no detection split or joined there",
        )
        # confirmed tracks that got their id in the last update: (track id, class id); that ended in it:
        # (track id, class id, capture time it was last seen in, s)
        self.born: list[tuple[int, int]] = []
        self.ended: list[tuple[int, int, float]] = []
        self._ended_by_reset: list[tuple[int, int, float]] = []

    @property
    def active(self) -> int:
        """Tracks held now (tentative, confirmed and lost)."""
        return len(self._tracks)

    def confirmed(self) -> list[tuple[int, int, float]]:
        """The confirmed tracks held now (seen or lost for less than ``lost_s``): (track id, class id,
        capture time it was last seen in, s)."""
        return [(tr.id, tr.class_id, tr.last_t) for tr in self._tracks if tr.id != UNCONFIRMED]

    def take_ended(self) -> list[tuple[int, int, float]]:
        """The confirmed tracks ended by :meth:`reset` since the last update (no update will report them)."""
        ended, self._ended_by_reset = self._ended_by_reset, []
        return ended

    def reset(self) -> None:
        """Forget every track (ids already given out are not given again); the confirmed ones are reported
        in ``ended`` by the next update."""
        self._ended_by_reset.extend(self.confirmed())
        self._tracks = []
        self._last_t = None
        self._last_index = None
        self._last_shape = None

    def update(self, instances: Instances, t_capture_ns: int, index: int | None = None) -> Instances:
        """``instances`` of the frame captured at ``t_capture_ns`` (monotonic ns) with ``track_id`` set.

        ``index``: the frame's position in its source; when it goes back, the source has restarted.
        """
        t = t_capture_ns / 1e9
        if self._restarted(t, index, instances.image_shape):
            self.reset()
            self.resets += 1
        # what a stream's first frame shows was there before it began, not a flicker: ids at once
        first, previous_t = self._last_t is None, self._last_t
        self._last_t, self._last_index, self._last_shape = t, index, instances.image_shape
        cfg = self.config
        h, w = instances.image_shape
        looks = _Looks(int(LOOK_FRAMES * h * w))
        self.born, self.ended, self._ended_by_reset = [], self._ended_by_reset, []
        # tracks that ended: lost too long, or predicted wholly out of the frame
        alive = []
        for tr in self._tracks:
            if t - tr.last_t <= cfg.lost_s + CONFIRM_SLACK_S and _inside(tr.predicted(t), w, h):
                alive.append(tr)
            elif tr.id != UNCONFIRMED:
                self.ended.append((tr.id, tr.class_id, tr.last_t))
        self._tracks = alive
        if previous_t is not None and not any(tr.last_t > tr.first_t for tr in alive):
            self._guess_scene_motion(instances, t)
        pinned: dict[int, int] = {}  # track index -> its piece of a split detection
        if cfg.split_merged and previous_t is not None:
            instances, pinned = self._split_merged(instances, t, previous_t, looks)
        if cfg.join_fragments and previous_t is not None:
            instances, pinned = self._join_fragments(instances, pinned, t, previous_t, looks)
        boxes = instances.mask_box.tolist()
        ids = np.full(len(instances), UNCONFIRMED, np.int64)
        score = instances.score
        free = np.ones(len(instances), bool)
        free[list(pinned.values())] = False
        high = np.flatnonzero(free & (score >= cfg.high_score))
        low = np.flatnonzero(free & (score >= cfg.low_score) & (score < cfg.high_score))
        confirmed = [k for k, tr in enumerate(self._tracks) if tr.id != UNCONFIRMED and k not in pinned]
        tentative = [k for k, tr in enumerate(self._tracks) if tr.id == UNCONFIRMED]
        matched = dict(pinned)  # track index -> detection index
        similar: dict[int, float] = {}  # track index -> the similarity it was matched at
        assign = (instances, boxes, t, matched, similar, looks)
        left_tracks, left_high = self._assign(confirmed, high, cfg.min_similarity, *assign)
        self._assign(left_tracks, low, cfg.min_similarity_low, *assign)
        _, new = self._assign(tentative, left_high, cfg.min_similarity, *assign)
        # decided before any track moves on, so no track's verdict depends on which was updated first
        poor = self._poor_views(matched, similar, instances, t, looks)
        for k, j in matched.items():
            tr, b = self._tracks[k], boxes[j]
            dt = t - tr.last_t
            if k in pinned:
                # a piece's box is the split's guess, not a measurement of motion: the velocity is kept, so
                # one split cannot skew the next; and the piece was placed by the prediction rounded to whole
                # pixels: the rest is carried, or a long merge's pieces drift a fraction of a pixel a frame
                ox, oy = tr.offset(t)
                tr.observe(instances, j, b, t)
                tr.carry = (ox - round(ox), oy - round(oy))
                ids[j] = tr.id
                continue
            if k in poor:
                # a poor view of a known object (cut across, or half of a merge): its shape and motion are
                # kept and it moves on as predicted, so the next good view still finds the right track
                tr.coast(t)
                ids[j] = tr.id
                continue
            if dt > 0:
                # box centre displacement over dt; the first one sets the velocity, later ones smooth it
                vx = (b[0] + b[2] - tr.box[0] - tr.box[2]) / (2 * dt)
                vy = (b[1] + b[3] - tr.box[1] - tr.box[3]) / (2 * dt)
                a = 1.0 - math.exp(-dt / VELOCITY_TAU_S) if tr.last_t > tr.first_t else 1.0
                tr.velocity = (
                    tr.velocity[0] + a * (vx - tr.velocity[0]),
                    tr.velocity[1] + a * (vy - tr.velocity[1]),
                )
            tr.observe(instances, j, b, t)
            if tr.id == UNCONFIRMED and t - tr.first_t + CONFIRM_SLACK_S >= cfg.confirm_s:
                tr.id = self._next_id
                self._next_id += 1
                self.born.append((tr.id, tr.class_id))
            ids[j] = tr.id
        # a tentative track missed once ends: a flicker never gets an id
        kept = [tr for k, tr in enumerate(self._tracks) if k in matched or tr.id != UNCONFIRMED]
        prior = self._scene_velocity(matched)
        for j in new.tolist():
            tr = _Track(instances, j, boxes[j], t, prior)
            if cfg.confirm_s <= 0 or first:
                tr.id = self._next_id
                self._next_id += 1
                ids[j] = tr.id
                self.born.append((tr.id, tr.class_id))
            kept.append(tr)
        self._tracks = kept
        self.looked = looks.budget - looks.left
        self.unlooked += looks.refused
        self._unlooked_note.add(looks.refused)
        return instances.with_track_ids(ids)

    def _restarted(self, t: float, index: int | None, shape: tuple[int, int]) -> bool:
        if self._last_t is None:
            return False
        went_back = index is not None and self._last_index is not None and index < self._last_index
        # a frame of another size (a camera back at another resolution): the tracks' pixels mean other places
        resized = shape != self._last_shape
        return went_back or resized or t < self._last_t or t - self._last_t > self.config.reset_gap_s

    def _poor_views(
        self, matched: dict[int, int], similar: dict[int, float], inst: Instances, t: float, looks: _Looks
    ) -> set[int]:
        """The confirmed tracks, away from the frame's edge, whose detection overlaps their predicted mask
        poorly, or is much larger than it, and holds part of another confirmed track's too: two touching
        objects segmented as one, or cut across between them."""
        h, w = inst.image_shape
        areas = inst.area.tolist()
        # a similarity of KEEP_SHAPE_BELOW or more is a mask IoU that high (the fallback stays below it)
        candidates = [
            k
            for k, s in similar.items()
            if (s < KEEP_SHAPE_BELOW or areas[matched[k]] > GROWN * self._tracks[k].area)
            and self._tracks[k].id != UNCONFIRMED
            and not _at_edge(self._tracks[k].box, w, h)
        ]
        if not candidates:
            return set()
        boxes = np.asarray([tr.predicted(t) for tr in self._tracks], np.float64)
        poor = set()
        for k in candidates:
            tr, j = self._tracks[k], matched[k]
            ox, oy = tr.offset(t)
            db = inst.mask_box[j].tolist()
            iou = _shifted_iou(tr, round(ox), round(oy), inst, j, db, looks)
            if iou is None or not (0.0 < iou < KEEP_SHAPE_BELOW or inst.area[j] > GROWN * tr.area):
                continue
            if self._holds_another(tr, boxes, inst, j, t, looks):  # (unknown: not poor)
                poor.add(k)
        return poor

    def _holds_another(
        self, tr: _Track, boxes: NDArray[np.float64], inst: Instances, j: int, t: float, looks: _Looks
    ) -> bool | None:
        """Detection ``j`` holds ``SHARED_VIEW`` or more of the predicted mask of a confirmed track of
        ``tr``'s class other than ``tr`` (``boxes``: every track's predicted box, to look at near ones);
        None where the budget left a near one unseen and none seen holds it."""
        db = inst.mask_box[j].tolist()
        near = (boxes[:, 0] < db[2]) & (boxes[:, 2] > db[0]) & (boxes[:, 1] < db[3]) & (boxes[:, 3] > db[1])
        unseen = False
        for o in np.flatnonzero(near).tolist():
            other = self._tracks[o]
            if other is tr or other.id == UNCONFIRMED or other.class_id != tr.class_id:
                continue
            if looks.spent:
                looks.refuse(1)
                return None
            ox, oy = other.offset(t)
            shared = _shifted_overlap(other, round(ox), round(oy), inst, j, db, looks)
            if shared is None:
                unseen = True
            elif shared >= SHARED_VIEW * other.area:
                return True
        return None if unseen else False

    def _guess_scene_motion(self, inst: Instances, t: float) -> None:
        """No track has been seen to move yet (the stream's second frame): the velocity that brings the
        most tracks onto a detection of their class (within ``CONSENSUS_TOLERANCE`` of their size) is the
        scene's motion, and the tracks it brings there start with it. Without it, a conveyor's parts are
        predicted where they were, which is where the part behind them is now. The candidates are each
        track's moves to its ``CONSENSUS_NEAREST`` nearest detections, for the ``CONSENSUS_TRACKS`` largest
        tracks, and a track fits a move where one of its ``CONSENSUS_FIT`` nearest detections lies where the
        move brings it (the move to where it went is among its nearest, or it would not be a candidate):
        a cost bounded by those three, whatever the frame holds (against every detection, the second frame of
        300 took 104-112 ms; ``scripts/bench_tracking.py --sets hostile``, its worst update)."""
        tracks = [tr for tr in self._tracks if tr.last_t < t]  # a frame at the same time shows no motion
        tracks = sorted(tracks, key=lambda tr: -tr.area)[:CONSENSUS_TRACKS]
        if len(tracks) < CONSENSUS_MIN or not len(inst):
            return
        tb = np.asarray([tr.box for tr in tracks], np.float64)
        dt = np.asarray([t - tr.last_t for tr in tracks])[:, None]
        tc, dc = _centre(tb), _centre(inst.mask_box)
        size = np.sqrt(_box_area(tb))
        same = np.asarray([tr.class_id for tr in tracks])[:, None] == inst.class_id[None, :]
        gap = np.where(same, np.hypot(*(dc[None, :, :] - tc[:, None, :]).transpose(2, 0, 1)), np.inf)
        order = np.argsort(gap, axis=1)
        nearest = order[:, :CONSENSUS_NEAREST]
        rows = np.repeat(np.arange(len(tracks)), nearest.shape[1])
        cols = nearest.ravel()
        reach = gap[rows, cols] <= self.config.max_distance * size[rows]
        moves = (dc[cols[reach]] - tc[rows[reach]]) / dt[rows[reach]]  # px/s
        fit = order[:, :CONSENSUS_FIT]
        fit_at, fit_same = dc[fit], np.take_along_axis(same, fit, axis=1)
        best, best_support, best_fits = np.zeros(2), 0, np.zeros(len(tracks), bool)
        # most support; between equals, the slowest (standing still first)
        for v in sorted([np.zeros(2), *moves], key=lambda v: float(np.hypot(*v))):
            miss = np.hypot(*(fit_at - (tc + v * dt)[:, None, :]).transpose(2, 0, 1))
            fits = (fit_same & (miss <= CONSENSUS_TOLERANCE * size[:, None])).any(axis=1)
            if int(fits.sum()) > best_support:
                best, best_support, best_fits = v, int(fits.sum()), fits
        if best_support < CONSENSUS_MIN or not best.any():
            return
        for r in np.flatnonzero(best_fits).tolist():
            # each track starts with its own move to the detection the scene's motion brings it onto
            miss = np.where(same[r], np.hypot(*(dc - (tc[r] + best * dt[r])).T), np.inf)
            v = (dc[int(np.argmin(miss))] - tc[r]) / dt[r]
            tracks[r].velocity = (float(v[0]), float(v[1]))

    def _scene_velocity(self, matched: dict[int, int]) -> tuple[float, float]:
        moving = [self._tracks[k].velocity for k in matched if self._tracks[k].id != UNCONFIRMED]
        if not moving:
            return (0.0, 0.0)
        v = np.median(np.asarray(moving), axis=0)
        return (float(v[0]), float(v[1]))

    def _join_fragments(
        self, inst: Instances, pinned: dict[int, int], t: float, previous_t: float, looks: _Looks
    ) -> tuple[Instances, dict[int, int]]:
        """``inst`` with the detections that are fragments of one confirmed track's object (each lies at
        least ``FRAGMENT_INSIDE`` inside its predicted mask, none is most of it, and together they are about
        its area) joined into one instance, in place of the first of them; and ``pinned`` (track index ->
        its piece of a split detection) renumbered; a piece joined with its track's fragments stays pinned."""
        recent = [k for k, tr in enumerate(self._tracks) if tr.id != UNCONFIRMED and tr.last_t == previous_t]
        if not recent or len(inst) < 2:
            return inst, pinned
        db = inst.mask_box
        boxes = db.tolist()
        piece_of = {j: k for k, j in pinned.items()}
        tracks = [self._tracks[k] for k in recent]
        off = np.rint(np.asarray([tr.offset(t) for tr in tracks])).astype(np.int64)
        pb = np.asarray([tr.box for tr in tracks], np.int64) + np.tile(off, 2)
        area = np.asarray([tr.area for tr in tracks])
        # candidates: same class, boxes overlapping, and small enough to be a piece (most of the object
        # seen at once is that object); a track needs two
        near = (
            (np.asarray([tr.class_id for tr in tracks])[:, None] == inst.class_id[None, :])
            & (db[None, :, 0] < pb[:, None, 2])
            & (db[None, :, 2] > pb[:, None, 0])
            & (db[None, :, 1] < pb[:, None, 3])
            & (db[None, :, 3] > pb[:, None, 1])
            & (inst.area[None, :] <= FRAGMENT_MAX * area[:, None])
        )
        joined: dict[int, list[int]] = {}  # first fragment -> all of them
        taken: set[int] = set()
        predicted: NDArray[np.float64] | None = None  # every track's predicted box, once a piece needs it
        for r in np.flatnonzero(near.sum(axis=1) >= 2).tolist():
            if looks.spent:
                looks.refuse(1)  # (each track left is one join not looked at)
                continue
            k, tr = recent[r], tracks[r]
            ox, oy = int(off[r, 0]), int(off[r, 1])
            parts = [
                j
                for j in np.flatnonzero(near[r]).tolist()
                if j not in taken
                and piece_of.get(j, k) == k
                and (_shifted_overlap(tr, ox, oy, inst, j, boxes[j], looks) or 0)
                >= FRAGMENT_INSIDE * int(inst.area[j])
            ]
            if len(parts) < 2:
                continue
            # a part that holds much of another track's predicted mask is that object, not a fragment (one
            # the budget left unknown is not taken for a fragment either)
            if predicted is None:
                predicted = np.asarray([o.predicted(t) for o in self._tracks], np.float64)
            parts = [
                j
                for j in parts
                if j in piece_of or self._holds_another(tr, predicted, inst, j, t, looks) is False
            ]
            ratio = sum(int(inst.area[j]) for j in parts) / max(1, tr.area)
            if len(parts) >= 2 and SPLIT_AREA_RATIO[0] <= ratio <= SPLIT_AREA_RATIO[1]:
                joined[parts[0]] = parts
                taken.update(parts)
        if not joined:
            return inst, pinned
        out, at = _rebuilt(inst, {j: _union(inst, parts) for j, parts in joined.items()}, taken)
        first = {f: j for j, parts in joined.items() for f in parts}  # a fragment -> its union's place
        return out, {k: at[first.get(j, j)] for k, j in pinned.items()}

    def _split_merged(
        self, inst: Instances, t: float, previous_t: float, looks: _Looks
    ) -> tuple[Instances, dict[int, int]]:
        """``inst`` with each detection that merged confirmed tracks (see the module docstring) replaced,
        in place, by one piece per track; and which piece is whose (track index -> detection index)."""
        recent = [k for k, tr in enumerate(self._tracks) if tr.id != UNCONFIRMED and tr.last_t == previous_t]
        if len(recent) < 2 or not len(inst):
            return inst, {}
        tracks = [self._tracks[k] for k in recent]
        off = np.rint(np.asarray([tr.offset(t) for tr in tracks])).astype(np.int64)
        # candidates: the predicted box centre inside the detection's box, same class
        centre = _centre(np.asarray([tr.box for tr in tracks])) + off
        db = inst.mask_box
        inside = (
            (np.asarray([tr.class_id for tr in tracks])[:, None] == inst.class_id[None, :])
            & (centre[:, None, 0] >= db[None, :, 0])
            & (centre[:, None, 0] < db[None, :, 2])
            & (centre[:, None, 1] >= db[None, :, 1])
            & (centre[:, None, 1] < db[None, :, 3])
        )
        splits: dict[int, tuple[list[int], list[NDArray[np.bool_]]]] = {}
        for j in np.flatnonzero(inside.sum(axis=0) >= 2).tolist():
            if looks.spent:
                looks.refuse(1)  # (each detection left is one split not looked at)
                continue
            box = db[j].tolist()
            cover = {
                r: _shifted_overlap(tracks[r], int(off[r, 0]), int(off[r, 1]), inst, j, box, looks)
                for r in np.flatnonzero(inside[:, j]).tolist()
            }
            if None in cover.values():  # (not split unless every track it may hold is seen)
                continue
            held = [r for r, shared in cover.items() if (shared or 0) >= SPLIT_COVER * tracks[r].area]
            ratio = int(inst.area[j]) / max(1, sum(tracks[r].area for r in held))
            # (the split costs a distance transform of the detection's box per track)
            if (
                len(held) >= 2
                and SPLIT_AREA_RATIO[0] <= ratio <= SPLIT_AREA_RATIO[1]
                and looks.take(len(held) * inst.masks[j].size)
            ):
                moved = [(tracks[r], int(off[r, 0]), int(off[r, 1])) for r in held]
                pieces = _split_by_nearest(inst.masks[j], box, moved)
                if pieces is not None:
                    splits[j] = ([recent[r] for r in held], pieces)
        if not splits:
            return inst, {}
        new = {
            j: Instances.from_crops(
                inst.image_shape,
                [int(inst.class_id[j])] * len(pieces),
                [float(inst.score[j])] * len(pieces),
                [(int(db[j, 0]), int(db[j, 1]))] * len(pieces),
                pieces,
            )
            for j, (_, pieces) in splits.items()
        }
        out, at = _rebuilt(inst, new, set())
        return out, {k: at[j] + n for j, (owners, _) in splits.items() for n, k in enumerate(owners)}

    def _assign(
        self,
        tracks: list[int],
        dets: NDArray[np.intp],
        min_similarity: float,
        inst: Instances,
        boxes: list[list[int]],
        t: float,
        matched: dict[int, int],
        similar: dict[int, float],
        looks: _Looks,
    ) -> tuple[list[int], NDArray[np.intp]]:
        """Match ``tracks`` to ``dets`` into ``matched`` (and the pairs' similarity into ``similar``);
        returns the tracks and detections left."""
        if not tracks or not len(dets):
            return tracks, dets
        sim = self._similarity([self._tracks[k] for k in tracks], dets, inst, boxes, t, looks)
        cost, limit = 1.0 - sim, 1.0 - min_similarity
        # only the tracks and detections with a pair within the limit go to lap: with a cost limit it solves
        # a square of (tracks + detections) a side, and a storm of short-lived detections (rain, a model
        # facing what it was not trained for) leaves thousands of lost tracks for lost_s: 100 MB an update
        # at 3,000 of them. Those left out could match nothing anyway.
        within = cost <= limit
        rows, cols = np.flatnonzero(within.any(axis=1)), np.flatnonzero(within.any(axis=0))
        x = np.full(len(tracks), -1, np.intp)
        if len(rows):
            _, picked, _ = lap.lapjv(cost[np.ix_(rows, cols)], extend_cost=True, cost_limit=limit)
            x[rows] = np.where(picked >= 0, cols[picked], -1)
        for r, c in enumerate(x.tolist()):
            if c >= 0:
                matched[tracks[r]] = int(dets[c])
                similar[tracks[r]] = float(sim[r, c])
        left_tracks = [k for r, k in enumerate(tracks) if x[r] < 0]
        taken = set(x[x >= 0].tolist())
        return left_tracks, np.asarray([d for c, d in enumerate(dets.tolist()) if c not in taken], np.intp)

    def _similarity(
        self,
        tracks: list[_Track],
        dets: NDArray[np.intp],
        inst: Instances,
        boxes: list[list[int]],
        t: float,
        looks: _Looks,
    ) -> NDArray[np.float64]:
        """``(len(tracks), len(dets))`` similarity: predicted mask IoU, else (or where ``looks`` pays for no
        comparison) the capped distance fallback."""
        shifts = np.asarray([tr.velocity for tr in tracks], np.float64) * np.asarray(
            [[t - tr.last_t] for tr in tracks]
        )
        pb = np.asarray([tr.box for tr in tracks], np.float64) + np.tile(shifts, 2)
        db = inst.mask_box[dets].astype(np.float64)
        same = np.asarray([tr.class_id for tr in tracks])[:, None] == inst.class_id[dets][None, :]
        # distance fallback, in object sizes: a box's, not the mask's, so a thin rod's is its length
        size = np.sqrt(np.maximum(_box_area(pb)[:, None], _box_area(db)[None, :]))
        cp, cd = _centre(pb), _centre(db)
        # (the coordinates' differences apart: one (n, m, 2) array, transposed, took longer at 300x300)
        dist = np.hypot(cp[:, None, 0] - cd[None, :, 0], cp[:, None, 1] - cd[None, :, 1])
        sim = FALLBACK_WEIGHT * np.clip(1.0 - dist / (self.config.max_distance * size), 0.0, None)
        # mask IoU where the predicted box overlaps the detection's box (the gate)
        ix = np.minimum(pb[:, None, 2], db[None, :, 2]) - np.maximum(pb[:, None, 0], db[None, :, 0])
        iy = np.minimum(pb[:, None, 3], db[None, :, 3]) - np.maximum(pb[:, None, 1], db[None, :, 1])
        gated = same & (ix > 0) & (iy > 0)
        off = np.rint(shifts).astype(np.int64)
        pairs = list(zip(*np.nonzero(gated), strict=True))
        for n, (r, c) in enumerate(pairs):
            if looks.spent:
                looks.refuse(len(pairs) - n)
                break
            tr, j = tracks[r], int(dets[c])
            iou = _shifted_iou(tr, int(off[r, 0]), int(off[r, 1]), inst, j, boxes[j], looks)
            if iou is not None and iou > sim[r, c]:
                sim[r, c] = iou
        sim[~same] = 0.0
        out: NDArray[np.float64] = sim
        return out


def _box_area(box: NDArray[np.float64]) -> NDArray[np.float64]:
    area: NDArray[np.float64] = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    return area


def _inside(box: tuple[float, float, float, float], w: int, h: int) -> bool:
    return box[2] > 0 and box[3] > 0 and box[0] < w and box[1] < h


def _centre(box: NDArray[np.floating] | NDArray[np.integer]) -> NDArray[np.float64]:
    b = np.asarray(box, np.float64)
    return np.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2], axis=-1)


def _shifted_overlap(
    tr: _Track, dx: int, dy: int, inst: Instances, j: int, box: list[int], looks: _Looks
) -> int | None:
    """Pixels the track's mask moved by ``(dx, dy)`` shares with detection ``j``'s mask (at ``box``),
    counted on their crops' overlap; None where ``looks`` does not pay for it."""
    ax0, ay0 = tr.box[0] + dx, tr.box[1] + dy
    am = tr.mask
    bx0, by0, bx1, by1 = box
    x0, y0 = max(ax0, bx0), max(ay0, by0)
    x1, y1 = min(ax0 + am.shape[1], bx1), min(ay0 + am.shape[0], by1)
    if x1 <= x0 or y1 <= y0:
        return 0
    if not looks.take((x1 - x0) * (y1 - y0)):
        return None
    bm = inst.masks[j]
    return int(
        np.count_nonzero(
            am[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0] & bm[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
        )
    )


def _shifted_iou(
    tr: _Track, dx: int, dy: int, inst: Instances, j: int, box: list[int], looks: _Looks
) -> float | None:
    """IoU of the track's mask moved by ``(dx, dy)`` with detection ``j``'s mask (at ``box``); None where
    ``looks`` does not pay for it."""
    inter = _shifted_overlap(tr, dx, dy, inst, j, box, looks)
    if inter is None:
        return None
    union = tr.area + int(inst.area[j]) - inter
    return inter / union if union else 0.0


def _at_edge(box: list[int], w: int, h: int) -> bool:
    """The box touches the frame's border: part of the object may be outside, so its shape may change."""
    return box[0] <= 0 or box[1] <= 0 or box[2] >= w or box[3] >= h


def _rebuilt(inst: Instances, new: dict[int, Instances], gone: set[int]) -> tuple[Instances, list[int]]:
    """``inst`` with detection ``j`` replaced by the instances ``new[j]`` and those in ``gone`` left out, in
    order, and where each detection (the first of its replacement) now is (-1: gone). The detections kept
    as they are go in runs, one selection each: a frame of hundreds of detections is rebuilt in a few
    calls, not one per detection."""
    parts: list[Instances] = []
    at = [-1] * len(inst)
    run: list[int] = []
    n = 0
    for j in range(len(inst)):
        if j in gone and j not in new:
            continue
        at[j] = n
        if j in new:
            if run:
                parts.append(inst[np.asarray(run)])
                run = []
            parts.append(new[j])
            n += len(new[j])
        else:
            run.append(j)
            n += 1
    if run or not parts:  # (every detection gone: an empty frame of the same size)
        parts.append(inst[np.asarray(run, np.int64)])
    return Instances.concat(parts), at


def _union(inst: Instances, rows: list[int]) -> Instances:
    """Detections ``rows`` of ``inst`` as one instance: their masks' union, the first one's class, the
    area-weighted mean of their scores."""
    b = inst.mask_box[rows]
    x0, y0, x1, y1 = int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max())
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    for j, (bx, by, _, _) in zip(rows, b.tolist(), strict=True):
        m = inst.masks[j]
        mask[by - y0 : by - y0 + m.shape[0], bx - x0 : bx - x0 + m.shape[1]] |= m
    area = inst.area[rows].astype(np.float64)
    score = float((inst.score[rows] * area).sum() / area.sum())
    return Instances.from_crops(inst.image_shape, [int(inst.class_id[rows[0]])], [score], [(x0, y0)], [mask])


def _split_by_nearest(
    mask: NDArray[np.bool_], box: list[int], held: list[tuple[_Track, int, int]]
) -> list[NDArray[np.bool_]] | None:
    """``mask`` (at ``box``) cut into one piece per track: each pixel goes to the nearest of the tracks'
    predicted masks (pixels two of them claim seed neither). None when a piece would be too small."""
    h, w = mask.shape
    seeds = np.zeros((len(held), h, w), bool)
    for k, (tr, dx, dy) in enumerate(held):
        ax0, ay0 = tr.box[0] + dx - box[0], tr.box[1] + dy - box[1]
        y0, x0 = max(0, ay0), max(0, ax0)
        y1, x1 = min(h, ay0 + tr.mask.shape[0]), min(w, ax0 + tr.mask.shape[1])
        seeds[k, y0:y1, x0:x1] = tr.mask[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
    seeds &= mask & (seeds.sum(axis=0) == 1)
    dist = np.stack(
        [cv2.distanceTransform(np.where(s, 0, 255).astype(np.uint8), cv2.DIST_L2, 3) for s in seeds]
    )
    nearest = dist.argmin(axis=0)
    pieces = [mask & (nearest == k) for k in range(len(held))]
    if any(
        np.count_nonzero(p) < SPLIT_MIN_PIECE * tr.area for p, (tr, _, _) in zip(pieces, held, strict=True)
    ):
        return None
    return pieces


class TrackerStage:
    """The tracker as a pipeline stream stage (:class:`edgeseg.pipeline.StreamStage`): fills ``track_id``
    and adds a ``new`` event for each track confirmed and an ``end`` event for each that ended (all still
    held end at :meth:`close`)."""

    name = "track"

    def __init__(self, config: TrackerConfig, sequence: EventSequence | None = None) -> None:
        self.tracker = Tracker(config)
        self.sequence = sequence or EventSequence()
        self._born_at: dict[int, int] = {}  # confirmed track id -> capture ns of its first confirmed frame
        self._last: tuple[int, float] = (0, 0.0)  # the last frame's capture ns and wall time

    def process(self, result: Result) -> Result:
        frame = result.frame
        resets, before = self.tracker.resets, self._last
        instances = self.tracker.update(result.instances, frame.t_capture_ns, frame.index)
        self._last = (frame.t_capture_ns, frame.wall_time)
        # tracks ended by a source restart end at the old stream's last frame, not at the new one's time
        ended = self._events(
            self.tracker.ended, [], *(before if self.tracker.resets > resets else self._last)
        )
        born = self._events([], self.tracker.born, *self._last)
        return replace(result, instances=instances, events=(*result.events, *ended, *born))

    def _events(
        self, ended: list[tuple[int, int, float]], born: list[tuple[int, int]], t_ns: int, wall: float
    ) -> list[Event]:
        out = []
        for tid, cid, seen_t in ended:
            # its life: to the last frame it was seen in, not through the lost_s unseen before it ended
            start = self._born_at.pop(tid, t_ns) / 1e9
            seq = self.sequence.take()
            out.append(Event("end", seq, tid, cid, t_ns, wall, duration_s=max(0.0, seen_t - start)))
        for tid, cid in born:
            self._born_at[tid] = t_ns
            out.append(Event("new", self.sequence.take(), tid, cid, t_ns, wall))
        return out

    def reset(self) -> None:
        self.tracker.reset()

    def close(self) -> list[Event]:
        """``end`` for every track still held (and any ended by a reset), at the last frame's time."""
        self.tracker.reset()
        t_ns, wall = self._last
        return self._events(self.tracker.take_ended(), [], t_ns, wall)
