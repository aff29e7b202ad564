"""Instance matching and panoptic quality."""

from __future__ import annotations

import contextlib
import io
import math
import tracemalloc

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeseg import Instances, evaluate
from edgeseg.errors import InputError
from edgeseg.evaluate import AccuracySink, PQAccumulator
from edgeseg.frame import Frame, Result, StageTimes
from edgeseg.metrics import TrackingAccumulator, mask_iou, match_instances, panoptic_quality


def _boxes(shape: tuple[int, int], rects: list[tuple[int, int, int, int]], classes: list[int]) -> Instances:
    lab = np.zeros(shape, np.int32)
    for k, (x0, y0, x1, y1) in enumerate(rects, 1):
        lab[y0:y1, x0:x1] = k
    return Instances.from_label_image(lab, classes)


def test_identical_instances_score_perfect_quality() -> None:
    inst = _boxes((50, 80), [(0, 0, 10, 10), (20, 5, 40, 30)], [1, 2])
    q = panoptic_quality(inst, inst)
    assert (q.pq, q.sq, q.rq, q.tp, q.fp, q.fn, q.mean_matched_iou) == (1.0, 1.0, 1.0, 2, 0, 0, 1.0)


def test_neither_side_holding_instances_is_perfect() -> None:
    e = Instances.empty((10, 10))
    assert panoptic_quality(e, e).pq == 1.0


def test_a_shifted_mask_matches_with_its_iou_and_quality_is_per_class_mean() -> None:
    truth = _boxes((40, 40), [(0, 0, 10, 10), (20, 20, 30, 30)], [0, 1])
    pred = _boxes((40, 40), [(0, 0, 10, 8), (0, 30, 5, 35)], [0, 1])  # class 1: a miss and a false positive
    q = panoptic_quality(pred, truth)
    assert (q.tp, q.fp, q.fn) == (1, 1, 1)
    # class 0: sq = 0.8, rq = 1 -> pq 0.8; class 1: pq 0 -> mean 0.4
    assert q.pq == pytest.approx(0.4)
    assert q.sq == pytest.approx(0.4)
    assert q.rq == pytest.approx(0.5)
    assert q.mean_matched_iou == pytest.approx(0.8)


def test_quality_counts_a_false_positive_and_a_miss_as_half_a_match_each_per_class() -> None:
    truth = _boxes(
        (60, 60),
        [(0, 0, 10, 10), (20, 0, 30, 10), (0, 20, 10, 30), (20, 20, 30, 30), (40, 20, 50, 30)],
        [0, 0, 1, 1, 1],
    )
    pred = _boxes((60, 60), [(0, 0, 10, 8), (20, 0, 30, 6), (40, 0, 45, 5), (0, 20, 10, 30)], [0, 0, 0, 1])
    q = panoptic_quality(pred, truth)
    assert (q.tp, q.fp, q.fn) == (3, 1, 2)
    # class 0: IoUs 0.8 and 0.6, one false positive: sq 0.7, rq 2 / 2.5 = 0.8, pq 0.56
    # class 1: one exact match, two misses: sq 1, rq 1 / 2 = 0.5, pq 0.5
    assert q.pq == pytest.approx((0.56 + 0.5) / 2)
    assert q.sq == pytest.approx((0.7 + 1.0) / 2)
    assert q.rq == pytest.approx((0.8 + 0.5) / 2)
    assert q.mean_matched_iou == pytest.approx((0.8 + 0.6 + 1.0) / 3)


def test_instances_of_different_classes_never_match() -> None:
    truth = _boxes((20, 20), [(0, 0, 10, 10)], [0])
    pred = _boxes((20, 20), [(0, 0, 10, 10)], [1])
    m = match_instances(pred, truth)
    assert len(m.pred) == 0
    assert m.unmatched_pred.tolist() == [0]
    assert m.unmatched_truth.tolist() == [0]


def test_iou_at_the_threshold_does_not_match() -> None:
    truth = _boxes((20, 20), [(0, 0, 10, 10)], [0])
    pred = _boxes((20, 20), [(0, 0, 10, 5)], [0])  # IoU exactly 0.5
    assert len(match_instances(pred, truth).pred) == 0


def test_mismatched_frames_and_thresholds_are_rejected() -> None:
    a, b = Instances.empty((10, 10)), Instances.empty((10, 11))
    with pytest.raises(InputError, match="frame"):
        match_instances(a, b)
    with pytest.raises(InputError, match="iou_threshold"):
        match_instances(a, a, iou_threshold=1.0)
    with pytest.raises(InputError, match="iou_threshold"):
        match_instances(a, a, iou_threshold=-0.1)
    truth = _boxes((20, 20), [(0, 0, 10, 10)], [0])
    assert len(match_instances(_boxes((20, 20), [(0, 0, 1, 1)], [0]), truth, iou_threshold=0.0).pred) == 1


rect = st.tuples(st.integers(0, 30), st.integers(0, 20), st.integers(1, 20), st.integers(1, 20))


@settings(max_examples=60, deadline=None)
@given(rect, rect)
def test_crop_iou_equals_dense_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> None:
    shape = (40, 50)
    ia = _boxes(shape, [(a[0], a[1], a[0] + a[2], a[1] + a[3])], [0])
    ib = _boxes(shape, [(b[0], b[1], b[0] + b[2], b[1] + b[3])], [0])
    da, db = ia.dense_masks()[0], ib.dense_masks()[0]
    dense = np.count_nonzero(da & db) / np.count_nonzero(da | db)
    assert mask_iou(ia, 0, ib, 0) == pytest.approx(dense)


def _crops(
    shape: tuple[int, int], rects: list[tuple[int, int, int, int]], classes: list[int], ids: list[int]
) -> Instances:
    """Instances of filled rectangles that may overlap one another, each with its track id."""
    return Instances.from_crops(
        shape,
        classes,
        np.ones(len(rects), np.float32),
        [(x, y) for x, y, _, _ in rects],
        [np.ones((h, w), bool) for _, _, w, h in rects],
        track_id=np.asarray(ids, np.int64),
    )


frame_rects = st.lists(st.tuples(rect, st.integers(0, 1), st.integers(-1, 3)), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(frame_rects, frame_rects), min_size=1, max_size=4))
def test_the_accuracy_sink_scores_as_each_accumulator_alone_with_the_overlaps_found_once(
    frames: list[tuple[list[tuple[tuple[int, int, int, int], int, int]], ...]],
) -> None:
    """One set of mask overlaps serves both matchings: PQ over every prediction, tracking over the tracked
    ones only (track id >= 0), even where predictions overlap and two could claim one truth."""
    shape = (40, 50)
    sink, pq, tracking = AccuracySink(), PQAccumulator(), TrackingAccumulator()
    for preds, truths in frames:
        pred = _crops(shape, [r for r, _, _ in preds], [c for _, c, _ in preds], [t for _, _, t in preds])
        truth = _crops(shape, [r for r, _, _ in truths], [c for _, c, _ in truths], list(range(len(truths))))
        sink.send(
            Result(Frame(0, np.zeros((*shape, 3), np.uint8), 0, 0.0, truth=truth), pred, StageTimes(), 0)
        )
        pq.add(pred, truth)
        assert pred.track_id is not None
        tracking.add(pred[pred.track_id >= 0], truth)
    assert sink.pq.result() == pq.result()
    assert sink.tracking.result() == tracking.result()


def test_a_second_prediction_over_a_tracked_part_neither_switches_its_id_nor_hides_its_identity() -> None:
    """CLEAR MOT keeps a truth track's last predicted id while that pair still overlaps, and IDF1 counts every
    frame where a pair overlaps: a better-fitting second prediction (another id) over the part is a false
    positive, not an ID switch. Reference (motmetrics 1.4.0, ``MOTAccumulator.update`` with the distance
    ``1 - IoU`` of the pairs above 0.5, NaN elsewhere; ``mm.metrics.create().compute``): idf1 0.75, idtp 3,
    num_switches 0, mota 1/3, 2 false positives, 0 misses."""
    shape = (20, 20)
    truth = _crops(shape, [(0, 0, 10, 10)], [0], [7])
    acc = TrackingAccumulator()
    acc.add(_crops(shape, [(0, 0, 10, 10)], [0], [1]), truth)
    for _ in range(2):  # id 1 still overlaps (IoU 0.6), id 2 overlaps more (IoU 0.8)
        acc.add(_crops(shape, [(0, 0, 10, 6), (0, 0, 10, 8)], [0, 0], [1, 2]), truth)
    got = acc.result()
    assert got is not None
    assert (got.idtp, got.id_switches, got.tp, got.fp, got.fn) == (3, 0, 3, 2, 0)
    assert got.idf1 == pytest.approx(0.75)
    assert got.mota == pytest.approx(1 / 3)


def test_a_track_whose_iou_is_exactly_the_threshold_is_matched_though_pq_leaves_it() -> None:
    """Reference (motmetrics 1.4.0: three frames of ``update([7], [3], iou_matrix([[0, 0, 4, 4]],
    [[0, 0, 2, 4]], max_iou=0.5))``, a distance of 0.5, which ``iou_matrix`` keeps as ``dist > max_iou`` is
    NaN; ``compute``): idf1 1.0, mota 1.0, idtp 3, no switch, miss or false positive. panopticapi matches
    only ``iou > 0.5``: PQ 0 with one false positive and one miss. Both were counted as no match."""
    shape = (10, 10)
    truth = _crops(shape, [(0, 0, 4, 4)], [0], [7])
    pred = _crops(shape, [(0, 0, 2, 4)], [0], [3])  # the left half: IoU 8 / 16
    assert mask_iou(pred, 0, truth, 0) == 0.5
    sink = AccuracySink()
    for _ in range(3):
        sink.send(
            Result(Frame(0, np.zeros((*shape, 3), np.uint8), 0, 0.0, truth=truth), pred, StageTimes(), 0)
        )
    got = sink.tracking.result()
    assert got is not None
    assert (got.idf1, got.mota, got.idtp, got.id_switches) == (1.0, 1.0, 3, 0)
    assert (got.tp, got.fp, got.fn) == (3, 0, 0)
    pq = sink.pq.result()
    assert pq is not None
    assert (pq.pq, pq.tp, pq.fp, pq.fn) == (0.0, 0, 3, 3)
    assert panoptic_quality(pred, truth).tp == 0


def test_a_prediction_lying_in_a_crowd_region_of_its_class_is_no_false_positive() -> None:
    """As panopticapi (``pq_compute_single_core``: an unmatched prediction more than half in VOID or the crowd
    region of its class is left out, and ``pq_average`` skips a class with tp + fp + fn == 0): class 0 matched
    exactly, class 1 predicted only inside a crowd region, class 2 more than half outside one. Reference, by
    that code on these masks: tp 1, fp 1, fn 0, PQ = SQ = RQ = (1 + 0) / 2 over classes 0 and 2."""
    shape = (40, 40)
    truth = _boxes(shape, [(0, 0, 10, 10)], [0])
    crowd = _boxes(shape, [(20, 0, 40, 20), (0, 20, 10, 30)], [1, 2])
    pred = _boxes(shape, [(0, 0, 10, 10), (22, 2, 30, 10), (0, 25, 10, 40)], [0, 1, 2])
    acc = PQAccumulator()
    acc.add(pred, truth, crowd=crowd)
    got = acc.result()
    assert got is not None
    assert (got.tp, got.fp, got.fn) == (1, 1, 0)
    assert (got.pq, got.sq, got.rq) == (0.5, 0.5, 0.5)


def test_the_iou_of_instances_read_back_from_polygons_is_that_of_their_masks() -> None:
    """A mask read back from its polygon is the rasterized outline, while its ``area`` stays that of the mask
    it was written from (the JSON document round-trips). Reference: pycocotools ``mask.iou`` of the two dense
    masks, RLE-encoded (``iscrowd`` 0): 0.93763920 against the original, 1.0 against itself."""
    lab = np.zeros((60, 60), np.int32)
    cv2.circle(lab, (30, 30), 12, 1, -1)
    inst = Instances.from_label_image(lab, [0])
    back = Instances.from_json(inst.to_json("polygon"))
    assert mask_iou(back, 0, back, 0) == 1.0
    assert mask_iou(back, 0, inst, 0) == pytest.approx(0.93763920, abs=1e-8)
    assert panoptic_quality(back, inst).sq == pytest.approx(0.93763920, abs=1e-8)


def test_tracks_on_frames_without_truth_score_no_perfect_mota() -> None:
    """Reference (motmetrics 1.4.0, three frames of ``update([], [3], zeros((0, 1)))``, then ``compute``):
    idf1 0.0, mota -inf, 3 false positives. MOTA was 1.0 (``MOTA 1.000``) as if the tracker were perfect."""
    acc = TrackingAccumulator()
    truth = _crops((20, 20), [], [], [])
    for _ in range(3):
        acc.add(_crops((20, 20), [(0, 0, 5, 5)], [0], [3]), truth)
    got = acc.result()
    assert got is not None
    assert (got.idf1, got.mota, got.fp, got.gt) == (0.0, -math.inf, 3, 0)


def test_eval_reads_an_images_annotations_in_memory_by_the_frame_not_by_their_number() -> None:
    # (each annotation's full-frame mask from pycocotools' annToMask was held until all were trimmed: 200
    # people in a crowd photo of 1920 x 1080 held 400 MB)
    coco_module = pytest.importorskip("pycocotools.coco")
    h, w = 480, 640
    squares = [(20 + 30 * (k % 20), 20 + 40 * (k // 20)) for k in range(200)]
    coco = coco_module.COCO()
    coco.dataset = {
        "images": [{"id": 1, "file_name": "x.jpg", "width": w, "height": h}],
        "categories": [{"id": 3, "name": "person"}],
        "annotations": [
            {"id": k, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 100,
             "segmentation": [[x, y, x + 10, y, x + 10, y + 10, x, y + 10]]}
            for k, (x, y) in enumerate(squares)
        ],
    }  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    tracemalloc.start()
    try:
        truth = evaluate._truth(coco, coco.getAnnIds(imgIds=[1]), {3: 0}, (h, w))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * h * w, f"{peak / (h * w):.0f} frames"
    assert truth.mask_box[:3].tolist() == [[20, 20, 30, 30], [50, 20, 60, 30], [80, 20, 90, 30]]
    assert truth.area.tolist() == [100] * 200
