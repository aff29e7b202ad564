"""The result model: RLE and JSON round trips, pycocotools interop, indexing, concatenation, transforms."""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray
from pycocotools import mask as coco_mask

from edgeseg import Instances, geometry, rle
from edgeseg.errors import InputError
from edgeseg.geometry import AxisAffine, letterbox, roi_pixels, roi_to_frame

FRAME = (37, 53)  # odd, non-square, so row/column mix-ups show


@st.composite
def placed_crops(draw: st.DrawFn) -> tuple[NDArray[np.bool_], tuple[int, int]]:
    """A random non-empty bool crop and an origin that keeps it inside FRAME."""
    ch, cw = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    crop = draw(arrays(np.bool_, (ch, cw)))
    if not crop.any():
        crop[draw(st.integers(0, ch - 1)), draw(st.integers(0, cw - 1))] = True
    x0, y0 = draw(st.integers(0, FRAME[1] - cw)), draw(st.integers(0, FRAME[0] - ch))
    return crop, (x0, y0)


@st.composite
def instance_sets(draw: st.DrawFn) -> Instances:
    items = draw(st.lists(placed_crops(), min_size=0, max_size=5))
    if not items:
        return Instances.empty(FRAME)
    n = len(items)
    classes = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    scores = draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n))
    return Instances.from_crops(FRAME, classes, scores, [o for _, o in items], [c for c, _ in items])


def _dense(crop: NDArray[np.bool_], origin: tuple[int, int]) -> NDArray[np.bool_]:
    full = np.zeros(FRAME, bool)
    full[origin[1] : origin[1] + crop.shape[0], origin[0] : origin[0] + crop.shape[1]] = crop
    return full


@settings(max_examples=150, deadline=None)
@given(placed_crops())
def test_rle_encode_decode_round_trip_gives_the_tight_crop(
    item: tuple[NDArray[np.bool_], tuple[int, int]],
) -> None:
    crop, origin = item
    counts = rle.string_to_counts(rle.encode([crop], [origin], FRAME)[0])
    assert sum(counts) == FRAME[0] * FRAME[1]
    back, (x0, y0) = rle.decode_counts(counts, FRAME)
    ys, xs = np.nonzero(_dense(crop, origin))
    assert (x0, y0, back.shape) == (xs.min(), ys.min(), (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))
    assert np.array_equal(_dense(back, (x0, y0)), _dense(crop, origin))


@pytest.mark.parametrize("zeros_at", [0, 1, 2, 3, 5])
def test_rle_counts_with_runs_of_length_zero_decode_like_those_without(zeros_at: int) -> None:
    # pycocotools writes none after the first, but a foreign encoder may: an empty run changes nothing
    counts = [40, 3, 30, 5, FRAME[0] * FRAME[1] - 78]
    crop, origin = rle.decode_counts(counts, FRAME)
    padded = [*counts[:zeros_at], 0, 0, *counts[zeros_at:]]
    got, at = rle.decode_counts(padded, FRAME)
    assert (at, got.tolist()) == (origin, crop.tolist())


def test_rle_counts_of_an_empty_mask_decode_to_an_empty_crop() -> None:
    crop, origin = rle.decode_counts([FRAME[0] * FRAME[1]], FRAME)
    assert (crop.shape, origin) == ((0, 0), (0, 0))


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([10, -2, FRAME[0] * FRAME[1] - 8], "negative count -2 at 1"),
        ([[1, 2]], r"must be a flat list of integers, got \[\[1, 2\]\]"),
        ([[1, 2], [3]], "must be a flat list"),
        (["a", 1], "must be a flat list"),
        ([5, 5], r"do not add up to the 53x37 image size \(10 != 1961\)"),
        # (counts whose int64 sum wrapped round to the image's size: a ValueError traceback, or an empty mask)
        ([0, 2**62, 2**62, 2**62, 2**62 + 1961], "count 4611686018427387904 at 1 past the 53x37 image"),
        ([2**63 - 1, 2**63 - 1, 1963], "count 9223372036854775807 at 0 past the 53x37 image"),
    ],
)
def test_rle_counts_that_cannot_be_a_mask_of_the_image_are_a_clear_error(
    counts: list[int], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        rle.decode_counts(counts, FRAME)


@pytest.mark.parametrize(
    ("text", "message"),
    [("P", "ends in the middle of a count at 1"), ("2p", "'p' at 1"), ("2\u00ff", "'\u00ff' at 1")],
)
def test_rle_strings_that_are_not_counts_are_a_clear_error(text: str, message: str) -> None:
    # (a character past ASCII, in an instances JSON read back, was a UnicodeEncodeError traceback)
    with pytest.raises(InputError, match=message):
        rle.string_to_counts(text)
    doc = {"height": 10, "width": 10, "instances": [{"segmentation": {"size": [10, 10], "counts": text}}]}
    with pytest.raises(InputError, match=message):
        Instances.from_dict(doc)


def test_an_rle_string_of_one_endless_count_is_refused_at_its_fourteenth_character() -> None:
    # (each character of a count went on to the next, ever longer Python int: 80 KB took 0.3 s, 1 MB a
    # minute; pycocotools reads a count in a C long, 13 characters at most, and an image's in 7)
    text = "o" * 200_000 + "0"
    with pytest.raises(InputError, match="RLE string has a count of more than 13 characters at 0"):
        rle.string_to_counts(text)
    assert rle.string_to_counts("o" * 12 + "0") == [(1 << 60) - 1]  # (the longest a C long holds)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools vs numpy 2
@settings(max_examples=150, deadline=None)
@given(placed_crops())
def test_rle_strings_are_identical_to_pycocotools_both_ways(
    item: tuple[NDArray[np.bool_], tuple[int, int]],
) -> None:
    crop, origin = item
    dense = _dense(crop, origin)
    theirs = coco_mask.encode(np.asfortranarray(dense.astype(np.uint8)))
    (ours,) = rle.encode([crop], [origin], FRAME)
    assert ours == theirs["counts"].decode("ascii")
    # they decode ours, we decode theirs
    assert np.array_equal(
        coco_mask.decode({"size": list(FRAME), "counts": ours.encode()}).astype(bool), dense
    )
    back, o = rle.decode_counts(rle.string_to_counts(theirs["counts"].decode("ascii")), FRAME)
    assert np.array_equal(_dense(back, o), dense)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools vs numpy 2
@settings(max_examples=200, deadline=None)
@given(st.data())
def test_rle_strings_of_several_crops_match_pycocotools_one_by_one(data: st.DataObject) -> None:
    # all crops of a result are encoded at once; among them crops as tall as the frame (a run of ones going on
    # into the next column), ones ending at its last pixel, empty ones, and large counts (a 1000-wide frame; a
    # 700x900 one, whose counts take five characters)
    h, w = data.draw(st.sampled_from([(1, 3), (4, 1), (5, 6), (6, 5), (3, 1000), (700, 900)]))
    crops, origins, dense = [], [], []
    for _ in range(data.draw(st.integers(0, 4))):
        ch, cw = data.draw(st.integers(1, min(h, 12))), data.draw(st.integers(1, min(w, 8)))
        crop = data.draw(arrays(np.bool_, (ch, cw)))
        origin = data.draw(st.integers(0, w - cw)), data.draw(st.integers(0, h - ch))
        full = np.zeros((h, w), np.uint8)
        full[origin[1] : origin[1] + ch, origin[0] : origin[0] + cw] = crop
        crops.append(crop)
        origins.append(origin)
        dense.append(full)
    theirs = [coco_mask.encode(np.asfortranarray(d))["counts"].decode("ascii") for d in dense]
    assert rle.encode(crops, origins, (h, w)) == theirs


@pytest.mark.parametrize("origin", [(-1, 0), (0, -1), (8, 0), (0, 6)])
def test_rle_encode_names_the_first_crop_that_does_not_fit_the_image(origin: tuple[int, int]) -> None:
    crops = [np.ones((2, 3), bool), np.ones((4, 3), bool)]
    with pytest.raises(
        InputError, match=rf"mask crop at \({origin[0]}, {origin[1]}\) of size 3x4 does not fit"
    ):
        rle.encode(crops, [(0, 0), origin], (9, 10))


def _same(a: Instances, b: Instances) -> None:
    assert a.image_shape == b.image_shape
    assert len(a) == len(b)
    assert np.array_equal(a.class_id, b.class_id)
    assert np.array_equal(a.score, b.score)
    assert np.array_equal(a.xyxy, b.xyxy)
    assert np.array_equal(a.obb, b.obb)
    assert np.array_equal(a.area, b.area)
    assert np.array_equal(a.dense_masks(), b.dense_masks())


@settings(max_examples=80, deadline=None)
@given(instance_sets())
def test_json_with_rle_masks_round_trips_exactly(inst: Instances) -> None:
    _same(Instances.from_json(inst.to_json("rle")), inst)


@settings(max_examples=40, deadline=None)
@given(instance_sets())
def test_json_with_polygons_round_trips_the_document(inst: Instances) -> None:
    # polygons are outlines: the mask comes back rasterized, the serialized document is reproduced exactly
    text = inst.to_json("polygon", polygon_tolerance=0.0)
    again = Instances.from_json(text)
    assert json.loads(again.to_json("polygon", polygon_tolerance=0.0)) == json.loads(text)


def test_json_without_masks_cannot_be_read_back_as_instances() -> None:
    inst = Instances.from_crops(FRAME, [1], [0.5], [(2, 3)], [np.ones((4, 4), bool)])
    with pytest.raises(InputError, match="no segmentation"):
        Instances.from_json(inst.to_json("none"))


@settings(max_examples=60, deadline=None)
@given(instance_sets(), st.data())
def test_bool_and_index_selection_and_concat_keep_rows_together(inst: Instances, data: st.DataObject) -> None:
    n = len(inst)
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    picked = inst[keep]
    by_index = inst[np.flatnonzero(keep)]
    _same(picked, by_index)
    rest = inst[~keep]
    joined = Instances.concat([picked, rest])
    order = np.concatenate([np.flatnonzero(keep), np.flatnonzero(~keep)]).astype(np.int64)
    _same(joined, inst[order])


@settings(max_examples=60, deadline=None)
@given(
    instance_sets(),
    st.tuples(st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0.3, 0.5), st.floats(0.3, 0.5)),
)
def test_roi_compensation_round_trips_masks_boxes_and_points(
    inst: Instances, roi: tuple[float, float, float, float]
) -> None:
    # instances found in a frame-sized picture are cut to the roi crop and mapped back to the frame
    x0, y0, x1, y1 = roi_pixels(roi, FRAME)
    to_frame = roi_to_frame(roi, FRAME)
    in_crop = inst.transform(to_frame.inverse(), (y1 - y0, x1 - x0))
    back = in_crop.transform(to_frame, FRAME)
    # what lay inside the roi comes back pixel-exact; the rest was cut off
    inside = np.zeros(FRAME, bool)
    inside[y0:y1, x0:x1] = True
    expected = [m & inside for m in inst.dense_masks() if (m & inside).any()]
    assert np.array_equal(back.dense_masks(), np.array(expected, bool).reshape(-1, *FRAME))
    pts = np.array([[0.0, 0.0], [3.25, 7.5], [52.0, 36.0]])
    assert np.allclose(to_frame.inverse().then(to_frame).points(pts), pts)


@settings(max_examples=60, deadline=None)
@given(instance_sets())
def test_letterbox_compensation_round_trips_masks_and_boxes(inst: Instances) -> None:
    # frame -> 2x letterboxed model input (integer scale and padding) -> frame: exact
    lb = letterbox(FRAME, (2 * FRAME[0] + 10, 2 * FRAME[1]))
    assert lb.scale == 2.0
    model = inst.transform(lb.to_model, (lb.dst_h, lb.dst_w))
    back = model.transform(lb.to_model.inverse(), FRAME)
    assert np.array_equal(back.dense_masks(), inst.dense_masks())
    assert np.allclose(back.xyxy, inst.xyxy)
    assert np.allclose(back.obb, inst.obb, atol=1e-4)


def test_transform_maps_oriented_boxes_exactly_under_equal_scales() -> None:
    inst = Instances.from_crops((100, 100), [0], [1.0], [(10, 20)], [np.ones((8, 30), bool)])
    out = inst.transform(AxisAffine(0.5, 0.5, 3.0, 4.0), (60, 60))
    cx, cy, w, h, a = out.obb[0].tolist()
    assert (cx, cy, w, h) == pytest.approx((25 * 0.5 + 3, 24 * 0.5 + 4, 15, 4))
    assert a == pytest.approx(inst.obb[0, 4])


def test_empty_masks_are_an_error_not_a_silent_instance() -> None:
    with pytest.raises(InputError, match="empty"):
        Instances.from_crops(FRAME, [0], [1.0], [(0, 0)], [np.zeros((3, 3), bool)])


@given(
    arrays(np.int32, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.integers(0, 6)),
    st.integers(0, 3),
)
def test_a_label_image_gives_each_present_label_its_own_pixels_and_box(
    labels: NDArray[np.int32], extra: int
) -> None:
    k = int(labels.max()) + extra  # labels up to k, some of them absent from the image
    classes = np.arange(k, dtype=np.int32) % 3
    inst = Instances.from_label_image(labels, classes)
    present = [i for i in range(1, k + 1) if (labels == i).any()]
    assert len(inst) == len(present)
    for row, i in enumerate(present):
        ys, xs = np.nonzero(labels == i)
        x0, y0, x1, y1 = inst.mask_box[row].tolist()
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        np.testing.assert_array_equal(inst.masks[row], labels[y0:y1, x0:x1] == i)
        assert inst.class_id[row] == classes[i - 1]


@settings(max_examples=100, deadline=None)
@given(inst=instance_sets())
def test_the_class_map_of_instances_has_the_last_covering_instance_class_and_background_elsewhere(
    inst: Instances,
) -> None:
    want = np.full(FRAME, -1, np.int32)
    for c, m in zip(inst.class_id, inst.dense_masks(), strict=True):
        want[m] = c
    assert (inst.class_map(background=-1) == want).all()


@settings(max_examples=150, deadline=None)
@given(
    arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))),
    st.integers(-14, FRAME[1] + 2),
    st.integers(-14, FRAME[0] + 2),
)
def test_a_crop_anywhere_is_clipped_to_the_frame_and_trimmed_to_its_set_pixels(
    crop: NDArray[np.bool_], x0: int, y0: int
) -> None:
    h, w = FRAME
    big = np.zeros((h + 40, w + 40), bool)  # the frame at (20, 20) of a larger canvas
    big[y0 + 20 : y0 + 20 + crop.shape[0], x0 + 20 : x0 + 20 + crop.shape[1]] = crop
    dense = big[20 : 20 + h, 20 : 20 + w]
    if not dense.any():
        with pytest.raises(InputError, match="empty inside"):
            Instances.from_crops(FRAME, [0], [1.0], [(x0, y0)], [crop])
        return
    inst = Instances.from_crops(FRAME, [0], [1.0], [(x0, y0)], [crop])
    ys, xs = np.nonzero(dense)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    assert inst.mask_box[0].tolist() == box
    assert np.array_equal(inst.masks[0], dense[box[1] : box[3], box[0] : box[2]])
    assert inst.area[0] == np.count_nonzero(dense)


def test_bad_parts_of_instances_are_clear_errors_naming_what_is_wrong() -> None:
    one = Instances.from_crops((8, 8), [1], [0.9], [(0, 0)], [np.ones((2, 2), bool)])
    with pytest.raises(InputError, match=r"Instances.track_id has shape \(2,\), expected \(1,\)"):
        replace(one, track_id=np.array([1, 2], np.int64))
    with pytest.raises(InputError, match="mask 1 must be a 2-D bool array, got uint8 with shape"):
        Instances.from_crops(
            (8, 8), [1, 1], [0.9, 0.9], [(0, 0), (2, 2)], [np.ones((2, 2), bool), np.ones((2, 2), np.uint8)]
        )
    with pytest.raises(InputError, match="label image must be a 2-D integer array, got float64"):
        Instances.from_label_image(np.zeros((4, 4)), [1])


def test_a_slice_selects_rows_and_the_class_map_is_0_where_no_instance_is() -> None:
    crops = [np.ones((1, 1), bool)] * 4
    inst = Instances.from_crops(
        (4, 4), [1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], [(0, 0), (1, 1), (2, 2), (3, 3)], crops
    )
    assert inst[1:3].class_id.tolist() == [2, 3]
    assert inst[::-2].class_id.tolist() == [4, 2]
    assert inst.class_map().tolist() == [[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 0], [0, 0, 0, 4]]


def test_a_polygon_wholly_outside_the_frame_reads_back_as_an_empty_mask_error() -> None:
    doc = {"height": 10, "width": 10, "instances": [{"segmentation": [[20.0, 20.0, 25.0, 20.0, 25.0, 25.0]]}]}
    with pytest.raises(InputError, match=r"instances\[0\].segmentation is an empty mask"):
        Instances.from_dict(doc)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"segmentation": {"size": [10, 10]}},
            r"segmentation.counts must be an RLE string or a list of counts",
        ),
        ({"segmentation": {"size": [10, 10], "counts": 5}}, "got 5"),
        ({"segmentation": {"size": [10, 10], "counts": ["a"]}}, "must be a flat list of integers"),
        ({"segmentation": {"size": [10, 10], "counts": [1e400]}}, "must be a flat list of integers"),
        # (numpy's cast took these as the counts 50 50, "50" "50" and 1 99: masks no one wrote)
        ({"segmentation": {"size": [10, 10], "counts": [50.5, 50.5]}}, "must be a flat list of integers"),
        ({"segmentation": {"size": [10, 10], "counts": ["50", "50"]}}, "must be a flat list of integers"),
        ({"segmentation": {"size": [10, 10], "counts": [True, 99]}}, "must be a flat list of integers"),
        ({"segmentation": {"size": 7, "counts": "P"}}, r"segmentation.size 7 != frame \[10, 10\]"),
        (5, "has no segmentation"),
    ],
)
def test_rle_segmentations_that_cannot_be_a_mask_are_a_clear_error(item: object, message: str) -> None:
    # (each was a KeyError, TypeError, ValueError, OverflowError or AttributeError traceback)
    with pytest.raises(InputError, match=message):
        Instances.from_dict({"height": 10, "width": 10, "instances": [item]})


@pytest.mark.parametrize(
    "coords",
    [
        [],
        [1, 2, 3, 4, 5],
        ["a", "b", "c", "d", "e", "f"],
        None,
        [1e400, 0, 3, 0, 3, 3],
        [[1, 2]],
        ["1", "0", "3", "0", "3", "3"],  # (read as the numbers they spell)
        [True, 0, 3, 0, 3, 3],  # (read as 1)
    ],
)
def test_polygon_coordinates_that_cannot_be_a_polygon_are_a_clear_error(coords: object) -> None:
    # (json.loads reads 1e400 as inf; each of these was a numpy ValueError or OverflowError traceback)
    doc = {"height": 10, "width": 10, "instances": [{"segmentation": [coords]}]}
    with pytest.raises(InputError, match=r"instances\[0\].segmentation\[0\] must be a polygon \[x0, y0"):
        Instances.from_dict(doc)


def test_a_segmentation_of_several_polygons_reads_back_as_their_union_as_pycocotools_has_it() -> None:
    # (COCO's polygons, one per part of an occluded object: only the first was read, the rest lost)
    seg = [[2, 2, 6, 2, 6, 5, 2, 5], [10, 1, 13, 1, 13, 8, 10, 8], [3, 9, 4, 9, 4, 10, 3, 10]]
    doc = {"height": 12, "width": 16, "instances": [{"class_id": 1, "score": 0.5, "segmentation": seg}]}
    doc["instances"][0] |= {"bbox_xyxy": [2, 1, 13, 10], "obb": [7.5, 5.5, 11, 9, 0], "area": 34}
    back = Instances.from_dict(doc)
    theirs = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(seg, 12, 16))).astype(bool)
    assert np.array_equal(back.dense_masks()[0], theirs)
    assert int(theirs.sum()) == 12 + 21 + 1
    assert back.to_dict("polygon")["instances"][0]["segmentation"] == seg  # written again as they were


def test_one_and_two_vertex_polygons_of_earlier_versions_read_back_as_the_pixels_they_pass_through() -> None:
    # (outlines through pixel centres, as written before they ran on pixel corners: a lone pixel, a 1 px thin
    # row and a 1 px thin L have no inside, and each made the whole document "an empty mask" error; an L whose
    # corner was cut, as simplifying did, has one pixel inside for pycocotools, and for us)
    segs = [[[5.5, 4.5]], [[2.5, 3.5, 8.5, 3.5]], [[1.5, 1.5, 1.5, 5.5, 4.5, 5.5, 1.5, 5.5]]]
    item = {"class_id": 1, "score": 0.5, "bbox_xyxy": [0, 0, 1, 1], "obb": [0.5, 0.5, 1, 1, 0], "area": 1}
    doc = {"height": 10, "width": 12, "instances": [item | {"segmentation": seg} for seg in segs]}
    back = Instances.from_dict(doc)
    assert back.mask_box.tolist() == [[5, 4, 6, 5], [2, 3, 9, 4], [1, 1, 5, 6]]
    assert [m.sum() for m in back.masks] == [1, 7, 8]
    assert back.masks[2][:, 0].all()
    assert back.masks[2][4].all()
    with pytest.raises(InputError, match="empty mask"):  # still, where it lies wholly outside the frame
        Instances.from_dict(doc | {"instances": [item | {"segmentation": [[20.5, 4.5, 30.5, 4.5]]}]})
    cut = [[1.5, 1.5, 1.5, 5.5, 4.5, 5.5, 2.5, 5.5, 1.5, 4.5]]
    back = Instances.from_dict(doc | {"instances": [item | {"segmentation": cut}]})
    assert back.mask_box.tolist() == [[2, 5, 3, 6]]
    assert np.array_equal(back.dense_masks()[0], coco_mask.decode(coco_mask.frPyObjects(cut, 10, 12)[0]) > 0)


@pytest.mark.parametrize(("height", "width"), [(30000, 30000), (8193, 10), (10, 8193), (0, 10), (-5, 10)])
def test_a_document_of_a_frame_no_source_makes_is_refused_in_one_line(height: int, width: int) -> None:
    # (160 bytes saying 30000 x 30000 with a polygon over the frame were filled in 7 GB, a MemoryError or the
    # OOM killer; 0 or -5 rows read as instances of that frame)
    seg = [[0, 0, width, 0, width, height, 0, height]]
    item = {"class_id": 1, "score": 0.5, "bbox_xyxy": [0, 0, 1, 1], "obb": [0.5, 0.5, 1, 1, 0], "area": 1}
    for items in ([item | {"segmentation": seg}], []):
        with pytest.raises(InputError, match=rf"frame {width}x{height} must be 1 to 8192 pixels a side"):
            Instances.from_dict({"height": height, "width": width, "instances": items})
    assert Instances.from_dict({"height": 8192, "width": 8192, "instances": []}).image_shape == (8192, 8192)


@pytest.mark.parametrize("across", [False, True])
def test_reading_a_polygon_costs_memory_by_its_frame_not_by_its_sides_crossings_with_the_pixels(
    monkeypatch: pytest.MonkeyPatch, across: bool
) -> None:
    # (a zigzag of 1000 full-height sides, 20 KB of JSON, listed its 2 million crossings with the rows at
    # once: 300 MB for a 2048 x 2048 frame, 3 GB with 2000 sides over 8192 rows; and its counts were int64.
    # The fill now crosses the sides with the columns: the zigzag of full-width sides is the costly one)
    h = w = 2048
    seg = [v for k in range(1000) for v in (k * w / 1000, 0.0, k * w / 1000 + 1.0, float(h))]
    if across:
        seg = [seg[k + 1 - 2 * (k % 2)] for k in range(len(seg))]  # (x and y swapped)
    item = {"class_id": 1, "score": 0.5, "bbox_xyxy": [0, 0, 1, 1], "obb": [0.5, 0.5, 1, 1, 0], "area": 1}
    doc = {"height": h, "width": w, "instances": [item | {"segmentation": [seg]}]}
    tracemalloc.start()
    try:
        back = Instances.from_dict(doc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * h * w
    monkeypatch.setattr(geometry, "_CROSSINGS_AT_ONCE", 1 << 40)  # the same pixels, listed at once
    assert np.array_equal(back.masks[0], Instances.from_dict(doc).masks[0])


def _peak_bytes(read: Any) -> tuple[Any, int]:
    """What ``read()`` returns (or raises: the exception) and the most memory it held at once."""
    tracemalloc.start()
    try:
        try:
            out = read()
        except InputError as exc:
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _whole_frame_item(h: int, w: int) -> dict[str, object]:
    """An instance's fields, its segmentation left out, of a box as large as an ``h`` x ``w`` frame."""
    return {
        "class_id": 1,
        "score": 0.5,
        "bbox_xyxy": [0, 0, w, h],
        "obb": [w / 2, h / 2, w, h, 0],
        "area": h * w,
    }


def test_a_document_of_many_masks_as_large_as_the_frame_costs_memory_by_the_frame_not_by_their_number() -> (
    None
):
    # (a mask of the whole frame is a few bytes of RLE, a triangle over it a few of polygon: a 3 KB document
    # of 400 of them held 400 frames of crops, 120 MB at 640 x 480 and 27 GB at 8192 x 8192)
    h, w = 480, 640
    item = _whole_frame_item(h, w)
    whole = {"size": [h, w], "counts": rle.encode([np.ones((h, w), bool)], [(0, 0)], (h, w))[0]}
    triangle = [[0.0, 0.0, 2.0 * w, 0.0, 0.0, 2.0 * h]]
    for seg in (whole, triangle):
        doc = {"height": h, "width": w, "instances": [item | {"segmentation": seg}] * 400}
        out, peak = _peak_bytes(lambda doc=doc: Instances.from_dict(doc))
        assert peak < 24 * h * w, f"{peak / (h * w):.0f} frames"
        assert "masks' boxes add up to more than 16 frames" in str(out), type(out)
        # as many as a result ever has (YOLO's masks are made for at most 8 frames of their boxes) read back
        assert len(Instances.from_dict(doc | {"instances": doc["instances"][:16]})) == 16


def test_an_instance_of_many_polygons_each_over_the_frame_costs_memory_by_the_frame() -> None:
    # (each part was filled into a crop of its own, all held until their union was made: 100 frames)
    h, w = 480, 640
    item = _whole_frame_item(h, w)
    seg = [[0.0, 0.0, 2.0 * w, 0.0, 0.0, 2.0 * h]] * 100
    back, peak = _peak_bytes(
        lambda: Instances.from_dict({"height": h, "width": w, "instances": [item | {"segmentation": seg}]})
    )
    assert peak < 8 * h * w, f"{peak / (h * w):.0f} frames"
    assert isinstance(back, Instances), back
    assert back.masks[0].shape == (h, w)
    assert back.masks[0].all()


@pytest.mark.parametrize(("key", "value"), [("class_id", 2**40), ("track_id", 2**70), ("area", 2**70)])
def test_an_integer_too_large_for_its_field_is_a_one_line_error(key: str, value: int) -> None:
    # (json reads any integer; past int32 or int64 each was an OverflowError traceback)
    item = {"class_id": 1, "score": 0.5, "bbox_xyxy": [0, 0, 4, 4], "obb": [2, 2, 4, 4, 0], "area": 16}
    item |= {"segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]], key: value}
    with pytest.raises(InputError, match=rf"^instances JSON: bad or missing '{key}': "):
        Instances.from_dict({"height": 10, "width": 10, "instances": [item]})


def test_instances_with_a_track_id_keep_it_where_others_in_the_document_have_none() -> None:
    # (the schema makes track_id optional per instance; one missing dropped every instance's id)
    item = {"class_id": 1, "score": 0.5, "bbox_xyxy": [0, 0, 4, 4], "obb": [2, 2, 4, 4, 0], "area": 16}
    item |= {"segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}
    back = Instances.from_dict({"height": 10, "width": 10, "instances": [item | {"track_id": 7}, item]})
    assert back.track_id is not None
    assert back.track_id.tolist() == [7, -1]
    assert Instances.from_dict({"height": 10, "width": 10, "instances": [item]}).track_id is None


def test_a_frame_size_of_1e400_is_a_one_line_error() -> None:
    # (json reads 1e400 as inf, which int() refused with an OverflowError: a traceback)
    with pytest.raises(InputError, match=r"^instances JSON height must be an integer, got Infinity$"):
        Instances.from_json('{"height": 1e400, "width": 10, "instances": []}')


def test_instances_json_nested_deeper_than_python_recurses_is_a_one_line_error() -> None:
    # (json.loads raised RecursionError, which is no JSONDecodeError: a traceback)
    with pytest.raises(InputError, match=r"^instances JSON is not valid JSON: nested too deeply$"):
        Instances.from_json("[" * 100_000)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("score", 7.0, r"instances\[1\].score must be a number 0 to 1, got 7.0"),
        ("score", float("inf"), r"instances\[1\].score must be a number 0 to 1, got Infinity"),
        ("score", -0.5, r"instances\[1\].score must be a number 0 to 1, got -0.5"),
        ("score", True, r"instances\[1\].score must be a number 0 to 1, got true"),
        ("class_id", -1, r"instances\[1\].class_id must be an integer >= 0, got -1"),
        ("class_id", 2.5, r"instances\[1\].class_id must be an integer >= 0, got 2.5"),
        ("class_id", True, r"instances\[1\].class_id must be an integer >= 0, got true"),
        ("area", -16, r"instances\[1\].area must be an integer >= 0, got -16"),
        ("track_id", 3.5, r"instances\[1\].track_id must be an integer, got 3.5"),
        ("track_id", "7", r"instances\[1\].track_id must be an integer, got '7'"),
        (
            "bbox_xyxy",
            [0, 0, True, 4],
            r"instances\[1\].bbox_xyxy must be a list of numbers, got \[0, 0, true, 4\]",
        ),
        (
            "obb",
            [2, 2, float("nan"), 4, 0],
            r"instances\[1\].obb must be a list of numbers, got \[2, 2, NaN, 4, 0\]",
        ),
    ],
)
def test_an_instance_field_outside_the_results_schema_is_refused_naming_the_instance(
    key: str, value: object, message: str
) -> None:
    # (numpy read each as something: a score of 7 or inf, class -1, 2.5 as class 2, true as 1)
    item = {"class_id": 1, "score": 0.5, "bbox_xyxy": [0, 0, 4, 4], "obb": [2, 2, 4, 4, 0], "area": 16}
    item |= {"segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]], "track_id": 3}
    doc = {"height": 10, "width": 10, "instances": [item, item | {key: value}]}
    with pytest.raises(InputError, match=f"^{message}$"):
        Instances.from_dict(doc)
    assert len(Instances.from_dict(doc | {"instances": [item, item]})) == 2


@pytest.mark.parametrize(("height", "message"), [(10.9, "10.9"), (True, "true"), ("10", "'10'")])
def test_a_frame_size_that_is_not_a_whole_number_is_refused(height: object, message: str) -> None:
    # (10.9 was read as 10 rows and true as 1)
    with pytest.raises(InputError, match=f"^instances JSON height must be an integer, got {message}$"):
        Instances.from_dict({"height": height, "width": 10, "instances": []})
    assert Instances.from_dict({"height": 10.0, "width": 10, "instances": []}).image_shape == (10, 10)


def test_instances_that_carry_polygons_serialize_those_as_they_are() -> None:
    inst = Instances.from_crops((20, 20), [1], [0.9], [(2, 3)], [np.ones((6, 8), bool)]).with_polygons(1.0)
    square = np.array([[1.0, 1.0], [15.0, 1.0], [15.0, 15.0], [1.0, 15.0]], np.float32)
    carried = replace(inst, polygons=((square,),))
    assert carried.to_dict("polygon")["instances"][0]["segmentation"] == [square.ravel().tolist()]


def test_rectangles_read_back_from_their_polygons_are_the_same_pixels_where_they_lie() -> None:
    # (a rectangle's outline is its four corners, as in COCO's annotations: filled, by us or by pycocotools,
    # it is the rectangle again, a lone pixel and one 1 px thin too; those were one and two vertices, which
    # pycocotools' frPyObjects refuses, or reads as a box)
    crops = [np.ones((3, 5), bool), np.ones((1, 1), bool), np.ones((4, 3), bool), np.ones((1, 9), bool)]
    origins = [(0, 0), (7, 4), (13, 8), (2, 10)]
    inst = Instances.from_crops((12, 16), [1, 2, 3, 4], [0.9, 0.8, 0.7, 0.6], origins, crops)
    doc = inst.to_dict("polygon")
    assert doc["instances"][1]["segmentation"] == [[7.0, 4.0, 7.0, 5.0, 8.0, 5.0, 8.0, 4.0]]
    back = Instances.from_dict(doc)
    assert back.mask_box.tolist() == [[0, 0, 5, 3], [7, 4, 8, 5], [13, 8, 16, 12], [2, 10, 11, 11]]
    assert [m.tolist() for m in back.masks] == [m.tolist() for m in inst.masks]
    for item, want in zip(doc["instances"], inst.dense_masks(), strict=True):
        theirs = coco_mask.decode(coco_mask.frPyObjects(item["segmentation"], 12, 16))[:, :, 0]
        assert np.array_equal(theirs.astype(bool), want)


def _filled_parts(mask: NDArray[np.bool_]) -> list[NDArray[np.bool_]]:
    """Each 8-connected part of ``mask`` with its holes filled (OpenCV fills the outline of pixel centres)."""
    n, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
    parts = []
    for k in range(1, n):
        part = (labels == k).astype(np.uint8)
        outline, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        part = np.zeros(mask.shape, np.uint8)
        cv2.drawContours(part, outline, -1, 1, thickness=cv2.FILLED)
        parts.append(part.astype(bool))
    return parts


@settings(max_examples=150, deadline=None)
@given(placed_crops())
def test_pycocotools_and_we_fill_unsimplified_polygons_back_to_the_mask_with_its_holes_filled(
    item: tuple[NDArray[np.bool_], tuple[int, int]],
) -> None:
    # (the polygon ran through the pixel centres of the part's edge: pycocotools, which fills the pixels
    # whose centres lie inside, lost about half of each edge pixel, a 24 px disc 8% of its area; and only the
    # largest part was written, the others lost)
    crop, origin = item
    inst = Instances.from_crops(FRAME, [1], [0.5], [origin], [crop])
    doc = inst.to_dict("polygon", polygon_tolerance=0.0)
    seg = doc["instances"][0]["segmentation"]
    theirs = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(seg, *FRAME))).astype(bool)
    ours = Instances.from_dict(doc).dense_masks()[0]
    assert np.array_equal(ours, theirs)
    assert np.array_equal(ours, np.logical_or.reduce(_filled_parts(inst.dense_masks()[0])))


@settings(max_examples=150, deadline=None)
@given(
    item=placed_crops(),
    tolerance=st.sampled_from([0.5, 1.0, 2.0, 3.5]),
    blob=st.tuples(
        st.integers(0, 52), st.integers(0, 36), st.integers(1, 20), st.integers(1, 12), st.integers(0, 179)
    ),
)
def test_pycocotools_and_we_fill_simplified_polygons_to_the_same_pixels(
    item: tuple[NDArray[np.bool_], tuple[int, int]], tolerance: float, blob: tuple[int, int, int, int, int]
) -> None:
    # (a pixel centre on a slanted side, or within a tenth of a pixel of one, went one way in our fill and the
    # other in pycocotools', which draws the outline on a grid of fifths of a pixel: a pixel here and there)
    crop, origin = item
    ellipse = np.zeros(FRAME, np.uint8)
    cv2.ellipse(ellipse, blob[:2], blob[2:4], blob[4], 0, 360, 1, -1)
    inst = Instances.from_crops(FRAME, [1, 2], [0.5, 0.5], [origin, (0, 0)], [crop, ellipse.view(bool)])
    doc = inst.to_dict("polygon", polygon_tolerance=tolerance)
    back = Instances.from_dict(doc).dense_masks()
    for k, ours in enumerate(back):
        seg = doc["instances"][k]["segmentation"]
        theirs = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(seg, *FRAME))).astype(bool)
        assert np.array_equal(ours, theirs)


@settings(max_examples=300, deadline=None)
@given(
    coords=st.lists(
        st.one_of(
            st.floats(-10, 60, allow_nan=False, width=32),
            st.integers(-10, 60).map(lambda v: v / 10),
            st.integers(-10, 60).map(lambda v: v / 2),
        ),
        min_size=6,
        max_size=16,
    ).filter(lambda c: len(c) % 2 == 0)
)
def test_any_polygon_reads_back_as_pycocotools_fills_it(coords: list[float]) -> None:
    # (vertices anywhere, in or out of the frame, on a tenth or half of a pixel, its sides crossing or not)
    doc = {"height": FRAME[0], "width": FRAME[1], "instances": [{"segmentation": [coords]}]}
    theirs = coco_mask.decode(coco_mask.frPyObjects([coords], *FRAME)[0]).astype(bool)
    if not theirs.any():
        return  # (no pixel: ours reads the pixels under the outline, or says it is empty)
    doc["instances"][0] |= {
        "class_id": 1,
        "score": 0.5,
        "bbox_xyxy": [0, 0, 1, 1],
        "obb": [0, 0, 1, 1, 0],
        "area": 1,
    }
    assert np.array_equal(Instances.from_dict(doc).dense_masks()[0], theirs)


def test_a_speckled_mask_keeps_every_speck_as_a_polygon_of_its_own() -> None:
    # (decided: polygons cost 4 corners a one-pixel speck, and a speckled mask is many times its RLE, but no
    # speck is dropped: that would move the mask's edge by more than the tolerance; README says to use RLE)
    crop = np.zeros((20, 30), bool)
    crop[::3, ::4] = True  # 7 x 8 specks, none touching another
    inst = Instances.from_crops(FRAME, [1], [0.5], [(5, 6)], [crop])
    for tolerance in (1.0, 3.0):
        doc = inst.to_dict("polygon", polygon_tolerance=tolerance)
        seg = doc["instances"][0]["segmentation"]
        assert len(seg) == 56
        assert {len(p) for p in seg} == {8}
        assert np.array_equal(Instances.from_dict(doc).dense_masks(), inst.dense_masks())
    assert len(inst.to_json("polygon")) > 4 * len(inst.to_json("rle"))


def test_a_mask_in_two_parts_is_written_as_two_polygons_and_reads_back_whole() -> None:
    # (an object cut in two by an occluder: only its largest part was written, the other lost on reading)
    crop = np.zeros((10, 30), bool)
    crop[1:9, 0:12] = True
    crop[2:7, 20:30] = True
    inst = Instances.from_crops((40, 60), [1], [0.9], [(5, 20)], [crop])
    for tolerance in (0.0, 1.0):
        doc = inst.to_dict("polygon", polygon_tolerance=tolerance)
        seg = doc["instances"][0]["segmentation"]
        assert len(seg) == 2
        theirs = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(seg, 40, 60))).astype(bool)
        back = Instances.from_dict(doc)
        assert np.array_equal(back.dense_masks()[0], inst.dense_masks()[0])
        assert np.array_equal(theirs, inst.dense_masks()[0])
        assert back.polygons is not None
        assert len(back.polygons[0]) == 2  # carried on, to be written again
    moved = inst.with_polygons(0.0).transform(AxisAffine(2.0, 2.0, 1.0, 0.0), (80, 120))
    assert moved.polygons is not None
    assert [p.tolist() for p in moved.polygons[0]] == [
        (p * 2 + [1, 0]).tolist() for p in (inst.with_polygons(0.0).polygons or ((),))[0]
    ]


@pytest.mark.parametrize("label", [-1, 3])
def test_a_label_image_with_labels_beyond_its_classes_is_a_clear_error(label: int) -> None:
    labels = np.zeros((4, 4), np.int32)
    labels[1, 1] = label
    with pytest.raises(InputError, match=r"label image holds labels outside 0\.\.2"):
        Instances.from_label_image(labels, [5, 6])


def test_a_transform_drops_the_instances_that_land_wholly_outside_and_clips_those_that_touch() -> None:
    # (a frame's instances mapped into an ROI crop of it: x and y shifted by -10, into 20x20)
    crops = [np.ones((2, 2), bool)] * 8
    # each pair: one with a column or row inside the crop, one just outside it
    origins = [(29, 15), (30, 15), (15, 29), (15, 30), (9, 15), (8, 15), (15, 9), (15, 8)]
    inst = Instances.from_crops((40, 40), list(range(1, 9)), [0.5] * 8, origins, crops)
    out = inst.transform(AxisAffine(1.0, 1.0, -10.0, -10.0), (20, 20))
    assert out.class_id.tolist() == [1, 3, 5, 7]
    assert out.mask_box.tolist() == [[19, 5, 20, 7], [5, 19, 7, 20], [0, 5, 1, 7], [5, 0, 7, 1]]
    assert out.area.tolist() == [2, 2, 2, 2]


def test_an_isotropic_transform_keeps_an_oriented_boxs_angle_and_scales_its_sides() -> None:
    canvas = np.zeros((60, 60), np.uint8)
    cv2.ellipse(canvas, (30, 30), (25, 8), 30, 0, 360, 1, -1)
    inst = Instances.from_crops((60, 60), [1], [1.0], [(0, 0)], [canvas.view(bool)])
    out = inst.transform(AxisAffine(2.0, 2.0, 5.0, -3.0), (120, 120))
    cx, cy, w, h, a = inst.obb[0].tolist()
    assert a != 0.0
    assert out.obb[0].tolist() == pytest.approx([cx * 2 + 5, cy * 2 - 3, w * 2, h * 2, a])
