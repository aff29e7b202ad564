"""Instance matching and panoptic quality (PQ), computed on the compact mask crops of :class:`Instances`.

Conventions (those of COCO panoptic / panopticapi, without void handling):

- A prediction and a ground-truth instance can match only if they have the same class id.
- Mask IoU is computed on the pixels of the two crops' overlapping boxes; pairs whose boxes do not overlap
  have IoU 0 and are never looked at, so the cost grows with overlapping pairs, not with N x H x W.
- Matching is greedy by decreasing IoU, one-to-one, keeping pairs with IoU strictly above the threshold
  (panopticapi's ``iou > 0.5``); tracking also keeps those at it, as motmetrics pairs a distance
  ``1 - IoU`` of at most ``1 - threshold`` (``iou_matrix``: ``dist > max_iou`` is NaN, do-not-pair).
  At the usual 0.5 this is the unique matching PQ is defined on (two masks can each overlap a third by more
  than half only if they overlap each other).
- PQ, SQ and RQ are computed per class, then averaged over the classes present in the prediction or the
  truth (as panopticapi does); ``tp``, ``fp``, ``fn`` are totals over classes.
- Crowd regions, where given (``edgeseg eval`` gives COCO's ``iscrowd`` annotations), are handled as
  panopticapi does: see :func:`in_crowd`.
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass

import lap
import numpy as np
from numpy.typing import NDArray

from edgeseg.errors import InputError
from edgeseg.instances import Instances
from edgeseg.stats import counted

# same-class (IoU, prediction index, truth index) above a matching's threshold: see iou_pairs
Pairs = list[tuple[float, int, int]]


@dataclass(frozen=True)
class Matches:
    """One-to-one matches between predictions and truth.

    Attributes:
        pred: ``(M,)`` int64 indices into the predictions.
        truth: ``(M,)`` int64 indices into the truth.
        iou: ``(M,)`` float64 mask IoU of each pair.
        unmatched_pred: int64 indices of predictions without a match (false positives).
        unmatched_truth: int64 indices of truth instances without a match (false negatives).
    """

    pred: NDArray[np.int64]
    truth: NDArray[np.int64]
    iou: NDArray[np.float64]
    unmatched_pred: NDArray[np.int64]
    unmatched_truth: NDArray[np.int64]


@dataclass(frozen=True)
class PQResult:
    """Panoptic quality of predictions against truth.

    ``pq = sq * rq`` per class; the fields are class means (see the module docstring). ``mean_matched_iou``
    is the mean IoU over all matched pairs of all classes. When neither side holds any instance, the
    prediction is perfect: ``pq = sq = rq = mean_matched_iou = 1.0``. A class with matches has ``sq > 0``;
    a class without any has ``sq = 0``; ``mean_matched_iou`` is 0.0 when nothing matched.
    """

    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int
    mean_matched_iou: float


def mask_iou(a: Instances, i: int, b: Instances, j: int) -> float:
    """Mask IoU of instance ``a[i]`` and ``b[j]`` (same frame), from their crops."""
    ax0, ay0, ax1, ay1 = (int(v) for v in a.mask_box[i])
    bx0, by0, bx1, by1 = (int(v) for v in b.mask_box[j])
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    ma = a.masks[i][y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
    mb = b.masks[j][y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
    inter = int(np.count_nonzero(ma & mb))
    # the masks' own pixels, not ``area``: instances read back from polygons keep the area of the mask they
    # were written from, not that of the rasterized outline (an IoU of a mask with itself was 1.04)
    union = int(np.count_nonzero(a.masks[i])) + int(np.count_nonzero(b.masks[j])) - inter
    return inter / union if union else 0.0


def iou_pairs(pred: Instances, truth: Instances, iou_threshold: float = 0.5) -> Pairs:
    """Every same-class pair whose mask IoU is at or above the threshold, as ``(iou, pred index, truth
    index)``: the costly part of :func:`match_instances`, which several matchings of one frame can share (PQ
    takes those :func:`above` it, tracking all)."""
    if pred.image_shape != truth.image_shape:
        raise InputError(f"cannot match instances of frame {pred.image_shape} against {truth.image_shape}")
    if not 0.0 <= iou_threshold < 1.0:
        raise InputError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
    pairs: Pairs = []
    pb, tb = pred.mask_box.astype(np.int64), truth.mask_box.astype(np.int64)
    for i in range(len(pred)):
        # candidates: same class and overlapping boxes
        cand = np.flatnonzero(
            (truth.class_id == pred.class_id[i])
            & (tb[:, 0] < pb[i, 2])
            & (tb[:, 2] > pb[i, 0])
            & (tb[:, 1] < pb[i, 3])
            & (tb[:, 3] > pb[i, 1])
        )
        for cj in cand.tolist():
            iou = mask_iou(pred, i, truth, cj)
            if iou >= iou_threshold:
                pairs.append((iou, i, cj))
    return pairs


def above(pairs: Pairs, iou_threshold: float) -> Pairs:
    """The pairs whose IoU is strictly above the threshold: those PQ may match."""
    return [p for p in pairs if p[0] > iou_threshold]


def match_instances(pred: Instances, truth: Instances, iou_threshold: float = 0.5) -> Matches:
    """Class-aware one-to-one matching by mask IoU (greedy, highest first; IoU must exceed the threshold)."""
    return match_pairs(above(iou_pairs(pred, truth, iou_threshold), iou_threshold), len(pred), len(truth))


def match_pairs(pairs: Pairs, n_pred: int, n_truth: int) -> Matches:
    """The greedy one-to-one matching of ``n_pred`` predictions and ``n_truth`` truth instances over
    ``pairs`` (see :func:`iou_pairs`)."""
    pairs = sorted(pairs, key=lambda t: (-t[0], t[1], t[2]))
    used_p: set[int] = set()
    used_t: set[int] = set()
    mp: list[int] = []
    mt: list[int] = []
    mi: list[float] = []
    for iou, i, j in pairs:
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        mp.append(i)
        mt.append(j)
        mi.append(iou)
    return Matches(
        pred=np.asarray(mp, np.int64),
        truth=np.asarray(mt, np.int64),
        iou=np.asarray(mi, np.float64),
        unmatched_pred=np.asarray([i for i in range(n_pred) if i not in used_p], np.int64),
        unmatched_truth=np.asarray([j for j in range(n_truth) if j not in used_t], np.int64),
    )


def in_crowd(pred: Instances, crowd: Instances) -> NDArray[np.bool_]:
    """``(N,)`` which predictions lie more than half (of their pixels) in the crowd regions of their class:
    unmatched, panopticapi leaves them out of the false positives (a crowd region is one truth entry for a
    group of objects too close to label one by one, as COCO's ``iscrowd``; it is never matched nor missed)."""
    out = np.zeros(len(pred), bool)
    cb = crowd.mask_box.astype(np.int64)
    for i in range(len(pred)):
        x0, y0, x1, y1 = (int(v) for v in pred.mask_box[i])
        under = np.zeros(pred.masks[i].shape, bool)  # the crowd regions of its class under its crop
        for j in np.flatnonzero(crowd.class_id == pred.class_id[i]).tolist():
            a0, b0, a1, b1 = max(x0, cb[j, 0]), max(y0, cb[j, 1]), min(x1, cb[j, 2]), min(y1, cb[j, 3])
            if a1 > a0 and b1 > b0:
                under[b0 - y0 : b1 - y0, a0 - x0 : a1 - x0] |= crowd.masks[j][
                    b0 - cb[j, 1] : b1 - cb[j, 1], a0 - cb[j, 0] : a1 - cb[j, 0]
                ]
        out[i] = 2 * np.count_nonzero(under & pred.masks[i]) > np.count_nonzero(pred.masks[i])
    return out


def class_counts(pred: Instances, truth: Instances, m: Matches) -> dict[int, list[float]]:
    """Per class ``[tp, fp, fn, sum of matched IoU]`` of one matching (every class of either side present)."""
    counts: dict[int, list[float]] = {
        int(c): [0, 0, 0, 0.0] for c in np.union1d(pred.class_id, truth.class_id)
    }
    for i, iou in zip(m.pred.tolist(), m.iou.tolist(), strict=True):
        acc = counts[int(pred.class_id[i])]
        acc[0] += 1
        acc[3] += iou
    for i in m.unmatched_pred.tolist():
        counts[int(pred.class_id[i])][1] += 1
    for j in m.unmatched_truth.tolist():
        counts[int(truth.class_id[j])][2] += 1
    return counts


def class_mean_quality(counts: dict[int, list[float]]) -> tuple[float, float, float]:
    """``(pq, sq, rq)``: each class's figures from its ``[tp, fp, fn, iou_sum]``, averaged over the classes
    with any (as panopticapi: a class whose only predictions lay in crowd regions has none).

    No class at all (nothing predicted, nothing true) is a perfect result: ``(1.0, 1.0, 1.0)``.
    """
    seen = [c for c in counts.values() if c[0] + c[1] + c[2]]
    if not seen:
        return 1.0, 1.0, 1.0
    pqs, sqs, rqs = [], [], []
    for tp, fp, fn, iou_sum in seen:
        denom = tp + 0.5 * fp + 0.5 * fn
        sq = iou_sum / tp if tp else 0.0
        rq = tp / denom if denom else 0.0
        pqs.append(sq * rq)
        sqs.append(sq)
        rqs.append(rq)
    return float(np.mean(pqs)), float(np.mean(sqs)), float(np.mean(rqs))


def panoptic_quality(pred: Instances, truth: Instances, iou_threshold: float = 0.5) -> PQResult:
    """Panoptic quality of ``pred`` against ``truth`` (per class, then averaged; see the module docstring)."""
    m = match_instances(pred, truth, iou_threshold)
    counts = class_counts(pred, truth, m)
    pq, sq, rq = class_mean_quality(counts)
    return PQResult(
        pq=pq,
        sq=sq,
        rq=rq,
        tp=len(m.pred),
        fp=len(m.unmatched_pred),
        fn=len(m.unmatched_truth),
        mean_matched_iou=float(m.iou.mean()) if len(m.iou) else (1.0 if not counts else 0.0),
    )


@dataclass(frozen=True)
class TrackingScore:
    """Identity and CLEAR-MOT figures of tracked predictions against tracked truth over a sequence.

    ``idf1 = 2 idtp / (2 idtp + idfp + idfn)`` (Ristani et al. 2016): truth and predicted ids are paired
    one-to-one over the whole sequence to maximize the frames where a pair's masks overlap at the threshold
    or more (in a frame's matching or not). A frame's matching keeps each truth track's last predicted id
    while their masks still overlap so, and matches the rest by IoU (CLEAR MOT). ``id_switches`` counts the
    frames where a truth track is matched to another predicted id than the last one it was matched to, and
    ``mota = 1 - (fn + fp + id_switches) / gt``. These are motmetrics' figures, except that the rest are
    matched greedily (motmetrics solves an assignment: they can differ only where masks of one side overlap
    one another, or IoUs tie). A sequence without any truth or prediction scores 1.0; one with predictions but
    no truth has IDF1 0.0 and MOTA ``-inf``.
    """

    frames: int
    idf1: float
    idtp: int
    idfp: int
    idfn: int
    id_switches: int
    mota: float
    tp: int
    fp: int
    fn: int
    gt: int

    def line(self) -> str:
        return (
            f"tracking vs ground truth over {counted(self.frames, 'frame')}: IDF1 {self.idf1:.3f}, "
            f"{counted(self.id_switches, 'ID switch', 'ID switches')}, MOTA {self.mota:.3f}"
        )


class TrackingAccumulator:
    """Per-frame overlaps (class-aware mask IoU at or above the threshold, as :func:`iou_pairs`) and matches
    of tracked predictions to tracked truth, reduced to a :class:`TrackingScore` by :meth:`result`.

    Predictions without a published track (``track_id`` < 0, or none at all) are not tracker output and are
    left out. Thread-safe, like :class:`edgeseg.evaluate.PQAccumulator`.

    Memory stays bounded over a run of any length. A group of ids that matched one another (a truth track,
    the predicted ids it met, the other truth tracks those met) whose ids have all been absent for
    ``settle_after`` frames is settled: its share of the identity pairing is added to a total, and its tallies
    are dropped. This is exact while no id comes back after such an absence (a part that left the frame, a
    track the tracker gave up: 300 frames are 10 s at 30 fps, five times the tracker's default ``lost_s``);
    one that does is counted as a new id. ``None`` keeps every tally.
    """

    def __init__(self, iou_threshold: float = 0.5, settle_after: int | None = 300) -> None:
        if settle_after is not None and settle_after < 1:
            raise ValueError(f"settle_after must be >= 1 or None, got {settle_after}")
        self.iou_threshold = iou_threshold
        self.settle_after = settle_after
        self._lock = threading.Lock()
        self._frames = 0
        self._pairs: dict[tuple[int, int], int] = {}  # (truth id, predicted id) -> frames matched
        self._last: dict[int, int] = {}  # truth id -> predicted id it was last matched to
        # the ids of the pairs not yet settled -> the frame each was last present in
        self._seen: dict[tuple[int, int], int] = {}  # (0, truth id) or (1, predicted id) -> frame
        self._settled_idtp = 0
        self._truth_n = self._pred_n = self._switches = self._tp = self._fp = self._fn = 0

    def add(self, pred: Instances, truth: Instances, pairs: Pairs | None = None) -> None:
        """One frame. ``pairs``: :func:`iou_pairs` of all of ``pred`` at this threshold, where the caller has
        them (one frame's PQ takes the same)."""
        if truth.track_id is None:
            raise InputError("tracking accuracy needs truth with track ids")
        ids = pred.track_id if pred.track_id is not None else np.full(len(pred), -1, np.int64)
        tracked = ids >= 0
        shown = np.flatnonzero(tracked).tolist()
        if pairs is None:  # only the tracked predictions' overlaps
            pairs = iou_pairs(pred[tracked], truth, self.iou_threshold)
        else:
            at = {i: k for k, i in enumerate(shown)}  # a tracked prediction's index among the tracked ones
            pairs = [(iou, at[i], j) for iou, i, j in pairs if i in at]
        pids = ids[shown].tolist()
        tids = truth.track_id.tolist()
        with self._lock:
            self._frames += 1
            self._truth_n += len(tids)
            self._pred_n += len(pids)
            seen = self._seen
            for node in itertools.chain(((0, g) for g in tids), ((1, h) for h in pids)):
                if node in seen:
                    seen[node] = self._frames
            # identity counts every pair that overlaps in a frame, matched in it or not (Ristani et al., as
            # motmetrics and TrackEval count): a second prediction over a part hides no frame of the first
            for _, i, j in pairs:
                g, h = tids[j], pids[i]
                self._pairs[g, h] = self._pairs.get((g, h), 0) + 1
                seen[0, g] = seen[1, h] = self._frames
            # CLEAR MOT: a truth track keeps the predicted id it was last matched to while that pair still
            # overlaps; only the rest are matched by IoU (else a better-fitting second prediction over a part
            # counted as an ID switch)
            kept = match_pairs(
                [p for p in pairs if self._last.get(tids[p[2]]) == pids[p[1]]], len(pids), len(tids)
            )
            used_p, used_t = set(kept.pred.tolist()), set(kept.truth.tolist())
            rest = match_pairs(
                [p for p in pairs if p[1] not in used_p and p[2] not in used_t], len(pids), len(tids)
            )
            mp = np.concatenate((kept.pred, rest.pred)).tolist()
            mt = np.concatenate((kept.truth, rest.truth)).tolist()
            for i, j in zip(mp, mt, strict=True):
                g, h = tids[j], pids[i]
                if self._last.get(g, h) != h:
                    self._switches += 1
                self._last[g] = h
            self._tp += len(mp)
            self._fp += len(pids) - len(mp)
            self._fn += len(tids) - len(mp)
            # a third of the horizon apart: each settling looks at the groups of 1 1/3 horizons at most
            if self.settle_after is not None and self._frames % max(1, self.settle_after // 3) == 0:
                self._settle(self._frames - self.settle_after)

    def held(self) -> int:
        """How many tallies are held (pairs and ids): what settling keeps bounded."""
        with self._lock:
            return len(self._pairs) + len(self._last) + len(self._seen)

    def _settle(self, before: int) -> None:
        """Settle the groups whose ids were all last present at or before frame ``before``."""
        seen = self._seen
        for group in _groups(self._pairs):
            if all(seen[0, g] <= before and seen[1, h] <= before for g, h in group):
                self._settled_idtp += _group_pairing(self._pairs, group)
                for g, h in group:
                    del self._pairs[g, h]
                    self._last.pop(g, None)
                    seen.pop((0, g), None)
                    seen.pop((1, h), None)

    def result(self) -> TrackingScore | None:
        """The score so far; ``None`` before the first frame."""
        with self._lock:
            if not self._frames:
                return None
            idtp = self._settled_idtp + sum(_group_pairing(self._pairs, g) for g in _groups(self._pairs))
            n_truth, n_pred = self._truth_n, self._pred_n
            gt = self._tp + self._fn
            return TrackingScore(
                frames=self._frames,
                idf1=2 * idtp / (n_truth + n_pred) if n_truth + n_pred else 1.0,
                idtp=idtp,
                idfp=n_pred - idtp,
                idfn=n_truth - idtp,
                id_switches=self._switches,
                # no truth: 1 - fp / 0, so -inf with any false positive (as motmetrics), not a perfect 1.0
                mota=1.0 - (self._fn + self._fp + self._switches) / gt
                if gt
                else (-math.inf if self._fp else 1.0),
                tp=self._tp,
                fp=self._fp,
                fn=self._fn,
                gt=gt,
            )


def _groups(pairs: dict[tuple[int, int], int]) -> list[list[tuple[int, int]]]:
    """The pairs grouped by connected ids: a truth track and the predicted ids it met, and the other truth
    tracks those met. The identity pairing is solved per group, so a long run's thousands of ids never make
    one dense matrix."""
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def root(node: tuple[int, int]) -> tuple[int, int]:
        while parent.setdefault(node, node) != node:
            parent[node] = node = parent[parent[node]]
        return node

    for g, h in pairs:
        parent[root((0, g))] = root((1, h))
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for g, h in pairs:
        groups.setdefault(root((0, g)), []).append((g, h))
    return list(groups.values())


def _group_pairing(pairs: dict[tuple[int, int], int], group: list[tuple[int, int]]) -> int:
    """The largest total of ``pairs[g, h]`` over one-to-one pairings of the truth ids g and predicted ids h
    of one group."""
    rows = sorted({g for g, _ in group})
    cols = sorted({h for _, h in group})
    if len(rows) == 1 or len(cols) == 1:
        return max(pairs[p] for p in group)
    gain = np.zeros((len(rows), len(cols)))
    ri, ci = {g: k for k, g in enumerate(rows)}, {h: k for k, h in enumerate(cols)}
    for g, h in group:
        gain[ri[g], ci[h]] = pairs[g, h]
    _, x, _ = lap.lapjv(gain.max() - gain, extend_cost=True)
    return int(sum(gain[r, c] for r, c in enumerate(x.tolist()) if c >= 0))
