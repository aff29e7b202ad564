"""Heads on hand-made output tensors with known answers: NMS, prototype masks, semantic layouts, mapping."""

from __future__ import annotations

import math
import tracemalloc
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeseg.errors import ModelError
from edgeseg.geometry import FULL_ROI, Roi, obb_corners
from edgeseg.heads import DecodeOptions, yolo_seg
from edgeseg.heads.semantic import SemanticHead
from edgeseg.heads.yolo_seg import (
    NMS_MATRIX,
    YoloSegHead,
    _axis,
    _resize_src,
    _upsample_window,
    interp_matrix,
    nms_per_class,
)
from edgeseg.modelcard import ModelCard, parse_card
from edgeseg.preprocess import Prepared, Preprocessor
from edgeseg.semantic import SemanticParams

NO_SPLIT = DecodeOptions(semantic=SemanticParams(size_threshold=0))


def _prepared(card: ModelCard, frame_hw: tuple[int, int], roi: Roi = FULL_ROI) -> Prepared:
    geo = Preprocessor(card.input).geometry(frame_hw, roi)
    return Prepared(None, geo.to_frame, frame_hw, None, geo.crop)


# -- yolo-seg ---------------------------------------------------------------------------------------

YOLO = parse_card(
    {
        "name": "tiny-yolo",
        "task": "yolo-seg",
        "input": {"name": "images", "width": 32, "height": 32, "resize": "letterbox"},
        "output": {"name": "output0", "protos": "output1"},
        "classes": ["a", "b"],
    },
    "tiny.yaml",
)


def _yolo_outputs(rows: list[tuple[float, float, float, float, int, float, tuple[float, float]]]) -> dict:  # type: ignore[type-arg]
    """rows: cx, cy, w, h (input px), class, score, mask coefficients; prototypes are +1 and -1 planes."""
    det = np.zeros((1, 4 + 2 + 2, len(rows)), np.float32)
    for a, (cx, cy, w, h, cls, score, coef) in enumerate(rows):
        det[0, :4, a] = (cx, cy, w, h)
        det[0, 4 + cls, a] = score
        det[0, 6:, a] = coef
    protos = np.stack([np.ones((8, 8)), -np.ones((8, 8))])[None].astype(np.float32)
    return {"output0": det, "output1": protos}


FULL, EMPTY = (1.0, 0.0), (0.0, 1.0)


def test_yolo_class_aware_nms_threshold_and_empty_masks() -> None:
    head = YoloSegHead(YOLO)
    outputs = _yolo_outputs(
        [
            (10, 10, 8, 8, 0, 0.9, FULL),
            (11, 10, 8, 8, 0, 0.8, FULL),  # same class, IoU 0.78 with the first: suppressed
            (11, 10, 8, 8, 1, 0.7, FULL),  # other class: kept
            (24, 24, 6, 6, 0, 0.6, EMPTY),  # kept by NMS, but its mask is empty: dropped and counted
            (24, 8, 6, 6, 0, 0.25, FULL),  # not above the 0.25 threshold
        ]
    )
    inst = head.decode(outputs, _prepared(YOLO, (32, 32)), DecodeOptions())
    assert inst.class_id.tolist() == [0, 1]
    np.testing.assert_allclose(inst.score, [0.9, 0.7])
    np.testing.assert_allclose(inst.xyxy[0], [6, 6, 14, 14])
    assert inst.area[0] == 64
    assert inst.mask_box[0].tolist() == [6, 6, 14, 14]
    assert head.dropped_empty == 1


def test_yolo_masks_past_the_frame_s_budget_are_the_lowest_scores_dropped_and_counted() -> None:
    # 30 boxes of 24x24 on a 32x32 frame, none suppressed (IoU threshold 1): their boxes sum to 17 frames
    rows = [(12 + i % 6, 12 + i // 6, 24, 24, i % 2, 0.99 - i / 100, FULL) for i in range(30)]
    head = YoloSegHead(YOLO)
    inst = head.decode(_yolo_outputs(rows), _prepared(YOLO, (32, 32)), DecodeOptions(iou_threshold=1.0))
    fit = int(yolo_seg.MASK_FRAMES * 32 * 32) // (24 * 24)
    assert len(inst) == fit
    np.testing.assert_allclose(inst.score, [0.99 - i / 100 for i in range(fit)])
    assert head.dropped_budget == 30 - fit
    assert head.dropped_empty == 0


def test_yolo_options_override_the_card_thresholds() -> None:
    head = YoloSegHead(YOLO)
    outputs = _yolo_outputs([(10, 10, 8, 8, 0, 0.9, FULL), (11, 10, 8, 8, 0, 0.8, FULL)])
    loose = head.decode(outputs, _prepared(YOLO, (32, 32)), DecodeOptions(iou_threshold=0.9))
    strict = head.decode(outputs, _prepared(YOLO, (32, 32)), DecodeOptions(score_threshold=0.85))
    capped = head.decode(outputs, _prepared(YOLO, (32, 32)), DecodeOptions(iou_threshold=0.9, max_det=1))
    assert (len(loose), len(strict), len(capped)) == (2, 1, 1)


def test_yolo_boxes_and_masks_land_in_frame_pixels_through_the_letterbox() -> None:
    # a 64x32 frame letterboxes into 32x32 at scale 0.5 with 8 rows of padding on top
    inst = YoloSegHead(YOLO).decode(
        _yolo_outputs([(16, 16, 8, 8, 0, 0.9, FULL)]), _prepared(YOLO, (32, 64)), DecodeOptions()
    )
    assert inst.image_shape == (32, 64)
    np.testing.assert_allclose(inst.xyxy[0], [24, 8, 40, 24])
    assert inst.mask_box[0].tolist() == [24, 8, 40, 24]
    assert inst.area[0] == 256


def test_yolo_no_candidates_gives_empty_instances() -> None:
    inst = YoloSegHead(YOLO).decode(
        _yolo_outputs([(16, 16, 8, 8, 0, 0.1, FULL)]), _prepared(YOLO, (32, 32)), DecodeOptions()
    )
    assert len(inst) == 0
    assert inst.image_shape == (32, 32)


def test_yolo_nan_output_is_a_model_error_naming_model_and_tensor() -> None:
    outputs = _yolo_outputs([(16, 16, 8, 8, 0, 0.9, FULL)])
    outputs["output0"][0, 5, 0] = np.nan
    with pytest.raises(ModelError, match="model 'tiny-yolo': output 'output0' holds NaN"):
        YoloSegHead(YOLO).decode(outputs, _prepared(YOLO, (32, 32)), DecodeOptions())


@pytest.mark.parametrize(
    ("tensor", "index"), [("output0", (0, 2, 0)), ("output0", (0, 7, 0)), ("output1", (0, 1, 3, 3))]
)
def test_yolo_minus_infinity_in_an_output_is_a_model_error_as_plus_infinity_is(
    tensor: str, index: tuple[int, ...]
) -> None:
    # a float16 graph overflows to -inf as readily as to +inf; the check read only the maximum, so a box
    # width or mask coefficient of -inf turned the detection into "no detections" without a word
    outputs = _yolo_outputs([(16, 16, 8, 8, 0, 0.9, FULL)])
    outputs[tensor][index] = -np.inf
    with pytest.raises(ModelError, match=f"model 'tiny-yolo': output '{tensor}' holds NaN or infinite"):
        YoloSegHead(YOLO).decode(outputs, _prepared(YOLO, (32, 32)), DecodeOptions())


def test_yolo_float16_outputs_decode_as_the_same_values_in_float32() -> None:
    # a float16 export (Ultralytics half=True) hands its outputs to us in float16: box edges and mask logits
    # worked out in it were off by up to a quarter of an input pixel (half a frame pixel at 1280x720) and
    # flipped mask pixels, where TensorRT's float32 copies of the same values did not
    card = parse_card(
        {
            "name": "half-yolo",
            "task": "yolo-seg",
            "input": {"name": "images", "width": 320, "height": 320, "resize": "letterbox"},
            "output": {},
            "classes": ["a", "b"],
        },
        "half.yaml",
    )
    rng = np.random.default_rng(0)
    det = np.zeros((1, 4 + 2 + 32, 50), np.float32)
    det[0, :2] = rng.uniform(50, 270, (2, 50))
    det[0, 2:4] = rng.uniform(20, 100, (2, 50))
    det[0, 4] = rng.uniform(0, 1, 50)
    det[0, 6:] = rng.normal(0, 3, (32, 50))
    protos = rng.normal(0, 2, (1, 32, 80, 80))
    half = {"output0": det.astype(np.float16), "output1": protos.astype(np.float16)}
    same = {name: t.astype(np.float32) for name, t in half.items()}
    prepared = _prepared(card, (480, 640))
    head = YoloSegHead(card)
    got = head.decode(half, prepared, DecodeOptions(iou_threshold=1.0))
    want = head.decode(same, prepared, DecodeOptions(iou_threshold=1.0))
    assert len(got) == len(want) > 30
    np.testing.assert_array_equal(got.xyxy, want.xyxy)
    np.testing.assert_array_equal(got.score, want.score)
    np.testing.assert_array_equal(got.dense_masks(), want.dense_masks())


def test_yolo_unexpected_output_shape_is_a_model_error() -> None:
    outputs = _yolo_outputs([(16, 16, 8, 8, 0, 0.9, FULL)])
    outputs["output0"] = outputs["output0"][:, :7]
    with pytest.raises(ModelError, match=r"output 'output0' has shape \(1, 7, 1\), expected \[1, 8, A\]"):
        YoloSegHead(YOLO).decode(outputs, _prepared(YOLO, (32, 32)), DecodeOptions())


def test_yolo_prototype_masks_of_no_rows_are_a_model_error_naming_the_output() -> None:
    outputs = _yolo_outputs([(16, 16, 8, 8, 0, 0.9, FULL)])
    outputs["output1"] = outputs["output1"][:, :, :0]  # was IndexError: index -1 is out of bounds
    with pytest.raises(
        ModelError, match=r"output 'output1' has shape \(1, 2, 0, 8\), expected \[1, nm, h, w\]"
    ):
        YoloSegHead(YOLO).decode(outputs, _prepared(YOLO, (32, 32)), DecodeOptions())


def _nms_reference(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, thr: float) -> list[int]:
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        ok = True
        for k in keep:
            if classes[k] != classes[i]:
                continue
            a, b = boxes[i], boxes[k]
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if inter / union > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.floats(0.1, 0.9), st.integers(1, 50), st.booleans())
def test_nms_matches_a_plain_greedy_reference(
    seed: int, n: int, thr: float, max_det: int, rows: bool
) -> None:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 50, (n, 2))
    wh = rng.uniform(2, 30, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n + 0.01  # distinct scores: order is defined
    classes = rng.integers(0, 3, n)
    # (rows: each kept box's IoUs one row at a time, as for more candidates than NMS_MATRIX)
    got = nms_per_class(boxes, scores, classes, thr, max_det, matrix_most=0 if rows else NMS_MATRIX)
    assert got.tolist() == _nms_reference(boxes.astype(np.float64), scores, classes, thr)[:max_det]


def test_nms_of_thousands_of_candidates_keeps_its_memory_to_rows() -> None:
    # the 8400 candidates of a 640 model at a score threshold of 0: every pair at once took 1.3 GB
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 640, (8400, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 120, (8400, 2))], axis=1).astype(np.float32)
    scores = rng.random(8400).astype(np.float32)
    tracemalloc.start()
    try:
        keep = nms_per_class(boxes, scores, rng.integers(0, 80, 8400), 0.7, 300)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(keep) == 300
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MB"


@pytest.mark.parametrize(("n_in", "n_out"), [(8, 32), (80, 320), (13, 50), (50, 13)])
def test_interp_matrix_reproduces_half_pixel_bilinear_resize(n_in: int, n_out: int) -> None:
    x = np.random.default_rng(1).normal(size=(1, n_in)).astype(np.float32)
    want = cv2.resize(x, (n_out, 1), interpolation=cv2.INTER_LINEAR)[0]
    got = interp_matrix(_resize_src(n_out, n_in), n_in) @ x[0]
    if n_out >= n_in:  # OpenCV's downscale uses area-like taps; the upscale taps are the same as PyTorch's
        np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(interp_matrix(_resize_src(n_out, n_in), n_in).sum(axis=1), 1.0)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.tuples(st.integers(4, 40), st.integers(4, 40)),
    st.tuples(st.integers(8, 400), st.integers(8, 400)),
    st.sampled_from([0, 10**9]),
)
def test_a_box_upsampled_in_one_product_or_in_column_blocks_gets_the_logits_of_the_full_maps(
    seed: int, proto_hw: tuple[int, int], crop_hw: tuple[int, int], one_product_macs: int
) -> None:
    rng = np.random.default_rng(seed)
    (ph, pw), (h, w) = proto_hw, crop_hw
    ay = _axis(interp_matrix(_resize_src(h, ph), ph))
    ax = _axis(interp_matrix(_resize_src(w, pw), pw))
    protos = rng.normal(size=(ph, pw)).astype(np.float32)
    r0, r1 = sorted(rng.choice(h + 1, 2, replace=False).tolist())
    c0, c1 = sorted(rng.choice(w + 1, 2, replace=False).tolist())
    # the prototype window the decode takes for that box: the taps its rows and columns reach
    py0, py1 = int(ay.lo[r0]), int(ay.hi[r1 - 1]) + 1
    px0, px1 = int(ax.lo[c0]), int(ax.hi[c1 - 1]) + 1
    want = ay.weights[r0:r1] @ protos @ ax.weights[c0:c1].T
    old = yolo_seg.ONE_PRODUCT_MACS
    yolo_seg.ONE_PRODUCT_MACS = one_product_macs  # 0: blocks only; 10**9: one product for every box
    try:
        got = _upsample_window(protos[py0:py1, px0:px1], ay, ax, (r0, r1, c0, c1), (py0, px0))
    finally:
        yolo_seg.ONE_PRODUCT_MACS = old
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- semantic ---------------------------------------------------------------------------------------


def _semantic_card(kind: str, layout: str = "nchw", resize: str = "stretch", classes: int = 3) -> ModelCard:
    return parse_card(
        {
            "name": "tiny-sem",
            "task": "semantic",
            "input": {"name": "x", "width": 32, "height": 32, "resize": resize},
            "output": {"name": "y", "kind": kind, "layout": layout},
            "classes": ["bg", "a", "b"][:classes],
        },
        "tiny.yaml",
    )


def _class_map() -> np.ndarray:
    m = np.zeros((32, 32), np.int64)
    m[4:12, 4:12] = 1
    m[20:28, 16:30] = 2
    return m


def _logits(class_map: np.ndarray, n: int = 3) -> np.ndarray:
    return (np.eye(n, dtype=np.float32)[class_map] * 8.0 - 4.0).transpose(2, 0, 1)[None]


def _decode(card: ModelCard, y: np.ndarray, frame_hw: tuple[int, int] = (32, 32)) -> Any:
    return SemanticHead(card).decode({"y": y}, _prepared(card, frame_hw), NO_SPLIT)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_semantic_logits_in_either_layout_give_the_same_instances(layout: str) -> None:
    y = _logits(_class_map())
    if layout == "nhwc":
        y = y.transpose(0, 2, 3, 1)
    inst = _decode(_semantic_card("logits", layout), y)
    assert sorted(inst.class_id.tolist()) == [1, 2]
    boxes = {int(c): b.tolist() for c, b in zip(inst.class_id, inst.xyxy, strict=True)}
    assert boxes == {1: [4, 4, 12, 12], 2: [16, 20, 30, 28]}
    assert (inst.score > 0.99).all()


def test_semantic_probabilities_and_class_map_agree() -> None:
    cm = _class_map()
    probs = np.eye(3, dtype=np.float32)[cm].transpose(2, 0, 1)[None]
    from_probs = _decode(_semantic_card("probabilities"), probs)
    from_map = _decode(_semantic_card("class_map"), cm[None].astype(np.float32))
    assert sorted(map(tuple, from_probs.mask_box.tolist())) == sorted(map(tuple, from_map.mask_box.tolist()))
    np.testing.assert_array_equal(from_map.score, 1.0)


def test_semantic_sigmoid_foreground_becomes_class_one() -> None:
    p = np.zeros((1, 32, 32, 1), np.float32)
    p[0, 8:24, 8:16, 0] = 0.9
    inst = _decode(_semantic_card("sigmoid", "nhwc", classes=2), p)
    assert inst.class_id.tolist() == [1]
    assert inst.xyxy[0].tolist() == [8, 8, 16, 24]
    assert inst.score[0] == pytest.approx(0.9, abs=1e-3)


def test_semantic_instances_are_mapped_through_letterbox_and_output_stride() -> None:
    # output at half the input resolution; 64x32 frame letterboxed into 32x32 (scale 0.5, 8 rows on top)
    cm = np.zeros((16, 16), np.int64)
    cm[6:10, 4:8] = 1  # model-input px rows 12..20, cols 8..16
    inst = _decode(_semantic_card("logits", resize="letterbox"), _logits(cm), frame_hw=(32, 64))
    assert inst.image_shape == (32, 64)
    assert inst.xyxy[0].tolist() == [16, 8, 32, 24]


@pytest.mark.parametrize(("n", "frame_hw", "col"), [(8, (14, 13), 3), (11, (14, 8), 5)])
def test_an_object_one_output_column_wide_inside_the_letterboxed_frame_region_is_found(
    n: int, frame_hw: tuple[int, int], col: int
) -> None:
    # The frame region spans 7.5 (resp. ~6.2) columns of an n-column map: a work grid with fewer columns
    # than that samples the map more than a column apart, and nearest sampling skips a whole column.
    cm = np.zeros((1, n, n), np.uint8)
    cm[0, :, col] = 1
    card = _semantic_card("class_map", resize="letterbox")
    inst = SemanticHead(card).decode({"y": cm}, _prepared(card, frame_hw), NO_SPLIT)
    assert inst.class_id.tolist() == [1]


@pytest.mark.parametrize("frame_hw", [(45, 45), (50, 37)])
def test_instances_split_from_one_component_share_no_frame_pixel_and_leave_none_of_it_out(
    frame_hw: tuple[int, int],
) -> None:
    # two touching discs, split in the map; mapped onto a frame 1.4x (and 1.56 by 1.16x) the map's size,
    # each frame pixel belongs to the instance whose map pixel lies under its centre (on the edge between
    # two, the first: as the boxes are rounded), and to no other
    cm = np.zeros((32, 32), np.uint8)
    cv2.circle(cm, (10, 16), 7, 1, -1)
    cv2.circle(cm, (22, 16), 7, 1, -1)
    card = _semantic_card("class_map")
    options = DecodeOptions(semantic=SemanticParams(size_threshold=4))
    inst = SemanticHead(card).decode({"y": cm[None]}, _prepared(card, frame_hw), options)
    assert len(inst) == 2
    h, w = frame_hw
    rows = np.ceil((np.arange(h) + 0.5) * 32 / h).astype(int) - 1
    cols = np.ceil((np.arange(w) + 0.5) * 32 / w).astype(int) - 1
    cover = inst.dense_masks().sum(axis=0)
    assert cover.max() == 1
    assert np.array_equal(cover == 1, cm[rows][:, cols] == 1)


@settings(max_examples=60, deadline=None)
@given(
    map_hw=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    ids=st.lists(st.integers(0, 2), min_size=81, max_size=81),
    input_wh=st.tuples(st.integers(4, 40), st.integers(4, 40)),
    frame_hw=st.tuples(st.integers(1, 50), st.integers(1, 50)),
    resize=st.sampled_from(["letterbox", "stretch"]),
    roi=st.tuples(st.floats(0, 0.9), st.floats(0, 0.9), st.floats(0.05, 1), st.floats(0.05, 1)),
)
def test_semantic_instances_on_the_frame_are_tight_disjoint_and_boxed_around_their_pixels(
    map_hw: tuple[int, int],
    ids: list[int],
    input_wh: tuple[int, int],
    frame_hw: tuple[int, int],
    resize: str,
    roi: tuple[float, float, float, float],
) -> None:
    h, w = map_hw
    cm = np.array(ids[: h * w], np.uint8).reshape(h, w)
    card = parse_card(
        {
            "name": "tiny-sem",
            "task": "semantic",
            "input": {"name": "x", "width": input_wh[0], "height": input_wh[1], "resize": resize},
            "output": {"name": "y", "kind": "class_map"},
            "classes": ["bg", "a", "b"],
        },
        "tiny.yaml",
    )
    left, top = roi[:2]
    prepared = _prepared(card, frame_hw, (left, top, min(roi[2], 1 - left), min(roi[3], 1 - top)))
    head = SemanticHead(card)
    inst = head.decode({"y": cm[None]}, prepared, NO_SPLIT)
    # Under equal scales an oriented box is mapped exactly, not refitted: the corner of a map pixel on a
    # slanted edge lies up to (sqrt(2) - 1) / 2 of that pixel outside it, and so may a frame pixel's centre
    to_frame = head.explain({"y": cm[None]}, prepared, NO_SPLIT).to_frame
    slack = (math.sqrt(2) - 1) / 2 * max(to_frame.sx, to_frame.sy) + 1e-3
    x0, y0, _, _ = prepared.crop_box or (0, 0, 0, 0)
    ch, cw = prepared.crop_shape
    cover = np.zeros(frame_hw, np.int32)
    for i, (m, box) in enumerate(zip(inst.masks, inst.mask_box.tolist(), strict=True)):
        bx0, by0, bx1, by1 = box
        assert x0 <= bx0 < bx1 <= x0 + cw  # inside the ROI
        assert y0 <= by0 < by1 <= y0 + ch
        assert m.shape == (by1 - by0, bx1 - bx0)
        assert all(edge.any() for edge in (m[0], m[-1], m[:, 0], m[:, -1]))  # a tight crop
        assert inst.area[i] == np.count_nonzero(m)
        corners = obb_corners(inst.obb[i : i + 1])[0].reshape(-1, 1, 2)
        for r, c in zip(*np.nonzero(m), strict=True):
            centre = (float(bx0 + c + 0.5), float(by0 + r + 0.5))
            assert cv2.pointPolygonTest(corners, centre, True) >= -slack
        cover[by0:by1, bx0:bx1] += m
    assert cover.max(initial=0) <= 1  # instances apart in the map are apart on the frame


def test_semantic_nan_logits_are_a_model_error_naming_model_and_tensor() -> None:
    y = _logits(_class_map())
    y[0, 1, 3, 3] = np.nan
    with pytest.raises(ModelError, match="model 'tiny-sem': output 'y' holds NaN"):
        _decode(_semantic_card("logits"), y)


@pytest.mark.parametrize(
    ("kind", "shape", "message"),
    [
        ("logits", (1, 4, 32, 32), r"has shape \[1, 4, 32, 32\], expected \[1, 3, h, w\] for 3 classes"),
        ("logits", (3, 32, 32), r"expected \[1, 3, h, w\]"),
        ("class_map", (1, 2, 32, 32), r"expected one map"),
    ],
)
def test_semantic_unexpected_output_shape_is_a_model_error(kind: str, shape: tuple, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ModelError, match=message):
        _decode(_semantic_card(kind), np.zeros(shape, np.float32))


def test_semantic_class_ids_outside_the_card_are_a_model_error() -> None:
    cm = _class_map()[None].astype(np.float32)
    cm[0, 0, 0] = 7
    with pytest.raises(ModelError, match=r"class ids outside 0\.\.2"):
        _decode(_semantic_card("class_map"), cm)


def _class_map_card(companions: dict[str, str], **card: Any) -> ModelCard:
    """A card of a class map ``y`` with the tensors ``companions`` names beside it (confidence, contact)."""
    return parse_card(
        {
            "name": "tiny-sem",
            "task": "semantic",
            "input": {"name": "x", "width": 32, "height": 32},
            "output": {"name": "y", "kind": "class_map", **companions},
            "classes": ["bg", "a", "b"],
            **card,
        },
        "tiny.yaml",
    )


def _confident_card() -> ModelCard:
    return _class_map_card({"confidence": "p"})


def test_a_class_map_with_its_confidence_scores_each_instance_by_the_mean_confidence_of_its_pixels() -> None:
    card = _confident_card()
    cm = _class_map().astype(np.uint8)[None, None]
    conf = np.full((1, 1, 32, 32), 0.9, np.float32)
    conf[0, 0, 4:8, 4:12] = 0.5  # half of instance 1
    inst = SemanticHead(card).decode({"y": cm, "p": conf}, _prepared(card, (64, 64)), NO_SPLIT)
    scores = {int(c): float(s) for c, s in zip(inst.class_id, inst.score, strict=True)}
    assert scores == pytest.approx({1: 0.7, 2: 0.9})
    assert inst.xyxy.tolist() == [[8, 8, 24, 24], [32, 40, 60, 56]]  # masks mapped onto the 64x64 frame


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        (
            np.full((1, 1, 16, 16), 0.5, np.float32),
            r"output 'p' has shape \[16, 16\], the class map \[32, 32\]",
        ),
        (np.full((1, 1, 32, 32), 1.5, np.float32), r"output 'p' holds values outside \[0, 1\]"),
        (np.full((1, 1, 32, 32), np.nan, np.float32), r"output 'p' holds values outside \[0, 1\]"),
    ],
)
def test_a_confidence_map_that_does_not_fit_its_class_map_is_a_model_error_naming_the_tensor(
    conf: np.ndarray, message: str
) -> None:
    card = _confident_card()
    cm = _class_map().astype(np.uint8)[None, None]
    with pytest.raises(ModelError, match=message):
        SemanticHead(card).decode({"y": cm, "p": conf}, _prepared(card, (32, 32)), NO_SPLIT)


def test_a_confidence_tensor_is_only_accepted_beside_a_class_map() -> None:
    with pytest.raises(ModelError, match=r"output\.confidence"):
        parse_card(
            {
                "name": "x",
                "task": "semantic",
                "input": {"name": "x", "width": 32, "height": 32},
                "output": {"name": "y", "kind": "logits", "confidence": "p"},
                "classes": ["bg", "a"],
            },
            "x.yaml",
        )


def _touching_card(**card: Any) -> ModelCard:
    return _class_map_card({"contact": "t"}, **card)


def test_a_class_map_with_a_contact_map_is_split_where_the_model_says_parts_touch() -> None:
    card = _touching_card(semantic={"size_threshold": 4})
    cm = np.zeros((1, 1, 32, 32), np.uint8)
    cm[0, 0, 8:24, 4:28] = 1  # one block of class a: two parts side by side
    touch = np.zeros((1, 1, 32, 32), np.uint8)
    inst = SemanticHead(card).decode({"y": cm, "t": touch}, _prepared(card, (64, 64)), NO_SPLIT)
    assert len(inst) == 1
    touch[0, 0, 8:24, 15:17] = 1  # where they meet
    inst = SemanticHead(card).decode({"y": cm, "t": touch}, _prepared(card, (64, 64)), NO_SPLIT)
    assert sorted(inst.xyxy.tolist()) == [[8, 16, 32, 48], [32, 16, 56, 48]]  # mapped onto the 64x64 frame


@pytest.mark.parametrize(
    ("touch", "message"),
    [
        (np.zeros((1, 1, 16, 16), np.uint8), r"output 't' has shape \[16, 16\], the class map \[32, 32\]"),
        (np.full((1, 1, 32, 32), 2, np.uint8), r"output 't' holds values other than 0 and 1"),
        (np.full((1, 1, 32, 32), -1, np.int8), r"output 't' holds values other than 0 and 1"),
        (np.zeros((1, 1, 32, 32), np.float32), r"output 't' must hold 0/1 integers, got float32"),
    ],
)
def test_a_contact_map_that_does_not_fit_its_class_map_is_a_model_error_naming_the_tensor(
    touch: np.ndarray, message: str
) -> None:
    card = _touching_card()
    cm = _class_map().astype(np.uint8)[None, None]
    with pytest.raises(ModelError, match=message):
        SemanticHead(card).decode({"y": cm, "t": touch}, _prepared(card, (32, 32)), NO_SPLIT)


@pytest.mark.parametrize(
    ("card", "message"),
    [
        (
            {"output": {"name": "y", "kind": "logits", "contact": "t"}},
            "output.contact: only a class_map output",
        ),
        ({"contact": 2}, "and not beside a contact class"),
    ],
)
def test_a_contact_map_is_only_accepted_beside_a_class_map_and_without_a_contact_class(
    card: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        _touching_card(**card)


def test_yolo_card_defaults_apply_when_options_leave_them_open() -> None:
    doc = {
        "name": "tiny-yolo",
        "task": "yolo-seg",
        "input": {"name": "images", "width": 32, "height": 32, "resize": "letterbox"},
        "output": {"name": "output0", "protos": "output1"},
        "classes": ["a", "b"],
        "yolo_seg": {"score_threshold": 0.5, "iou_threshold": 0.9, "max_det": 5},
    }
    card = parse_card(doc, "tiny.yaml")
    outputs = _yolo_outputs(
        [(10, 10, 8, 8, 0, 0.9, FULL), (11, 10, 8, 8, 0, 0.8, FULL), (24, 24, 6, 6, 0, 0.45, FULL)]
    )
    inst = YoloSegHead(card).decode(outputs, _prepared(card, (32, 32)), DecodeOptions())
    assert inst.score.tolist() == pytest.approx([0.9, 0.8])  # IoU 0.78 < 0.9 keeps both; 0.45 < 0.5 drops


def _ramp_card(resize: str, height: int, width: int) -> ModelCard:
    return parse_card(
        {
            "name": "ramp",
            "task": "yolo-seg",
            "input": {"name": "images", "width": width, "height": height, "resize": resize},
            "output": {"name": "output0", "protos": "output1"},
            "classes": ["a"],
        },
        "ramp.yaml",
    )


@pytest.mark.parametrize(
    ("resize", "frame_hw", "roi", "to_input"),
    [
        ("stretch", (48, 80), FULL_ROI, ((0.5, 0.0), (0.5, 0.0))),  # half the size each way
        # 0.8 each way, 4 px of padding above and below
        ("letterbox", (20, 50), FULL_ROI, ((0.8, 4.0), (0.8, 0.0))),
        # 0.5 each way, 10 px of padding left and right
        ("letterbox", (48, 40), FULL_ROI, ((0.5, 0.0), (0.5, 10.0))),
        # the 48x80 crop at (40, 24) of a 96x160 frame: the taps are the crop's pixels'
        ("stretch", (96, 160), (0.25, 0.25, 0.5, 0.5), ((0.5, 0.0), (0.5, 0.0))),
        # the 20x50 crop at (80, 48) of a 80x200 frame
        ("letterbox", (80, 200), (0.4, 0.6, 0.25, 0.25), ((0.8, 4.0), (0.8, 0.0))),
    ],
)
def test_mask_taps_sample_the_prototypes_where_each_frame_pixel_centre_lies(
    resize: str,
    frame_hw: tuple[int, int],
    roi: Roi,
    to_input: tuple[tuple[float, float], tuple[float, float]],
) -> None:
    """Prototypes that are a ramp (each one's value its own row, or column) come out, at every pixel of
    the frame or its ROI crop, as the prototype position its centre lies at (prototype-centre units,
    clamped at the edges): the crop pixel centre y + 0.5 is at (y + 0.5) * scale + offset in the model's
    24x40 input, a quarter of that in the 6x10 prototypes."""
    card = _ramp_card(resize, 24, 40)
    prepared = _prepared(card, frame_hw, roi)
    ay, ax = yolo_seg.affine_axes(prepared, (24, 40), (6, 10))
    for taps, n, n_proto, (scale, offset) in (
        (ay, prepared.crop_shape[0], 6, to_input[0]),
        (ax, prepared.crop_shape[1], 10, to_input[1]),
    ):
        want = np.clip(((np.arange(n) + 0.5) * scale + offset) / 4 - 0.5, 0, n_proto - 1)
        np.testing.assert_allclose(taps.weights @ np.arange(n_proto, dtype=np.float32), want, atol=1e-5)


@pytest.mark.parametrize(("resize", "native"), [("letterbox", True), ("stretch", False)])
def test_ultralytics_grid_is_taken_for_a_letterboxed_input_four_times_the_prototypes_and_only_then(
    resize: str, native: bool
) -> None:
    card = _ramp_card(resize, 24, 40)
    prepared = _prepared(card, (20, 50))
    got = YoloSegHead(card)._mask_axes(prepared, (6, 10))
    want = (
        yolo_seg.ultralytics_native_axes(prepared.crop_shape, (6, 10))
        if native
        else yolo_seg.affine_axes(prepared, (24, 40), (6, 10))
    )
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.weights, w.weights)
    other = (
        yolo_seg.affine_axes(prepared, (24, 40), (6, 10))
        if native
        else yolo_seg.ultralytics_native_axes(prepared.crop_shape, (6, 10))
    )
    assert any(
        g.weights.shape != o.weights.shape or not np.array_equal(g.weights, o.weights)
        for g, o in zip(got, other, strict=True)
    )
