"""Semantic -> instances on hostile maps (noise, speckle, thousands of components): the split stays a
partition, and what its budget leaves whole is counted. (The time bound itself is measured side by side
with modlib and a connected-components pass by scripts/bench_postprocess.py, not asserted here.)"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scenes import BACKGROUND, argmax_class_map

from edgeseg import semantic
from edgeseg.semantic import SemanticParams, explain_split, semantic_to_instances
from edgeseg.semantic.components import hole_count
from edgeseg.semantic.labelling import classes_of, label
from edgeseg.semantic.relief import nearest_with_distance
from edgeseg.synthetic import between_parts

KINDS = ("noise", "blobs", "tiny", "ragged", "uniform")


def _hostile(kind: str, seed: int, h: int, w: int) -> NDArray[np.uint8]:
    """Small versions of the bench's hostile maps (tests/scenes.py builds them at 480x640)."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return np.array([0, 1, 2, BACKGROUND], np.uint8)[rng.integers(0, 4, (h, w))]
    if kind == "blobs":
        fields = [cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3) for _ in range(3)]
        return np.argmax(np.stack(fields), axis=0).astype(np.uint8)
    if kind == "tiny":
        cm = np.full((h, w), BACKGROUND, np.uint8)
        side = int(rng.integers(1, 6))
        for y in range(0, h - side, side + 2):
            for x in range(0, w - side, side + 2):
                cm[y : y + side, x : x + side] = rng.integers(0, 3)
        return cm
    if kind == "ragged":
        return np.where(rng.random((h, w)) < rng.uniform(0.55, 0.85), 1, BACKGROUND).astype(np.uint8)
    return np.full((h, w), int(rng.integers(0, 3)), np.uint8)


def _dumbbells(n: int) -> NDArray[np.uint8]:
    """``n`` separate dumbbells of one class (two 6x6 squares joined by a bridge): each one is looked at by
    the split (it is not convex, and the opening keeps its squares)."""
    per_row = 20
    rows = -(-n // per_row)
    cm = np.full((rows * 9 + 3, per_row * 18 + 3), BACKGROUND, np.uint8)
    for k in range(n):  # off the frame's edge, where the split would mirror them
        y, x = 3 + 9 * (k // per_row), 3 + 18 * (k % per_row)
        cm[y : y + 6, x : x + 6] = cm[y : y + 6, x + 9 : x + 15] = 0
        cm[y + 2 : y + 4, x + 6 : x + 9] = 0
    return cm


def test_components_beyond_the_split_budget_are_kept_whole_and_counted() -> None:
    extra = 30
    cm = _dumbbells(semantic._SPLIT_COMPONENTS + extra)
    view = explain_split(cm)
    assert view.unsplit == extra
    assert len(view.instances) == 2 * semantic._SPLIT_COMPONENTS + extra  # split: two squares each
    assert view.instances.area.sum() == np.count_nonzero(cm != BACKGROUND)
    assert explain_split(_dumbbells(semantic._SPLIT_COMPONENTS)).unsplit == 0


def test_the_view_draws_components_the_split_skips_within_a_budget_of_its_own_and_counts_the_rest() -> None:
    n = 132  # (past 64 candidates the split's budget shrinks: it looks at 32 * 64 // 132 of them)
    cm = _dumbbells(n)
    view = explain_split(cm)
    looked = semantic._SPLIT_COMPONENTS * semantic._SCENE_CANDIDATES // n
    assert view.unsplit == n - looked
    assert view.unshown == n - looked - semantic._VIEW_COMPONENTS
    one = cv2.connectedComponents((cm != BACKGROUND).view(np.uint8), connectivity=8)[1]
    for drawn in (view.relief > 0, view.markers > 0):
        assert len(np.unique(one[drawn])) == looked + semantic._VIEW_COMPONENTS
    assert view.instances.to_dict() == semantic_to_instances(cm).to_dict()  # the view's budget splits nothing
    assert explain_split(_dumbbells(semantic._SPLIT_COMPONENTS + 30)).unshown == 0


def _diagonal_dumbbells(n: int, side: int = 80, step: int = 12) -> NDArray[np.uint8]:
    """``n`` dumbbells of one class side by side, each two 6x6 squares joined by a diagonal bridge: each
    one's box is nearly ``side`` squared and the boxes overlap, so together they cover the map many times."""
    cm = np.full((side + 6, side + 6 + step * (n - 1)), BACKGROUND, np.uint8)
    for k in range(n):
        x = 3 + step * k
        cm[3:9, x : x + 6] = cm[side - 3 : side + 3, x + side - 6 : x + side] = 0
        cv2.line(cm, (x + 5, 8), (x + side - 6, side - 3), 0, 2)
    return cm


def test_components_beyond_the_split_budget_of_box_pixels_are_kept_whole_and_counted() -> None:
    n = 8
    cm = _diagonal_dumbbells(n)
    stats = cv2.connectedComponentsWithStats((cm == 0).view(np.uint8), connectivity=8)[2][1:]
    assert len(stats) == n
    box = int(stats[0, cv2.CC_STAT_WIDTH] * stats[0, cv2.CC_STAT_HEIGHT])
    assert (stats[:, cv2.CC_STAT_WIDTH] * stats[:, cv2.CC_STAT_HEIGHT] == box).all()
    split = int(semantic._SPLIT_FRAMES * cm.size) // box
    assert 0 < split < n
    view = explain_split(cm)
    assert view.unsplit == n - split
    assert len(view.instances) == n + split  # the ones split: two halves each
    assert view.instances.area.sum() == np.count_nonzero(cm != BACKGROUND)


def _bridges(cm: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """A contact map on the bridges of :func:`_dumbbells`' dumbbells: each one two cores, its squares."""
    touching = np.zeros(cm.shape, bool)
    part = (cm != BACKGROUND).view(np.uint8)
    squares = cv2.morphologyEx(part, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)).view(bool)
    touching[part.view(bool) & ~squares] = True
    return touching


def test_components_beyond_the_contact_map_split_budget_are_kept_whole_and_counted() -> None:
    extra = 30  # (32 + 30 candidates: under the count beyond which the budget shrinks)
    cm = _dumbbells(semantic._SPLIT_COMPONENTS + extra)
    view = explain_split(cm, touching=_bridges(cm))
    assert view.unsplit == extra
    assert len(view.instances) == 2 * semantic._SPLIT_COMPONENTS + extra  # split: two squares each
    assert view.instances.area.sum() == np.count_nonzero(cm != BACKGROUND)
    cm = _dumbbells(semantic._SPLIT_COMPONENTS)
    view = explain_split(cm, touching=_bridges(cm))
    assert view.unsplit == 0
    assert len(view.instances) == 2 * semantic._SPLIT_COMPONENTS


def test_a_component_across_the_whole_map_is_still_split_at_its_contact_map() -> None:
    # (rods that cross from corner to corner: at the relief's budget of box pixels it would be kept whole)
    cm = np.full((120, 160), BACKGROUND, np.uint8)
    labels = np.zeros(cm.shape, np.int32)
    cv2.line(labels, (0, 0), (159, 119), 1, 9)
    cv2.line(labels, (0, 119), (159, 0), 2, 9)
    cm[labels > 0] = 0
    view = explain_split(cm, SemanticParams(rods=True), touching=between_parts(labels, 2))
    assert view.unsplit == 0
    assert len(view.instances) == 2


CONTACT_KINDS = ("absent", "noise", "blobs", "specks", "none", "all")


def _contact(kind: str, seed: int, h: int, w: int) -> NDArray[np.bool_] | None:
    """Contact maps no model should draw, for the split at a contact map (tests/scenes.py's, small); None
    for the split by distance reliefs."""
    rng = np.random.default_rng(seed)
    if kind == "absent":
        return None
    if kind == "noise":
        return rng.random((h, w)) < 0.5
    if kind == "blobs":
        field = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3)
        return field > np.median(field)
    if kind == "specks":
        return rng.random((h, w)) < 0.05
    return np.full((h, w), kind == "all")


@settings(max_examples=240, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    contact=st.sampled_from(CONTACT_KINDS),
    seed=st.integers(0, 2**31 - 1),
    size=st.tuples(st.integers(8, 96), st.integers(8, 96)),
    size_threshold=st.sampled_from([0, 20]),
    rods=st.booleans(),
)
def test_hostile_maps_split_into_disjoint_instances_inside_one_component_of_their_class(
    kind: str, contact: str, seed: int, size: tuple[int, int], size_threshold: int, rods: bool
) -> None:
    # by distance reliefs, or at a contact map of noise, blobs, specks, none or all
    cm = _hostile(kind, seed, *size)
    touching = _contact(contact, seed, *size)
    params = SemanticParams(size_threshold=size_threshold, rods=rods, max_instances=100_000)  # no cap here
    inst = semantic_to_instances(cm, params, touching=touching)
    cover = np.zeros(size, np.int32)
    for c, m, area in zip(inst.class_id, inst.dense_masks(), inst.area, strict=True):
        assert (cm[m] == c).all(), "an instance holds only pixels of its class"
        comps = cv2.connectedComponents((cm == c).view(np.uint8), connectivity=8)[1]
        assert len(np.unique(comps[m])) == 1, "an instance lies in one component of its class"
        assert area == np.count_nonzero(m) >= size_threshold
        cover += m
    assert (cover <= 1).all(), "instances never overlap"
    if size_threshold == 0:  # nothing may be dropped: every pixel of a class is in one instance
        assert ((cover == 1) == (cm != BACKGROUND)).all()
    view = explain_split(cm, params, touching=touching)
    assert view.instances.class_id.tolist() == inst.class_id.tolist()
    assert all((a == b).all() for a, b in zip(view.instances.masks, inst.masks, strict=True))


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    channels=st.integers(2, 24),
    sigma=st.sampled_from([0.0, 1.5, 4.0]),
    size=st.tuples(st.integers(8, 80), st.integers(8, 80)),
)
def test_hostile_logits_split_into_instances_that_partition_their_argmax(
    seed: int, channels: int, sigma: float, size: tuple[int, int]
) -> None:
    # logits of noise or blurred noise over up to 24 channels, channel 0 the background: the instances are
    # those of the argmax's class map, and each scores its pixels' mean winning probability
    rng = np.random.default_rng(seed)
    planes = [rng.normal(0, 1, size).astype(np.float32) for _ in range(channels)]
    if sigma:
        planes = [cv2.GaussianBlur(p, (0, 0), sigma) * 10 for p in planes]
    logits = np.stack(planes)
    cm = argmax_class_map(logits)
    params = SemanticParams(size_threshold=0, max_instances=100_000)
    inst = semantic_to_instances(logits, params, background=0, logits=True)
    from_map = semantic_to_instances(cm, params)
    assert inst.class_id.tolist() == from_map.class_id.tolist()
    assert all((a == b).all() for a, b in zip(inst.masks, from_map.masks, strict=True))
    cover = np.zeros(size, np.int32)
    for m in inst.dense_masks():
        cover += m
    assert ((cover == 1) == (cm != BACKGROUND)).all()
    wide = logits.astype(np.float64)
    wins = 1 / np.exp(wide - wide.max(axis=0)).sum(axis=0)
    assert inst.score == pytest.approx([wins[m].mean() for m in inst.dense_masks()], rel=1e-5)


def test_unsplit_components_are_logged_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(semantic, "_unsplit_note", semantic._unsplit_tally())
    cm = _dumbbells(semantic._SPLIT_COMPONENTS + 5)
    with caplog.at_level(logging.WARNING, logger="edgeseg.semantic"):
        for _ in range(3):
            semantic_to_instances(cm)
    notes = [r for r in caplog.records if "kept whole" in r.getMessage()]
    assert len(notes) == 1
    assert "5 components kept whole unsplit and 0 instances beyond max_instances dropped, in 1 maps" in (
        notes[0].getMessage()
    )


@pytest.fixture
def opencv_without_pool() -> Iterator[None]:
    """OpenCV's calls on the calling thread, as the edgeseg command runs them; its pool back afterwards."""
    pool = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(pool)


@pytest.mark.usefixtures("opencv_without_pool")
def test_speckled_classes_labelled_side_by_side_give_the_instances_labelled_one_after_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cm = _hostile("noise", 3, 120, 160)
    cm[:, :40] = 7  # and a class that is not speckled
    monkeypatch.setattr("edgeseg.sidework.helpers", lambda: 1)
    side_by_side = classes_of(cm, [0, 1, 2, 7], None)
    assert [found.class_id for found in side_by_side] == [0, 1, 2, 7]
    assert side_by_side[3].labels is None  # (traced)
    for found in side_by_side[:3]:
        assert found.labels is not None
        assert found.mask is not None
        one = label(found.mask)
        assert np.array_equal(found.labels.image, one.image)
        assert np.array_equal(found.labels.stats, one.stats)
    params = SemanticParams(size_threshold=4, max_instances=80)
    together = semantic_to_instances(cm, params)
    monkeypatch.setattr("edgeseg.sidework.helpers", lambda: 0)  # one core: in turn
    alone = semantic_to_instances(cm, params)
    assert len(together) == len(alone) == 80
    for a, b in zip(together.masks, alone.masks, strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(together.mask_box, alone.mask_box)
    assert np.array_equal(together.class_id, alone.class_id)


def test_a_map_of_noise_keeps_its_max_instances_largest_components_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    cm = _hostile("noise", 5, 120, 160)
    every = semantic_to_instances(cm, SemanticParams(size_threshold=4, max_instances=100_000))
    assert len(every) > 60
    view = explain_split(cm, SemanticParams(size_threshold=4, max_instances=50))
    kept = view.instances
    assert len(kept) == 50
    assert view.dropped == len(every) - 50
    # noise components are never split: the kept ones are the 50 largest, each exactly as it was
    assert kept.area.min() >= np.sort(every.area)[::-1][50]
    whole = {
        (int(c), *map(int, b), m.tobytes())
        for c, b, m in zip(every.class_id, every.mask_box, every.masks, strict=True)
    }
    assert all(
        (int(c), *map(int, b), m.tobytes()) in whole
        for c, b, m in zip(kept.class_id, kept.mask_box, kept.masks, strict=True)
    )
    monkeypatch.setattr(semantic, "_unsplit_note", semantic._unsplit_tally())
    with caplog.at_level(logging.WARNING, logger="edgeseg.semantic"):
        semantic_to_instances(cm, SemanticParams(size_threshold=4, max_instances=50))
    assert f"{len(every) - 50} instances beyond max_instances dropped" in caplog.text


def test_among_equal_specks_of_several_classes_the_earliest_are_kept_and_the_rest_counted() -> None:
    # 2x2 specks of three classes in rows (class by row), all of one size: the cut has only ties to break
    cm = np.full((120, 160), BACKGROUND, np.uint8)
    for y in range(0, 120, 4):
        for x in range(0, 160, 4):
            cm[y : y + 2, x : x + 2] = (y // 4) % 3
    total = 30 * 40
    view = explain_split(cm, SemanticParams(size_threshold=4, max_instances=25))
    kept = view.instances
    assert len(kept) == 25
    assert view.dropped == total - 25
    # ties go to the earlier: class 0 first, then the scan order (row by row)
    assert (kept.class_id == 0).all()
    firsts = sorted((int(y), int(x)) for x, y in kept.mask_box[:, :2])
    assert firsts == [(y, x) for y in range(0, 120, 12) for x in range(0, 160, 4)][:25]


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**31 - 1),
    size=st.tuples(st.integers(8, 72), st.integers(8, 72)),
    cap=st.integers(1, 12),
)
def test_no_map_gives_more_than_max_instances_and_they_still_partition_their_pixels(
    kind: str, seed: int, size: tuple[int, int], cap: int
) -> None:
    cm = _hostile(kind, seed, *size)
    view = explain_split(cm, SemanticParams(size_threshold=0, max_instances=cap))
    inst = view.instances
    assert len(inst) <= cap
    cover = np.zeros(size, np.int32)
    for c, m in zip(inst.class_id, inst.dense_masks(), strict=True):
        assert (cm[m] == c).all()
        cover += m
    assert (cover <= 1).all()
    if view.dropped == 0:  # nothing left out: every pixel of a class is in one instance
        assert ((cover == 1) == (cm != BACKGROUND)).all()


def test_speckle_that_the_opening_erases_stays_one_instance_per_component() -> None:
    # no 5x5 block survives the opening, so no component has a relief to split: each is one instance
    rng = np.random.default_rng(3)
    speckle = np.where(rng.random((60, 80)) < 0.45, 0, BACKGROUND).astype(np.uint8)
    inst = semantic_to_instances(speckle, SemanticParams(size_threshold=0))
    n, _ = cv2.connectedComponents((speckle == 0).view(np.uint8), connectivity=8)
    assert len(inst) == n - 1


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    density=st.floats(0.3, 0.95),
)
def test_the_hole_count_from_2x2_patterns_equals_the_enclosed_background_regions(
    seed: int, size: tuple[int, int], density: float
) -> None:
    rng = np.random.default_rng(seed)
    n, labels = cv2.connectedComponents((rng.random(size) < density).view(np.uint8), connectivity=8)
    if n < 2:
        return
    tight = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    # labelled: the background regions (4-connected) that do not reach the crop's frame
    around = cv2.copyMakeBorder((~tight).view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
    holes = cv2.connectedComponents(around, connectivity=4)[0] - 2  # less the component and the outside
    assert hole_count(tight) == holes


@given(
    seed=st.integers(0, 2**31 - 1),
    size=st.tuples(st.integers(1, 60), st.integers(1, 60)),
    density=st.floats(0.01, 0.4),
)
def test_each_pixel_takes_the_marker_of_its_nearest_marker_pixel_as_opencv_labels_regions(
    seed: int, size: tuple[int, int], density: float
) -> None:
    # nearest_with_distance reads OpenCV's per-pixel labels as the on pixels numbered in raster order; the
    # reference labels the on pixels' connected regions instead (each lies in one marker)
    rng = np.random.default_rng(seed)
    count, markers = cv2.connectedComponents((rng.random(size) < density).view(np.uint8), connectivity=8)
    markers = np.asarray(markers, np.int32)
    on = (markers > 0) & (rng.random(size) < 0.7)
    if not on.any():
        return
    d_ref, regions = cv2.distanceTransformWithLabels(
        (~on).view(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_CCOMP
    )
    lut = np.zeros(int(regions.max()) + 1, np.int32)
    lut[regions[on]] = markers[on]
    d, near = nearest_with_distance(on, markers)
    assert np.array_equal(d, d_ref)
    assert np.array_equal(near, lut[regions])
    assert set(np.unique(near)) <= set(range(1, count))


def test_a_speckled_component_is_kept_whole_without_a_split_and_counted() -> None:
    # solid blocks, large enough to hold markers, joined by a froth of hundreds of holes: no object's shape
    rng = np.random.default_rng(4)
    cm = np.where(rng.random((90, 120)) < 0.8, 0, BACKGROUND).astype(np.uint8)
    cm[10:40, 10:40] = cm[50:80, 70:100] = 0
    n, labels = cv2.connectedComponents((cm == 0).view(np.uint8), connectivity=8)
    big = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    view = explain_split(cm, SemanticParams(size_threshold=0))
    assert view.unsplit == 1
    assert any(np.array_equal(m, big) for m in view.instances.dense_masks())
    assert len(view.instances) == n - 1


def test_a_map_of_hundreds_of_split_candidates_gets_a_smaller_budget_and_counts_the_rest() -> None:
    n = 4 * semantic._SCENE_CANDIDATES
    frame = 480 * 640
    budget, pixels = semantic._split_budget(n, frame)
    assert 0 < budget < semantic._SPLIT_COMPONENTS
    assert 0 < pixels < semantic._SPLIT_FRAMES * frame
    assert semantic._split_budget(semantic._SCENE_CANDIDATES, frame) == (
        semantic._SPLIT_COMPONENTS,
        int(semantic._SPLIT_FRAMES * frame),
    )
    view = explain_split(_dumbbells(n))
    assert view.unsplit == n - budget
    assert len(view.instances) == n + budget  # the ones split: two squares each
