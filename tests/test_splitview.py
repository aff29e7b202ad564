"""The split's side view: explain_split's relief and markers, the head's and model's explain, rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from scenes import BACKGROUND

from edgeseg.geometry import FULL_ROI, AxisAffine
from edgeseg.heads import DecodeOptions
from edgeseg.heads.semantic import SemanticHead
from edgeseg.heads.yolo_seg import YoloSegHead
from edgeseg.instances import Instances
from edgeseg.model import Model
from edgeseg.modelcard import find_card, parse_card
from edgeseg.preprocess import Prepared, Preprocessor
from edgeseg.semantic import SemanticParams, SplitView, explain_split, semantic_to_instances
from edgeseg.sources import SourceConfig, make_source
from edgeseg.splitview import render_split_view

MODELS = Path(__file__).resolve().parents[1] / "models"


def _two_discs(h: int = 200, w: int = 300, r: int = 50, gap: int = 90) -> NDArray[np.uint8]:
    cm = np.full((h, w), BACKGROUND, np.uint8)
    cv2.circle(cm, (100, 100), r, 1, -1)
    cv2.circle(cm, (100 + gap, 100), r, 1, -1)
    return cm


def _assert_same(a: Instances, b: Instances) -> None:
    assert a.image_shape == b.image_shape
    for name in ("class_id", "score", "xyxy", "obb", "area", "mask_box"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert len(a.masks) == len(b.masks)
    for ma, mb in zip(a.masks, b.masks, strict=True):
        np.testing.assert_array_equal(ma, mb)


def _opened(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    kernel = np.ones((3, 3), np.uint8)
    return np.asarray(cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_OPEN, kernel, iterations=2), bool)


def test_two_touching_discs_show_two_markers_and_a_relief_normalized_per_component() -> None:
    cm = _two_discs()
    view = explain_split(cm)
    assert view.class_map.shape == cm.shape
    assert view.class_map.dtype == np.int32
    np.testing.assert_array_equal(view.class_map, cm)
    assert view.threshold == SemanticParams().dist_threshold
    assert view.n_markers == 2
    assert set(np.unique(view.markers).tolist()) == {0, 1, 2}
    assert len(view.instances) == 2
    _assert_same(view.instances, semantic_to_instances(cm))
    inside = cm == 1
    assert view.relief.dtype == np.float32
    assert view.relief.shape == cm.shape
    assert (view.relief[~inside] == 0).all()
    # > 0 wherever the opening (2 x 3x3, as the split does) keeps the component: all but its sharp notches
    assert (view.relief[inside] > 0).tolist() == _opened(inside)[inside].tolist()
    assert view.relief.max() == 1.0  # one component, its own peak
    # each marker lies inside the class, in the instance of its own disc, above the threshold
    assert (view.markers[~inside] == 0).all()
    assert (view.relief[view.markers > 0] > view.threshold).all()
    dense = view.instances.dense_masks()
    for k in (1, 2):
        hits = [int(np.count_nonzero(dense[i] & (view.markers == k))) for i in range(2)]
        assert sorted(hits)[0] == 0
        assert sorted(hits)[1] > 0


def test_a_lower_threshold_lets_one_marker_span_both_discs_and_the_view_shows_it() -> None:
    cm = _two_discs(gap=90)
    split = explain_split(cm, SemanticParams(dist_threshold=0.6))
    merged = explain_split(cm, SemanticParams(dist_threshold=0.4))
    assert (split.n_markers, len(split.instances)) == (2, 2)
    assert (merged.n_markers, len(merged.instances)) == (1, 1)
    assert merged.threshold == 0.4
    # the one marker reaches into both discs: the neck between them is deeper than 0.4 of the peak
    xs = np.nonzero(merged.markers == 1)[1]
    assert xs.min() < 100
    assert xs.max() > 190
    # the relief does not depend on the threshold, only its cut does
    np.testing.assert_array_equal(split.relief, merged.relief)
    _assert_same(merged.instances, semantic_to_instances(cm, SemanticParams(dist_threshold=0.4)))


def test_per_class_normalization_shows_a_small_object_below_the_big_ones_peak() -> None:
    cm = np.full((240, 320), BACKGROUND, np.uint8)
    cv2.circle(cm, (90, 120), 70, 0, -1)
    cv2.circle(cm, (230, 60), 12, 0, -1)
    cv2.circle(cm, (251, 60), 12, 0, -1)
    small = np.zeros(cm.shape, bool)
    small[30:90, 200:290] = True
    small &= cm == 0
    own = explain_split(cm, SemanticParams(size_threshold=20))
    per_class = explain_split(cm, SemanticParams(size_threshold=20, per_component=False))
    assert own.relief[small].max() == 1.0
    assert 0 < per_class.relief[small].max() < 0.6  # under the threshold: the pair gets no marker of its own
    assert per_class.relief.max() == 1.0
    # with its own peak the pair shows two markers, the big disc one; per class the pair shows none
    assert own.n_markers == 3
    assert len(own.instances) == 3
    assert (per_class.markers[small] == 0).all()
    assert per_class.n_markers == 1
    assert len(per_class.instances) == 2


def test_scores_and_their_argmax_class_map_give_the_same_view() -> None:
    cm = _two_discs()
    ids = np.where(cm == BACKGROUND, 0, cm).astype(np.int64)
    logits = (np.eye(2, dtype=np.float32)[ids] * 6.0 - 3.0).transpose(2, 0, 1)
    from_scores = explain_split(logits, background=0, logits=True)
    from_map = explain_split(ids.astype(np.uint8), background=0)
    np.testing.assert_array_equal(from_scores.class_map, from_map.class_map)
    np.testing.assert_array_equal(from_scores.relief, from_map.relief)
    np.testing.assert_array_equal(from_scores.markers, from_map.markers)
    assert from_scores.background == 0


def test_empty_map_gives_an_empty_view() -> None:
    view = explain_split(np.full((20, 30), BACKGROUND, np.uint8))
    assert view.n_markers == 0
    assert len(view.instances) == 0
    assert not view.relief.any()


# -- head, model, rendering -------------------------------------------------------------------------


def test_semantic_head_explains_on_its_work_grid_and_places_it_on_the_frame() -> None:
    card = parse_card(
        {
            "name": "tiny-sem",
            "task": "semantic",
            "input": {"name": "x", "width": 32, "height": 32, "resize": "letterbox"},
            "output": {"name": "y", "kind": "logits"},
            "classes": ["bg", "a"],
        },
        "tiny.yaml",
    )
    cm = np.zeros((16, 16), np.int64)
    cm[6:10, 2:14] = 1  # output at half the input's resolution; 64x32 frame letterboxed into 32x32
    y = (np.eye(2, dtype=np.float32)[cm] * 8.0 - 4.0).transpose(2, 0, 1)[None]
    geo = Preprocessor(card.input).geometry((32, 64), FULL_ROI)
    prepared = Prepared(None, geo.to_frame, (32, 64), None, geo.crop)
    options = DecodeOptions(semantic=SemanticParams(size_threshold=0))
    head = SemanticHead(card)
    view = head.explain({"y": y}, prepared, options)
    assert view.class_map.shape == (8, 16)  # the frame's rows of the map (letterbox rows dropped)
    assert view.to_frame == AxisAffine(4.0, 4.0, 0.0, 0.0)
    decoded = head.decode({"y": y}, prepared, options)
    _assert_same(view.instances.transform(view.to_frame, (32, 64)), decoded)


def test_yolo_seg_model_has_no_split_to_explain() -> None:
    card = parse_card(
        {
            "name": "tiny-yolo",
            "task": "yolo-seg",
            "input": {"name": "images", "width": 32, "height": 32, "resize": "letterbox"},
            "output": {"name": "output0", "protos": "output1"},
            "classes": ["a", "b"],
        },
        "tiny.yaml",
    )
    model = Model(card, cast(Any, None), YoloSegHead(card))
    assert model.explain({}, cast(Prepared, None)) is None


@pytest.fixture(scope="module")
def demo_view() -> SplitView:
    model = Model.load(MODELS / "demo-parts.onnx")
    source = make_source(SourceConfig(uri="synthetic:parts?seed=1"))
    try:
        source.open()
        frame = source.read()
    finally:
        source.close()
    assert frame is not None
    prepared = model.preprocess(frame)
    outputs = model.infer(prepared)
    try:
        view = model.explain(outputs, prepared)
        decoded = model.decode(outputs, prepared)
    finally:
        model.close()
    assert view is not None
    assert view.to_frame == AxisAffine()  # the demo's output covers the 640x480 frame pixel for pixel
    _assert_same(view.instances, decoded)
    return view


def test_demo_model_explains_a_synthetic_frame_on_its_work_grid(demo_view: SplitView) -> None:
    assert demo_view.class_map.shape == (480, 640)  # the demo model's output is the frame's 640x480 grid
    assert demo_view.markers.shape == demo_view.relief.shape == (480, 640)
    card = find_card(MODELS / "demo-parts.onnx").semantic
    assert card is not None
    assert demo_view.threshold == card.dist_threshold  # the card's semantic section
    assert demo_view.background == 0
    assert demo_view.n_markers >= 1
    assert len(demo_view.instances) >= 1
    assert set(np.unique(demo_view.class_map).tolist()) <= {0, 1, 2, 3}


@pytest.mark.parametrize("size", [(480, 320), (200, 900), (31, 17)])
def test_render_split_view_is_a_bgr_image_of_the_requested_size(
    demo_view: SplitView, size: tuple[int, int]
) -> None:
    image = render_split_view(demo_view, size=size)
    assert image.shape == (*size, 3)
    assert image.dtype == np.uint8
    assert image.any()


def test_render_split_view_draws_every_panel_of_a_small_map() -> None:
    view = explain_split(_two_discs())
    image = render_split_view(view, ((0, 0, 255), (0, 255, 0)), (600, 300))
    assert image.shape == (600, 300, 3)
    thirds = [image[k * 200 : (k + 1) * 200] for k in range(3)]  # stacked: the map is wider than tall
    assert all(t.reshape(-1, 3).std(axis=0).sum() > 0 for t in thirds)
    assert (image[..., 1] == 255).any()  # class 1 in the second colour


def test_a_model_that_draws_contacts_shows_them_instead_of_a_relief_and_each_component_as_one_marker() -> (
    None
):
    """Nothing is split with a contact class, so the view must not show a relief the decode never used: the
    middle panel shows the contact pixels, and the markers are the components the labelling found."""
    contact = 4
    cm = _two_discs()
    band = np.zeros(cm.shape, bool)
    band[:, 143:148] = True  # a contact band across the neck where the discs meet
    cm[band & (cm == 1)] = contact
    view = explain_split(cm, SemanticParams(dist_threshold=1.0), BACKGROUND, contact=contact)
    _assert_same(
        view.instances,
        semantic_to_instances(cm, SemanticParams(dist_threshold=1.0), BACKGROUND, contact=contact),
    )
    assert len(view.instances) == 2
    assert view.contact == contact
    assert not view.relief.any()
    assert view.n_markers == 2
    parts = (cm == 1) & ~band
    assert ((view.markers > 0) == parts).all()  # the components before their contact pixels joined them
    image = render_split_view(view, ((0, 0, 255), (0, 255, 0)), (600, 300))
    middle = image[200:400]
    assert (middle == 255).all(axis=2).any()  # the contact band, white
    plain = render_split_view(
        explain_split(_two_discs(), SemanticParams(dist_threshold=1.0), BACKGROUND), size=(600, 300)
    )
    assert not (plain[200:400] == 255).all(axis=2)[40:].any()  # a relief panel has no white (but its caption)


def test_a_model_with_a_contact_map_shows_it_instead_of_a_relief_and_each_instance_as_one_marker() -> None:
    cm = _two_discs()
    band = np.zeros(cm.shape, bool)
    band[:, 143:148] = True  # where the discs meet
    touching = band & (cm == 1)
    view = explain_split(cm, SemanticParams(dist_threshold=1.0), BACKGROUND, touching=touching)
    _assert_same(
        view.instances,
        semantic_to_instances(cm, SemanticParams(dist_threshold=1.0), BACKGROUND, touching=touching),
    )
    assert len(view.instances) == 2
    assert view.touching is not None
    assert (view.touching == touching).all()
    assert not view.relief.any()
    assert view.n_markers == 2
    assert ((view.markers > 0) == (cm == 1)).all()  # the instances cover the class, the band included
    middle = render_split_view(view, ((0, 0, 255), (0, 255, 0)), (600, 300))[200:400]
    assert (middle == 255).all(axis=2).any()  # the contact map, white


def test_a_caption_wider_than_its_panel_is_wrapped_not_cut_off_at_the_panels_edge() -> None:
    """The display's strip under a 320x240 frame puts the panels side by side, 104 pixels wide each: the
    relief's caption ran off its panel, "distance relief (threshold" and the threshold itself lost."""
    cm = np.full((480, 640), BACKGROUND, np.uint8)  # the parts well below the captions
    cv2.circle(cm, (200, 300), 100, 1, -1)
    cv2.circle(cm, (380, 300), 100, 1, -1)
    view = explain_split(cm)
    image = render_split_view(view, size=(120, 320))
    gap = (image == 32).all(axis=(0, 2))  # the margins between the panels, all their own grey
    edges = [x for x in range(image.shape[1]) if not gap[x] and (x + 1 == image.shape[1] or gap[x + 1])]
    assert len(edges) == 3
    rows = np.flatnonzero(~(image == 32).all(axis=(1, 2)))  # the panels' rows
    caption = image[rows[0] : rows[0] + 40]
    white = (caption > 100).all(axis=2)  # the text, anti-aliased
    for edge in edges:
        assert not white[:, edge - 2 : edge + 1].any(), f"the caption reaches the panel's edge at x={edge}"
    middle = white[:, edges[0] + 1 : edges[1] + 1]
    lines = np.flatnonzero(middle.any(axis=1))
    assert lines[-1] - lines[0] > 15  # the relief's caption on two lines: its threshold is shown too
