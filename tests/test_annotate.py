"""``annotate`` draws a new image and leaves its inputs alone."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from edgeseg.annotate import PALETTE, BoxStyle, annotate, class_color, hud_lines, wrap_text
from edgeseg.errors import InputError
from edgeseg.geometry import obb_corners
from edgeseg.instances import Instances
from edgeseg.stats import PipelineStats


def scene() -> tuple[np.ndarray, Instances]:
    img = np.full((60, 80, 3), 100, np.uint8)
    disc = np.zeros((15, 15), bool)
    yy, xx = np.mgrid[0:15, 0:15]
    disc[(yy - 7) ** 2 + (xx - 7) ** 2 <= 49] = True
    inst = Instances.from_crops(
        (60, 80), [1, 2], [0.9, 0.8], [(10, 10), (50, 30)], [disc, np.ones((10, 20), bool)]
    )
    return img, inst


def test_annotate_returns_a_new_image_and_never_mutates_the_input() -> None:
    img, inst = scene()
    before = img.copy()
    out = annotate(img, inst, ("bg", "nut", "bolt"), hud=["12.0 fps"])
    assert out is not img
    assert np.array_equal(img, before)
    assert out.shape == img.shape
    assert out.dtype == np.uint8


def test_masks_are_blended_only_inside_the_instances() -> None:
    img, inst = scene()
    out = annotate(img, inst, labels=False, boxes="none")
    dense = inst.dense_masks().any(axis=0)
    assert (out[dense] != 100).any(axis=1).all()
    far = np.zeros_like(dense)
    far[45:, :40] = True  # away from both instances
    assert (out[far] == 100).all()


def test_a_mask_pixel_is_blended_once_with_its_class_colour_the_later_ones_where_masks_overlap() -> None:
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    first, second = np.ones((20, 20), bool), np.ones((10, 30), bool)
    inst = Instances.from_crops((40, 50), [1, 2], [0.9, 0.8], [(5, 5), (15, 20)], [first, second])
    alpha = 0.45
    out = annotate(img, inst, labels=False, boxes="none", alpha=alpha)

    def blended(y: int, x: int, class_id: int) -> np.ndarray:
        color = np.array(class_color(class_id), np.float64)
        return np.clip(np.round(img[y, x] * (1 - alpha) + color * alpha), 0, 255)

    # away from the outlines (drawn over the tint): inside the first only, and inside both
    assert np.abs(out[10, 10] - blended(10, 10, 1)).max() <= 1
    assert np.abs(out[22, 20] - blended(22, 20, 2)).max() <= 1
    assert np.array_equal(out[35, 5], img[35, 5])  # outside both


def _outline(obb: tuple[float, ...], boxes: BoxStyle = "obb") -> np.ndarray:
    """The pixels a box's outline lights (at least half its red) on a black 40x40 frame: an instance of one
    pixel at (20, 20), its masks' outline left out, carrying the oriented and xyxy box given."""
    inst = Instances.from_crops((40, 40), [0], [0.9], [(20, 20)], [np.ones((1, 1), bool)])
    cx, cy, w, h, _ = obb
    xyxy = [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]]
    inst = replace(inst, obb=np.array([obb], np.float32), xyxy=np.array(xyxy, np.float32))
    out = annotate(np.zeros((40, 40, 3), np.uint8), inst, alpha=0.0, labels=False, boxes=boxes)
    lit = out[:, :, 2] >= 128
    lit[20, 20] = False
    return lit


@pytest.mark.parametrize("box", [(10, 6, 20, 14), (11, 7, 21, 15), (11, 6, 24, 13), (10, 7, 17, 16)])
def test_an_oriented_box_is_outlined_on_its_edge_pixels_as_an_xyxy_box_is(box: tuple[int, ...]) -> None:
    # (its corners were rounded half to even, half a pixel outside: the outline lay 1 px outside the box on
    # one side or another, depending on where it was)
    x0, y0, x1, y1 = box
    lit = _outline(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.0))
    ring = np.zeros((40, 40), bool)
    ring[y0:y1, x0:x1] = True
    ring[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = False
    assert np.array_equal(lit, ring)
    assert np.array_equal(lit, _outline(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.0), "xyxy"))


@pytest.mark.parametrize("box", [(10.5, 6.5, 17.5, 13.5), (8.5, 5.0, 15.5, 16.0), (4.25, 6.75, 14.75, 13.25)])
def test_an_xyxy_box_moved_by_one_pixel_is_outlined_one_pixel_further(box: tuple[float, ...]) -> None:
    # (its edges were rounded half to even: an edge at 10.5 was drawn at 10 and one at 11.5 at 12, so a box
    # at .5 came out a pixel wider or narrower by the parity of where it was)
    x0, y0, x1, y1 = box

    def lit(dx: int, dy: int) -> np.ndarray:
        return _outline(((x0 + x1) / 2 + dx, (y0 + y1) / 2 + dy, x1 - x0, y1 - y0, 0.0), "xyxy")

    assert lit(0, 0).any()
    for dx, dy in [(1, 0), (0, 1), (1, 1)]:
        assert np.array_equal(lit(dx, dy), np.roll(lit(0, 0), (dy, dx), axis=(0, 1)))


@pytest.mark.parametrize("obb", [(20.3, 19.6, 14.0, 5.0, 30.0), (19.5, 20.5, 11.2, 4.4, -63.0)])
def test_a_turned_oriented_box_is_outlined_inside_its_edges(obb: tuple[float, ...]) -> None:
    # the outline's pixels have their centres inside the box, or less than half a pixel out where the line
    # crosses a pixel's corner (1.2 px out before)
    corners = obb_corners(np.array([obb], np.float32))[0]
    ys, xs = np.nonzero(_outline(obb))
    assert len(xs) > 20
    centres = zip(xs.tolist(), ys.tolist(), strict=True)
    assert min(cv2.pointPolygonTest(corners, (x + 0.5, y + 0.5), True) for x, y in centres) > -0.5


def test_ground_truth_adds_live_accuracy_to_the_hud() -> None:
    img, inst = scene()
    plain = annotate(img, inst, labels=False, boxes="none")
    with_truth = annotate(img, inst, labels=False, boxes="none", truth=inst)
    assert not np.array_equal(plain[:12], with_truth[:12])  # the HUD line is drawn in the top-left corner


def test_instances_of_another_frame_size_are_rejected() -> None:
    img, inst = scene()
    with pytest.raises(InputError, match="frame"):
        annotate(img[:30], inst)


def test_a_class_name_the_font_cannot_draw_is_labelled_by_its_class_id_not_question_marks() -> None:
    img, inst = scene()  # classes 1 and 2

    def drawn(names: tuple[str, ...]) -> np.ndarray:
        return annotate(img, inst, names, boxes="none")

    # cv2.putText has no glyph for CJK: "螺丝" and "垫圈" both came out as "??", one label for two classes
    chinese = drawn(("bg", "螺丝", "垫圈"))
    assert not np.array_equal(chinese, drawn(("bg", "??", "??")))
    assert np.array_equal(chinese, drawn(("bg",)))  # drawn as the ids "1" and "2", like unnamed classes
    # names the font does draw (ASCII here; accents and Cyrillic too on OpenCV 5) keep their names
    assert not np.array_equal(drawn(("bg", "nut", "bolt")), drawn(("bg",)))


def _contrast(a: np.ndarray, b: np.ndarray) -> float:
    """WCAG 2 contrast ratio of two BGR colours (1 to 21; 4.5 is the least for text)."""

    def luminance(bgr: np.ndarray) -> float:
        c = bgr[::-1].astype(np.float64) / 255
        c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        return float(c @ [0.2126, 0.7152, 0.0722])

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("class_id", range(len(PALETTE)))
def test_a_label_is_readable_on_every_class_colour(class_id: int) -> None:
    # the text was always white: on the palette's light greens and yellows that is a contrast of 1.4-2
    img = np.full((900, 900, 3), 100, np.uint8)
    inst = Instances.from_crops((900, 900), [class_id], [0.9], [(100, 200)], [np.ones((50, 50), bool)])
    out = annotate(img, inst, boxes="none")
    color = np.array(class_color(class_id), np.uint8)
    above = out[:200]  # the label sits on top of the instance
    ys, xs = np.nonzero((above == color).all(axis=2))
    assert len(ys), "no label drawn"
    box = above[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].reshape(-1, 3)
    text = box[np.argmax(np.abs(box.astype(int) - color).sum(axis=1))]  # the pixel most unlike the fill
    assert _contrast(text, color) >= 4.5


def test_a_hud_line_wider_than_the_frame_is_wrapped_not_cut_off_at_its_right_edge() -> None:
    # the tune window's "saved ... to PATH: key=value, ..." on a 640x480 frame lost its second half
    img = np.zeros((480, 640, 3), np.uint8)
    saved = (
        "saved 2 tuned values to /var/lib/edgeseg/tuning.yaml: postprocess.semantic.min_score=0.4, "
        "postprocess.semantic.dist_threshold=3"
    )
    one_line = annotate(img, Instances.empty((480, 640)), hud=["12.0 fps"])
    line_rows = np.nonzero(one_line.any(axis=2).any(axis=1))[0].max() + 1  # the panel of one line
    out = annotate(img, Instances.empty((480, 640)), hud=[saved])
    text = out.max(axis=2) > 128  # white text on the darkened panel
    assert not text[:, -6:].any()  # nothing runs into the frame's right edge
    assert text[line_rows + line_rows // 2 :].any()  # the rest went to the next line (its middle and below)


def test_a_hud_word_wider_than_the_frame_is_broken_onto_the_next_line_not_cut_off() -> None:
    # a word has no space to break at: the tune window's save message with a long state directory on a
    # 320x240 frame ran the path off the right edge and lost the file's name
    img = np.zeros((240, 320, 3), np.uint8)
    path = "/var/lib/edgeseg/instances/front-door-camera/tuning-front-door-camera.yaml"
    out = annotate(img, Instances.empty((240, 320)), hud=[f"saved to {path}"])
    text = out.max(axis=2) > 128
    assert not text[:, -6:].any()  # nothing runs into the frame's right edge
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 1.0
    width = lambda t: cv2.getTextSize(t, font, scale, 1)[0][0]  # noqa: E731
    lines = wrap_text(f"saved to {path}", width, 300)
    assert "".join(lines[1:]) == path  # every character kept, in order
    assert all(width(line) <= 300 for line in lines)
    assert wrap_text("W" * 3, width, 1) == ["W", "W", "W"]  # a character wider than the room: one a line


def test_the_hud_shows_a_figure_not_known_yet_as_a_dash_not_nan() -> None:
    # a run's first frame is drawn before two results give a rate: the window and the web stream said
    # "nan fps"
    fresh = PipelineStats()
    assert hud_lines(fresh.fps, fresh.latency_ms_p50, fresh.latency_ms_p99) == [
        "- fps  latency -/- ms (p50/p99)"
    ]
    assert hud_lines(12.34, 40.4, 97.6, 2) == ["12.3 fps  latency 40/98 ms (p50/p99)", "dropped 2"]
