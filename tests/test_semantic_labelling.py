"""The labelling of a map's classes: one pass for all of them gives each class the components, areas, boxes
and opened pixels a pass over its own mask gives, and the split chooses it for maps of many busy classes."""

from __future__ import annotations

from unittest import mock

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from edgeseg import sidework
from edgeseg.instances import Instances
from edgeseg.semantic import SemanticParams, explain_split, labelling, semantic_to_instances
from edgeseg.semantic.labelling import classes_of, label, label_map

KERNEL = np.ones((3, 3), np.uint8)


@st.composite
def class_maps(draw: st.DrawFn) -> NDArray[np.generic]:
    """Small maps of 1-6 classes: noise, or noise scaled up into blocks (corners where two classes cross)."""
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    classes = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cm = rng.integers(0, classes, (h, w)).astype(np.uint8)
    scale = draw(st.integers(1, 3))
    cm = np.repeat(np.repeat(cm, scale, axis=0), scale, axis=1)
    return cm.astype(np.uint16) * 1000 if draw(st.booleans()) else cm


def _same_as_a_pass_per_class(cm: NDArray[np.generic]) -> None:
    every = label_map(cm, KERNEL)
    assert every.cored is not None
    for c in np.unique(cm).tolist():
        mask = (cm == c).view(np.uint8)
        n, own, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
        ids = every[c].ids
        assert ids is not None
        assert len(ids) == n - 1
        on = mask.view(bool)
        # each component of the mask is one label of the map's pass, and each of those one component
        pairs = np.unique(np.stack([own[on], every.image[on]], axis=1), axis=0)
        assert len(pairs) == n - 1
        assert sorted(pairs[:, 1].tolist()) == sorted(ids.tolist())
        assert np.array_equal(every.stats[pairs[:, 1]], stats[pairs[:, 0]])  # boxes and areas
        opened = np.bincount(own[cv2.erode(mask, KERNEL, iterations=2).view(bool)], minlength=n) > 0
        assert np.array_equal(every.cored[pairs[:, 1]], opened[pairs[:, 0]])


@settings(max_examples=150, deadline=None)
@given(class_maps())
def test_one_pass_over_the_map_gives_each_class_the_components_of_a_pass_over_its_mask(
    cm: NDArray[np.generic],
) -> None:
    _same_as_a_pass_per_class(cm)


@settings(max_examples=150, deadline=None)
@given(class_maps(), st.integers(1, 3))
def test_a_map_labelled_in_bands_side_by_side_gives_the_labels_of_one_grid_in_their_order(
    cm: NDArray[np.generic], helpers: int
) -> None:
    whole = label_map(cm, KERNEL)
    with (
        mock.patch.object(labelling, "SIDE_PIXELS", 1),
        mock.patch.object(sidework, "helpers", return_value=helpers),
        mock.patch.object(cv2, "getNumThreads", return_value=1),
    ):
        _same_as_a_pass_per_class(cm)
        bands = label_map(cm, KERNEL)
    # one label for one label, in the same order (of their first pixels: what breaks ties of area)
    pairs = np.unique(np.stack([whole.image.ravel(), bands.image.ravel()], axis=1), axis=0)
    assert len(pairs) == len(np.unique(whole.image))
    assert np.array_equal(np.argsort(pairs[:, 1]), np.arange(len(pairs)))
    assert np.array_equal(whole.stats[pairs[:, 0]], bands.stats[pairs[:, 1]])


@settings(max_examples=150, deadline=None)
@given(class_maps(), st.integers(0, 5))
def test_a_mask_has_the_same_components_whichever_algorithm_labels_it(
    cm: NDArray[np.generic], c: int
) -> None:
    mask = (cm == cm.flat[c % cm.size]).view(np.uint8)
    fast, default = label(mask, speckled=False), label(mask, speckled=True)
    want = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    for got in (fast, default):
        assert np.array_equal(got.image, want[1])
        assert np.array_equal(got.stats, want[2])


def test_a_checkerboard_joins_each_class_across_every_corner() -> None:
    cm = (np.indices((9, 11)).sum(axis=0) % 2).astype(np.uint8)
    every = label_map(cm)
    assert [len(ids) for ids in (every[0].ids, every[1].ids) if ids is not None] == [1, 1]
    _same_as_a_pass_per_class(cm)


def _blobs(classes: int, sigma: float, seed: int = 0, h: int = 160, w: int = 200) -> NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    fields = [cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), sigma) for _ in range(classes)]
    return np.argmax(np.stack(fields), axis=0).astype(np.uint8)


def test_small_blobs_of_many_classes_are_labelled_in_one_pass() -> None:
    cm = _blobs(21, 2.0)
    found = classes_of(cm, list(range(21)), KERNEL)
    assert [f.class_id for f in found] == list(range(21))
    assert all(f.mask is None and f.labels is not None for f in found)


def test_a_scene_of_objects_is_traced_and_noise_is_labelled_a_mask_at_a_time() -> None:
    scene = np.full((120, 160), 255, np.uint8)
    cv2.circle(scene, (40, 60), 20, 0, -1)
    cv2.circle(scene, (100, 60), 25, 1, -1)
    assert all(f.labels is None for f in classes_of(scene, [0, 1], KERNEL))
    noise = np.random.default_rng(0).integers(0, 21, (120, 160)).astype(np.uint8)
    found = classes_of(noise, list(range(21)), KERNEL)
    # (the grid of noise holds a corner join at every other pixel: a pass each costs less)
    assert all(f.mask is not None and f.labels is not None for f in found)


def _instances(out: Instances, cm: NDArray[np.uint8], contact: int | None) -> list[tuple[int, bytes]]:
    """Each instance's class and frame pixels, less those of the contact class (which go to the later of two
    parts as near: their order differs between the ways)."""
    found = []
    for c, (x0, y0, x1, y1), mask in zip(out.class_id, out.mask_box, out.masks, strict=True):
        own = mask & (cm[y0:y1, x0:x1] != contact)
        ys, xs = np.nonzero(own)
        found.append((int(c), ((ys + y0) * cm.shape[1] + xs + x0).tobytes()))
    return sorted(found)


def _both_ways(cm: NDArray[np.uint8], contact: int | None) -> tuple[Instances, Instances]:
    """``cm``'s instances with every class labelled in one pass, and with a pass per class (or traced)."""
    # every instance kept (the cut of max_instances breaks ties by the order of the labels, which differs)
    params = SemanticParams(size_threshold=4, max_instances=100_000)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(labelling, "GRID_PASSES", 0.0)
        # (one pass, for the classes every seventh row shows: those it misses are traced)
        assert any(f.mask is None for f in classes_of(cm, [int(c) for c in np.unique(cm)], KERNEL))
        one = semantic_to_instances(cm, params, contact=contact)
        patch.setattr(labelling, "GRID_PASSES", float("inf"))
        apart = semantic_to_instances(cm, params, contact=contact)
    return one, apart


@pytest.mark.parametrize("contact", [None, 11])
def test_one_pass_gives_the_instances_of_a_pass_per_class(contact: int | None) -> None:
    cm = _blobs(12, 3.0, seed=3)
    one, apart = _both_ways(cm, contact)
    assert len(one) > 300
    assert _instances(one, cm, contact) == _instances(apart, cm, contact)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    classes=st.integers(2, 21),
    sigma=st.floats(0.5, 4.0),
    size=st.tuples(st.integers(4, 64), st.integers(4, 64)),
)
def test_maps_of_blobs_give_the_same_instances_either_way(
    seed: int, classes: int, sigma: float, size: tuple[int, int]
) -> None:
    cm = _blobs(classes, sigma, seed, *size)
    one, apart = _both_ways(cm, None)
    assert _instances(one, cm, None) == _instances(apart, cm, None)


def test_the_sample_reads_the_asked_classes_of_a_16_bit_map_and_estimates_their_outlines() -> None:
    cm = np.full((160, 200), 60000, np.uint16)
    cm[20:120, 130:190] = 65535  # one block
    for y in range(0, 160, 16):  # 80 squares of 9x9
        for x in range(0, 120, 16):
            cm[y : y + 9, x : x + 9] = 3
    seen = labelling.sample(cm, [3, 7, 60000, 65535])
    assert sorted(seen.outlines) == [3, 60000, 65535]  # (7 is not in the map)
    assert seen.outlines[3] == pytest.approx(80, rel=0.5)
    assert seen.outlines[65535] == pytest.approx(1, abs=1.5)
    assert not any(seen.speckled.values())


def test_a_map_labelled_in_one_pass_is_explained_with_the_instances_it_gives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cm = _blobs(9, 3.0, seed=5, h=96, w=128)
    monkeypatch.setattr(labelling, "GRID_PASSES", 0.0)
    params = SemanticParams(size_threshold=0, max_instances=100_000)
    inst = semantic_to_instances(cm, params)
    view = explain_split(cm, params)
    assert view.instances.class_id.tolist() == inst.class_id.tolist()
    assert all((a == b).all() for a, b in zip(view.instances.masks, inst.masks, strict=True))
    cover = np.zeros(cm.shape, np.int32)
    for c, m in zip(inst.class_id, inst.dense_masks(), strict=True):
        assert (cm[m] == c).all()
        cover += m
    assert (cover == 1).all()  # every pixel in one instance: no background, no size threshold
